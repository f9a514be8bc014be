//! The built-in apps (MR-7): `wordcount`, `indexer`, `grep`, `sort`, and
//! the 6.824 test apps `mtiming`, `rtiming`, `jobcount`, `early_exit`,
//! `crash`, `nocrash` with their original behaviour.
//!
//! The 6.824 test apps see whole input files as one record
//! ([`InputFormat::WholeFile`]) and, like the originals, coordinate through
//! files named `mr-worker-*` in the worker's current directory.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::app::{AppRegistry, InputFormat, MapContext, MapReduce, ReduceContext};

pub(crate) fn register_builtins(r: &mut AppRegistry) {
    r.register_app("wordcount", Arc::new(WordCount));
    r.register_app("indexer", Arc::new(Indexer));
    r.register("grep", |args: &[String]| match args {
        [pattern] if !pattern.is_empty() => Ok(Arc::new(Grep { pattern: pattern.as_bytes().to_vec() }) as _),
        _ => Err("grep takes exactly one argument, the (non-empty) pattern".into()),
    });
    r.register_app("sort", Arc::new(Sort));
    r.register_app("mtiming", Arc::new(MTiming));
    r.register_app("rtiming", Arc::new(RTiming));
    r.register_app("jobcount", Arc::new(JobCount));
    r.register_app("early_exit", Arc::new(EarlyExit));
    r.register_app("crash", Arc::new(Crash { crash: true }));
    r.register_app("nocrash", Arc::new(Crash { crash: false }));
}

/// The words of `text`: maximal runs of ASCII letters, case kept.
pub fn words(text: &[u8]) -> impl Iterator<Item = &[u8]> {
    text.split(|b| !b.is_ascii_alphabetic()).filter(|w| !w.is_empty())
}

fn parse_u64(v: &[u8]) -> u64 {
    std::str::from_utf8(v).ok().and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// Word count, as 6.824's `wc`: `word count` per distinct word.
#[derive(Debug, Clone, Copy)]
pub struct WordCount;

impl MapReduce for WordCount {
    fn map(&self, ctx: &mut MapContext<'_>, _doc: &str, record: &[u8]) {
        for w in words(record) {
            ctx.emit(w, b"1");
        }
    }

    fn reduce(&self, ctx: &mut ReduceContext<'_>, _key: &[u8], values: &[&[u8]]) {
        let n: u64 = values.iter().map(|v| parse_u64(v)).sum();
        ctx.emit(n.to_string().as_bytes());
    }

    fn has_combiner(&self) -> bool {
        true
    }

    fn combine(&self, _key: &[u8], values: &[&[u8]], emit: &mut dyn FnMut(&[u8])) {
        let n: u64 = values.iter().map(|v| parse_u64(v)).sum();
        emit(n.to_string().as_bytes());
    }
}

/// Inverted index, as 6.824's `indexer`: `word N doc1,doc2,...` with the
/// documents sorted.
#[derive(Debug, Clone, Copy)]
pub struct Indexer;

impl MapReduce for Indexer {
    fn map(&self, ctx: &mut MapContext<'_>, doc: &str, record: &[u8]) {
        let mut seen: Vec<&[u8]> = words(record).collect();
        seen.sort_unstable();
        seen.dedup();
        for w in seen {
            ctx.emit(w, doc.as_bytes());
        }
    }

    fn reduce(&self, ctx: &mut ReduceContext<'_>, _key: &[u8], values: &[&[u8]]) {
        let mut docs: Vec<&[u8]> = values.to_vec();
        docs.sort_unstable();
        docs.dedup();
        let mut out = docs.len().to_string().into_bytes();
        out.push(b' ');
        out.extend_from_slice(&docs.join(&b","[..]));
        ctx.emit(&out);
    }

    fn has_combiner(&self) -> bool {
        true
    }

    fn combine(&self, _key: &[u8], values: &[&[u8]], emit: &mut dyn FnMut(&[u8])) {
        let mut docs: Vec<&[u8]> = values.to_vec();
        docs.sort_unstable();
        docs.dedup();
        for d in docs {
            emit(d);
        }
    }
}

/// Lines containing a pattern: `doc line`, in input order per document.
#[derive(Debug, Clone)]
pub struct Grep {
    pub pattern: Vec<u8>,
}

impl MapReduce for Grep {
    fn map(&self, ctx: &mut MapContext<'_>, doc: &str, record: &[u8]) {
        if record.windows(self.pattern.len()).any(|w| w == self.pattern.as_slice()) {
            ctx.emit(doc.as_bytes(), record);
        }
    }

    fn reduce(&self, ctx: &mut ReduceContext<'_>, _key: &[u8], values: &[&[u8]]) {
        for v in values {
            ctx.emit(v);
        }
    }
}

/// Distributed sort of lines: range-partitioned on a sample of the input,
/// so `cat mr-out-0 mr-out-1 ...` is sorted (byte order) as a whole.
#[derive(Debug, Clone, Copy)]
pub struct Sort;

impl MapReduce for Sort {
    fn map(&self, ctx: &mut MapContext<'_>, _doc: &str, record: &[u8]) {
        ctx.emit(record, b"");
    }

    fn reduce(&self, ctx: &mut ReduceContext<'_>, key: &[u8], values: &[&[u8]]) {
        for _ in values {
            ctx.emit_line(key);
        }
    }

    fn range_partitioned(&self) -> bool {
        true
    }
}

/// A number below `n` from a seed.
fn below(seed: u64, n: u64) -> u64 {
    crate::mix64(seed) % n.max(1)
}

/// 6.824's `nparallel`: announce ourselves with a file, count the live
/// processes that did the same, linger a second, withdraw.
fn nparallel(phase: &str) -> usize {
    let pid = std::process::id();
    let mine = format!("mr-worker-{phase}-{pid}");
    let _ = std::fs::write(&mine, b"x");
    let prefix = format!("mr-worker-{phase}-");
    let mut n = 0;
    if let Ok(dir) = std::fs::read_dir(".") {
        for e in dir.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if let Some(p) = name.strip_prefix(&prefix).and_then(|p| p.parse::<u32>().ok()) {
                if std::path::Path::new(&format!("/proc/{p}")).exists() {
                    n += 1;
                }
            }
        }
    }
    std::thread::sleep(Duration::from_secs(1));
    let _ = std::fs::remove_file(&mine);
    n
}

fn sorted_joined(values: &[&[u8]]) -> Vec<u8> {
    let mut vv: Vec<&[u8]> = values.to_vec();
    vv.sort_unstable();
    vv.join(&b" "[..])
}

/// 6.824's `mtiming`: map tasks report how many ran at once.
#[derive(Debug, Clone, Copy)]
pub struct MTiming;

impl MapReduce for MTiming {
    fn map(&self, ctx: &mut MapContext<'_>, _doc: &str, _record: &[u8]) {
        let ts = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
        let pid = std::process::id();
        let n = nparallel("map");
        ctx.emit(format!("times-{pid}").as_bytes(), format!("{ts:.1}").as_bytes());
        ctx.emit(format!("parallel-{pid}").as_bytes(), n.to_string().as_bytes());
    }

    fn reduce(&self, ctx: &mut ReduceContext<'_>, _key: &[u8], values: &[&[u8]]) {
        ctx.emit(&sorted_joined(values));
    }

    fn input_format(&self) -> InputFormat {
        InputFormat::WholeFile
    }
}

/// 6.824's `rtiming`: reduce tasks report how many ran at once.
#[derive(Debug, Clone, Copy)]
pub struct RTiming;

impl MapReduce for RTiming {
    fn map(&self, ctx: &mut MapContext<'_>, _doc: &str, _record: &[u8]) {
        for k in b'a'..=b'j' {
            ctx.emit(&[k], b"1");
        }
    }

    fn reduce(&self, ctx: &mut ReduceContext<'_>, _key: &[u8], _values: &[&[u8]]) {
        let n = nparallel("reduce");
        ctx.emit(n.to_string().as_bytes());
    }

    fn input_format(&self) -> InputFormat {
        InputFormat::WholeFile
    }
}

static JOBCOUNT_CALLS: AtomicU64 = AtomicU64::new(0);

/// 6.824's `jobcount`: every map call leaves a file behind; reduce counts
/// them, so the output is the number of map executions.
#[derive(Debug, Clone, Copy)]
pub struct JobCount;

impl MapReduce for JobCount {
    fn map(&self, ctx: &mut MapContext<'_>, _doc: &str, _record: &[u8]) {
        let n = JOBCOUNT_CALLS.fetch_add(1, Ordering::Relaxed);
        let name = format!("mr-worker-jobcount-{}-{n}", std::process::id());
        if let Err(e) = std::fs::write(&name, b"x") {
            panic!("jobcount: writing {name}: {e}");
        }
        std::thread::sleep(Duration::from_millis(2000 + below(ctx.info().seed, 3000)));
        ctx.emit(b"a", b"x");
    }

    fn reduce(&self, ctx: &mut ReduceContext<'_>, _key: &[u8], _values: &[&[u8]]) {
        let n = std::fs::read_dir(".")
            .map(|d| {
                d.flatten()
                    .filter(|e| e.file_name().to_string_lossy().starts_with("mr-worker-jobcount"))
                    .count()
            })
            .unwrap_or(0);
        ctx.emit(n.to_string().as_bytes());
    }

    fn input_format(&self) -> InputFormat {
        InputFormat::WholeFile
    }
}

/// 6.824's `early_exit`: some reduces take long, to catch workers or a
/// coordinator that exit before every output is final.
#[derive(Debug, Clone, Copy)]
pub struct EarlyExit;

impl MapReduce for EarlyExit {
    fn map(&self, ctx: &mut MapContext<'_>, doc: &str, _record: &[u8]) {
        ctx.emit(doc.as_bytes(), b"1");
    }

    fn reduce(&self, ctx: &mut ReduceContext<'_>, key: &[u8], values: &[&[u8]]) {
        let k = String::from_utf8_lossy(key);
        if k.contains("sherlock") || k.contains("tom") {
            std::thread::sleep(Duration::from_secs(3));
        }
        ctx.emit(values.len().to_string().as_bytes());
    }

    fn input_format(&self) -> InputFormat {
        InputFormat::WholeFile
    }
}

/// 6.824's `crash` and `nocrash`. With `crash`, at the start of every map
/// and reduce call the process exits with probability 1/3 and sleeps
/// 0–10 s with probability 1/3, drawn from the attempt's seed.
#[derive(Debug, Clone, Copy)]
pub struct Crash {
    pub crash: bool,
}

impl Crash {
    fn maybe_crash(&self, seed: u64, salt: u64) {
        if !self.crash {
            return;
        }
        let seed = crate::mix64(seed ^ salt);
        let r = below(seed, 1000);
        if r < 330 {
            eprintln!("crash app: exiting on purpose (seed {seed})");
            std::process::exit(1);
        } else if r < 660 {
            std::thread::sleep(Duration::from_millis(below(seed ^ 0x5eed, 10_000)));
        }
    }
}

impl MapReduce for Crash {
    fn map(&self, ctx: &mut MapContext<'_>, doc: &str, record: &[u8]) {
        self.maybe_crash(ctx.info().seed, 1);
        ctx.emit(b"a", doc.as_bytes());
        ctx.emit(b"b", doc.len().to_string().as_bytes());
        ctx.emit(b"c", record.len().to_string().as_bytes());
        ctx.emit(b"d", b"xyzzy");
    }

    fn reduce(&self, ctx: &mut ReduceContext<'_>, key: &[u8], values: &[&[u8]]) {
        self.maybe_crash(ctx.info().seed, crate::stable_hash(key));
        ctx.emit(&sorted_joined(values));
    }

    fn input_format(&self) -> InputFormat {
        InputFormat::WholeFile
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_runs_of_ascii_letters() {
        let w: Vec<&[u8]> = words(b"Hello, world! it's 42nd-Street\tok").collect();
        assert_eq!(w, vec![&b"Hello"[..], b"world", b"it", b"s", b"nd", b"Street", b"ok"]);
    }
}
