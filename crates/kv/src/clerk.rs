//! The client's side of the protocol (KV-2), as a pure state machine so the
//! real client and the simulated ones share it: which server to ask, what a
//! reply means, when to move on. The caller does the sending and the timing.

use serde::{Deserialize, Serialize};
use shoal_raft::NodeId;

use crate::state::{ClientId, Command, Op, OpResult};

/// What a client sends to a server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvRequest {
    Execute(Command),
}

/// What a server answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvResponse {
    Ok(OpResult),
    /// Not the leader; `leader` is its best guess (a Raft node id).
    WrongLeader {
        leader: Option<NodeId>,
    },
    /// The server lost leadership (or the entry) while the request waited;
    /// retrying is safe: the session table drops a duplicate write.
    Retry,
}

/// Tracks the leader guess and the request sequence of one client.
/// Servers are addressed by position `0..servers`; Raft node ids are
/// positions plus one.
#[derive(Debug, Clone)]
pub struct Clerk {
    id: ClientId,
    next_seq: u64,
    servers: usize,
    leader: usize,
}

impl Clerk {
    pub fn new(id: ClientId, servers: usize) -> Self {
        assert!(servers > 0, "a clerk needs at least one server");
        Clerk { id, next_seq: 1, servers, leader: (id % servers as u64) as usize }
    }

    pub fn id(&self) -> ClientId {
        self.id
    }

    /// Wraps `op` for sending; each write takes the next sequence number and
    /// keeps it across every retry of that write.
    pub fn command(&mut self, op: Op) -> Command {
        let seq = if op.is_read() {
            0
        } else {
            self.next_seq += 1;
            self.next_seq - 1
        };
        Command { client: self.id, seq, op }
    }

    /// The server to send the current request to.
    pub fn target(&self) -> usize {
        self.leader
    }

    /// Digests a reply from server `from`: the result, or None to resend to
    /// the (updated) target.
    pub fn on_response(&mut self, from: usize, response: KvResponse) -> Option<OpResult> {
        match response {
            KvResponse::Ok(result) => {
                self.leader = from;
                Some(result)
            }
            KvResponse::WrongLeader { leader: Some(id) } if id >= 1 && (id as usize) <= self.servers => {
                let hinted = id as usize - 1;
                // A hint pointing back at the server that gave it would loop.
                self.leader = if hinted == from { (from + 1) % self.servers } else { hinted };
                None
            }
            KvResponse::WrongLeader { .. } | KvResponse::Retry => {
                self.leader = (from + 1) % self.servers;
                None
            }
        }
    }

    /// No reply in time: try the next server.
    pub fn on_timeout(&mut self) {
        self.leader = (self.leader + 1) % self.servers;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn follows_hints_and_rotates() {
        let mut c = Clerk::new(7, 3);
        let first = c.target();
        assert_eq!(c.on_response(first, KvResponse::WrongLeader { leader: Some(3) }), None);
        assert_eq!(c.target(), 2);
        assert_eq!(c.on_response(2, KvResponse::WrongLeader { leader: None }), None);
        assert_eq!(c.target(), 0);
        c.on_timeout();
        assert_eq!(c.target(), 1);
        // A bogus hint is ignored, not trusted.
        assert_eq!(c.on_response(1, KvResponse::WrongLeader { leader: Some(99) }), None);
        assert_eq!(c.target(), 2);
        assert_eq!(c.on_response(2, KvResponse::Ok(OpResult::Done)), Some(OpResult::Done));
        assert_eq!(c.target(), 2);
    }

    #[test]
    fn writes_get_increasing_sequence_numbers() {
        let mut c = Clerk::new(1, 1);
        let key = Bytes::from_static(b"k");
        let a = c.command(Op::Put { key: key.clone(), value: Bytes::new() });
        let r = c.command(Op::Get { key: key.clone() });
        let b = c.command(Op::Delete { key });
        assert_eq!((a.seq, r.seq, b.seq), (1, 0, 2));
    }
}
