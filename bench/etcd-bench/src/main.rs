//! `etcd-bench`: the workload of `shoal bench kv`, against etcd.
//!
//! C logical clients share `--connections` etcd clients (each one gRPC
//! channel balanced over every endpoint, as etcd's own clients connect)
//! round-robin, and issue `--ops` operations between them: a linearizable
//! Range (etcd's default, ReadIndex on the server) with probability
//! `--read-ratio`, else a Put of a `--value-size`-byte value, on a key drawn
//! uniformly from `--keys` keys. Every client makes one unrecorded Get
//! before the clock starts. The output has the same table and `RESULT ...`
//! lines as `shoal bench kv`, for `bench/kv-vs-etcd.sh`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use etcd_client::{Client, KvClient};
use hdrhistogram::Histogram;

#[derive(Debug, Parser)]
#[command(name = "etcd-bench", about = "The workload of `shoal bench kv`, against etcd")]
struct Args {
    /// etcd client endpoints, comma-separated (HOST:PORT,...).
    #[arg(long, value_delimiter = ',', required = true)]
    cluster: Vec<String>,
    #[arg(long, default_value_t = 16)]
    clients: usize,
    #[arg(long, default_value_t = 100_000)]
    ops: u64,
    #[arg(long, default_value_t = 100)]
    value_size: usize,
    #[arg(long, default_value_t = 10_000)]
    keys: u64,
    #[arg(long, default_value = "key")]
    key_prefix: String,
    #[arg(long, default_value_t = 0.0)]
    read_ratio: f64,
    /// etcd clients (gRPC channels) that the logical clients share round-robin.
    #[arg(long, default_value_t = 8)]
    connections: usize,
    #[arg(long, default_value_t = 10)]
    timeout_secs: u64,
    #[arg(long)]
    threads: Option<usize>,
    #[arg(long)]
    seed: Option<u64>,
    #[arg(long, default_value = "etcd")]
    label: String,
}

/// A small seeded generator (splitmix64): the workload needs no more.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p && p > 0.0
    }
}

struct Tally {
    latency: Histogram<u64>,
    errors: u64,
}

impl Tally {
    fn new() -> Self {
        let latency = Histogram::new_with_bounds(1, 60_000_000, 3).expect("constant bounds are valid");
        Tally { latency, errors: 0 }
    }

    fn record(&mut self, elapsed: Duration, ok: bool) {
        if ok {
            self.latency.saturating_record((elapsed.as_micros() as u64).clamp(1, 60_000_000));
        } else {
            self.errors += 1;
        }
    }

    fn merge(&mut self, other: &Tally) {
        let _ = self.latency.add(&other.latency);
        self.errors += other.errors;
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.clients == 0 || args.connections == 0 || args.keys == 0 {
        bail!("--clients, --connections and --keys must be at least 1");
    }
    if !(0.0..=1.0).contains(&args.read_ratio) {
        bail!("--read-ratio must be between 0 and 1");
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.unwrap_or(cpus).max(1))
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let r = runtime.block_on(bench(&args));
    runtime.shutdown_timeout(Duration::from_secs(1));
    r
}

async fn bench(args: &Args) -> Result<()> {
    let mut sets: Vec<KvClient> = Vec::new();
    for _ in 0..args.connections {
        let client = Client::connect(&args.cluster, None)
            .await
            .with_context(|| format!("connecting to etcd at {}", args.cluster.join(",")))?;
        sets.push(client.kv_client());
    }
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)
    });
    let mut seeds = Rng(seed);
    let next_op = Arc::new(AtomicU64::new(0));
    let barrier = Arc::new(tokio::sync::Barrier::new(args.clients + 1));
    let pad = "x".repeat(args.value_size);
    let timeout = Duration::from_secs(args.timeout_secs);
    let mut tasks = Vec::new();
    for c in 0..args.clients {
        let mut kv = sets[c % sets.len()].clone();
        let mut rng = Rng(seeds.next_u64());
        let (next_op, barrier, pad) = (next_op.clone(), barrier.clone(), pad.clone());
        let (ops, keys, ratio, size, prefix) =
            (args.ops, args.keys, args.read_ratio, args.value_size, args.key_prefix.clone());
        tasks.push(tokio::spawn(async move {
            let _ = tokio::time::timeout(timeout, kv.get(format!("{prefix}0"), None)).await;
            barrier.wait().await;
            let (mut gets, mut puts) = (Tally::new(), Tally::new());
            let mut written = 0u64;
            while next_op.fetch_add(1, Ordering::Relaxed) < ops {
                let key = format!("{prefix}{}", rng.below(keys));
                if rng.chance(ratio) {
                    let t = Instant::now();
                    let r = tokio::time::timeout(timeout, kv.get(key, None)).await;
                    gets.record(t.elapsed(), matches!(r, Ok(Ok(_))));
                } else {
                    written += 1;
                    let mut value = format!("{c}.{written}.");
                    if value.len() < size {
                        value.push_str(&pad[..size - value.len()]);
                    } else {
                        value.truncate(size);
                    }
                    let t = Instant::now();
                    let r = tokio::time::timeout(timeout, kv.put(key, value, None)).await;
                    puts.record(t.elapsed(), matches!(r, Ok(Ok(_))));
                }
            }
            (gets, puts)
        }));
    }
    barrier.wait().await;
    let started = Instant::now();
    let (mut gets, mut puts) = (Tally::new(), Tally::new());
    for t in tasks {
        let (g, p) = t.await.context("a client task failed")?;
        gets.merge(&g);
        puts.merge(&p);
    }
    let secs = started.elapsed().as_secs_f64();

    println!(
        "etcd-bench: {} endpoints, {} clients over {} connections, {} ops ({:.0}% reads), \
         {}-byte values, {} keys, seed {seed}",
        args.cluster.len(),
        args.clients,
        args.connections,
        args.ops,
        args.read_ratio * 100.0,
        args.value_size,
        args.keys
    );
    println!();
    println!(
        "{:>5} {:>9} {:>7} {:>8} {:>10} {:>9} {:>9} {:>9} {:>9}",
        "op", "ops", "errors", "seconds", "ops/s", "p50 ms", "p99 ms", "p999 ms", "max ms"
    );
    let mut results = Vec::new();
    for (name, t) in [("get", &gets), ("put", &puts)] {
        let n = t.latency.len();
        if n == 0 && t.errors == 0 {
            continue;
        }
        let ms = |q: f64| t.latency.value_at_quantile(q) as f64 / 1000.0;
        let rate = n as f64 / secs;
        println!(
            "{name:>5} {n:>9} {:>7} {secs:>8.2} {rate:>10.0} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
            t.errors,
            ms(0.5),
            ms(0.99),
            ms(0.999),
            t.latency.max() as f64 / 1000.0
        );
        results.push(format!(
            "RESULT system={} clients={} op={name} ops={n} errors={} secs={secs:.3} ops_per_s={rate:.0} \
             p50_ms={:.2} p99_ms={:.2} p999_ms={:.2}",
            args.label,
            args.clients,
            t.errors,
            ms(0.5),
            ms(0.99),
            ms(0.999)
        ));
    }
    println!();
    for r in results {
        println!("{r}");
    }
    Ok(())
}
