//! The vocabulary of Raft: log entries, persistent state, snapshots and the
//! messages nodes exchange. Plain data with serde, so the same types travel
//! over the simulated network, over TCP and into the write-ahead log.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// A node's identity within one Raft group. Never 0 in a real cluster.
pub type NodeId = u64;
/// A Raft term: a logical clock that only moves forward.
pub type Term = u64;
/// A position in the replicated log; the first entry has index 1.
pub type Index = u64;

/// What an entry carries. A new leader appends a `Noop` so that it can commit
/// entries of earlier terms (Figure 8) and serve ReadIndex reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryKind {
    Normal,
    Noop,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub term: Term,
    pub index: Index,
    pub kind: EntryKind,
    pub data: Bytes,
}

impl Entry {
    /// Bytes this entry adds to a message, for batching limits.
    pub fn size(&self) -> usize {
        self.data.len() + 24
    }
}

/// The state that must be durable before a node answers anyone (RAFT-5).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HardState {
    pub term: Term,
    pub vote: Option<NodeId>,
}

/// Where a snapshot sits in the log: it replaces every entry up to `index`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMeta {
    pub index: Index,
    pub term: Term,
}

/// The service's state as of `meta.index`, opaque to Raft.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub meta: SnapshotMeta,
    pub data: Bytes,
}

/// One Raft message. `term` is the sender's term, except for pre-votes, which
/// carry the term the sender would campaign in (RAFT-8).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub from: NodeId,
    pub to: NodeId,
    pub term: Term,
    pub body: Body,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Body {
    /// "Would you vote for me?" — asked before raising the term, so a node
    /// that was cut off cannot disrupt a healthy cluster when it returns.
    PreVote {
        last_index: Index,
        last_term: Term,
    },
    PreVoteResponse {
        granted: bool,
    },
    RequestVote {
        last_index: Index,
        last_term: Term,
    },
    RequestVoteResponse {
        granted: bool,
    },
    Append {
        prev_index: Index,
        prev_term: Term,
        entries: Vec<Entry>,
        commit: Index,
    },
    AppendResponse(AppendResult),
    /// Keeps followers from campaigning, carries the commit index up to what
    /// the follower is known to hold, and confirms leadership for ReadIndex.
    Heartbeat {
        commit: Index,
        read_seq: u64,
    },
    HeartbeatResponse {
        read_seq: u64,
    },
    /// One chunk of the leader's snapshot, for a follower behind the log's start.
    InstallSnapshot {
        meta: SnapshotMeta,
        offset: u64,
        total: u64,
        chunk: Bytes,
    },
    /// `next_offset` asks for the next chunk; `done` means installed and durable.
    InstallSnapshotResponse {
        index: Index,
        next_offset: u64,
        done: bool,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AppendResult {
    /// The follower's log matches the leader's through `match_index`, durably.
    Accepted { match_index: Index },
    /// The consistency check failed at `rejected` (the message's prev_index).
    /// The conflict fields let the leader skip a whole term at once (RAFT-4).
    Rejected { rejected: Index, conflict_index: Index, conflict_term: Option<Term> },
}

impl Message {
    /// Checks what the core relies on but a buggy or hostile peer could get
    /// wrong; the core drops (and logs) a message that fails. Garbled bytes
    /// never get this far: the wire decoder rejects them.
    pub fn validate(&self) -> Result<(), String> {
        match &self.body {
            Body::Append { prev_index, prev_term, entries, .. } => {
                let (mut index, mut term) = (*prev_index, *prev_term);
                for e in entries {
                    if e.index != index + 1 || e.term < term || e.term > self.term {
                        return Err(format!(
                            "Append entries out of order: entry {}@{} after {index}@{term} in term {}",
                            e.index, e.term, self.term
                        ));
                    }
                    (index, term) = (e.index, e.term);
                }
                Ok(())
            }
            Body::InstallSnapshot { meta, offset, total, chunk } => {
                if offset.checked_add(chunk.len() as u64).is_none_or(|end| end > *total) || meta.index == 0 {
                    return Err(format!("InstallSnapshot chunk {offset}+{} beyond {total}", chunk.len()));
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

impl Body {
    /// Responses travel the "reply" direction of the network fault model.
    pub fn is_response(&self) -> bool {
        matches!(
            self,
            Body::PreVoteResponse { .. }
                | Body::RequestVoteResponse { .. }
                | Body::AppendResponse(_)
                | Body::HeartbeatResponse { .. }
                | Body::InstallSnapshotResponse { .. }
        )
    }

    /// A short name for logs and per-kind message counters.
    pub fn kind(&self) -> &'static str {
        match self {
            Body::PreVote { .. } => "PreVote",
            Body::PreVoteResponse { .. } => "PreVoteResponse",
            Body::RequestVote { .. } => "RequestVote",
            Body::RequestVoteResponse { .. } => "RequestVoteResponse",
            Body::Append { .. } => "Append",
            Body::AppendResponse(_) => "AppendResponse",
            Body::Heartbeat { .. } => "Heartbeat",
            Body::HeartbeatResponse { .. } => "HeartbeatResponse",
            Body::InstallSnapshot { .. } => "InstallSnapshot",
            Body::InstallSnapshotResponse { .. } => "InstallSnapshotResponse",
        }
    }
}
