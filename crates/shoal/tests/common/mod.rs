//! Helpers for the process-level tests: real `shoal kv serve` processes on
//! 127.0.0.1, owned by a guard that SIGKILLs and reaps every one of them when
//! it is dropped — also when the test panics.

#![allow(dead_code, clippy::unwrap_used)]

use std::fs::OpenOptions;
use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The binary under test.
pub const SHOAL: &str = env!("CARGO_BIN_EXE_shoal");

/// `n` distinct loopback addresses that were free a moment ago (all bound at
/// once, so they differ, then released for the servers to take).
pub fn free_addrs(n: usize) -> Vec<SocketAddr> {
    let listeners: Vec<TcpListener> =
        (0..n).map(|_| TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0")).collect();
    listeners.iter().map(|l| l.local_addr().unwrap()).collect()
}

/// One server of a cluster: how to start it, and its process while it runs.
#[derive(Debug)]
pub struct ServerProc {
    /// Raft node id (1-based).
    pub id: u64,
    pub listen: SocketAddr,
    /// The `--peers` argument as this server sees the cluster (its own
    /// entry is its listen address; the others may point through proxies).
    pub peers: String,
    pub data: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
    stopped: bool,
}

impl ServerProc {
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

/// Three (or more) `shoal kv serve` processes. Dropping it SIGKILLs and
/// reaps every live process (a SIGSTOPped one too), then removes the data.
#[derive(Debug)]
pub struct Cluster {
    pub servers: Vec<ServerProc>,
    /// Extra `shoal kv serve` flags for every server.
    pub extra_args: Vec<String>,
    /// Declared last so it is removed after the processes are gone.
    dir: tempfile::TempDir,
}

impl Cluster {
    /// A cluster of `listen.len()` servers, not started. `peer_addr(i, j)`
    /// is the address server `i` uses to reach server `j` (0-based; a proxy,
    /// or `listen[j]` itself).
    pub fn new(listen: &[SocketAddr], peer_addr: impl Fn(usize, usize) -> String) -> Cluster {
        let dir = tempfile::tempdir().expect("creating a temporary directory");
        let servers = (0..listen.len())
            .map(|i| {
                let peers = (0..listen.len())
                    .map(|j| {
                        let addr = if i == j { listen[j].to_string() } else { peer_addr(i, j) };
                        format!("{}={addr}", j + 1)
                    })
                    .collect::<Vec<_>>()
                    .join(",");
                ServerProc {
                    id: i as u64 + 1,
                    listen: listen[i],
                    peers,
                    data: dir.path().join(format!("node{}", i + 1)),
                    log: dir.path().join(format!("node{}.log", i + 1)),
                    child: None,
                    stopped: false,
                }
            })
            .collect();
        Cluster { servers, extra_args: Vec::new(), dir }
    }

    /// A cluster whose servers reach each other directly.
    pub fn direct(listen: &[SocketAddr]) -> Cluster {
        let addrs = listen.to_vec();
        Cluster::new(listen, move |_, j| addrs[j].to_string())
    }

    /// The client-facing addresses, `HOST:PORT` each.
    pub fn client_addrs(&self) -> Vec<String> {
        self.servers.iter().map(|s| s.listen.to_string()).collect()
    }

    /// Starts server `i` (0-based) from its data directory; its stdout and
    /// stderr go (appended) to its log file.
    pub fn start(&mut self, i: usize) {
        let s = &mut self.servers[i];
        assert!(s.child.is_none(), "server {} is already running", s.id);
        let log = OpenOptions::new().create(true).append(true).open(&s.log).expect("opening a server log");
        let child = Command::new(SHOAL)
            .arg("kv")
            .arg("serve")
            .args(["--id", &s.id.to_string()])
            .args(["--listen", &s.listen.to_string()])
            .args(["--peers", &s.peers])
            .arg("--data")
            .arg(&s.data)
            .args(&self.extra_args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("cloning a file handle"))
            .stderr(log)
            .spawn()
            .expect("spawning shoal kv serve");
        s.child = Some(child);
        s.stopped = false;
    }

    pub fn start_all(&mut self) {
        for i in 0..self.servers.len() {
            self.start(i);
        }
    }

    /// SIGKILLs server `i` and reaps it.
    pub fn kill(&mut self, i: usize) {
        let s = &mut self.servers[i];
        let mut child = s.child.take().unwrap_or_else(|| panic!("server {} is not running", s.id));
        // SIGKILL also ends a SIGSTOPped process.
        let _ = child.kill();
        let _ = child.wait();
        s.stopped = false;
    }

    pub fn kill_all(&mut self) {
        for i in 0..self.servers.len() {
            if self.servers[i].child.is_some() {
                self.kill(i);
            }
        }
    }

    /// SIGSTOPs server `i`.
    pub fn pause(&mut self, i: usize) {
        self.signal(i, "-STOP");
        self.servers[i].stopped = true;
    }

    /// SIGCONTs server `i`.
    pub fn resume(&mut self, i: usize) {
        self.signal(i, "-CONT");
        self.servers[i].stopped = false;
    }

    fn signal(&self, i: usize, sig: &str) {
        let pid = self.servers[i].pid().unwrap_or_else(|| panic!("server {} is not running", i + 1));
        let status = Command::new("kill").arg(sig).arg(pid.to_string()).status().expect("running kill");
        assert!(status.success(), "kill {sig} {pid} failed: {status}");
    }

    /// Panics (with the log tail) if a server that should be running has
    /// exited: a server must never die on its own.
    pub fn assert_running(&mut self) {
        for s in &mut self.servers {
            if let Some(child) = s.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    s.child = None;
                    panic!("server {} exited on its own ({status}); log tail:\n{}", s.id, tail(&s.log, 40));
                }
            }
        }
    }

    /// The last `lines` lines of every server's log.
    pub fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        for s in &self.servers {
            out.push_str(&format!(
                "---- server {} ({}) ----\n{}\n",
                s.id,
                s.log.display(),
                tail(&s.log, lines)
            ));
        }
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for s in &mut self.servers {
            if let Some(mut child) = s.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if std::thread::panicking() {
            eprintln!("server logs at the failure:\n{}", self.log_tails(30));
        }
    }
}

/// The last `lines` lines of a file (empty if unreadable).
pub fn tail(path: &std::path::Path, lines: usize) -> String {
    let mut text = String::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        let _ = f.read_to_string(&mut text);
    }
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Runs `shoal` with `args` to completion; SIGKILLs it if it takes longer
/// than `limit` (and panics: a client command must not hang).
pub fn run_shoal(args: &[&str], limit: Duration) -> Output {
    let mut child = Command::new(SHOAL)
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning shoal");
    // Drain the pipes on threads so a chatty child cannot block on them.
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let err_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for shoal") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`shoal {}` did not finish within {limit:?}", args.join(" "));
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output { status, stdout: out_t.join().unwrap(), stderr: err_t.join().unwrap() }
}
