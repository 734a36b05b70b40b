//! Log replication (Raft paper §5.3, thesis §10.2): the leader's append stream with pipelining
//! and batching, the follower's consistency check with fast backtracking, heartbeats,
//! check-quorum, and commit advancement by counting durable replicas of current-term entries.
//!
//! Data flow on the leader: proposals append to the log; `ready` → `flush_leader` sends, per
//! peer, as many bounded batches as its progress state allows; acknowledgements (sent by
//! followers only once durable) raise match indexes; `maybe_commit` advances the commit index to
//! the quorum's durable match point when that entry is of the current term. On a follower:
//! `handle_append` checks `prev_log_id`, truncates a conflicting suffix, appends, adopts the
//! leader's commit index, and acknowledges once storage reports the entries durable.

use crate::membership::Membership;
use crate::message::{ConflictHint, MessageBody};
use crate::node::{LeaderState, RaftNode};
use crate::progress::ProgressState;
use crate::quorum;
use crate::types::{Entry, EntryPayload, Index, LogId, NodeId, Role};

impl RaftNode {
    /// Leader tick: heartbeats, check-quorum, preferred leader, transfer and snapshot timeouts.
    pub(crate) fn tick_leader(&mut self) {
        let now = self.now_ms;
        let leader = self.leader.as_mut().expect("leader state exists while leading");
        if now >= leader.heartbeat_due_ms {
            leader.heartbeat_due_ms = now + self.config.heartbeat_interval_ms;
            self.broadcast_heartbeat();
        }
        let leader = self.leader.as_mut().expect("leader state exists while leading");
        if now >= leader.check_quorum_due_ms {
            leader.check_quorum_due_ms = now + self.config.election_timeout_ms_min;
            if self.config.check_quorum && !self.quorum_active() {
                tracing::warn!(node = self.id, term = self.term, "check-quorum failed: stepping down");
                self.become_follower(self.term, None);
                return;
            }
            self.check_preferred_leader();
        }
        self.tick_transfer();
        self.tick_snapshot_sends();
    }

    /// True when a quorum of voters was heard from within the last election timeout.
    fn quorum_active(&self) -> bool {
        let leader = self.leader.as_ref().expect("leader state exists while leading");
        let since = self.now_ms.saturating_sub(self.config.election_timeout_ms_min);
        quorum::is_quorum(self.configs.effective(), |id| {
            id == self.id
                || leader.progress.get(&id).and_then(|p| p.last_contact_ms).is_some_and(|contact| contact >= since)
        })
    }

    /// True when `ready` would send appends, a commit update or a read round.
    pub(crate) fn leader_has_work(&self, leader: &LeaderState) -> bool {
        let last_index = self.log.last_index();
        let inflight_max = self.config.inflight_messages_max;
        leader.reads.round_needed
            || self.log.committed() > leader.commit_broadcast
            || leader.progress.values().any(|p| {
                p.can_send(inflight_max)
                    && (p.next_index <= last_index
                        || (p.state == ProgressState::Probe && p.match_index + 1 < p.next_index))
            })
    }

    /// Sends what every peer may receive now, then the pending read round.
    pub(crate) fn flush_leader(&mut self) {
        let peers: Vec<NodeId> = self.leader.as_ref().map(|l| l.progress.keys().copied().collect()).unwrap_or_default();
        for peer in peers {
            self.send_appends(peer);
        }
        self.flush_read_round();
        let commit = self.log.committed();
        if let Some(leader) = self.leader.as_mut() {
            leader.commit_broadcast = commit;
        }
    }

    /// Sends bounded batches to `to` while its progress state and in-flight window allow.
    pub(crate) fn send_appends(&mut self, to: NodeId) {
        loop {
            let commit = self.log.committed();
            let last_index = self.log.last_index();
            let inflight_max = self.config.inflight_messages_max;
            let Some(progress) = self.leader.as_mut().and_then(|l| l.progress.get_mut(&to)) else { return };
            if matches!(progress.state, ProgressState::Snapshot { .. }) {
                return;
            }
            if progress.next_index <= self.log.compacted().index {
                let snapshot_index = self.snapshot.as_ref().map_or(0, |s| s.meta.last_included.index);
                progress.become_snapshot(snapshot_index);
                self.send_snapshot_chunk(to);
                return;
            }
            if !progress.can_send(inflight_max) {
                return;
            }
            let next = progress.next_index;
            let probing = progress.state == ProgressState::Probe && progress.match_index + 1 < next;
            if next > last_index && !probing && progress.commit_sent >= commit {
                return;
            }
            let entries = self.log.slice(
                next,
                last_index,
                self.config.entries_per_message_max,
                self.config.bytes_per_message_max,
            );
            let prev_term = self.log.term_at(next - 1).expect("entry before next index is in the log");
            let sent_last = next - 1 + entries.len() as Index;
            let is_probe = progress.state == ProgressState::Probe;
            // Nothing to send but the commit index (`next` is past the log, so `entries` is
            // empty): no answer is expected, so nothing in flight.
            let commit_notice = !is_probe && next > last_index;
            if !commit_notice {
                progress.on_sent(sent_last, self.now_ms);
            }
            progress.commit_sent = commit;
            let body = MessageBody::AppendEntries {
                prev_log_id: LogId::new(prev_term, next - 1),
                entries,
                leader_commit: commit,
                commit_notice,
            };
            self.send(to, body);
            if is_probe || sent_last >= last_index {
                return;
            }
        }
    }

    /// Leader: a follower's answer to an append.
    pub(crate) fn handle_append_response(
        &mut self,
        from: NodeId,
        success: bool,
        match_index: Index,
        rejected_index: Index,
        conflict: Option<ConflictHint>,
    ) {
        let now = self.now_ms;
        let last_index = self.log.last_index();
        let Some(progress) = self.leader.as_mut().and_then(|l| l.progress.get_mut(&from)) else { return };
        progress.last_contact_ms = Some(now);
        if success {
            if progress.on_match(match_index.min(last_index)) {
                self.maybe_commit();
            }
            self.maybe_send_timeout_now(from);
            return;
        }
        let stale = match progress.state {
            ProgressState::Probe => rejected_index + 1 != progress.next_index,
            ProgressState::Replicate => rejected_index <= progress.match_index,
            ProgressState::Snapshot { .. } => true,
        };
        if stale {
            return;
        }
        let hint = conflict.unwrap_or(ConflictHint { index: rejected_index, term: None });
        let next = self.log.next_probe_index(rejected_index, hint);
        tracing::debug!(node = self.id, from, rejected_index, next, "append rejected: backtracking");
        let progress = self.leader.as_mut().and_then(|l| l.progress.get_mut(&from)).expect("progress checked above");
        progress.become_probe(next);
    }

    /// Leader: advances the commit index to the quorum's durable match point, counting only an
    /// entry of the current term (Raft paper §5.4.2).
    pub(crate) fn maybe_commit(&mut self) {
        let Some(leader) = self.leader.as_ref() else { return };
        let persisted = self.log.persisted();
        // PLANTED BUG (ack-before-sync): the leader counts its own entries before they are durable.
        #[cfg(feature = "planted-bugs")]
        let persisted =
            if crate::planted::planted!(self.config, AckBeforeSync) { self.log.last_index() } else { persisted };
        let quorum_index = quorum::committed_index(self.configs.effective(), |id| {
            if id == self.id {
                persisted
            } else {
                leader.progress.get(&id).map_or(0, |p| p.match_index)
            }
        });
        let old_commit = self.log.committed();
        let of_current_term = self.log.term_at(quorum_index) == Some(self.term);
        // PLANTED BUG (commit-previous-term): an earlier term's entry commits by counting replicas.
        #[cfg(feature = "planted-bugs")]
        let of_current_term = of_current_term || crate::planted::planted!(self.config, CommitPreviousTerm);
        if quorum_index <= old_commit || !of_current_term {
            return;
        }
        crate::invariants::check_commit_is_quorum_durable(quorum_index, quorum_index, old_commit);
        self.log.commit_to(quorum_index);
        let committed_bytes: u64 =
            (old_commit + 1..=quorum_index).filter_map(|i| self.log.entry(i)).map(Entry::size_bytes).sum();
        if let Some(leader) = self.leader.as_mut() {
            leader.uncommitted_bytes = leader.uncommitted_bytes.saturating_sub(committed_bytes);
        }
        self.on_commit_advanced();
    }

    /// Leader: follow-ups of a commit advance (reads held for the no-op, joint configuration exit,
    /// a removed leader's hand-over).
    fn on_commit_advanced(&mut self) {
        self.release_reads_after_noop();
        self.after_membership_commit();
    }

    /// Follows `from` as the leader of the current term.
    pub(crate) fn accept_leader(&mut self, from: NodeId) {
        if matches!(self.role, Role::Candidate | Role::PreCandidate) {
            self.role = Role::Follower;
            self.votes.clear();
        }
        self.set_leader(Some(from));
        self.last_leader_contact_ms = Some(self.now_ms);
        self.reset_election_deadline();
        self.update_learner_role();
    }

    /// Follower: entries from the leader (none for a probe or a commit notice).
    pub(crate) fn handle_append(
        &mut self,
        from: NodeId,
        prev: LogId,
        entries: Vec<Entry>,
        leader_commit: Index,
        commit_notice: bool,
    ) {
        self.accept_leader(from);
        if self.follower.snapshot.is_installing() {
            return;
        }
        let configs: Vec<(LogId, Membership)> = entries
            .iter()
            .filter_map(|e| match &e.payload {
                EntryPayload::Membership(m) => Some((e.log_id, (**m).clone())),
                _ => None,
            })
            .collect();
        match self.log.append_from_leader(prev, entries) {
            Ok((last_new, truncated)) => {
                self.record_appended_configs(configs, truncated);
                self.follower.match_hint = self.follower.match_hint.max(last_new);
                let commit = leader_commit.min(last_new);
                if commit > self.log.committed() {
                    self.log.commit_to(commit);
                }
                let ack = self.log.persisted().min(self.follower.match_hint);
                // PLANTED BUG (ack-before-sync): the follower acknowledges what is only in memory.
                #[cfg(feature = "planted-bugs")]
                let ack = if crate::planted::planted!(self.config, AckBeforeSync) { last_new } else { ack };
                // A commit notice is answered only with news: the leader counts none in flight.
                let answer_due = !commit_notice || ack > self.follower.acked;
                if ack >= last_new && answer_due {
                    self.follower.acked = self.follower.acked.max(ack);
                    self.send_append_success(from, ack);
                }
            }
            Err(hint) => {
                let body = MessageBody::AppendEntriesResponse {
                    success: false,
                    match_index: 0,
                    rejected_index: prev.index,
                    conflict: Some(hint),
                };
                self.send(from, body);
            }
        }
    }

    fn record_appended_configs(&mut self, configs: Vec<(LogId, Membership)>, truncated: Option<Index>) {
        let mut changed = false;
        if let Some(index) = truncated {
            changed |= self.configs.truncate_from(index);
        }
        for (log_id, membership) in configs {
            if log_id.index > self.configs.last_index() && self.log.matches(log_id) {
                self.configs.push(log_id.index, membership);
                changed = true;
            }
        }
        if changed {
            self.on_config_changed();
        }
    }

    fn send_append_success(&mut self, to: NodeId, match_index: Index) {
        let body = MessageBody::AppendEntriesResponse { success: true, match_index, rejected_index: 0, conflict: None };
        self.send(to, body);
    }

    /// Follower: storage made more of the log durable; acknowledge what now matches the leader.
    pub(crate) fn acknowledge_leader(&mut self) {
        let Some(leader) = self.leader_id.filter(|id| *id != self.id) else { return };
        let ack = self.log.persisted().min(self.follower.match_hint);
        if ack > self.follower.acked {
            self.follower.acked = ack;
            self.send_append_success(leader, ack);
        }
    }

    /// Follower: a heartbeat carries liveness, a safe commit index and a read round.
    pub(crate) fn handle_heartbeat(&mut self, from: NodeId, commit: Index, read_round: u64) {
        self.accept_leader(from);
        if !self.follower.snapshot.is_installing() {
            let commit = commit.min(self.log.last_index());
            if commit > self.log.committed() {
                self.log.commit_to(commit);
            }
        }
        self.send(from, MessageBody::HeartbeatResponse { read_round });
    }

    /// Leader: a heartbeat answer confirms leadership for a read round and exposes lost appends:
    /// a probe is re-sent, and a stream whose oldest append went unanswered for half an election
    /// timeout falls back to probing (a slow disk merely delays acknowledgements; half an election
    /// timeout keeps such false alarms rare while still repairing a lost tail quickly).
    pub(crate) fn handle_heartbeat_response(&mut self, from: NodeId, read_round: u64) {
        let now = self.now_ms;
        let last_index = self.log.last_index();
        let stalled_before = now.saturating_sub(self.config.election_timeout_ms_min / 2);
        let Some(progress) = self.leader.as_mut().and_then(|l| l.progress.get_mut(&from)) else { return };
        progress.last_contact_ms = Some(now);
        progress.acked_round = progress.acked_round.max(read_round);
        if progress.match_index < last_index {
            match progress.state {
                ProgressState::Probe => progress.probe_sent = false,
                ProgressState::Replicate if progress.oldest_inflight_sent_ms().is_some_and(|s| s <= stalled_before) => {
                    let next = progress.match_index + 1;
                    progress.become_probe(next);
                }
                _ => {}
            }
        }
        self.update_read_rounds();
    }
}
