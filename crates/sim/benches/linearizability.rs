//! How long the linearizability checker takes on large recorded histories.
//!
//! `cargo bench -p shoal-sim --bench linearizability`. Histories are
//! generated deterministically (fixed seeds) by running operations against a
//! real map at increasing instants and giving each a random interval around
//! its instant, so they are linearizable by construction and overlap like a
//! real multi-client run. Plain `Instant` timing, best and median of a few
//! runs; the target is a 10,000-operation, 10-key history in under a second.
#![allow(clippy::unwrap_used)]

#[path = "../tests/support/kv_history.rs"]
mod kv_history;

use std::time::{Duration, Instant};

use kv_history::{generate, GenConfig};
use shoal_sim::{check, CheckResult, KvInput, KvModel, KvOperation, KvOutput};

const RUNS: usize = 5;

fn bench(name: &str, seed: u64, cfg: &GenConfig) {
    run(name, generate(seed, cfg), cfg, Some(true), LIMIT);
}

/// The same, with one read (the middle one) answering a value nobody wrote.
fn bench_corrupt(name: &str, seed: u64, cfg: &GenConfig) {
    let mut history = generate(seed, cfg);
    let reads: Vec<usize> = (0..history.len())
        .filter(|&i| matches!(history[i].input, KvInput::Get { .. }) && history[i].output.is_some())
        .collect();
    let i = reads[reads.len() / 2];
    history[i].output = Some(KvOutput::Value(Some("corrupt".into())));
    run(name, history, cfg, Some(false), LIMIT);
}

/// A known weak spot, reported rather than asserted: refuting a history
/// means exhausting every choice of which unknown-outcome writes took
/// effect, which grows quickly with the number of them pending at once.
fn stress_corrupt(name: &str, seed: u64, cfg: &GenConfig) {
    let mut history = generate(seed, cfg);
    let reads: Vec<usize> = (0..history.len())
        .filter(|&i| matches!(history[i].input, KvInput::Get { .. }) && history[i].output.is_some())
        .collect();
    let i = reads[reads.len() / 2];
    history[i].output = Some(KvOutput::Value(Some("corrupt".into())));
    run(name, history, cfg, None, Duration::from_secs(5));
}

const LIMIT: Duration = Duration::from_secs(60);

fn run(name: &str, history: Vec<KvOperation>, cfg: &GenConfig, linearizable: Option<bool>, limit: Duration) {
    let runs = if linearizable.is_some() { RUNS } else { 1 };
    let mut times = Vec::with_capacity(runs);
    let mut verdict = "";
    for _ in 0..runs {
        let start = Instant::now();
        let r = check(&KvModel, &history, limit);
        times.push(start.elapsed());
        match linearizable {
            Some(true) => assert!(r.is_ok(), "{name}: {r}"),
            Some(false) => assert!(r.is_illegal(), "{name}: {r}"),
            None => {}
        }
        verdict = match r {
            CheckResult::Ok => "ok",
            CheckResult::Illegal(_) => "illegal",
            CheckResult::Unknown => "UNKNOWN",
        };
    }
    times.sort();
    let concurrency = mean_concurrency(&history);
    println!(
        "{name:<44} {:>6} ops {:>3} keys {:>3} clients, {:>4.1} in flight: {verdict:<7} best {:>8.2} ms, median {:>8.2} ms",
        history.len(),
        cfg.keys,
        cfg.clients,
        concurrency,
        times[0].as_secs_f64() * 1e3,
        times[runs / 2].as_secs_f64() * 1e3,
    );
}

/// Mean number of operations in flight at an operation's call (an
/// operation with unknown outcome stays in flight forever).
fn mean_concurrency(history: &[KvOperation]) -> f64 {
    let mut calls: Vec<u64> = history.iter().map(|o| o.call).collect();
    let mut rets: Vec<u64> = history.iter().filter(|o| !o.is_unknown()).map(|o| o.ret).collect();
    calls.sort_unstable();
    rets.sort_unstable();
    let mut total = 0usize;
    for (i, &c) in calls.iter().enumerate() {
        let returned = rets.partition_point(|&r| r < c);
        total += i + 1 - returned.min(i + 1);
    }
    total as f64 / history.len().max(1) as f64
}

fn main() {
    let base = GenConfig {
        ops: 10_000,
        keys: 10,
        clients: 10,
        read_pct: 60,
        gap: 10,
        spread: 40,
        unknown_permille: 0,
    };
    bench("10k ops, 10 keys, 60% gets (the target)", 1, &base);
    bench("same, heavier overlap (spread 100)", 2, &GenConfig { spread: 100, ..base.clone() });
    bench("same, every client always busy (spread 400)", 6, &GenConfig { spread: 400, ..base.clone() });
    bench_corrupt("same, one corrupt read (illegal)", 7, &base);
    bench_corrupt("busy clients, one corrupt read (illegal)", 8, &GenConfig { spread: 400, ..base.clone() });
    bench("same, 3% of writes with unknown outcome", 3, &GenConfig { unknown_permille: 30, ..base.clone() });
    bench("100k ops, 10 keys", 4, &GenConfig { ops: 100_000, ..base.clone() });
    bench("10k ops, 1 key", 5, &GenConfig { keys: 1, ..base.clone() });
    bench_corrupt(
        "3% unknown, one corrupt read (illegal)",
        9,
        &GenConfig { unknown_permille: 30, ..base.clone() },
    );
    let busy = GenConfig { unknown_permille: 30, spread: 400, ..base.clone() };
    bench_corrupt("3% unknown, busy, one corrupt read (illegal)", 9, &busy);
    for permille in [10, 30, 100] {
        let cfg = GenConfig { keys: 1, unknown_permille: permille, ..base.clone() };
        let name = format!("stress: 1 key, {}% unknown, corrupt read", permille as f64 / 10.0);
        stress_corrupt(&name, 10, &cfg);
    }
}
