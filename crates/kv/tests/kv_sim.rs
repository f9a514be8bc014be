//! The 6.824 kvraft scenarios (3A, 3B) under their Go names in snake_case,
//! in virtual time over many seeds. Every one records its clients' history
//! and runs the linearizability checker: an illegal history fails with the
//! seed. Raft's safety properties are checked after every event.

#![allow(clippy::unwrap_used)]

mod harness;

use bytes::Bytes;
use harness::{KvCluster, Workload, ELECTION_TIMEOUT};
use shoal_kv::Op;
use shoal_sim::{run_seeds, MILLI, SECOND};

/// Seeds per scenario when SHOAL_SEEDS is unset.
const SEEDS: u64 = 110;
/// 6.824's maxraftstate for the snapshot tests, in bytes of Raft log.
const MAX_RAFT_STATE: usize = 1000;

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

#[derive(Clone, Copy, Default)]
struct Generic {
    clients: usize,
    unreliable: bool,
    crash: bool,
    partitions: bool,
    max_raft_state: Option<usize>,
    random_keys: Option<u64>,
}

/// 6.824's GenericTest: three rounds of clients working for 5 s while the
/// network partitions at random and servers crash, each client checking that
/// its own key holds exactly its appends; then the whole history is checked.
fn generic(seed: u64, g: Generic) {
    let n = 5;
    if std::env::var_os("SHOAL_DESCRIBE").is_some() {
        eprintln!("seed {seed}: starting");
    }
    let mut c = KvCluster::new(n, seed, g.unreliable, g.max_raft_state);
    for _ in 0..g.clients {
        c.add_client(Workload::Generic { random_keys: g.random_keys });
    }
    for _round in 0..3 {
        c.start_clients();
        let until = c.now() + 5 * SECOND;
        while c.now() < until {
            if g.partitions {
                let mut servers: Vec<usize> = (0..n).collect();
                c.rng.shuffle(&mut servers);
                let k = c.rng.below(n as u64 + 1) as usize;
                let (a, b) = servers.split_at(k);
                c.partition(a, b);
                let pause = ELECTION_TIMEOUT + c.rng.below(200) * MILLI;
                c.run_for(pause);
            } else {
                c.run_for(100 * MILLI);
            }
            if std::env::var_os("SHOAL_DESCRIBE").is_some() {
                eprintln!("{}", c.describe());
            }
        }
        c.heal();
        c.stop_clients(30 * SECOND);
        if g.crash {
            for i in 0..n {
                c.crash_server(i);
            }
            for i in 0..n {
                c.start_server(i);
                c.connect(i);
            }
        }
        match g.max_raft_state {
            Some(max) => {
                let size = c.max_log_bytes();
                assert!(size <= 8 * max, "seed {seed}: logs were not trimmed ({size} > 8*{max})");
            }
            None => assert_eq!(c.max_snapshot_index(), 0, "seed {seed}: snapshot without maxraftstate"),
        }
    }
    assert!(c.ops_done() > 0, "seed {seed}: no operation completed");
    if std::env::var_os("SHOAL_DESCRIBE").is_some() {
        eprintln!(
            "seed {seed}: {} operations completed, {} in history, {} raft messages",
            c.ops_done(),
            c.history().len(),
            c.raft_messages
        );
    }
    c.check_linearizable();
}

// ----- 3A ---------------------------------------------------------------------

#[test]
fn basic() {
    run_seeds("basic", SEEDS, |seed| generic(seed, Generic { clients: 1, ..Default::default() }));
}

#[test]
fn concurrent() {
    run_seeds("concurrent", SEEDS, |seed| generic(seed, Generic { clients: 5, ..Default::default() }));
}

#[test]
fn unreliable() {
    run_seeds("unreliable", SEEDS, |seed| {
        generic(seed, Generic { clients: 5, unreliable: true, ..Default::default() })
    });
}

/// Concurrent appends to one key through an unreliable network: each
/// client's appends appear exactly once, in its order (at-most-once).
#[test]
fn unreliable_one_key() {
    run_seeds("unreliable_one_key", SEEDS, |seed| {
        let mut c = KvCluster::new(3, seed, true, None);
        let clients = 5;
        for _ in 0..clients {
            c.add_client(Workload::OneKey);
        }
        c.start_clients();
        c.run_for(5 * SECOND);
        c.stop_clients(30 * SECOND);
        let reader = c.add_client(Workload::Idle);
        c.submit(reader, Op::Get { key: b("k") });
        assert!(c.wait_client(reader, 30 * SECOND), "seed {seed}: final read never finished");
        let value = c.last_value(reader).unwrap_or_default();
        for cl in 0..clients {
            let mine: Vec<u64> = value
                .split(" y")
                .filter_map(|s| {
                    let mut parts = s.trim().strip_prefix("x ")?.split(' ');
                    let who: usize = parts.next()?.parse().ok()?;
                    let j: u64 = parts.next()?.parse().ok()?;
                    (who == cl).then_some(j)
                })
                .collect();
            let expected: Vec<u64> = (0..c.client_ops(cl).div_ceil(2)).collect();
            // Unknown-outcome appends may or may not be there, but never twice
            // and never out of order.
            assert!(
                mine.windows(2).all(|w| w[0] < w[1]),
                "seed {seed}: client {cl} appends out of order or duplicated: {mine:?}"
            );
            assert!(
                expected.iter().all(|j| mine.contains(j)),
                "seed {seed}: client {cl} lost an acknowledged append: {mine:?} vs {expected:?}"
            );
        }
        c.check_linearizable();
    });
}

/// A minority partition cannot complete operations; the majority can; after
/// healing, the minority's stuck operations complete.
#[test]
fn one_partition() {
    run_seeds("one_partition", SEEDS, |seed| {
        let n = 5;
        let mut c = KvCluster::new(n, seed, false, None);
        let all = c.add_client(Workload::Idle);
        c.submit(all, Op::Put { key: b("1"), value: b("13") });
        assert!(c.wait_client(all, 10 * SECOND));
        let leader = c.leader().expect("a leader after a completed write");
        let mut others: Vec<usize> = (0..n).filter(|&i| i != leader).collect();
        c.rng.shuffle(&mut others);
        let p1 = vec![leader, others[0], others[1]];
        let p2 = vec![others[2], others[3]];
        c.partition(&p1, &p2);
        let ckp1 = c.add_client(Workload::Idle);
        let ckp2a = c.add_client(Workload::Idle);
        let ckp2b = c.add_client(Workload::Idle);
        c.partition(&p1, &p2);
        c.connect_client_only(all, &[]);
        c.connect_client_only(ckp1, &p1);
        c.connect_client_only(ckp2a, &p2);
        c.connect_client_only(ckp2b, &p2);
        c.submit(ckp1, Op::Put { key: b("1"), value: b("14") });
        assert!(c.wait_client(ckp1, 10 * SECOND), "seed {seed}: majority put failed");
        c.submit(ckp1, Op::Get { key: b("1") });
        assert!(c.wait_client(ckp1, 10 * SECOND));
        assert_eq!(c.last_value(ckp1).as_deref(), Some("14"));
        c.submit(ckp2a, Op::Put { key: b("1"), value: b("15") });
        c.submit(ckp2b, Op::Get { key: b("1") });
        c.run_for(SECOND);
        assert!(!c.client_idle(ckp2a), "seed {seed}: put in minority completed");
        assert!(!c.client_idle(ckp2b), "seed {seed}: get in minority completed");
        c.submit(ckp1, Op::Put { key: b("1"), value: b("16") });
        assert!(c.wait_client(ckp1, 10 * SECOND));
        c.heal();
        assert!(c.wait_client(ckp2a, 30 * SECOND), "seed {seed}: put did not complete after healing");
        assert!(c.wait_client(ckp2b, 30 * SECOND), "seed {seed}: get did not complete after healing");
        c.submit(ckp1, Op::Get { key: b("1") });
        assert!(c.wait_client(ckp1, 10 * SECOND));
        assert_eq!(c.last_value(ckp1).as_deref(), Some("15"));
        c.check_linearizable();
    });
}

#[test]
fn many_partitions_one_client() {
    run_seeds("many_partitions_one_client", SEEDS, |seed| {
        generic(seed, Generic { clients: 1, partitions: true, ..Default::default() })
    });
}

#[test]
fn many_partitions_many_clients() {
    run_seeds("many_partitions_many_clients", SEEDS, |seed| {
        generic(seed, Generic { clients: 5, partitions: true, ..Default::default() })
    });
}

#[test]
fn persist_one_client() {
    run_seeds("persist_one_client", SEEDS, |seed| {
        generic(seed, Generic { clients: 1, crash: true, ..Default::default() })
    });
}

#[test]
fn persist_concurrent() {
    run_seeds("persist_concurrent", SEEDS, |seed| {
        generic(seed, Generic { clients: 5, crash: true, ..Default::default() })
    });
}

#[test]
fn persist_concurrent_unreliable() {
    run_seeds("persist_concurrent_unreliable", SEEDS, |seed| {
        generic(seed, Generic { clients: 5, crash: true, unreliable: true, ..Default::default() })
    });
}

#[test]
fn persist_partition() {
    run_seeds("persist_partition", SEEDS, |seed| {
        generic(seed, Generic { clients: 5, crash: true, partitions: true, ..Default::default() })
    });
}

#[test]
fn persist_partition_unreliable() {
    run_seeds("persist_partition_unreliable", SEEDS, |seed| {
        generic(
            seed,
            Generic { clients: 5, crash: true, partitions: true, unreliable: true, ..Default::default() },
        )
    });
}

#[test]
fn persist_partition_unreliable_linearizable() {
    run_seeds("persist_partition_unreliable_linearizable", SEEDS, |seed| {
        generic(
            seed,
            Generic {
                clients: 15,
                crash: true,
                partitions: true,
                unreliable: true,
                random_keys: Some(7),
                ..Default::default()
            },
        )
    });
}

// ----- 3B: snapshots ----------------------------------------------------------------

/// A server cut off while the others snapshot past it catches up by
/// InstallSnapshot, and the logs stay trimmed.
#[test]
fn snapshot_rpc() {
    run_seeds("snapshot_rpc", SEEDS, |seed| {
        let mut c = KvCluster::new(3, seed, false, Some(MAX_RAFT_STATE));
        let ck = c.add_client(Workload::Idle);
        let put = |c: &mut KvCluster, k: &str, v: &str| {
            c.submit(ck, Op::Put { key: b(k), value: b(v) });
            assert!(c.wait_client(ck, 20 * SECOND), "seed {seed}: put {k} timed out");
        };
        let get = |c: &mut KvCluster, k: &str| {
            c.submit(ck, Op::Get { key: b(k) });
            assert!(c.wait_client(ck, 20 * SECOND), "seed {seed}: get {k} timed out");
            c.last_value(ck)
        };
        put(&mut c, "a", "A");
        assert_eq!(get(&mut c, "a").as_deref(), Some("A"));
        // A bunch of puts into the majority partition.
        c.partition(&[0, 1], &[2]);
        c.connect_client_only(ck, &[0, 1]);
        for i in 0..50 {
            put(&mut c, &i.to_string(), &i.to_string());
        }
        c.run_for(ELECTION_TIMEOUT);
        put(&mut c, "b", "B");
        let size = c.max_log_bytes();
        assert!(size <= 8 * MAX_RAFT_STATE, "seed {seed}: logs were not trimmed ({size})");
        // Now make a group that requires participation of the lagging server.
        c.partition(&[0, 2], &[1]);
        c.connect_client_only(ck, &[0, 2]);
        put(&mut c, "c", "C");
        put(&mut c, "d", "D");
        assert_eq!(get(&mut c, "a").as_deref(), Some("A"));
        assert_eq!(get(&mut c, "b").as_deref(), Some("B"));
        assert_eq!(get(&mut c, "1").as_deref(), Some("1"));
        assert_eq!(get(&mut c, "49").as_deref(), Some("49"));
        // Now everybody.
        c.heal();
        c.connect_client_only(ck, &[0, 1, 2]);
        put(&mut c, "e", "E");
        assert_eq!(get(&mut c, "c").as_deref(), Some("C"));
        assert_eq!(get(&mut c, "e").as_deref(), Some("E"));
        assert_eq!(get(&mut c, "1").as_deref(), Some("1"));
        c.check_linearizable();
    });
}

/// Logs and snapshots stay small under a long stream of writes.
#[test]
fn snapshot_size() {
    run_seeds("snapshot_size", SEEDS, |seed| {
        let mut c = KvCluster::new(3, seed, false, Some(MAX_RAFT_STATE));
        let ck = c.add_client(Workload::Idle);
        for _ in 0..200 {
            for v in ["0", "1"] {
                c.submit(ck, Op::Put { key: b("x"), value: b(v) });
                assert!(c.wait_client(ck, 20 * SECOND));
                c.submit(ck, Op::Get { key: b("x") });
                assert!(c.wait_client(ck, 20 * SECOND));
                assert_eq!(c.last_value(ck).as_deref(), Some(v));
            }
        }
        let size = c.max_log_bytes();
        assert!(size <= 8 * MAX_RAFT_STATE, "seed {seed}: logs were not trimmed ({size})");
        let snap = c.max_snapshot_bytes();
        assert!(snap <= 500, "seed {seed}: snapshot too large ({snap} bytes)");
        c.check_linearizable();
    });
}

#[test]
fn snapshot_recover() {
    run_seeds("snapshot_recover", SEEDS, |seed| {
        generic(
            seed,
            Generic { clients: 1, crash: true, max_raft_state: Some(MAX_RAFT_STATE), ..Default::default() },
        )
    });
}

#[test]
fn snapshot_recover_many_clients() {
    run_seeds("snapshot_recover_many_clients", SEEDS, |seed| {
        generic(
            seed,
            Generic { clients: 20, crash: true, max_raft_state: Some(MAX_RAFT_STATE), ..Default::default() },
        )
    });
}

#[test]
fn snapshot_unreliable() {
    run_seeds("snapshot_unreliable", SEEDS, |seed| {
        generic(
            seed,
            Generic {
                clients: 5,
                unreliable: true,
                max_raft_state: Some(MAX_RAFT_STATE),
                ..Default::default()
            },
        )
    });
}

#[test]
fn snapshot_unreliable_recover() {
    run_seeds("snapshot_unreliable_recover", SEEDS, |seed| {
        generic(
            seed,
            Generic {
                clients: 5,
                unreliable: true,
                crash: true,
                max_raft_state: Some(MAX_RAFT_STATE),
                ..Default::default()
            },
        )
    });
}

#[test]
fn snapshot_unreliable_recover_concurrent_partition() {
    run_seeds("snapshot_unreliable_recover_concurrent_partition", SEEDS, |seed| {
        generic(
            seed,
            Generic {
                clients: 5,
                unreliable: true,
                crash: true,
                partitions: true,
                max_raft_state: Some(MAX_RAFT_STATE),
                ..Default::default()
            },
        )
    });
}

#[test]
fn snapshot_unreliable_recover_concurrent_partition_linearizable() {
    run_seeds("snapshot_unreliable_recover_concurrent_partition_linearizable", SEEDS, |seed| {
        generic(
            seed,
            Generic {
                clients: 15,
                unreliable: true,
                crash: true,
                partitions: true,
                max_raft_state: Some(MAX_RAFT_STATE),
                random_keys: Some(7),
            },
        )
    });
}
