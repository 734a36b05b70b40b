//! Leadership transfer (thesis §3.10): catch the target up, then send it `TimeoutNow` so that it
//! campaigns at once. Used for graceful shutdown, for a removed leader's hand-over, and to move
//! leadership to a preferred leader.
//!
//! While a transfer runs the leader refuses proposals (the client is told to retry at the hinted
//! leader) and gives up its lease, because the target's election skips leader stickiness. A
//! transfer that has not completed within an election timeout is abandoned.

use crate::error::Error;
use crate::message::MessageBody;
use crate::node::RaftNode;
use crate::types::{NodeId, Role};

/// A leadership transfer in progress.
#[derive(Clone, Debug)]
pub(crate) struct Transfer {
    /// The voter that should become leader.
    pub target: NodeId,
    /// Leader clock reading after which the transfer is abandoned.
    pub deadline_ms: u64,
    /// `TimeoutNow` was sent.
    pub timeout_now_sent: bool,
    /// This leader was removed from the voters: step down when the transfer ends either way.
    pub step_down_after: bool,
}

impl RaftNode {
    /// Input: hand leadership to `target`, a voter. Progress is reported through role changes in
    /// `Ready::soft_state`; the transfer is abandoned after an election timeout.
    pub fn transfer_leadership(&mut self, target: NodeId) -> Result<(), Error> {
        if self.role != Role::Leader {
            return Err(Error::NotLeader(self.leader_hint()));
        }
        if target == self.id || !self.configs.effective().is_voter(target) {
            return Err(Error::InvalidTransferTarget(target));
        }
        if let Some(transfer) = self.leader.as_ref().and_then(|l| l.transfer.as_ref()) {
            if transfer.target == target {
                return Ok(());
            }
            return Err(Error::TransferInProgress(self.leader_hint()));
        }
        self.start_transfer(target, false);
        Ok(())
    }

    pub(crate) fn start_transfer(&mut self, target: NodeId, step_down_after: bool) {
        tracing::info!(node = self.id, target, term = self.term, "transferring leadership");
        let deadline_ms = self.now_ms + self.config.election_timeout_ms_min;
        let leader = self.leader.as_mut().expect("only a leader transfers");
        leader.reads.revoke_lease();
        leader.transfer = Some(Transfer { target, deadline_ms, timeout_now_sent: false, step_down_after });
        self.maybe_send_timeout_now(target);
        self.send_appends(target);
    }

    /// Sends `TimeoutNow` once the transfer target holds the whole log.
    pub(crate) fn maybe_send_timeout_now(&mut self, peer: NodeId) {
        let last_index = self.log.last_index();
        let Some(leader) = self.leader.as_mut() else { return };
        let Some(transfer) = leader.transfer.as_mut().filter(|t| t.target == peer && !t.timeout_now_sent) else {
            return;
        };
        if leader.progress.get(&peer).is_some_and(|p| p.match_index >= last_index) {
            transfer.timeout_now_sent = true;
            leader.reads.forbid_lease();
            self.send(peer, MessageBody::TimeoutNow);
        }
    }

    /// Abandons a transfer past its deadline (a removed leader then steps down regardless).
    pub(crate) fn tick_transfer(&mut self) {
        let now = self.now_ms;
        let Some(leader) = self.leader.as_mut() else { return };
        let Some(transfer) = leader.transfer.as_ref().filter(|t| now >= t.deadline_ms) else { return };
        let step_down = transfer.step_down_after;
        tracing::warn!(node = self.id, target = transfer.target, "leadership transfer timed out");
        leader.transfer = None;
        if step_down {
            self.become_follower(self.term, None);
        }
    }

    /// Hands leadership to the configured preferred leader when it is a live, caught-up voter.
    pub(crate) fn check_preferred_leader(&mut self) {
        let Some(preferred) = self.config.preferred_leader.filter(|p| *p != self.id) else { return };
        if !self.configs.effective().voters.contains(&preferred) || self.configs.effective().is_joint() {
            return;
        }
        let last_index = self.log.last_index();
        let since = self.now_ms.saturating_sub(self.config.election_timeout_ms_min);
        let Some(leader) = self.leader.as_ref() else { return };
        let ready = leader.transfer.is_none()
            && leader.progress.get(&preferred).is_some_and(|p| {
                p.match_index >= last_index && p.last_contact_ms.is_some_and(|contact| contact >= since)
            });
        if ready {
            self.start_transfer(preferred, false);
        }
    }

    /// Sets or clears the preferred leader at run time.
    pub fn set_preferred_leader(&mut self, preferred: Option<NodeId>) {
        self.config.preferred_leader = preferred;
    }
}
