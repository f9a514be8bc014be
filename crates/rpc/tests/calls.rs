//! Round trips, multiplexing, timeouts and typed errors over real TCP.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::*;
use shoal_rpc::{RemoteError, RpcError, ServerOptions};
use tokio::io::AsyncWriteExt;

#[tokio::test]
async fn round_trip() {
    let svc = TestService::new();
    let server = start(svc.clone()).await;
    let c = client(server.local_addr(), opts(1000, 2));
    assert_eq!(c.call(&Req::Echo("hi".into())).await, Ok(Resp::Echo("hi".into())));
    assert_eq!(c.call(&Req::Add(2, 3)).await, Ok(Resp::Sum(5)));
    assert_eq!(c.call_once(&Req::Incr).await, Ok(Resp::Count(1)));
    assert_eq!(c.server_incarnation(), Some(server.incarnation()));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_concurrent_calls_share_one_connection() {
    let svc = TestService::new();
    let server = start(svc.clone()).await;
    let proxy = shoal_rpc::Proxy::start("127.0.0.1:0".parse().unwrap(), server.local_addr()).await.unwrap();
    let c = client(proxy.addr(), opts(5000, 0));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..1000u64 {
        let c = c.clone();
        tasks.spawn(async move {
            // Half plain, half at-most-once; every one sleeps a little so
            // they really overlap.
            if i % 2 == 0 {
                assert_eq!(c.call(&Req::Add(i, 1)).await.unwrap(), Resp::Sum(i + 1));
            } else {
                c.call_once(&Req::IncrSlow(20)).await.unwrap();
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    assert_eq!(svc.executions(), 500);
    assert_eq!(proxy.connections(), 1, "all calls multiplexed on one connection");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_run_concurrently() {
    let server = start(TestService::new()).await;
    let c = client(server.local_addr(), opts(2000, 0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let c = c.clone();
        tasks.spawn(async move { c.call(&Req::Sleep(200)).await });
    }
    while let Some(r) = tasks.join_next().await {
        assert_eq!(r.unwrap(), Ok(Resp::Done));
    }
    // 50 sequential sleeps would take 10 s.
    assert!(started.elapsed() < Duration::from_millis(1500), "{:?}", started.elapsed());
    server.shutdown().await;
}

#[tokio::test]
async fn timeout_after_the_resend_budget() {
    let svc = TestService::new();
    let server = start(svc.clone()).await;
    let c = client(server.local_addr(), opts(100, 2));
    let started = Instant::now();
    assert_eq!(c.call(&Req::Sleep(5_000)).await, Err(RpcError::Timeout));
    let took = started.elapsed();
    // Three attempts of 100 ms each (plus reconnects).
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(took < Duration::from_millis(2000), "{took:?}");
    // The client still works afterwards.
    assert_eq!(c.call(&Req::Add(1, 1)).await, Ok(Resp::Sum(2)));

    // A plain call is re-sent, so a slow mutating handler runs again.
    let c = client(server.local_addr(), opts(50, 2));
    assert_eq!(c.call(&Req::IncrSlow(400)).await, Err(RpcError::Timeout));
    assert_eq!(svc.executions(), 3, "plain calls are at-least-once on timeout");
    server.shutdown().await;
}

#[tokio::test]
async fn unreachable_after_the_resend_budget() {
    // A port with nothing listening: bind, note the port, close.
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let c = client(addr, opts(100, 3));
    let started = Instant::now();
    match c.call(&Req::Add(1, 2)).await {
        Err(RpcError::Unreachable(_)) => {}
        other => panic!("expected Unreachable, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(matches!(
        shoal_rpc::Client::<Req, Resp>::connect(addr, opts(100, 0)).await,
        Err(RpcError::Unreachable(_))
    ));
}

#[tokio::test]
async fn too_large_both_ways_and_remote_errors() {
    let svc = TestService::new();
    let server =
        start_with(svc.clone(), ServerOptions { max_frame: 64 * 1024, ..ServerOptions::default() }).await;
    let mut o = opts(1000, 1);
    o.max_frame = 64 * 1024;
    let c = client(server.local_addr(), o);
    // Request too large: refused before sending.
    match c.call(&Req::Echo("x".repeat(100_000))).await {
        Err(RpcError::TooLarge { size, max }) => assert!(size > max && max == 64 * 1024),
        other => panic!("expected TooLarge, got {other:?}"),
    }
    // Reply too large: the server says so instead of sending it.
    match c.call(&Req::Big(100_000)).await {
        Err(RpcError::TooLarge { size, max }) => assert!(size > max),
        other => panic!("expected TooLarge, got {other:?}"),
    }
    // A reply just under the limit goes through.
    assert_eq!(c.call(&Req::Big(60_000)).await, Ok(Resp::Big(vec![7; 60_000])));
    // A panicking handler: the caller gets an error, the server lives on.
    match c.call(&Req::Panic).await {
        Err(RpcError::Remote(RemoteError::Internal(_))) => {}
        other => panic!("expected Remote(Internal), got {other:?}"),
    }
    assert_eq!(c.call(&Req::Add(1, 2)).await, Ok(Resp::Sum(3)));
    server.shutdown().await;
}

#[tokio::test]
async fn notify_is_one_way_and_best_effort() {
    let svc = TestService::new();
    let server = start(svc.clone()).await;
    let c = client(server.local_addr(), opts(500, 0));
    // Not connected yet: dropped, but a connection starts in the background.
    assert!(c.notify(&Req::Incr).is_err());
    let deadline = Instant::now() + Duration::from_secs(2);
    while c.server_incarnation().is_none() {
        assert!(Instant::now() < deadline, "background connect did not happen");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for _ in 0..100 {
        c.notify(&Req::Incr).unwrap();
    }
    // A call after the notifies on the same connection is answered after
    // they were handled (notifies run in order on the reader).
    c.call(&Req::Add(0, 0)).await.unwrap();
    assert_eq!(svc.notified.load(Ordering::SeqCst), 100);
    assert_eq!(svc.executions(), 0, "notify must not run call()");
    server.shutdown().await;
}

#[tokio::test]
async fn reconnects_after_connection_loss() {
    let svc = TestService::new();
    let server = start(svc.clone()).await;
    let proxy = shoal_rpc::Proxy::start("127.0.0.1:0".parse().unwrap(), server.local_addr()).await.unwrap();
    let c = client(proxy.addr(), opts(1000, 3));
    assert_eq!(c.call(&Req::Add(1, 1)).await, Ok(Resp::Sum(2)));
    // Reset mid-call: the in-flight call fails over to a new connection.
    let call = {
        let c = c.clone();
        tokio::spawn(async move { c.call(&Req::Sleep(300)).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    proxy.reset_all();
    assert_eq!(call.await.unwrap(), Ok(Resp::Done));
    assert_eq!(c.call(&Req::Add(2, 2)).await, Ok(Resp::Sum(4)));
    assert!(proxy.connections() >= 2);
    server.shutdown().await;
}

#[tokio::test]
async fn protocol_error_from_a_non_rpc_server() {
    // Something that answers with junk instead of a hello.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else { return };
            let _ = s.write_all(b"\x00\x00\x00\x05\x09hello").await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    match shoal_rpc::Client::<Req, Resp>::connect(addr, opts(300, 0)).await {
        Err(RpcError::Protocol(m)) => assert!(m.contains("version"), "{m}"),
        other => panic!("expected Protocol, got {other:?}"),
    }
    let c = client(addr, opts(300, 1));
    assert!(matches!(c.call(&Req::Add(1, 1)).await, Err(RpcError::Protocol(_))));
}

/// A request type the server does not know: variant 10 does not exist in
/// the server's `Req`.
#[derive(Debug, serde::Serialize)]
#[allow(dead_code)]
enum Alien {
    A,
    B,
    C,
    D,
    E,
    F,
    G,
    H,
    I,
    J,
    K(u64),
}

#[tokio::test]
async fn mismatched_request_type_is_a_bad_request() {
    let svc = TestService::new();
    let server = start(svc.clone()).await;
    let good = client(server.local_addr(), opts(1000, 0));
    good.call(&Req::Add(1, 1)).await.unwrap();
    let alien: shoal_rpc::Client<Alien, Resp> = shoal_rpc::Client::new(server.local_addr(), opts(1000, 3));
    match alien.call(&Alien::K(5)).await {
        Err(RpcError::Remote(RemoteError::BadRequest(_))) => {}
        other => panic!("expected BadRequest, got {other:?}"),
    }
    assert_eq!(good.call(&Req::Add(2, 2)).await, Ok(Resp::Sum(4)));
    assert_eq!(svc.executions(), 0);
    server.shutdown().await;
}
