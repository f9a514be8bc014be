//! The server: one task per connection, one task per request (RPC-1), and
//! the at-most-once check in front of the handler (RPC-3).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::conn::{write_loop, WRITE_QUEUE};
use crate::dedup::{self, Admit, ReplyTable, SavedReply, TableLimits};
use crate::error::RemoteError;
use crate::wire::{self, decode_payload, encode_payload, Envelope, FrameDecoder, OnceHeader, WireError};

/// A request handler. Requests and one-way messages share one body type,
/// usually an enum of every operation the service offers.
pub trait Service: Send + Sync + 'static {
    type Request: DeserializeOwned + Send + 'static;
    /// `Sync` because a saved reply is shared with duplicate requests.
    type Response: Serialize + Send + Sync + 'static;

    /// Handles one request. Runs in its own task, concurrently with every
    /// other request.
    fn call(&self, req: Self::Request) -> impl Future<Output = Self::Response> + Send;

    /// Handles a one-way message. Messages from one connection are handled
    /// one at a time, in order, on that connection's reader, so keep this
    /// short (hand the message to a channel): a slow `notify` delays the
    /// requests behind it on the same connection.
    fn notify(&self, msg: Self::Request) -> impl Future<Output = ()> + Send {
        let _ = msg;
        async {}
    }
}

/// Server limits. The defaults suit one laptop and a modest cluster.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Largest frame accepted or sent (version byte + payload).
    pub max_frame: usize,
    /// Requests running at once per connection; past this the server stops
    /// reading that connection (TCP back-pressure).
    pub max_in_flight_per_connection: usize,
    /// At-most-once sessions remembered; new sessions past this are refused
    /// with [`RemoteError::Overloaded`].
    pub max_clients: usize,
    /// Saved replies per session; the oldest unacknowledged ones beyond
    /// this are forgotten (their duplicates get [`RemoteError::Expired`]).
    pub max_replies_per_client: usize,
    /// A session not heard from for this long is evicted.
    pub client_idle_timeout: Duration,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            max_frame: crate::wire::DEFAULT_MAX_FRAME,
            max_in_flight_per_connection: 1024,
            max_clients: 100_000,
            max_replies_per_client: 10_000,
            client_idle_timeout: Duration::from_secs(600),
        }
    }
}

struct Shared<S: Service> {
    service: Arc<S>,
    opts: ServerOptions,
    incarnation: u64,
    table: Arc<ReplyTable<S::Response>>,
}

/// Keeps a sender alive per task so `shutdown` can wait for all of them.
type Tracker = mpsc::Sender<()>;

/// A running server. Dropping it stops accepting and closes connections
/// without waiting; [`Server::shutdown`] also waits for every task.
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    incarnation: u64,
    token: CancellationToken,
    accept: Option<JoinHandle<()>>,
    done: mpsc::Receiver<()>,
}

impl Server {
    /// Binds `addr` and starts serving.
    pub async fn bind<S: Service>(
        addr: impl ToSocketAddrs,
        service: Arc<S>,
        opts: ServerOptions,
    ) -> io::Result<Server> {
        Self::start(TcpListener::bind(addr).await?, service, opts)
    }

    /// Starts serving on `listener` with a fresh random incarnation. Must be
    /// called inside a Tokio runtime.
    pub fn start<S: Service>(
        listener: TcpListener,
        service: Arc<S>,
        opts: ServerOptions,
    ) -> io::Result<Server> {
        assert!(opts.max_in_flight_per_connection > 0);
        let addr = listener.local_addr()?;
        let incarnation = crate::random_u64();
        let table = Arc::new(ReplyTable::new(TableLimits {
            max_clients: opts.max_clients,
            max_replies_per_client: opts.max_replies_per_client,
            client_idle_timeout: opts.client_idle_timeout,
        }));
        let shared = Arc::new(Shared { service, opts, incarnation, table });
        let token = CancellationToken::new();
        let (tracker, done) = mpsc::channel(1);
        let accept = tokio::spawn(accept_loop(listener, shared, token.clone(), tracker));
        tracing::debug!(%addr, incarnation, "rpc server started");
        Ok(Server { addr, incarnation, token, accept: Some(accept), done })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The random id of this server instance, sent in every hello.
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// Stops accepting, closes every connection, cancels running handlers
    /// at their next await point, and waits until all tasks are gone and
    /// the listening socket is closed.
    pub async fn shutdown(mut self) {
        self.token.cancel();
        if let Some(accept) = self.accept.take() {
            let _ = accept.await;
        }
        while self.done.recv().await.is_some() {}
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

/// Serves `listener` until the task is dropped or the process exits.
pub async fn serve<S: Service>(
    listener: TcpListener,
    service: Arc<S>,
    opts: ServerOptions,
) -> io::Result<()> {
    // Dropping this future drops the server, which closes everything.
    let _server = Server::start(listener, service, opts)?;
    std::future::pending::<()>().await;
    Ok(())
}

async fn accept_loop<S: Service>(
    listener: TcpListener,
    shared: Arc<Shared<S>>,
    token: CancellationToken,
    tracker: Tracker,
) {
    loop {
        let accepted = tokio::select! {
            _ = token.cancelled() => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, peer)) => {
                let conn = connection(stream, peer, shared.clone(), token.child_token(), tracker.clone());
                tokio::spawn(conn);
            }
            Err(e) => {
                // Usually out of file descriptors: back off, keep serving.
                tracing::warn!(error = %e, "accept failed");
                tokio::select! {
                    _ = token.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
        }
    }
}

async fn connection<S: Service>(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared<S>>,
    token: CancellationToken,
    tracker: Tracker,
) {
    let _ = stream.set_nodelay(true);
    let (mut rd, wr) = stream.into_split();
    let (tx, rx) = mpsc::channel(WRITE_QUEUE);
    let writer = write_loop(wr, rx, shared.opts.max_frame, token.clone());
    let writer_tracker = tracker.clone();
    tokio::spawn(async move {
        writer.await;
        drop(writer_tracker);
    });

    let hello = Envelope::<(), ()>::Hello { incarnation: shared.incarnation };
    match encode_payload(&hello) {
        Ok(blob) => {
            if tx.send(blob).await.is_err() {
                return;
            }
        }
        Err(e) => unreachable!("a hello always encodes: {e}"),
    }

    let permits = Arc::new(Semaphore::new(shared.opts.max_in_flight_per_connection));
    let mut dec = FrameDecoder::new(shared.opts.max_frame);
    loop {
        let frame = tokio::select! {
            _ = token.cancelled() => break,
            f = dec.read_frame(&mut rd) => f,
        };
        let payload = match frame {
            Ok(Some(p)) => p,
            Ok(None) => {
                // Clean close: the writer drains the replies of requests
                // still running, then ends when their senders are gone.
                tracing::trace!(%peer, "rpc connection closed by peer");
                return;
            }
            Err(WireError::Io(e)) => {
                tracing::debug!(%peer, error = %e, "rpc connection failed");
                break;
            }
            Err(e) => {
                tracing::warn!(%peer, error = %e, "closing rpc connection: bad frame");
                break;
            }
        };
        match decode_payload::<S::Request, ()>(&payload) {
            Ok(Envelope::Request { id, once, body }) => {
                let permit = tokio::select! {
                    _ = token.cancelled() => break,
                    p = permits.clone().acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => break,
                    },
                };
                let req = handle_request(shared.clone(), id, once, body, tx.clone());
                let (token, tracker) = (token.clone(), tracker.clone());
                tokio::spawn(async move {
                    tokio::select! {
                        _ = token.cancelled() => {}
                        _ = req => {}
                    }
                    drop((permit, tracker));
                });
            }
            Ok(Envelope::Notify { body }) => {
                tokio::select! {
                    _ = token.cancelled() => break,
                    _ = shared.service.notify(body) => {}
                }
            }
            Ok(Envelope::Hello { .. } | Envelope::Response { .. }) => {
                tracing::warn!(%peer, "closing rpc connection: unexpected message kind from a client");
                break;
            }
            Err(e) => {
                tracing::warn!(%peer, error = %e, "closing rpc connection: bad message");
                if let Some(id) = wire::request_id(&payload) {
                    // Framing is intact and this is a request: tell the
                    // caller why (usually mismatched service versions),
                    // then close once the writer has sent it.
                    let err = RemoteError::BadRequest(e.to_string());
                    let slot = ReplySlot { id, tx: Some(tx), max_frame: shared.opts.max_frame };
                    slot.send::<()>(Err(err)).await;
                    return;
                }
                break;
            }
        }
    }
    token.cancel();
}

/// Sends the reply for call `id`; if the task dies first (handler panic),
/// `Drop` sends [`RemoteError::Internal`] so the caller is not left waiting.
struct ReplySlot {
    id: u64,
    tx: Option<mpsc::Sender<Vec<u8>>>,
    max_frame: usize,
}

impl ReplySlot {
    fn blob<R: Serialize>(&self, result: Result<&R, RemoteError>) -> Vec<u8> {
        let env = Envelope::<(), &R>::Response { id: self.id, result };
        match encode_payload(&env) {
            Ok(blob) if blob.len() <= self.max_frame => blob,
            Ok(blob) => {
                self.error_blob(RemoteError::TooLarge { size: blob.len() as u64, max: self.max_frame as u64 })
            }
            Err(e) => self.error_blob(RemoteError::Internal(format!("reply not encodable: {e}"))),
        }
    }

    fn error_blob(&self, err: RemoteError) -> Vec<u8> {
        let env = Envelope::<(), ()>::Response { id: self.id, result: Err(err) };
        match encode_payload(&env) {
            Ok(blob) => blob,
            Err(e) => unreachable!("an error reply always encodes: {e}"),
        }
    }

    async fn send<R: Serialize>(mut self, result: Result<&R, RemoteError>) {
        let blob = self.blob(result);
        if let Some(tx) = self.tx.take() {
            // The connection may be gone; the client will re-send.
            let _ = tx.send(blob).await;
        }
    }

    async fn send_saved<R: Serialize>(self, saved: &SavedReply<R>) {
        let result = saved.as_ref().as_ref().map_err(Clone::clone);
        self.send(result).await;
    }
}

impl Drop for ReplySlot {
    fn drop(&mut self) {
        if let Some(tx) = self.tx.take() {
            let blob = self.error_blob(RemoteError::Internal("handler panicked or was cancelled".into()));
            let _ = tx.try_send(blob);
        }
    }
}

async fn handle_request<S: Service>(
    shared: Arc<Shared<S>>,
    id: u64,
    once: Option<OnceHeader>,
    body: S::Request,
    tx: mpsc::Sender<Vec<u8>>,
) {
    let slot = ReplySlot { id, tx: Some(tx), max_frame: shared.opts.max_frame };
    let Some(h) = once else {
        let resp = shared.service.call(body).await;
        return slot.send(Ok(&resp)).await;
    };
    if h.incarnation != shared.incarnation {
        return slot.send::<()>(Err(RemoteError::ServerRestarted)).await;
    }
    match shared.table.admit(&h, Instant::now()) {
        Admit::Execute(completion) => {
            let resp = shared.service.call(body).await;
            let saved = completion.finish(Ok(resp));
            slot.send_saved(&saved).await;
        }
        Admit::Replay(saved) => slot.send_saved(&saved).await,
        Admit::Wait(w) => {
            let saved = dedup::wait_for(w).await;
            slot.send_saved(&saved).await;
        }
        Admit::Reject(e) => slot.send::<()>(Err(e)).await,
    }
}
