//! What the clients observed of their etcd operations (and of their native writes, whose replies
//! carry revisions too): for each one that completed with an answer, the real-time interval it ran in (as positions in one sequence of invocations and
//! completions, which the single-threaded simulator orders exactly as true time does) and what it
//! received: a write's reply with the log entry it was answered at, a range with the serving
//! node's applied index and revision, or a watch refused because its start was compacted. It
//! also keeps the true time each log entry was proposed at, for the lease check.
//!
//! Data flow: `clients.rs` reports invocations, completions and proposals; `etcd_client.rs`
//! leaves the answer of the operation about to complete with [`EtcdHistory::answered`]; the
//! checks of `etcd_checks.rs` read [`EtcdHistory::records`] and [`EtcdHistory::proposals`] at the
//! end of the run.

use std::collections::BTreeMap;

use keel_core::kv::{KeyRange, KvCommand, KvError, RangeResult};
use keel_core::{Index, LogId, NodeId};

use super::etcd_workload::EtcdOperation;
use super::mvcc_model::Reply;
use super::workload::{Operation, OperationKind};
use crate::history::{EventType, ProcessId};

/// What an etcd operation received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Observation {
    /// A write (put, delete range, txn, compact, lease command) answered at `log_id`.
    Write {
        /// The entry it was answered at.
        log_id: LogId,
        /// What the client received.
        reply: Reply,
    },
    /// A linearizable range, served by `node` once it had applied `applied_index`.
    Range {
        /// The serving node.
        node: NodeId,
        /// Its applied index when serving.
        applied_index: Index,
        /// The response header's revision: the node's store revision.
        header_revision: u64,
        /// The keys asked for.
        range: KeyRange,
        /// The revision asked for; 0 for the current one.
        revision: u64,
        /// The limit asked for.
        limit: u64,
        /// What the client received.
        result: Result<RangeResult, KvError>,
    },
    /// A watch whose start `node` refused.
    WatchRefused {
        /// The serving node.
        node: NodeId,
        /// Its applied index when refusing.
        applied_index: Index,
        /// The watch wanted the events after this revision.
        after_revision: u64,
        /// The error.
        error: KvError,
    },
}

/// One etcd operation that completed with an answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdRecord {
    /// The client.
    pub process: ProcessId,
    /// Position of its invocation in the run's sequence of invocations and completions.
    pub invoked: u64,
    /// Position of its completion.
    pub completed: u64,
    /// The highest revision any node had reached when it completed.
    pub revision_existing: u64,
    /// Whether it was a transaction with compares.
    pub compared: bool,
    /// What it received.
    pub observation: Observation,
}

/// The etcd operations' history.
#[derive(Debug, Default)]
pub struct EtcdHistory {
    sequence: u64,
    pending: BTreeMap<u64, u64>,
    answer: Option<Observation>,
    /// The operations that completed with an answer, in completion order.
    pub records: Vec<EtcdRecord>,
    /// The true time at which each log entry was proposed (client writes, expiries, refreshes).
    pub proposals: BTreeMap<LogId, u64>,
}

impl EtcdHistory {
    fn next(&mut self) -> u64 {
        self.sequence += 1;
        self.sequence
    }

    /// Records the invocation of `operation`: every etcd operation, and the native writes (their
    /// replies carry revisions too, which tighten the real-time check of the etcd reads).
    pub fn invoke(&mut self, operation: &Operation) {
        let native_write =
            matches!(operation.kind, OperationKind::Put { .. } | OperationKind::Cas { .. } | OperationKind::Delete);
        if native_write || matches!(operation.kind, OperationKind::Etcd(_)) {
            let position = self.next();
            self.pending.insert(operation.id, position);
        }
    }

    /// The operation about to complete received `observation`.
    pub fn answered(&mut self, observation: Observation) {
        self.answer = Some(observation);
    }

    /// Records the completion of `operation`, with the answer left by [`EtcdHistory::answered`]
    /// when it completed `ok`; `revision_existing` is the highest revision reached by then.
    pub fn complete(&mut self, operation: &Operation, event_type: EventType, revision_existing: u64) {
        let answer = self.answer.take();
        let Some(invoked) = self.pending.remove(&operation.id) else { return };
        let completed = self.next();
        if let (EventType::Ok, Some(observation)) = (event_type, answer) {
            let process = operation.process;
            let compared = matches!(&operation.kind,
                OperationKind::Etcd(EtcdOperation::Write(KvCommand::Txn { compares, .. })) if !compares.is_empty());
            self.records.push(EtcdRecord { process, invoked, completed, revision_existing, compared, observation });
        }
    }

    /// The entry `log_id` was proposed at true time `now_ms`.
    pub fn proposed(&mut self, log_id: LogId, now_ms: u64) {
        self.proposals.insert(log_id, now_ms);
    }
}

/// How much of the etcd API a run exercised: what a report or a test needs to see that every
/// kind of operation ran and every kind of answer came back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EtcdSummary {
    /// Writes answered (every kind).
    pub writes: u64,
    /// Transactions (with compares) whose compares held.
    pub txns_succeeded: u64,
    /// Transactions (with compares) whose compares failed.
    pub txns_failed: u64,
    /// Writes refused with an error (lease not found, compacted, ...).
    pub write_errors: u64,
    /// Ranges served.
    pub ranges: u64,
    /// Ranges at a past revision that returned keys.
    pub past_ranges: u64,
    /// Ranges refused as compacted.
    pub ranges_compacted: u64,
    /// Watches refused as compacted.
    pub watches_refused: u64,
    /// Leases granted.
    pub leases_granted: u64,
}

impl EtcdHistory {
    /// What the run's etcd operations did.
    pub fn summary(&self) -> EtcdSummary {
        let mut summary = EtcdSummary::default();
        for record in &self.records {
            match &record.observation {
                Observation::Write { reply, .. } => {
                    summary.writes += 1;
                    summary.write_errors += u64::from(reply.error.is_some());
                    let granted = reply.responses.iter().any(|r| matches!(r, keel_core::kv::OpResponse::Lease { .. }));
                    summary.leases_granted += u64::from(granted);
                    if record.compared && reply.error.is_none() {
                        summary.txns_succeeded += u64::from(reply.succeeded);
                        summary.txns_failed += u64::from(!reply.succeeded);
                    }
                }
                Observation::Range { revision, result, .. } => {
                    summary.ranges += 1;
                    summary.past_ranges += u64::from(*revision > 0 && result.is_ok());
                    summary.ranges_compacted += u64::from(matches!(result, Err(KvError::Compacted { .. })));
                }
                Observation::WatchRefused { .. } => summary.watches_refused += 1,
            }
        }
        summary
    }
}
