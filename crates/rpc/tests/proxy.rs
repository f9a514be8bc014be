//! The fault-injecting proxy itself.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use shoal_rpc::{Direction, Proxy, RpcError};

#[tokio::test]
async fn delay_cut_heal_reset() {
    let server = start(TestService::new()).await;
    let proxy = Proxy::start("127.0.0.1:0".parse().unwrap(), server.local_addr()).await.unwrap();
    let c = client(proxy.addr(), opts(1000, 0));
    assert_eq!(c.call(&Req::Add(1, 2)).await, Ok(Resp::Sum(3)));

    // Delay applies each way: a round trip takes at least twice the minimum.
    proxy.set_delay(Duration::from_millis(40)..Duration::from_millis(50));
    let t = Instant::now();
    assert_eq!(c.call(&Req::Add(1, 2)).await, Ok(Resp::Sum(3)));
    let rtt = t.elapsed();
    assert!(rtt >= Duration::from_millis(80) && rtt < Duration::from_millis(500), "{rtt:?}");
    proxy.heal();

    // A cut link stalls; the call times out.
    proxy.cut(Direction::Both);
    assert_eq!(c.call(&Req::Add(1, 2)).await, Err(RpcError::Timeout));
    proxy.heal();
    let c = client(proxy.addr(), opts(1000, 1));
    assert_eq!(c.call(&Req::Add(2, 2)).await, Ok(Resp::Sum(4)));

    // reset_all closes live connections; the client reconnects.
    let before = proxy.connections();
    proxy.reset_all();
    assert_eq!(c.call(&Req::Add(3, 3)).await, Ok(Resp::Sum(6)));
    assert_eq!(proxy.connections(), before + 1);
    server.shutdown().await;
}

#[tokio::test]
async fn binds_loopback_only() {
    let target = "127.0.0.1:9".parse().unwrap();
    assert!(Proxy::start("0.0.0.0:0".parse().unwrap(), target).await.is_err());
}
