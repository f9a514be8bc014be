//! What a leader knows about each follower's log, and how hard it may push.

use std::collections::VecDeque;

use crate::message::Index;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplicationState {
    /// Unsure where the follower's log ends: one Append at a time until a
    /// response tells us (after an election or a rejection).
    Probe,
    /// The follower is in sync: stream Appends without waiting, up to the
    /// in-flight window (RAFT-11 pipelining).
    Replicate,
    /// The follower needs entries we compacted: send the snapshot in chunks.
    Snapshot { index: Index, offset: u64 },
}

#[derive(Clone, Debug)]
pub struct Progress {
    pub match_index: Index,
    pub next_index: Index,
    pub state: ReplicationState,
    /// In Probe: an Append is out and unanswered.
    pub probe_sent: bool,
    /// Last index of each Append in flight (Replicate), oldest first.
    pub inflight: VecDeque<Index>,
    /// Heard from since the last check-quorum round (RAFT-8).
    pub recent_active: bool,
    /// Highest ReadIndex round this follower acknowledged (RAFT-9).
    pub read_ack: u64,
    /// `match_index` (or snapshot offset) at the previous heartbeat, to spot a
    /// stream that stalled because messages were lost.
    pub progress_at_heartbeat: (Index, u64),
    /// Any replication response arrived since the last heartbeat: a slow
    /// follower (or a busy leader) is not a stalled one.
    pub heard_since_heartbeat: bool,
}

impl Progress {
    pub fn new(next_index: Index) -> Self {
        Progress {
            match_index: 0,
            next_index,
            state: ReplicationState::Probe,
            probe_sent: false,
            inflight: VecDeque::new(),
            recent_active: true,
            read_ack: 0,
            progress_at_heartbeat: (0, 0),
            heard_since_heartbeat: false,
        }
    }

    pub fn become_probe(&mut self) {
        self.state = ReplicationState::Probe;
        self.next_index = self.match_index + 1;
        self.probe_sent = false;
        self.inflight.clear();
    }

    pub fn become_replicate(&mut self) {
        self.state = ReplicationState::Replicate;
        self.next_index = self.match_index + 1;
        self.inflight.clear();
    }

    /// Records an acknowledgement; returns whether it told us anything new.
    pub fn ack(&mut self, match_index: Index) -> bool {
        while self.inflight.front().is_some_and(|&i| i <= match_index) {
            self.inflight.pop_front();
        }
        if match_index <= self.match_index {
            return false;
        }
        self.match_index = match_index;
        self.next_index = self.next_index.max(match_index + 1);
        true
    }
}
