//! WAL throughput against the raw disk, measured in the same run.
//!
//! `cargo bench -p shoal-wal`. Files go to a temp dir under the cargo target
//! dir (so: the disk the project lives on, not a tmpfs); set
//! `SHOAL_BENCH_DIR` to measure another disk. Plain `Instant` timing: every
//! figure is long enough (seconds, hundreds of MiB) that timer overhead is
//! irrelevant, and the peers (raw fsync rate, raw sequential bandwidth) are
//! measured right beside the WAL figures they are compared with.
#![allow(clippy::unwrap_used)]

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use shoal_wal::{OsDir, SharedWal, Wal, WalOptions};

const MIB: usize = 1 << 20;
const SEQ_BYTES: usize = 512 * MIB;

fn bench_root() -> PathBuf {
    if let Ok(dir) = std::env::var("SHOAL_BENCH_DIR") {
        return PathBuf::from(dir);
    }
    match option_env!("CARGO_TARGET_TMPDIR") {
        Some(dir) => PathBuf::from(dir),
        None => std::env::current_dir().unwrap(),
    }
}

/// (a) One small write + fdatasync, repeated: the disk's commit rate.
fn raw_fsync(dir: &Path, secs: f64) -> f64 {
    let path = dir.join("raw-fsync");
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap();
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed().as_secs_f64() < secs {
        f.write_all(&[0x5a; 16]).unwrap();
        f.sync_data().unwrap();
        n += 1;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    std::fs::remove_file(path).unwrap();
    rate
}

/// (b) 512 MiB in 1 MiB writes, then one fsync: the disk's bandwidth.
fn sequential(dir: &Path) -> f64 {
    let path = dir.join("seq");
    let buf = vec![0xa5u8; MIB];
    let start = Instant::now();
    let mut f = File::create(&path).unwrap();
    for _ in 0..SEQ_BYTES / MIB {
        f.write_all(&buf).unwrap();
    }
    f.sync_all().unwrap();
    let mbps = SEQ_BYTES as f64 / 1e6 / start.elapsed().as_secs_f64();
    drop(f);
    std::fs::remove_file(path).unwrap();
    mbps
}

fn fresh_wal(dir: &Path, name: &str) -> (Wal<OsDir>, PathBuf) {
    let path = dir.join(name);
    let (wal, rec) = Wal::open(OsDir::open(&path).unwrap(), WalOptions::default()).unwrap();
    assert!(rec.records.is_empty());
    (wal, path)
}

/// (c) Small records from many threads through `SharedWal`.
/// Returns (records/s, records per fsync).
fn shared_small(dir: &Path, record_bytes: usize, threads: usize, secs: f64) -> (f64, f64) {
    let (wal, path) = fresh_wal(dir, &format!("shared-{record_bytes}"));
    let us: u64 = std::env::var("DELAY_US").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
    let shared = SharedWal::with_options(wal, shoal_wal::GroupOptions { max_commit_delay: Duration::from_micros(us) }).unwrap();
    let stop = AtomicBool::new(false);
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let shared = shared.clone();
            let stop = &stop;
            s.spawn(move || {
                let rec = vec![t as u8; record_bytes];
                while !stop.load(Ordering::Relaxed) {
                    shared.append_durable(&rec).unwrap();
                }
            });
        }
        std::thread::sleep(Duration::from_secs_f64(secs));
        stop.store(true, Ordering::Relaxed);
    });
    let elapsed = start.elapsed().as_secs_f64();
    let stats = shared.stats();
    drop(shared);
    std::fs::remove_dir_all(path).unwrap();
    (
        stats.records as f64 / elapsed,
        stats.records as f64 / stats.syncs.max(1) as f64,
    )
}

/// (d) 4 KiB records, 256 per sync, one thread: 512 MiB of payload.
fn batched_large(dir: &Path) -> f64 {
    let (mut wal, path) = fresh_wal(dir, "batched");
    let rec = vec![0x3cu8; 4096];
    let batches = SEQ_BYTES / (256 * rec.len());
    let start = Instant::now();
    for _ in 0..batches {
        for _ in 0..256 {
            wal.append(&rec).unwrap();
        }
        wal.sync().unwrap();
    }
    let mbps = SEQ_BYTES as f64 / 1e6 / start.elapsed().as_secs_f64();
    drop(wal);
    std::fs::remove_dir_all(path).unwrap();
    mbps
}

/// (e) One thread, append + sync per record: no group commit.
fn unbatched(dir: &Path, secs: f64) -> f64 {
    let (mut wal, path) = fresh_wal(dir, "unbatched");
    let rec = vec![0x11u8; 100];
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed().as_secs_f64() < secs {
        wal.append(&rec).unwrap();
        wal.sync().unwrap();
        n += 1;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    drop(wal);
    std::fs::remove_dir_all(path).unwrap();
    rate
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is not supported.
    let root = bench_root();
    std::fs::create_dir_all(&root).unwrap();
    let tmp = tempfile::Builder::new()
        .prefix("shoal-wal-bench-")
        .tempdir_in(&root)
        .unwrap();
    let dir = tmp.path();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("shoal-wal bench: dir {} ({cores} cores)", dir.display());

    let fsync_rate = raw_fsync(dir, 2.0);
    if std::env::var("ONLY_C").is_ok() {
        let r = shared_small(dir, 16, 64, 3.0);
        println!("fsync {fsync_rate:.0}/s small16 {:.0} rec/s {:.1}/fsync ratio {:.1}", r.0, r.1, r.0 / fsync_rate);
        return;
    }
    let seq = sequential(dir);
    let small16 = shared_small(dir, 16, 64, 3.0);
    let small100 = shared_small(dir, 100, 64, 3.0);
    let large = batched_large(dir);
    let single = unbatched(dir, 2.0);

    println!();
    println!("| measurement                                        | result                         | vs peer                |");
    println!("|----------------------------------------------------|--------------------------------|------------------------|");
    println!(
        "| (a) raw fsync: 16 B append + fdatasync, 2 s         | {:>10.0} syncs/s              | peer for (c), (e)      |",
        fsync_rate
    );
    println!(
        "| (b) raw sequential: 512 MiB in 1 MiB writes + fsync | {:>10.0} MB/s                 | peer for (d)           |",
        seq
    );
    for (size, (rate, per_sync)) in [(16, small16), (100, small100)] {
        println!(
            "| (c) SharedWal, 64 threads, {:>3} B records, 3 s      | {:>10.0} rec/s ({:>5.1} rec/fsync) | {:>6.1}x raw fsync rate |",
            size,
            rate,
            per_sync,
            rate / fsync_rate
        );
    }
    println!(
        "| (d) Wal, 4 KiB records, 256 per sync, 512 MiB      | {:>10.0} MB/s                 | {:>5.1}% of sequential  |",
        large,
        100.0 * large / seq
    );
    println!(
        "| (e) Wal, 1 thread, 100 B append + sync each, 2 s   | {:>10.0} rec/s                | {:>6.2}x raw fsync rate |",
        single,
        single / fsync_rate
    );
}
