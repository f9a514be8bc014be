//! `shoal-rpc`: framed RPC over TCP for every Shoal service.
//!
//! - [`wire`]: frames `[u32 len][u8 version][postcard payload]` and the
//!   [`Envelope`] they carry (RPC-4). Bad input closes that one connection.
//! - [`Server`] / [`serve`]: a task per connection and per request (RPC-1),
//!   generic over any [`Service`].
//! - [`Client`]: calls multiplexed on one connection, per-call timeout and
//!   re-sends, reconnect inside (RPC-2); [`Client::call_once`] for
//!   at-most-once execution (RPC-3); [`Client::notify`] for one-way
//!   messages.
//! - [`proxy`]: a fault-injecting TCP proxy for tests.
//!
//! # At-most-once, and why a restarted server rejects instead of persisting
//!
//! `call_once` tags a request with (client id, seq, acked_below,
//! incarnation). The server keeps a bounded reply table per client: a
//! duplicate of a finished call gets the saved reply, a duplicate of a
//! running call waits for it, replies below `acked_below` are freed, and
//! idle sessions are evicted. A request from a session the server does not
//! know is accepted as a new session only while the client has completed
//! no call yet (`acked_below == 0`); otherwise it is refused with
//! [`RemoteError::SessionExpired`] (not executed) and the client opens a
//! new session, so an evicted session's old calls are never re-run. (The
//! one gap: a copy of a fresh session's very first calls delayed in the
//! network for longer than the idle timeout, 10 minutes by default.)
//!
//! The table lives in memory only. Each server start picks a random
//! incarnation and announces it in the connection hello; a request stamped
//! with another incarnation is rejected with [`RpcError::ServerRestarted`]
//! (outcome unknown to the caller, never executed twice). Persisting the
//! table instead would cost an fsync per mutating call on a server that is
//! not replicated, for a guarantee the caller still cannot fully use (it
//! cannot tell "executed, reply lost" from "not executed" either way).
//! Services that need exactly-once across crashes — the replicated KV
//! store, the GFS master — keep their own dedup table in the Raft log and
//! snapshot, where it is durable and replicated for free.

mod client;
mod conn;
mod dedup;
mod error;
pub mod proxy;
mod server;
pub mod wire;

pub use client::{Client, ClientOptions};
pub use error::{RemoteError, RpcError};
pub use proxy::{Direction, Proxy, ProxyHandle};
pub use server::{serve, Server, ServerOptions, Service};
pub use wire::{Envelope, OnceHeader};

/// A random u64 for client ids and incarnations. Std's `RandomState` is
/// seeded from the OS once per thread and varied per instance; mixing in
/// the time and a counter keeps ids distinct across calls and processes.
pub(crate) fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    h.write_u128(now);
    h.write_u32(std::process::id());
    h.finish()
}
