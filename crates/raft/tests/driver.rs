//! The tokio driver with real files: a 3-node in-process cluster on a
//! multi-thread runtime elects a leader, commits proposals, and a node that
//! was stopped recovers from its files and catches up by installing a
//! snapshot. Real time; the only timing bound is "within 10 s".

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use shoal_raft::{
    spawn_node, ChannelRouter, Config, DriverConfig, Index, NodeHandle, NodeId, ProposeError, Role, Snapshot,
    StateMachine, Transport,
};
use shoal_wal::OsDir;

const LIMIT: Duration = Duration::from_secs(10);

/// Counts commands and chains a digest over them; the test reads
/// `(applied, digest)` through the shared cell.
#[derive(Debug)]
struct Counter {
    applied: Index,
    digest: u64,
    seen: Arc<Mutex<(Index, u64)>>,
}

fn mix(digest: u64, index: Index, data: &[u8]) -> u64 {
    let mut h = digest ^ 0xcbf2_9ce4_8422_2325;
    for b in index.to_le_bytes().iter().chain(data) {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
    }
    h
}

impl StateMachine for Counter {
    type Output = Index;

    fn apply(&mut self, index: Index, data: &Bytes) -> Index {
        assert!(index > self.applied, "applied out of order");
        self.applied = index;
        self.digest = mix(self.digest, index, data);
        *self.seen.lock().unwrap() = (self.applied, self.digest);
        index
    }

    fn snapshot(&self) -> Bytes {
        let mut v = self.applied.to_le_bytes().to_vec();
        v.extend_from_slice(&self.digest.to_le_bytes());
        Bytes::from(v)
    }

    fn restore(&mut self, s: &Snapshot) {
        self.applied = u64::from_le_bytes(s.data[..8].try_into().unwrap());
        self.digest = u64::from_le_bytes(s.data[8..16].try_into().unwrap());
        // Noops advance the log without reaching the state machine.
        assert!(self.applied <= s.meta.index);
        self.applied = s.meta.index;
        *self.seen.lock().unwrap() = (self.applied, self.digest);
    }
}

struct Cluster {
    root: PathBuf,
    router: Arc<ChannelRouter>,
    nodes: Vec<Option<NodeHandle<Index>>>,
    seen: Vec<Arc<Mutex<(Index, u64)>>>,
}

fn config(id: NodeId) -> DriverConfig {
    let mut raft = Config::new(id, vec![1, 2, 3]);
    raft.election_ticks = 10;
    raft.heartbeat_ticks = 2;
    let mut cfg = DriverConfig::new(raft);
    cfg.tick = Duration::from_millis(10);
    cfg.snapshot_after_entries = Some(50);
    // Compact only to a snapshot 10 entries behind the applied index.
    cfg.compaction_lag = 10;
    cfg
}

impl Cluster {
    fn new(root: &Path) -> Cluster {
        let mut c = Cluster {
            root: root.to_path_buf(),
            router: ChannelRouter::new(),
            nodes: vec![None, None, None],
            seen: (0..3).map(|_| Arc::new(Mutex::new((0, 0)))).collect(),
        };
        for id in 1..=3 {
            c.start(id);
        }
        c
    }

    fn start(&mut self, id: NodeId) {
        let i = (id - 1) as usize;
        let dir = OsDir::open(self.root.join(format!("node-{id}"))).unwrap();
        let sm = Counter { applied: 0, digest: 0, seen: self.seen[i].clone() };
        let transport: Arc<dyn Transport> = self.router.clone();
        let h = spawn_node(config(id), dir, sm, transport).unwrap();
        self.router.register(id, h.mailbox());
        self.nodes[i] = Some(h);
    }

    async fn stop(&mut self, id: NodeId) {
        let h = self.nodes[(id - 1) as usize].take().unwrap();
        self.router.unregister(id);
        h.shutdown().await.unwrap();
    }

    fn node(&self, id: NodeId) -> &NodeHandle<Index> {
        self.nodes[(id - 1) as usize].as_ref().unwrap()
    }

    fn running(&self) -> impl Iterator<Item = &NodeHandle<Index>> {
        self.nodes.iter().flatten()
    }

    async fn wait(&self, what: &str, mut cond: impl FnMut(&Cluster) -> bool) {
        let deadline = tokio::time::Instant::now() + LIMIT;
        while !cond(self) {
            assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn leader(&self) -> NodeId {
        let mut leader = 0;
        self.wait("a leader", |c| {
            let leaders: Vec<_> =
                c.running().map(|h| h.status()).filter(|s| s.role == Role::Leader).collect();
            // Exactly one node leads the newest term.
            match leaders.iter().max_by_key(|s| s.term) {
                Some(s) => {
                    leader = s.id;
                    true
                }
                None => false,
            }
        })
        .await;
        leader
    }

    /// Proposes `n` commands concurrently on `leader`; all must apply.
    async fn propose(&self, leader: NodeId, n: usize) -> Index {
        let h = self.node(leader).clone();
        let mut tasks = Vec::new();
        for k in 0..n {
            let h = h.clone();
            tasks
                .push(tokio::spawn(async move { h.propose(Bytes::from(format!("cmd-{leader}-{k}"))).await }));
        }
        let mut last = 0;
        for t in tasks {
            let index: Result<Index, ProposeError> =
                tokio::time::timeout(LIMIT, t).await.expect("proposal timed out").unwrap();
            last = last.max(index.unwrap());
        }
        last
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_commit_and_a_restarted_node_catches_up_by_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let mut c = Cluster::new(tmp.path());

    let leader = c.leader().await;
    let last = c.propose(leader, 100).await;
    assert!(last >= 101, "100 proposals after the leader's no-op end at {last}");
    c.wait("every node to apply 100 proposals", |c| c.running().all(|h| h.status().applied >= last)).await;

    // A follower goes down; the others commit enough that the leader compacts
    // its log past everything the follower holds.
    let follower = (1..=3).find(|&id| id != leader).unwrap();
    let follower_last = c.node(follower).status().last_index;
    let stale = c.node(follower).clone();
    c.stop(follower).await;
    assert_eq!(stale.propose(Bytes::from_static(b"x")).await, Err(ProposeError::Stopped));
    assert!(!stale.status().running);
    c.propose(leader, 200).await;
    // A second batch: with a compaction lag, the snapshot taken at the end of
    // the first is applied to the log only once more entries are applied.
    let last = c.propose(leader, 50).await;
    c.wait("the leader to compact past the stopped follower's log", |c| {
        c.node(leader).status().snapshot_index > follower_last
    })
    .await;

    // Non-leaders are refused with a hint.
    let other = (1..=3).find(|&id| id != leader && id != follower).unwrap();
    match c.node(other).propose(Bytes::from_static(b"x")).await {
        Err(ProposeError::NotLeader { hint }) => assert_eq!(hint, Some(leader)),
        r => panic!("proposal on a follower: {r:?}"),
    }
    match c.node(other).read_index().await {
        Err(ProposeError::NotLeader { hint }) => assert_eq!(hint, Some(leader)),
        r => panic!("read on a follower: {r:?}"),
    }

    // The follower restarts from its files and catches up by snapshot.
    c.start(follower);
    let recovered = c.node(follower).status();
    assert!(recovered.last_index >= follower_last, "recovered log {recovered:?}");
    c.wait("the restarted follower to catch up", |c| {
        let s = c.node(follower).status();
        s.applied >= last && s.snapshots_installed >= 1
    })
    .await;

    // Linearizable read point on the leader.
    let read = c.node(leader).read_index().await.unwrap();
    assert!(read >= last);

    // Every node holds the same state.
    c.wait("all nodes to apply the same prefix", |c| {
        let commit = c.node(leader).status().commit;
        c.running().all(|h| h.status().applied == commit)
    })
    .await;
    let digests: Vec<u64> = c.seen.iter().map(|s| s.lock().unwrap().1).collect();
    assert!(digests.windows(2).all(|w| w[0] == w[1]), "state digests differ: {digests:?}");

    for id in 1..=3 {
        c.stop(id).await;
    }
}
