//! A tokio driver for one Raft node: the thin shell of ARCHITECTURE.md rule 2.
//!
//! [`spawn_node`] opens the node's [`FileStore`], restores the service's
//! [`StateMachine`] from the recovered snapshot and spawns one task that owns
//! the [`Raft`] core, the store and the state machine. Everything reaches that
//! task through channels (peer messages through a [`Mailbox`], client commands
//! through a [`NodeHandle`]) and a tokio interval drives `tick()`.
//!
//! Each turn of the task's loop takes *every* input that is queued (up to
//! [`DriverConfig::max_batch`]) before it asks the core for a `Ready`, so
//! proposals that arrive together share one `Ready`: one append to the log,
//! one fsync, one `Append` per follower (group commit, RAFT-11). The `Ready`
//! is carried out in the order the contract in [`crate::raft`] demands:
//! replication messages first (the leader writes its log in parallel with
//! its followers), then persist, then the messages that reveal persisted
//! state, then apply, then `advance()`.
//!
//! A proposal resolves when the entry at its index is applied: with the state
//! machine's output if it is the proposal's own entry (same term), with
//! [`ProposeError::Overwritten`] if another leader's entry took its place.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use shoal_wal::Dir;
use tokio::runtime::RuntimeFlavor;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use crate::message::{Entry, EntryKind, Index, Message, NodeId, Snapshot, Term};
use crate::raft::{Config, NotLeader, Raft, Ready, Role};
use crate::store::{FileStore, StoreError};

/// The replicated service: applies committed commands in log order.
pub trait StateMachine: Send + 'static {
    /// What a proposer gets back once its command is applied.
    type Output: Send + 'static;
    /// Applies the command committed at `index`. Must be deterministic.
    fn apply(&mut self, index: Index, data: &Bytes) -> Self::Output;
    /// The whole state as of the last applied index.
    fn snapshot(&self) -> Bytes;
    /// Replaces the whole state with a snapshot's (taken by `snapshot` here
    /// or on another node, as of `snapshot.meta.index`).
    fn restore(&mut self, snapshot: &Snapshot);
}

/// Carries messages to other nodes. Delivery may fail silently: Raft
/// tolerates lost messages.
pub trait Transport: Send + Sync + 'static {
    fn send(&self, msg: Message);
    /// Sends a batch; override when a batch is cheaper than its messages.
    fn send_all(&self, msgs: Vec<Message>) {
        for m in msgs {
            self.send(m);
        }
    }
}

#[derive(Clone, Debug)]
pub struct DriverConfig {
    pub raft: Config,
    /// Real time per Raft tick.
    pub tick: Duration,
    /// Take a snapshot (and compact the log) once this many entries were
    /// applied since the last one. `None`: never.
    pub snapshot_after_entries: Option<u64>,
    /// Take a snapshot once the in-memory log holds this many bytes
    /// (`--max-raft-state`, KV-3). `None`: never.
    pub snapshot_after_log_bytes: Option<usize>,
    /// Compact the log only to a snapshot at least this many entries behind
    /// the applied index (etcd's "catch-up entries"): a follower that lags by
    /// less still catches up from the log instead of needing a snapshot.
    /// The snapshot taken meanwhile is held in memory. 0: compact at once.
    pub compaction_lag: u64,
    /// The store's `Dir` blocks (a real disk): on a multi-thread runtime,
    /// persist under `block_in_place` so an fsync does not stall the other
    /// tasks of this worker. Turn off for an in-memory `Dir`.
    pub blocking_io: bool,
    /// At most this many inputs are taken before one `Ready` is processed.
    pub max_batch: usize,
    /// When a turn took at least this many inputs, the next turn first yields
    /// to the runtime, so that more inputs queue up and share its `Ready`:
    /// fewer, bigger batches under load, no added latency when idle.
    pub yield_after: usize,
}

impl DriverConfig {
    pub fn new(raft: Config) -> Self {
        DriverConfig {
            raft,
            tick: Duration::from_millis(10),
            snapshot_after_entries: None,
            snapshot_after_log_bytes: None,
            compaction_lag: 0,
            blocking_io: true,
            max_batch: 16 * 1024,
            yield_after: 2,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    #[error("not the leader (leader hint: {hint:?})")]
    NotLeader { hint: Option<NodeId> },
    #[error("lost leadership: entry {index} of term {term} was overwritten by another leader's")]
    Overwritten { index: Index, term: Term },
    #[error(
        "outcome unknown: entry {index} was covered by a snapshot from the leader before it was applied here"
    )]
    Unknown { index: Index },
    #[error("the node has stopped")]
    Stopped,
}

impl From<NotLeader> for ProposeError {
    fn from(e: NotLeader) -> Self {
        ProposeError::NotLeader { hint: e.leader }
    }
}

/// Why a node's task ended other than by `shutdown`.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("node {id}: {source}")]
    Store { id: NodeId, source: StoreError },
    #[error("node {id} crashed: {message}")]
    Panicked { id: NodeId, message: String },
}

/// A node's externally visible state, republished after every turn of its loop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub id: NodeId,
    pub role: Role,
    pub term: Term,
    pub leader: Option<NodeId>,
    pub commit: Index,
    pub applied: Index,
    pub last_index: Index,
    pub snapshot_index: Index,
    /// Snapshots installed from a leader since this incarnation started.
    pub snapshots_installed: u64,
    /// False once the node's task has ended.
    pub running: bool,
}

impl Status {
    fn of(raft: &Raft, snapshots_installed: u64) -> Status {
        Status {
            id: raft.id(),
            role: raft.role(),
            term: raft.term(),
            leader: raft.leader(),
            commit: raft.commit_index(),
            applied: raft.applied_index(),
            last_index: raft.log().last_index(),
            snapshot_index: raft.log().snapshot_meta().index,
            snapshots_installed,
            running: true,
        }
    }
}

/// Where a node's peer messages go in: cheap to clone, never blocks.
#[derive(Clone, Debug)]
pub struct Mailbox(mpsc::UnboundedSender<Message>);

impl Mailbox {
    /// Queues `msg` for the node; dropped silently if the node has stopped.
    pub fn deliver(&self, msg: Message) {
        let _ = self.0.send(msg);
    }
}

/// In-process transport: routes each message to the mailbox registered for
/// its destination. Messages to unknown or stopped nodes are dropped.
#[derive(Debug, Default)]
pub struct ChannelRouter {
    mailboxes: RwLock<HashMap<NodeId, Mailbox>>,
}

impl ChannelRouter {
    pub fn new() -> Arc<ChannelRouter> {
        Arc::new(ChannelRouter::default())
    }

    /// Routes messages for `id` to `mailbox`, replacing an earlier
    /// incarnation's.
    pub fn register(&self, id: NodeId, mailbox: Mailbox) {
        self.write().insert(id, mailbox);
    }

    pub fn unregister(&self, id: NodeId) {
        self.write().remove(&id);
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<NodeId, Mailbox>> {
        // A panic while holding the lock cannot leave the map half-updated.
        self.mailboxes.write().unwrap_or_else(|e| e.into_inner())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<NodeId, Mailbox>> {
        self.mailboxes.read().unwrap_or_else(|e| e.into_inner())
    }
}

impl Transport for ChannelRouter {
    fn send(&self, msg: Message) {
        if let Some(mb) = self.read().get(&msg.to) {
            mb.deliver(msg);
        }
    }

    fn send_all(&self, msgs: Vec<Message>) {
        let map = self.read();
        for msg in msgs {
            if let Some(mb) = map.get(&msg.to) {
                mb.deliver(msg);
            }
        }
    }
}

type Reply<T> = oneshot::Sender<Result<T, ProposeError>>;

enum Command<O> {
    Propose { data: Bytes, reply: Reply<O> },
    ReadIndex { reply: Reply<Index> },
    Shutdown,
}

/// A client's view of a running node. Clones share the node.
#[derive(Debug)]
pub struct NodeHandle<O> {
    id: NodeId,
    commands: mpsc::UnboundedSender<Command<O>>,
    mailbox: Mailbox,
    status: watch::Receiver<Status>,
    task: TaskSlot,
}

/// The node's task, taken by the first `shutdown`.
type TaskSlot = Arc<Mutex<Option<JoinHandle<Result<(), StoreError>>>>>;

impl<O> Clone for NodeHandle<O> {
    fn clone(&self) -> Self {
        NodeHandle {
            id: self.id,
            commands: self.commands.clone(),
            mailbox: self.mailbox.clone(),
            status: self.status.clone(),
            task: self.task.clone(),
        }
    }
}

impl<O> std::fmt::Debug for Command<O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Propose { data, .. } => write!(f, "Propose({} bytes)", data.len()),
            Command::ReadIndex { .. } => f.write_str("ReadIndex"),
            Command::Shutdown => f.write_str("Shutdown"),
        }
    }
}

impl<O: Send + 'static> NodeHandle<O> {
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Replicates `data` and resolves with the state machine's output once
    /// this node applied it. Only the leader accepts proposals.
    pub async fn propose(&self, data: Bytes) -> Result<O, ProposeError> {
        let (reply, rx) = oneshot::channel();
        self.commands.send(Command::Propose { data, reply }).map_err(|_| ProposeError::Stopped)?;
        rx.await.unwrap_or(Err(ProposeError::Stopped))
    }

    /// A linearizable read point (ReadIndex, RAFT-9): resolves with an index
    /// once a majority confirmed this node's leadership and this node has
    /// applied through that index. A read of the local state machine is then
    /// linearizable.
    pub async fn read_index(&self) -> Result<Index, ProposeError> {
        let (reply, rx) = oneshot::channel();
        self.commands.send(Command::ReadIndex { reply }).map_err(|_| ProposeError::Stopped)?;
        rx.await.unwrap_or(Err(ProposeError::Stopped))
    }

    /// Hands the node a message from a peer.
    pub fn deliver(&self, msg: Message) {
        self.mailbox.deliver(msg);
    }

    /// The sender to register with a transport for this node.
    pub fn mailbox(&self) -> Mailbox {
        self.mailbox.clone()
    }

    /// The state published after the node's latest turn.
    pub fn status(&self) -> Status {
        self.status.borrow().clone()
    }

    /// Follows the node's status as it changes.
    pub fn watch(&self) -> watch::Receiver<Status> {
        self.status.clone()
    }

    /// Stops the node's task (for the caller, a crash: nothing is flushed
    /// that was not already durable) and waits for it to end. Reports how
    /// the task ended if it had failed on its own.
    pub async fn shutdown(self) -> Result<(), NodeError> {
        let _ = self.commands.send(Command::Shutdown);
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner()).take();
        let Some(task) = task else { return Ok(()) };
        match task.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(source)) => Err(NodeError::Store { id: self.id, source }),
            Err(e) => {
                let message = if e.is_panic() {
                    let p = e.into_panic();
                    p.downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_else(|| "panic".to_string())
                } else {
                    e.to_string()
                };
                Err(NodeError::Panicked { id: self.id, message })
            }
        }
    }
}

/// Starts a node on the current tokio runtime from whatever `dir` holds:
/// the state machine is restored from the store's snapshot, and the log after
/// it is re-applied as the node learns the commit index. Register the
/// handle's [`mailbox`](NodeHandle::mailbox) with the transport that feeds
/// this node. Panics outside a tokio runtime.
pub fn spawn_node<SM, D>(
    cfg: DriverConfig,
    dir: D,
    mut sm: SM,
    transport: Arc<dyn Transport>,
) -> Result<NodeHandle<SM::Output>, StoreError>
where
    SM: StateMachine,
    D: Dir,
{
    let (store, recovered) = FileStore::open(dir)?;
    if let Some(s) = &recovered.snapshot {
        sm.restore(s);
    }
    let id = cfg.raft.id;
    let raft = Raft::new(cfg.raft.clone(), recovered);
    let (status_tx, status_rx) = watch::channel(Status::of(&raft, 0));
    let (peer_tx, peer_rx) = mpsc::unbounded_channel();
    let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
    let block_in_place =
        cfg.blocking_io && tokio::runtime::Handle::current().runtime_flavor() == RuntimeFlavor::MultiThread;
    let node = Node {
        raft,
        store,
        sm,
        transport,
        cfg,
        block_in_place,
        pending: VecDeque::new(),
        reads: HashMap::new(),
        next_read_ctx: 0,
        confirmed_reads: Vec::new(),
        snapshots_installed: 0,
        held_snapshot: None,
        last_snapshot: 0,
        status: status_tx,
    };
    let span = tracing::info_span!("raft", node = id);
    let task = tokio::spawn(tracing::Instrument::instrument(node.run(peer_rx, cmd_rx), span));
    Ok(NodeHandle {
        id,
        commands: cmd_tx,
        mailbox: Mailbox(peer_tx),
        status: status_rx,
        task: Arc::new(Mutex::new(Some(task))),
    })
}

/// A proposal waiting for its index to be applied.
struct Pending<O> {
    index: Index,
    term: Term,
    reply: Reply<O>,
}

struct Node<SM: StateMachine, D: Dir> {
    raft: Raft,
    store: FileStore<D>,
    sm: SM,
    transport: Arc<dyn Transport>,
    cfg: DriverConfig,
    block_in_place: bool,
    /// Sorted by index (ties in arrival order).
    pending: VecDeque<Pending<SM::Output>>,
    /// Reads waiting for the leader to confirm its leadership, by ctx.
    reads: HashMap<u64, Reply<Index>>,
    next_read_ctx: u64,
    /// Confirmed reads waiting for their index to be applied.
    confirmed_reads: Vec<(Index, Reply<Index>)>,
    snapshots_installed: u64,
    /// A snapshot of the state machine at an index, waiting for
    /// `compaction_lag` more entries to be applied before it replaces the log.
    held_snapshot: Option<(Index, Bytes)>,
    /// Index of the latest snapshot taken (held or compacted).
    last_snapshot: Index,
    status: watch::Sender<Status>,
}

impl<SM: StateMachine, D: Dir> Node<SM, D> {
    async fn run(
        mut self,
        mut peers: mpsc::UnboundedReceiver<Message>,
        mut commands: mpsc::UnboundedReceiver<Command<SM::Output>>,
    ) -> Result<(), StoreError> {
        let mut ticker = tokio::time::interval(self.cfg.tick);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        ticker.tick().await; // the first tick completes at once
        let mut busy = false;
        let result = loop {
            let mut stop = false;
            tokio::select! {
                Some(m) = peers.recv() => self.raft.step(m),
                cmd = commands.recv() => match cmd {
                    Some(cmd) => stop |= self.command(cmd),
                    None => stop = true, // every handle is gone
                },
                _ = ticker.tick() => self.raft.tick(),
            }
            if busy {
                // Inputs came in bunches last turn: let their other producers
                // (clients and peers on this or other workers) run first, so
                // that this turn takes a bigger batch.
                YieldOnce(false).await;
            }
            // Group commit: take everything that is already queued.
            let mut taken = 1;
            while taken < self.cfg.max_batch {
                match peers.try_recv() {
                    Ok(m) => self.raft.step(m),
                    Err(_) => break,
                }
                taken += 1;
            }
            while !stop && taken < self.cfg.max_batch {
                match commands.try_recv() {
                    Ok(cmd) => stop |= self.command(cmd),
                    Err(_) => break,
                }
                taken += 1;
            }
            if stop {
                break Ok(());
            }
            busy = taken >= self.cfg.yield_after;
            if let Err(e) = self.process() {
                tracing::error!(error = %e, "persisting failed; stopping the node");
                break Err(e);
            }
            self.publish();
        };
        self.status.send_modify(|s| s.running = false);
        result
    }

    /// Returns true for shutdown.
    fn command(&mut self, cmd: Command<SM::Output>) -> bool {
        match cmd {
            Command::Propose { data, reply } => match self.raft.propose(data) {
                Ok((index, term)) => self.add_pending(Pending { index, term, reply }),
                Err(e) => {
                    let _ = reply.send(Err(e.into()));
                }
            },
            Command::ReadIndex { reply } => {
                let ctx = self.next_read_ctx;
                self.next_read_ctx += 1;
                match self.raft.read_index(ctx) {
                    Ok(()) => {
                        self.reads.insert(ctx, reply);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e.into()));
                    }
                }
            }
            Command::Shutdown => return true,
        }
        false
    }

    fn add_pending(&mut self, p: Pending<SM::Output>) {
        match self.pending.back() {
            Some(last) if last.index >= p.index => {
                // A re-elected leader proposing below an older, still
                // unresolved proposal: keep the queue sorted.
                let at = self.pending.partition_point(|q| q.index <= p.index);
                self.pending.insert(at, p);
            }
            _ => self.pending.push_back(p),
        }
    }

    /// Carries out every `Ready` the core has, per the contract in `raft.rs`.
    fn process(&mut self) -> Result<(), StoreError> {
        while self.raft.has_ready() {
            let mut rd = self.raft.ready();
            if !rd.messages.is_empty() {
                self.transport.send_all(std::mem::take(&mut rd.messages));
            }
            // Committed entries are already durable here and on a majority:
            // apply them (and answer their proposers) while this Ready's new
            // entries are still to be fsynced, not after.
            if let Some(s) = rd.apply_snapshot.take() {
                self.install(&s);
            }
            for e in std::mem::take(&mut rd.committed) {
                self.apply(e);
            }
            if rd.hard_state.is_some() || rd.snapshot.is_some() || !rd.entries.is_empty() {
                self.persist(&rd)?;
            }
            if !rd.persisted_messages.is_empty() {
                self.transport.send_all(std::mem::take(&mut rd.persisted_messages));
            }
            let applied = self.raft.applied_index();
            for rs in rd.read_states.drain(..) {
                if let Some(reply) = self.reads.remove(&rs.ctx) {
                    if rs.index <= applied {
                        let _ = reply.send(Ok(rs.index));
                    } else {
                        self.confirmed_reads.push((rs.index, reply));
                    }
                }
            }
            self.raft.advance();
            self.maybe_compact();
        }
        let applied = self.raft.applied_index();
        if !self.confirmed_reads.is_empty() {
            for (index, reply) in std::mem::take(&mut self.confirmed_reads) {
                if index <= applied {
                    let _ = reply.send(Ok(index));
                } else {
                    self.confirmed_reads.push((index, reply));
                }
            }
        }
        if !self.reads.is_empty() && !self.raft.is_leader() {
            // The core forgets unconfirmed reads when it steps down.
            let hint = self.raft.leader();
            for (_, reply) in self.reads.drain() {
                let _ = reply.send(Err(ProposeError::NotLeader { hint }));
            }
        }
        Ok(())
    }

    fn persist(&mut self, rd: &Ready) -> Result<(), StoreError> {
        if self.block_in_place {
            let store = &mut self.store;
            tokio::task::block_in_place(|| store.persist(rd))
        } else {
            self.store.persist(rd)
        }
    }

    /// A snapshot from the leader replaces the service's state.
    fn install(&mut self, s: &Snapshot) {
        tracing::info!(index = s.meta.index, term = s.meta.term, "installing snapshot from the leader");
        self.sm.restore(s);
        self.snapshots_installed += 1;
        // A held snapshot is older than this one.
        self.held_snapshot = None;
        // Proposals it covers may or may not be in it: we cannot tell.
        while self.pending.front().is_some_and(|p| p.index <= s.meta.index) {
            if let Some(p) = self.pending.pop_front() {
                let _ = p.reply.send(Err(ProposeError::Unknown { index: p.index }));
            }
        }
    }

    fn apply(&mut self, e: Entry) {
        let mut output = match e.kind {
            EntryKind::Normal => Some(self.sm.apply(e.index, &e.data)),
            EntryKind::Noop => None,
        };
        while let Some(p) = self.pending.front() {
            if p.index > e.index {
                break;
            }
            let Some(p) = self.pending.pop_front() else { break };
            let result = if p.index < e.index {
                Err(ProposeError::Unknown { index: p.index })
            } else if p.term == e.term {
                output.take().ok_or(ProposeError::Overwritten { index: p.index, term: p.term })
            } else {
                Err(ProposeError::Overwritten { index: p.index, term: p.term })
            };
            let _ = p.reply.send(result);
        }
    }

    fn maybe_compact(&mut self) {
        let applied = self.raft.applied_index();
        let base = self.raft.log().snapshot_meta().index.max(self.last_snapshot);
        let by_entries = self.cfg.snapshot_after_entries.is_some_and(|every| applied >= base + every.max(1));
        let by_bytes = self.cfg.snapshot_after_log_bytes.is_some_and(|max| self.raft.log_bytes() >= max);
        if self.held_snapshot.is_none() && applied > base && (by_entries || by_bytes) {
            let data = self.sm.snapshot();
            tracing::debug!(index = applied, bytes = data.len(), "took a snapshot");
            self.held_snapshot = Some((applied, data));
            self.last_snapshot = applied;
        }
        if let Some((index, _)) = &self.held_snapshot {
            if applied >= index + self.cfg.compaction_lag {
                if let Some((index, data)) = self.held_snapshot.take() {
                    self.raft.compact(index, data);
                }
            }
        }
    }

    fn publish(&mut self) {
        let now = Status::of(&self.raft, self.snapshots_installed);
        self.status.send_if_modified(|s| {
            if *s == now {
                false
            } else {
                *s = now;
                true
            }
        });
    }
}

/// Goes to the back of the worker's run queue once, so that the tasks queued
/// there (clients, peers) run first. `tokio::task::yield_now` instead holds
/// the waker until the worker next polls its drivers, which in the benchmark
/// made turns later and throughput lower.
struct YieldOnce(bool);

impl std::future::Future for YieldOnce {
    type Output = ();

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        if self.0 {
            return std::task::Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    }
}
