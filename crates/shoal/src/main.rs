//! `shoal`: the one binary: the in-process demo cluster, the key/value
//! server and client, and the benchmarks.

mod bench;
mod bench_kv;
mod demo;
mod history;
mod kv;
mod mr;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// Shoal: Raft, a replicated key/value store, GFS and MapReduce, built as
/// real software.
#[derive(Debug, Parser)]
#[command(name = "shoal", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs a 5-node Raft cluster in this process on real files and narrates
    /// an election, a leader crash and a snapshot catch-up.
    Demo(demo::DemoArgs),
    /// The replicated key/value store: `shoal kv serve ...` runs a server,
    /// `shoal kv --cluster ... get|put|append|delete|cas|status` talks to one,
    /// `shoal kv check-history FILE` judges a recorded history.
    Kv(kv::KvArgs),
    /// MapReduce: `shoal mr run ...` runs a job on local worker processes;
    /// `shoal mr coordinator ...` and `shoal mr worker ...` run the roles apart.
    Mr(mr::MrArgs),
    /// Measures a cluster's throughput.
    Bench {
        #[command(subcommand)]
        target: bench::BenchTarget,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Quiet by default so the demo's narration stands alone; RUST_LOG=info
    // (or e.g. shoal_raft=debug) shows the nodes' own logs on stderr.
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();

    let result = match cli.command {
        Command::Demo(args) => demo::run(args).map(|()| ExitCode::SUCCESS),
        Command::Kv(args) => kv::run(args),
        Command::Mr(args) => mr::run(args),
        Command::Bench { target } => bench::run(target).map(|()| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
