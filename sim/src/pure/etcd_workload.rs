//! The etcd-API part of the workload: the operations etcd's v3 API offers, shaped as the
//! runtime's etcd layer (`runtime/src/etcd/`) sends them to the core, on keys of their own
//! (`e0`, `e1`, ...) so that the register model of the linearizability checker keeps covering the
//! native keys exactly. Each client remembers what it last saw (the highest revision, each key's
//! value, version and revisions, the leases it was granted) and draws compares that sometimes
//! hold and sometimes do not, ranges and watches from past revisions (some below the compaction
//! point), compactions, and lease grants, attached puts, keep-alives and revokes.
//!
//! Data flow: [`super::workload::Workload::next_operation`] hands a share of its draws to
//! [`EtcdWorkload::draw`]; `etcd_client.rs` carries the operation and reports what the client
//! received back to [`EtcdWorkload::observe`].

use bytes::Bytes;
use keel_core::kv::{
    prefix_range_end, Compare, CompareOp, CompareTarget, KeyRange, KeyValue, KvCommand, OpResponse, TxnOp,
};

use super::rng::SimRng;

/// Every etcd key starts with this, and no native key does.
pub const ETCD_KEY_PREFIX: &str = "e";

/// Percent of the workload's operations that are etcd operations.
pub const ETCD_SHARE_PERCENT: u64 = 20;

/// An etcd operation, as the etcd layer hands it to the core.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EtcdOperation {
    /// A request that goes through the log: Put (with its previous key-value), DeleteRange, Txn,
    /// Compact, LeaseGrant, Put with a lease (a Txn), LeaseKeepAlive, LeaseRevoke.
    Write(KvCommand),
    /// A linearizable Range, at `revision` (0: the current one).
    Range {
        /// The keys.
        range: KeyRange,
        /// The revision read; 0 for the current one.
        revision: u64,
        /// Most keys returned; 0 for all.
        limit: u64,
    },
    /// A watch of the operation's key prefix from `start_revision` (events at or above it).
    Watch {
        /// The first revision wanted.
        start_revision: u64,
        /// How long the watch stays open.
        duration_ms: u64,
    },
}

/// What one client last saw.
#[derive(Clone, Debug, Default)]
struct Knowledge {
    revision: u64,
    keys: Vec<Option<KeyValue>>,
    leases: Vec<u64>,
}

/// The etcd operations' own state: keys and each client's knowledge.
#[derive(Debug)]
pub struct EtcdWorkload {
    keys: Vec<String>,
    clients: Vec<Knowledge>,
}

fn bytes(text: &str) -> Bytes {
    Bytes::from(text.to_string())
}

impl EtcdWorkload {
    /// The etcd workload of `client_count` clients on `key_count` keys.
    pub fn new(client_count: usize, key_count: usize) -> Self {
        let keys = (0..key_count.max(2)).map(|k| format!("{ETCD_KEY_PREFIX}{k}")).collect();
        let knowledge = Knowledge { keys: vec![None; key_count.max(2)], ..Knowledge::default() };
        Self { keys, clients: vec![knowledge; client_count] }
    }

    /// Draws client `process`'s next etcd operation and its key; `value` is a fresh value.
    pub fn draw(&mut self, rng: &mut SimRng, process: usize, value: String) -> (EtcdOperation, String) {
        let key_index = rng.index(self.keys.len());
        let key = self.keys[key_index].clone();
        let known = self.clients.get(process).cloned().unwrap_or_default();
        let revision = known.revision;
        let lease =
            if known.leases.is_empty() { 1 + rng.between(0, 5) } else { known.leases[rng.index(known.leases.len())] };
        let write = |command| (EtcdOperation::Write(command), key.clone());
        match rng.between(0, 99) {
            0..=21 => write(self.txn(rng, &known, key_index, value)),
            22..=29 => write(KvCommand::Put { key: bytes(&key), value: bytes(&value), ttl_ms: None }),
            30..=33 => {
                // etcd's put with `ignore_value` and / or `ignore_lease`: the key must exist (and
                // a lease given, too).
                let op = match rng.between(0, 3) {
                    0 => TxnOp::PutSameValue { key: bytes(&key) },
                    1 => TxnOp::PutKeepLease { key: bytes(&key), value: bytes(&value) },
                    2 => TxnOp::PutSameValueInLease { key: bytes(&key), lease },
                    _ => TxnOp::PutSameValueKeepLease { key: bytes(&key) },
                };
                write(KvCommand::Txn { compares: Vec::new(), success: vec![op], failure: Vec::new() })
            }
            34..=39 => {
                let prefix = if rng.coin() { ETCD_KEY_PREFIX.to_string() } else { key.clone() };
                write(KvCommand::DeleteRange { start: bytes(&prefix), end: prefix_range_end(prefix.as_bytes()) })
            }
            40..=54 => {
                let past = match rng.between(0, 4) {
                    0 | 1 => 0,
                    2 | 3 => revision.saturating_sub(rng.between(0, 30)).max(1),
                    _ => rng.between(1, revision.max(1)),
                };
                let range =
                    if rng.coin() { KeyRange::prefix(bytes(ETCD_KEY_PREFIX)) } else { KeyRange::key(bytes(&key)) };
                (EtcdOperation::Range { range, revision: past, limit: rng.between(0, 3) }, key)
            }
            55..=57 => write(KvCommand::Compact { revision: revision.saturating_sub(rng.between(0, 60)).max(1) }),
            58..=65 => write(KvCommand::LeaseGrant { id: 0, ttl_ms: rng.between(100, 3_000) }),
            66..=77 => {
                let op = TxnOp::PutInLease { key: bytes(&key), value: bytes(&value), lease };
                write(KvCommand::Txn { compares: Vec::new(), success: vec![op], failure: Vec::new() })
            }
            78..=85 => write(KvCommand::LeaseKeepAlive { id: lease }),
            86..=90 => write(KvCommand::LeaseRevoke { id: lease }),
            _ => {
                let prefix = if rng.coin() { ETCD_KEY_PREFIX.to_string() } else { key };
                let oldest = if rng.between(0, 3) == 0 { 1 } else { revision.saturating_sub(20) };
                let start_revision = rng.between(oldest, revision + 1).max(1);
                (EtcdOperation::Watch { start_revision, duration_ms: rng.between(50, 1_000) }, prefix)
            }
        }
    }

    /// A transaction of one or two compares on what the client saw, and branches of puts,
    /// deletes, reads (some at a past revision) and now and then a nested transaction.
    fn txn(&self, rng: &mut SimRng, known: &Knowledge, key_index: usize, value: String) -> KvCommand {
        let mut compares = Vec::new();
        for _ in 0..rng.between(1, 2) {
            let compared = rng.index(self.keys.len());
            compares.push(self.compare(rng, known, compared));
        }
        let key = bytes(&self.keys[key_index]);
        let mut success = vec![TxnOp::Put { key: key.clone(), value: bytes(&value), ttl_ms: None }];
        match rng.between(0, 5) {
            0 => success.push(TxnOp::Delete { key: bytes(&self.keys[rng.index(self.keys.len())]) }),
            1 => success.push(TxnOp::Range { start: bytes(ETCD_KEY_PREFIX), end: prefix_range_end(b"e"), limit: 0 }),
            2 => {
                let revision = known.revision.saturating_sub(rng.between(0, 10)).max(1);
                success.push(TxnOp::RangeAt { start: key.clone(), end: Bytes::new(), limit: 0, revision });
            }
            3 => {
                let nested = TxnOp::Txn {
                    compares: vec![self.compare(rng, known, key_index)],
                    success: vec![TxnOp::Delete { key: key.clone() }],
                    failure: vec![TxnOp::Range { start: key.clone(), end: Bytes::new(), limit: 0 }],
                };
                success.push(nested);
            }
            _ => {}
        }
        let failure = if rng.coin() {
            vec![TxnOp::Range { start: key, end: Bytes::new(), limit: 0 }]
        } else {
            vec![TxnOp::DeleteRange { start: bytes(ETCD_KEY_PREFIX), end: prefix_range_end(b"e") }]
        };
        KvCommand::Txn { compares, success, failure }
    }

    fn compare(&self, rng: &mut SimRng, known: &Knowledge, key_index: usize) -> Compare {
        let seen = known.keys.get(key_index).cloned().flatten();
        let field = |get: fn(&KeyValue) -> u64| seen.as_ref().map_or(0, get);
        let target = match rng.between(0, 4) {
            0 => CompareTarget::Value(seen.as_ref().map_or_else(|| bytes("v"), |kv| kv.value.clone())),
            1 => CompareTarget::Version(field(|kv| kv.version)),
            2 => CompareTarget::CreateRevision(field(|kv| kv.create_revision)),
            3 => CompareTarget::ModRevision(field(|kv| kv.mod_revision)),
            _ => CompareTarget::Lease(field(|kv| kv.lease)),
        };
        let op = [CompareOp::Equal, CompareOp::Equal, CompareOp::NotEqual, CompareOp::Less, CompareOp::Greater]
            [rng.index(5)];
        if rng.between(0, 5) == 0 {
            // Every live key of the prefix must satisfy it (a missing key when there is none).
            return Compare { key: bytes(ETCD_KEY_PREFIX), range_end: prefix_range_end(b"e"), target, op };
        }
        Compare { key: bytes(&self.keys[key_index]), range_end: Bytes::new(), target, op }
    }

    /// Client `process` received `responses` at `revision`: remembers the revision, the keys it
    /// saw and the leases it was granted (and forgets one it revoked).
    pub fn observe(&mut self, process: usize, command: Option<&KvCommand>, revision: u64, responses: &[OpResponse]) {
        let Some(known) = self.clients.get_mut(process) else { return };
        known.revision = known.revision.max(revision);
        if let Some(KvCommand::LeaseRevoke { id }) = command {
            known.leases.retain(|lease| lease != id);
        }
        let mut seen = Vec::new();
        for response in responses {
            match response {
                OpResponse::Range(range) => seen.extend(range.kvs.iter().cloned()),
                OpResponse::Lease { id, .. } if !known.leases.contains(id) => {
                    known.leases.push(*id);
                    if known.leases.len() > 3 {
                        known.leases.remove(0);
                    }
                }
                _ => {}
            }
        }
        for kv in seen {
            if let Some(slot) = self.keys.iter().position(|k| k.as_bytes() == kv.key.as_ref()) {
                known.keys[slot] = Some(kv);
            }
        }
    }
}
