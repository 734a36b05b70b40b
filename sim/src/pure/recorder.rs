//! What the clients observed: the linearizable history (writes, deletes, compare-and-swaps,
//! linearizable and lease reads, and the expiry deletions the store made), plus the records the
//! weaker checks need (eventual reads, scans, watch streams) and the acknowledged writes.
//!
//! Expiry in the history: the leader's `Expire` entry deletes keys on every replica at one log
//! index, yet no client asked for it. Each key it deletes becomes a `Write(None)` by a system
//! process of its own, *invoked* when the leader proposed the entry and *completed* when the entry
//! was first applied anywhere. The deletion took effect at the entry's place in the log, which
//! lies between those two instants, so this is exactly the window a linearization needs; and no
//! client can have observed the deletion before the first application. Expire entries that never
//! commit delete nothing and appear nowhere. The time of each event is the true time with a
//! sequence number, so that the retroactive invocation sorts into place.
//!
//! Data flow: `clients.rs` calls [`Recorder::invoke`] and [`Recorder::complete`]; the simulator
//! reports expiry proposals and applications; at the end [`Recorder::history`] yields the sorted
//! [`HistoryEvent`]s for the checker.

use std::collections::{BTreeMap, BTreeSet};

use keel_core::{Index, LogId, NodeId};

use super::reference::EventRecord;
use super::workload::{Operation, OperationKind, ReadKind};
use crate::history::{EventType, Function, HistoryEvent, ProcessId};

/// Process ids of the system processes that stand for expiry deletions start here.
pub const SYSTEM_PROCESS_FIRST: ProcessId = 1 << 32;

/// An eventual read: served from one node's store at its applied index.
#[derive(Clone, Debug)]
pub struct EventualRead {
    /// The node that served it.
    pub node: NodeId,
    /// The node's applied index when it served the read.
    pub applied_index: Index,
    /// The key.
    pub key: String,
    /// The value returned.
    pub value: Option<String>,
}

/// A linearizable scan.
#[derive(Clone, Debug)]
pub struct ScanRecord {
    /// The node that served it.
    pub node: NodeId,
    /// The node's applied index when it served the scan.
    pub applied_index: Index,
    /// The highest index of a write acknowledged before the scan was invoked.
    pub floor_index: Index,
    /// The prefix.
    pub prefix: String,
    /// What it returned, in key order.
    pub result: Vec<(String, String)>,
}

/// One watch stream as the client received it.
#[derive(Clone, Debug)]
pub struct WatchStream {
    /// The node that served it.
    pub node: NodeId,
    /// The prefix watched.
    pub prefix: String,
    /// The watch started after this revision.
    pub after_revision: u64,
    /// The events received, in order.
    pub events: Vec<EventRecord>,
    /// The node's store revision when the stream ended: every event up to it was due.
    pub covered_through: Option<u64>,
}

/// Completed operations by outcome.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OutcomeCounts {
    /// Took effect (or read a value).
    pub ok: u64,
    /// Definitely did not take effect.
    pub fail: u64,
    /// Outcome unknown.
    pub info: u64,
}

/// Everything the clients observed.
#[derive(Debug, Default)]
pub struct Recorder {
    events: Vec<(u64, u64, HistoryEvent, bool)>,
    sequence: u64,
    next_system_process: ProcessId,
    expiry_proposals: BTreeMap<LogId, (u64, u64)>,
    expiry_done: BTreeSet<Index>,
    /// Eventual reads.
    pub eventual_reads: Vec<EventualRead>,
    /// Scans.
    pub scans: Vec<ScanRecord>,
    /// Watch streams.
    pub watches: Vec<WatchStream>,
    /// Writes acknowledged to a client.
    pub acknowledged: Vec<LogId>,
    /// The highest index among them.
    pub acknowledged_index_max: Index,
    /// Completions by outcome.
    pub counts: OutcomeCounts,
}

/// The history function of an operation, if it belongs in the linearizable history.
fn function_of(kind: &OperationKind) -> Option<Function> {
    match kind {
        OperationKind::Put { value, .. } => Some(Function::Write(Some(value.clone()))),
        OperationKind::Delete => Some(Function::Write(None)),
        OperationKind::Cas { expected, new } => Some(Function::Cas { expected: expected.clone(), new: new.clone() }),
        OperationKind::Read(ReadKind::Linearizable | ReadKind::Lease) => Some(Function::Read),
        _ => None,
    }
}

impl Recorder {
    fn push(&mut self, time_ms: u64, sequence: u64, event: HistoryEvent, lease_read: bool) {
        self.events.push((time_ms, sequence, event, lease_read));
    }

    fn next_sequence(&mut self) -> u64 {
        self.sequence += 1;
        self.sequence
    }

    /// Records the invocation of `operation` at `now_ms` (if it belongs in the history).
    pub fn invoke(&mut self, operation: &Operation, now_ms: u64) {
        let Some(function) = function_of(&operation.kind) else { return };
        let event = HistoryEvent {
            process: operation.process,
            event_type: EventType::Invoke,
            function,
            key: operation.key.clone(),
            read_value: None,
            time_ns: None,
        };
        let sequence = self.next_sequence();
        self.push(now_ms, sequence, event, operation.kind == OperationKind::Read(ReadKind::Lease));
    }

    /// Records the completion of `operation` at `now_ms`.
    pub fn complete(&mut self, operation: &Operation, event_type: EventType, read_value: Option<String>, now_ms: u64) {
        match event_type {
            EventType::Ok => self.counts.ok += 1,
            EventType::Fail => self.counts.fail += 1,
            _ => self.counts.info += 1,
        }
        let Some(function) = function_of(&operation.kind) else { return };
        let event = HistoryEvent {
            process: operation.process,
            event_type,
            function,
            key: operation.key.clone(),
            read_value,
            time_ns: None,
        };
        let sequence = self.next_sequence();
        self.push(now_ms, sequence, event, operation.kind == OperationKind::Read(ReadKind::Lease));
    }

    /// Records a write acknowledged to its client.
    pub fn acknowledge(&mut self, log_id: LogId) {
        self.acknowledged.push(log_id);
        self.acknowledged_index_max = self.acknowledged_index_max.max(log_id.index);
    }

    /// A leader proposed an `Expire` entry at `log_id` at `now_ms`.
    pub fn expiry_proposed(&mut self, log_id: LogId, now_ms: u64) {
        let sequence = self.next_sequence();
        self.expiry_proposals.insert(log_id, (now_ms, sequence));
    }

    /// The `Expire` entry at `log_id` was applied at `now_ms`, making `events`; only its first
    /// application is recorded.
    pub fn expiry_applied(&mut self, log_id: LogId, events: &[EventRecord], now_ms: u64) {
        if !self.expiry_done.insert(log_id.index) {
            return;
        }
        let Some((proposed_ms, proposed_sequence)) = self.expiry_proposals.get(&log_id).copied() else { return };
        // The etcd keys are checked by revision (`etcd_checks.rs`), not by the register model.
        let native = events.iter().filter(|e| !e.key.starts_with(super::etcd_workload::ETCD_KEY_PREFIX));
        for event in native {
            self.next_system_process += 1;
            let process = SYSTEM_PROCESS_FIRST + self.next_system_process;
            let make = |event_type| HistoryEvent {
                process,
                event_type,
                function: Function::Write(None),
                key: event.key.clone(),
                read_value: None,
                time_ns: None,
            };
            self.push(proposed_ms, proposed_sequence, make(EventType::Invoke), false);
            let sequence = self.next_sequence();
            self.push(now_ms, sequence, make(EventType::Ok), false);
        }
    }

    /// The history in time order, with times in nanoseconds; without lease reads when
    /// `drop_lease_reads` (to tell a lease violation from any other).
    pub fn history(&self, drop_lease_reads: bool) -> Vec<HistoryEvent> {
        let mut events: Vec<&(u64, u64, HistoryEvent, bool)> =
            self.events.iter().filter(|(_, _, _, lease)| !(drop_lease_reads && *lease)).collect();
        events.sort_by_key(|(time_ms, sequence, _, _)| (*time_ms, *sequence));
        events
            .into_iter()
            .map(|(time_ms, _, event, _)| HistoryEvent { time_ns: Some(time_ms * 1_000_000), ..event.clone() })
            .collect()
    }

    /// Whether the history holds lease reads.
    pub fn has_lease_reads(&self) -> bool {
        self.events.iter().any(|(_, _, _, lease)| *lease)
    }
}
