//! A segmented write-ahead log.
//!
//! Records are framed `[len u32][crc32c u32][payload]` and appended to segment files
//! `wal-{id:020}.log`, ids increasing from 1. Segments exist so that a prefix
//! of the log can be dropped (after a snapshot) by deleting whole files
//! instead of rewriting one.
//!
//! Writes are buffered in memory by [`Wal::append`] and reach the disk only in
//! [`Wal::sync`], as one write plus one fsync for everything pending (group
//! commit). Consequently every segment except the last is always fully
//! synced, and only the tail of the last can be torn by a crash.
//!
//! Recovery ([`Wal::open`]) reads the segments in order and stops at the first
//! damaged record, cutting the log there. The rationale: a crash can only
//! damage the unsynced tail, and anything after a damaged record cannot be
//! trusted to be in order, so the valid prefix is the only safe answer.

use crate::dir::Dir;
use crate::error::WalError;
use crate::record::{self, CutReason, Decoded};

/// Tunables of a [`Wal`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalOptions {
    /// A new segment starts at the first sync after the current one has
    /// reached this size (so a segment exceeds it by at most one batch).
    pub segment_bytes: u64,
    /// Largest payload accepted by `append`. Recovery treats a length field
    /// above it as damage, so never lower it below records already written
    /// (recovery refuses to open rather than cut valid records).
    pub max_record_bytes: usize,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions { segment_bytes: 64 << 20, max_record_bytes: 64 << 20 }
    }
}

/// Where and why recovery cut the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cut {
    /// The segment file that was truncated.
    pub segment: String,
    /// Byte offset of the first bad record; the file now ends here.
    pub offset: u64,
    /// What was wrong with the record.
    pub reason: CutReason,
    /// Later segment files that were removed.
    pub dropped_segments: Vec<String>,
}

/// What [`Wal::open`] found on disk.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Recovered {
    /// Every valid record, oldest first.
    pub records: Vec<Vec<u8>>,
    /// Set if a damaged tail was cut away.
    pub cut: Option<Cut>,
    /// Each surviving segment's id and the index in `records` of its first
    /// record, oldest first, so a caller can start replay at a segment that
    /// stands on its own.
    pub segment_starts: Vec<(u64, usize)>,
}

/// The file name of segment `id`.
pub fn segment_name(id: u64) -> String {
    format!("wal-{id:020}.log")
}

/// Inverse of [`segment_name`]; `None` for any other file name, so other
/// files may share the directory.
fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("wal-")?.strip_suffix(".log")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|&id| id > 0)
}

/// A segmented write-ahead log over a [`Dir`].
///
/// Dropping a `Wal` discards whatever was appended but not synced.
#[derive(Debug)]
pub struct Wal<D: Dir> {
    dir: D,
    opts: WalOptions,
    /// Ids of the segment files that exist, ascending and contiguous.
    segments: Vec<u64>,
    /// The segment the next write goes to (its file may not exist yet).
    current: u64,
    /// Bytes in the current segment's file.
    current_len: u64,
    /// Framed records appended since the last sync.
    pending: Vec<u8>,
    /// Set when a write or fsync failed: the file's tail is unknown.
    poisoned: bool,
}

impl<D: Dir> Wal<D> {
    /// Opens the log in `dir`, recovering its records and cutting away a
    /// damaged tail (see the module docs). Appends continue at the end of
    /// the last surviving segment.
    pub fn open(mut dir: D, opts: WalOptions) -> Result<(Self, Recovered), WalError> {
        if opts.segment_bytes == 0 {
            return Err(WalError::InvalidOptions("segment_bytes must be > 0".into()));
        }
        if u32::try_from(opts.max_record_bytes).is_err() {
            return Err(WalError::InvalidOptions(format!(
                "max_record_bytes {} does not fit the u32 length field",
                opts.max_record_bytes
            )));
        }
        let mut ids: Vec<u64> = dir
            .list()
            .map_err(WalError::io("list", "."))?
            .iter()
            .filter_map(|n| parse_segment_name(n))
            .collect();
        ids.sort_unstable();

        let mut recovered = Recovered::default();
        let mut current_len = 0u64;
        for (i, &id) in ids.iter().enumerate() {
            let name = segment_name(id);
            if i > 0 && ids[i - 1] + 1 != id {
                // We only ever remove a prefix or a suffix of the segments,
                // so a hole means files vanished behind our back. Cutting
                // here would silently drop synced records: refuse instead.
                return Err(WalError::Corrupt {
                    name,
                    reason: format!("segment {} is missing", ids[i - 1] + 1),
                });
            }
            let data = dir.read(&name).map_err(WalError::io("read", &name))?.ok_or_else(|| {
                WalError::Corrupt { name: name.clone(), reason: "listed but vanished while reading".into() }
            })?;
            recovered.segment_starts.push((id, recovered.records.len()));
            let (end, bad) = decode_segment(&name, &data, opts.max_record_bytes, &mut recovered)?;
            current_len = end as u64;
            if let Some(reason) = bad {
                let cut = cut_tail(&mut dir, &ids[i..], end as u64, reason)?;
                recovered.cut = Some(cut);
                ids.truncate(i + 1);
                break;
            }
        }
        let current = ids.last().copied().unwrap_or(1);
        let wal =
            Wal { dir, opts, segments: ids, current, current_len, pending: Vec::new(), poisoned: false };
        Ok((wal, recovered))
    }

    /// Buffers one record in memory. Nothing reaches the disk until
    /// [`sync`](Wal::sync).
    pub fn append(&mut self, payload: &[u8]) -> Result<(), WalError> {
        if self.poisoned {
            return Err(WalError::Poisoned);
        }
        check_size(payload.len(), self.opts.max_record_bytes)?;
        record::encode(&mut self.pending, payload);
        Ok(())
    }

    /// Makes every appended record durable with one write and one fsync.
    /// A no-op if nothing is pending. After an error the WAL is poisoned.
    pub fn sync(&mut self) -> Result<(), WalError> {
        if self.poisoned {
            return Err(WalError::Poisoned);
        }
        if self.pending.is_empty() {
            return Ok(());
        }
        let mut batch = std::mem::take(&mut self.pending);
        let result = self.write_batch(&batch);
        batch.clear();
        self.pending = batch; // keep the allocation for the next batch
        result
    }

    /// Syncs, then starts a new segment and returns its id; later appends
    /// go there. If the current segment is still empty it is reused and its
    /// id returned. The new segment file is created (durably) right away,
    /// so segment ids never go backwards even if everything older is
    /// removed before the next write.
    pub fn rotate(&mut self) -> Result<u64, WalError> {
        self.sync()?;
        if self.current_len == 0 {
            return Ok(self.current);
        }
        let id = self.current + 1;
        let name = segment_name(id);
        self.begin_segment(id);
        let created = self.dir.append(&name, &[]).and_then(|()| self.dir.sync(&name));
        if let Err(e) = created {
            self.poisoned = true;
            return Err(WalError::io("create", &name)(e));
        }
        Ok(id)
    }

    /// Removes every segment older than `id` (oldest first, so a crash in
    /// between never leaves a hole). Use after a snapshot made the records
    /// in them unnecessary. Panics if `id` is past the current segment:
    /// that would delete records the caller has not seen yet.
    pub fn remove_segments_before(&mut self, id: u64) -> Result<(), WalError> {
        assert!(
            id <= self.current,
            "remove_segments_before({id}) but the current segment is {}",
            self.current
        );
        while let Some(&oldest) = self.segments.first() {
            if oldest >= id {
                break;
            }
            let name = segment_name(oldest);
            self.dir.remove(&name).map_err(WalError::io("remove", &name))?;
            self.segments.remove(0);
        }
        Ok(())
    }

    /// The directory, e.g. to read metadata files kept beside the log.
    pub fn dir(&self) -> &D {
        &self.dir
    }

    /// The directory, e.g. to write metadata files kept beside the log. Do
    /// not touch the `wal-*.log` files through it.
    pub fn dir_mut(&mut self) -> &mut D {
        &mut self.dir
    }

    /// Closes the log and hands back the directory. Unsynced appends are
    /// discarded, as on a crash.
    pub fn into_dir(self) -> D {
        self.dir
    }

    /// Framed bytes appended but not yet synced.
    pub fn pending_bytes(&self) -> usize {
        self.pending.len()
    }

    /// The id of the segment that receives the next write.
    pub fn current_segment(&self) -> u64 {
        self.current
    }

    /// Ids of the segment files on disk, oldest first.
    pub fn segment_ids(&self) -> &[u64] {
        &self.segments
    }

    /// The options the log was opened with.
    pub fn options(&self) -> WalOptions {
        self.opts
    }

    /// Writes already-framed records and fsyncs them: the one place bytes
    /// reach the segment files. Shared with [`crate::group`], which frames
    /// records itself so that it can do so outside the WAL's lock.
    pub(crate) fn write_batch(&mut self, batch: &[u8]) -> Result<(), WalError> {
        if self.poisoned {
            return Err(WalError::Poisoned);
        }
        assert!(self.pending.is_empty(), "write_batch with records still pending in the Wal");
        if batch.is_empty() {
            return Ok(());
        }
        if self.current_len >= self.opts.segment_bytes {
            // Everything before this point is synced, so switching files
            // needs no further fsync of the old one.
            self.begin_segment(self.current + 1);
        }
        let name = segment_name(self.current);
        if self.segments.last() != Some(&self.current) {
            self.segments.push(self.current);
        }
        if let Err(e) = self.dir.append(&name, batch) {
            self.poisoned = true;
            return Err(WalError::io("append", &name)(e));
        }
        if let Err(e) = self.dir.sync(&name) {
            self.poisoned = true;
            return Err(WalError::io("sync", &name)(e));
        }
        self.current_len += batch.len() as u64;
        Ok(())
    }

    fn begin_segment(&mut self, id: u64) {
        assert_eq!(id, self.current + 1, "segments must be contiguous");
        self.current = id;
        self.current_len = 0;
        self.segments.push(id);
    }
}

/// Rejects payloads above the configured limit.
pub(crate) fn check_size(len: usize, max: usize) -> Result<(), WalError> {
    if len > max {
        return Err(WalError::RecordTooLarge { len: len as u64, max: max as u64 });
    }
    Ok(())
}

/// Decodes every record of one segment into `out`. Returns the offset where
/// valid data ends and, if it ends in damage, why.
fn decode_segment(
    name: &str,
    data: &[u8],
    max: usize,
    out: &mut Recovered,
) -> Result<(usize, Option<CutReason>), WalError> {
    let mut off = 0;
    loop {
        match record::decode_at(data, off, max) {
            Decoded::Record { payload, next } => {
                out.records.push(payload.to_vec());
                off = next;
            }
            Decoded::End => return Ok((off, None)),
            Decoded::Bad(reason) => return Ok((off, Some(reason))),
            Decoded::ValidButTooLarge { len } => {
                return Err(WalError::Corrupt {
                    name: name.to_string(),
                    reason: format!(
                        "valid record of {len} bytes at offset {off} exceeds \
                         max_record_bytes {max}; was the limit lowered?"
                    ),
                })
            }
        }
    }
}

/// Cuts the log at `offset` of the segment `ids[0]`: truncates it there and
/// removes the segments in `ids[1..]`, newest first (a crash part-way leaves
/// a contiguous run that the next recovery cuts the same way).
fn cut_tail<D: Dir>(dir: &mut D, ids: &[u64], offset: u64, reason: CutReason) -> Result<Cut, WalError> {
    let segment = segment_name(ids[0]);
    dir.truncate(&segment, offset).map_err(WalError::io("truncate", &segment))?;
    let mut dropped_segments = Vec::new();
    for &id in ids[1..].iter().rev() {
        let name = segment_name(id);
        dir.remove(&name).map_err(WalError::io("remove", &name))?;
        dropped_segments.push(name);
    }
    dropped_segments.reverse();
    tracing::warn!(
        segment = %segment,
        offset,
        %reason,
        dropped = ?dropped_segments,
        "WAL recovery cut the log at a damaged record"
    );
    Ok(Cut { segment, offset, reason, dropped_segments })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::dir::MemDir;

    #[test]
    fn segment_names() {
        assert_eq!(segment_name(7), "wal-00000000000000000007.log");
        assert_eq!(parse_segment_name(&segment_name(7)), Some(7));
        assert_eq!(parse_segment_name(&segment_name(u64::MAX)), Some(u64::MAX));
        for bad in [
            "wal-7.log",
            "wal-00000000000000000000.log",
            "wal-0000000000000000000x.log",
            "wal-00000000000000000007.log.tmp",
            ".wal-00000000000000000007.log.tmp",
            "meta",
        ] {
            assert_eq!(parse_segment_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn options_validated() {
        let opts = WalOptions { segment_bytes: 0, ..WalOptions::default() };
        assert!(matches!(Wal::open(MemDir::new(), opts), Err(WalError::InvalidOptions(_))));
    }

    #[test]
    fn too_large_rejected_on_append() {
        let opts = WalOptions { max_record_bytes: 4, ..WalOptions::default() };
        let (mut wal, _) = Wal::open(MemDir::new(), opts).unwrap();
        wal.append(b"1234").unwrap();
        assert!(matches!(wal.append(b"12345"), Err(WalError::RecordTooLarge { len: 5, max: 4 })));
        assert_eq!(wal.pending_bytes(), 12);
    }

    #[test]
    fn lowered_limit_refuses_instead_of_cutting() {
        let mem = MemDir::new();
        let (mut wal, _) = Wal::open(mem.clone(), WalOptions::default()).unwrap();
        wal.append(b"0123456789").unwrap();
        wal.sync().unwrap();
        drop(wal);
        let opts = WalOptions { max_record_bytes: 4, ..WalOptions::default() };
        assert!(matches!(Wal::open(mem.clone(), opts), Err(WalError::Corrupt { .. })));
        let (_, rec) = Wal::open(mem, WalOptions::default()).unwrap();
        assert_eq!(rec.records, vec![b"0123456789".to_vec()]);
    }

    #[test]
    fn hole_in_segments_is_an_error() {
        let mut mem = MemDir::new();
        mem.write_atomic(&segment_name(1), b"").unwrap();
        mem.write_atomic(&segment_name(3), b"").unwrap();
        assert!(matches!(Wal::open(mem, WalOptions::default()), Err(WalError::Corrupt { .. })));
    }

    #[test]
    fn rotate_on_empty_segment_reuses_it() {
        let (mut wal, _) = Wal::open(MemDir::new(), WalOptions::default()).unwrap();
        assert_eq!(wal.rotate().unwrap(), 1);
        wal.append(b"x").unwrap();
        assert_eq!(wal.rotate().unwrap(), 2);
        assert_eq!(wal.rotate().unwrap(), 2);
        assert_eq!(wal.segment_ids(), &[1, 2]);
    }
}
