//! The faulty network model, after 6.824's `labrpc`.
//!
//! Why a model and not a transport: the simulator carries messages itself
//! (as events in an [`EventQueue`](crate::EventQueue)); this module only
//! decides each message's *fate* — dropped, or delivered after some delay —
//! from the topology, the fault config and the simulation's one [`Rng`].
//! Keeping the decision here, generic and message-agnostic, lets every
//! protocol's harness share the exact fault semantics.
//!
//! # Contract with the harness
//!
//! 1. At send time call [`Network::send`]; on [`Fate::Deliver`] schedule the
//!    arrival `after` nanoseconds from now, on [`Fate::Drop`] forget it.
//! 2. At arrival time call [`Network::arrive`] (or at least
//!    [`Network::link_up`]) and discard the message if it returns false: a
//!    link that went down while the message was in flight loses it, as a
//!    real partition or crash would.
//!
//! Two layers of topology, mirroring labrpc: each node is *connected* or not
//! ([`Network::connect`]/[`Network::disconnect`], used for crashes and
//! 6.824-style isolation), and each directed link may additionally be *cut*
//! ([`Network::cut`], [`Network::partition`]) for asymmetric and group
//! partitions. A message needs both endpoints connected and its directed
//! link uncut.

use std::ops::Range;

use crate::rng::Rng;
use crate::time::{Nanos, MICRO, MILLI};

/// Fault parameters. All randomness is drawn from the caller's [`Rng`].
#[derive(Debug, Clone, PartialEq)]
pub struct NetConfig {
    /// Probability a request (non-reply) is lost on an up link.
    pub drop_request: f64,
    /// Probability a reply is lost on an up link.
    pub drop_reply: f64,
    /// Delivery delay, drawn uniformly from this range; an empty range
    /// `d..d` means a fixed delay `d`.
    pub delay: Range<Nanos>,
    /// labrpc's long reordering: each reply is, with probability 2/3,
    /// held back an extra 200 ms + uniform 0..2000 ms.
    pub long_reordering: bool,
    /// labrpc's long delays: an RPC to a dead link takes up to 7 s to fail.
    /// For one-way messages a drop is indistinguishable, so here it only
    /// changes accounting (such drops are counted as usual); the harness's
    /// own RPC timeouts model the wait.
    pub long_delays: bool,
}

impl NetConfig {
    /// No loss; a small delay (0.1..1 ms) so messages still interleave.
    pub fn reliable() -> Self {
        NetConfig {
            drop_request: 0.0,
            drop_reply: 0.0,
            delay: 100 * MICRO..MILLI,
            long_reordering: false,
            long_delays: false,
        }
    }

    /// labrpc's unreliable mode: delay 0..27 ms, 10% of requests and 10% of
    /// replies dropped.
    pub fn unreliable() -> Self {
        NetConfig {
            drop_request: 0.1,
            drop_reply: 0.1,
            delay: 0..27 * MILLI,
            long_reordering: false,
            long_delays: false,
        }
    }

    /// Same config with long reordering of replies turned on.
    pub fn with_long_reordering(mut self) -> Self {
        self.long_reordering = true;
        self
    }

    /// Same config with long delays on dead links turned on.
    pub fn with_long_delays(mut self) -> Self {
        self.long_delays = true;
        self
    }

    /// Panics on a nonsensical config, so a typo fails at setup rather than
    /// deep inside a seeded run.
    fn validate(&self) {
        assert!(
            (0.0..=1.0).contains(&self.drop_request),
            "NetConfig: drop_request {} not in [0, 1]",
            self.drop_request
        );
        assert!(
            (0.0..=1.0).contains(&self.drop_reply),
            "NetConfig: drop_reply {} not in [0, 1]",
            self.drop_reply
        );
        assert!(
            self.delay.start <= self.delay.end,
            "NetConfig: delay range {}..{} is reversed",
            self.delay.start,
            self.delay.end
        );
    }
}

/// What happens to one message, decided when it is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Arrives `after` nanoseconds from the send time (if the link is still
    /// up then; see the module docs).
    Deliver { after: Nanos },
    /// Lost.
    Drop,
}

/// Message counters for one node. Send-side counters belong to the sender.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeStats {
    /// Messages this node sent (requests and replies).
    pub sent: u64,
    /// Of `sent`, how many were replies.
    pub sent_replies: u64,
    /// Of `sent`, how many were fated to be delivered.
    pub delivered: u64,
    /// Of `sent`, how many were dropped at send time (link down or random loss).
    pub dropped: u64,
    /// Of `dropped`, how many because the link was down.
    pub dropped_link_down: u64,
    /// Messages from this node lost in flight (link went down before
    /// arrival), as reported through [`Network::arrive`].
    pub lost_in_flight: u64,
    /// Messages that reached this node, as reported through [`Network::arrive`].
    pub received: u64,
}

impl NodeStats {
    fn add(&mut self, o: &NodeStats) {
        self.sent += o.sent;
        self.sent_replies += o.sent_replies;
        self.delivered += o.delivered;
        self.dropped += o.dropped;
        self.dropped_link_down += o.dropped_link_down;
        self.lost_in_flight += o.lost_in_flight;
        self.received += o.received;
    }
}

/// Per-node counters plus their sum.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Indexed by node id.
    pub per_node: Vec<NodeStats>,
}

impl NetStats {
    /// Sum over all nodes.
    pub fn total(&self) -> NodeStats {
        let mut t = NodeStats::default();
        for s in &self.per_node {
            t.add(s);
        }
        t
    }

    /// Counters of one node.
    pub fn node(&self, node: usize) -> &NodeStats {
        &self.per_node[node]
    }
}

/// Topology and fault state of `n` nodes, ids `0..n`.
#[derive(Debug, Clone)]
pub struct Network {
    n: usize,
    cfg: NetConfig,
    connected: Vec<bool>,
    /// `cut[from * n + to]`: the directed link from → to is severed.
    cut: Vec<bool>,
    stats: NetStats,
}

/// labrpc's long-reordering extra delay: 200 ms base.
const REORDER_BASE: Nanos = 200 * MILLI;
/// ... plus uniform 0..2000 ms.
const REORDER_SPREAD: Nanos = 2000 * MILLI;

impl Network {
    /// `n` nodes, all connected, no links cut.
    pub fn new(n: usize, cfg: NetConfig) -> Self {
        cfg.validate();
        Network {
            n,
            cfg,
            connected: vec![true; n],
            cut: vec![false; n * n],
            stats: NetStats { per_node: vec![NodeStats::default(); n] },
        }
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.n
    }

    /// True for a network of zero nodes.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Replaces the fault config; topology and stats are kept.
    pub fn set_config(&mut self, cfg: NetConfig) {
        cfg.validate();
        self.cfg = cfg;
    }

    /// The current fault config.
    pub fn config(&self) -> &NetConfig {
        &self.cfg
    }

    fn check(&self, node: usize) {
        assert!(node < self.n, "Network: node {node} out of range (n = {})", self.n);
    }

    /// Reattaches `node`: its links work again unless individually cut.
    pub fn connect(&mut self, node: usize) {
        self.check(node);
        self.connected[node] = true;
    }

    /// Detaches `node`: every link to and from it is down (both directions),
    /// while per-link cuts are remembered for when it reconnects.
    pub fn disconnect(&mut self, node: usize) {
        self.check(node);
        self.connected[node] = false;
    }

    /// Whether `node` is attached (see [`Network::disconnect`]).
    pub fn is_connected(&self, node: usize) -> bool {
        self.check(node);
        self.connected[node]
    }

    /// Severs the single directed link `from → to`; `to → from` is untouched.
    pub fn cut(&mut self, from: usize, to: usize) {
        self.check(from);
        self.check(to);
        self.cut[from * self.n + to] = true;
    }

    /// Restores the single directed link `from → to`.
    pub fn heal(&mut self, from: usize, to: usize) {
        self.check(from);
        self.check(to);
        self.cut[from * self.n + to] = false;
    }

    /// Replaces all cuts so links work only within each group. Nodes in no
    /// group are isolated from everyone. A node may appear in at most one
    /// group. Connected/disconnected state is not changed.
    pub fn partition(&mut self, groups: &[&[usize]]) {
        const NONE: usize = usize::MAX;
        let mut group_of = vec![NONE; self.n];
        for (g, members) in groups.iter().enumerate() {
            for &node in members.iter() {
                self.check(node);
                assert!(group_of[node] == NONE, "Network::partition: node {node} is in more than one group");
                group_of[node] = g;
            }
        }
        for from in 0..self.n {
            for to in 0..self.n {
                let together = from == to || (group_of[from] != NONE && group_of[from] == group_of[to]);
                self.cut[from * self.n + to] = !together;
            }
        }
    }

    /// Removes every cut (undoes [`Network::cut`] and [`Network::partition`]).
    /// Deliberately does not reconnect disconnected nodes: those model
    /// crashes, which the harness ends explicitly with [`Network::connect`].
    pub fn heal_all(&mut self) {
        self.cut.iter_mut().for_each(|c| *c = false);
    }

    /// Whether a message `from → to` can travel now: both endpoints
    /// connected and the directed link not cut. A node's link to itself is
    /// up whenever the node is connected (unless explicitly cut).
    pub fn link_up(&self, from: usize, to: usize) -> bool {
        self.check(from);
        self.check(to);
        self.connected[from] && self.connected[to] && !self.cut[from * self.n + to]
    }

    /// Decides a message's fate at send time and counts it. Randomness is
    /// drawn from `rng` in a fixed order (loss, delay, reordering), so a
    /// seed fully determines every fate.
    pub fn send(&mut self, rng: &mut Rng, from: usize, to: usize, is_reply: bool) -> Fate {
        let up = self.link_up(from, to);
        let stats = &mut self.stats.per_node[from];
        stats.sent += 1;
        if is_reply {
            stats.sent_replies += 1;
        }
        if !up {
            // With `long_delays` labrpc makes the *caller* wait up to 7 s
            // before failing; a one-way message simply never arrives.
            stats.dropped += 1;
            stats.dropped_link_down += 1;
            return Fate::Drop;
        }
        let p_drop = if is_reply { self.cfg.drop_reply } else { self.cfg.drop_request };
        if p_drop > 0.0 && rng.chance(p_drop) {
            stats.dropped += 1;
            return Fate::Drop;
        }
        let d = &self.cfg.delay;
        let mut after = if d.start < d.end { rng.range(d.clone()) } else { d.start };
        if is_reply && self.cfg.long_reordering && rng.ratio(2, 3) {
            after += REORDER_BASE + rng.below(REORDER_SPREAD);
        }
        stats.delivered += 1;
        Fate::Deliver { after }
    }

    /// Arrival-time check for a message sent with [`Fate::Deliver`]: returns
    /// whether it may be handed to `to`, counting a receipt or an in-flight
    /// loss. Equivalent to [`Network::link_up`] plus accounting.
    pub fn arrive(&mut self, from: usize, to: usize) -> bool {
        let up = self.link_up(from, to);
        if up {
            self.stats.per_node[to].received += 1;
        } else {
            self.stats.per_node[from].lost_in_flight += 1;
        }
        up
    }

    /// Message counters since creation or the last [`Network::reset_stats`].
    pub fn stats(&self) -> &NetStats {
        &self.stats
    }

    /// Zeroes all counters.
    pub fn reset_stats(&mut self) {
        self.stats.per_node.iter_mut().for_each(|s| *s = NodeStats::default());
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn fates(net: &mut Network, rng: &mut Rng, count: u64, is_reply: bool) -> Vec<Fate> {
        (0..count).map(|_| net.send(rng, 0, 1, is_reply)).collect()
    }

    #[test]
    fn reliable_delivers_everything_within_the_delay() {
        let mut net = Network::new(3, NetConfig::reliable());
        let mut rng = Rng::new(1);
        for (i, f) in fates(&mut net, &mut rng, 10_000, false).into_iter().enumerate() {
            match f {
                Fate::Deliver { after } => assert!((100 * MICRO..MILLI).contains(&after)),
                Fate::Drop => panic!("reliable net dropped message {i}"),
            }
        }
        let t = net.stats().total();
        assert_eq!((t.sent, t.delivered, t.dropped), (10_000, 10_000, 0));
    }

    #[test]
    fn unreliable_drops_about_ten_percent() {
        for is_reply in [false, true] {
            let mut net = Network::new(2, NetConfig::unreliable());
            let mut rng = Rng::new(2);
            let fs = fates(&mut net, &mut rng, 100_000, is_reply);
            let dropped = fs.iter().filter(|f| **f == Fate::Drop).count() as u64;
            assert!((9_500..=10_500).contains(&dropped), "dropped {dropped}");
            let s = net.stats().node(0);
            assert_eq!(s.dropped, dropped);
            assert_eq!(s.delivered + s.dropped, 100_000);
            assert_eq!(s.dropped_link_down, 0);
            assert!(fs.iter().all(|f| match f {
                Fate::Deliver { after } => *after < 27 * MILLI,
                Fate::Drop => true,
            }));
            // Same seed, same fates: exact replay.
            let mut net2 = Network::new(2, NetConfig::unreliable());
            assert_eq!(fs, fates(&mut net2, &mut Rng::new(2), 100_000, is_reply));
        }
    }

    #[test]
    fn cut_blocks_one_direction_only() {
        let mut net = Network::new(3, NetConfig::reliable());
        let mut rng = Rng::new(3);
        net.cut(0, 1);
        assert!(!net.link_up(0, 1));
        assert!(net.link_up(1, 0));
        assert_eq!(net.send(&mut rng, 0, 1, false), Fate::Drop);
        assert!(matches!(net.send(&mut rng, 1, 0, true), Fate::Deliver { .. }));
        assert!(net.link_up(0, 2) && net.link_up(2, 1));
        assert_eq!(net.stats().node(0).dropped_link_down, 1);
        net.heal(0, 1);
        assert!(net.link_up(0, 1));
    }

    #[test]
    fn disconnect_downs_both_directions_and_keeps_cuts() {
        let mut net = Network::new(3, NetConfig::reliable());
        net.cut(2, 0);
        net.disconnect(1);
        assert!(!net.is_connected(1));
        for other in [0, 2] {
            assert!(!net.link_up(1, other) && !net.link_up(other, 1));
        }
        assert!(!net.link_up(1, 1));
        net.connect(1);
        assert!(net.link_up(0, 1) && net.link_up(1, 0));
        assert!(!net.link_up(2, 0), "cuts survive connect");
        net.disconnect(0);
        net.heal_all();
        assert!(!net.is_connected(0), "heal_all leaves crashes alone");
        net.connect(0);
        assert!(net.link_up(2, 0));
    }

    #[test]
    fn partition_groups() {
        let mut net = Network::new(5, NetConfig::reliable());
        net.partition(&[&[0, 1], &[2, 3]]);
        let within = [(0, 1), (1, 0), (2, 3), (3, 2), (4, 4)];
        for (a, b) in within {
            assert!(net.link_up(a, b), "{a}->{b} should be up");
        }
        for a in 0..5 {
            for b in 0..5 {
                let same = a == b || within.contains(&(a, b));
                assert_eq!(net.link_up(a, b), same, "{a}->{b}");
            }
        }
        // A new partition replaces the old one.
        net.partition(&[&[0, 1, 2, 3, 4]]);
        assert!((0..5).all(|a| (0..5).all(|b| net.link_up(a, b))));
        net.partition(&[]);
        assert!(!net.link_up(0, 1) && net.link_up(0, 0));
        net.heal_all();
        assert!(net.link_up(0, 1));
    }

    #[test]
    #[should_panic(expected = "more than one group")]
    fn overlapping_groups_panic() {
        Network::new(3, NetConfig::reliable()).partition(&[&[0, 1], &[1, 2]]);
    }

    #[test]
    #[should_panic(expected = "out of range")]
    fn bad_node_panics() {
        Network::new(3, NetConfig::reliable()).cut(0, 3);
    }

    #[test]
    fn long_reordering_delays_about_two_thirds_of_replies() {
        let cfg = NetConfig::reliable().with_long_reordering();
        let mut net = Network::new(2, cfg);
        let mut rng = Rng::new(4);
        let n = 30_000;
        let long = |fs: &[Fate]| {
            fs.iter()
                .filter(|f| match f {
                    Fate::Deliver { after } => {
                        assert!(*after < MILLI + REORDER_BASE + REORDER_SPREAD);
                        *after >= REORDER_BASE
                    }
                    Fate::Drop => panic!("reliable config dropped"),
                })
                .count()
        };
        let replies = fates(&mut net, &mut rng, n, true);
        let l = long(&replies);
        assert!((19_500..=20_500).contains(&l), "{l} of {n} replies delayed");
        let requests = fates(&mut net, &mut rng, n, false);
        assert_eq!(long(&requests), 0, "requests are never reordered");
    }

    #[test]
    fn arrive_checks_the_link_again() {
        let mut net = Network::new(2, NetConfig::reliable());
        let mut rng = Rng::new(5);
        assert!(matches!(net.send(&mut rng, 0, 1, false), Fate::Deliver { .. }));
        assert!(matches!(net.send(&mut rng, 0, 1, false), Fate::Deliver { .. }));
        assert!(net.arrive(0, 1));
        net.disconnect(1);
        assert!(!net.arrive(0, 1));
        assert_eq!(net.stats().node(0).lost_in_flight, 1);
        assert_eq!(net.stats().node(1).received, 1);
        net.reset_stats();
        assert_eq!(net.stats().total(), NodeStats::default());
    }

    #[test]
    fn config_builders() {
        let c = NetConfig::unreliable().with_long_delays().with_long_reordering();
        assert!(c.long_delays && c.long_reordering);
        let mut net = Network::new(1, NetConfig::reliable());
        net.set_config(c.clone());
        assert_eq!(net.config(), &c);
        let fixed = NetConfig { delay: 5..5, ..NetConfig::reliable() };
        net.set_config(fixed);
        assert_eq!(net.send(&mut Rng::new(0), 0, 0, false), Fate::Deliver { after: 5 });
    }

    #[test]
    #[should_panic(expected = "drop_request")]
    fn bad_config_panics() {
        Network::new(1, NetConfig { drop_request: 1.5, ..NetConfig::reliable() });
    }
}
