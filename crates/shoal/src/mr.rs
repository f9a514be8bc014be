//! `shoal mr`: MapReduce jobs: a coordinator, a worker, the local mode that
//! runs both (`mr run`), and the sequential reference run (`mr seq`).

use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use shoal_mapreduce::{
    plan, run_sequential, run_worker, AppRegistry, AppSpec, Coordinator, CoordinatorOptions, JobReport,
    JobSpec, LocalFs, Phase, Plan, SchedulerConfig, WorkerExit, WorkerFaults, WorkerOptions,
};

#[derive(Debug, Args)]
#[command(subcommand_required = true, arg_required_else_help = true)]
pub struct MrArgs {
    #[command(subcommand)]
    command: MrCommand,
}

#[derive(Debug, Subcommand)]
enum MrCommand {
    /// Runs the coordinator of one job until it is done, then exits.
    Coordinator(CoordinatorArgs),
    /// Runs a worker until its coordinator says the job is over (or stops
    /// answering).
    Worker(WorkerArgs),
    /// Local mode: a coordinator in this process and N worker processes;
    /// shows progress and prints a summary.
    Run(RunArgs),
    /// Runs the job sequentially in this process (the reference output).
    Seq(JobArgs),
}

/// What to run, on what, and where the output goes.
#[derive(Debug, Args, Clone)]
struct JobArgs {
    /// A built-in app: wordcount, indexer, grep, sort, or a 6.824 test app
    /// (mtiming, rtiming, jobcount, early_exit, crash, nocrash).
    #[arg(long, required_unless_present = "mapper", conflicts_with = "mapper")]
    app: Option<String>,
    /// An argument for the app (grep: the pattern). Repeatable.
    #[arg(long = "app-arg", value_name = "ARG")]
    app_args: Vec<String>,
    /// Streaming mapper: a shell command reading lines on stdin and writing
    /// `key<TAB>value` lines.
    #[arg(long, requires = "reducer")]
    mapper: Option<String>,
    /// Streaming reducer: reads `key<TAB>value` lines sorted by key.
    #[arg(long, requires = "mapper")]
    reducer: Option<String>,
    /// Input files.
    #[arg(long, num_args = 1.., required = true, value_name = "FILE")]
    input: Vec<String>,
    /// Output directory; receives mr-out-0 .. mr-out-(R-1).
    #[arg(long, value_name = "DIR")]
    output: PathBuf,
    /// Number of reduce tasks (R).
    #[arg(long, default_value_t = 10)]
    reduces: u32,
    /// Files larger than this become several map tasks (bytes; K, M, G
    /// suffixes allowed).
    #[arg(long, default_value = "64M", value_parser = parse_size)]
    split_size: u64,
    /// Don't run the app's combiner on map output.
    #[arg(long)]
    no_combine: bool,
    /// Seed for apps that use randomness (crash); random if absent.
    #[arg(long)]
    seed: Option<u64>,
}

#[derive(Debug, Args, Clone)]
struct SchedArgs {
    /// Declare a worker dead after this many seconds without a heartbeat.
    #[arg(long, default_value_t = 10.0)]
    worker_timeout_secs: f64,
    /// Give a straggling task a backup copy after it has run this long (and
    /// twice as long as a typical task of its phase).
    #[arg(long, default_value_t = 5.0)]
    backup_after_secs: f64,
}

#[derive(Debug, Args)]
struct CoordinatorArgs {
    /// Address to listen on (port 0 picks one; the address is printed).
    #[arg(long, default_value = "127.0.0.1:7800")]
    listen: String,
    #[command(flatten)]
    job: JobArgs,
    #[command(flatten)]
    sched: SchedArgs,
}

#[derive(Debug, Args)]
struct WorkerArgs {
    /// The coordinator's HOST:PORT.
    #[arg(long)]
    coordinator: String,
    /// Where to serve this worker's map outputs to other workers.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    /// The address other workers should use to reach this one.
    #[arg(long)]
    advertise: Option<String>,
    /// Directory for map outputs (default: a new temporary directory).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Exit once the coordinator has not answered for this many seconds.
    #[arg(long, default_value_t = 10.0)]
    patience_secs: f64,
    /// Fault injection: exit abruptly after finishing this many map tasks.
    #[arg(long, hide = true)]
    die_after_maps: Option<u32>,
    /// Fault injection: sleep this long before every task (a straggler).
    #[arg(long, hide = true, default_value_t = 0)]
    task_delay_ms: u64,
}

#[derive(Debug, Args)]
struct RunArgs {
    #[command(flatten)]
    job: JobArgs,
    #[command(flatten)]
    sched: SchedArgs,
    /// Number of worker processes.
    #[arg(long, default_value_t = 2)]
    workers: u32,
    /// Don't draw progress bars (progress lines are still printed).
    #[arg(long)]
    quiet: bool,
}

fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, c)) if c.eq_ignore_ascii_case(&'k') => (&s[..i], 1u64 << 10),
        Some((i, c)) if c.eq_ignore_ascii_case(&'m') => (&s[..i], 1 << 20),
        Some((i, c)) if c.eq_ignore_ascii_case(&'g') => (&s[..i], 1 << 30),
        _ => (s, 1),
    };
    let n: u64 = num.trim().parse().map_err(|_| format!("not a size: {s:?}"))?;
    if n == 0 {
        return Err("the size must be positive".into());
    }
    n.checked_mul(mult).ok_or_else(|| format!("size too large: {s:?}"))
}

fn secs(s: f64, what: &str) -> Result<Duration> {
    Duration::try_from_secs_f64(s).map_err(|_| anyhow!("--{what} must be a non-negative number of seconds"))
}

impl JobArgs {
    fn spec(&self) -> JobSpec {
        let app = match (&self.app, &self.mapper, &self.reducer) {
            (_, Some(m), Some(r)) => AppSpec::Streaming { mapper: m.clone(), reducer: r.clone() },
            (Some(name), _, _) => AppSpec::Named { name: name.clone(), args: self.app_args.clone() },
            // clap requires one or the other.
            _ => AppSpec::Named { name: String::new(), args: Vec::new() },
        };
        let mut spec = JobSpec::new(app, self.input.clone(), self.output.to_string_lossy(), self.reduces);
        spec.split_size = self.split_size;
        spec.combine = !self.no_combine;
        spec.seed = self.seed.unwrap_or_else(random_seed);
        spec
    }

    /// Validates everything (inputs, app, R, output directory) before any
    /// output is touched.
    fn plan(&self) -> Result<Plan> {
        Ok(plan(self.spec(), &AppRegistry::default(), &LocalFs)?)
    }
}

impl SchedArgs {
    fn options(&self) -> Result<CoordinatorOptions> {
        Ok(CoordinatorOptions {
            scheduler: SchedulerConfig {
                worker_timeout: secs(self.worker_timeout_secs, "worker-timeout-secs")?,
                backup_min_runtime: secs(self.backup_after_secs, "backup-after-secs")?,
                ..SchedulerConfig::default()
            },
            ..CoordinatorOptions::default()
        })
    }
}

fn random_seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    shoal_mapreduce::mix64(t ^ u64::from(std::process::id()))
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")
}

pub fn run(args: MrArgs) -> Result<ExitCode> {
    match args.command {
        MrCommand::Coordinator(a) => coordinator(a),
        MrCommand::Worker(a) => worker(a),
        MrCommand::Run(a) => local(a),
        MrCommand::Seq(job) => {
            let started = Instant::now();
            let spec = job.spec();
            let output = job.output.clone();
            let report = run_sequential(spec, &AppRegistry::default(), &LocalFs)?;
            print_summary(&report, started.elapsed(), &output, 0);
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn coordinator(a: CoordinatorArgs) -> Result<ExitCode> {
    // Planning clears an earlier job's mr-out-* files: find out first
    // whether we can listen at all, so a busy port costs nothing.
    let probe =
        std::net::TcpListener::bind(&a.listen).with_context(|| format!("cannot listen on {}", a.listen))?;
    drop(probe);
    let plan = a.job.plan()?;
    let opts = a.sched.options()?;
    let output = PathBuf::from(&plan.job.output);
    let seed = plan.job.seed;
    runtime()?.block_on(async move {
        let started = Instant::now();
        let coord = Coordinator::start(plan, &a.listen, opts).await?;
        println!(
            "coordinator listening on {} ({} map tasks, {} reduce tasks, seed {seed})",
            coord.addr(),
            coord.maps(),
            coord.job().reduces
        );
        let report = coord.wait().await?;
        print_summary(&report, started.elapsed(), &output, 0);
        Ok(ExitCode::SUCCESS)
    })
}

fn worker(a: WorkerArgs) -> Result<ExitCode> {
    let (work_dir, _tmp) = match &a.work_dir {
        Some(d) => (d.clone(), None),
        None => {
            let t = tempfile::Builder::new()
                .prefix("shoal-mr-worker-")
                .tempdir()
                .context("creating a work directory")?;
            (t.path().to_path_buf(), Some(t))
        }
    };
    let mut opts = WorkerOptions::new(a.coordinator.clone(), work_dir);
    opts.listen = a.listen.clone();
    opts.advertise = a.advertise.clone();
    opts.coordinator_patience = secs(a.patience_secs, "patience-secs")?;
    opts.faults =
        WorkerFaults { die_after_maps: a.die_after_maps, task_delay: Duration::from_millis(a.task_delay_ms) };
    let exit = runtime()?.block_on(run_worker(opts))?;
    match exit {
        WorkerExit::JobDone | WorkerExit::CoordinatorGone => Ok(ExitCode::SUCCESS),
        // Like a SIGKILL: no cleanup, no goodbye.
        WorkerExit::Died => std::process::exit(137),
    }
}

/// A worker process of the local mode.
struct WorkerProc {
    child: Option<Child>,
    work_dir: PathBuf,
}

fn spawn_worker(exe: &PathBuf, coordinator: &str, work_dir: &PathBuf) -> Result<Child> {
    std::fs::create_dir_all(work_dir).with_context(|| format!("creating {}", work_dir.display()))?;
    Command::new(exe)
        .args(["mr", "worker", "--coordinator", coordinator, "--work-dir"])
        .arg(work_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting a worker process ({})", exe.display()))
}

fn local(a: RunArgs) -> Result<ExitCode> {
    if a.workers == 0 {
        bail!("--workers must be at least 1");
    }
    let plan = a.job.plan()?;
    let opts = a.sched.options()?;
    let output = PathBuf::from(&plan.job.output);
    let exe = std::env::current_exe().context("finding the shoal executable")?;
    let tmp = tempfile::Builder::new().prefix("shoal-mr-").tempdir().context("creating a work directory")?;
    let seed = plan.job.seed;
    runtime()?.block_on(async move {
        let started = Instant::now();
        let coord = Coordinator::start(plan, "127.0.0.1:0", opts).await?;
        let addr = coord.addr().to_string();
        eprintln!(
            "job: {} map tasks, {} reduce tasks, {} workers, coordinator {addr}, seed {seed}",
            coord.maps(),
            coord.job().reduces,
            a.workers
        );
        let mut procs = Vec::new();
        for i in 0..a.workers {
            let work_dir = tmp.path().join(format!("worker-{i}"));
            let child = spawn_worker(&exe, &addr, &work_dir)?;
            procs.push(WorkerProc { child: Some(child), work_dir });
        }
        let bars = Bars::new(a.quiet, coord.maps(), coord.job().reduces);
        let mut restarts = 0u32;
        let mut last_phase = None;
        let outcome = loop {
            let p = coord.progress();
            bars.update(&p);
            if last_phase != Some(p.phase) {
                if a.quiet {
                    eprintln!(
                        "phase {:?}: maps {}/{}, reduces {}/{}",
                        p.phase, p.maps_done, p.maps, p.reduces_done, p.reduces
                    );
                }
                last_phase = Some(p.phase);
            }
            if matches!(p.phase, Phase::Done | Phase::Failed) {
                break p.phase;
            }
            // Keep N workers alive: restart any that exited (the crash app
            // makes them exit on purpose).
            for w in &mut procs {
                let exited = match w.child.as_mut().map(Child::try_wait) {
                    Some(Ok(Some(status))) => Some(status),
                    _ => None,
                };
                if let Some(status) = exited {
                    tracing::info!(%status, "worker exited before the job was done; restarting it");
                    restarts += 1;
                    w.child = Some(spawn_worker(&exe, &addr, &w.work_dir)?);
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        bars.finish();
        let report = coord.wait().await;
        // Workers got "exit"; give them a moment, then stop any that linger.
        let deadline = Instant::now() + Duration::from_secs(5);
        for w in &mut procs {
            if let Some(mut c) = w.child.take() {
                while Instant::now() < deadline && matches!(c.try_wait(), Ok(None)) {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                if matches!(c.try_wait(), Ok(None)) {
                    let _ = c.kill();
                }
                let _ = c.wait();
            }
        }
        let report = report?;
        debug_assert_eq!(outcome, Phase::Done);
        print_summary(&report, started.elapsed(), &output, restarts);
        Ok(ExitCode::SUCCESS)
    })
}

/// One progress bar per phase (or nothing when quiet).
struct Bars {
    multi: Option<MultiProgress>,
    map: ProgressBar,
    reduce: ProgressBar,
}

impl Bars {
    fn new(quiet: bool, maps: u32, reduces: u32) -> Bars {
        let style = ProgressStyle::with_template("{prefix:>7} {bar:40} {pos}/{len} tasks  {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar());
        if quiet {
            return Bars { multi: None, map: ProgressBar::hidden(), reduce: ProgressBar::hidden() };
        }
        let multi = MultiProgress::new();
        let map = multi.add(ProgressBar::new(u64::from(maps)).with_style(style.clone()).with_prefix("map"));
        let reduce = multi.add(ProgressBar::new(u64::from(reduces)).with_style(style).with_prefix("reduce"));
        Bars { multi: Some(multi), map, reduce }
    }

    fn update(&self, p: &shoal_mapreduce::Progress) {
        self.map.set_position(u64::from(p.maps_done));
        self.reduce.set_position(u64::from(p.reduces_done));
        self.map.set_message(format!(
            "{} workers, {} re-executions, {} backups",
            p.workers_alive, p.stats.re_executions, p.stats.backup_tasks
        ));
        self.reduce.set_message(format!("{} shuffled", human_bytes(p.stats.shuffled_bytes)));
    }

    fn finish(&self) {
        self.map.finish();
        self.reduce.finish();
        if let Some(m) = &self.multi {
            let _ = m.clear();
        }
    }
}

fn human_bytes(b: u64) -> String {
    match b {
        b if b >= 1 << 30 => format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}

fn print_summary(r: &JobReport, elapsed: Duration, output: &std::path::Path, restarts: u32) {
    println!(
        "done in {:.2} s: output in {}/mr-out-0..{}",
        elapsed.as_secs_f64(),
        output.display(),
        r.reduces.saturating_sub(1)
    );
    println!(
        "tasks: {} map, {} reduce; attempts {}; re-executions {}; backup tasks {}; failed attempts {}; workers lost {}{}",
        r.maps,
        r.reduces,
        r.stats.attempts,
        r.stats.re_executions,
        r.stats.backup_tasks,
        r.stats.failed_attempts,
        r.stats.workers_lost,
        if restarts > 0 { format!("; worker restarts {restarts}") } else { String::new() }
    );
    println!("shuffled: {}", human_bytes(r.stats.shuffled_bytes));
    if !r.counters.is_empty() {
        let c: Vec<String> = r.counters.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!("counters: {}", c.join(" "));
    }
}
