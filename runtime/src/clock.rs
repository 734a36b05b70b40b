//! The clock port: every clock reading of the runtime goes through [`Clock`], so that the
//! simulator can give each node its own skewed, drifting clock (madsim has one clock for all).
//!
//! Two readings exist: a monotonic one for Raft timing (`tick`), and a wall-clock one, in Unix
//! milliseconds, that the leader stamps into each entry for key expiry.

use std::sync::Arc;

/// A source of time readings. Implementations must be cheap and never go backwards on the
/// monotonic reading.
pub trait Clock: Send + Sync + 'static {
    /// Monotonic milliseconds since an arbitrary origin (drives elections and heartbeats).
    fn now_ms(&self) -> u64;
    /// Wall-clock Unix milliseconds (stamped into entries; decides key expiry).
    fn wall_ms(&self) -> u64;
    /// Monotonic microseconds, for latency metrics; defaults to the millisecond reading.
    fn now_us(&self) -> u64 {
        self.now_ms().saturating_mul(1_000)
    }
}

/// The runtime's clock: `tokio::time::Instant` (virtual under madsim) and the system wall clock.
#[derive(Debug)]
pub struct SystemClock {
    origin: tokio::time::Instant,
}

impl SystemClock {
    /// A clock whose monotonic origin is now.
    pub fn new() -> Arc<Self> {
        Arc::new(Self { origin: tokio::time::Instant::now() })
    }
}

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }

    fn wall_ms(&self) -> u64 {
        let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        since_epoch.map_or(0, |d| d.as_millis() as u64)
    }

    fn now_us(&self) -> u64 {
        self.origin.elapsed().as_micros() as u64
    }
}

/// A clock offset and drifting relative to another (for the simulator): reads
/// `offset_ms + base * (1 + drift_ppm / 1e6)`. Monotonic as long as the drift is above -1e6 ppm.
#[derive(Debug)]
pub struct SkewedClock<C> {
    base: Arc<C>,
    offset_ms: i64,
    drift_ppm: i64,
}

impl<C: Clock> SkewedClock<C> {
    /// Wraps `base` with a fixed offset and a rate error in parts per million.
    pub fn new(base: Arc<C>, offset_ms: i64, drift_ppm: i64) -> Arc<Self> {
        Arc::new(Self { base, offset_ms, drift_ppm: drift_ppm.max(-999_999) })
    }

    fn skew(&self, reading: u64) -> u64 {
        let drifted = reading as i128 + reading as i128 * self.drift_ppm as i128 / 1_000_000;
        (drifted + self.offset_ms as i128).max(0) as u64
    }
}

impl<C: Clock> Clock for SkewedClock<C> {
    fn now_ms(&self) -> u64 {
        self.skew(self.base.now_ms())
    }

    fn wall_ms(&self) -> u64 {
        self.skew(self.base.wall_ms())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(u64);

    impl Clock for Fixed {
        fn now_ms(&self) -> u64 {
            self.0
        }
        fn wall_ms(&self) -> u64 {
            self.0 + 1_000
        }
    }

    #[test]
    fn skewed_clock_applies_offset_and_drift() {
        let clock = SkewedClock::new(Arc::new(Fixed(1_000_000)), 250, 10_000);
        assert_eq!(clock.now_ms(), 1_000_000 + 10_000 + 250);
        let slow = SkewedClock::new(Arc::new(Fixed(1_000)), -5_000, -10_000);
        assert_eq!(slow.now_ms(), 0, "never below zero");
    }
}
