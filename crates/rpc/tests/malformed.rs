//! Bad input (RPC-4): each bad connection is closed, nobody else notices.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use shoal_rpc::wire::{self, Envelope, VERSION};
use shoal_rpc::{Client, ServerOptions};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

fn frame(body: &[u8]) -> Vec<u8> {
    let mut f = (body.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(body);
    f
}

fn valid_request() -> Vec<u8> {
    let env = Envelope::<Req, ()>::Request { id: 1, once: None, body: Req::Add(1, 2) };
    frame(&wire::encode_payload(&env).unwrap())
}

/// Sends `bytes` on a fresh raw connection (optionally half-closing after)
/// and checks the server closes it.
async fn assert_closes(addr: SocketAddr, bytes: &[u8], half_close: bool) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    if half_close {
        s.shutdown().await.unwrap();
    }
    expect_closed(&mut s, 5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_connections_are_closed_and_others_keep_working() {
    let svc = TestService::new();
    let server =
        start_with(svc.clone(), ServerOptions { max_frame: 1 << 20, ..ServerOptions::default() }).await;
    let addr = server.local_addr();
    // A well-behaved client, connected throughout.
    let good: Client<Req, Resp> = client(addr, opts(2000, 0));
    assert_eq!(good.call(&Req::Add(1, 1)).await, Ok(Resp::Sum(2)));

    let mut wrong_version = valid_request();
    wrong_version[4] = VERSION.wrapping_add(1);
    let cases: Vec<(&str, Vec<u8>, bool)> = vec![
        ("garbage", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), false),
        ("wrong version", wrong_version, false),
        ("oversized length prefix", vec![0xff, 0xff, 0xff, 0xff, VERSION, 0, 0], false),
        ("just over the maximum", ((1u32 << 20) + 1).to_be_bytes().to_vec(), false),
        ("truncated frame", valid_request()[..7].to_vec(), true),
        ("empty frame", frame(&[]), false),
        ("undecodable payload", frame(&[VERSION, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]), false),
        ("unknown variant", frame(&[VERSION, 9, 1, 2, 3]), false),
        (
            "trailing junk",
            {
                let mut f = valid_request();
                f.push(0);
                let n = (f.len() - 4) as u32;
                f[..4].copy_from_slice(&n.to_be_bytes());
                f
            },
            false,
        ),
        (
            "response sent to a server",
            frame(
                &wire::encode_payload(&Envelope::<(), Resp>::Response { id: 1, result: Ok(Resp::Done) })
                    .unwrap(),
            ),
            false,
        ),
        ("a good request then garbage", [valid_request(), b"\x00\x00\x00\x03zzz".to_vec()].concat(), false),
    ];
    for (name, bytes, half_close) in &cases {
        assert_closes(addr, bytes, *half_close).await;
        assert_eq!(
            good.call(&Req::Add(2, 3)).await,
            Ok(Resp::Sum(5)),
            "good client broken after case {name:?}"
        );
    }
    // All at once, interleaved with good calls.
    let mut tasks = tokio::task::JoinSet::new();
    for (_, bytes, half_close) in cases {
        tasks.spawn(async move { assert_closes(addr, &bytes, half_close).await });
    }
    for i in 0..20 {
        assert_eq!(good.call(&Req::Add(i, i)).await, Ok(Resp::Sum(2 * i)));
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    // The good client never had to reconnect.
    assert_eq!(good.server_incarnation(), Some(server.incarnation()));
    server.shutdown().await;
}

#[tokio::test]
async fn a_slow_partial_frame_does_not_block_others() {
    let server = start(TestService::new()).await;
    let addr = server.local_addr();
    // Half a frame, then silence: only this connection waits.
    let mut stuck = TcpStream::connect(addr).await.unwrap();
    stuck.write_all(&valid_request()[..6]).await.unwrap();
    let good: Client<Req, Resp> = client(addr, opts(1000, 0));
    for i in 0..10 {
        assert_eq!(good.call(&Req::Add(i, 1)).await, Ok(Resp::Sum(i + 1)));
    }
    drop(stuck);
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(good.call(&Req::Add(1, 1)).await, Ok(Resp::Sum(2)));
    server.shutdown().await;
}
