//! A simulated key/value cluster: servers (Raft core + durable store on a
//! crashable disk + the key/value state machine) and clients (the `Clerk`),
//! all talking over one seeded faulty network in virtual time — 6.824's
//! kvraft `config.go`, deterministic. Every client operation is recorded
//! with its call and return times; `check_linearizable` hands the history to
//! the checker. Raft's safety properties are checked after every event.

#![allow(dead_code, clippy::unwrap_used)]

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use bytes::Bytes;
use shoal_kv::{Applied, Clerk, Command, KvResponse, KvState, Op, OpResult};
use shoal_raft::{Config, EntryKind, FileStore, Index, Message, NodeId, Raft, Ready, SafetyChecker, Term};
use shoal_sim::kv_model::{KvInput, KvModel, KvOperation, KvOutput};
use shoal_sim::linearizability::{check, CheckResult};
use shoal_sim::{EventQueue, Fate, Nanos, NetConfig, Network, Rng, MILLI, SECOND};
use shoal_wal::{CrashMode, MemDir};

pub const TICK: Nanos = 10 * MILLI;
pub const ELECTION_TIMEOUT: Nanos = SECOND;
/// How long a client waits for a reply before trying another server.
const CLIENT_TIMEOUT: Nanos = 400 * MILLI;
/// Upper bound of a client's pause between two operations.
const CLIENT_THINK: Nanos = 20 * MILLI;

#[derive(Debug)]
enum Event {
    Tick {
        server: usize,
        incarnation: u64,
    },
    Raft {
        msg: Message,
        incarnation: u64,
    },
    Request {
        server: usize,
        client: usize,
        req: u64,
        cmd: Command,
        incarnation: u64,
    },
    Response {
        client: usize,
        from: usize,
        req: u64,
        resp: KvResponse,
    },
    /// Fires for one send of a request; later sends make it moot.
    ClientTimeout {
        client: usize,
        req: u64,
        attempt: u64,
    },
    ClientStart {
        client: usize,
    },
}

#[derive(Debug)]
struct Server {
    raft: Option<Raft>,
    store: Option<FileStore<MemDir>>,
    disk: MemDir,
    incarnation: u64,
    kv: KvState,
    /// Last log index applied (no-ops included).
    applied: Index,
    /// Writes proposed here, by log index: who waits for them.
    pending: HashMap<Index, (Term, usize, u64)>,
    /// ReadIndex reads: context -> (client, request, key).
    reads: HashMap<u64, (usize, u64, Bytes)>,
    /// Confirmed reads waiting for the state machine to reach their index.
    ready_reads: VecDeque<(Index, usize, u64, Bytes)>,
    next_read_ctx: u64,
}

/// What a client should do next; set by the test.
#[derive(Debug, Clone)]
pub enum Workload {
    /// 6.824's GenericTest client: appends to (or reads) its own key, or a
    /// random key among `keys`, checking its own appends as it goes.
    Generic {
        random_keys: Option<u64>,
    },
    /// Appends to one shared key (6.824's unreliable_one_key).
    OneKey,
    Idle,
}

#[derive(Debug)]
struct Client {
    clerk: Clerk,
    /// Position in the network: servers first, then clients.
    endpoint: usize,
    workload: Workload,
    running: bool,
    in_flight: Option<InFlight>,
    next_req: u64,
    ops_done: u64,
    /// What this client appended to its own key, in order (GenericTest check).
    appended: String,
    last_value_seen: Option<String>,
}

#[derive(Debug)]
struct InFlight {
    req: u64,
    /// Sends so far; a timeout counts only for the latest.
    attempt: u64,
    cmd: Command,
    input: KvInput,
    call: Nanos,
}

pub struct KvCluster {
    pub seed: u64,
    pub rng: Rng,
    queue: EventQueue<Event>,
    pub net: Network,
    servers: Vec<Server>,
    clients: Vec<Client>,
    pub max_raft_state: Option<usize>,
    safety: SafetyChecker,
    history: Vec<KvOperation>,
    /// Messages sent among servers (6.824 counts RPCs for snapshot tests).
    pub raft_messages: u64,
}

impl KvCluster {
    pub fn new(n: usize, seed: u64, unreliable: bool, max_raft_state: Option<usize>) -> Self {
        let net = if unreliable { NetConfig::unreliable() } else { NetConfig::reliable() };
        let mut c = KvCluster {
            seed,
            rng: Rng::new(seed),
            queue: EventQueue::new(),
            net: Network::new(n, net),
            servers: Vec::new(),
            clients: Vec::new(),
            max_raft_state,
            safety: SafetyChecker::new(format!("seed {seed}")),
            history: Vec::new(),
            raft_messages: 0,
        };
        for _ in 0..n {
            c.servers.push(Server {
                raft: None,
                store: None,
                disk: MemDir::new(),
                incarnation: 0,
                kv: KvState::new(),
                applied: 0,
                pending: HashMap::new(),
                reads: HashMap::new(),
                ready_reads: VecDeque::new(),
                next_read_ctx: 0,
            });
        }
        for i in 0..n {
            c.start_server(i);
        }
        c
    }

    pub fn n(&self) -> usize {
        self.servers.len()
    }

    pub fn now(&self) -> Nanos {
        self.queue.now()
    }

    /// Adds a client connected to every server. Returns its index.
    pub fn add_client(&mut self, workload: Workload) -> usize {
        let index = self.clients.len();
        let endpoint = self.n() + index;
        // The network grows by one endpoint: rebuild it keeping the config
        // (clients are added before faults start).
        let cfg = self.net.config().clone();
        self.net = Network::new(endpoint + 1, cfg);
        self.clients.push(Client {
            clerk: Clerk::new(1000 + index as u64, self.n()),
            endpoint,
            workload,
            running: false,
            in_flight: None,
            next_req: 0,
            ops_done: 0,
            appended: String::new(),
            last_value_seen: None,
        });
        index
    }

    // ----- servers ---------------------------------------------------------

    pub fn start_server(&mut self, i: usize) {
        assert!(self.servers[i].raft.is_none());
        let (store, recovered) = FileStore::open(self.servers[i].disk.clone())
            .unwrap_or_else(|e| panic!("seed {}: server {i} cannot recover: {e}", self.seed));
        let mut kv = KvState::new();
        let mut applied = 0;
        if let Some(s) = &recovered.snapshot {
            kv = KvState::restore(&s.data).unwrap();
            applied = s.meta.index;
        }
        let mut cfg = Config::new(i as NodeId + 1, (1..=self.n() as NodeId).collect());
        cfg.election_ticks = 30;
        cfg.heartbeat_ticks = 10;
        cfg.snapshot_chunk_bytes = 4096;
        cfg.seed = self.rng.next_u64();
        let s = &mut self.servers[i];
        s.raft = Some(Raft::new(cfg, recovered));
        s.store = Some(store);
        s.kv = kv;
        s.applied = applied;
        s.pending.clear();
        s.reads.clear();
        s.ready_reads.clear();
        s.incarnation += 1;
        let incarnation = s.incarnation;
        let phase = self.rng.below(TICK);
        self.queue.schedule_in(phase, Event::Tick { server: i, incarnation });
    }

    /// Kills server `i` (unsynced writes lost) and cuts it off; `start_server`
    /// then `connect` bring it back.
    pub fn crash_server(&mut self, i: usize) {
        let s = &mut self.servers[i];
        if s.raft.is_none() {
            return;
        }
        s.raft = None;
        s.store = None;
        s.incarnation += 1;
        s.disk.crash(self.rng.next_u64(), CrashMode::LoseUnsynced);
        self.net.disconnect(i);
    }

    pub fn connect(&mut self, i: usize) {
        self.net.connect(i);
    }

    pub fn disconnect(&mut self, i: usize) {
        self.net.disconnect(i);
    }

    /// Server-to-server partition; clients still reach every server.
    pub fn partition(&mut self, a: &[usize], b: &[usize]) {
        self.net.heal_all();
        for &x in a {
            for &y in b {
                self.net.cut(x, y);
                self.net.cut(y, x);
            }
        }
    }

    /// Limits a client to the given servers (6.824's ConnectClient).
    pub fn connect_client_only(&mut self, client: usize, servers: &[usize]) {
        let e = self.clients[client].endpoint;
        for s in 0..self.n() {
            if servers.contains(&s) {
                self.net.heal(e, s);
                self.net.heal(s, e);
            } else {
                self.net.cut(e, s);
                self.net.cut(s, e);
            }
        }
    }

    pub fn heal(&mut self) {
        self.net.heal_all();
    }

    pub fn set_unreliable(&mut self, on: bool) {
        self.net.set_config(if on { NetConfig::unreliable() } else { NetConfig::reliable() });
    }

    pub fn leader(&self) -> Option<usize> {
        (0..self.n()).find(|&i| self.servers[i].raft.as_ref().is_some_and(Raft::is_leader))
    }

    /// The largest in-memory Raft log among live servers, in bytes.
    pub fn max_log_bytes(&self) -> usize {
        self.servers.iter().filter_map(|s| s.raft.as_ref()).map(Raft::log_bytes).max().unwrap_or(0)
    }

    pub fn max_snapshot_bytes(&self) -> usize {
        self.servers
            .iter()
            .filter_map(|s| s.raft.as_ref())
            .map(|r| r.snapshot().data.len())
            .max()
            .unwrap_or(0)
    }

    pub fn max_snapshot_index(&self) -> Index {
        self.servers
            .iter()
            .filter_map(|s| s.raft.as_ref())
            .map(|r| r.log().snapshot_meta().index)
            .max()
            .unwrap_or(0)
    }

    // ----- clients ---------------------------------------------------------

    pub fn start_clients(&mut self) {
        for c in 0..self.clients.len() {
            if !self.clients[c].running {
                self.clients[c].running = true;
                self.queue.schedule_in(0, Event::ClientStart { client: c });
            }
        }
    }

    /// Stops issuing new operations and waits (bounded) for those in flight.
    /// Operations still unanswered are recorded with an unknown outcome.
    pub fn stop_clients(&mut self, wait: Nanos) {
        for c in &mut self.clients {
            c.running = false;
        }
        self.run_until(wait, |k| k.clients.iter().all(|c| c.in_flight.is_none()));
        for c in 0..self.clients.len() {
            if let Some(f) = self.clients[c].in_flight.take() {
                self.history.push(KvOperation::unknown(c as u64, f.input, f.call));
            }
        }
    }

    pub fn ops_done(&self) -> u64 {
        self.clients.iter().map(|c| c.ops_done).sum()
    }

    pub fn client_ops(&self, c: usize) -> u64 {
        self.clients[c].ops_done
    }

    /// Issues one operation from client `c` (which must be idle), for tests
    /// that script their clients.
    pub fn submit(&mut self, c: usize, op: Op) {
        assert!(self.clients[c].in_flight.is_none(), "client {c} busy");
        self.issue(c, op);
    }

    pub fn client_idle(&self, c: usize) -> bool {
        self.clients[c].in_flight.is_none()
    }

    /// Runs until `c` gets an answer (or `limit` passes); returns whether it did.
    pub fn wait_client(&mut self, c: usize, limit: Nanos) -> bool {
        self.run_until(limit, |k| k.clients[c].in_flight.is_none())
    }

    pub fn last_value(&self, c: usize) -> Option<String> {
        self.clients[c].last_value_seen.clone()
    }

    fn next_op(&mut self, c: usize) -> Option<Op> {
        let client = &self.clients[c];
        let j = client.ops_done;
        let b = |s: String| Bytes::from(s.into_bytes());
        match client.workload.clone() {
            Workload::Idle => None,
            // 6.824's unreliable_one_key: ten appends per client; a read
            // after every other append pins down the order for the checker.
            Workload::OneKey if j >= 20 => None,
            Workload::OneKey if j % 2 == 1 => Some(Op::Get { key: b("k".into()) }),
            Workload::OneKey => {
                Some(Op::Append { key: b("k".into()), value: b(format!("x {c} {} y", j / 2)) })
            }
            Workload::Generic { random_keys } => {
                let key = match random_keys {
                    Some(k) => self.rng.below(k).to_string(),
                    None => c.to_string(),
                };
                let value = format!("x {c} {j} y");
                Some(match self.rng.below(100) {
                    0..=49 => Op::Append { key: b(key), value: b(value) },
                    50..=59 if random_keys.is_some() => Op::Put { key: b(key), value: b(value) },
                    60..=63 if random_keys.is_some() => Op::Delete { key: b(key) },
                    64..=69 if random_keys.is_some() => {
                        // Compare-and-set against the value we last saw.
                        let expected = self.clients[c].last_value_seen.clone().map(b);
                        Op::Cas { key: b(key), expected, new: b(value) }
                    }
                    _ => Op::Get { key: b(key) },
                })
            }
        }
    }

    fn issue(&mut self, c: usize, op: Op) {
        let input = to_input(&op);
        let cmd = self.clients[c].clerk.command(op);
        let client = &mut self.clients[c];
        client.next_req += 1;
        let req = client.next_req;
        client.in_flight = Some(InFlight { req, attempt: 0, cmd, input, call: self.queue.now() });
        self.send_request(c);
    }

    fn send_request(&mut self, c: usize) {
        let client = &mut self.clients[c];
        let endpoint = client.endpoint;
        let f = client.in_flight.as_mut().expect("a request in flight");
        f.attempt += 1;
        let (req, attempt, cmd) = (f.req, f.attempt, f.cmd.clone());
        let client = &self.clients[c];
        let server = client.clerk.target();
        if let Fate::Deliver { after } = self.net.send(&mut self.rng, endpoint, server, false) {
            let incarnation = self.servers[server].incarnation;
            self.queue.schedule_in(after, Event::Request { server, client: c, req, cmd, incarnation });
        }
        self.queue.schedule_in(CLIENT_TIMEOUT, Event::ClientTimeout { client: c, req, attempt });
    }

    fn on_client_response(&mut self, c: usize, from: usize, req: u64, resp: KvResponse) {
        let Some(f) = &self.clients[c].in_flight else { return };
        if f.req != req {
            return; // an answer to an earlier try of an earlier request
        }
        match self.clients[c].clerk.on_response(from, resp) {
            None => self.send_request(c),
            Some(result) => {
                let f = self.clients[c].in_flight.take().expect("checked above");
                let output = to_output(&result);
                self.check_client_view(c, &f.input, &output);
                self.history.push(KvOperation::new(c as u64, f.input, output, f.call, self.queue.now()));
                self.clients[c].ops_done += 1;
                if self.clients[c].running {
                    // A little think time keeps histories to a size the
                    // checker digests quickly; more seeds beat longer runs.
                    let think = self.rng.below(CLIENT_THINK);
                    self.queue.schedule_in(think, Event::ClientStart { client: c });
                }
            }
        }
    }

    /// 6.824's per-client check: a client alone on its key sees exactly its
    /// own appends, in order.
    fn check_client_view(&mut self, c: usize, input: &KvInput, output: &KvOutput) {
        let own_key = c.to_string();
        let generic_own = matches!(self.clients[c].workload, Workload::Generic { random_keys: None });
        match (input, output) {
            (KvInput::Append { key, value }, _) if generic_own && *key == own_key => {
                self.clients[c].appended.push_str(value);
            }
            (KvInput::Get { key }, KvOutput::Value(v)) => {
                if generic_own && *key == own_key {
                    let got = v.clone().unwrap_or_default();
                    assert_eq!(
                        got, self.clients[c].appended,
                        "seed {}: client {c} read {got:?} from its own key, expected its appends",
                        self.seed
                    );
                }
                self.clients[c].last_value_seen = v.clone();
            }
            _ => {}
        }
    }

    // ----- the event loop --------------------------------------------------

    pub fn run_for(&mut self, d: Nanos) {
        let until = self.now() + d;
        while self.queue.peek_time().is_some_and(|t| t <= until) {
            let (_, e) = self.queue.pop().expect("peeked");
            self.handle(e);
        }
        if self.now() < until {
            self.queue.schedule(until, Event::ClientStart { client: usize::MAX });
            self.queue.pop();
        }
    }

    pub fn run_until(&mut self, limit: Nanos, mut cond: impl FnMut(&KvCluster) -> bool) -> bool {
        let deadline = self.now() + limit;
        while !cond(self) {
            if self.now() >= deadline {
                return false;
            }
            self.run_for(10 * MILLI);
        }
        true
    }

    fn handle(&mut self, e: Event) {
        match e {
            Event::Tick { server, incarnation } => {
                if self.servers[server].incarnation != incarnation {
                    return;
                }
                let Some(r) = self.servers[server].raft.as_mut() else { return };
                r.tick();
                self.queue.schedule_in(TICK, Event::Tick { server, incarnation });
                self.process(server);
            }
            Event::Raft { msg, incarnation } => {
                let to = (msg.to - 1) as usize;
                let from = (msg.from - 1) as usize;
                if !self.net.arrive(from, to) || self.servers[to].incarnation != incarnation {
                    return;
                }
                let Some(r) = self.servers[to].raft.as_mut() else { return };
                r.step(msg);
                self.process(to);
            }
            Event::Request { server, client, req, cmd, incarnation } => {
                let endpoint = self.clients[client].endpoint;
                if !self.net.arrive(endpoint, server) || self.servers[server].incarnation != incarnation {
                    return;
                }
                self.on_request(server, client, req, cmd);
            }
            Event::Response { client, from, req, resp } => {
                let endpoint = self.clients[client].endpoint;
                if self.net.arrive(from, endpoint) {
                    self.on_client_response(client, from, req, resp);
                }
            }
            Event::ClientTimeout { client, req, attempt } => {
                if self.clients[client]
                    .in_flight
                    .as_ref()
                    .is_some_and(|f| f.req == req && f.attempt == attempt)
                {
                    self.clients[client].clerk.on_timeout();
                    self.send_request(client);
                }
            }
            Event::ClientStart { client } => {
                if client == usize::MAX
                    || !self.clients[client].running
                    || self.clients[client].in_flight.is_some()
                {
                    return;
                }
                if let Some(op) = self.next_op(client) {
                    self.issue(client, op);
                }
            }
        }
    }

    fn respond(&mut self, server: usize, client: usize, req: u64, resp: KvResponse) {
        let endpoint = self.clients[client].endpoint;
        if let Fate::Deliver { after } = self.net.send(&mut self.rng, server, endpoint, true) {
            self.queue.schedule_in(after, Event::Response { client, from: server, req, resp });
        }
    }

    fn on_request(&mut self, i: usize, client: usize, req: u64, cmd: Command) {
        let Some(raft) = self.servers[i].raft.as_mut() else { return };
        let hint = raft.leader();
        if cmd.op.is_read() {
            let s = &mut self.servers[i];
            s.next_read_ctx += 1;
            let ctx = s.next_read_ctx;
            match s.raft.as_mut().expect("live").read_index(ctx) {
                Ok(()) => {
                    s.reads.insert(ctx, (client, req, cmd.op.key().clone()));
                }
                Err(_) => {
                    return self.respond(
                        i,
                        client,
                        req,
                        KvResponse::WrongLeader { leader: hint, me: i as NodeId + 1 },
                    )
                }
            }
        } else {
            match raft.propose(cmd.encode()) {
                Ok((index, term)) => {
                    self.servers[i].pending.insert(index, (term, client, req));
                }
                Err(_) => {
                    return self.respond(
                        i,
                        client,
                        req,
                        KvResponse::WrongLeader { leader: hint, me: i as NodeId + 1 },
                    )
                }
            }
        }
        self.process(i);
    }

    /// Carries out every Ready of server `i`: the driver loop, plus the
    /// key/value service's apply, reads and snapshots.
    fn process(&mut self, i: usize) {
        let was_leader = self.servers[i].raft.as_ref().is_some_and(Raft::is_leader);
        let mut rounds = 0;
        loop {
            let s = &mut self.servers[i];
            let raft = s.raft.as_mut().expect("processing a live server");
            if !raft.has_ready() {
                break;
            }
            rounds += 1;
            assert!(rounds < 10_000, "seed {}: server {i} never runs out of work: {raft:#?}", self.seed);
            let rd = raft.ready();
            self.safety.on_ready(self.servers[i].raft.as_ref().expect("live"), &rd);
            for m in rd.messages.clone() {
                self.send_raft(m);
            }
            self.servers[i].store.as_mut().expect("live").persist(&rd).unwrap();
            for m in rd.persisted_messages.clone() {
                self.send_raft(m);
            }
            self.apply(i, &rd);
            let s = &mut self.servers[i];
            let raft = s.raft.as_mut().expect("live");
            raft.advance();
            if let Some(max) = self.max_raft_state {
                if raft.log_bytes() >= max && s.applied > raft.log().snapshot_meta().index {
                    raft.compact(s.applied, s.kv.snapshot());
                }
            }
        }
        self.serve_ready_reads(i);
        let s = &mut self.servers[i];
        let Some(raft) = s.raft.as_ref() else { return };
        self.safety.after_event(raft, was_leader);
        if was_leader && !raft.is_leader() {
            // Deposed: nobody here will answer these; the clients retry.
            let hint = raft.leader();
            let waiting: Vec<(usize, u64)> = s
                .pending
                .drain()
                .map(|(_, (_, c, r))| (c, r))
                .chain(s.reads.drain().map(|(_, (c, r, _))| (c, r)))
                .collect();
            for (c, r) in waiting {
                self.respond(i, c, r, KvResponse::WrongLeader { leader: hint, me: i as NodeId + 1 });
            }
        }
    }

    fn send_raft(&mut self, m: Message) {
        self.raft_messages += 1;
        let (from, to) = ((m.from - 1) as usize, (m.to - 1) as usize);
        if let Fate::Deliver { after } = self.net.send(&mut self.rng, from, to, m.body.is_response()) {
            let incarnation = self.servers[to].incarnation;
            self.queue.schedule_in(after, Event::Raft { msg: m, incarnation });
        }
    }

    fn apply(&mut self, i: usize, rd: &Ready) {
        let id = i as NodeId + 1;
        if let Some(snap) = &rd.apply_snapshot {
            let s = &mut self.servers[i];
            s.kv = KvState::restore(&snap.data).unwrap();
            s.applied = snap.meta.index;
            // Writes waiting at or below the snapshot will never be applied here.
            let stale: Vec<Index> = s.pending.keys().copied().filter(|&x| x <= snap.meta.index).collect();
            let waiting: Vec<(usize, u64)> =
                stale.iter().filter_map(|index| s.pending.remove(index)).map(|(_, c, r)| (c, r)).collect();
            for (c, r) in waiting {
                self.respond(i, c, r, KvResponse::Retry);
            }
        }
        for e in &rd.committed {
            self.safety.on_apply(id, e);
            let s = &mut self.servers[i];
            assert_eq!(e.index, s.applied + 1, "seed {}: server {i} applied out of order", self.seed);
            s.applied = e.index;
            let applied = match e.kind {
                EntryKind::Noop => None,
                EntryKind::Normal => Some(s.kv.apply_bytes(e.index, &e.data)),
            };
            if let Some((term, c, r)) = s.pending.remove(&e.index) {
                let resp = match applied {
                    Some(a @ (Applied::Executed(_) | Applied::Duplicate(_))) if term == e.term => {
                        KvResponse::Ok(a.result().expect("has a result").clone())
                    }
                    _ => KvResponse::Retry,
                };
                self.respond(i, c, r, resp);
            }
        }
        for rs in &rd.read_states {
            let s = &mut self.servers[i];
            if let Some((c, r, key)) = s.reads.remove(&rs.ctx) {
                s.ready_reads.push_back((rs.index, c, r, key));
            }
        }
    }

    fn serve_ready_reads(&mut self, i: usize) {
        loop {
            let s = &mut self.servers[i];
            let Some(&(index, ..)) = s.ready_reads.front() else { return };
            if index > s.applied {
                return;
            }
            let (_, c, r, key) = s.ready_reads.pop_front().expect("peeked");
            let value = s.kv.get(&key).cloned();
            self.respond(i, c, r, KvResponse::Ok(OpResult::Value(value)));
        }
    }

    /// One line per server, for humans reading a failure.
    pub fn describe(&self) -> String {
        let mut out = format!("at {} ms:\n", self.now() / MILLI);
        for (i, s) in self.servers.iter().enumerate() {
            let line = match &s.raft {
                None => "down".to_string(),
                Some(r) => format!(
                    "{:?} term {} leader {:?} commit {} applied {} log {}..={} pending {} reads {}",
                    r.role(),
                    r.term(),
                    r.leader(),
                    r.commit_index(),
                    s.applied,
                    r.log().first_index(),
                    r.log().last_index(),
                    s.pending.len(),
                    s.reads.len()
                ),
            };
            out += &format!("  server {i}: {line}\n");
        }
        out
    }

    // ----- checks ----------------------------------------------------------

    pub fn history(&self) -> &[KvOperation] {
        &self.history
    }

    /// Runs the linearizability checker; an illegal history fails the test.
    pub fn check_linearizable(&self) {
        match check(&KvModel, &self.history, Duration::from_secs(20)) {
            CheckResult::Ok => {}
            CheckResult::Illegal(v) => panic!("seed {}: history is not linearizable:\n{v}", self.seed),
            CheckResult::Unknown => {
                eprintln!("seed {}: linearizability check timed out (not a failure)", self.seed)
            }
        }
    }
}

fn to_input(op: &Op) -> KvInput {
    shoal_kv::model::model_input(op)
}

fn to_output(r: &OpResult) -> KvOutput {
    shoal_kv::model::model_output(r)
        .unwrap_or_else(|| panic!("a client got Invalid: the server could not decode its command"))
}
