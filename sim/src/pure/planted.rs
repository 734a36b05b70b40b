//! Planted bugs in the pure simulator: running a seed with a classic Raft bug planted in every
//! node (feature `planted-bugs`), naming the checker that caught it, and sweeping seeds until one
//! does. Also, in every build, [`run_catching`]: a run whose core panics (a release-build safety
//! assertion in keel-core fired) becomes a failed verdict instead of taking the process down.
//!
//! Data flow: [`plant`] sets the bug on a seed's scenario (every node's `Config::planted_bug`,
//! through `node::node_config`) and makes sure the fault mix can reach it; [`run_catching`] runs
//! it; [`detector`] reads the verdict and says which checker found the bug; [`first_failure`]
//! sweeps a range of seeds on several threads and stops at the first failing one.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::outcome::{run_traced_catching, RunOutcome, RunVerdict};
use super::scenario::Scenario;
use super::trace::Trace;

/// The prefix of a verdict for a run whose core panicked (`outcome::PANICKED`).
pub use super::outcome::PANICKED as CORE_ASSERTION;

/// Runs `scenario` like [`super::run`], but a panic (a keel-core assertion, or a simulator bug)
/// becomes a failed verdict naming the panic (`outcome::run_traced_catching`).
pub fn run_catching(scenario: Scenario, keep_trace_lines: bool) -> RunOutcome {
    run_traced_catching(scenario, Trace::new(keep_trace_lines)).0
}

/// The checker whose words a failure verdict carries: the simulator's own checkers
/// (`invariants.rs`, `reference.rs`, the linearizability checker, the weak checks, the etcd
/// checks, liveness), or
/// keel-core's assertions when the core panicked first.
pub fn detector(failure: &str) -> &'static str {
    const NAMES: [(&str, &str); 16] = [
        (CORE_ASSERTION, "core assertion"),
        ("real-time order", "etcd revision order"),
        ("early expiry", "expiry never early"),
        ("etcd ", "etcd replies and ranges"),
        ("election safety", "election safety"),
        ("log matching", "log matching"),
        ("leader completeness", "leader completeness"),
        ("commit index regressed", "commit monotonicity"),
        ("state machine safety", "state-machine safety"),
        ("acknowledged write", "no acknowledged write lost"),
        ("not linearizable", "linearizability"),
        ("liveness", "liveness"),
        ("scan of", "linearizable scans (weak checks)"),
        ("eventual read", "eventual reads (weak checks)"),
        ("watch", "watch streams (weak checks)"),
        ("reference model", "state-machine safety"),
    ];
    NAMES.iter().find(|(words, _)| failure.contains(words)).map_or("other check", |(_, name)| name)
}

/// The first failing seed of a sweep, and what found the bug.
#[derive(Clone, Debug)]
pub struct FirstFailure {
    /// The lowest failing seed.
    pub seed: u64,
    /// The failure, as the run reported it.
    pub violation: String,
    /// The checker that reported it ([`detector`]).
    pub detector: &'static str,
    /// Wall time of the sweep, which ends once every seed below the failing one has run.
    pub elapsed: Duration,
    /// Seeds run in all (on several threads, a few above the failing one may have run).
    pub seeds_run: u64,
}

/// Runs the seeds of `seeds` (each scenario built by `scenario_of`) on `jobs` threads and
/// stops at the first failing seed: no seed above a known failure is started, and every seed
/// below it is finished, so the seed returned is the lowest failing one of the range. A run
/// whose history the linearizability checker could not decide within its step budget is not a
/// failure here (it shows no bug); the sweep goes on past it.
pub fn first_failure(
    seeds: Range<u64>,
    jobs: usize,
    scenario_of: &(dyn Fn(u64) -> Scenario + Sync),
) -> Option<FirstFailure> {
    let started = Instant::now();
    let next = AtomicU64::new(seeds.start);
    let run_count = AtomicU64::new(0);
    let best: Mutex<Option<FirstFailure>> = Mutex::new(None);
    let lowest_failing = AtomicU64::new(u64::MAX);
    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1) {
            scope.spawn(|| loop {
                let seed = next.fetch_add(1, Ordering::Relaxed);
                if seed >= seeds.end || seed > lowest_failing.load(Ordering::Relaxed) {
                    return;
                }
                let outcome = run_catching(scenario_of(seed), false);
                run_count.fetch_add(1, Ordering::Relaxed);
                if let RunVerdict::Failed(violation) = outcome.verdict {
                    // A history the checker could not decide shows no bug: the sweep goes on.
                    if violation.starts_with(super::linearizability::UNDECIDED) {
                        continue;
                    }
                    lowest_failing.fetch_min(seed, Ordering::Relaxed);
                    let mut best = best.lock().expect("no thread panics holding it");
                    if best.as_ref().is_none_or(|b| seed < b.seed) {
                        let detector = detector(&violation);
                        let elapsed = Duration::ZERO;
                        *best = Some(FirstFailure { seed, violation, detector, elapsed, seeds_run: 0 });
                    }
                }
            });
        }
    });
    let mut found = best.into_inner().expect("no thread panicked holding it")?;
    found.elapsed = started.elapsed();
    found.seeds_run = run_count.load(Ordering::Relaxed);
    Some(found)
}

#[cfg(feature = "planted-bugs")]
pub use with_bugs::*;

#[cfg(feature = "planted-bugs")]
mod with_bugs {
    use keel_core::PlantedBug;

    use super::super::scenario::ProcessFaults;
    use super::Scenario;

    /// Plants `bug` in every node of `scenario`, and sharpens the scenario so that the bug's
    /// interleaving comes up within a few hundred seeds (`Targeting`, all off in every seed's own
    /// scenario): the two stale-read bugs get a deposed leader overlapping its successor
    /// ([`slow_leader_clocks`], [`lease_overlap`]), `commit-previous-term` the leader churn of
    /// Figure 8 ([`figure_eight`]), `vote-not-persisted` crashes between two vote requests
    /// ([`crashes_between_votes`]); the other bugs run the seed's own scenario unchanged.
    /// Nothing is changed that would make the correct core fail: the same scenario without the
    /// bug passes (`sim/tests/planted_bugs.rs` checks it for every seed up to the failing one).
    pub fn plant(scenario: &mut Scenario, bug: PlantedBug) {
        scenario.planted_bug = Some(bug);
        match bug {
            PlantedBug::ReadWithoutQuorum => slow_leader_clocks(scenario),
            PlantedBug::LeaseIgnoresDrift => lease_overlap(scenario),
            PlantedBug::CommitPreviousTerm => figure_eight(scenario),
            PlantedBug::VoteNotPersisted => crashes_between_votes(scenario),
            PlantedBug::DoubleVote | PlantedBug::AckBeforeSync | PlantedBug::NoTruncateConflict => {}
        }
    }

    /// Clock rates that differ by up to 40-47 % (within the bound the cores are configured with,
    /// so the correct core stays safe) and 1 s election timeouts, so that a slow-clocked leader
    /// cut off by a partition keeps leading (check-quorum) well after fast-clocked followers
    /// elected another; four times the operations, and clients that time out (after 1 s) try
    /// another node, so that some of them reach the new leader while others read from the old.
    /// Partitions isolate whoever leads: a random cut deposes a leader only when it happens to
    /// fall on it (after commit notices went unanswered, 1 seed in 1,150 still showed the bug).
    fn slow_leader_clocks(scenario: &mut Scenario) {
        scenario.targeting.aim_at_leader = true;
        scenario.election_timeout_ms_min = 1_000;
        scenario.operation_count *= 4;
        scenario.operation_timeout_ms = 1_000;
        scenario.clients_switch_on_timeout = true;
        scenario.clock.drift_ppm_max = 400_000 + scenario.seed % 70_000;
        scenario.clock.beyond_bound = false;
        scenario.network.partitions = true;
    }

    /// `lease-ignores-drift`: [`slow_leader_clocks`], sharpened so that the leader is the slow
    /// clock and its successor's voters the fast ones. The unshortened lease of a leader whose
    /// clock runs 20-23.5 % slow lasts 960 ms on its clock, about 1,200-1,255 ms of true time;
    /// followers whose clocks run as much fast stop refusing votes after 1,000 ms on theirs,
    /// 810-833 ms of true time, and (election timeouts of 1,000-1,100 ms) elect a successor
    /// within about 900 ms: for 300 ms and more, both serve. To get there, node 1's clock is the
    /// slow one and leadership transfers hand it leadership, every partition isolates whoever
    /// leads (for at most 2.5 s, one every 0.8 s on average), and the other faults are off. Lease
    /// reads are on; six clients on two keys, whose operations time out after 300 ms and then try
    /// another node, so that writers soon reach the successor while readers stay on the old
    /// leader. The correct lease, shortened by the drift bound, lasts 20-160 ms: safe.
    fn lease_overlap(scenario: &mut Scenario) {
        slow_leader_clocks(scenario);
        scenario.lease_reads = true;
        scenario.targeting.slow_clock_leads = true;
        scenario.targeting.election_timeout_ms_max = Some(1_100);
        scenario.targeting.stall_ms_max = Some(2_500);
        scenario.fault_interval_ms = 800;
        scenario.operation_timeout_ms = 300;
        scenario.client_count = 6;
        scenario.key_count = 2;
        scenario.process =
            ProcessFaults { crashes: false, pauses: false, membership_changes: false, leader_transfers: true };
        scenario.disk.bit_flips = false;
        scenario.clock.wall_steps = false;
    }

    /// `commit-previous-term`: the Raft paper's Figure 8 needs a leader that replicates entries of
    /// an earlier term to a majority before its own no-op, and then loses leadership to a node
    /// holding a newer conflicting entry at the same index. Five nodes; a new leader is paused
    /// the moment it is elected, before its first messages leave (so its no-op, of the newest
    /// term, stays on it alone); partitions isolate, and crashes and pauses stop, whoever leads,
    /// one fault every 100 ms on average, each lasting at most 600 ms; and a leader sends one
    /// entry per append with one append in flight, so that a follower missing several entries of
    /// earlier terms acknowledges them (and the bug commits them) one at a time, long before the
    /// leader's no-op reaches it. The correct core commits nothing until its own no-op is on a
    /// majority, whatever the churn.
    fn figure_eight(scenario: &mut Scenario) {
        scenario.node_count = 5;
        scenario.process.crashes = true;
        scenario.process.pauses = true;
        scenario.network.partitions = true;
        scenario.targeting.aim_at_leader = true;
        scenario.targeting.pause_new_leaders_per_million = 1_000_000;
        scenario.targeting.replication_window = Some((1, 1));
        scenario.targeting.stall_ms_max = Some(600);
        scenario.fault_interval_ms = 100;
    }

    /// `vote-not-persisted`: a follower that has just moved to a new term (it granted a vote, or
    /// heard of a new leader) is crashed at once and restarted 1 ms later, whenever every other
    /// node is up. A candidate whose vote request arrives after the restart finds the term on
    /// disk but no vote, and is granted the vote already given to another: two leaders of one
    /// term (election safety). With the vote synced, the restarted voter refuses it.
    fn crashes_between_votes(scenario: &mut Scenario) {
        scenario.process.crashes = true;
        scenario.targeting.crash_voters_restart_ms = Some(1);
    }

    /// Serde for a scenario's planted bug: its command-line name.
    pub mod bug_by_name {
        use keel_core::PlantedBug;
        use serde::{Deserialize, Deserializer, Serializer};

        /// Writes the bug's name, or null.
        pub fn serialize<S: Serializer>(bug: &Option<PlantedBug>, serializer: S) -> Result<S::Ok, S::Error> {
            match bug {
                Some(bug) => serializer.serialize_str(bug.name()),
                None => serializer.serialize_none(),
            }
        }

        /// Reads a bug's name, or null.
        pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<PlantedBug>, D::Error> {
            let name: Option<String> = Option::deserialize(deserializer)?;
            name.map(|name| name.parse().map_err(serde::de::Error::custom)).transpose()
        }
    }
}
