//! Generates key/value histories that are linearizable by construction:
//! operations run one at a time against a real map at strictly increasing
//! "linearization instants", and each gets a random interval around its
//! instant, so intervals overlap but never contradict real time.
//!
//! Shared by the checker's tests and its benchmark (`#[path]`-included).

use std::collections::HashMap;

use shoal_sim::{KvInput, KvOperation, KvOutput, Rng};

/// The shape of a generated history.
#[derive(Debug, Clone)]
pub struct GenConfig {
    pub ops: usize,
    pub keys: usize,
    pub clients: usize,
    /// Percentage of operations that are gets.
    pub read_pct: u64,
    /// Mean gap between consecutive linearization instants, in ns.
    pub gap: u64,
    /// How far an interval may reach on each side of its instant, in ns;
    /// more than `gap` makes operations overlap.
    pub spread: u64,
    /// Per-mille of writes whose outcome the client never learns (half of
    /// them took effect, half never did).
    pub unknown_permille: u64,
}

impl Default for GenConfig {
    fn default() -> Self {
        GenConfig { ops: 1000, keys: 5, clients: 10, read_pct: 60, gap: 10, spread: 40, unknown_permille: 0 }
    }
}

/// A linearizable history drawn from `seed`.
pub fn generate(seed: u64, cfg: &GenConfig) -> Vec<KvOperation> {
    let mut rng = Rng::new(seed);
    let mut store: HashMap<String, String> = HashMap::new();
    let mut busy_until = vec![0u64; cfg.clients];
    let mut history = Vec::with_capacity(cfg.ops);
    let mut t = cfg.spread + 1;
    while history.len() < cfg.ops {
        t += 1 + rng.below(2 * cfg.gap.max(1));
        let free: Vec<usize> = (0..cfg.clients).filter(|&c| busy_until[c] < t).collect();
        let Some(&client) = rng.pick(&free) else { continue };
        let i = history.len();
        let key = format!("k{}", rng.below(cfg.keys as u64));
        let roll = rng.below(100);
        let input = if roll < cfg.read_pct {
            KvInput::Get { key }
        } else {
            match rng.below(10) {
                0..=3 => KvInput::Put { key, value: format!("v{i}") },
                4..=6 => KvInput::Append { key, value: format!("a{i},") },
                7 => KvInput::Delete { key },
                _ => {
                    let current = store.get(&key).cloned();
                    let expected =
                        if rng.chance(0.5) { current } else { Some(format!("v{}", rng.below(i as u64 + 1))) };
                    KvInput::Cas { key, expected, new: format!("c{i}") }
                }
            }
        };
        let call = (t - rng.below(cfg.spread + 1)).max(busy_until[client] + 1);
        let ret = t + rng.below(cfg.spread + 1);
        let is_write = !matches!(input, KvInput::Get { .. });
        if is_write && rng.below(1000) < cfg.unknown_permille {
            // The client times out; the write took effect at `t`, or never.
            if rng.chance(0.5) {
                apply(&mut store, &input);
            }
            busy_until[client] = ret;
            history.push(KvOperation::unknown(client as u64, input, call));
            continue;
        }
        let output = apply(&mut store, &input);
        busy_until[client] = ret;
        history.push(KvOperation::new(client as u64, input, output, call, ret));
    }
    history
}

/// Executes one operation on the real map.
pub fn apply(store: &mut HashMap<String, String>, input: &KvInput) -> KvOutput {
    match input {
        KvInput::Get { key } => KvOutput::Value(store.get(key).cloned()),
        KvInput::Put { key, value } => {
            store.insert(key.clone(), value.clone());
            KvOutput::Done
        }
        KvInput::Append { key, value } => {
            store.entry(key.clone()).or_default().push_str(value);
            KvOutput::Done
        }
        KvInput::Delete { key } => {
            store.remove(key);
            KvOutput::Done
        }
        KvInput::Cas { key, expected, new } => {
            if store.get(key) == expected.as_ref() {
                store.insert(key.clone(), new.clone());
                KvOutput::Swapped(true)
            } else {
                KvOutput::Swapped(false)
            }
        }
    }
}
