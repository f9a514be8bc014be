//! MIT 6.824's `test-mr.sh`, with real processes: every case starts a
//! `shoal mr coordinator` and `shoal mr worker`s as separate processes in a
//! scratch directory (their working directory: the 6.824 test apps leave
//! `mr-worker-*` files there), and compares the output with a sequential run
//! (`shoal mr seq`) of the same job. Added to the script's cases: a worker
//! that dies (or is SIGKILLed) right after its maps, a straggler that a
//! backup task overtakes, a streaming job, and jobs that are refused.
//!
//! Every process belongs to a [`Scratch`], which SIGKILLs and reaps whatever
//! still runs when it is dropped, also when a test fails (and then prints
//! the tail of every process's log).

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The binary under test.
const SHOAL: &str = env!("CARGO_BIN_EXE_shoal");

/// How long any one job may take before the test gives up (generous: the
/// machine may be busy with other tests and builds).
const JOB_LIMIT: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------------------
// Processes

/// One process started by a test.
#[derive(Debug)]
struct Proc {
    name: String,
    child: Child,
    /// stdout and stderr, interleaved (for `run`: stderr only).
    log: PathBuf,
    status: Option<ExitStatus>,
}

/// A scratch directory (the processes' working directory) and every
/// process started in it. Dropping it SIGKILLs and reaps them all.
#[derive(Debug)]
struct Scratch {
    procs: Vec<Proc>,
    /// Declared last: removed after the processes are gone.
    dir: tempfile::TempDir,
}

/// A finished command's exit status and output.
#[derive(Debug)]
struct Ran {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Scratch {
    fn new() -> Scratch {
        let dir = tempfile::Builder::new().prefix("shoal-mr-test-").tempdir().expect("creating a tempdir");
        fs::create_dir(dir.path().join("logs")).expect("creating logs/");
        Scratch { procs: Vec::new(), dir }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn write(&self, rel: &str, contents: &str) {
        fs::write(self.path(rel), contents).expect("writing an input file");
    }

    /// Starts `shoal ARGS` in the scratch directory, stdout and stderr to
    /// a log file. Returns its index.
    fn spawn(&mut self, name: &str, args: &[&str]) -> usize {
        let i = self.procs.len();
        let log = self.path(&format!("logs/{i:02}-{name}.log"));
        let f = File::create(&log).expect("creating a log file");
        let child = Command::new(SHOAL)
            .args(args)
            .current_dir(self.dir.path())
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(f.try_clone().expect("cloning a file handle"))
            .stderr(f)
            .spawn()
            .expect("spawning shoal");
        self.procs.push(Proc { name: name.to_string(), child, log, status: None });
        i
    }

    /// Starts a coordinator on a free port and returns its index and
    /// address (read from the line it prints).
    fn coordinator(&mut self, job: &[&str]) -> (usize, String) {
        let mut args = vec!["mr", "coordinator", "--listen", "127.0.0.1:0"];
        args.extend_from_slice(job);
        let i = self.spawn("coordinator", &args);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let log = self.log(i);
            if let Some(rest) = log.split("coordinator listening on ").nth(1) {
                let addr: String = rest.chars().take_while(|c| !c.is_whitespace()).collect();
                assert!(addr.contains(':'), "no address in {log:?}");
                return (i, addr);
            }
            if let Some(st) = self.try_status(i) {
                panic!("the coordinator exited ({st}) before listening:\n{log}");
            }
            assert!(Instant::now() < deadline, "the coordinator printed no address within 30 s:\n{log}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts a worker. Its map outputs go under the scratch directory
    /// (unless `extra` names a `--work-dir`), so a worker that dies without
    /// cleaning up leaves nothing behind in the system's temp directory.
    fn worker(&mut self, addr: &str, extra: &[&str]) -> usize {
        let work = self.path(&format!("work/{}", self.procs.len()));
        let work = work.to_string_lossy().into_owned();
        let mut args = vec!["mr", "worker", "--coordinator", addr];
        if !extra.contains(&"--work-dir") {
            args.extend(["--work-dir", work.as_str()]);
        }
        args.extend_from_slice(extra);
        self.spawn("worker", &args)
    }

    /// Runs `shoal ARGS` to completion (killed and a panic after `limit`),
    /// without RUST_LOG, capturing stdout and stderr apart.
    fn run(&mut self, name: &str, args: &[&str], limit: Duration) -> Ran {
        let i = self.procs.len();
        let out_path = self.path(&format!("logs/{i:02}-{name}.out"));
        let err_path = self.path(&format!("logs/{i:02}-{name}.log"));
        let child = Command::new(SHOAL)
            .args(args)
            .current_dir(self.dir.path())
            .env_remove("RUST_LOG")
            .env("LC_ALL", "C")
            .stdin(Stdio::null())
            .stdout(File::create(&out_path).expect("creating a log file"))
            .stderr(File::create(&err_path).expect("creating a log file"))
            .spawn()
            .expect("spawning shoal");
        self.procs.push(Proc { name: name.to_string(), child, log: err_path.clone(), status: None });
        let status = self.wait(i, limit);
        Ran { status, stdout: read(&out_path), stderr: read(&err_path) }
    }

    /// The process's exit status if it has exited (reaping it).
    fn try_status(&mut self, i: usize) -> Option<ExitStatus> {
        let p = &mut self.procs[i];
        if p.status.is_none() {
            p.status = p.child.try_wait().expect("try_wait");
        }
        p.status
    }

    /// Waits for process `i` to exit; panics after `limit`.
    fn wait(&mut self, i: usize, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(st) = self.try_status(i) {
                return st;
            }
            assert!(Instant::now() < deadline, "{} (#{i}) did not exit within {limit:?}", self.procs[i].name);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILLs process `i` (if it still runs) and reaps it.
    fn kill(&mut self, i: usize) {
        let p = &mut self.procs[i];
        if p.status.is_none() {
            let _ = p.child.kill();
            p.status = p.child.wait().ok();
        }
    }

    fn log(&self, i: usize) -> String {
        read(&self.procs[i].log)
    }

    /// Runs the job sequentially (`shoal mr seq`) into `out` and returns its
    /// sorted output lines: the reference.
    fn sequential(&mut self, job: &[&str], out: &str) -> Vec<String> {
        let mut args = vec!["mr", "seq", "--output", out];
        args.extend_from_slice(job);
        let ran = self.run("seq", &args, JOB_LIMIT);
        assert!(ran.status.success(), "shoal mr seq failed ({}):\n{}", ran.status, ran.stderr);
        let lines = sorted_lines(&self.path(out));
        assert!(!lines.is_empty(), "the sequential run wrote no output");
        lines
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        for i in 0..self.procs.len() {
            self.kill(i);
        }
        if std::thread::panicking() {
            for p in &self.procs {
                eprintln!(
                    "---- {} ({}, {:?}) ----\n{}",
                    p.name,
                    p.log.display(),
                    p.status,
                    tail(&read(&p.log), 25)
                );
            }
            // Keep the evidence.
            let kept = self.dir.path().to_path_buf();
            eprintln!("scratch directory kept at {}", kept.display());
            let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("tempdir"));
            let _ = dir.keep();
        }
    }
}

fn read(path: &Path) -> String {
    let mut s = String::new();
    if let Ok(mut f) = File::open(path) {
        let _ = f.read_to_string(&mut s);
    }
    s
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

// ---------------------------------------------------------------------------
// Outputs

/// The `mr-out-<n>` files of `dir`, by n.
fn out_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<(u32, PathBuf)> = match fs::read_dir(dir) {
        Ok(entries) => entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let n = name.strip_prefix("mr-out-")?.parse().ok()?;
                Some((n, e.path()))
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    files.sort();
    files.into_iter().map(|(_, p)| p).collect()
}

/// Every non-empty line of every `mr-out-*` in `dir`, sorted (6.824's
/// `sort mr-out* | grep .`).
fn sorted_lines(dir: &Path) -> Vec<String> {
    let mut lines: Vec<String> = out_files(dir)
        .iter()
        .flat_map(|p| read(p).lines().filter(|l| !l.is_empty()).map(str::to_string).collect::<Vec<_>>())
        .collect();
    lines.sort();
    lines
}

/// Panics, showing the first differences, unless `got == want`.
fn assert_same(got: &[String], want: &[String], what: &str) {
    if got == want {
        return;
    }
    let g: std::collections::BTreeSet<&String> = got.iter().collect();
    let w: std::collections::BTreeSet<&String> = want.iter().collect();
    let missing: Vec<&&String> = w.difference(&g).take(10).collect();
    let extra: Vec<&&String> = g.difference(&w).take(10).collect();
    panic!(
        "{what}: {} lines, expected {}; missing (first 10): {missing:?}; unexpected (first 10): {extra:?}",
        got.len(),
        want.len()
    );
}

/// Within each `mr-out-*` file, keys are in increasing byte order.
fn assert_keys_sorted_per_file(dir: &Path) {
    for p in out_files(dir) {
        let text = read(&p);
        let keys: Vec<&str> = text.lines().map(|l| l.split(' ').next().unwrap_or("")).collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "{}: keys not strictly increasing", p.display());
    }
}

/// A number from the coordinator's summary, e.g. `stat(log, "backup tasks")`.
fn stat(log: &str, label: &str) -> u64 {
    let line =
        log.lines().find(|l| l.starts_with("tasks: ")).unwrap_or_else(|| panic!("no summary in:\n{log}"));
    let rest = line.split(&format!("{label} ")).nth(1).unwrap_or_else(|| panic!("no {label:?} in {line:?}"));
    rest.chars().take_while(char::is_ascii_digit).collect::<String>().parse().expect("a number")
}

// ---------------------------------------------------------------------------
// Inputs

/// xorshift64*: deterministic text, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// About `bytes` of English-like text: a skewed choice of words made of
/// syllables, some capitalized, with punctuation, digits, apostrophes,
/// hyphens and the odd non-ASCII letter (a word is a run of ASCII letters).
fn text(seed: u64, bytes: usize) -> String {
    const SYL: &[&str] = &[
        "an", "be", "cor", "di", "e", "fa", "gol", "hin", "is", "ju", "ka", "lo", "mer", "no", "o", "pra",
        "qui", "ra", "st", "th", "u", "ver", "wi", "xa", "y", "zo", "ing", "ed", "the", "and",
    ];
    const PUNCT: &[&str] = &[",", ".", ";", "!", "?", "'s", " --", " 1890", "\"", ":", "-", " (", ")"];
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut vocab: Vec<String> = (0..800)
        .map(|_| {
            let n = 1 + rng.below(3);
            (0..n).map(|_| SYL[rng.below(SYL.len())]).collect::<String>()
        })
        .collect();
    vocab.extend(["caf\u{e9}", "na\u{ef}ve", "fa\u{e7}ade"].map(String::from));
    let mut out = String::with_capacity(bytes + 100);
    let mut line = 0;
    while out.len() < bytes {
        // Quadratic skew: a few words are very common, most are rare.
        let a = rng.below(vocab.len());
        let b = rng.below(vocab.len());
        let w = &vocab[a * b / vocab.len()];
        if rng.below(10) == 0 {
            let mut c = w.chars();
            if let Some(first) = c.next() {
                out.extend(first.to_uppercase());
                out.push_str(c.as_str());
            }
        } else {
            out.push_str(w);
        }
        line += w.len();
        if rng.below(8) == 0 {
            out.push_str(PUNCT[rng.below(PUNCT.len())]);
        }
        if line > 50 + rng.below(30) {
            out.push('\n');
            if rng.below(12) == 0 {
                out.push('\n');
            }
            line = 0;
        } else {
            out.push(' ');
        }
    }
    out.push('\n');
    out
}

/// Writes `n` input files of about `bytes` each; returns their names
/// (relative to the scratch directory, so documents are named the same
/// in every run).
fn inputs(s: &Scratch, n: usize, bytes: usize, seed: u64) -> Vec<String> {
    (0..n)
        .map(|i| {
            let name = format!("pg-{i}.txt");
            s.write(&name, &text(seed + i as u64, bytes));
            name
        })
        .collect()
}

/// Word counts computed here, independently of the crate: `word count`.
fn count_words(s: &Scratch, names: &[String]) -> Vec<String> {
    let mut counts: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
    for n in names {
        let data = fs::read(s.path(n)).expect("reading an input");
        for w in data.split(|b| !b.is_ascii_alphabetic()).filter(|w| !w.is_empty()) {
            *counts.entry(w.to_vec()).or_default() += 1;
        }
    }
    let mut lines: Vec<String> =
        counts.into_iter().map(|(w, c)| format!("{} {c}", String::from_utf8(w).expect("ascii"))).collect();
    lines.sort();
    lines
}

/// `--app APP --input FILES... --reduces R` plus `extra`.
fn job<'a>(app: &'a str, files: &'a [String], reduces: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["--app", app, "--reduces", reduces];
    v.extend_from_slice(extra);
    v.push("--input");
    v.extend(files.iter().map(String::as_str));
    v
}

/// Waits for the coordinator to finish successfully; returns its log.
fn coordinator_done(s: &mut Scratch, c: usize) -> String {
    let st = s.wait(c, JOB_LIMIT);
    let log = s.log(c);
    assert!(st.success(), "the coordinator failed ({st}):\n{}", tail(&log, 30));
    log
}

/// Waits for every worker in `ws` to exit on its own, successfully.
fn workers_exit_ok(s: &mut Scratch, ws: &[usize]) {
    for &w in ws {
        let st = s.wait(w, Duration::from_secs(30));
        assert!(st.success(), "worker #{w} exited with {st}:\n{}", tail(&s.log(w), 20));
    }
}

// ---------------------------------------------------------------------------
// test-mr.sh

/// wc: three workers; the merged output equals the sequential run's (and a
/// count made here), every reduce wrote its file, keys are sorted per file.
#[test]
fn wc_three_workers_match_sequential() {
    let mut s = Scratch::new();
    let files = inputs(&s, 8, 40_000, 1);
    // Small splits: several map tasks per file, lines cut at split edges.
    let (c, addr) = s.coordinator(
        &[job("wordcount", &files, "7", &["--split-size", "16K"]), vec!["--output", "out"]].concat(),
    );
    let ws: Vec<usize> = (0..3).map(|_| s.worker(&addr, &[])).collect();
    let log = coordinator_done(&mut s, c);
    workers_exit_ok(&mut s, &ws);
    let maps: u32 =
        log.split("tasks: ").nth(1).and_then(|r| r.split(' ').next()?.parse().ok()).expect("a map count");
    assert!(maps > 8, "expected split inputs: {log}");
    let out = s.path("out");
    assert_eq!(out_files(&out).len(), 7, "one mr-out per reduce task");
    assert_keys_sorted_per_file(&out);
    let got = sorted_lines(&out);
    let want = s.sequential(&job("wordcount", &files, "7", &[]), "seq");
    assert_same(&got, &want, "wc vs sequential");
    assert_same(&got, &count_words(&s, &files), "wc vs counted here");
}

/// indexer: two workers; equals the sequential run.
#[test]
fn indexer_two_workers_match_sequential() {
    let mut s = Scratch::new();
    let files = inputs(&s, 6, 20_000, 100);
    let (c, addr) = s.coordinator(&[job("indexer", &files, "5", &[]), vec!["--output", "out"]].concat());
    let ws: Vec<usize> = (0..2).map(|_| s.worker(&addr, &[])).collect();
    coordinator_done(&mut s, c);
    workers_exit_ok(&mut s, &ws);
    let got = sorted_lines(&s.path("out"));
    let want = s.sequential(&job("indexer", &files, "5", &[]), "seq");
    assert_same(&got, &want, "indexer vs sequential");
    // A word in every document lists them all, sorted.
    assert!(
        got.iter().any(|l| l.split(' ').nth(1) == Some("6") && l.ends_with(&files.join(","))),
        "no word found in all six documents"
    );
}

/// Small whole-file inputs for the 6.824 test apps.
fn small_inputs(s: &Scratch, names: &[&str]) -> Vec<String> {
    names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            s.write(n, &text(500 + i as u64, 2_000));
            n.to_string()
        })
        .collect()
}

const PG: &[&str] = &[
    "pg-being_ernest.txt",
    "pg-dorian_gray.txt",
    "pg-frankenstein.txt",
    "pg-grimm.txt",
    "pg-huckleberry_finn.txt",
    "pg-metamorphosis.txt",
    "pg-sherlock_holmes.txt",
    "pg-tom_sawyer.txt",
];

/// Map parallelism (mtiming): both workers ran maps, and some map saw the
/// other worker's map running at the same time.
#[test]
fn map_parallelism() {
    let mut s = Scratch::new();
    let files = small_inputs(&s, PG);
    let (c, addr) = s.coordinator(&[job("mtiming", &files, "10", &[]), vec!["--output", "out"]].concat());
    let ws: Vec<usize> = (0..2).map(|_| s.worker(&addr, &[])).collect();
    coordinator_done(&mut s, c);
    workers_exit_ok(&mut s, &ws);
    let lines = sorted_lines(&s.path("out"));
    let times = lines.iter().filter(|l| l.starts_with("times-")).count();
    assert_eq!(times, 2, "saw {times} workers rather than 2: {lines:?}");
    // 6.824: `grep '^parallel.* 2'`.
    assert!(
        lines.iter().any(|l| l.starts_with("parallel-") && l.split(' ').skip(1).any(|n| n == "2")),
        "map workers did not run in parallel: {lines:?}"
    );
}

/// Reduce parallelism (rtiming): at least two reduce calls saw two reduce
/// workers at once.
#[test]
fn reduce_parallelism() {
    let mut s = Scratch::new();
    let files = small_inputs(&s, PG);
    let (c, addr) = s.coordinator(&[job("rtiming", &files, "10", &[]), vec!["--output", "out"]].concat());
    let ws: Vec<usize> = (0..2).map(|_| s.worker(&addr, &[])).collect();
    coordinator_done(&mut s, c);
    workers_exit_ok(&mut s, &ws);
    let lines = sorted_lines(&s.path("out"));
    assert_eq!(lines.len(), 10, "one line per key a..j: {lines:?}");
    // 6.824: `grep '^[a-z] 2' | wc -l` must be at least 2.
    let parallel = lines.iter().filter(|l| l.len() > 2 && l.as_bytes()[1] == b' ' && &l[2..] == "2").count();
    assert!(parallel >= 2, "too few parallel reduces ({parallel}): {lines:?}");
}

/// Job count (jobcount): with nothing failing, every map ran exactly once.
/// Backups are put off (a jobcount map sleeps 2-5 s, near the default
/// backup threshold) so that "exactly once" is what is measured.
#[test]
fn job_count_each_map_once() {
    let mut s = Scratch::new();
    let files = small_inputs(&s, PG);
    let (c, addr) = s.coordinator(
        &[job("jobcount", &files, "10", &["--backup-after-secs", "60"]), vec!["--output", "out"]].concat(),
    );
    let ws: Vec<usize> = (0..4).map(|_| s.worker(&addr, &[])).collect();
    let log = coordinator_done(&mut s, c);
    workers_exit_ok(&mut s, &ws);
    let lines = sorted_lines(&s.path("out"));
    assert_eq!(lines, vec![format!("a {}", files.len())], "map tasks ran the wrong number of times");
    assert_eq!(stat(&log, "re-executions"), 0, "{log}");
    assert_eq!(stat(&log, "backup tasks"), 0, "{log}");
}

/// Early exit (early_exit): when the first process (worker or coordinator)
/// exits, the output is already final.
///
/// With these names and R = 10, grimm, sherlock and tom all hash to reduce
/// task 5, which sleeps 3 s twice; after 5 s it gets a backup copy that is
/// still running (and later commits the same output again) when the others
/// exit. A short `--patience-secs` lets that worker give up on the departed
/// coordinator quickly (it retries its report, then its next-task request,
/// for that long each).
#[test]
fn early_exit_nobody_leaves_before_the_output_is_final() {
    let mut s = Scratch::new();
    let files = small_inputs(&s, PG);
    let (c, addr) = s.coordinator(&[job("early_exit", &files, "10", &[]), vec!["--output", "out"]].concat());
    let ws: Vec<usize> = (0..3).map(|_| s.worker(&addr, &["--patience-secs", "3"])).collect();
    let all: Vec<usize> = std::iter::once(c).chain(ws.iter().copied()).collect();
    let deadline = Instant::now() + JOB_LIMIT;
    // `wait -n`, then snapshot.
    let first = loop {
        if let Some(&i) = all.iter().find(|&&i| s.try_status(i).is_some()) {
            break i;
        }
        assert!(Instant::now() < deadline, "nobody exited within {JOB_LIMIT:?}");
        std::thread::sleep(Duration::from_millis(5));
    };
    let initial = sorted_lines(&s.path("out"));
    coordinator_done(&mut s, c);
    workers_exit_ok(&mut s, &ws);
    let fin = sorted_lines(&s.path("out"));
    assert_same(&initial, &fin, &format!("output when #{first} ({}) exited vs final", s.procs[first].name));
    let mut want: Vec<String> = files.iter().map(|f| format!("{f} 1")).collect();
    want.sort();
    assert_same(&fin, &want, "early_exit output");
}

/// Crash: workers running the crash app (which exits or stalls at random
/// at the start of every map and reduce call) are restarted in a loop until
/// the coordinator finishes; the output equals nocrash's.
#[test]
fn crash_restarted_workers_match_nocrash() {
    const CRASH_SLOTS: usize = 6;
    let mut s = Scratch::new();
    let files = small_inputs(&s, PG);
    let started = Instant::now();
    let (c, addr) = s.coordinator(
        &[
            job("crash", &files, "10", &["--worker-timeout-secs", "2", "--backup-after-secs", "1"]),
            vec!["--output", "out"],
        ]
        .concat(),
    );
    // Worker "loops" (test-mr.sh: one plain worker and three loops; here
    // six slots, each restarting its worker after a short pause like the
    // script's `sleep 1`). Six rather than four because a worker that dies
    // here also loses the map outputs on its disk, which costs re-runs.
    let short_patience = ["--patience-secs", "3"];
    let mut slots: Vec<(usize, Option<Instant>)> =
        (0..CRASH_SLOTS).map(|_| (s.worker(&addr, &short_patience), None)).collect();
    let mut restarts = 0;
    let deadline = Instant::now() + JOB_LIMIT;
    while s.try_status(c).is_none() {
        assert!(Instant::now() < deadline, "the crash job did not finish within {JOB_LIMIT:?}");
        for slot in &mut slots {
            match slot.1 {
                None if s.try_status(slot.0).is_some() => {
                    slot.1 = Some(Instant::now() + Duration::from_millis(500))
                }
                Some(at) if Instant::now() >= at => {
                    *slot = (s.worker(&addr, &short_patience), None);
                    restarts += 1;
                }
                _ => {}
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = coordinator_done(&mut s, c);
    eprintln!(
        "crash job: {:.1} s, {restarts} worker restarts; {}",
        started.elapsed().as_secs_f64(),
        log.lines().find(|l| l.starts_with("tasks:")).unwrap_or("")
    );
    // Workers still sleeping inside the app are of no further interest.
    for slot in &slots {
        s.kill(slot.0);
    }
    let got = sorted_lines(&s.path("out"));
    let want = s.sequential(&job("nocrash", &files, "10", &[]), "seq");
    assert_same(&got, &want, "crash vs nocrash");
}

// ---------------------------------------------------------------------------
// Beyond the script

/// A worker that dies (exit 137, no goodbye) right after its second map was
/// accepted: its map outputs lived on its disk, so they are re-run.
#[test]
fn worker_dying_after_its_maps_has_them_rerun() {
    let mut s = Scratch::new();
    let files = inputs(&s, 6, 10_000, 200);
    let (c, addr) = s.coordinator(
        &[job("wordcount", &files, "4", &["--worker-timeout-secs", "2"]), vec!["--output", "out"]].concat(),
    );
    let doomed = s.worker(&addr, &["--die-after-maps", "2"]);
    let st = s.wait(doomed, Duration::from_secs(60));
    assert_eq!(st.code(), Some(137), "the doomed worker should die after two maps:\n{}", s.log(doomed));
    let w = s.worker(&addr, &[]);
    let log = coordinator_done(&mut s, c);
    workers_exit_ok(&mut s, &[w]);
    assert!(stat(&log, "re-executions") >= 2, "the dead worker's two maps were not re-run:\n{log}");
    assert!(stat(&log, "workers lost") >= 1, "{log}");
    let got = sorted_lines(&s.path("out"));
    assert_same(&got, &s.sequential(&job("wordcount", &files, "4", &[]), "seq"), "after a dead worker");
}

/// The same with a real SIGKILL: once the first map output of a slow worker
/// is on its disk (and reported), the worker is killed.
#[test]
fn worker_sigkilled_after_a_map_has_it_rerun() {
    let mut s = Scratch::new();
    let files = inputs(&s, 4, 10_000, 300);
    let (c, addr) = s.coordinator(
        &[job("wordcount", &files, "3", &["--worker-timeout-secs", "2"]), vec!["--output", "out"]].concat(),
    );
    let wd = s.path("victim-work");
    let wd_s = wd.to_string_lossy().into_owned();
    // Slow, so it is still busy with its second map when killed.
    let victim = s.worker(&addr, &["--work-dir", &wd_s, "--task-delay-ms", "3000"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    // Map outputs appear as <work-dir>/w<id>-<hex>/m<task>-a<attempt>.
    let map_output_exists = |wd: &Path| {
        fs::read_dir(wd).into_iter().flatten().flatten().any(|d| {
            fs::read_dir(d.path()).into_iter().flatten().flatten().any(|m| {
                let n = m.file_name().to_string_lossy().into_owned();
                n.starts_with('m') && !n.ends_with(".tmp")
            })
        })
    };
    while !map_output_exists(&wd) {
        assert!(s.try_status(victim).is_none(), "the victim exited early:\n{}", s.log(victim));
        assert!(Instant::now() < deadline, "the victim wrote no map output within 60 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Let it report the map and start (sleeping) on the next one.
    std::thread::sleep(Duration::from_millis(1000));
    s.kill(victim);
    let w = s.worker(&addr, &[]);
    let log = coordinator_done(&mut s, c);
    workers_exit_ok(&mut s, &[w]);
    // Its finished map and the one it was on.
    assert!(stat(&log, "re-executions") >= 2, "{log}");
    assert!(stat(&log, "workers lost") >= 1, "{log}");
    let got = sorted_lines(&s.path("out"));
    assert_same(&got, &s.sequential(&job("wordcount", &files, "3", &[]), "seq"), "after a SIGKILL");
}

/// A straggler (every task delayed 40 s) holds one map; a backup copy on
/// the healthy worker finishes the job long before the straggler would.
#[test]
fn straggler_is_overtaken_by_a_backup_task() {
    let mut s = Scratch::new();
    let files = inputs(&s, 4, 10_000, 400);
    let started = Instant::now();
    let (c, addr) = s.coordinator(
        &[job("wordcount", &files, "2", &["--backup-after-secs", "1"]), vec!["--output", "out"]].concat(),
    );
    let straggler = s.worker(&addr, &["--task-delay-ms", "40000"]);
    // Let it register and take a task before the healthy worker starts.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !s.log(c).contains("worker registered") {
        assert!(Instant::now() < deadline, "the straggler never registered:\n{}", s.log(c));
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(500));
    let w = s.worker(&addr, &[]);
    let log = coordinator_done(&mut s, c);
    let took = started.elapsed();
    workers_exit_ok(&mut s, &[w]);
    assert!(took < Duration::from_secs(30), "the job took {took:?}: no backup?\n{log}");
    assert!(stat(&log, "backup tasks") >= 1, "{log}");
    assert!(s.try_status(straggler).is_none(), "the straggler should still be asleep");
    let got = sorted_lines(&s.path("out"));
    assert_same(&got, &s.sequential(&job("wordcount", &files, "2", &[]), "seq"), "with a straggler");
}

// A record that makes the user function panic: no built-in app or hidden
// flag injects one, so this case is left to the library's own tests.

/// Streaming: `shoal mr run` with shell commands as mapper and reducer gives
/// word count's output.
#[test]
fn streaming_shell_commands_match_wordcount() {
    let mut s = Scratch::new();
    let files = inputs(&s, 4, 20_000, 500);
    let mut args = vec![
        "mr",
        "run",
        "--quiet",
        "--workers",
        "2",
        "--reduces",
        "4",
        "--output",
        "out",
        "--mapper",
        "tr -cs 'A-Za-z' '\\n' | awk 'NF'",
        "--reducer",
        "uniq -c | awk '{print $2 \"\\t\" $1}'",
        "--input",
    ];
    args.extend(files.iter().map(String::as_str));
    let ran = s.run("streaming", &args, JOB_LIMIT);
    assert!(ran.status.success(), "streaming job failed ({}):\n{}", ran.status, ran.stderr);
    assert!(ran.stdout.contains("done in"), "no summary: {}", ran.stdout);
    let got = sorted_lines(&s.path("out"));
    assert_same(&got, &s.sequential(&job("wordcount", &files, "4", &[]), "seq"), "streaming vs wordcount");
}

/// Jobs that are refused: one clear error line on stderr, a non-zero exit,
/// no `mr-out-*` written (and an earlier job's output left alone), for both
/// `mr run` and `mr coordinator`.
#[test]
fn bad_jobs_are_refused_cleanly() {
    let mut s = Scratch::new();
    s.write("in.txt", "some words here\n");
    s.write("a-file", "not a directory\n");
    // An earlier job's output, which a refused job must not touch.
    fs::create_dir(s.path("old")).expect("mkdir");
    s.write("old/mr-out-0", "earlier 1\n");
    // A read-only directory only stops an unprivileged user.
    let ro = s.path("read-only");
    fs::create_dir(&ro).expect("mkdir");
    let mut perms = fs::metadata(&ro).expect("stat").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o555);
    fs::set_permissions(&ro, perms).expect("chmod");
    let privileged = File::create(ro.join("probe")).is_ok();
    let cases: Vec<(&str, Vec<&str>, &str, &str)> = vec![
        // (what, job args, output dir, a word the error must mention)
        (
            "missing input",
            vec!["--app", "wordcount", "--reduces", "2", "--input", "in.txt", "nope.txt"],
            "old",
            "nope.txt",
        ),
        (
            "unknown app",
            vec!["--app", "no-such-app", "--reduces", "2", "--input", "in.txt"],
            "old",
            "no-such-app",
        ),
        ("zero reduces", vec!["--app", "wordcount", "--reduces", "0", "--input", "in.txt"], "old", "reduce"),
        (
            "output under a file",
            vec!["--app", "wordcount", "--reduces", "2", "--input", "in.txt"],
            "a-file/out",
            "a-file/out",
        ),
        (
            "read-only output",
            vec!["--app", "wordcount", "--reduces", "2", "--input", "in.txt"],
            "read-only",
            "read-only",
        ),
    ];
    for (what, job, out, mention) in &cases {
        if *what == "read-only output" && privileged {
            eprintln!("skipping {what}: running with privileges that ignore permissions");
            continue;
        }
        for mode in [&["mr", "run", "--quiet"][..], &["mr", "coordinator", "--listen", "127.0.0.1:0"][..]] {
            let args: Vec<&str> = [mode, &["--output", *out], job.as_slice()].concat();
            let ran = s.run("refused", &args, Duration::from_secs(30));
            let ctx = format!("{what} ({}): status {}, stderr {:?}", mode[1], ran.status, ran.stderr);
            assert!(!ran.status.success(), "{ctx}");
            let lines: Vec<&str> = ran.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
            assert_eq!(lines.len(), 1, "{ctx}: expected one error line");
            assert!(lines[0].starts_with("error: ") && lines[0].contains(mention), "{ctx}");
            assert!(!ran.stdout.contains("listening"), "{ctx}: the coordinator started: {}", ran.stdout);
            if *out == "old" {
                assert_eq!(
                    read(&s.path("old/mr-out-0")),
                    "earlier 1\n",
                    "{ctx}: an earlier output was touched"
                );
                assert_eq!(out_files(&s.path("old")).len(), 1, "{ctx}");
            } else {
                assert!(out_files(&s.path(out)).is_empty(), "{ctx}: output written");
            }
        }
    }
}
