//! A simulated Raft cluster: the 6.824 tester's `config.go`, in virtual time.
//!
//! The cluster owns one seeded RNG, an event queue (ticks and message
//! deliveries), a faulty network, and per node a `Raft` core over a
//! `FileStore` on a crashable `MemDir`. Scenario code drives it like the 6.824
//! tester does (`one`, `check_one_leader`, `crash`, `disconnect`, ...), and
//! after every event the cluster checks Raft's safety properties:
//! election safety, log matching, leader completeness and state machine
//! safety. Any violation panics, and `run_seeds` prints the seed to replay.

#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;

use bytes::Bytes;
use shoal_raft::{Body, Config, FileStore, Index, Message, NodeId, Raft, Ready, Role, SafetyChecker, Term};
use shoal_sim::{EventQueue, Fate, Nanos, NetConfig, Network, Rng, MILLI, SECOND};
use shoal_wal::{CrashMode, MemDir};

/// Virtual time per Raft tick.
pub const TICK: Nanos = 10 * MILLI;
/// 300..600 ms election timeouts, 100 ms heartbeats: at most 10 heartbeats a
/// second, as the 6.824 tester demands.
pub const ELECTION_TICKS: u32 = 30;
pub const HEARTBEAT_TICKS: u32 = 10;
/// The 6.824 tester's RaftElectionTimeout.
pub const ELECTION_TIMEOUT: Nanos = SECOND;

#[derive(Debug)]
enum Event {
    Tick { node: usize, incarnation: u64 },
    Deliver { msg: Message, incarnation: u64 },
}

/// The test's replicated state machine: the list of applied commands, which
/// is also what its snapshots contain (as in 6.824's lab 2D tester).
#[derive(Debug, Default, Clone)]
struct Service {
    applied: BTreeMap<Index, Bytes>,
    last_applied: Index,
}

#[derive(Debug)]
struct Node {
    raft: Option<Raft>,
    store: Option<FileStore<MemDir>>,
    disk: MemDir,
    incarnation: u64,
    service: Service,
}

pub struct Cluster {
    pub seed: u64,
    pub rng: Rng,
    queue: EventQueue<Event>,
    pub net: Network,
    nodes: Vec<Node>,
    /// Snapshot every this many applied entries (6.824 2D uses 10).
    pub snapshot_interval: Option<u64>,
    /// Crashes tear unsynced writes instead of losing them cleanly.
    pub torn_crashes: bool,
    pub pre_vote: bool,
    pub check_quorum: bool,
    pub snapshot_chunk_bytes: usize,
    pub max_inflight: usize,
    pub max_append_bytes: usize,
    /// Raft's safety properties, checked after every event.
    safety: SafetyChecker,
    // Accounting, as labrpc counts it.
    rpc_count: u64,
    rpc_bytes: u64,
    count_bytes: bool,
}

impl Cluster {
    pub fn new(n: usize, seed: u64) -> Self {
        Self::with_net(n, seed, NetConfig::reliable())
    }

    pub fn with_net(n: usize, seed: u64, net: NetConfig) -> Self {
        let mut c = Cluster {
            seed,
            rng: Rng::new(seed),
            queue: EventQueue::new(),
            net: Network::new(n, net),
            nodes: Vec::new(),
            snapshot_interval: None,
            torn_crashes: false,
            pre_vote: true,
            check_quorum: true,
            snapshot_chunk_bytes: 1024,
            max_inflight: 64,
            max_append_bytes: 64 * 1024,
            safety: SafetyChecker::new(format!("seed {seed}")),
            rpc_count: 0,
            rpc_bytes: 0,
            count_bytes: false,
        };
        match c.rng.below(3) {
            0 => c.max_append_bytes = 1,
            1 => c.max_inflight = 1,
            _ => {}
        }
        for _ in 0..n {
            c.nodes.push(Node {
                raft: None,
                store: None,
                disk: MemDir::new(),
                incarnation: 0,
                service: Service::default(),
            });
        }
        c
    }

    /// The default flow control, for tests that count messages.
    pub fn default_flow_control(&mut self) {
        self.max_inflight = 64;
        self.max_append_bytes = 64 * 1024;
    }

    /// Starts every node. Call after setting options.
    pub fn start_all(&mut self) {
        for i in 0..self.n() {
            self.start(i);
        }
    }

    pub fn n(&self) -> usize {
        self.nodes.len()
    }

    pub fn now(&self) -> Nanos {
        self.queue.now()
    }

    fn id(i: usize) -> NodeId {
        i as NodeId + 1
    }

    // ----- node lifecycle --------------------------------------------------

    /// Boots node `i` from whatever its disk holds (6.824's `start1`).
    pub fn start(&mut self, i: usize) {
        assert!(self.nodes[i].raft.is_none(), "node {i} already running");
        let (store, recovered) = FileStore::open(self.nodes[i].disk.clone())
            .unwrap_or_else(|e| panic!("seed {}: node {i} cannot recover: {e}", self.seed));
        let mut service = Service::default();
        if let Some(s) = &recovered.snapshot {
            service = decode_service(&s.data);
            assert_eq!(service.last_applied, s.meta.index);
            for (index, data) in &service.applied {
                self.safety.on_applied_data(Self::id(i), *index, data);
            }
        }
        let mut cfg = Config::new(Self::id(i), (1..=self.n() as NodeId).collect());
        cfg.election_ticks = ELECTION_TICKS;
        cfg.heartbeat_ticks = HEARTBEAT_TICKS;
        cfg.pre_vote = self.pre_vote;
        cfg.check_quorum = self.check_quorum;
        cfg.snapshot_chunk_bytes = self.snapshot_chunk_bytes;
        // Vary the flow control per seed: one-entry Appends and a window of
        // one expose partial replication (the Figure 8 corner) far more often.
        cfg.max_inflight = self.max_inflight;
        cfg.max_append_bytes = self.max_append_bytes;
        cfg.seed = self.rng.next_u64();
        let node = &mut self.nodes[i];
        node.raft = Some(Raft::new(cfg, recovered));
        node.store = Some(store);
        node.service = service;
        node.incarnation += 1;
        let incarnation = node.incarnation;
        // A random phase, so nodes do not tick in lockstep.
        let phase = self.rng.below(TICK);
        self.queue.schedule_in(phase, Event::Tick { node: i, incarnation });
    }

    /// Kills node `i` (6.824's crash1): its in-memory state is gone, unsynced
    /// writes vanish (or tear, with `torn_crashes`), and it is disconnected;
    /// `start` then `connect` bring it back.
    pub fn crash(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        if node.raft.is_none() {
            return;
        }
        node.raft = None;
        node.store = None;
        node.incarnation += 1;
        let mode = if self.torn_crashes { CrashMode::Torn } else { CrashMode::LoseUnsynced };
        node.disk.crash(self.rng.next_u64(), mode);
        self.net.disconnect(i);
    }

    /// A reboot that keeps the node's network connectivity as it was.
    pub fn restart(&mut self, i: usize) {
        let connected = self.is_connected(i);
        self.crash(i);
        self.start(i);
        if connected {
            self.connect(i);
        }
    }

    pub fn is_up(&self, i: usize) -> bool {
        self.nodes[i].raft.is_some()
    }

    pub fn disconnect(&mut self, i: usize) {
        self.net.disconnect(i);
    }

    pub fn connect(&mut self, i: usize) {
        self.net.connect(i);
    }

    pub fn is_connected(&self, i: usize) -> bool {
        self.net.is_connected(i)
    }

    pub fn set_unreliable(&mut self, unreliable: bool) {
        let long = self.net.config().long_reordering;
        let mut cfg = if unreliable { NetConfig::unreliable() } else { NetConfig::reliable() };
        cfg.long_reordering = long;
        self.net.set_config(cfg);
    }

    pub fn set_long_reordering(&mut self, on: bool) {
        let mut cfg = self.net.config().clone();
        cfg.long_reordering = on;
        self.net.set_config(cfg);
    }

    pub fn raft(&self, i: usize) -> Option<&Raft> {
        self.nodes[i].raft.as_ref()
    }

    pub fn disk(&self, i: usize) -> &MemDir {
        &self.nodes[i].disk
    }

    // ----- running time ----------------------------------------------------

    /// Processes events for `d` of virtual time.
    pub fn run_for(&mut self, d: Nanos) {
        let until = self.now() + d;
        while self.queue.peek_time().is_some_and(|t| t <= until) {
            let (_, event) = self.queue.pop().expect("peeked");
            self.handle(event);
        }
        // Move the clock to `until` even if nothing happened.
        if self.now() < until {
            self.queue.schedule(until, Event::Tick { node: usize::MAX, incarnation: 0 });
            self.queue.pop();
        }
    }

    /// Runs until `cond` holds, checking every `step`, for at most `limit`.
    pub fn run_until(&mut self, limit: Nanos, step: Nanos, mut cond: impl FnMut(&Cluster) -> bool) -> bool {
        let deadline = self.now() + limit;
        loop {
            if cond(self) {
                return true;
            }
            if self.now() >= deadline {
                return false;
            }
            self.run_for(step);
        }
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Tick { node, incarnation } => {
                if node == usize::MAX || self.nodes[node].incarnation != incarnation {
                    return;
                }
                let Some(raft) = self.nodes[node].raft.as_mut() else { return };
                raft.tick();
                self.queue.schedule_in(TICK, Event::Tick { node, incarnation });
                self.process(node);
            }
            Event::Deliver { msg, incarnation } => {
                let to = (msg.to - 1) as usize;
                let from = (msg.from - 1) as usize;
                if !self.net.arrive(from, to) || self.nodes[to].incarnation != incarnation {
                    return;
                }
                let Some(raft) = self.nodes[to].raft.as_mut() else { return };
                raft.step(msg);
                self.process(to);
            }
        }
    }

    /// Carries out every `Ready` of node `i`, as a driver would, then checks
    /// the safety properties.
    fn process(&mut self, i: usize) {
        let was_leader = self.nodes[i].raft.as_ref().is_some_and(Raft::is_leader);
        loop {
            let node = &mut self.nodes[i];
            let raft = node.raft.as_mut().expect("processing a live node");
            if !raft.has_ready() {
                break;
            }
            let rd = raft.ready();
            self.safety.on_ready(raft, &rd);
            let Ready { messages, persisted_messages, .. } = &rd;
            for m in messages.clone() {
                self.send(m);
            }
            let node = &mut self.nodes[i];
            node.store
                .as_mut()
                .expect("store of a live node")
                .persist(&rd)
                .unwrap_or_else(|e| panic!("persist failed: {e}"));
            for m in persisted_messages.clone() {
                self.send(m);
            }
            self.apply(i, &rd);
            let node = &mut self.nodes[i];
            let raft = node.raft.as_mut().expect("live");
            raft.advance();
            if let Some(every) = self.snapshot_interval {
                let applied = node.service.last_applied;
                if applied >= raft.log().snapshot_meta().index + every {
                    raft.compact(applied, encode_service(&node.service));
                }
            }
        }
        if let Some(raft) = self.nodes[i].raft.as_ref() {
            self.safety.after_event(raft, was_leader);
        }
    }

    fn send(&mut self, m: Message) {
        if std::env::var_os("SHOAL_TRACE").is_some() {
            eprintln!("{} ms: {:?}", self.now() / MILLI, m);
        }
        let from = (m.from - 1) as usize;
        let to = (m.to - 1) as usize;
        let reply = m.body.is_response();
        if !reply {
            self.rpc_count += 1;
            if self.count_bytes {
                self.rpc_bytes += postcard::to_allocvec(&m).map(|v| v.len() as u64).unwrap_or(0);
            }
        }
        if let Fate::Deliver { after } = self.net.send(&mut self.rng, from, to, reply) {
            let incarnation = self.nodes[to].incarnation;
            self.queue.schedule_in(after, Event::Deliver { msg: m, incarnation });
        }
    }

    fn apply(&mut self, i: usize, rd: &Ready) {
        if let Some(s) = &rd.apply_snapshot {
            let service = decode_service(&s.data);
            assert_eq!(service.last_applied, s.meta.index, "seed {}: snapshot content", self.seed);
            for (index, data) in &service.applied {
                self.safety.on_applied_data(Self::id(i), *index, data);
            }
            self.nodes[i].service = service;
        }
        for e in &rd.committed {
            let svc = &mut self.nodes[i].service;
            assert_eq!(
                e.index,
                svc.last_applied + 1,
                "seed {}: node {i} applied {} after {} (out of order)",
                self.seed,
                e.index,
                svc.last_applied
            );
            svc.last_applied = e.index;
            svc.applied.insert(e.index, e.data.clone());
            self.safety.on_apply(Self::id(i), e);
        }
    }

    // ----- the 6.824 tester's API ------------------------------------------

    /// Exactly one leader among connected nodes (after up to 10 rounds of
    /// ~500 ms), and at most one per term.
    pub fn check_one_leader(&mut self) -> usize {
        for _ in 0..10 {
            let ms = 450 + self.rng.below(100);
            self.run_for(ms * MILLI);
            let mut leaders: BTreeMap<Term, Vec<usize>> = BTreeMap::new();
            for i in 0..self.n() {
                if let Some(r) = self.raft(i) {
                    if self.is_connected(i) && r.is_leader() {
                        leaders.entry(r.term()).or_default().push(i);
                    }
                }
            }
            for (term, ls) in &leaders {
                assert!(ls.len() <= 1, "seed {}: term {term} has {} (>1) leaders", self.seed, ls.len());
            }
            if let Some((_, ls)) = leaders.iter().next_back() {
                return ls[0];
            }
        }
        panic!("seed {}: expected one leader, got none", self.seed);
    }

    /// All connected nodes agree on the term; returns it.
    pub fn check_terms(&self) -> Term {
        let mut term = None;
        for i in 0..self.n() {
            if let Some(r) = self.raft(i) {
                if self.is_connected(i) {
                    match term {
                        None => term = Some(r.term()),
                        Some(t) => assert_eq!(t, r.term(), "seed {}: servers disagree on term", self.seed),
                    }
                }
            }
        }
        term.expect("some connected server")
    }

    pub fn check_no_leader(&self) {
        for i in 0..self.n() {
            if let Some(r) = self.raft(i) {
                assert!(
                    !(self.is_connected(i) && r.is_leader()),
                    "seed {}: expected no leader among connected servers, but {i} claims to be leader",
                    self.seed
                );
            }
        }
    }

    /// How many nodes applied index `index`, and what (6.824's nCommitted).
    pub fn n_committed(&self, index: Index) -> (usize, Option<Bytes>) {
        let mut count = 0;
        let mut cmd = None;
        for node in &self.nodes {
            if let Some(c) = node.service.applied.get(&index) {
                if let Some(prev) = &cmd {
                    assert_eq!(prev, c, "seed {}: committed values do not match at {index}", self.seed);
                }
                count += 1;
                cmd = Some(c.clone());
            }
        }
        (count, cmd)
    }

    /// Proposes on node `i` if it is alive (6.824's `rf.Start`).
    pub fn start_cmd(&mut self, i: usize, cmd: &Bytes) -> Option<(Index, Term)> {
        let raft = self.nodes[i].raft.as_mut()?;
        let r = raft.propose(cmd.clone()).ok();
        if r.is_some() {
            self.process(i);
        }
        r
    }

    /// 6.824's `one`: submit `cmd` through whichever node is leader until
    /// `expected` nodes applied it; fail after 10 s of virtual time.
    pub fn one(&mut self, cmd: &Bytes, expected: usize, retry: bool) -> Index {
        let t0 = self.now();
        let mut starts = 0;
        while self.now() - t0 < 10 * SECOND {
            let mut index = None;
            for _ in 0..self.n() {
                starts = (starts + 1) % self.n();
                if self.is_up(starts) && self.is_connected(starts) {
                    if let Some((i, _)) = self.start_cmd(starts, cmd) {
                        index = Some(i);
                        break;
                    }
                }
            }
            if let Some(index) = index {
                let t1 = self.now();
                while self.now() - t1 < 2 * SECOND {
                    let (nd, c) = self.n_committed(index);
                    if nd > 0 && nd >= expected && c.as_ref() == Some(cmd) {
                        return index;
                    }
                    self.run_for(20 * MILLI);
                }
                assert!(retry, "seed {}: one({cmd:?}) failed to reach agreement", self.seed);
            } else {
                self.run_for(50 * MILLI);
            }
        }
        panic!("seed {}: one({cmd:?}) failed to reach agreement in 10 s\n{}", self.seed, self.describe());
    }

    /// One line per node: what a human needs to see when a scenario fails.
    pub fn describe(&self) -> String {
        let mut out = format!("at {} ms:\n", self.now() / MILLI);
        for i in 0..self.n() {
            let line = match self.raft(i) {
                None => "down".to_string(),
                Some(r) => format!(
                    "{:?} term {} leader {:?} commit {} applied {} log {}..={} snapshot {}",
                    r.role(),
                    r.term(),
                    r.leader(),
                    r.commit_index(),
                    r.applied_index(),
                    r.log().first_index(),
                    r.log().last_index(),
                    r.log().snapshot_meta().index
                ),
            };
            let net = if self.is_connected(i) { "" } else { " (disconnected)" };
            out += &format!("  node {i}: {line}{net}\n");
        }
        out
    }

    /// 6.824's `wait`: until `n` nodes applied `index`; None if the term moved past `start_term`.
    pub fn wait(&mut self, index: Index, n: usize, start_term: Option<Term>) -> Option<Bytes> {
        let mut to = 10 * MILLI;
        for _ in 0..30 {
            let (nd, _) = self.n_committed(index);
            if nd >= n {
                break;
            }
            self.run_for(to);
            if to < SECOND {
                to *= 2;
            }
            if let Some(t) = start_term {
                if (0..self.n()).any(|i| self.raft(i).is_some_and(|r| r.term() > t)) {
                    return None;
                }
            }
        }
        let (nd, cmd) = self.n_committed(index);
        assert!(nd >= n, "seed {}: only {nd} decided for index {index}; wanted {n}", self.seed);
        cmd
    }

    pub fn rpc_total(&self) -> u64 {
        self.rpc_count
    }

    pub fn count_bytes(&mut self, on: bool) {
        self.count_bytes = on;
    }

    pub fn bytes_total(&self) -> u64 {
        self.rpc_bytes
    }

    /// The largest in-memory log among live nodes, in bytes (6.824's LogSize).
    pub fn max_log_bytes(&self) -> usize {
        (0..self.n()).filter_map(|i| self.raft(i)).map(Raft::log_bytes).max().unwrap_or(0)
    }

    pub fn role(&self, i: usize) -> Option<Role> {
        self.raft(i).map(Raft::role)
    }

    pub fn max_term(&self) -> Term {
        self.safety.max_term()
    }

    /// The random command 6.824 tests use.
    pub fn rand_cmd(&mut self) -> Bytes {
        Bytes::copy_from_slice(&self.rng.next_u64().to_le_bytes())
    }
}

/// A message body kind, for tests that count traffic by type.
pub fn is_append(b: &Body) -> bool {
    matches!(b, Body::Append { .. })
}

fn encode_service(s: &Service) -> Bytes {
    let mut out = Vec::with_capacity(16 + s.applied.len() * 16);
    out.extend_from_slice(&s.last_applied.to_le_bytes());
    for (index, data) in &s.applied {
        out.extend_from_slice(&index.to_le_bytes());
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(data);
    }
    Bytes::from(out)
}

fn decode_service(b: &[u8]) -> Service {
    let mut s =
        Service { last_applied: u64::from_le_bytes(b[..8].try_into().unwrap()), applied: BTreeMap::new() };
    let mut p = 8;
    while p < b.len() {
        let index = u64::from_le_bytes(b[p..p + 8].try_into().unwrap());
        let len = u32::from_le_bytes(b[p + 8..p + 12].try_into().unwrap()) as usize;
        s.applied.insert(index, Bytes::copy_from_slice(&b[p + 12..p + 12 + len]));
        p += 12 + len;
    }
    s
}
