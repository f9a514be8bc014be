//! Group commit for many concurrent writers.
//!
//! An fsync costs about the same for one record as for a hundred, so
//! concurrent writers should share them. [`SharedWal`] uses the
//! leader/follower scheme: a writer frames its record into a shared batch;
//! if no sync is running it becomes the leader, takes the whole batch and
//! writes + fsyncs it *without* holding the batch lock, so others keep
//! appending meanwhile. The others park until a sync covers their record.
//! When a sync ends and records are already waiting, the leader hands the
//! role to the oldest waiter instead of letting everyone race for it.
//!
//! Waiters park on their own thread handle and read the durable mark from
//! an atomic, so a finished sync wakes exactly the writers it made durable
//! and they return without touching the lock: with dozens of writers on a
//! few cores, this wake-up cost, not the fsync, is what limits throughput.
//!
//! One refinement: writers released by a sync tend to come straight back
//! with their next record. A new leader therefore waits (bounded by
//! [`GroupOptions::max_commit_delay`] and by the duration of the last sync)
//! until the writers released by the previous sync have returned, so their
//! next records can join its batch. Without this the writers split into two
//! alternating cohorts and each fsync carries only about half of them.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::Thread;
use std::time::{Duration, Instant};

use crate::dir::Dir;
use crate::error::WalError;
use crate::record;
use crate::wal::{check_size, Wal};

/// Tunables of a [`SharedWal`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupOptions {
    /// Upper bound on how long a new leader waits for the writers released
    /// by the previous sync before it syncs. `ZERO` disables the wait.
    pub max_commit_delay: Duration,
}

impl Default for GroupOptions {
    fn default() -> Self {
        GroupOptions { max_commit_delay: Duration::from_millis(1) }
    }
}

/// Counters of a [`SharedWal`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GroupStats {
    /// Records made durable.
    pub records: u64,
    /// Syncs (write + fsync) performed for them.
    pub syncs: u64,
}

#[derive(Debug, Default)]
struct State {
    /// Framed records not yet handed to a leader.
    batch: Vec<u8>,
    /// An empty buffer to swap with `batch`, to reuse allocations.
    spare: Vec<u8>,
    /// Sequence number of the last record appended (records count from 1).
    appended: u64,
    /// A leader exists (gathering, syncing, or handed the role).
    leading: bool,
    /// Parked writers whose record is not durable yet, oldest first.
    waiters: Vec<Waiter>,
    /// A leader parked while the writers released by the last sync return.
    gatherer: Option<Thread>,
    last_sync: Duration,
    stats: GroupStats,
}

#[derive(Debug)]
struct Waiter {
    seq: u64,
    thread: Thread,
}

#[derive(Debug)]
struct Inner<D: Dir> {
    state: Mutex<State>,
    /// Every record with a sequence number up to this is durable.
    durable: AtomicU64,
    /// A sync failed: nothing more can be made durable.
    poisoned: AtomicBool,
    /// Writers woken by a sync that have not returned yet.
    released: AtomicU64,
    /// Sequence number of the waiter handed the leader role (0: none).
    next_leader: AtomicU64,
    /// A leader is parked in its gathering wait (see `State::gatherer`).
    gathering: AtomicBool,
    /// Only the current leader locks this, so it is never contended.
    wal: Mutex<Wal<D>>,
    max_record_bytes: usize,
    opts: GroupOptions,
}

/// A [`Wal`] shared by many threads, with group commit. Clones share it.
#[derive(Debug)]
pub struct SharedWal<D: Dir> {
    inner: Arc<Inner<D>>,
}

impl<D: Dir> Clone for SharedWal<D> {
    fn clone(&self) -> Self {
        SharedWal { inner: Arc::clone(&self.inner) }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking writer cannot leave the state inconsistent in a way that
    // matters more than the panic itself, which its caller sees anyway.
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

impl<D: Dir> SharedWal<D> {
    /// Shares `wal` with default options, syncing anything it had pending.
    pub fn new(wal: Wal<D>) -> Result<Self, WalError> {
        SharedWal::with_options(wal, GroupOptions::default())
    }

    /// Shares `wal`, syncing anything it had pending.
    pub fn with_options(mut wal: Wal<D>, opts: GroupOptions) -> Result<Self, WalError> {
        wal.sync()?;
        let max_record_bytes = wal.options().max_record_bytes;
        Ok(SharedWal {
            inner: Arc::new(Inner {
                state: Mutex::new(State::default()),
                durable: AtomicU64::new(0),
                poisoned: AtomicBool::new(false),
                released: AtomicU64::new(0),
                next_leader: AtomicU64::new(0),
                gathering: AtomicBool::new(false),
                wal: Mutex::new(wal),
                max_record_bytes,
                opts,
            }),
        })
    }

    /// Appends `payload` and returns once it is durable. Concurrent callers
    /// share fsyncs. Records from one thread keep their order; records of
    /// concurrent callers are ordered as they took the lock.
    pub fn append_durable(&self, payload: &[u8]) -> Result<(), WalError> {
        check_size(payload.len(), self.inner.max_record_bytes)?;
        let inner = &*self.inner;
        let mut st = lock(&inner.state);
        if inner.poisoned.load(SeqCst) {
            return Err(WalError::Poisoned);
        }
        record::encode(&mut st.batch, payload);
        st.appended += 1;
        let seq = st.appended;
        if !st.leading {
            st.leading = true;
            return self.lead(st);
        }
        st.waiters.push(Waiter { seq, thread: std::thread::current() });
        drop(st);
        loop {
            // Stale unpark tokens and spurious wake-ups just loop again.
            std::thread::park();
            if inner.durable.load(SeqCst) >= seq {
                let before = inner.released.fetch_sub(1, SeqCst);
                assert!(before > 0, "released count underflow");
                if before == 1 && inner.gathering.load(SeqCst) {
                    // The last one back wakes the leader waiting for us.
                    if let Some(t) = lock(&inner.state).gatherer.take() {
                        t.unpark();
                    }
                }
                return Ok(());
            }
            if inner.next_leader.load(SeqCst) == seq {
                inner.next_leader.store(0, SeqCst);
                return self.lead(lock(&inner.state));
            }
            if inner.poisoned.load(SeqCst) {
                return Err(WalError::Poisoned);
            }
        }
    }

    /// Runs one sync as leader: gathers stragglers, takes the batch, writes
    /// and fsyncs it with the state unlocked, then wakes the writers it
    /// made durable and hands the role on if records are waiting.
    fn lead<'a>(&'a self, mut st: MutexGuard<'a, State>) -> Result<(), WalError> {
        let inner = &*self.inner;
        assert!(st.leading, "lead() without the leader role");
        let delay = inner.opts.max_commit_delay.min(st.last_sync);
        if inner.released.load(SeqCst) > 0 && !delay.is_zero() {
            // Publish `gathering` before re-checking `released`: then either
            // we see it reach 0, or the last released writer sees us.
            st.gatherer = Some(std::thread::current());
            inner.gathering.store(true, SeqCst);
            drop(st);
            let deadline = Instant::now() + delay;
            loop {
                let now = Instant::now();
                if inner.released.load(SeqCst) == 0 || now >= deadline {
                    break;
                }
                std::thread::park_timeout(deadline - now);
            }
            inner.gathering.store(false, SeqCst);
            st = lock(&inner.state);
            st.gatherer = None;
        }
        let spare = std::mem::take(&mut st.spare);
        let mut batch = std::mem::replace(&mut st.batch, spare);
        let target = st.appended;
        let count = target - inner.durable.load(SeqCst);
        assert!(count > 0 && !batch.is_empty(), "leader with an empty batch");
        drop(st);

        let started = Instant::now();
        let result = lock(&inner.wal).write_batch(&batch);
        let took = started.elapsed();

        let mut st = lock(&inner.state);
        batch.clear();
        st.spare = batch;
        st.last_sync = took;
        let mut wake = Vec::new();
        if result.is_ok() {
            st.stats.records += count;
            st.stats.syncs += 1;
            let pending = st.waiters.iter().position(|w| w.seq > target);
            let done: Vec<Waiter> = match pending {
                Some(i) => st.waiters.drain(..i).collect(),
                None => std::mem::take(&mut st.waiters),
            };
            // Count the released before publishing `durable`: a waiter may
            // wake spuriously, see it, and decrement right away.
            inner.released.fetch_add(done.len() as u64, SeqCst);
            inner.durable.store(target, SeqCst);
            if st.waiters.is_empty() {
                st.leading = false;
            } else {
                let next = st.waiters.remove(0);
                inner.next_leader.store(next.seq, SeqCst);
                wake.push(next.thread);
            }
            wake.extend(done.into_iter().map(|w| w.thread));
        } else {
            inner.poisoned.store(true, SeqCst);
            st.leading = false;
            wake.extend(st.waiters.drain(..).map(|w| w.thread));
        }
        drop(st);
        for t in wake {
            t.unpark();
        }
        result
    }

    /// Counters so far.
    pub fn stats(&self) -> GroupStats {
        lock(&self.inner.state).stats
    }

    /// The underlying [`Wal`], if this is the last handle.
    pub fn into_inner(self) -> Option<Wal<D>> {
        let inner = Arc::try_unwrap(self.inner).ok()?;
        Some(match inner.wal.into_inner() {
            Ok(w) => w,
            Err(p) => p.into_inner(),
        })
    }
}
