//! Configuration of one node's consensus core: timeouts, feature switches and every limit.
//! [`Config::validate`] refuses combinations that would be unsafe (lease reads without
//! check-quorum or without a drift bound) or meaningless (zero limits), with a message that says
//! what to change.

use crate::types::NodeId;

/// Lease-read settings. Lease reads are offered only when these are set and check-quorum is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseConfig {
    /// Largest rate difference between any two nodes' clocks, in parts per million. The lease is
    /// shortened by twice this rate so that a fast leader clock and slow follower clocks stay safe.
    pub clock_drift_ppm_max: u64,
}

/// Everything that tunes one node's consensus core.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// This node's id (never 0).
    pub id: NodeId,
    /// Lower bound of the randomized election timeout, in milliseconds of the node's clock.
    pub election_timeout_ms_min: u64,
    /// Upper bound (exclusive) of the randomized election timeout.
    pub election_timeout_ms_max: u64,
    /// How often a leader sends heartbeats; also the caller's promised longest gap between ticks.
    pub heartbeat_interval_ms: u64,
    /// Run a pre-vote round before a real election (thesis §9.6).
    pub pre_vote: bool,
    /// A leader steps down when it has not heard from a quorum within an election timeout.
    pub check_quorum: bool,
    /// Lease reads (thesis §6.4.1); `None` disables them.
    pub lease: Option<LeaseConfig>,
    /// Most entries in one append message.
    pub entries_per_message_max: usize,
    /// Most payload bytes in one append message (one entry is always allowed).
    pub bytes_per_message_max: u64,
    /// Most append messages in flight to one follower in the replicate state.
    pub inflight_messages_max: usize,
    /// Most entries a leader holds appended but not yet committed; more proposals are refused.
    pub uncommitted_entries_max: u64,
    /// Most bytes a leader holds appended but not yet committed.
    pub uncommitted_bytes_max: u64,
    /// Most read requests waiting at one node; more are refused.
    pub pending_reads_max: usize,
    /// Size of one snapshot chunk on the wire.
    pub snapshot_chunk_bytes: u64,
    /// Largest snapshot a follower accepts into memory.
    pub snapshot_bytes_max: u64,
    /// A learner is promoted only when it is at most this many entries behind the leader.
    pub promote_lag_entries_max: u64,
    /// Leader to prefer: a leader that is not this node hands over to it when it is caught up.
    pub preferred_leader: Option<NodeId>,
    /// Seed of the generator that randomizes election timeouts (determinism: never global).
    pub rng_seed: u64,
    /// A classic Raft bug this node plants (feature `planted-bugs`, for the simulator only).
    #[cfg(feature = "planted-bugs")]
    pub planted_bug: Option<crate::PlantedBug>,
}

impl Config {
    /// Defaults suited to a LAN cluster: 1–2 s elections, 100 ms heartbeats, pre-vote and
    /// check-quorum on, lease reads off.
    pub fn new(id: NodeId) -> Self {
        Self {
            id,
            election_timeout_ms_min: 1_000,
            election_timeout_ms_max: 2_000,
            heartbeat_interval_ms: 100,
            pre_vote: true,
            check_quorum: true,
            lease: None,
            entries_per_message_max: 4_096,
            bytes_per_message_max: 1 << 20,
            inflight_messages_max: 64,
            uncommitted_entries_max: 1 << 20,
            uncommitted_bytes_max: 256 << 20,
            pending_reads_max: 65_536,
            snapshot_chunk_bytes: 1 << 20,
            snapshot_bytes_max: 1 << 30,
            promote_lag_entries_max: 1_000,
            preferred_leader: None,
            rng_seed: u64::from(id),
            #[cfg(feature = "planted-bugs")]
            planted_bug: None,
        }
    }

    /// Checks that the settings are coherent; the error says which one to change and how.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fail = |message: String| Err(ConfigError { message });
        if self.id == 0 {
            return fail("id must be 1 or more (0 means \"no node\")".into());
        }
        if self.heartbeat_interval_ms == 0 {
            return fail("heartbeat_interval_ms must be at least 1".into());
        }
        if self.election_timeout_ms_min < 2 * self.heartbeat_interval_ms {
            return fail(format!(
                "election_timeout_ms_min ({}) must be at least twice heartbeat_interval_ms ({})",
                self.election_timeout_ms_min, self.heartbeat_interval_ms
            ));
        }
        if self.election_timeout_ms_max <= self.election_timeout_ms_min {
            return fail("election_timeout_ms_max must be greater than election_timeout_ms_min".into());
        }
        let limits = [
            ("entries_per_message_max", self.entries_per_message_max as u64),
            ("bytes_per_message_max", self.bytes_per_message_max),
            ("inflight_messages_max", self.inflight_messages_max as u64),
            ("uncommitted_entries_max", self.uncommitted_entries_max),
            ("uncommitted_bytes_max", self.uncommitted_bytes_max),
            ("pending_reads_max", self.pending_reads_max as u64),
            ("snapshot_chunk_bytes", self.snapshot_chunk_bytes),
            ("snapshot_bytes_max", self.snapshot_bytes_max),
        ];
        if let Some((name, _)) = limits.iter().find(|(_, value)| *value == 0) {
            return fail(format!("{name} must be at least 1"));
        }
        if self.lease.is_some() {
            if !self.check_quorum {
                return fail("lease reads need check_quorum = true: without it a deposed leader keeps serving".into());
            }
            if self.lease_duration_ms() == 0 {
                return fail("lease reads need an election timeout long enough to cover the drift bound and two heartbeats; raise election_timeout_ms_min or lower clock_drift_ppm_max".into());
            }
        }
        Ok(())
    }

    /// How long, on the leader's clock, a lease lasts after the heartbeat round that started it
    /// was **sent**. Followers refuse votes for `election_timeout_ms_min` on their own clocks after
    /// hearing from the leader; with clock rates off by at most `clock_drift_ppm_max` on each side
    /// the leader must assume less, and two heartbeat intervals cover the tick granularity.
    /// Zero when lease reads are off.
    pub fn lease_duration_ms(&self) -> u64 {
        let Some(lease) = self.lease else { return 0 };
        let timeout = self.election_timeout_ms_min;
        let drift = timeout.saturating_mul(2 * lease.clock_drift_ppm_max) / 1_000_000;
        // PLANTED BUG (lease-ignores-drift): the lease assumes clocks that never drift.
        #[cfg(feature = "planted-bugs")]
        let drift = if crate::planted::planted!(self, LeaseIgnoresDrift) { 0 } else { drift };
        timeout.saturating_sub(drift).saturating_sub(2 * self.heartbeat_interval_ms)
    }
}

/// A configuration that [`Config::validate`] refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// What is wrong and what to change.
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid consensus configuration: {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert_eq!(Config::new(1).validate(), Ok(()));
    }

    #[test]
    fn lease_reads_require_check_quorum() {
        let mut config = Config::new(1);
        config.lease = Some(LeaseConfig { clock_drift_ppm_max: 1_000 });
        config.check_quorum = false;
        assert!(config.validate().unwrap_err().message.contains("check_quorum"));
    }

    #[test]
    fn lease_is_shortened_by_drift_and_tick_slack() {
        let mut config = Config::new(1);
        config.lease = Some(LeaseConfig { clock_drift_ppm_max: 50_000 });
        // 1000 ms - 2 * 5% of 1000 ms - 2 * 100 ms.
        assert_eq!(config.lease_duration_ms(), 700);
        config.lease = Some(LeaseConfig { clock_drift_ppm_max: 500_000 });
        assert!(config.validate().is_err());
    }

    #[test]
    fn zero_limits_are_refused_by_name() {
        let mut config = Config::new(1);
        config.inflight_messages_max = 0;
        assert!(config.validate().unwrap_err().message.contains("inflight_messages_max"));
        assert!(Config::new(0).validate().is_err());
    }
}
