//! The event loop of the pure simulator. One true clock (milliseconds since the start); at each
//! step the loop jumps to the earliest pending event (a message delivery, a node's tick, a disk
//! sync, a client action or deadline, a fault or its end, a periodic check) and handles every
//! event due then, in a fixed order. No wall clock, no threads, no hash-map iteration: a run is a
//! function of its seed.
//!
//! Data flow per step: faults → message deliveries → ticks (and leaders' expiry proposals) →
//! disk syncs → clients → every node's `Ready` (whose outputs feed the network, the clients, the
//! committed history and the checkers) → periodic invariant checks. Every send, delivery, drop,
//! tick and change of a node's state goes into the trace (`trace.rs`). Client handling lives in
//! `clients.rs`, fault handling in `cluster.rs`, the liveness phase and final checks in
//! `outcome.rs`.

use std::collections::BTreeMap;

use keel_core::{Index, Membership, Message, NodeId, ReadId, RecoveredState, Role};

use super::clients::ClientState;
use super::etcd_history::EtcdHistory;
use super::faults::FaultScheduler;
use super::invariants::Invariants;
use super::network::{Arrival, Network, SendFate};
use super::node::{NodeOutput, SimNode};
use super::recorder::Recorder;
use super::reference::{events_of, CommittedLog};
use super::rng::SimRng;
use super::scenario::Scenario;
use super::trace::{message_kind, role_code, DropReason, EventKind, Trace};
use super::workload::Workload;

/// Random streams of one run, one per concern.
pub(crate) mod stream {
    pub const NETWORK: u64 = 2;
    pub const WORKLOAD: u64 = 3;
    pub const FAULTS: u64 = 4;
    pub const NODE_BASE: u64 = 100;
}

/// How often the log-matching and leader-completeness checks run, in simulated milliseconds.
pub const CHECK_INTERVAL_MS: u64 = 50;

/// The phase a run is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Clients run while faults are injected.
    Faults,
    /// Everything healed at `started_ms`; the cluster must converge and finish by the bound.
    Liveness {
        /// True time the faults were healed.
        started_ms: u64,
    },
}

/// The whole simulated world of one run.
#[derive(Debug)]
pub struct Simulator {
    pub(crate) scenario: Scenario,
    pub(crate) now_ms: u64,
    pub(crate) nodes: BTreeMap<NodeId, SimNode>,
    pub(crate) incarnations: BTreeMap<NodeId, u64>,
    pub(crate) network: Network,
    pub(crate) workload: Workload,
    pub(crate) clients: Vec<ClientState>,
    pub(crate) recorder: Recorder,
    pub(crate) etcd: EtcdHistory,
    pub(crate) committed: CommittedLog,
    pub(crate) invariants: Invariants,
    pub(crate) trace: Trace,
    pub(crate) faults: FaultScheduler,
    pub(crate) waiting_writes: BTreeMap<(NodeId, Index), usize>,
    pub(crate) waiting_reads: BTreeMap<(NodeId, ReadId), usize>,
    pub(crate) next_read_id: ReadId,
    pub(crate) next_check_ms: u64,
    pub(crate) phase: Phase,
    pub(crate) violation: Option<String>,
    /// Detected storage corruptions (expected outcomes of bit flips), by node.
    pub(crate) detected_corruptions: Vec<String>,
    pub(crate) steps: u64,
}

impl Simulator {
    /// A fresh cluster of `scenario.node_count` voters, with its clients and fault scheduler.
    pub fn new(scenario: Scenario, keep_trace_lines: bool) -> Self {
        Self::with_trace(scenario, Trace::new(keep_trace_lines))
    }

    /// [`Simulator::new`] with a given trace (one that verifies a recorded trace, for replay).
    pub fn with_trace(scenario: Scenario, trace: Trace) -> Self {
        let seed = scenario.seed;
        let membership = Membership::with_voters(1..=scenario.node_count);
        let mut nodes = BTreeMap::new();
        for id in 1..=scenario.node_count {
            let rng = SimRng::fork(seed, stream::NODE_BASE + u64::from(id));
            nodes.insert(id, SimNode::new(&scenario, id, RecoveredState::bootstrap(membership.clone()), rng));
        }
        let incarnations = nodes.keys().map(|id| (*id, 1)).collect();
        let clients = (0..scenario.client_count).map(|i| ClientState::new(u64::from(i))).collect();
        Self {
            network: Network::new(scenario.network.clone(), SimRng::fork(seed, stream::NETWORK)),
            workload: Workload::new(&scenario, SimRng::fork(seed, stream::WORKLOAD)),
            faults: FaultScheduler::new(&scenario, SimRng::fork(seed, stream::FAULTS)),
            scenario,
            now_ms: 0,
            nodes,
            incarnations,
            clients,
            recorder: Recorder::default(),
            etcd: EtcdHistory::default(),
            committed: CommittedLog::default(),
            invariants: Invariants::default(),
            trace,
            waiting_writes: BTreeMap::new(),
            waiting_reads: BTreeMap::new(),
            next_read_id: 0,
            next_check_ms: CHECK_INTERVAL_MS,
            phase: Phase::Faults,
            violation: None,
            detected_corruptions: Vec::new(),
            steps: 0,
        }
    }

    /// Records the first safety violation; the run stops at the end of the step.
    pub(crate) fn violate(&mut self, violation: String) {
        if self.violation.is_none() {
            self.trace.record(EventKind::Violation, self.now_ms, &[], || violation.clone());
            self.violation = Some(violation);
        }
    }

    /// The earliest time anything is due.
    fn next_event_ms(&self) -> u64 {
        let mut next = self.next_check_ms.min(self.faults.next_fault_ms());
        let mut consider = |at: Option<u64>| {
            if let Some(at) = at {
                next = next.min(at);
            }
        };
        consider(self.network.next_delivery_ms());
        consider(self.faults.next_ending_ms());
        for node in self.nodes.values().filter(|n| n.is_available()) {
            consider(Some(node.next_tick_ms));
            consider(node.disk.next_sync_ms());
        }
        for client in &self.clients {
            consider(client.next_event_ms());
        }
        next.max(self.now_ms)
    }

    /// Advances to the next event time and handles everything due then.
    pub fn step(&mut self) {
        self.now_ms = self.next_event_ms();
        self.steps += 1;
        self.handle_faults();
        self.deliver_messages();
        self.tick_nodes();
        for node in self.nodes.values_mut().filter(|n| n.is_available()) {
            node.complete_syncs(self.now_ms);
        }
        self.step_clients();
        self.process_all_ready();
        if self.now_ms >= self.next_check_ms {
            self.next_check_ms = self.now_ms + CHECK_INTERVAL_MS;
            self.check_nodes();
        }
    }

    fn deliver_messages(&mut self) {
        while let Some(Arrival { id, message, cut }) = self.network.pop_due(self.now_ms) {
            let ends = [id, u64::from(message.from), u64::from(message.to)];
            let node = self.nodes.get_mut(&message.to).filter(|n| n.is_available());
            let Some(node) = node.filter(|_| !cut) else {
                let reason = if cut { DropReason::CutInFlight } else { DropReason::ReceiverDown };
                if !cut {
                    self.network.stats.dropped += 1;
                }
                self.trace.record(
                    EventKind::Drop,
                    self.now_ms,
                    &[ends[0], ends[1], ends[2], reason as u64],
                    String::new,
                );
                continue;
            };
            self.network.stats.delivered += 1;
            self.trace.record(EventKind::Deliver, self.now_ms, &ends, String::new);
            node.raft.as_mut().expect("available").step(message);
        }
    }

    /// Hands `message` to the network and records what became of it.
    fn send(&mut self, message: Message) {
        let (from, to, term, kind) =
            (u64::from(message.from), u64::from(message.to), message.term, message_kind(&message.body));
        let detail = if self.trace.formats_lines() { format!("{:?}", message.body) } else { String::new() };
        match self.network.send(self.now_ms, message) {
            SendFate::Dropped(reason) => {
                self.trace.record(EventKind::Send, self.now_ms, &[0, from, to, term, kind, 0, reason as u64], || detail)
            }
            SendFate::Queued { id, at_ms, copy } => {
                self.trace.record(EventKind::Send, self.now_ms, &[id, from, to, term, kind, at_ms, 0], || detail);
                if let Some((copy_id, copy_at_ms)) = copy {
                    let fields = [copy_id, from, to, term, kind, copy_at_ms, 0];
                    self.trace.record(EventKind::Send, self.now_ms, &fields, || format!("duplicate of {id}"));
                }
            }
        }
    }

    fn tick_nodes(&mut self) {
        let now = self.now_ms;
        let interval = self.scenario.tick_interval_ms;
        let mut expiries = Vec::new();
        for node in self.nodes.values_mut().filter(|n| n.is_available() && n.next_tick_ms <= now) {
            node.tick(now);
            let clock = node.clock.monotonic_ms(now);
            self.trace.record(EventKind::Tick, now, &[u64::from(node.id), clock], String::new);
            node.next_tick_ms = now + interval;
            if let Some(log_id) = node.maybe_propose_expiry(now) {
                expiries.push(log_id);
            }
            if let Some(log_id) = node.lease_refresh_proposed.take() {
                self.etcd.proposed(log_id, now);
            }
            node.maybe_propose_compaction(now);
        }
        for log_id in expiries {
            self.trace.record(EventKind::ExpireProposed, now, &[log_id.term, log_id.index], String::new);
            self.recorder.expiry_proposed(log_id, now);
            self.etcd.proposed(log_id, now);
        }
    }

    /// Carries out every node's pending `Ready`, routes what it produced, and records every
    /// node's state if it changed.
    pub(crate) fn process_all_ready(&mut self) {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in ids {
            let node = self.nodes.get_mut(&id).expect("listed");
            if node.is_available() {
                let term_before = node.disk.hard_state.term;
                let mut output = NodeOutput::default();
                node.process_ready(self.now_ms, &mut output);
                self.route_output(id, output);
                self.maybe_crash_voter(id, term_before);
            }
            self.record_state(id);
        }
    }

    /// Records node `id`'s role, term, known leader and commit index (all 0 while it is down).
    fn record_state(&mut self, id: NodeId) {
        let state = self.nodes[&id].raft.as_ref().map_or([0; 4], |raft| {
            let leader = raft.leader_id().map_or(0, u64::from);
            [role_code(Some(raft.role())), raft.term(), leader, raft.commit_index()]
        });
        self.trace.record_state(self.now_ms, id, state);
    }

    fn route_output(&mut self, id: NodeId, output: NodeOutput) {
        for anomaly in output.anomalies {
            self.violate(anomaly);
        }
        for soft_state in &output.soft_states {
            if soft_state.role == Role::Leader {
                let term = soft_state.leader.term;
                if let Err(violation) = self.invariants.observe_leader(id, term) {
                    self.violate(violation);
                }
                self.check_new_leader(id, term);
                self.maybe_pause_new_leader(id);
            }
        }
        if output.snapshot_installed {
            self.catch_up_watches(id);
        }
        // Only a leader paused the moment it was elected (`maybe_pause_new_leader` above) is paused
        // here: it stalled before these left.
        let stalled = self.nodes[&id].paused;
        for message in output.messages.into_iter().filter(|_| !stalled) {
            self.send(message);
        }
        let term = self.nodes[&id].raft.as_ref().map_or(0, |r| r.term());
        for applied in output.applied {
            let events = applied.result.as_ref().map(events_of).unwrap_or_default();
            let log_id = applied.log_id;
            self.trace.record(EventKind::Apply, self.now_ms, &[u64::from(id), log_id.term, log_id.index], String::new);
            if matches!(applied.command, Some((_, keel_core::kv::KvCommand::Expire { .. }))) {
                self.recorder.expiry_applied(log_id, &events, self.now_ms);
            }
            self.feed_watches(id, &events);
            if let Err(violation) = self.committed.record_applied(id, term, log_id, applied.command.as_ref(), events) {
                self.violate(violation);
            }
            self.answer_write(id, &applied);
        }
        for outcome in output.reads {
            self.answer_read(id, outcome);
        }
    }

    /// Leader completeness the moment node `id` reports it leads `term` (if it still does).
    fn check_new_leader(&mut self, id: NodeId, term: u64) {
        let Some(raft) = self.nodes[&id].raft.as_ref().filter(|r| r.role() == Role::Leader && r.term() == term) else {
            return;
        };
        if let Err(violation) = super::invariants::check_leader_completeness(id, raft, &self.committed) {
            self.violate(violation);
        }
    }

    /// Runs the periodic node checks now.
    pub(crate) fn check_nodes_now(&mut self) {
        self.check_nodes();
    }

    fn check_nodes(&mut self) {
        let running: Vec<(NodeId, u64, &keel_core::RaftNode)> =
            self.nodes.iter().filter_map(|(id, n)| n.raft.as_ref().map(|r| (*id, self.incarnations[id], r))).collect();
        if let Err(violation) = self.invariants.check_nodes(&running, &self.committed) {
            self.violate(violation);
        }
    }

    /// Messages delivered so far (the benchmark's unit).
    pub fn messages_delivered(&self) -> u64 {
        self.network.stats.delivered
    }

    /// The node currently leading with the highest term, if any.
    pub(crate) fn leader(&self) -> Option<NodeId> {
        let leaders = self.nodes.iter().filter(|(_, n)| n.is_available() && n.role() == Some(Role::Leader));
        leaders.max_by_key(|(_, n)| n.raft.as_ref().map(|r| r.term())).map(|(id, _)| *id)
    }
}
