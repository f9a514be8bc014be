//! Checked metadata files (Raft's term and vote, snapshot manifests, ...).
//!
//! Layout: `["SHL1"][len: u32 LE][crc32c: u32 LE][payload]`, the checksum
//! over the length bytes and the payload as in WAL records. Files are
//! replaced with [`Dir::write_atomic`], so a crash leaves the old or the new
//! version; the checksum catches what atomic replacement cannot (media
//! errors, a foreign file). A damaged file is an error, never a guess.

use crate::dir::Dir;
use crate::error::WalError;
use crate::record::checksum;

const MAGIC: &[u8; 4] = b"SHL1";
const HEADER_LEN: usize = 12;

/// Atomically replaces `name` with a checked file holding `payload`.
pub fn write_checked<D: Dir + ?Sized>(dir: &mut D, name: &str, payload: &[u8]) -> Result<(), WalError> {
    let len = u32::try_from(payload.len())
        .map_err(|_| WalError::RecordTooLarge { len: payload.len() as u64, max: u64::from(u32::MAX) })?;
    let len_bytes = len.to_le_bytes();
    let mut data = Vec::with_capacity(HEADER_LEN + payload.len());
    data.extend_from_slice(MAGIC);
    data.extend_from_slice(&len_bytes);
    data.extend_from_slice(&checksum(len_bytes, payload).to_le_bytes());
    data.extend_from_slice(payload);
    dir.write_atomic(name, &data).map_err(WalError::io("write_atomic", name))
}

/// Reads a file written by [`write_checked`]: `Ok(None)` if it does not
/// exist, an error if it is damaged in any way.
pub fn read_checked<D: Dir + ?Sized>(dir: &D, name: &str) -> Result<Option<Vec<u8>>, WalError> {
    let Some(data) = dir.read(name).map_err(WalError::io("read", name))? else {
        return Ok(None);
    };
    let corrupt = |reason: String| WalError::Corrupt { name: name.to_string(), reason };
    if data.len() < HEADER_LEN {
        return Err(corrupt(format!("only {} bytes", data.len())));
    }
    if &data[..4] != MAGIC {
        return Err(corrupt("bad magic".into()));
    }
    let mut len_bytes = [0u8; 4];
    len_bytes.copy_from_slice(&data[4..8]);
    let mut crc_bytes = [0u8; 4];
    crc_bytes.copy_from_slice(&data[8..12]);
    let payload = &data[HEADER_LEN..];
    let len = u32::from_le_bytes(len_bytes);
    if u64::from(len) != payload.len() as u64 {
        return Err(corrupt(format!("length field says {len} bytes, file holds {}", payload.len())));
    }
    if checksum(len_bytes, payload) != u32::from_le_bytes(crc_bytes) {
        return Err(corrupt("checksum mismatch".into()));
    }
    Ok(Some(payload.to_vec()))
}
