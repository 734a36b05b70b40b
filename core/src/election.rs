//! Leader election (Raft paper §5.2, thesis §9.6): randomized timeouts, the pre-vote round,
//! the election restriction (§5.4.1), and becoming leader.
//!
//! Data flow: `tick` → election deadline passed → pre-vote round (no term change) → if a quorum
//! would vote, a real election in `term + 1` → on a quorum of votes, `become_leader` appends a
//! no-op and starts replicating. Voters refuse higher-term requests while they heard from a live
//! leader within an election timeout (leader stickiness, `node.rs`), except after `TimeoutNow`.

use std::collections::BTreeMap;

use crate::invariants;
use crate::message::{Message, MessageBody};
use crate::node::{LeaderState, RaftNode};
use crate::progress::Progress;
use crate::quorum::{self, VoteResult};
use crate::read_index::LeaderReads;
use crate::types::{EntryPayload, LogId, NodeId, Role, Term};

impl RaftNode {
    /// Follower and candidate tick: time out forwarded reads, and campaign once the election
    /// deadline has passed.
    pub(crate) fn tick_election(&mut self) {
        self.tick_reads();
        if self.now_ms < self.election_deadline_ms {
            return;
        }
        if !self.can_campaign() {
            self.reset_election_deadline();
            return;
        }
        if self.config.pre_vote {
            self.start_pre_vote();
        } else {
            self.start_election(false);
        }
    }

    fn start_pre_vote(&mut self) {
        tracing::debug!(node = self.id, term = self.term, "starting pre-vote");
        self.role = Role::PreCandidate;
        self.set_leader(None);
        self.reset_election_deadline();
        self.votes = BTreeMap::from([(self.id, true)]);
        if self.tally() == VoteResult::Won {
            self.start_election(false);
            return;
        }
        self.request_votes(self.term + 1, true, false);
    }

    /// Starts a real election in the next term, voting for itself.
    pub(crate) fn start_election(&mut self, leadership_transfer: bool) {
        tracing::debug!(node = self.id, term = self.term + 1, leadership_transfer, "starting election");
        self.set_term(self.term + 1);
        self.vote_for(self.id);
        self.role = Role::Candidate;
        self.set_leader(None);
        self.reset_election_deadline();
        self.votes = BTreeMap::from([(self.id, true)]);
        if self.tally() == VoteResult::Won {
            self.become_leader();
            return;
        }
        self.request_votes(self.term, false, leadership_transfer);
    }

    fn request_votes(&mut self, term: Term, pre_vote: bool, leadership_transfer: bool) {
        let last_log_id = self.log.last_log_id();
        let voters: Vec<NodeId> = self.configs.effective().members().into_iter().collect();
        for to in voters.into_iter().filter(|id| *id != self.id && self.configs.effective().is_voter(*id)) {
            let body = MessageBody::RequestVote { last_log_id, pre_vote, leadership_transfer };
            self.out.messages.push(Message { from: self.id, to, term, body });
        }
    }

    fn vote_for(&mut self, candidate: NodeId) {
        // PLANTED BUG (double-vote): the vote is overwritten without the single-vote assertion.
        #[cfg(feature = "planted-bugs")]
        if crate::planted::planted!(self.config, DoubleVote) {
            self.voted_for = Some(candidate);
            return;
        }
        invariants::check_single_vote(self.term, self.voted_for, candidate);
        self.voted_for = Some(candidate);
    }

    fn tally(&self) -> VoteResult {
        quorum::vote_result(self.configs.effective(), &self.votes)
    }

    /// A vote or pre-vote request in a term at least ours (lower terms were answered in `step`).
    pub(crate) fn handle_vote_request(&mut self, from: NodeId, term: Term, last_log_id: LogId, pre_vote: bool) {
        let up_to_date = last_log_id >= self.log.last_log_id();
        let can_vote = self.voted_for == Some(from)
            || (self.voted_for.is_none() && self.leader_id.is_none())
            || (pre_vote && term > self.term);
        // PLANTED BUG (double-vote): a vote already given in this term does not stop another.
        #[cfg(feature = "planted-bugs")]
        let can_vote = can_vote || (crate::planted::planted!(self.config, DoubleVote) && self.leader_id.is_none());
        let granted = can_vote && up_to_date;
        if granted && !pre_vote {
            self.vote_for(from);
            self.reset_election_deadline();
        }
        tracing::debug!(node = self.id, from, term, pre_vote, granted, "answering vote request");
        let reply_term = if granted && pre_vote { term } else { self.term };
        let body = MessageBody::RequestVoteResponse { granted, pre_vote };
        self.out.messages.push(Message { from: self.id, to: from, term: reply_term, body });
    }

    pub(crate) fn handle_vote_response(&mut self, from: NodeId, term: Term, granted: bool, pre_vote: bool) {
        let expected = if pre_vote { Role::PreCandidate } else { Role::Candidate };
        let expected_term = if pre_vote && granted { self.term + 1 } else { self.term };
        if self.role != expected || term != expected_term {
            return;
        }
        self.votes.insert(from, granted);
        match self.tally() {
            VoteResult::Won if pre_vote => self.start_election(false),
            VoteResult::Won => self.become_leader(),
            VoteResult::Lost => self.become_follower(self.term, None),
            VoteResult::Pending => {}
        }
    }

    fn become_leader(&mut self) {
        tracing::info!(node = self.id, term = self.term, "became leader");
        self.role = Role::Leader;
        self.votes.clear();
        self.set_leader(Some(self.id));
        self.leader = Some(LeaderState {
            progress: Default::default(),
            heartbeat_due_ms: self.now_ms,
            check_quorum_due_ms: self.now_ms + self.config.election_timeout_ms_min,
            uncommitted_bytes: 0,
            reads: LeaderReads::default(),
            transfer: None,
            commit_broadcast: 0,
        });
        self.sync_progress_with_config();
        self.append_as_leader(EntryPayload::Noop);
    }

    /// Adds progress for new members and drops it for removed ones.
    pub(crate) fn sync_progress_with_config(&mut self) {
        let members = self.configs.effective().members();
        let last_index = self.log.last_index();
        let id = self.id;
        let Some(leader) = self.leader.as_mut() else { return };
        leader.progress.retain(|peer, _| members.contains(peer));
        for peer in members.into_iter().filter(|peer| *peer != id) {
            leader.progress.entry(peer).or_insert_with(|| Progress::new(last_index));
        }
    }

    /// `TimeoutNow` from the leader: campaign at once, skipping pre-vote (thesis §3.10).
    pub(crate) fn handle_timeout_now(&mut self, from: NodeId) {
        if self.leader_id != Some(from) || !self.can_campaign() {
            return;
        }
        tracing::info!(node = self.id, term = self.term, "leadership transfer: campaigning now");
        self.start_election(true);
    }
}
