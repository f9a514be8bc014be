//! Seed replay: run a scenario over many seeds, and replay one on demand.
//!
//! Why: a fault scenario is a deterministic function of its seed, so a
//! failure is only useful if its seed is printed in a form that can be
//! pasted back. `SHOAL_SEED=<n>` replays exactly one seed; `SHOAL_SEEDS=<k>`
//! widens or narrows the sweep (CI soak vs. quick local run).
//!
//! Seeds are derived from the scenario name and the run index, so different
//! scenarios explore different seeds while each stays stable across runs.
//! Pass the test function's name as `scenario`, so the printed
//! `cargo test <name>` filter selects it.

use std::panic::{self, AssertUnwindSafe};

use crate::rng::splitmix64;

/// Env var naming the one seed to run.
pub const SEED_ENV: &str = "SHOAL_SEED";
/// Env var giving how many seeds to run.
pub const SEEDS_ENV: &str = "SHOAL_SEEDS";
/// Set to run every seed even after a failure (see [`run_seed_list`]).
pub const KEEP_GOING_ENV: &str = "SHOAL_KEEP_GOING";

/// FNV-1a over the name: a fixed, documented hash (std's `DefaultHasher`
/// may change between Rust releases, which would silently change seeds).
fn name_hash(name: &str) -> u64 {
    let mut h: u64 = 0xCBF2_9CE4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01B3);
    }
    h
}

/// The seed of run `index` of `scenario`.
pub fn derive_seed(scenario: &str, index: u64) -> u64 {
    let mut i = index;
    let mut state = name_hash(scenario) ^ splitmix64(&mut i);
    splitmix64(&mut state)
}

/// Reads an env var, treating unset, empty and non-Unicode as absent.
fn env_value(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|v| !v.trim().is_empty())
}

fn parse_u64(key: &str, value: &str) -> Result<u64, String> {
    value.trim().parse::<u64>().map_err(|e| format!("{key}={value:?} is not a decimal u64: {e}"))
}

/// Which seeds a run should use, given the raw `SHOAL_SEED` and
/// `SHOAL_SEEDS` values (empty strings count as unset). Pure, so it can be
/// tested without touching the process environment.
pub fn seeds_to_run(
    scenario: &str,
    default_count: u64,
    seed_env: Option<&str>,
    seeds_env: Option<&str>,
) -> Result<Vec<u64>, String> {
    if let Some(v) = seed_env.filter(|v| !v.trim().is_empty()) {
        return Ok(vec![parse_u64(SEED_ENV, v)?]);
    }
    let count = match seeds_env.filter(|v| !v.trim().is_empty()) {
        Some(v) => parse_u64(SEEDS_ENV, v)?,
        None => default_count,
    };
    if count == 0 {
        return Err(format!(
            "scenario {scenario}: zero seeds to run ({SEEDS_ENV}={seeds_env:?}, default {default_count})"
        ));
    }
    Ok((0..count).map(|i| derive_seed(scenario, i)).collect())
}

/// Runs `f` once per seed (see the module docs for how seeds are chosen).
///
/// On the first failing seed, prints the replay command to stderr and
/// re-raises that panic so the test fails with its original message.
/// Panics with a clear message if `SHOAL_SEED`/`SHOAL_SEEDS` is malformed.
pub fn run_seeds(scenario: &str, default_count: u64, f: impl Fn(u64)) {
    let seed_env = env_value(SEED_ENV);
    let seeds_env = env_value(SEEDS_ENV);
    let seeds = seeds_to_run(scenario, default_count, seed_env.as_deref(), seeds_env.as_deref())
        .unwrap_or_else(|e| panic!("{e}"));
    run_seed_list(scenario, &seeds, f);
}

/// Runs `f` over the given seeds, reporting and propagating the first
/// failure. Split from [`run_seeds`] so tests need not set env vars.
pub fn run_seed_list(scenario: &str, seeds: &[u64], f: impl Fn(u64)) {
    // SHOAL_KEEP_GOING=1 runs every seed and lists all that failed: for
    // measuring how often a rare failure happens, not for CI.
    let keep_going = env_value(KEEP_GOING_ENV).is_some();
    let started = std::time::Instant::now();
    let mut failed = Vec::new();
    let mut first_payload = None;
    for (passed, &seed) in seeds.iter().enumerate() {
        if let Err(payload) = panic::catch_unwind(AssertUnwindSafe(|| f(seed))) {
            // Tests run on parallel threads: one eprintln per line keeps
            // each report contiguous.
            eprintln!(
                "scenario {scenario} FAILED with seed {seed} — replay: {SEED_ENV}={seed} cargo test {scenario}"
            );
            if !keep_going {
                eprintln!(
                    "scenario {scenario}: {} of {} seeds passed before seed {seed} failed",
                    passed - failed.len(),
                    seeds.len()
                );
                panic::resume_unwind(payload);
            }
            failed.push(seed);
            first_payload.get_or_insert(payload);
        }
    }
    let secs = started.elapsed().as_secs_f64();
    if let Some(payload) = first_payload {
        eprintln!(
            "scenario {scenario}: {} of {} seeds failed in {secs:.2} s: {failed:?}",
            failed.len(),
            seeds.len()
        );
        panic::resume_unwind(payload);
    }
    eprintln!("scenario {scenario}: all {} seeds passed in {secs:.2} s", seeds.len());
}

/// For single-run tools: `SHOAL_SEED` if set, else `default`. Panics with a
/// clear message if it is set but malformed.
pub fn seed_from_env_or(default: u64) -> u64 {
    match env_value(SEED_ENV) {
        Some(v) => parse_u64(SEED_ENV, &v).unwrap_or_else(|e| panic!("{e}")),
        None => default,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::cell::RefCell;

    #[test]
    fn seed_env_selects_exactly_one_seed() {
        let s = seeds_to_run("x", 50, Some("12345"), Some("7")).unwrap();
        assert_eq!(s, vec![12345]);
        let s = seeds_to_run("x", 50, Some(" 18446744073709551615 "), None).unwrap();
        assert_eq!(s, vec![u64::MAX]);
    }

    #[test]
    fn count_comes_from_env_or_default() {
        assert_eq!(seeds_to_run("x", 50, None, None).unwrap().len(), 50);
        assert_eq!(seeds_to_run("x", 50, None, Some("3")).unwrap().len(), 3);
        assert_eq!(seeds_to_run("x", 50, Some(""), Some("")).unwrap().len(), 50);
    }

    #[test]
    fn malformed_values_are_errors() {
        let e = seeds_to_run("x", 5, Some("abc"), None).unwrap_err();
        assert!(e.contains("SHOAL_SEED=\"abc\""), "{e}");
        let e = seeds_to_run("x", 5, None, Some("-1")).unwrap_err();
        assert!(e.contains("SHOAL_SEEDS"), "{e}");
        assert!(seeds_to_run("x", 5, None, Some("0")).is_err());
        assert!(seeds_to_run("x", 0, None, None).is_err());
    }

    #[test]
    fn seeds_are_stable_distinct_and_scenario_specific() {
        let a = seeds_to_run("alpha", 100, None, None).unwrap();
        assert_eq!(a, seeds_to_run("alpha", 100, None, None).unwrap());
        let mut dedup = a.clone();
        dedup.sort_unstable();
        dedup.dedup();
        assert_eq!(dedup.len(), 100);
        let b = seeds_to_run("beta", 100, None, None).unwrap();
        assert!(a.iter().all(|s| !b.contains(s)));
        // Growing the sweep keeps the earlier seeds: a prefix.
        assert_eq!(&seeds_to_run("alpha", 200, None, None).unwrap()[..100], &a[..]);
    }

    #[test]
    fn a_printed_seed_replays_the_same_run() {
        let seeds = seeds_to_run("replay", 10, None, None).unwrap();
        let target = seeds[6];
        let replay = seeds_to_run("replay", 10, Some(&target.to_string()), None).unwrap();
        assert_eq!(replay, vec![target]);
        let seen = RefCell::new(Vec::new());
        run_seed_list("replay", &replay, |s| seen.borrow_mut().push(s));
        assert_eq!(seen.into_inner(), vec![target]);
    }

    #[test]
    fn passing_run_visits_every_seed_in_order() {
        let seeds = [3, 1, 2];
        let seen = RefCell::new(Vec::new());
        run_seed_list("ok", &seeds, |s| seen.borrow_mut().push(s));
        assert_eq!(seen.into_inner(), vec![3, 1, 2]);
    }

    #[test]
    fn failure_stops_and_propagates_the_original_panic() {
        let seen = RefCell::new(Vec::new());
        let result = panic::catch_unwind(AssertUnwindSafe(|| {
            run_seed_list("boom", &[10, 20, 30], |s| {
                seen.borrow_mut().push(s);
                assert!(s != 20, "bad seed {s}");
            })
        }));
        let payload = result.unwrap_err();
        let msg = payload.downcast_ref::<String>().unwrap();
        assert_eq!(msg, "bad seed 20");
        assert_eq!(seen.into_inner(), vec![10, 20], "stops at first failure");
    }

    #[test]
    fn run_seeds_propagates_failure() {
        // Fails on every seed, so this holds whatever SHOAL_SEED(S) the
        // developer has set (unless malformed, which also panics).
        let result = panic::catch_unwind(|| run_seeds("always_fails", 3, |_| panic!("nope")));
        assert!(result.is_err());
    }
}
