//! `shoal kv` from the command line: the client commands against a real
//! three-process cluster on 127.0.0.1 (stdout, stderr, exit codes), and the
//! errors a user can make (one clear line on stderr, a non-zero exit, never
//! a panic).

#![allow(clippy::unwrap_used)]

mod common;

use std::process::Output;
use std::time::{Duration, Instant};

use common::{run_shoal, Cluster};

/// A client command must finish well within this (its own timeout is 10 s).
const LIMIT: Duration = Duration::from_secs(30);

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn describe(args: &[&str], o: &Output) -> String {
    format!(
        "`shoal {}` exited {}\nstdout: {:?}\nstderr: {:?}",
        args.join(" "),
        o.status,
        stdout(o),
        stderr(o)
    )
}

/// Runs `shoal kv --cluster <cluster> <args>`.
fn kv(cluster: &str, args: &[&str]) -> (Vec<String>, Output) {
    let mut full: Vec<String> = vec!["kv".into(), "--cluster".into(), cluster.into()];
    full.extend(args.iter().map(|a| a.to_string()));
    let refs: Vec<&str> = full.iter().map(String::as_str).collect();
    let out = run_shoal(&refs, LIMIT);
    (full, out)
}

/// Expects success with exactly `expected` on stdout.
fn ok(cluster: &str, args: &[&str], expected: &str) {
    let (full, out) = kv(cluster, args);
    let shown = describe(&full.iter().map(String::as_str).collect::<Vec<_>>(), &out);
    assert!(out.status.success(), "{shown}");
    assert_eq!(stdout(&out), expected, "{shown}");
}

/// Expects exit code 1, nothing on stdout, and one line on stderr
/// containing `needle`.
fn fails_with_1(cluster: &str, args: &[&str], needle: &str) {
    let (full, out) = kv(cluster, args);
    let shown = describe(&full.iter().map(String::as_str).collect::<Vec<_>>(), &out);
    assert_eq!(out.status.code(), Some(1), "{shown}");
    assert_eq!(stdout(&out), "", "{shown}");
    assert_one_line(&out, needle, &shown);
}

/// One line on stderr, containing `needle`, and no panic.
fn assert_one_line(out: &Output, needle: &str, shown: &str) {
    let err = stderr(out);
    assert!(!err.contains("panicked"), "{shown}");
    assert_eq!(err.trim_end().lines().count(), 1, "expected one line on stderr; {shown}");
    assert!(err.contains(needle), "stderr should mention {needle:?}; {shown}");
}

/// Runs `shoal <args>` and expects a non-zero exit with one line on stderr
/// mentioning `needle`.
fn rejected(args: &[&str], needle: &str) {
    let out = run_shoal(args, LIMIT);
    let shown = describe(args, &out);
    assert!(!out.status.success(), "{shown}");
    assert!(out.status.code().is_some(), "killed by a signal: {shown}");
    assert_one_line(&out, needle, &shown);
}

#[test]
fn cli_commands_against_a_three_process_cluster() {
    let listen = common::free_addrs(3);
    let mut cluster = Cluster::direct(&listen);
    cluster.start_all();
    let addrs = cluster.client_addrs().join(",");

    // `status` until one server says it leads.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        cluster.assert_running();
        let (full, out) = kv(&addrs, &["status"]);
        let text = stdout(&out);
        let shown = describe(&full.iter().map(String::as_str).collect::<Vec<_>>(), &out);
        assert!(out.status.success(), "{shown}");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "one line per server; {shown}");
        for (line, addr) in lines.iter().zip(cluster.client_addrs()) {
            assert!(line.starts_with(&addr), "{shown}");
        }
        if lines.iter().filter(|l| l.contains("leader")).count() == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "no leader within 15 s; last {shown}");
        std::thread::sleep(Duration::from_millis(100));
    }

    ok(&addrs, &["put", "color", "blue"], "OK\n");
    ok(&addrs, &["get", "color"], "blue\n");
    // A value starting with '-' goes after `--`, as with any clap command.
    ok(&addrs, &["append", "color", "--", "-green"], "OK\n");
    ok(&addrs, &["get", "color"], "blue-green\n");
    ok(&addrs, &["append", "fresh", "x"], "OK\n");
    ok(&addrs, &["get", "fresh"], "x\n");
    // Values with spaces and an empty value travel intact.
    ok(&addrs, &["put", "phrase", "two words"], "OK\n");
    ok(&addrs, &["get", "phrase"], "two words\n");
    ok(&addrs, &["put", "empty", ""], "OK\n");
    ok(&addrs, &["get", "empty"], "\n");

    ok(&addrs, &["cas", "color", "blue-green", "red"], "OK\n");
    ok(&addrs, &["get", "color"], "red\n");
    fails_with_1(&addrs, &["cas", "color", "blue", "violet"], "compare failed");
    ok(&addrs, &["get", "color"], "red\n");
    ok(&addrs, &["cas", "--absent", "new", "first"], "OK\n");
    ok(&addrs, &["get", "new"], "first\n");
    fails_with_1(&addrs, &["cas", "--absent", "new", "second"], "compare failed");
    fails_with_1(&addrs, &["cas", "missing", "x", "y"], "compare failed");

    ok(&addrs, &["delete", "color"], "OK\n");
    fails_with_1(&addrs, &["get", "color"], "not found");
    fails_with_1(&addrs, &["get", "never-written"], "not found");
    // Deleting an absent key is not an error.
    ok(&addrs, &["delete", "color"], "OK\n");

    // With one server down the other two still answer, and `status` says
    // which one is unreachable.
    cluster.kill(2);
    ok(&addrs, &["put", "after", "kill"], "OK\n");
    ok(&addrs, &["get", "after"], "kill\n");
    let (full, out) = kv(&addrs, &["status"]);
    let shown = describe(&full.iter().map(String::as_str).collect::<Vec<_>>(), &out);
    assert!(out.status.success(), "{shown}");
    let text = stdout(&out);
    assert_eq!(text.lines().count(), 3, "{shown}");
    assert!(text.lines().nth(2).unwrap().contains("unreachable"), "{shown}");
    cluster.assert_running();
}

#[test]
fn cli_client_errors_are_one_clear_line() {
    // No --cluster at all.
    rejected(&["kv", "get", "k"], "--cluster");
    // Addresses that are not HOST:PORT.
    rejected(&["kv", "--cluster", "nonsense", "get", "k"], "nonsense");
    rejected(&["kv", "--cluster", "127.0.0.1", "put", "k", "v"], "127.0.0.1");
    rejected(&["kv", "--cluster", "127.0.0.1:99999", "get", "k"], "99999");
    // A well-formed address where nobody listens: gives up after the timeout.
    let nobody = common::free_addrs(1)[0].to_string();
    let started = Instant::now();
    rejected(&["kv", "--cluster", &nobody, "--timeout-secs", "1", "put", "k", "v"], "no leader");
    assert!(started.elapsed() < LIMIT);
}

#[test]
fn serve_rejects_bad_arguments_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let (a, b, c) = ("127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003");
    let addrs = common::free_addrs(3);
    let listen = addrs[0].to_string();
    let good = format!("1={},2={},3={}", addrs[0], addrs[1], addrs[2]);
    let serve = |id: &str, listen: &str, peers: &str, needle: &str| {
        rejected(&["kv", "serve", "--id", id, "--listen", listen, "--peers", peers, "--data", data], needle);
    };
    // The id is not a member.
    serve("4", &listen, &good, "--id 4");
    // Malformed --peers entries.
    serve("1", &listen, &format!("1={a},2={b},{c}"), c);
    serve("1", &listen, &format!("1={a},two={b}"), "two");
    serve("1", &listen, "1=nohost,2=127.0.0.1:2", "nohost");
    serve("1", &listen, &format!("1={a},1={b}"), "twice");
    serve("1", &listen, &format!("0={a},1={b}"), "0=");
    // A malformed --listen.
    serve("1", "localhost", &good, "localhost");
    assert!(!dir.path().join("data").exists(), "a rejected serve must not create its data directory");
}

/// The leader's node id, from `status` (lines `ADDR  node N  leader ...`).
fn leader_id(addrs: &str) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, out) = kv(addrs, &["status"]);
        let text = stdout(&out);
        let found = text.lines().find(|l| l.contains("leader")).and_then(|l| {
            let rest = &l[l.find("node ")? + 5..];
            rest.split_whitespace().next()?.parse().ok()
        });
        if let Some(id) = found {
            return id;
        }
        assert!(Instant::now() < deadline, "no leader within 15 s: {text}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `--cluster` lists the servers in any order the user likes; the client
/// must still find the leader.
///
/// A regression test: the clerk once took a leader hint (a Raft node id)
/// to be a position in the `--cluster` list, so with the list out of
/// node-id order two followers could bounce a request between them. The
/// leader `L` sits at position `(L + 1) % 3`, the order that looped.
#[test]
fn cli_finds_the_leader_whatever_the_order_of_cluster() {
    let listen = common::free_addrs(3);
    let mut cluster = Cluster::direct(&listen);
    cluster.start_all();
    let addrs = cluster.client_addrs();
    ok(&addrs.join(","), &["put", "k", "v"], "OK\n");
    let leader = leader_id(&addrs.join(",")) as usize;
    let mut order = vec![String::new(); 3];
    let at = (leader + 1) % 3;
    order[at] = addrs[leader - 1].clone();
    let mut rest = (0..3).filter(|&i| i != leader - 1).map(|i| addrs[i].clone());
    for (pos, slot) in order.iter_mut().enumerate() {
        if pos != at {
            *slot = rest.next().unwrap();
        }
    }
    let permuted = order.join(",");
    for _ in 0..6 {
        ok(&permuted, &["--timeout-secs", "3", "get", "k"], "v\n");
    }
    cluster.assert_running();
}
