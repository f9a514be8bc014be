//! `shoal demo`: five Raft nodes in this process, in real time, on real
//! fsync'd files. It elects a leader, commits writes, loses the leader,
//! elects another, restarts the old leader from its files, and catches up a
//! follower that missed so much that the leader had compacted its log past it
//! (so the follower must install a snapshot). Each step is one line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use shoal_raft::{
    spawn_node, ChannelRouter, Config, DriverConfig, Index, NodeHandle, NodeId, ProposeError, Role, Snapshot,
    StateMachine, Status, Transport,
};
use shoal_wal::OsDir;

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Keep the nodes' files in this directory (created if missing; must not
    /// hold an earlier run). Default: a temporary directory, removed at exit.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Snapshot (and compact the log) every this many applied entries.
    #[arg(long, default_value_t = 250)]
    snapshot_every: u64,
}

const NODES: u64 = 5;
/// How long any one step may take before the demo gives up.
const STEP_LIMIT: Duration = Duration::from_secs(10);

// ----- the replicated service: a tiny key/value map ------------------------

/// `key=value` sets a key. The demo reads the state through the shared view.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Kv {
    map: BTreeMap<String, String>,
    writes: u64,
}

impl Kv {
    /// FNV-1a over the sorted map: equal digests, equal states.
    fn digest(&self) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for (k, v) in &self.map {
            for b in k.bytes().chain([0]).chain(v.bytes()).chain([0]) {
                h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
            }
        }
        h
    }

    fn encode(&self) -> Bytes {
        let mut out = Vec::new();
        out.extend_from_slice(&self.writes.to_le_bytes());
        for (k, v) in &self.map {
            for s in [k, v] {
                out.extend_from_slice(&(s.len() as u32).to_le_bytes());
                out.extend_from_slice(s.as_bytes());
            }
        }
        Bytes::from(out)
    }

    fn decode(mut b: &[u8]) -> Option<Kv> {
        fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
            let (head, rest) = (b.get(..n)?, b.get(n..)?);
            *b = rest;
            Some(head)
        }
        let writes = u64::from_le_bytes(take(&mut b, 8)?.try_into().ok()?);
        let mut kv = Kv { map: BTreeMap::new(), writes };
        while !b.is_empty() {
            let mut s = [String::new(), String::new()];
            for part in &mut s {
                let len = u32::from_le_bytes(take(&mut b, 4)?.try_into().ok()?) as usize;
                *part = String::from_utf8(take(&mut b, len)?.to_vec()).ok()?;
            }
            let [k, v] = s;
            kv.map.insert(k, v);
        }
        Some(kv)
    }
}

/// One node's service. The state lives behind a mutex so the demo can look.
#[derive(Debug, Clone, Default)]
struct KvMachine {
    state: Arc<Mutex<Kv>>,
}

impl KvMachine {
    fn lock(&self) -> MutexGuard<'_, Kv> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl StateMachine for KvMachine {
    /// Where the write landed, and the key's previous value.
    type Output = (Index, Option<String>);

    fn apply(&mut self, index: Index, data: &Bytes) -> Self::Output {
        let text = String::from_utf8_lossy(data);
        let (k, v) = text.split_once('=').unwrap_or((&text, ""));
        let mut kv = self.lock();
        kv.writes += 1;
        (index, kv.map.insert(k.to_string(), v.to_string()))
    }

    fn snapshot(&self) -> Bytes {
        self.lock().encode()
    }

    fn restore(&mut self, snapshot: &Snapshot) {
        // The bytes passed the store's and the transport's checksums, so a
        // snapshot we cannot read is a bug in this program: fail loudly.
        let kv = Kv::decode(&snapshot.data)
            .unwrap_or_else(|| panic!("snapshot at index {} does not decode", snapshot.meta.index));
        *self.lock() = kv;
    }
}

// ----- the cluster -----------------------------------------------------------

struct Cluster {
    root: PathBuf,
    snapshot_every: u64,
    router: Arc<ChannelRouter>,
    nodes: BTreeMap<NodeId, NodeHandle<(Index, Option<String>)>>,
    services: BTreeMap<NodeId, KvMachine>,
    t0: Instant,
}

impl Cluster {
    fn say(&self, line: impl AsRef<str>) {
        println!("[{:>6.2}s] {}", self.t0.elapsed().as_secs_f64(), line.as_ref());
    }

    fn start(&mut self, id: NodeId) -> Result<()> {
        let path = self.root.join(format!("node-{id}"));
        let dir = OsDir::open(&path).with_context(|| format!("opening {}", path.display()))?;
        let mut raft = Config::new(id, (1..=NODES).collect());
        raft.election_ticks = 15;
        raft.heartbeat_ticks = 3;
        raft.snapshot_chunk_bytes = 4 * 1024;
        raft.seed = id ^ u64::from(std::process::id()).rotate_left(32);
        let mut cfg = DriverConfig::new(raft);
        cfg.tick = Duration::from_millis(10);
        cfg.snapshot_after_entries = Some(self.snapshot_every);
        let service = KvMachine::default();
        let transport: Arc<dyn Transport> = self.router.clone();
        let node = spawn_node(cfg, dir, service.clone(), transport)
            .with_context(|| format!("node {id} cannot recover from {}", path.display()))?;
        self.router.register(id, node.mailbox());
        self.nodes.insert(id, node);
        self.services.insert(id, service);
        Ok(())
    }

    async fn stop(&mut self, id: NodeId) -> Result<()> {
        self.router.unregister(id);
        if let Some(node) = self.nodes.remove(&id) {
            node.shutdown().await?;
        }
        Ok(())
    }

    fn status(&self, id: NodeId) -> Result<Status> {
        let node = self.nodes.get(&id).with_context(|| format!("node {id} is not running"))?;
        let s = node.status();
        if !s.running {
            bail!("node {id} stopped unexpectedly");
        }
        Ok(s)
    }

    fn statuses(&self) -> Result<Vec<Status>> {
        self.nodes.keys().map(|&id| self.status(id)).collect()
    }

    /// Polls `cond` every few milliseconds for up to `STEP_LIMIT`.
    async fn wait<T>(&self, what: &str, mut cond: impl FnMut(&Cluster) -> Result<Option<T>>) -> Result<T> {
        let deadline = Instant::now() + STEP_LIMIT;
        loop {
            if let Some(v) = cond(self)? {
                return Ok(v);
            }
            if Instant::now() > deadline {
                let states: Vec<String> = self
                    .statuses()?
                    .iter()
                    .map(|s| {
                        format!(
                            "node {} {:?} term {} commit {} applied {}",
                            s.id, s.role, s.term, s.commit, s.applied
                        )
                    })
                    .collect();
                bail!("timed out after {STEP_LIMIT:?} waiting for {what} ({})", states.join("; "));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// A leader that a majority of the cluster follows, in a term after `after`.
    async fn settled_leader(&self, after: u64) -> Result<Status> {
        self.wait("a leader", |c| {
            let all = c.statuses()?;
            let Some(leader) =
                all.iter().filter(|s| s.role == Role::Leader && s.term > after).max_by_key(|s| s.term)
            else {
                return Ok(None);
            };
            let followers =
                all.iter().filter(|s| s.term == leader.term && s.leader == Some(leader.id)).count();
            Ok((followers as u64 > NODES / 2).then(|| leader.clone()))
        })
        .await
    }

    /// Writes `keys` concurrently through the leader (retrying through a new
    /// leader should leadership move); returns the highest index written.
    async fn write(&self, keys: impl Iterator<Item = u64>) -> Result<Index> {
        let leader = self.settled_leader(0).await?;
        let mut tasks = Vec::new();
        for k in keys {
            let mut node = self.nodes.get(&leader.id).cloned().context("leader vanished")?;
            let nodes = self.nodes.clone();
            tasks.push(tokio::spawn(async move {
                let cmd = Bytes::from(format!("user:{k:04}=v{k}"));
                for _ in 0..5 {
                    match node.propose(cmd.clone()).await {
                        Ok((index, _)) => return Ok(index),
                        Err(ProposeError::NotLeader { hint: Some(h) }) if nodes.contains_key(&h) => {
                            node = nodes[&h].clone();
                        }
                        Err(ProposeError::NotLeader { .. } | ProposeError::Overwritten { .. }) => {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        Err(e) => return Err(e),
                    }
                }
                Err(ProposeError::NotLeader { hint: None })
            }));
        }
        let mut last = 0;
        for t in tasks {
            let applied = t.await.context("writer task failed")?.context("write failed")?;
            last = last.max(applied);
        }
        Ok(last)
    }

    /// Waits until every running node applied the leader's whole commit.
    async fn converge(&self) -> Result<Index> {
        self.wait("every node to apply the leader's commit index", |c| {
            let all = c.statuses()?;
            let Some(leader) = all.iter().find(|s| s.role == Role::Leader) else { return Ok(None) };
            let done = all.iter().all(|s| s.applied == leader.commit && s.commit == leader.commit);
            Ok(done.then_some(leader.commit))
        })
        .await
    }

    fn digest(&self, id: NodeId) -> (u64, usize, u64) {
        let kv = self.services[&id].lock();
        (kv.digest(), kv.map.len(), kv.writes)
    }
}

pub fn run(args: DemoArgs) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let (_tmp, root) = match &args.dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            if std::fs::read_dir(dir)?.next().is_some() {
                bail!("{} is not empty; pick a fresh directory", dir.display());
            }
            (None, dir.clone())
        }
        None => {
            let tmp =
                tempfile::Builder::new().prefix("shoal-demo-").tempdir().context("creating a temp dir")?;
            let root = tmp.path().to_path_buf();
            (Some(tmp), root)
        }
    };
    runtime.block_on(demo(&root, args.snapshot_every.max(1)))
}

async fn demo(root: &Path, snapshot_every: u64) -> Result<()> {
    let mut c = Cluster {
        root: root.to_path_buf(),
        snapshot_every,
        router: ChannelRouter::new(),
        nodes: BTreeMap::new(),
        services: BTreeMap::new(),
        t0: Instant::now(),
    };
    let result = script(&mut c).await;
    let ids: Vec<NodeId> = c.nodes.keys().copied().collect();
    for id in ids {
        let stopped = c.stop(id).await;
        if result.is_ok() {
            stopped?;
        }
    }
    result
}

async fn script(c: &mut Cluster) -> Result<()> {
    c.say(format!(
        "starting {NODES} nodes; their logs and snapshots are fsync'd files in {}",
        c.root.display()
    ));
    for id in 1..=NODES {
        c.start(id)?;
    }

    // 1. An election.
    let leader = c.settled_leader(0).await?;
    c.say(format!("node {} elected leader for term {}", leader.id, leader.term));

    // 2. Replication.
    let t = Instant::now();
    let last = c.write(0..100).await?;
    c.say(format!("committed 100 writes through node {} in {} ms (log index {last})", leader.id, ms(t)));
    let commit = c.converge().await?;
    c.say(format!("all {NODES} nodes applied through index {commit}"));

    // 3. The leader crashes; the others elect a new one.
    c.stop(leader.id).await?;
    let crashed = Instant::now();
    c.say(format!("node {} (the leader) crashed", leader.id));
    let next = c.settled_leader(leader.term).await?;
    c.say(format!(
        "node {} elected leader for term {} after {} ms without a leader",
        next.id,
        next.term,
        ms(crashed)
    ));
    let last = c.write(100..200).await?;
    c.say(format!(
        "committed 100 more writes through node {} with node {} down (log index {last})",
        next.id, leader.id
    ));

    // 4. The old leader restarts from its files and catches up from the log.
    c.start(leader.id)?;
    let s = c.status(leader.id)?;
    c.say(format!(
        "node {} restarted from its files: term {}, log through index {}, snapshot at {}",
        s.id, s.term, s.last_index, s.snapshot_index
    ));
    let id = leader.id;
    let commit = c
        .wait("the restarted node to catch up", |c| {
            let s = c.status(id)?;
            let leader_commit = c.status(next.id)?.commit;
            Ok((s.applied >= leader_commit).then_some(s.applied))
        })
        .await?;
    c.say(format!("node {id} caught up from the leader's log: applied through index {commit}"));

    // 5. A follower misses so much that the leader compacts past it.
    let leader = c.settled_leader(0).await?;
    let follower = (1..=NODES).rev().find(|&f| f != leader.id && f != id).context("no follower")?;
    let follower_last = c.status(follower)?.last_index;
    c.stop(follower).await?;
    c.say(format!("node {follower} (a follower, log through index {follower_last}) stopped"));
    let writes = 3 * c.snapshot_every;
    let last = c.write(200..200 + writes).await?;
    let snap = c
        .wait("the leader to compact its log", |c| {
            let s = c.status(leader.id)?;
            Ok((s.snapshot_index > follower_last).then_some(s.snapshot_index))
        })
        .await?;
    c.say(format!(
        "committed {writes} more writes (log index {last}); node {} compacted its log into a snapshot at index {snap}",
        leader.id
    ));
    c.start(follower)?;
    let s = c.status(follower)?;
    c.say(format!(
        "node {follower} restarted from its files: log through index {}, but the leader's log now starts at {}",
        s.last_index,
        snap + 1
    ));
    let installed = c
        .wait("the follower to install a snapshot", |c| {
            let s = c.status(follower)?;
            Ok((s.snapshots_installed > 0).then_some(s.snapshot_index))
        })
        .await?;
    let (_, keys, _) = c.digest(follower);
    c.say(format!("node {follower} installed the leader's snapshot at index {installed} ({keys} keys)"));
    let caught_up = c
        .wait("the follower to reach the leader's commit index", |c| {
            let s = c.status(follower)?;
            let leader_commit = c.status(leader.id)?.commit;
            Ok((s.applied >= leader_commit).then_some(s.applied))
        })
        .await?;
    c.say(format!("node {follower} reached the leader's commit index {caught_up}"));

    // 6. A linearizable read, and the final check.
    let reader = c.nodes.get(&leader.id).context("leader vanished")?;
    let read = reader.read_index().await?;
    let value = c.services[&leader.id].lock().map.get("user:0042").cloned().unwrap_or_default();
    c.say(format!("linearizable read through node {} at index {read}: user:0042 = {value}", leader.id));
    let commit = c.converge().await?;
    let digests: Vec<(u64, usize, u64)> = c.nodes.keys().map(|&id| c.digest(id)).collect();
    let (digest, keys, writes) = digests[0];
    if digests.iter().any(|d| d.0 != digest) {
        bail!("state digests differ after applying through index {commit}: {digests:x?}");
    }
    c.say(format!(
        "all {NODES} nodes applied through index {commit} ({writes} writes, {keys} keys); state digests agree: {digest:016x}"
    ));
    Ok(())
}

fn ms(since: Instant) -> u128 {
    since.elapsed().as_millis()
}
