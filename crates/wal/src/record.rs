//! The on-disk record frame: `[len: u32 LE][crc32c: u32 LE][payload]`.
//!
//! The checksum covers the four length bytes *and* the payload, so a flipped
//! bit in the length cannot make us read a wrong-sized record as valid.

/// Bytes of framing in front of every payload.
pub(crate) const HEADER_LEN: usize = 8;

/// Why recovery stopped reading at a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CutReason {
    /// The record runs past the end of the file: a write that did not
    /// finish before a crash.
    Torn,
    /// The record is complete but its checksum does not match.
    ChecksumMismatch,
    /// The length field exceeds `max_record_bytes`: a garbled header.
    TooLarge,
}

impl std::fmt::Display for CutReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CutReason::Torn => "torn (incomplete) record",
            CutReason::ChecksumMismatch => "checksum mismatch",
            CutReason::TooLarge => "length field exceeds max_record_bytes",
        })
    }
}

/// Checksum of a frame: the length bytes, then the payload.
pub(crate) fn checksum(len_bytes: [u8; 4], payload: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&len_bytes), payload)
}

/// Appends one framed record to `buf`. Callers enforce the size limit; a
/// payload that does not fit the length field is a bug, hence the assert.
pub(crate) fn encode(buf: &mut Vec<u8>, payload: &[u8]) {
    let Ok(len) = u32::try_from(payload.len()) else {
        panic!("record of {} bytes reached encode", payload.len());
    };
    let len_bytes = len.to_le_bytes();
    buf.reserve(HEADER_LEN + payload.len());
    buf.extend_from_slice(&len_bytes);
    buf.extend_from_slice(&checksum(len_bytes, payload).to_le_bytes());
    buf.extend_from_slice(payload);
}

/// The outcome of decoding at one offset.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decoded<'a> {
    /// A valid record; the next one starts at `next`.
    Record { payload: &'a [u8], next: usize },
    /// Clean end of data.
    End,
    /// Damaged: recovery cuts here.
    Bad(CutReason),
    /// A complete record with a valid checksum whose length exceeds the
    /// limit: the limit was lowered after it was written. Not damage, so
    /// recovery must refuse rather than cut away good data.
    ValidButTooLarge { len: usize },
}

fn u32_at(data: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&data[at..at + 4]);
    u32::from_le_bytes(b)
}

/// Decodes the record starting at `off` (which must be within `data`).
pub(crate) fn decode_at(data: &[u8], off: usize, max: usize) -> Decoded<'_> {
    assert!(off <= data.len(), "decode offset {off} past end {}", data.len());
    let rest = data.len() - off;
    if rest == 0 {
        return Decoded::End;
    }
    if rest < HEADER_LEN {
        return Decoded::Bad(CutReason::Torn);
    }
    let len_field = u32_at(data, off);
    let crc = u32_at(data, off + 4);
    let len = len_field as usize;
    let complete = rest - HEADER_LEN >= len;
    let valid = complete && {
        let payload = &data[off + HEADER_LEN..off + HEADER_LEN + len];
        checksum(len_field.to_le_bytes(), payload) == crc
    };
    if len > max {
        return if valid { Decoded::ValidButTooLarge { len } } else { Decoded::Bad(CutReason::TooLarge) };
    }
    if !complete {
        return Decoded::Bad(CutReason::Torn);
    }
    if !valid {
        return Decoded::Bad(CutReason::ChecksumMismatch);
    }
    let next = off + HEADER_LEN + len;
    Decoded::Record { payload: &data[off + HEADER_LEN..next], next }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_round_trip_and_damage() {
        let mut buf = Vec::new();
        encode(&mut buf, b"abc");
        encode(&mut buf, b"");
        assert_eq!(buf.len(), 2 * HEADER_LEN + 3);
        let Decoded::Record { payload, next } = decode_at(&buf, 0, 10) else {
            panic!("first record should decode");
        };
        assert_eq!((payload, next), (&b"abc"[..], 11));
        assert_eq!(decode_at(&buf, 11, 10), Decoded::Record { payload: b"", next: 19 });
        assert_eq!(decode_at(&buf, 19, 10), Decoded::End);
        assert_eq!(decode_at(&buf[..5], 0, 10), Decoded::Bad(CutReason::Torn));
        assert_eq!(decode_at(&buf[..10], 0, 10), Decoded::Bad(CutReason::Torn));
        assert_eq!(decode_at(&buf, 0, 2), Decoded::ValidButTooLarge { len: 3 });
        let mut bad = buf.clone();
        bad[9] ^= 1;
        assert_eq!(decode_at(&bad, 0, 10), Decoded::Bad(CutReason::ChecksumMismatch));
        bad[9] ^= 1;
        bad[3] ^= 0x80; // huge length
        assert_eq!(decode_at(&bad, 0, 10), Decoded::Bad(CutReason::TooLarge));
    }
}
