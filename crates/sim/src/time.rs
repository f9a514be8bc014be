//! Virtual time and the event queue that drives a simulation.
//!
//! Why: a simulated cluster never sleeps. Every timer, message arrival and
//! fault is an event at a virtual instant; popping the earliest event jumps
//! the clock there. Seconds of cluster time run in microseconds, and the
//! order of events is a pure function of the seed.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::fmt;

/// Virtual time in nanoseconds since the start of the simulation.
pub type Nanos = u64;

/// One microsecond of virtual time.
pub const MICRO: Nanos = 1_000;
/// One millisecond of virtual time.
pub const MILLI: Nanos = 1_000_000;
/// One second of virtual time.
pub const SECOND: Nanos = 1_000_000_000;

/// A heap entry. Ordered by `(at, seq)` only, so `E` needs no `Ord`, and
/// reversed because `BinaryHeap` is a max-heap.
struct Entry<E> {
    at: Nanos,
    /// Insertion counter: breaks ties in FIFO order. Without it, equal-time
    /// events would pop in heap-internal order, which is deterministic but
    /// fragile and surprising.
    seq: u64,
    event: E,
}

impl<E> PartialEq for Entry<E> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl<E> Eq for Entry<E> {}
impl<E> PartialOrd for Entry<E> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<E> Ord for Entry<E> {
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// A priority queue of events keyed by virtual time, owning the clock.
///
/// Events at the same instant pop in the order they were scheduled.
pub struct EventQueue<E> {
    now: Nanos,
    next_seq: u64,
    heap: BinaryHeap<Entry<E>>,
}

impl<E> EventQueue<E> {
    /// An empty queue at time 0.
    pub fn new() -> Self {
        EventQueue { now: 0, next_seq: 0, heap: BinaryHeap::new() }
    }

    /// The current virtual time: the time of the last popped event.
    pub fn now(&self) -> Nanos {
        self.now
    }

    /// Schedules `event` at absolute time `at`, which must not be in the past
    /// (that would make time run backwards).
    pub fn schedule(&mut self, at: Nanos, event: E) {
        assert!(at >= self.now, "EventQueue::schedule: time {at} is before now {}", self.now);
        let seq = self.next_seq;
        self.next_seq += 1;
        self.heap.push(Entry { at, seq, event });
    }

    /// Schedules `event` `delay` nanoseconds from now.
    pub fn schedule_in(&mut self, delay: Nanos, event: E) {
        let at = self
            .now
            .checked_add(delay)
            .unwrap_or_else(|| panic!("EventQueue::schedule_in: now {} + {delay} overflows", self.now));
        self.schedule(at, event);
    }

    /// Removes the earliest event and advances the clock to its time.
    pub fn pop(&mut self) -> Option<(Nanos, E)> {
        let entry = self.heap.pop()?;
        assert!(entry.at >= self.now, "EventQueue: time ran backwards");
        self.now = entry.at;
        Some((entry.at, entry.event))
    }

    /// The time of the earliest pending event, without popping it.
    pub fn peek_time(&self) -> Option<Nanos> {
        self.heap.peek().map(|e| e.at)
    }

    /// Number of pending events.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// True when no events are pending.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// Keeps only the events for which `keep` returns true, e.g. to purge a
    /// crashed node's timers and in-flight messages. Surviving events keep
    /// their times and their FIFO order.
    pub fn retain(&mut self, mut keep: impl FnMut(&E) -> bool) {
        self.heap.retain(|entry| keep(&entry.event));
    }
}

impl<E> Default for EventQueue<E> {
    fn default() -> Self {
        Self::new()
    }
}

/// Shows the clock and queue size; events need not be `Debug`.
impl<E> fmt::Debug for EventQueue<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventQueue")
            .field("now", &self.now)
            .field("pending", &self.heap.len())
            .field("next_at", &self.peek_time())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn pops_in_time_then_fifo_order() {
        let mut q = EventQueue::new();
        q.schedule(30, "c");
        q.schedule(10, "a1");
        q.schedule(20, "b");
        q.schedule(10, "a2");
        q.schedule(10, "a3");
        assert_eq!(q.len(), 5);
        assert_eq!(q.peek_time(), Some(10));
        let order: Vec<_> = std::iter::from_fn(|| q.pop()).collect();
        assert_eq!(order, vec![(10, "a1"), (10, "a2"), (10, "a3"), (20, "b"), (30, "c")]);
        assert_eq!(q.now(), 30);
        assert!(q.is_empty());
        assert_eq!(q.pop(), None);
        assert_eq!(q.now(), 30, "popping an empty queue keeps the clock");
    }

    #[test]
    fn fifo_holds_for_many_ties() {
        let mut q = EventQueue::new();
        for i in 0..1000u32 {
            q.schedule(u64::from(i % 3), i);
        }
        let mut last = (0, None::<u32>);
        while let Some((t, e)) = q.pop() {
            assert!(t >= last.0);
            if t == last.0 {
                if let Some(prev) = last.1 {
                    assert!(e > prev);
                }
            }
            last = (t, Some(e));
        }
    }

    #[test]
    fn schedule_in_is_relative_to_now() {
        let mut q = EventQueue::new();
        q.schedule_in(5 * MILLI, 1);
        assert_eq!(q.pop(), Some((5 * MILLI, 1)));
        q.schedule_in(0, 2);
        q.schedule_in(SECOND, 3);
        assert_eq!(q.pop(), Some((5 * MILLI, 2)));
        assert_eq!(q.pop(), Some((5 * MILLI + SECOND, 3)));
    }

    #[test]
    #[should_panic(expected = "before now")]
    fn scheduling_in_the_past_panics() {
        let mut q = EventQueue::new();
        q.schedule(10, ());
        q.pop();
        q.schedule(9, ());
    }

    #[test]
    fn retain_purges_and_keeps_order() {
        let mut q = EventQueue::new();
        for i in 0..10u32 {
            q.schedule(5, (i % 2, i));
        }
        q.retain(|&(node, _)| node != 1);
        assert_eq!(q.len(), 5);
        let left: Vec<u32> = std::iter::from_fn(|| q.pop()).map(|(_, (_, i))| i).collect();
        assert_eq!(left, vec![0, 2, 4, 6, 8]);
    }

    #[test]
    fn units() {
        assert_eq!(SECOND, 1000 * MILLI);
        assert_eq!(MILLI, 1000 * MICRO);
        let q: EventQueue<()> = EventQueue::default();
        assert!(format!("{q:?}").contains("pending: 0"));
    }
}
