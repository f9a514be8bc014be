//! The in-memory log: the entries after the latest snapshot. Durability is the
//! store's job (see `store.rs`); this type only keeps indices straight.

use std::collections::VecDeque;

use crate::message::{Entry, Index, SnapshotMeta, Term};

#[derive(Debug, Default)]
pub struct RaftLog {
    /// The snapshot covers every index up to and including this one.
    snapshot: SnapshotMeta,
    /// `entries[i]` has index `snapshot.index + 1 + i`.
    entries: VecDeque<Entry>,
    /// Sum of `Entry::size` over `entries`, kept up to date so a service can
    /// poll it on every turn (KV-3's "snapshot when the log passes N bytes").
    bytes: usize,
}

impl RaftLog {
    pub fn new(snapshot: SnapshotMeta, entries: Vec<Entry>) -> Self {
        let mut log = RaftLog { snapshot, entries: VecDeque::new(), bytes: 0 };
        for e in entries {
            log.push(e);
        }
        log
    }

    pub fn snapshot_meta(&self) -> SnapshotMeta {
        self.snapshot
    }

    pub fn first_index(&self) -> Index {
        self.snapshot.index + 1
    }

    pub fn last_index(&self) -> Index {
        self.snapshot.index + self.entries.len() as Index
    }

    pub fn last_term(&self) -> Term {
        self.entries.back().map_or(self.snapshot.term, |e| e.term)
    }

    /// The term at `index`, or None when it is compacted away or beyond the end.
    pub fn term(&self, index: Index) -> Option<Term> {
        if index == self.snapshot.index {
            return Some(self.snapshot.term);
        }
        self.entry(index).map(|e| e.term)
    }

    pub fn entry(&self, index: Index) -> Option<&Entry> {
        if index <= self.snapshot.index {
            return None;
        }
        self.entries.get((index - self.snapshot.index - 1) as usize)
    }

    /// Entries in `[lo, hi)`, stopping once `max_bytes` is reached (always at
    /// least one entry, so a large entry cannot stall replication).
    pub fn slice(&self, lo: Index, hi: Index, max_bytes: usize) -> Vec<Entry> {
        assert!(lo > self.snapshot.index, "slice({lo}..) below the snapshot");
        let hi = hi.min(self.last_index() + 1);
        if lo >= hi {
            return Vec::new();
        }
        let start = (lo - self.snapshot.index - 1) as usize;
        let end = (hi - self.snapshot.index - 1) as usize;
        let range = self.entries.range(start..end);
        if max_bytes == usize::MAX {
            return range.cloned().collect();
        }
        let mut out = Vec::with_capacity(end - start);
        let mut bytes = 0;
        for e in range {
            bytes += e.size();
            if !out.is_empty() && bytes > max_bytes {
                break;
            }
            out.push(e.clone());
        }
        out
    }

    /// Bytes of entries held (by `Entry::size`).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter()
    }

    pub fn push(&mut self, e: Entry) {
        assert_eq!(e.index, self.last_index() + 1, "log gap or overlap");
        assert!(e.term >= self.last_term(), "log terms must not decrease");
        self.bytes += e.size();
        self.entries.push_back(e);
    }

    /// Drops every entry at `index` and after.
    pub fn truncate_from(&mut self, index: Index) {
        assert!(index > self.snapshot.index, "truncating into the snapshot");
        let keep = (index - self.snapshot.index - 1) as usize;
        let dropped: usize = self.entries.iter().skip(keep).map(Entry::size).sum();
        self.bytes -= dropped;
        self.entries.truncate(keep);
    }

    /// Forgets entries up to `index`, which the service's snapshot now covers.
    pub fn compact_to(&mut self, index: Index) {
        let term = self.term(index).expect("compacting to an index the log holds");
        let drop = (index - self.snapshot.index) as usize;
        let dropped: usize = self.entries.drain(..drop).map(|e| e.size()).sum();
        self.bytes -= dropped;
        self.snapshot = SnapshotMeta { index, term };
    }

    /// Replaces the whole log with a snapshot received from the leader.
    pub fn reset(&mut self, snapshot: SnapshotMeta) {
        self.entries.clear();
        self.bytes = 0;
        self.snapshot = snapshot;
    }

    /// The last index holding term `term`, for the leader's fast backtracking.
    pub fn last_index_of_term(&self, term: Term) -> Option<Index> {
        for e in self.entries.iter().rev() {
            if e.term == term {
                return Some(e.index);
            }
            if e.term < term {
                return None;
            }
        }
        (self.snapshot.term == term && self.snapshot.index > 0).then_some(self.snapshot.index)
    }

    /// The first index of the run of `term` that contains `index`, for the
    /// follower's ConflictIndex.
    pub fn first_index_of_term_at(&self, index: Index) -> Index {
        let term = self.term(index).expect("index within the log");
        let mut i = index;
        while i > self.first_index() && self.term(i - 1) == Some(term) {
            i -= 1;
        }
        i
    }

    /// Is a log ending at (last_index, last_term) at least as up to date as ours? (RAFT-2)
    pub fn is_up_to_date(&self, last_index: Index, last_term: Term) -> bool {
        last_term > self.last_term() || (last_term == self.last_term() && last_index >= self.last_index())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::EntryKind;
    use bytes::Bytes;

    fn e(index: Index, term: Term) -> Entry {
        Entry { term, index, kind: EntryKind::Normal, data: Bytes::new() }
    }

    #[test]
    fn indices_survive_compaction() {
        let mut log = RaftLog::new(SnapshotMeta::default(), (1..=10).map(|i| e(i, 1 + i / 4)).collect());
        assert_eq!(log.last_index(), 10);
        log.compact_to(5);
        assert_eq!(log.first_index(), 6);
        assert_eq!(log.term(5), Some(2));
        assert_eq!(log.term(4), None);
        assert_eq!(log.entry(6).map(|x| x.index), Some(6));
        assert_eq!(log.last_index_of_term(2), Some(7));
        assert_eq!(log.first_index_of_term_at(7), 6);
        log.truncate_from(8);
        assert_eq!(log.last_index(), 7);
        assert_eq!(log.slice(6, 100, 0).len(), 1);
        assert_eq!(log.slice(6, 100, usize::MAX).len(), 2);
    }

    #[test]
    fn up_to_date_compares_term_then_index() {
        let log = RaftLog::new(SnapshotMeta::default(), vec![e(1, 1), e(2, 3)]);
        assert!(log.is_up_to_date(1, 4));
        assert!(log.is_up_to_date(2, 3));
        assert!(!log.is_up_to_date(5, 2));
        assert!(!log.is_up_to_date(1, 3));
    }
}
