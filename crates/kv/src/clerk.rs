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
    /// Not the leader; `leader` is its best guess and `me` its own id (Raft
    /// node ids: the client learns which address is which node from these,
    /// whatever order it lists the servers in).
    WrongLeader {
        leader: Option<NodeId>,
        me: NodeId,
    },
    /// The server lost leadership (or the entry) while the request waited;
    /// retrying is safe: the session table drops a duplicate write.
    Retry,
}

/// Tracks the leader guess and the request sequence of one client.
/// Servers are addressed by position `0..servers` in the client's own list;
/// which Raft node sits at a position is learned from the servers' answers.
#[derive(Debug, Clone)]
pub struct Clerk {
    id: ClientId,
    next_seq: u64,
    servers: usize,
    leader: usize,
    /// The Raft node id at each position, once a server there said it.
    node_at: Vec<Option<NodeId>>,
}

impl Clerk {
    pub fn new(id: ClientId, servers: usize) -> Self {
        assert!(servers > 0, "a clerk needs at least one server");
        Clerk {
            id,
            next_seq: 1,
            servers,
            leader: (id % servers as u64) as usize,
            node_at: vec![None; servers],
        }
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
            KvResponse::WrongLeader { leader, me } => {
                self.node_at[from] = Some(me);
                self.leader = match leader.filter(|&l| l != me) {
                    // A hint we can place: go there.
                    Some(l) => match self.node_at.iter().position(|&n| n == Some(l)) {
                        Some(p) => p,
                        // Not placed yet: try a server we know nothing about.
                        None => self.next_unknown(from).unwrap_or((from + 1) % self.servers),
                    },
                    None => (from + 1) % self.servers,
                };
                None
            }
            KvResponse::Retry => {
                self.leader = (from + 1) % self.servers;
                None
            }
        }
    }

    /// The first position after `from` whose node we have not learned.
    fn next_unknown(&self, from: usize) -> Option<usize> {
        (1..self.servers).map(|k| (from + k) % self.servers).find(|&p| self.node_at[p].is_none())
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
        // Position `first` is node 2; it says node 3 leads, which we cannot
        // place yet: try a position we know nothing about.
        assert_eq!(c.on_response(first, KvResponse::WrongLeader { leader: Some(3), me: 2 }), None);
        let second = c.target();
        assert_ne!(second, first);
        // That one is node 1 (no leader known): move on to the last one.
        assert_eq!(c.on_response(second, KvResponse::WrongLeader { leader: None, me: 1 }), None);
        let third = c.target();
        assert!(third != first && third != second);
        assert_eq!(c.on_response(third, KvResponse::Ok(OpResult::Done)), Some(OpResult::Done));
        assert_eq!(c.target(), third);
        c.on_timeout();
        assert_ne!(c.target(), third);
        // Now node 1's place is known: a hint for it goes straight there.
        let t = c.target();
        assert_eq!(c.on_response(t, KvResponse::WrongLeader { leader: Some(1), me: 9 }), None);
        assert_eq!(c.target(), second);
    }

    /// Servers listed out of node-id order: hints never bounce between
    /// two followers (a bug the process tests found).
    #[test]
    fn hints_work_whatever_the_address_order() {
        // Positions 0, 1, 2 hold nodes 2, 3, 1; node 1 leads.
        let node_at = [2u64, 3, 1];
        for client in 0..30 {
            let mut c = Clerk::new(client, 3);
            let mut hops = 0;
            loop {
                let p = c.target();
                let resp = if node_at[p] == 1 {
                    KvResponse::Ok(OpResult::Done)
                } else {
                    KvResponse::WrongLeader { leader: Some(1), me: node_at[p] }
                };
                if c.on_response(p, resp).is_some() {
                    break;
                }
                hops += 1;
                assert!(hops <= 3, "client {client} kept bouncing");
            }
        }
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
