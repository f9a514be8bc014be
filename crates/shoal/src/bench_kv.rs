//! `shoal bench kv`: a closed-loop load generator for a running key/value
//! cluster.
//!
//! C logical clients (each a [`KvClient`]: its own at-most-once session, at
//! most one request outstanding) share `--connections` connection sets
//! round-robin, and issue `--ops` operations between them: a linearizable Get
//! (ReadIndex) with probability `--read-ratio`, else a Put of a
//! `--value-size`-byte value, on a key drawn uniformly from `--keys` keys
//! (`key0`, `key1`, ...). Every client first makes one unrecorded Get so that
//! connections are open and the leader is known before the clock starts.
//!
//! A history is judged against a store that starts empty, so with
//! `--history` the bench first reads every key of the run and refuses to
//! start if one already holds a value (use a fresh cluster or another
//! `--key-prefix`).
//!
//! At the end it prints a table (ops/s, p50/p99/p999 latency, errors) and
//! one `RESULT ...` line per operation kind for scripts (`bench/kv-vs-etcd.sh`
//! reads those; `bench/etcd-bench` prints the same lines for etcd).
//! `--history FILE` also records every operation as a JSON line (format in
//! [`crate::history`]), for `shoal kv check-history` or any other checker.

use std::io::Write as _;
use std::net::ToSocketAddrs;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use shoal_kv::{connect, Connections, KvClient};
use shoal_sim::{KvInput, KvOutput, Rng};

use crate::history::Record;

#[derive(Debug, clap::Args)]
pub struct KvBenchArgs {
    /// The cluster's server addresses, comma-separated (HOST:PORT,...).
    #[arg(long, value_delimiter = ',', required = true)]
    cluster: Vec<String>,
    /// Concurrent logical clients (each with one request outstanding).
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Operations in total, shared among the clients.
    #[arg(long, default_value_t = 100_000)]
    ops: u64,
    /// Bytes per value written.
    #[arg(long, default_value_t = 100)]
    value_size: usize,
    /// Keys are drawn uniformly from key0..key{K-1}.
    #[arg(long, default_value_t = 10_000)]
    keys: u64,
    /// Key names are this prefix plus a number (a fresh prefix gives a
    /// --history run keys nobody has written yet).
    #[arg(long, default_value = "key")]
    key_prefix: String,
    /// Fraction of operations that are (linearizable) reads; the rest are puts.
    #[arg(long, default_value_t = 0.0)]
    read_ratio: f64,
    /// Connection sets (one TCP connection to each server per set) that the
    /// clients share round-robin.
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Write every operation to FILE as one JSON object per line.
    #[arg(long)]
    history: Option<PathBuf>,
    /// Give up on one operation after this many seconds (it then counts as
    /// an error, with an unknown outcome in the history).
    #[arg(long, default_value_t = 10)]
    timeout_secs: u64,
    /// Tokio worker threads (default: one per CPU).
    #[arg(long)]
    threads: Option<usize>,
    /// Seed for the keys and the read/write choices (default: from the clock).
    #[arg(long)]
    seed: Option<u64>,
    /// The system name printed in the RESULT lines.
    #[arg(long, default_value = "shoal")]
    label: String,
}

/// Latency histograms are in microseconds, up to a minute.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("constant histogram bounds are valid")
}

/// One operation kind's tally.
#[derive(Debug)]
struct Tally {
    latency: Histogram<u64>,
    errors: u64,
}

impl Tally {
    fn new() -> Self {
        Tally { latency: histogram(), errors: 0 }
    }

    fn record(&mut self, elapsed: Duration, ok: bool) {
        if ok {
            let us = (elapsed.as_micros() as u64).clamp(1, 60_000_000);
            self.latency.saturating_record(us);
        } else {
            self.errors += 1;
        }
    }

    fn merge(&mut self, other: &Tally) {
        // Same bounds on both sides: adding cannot fail.
        let _ = self.latency.add(&other.latency);
        self.errors += other.errors;
    }
}

/// What one client task hands back.
#[derive(Debug)]
struct ClientReport {
    gets: Tally,
    puts: Tally,
    history: Vec<Record>,
}

pub fn run(args: KvBenchArgs) -> Result<()> {
    if args.clients == 0 {
        bail!("--clients must be at least 1");
    }
    if args.connections == 0 {
        bail!("--connections must be at least 1");
    }
    if args.keys == 0 {
        bail!("--keys must be at least 1");
    }
    if !(0.0..=1.0).contains(&args.read_ratio) {
        bail!("--read-ratio must be between 0 and 1");
    }
    if args.timeout_secs == 0 {
        bail!("--timeout-secs must be at least 1");
    }
    for addr in &args.cluster {
        addr.to_socket_addrs()
            .with_context(|| format!("--cluster address {addr:?} is not HOST:PORT"))?
            .next()
            .ok_or_else(|| anyhow!("--cluster address {addr:?} resolves to no address"))?;
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = args.threads.unwrap_or(cpus).max(1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let result = runtime.block_on(bench(&args));
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}

async fn bench(args: &KvBenchArgs) -> Result<()> {
    // Longer than the server's own request timeout, so that a slow request
    // is answered "retry" by the server rather than abandoned here.
    let attempt = Duration::from_secs(6);
    let sets: Vec<Connections> =
        (0..args.connections).map(|_| connect(&args.cluster, attempt)).collect::<Result<_, _>>()?;

    if args.history.is_some() {
        ensure_fresh(args, &sets).await?;
    }

    // The one clock of the history; any origin will do.
    let clock = Instant::now();
    let seed = args.seed.unwrap_or_else(|| clock.elapsed().as_nanos() as u64 ^ std::process::id() as u64);
    let mut seeds = Rng::new(seed);
    let next_op = Arc::new(AtomicU64::new(0));
    let barrier = Arc::new(tokio::sync::Barrier::new(args.clients + 1));
    let progress = ProgressBar::new(args.ops);
    progress.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} ops  {per_sec}  eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let value_pad = "x".repeat(args.value_size);

    let mut tasks = Vec::with_capacity(args.clients);
    for c in 0..args.clients {
        let mut client = KvClient::new(sets[c % sets.len()].clone());
        client.op_timeout = Duration::from_secs(args.timeout_secs);
        let mut rng = seeds.fork();
        let next_op = next_op.clone();
        let barrier = barrier.clone();
        let progress = progress.clone();
        let value_pad = value_pad.clone();
        let (ops, keys, read_ratio, record) = (args.ops, args.keys, args.read_ratio, args.history.is_some());
        let value_size = args.value_size;
        let prefix = args.key_prefix.clone();
        tasks.push(tokio::spawn(async move {
            // Open the connections and find the leader before the clock runs.
            let _ = client.get(Bytes::from(format!("{prefix}0"))).await;
            barrier.wait().await;
            let mut report = ClientReport { gets: Tally::new(), puts: Tally::new(), history: Vec::new() };
            let mut written = 0u64;
            while next_op.fetch_add(1, Ordering::Relaxed) < ops {
                let key = format!("{prefix}{}", rng.below(keys));
                let read = rng.chance(read_ratio);
                let call = clock.elapsed();
                if read {
                    let r = client.get(Bytes::from(key.clone())).await;
                    let ret = clock.elapsed();
                    report.gets.record(ret - call, r.is_ok());
                    if record {
                        let output = r
                            .ok()
                            .map(|v| KvOutput::Value(v.map(|v| String::from_utf8_lossy(&v).into_owned())));
                        report.history.push(Record {
                            client: c as u64,
                            input: KvInput::Get { key },
                            ret: output.as_ref().map(|_| ret.as_nanos() as u64),
                            output,
                            call: call.as_nanos() as u64,
                        });
                    }
                } else {
                    written += 1;
                    let value = unique_value(c, written, value_size, &value_pad);
                    let r = client.put(Bytes::from(key.clone()), Bytes::from(value.clone())).await;
                    let ret = clock.elapsed();
                    report.puts.record(ret - call, r.is_ok());
                    if record {
                        let output = r.ok().map(|()| KvOutput::Done);
                        report.history.push(Record {
                            client: c as u64,
                            input: KvInput::Put { key, value },
                            ret: output.as_ref().map(|_| ret.as_nanos() as u64),
                            output,
                            call: call.as_nanos() as u64,
                        });
                    }
                }
                progress.inc(1);
            }
            report
        }));
    }
    barrier.wait().await;
    let started = Instant::now();
    let mut gets = Tally::new();
    let mut puts = Tally::new();
    let mut history = Vec::new();
    for t in tasks {
        let report = t.await.context("a client task failed")?;
        gets.merge(&report.gets);
        puts.merge(&report.puts);
        history.extend(report.history);
    }
    let secs = started.elapsed().as_secs_f64();
    progress.finish_and_clear();

    println!(
        "shoal bench kv: {} servers, {} clients over {} connection sets, {} ops ({:.0}% reads), \
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

    if let Some(path) = &args.history {
        history.sort_by_key(|r| r.call);
        let file = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
        let mut out = std::io::BufWriter::new(file);
        for r in &history {
            writeln!(out, "{}", r.to_json()).with_context(|| format!("writing {}", path.display()))?;
        }
        out.flush().with_context(|| format!("writing {}", path.display()))?;
        eprintln!("history: {} operations written to {}", history.len(), path.display());
    }
    if gets.errors + puts.errors > 0 {
        eprintln!("warning: {} operations failed (see the errors column)", gets.errors + puts.errors);
    }
    Ok(())
}

/// Fails if any key of the run already holds a value: the checker assumes
/// every key starts absent.
async fn ensure_fresh(args: &KvBenchArgs, sets: &[Connections]) -> Result<()> {
    let readers = args.clients.clamp(1, 64) as u64;
    let mut tasks = Vec::new();
    for r in 0..readers {
        let mut client = KvClient::new(sets[r as usize % sets.len()].clone());
        client.op_timeout = Duration::from_secs(args.timeout_secs);
        let (keys, prefix) = (args.keys, args.key_prefix.clone());
        tasks.push(tokio::spawn(async move {
            let mut k = r;
            while k < keys {
                let key = format!("{prefix}{k}");
                if client.get(Bytes::from(key.clone())).await?.is_some() {
                    return Ok(Some(key));
                }
                k += readers;
            }
            Ok::<_, shoal_kv::KvError>(None)
        }));
    }
    for t in tasks {
        if let Some(key) =
            t.await.context("a reader task failed")?.context("reading the keys before the run")?
        {
            bail!(
                "--history needs keys nobody has written yet, but {key} already holds a value \
                 (use a fresh cluster or another --key-prefix)"
            );
        }
    }
    Ok(())
}

/// A value no other put of this run writes (so a checker can tell writes
/// apart), padded to `size` bytes with `pad` (truncated if `size` is smaller
/// than the unique part).
fn unique_value(client: usize, n: u64, size: usize, pad: &str) -> String {
    let mut v = format!("{client}.{n}.");
    if v.len() < size {
        v.push_str(&pad[..size - v.len()]);
    } else {
        v.truncate(size);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_unique_and_sized() {
        let pad = "x".repeat(100);
        let a = unique_value(3, 17, 100, &pad);
        assert_eq!(a.len(), 100);
        assert!(a.starts_with("3.17."));
        assert_ne!(a, unique_value(31, 7, 100, &pad));
        assert_eq!(unique_value(3, 17, 2, &pad), "3.");
    }
}
