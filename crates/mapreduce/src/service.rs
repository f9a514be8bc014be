//! The coordinator's tokio shell (ARCHITECTURE.md rule 2): an RPC server
//! that feeds the [`Scheduler`] with worker requests and the clock, and a
//! ticker that lets it notice silent workers.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use shoal_rpc::{Server, ServerOptions, Service};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::coordinator::{Assignment, Phase, Progress, Scheduler, SchedulerConfig};
use crate::job::{JobReport, Plan};
use crate::proto::{CoordRequest, CoordResponse};
use crate::{JobSpec, MrError};

/// Coordinator settings.
#[derive(Debug, Clone)]
pub struct CoordinatorOptions {
    pub scheduler: SchedulerConfig,
    /// How often workers send a heartbeat while running a task.
    pub heartbeat_interval: Duration,
    /// How long a worker's request for work waits for one to appear.
    pub long_poll: Duration,
    /// How often the scheduler looks for silent workers.
    pub tick: Duration,
    /// After the job, how long to keep answering so idle workers hear
    /// that they should exit.
    pub exit_grace: Duration,
}

impl Default for CoordinatorOptions {
    fn default() -> Self {
        CoordinatorOptions {
            scheduler: SchedulerConfig::default(),
            heartbeat_interval: Duration::from_secs(1),
            long_poll: Duration::from_millis(500),
            tick: Duration::from_millis(100),
            exit_grace: Duration::from_secs(3),
        }
    }
}

struct Shared {
    sched: Mutex<Scheduler>,
    start: Instant,
    job: JobSpec,
    changed: Notify,
    opts: CoordinatorOptions,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Scheduler> {
        self.sched.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn now(&self) -> Duration {
        self.start.elapsed()
    }
}

struct CoordService(Arc<Shared>);

impl Service for CoordService {
    type Request = CoordRequest;
    type Response = CoordResponse;

    async fn call(&self, req: CoordRequest) -> CoordResponse {
        let s = &self.0;
        match req {
            CoordRequest::Register { addr } => {
                let worker = s.lock().register(addr.clone(), s.now());
                tracing::info!(worker, %addr, "worker registered");
                CoordResponse::Registered {
                    worker,
                    job: Box::new(s.job.clone()),
                    heartbeat_ms: s.opts.heartbeat_interval.as_millis() as u64,
                }
            }
            CoordRequest::NextTask { worker } => {
                let deadline = Instant::now() + s.opts.long_poll;
                loop {
                    let notified = s.changed.notified();
                    let a = s.lock().request_task(worker, s.now());
                    let now = Instant::now();
                    if a != Assignment::Wait || now >= deadline {
                        if a != Assignment::Wait {
                            tracing::debug!(worker, ?a, "assigned");
                        }
                        return CoordResponse::Task(a);
                    }
                    let wait = (deadline - now).min(Duration::from_millis(100));
                    let _ = tokio::time::timeout(wait, notified).await;
                }
            }
            CoordRequest::Heartbeat { worker } => CoordResponse::Alive(s.lock().heartbeat(worker, s.now())),
            CoordRequest::Report { worker, attempt, outcome } => {
                let ack = s.lock().complete(worker, attempt, outcome, s.now());
                s.changed.notify_waiters();
                CoordResponse::Ack(ack)
            }
            CoordRequest::Progress => CoordResponse::Progress(Box::new(s.lock().progress())),
        }
    }
}

/// A running coordinator: the scheduler behind an RPC port.
#[derive(Debug)]
pub struct Coordinator {
    shared: Arc<Shared>,
    server: Option<Server>,
    ticker: JoinHandle<()>,
    maps: u32,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").field("job", &self.job).finish_non_exhaustive()
    }
}

impl Coordinator {
    /// Serves the planned job on `listen` (e.g. `127.0.0.1:0`).
    pub async fn start(plan: Plan, listen: &str, opts: CoordinatorOptions) -> Result<Coordinator, MrError> {
        let maps = plan.splits.len() as u32;
        let sched = Scheduler::new(plan.splits, plan.job.reduces, opts.scheduler.clone());
        let shared = Arc::new(Shared {
            sched: Mutex::new(sched),
            start: Instant::now(),
            job: plan.job,
            changed: Notify::new(),
            opts: opts.clone(),
        });
        let server = Server::bind(listen, Arc::new(CoordService(shared.clone())), ServerOptions::default())
            .await
            .map_err(|error| MrError::Listen { addr: listen.to_string(), error })?;
        let s = shared.clone();
        let ticker = tokio::spawn(async move {
            let mut tick = tokio::time::interval(s.opts.tick);
            loop {
                tick.tick().await;
                let before = s.lock().progress();
                s.lock().tick(s.now());
                let after = s.lock().progress();
                if before != after {
                    s.changed.notify_waiters();
                }
            }
        });
        tracing::info!(addr = %server.local_addr(), maps, "coordinator listening");
        Ok(Coordinator { shared, server: Some(server), ticker, maps })
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.as_ref().map(Server::local_addr).unwrap_or_else(|| ([0, 0, 0, 0], 0).into())
    }

    pub fn job(&self) -> &JobSpec {
        &self.shared.job
    }

    pub fn maps(&self) -> u32 {
        self.maps
    }

    pub fn progress(&self) -> Progress {
        self.shared.lock().progress()
    }

    /// Waits until the job is done or failed, tells idle workers to exit
    /// (for up to `exit_grace`), and stops serving.
    pub async fn wait(mut self) -> Result<JobReport, MrError> {
        loop {
            if self.shared.lock().finished() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let elapsed = self.shared.now();
        let grace = Instant::now() + self.shared.opts.exit_grace;
        while self.shared.lock().workers_not_told_exit() > 0 && Instant::now() < grace {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.ticker.abort();
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
        let p = self.shared.lock().progress();
        match p.phase {
            Phase::Failed => Err(MrError::JobFailed(p.error.unwrap_or_default())),
            _ => Ok(JobReport {
                maps: p.maps,
                reduces: p.reduces,
                stats: p.stats,
                counters: p.counters,
                elapsed,
            }),
        }
    }
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        self.ticker.abort();
    }
}
