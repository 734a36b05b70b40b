//! Command-line overrides of a seed's scenario: cluster size, workload size, fault switches, a
//! cap on the number of faults and (feature `planted-bugs`) a planted bug. `keel-sim run`, `sweep`
//! and `shrink` share them, and [`Overrides::args`] writes them back as command-line flags, so
//! that a shrunk run is reproduced by one `keel-sim run` command.

use super::super::scenario::Scenario;

/// One switch of a scenario's fault mix, by the name `Scenario::describe` uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultSwitch {
    /// Message loss.
    Loss,
    /// Message duplication.
    Duplication,
    /// Message reordering.
    Reordering,
    /// Partitions.
    Partitions,
    /// Very slow syncs.
    SlowSyncs,
    /// Torn writes on crashes.
    TornWrites,
    /// Bit flips in synced entries.
    BitFlips,
    /// Wall-clock steps.
    ClockSteps,
    /// Clocks beyond the drift bound.
    ClocksBeyondBound,
    /// Crashes and restarts.
    Crashes,
    /// Pauses.
    Pauses,
    /// Membership changes.
    Membership,
    /// Leadership transfers.
    Transfers,
    /// Lease reads (a workload switch, but one shrinking may turn off).
    LeaseReads,
}

impl FaultSwitch {
    /// Every switch, in the order `Scenario::describe` lists them.
    pub const ALL: [FaultSwitch; 14] = [
        FaultSwitch::Loss,
        FaultSwitch::Duplication,
        FaultSwitch::Reordering,
        FaultSwitch::Partitions,
        FaultSwitch::SlowSyncs,
        FaultSwitch::TornWrites,
        FaultSwitch::BitFlips,
        FaultSwitch::ClockSteps,
        FaultSwitch::ClocksBeyondBound,
        FaultSwitch::Crashes,
        FaultSwitch::Pauses,
        FaultSwitch::Membership,
        FaultSwitch::Transfers,
        FaultSwitch::LeaseReads,
    ];

    /// The switch's name on the command line.
    pub fn name(self) -> &'static str {
        const NAMES: [&str; 14] = [
            "loss",
            "duplication",
            "reordering",
            "partitions",
            "slow-syncs",
            "torn-writes",
            "bit-flips",
            "clock-steps",
            "clocks-beyond-bound",
            "crashes",
            "pauses",
            "membership",
            "transfers",
            "lease-reads",
        ];
        NAMES[Self::ALL.iter().position(|s| *s == self).expect("every switch is listed")]
    }

    /// Whether the switch is on in `scenario`.
    pub fn is_on(self, scenario: &Scenario) -> bool {
        match self {
            FaultSwitch::Loss => scenario.network.loss_per_million > 0,
            FaultSwitch::Duplication => scenario.network.duplicate_per_million > 0,
            FaultSwitch::Reordering => scenario.network.reorder_per_million > 0,
            FaultSwitch::Partitions => scenario.network.partitions,
            FaultSwitch::SlowSyncs => scenario.disk.slow_sync_per_million > 0,
            FaultSwitch::TornWrites => scenario.disk.torn_write_per_million > 0,
            FaultSwitch::BitFlips => scenario.disk.bit_flips,
            FaultSwitch::ClockSteps => scenario.clock.wall_steps,
            FaultSwitch::ClocksBeyondBound => scenario.clock.beyond_bound,
            FaultSwitch::Crashes => scenario.process.crashes,
            FaultSwitch::Pauses => scenario.process.pauses,
            FaultSwitch::Membership => scenario.process.membership_changes,
            FaultSwitch::Transfers => scenario.process.leader_transfers,
            FaultSwitch::LeaseReads => scenario.lease_reads,
        }
    }

    /// Switches it off in `scenario`.
    pub fn switch_off(self, scenario: &mut Scenario) {
        match self {
            FaultSwitch::Loss => scenario.network.loss_per_million = 0,
            FaultSwitch::Duplication => scenario.network.duplicate_per_million = 0,
            FaultSwitch::Reordering => scenario.network.reorder_per_million = 0,
            FaultSwitch::Partitions => scenario.network.partitions = false,
            FaultSwitch::SlowSyncs => scenario.disk.slow_sync_per_million = 0,
            FaultSwitch::TornWrites => scenario.disk.torn_write_per_million = 0,
            FaultSwitch::BitFlips => scenario.disk.bit_flips = false,
            FaultSwitch::ClockSteps => scenario.clock.wall_steps = false,
            FaultSwitch::ClocksBeyondBound => scenario.clock.beyond_bound = false,
            FaultSwitch::Crashes => scenario.process.crashes = false,
            FaultSwitch::Pauses => scenario.process.pauses = false,
            FaultSwitch::Membership => scenario.process.membership_changes = false,
            FaultSwitch::Transfers => scenario.process.leader_transfers = false,
            FaultSwitch::LeaseReads => scenario.lease_reads = false,
        }
    }
}

impl std::str::FromStr for FaultSwitch {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|s| s.name() == text).ok_or_else(|| {
            let names: Vec<&str> = Self::ALL.iter().map(|s| s.name()).collect();
            format!("unknown fault switch {text:?}; expected one of {}", names.join(", "))
        })
    }
}

/// What the command line changes in a seed's scenario. Each field left out keeps the seed's draw.
#[derive(Clone, Debug, Default, PartialEq, Eq, clap::Args)]
pub struct Overrides {
    /// Override the initial number of voters drawn from the seed (3 or 5 are the usual).
    #[arg(long)]
    pub nodes: Option<u32>,
    /// Override the number of client operations drawn from the seed.
    #[arg(long)]
    pub ops: Option<u64>,
    /// Override the number of concurrent clients drawn from the seed.
    #[arg(long)]
    pub clients: Option<u32>,
    /// Inject at most this many faults (partitions, crashes, pauses, ...).
    #[arg(long)]
    pub faults: Option<u64>,
    /// Switch these parts of the fault mix off, e.g. `--without loss,pauses,lease-reads`.
    #[arg(long, value_delimiter = ',')]
    pub without: Vec<FaultSwitch>,
    /// Plant this classic Raft bug in every node: double-vote, commit-previous-term,
    /// ack-before-sync, read-without-quorum, lease-ignores-drift, no-truncate-conflict,
    /// vote-not-persisted.
    #[cfg(feature = "planted-bugs")]
    #[arg(long)]
    pub planted_bug: Option<keel_core::PlantedBug>,
}

impl Overrides {
    /// The scenario of `seed` with these overrides.
    pub fn scenario(&self, seed: u64) -> Scenario {
        let mut scenario = Scenario::from_seed(seed);
        #[cfg(feature = "planted-bugs")]
        if let Some(bug) = self.planted_bug {
            super::super::planted::plant(&mut scenario, bug);
        }
        if let Some(nodes) = self.nodes {
            scenario.node_count = nodes.max(1);
        }
        if let Some(ops) = self.ops {
            scenario.operation_count = ops;
        }
        if let Some(clients) = self.clients {
            scenario.client_count = clients.max(1);
        }
        if let Some(faults) = self.faults {
            scenario.fault_count_max = Some(faults);
        }
        for switch in &self.without {
            switch.switch_off(&mut scenario);
        }
        scenario
    }

    /// The overrides as command-line flags (empty when there are none), each preceded by a space.
    pub fn args(&self) -> String {
        let mut args = String::new();
        #[cfg(feature = "planted-bugs")]
        if let Some(bug) = self.planted_bug {
            args.push_str(&format!(" --planted-bug {bug}"));
        }
        let numbers = [
            ("nodes", self.nodes.map(u64::from)),
            ("ops", self.ops),
            ("clients", self.clients.map(u64::from)),
            ("faults", self.faults),
        ];
        for (name, value) in numbers {
            if let Some(value) = value {
                args.push_str(&format!(" --{name} {value}"));
            }
        }
        if !self.without.is_empty() {
            let names: Vec<&str> = self.without.iter().map(|s| s.name()).collect();
            args.push_str(&format!(" --without {}", names.join(",")));
        }
        args
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switches_round_trip_and_turn_off() {
        let mut scenario = Scenario::standard(3);
        for switch in FaultSwitch::ALL {
            assert_eq!(switch.name().parse::<FaultSwitch>(), Ok(switch));
            switch.switch_off(&mut scenario);
            assert!(!switch.is_on(&scenario), "{}", switch.name());
        }
        assert!(scenario.describe().ends_with("faults: "), "{}", scenario.describe());
    }

    #[test]
    fn overrides_are_written_back_as_flags() {
        let overrides = Overrides {
            ops: Some(37),
            faults: Some(4),
            without: vec![FaultSwitch::Loss, FaultSwitch::Pauses],
            ..Overrides::default()
        };
        assert_eq!(overrides.args(), " --ops 37 --faults 4 --without loss,pauses");
        let scenario = overrides.scenario(9);
        assert_eq!((scenario.operation_count, scenario.fault_count_max), (37, Some(4)));
        assert!(!scenario.process.pauses && scenario.network.loss_per_million == 0);
    }
}
