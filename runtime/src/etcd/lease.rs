//! `etcdserverpb.Lease` on the store's lease table (`keel_core::kv`, `lease.rs` there).
//!
//! * **LeaseGrant**, **LeaseRevoke** and each **LeaseKeepAlive** message are log entries (one
//!   command each), so every replica agrees on every lease; a keep-alive is a write (etcd
//!   renews on the leader without the log; Keel trades that write for simplicity). The TTL
//!   granted is at least [`min_ttl_secs`] (one and a half maximum election timeouts, rounded up
//!   to a second) and at most etcd's 9,000,000,000 s. `ID` 0 lets the store pick one.
//! * Expiry: the leader proposes the expiry of due leases with the keys' TTL expiry, on its
//!   clock minus the clock-offset bound, so a lease never expires before its TTL has passed
//!   since its last grant or keep-alive; a new leader first gives every lease its full TTL again
//!   (as etcd does), and while no leader exists nothing expires.
//! * **LeaseTimeToLive** and **LeaseLeases** read the answering node's lease table after a
//!   ReadIndex round (linearizable, on any node); the remaining TTL counts against that node's
//!   clock. An unknown lease has TTL -1, as in etcd.
//! * A keep-alive of an unknown lease is answered with TTL 0, as in etcd. Requests received by
//!   a follower are forwarded to the leader (a keep-alive over a one-message stream).

use std::sync::Arc;

use futures_util::{Stream, StreamExt};
use keel::proto::etcdserverpb::lease_client::LeaseClient;
use keel::proto::etcdserverpb::lease_server::{Lease, LeaseServer};
use keel::proto::etcdserverpb::{
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse, LeaseLeasesRequest,
    LeaseLeasesResponse, LeaseRevokeRequest, LeaseRevokeResponse, LeaseStatus, LeaseTimeToLiveRequest,
    LeaseTimeToLiveResponse,
};
use keel_core::kv::{KvCommand, KvError, OpResponse};
use keel_core::LeaderHint;
use tokio::sync::mpsc;
use tonic::codegen::BoxStream;
use tonic::metadata::MetadataMap;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use super::convert::int;
use super::forward::forwarded;
use super::{errors, Shared, Written};
use crate::service::{send_or_stop, shutting_down_status, ChannelStream};

/// etcd's largest lease TTL, in seconds.
const TTL_SECS_MAX: i64 = 9_000_000_000;

/// The gRPC server type of [`EtcdLease`].
#[cfg(not(madsim))]
pub type EtcdLeaseServer = LeaseServer<EtcdLease>;
/// The gRPC server type of [`EtcdLease`] (the simulated stubs carry an interceptor type).
#[cfg(madsim)]
pub type EtcdLeaseServer = LeaseServer<EtcdLease, tonic::codegen::IdentityInterceptor>;

/// The etcd `Lease` service of one node.
#[derive(Clone, Debug)]
pub struct EtcdLease {
    pub(super) shared: Arc<Shared>,
}

pub(super) fn server(lease: EtcdLease) -> EtcdLeaseServer {
    LeaseServer::new(lease)
}

/// The shortest TTL granted: one and a half maximum election timeouts, in whole seconds (at
/// least 1), so that a lease survives an election (etcd's rule).
pub fn min_ttl_secs(election_timeout_ms_max: u64) -> i64 {
    int(election_timeout_ms_max.saturating_mul(3).div_ceil(2).div_ceil(1_000).max(1))
}

impl EtcdLease {
    async fn propose(&self, command: KvCommand) -> Result<Written, Status> {
        self.shared.propose(command).await
    }

    async fn leader(&self, hint: &LeaderHint, metadata: &MetadataMap) -> Result<LeaseClient<Channel>, Status> {
        Ok(LeaseClient::new(self.shared.forwarder.channel(hint, metadata).await?))
    }

    async fn grant(&self, metadata: MetadataMap, request: LeaseGrantRequest) -> Result<LeaseGrantResponse, Status> {
        if request.ttl > TTL_SECS_MAX {
            return Err(errors::status(errors::LEASE_TTL_TOO_LARGE));
        }
        let ttl_secs = request.ttl.max(min_ttl_secs(self.shared.election_timeout_ms_max));
        let ttl_ms = u64::try_from(ttl_secs).unwrap_or(1).saturating_mul(1_000);
        let id = u64::try_from(request.id).map_err(|_| Status::invalid_argument("etcdserver: negative lease ID"))?;
        // A valid token is needed, no permission (as in etcd): the grant is not tied to the auth
        // table's revision, so a change of the table does not refuse it.
        self.shared.authorize(&metadata, |_| Ok(())).await?;
        let result = match self.propose(KvCommand::LeaseGrant { id, ttl_ms }).await? {
            Written::Applied(result) => result,
            Written::Elsewhere(hint) => {
                let mut client = self.leader(&hint, &metadata).await?;
                let call = client.lease_grant(forwarded(request, &metadata));
                return self.shared.forwarder.relay(&hint.address, call).await;
            }
        };
        let Some(OpResponse::Lease { id, .. }) = result.responses.first() else {
            return Err(Status::internal("etcdserver: the grant applied without a lease"));
        };
        Ok(LeaseGrantResponse {
            header: Some(self.shared.headers.header(Some(result.revision)).await?),
            id: int(*id),
            ttl: ttl_secs,
            error: String::new(),
        })
    }

    async fn revoke(&self, metadata: MetadataMap, request: LeaseRevokeRequest) -> Result<LeaseRevokeResponse, Status> {
        let id = lease_id(request.id)?;
        let keys = if self.shared.handle.auth().enabled() { self.attached_keys(id).await? } else { Vec::new() };
        let writable = |caller: &super::access::Caller| {
            keys.iter().try_for_each(|key| caller.require_write(&keel_core::kv::KeyRange::key(key.clone())))
        };
        let caller = self.shared.authorize(&metadata, writable).await?;
        let result = match self.propose(caller.authorized(KvCommand::LeaseRevoke { id })).await? {
            Written::Applied(result) => result,
            Written::Elsewhere(hint) => {
                let mut client = self.leader(&hint, &metadata).await?;
                let call = client.lease_revoke(forwarded(request, &metadata));
                return self.shared.forwarder.relay(&hint.address, call).await;
            }
        };
        Ok(LeaseRevokeResponse { header: Some(self.shared.headers.header(Some(result.revision)).await?) })
    }

    /// The keys attached to lease `id` now, which revoking it deletes: etcd checks the caller's
    /// write permission on each. The check is not repeated when the revoke applies (a key
    /// attached in between is deleted unchecked), as in etcd.
    async fn attached_keys(&self, id: u64) -> Result<Vec<bytes::Bytes>, Status> {
        let (leases, _) = self.shared.handle.leases(Some(id)).await.map_err(|error| errors::of_client(&error))?;
        Ok(leases.into_iter().flat_map(|lease| lease.keys).collect())
    }

    /// One keep-alive: renewed here on the leader, or forwarded over a one-message stream.
    async fn keep_alive(&self, metadata: &MetadataMap, id: i64) -> Result<LeaseKeepAliveResponse, Status> {
        let lease = lease_id(id)?;
        let answer = |ttl: i64, header| LeaseKeepAliveResponse { header: Some(header), id, ttl };
        // As a grant: a valid token, no permission, and a change of the auth table never ends a
        // keep-alive stream.
        self.shared.authorize(metadata, |_| Ok(())).await?;
        match self.propose(KvCommand::LeaseKeepAlive { id: lease }).await {
            Ok(Written::Applied(result)) => {
                let ttl_ms = match result.responses.first() {
                    Some(OpResponse::Lease { ttl_ms, .. }) => *ttl_ms,
                    _ => 0,
                };
                Ok(answer(int(ttl_ms / 1_000), self.shared.headers.header(None).await?))
            }
            Ok(Written::Elsewhere(hint)) => {
                let mut client = self.leader(&hint, metadata).await?;
                let messages = futures_util::stream::iter(vec![LeaseKeepAliveRequest { id }]);
                let mut stream = self
                    .shared
                    .forwarder
                    .call(&hint.address, client.lease_keep_alive(forwarded(messages, metadata)))
                    .await?;
                let answer = stream.next().await.unwrap_or_else(|| Err(errors::status(errors::LEADER_CHANGED)));
                answer.map(|answer| self.shared.forwarder.relabel(answer))
            }
            Err(status) if status.message() == errors::LEASE_NOT_FOUND.1 => {
                Ok(answer(0, self.shared.headers.header(None).await?))
            }
            Err(status) => Err(status),
        }
    }

    async fn time_to_live(
        &self,
        metadata: &MetadataMap,
        request: LeaseTimeToLiveRequest,
    ) -> Result<LeaseTimeToLiveResponse, Status> {
        let id = lease_id(request.id)?;
        self.shared.authorize(metadata, |_| Ok(())).await?;
        self.shared.read_barrier().await?;
        let (leases, now_ms) = self.shared.handle.leases(Some(id)).await.map_err(|error| errors::of_client(&error))?;
        let header = Some(self.shared.headers.header(None).await?);
        let Some(lease) = leases.into_iter().next() else {
            return Ok(LeaseTimeToLiveResponse { header, id: request.id, ttl: -1, granted_ttl: 0, keys: Vec::new() });
        };
        let remaining_ms = lease.expires_at_ms.saturating_sub(now_ms);
        Ok(LeaseTimeToLiveResponse {
            header,
            id: request.id,
            ttl: int(remaining_ms.div_ceil(1_000)),
            granted_ttl: int(lease.ttl_ms / 1_000),
            keys: if request.keys { lease.keys } else { Vec::new() },
        })
    }

    async fn list(&self, metadata: &MetadataMap) -> Result<LeaseLeasesResponse, Status> {
        self.shared.authorize(metadata, |_| Ok(())).await?;
        self.shared.read_barrier().await?;
        let (leases, _) = self.shared.handle.leases(None).await.map_err(|error| errors::of_client(&error))?;
        Ok(LeaseLeasesResponse {
            header: Some(self.shared.headers.header(None).await?),
            leases: leases.iter().map(|lease| LeaseStatus { id: int(lease.id) }).collect(),
        })
    }

    /// Serves one keep-alive stream: each request renewed in turn, answered in order.
    /// Answers each keep-alive of `requests` on `output` until either ends (or the node stops):
    /// the gRPC `LeaseKeepAlive` stream, and the HTTP gateway's (`gateway.rs`).
    pub(super) async fn keep_alive_stream(
        self,
        metadata: MetadataMap,
        mut requests: impl Stream<Item = Result<LeaseKeepAliveRequest, Status>> + Unpin,
        output: mpsc::Sender<Result<LeaseKeepAliveResponse, Status>>,
    ) {
        let mut closing = self.shared.closer.subscribe();
        loop {
            let request = tokio::select! {
                biased;
                request = requests.next() => request,
                _ = closing.wait_for(|closed| *closed) => {
                    let _ = output.try_send(Err(shutting_down_status()));
                    return;
                }
            };
            let Some(Ok(request)) = request else { return };
            let answer = self.keep_alive(&metadata, request.id).await;
            let failed = answer.is_err();
            if !send_or_stop(&output, answer, &mut closing).await || failed {
                return;
            }
        }
    }
}

/// A lease id from etcd's `int64`; 0 and negative ids name no lease.
fn lease_id(id: i64) -> Result<u64, Status> {
    u64::try_from(id).ok().filter(|id| *id > 0).ok_or_else(|| errors::of_kv(&KvError::LeaseNotFound))
}

#[tonic::async_trait]
impl Lease for EtcdLease {
    async fn lease_grant(&self, request: Request<LeaseGrantRequest>) -> Result<Response<LeaseGrantResponse>, Status> {
        let (metadata, _, request) = request.into_parts();
        self.grant(metadata, request).await.map(Response::new)
    }

    async fn lease_revoke(
        &self,
        request: Request<LeaseRevokeRequest>,
    ) -> Result<Response<LeaseRevokeResponse>, Status> {
        let (metadata, _, request) = request.into_parts();
        self.revoke(metadata, request).await.map(Response::new)
    }

    type LeaseKeepAliveStream = BoxStream<LeaseKeepAliveResponse>;

    async fn lease_keep_alive(
        &self,
        request: Request<tonic::Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let require_leader = request.metadata().get("hasleader").is_some_and(|value| value == "true");
        let known = self.shared.handle.status().await.is_ok_and(|status| status.leader.leader_id.is_some());
        if require_leader && !known {
            return Err(errors::status(errors::NO_LEADER));
        }
        let (metadata, _, requests) = request.into_parts();
        let (output, receiver) = mpsc::channel(self.shared.config.watch_output_buffer.max(1));
        tokio::spawn(self.clone().keep_alive_stream(metadata, requests, output));
        Ok(Response::new(Box::pin(ChannelStream::new(receiver))))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        let (metadata, _, request) = request.into_parts();
        self.time_to_live(&metadata, request).await.map(Response::new)
    }

    async fn lease_leases(
        &self,
        request: Request<LeaseLeasesRequest>,
    ) -> Result<Response<LeaseLeasesResponse>, Status> {
        self.list(request.metadata()).await.map(Response::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shortest_ttl_outlives_an_election() {
        assert_eq!(min_ttl_secs(600), 1);
        assert_eq!(min_ttl_secs(1_000), 2);
        assert_eq!(min_ttl_secs(3_000), 5);
        assert_eq!(lease_id(0).unwrap_err().code(), tonic::Code::NotFound);
        assert_eq!(lease_id(-5).unwrap_err().message(), errors::LEASE_NOT_FOUND.1);
        assert_eq!(lease_id(7).unwrap(), 7);
    }
}
