//! `etcdserverpb.Maintenance` on a node.
//!
//! * **Status** reports version [`ETCD_VERSION`] (the etcd API level Keel speaks, so that
//!   etcdctl 3.4 accepts it), the leader, the Raft commit index (`raftIndex`), term and applied
//!   index, and whether this member is a learner. `dbSize` and `dbSizeInUse` are 0: Keel does
//!   not measure its storage size yet.
//! * **Alarm**: Keel raises no alarms. `GET` and `DEACTIVATE` answer an empty list; `ACTIVATE`
//!   is `Unimplemented`.
//! * **Defragment** succeeds doing nothing: Keel's storage needs no defragmentation.
//! * **MoveLeader** (sent to the leader, as etcd requires) hands leadership to `targetID` and
//!   answers once this node sees it lead, or `etcdserver: request timed out` after two maximum
//!   election timeouts.
//! * **Hash**, **HashKV** and **Snapshot** are `Unimplemented` for now.

use std::sync::Arc;
use std::time::Duration;

use keel::proto::etcdserverpb::alarm_request::AlarmAction;
use keel::proto::etcdserverpb::maintenance_server::{Maintenance, MaintenanceServer};
use keel::proto::etcdserverpb::{
    AlarmRequest, AlarmResponse, DefragmentRequest, DefragmentResponse, HashKvRequest, HashKvResponse, HashRequest,
    HashResponse, MoveLeaderRequest, MoveLeaderResponse, SnapshotRequest, SnapshotResponse, StatusRequest,
    StatusResponse,
};
use keel_core::{NodeId, Role};
use tokio::time::Instant;
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status};

use super::header::{from_status, header};
use super::{errors, Shared};
use crate::node::{ClientError, NodeStatus};

/// The etcd version Status reports: the API level Keel's etcd layer follows.
pub const ETCD_VERSION: &str = "3.4.0";

/// How often MoveLeader checks whether leadership moved.
const MOVE_POLL: Duration = Duration::from_millis(10);

/// The gRPC server type of [`EtcdMaintenance`].
#[cfg(not(madsim))]
pub type EtcdMaintenanceServer = MaintenanceServer<EtcdMaintenance>;
/// The gRPC server type of [`EtcdMaintenance`] (the simulated stubs carry an interceptor type).
#[cfg(madsim)]
pub type EtcdMaintenanceServer = MaintenanceServer<EtcdMaintenance, tonic::codegen::IdentityInterceptor>;

/// The etcd `Maintenance` service of one node.
#[derive(Clone, Debug)]
pub struct EtcdMaintenance {
    pub(super) shared: Arc<Shared>,
}

pub(super) fn server(maintenance: EtcdMaintenance) -> EtcdMaintenanceServer {
    MaintenanceServer::new(maintenance)
}

/// etcd's status of a node.
fn status_response(status: &NodeStatus) -> StatusResponse {
    StatusResponse {
        header: Some(from_status(status, None)),
        version: ETCD_VERSION.to_string(),
        db_size: 0,
        leader: status.leader.leader_id.map_or(0, u64::from),
        raft_index: status.commit_index,
        raft_term: status.term,
        raft_applied_index: status.applied_index,
        errors: Vec::new(),
        db_size_in_use: 0,
        is_learner: status.role == Role::Learner,
    }
}

impl EtcdMaintenance {
    async fn move_leader(&self, target: u64) -> Result<MoveLeaderResponse, Status> {
        let handle = &self.shared.handle;
        let status = handle.status().await.map_err(|error| errors::of_client(&error))?;
        if status.role != Role::Leader {
            return Err(errors::status(errors::NOT_LEADER));
        }
        let target = NodeId::try_from(target)
            .ok()
            .filter(|id| status.membership.is_voter(*id))
            .ok_or_else(|| errors::status(errors::BAD_LEADER_TRANSFEREE))?;
        if target != status.id {
            match handle.transfer_leader(target).await {
                Ok(()) => {}
                Err(ClientError::Membership(_)) => return Err(errors::status(errors::BAD_LEADER_TRANSFEREE)),
                Err(error) => return Err(errors::of_client(&error)),
            }
            self.wait_for_leader(target).await?;
        }
        Ok(MoveLeaderResponse { header: Some(header(handle, None).await?) })
    }

    async fn wait_for_leader(&self, target: NodeId) -> Result<(), Status> {
        let deadline = Instant::now() + Duration::from_millis(self.shared.transfer_timeout_ms);
        loop {
            let status = self.shared.handle.status().await.map_err(|error| errors::of_client(&error))?;
            if status.role != Role::Leader && status.leader.leader_id == Some(target) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(errors::status(errors::TIMEOUT));
            }
            tokio::time::sleep(MOVE_POLL).await;
        }
    }
}

#[tonic::async_trait]
impl Maintenance for EtcdMaintenance {
    async fn alarm(&self, request: Request<AlarmRequest>) -> Result<Response<AlarmResponse>, Status> {
        match AlarmAction::try_from(request.get_ref().action) {
            Ok(AlarmAction::Get | AlarmAction::Deactivate) => {
                let header = header(&self.shared.handle, None).await?;
                Ok(Response::new(AlarmResponse { header: Some(header), alarms: Vec::new() }))
            }
            _ => Err(errors::unimplemented("raising an alarm (Alarm ACTIVATE)")),
        }
    }

    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        let status = self.shared.handle.status().await.map_err(|error| errors::of_client(&error))?;
        Ok(Response::new(status_response(&status)))
    }

    async fn defragment(&self, _: Request<DefragmentRequest>) -> Result<Response<DefragmentResponse>, Status> {
        Ok(Response::new(DefragmentResponse { header: Some(header(&self.shared.handle, None).await?) }))
    }

    async fn hash(&self, _: Request<HashRequest>) -> Result<Response<HashResponse>, Status> {
        Err(errors::unimplemented("Hash"))
    }

    async fn hash_kv(&self, _: Request<HashKvRequest>) -> Result<Response<HashKvResponse>, Status> {
        Err(errors::unimplemented("HashKV"))
    }

    type SnapshotStream = BoxStream<SnapshotResponse>;

    async fn snapshot(&self, _: Request<SnapshotRequest>) -> Result<Response<Self::SnapshotStream>, Status> {
        Err(errors::unimplemented("Snapshot"))
    }

    async fn move_leader(&self, request: Request<MoveLeaderRequest>) -> Result<Response<MoveLeaderResponse>, Status> {
        EtcdMaintenance::move_leader(self, request.into_inner().target_id).await.map(Response::new)
    }
}
