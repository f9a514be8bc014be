//! A small test service and a raw wire client shared by the suites.
#![allow(dead_code, clippy::unwrap_used)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use serde::{Deserialize, Serialize};
use shoal_rpc::wire::{self, Envelope, FrameDecoder, FrameEncoder, OnceHeader};
use shoal_rpc::{Client, ClientOptions, RemoteError, Server, ServerOptions, Service};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::Notify;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Req {
    Echo(String),
    Add(u64, u64),
    /// Counts an execution and returns the count after it.
    Incr,
    /// Counts an execution, then sleeps this many milliseconds.
    IncrSlow(u64),
    /// Counts an execution, then waits until `release` is notified.
    IncrBlocked,
    Sleep(u64),
    Big(usize),
    Panic,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Resp {
    Echo(String),
    Sum(u64),
    Count(u64),
    Done,
    Big(Vec<u8>),
}

#[derive(Debug, Default)]
pub struct TestService {
    pub executions: AtomicU64,
    pub notified: AtomicU64,
    pub release: Notify,
}

impl TestService {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn executions(&self) -> u64 {
        self.executions.load(Ordering::SeqCst)
    }
}

impl Service for TestService {
    type Request = Req;
    type Response = Resp;

    async fn call(&self, req: Req) -> Resp {
        match req {
            Req::Echo(s) => Resp::Echo(s),
            Req::Add(a, b) => Resp::Sum(a.wrapping_add(b)),
            Req::Incr => Resp::Count(self.executions.fetch_add(1, Ordering::SeqCst) + 1),
            Req::IncrSlow(ms) => {
                let n = self.executions.fetch_add(1, Ordering::SeqCst) + 1;
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Resp::Count(n)
            }
            Req::IncrBlocked => {
                let n = self.executions.fetch_add(1, Ordering::SeqCst) + 1;
                self.release.notified().await;
                Resp::Count(n)
            }
            Req::Sleep(ms) => {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Resp::Done
            }
            Req::Big(n) => Resp::Big(vec![7; n]),
            Req::Panic => panic!("handler asked to panic"),
        }
    }

    async fn notify(&self, _msg: Req) {
        self.notified.fetch_add(1, Ordering::SeqCst);
    }
}

pub async fn start(svc: Arc<TestService>) -> Server {
    start_with(svc, ServerOptions::default()).await
}

pub async fn start_with(svc: Arc<TestService>, opts: ServerOptions) -> Server {
    Server::bind("127.0.0.1:0", svc, opts).await.unwrap()
}

pub fn opts(timeout_ms: u64, retries: u32) -> ClientOptions {
    ClientOptions {
        timeout: Duration::from_millis(timeout_ms),
        retries,
        connect_timeout: Duration::from_millis(timeout_ms.max(200)),
        ..ClientOptions::default()
    }
}

pub fn client(addr: impl ToString, o: ClientOptions) -> Client<Req, Resp> {
    Client::new(addr, o)
}

/// A client that speaks the wire format by hand, to forge headers.
pub struct RawConn {
    pub stream: TcpStream,
    pub dec: FrameDecoder,
    pub incarnation: u64,
}

impl RawConn {
    pub async fn connect(addr: std::net::SocketAddr) -> RawConn {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let mut dec = FrameDecoder::new(wire::DEFAULT_MAX_FRAME);
        let hello = dec.read_frame(&mut stream).await.unwrap().unwrap();
        let incarnation = match wire::decode_payload::<(), ()>(&hello).unwrap() {
            Envelope::Hello { incarnation } => incarnation,
            other => panic!("expected hello, got {other:?}"),
        };
        RawConn { stream, dec, incarnation }
    }

    pub async fn send(&mut self, env: &Envelope<Req, ()>) {
        let blob = wire::encode_payload(env).unwrap();
        let mut out = BytesMut::new();
        FrameEncoder::new(wire::DEFAULT_MAX_FRAME).encode(&blob, &mut out).unwrap();
        self.stream.write_all(&out).await.unwrap();
    }

    pub async fn recv(&mut self) -> (u64, Result<Resp, RemoteError>) {
        let frame = tokio::time::timeout(Duration::from_secs(5), self.dec.read_frame(&mut self.stream))
            .await
            .expect("reply within 5 s")
            .unwrap()
            .expect("connection open");
        match wire::decode_payload::<(), Resp>(&frame).unwrap() {
            Envelope::Response { id, result } => (id, result),
            other => panic!("expected a response, got {other:?}"),
        }
    }

    /// Sends an at-most-once request and returns its result.
    pub async fn call_once(&mut self, id: u64, h: OnceHeader, body: Req) -> Result<Resp, RemoteError> {
        self.send(&Envelope::Request { id, once: Some(h), body }).await;
        let (rid, result) = self.recv().await;
        assert_eq!(rid, id);
        result
    }
}

/// Reads until the peer closes; panics if it does not within `secs`.
pub async fn expect_closed(stream: &mut TcpStream, secs: u64) {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => panic!("server did not close the connection within {secs} s"),
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(_)) => continue, // the hello, or replies before the bad frame
        }
    }
}
