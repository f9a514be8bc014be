//! The server's at-most-once reply table (RPC-3).
//!
//! Per client session: the saved reply of every finished call the client has
//! not yet acknowledged, and a watch for every call still executing. A
//! session's `floor` only rises: a request below it that is not in the table
//! is a duplicate whose reply was freed, and is rejected with
//! [`RemoteError::Expired`] instead of running again.
//!
//! A request from an unknown client is a new session only if its
//! `acked_below` is 0 (the client has never completed a call). Otherwise the
//! server forgot the session (idle eviction) and cannot tell a new call
//! from an old duplicate, so it answers [`RemoteError::SessionExpired`]
//! and the client starts a new session. The one gap: a duplicate of a
//! fresh session's very first calls, delayed in the network for longer
//! than `client_idle_timeout` (10 minutes by default, far beyond any
//! client's retry window).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::error::RemoteError;
use crate::wire::OnceHeader;

/// A saved reply, shared by the original caller and its duplicates.
pub(crate) type SavedReply<R> = Arc<Result<R, RemoteError>>;
type Watch<R> = watch::Receiver<Option<SavedReply<R>>>;

#[derive(Debug, Clone)]
pub(crate) struct TableLimits {
    pub max_clients: usize,
    pub max_replies_per_client: usize,
    pub client_idle_timeout: Duration,
}

#[derive(Debug)]
enum Slot<R> {
    Running(Watch<R>),
    Done(SavedReply<R>),
}

#[derive(Debug)]
struct ClientState<R> {
    last_seen: Instant,
    floor: u64,
    slots: BTreeMap<u64, Slot<R>>,
    running: usize,
}

#[derive(Debug)]
struct Tables<R> {
    clients: HashMap<u64, ClientState<R>>,
    last_sweep: Instant,
}

#[derive(Debug)]
pub(crate) struct ReplyTable<R> {
    limits: TableLimits,
    inner: Mutex<Tables<R>>,
}

/// What to do with an at-most-once request.
#[derive(Debug)]
pub(crate) enum Admit<R> {
    /// New: run it, then hand the reply to the `Completion`.
    Execute(Completion<R>),
    /// Finished before: send this saved reply.
    Replay(SavedReply<R>),
    /// Still running: wait for its reply.
    Wait(Watch<R>),
    /// Refuse without running it.
    Reject(RemoteError),
}

/// The right (and duty) to record the reply of one executing call. Dropped
/// without `finish` (the handler panicked or was cancelled), it records
/// [`RemoteError::Internal`] so duplicates never run the call again.
#[derive(Debug)]
pub(crate) struct Completion<R> {
    table: Arc<ReplyTable<R>>,
    client: u64,
    seq: u64,
    tx: Option<watch::Sender<Option<SavedReply<R>>>>,
}

impl<R> ReplyTable<R> {
    pub(crate) fn new(limits: TableLimits) -> Self {
        assert!(limits.max_clients > 0 && limits.max_replies_per_client > 0);
        Self { limits, inner: Mutex::new(Tables { clients: HashMap::new(), last_sweep: Instant::now() }) }
    }

    fn lock(&self) -> MutexGuard<'_, Tables<R>> {
        // A panic while holding this lock would be a bug in this module;
        // the table itself is still consistent slot by slot, so carry on.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn admit(self: &Arc<Self>, h: &OnceHeader, now: Instant) -> Admit<R> {
        let limits = &self.limits;
        let mut t = self.lock();
        if now.saturating_duration_since(t.last_sweep) >= limits.client_idle_timeout / 4 {
            t.last_sweep = now;
            let idle = limits.client_idle_timeout;
            t.clients.retain(|_, c| c.running > 0 || now.saturating_duration_since(c.last_seen) < idle);
        }
        if !t.clients.contains_key(&h.client) {
            if h.acked_below > 0 {
                return Admit::Reject(RemoteError::SessionExpired);
            }
            if t.clients.len() >= limits.max_clients {
                return Admit::Reject(RemoteError::Overloaded);
            }
        }
        let c = t.clients.entry(h.client).or_insert_with(|| ClientState {
            last_seen: now,
            floor: 0,
            slots: BTreeMap::new(),
            running: 0,
        });
        c.last_seen = now;
        if h.acked_below > c.floor {
            c.floor = h.acked_below;
            let keep = c.slots.split_off(&h.acked_below);
            let freed = std::mem::replace(&mut c.slots, keep);
            // A call the client gave up on may still be running; its
            // Completion finds no slot and just wakes its waiters.
            c.running -= freed.values().filter(|s| matches!(s, Slot::Running(_))).count();
        }
        match c.slots.get(&h.seq) {
            Some(Slot::Done(r)) => return Admit::Replay(r.clone()),
            Some(Slot::Running(w)) => return Admit::Wait(w.clone()),
            None if h.seq < c.floor => return Admit::Reject(RemoteError::Expired),
            None => {}
        }
        let (tx, rx) = watch::channel(None);
        c.slots.insert(h.seq, Slot::Running(rx));
        c.running += 1;
        // Bound the table: forget the oldest finished replies and raise the
        // floor past them so their duplicates are rejected, not re-run.
        while c.slots.len() > limits.max_replies_per_client {
            let oldest_done = c.slots.iter().find(|(_, s)| matches!(s, Slot::Done(_))).map(|(&seq, _)| seq);
            let Some(seq) = oldest_done else { break };
            c.slots.remove(&seq);
            c.floor = c.floor.max(seq + 1);
        }
        Admit::Execute(Completion { table: self.clone(), client: h.client, seq: h.seq, tx: Some(tx) })
    }

    fn record(&self, client: u64, seq: u64, reply: &SavedReply<R>) {
        let mut t = self.lock();
        let Some(c) = t.clients.get_mut(&client) else { return };
        if let Some(slot) = c.slots.get_mut(&seq) {
            assert!(matches!(slot, Slot::Running(_)), "call ({client}, {seq}) completed twice");
            *slot = Slot::Done(reply.clone());
            c.running -= 1;
        }
    }
}

impl<R> Completion<R> {
    /// Saves the reply for duplicates and wakes those waiting.
    pub(crate) fn finish(mut self, reply: Result<R, RemoteError>) -> SavedReply<R> {
        let reply = Arc::new(reply);
        self.complete(reply.clone());
        reply
    }

    fn complete(&mut self, reply: SavedReply<R>) {
        let tx = self.tx.take();
        assert!(tx.is_some(), "completion used twice");
        self.table.record(self.client, self.seq, &reply);
        if let Some(tx) = tx {
            tx.send_replace(Some(reply));
        }
    }
}

impl<R> Drop for Completion<R> {
    fn drop(&mut self) {
        if self.tx.is_some() {
            self.complete(Arc::new(Err(RemoteError::Internal("handler panicked or was cancelled".into()))));
        }
    }
}

/// Waits for a running call's saved reply.
pub(crate) async fn wait_for<R>(mut w: Watch<R>) -> SavedReply<R> {
    match w.wait_for(|r| r.is_some()).await {
        Ok(r) => match &*r {
            Some(r) => r.clone(),
            None => Arc::new(Err(RemoteError::Internal("reply lost".into()))),
        },
        // Completion always sends before it goes away; be safe anyway.
        Err(_) => Arc::new(Err(RemoteError::Internal("reply lost".into()))),
    }
}
