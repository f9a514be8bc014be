//! Three real `shoal kv serve` processes on 127.0.0.1, every peer link
//! through a fault-injecting proxy, and concurrent clients in this process
//! recording a history through a leader SIGKILL, a SIGSTOPped follower,
//! cut links (both ways and one way) and a restart of everyone. After each
//! phase the whole history so far must be linearizable, and at the end no
//! acknowledged write may be missing.
//!
//! Seeded: the clients' operations, the follower paused and the proxies'
//! randomness follow the seed printed at the start (and on failure);
//! `SHOAL_SEED=<n>` replays those choices (the operating system's timing
//! still varies from run to run).

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::Cluster;
use shoal_kv::{connect, Connections, KvClient, Op, OpResult, ServerStatus};
use shoal_rpc::{Direction, Proxy, ProxyHandle};
use shoal_sim::kv_model::{KvInput, KvModel, KvOperation, KvOutput};
use shoal_sim::linearizability::{check, CheckResult, Operation};
use shoal_sim::Rng;

const SERVERS: usize = 3;
const CLIENTS: usize = 5;
/// Keys written with put, cas and delete (and read).
const REGISTERS: [&str; 3] = ["r0", "r1", "r2"];
/// Append keys per phase; each phase gets fresh ones so values stay short.
const LOGS_PER_PHASE: usize = 2;
/// A generous protocol deadline for "a leader", "progress", "caught up".
const DEADLINE: Duration = Duration::from_secs(15);
/// A client gives up on an operation after this long.
const OP_TIMEOUT: Duration = Duration::from_secs(3);
/// How long the checker may search before answering "unknown".
const CHECK_LIMIT: Duration = Duration::from_secs(20);

fn log_key(phase: usize, k: usize) -> String {
    format!("log{phase}.{k}")
}

/// Every operation the clients made, in call order; an operation still in
/// flight (or one that failed) has an unknown outcome.
#[derive(Debug)]
struct History {
    start: Instant,
    ops: Mutex<Vec<KvOperation>>,
}

impl History {
    fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    fn begin(&self, client: u64, input: KvInput) -> usize {
        let call = self.now();
        let mut ops = self.ops.lock().unwrap();
        ops.push(Operation::unknown(client, input, call));
        ops.len() - 1
    }

    fn finish(&self, index: usize, output: KvOutput) {
        let ret = self.now();
        let mut ops = self.ops.lock().unwrap();
        ops[index].output = Some(output);
        ops[index].ret = ret;
    }

    fn snapshot(&self) -> Vec<KvOperation> {
        self.ops.lock().unwrap().clone()
    }
}

fn text(b: &Bytes) -> String {
    String::from_utf8(b.to_vec()).expect("the test writes only UTF-8 values")
}

/// Runs one operation through `client`, recording it. `None` if it failed
/// (its outcome then stays unknown in the history).
async fn recorded(client: &mut KvClient, who: u64, op: Op, history: &History) -> Option<OpResult> {
    let input = shoal_kv::model::model_input(&op);
    let index = history.begin(who, input);
    match client.execute(op).await {
        Ok(result) => {
            let output = shoal_kv::model::model_output(&result)
                .unwrap_or_else(|| panic!("client {who}: the server found our command invalid"));
            history.finish(index, output);
            Some(result)
        }
        Err(e) => {
            eprintln!("[{:7.3}s] client {who}: operation failed (outcome unknown): {e}", secs(history));
            None
        }
    }
}

fn secs(history: &History) -> f64 {
    history.start.elapsed().as_secs_f64()
}

/// What one client did, for the lost-write check.
#[derive(Debug, Default)]
struct ClientReport {
    /// Per append key, the tokens this client sent, in order, and whether
    /// each was acknowledged.
    appends: BTreeMap<String, Vec<(u64, bool)>>,
    ok: u64,
    failed: u64,
}

#[derive(Debug)]
struct Shared {
    history: History,
    stop: AtomicBool,
    phase: AtomicUsize,
    /// Acknowledged writes so far (progress is measured on these).
    acked_writes: AtomicU64,
}

async fn client_loop(who: u64, conns: Connections, mut rng: Rng, shared: Arc<Shared>) -> ClientReport {
    let mut client = KvClient::new(conns);
    // Short enough that the quorum loss of phase 5 leaves operations of
    // unknown outcome behind.
    client.op_timeout = OP_TIMEOUT;
    let mut report = ClientReport::default();
    // The last value this client saw per register: the cas expectation.
    let mut seen: BTreeMap<&str, Option<Bytes>> = BTreeMap::new();
    let mut n = 0u64;
    while !shared.stop.load(Ordering::Relaxed) {
        n += 1;
        let phase = shared.phase.load(Ordering::Relaxed);
        let register = REGISTERS[rng.below(REGISTERS.len() as u64) as usize];
        let log = log_key(phase, rng.below(LOGS_PER_PHASE as u64) as usize);
        let value = Bytes::from(format!("c{who}-{n}"));
        let roll = rng.below(100);
        let op = match roll {
            0..=19 => Op::Get { key: Bytes::from(register) },
            20..=29 => Op::Get { key: Bytes::from(log.clone()) },
            30..=49 => Op::Put { key: Bytes::from(register), value },
            50..=74 => {
                Op::Append { key: Bytes::from(log.clone()), value: Bytes::from(format!("c{who}.{n};")) }
            }
            75..=93 => Op::Cas {
                key: Bytes::from(register),
                expected: seen.get(register).cloned().flatten(),
                new: value,
            },
            _ => Op::Delete { key: Bytes::from(register) },
        };
        let is_write = !op.is_read();
        let is_append = matches!(op, Op::Append { .. });
        let result = recorded(&mut client, who, op, &shared.history).await;
        if is_append {
            report.appends.entry(log).or_default().push((n, result.is_some()));
        }
        match result {
            None => report.failed += 1,
            Some(r) => {
                report.ok += 1;
                if is_write {
                    shared.acked_writes.fetch_add(1, Ordering::Relaxed);
                }
                match (roll, r) {
                    (0..=19, OpResult::Value(v)) => {
                        seen.insert(register, v);
                    }
                    (75..=93, OpResult::Cas { current, .. }) => {
                        seen.insert(register, current);
                    }
                    _ => {}
                }
            }
        }
    }
    report
}

/// Statuses through their own connections (short timeouts), for finding
/// the leader; never recorded.
struct Observer {
    client: KvClient,
}

impl Observer {
    fn new(addrs: &[String]) -> Observer {
        Observer { client: KvClient::new(connect(addrs, Duration::from_millis(500)).unwrap()) }
    }

    async fn statuses(&self) -> Vec<Option<ServerStatus>> {
        self.client.statuses().await
    }

    /// A server among `among` (0-based) that says it leads, with the highest
    /// term, and that the other servers among `among` that answer agree on.
    async fn leader(&self, among: &[usize], within: Duration, what: &str) -> usize {
        let deadline = Instant::now() + within;
        loop {
            let st = self.statuses().await;
            let best = among
                .iter()
                .filter_map(|&i| st[i].as_ref().filter(|s| s.is_leader).map(|s| (s.term, i)))
                .max();
            if let Some((term, i)) = best {
                let agreed = among.iter().all(|&j| match &st[j] {
                    Some(s) => s.term == term && s.leader == Some(i as u64 + 1),
                    None => true,
                });
                if agreed {
                    return i;
                }
            }
            assert!(Instant::now() < deadline, "{what}: no leader among {among:?} within {within:?}: {st:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until server `i` has applied at least `index`.
    async fn caught_up(&self, i: usize, index: u64, within: Duration, what: &str) {
        let deadline = Instant::now() + within;
        loop {
            let st = self.statuses().await;
            if st[i].as_ref().is_some_and(|s| s.applied >= index) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: server {} not at index {index} within {within:?}: {st:?}",
                i + 1
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The proxy server `i` goes through to reach server `j`.
type Links = BTreeMap<(usize, usize), ProxyHandle>;

fn others(i: usize) -> Vec<usize> {
    (0..SERVERS).filter(|&j| j != i).collect()
}

struct Scenario {
    seed: u64,
    cluster: Cluster,
    links: Links,
    observer: Observer,
    shared: Arc<Shared>,
}

impl Scenario {
    fn note(&self, what: &str) {
        eprintln!("[{:7.3}s] {what}", secs(&self.shared.history));
    }

    /// Waits until `n` more writes have been acknowledged.
    async fn progress(&mut self, n: u64, what: &str) {
        let base = self.shared.acked_writes.load(Ordering::Relaxed);
        let deadline = Instant::now() + DEADLINE;
        while self.shared.acked_writes.load(Ordering::Relaxed) < base + n {
            self.cluster.assert_running();
            assert!(
                Instant::now() < deadline,
                "{what}: fewer than {n} writes acknowledged within {DEADLINE:?} (seed {})",
                self.seed
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn run_for(&mut self, d: Duration) {
        let until = Instant::now() + d;
        while Instant::now() < until {
            self.cluster.assert_running();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Checks the whole history so far (operations in flight count as
    /// unknown-outcome).
    fn check(&self, after: &str) {
        let history = self.shared.history.snapshot();
        let started = Instant::now();
        let verdict = check(&KvModel, &history, CHECK_LIMIT);
        let unknown = history.iter().filter(|o| o.is_unknown()).count();
        let took = started.elapsed();
        match verdict {
            CheckResult::Ok => self.note(&format!(
                "after {after}: {} operations ({unknown} of unknown outcome) linearizable, checked in {took:.2?}",
                history.len()
            )),
            CheckResult::Unknown => self.note(&format!(
                "after {after}: checker gave up on {} operations within {CHECK_LIMIT:?} (unknown, not a failure)",
                history.len()
            )),
            CheckResult::Illegal(v) => {
                panic!("after {after} (seed {}): history of {} operations is not linearizable:\n{v}", self.seed, history.len())
            }
        }
    }

    fn set_phase(&self, phase: usize, what: &str) {
        self.shared.phase.store(phase, Ordering::Relaxed);
        self.note(&format!("phase {phase}: {what}"));
    }

    async fn leader(&self, what: &str) -> usize {
        self.observer.leader(&(0..SERVERS).collect::<Vec<_>>(), DEADLINE, what).await
    }

    fn cut(&self, from: usize, to: usize, dir: Direction) {
        self.links[&(from, to)].cut(dir);
    }

    fn heal_all(&self) {
        for p in self.links.values() {
            p.heal();
        }
    }
}

async fn scenario(seed: u64) {
    let mut rng = Rng::new(seed);
    let listen = common::free_addrs(SERVERS);
    let mut links = Links::new();
    for i in 0..SERVERS {
        for j in others(i) {
            let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
            let proxy = Proxy::start_seeded(any, listen[j], rng.next_u64()).await.expect("starting a proxy");
            links.insert((i, j), proxy);
        }
    }
    let proxy_addrs: BTreeMap<(usize, usize), String> =
        links.iter().map(|(&k, p)| (k, p.addr().to_string())).collect();
    let mut cluster = Cluster::new(&listen, |i, j| proxy_addrs[&(i, j)].clone());
    // Small enough that the servers snapshot during the run, and a paused
    // follower may have to catch up from a snapshot.
    cluster.extra_args = vec!["--max-raft-state".into(), "65536".into()];
    cluster.start_all();
    let addrs = cluster.client_addrs();
    let shared = Arc::new(Shared {
        history: History { start: Instant::now(), ops: Mutex::new(Vec::new()) },
        stop: AtomicBool::new(false),
        phase: AtomicUsize::new(0),
        acked_writes: AtomicU64::new(0),
    });
    let mut s = Scenario { seed, cluster, links, observer: Observer::new(&addrs), shared: shared.clone() };

    s.note(&format!("servers on {addrs:?}"));
    let first = s.leader("startup").await;
    s.note(&format!("server {} leads", first + 1));

    // Clients share one connection per server, as a real application would.
    let conns = connect(&addrs, Duration::from_secs(1)).unwrap();
    let clients: Vec<_> = (0..CLIENTS as u64)
        .map(|who| tokio::spawn(client_loop(who, conns.clone(), Rng::new(rng.next_u64()), shared.clone())))
        .collect();
    s.progress(50, "startup").await;
    s.run_for(Duration::from_millis(1000)).await;

    // 1. SIGKILL the leader in the middle of the writes; restart it.
    s.set_phase(1, "SIGKILL the leader");
    let leader = s.leader("before the kill").await;
    s.cluster.kill(leader);
    s.note(&format!("killed server {}", leader + 1));
    let next = s.observer.leader(&others(leader), DEADLINE, "after the kill").await;
    s.note(&format!("server {} leads", next + 1));
    s.progress(30, "after the leader was killed").await;
    s.cluster.start(leader);
    s.note(&format!("restarted server {}", leader + 1));
    s.progress(30, "after the restart").await;
    s.run_for(Duration::from_millis(1000)).await;
    s.check("killing and restarting the leader");

    // 2. SIGSTOP a follower for a few seconds.
    s.set_phase(2, "SIGSTOP a follower");
    let leader = s.leader("before the pause").await;
    let followers = others(leader);
    let paused = followers[rng.below(followers.len() as u64) as usize];
    s.cluster.pause(paused);
    s.note(&format!("paused server {}", paused + 1));
    s.progress(30, "with a follower paused").await;
    s.run_for(Duration::from_millis(2500)).await;
    s.cluster.resume(paused);
    s.note(&format!("resumed server {}", paused + 1));
    let st = s.observer.statuses().await;
    let commit = st[leader].as_ref().map_or(0, |st| st.commit);
    s.observer.caught_up(paused, commit, DEADLINE, "the resumed follower").await;
    s.note(&format!("server {} caught up to index {commit}", paused + 1));
    s.progress(30, "after the pause").await;
    s.check("pausing a follower");

    // 3. Isolate the leader: every link to and from it cut both ways. Its
    // clients keep talking to it directly: it must not answer stale reads
    // or acknowledge writes it cannot commit.
    s.set_phase(3, "isolate the leader");
    let old = s.leader("before isolating").await;
    for j in others(old) {
        s.cut(old, j, Direction::Both);
        s.cut(j, old, Direction::Both);
    }
    s.note(&format!("isolated server {}", old + 1));
    let new = s.observer.leader(&others(old), DEADLINE, "the majority side").await;
    s.note(&format!("server {} leads the majority", new + 1));
    s.progress(30, "with the old leader isolated").await;
    s.run_for(Duration::from_millis(1000)).await;
    s.heal_all();
    s.note("healed");
    let leader = s.leader("after healing").await;
    s.note(&format!("server {} leads", leader + 1));
    s.progress(30, "after healing").await;
    s.check("isolating the leader");

    // 4. One-way cuts: first the leader can hear but not speak (its
    // followers elect someone else), then a follower can speak but not
    // hear (pre-vote must keep it from disrupting the leader).
    s.set_phase(4, "one-way cuts");
    let mute = s.leader("before the one-way cut").await;
    for j in others(mute) {
        s.cut(mute, j, Direction::ClientToServer);
    }
    s.note(&format!("server {} can no longer send", mute + 1));
    let new = s.observer.leader(&others(mute), DEADLINE, "with the leader mute").await;
    s.note(&format!("server {} leads", new + 1));
    s.progress(30, "with the old leader mute").await;
    s.run_for(Duration::from_millis(1000)).await;
    s.heal_all();
    let leader = s.leader("after the first one-way cut").await;
    let deaf = others(leader)[rng.below(2) as usize];
    for j in others(deaf) {
        s.cut(j, deaf, Direction::ClientToServer);
    }
    s.note(&format!("server {} can no longer hear", deaf + 1));
    s.progress(30, "with a follower deaf").await;
    s.run_for(Duration::from_millis(1500)).await;
    s.heal_all();
    s.note("healed");
    s.leader("after the second one-way cut").await;
    s.progress(30, "after healing the one-way cuts").await;
    s.check("one-way cuts");

    // 5. Lose the quorum: pause a follower and kill the leader, so writes
    // hang and time out with unknown outcomes; then resume the follower
    // (a new leader, progress) and restart the dead one.
    s.set_phase(5, "lose the quorum");
    let leader = s.leader("before losing the quorum").await;
    let followers = others(leader);
    let paused = followers[rng.below(followers.len() as u64) as usize];
    s.cluster.pause(paused);
    s.cluster.kill(leader);
    s.note(&format!("paused server {} and killed server {}", paused + 1, leader + 1));
    s.run_for(OP_TIMEOUT + Duration::from_secs(1)).await;
    s.cluster.resume(paused);
    s.note(&format!("resumed server {}", paused + 1));
    let new = s.observer.leader(&others(leader), DEADLINE, "after regaining the quorum").await;
    s.note(&format!("server {} leads", new + 1));
    s.progress(30, "after regaining the quorum").await;
    s.cluster.start(leader);
    s.note(&format!("restarted server {}", leader + 1));
    s.leader("with everyone back").await;
    s.progress(30, "with everyone back").await;
    s.check("losing and regaining the quorum");

    // 6. Everyone dies at once (SIGKILL: nothing is flushed on the way out)
    // and restarts from its data directory.
    s.set_phase(6, "restart everyone");
    s.cluster.kill_all();
    s.note("killed every server");
    s.run_for(Duration::from_millis(300)).await;
    s.cluster.start_all();
    s.note("restarted every server");
    let leader = s.leader("after the full restart").await;
    s.note(&format!("server {} leads", leader + 1));
    s.progress(50, "after the full restart").await;
    s.run_for(Duration::from_millis(1000)).await;

    shared.stop.store(true, Ordering::Relaxed);
    let mut reports = Vec::new();
    for c in clients {
        reports.push(c.await.expect("a client task panicked"));
    }
    let ok: u64 = reports.iter().map(|r| r.ok).sum();
    let failed: u64 = reports.iter().map(|r| r.failed).sum();
    s.note(&format!("clients stopped: {ok} operations acknowledged, {failed} failed"));

    // Read every key once more (recorded too, so the checker ties the final
    // values to the acknowledged writes).
    let mut reader = KvClient::new(conns.clone());
    reader.op_timeout = Duration::from_secs(5);
    let mut keys: Vec<String> = REGISTERS.iter().map(|k| k.to_string()).collect();
    for phase in 0..=6 {
        keys.extend((0..LOGS_PER_PHASE).map(|k| log_key(phase, k)));
    }
    let mut finals: BTreeMap<String, Option<String>> = BTreeMap::new();
    for key in &keys {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let op = Op::Get { key: Bytes::from(key.clone()) };
            if let Some(OpResult::Value(v)) = recorded(&mut reader, CLIENTS as u64, op, &shared.history).await
            {
                finals.insert(key.clone(), v.as_ref().map(text));
                break;
            }
            assert!(Instant::now() < deadline, "final read of {key} failed for {DEADLINE:?} (seed {seed})");
        }
    }
    s.check("the final reads");
    check_appends(&reports, &finals, seed);
    let registers: Vec<_> = REGISTERS.iter().map(|k| (k, &finals[*k])).collect();
    s.note(&format!("final registers {registers:?}; every acknowledged append present, in order, once"));
    s.cluster.assert_running();
}

/// Every acknowledged append is in its key's final value; each client's
/// tokens appear at most once each and in the order it sent them (a write
/// whose outcome was unknown may be missing, never duplicated or moved).
fn check_appends(reports: &[ClientReport], finals: &BTreeMap<String, Option<String>>, seed: u64) {
    for (who, report) in reports.iter().enumerate() {
        for (key, sent) in &report.appends {
            let value = finals[key].clone().unwrap_or_default();
            let prefix = format!("c{who}.");
            let found: Vec<u64> = value
                .split(';')
                .filter_map(|t| t.strip_prefix(&prefix))
                .map(|n| n.parse::<u64>().unwrap_or_else(|_| panic!("garbled token in {key}: {value:?}")))
                .collect();
            let sent_set: BTreeSet<u64> = sent.iter().map(|&(n, _)| n).collect();
            for n in &found {
                assert!(
                    sent_set.contains(n),
                    "seed {seed}: {key} holds c{who}.{n}, which client {who} never sent"
                );
            }
            assert!(
                found.windows(2).all(|w| w[0] < w[1]),
                "seed {seed}: client {who}'s appends to {key} are duplicated or out of order: {found:?}"
            );
            let found_set: BTreeSet<u64> = found.iter().copied().collect();
            for &(n, acked) in sent {
                assert!(
                    !acked || found_set.contains(&n),
                    "seed {seed}: client {who}'s acknowledged append c{who}.{n} is missing from {key} = {value:?}"
                );
            }
        }
    }
}

#[test]
fn kv_processes_survive_kills_pauses_cuts_and_restarts() {
    let default_seed =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64);
    let seed = shoal_sim::seed_from_env_or(default_seed);
    eprintln!("seed {seed} (replay the seeded choices: SHOAL_SEED={seed})");
    let started = Instant::now();
    shoal_sim::seeds::run_seed_list("kv_processes_survive_kills_pauses_cuts_and_restarts", &[seed], |seed| {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(scenario(seed));
        // Stop the proxies' tasks before the runtime goes.
        rt.shutdown_timeout(Duration::from_secs(1));
    });
    eprintln!("took {:.1?}", started.elapsed());
}

/// The lost-write check itself catches what it should.
#[test]
fn the_append_check_catches_lost_duplicated_and_reordered_appends() {
    let mut report = ClientReport::default();
    report.appends.insert("k".into(), vec![(1, true), (2, false), (3, true)]);
    let reports = [report];
    let finals = |v: &str| BTreeMap::from([("k".to_string(), Some(v.to_string()))]);
    let passes = |v: &str| {
        let f = finals(v);
        std::panic::catch_unwind(|| check_appends(&reports, &f, 0)).is_ok()
    };
    assert!(passes("c0.1;c0.3;"));
    assert!(passes("c1.7;c0.1;c1.8;c0.2;c0.3;"), "unknown appends may land");
    assert!(!passes("c0.1;"), "lost acknowledged append");
    assert!(!passes("c0.3;c0.1;"), "reordered");
    assert!(!passes("c0.1;c0.1;c0.3;"), "duplicated");
    assert!(!passes("c0.1;c0.3;c0.4;"), "never sent");
}
