//! Loopback calls/s and latency: `cargo run --release -p shoal-rpc --example rpc_bench [secs]`.
//! A hand check, not a test.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use shoal_rpc::{Client, ClientOptions, Server, ServerOptions, Service};

#[derive(Debug, Serialize, Deserialize)]
enum Req {
    Put { key: u64, value: Vec<u8> },
}

#[derive(Debug, Serialize, Deserialize)]
enum Resp {
    Ok(u64),
}

struct Echo;

impl Service for Echo {
    type Request = Req;
    type Response = Resp;
    async fn call(&self, req: Req) -> Resp {
        let Req::Put { key, value } = req;
        Resp::Ok(key + value.len() as u64)
    }
}

async fn run(client: &Client<Req, Resp>, callers: usize, once: bool, dur: Duration) -> (f64, Vec<Duration>) {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..callers {
        let c = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let req = Req::Put { key: i as u64, value: vec![0; 100] };
            while start.elapsed() < dur {
                let t = Instant::now();
                let r = if once { c.call_once(&req).await } else { c.call(&req).await };
                if r.is_ok() {
                    lat.push(t.elapsed());
                }
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        if let Ok(l) = t.await {
            all.extend(l);
        }
    }
    let secs = start.elapsed().as_secs_f64();
    all.sort_unstable();
    (all.len() as f64 / secs, all)
}

fn pct(v: &[Duration], p: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    v[((v.len() - 1) as f64 * p) as usize]
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let secs: u64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(3);
    let server = Server::bind("127.0.0.1:0", Arc::new(Echo), ServerOptions::default()).await?;
    let client: Client<Req, Resp> = Client::new(server.local_addr(), ClientOptions::default());
    for once in [false, true] {
        for callers in [1, 64] {
            let (rate, lat) = run(&client, callers, once, Duration::from_secs(secs)).await;
            println!(
                "{:9} callers={callers:3}  {rate:9.0} calls/s  p50={:?} p99={:?}",
                if once { "call_once" } else { "call" },
                pct(&lat, 0.5),
                pct(&lat, 0.99)
            );
        }
    }
    server.shutdown().await;
    Ok(())
}
