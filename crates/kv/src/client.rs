//! The key/value client library: finds the leader, retries on timeouts and
//! redirects, and keeps every write at-most-once through its (client, seq)
//! (KV-2). Many `KvClient`s can share the same connections.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use shoal_rpc::{Client, ClientOptions};

use crate::clerk::{Clerk, KvRequest};
use crate::server::{ServerRequest, ServerResponse, ServerStatus};
use crate::state::{ClientId, Op, OpResult};

#[derive(Debug, thiserror::Error)]
pub enum KvError {
    #[error("no leader reachable within {0:?} (tried {1} times)")]
    NoLeader(Duration, u32),
    #[error("server answered something unexpected: {0}")]
    Protocol(String),
    #[error("a cluster needs at least one server address")]
    NoServers,
}

/// Connections to every server of a cluster, shareable by many clients.
pub type Connections = Arc<[Client<ServerRequest, ServerResponse>]>;

/// Opens (lazily) one connection per server address.
pub fn connect(addrs: &[String], attempt_timeout: Duration) -> Result<Connections, KvError> {
    if addrs.is_empty() {
        return Err(KvError::NoServers);
    }
    let opts = ClientOptions { timeout: attempt_timeout, retries: 0, ..ClientOptions::default() };
    Ok(addrs.iter().map(|a| Client::new(a, opts.clone())).collect())
}

/// One logical client: at most one request outstanding.
#[derive(Debug)]
pub struct KvClient {
    conns: Connections,
    clerk: Clerk,
    /// Give up on an operation after this long.
    pub op_timeout: Duration,
}

impl KvClient {
    pub fn new(conns: Connections) -> Self {
        let id = random_client_id();
        let n = conns.len();
        KvClient { conns, clerk: Clerk::new(id, n), op_timeout: Duration::from_secs(10) }
    }

    pub fn id(&self) -> ClientId {
        self.clerk.id()
    }

    /// Runs `op` until a leader answers, or `op_timeout` passes.
    pub async fn execute(&mut self, op: Op) -> Result<OpResult, KvError> {
        let cmd = self.clerk.command(op);
        let req = ServerRequest::Kv(KvRequest::Execute(cmd));
        let started = Instant::now();
        let mut tries = 0u32;
        loop {
            if started.elapsed() >= self.op_timeout {
                return Err(KvError::NoLeader(self.op_timeout, tries));
            }
            tries += 1;
            let target = self.clerk.target();
            match self.conns[target].call(&req).await {
                Ok(ServerResponse::Kv(resp)) => {
                    if let Some(result) = self.clerk.on_response(target, resp) {
                        return Ok(result);
                    }
                    if (tries as usize).is_multiple_of(self.conns.len()) {
                        // A full round without an answer: an election is
                        // probably under way, or the leader is not in our
                        // list; do not spin.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
                Ok(other) => return Err(KvError::Protocol(format!("{other:?}"))),
                Err(e) => {
                    tracing::debug!(server = target, "request failed: {e}");
                    self.clerk.on_timeout();
                    if (tries as usize).is_multiple_of(self.conns.len()) {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
        }
    }

    pub async fn get(&mut self, key: impl Into<Bytes>) -> Result<Option<Bytes>, KvError> {
        match self.execute(Op::Get { key: key.into() }).await? {
            OpResult::Value(v) => Ok(v),
            other => Err(KvError::Protocol(format!("get answered {other:?}"))),
        }
    }

    pub async fn put(&mut self, key: impl Into<Bytes>, value: impl Into<Bytes>) -> Result<(), KvError> {
        self.write(Op::Put { key: key.into(), value: value.into() }).await
    }

    pub async fn append(&mut self, key: impl Into<Bytes>, value: impl Into<Bytes>) -> Result<(), KvError> {
        self.write(Op::Append { key: key.into(), value: value.into() }).await
    }

    pub async fn delete(&mut self, key: impl Into<Bytes>) -> Result<(), KvError> {
        self.write(Op::Delete { key: key.into() }).await
    }

    /// Compare-and-set: returns whether it swapped, and the value found.
    pub async fn cas(
        &mut self,
        key: impl Into<Bytes>,
        expected: Option<Bytes>,
        new: impl Into<Bytes>,
    ) -> Result<(bool, Option<Bytes>), KvError> {
        match self.execute(Op::Cas { key: key.into(), expected, new: new.into() }).await? {
            OpResult::Cas { swapped, current } => Ok((swapped, current)),
            other => Err(KvError::Protocol(format!("cas answered {other:?}"))),
        }
    }

    async fn write(&mut self, op: Op) -> Result<(), KvError> {
        match self.execute(op).await? {
            OpResult::Done => Ok(()),
            other => Err(KvError::Protocol(format!("write answered {other:?}"))),
        }
    }

    /// Every server's status (None where unreachable).
    pub async fn statuses(&self) -> Vec<Option<ServerStatus>> {
        let mut out = Vec::with_capacity(self.conns.len());
        for c in self.conns.iter() {
            out.push(match c.call(&ServerRequest::Status).await {
                Ok(ServerResponse::Status(s)) => Some(s),
                _ => None,
            });
        }
        out
    }
}

/// A client id unlikely to collide with any other client's, ever: the
/// session table keys on it.
fn random_client_id() -> ClientId {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    h.finish()
}
