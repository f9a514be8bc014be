//! Deterministic-simulation toolkit: virtual time, one seeded RNG, a faulty
//! network model and a seed-replay harness.
//!
//! It knows nothing about any protocol: events and messages are the
//! harness's own types. A run is a pure function of its seed.
//!
//! - [`rng`]: [`Rng`], the seeded PRNG every random choice goes through.
//! - [`time`]: [`Nanos`] virtual time and the [`EventQueue`] that owns the clock.
//! - [`net`]: [`Network`], labrpc-style connectivity, partitions, loss and delay.
//! - [`seeds`]: [`run_seeds`], many seeds per scenario, failures replayable
//!   with `SHOAL_SEED=<n>`.
//! - [`linearizability`]: [`check`], a Porcupine-style linearizability
//!   checker for recorded histories against a sequential [`Model`].
//! - [`kv_model`]: [`KvModel`], the key/value service's model for it.

pub mod kv_model;
pub mod linearizability;
pub mod net;
pub mod rng;
pub mod seeds;
pub mod time;

pub use kv_model::{KvInput, KvModel, KvOperation, KvOutput};
pub use linearizability::{check, CheckResult, Model, OpSummary, Operation, PendingOp, Violation};
pub use net::{Fate, NetConfig, NetStats, Network, NodeStats};
pub use rng::Rng;
pub use seeds::{run_seeds, seed_from_env_or, seeds_to_run};
pub use time::{EventQueue, Nanos, MICRO, MILLI, SECOND};
