//! Quorum arithmetic over a (possibly joint) configuration: the committed index of a set of
//! match indexes, the outcome of a vote, and whether a set of nodes forms a quorum.
//!
//! A joint configuration needs a majority of each half (thesis §4.3); an empty half agrees to
//! everything, so the same functions serve simple and joint configurations.

use std::collections::{BTreeMap, BTreeSet};

use crate::membership::Membership;
use crate::types::{Index, NodeId};

/// Outcome of an election or pre-vote round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VoteResult {
    /// A quorum granted.
    Won,
    /// A quorum can no longer grant.
    Lost,
    /// Neither yet.
    Pending,
}

/// The largest index that a majority of `voters` has reached, given each voter's index.
/// An empty voter set returns `Index::MAX` so that it never holds a joint configuration back.
fn majority_index(voters: &BTreeSet<NodeId>, index_of: &impl Fn(NodeId) -> Index) -> Index {
    if voters.is_empty() {
        return Index::MAX;
    }
    let mut indexes: Vec<Index> = voters.iter().map(|id| index_of(*id)).collect();
    indexes.sort_unstable_by(|a, b| b.cmp(a));
    indexes[voters.len() / 2]
}

/// The largest index that a quorum of `membership` has reached (both halves when joint).
pub fn committed_index(membership: &Membership, index_of: impl Fn(NodeId) -> Index) -> Index {
    let incoming = majority_index(&membership.voters, &index_of);
    let outgoing = majority_index(&membership.voters_outgoing, &index_of);
    incoming.min(outgoing)
}

/// True when the nodes for which `is_member` holds form a quorum of `membership` (a majority of
/// each half when joint).
pub fn is_quorum(membership: &Membership, is_member: impl Fn(NodeId) -> bool) -> bool {
    let index_of = |id| Index::from(is_member(id));
    committed_index(membership, index_of) >= 1
}

fn half_result(voters: &BTreeSet<NodeId>, votes: &BTreeMap<NodeId, bool>) -> VoteResult {
    if voters.is_empty() {
        return VoteResult::Won;
    }
    let granted = voters.iter().filter(|id| votes.get(id) == Some(&true)).count();
    let rejected = voters.iter().filter(|id| votes.get(id) == Some(&false)).count();
    let majority = voters.len() / 2 + 1;
    if granted >= majority {
        VoteResult::Won
    } else if voters.len() - rejected < majority {
        VoteResult::Lost
    } else {
        VoteResult::Pending
    }
}

/// The outcome of a vote given the answers so far (`true` = granted).
pub fn vote_result(membership: &Membership, votes: &BTreeMap<NodeId, bool>) -> VoteResult {
    let incoming = half_result(&membership.voters, votes);
    let outgoing = half_result(&membership.voters_outgoing, votes);
    match (incoming, outgoing) {
        (VoteResult::Won, VoteResult::Won) => VoteResult::Won,
        (VoteResult::Lost, _) | (_, VoteResult::Lost) => VoteResult::Lost,
        _ => VoteResult::Pending,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_index_is_the_median_of_five() {
        let config = Membership::with_voters([1, 2, 3, 4, 5]);
        let matches: BTreeMap<NodeId, Index> = [(1, 9), (2, 3), (3, 7), (4, 1), (5, 5)].into();
        assert_eq!(committed_index(&config, |id| matches[&id]), 5);
    }

    #[test]
    fn joint_configuration_needs_both_majorities() {
        let mut config = Membership::with_voters([4, 5, 6]);
        config.voters_outgoing = [1, 2, 3].into();
        let matches: BTreeMap<NodeId, Index> = [(1, 10), (2, 10), (3, 10), (4, 2), (5, 2), (6, 0)].into();
        assert_eq!(committed_index(&config, |id| matches[&id]), 2);
        let votes: BTreeMap<NodeId, bool> = [(1, true), (2, true), (4, true)].into();
        assert_eq!(vote_result(&config, &votes), VoteResult::Pending);
        let votes: BTreeMap<NodeId, bool> = [(1, true), (2, true), (4, true), (5, true)].into();
        assert_eq!(vote_result(&config, &votes), VoteResult::Won);
        let votes: BTreeMap<NodeId, bool> = [(1, true), (2, true), (4, false), (5, false)].into();
        assert_eq!(vote_result(&config, &votes), VoteResult::Lost);
    }

    #[test]
    fn quorum_of_a_set() {
        let config = Membership::with_voters([1, 2, 3]);
        assert!(is_quorum(&config, |id| id != 3));
        assert!(!is_quorum(&config, |id| id == 1));
    }
}
