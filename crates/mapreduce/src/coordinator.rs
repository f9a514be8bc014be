//! The coordinator's scheduling logic as a pure state machine
//! (ARCHITECTURE.md rule 1): no clock, no sockets, no files, no randomness.
//! Every input carries the current time as a [`Duration`] since the job
//! started; the tokio shell in [`crate::service`] feeds it RPCs and ticks.
//!
//! What it decides (MR-1..4, MR-6):
//! - which task an idle worker runs next: map tasks first, reduce tasks
//!   only once every map output exists;
//! - when a worker is dead (silent for `worker_timeout`, or unreachable for a
//!   reduce worker's fetch): its running tasks go back to idle, and so do the
//!   map tasks it finished, because their output lived on its disk — unless
//!   every reduce task is already done;
//! - backup tasks: once a phase has no idle task left, an idle worker gets a
//!   second copy of a task that has run much longer than the phase's typical
//!   task; the first completion wins and later ones are ignored;
//! - counters are kept per task from the accepted completion, so a task that
//!   ran twice is totalled once;
//! - a record that made the user function panic `skip_after_failures` times
//!   is skipped by every later attempt of that task.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{AttemptId, Counters, Split, TaskId, WorkerId};

/// Scheduling knobs. The defaults suit a real job on a few machines.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// A worker silent for this long is declared dead (MR-3).
    pub worker_timeout: Duration,
    /// A task gets a backup only after running at least this long (MR-4).
    pub backup_min_runtime: Duration,
    /// ... and at least this many times the median duration of the tasks of
    /// the same phase that already finished.
    pub backup_factor: f64,
    /// A record is skipped once it has made the user function panic this
    /// many times (the paper: "more than one failure").
    pub skip_after_failures: u32,
    /// Failures of one task not blamed on a record before the job fails.
    pub max_task_failures: u32,
    /// Failures blamed on records, per task, before the job fails.
    pub max_record_failures: u32,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            worker_timeout: Duration::from_secs(10),
            backup_min_runtime: Duration::from_secs(5),
            backup_factor: 2.0,
            skip_after_failures: 2,
            max_task_failures: 4,
            max_record_failures: 100,
        }
    }
}

/// Where a reduce task fetches one map task's output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapSource {
    pub map: u32,
    pub attempt: AttemptId,
    /// The RPC address of the worker holding the output.
    pub addr: String,
    /// Size of this reduce task's partition in that output.
    pub bytes: u64,
}

/// The coordinator's answer to a worker asking for work.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Assignment {
    Map {
        task: u32,
        attempt: AttemptId,
        /// How many attempts of this task started before this one.
        try_no: u32,
        split: Split,
        /// Record indices to skip (MR-6).
        skip: Vec<u64>,
    },
    Reduce {
        task: u32,
        attempt: AttemptId,
        try_no: u32,
        sources: Vec<MapSource>,
        /// Key-group indices to skip (MR-6).
        skip: Vec<u64>,
    },
    /// Nothing to do right now; ask again.
    Wait,
    /// The job is over (done or failed): exit.
    Exit,
    /// The coordinator does not know this worker (or declared it dead):
    /// drop local map outputs and register again.
    Reregister,
}

/// What a worker reports when an attempt ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// A map attempt finished: the size of each of its R partitions.
    MapDone { partition_bytes: Vec<u64>, counters: Counters },
    /// A reduce attempt finished and its output file is in place.
    ReduceDone { counters: Counters, shuffled_bytes: u64 },
    /// The attempt failed. `bad_record` names the record (map) or key group
    /// (reduce) on which the user function panicked, if that was the cause.
    Failed { bad_record: Option<u64>, error: String },
    /// A reduce attempt could not fetch a map output. `unreachable`: the
    /// holder did not answer at all (as opposed to answering "missing").
    FetchFailed { map: u32, map_attempt: AttemptId, unreachable: bool, error: String },
}

/// Whether the coordinator took a report into account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Ack {
    Accepted,
    /// Another attempt of the task already finished, or this attempt was
    /// abandoned; the report changed nothing.
    Ignored,
    /// The worker is unknown or declared dead.
    Unknown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    Map,
    Reduce,
    Done,
    Failed,
}

/// Job-wide figures for progress displays and the final summary.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Attempts started, backups included.
    pub attempts: u64,
    /// Attempts of a task that had started before, other than backups
    /// (lost outputs, dead workers, failures).
    pub re_executions: u64,
    /// Backup attempts started (MR-4).
    pub backup_tasks: u64,
    /// Completions ignored because another attempt of the task won.
    pub duplicate_completions: u64,
    /// Workers declared dead.
    pub workers_lost: u64,
    /// Attempts that reported a failure.
    pub failed_attempts: u64,
    /// Reduce fetches that failed.
    pub fetch_failures: u64,
    /// Bytes reduce tasks fetched (accepted attempts only).
    pub shuffled_bytes: u64,
}

/// A snapshot of the job for progress displays.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    pub phase: Phase,
    pub maps_done: u32,
    pub maps: u32,
    pub reduces_done: u32,
    pub reduces: u32,
    pub workers_alive: u32,
    pub stats: Stats,
    pub counters: Counters,
    pub error: Option<String>,
}

#[derive(Debug, Clone)]
struct Running {
    attempt: AttemptId,
    worker: WorkerId,
    started: Duration,
}

#[derive(Debug, Clone)]
struct Finished {
    attempt: AttemptId,
    worker: WorkerId,
    partition_bytes: Vec<u64>,
}

#[derive(Debug, Clone, Default)]
struct Task {
    runs: Vec<Running>,
    done: Option<Finished>,
    /// Attempts started so far.
    tries: u32,
    failures: u32,
    record_failures: u32,
    bad: BTreeMap<u64, u32>,
    counters: Counters,
    shuffled_bytes: u64,
}

impl Task {
    fn idle(&self) -> bool {
        self.done.is_none() && self.runs.is_empty()
    }
}

#[derive(Debug, Clone)]
struct Worker {
    addr: String,
    last_seen: Duration,
    alive: bool,
    running: BTreeSet<AttemptId>,
    told_exit: bool,
}

/// The scheduling state of one job.
#[derive(Debug)]
pub struct Scheduler {
    cfg: SchedulerConfig,
    splits: Vec<Split>,
    maps: Vec<Task>,
    reduces: Vec<Task>,
    workers: BTreeMap<WorkerId, Worker>,
    attempts: HashMap<AttemptId, TaskId>,
    next_worker: WorkerId,
    next_attempt: AttemptId,
    /// Durations of accepted attempts per phase (for the backup rule).
    map_durations: Vec<Duration>,
    reduce_durations: Vec<Duration>,
    stats: Stats,
    error: Option<String>,
}

impl Scheduler {
    /// A job with one map task per split and `reduces` reduce tasks.
    pub fn new(splits: Vec<Split>, reduces: u32, cfg: SchedulerConfig) -> Self {
        assert!(reduces > 0, "a job needs at least one reduce task");
        let maps = vec![Task::default(); splits.len()];
        Scheduler {
            cfg,
            splits,
            maps,
            reduces: vec![Task::default(); reduces as usize],
            workers: BTreeMap::new(),
            attempts: HashMap::new(),
            next_worker: 1,
            next_attempt: 1,
            map_durations: Vec::new(),
            reduce_durations: Vec::new(),
            stats: Stats::default(),
            error: None,
        }
    }

    pub fn config(&self) -> &SchedulerConfig {
        &self.cfg
    }

    pub fn phase(&self) -> Phase {
        if self.error.is_some() {
            Phase::Failed
        } else if self.reduces.iter().all(|t| t.done.is_some()) {
            Phase::Done
        } else if self.maps.iter().all(|t| t.done.is_some()) {
            Phase::Reduce
        } else {
            Phase::Map
        }
    }

    /// True once the job is done or has failed.
    pub fn finished(&self) -> bool {
        matches!(self.phase(), Phase::Done | Phase::Failed)
    }

    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Counters summed over tasks, each task's from its accepted attempt.
    pub fn counters(&self) -> Counters {
        let mut total = Counters::new();
        for t in self.maps.iter().chain(&self.reduces) {
            if t.done.is_some() {
                for (k, v) in &t.counters {
                    *total.entry(k.clone()).or_default() += v;
                }
            }
        }
        total
    }

    pub fn progress(&self) -> Progress {
        let done = |ts: &[Task]| ts.iter().filter(|t| t.done.is_some()).count() as u32;
        Progress {
            phase: self.phase(),
            maps_done: done(&self.maps),
            maps: self.maps.len() as u32,
            reduces_done: done(&self.reduces),
            reduces: self.reduces.len() as u32,
            workers_alive: self.workers.values().filter(|w| w.alive).count() as u32,
            stats: self.stats.clone(),
            counters: self.counters(),
            error: self.error.clone(),
        }
    }

    /// Alive workers that have not yet been told to exit.
    pub fn workers_not_told_exit(&self) -> usize {
        self.workers.values().filter(|w| w.alive && !w.told_exit).count()
    }

    /// Whether `worker` is registered and alive.
    pub fn is_alive(&self, worker: WorkerId) -> bool {
        self.workers.get(&worker).is_some_and(|w| w.alive)
    }

    /// A new worker whose map outputs are served at `addr`.
    pub fn register(&mut self, addr: String, now: Duration) -> WorkerId {
        let id = self.next_worker;
        self.next_worker += 1;
        self.workers.insert(
            id,
            Worker { addr, last_seen: now, alive: true, running: BTreeSet::new(), told_exit: false },
        );
        id
    }

    /// Any sign of life from a worker. Returns false for an unknown or dead
    /// worker (which should re-register).
    pub fn heartbeat(&mut self, worker: WorkerId, now: Duration) -> bool {
        match self.workers.get_mut(&worker) {
            Some(w) if w.alive => {
                w.last_seen = w.last_seen.max(now);
                true
            }
            _ => false,
        }
    }

    /// Declares silent workers dead. Call periodically.
    pub fn tick(&mut self, now: Duration) {
        if self.finished() {
            return;
        }
        let silent: Vec<WorkerId> = self
            .workers
            .iter()
            .filter(|(_, w)| w.alive && now.saturating_sub(w.last_seen) > self.cfg.worker_timeout)
            .map(|(id, _)| *id)
            .collect();
        for id in silent {
            tracing::info!(worker = id, "worker silent for too long; declaring it dead");
            self.kill_worker(id);
        }
    }

    /// A worker asks for work. A worker runs one task at a time, so any
    /// attempt still recorded as running on it has been abandoned.
    pub fn request_task(&mut self, worker: WorkerId, now: Duration) -> Assignment {
        if !self.heartbeat(worker, now) {
            return if self.finished() { Assignment::Exit } else { Assignment::Reregister };
        }
        self.abandon_running(worker);
        if self.finished() {
            if let Some(w) = self.workers.get_mut(&worker) {
                w.told_exit = true;
            }
            return Assignment::Exit;
        }
        let phase = self.phase();
        let tasks = if phase == Phase::Map { &self.maps } else { &self.reduces };
        if let Some(i) = tasks.iter().position(Task::idle) {
            let id = if phase == Phase::Map { TaskId::Map(i as u32) } else { TaskId::Reduce(i as u32) };
            return self.assign(id, worker, now, false);
        }
        match self.backup_candidate(phase, worker, now) {
            Some(id) => self.assign(id, worker, now, true),
            None => Assignment::Wait,
        }
    }

    /// A worker reports the end of an attempt.
    pub fn complete(&mut self, worker: WorkerId, attempt: AttemptId, outcome: Outcome, now: Duration) -> Ack {
        if !self.heartbeat(worker, now) {
            return Ack::Unknown;
        }
        if let Some(w) = self.workers.get_mut(&worker) {
            w.running.remove(&attempt);
        }
        let Some(&id) = self.attempts.get(&attempt) else {
            return Ack::Ignored;
        };
        let task = self.task_mut(id);
        let Some(pos) = task.runs.iter().position(|r| r.attempt == attempt && r.worker == worker) else {
            // Abandoned, or another attempt already won (runs were cleared).
            if matches!(outcome, Outcome::MapDone { .. } | Outcome::ReduceDone { .. }) {
                self.stats.duplicate_completions += 1;
            }
            return Ack::Ignored;
        };
        let run = task.runs.remove(pos);
        if self.finished() {
            return Ack::Ignored;
        }
        match outcome {
            Outcome::MapDone { partition_bytes, counters } => {
                assert!(matches!(id, TaskId::Map(_)), "map outcome for {id:?}");
                assert_eq!(partition_bytes.len(), self.reduces.len(), "map output must have R partitions");
                self.finish(id, run, partition_bytes, counters, 0, now);
                Ack::Accepted
            }
            Outcome::ReduceDone { counters, shuffled_bytes } => {
                assert!(matches!(id, TaskId::Reduce(_)), "reduce outcome for {id:?}");
                self.finish(id, run, Vec::new(), counters, shuffled_bytes, now);
                Ack::Accepted
            }
            Outcome::Failed { bad_record, error } => {
                self.stats.failed_attempts += 1;
                let cfg = self.cfg.clone();
                let task = self.task_mut(id);
                let fatal = match bad_record {
                    Some(r) => {
                        *task.bad.entry(r).or_default() += 1;
                        task.record_failures += 1;
                        (task.record_failures > cfg.max_record_failures)
                            .then(|| format!("{id:?} failed {} times on bad records", task.record_failures))
                    }
                    None => {
                        task.failures += 1;
                        (task.failures >= cfg.max_task_failures)
                            .then(|| format!("{id:?} failed {} times; last error: {error}", task.failures))
                    }
                };
                tracing::warn!(?id, attempt, ?bad_record, %error, "task attempt failed");
                if let Some(e) = fatal {
                    self.error = Some(e);
                }
                Ack::Accepted
            }
            Outcome::FetchFailed { map, map_attempt, unreachable, error } => {
                self.stats.fetch_failures += 1;
                tracing::info!(?id, map, map_attempt, unreachable, %error, "map output fetch failed");
                let Some(m) = self.maps.get(map as usize) else {
                    return Ack::Ignored;
                };
                match &m.done {
                    Some(f) if f.attempt == map_attempt => {
                        let holder = f.worker;
                        if unreachable {
                            self.kill_worker(holder);
                        } else {
                            self.lose_map_output(map);
                        }
                    }
                    // Already re-run or being re-run.
                    _ => {}
                }
                Ack::Accepted
            }
        }
    }

    fn task_mut(&mut self, id: TaskId) -> &mut Task {
        match id {
            TaskId::Map(i) => &mut self.maps[i as usize],
            TaskId::Reduce(i) => &mut self.reduces[i as usize],
        }
    }

    fn finish(
        &mut self,
        id: TaskId,
        run: Running,
        partition_bytes: Vec<u64>,
        counters: Counters,
        shuffled: u64,
        now: Duration,
    ) {
        let took = now.saturating_sub(run.started);
        let task = self.task_mut(id);
        if task.done.is_some() {
            self.stats.duplicate_completions += 1;
            return;
        }
        let others: Vec<Running> = std::mem::take(&mut task.runs);
        task.done = Some(Finished { attempt: run.attempt, worker: run.worker, partition_bytes });
        task.counters = counters;
        task.shuffled_bytes = shuffled;
        for o in others {
            // The losing copy keeps running; its report will be ignored.
            if let Some(w) = self.workers.get_mut(&o.worker) {
                w.running.remove(&o.attempt);
            }
        }
        match id {
            TaskId::Map(_) => self.map_durations.push(took),
            TaskId::Reduce(_) => {
                self.reduce_durations.push(took);
                self.stats.shuffled_bytes += shuffled;
            }
        }
    }

    fn assign(&mut self, id: TaskId, worker: WorkerId, now: Duration, backup: bool) -> Assignment {
        let attempt = self.next_attempt;
        self.next_attempt += 1;
        self.attempts.insert(attempt, id);
        self.stats.attempts += 1;
        if backup {
            self.stats.backup_tasks += 1;
        }
        let skip_after = self.cfg.skip_after_failures;
        let task = self.task_mut(id);
        let try_no = task.tries;
        if !backup && try_no > 0 {
            self.stats.re_executions += 1;
        }
        let task = self.task_mut(id);
        task.tries += 1;
        task.runs.push(Running { attempt, worker, started: now });
        let skip: Vec<u64> = task.bad.iter().filter(|(_, n)| **n >= skip_after).map(|(r, _)| *r).collect();
        if let Some(w) = self.workers.get_mut(&worker) {
            w.running.insert(attempt);
        }
        match id {
            TaskId::Map(i) => {
                Assignment::Map { task: i, attempt, try_no, split: self.splits[i as usize].clone(), skip }
            }
            TaskId::Reduce(r) => {
                let sources = self
                    .maps
                    .iter()
                    .enumerate()
                    .map(|(m, t)| {
                        let f = t.done.as_ref().expect("reduce assigned before every map finished");
                        MapSource {
                            map: m as u32,
                            attempt: f.attempt,
                            addr: self.workers[&f.worker].addr.clone(),
                            bytes: f.partition_bytes[r as usize],
                        }
                    })
                    .collect();
                Assignment::Reduce { task: r, attempt, try_no, sources, skip }
            }
        }
    }

    /// The running task of `phase` most deserving of a backup on `worker`.
    fn backup_candidate(&self, phase: Phase, worker: WorkerId, now: Duration) -> Option<TaskId> {
        let (tasks, durations) = match phase {
            Phase::Map => (&self.maps, &self.map_durations),
            Phase::Reduce => (&self.reduces, &self.reduce_durations),
            _ => return None,
        };
        let mut sorted = durations.clone();
        sorted.sort();
        let median = sorted.get(sorted.len() / 2).copied().unwrap_or_default();
        let threshold = self.cfg.backup_min_runtime.max(median.mul_f64(self.cfg.backup_factor));
        tasks
            .iter()
            .enumerate()
            .filter(|(_, t)| t.done.is_none() && t.runs.len() == 1 && t.runs[0].worker != worker)
            .map(|(i, t)| (now.saturating_sub(t.runs[0].started), i))
            .filter(|(ran, _)| *ran >= threshold)
            .max()
            .map(|(_, i)| if phase == Phase::Map { TaskId::Map(i as u32) } else { TaskId::Reduce(i as u32) })
    }

    fn abandon_running(&mut self, worker: WorkerId) {
        let Some(w) = self.workers.get_mut(&worker) else { return };
        let running = std::mem::take(&mut w.running);
        for attempt in running {
            if let Some(&id) = self.attempts.get(&attempt) {
                self.task_mut(id).runs.retain(|r| r.attempt != attempt);
            }
        }
    }

    /// A map task's output is gone: run it again (if a reduce still needs it).
    fn lose_map_output(&mut self, map: u32) {
        if self.reduces.iter().all(|t| t.done.is_some()) {
            return;
        }
        let t = &mut self.maps[map as usize];
        if t.done.take().is_some() {
            tracing::info!(map, "map output lost; the task will run again");
        }
    }

    fn kill_worker(&mut self, worker: WorkerId) {
        let Some(w) = self.workers.get_mut(&worker) else { return };
        if !w.alive {
            return;
        }
        w.alive = false;
        self.stats.workers_lost += 1;
        self.abandon_running(worker);
        let held: Vec<u32> = (0..self.maps.len() as u32)
            .filter(|m| self.maps[*m as usize].done.as_ref().is_some_and(|f| f.worker == worker))
            .collect();
        for m in held {
            self.lose_map_output(m);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn splits(n: usize) -> Vec<Split> {
        (0..n)
            .map(|i| Split {
                doc: format!("in-{i}"),
                path: format!("in-{i}"),
                offset: 0,
                len: 10,
                whole: true,
            })
            .collect()
    }

    fn sched(m: usize, r: u32) -> Scheduler {
        Scheduler::new(splits(m), r, SchedulerConfig::default())
    }

    fn map_done(r: usize, c: u64) -> Outcome {
        Outcome::MapDone { partition_bytes: vec![1; r], counters: [("recs".to_string(), c)].into() }
    }

    fn reduce_done(c: u64) -> Outcome {
        Outcome::ReduceDone { counters: [("out".to_string(), c)].into(), shuffled_bytes: 5 }
    }

    /// (task, attempt) of a map assignment, panicking otherwise.
    fn as_map(a: Assignment) -> (u32, AttemptId) {
        match a {
            Assignment::Map { task, attempt, .. } => (task, attempt),
            other => panic!("expected a map task, got {other:?}"),
        }
    }

    fn as_reduce(a: Assignment) -> (u32, AttemptId, Vec<MapSource>) {
        match a {
            Assignment::Reduce { task, attempt, sources, .. } => (task, attempt, sources),
            other => panic!("expected a reduce task, got {other:?}"),
        }
    }

    /// Runs every map on `w`, returning the attempts.
    fn run_all_maps(s: &mut Scheduler, w: WorkerId, r: usize, now: Duration) {
        while s.phase() == Phase::Map {
            let (_, a) = as_map(s.request_task(w, now));
            assert_eq!(s.complete(w, a, map_done(r, 1), now), Ack::Accepted);
        }
    }

    #[test]
    fn hands_out_every_map_then_every_reduce_then_exit() {
        let mut s = sched(5, 3);
        let a = s.register("a".into(), Duration::ZERO);
        let b = s.register("b".into(), Duration::ZERO);
        let mut seen = BTreeSet::new();
        for i in 0..5 {
            let w = if i % 2 == 0 { a } else { b };
            let (t, att) = as_map(s.request_task(w, S));
            assert!(seen.insert(t));
            // Reduces are not handed out before every map finished.
            if i == 4 {
                assert_eq!(s.request_task(if w == a { b } else { a }, S), Assignment::Wait);
            }
            s.complete(w, att, map_done(3, 2), S);
        }
        assert_eq!(s.phase(), Phase::Reduce);
        let mut reduces = BTreeSet::new();
        for _ in 0..3 {
            let (r, att, sources) = as_reduce(s.request_task(a, S));
            assert_eq!(sources.len(), 5);
            assert!(sources.iter().all(|src| src.addr == "a" || src.addr == "b"));
            reduces.insert(r);
            assert_eq!(s.complete(a, att, reduce_done(1), S), Ack::Accepted);
        }
        assert_eq!(reduces.len(), 3);
        assert_eq!(s.phase(), Phase::Done);
        assert_eq!(s.request_task(b, S), Assignment::Exit);
        assert_eq!(s.workers_not_told_exit(), 1);
        assert_eq!(s.request_task(a, S), Assignment::Exit);
        assert_eq!(s.workers_not_told_exit(), 0);
        assert_eq!(s.counters()["recs"], 10);
        assert_eq!(s.counters()["out"], 3);
        assert_eq!(s.stats().re_executions, 0);
        assert_eq!(s.stats().shuffled_bytes, 15);
    }

    #[test]
    fn worker_dies_mid_map_and_its_task_reruns_elsewhere() {
        let mut s = sched(2, 1);
        let a = s.register("a".into(), Duration::ZERO);
        let b = s.register("b".into(), Duration::ZERO);
        let (ta, _) = as_map(s.request_task(a, Duration::ZERO));
        let (tb, att_b) = as_map(s.request_task(b, Duration::ZERO));
        assert_ne!(ta, tb);
        // b keeps talking; a goes silent.
        s.complete(b, att_b, map_done(1, 1), 5 * S);
        assert_eq!(s.request_task(b, 5 * S), Assignment::Wait);
        s.tick(10 * S); // exactly the timeout: not yet
        assert!(s.is_alive(a));
        s.heartbeat(b, 11 * S);
        s.tick(11 * S);
        assert!(!s.is_alive(a));
        assert_eq!(s.stats().workers_lost, 1);
        let (t, att) = as_map(s.request_task(b, 11 * S));
        assert_eq!(t, ta);
        assert_eq!(s.stats().re_executions, 1);
        assert_eq!(s.complete(b, att, map_done(1, 1), 12 * S), Ack::Accepted);
        assert_eq!(s.phase(), Phase::Reduce);
        // The dead worker comes back: told to re-register, its report ignored.
        assert_eq!(s.request_task(a, 12 * S), Assignment::Reregister);
        assert_eq!(s.complete(a, 1, map_done(1, 1), 12 * S), Ack::Unknown);
        assert_eq!(s.counters()["recs"], 2);
    }

    #[test]
    fn dead_worker_finished_maps_rerun_when_reduces_still_need_them() {
        let mut s = sched(4, 2);
        let a = s.register("a".into(), Duration::ZERO);
        let b = s.register("b".into(), Duration::ZERO);
        // a does maps 0 and 1, b does 2 and 3.
        for w in [a, a, b, b] {
            let (_, att) = as_map(s.request_task(w, S));
            s.complete(w, att, map_done(2, 1), S);
        }
        assert_eq!(s.phase(), Phase::Reduce);
        // a dies after its maps, before any reduce.
        s.heartbeat(b, 12 * S);
        s.tick(12 * S);
        assert!(!s.is_alive(a));
        assert_eq!(s.phase(), Phase::Map);
        let mut rerun = BTreeSet::new();
        for _ in 0..2 {
            let (t, att) = as_map(s.request_task(b, 12 * S));
            rerun.insert(t);
            s.complete(b, att, map_done(2, 1), 12 * S);
        }
        assert_eq!(rerun, [0, 1].into());
        assert_eq!(s.stats().re_executions, 2);
        let (_, _, sources) = as_reduce(s.request_task(b, 12 * S));
        assert!(sources.iter().all(|src| src.addr == "b"));
        // Counters stay once per task.
        assert_eq!(s.counters()["recs"], 4);
    }

    #[test]
    fn worker_dies_during_reduce() {
        let mut s = sched(2, 2);
        let a = s.register("a".into(), Duration::ZERO);
        let b = s.register("b".into(), Duration::ZERO);
        run_all_maps(&mut s, b, 2, S);
        let (r_a, _, _) = as_reduce(s.request_task(a, S));
        let (r_b, att_b, _) = as_reduce(s.request_task(b, S));
        s.complete(b, att_b, reduce_done(1), 2 * S);
        s.heartbeat(b, 15 * S);
        s.tick(15 * S);
        assert!(!s.is_alive(a));
        // a held no map outputs: only its reduce runs again.
        assert_eq!(s.phase(), Phase::Reduce);
        let (r, att, _) = as_reduce(s.request_task(b, 15 * S));
        assert_eq!(r, r_a);
        assert_ne!(r, r_b);
        s.complete(b, att, reduce_done(1), 16 * S);
        assert_eq!(s.phase(), Phase::Done);
        assert_eq!(s.counters()["out"], 2);
    }

    #[test]
    fn holder_dying_after_all_reduces_changes_nothing() {
        let mut s = sched(1, 1);
        let a = s.register("a".into(), Duration::ZERO);
        let b = s.register("b".into(), Duration::ZERO);
        run_all_maps(&mut s, a, 1, S);
        let (_, att, _) = as_reduce(s.request_task(b, S));
        s.complete(b, att, reduce_done(1), S);
        s.tick(100 * S);
        assert_eq!(s.phase(), Phase::Done);
        assert_eq!(s.stats().re_executions, 0);
    }

    #[test]
    fn unreachable_map_holder_is_declared_dead_and_its_maps_rerun() {
        let mut s = sched(2, 1);
        let a = s.register("a".into(), Duration::ZERO);
        let b = s.register("b".into(), Duration::ZERO);
        let (m0, att0) = as_map(s.request_task(a, S));
        s.complete(a, att0, map_done(1, 1), S);
        let (_, att1) = as_map(s.request_task(b, S));
        s.complete(b, att1, map_done(1, 1), S);
        let (_, ratt, sources) = as_reduce(s.request_task(b, S));
        let src = sources.iter().find(|x| x.map == m0).expect("source of m0").clone();
        assert_eq!(src.addr, "a");
        let failed = Outcome::FetchFailed {
            map: m0,
            map_attempt: src.attempt,
            unreachable: true,
            error: "connection refused".into(),
        };
        assert_eq!(s.complete(b, ratt, failed, 2 * S), Ack::Accepted);
        assert!(!s.is_alive(a));
        assert_eq!(s.phase(), Phase::Map);
        let (m, att) = as_map(s.request_task(b, 2 * S));
        assert_eq!(m, m0);
        s.complete(b, att, map_done(1, 1), 2 * S);
        let (_, _, sources) = as_reduce(s.request_task(b, 2 * S));
        assert!(sources.iter().all(|x| x.addr == "b"));
        assert_eq!(s.stats().fetch_failures, 1);
        // The reduce attempt that failed to fetch is not a task failure.
        assert_eq!(s.stats().failed_attempts, 0);
    }

    #[test]
    fn missing_output_reruns_only_that_map() {
        let mut s = sched(2, 1);
        let a = s.register("a".into(), Duration::ZERO);
        run_all_maps(&mut s, a, 1, S);
        let (_, ratt, sources) = as_reduce(s.request_task(a, S));
        let src = &sources[1];
        let failed = Outcome::FetchFailed {
            map: 1,
            map_attempt: src.attempt,
            unreachable: false,
            error: "checksum".into(),
        };
        s.complete(a, ratt, failed, S);
        assert!(s.is_alive(a));
        let (m, _) = as_map(s.request_task(a, S));
        assert_eq!(m, 1);
    }

    #[test]
    fn straggler_gets_a_backup_and_first_finisher_wins() {
        let mut s = sched(3, 1);
        let a = s.register("a".into(), Duration::ZERO);
        let b = s.register("b".into(), Duration::ZERO);
        let (slow, slow_att) = as_map(s.request_task(a, Duration::ZERO));
        for _ in 0..2 {
            let (_, att) = as_map(s.request_task(b, Duration::ZERO));
            s.complete(b, att, map_done(1, 1), S);
        }
        // Not yet: the straggler has run less than backup_min_runtime.
        assert_eq!(s.request_task(b, 2 * S), Assignment::Wait);
        s.heartbeat(a, 6 * S);
        // Never a backup on the worker running the original.
        assert_eq!(
            s.request_task(b, 6 * S),
            Assignment::Map {
                task: slow,
                attempt: 4,
                try_no: 1,
                split: splits(3)[slow as usize].clone(),
                skip: vec![]
            }
        );
        assert_eq!(s.stats().backup_tasks, 1);
        assert_eq!(s.stats().re_executions, 0);
        // Only one backup per task.
        let c = s.register("c".into(), 6 * S);
        assert_eq!(s.request_task(c, 6 * S), Assignment::Wait);
        assert_eq!(s.complete(b, 4, map_done(1, 7), 7 * S), Ack::Accepted);
        assert_eq!(s.phase(), Phase::Reduce);
        // The original finishes later: ignored, counters not doubled.
        assert_eq!(s.complete(a, slow_att, map_done(1, 7), 8 * S), Ack::Ignored);
        assert_eq!(s.stats().duplicate_completions, 1);
        assert_eq!(s.counters()["recs"], 9);
        let (_, _, sources) = as_reduce(s.request_task(c, 8 * S));
        assert_eq!(sources[slow as usize].addr, "b");
    }

    #[test]
    fn backup_threshold_follows_the_median_task() {
        let mut s = sched(3, 1);
        let a = s.register("a".into(), Duration::ZERO);
        let b = s.register("b".into(), Duration::ZERO);
        let (_, _) = as_map(s.request_task(a, Duration::ZERO));
        for _ in 0..2 {
            let (_, att) = as_map(s.request_task(b, Duration::ZERO));
            s.complete(b, att, map_done(1, 1), 4 * S); // typical task: 4 s
        }
        s.heartbeat(a, 7 * S);
        assert_eq!(s.request_task(b, 7 * S), Assignment::Wait); // 7 s < 2 x 4 s
        s.heartbeat(a, 8 * S);
        assert!(matches!(s.request_task(b, 8 * S), Assignment::Map { .. }));
    }

    #[test]
    fn duplicate_reduce_completion_counts_once() {
        let mut s = sched(1, 1);
        let a = s.register("a".into(), Duration::ZERO);
        let b = s.register("b".into(), Duration::ZERO);
        run_all_maps(&mut s, a, 1, Duration::ZERO);
        let (_, att_a, _) = as_reduce(s.request_task(a, Duration::ZERO));
        s.heartbeat(a, 6 * S);
        let (_, att_b, _) = as_reduce(s.request_task(b, 6 * S));
        assert_eq!(s.stats().backup_tasks, 1);
        assert_eq!(s.complete(a, att_a, reduce_done(3), 7 * S), Ack::Accepted);
        assert_eq!(s.complete(b, att_b, reduce_done(3), 7 * S), Ack::Ignored);
        assert_eq!(s.counters()["out"], 3);
        assert_eq!(s.stats().shuffled_bytes, 5);
        assert_eq!(s.phase(), Phase::Done);
    }

    #[test]
    fn bad_record_is_skipped_after_two_failures() {
        let mut s = sched(1, 1);
        let a = s.register("a".into(), Duration::ZERO);
        let fail = || Outcome::Failed { bad_record: Some(7), error: "panicked".into() };
        for try_no in 0..2 {
            match s.request_task(a, S) {
                Assignment::Map { attempt, skip, try_no: t, .. } => {
                    assert!(skip.is_empty());
                    assert_eq!(t, try_no);
                    s.complete(a, attempt, fail(), S);
                }
                other => panic!("{other:?}"),
            }
        }
        match s.request_task(a, S) {
            Assignment::Map { attempt, skip, .. } => {
                assert_eq!(skip, vec![7]);
                s.complete(a, attempt, map_done(1, 1), S);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(s.stats().failed_attempts, 2);
        assert_eq!(s.stats().re_executions, 2);
        assert_eq!(s.phase(), Phase::Reduce);
    }

    #[test]
    fn repeated_plain_failures_fail_the_job_and_workers_exit() {
        let mut s = sched(1, 1);
        let a = s.register("a".into(), Duration::ZERO);
        for _ in 0..4 {
            let (_, att) = as_map(s.request_task(a, S));
            s.complete(a, att, Outcome::Failed { bad_record: None, error: "exit status 1".into() }, S);
        }
        assert_eq!(s.phase(), Phase::Failed);
        assert!(s.error().is_some_and(|e| e.contains("exit status 1")));
        assert_eq!(s.request_task(a, S), Assignment::Exit);
    }

    #[test]
    fn asking_again_abandons_the_previous_attempt() {
        let mut s = sched(2, 1);
        let a = s.register("a".into(), Duration::ZERO);
        let (t0, att0) = as_map(s.request_task(a, S));
        // The reply was lost; the worker asks again: the first attempt is
        // abandoned and its task is handed out afresh.
        let (t1, att1) = as_map(s.request_task(a, S));
        assert_eq!(t0, t1);
        assert_ne!(att0, att1);
        let b = s.register("b".into(), S);
        let (t, _) = as_map(s.request_task(b, S));
        assert_ne!(t, t0);
        // A late report of the abandoned attempt changes nothing.
        assert_eq!(s.complete(a, att0, map_done(1, 1), S), Ack::Ignored);
        assert_eq!(s.complete(a, att1, map_done(1, 1), S), Ack::Accepted);
    }

    #[test]
    fn many_tasks_few_workers_all_finish_once() {
        let mut s = sched(50, 7);
        let ws: Vec<WorkerId> = (0..3).map(|i| s.register(format!("w{i}"), Duration::ZERO)).collect();
        let mut now = Duration::ZERO;
        let mut pending: Vec<(WorkerId, AttemptId, bool)> = Vec::new();
        while s.phase() != Phase::Done {
            now += Duration::from_millis(100);
            for &w in &ws {
                if pending.iter().any(|p| p.0 == w) {
                    continue;
                }
                match s.request_task(w, now) {
                    Assignment::Map { attempt, .. } => pending.push((w, attempt, true)),
                    Assignment::Reduce { attempt, .. } => pending.push((w, attempt, false)),
                    Assignment::Wait => {}
                    other => panic!("{other:?}"),
                }
            }
            if let Some((w, att, is_map)) = pending.pop() {
                let o = if is_map { map_done(7, 1) } else { reduce_done(1) };
                assert_eq!(s.complete(w, att, o, now), Ack::Accepted);
            }
        }
        assert_eq!(s.counters()["recs"], 50);
        assert_eq!(s.counters()["out"], 7);
        assert_eq!(s.stats().attempts, 57);
    }
}
