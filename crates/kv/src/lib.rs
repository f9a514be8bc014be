//! Shoal's key/value service: a linearizable map replicated by Raft.
//!
//! - [`state`]: the replicated state machine (data plus the at-most-once
//!   session table), deterministic and snapshottable.
//! - [`clerk`]: the request/response protocol and the client's retry logic.

pub mod clerk;
pub mod state;

pub use clerk::{Clerk, KvRequest, KvResponse};
pub use state::{Applied, ClientId, Command, KvState, Op, OpResult};
