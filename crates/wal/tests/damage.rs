//! Recovery from damaged files: torn tails cut at every byte, and bit
//! flips at every (or a large seeded sample of) bit positions. Recovery must
//! return exactly the records before the damage, never a damaged one.
#![allow(clippy::unwrap_used)]

mod common;

use common::{payloads, Rng};
use shoal_wal::{segment_name, CutReason, Dir, MemDir, OsDir, Wal, WalOptions};

const HEADER: usize = 8;

/// Every truncation point inside the last record: recovery returns the
/// first N-1 records, reports the cut, and the log accepts new appends
/// that read back cleanly after yet another restart.
fn torn_tail_every_offset<D: Dir>(make: impl Fn(&[u8]) -> D, recs: &[Vec<u8>]) {
    let n = recs.len();
    let last_start: usize = recs[..n - 1].iter().map(|r| HEADER + r.len()).sum();
    // Produce the real bytes with the WAL itself.
    let mem = MemDir::new();
    let (mut wal, _) = Wal::open(mem.clone(), WalOptions::default()).unwrap();
    for r in recs {
        wal.append(r).unwrap();
    }
    wal.sync().unwrap();
    drop(wal);
    let bytes = mem.read(&segment_name(1)).unwrap().unwrap();
    assert_eq!(bytes.len(), last_start + HEADER + recs[n - 1].len());

    for cut_at in last_start..bytes.len() {
        let dir = make(&bytes[..cut_at]);
        let (mut wal, rec) = Wal::open(dir, WalOptions::default()).unwrap();
        assert_eq!(rec.records, recs[..n - 1], "cut at {cut_at}");
        if cut_at == last_start {
            assert!(rec.cut.is_none(), "a clean end is not damage");
        } else {
            let cut = rec.cut.expect("cut must be reported");
            assert_eq!(cut.segment, segment_name(1));
            assert_eq!(cut.offset, last_start as u64);
            assert_eq!(cut.reason, CutReason::Torn);
            assert!(cut.dropped_segments.is_empty());
        }
        wal.append(b"after-1").unwrap();
        wal.append(b"").unwrap();
        wal.sync().unwrap();
        let (_, rec) = Wal::open(wal.into_dir(), WalOptions::default()).unwrap();
        let mut want = recs[..n - 1].to_vec();
        want.push(b"after-1".to_vec());
        want.push(Vec::new());
        assert_eq!(rec.records, want, "reopen after cut at {cut_at}");
        assert!(rec.cut.is_none(), "no garbage left between old and new");
    }
}

fn mem_with(bytes: &[u8]) -> MemDir {
    let mut mem = MemDir::new();
    if !bytes.is_empty() {
        mem.write_atomic(&segment_name(1), bytes).unwrap();
    }
    mem
}

#[test]
fn torn_tail_mem_every_offset() {
    let mut recs = payloads(10, 12, 100);
    recs.push(vec![0xAB; 300]);
    torn_tail_every_offset(mem_with, &recs);
    // An empty last record: only its header can be torn.
    let mut recs = payloads(11, 5, 50);
    recs.push(Vec::new());
    torn_tail_every_offset(mem_with, &recs);
}

#[test]
fn torn_tail_os_every_offset() {
    let root = tempfile::tempdir().unwrap();
    let counter = std::cell::Cell::new(0);
    let make = |bytes: &[u8]| {
        counter.set(counter.get() + 1);
        let mut d = OsDir::open(root.path().join(counter.get().to_string())).unwrap();
        if !bytes.is_empty() {
            d.append(&segment_name(1), bytes).unwrap();
            d.sync(&segment_name(1)).unwrap();
        }
        d
    };
    let mut recs = payloads(12, 6, 40);
    recs.push(b"the last record, torn at every byte".to_vec());
    torn_tail_every_offset(make, &recs);
}

/// A cut in an early segment drops every later one.
#[test]
fn damage_in_early_segment_drops_later_segments() {
    let mem = MemDir::new();
    let opts = WalOptions { segment_bytes: 200, ..WalOptions::default() };
    let recs = payloads(13, 60, 40);
    let (mut wal, _) = Wal::open(mem.clone(), opts).unwrap();
    let mut seg_of = Vec::new();
    for r in &recs {
        wal.append(r).unwrap();
        wal.sync().unwrap();
        seg_of.push(wal.current_segment());
    }
    let last = wal.current_segment();
    assert!(last >= 5);
    drop(wal);
    // Flip a bit in the first byte of segment 2.
    mem.flip_bit(&segment_name(2), 3);
    let first_in_2 = seg_of.iter().position(|&s| s == 2).unwrap();
    let (mut wal, rec) = Wal::open(mem.clone(), opts).unwrap();
    assert_eq!(rec.records, recs[..first_in_2]);
    let cut = rec.cut.unwrap();
    assert_eq!(cut.segment, segment_name(2));
    assert_eq!(cut.offset, 0);
    assert_eq!(cut.dropped_segments, (3..=last).map(segment_name).collect::<Vec<_>>());
    assert_eq!(wal.current_segment(), 2);
    wal.append(b"x").unwrap();
    wal.sync().unwrap();
    drop(wal);
    let (_, rec) = Wal::open(mem, opts).unwrap();
    assert_eq!(rec.records.len(), first_in_2 + 1);
    assert!(rec.cut.is_none());
}

/// Flips each chosen bit in a copy of a multi-record segment and checks
/// that recovery returns exactly the records before the damaged one.
fn check_bit_flips(recs: &[Vec<u8>], bits: impl Iterator<Item = u64>) -> usize {
    let mem = MemDir::new();
    let (mut wal, _) = Wal::open(mem.clone(), WalOptions::default()).unwrap();
    for r in recs {
        wal.append(r).unwrap();
    }
    wal.sync().unwrap();
    drop(wal);
    let bytes = mem.read(&segment_name(1)).unwrap().unwrap();
    let mut starts = Vec::new();
    let mut off = 0;
    for r in recs {
        starts.push(off);
        off += HEADER + r.len();
    }
    assert_eq!(off, bytes.len());
    let mut checked = 0;
    for bit in bits {
        let damaged = mem_with(&bytes);
        damaged.flip_bit(&segment_name(1), bit);
        let byte = (bit / 8) as usize;
        let victim = starts.iter().rposition(|&s| s <= byte).unwrap();
        let (_, rec) = Wal::open(damaged.clone(), WalOptions::default()).unwrap();
        assert_eq!(rec.records, recs[..victim], "bit {bit} (record {victim})");
        let cut = rec.cut.expect("damage must be reported");
        assert_eq!(cut.offset, starts[victim] as u64, "bit {bit}");
        let expected = match byte - starts[victim] {
            // A flipped length may point past the end of the file.
            0..=3 => None,
            _ => Some(CutReason::ChecksumMismatch),
        };
        if let Some(reason) = expected {
            assert_eq!(cut.reason, reason, "bit {bit}");
        }
        // The file was cut at the damaged record.
        let now = damaged.read(&segment_name(1)).unwrap().unwrap();
        assert_eq!(now, bytes[..starts[victim]], "bit {bit}");
        checked += 1;
    }
    checked
}

#[test]
fn every_bit_flip_in_small_segment() {
    let recs = payloads(20, 25, 60);
    let total_bits: u64 = recs.iter().map(|r| (HEADER + r.len()) as u64 * 8).sum();
    let n = check_bit_flips(&recs, 0..total_bits);
    assert!(n > 2000, "only {n} bits checked");
}

#[test]
fn sampled_bit_flips_in_big_segment() {
    let recs = payloads(21, 200, 2000);
    let total_bits: u64 = recs.iter().map(|r| (HEADER + r.len()) as u64 * 8).sum();
    let mut rng = Rng::new(99);
    let n = check_bit_flips(&recs, (0..2500).map(|_| rng.below(total_bits)));
    assert_eq!(n, 2500);
}

/// A garbled length far above the limit is reported as `TooLarge`.
#[test]
fn huge_length_is_too_large() {
    let mem = MemDir::new();
    let (mut wal, _) = Wal::open(mem.clone(), WalOptions::default()).unwrap();
    wal.append(b"ok").unwrap();
    wal.append(b"victim").unwrap();
    wal.sync().unwrap();
    drop(wal);
    mem.flip_bit(&segment_name(1), (10 + 3) * 8 + 7); // top bit of len
    let (_, rec) = Wal::open(mem, WalOptions::default()).unwrap();
    assert_eq!(rec.records, vec![b"ok".to_vec()]);
    assert_eq!(rec.cut.unwrap().reason, CutReason::TooLarge);
}
