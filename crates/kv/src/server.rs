//! A key/value server process: one Raft node (the tokio driver over a real
//! data directory) plus one RPC port that carries both the Raft traffic of
//! its peers and the requests of clients.
//!
//! Writes go through the Raft log and answer once applied; reads use
//! ReadIndex (RAFT-9): no log write, a heartbeat round that confirms
//! leadership, then the local state once it has applied that far.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use shoal_raft::{
    spawn_node, Config, DriverConfig, Index, Message, NodeHandle, NodeId, ProposeError, Role, Snapshot,
    StateMachine, Transport,
};
use shoal_rpc::{Client, ClientOptions, Server, ServerOptions, Service};
use shoal_wal::OsDir;

use crate::clerk::{KvRequest, KvResponse};
use crate::state::{Applied, Command, KvState, OpResult};

/// Everything a server's port answers.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum ServerRequest {
    /// Raft traffic from a peer (sent one-way).
    Raft(Message),
    Kv(KvRequest),
    Status,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum ServerResponse {
    Kv(KvResponse),
    Status(ServerStatus),
    Ack,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerStatus {
    pub id: NodeId,
    pub leader: Option<NodeId>,
    pub is_leader: bool,
    pub term: u64,
    pub commit: Index,
    pub applied: Index,
    pub snapshot_index: Index,
    pub keys: u64,
}

#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub id: NodeId,
    pub listen: SocketAddr,
    /// Every member's address, this server's included.
    pub peers: BTreeMap<NodeId, String>,
    pub data: PathBuf,
    /// Snapshot once the Raft log holds this many bytes (KV-3).
    pub max_raft_state: Option<usize>,
    pub tick: Duration,
    pub election_ticks: u32,
    pub heartbeat_ticks: u32,
    /// How long a request may wait for its entry before the client is told
    /// to retry.
    pub request_timeout: Duration,
}

impl ServerConfig {
    /// Defaults that elect a leader well within a second on loopback.
    pub fn new(id: NodeId, listen: SocketAddr, peers: BTreeMap<NodeId, String>, data: PathBuf) -> Self {
        ServerConfig {
            id,
            listen,
            peers,
            data,
            max_raft_state: Some(8 << 20),
            tick: Duration::from_millis(10),
            election_ticks: 30,
            heartbeat_ticks: 5,
            request_timeout: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("node id {0} is not among --peers")]
    NotAMember(NodeId),
    #[error("data directory {path}: {source}")]
    Data { path: PathBuf, source: std::io::Error },
    #[error("cannot recover the Raft state: {0}")]
    Store(#[from] shoal_raft::StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
}

/// The replicated state, shared between the driver (which applies) and the
/// RPC handlers (which read after ReadIndex).
#[derive(Debug, Clone, Default)]
struct SharedState(Arc<RwLock<KvState>>);

impl SharedState {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, KvState> {
        self.0.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, KvState> {
        self.0.write().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl StateMachine for SharedState {
    type Output = Applied;

    fn apply(&mut self, index: Index, data: &Bytes) -> Applied {
        self.write().apply_bytes(index, data)
    }

    fn snapshot(&self) -> Bytes {
        self.read().snapshot()
    }

    fn restore(&mut self, snapshot: &Snapshot) {
        // A snapshot is written by this same code and checksummed on disk;
        // one that does not decode means replicas would diverge: stop loudly.
        let state = KvState::restore(&snapshot.data)
            .unwrap_or_else(|e| panic!("snapshot at index {} does not decode: {e}", snapshot.meta.index));
        *self.write() = state;
    }
}

/// Sends Raft messages to peers as one-way RPCs.
#[derive(Debug)]
struct RpcTransport {
    peers: BTreeMap<NodeId, Client<ServerRequest, ServerResponse>>,
}

impl Transport for RpcTransport {
    fn send(&self, msg: Message) {
        if let Some(peer) = self.peers.get(&msg.to) {
            // Best effort: Raft recovers from lost messages.
            let _ = peer.notify(&ServerRequest::Raft(msg));
        }
    }
}

struct KvService {
    id: NodeId,
    node: NodeHandle<Applied>,
    state: SharedState,
    request_timeout: Duration,
}

impl KvService {
    async fn execute(&self, cmd: Command) -> KvResponse {
        let work = async {
            if cmd.op.is_read() {
                self.node.read_index().await.map(|_| {
                    // The driver resolves a read only once it applied its index.
                    OpResult::Value(self.state.read().get(cmd.op.key()).cloned())
                })
            } else {
                match self.node.propose(cmd.encode()).await {
                    Ok(Applied::Executed(r) | Applied::Duplicate(r)) => Ok(r),
                    // The client already moved past this request; nobody
                    // waits for the answer, but say "retry" to be safe.
                    Ok(Applied::Stale) => Err(ProposeError::Stopped),
                    Err(e) => Err(e),
                }
            }
        };
        match tokio::time::timeout(self.request_timeout, work).await {
            Ok(Ok(result)) => KvResponse::Ok(result),
            Ok(Err(ProposeError::NotLeader { hint })) => {
                KvResponse::WrongLeader { leader: hint, me: self.id }
            }
            Ok(Err(_)) | Err(_) => KvResponse::Retry,
        }
    }

    fn status(&self) -> ServerStatus {
        let s = self.node.status();
        ServerStatus {
            id: self.id,
            leader: s.leader,
            is_leader: s.role == Role::Leader,
            term: s.term,
            commit: s.commit,
            applied: s.applied,
            snapshot_index: s.snapshot_index,
            keys: self.state.read().len() as u64,
        }
    }

    fn deliver(&self, msg: Message) {
        if msg.to != self.id {
            tracing::warn!(id = self.id, to = msg.to, "Raft message for another node; dropped");
            return;
        }
        self.node.deliver(msg);
    }
}

impl Service for KvService {
    type Request = ServerRequest;
    type Response = ServerResponse;

    async fn call(&self, req: ServerRequest) -> ServerResponse {
        match req {
            ServerRequest::Kv(KvRequest::Execute(cmd)) => ServerResponse::Kv(self.execute(cmd).await),
            ServerRequest::Status => ServerResponse::Status(self.status()),
            ServerRequest::Raft(msg) => {
                self.deliver(msg);
                ServerResponse::Ack
            }
        }
    }

    async fn notify(&self, req: ServerRequest) {
        if let ServerRequest::Raft(msg) = req {
            self.deliver(msg);
        }
    }
}

/// A running key/value server.
#[derive(Debug)]
pub struct KvServer {
    node: NodeHandle<Applied>,
    rpc: Server,
}

impl KvServer {
    /// Recovers the node from `cfg.data` and starts serving. Must run
    /// inside a multi-thread tokio runtime (the driver fsyncs off the
    /// runtime's worker threads).
    pub async fn start(cfg: ServerConfig) -> Result<KvServer, ServerError> {
        if !cfg.peers.contains_key(&cfg.id) {
            return Err(ServerError::NotAMember(cfg.id));
        }
        let dir =
            OsDir::open(&cfg.data).map_err(|source| ServerError::Data { path: cfg.data.clone(), source })?;
        let peer_opts = ClientOptions { retries: 0, ..ClientOptions::default() };
        let peers = cfg
            .peers
            .iter()
            .filter(|(&id, _)| id != cfg.id)
            .map(|(&id, addr)| (id, Client::new(addr, peer_opts.clone())))
            .collect();
        let mut raft = Config::new(cfg.id, cfg.peers.keys().copied().collect());
        raft.election_ticks = cfg.election_ticks;
        raft.heartbeat_ticks = cfg.heartbeat_ticks;
        raft.seed = cfg.id ^ std::process::id() as u64 ^ nanos_now();
        let mut driver = DriverConfig::new(raft);
        driver.tick = cfg.tick;
        driver.snapshot_after_log_bytes = cfg.max_raft_state;
        let state = SharedState::default();
        let node = spawn_node(driver, dir, state.clone(), Arc::new(RpcTransport { peers }))?;
        let service = Arc::new(KvService {
            id: cfg.id,
            node: node.clone(),
            state,
            request_timeout: cfg.request_timeout,
        });
        let rpc = Server::bind(cfg.listen, service, ServerOptions::default())
            .await
            .map_err(|source| ServerError::Listen { addr: cfg.listen, source })?;
        tracing::info!(id = cfg.id, addr = %rpc.local_addr(), "key/value server listening");
        Ok(KvServer { node, rpc })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.rpc.local_addr()
    }

    pub fn status(&self) -> shoal_raft::Status {
        self.node.status()
    }

    pub async fn shutdown(self) {
        self.rpc.shutdown().await;
        if let Err(e) = self.node.shutdown().await {
            tracing::error!("node stopped with an error: {e}");
        }
    }
}

fn nanos_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}
