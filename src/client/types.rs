//! The values the client returns, converted from the protocol messages.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::error::LeaderHint;
use crate::proto::{admin, common};

/// One key and its value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: Bytes,
    /// Its value.
    pub value: Bytes,
}

/// The answer to a prefix scan.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScanResult {
    /// Every key under the prefix, with its value.
    pub entries: Vec<KeyValue>,
    /// The store's applied revision at the moment of the scan. Watch events at or below it are
    /// already reflected in `entries`.
    pub revision: u64,
}

/// The cluster configuration, as the answering node knows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Membership {
    /// Voting members.
    pub voters: Vec<u32>,
    /// Non-voting learners (read-only ones included).
    pub learners: Vec<u32>,
    /// Learners that may never be promoted.
    pub read_only_learners: Vec<u32>,
    /// Every member's address.
    pub addresses: BTreeMap<u32, String>,
}

impl From<admin::MembershipResponse> for Membership {
    fn from(response: admin::MembershipResponse) -> Self {
        let mut voters = response.voters;
        let mut learners = response.learners;
        let mut read_only_learners = response.read_only_learners;
        voters.sort_unstable();
        learners.sort_unstable();
        read_only_learners.sort_unstable();
        Self { voters, learners, read_only_learners, addresses: response.addresses.into_iter().collect() }
    }
}

/// A node's Raft role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Follows a leader (or waits for one).
    Follower,
    /// Running an election.
    Candidate,
    /// The leader.
    Leader,
    /// A non-voting member.
    Learner,
    /// Not specified, or a role this client does not know.
    Unknown,
}

impl Role {
    /// A lowercase name: `follower`, `candidate`, `leader`, `learner` or `unknown`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Follower => "follower",
            Self::Candidate => "candidate",
            Self::Leader => "leader",
            Self::Learner => "learner",
            Self::Unknown => "unknown",
        }
    }

    fn from_proto(role: i32) -> Self {
        match common::NodeRole::try_from(role) {
            Ok(common::NodeRole::Follower) => Self::Follower,
            Ok(common::NodeRole::Candidate) => Self::Candidate,
            Ok(common::NodeRole::Leader) => Self::Leader,
            Ok(common::NodeRole::Learner) => Self::Learner,
            Ok(common::NodeRole::Unspecified) | Err(_) => Self::Unknown,
        }
    }
}

/// One peer's replication progress, as the leader sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerStatus {
    /// The peer's id.
    pub id: u32,
    /// Its address.
    pub address: String,
    /// Highest log index known durable and matching on the peer.
    pub match_index: u64,
    /// Milliseconds since the leader last heard from it; `None` if not in this term.
    pub last_contact_ms_ago: Option<u64>,
}

/// One node's view of itself and of the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeStatus {
    /// The endpoint that answered.
    pub endpoint: String,
    /// The node's id.
    pub id: u32,
    /// Its role.
    pub role: Role,
    /// Its current term.
    pub term: u64,
    /// The leader it knows, if any.
    pub leader: Option<LeaderHint>,
    /// Its commit index.
    pub commit_index: u64,
    /// Its applied index.
    pub applied_index: u64,
    /// Its last log index.
    pub last_log_index: u64,
    /// The revision of its key-value store.
    pub revision: u64,
    /// The voters of its latest configuration.
    pub voters: Vec<u32>,
    /// The learners of its latest configuration.
    pub learners: Vec<u32>,
    /// Leader only: per-peer replication progress.
    pub peers: Vec<PeerStatus>,
    /// Leader only: a quorum was heard from within the last election timeout.
    pub has_quorum: bool,
}

impl NodeStatus {
    pub(crate) fn from_proto(endpoint: String, response: admin::StatusResponse) -> Self {
        Self {
            endpoint,
            id: response.id,
            role: Role::from_proto(response.role),
            term: response.term,
            leader: LeaderHint::from_proto(response.leader.as_ref()),
            commit_index: response.commit_index,
            applied_index: response.applied_index,
            last_log_index: response.last_log_index,
            revision: response.revision,
            voters: response.voters,
            learners: response.learners,
            peers: response
                .peers
                .into_iter()
                .map(|peer| PeerStatus {
                    id: peer.id,
                    address: peer.address,
                    match_index: peer.match_index,
                    last_contact_ms_ago: peer.last_contact_ms_ago,
                })
                .collect(),
            has_quorum: response.has_quorum,
        }
    }
}

/// What happened to a watched key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatchEventKind {
    /// The key was inserted or updated.
    Put,
    /// The key was deleted (explicitly or by expiry).
    Delete,
    /// No change: the server tells the stream is alive at `revision`.
    Progress,
}

impl WatchEventKind {
    /// `PUT`, `DELETE` or `PROGRESS`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Put => "PUT",
            Self::Delete => "DELETE",
            Self::Progress => "PROGRESS",
        }
    }
}

/// One event of a watch stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchEvent {
    /// What happened.
    pub kind: WatchEventKind,
    /// The key that changed (empty for progress events).
    pub key: Bytes,
    /// The new value (empty for deletes).
    pub value: Bytes,
    /// The value before the change, when the watch asked for it and the key existed.
    pub prev_value: Bytes,
    /// The store revision at which the change was applied.
    pub revision: u64,
}
