//! `keel.admin.ClusterAdmin` on a [`NodeHandle`]: membership changes, leadership transfer,
//! membership and status reports. Errors are in the answers' `error` field.
//!
//! * **ChangeMembership** takes a `keel.common.MembershipChange`. Nodes join as learners:
//!   `AddNode` with `NODE_STATUS_PROMOTABLE` or `NODE_STATUS_READ_ONLY` adds a learner at the given
//!   address; `NODE_STATUS_ACTIVE` or `NODE_STATUS_UNSPECIFIED` is `INVALID_ARGUMENT` ("nodes join
//!   as learners; add it with NODE_STATUS_PROMOTABLE, then promote it"). `PromoteLearner` and
//!   `BatchPromote` promote learners to voters (their status must be `NODE_STATUS_ACTIVE` or
//!   unspecified); `RemoveNode` and `BatchRemove` remove members. The answer comes once the
//!   change is applied, with the new configuration. A refused change is classified against the
//!   node's latest configuration: `MEMBER_ALREADY_EXISTS`, `UNKNOWN_MEMBER` (also a promotion of
//!   a node that is not a promotable learner), `INVALID_ARGUMENT` (node id 0, an empty or
//!   repeated batch, no voter left), `UNAVAILABLE` with a retry delay for a learner that has not
//!   caught up yet, `MEMBERSHIP_CHANGE_IN_PROGRESS`, and `NOT_LEADER` with the leader hint.
//! * **GetMembership** reports this node's latest configuration (`learners` lists every
//!   learner; `read_only_learners` the subset that may never be promoted).
//! * **TransferLeadership** asks the leader to hand over to `target` and answers once this node
//!   sees `target` lead, or `TIMEOUT` after two maximum election timeouts. Asking the leader to
//!   transfer to itself succeeds at once.
//! * **Status** reports role, term, leader hint (with address), commit, applied and last log
//!   indexes, store revision, voters and learners, and on the leader the per-peer progress and
//!   whether a quorum was heard from within an election timeout.
//!
//! With etcd authentication on (`access.rs`), ChangeMembership and TransferLeadership need the
//! `root` role and GetMembership a valid token; Status needs nothing, as etcd's.

use std::time::Duration;

use keel::proto::admin::cluster_admin_server::{ClusterAdmin, ClusterAdminServer};
use keel::proto::admin::{
    AdminResponse, MembershipResponse, PeerProgress, StatusRequest, StatusResponse, TransferLeadershipRequest,
};
use keel::proto::common::membership_change::Change;
use keel::proto::common::{MembershipChange as WireChange, NodeRole, NodeStatus as WireNodeStatus};
use keel::proto::error::ErrorCode;
use keel_core::{LearnerKind, Membership, MembershipChange, MembershipError, NodeId, Role};
use tokio::time::Instant;
use tonic::{Request, Response, Status};

use super::access;
use super::error::{wire_error, wire_leader_hint, RetryHints, WireError};
use crate::etcd::access::Caller;
use crate::node::{ClientError, NodeConfig, NodeHandle, NodeStatus};

/// The gRPC server type that serves [`AdminService`].
#[cfg(not(madsim))]
pub type AdminServer = ClusterAdminServer<AdminService>;
/// The gRPC server type that serves [`AdminService`]. The simulated stubs carry an interceptor
/// type parameter.
#[cfg(madsim)]
pub type AdminServer = ClusterAdminServer<AdminService, tonic::codegen::IdentityInterceptor>;

/// How often a transfer's progress is checked.
const TRANSFER_POLL: Duration = Duration::from_millis(10);

/// The cluster administration service of one node. Cheap to clone.
#[derive(Clone)]
pub struct AdminService {
    handle: NodeHandle,
    retry: RetryHints,
    transfer_timeout: Duration,
    message_bytes_max: usize,
}

impl std::fmt::Debug for AdminService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminService").field("node", &self.handle.id()).finish()
    }
}

impl AdminService {
    /// The service of the node behind `handle`, configured as `node`; `service` gives the retry
    /// delays and the message size limit.
    pub fn new(handle: NodeHandle, node: &NodeConfig, service: &super::ServiceConfig) -> Self {
        Self {
            handle,
            retry: RetryHints {
                election_ms: node.raft.election_timeout_ms_min,
                overloaded_ms: service.overloaded_retry_after_ms,
            },
            transfer_timeout: Duration::from_millis(node.raft.election_timeout_ms_max.saturating_mul(2)),
            message_bytes_max: service.message_bytes_max,
        }
    }

    /// The service ready to serve, with message size limits both ways.
    pub fn into_server(self) -> AdminServer {
        let max = self.message_bytes_max;
        ClusterAdminServer::new(self).max_decoding_message_size(max).max_encoding_message_size(max)
    }

    /// Carries out a membership change; errors are in the answer.
    pub async fn change_membership(&self, change: WireChange) -> MembershipResponse {
        let change = match change_of(change) {
            Ok(change) => change,
            Err(error) => return membership_error(error),
        };
        match self.handle.change_membership(change.clone()).await {
            Ok(membership) => membership_response(&membership),
            Err(ClientError::Membership(message)) => membership_error(self.classify_refusal(&change, message).await),
            Err(error) => membership_error(wire_error(&error, self.retry)),
        }
    }

    /// This node's latest configuration.
    pub async fn membership(&self) -> MembershipResponse {
        match self.handle.status().await {
            Ok(status) => membership_response(&status.membership),
            Err(error) => membership_error(wire_error(&error, self.retry)),
        }
    }

    /// Hands leadership to `target` and waits (bounded) until it leads.
    pub async fn transfer_leadership(&self, target: NodeId) -> AdminResponse {
        if target == 0 {
            return admin_error(WireError::new(ErrorCode::InvalidArgument, "target 0 is not a node id"));
        }
        let status = match self.handle.status().await {
            Ok(status) => status,
            Err(error) => return admin_error(wire_error(&error, self.retry)),
        };
        if status.role == Role::Leader && target == status.id {
            return AdminResponse { error: ErrorCode::Success as i32, metadata: None };
        }
        if let Err(error) = self.handle.transfer_leader(target).await {
            let wire = match error {
                ClientError::Membership(message) if !status.membership.contains(target) => {
                    WireError::new(ErrorCode::UnknownMember, message)
                }
                ClientError::Membership(message) => WireError::new(ErrorCode::InvalidArgument, message),
                other => wire_error(&other, self.retry),
            };
            return admin_error(wire);
        }
        let deadline = Instant::now() + self.transfer_timeout;
        loop {
            match self.handle.status().await {
                Ok(status) if status.role != Role::Leader && status.leader.leader_id == Some(target) => {
                    return AdminResponse { error: ErrorCode::Success as i32, metadata: None };
                }
                Ok(status) if Instant::now() >= deadline => {
                    let message = format!(
                        "leadership did not move to node {target} within {} ms; it may still move, check Status",
                        self.transfer_timeout.as_millis()
                    );
                    return admin_error(WireError::new(ErrorCode::Timeout, message).with_leader(&status.leader));
                }
                Ok(_) => tokio::time::sleep(TRANSFER_POLL).await,
                Err(error) => return admin_error(wire_error(&error, self.retry)),
            }
        }
    }

    /// This node's status.
    pub async fn status(&self) -> StatusResponse {
        match self.handle.status().await {
            Ok(status) => status_response(status),
            Err(error) => {
                let wire = wire_error(&error, self.retry);
                StatusResponse {
                    error: wire.code as i32,
                    metadata: Some(wire.metadata),
                    id: self.handle.id(),
                    ..StatusResponse::default()
                }
            }
        }
    }

    /// Gives a refused change its precise code by checking it against the latest configuration.
    async fn classify_refusal(&self, change: &MembershipChange, message: String) -> WireError {
        let Ok(status) = self.handle.status().await else {
            return WireError::new(ErrorCode::InvalidArgument, message);
        };
        match status.membership.apply_change(change) {
            Err(error) => WireError::new(membership_code(&error), message),
            // The change is valid in itself: what the core refused is a learner not caught up.
            Ok(_)
                if matches!(
                    change,
                    MembershipChange::PromoteLearner { .. } | MembershipChange::BatchPromote { .. }
                ) =>
            {
                WireError::new(ErrorCode::Unavailable, message).retry_after(self.retry.election_ms)
            }
            Ok(_) => WireError::new(ErrorCode::InvalidArgument, message),
        }
    }
}

#[tonic::async_trait]
impl ClusterAdmin for AdminService {
    async fn change_membership(&self, request: Request<WireChange>) -> Result<Response<MembershipResponse>, Status> {
        let token = access::token_of(request.metadata());
        if let Err(error) = access::authorize(&self.handle, token.as_deref(), Caller::require_admin).await {
            return Ok(Response::new(membership_error(error)));
        }
        Ok(Response::new(AdminService::change_membership(self, request.into_inner()).await))
    }

    async fn get_membership(&self, request: Request<StatusRequest>) -> Result<Response<MembershipResponse>, Status> {
        let token = access::token_of(request.metadata());
        if let Err(error) = access::authenticate(&self.handle, token.as_deref()).await {
            return Ok(Response::new(membership_error(error)));
        }
        Ok(Response::new(self.membership().await))
    }

    async fn transfer_leadership(
        &self,
        request: Request<TransferLeadershipRequest>,
    ) -> Result<Response<AdminResponse>, Status> {
        let token = access::token_of(request.metadata());
        if let Err(error) = access::authorize(&self.handle, token.as_deref(), Caller::require_admin).await {
            return Ok(Response::new(admin_error(error)));
        }
        Ok(Response::new(AdminService::transfer_leadership(self, request.into_inner().target).await))
    }

    async fn status(&self, _request: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        Ok(Response::new(AdminService::status(self).await))
    }
}

/// The code of a configuration change the core refused.
pub fn membership_code(error: &MembershipError) -> ErrorCode {
    match error {
        MembershipError::AlreadyMember(_) => ErrorCode::MemberAlreadyExists,
        MembershipError::UnknownMember(_) | MembershipError::NotPromotable(_) => ErrorCode::UnknownMember,
        MembershipError::InvalidNodeId
        | MembershipError::NoVotersLeft
        | MembershipError::InvalidBatch
        | MembershipError::AddressInUse(_) => ErrorCode::InvalidArgument,
    }
}

/// The core change of a wire change.
fn change_of(change: WireChange) -> Result<MembershipChange, WireError> {
    let invalid = |message: String| WireError::new(ErrorCode::InvalidArgument, message);
    let Some(change) = change.change else {
        return Err(invalid(
            "the request names no change; set add_node, remove_node, promote, batch_promote or batch_remove".into(),
        ));
    };
    match change {
        Change::AddNode(add) => {
            if add.node_id == 0 {
                return Err(invalid("node id 0 is reserved; use an id of 1 or more".into()));
            }
            if add.address.is_empty() {
                return Err(invalid(format!(
                    "node {} has no address; give the host:port its peers reach it at",
                    add.node_id
                )));
            }
            let kind = match WireNodeStatus::try_from(add.status) {
                Ok(WireNodeStatus::Promotable) => LearnerKind::Promotable,
                Ok(WireNodeStatus::ReadOnly) => LearnerKind::ReadOnly,
                Ok(WireNodeStatus::Active | WireNodeStatus::Unspecified) => {
                    return Err(invalid(
                        "nodes join as learners; add it with NODE_STATUS_PROMOTABLE, then promote it".into(),
                    ))
                }
                Err(_) => return Err(invalid(format!("unknown node status {}", add.status))),
            };
            Ok(MembershipChange::AddLearner { node_id: add.node_id, address: add.address, kind })
        }
        Change::RemoveNode(remove) => Ok(MembershipChange::RemoveNode { node_id: remove.node_id }),
        Change::Promote(promote) => {
            check_promotion_status(promote.status)?;
            Ok(MembershipChange::PromoteLearner { node_id: promote.node_id })
        }
        Change::BatchPromote(batch) => {
            check_promotion_status(batch.new_status)?;
            Ok(MembershipChange::BatchPromote { node_ids: batch.node_ids })
        }
        Change::BatchRemove(batch) => Ok(MembershipChange::BatchRemove { node_ids: batch.node_ids }),
    }
}

/// A promotion makes learners voters: its status must be ACTIVE (or left unspecified).
fn check_promotion_status(status: i32) -> Result<(), WireError> {
    match WireNodeStatus::try_from(status) {
        Ok(WireNodeStatus::Active | WireNodeStatus::Unspecified) => Ok(()),
        _ => Err(WireError::new(
            ErrorCode::InvalidArgument,
            "a promotion makes learners voters: set the status to NODE_STATUS_ACTIVE; \
             to change a learner's kind, remove it and add it again",
        )),
    }
}

fn membership_response(membership: &Membership) -> MembershipResponse {
    MembershipResponse {
        error: ErrorCode::Success as i32,
        metadata: None,
        voters: membership.voters.union(&membership.voters_outgoing).copied().collect(),
        learners: membership.learners.keys().copied().collect(),
        read_only_learners: membership
            .learners
            .iter()
            .filter(|(_, kind)| **kind == LearnerKind::ReadOnly)
            .map(|(id, _)| *id)
            .collect(),
        addresses: membership.addresses.iter().map(|(id, address)| (*id, address.clone())).collect(),
    }
}

fn membership_error(error: WireError) -> MembershipResponse {
    MembershipResponse { error: error.code as i32, metadata: Some(error.metadata), ..MembershipResponse::default() }
}

fn admin_error(error: WireError) -> AdminResponse {
    AdminResponse { error: error.code as i32, metadata: Some(error.metadata) }
}

/// The wire role of a core role (a pre-candidate reports as a candidate).
pub fn role_of(role: Role) -> NodeRole {
    match role {
        Role::Follower => NodeRole::Follower,
        Role::PreCandidate | Role::Candidate => NodeRole::Candidate,
        Role::Leader => NodeRole::Leader,
        Role::Learner => NodeRole::Learner,
    }
}

fn status_response(status: NodeStatus) -> StatusResponse {
    let membership = &status.membership;
    let peers = status
        .peers
        .iter()
        .map(|peer| PeerProgress {
            id: peer.id,
            address: membership.address_of(peer.id),
            match_index: peer.match_index,
            last_contact_ms_ago: peer.last_contact_ms_ago,
        })
        .collect();
    StatusResponse {
        error: ErrorCode::Success as i32,
        metadata: None,
        id: status.id,
        role: role_of(status.role) as i32,
        term: status.term,
        leader: wire_leader_hint(&status.leader),
        commit_index: status.commit_index,
        applied_index: status.applied_index,
        last_log_index: status.last_log_index,
        revision: status.revision,
        voters: membership.voters.union(&membership.voters_outgoing).copied().collect(),
        learners: membership.learners.keys().copied().collect(),
        peers,
        has_quorum: status.has_quorum,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel::proto::common::{AddNode, BatchPromote, PromoteLearner};

    fn add(status: WireNodeStatus) -> WireChange {
        WireChange {
            change: Some(Change::AddNode(AddNode { node_id: 4, address: "h:1".into(), status: status as i32 })),
        }
    }

    #[test]
    fn nodes_join_as_learners_only() {
        assert_eq!(
            change_of(add(WireNodeStatus::Promotable)),
            Ok(MembershipChange::AddLearner { node_id: 4, address: "h:1".into(), kind: LearnerKind::Promotable })
        );
        assert_eq!(
            change_of(add(WireNodeStatus::ReadOnly)),
            Ok(MembershipChange::AddLearner { node_id: 4, address: "h:1".into(), kind: LearnerKind::ReadOnly })
        );
        for status in [WireNodeStatus::Active, WireNodeStatus::Unspecified] {
            let error = change_of(add(status)).unwrap_err();
            assert_eq!(error.code, ErrorCode::InvalidArgument);
            assert!(error.metadata.message.contains("nodes join as learners"), "{}", error.metadata.message);
        }
        assert_eq!(change_of(WireChange { change: None }).map_err(|e| e.code), Err(ErrorCode::InvalidArgument));
    }

    #[test]
    fn promotions_must_make_voters() {
        let promote = |status: WireNodeStatus| WireChange {
            change: Some(Change::Promote(PromoteLearner { node_id: 4, status: status as i32 })),
        };
        assert_eq!(change_of(promote(WireNodeStatus::Active)), Ok(MembershipChange::PromoteLearner { node_id: 4 }));
        assert_eq!(change_of(promote(WireNodeStatus::ReadOnly)).map_err(|e| e.code), Err(ErrorCode::InvalidArgument));
        let batch =
            WireChange { change: Some(Change::BatchPromote(BatchPromote { node_ids: vec![4, 5], new_status: 0 })) };
        assert_eq!(change_of(batch), Ok(MembershipChange::BatchPromote { node_ids: vec![4, 5] }));
    }

    #[test]
    fn membership_errors_have_precise_codes() {
        assert_eq!(membership_code(&MembershipError::AlreadyMember(1)), ErrorCode::MemberAlreadyExists);
        assert_eq!(membership_code(&MembershipError::UnknownMember(9)), ErrorCode::UnknownMember);
        assert_eq!(membership_code(&MembershipError::NotPromotable(1)), ErrorCode::UnknownMember);
        assert_eq!(membership_code(&MembershipError::InvalidBatch), ErrorCode::InvalidArgument);
    }
}
