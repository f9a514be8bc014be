//! The durable half of a Raft node (RAFT-5, RAFT-6): a write-ahead log of
//! postcard records and checksummed snapshot files, over any [`Dir`] (a real
//! directory, or the simulator's crashable disk).
//!
//! Every `persist` ends in one fsync however many entries it carries (group
//! commit). The snapshot in force is named by a record *in the log*, written
//! only after its file is durable: a crash at any point leaves either the old
//! snapshot with the old log or the new snapshot with the new log, never a
//! snapshot beside log entries it contradicts.

use std::collections::VecDeque;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use shoal_wal::{read_checked, write_checked, Dir, Wal, WalError, WalOptions};

use crate::message::{Entry, HardState, Index, SnapshotMeta};
use crate::raft::{NewSnapshot, Ready, Recovered};
use crate::Snapshot;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("write-ahead log: {0}")]
    Wal(#[from] WalError),
    #[error("snapshot file {name}: {source}")]
    Snapshot { name: String, source: WalError },
    #[error("corrupt Raft state: {0}")]
    Corrupt(String),
}

/// One write-ahead log record.
#[derive(Debug, Serialize, Deserialize)]
enum Record {
    HardState(HardState),
    /// Replaces any stored entry at or after the first one's index.
    Entries(Vec<Entry>),
    /// From here on the snapshot at `meta` is in force. `keep_tail`: entries
    /// after it stay (a local compaction); otherwise the whole log goes (a
    /// snapshot received from the leader).
    Snapshot {
        meta: SnapshotMeta,
        keep_tail: bool,
    },
    /// The whole durable state but the snapshot's data, in one record (so it
    /// is all there or not at all). It opens every segment written after a
    /// snapshot; replay starts at the last segment that opens with one, so
    /// the older segments are redundant and a crash while removing them is
    /// harmless.
    Base {
        snapshot: SnapshotMeta,
        hard_state: HardState,
        entries: Vec<Entry>,
    },
}

/// `Record::Entries` for writing without copying the entries: postcard
/// encodes an enum variant by its position and a slice like a Vec, so this
/// decodes as `Record::Entries`; the test at the bottom keeps the two in step.
#[derive(Serialize)]
enum RecordRef<'a> {
    #[allow(dead_code)]
    HardState(HardState),
    Entries(&'a [Entry]),
}

#[derive(Debug, Serialize, Deserialize)]
struct SnapshotFile {
    meta: SnapshotMeta,
    data: Bytes,
}

fn snapshot_name(meta: SnapshotMeta) -> String {
    format!("snap-{:020}-{:020}", meta.index, meta.term)
}

#[derive(Debug)]
pub struct FileStore<D: Dir> {
    wal: Wal<D>,
    hard_state: HardState,
    snapshot: SnapshotMeta,
    /// The log as replay rebuilds it in `open`; handed to the caller and
    /// empty from then on (compactions get the tail from `Ready::log_tail`).
    entries: VecDeque<Entry>,
    scratch: Vec<u8>,
}

impl<D: Dir> FileStore<D> {
    /// Opens the store, replaying what survived: a torn or corrupt log tail is
    /// cut (and logged) by the WAL, never used.
    pub fn open(dir: D) -> Result<(Self, Recovered), StoreError> {
        let opts = WalOptions::default();
        let (wal, recovered) = Wal::open(dir, opts)?;
        let mut store = FileStore {
            wal,
            hard_state: HardState::default(),
            snapshot: SnapshotMeta::default(),
            entries: VecDeque::new(),
            scratch: Vec::new(),
        };
        let decode = |raw: &[u8]| {
            postcard::from_bytes::<Record>(raw)
                .map_err(|e| StoreError::Corrupt(format!("undecodable log record: {e}")))
        };
        let mut start = 0;
        for &(_, first) in recovered.segment_starts.iter().rev() {
            if let Some(raw) = recovered.records.get(first) {
                if matches!(decode(raw)?, Record::Base { .. }) {
                    start = first;
                    break;
                }
            }
        }
        for raw in &recovered.records[start..] {
            store.replay(decode(raw)?)?;
        }
        let snapshot = if store.snapshot.index > 0 {
            let name = snapshot_name(store.snapshot);
            let bytes = read_checked(store.wal.dir(), &name)
                .map_err(|source| StoreError::Snapshot { name: name.clone(), source })?
                .ok_or_else(|| {
                    StoreError::Corrupt(format!("snapshot file {name} named by the log is missing"))
                })?;
            let file: SnapshotFile = postcard::from_bytes(&bytes)
                .map_err(|e| StoreError::Corrupt(format!("undecodable snapshot {name}: {e}")))?;
            if file.meta != store.snapshot {
                return Err(StoreError::Corrupt(format!("snapshot {name} holds {:?}", file.meta)));
            }
            Some(Snapshot { meta: file.meta, data: file.data })
        } else {
            None
        };
        store.remove_stale_snapshots()?;
        let state = Recovered {
            hard_state: store.hard_state,
            snapshot,
            entries: std::mem::take(&mut store.entries).into(),
        };
        Ok((store, state))
    }

    fn replay(&mut self, record: Record) -> Result<(), StoreError> {
        match record {
            Record::HardState(hs) => self.hard_state = hs,
            Record::Snapshot { meta, keep_tail } => self.apply_snapshot_meta(meta, keep_tail),
            Record::Base { snapshot, hard_state, entries } => {
                self.snapshot = snapshot;
                self.hard_state = hard_state;
                self.entries.clear();
                self.replay(Record::Entries(entries))?;
            }
            Record::Entries(entries) => {
                for e in entries {
                    if e.index <= self.snapshot.index {
                        continue;
                    }
                    self.truncate_from(e.index);
                    let expected = self.snapshot.index + self.entries.len() as Index + 1;
                    if e.index != expected {
                        return Err(StoreError::Corrupt(format!(
                            "log gap: entry {} follows {}",
                            e.index,
                            expected - 1
                        )));
                    }
                    self.entries.push_back(e);
                }
            }
        }
        Ok(())
    }

    fn apply_snapshot_meta(&mut self, meta: SnapshotMeta, keep_tail: bool) {
        if keep_tail {
            while self.entries.front().is_some_and(|e| e.index <= meta.index) {
                self.entries.pop_front();
            }
        } else {
            self.entries.clear();
        }
        self.snapshot = meta;
    }

    fn truncate_from(&mut self, index: Index) {
        let keep = index.saturating_sub(self.snapshot.index + 1) as usize;
        self.entries.truncate(keep);
    }

    /// Makes a `Ready`'s hard state, snapshot and entries durable (one fsync
    /// in the common case). Call before sending `persisted_messages`.
    pub fn persist(&mut self, ready: &Ready) -> Result<(), StoreError> {
        if let Some(hs) = ready.hard_state {
            self.hard_state = hs;
            self.append(&Record::HardState(hs))?;
        }
        if let Some(snap) = &ready.snapshot {
            self.install_snapshot(snap, &ready.log_tail)?;
        }
        if !ready.entries.is_empty() {
            self.append(&RecordRef::Entries(&ready.entries))?;
        }
        self.wal.sync()?;
        Ok(())
    }

    fn install_snapshot(&mut self, snap: &NewSnapshot, tail: &[Entry]) -> Result<(), StoreError> {
        let (s, keep_tail) = match snap {
            NewSnapshot::Compacted(s) => (s, true),
            NewSnapshot::Received(s) => (s, false),
        };
        let name = snapshot_name(s.meta);
        let file = postcard::to_allocvec(&SnapshotFile { meta: s.meta, data: s.data.clone() })
            .map_err(|e| StoreError::Corrupt(format!("encoding snapshot: {e}")))?;
        // 1. The snapshot file, durable under its final name.
        write_checked(self.wal.dir_mut(), &name, &file)
            .map_err(|source| StoreError::Snapshot { name: name.clone(), source })?;
        // 2. The record that puts it in force.
        self.append(&Record::Snapshot { meta: s.meta, keep_tail })?;
        self.wal.sync()?;
        self.apply_snapshot_meta(s.meta, keep_tail);
        // 3. A fresh segment that stands on its own (a Base record), so the
        // older ones can go.
        let segment = self.wal.rotate()?;
        self.append(&Record::Base {
            snapshot: self.snapshot,
            hard_state: self.hard_state,
            entries: tail.to_vec(),
        })?;
        self.wal.sync()?;
        self.wal.remove_segments_before(segment)?;
        self.remove_stale_snapshots()
    }

    /// Deletes snapshot files other than the one in force (left by a crash
    /// between writing a snapshot and logging it, or superseded).
    fn remove_stale_snapshots(&mut self) -> Result<(), StoreError> {
        let current = snapshot_name(self.snapshot);
        let io = |op, name: &str| {
            let name = name.to_string();
            move |source| StoreError::Wal(WalError::Io { op, name, source })
        };
        let names = self.wal.dir().list().map_err(io("list", "."))?;
        for name in names {
            if name.starts_with("snap-") && name != current {
                self.wal.dir_mut().remove(&name).map_err(io("remove", &name))?;
            }
        }
        Ok(())
    }

    fn append(&mut self, record: &impl Serialize) -> Result<(), StoreError> {
        self.scratch.clear();
        let bytes = postcard::to_extend(record, std::mem::take(&mut self.scratch))
            .map_err(|e| StoreError::Corrupt(format!("encoding record: {e}")))?;
        self.wal.append(&bytes)?;
        self.scratch = bytes;
        Ok(())
    }

    pub fn dir(&self) -> &D {
        self.wal.dir()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::message::EntryKind;

    #[test]
    fn borrowed_entries_record_decodes_as_the_owned_one() {
        let entries =
            vec![Entry { term: 3, index: 9, kind: EntryKind::Normal, data: Bytes::from_static(b"x") }];
        let bytes = postcard::to_allocvec(&RecordRef::Entries(&entries)).unwrap();
        match postcard::from_bytes::<Record>(&bytes).unwrap() {
            Record::Entries(decoded) => assert_eq!(decoded, entries),
            other => panic!("decoded as {other:?}"),
        }
        let hs = HardState { term: 4, vote: Some(2) };
        let bytes = postcard::to_allocvec(&RecordRef::HardState(hs)).unwrap();
        assert!(matches!(postcard::from_bytes::<Record>(&bytes).unwrap(), Record::HardState(h) if h == hs));
    }
}
