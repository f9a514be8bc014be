//! A fault-injecting TCP proxy for tests (loopback only).
//!
//! Put it between a client and a server and change the faults at run time:
//! - [`ProxyHandle::set_delay`]: every chunk waits a random time in a range
//!   (order is kept: a chunk never overtakes the one before it).
//! - [`ProxyHandle::set_drop`] / [`ProxyHandle::set_drop_in`]: drop whole
//!   chunks (whatever one `read` returned) with a probability. TCP itself
//!   never loses bytes, so this *corrupts the stream*: the receiver sees a
//!   frame cut short or glued to the middle of another, and shoal-rpc
//!   closes the connection (or times out waiting for bytes that never
//!   come) — exactly the "message lost" behaviour the RPC layer must
//!   survive. With probability 1 a direction goes silent.
//! - [`ProxyHandle::cut`] / [`ProxyHandle::heal`]: stop forwarding one way
//!   or both; bytes are held (the link stalls, TCP back-pressure builds)
//!   and delivered after `heal` if the connection still exists.
//! - [`ProxyHandle::reset_all`]: close every live connection with a TCP
//!   reset; new connections are accepted as usual.
//!
//! Random choices come from a seed: each connection and direction gets its
//! own generator derived from (seed, connection number, direction), so a
//! run is reproducible as far as the operating system's chunking of reads
//! allows.

use std::io;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use shoal_sim::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Which way bytes flow, relative to the proxied client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    ClientToServer,
    ServerToClient,
    Both,
}

impl Direction {
    fn covers(self, one_way: Direction) -> bool {
        self == Direction::Both || self == one_way
    }
}

#[derive(Debug, Clone)]
struct Faults {
    delay: Range<Duration>,
    /// Drop probability, [client→server, server→client].
    drop: [f64; 2],
    /// Cut flags, [client→server, server→client].
    cut: [bool; 2],
}

fn index(one_way: Direction) -> usize {
    match one_way {
        Direction::ClientToServer => 0,
        Direction::ServerToClient => 1,
        Direction::Both => unreachable!("a pump runs one way"),
    }
}

#[derive(Debug)]
struct Control {
    target: SocketAddr,
    seed: u64,
    faults: watch::Sender<Faults>,
    /// Cancelled by `reset_all`, then replaced for new connections.
    generation: Mutex<CancellationToken>,
    connections: AtomicU64,
    dropped: AtomicU64,
}

/// Starts proxies.
#[derive(Debug)]
pub struct Proxy;

impl Proxy {
    /// Starts a proxy on `listen` (a loopback address, port 0 for any)
    /// forwarding to `target`, with seed 0.
    pub async fn start(listen: SocketAddr, target: SocketAddr) -> io::Result<ProxyHandle> {
        Self::start_seeded(listen, target, 0).await
    }

    /// Like [`Proxy::start`] with an explicit seed for the random faults.
    pub async fn start_seeded(listen: SocketAddr, target: SocketAddr, seed: u64) -> io::Result<ProxyHandle> {
        if !listen.ip().is_loopback() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the test proxy binds loopback addresses only",
            ));
        }
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let (faults, _) =
            watch::channel(Faults { delay: Duration::ZERO..Duration::ZERO, drop: [0.0; 2], cut: [false; 2] });
        let ctl = Arc::new(Control {
            target,
            seed,
            faults,
            generation: Mutex::new(CancellationToken::new()),
            connections: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        });
        let token = CancellationToken::new();
        tokio::spawn(accept_loop(listener, ctl.clone(), token.clone()));
        Ok(ProxyHandle { addr, ctl, token })
    }
}

/// Controls a running proxy; dropping it stops the proxy and closes its
/// connections.
#[derive(Debug)]
pub struct ProxyHandle {
    addr: SocketAddr,
    ctl: Arc<Control>,
    token: CancellationToken,
}

impl ProxyHandle {
    /// The address clients should connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Delays every chunk by a uniform random time in `range` (empty range:
    /// exactly `range.start`).
    pub fn set_delay(&self, range: Range<Duration>) {
        self.ctl.faults.send_modify(|f| f.delay = range);
    }

    /// Drops chunks both ways with probability `p` (see the module docs:
    /// this corrupts the byte stream).
    pub fn set_drop(&self, p: f64) {
        self.set_drop_in(Direction::Both, p);
    }

    /// Drops chunks flowing in `dir` with probability `p`.
    pub fn set_drop_in(&self, dir: Direction, p: f64) {
        assert!((0.0..=1.0).contains(&p), "drop probability {p} outside [0, 1]");
        self.ctl.faults.send_modify(|f| {
            for one_way in [Direction::ClientToServer, Direction::ServerToClient] {
                if dir.covers(one_way) {
                    f.drop[index(one_way)] = p;
                }
            }
        });
    }

    /// Stops forwarding in `dir`; held bytes flow again after [`heal`].
    ///
    /// [`heal`]: ProxyHandle::heal
    pub fn cut(&self, dir: Direction) {
        self.ctl.faults.send_modify(|f| {
            for one_way in [Direction::ClientToServer, Direction::ServerToClient] {
                if dir.covers(one_way) {
                    f.cut[index(one_way)] = true;
                }
            }
        });
    }

    /// Removes every cut, drop and delay.
    pub fn heal(&self) {
        self.ctl.faults.send_modify(|f| {
            f.cut = [false; 2];
            f.drop = [0.0; 2];
            f.delay = Duration::ZERO..Duration::ZERO;
        });
    }

    /// Resets (RST) every live connection. The proxy keeps accepting.
    pub fn reset_all(&self) {
        let mut g = self.ctl.generation.lock().unwrap_or_else(|p| p.into_inner());
        g.cancel();
        *g = CancellationToken::new();
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.ctl.connections.load(Ordering::Relaxed)
    }

    /// Chunks dropped so far.
    pub fn dropped_chunks(&self) -> u64 {
        self.ctl.dropped.load(Ordering::Relaxed)
    }
}

impl Drop for ProxyHandle {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

async fn accept_loop(listener: TcpListener, ctl: Arc<Control>, token: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            _ = token.cancelled() => return,
            a = listener.accept() => a,
        };
        let Ok((client, _)) = accepted else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let n = ctl.connections.fetch_add(1, Ordering::Relaxed);
        let conn_token = {
            let g = ctl.generation.lock().unwrap_or_else(|p| p.into_inner());
            g.clone()
        };
        let stop = token.child_token();
        tokio::spawn(proxy_connection(client, ctl.clone(), n, conn_token, stop));
    }
}

async fn proxy_connection(
    client: TcpStream,
    ctl: Arc<Control>,
    n: u64,
    reset: CancellationToken,
    stop: CancellationToken,
) {
    let server = tokio::select! {
        _ = stop.cancelled() => return,
        _ = reset.cancelled() => return,
        s = TcpStream::connect(ctl.target) => match s {
            Ok(s) => s,
            Err(_) => return, // dropping `client` closes it
        },
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut c_rd, mut c_wr) = client.into_split();
    let (mut s_rd, mut s_wr) = server.into_split();
    let reset_now = {
        let c2s = pump(&mut c_rd, &mut s_wr, Direction::ClientToServer, &ctl, n);
        let s2c = pump(&mut s_rd, &mut c_wr, Direction::ServerToClient, &ctl, n);
        let both = async { tokio::join!(c2s, s2c) };
        tokio::select! {
            _ = stop.cancelled() => true,
            _ = reset.cancelled() => true,
            _ = both => false,
        }
    };
    if reset_now {
        // Abort both sockets (RST) instead of a graceful close.
        let _ = c_wr.as_ref().set_zero_linger();
        let _ = s_wr.as_ref().set_zero_linger();
    }
}

/// A uniform delay from `r` (`r.start` when the range is empty).
fn random_delay(rng: &mut Rng, r: &Range<Duration>) -> Duration {
    if r.end <= r.start {
        return r.start;
    }
    r.start + (r.end - r.start).mul_f64(rng.below(1 << 53) as f64 / (1u64 << 53) as f64)
}

/// Forwards one direction until end of stream or an error. Reading and
/// writing are separate so a delayed chunk does not stop the next one from
/// being read (delays overlap like latency, not add up).
async fn pump(rd: &mut OwnedReadHalf, wr: &mut OwnedWriteHalf, dir: Direction, ctl: &Control, n: u64) {
    let i = index(dir);
    let mut rng = Rng::new(ctl.seed ^ n.wrapping_mul(0x2545_f491_4f6c_dd1d) ^ ((i as u64 + 1) << 62));
    let (tx, mut rx) = mpsc::channel::<(Instant, bytes::Bytes)>(16);
    let mut faults_rx = ctl.faults.subscribe();
    let reader = async {
        let mut last = Instant::now();
        loop {
            let mut buf = BytesMut::with_capacity(16 * 1024);
            match rd.read_buf(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let f = ctl.faults.borrow().clone();
            if f.drop[i] > 0.0 && rng.chance(f.drop[i]) {
                ctl.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let at = (Instant::now() + random_delay(&mut rng, &f.delay)).max(last);
            last = at;
            if tx.send((at, buf.freeze())).await.is_err() {
                break;
            }
        }
        drop(tx);
    };
    let writer = async {
        while let Some((at, chunk)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            if faults_rx.wait_for(|f| !f.cut[i]).await.is_err() {
                break;
            }
            if wr.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    };
    tokio::join!(reader, writer);
}
