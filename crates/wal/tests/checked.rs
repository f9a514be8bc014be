//! Checked metadata files: round trip, and any damage is an error.
#![allow(clippy::unwrap_used)]

use shoal_wal::{read_checked, write_checked, Dir, MemDir, OsDir, WalError};

#[test]
fn round_trip_mem_and_os() {
    let tmp = tempfile::tempdir().unwrap();
    let mut dirs: Vec<Box<dyn Dir>> =
        vec![Box::new(MemDir::new()), Box::new(OsDir::open(tmp.path()).unwrap())];
    for d in dirs.iter_mut() {
        assert_eq!(read_checked(d, "meta").unwrap(), None);
        write_checked(d, "meta", b"term=3 vote=2").unwrap();
        assert_eq!(read_checked(d, "meta").unwrap().unwrap(), b"term=3 vote=2");
        write_checked(d, "meta", b"").unwrap();
        assert_eq!(read_checked(d, "meta").unwrap().unwrap(), b"");
        write_checked(d, "meta", &[7u8; 10_000]).unwrap();
        assert_eq!(read_checked(d, "meta").unwrap().unwrap(), vec![7u8; 10_000]);
    }
}

#[test]
fn every_flipped_bit_is_an_error() {
    let mut mem = MemDir::new();
    write_checked(&mut mem, "f", b"some metadata payload").unwrap();
    let bytes = mem.read("f").unwrap().unwrap();
    for bit in 0..bytes.len() as u64 * 8 {
        mem.write_atomic("f", &bytes).unwrap();
        mem.flip_bit("f", bit);
        match read_checked(&mem, "f") {
            Err(WalError::Corrupt { name, .. }) => assert_eq!(name, "f"),
            other => panic!("bit {bit}: expected Corrupt, got {other:?}"),
        }
    }
}

#[test]
fn truncated_or_extended_is_an_error() {
    let mut mem = MemDir::new();
    write_checked(&mut mem, "f", b"payload").unwrap();
    let bytes = mem.read("f").unwrap().unwrap();
    for len in 0..bytes.len() {
        mem.write_atomic("f", &bytes[..len]).unwrap();
        assert!(read_checked(&mem, "f").is_err(), "truncated to {len}");
    }
    let mut longer = bytes.clone();
    longer.push(0);
    mem.write_atomic("f", &longer).unwrap();
    assert!(read_checked(&mem, "f").is_err());
}
