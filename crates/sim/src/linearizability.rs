//! A linearizability checker for recorded histories, after Porcupine.
//!
//! A *history* is what clients saw: for every operation, its input, the
//! output it got back (or none, if the client never learned the outcome) and
//! the times it was called and returned, all read from one monotonic clock.
//! The history is *linearizable* if every operation can be given a single
//! instant inside its own `[call, ret]` interval such that executing the
//! operations one at a time, in the order of those instants, against a
//! sequential [`Model`] produces exactly the recorded outputs.
//!
//! # Method
//!
//! - **P-compositionality.** A model may split the history into independent
//!   partitions ([`Model::partition`]; per key, for a key/value store); the
//!   history is linearizable iff every partition is. Partitions are checked
//!   separately, on all available cores.
//! - **Wing–Gong search with Lowe's improvements.** The call and return
//!   events of a partition are sorted by time into a doubly linked list. The
//!   search repeatedly picks an operation whose call is before the first
//!   remaining return (any such operation may go next in real time), applies
//!   it to the model, and removes its two events from the list (in O(1),
//!   restorable in O(1) when backtracking). Reaching a return event means the
//!   operation returning there should already have taken effect: backtrack.
//! - **Memoization.** Each configuration reached — the *set* of linearized
//!   operations (a bitset) together with the model state — is remembered; a
//!   configuration seen before cannot lead anywhere new, so it is pruned.
//!   This turns the factorial search into one bounded by the number of
//!   distinct configurations, which for real histories is small.
//! - **Time limit.** The search is exponential in the worst case, so it runs
//!   under a deadline. When the deadline passes, the answer is
//!   [`CheckResult::Unknown`]; it is never `Ok` unless the search finished.
//!
//! # Operations with unknown outcome
//!
//! An operation whose client timed out has `output: None` and
//! `ret: u64::MAX` (see [`Operation::unknown`]). It may have taken effect at
//! any instant after its call, or never. The checker treats it as optional:
//! it may be linearized anywhere after its call, with any output (the model
//! sees `output: None`), or left out entirely. Any operation with
//! `output: None` is treated this way, whatever its `ret`: a client that never
//! learned the outcome cannot know the operation was over by then.
//!
//! Optional operations get two extra prunings, both sound: a configuration
//! is also pruned when one with the same required operations and state but
//! a *subset* of its optional operations was seen (it had every choice this
//! one has, and more); and right after an optional operation, an operation
//! that leaves the same state as it would have without it (a blind write
//! such as a put) is not tried there, since the sibling configuration
//! without the optional operation covers it.
//!
//! # Cost
//!
//! Linearizable histories of real runs check in milliseconds (the search
//! rarely backtracks far), as do most illegal ones. The expensive case is an
//! *illegal* history with many unknown-outcome writes pending at once on one
//! partition: refuting it means ruling out every choice of which of them
//! took effect, which grows quickly; the time limit then answers
//! [`CheckResult::Unknown`].
//!
//! # Equal timestamps
//!
//! A call and a return at the same instant are treated as concurrent (calls
//! sort before returns), which can only make the checker more permissive: a
//! coarse clock never produces a false "illegal".

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::rng::splitmix64;

/// One operation of a recorded history.
///
/// Times are nanoseconds from one monotonic clock shared by all clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation<I, O> {
    /// The client that issued it (for the report only; the checker relies on
    /// real time alone).
    pub client: u64,
    /// What was asked.
    pub input: I,
    /// What came back; `None` if the client never learned the outcome.
    pub output: Option<O>,
    /// When the client sent it.
    pub call: u64,
    /// When the client received the answer; `u64::MAX` if it never did.
    pub ret: u64,
}

impl<I, O> Operation<I, O> {
    /// An operation that completed with `output`.
    pub fn new(client: u64, input: I, output: O, call: u64, ret: u64) -> Self {
        Operation { client, input, output: Some(output), call, ret }
    }

    /// An operation whose outcome the client never learned (it timed out):
    /// it may take effect at any point after `call`, or never.
    pub fn unknown(client: u64, input: I, call: u64) -> Self {
        Operation { client, input, output: None, call, ret: u64::MAX }
    }

    /// Whether the client never learned the outcome (the operation is then
    /// optional for the checker).
    pub fn is_unknown(&self) -> bool {
        self.output.is_none() || self.ret == u64::MAX
    }
}

/// A sequential specification of the system under test.
///
/// `step` must be a pure function of its arguments.
pub trait Model {
    /// The model's state. Equal states must behave identically: the checker
    /// prunes a configuration whose (linearized set, state) it has seen.
    type State: Clone + Eq + Hash + fmt::Debug;
    /// An operation's input.
    type Input: fmt::Debug;
    /// An operation's output.
    type Output: fmt::Debug;

    /// The state before any operation.
    fn init(&self) -> Self::State;

    /// Applies `input` in `state`. Returns the new state if the operation
    /// can produce `output` there, or `None` if it cannot (so it cannot be
    /// linearized at this point). `output: None` means the client never
    /// learned the outcome: any outcome is allowed, and the returned state is
    /// the one the operation leaves if it did take effect.
    fn step(
        &self,
        state: &Self::State,
        input: &Self::Input,
        output: Option<&Self::Output>,
    ) -> Option<Self::State>;

    /// Splits the history into independent partitions (lists of indices
    /// into `history`) that are checked separately; the history is
    /// linearizable iff every partition is (P-compositionality). The default
    /// is one partition holding everything. Indices not in any partition are
    /// not checked.
    fn partition(&self, history: &[Operation<Self::Input, Self::Output>]) -> Vec<Vec<usize>> {
        vec![(0..history.len()).collect()]
    }

    /// Names a partition in a violation report, e.g. `key "x"`.
    fn describe_partition(
        &self,
        history: &[Operation<Self::Input, Self::Output>],
        partition: &[usize],
    ) -> String {
        let _ = (history, partition);
        String::from("history")
    }

    /// One operation as readable text, e.g. `get x -> "2"`.
    fn describe(&self, input: &Self::Input, output: Option<&Self::Output>) -> String {
        match output {
            Some(output) => format!("{input:?} -> {output:?}"),
            None => format!("{input:?} -> ?"),
        }
    }

    /// A state as readable text.
    fn describe_state(&self, state: &Self::State) -> String {
        format!("{state:?}")
    }
}

/// The verdict on a history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckResult {
    /// The history is linearizable.
    Ok,
    /// The history is not linearizable; the violation says where.
    Illegal(Violation),
    /// The time limit passed before the search could decide.
    Unknown,
}

impl CheckResult {
    /// True only for [`CheckResult::Ok`].
    pub fn is_ok(&self) -> bool {
        matches!(self, CheckResult::Ok)
    }

    /// True only for [`CheckResult::Illegal`].
    pub fn is_illegal(&self) -> bool {
        matches!(self, CheckResult::Illegal(_))
    }

    /// The violation, if the history is illegal.
    pub fn violation(&self) -> Option<&Violation> {
        match self {
            CheckResult::Illegal(v) => Some(v),
            _ => None,
        }
    }
}

impl fmt::Display for CheckResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckResult::Ok => f.write_str("linearizable"),
            CheckResult::Illegal(v) => write!(f, "not linearizable: {v}"),
            CheckResult::Unknown => f.write_str("unknown (time limit reached before the search finished)"),
        }
    }
}

/// One operation, as named in a [`Violation`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpSummary {
    /// Its index in the checked history.
    pub index: usize,
    /// Its client.
    pub client: u64,
    /// Its call time.
    pub call: u64,
    /// Its return time; `None` if the outcome is unknown.
    pub ret: Option<u64>,
    /// [`Model::describe`] of it.
    pub text: String,
}

impl fmt::Display for OpSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "c{} {} @{}..", self.client, self.text, self.call)?;
        match self.ret {
            Some(ret) => write!(f, "{ret}"),
            None => f.write_str("?"),
        }
    }
}

/// An operation that was pending at the point where the search got stuck.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingOp {
    /// The operation.
    pub op: OpSummary,
    /// False if the model rejects it outright in the stuck state; true if
    /// it fits there but every way of continuing after it fails.
    pub fits: bool,
}

/// Why a history is not linearizable.
///
/// It describes the deepest point the search reached: the longest
/// linearizable prefix it found, and the operations that were pending there,
/// none of which could go next. Its [`Display`](fmt::Display) is meant to be
/// printed by a failing test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Which partition failed ([`Model::describe_partition`]), e.g. `key "x"`.
    pub partition: String,
    /// The longest linearizable prefix found, in linearization order.
    pub prefix: Vec<OpSummary>,
    /// [`Model::describe_state`] of the state after the prefix.
    pub state: String,
    /// The operations that could have gone next in real time; none could.
    pub pending: Vec<PendingOp>,
    /// The pending operation with the earliest return: one of `pending` had
    /// to take effect before it returned.
    pub deadline: Option<OpSummary>,
}

/// How many prefix operations [`Violation`]'s `Display` shows (the last ones).
const SHOWN_PREFIX: usize = 10;

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: after linearizing [", self.partition)?;
        let skip = self.prefix.len().saturating_sub(SHOWN_PREFIX);
        if skip > 0 {
            write!(f, "... {skip} earlier operations ..., ")?;
        }
        for (i, op) in self.prefix[skip..].iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{op}")?;
        }
        write!(f, "] (state {}), no pending operation can go next:", self.state)?;
        for p in &self.pending {
            if p.fits {
                write!(
                    f,
                    "\n  {} fits in state {}, but every continuation after it fails",
                    p.op, self.state
                )?;
            } else {
                write!(f, "\n  {} is impossible in state {}", p.op, self.state)?;
            }
        }
        if let Some(d) = &self.deadline {
            match &self.pending[..] {
                [only] if only.op.index == d.index => {
                    write!(f, "\n  and it had to take effect before it returned")?;
                }
                _ => write!(f, "\n  and one of them had to take effect before {d} returned")?,
            }
        }
        Ok(())
    }
}

/// Checks `history` against `model` within `time_limit`.
///
/// Partitions ([`Model::partition`]) are searched independently, in
/// parallel on up to [`std::thread::available_parallelism`] threads. The
/// result is [`CheckResult::Illegal`] if any partition is not linearizable
/// (the reported partition is the first illegal one in the order
/// partitions are scheduled: largest first, then by position in the list,
/// so the report is deterministic unless the time limit intervenes),
/// [`CheckResult::Unknown`] if some partition was not decided in time, and
/// [`CheckResult::Ok`] otherwise.
///
/// # Panics
///
/// If an operation returns before it is called, or a partition names an
/// index outside `history`: both are bugs in the recorder or the model.
pub fn check<M>(model: &M, history: &[Operation<M::Input, M::Output>], time_limit: Duration) -> CheckResult
where
    M: Model + Sync,
    M::Input: Sync,
    M::Output: Sync,
    M::State: Send,
{
    let deadline = Instant::now().checked_add(time_limit);
    for (i, op) in history.iter().enumerate() {
        assert!(
            op.call <= op.ret,
            "operation {i} (client {}) returns at {} before its call at {}",
            op.client,
            op.ret,
            op.call
        );
    }
    let mut partitions = model.partition(history);
    for part in &partitions {
        for &i in part {
            assert!(i < history.len(), "partition names operation {i}, history has {}", history.len());
        }
    }
    partitions.retain(|p| !p.is_empty());
    // Largest first: the long pole starts early, and the order (hence which
    // violation is reported) does not depend on thread timing.
    partitions.sort_by_key(|p| std::cmp::Reverse(p.len()));

    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(partitions.len());
    let outcomes: Vec<PartitionOutcome<M::State>> = if threads <= 1 {
        let mut out = Vec::with_capacity(partitions.len());
        for part in &partitions {
            let ctl = Control { deadline, cancel: None };
            let outcome = check_partition(model, history, part, &ctl);
            let illegal = matches!(outcome, PartitionOutcome::Illegal(_));
            out.push(outcome);
            if illegal {
                break;
            }
        }
        out
    } else {
        check_parallel(model, history, &partitions, deadline, threads)
    };

    let mut unknown = false;
    for (i, outcome) in outcomes.into_iter().enumerate() {
        match outcome {
            PartitionOutcome::Ok => {}
            PartitionOutcome::Unknown => unknown = true,
            PartitionOutcome::Illegal(stuck) => {
                return CheckResult::Illegal(explain(model, history, &partitions[i], stuck));
            }
        }
    }
    if unknown {
        CheckResult::Unknown
    } else {
        CheckResult::Ok
    }
}

/// Runs the partitions on `threads` scoped workers. A worker that finds
/// partition `p` illegal cancels the partitions scheduled after `p` (their
/// verdicts no longer matter) but not those before it, so the first illegal
/// partition in schedule order is always the one reported.
fn check_parallel<M>(
    model: &M,
    history: &[Operation<M::Input, M::Output>],
    partitions: &[Vec<usize>],
    deadline: Option<Instant>,
    threads: usize,
) -> Vec<PartitionOutcome<M::State>>
where
    M: Model + Sync,
    M::Input: Sync,
    M::Output: Sync,
    M::State: Send,
{
    let next = AtomicUsize::new(0);
    let first_illegal = AtomicUsize::new(usize::MAX);
    let results: Mutex<Vec<Option<PartitionOutcome<M::State>>>> =
        Mutex::new((0..partitions.len()).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= partitions.len() || i > first_illegal.load(Ordering::Relaxed) {
                    return;
                }
                let ctl = Control { deadline, cancel: Some((&first_illegal, i)) };
                let outcome = check_partition(model, history, &partitions[i], &ctl);
                if matches!(outcome, PartitionOutcome::Illegal(_)) {
                    first_illegal.fetch_min(i, Ordering::Relaxed);
                }
                if let Ok(mut r) = results.lock() {
                    r[i] = Some(outcome);
                }
            });
        }
    });
    let results = match results.into_inner() {
        Ok(r) => r,
        Err(poisoned) => poisoned.into_inner(),
    };
    // Partitions never run (or cancelled) are undecided; they only matter if
    // no earlier partition is illegal, which cannot happen for cancelled ones.
    results.into_iter().map(|r| r.unwrap_or(PartitionOutcome::Unknown)).collect()
}

/// When a partition search must give up.
struct Control<'a> {
    deadline: Option<Instant>,
    /// (index of the first illegal partition so far, this partition's index):
    /// give up once an earlier partition is known to be illegal.
    cancel: Option<(&'a AtomicUsize, usize)>,
}

impl Control<'_> {
    fn should_stop(&self) -> bool {
        if let Some((first, me)) = self.cancel {
            if first.load(Ordering::Relaxed) < me {
                return true;
            }
        }
        match self.deadline {
            Some(d) => Instant::now() >= d,
            None => false,
        }
    }
}

enum PartitionOutcome<S> {
    Ok,
    Illegal(Stuck<S>),
    Unknown,
}

/// The deepest point where the search of a partition got stuck, in the
/// partition's local operation numbers.
struct Stuck<S> {
    prefix: Vec<usize>,
    state: S,
    /// Operations whose call precedes the first remaining return.
    pending: Vec<usize>,
    /// The operation of that first remaining return.
    deadline: Option<usize>,
}

const NIL: usize = usize::MAX;
const HEAD: usize = 0;

/// A call or return event in the linked list. Node 0 is the head sentinel.
#[derive(Clone, Copy)]
struct Node {
    /// The partition-local operation.
    op: usize,
    is_call: bool,
    /// For a required operation's call: its return node. `NIL` otherwise
    /// (an optional operation has no return event).
    ret: usize,
    prev: usize,
    next: usize,
}

struct EventList {
    nodes: Vec<Node>,
}

impl EventList {
    fn unlink(&mut self, n: usize) {
        let Node { prev, next, .. } = self.nodes[n];
        self.nodes[prev].next = next;
        if next != NIL {
            self.nodes[next].prev = prev;
        }
    }

    fn relink(&mut self, n: usize) {
        let Node { prev, next, .. } = self.nodes[n];
        self.nodes[prev].next = n;
        if next != NIL {
            self.nodes[next].prev = n;
        }
    }

    /// Removes a call node and its return node, if any.
    fn lift(&mut self, call: usize) {
        self.unlink(call);
        let ret = self.nodes[call].ret;
        if ret != NIL {
            self.unlink(ret);
        }
    }

    /// Undoes [`lift`](Self::lift) (lifts must be undone in reverse order).
    fn unlift(&mut self, call: usize) {
        let ret = self.nodes[call].ret;
        if ret != NIL {
            self.relink(ret);
        }
        self.relink(call);
    }
}

/// Which operations are linearized: required ones (`req`, with an
/// O(1)-updatable Zobrist hash) and optional ones (`opt`), numbered apart.
struct Linearized {
    req: Vec<u64>,
    opt: Vec<u64>,
    zobrist: u64,
}

impl Linearized {
    fn flip(&mut self, slot: Slot, zkeys: &[u64]) {
        match slot {
            Slot::Req(i) => {
                self.req[i / 64] ^= 1 << (i % 64);
                self.zobrist ^= zkeys[i];
            }
            Slot::Opt(i) => self.opt[i / 64] ^= 1 << (i % 64),
        }
    }
}

/// An operation's bit in [`Linearized`].
#[derive(Clone, Copy)]
enum Slot {
    Req(usize),
    Opt(usize),
}

/// Searches one partition. Local operation `k` is `history[part[k]]`.
///
/// Operations with unknown outcome are *optional*: they have a call event
/// but no return event, so nothing ever forces them to be linearized, and
/// success is reached when every *required* operation is. The memo
/// exploits that a configuration with fewer optional operations used is at
/// least as good as one with more (same required set and state, more
/// choices left): it prunes a configuration if one with the same required
/// set and state and a subset of its optional operations was seen.
fn check_partition<M: Model>(
    model: &M,
    history: &[Operation<M::Input, M::Output>],
    part: &[usize],
    ctl: &Control<'_>,
) -> PartitionOutcome<M::State> {
    let n = part.len();
    let op = |k: usize| &history[part[k]];

    // Events: (time, 0 = call / 1 = return, local op). Calls sort before
    // returns at equal times, so touching intervals count as concurrent.
    let mut events: Vec<(u64, u8, usize)> = Vec::with_capacity(2 * n);
    let mut slots = Vec::with_capacity(n);
    let (mut required, mut optional) = (0usize, 0usize);
    for k in 0..n {
        let o = op(k);
        events.push((o.call, 0, k));
        if o.is_unknown() {
            slots.push(Slot::Opt(optional));
            optional += 1;
        } else {
            events.push((o.ret, 1, k));
            slots.push(Slot::Req(required));
            required += 1;
        }
    }
    events.sort_unstable();

    let mut list = EventList { nodes: Vec::with_capacity(events.len() + 1) };
    list.nodes.push(Node { op: NIL, is_call: false, ret: NIL, prev: NIL, next: NIL });
    let mut call_node = vec![NIL; n];
    for &(_, kind, k) in &events {
        let idx = list.nodes.len();
        list.nodes.push(Node { op: k, is_call: kind == 0, ret: NIL, prev: idx - 1, next: NIL });
        list.nodes[idx - 1].next = idx;
        if kind == 0 {
            call_node[k] = idx;
        } else {
            list.nodes[call_node[k]].ret = idx;
        }
    }

    let mut seed = 0x5EED_0F11_4EA2_u64 ^ n as u64;
    let zkeys: Vec<u64> = (0..required).map(|_| splitmix64(&mut seed)).collect();

    let mut cache: Cache<M::State> = Cache::new(n);
    let mut lin =
        Linearized { req: vec![0; required.div_ceil(64)], opt: vec![0; optional.div_ceil(64)], zobrist: 0 };
    let mut state = model.init();
    let mut stack: Vec<(usize, M::State)> = Vec::new();
    let mut remaining = required;
    let mut best: Option<Stuck<M::State>> = None;
    let mut entry = list.nodes[HEAD].next;
    let mut ticks: u32 = 0;

    loop {
        if remaining == 0 {
            return PartitionOutcome::Ok;
        }
        ticks = ticks.wrapping_add(1);
        if ticks & 511 == 0 && ctl.should_stop() {
            return PartitionOutcome::Unknown;
        }
        if entry != NIL && list.nodes[entry].is_call {
            let k = list.nodes[entry].op;
            let o = op(k);
            let next_state = model.step(&state, &o.input, o.output.as_ref()).filter(|next| {
                // Right after an optional operation, an operation that
                // leaves the same state as it would have without it (a
                // blind write) is pointless here: the sibling configuration
                // without the optional operation dominates.
                match stack.last() {
                    Some((top, parent)) if matches!(slots[list.nodes[*top].op], Slot::Opt(_)) => {
                        model.step(parent, &o.input, o.output.as_ref()).as_ref() != Some(next)
                    }
                    _ => true,
                }
            });
            if let Some(next_state) = next_state {
                lin.flip(slots[k], &zkeys);
                if cache.insert(&lin, &next_state) {
                    stack.push((entry, std::mem::replace(&mut state, next_state)));
                    list.lift(entry);
                    if let Slot::Req(_) = slots[k] {
                        remaining -= 1;
                    }
                    entry = list.nodes[HEAD].next;
                    continue;
                }
                lin.flip(slots[k], &zkeys);
            }
            entry = list.nodes[entry].next;
        } else {
            // Stuck: every call before this return (or the end) was tried,
            // and the operation returning here cannot wait any longer.
            let deeper = match &best {
                Some(b) => stack.len() > b.prefix.len(),
                None => true,
            };
            if deeper {
                best = Some(snapshot(&list, &stack, &state, entry));
            }
            let Some((call, prev_state)) = stack.pop() else {
                return match best {
                    Some(stuck) => PartitionOutcome::Illegal(stuck),
                    None => PartitionOutcome::Unknown,
                };
            };
            let k = list.nodes[call].op;
            lin.flip(slots[k], &zkeys);
            state = prev_state;
            list.unlift(call);
            if let Slot::Req(_) = slots[k] {
                remaining += 1;
            }
            entry = list.nodes[call].next;
        }
    }
}

fn snapshot<S: Clone>(list: &EventList, stack: &[(usize, S)], state: &S, stuck_at: usize) -> Stuck<S> {
    let prefix = stack.iter().map(|&(call, _)| list.nodes[call].op).collect();
    let mut pending = Vec::new();
    let mut e = list.nodes[HEAD].next;
    while e != NIL && list.nodes[e].is_call {
        pending.push(list.nodes[e].op);
        e = list.nodes[e].next;
    }
    let deadline = if stuck_at != NIL { Some(list.nodes[stuck_at].op) } else { None };
    Stuck { prefix, state: state.clone(), pending, deadline }
}

fn explain<M: Model>(
    model: &M,
    history: &[Operation<M::Input, M::Output>],
    part: &[usize],
    stuck: Stuck<M::State>,
) -> Violation {
    let summary = |k: usize| {
        let index = part[k];
        let o = &history[index];
        OpSummary {
            index,
            client: o.client,
            call: o.call,
            ret: if o.is_unknown() { None } else { Some(o.ret) },
            text: model.describe(&o.input, o.output.as_ref()),
        }
    };
    let pending = stuck
        .pending
        .iter()
        .map(|&k| {
            let o = &history[part[k]];
            let fits = model.step(&stuck.state, &o.input, o.output.as_ref()).is_some();
            PendingOp { op: summary(k), fits }
        })
        .collect();
    Violation {
        partition: model.describe_partition(history, part),
        prefix: stuck.prefix.iter().map(|&k| summary(k)).collect(),
        state: model.describe_state(&stuck.state),
        pending,
        deadline: stuck.deadline.map(summary),
    }
}

/// The memo of configurations seen: (required set, state) hashed as the
/// set's Zobrist hash mixed with the state's hash, chained in one arena,
/// each entry also holding the optional operations used.
struct Cache<S> {
    heads: HashMap<u64, usize, BuildHasherDefault<PreHashed>>,
    entries: Vec<CacheEntry<S>>,
}

struct CacheEntry<S> {
    req: Box<[u64]>,
    opt: Box<[u64]>,
    state: S,
    next: usize,
}

const NO_ENTRY: usize = usize::MAX;

impl<S: Clone + Eq + Hash> Cache<S> {
    fn new(ops: usize) -> Self {
        Cache { heads: HashMap::with_capacity_and_hasher(ops * 2, Default::default()), entries: Vec::new() }
    }

    /// Adds the configuration; false if it (or one that dominates it: same
    /// required set and state, a subset of its optional operations) was
    /// already there.
    fn insert(&mut self, lin: &Linearized, state: &S) -> bool {
        let mut h = FastHasher::default();
        state.hash(&mut h);
        let mut mix = lin.zobrist ^ h.finish();
        let key = splitmix64(&mut mix);
        let head = self.heads.get(&key).copied().unwrap_or(NO_ENTRY);
        let mut e = head;
        while e != NO_ENTRY {
            let entry = &self.entries[e];
            if entry.state == *state
                && *entry.req == *lin.req
                && entry.opt.iter().zip(&lin.opt).all(|(seen, now)| seen & !now == 0)
            {
                return false;
            }
            e = entry.next;
        }
        let idx = self.entries.len();
        self.entries.push(CacheEntry {
            req: lin.req.as_slice().into(),
            opt: lin.opt.as_slice().into(),
            state: state.clone(),
            next: head,
        });
        self.heads.insert(key, idx);
        true
    }
}

/// A fast non-cryptographic hasher for model states (the memo's keys are
/// not attacker-controlled; SipHash would dominate the search's cost).
#[derive(Default)]
struct FastHasher(u64);

impl FastHasher {
    fn add(&mut self, w: u64) {
        self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(0x517C_C1B7_2722_0A95);
    }
}

impl Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]));
        }
        let mut w = 0u64;
        for &b in chunks.remainder() {
            w = (w << 8) | u64::from(b);
        }
        self.add(w ^ ((bytes.len() as u64) << 56));
    }

    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }

    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// The cache's keys are already well-mixed hashes: pass them through.
#[derive(Default)]
struct PreHashed(u64);

impl Hasher for PreHashed {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }

    fn finish(&self) -> u64 {
        self.0
    }
}
