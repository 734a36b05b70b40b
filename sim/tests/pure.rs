//! Tests of the pure simulator: a sweep over a small fixed range of seeds (what CI can afford),
//! the determinism self-check (a seed run twice gives the same trace hash), and the independent
//! checkers catching hand-corrupted states. No assertion here depends on elapsed time.

use bytes::Bytes;
use keel_core::kv::{KvCommand, KvEventKind};
use keel_core::{Entry, EntryPayload, HardState, LogId, Membership, RaftNode, RecoveredState};
use keel_sim::pure::invariants::{check_log_matching, Invariants};
use keel_sim::pure::node::node_config;
use keel_sim::pure::recorder::{EventualRead, Recorder, WatchStream};
use keel_sim::pure::reference::{CommittedLog, EventRecord};
use keel_sim::pure::{run, weak_checks, RunVerdict, Scenario};

/// A seed's scenario, smaller so that a debug build runs many of them quickly.
fn small(seed: u64) -> Scenario {
    let mut scenario = Scenario::from_seed(seed);
    scenario.operation_count = scenario.operation_count.min(250);
    scenario
}

#[test]
fn a_small_sweep_finds_no_bug() {
    for seed in 1..=24 {
        let outcome = run(small(seed), false);
        assert!(
            outcome.passed(),
            "seed {seed} failed: {:?}\nreproduce: keel-sim run --seed {seed} --ops {}",
            outcome.verdict,
            outcome.scenario.operation_count
        );
        assert!(outcome.operations.ok > 0, "seed {seed}: no operation succeeded");
        assert!(outcome.messages_delivered > 0);
    }
}

#[test]
fn the_standard_scenario_passes_with_every_fault() {
    let mut scenario = Scenario::standard(7);
    scenario.operation_count = 600;
    let outcome = run(scenario, false);
    assert!(outcome.passed(), "{:?}", outcome.verdict);
    assert!(outcome.history.len() > 600, "the history holds invocations and completions");
}

#[test]
fn a_seed_run_twice_gives_the_same_trace() {
    for seed in [3, 11, 40] {
        let first = run(small(seed), false);
        let second = run(small(seed), true);
        assert_eq!(first.trace_hash, second.trace_hash, "seed {seed} is not deterministic");
        assert_eq!(first.trace_events, second.trace_events);
        assert_eq!(first.history, second.history);
        let lines = second.trace_lines.expect("lines were kept");
        assert_eq!(lines.len() as u64, second.trace_events + 1, "every event, then the `end` line");
    }
    assert_ne!(run(small(3), false).trace_hash, run(small(4), false).trace_hash);
}

#[test]
fn beyond_bound_runs_never_report_a_lease_violation_when_lease_reads_are_off() {
    let mut scenario = small(5);
    scenario.clock.beyond_bound = true;
    scenario.lease_reads = false;
    let outcome = run(scenario, false);
    assert!(!matches!(outcome.verdict, RunVerdict::ExpectedLeaseViolation(_)), "{:?}", outcome.verdict);
    assert!(outcome.passed(), "{:?}", outcome.verdict);
}

#[test]
fn election_safety_checker_catches_two_leaders_in_one_term() {
    let mut invariants = Invariants::default();
    invariants.observe_leader(1, 3).expect("a first leader");
    let violation = invariants.observe_leader(2, 3).expect_err("two leaders in term 3");
    assert!(violation.contains("election safety"), "{violation}");
}

fn node_with_log(id: u32, terms: &[u64]) -> RaftNode {
    let membership = Membership::with_voters([1, 2, 3]);
    let mut recovered = RecoveredState::bootstrap(membership);
    recovered.hard_state = HardState { term: *terms.last().unwrap_or(&0), voted_for: None };
    recovered.entries = terms
        .iter()
        .enumerate()
        .map(|(i, term)| Entry { log_id: LogId::new(*term, i as u64 + 1), payload: EntryPayload::Noop })
        .collect();
    RaftNode::new(node_config(&Scenario::from_seed(1), id), recovered).expect("a consistent log")
}

#[test]
fn log_matching_checker_catches_logs_that_differ_below_a_common_entry() {
    let a = node_with_log(1, &[1, 1, 2, 3]);
    let b = node_with_log(2, &[1, 2, 2, 3]);
    let violation = check_log_matching(1, &a, 2, &b).expect_err("index 2 differs below the common entry 3-4");
    assert!(violation.contains("log matching"), "{violation}");
    let c = node_with_log(3, &[1, 1, 2, 4]);
    check_log_matching(1, &a, 3, &c).expect("logs that diverge after their last common entry are fine");
}

fn put(key: &str, value: &str) -> (u64, KvCommand) {
    (0, KvCommand::Put { key: Bytes::from(key.to_string()), value: Bytes::from(value.to_string()), ttl_ms: None })
}

/// The event of a put of `key` at `revision`, the key having been put at every revision from 2
/// (the first change of a store: an empty one is at revision 1, as in etcd).
fn event(revision: u64, key: &str, value: &str) -> EventRecord {
    let (create_revision, version, lease) = (2, revision - 1, 0);
    EventRecord {
        revision,
        kind: KvEventKind::Put,
        key: key.into(),
        value: value.into(),
        create_revision,
        version,
        lease,
    }
}

fn committed_with_two_puts() -> CommittedLog {
    let mut committed = CommittedLog::default();
    committed.record_applied(1, 1, LogId::new(1, 1), Some(&put("a", "1")), vec![event(2, "a", "1")]).unwrap();
    committed.record_applied(1, 1, LogId::new(1, 2), Some(&put("a", "2")), vec![event(3, "a", "2")]).unwrap();
    committed
}

#[test]
fn state_machine_safety_checker_catches_another_entry_at_an_applied_index() {
    let mut committed = committed_with_two_puts();
    let violation = committed
        .record_applied(2, 2, LogId::new(2, 2), Some(&put("a", "9")), vec![event(3, "a", "9")])
        .expect_err("index 2 already holds 1-2");
    assert!(violation.contains("state machine safety"), "{violation}");
}

#[test]
fn weak_checks_catch_a_made_up_eventual_read_and_a_watch_gap() {
    let committed = committed_with_two_puts();
    let mut recorder = Recorder::default();
    recorder.eventual_reads.push(EventualRead { node: 1, applied_index: 1, key: "a".into(), value: Some("1".into()) });
    weak_checks::check(&recorder, &committed).expect("a stale but committed value is what eventual reads promise");
    recorder.eventual_reads.push(EventualRead { node: 1, applied_index: 2, key: "a".into(), value: Some("1".into()) });
    let violation = weak_checks::check(&recorder, &committed).expect_err("at index 2 the key holds 2");
    assert!(violation.contains("eventual read"), "{violation}");

    let mut recorder = Recorder::default();
    let gap = WatchStream {
        node: 1,
        prefix: "a".into(),
        after_revision: 1,
        events: vec![event(3, "a", "2")],
        covered_through: Some(3),
    };
    recorder.watches.push(gap);
    let violation = weak_checks::check(&recorder, &committed).expect_err("revision 2 is missing");
    assert!(violation.contains("missing"), "{violation}");
}
