//! The file-system seam.
//!
//! Everything durable in Shoal goes through [`Dir`], a deliberately tiny view
//! of one flat directory. Keeping it tiny is what lets the same WAL code run on
//! a real disk ([`OsDir`]) and on a simulated one ([`MemDir`]) whose crashes a
//! deterministic test can schedule, with the exact durability rules spelled out
//! here rather than left to whatever the host file system happens to do.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// One flat directory of named files.
///
/// Durability contract (what a crash may take away):
/// - [`append`](Dir::append) is *not* durable until [`sync`](Dir::sync) of
///   the same file returns; that includes the file's very existence.
/// - [`truncate`](Dir::truncate), [`remove`](Dir::remove) and
///   [`write_atomic`](Dir::write_atomic) are durable when they return.
pub trait Dir: Send + 'static {
    /// File names in the directory, in any order.
    fn list(&self) -> io::Result<Vec<String>>;
    /// The whole file (including not-yet-synced appends), `None` if absent.
    fn read(&self, name: &str) -> io::Result<Option<Vec<u8>>>;
    /// Appends to the file, creating it if missing. Not durable until `sync`.
    fn append(&mut self, name: &str, data: &[u8]) -> io::Result<()>;
    /// Makes the file's contents durable (fdatasync). The first sync after
    /// the file was created also makes its directory entry durable.
    fn sync(&mut self, name: &str) -> io::Result<()>;
    /// Cuts (or zero-extends) the file to `len` bytes; durable on return.
    fn truncate(&mut self, name: &str, len: u64) -> io::Result<()>;
    /// Removes the file; durable on return. Removing an absent file is `Ok`,
    /// so that recovery code can simply redo an interrupted removal.
    fn remove(&mut self, name: &str) -> io::Result<()>;
    /// Replaces the file with `data` all-or-nothing: a crash leaves either
    /// the old or the new contents, never a mix. Durable on return.
    fn write_atomic(&mut self, name: &str, data: &[u8]) -> io::Result<()>;
}

impl<T: Dir + ?Sized> Dir for Box<T> {
    fn list(&self) -> io::Result<Vec<String>> {
        (**self).list()
    }
    fn read(&self, name: &str) -> io::Result<Option<Vec<u8>>> {
        (**self).read(name)
    }
    fn append(&mut self, name: &str, data: &[u8]) -> io::Result<()> {
        (**self).append(name, data)
    }
    fn sync(&mut self, name: &str) -> io::Result<()> {
        (**self).sync(name)
    }
    fn truncate(&mut self, name: &str, len: u64) -> io::Result<()> {
        (**self).truncate(name, len)
    }
    fn remove(&mut self, name: &str) -> io::Result<()> {
        (**self).remove(name)
    }
    fn write_atomic(&mut self, name: &str, data: &[u8]) -> io::Result<()> {
        (**self).write_atomic(name, data)
    }
}

/// Rejects names that could escape the directory or that the OS would
/// misread. Both implementations apply it, so a name that works in the
/// simulator also works on disk.
fn check_name(name: &str) -> io::Result<()> {
    let bad =
        name.is_empty() || name == "." || name.contains('/') || name.contains("..") || name.contains('\0');
    if bad {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("invalid file name {name:?}")));
    }
    Ok(())
}

fn not_found(name: &str) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("no file named {name:?}"))
}

// ---------------------------------------------------------------------------
// Real disk
// ---------------------------------------------------------------------------

/// How many append handles [`OsDir`] keeps open. A WAL writes to one segment
/// at a time, so a handful is plenty; the cap only bounds descriptor use.
const MAX_OPEN_HANDLES: usize = 8;

/// A real directory on the local file system.
#[derive(Debug)]
pub struct OsDir {
    path: PathBuf,
    /// Open append handles, so each append is one `write` syscall.
    handles: HashMap<String, File>,
    /// Files created by `append` whose directory entry is not yet durable.
    unsynced_entries: HashSet<String>,
}

impl OsDir {
    /// Opens (creating if needed) the directory at `path`.
    pub fn open(path: impl AsRef<Path>) -> io::Result<OsDir> {
        let path = path.as_ref().to_path_buf();
        fs::create_dir_all(&path)?;
        // The directory itself may be new: make its entry in the parent
        // durable, or a crash could lose the whole directory.
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent)?;
        }
        Ok(OsDir { path, handles: HashMap::new(), unsynced_entries: HashSet::new() })
    }

    /// The directory's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn file_path(&self, name: &str) -> io::Result<PathBuf> {
        check_name(name)?;
        Ok(self.path.join(name))
    }

    fn sync_self(&self) -> io::Result<()> {
        sync_dir(&self.path)
    }
}

/// fsync of a directory: makes creations, renames and removals in it durable.
fn sync_dir(path: &Path) -> io::Result<()> {
    File::open(path)?.sync_all()
}

impl Dir for OsDir {
    fn list(&self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(&self.path)? {
            let entry = entry?;
            if !entry.file_type()?.is_file() {
                continue;
            }
            // Names that are not UTF-8 were not written by us; skip them.
            if let Ok(name) = entry.file_name().into_string() {
                names.push(name);
            }
        }
        Ok(names)
    }

    fn read(&self, name: &str) -> io::Result<Option<Vec<u8>>> {
        match fs::read(self.file_path(name)?) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn append(&mut self, name: &str, data: &[u8]) -> io::Result<()> {
        let path = self.file_path(name)?;
        if !self.handles.contains_key(name) {
            let file = match OpenOptions::new().append(true).open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    let f = OpenOptions::new().append(true).create_new(true).open(&path)?;
                    self.unsynced_entries.insert(name.to_string());
                    f
                }
                Err(e) => return Err(e),
            };
            if self.handles.len() >= MAX_OPEN_HANDLES {
                // Dropping a handle loses nothing: written bytes live in the
                // page cache, and `sync` reopens the file if needed.
                self.handles.clear();
            }
            self.handles.insert(name.to_string(), file);
        }
        match self.handles.get_mut(name) {
            Some(file) => file.write_all(data),
            None => unreachable!("handle inserted above"),
        }
    }

    fn sync(&mut self, name: &str) -> io::Result<()> {
        let path = self.file_path(name)?;
        match self.handles.get(name) {
            Some(file) => file.sync_data()?,
            None => File::open(&path)?.sync_data()?,
        }
        if self.unsynced_entries.contains(name) {
            self.sync_self()?;
            self.unsynced_entries.remove(name);
        }
        Ok(())
    }

    fn truncate(&mut self, name: &str, len: u64) -> io::Result<()> {
        let path = self.file_path(name)?;
        let file = OpenOptions::new().write(true).open(&path)?;
        file.set_len(len)?;
        // sync_all, not sync_data: the size is metadata we need on disk.
        file.sync_all()?;
        if self.unsynced_entries.remove(name) {
            self.sync_self()?;
        }
        Ok(())
    }

    fn remove(&mut self, name: &str) -> io::Result<()> {
        let path = self.file_path(name)?;
        self.handles.remove(name);
        self.unsynced_entries.remove(name);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        }
        self.sync_self()
    }

    fn write_atomic(&mut self, name: &str, data: &[u8]) -> io::Result<()> {
        let path = self.file_path(name)?;
        // A leading dot keeps the temp name out of every name pattern we
        // use, and `check_name` already ruled out anything odd in `name`.
        let tmp = self.path.join(format!(".{name}.tmp"));
        {
            let mut file = OpenOptions::new().write(true).create(true).truncate(true).open(&tmp)?;
            file.write_all(data)?;
            file.sync_all()?;
        }
        fs::rename(&tmp, &path)?;
        // The cached handle (if any) points at the replaced inode.
        self.handles.remove(name);
        self.unsynced_entries.remove(name);
        self.sync_self()
    }
}

// ---------------------------------------------------------------------------
// Simulated disk
// ---------------------------------------------------------------------------

/// What a simulated crash does to data that was appended but not synced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashMode {
    /// Every unsynced byte is lost (files never synced disappear).
    LoseUnsynced,
    /// Per file, a random prefix of the unsynced bytes survives, and with
    /// probability 1/2 one bit inside that surviving part is flipped: a
    /// torn, garbled last write.
    Torn,
}

#[derive(Debug, Default, Clone)]
struct MemFile {
    /// Bytes that survive any crash.
    durable: Vec<u8>,
    /// Appended after the last sync; a crash may lose or tear them.
    unsynced: Vec<u8>,
    /// Whether the directory entry itself survives a crash.
    entry_durable: bool,
}

impl MemFile {
    fn len(&self) -> usize {
        self.durable.len() + self.unsynced.len()
    }
}

#[derive(Debug, Default)]
struct MemState {
    files: BTreeMap<String, MemFile>,
    syncs: u64,
}

/// A simulated disk held in memory.
///
/// Cloning gives another handle to the *same* disk, so a test harness can
/// keep one across a simulated crash and restart of the node using it.
#[derive(Debug, Clone, Default)]
pub struct MemDir {
    state: Arc<Mutex<MemState>>,
}

impl MemDir {
    /// An empty disk.
    pub fn new() -> MemDir {
        MemDir::default()
    }

    fn lock(&self) -> MutexGuard<'_, MemState> {
        // A panic in another holder cannot leave MemState half-updated in a
        // way that matters to a test, so poisoning is ignored.
        match self.state.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Simulates power loss: applies `mode` to every file's unsynced bytes,
    /// deterministically for a given `seed`. Handles to the disk stay valid;
    /// the node using it should be dropped and reopened.
    pub fn crash(&self, seed: u64, mode: CrashMode) {
        let mut rng = SplitMix64::new(seed);
        let mut st = self.lock();
        st.files.retain(|_, f| {
            let unsynced = std::mem::take(&mut f.unsynced);
            match mode {
                CrashMode::LoseUnsynced => {}
                CrashMode::Torn => {
                    let keep = rng.below(unsynced.len() as u64 + 1) as usize;
                    let start = f.durable.len();
                    f.durable.extend_from_slice(&unsynced[..keep]);
                    if keep > 0 && rng.next() & 1 == 1 {
                        let bit = rng.below(keep as u64 * 8) as usize;
                        f.durable[start + bit / 8] ^= 1 << (bit % 8);
                    }
                    if keep > 0 {
                        // Data reached the disk, so take the entry as having
                        // reached it too.
                        f.entry_durable = true;
                    }
                }
            }
            f.entry_durable
        });
    }

    /// Total bytes held, synced or not.
    pub fn total_bytes(&self) -> u64 {
        self.lock().files.values().map(|f| f.len() as u64).sum()
    }

    /// Number of [`Dir::sync`] calls made so far (each one models an fsync).
    pub fn sync_count(&self) -> u64 {
        self.lock().syncs
    }

    /// Flips one bit of a file (bit 0 is the low bit of byte 0), to test
    /// corruption handling. Panics if the file or the bit does not exist.
    pub fn flip_bit(&self, name: &str, bit_offset: u64) {
        let mut st = self.lock();
        let file = st.files.get_mut(name);
        let Some(file) = file else {
            panic!("flip_bit: no file named {name:?}");
        };
        let byte = (bit_offset / 8) as usize;
        assert!(
            byte < file.len(),
            "flip_bit: bit {bit_offset} is past the end of {name:?} ({} bytes)",
            file.len()
        );
        let mask = 1u8 << (bit_offset % 8);
        if byte < file.durable.len() {
            file.durable[byte] ^= mask;
        } else {
            let i = byte - file.durable.len();
            file.unsynced[i] ^= mask;
        }
    }
}

impl Dir for MemDir {
    fn list(&self) -> io::Result<Vec<String>> {
        Ok(self.lock().files.keys().cloned().collect())
    }

    fn read(&self, name: &str) -> io::Result<Option<Vec<u8>>> {
        check_name(name)?;
        Ok(self.lock().files.get(name).map(|f| {
            let mut all = Vec::with_capacity(f.len());
            all.extend_from_slice(&f.durable);
            all.extend_from_slice(&f.unsynced);
            all
        }))
    }

    fn append(&mut self, name: &str, data: &[u8]) -> io::Result<()> {
        check_name(name)?;
        let mut st = self.lock();
        let file = st.files.entry(name.to_string()).or_default();
        file.unsynced.extend_from_slice(data);
        Ok(())
    }

    fn sync(&mut self, name: &str) -> io::Result<()> {
        check_name(name)?;
        let mut st = self.lock();
        let file = st.files.get_mut(name).ok_or_else(|| not_found(name))?;
        let unsynced = std::mem::take(&mut file.unsynced);
        file.durable.extend_from_slice(&unsynced);
        file.entry_durable = true;
        st.syncs += 1;
        Ok(())
    }

    fn truncate(&mut self, name: &str, len: u64) -> io::Result<()> {
        check_name(name)?;
        let mut st = self.lock();
        let file = st.files.get_mut(name).ok_or_else(|| not_found(name))?;
        let unsynced = std::mem::take(&mut file.unsynced);
        file.durable.extend_from_slice(&unsynced);
        let len = usize::try_from(len)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "length too large"))?;
        file.durable.resize(len, 0);
        file.entry_durable = true;
        Ok(())
    }

    fn remove(&mut self, name: &str) -> io::Result<()> {
        check_name(name)?;
        self.lock().files.remove(name);
        Ok(())
    }

    fn write_atomic(&mut self, name: &str, data: &[u8]) -> io::Result<()> {
        check_name(name)?;
        let file = MemFile { durable: data.to_vec(), unsynced: Vec::new(), entry_durable: true };
        self.lock().files.insert(name.to_string(), file);
        Ok(())
    }
}

/// A tiny seeded PRNG (splitmix64): enough for crash simulation, and it keeps
/// the crate free of a `rand` dependency.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64(u64);

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform-enough value in `0..n` (`n > 0`); the modulo bias is
    /// irrelevant for fault injection.
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "SplitMix64::below(0)");
        self.next() % n
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn bad_names_rejected() {
        let tmp = tempfile::tempdir().unwrap();
        let mut os = OsDir::open(tmp.path()).unwrap();
        let mut mem = MemDir::new();
        for name in ["", ".", "a/b", "..", "a..b", "x\0y", "/abs"] {
            let e = os.append(name, b"x").unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{name:?}");
            let e = mem.append(name, b"x").unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{name:?}");
        }
    }

    /// Both implementations follow the same observable contract.
    fn contract(d: &mut dyn Dir) {
        assert_eq!(d.read("a").unwrap(), None);
        d.append("a", b"hello ").unwrap();
        d.append("a", b"world").unwrap();
        d.sync("a").unwrap();
        assert_eq!(d.read("a").unwrap().unwrap(), b"hello world");
        d.truncate("a", 5).unwrap();
        d.append("a", b"!").unwrap();
        assert_eq!(d.read("a").unwrap().unwrap(), b"hello!");
        d.write_atomic("b", b"one").unwrap();
        d.write_atomic("b", b"two").unwrap();
        assert_eq!(d.read("b").unwrap().unwrap(), b"two");
        let mut names = d.list().unwrap();
        names.sort();
        assert_eq!(names, vec!["a".to_string(), "b".to_string()]);
        d.remove("a").unwrap();
        d.remove("a").unwrap();
        assert_eq!(d.read("a").unwrap(), None);
        assert_eq!(d.sync("a").unwrap_err().kind(), io::ErrorKind::NotFound);
        assert_eq!(d.list().unwrap(), vec!["b".to_string()]);
    }

    #[test]
    fn os_dir_contract() {
        let tmp = tempfile::tempdir().unwrap();
        contract(&mut OsDir::open(tmp.path().join("sub")).unwrap());
    }

    #[test]
    fn mem_dir_contract() {
        contract(&mut MemDir::new());
    }

    #[test]
    fn os_dir_many_files_evicts_handles() {
        let tmp = tempfile::tempdir().unwrap();
        let mut d = OsDir::open(tmp.path()).unwrap();
        for round in 0..3u8 {
            for i in 0..(MAX_OPEN_HANDLES * 2) {
                d.append(&format!("f{i}"), &[round]).unwrap();
            }
        }
        for i in 0..(MAX_OPEN_HANDLES * 2) {
            d.sync(&format!("f{i}")).unwrap();
            assert_eq!(d.read(&format!("f{i}")).unwrap().unwrap(), vec![0, 1, 2]);
        }
    }

    #[test]
    fn mem_crash_modes() {
        let d0 = MemDir::new();
        let mut d = d0.clone();
        d.append("s", b"synced").unwrap();
        d.sync("s").unwrap();
        d.append("s", b"-lost").unwrap();
        d.append("never", b"gone").unwrap();
        d0.crash(1, CrashMode::LoseUnsynced);
        assert_eq!(d.read("s").unwrap().unwrap(), b"synced");
        assert_eq!(d.read("never").unwrap(), None);
        assert_eq!(d0.sync_count(), 1);
        assert_eq!(d0.total_bytes(), 6);

        let mut saw_partial = false;
        for seed in 0..200 {
            let d0 = MemDir::new();
            let mut d = d0.clone();
            d.append("s", b"synced").unwrap();
            d.sync("s").unwrap();
            d.append("s", b"0123456789").unwrap();
            d0.crash(seed, CrashMode::Torn);
            let got = d.read("s").unwrap().unwrap();
            assert!(got.starts_with(b"synced"));
            assert!(got.len() <= 16);
            saw_partial |= got.len() > 6 && got.len() < 16;
        }
        assert!(saw_partial);
    }

    #[test]
    fn flip_bit_hits_both_parts() {
        let d0 = MemDir::new();
        let mut d = d0.clone();
        d.append("f", &[0, 0]).unwrap();
        d.sync("f").unwrap();
        d.append("f", &[0]).unwrap();
        d0.flip_bit("f", 1);
        d0.flip_bit("f", 23);
        assert_eq!(d.read("f").unwrap().unwrap(), vec![2, 0, 0x80]);
    }
}
