//! `shoal kv`: run a key/value server, or talk to a cluster of them.

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use clap::{Args, Subcommand};
use shoal_kv::{connect, KvClient, KvServer, ServerConfig};

#[derive(Debug, Args)]
#[command(subcommand_required = true, arg_required_else_help = true)]
pub struct KvArgs {
    /// The cluster's server addresses, comma-separated (HOST:PORT,...).
    /// Needed by every command but `serve`.
    #[arg(long, value_delimiter = ',', global = true)]
    cluster: Vec<String>,
    /// Give up on an operation after this many seconds without a leader.
    #[arg(long, default_value_t = 10, global = true)]
    timeout_secs: u64,
    #[command(subcommand)]
    command: KvCommand,
}

#[derive(Debug, Subcommand)]
enum KvCommand {
    /// Runs one server of a cluster until interrupted (Ctrl-C or SIGTERM).
    Serve(ServeArgs),
    /// Sets KEY to VALUE.
    Put { key: String, value: String },
    /// Prints KEY's value; exits 1 (with a message on stderr) if it is absent.
    Get { key: String },
    /// Appends VALUE to KEY's value (an absent key counts as empty).
    Append { key: String, value: String },
    /// Removes KEY.
    Delete { key: String },
    /// Sets KEY to NEW if its value is EXPECTED; exits 1 if it was not.
    /// With --absent, sets KEY to NEW only if KEY is absent: `cas --absent KEY NEW`.
    Cas {
        key: String,
        /// EXPECTED NEW, or just NEW with --absent.
        #[arg(num_args = 1..=2, required = true)]
        values: Vec<String>,
        /// Expect KEY to be absent rather than to hold a value.
        #[arg(long)]
        absent: bool,
    },
    /// Shows every server's role, term, commit and applied index.
    Status,
    /// Checks a recorded history (JSON lines, as `shoal bench kv --history`
    /// writes them) for linearizability. Exits 0 if it is linearizable, 1
    /// with the violation if it is not, 2 if the time limit ran out first,
    /// 3 if the file cannot be read or parsed.
    CheckHistory {
        /// The history file, one JSON object per line.
        file: PathBuf,
        /// Give up (answering "unknown") after this many seconds.
        #[arg(long, default_value_t = 60)]
        time_limit_secs: u64,
    },
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// This server's Raft node id (its key in --peers).
    #[arg(long)]
    id: u64,
    /// Address to listen on for clients and peers.
    #[arg(long)]
    listen: String,
    /// Every member, this one included: ID=HOST:PORT,ID=HOST:PORT,...
    #[arg(long, value_delimiter = ',', required = true)]
    peers: Vec<String>,
    /// Directory for the Raft log and snapshots (created if missing).
    #[arg(long)]
    data: PathBuf,
    /// Snapshot once the Raft log holds this many bytes.
    #[arg(long, default_value_t = 8 << 20)]
    max_raft_state: usize,
    /// Milliseconds per Raft tick (heartbeats every 5 ticks, elections after 30-60).
    #[arg(long, default_value_t = 10)]
    tick_ms: u64,
}

pub fn run(args: KvArgs) -> Result<ExitCode> {
    if let KvCommand::CheckHistory { file, time_limit_secs } = &args.command {
        return Ok(check_history(file, Duration::from_secs(*time_limit_secs)));
    }
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    runtime.block_on(async move {
        match args.command {
            KvCommand::Serve(serve) => serve_until_signal(serve).await.map(|()| ExitCode::SUCCESS),
            command => client_command(&args.cluster, Duration::from_secs(args.timeout_secs), command).await,
        }
    })
}

fn parse_addr(s: &str, what: &str) -> Result<SocketAddr> {
    s.to_socket_addrs()
        .with_context(|| format!("{what} {s:?} is not HOST:PORT"))?
        .next()
        .ok_or_else(|| anyhow!("{what} {s:?} resolves to no address"))
}

fn parse_peers(peers: &[String]) -> Result<BTreeMap<u64, String>> {
    let mut out = BTreeMap::new();
    for p in peers {
        let (id, addr) =
            p.split_once('=').ok_or_else(|| anyhow!("--peers entry {p:?} is not ID=HOST:PORT"))?;
        let id: u64 =
            id.trim().parse().map_err(|_| anyhow!("--peers entry {p:?}: {id:?} is not a node id"))?;
        if id == 0 {
            bail!("--peers entry {p:?}: node ids start at 1");
        }
        parse_addr(addr.trim(), "--peers address")?;
        if out.insert(id, addr.trim().to_string()).is_some() {
            bail!("--peers names node {id} twice");
        }
    }
    Ok(out)
}

async fn serve_until_signal(args: ServeArgs) -> Result<()> {
    let listen = parse_addr(&args.listen, "--listen")?;
    let peers = parse_peers(&args.peers)?;
    if !peers.contains_key(&args.id) {
        bail!(
            "--id {} is not among --peers ({})",
            args.id,
            peers.keys().map(u64::to_string).collect::<Vec<_>>().join(",")
        );
    }
    if args.tick_ms == 0 {
        bail!("--tick-ms must be at least 1");
    }
    let mut cfg = ServerConfig::new(args.id, listen, peers, args.data);
    cfg.max_raft_state = Some(args.max_raft_state);
    cfg.tick = Duration::from_millis(args.tick_ms);
    let server = KvServer::start(cfg).await?;
    eprintln!("shoal kv: node {} serving on {}", args.id, server.local_addr());
    wait_for_signal().await?;
    eprintln!("shoal kv: node {} shutting down", args.id);
    server.shutdown().await;
    Ok(())
}

async fn wait_for_signal() -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("waiting for Ctrl-C")?,
        _ = term.recv() => {}
    }
    Ok(())
}

async fn client_command(cluster: &[String], timeout: Duration, command: KvCommand) -> Result<ExitCode> {
    if cluster.is_empty() {
        bail!("--cluster HOST:PORT,... is required");
    }
    for addr in cluster {
        parse_addr(addr, "--cluster address")?;
    }
    let conns = connect(cluster, Duration::from_millis(500))?;
    let mut client = KvClient::new(conns);
    client.op_timeout = timeout;
    let text = |b: &Bytes| String::from_utf8_lossy(b).into_owned();
    match command {
        KvCommand::Serve(_) | KvCommand::CheckHistory { .. } => unreachable!("handled by the caller"),
        KvCommand::Put { key, value } => {
            client.put(key, value).await?;
            println!("OK");
        }
        KvCommand::Append { key, value } => {
            client.append(key, value).await?;
            println!("OK");
        }
        KvCommand::Delete { key } => {
            client.delete(key).await?;
            println!("OK");
        }
        KvCommand::Get { key } => match client.get(key.clone()).await? {
            Some(v) => println!("{}", text(&v)),
            None => {
                eprintln!("key {key:?} not found");
                return Ok(ExitCode::from(1));
            }
        },
        KvCommand::Cas { key, values, absent } => {
            let (expected, new) = match (absent, values.as_slice()) {
                (false, [expected, new]) => (Some(Bytes::from(expected.clone())), new.clone()),
                (true, [new]) => (None, new.clone()),
                (false, _) => bail!("cas takes KEY EXPECTED NEW (or --absent KEY NEW)"),
                (true, _) => bail!("cas --absent takes KEY NEW"),
            };
            let (swapped, current) = client.cas(key.clone(), expected, new).await?;
            if swapped {
                println!("OK");
            } else {
                match current {
                    Some(v) => eprintln!("compare failed: {key:?} holds {:?}", text(&v)),
                    None => eprintln!("compare failed: {key:?} is absent"),
                }
                return Ok(ExitCode::from(1));
            }
        }
        KvCommand::Status => {
            for (addr, status) in cluster.iter().zip(client.statuses().await) {
                match status {
                    Some(s) => println!(
                        "{addr}  node {}  {}  term {}  commit {}  applied {}  snapshot {}  keys {}",
                        s.id,
                        if s.is_leader { "leader  " } else { "follower" },
                        s.term,
                        s.commit,
                        s.applied,
                        s.snapshot_index,
                        s.keys
                    ),
                    None => println!("{addr}  unreachable"),
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `shoal kv check-history`: the verdict as the exit code (see the
/// subcommand's help).
fn check_history(file: &std::path::Path, time_limit: Duration) -> ExitCode {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: cannot read {}: {e}", file.display());
            return ExitCode::from(3);
        }
    };
    let ops = match crate::history::parse(&text) {
        Ok(ops) => ops,
        Err(e) => {
            eprintln!("error: {}: {e}", file.display());
            return ExitCode::from(3);
        }
    };
    match shoal_sim::check(&shoal_sim::KvModel, &ops, time_limit) {
        shoal_sim::CheckResult::Ok => {
            println!("linearizable ({} operations)", ops.len());
            ExitCode::SUCCESS
        }
        shoal_sim::CheckResult::Illegal(v) => {
            println!("not linearizable ({} operations): {v}", ops.len());
            ExitCode::from(1)
        }
        shoal_sim::CheckResult::Unknown => {
            println!("unknown (time limit) after {time_limit:?}; {} operations", ops.len());
            ExitCode::from(2)
        }
    }
}
