//! Arbitrary bytes into the frame decoder and the envelope decoder: no
//! panic, and memory bounded by the maximum frame size. A seeded loop
//! (set SHOAL_SEED to replay, SHOAL_FUZZ_ITERS to run longer).
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;

use common::{Req, Resp};
use serde::{Deserialize, Serialize};
use shoal_rpc::wire::{self, Envelope, FrameDecoder, OnceHeader, WireError, LENGTH_PREFIX, VERSION};

/// A body with the shapes that are dangerous to decode: lengths that
/// claim huge allocations, nesting, strings that must be UTF-8.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Nasty {
    Bytes(Vec<u8>),
    Text(String),
    Map(BTreeMap<u64, Vec<String>>),
    Nested(Vec<Vec<Option<(u8, i64, f64)>>>),
    Unit,
}

/// The simulator's generator, with the two conveniences the fuzzer wants.
struct Rng(shoal_sim::Rng);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0.next_u64()
    }
    /// Uniform below `n`; 0 for an empty range, so callers need no guard.
    fn below(&mut self, n: u64) -> u64 {
        self.0.below(n.max(1))
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn valid_frames(rng: &mut Rng) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..rng.below(4) {
        let blob = match rng.below(5) {
            0 => wire::encode_payload(&Envelope::<Req, Resp>::Request {
                id: rng.next(),
                once: Some(OnceHeader {
                    client: rng.next(),
                    seq: rng.below(1000),
                    acked_below: rng.below(1000),
                    incarnation: rng.next(),
                }),
                body: Req::Echo("x".repeat(rng.below(50) as usize)),
            }),
            1 => wire::encode_payload(&Envelope::<(), Resp>::Response {
                id: rng.next(),
                result: Ok(Resp::Big(vec![1; rng.below(100) as usize])),
            }),
            2 => wire::encode_payload(&Envelope::<Nasty, Nasty>::Notify {
                body: Nasty::Map((0..rng.below(5)).map(|k| (k, vec!["v".into(); 2])).collect()),
            }),
            3 => wire::encode_payload(&Envelope::<(), ()>::Hello { incarnation: rng.next() }),
            _ => wire::encode_payload(&Envelope::<Nasty, Nasty>::Request {
                id: 1,
                once: None,
                body: Nasty::Nested(vec![vec![Some((1, -2, 0.5)), None]; rng.below(4) as usize]),
            }),
        }
        .unwrap();
        out.extend_from_slice(&(blob.len() as u32).to_be_bytes());
        out.extend_from_slice(&blob);
    }
    out
}

/// Random input: pure noise, valid frames with bytes flipped, or a
/// plausible header with a random (often huge) length.
fn input(rng: &mut Rng) -> Vec<u8> {
    match rng.below(4) {
        0 => {
            let n = rng.below(300) as usize;
            rng.bytes(n)
        }
        1 => {
            let mut v = valid_frames(rng);
            for _ in 0..rng.below(4) {
                if !v.is_empty() {
                    let i = rng.below(v.len() as u64) as usize;
                    v[i] = rng.next() as u8;
                }
            }
            if !v.is_empty() && rng.below(3) == 0 {
                let cut = rng.below(v.len() as u64) as usize;
                v.truncate(cut);
            }
            v
        }
        2 => {
            let mut v = (rng.next() as u32).to_be_bytes().to_vec();
            v.push(if rng.below(2) == 0 { VERSION } else { rng.next() as u8 });
            let n = rng.below(64) as usize;
            v.extend(rng.bytes(n));
            v
        }
        _ => valid_frames(rng),
    }
}

fn decode_all<B: serde::de::DeserializeOwned + std::fmt::Debug>(payload: &[u8]) {
    let _ = wire::decode_payload::<B, B>(payload);
}

#[test]
fn arbitrary_bytes_never_panic_and_memory_stays_bounded() {
    let seed = std::env::var("SHOAL_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5ea1_u64);
    let iters: u64 = std::env::var("SHOAL_FUZZ_ITERS").ok().and_then(|s| s.parse().ok()).unwrap_or(100_000);
    println!("seed {seed}, {iters} inputs");
    let mut rng = Rng(shoal_sim::Rng::new(seed));
    let max_frame = 4096;
    let mut frames = 0u64;
    let mut errors = 0u64;
    for _ in 0..iters {
        let bytes = input(&mut rng);
        let mut dec = FrameDecoder::new(max_frame);
        let mut pos = 0;
        'feed: while pos < bytes.len() {
            let n = (1 + rng.below(64) as usize).min(bytes.len() - pos);
            dec.feed(&bytes[pos..pos + n]);
            pos += n;
            loop {
                match dec.next_frame() {
                    Ok(Some(payload)) => {
                        frames += 1;
                        assert!(payload.len() < max_frame);
                        decode_all::<Req>(&payload);
                        decode_all::<Resp>(&payload);
                        decode_all::<Nasty>(&payload);
                        decode_all::<()>(&payload);
                    }
                    Ok(None) => break,
                    Err(WireError::FrameTooLarge { .. } | WireError::Version(_) | WireError::Empty) => {
                        errors += 1;
                        break 'feed;
                    }
                    Err(e) => panic!("unexpected error kind {e}"),
                }
            }
            // Never more than one partial frame (plus its header) buffered,
            // never much more than that allocated.
            assert!(dec.buffered() <= LENGTH_PREFIX + max_frame + 64);
            assert!(dec.capacity() <= 4 * (LENGTH_PREFIX + max_frame) + 16 * 1024, "{}", dec.capacity());
        }
        // The envelope decoder alone on the raw bytes, too.
        decode_all::<Req>(&bytes);
        decode_all::<Nasty>(&bytes);
    }
    println!("{frames} frames decoded, {errors} streams rejected");
    assert!(frames > 1000 && errors > 1000, "the generator should exercise both paths");
}
