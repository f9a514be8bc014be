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
    let mut f = OpenOptions::new().create(true).append(true).open(&path).unwrap();
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
    let shared = SharedWal::new(wal).unwrap();
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
    (stats.records as f64 / elapsed, stats.records as f64 / stats.syncs.max(1) as f64)
}

/// (f) Pipelined writers, the way the Raft driver group-commits: producers
/// queue records without waiting for each one (up to `window` outstanding
/// each); one committer drains the queue, appends everything it found and
/// fsyncs once. Returns (records/s, records per fsync).
fn pipelined_small(dir: &Path, record_bytes: usize, producers: usize, window: u64, secs: f64) -> (f64, f64) {
    use std::sync::{mpsc, Condvar, Mutex};
    let (mut wal, path) = fresh_wal(dir, &format!("pipelined-{record_bytes}"));
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    // (records made durable, fsyncs) and a condvar producers wait on.
    let durable = (Mutex::new(0u64), Condvar::new());
    let stop = AtomicBool::new(false);
    let mut syncs = 0u64;
    let start = Instant::now();
    std::thread::scope(|s| {
        let durable = &durable;
        let stop = &stop;
        for t in 0..producers {
            let tx = tx.clone();
            s.spawn(move || {
                let rec = vec![t as u8; record_bytes];
                let mut sent = 0u64;
                let mut durable_seen = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    // Total durable counts all producers; each keeps its share.
                    while sent.saturating_sub(durable_seen / producers as u64) >= window {
                        let guard = durable.0.lock().unwrap();
                        let guard = durable.1.wait_timeout(guard, Duration::from_millis(5)).unwrap().0;
                        durable_seen = *guard;
                        if stop.load(Ordering::Relaxed) {
                            return;
                        }
                    }
                    if tx.send(rec.clone()).is_err() {
                        return;
                    }
                    sent += 1;
                }
            });
        }
        drop(tx);
        let deadline = Instant::now() + Duration::from_secs_f64(secs);
        while Instant::now() < deadline {
            let Ok(first) = rx.recv_timeout(Duration::from_millis(10)) else { continue };
            let mut n = 1u64;
            wal.append(&first).unwrap();
            while let Ok(rec) = rx.try_recv() {
                wal.append(&rec).unwrap();
                n += 1;
            }
            wal.sync().unwrap();
            syncs += 1;
            *durable.0.lock().unwrap() += n;
            durable.1.notify_all();
        }
        stop.store(true, Ordering::Relaxed);
        durable.1.notify_all();
        while rx.recv_timeout(Duration::from_millis(50)).is_ok() {}
    });
    let elapsed = start.elapsed().as_secs_f64();
    let records = *durable.0.lock().unwrap();
    drop(wal);
    std::fs::remove_dir_all(path).unwrap();
    (records as f64 / elapsed, records as f64 / syncs.max(1) as f64)
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
    let tmp = tempfile::Builder::new().prefix("shoal-wal-bench-").tempdir_in(&root).unwrap();
    let dir = tmp.path();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("shoal-wal bench: dir {} ({cores} cores)", dir.display());

    // The disk is shared with other processes whose writeback can stall
    // fsyncs for a while, so the fsync peer is measured before and after
    // (c) and the better figure used: that errs against the WAL's ratio.
    let fsync_before = raw_fsync(dir, 2.0);
    let seq = sequential(dir);
    let small16 = shared_small(dir, 16, 64, 3.0);
    let small100 = shared_small(dir, 100, 64, 3.0);
    let piped16 = pipelined_small(dir, 16, 4, 1024, 3.0);
    let fsync_after = raw_fsync(dir, 2.0);
    let fsync_rate = fsync_before.max(fsync_after);
    let large = batched_large(dir);
    let single = unbatched(dir, 2.0);

    let rows = [
        (
            "(a) raw fsync: 16 B append + fdatasync, 2 s".to_string(),
            format!("{fsync_rate:.0} syncs/s"),
            "peer for (c), (e)".to_string(),
        ),
        (
            "    (measured before / after (c))".to_string(),
            format!("{fsync_before:.0} / {fsync_after:.0} syncs/s"),
            String::new(),
        ),
        (
            "(b) raw sequential: 512 MiB, 1 MiB writes + fsync".to_string(),
            format!("{seq:.0} MB/s"),
            "peer for (d)".to_string(),
        ),
        (
            "(c) SharedWal, 64 threads, 16 B records, 3 s".to_string(),
            format!("{:.0} rec/s ({:.1} rec/fsync)", small16.0, small16.1),
            format!("{:.1}x raw fsync rate", small16.0 / fsync_rate),
        ),
        (
            "(c) SharedWal, 64 threads, 100 B records, 3 s".to_string(),
            format!("{:.0} rec/s ({:.1} rec/fsync)", small100.0, small100.1),
            format!("{:.1}x raw fsync rate", small100.0 / fsync_rate),
        ),
        (
            "(f) pipelined: 4 producers x 1024 in flight, 16 B".to_string(),
            format!("{:.0} rec/s ({:.1} rec/fsync)", piped16.0, piped16.1),
            format!("{:.1}x raw fsync rate", piped16.0 / fsync_rate),
        ),
        (
            "(d) Wal, 4 KiB records, 256 per sync, 512 MiB".to_string(),
            format!("{large:.0} MB/s"),
            format!("{:.1}% of sequential", 100.0 * large / seq),
        ),
        (
            "(e) Wal, 1 thread, 100 B append + sync each, 2 s".to_string(),
            format!("{single:.0} rec/s"),
            format!("{:.2}x raw fsync rate", single / fsync_rate),
        ),
    ];
    println!();
    println!("| {:<50} | {:<32} | {:<22} |", "measurement", "result", "vs peer");
    println!("|{}|{}|{}|", "-".repeat(52), "-".repeat(34), "-".repeat(24));
    for (what, result, peer) in rows {
        println!("| {what:<50} | {result:<32} | {peer:<22} |");
    }
}
