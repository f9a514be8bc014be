//! The sequential model of Shoal's key/value service, for the
//! [linearizability checker](crate::linearizability).
//!
//! Keys are independent, so [`KvModel`] partitions a history by key and its
//! state is one key's value: `None` while the key is absent. (Using the model
//! without its partitioning would be wrong: the state does not say which key
//! it belongs to.)

use std::collections::BTreeMap;

use crate::linearizability::{Model, Operation};

/// A key/value operation as a client issued it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KvInput {
    /// Read the key's value.
    Get {
        /// The key.
        key: String,
    },
    /// Set the key's value.
    Put {
        /// The key.
        key: String,
        /// The new value.
        value: String,
    },
    /// Append to the key's value (an absent key counts as empty).
    Append {
        /// The key.
        key: String,
        /// What to append.
        value: String,
    },
    /// Remove the key.
    Delete {
        /// The key.
        key: String,
    },
    /// Set the key to `new` if its value is `expected` (`None`: absent).
    Cas {
        /// The key.
        key: String,
        /// The value the key must have for the swap to happen.
        expected: Option<String>,
        /// The value it gets if it does.
        new: String,
    },
}

impl KvInput {
    /// The key the operation is about.
    pub fn key(&self) -> &str {
        match self {
            KvInput::Get { key }
            | KvInput::Put { key, .. }
            | KvInput::Append { key, .. }
            | KvInput::Delete { key }
            | KvInput::Cas { key, .. } => key,
        }
    }
}

/// What a key/value operation returned.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KvOutput {
    /// A `Get`'s answer: the value, or `None` if the key was absent.
    Value(Option<String>),
    /// A `Put`, `Append` or `Delete` completed.
    Done,
    /// A `Cas`'s answer: whether it swapped.
    Swapped(bool),
}

/// A recorded key/value operation.
pub type KvOperation = Operation<KvInput, KvOutput>;

/// The key/value service's sequential specification; partitions by key.
#[derive(Debug, Clone, Copy, Default)]
pub struct KvModel;

impl Model for KvModel {
    /// One key's value; `None` while absent.
    type State = Option<String>;
    type Input = KvInput;
    type Output = KvOutput;

    fn init(&self) -> Option<String> {
        None
    }

    fn step(
        &self,
        state: &Option<String>,
        input: &KvInput,
        output: Option<&KvOutput>,
    ) -> Option<Option<String>> {
        match input {
            KvInput::Get { .. } => match output {
                None => Some(state.clone()),
                Some(KvOutput::Value(v)) if v == state => Some(state.clone()),
                Some(_) => None,
            },
            KvInput::Put { value, .. } => match output {
                None | Some(KvOutput::Done) => Some(Some(value.clone())),
                Some(_) => None,
            },
            KvInput::Append { value, .. } => match output {
                None | Some(KvOutput::Done) => {
                    let mut v = state.clone().unwrap_or_default();
                    v.push_str(value);
                    Some(Some(v))
                }
                Some(_) => None,
            },
            KvInput::Delete { .. } => match output {
                None | Some(KvOutput::Done) => Some(None),
                Some(_) => None,
            },
            KvInput::Cas { expected, new, .. } => {
                let matches = state == expected;
                match output {
                    // Had it taken effect, it would have swapped iff the
                    // value matched (not taking effect at all is the
                    // checker's business).
                    None => Some(if matches { Some(new.clone()) } else { state.clone() }),
                    Some(KvOutput::Swapped(true)) if matches => Some(Some(new.clone())),
                    Some(KvOutput::Swapped(false)) if !matches => Some(state.clone()),
                    Some(_) => None,
                }
            }
        }
    }

    fn partition(&self, history: &[KvOperation]) -> Vec<Vec<usize>> {
        let mut by_key: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (i, op) in history.iter().enumerate() {
            by_key.entry(op.input.key()).or_default().push(i);
        }
        by_key.into_values().collect()
    }

    fn describe_partition(&self, history: &[KvOperation], partition: &[usize]) -> String {
        match partition.first() {
            Some(&i) => format!("key {:?}", history[i].input.key()),
            None => String::from("no key"),
        }
    }

    fn describe(&self, input: &KvInput, output: Option<&KvOutput>) -> String {
        let op = match input {
            KvInput::Get { key } => format!("get {key}"),
            KvInput::Put { key, value } => format!("put {key}={value:?}"),
            KvInput::Append { key, value } => format!("append {key}+={value:?}"),
            KvInput::Delete { key } => format!("delete {key}"),
            KvInput::Cas { key, expected, new } => format!("cas {key} {}->{new:?}", value_text(expected)),
        };
        match output {
            None => format!("{op} -> ? (outcome unknown)"),
            Some(KvOutput::Done) => op,
            Some(KvOutput::Value(v)) => format!("{op} -> {}", value_text(v)),
            Some(KvOutput::Swapped(true)) => format!("{op} -> swapped"),
            Some(KvOutput::Swapped(false)) => format!("{op} -> not swapped"),
        }
    }

    fn describe_state(&self, state: &Option<String>) -> String {
        value_text(state)
    }
}

fn value_text(v: &Option<String>) -> String {
    match v {
        Some(v) => format!("{v:?}"),
        None => String::from("absent"),
    }
}
