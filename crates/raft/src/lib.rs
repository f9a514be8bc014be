//! Raft consensus for Shoal.
//!
//! - [`raft`]: the consensus core, a pure state machine stepped by messages
//!   and ticks that returns a [`Ready`] of work for its caller (no I/O).
//! - [`message`]: entries, hard state, snapshots, and the wire messages.
//! - [`log`]: the in-memory log after the latest snapshot.
//! - [`progress`]: the leader's view of each follower (probe, pipeline, snapshot).
//! - [`store`]: durability: a checksummed WAL plus snapshot files.
//! - [`driver`]: the tokio shell that runs one node: timers, channels, disk.
//! - [`invariants`]: Raft's safety properties, checked by every simulation.

pub mod driver;
pub mod invariants;
pub mod log;
pub mod message;
pub mod progress;
pub mod raft;
pub mod store;

pub use driver::{
    spawn_node, ChannelRouter, DriverConfig, Mailbox, NodeError, NodeHandle, ProposeError, StateMachine,
    Status, Transport,
};
pub use invariants::SafetyChecker;
pub use message::{
    AppendResult, Body, Entry, EntryKind, HardState, Index, Message, NodeId, Snapshot, SnapshotMeta, Term,
};
pub use raft::{Config, NewSnapshot, NotLeader, Raft, ReadState, Ready, Recovered, Role};
pub use store::{FileStore, StoreError};
