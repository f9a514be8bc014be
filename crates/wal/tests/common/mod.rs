//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use shoal_wal::{Dir, MemDir};

/// Deterministic pseudo-random bytes (splitmix64), so tests need no `rand`.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// `n` payloads of varied sizes in `0..max_len`, each distinct (the first
/// 8 bytes carry the index when there is room).
pub fn payloads(seed: u64, n: usize, max_len: usize) -> Vec<Vec<u8>> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|i| {
            let len = rng.below(max_len as u64) as usize;
            let mut p: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            let tag = (i as u64).to_le_bytes();
            let k = p.len().min(8);
            p[..k].copy_from_slice(&tag[..k]);
            p
        })
        .collect()
}

/// A [`MemDir`] that can fail a chosen sync (a crash during fsync: the
/// appended bytes are in the simulated page cache but not durable) and can
/// make syncs slow (so concurrent writers really overlap).
#[derive(Debug, Clone)]
pub struct FaultyDir {
    pub mem: MemDir,
    /// Syncs left before one fails; `u64::MAX` = never.
    pub fail_in: Arc<AtomicU64>,
    pub sync_delay: Duration,
}

impl FaultyDir {
    pub fn new(mem: MemDir) -> FaultyDir {
        FaultyDir { mem, fail_in: Arc::new(AtomicU64::new(u64::MAX)), sync_delay: Duration::ZERO }
    }
}

impl Dir for FaultyDir {
    fn list(&self) -> io::Result<Vec<String>> {
        self.mem.list()
    }
    fn read(&self, name: &str) -> io::Result<Option<Vec<u8>>> {
        self.mem.read(name)
    }
    fn append(&mut self, name: &str, data: &[u8]) -> io::Result<()> {
        self.mem.append(name, data)
    }
    fn sync(&mut self, name: &str) -> io::Result<()> {
        if !self.sync_delay.is_zero() {
            std::thread::sleep(self.sync_delay);
        }
        let left = self.fail_in.load(Ordering::SeqCst);
        if left != u64::MAX {
            self.fail_in.store(left.saturating_sub(1), Ordering::SeqCst);
            if left == 0 {
                return Err(io::Error::other("injected fsync failure"));
            }
        }
        self.mem.sync(name)
    }
    fn truncate(&mut self, name: &str, len: u64) -> io::Result<()> {
        self.mem.truncate(name, len)
    }
    fn remove(&mut self, name: &str) -> io::Result<()> {
        self.mem.remove(name)
    }
    fn write_atomic(&mut self, name: &str, data: &[u8]) -> io::Result<()> {
        self.mem.write_atomic(name, data)
    }
}
