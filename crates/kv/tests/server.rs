//! Three real key/value servers in this process, on 127.0.0.1 and real
//! data directories: the client library against them, a leader that dies,
//! and a restart from disk.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use bytes::Bytes;
use shoal_kv::{connect, KvClient, KvServer, ServerConfig};

fn free_addrs(n: usize) -> Vec<SocketAddr> {
    let listeners: Vec<TcpListener> = (0..n).map(|_| TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    listeners.iter().map(|l| l.local_addr().unwrap()).collect()
}

fn config(id: u64, addrs: &[SocketAddr], dir: &std::path::Path) -> ServerConfig {
    let peers: BTreeMap<u64, String> =
        addrs.iter().enumerate().map(|(i, a)| (i as u64 + 1, a.to_string())).collect();
    let mut cfg = ServerConfig::new(id, addrs[id as usize - 1], peers, dir.join(format!("node{id}")));
    cfg.max_raft_state = Some(4096);
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_serves_survives_its_leader_and_restarts() {
    let tmp = tempfile::tempdir().unwrap();
    let addrs = free_addrs(3);
    let mut servers = Vec::new();
    for id in 1..=3 {
        servers.push(Some(KvServer::start(config(id, &addrs, tmp.path())).await.unwrap()));
    }
    let conns = connect(&addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>(), Duration::from_millis(500))
        .unwrap();
    let mut client = KvClient::new(conns.clone());

    client.put("k", "v1").await.unwrap();
    assert_eq!(client.get("k").await.unwrap(), Some(Bytes::from("v1")));
    client.append("k", "+2").await.unwrap();
    assert_eq!(client.get("k").await.unwrap(), Some(Bytes::from("v1+2")));
    assert!(!client.cas("k", Some(Bytes::from("nope")), "x").await.unwrap().0);
    assert!(client.cas("k", Some(Bytes::from("v1+2")), "v3").await.unwrap().0);
    client.delete("gone").await.unwrap();
    assert_eq!(client.get("gone").await.unwrap(), None);
    // Enough writes that the servers snapshot (max_raft_state 4 KiB).
    for i in 0..300 {
        client.put(format!("key{i}"), format!("value{i}")).await.unwrap();
    }

    // Kill the leader: the others elect a new one and keep serving.
    let leader =
        servers.iter().position(|s| s.as_ref().unwrap().status().role == shoal_raft::Role::Leader).unwrap();
    servers[leader].take().unwrap().shutdown().await;
    client.put("after", "crash").await.unwrap();
    assert_eq!(client.get("key7").await.unwrap(), Some(Bytes::from("value7")));

    // Bring it back from its files; it catches up and the data is all there.
    servers[leader] = Some(KvServer::start(config(leader as u64 + 1, &addrs, tmp.path())).await.unwrap());
    for i in 0..50 {
        client.append("log", format!("{i},")).await.unwrap();
    }
    // Restart everyone: nothing acknowledged is lost.
    for s in servers.iter_mut() {
        s.take().unwrap().shutdown().await;
    }
    for id in 1..=3u64 {
        servers[id as usize - 1] = Some(KvServer::start(config(id, &addrs, tmp.path())).await.unwrap());
    }
    let mut client = KvClient::new(conns);
    assert_eq!(client.get("after").await.unwrap(), Some(Bytes::from("crash")));
    assert_eq!(client.get("key299").await.unwrap(), Some(Bytes::from("value299")));
    let log = client.get("log").await.unwrap().unwrap();
    let expected: String = (0..50).map(|i| format!("{i},")).collect();
    assert_eq!(log, Bytes::from(expected));
    for s in servers {
        s.unwrap().shutdown().await;
    }
}
