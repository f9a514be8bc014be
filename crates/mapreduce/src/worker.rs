//! A worker: registers with the coordinator, asks for tasks, runs them, and
//! serves its map outputs to reduce workers over RPC (the shuffle).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use shoal_rpc::{Client, ClientOptions, RpcError, Server, ServerOptions, Service};

use crate::app::TaskInfo;
use crate::coordinator::{Ack, Assignment, MapSource, Outcome};
use crate::engine::TaskError;
use crate::job::{attempt_seed, UserCode};
use crate::proto::{CoordRequest, CoordResponse, PeerRequest, PeerResponse};
use crate::runfile::Run;
use crate::storage::read_split;
use crate::{
    AppRegistry, AttemptId, Counters, JobSpec, JobStorage, LocalFs, MrError, Split, TaskId, WorkerId,
};

/// Faults a worker injects into itself, for tests and demonstrations.
#[derive(Debug, Clone, Default)]
pub struct WorkerFaults {
    /// Stop (as if killed: stop serving, stop talking) right after
    /// reporting this many finished map tasks.
    pub die_after_maps: Option<u32>,
    /// Sleep this long before running each task (a straggler).
    pub task_delay: Duration,
}

/// Worker settings.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// The coordinator's `host:port`.
    pub coordinator: String,
    /// Where to serve map outputs (`127.0.0.1:0` picks a port).
    pub listen: String,
    /// The address other workers should use, if not the bound one.
    pub advertise: Option<String>,
    /// Local directory for map outputs.
    pub work_dir: PathBuf,
    pub registry: AppRegistry,
    pub storage: Arc<dyn JobStorage>,
    /// Give up once the coordinator has been unreachable this long.
    pub coordinator_patience: Duration,
    pub faults: WorkerFaults,
}

impl WorkerOptions {
    pub fn new(coordinator: impl Into<String>, work_dir: impl Into<PathBuf>) -> Self {
        WorkerOptions {
            coordinator: coordinator.into(),
            listen: "127.0.0.1:0".into(),
            advertise: None,
            work_dir: work_dir.into(),
            registry: AppRegistry::default(),
            storage: Arc::new(LocalFs),
            coordinator_patience: Duration::from_secs(10),
            faults: WorkerFaults::default(),
        }
    }
}

/// Why a worker stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerExit {
    /// The coordinator said the job is over.
    JobDone,
    /// The coordinator stopped answering.
    CoordinatorGone,
    /// An injected fault ([`WorkerFaults::die_after_maps`]).
    Died,
}

type Outputs = Arc<Mutex<HashMap<(u32, AttemptId), PathBuf>>>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Serves map output partitions to reduce workers.
struct PeerService {
    outputs: Outputs,
}

const FETCH_CHUNK: u32 = 4 << 20;

impl Service for PeerService {
    type Request = PeerRequest;
    type Response = PeerResponse;

    async fn call(&self, req: PeerRequest) -> PeerResponse {
        let PeerRequest::Fetch { map, attempt, partition, offset, max } = req;
        let Some(dir) = lock(&self.outputs).get(&(map, attempt)).cloned() else {
            return PeerResponse::Missing(format!("no output of map {map} attempt {attempt} here"));
        };
        let path = dir.join(format!("p{partition}"));
        let max = max.min(FETCH_CHUNK);
        let read = tokio::task::spawn_blocking(move || -> std::io::Result<(u64, Vec<u8>)> {
            use std::io::{Read, Seek, SeekFrom};
            let mut f = std::fs::File::open(&path)?;
            let total = f.metadata()?.len();
            f.seek(SeekFrom::Start(offset))?;
            let mut buf = Vec::with_capacity(max as usize);
            f.take(u64::from(max)).read_to_end(&mut buf)?;
            Ok((total, buf))
        })
        .await;
        match read {
            Ok(Ok((total, data))) => PeerResponse::Chunk { total, data: Bytes::from(data) },
            Ok(Err(e)) => PeerResponse::Missing(format!("reading map {map} partition {partition}: {e}")),
            Err(e) => PeerResponse::Missing(format!("reader task failed: {e}")),
        }
    }
}

/// Worker id, job, its user code, heartbeat interval, local output directory.
type Registration = (WorkerId, JobSpec, UserCode, Duration, PathBuf);

type CoordClient = Client<CoordRequest, CoordResponse>;
type PeerClient = Client<PeerRequest, PeerResponse>;

struct Ctx {
    opts: WorkerOptions,
    coord: CoordClient,
    outputs: Outputs,
    peers: HashMap<String, PeerClient>,
    addr: String,
    maps_done: u32,
}

/// Runs a worker until the job is over, the coordinator goes away, or an
/// injected fault stops it.
pub async fn run_worker(opts: WorkerOptions) -> Result<WorkerExit, MrError> {
    let outputs: Outputs = Arc::default();
    let server = Server::bind(
        opts.listen.as_str(),
        Arc::new(PeerService { outputs: outputs.clone() }),
        ServerOptions::default(),
    )
    .await
    .map_err(|error| MrError::Listen { addr: opts.listen.clone(), error })?;
    let addr = match &opts.advertise {
        Some(a) => a.clone(),
        None => advertised(server.local_addr()),
    };
    let coord = Client::new(
        &opts.coordinator,
        ClientOptions { timeout: Duration::from_secs(5), retries: 2, ..ClientOptions::default() },
    );
    let mut ctx = Ctx { opts, coord, outputs, peers: HashMap::new(), addr, maps_done: 0 };
    let exit = ctx.run().await;
    drop(server);
    exit
}

fn advertised(bound: SocketAddr) -> String {
    if bound.ip().is_unspecified() {
        format!("127.0.0.1:{}", bound.port())
    } else {
        bound.to_string()
    }
}

impl Ctx {
    /// Calls the coordinator, retrying until `coordinator_patience` runs out.
    async fn coord_call(&self, req: &CoordRequest) -> Result<CoordResponse, RpcError> {
        let started = Instant::now();
        loop {
            match self.coord.call_once(req).await {
                Ok(r) => return Ok(r),
                Err(e) if started.elapsed() >= self.opts.coordinator_patience => return Err(e),
                Err(e) => {
                    tracing::debug!(error = %e, "coordinator call failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }

    async fn register(&mut self) -> Result<Registration, MrError> {
        let resp = match self.coord_call(&CoordRequest::Register { addr: self.addr.clone() }).await {
            Ok(r) => r,
            Err(error) => {
                return Err(MrError::CoordinatorUnreachable { addr: self.opts.coordinator.clone(), error });
            }
        };
        let CoordResponse::Registered { worker, job, heartbeat_ms } = resp else {
            return Err(MrError::BadJob("unexpected reply to register".into()));
        };
        let code = UserCode::resolve(&job, &self.opts.registry)?;
        let dir = self
            .opts
            .work_dir
            .join(format!("w{worker}-{:x}", crate::mix64(job.seed ^ u64::from(std::process::id()) ^ worker)));
        std::fs::create_dir_all(&dir)
            .map_err(|error| MrError::WorkDir { path: dir.display().to_string(), error })?;
        tracing::info!(worker, addr = %self.addr, "registered with the coordinator");
        Ok((worker, *job, code, Duration::from_millis(heartbeat_ms.max(10)), dir))
    }

    async fn run(&mut self) -> Result<WorkerExit, MrError> {
        let (mut worker, mut job, mut code, mut hb, mut dir) = self.register().await?;
        loop {
            let resp = match self.coord_call(&CoordRequest::NextTask { worker }).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::info!(error = %e, "coordinator gone; exiting");
                    cleanup(&dir);
                    return Ok(WorkerExit::CoordinatorGone);
                }
            };
            let CoordResponse::Task(task) = resp else { continue };
            match task {
                Assignment::Wait => {}
                Assignment::Exit => {
                    cleanup(&dir);
                    return Ok(WorkerExit::JobDone);
                }
                Assignment::Reregister => {
                    tracing::info!(worker, "coordinator forgot us; dropping map outputs and re-registering");
                    lock(&self.outputs).clear();
                    cleanup(&dir);
                    (worker, job, code, hb, dir) = self.register().await?;
                }
                Assignment::Map { task, attempt, try_no, split, skip } => {
                    let heart = self.heartbeat(worker, hb);
                    self.delay().await;
                    let info = TaskInfo {
                        task,
                        attempt,
                        try_no,
                        seed: attempt_seed(job.seed, TaskId::Map(task), attempt),
                        reduces: job.reduces,
                    };
                    let out_dir = dir.join(format!("m{task}-a{attempt}"));
                    let outcome = self.run_map(&job, &code, info, split, skip, out_dir).await;
                    heart.abort();
                    let ok = matches!(outcome, Outcome::MapDone { .. });
                    let ack = self.report(worker, attempt, outcome).await;
                    if ok && ack == Some(Ack::Accepted) {
                        self.maps_done += 1;
                        if self.opts.faults.die_after_maps.is_some_and(|n| self.maps_done >= n) {
                            tracing::warn!(worker, "injected fault: dying after {} maps", self.maps_done);
                            return Ok(WorkerExit::Died);
                        }
                    }
                }
                Assignment::Reduce { task, attempt, try_no, sources, skip } => {
                    let heart = self.heartbeat(worker, hb);
                    self.delay().await;
                    let info = TaskInfo {
                        task,
                        attempt,
                        try_no,
                        seed: attempt_seed(job.seed, TaskId::Reduce(task), attempt),
                        reduces: job.reduces,
                    };
                    let outcome = self.run_reduce(&job, &code, info, sources, skip).await;
                    heart.abort();
                    self.report(worker, attempt, outcome).await;
                }
            }
        }
    }

    async fn delay(&self) {
        if !self.opts.faults.task_delay.is_zero() {
            tokio::time::sleep(self.opts.faults.task_delay).await;
        }
    }

    fn heartbeat(&self, worker: WorkerId, every: Duration) -> tokio::task::JoinHandle<()> {
        let coord = self.coord.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let _ = coord.call(&CoordRequest::Heartbeat { worker }).await;
            }
        })
    }

    async fn report(&self, worker: WorkerId, attempt: AttemptId, outcome: Outcome) -> Option<Ack> {
        match self.coord_call(&CoordRequest::Report { worker, attempt, outcome }).await {
            Ok(CoordResponse::Ack(a)) => Some(a),
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(error = %e, "could not report a finished attempt");
                None
            }
        }
    }

    async fn run_map(
        &self,
        job: &JobSpec,
        code: &UserCode,
        info: TaskInfo,
        split: Split,
        skip: Vec<u64>,
        out_dir: PathBuf,
    ) -> Outcome {
        let storage = self.opts.storage.clone();
        let code = code.clone();
        let combine = job.combine;
        let dir = out_dir.clone();
        let result = tokio::task::spawn_blocking(move || -> Result<(Vec<u64>, Counters), TaskError> {
            let data = read_split(&*storage, &split)
                .map_err(|e| TaskError::Failed(format!("reading {}: {e}", split.doc)))?;
            let out = code.map(info, &split, &data, &skip, combine)?;
            write_parts(&dir, &out.parts)
                .map_err(|e| TaskError::Failed(format!("writing map output: {e}")))?;
            Ok((out.parts.iter().map(|p| p.len() as u64).collect(), out.counters))
        })
        .await;
        match result {
            Ok(Ok((partition_bytes, counters))) => {
                lock(&self.outputs).insert((info.task, info.attempt), out_dir);
                Outcome::MapDone { partition_bytes, counters }
            }
            Ok(Err(e)) => failed(e),
            Err(e) => Outcome::Failed { bad_record: None, error: format!("map task died: {e}") },
        }
    }

    async fn fetch(&mut self, src: &MapSource, partition: u32) -> Result<Run, Outcome> {
        let client = self
            .peers
            .entry(src.addr.clone())
            .or_insert_with(|| {
                Client::new(
                    &src.addr,
                    ClientOptions {
                        timeout: Duration::from_secs(5),
                        retries: 1,
                        connect_timeout: Duration::from_secs(1),
                        ..ClientOptions::default()
                    },
                )
            })
            .clone();
        let fail = |unreachable: bool, error: String| Outcome::FetchFailed {
            map: src.map,
            map_attempt: src.attempt,
            unreachable,
            error,
        };
        let mut buf = Vec::with_capacity(src.bytes as usize);
        loop {
            let req = PeerRequest::Fetch {
                map: src.map,
                attempt: src.attempt,
                partition,
                offset: buf.len() as u64,
                max: FETCH_CHUNK,
            };
            match client.call(&req).await {
                Ok(PeerResponse::Chunk { total, data }) => {
                    if data.is_empty() && (buf.len() as u64) < total {
                        return Err(fail(false, "short read".into()));
                    }
                    buf.extend_from_slice(&data);
                    if buf.len() as u64 >= total {
                        break;
                    }
                }
                Ok(PeerResponse::Missing(m)) => return Err(fail(false, m)),
                Err(e) => return Err(fail(true, format!("{}: {e}", src.addr))),
            }
        }
        Run::parse(buf).map_err(|e| fail(false, format!("map {} partition {partition}: {e}", src.map)))
    }

    async fn run_reduce(
        &mut self,
        job: &JobSpec,
        code: &UserCode,
        info: TaskInfo,
        sources: Vec<MapSource>,
        skip: Vec<u64>,
    ) -> Outcome {
        let mut runs = Vec::with_capacity(sources.len());
        let mut shuffled = 0u64;
        for src in &sources {
            match self.fetch(src, info.task).await {
                Ok(run) => {
                    shuffled += src.bytes;
                    runs.push(run);
                }
                Err(outcome) => return outcome,
            }
        }
        let storage = self.opts.storage.clone();
        let code = code.clone();
        let output = job.output.clone();
        let result = tokio::task::spawn_blocking(move || -> Result<Counters, TaskError> {
            let name = format!("mr-out-{}", info.task);
            let mut file = storage
                .create_output(&output, &name, info.attempt)
                .map_err(|e| TaskError::Failed(format!("creating {name}: {e}")))?;
            let counters = code.reduce(info, &runs, &skip, &mut file)?;
            file.commit().map_err(|e| TaskError::Failed(format!("committing {name}: {e}")))?;
            Ok(counters)
        })
        .await;
        match result {
            Ok(Ok(counters)) => Outcome::ReduceDone { counters, shuffled_bytes: shuffled },
            Ok(Err(e)) => failed(e),
            Err(e) => Outcome::Failed { bad_record: None, error: format!("reduce task died: {e}") },
        }
    }
}

fn failed(e: TaskError) -> Outcome {
    match e {
        TaskError::Panicked { record, message } => {
            Outcome::Failed { bad_record: Some(record), error: message }
        }
        TaskError::Failed(m) => Outcome::Failed { bad_record: None, error: m },
    }
}

/// Writes one file per partition, under a temp directory renamed into place
/// so a fetch never sees a half-written output.
fn write_parts(dir: &Path, parts: &[Vec<u8>]) -> std::io::Result<()> {
    let tmp = dir.with_extension("tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    for (r, p) in parts.iter().enumerate() {
        std::fs::write(tmp.join(format!("p{r}")), p)?;
    }
    std::fs::rename(&tmp, dir)
}

fn cleanup(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
}
