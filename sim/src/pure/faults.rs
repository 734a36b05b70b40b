//! The fault scheduler ("nemesis"): at random intervals of the fault phase it draws one fault from
//! the run's mix and schedules its end (heal, restart, resume). Faults are kept within what the
//! cluster can survive: at most a minority of the initial voters down or paused at once, bit flips
//! on at most one node per run (see `disk.rs`), and at least three voters in every configuration.
//!
//! Data flow: the simulator calls [`FaultScheduler::draw`] when [`FaultScheduler::next_fault_ms`]
//! is due and carries the returned [`Fault`] out; it pops due endings with
//! [`FaultScheduler::pop_due`]. At the liveness phase it calls [`FaultScheduler::clear`].

use std::collections::BTreeMap;

use keel_core::NodeId;

use super::network::PartitionKind;
use super::rng::SimRng;
use super::scenario::Scenario;

/// One fault to inject, or the end of one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Cut links in the given shape.
    Partition(PartitionKind),
    /// Restore every link.
    Heal,
    /// Crash a node (losing unsynced writes).
    Crash(NodeId),
    /// Restart a crashed node.
    Restart(NodeId),
    /// Pause a node.
    Pause(NodeId),
    /// Resume a paused node.
    Resume(NodeId),
    /// Step a node's wall clock.
    StepWallClock(NodeId),
    /// Jump a node's monotonic clock forward (beyond-bound mode only).
    JumpClock(NodeId, u64),
    /// Flip a bit in a synced entry of a node's log, then crash it so that recovery sees it.
    FlipBit(NodeId),
    /// Ask the leader for a membership change (which one is decided against the current config).
    ChangeMembership,
    /// Ask the leader to hand leadership to a random other voter.
    TransferLeadership,
}

/// What the scheduler needs to know about the cluster to draw a fault.
#[derive(Clone, Debug, Default)]
pub struct ClusterView {
    /// Nodes running and not paused.
    pub available: Vec<NodeId>,
    /// Nodes down or paused.
    pub unavailable_count: usize,
    /// Nodes eligible for a bit flip (initial voters that are running).
    pub flippable: Vec<NodeId>,
    /// Whether links are cut now.
    pub partitioned: bool,
    /// The available node leading with the highest term, if any.
    pub leader: Option<NodeId>,
}

/// The scheduler's state.
#[derive(Debug)]
pub struct FaultScheduler {
    scenario: Scenario,
    rng: SimRng,
    next_fault_ms: u64,
    endings: BTreeMap<(u64, u64), Fault>,
    sequence: u64,
    bit_flip_used: bool,
    drawn: u64,
}

impl FaultScheduler {
    /// A scheduler for `scenario`, drawing from `rng`; the first fault comes after elections.
    pub fn new(scenario: &Scenario, rng: SimRng) -> Self {
        let first = 4 * scenario.election_timeout_ms_min;
        Self {
            scenario: scenario.clone(),
            rng,
            next_fault_ms: first,
            endings: BTreeMap::new(),
            sequence: 0,
            bit_flip_used: false,
            drawn: 0,
        }
    }

    /// Faults drawn so far (endings not counted).
    pub fn drawn(&self) -> u64 {
        self.drawn
    }

    /// When the next fault is due.
    pub fn next_fault_ms(&self) -> u64 {
        self.next_fault_ms
    }

    /// When the next scheduled ending is due.
    pub fn next_ending_ms(&self) -> Option<u64> {
        self.endings.first_key_value().map(|((at, _), _)| *at)
    }

    /// The next ending due at `now_ms`.
    pub fn pop_due(&mut self, now_ms: u64) -> Option<Fault> {
        let entry = self.endings.first_entry()?;
        (entry.key().0 <= now_ms).then(|| entry.remove())
    }

    /// Targeted pauses (`Targeting::pause_new_leaders_per_million`): the pause of `leader`, which
    /// just became leader, if the draw and the cluster allow it (its resume is scheduled).
    pub fn pause_new_leader(&mut self, now_ms: u64, leader: NodeId, view: &ClusterView) -> Option<Fault> {
        let chance = self.scenario.targeting.pause_new_leaders_per_million;
        if chance == 0 || !self.scenario.process.pauses || view.unavailable_count > 0 || !self.rng.chance(chance) {
            return None;
        }
        let stall_ms = self.draw_stall_ms();
        self.schedule(now_ms + stall_ms, Fault::Resume(leader));
        Some(Fault::Pause(leader))
    }

    /// Schedules the restart of `node`, crashed outside the draw, at `at_ms`.
    pub fn schedule_restart(&mut self, at_ms: u64, node: NodeId) {
        self.schedule(at_ms, Fault::Restart(node));
    }

    fn schedule(&mut self, at_ms: u64, fault: Fault) {
        self.sequence += 1;
        self.endings.insert((at_ms, self.sequence), fault);
    }

    /// Draws the fault due at `now_ms` (if the draw finds one possible) and schedules its end.
    pub fn draw(&mut self, now_ms: u64, view: &ClusterView) -> Option<Fault> {
        self.next_fault_ms =
            now_ms + self.rng.between(self.scenario.fault_interval_ms / 2, self.scenario.fault_interval_ms * 3 / 2);
        if self.scenario.fault_count_max.is_some_and(|max| self.drawn >= max) {
            return None;
        }
        let minority = (self.scenario.node_count as usize - 1) / 2;
        let can_stop_one = view.unavailable_count < minority && !view.available.is_empty();
        let stall_ms = self.draw_stall_ms();
        let process = &self.scenario.process;
        let choice = self.rng.between(0, 9);
        let fault = match choice {
            0 | 1 if self.scenario.network.partitions && !view.partitioned => {
                let kinds = [
                    PartitionKind::MinorityMajority,
                    PartitionKind::IsolateOne,
                    PartitionKind::OneWay,
                    PartitionKind::Bridge,
                    PartitionKind::RandomLinks,
                ];
                self.schedule(now_ms + stall_ms, Fault::Heal);
                if self.scenario.targeting.aim_at_leader {
                    Fault::Partition(PartitionKind::IsolateOne)
                } else {
                    Fault::Partition(self.rng.pick(&kinds)?)
                }
            }
            2 | 3 if process.crashes && can_stop_one => {
                let node = self.target(view)?;
                self.schedule(now_ms + stall_ms, Fault::Restart(node));
                Fault::Crash(node)
            }
            4 if process.pauses && can_stop_one => {
                let node = self.target(view)?;
                self.schedule(now_ms + stall_ms, Fault::Resume(node));
                Fault::Pause(node)
            }
            5 if self.scenario.clock.beyond_bound => Fault::JumpClock(
                self.rng.pick(&view.available)?,
                self.rng.between(50, 2 * self.scenario.election_timeout_ms_min),
            ),
            5 if self.scenario.clock.wall_steps => Fault::StepWallClock(self.rng.pick(&view.available)?),
            6 if self.scenario.disk.bit_flips && !self.bit_flip_used && can_stop_one => {
                let node = self.rng.pick(&view.flippable)?;
                self.bit_flip_used = true;
                self.schedule(now_ms + stall_ms, Fault::Restart(node));
                Fault::FlipBit(node)
            }
            7 if process.membership_changes => Fault::ChangeMembership,
            8 if process.leader_transfers => Fault::TransferLeadership,
            _ => return None,
        };
        self.drawn += 1;
        Some(fault)
    }

    /// How long the next partition, crash or pause lasts: half an election timeout to eight of
    /// them, or to `Targeting::stall_ms_max`.
    fn draw_stall_ms(&mut self) -> u64 {
        let timeout = self.scenario.election_timeout_ms_min;
        let max = self.scenario.targeting.stall_ms_max.unwrap_or(8 * timeout);
        self.rng.between((timeout / 2).min(max), max)
    }

    /// The node a crash or pause stops: the leader when faults aim at it, else a random one.
    fn target(&mut self, view: &ClusterView) -> Option<NodeId> {
        match view.leader {
            Some(leader) if self.scenario.targeting.aim_at_leader => Some(leader),
            _ => self.rng.pick(&view.available),
        }
    }

    /// Drops every scheduled ending (the liveness phase heals everything at once).
    pub fn clear(&mut self) {
        self.endings.clear();
        self.next_fault_ms = u64::MAX;
    }
}
