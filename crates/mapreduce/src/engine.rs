//! Running one map or reduce task's user code over bytes in memory: shared
//! by the worker and the sequential runner.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use crate::app::{add, MapContext, ReduceContext, TaskInfo};
use crate::runfile::{Run, RunWriter};
use crate::{counter, Counters, InputFormat, MapReduce};

/// One map task's output: a run per reduce partition.
#[derive(Debug)]
pub(crate) struct MapOutput {
    pub parts: Vec<Vec<u8>>,
    pub counters: Counters,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TaskError {
    /// The user function panicked on this record (map) or key group
    /// (reduce).
    Panicked {
        record: u64,
        message: String,
    },
    Failed(String),
}

impl std::fmt::Display for TaskError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TaskError::Panicked { record, message } => {
                write!(f, "user code panicked on record {record}: {message}")
            }
            TaskError::Failed(m) => f.write_str(m),
        }
    }
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic".into()
    }
}

/// How keys are assigned to reduce tasks.
#[derive(Clone)]
pub(crate) enum Partitioner {
    App(Arc<dyn MapReduce>),
    Range(Arc<Vec<Vec<u8>>>),
}

impl Partitioner {
    pub fn part(&self, key: &[u8], reduces: u32) -> u32 {
        let p = match self {
            Partitioner::App(app) => app.partition(key, reduces),
            Partitioner::Range(bounds) => bounds.partition_point(|b| b.as_slice() <= key) as u32,
        };
        assert!(p < reduces, "partitioner returned {p} for {reduces} reduce tasks");
        p
    }
}

/// Map output gathered in memory: one arena, one index entry per pair.
#[derive(Default)]
pub(crate) struct Collector {
    arena: Vec<u8>,
    entries: Vec<(u32, usize, u32, u32)>,
}

impl Collector {
    pub fn push(&mut self, part: u32, key: &[u8], value: &[u8]) {
        let off = self.arena.len();
        self.arena.extend_from_slice(key);
        self.arena.extend_from_slice(value);
        self.entries.push((part, off, key.len() as u32, value.len() as u32));
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Sorts by (partition, key), keeping emission order among equal keys,
    /// combines if asked, and encodes one run per partition.
    pub fn into_runs(
        mut self,
        reduces: u32,
        combiner: Option<&dyn MapReduce>,
        counters: &mut Counters,
    ) -> Vec<Vec<u8>> {
        let arena = &self.arena;
        let key = |e: &(u32, usize, u32, u32)| &arena[e.1..e.1 + e.2 as usize];
        let val = |e: &(u32, usize, u32, u32)| &arena[e.1 + e.2 as usize..e.1 + e.2 as usize + e.3 as usize];
        self.entries.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| key(a).cmp(key(b))));
        let mut writers: Vec<RunWriter> = (0..reduces).map(|_| RunWriter::new()).collect();
        let mut i = 0;
        let mut values: Vec<&[u8]> = Vec::new();
        while i < self.entries.len() {
            let e = &self.entries[i];
            let w = &mut writers[e.0 as usize];
            match combiner {
                None => {
                    w.push(key(e), val(e));
                    i += 1;
                }
                Some(app) => {
                    let k = key(e);
                    let mut j = i;
                    values.clear();
                    while j < self.entries.len() && self.entries[j].0 == e.0 && key(&self.entries[j]) == k {
                        values.push(val(&self.entries[j]));
                        j += 1;
                    }
                    app.combine(k, &values, &mut |v| {
                        w.push(k, v);
                        add(counters, counter::COMBINE_OUTPUT_RECORDS, 1);
                    });
                    i = j;
                }
            }
        }
        writers.into_iter().map(RunWriter::finish).collect()
    }
}

/// Calls `f(index, record)` for each record of a split's bytes.
pub(crate) fn for_each_record(data: &[u8], format: InputFormat, mut f: impl FnMut(u64, &[u8]) -> bool) {
    match format {
        InputFormat::WholeFile => {
            f(0, data);
        }
        InputFormat::Lines => {
            let body = data.strip_suffix(b"\n").unwrap_or(data);
            if data.is_empty() {
                return;
            }
            for (i, line) in body.split(|b| *b == b'\n').enumerate() {
                if !f(i as u64, line) {
                    return;
                }
            }
        }
    }
}

/// Runs `app.map` over every record of a split, skipping `skip`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn run_map(
    app: &Arc<dyn MapReduce>,
    info: TaskInfo,
    doc: &str,
    data: &[u8],
    skip: &[u64],
    partitioner: &Partitioner,
    combine: bool,
) -> Result<MapOutput, TaskError> {
    let reduces = info.reduces;
    let mut counters = Counters::new();
    let mut coll = Collector::default();
    let mut out_bytes = 0u64;
    let mut failure = None;
    let mut records = 0u64;
    for_each_record(data, app.input_format(), |i, rec| {
        if skip.contains(&i) {
            add(&mut counters, counter::SKIPPED_RECORDS, 1);
            return true;
        }
        records += 1;
        let mut user = Counters::new();
        let r = catch_unwind(AssertUnwindSafe(|| {
            let mut sink = |k: &[u8], v: &[u8]| {
                let p = partitioner.part(k, reduces);
                out_bytes += (k.len() + v.len()) as u64;
                coll.push(p, k, v);
            };
            let mut ctx = MapContext { sink: &mut sink, counters: &mut user, info };
            app.map(&mut ctx, doc, rec);
        }));
        match r {
            Ok(()) => {
                for (k, v) in user {
                    add(&mut counters, &k, v);
                }
                true
            }
            Err(p) => {
                failure = Some(TaskError::Panicked { record: i, message: panic_message(&*p) });
                false
            }
        }
    });
    if let Some(e) = failure {
        return Err(e);
    }
    add(&mut counters, counter::MAP_INPUT_RECORDS, records);
    add(&mut counters, counter::MAP_OUTPUT_RECORDS, coll.len() as u64);
    add(&mut counters, counter::MAP_OUTPUT_BYTES, out_bytes);
    let combiner = (combine && app.has_combiner()).then_some(&**app);
    let parts = catch_unwind(AssertUnwindSafe(|| coll.into_runs(reduces, combiner, &mut counters)))
        .map_err(|p| TaskError::Failed(format!("combiner panicked: {}", panic_message(&*p))))?;
    Ok(MapOutput { parts, counters })
}

/// Merges sorted runs and calls `f(group index, key, values)` once per
/// distinct key in increasing order; values in run order, then run order
/// within a run. Stops at the first error.
pub(crate) fn merge_groups<E>(
    runs: &[Run],
    mut f: impl FnMut(u64, &[u8], &[&[u8]]) -> Result<(), E>,
) -> Result<(), E> {
    let mut iters: Vec<_> = runs.iter().map(Run::iter).collect();
    let mut heap = BinaryHeap::new();
    for (i, it) in iters.iter_mut().enumerate() {
        if let Some((k, v)) = it.next() {
            heap.push(Reverse((k, i, v)));
        }
    }
    let mut values: Vec<&[u8]> = Vec::new();
    let mut group = 0u64;
    while let Some(Reverse((key, i, v))) = heap.pop() {
        values.clear();
        values.push(v);
        if let Some((k, v)) = iters[i].next() {
            heap.push(Reverse((k, i, v)));
        }
        while let Some(Reverse((k, _, _))) = heap.peek() {
            if *k != key {
                break;
            }
            let Some(Reverse((_, j, v))) = heap.pop() else { break };
            values.push(v);
            if let Some((k, v)) = iters[j].next() {
                heap.push(Reverse((k, j, v)));
            }
        }
        f(group, key, &values)?;
        group += 1;
    }
    Ok(())
}

/// Runs `app.reduce` over merged runs, writing lines to `out`.
pub(crate) fn run_reduce(
    app: &Arc<dyn MapReduce>,
    info: TaskInfo,
    runs: &[Run],
    skip: &[u64],
    out: &mut dyn Write,
) -> Result<Counters, TaskError> {
    let mut counters = Counters::new();
    merge_groups(runs, |g, key, values| {
        add(&mut counters, counter::REDUCE_INPUT_GROUPS, 1);
        add(&mut counters, counter::REDUCE_INPUT_RECORDS, values.len() as u64);
        if skip.contains(&g) {
            add(&mut counters, counter::SKIPPED_RECORDS, 1);
            return Ok(());
        }
        let mut ctx = ReduceContext { out: &mut *out, key, counters: &mut counters, error: None, info };
        let r = catch_unwind(AssertUnwindSafe(|| app.reduce(&mut ctx, key, values)));
        let error = ctx.error.take();
        match (r, error) {
            (Err(p), _) => Err(TaskError::Panicked { record: g, message: panic_message(&*p) }),
            (Ok(()), Some(e)) => Err(TaskError::Failed(format!("writing output: {e}"))),
            (Ok(()), None) => Ok(()),
        }
    })?;
    Ok(counters)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_groups_orders_keys_and_values() {
        let mk = |pairs: &[(&str, &str)]| {
            let mut w = RunWriter::new();
            for (k, v) in pairs {
                w.push(k.as_bytes(), v.as_bytes());
            }
            Run::parse(w.finish()).expect("valid")
        };
        let runs = vec![mk(&[("a", "1"), ("c", "2"), ("c", "3")]), mk(&[]), mk(&[("b", "x"), ("c", "4")])];
        let mut got = Vec::new();
        merge_groups::<()>(&runs, |g, k, vs| {
            let vs: Vec<String> = vs.iter().map(|v| String::from_utf8_lossy(v).into_owned()).collect();
            got.push((g, String::from_utf8_lossy(k).into_owned(), vs.join(",")));
            Ok(())
        })
        .expect("merge");
        assert_eq!(
            got,
            vec![(0, "a".into(), "1".into()), (1, "b".into(), "x".into()), (2, "c".into(), "2,3,4".into())]
        );
    }

    #[test]
    fn records_of_lines() {
        let mut got = Vec::new();
        for_each_record(b"a\n\nb\nc", InputFormat::Lines, |i, r| {
            got.push((i, r.to_vec()));
            true
        });
        assert_eq!(got, vec![(0, b"a".to_vec()), (1, b"".to_vec()), (2, b"b".to_vec()), (3, b"c".to_vec())]);
        let mut n = 0;
        for_each_record(b"", InputFormat::Lines, |_, _| {
            n += 1;
            true
        });
        assert_eq!(n, 0);
    }
}
