//! Shoal's durable storage primitives.
//!
//! - [`dir`]: the file-system seam ([`Dir`]), with a real ([`OsDir`]) and a
//!   simulated, crashable ([`MemDir`]) implementation.
//! - [`wal`]: a segmented, checksummed write-ahead log ([`Wal`]) that
//!   truncates a damaged tail on recovery.
//! - [`group`]: [`SharedWal`], group commit for many concurrent writers.
//! - [`file`](mod@file): small checked metadata files written atomically.
//! - [`error`]: the error type, [`WalError`].

pub mod dir;
pub mod error;
pub mod file;
pub mod group;
mod record;
pub mod wal;

pub use dir::{CrashMode, Dir, MemDir, OsDir};
pub use error::WalError;
pub use file::{read_checked, write_checked};
pub use group::{GroupOptions, GroupStats, SharedWal};
pub use record::CutReason;
pub use wal::{segment_name, Cut, Recovered, Wal, WalOptions};
