//! [`RaftNode`]: one node's consensus state and the inputs it accepts.
//!
//! Data flow: the caller feeds inputs (`tick`, `step`, `propose`, `read`, `persisted`, `applied`,
//! ...) and then takes the resulting effects with [`RaftNode::ready`] (see `ready.rs` for the
//! order in which they must be carried out). This file holds the state, the public inputs and the
//! role transitions; each Raft concept lives in its own module (`election`, `replication`,
//! `read_index`, `snapshot`, `transfer`, `reconfigure`) as further `impl RaftNode` blocks.

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::config::{Config, ConfigError};
use crate::error::Error;
use crate::invariants;
use crate::log::RaftLog;
use crate::membership::Membership;
use crate::message::{Message, MessageBody};
use crate::progress::Progress;
use crate::read_index::{LeaderReads, ReadTracker};
use crate::ready::{Ready, SoftState};
use crate::reconfigure::ConfigHistory;
use crate::rng::Rng;
use crate::snapshot::FollowerSnapshot;
use crate::transfer::Transfer;
use crate::types::{Entry, EntryPayload, HardState, Index, LeaderHint, LogId, NodeId, Role, Snapshot, Term};

/// What a node recovered from its storage at start (or what a brand-new node starts from).
#[derive(Clone, Debug, Default)]
pub struct RecoveredState {
    /// Term and vote as last synced.
    pub hard_state: HardState,
    /// The latest snapshot; for a new cluster, an empty one at index 0 holding the initial
    /// membership.
    pub snapshot: Option<Snapshot>,
    /// Durable log entries following the snapshot, contiguous.
    pub entries: Vec<Entry>,
    /// Index the state machine has applied durably (at least the snapshot's index).
    pub applied: Index,
}

impl RecoveredState {
    /// The state of a node of a brand-new cluster whose initial voters are `membership`.
    pub fn bootstrap(membership: Membership) -> Self {
        let meta = crate::types::SnapshotMeta { last_included: LogId::default(), membership };
        Self { snapshot: Some(Snapshot { meta, data: Bytes::new() }), ..Self::default() }
    }

    /// The state of a node that joins an existing cluster: it knows nothing and waits to be
    /// added as a learner and contacted by the leader.
    pub fn joining() -> Self {
        Self::default()
    }
}

/// State a follower keeps about its current leader.
#[derive(Debug, Default)]
pub(crate) struct FollowerState {
    /// The log matches the current leader's up to here (reset on every leader change).
    pub match_hint: Index,
    /// Highest match index acknowledged to the current leader.
    pub acked: Index,
    /// Snapshot transfer in progress or awaiting installation.
    pub snapshot: FollowerSnapshot,
}

/// State that exists only while this node leads.
#[derive(Debug)]
pub(crate) struct LeaderState {
    /// Every other member's replication progress.
    pub progress: BTreeMap<NodeId, Progress>,
    /// When the next heartbeat round is due.
    pub heartbeat_due_ms: u64,
    /// When check-quorum (and the preferred-leader check) runs next.
    pub check_quorum_due_ms: u64,
    /// Payload bytes appended but not committed.
    pub uncommitted_bytes: u64,
    /// ReadIndex and lease state.
    pub reads: LeaderReads,
    /// Leadership transfer in progress.
    pub transfer: Option<Transfer>,
    /// Commit index last broadcast to followers.
    pub commit_broadcast: Index,
}

/// One node's consensus core: a pure state machine driven by its inputs.
#[derive(Debug)]
pub struct RaftNode {
    pub(crate) config: Config,
    pub(crate) id: NodeId,
    pub(crate) term: Term,
    pub(crate) voted_for: Option<NodeId>,
    pub(crate) role: Role,
    pub(crate) leader_id: Option<NodeId>,
    pub(crate) log: RaftLog,
    pub(crate) configs: ConfigHistory,
    /// Latest snapshot, sent to followers that fell behind the compaction point.
    pub(crate) snapshot: Option<Snapshot>,
    pub(crate) now_ms: u64,
    pub(crate) clock_started: bool,
    pub(crate) election_deadline_ms: u64,
    /// Clock reading when this node last heard from a leader (or booted): leader stickiness.
    pub(crate) last_leader_contact_ms: Option<u64>,
    pub(crate) rng: Rng,
    pub(crate) votes: BTreeMap<NodeId, bool>,
    pub(crate) leader: Option<LeaderState>,
    pub(crate) follower: FollowerState,
    pub(crate) reads: ReadTracker,
    pub(crate) out: Ready,
    reported_hard_state: HardState,
    reported_soft_state: Option<SoftState>,
}

impl RaftNode {
    /// Builds a node from its configuration and recovered state. Fails with a message naming the
    /// problem if the configuration is invalid or the recovered state is inconsistent.
    pub fn new(config: Config, recovered: RecoveredState) -> Result<Self, ConfigError> {
        config.validate()?;
        invariants::check_recovered(&recovered)?;
        let compacted = recovered.snapshot.as_ref().map_or(LogId::default(), |s| s.meta.last_included);
        let base = recovered.snapshot.as_ref().map(|s| s.meta.membership.clone()).unwrap_or_default();
        let mut configs = ConfigHistory::new(compacted.index, base);
        for entry in &recovered.entries {
            if let EntryPayload::Membership(membership) = &entry.payload {
                configs.push(entry.log_id.index, (**membership).clone());
            }
        }
        let log = RaftLog::recovered(compacted, recovered.entries, recovered.applied);
        // PLANTED BUG (no-truncate-conflict) switch: see `RaftLog::append_from_leader`.
        #[cfg(feature = "planted-bugs")]
        let log = log.keeping_conflicts(crate::planted::planted!(config, NoTruncateConflict));
        let rng = Rng::new(config.rng_seed);
        let mut node = Self {
            id: config.id,
            term: recovered.hard_state.term,
            voted_for: recovered.hard_state.voted_for,
            role: Role::Follower,
            leader_id: None,
            log,
            configs,
            snapshot: recovered.snapshot.filter(|s| s.meta.last_included.index > 0),
            now_ms: 0,
            clock_started: false,
            election_deadline_ms: 0,
            last_leader_contact_ms: None,
            rng,
            votes: BTreeMap::new(),
            leader: None,
            follower: FollowerState::default(),
            reads: ReadTracker::default(),
            out: Ready::default(),
            reported_hard_state: recovered.hard_state,
            reported_soft_state: None,
            config,
        };
        node.update_learner_role();
        Ok(node)
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Current term.
    pub fn term(&self) -> Term {
        self.term
    }

    /// Current role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The leader this node knows of.
    pub fn leader_id(&self) -> Option<NodeId> {
        self.leader_id
    }

    /// Highest committed index known here.
    pub fn commit_index(&self) -> Index {
        self.log.committed()
    }

    /// Highest index the caller reported applied.
    pub fn applied_index(&self) -> Index {
        self.log.applied()
    }

    /// Highest index durable on this node.
    pub fn persisted_index(&self) -> Index {
        self.log.persisted()
    }

    /// Last entry of the log.
    pub fn last_log_id(&self) -> LogId {
        self.log.last_log_id()
    }

    /// First index still held in the log (entries before it are covered by a snapshot).
    pub fn first_log_index(&self) -> Index {
        self.log.first_index()
    }

    /// The entry at `index`, if still in the log.
    pub fn entry(&self, index: Index) -> Option<&Entry> {
        self.log.entry(index)
    }

    /// The latest configuration in the log (effective as soon as appended).
    pub fn membership(&self) -> &Membership {
        self.configs.effective()
    }

    /// The latest committed configuration, and the index of its entry.
    pub fn committed_membership(&self) -> (Index, &Membership) {
        self.configs.committed(self.log.committed())
    }

    /// Term and vote as they must be persisted.
    pub fn hard_state(&self) -> HardState {
        HardState { term: self.term, voted_for: self.voted_for }
    }

    /// The hard state handed out in `Ready` for syncing: [`RaftNode::hard_state`].
    fn hard_state_to_persist(&self) -> HardState {
        let hard_state = self.hard_state();
        // PLANTED BUG (vote-not-persisted): a vote granted to another node never reaches the disk.
        #[cfg(feature = "planted-bugs")]
        if crate::planted::planted!(self.config, VoteNotPersisted) && hard_state.voted_for != Some(self.id) {
            return HardState { voted_for: None, ..hard_state };
        }
        hard_state
    }

    /// The hint to attach to a rejection so that a client can find the leader.
    pub fn leader_hint(&self) -> LeaderHint {
        LeaderHint {
            leader_id: self.leader_id,
            address: self.leader_id.map(|id| self.configs.effective().address_of(id)).unwrap_or_default(),
            term: self.term,
        }
    }

    /// Per-peer match index and last contact (leader only), for status reports.
    pub fn peer_progress(&self) -> Vec<(NodeId, Index, Option<u64>)> {
        let Some(leader) = &self.leader else { return Vec::new() };
        leader.progress.iter().map(|(id, p)| (*id, p.match_index, p.last_contact_ms)).collect()
    }

    /// Input: the node's clock reads `now_ms` (monotonic, milliseconds). Drives elections,
    /// heartbeats, check-quorum, leases, transfer and snapshot-resend timeouts. The caller ticks at
    /// least every `heartbeat_interval_ms`.
    pub fn tick(&mut self, now_ms: u64) {
        self.now_ms = self.now_ms.max(now_ms);
        if !self.clock_started {
            self.clock_started = true;
            // Refuse votes for one election timeout after boot: a leader's lease may still count
            // on this node's promise from before a restart.
            self.last_leader_contact_ms = Some(self.now_ms);
            self.reset_election_deadline();
        }
        match self.role {
            Role::Leader => self.tick_leader(),
            Role::Learner => self.tick_reads(),
            _ => self.tick_election(),
        }
    }

    /// Input: a message from a peer. Malformed or misaddressed messages are dropped with a warning.
    pub fn step(&mut self, message: Message) {
        if let Err(reason) = crate::validate::check_message(self, &message) {
            tracing::warn!(
                node = self.id,
                from = message.from,
                kind = message.body.kind(),
                "dropping message: {reason}"
            );
            return;
        }
        if message.term > self.term && !self.step_higher_term(&message) {
            return;
        }
        if message.term < self.term {
            self.step_lower_term(&message);
            return;
        }
        self.dispatch(message);
    }

    fn dispatch(&mut self, message: Message) {
        let from = message.from;
        match message.body {
            MessageBody::AppendEntries { prev_log_id, entries, leader_commit, commit_notice } => {
                self.handle_append(from, prev_log_id, entries, leader_commit, commit_notice)
            }
            MessageBody::AppendEntriesResponse { success, match_index, rejected_index, conflict } => {
                self.handle_append_response(from, success, match_index, rejected_index, conflict)
            }
            MessageBody::Heartbeat { commit, read_round } => self.handle_heartbeat(from, commit, read_round),
            MessageBody::HeartbeatResponse { read_round } => self.handle_heartbeat_response(from, read_round),
            MessageBody::RequestVote { last_log_id, pre_vote, .. } => {
                self.handle_vote_request(from, message.term, last_log_id, pre_vote)
            }
            MessageBody::RequestVoteResponse { granted, pre_vote } => {
                self.handle_vote_response(from, message.term, granted, pre_vote)
            }
            MessageBody::InstallSnapshot { meta, offset, total_bytes, data } => {
                self.handle_snapshot_chunk(from, meta, offset, total_bytes, data)
            }
            MessageBody::InstallSnapshotResponse { snapshot_index, next_offset, installed } => {
                self.handle_snapshot_response(from, snapshot_index, next_offset, installed)
            }
            MessageBody::TimeoutNow => self.handle_timeout_now(from),
            MessageBody::ReadIndexRequest { read_ids } => self.handle_read_index_request(from, read_ids),
            MessageBody::ReadIndexResponse { read_ids, answer } => {
                self.handle_read_index_response(from, read_ids, answer)
            }
        }
    }

    /// A message from a higher term. Returns whether to go on processing it.
    fn step_higher_term(&mut self, message: &Message) -> bool {
        match &message.body {
            MessageBody::RequestVote { pre_vote, leadership_transfer, .. } => {
                if !leadership_transfer && self.in_leader_lease() {
                    tracing::debug!(
                        node = self.id,
                        from = message.from,
                        "refusing vote: heard from a live leader recently"
                    );
                    if *pre_vote {
                        self.send(message.from, MessageBody::RequestVoteResponse { granted: false, pre_vote: true });
                    }
                    return false;
                }
                if !pre_vote {
                    self.become_follower(message.term, None);
                }
            }
            MessageBody::RequestVoteResponse { pre_vote: true, granted: true } => {}
            MessageBody::AppendEntries { .. } | MessageBody::Heartbeat { .. } | MessageBody::InstallSnapshot { .. } => {
                self.become_follower(message.term, Some(message.from));
            }
            _ => self.become_follower(message.term, None),
        }
        true
    }

    /// A message from a lower term: tell a stale leader or candidate our term so it steps down.
    fn step_lower_term(&mut self, message: &Message) {
        match &message.body {
            MessageBody::AppendEntries { .. } | MessageBody::Heartbeat { .. } | MessageBody::InstallSnapshot { .. } => {
                self.send(message.from, MessageBody::HeartbeatResponse { read_round: 0 });
            }
            MessageBody::RequestVote { pre_vote, .. } => {
                self.send(message.from, MessageBody::RequestVoteResponse { granted: false, pre_vote: *pre_vote });
            }
            _ => {}
        }
    }

    /// True while this node leads, or heard from a leader less than an election timeout ago.
    pub(crate) fn in_leader_lease(&self) -> bool {
        if self.role == Role::Leader {
            return true;
        }
        if !self.clock_started {
            // Not ticked since boot: as right after the first tick, refuse votes, since a leader's
            // lease may still count on a promise this node made before it restarted.
            return true;
        }
        self.last_leader_contact_ms.is_some_and(|contact| self.now_ms < contact + self.config.election_timeout_ms_min)
    }

    /// Input: a client command. Returns the log id the command will commit at if it commits; the
    /// client is answered when that index is applied (see the effect-ordering contract).
    pub fn propose(&mut self, command: Bytes) -> Result<LogId, Error> {
        self.check_can_propose()?;
        Ok(self.append_as_leader(EntryPayload::Command(command)))
    }

    pub(crate) fn check_can_propose(&self) -> Result<(), Error> {
        let Some(leader) = &self.leader else { return Err(Error::NotLeader(self.leader_hint())) };
        if leader.transfer.is_some() {
            return Err(Error::TransferInProgress(self.leader_hint()));
        }
        let uncommitted = self.log.last_index() - self.log.committed();
        if uncommitted >= self.config.uncommitted_entries_max {
            let limit = format!("uncommitted_entries_max = {}", self.config.uncommitted_entries_max);
            return Err(Error::TooManyUncommitted { limit });
        }
        if leader.uncommitted_bytes >= self.config.uncommitted_bytes_max {
            let limit = format!("uncommitted_bytes_max = {}", self.config.uncommitted_bytes_max);
            return Err(Error::TooManyUncommitted { limit });
        }
        Ok(())
    }

    /// Appends an entry of the current term to the leader's own log.
    pub(crate) fn append_as_leader(&mut self, payload: EntryPayload) -> LogId {
        let log_id = LogId::new(self.term, self.log.last_index() + 1);
        let entry = Entry { log_id, payload };
        let leader = self.leader.as_mut().expect("only a leader appends its own entries");
        leader.uncommitted_bytes += entry.size_bytes();
        let is_membership = if let EntryPayload::Membership(membership) = &entry.payload {
            self.configs.push(log_id.index, (**membership).clone());
            true
        } else {
            false
        };
        self.log.append(entry);
        if is_membership {
            self.on_config_changed();
        }
        log_id
    }

    /// Input: storage made the log durable up to `log_id` (the last entry of a completed write).
    pub fn persisted(&mut self, log_id: LogId) {
        if !self.log.set_persisted(log_id) {
            return;
        }
        if self.role == Role::Leader {
            self.maybe_commit();
        } else {
            self.acknowledge_leader();
        }
    }

    /// Input: the caller applied every committed entry up to `index`. Releases reads waiting
    /// for it. Reporting more than was handed out is a caller bug and panics.
    pub fn applied(&mut self, index: Index) {
        self.log.set_applied(index);
        self.release_applied_reads();
    }

    /// True when [`RaftNode::ready`] has effects to hand out.
    pub fn has_ready(&self) -> bool {
        !self.out.is_empty()
            || self.log.has_unpersisted_changes()
            || self.log.has_committed_to_hand_out()
            || self.hard_state_to_persist() != self.reported_hard_state
            || self.leader.as_ref().is_some_and(|l| self.leader_has_work(l))
            || !self.reads.to_forward.is_empty()
    }

    /// Takes the effects accumulated since the last call. See `ready.rs` for their order.
    pub fn ready(&mut self) -> Ready {
        if self.role == Role::Leader {
            self.flush_leader();
        } else {
            self.flush_forwarded_reads();
        }
        let hard_state = self.hard_state_to_persist();
        if hard_state != self.reported_hard_state {
            self.reported_hard_state = hard_state;
            self.out.hard_state = Some(hard_state);
        }
        if self.out.log_write.is_none() {
            self.out.log_write = self.log.take_write();
        }
        if !self.follower.snapshot.is_installing() {
            let count_max = self.config.entries_per_message_max.max(1);
            self.out.committed_entries = self.log.take_committed(count_max);
        }
        let changed = self.reported_soft_state.as_ref().is_none_or(|reported| {
            reported.role != self.role
                || reported.leader.leader_id != self.leader_id
                || reported.leader.term != self.term
        });
        if changed {
            let soft_state = SoftState { role: self.role, leader: self.leader_hint() };
            self.reported_soft_state = Some(soft_state.clone());
            self.out.soft_state = Some(soft_state);
        }
        std::mem::take(&mut self.out)
    }

    /// Queues a message for the next `Ready`.
    pub(crate) fn send(&mut self, to: NodeId, body: MessageBody) {
        self.out.messages.push(Message { from: self.id, to, term: self.term, body });
    }

    pub(crate) fn reset_election_deadline(&mut self) {
        let timeout = self.rng.range(self.config.election_timeout_ms_min, self.config.election_timeout_ms_max);
        self.election_deadline_ms = self.now_ms + timeout;
    }

    /// Moves to `term` (never backwards), clearing the vote when the term changes.
    pub(crate) fn set_term(&mut self, term: Term) {
        invariants::check_term_advance(self.term, term);
        if term > self.term {
            self.term = term;
            self.voted_for = None;
        }
    }

    /// Becomes a follower (or learner) in `term`, following `leader` if known.
    pub(crate) fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        self.set_term(term);
        let old_leader_state = self.leader.take();
        if old_leader_state.is_some() {
            tracing::info!(node = self.id, term, "stepping down as leader");
        }
        self.role = Role::Follower;
        self.votes.clear();
        self.set_leader(leader);
        self.reset_election_deadline();
        self.update_learner_role();
        if let Some(state) = old_leader_state {
            self.fail_leader_reads(state.reads);
        }
    }

    /// Records who leads; a change resets what was acknowledged and fails forwarded reads.
    pub(crate) fn set_leader(&mut self, leader: Option<NodeId>) {
        if self.leader_id != leader {
            self.leader_id = leader;
            self.follower.match_hint = 0;
            self.follower.acked = 0;
            self.fail_forwarded_reads();
        }
        if leader.is_some() && leader != Some(self.id) {
            self.last_leader_contact_ms = Some(self.now_ms);
        }
    }

    /// Whether this node may stand for election: it votes in its latest configuration, or in the
    /// committed one while a change removing it is not yet committed. The latter matters when a
    /// leader that removed itself loses its quorum before the removal commits: its log may be the
    /// only one holding the new configuration, so it must be able to win again and finish the
    /// change (votes are still counted in the latest configuration).
    pub(crate) fn can_campaign(&self) -> bool {
        let committed = self.configs.committed(self.log.committed()).1;
        self.configs.effective().is_voter(self.id) || committed.is_voter(self.id)
    }

    /// A node that may not campaign is a learner.
    pub(crate) fn update_learner_role(&mut self) {
        let voter = self.can_campaign();
        match self.role {
            Role::Leader => {}
            Role::Learner if voter => self.role = Role::Follower,
            Role::Follower | Role::Candidate | Role::PreCandidate if !voter => self.role = Role::Learner,
            _ => {}
        }
    }

    /// Called whenever the effective configuration changed (append, truncation, snapshot).
    pub(crate) fn on_config_changed(&mut self) {
        self.update_learner_role();
        if self.role == Role::Leader {
            self.sync_progress_with_config();
        }
    }
}
