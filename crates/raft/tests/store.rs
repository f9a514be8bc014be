//! The Raft store under damage: torn tails at every byte offset, flipped
//! bits, and crashes at every step of a persist (including the multi-step
//! snapshot install), on the simulated disk and on real files.

#![allow(clippy::unwrap_used)]

use std::io;

use bytes::Bytes;
use shoal_raft::{
    Entry, EntryKind, FileStore, HardState, NewSnapshot, Ready, Recovered, Snapshot, SnapshotMeta,
};
use shoal_sim::{run_seeds, Rng};
use shoal_wal::{segment_name, CrashMode, Dir, MemDir, OsDir};

fn entry(index: u64, term: u64, tag: u64) -> Entry {
    Entry { term, index, kind: EntryKind::Normal, data: Bytes::from(format!("{index}/{term}/{tag}")) }
}

/// What the store should hold: the model its recovery must reproduce.
#[derive(Clone, Debug, Default, PartialEq)]
struct Model {
    hard_state: HardState,
    snapshot: Option<Snapshot>,
    entries: Vec<Entry>,
}

impl Model {
    fn from(r: Recovered) -> Model {
        Model { hard_state: r.hard_state, snapshot: r.snapshot, entries: r.entries }
    }

    fn snapshot_index(&self) -> u64 {
        self.snapshot.as_ref().map_or(0, |s| s.meta.index)
    }

    fn last_index(&self) -> u64 {
        self.entries.last().map_or(self.snapshot_index(), |e| e.index)
    }

    fn last_term(&self) -> u64 {
        self.entries.last().map_or(self.snapshot.as_ref().map_or(0, |s| s.meta.term), |e| e.term)
    }

    /// Applies a Ready the way the store's contract says it must.
    fn apply(&mut self, rd: &Ready) {
        if let Some(hs) = rd.hard_state {
            self.hard_state = hs;
        }
        match &rd.snapshot {
            Some(NewSnapshot::Compacted(s)) => {
                self.entries.retain(|e| e.index > s.meta.index);
                self.snapshot = Some(s.clone());
            }
            Some(NewSnapshot::Received(s)) => {
                self.entries.clear();
                self.snapshot = Some(s.clone());
            }
            None => {}
        }
        if let Some(first) = rd.entries.first() {
            self.entries.retain(|e| e.index < first.index);
            self.entries.extend(rd.entries.iter().cloned());
        }
    }

    /// A random but well-formed next Ready.
    fn random_ready(&self, rng: &mut Rng, tag: u64) -> Ready {
        let mut rd = Ready::default();
        if rng.ratio(1, 3) {
            let term = self.hard_state.term + rng.below(2);
            let vote = if rng.ratio(1, 2) { Some(rng.range(1..4)) } else { None };
            rd.hard_state = Some(HardState { term, vote });
        }
        match rng.below(10) {
            0 if self.last_index() > self.snapshot_index() => {
                let index = rng.range(self.snapshot_index() + 1..self.last_index() + 1);
                let term = self.entries.iter().find(|e| e.index == index).unwrap().term;
                rd.snapshot = Some(NewSnapshot::Compacted(Snapshot {
                    meta: SnapshotMeta { index, term },
                    data: Bytes::from(format!("state through {index}")),
                }));
            }
            1 => {
                let index = self.last_index() + rng.range(1..5);
                let term = self.last_term() + 1;
                rd.snapshot = Some(NewSnapshot::Received(Snapshot {
                    meta: SnapshotMeta { index, term },
                    data: Bytes::from(vec![tag as u8; rng.below(300) as usize]),
                }));
            }
            _ => {}
        }
        let mut after = self.clone();
        after.apply(&rd);
        if rd.snapshot.is_some() {
            rd.log_tail = after.entries.clone();
        }
        if rng.ratio(2, 3) {
            // Append, sometimes overwriting a suffix.
            let lo = after.snapshot_index() + 1;
            let start = if after.last_index() >= lo && rng.ratio(1, 3) {
                rng.range(lo..after.last_index() + 1)
            } else {
                after.last_index() + 1
            };
            let base_term = after.last_term().max(1);
            for index in start..start + rng.range(1..6) {
                rd.entries.push(entry(index, base_term + rng.below(2), tag));
            }
            // Keep terms non-decreasing, as Raft would.
            for i in 1..rd.entries.len() {
                rd.entries[i].term = rd.entries[i].term.max(rd.entries[i - 1].term);
            }
        }
        rd
    }
}

/// The states a crash during `persist(rd)` may leave: before, after the hard
/// state, after the snapshot, after everything.
fn prefix_states(before: &Model, rd: &Ready) -> Vec<Model> {
    let mut states = vec![before.clone()];
    let mut m = before.clone();
    let parts = [
        Ready { hard_state: rd.hard_state, ..Ready::default() },
        Ready { snapshot: rd.snapshot.clone(), ..Ready::default() },
        Ready { entries: rd.entries.clone(), ..Ready::default() },
    ];
    for part in &parts {
        m.apply(part);
        states.push(m.clone());
    }
    states
}

#[test]
fn round_trip_on_disk_with_compaction() {
    let tmp = tempfile::tempdir().unwrap();
    let mut model = Model::default();
    let mut rng = Rng::new(7);
    {
        let (mut store, rec) = FileStore::open(OsDir::open(tmp.path()).unwrap()).unwrap();
        assert_eq!(Model::from(rec), model);
        for tag in 0..200 {
            let rd = model.random_ready(&mut rng, tag);
            store.persist(&rd).unwrap();
            model.apply(&rd);
        }
    }
    let (_, rec) = FileStore::open(OsDir::open(tmp.path()).unwrap()).unwrap();
    assert_eq!(Model::from(rec), model);
    // Compaction keeps the directory small: one snapshot file, few segments.
    let names = OsDir::open(tmp.path()).unwrap().list().unwrap();
    assert!(names.iter().filter(|n| n.starts_with("snap-")).count() <= 1, "{names:?}");
}

/// A Dir that fails every mutation after the first `budget`: a crash at an
/// exact step of the store's write sequence.
struct CrashingDir {
    inner: MemDir,
    budget: usize,
}

impl CrashingDir {
    fn spend(&mut self) -> io::Result<()> {
        if self.budget == 0 {
            return Err(io::Error::other("simulated crash"));
        }
        self.budget -= 1;
        Ok(())
    }
}

impl Dir for CrashingDir {
    fn list(&self) -> io::Result<Vec<String>> {
        self.inner.list()
    }
    fn read(&self, name: &str) -> io::Result<Option<Vec<u8>>> {
        self.inner.read(name)
    }
    fn append(&mut self, name: &str, data: &[u8]) -> io::Result<()> {
        self.spend()?;
        self.inner.append(name, data)
    }
    fn sync(&mut self, name: &str) -> io::Result<()> {
        self.spend()?;
        self.inner.sync(name)
    }
    fn truncate(&mut self, name: &str, len: u64) -> io::Result<()> {
        self.spend()?;
        self.inner.truncate(name, len)
    }
    fn remove(&mut self, name: &str) -> io::Result<()> {
        self.spend()?;
        self.inner.remove(name)
    }
    fn write_atomic(&mut self, name: &str, data: &[u8]) -> io::Result<()> {
        self.spend()?;
        self.inner.write_atomic(name, data)
    }
}

/// Crash at a random step of a random persist (torn writes included):
/// recovery yields exactly the state before that persist or after it.
#[test]
fn crash_at_any_step_recovers_before_or_after() {
    run_seeds("crash_at_any_step_recovers_before_or_after", 300, |seed| {
        let mut rng = Rng::new(seed);
        let disk = MemDir::new();
        let mut model = Model::default();
        let mut tag = 0;
        for _round in 0..8 {
            let budget = rng.below(60) as usize;
            let dir = CrashingDir { inner: disk.clone(), budget };
            let (mut store, rec) = FileStore::open(dir).unwrap();
            assert_eq!(Model::from(rec), model, "seed {seed}: recovery lost or invented state");
            loop {
                tag += 1;
                let rd = model.random_ready(&mut rng, tag);
                let mut after = model.clone();
                after.apply(&rd);
                let res = store.persist(&rd);
                match res {
                    Ok(()) => model = after,
                    Err(_) => {
                        drop(store);
                        let mode = if rng.ratio(1, 2) { CrashMode::Torn } else { CrashMode::LoseUnsynced };
                        disk.crash(rng.next_u64(), mode);
                        let (_, rec) = FileStore::open(disk.clone()).unwrap();
                        let got = Model::from(rec);
                        // A persist is hard state, then snapshot, then entries,
                        // each durable in turn: a crash leaves a prefix of them.
                        let steps = prefix_states(&model, &rd);
                        assert!(
                            steps.contains(&got),
                            "seed {seed}: recovered a state that is no prefix of the crashed persist\n\
                             got {got:?}\nbefore {model:?}\nafter {after:?}"
                        );
                        model = got;
                        break;
                    }
                }
            }
        }
    });
}

/// Cut the log file at every byte offset inside the last persist's record:
/// recovery returns the state before that persist, and the store works on.
#[test]
fn torn_tail_at_every_offset() {
    let disk = MemDir::new();
    let mut model = Model::default();
    let (mut store, _) = FileStore::open(disk.clone()).unwrap();
    let mut rng = Rng::new(3);
    for tag in 0..5 {
        let mut rd = model.random_ready(&mut rng, tag);
        rd.snapshot = None;
        store.persist(&rd).unwrap();
        model.apply(&rd);
    }
    let before_len = disk.read(&segment_name(1)).unwrap().unwrap().len();
    let rd = Ready {
        hard_state: Some(HardState { term: 9, vote: Some(2) }),
        entries: (1..=3).map(|i| entry(model.last_index() + i, 9, 99)).collect(),
        ..Ready::default()
    };
    store.persist(&rd).unwrap();
    drop(store);
    let mut after = model.clone();
    after.apply(&rd);
    let full = disk.read(&segment_name(1)).unwrap().unwrap();
    for cut in before_len..full.len() {
        let copy = MemDir::new();
        copy.clone().append(&segment_name(1), &full[..cut]).unwrap();
        copy.clone().sync(&segment_name(1)).unwrap();
        let (mut store, rec) = FileStore::open(copy.clone()).unwrap();
        let got = Model::from(rec);
        // The hard state and the entries are separate records: a cut between
        // them keeps the first. Anything else is the state before.
        let mut hs_only = model.clone();
        hs_only.hard_state = rd.hard_state.unwrap();
        assert!(got == model || got == hs_only, "cut at {cut}: {got:?}");
        // Appending after recovery leaves no garbage in between.
        store.persist(&rd).unwrap();
        drop(store);
        let (_, rec) = FileStore::open(copy).unwrap();
        assert_eq!(Model::from(rec), after, "cut at {cut}: re-append after recovery");
    }
}

/// A flipped bit anywhere in the log: recovery never returns a damaged
/// record; it returns a consistent earlier state (or refuses loudly).
#[test]
fn flipped_bits_never_surface() {
    let disk = MemDir::new();
    let mut rng = Rng::new(11);
    let mut model = Model::default();
    let mut history = vec![model.clone()];
    let (mut store, _) = FileStore::open(disk.clone()).unwrap();
    for tag in 0..20 {
        let mut rd = model.random_ready(&mut rng, tag);
        rd.snapshot = None;
        store.persist(&rd).unwrap();
        // A persist writes up to three records; the states in between count too.
        let mut partial = model.clone();
        if let Some(hs) = rd.hard_state {
            partial.hard_state = hs;
            history.push(partial.clone());
        }
        model.apply(&rd);
        history.push(model.clone());
    }
    drop(store);
    let name = segment_name(1);
    let len = disk.read(&name).unwrap().unwrap().len() as u64;
    for bit in (0..len * 8).step_by(7) {
        let copy = MemDir::new();
        copy.clone().append(&name, &disk.read(&name).unwrap().unwrap()).unwrap();
        copy.clone().sync(&name).unwrap();
        copy.flip_bit(&name, bit);
        if let Ok((_, rec)) = FileStore::open(copy) {
            let got = Model::from(rec);
            assert!(history.contains(&got), "bit {bit}: recovered a state that never existed: {got:?}");
        }
    }
}
