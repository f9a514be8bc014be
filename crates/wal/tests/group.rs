//! `SharedWal`: concurrent writers, each record durable on return, fsyncs
//! shared between writers.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::FaultyDir;
use shoal_wal::{GroupOptions, MemDir, OsDir, SharedWal, Wal, WalError, WalOptions};

const THREADS: u64 = 8;
const PER_THREAD: u64 = 250;

fn record(t: u64, i: u64) -> Vec<u8> {
    let mut r = t.to_le_bytes().to_vec();
    r.extend_from_slice(&i.to_le_bytes());
    r
}

fn hammer<D: shoal_wal::Dir>(shared: &SharedWal<D>) {
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let shared = shared.clone();
            s.spawn(move || {
                for i in 0..PER_THREAD {
                    shared.append_durable(&record(t, i)).unwrap();
                }
            });
        }
    });
}

/// Every record is present after reopening, each thread's records in its
/// own order.
fn check_all_present(records: &[Vec<u8>]) {
    assert_eq!(records.len() as u64, THREADS * PER_THREAD);
    let mut next = vec![0u64; THREADS as usize];
    for r in records {
        let t = u64::from_le_bytes(r[..8].try_into().unwrap());
        let i = u64::from_le_bytes(r[8..].try_into().unwrap());
        assert_eq!(next[t as usize], i, "thread {t} out of order");
        next[t as usize] += 1;
    }
}

#[test]
fn eight_threads_share_fsyncs() {
    let mem = MemDir::new();
    let mut dir = FaultyDir::new(mem.clone());
    // A slow fsync, as on a real disk, so writers actually overlap.
    dir.sync_delay = Duration::from_micros(300);
    let opts = WalOptions { segment_bytes: 4096, ..WalOptions::default() };
    let (wal, _) = Wal::open(dir, opts).unwrap();
    let shared = SharedWal::new(wal).unwrap();
    hammer(&shared);
    let stats = shared.stats();
    assert_eq!(stats.records, THREADS * PER_THREAD);
    let syncs = mem.sync_count();
    assert!(syncs < stats.records / 2, "{syncs} fsyncs for {} records", stats.records);
    drop(shared);
    let (_, rec) = Wal::open(mem, opts).unwrap();
    check_all_present(&rec.records);
}

#[test]
fn eight_threads_on_disk() {
    let tmp = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(OsDir::open(tmp.path()).unwrap(), WalOptions::default()).unwrap();
    let shared = SharedWal::new(wal).unwrap();
    hammer(&shared);
    let stats = shared.stats();
    assert_eq!(stats.records, THREADS * PER_THREAD);
    assert!(stats.syncs < stats.records, "{stats:?}");
    let wal = shared.into_inner().unwrap();
    assert_eq!(wal.pending_bytes(), 0);
    drop(wal);
    let (_, rec) = Wal::open(OsDir::open(tmp.path()).unwrap(), WalOptions::default()).unwrap();
    check_all_present(&rec.records);
}

#[test]
fn no_commit_delay_still_correct() {
    let mem = MemDir::new();
    let (wal, _) = Wal::open(mem.clone(), WalOptions::default()).unwrap();
    let opts = GroupOptions { max_commit_delay: Duration::ZERO };
    let shared = SharedWal::with_options(wal, opts).unwrap();
    hammer(&shared);
    drop(shared);
    let (_, rec) = Wal::open(mem, WalOptions::default()).unwrap();
    check_all_present(&rec.records);
}

#[test]
fn pending_records_of_wrapped_wal_are_synced() {
    let mem = MemDir::new();
    let (mut wal, _) = Wal::open(mem.clone(), WalOptions::default()).unwrap();
    wal.append(b"before").unwrap();
    let shared = SharedWal::new(wal).unwrap();
    shared.append_durable(b"after").unwrap();
    drop(shared);
    let (_, rec) = Wal::open(mem, WalOptions::default()).unwrap();
    assert_eq!(rec.records, vec![b"before".to_vec(), b"after".to_vec()]);
}

#[test]
fn too_large_is_rejected_without_poisoning() {
    let opts = WalOptions { max_record_bytes: 8, ..WalOptions::default() };
    let (wal, _) = Wal::open(MemDir::new(), opts).unwrap();
    let shared = SharedWal::new(wal).unwrap();
    assert!(matches!(shared.append_durable(&[0; 9]), Err(WalError::RecordTooLarge { .. })));
    shared.append_durable(&[0; 8]).unwrap();
}

#[test]
fn failed_fsync_fails_the_batch_and_poisons() {
    let mem = MemDir::new();
    let dir = FaultyDir::new(mem.clone());
    let fail = dir.fail_in.clone();
    let (wal, _) = Wal::open(dir, WalOptions::default()).unwrap();
    let shared = SharedWal::new(wal).unwrap();
    shared.append_durable(b"ok").unwrap();
    fail.store(0, Ordering::SeqCst);
    assert!(matches!(shared.append_durable(b"lost"), Err(WalError::Io { .. })));
    assert!(matches!(shared.append_durable(b"later"), Err(WalError::Poisoned)));
    // Concurrent writers all see an error, none hangs.
    std::thread::scope(|s| {
        for _ in 0..4 {
            let shared = shared.clone();
            s.spawn(move || assert!(shared.append_durable(b"x").is_err()));
        }
    });
}
