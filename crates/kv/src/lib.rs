//! Shoal's key/value service: a linearizable map replicated by Raft.
//!
//! - [`state`]: the replicated state machine (data plus the at-most-once
//!   session table), deterministic and snapshottable.
//! - [`clerk`]: the request/response protocol and the client's retry logic.
//! - [`server`]: a server process: the Raft driver plus one RPC port.
//! - [`client`]: the client library over RPC.
//! - [`model`]: operations as the linearizability checker sees them.

pub mod clerk;
pub mod client;
pub mod model;
pub mod server;
pub mod state;

pub use clerk::{Clerk, KvRequest, KvResponse};
pub use client::{connect, Connections, KvClient, KvError};
pub use server::{KvServer, ServerConfig, ServerError, ServerStatus};
pub use state::{Applied, ClientId, Command, KvState, Op, OpResult};
