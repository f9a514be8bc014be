//! `shoal-mapreduce`: MapReduce over `shoal-rpc`.
//!
//! - [`coordinator`]: the scheduling logic as a pure state machine
//!   ([`Scheduler`]): tasks, heartbeats, re-execution, backup tasks, counters,
//!   skipped records. Tested by hand-driving, no network.
//! - [`Coordinator`]: the tokio shell around it: an RPC server, a ticker.
//! - [`run_worker`]: a worker: asks for tasks, runs them, serves its map
//!   outputs to reduce workers over RPC (the shuffle crosses the network).
//! - [`MapReduce`]: user code as a Rust trait; [`apps`]: the built-in apps;
//!   [`AppSpec::Streaming`]: external commands, Hadoop-Streaming style.
//! - [`JobStorage`]: where input is read and output written ([`LocalFs`]
//!   for now; the Shoal file system later).
//! - [`runfile`]: the binary format of intermediate runs.
//! - [`run_sequential`]: the same job in one process, one task at a time,
//!   for reference outputs and benchmarks.

pub mod app;
pub mod apps;
pub mod coordinator;
mod engine;
mod job;
mod proto;
pub mod runfile;
mod service;
pub mod storage;
mod streaming;
mod worker;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use app::{AppRegistry, InputFormat, MapContext, MapReduce, ReduceContext, TaskInfo};
pub use coordinator::{
    Ack, Assignment, MapSource, Outcome, Phase, Progress, Scheduler, SchedulerConfig, Stats,
};
pub use job::{plan, run_sequential, JobReport, Plan};
pub use service::{Coordinator, CoordinatorOptions};
pub use storage::{JobStorage, LocalFs, OutputFile};
pub use worker::{run_worker, WorkerExit, WorkerFaults, WorkerOptions};

/// A worker as the coordinator knows it.
pub type WorkerId = u64;
/// One execution of a task; unique within a job.
pub type AttemptId = u64;
/// Named counters (MR-6), user-defined and built-in.
pub type Counters = BTreeMap<String, u64>;

/// Built-in counter names.
pub mod counter {
    pub const MAP_INPUT_RECORDS: &str = "map_input_records";
    pub const MAP_OUTPUT_RECORDS: &str = "map_output_records";
    pub const MAP_OUTPUT_BYTES: &str = "map_output_bytes";
    pub const COMBINE_OUTPUT_RECORDS: &str = "combine_output_records";
    pub const REDUCE_INPUT_GROUPS: &str = "reduce_input_groups";
    pub const REDUCE_INPUT_RECORDS: &str = "reduce_input_records";
    pub const REDUCE_OUTPUT_RECORDS: &str = "reduce_output_records";
    pub const SKIPPED_RECORDS: &str = "skipped_records";
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum TaskId {
    Map(u32),
    Reduce(u32),
}

/// The input of one map task: a byte range of one input file. With
/// [`InputFormat::Lines`] the task owns the lines that *start* in
/// `[offset, offset + len)`; with `whole` it is the whole file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Split {
    /// The input's name as the user gave it (what apps see as `doc`).
    pub doc: String,
    /// Where to read it (absolute once planned).
    pub path: String,
    pub offset: u64,
    pub len: u64,
    pub whole: bool,
}

/// Which user code a job runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AppSpec {
    /// An app from the workers' [`AppRegistry`] (the built-ins, or the
    /// user's own registered in their binary), with its arguments.
    Named { name: String, args: Vec<String> },
    /// External commands run with `sh -c`: records on stdin, lines of
    /// `key<TAB>value` on stdout (Hadoop Streaming).
    Streaming { mapper: String, reducer: String },
}

/// Everything a worker needs to know about a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSpec {
    pub app: AppSpec,
    /// Input files (absolute paths once planned).
    pub inputs: Vec<String>,
    /// Output directory (absolute once planned); gets `mr-out-<r>`.
    pub output: String,
    pub reduces: u32,
    /// Files larger than this become several map tasks.
    pub split_size: u64,
    /// Use the app's combiner, if it has one.
    pub combine: bool,
    /// Seeds apps that want randomness (the `crash` app), per attempt.
    pub seed: u64,
    /// Range-partition bounds sampled from the input (the `sort` app);
    /// filled in by [`plan`].
    pub range_bounds: Option<Vec<Vec<u8>>>,
}

impl JobSpec {
    /// A job with default split size (64 MiB), combiner on, seed 0.
    pub fn new(app: AppSpec, inputs: Vec<String>, output: impl Into<String>, reduces: u32) -> Self {
        JobSpec {
            app,
            inputs,
            output: output.into(),
            reduces,
            split_size: 64 << 20,
            combine: true,
            seed: 0,
            range_bounds: None,
        }
    }

    /// A job running the registered app `name`.
    pub fn named(name: &str, inputs: Vec<String>, output: impl Into<String>, reduces: u32) -> Self {
        Self::new(AppSpec::Named { name: name.into(), args: Vec::new() }, inputs, output, reduces)
    }
}

/// Why a job could not be set up or run.
#[derive(Debug, thiserror::Error)]
pub enum MrError {
    #[error("input file {path}: {error}")]
    Input { path: String, error: std::io::Error },
    #[error("output directory {path}: {error}")]
    Output { path: String, error: std::io::Error },
    #[error("unknown app {0:?} (built-in apps: {1})")]
    UnknownApp(String, String),
    #[error("bad job: {0}")]
    BadJob(String),
    #[error("cannot listen on {addr}: {error}")]
    Listen { addr: String, error: std::io::Error },
    #[error("coordinator at {addr} unreachable: {error}")]
    CoordinatorUnreachable { addr: String, error: shoal_rpc::RpcError },
    #[error("worker directory {path}: {error}")]
    WorkDir { path: String, error: std::io::Error },
    #[error("job failed: {0}")]
    JobFailed(String),
}

/// FNV-1a, 64 bits: a hash that is the same in every process and build, so
/// every map worker partitions a key the same way.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The default partitioner: `hash(key) % R` (MR-1).
pub fn hash_partition(key: &[u8], reduces: u32) -> u32 {
    (stable_hash(key) % u64::from(reduces.max(1))) as u32
}

/// A 64-bit mix (splitmix64) for deriving per-attempt seeds.
pub fn mix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}
