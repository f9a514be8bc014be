//! The 6.824 Raft tester's scenarios (2A–2D), one test each, named after the
//! Go test in snake_case, plus Shoal's own fault scenarios. Each runs over
//! many seeds in virtual time (`SHOAL_SEEDS=<n>` for more, `SHOAL_SEED=<n>`
//! to replay one); the cluster checks Raft's safety properties after every
//! event, so these tests fail on any safety violation, not only on the
//! tester's explicit conditions.
//!
//! Differences from the Go tester: a new leader appends a no-op entry, so
//! command indices are checked relative to each other rather than as
//! absolute numbers; "concurrent" clients are interleaved in virtual time.

#![allow(clippy::unwrap_used)]

mod harness;

use bytes::Bytes;
use harness::{Cluster, ELECTION_TIMEOUT};
use shoal_raft::Role;
use shoal_sim::{run_seeds, NetConfig, MILLI, SECOND};

/// Seeds per scenario when SHOAL_SEEDS is unset.
const SEEDS: u64 = 200;

fn cmd(x: u64) -> Bytes {
    Bytes::copy_from_slice(&x.to_le_bytes())
}

fn cluster(n: usize, seed: u64) -> Cluster {
    let mut c = Cluster::new(n, seed);
    c.start_all();
    c
}

fn unreliable_cluster(n: usize, seed: u64) -> Cluster {
    let mut c = Cluster::with_net(n, seed, NetConfig::unreliable());
    c.start_all();
    c
}

// ----- 2A: leader election ----------------------------------------------------

#[test]
fn initial_election() {
    run_seeds("initial_election", SEEDS, |seed| {
        let mut c = cluster(3, seed);
        c.check_one_leader();
        c.run_for(50 * MILLI);
        let term1 = c.check_terms();
        assert!(term1 >= 1, "term is {term1}, but should be at least 1");
        // With no failures, the leader and term stay put.
        c.run_for(2 * ELECTION_TIMEOUT);
        let term2 = c.check_terms();
        assert_eq!(term1, term2, "term changed even though there were no failures");
        c.check_one_leader();
        // Elected within 5 s of virtual time (the check above ran ~3.5 s).
        assert!(c.now() < 10 * SECOND);
    });
}

#[test]
fn re_election() {
    run_seeds("re_election", SEEDS, |seed| {
        let mut c = cluster(3, seed);
        let leader1 = c.check_one_leader();
        c.disconnect(leader1);
        c.check_one_leader();
        c.connect(leader1);
        let leader2 = c.check_one_leader();
        c.disconnect(leader2);
        c.disconnect((leader2 + 1) % 3);
        c.run_for(2 * ELECTION_TIMEOUT);
        c.check_no_leader();
        c.connect((leader2 + 1) % 3);
        c.check_one_leader();
        c.connect(leader2);
        c.check_one_leader();
    });
}

#[test]
fn many_elections() {
    run_seeds("many_elections", SEEDS, |seed| {
        let n = 7;
        let mut c = cluster(n, seed);
        c.check_one_leader();
        for _ in 0..10 {
            let i1 = c.rng.below(n as u64) as usize;
            let i2 = c.rng.below(n as u64) as usize;
            let i3 = c.rng.below(n as u64) as usize;
            c.disconnect(i1);
            c.disconnect(i2);
            c.disconnect(i3);
            // Either the current leader is still alive, or the rest elect one.
            c.check_one_leader();
            c.connect(i1);
            c.connect(i2);
            c.connect(i3);
        }
        c.check_one_leader();
    });
}

// ----- 2B: log replication ------------------------------------------------------

#[test]
fn basic_agree() {
    run_seeds("basic_agree", SEEDS, |seed| {
        let mut c = cluster(3, seed);
        let mut last = c.one(&cmd(1), 3, false);
        for x in 1..=3u64 {
            let (nd, _) = c.n_committed(last + 1);
            assert_eq!(nd, 0, "some have committed before Start()");
            let xindex = c.one(&cmd(x * 100), 3, false);
            assert_eq!(xindex, last + 1, "got index {xindex} but expected {}", last + 1);
            last = xindex;
        }
    });
}

#[test]
fn rpc_bytes() {
    run_seeds("rpc_bytes", SEEDS, |seed| {
        let mut c = Cluster::new(3, seed);
        c.default_flow_control();
        c.start_all();
        c.count_bytes(true);
        c.one(&cmd(99), 3, false);
        let bytes0 = c.bytes_total();
        let mut sent = 0u64;
        for _ in 2..10 {
            let mut s = vec![0u8; 5000];
            for b in s.iter_mut() {
                *b = b'a' + c.rng.below(26) as u8;
            }
            sent += s.len() as u64;
            c.one(&Bytes::from(s), 3, false);
        }
        let got = c.bytes_total() - bytes0;
        let expected = 3 * sent;
        assert!(got <= expected + 50_000, "too many RPC bytes; got {got}, expected {expected}");
    });
}

#[test]
fn follower_failure() {
    run_seeds("follower_failure", SEEDS, |seed| {
        let mut c = cluster(3, seed);
        c.one(&cmd(101), 3, false);
        let leader1 = c.check_one_leader();
        c.disconnect((leader1 + 1) % 3);
        c.one(&cmd(102), 2, false);
        c.run_for(ELECTION_TIMEOUT);
        c.one(&cmd(103), 2, false);
        let leader2 = c.check_one_leader();
        c.disconnect((leader2 + 1) % 3);
        c.disconnect((leader2 + 2) % 3);
        let (index, _) = c.start_cmd(leader2, &cmd(104)).expect("leader rejected Start()");
        c.run_for(2 * ELECTION_TIMEOUT);
        let (n, _) = c.n_committed(index);
        assert_eq!(n, 0, "{n} committed but no majority");
    });
}

#[test]
fn leader_failure() {
    run_seeds("leader_failure", SEEDS, |seed| {
        let mut c = cluster(3, seed);
        c.one(&cmd(101), 3, false);
        let leader1 = c.check_one_leader();
        c.disconnect(leader1);
        c.one(&cmd(102), 2, false);
        c.run_for(ELECTION_TIMEOUT);
        let last = c.one(&cmd(103), 2, false);
        let leader2 = c.check_one_leader();
        c.disconnect(leader2);
        for i in 0..3 {
            c.start_cmd(i, &cmd(104));
        }
        c.run_for(2 * ELECTION_TIMEOUT);
        for index in last + 1..last + 4 {
            let (n, _) = c.n_committed(index);
            assert_eq!(n, 0, "{n} committed but no majority");
        }
    });
}

#[test]
fn fail_agree() {
    run_seeds("fail_agree", SEEDS, |seed| {
        let mut c = cluster(3, seed);
        c.one(&cmd(101), 3, false);
        let leader = c.check_one_leader();
        c.disconnect((leader + 1) % 3);
        c.one(&cmd(102), 2, false);
        c.one(&cmd(103), 2, false);
        c.run_for(ELECTION_TIMEOUT);
        c.one(&cmd(104), 2, false);
        c.one(&cmd(105), 2, false);
        c.connect((leader + 1) % 3);
        c.one(&cmd(106), 3, true);
        c.run_for(ELECTION_TIMEOUT);
        c.one(&cmd(107), 3, true);
    });
}

#[test]
fn fail_no_agree() {
    run_seeds("fail_no_agree", SEEDS, |seed| {
        let n = 5;
        let mut c = cluster(n, seed);
        let last = c.one(&cmd(10), n, false);
        let leader = c.check_one_leader();
        for k in 1..=3 {
            c.disconnect((leader + k) % n);
        }
        let (index, _) = c.start_cmd(leader, &cmd(20)).expect("leader rejected Start()");
        assert_eq!(index, last + 1, "expected index {}, got {index}", last + 1);
        c.run_for(2 * ELECTION_TIMEOUT);
        let (nc, _) = c.n_committed(index);
        assert_eq!(nc, 0, "{nc} committed but no majority");
        for k in 1..=3 {
            c.connect((leader + k) % n);
        }
        let leader2 = c.check_one_leader();
        let started = c.start_cmd(leader2, &cmd(30));
        if let Some((index2, _)) = started {
            assert!(index2 > last, "unexpected index {index2}");
        }
        c.one(&cmd(1000), n, true);
    });
}

#[test]
fn concurrent_starts() {
    run_seeds("concurrent_starts", SEEDS, |seed| {
        let mut c = cluster(3, seed);
        let mut success = false;
        'tries: for attempt in 0..5 {
            if attempt > 0 {
                c.run_for(3 * SECOND);
            }
            let leader = c.check_one_leader();
            let Some((_, term)) = c.start_cmd(leader, &cmd(1)) else { continue };
            let mut started = Vec::new();
            for i in 0..5u64 {
                match c.start_cmd(leader, &cmd(100 + i)) {
                    Some((index, t)) if t == term => started.push((index, 100 + i)),
                    _ => continue 'tries,
                }
            }
            for &(index, x) in &started {
                match c.wait(index, 3, Some(term)) {
                    Some(got) => assert_eq!(got, cmd(x), "value {x} not committed at {index}"),
                    None => continue 'tries,
                }
            }
            success = true;
            break;
        }
        assert!(success, "term changed too often");
    });
}

#[test]
fn rejoin() {
    run_seeds("rejoin", SEEDS, |seed| {
        let mut c = cluster(3, seed);
        c.one(&cmd(101), 3, true);
        let leader1 = c.check_one_leader();
        c.disconnect(leader1);
        // The old leader accepts entries it can never commit.
        c.start_cmd(leader1, &cmd(102));
        c.start_cmd(leader1, &cmd(103));
        c.start_cmd(leader1, &cmd(104));
        let leader2 = c.check_one_leader();
        c.one(&cmd(103), 2, true);
        c.disconnect(leader2);
        c.connect(leader1);
        c.one(&cmd(104), 2, true);
        c.connect(leader2);
        c.one(&cmd(105), 3, true);
    });
}

#[test]
fn backup() {
    run_seeds("backup", SEEDS, |seed| {
        let n = 5;
        let mut c = cluster(n, seed);
        let x = c.rand_cmd();
        c.one(&x, n, true);
        // Put the leader and one follower in a partition.
        let leader1 = c.check_one_leader();
        for k in 2..=4 {
            c.disconnect((leader1 + k) % n);
        }
        // Lots of commands that won't commit.
        for _ in 0..50 {
            let x = c.rand_cmd();
            c.start_cmd(leader1, &x);
        }
        c.run_for(ELECTION_TIMEOUT / 2);
        c.disconnect(leader1);
        c.disconnect((leader1 + 1) % n);
        // Allow the other partition to recover.
        for k in 2..=4 {
            c.connect((leader1 + k) % n);
        }
        for _ in 0..50 {
            let x = c.rand_cmd();
            c.one(&x, 3, true);
        }
        // Now another partitioned leader and one follower.
        let leader2 = c.check_one_leader();
        let mut other = (leader1 + 2) % n;
        if leader2 == other {
            other = (leader2 + 1) % n;
        }
        c.disconnect(other);
        for _ in 0..50 {
            let x = c.rand_cmd();
            c.start_cmd(leader2, &x);
        }
        c.run_for(ELECTION_TIMEOUT / 2);
        // Bring the original leader back to life.
        for i in 0..n {
            c.disconnect(i);
        }
        c.connect(leader1);
        c.connect((leader1 + 1) % n);
        c.connect(other);
        for _ in 0..50 {
            let x = c.rand_cmd();
            c.one(&x, 3, true);
        }
        for i in 0..n {
            c.connect(i);
        }
        let x = c.rand_cmd();
        c.one(&x, n, true);
    });
}

#[test]
fn count() {
    run_seeds("count", SEEDS, |seed| {
        let mut c = Cluster::new(3, seed);
        c.default_flow_control();
        c.start_all();
        c.check_one_leader();
        let total1 = c.rpc_total();
        assert!((1..=30).contains(&total1), "too many or few RPCs ({total1}) to elect initial leader");

        let mut success = false;
        let mut total2 = 0;
        'tries: for attempt in 0..5 {
            if attempt > 0 {
                c.run_for(3 * SECOND);
            }
            let leader = c.check_one_leader();
            let total1 = c.rpc_total();
            let iters = 10u64;
            let Some((starti, term)) = c.start_cmd(leader, &cmd(1)) else { continue };
            let mut cmds = Vec::new();
            for i in 1..iters + 2 {
                let x = c.rng.next_u64();
                cmds.push(x);
                match c.start_cmd(leader, &cmd(x)) {
                    Some((index1, term1)) if term1 == term => {
                        assert_eq!(index1, starti + i, "Start() failed");
                    }
                    _ => continue 'tries,
                }
            }
            for i in 1..iters + 1 {
                match c.wait(starti + i, 3, Some(term)) {
                    Some(got) => assert_eq!(got, cmd(cmds[(i - 1) as usize]), "wrong value committed"),
                    None => continue 'tries,
                }
            }
            total2 = c.rpc_total();
            assert!(
                total2 - total1 <= (iters + 1 + 3) * 3,
                "too many RPCs ({}) for {iters} entries",
                total2 - total1
            );
            success = true;
            break;
        }
        assert!(success, "term changed too often");
        c.run_for(ELECTION_TIMEOUT);
        let total3 = c.rpc_total();
        assert!(total3 - total2 <= 3 * 20, "too many RPCs ({}) for 1 second of idleness", total3 - total2);
    });
}

// ----- 2C: persistence -------------------------------------------------------------

#[test]
fn persist1() {
    run_seeds("persist1", SEEDS, |seed| {
        let mut c = cluster(3, seed);
        c.one(&cmd(11), 3, true);
        // Crash and re-start all.
        for i in 0..3 {
            c.crash(i);
        }
        for i in 0..3 {
            c.start(i);
            c.connect(i);
        }
        c.one(&cmd(12), 3, true);
        let leader1 = c.check_one_leader();
        c.restart(leader1);
        c.one(&cmd(13), 3, true);
        let leader2 = c.check_one_leader();
        c.disconnect(leader2);
        let index = c.one(&cmd(14), 2, true);
        c.crash(leader2);
        c.start(leader2);
        c.connect(leader2);
        c.wait(index, 3, None); // wait for leader2 to join before killing i3
        let i3 = (c.check_one_leader() + 1) % 3;
        c.disconnect(i3);
        c.one(&cmd(15), 2, true);
        c.crash(i3);
        c.start(i3);
        c.connect(i3);
        c.one(&cmd(16), 3, true);
    });
}

#[test]
fn persist2() {
    run_seeds("persist2", SEEDS, |seed| {
        let n = 5;
        let mut c = cluster(n, seed);
        let mut index = 1;
        for _ in 0..5 {
            c.one(&cmd(10 + index), n, true);
            index += 1;
            let leader1 = c.check_one_leader();
            c.disconnect((leader1 + 1) % n);
            c.disconnect((leader1 + 2) % n);
            c.one(&cmd(10 + index), n - 2, true);
            index += 1;
            c.disconnect(leader1);
            c.disconnect((leader1 + 3) % n);
            c.disconnect((leader1 + 4) % n);
            for k in [1, 2] {
                c.crash((leader1 + k) % n);
                c.start((leader1 + k) % n);
                c.connect((leader1 + k) % n);
            }
            c.run_for(ELECTION_TIMEOUT);
            c.crash((leader1 + 3) % n);
            c.start((leader1 + 3) % n);
            c.connect((leader1 + 3) % n);
            c.one(&cmd(10 + index), n - 2, true);
            index += 1;
            c.connect((leader1 + 4) % n);
            c.connect(leader1);
        }
        c.one(&cmd(1000), n, true);
    });
}

#[test]
fn persist3() {
    run_seeds("persist3", SEEDS, |seed| {
        let mut c = cluster(3, seed);
        c.one(&cmd(101), 3, true);
        let leader = c.check_one_leader();
        c.disconnect((leader + 2) % 3);
        c.one(&cmd(102), 2, true);
        c.crash(leader);
        c.crash((leader + 1) % 3);
        c.connect((leader + 2) % 3);
        c.start(leader);
        c.connect(leader);
        c.one(&cmd(103), 2, true);
        c.start((leader + 1) % 3);
        c.connect((leader + 1) % 3);
        c.one(&cmd(104), 3, true);
    });
}

/// Figure 8 of the Raft paper, with crashes: leaders come and go mid-commit,
/// and no leader may commit an earlier term's entry by counting replicas.
#[test]
fn figure8() {
    run_seeds("figure8", SEEDS, |seed| figure8_run(seed, false));
}

fn figure8_run(seed: u64, torn: bool) {
    let n = 5;
    let mut c = Cluster::new(n, seed);
    c.torn_crashes = torn;
    c.start_all();
    let x = c.rand_cmd();
    c.one(&x, 1, true);
    let mut nup = n;
    for _ in 0..1000 {
        let mut leader = None;
        for i in 0..n {
            let x = c.rand_cmd();
            if c.start_cmd(i, &x).is_some() {
                leader = Some(i);
            }
        }
        let ms =
            if c.rng.below(1000) < 100 { c.rng.below(ELECTION_TIMEOUT / MILLI / 2) } else { c.rng.below(13) };
        c.run_for(ms * MILLI);
        if let Some(l) = leader {
            c.crash(l);
            nup -= 1;
        }
        if nup < 3 {
            let s = c.rng.below(n as u64) as usize;
            if !c.is_up(s) {
                c.start(s);
                c.connect(s);
                nup += 1;
            }
        }
    }
    for i in 0..n {
        if !c.is_up(i) {
            c.start(i);
            c.connect(i);
        }
    }
    let x = c.rand_cmd();
    c.one(&x, n, true);
}

#[test]
fn unreliable_agree() {
    run_seeds("unreliable_agree", SEEDS, |seed| {
        let n = 5;
        let mut c = unreliable_cluster(n, seed);
        for iters in 1..50u64 {
            // Four "concurrent" clients: started now, waited for later.
            for j in 0..4 {
                for i in 0..n {
                    if c.start_cmd(i, &cmd(100 * iters + j)).is_some() {
                        break;
                    }
                }
            }
            c.one(&cmd(iters), 1, true);
        }
        c.set_unreliable(false);
        c.one(&cmd(100), n, true);
    });
}

#[test]
fn figure8_unreliable() {
    run_seeds("figure8_unreliable", SEEDS, |seed| {
        let n = 5;
        let mut c = unreliable_cluster(n, seed);
        let x = cmd(c.rng.below(10_000));
        c.one(&x, 1, true);
        let mut nup = n;
        for iters in 0..1000 {
            if iters == 200 {
                c.set_long_reordering(true);
            }
            let mut leader = None;
            for i in 0..n {
                let x = cmd(c.rng.below(10_000));
                if c.start_cmd(i, &x).is_some() && c.is_connected(i) {
                    leader = Some(i);
                }
            }
            let ms = if c.rng.below(1000) < 100 {
                c.rng.below(ELECTION_TIMEOUT / MILLI / 2)
            } else {
                c.rng.below(13)
            };
            c.run_for(ms * MILLI);
            if let Some(l) = leader {
                if c.rng.below(1000) < ELECTION_TIMEOUT / MILLI / 2 {
                    c.disconnect(l);
                    nup -= 1;
                }
            }
            if nup < 3 {
                let s = c.rng.below(n as u64) as usize;
                if !c.is_connected(s) {
                    c.connect(s);
                    nup += 1;
                }
            }
        }
        for i in 0..n {
            c.connect(i);
        }
        let x = cmd(c.rng.below(10_000));
        c.one(&x, n, true);
    });
}

/// 6.824's internalChurn: three clients submit commands while servers are
/// disconnected, crashed and restarted at random; every command a client saw
/// committed must be in the final log.
fn churn(seed: u64, unreliable: bool) {
    let n = 5;
    let mut c = if unreliable { unreliable_cluster(n, seed) } else { cluster(n, seed) };
    #[derive(Clone, Copy)]
    enum Client {
        Idle { until: u64 },
        Waiting { index: u64, x: u64, checks: usize, next: u64 },
    }
    let mut clients = [Client::Idle { until: 0 }; 3];
    let mut values = Vec::new();
    let step = 10 * MILLI;
    let client_step = |c: &mut Cluster, clients: &mut [Client; 3], values: &mut Vec<u64>| {
        let now = c.now();
        for (me, cl) in clients.iter_mut().enumerate() {
            match *cl {
                Client::Idle { until } if now >= until => {
                    let x = c.rng.next_u64();
                    let mut started = None;
                    for i in 0..n {
                        if let Some((index, _)) = c.start_cmd(i, &cmd(x)) {
                            started = Some(index);
                        }
                    }
                    *cl = match started {
                        Some(index) => Client::Waiting { index, x, checks: 0, next: now + 10 * MILLI },
                        None => Client::Idle { until: now + (79 + me as u64 * 17) * MILLI },
                    };
                }
                Client::Waiting { index, x, checks, next } if now >= next => {
                    let (nd, got) = c.n_committed(index);
                    if nd > 0 {
                        if got == Some(cmd(x)) {
                            values.push(x);
                        }
                        *cl = Client::Idle { until: now };
                    } else if checks + 1 >= 5 {
                        *cl = Client::Idle { until: now };
                    } else {
                        let waits = [10, 20, 50, 100, 200];
                        *cl = Client::Waiting {
                            index,
                            x,
                            checks: checks + 1,
                            next: now + waits[checks + 1] * MILLI,
                        };
                    }
                }
                _ => {}
            }
        }
    };
    for _ in 0..20 {
        if c.rng.below(1000) < 200 {
            let i = c.rng.below(n as u64) as usize;
            c.disconnect(i);
        }
        if c.rng.below(1000) < 500 {
            let i = c.rng.below(n as u64) as usize;
            if !c.is_up(i) {
                c.start(i);
            }
            c.connect(i);
        }
        if c.rng.below(1000) < 200 {
            let i = c.rng.below(n as u64) as usize;
            c.crash(i);
        }
        // Let the clients run for 7/10 of an election timeout.
        let until = c.now() + ELECTION_TIMEOUT * 7 / 10;
        while c.now() < until {
            client_step(&mut c, &mut clients, &mut values);
            c.run_for(step);
        }
    }
    c.run_for(ELECTION_TIMEOUT);
    c.set_unreliable(false);
    for i in 0..n {
        if !c.is_up(i) {
            c.start(i);
        }
        c.connect(i);
    }
    let x = c.rand_cmd();
    let last_index = c.one(&x, n, true);
    let mut really = std::collections::HashSet::new();
    for index in 1..=last_index {
        if let Some(v) = c.wait(index, n, None) {
            if v.len() == 8 {
                really.insert(u64::from_le_bytes(v[..].try_into().unwrap()));
            }
        }
    }
    for v in values {
        assert!(really.contains(&v), "didn't find a value {v} that a client saw committed");
    }
}

#[test]
fn reliable_churn() {
    run_seeds("reliable_churn", SEEDS, |seed| churn(seed, false));
}

#[test]
fn unreliable_churn() {
    run_seeds("unreliable_churn", SEEDS, |seed| churn(seed, true));
}

// ----- 2D: snapshots -----------------------------------------------------------------

const SNAPSHOT_INTERVAL: u64 = 10;
/// 6.824's MAXLOGSIZE: the log after snapshots must stay small.
const MAX_LOG_BYTES: usize = 2000;

fn snap_common(seed: u64, disconnect: bool, reliable: bool, crash: bool) {
    let n = 3;
    let mut c =
        if reliable { Cluster::new(n, seed) } else { Cluster::with_net(n, seed, NetConfig::unreliable()) };
    c.snapshot_interval = Some(SNAPSHOT_INTERVAL);
    c.start_all();
    let x = c.rand_cmd();
    c.one(&x, n, true);
    let mut leader1 = c.check_one_leader();
    for i in 0..30 {
        let (mut victim, mut sender) = ((leader1 + 1) % n, leader1);
        if i % 3 == 1 {
            sender = (leader1 + 1) % n;
            victim = leader1;
        }
        if disconnect {
            c.disconnect(victim);
            let x = c.rand_cmd();
            c.one(&x, n - 1, true);
        }
        if crash {
            c.crash(victim);
            let x = c.rand_cmd();
            c.one(&x, n - 1, true);
        }
        // Perhaps send enough to get a snapshot.
        let nn = SNAPSHOT_INTERVAL / 2 + c.rng.below(SNAPSHOT_INTERVAL);
        for _ in 0..nn {
            let x = c.rand_cmd();
            c.start_cmd(sender, &x);
        }
        // Let applier threads catch up with the Start()s.
        let x = c.rand_cmd();
        if !disconnect && !crash {
            c.one(&x, n, true);
        } else {
            c.one(&x, n - 1, true);
        }
        let size = c.max_log_bytes();
        assert!(size < MAX_LOG_BYTES, "log size too large: {size}");
        if disconnect {
            // Reconnect a follower, who may need a snapshot to catch up.
            c.connect(victim);
            let x = c.rand_cmd();
            c.one(&x, n, true);
            leader1 = c.check_one_leader();
        }
        if crash {
            c.start(victim);
            c.connect(victim);
            let x = c.rand_cmd();
            c.one(&x, n, true);
            leader1 = c.check_one_leader();
        }
    }
}

#[test]
fn snapshot_basic() {
    run_seeds("snapshot_basic", SEEDS, |seed| snap_common(seed, false, true, false));
}

#[test]
fn snapshot_install() {
    run_seeds("snapshot_install", SEEDS, |seed| snap_common(seed, true, true, false));
}

#[test]
fn snapshot_install_unreliable() {
    run_seeds("snapshot_install_unreliable", SEEDS, |seed| snap_common(seed, true, false, false));
}

#[test]
fn snapshot_install_crash() {
    run_seeds("snapshot_install_crash", SEEDS, |seed| snap_common(seed, false, true, true));
}

#[test]
fn snapshot_install_unreliable_crash() {
    run_seeds("snapshot_install_unreliable_crash", SEEDS, |seed| snap_common(seed, false, false, true));
}

#[test]
fn snapshot_all_crash() {
    run_seeds("snapshot_all_crash", SEEDS, |seed| {
        let n = 3;
        let mut c = Cluster::new(n, seed);
        c.snapshot_interval = Some(SNAPSHOT_INTERVAL);
        c.start_all();
        let x = c.rand_cmd();
        c.one(&x, n, true);
        for _ in 0..5 {
            // Perhaps enough to get a snapshot.
            let nn = SNAPSHOT_INTERVAL / 2 + c.rng.below(SNAPSHOT_INTERVAL);
            for _ in 0..nn {
                let x = c.rand_cmd();
                c.one(&x, n, true);
            }
            let x = c.rand_cmd();
            let index1 = c.one(&x, n, true);
            // Crash all.
            for i in 0..n {
                c.crash(i);
            }
            for i in 0..n {
                c.start(i);
                c.connect(i);
            }
            let x = c.rand_cmd();
            let index2 = c.one(&x, n, true);
            assert!(index2 > index1, "index decreased from {index1} to {index2}");
        }
    });
}

#[test]
fn snapshot_init() {
    run_seeds("snapshot_init", SEEDS, |seed| {
        let n = 3;
        let mut c = Cluster::new(n, seed);
        c.snapshot_interval = Some(SNAPSHOT_INTERVAL);
        c.start_all();
        let x = c.rand_cmd();
        c.one(&x, n, true);
        // Enough ops to make a snapshot.
        for _ in 0..SNAPSHOT_INTERVAL + 1 {
            let x = c.rand_cmd();
            c.one(&x, n, true);
        }
        for round in 0..2 {
            for i in 0..n {
                c.crash(i);
            }
            for i in 0..n {
                c.start(i);
                c.connect(i);
            }
            if round == 0 {
                // A single op, to get something to be written back to persistent storage.
                let x = c.rand_cmd();
                c.one(&x, n, true);
            }
        }
        let x = c.rand_cmd();
        c.one(&x, n, true);
    });
}

// ----- Beyond 6.824 ------------------------------------------------------------------

/// RAFT-8: a node cut off for a long time must not raise the cluster's term
/// or depose the leader when it returns (pre-vote).
#[test]
fn pre_vote_rejoin() {
    run_seeds("pre_vote_rejoin", SEEDS, |seed| {
        let n = 5;
        let mut c = cluster(n, seed);
        let leader = c.check_one_leader();
        let x = c.rand_cmd();
        c.one(&x, n, true);
        let term = c.check_terms();
        let lost = (leader + 1 + c.rng.below(n as u64 - 1) as usize) % n;
        c.disconnect(lost);
        c.run_for(20 * ELECTION_TIMEOUT);
        let lost_term = c.raft(lost).unwrap().term();
        assert_eq!(lost_term, term, "an isolated node raised its term to {lost_term}");
        c.connect(lost);
        c.run_for(3 * ELECTION_TIMEOUT);
        assert_eq!(c.check_terms(), term, "the returning node disturbed the term");
        assert_eq!(c.check_one_leader(), leader, "the returning node deposed the leader");
        let x = c.rand_cmd();
        c.one(&x, n, true);
    });
}

/// RAFT-8: a leader that loses its majority steps down by itself (check-quorum),
/// and the majority side elects a new leader that commits.
#[test]
fn check_quorum_step_down() {
    run_seeds("check_quorum_step_down", SEEDS, |seed| {
        let n = 5;
        let mut c = cluster(n, seed);
        let leader = c.check_one_leader();
        let buddy = (leader + 1) % n;
        let rest: Vec<usize> = (0..n).filter(|&i| i != leader && i != buddy).collect();
        c.net.partition(&[&[leader, buddy], &rest]);
        c.run_for(3 * ELECTION_TIMEOUT);
        assert_ne!(c.role(leader), Some(Role::Leader), "a minority leader did not step down");
        let new_leader = (0..n).find(|&i| c.role(i) == Some(Role::Leader));
        assert!(new_leader.is_some_and(|l| rest.contains(&l)), "the majority did not elect a leader");
        // The minority cannot commit anything.
        let before = c.n_committed(1_000_000).0;
        assert_eq!(before, 0);
        let x = c.rand_cmd();
        c.one(&x, 3, true);
        c.net.heal_all();
        let x = c.rand_cmd();
        c.one(&x, n, true);
    });
}

/// One-way link failures: a leader that can hear but not speak, and a
/// follower that hears the leader but cannot answer.
#[test]
fn asymmetric_partition() {
    run_seeds("asymmetric_partition", SEEDS, |seed| {
        let n = 3;
        let mut c = cluster(n, seed);
        let leader = c.check_one_leader();
        let x = c.rand_cmd();
        c.one(&x, n, true);
        // The leader's outgoing links fail: the others elect someone else,
        // and the mute leader (hearing no acks) steps down.
        for i in 0..n {
            if i != leader {
                c.net.cut(leader, i);
            }
        }
        c.run_for(3 * ELECTION_TIMEOUT);
        assert_ne!(c.role(leader), Some(Role::Leader), "a mute leader kept its role");
        let x = c.rand_cmd();
        c.one(&x, n - 1, true);
        c.net.heal_all();
        let x = c.rand_cmd();
        c.one(&x, n, true);
        // A follower that cannot answer: the rest still commit, and it catches
        // up once the link heals.
        let leader = c.check_one_leader();
        let deaf = (leader + 1) % n;
        c.net.cut(deaf, leader);
        for _ in 0..5 {
            let x = c.rand_cmd();
            c.one(&x, n - 1, true);
        }
        c.net.heal_all();
        let x = c.rand_cmd();
        c.one(&x, n, true);
    });
}

/// Crashes that tear the last unsynced write: recovery cuts the torn tail,
/// and the cluster stays safe and live (figure 8 with torn disks).
#[test]
fn torn_write_crashes() {
    run_seeds("torn_write_crashes", SEEDS, |seed| figure8_run(seed, true));
}

/// A long randomized run: partitions (also one-way), crashes with torn
/// writes, an unreliable network with reordering, snapshots, and clients
/// all at once, with the safety checks on after every event; then heal and
/// require progress.
#[test]
fn chaos() {
    run_seeds("chaos", SEEDS, |seed| {
        let n = 5;
        let mut c = Cluster::new(n, seed);
        c.torn_crashes = true;
        c.snapshot_interval = Some(25);
        c.snapshot_chunk_bytes = 200;
        c.start_all();
        let deadline = c.now() + 60 * SECOND;
        while c.now() < deadline {
            match c.rng.below(100) {
                0..=4 => {
                    let i = c.rng.below(n as u64) as usize;
                    c.crash(i);
                }
                5..=14 => {
                    let i = c.rng.below(n as u64) as usize;
                    if !c.is_up(i) {
                        c.start(i);
                    }
                    c.connect(i);
                }
                15..=19 => {
                    let mut nodes: Vec<usize> = (0..n).collect();
                    c.rng.shuffle(&mut nodes);
                    let k = c.rng.range(1..n as u64) as usize;
                    let (a, b) = nodes.split_at(k);
                    c.net.partition(&[a, b]);
                }
                20..=22 => {
                    let a = c.rng.below(n as u64) as usize;
                    let b = c.rng.below(n as u64) as usize;
                    if a != b {
                        c.net.cut(a, b);
                    }
                }
                23..=30 => c.net.heal_all(),
                31..=33 => {
                    let on = c.rng.ratio(1, 2);
                    c.set_unreliable(on);
                }
                34 => {
                    let on = c.rng.ratio(1, 4);
                    c.set_long_reordering(on);
                }
                _ => {
                    for _ in 0..c.rng.below(4) {
                        let i = c.rng.below(n as u64) as usize;
                        let x = c.rand_cmd();
                        c.start_cmd(i, &x);
                    }
                }
            }
            let ms = c.rng.range(1..200);
            c.run_for(ms * MILLI);
        }
        c.net.heal_all();
        c.set_long_reordering(false);
        c.set_unreliable(false);
        for i in 0..n {
            if !c.is_up(i) {
                c.start(i);
            }
            c.connect(i);
        }
        let x = c.rand_cmd();
        c.one(&x, n, true);
        assert!(c.max_term() >= 1);
        if std::env::var_os("SHOAL_DESCRIBE").is_some() {
            eprintln!("{}", c.describe());
        }
    });
}
