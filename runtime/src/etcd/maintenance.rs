//! `etcdserverpb.Maintenance` on a node.
//!
//! * **Status** reports version [`ETCD_VERSION`] (the etcd API level Keel speaks, so that
//!   etcdctl 3.4 accepts it), the leader, the Raft commit index (`raftIndex`), term and applied
//!   index, and whether this member is a learner. `dbSize` and `dbSizeInUse` are the key-value
//!   store's size (`KvStore::size_bytes`: keys, values and version records, history included),
//!   not the size of the storage files.
//! * **Alarm**: `GET`, `ACTIVATE` and `DEACTIVATE` on the store's replicated alarms; see
//!   `alarm.rs` (a raised `NOSPACE` refuses the writes that grow the store).
//! * **Defragment** succeeds doing nothing: Keel's storage needs no defragmentation.
//! * **MoveLeader** (sent to the leader, as etcd requires) hands leadership to `targetID` and
//!   answers once this node sees it lead, or `etcdserver: request timed out` after two maximum
//!   election timeouts.
//! * **HashKV** is the CRC-32 of this node's key-value history at or below `revision`
//!   (`KvStore::hash_kv`), equal on every member at the same revision and compacted revision;
//!   **Hash** is the same at the current revision (etcd hashes its whole database file).
//! * **Snapshot** streams this node's whole key-value store in chunks of
//!   [`SNAPSHOT_CHUNK_BYTES`], with `remaining_bytes`, framed as [`snapshot_blob`] describes so
//!   that `etcdctl snapshot save` accepts it (etcd clients check that the stream ends with a
//!   SHA-256 after a whole number of 512-byte pages). It is not an etcd (bolt) database:
//!   `etcdctl snapshot restore` cannot read it.

use std::sync::Arc;

use bytes::Bytes;
use std::time::Duration;

use keel::proto::etcdserverpb::maintenance_server::{Maintenance, MaintenanceServer};
use keel::proto::etcdserverpb::{
    AlarmRequest, AlarmResponse, DefragmentRequest, DefragmentResponse, HashKvRequest, HashKvResponse, HashRequest,
    HashResponse, MoveLeaderRequest, MoveLeaderResponse, ResponseHeader, SnapshotRequest, SnapshotResponse,
    StatusRequest, StatusResponse,
};
use keel_core::{NodeId, Role};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status};

use super::convert::{int, revision_of};
use super::header::from_status;
use super::{errors, Shared};
use crate::node::{ClientError, NodeStatus};
use crate::service::{send_or_stop, ChannelStream};

/// The etcd version Status reports: the API level Keel's etcd layer follows.
pub const ETCD_VERSION: &str = "3.4.0";

/// Bytes of snapshot per Snapshot message.
pub const SNAPSHOT_CHUNK_BYTES: usize = 64 * 1024;

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

/// etcd's status of a node; `errors` lists the raised alarms as etcd does.
fn status_response(status: &NodeStatus, size: u64, errors: Vec<String>) -> StatusResponse {
    StatusResponse {
        header: Some(from_status(status, None)),
        version: ETCD_VERSION.to_string(),
        db_size: int(size),
        leader: status.leader.leader_id.map_or(0, u64::from),
        raft_index: status.commit_index,
        raft_term: status.term,
        raft_applied_index: status.applied_index,
        errors,
        db_size_in_use: int(size),
        is_learner: status.role == Role::Learner,
    }
}

/// The Snapshot stream's bytes: the store's snapshot (`KvStore::snapshot`: history, leases and
/// its own CRC-32 trailer), zero bytes up to 8 bytes short of a multiple of 512, the snapshot's
/// length as a little-endian `u64`, then the SHA-256 of everything before it. A reader takes the
/// last 32 bytes as the checksum and the 8 before them as the length of the snapshot that starts
/// the blob.
pub fn snapshot_blob(snapshot: &[u8]) -> Bytes {
    let padded = (snapshot.len() + 8).div_ceil(512) * 512;
    let mut blob = Vec::with_capacity(padded + 32);
    blob.extend_from_slice(snapshot);
    blob.resize(padded - 8, 0);
    blob.extend_from_slice(&(snapshot.len() as u64).to_le_bytes());
    let digest = super::sha256::sha256(&blob);
    blob.extend_from_slice(&digest);
    Bytes::from(blob)
}

/// Sends `bytes` in chunks, each with the bytes left after it, until done or the stream ends.
async fn stream_snapshot(
    bytes: Bytes,
    header: ResponseHeader,
    output: mpsc::Sender<Result<SnapshotResponse, Status>>,
    mut closing: watch::Receiver<bool>,
) {
    let mut sent = 0;
    while sent < bytes.len() {
        let end = (sent + SNAPSHOT_CHUNK_BYTES).min(bytes.len());
        let chunk = SnapshotResponse {
            header: Some(header),
            remaining_bytes: (bytes.len() - end) as u64,
            blob: bytes.slice(sent..end),
        };
        if !send_or_stop(&output, Ok(chunk), &mut closing).await {
            return;
        }
        sent = end;
    }
}

impl EtcdMaintenance {
    /// The history hash at `revision`, with the compacted and current revisions.
    /// Ok if the caller holds the `root` role, which Defragment, Hash, HashKV, Snapshot and
    /// MoveLeader need while authentication is enabled (as in etcd).
    async fn admin(&self, metadata: &tonic::metadata::MetadataMap) -> Result<(), Status> {
        self.shared.authorize(metadata, super::access::Caller::require_admin).await.map(drop)
    }

    async fn hash_at(&self, revision: Option<u64>) -> Result<(u32, u64, u64), Status> {
        let answer = self.shared.handle.hash_kv(revision).await.map_err(|error| errors::of_client(&error))?;
        answer.map_err(|error| errors::of_kv(&error))
    }

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
        Ok(MoveLeaderResponse { header: Some(self.shared.headers.header(None).await?) })
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
        let (metadata, _, request) = request.into_parts();
        super::alarm::alarm(&self.shared, metadata, request).await.map(Response::new)
    }

    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        let status = self.shared.handle.status().await.map_err(|error| errors::of_client(&error))?;
        let size = self.shared.handle.kv_size().await.map_err(|error| errors::of_client(&error))?;
        let alarms = self.shared.handle.alarms().await.map_err(|error| errors::of_client(&error))?;
        let raised = alarms.into_iter().map(|(member, alarm)| super::alarm::status_error(member, alarm)).collect();
        Ok(Response::new(status_response(&status, size, raised)))
    }

    async fn defragment(&self, request: Request<DefragmentRequest>) -> Result<Response<DefragmentResponse>, Status> {
        self.admin(request.metadata()).await?;
        Ok(Response::new(DefragmentResponse { header: Some(self.shared.headers.header(None).await?) }))
    }

    async fn hash(&self, request: Request<HashRequest>) -> Result<Response<HashResponse>, Status> {
        self.admin(request.metadata()).await?;
        let (hash, _, current) = self.hash_at(None).await?;
        Ok(Response::new(HashResponse { header: Some(self.shared.headers.header(Some(current)).await?), hash }))
    }

    async fn hash_kv(&self, request: Request<HashKvRequest>) -> Result<Response<HashKvResponse>, Status> {
        self.admin(request.metadata()).await?;
        let (hash, compacted, current) = self.hash_at(revision_of(request.get_ref().revision)).await?;
        Ok(Response::new(HashKvResponse {
            header: Some(self.shared.headers.header(Some(current)).await?),
            hash,
            compact_revision: int(compacted),
        }))
    }

    type SnapshotStream = BoxStream<SnapshotResponse>;

    async fn snapshot(&self, request: Request<SnapshotRequest>) -> Result<Response<Self::SnapshotStream>, Status> {
        self.admin(request.metadata()).await?;
        let handle = &self.shared.handle;
        let (bytes, revision) = handle.kv_snapshot().await.map_err(|error| errors::of_client(&error))?;
        let header = self.shared.headers.header(Some(revision)).await?;
        let (output, receiver) = mpsc::channel(self.shared.config.watch_output_buffer.max(1));
        let closing = self.shared.closer.subscribe();
        tokio::spawn(stream_snapshot(snapshot_blob(&bytes), header, output, closing));
        Ok(Response::new(Box::pin(ChannelStream::new(receiver))))
    }

    async fn move_leader(&self, request: Request<MoveLeaderRequest>) -> Result<Response<MoveLeaderResponse>, Status> {
        self.admin(request.metadata()).await?;
        EtcdMaintenance::move_leader(self, request.into_inner().target_id).await.map(Response::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_blobs_end_with_a_checksum_after_whole_pages_and_carry_the_snapshot() {
        for size in [0, 1, 503, 504, 505, 4_000] {
            let snapshot: Vec<u8> = (0..size).map(|i| i as u8).collect();
            let blob = snapshot_blob(&snapshot);
            assert_eq!(blob.len() % 512, 32, "etcd clients check this ({size} bytes)");
            let (content, digest) = blob.split_at(blob.len() - 32);
            assert_eq!(digest, super::super::sha256::sha256(content));
            let length = u64::from_le_bytes(content[content.len() - 8..].try_into().unwrap());
            assert_eq!(&content[..length as usize], &snapshot[..]);
        }
    }
}
