//! `etcdserverpb.Cluster` on Keel's membership.
//!
//! * **MemberList** lists voters (of both halves of a joint configuration) and learners, named
//!   `keel-<id>`; a member's peer and client URLs are both `http://<address>` (`https://` when
//!   the node serves TLS), since one address serves peers and clients. As in etcd, the list is this node's own view unless the
//!   request sets `linearizable` (etcdctl 3.5 and later do by default; 3.4 never does): then a
//!   read-index barrier first makes it include every change committed before the request, and
//!   without a quorum the request fails instead of answering from a node that may be behind.
//! * **MemberAdd** adds a **learner** (Keel members join as learners, then are promoted); a
//!   request without `isLearner` is refused (`FailedPrecondition`). The new member's id is one
//!   above the highest id in the configuration: start the new node with that id. The address is
//!   the first peer URL without its scheme.
//! * **MemberRemove** and **MemberPromote** map to Keel's remove and promote; etcd's errors for
//!   an unknown member, a promotion of a voter, and a learner not caught up.
//! * **MemberUpdate** changes a member's address (the first peer URL without its scheme) through
//!   the log, as Keel's `MembershipChange::UpdateAddress`: peers dial the new address from the
//!   entry on, so the member must be (re)started listening there. An unknown id is etcd's
//!   `member not found`; an address another member has is `Peer URLs already exists` (also
//!   checked by MemberAdd). Since one address serves peers and clients, the client URL changes
//!   with it.
//!
//! Sent to a follower, changes are forwarded to the leader (`forward.rs`).

use std::sync::Arc;

use keel::proto::etcdserverpb::cluster_client::ClusterClient;
use keel::proto::etcdserverpb::cluster_server::{Cluster, ClusterServer};
use keel::proto::etcdserverpb::{
    Member, MemberAddRequest, MemberAddResponse, MemberListRequest, MemberListResponse, MemberPromoteRequest,
    MemberPromoteResponse, MemberRemoveRequest, MemberRemoveResponse, MemberUpdateRequest, MemberUpdateResponse,
};
use keel_core::{LearnerKind, Membership, MembershipChange, MembershipError, NodeId};
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};

use super::forward::forwarded;
use super::header::from_status;
use super::{errors, Shared};
use crate::node::ClientError;

/// The gRPC server type of [`EtcdCluster`].
#[cfg(not(madsim))]
pub type EtcdClusterServer = ClusterServer<EtcdCluster>;
/// The gRPC server type of [`EtcdCluster`] (the simulated stubs carry an interceptor type).
#[cfg(madsim)]
pub type EtcdClusterServer = ClusterServer<EtcdCluster, tonic::codegen::IdentityInterceptor>;

/// The etcd `Cluster` service of one node.
#[derive(Clone, Debug)]
pub struct EtcdCluster {
    pub(super) shared: Arc<Shared>,
}

pub(super) fn server(cluster: EtcdCluster) -> EtcdClusterServer {
    ClusterServer::new(cluster)
}

/// etcd's member list of a configuration, in id order.
/// `scheme` is `http` or `https`.
pub(crate) fn members_of(membership: &Membership, scheme: &str) -> Vec<Member> {
    let voters = membership.voters.union(&membership.voters_outgoing).map(|id| (*id, false));
    let learners = membership.learners.keys().map(|id| (*id, true));
    let mut members: Vec<Member> =
        voters.chain(learners).map(|(id, learner)| member(membership, id, learner, scheme)).collect();
    members.sort_by_key(|member| member.id);
    members
}

fn member(membership: &Membership, id: NodeId, is_learner: bool, scheme: &str) -> Member {
    let url = format!("{scheme}://{}", membership.address_of(id));
    Member {
        id: u64::from(id),
        name: format!("keel-{id}"),
        peer_ur_ls: vec![url.clone()],
        client_ur_ls: vec![url],
        is_learner,
    }
}

/// A member id from etcd's `uint64`; ids Keel cannot hold are unknown members.
fn node_id(id: u64) -> Result<NodeId, Status> {
    NodeId::try_from(id).ok().filter(|id| *id > 0).ok_or_else(|| errors::status(errors::MEMBER_NOT_FOUND))
}

/// The address of a peer URL: the URL without its scheme and path.
fn address_of(url: &str) -> Result<String, Status> {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let address = rest.split('/').next().unwrap_or_default();
    if address.is_empty() || !address.contains(':') {
        return Err(errors::status(errors::MEMBER_BAD_URLS));
    }
    Ok(address.to_string())
}

impl EtcdCluster {
    /// Carries out a change on the leader; `Ok(None)` when this node does not lead.
    async fn change(&self, change: MembershipChange) -> Result<Option<Membership>, Status> {
        match self.shared.handle.change_membership(change.clone()).await {
            Ok(membership) => Ok(Some(membership)),
            Err(ClientError::NotLeader(_)) => Ok(None),
            Err(ClientError::Membership(message)) => Err(self.refusal(&change, message).await),
            Err(error) => Err(errors::of_client(&error)),
        }
    }

    /// etcd's error for a change the core refused, found by checking it against the latest
    /// configuration.
    async fn refusal(&self, change: &MembershipChange, message: String) -> Status {
        let Ok(status) = self.shared.handle.status().await else {
            return Status::failed_precondition(format!("etcdserver: {message}"));
        };
        let promotion = matches!(change, MembershipChange::PromoteLearner { .. });
        match status.membership.apply_change(change) {
            Err(MembershipError::UnknownMember(_)) => errors::status(errors::MEMBER_NOT_FOUND),
            Err(MembershipError::AddressInUse(_)) => errors::status(errors::PEER_URL_EXISTS),
            Err(MembershipError::NotPromotable(_)) if promotion => errors::status(errors::MEMBER_NOT_LEARNER),
            Ok(_) if promotion => errors::status(errors::LEARNER_NOT_READY),
            _ => Status::failed_precondition(format!("etcdserver: {message}")),
        }
    }

    async fn leader(
        &self,
        metadata: &MetadataMap,
    ) -> Result<(ClusterClient<tonic::transport::Channel>, String), Status> {
        let status = self.shared.handle.status().await.map_err(|error| errors::of_client(&error))?;
        let channel = self.shared.forwarder.channel(&status.leader, metadata).await?;
        Ok((ClusterClient::new(channel), status.leader.address))
    }

    async fn member_add(&self, metadata: MetadataMap, request: MemberAddRequest) -> Result<MemberAddResponse, Status> {
        self.shared.authorize(&metadata, super::access::Caller::require_admin).await?;
        if !request.is_learner {
            return Err(Status::failed_precondition(
                "etcdserver: Keel members join as learners: add it with --learner, start it, then promote it",
            ));
        }
        let address = address_of(request.peer_ur_ls.first().map(String::as_str).unwrap_or_default())?;
        let status = self.shared.handle.status().await.map_err(|error| errors::of_client(&error))?;
        if status.membership.addresses.values().any(|held| *held == address) {
            return Err(errors::status(errors::PEER_URL_EXISTS));
        }
        let highest = status.membership.voters.iter().chain(status.membership.learners.keys()).max().copied();
        let node_id = highest.unwrap_or(0).checked_add(1).ok_or_else(|| errors::status(errors::MEMBER_BAD_URLS))?;
        let change = MembershipChange::AddLearner { node_id, address, kind: LearnerKind::Promotable };
        let Some(membership) = self.change(change).await? else {
            let (mut client, address) = self.leader(&metadata).await?;
            return self.shared.forwarder.relay(&address, client.member_add(forwarded(request, &metadata))).await;
        };
        Ok(MemberAddResponse {
            header: Some(self.shared.headers.header(None).await?),
            member: Some(member(&membership, node_id, true, self.shared.url_scheme)),
            members: members_of(&membership, self.shared.url_scheme),
        })
    }

    async fn member_remove(
        &self,
        metadata: MetadataMap,
        request: MemberRemoveRequest,
    ) -> Result<MemberRemoveResponse, Status> {
        self.shared.authorize(&metadata, super::access::Caller::require_admin).await?;
        let change = MembershipChange::RemoveNode { node_id: node_id(request.id)? };
        let Some(membership) = self.change(change).await? else {
            let (mut client, address) = self.leader(&metadata).await?;
            return self.shared.forwarder.relay(&address, client.member_remove(forwarded(request, &metadata))).await;
        };
        Ok(MemberRemoveResponse {
            header: Some(self.shared.headers.header(None).await?),
            members: members_of(&membership, self.shared.url_scheme),
        })
    }

    async fn member_update(
        &self,
        metadata: MetadataMap,
        request: MemberUpdateRequest,
    ) -> Result<MemberUpdateResponse, Status> {
        self.shared.authorize(&metadata, super::access::Caller::require_admin).await?;
        let address = address_of(request.peer_ur_ls.first().map(String::as_str).unwrap_or_default())?;
        let change = MembershipChange::UpdateAddress { node_id: node_id(request.id)?, address };
        let Some(membership) = self.change(change).await? else {
            let (mut client, address) = self.leader(&metadata).await?;
            return self.shared.forwarder.relay(&address, client.member_update(forwarded(request, &metadata))).await;
        };
        Ok(MemberUpdateResponse {
            header: Some(self.shared.headers.header(None).await?),
            members: members_of(&membership, self.shared.url_scheme),
        })
    }

    async fn member_promote(
        &self,
        metadata: MetadataMap,
        request: MemberPromoteRequest,
    ) -> Result<MemberPromoteResponse, Status> {
        self.shared.authorize(&metadata, super::access::Caller::require_admin).await?;
        let change = MembershipChange::PromoteLearner { node_id: node_id(request.id)? };
        let Some(membership) = self.change(change).await? else {
            let (mut client, address) = self.leader(&metadata).await?;
            return self.shared.forwarder.relay(&address, client.member_promote(forwarded(request, &metadata))).await;
        };
        Ok(MemberPromoteResponse {
            header: Some(self.shared.headers.header(None).await?),
            members: members_of(&membership, self.shared.url_scheme),
        })
    }
}

#[tonic::async_trait]
impl Cluster for EtcdCluster {
    async fn member_add(&self, request: Request<MemberAddRequest>) -> Result<Response<MemberAddResponse>, Status> {
        let (metadata, _, request) = request.into_parts();
        EtcdCluster::member_add(self, metadata, request).await.map(Response::new)
    }

    async fn member_remove(
        &self,
        request: Request<MemberRemoveRequest>,
    ) -> Result<Response<MemberRemoveResponse>, Status> {
        let (metadata, _, request) = request.into_parts();
        EtcdCluster::member_remove(self, metadata, request).await.map(Response::new)
    }

    async fn member_update(
        &self,
        request: Request<MemberUpdateRequest>,
    ) -> Result<Response<MemberUpdateResponse>, Status> {
        let (metadata, _, request) = request.into_parts();
        EtcdCluster::member_update(self, metadata, request).await.map(Response::new)
    }

    async fn member_list(&self, request: Request<MemberListRequest>) -> Result<Response<MemberListResponse>, Status> {
        if request.get_ref().linearizable {
            // A read-index barrier: once it returns, this node has applied every membership
            // change committed before the request arrived.
            self.shared.read_barrier().await?;
        }
        let status = self.shared.handle.status().await.map_err(|error| errors::of_client(&error))?;
        let members = members_of(&status.membership, self.shared.url_scheme);
        Ok(Response::new(MemberListResponse { header: Some(from_status(&status, None)), members }))
    }

    async fn member_promote(
        &self,
        request: Request<MemberPromoteRequest>,
    ) -> Result<Response<MemberPromoteResponse>, Status> {
        let (metadata, _, request) = request.into_parts();
        EtcdCluster::member_promote(self, metadata, request).await.map(Response::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_list_voters_and_learners_with_urls() {
        let mut membership = Membership::with_voters([2, 1]);
        membership.learners.insert(3, LearnerKind::Promotable);
        membership.addresses.insert(1, "127.0.0.1:7001".into());
        let members = members_of(&membership, "http");
        assert_eq!(
            members.iter().map(|m| (m.id, m.is_learner)).collect::<Vec<_>>(),
            vec![(1, false), (2, false), (3, true)]
        );
        assert_eq!(members[0].client_ur_ls, vec!["http://127.0.0.1:7001".to_string()]);
        let secure = members_of(&membership, "https");
        assert_eq!(secure[0].peer_ur_ls, vec!["https://127.0.0.1:7001".to_string()]);
        assert_eq!(members[0].name, "keel-1");
    }

    #[test]
    fn peer_urls_give_addresses() {
        assert_eq!(address_of("http://10.0.0.1:2380").unwrap(), "10.0.0.1:2380");
        assert_eq!(address_of("10.0.0.1:2380/").unwrap(), "10.0.0.1:2380");
        assert_eq!(address_of("http://").unwrap_err().message(), errors::MEMBER_BAD_URLS.1);
        assert_eq!(node_id(u64::MAX).unwrap_err().code(), tonic::Code::NotFound);
    }
}
