//! Applying committed commands: puts, deletes, compare-and-swap, transactions, compaction and
//! expiry. All changes of one command share one new revision (none if nothing changed) and are
//! numbered in the order they are made; the command's events are read back from the history.
//!
//! Rules, as in etcd: a put always makes a new version, even with an unchanged value; a delete
//! of a missing key changes nothing; transaction compares are all evaluated against the state
//! before the transaction, and its operations run in order, each seeing the earlier ones (a key
//! may be written twice in one transaction: it gets two versions in the same revision).

use std::collections::BTreeSet;
use std::sync::Arc;

use bytes::Bytes;

use super::command::{Compare, CompareOp, CompareTarget, KeyRange, KvCommand, TxnOp};
use super::error::KvError;
use super::event::KvEvent;
use super::store::{ChangeId, KeyValue, KeyVersion, KvStore, LiveValue, RangeResult};

/// What applying one command did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApplyResult {
    /// The log index the command was applied at.
    pub log_index: u64,
    /// The store revision after the command (unchanged if it changed nothing).
    pub revision: u64,
    /// `false` when a compare-and-swap or transaction compare failed, or on `error`; `true`
    /// otherwise (a delete of a missing key succeeds, deleting nothing).
    pub succeeded: bool,
    /// Why the command was refused: a [`KvCommand::Compact`] at an unusable revision, a
    /// transaction or lease command whose key or lease is missing, a command that grows the
    /// store while it is out of space ([`KvError::NoSpace`]), an auth command breaking a rule of
    /// the auth table, or a [`KvCommand::Authorized`] checked at an old auth revision
    /// ([`KvError::AuthOldRevision`]).
    pub error: Option<KvError>,
    /// One response per operation run: a put, delete or delete-range gives one; a transaction
    /// one per operation of the branch taken; a compare-and-swap a `Put` when it succeeded, a
    /// `Range` with the key's current value when it failed; an expiry one `Delete` of the expired
    /// keys; a compaction, an alarm or an auth command none.
    pub responses: Vec<OpResponse>,
    /// The changes made, in order, all with revision `revision`.
    pub events: Vec<KvEvent>,
}

impl ApplyResult {
    /// A command refused as a whole: nothing changed.
    fn refused(log_index: u64, revision: u64, error: KvError) -> Self {
        ApplyResult { log_index, revision, succeeded: false, error: Some(error), responses: vec![], events: vec![] }
    }
}

/// The response to one operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpResponse {
    /// A put, with the key's previous value (`None` if it was created).
    Put {
        /// The key before the put.
        prev: Option<KeyValue>,
    },
    /// A delete, with the keys deleted as they were before (empty if none was live).
    Delete {
        /// The deleted keys in key order.
        deleted: Vec<KeyValue>,
    },
    /// A read inside a transaction.
    Range(RangeResult),
    /// A lease granted or kept alive: its id and granted time to live.
    Lease {
        /// The lease id.
        id: u64,
        /// Its time to live in milliseconds.
        ttl_ms: u64,
    },
    /// A nested transaction: which branch ran, and one response per operation of it.
    Txn {
        /// Whether every compare of the nested transaction held.
        succeeded: bool,
        /// The responses of the branch taken.
        responses: Vec<OpResponse>,
    },
}

/// The branches a transaction takes, decided before any of its operations runs: every compare,
/// nested ones included, sees the state before the transaction (etcd's "compare to path").
#[derive(Debug)]
struct TxnPlan<'a> {
    succeeded: bool,
    ops: &'a [TxnOp],
    /// The plans of the nested transactions among `ops`, in order.
    nested: Vec<TxnPlan<'a>>,
}

/// The revision a command in progress writes, and the number of its next change.
#[derive(Debug)]
struct PendingRevision {
    revision: u64,
    next_sub: u32,
}

impl PendingRevision {
    fn next_change(&mut self) -> ChangeId {
        let change = ChangeId { revision: self.revision, sub: self.next_sub };
        self.next_sub = self.next_sub.checked_add(1).expect("more than u32::MAX changes in one revision");
        change
    }

    fn changed(&self) -> bool {
        self.next_sub > 0
    }

    /// The revision a read at this point of the command observes.
    fn observed(&self) -> u64 {
        if self.changed() {
            self.revision
        } else {
            self.revision - 1
        }
    }
}

/// The expiry deadline of a value written with `ttl_ms` by an entry stamped `proposed_at_ms`.
fn expiry_deadline(proposed_at_ms: u64, ttl_ms: Option<u64>) -> Option<u64> {
    ttl_ms.map(|ttl_ms| proposed_at_ms.saturating_add(ttl_ms))
}

impl KvStore {
    /// Applies the committed command at `log_index`, stamped by the proposing leader with its
    /// clock `proposed_at_ms` (used only for time-to-live deadlines). Deterministic: the same
    /// store, index, stamp and command always give the same result and the same store.
    ///
    /// # Panics
    /// If `log_index` is not above [`KvStore::last_applied_index`]: entries must be applied once
    /// each, in log order.
    pub fn apply(&mut self, log_index: u64, proposed_at_ms: u64, command: &KvCommand) -> ApplyResult {
        self.advance_applied_index(log_index);
        // An `Authorized` is checked before anything else, its inner command's space included.
        let command = match self.auth.authorize(command) {
            Ok(command) => command,
            Err(error) => return ApplyResult::refused(log_index, self.current_revision, error),
        };
        if let Err(error) = self.check_space(command) {
            return ApplyResult::refused(log_index, self.current_revision, error);
        }
        let mut pending = PendingRevision { revision: self.current_revision + 1, next_sub: 0 };
        let (succeeded, error, responses) = self.apply_change(&mut pending, proposed_at_ms, command);
        let events = self.finish(pending);
        ApplyResult { log_index, revision: self.current_revision, succeeded, error, responses, events }
    }

    /// Applies one command (already authorized and checked for space) into `pending`: whether it
    /// succeeded, why it was refused, and its responses.
    fn apply_change(
        &mut self,
        pending: &mut PendingRevision,
        proposed_at_ms: u64,
        command: &KvCommand,
    ) -> (bool, Option<KvError>, Vec<OpResponse>) {
        match command {
            KvCommand::Put { key, value, ttl_ms } => {
                (true, None, vec![self.put(pending, key, value, expiry_deadline(proposed_at_ms, *ttl_ms), 0)])
            }
            KvCommand::Delete { key } => (true, None, vec![self.delete_range(pending, &KeyRange::key(key.clone()))]),
            KvCommand::DeleteRange { start, end } => {
                (true, None, vec![self.delete_range(pending, &KeyRange::new(start.clone(), end.clone()))])
            }
            KvCommand::CompareAndSwap { key, expected_value, new_value, ttl_ms } => {
                let (succeeded, responses) =
                    self.compare_and_swap(pending, proposed_at_ms, key, expected_value.as_ref(), new_value, *ttl_ms);
                (succeeded, None, responses)
            }
            KvCommand::Txn { compares, success, failure } => {
                match self.txn(pending, proposed_at_ms, compares, success, failure) {
                    Ok((succeeded, responses)) => (succeeded, None, responses),
                    Err(error) => (false, Some(error), Vec::new()),
                }
            }
            KvCommand::Compact { revision } => match self.compact(*revision) {
                Ok(()) => (true, None, Vec::new()),
                Err(error) => (false, Some(error), Vec::new()),
            },
            KvCommand::Expire { now_ms } => (true, None, vec![self.expire(pending, *now_ms)]),
            KvCommand::LeaseGrant { .. }
            | KvCommand::LeaseRevoke { .. }
            | KvCommand::LeaseKeepAlive { .. }
            | KvCommand::LeaseRefreshAll => match self.apply_lease_command(pending, proposed_at_ms, command) {
                Ok(responses) => (true, None, responses),
                Err(error) => (false, Some(error), Vec::new()),
            },
            KvCommand::Alarm { member, alarm, active } => {
                self.set_alarm(*member, *alarm, *active);
                (true, None, Vec::new())
            }
            KvCommand::Auth(auth) => match self.auth.apply(auth) {
                Ok(()) => (true, None, Vec::new()),
                Err(error) => (false, Some(error), Vec::new()),
            },
            // `apply` unwrapped it already (`AuthState::authorize`); applying the inner command
            // keeps this match total.
            KvCommand::Authorized { command, .. } => self.apply_change(pending, proposed_at_ms, command),
        }
    }

    /// The lease commands: grant, revoke (deleting the lease's keys), keep-alive, refresh.
    fn apply_lease_command(
        &mut self,
        pending: &mut PendingRevision,
        proposed_at_ms: u64,
        command: &KvCommand,
    ) -> Result<Vec<OpResponse>, KvError> {
        Ok(match command {
            KvCommand::LeaseGrant { id, ttl_ms } => {
                let id = self.grant_lease(*id, *ttl_ms, proposed_at_ms)?;
                vec![OpResponse::Lease { id, ttl_ms: *ttl_ms }]
            }
            KvCommand::LeaseRevoke { id } => {
                let keys = self.remove_lease(*id)?;
                vec![OpResponse::Delete { deleted: self.delete_live_keys(pending, &keys) }]
            }
            KvCommand::LeaseKeepAlive { id } => {
                let ttl_ms = self.keep_lease_alive(*id, proposed_at_ms)?;
                vec![OpResponse::Lease { id: *id, ttl_ms }]
            }
            KvCommand::LeaseRefreshAll => {
                self.refresh_leases(proposed_at_ms);
                Vec::new()
            }
            _ => Vec::new(),
        })
    }

    /// Deletes those of `keys` that are live, in key order.
    fn delete_live_keys(&mut self, pending: &mut PendingRevision, keys: &BTreeSet<Bytes>) -> Vec<KeyValue> {
        let live: Vec<Bytes> = keys.iter().filter(|key| self.latest(key).is_some()).cloned().collect();
        live.iter().map(|key| self.delete_key(pending, key)).collect()
    }

    /// Records that the log entry at `log_index` was applied without touching the store (a no-op
    /// or membership entry), so that [`KvStore::last_applied_index`] and the snapshot's index
    /// follow the log.
    ///
    /// # Panics
    /// If `log_index` is not above [`KvStore::last_applied_index`].
    pub fn advance_applied_index(&mut self, log_index: u64) {
        assert!(
            log_index > self.last_applied_index,
            "log index {log_index} applied after {}: entries must be applied once each, in order",
            self.last_applied_index
        );
        self.last_applied_index = log_index;
    }

    /// Makes the pending revision current if it changed anything, and returns its events.
    fn finish(&mut self, pending: PendingRevision) -> Vec<KvEvent> {
        if !pending.changed() {
            return Vec::new();
        }
        assert!(
            pending.revision == self.current_revision + 1,
            "revision must advance by one: from {} to {}",
            self.current_revision,
            pending.revision
        );
        self.current_revision = pending.revision;
        self.events_of(pending.revision)
    }

    /// A compare-and-swap is the transaction `value == expected` (or `version == 0` when the key
    /// must not exist) ? put : read the key.
    fn compare_and_swap(
        &mut self,
        pending: &mut PendingRevision,
        proposed_at_ms: u64,
        key: &Bytes,
        expected_value: Option<&Bytes>,
        new_value: &Bytes,
        ttl_ms: Option<u64>,
    ) -> (bool, Vec<OpResponse>) {
        let target = match expected_value {
            Some(value) => CompareTarget::Value(value.clone()),
            None => CompareTarget::Version(0),
        };
        let compares = [Compare { key: key.clone(), range_end: Bytes::new(), target, op: CompareOp::Equal }];
        let success = [TxnOp::Put { key: key.clone(), value: new_value.clone(), ttl_ms }];
        let failure = [TxnOp::Range { start: key.clone(), end: Bytes::new(), limit: 0 }];
        let plan = self.plan(&compares, &success, &failure);
        (plan.succeeded, self.run_plan(pending, proposed_at_ms, &plan))
    }

    /// A transaction: decides every branch on the state before it, checks the branch's
    /// operations (a [`TxnOp::PutSameValue`] needs a live key), then runs them in order. A
    /// refused transaction changes nothing.
    fn txn(
        &mut self,
        pending: &mut PendingRevision,
        proposed_at_ms: u64,
        compares: &[Compare],
        success: &[TxnOp],
        failure: &[TxnOp],
    ) -> Result<(bool, Vec<OpResponse>), KvError> {
        let plan = self.plan(compares, success, failure);
        self.check_plan(&plan)?;
        Ok((plan.succeeded, self.run_plan(pending, proposed_at_ms, &plan)))
    }

    fn plan<'a>(&self, compares: &[Compare], success: &'a [TxnOp], failure: &'a [TxnOp]) -> TxnPlan<'a> {
        let succeeded = compares.iter().all(|compare| self.compare_holds(compare));
        let ops = if succeeded { success } else { failure };
        let nested = ops
            .iter()
            .filter_map(|op| match op {
                TxnOp::Txn { compares, success, failure } => Some(self.plan(compares, success, failure)),
                _ => None,
            })
            .collect();
        TxnPlan { succeeded, ops, nested }
    }

    /// Whether a compare holds now: for a range, on every live key of it (on a missing key when
    /// the range holds none).
    fn compare_holds(&self, compare: &Compare) -> bool {
        if compare.range_end.is_empty() {
            return compare.evaluate(self.latest(&compare.key).as_ref());
        }
        let range = KeyRange::new(compare.key.clone(), compare.range_end.clone());
        let live = self.range_latest(&range, self.current_revision, 0).kvs;
        if live.is_empty() {
            return compare.evaluate(None);
        }
        live.iter().all(|kv| compare.evaluate(Some(kv)))
    }

    fn check_plan(&self, plan: &TxnPlan<'_>) -> Result<(), KvError> {
        for op in plan.ops {
            match op {
                TxnOp::PutSameValue { key }
                | TxnOp::PutKeepLease { key, .. }
                | TxnOp::PutSameValueInLease { key, .. }
                | TxnOp::PutSameValueKeepLease { key }
                    if self.latest(key).is_none() =>
                {
                    return Err(KvError::KeyNotFound)
                }
                TxnOp::PutInLease { lease, .. } | TxnOp::PutSameValueInLease { lease, .. }
                    if !self.leases.contains_key(lease) =>
                {
                    return Err(KvError::LeaseNotFound)
                }
                TxnOp::RangeAt { revision, .. } => {
                    self.readable_revision(Some(*revision))?;
                }
                _ => {}
            }
        }
        plan.nested.iter().try_for_each(|nested| self.check_plan(nested))
    }

    fn run_plan(&mut self, pending: &mut PendingRevision, proposed_at_ms: u64, plan: &TxnPlan<'_>) -> Vec<OpResponse> {
        let mut nested = plan.nested.iter();
        plan.ops.iter().map(|op| self.apply_op(pending, proposed_at_ms, op, &mut nested)).collect()
    }

    /// Runs one operation; a nested transaction takes the next of `nested`, the plans made for
    /// the nested transactions of the same branch, in order.
    fn apply_op<'p>(
        &mut self,
        pending: &mut PendingRevision,
        proposed_at_ms: u64,
        op: &TxnOp,
        nested: &mut impl Iterator<Item = &'p TxnPlan<'p>>,
    ) -> OpResponse {
        match op {
            TxnOp::Put { key, value, ttl_ms } => {
                self.put(pending, key, value, expiry_deadline(proposed_at_ms, *ttl_ms), 0)
            }
            TxnOp::PutSameValue { key } => {
                let value = self.latest(key).map(|kv| kv.value).unwrap_or_default();
                self.put(pending, key, &value, None, 0)
            }
            TxnOp::PutInLease { key, value, lease } => self.put(pending, key, value, None, *lease),
            TxnOp::PutKeepLease { key, value } => {
                let lease = self.latest(key).map_or(0, |kv| kv.lease);
                self.put(pending, key, value, None, lease)
            }
            TxnOp::PutSameValueInLease { key, lease } => {
                let value = self.latest(key).map(|kv| kv.value).unwrap_or_default();
                self.put(pending, key, &value, None, *lease)
            }
            TxnOp::PutSameValueKeepLease { key } => {
                let (value, lease) = self.latest(key).map(|kv| (kv.value, kv.lease)).unwrap_or_default();
                self.put(pending, key, &value, None, lease)
            }
            TxnOp::Txn { .. } => {
                let inner = nested.next().expect("the plan holds one nested plan per nested transaction");
                OpResponse::Txn { succeeded: inner.succeeded, responses: self.run_plan(pending, proposed_at_ms, inner) }
            }
            TxnOp::Delete { key } => self.delete_range(pending, &KeyRange::key(key.clone())),
            TxnOp::DeleteRange { start, end } => self.delete_range(pending, &KeyRange::new(start.clone(), end.clone())),
            TxnOp::Range { start, end, limit } => {
                let limit = usize::try_from(*limit).unwrap_or(usize::MAX);
                let range = KeyRange::new(start.clone(), end.clone());
                OpResponse::Range(self.range_latest(&range, pending.observed(), limit))
            }
            TxnOp::RangeAt { start, end, limit, revision } => {
                let limit = usize::try_from(*limit).unwrap_or(usize::MAX);
                let range = KeyRange::new(start.clone(), end.clone());
                // Checked readable before the transaction began (check_plan); the transaction's
                // own changes are above `revision`, so they are not seen.
                OpResponse::Range(self.range(&range, Some(*revision), limit).unwrap_or_default())
            }
        }
    }

    fn put(
        &mut self,
        pending: &mut PendingRevision,
        key: &Bytes,
        value: &Bytes,
        expires_at_ms: Option<u64>,
        lease: u64,
    ) -> OpResponse {
        let change = pending.next_change();
        let versions = Arc::make_mut(self.keys.entry(key.clone()).or_default());
        let prev = versions.last().and_then(|last| {
            assert!(last.change < change, "change {change:?} is not after {:?} on the same key", last.change);
            KeyValue::of(key, last)
        });
        let (create_revision, version) = match &prev {
            Some(prev) => (prev.create_revision, prev.version + 1),
            None => (change.revision, 1),
        };
        let live = LiveValue { value: value.clone(), create_revision, version, expires_at_ms, lease };
        let version = KeyVersion { change, live: Some(live) };
        self.size_bytes += super::store::version_bytes(key, &version);
        versions.push(version);
        self.set_expiry(key, prev.as_ref().and_then(|prev| prev.expires_at_ms), expires_at_ms);
        self.move_key_lease(key, prev.as_ref().map_or(0, |prev| prev.lease), lease);
        self.changes.insert(change, key.clone());
        OpResponse::Put { prev }
    }

    fn delete_range(&mut self, pending: &mut PendingRevision, range: &KeyRange) -> OpResponse {
        let live: Vec<Bytes> = range
            .select(&self.keys)
            .filter(|(_, versions)| versions.last().is_some_and(|last| last.live.is_some()))
            .map(|(key, _)| key.clone())
            .collect();
        let deleted = live.iter().map(|key| self.delete_key(pending, key)).collect();
        OpResponse::Delete { deleted }
    }

    /// Deletes a live key, returning its value before the delete.
    fn delete_key(&mut self, pending: &mut PendingRevision, key: &Bytes) -> KeyValue {
        let change = pending.next_change();
        let versions = Arc::make_mut(self.keys.get_mut(key).expect("only existing keys are deleted"));
        let last = versions.last().expect("a key's history is never empty");
        assert!(last.change < change, "change {change:?} is not after {:?} on the same key", last.change);
        let prev = KeyValue::of(key, last).expect("only live keys are deleted");
        let version = KeyVersion { change, live: None };
        self.size_bytes += super::store::version_bytes(key, &version);
        versions.push(version);
        self.set_expiry(key, prev.expires_at_ms, None);
        self.move_key_lease(key, prev.lease, 0);
        self.changes.insert(change, key.clone());
        prev
    }

    /// Deletes every key due at `now_ms` and every lease due then with its keys, the keys in
    /// key order.
    fn expire(&mut self, pending: &mut PendingRevision, now_ms: u64) -> OpResponse {
        let mut due: BTreeSet<Bytes> = self
            .expiries
            .iter()
            .take_while(|(expires_at_ms, _)| *expires_at_ms <= now_ms)
            .map(|(_, key)| key.clone())
            .collect();
        for id in self.due_leases(now_ms) {
            due.extend(self.remove_lease(id).unwrap_or_default());
        }
        OpResponse::Delete { deleted: self.delete_live_keys(pending, &due) }
    }

    fn set_expiry(&mut self, key: &Bytes, old: Option<u64>, new: Option<u64>) {
        if let Some(expires_at_ms) = old {
            let removed = self.expiries.remove(&(expires_at_ms, key.clone()));
            assert!(removed, "the expiry index lost a deadline");
        }
        if let Some(expires_at_ms) = new {
            self.expiries.insert((expires_at_ms, key.clone()));
        }
    }
}
