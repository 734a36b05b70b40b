//! Per-node clocks. The simulator keeps one true time (milliseconds since the run started);
//! each node reads its own monotonic clock (an offset, a constant drift rate, and forward jumps)
//! and its own wall clock (the monotonic reading plus a wall offset that may be stepped
//! backwards or forwards, as NTP does).
//!
//! Data flow: the simulator asks a node's [`NodeClock`] for `monotonic_ms(true_ms)` before every
//! tick of the core, and for `wall_ms(true_ms)` when the node stamps a proposal or computes the
//! expiry cutoff. Within the bound, every drift lies in `±drift_ppm_max / 2`, so any two clocks'
//! rates differ by at most the `clock_drift_ppm_max` the cores are configured with, and the
//! monotonic clock never jumps: lease reads must then be safe. Beyond the bound, drifts reach
//! many times the bound and monotonic clocks jump forward; lease reads may then be stale.

use super::rng::SimRng;
use super::scenario::ClockFaults;

/// Every wall clock reads about this at true time zero (2023-11-14, in Unix milliseconds).
pub const WALL_EPOCH_MS: u64 = 1_700_000_000_000;

/// Rates are expressed in parts per million of true time.
const PPM: i128 = 1_000_000;

/// One node's clocks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeClock {
    /// Rate error of this clock in parts per million (negative: slow).
    pub drift_ppm: i64,
    /// Monotonic reading at true time zero.
    pub base_ms: u64,
    /// Sum of forward jumps of the monotonic clock so far (beyond-bound mode only).
    pub jumps_ms: u64,
    /// Wall clock minus monotonic clock; stepped by wall-clock faults.
    pub wall_offset_ms: i64,
    last_monotonic_ms: u64,
}

impl NodeClock {
    /// A clock drawn from the run's clock settings.
    pub fn new(faults: &ClockFaults, rng: &mut SimRng) -> Self {
        let bound = faults.drift_ppm_max as i64;
        let spread = if faults.beyond_bound { bound * 20 + 50_000 } else { bound / 2 };
        let drift_ppm = rng.between(0, 2 * spread as u64) as i64 - spread;
        let offset = faults.offset_ms_max as i64;
        let wall_offset_ms = rng.between(0, 2 * offset as u64) as i64 - offset;
        Self {
            drift_ppm,
            base_ms: 1_000_000 + rng.between(0, 1_000_000),
            jumps_ms: 0,
            wall_offset_ms,
            last_monotonic_ms: 0,
        }
    }

    /// Moves the drift to one edge of the bound (`-bound / 2` when `slow`, else `+bound / 2`):
    /// still within the bound (beyond-bound clocks are left alone), and draws nothing.
    pub fn move_to_bound(&mut self, faults: &ClockFaults, slow: bool) {
        let half = (faults.drift_ppm_max / 2) as i64;
        if !faults.beyond_bound {
            self.drift_ppm = if slow { -half } else { half };
        }
    }

    /// The monotonic reading at `true_ms`; never decreases.
    pub fn monotonic_ms(&mut self, true_ms: u64) -> u64 {
        let drifted = i128::from(true_ms) * (PPM + i128::from(self.drift_ppm)) / PPM;
        let reading = self.base_ms + drifted.max(0) as u64 + self.jumps_ms;
        self.last_monotonic_ms = self.last_monotonic_ms.max(reading);
        self.last_monotonic_ms
    }

    /// The wall reading at `true_ms` (may move backwards after a step): the common epoch plus the
    /// drifted elapsed time plus the wall offset. The monotonic base is not part of it, so two
    /// nodes' wall clocks differ by at most twice the offset bound plus the drift (with the base,
    /// they differed by up to 1,000 s, and keys with a TTL could expire long before their time).
    pub fn wall_ms(&mut self, true_ms: u64) -> u64 {
        let elapsed = (self.monotonic_ms(true_ms) - self.base_ms) as i64;
        (WALL_EPOCH_MS as i64 + elapsed + self.wall_offset_ms).max(0) as u64
    }

    /// Steps the wall clock to a new offset within `±offset_ms_max`.
    pub fn step_wall(&mut self, offset_ms_max: u64, rng: &mut SimRng) {
        let offset = offset_ms_max as i64;
        self.wall_offset_ms = rng.between(0, 2 * offset as u64) as i64 - offset;
    }

    /// Jumps the monotonic clock forward (beyond-bound mode only: it breaks the rate bound).
    pub fn jump(&mut self, jump_ms: u64) {
        self.jumps_ms += jump_ms;
    }
}

/// The largest difference between two nodes' wall clocks the expiry cutoff allows for: twice the
/// offset bound, plus the drift bound over a long run. Leaders propose `Expire` at their wall clock
/// minus this, so that keys never expire early while clocks keep within the bound.
pub fn clock_offset_ms_max(faults: &ClockFaults) -> u64 {
    2 * faults.offset_ms_max + faults.drift_ppm_max / 10
}

#[cfg(test)]
mod tests {
    use super::*;

    fn faults(beyond_bound: bool) -> ClockFaults {
        ClockFaults { drift_ppm_max: 10_000, offset_ms_max: 100, wall_steps: true, beyond_bound }
    }

    #[test]
    fn within_bound_rates_differ_by_at_most_the_bound() {
        let mut rng = SimRng::new(3);
        let clocks: Vec<NodeClock> = (0..50).map(|_| NodeClock::new(&faults(false), &mut rng)).collect();
        let fastest = clocks.iter().map(|c| c.drift_ppm).max().unwrap();
        let slowest = clocks.iter().map(|c| c.drift_ppm).min().unwrap();
        assert!(fastest - slowest <= 10_000);
        let mut clock = clocks[0].clone();
        let (a, b) = (clock.monotonic_ms(1_000), clock.monotonic_ms(2_000));
        assert!(b > a && (b - a).abs_diff(1_000) <= 5);
    }

    #[test]
    fn wall_clocks_differ_by_at_most_the_offsets_and_the_drift() {
        let mut rng = SimRng::new(5);
        let settings = faults(false);
        let mut clocks: Vec<NodeClock> = (0..50).map(|_| NodeClock::new(&settings, &mut rng)).collect();
        let true_ms = 60_000;
        let walls: Vec<u64> = clocks.iter_mut().map(|clock| clock.wall_ms(true_ms)).collect();
        let spread = walls.iter().max().unwrap() - walls.iter().min().unwrap();
        let drift_ms = true_ms * settings.drift_ppm_max / 1_000_000;
        assert!(spread <= 2 * settings.offset_ms_max + drift_ms + 2, "wall clocks {spread} ms apart");
    }

    #[test]
    fn monotonic_never_decreases_and_wall_steps_stay_in_bound() {
        let mut rng = SimRng::new(4);
        let mut clock = NodeClock::new(&faults(true), &mut rng);
        let before = clock.monotonic_ms(500);
        clock.jump(300);
        assert!(clock.monotonic_ms(500) >= before + 300);
        for _ in 0..100 {
            clock.step_wall(100, &mut rng);
            assert!(clock.wall_offset_ms.abs() <= 100);
        }
    }
}
