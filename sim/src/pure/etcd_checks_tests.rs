//! Planted violations for the etcd checks: hand-made histories with a wrong revision order, a
//! stale range at a revision, a wrong transaction branch, a watch gap and an early lease expiry,
//! each of which must be reported, next to the correct history, which must pass. The committed
//! log is built the way the simulator builds it: a keel-core store plays the node, and the
//! reference model replays the same commands.

use bytes::Bytes;
use keel_core::kv::{Compare, CompareOp, CompareTarget, KeyRange, KvCommand, KvError, KvStore, TxnOp};
use keel_core::LogId;

use super::*;
use crate::pure::etcd_history::EtcdHistory;
use crate::pure::mvcc_model::Reply;
use crate::pure::recorder::{Recorder, WatchStream};
use crate::pure::reference::{event_record, events_of, EventRecord};

/// A store playing the node, and the committed log the checks read.
#[derive(Default)]
struct Fixture {
    store: KvStore,
    log: CommittedLog,
    history: EtcdHistory,
    next_index: u64,
}

fn b(text: &str) -> Bytes {
    Bytes::from(text.to_string())
}

fn put(key: &str, value: &str) -> KvCommand {
    KvCommand::Put { key: b(key), value: b(value), ttl_ms: None }
}

impl Fixture {
    /// Commits `command`, proposed at true time `proposed_ms` and stamped with it.
    fn commit(&mut self, proposed_ms: u64, command: KvCommand) -> (LogId, Reply) {
        self.next_index += 1;
        let log_id = LogId::new(1, self.next_index);
        let result = self.store.apply(log_id.index, proposed_ms, &command);
        self.log.record_applied(1, 1, log_id, Some(&(proposed_ms, command)), events_of(&result)).unwrap();
        self.history.proposed(log_id, proposed_ms);
        (log_id, Reply::of(&result))
    }

    /// Records an operation invoked at position `invoked` and completed at `completed`.
    fn record(&mut self, invoked: u64, completed: u64, observation: Observation) {
        let revision_existing = self.log.current_revision();
        let record = EtcdRecord { process: 0, invoked, completed, revision_existing, compared: false, observation };
        self.history.records.push(record);
    }

    /// Asserts that the checks report a violation mentioning `what`.
    fn assert_reported(&self, what: &str) {
        let error = self.check().unwrap_err();
        assert!(error.contains(what), "{error}");
    }

    /// `e0` put to `a` at revision 1, then to `b` at revision 2.
    fn with_two_versions() -> Self {
        let mut fixture = Self::default();
        fixture.commit(10, put("e0", "a"));
        fixture.commit(20, put("e0", "b"));
        fixture
    }

    fn check(&self) -> Result<(), String> {
        let clock = ClockFaults { drift_ppm_max: 0, offset_ms_max: 0, wall_steps: false, beyond_bound: false };
        check(&self.history, &self.log, &clock)
    }
}

fn range(header_revision: u64, applied_index: u64, revision: u64, result: Result<RangeResult, KvError>) -> Observation {
    let range = KeyRange::prefix(b("e"));
    Observation::Range { node: 1, applied_index, header_revision, range, revision, limit: 0, result }
}

use keel_core::kv::RangeResult;

#[test]
fn a_correct_history_passes() {
    let mut fixture = Fixture::default();
    let (first, reply) = fixture.commit(10, put("e0", "a"));
    fixture.record(1, 2, Observation::Write { log_id: first, reply });
    let (second, reply) = fixture.commit(20, put("e0", "b"));
    fixture.record(3, 4, Observation::Write { log_id: second, reply });
    let past = fixture.store.range(&KeyRange::prefix(b("e")), Some(2), 0);
    fixture.record(5, 6, range(3, 2, 2, past));
    assert_eq!(fixture.check(), Ok(()));
}

#[test]
fn a_wrong_revision_order_is_reported() {
    let mut fixture = Fixture::default();
    let (first, first_reply) = fixture.commit(10, put("e0", "a"));
    let (second, second_reply) = fixture.commit(20, put("e1", "b"));
    // The write at revision 3 completed before the write at revision 2 was invoked.
    fixture.record(1, 2, Observation::Write { log_id: second, reply: second_reply });
    fixture.record(3, 4, Observation::Write { log_id: first, reply: first_reply });
    fixture.assert_reported("real-time order");
}

#[test]
fn a_read_below_a_completed_write_is_reported() {
    let mut fixture = Fixture::default();
    let (first, reply) = fixture.commit(10, put("e0", "a"));
    fixture.record(1, 2, Observation::Write { log_id: first, reply });
    // A node that had not applied the write served a later range at index 0.
    fixture.record(3, 4, range(1, 0, 0, Ok(RangeResult { revision: 1, ..RangeResult::default() })));
    fixture.assert_reported("real-time order");
}

#[test]
fn a_stale_range_at_a_revision_is_reported() {
    let mut fixture = Fixture::with_two_versions();
    // Asked for revision 2, the node returned what revision 3 holds.
    let stale = fixture.store.range(&KeyRange::prefix(b("e")), Some(3), 0).map(|r| RangeResult { revision: 2, ..r });
    fixture.record(1, 2, range(3, 2, 2, stale));
    fixture.assert_reported("etcd range");
}

#[test]
fn a_range_below_the_compaction_point_must_be_refused() {
    let mut fixture = Fixture::with_two_versions();
    fixture.commit(30, KvCommand::Compact { revision: 3 });
    let refused = fixture.store.range(&KeyRange::prefix(b("e")), Some(2), 0);
    assert!(matches!(refused, Err(KvError::Compacted { .. })));
    fixture.record(1, 2, range(3, 3, 2, refused));
    assert_eq!(fixture.check(), Ok(()));
    // Served anyway from history the node should no longer have: reported.
    let served = fixture.log.range_at(&KeyRange::prefix(b("e")), 2, 0);
    fixture.record(3, 4, range(3, 3, 2, Ok(served)));
    fixture.assert_reported("etcd range");
}

#[test]
fn a_wrong_txn_branch_is_reported() {
    let mut fixture = Fixture::default();
    fixture.commit(10, put("e0", "a"));
    let compare =
        Compare { key: b("e0"), range_end: Bytes::new(), target: CompareTarget::Version(1), op: CompareOp::Greater };
    let txn = KvCommand::Txn {
        compares: vec![compare],
        success: vec![TxnOp::Put { key: b("e1"), value: b("yes"), ttl_ms: None }],
        failure: vec![TxnOp::Range { start: b("e0"), end: Bytes::new(), limit: 0 }],
    };
    let (log_id, reply) = fixture.commit(20, txn);
    assert!(!reply.succeeded, "version 1 is not greater than 1");
    // The client was told the success branch ran.
    let wrong = Reply { succeeded: true, responses: vec![keel_core::kv::OpResponse::Put { prev: None }], ..reply };
    fixture.record(1, 2, Observation::Write { log_id, reply: wrong });
    fixture.assert_reported("reference model computes");
}

#[test]
fn a_watch_gap_is_reported() {
    let mut fixture = Fixture::default();
    for (time, value) in [(10, "a"), (20, "b"), (30, "c")] {
        fixture.commit(time, put("e0", value));
    }
    // What the node's store delivers from revision 1, without revision 2.
    let mut events: Vec<EventRecord> = fixture.store.watch(0).unwrap().map(|e| event_record(&e)).collect();
    events.remove(1);
    let mut recorder = Recorder::default();
    let stream = WatchStream { node: 1, prefix: "e".into(), after_revision: 0, events, covered_through: Some(3) };
    recorder.watches.push(stream);
    let error = crate::pure::weak_checks::check(&recorder, &fixture.log).unwrap_err();
    assert!(error.contains("missing"), "{error}");
}

#[test]
fn an_early_lease_expiry_is_reported() {
    let mut fixture = Fixture::default();
    fixture.commit(1_000, KvCommand::LeaseGrant { id: 0, ttl_ms: 2_000 });
    let attach = TxnOp::PutInLease { key: b("e0"), value: b("a"), lease: 1 };
    fixture.commit(1_100, KvCommand::Txn { compares: Vec::new(), success: vec![attach], failure: Vec::new() });
    // Proposed 1.5 s after the grant, with a cutoff that claims the 2 s had passed.
    let (_, reply) = fixture.commit(2_500, KvCommand::Expire { now_ms: 3_000 });
    assert_eq!(reply.revision, 3, "the expiry deleted the attached key");
    fixture.assert_reported("early expiry: lease 1");
}

#[test]
fn a_lease_kept_alive_is_measured_from_its_keep_alive() {
    let mut fixture = Fixture::default();
    fixture.commit(1_000, KvCommand::LeaseGrant { id: 7, ttl_ms: 2_000 });
    fixture.commit(2_000, KvCommand::LeaseKeepAlive { id: 7 });
    fixture.commit(3_500, KvCommand::Expire { now_ms: 4_000 });
    fixture.assert_reported("early expiry: lease 7");
    let mut on_time = Fixture::default();
    on_time.commit(1_000, KvCommand::LeaseGrant { id: 7, ttl_ms: 2_000 });
    on_time.commit(2_000, KvCommand::LeaseKeepAlive { id: 7 });
    on_time.commit(4_000, KvCommand::Expire { now_ms: 4_000 });
    assert_eq!(on_time.log.expiries.len(), 1);
    assert_eq!(on_time.check(), Ok(()));
}

#[test]
fn a_reply_from_the_future_is_reported() {
    let mut fixture = Fixture::default();
    let (log_id, reply) = fixture.commit(10, put("e0", "a"));
    fixture.record(1, 2, Observation::Write { log_id, reply });
    fixture.history.records[0].revision_existing = 0;
    fixture.assert_reported("only 0 existed");
}

#[test]
fn the_workload_exercises_every_etcd_operation_and_answer() {
    let mut total = crate::pure::etcd_history::EtcdSummary::default();
    let mut expiries = 0;
    for seed in 1..=8 {
        let outcome = crate::pure::run(crate::pure::Scenario::from_seed(seed), false);
        assert!(outcome.passed(), "seed {seed}: {}", outcome.verdict.describe());
        let etcd = outcome.etcd;
        total.writes += etcd.writes;
        total.txns_succeeded += etcd.txns_succeeded;
        total.txns_failed += etcd.txns_failed;
        total.write_errors += etcd.write_errors;
        total.ranges += etcd.ranges;
        total.past_ranges += etcd.past_ranges;
        total.ranges_compacted += etcd.ranges_compacted;
        total.leases_granted += etcd.leases_granted;
        total.watches_refused += etcd.watches_refused;
        expiries += outcome.expiries;
    }
    let counts = [
        total.writes,
        total.txns_succeeded,
        total.txns_failed,
        total.write_errors,
        total.ranges,
        total.past_ranges,
        total.ranges_compacted,
        total.leases_granted,
        total.watches_refused,
        expiries as u64,
    ];
    assert!(counts.iter().all(|count| *count > 0), "{total:?}, {expiries} expiries");
}
