//! Hand-driven tests of the Raft core: each scripts one corner of the
//! protocol message by message, where a randomized run would reach it only
//! by luck. Durability is modelled by never losing a node's in-memory state
//! (a "crashed" node simply neither sends nor receives).

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use shoal_raft::{Body, Config, HardState, Index, Message, NodeId, Raft, Recovered, Role};

struct Net {
    nodes: BTreeMap<NodeId, Raft>,
    down: BTreeSet<NodeId>,
    /// Every message delivered, for tests that count traffic.
    delivered: Vec<Message>,
}

impl Net {
    fn new(n: u64, tweak: impl Fn(&mut Config)) -> Net {
        let voters: Vec<NodeId> = (1..=n).collect();
        let nodes = voters
            .iter()
            .map(|&id| {
                let mut cfg = Config::new(id, voters.clone());
                cfg.election_ticks = 10;
                cfg.heartbeat_ticks = 3;
                tweak(&mut cfg);
                (id, Raft::new(cfg, Recovered::default()))
            })
            .collect();
        Net { nodes, down: BTreeSet::new(), delivered: Vec::new() }
    }

    fn node(&self, id: NodeId) -> &Raft {
        &self.nodes[&id]
    }

    fn node_mut(&mut self, id: NodeId) -> &mut Raft {
        self.nodes.get_mut(&id).unwrap()
    }

    /// Collects the outputs of every live node (persisting is a no-op here).
    fn outbox(&mut self) -> Vec<Message> {
        let mut out = Vec::new();
        for (id, r) in self.nodes.iter_mut() {
            if self.down.contains(id) {
                continue;
            }
            while r.has_ready() {
                let rd = r.ready();
                out.extend(rd.messages);
                out.extend(rd.persisted_messages);
                r.advance();
            }
        }
        out
    }

    /// Delivers messages until quiet, dropping those `keep` rejects.
    fn pump_filtered(&mut self, mut keep: impl FnMut(&Message) -> bool) {
        loop {
            let msgs = self.outbox();
            if msgs.is_empty() {
                return;
            }
            for m in msgs {
                if self.down.contains(&m.to) || !keep(&m) {
                    continue;
                }
                self.delivered.push(m.clone());
                self.node_mut(m.to).step(m);
            }
        }
    }

    fn pump(&mut self) {
        self.pump_filtered(|_| true);
    }

    /// Ticks `id` alone, letting each election play out, until it leads (or
    /// gives up after many rounds).
    fn campaign(&mut self, id: NodeId, mut keep: impl FnMut(&Message) -> bool) {
        for _ in 0..500 {
            if self.node(id).is_leader() {
                break;
            }
            self.node_mut(id).tick();
            self.pump_filtered(&mut keep);
        }
    }

    /// A crash and reboot: volatile state is gone, the durable state (term,
    /// vote, log) is what it was.
    fn restart(&mut self, id: NodeId) {
        let old = self.node(id);
        let recovered = Recovered {
            hard_state: HardState { term: old.term(), vote: old.vote() },
            snapshot: None,
            entries: old.log().iter().cloned().collect(),
        };
        assert_eq!(old.log().snapshot_meta().index, 0, "restart() models logs without snapshots");
        let cfg = old.config().clone();
        self.nodes.insert(id, Raft::new(cfg, recovered));
        self.down.remove(&id);
    }

    fn propose(&mut self, id: NodeId, data: &str) -> Index {
        self.node_mut(id).propose(Bytes::copy_from_slice(data.as_bytes())).unwrap().0
    }
}

/// Followers learn the commit index from the next heartbeat.
fn heartbeat(net: &mut Net, leader: NodeId) {
    for _ in 0..3 {
        net.node_mut(leader).tick();
    }
    net.pump();
}

fn no_pre_vote(cfg: &mut Config) {
    cfg.pre_vote = false;
    cfg.check_quorum = false;
    cfg.max_append_bytes = 1; // one entry per Append, so replication can be partial
}

/// Raft paper, Figure 8: a leader must not commit an entry of an earlier term
/// by counting replicas, even when a majority holds it (RAFT-3).
#[test]
fn figure8_commit_only_current_term_by_counting() {
    let mut net = Net::new(5, no_pre_vote);
    net.campaign(1, |_| true);
    assert_eq!(net.node(1).role(), Role::Leader);
    let t1 = net.node(1).term();
    net.pump();
    assert_eq!(net.node(1).commit_index(), 1, "the first leader's no-op commits");

    // S1 replicates X at index 2 to S2 only, then crashes.
    let x = net.propose(1, "X");
    net.pump_filtered(|m| m.from != 1 || m.to == 2);
    assert_eq!(net.node(2).log().term(x), Some(t1));
    net.down.insert(1);

    // S5 wins term t1+1 with S3 and S4 and appends its no-op at index 2, then crashes.
    net.campaign(5, |m| m.to != 2 && m.from != 2 && !matches!(m.body, Body::Append { .. }));
    assert_eq!(net.node(5).role(), Role::Leader);
    assert_eq!(net.node(5).log().term(2), Some(t1 + 1));
    net.down.insert(5);

    // S1 comes back and wins a later term; it gets X (index 2, old term)
    // onto S3 — a majority with S1 and S2 — but its own no-op at index 3
    // only onto S2.
    net.restart(1);
    let mut probes_to_s3 = 0;
    net.campaign(1, |m| match (&m.body, m.to) {
        (Body::Append { .. }, 4) => false,
        (Body::Append { prev_index: 2, .. }, 3) => {
            probes_to_s3 += 1;
            probes_to_s3 == 1 // S3 rejects the first (it lacks X); drop the one after X
        }
        _ => true,
    });
    assert_eq!(net.node(1).role(), Role::Leader);
    assert_eq!(net.node(3).log().term(x), Some(t1), "X reached a majority");
    assert!(
        net.node(1).commit_index() < x,
        "a leader committed an earlier term's entry by counting replicas"
    );

    // Had it committed, S5 could now win and overwrite X. It can: X was never committed.
    net.down.insert(1);
    net.restart(5);
    net.campaign(5, |_| true);
    assert_eq!(net.node(5).role(), Role::Leader);
    net.pump();
    assert_eq!(net.node(3).log().term(2), Some(t1 + 1), "S5's entry replaced the uncommitted X");
}

/// RAFT-2: a candidate whose log is behind cannot win.
#[test]
fn vote_requires_up_to_date_log() {
    let mut net = Net::new(3, no_pre_vote);
    net.campaign(1, |_| true);
    net.propose(1, "a");
    net.pump_filtered(|m| m.to != 3 && m.from != 3); // node 3 misses "a"
    net.down.insert(1);
    net.campaign(3, |_| true);
    assert_ne!(net.node(3).role(), Role::Leader, "a stale log won an election");
    net.campaign(2, |_| true);
    assert_eq!(net.node(2).role(), Role::Leader);
}

/// RAFT-4: a follower with a long divergent tail is repaired in a few round
/// trips (one per conflicting term), not one per entry.
#[test]
fn fast_backtracking_skips_whole_terms() {
    let mut net = Net::new(3, |cfg| {
        cfg.pre_vote = false;
        cfg.check_quorum = false;
    });
    net.campaign(1, |_| true);
    net.pump();
    // Node 1 leads, cut off from the others, and piles up 100 entries it can't commit.
    net.down.insert(2);
    net.down.insert(3);
    for i in 0..100 {
        net.propose(1, &format!("lost {i}"));
    }
    net.outbox();
    net.down.clear();
    net.down.insert(1);
    // Nodes 2 and 3 move on and commit 10 entries of their own.
    net.campaign(2, |_| true);
    for i in 0..10 {
        net.propose(2, &format!("kept {i}"));
    }
    net.pump();
    heartbeat(&mut net, 2);
    assert_eq!(net.node(3).commit_index(), net.node(2).log().last_index());
    // A new leader (node 3) takes over, then node 1 returns: the leader's
    // first probe lands in the middle of node 1's divergent tail. Count the
    // rejections it takes to repair node 1's log.
    net.restart(2);
    net.campaign(3, |_| true);
    net.down.clear();
    net.delivered.clear();
    for _ in 0..10 {
        net.node_mut(3).tick();
        net.pump();
    }
    let rejections = net
        .delivered
        .iter()
        .filter(|m| matches!(m.body, Body::AppendResponse(shoal_raft::AppendResult::Rejected { .. })))
        .count();
    assert_eq!(net.node(1).log().last_index(), net.node(3).log().last_index());
    assert_eq!(net.node(1).commit_index(), net.node(3).commit_index());
    assert!(rejections <= 3, "{rejections} rejections to skip one divergent term");
}

/// RAFT-8: an isolated node's pre-votes fail, so its term never rises.
#[test]
fn pre_vote_keeps_an_isolated_node_term() {
    let mut net = Net::new(3, |_| {});
    net.campaign(1, |_| true);
    let term = net.node(1).term();
    // Node 3 is cut off: it pre-campaigns again and again, alone.
    for _ in 0..200 {
        net.node_mut(3).tick();
        net.pump_filtered(|m| m.from != 3 && m.to != 3);
    }
    assert_eq!(net.node(3).term(), term);
    assert_eq!(net.node(3).role(), Role::PreCandidate);
    // Back in touch, it follows the leader without an election.
    for _ in 0..5 {
        net.node_mut(1).tick();
        net.pump();
    }
    assert_eq!(net.node(3).role(), Role::Follower);
    assert_eq!(net.node(3).leader(), Some(1));
    assert_eq!(net.node(1).term(), term);
}

/// RAFT-9: a ReadIndex read needs a majority's confirmation; a leader cut
/// off from its followers answers none.
#[test]
fn read_index_needs_a_quorum() {
    let mut net = Net::new(3, |_| {});
    net.campaign(1, |_| true);
    net.pump();
    net.node_mut(1).read_index(7).unwrap();
    let mut reads = Vec::new();
    // Isolated: no read state comes out, however long we wait.
    for _ in 0..5 {
        net.node_mut(1).tick();
        while net.node(1).has_ready() {
            let rd = net.node_mut(1).ready();
            reads.extend(rd.read_states);
            net.node_mut(1).advance();
        }
    }
    assert!(reads.is_empty(), "a read was served without a quorum");
    // Connected: one heartbeat round confirms it.
    net.node_mut(1).read_index(8).unwrap();
    let collect = |net: &mut Net, reads: &mut Vec<_>| loop {
        let mut msgs = Vec::new();
        for (_, r) in net.nodes.iter_mut() {
            while r.has_ready() {
                let rd = r.ready();
                reads.extend(rd.read_states);
                msgs.extend(rd.messages);
                msgs.extend(rd.persisted_messages);
                r.advance();
            }
        }
        if msgs.is_empty() {
            break;
        }
        for m in msgs {
            net.node_mut(m.to).step(m);
        }
    };
    collect(&mut net, &mut reads);
    let ctxs: Vec<u64> = reads.iter().map(|r| r.ctx).collect();
    assert!(ctxs.contains(&8), "read not confirmed: {ctxs:?}");
    assert!(reads.iter().all(|r| r.index == net.node(1).commit_index()));
    assert!(net.node_mut(2).read_index(9).is_err(), "a follower served a ReadIndex");
}

/// RAFT-6: a follower behind the leader's compacted log gets the snapshot
/// in chunks, installs it, and continues from its end.
#[test]
fn snapshot_is_sent_in_chunks() {
    let mut net = Net::new(3, |cfg| cfg.snapshot_chunk_bytes = 10);
    net.campaign(1, |_| true);
    net.pump();
    net.down.insert(3);
    for i in 0..20 {
        net.propose(1, &format!("e{i}"));
    }
    net.pump();
    let applied = net.node(1).applied_index();
    net.node_mut(1).compact(applied, Bytes::from(vec![7u8; 95]));
    net.outbox();
    net.down.clear();
    net.delivered.clear();
    for _ in 0..10 {
        net.node_mut(1).tick();
        net.pump();
    }
    let chunks = net.delivered.iter().filter(|m| matches!(m.body, Body::InstallSnapshot { .. })).count();
    assert!(chunks >= 10, "expected ten 10-byte chunks, saw {chunks}");
    assert_eq!(net.node(3).log().snapshot_meta().index, applied);
    assert_eq!(net.node(3).commit_index(), net.node(1).commit_index());
}

/// RAFT-11: many proposals between two `ready()` calls leave as one Append
/// per follower.
#[test]
fn proposals_are_batched() {
    let mut net = Net::new(3, |_| {});
    net.campaign(1, |_| true);
    net.pump();
    for i in 0..100 {
        net.propose(1, &format!("p{i}"));
    }
    let rd = net.node_mut(1).ready();
    let appends = rd.messages.iter().filter(|m| matches!(m.body, Body::Append { .. })).count();
    assert_eq!(appends, 2);
    assert_eq!(rd.entries.len(), 100);
    net.node_mut(1).advance();
    for m in rd.messages {
        net.node_mut(m.to).step(m);
    }
    net.pump();
    heartbeat(&mut net, 1);
    assert_eq!(net.node(2).commit_index(), net.node(1).log().last_index());
}
