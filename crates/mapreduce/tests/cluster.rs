//! In-process clusters: a coordinator and workers as tokio tasks talking
//! over real TCP on 127.0.0.1, checked against the sequential runner.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use shoal_mapreduce::{
    counter, plan, run_sequential, run_worker, AppRegistry, AppSpec, Coordinator, CoordinatorOptions,
    JobReport, JobSpec, LocalFs, MapContext, MapReduce, ReduceContext, SchedulerConfig, WorkerExit,
    WorkerFaults, WorkerOptions,
};

fn seed() -> u64 {
    let s = std::env::var("SHOAL_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    eprintln!("seed: {s} (replay with SHOAL_SEED={s})");
    s
}

const WORDS: &[&str] = &[
    "the", "The", "of", "and", "whale", "Ahab", "sea", "ship", "captain", "harpoon", "white", "deep",
    "sailor", "Ishmael", "water", "boat", "line", "night", "day", "wind",
];

/// `files` text files of English-like lines, reproducible from `seed`.
fn corpus(dir: &Path, seed: u64, files: usize, lines: usize) -> Vec<String> {
    let mut x = seed | 1;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..files)
        .map(|f| {
            let mut text = String::new();
            for _ in 0..lines {
                let n = 1 + next() % 12;
                for i in 0..n {
                    if i > 0 {
                        text.push_str([" ", ", ", "; ", " -- "][(next() % 4) as usize]);
                    }
                    text.push_str(WORDS[(next() % WORDS.len() as u64) as usize]);
                }
                text.push_str(".\n");
            }
            let p = dir.join(format!("pg-{f}.txt"));
            std::fs::write(&p, text).expect("write corpus");
            p.to_string_lossy().into_owned()
        })
        .collect()
}

/// Every output line of `dir/mr-out-*`, sorted; checks keys are sorted
/// within each file.
fn merged_output(dir: &Path) -> Vec<String> {
    let mut all = Vec::new();
    for e in std::fs::read_dir(dir).expect("output dir") {
        let e = e.expect("entry");
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            panic!("leftover temporary file {name}");
        }
        if !name.starts_with("mr-out-") {
            continue;
        }
        let text = std::fs::read_to_string(e.path()).expect("read output");
        let keys: Vec<&str> = text.lines().map(|l| l.split(' ').next().unwrap_or("")).collect();
        assert!(keys.windows(2).all(|w| w[0] <= w[1]), "{name}: keys not sorted");
        all.extend(text.lines().map(str::to_owned));
    }
    all.sort();
    all
}

fn fast_opts() -> CoordinatorOptions {
    CoordinatorOptions {
        scheduler: SchedulerConfig {
            worker_timeout: Duration::from_secs(2),
            backup_min_runtime: Duration::from_millis(300),
            ..SchedulerConfig::default()
        },
        heartbeat_interval: Duration::from_millis(200),
        long_poll: Duration::from_millis(200),
        tick: Duration::from_millis(50),
        exit_grace: Duration::from_millis(500),
    }
}

/// Runs `spec` on a coordinator and one worker per entry of `faults`.
async fn cluster(
    spec: JobSpec,
    registry: AppRegistry,
    opts: CoordinatorOptions,
    faults: Vec<WorkerFaults>,
    work: &Path,
) -> (JobReport, Vec<tokio::task::JoinHandle<Result<WorkerExit, shoal_mapreduce::MrError>>>) {
    let plan = plan(spec, &registry, &LocalFs).expect("plan");
    let coord = Coordinator::start(plan, "127.0.0.1:0", opts).await.expect("coordinator");
    let addr = coord.addr().to_string();
    let workers = faults
        .into_iter()
        .enumerate()
        .map(|(i, f)| {
            let mut o = WorkerOptions::new(addr.clone(), work.join(format!("worker-{i}")));
            o.registry = registry.clone();
            o.faults = f;
            o.coordinator_patience = Duration::from_secs(2);
            tokio::spawn(run_worker(o))
        })
        .collect();
    let report = tokio::time::timeout(Duration::from_secs(60), coord.wait())
        .await
        .expect("job finishes within 60 s")
        .expect("job succeeds");
    (report, workers)
}

fn sequential(spec: JobSpec, registry: &AppRegistry) -> Vec<String> {
    let out = PathBuf::from(&spec.output);
    run_sequential(spec, registry, &LocalFs).expect("sequential run");
    merged_output(&out)
}

struct Setup {
    _dir: tempfile::TempDir,
    root: PathBuf,
    inputs: Vec<String>,
}

fn setup(files: usize, lines: usize) -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().to_path_buf();
    std::fs::create_dir(root.join("in")).expect("mkdir");
    let inputs = corpus(&root.join("in"), seed(), files, lines);
    Setup { _dir: dir, root, inputs }
}

fn wc_spec(s: &Setup, out: &str) -> JobSpec {
    let mut spec = JobSpec::named("wordcount", s.inputs.clone(), s.root.join(out).to_string_lossy(), 3);
    spec.split_size = 8 << 10;
    spec
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wordcount_on_three_workers_matches_sequential() {
    let s = setup(5, 400);
    let (report, workers) = cluster(
        wc_spec(&s, "out"),
        AppRegistry::default(),
        fast_opts(),
        vec![WorkerFaults::default(); 3],
        &s.root,
    )
    .await;
    let want = sequential(wc_spec(&s, "seq"), &AppRegistry::default());
    assert!(!want.is_empty());
    assert_eq!(merged_output(&s.root.join("out")), want);
    assert!(report.maps > 5, "large files are split: {} maps", report.maps);
    assert_eq!(report.stats.re_executions, 0);
    assert!(report.stats.shuffled_bytes > 0);
    assert_eq!(report.counters[counter::MAP_INPUT_RECORDS], 5 * 400);
    for w in workers {
        assert_eq!(w.await.expect("join").expect("worker"), WorkerExit::JobDone);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn worker_dying_after_its_maps_has_them_rerun() {
    let s = setup(6, 300);
    let mut faults = vec![WorkerFaults::default(); 3];
    faults[0].die_after_maps = Some(2);
    let (report, _workers) =
        cluster(wc_spec(&s, "out"), AppRegistry::default(), fast_opts(), faults, &s.root).await;
    let want = sequential(wc_spec(&s, "seq"), &AppRegistry::default());
    assert_eq!(merged_output(&s.root.join("out")), want);
    assert!(report.stats.workers_lost >= 1, "{:?}", report.stats);
    assert!(report.stats.re_executions >= 2, "its two maps ran again: {:?}", report.stats);
    // Counters are totalled once per task.
    assert_eq!(report.counters[counter::MAP_INPUT_RECORDS], 6 * 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn straggler_is_overtaken_by_a_backup_task() {
    let s = setup(6, 50);
    let mut faults = vec![WorkerFaults::default(); 3];
    faults[0].task_delay = Duration::from_secs(3600);
    let started = std::time::Instant::now();
    let (report, workers) =
        cluster(wc_spec(&s, "out"), AppRegistry::default(), fast_opts(), faults, &s.root).await;
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(report.stats.backup_tasks >= 1, "{:?}", report.stats);
    let want = sequential(wc_spec(&s, "seq"), &AppRegistry::default());
    assert_eq!(merged_output(&s.root.join("out")), want);
    workers[0].abort();
}

/// Word count whose map panics on any line containing POISON.
struct Poison;

impl MapReduce for Poison {
    fn map(&self, ctx: &mut MapContext<'_>, doc: &str, record: &[u8]) {
        if record.windows(6).any(|w| w == b"POISON") {
            panic!("poisoned record");
        }
        shoal_mapreduce::apps::WordCount.map(ctx, doc, record);
    }

    fn reduce(&self, ctx: &mut ReduceContext<'_>, key: &[u8], values: &[&[u8]]) {
        shoal_mapreduce::apps::WordCount.reduce(ctx, key, values);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn record_that_panics_twice_is_skipped_and_counted() {
    let s = setup(2, 200);
    let clean = s.inputs.clone();
    let poisoned = s.root.join("in/poisoned.txt");
    std::fs::write(&poisoned, "whale whale\nthe POISON line\nsea\n").expect("write");
    let clean_extra = s.root.join("clean-extra.txt");
    std::fs::write(&clean_extra, "whale whale\nsea\n").expect("write");
    let mut registry = AppRegistry::default();
    registry.register_app("poison", Arc::new(Poison));
    let mut inputs = clean.clone();
    inputs.push(poisoned.to_string_lossy().into_owned());
    let spec = JobSpec::named("poison", inputs, s.root.join("out").to_string_lossy(), 2);
    let (report, _w) =
        cluster(spec, registry.clone(), fast_opts(), vec![WorkerFaults::default(); 2], &s.root).await;
    assert_eq!(report.counters[counter::SKIPPED_RECORDS], 1);
    assert_eq!(report.stats.failed_attempts, 2);
    let mut inputs = clean;
    inputs.push(clean_extra.to_string_lossy().into_owned());
    let want =
        sequential(JobSpec::named("wordcount", inputs, s.root.join("seq").to_string_lossy(), 2), &registry);
    assert_eq!(merged_output(&s.root.join("out")), want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn streaming_commands_count_words_like_wordcount() {
    let s = setup(3, 200);
    let app = AppSpec::Streaming {
        mapper: "LC_ALL=C tr -cs 'A-Za-z' '\\n' | sed '/^$/d'".into(),
        reducer: "LC_ALL=C uniq -c | awk '{print $2 \"\\t\" $1}'".into(),
    };
    let mut spec = JobSpec::new(app, s.inputs.clone(), s.root.join("out").to_string_lossy(), 3);
    spec.split_size = 4 << 10;
    let (report, _w) =
        cluster(spec, AppRegistry::default(), fast_opts(), vec![WorkerFaults::default(); 3], &s.root).await;
    assert!(report.maps > 3);
    let want = sequential(wc_spec(&s, "seq"), &AppRegistry::default());
    assert_eq!(merged_output(&s.root.join("out")), want);
}

#[test]
fn sort_outputs_concatenate_to_a_sorted_whole() {
    let s = setup(4, 300);
    let mut spec = JobSpec::named("sort", s.inputs.clone(), s.root.join("out").to_string_lossy(), 4);
    spec.split_size = 8 << 10;
    run_sequential(spec, &AppRegistry::default(), &LocalFs).expect("sort");
    let mut all = Vec::new();
    for r in 0..4 {
        let text = std::fs::read_to_string(s.root.join(format!("out/mr-out-{r}"))).expect("output");
        all.extend(text.lines().map(str::to_owned));
    }
    let mut want: Vec<String> = s
        .inputs
        .iter()
        .flat_map(|p| {
            std::fs::read_to_string(p).expect("input").lines().map(str::to_owned).collect::<Vec<_>>()
        })
        .collect();
    want.sort();
    assert_eq!(all, want);
    let sizes: Vec<usize> = (0..4)
        .map(|r| {
            std::fs::metadata(s.root.join(format!("out/mr-out-{r}"))).map(|m| m.len() as usize).unwrap_or(0)
        })
        .collect();
    assert!(sizes.iter().filter(|n| **n > 0).count() >= 2, "range partitioning spreads the keys: {sizes:?}");
}

#[test]
fn bad_jobs_are_refused_before_anything_is_written() {
    let s = setup(1, 10);
    let out = s.root.join("out");
    let reg = AppRegistry::default();
    let err = plan(JobSpec::named("nope", s.inputs.clone(), out.to_string_lossy(), 2), &reg, &LocalFs)
        .expect_err("the job is refused");
    assert!(err.to_string().contains("unknown app"), "{err}");
    let err = plan(JobSpec::named("wordcount", s.inputs.clone(), out.to_string_lossy(), 0), &reg, &LocalFs)
        .expect_err("the job is refused");
    assert!(err.to_string().contains("at least 1"), "{err}");
    let missing = vec![s.root.join("missing.txt").to_string_lossy().into_owned()];
    let err = plan(JobSpec::named("wordcount", missing, out.to_string_lossy(), 2), &reg, &LocalFs)
        .expect_err("the job is refused");
    assert!(err.to_string().contains("missing.txt"), "{err}");
    assert!(!out.exists(), "nothing written for a refused job");
    let not_dir = s.root.join("file");
    std::fs::write(&not_dir, "x").expect("write");
    let err =
        plan(JobSpec::named("wordcount", s.inputs.clone(), not_dir.to_string_lossy(), 2), &reg, &LocalFs)
            .expect_err("the job is refused");
    assert!(err.to_string().contains("output directory"), "{err}");
}
