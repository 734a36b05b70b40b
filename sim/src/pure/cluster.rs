//! Carrying out faults on the simulated cluster: partitions and heals, crashes and restarts
//! (recovery from the disk, which may truncate a torn tail or detect corruption), pauses and
//! resumes, clock steps and jumps, bit flips, membership changes and leadership transfers; and
//! healing everything when the liveness phase begins.
//!
//! Data flow: `simulator.rs` calls [`Simulator::handle_faults`] at the start of every step; it
//! asks the [`super::faults::FaultScheduler`] for due endings and, when due, a new fault drawn
//! against a [`ClusterView`] of the nodes, and records each one (and each end of one) in the trace.

use keel_core::{LearnerKind, MembershipChange, NodeId, RecoveredState};

use super::faults::{ClusterView, Fault};
use super::network::PartitionKind;
use super::node::SimNode;
use super::rng::SimRng;
use super::simulator::{stream, Phase, Simulator};
use super::trace::{fault_fields, EventKind};

/// Most nodes a run ever has: the initial voters plus learners added by membership changes.
const EXTRA_NODES_MAX: u32 = 2;

impl Simulator {
    /// Handles faults and fault endings due now.
    pub(crate) fn handle_faults(&mut self) {
        while let Some(fault) = self.faults.pop_due(self.now_ms) {
            self.apply_fault(fault);
        }
        if self.phase == Phase::Faults && self.now_ms >= self.faults.next_fault_ms() {
            let view = self.cluster_view();
            if let Some(fault) = self.faults.draw(self.now_ms, &view) {
                self.apply_fault(fault);
            }
        }
    }

    /// Targeted crashes (`Targeting::crash_voters_restart_ms`): crashes node `id` if its term on
    /// disk rose from `term_before` while it follows, every other node is up and the fault phase
    /// runs, and schedules its restart.
    pub(crate) fn maybe_crash_voter(&mut self, id: NodeId, term_before: u64) {
        let Some(restart_ms) = self.scenario.targeting.crash_voters_restart_ms else { return };
        let node = &self.nodes[&id];
        let rose = node.disk.hard_state.term > term_before && node.role() == Some(keel_core::Role::Follower);
        let others_up = self.nodes.values().all(SimNode::is_available);
        if rose && others_up && self.scenario.process.crashes && self.phase == Phase::Faults {
            self.apply_fault(Fault::Crash(id));
            self.faults.schedule_restart(self.now_ms + restart_ms, id);
        }
    }

    /// Targeted pauses (`Targeting::pause_new_leaders_per_million`): node `id` just reported
    /// that it leads; in the fault phase the scheduler may pause it at once.
    pub(crate) fn maybe_pause_new_leader(&mut self, id: NodeId) {
        if self.phase != Phase::Faults || self.scenario.targeting.pause_new_leaders_per_million == 0 {
            return;
        }
        let view = self.cluster_view();
        if let Some(fault) = self.faults.pause_new_leader(self.now_ms, id, &view) {
            self.apply_fault(fault);
        }
    }

    fn cluster_view(&self) -> ClusterView {
        let available: Vec<NodeId> = self.nodes.iter().filter(|(_, n)| n.is_available()).map(|(id, _)| *id).collect();
        let initial = self.scenario.node_count;
        ClusterView {
            unavailable_count: self.nodes.values().filter(|n| !n.is_available()).count(),
            flippable: available.iter().copied().filter(|id| *id <= initial).collect(),
            available,
            partitioned: self.network.is_partitioned(),
            leader: self.leader(),
        }
    }

    fn apply_fault(&mut self, fault: Fault) {
        let detail = match &fault {
            Fault::Partition(kind) => self.partition(*kind),
            Fault::Heal => {
                self.network.heal();
                "heal".to_string()
            }
            Fault::Crash(node) => self.crash(*node),
            Fault::Restart(node) => self.restart(*node),
            Fault::Pause(node) => self.set_paused(*node, true),
            Fault::Resume(node) => self.set_paused(*node, false),
            Fault::StepWallClock(node) => {
                let offset_ms_max = self.scenario.clock.offset_ms_max;
                let offset = self.nodes.get_mut(node).expect("known node").step_wall_clock(offset_ms_max);
                format!("node {node} wall clock stepped to offset {offset} ms")
            }
            Fault::JumpClock(node, jump_ms) => {
                self.nodes.get_mut(node).expect("known node").clock.jump(*jump_ms);
                format!("node {node} monotonic clock jumps {jump_ms} ms (beyond the drift bound)")
            }
            Fault::FlipBit(node) => {
                let flipped = self.nodes.get_mut(node).expect("known node").flip_bit();
                let crash = self.crash(*node);
                format!("bit flip at index {flipped:?} on node {node}; {crash}")
            }
            Fault::ChangeMembership => self.change_membership(),
            Fault::TransferLeadership => self.transfer_leadership(),
        };
        let mut fields = fault_fields(&fault);
        if matches!(fault, Fault::Partition(_)) {
            fields[2] = self.cut_mask();
        }
        self.trace.record(EventKind::Fault, self.now_ms, &fields, || detail);
    }

    /// The nodes a partition cut off, as a bit mask by node id: those that lost their link (in
    /// either direction) to more than half of the others; when none did, every node that lost one.
    fn cut_mask(&self) -> u64 {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        let (mut cut_off, mut touched) = (0u64, 0u64);
        for a in &ids {
            let lost = ids.iter().filter(|b| self.network.is_cut(*a, **b) || self.network.is_cut(**b, *a)).count();
            if lost > 0 {
                touched |= 1 << a;
            }
            if 2 * lost > ids.len() - 1 {
                cut_off |= 1 << a;
            }
        }
        if cut_off == 0 {
            touched
        } else {
            cut_off
        }
    }

    fn partition(&mut self, kind: PartitionKind) -> String {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        if let (true, PartitionKind::IsolateOne, Some(leader)) =
            (self.scenario.targeting.aim_at_leader, kind, self.leader())
        {
            self.network.cut_between(&[leader], &ids, true);
            return format!("isolate leader {leader}");
        }
        self.network.partition(kind, &ids)
    }

    fn crash(&mut self, node: NodeId) -> String {
        if self.nodes[&node].raft.is_none() {
            return format!("node {node} already down");
        }
        self.abandon_node(node);
        self.nodes.get_mut(&node).expect("known node").crash();
        format!("crash node {node}")
    }

    fn restart(&mut self, node: NodeId) -> String {
        let sim_node = self.nodes.get_mut(&node).expect("known node");
        if sim_node.raft.is_some() || sim_node.corrupted.is_some() {
            return format!("node {node} needs no restart");
        }
        *self.incarnations.entry(node).or_default() += 1;
        sim_node.next_tick_ms = self.now_ms;
        match sim_node.restart() {
            Ok(()) => format!(
                "restart node {node} (truncated {} torn entries so far)",
                sim_node.disk.stats.truncated_on_recovery
            ),
            Err(error) => {
                let message = format!("node {node} refuses to start: {error}");
                // Expected only as the detection of a bit flipped on this node's disk: a refusal
                // for any other reason (a clean disk, a snapshot that does not restore, a
                // recovered state the core rejects) is a bug.
                let flipped = sim_node.corrupted.is_some() && sim_node.disk.stats.bit_flips > 0;
                if flipped {
                    self.detected_corruptions.push(message.clone());
                } else {
                    self.violate(format!("{message} (no bit was flipped on its disk)"));
                }
                message
            }
        }
    }

    fn set_paused(&mut self, node: NodeId, paused: bool) -> String {
        let sim_node = self.nodes.get_mut(&node).expect("known node");
        if sim_node.raft.is_none() {
            return format!("node {node} is down");
        }
        sim_node.paused = paused;
        if !paused {
            // A resumed process reads its clock before it handles anything else.
            sim_node.tick(self.now_ms);
            sim_node.next_tick_ms = self.now_ms + self.scenario.tick_interval_ms;
        }
        format!("{} node {node}", if paused { "pause" } else { "resume" })
    }

    /// Asks the leader for the next membership change: add a fresh learner, promote a learner,
    /// or remove a voter while more than three remain.
    fn change_membership(&mut self) -> String {
        let Some(leader) = self.leader() else { return "membership change: no leader".into() };
        let membership = self.nodes[&leader].raft.as_ref().expect("leader runs").membership().clone();
        let next_id = self.nodes.keys().last().copied().unwrap_or(0) + 1;
        let change = if let Some((learner, _)) = membership.learners.iter().next() {
            MembershipChange::PromoteLearner { node_id: *learner }
        } else if membership.voters.len() > 3 && self.now_ms.is_multiple_of(2) {
            let voters: Vec<NodeId> = membership.voters.iter().copied().filter(|id| *id != leader).collect();
            MembershipChange::RemoveNode { node_id: voters[(self.now_ms as usize / 2) % voters.len()] }
        } else if next_id <= self.scenario.node_count + EXTRA_NODES_MAX && membership.voters.len() < 5 {
            let rng = SimRng::fork(self.scenario.seed, stream::NODE_BASE + u64::from(next_id));
            let node = SimNode::new(&self.scenario, next_id, RecoveredState::joining(), rng);
            self.nodes.insert(next_id, node);
            self.incarnations.insert(next_id, 1);
            MembershipChange::AddLearner { node_id: next_id, address: String::new(), kind: LearnerKind::Promotable }
        } else {
            return "membership change: nothing to change".into();
        };
        let raft = self.nodes.get_mut(&leader).and_then(|n| n.raft.as_mut()).expect("leader runs");
        match raft.change_membership(change.clone()) {
            Ok(log_id) => format!("membership change {change:?} at {log_id}"),
            Err(error) => format!("membership change {change:?} refused: {error}"),
        }
    }

    fn transfer_leadership(&mut self) -> String {
        let Some(leader) = self.leader() else { return "transfer: no leader".into() };
        let raft = self.nodes.get_mut(&leader).and_then(|n| n.raft.as_mut()).expect("leader runs");
        let voters: Vec<NodeId> = raft.membership().voters.iter().copied().filter(|id| *id != leader).collect();
        if voters.is_empty() {
            return "transfer: no other voter".into();
        }
        let slow_clocked = (self.scenario.targeting.slow_clock_leads && voters.contains(&1)).then_some(1);
        let target = slow_clocked.unwrap_or(voters[(raft.term() as usize) % voters.len()]);
        match raft.transfer_leadership(target) {
            Ok(()) => format!("transfer leadership {leader} -> {target}"),
            Err(error) => format!("transfer {leader} -> {target} refused: {error}"),
        }
    }

    /// Ends every fault: links restored, random network faults off, crashed nodes restarted
    /// (those with detected corruption stay down), paused nodes resumed.
    pub(crate) fn heal_everything(&mut self) {
        self.faults.clear();
        if self.network.is_partitioned() {
            self.apply_fault(Fault::Heal);
        }
        self.network.set_faults(false);
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in ids {
            if self.nodes[&id].raft.is_none() {
                self.apply_fault(Fault::Restart(id));
            } else if self.nodes[&id].paused {
                self.apply_fault(Fault::Resume(id));
            }
        }
    }
}
