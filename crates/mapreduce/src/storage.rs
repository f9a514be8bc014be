//! Where a job's input comes from and its output goes (MR-5 later: the
//! Shoal file system). [`LocalFs`] is the local file system.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::{InputFormat, Split};

/// Input and output of a job.
pub trait JobStorage: Send + Sync + fmt::Debug {
    /// The absolute, canonical name of an input (checks that it exists).
    fn resolve_input(&self, path: &str) -> io::Result<String>;
    fn input_len(&self, path: &str) -> io::Result<u64>;
    /// Up to `len` bytes at `offset` (fewer at the end of the input).
    fn read_input(&self, path: &str, offset: u64, len: u64) -> io::Result<Vec<u8>>;
    /// Creates the output directory if needed, checks that it is writable,
    /// and removes `mr-out-*` files left by an earlier job. Returns its
    /// absolute name.
    fn prepare_output(&self, dir: &str) -> io::Result<String>;
    /// A new output file that appears as `dir/name` only when committed.
    /// `unique` distinguishes concurrent attempts writing the same name.
    fn create_output(&self, dir: &str, name: &str, unique: u64) -> io::Result<Box<dyn OutputFile>>;
}

/// An output being written: invisible until [`OutputFile::commit`];
/// dropped without commit, it leaves nothing behind.
pub trait OutputFile: Write + Send {
    fn commit(self: Box<Self>) -> io::Result<()>;
}

/// The local file system.
#[derive(Debug, Clone, Default)]
pub struct LocalFs;

impl JobStorage for LocalFs {
    fn resolve_input(&self, path: &str) -> io::Result<String> {
        let p = fs::canonicalize(path)?;
        let meta = fs::metadata(&p)?;
        if !meta.is_file() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"));
        }
        // Opening proves it is readable.
        File::open(&p)?;
        Ok(p.to_string_lossy().into_owned())
    }

    fn input_len(&self, path: &str) -> io::Result<u64> {
        Ok(fs::metadata(path)?.len())
    }

    fn read_input(&self, path: &str, offset: u64, len: u64) -> io::Result<Vec<u8>> {
        let mut f = File::open(path)?;
        f.seek(SeekFrom::Start(offset))?;
        let mut buf = Vec::with_capacity(usize::try_from(len).unwrap_or(0).min(256 << 20));
        f.take(len).read_to_end(&mut buf)?;
        Ok(buf)
    }

    fn prepare_output(&self, dir: &str) -> io::Result<String> {
        fs::create_dir_all(dir)?;
        let abs = fs::canonicalize(dir)?;
        let probe = abs.join(format!(".mr-probe-{}", std::process::id()));
        File::create(&probe)?;
        fs::remove_file(&probe)?;
        for entry in fs::read_dir(&abs)? {
            let name = entry?.file_name();
            let name = name.to_string_lossy();
            if name.strip_prefix("mr-out-").is_some_and(|n| n.parse::<u32>().is_ok()) {
                fs::remove_file(abs.join(&*name))?;
            }
        }
        Ok(abs.to_string_lossy().into_owned())
    }

    fn create_output(&self, dir: &str, name: &str, unique: u64) -> io::Result<Box<dyn OutputFile>> {
        let dir = PathBuf::from(dir);
        let tmp = dir.join(format!(".{name}.tmp-{unique}-{}", std::process::id()));
        let file = OpenOptions::new().write(true).create(true).truncate(true).open(&tmp)?;
        Ok(Box::new(LocalOutput {
            file: Some(io::BufWriter::with_capacity(1 << 20, file)),
            final_name: dir.join(name),
            tmp,
            dir,
        }))
    }
}

struct LocalOutput {
    file: Option<io::BufWriter<File>>,
    tmp: PathBuf,
    final_name: PathBuf,
    dir: PathBuf,
}

impl Write for LocalOutput {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.file {
            Some(f) => f.write(buf),
            None => Err(io::Error::other("output already committed")),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match &mut self.file {
            Some(f) => f.write_all(buf),
            None => Err(io::Error::other("output already committed")),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.file {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

impl OutputFile for LocalOutput {
    /// Temp file, fsync, rename, directory fsync (ARCHITECTURE.md rule 4).
    fn commit(mut self: Box<Self>) -> io::Result<()> {
        let file = self.file.take().ok_or_else(|| io::Error::other("output already committed"))?;
        let file = file.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        drop(file);
        fs::rename(&self.tmp, &self.final_name)?;
        sync_dir(&self.dir)
    }
}

impl Drop for LocalOutput {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The splits of one input: one per `split_size` bytes (at least one, even
/// for an empty file), or the whole file for [`InputFormat::WholeFile`].
pub(crate) fn splits_of(doc: &str, path: &str, len: u64, split_size: u64, format: InputFormat) -> Vec<Split> {
    if format == InputFormat::WholeFile || len <= split_size {
        return vec![Split {
            doc: doc.to_string(),
            path: path.to_string(),
            offset: 0,
            len,
            whole: format == InputFormat::WholeFile,
        }];
    }
    let mut out = Vec::new();
    let mut off = 0;
    while off < len {
        let l = split_size.min(len - off);
        out.push(Split { doc: doc.to_string(), path: path.to_string(), offset: off, len: l, whole: false });
        off += l;
    }
    out
}

/// The bytes of the lines that start inside `split` (the last one read past
/// the split's end to its `\n`), or the whole file.
pub(crate) fn read_split(storage: &dyn JobStorage, split: &Split) -> io::Result<Vec<u8>> {
    if split.whole {
        let len = storage.input_len(&split.path)?;
        return storage.read_input(&split.path, 0, len);
    }
    let end = split.offset + split.len;
    let start = split.offset.saturating_sub(1);
    let mut buf = storage.read_input(&split.path, start, end - start)?;
    // Finish the last line.
    if buf.last().is_some_and(|b| *b != b'\n') {
        let mut pos = start + buf.len() as u64;
        loop {
            let more = storage.read_input(&split.path, pos, 64 << 10)?;
            if more.is_empty() {
                break;
            }
            pos += more.len() as u64;
            if let Some(i) = more.iter().position(|b| *b == b'\n') {
                buf.extend_from_slice(&more[..=i]);
                break;
            }
            buf.extend_from_slice(&more);
        }
    }
    // Skip the line that started in the previous split (the byte before
    // our offset tells whether one did).
    if split.offset > 0 {
        match buf.iter().position(|b| *b == b'\n') {
            Some(i) => {
                buf.drain(..=i);
            }
            None => buf.clear(),
        }
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_cover_every_line_exactly_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("in.txt");
        let mut text = String::new();
        for i in 0..200 {
            text.push_str(&"w".repeat(i % 13));
            text.push_str(&format!(" line{i}\n"));
        }
        text.push_str("no newline at end");
        fs::write(&path, &text).expect("write");
        let p = path.to_string_lossy().into_owned();
        for size in [1u64, 2, 7, 10, 64, 1000, 100_000] {
            let splits = splits_of(&p, &p, text.len() as u64, size, InputFormat::Lines);
            let mut got = Vec::new();
            for s in &splits {
                got.extend(read_split(&LocalFs, s).expect("read"));
            }
            assert_eq!(String::from_utf8(got).expect("utf8"), text, "split size {size}");
        }
    }

    #[test]
    fn output_appears_only_on_commit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = LocalFs.prepare_output(&dir.path().join("out").to_string_lossy()).expect("prepare");
        let mut o = LocalFs.create_output(&d, "mr-out-0", 1).expect("create");
        o.write_all(b"a 1\n").expect("write");
        assert!(!Path::new(&d).join("mr-out-0").exists());
        o.commit().expect("commit");
        assert_eq!(fs::read(Path::new(&d).join("mr-out-0")).expect("read"), b"a 1\n");
        let o = LocalFs.create_output(&d, "mr-out-1", 2).expect("create");
        drop(o);
        assert_eq!(fs::read_dir(&d).expect("ls").count(), 1);
        // A new job clears old outputs.
        LocalFs.prepare_output(&d).expect("prepare");
        assert_eq!(fs::read_dir(&d).expect("ls").count(), 0);
    }
}
