//! The key/value state machine that Raft replicates (KV-1, KV-2).
//!
//! Every replica applies the same commands in the same order, so everything
//! here is deterministic: no clocks, no hash-map iteration order in what is
//! returned or snapshotted. Writes carry (client, seq); the session table
//! remembers each client's last applied write and its result, so a write
//! retried after a timeout or a leader change takes effect at most once. The
//! table is part of the snapshot, so the guarantee survives restarts.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use shoal_raft::Index;

pub type ClientId = u64;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    Get {
        key: Bytes,
    },
    Put {
        key: Bytes,
        value: Bytes,
    },
    Append {
        key: Bytes,
        value: Bytes,
    },
    Delete {
        key: Bytes,
    },
    /// Sets `key` to `new` if its current value is `expected` (None: absent).
    Cas {
        key: Bytes,
        expected: Option<Bytes>,
        new: Bytes,
    },
}

impl Op {
    pub fn key(&self) -> &Bytes {
        match self {
            Op::Get { key }
            | Op::Put { key, .. }
            | Op::Append { key, .. }
            | Op::Delete { key }
            | Op::Cas { key, .. } => key,
        }
    }

    pub fn is_read(&self) -> bool {
        matches!(self, Op::Get { .. })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpResult {
    /// A Get's answer.
    Value(Option<Bytes>),
    /// A Put, Append or Delete took effect.
    Done,
    /// A compare-and-set: whether it swapped, and the value it found.
    Cas { swapped: bool, current: Option<Bytes> },
    /// The command could not be decoded (never produced by Shoal's own
    /// clients; applied as a no-op on every replica alike).
    Invalid,
}

/// A write as it travels through the Raft log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    pub client: ClientId,
    /// Increases by one with each request of `client`; a client has at most
    /// one request outstanding.
    pub seq: u64,
    pub op: Op,
}

impl Command {
    pub fn encode(&self) -> Bytes {
        Bytes::from(postcard::to_allocvec(self).expect("encoding a command cannot fail"))
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Session {
    last_seq: u64,
    result: OpResult,
    /// Log index of the last write, for deterministic least-recently-used eviction.
    last_index: Index,
}

/// What applying a command did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    /// Executed now.
    Executed(OpResult),
    /// A retry of the client's last write: not executed again; its saved result.
    Duplicate(OpResult),
    /// Older than the client's last write: the client has moved on, nobody waits.
    Stale,
}

impl Applied {
    pub fn result(&self) -> Option<&OpResult> {
        match self {
            Applied::Executed(r) | Applied::Duplicate(r) => Some(r),
            Applied::Stale => None,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvState {
    data: BTreeMap<Bytes, Bytes>,
    sessions: BTreeMap<ClientId, Session>,
    applied: Index,
}

/// Sessions kept before the least recently used are evicted. A client idle
/// for longer than it takes this many other clients to write loses its
/// duplicate protection (documented limit, as in every session table).
pub const MAX_SESSIONS: usize = 100_000;

impl KvState {
    pub fn new() -> Self {
        Self::default()
    }

    /// The index of the last command applied.
    pub fn applied_index(&self) -> Index {
        self.applied
    }

    pub fn get(&self, key: &[u8]) -> Option<&Bytes> {
        self.data.get(key)
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Applies the log entry at `index` (undecodable bytes are a no-op).
    pub fn apply_bytes(&mut self, index: Index, data: &[u8]) -> Applied {
        match postcard::from_bytes::<Command>(data) {
            Ok(cmd) => self.apply(index, &cmd),
            Err(e) => {
                tracing::error!(index, "undecodable key/value command in the log: {e}");
                self.advance_to(index);
                Applied::Executed(OpResult::Invalid)
            }
        }
    }

    /// Applies the command committed at `index`.
    pub fn apply(&mut self, index: Index, cmd: &Command) -> Applied {
        self.advance_to(index);
        if cmd.op.is_read() {
            // Reads normally go through ReadIndex; one that went through the
            // log needs no session (it changes nothing).
            return Applied::Executed(self.execute(&cmd.op));
        }
        if let Some(s) = self.sessions.get(&cmd.client) {
            if cmd.seq == s.last_seq {
                return Applied::Duplicate(s.result.clone());
            }
            if cmd.seq < s.last_seq {
                return Applied::Stale;
            }
        }
        let result = self.execute(&cmd.op);
        self.sessions
            .insert(cmd.client, Session { last_seq: cmd.seq, result: result.clone(), last_index: index });
        if self.sessions.len() > MAX_SESSIONS {
            self.evict_sessions();
        }
        Applied::Executed(result)
    }

    fn advance_to(&mut self, index: Index) {
        assert!(index > self.applied, "applied {index} after {}", self.applied);
        self.applied = index;
    }

    fn execute(&mut self, op: &Op) -> OpResult {
        match op {
            Op::Get { key } => OpResult::Value(self.data.get(key).cloned()),
            Op::Put { key, value } => {
                self.data.insert(key.clone(), value.clone());
                OpResult::Done
            }
            Op::Append { key, value } => {
                let v = self.data.entry(key.clone()).or_default();
                let mut joined = Vec::with_capacity(v.len() + value.len());
                joined.extend_from_slice(v);
                joined.extend_from_slice(value);
                *v = Bytes::from(joined);
                OpResult::Done
            }
            Op::Delete { key } => {
                self.data.remove(key);
                OpResult::Done
            }
            Op::Cas { key, expected, new } => {
                let current = self.data.get(key).cloned();
                let swapped = current == *expected;
                if swapped {
                    self.data.insert(key.clone(), new.clone());
                }
                OpResult::Cas { swapped, current }
            }
        }
    }

    /// Drops the least recently used tenth of the sessions, by log index,
    /// so every replica drops the same ones.
    fn evict_sessions(&mut self) {
        let mut by_age: Vec<(Index, ClientId)> =
            self.sessions.iter().map(|(&c, s)| (s.last_index, c)).collect();
        by_age.sort_unstable();
        for (_, client) in by_age.into_iter().take(MAX_SESSIONS / 10) {
            self.sessions.remove(&client);
        }
    }

    pub fn snapshot(&self) -> Bytes {
        Bytes::from(postcard::to_allocvec(self).expect("encoding the state cannot fail"))
    }

    /// Restores a snapshot taken by `snapshot` (on any replica).
    pub fn restore(bytes: &[u8]) -> Result<KvState, postcard::Error> {
        postcard::from_bytes(bytes)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn cmd(client: ClientId, seq: u64, op: Op) -> Command {
        Command { client, seq, op }
    }

    #[test]
    fn operations() {
        let mut kv = KvState::new();
        let put = cmd(1, 1, Op::Put { key: b("k"), value: b("a") });
        assert_eq!(kv.apply(1, &put), Applied::Executed(OpResult::Done));
        kv.apply(2, &cmd(1, 2, Op::Append { key: b("k"), value: b("b") }));
        assert_eq!(kv.get(b"k"), Some(&b("ab")));
        let cas = kv.apply(3, &cmd(2, 1, Op::Cas { key: b("k"), expected: Some(b("x")), new: b("z") }));
        assert_eq!(cas, Applied::Executed(OpResult::Cas { swapped: false, current: Some(b("ab")) }));
        let cas = kv.apply(4, &cmd(2, 2, Op::Cas { key: b("k"), expected: Some(b("ab")), new: b("z") }));
        assert_eq!(cas, Applied::Executed(OpResult::Cas { swapped: true, current: Some(b("ab")) }));
        kv.apply(5, &cmd(3, 1, Op::Delete { key: b("k") }));
        assert_eq!(kv.get(b"k"), None);
        let cas = kv.apply(6, &cmd(3, 2, Op::Cas { key: b("k"), expected: None, new: b("new") }));
        assert_eq!(cas, Applied::Executed(OpResult::Cas { swapped: true, current: None }));
    }

    #[test]
    fn a_retried_write_executes_once() {
        let mut kv = KvState::new();
        let append = cmd(7, 1, Op::Append { key: b("k"), value: b("x") });
        kv.apply(1, &append);
        // The same request again (a retry that also got into the log).
        assert_eq!(kv.apply(2, &append), Applied::Duplicate(OpResult::Done));
        assert_eq!(kv.get(b"k"), Some(&b("x")));
        kv.apply(3, &cmd(7, 2, Op::Append { key: b("k"), value: b("y") }));
        assert_eq!(kv.apply(4, &append), Applied::Stale);
        assert_eq!(kv.get(b"k"), Some(&b("xy")));
    }

    #[test]
    fn snapshot_carries_data_and_sessions() {
        let mut kv = KvState::new();
        let append = cmd(7, 1, Op::Append { key: b("k"), value: b("x") });
        kv.apply(1, &append);
        let mut restored = KvState::restore(&kv.snapshot()).unwrap();
        assert_eq!(restored, kv);
        assert_eq!(restored.apply(2, &append), Applied::Duplicate(OpResult::Done));
        assert_eq!(restored.get(b"k"), Some(&b("x")));
        assert!(KvState::restore(b"\xff\xff garbage").is_err());
    }

    #[test]
    fn undecodable_commands_are_no_ops() {
        let mut kv = KvState::new();
        assert_eq!(kv.apply_bytes(1, b"\xff\xff\xff"), Applied::Executed(OpResult::Invalid));
        assert_eq!(kv.applied_index(), 1);
        assert!(kv.is_empty());
    }

    #[test]
    fn sessions_are_bounded() {
        let mut kv = KvState::new();
        for c in 0..(MAX_SESSIONS as u64 + 1) {
            kv.apply(c + 1, &cmd(c, 1, Op::Put { key: b("k"), value: b("v") }));
        }
        assert!(kv.sessions.len() <= MAX_SESSIONS);
        // The oldest client lost its session; the newest kept it.
        assert!(!kv.sessions.contains_key(&0));
        assert!(kv.sessions.contains_key(&(MAX_SESSIONS as u64)));
    }
}
