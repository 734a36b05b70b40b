//! Property test: random command sequences applied to the store agree with a simple model (the
//! full map of every revision, kept in a `Vec`) at every past revision, and a store restored
//! from a snapshot midway ends identical to one that never was.

use std::collections::BTreeMap;

use bytes::Bytes;
use proptest::prelude::*;

use crate::kv::{
    ApplyResult, Compare, CompareOp, CompareTarget, KeyRange, KvCommand, KvError, KvEvent, KvStore, TxnOp,
};

/// A live key in the model.
#[derive(Clone, Debug, PartialEq, Eq)]
struct ModelValue {
    value: Bytes,
    create_revision: u64,
    mod_revision: u64,
    version: u64,
    expires_at_ms: Option<u64>,
}

type State = BTreeMap<Bytes, ModelValue>;

/// The whole map at every revision, and the compacted revision.
struct Model {
    states: Vec<State>,
    compacted: u64,
}

/// The command being applied to the model: the next state and whether it changed.
struct Step {
    state: State,
    revision: u64,
    changed: bool,
    proposed_at_ms: u64,
}

fn in_range(start: &[u8], end: &[u8], key: &[u8]) -> bool {
    match end {
        [] => key == start,
        [0] => key >= start,
        _ => key >= start && key < end,
    }
}

impl Step {
    fn put(&mut self, key: &Bytes, value: &Bytes, ttl_ms: Option<u64>) {
        let (create_revision, version) = match self.state.get(key) {
            Some(old) => (old.create_revision, old.version + 1),
            None => (self.revision, 1),
        };
        let expires_at_ms = ttl_ms.map(|ttl| self.proposed_at_ms.saturating_add(ttl));
        let value =
            ModelValue { value: value.clone(), create_revision, mod_revision: self.revision, version, expires_at_ms };
        self.state.insert(key.clone(), value);
        self.changed = true;
    }

    fn delete_where(&mut self, doomed: impl Fn(&Bytes, &ModelValue) -> bool) {
        let before = self.state.len();
        self.state.retain(|key, value| !doomed(key, value));
        self.changed |= self.state.len() != before;
    }

    fn holds(&self, compare: &Compare) -> bool {
        let current = self.state.get(&compare.key);
        let number = |field: fn(&ModelValue) -> u64| current.map_or(0, field);
        let ordering = match &compare.target {
            CompareTarget::Value(operand) => match current {
                None => return false,
                Some(current) => current.value.cmp(operand),
            },
            CompareTarget::Version(operand) => number(|v| v.version).cmp(operand),
            CompareTarget::CreateRevision(operand) => number(|v| v.create_revision).cmp(operand),
            CompareTarget::ModRevision(operand) => number(|v| v.mod_revision).cmp(operand),
            CompareTarget::Lease(operand) => 0.cmp(operand),
        };
        match compare.op {
            CompareOp::Equal => ordering.is_eq(),
            CompareOp::NotEqual => ordering.is_ne(),
            CompareOp::Less => ordering.is_lt(),
            CompareOp::Greater => ordering.is_gt(),
        }
    }

    fn op(&mut self, op: &TxnOp) {
        match op {
            TxnOp::Put { key, value, ttl_ms } => self.put(key, value, *ttl_ms),
            TxnOp::Delete { key } => self.delete_where(|k, _| k == key),
            TxnOp::DeleteRange { start, end } => self.delete_where(|k, _| in_range(start, end, k)),
            TxnOp::Range { .. } => {}
            // Covered by the unit tests in txn.rs; the model's strategy does not generate them.
            TxnOp::PutSameValue { .. }
            | TxnOp::PutInLease { .. }
            | TxnOp::PutKeepLease { .. }
            | TxnOp::PutSameValueInLease { .. }
            | TxnOp::PutSameValueKeepLease { .. }
            | TxnOp::RangeAt { .. }
            | TxnOp::Txn { .. } => {
                unreachable!("not generated for the model")
            }
        }
    }
}

impl Model {
    /// Applies a command; returns whether it succeeded.
    fn apply(&mut self, proposed_at_ms: u64, command: &KvCommand) -> bool {
        let current = self.states.len() as u64 - 1;
        let state = self.states.last().unwrap().clone();
        let mut step = Step { state, revision: current + 1, changed: false, proposed_at_ms };
        let succeeded = match command {
            KvCommand::Put { key, value, ttl_ms } => {
                step.put(key, value, *ttl_ms);
                true
            }
            KvCommand::Delete { key } => {
                step.delete_where(|k, _| k == key);
                true
            }
            KvCommand::DeleteRange { start, end } => {
                step.delete_where(|k, _| in_range(start, end, k));
                true
            }
            KvCommand::CompareAndSwap { key, expected_value, new_value, ttl_ms } => {
                let holds = match (step.state.get(key), expected_value) {
                    (None, None) => true,
                    (Some(current), Some(expected)) => current.value == expected,
                    _ => false,
                };
                if holds {
                    step.put(key, new_value, *ttl_ms);
                }
                holds
            }
            KvCommand::Txn { compares, success, failure } => {
                let holds = compares.iter().all(|compare| step.holds(compare));
                (if holds { success } else { failure }).iter().for_each(|op| step.op(op));
                holds
            }
            KvCommand::Compact { revision } => {
                let valid = *revision > self.compacted && *revision <= current;
                if valid {
                    self.compacted = *revision;
                }
                valid
            }
            KvCommand::Expire { now_ms } => {
                step.delete_where(|_, value| value.expires_at_ms.is_some_and(|at| at <= *now_ms));
                true
            }
            // Leases are covered by the unit tests in lease.rs; the model's strategy does not
            // generate them.
            KvCommand::LeaseGrant { .. }
            | KvCommand::LeaseRevoke { .. }
            | KvCommand::LeaseKeepAlive { .. }
            | KvCommand::LeaseRefreshAll
            | KvCommand::Alarm { .. }
            // Auth is covered by the unit tests in auth.rs; not generated either.
            | KvCommand::Auth(_)
            | KvCommand::Authorized { .. } => unreachable!("not generated for the model"),
        };
        if step.changed {
            self.states.push(step.state);
        }
        succeeded
    }

    /// Checks every revision of the store against the model.
    fn check(&self, store: &KvStore) -> Result<(), TestCaseError> {
        prop_assert_eq!(store.current_revision(), self.states.len() as u64 - 1);
        prop_assert_eq!(store.compacted_revision(), self.compacted);
        for (revision, state) in self.states.iter().enumerate() {
            let revision = revision as u64;
            let read = store.range(&KeyRange::all(), Some(revision), 0);
            if revision < self.compacted {
                prop_assert_eq!(read, Err(KvError::Compacted { requested: revision, compacted: self.compacted }));
                continue;
            }
            let read = read.unwrap();
            let expected: Vec<_> = state.iter().map(|(key, value)| (key.clone(), value.clone())).collect();
            let actual: Vec<_> = read
                .kvs
                .into_iter()
                .map(|kv| {
                    let value = ModelValue {
                        value: kv.value,
                        create_revision: kv.create_revision,
                        mod_revision: kv.mod_revision,
                        version: kv.version,
                        expires_at_ms: kv.expires_at_ms,
                    };
                    (kv.key, value)
                })
                .collect();
            prop_assert_eq!(actual, expected, "revision {}", revision);
        }
        Ok(())
    }
}

fn key() -> impl Strategy<Value = Bytes> {
    prop_oneof![Just("a"), Just("b"), Just("ba"), Just("c"), Just("d")].prop_map(|k| Bytes::from_static(k.as_bytes()))
}

fn end() -> impl Strategy<Value = Bytes> {
    prop_oneof![Just(Bytes::new()), Just(Bytes::from_static(&[0])), key()]
}

fn value() -> impl Strategy<Value = Bytes> {
    prop_oneof![Just("0"), Just("1"), Just("2")].prop_map(|v| Bytes::from_static(v.as_bytes()))
}

fn ttl() -> impl Strategy<Value = Option<u64>> {
    proptest::option::of(1..60u64)
}

fn op() -> impl Strategy<Value = TxnOp> {
    prop_oneof![
        (key(), value(), ttl()).prop_map(|(key, value, ttl_ms)| TxnOp::Put { key, value, ttl_ms }),
        key().prop_map(|key| TxnOp::Delete { key }),
        (key(), end()).prop_map(|(start, end)| TxnOp::DeleteRange { start, end }),
        (key(), end(), 0..3u64).prop_map(|(start, end, limit)| TxnOp::Range { start, end, limit }),
    ]
}

fn compare() -> impl Strategy<Value = Compare> {
    let target = prop_oneof![
        value().prop_map(CompareTarget::Value),
        (0..4u64).prop_map(CompareTarget::Version),
        (0..20u64).prop_map(CompareTarget::CreateRevision),
        (0..20u64).prop_map(CompareTarget::ModRevision),
    ];
    let op =
        prop_oneof![Just(CompareOp::Equal), Just(CompareOp::NotEqual), Just(CompareOp::Less), Just(CompareOp::Greater)];
    (key(), target, op).prop_map(|(key, target, op)| Compare { key, range_end: Bytes::new(), target, op })
}

fn command() -> impl Strategy<Value = KvCommand> {
    let ops = || proptest::collection::vec(op(), 0..4);
    prop_oneof![
        4 => (key(), value(), ttl()).prop_map(|(key, value, ttl_ms)| KvCommand::Put { key, value, ttl_ms }),
        1 => key().prop_map(|key| KvCommand::Delete { key }),
        1 => (key(), end()).prop_map(|(start, end)| KvCommand::DeleteRange { start, end }),
        2 => (key(), proptest::option::of(value()), value(), ttl()).prop_map(|(key, expected_value, new_value, ttl_ms)| {
            KvCommand::CompareAndSwap { key, expected_value, new_value, ttl_ms }
        }),
        2 => (proptest::collection::vec(compare(), 0..3), ops(), ops())
            .prop_map(|(compares, success, failure)| KvCommand::Txn { compares, success, failure }),
        1 => (0..30u64).prop_map(|revision| KvCommand::Compact { revision }),
        1 => (0..150u64).prop_map(|now_ms| KvCommand::Expire { now_ms }),
    ]
}

fn apply_all(store: &mut KvStore, commands: &[(u64, KvCommand)], first_index: u64) -> Vec<ApplyResult> {
    let mut index = first_index;
    commands
        .iter()
        .map(|(stamp, command)| {
            index += 1 + stamp % 2; // log indexes may skip (entries that are not key-value commands)
            store.apply(index, *stamp, command)
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn the_store_matches_the_model_at_every_revision(
        commands in proptest::collection::vec((0..100u64, command()), 1..40),
    ) {
        let mut store = KvStore::counting_from_zero();
        let mut model = Model { states: vec![State::new()], compacted: 0 };
        let mut events: Vec<KvEvent> = Vec::new();
        for (index, (stamp, command)) in commands.iter().enumerate() {
            let result = store.apply(index as u64 + 1, *stamp, command);
            let succeeded = model.apply(*stamp, command);
            prop_assert_eq!(result.succeeded, succeeded, "command {:?}", command);
            prop_assert_eq!(result.revision, store.current_revision());
            prop_assert!(result.events.iter().all(|event| event.revision == result.revision));
            events.extend(result.events);
            model.check(&store)?;
            prop_assert_eq!(store.size_bytes(), store.measured_size_bytes(), "the kept size after {:?}", command);
        }
        let replayed: Vec<_> = store.watch(store.compacted_revision()).unwrap().collect();
        let expected: Vec<_> = events.into_iter().filter(|e| e.revision > store.compacted_revision()).collect();
        prop_assert_eq!(replayed, expected, "a watch replays the applied events");
    }

    #[test]
    fn a_store_restored_midway_ends_identical(
        commands in proptest::collection::vec((0..100u64, command()), 1..40),
        split in any::<prop::sample::Index>(),
    ) {
        let split = split.index(commands.len() + 1);
        let (before, after) = commands.split_at(split);
        let mut straight = KvStore::counting_from_zero();
        let mut restarted = KvStore::counting_from_zero();
        apply_all(&mut straight, before, 0);
        apply_all(&mut restarted, before, 0);
        let snapshot = restarted.snapshot();
        prop_assert_eq!(&snapshot, &straight.snapshot());
        let mut restarted = KvStore::restore(&snapshot).unwrap();
        prop_assert_eq!(&restarted, &straight);
        let first_index = straight.last_applied_index();
        let straight_results = apply_all(&mut straight, after, first_index);
        let restarted_results = apply_all(&mut restarted, after, first_index);
        prop_assert_eq!(straight_results, restarted_results);
        prop_assert_eq!(straight.snapshot(), restarted.snapshot());
        prop_assert_eq!(straight, restarted);
    }
}
