//! The independent reference model of the MVCC key-value store, written from etcd's documented
//! semantics and not from keel-core's code: revisions, versions, create and mod revisions, puts
//! with a time to live, compare-and-swap, transactions (compares evaluated before any operation,
//! operations in order, nested transactions, reads inside), range deletes, compaction, leases
//! (grant, keep-alive, revoke, refresh by a new leader) and expiry through the log.
//!
//! It keeps every version of every key forever, so it can answer a range at any past revision
//! (compaction only moves the point below which such reads are refused), and it remembers which
//! log entry last set each deadline, so that the lease check can tell how much real time a key or
//! lease was given.
//!
//! Data flow: [`super::reference::CommittedLog`] replays every committed command on the model in
//! log order ([`MvccModel::apply`]); the model answers with the events, the [`Reply`] a client
//! must have received, and what an expiry deleted; the etcd checks then ask it for ranges at
//! past revisions ([`MvccModel::range_at`]).

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use keel_core::kv::{
    ApplyResult, Compare, CompareOp, CompareTarget, KeyRange, KeyValue, KvCommand, KvError, KvEventKind, OpResponse,
    RangeResult, TxnOp,
};
use keel_core::Index;

use super::reference::EventRecord;

/// What a client is told about a write: the store revision after it, whether its compares held,
/// its error, and one response per operation run. Compared field by field with the node's reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The store revision after the command.
    pub revision: u64,
    /// Whether the compares held (and no error).
    pub succeeded: bool,
    /// Why the command was refused, if it was.
    pub error: Option<KvError>,
    /// The responses of the operations run.
    pub responses: Vec<OpResponse>,
}

impl Reply {
    /// The reply a node gave, in the model's form.
    pub fn of(result: &ApplyResult) -> Self {
        Self {
            revision: result.revision,
            succeeded: result.succeeded,
            error: result.error.clone(),
            responses: result.responses.clone(),
        }
    }
}

/// A deletion by expiry: what was due, its time to live, and the log index of the entry that last
/// set its deadline (a put with a TTL, a lease grant, keep-alive or refresh).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expired {
    /// `key <name>` or `lease <id>`.
    pub what: String,
    /// Its time to live in milliseconds.
    pub ttl_ms: u64,
    /// The entry whose proposal started that time to live.
    pub anchor: Index,
}

/// What applying one command did in the model.
#[derive(Clone, Debug, Default)]
pub struct ModelApplied {
    /// The changes, in order.
    pub events: Vec<EventRecord>,
    /// The reply.
    pub reply: Option<Reply>,
    /// Keys and leases an expiry deleted.
    pub expired: Vec<Expired>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Live {
    value: Bytes,
    create_revision: u64,
    version: u64,
    expires_at_ms: Option<u64>,
    lease: u64,
    /// With a time to live: the entry that set it.
    anchor: Index,
    ttl_ms: u64,
}

#[derive(Clone, Debug)]
struct ModelLease {
    ttl_ms: u64,
    deadline_ms: u64,
    anchor: Index,
}

/// The model's state.
#[derive(Clone, Debug)]
pub struct MvccModel {
    revision: u64,
    compacted: u64,
    /// Every version of every key: `(revision, value)`, `None` a deletion, oldest first.
    keys: BTreeMap<Bytes, Vec<(u64, Option<Live>)>>,
    leases: BTreeMap<u64, ModelLease>,
    last_lease_id: u64,
}

impl Default for MvccModel {
    /// An empty store: etcd counts an empty store as revision 1, so the first change is 2.
    fn default() -> Self {
        Self { revision: 1, compacted: 0, keys: BTreeMap::new(), leases: BTreeMap::new(), last_lease_id: 0 }
    }
}

/// The command in progress: its log index, stamp, and the changes it made so far.
struct Pending {
    index: Index,
    stamp_ms: u64,
    events: Vec<EventRecord>,
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn key_value(key: &Bytes, revision: u64, live: &Live) -> KeyValue {
    KeyValue {
        key: key.clone(),
        value: live.value.clone(),
        create_revision: live.create_revision,
        mod_revision: revision,
        version: live.version,
        expires_at_ms: live.expires_at_ms,
        lease: live.lease,
    }
}

fn range_result(revision: u64, kvs: Vec<KeyValue>, limit: u64) -> RangeResult {
    let count = kvs.len();
    let keep = if limit == 0 { count } else { count.min(usize::try_from(limit).unwrap_or(usize::MAX)) };
    RangeResult { revision, more: keep < count, count, kvs: kvs.into_iter().take(keep).collect() }
}

impl MvccModel {
    /// The revision of the last change.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// Reads below this revision are refused.
    pub fn compacted(&self) -> u64 {
        self.compacted
    }

    /// The live keys and values now.
    pub fn live(&self) -> BTreeMap<String, String> {
        self.keys.keys().filter_map(|key| self.latest(key).map(|kv| (text(key), text(&kv.value)))).collect()
    }

    /// The live keys of `range` at `revision`, at most `limit` (0: all); the compacted or future
    /// revision errors a node must give.
    pub fn range_at(&self, range: &KeyRange, revision: u64, limit: u64) -> Result<RangeResult, KvError> {
        if revision < self.compacted {
            return Err(KvError::Compacted { requested: revision, compacted: self.compacted });
        }
        if revision > self.revision {
            return Err(KvError::FutureRevision { requested: revision, current: self.revision });
        }
        Ok(range_result(revision, self.kvs_at(range, revision), limit))
    }

    /// The live keys of `range` at `revision`, at most `limit` (0: all), whatever was compacted
    /// since (the model keeps every version).
    pub fn history_range(&self, range: &KeyRange, revision: u64, limit: u64) -> RangeResult {
        range_result(revision, self.kvs_at(range, revision), limit)
    }

    fn kvs_at(&self, range: &KeyRange, revision: u64) -> Vec<KeyValue> {
        let visible = |(key, versions): (&Bytes, &Vec<(u64, Option<Live>)>)| {
            let at = versions.iter().rev().find(|(changed, _)| *changed <= revision)?;
            at.1.as_ref().map(|live| key_value(key, at.0, live))
        };
        self.keys.iter().filter(|(key, _)| range.contains(key)).filter_map(visible).collect()
    }

    fn latest(&self, key: &[u8]) -> Option<KeyValue> {
        let (key, versions) = self.keys.get_key_value(key)?;
        let (revision, live) = versions.last()?;
        live.as_ref().map(|live| key_value(key, *revision, live))
    }

    fn latest_live(&self, key: &[u8]) -> Option<&Live> {
        self.keys.get(key)?.last()?.1.as_ref()
    }

    /// Applies the command committed at `index`, stamped `stamp_ms` by its proposer.
    pub fn apply(&mut self, index: Index, stamp_ms: u64, command: &KvCommand) -> ModelApplied {
        let mut pending = Pending { index, stamp_ms, events: Vec::new() };
        let mut expired = Vec::new();
        let outcome = match command {
            KvCommand::Put { key, value, ttl_ms } => Ok((true, vec![self.put(&mut pending, key, value, *ttl_ms, 0)])),
            KvCommand::Delete { key } => Ok((true, vec![self.delete_range(&mut pending, &KeyRange::key(key.clone()))])),
            KvCommand::DeleteRange { start, end } => {
                Ok((true, vec![self.delete_range(&mut pending, &KeyRange::new(start.clone(), end.clone()))]))
            }
            KvCommand::CompareAndSwap { key, expected_value, new_value, ttl_ms } => {
                Ok(self.compare_and_swap(&mut pending, key, expected_value.as_ref(), new_value, *ttl_ms))
            }
            KvCommand::Txn { compares, success, failure } => self.txn(&mut pending, compares, success, failure),
            KvCommand::Compact { revision } => self.compact(*revision).map(|()| (true, Vec::new())),
            KvCommand::Expire { now_ms } => Ok((true, vec![self.expire(&mut pending, *now_ms, &mut expired)])),
            KvCommand::LeaseGrant { .. }
            | KvCommand::LeaseRevoke { .. }
            | KvCommand::LeaseKeepAlive { .. }
            | KvCommand::LeaseRefreshAll => self.lease_command(&mut pending, command),
            // Alarms (NOSPACE refusing growth) are not modelled: the simulated workload never
            // raises one, so one in the log is a simulator bug.
            KvCommand::Alarm { .. } => panic!("an alarm in a simulated log: the workload never raises one"),
            // Auth is not modelled either: the simulated workload never proposes an auth command
            // or an authorized one (core's unit tests cover them), so one in the log is a bug.
            KvCommand::Auth(_) | KvCommand::Authorized { .. } => {
                panic!("an auth command in a simulated log: the workload never proposes one")
            }
        };
        if !pending.events.is_empty() {
            self.revision += 1;
        }
        let (succeeded, error, responses) = match outcome {
            Ok((succeeded, responses)) => (succeeded, None, responses),
            Err(error) => (false, Some(error), Vec::new()),
        };
        let reply = Reply { revision: self.revision, succeeded, error, responses };
        ModelApplied { events: pending.events, reply: Some(reply), expired }
    }

    /// The revision a change of the command in progress gets.
    fn next_revision(&self) -> u64 {
        self.revision + 1
    }

    fn put(
        &mut self,
        pending: &mut Pending,
        key: &Bytes,
        value: &Bytes,
        ttl_ms: Option<u64>,
        lease: u64,
    ) -> OpResponse {
        let revision = self.next_revision();
        let prev = self.latest(key);
        let (create_revision, version) = prev.as_ref().map_or((revision, 1), |p| (p.create_revision, p.version + 1));
        let live = Live {
            value: value.clone(),
            create_revision,
            version,
            expires_at_ms: ttl_ms.map(|ttl| pending.stamp_ms.saturating_add(ttl)),
            lease,
            anchor: pending.index,
            ttl_ms: ttl_ms.unwrap_or(0),
        };
        self.keys.entry(key.clone()).or_default().push((revision, Some(live)));
        pending.events.push(EventRecord {
            revision,
            kind: KvEventKind::Put,
            key: text(key),
            value: text(value),
            create_revision,
            version,
            lease,
        });
        OpResponse::Put { prev }
    }

    fn delete_key(&mut self, pending: &mut Pending, key: &Bytes) -> Option<KeyValue> {
        let prev = self.latest(key)?;
        let revision = self.next_revision();
        self.keys.entry(key.clone()).or_default().push((revision, None));
        let key = text(key);
        let deleted = EventRecord {
            revision,
            kind: KvEventKind::Delete,
            key,
            value: String::new(),
            create_revision: 0,
            version: 0,
            lease: 0,
        };
        pending.events.push(deleted);
        Some(prev)
    }

    fn delete_range(&mut self, pending: &mut Pending, range: &KeyRange) -> OpResponse {
        let keys: Vec<Bytes> = self.keys.keys().filter(|key| range.contains(key)).cloned().collect();
        OpResponse::Delete { deleted: keys.iter().filter_map(|key| self.delete_key(pending, key)).collect() }
    }

    fn delete_keys(&mut self, pending: &mut Pending, keys: &BTreeSet<Bytes>) -> OpResponse {
        OpResponse::Delete { deleted: keys.iter().filter_map(|key| self.delete_key(pending, key)).collect() }
    }

    fn compare_and_swap(
        &mut self,
        pending: &mut Pending,
        key: &Bytes,
        expected: Option<&Bytes>,
        new_value: &Bytes,
        ttl_ms: Option<u64>,
    ) -> (bool, Vec<OpResponse>) {
        let current = self.latest(key);
        if current.as_ref().map(|kv| &kv.value) == expected {
            (true, vec![self.put(pending, key, new_value, ttl_ms, 0)])
        } else {
            (false, vec![OpResponse::Range(range_result(self.revision, current.into_iter().collect(), 0))])
        }
    }

    fn compact(&mut self, revision: u64) -> Result<(), KvError> {
        if revision <= self.compacted {
            return Err(KvError::Compacted { requested: revision, compacted: self.compacted });
        }
        if revision > self.revision {
            return Err(KvError::FutureRevision { requested: revision, current: self.revision });
        }
        self.compacted = revision;
        Ok(())
    }

    fn lease_command(
        &mut self,
        pending: &mut Pending,
        command: &KvCommand,
    ) -> Result<(bool, Vec<OpResponse>), KvError> {
        let deadline = |ttl_ms: u64| pending.stamp_ms.saturating_add(ttl_ms);
        let responses = match command {
            KvCommand::LeaseGrant { id, ttl_ms } => {
                let id = match *id {
                    0 => (self.last_lease_id + 1..u64::MAX)
                        .find(|c| !self.leases.contains_key(c))
                        .ok_or(KvError::LeaseExists)?,
                    id if self.leases.contains_key(&id) => return Err(KvError::LeaseExists),
                    id => id,
                };
                self.last_lease_id = self.last_lease_id.max(id);
                let lease = ModelLease { ttl_ms: *ttl_ms, deadline_ms: deadline(*ttl_ms), anchor: pending.index };
                self.leases.insert(id, lease);
                vec![OpResponse::Lease { id, ttl_ms: *ttl_ms }]
            }
            KvCommand::LeaseKeepAlive { id } => {
                let lease = self.leases.get_mut(id).ok_or(KvError::LeaseNotFound)?;
                (lease.deadline_ms, lease.anchor) = (deadline(lease.ttl_ms), pending.index);
                vec![OpResponse::Lease { id: *id, ttl_ms: lease.ttl_ms }]
            }
            KvCommand::LeaseRevoke { id } => {
                self.leases.remove(id).ok_or(KvError::LeaseNotFound)?;
                let keys = self.keys_of_lease(*id);
                vec![self.delete_keys(pending, &keys)]
            }
            _ => {
                for lease in self.leases.values_mut() {
                    (lease.deadline_ms, lease.anchor) = (deadline(lease.ttl_ms), pending.index);
                }
                Vec::new()
            }
        };
        Ok((true, responses))
    }

    fn keys_of_lease(&self, id: u64) -> BTreeSet<Bytes> {
        self.keys.keys().filter(|key| self.latest_live(key).is_some_and(|live| live.lease == id)).cloned().collect()
    }

    /// Deletes every key with a time to live due at `now_ms` and every lease due then with its keys.
    fn expire(&mut self, pending: &mut Pending, now_ms: u64, expired: &mut Vec<Expired>) -> OpResponse {
        let mut due = BTreeSet::new();
        for (key, versions) in &self.keys {
            let Some(Some(live)) = versions.last().map(|(_, live)| live) else { continue };
            if live.expires_at_ms.is_some_and(|at| at <= now_ms) {
                expired.push(Expired { what: format!("key {}", text(key)), ttl_ms: live.ttl_ms, anchor: live.anchor });
                due.insert(key.clone());
            }
        }
        let due_leases: Vec<u64> =
            self.leases.iter().filter(|(_, l)| l.deadline_ms <= now_ms).map(|(id, _)| *id).collect();
        for id in due_leases {
            let lease = self.leases.remove(&id).expect("listed");
            expired.push(Expired { what: format!("lease {id}"), ttl_ms: lease.ttl_ms, anchor: lease.anchor });
            due.extend(self.keys_of_lease(id));
        }
        self.delete_keys(pending, &due)
    }
}

impl MvccModel {
    fn holds(&self, compare: &Compare) -> bool {
        let check = |kv: Option<&KeyValue>| {
            let field = |get: fn(&KeyValue) -> u64| kv.map_or(0, get);
            let ordering = match &compare.target {
                CompareTarget::Value(operand) => match kv {
                    Some(kv) => kv.value.as_ref().cmp(operand.as_ref()),
                    None => return false,
                },
                CompareTarget::Version(operand) => field(|kv| kv.version).cmp(operand),
                CompareTarget::CreateRevision(operand) => field(|kv| kv.create_revision).cmp(operand),
                CompareTarget::ModRevision(operand) => field(|kv| kv.mod_revision).cmp(operand),
                CompareTarget::Lease(operand) => field(|kv| kv.lease).cmp(operand),
            };
            match compare.op {
                CompareOp::Equal => ordering.is_eq(),
                CompareOp::NotEqual => ordering.is_ne(),
                CompareOp::Less => ordering.is_lt(),
                CompareOp::Greater => ordering.is_gt(),
            }
        };
        if compare.range_end.is_empty() {
            return check(self.latest(&compare.key).as_ref());
        }
        let kvs = self.kvs_at(&KeyRange::new(compare.key.clone(), compare.range_end.clone()), self.revision);
        if kvs.is_empty() {
            check(None)
        } else {
            kvs.iter().all(|kv| check(Some(kv)))
        }
    }

    /// Decides, on the state before the transaction, whether the transaction and each nested
    /// transaction of the branches taken succeed (etcd: every compare, nested ones included,
    /// sees the state before the outermost transaction); the decisions come out in the order
    /// the transactions run (depth first).
    fn decide(&self, compares: &[Compare], success: &[TxnOp], failure: &[TxnOp], decisions: &mut Vec<bool>) {
        let holds = compares.iter().all(|compare| self.holds(compare));
        decisions.push(holds);
        for op in if holds { success } else { failure } {
            if let TxnOp::Txn { compares, success, failure } = op {
                self.decide(compares, success, failure, decisions);
            }
        }
    }

    /// The first reason the operations of a branch (then those of its nested transactions)
    /// cannot run, checked before anything changes; `decisions` as [`MvccModel::decide`] made them.
    fn refusal(&self, ops: &[TxnOp], decisions: &mut impl Iterator<Item = bool>) -> Result<(), KvError> {
        if let Some(error) = ops.iter().find_map(|op| self.op_refusal(op)) {
            return Err(error);
        }
        for op in ops {
            if let TxnOp::Txn { success, failure, .. } = op {
                let holds = decisions.next().unwrap_or(false);
                self.refusal(if holds { success } else { failure }, decisions)?;
            }
        }
        Ok(())
    }

    /// Why one operation of a branch cannot run: a key it needs live is missing, its lease does
    /// not exist, or the revision it reads is compacted or in the future.
    fn op_refusal(&self, op: &TxnOp) -> Option<KvError> {
        match op {
            TxnOp::PutSameValue { key } | TxnOp::PutKeepLease { key, .. } | TxnOp::PutSameValueKeepLease { key } => {
                self.latest(key).is_none().then_some(KvError::KeyNotFound)
            }
            TxnOp::PutInLease { lease, .. } => (!self.leases.contains_key(lease)).then_some(KvError::LeaseNotFound),
            // etcd's order: the key first, then the lease.
            TxnOp::PutSameValueInLease { key, lease } => match self.latest(key) {
                None => Some(KvError::KeyNotFound),
                Some(_) => (!self.leases.contains_key(lease)).then_some(KvError::LeaseNotFound),
            },
            TxnOp::RangeAt { revision, .. } => self.range_at(&KeyRange::default(), *revision, 0).err(),
            _ => None,
        }
    }

    fn txn(
        &mut self,
        pending: &mut Pending,
        compares: &[Compare],
        success: &[TxnOp],
        failure: &[TxnOp],
    ) -> Result<(bool, Vec<OpResponse>), KvError> {
        let mut decisions = Vec::new();
        self.decide(compares, success, failure, &mut decisions);
        let branch = if decisions[0] { success } else { failure };
        self.refusal(branch, &mut decisions[1..].iter().copied())?;
        Ok((decisions[0], self.run(pending, branch, &mut decisions[1..].iter().copied())))
    }

    /// Runs a branch's operations in order; a nested transaction takes the next decision.
    fn run(
        &mut self,
        pending: &mut Pending,
        ops: &[TxnOp],
        decisions: &mut impl Iterator<Item = bool>,
    ) -> Vec<OpResponse> {
        let mut responses = Vec::new();
        for op in ops {
            let response = match op {
                TxnOp::Txn { success, failure, .. } => {
                    let holds = decisions.next().unwrap_or(false);
                    let inner = if holds { success } else { failure };
                    OpResponse::Txn { succeeded: holds, responses: self.run(pending, inner, decisions) }
                }
                other => self.run_op(pending, other),
            };
            responses.push(response);
        }
        responses
    }

    /// What a put-like operation writes: key, value, time to live and lease (etcd's put with
    /// `ignore_value` keeps the current value, with `ignore_lease` the current lease).
    fn put_of(&self, op: &TxnOp) -> Option<(Bytes, Bytes, Option<u64>, u64)> {
        let current = |key: &Bytes| self.latest(key);
        Some(match op {
            TxnOp::Put { key, value, ttl_ms } => (key.clone(), value.clone(), *ttl_ms, 0),
            TxnOp::PutSameValue { key } => (key.clone(), current(key).map(|kv| kv.value).unwrap_or_default(), None, 0),
            TxnOp::PutInLease { key, value, lease } => (key.clone(), value.clone(), None, *lease),
            TxnOp::PutKeepLease { key, value } => {
                (key.clone(), value.clone(), None, current(key).map_or(0, |kv| kv.lease))
            }
            TxnOp::PutSameValueInLease { key, lease } => {
                (key.clone(), current(key).map(|kv| kv.value).unwrap_or_default(), None, *lease)
            }
            TxnOp::PutSameValueKeepLease { key } => {
                let (value, lease) = current(key).map(|kv| (kv.value, kv.lease)).unwrap_or_default();
                (key.clone(), value, None, lease)
            }
            _ => return None,
        })
    }

    fn run_op(&mut self, pending: &mut Pending, op: &TxnOp) -> OpResponse {
        if let Some((key, value, ttl_ms, lease)) = self.put_of(op) {
            return self.put(pending, &key, &value, ttl_ms, lease);
        }
        match op {
            TxnOp::Delete { key } => self.delete_range(pending, &KeyRange::key(key.clone())),
            TxnOp::DeleteRange { start, end } => self.delete_range(pending, &KeyRange::new(start.clone(), end.clone())),
            TxnOp::Range { start, end, limit } => {
                let observed = if pending.events.is_empty() { self.revision } else { self.next_revision() };
                let kvs = self.kvs_at(&KeyRange::new(start.clone(), end.clone()), u64::MAX);
                OpResponse::Range(range_result(observed, kvs, *limit))
            }
            TxnOp::RangeAt { start, end, limit, revision } => OpResponse::Range(range_result(
                *revision,
                self.kvs_at(&KeyRange::new(start.clone(), end.clone()), *revision),
                *limit,
            )),
            _ => unreachable!("puts run above, nested transactions in `run`"),
        }
    }
}
