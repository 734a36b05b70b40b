//! Membership changes on the log (thesis §4): the history of configuration entries, the leader's
//! handling of a requested change, leaving a joint configuration, and a removed leader's exit.
//!
//! Rules: a configuration takes effect as soon as it is appended (and is rolled back if that
//! entry is truncated); only one change may be uncommitted at a time; a new leader must commit an
//! entry of its term before it accepts a change (the fix for the single-server-change bug,
//! thesis §4.1 and Ongaro's 2015 errata); a change that alters more than one voter goes through a
//! joint configuration, which the leader leaves on its own once the joint entry commits; a leader
//! that is not a voter of the committed configuration hands leadership over and steps down.

use crate::error::Error;
use crate::membership::{Membership, MembershipChange};
use crate::node::RaftNode;
use crate::types::{EntryPayload, Index, LogId, NodeId, Role};

/// Configuration entries of the log, oldest first, starting with the one in force at the
/// compaction point. Never empty.
#[derive(Clone, Debug)]
pub(crate) struct ConfigHistory {
    entries: Vec<(Index, Membership)>,
}

impl ConfigHistory {
    pub fn new(base_index: Index, base: Membership) -> Self {
        Self { entries: vec![(base_index, base)] }
    }

    /// The latest configuration (in force now).
    pub fn effective(&self) -> &Membership {
        &self.entries.last().expect("history is never empty").1
    }

    /// Index of the latest configuration entry.
    pub fn last_index(&self) -> Index {
        self.entries.last().expect("history is never empty").0
    }

    pub fn push(&mut self, index: Index, membership: Membership) {
        assert!(index > self.last_index(), "configuration entries are recorded in log order");
        self.entries.push((index, membership));
    }

    /// Drops configurations from truncated entries. Returns whether any was dropped.
    pub fn truncate_from(&mut self, index: Index) -> bool {
        let before = self.entries.len();
        let base = self.entries[0].0;
        self.entries.retain(|(i, _)| *i < index || *i == base);
        self.entries.len() != before
    }

    /// The configuration in force at `index`.
    pub fn as_of(&self, index: Index) -> &Membership {
        self.entries.iter().rev().find(|(i, _)| *i <= index).map_or(&self.entries[0].1, |(_, m)| m)
    }

    /// The latest configuration whose entry is committed, with its index.
    pub fn committed(&self, commit: Index) -> (Index, &Membership) {
        let found = self.entries.iter().rev().find(|(i, _)| *i <= commit).unwrap_or(&self.entries[0]);
        (found.0, &found.1)
    }

    /// The log was compacted (or replaced by a snapshot) up to `index`, where `membership` is in
    /// force.
    pub fn rebase(&mut self, index: Index, membership: Membership) {
        self.entries.retain(|(i, _)| *i > index);
        self.entries.insert(0, (index, membership));
    }
}

impl RaftNode {
    /// Input: a membership change (seed 001). Returns the log id of the configuration entry; the
    /// change is in force once that entry is applied (a joint change completes on its own).
    pub fn change_membership(&mut self, change: MembershipChange) -> Result<LogId, Error> {
        self.check_can_propose()?;
        let commit = self.log.committed();
        if self.configs.last_index() > commit || self.configs.effective().is_joint() {
            return Err(Error::MembershipChangeInProgress);
        }
        if self.log.term_at(commit) != Some(self.term) {
            return Err(Error::LeaderNotReady);
        }
        let current = self.configs.effective().clone();
        let target = current.apply_change(&change)?;
        self.check_promotion_lag(&current, &target)?;
        let entry = if current.voters_changed(&target) > 1 {
            Membership { voters_outgoing: current.voters.clone(), ..target }
        } else {
            target
        };
        tracing::info!(node = self.id, ?change, joint = entry.is_joint(), "appending membership change");
        Ok(self.append_as_leader(EntryPayload::Membership(Box::new(entry))))
    }

    fn check_promotion_lag(&self, current: &Membership, target: &Membership) -> Result<(), Error> {
        let last_index = self.log.last_index();
        let leader = self.leader.as_ref().expect("checked by check_can_propose");
        for id in target.voters.difference(&current.voters) {
            let matched = leader.progress.get(id).map_or(0, |p| p.match_index);
            let lag = last_index.saturating_sub(matched);
            if lag > self.config.promote_lag_entries_max {
                return Err(Error::LearnerLagging { node_id: *id, lag });
            }
        }
        Ok(())
    }

    /// Leader: the commit index advanced; leave a committed joint configuration, or hand over
    /// leadership if this node is no longer a voter of the committed configuration.
    pub(crate) fn after_membership_commit(&mut self) {
        if self.role != Role::Leader || self.configs.last_index() > self.log.committed() {
            return;
        }
        let effective = self.configs.effective().clone();
        if effective.is_joint() {
            tracing::info!(node = self.id, "joint configuration committed: leaving it");
            self.append_as_leader(EntryPayload::Membership(Box::new(effective.leave_joint())));
            return;
        }
        if effective.is_voter(self.id) || self.leader.as_ref().is_some_and(|l| l.transfer.is_some()) {
            return;
        }
        match self.most_caught_up_voter(&effective) {
            Some(target) => self.start_transfer(target, true),
            None => self.become_follower(self.term, None),
        }
    }

    fn most_caught_up_voter(&self, membership: &Membership) -> Option<NodeId> {
        let leader = self.leader.as_ref()?;
        membership
            .voters
            .iter()
            .filter_map(|id| leader.progress.get(id).map(|p| (p.match_index, *id)))
            .max_by_key(|(matched, id)| (*matched, std::cmp::Reverse(*id)))
            .map(|(_, id)| id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_rolls_back_truncated_configurations() {
        let mut history = ConfigHistory::new(0, Membership::with_voters([1, 2, 3]));
        history.push(5, Membership::with_voters([1, 2, 3, 4]));
        assert_eq!(history.effective().voters.len(), 4);
        assert!(history.truncate_from(5));
        assert_eq!(history.effective().voters.len(), 3);
        assert!(!history.truncate_from(1), "the base configuration is never truncated");
    }

    #[test]
    fn committed_and_as_of_pick_the_latest_entry_at_or_before() {
        let mut history = ConfigHistory::new(0, Membership::with_voters([1]));
        history.push(3, Membership::with_voters([1, 2]));
        history.push(7, Membership::with_voters([1, 2, 3]));
        assert_eq!(history.committed(6).0, 3);
        assert_eq!(history.as_of(2).voters.len(), 1);
        history.rebase(4, Membership::with_voters([1, 2]));
        assert_eq!(history.as_of(4).voters.len(), 2);
        assert_eq!(history.effective().voters.len(), 3);
    }
}
