//! A simulated node: a keel-core [`RaftNode`], the key-value [`KvStore`] it applies to, its
//! [`Disk`] and its [`NodeClock`].
//!
//! Data flow: the simulator ticks the node with its own clock, steps it with delivered messages,
//! proposes client commands and registers reads on it, then calls [`SimNode::process_ready`],
//! which carries out every `Ready` exactly in the order of the contract in `core/src/ready.rs`:
//! hard state synced before the messages leave; a received snapshot restored and installed before
//! the log write; the log write queued for an asynchronous sync (`persisted` is called only when
//! that sync completes, see [`SimNode::complete_syncs`]); committed entries applied in order, then
//! `applied`; reads handed back. What the simulator needs from it (messages, applied entries with
//! their results, read outcomes, role changes) comes back in a [`NodeOutput`].

use keel_core::kv::{ApplyResult, KvCommand, KvStore};
use keel_core::{
    Config, EntryPayload, Error, LeaseConfig, LogId, Message, NodeId, RaftNode, ReadId, ReadOutcome, ReadPolicy,
    RecoveredState, Role, Snapshot, SoftState,
};

use super::clock::NodeClock;
use super::disk::Disk;
use super::envelope;
use super::rng::SimRng;
use super::scenario::{DiskFaults, Scenario};

/// An entry this node applied, with what it carried and what applying it did.
#[derive(Clone, Debug)]
pub struct AppliedEntry {
    /// The entry's id.
    pub log_id: LogId,
    /// The decoded command and its stamp; `None` for no-ops and membership entries.
    pub command: Option<(u64, KvCommand)>,
    /// The store's result; `None` when there was no command.
    pub result: Option<ApplyResult>,
}

/// What one round of `Ready` processing produced.
#[derive(Debug, Default)]
pub struct NodeOutput {
    /// Messages to hand to the network.
    pub messages: Vec<Message>,
    /// Entries applied, in order.
    pub applied: Vec<AppliedEntry>,
    /// Reads released or failed.
    pub reads: Vec<ReadOutcome>,
    /// Role or leader changes, in order.
    pub soft_states: Vec<SoftState>,
    /// Problems the node hit that can only come from a bug (an undecodable entry or snapshot).
    pub anomalies: Vec<String>,
    /// A snapshot from the leader replaced the store (entries it covers are never applied here).
    pub snapshot_installed: bool,
}

/// Revisions of history a leader keeps when it compacts the store.
pub const REVISIONS_KEPT: u64 = 200;

/// One simulated node.
#[derive(Debug)]
pub struct SimNode {
    /// The node's id.
    pub id: NodeId,
    /// Its consensus configuration.
    pub config: Config,
    /// The running core; `None` while crashed (or refused to start).
    pub raft: Option<RaftNode>,
    /// The replicated key-value store, rebuilt from the disk's snapshot on restart.
    pub kv: KvStore,
    /// Its disk.
    pub disk: Disk,
    /// Its clocks.
    pub clock: NodeClock,
    /// Paused: neither ticked nor stepped; messages to it are lost meanwhile.
    pub paused: bool,
    /// Set when recovery found a corrupt synced entry: the node refuses to start.
    pub corrupted: Option<String>,
    /// True time of the next tick.
    pub next_tick_ms: u64,
    /// True time at which a leader next considers proposing an expiry.
    next_expire_ms: u64,
    /// The term in which this node, as leader, last gave every lease its full TTL again.
    leases_refreshed_term: u64,
    /// A `LeaseRefreshAll` proposed since the simulator last looked (it records the time).
    pub lease_refresh_proposed: Option<LogId>,
    last_snapshot_index: u64,
    disk_faults: DiskFaults,
    snapshot_interval_entries: u64,
    clock_offset_ms_max: u64,
    rng: SimRng,
}

/// The consensus configuration of node `id` in `scenario`.
pub fn node_config(scenario: &Scenario, id: NodeId) -> Config {
    let mut config = Config::new(id);
    config.heartbeat_interval_ms = scenario.heartbeat_interval_ms;
    config.election_timeout_ms_min = scenario.election_timeout_ms_min;
    config.election_timeout_ms_max =
        scenario.targeting.election_timeout_ms_max.unwrap_or(2 * scenario.election_timeout_ms_min);
    config.check_quorum = true;
    config.pre_vote = true;
    config.lease = scenario.lease_reads.then_some(LeaseConfig { clock_drift_ppm_max: scenario.clock.drift_ppm_max });
    (config.entries_per_message_max, config.inflight_messages_max) =
        scenario.targeting.replication_window.unwrap_or((64, 16));
    config.uncommitted_entries_max = 1_024;
    config.pending_reads_max = 256;
    config.snapshot_chunk_bytes = 4_096;
    config.rng_seed = scenario.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ u64::from(id);
    #[cfg(feature = "planted-bugs")]
    {
        config.planted_bug = scenario.planted_bug;
    }
    config
}

impl SimNode {
    /// Starts node `id` from `recovered` (a bootstrap or joining state).
    pub fn new(scenario: &Scenario, id: NodeId, recovered: RecoveredState, mut rng: SimRng) -> Self {
        let config = node_config(scenario, id);
        let mut clock = NodeClock::new(&scenario.clock, &mut rng);
        if scenario.targeting.slow_clock_leads {
            clock.move_to_bound(&scenario.clock, id == 1);
        }
        let disk = Disk::new(&recovered);
        let raft = RaftNode::new(config.clone(), recovered).expect("the simulator's configuration is valid");
        Self {
            id,
            config,
            raft: Some(raft),
            kv: KvStore::new(),
            disk,
            clock,
            paused: false,
            corrupted: None,
            next_tick_ms: 0,
            next_expire_ms: 0,
            leases_refreshed_term: 0,
            lease_refresh_proposed: None,
            last_snapshot_index: 0,
            disk_faults: scenario.disk.clone(),
            snapshot_interval_entries: scenario.snapshot_interval_entries,
            clock_offset_ms_max: super::clock::clock_offset_ms_max(&scenario.clock),
            rng,
        }
    }

    /// Whether the node runs and is not paused: it can be ticked, stepped and asked.
    pub fn is_available(&self) -> bool {
        self.raft.is_some() && !self.paused
    }

    /// Its role, if running.
    pub fn role(&self) -> Option<Role> {
        self.raft.as_ref().map(RaftNode::role)
    }

    /// Ticks the core with the node's monotonic clock at true time `true_ms`.
    pub fn tick(&mut self, true_ms: u64) {
        let now = self.clock.monotonic_ms(true_ms);
        if let Some(raft) = self.raft.as_mut() {
            raft.tick(now);
        }
    }

    /// Proposes a client command stamped with the node's wall clock.
    pub fn propose(&mut self, true_ms: u64, command: &KvCommand) -> Result<LogId, Error> {
        let stamp = self.clock.wall_ms(true_ms);
        let raft = self.raft.as_mut().expect("proposals go to running nodes");
        raft.propose(envelope::encode(stamp, command))
    }

    /// Registers a read.
    pub fn read(&mut self, id: ReadId, policy: ReadPolicy) -> Result<(), Error> {
        self.raft.as_mut().expect("reads go to running nodes").read(id, policy)
    }

    /// Leader: proposes the deletion of expired keys through the log when some are due by its
    /// wall clock minus the clock-offset bound; returns the proposal's log id. As the runtime's
    /// driver does, a new leader first gives every lease its full TTL again
    /// ([`KvCommand::LeaseRefreshAll`], left in `lease_refresh_proposed`).
    pub fn maybe_propose_expiry(&mut self, true_ms: u64) -> Option<LogId> {
        if self.role() != Some(Role::Leader) || true_ms < self.next_expire_ms {
            return None;
        }
        self.next_expire_ms = true_ms + 4 * self.config.heartbeat_interval_ms;
        let wall = self.clock.wall_ms(true_ms);
        let term = self.raft.as_ref()?.term();
        if self.leases_refreshed_term != term {
            self.leases_refreshed_term = term;
            if !self.kv.lease_ids().is_empty() {
                let command = KvCommand::LeaseRefreshAll;
                self.lease_refresh_proposed = self.raft.as_mut()?.propose(envelope::encode(wall, &command)).ok();
                return None;
            }
        }
        let cutoff = wall.saturating_sub(self.clock_offset_ms_max);
        if self.kv.next_expiry_ms().is_none_or(|due| due > cutoff) {
            return None;
        }
        let command = KvCommand::Expire { now_ms: cutoff };
        self.raft.as_mut()?.propose(envelope::encode(wall, &command)).ok()
    }

    /// Leader: proposes a compaction of the store's history once more than twice
    /// [`REVISIONS_KEPT`] revisions are held, keeping the latest [`REVISIONS_KEPT`]; this bounds
    /// snapshots, as an operator's periodic compaction does.
    pub fn maybe_propose_compaction(&mut self, true_ms: u64) -> Option<LogId> {
        let (current, compacted) = (self.kv.current_revision(), self.kv.compacted_revision());
        if self.role() != Some(Role::Leader) || current < compacted + 2 * REVISIONS_KEPT {
            return None;
        }
        let command = KvCommand::Compact { revision: current - REVISIONS_KEPT };
        let stamp = self.clock.wall_ms(true_ms);
        self.raft.as_mut()?.propose(envelope::encode(stamp, &command)).ok()
    }

    /// Completes the disk syncs due at `true_ms` and reports durability to the core.
    pub fn complete_syncs(&mut self, true_ms: u64) {
        if let Some(log_id) = self.disk.complete_syncs(true_ms) {
            if let Some(raft) = self.raft.as_mut() {
                raft.persisted(log_id);
            }
        }
    }

    fn sync_at_ms(&mut self, true_ms: u64) -> u64 {
        let faults = &self.disk_faults;
        let mut delay = self.rng.between(faults.sync_delay_ms_min, faults.sync_delay_ms_max);
        if self.rng.chance(faults.slow_sync_per_million) {
            delay += faults.slow_sync_delay_ms;
        }
        true_ms + delay
    }

    /// Carries out every pending `Ready` in the contract's order.
    pub fn process_ready(&mut self, true_ms: u64, output: &mut NodeOutput) {
        while self.raft.as_ref().is_some_and(RaftNode::has_ready) {
            let ready = self.raft.as_mut().expect("checked above").ready();
            if let Some(hard_state) = ready.hard_state {
                self.disk.save_hard_state(hard_state);
            }
            if let Some(snapshot) = ready.snapshot {
                self.install_snapshot(snapshot, output);
            }
            if let Some(write) = ready.log_write {
                let sync_at = self.sync_at_ms(true_ms);
                self.disk.queue_write(write, sync_at);
            }
            output.messages.extend(ready.messages);
            self.apply(ready.committed_entries, output);
            output.reads.extend(ready.reads);
            output.soft_states.extend(ready.soft_state);
            self.maybe_snapshot();
        }
    }

    fn install_snapshot(&mut self, snapshot: Snapshot, output: &mut NodeOutput) {
        match restore_store(&snapshot) {
            Ok(kv) => self.kv = kv,
            Err(error) => output.anomalies.push(format!("node {}: leader's snapshot is corrupt: {error}", self.id)),
        }
        output.snapshot_installed = true;
        let last = snapshot.meta.last_included;
        let durable = self.disk.install_snapshot(snapshot);
        self.last_snapshot_index = last.index;
        let raft = self.raft.as_mut().expect("running");
        raft.snapshot_installed(last);
        raft.persisted(durable);
    }

    fn apply(&mut self, entries: Vec<keel_core::Entry>, output: &mut NodeOutput) {
        let Some(last) = entries.last().map(|e| e.log_id.index) else { return };
        for entry in entries {
            let index = entry.log_id.index;
            let mut applied = AppliedEntry { log_id: entry.log_id, command: None, result: None };
            match &entry.payload {
                EntryPayload::Command(bytes) => match envelope::decode(bytes) {
                    Ok((stamp, command)) => {
                        applied.result = Some(self.kv.apply(index, stamp, &command));
                        applied.command = Some((stamp, command));
                    }
                    Err(error) => {
                        output.anomalies.push(format!("node {}: entry {} undecodable: {error}", self.id, entry.log_id));
                        self.kv.advance_applied_index(index);
                    }
                },
                EntryPayload::Noop | EntryPayload::Membership(_) => self.kv.advance_applied_index(index),
            }
            output.applied.push(applied);
        }
        self.raft.as_mut().expect("running").applied(last);
    }

    fn maybe_snapshot(&mut self) {
        let Some(raft) = self.raft.as_mut() else { return };
        let applied = raft.applied_index();
        if applied < self.last_snapshot_index + self.snapshot_interval_entries {
            return;
        }
        let data = self.kv.snapshot();
        if let Ok(meta) = raft.snapshot_taken(applied, data.clone()) {
            self.last_snapshot_index = applied;
            self.disk.compact(Snapshot { meta, data });
        }
    }

    /// Crashes the node: the core and the store are gone, queued writes lost (some torn).
    pub fn crash(&mut self) {
        let tear = self.rng.chance(self.disk_faults.torn_write_per_million);
        self.raft = None;
        self.paused = false;
        self.disk.crash(tear, &mut self.rng);
    }

    /// Restarts a crashed node from its disk; a detected corruption keeps it down for good.
    pub fn restart(&mut self) -> Result<(), String> {
        let recovered = self.disk.recover().inspect_err(|error| self.corrupted = Some(error.clone()))?;
        let kv = match &recovered.snapshot {
            Some(snapshot) => {
                restore_store(snapshot).map_err(|e| format!("node {}: snapshot on disk: {e}", self.id))?
            }
            None => KvStore::new(),
        };
        self.kv = kv;
        self.last_snapshot_index = recovered.applied;
        let raft = RaftNode::new(self.config.clone(), recovered).map_err(|e| e.to_string())?;
        self.raft = Some(raft);
        self.next_expire_ms = 0;
        self.leases_refreshed_term = 0;
        Ok(())
    }

    /// Flips a bit in a synced log entry on this node's disk.
    pub fn flip_bit(&mut self) -> Option<u64> {
        self.disk.flip_bit(&mut self.rng)
    }

    /// Steps the node's wall clock to a new offset within `±offset_ms_max`; returns it.
    pub fn step_wall_clock(&mut self, offset_ms_max: u64) -> i64 {
        self.clock.step_wall(offset_ms_max, &mut self.rng);
        self.clock.wall_offset_ms
    }
}

/// The store a snapshot holds (an empty store for a new cluster's empty snapshot).
fn restore_store(snapshot: &Snapshot) -> Result<KvStore, String> {
    if snapshot.data.is_empty() {
        return Ok(KvStore::new());
    }
    KvStore::restore(&snapshot.data).map_err(|error| error.to_string())
}
