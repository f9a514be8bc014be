//! Raft's safety properties, checked from the outside after every event of
//! a simulation (Raft paper, Figure 3). Any harness that runs Raft cores —
//! the Raft suite, the key/value suite — feeds this one checker, so every
//! fault scenario of every service is also a safety test of Raft.
//!
//! - Election safety: at most one leader per term.
//! - Log matching: an (index, term) pair names one command and one previous
//!   term, whichever log it appears in.
//! - Leader completeness: a new leader holds every entry any node applied.
//! - State machine safety: no two nodes apply different commands at an index.
//!
//! A violation panics with `context` (the seed) so the run can be replayed.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;

use crate::message::{Entry, Index, NodeId, Term};
use crate::raft::{Raft, Ready};

#[derive(Debug, Default)]
pub struct SafetyChecker {
    /// Printed with every violation, e.g. "seed 42".
    pub context: String,
    leader_of_term: HashMap<Term, NodeId>,
    entry_identity: HashMap<(Index, Term), (Bytes, Option<Term>)>,
    applied: BTreeMap<Index, Bytes>,
    max_term: Term,
}

impl SafetyChecker {
    pub fn new(context: impl Into<String>) -> Self {
        SafetyChecker { context: context.into(), ..Default::default() }
    }

    /// Every entry a node is about to persist (log matching).
    pub fn on_ready(&mut self, raft: &Raft, ready: &Ready) {
        for e in &ready.entries {
            let prev = raft.log().term(e.index - 1);
            match self.entry_identity.get(&(e.index, e.term)) {
                Some((data, prev_term)) => {
                    assert_eq!(
                        data, &e.data,
                        "{}: log matching: two different entries at index {} term {}",
                        self.context, e.index, e.term
                    );
                    if let (Some(a), Some(b)) = (prev_term, prev) {
                        assert_eq!(
                            *a, b,
                            "{}: log matching: entry {}@{} follows different terms",
                            self.context, e.index, e.term
                        );
                    }
                }
                None => {
                    self.entry_identity.insert((e.index, e.term), (e.data.clone(), prev));
                }
            }
        }
    }

    /// A node applied `entry` (state machine safety).
    pub fn on_apply(&mut self, node: NodeId, entry: &Entry) {
        self.on_applied_data(node, entry.index, &entry.data);
    }

    /// A node holds `data` at `index` as applied, e.g. restored from a snapshot.
    pub fn on_applied_data(&mut self, node: NodeId, index: Index, data: &Bytes) {
        match self.applied.get(&index) {
            Some(prev) => assert_eq!(
                prev, data,
                "{}: state machine safety: node {node} applied a different command at {index}",
                self.context
            ),
            None => {
                self.applied.insert(index, data.clone());
            }
        }
    }

    /// After a node handled an event: election safety, and leader
    /// completeness when it just became leader.
    pub fn after_event(&mut self, raft: &Raft, was_leader: bool) {
        self.max_term = self.max_term.max(raft.term());
        if !raft.is_leader() {
            return;
        }
        let id = raft.id();
        let holder = *self.leader_of_term.entry(raft.term()).or_insert(id);
        assert_eq!(
            holder,
            id,
            "{}: election safety: nodes {holder} and {id} both lead term {}",
            self.context,
            raft.term()
        );
        if !was_leader {
            let log = raft.log();
            for (&index, data) in self.applied.range(log.first_index()..) {
                let e = log.entry(index).unwrap_or_else(|| {
                    panic!("{}: leader completeness: leader {id} lacks applied entry {index}", self.context)
                });
                assert_eq!(
                    &e.data, data,
                    "{}: leader completeness: leader {id} holds a different entry at {index}",
                    self.context
                );
            }
        }
    }

    /// The highest term any node reached.
    pub fn max_term(&self) -> Term {
        self.max_term
    }
}
