//! `shoal bench kv` (in [`crate::bench_kv`]) loads a running key/value
//! cluster over the network.
//!
//! `shoal bench raft`: the setup of openraft's `benchmarks/minimal`, so the
//! two can be compared on one machine: three nodes in one process on a tokio
//! multi-thread runtime, the log in memory (the real `FileStore` over a
//! `MemDir`: encoding, checksums and all, but no disk), in-process channels,
//! empty commands, and C clients that each propose a write and wait for the
//! leader to apply it, one after another.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use clap::Subcommand;
use shoal_raft::{
    spawn_node, ChannelRouter, Config, DriverConfig, Index, NodeHandle, ProposeError, Role, Snapshot,
    StateMachine, Transport,
};
use shoal_wal::MemDir;

#[derive(Debug, Subcommand)]
pub enum BenchTarget {
    /// Write throughput of a 3-node Raft group in one process, log in memory.
    Raft(RaftArgs),
    /// Throughput and latency of a running key/value cluster (`shoal kv serve`).
    Kv(crate::bench_kv::KvBenchArgs),
}

#[derive(Debug, clap::Args)]
pub struct RaftArgs {
    /// Client counts to measure, one table row each.
    #[arg(long, value_delimiter = ',', default_value = "1,64,256,1024,4096")]
    clients: Vec<usize>,
    /// How long each row's clients keep writing.
    #[arg(long, default_value_t = 5)]
    duration_secs: u64,
    /// Tokio worker threads (default: one per CPU).
    #[arg(long)]
    threads: Option<usize>,
    /// Snapshot every this many entries, and compact the in-memory log to the
    /// previous snapshot (so followers lagging by less need no snapshot).
    #[arg(long, default_value_t = 50_000)]
    snapshot_every: u64,
    /// Driver tuning: after a turn that took this many inputs, a node yields
    /// once before its next turn so that more inputs share one batch
    /// (default: the driver's).
    #[arg(long)]
    yield_after: Option<usize>,
}

pub fn run(target: BenchTarget) -> Result<()> {
    match target {
        BenchTarget::Raft(args) => raft(args),
        BenchTarget::Kv(args) => crate::bench_kv::run(args),
    }
}

/// openraft's published `benchmarks/minimal` figures (writes/s) for the
/// same client counts.
fn openraft_figure(clients: usize) -> Option<u64> {
    match clients {
        1 => Some(17_200),
        64 => Some(462_000),
        256 => Some(593_000),
        1024 => Some(859_000),
        4096 => Some(982_000),
        _ => None,
    }
}

/// Applies nothing: the benchmark measures Raft and its driver.
#[derive(Debug)]
struct Null;

impl StateMachine for Null {
    type Output = ();
    fn apply(&mut self, _index: Index, _data: &Bytes) {}
    fn snapshot(&self) -> Bytes {
        Bytes::new()
    }
    fn restore(&mut self, _snapshot: &Snapshot) {}
}

fn raft(args: RaftArgs) -> Result<()> {
    if args.clients.is_empty() || args.clients.contains(&0) {
        bail!("--clients needs one or more positive counts");
    }
    if args.duration_secs == 0 {
        bail!("--duration-secs must be at least 1");
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = args.threads.unwrap_or(cpus).max(1);
    println!(
        "shoal bench raft: 3 nodes in one process, log in memory (FileStore over MemDir), \
         empty commands, {threads} tokio worker threads on {cpus} CPUs, {} s per row",
        args.duration_secs
    );
    println!();
    println!(
        "{:>8} {:>12} {:>8} {:>12} {:>12} {:>9}",
        "clients", "writes", "seconds", "writes/s", "openraft/s", "ratio"
    );
    for &clients in &args.clients {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
            .context("starting the tokio runtime")?;
        let row = runtime.block_on(one_row(&args, clients));
        runtime.shutdown_timeout(Duration::from_secs(5));
        let (writes, secs) = row?;
        let rate = writes as f64 / secs;
        let (theirs, ratio) = match openraft_figure(clients) {
            Some(f) => (f.to_string(), format!("{:.2}x", rate / f as f64)),
            None => ("-".to_string(), "-".to_string()),
        };
        println!("{clients:>8} {writes:>12} {secs:>8.2} {rate:>12.0} {theirs:>12} {ratio:>9}");
    }
    Ok(())
}

async fn one_row(args: &RaftArgs, clients: usize) -> Result<(u64, f64)> {
    let duration = Duration::from_secs(args.duration_secs);
    let router = ChannelRouter::new();
    let mut nodes: Vec<NodeHandle<()>> = Vec::new();
    for id in 1..=3 {
        let mut raft = Config::new(id, vec![1, 2, 3]);
        // Generous timeouts: a saturated runtime (or a busy machine) must not
        // cause elections, nor make the leader think a follower stalled.
        raft.election_ticks = 100;
        raft.heartbeat_ticks = 10;
        let mut cfg = DriverConfig::new(raft);
        cfg.tick = Duration::from_millis(10);
        cfg.blocking_io = false;
        cfg.snapshot_after_entries = Some(args.snapshot_every);
        cfg.compaction_lag = args.snapshot_every;
        if let Some(n) = args.yield_after {
            cfg.yield_after = n;
        }
        let transport: Arc<dyn Transport> = router.clone();
        let node = spawn_node(cfg, MemDir::new(), Null, transport)?;
        router.register(id, node.mailbox());
        nodes.push(node);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let leader = loop {
        if let Some(n) = nodes.iter().find(|n| n.status().role == Role::Leader) {
            break n.clone();
        }
        if Instant::now() > deadline {
            bail!("no leader elected within 10 s");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let term = leader.status().term;

    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(clients);
    for _ in 0..clients {
        let leader = leader.clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut writes = 0u64;
            while !stop.load(Ordering::Relaxed) {
                leader.propose(Bytes::new()).await?;
                writes += 1;
            }
            Ok::<u64, ProposeError>(writes)
        }));
    }
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut writes = 0;
    for t in tasks {
        match t.await.context("client task failed")? {
            Ok(n) => writes += n,
            Err(e @ (ProposeError::NotLeader { .. } | ProposeError::Overwritten { .. })) => bail!(
                "leadership changed during the run ({e}): a leader starved of CPU for its election \
                 timeout (1-2 s) was replaced; rerun on an idle machine"
            ),
            Err(e) => bail!("a write failed: {e}"),
        }
    }
    let secs = start.elapsed().as_secs_f64();
    if leader.status().term != term {
        bail!("leadership changed during the run; the figure would not be comparable (rerun on an idle machine)");
    }
    for n in nodes {
        n.shutdown().await?;
    }
    Ok((writes, secs))
}
