//! Carrying client operations to the nodes and back: leader redirection with hints, retries
//! after refusals, waiting for a write's entry to be applied or a read to be released, timeouts
//! (an unknown outcome for a write that may have been proposed), and watch streams.
//!
//! Data flow: [`Simulator::step_clients`] starts operations and makes attempts when due; the
//! node outputs routed by `simulator.rs` answer writes ([`Simulator::answer_write`]) and reads
//! ([`Simulator::answer_read`]) and feed watches; a crash fails what waits on the node. Every
//! completion goes to the [`super::recorder::Recorder`].
//!
//! Outcomes: a write answered at its index with its own term is `ok`, with another term `fail`
//! (another entry took the slot, so it never commits); a compare-and-swap that was evaluated and
//! did not match is `fail`; a write whose node crashed, or whose deadline passed after it was
//! proposed, is `info`; one never accepted by any node by its deadline is `fail`. Reads only
//! complete `ok` when served, and `fail` otherwise (they change nothing).

use bytes::Bytes;
use keel_core::kv::{KvCommand, OpResponse};
use keel_core::{LogId, NodeId, ReadOutcome, ReadPolicy};

use super::etcd_client::etcd_command;
use super::etcd_history::Observation;
use super::etcd_workload::EtcdOperation;
use super::mvcc_model::Reply;
use super::node::AppliedEntry;
use super::recorder::{EventualRead, ScanRecord, WatchStream};
use super::reference::{event_record, EventRecord};
use super::simulator::{Phase, Simulator};
use super::trace::EventKind;
use super::workload::{Operation, OperationKind, ReadKind};
use crate::history::{EventType, ProcessId};

/// Where a client's operation stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// No operation; the next starts at `next_action_ms`.
    Idle,
    /// An attempt is due at `next_action_ms`.
    Attempting,
    /// A write was proposed at `node` as `log_id`.
    WaitingWrite(NodeId, LogId),
    /// A read (or scan) was registered at `node`.
    WaitingRead(NodeId, u64),
    /// A watch stream (index into the recorder's watches) is open at `node` until the deadline.
    Watching(NodeId, usize),
}

/// One client process.
#[derive(Clone, Debug)]
pub struct ClientState {
    /// Its process id in the history.
    pub process: ProcessId,
    /// The operation in progress.
    pub operation: Option<Operation>,
    /// Where it stands.
    pub stage: Stage,
    /// When it next acts.
    pub next_action_ms: u64,
    /// The node it believes leads.
    pub leader_hint: Option<NodeId>,
    /// Whether the current write was accepted by some node (then a timeout is `info`).
    pub proposed: bool,
    /// Operations the liveness phase still requires of this client (the probe client).
    pub required: u64,
    /// The highest index of a write acknowledged before the current operation was invoked.
    pub floor_index: keel_core::Index,
}

impl ClientState {
    /// An idle client.
    pub fn new(process: ProcessId) -> Self {
        Self {
            process,
            operation: None,
            stage: Stage::Idle,
            next_action_ms: 0,
            leader_hint: None,
            proposed: false,
            required: 0,
            floor_index: 0,
        }
    }

    /// When this client next needs the loop: its next action, or its operation's deadline.
    pub fn next_event_ms(&self) -> Option<u64> {
        match self.stage {
            Stage::Idle | Stage::Attempting => Some(self.next_action_ms),
            _ => self.operation.as_ref().map(|o| o.deadline_ms),
        }
    }
}

impl Simulator {
    /// Starts and advances client operations due now.
    pub(crate) fn step_clients(&mut self) {
        for index in 0..self.clients.len() {
            let client = &self.clients[index];
            let due = client.next_action_ms <= self.now_ms;
            match client.stage {
                Stage::Idle if due => self.start_operation(index),
                Stage::Attempting if due => self.attempt(index),
                Stage::WaitingWrite(..) | Stage::WaitingRead(..) | Stage::Watching(..) => self.check_deadline(index),
                _ => {}
            }
        }
    }

    fn start_operation(&mut self, index: usize) {
        let process = self.clients[index].process;
        let operation = if self.clients[index].required > 0 {
            self.workload.probe_operation(process, self.now_ms)
        } else if self.phase == Phase::Faults && self.workload.wants_more() {
            self.workload.next_operation(process, self.now_ms)
        } else {
            self.clients[index].next_action_ms = u64::MAX;
            return;
        };
        self.trace.record(EventKind::Invoke, self.now_ms, &[process, operation.id], || format!("{operation:?}"));
        self.recorder.invoke(&operation, self.now_ms);
        self.etcd.invoke(&operation);
        let client = &mut self.clients[index];
        client.operation = Some(operation);
        client.stage = Stage::Attempting;
        client.proposed = false;
        client.floor_index = self.recorder.acknowledged_index_max;
        self.attempt(index);
    }

    /// Ends the client's operation with `event_type` and makes it idle.
    pub(crate) fn finish(&mut self, index: usize, event_type: EventType, read_value: Option<String>) {
        let think_ms = self.workload.think_ms();
        let client = &mut self.clients[index];
        let operation = client.operation.take().expect("an operation is in progress");
        client.stage = Stage::Idle;
        client.next_action_ms = self.now_ms + think_ms;
        if client.required > 0 && event_type == EventType::Ok {
            client.required -= 1;
        }
        let code = event_type as u64;
        self.trace.record(EventKind::Complete, self.now_ms, &[operation.process, operation.id, code], || {
            format!("{event_type:?} {read_value:?}")
        });
        self.recorder.complete(&operation, event_type, read_value.clone(), self.now_ms);
        self.etcd.complete(&operation, event_type, self.committed.current_revision());
        match &operation.kind {
            OperationKind::Put { value, .. } if event_type == EventType::Ok => {
                self.workload.observe(operation.process, &operation.key, Some(value.clone()))
            }
            OperationKind::Cas { new, .. } if event_type == EventType::Ok => {
                self.workload.observe(operation.process, &operation.key, Some(new.clone()))
            }
            OperationKind::Delete if event_type == EventType::Ok => {
                self.workload.observe(operation.process, &operation.key, None)
            }
            OperationKind::Read(_) if event_type == EventType::Ok => {
                self.workload.observe(operation.process, &operation.key, read_value)
            }
            _ => {}
        }
    }

    fn retry_later(&mut self, index: usize, hint: Option<NodeId>) {
        let delay = self.workload.retry_delay_ms();
        let client = &mut self.clients[index];
        client.stage = Stage::Attempting;
        client.leader_hint = hint;
        client.next_action_ms = self.now_ms + delay;
    }

    fn pick_target(&mut self, index: usize) -> NodeId {
        if let Some(hint) = self.clients[index].leader_hint.filter(|id| self.nodes.contains_key(id)) {
            return hint;
        }
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        ids[self.workload.pick_index(ids.len())]
    }

    fn attempt(&mut self, index: usize) {
        let operation = self.clients[index].operation.clone().expect("attempting an operation");
        if self.now_ms >= operation.deadline_ms {
            let is_cas = matches!(operation.kind, OperationKind::Cas { .. });
            let outcome = if self.clients[index].proposed || is_cas { EventType::Info } else { EventType::Fail };
            return self.finish(index, outcome, None);
        }
        let target = self.pick_target(index);
        if !self.nodes[&target].is_available() {
            return self.retry_later(index, None);
        }
        match &operation.kind {
            OperationKind::Put { .. }
            | OperationKind::Cas { .. }
            | OperationKind::Delete
            | OperationKind::Etcd(EtcdOperation::Write(_)) => self.attempt_write(index, target, &operation),
            OperationKind::Read(ReadKind::Eventual) => self.serve_eventual(index, target, &operation),
            OperationKind::Read(_) | OperationKind::Scan | OperationKind::Etcd(EtcdOperation::Range { .. }) => {
                self.attempt_read(index, target, &operation)
            }
            OperationKind::Watch { duration_ms } => self.open_watch(index, target, &operation, *duration_ms),
            OperationKind::Etcd(EtcdOperation::Watch { start_revision, .. }) => {
                self.open_etcd_watch(index, target, &operation, *start_revision)
            }
        }
    }

    fn attempt_write(&mut self, index: usize, target: NodeId, operation: &Operation) {
        let key = Bytes::from(operation.key.clone());
        let command = match &operation.kind {
            OperationKind::Etcd(EtcdOperation::Write(command)) => command.clone(),
            OperationKind::Put { value, ttl_ms } => {
                KvCommand::Put { key, value: Bytes::from(value.clone()), ttl_ms: *ttl_ms }
            }
            OperationKind::Cas { expected, new } => KvCommand::CompareAndSwap {
                key,
                expected_value: expected.clone().map(Bytes::from),
                new_value: Bytes::from(new.clone()),
                ttl_ms: None,
            },
            _ => KvCommand::Delete { key },
        };
        match self.nodes.get_mut(&target).expect("picked").propose(self.now_ms, &command) {
            Ok(log_id) => {
                let fields = [operation.process, u64::from(target), log_id.term, log_id.index];
                self.trace.record(EventKind::Propose, self.now_ms, &fields, String::new);
                self.etcd.proposed(log_id, self.now_ms);
                self.waiting_writes.insert((target, log_id.index), index);
                let client = &mut self.clients[index];
                client.stage = Stage::WaitingWrite(target, log_id);
                client.leader_hint = Some(target);
                client.proposed = true;
            }
            Err(error) => self.retry_later(index, error.leader_hint().and_then(|h| h.leader_id)),
        }
    }

    fn attempt_read(&mut self, index: usize, target: NodeId, operation: &Operation) {
        let policy = if operation.kind == OperationKind::Read(ReadKind::Lease) {
            ReadPolicy::Lease
        } else {
            ReadPolicy::Linearizable
        };
        self.next_read_id += 1;
        let read_id = self.next_read_id;
        match self.nodes.get_mut(&target).expect("picked").read(read_id, policy) {
            Ok(()) => {
                self.waiting_reads.insert((target, read_id), index);
                self.clients[index].stage = Stage::WaitingRead(target, read_id);
            }
            Err(error) => self.retry_later(index, error.leader_hint().and_then(|h| h.leader_id)),
        }
    }

    fn serve_eventual(&mut self, index: usize, target: NodeId, operation: &Operation) {
        let node = &self.nodes[&target];
        let value = node.kv.get(operation.key.as_bytes(), None).ok().flatten();
        let value = value.map(|kv| String::from_utf8_lossy(&kv.value).into_owned());
        let applied_index = node.kv.last_applied_index();
        let read = EventualRead { node: target, applied_index, key: operation.key.clone(), value: value.clone() };
        self.recorder.eventual_reads.push(read);
        self.finish(index, EventType::Ok, value);
    }

    fn open_watch(&mut self, index: usize, target: NodeId, operation: &Operation, duration_ms: u64) {
        let node = &self.nodes[&target];
        let after_revision = node.kv.current_revision().saturating_sub(5);
        let replay: Vec<EventRecord> = match node.kv.watch(after_revision) {
            Ok(watch) => watch.map(|e| event_record(&e)).filter(|e| e.key.starts_with(&operation.key)).collect(),
            Err(_) => return self.retry_later(index, None),
        };
        let stream = WatchStream {
            node: target,
            prefix: operation.key.clone(),
            after_revision,
            events: replay,
            covered_through: None,
        };
        self.recorder.watches.push(stream);
        let client = &mut self.clients[index];
        client.stage = Stage::Watching(target, self.recorder.watches.len() - 1);
        if let Some(operation) = client.operation.as_mut() {
            operation.deadline_ms = self.now_ms + duration_ms;
        }
    }

    /// Appends `events`, just applied at `node`, to the watch streams open there.
    pub(crate) fn feed_watches(&mut self, node: NodeId, events: &[EventRecord]) {
        if events.is_empty() {
            return;
        }
        for client in &self.clients {
            let Stage::Watching(at, stream) = client.stage else { continue };
            if at != node {
                continue;
            }
            let watch = &mut self.recorder.watches[stream];
            // A catch-up after a snapshot may already have delivered these (see below).
            let delivered = watch.events.last().map_or(watch.after_revision, |e| e.revision);
            let fresh = events.iter().filter(|e| e.revision > delivered && e.key.starts_with(&watch.prefix));
            watch.events.extend(fresh.cloned());
        }
    }

    /// `node` installed a snapshot, skipping the entries it covers: its open watch streams
    /// catch up from the restored store's history, after the last revision each delivered. A
    /// stream whose missed events were compacted away ends there (as etcd cancels such a watch).
    pub(crate) fn catch_up_watches(&mut self, node: NodeId) {
        let mut compacted = Vec::new();
        let store = &self.nodes[&node].kv;
        for (index, client) in self.clients.iter().enumerate() {
            let Stage::Watching(at, stream) = client.stage else { continue };
            if at != node {
                continue;
            }
            let watch = &mut self.recorder.watches[stream];
            let after = watch.events.last().map_or(watch.after_revision, |e| e.revision);
            match store.watch(after) {
                Ok(missed) => {
                    watch.events.extend(missed.map(|e| event_record(&e)).filter(|e| e.key.starts_with(&watch.prefix)))
                }
                Err(_) => compacted.push((index, stream, after)),
            }
        }
        for (index, stream, through) in compacted {
            self.recorder.watches[stream].covered_through = Some(through);
            self.finish(index, EventType::Ok, None);
        }
    }

    fn close_watch(&mut self, index: usize, node: NodeId, stream: usize) {
        let revision = self.nodes[&node].kv.current_revision();
        self.recorder.watches[stream].covered_through = Some(revision);
        self.finish(index, EventType::Ok, None);
    }

    fn check_deadline(&mut self, index: usize) {
        let client = &self.clients[index];
        let Some(deadline) = client.operation.as_ref().map(|o| o.deadline_ms) else { return };
        if self.now_ms < deadline {
            return;
        }
        if self.scenario.clients_switch_on_timeout
            && matches!(client.stage, Stage::WaitingWrite(..) | Stage::WaitingRead(..))
        {
            self.clients[index].leader_hint = None;
        }
        let client = &self.clients[index];
        match client.stage {
            Stage::WaitingWrite(node, log_id) => {
                self.waiting_writes.remove(&(node, log_id.index));
                self.finish(index, EventType::Info, None);
            }
            Stage::WaitingRead(node, read_id) => {
                self.waiting_reads.remove(&(node, read_id));
                self.finish(index, EventType::Fail, None);
            }
            Stage::Watching(node, stream) => self.close_watch(index, node, stream),
            _ => {}
        }
    }

    /// A node applied `applied`: answers the client waiting on that index there, if any.
    pub(crate) fn answer_write(&mut self, node: NodeId, applied: &AppliedEntry) {
        let Some(index) = self.waiting_writes.remove(&(node, applied.log_id.index)) else { return };
        let Stage::WaitingWrite(_, proposed) = self.clients[index].stage else { return };
        if proposed != applied.log_id {
            // Another entry took the slot: the write never happens. A compare-and-swap's `fail`
            // would claim it was evaluated, so it is reported as unknown instead (still sound).
            let is_cas =
                matches!(self.clients[index].operation.as_ref().map(|o| &o.kind), Some(OperationKind::Cas { .. }));
            return self.finish(index, if is_cas { EventType::Info } else { EventType::Fail }, None);
        }
        if self.clients[index].operation.as_ref().and_then(etcd_command).is_some() {
            return self.answer_etcd_write(index, applied);
        }
        let succeeded = applied.result.as_ref().is_some_and(|r| r.succeeded);
        if !succeeded {
            let current = applied.result.as_ref().and_then(|r| match r.responses.first() {
                Some(OpResponse::Range(range)) => {
                    range.kvs.first().map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
                }
                _ => None,
            });
            let process = self.clients[index].process;
            let key = self.clients[index].operation.as_ref().map(|o| o.key.clone()).unwrap_or_default();
            self.workload.observe(process, &key, current);
            return self.finish(index, EventType::Fail, None);
        }
        self.recorder.acknowledge(proposed);
        if let Some(result) = applied.result.as_ref() {
            // Native writes take part in the revision checks too (`etcd_checks.rs`).
            self.etcd.answered(Observation::Write { log_id: proposed, reply: Reply::of(result) });
        }
        self.finish(index, EventType::Ok, None);
    }

    /// A node released or failed a read: serves it from the node's store, or retries.
    pub(crate) fn answer_read(&mut self, node: NodeId, outcome: ReadOutcome) {
        let Some(index) = self.waiting_reads.remove(&(node, outcome.id)) else { return };
        if let Err(error) = outcome.result {
            return self.retry_later(index, error.leader_hint().and_then(|h| h.leader_id));
        }
        let operation = self.clients[index].operation.clone().expect("a read in progress");
        if matches!(operation.kind, OperationKind::Etcd(_)) {
            return self.serve_etcd_range(index, node, &operation);
        }
        let store = &self.nodes[&node].kv;
        if operation.kind == OperationKind::Scan {
            let scan = store.scan_prefix(operation.key.as_bytes(), None).map(|r| r.kvs).unwrap_or_default();
            let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
            let result = scan.iter().map(|kv| (text(&kv.key), text(&kv.value))).collect();
            let floor_index = self.clients[index].floor_index;
            let record = ScanRecord {
                node,
                applied_index: store.last_applied_index(),
                floor_index,
                prefix: operation.key.clone(),
                result,
            };
            self.recorder.scans.push(record);
            return self.finish(index, EventType::Ok, None);
        }
        let value = store.get(operation.key.as_bytes(), None).ok().flatten();
        self.finish(index, EventType::Ok, value.map(|kv| String::from_utf8_lossy(&kv.value).into_owned()));
    }

    /// `node` crashed: its proposals' outcomes are unknown, its reads are retried elsewhere, and
    /// its watch streams end where its store was.
    pub(crate) fn abandon_node(&mut self, node: NodeId) {
        for index in 0..self.clients.len() {
            match self.clients[index].stage {
                Stage::WaitingWrite(at, log_id) if at == node => {
                    self.waiting_writes.remove(&(node, log_id.index));
                    self.finish(index, EventType::Info, None);
                }
                Stage::WaitingRead(at, read_id) if at == node => {
                    self.waiting_reads.remove(&(node, read_id));
                    self.retry_later(index, None);
                }
                Stage::Watching(at, stream) if at == node => self.close_watch(index, node, stream),
                _ => {}
            }
        }
    }
}
