//! The service's operations in the vocabulary of the linearizability
//! checker's key/value model, so every history recorder (the simulation,
//! the process tests, `shoal bench kv`) converts them the same way.

use bytes::Bytes;
use shoal_sim::kv_model::{KvInput, KvOutput};

use crate::state::{Op, OpResult};

fn text(b: &Bytes) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// What the client asked, as the checker sees it.
pub fn model_input(op: &Op) -> KvInput {
    match op {
        Op::Get { key } => KvInput::Get { key: text(key) },
        Op::Put { key, value } => KvInput::Put { key: text(key), value: text(value) },
        Op::Append { key, value } => KvInput::Append { key: text(key), value: text(value) },
        Op::Delete { key } => KvInput::Delete { key: text(key) },
        Op::Cas { key, expected, new } => {
            KvInput::Cas { key: text(key), expected: expected.as_ref().map(text), new: text(new) }
        }
    }
}

/// What came back, as the checker sees it; `None` for a command the server
/// could not decode (never an answer to a Shoal client).
pub fn model_output(result: &OpResult) -> Option<KvOutput> {
    match result {
        OpResult::Value(v) => Some(KvOutput::Value(v.as_ref().map(text))),
        OpResult::Done => Some(KvOutput::Done),
        OpResult::Cas { swapped, .. } => Some(KvOutput::Swapped(*swapped)),
        OpResult::Invalid => None,
    }
}
