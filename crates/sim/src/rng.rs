//! One seeded pseudo-random generator for a whole simulation.
//!
//! Why our own: a simulation run must be a pure function of its seed, on
//! every platform and toolchain, forever. Owning the algorithm (xoshiro256**,
//! seeded through splitmix64) and every derived operation (`below`,
//! `chance`, `shuffle`) pins the exact sequence, so a seed printed by a
//! failing CI run replays bit-for-bit on a laptop.

use std::ops::Range;

/// splitmix64 step: advances `state` and returns a well-mixed output.
///
/// Used to expand a 64-bit seed into xoshiro's 256-bit state (xoshiro must
/// not start from all zeros, and nearby seeds must give unrelated streams),
/// and by the seed harness to derive per-run seeds.
pub fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// xoshiro256** PRNG: fast, small, statistically strong, not cryptographic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    /// A generator whose whole future is determined by `seed`.
    pub fn new(seed: u64) -> Self {
        let mut sm = seed;
        let s = [splitmix64(&mut sm), splitmix64(&mut sm), splitmix64(&mut sm), splitmix64(&mut sm)];
        // splitmix64 is a bijection of its counter, so four consecutive
        // outputs cannot all be zero; xoshiro would be stuck at zero forever.
        assert!(s != [0; 4], "xoshiro256** state must not be all zero");
        Rng { s }
    }

    /// The next 64 uniformly random bits.
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in `0..n`, without modulo bias (Lemire's multiply-and-reject).
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "Rng::below(0): empty range");
        let mut m = u128::from(self.next_u64()) * u128::from(n);
        let mut low = m as u64;
        if low < n {
            // Reject the few products that would over-represent small values.
            let threshold = n.wrapping_neg() % n;
            while low < threshold {
                m = u128::from(self.next_u64()) * u128::from(n);
                low = m as u64;
            }
        }
        (m >> 64) as u64
    }

    /// Uniform in `r.start..r.end`; the range must be non-empty.
    pub fn range(&mut self, r: Range<u64>) -> u64 {
        assert!(r.start < r.end, "Rng::range({}..{}): empty range", r.start, r.end);
        r.start + self.below(r.end - r.start)
    }

    /// True with probability `p` (0.0 never, 1.0 always).
    ///
    /// Uses the top 53 bits as an exact f64 in [0, 1); IEEE-754 arithmetic
    /// makes the result identical on every platform.
    pub fn chance(&mut self, p: f64) -> bool {
        assert!((0.0..=1.0).contains(&p), "Rng::chance({p}): probability must be in [0, 1]");
        let unit = (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64);
        unit < p
    }

    /// True with probability exactly `num / den`, in integer arithmetic.
    pub fn ratio(&mut self, num: u64, den: u64) -> bool {
        assert!(den > 0, "Rng::ratio({num}, 0): zero denominator");
        assert!(num <= den, "Rng::ratio({num}, {den}): ratio above 1");
        self.below(den) < num
    }

    /// An independent child stream, e.g. one per simulated node, so adding
    /// draws in one component does not shift the sequence seen by another.
    /// Advances `self` by exactly one draw.
    pub fn fork(&mut self) -> Rng {
        Rng::new(self.next_u64())
    }

    /// Uniform random permutation of `items` (Fisher–Yates).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }

    /// A uniformly chosen element, or `None` for an empty slice (which
    /// consumes no randomness).
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        if items.is_empty() {
            return None;
        }
        let i = self.below(items.len() as u64) as usize;
        items.get(i)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn splitmix64_known_answers() {
        // Reference outputs of splitmix64 from seed 0 (published test vector).
        let mut s = 0u64;
        assert_eq!(splitmix64(&mut s), 0xE220_A839_7B1D_CDAF);
        assert_eq!(splitmix64(&mut s), 0x6E78_9E6A_A1B9_65F4);
        assert_eq!(splitmix64(&mut s), 0x06C4_5D18_8009_454F);
    }

    #[test]
    fn same_seed_same_sequence() {
        let mut a = Rng::new(42);
        let mut b = Rng::new(42);
        for _ in 0..1000 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        let mut c = Rng::new(43);
        let mut a = Rng::new(42);
        let same = (0..100).filter(|_| a.next_u64() == c.next_u64()).count();
        assert_eq!(same, 0);
    }

    #[test]
    fn pinned_sequence() {
        // Pinned outputs: if these change, every recorded seed stops replaying.
        let mut r = Rng::new(1);
        let got: Vec<u64> = (0..3).map(|_| r.next_u64()).collect();
        assert_eq!(got, PINNED_SEED_1);
    }

    // Computed by a separate (Python) transcription of the reference
    // splitmix64 + xoshiro256** algorithms, so this also checks correctness.
    const PINNED_SEED_1: [u64; 3] = [0xB3F2_AF6D_0FC7_10C5, 0x853B_5596_4736_4CEA, 0x92F8_9756_082A_4514];

    #[test]
    fn below_is_roughly_uniform() {
        let mut r = Rng::new(7);
        let mut buckets = [0u32; 10];
        let n = 100_000;
        for _ in 0..n {
            buckets[r.below(10) as usize] += 1;
        }
        for (i, &b) in buckets.iter().enumerate() {
            assert!((9_500..=10_500).contains(&b), "bucket {i} has {b}");
        }
    }

    #[test]
    fn below_and_range_bounds() {
        let mut r = Rng::new(3);
        for _ in 0..10_000 {
            assert_eq!(r.below(1), 0);
            let x = r.range(5..8);
            assert!((5..8).contains(&x));
            let big = r.below(u64::MAX);
            assert!(big < u64::MAX);
        }
    }

    #[test]
    #[should_panic(expected = "empty range")]
    fn below_zero_panics() {
        Rng::new(0).below(0);
    }

    #[test]
    #[should_panic(expected = "empty range")]
    fn empty_range_panics() {
        Rng::new(0).range(4..4);
    }

    #[test]
    fn chance_and_ratio_rates() {
        let mut r = Rng::new(11);
        let n = 100_000;
        let hits = (0..n).filter(|_| r.chance(0.25)).count();
        assert!((24_000..=26_000).contains(&hits), "{hits}");
        let hits = (0..n).filter(|_| r.ratio(1, 3)).count();
        assert!((32_300..=34_300).contains(&hits), "{hits}");
        assert!((0..1000).all(|_| !r.chance(0.0) && r.chance(1.0)));
        assert!((0..1000).all(|_| !r.ratio(0, 5) && r.ratio(5, 5)));
    }

    #[test]
    fn fork_is_independent_and_deterministic() {
        let mut a = Rng::new(5);
        let mut child_a = a.fork();
        let mut b = Rng::new(5);
        let mut child_b = b.fork();
        for _ in 0..100 {
            assert_eq!(child_a.next_u64(), child_b.next_u64());
        }
        // Drawing from the child does not disturb the parent.
        assert_eq!(a.next_u64(), b.next_u64());
        let mut p = Rng::new(5);
        let mut c = p.fork();
        let same = (0..100).filter(|_| p.next_u64() == c.next_u64()).count();
        assert_eq!(same, 0);
    }

    #[test]
    fn shuffle_permutes_and_pick_picks() {
        let mut r = Rng::new(9);
        let mut v: Vec<u32> = (0..50).collect();
        r.shuffle(&mut v);
        assert_ne!(v, (0..50).collect::<Vec<_>>());
        let mut sorted = v.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());

        let empty: [u8; 0] = [];
        assert_eq!(r.pick(&empty), None);
        let items = [1, 2, 3];
        let mut seen = [false; 3];
        for _ in 0..100 {
            let x = *r.pick(&items).unwrap();
            seen[x as usize - 1] = true;
        }
        assert_eq!(seen, [true; 3]);

        // Every position is equally likely to receive the first element.
        let mut first_at = [0u32; 4];
        for _ in 0..40_000 {
            let mut a = [0, 1, 2, 3];
            r.shuffle(&mut a);
            first_at[a.iter().position(|&x| x == 0).unwrap()] += 1;
        }
        assert!(first_at.iter().all(|&c| (9_500..=10_500).contains(&c)), "{first_at:?}");
    }
}
