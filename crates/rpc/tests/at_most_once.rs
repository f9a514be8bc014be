//! At-most-once execution (RPC-3): re-sends through a lossy proxy, waits on
//! running duplicates, restarts, and the reply table's bounds.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use shoal_rpc::wire::OnceHeader;
use shoal_rpc::{Direction, Proxy, RemoteError, RpcError, Server, ServerOptions};

async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn lost_reply_is_replayed_not_re_executed() {
    let svc = TestService::new();
    let server = start(svc.clone()).await;
    let proxy = Proxy::start_seeded("127.0.0.1:0".parse().unwrap(), server.local_addr(), 7).await.unwrap();
    let c = client(proxy.addr(), opts(150, 20));
    c.call(&Req::Add(1, 1)).await.unwrap(); // connected
    proxy.set_drop_in(Direction::ServerToClient, 1.0);
    let call = {
        let c = c.clone();
        tokio::spawn(async move { c.call_once(&Req::Incr).await })
    };
    wait_until("the first execution", || svc.executions() == 1).await;
    // Let a few re-sends hit the dead link before it heals.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(proxy.dropped_chunks() >= 1);
    proxy.heal();
    assert_eq!(call.await.unwrap(), Ok(Resp::Count(1)));
    assert_eq!(svc.executions(), 1, "executed exactly once");
    assert!(proxy.connections() >= 2, "the client reconnected to re-send");
    server.shutdown().await;
}

#[tokio::test]
async fn cut_reply_link_then_heal() {
    let svc = TestService::new();
    let server = start(svc.clone()).await;
    let proxy = Proxy::start_seeded("127.0.0.1:0".parse().unwrap(), server.local_addr(), 11).await.unwrap();
    let c = client(proxy.addr(), opts(150, 20));
    c.call(&Req::Add(1, 1)).await.unwrap();
    proxy.cut(Direction::ServerToClient);
    let call = {
        let c = c.clone();
        tokio::spawn(async move { c.call_once(&Req::Incr).await })
    };
    wait_until("the first execution", || svc.executions() == 1).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    proxy.heal();
    assert_eq!(call.await.unwrap(), Ok(Resp::Count(1)));
    assert_eq!(svc.executions(), 1);
    // Cutting the request direction instead: nothing executes until heal.
    proxy.cut(Direction::ClientToServer);
    let call = {
        let c = c.clone();
        tokio::spawn(async move { c.call_once(&Req::Incr).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(svc.executions(), 1, "nothing got through the cut");
    proxy.heal();
    assert_eq!(call.await.unwrap(), Ok(Resp::Count(2)));
    assert_eq!(svc.executions(), 2);
    server.shutdown().await;
}

#[tokio::test]
async fn duplicate_of_a_running_call_waits_for_it() {
    let svc = TestService::new();
    let server = start(svc.clone()).await;
    // Timeout 100 ms, handler 600 ms: five or so re-sends arrive while the
    // first is still running.
    let c = client(server.local_addr(), opts(100, 20));
    assert_eq!(c.call_once(&Req::IncrSlow(600)).await, Ok(Resp::Count(1)));
    assert_eq!(svc.executions(), 1);
    server.shutdown().await;
}

#[tokio::test]
async fn many_lossy_at_most_once_calls_execute_once_each() {
    let svc = TestService::new();
    let server = start(svc.clone()).await;
    let proxy = Proxy::start_seeded("127.0.0.1:0".parse().unwrap(), server.local_addr(), 3).await.unwrap();
    proxy.set_delay(Duration::from_millis(0)..Duration::from_millis(5));
    let c = client(proxy.addr(), opts(200, 50));
    c.call(&Req::Add(0, 0)).await.unwrap();
    proxy.set_drop_in(Direction::ServerToClient, 0.2);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..40 {
        let c = c.clone();
        tasks.spawn(async move { c.call_once(&Req::Incr).await });
    }
    let healer = async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        proxy.heal();
    };
    let mut counts = Vec::new();
    let collect = async {
        while let Some(r) = tasks.join_next().await {
            match r.unwrap() {
                Ok(Resp::Count(n)) => counts.push(n),
                other => panic!("unexpected {other:?}"),
            }
        }
    };
    tokio::join!(healer, collect);
    counts.sort_unstable();
    assert_eq!(counts, (1..=40).collect::<Vec<_>>(), "each call executed once, replies match");
    assert_eq!(svc.executions(), 40);
    server.shutdown().await;
}

#[tokio::test]
async fn restarted_server_rejects_an_old_call() {
    let svc = TestService::new();
    let server = start(svc.clone()).await;
    let addr = server.local_addr();
    let old_incarnation = server.incarnation();
    let c = client(addr, opts(200, 30));
    c.call_once(&Req::Add(1, 1)).await.unwrap();
    let call = {
        let c = c.clone();
        tokio::spawn(async move { c.call_once(&Req::IncrBlocked).await })
    };
    wait_until("the first execution", || svc.executions() == 1).await;
    // Crash: the running handler is cancelled, the table is gone.
    server.shutdown().await;
    let server = Server::bind(addr, svc.clone(), ServerOptions::default()).await.unwrap();
    assert_ne!(server.incarnation(), old_incarnation);
    assert_eq!(call.await.unwrap(), Err(RpcError::ServerRestarted));
    assert_eq!(svc.executions(), 1, "never executed by the new incarnation");
    // The same client carries on with a new session.
    assert_eq!(c.call_once(&Req::Incr).await, Ok(Resp::Count(2)));
    assert_eq!(c.server_incarnation(), Some(server.incarnation()));
    server.shutdown().await;
}

fn hdr(raw: &RawConn, client: u64, seq: u64, acked_below: u64) -> OnceHeader {
    OnceHeader { client, seq, acked_below, incarnation: raw.incarnation }
}

#[tokio::test]
async fn reply_table_semantics_on_the_wire() {
    let svc = TestService::new();
    let server = start(svc.clone()).await;
    let mut raw = RawConn::connect(server.local_addr()).await;
    let h = |seq, acked| hdr(&raw, 42, seq, acked);
    let (h00, h10, h22, h02) = (h(0, 0), h(1, 0), h(2, 2), h(0, 2));
    assert_eq!(raw.call_once(1, h00, Req::Incr).await, Ok(Resp::Count(1)));
    // A duplicate, even with another call id and body, gets the saved reply.
    assert_eq!(raw.call_once(2, h00, Req::Incr).await, Ok(Resp::Count(1)));
    assert_eq!(raw.call_once(3, h10, Req::Incr).await, Ok(Resp::Count(2)));
    // acked_below = 2 frees seqs 0 and 1; a late duplicate of 0 is refused.
    assert_eq!(raw.call_once(4, h22, Req::Incr).await, Ok(Resp::Count(3)));
    assert_eq!(raw.call_once(5, h02, Req::Incr).await, Err(RemoteError::Expired));
    // Another incarnation's stamp.
    let mut stale = hdr(&raw, 42, 3, 3);
    stale.incarnation ^= 1;
    assert_eq!(raw.call_once(6, stale, Req::Incr).await, Err(RemoteError::ServerRestarted));
    // An unknown client that claims to have seen replies.
    let lost = hdr(&raw, 43, 9, 5);
    assert_eq!(raw.call_once(7, lost, Req::Incr).await, Err(RemoteError::SessionExpired));
    // A panicking handler's outcome is saved too: its duplicate is not re-run.
    let p = hdr(&raw, 42, 3, 3);
    let first = raw.call_once(8, p, Req::Panic).await;
    assert!(matches!(first, Err(RemoteError::Internal(_))), "{first:?}");
    assert_eq!(raw.call_once(9, p, Req::Incr).await, first);
    assert_eq!(svc.executions(), 3);
    server.shutdown().await;
}

#[tokio::test]
async fn reply_table_is_bounded() {
    let svc = TestService::new();
    let server = start_with(
        svc.clone(),
        ServerOptions { max_replies_per_client: 4, max_clients: 2, ..ServerOptions::default() },
    )
    .await;
    let mut raw = RawConn::connect(server.local_addr()).await;
    // A client that never acknowledges anything.
    for seq in 0..10 {
        let h = hdr(&raw, 1, seq, 0);
        assert_eq!(raw.call_once(seq, h, Req::Incr).await, Ok(Resp::Count(seq + 1)));
    }
    let old = hdr(&raw, 1, 0, 0);
    assert_eq!(raw.call_once(100, old, Req::Incr).await, Err(RemoteError::Expired));
    let recent = hdr(&raw, 1, 9, 0);
    assert_eq!(raw.call_once(101, recent, Req::Incr).await, Ok(Resp::Count(10)));
    // Two sessions fit; a third is refused.
    let h2 = hdr(&raw, 2, 0, 0);
    assert_eq!(raw.call_once(102, h2, Req::Incr).await, Ok(Resp::Count(11)));
    let h3 = hdr(&raw, 3, 0, 0);
    assert_eq!(raw.call_once(103, h3, Req::Incr).await, Err(RemoteError::Overloaded));
    assert_eq!(svc.executions(), 11);
    server.shutdown().await;
}

#[tokio::test]
async fn idle_sessions_are_evicted_and_old_calls_refused() {
    let svc = TestService::new();
    let server = start_with(
        svc.clone(),
        ServerOptions { client_idle_timeout: Duration::from_millis(200), ..ServerOptions::default() },
    )
    .await;
    let mut raw = RawConn::connect(server.local_addr()).await;
    let (a0, a1) = (hdr(&raw, 7, 0, 0), hdr(&raw, 7, 1, 0));
    assert_eq!(raw.call_once(1, a0, Req::Incr).await, Ok(Resp::Count(1)));
    assert_eq!(raw.call_once(2, a1, Req::Incr).await, Ok(Resp::Count(2)));
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Any request sweeps idle sessions.
    let other = hdr(&raw, 8, 0, 0);
    assert_eq!(raw.call_once(3, other, Req::Add(1, 1)).await, Ok(Resp::Sum(2)));
    // Client 7 was evicted: a duplicate of seq 1 (it has seen seq 0's reply)
    // is refused rather than run again.
    let dup = hdr(&raw, 7, 1, 1);
    assert_eq!(raw.call_once(4, dup, Req::Incr).await, Err(RemoteError::SessionExpired));
    assert_eq!(svc.executions(), 2);

    // Through the real client the expiry is invisible: a fresh call under an
    // evicted session starts a new session and runs once.
    let c = client(server.local_addr(), opts(500, 2));
    assert_eq!(c.call_once(&Req::Incr).await, Ok(Resp::Count(3)));
    tokio::time::sleep(Duration::from_millis(300)).await;
    c.call_once(&Req::Add(0, 0)).await.unwrap(); // sweeps
    assert_eq!(c.call_once(&Req::Incr).await, Ok(Resp::Count(4)));
    assert_eq!(svc.executions(), 4);
    server.shutdown().await;
}
