//! The messages between workers and the coordinator, and between workers
//! (the shuffle).

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::coordinator::{Ack, Assignment, Outcome, Progress};
use crate::{AttemptId, JobSpec, WorkerId};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum CoordRequest {
    /// A worker starts; `addr` serves its map outputs.
    Register {
        addr: String,
    },
    /// Give me work (long-polls for a while when there is none).
    NextTask {
        worker: WorkerId,
    },
    Heartbeat {
        worker: WorkerId,
    },
    Report {
        worker: WorkerId,
        attempt: AttemptId,
        outcome: Outcome,
    },
    Progress,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum CoordResponse {
    Registered { worker: WorkerId, job: Box<JobSpec>, heartbeat_ms: u64 },
    Task(Assignment),
    Ack(Ack),
    Alive(bool),
    Progress(Box<Progress>),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum PeerRequest {
    /// Up to `max` bytes at `offset` of partition `partition` of the output
    /// of map attempt `attempt`.
    Fetch { map: u32, attempt: AttemptId, partition: u32, offset: u64, max: u32 },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum PeerResponse {
    Chunk { total: u64, data: Bytes },
    Missing(String),
}
