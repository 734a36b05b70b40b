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

/// A clock offset and drifting relative to another (for the simulator, which has one clock for
/// all nodes). From the base's readings at construction (`origin`), it reads
/// `origin + offset_ms + elapsed * (1 + drift_ppm / 1e6)`, where `elapsed` is the base's time
/// since then: the drift accumulates over the clock's life, as a real oscillator's error does,
/// and never scales the absolute Unix time. Monotonic as long as the drift is above -1e6 ppm.
#[derive(Debug)]
pub struct SkewedClock<C> {
    base: Arc<C>,
    offset_ms: i64,
    drift_ppm: i64,
    origin_ms: u64,
    origin_wall_ms: u64,
}

impl<C: Clock> SkewedClock<C> {
    /// Wraps `base` with a fixed offset and a rate error in parts per million, counted from now.
    pub fn new(base: Arc<C>, offset_ms: i64, drift_ppm: i64) -> Arc<Self> {
        let (origin_ms, origin_wall_ms) = (base.now_ms(), base.wall_ms());
        Arc::new(Self { base, offset_ms, drift_ppm: drift_ppm.max(-999_999), origin_ms, origin_wall_ms })
    }

    fn skew(&self, reading: u64, origin: u64) -> u64 {
        let elapsed = i128::from(reading.saturating_sub(origin));
        let drifted = i128::from(origin) + elapsed + elapsed * i128::from(self.drift_ppm) / 1_000_000;
        (drifted + i128::from(self.offset_ms)).clamp(0, i128::from(u64::MAX)) as u64
    }
}

impl<C: Clock> Clock for SkewedClock<C> {
    fn now_ms(&self) -> u64 {
        self.skew(self.base.now_ms(), self.origin_ms)
    }

    fn wall_ms(&self) -> u64 {
        self.skew(self.base.wall_ms(), self.origin_wall_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A clock the test moves by hand; its wall reading is its monotonic one plus a fixed epoch.
    struct Manual(std::sync::atomic::AtomicU64);

    const EPOCH_MS: u64 = 1_700_000_000_000;

    impl Clock for Manual {
        fn now_ms(&self) -> u64 {
            self.0.load(std::sync::atomic::Ordering::Relaxed)
        }
        fn wall_ms(&self) -> u64 {
            EPOCH_MS + self.now_ms()
        }
    }

    fn manual(start: u64) -> Arc<Manual> {
        Arc::new(Manual(std::sync::atomic::AtomicU64::new(start)))
    }

    #[test]
    fn skewed_clock_applies_offset_and_drift_to_elapsed_time() {
        let base = manual(1_000_000);
        let clock = SkewedClock::new(base.clone(), 250, 10_000);
        assert_eq!(clock.now_ms(), 1_000_250, "only the offset at the start");
        base.0.store(2_000_000, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(clock.now_ms(), 2_000_000 + 10_000 + 250);
        let slow = SkewedClock::new(manual(1_000), -5_000, -10_000);
        assert_eq!(slow.now_ms(), 0, "never below zero");
    }

    /// Regression: the drift used to scale the absolute reading, so a 1,000 ppm drift put the
    /// wall clock weeks off the Unix time (1.7e12 ms * 1e-3) instead of accumulating from zero.
    #[test]
    fn drift_never_scales_the_absolute_wall_time() {
        let base = manual(0);
        let clock = SkewedClock::new(base.clone(), -100, 1_000);
        assert_eq!(clock.wall_ms(), EPOCH_MS - 100);
        base.0.store(60_000, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(clock.wall_ms(), EPOCH_MS + 60_000 + 60 - 100, "60 s at 1,000 ppm gain 60 ms");
    }
}
