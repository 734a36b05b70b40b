//! `etcdserverpb.Lease`: not implemented yet. Every call is answered with gRPC `Unimplemented`
//! and a message saying so (the README lists it), and a put naming a lease is refused with
//! `etcdserver: requested lease not found`, which is what etcd answers for a lease that does not
//! exist: no key is ever attached to a lease Keel does not keep.

use keel::proto::etcdserverpb::lease_server::{Lease, LeaseServer};
use keel::proto::etcdserverpb::{
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse, LeaseLeasesRequest,
    LeaseLeasesResponse, LeaseRevokeRequest, LeaseRevokeResponse, LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
};
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status};

use super::errors;

/// The gRPC server type of [`EtcdLease`].
#[cfg(not(madsim))]
pub type EtcdLeaseServer = LeaseServer<EtcdLease>;
/// The gRPC server type of [`EtcdLease`] (the simulated stubs carry an interceptor type).
#[cfg(madsim)]
pub type EtcdLeaseServer = LeaseServer<EtcdLease, tonic::codegen::IdentityInterceptor>;

/// The etcd `Lease` service of one node (every call `Unimplemented` for now).
#[derive(Clone, Debug, Default)]
pub struct EtcdLease {
    _private: (),
}

pub(super) fn server(lease: EtcdLease) -> EtcdLeaseServer {
    LeaseServer::new(lease)
}

#[tonic::async_trait]
impl Lease for EtcdLease {
    async fn lease_grant(&self, _: Request<LeaseGrantRequest>) -> Result<Response<LeaseGrantResponse>, Status> {
        Err(errors::unimplemented("LeaseGrant"))
    }

    async fn lease_revoke(&self, _: Request<LeaseRevokeRequest>) -> Result<Response<LeaseRevokeResponse>, Status> {
        Err(errors::unimplemented("LeaseRevoke"))
    }

    type LeaseKeepAliveStream = BoxStream<LeaseKeepAliveResponse>;

    async fn lease_keep_alive(
        &self,
        _: Request<tonic::Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        Err(errors::unimplemented("LeaseKeepAlive"))
    }

    async fn lease_time_to_live(
        &self,
        _: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        Err(errors::unimplemented("LeaseTimeToLive"))
    }

    async fn lease_leases(&self, _: Request<LeaseLeasesRequest>) -> Result<Response<LeaseLeasesResponse>, Status> {
        Err(errors::unimplemented("LeaseLeases"))
    }
}
