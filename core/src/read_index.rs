//! Linearizable reads without writing to the log: ReadIndex (thesis §6.4) and leases
//! (thesis §6.4.1), both batched on heartbeat rounds.
//!
//! Data flow on the leader: a read records the commit index as its read index and the next
//! heartbeat round; every read registered between two `ready` calls shares one round; once a
//! quorum has answered that round, leadership was confirmed after the read arrived, so the read
//! is released as soon as the applied index reaches its read index. A new leader holds reads until
//! its no-op commits (before that its commit index may be stale). Followers and learners forward
//! reads to the leader in batches and wait for their own applied index to reach the answer.
//!
//! Leases: the quorum's answer to round `r` proves that a quorum heard from this leader no earlier
//! than when round `r` was **sent**; those voters refuse to elect anyone for an election timeout
//! after hearing it (leader stickiness), so the leader may serve reads locally until
//! `sent + Config::lease_duration_ms()`, which is shortened for clock drift and tick granularity.
//! Leases stop at the start of a leadership transfer (the target skips stickiness).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::error::Error;
use crate::message::{MessageBody, ReadId, ReadIndexAnswer};
use crate::node::RaftNode;
use crate::quorum;
use crate::ready::ReadOutcome;
use crate::types::{Index, NodeId, Role};

/// How a read must be confirmed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadPolicy {
    /// Confirm leadership with a heartbeat round (ReadIndex). Served on any node: followers
    /// forward to the leader.
    Linearizable,
    /// Serve from the leader's lease when one is held (and lease reads are configured); fall back
    /// to ReadIndex otherwise. Followers forward as linearizable.
    Lease,
}

/// Where a read came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReadOrigin {
    Local(ReadId),
    Remote { from: NodeId, id: ReadId },
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct PendingRead {
    origin: ReadOrigin,
    read_index: Index,
    round: u64,
}

/// Heartbeat rounds remembered for lease computation.
const ROUNDS_REMEMBERED_MAX: usize = 256;

/// Read state that exists only while leading.
#[derive(Debug, Default)]
pub(crate) struct LeaderReads {
    /// Last heartbeat round sent.
    round: u64,
    /// A read waits for the next round.
    pub round_needed: bool,
    /// `(round, sent_ms)` of recent rounds, oldest first.
    rounds_sent: VecDeque<(u64, u64)>,
    pending: VecDeque<PendingRead>,
    waiting_noop: Vec<(ReadOrigin, ReadPolicy)>,
    /// The lease lasts until this leader clock reading.
    lease_expiry_ms: u64,
    /// No lease for the rest of this term: `TimeoutNow` was sent, and the target's election
    /// (which voters grant despite stickiness) may still happen however late it arrives.
    lease_forbidden: bool,
}

impl LeaderReads {
    fn len(&self) -> usize {
        self.pending.len() + self.waiting_noop.len()
    }

    /// Ends the lease at once (leadership transfer).
    pub fn revoke_lease(&mut self) {
        self.lease_expiry_ms = 0;
    }

    /// Ends the lease and never takes a new one while this leadership lasts (`TimeoutNow` sent).
    pub fn forbid_lease(&mut self) {
        self.revoke_lease();
        self.lease_forbidden = true;
    }
}

/// Read state kept in every role.
#[derive(Debug, Default)]
pub(crate) struct ReadTracker {
    /// Confirmed reads waiting for the applied index: `(read_index, id)`.
    waiting_apply: BTreeSet<(Index, ReadId)>,
    /// Reads forwarded to the leader, with their deadline.
    forwarded: BTreeMap<ReadId, u64>,
    /// Reads to forward at the next `ready`.
    pub to_forward: Vec<ReadId>,
}

impl RaftNode {
    /// Input: a read request with caller-chosen `id`. Its outcome arrives in `Ready::reads`.
    /// Refused at once when too many reads are pending, or when no leader is known.
    pub fn read(&mut self, id: ReadId, policy: ReadPolicy) -> Result<(), Error> {
        if self.pending_read_count() >= self.config.pending_reads_max {
            return Err(Error::TooManyPendingReads { limit: self.config.pending_reads_max });
        }
        if self.role == Role::Leader {
            self.leader_read(ReadOrigin::Local(id), policy);
            return Ok(());
        }
        if self.leader_id.is_none() {
            return Err(Error::NotLeader(self.leader_hint()));
        }
        self.reads.to_forward.push(id);
        Ok(())
    }

    fn pending_read_count(&self) -> usize {
        let leader = self.leader.as_ref().map_or(0, |l| l.reads.len());
        leader + self.reads.waiting_apply.len() + self.reads.forwarded.len() + self.reads.to_forward.len()
    }

    fn leader_read(&mut self, origin: ReadOrigin, policy: ReadPolicy) {
        let commit = self.log.committed();
        let commit_in_term = self.log.term_at(commit) == Some(self.term);
        let now = self.now_ms;
        let leader = self.leader.as_mut().expect("leader state exists while leading");
        if !commit_in_term {
            leader.reads.waiting_noop.push((origin, policy));
            return;
        }
        let lease_held = self.config.lease.is_some() && leader.transfer.is_none() && now < leader.reads.lease_expiry_ms;
        // PLANTED BUG (read-without-quorum): every read is served as if leadership were confirmed.
        #[cfg(feature = "planted-bugs")]
        let (policy, lease_held) = if crate::planted::planted!(self.config, ReadWithoutQuorum) {
            (ReadPolicy::Lease, true)
        } else {
            (policy, lease_held)
        };
        if policy == ReadPolicy::Lease && lease_held {
            self.read_confirmed(vec![(origin, commit)]);
            return;
        }
        let round = leader.reads.round + 1;
        leader.reads.pending.push_back(PendingRead { origin, read_index: commit, round });
        leader.reads.round_needed = true;
    }

    /// Leader: reads held until the no-op committed may now be served.
    pub(crate) fn release_reads_after_noop(&mut self) {
        if self.log.term_at(self.log.committed()) != Some(self.term) {
            return;
        }
        let Some(leader) = self.leader.as_mut() else { return };
        for (origin, policy) in std::mem::take(&mut leader.reads.waiting_noop) {
            self.leader_read(origin, policy);
        }
    }

    /// Leader: sends a heartbeat round now if a read waits for one.
    pub(crate) fn flush_read_round(&mut self) {
        if self.leader.as_ref().is_some_and(|l| l.reads.round_needed) {
            self.broadcast_heartbeat();
        }
    }

    /// Leader: sends one heartbeat round to every peer.
    pub(crate) fn broadcast_heartbeat(&mut self) {
        let commit = self.log.committed();
        let now = self.now_ms;
        let leader = self.leader.as_mut().expect("leader state exists while leading");
        leader.reads.round += 1;
        leader.reads.round_needed = false;
        let round = leader.reads.round;
        leader.reads.rounds_sent.push_back((round, now));
        if leader.reads.rounds_sent.len() > ROUNDS_REMEMBERED_MAX {
            leader.reads.rounds_sent.pop_front();
        }
        let beats: Vec<(NodeId, Index)> =
            leader.progress.iter().map(|(id, p)| (*id, p.match_index.min(commit))).collect();
        for (to, commit) in beats {
            self.send(to, MessageBody::Heartbeat { commit, read_round: round });
        }
        self.update_read_rounds();
    }

    /// Leader: releases reads whose round a quorum acknowledged and extends the lease.
    pub(crate) fn update_read_rounds(&mut self) {
        let lease_duration_ms = self.config.lease_duration_ms();
        let Some(leader) = self.leader.as_mut() else { return };
        let own_round = leader.reads.round;
        let acked = quorum::committed_index(self.configs.effective(), |id| {
            if id == self.id {
                own_round
            } else {
                leader.progress.get(&id).map_or(0, |p| p.acked_round)
            }
        });
        let acked = acked.min(own_round);
        while leader.reads.rounds_sent.len() > 1 && leader.reads.rounds_sent[1].0 <= acked {
            leader.reads.rounds_sent.pop_front();
        }
        if let Some((round, sent_ms)) = leader.reads.rounds_sent.front().copied() {
            if round <= acked && lease_duration_ms > 0 && leader.transfer.is_none() && !leader.reads.lease_forbidden {
                leader.reads.lease_expiry_ms = leader.reads.lease_expiry_ms.max(sent_ms + lease_duration_ms);
            }
        }
        let mut confirmed = Vec::new();
        while leader.reads.pending.front().is_some_and(|read| read.round <= acked) {
            let read = leader.reads.pending.pop_front().expect("front checked");
            confirmed.push((read.origin, read.read_index));
        }
        if !confirmed.is_empty() {
            self.read_confirmed(confirmed);
        }
    }

    /// Leadership is confirmed for these reads: local ones wait for apply, remote ones are answered.
    fn read_confirmed(&mut self, confirmed: Vec<(ReadOrigin, Index)>) {
        let mut remote: BTreeMap<(NodeId, Index), Vec<ReadId>> = BTreeMap::new();
        for (origin, read_index) in confirmed {
            match origin {
                ReadOrigin::Local(id) => {
                    self.reads.waiting_apply.insert((read_index, id));
                }
                ReadOrigin::Remote { from, id } => remote.entry((from, read_index)).or_default().push(id),
            }
        }
        for ((to, read_index), read_ids) in remote {
            self.send(to, MessageBody::ReadIndexResponse { read_ids, answer: ReadIndexAnswer::Confirmed(read_index) });
        }
        self.release_applied_reads();
    }

    /// Releases confirmed reads whose read index has been applied.
    pub(crate) fn release_applied_reads(&mut self) {
        let applied = self.log.applied();
        while let Some(&(read_index, id)) = self.reads.waiting_apply.first() {
            if read_index > applied {
                break;
            }
            self.reads.waiting_apply.pop_first();
            self.out.reads.push(ReadOutcome { id, result: Ok(read_index) });
        }
    }

    /// The leader stepped down: its unconfirmed reads fail with a hint.
    pub(crate) fn fail_leader_reads(&mut self, reads: LeaderReads) {
        let origins = reads.pending.iter().map(|r| r.origin).chain(reads.waiting_noop.iter().map(|(o, _)| *o));
        let origins: Vec<ReadOrigin> = origins.collect();
        for origin in origins {
            match origin {
                ReadOrigin::Local(id) => {
                    let result = Err(Error::LeadershipLost(self.leader_hint()));
                    self.out.reads.push(ReadOutcome { id, result });
                }
                ReadOrigin::Remote { from, id } => {
                    self.send(
                        from,
                        MessageBody::ReadIndexResponse { read_ids: vec![id], answer: ReadIndexAnswer::NotLeader },
                    );
                }
            }
        }
    }

    /// Leader: reads forwarded by a follower or learner.
    pub(crate) fn handle_read_index_request(&mut self, from: NodeId, read_ids: Vec<ReadId>) {
        if self.role != Role::Leader {
            self.send(from, MessageBody::ReadIndexResponse { read_ids, answer: ReadIndexAnswer::NotLeader });
            return;
        }
        let mut refused = Vec::new();
        for id in read_ids {
            if self.pending_read_count() >= self.config.pending_reads_max {
                refused.push(id);
            } else {
                self.leader_read(ReadOrigin::Remote { from, id }, ReadPolicy::Linearizable);
            }
        }
        if !refused.is_empty() {
            self.send(from, MessageBody::ReadIndexResponse { read_ids: refused, answer: ReadIndexAnswer::Overloaded });
        }
    }

    /// Follower: the leader's answer to forwarded reads.
    pub(crate) fn handle_read_index_response(&mut self, _from: NodeId, read_ids: Vec<ReadId>, answer: ReadIndexAnswer) {
        for id in read_ids {
            if self.reads.forwarded.remove(&id).is_none() {
                continue;
            }
            let error = match answer {
                ReadIndexAnswer::Confirmed(index) => {
                    self.reads.waiting_apply.insert((index, id));
                    continue;
                }
                ReadIndexAnswer::NotLeader => Error::NotLeader(self.leader_hint()),
                ReadIndexAnswer::Overloaded => Error::TooManyPendingReads { limit: self.config.pending_reads_max },
            };
            self.out.reads.push(ReadOutcome { id, result: Err(error) });
        }
        self.release_applied_reads();
    }

    /// Follower: sends the batch of reads gathered since the last `ready`.
    pub(crate) fn flush_forwarded_reads(&mut self) {
        if self.reads.to_forward.is_empty() {
            return;
        }
        let read_ids = std::mem::take(&mut self.reads.to_forward);
        match self.leader_id.filter(|id| *id != self.id) {
            Some(leader) => {
                let deadline = self.now_ms + self.config.election_timeout_ms_min;
                self.reads.forwarded.extend(read_ids.iter().map(|id| (*id, deadline)));
                self.send(leader, MessageBody::ReadIndexRequest { read_ids });
            }
            None => {
                for id in read_ids {
                    let result = Err(Error::NotLeader(self.leader_hint()));
                    self.out.reads.push(ReadOutcome { id, result });
                }
            }
        }
    }

    /// The leader changed: reads forwarded to the old one fail (the client retries).
    pub(crate) fn fail_forwarded_reads(&mut self) {
        for id in std::mem::take(&mut self.reads.forwarded).into_keys() {
            let result = Err(Error::LeadershipLost(self.leader_hint()));
            self.out.reads.push(ReadOutcome { id, result });
        }
    }

    /// Follower tick: forwarded reads not answered within an election timeout fail.
    pub(crate) fn tick_reads(&mut self) {
        let now = self.now_ms;
        let expired: Vec<ReadId> =
            self.reads.forwarded.iter().filter(|(_, deadline)| **deadline <= now).map(|(id, _)| *id).collect();
        for id in expired {
            self.reads.forwarded.remove(&id);
            self.out.reads.push(ReadOutcome { id, result: Err(Error::Timeout) });
        }
    }
}
