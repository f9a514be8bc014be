//! User code as a Rust trait (MR-7), the contexts it runs in, and the
//! registry that resolves an app by name on every worker.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, Write};
use std::sync::Arc;

use crate::{counter, hash_partition, Counters, MrError};

/// How an app's input is cut into records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputFormat {
    /// One record per line (without its `\n`); large files are split.
    Lines,
    /// One record per input file: its whole contents (the 6.824 apps).
    WholeFile,
}

/// Where a task runs, for apps that care (seeds, test apps).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskInfo {
    /// Map or reduce task index.
    pub task: u32,
    pub attempt: u64,
    /// Attempts of this task started before this one.
    pub try_no: u32,
    /// A seed derived from the job seed, the task and the attempt.
    pub seed: u64,
    pub reduces: u32,
}

/// A MapReduce application. Map and reduce must be deterministic functions
/// of their input (MR-3): a task may run more than once.
pub trait MapReduce: Send + Sync + 'static {
    /// Called once per input record. `doc` is the input file's name.
    fn map(&self, ctx: &mut MapContext<'_>, doc: &str, record: &[u8]);

    /// Called once per distinct key, in increasing key order, with every
    /// value emitted for it (in map-task order, then emission order).
    fn reduce(&self, ctx: &mut ReduceContext<'_>, key: &[u8], values: &[&[u8]]);

    /// Whether [`MapReduce::combine`] should run on map output.
    fn has_combiner(&self) -> bool {
        false
    }

    /// Merges the values of one key on the map side; emits the new values.
    fn combine(&self, key: &[u8], values: &[&[u8]], emit: &mut dyn FnMut(&[u8])) {
        let _ = key;
        for v in values {
            emit(v);
        }
    }

    /// The reduce task of `key`; must return a value below `reduces`.
    fn partition(&self, key: &[u8], reduces: u32) -> u32 {
        hash_partition(key, reduces)
    }

    fn input_format(&self) -> InputFormat {
        InputFormat::Lines
    }

    /// Partition by key ranges sampled from the map output of the input's
    /// first records, so concatenated outputs are globally sorted.
    fn range_partitioned(&self) -> bool {
        false
    }
}

/// What a map call can do: emit key/value pairs, bump counters.
pub struct MapContext<'a> {
    pub(crate) sink: &'a mut dyn FnMut(&[u8], &[u8]),
    pub(crate) counters: &'a mut Counters,
    pub(crate) info: TaskInfo,
}

impl fmt::Debug for MapContext<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MapContext").field("info", &self.info).finish_non_exhaustive()
    }
}

impl MapContext<'_> {
    pub fn emit(&mut self, key: &[u8], value: &[u8]) {
        (self.sink)(key, value);
    }

    /// Adds `n` to the user counter `name`.
    pub fn count(&mut self, name: &str, n: u64) {
        add(self.counters, name, n);
    }

    pub fn info(&self) -> TaskInfo {
        self.info
    }
}

/// What a reduce call can do: write output lines, bump counters.
pub struct ReduceContext<'a> {
    pub(crate) out: &'a mut dyn Write,
    pub(crate) key: &'a [u8],
    pub(crate) counters: &'a mut Counters,
    pub(crate) error: Option<io::Error>,
    pub(crate) info: TaskInfo,
}

impl fmt::Debug for ReduceContext<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReduceContext").field("info", &self.info).finish_non_exhaustive()
    }
}

impl ReduceContext<'_> {
    /// Writes the line `key value`.
    pub fn emit(&mut self, value: &[u8]) {
        let key = self.key;
        self.write(&[key, b" ", value, b"\n"]);
    }

    /// Writes `line` as it is (plus `\n`), without the key.
    pub fn emit_line(&mut self, line: &[u8]) {
        self.write(&[line, b"\n"]);
    }

    fn write(&mut self, parts: &[&[u8]]) {
        if self.error.is_some() {
            return;
        }
        add(self.counters, counter::REDUCE_OUTPUT_RECORDS, 1);
        for p in parts {
            if let Err(e) = self.out.write_all(p) {
                self.error = Some(e);
                return;
            }
        }
    }

    pub fn count(&mut self, name: &str, n: u64) {
        add(self.counters, name, n);
    }

    pub fn info(&self) -> TaskInfo {
        self.info
    }
}

pub(crate) fn add(c: &mut Counters, name: &str, n: u64) {
    match c.get_mut(name) {
        Some(v) => *v += n,
        None => {
            c.insert(name.to_string(), n);
        }
    }
}

type Factory = Arc<dyn Fn(&[String]) -> Result<Arc<dyn MapReduce>, String> + Send + Sync>;

/// Apps by name. [`AppRegistry::default`] holds the built-ins; a user's own
/// binary adds its apps with [`AppRegistry::register`] and runs
/// [`crate::run_worker`] with the registry.
#[derive(Clone)]
pub struct AppRegistry {
    apps: BTreeMap<String, Factory>,
}

impl fmt::Debug for AppRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.apps.keys()).finish()
    }
}

impl Default for AppRegistry {
    fn default() -> Self {
        let mut r = AppRegistry::empty();
        crate::apps::register_builtins(&mut r);
        r
    }
}

impl AppRegistry {
    pub fn empty() -> Self {
        AppRegistry { apps: BTreeMap::new() }
    }

    /// Registers `name`; `make` builds the app from the job's arguments.
    pub fn register<F>(&mut self, name: &str, make: F)
    where
        F: Fn(&[String]) -> Result<Arc<dyn MapReduce>, String> + Send + Sync + 'static,
    {
        self.apps.insert(name.to_string(), Arc::new(make));
    }

    /// Registers an app that takes no arguments.
    pub fn register_app(&mut self, name: &str, app: Arc<dyn MapReduce>) {
        self.register(name, move |_| Ok(app.clone()));
    }

    pub fn names(&self) -> Vec<&str> {
        self.apps.keys().map(String::as_str).collect()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.apps.contains_key(name)
    }

    pub fn resolve(&self, name: &str, args: &[String]) -> Result<Arc<dyn MapReduce>, MrError> {
        let make =
            self.apps.get(name).ok_or_else(|| MrError::UnknownApp(name.into(), self.names().join(", ")))?;
        make(args).map_err(|e| MrError::BadJob(format!("app {name}: {e}")))
    }
}
