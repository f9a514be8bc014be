//! Group commit for many concurrent writers.
//!
//! An fsync costs the same for one record as for a thousand, so concurrent
//! writers should share them. [`SharedWal`] uses the leader/follower scheme:
//! a writer frames its record into a shared batch, and if no sync is running
//! it becomes the leader, takes the whole batch and writes + fsyncs it
//! *without* holding the batch lock, so others keep appending meanwhile.
//! The rest wait on a condition variable until a sync covers their record.
//!
//! One refinement: writers released by a sync tend to come straight back
//! with their next record. A new leader therefore waits (bounded by
//! [`GroupOptions::max_commit_delay`] and by the duration of the last sync)
//! until the writers released by the previous sync have left, so their next
//! records can join its batch. Without this the writers split into two
//! alternating cohorts and each fsync carries only about half of them.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
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
        GroupOptions {
            max_commit_delay: Duration::from_millis(1),
        }
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
    /// Every record with a sequence number up to this is durable.
    durable: u64,
    /// A leader is syncing (or about to).
    syncing: bool,
    /// Writers whose record is durable but who have not returned yet.
    released: u64,
    /// A sync failed: nothing more can be made durable.
    poisoned: bool,
    last_sync: Duration,
    stats: GroupStats,
}

#[derive(Debug)]
struct Inner<D: Dir> {
    state: Mutex<State>,
    /// Followers wait here for `durable` to advance.
    synced: Condvar,
    /// A leader waits here for released writers to leave.
    leader: Condvar,
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
        SharedWal {
            inner: Arc::clone(&self.inner),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking writer cannot leave the state inconsistent in a way that
    // matters more than the panic itself, which the caller sees anyway.
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
                synced: Condvar::new(),
                leader: Condvar::new(),
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
        if st.poisoned {
            return Err(WalError::Poisoned);
        }
        record::encode(&mut st.batch, payload);
        st.appended += 1;
        let seq = st.appended;
        loop {
            if st.durable >= seq {
                assert!(st.released > 0, "released count underflow");
                st.released -= 1;
                if st.released == 0 {
                    inner.leader.notify_one();
                }
                return Ok(());
            }
            if st.poisoned {
                return Err(WalError::Poisoned);
            }
            if st.syncing {
                st = match inner.synced.wait(st) {
                    Ok(g) => g,
                    Err(p) => p.into_inner(),
                };
                continue;
            }
            st = self.lead(st)?;
        }
    }

    /// Runs one sync as leader: gathers stragglers, takes the batch, writes
    /// and fsyncs it with the state unlocked, then publishes the result.
    fn lead<'a>(&'a self, mut st: MutexGuard<'a, State>) -> Result<MutexGuard<'a, State>, WalError> {
        let inner = &*self.inner;
        st.syncing = true;
        let delay = inner.opts.max_commit_delay.min(st.last_sync);
        if st.released > 0 && !delay.is_zero() {
            let deadline = Instant::now() + delay;
            while st.released > 0 {
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                st = match inner.leader.wait_timeout(st, deadline - now) {
                    Ok((g, _)) => g,
                    Err(p) => p.into_inner().0,
                };
            }
        }
        let spare = std::mem::take(&mut st.spare);
        let mut batch = std::mem::replace(&mut st.batch, spare);
        let target = st.appended;
        let count = target - st.durable;
        assert!(count > 0 && !batch.is_empty(), "leader with an empty batch");
        drop(st);

        let started = Instant::now();
        let result = lock(&inner.wal).write_batch(&batch);
        let took = started.elapsed();

        let mut st = lock(&inner.state);
        batch.clear();
        st.spare = batch;
        st.syncing = false;
        st.last_sync = took;
        match &result {
            Ok(()) => {
                assert_eq!(st.durable + count, target, "durable moved under the leader");
                st.durable = target;
                st.released += count;
                st.stats.records += count;
                st.stats.syncs += 1;
            }
            Err(_) => st.poisoned = true,
        }
        inner.synced.notify_all();
        result.map(|()| st)
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
