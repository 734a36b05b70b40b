//! The simulator's source of randomness: a seeded SplitMix64 (keel-core's [`Rng`]) with the
//! helpers the simulator needs (chances in parts per million, ranges, picks) and independent
//! sub-streams.
//!
//! Data flow: the run seed makes one [`SimRng`]; each concern (scenario, network, disk, faults,
//! clients) forks its own stream from it by name, so that drawing one more number in, say, the
//! workload does not shift every network delay. Nothing else in a run is random.

use keel_core::Rng;

/// A seeded generator with simulator helpers. Never seeded from the wall clock.
#[derive(Clone, Debug)]
pub struct SimRng {
    inner: Rng,
}

impl SimRng {
    /// A generator whose whole sequence is determined by `seed`.
    pub fn new(seed: u64) -> Self {
        Self { inner: Rng::new(seed) }
    }

    /// An independent stream for one concern, derived from this generator's seed and `stream`.
    pub fn fork(seed: u64, stream: u64) -> Self {
        let mut mixer = Rng::new(seed ^ stream.wrapping_mul(0xA24B_AED4_963E_E407));
        Self::new(mixer.next_u64())
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.inner.next_u64()
    }

    /// A value in `low..=high` (`low` when `high < low`).
    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        if high < low {
            return low;
        }
        self.inner.range(low, high.saturating_add(1))
    }

    /// True with probability `per_million` / 1,000,000.
    pub fn chance(&mut self, per_million: u64) -> bool {
        per_million > 0 && self.inner.range(0, 1_000_000) < per_million
    }

    /// An index in `0..length` (0 when `length` is 0).
    pub fn index(&mut self, length: usize) -> usize {
        self.inner.range(0, length as u64) as usize
    }

    /// One element of `items`, if any.
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> Option<T> {
        if items.is_empty() {
            return None;
        }
        Some(items[self.index(items.len())])
    }

    /// A fair coin.
    pub fn coin(&mut self) -> bool {
        self.next_u64() & 1 == 1
    }

    /// A uniformly shuffled copy of `items` (Fisher–Yates).
    pub fn shuffled<T: Clone>(&mut self, items: &[T]) -> Vec<T> {
        let mut out = items.to_vec();
        for i in (1..out.len()).rev() {
            let j = self.index(i + 1);
            out.swap(i, j);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_reproducible_and_independent() {
        let mut a = SimRng::fork(42, 1);
        let mut b = SimRng::fork(42, 1);
        let mut c = SimRng::fork(42, 2);
        let xs: Vec<u64> = (0..8).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..8).map(|_| b.next_u64()).collect();
        let zs: Vec<u64> = (0..8).map(|_| c.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(xs, zs);
        for _ in 0..1000 {
            let value = a.between(3, 5);
            assert!((3..=5).contains(&value));
        }
        assert!(!a.chance(0));
        assert!(a.chance(1_000_000));
    }
}
