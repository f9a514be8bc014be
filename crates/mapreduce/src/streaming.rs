//! External commands, Hadoop-Streaming style (MR-7): the mapper reads the
//! task's records (lines) on stdin and writes `key<TAB>value` lines (a line
//! without a tab is a key with an empty value); the reducer reads the
//! partition's pairs sorted by key as `key<TAB>value` lines (just `key` when
//! the value is empty) and its output lines become the output, a
//! `key<TAB>value` line written as `key value`.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};

use crate::app::add;
use crate::engine::{merge_groups, Collector, MapOutput, TaskError};
use crate::runfile::Run;
use crate::{counter, hash_partition, Counters};

/// Runs `sh -c cmd` with `input` on stdin, handing each stdout line (without
/// its `\n`) to `line`.
fn pipe(
    cmd: &str,
    input: impl FnOnce(&mut dyn Write) -> std::io::Result<()> + Send,
    mut line: impl FnMut(&[u8]),
) -> Result<(), TaskError> {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| TaskError::Failed(format!("starting `{cmd}`: {e}")))?;
    let mut stdin = child.stdin.take().ok_or_else(|| TaskError::Failed("no stdin".into()))?;
    let stdout = child.stdout.take().ok_or_else(|| TaskError::Failed("no stdout".into()))?;
    let write_result = std::thread::scope(|s| {
        let writer = s.spawn(move || {
            let r = input(&mut stdin);
            drop(stdin);
            r
        });
        let mut rd = BufReader::with_capacity(1 << 16, stdout);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match rd.read_until(b'\n', &mut buf) {
                Ok(0) => break,
                Ok(_) => line(buf.strip_suffix(b"\n").unwrap_or(&buf)),
                Err(e) => return Err(TaskError::Failed(format!("reading from `{cmd}`: {e}"))),
            }
        }
        // Drain anything left so the child never blocks on a full pipe.
        let _ = rd.read_to_end(&mut Vec::new());
        writer.join().map_err(|_| TaskError::Failed("stdin writer panicked".into()))
    })?;
    let status = child.wait().map_err(|e| TaskError::Failed(format!("waiting for `{cmd}`: {e}")))?;
    if !status.success() {
        return Err(TaskError::Failed(format!("`{cmd}` exited with {status}")));
    }
    // A broken pipe is fine if the command chose not to read everything.
    if let Err(e) = write_result {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            return Err(TaskError::Failed(format!("writing to `{cmd}`: {e}")));
        }
    }
    Ok(())
}

fn split_tab(line: &[u8]) -> (&[u8], &[u8]) {
    match line.iter().position(|b| *b == b'\t') {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => (line, b""),
    }
}

pub(crate) fn map(cmd: &str, data: &[u8], reduces: u32) -> Result<MapOutput, TaskError> {
    let mut coll = Collector::default();
    let mut counters = Counters::new();
    let mut bytes = 0u64;
    pipe(
        cmd,
        |w| w.write_all(data),
        |line| {
            let (k, v) = split_tab(line);
            bytes += (k.len() + v.len()) as u64;
            coll.push(hash_partition(k, reduces), k, v);
        },
    )?;
    let lines =
        data.split(|b| *b == b'\n').count() as u64 - u64::from(data.ends_with(b"\n") || data.is_empty());
    add(&mut counters, counter::MAP_INPUT_RECORDS, lines);
    add(&mut counters, counter::MAP_OUTPUT_RECORDS, coll.len() as u64);
    add(&mut counters, counter::MAP_OUTPUT_BYTES, bytes);
    let parts = coll.into_runs(reduces, None, &mut counters);
    Ok(MapOutput { parts, counters })
}

pub(crate) fn reduce(cmd: &str, runs: &[Run], out: &mut dyn Write) -> Result<Counters, TaskError> {
    let mut counters = Counters::new();
    let mut groups = 0u64;
    let mut records = 0u64;
    let mut out_records = 0u64;
    let mut write_err = None;
    pipe(
        cmd,
        |w| {
            let mut w = std::io::BufWriter::with_capacity(1 << 16, w);
            merge_groups(runs, |_, k, vs| {
                groups += 1;
                for v in vs {
                    records += 1;
                    w.write_all(k)?;
                    if !v.is_empty() {
                        w.write_all(b"\t")?;
                        w.write_all(v)?;
                    }
                    w.write_all(b"\n")?;
                }
                Ok::<(), std::io::Error>(())
            })?;
            w.flush()
        },
        |line| {
            if write_err.is_some() {
                return;
            }
            out_records += 1;
            let (k, v) = split_tab(line);
            let r = if line.contains(&b'\t') {
                out.write_all(k).and_then(|()| out.write_all(b" ")).and_then(|()| out.write_all(v))
            } else {
                out.write_all(line)
            };
            if let Err(e) = r.and_then(|()| out.write_all(b"\n")) {
                write_err = Some(e);
            }
        },
    )?;
    if let Some(e) = write_err {
        return Err(TaskError::Failed(format!("writing output: {e}")));
    }
    add(&mut counters, counter::REDUCE_INPUT_GROUPS, groups);
    add(&mut counters, counter::REDUCE_INPUT_RECORDS, records);
    add(&mut counters, counter::REDUCE_OUTPUT_RECORDS, out_records);
    Ok(counters)
}
