//! The crate's error type.

use std::io;

/// Everything that can go wrong in this crate. Disk contents are never
/// trusted: anything malformed comes back as one of these, not a panic.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// The file system failed.
    #[error("{op} {name:?}: {source}")]
    Io {
        /// What we were doing (`"append"`, `"sync"`, ...).
        op: &'static str,
        /// The file (or directory) involved.
        name: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A payload is larger than `WalOptions::max_record_bytes` (or than a
    /// length field can express).
    #[error("record of {len} bytes exceeds the limit of {max} bytes")]
    RecordTooLarge {
        /// Payload size.
        len: u64,
        /// The configured limit.
        max: u64,
    },
    /// On-disk contents that fail validation and that we must not
    /// silently repair (a checked metadata file, a hole in the segment
    /// sequence, a valid record above a lowered size limit).
    #[error("corrupt {name:?}: {reason}")]
    Corrupt {
        /// The file involved.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Options that cannot work.
    #[error("invalid WAL options: {0}")]
    InvalidOptions(String),
    /// An earlier write or fsync failed, so what is on disk is unknown; the
    /// WAL refuses further writes rather than append after possible garbage.
    /// Reopening it (which re-validates the files) is the way out.
    #[error("WAL is unusable after an earlier I/O failure")]
    Poisoned,
}

impl WalError {
    pub(crate) fn io<'a>(op: &'static str, name: &'a str) -> impl FnOnce(io::Error) -> WalError + 'a {
        move |source| WalError::Io { op, name: name.to_string(), source }
    }
}
