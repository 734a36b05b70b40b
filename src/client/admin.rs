//! Cluster administration: membership, leadership transfer and node status.

use super::retry::{Failure, OpKind, Router};
use super::{check_code, ClientError, KeelClient, Membership, NodeStatus};
use crate::proto::admin::cluster_admin_client::ClusterAdminClient;
use crate::proto::admin::{StatusRequest, TransferLeadershipRequest};
use crate::proto::common::membership_change::Change;
use crate::proto::common::{
    AddNode, BatchPromote, BatchRemove, MembershipChange, NodeStatus as ProtoNodeStatus, PromoteLearner, RemoveNode,
};

impl KeelClient {
    /// The cluster configuration as the answering node knows it.
    pub async fn members(&self) -> Result<Membership, ClientError> {
        self.router
            .run(&self.options, OpKind::Read, |endpoint| {
                let message = StatusRequest {};
                async move {
                    let mut admin = self.admin(&endpoint).await?;
                    // After connecting: a login there gives the token.
                    let request = self.request(message);
                    let response = admin
                        .get_membership(request)
                        .await
                        .map_err(|status| self.status_failure(&endpoint, &status))?
                        .into_inner();
                    check_code(response.error, response.metadata.clone())?;
                    Ok(Membership::from(response))
                }
            })
            .await
    }

    /// Adds node `id`, reachable by its peers at `address`, as a learner: promotable later, or
    /// never (`read_only`). Returns the configuration once the change is applied.
    pub async fn add_learner(
        &self,
        id: u32,
        address: impl Into<String>,
        read_only: bool,
    ) -> Result<Membership, ClientError> {
        let status = if read_only { ProtoNodeStatus::ReadOnly } else { ProtoNodeStatus::Promotable };
        let change = Change::AddNode(AddNode { node_id: id, address: address.into(), status: status as i32 });
        self.change_membership(change).await
    }

    /// Promotes learners `ids` to voters, in one configuration change.
    pub async fn promote(&self, ids: &[u32]) -> Result<Membership, ClientError> {
        let active = ProtoNodeStatus::Active as i32;
        let change = match ids {
            [] => return Err(ClientError::InvalidRequest("name at least one learner to promote".into())),
            [id] => Change::Promote(PromoteLearner { node_id: *id, status: active }),
            ids => Change::BatchPromote(BatchPromote { node_ids: ids.to_vec(), new_status: active }),
        };
        self.change_membership(change).await
    }

    /// Removes members `ids` (voters or learners), in one configuration change.
    pub async fn remove(&self, ids: &[u32]) -> Result<Membership, ClientError> {
        let change = match ids {
            [] => return Err(ClientError::InvalidRequest("name at least one member to remove".into())),
            [id] => Change::RemoveNode(RemoveNode { node_id: *id }),
            ids => Change::BatchRemove(BatchRemove { node_ids: ids.to_vec() }),
        };
        self.change_membership(change).await
    }

    /// Asks the leader to hand leadership over to voter `target`.
    pub async fn transfer_leader(&self, target: u32) -> Result<(), ClientError> {
        self.router
            .run(&self.options, OpKind::Write, |endpoint| {
                let message = TransferLeadershipRequest { target };
                async move {
                    let mut admin = self.admin(&endpoint).await?;
                    // After connecting: a login there gives the token.
                    let request = self.request(message);
                    let response = admin
                        .transfer_leadership(request)
                        .await
                        .map_err(|status| self.status_failure(&endpoint, &status))?
                        .into_inner();
                    check_code(response.error, response.metadata)
                }
            })
            .await
    }

    /// The status of the node at `endpoint` (`host:port`), which need not be one of the client's
    /// endpoints. Retried (at most three attempts) only at that endpoint.
    pub async fn status(&self, endpoint: &str) -> Result<NodeStatus, ClientError> {
        let uri = super::retry::normalize(endpoint);
        if uri.is_empty() {
            return Err(ClientError::NoEndpoints);
        }
        let router = Router::new(vec![uri]);
        let options = super::ClientOptions { max_attempts: self.options.max_attempts.min(3), ..self.options.clone() };
        router
            .run(&options, OpKind::Read, |endpoint| {
                let message = StatusRequest {};
                async move {
                    let mut admin = self.admin(&endpoint).await?;
                    // After connecting: a login there gives the token.
                    let request = self.request(message);
                    let response = admin
                        .status(request)
                        .await
                        .map_err(|status| self.status_failure(&endpoint, &status))?
                        .into_inner();
                    check_code(response.error, response.metadata.clone())?;
                    Ok(NodeStatus::from_proto(endpoint, response))
                }
            })
            .await
    }

    /// The status of every endpoint of the client, in order, each with its own result.
    pub async fn status_all(&self) -> Vec<(String, Result<NodeStatus, ClientError>)> {
        let mut statuses = Vec::with_capacity(self.endpoints().len());
        for endpoint in self.endpoints() {
            statuses.push((endpoint.clone(), self.status(endpoint).await));
        }
        statuses
    }

    async fn change_membership(&self, change: Change) -> Result<Membership, ClientError> {
        let change = MembershipChange { change: Some(change) };
        self.router
            .run(&self.options, OpKind::Write, |endpoint| {
                let message = change.clone();
                async move {
                    let mut admin = self.admin(&endpoint).await?;
                    // After connecting: a login there gives the token.
                    let request = self.request(message);
                    let response = admin
                        .change_membership(request)
                        .await
                        .map_err(|status| self.status_failure(&endpoint, &status))?
                        .into_inner();
                    check_code(response.error, response.metadata.clone())?;
                    Ok(Membership::from(response))
                }
            })
            .await
    }

    /// The admin service stub of `endpoint`, connecting if needed.
    async fn admin(&self, endpoint: &str) -> Result<ClusterAdminClient<tonic::transport::Channel>, Failure> {
        let channel = self.channel(endpoint).await?;
        Ok(ClusterAdminClient::new(channel)
            .max_decoding_message_size(self.options.message_bytes_max)
            .max_encoding_message_size(self.options.message_bytes_max))
    }
}
