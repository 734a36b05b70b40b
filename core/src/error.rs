//! Errors returned to callers of the core. Each carries what a client needs to act: a leader
//! hint to redirect, a limit that was hit, or the reason a request cannot succeed.

use crate::membership::MembershipError;
use crate::types::{LeaderHint, NodeId};

/// Why the core refused or abandoned a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    /// This node is not the leader; retry at the hinted leader.
    NotLeader(LeaderHint),
    /// The leader is handing over leadership; retry at the hinted leader shortly.
    TransferInProgress(LeaderHint),
    /// A new leader has not yet committed an entry of its term; retry in a moment.
    LeaderNotReady,
    /// Too many entries or bytes appended but not committed (backpressure); retry later.
    TooManyUncommitted {
        /// The limit that was reached, for the message.
        limit: String,
    },
    /// Too many reads waiting at this node (or at the leader it forwards to); retry later.
    TooManyPendingReads {
        /// `pending_reads_max`.
        limit: usize,
    },
    /// Leadership was lost before the request could be confirmed; retry at the hinted leader.
    LeadershipLost(LeaderHint),
    /// A forwarded read was not answered within an election timeout; retry.
    Timeout,
    /// Another membership change is not yet committed; retry once it is.
    MembershipChangeInProgress,
    /// The requested membership change is invalid.
    Membership(MembershipError),
    /// The learner is too far behind to be promoted; wait until it catches up.
    LearnerLagging {
        /// The learner.
        node_id: NodeId,
        /// How many entries it is behind.
        lag: u64,
    },
    /// Leadership transfer to this node is impossible (not a voter, or the node itself).
    InvalidTransferTarget(NodeId),
    /// A snapshot was requested at an index that is not applied or is already covered.
    InvalidSnapshotIndex(String),
}

impl Error {
    /// The leader hint carried by the error, if any.
    pub fn leader_hint(&self) -> Option<&LeaderHint> {
        match self {
            Self::NotLeader(hint) | Self::TransferInProgress(hint) | Self::LeadershipLost(hint) => Some(hint),
            _ => None,
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let leader = |hint: &LeaderHint| match hint.leader_id {
            Some(id) => format!("node {id} at '{}' (term {})", hint.address, hint.term),
            None => "unknown; retry after an election".to_string(),
        };
        match self {
            Self::NotLeader(hint) => write!(f, "this node is not the leader; leader is {}", leader(hint)),
            Self::TransferInProgress(hint) => {
                write!(f, "leadership transfer in progress; current leader is {}", leader(hint))
            }
            Self::LeaderNotReady => {
                write!(f, "the new leader has not committed an entry of its term yet; retry in a moment")
            }
            Self::TooManyUncommitted { limit } => {
                write!(f, "too many uncommitted entries ({limit}); slow down and retry")
            }
            Self::TooManyPendingReads { limit } => {
                write!(f, "too many pending reads (pending_reads_max = {limit}); retry later")
            }
            Self::LeadershipLost(hint) => {
                write!(f, "leadership lost before the request was confirmed; leader is {}", leader(hint))
            }
            Self::Timeout => write!(f, "the leader did not answer within an election timeout; retry"),
            Self::MembershipChangeInProgress => {
                write!(f, "another membership change is in progress; retry when it has committed")
            }
            Self::Membership(error) => write!(f, "invalid membership change: {error}"),
            Self::LearnerLagging { node_id, lag } => {
                write!(f, "learner {node_id} is {lag} entries behind; promote it once it has caught up")
            }
            Self::InvalidTransferTarget(id) => {
                write!(f, "cannot transfer leadership to node {id}: it must be another voter")
            }
            Self::InvalidSnapshotIndex(why) => write!(f, "invalid snapshot index: {why}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<MembershipError> for Error {
    fn from(error: MembershipError) -> Self {
        Self::Membership(error)
    }
}
