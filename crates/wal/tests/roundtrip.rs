//! Records written are the records read back, across restarts, segment
//! rollover, rotation and removal of old segments.
#![allow(clippy::unwrap_used)]

mod common;

use common::payloads;
use shoal_wal::{segment_name, Dir, MemDir, OsDir, Wal, WalOptions};

fn round_trip<D: Dir + Clone>(dir: D) {
    let recs = payloads(1, 300, 200);
    let (mut wal, rec) = Wal::open(dir.clone(), WalOptions::default()).unwrap();
    assert!(rec.records.is_empty() && rec.cut.is_none());
    for (i, r) in recs.iter().enumerate() {
        wal.append(r).unwrap();
        if i % 7 == 0 {
            wal.sync().unwrap();
        }
    }
    wal.sync().unwrap();
    assert_eq!(wal.pending_bytes(), 0);
    drop(wal);
    let (mut wal, rec) = Wal::open(dir.clone(), WalOptions::default()).unwrap();
    assert_eq!(rec.records, recs);
    assert!(rec.cut.is_none());
    // Appends continue where the log ended.
    wal.append(b"more").unwrap();
    wal.sync().unwrap();
    drop(wal);
    let (_, rec) = Wal::open(dir, WalOptions::default()).unwrap();
    assert_eq!(rec.records.len(), recs.len() + 1);
    assert_eq!(rec.records.last().unwrap(), b"more");
}

#[test]
fn round_trip_mem() {
    round_trip(MemDir::new());
}

/// `OsDir` is not `Clone`; reopening by path is the real-disk equivalent.
#[derive(Clone)]
struct PathDir(std::path::PathBuf);

impl Dir for PathDir {
    fn list(&self) -> std::io::Result<Vec<String>> {
        OsDir::open(&self.0)?.list()
    }
    fn read(&self, name: &str) -> std::io::Result<Option<Vec<u8>>> {
        OsDir::open(&self.0)?.read(name)
    }
    fn append(&mut self, name: &str, data: &[u8]) -> std::io::Result<()> {
        OsDir::open(&self.0)?.append(name, data)
    }
    fn sync(&mut self, name: &str) -> std::io::Result<()> {
        OsDir::open(&self.0)?.sync(name)
    }
    fn truncate(&mut self, name: &str, len: u64) -> std::io::Result<()> {
        OsDir::open(&self.0)?.truncate(name, len)
    }
    fn remove(&mut self, name: &str) -> std::io::Result<()> {
        OsDir::open(&self.0)?.remove(name)
    }
    fn write_atomic(&mut self, name: &str, data: &[u8]) -> std::io::Result<()> {
        OsDir::open(&self.0)?.write_atomic(name, data)
    }
}

#[test]
fn round_trip_os() {
    let tmp = tempfile::tempdir().unwrap();
    round_trip(PathDir(tmp.path().to_path_buf()));
}

#[test]
fn round_trip_os_dir_directly() {
    let tmp = tempfile::tempdir().unwrap();
    let recs = payloads(2, 100, 5000);
    let (mut wal, _) = Wal::open(OsDir::open(tmp.path()).unwrap(), WalOptions::default()).unwrap();
    for r in &recs {
        wal.append(r).unwrap();
    }
    wal.sync().unwrap();
    drop(wal);
    let (_, rec) = Wal::open(OsDir::open(tmp.path()).unwrap(), WalOptions::default()).unwrap();
    assert_eq!(rec.records, recs);
}

#[test]
fn empty_payloads_and_empty_log() {
    let mem = MemDir::new();
    let (mut wal, _) = Wal::open(mem.clone(), WalOptions::default()).unwrap();
    wal.sync().unwrap(); // nothing pending: no file, no fsync
    assert_eq!(mem.sync_count(), 0);
    assert!(mem.list().unwrap().is_empty());
    wal.append(b"").unwrap();
    wal.append(b"").unwrap();
    wal.sync().unwrap();
    assert_eq!(mem.sync_count(), 1, "one fsync per sync, however many records");
    drop(wal);
    let (_, rec) = Wal::open(mem, WalOptions::default()).unwrap();
    assert_eq!(rec.records, vec![Vec::<u8>::new(), Vec::new()]);
}

#[test]
fn unsynced_appends_are_not_written() {
    let mem = MemDir::new();
    let (mut wal, _) = Wal::open(mem.clone(), WalOptions::default()).unwrap();
    wal.append(b"a").unwrap();
    wal.sync().unwrap();
    wal.append(b"b").unwrap();
    assert_eq!(wal.pending_bytes(), 9);
    drop(wal);
    let (_, rec) = Wal::open(mem, WalOptions::default()).unwrap();
    assert_eq!(rec.records, vec![b"a".to_vec()]);
}

#[test]
fn segment_rollover() {
    let mem = MemDir::new();
    let opts = WalOptions { segment_bytes: 1000, ..WalOptions::default() };
    let recs = payloads(3, 500, 100);
    let (mut wal, _) = Wal::open(mem.clone(), opts).unwrap();
    for (i, r) in recs.iter().enumerate() {
        wal.append(r).unwrap();
        if i % 3 == 2 {
            wal.sync().unwrap();
        }
    }
    wal.sync().unwrap();
    let ids = wal.segment_ids().to_vec();
    assert!(ids.len() > 10, "expected many segments, got {ids:?}");
    assert_eq!(ids, (1..=ids.len() as u64).collect::<Vec<_>>());
    // No segment exceeds the limit by more than one batch.
    for id in &ids[..ids.len() - 1] {
        let len = mem.read(&segment_name(*id)).unwrap().unwrap().len();
        assert!((1000..1000 + 3 * 108).contains(&len), "segment {id}: {len}");
    }
    drop(wal);
    let (wal, rec) = Wal::open(mem, opts).unwrap();
    assert_eq!(rec.records, recs);
    assert_eq!(wal.segment_ids(), &ids[..]);
}

#[test]
fn rotate_and_remove_before() {
    let mem = MemDir::new();
    let opts = WalOptions::default();
    let (mut wal, _) = Wal::open(mem.clone(), opts).unwrap();
    wal.append(b"old-1").unwrap();
    wal.append(b"old-2").unwrap();
    let id = wal.rotate().unwrap();
    assert_eq!(id, 2);
    assert_eq!(wal.pending_bytes(), 0, "rotate syncs first");
    wal.append(b"new-1").unwrap();
    wal.sync().unwrap();
    wal.remove_segments_before(id).unwrap();
    assert_eq!(wal.segment_ids(), &[2]);
    drop(wal);

    let (mut wal, rec) = Wal::open(mem.clone(), opts).unwrap();
    assert_eq!(rec.records, vec![b"new-1".to_vec()]);
    assert_eq!(wal.current_segment(), 2);
    // Rotate, then drop everything older before writing anything: the new
    // (empty) segment keeps the id sequence going across a restart.
    let id = wal.rotate().unwrap();
    assert_eq!(id, 3);
    wal.remove_segments_before(id).unwrap();
    drop(wal);
    let (mut wal, rec) = Wal::open(mem.clone(), opts).unwrap();
    assert!(rec.records.is_empty());
    assert_eq!(wal.current_segment(), 3);
    wal.append(b"after").unwrap();
    wal.sync().unwrap();
    drop(wal);
    let (_, rec) = Wal::open(mem.clone(), opts).unwrap();
    assert_eq!(rec.records, vec![b"after".to_vec()]);
    assert_eq!(mem.list().unwrap(), vec![segment_name(3)]);
}

#[test]
fn rotate_and_remove_on_disk() {
    let tmp = tempfile::tempdir().unwrap();
    let open = || Wal::open(OsDir::open(tmp.path()).unwrap(), WalOptions::default()).unwrap();
    let (mut wal, _) = open();
    for i in 0..10u8 {
        wal.append(&[i]).unwrap();
        if i % 3 == 0 {
            wal.rotate().unwrap();
        }
    }
    wal.sync().unwrap();
    let ids = wal.segment_ids().to_vec();
    assert_eq!(ids, vec![1, 2, 3, 4, 5]); // the last rotate left 5 empty
    wal.remove_segments_before(3).unwrap();
    drop(wal);
    let (_, rec) = open();
    assert_eq!(rec.records, (4..10u8).map(|i| vec![i]).collect::<Vec<_>>());
}

#[test]
fn foreign_files_are_ignored() {
    let mut mem = MemDir::new();
    mem.write_atomic("raft-state", b"xyz").unwrap();
    mem.write_atomic("wal-1.log", b"garbage").unwrap();
    let (mut wal, rec) = Wal::open(mem.clone(), WalOptions::default()).unwrap();
    assert!(rec.records.is_empty());
    wal.append(b"r").unwrap();
    wal.sync().unwrap();
    drop(wal);
    let (_, rec) = Wal::open(mem, WalOptions::default()).unwrap();
    assert_eq!(rec.records, vec![b"r".to_vec()]);
}
