//! The intermediate run format: one sorted partition of one map task's
//! output.
//!
//! ```text
//! magic    8 bytes  "SHMRRUN1"
//! records  varint(key len) varint(value len) key value   (sorted by key)
//! trailer  u64 LE record count, u32 LE crc32c of every byte before it
//! ```
//!
//! Compact (two LEB128 lengths per record) and checked as a whole: a reduce
//! worker verifies the checksum of every run it fetches before using it.

use bytes::Bytes;

pub const MAGIC: &[u8; 8] = b"SHMRRUN1";
const TRAILER: usize = 12;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunError {
    #[error("run too short ({0} bytes)")]
    Short(usize),
    #[error("bad magic")]
    Magic,
    #[error("checksum mismatch (stored {stored:08x}, computed {computed:08x})")]
    Checksum { stored: u32, computed: u32 },
    #[error("malformed record at byte {0}")]
    Malformed(usize),
    #[error("record count mismatch: trailer says {stored}, found {found}")]
    Count { stored: u64, found: u64 },
}

/// Builds one run in memory. Records must be pushed in key order.
#[derive(Debug)]
pub struct RunWriter {
    buf: Vec<u8>,
    count: u64,
}

impl Default for RunWriter {
    fn default() -> Self {
        Self::new()
    }
}

fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

fn get_varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos)?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

impl RunWriter {
    pub fn new() -> Self {
        RunWriter { buf: MAGIC.to_vec(), count: 0 }
    }

    pub fn push(&mut self, key: &[u8], value: &[u8]) {
        put_varint(&mut self.buf, key.len() as u64);
        put_varint(&mut self.buf, value.len() as u64);
        self.buf.extend_from_slice(key);
        self.buf.extend_from_slice(value);
        self.count += 1;
    }

    pub fn len(&self) -> u64 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The finished run, trailer included.
    pub fn finish(mut self) -> Vec<u8> {
        self.buf.extend_from_slice(&self.count.to_le_bytes());
        let crc = crc32c::crc32c(&self.buf);
        self.buf.extend_from_slice(&crc.to_le_bytes());
        self.buf
    }
}

/// A verified run.
#[derive(Debug, Clone)]
pub struct Run {
    data: Bytes,
    end: usize,
    count: u64,
}

impl Run {
    /// Checks magic, checksum and structure.
    pub fn parse(data: impl Into<Bytes>) -> Result<Run, RunError> {
        let data: Bytes = data.into();
        if data.len() < MAGIC.len() + TRAILER {
            return Err(RunError::Short(data.len()));
        }
        if &data[..MAGIC.len()] != MAGIC {
            return Err(RunError::Magic);
        }
        let n = data.len();
        let stored = u32::from_le_bytes([data[n - 4], data[n - 3], data[n - 2], data[n - 1]]);
        let computed = crc32c::crc32c(&data[..n - 4]);
        if stored != computed {
            return Err(RunError::Checksum { stored, computed });
        }
        let mut count_bytes = [0u8; 8];
        count_bytes.copy_from_slice(&data[n - TRAILER..n - 4]);
        let count = u64::from_le_bytes(count_bytes);
        let run = Run { data, end: n - TRAILER, count };
        let mut found = 0u64;
        let mut it = run.iter();
        while let Some(r) = it.next_record() {
            r?;
            found += 1;
        }
        if found != count {
            return Err(RunError::Count { stored: count, found });
        }
        Ok(run)
    }

    pub fn len(&self) -> u64 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn iter(&self) -> RunIter<'_> {
        RunIter { data: &self.data[..self.end], pos: MAGIC.len() }
    }
}

/// A key and its value.
pub type Record<'a> = (&'a [u8], &'a [u8]);

/// Records of a run, in order.
#[derive(Debug, Clone)]
pub struct RunIter<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> RunIter<'a> {
    fn next_record(&mut self) -> Option<Result<Record<'a>, RunError>> {
        if self.pos >= self.data.len() {
            return None;
        }
        let start = self.pos;
        let bad = || Some(Err(RunError::Malformed(start)));
        let Some(kl) = get_varint(self.data, &mut self.pos) else { return bad() };
        let Some(vl) = get_varint(self.data, &mut self.pos) else { return bad() };
        let (Ok(kl), Ok(vl)) = (usize::try_from(kl), usize::try_from(vl)) else { return bad() };
        let Some(end) = self.pos.checked_add(kl).and_then(|e| e.checked_add(vl)) else { return bad() };
        if end > self.data.len() {
            self.pos = self.data.len();
            return bad();
        }
        let key = &self.data[self.pos..self.pos + kl];
        let value = &self.data[self.pos + kl..end];
        self.pos = end;
        Some(Ok((key, value)))
    }
}

impl<'a> Iterator for RunIter<'a> {
    type Item = (&'a [u8], &'a [u8]);

    /// Records of a verified run (parse checked their structure).
    fn next(&mut self) -> Option<Self::Item> {
        self.next_record().and_then(Result::ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption() {
        let mut w = RunWriter::new();
        let big = vec![b'x'; 300];
        w.push(b"a", b"1");
        w.push(b"b", &big);
        w.push(b"", b"");
        let bytes = w.finish();
        let run = Run::parse(bytes.clone()).expect("valid");
        let recs: Vec<_> = run.iter().collect();
        assert_eq!(recs, vec![(&b"a"[..], &b"1"[..]), (&b"b"[..], &big[..]), (&b""[..], &b""[..])]);
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x40;
            assert!(Run::parse(bad).is_err(), "flipping byte {i} went unnoticed");
        }
        assert!(Run::parse(bytes[..bytes.len() - 1].to_vec()).is_err());
        assert!(Run::parse(RunWriter::new().finish()).expect("empty run").is_empty());
    }
}
