//! The Raft state machine (RAFT-1..9, RAFT-11).
//!
//! `Raft` never touches a clock, a socket, a file or an entropy source. The
//! caller feeds it messages (`step`), time (`tick`), client commands
//! (`propose`, `read_index`) and snapshots (`compact`), then collects the
//! consequences with `ready()`, carries them out, and calls `advance()`:
//!
//! 1. send `Ready::messages` right away (the leader's replication traffic:
//!    the leader writes its own log in parallel with its followers);
//! 2. persist `snapshot`, `hard_state` and `entries`, and fsync;
//! 3. only then send `Ready::persisted_messages` (votes, acknowledgements);
//! 4. apply `apply_snapshot` and `committed` to the service, hand out
//!    `read_states` once the service has applied their index (this step may
//!    also come before 2: committed entries are durable already, so a
//!    driver can apply them while the new ones are being fsynced);
//! 5. call `advance()`; no `step`/`tick`/`propose` between `ready` and
//!    `advance`.
//!
//! This is the contract of etcd's raft `Ready`; it is what makes every fault
//! scenario a deterministic unit test.

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::log::RaftLog;
use crate::message::{
    AppendResult, Body, Entry, EntryKind, HardState, Index, Message, NodeId, Snapshot, SnapshotMeta, Term,
};
use crate::progress::{Progress, ReplicationState};

#[derive(Clone, Debug)]
pub struct Config {
    pub id: NodeId,
    /// Every voter of the group, this node included.
    pub voters: Vec<NodeId>,
    /// Minimum election timeout in ticks; each timeout is drawn from
    /// `[election_ticks, 2 * election_ticks)` so split votes resolve (RAFT-1).
    pub election_ticks: u32,
    pub heartbeat_ticks: u32,
    pub pre_vote: bool,
    pub check_quorum: bool,
    /// Appends in flight per follower before the leader waits (RAFT-11).
    pub max_inflight: usize,
    /// Soft limit on the entry bytes in one Append.
    pub max_append_bytes: usize,
    pub snapshot_chunk_bytes: usize,
    /// Seeds the election-timeout randomness; the caller owns entropy.
    pub seed: u64,
}

impl Config {
    pub fn new(id: NodeId, voters: Vec<NodeId>) -> Self {
        Config {
            id,
            voters,
            election_ticks: 10,
            heartbeat_ticks: 2,
            pre_vote: true,
            check_quorum: true,
            max_inflight: 256,
            max_append_bytes: 1 << 20,
            snapshot_chunk_bytes: 1 << 20,
            seed: id,
        }
    }

    fn validate(&self) {
        assert!(self.voters.contains(&self.id), "node {} is not among the voters", self.id);
        assert!(self.heartbeat_ticks > 0 && self.heartbeat_ticks < self.election_ticks);
        assert!(self.max_inflight > 0 && self.snapshot_chunk_bytes > 0);
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Follower,
    PreCandidate,
    Candidate,
    Leader,
}

/// A proposal or read reached a node that is not the leader.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not the leader (leader hint: {leader:?})")]
pub struct NotLeader {
    pub leader: Option<NodeId>,
}

/// A ReadIndex read may be served once the service has applied `index`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadState {
    pub ctx: u64,
    pub index: Index,
}

/// A snapshot the store must persist.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NewSnapshot {
    /// The service compacted its own log: drop stored entries up to the index.
    Compacted(Snapshot),
    /// Received from the leader: drop every stored entry; the service must
    /// also restore its state from it.
    Received(Snapshot),
}

impl NewSnapshot {
    pub fn snapshot(&self) -> &Snapshot {
        match self {
            NewSnapshot::Compacted(s) | NewSnapshot::Received(s) => s,
        }
    }
}

/// Everything the caller must do after a batch of inputs; see the module doc.
#[derive(Debug, Default)]
pub struct Ready {
    pub hard_state: Option<HardState>,
    pub snapshot: Option<NewSnapshot>,
    /// Append these; a stored entry at or after `entries[0].index` is replaced.
    pub entries: Vec<Entry>,
    pub messages: Vec<Message>,
    pub persisted_messages: Vec<Message>,
    /// With `snapshot`: every log entry after it (some may also be in
    /// `entries`), so the store can rewrite a self-contained segment.
    pub log_tail: Vec<Entry>,
    pub apply_snapshot: Option<Snapshot>,
    pub committed: Vec<Entry>,
    pub read_states: Vec<ReadState>,
}

impl Ready {
    pub fn is_empty(&self) -> bool {
        self.hard_state.is_none()
            && self.snapshot.is_none()
            && self.entries.is_empty()
            && self.messages.is_empty()
            && self.persisted_messages.is_empty()
            && self.apply_snapshot.is_none()
            && self.committed.is_empty()
            && self.read_states.is_empty()
    }
}

/// What a restarted node reads back from its store.
#[derive(Clone, Debug, Default)]
pub struct Recovered {
    pub hard_state: HardState,
    pub snapshot: Option<Snapshot>,
    pub entries: Vec<Entry>,
}

#[derive(Debug)]
struct PendingRead {
    ctx: u64,
    /// Commit index when the read arrived; None if this leader had not yet
    /// committed an entry of its own term.
    index: Option<Index>,
    /// The heartbeat round that confirms it; 0 until that round is sent.
    seq: u64,
}

/// A snapshot being received chunk by chunk.
#[derive(Debug)]
struct IncomingSnapshot {
    meta: SnapshotMeta,
    data: Vec<u8>,
}

#[derive(Debug)]
pub struct Raft {
    cfg: Config,
    term: Term,
    vote: Option<NodeId>,
    role: Role,
    leader: Option<NodeId>,
    log: RaftLog,
    /// The latest snapshot, kept to send to followers that fell behind.
    snapshot: Snapshot,
    commit: Index,
    /// Highest index handed to the service.
    applied: Index,
    /// Highest index that is durable in the store.
    stable: Index,
    /// First log index not yet handed to the store.
    unstable_from: Index,

    election_elapsed: u32,
    heartbeat_elapsed: u32,
    randomized_timeout: u32,
    rng: u64,

    /// Votes in the current term for our own candidacy. Kept when a candidate
    /// times out into pre-vote at the same term: a late majority still wins.
    votes: BTreeMap<NodeId, bool>,
    /// Pre-votes for `term + 1`, kept across pre-vote retries so that replies
    /// delayed past one election timeout still count.
    pre_votes: BTreeMap<NodeId, bool>,
    /// This term's candidacy already re-asked its silent voters once.
    vote_retried: bool,
    progress: BTreeMap<NodeId, Progress>,
    /// New entries wait here for one batched broadcast in `ready()`.
    broadcast_pending: bool,
    read_seq: u64,
    reads: Vec<PendingRead>,
    incoming_snapshot: Option<IncomingSnapshot>,

    // Outputs accumulated for the next `ready()`.
    msgs: Vec<Message>,
    persisted_msgs: Vec<Message>,
    hard_state_saved: HardState,
    new_snapshot: Option<NewSnapshot>,
    apply_snapshot: Option<Snapshot>,
    read_states: Vec<ReadState>,
    /// Set by `ready()`, consumed by `advance()`.
    in_ready: Option<Index>,
}

impl Raft {
    /// Starts (or restarts) a node from what its store recovered.
    pub fn new(cfg: Config, recovered: Recovered) -> Self {
        cfg.validate();
        let snapshot = recovered.snapshot.unwrap_or_default();
        let log = RaftLog::new(snapshot.meta, recovered.entries);
        let last = log.last_index();
        let mut raft = Raft {
            term: recovered.hard_state.term,
            vote: recovered.hard_state.vote,
            role: Role::Follower,
            leader: None,
            commit: snapshot.meta.index,
            applied: snapshot.meta.index,
            stable: last,
            unstable_from: last + 1,
            log,
            snapshot,
            election_elapsed: 0,
            heartbeat_elapsed: 0,
            randomized_timeout: 0,
            rng: cfg.seed ^ 0x9E37_79B9_7F4A_7C15,
            votes: BTreeMap::new(),
            pre_votes: BTreeMap::new(),
            vote_retried: false,
            progress: BTreeMap::new(),
            broadcast_pending: false,
            read_seq: 0,
            reads: Vec::new(),
            incoming_snapshot: None,
            msgs: Vec::new(),
            persisted_msgs: Vec::new(),
            hard_state_saved: recovered.hard_state,
            new_snapshot: None,
            apply_snapshot: None,
            read_states: Vec::new(),
            in_ready: None,
            cfg,
        };
        raft.reset_election_timer();
        raft
    }

    // ----- observers -----------------------------------------------------

    pub fn id(&self) -> NodeId {
        self.cfg.id
    }
    pub fn term(&self) -> Term {
        self.term
    }
    pub fn vote(&self) -> Option<NodeId> {
        self.vote
    }
    pub fn role(&self) -> Role {
        self.role
    }
    pub fn is_leader(&self) -> bool {
        self.role == Role::Leader
    }
    /// The leader as far as this node knows.
    pub fn leader(&self) -> Option<NodeId> {
        self.leader
    }
    pub fn commit_index(&self) -> Index {
        self.commit
    }
    pub fn applied_index(&self) -> Index {
        self.applied
    }
    pub fn log(&self) -> &RaftLog {
        &self.log
    }
    /// The latest snapshot (empty data before the first).
    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }
    pub fn config(&self) -> &Config {
        &self.cfg
    }
    /// Bytes of log held in memory since the last snapshot, for the
    /// service's "snapshot when the state grows past N" policy (KV-3).
    pub fn log_bytes(&self) -> usize {
        self.log.bytes()
    }

    // ----- inputs --------------------------------------------------------

    /// One unit of time. The caller decides how long a tick is.
    pub fn tick(&mut self) {
        self.assert_not_in_ready();
        self.election_elapsed += 1;
        if self.role == Role::Leader {
            self.heartbeat_elapsed += 1;
            if self.election_elapsed >= self.cfg.election_ticks {
                self.election_elapsed = 0;
                if self.cfg.check_quorum && !self.quorum_recently_active() {
                    tracing::info!(
                        id = self.cfg.id,
                        term = self.term,
                        "lost contact with a majority; stepping down"
                    );
                    self.become_follower(self.term, None);
                    return;
                }
            }
            if self.heartbeat_elapsed >= self.cfg.heartbeat_ticks {
                self.heartbeat_elapsed = 0;
                self.broadcast_heartbeat(true);
            }
        } else if self.election_elapsed >= self.randomized_timeout {
            if self.role == Role::Candidate && !self.vote_retried {
                // Before giving up on this term, ask the silent voters once
                // more: replies may just be slow, and a new term would throw
                // away the votes already won.
                self.vote_retried = true;
                self.reset_election_timer();
                self.request_votes(false);
            } else if self.cfg.pre_vote {
                self.pre_campaign();
            } else {
                self.campaign();
            }
        }
    }

    /// Appends a command to the leader's log. Returns where it will commit if
    /// this leader keeps its job (6.824's `Start`).
    pub fn propose(&mut self, data: Bytes) -> Result<(Index, Term), NotLeader> {
        self.assert_not_in_ready();
        if self.role != Role::Leader {
            return Err(NotLeader { leader: self.leader });
        }
        let index = self.log.last_index() + 1;
        self.log.push(Entry { term: self.term, index, kind: EntryKind::Normal, data });
        self.broadcast_pending = true;
        Ok((index, self.term))
    }

    /// Asks for a linearizable read point (RAFT-9): once a majority confirms
    /// this node is still leader, a `ReadState { ctx, index }` comes out of
    /// `ready()`, and the read may be served once `index` is applied.
    pub fn read_index(&mut self, ctx: u64) -> Result<(), NotLeader> {
        self.assert_not_in_ready();
        if self.role != Role::Leader {
            return Err(NotLeader { leader: self.leader });
        }
        let index = (self.log.term(self.commit) == Some(self.term)).then_some(self.commit);
        self.reads.push(PendingRead { ctx, index, seq: 0 });
        self.release_reads();
        Ok(())
    }

    /// The service took a snapshot of its state through `index` (<= applied):
    /// the log up to there is no longer needed (RAFT-6).
    pub fn compact(&mut self, index: Index, data: Bytes) {
        self.assert_not_in_ready();
        assert!(index <= self.applied, "snapshot at {index} beyond applied {}", self.applied);
        if index <= self.log.snapshot_meta().index {
            return;
        }
        self.log.compact_to(index);
        self.snapshot = Snapshot { meta: self.log.snapshot_meta(), data };
        self.new_snapshot = Some(NewSnapshot::Compacted(self.snapshot.clone()));
    }

    pub fn step(&mut self, m: Message) {
        self.assert_not_in_ready();
        assert_eq!(m.to, self.cfg.id, "message delivered to the wrong node");
        if !self.cfg.voters.contains(&m.from) || m.from == self.cfg.id {
            tracing::warn!(id = self.cfg.id, from = m.from, "message from a non-member; dropped");
            return;
        }
        if let Err(e) = m.validate() {
            tracing::warn!(id = self.cfg.id, from = m.from, "malformed {}: {e}; dropped", m.body.kind());
            return;
        }
        if m.term > self.term {
            let vote_request = matches!(m.body, Body::PreVote { .. } | Body::RequestVote { .. });
            if vote_request && self.in_leader_lease() {
                // Check-quorum: we heard from a leader within the election
                // timeout, so this candidate is the disruptive one.
                return;
            }
            match m.body {
                Body::PreVote { .. } => {}
                Body::PreVoteResponse { granted: true } => {}
                Body::Append { .. } | Body::Heartbeat { .. } | Body::InstallSnapshot { .. } => {
                    self.become_follower(m.term, Some(m.from))
                }
                _ => self.become_follower(m.term, None),
            }
        } else if m.term < self.term {
            match m.body {
                // A stale leader must learn it was deposed, or it would keep
                // sending forever (pre-vote stops it from ever catching up).
                Body::Append { .. } | Body::Heartbeat { .. } => {
                    self.send_after_persist(m.from, Body::HeartbeatResponse { read_seq: 0 })
                }
                Body::PreVote { .. } => {
                    self.send_after_persist(m.from, Body::PreVoteResponse { granted: false })
                }
                _ => {}
            }
            return;
        }

        match m.body {
            Body::PreVote { last_index, last_term } => {
                let granted = m.term > self.term && self.log.is_up_to_date(last_index, last_term);
                let term = if granted { m.term } else { self.term };
                self.persisted_msgs.push(Message {
                    from: self.cfg.id,
                    to: m.from,
                    term,
                    body: Body::PreVoteResponse { granted },
                });
            }
            Body::RequestVote { last_index, last_term } => {
                let can_vote = self.vote == Some(m.from) || (self.vote.is_none() && self.leader.is_none());
                let granted = can_vote && self.log.is_up_to_date(last_index, last_term);
                if granted {
                    self.vote = Some(m.from);
                    self.election_elapsed = 0;
                }
                self.send_after_persist(m.from, Body::RequestVoteResponse { granted });
            }
            Body::PreVoteResponse { granted } => {
                if self.role == Role::PreCandidate && (!granted || m.term == self.term + 1) {
                    self.record_pre_vote(m.from, granted);
                }
            }
            Body::RequestVoteResponse { granted } => {
                let campaigning = matches!(self.role, Role::Candidate | Role::PreCandidate);
                if campaigning && self.vote == Some(self.cfg.id) {
                    self.record_vote(m.from, granted);
                }
            }
            Body::Append { prev_index, prev_term, entries, commit } => {
                self.follow(m.from);
                self.handle_append(m.from, prev_index, prev_term, entries, commit);
            }
            Body::Heartbeat { commit, read_seq } => {
                self.follow(m.from);
                self.commit_to(commit.min(self.log.last_index()));
                self.send_after_persist(m.from, Body::HeartbeatResponse { read_seq });
            }
            Body::InstallSnapshot { meta, offset, total, chunk } => {
                self.follow(m.from);
                self.handle_snapshot_chunk(m.from, meta, offset, total, chunk);
            }
            Body::AppendResponse(result) => {
                if self.role == Role::Leader {
                    self.handle_append_response(m.from, result);
                }
            }
            Body::HeartbeatResponse { read_seq } => {
                if self.role == Role::Leader {
                    self.handle_heartbeat_response(m.from, read_seq);
                }
            }
            Body::InstallSnapshotResponse { index, next_offset, done } => {
                if self.role == Role::Leader {
                    self.handle_snapshot_response(m.from, index, next_offset, done);
                }
            }
        }
    }

    // ----- the Ready contract ---------------------------------------------

    pub fn has_ready(&self) -> bool {
        self.broadcast_pending
            || !self.msgs.is_empty()
            || !self.persisted_msgs.is_empty()
            || self.hard_state() != self.hard_state_saved
            || self.new_snapshot.is_some()
            || self.apply_snapshot.is_some()
            || self.unstable_from <= self.log.last_index()
            || self.applied < self.commit.min(self.stable)
            || !self.read_states.is_empty()
            || self.reads.iter().any(|r| r.seq == 0)
    }

    pub fn ready(&mut self) -> Ready {
        self.assert_not_in_ready();
        if self.broadcast_pending {
            self.broadcast_pending = false;
            if self.role == Role::Leader {
                for id in self.peers() {
                    self.send_append(id, false);
                }
            }
        }
        if self.role == Role::Leader && self.reads.iter().any(|r| r.seq == 0) {
            // One heartbeat round confirms every read that arrived since the last.
            self.broadcast_heartbeat(false);
        }

        let hs = self.hard_state();
        let hard_state = (hs != self.hard_state_saved).then(|| {
            self.hard_state_saved = hs;
            hs
        });
        let last = self.log.last_index();
        let entries = if self.unstable_from <= last {
            self.log.slice(self.unstable_from, last + 1, usize::MAX)
        } else {
            Vec::new()
        };
        self.unstable_from = last + 1;

        let apply_snapshot = self.apply_snapshot.take();
        if let Some(s) = &apply_snapshot {
            self.applied = self.applied.max(s.meta.index);
        }
        // Only durable entries are applied: a follower may learn a commit
        // index before its own copy of those entries is on disk.
        let apply_to = self.commit.min(self.stable);
        let committed = if self.applied < apply_to {
            let c = self.log.slice(self.applied + 1, apply_to + 1, usize::MAX);
            assert_eq!(c.len() as Index, apply_to - self.applied, "committed entries missing from the log");
            self.applied = apply_to;
            c
        } else {
            Vec::new()
        };
        self.in_ready = Some(last);
        let snapshot = self.new_snapshot.take();
        let log_tail = match snapshot {
            Some(_) => self.log.slice(self.log.first_index(), last + 1, usize::MAX),
            None => Vec::new(),
        };
        Ready {
            hard_state,
            snapshot,
            log_tail,
            entries,
            messages: std::mem::take(&mut self.msgs),
            persisted_messages: std::mem::take(&mut self.persisted_msgs),
            apply_snapshot,
            committed,
            read_states: std::mem::take(&mut self.read_states),
        }
    }

    /// The last `ready()` has been carried out: its entries are durable.
    pub fn advance(&mut self) {
        let last = self.in_ready.take().expect("advance() without ready()");
        self.stable = self.stable.max(last).min(self.log.last_index());
        if self.role == Role::Leader {
            self.maybe_commit();
        }
    }

    // ----- elections -------------------------------------------------------

    fn pre_campaign(&mut self) {
        tracing::debug!(id = self.cfg.id, term = self.term, "election timeout; pre-vote");
        self.role = Role::PreCandidate;
        self.leader = None;
        self.reset_election_timer();
        self.record_pre_vote(self.cfg.id, true);
        if self.role != Role::PreCandidate {
            return;
        }
        let (last_index, last_term) = (self.log.last_index(), self.log.last_term());
        for id in self.peers() {
            self.persisted_msgs.push(Message {
                from: self.cfg.id,
                to: id,
                term: self.term + 1,
                body: Body::PreVote { last_index, last_term },
            });
        }
    }

    fn campaign(&mut self) {
        self.term += 1;
        self.vote = Some(self.cfg.id);
        self.role = Role::Candidate;
        self.leader = None;
        self.votes.clear();
        self.pre_votes.clear();
        self.reset_election_timer();
        tracing::debug!(id = self.cfg.id, term = self.term, "campaigning");
        self.vote_retried = false;
        self.record_vote(self.cfg.id, true);
        if self.role != Role::Candidate {
            return;
        }
        self.request_votes(true);
    }

    /// Sends RequestVote for the current term to every peer (`all`) or to
    /// those that have not answered yet.
    fn request_votes(&mut self, all: bool) {
        let (last_index, last_term) = (self.log.last_index(), self.log.last_term());
        for id in self.peers() {
            if all || !self.votes.contains_key(&id) {
                // After persist: our vote for ourselves must be durable first.
                self.send_after_persist(id, Body::RequestVote { last_index, last_term });
            }
        }
    }

    fn record_pre_vote(&mut self, from: NodeId, granted: bool) {
        self.pre_votes.insert(from, granted);
        match tally(&self.pre_votes, self.quorum()) {
            Some(true) => self.campaign(),
            Some(false) => self.become_follower(self.term, None),
            None => {}
        }
    }

    fn record_vote(&mut self, from: NodeId, granted: bool) {
        self.votes.entry(from).or_insert(granted);
        match tally(&self.votes, self.quorum()) {
            Some(true) => self.become_leader(),
            Some(false) if self.role == Role::Candidate => self.become_follower(self.term, None),
            _ => {}
        }
    }

    fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        assert!(term >= self.term);
        if term > self.term {
            self.term = term;
            self.vote = None;
            self.votes.clear();
            self.pre_votes.clear();
        }
        if self.role == Role::Leader {
            tracing::info!(id = self.cfg.id, term, "stepping down");
        }
        self.role = Role::Follower;
        self.leader = leader;
        self.progress.clear();
        self.reads.clear();
        self.broadcast_pending = false;
        self.reset_election_timer();
    }

    fn become_leader(&mut self) {
        assert!(matches!(self.role, Role::Candidate | Role::PreCandidate));
        assert_eq!(self.vote, Some(self.cfg.id), "leading a term we did not vote ourselves in");
        tracing::info!(id = self.cfg.id, term = self.term, "became leader");
        self.role = Role::Leader;
        self.leader = Some(self.cfg.id);
        self.heartbeat_elapsed = 0;
        self.election_elapsed = 0;
        let next = self.log.last_index() + 1;
        self.progress = self.peers().into_iter().map(|id| (id, Progress::new(next))).collect();
        // A no-op of our own term lets us commit what earlier leaders left.
        self.log.push(Entry { term: self.term, index: next, kind: EntryKind::Noop, data: Bytes::new() });
        self.broadcast_pending = true;
    }

    /// Accepts `leader` as the leader of our (already equal) term.
    fn follow(&mut self, leader: NodeId) {
        if self.role != Role::Follower {
            self.become_follower(self.term, Some(leader));
        }
        self.leader = Some(leader);
        self.pre_votes.clear();
        self.election_elapsed = 0;
    }

    fn in_leader_lease(&self) -> bool {
        self.cfg.check_quorum && self.leader.is_some() && self.election_elapsed < self.cfg.election_ticks
    }

    fn quorum_recently_active(&mut self) -> bool {
        let active = 1 + self.progress.values().filter(|p| p.recent_active).count();
        for p in self.progress.values_mut() {
            p.recent_active = false;
        }
        active >= self.quorum()
    }

    fn reset_election_timer(&mut self) {
        self.election_elapsed = 0;
        let spread = self.cfg.election_ticks as u64;
        self.randomized_timeout = self.cfg.election_ticks + (self.next_random() % spread) as u32;
    }

    /// splitmix64: the randomness is seeded by the caller through `Config::seed`.
    fn next_random(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    // ----- follower side of replication -------------------------------------

    fn handle_append(
        &mut self,
        from: NodeId,
        prev_index: Index,
        prev_term: Term,
        entries: Vec<Entry>,
        leader_commit: Index,
    ) {
        if prev_index < self.commit {
            // Everything through our commit index matches every leader's log.
            // Skip what we already hold and take the rest.
            let skip = (self.commit - prev_index) as usize;
            if entries.len() <= skip {
                let match_index = self.commit;
                self.send_after_persist(from, Body::AppendResponse(AppendResult::Accepted { match_index }));
                return;
            }
            let commit = self.commit;
            let prev_term = self.log.term(commit).expect("commit index within the log");
            let rest = entries[skip..].to_vec();
            return self.handle_append(from, commit, prev_term, rest, leader_commit);
        }
        match self.log.term(prev_index) {
            None => {
                assert!(prev_index > self.log.last_index(), "prev {prev_index} compacted but above commit");
                let conflict_index = self.log.last_index() + 1;
                self.reject(from, prev_index, conflict_index, None);
            }
            Some(t) if t != prev_term => {
                let conflict_index = self.log.first_index_of_term_at(prev_index).max(self.commit + 1);
                self.reject(from, prev_index, conflict_index, Some(t));
            }
            Some(_) => {
                let last_new = prev_index + entries.len() as Index;
                for e in entries {
                    match self.log.term(e.index) {
                        Some(t) if t == e.term => continue,
                        Some(_) => {
                            assert!(e.index > self.commit, "leader overwrites committed entry {}", e.index);
                            self.log.truncate_from(e.index);
                            self.unstable_from = self.unstable_from.min(e.index);
                            self.stable = self.stable.min(e.index - 1);
                        }
                        None => {}
                    }
                    self.log.push(e);
                }
                self.commit_to(leader_commit.min(last_new));
                self.send_after_persist(
                    from,
                    Body::AppendResponse(AppendResult::Accepted { match_index: last_new }),
                );
            }
        }
    }

    fn reject(&mut self, to: NodeId, rejected: Index, conflict_index: Index, conflict_term: Option<Term>) {
        self.send_after_persist(
            to,
            Body::AppendResponse(AppendResult::Rejected { rejected, conflict_index, conflict_term }),
        );
    }

    fn handle_snapshot_chunk(
        &mut self,
        from: NodeId,
        meta: SnapshotMeta,
        offset: u64,
        total: u64,
        chunk: Bytes,
    ) {
        let done = |r: &mut Self| {
            r.send_after_persist(
                from,
                Body::InstallSnapshotResponse { index: meta.index, next_offset: total, done: true },
            )
        };
        if meta.index <= self.commit {
            return done(self);
        }
        if self.log.term(meta.index) == Some(meta.term) {
            // We already hold the entries the snapshot covers.
            self.commit_to(meta.index);
            return done(self);
        }
        if offset == 0 {
            self.incoming_snapshot =
                Some(IncomingSnapshot { meta, data: Vec::with_capacity(total.min(1 << 30) as usize) });
        }
        let next_offset = match &mut self.incoming_snapshot {
            Some(inc) if inc.meta == meta && inc.data.len() as u64 == offset => {
                inc.data.extend_from_slice(&chunk);
                inc.data.len() as u64
            }
            Some(inc) if inc.meta == meta => inc.data.len() as u64,
            _ => 0,
        };
        if next_offset < total {
            return self.send_after_persist(
                from,
                Body::InstallSnapshotResponse { index: meta.index, next_offset, done: false },
            );
        }
        let inc = self.incoming_snapshot.take().expect("a complete incoming snapshot");
        tracing::info!(id = self.cfg.id, index = meta.index, "installing snapshot from leader");
        let snapshot = Snapshot { meta, data: Bytes::from(inc.data) };
        self.log.reset(meta);
        self.commit = meta.index;
        self.unstable_from = meta.index + 1;
        self.stable = meta.index;
        self.snapshot = snapshot.clone();
        self.new_snapshot = Some(NewSnapshot::Received(snapshot.clone()));
        self.apply_snapshot = Some(snapshot);
        done(self);
    }

    fn commit_to(&mut self, index: Index) {
        if index > self.commit {
            assert!(index <= self.log.last_index(), "commit {index} beyond the log");
            self.commit = index;
        }
    }

    // ----- leader side of replication --------------------------------------

    fn handle_append_response(&mut self, from: NodeId, result: AppendResult) {
        let last = self.log.last_index();
        let Some(pr) = self.progress.get_mut(&from) else { return };
        pr.recent_active = true;
        pr.heard_since_heartbeat = true;
        match result {
            AppendResult::Accepted { match_index } => {
                let advanced = pr.ack(match_index);
                match pr.state {
                    ReplicationState::Probe => pr.become_replicate(),
                    ReplicationState::Snapshot { index, .. } if pr.match_index >= index => {
                        pr.become_replicate()
                    }
                    _ => {}
                }
                let sending_snapshot = matches!(pr.state, ReplicationState::Snapshot { .. });
                if advanced {
                    self.maybe_commit();
                }
                // While a snapshot is on its way, late acks of old Appends
                // must not trigger sends: the snapshot's own acks pace it.
                if match_index < last && !sending_snapshot {
                    self.send_append(from, false);
                }
            }
            AppendResult::Rejected { rejected, conflict_index, conflict_term } => {
                let stale = match pr.state {
                    ReplicationState::Replicate => rejected <= pr.match_index,
                    ReplicationState::Probe => rejected + 1 != pr.next_index,
                    ReplicationState::Snapshot { .. } => true,
                };
                if stale {
                    return;
                }
                let hint = match conflict_term.and_then(|t| self.log.last_index_of_term(t)) {
                    Some(i) => i + 1,
                    None => conflict_index,
                };
                pr.become_probe();
                pr.next_index = hint.min(rejected).max(pr.match_index + 1);
                self.send_append(from, true);
            }
        }
    }

    fn handle_heartbeat_response(&mut self, from: NodeId, read_seq: u64) {
        let last = self.log.last_index();
        let Some(pr) = self.progress.get_mut(&from) else { return };
        pr.recent_active = true;
        pr.read_ack = pr.read_ack.max(read_seq);
        if pr.match_index < last && pr.state == ReplicationState::Probe {
            // The probe may have been lost: try again, at most once per heartbeat.
            pr.probe_sent = false;
            self.send_append(from, true);
        }
        self.release_reads();
    }

    fn handle_snapshot_response(&mut self, from: NodeId, index: Index, next_offset: u64, done: bool) {
        let Some(pr) = self.progress.get_mut(&from) else { return };
        pr.recent_active = true;
        pr.heard_since_heartbeat = true;
        if done {
            pr.ack(index);
            // Only the transfer in progress moves on; a duplicate "done"
            // (the follower answers every resent chunk) changes nothing.
            let finished =
                matches!(pr.state, ReplicationState::Snapshot { index: sent, .. } if sent <= index);
            if finished {
                pr.become_probe();
            }
            self.maybe_commit();
            if finished {
                self.send_append(from, true);
            }
        } else if let ReplicationState::Snapshot { index: sent, offset } = pr.state {
            if sent == index && next_offset != offset {
                pr.state = ReplicationState::Snapshot { index, offset: next_offset };
                self.send_append(from, true);
            }
        }
    }

    /// Sends what `to` needs next, if the flow-control state allows it.
    /// `allow_empty` sends a bare consistency probe when there is nothing new.
    fn send_append(&mut self, to: NodeId, allow_empty: bool) {
        let snapshot_index = self.log.snapshot_meta().index;
        let last = self.log.last_index();
        let pr = self.progress.get_mut(&to).expect("progress for every peer");
        match pr.state {
            ReplicationState::Snapshot { .. } => return self.send_snapshot_chunk(to),
            ReplicationState::Probe if pr.probe_sent => return,
            ReplicationState::Replicate if pr.inflight.len() >= self.cfg.max_inflight => return,
            _ => {}
        }
        let prev_index = pr.next_index - 1;
        if prev_index < snapshot_index {
            pr.state = ReplicationState::Snapshot { index: snapshot_index, offset: 0 };
            pr.inflight.clear();
            return self.send_snapshot_chunk(to);
        }
        let prev_term = self.log.term(prev_index).expect("prev index within the log");
        let entries = self.log.slice(pr.next_index, last + 1, self.cfg.max_append_bytes);
        if entries.is_empty() && !allow_empty {
            return;
        }
        match pr.state {
            ReplicationState::Replicate => {
                if let Some(e) = entries.last() {
                    pr.next_index = e.index + 1;
                    pr.inflight.push_back(e.index);
                }
            }
            _ => pr.probe_sent = true,
        }
        let more = pr.state == ReplicationState::Replicate && pr.next_index <= last;
        let commit = self.commit;
        self.send(to, Body::Append { prev_index, prev_term, entries, commit });
        if more {
            self.send_append(to, false);
        }
    }

    fn send_snapshot_chunk(&mut self, to: NodeId) {
        let pr = self.progress.get_mut(&to).expect("progress for every peer");
        let ReplicationState::Snapshot { index, offset } = pr.state else {
            unreachable!("sending a snapshot chunk in {:?}", pr.state)
        };
        if index != self.snapshot.meta.index {
            // We compacted again meanwhile: start over with the newer snapshot.
            pr.state = ReplicationState::Snapshot { index: self.snapshot.meta.index, offset: 0 };
            return self.send_snapshot_chunk(to);
        }
        let total = self.snapshot.data.len() as u64;
        let start = offset.min(total) as usize;
        let end = (start + self.cfg.snapshot_chunk_bytes).min(total as usize);
        let body = Body::InstallSnapshot {
            meta: self.snapshot.meta,
            offset: start as u64,
            total,
            chunk: self.snapshot.data.slice(start..end),
        };
        self.send(to, body);
    }

    /// Heartbeats every follower. On the periodic tick (`on_tick`) it also
    /// resends to followers whose replication stalled; heartbeats sent early
    /// to confirm reads leave that to the tick, or every read would trigger
    /// a resend.
    fn broadcast_heartbeat(&mut self, on_tick: bool) {
        if self.reads.iter().any(|r| r.seq == 0) {
            self.read_seq += 1;
            let seq = self.read_seq;
            for r in self.reads.iter_mut().filter(|r| r.seq == 0) {
                r.seq = seq;
            }
        }
        for id in self.peers() {
            let pr = self.progress.get_mut(&id).expect("progress for every peer");
            let commit = self.commit.min(pr.match_index);
            let now = match pr.state {
                ReplicationState::Snapshot { offset, .. } => (pr.match_index, offset),
                _ => (pr.match_index, 0),
            };
            let stalled = on_tick && now == pr.progress_at_heartbeat && !pr.heard_since_heartbeat;
            if on_tick {
                pr.progress_at_heartbeat = now;
                pr.heard_since_heartbeat = false;
            }
            let behind = pr.match_index < self.log.last_index();
            let read_seq = self.read_seq;
            self.send(id, Body::Heartbeat { commit, read_seq });
            if behind && stalled {
                // Lost messages can stall a pipeline or a snapshot transfer:
                // with no progress for a heartbeat interval, resend.
                let pr = self.progress.get_mut(&id).expect("progress for every peer");
                match pr.state {
                    ReplicationState::Replicate if !pr.inflight.is_empty() => pr.become_probe(),
                    ReplicationState::Probe => pr.probe_sent = false,
                    _ => {}
                }
                self.send_append(id, true);
            }
        }
    }

    /// Commits the highest index a majority holds, if it is of our term (RAFT-3, Figure 8).
    fn maybe_commit(&mut self) {
        let mut matched: Vec<Index> = self.progress.values().map(|p| p.match_index).collect();
        matched.push(self.stable);
        matched.sort_unstable_by(|a, b| b.cmp(a));
        let candidate = matched[self.quorum() - 1];
        if candidate > self.commit && self.log.term(candidate) == Some(self.term) {
            self.commit = candidate;
            self.release_reads();
        }
    }

    /// Hands out reads whose heartbeat round a majority acknowledged, once
    /// this leader has committed an entry of its own term.
    fn release_reads(&mut self) {
        if self.role != Role::Leader || self.log.term(self.commit) != Some(self.term) {
            return;
        }
        let mut acks: Vec<u64> = self.progress.values().map(|p| p.read_ack).collect();
        acks.push(self.read_seq);
        acks.sort_unstable_by(|a, b| b.cmp(a));
        let confirmed = acks[self.quorum() - 1];
        let single = self.cfg.voters.len() == 1;
        let commit = self.commit;
        let mut i = 0;
        while i < self.reads.len() {
            let r = &mut self.reads[i];
            // A read that arrived before this leader's first commit reads at
            // that commit: only then is every earlier leader's commit known.
            let index = *r.index.get_or_insert(commit);
            if single || (r.seq != 0 && r.seq <= confirmed) {
                let ctx = r.ctx;
                self.reads.remove(i);
                self.read_states.push(ReadState { ctx, index });
            } else {
                i += 1;
            }
        }
    }

    // ----- helpers ----------------------------------------------------------

    fn hard_state(&self) -> HardState {
        HardState { term: self.term, vote: self.vote }
    }

    fn quorum(&self) -> usize {
        self.cfg.voters.len() / 2 + 1
    }

    fn peers(&self) -> Vec<NodeId> {
        self.cfg.voters.iter().copied().filter(|&id| id != self.cfg.id).collect()
    }

    /// Leader replication traffic: safe to send before our own fsync.
    fn send(&mut self, to: NodeId, body: Body) {
        self.msgs.push(Message { from: self.cfg.id, to, term: self.term, body });
    }

    /// Anything that reveals state we just changed waits for it to be durable.
    fn send_after_persist(&mut self, to: NodeId, body: Body) {
        self.persisted_msgs.push(Message { from: self.cfg.id, to, term: self.term, body });
    }

    fn assert_not_in_ready(&self) {
        assert!(self.in_ready.is_none(), "Raft used between ready() and advance()");
    }
}

/// Some(true) once a majority granted, Some(false) once a majority refused.
fn tally(votes: &BTreeMap<NodeId, bool>, quorum: usize) -> Option<bool> {
    let yes = votes.values().filter(|&&g| g).count();
    if yes >= quorum {
        Some(true)
    } else if votes.len() - yes >= quorum {
        Some(false)
    } else {
        None
    }
}
