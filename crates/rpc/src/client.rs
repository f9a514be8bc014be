//! The client: calls multiplexed on one connection, per-call timeout and
//! re-sends (RPC-2), reconnect inside, at-most-once sessions (RPC-3).

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::conn::{write_loop, WRITE_QUEUE};
use crate::error::{RemoteError, RpcError};
use crate::wire::{
    decode_payload, encode_payload, Envelope, FrameDecoder, OnceHeader, WireError, DEFAULT_MAX_FRAME,
};

/// Client settings: `timeout` is the seed's `t`, `retries` its `c`.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// How long one attempt waits for its reply.
    pub timeout: Duration,
    /// Re-sends after the first attempt, on timeout or connection loss.
    pub retries: u32,
    /// How long to wait for a TCP connection plus the server's hello.
    pub connect_timeout: Duration,
    /// Largest frame sent or accepted (version byte + payload).
    pub max_frame: usize,
    /// First pause after a failed connect; doubles up to `timeout`.
    pub backoff: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(1),
            retries: 3,
            connect_timeout: Duration::from_secs(1),
            max_frame: DEFAULT_MAX_FRAME,
            backoff: Duration::from_millis(20),
        }
    }
}

/// Why a connection ended, as seen by the calls waiting on it.
#[derive(Debug, Clone)]
enum Lost {
    Closed,
    Protocol(String),
}

impl From<Lost> for RpcError {
    fn from(l: Lost) -> Self {
        match l {
            Lost::Closed => RpcError::Unreachable("connection lost".into()),
            Lost::Protocol(m) => RpcError::Protocol(m),
        }
    }
}

type Reply<Resp> = Result<Result<Resp, RemoteError>, Lost>;
type Pending<Resp> = HashMap<u64, oneshot::Sender<Reply<Resp>>>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing here panics while holding a lock; tolerate poison anyway.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One TCP connection and the calls waiting on it.
struct Conn<Resp> {
    tx: mpsc::Sender<Vec<u8>>,
    /// `None` once the connection is dead: new calls must not wait here.
    pending: Mutex<Option<Pending<Resp>>>,
    next_id: AtomicU64,
    frames_in: AtomicU64,
    incarnation: u64,
    token: CancellationToken,
}

impl<Resp: DeserializeOwned + Send + 'static> Conn<Resp> {
    async fn open(addr: &str, opts: &ClientOptions) -> Result<Arc<Self>, RpcError> {
        let connect = async {
            let stream =
                TcpStream::connect(addr).await.map_err(|e| RpcError::Unreachable(format!("{addr}: {e}")))?;
            let _ = stream.set_nodelay(true);
            let (mut rd, wr) = stream.into_split();
            let mut dec = FrameDecoder::new(opts.max_frame);
            let hello = dec
                .read_frame(&mut rd)
                .await
                .map_err(|e| RpcError::Protocol(format!("{addr}: handshake: {e}")))?
                .ok_or_else(|| RpcError::Unreachable(format!("{addr}: closed before hello")))?;
            match decode_payload::<(), ()>(&hello) {
                Ok(Envelope::Hello { incarnation }) => Ok((rd, wr, dec, incarnation)),
                Ok(_) => Err(RpcError::Protocol(format!("{addr}: expected hello"))),
                Err(e) => Err(RpcError::Protocol(format!("{addr}: handshake: {e}"))),
            }
        };
        let (rd, wr, dec, incarnation) = tokio::time::timeout(opts.connect_timeout, connect)
            .await
            .map_err(|_| RpcError::Unreachable(format!("{addr}: connect timed out")))??;
        let (tx, rx) = mpsc::channel(WRITE_QUEUE);
        let conn = Arc::new(Conn {
            tx,
            pending: Mutex::new(Some(HashMap::new())),
            next_id: AtomicU64::new(0),
            frames_in: AtomicU64::new(0),
            incarnation,
            token: CancellationToken::new(),
        });
        tokio::spawn(write_loop(wr, rx, opts.max_frame, conn.token.clone()));
        tokio::spawn(conn.clone().read_loop(rd, dec, addr.to_owned()));
        Ok(conn)
    }

    async fn read_loop(
        self: Arc<Self>,
        mut rd: tokio::net::tcp::OwnedReadHalf,
        mut dec: FrameDecoder,
        addr: String,
    ) {
        let why = loop {
            let frame = tokio::select! {
                _ = self.token.cancelled() => break Lost::Closed,
                f = dec.read_frame(&mut rd) => f,
            };
            let payload = match frame {
                Ok(Some(p)) => p,
                Ok(None) => break Lost::Closed,
                Err(e @ (WireError::Io(_) | WireError::Truncated(_))) => {
                    // The server went away, possibly in mid-frame.
                    tracing::debug!(%addr, error = %e, "rpc connection failed");
                    break Lost::Closed;
                }
                Err(e) => break Lost::Protocol(e.to_string()),
            };
            match decode_payload::<(), Resp>(&payload) {
                Ok(Envelope::Response { id, result }) => {
                    self.frames_in.fetch_add(1, Ordering::Relaxed);
                    let waiter = lock(&self.pending).as_mut().and_then(|p| p.remove(&id));
                    // No waiter: the call timed out and was re-sent.
                    if let Some(w) = waiter {
                        let _ = w.send(Ok(result));
                    }
                }
                Ok(_) => break Lost::Protocol("unexpected message kind from server".into()),
                Err(e) => break Lost::Protocol(e.to_string()),
            }
        };
        if let Lost::Protocol(m) = &why {
            tracing::warn!(%addr, error = %m, "closing rpc connection: bad frame from server");
        }
        self.token.cancel();
        let pending = lock(&self.pending).take().unwrap_or_default();
        for (_, w) in pending {
            let _ = w.send(Err(why.clone()));
        }
    }

    fn alive(&self) -> bool {
        !self.token.is_cancelled()
    }

    /// Registers call `id`; `None` if the connection already died.
    fn register(&self) -> Option<(u64, oneshot::Receiver<Reply<Resp>>)> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&self.pending).as_mut()?.insert(id, tx);
        Some((id, rx))
    }

    fn unregister(&self, id: u64) {
        if let Some(p) = lock(&self.pending).as_mut() {
            p.remove(&id);
        }
    }
}

/// An at-most-once session: a random client id and its sequence numbers.
#[derive(Debug)]
struct Session {
    client: u64,
    /// The server incarnation this session is registered with, once known.
    incarnation: Mutex<Option<u64>>,
    seqs: Mutex<Seqs>,
}

#[derive(Debug, Default)]
struct Seqs {
    next: u64,
    outstanding: BTreeSet<u64>,
}

impl Session {
    fn new() -> Arc<Self> {
        Arc::new(Session {
            client: crate::random_u64(),
            incarnation: Mutex::new(None),
            seqs: Mutex::new(Seqs::default()),
        })
    }

    fn acked_below(&self) -> u64 {
        let s = lock(&self.seqs);
        s.outstanding.first().copied().unwrap_or(s.next)
    }
}

/// One at-most-once call in progress; frees its seq when dropped.
struct Ticket {
    session: Arc<Session>,
    seq: u64,
    stamp: Option<u64>,
}

impl Ticket {
    fn new(session: Arc<Session>) -> Self {
        let seq = {
            let mut s = lock(&session.seqs);
            let seq = s.next;
            s.next += 1;
            let fresh = s.outstanding.insert(seq);
            assert!(fresh, "sequence number {seq} handed out twice");
            seq
        };
        Ticket { session, seq, stamp: None }
    }

    fn header(&mut self, incarnation: u64) -> OnceHeader {
        OnceHeader {
            client: self.session.client,
            seq: self.seq,
            acked_below: self.session.acked_below(),
            incarnation: *self.stamp.get_or_insert(incarnation),
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        lock(&self.session.seqs).outstanding.remove(&self.seq);
    }
}

struct Inner<Req, Resp> {
    addr: String,
    opts: ClientOptions,
    current: Mutex<Option<Arc<Conn<Resp>>>>,
    /// Serializes connection attempts; holds the last failure so callers
    /// queued behind a failed attempt fail fast instead of each retrying.
    connecting: tokio::sync::Mutex<Option<(Instant, RpcError)>>,
    reconnecting: AtomicBool,
    session: Mutex<Arc<Session>>,
    _req: PhantomData<fn(&Req)>,
}

impl<Req, Resp> Drop for Inner<Req, Resp> {
    fn drop(&mut self) {
        if let Some(c) = lock(&self.current).take() {
            c.token.cancel();
        }
    }
}

/// A connection to one server, shared by clones and usable from many tasks
/// at once: every call is multiplexed on one TCP connection, which is
/// (re)opened on demand.
pub struct Client<Req, Resp> {
    inner: Arc<Inner<Req, Resp>>,
}

impl<Req, Resp> Clone for Client<Req, Resp> {
    fn clone(&self) -> Self {
        Client { inner: self.inner.clone() }
    }
}

impl<Req, Resp> fmt::Debug for Client<Req, Resp> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("addr", &self.inner.addr)
            .field("opts", &self.inner.opts)
            .finish_non_exhaustive()
    }
}

impl<Req, Resp> Client<Req, Resp>
where
    Req: Serialize + Sync + 'static,
    Resp: DeserializeOwned + Send + 'static,
{
    /// A client for `addr` (`host:port`); connects on the first call.
    pub fn new(addr: impl ToString, opts: ClientOptions) -> Self {
        assert!(opts.max_frame >= 1 && opts.max_frame <= u32::MAX as usize);
        Client {
            inner: Arc::new(Inner {
                addr: addr.to_string(),
                opts,
                current: Mutex::new(None),
                connecting: tokio::sync::Mutex::new(None),
                reconnecting: AtomicBool::new(false),
                session: Mutex::new(Session::new()),
                _req: PhantomData,
            }),
        }
    }

    /// A client that is connected (and has the server's hello) on return.
    pub async fn connect(addr: impl ToString, opts: ClientOptions) -> Result<Self, RpcError> {
        let client = Self::new(addr, opts);
        client.connection().await?;
        Ok(client)
    }

    /// The server address this client talks to.
    pub fn addr(&self) -> &str {
        &self.inner.addr
    }

    /// The incarnation of the server on the live connection, if any.
    pub fn server_incarnation(&self) -> Option<u64> {
        self.live().map(|c| c.incarnation)
    }

    /// A call that may run more than once if re-sent (reads, idempotent
    /// writes).
    pub async fn call(&self, req: &Req) -> Result<Resp, RpcError> {
        self.invoke(req, false).await
    }

    /// A call the server runs at most once, however often it is re-sent.
    pub async fn call_once(&self, req: &Req) -> Result<Resp, RpcError> {
        self.invoke(req, true).await
    }

    /// Sends a one-way message if a connection is up, without waiting. If
    /// none is, it starts connecting in the background and drops the
    /// message. `Ok` means queued, not delivered. Needs a Tokio runtime.
    pub fn notify(&self, msg: &Req) -> Result<(), RpcError> {
        let blob = self.blob(&Envelope::<&Req, ()>::Notify { body: msg })?;
        match self.live() {
            Some(conn) => conn
                .tx
                .try_send(blob)
                .map_err(|_| RpcError::Unreachable("send queue full or connection closing".into())),
            None => {
                self.reconnect_in_background();
                Err(RpcError::Unreachable("not connected".into()))
            }
        }
    }

    fn blob(&self, env: &Envelope<&Req, ()>) -> Result<Vec<u8>, RpcError> {
        let blob = encode_payload(env).map_err(|e| RpcError::Protocol(e.to_string()))?;
        let max = self.inner.opts.max_frame;
        if blob.len() > max {
            return Err(RpcError::TooLarge { size: blob.len(), max });
        }
        Ok(blob)
    }

    fn live(&self) -> Option<Arc<Conn<Resp>>> {
        lock(&self.inner.current).as_ref().filter(|c| c.alive()).cloned()
    }

    fn reconnect_in_background(&self) {
        if tokio::runtime::Handle::try_current().is_err()
            || self.inner.reconnecting.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let client = self.clone();
        tokio::spawn(async move {
            // Don't hammer a server that just refused us.
            let recent_failure = match client.inner.connecting.try_lock() {
                Ok(g) => g.as_ref().map(|(at, _)| at.elapsed() < client.inner.opts.timeout),
                Err(_) => Some(true), // someone else is connecting
            };
            if recent_failure != Some(true) {
                let _ = client.connection().await;
            }
            client.inner.reconnecting.store(false, Ordering::Release);
        });
    }

    async fn connection(&self) -> Result<Arc<Conn<Resp>>, RpcError> {
        if let Some(c) = self.live() {
            return Ok(c);
        }
        let started = Instant::now();
        let mut last_failure = self.inner.connecting.lock().await;
        if let Some(c) = self.live() {
            return Ok(c);
        }
        if let Some((at, err)) = &*last_failure {
            if *at >= started {
                return Err(err.clone());
            }
        }
        match Conn::open(&self.inner.addr, &self.inner.opts).await {
            Ok(conn) => {
                self.observe_incarnation(conn.incarnation);
                *lock(&self.inner.current) = Some(conn.clone());
                *last_failure = None;
                Ok(conn)
            }
            Err(e) => {
                *last_failure = Some((Instant::now(), e.clone()));
                Err(e)
            }
        }
    }

    /// A new server incarnation has no record of our session: start a new
    /// one rather than have every next call bounce off `SessionExpired`.
    fn observe_incarnation(&self, incarnation: u64) {
        let mut session = lock(&self.inner.session);
        let mut known = lock(&session.incarnation);
        match *known {
            None => *known = Some(incarnation),
            Some(i) if i == incarnation => {}
            Some(_) => {
                drop(known);
                let fresh = Session::new();
                *lock(&fresh.incarnation) = Some(incarnation);
                *session = fresh;
            }
        }
    }

    fn renew_session(&self, stale: &Arc<Session>) {
        let mut session = lock(&self.inner.session);
        if Arc::ptr_eq(&session, stale) {
            let fresh = Session::new();
            *lock(&fresh.incarnation) = *lock(&stale.incarnation);
            *session = fresh;
        }
    }

    fn new_ticket(&self) -> Ticket {
        Ticket::new(lock(&self.inner.session).clone())
    }

    async fn invoke(&self, req: &Req, once: bool) -> Result<Resp, RpcError> {
        let opts = &self.inner.opts;
        let mut ticket = once.then(|| self.new_ticket());
        let mut sent = false;
        let mut backoff = opts.backoff;
        let mut last_err = RpcError::Timeout;
        for _attempt in 0..=opts.retries {
            let conn = match self.connection().await {
                Ok(c) => c,
                Err(e) => {
                    last_err = e;
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(opts.timeout);
                    continue;
                }
            };
            let Some((id, rx)) = conn.register() else {
                last_err = Lost::Closed.into();
                continue;
            };
            let header = ticket.as_mut().map(|t| t.header(conn.incarnation));
            let blob = match self.blob_request(id, header, req) {
                Ok(b) => b,
                Err(e) => {
                    conn.unregister(id);
                    return Err(e);
                }
            };
            let frames_before = conn.frames_in.load(Ordering::Relaxed);
            let exchange = async {
                conn.tx.send(blob).await.map_err(|_| Lost::Closed)?;
                rx.await.map_err(|_| Lost::Closed)?
            };
            let first_send = !sent;
            sent = true;
            match tokio::time::timeout(opts.timeout, exchange).await {
                Ok(Ok(Ok(resp))) => return Ok(resp),
                Ok(Ok(Err(RemoteError::SessionExpired))) if first_send => {
                    // The server never saw this seq (first send) and has
                    // forgotten our session: safe to start a new session and
                    // send the call again under it.
                    if let Some(t) = &ticket {
                        self.renew_session(&t.session);
                    }
                    ticket = once.then(|| self.new_ticket());
                    sent = false;
                    last_err = RpcError::Remote(RemoteError::SessionExpired);
                }
                Ok(Ok(Err(remote))) => return Err(remote.into()),
                Ok(Err(lost)) => last_err = lost.into(),
                Err(_elapsed) => {
                    conn.unregister(id);
                    if conn.frames_in.load(Ordering::Relaxed) == frames_before {
                        // Nothing at all came back while we waited: the link
                        // may be stalled or desynchronised. Start afresh.
                        tracing::debug!(addr = %self.inner.addr, "no reply on connection; reconnecting");
                        conn.token.cancel();
                    }
                    last_err = RpcError::Timeout;
                }
            }
        }
        Err(last_err)
    }

    fn blob_request(&self, id: u64, once: Option<OnceHeader>, body: &Req) -> Result<Vec<u8>, RpcError> {
        self.blob(&Envelope::<&Req, ()>::Request { id, once, body })
    }
}
