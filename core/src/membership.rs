//! Cluster membership (seed 001 `MembershipChange`): who votes, who learns, and how a requested
//! change becomes the next configuration.
//!
//! Data flow: a client asks the leader for a [`MembershipChange`]; [`Membership::apply_change`]
//! validates it against the current configuration and yields the target; the leader appends the
//! target directly when at most one voter changes, or a joint configuration (thesis §4.3) when
//! more change, and leaves the joint configuration once it commits. Configurations take effect
//! when appended (thesis §4.1); see `reconfigure.rs` for the leader side.

use std::collections::{BTreeMap, BTreeSet};

use crate::types::NodeId;

/// What kind of learner a non-voting member is (seed 001 `NodeStatus`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LearnerKind {
    /// May later be promoted to voter once caught up.
    Promotable,
    /// Never becomes a voter (for example an analytics replica).
    ReadOnly,
}

/// A complete cluster configuration.
///
/// Outside of a joint configuration `voters_outgoing` is empty. During a joint configuration
/// decisions need a majority of `voters` **and** a majority of `voters_outgoing`, so that no two
/// disjoint majorities can exist while the cluster moves from the old voter set to the new one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Membership {
    /// Voters of the (incoming) configuration.
    pub voters: BTreeSet<NodeId>,
    /// Voters of the outgoing configuration while joint; empty otherwise.
    pub voters_outgoing: BTreeSet<NodeId>,
    /// Non-voting members and their kind.
    pub learners: BTreeMap<NodeId, LearnerKind>,
    /// Network address of each member, as given when it was added (may be empty in tests).
    pub addresses: BTreeMap<NodeId, String>,
}

/// A requested change of membership (seed 001 `MembershipChange`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MembershipChange {
    /// Add a node as a learner. Every node joins as a learner first; voters come from promotion.
    AddLearner {
        /// The new node.
        node_id: NodeId,
        /// Where peers reach it.
        address: String,
        /// Whether it may be promoted later.
        kind: LearnerKind,
    },
    /// Promote one promotable learner to voter.
    PromoteLearner {
        /// The learner to promote.
        node_id: NodeId,
    },
    /// Remove one member, voter or learner.
    RemoveNode {
        /// The member to remove.
        node_id: NodeId,
    },
    /// Promote several promotable learners at once (joint consensus when more than one).
    BatchPromote {
        /// The learners to promote.
        node_ids: Vec<NodeId>,
    },
    /// Remove several members at once (joint consensus when more than one voter).
    BatchRemove {
        /// The members to remove.
        node_ids: Vec<NodeId>,
    },
    /// Change the network address of one member (voter or learner); its voting right stays.
    /// Refused if another member already has that address.
    UpdateAddress {
        /// The member.
        node_id: NodeId,
        /// Where peers reach it from now on.
        address: String,
    },
}

/// Why a membership change was refused. Each message says what to do instead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MembershipError {
    /// The node id is 0 or already a member.
    AlreadyMember(NodeId),
    /// Node id 0 is reserved for "none".
    InvalidNodeId,
    /// The node is not a member of the current configuration.
    UnknownMember(NodeId),
    /// The node is a voter already, or a read-only learner that may never vote.
    NotPromotable(NodeId),
    /// The change would leave the cluster without voters.
    NoVotersLeft,
    /// The batch is empty or names a node twice.
    InvalidBatch,
    /// Another member already has this address.
    AddressInUse(NodeId),
}

impl std::fmt::Display for MembershipError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::AlreadyMember(id) => write!(f, "node {id} is already a member; remove it first or pick a new id"),
            Self::InvalidNodeId => write!(f, "node id 0 is reserved; use an id of 1 or more"),
            Self::UnknownMember(id) => write!(f, "node {id} is not a member of the cluster; check the member list"),
            Self::NotPromotable(id) => {
                write!(f, "node {id} cannot be promoted: it is a voter already or a read-only learner")
            }
            Self::NoVotersLeft => write!(f, "the change would leave no voter; add and promote a replacement first"),
            Self::InvalidBatch => write!(f, "the batch is empty or names a node twice; list each node once"),
            Self::AddressInUse(id) => write!(f, "node {id} already has this address; give each member its own"),
        }
    }
}

impl std::error::Error for MembershipError {}

impl Membership {
    /// A configuration of voters only, with empty addresses (tests and bootstrapping).
    pub fn with_voters(voters: impl IntoIterator<Item = NodeId>) -> Self {
        let voters: BTreeSet<NodeId> = voters.into_iter().collect();
        let addresses = voters.iter().map(|id| (*id, String::new())).collect();
        Self { voters, addresses, ..Self::default() }
    }

    /// True while the configuration is joint (old and new voter sets both decide).
    pub fn is_joint(&self) -> bool {
        !self.voters_outgoing.is_empty()
    }

    /// True when `id` votes in either half of the configuration.
    pub fn is_voter(&self, id: NodeId) -> bool {
        self.voters.contains(&id) || self.voters_outgoing.contains(&id)
    }

    /// True when `id` is a voter or a learner.
    pub fn contains(&self, id: NodeId) -> bool {
        self.is_voter(id) || self.learners.contains_key(&id)
    }

    /// Every member, voters of both halves and learners, in id order.
    pub fn members(&self) -> BTreeSet<NodeId> {
        let mut all: BTreeSet<NodeId> = self.voters.union(&self.voters_outgoing).copied().collect();
        all.extend(self.learners.keys().copied());
        all
    }

    /// Address of a member, empty when unknown.
    pub fn address_of(&self, id: NodeId) -> String {
        self.addresses.get(&id).cloned().unwrap_or_default()
    }

    /// Approximate encoded size, charged against byte limits.
    pub fn size_bytes(&self) -> u64 {
        let ids = (self.voters.len() + self.voters_outgoing.len() + self.learners.len()) as u64 * 8;
        let addresses: u64 = self.addresses.values().map(|a| a.len() as u64 + 8).sum();
        ids + addresses
    }

    /// The configuration after leaving a joint configuration: the incoming voters alone.
    pub fn leave_joint(&self) -> Self {
        let mut next = self.clone();
        let removed: Vec<NodeId> = self
            .voters_outgoing
            .iter()
            .filter(|id| !self.voters.contains(id) && !self.learners.contains_key(id))
            .copied()
            .collect();
        for id in removed {
            next.addresses.remove(&id);
        }
        next.voters_outgoing.clear();
        next
    }

    /// Number of nodes whose voting right differs between `self` and `other`.
    pub fn voters_changed(&self, other: &Self) -> usize {
        self.voters.symmetric_difference(&other.voters).count()
    }

    /// Validates `change` against this (non-joint) configuration and returns the target.
    pub fn apply_change(&self, change: &MembershipChange) -> Result<Self, MembershipError> {
        let mut next = self.clone();
        match change {
            MembershipChange::AddLearner { node_id, address, kind } => {
                if *node_id == 0 {
                    return Err(MembershipError::InvalidNodeId);
                }
                if self.contains(*node_id) {
                    return Err(MembershipError::AlreadyMember(*node_id));
                }
                next.learners.insert(*node_id, *kind);
                next.addresses.insert(*node_id, address.clone());
            }
            MembershipChange::PromoteLearner { node_id } => next.promote(*node_id)?,
            MembershipChange::RemoveNode { node_id } => next.remove(*node_id)?,
            MembershipChange::BatchPromote { node_ids } => {
                check_batch(node_ids)?;
                for id in node_ids {
                    next.promote(*id)?;
                }
            }
            MembershipChange::BatchRemove { node_ids } => {
                check_batch(node_ids)?;
                for id in node_ids {
                    next.remove(*id)?;
                }
            }
            MembershipChange::UpdateAddress { node_id, address } => next.update_address(*node_id, address)?,
        }
        if next.voters.is_empty() {
            return Err(MembershipError::NoVotersLeft);
        }
        Ok(next)
    }

    fn promote(&mut self, id: NodeId) -> Result<(), MembershipError> {
        match self.learners.get(&id) {
            None if self.voters.contains(&id) => Err(MembershipError::NotPromotable(id)),
            None => Err(MembershipError::UnknownMember(id)),
            Some(LearnerKind::ReadOnly) => Err(MembershipError::NotPromotable(id)),
            Some(LearnerKind::Promotable) => {
                self.learners.remove(&id);
                self.voters.insert(id);
                Ok(())
            }
        }
    }

    fn update_address(&mut self, id: NodeId, address: &str) -> Result<(), MembershipError> {
        if !self.contains(id) {
            return Err(MembershipError::UnknownMember(id));
        }
        let holder =
            self.addresses.iter().find(|(other, held)| **other != id && !address.is_empty() && *held == address);
        if let Some((other, _)) = holder {
            return Err(MembershipError::AddressInUse(*other));
        }
        self.addresses.insert(id, address.to_string());
        Ok(())
    }

    fn remove(&mut self, id: NodeId) -> Result<(), MembershipError> {
        if !self.contains(id) {
            return Err(MembershipError::UnknownMember(id));
        }
        self.voters.remove(&id);
        self.learners.remove(&id);
        self.addresses.remove(&id);
        Ok(())
    }
}

fn check_batch(node_ids: &[NodeId]) -> Result<(), MembershipError> {
    let unique: BTreeSet<&NodeId> = node_ids.iter().collect();
    if node_ids.is_empty() || unique.len() != node_ids.len() {
        return Err(MembershipError::InvalidBatch);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three() -> Membership {
        Membership::with_voters([1, 2, 3])
    }

    #[test]
    fn add_learner_then_promote_changes_one_voter() {
        let add = MembershipChange::AddLearner { node_id: 4, address: "a4".into(), kind: LearnerKind::Promotable };
        let with_learner = three().apply_change(&add).unwrap();
        assert_eq!(with_learner.learners.get(&4), Some(&LearnerKind::Promotable));
        assert_eq!(with_learner.voters_changed(&three()), 0);
        let promoted = with_learner.apply_change(&MembershipChange::PromoteLearner { node_id: 4 }).unwrap();
        assert!(promoted.voters.contains(&4));
        assert_eq!(promoted.voters_changed(&with_learner), 1);
    }

    #[test]
    fn read_only_learner_is_never_promoted() {
        let add = MembershipChange::AddLearner { node_id: 4, address: String::new(), kind: LearnerKind::ReadOnly };
        let config = three().apply_change(&add).unwrap();
        let err = config.apply_change(&MembershipChange::PromoteLearner { node_id: 4 }).unwrap_err();
        assert_eq!(err, MembershipError::NotPromotable(4));
    }

    #[test]
    fn removing_every_voter_is_refused() {
        let change = MembershipChange::BatchRemove { node_ids: vec![1, 2, 3] };
        assert_eq!(three().apply_change(&change).unwrap_err(), MembershipError::NoVotersLeft);
    }

    #[test]
    fn batches_must_name_each_node_once() {
        let change = MembershipChange::BatchRemove { node_ids: vec![1, 1] };
        assert_eq!(three().apply_change(&change).unwrap_err(), MembershipError::InvalidBatch);
        let empty = MembershipChange::BatchPromote { node_ids: vec![] };
        assert_eq!(three().apply_change(&empty).unwrap_err(), MembershipError::InvalidBatch);
    }

    #[test]
    fn adding_an_existing_member_or_id_zero_is_refused() {
        let add =
            |id| MembershipChange::AddLearner { node_id: id, address: String::new(), kind: LearnerKind::Promotable };
        assert_eq!(three().apply_change(&add(2)).unwrap_err(), MembershipError::AlreadyMember(2));
        assert_eq!(three().apply_change(&add(0)).unwrap_err(), MembershipError::InvalidNodeId);
    }

    #[test]
    fn update_address_changes_one_member_and_refuses_unknown_ids_and_taken_addresses() {
        let mut config = three();
        config.addresses.extend([(1, "a1".to_string()), (2, "a2".into()), (3, "a3".into())]);
        let update = |id, address: &str| MembershipChange::UpdateAddress { node_id: id, address: address.into() };
        let next = config.apply_change(&update(2, "b2")).unwrap();
        assert_eq!((next.address_of(2), next.voters_changed(&config)), ("b2".to_string(), 0));
        assert_eq!(config.apply_change(&update(2, "a2")).unwrap(), config, "its own address again");
        assert_eq!(config.apply_change(&update(9, "b9")).unwrap_err(), MembershipError::UnknownMember(9));
        assert_eq!(config.apply_change(&update(2, "a3")).unwrap_err(), MembershipError::AddressInUse(3));
    }

    #[test]
    fn leave_joint_drops_outgoing_voters_and_their_addresses() {
        let mut joint = Membership::with_voters([4, 5]);
        joint.voters_outgoing = [1, 2, 3].into();
        joint.addresses.extend([(1, "a1".to_string()), (2, "a2".into()), (3, "a3".into())]);
        let next = joint.leave_joint();
        assert!(!next.is_joint());
        assert_eq!(next.members(), [4, 5].into());
        assert!(!next.addresses.contains_key(&1));
    }
}
