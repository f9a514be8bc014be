//! Simulated power loss on `MemDir`, many seeds: a crash loses at most the
//! records whose sync had not returned, and recovery always yields a prefix
//! of what was appended, never a damaged record.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::Ordering;

use common::{payloads, FaultyDir, Rng};
use shoal_wal::{CrashMode, MemDir, Wal, WalError, WalOptions};

/// Runs several crash/restart epochs of a random workload. The crash hits
/// either between syncs or in the middle of one (a failing fsync after the
/// batch was written to the simulated page cache).
fn crash_epochs(seed: u64, mode: CrashMode) {
    let mem = MemDir::new();
    let opts = WalOptions { segment_bytes: 512, max_record_bytes: 1024 };
    let mut rng = Rng::new(seed);
    // What the log must contain: `durable` records are certain, the rest of
    // `appended` may or may not survive.
    let mut appended: Vec<Vec<u8>> = Vec::new();
    let mut durable = 0usize;
    for epoch in 0..6 {
        let dir = FaultyDir::new(mem.clone());
        let (mut wal, rec) = Wal::open(dir.clone(), opts).unwrap();
        let got = &rec.records;
        assert!(got.len() >= durable, "seed {seed} epoch {epoch}: lost synced records");
        assert!(got.len() <= appended.len(), "seed {seed} epoch {epoch}: invented records");
        assert_eq!(got[..], appended[..got.len()], "seed {seed} epoch {epoch}");
        if mode == CrashMode::LoseUnsynced {
            assert_eq!(got.len(), durable, "seed {seed} epoch {epoch}");
        }
        appended.truncate(got.len());
        durable = got.len();

        let fresh = payloads(seed * 1000 + epoch, 40, 120);
        let fail_mid_sync = rng.below(2) == 0;
        if fail_mid_sync {
            dir.fail_in.store(rng.below(8), Ordering::SeqCst);
        }
        for p in fresh {
            wal.append(&p).unwrap();
            appended.push(p);
            if rng.below(4) == 0 {
                match wal.sync() {
                    Ok(()) => durable = appended.len(),
                    Err(WalError::Io { .. }) => break, // "power failed"
                    Err(e) => panic!("seed {seed}: unexpected {e}"),
                }
            }
            if rng.below(30) == 0 {
                // Sync first so that a failure inside rotate is only about
                // creating the new segment and `durable` stays exact.
                match wal.sync() {
                    Ok(()) => durable = appended.len(),
                    Err(WalError::Io { .. }) => break,
                    Err(e) => panic!("seed {seed}: unexpected {e}"),
                }
                match wal.rotate() {
                    Ok(_) => durable = appended.len(),
                    Err(WalError::Io { .. }) => break,
                    Err(e) => panic!("seed {seed}: unexpected {e}"),
                }
            }
        }
        drop(wal);
        mem.crash(rng.next(), mode);
    }
}

#[test]
fn lose_unsynced_loses_exactly_the_unsynced() {
    for seed in 0..300 {
        crash_epochs(seed, CrashMode::LoseUnsynced);
    }
}

#[test]
fn torn_crash_yields_a_prefix_with_all_synced() {
    for seed in 0..300 {
        crash_epochs(seed, CrashMode::Torn);
    }
}

/// Torn crashes really do leave partial batches behind sometimes, i.e.
/// the test above exercises the recovery cut, not just clean ends.
#[test]
fn torn_crash_sometimes_keeps_part_of_a_batch() {
    let mut partial = 0;
    let mut cuts = 0;
    for seed in 0..200 {
        let mem = MemDir::new();
        let dir = FaultyDir::new(mem.clone());
        let (mut wal, _) = Wal::open(dir.clone(), WalOptions::default()).unwrap();
        wal.append(b"synced").unwrap();
        wal.sync().unwrap();
        for p in payloads(seed, 10, 50) {
            wal.append(&p).unwrap();
        }
        dir.fail_in.store(0, Ordering::SeqCst);
        assert!(matches!(wal.sync(), Err(WalError::Io { .. })));
        assert!(matches!(wal.append(b"x"), Err(WalError::Poisoned)));
        assert!(matches!(wal.sync(), Err(WalError::Poisoned)));
        drop(wal);
        mem.crash(seed, CrashMode::Torn);
        let (_, rec) = Wal::open(mem, WalOptions::default()).unwrap();
        assert_eq!(rec.records[0], b"synced");
        if rec.records.len() > 1 && rec.records.len() < 11 {
            partial += 1;
        }
        cuts += usize::from(rec.cut.is_some());
    }
    assert!(partial > 20, "only {partial} partial batches");
    assert!(cuts > 20, "only {cuts} cuts");
}
