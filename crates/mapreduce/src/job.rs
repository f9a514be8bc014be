//! Planning a job (validation, splits, sampled range bounds), resolving its
//! user code, and running it sequentially in one process.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::app::TaskInfo;
use crate::coordinator::Stats;
use crate::engine::{self, MapOutput, Partitioner, TaskError};
use crate::runfile::Run;
use crate::storage::{read_split, splits_of};
use crate::{
    AppRegistry, AppSpec, Counters, InputFormat, JobSpec, JobStorage, MapReduce, MrError, Split, TaskId,
};

/// A validated job: absolute paths, sampled bounds, and its map splits.
#[derive(Debug, Clone)]
pub struct Plan {
    pub job: JobSpec,
    pub splits: Vec<Split>,
}

/// The outcome of a finished job.
#[derive(Debug, Clone, Default)]
pub struct JobReport {
    pub maps: u32,
    pub reduces: u32,
    pub stats: Stats,
    pub counters: Counters,
    pub elapsed: Duration,
}

/// The user code of a job, resolved on a worker.
#[derive(Clone)]
pub(crate) enum UserCode {
    App { app: Arc<dyn MapReduce>, partitioner: Partitioner },
    Streaming { mapper: String, reducer: String },
}

impl std::fmt::Debug for UserCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UserCode::App { .. } => f.write_str("UserCode::App"),
            UserCode::Streaming { mapper, reducer } => {
                write!(f, "UserCode::Streaming({mapper:?}, {reducer:?})")
            }
        }
    }
}

impl UserCode {
    pub fn resolve(job: &JobSpec, registry: &AppRegistry) -> Result<UserCode, MrError> {
        match &job.app {
            AppSpec::Named { name, args } => {
                let app = registry.resolve(name, args)?;
                let partitioner = match &job.range_bounds {
                    Some(b) => Partitioner::Range(Arc::new(b.clone())),
                    None => Partitioner::App(app.clone()),
                };
                Ok(UserCode::App { app, partitioner })
            }
            AppSpec::Streaming { mapper, reducer } => {
                if mapper.trim().is_empty() || reducer.trim().is_empty() {
                    return Err(MrError::BadJob(
                        "streaming needs both a mapper and a reducer command".into(),
                    ));
                }
                Ok(UserCode::Streaming { mapper: mapper.clone(), reducer: reducer.clone() })
            }
        }
    }

    pub fn input_format(&self) -> InputFormat {
        match self {
            UserCode::App { app, .. } => app.input_format(),
            UserCode::Streaming { .. } => InputFormat::Lines,
        }
    }

    pub fn map(
        &self,
        info: TaskInfo,
        split: &Split,
        data: &[u8],
        skip: &[u64],
        combine: bool,
    ) -> Result<MapOutput, TaskError> {
        match self {
            UserCode::App { app, partitioner } => {
                engine::run_map(app, info, &split.doc, data, skip, partitioner, combine)
            }
            UserCode::Streaming { mapper, .. } => crate::streaming::map(mapper, data, info.reduces),
        }
    }

    pub fn reduce(
        &self,
        info: TaskInfo,
        runs: &[Run],
        skip: &[u64],
        out: &mut dyn Write,
    ) -> Result<Counters, TaskError> {
        match self {
            UserCode::App { app, .. } => engine::run_reduce(app, info, runs, skip, out),
            UserCode::Streaming { reducer, .. } => crate::streaming::reduce(reducer, runs, out),
        }
    }
}

/// The seed an attempt's user code sees.
pub(crate) fn attempt_seed(job_seed: u64, task: TaskId, attempt: u64) -> u64 {
    let t = match task {
        TaskId::Map(i) => u64::from(i),
        TaskId::Reduce(i) => (1 << 32) | u64::from(i),
    };
    crate::mix64(job_seed ^ crate::mix64(t) ^ crate::mix64(attempt.rotate_left(17)))
}

/// Validates `spec` and prepares the job: checks the app, every input and
/// the output directory (clearing old `mr-out-*` only once everything else
/// passed), cuts inputs into splits and samples range bounds if the app
/// wants them.
pub fn plan(mut spec: JobSpec, registry: &AppRegistry, storage: &dyn JobStorage) -> Result<Plan, MrError> {
    if spec.reduces == 0 {
        return Err(MrError::BadJob("the number of reduce tasks must be at least 1".into()));
    }
    if spec.inputs.is_empty() {
        return Err(MrError::BadJob("no input files".into()));
    }
    if spec.split_size == 0 {
        return Err(MrError::BadJob("the split size must be at least 1 byte".into()));
    }
    let code = UserCode::resolve(&spec, registry)?;
    let format = code.input_format();
    let mut splits = Vec::new();
    let mut inputs = Vec::new();
    for doc in &spec.inputs {
        let path = storage.resolve_input(doc).map_err(|error| MrError::Input { path: doc.clone(), error })?;
        let len = storage.input_len(&path).map_err(|error| MrError::Input { path: doc.clone(), error })?;
        splits.extend(splits_of(doc, &path, len, spec.split_size, format));
        inputs.push(path);
    }
    spec.inputs = inputs;
    if let UserCode::App { app, .. } = &code {
        if app.range_partitioned() && spec.range_bounds.is_none() {
            spec.range_bounds = Some(sample_bounds(app, &splits, spec.reduces, storage)?);
        }
    }
    spec.output = storage
        .prepare_output(&spec.output)
        .map_err(|error| MrError::Output { path: spec.output.clone(), error })?;
    Ok(Plan { job: spec, splits })
}

/// Range bounds from the map output of up to 64 KiB at the start of each
/// split (at most 256 splits): R-1 evenly spaced keys of the sorted sample.
fn sample_bounds(
    app: &Arc<dyn MapReduce>,
    splits: &[Split],
    reduces: u32,
    storage: &dyn JobStorage,
) -> Result<Vec<Vec<u8>>, MrError> {
    let mut keys: Vec<Vec<u8>> = Vec::new();
    let step = splits.len().div_ceil(256).max(1);
    for split in splits.iter().step_by(step) {
        let head = Split { len: split.len.min(64 << 10), ..split.clone() };
        let data =
            read_split(storage, &head).map_err(|error| MrError::Input { path: split.doc.clone(), error })?;
        let info = TaskInfo { task: 0, attempt: 0, try_no: 0, seed: 0, reduces };
        let mut coll = Vec::new();
        // A sample-only partitioner: everything to partition 0.
        let mut sink = |k: &[u8], _v: &[u8]| coll.push(k.to_vec());
        let mut counters = Counters::new();
        engine::for_each_record(&data, app.input_format(), |_, rec| {
            let mut ctx = crate::app::MapContext { sink: &mut sink, counters: &mut counters, info };
            // A record that panics here is simply left out of the sample.
            let _ =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| app.map(&mut ctx, &split.doc, rec)));
            true
        });
        keys.extend(coll);
    }
    keys.sort_unstable();
    let n = keys.len();
    let mut bounds: Vec<Vec<u8>> =
        (1..reduces as usize).filter_map(|i| keys.get(i * n / reduces as usize).cloned()).collect();
    bounds.dedup();
    Ok(bounds)
}

/// Runs a job in this process, one task after another, with the same code
/// paths as the workers: the reference for tests and benchmarks. Records
/// that panic are skipped (as they would be after two failures).
pub fn run_sequential(
    spec: JobSpec,
    registry: &AppRegistry,
    storage: &dyn JobStorage,
) -> Result<JobReport, MrError> {
    let started = Instant::now();
    let plan = plan(spec, registry, storage)?;
    let job = &plan.job;
    let code = UserCode::resolve(job, registry)?;
    let mut report = JobReport { maps: plan.splits.len() as u32, reduces: job.reduces, ..Default::default() };
    let sum = |into: &mut Counters, from: Counters| {
        for (k, v) in from {
            *into.entry(k).or_default() += v;
        }
    };
    let mut outputs: Vec<Vec<Vec<u8>>> = Vec::new();
    for (m, split) in plan.splits.iter().enumerate() {
        let data =
            read_split(storage, split).map_err(|error| MrError::Input { path: split.doc.clone(), error })?;
        let mut skip = Vec::new();
        let out = loop {
            let id = TaskId::Map(m as u32);
            let info = TaskInfo {
                task: m as u32,
                attempt: 0,
                try_no: 0,
                seed: attempt_seed(job.seed, id, 0),
                reduces: job.reduces,
            };
            report.stats.attempts += 1;
            match code.map(info, split, &data, &skip, job.combine) {
                Ok(out) => break out,
                Err(TaskError::Panicked { record, .. }) if !skip.contains(&record) => {
                    report.stats.failed_attempts += 1;
                    skip.push(record);
                }
                Err(e) => return Err(MrError::JobFailed(format!("map task {m}: {e}"))),
            }
        };
        sum(&mut report.counters, out.counters);
        outputs.push(out.parts);
    }
    for r in 0..job.reduces {
        let mut runs = Vec::with_capacity(outputs.len());
        for parts in &mut outputs {
            let bytes = std::mem::take(&mut parts[r as usize]);
            report.stats.shuffled_bytes += bytes.len() as u64;
            runs.push(Run::parse(bytes).map_err(|e| MrError::JobFailed(format!("intermediate run: {e}")))?);
        }
        let mut skip = Vec::new();
        let counters = loop {
            let id = TaskId::Reduce(r);
            let info = TaskInfo {
                task: r,
                attempt: 0,
                try_no: 0,
                seed: attempt_seed(job.seed, id, 0),
                reduces: job.reduces,
            };
            report.stats.attempts += 1;
            let name = format!("mr-out-{r}");
            let mut file = storage
                .create_output(&job.output, &name, 0)
                .map_err(|error| MrError::Output { path: job.output.clone(), error })?;
            match code.reduce(info, &runs, &skip, &mut file) {
                Ok(c) => {
                    file.commit().map_err(|error| MrError::Output { path: job.output.clone(), error })?;
                    break c;
                }
                Err(TaskError::Panicked { record, .. }) if !skip.contains(&record) => {
                    report.stats.failed_attempts += 1;
                    skip.push(record);
                }
                Err(e) => return Err(MrError::JobFailed(format!("reduce task {r}: {e}"))),
            }
        };
        sum(&mut report.counters, counters);
    }
    report.elapsed = started.elapsed();
    Ok(report)
}
