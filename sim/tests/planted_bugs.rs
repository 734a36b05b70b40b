//! Planted bugs: for each classic Raft bug keel-core can plant (feature `planted-bugs`), a sweep
//! over seeds 1..=1000 must find it, and every seed up to the failing one must pass without the
//! bug (so the failure comes from the bug, not from the scenario). Also: shrinking a planted-bug
//! failure gives a run that still fails the same way with no more operations or faults.
//!
//! Run in release (the sweeps run the whole simulator): `cargo test --release -p keel-sim
//! --features planted-bugs --test planted_bugs`. No assertion depends on elapsed time; the time
//! to the first failing seed is printed for the README's table (`-- --nocapture`).
#![cfg(feature = "planted-bugs")]

use keel_core::PlantedBug;
use keel_sim::pure::planted::{first_failure, plant, FirstFailure, CORE_ASSERTION};
use keel_sim::pure::shrink::{shrink, Overrides};
use keel_sim::pure::{run, Scenario};

/// The seeds a sweep must find every bug in.
const SEEDS: std::ops::Range<u64> = 1..1001;

fn jobs() -> usize {
    std::thread::available_parallelism().map_or(2, usize::from)
}

fn planted(bug: PlantedBug, seed: u64) -> Scenario {
    let mut scenario = Scenario::from_seed(seed);
    plant(&mut scenario, bug);
    scenario
}

/// Sweeps until the first failing seed, checks the failure came from the simulator's own
/// checkers, and that the same scenarios without the bug pass up to that seed.
fn sweep_finds(bug: PlantedBug) -> FirstFailure {
    let found = first_failure(SEEDS, jobs(), &|seed| planted(bug, seed))
        .unwrap_or_else(|| panic!("{bug}: no seed of {SEEDS:?} failed"));
    println!(
        "{bug}: first failing seed {} after {:.2} s, found by {}: {}",
        found.seed,
        found.elapsed.as_secs_f64(),
        found.detector,
        found.violation
    );
    assert!(
        !found.violation.starts_with(CORE_ASSERTION),
        "{bug}: only keel-core's own assertion caught it at seed {}: {}",
        found.seed,
        found.violation
    );
    for seed in 1..=found.seed {
        let mut scenario = planted(bug, seed);
        scenario.planted_bug = None;
        let outcome = run(scenario, false);
        assert!(outcome.passed(), "{bug}'s scenario fails without the bug at seed {seed}: {:?}", outcome.verdict);
    }
    found
}

#[test]
fn double_vote_is_found() {
    let found = sweep_finds(PlantedBug::DoubleVote);
    assert_eq!(found.detector, "election safety", "{}", found.violation);
}

#[test]
fn ack_before_sync_is_found() {
    sweep_finds(PlantedBug::AckBeforeSync);
}

#[test]
fn read_without_quorum_is_found() {
    sweep_finds(PlantedBug::ReadWithoutQuorum);
}

#[test]
fn no_truncate_conflict_is_found() {
    sweep_finds(PlantedBug::NoTruncateConflict);
}

#[test]
fn commit_previous_term_is_found() {
    let found = sweep_finds(PlantedBug::CommitPreviousTerm);
    let checkers = ["leader completeness", "state-machine safety", "no acknowledged write lost", "log matching"];
    assert!(checkers.contains(&found.detector), "{}: {}", found.detector, found.violation);
}

#[test]
fn lease_ignores_drift_is_found() {
    let found = sweep_finds(PlantedBug::LeaseIgnoresDrift);
    assert_eq!(found.detector, "linearizability", "{}", found.violation);
}

#[test]
fn vote_not_persisted_is_found() {
    let found = sweep_finds(PlantedBug::VoteNotPersisted);
    assert_eq!(found.detector, "election safety", "{}", found.violation);
}

/// The targeted scenarios are sharp, not unfair: the correct core passes them over more seeds
/// than any of their first failures needs.
#[test]
fn the_correct_core_passes_the_targeted_scenarios() {
    let bugs = [PlantedBug::CommitPreviousTerm, PlantedBug::LeaseIgnoresDrift, PlantedBug::VoteNotPersisted];
    for bug in bugs {
        let without_bug = |seed| {
            let mut scenario = planted(bug, seed);
            scenario.planted_bug = None;
            scenario
        };
        if let Some(failure) = first_failure(1..201, jobs(), &without_bug) {
            panic!("{bug}'s scenario fails without the bug at seed {}: {}", failure.seed, failure.violation);
        }
    }
}

#[test]
fn shrinking_a_planted_failure_keeps_it_failing_with_less() {
    let bug = PlantedBug::DoubleVote;
    let found = first_failure(SEEDS, jobs(), &|seed| planted(bug, seed)).expect("the sweep finds double-vote");
    let start = Overrides { planted_bug: Some(bug), ..Overrides::default() };
    let shrunk = shrink(found.seed, start, &mut |_| {}).expect("the seed fails, so it shrinks");
    println!(
        "shrunk seed {} in {} runs to{}: {:?}",
        found.seed,
        shrunk.runs,
        shrunk.minimal.args(),
        shrunk.minimal_size
    );
    assert!(shrunk.minimal_size.operations <= shrunk.original_size.operations);
    assert!(shrunk.minimal_size.faults <= shrunk.original_size.faults);
    assert!(shrunk.minimal_size.nodes <= shrunk.original_size.nodes);
    assert!(shrunk.minimal_size != shrunk.original_size, "nothing was shrunk: {:?}", shrunk.original_size);
    let again = run(shrunk.minimal.scenario(found.seed), false);
    assert!(!again.passed(), "the minimal run passes: {:?}", again.verdict);
    let keel_sim::pure::RunVerdict::Failed(why) = again.verdict else { unreachable!("checked above") };
    assert_eq!(keel_sim::pure::planted::detector(&why), shrunk.detector, "{why}");
}

/// A failing run of a targeted scenario replays from its trace file alone: its header carries
/// the scenario, clock rates up to 47 % apart included (the trace header once refused drift
/// bounds above 10 %, so these traces could be written but not replayed).
#[test]
fn a_stale_lease_read_failure_replays_from_its_trace() {
    use keel_sim::pure::header::TraceFile;
    use keel_sim::pure::replay::replay;
    let found = first_failure(SEEDS, jobs(), &|seed| planted(PlantedBug::LeaseIgnoresDrift, seed))
        .expect("lease-ignores-drift is found in 1..=1000");
    let outcome = run(planted(PlantedBug::LeaseIgnoresDrift, found.seed), true);
    assert!(!outcome.passed(), "seed {} fails again when run alone", found.seed);
    let text = outcome.trace_file().expect("the run kept its trace");
    let file = TraceFile::parse(&text).expect("the trace of a targeted scenario parses");
    assert!(file.header.scenario.clock.drift_ppm_max > 100_000, "the scenario is the targeted one");
    let report = replay(&file);
    assert!(report.identical(), "the replay diverged from the trace of seed {}", found.seed);
}
