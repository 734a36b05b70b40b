//! The configuration of one run, drawn from its seed: cluster size, timing, the fault mix and
//! the workload size. Every field is a plain number or switch so that a run is described
//! completely by `(seed, overrides)`, and `keel-sim run --seed N` rebuilds the same scenario.
//!
//! Data flow: [`Scenario::from_seed`] draws from a dedicated stream of the seed; the command line
//! may then override its size and fault mix (`shrink::Overrides`, which also plants a bug with
//! the `planted-bugs` feature); every other module reads its part.

use super::rng::SimRng;

/// Network faults and timing for one run.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NetworkFaults {
    /// Shortest one-way delay of a message.
    pub delay_ms_min: u64,
    /// Longest one-way delay of a message in normal operation.
    pub delay_ms_max: u64,
    /// Chance that a message is lost.
    pub loss_per_million: u64,
    /// Chance that a message is delivered twice.
    pub duplicate_per_million: u64,
    /// Chance that a message is held back much longer than usual, so later ones overtake it.
    pub reorder_per_million: u64,
    /// Extra delay of a reordered message, at most.
    pub reorder_delay_ms_max: u64,
    /// Whether the fault scheduler cuts links (symmetric, one-way, bridge, minority/majority).
    pub partitions: bool,
}

/// Disk faults and timing for one run.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DiskFaults {
    /// Shortest time a sync takes.
    pub sync_delay_ms_min: u64,
    /// Longest time a sync takes normally.
    pub sync_delay_ms_max: u64,
    /// Chance that one sync is very slow.
    pub slow_sync_per_million: u64,
    /// Delay of a very slow sync.
    pub slow_sync_delay_ms: u64,
    /// Chance that a crash tears the write in progress (part of it lands, its last entry torn).
    pub torn_write_per_million: u64,
    /// Whether the scheduler flips bits in synced log entries (at most one node per run).
    pub bit_flips: bool,
}

/// Clock behaviour for one run.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ClockFaults {
    /// The drift bound configured for leases (also the bound the clocks keep unless `beyond_bound`).
    pub drift_ppm_max: u64,
    /// Largest initial offset between a node's clock and true time.
    pub offset_ms_max: u64,
    /// Whether wall clocks are stepped (forwards or backwards) during the run.
    pub wall_steps: bool,
    /// Clocks drift beyond the bound and monotonic clocks jump forward: lease reads may then be
    /// stale, and such a violation is reported as expected rather than as a bug.
    pub beyond_bound: bool,
}

/// Which process and cluster-management events the scheduler injects.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProcessFaults {
    /// Crash (losing unsynced writes) and later restart nodes.
    pub crashes: bool,
    /// Pause and later resume nodes (long stalls).
    pub pauses: bool,
    /// Membership changes: add a fresh learner, promote it, remove a voter.
    pub membership_changes: bool,
    /// Leadership transfers to a random voter.
    pub leader_transfers: bool,
}

/// Sharper timing for the targeted scenarios of planted bugs (`planted::plant`): every seed's own
/// scenario leaves all of it off, so that a run draws and does exactly what it did without it.
/// Each setting stays within what the correct core must survive (the drift bound, the election
/// timeout range, crashes of a minority), so a failure with a planted bug is the bug's.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Targeting {
    /// Upper bound of the randomized election timeout (`None`: twice the lower bound).
    pub election_timeout_ms_max: Option<u64>,
    /// Node 1's clock runs at the slow edge of the drift bound and every other node's at the fast
    /// edge (rates the full bound apart, still within it), and leadership transfers hand
    /// leadership to node 1: a slow-clocked leader.
    pub slow_clock_leads: bool,
    /// Longest a partition, crash or pause lasts before it ends (`None`: eight election timeouts).
    pub stall_ms_max: Option<u64>,
    /// A follower whose term on disk just rose (it granted a vote, or heard of a new leader) is
    /// crashed at once, while every other node is up, and restarted this many milliseconds
    /// later: a crash between two vote requests of one term (needs `process.crashes`).
    pub crash_voters_restart_ms: Option<u64>,
    /// Most entries a leader sends in one append (`None`: 64), and most appends in flight to one
    /// follower (`None`: 16): small numbers make a lagging follower catch up one entry at a time.
    pub replication_window: Option<(usize, usize)>,
    /// A node that just became leader is paused at once, with this chance (per million), when no
    /// other node is down, and resumed as a pause is: a leader stalled right after its election
    /// (needs `process.pauses`).
    pub pause_new_leaders_per_million: u64,
    /// Partitions isolate the current leader, and crashes and pauses stop it (when there is one),
    /// instead of hitting a random node.
    pub aim_at_leader: bool,
}

/// Everything one run does, derived from the seed.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Scenario {
    /// The run's seed.
    pub seed: u64,
    /// Initial voters (3 or 5).
    pub node_count: u32,
    /// Client operations to invoke in the fault phase.
    pub operation_count: u64,
    /// Concurrent client processes (each has one operation pending at most).
    pub client_count: u32,
    /// Distinct keys the clients touch.
    pub key_count: u32,
    /// How often each node's core is ticked, in milliseconds of true time.
    pub tick_interval_ms: u64,
    /// Core heartbeat interval.
    pub heartbeat_interval_ms: u64,
    /// Core election timeout, lower bound.
    pub election_timeout_ms_min: u64,
    /// Whether lease reads are configured (check-quorum is always on).
    pub lease_reads: bool,
    /// Every how many applied entries a node snapshots its store and compacts its log.
    pub snapshot_interval_entries: u64,
    /// Mean time between two injected faults.
    pub fault_interval_ms: u64,
    /// How long a client waits for an answer before reporting an unknown outcome.
    pub operation_timeout_ms: u64,
    /// How long after healing everything the cluster has to converge and finish all operations.
    pub liveness_bound_ms: u64,
    /// Network faults.
    pub network: NetworkFaults,
    /// Disk faults.
    pub disk: DiskFaults,
    /// Clock faults.
    pub clock: ClockFaults,
    /// Process and cluster-management faults.
    pub process: ProcessFaults,
    /// Clients whose operation timed out forget their leader hint and start the next one on a
    /// random node, as a client with several endpoints does (planted-bug runs switch it on).
    pub clients_switch_on_timeout: bool,
    /// Most faults the scheduler injects in the run (`None`: no limit); shrinking lowers it.
    pub fault_count_max: Option<u64>,
    /// Sharper timing for a planted bug's targeted scenario (all off in a seed's own scenario).
    #[serde(default)]
    pub targeting: Targeting,
    /// The classic Raft bug every node plants (`keel-sim ... --planted-bug`).
    #[cfg(feature = "planted-bugs")]
    #[serde(default, with = "super::planted::bug_by_name")]
    pub planted_bug: Option<keel_core::PlantedBug>,
}

/// The stream of the seed the scenario is drawn from.
const SCENARIO_STREAM: u64 = 1;

impl Scenario {
    /// The scenario of `seed`: each seed draws its own cluster size and fault mix.
    pub fn from_seed(seed: u64) -> Self {
        let mut rng = SimRng::fork(seed, SCENARIO_STREAM);
        let node_count = if rng.coin() { 3 } else { 5 };
        let delay_ms_min = rng.between(0, 2);
        let network = NetworkFaults {
            delay_ms_min,
            delay_ms_max: delay_ms_min + rng.between(1, 10),
            loss_per_million: if rng.chance(700_000) { rng.between(1_000, 50_000) } else { 0 },
            duplicate_per_million: if rng.chance(500_000) { rng.between(1_000, 30_000) } else { 0 },
            reorder_per_million: if rng.chance(500_000) { rng.between(1_000, 50_000) } else { 0 },
            reorder_delay_ms_max: rng.between(10, 100),
            partitions: rng.chance(800_000),
        };
        let disk = DiskFaults {
            sync_delay_ms_min: rng.between(0, 1),
            sync_delay_ms_max: rng.between(1, 8),
            slow_sync_per_million: if rng.chance(500_000) { rng.between(1_000, 30_000) } else { 0 },
            slow_sync_delay_ms: rng.between(50, 500),
            torn_write_per_million: if rng.chance(600_000) { rng.between(200_000, 1_000_000) } else { 0 },
            bit_flips: rng.chance(400_000),
        };
        let clock = ClockFaults {
            drift_ppm_max: rng.between(100, 20_000),
            offset_ms_max: rng.between(0, 5_000),
            wall_steps: rng.chance(500_000),
            beyond_bound: rng.chance(100_000),
        };
        let process = ProcessFaults {
            crashes: rng.chance(800_000),
            pauses: rng.chance(600_000),
            membership_changes: rng.chance(500_000),
            leader_transfers: rng.chance(600_000),
        };
        Self {
            seed,
            node_count,
            operation_count: rng.between(200, 1_000),
            client_count: rng.between(2, 6) as u32,
            key_count: rng.between(2, 6) as u32,
            tick_interval_ms: 10,
            heartbeat_interval_ms: 20,
            election_timeout_ms_min: 200,
            lease_reads: rng.chance(700_000),
            snapshot_interval_entries: rng.between(20, 400),
            fault_interval_ms: rng.between(100, 600),
            operation_timeout_ms: 2_000,
            liveness_bound_ms: 20_000,
            network,
            disk,
            clock,
            process,
            clients_switch_on_timeout: false,
            fault_count_max: None,
            targeting: Targeting::default(),
            #[cfg(feature = "planted-bugs")]
            planted_bug: None,
        }
    }

    /// The standard benchmark scenario: 5 nodes, 2,000 operations, every fault switched on.
    pub fn standard(seed: u64) -> Self {
        let mut scenario = Self::from_seed(seed);
        scenario.node_count = 5;
        scenario.operation_count = 2_000;
        scenario.network.loss_per_million = scenario.network.loss_per_million.max(10_000);
        scenario.network.duplicate_per_million = scenario.network.duplicate_per_million.max(10_000);
        scenario.network.reorder_per_million = scenario.network.reorder_per_million.max(10_000);
        scenario.network.partitions = true;
        scenario.disk.slow_sync_per_million = scenario.disk.slow_sync_per_million.max(10_000);
        scenario.disk.torn_write_per_million = scenario.disk.torn_write_per_million.max(500_000);
        scenario.disk.bit_flips = true;
        scenario.clock.wall_steps = true;
        scenario.process =
            ProcessFaults { crashes: true, pauses: true, membership_changes: true, leader_transfers: true };
        scenario
    }

    /// A one-line description of the fault mix, for reports.
    pub fn describe(&self) -> String {
        let mut faults = Vec::new();
        let mut add = |on: bool, name: &str| {
            if on {
                faults.push(name.to_string());
            }
        };
        add(self.network.loss_per_million > 0, "loss");
        add(self.network.duplicate_per_million > 0, "duplication");
        add(self.network.reorder_per_million > 0, "reordering");
        add(self.network.partitions, "partitions");
        add(self.disk.slow_sync_per_million > 0, "slow-syncs");
        add(self.disk.torn_write_per_million > 0, "torn-writes");
        add(self.disk.bit_flips, "bit-flips");
        add(self.clock.wall_steps, "clock-steps");
        add(self.clock.beyond_bound, "clocks-beyond-bound");
        add(self.process.crashes, "crashes");
        add(self.process.pauses, "pauses");
        add(self.process.membership_changes, "membership");
        add(self.process.leader_transfers, "transfers");
        add(self.lease_reads, "lease-reads");
        format!(
            "{} nodes, {} ops, {} clients, {} keys; faults: {}",
            self.node_count,
            self.operation_count,
            self.client_count,
            self.key_count,
            faults.join(",")
        )
    }
}
