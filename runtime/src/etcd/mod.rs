//! # The etcd v3 API (`etcdserverpb`) over Keel's MVCC store
//!
//! Keel serves etcd's gRPC services on the node's client address, next to the native API and
//! over the same [`keel_core::kv::KvStore`]: a key written through one API is read and watched
//! through the other, with the same revisions. Unmodified `etcdctl` 3.4 and etcd client
//! libraries work against it. The protocol types are Keel's own description of etcd's wire format
//! (`proto/etcd/`).
//!
//! | file | service |
//! |---|---|
//! | `kv.rs` | `KV`: Range, Put, DeleteRange, Txn, Compact |
//! | `txn.rs` | the conversion of etcd transactions to one `KvCommand::Txn` and back |
//! | `watch.rs` | `Watch`: many watches on one bidirectional stream, history replay |
//! | `cluster.rs` | `Cluster`: member list and changes, mapped on Keel's membership |
//! | `maintenance.rs` | `Maintenance`: status, hashes, snapshot, leader moves |
//! | `alarm.rs` | `Maintenance.Alarm`: replicated alarms; a raised NOSPACE refuses growth |
//! | `corruption.rs` | the leader's periodic hash comparison, raising CORRUPT for a diverged member |
//! | `sha256.rs` | the SHA-256 that ends a snapshot stream |
//! | `auth.rs` | `Auth`: users, roles, permissions, `Authenticate` and its tokens |
//! | `access.rs` | the check of every request against the caller's token and rights |
//! | `auth_token.rs` | password hashes, signed tokens, random keys |
//! | `cert_identity.rs` | a client certificate's common name logged in as a user (a server layer) |
//! | `lease.rs` | `Lease`: grant, revoke, keep-alive, time-to-live, list, on the store's lease table |
//! | `forward.rs` | writes received by a follower are forwarded to the leader's etcd API |
//! | `health.rs` | etcd's HTTP `/health` check: alarms, a known leader, a read within a second |
//! | `grpc_health.rs` | `grpc.health.v1.Health`: the same check as gRPC's health protocol, `Check` and `Watch` |
//! | `gateway.rs` | etcd's HTTP gateway: the same services as JSON over HTTP (`POST /v3/kv/range`, ...) |
//! | `header.rs`, `errors.rs`, `convert.rs` | response headers, etcd's error texts, conversions |
//!
//! ## Where it sits on the read and write paths
//!
//! A write (Put, DeleteRange, Txn, Compact) becomes one `KvCommand`, checked against the
//! node's key-value limits and proposed through `NodeHandle::write`: one log entry, one
//! revision, applied deterministically on every replica. A follower cannot propose, so it
//! forwards the etcd request to the leader's etcd API (once; a second hop is refused) and relays
//! the answer, as etcd does. A Range is a `NodeHandle::range` read: linearizable (ReadIndex,
//! confirmed by the leader, on any node) unless `serializable` is set, then served from the
//! node's local state. Watches subscribe to the node's applied-event broadcast and replay
//! history from the store, like the native watch.

pub(crate) mod access;
mod alarm;
mod auth;
mod auth_token;
#[cfg(not(madsim))]
mod cert_identity;
mod cluster;
mod convert;
mod corruption;
pub(crate) mod errors;
mod forward;
#[cfg(not(madsim))]
mod gateway;
mod grpc_health;
mod header;
pub mod health;
mod kv;
mod lease;
mod maintenance;
mod sha256;
mod txn;
mod watch;

use std::sync::Arc;

use keel_core::kv::KvLimits;

pub use auth::{EtcdAuth, EtcdAuthServer};
pub use auth_token::HASH_ITERATIONS_MAX as AUTH_HASH_ITERATIONS_MAX;
#[cfg(not(madsim))]
pub use cert_identity::{CertIdentity, CertIdentityLayer};
pub use cluster::{EtcdCluster, EtcdClusterServer};
pub use grpc_health::{GrpcHealth, GrpcHealthServer};
pub use header::CLUSTER_ID;
pub use kv::{EtcdKv, EtcdKvServer};
pub use lease::{min_ttl_secs, EtcdLease, EtcdLeaseServer};
pub use maintenance::{snapshot_blob, EtcdMaintenance, EtcdMaintenanceServer};
pub use watch::{EtcdWatch, EtcdWatchServer};

use crate::node::{NodeConfig, NodeHandle};
use crate::service::{ServiceConfig, StreamCloser};

/// etcd's `GET /version` body: the etcd version Keel's etcd layer follows, as server and
/// cluster version (`{"etcdserver":"3.4.0","etcdcluster":"3.4.0"}`).
pub fn version_json() -> String {
    format!(r#"{{"etcdserver":"{version}","etcdcluster":"{version}"}}"#, version = maintenance::ETCD_VERSION)
}

/// What every etcd service of a node shares.
pub(crate) struct Shared {
    handle: NodeHandle,
    headers: header::Headers,
    limits: KvLimits,
    config: ServiceConfig,
    closer: StreamCloser,
    forwarder: forward::Forwarder,
    watch_slots: Arc<crate::service::WatcherSlots>,
    transfer_timeout_ms: u64,
    election_timeout_ms_max: u64,
    /// The scheme of the members' URLs in the Cluster API: `https` when the node serves TLS.
    url_scheme: &'static str,
    /// Bounds the password hashes computed at once (`auth_token::HASHES_IN_FLIGHT_MAX`).
    auth_hashing: tokio::sync::Semaphore,
}

/// What became of a proposed write.
pub(crate) enum Written {
    /// Applied on this node, the leader.
    Applied(keel_core::kv::ApplyResult),
    /// This node does not lead: the request goes to the hinted leader.
    Elsewhere(keel_core::LeaderHint),
}

impl Shared {
    /// Waits until this node has applied everything committed when the call arrived, confirmed
    /// by the leader (a ReadIndex round), so that a read of its state that follows is
    /// linearizable.
    pub(crate) async fn read_barrier(&self) -> Result<(), tonic::Status> {
        access::read_barrier(&self.handle).await
    }

    /// Checks `command` against the limits and replicates it; on a follower, says where the
    /// leader is. An error applying it is etcd's status for that error.
    pub(crate) async fn propose(&self, command: keel_core::kv::KvCommand) -> Result<Written, tonic::Status> {
        self.limits.validate(&command).map_err(|error| errors::of_kv(&error))?;
        match self.handle.write(command).await {
            Ok(result) => match &result.error {
                Some(error) => Err(errors::of_kv(error)),
                None => Ok(Written::Applied(result)),
            },
            Err(crate::node::ClientError::NotLeader(hint)) => Ok(Written::Elsewhere(hint)),
            Err(error) => Err(errors::of_client(&error)),
        }
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("etcd::Shared").field("node", &self.handle.id()).field("config", &self.config).finish()
    }
}

/// The etcd API of one node: builds the five gRPC services. Cheap to clone.
#[derive(Clone, Debug)]
pub struct EtcdApi {
    shared: Arc<Shared>,
}

impl EtcdApi {
    /// The etcd API of the node behind `handle`, configured as `node` (its key-value limits, its
    /// election timeout) with the client services' settings (message size, watch limits); its
    /// streams end when `closer` closes. Requests forwarded to the leader go over TLS when `tls`
    /// (the node's outbound TLS) is given.
    pub fn new(
        handle: NodeHandle,
        node: &NodeConfig,
        config: ServiceConfig,
        closer: StreamCloser,
        tls: Option<crate::tls_reload::OutboundTls>,
    ) -> Self {
        let watch_slots = crate::service::WatcherSlots::new(config.watchers_max.max(1));
        let url_scheme = if tls.is_some() { "https" } else { "http" };
        let forwarder = forward::Forwarder::new(u64::from(handle.id()), node.request_timeout_ms, tls);
        let shared = Shared {
            headers: header::Headers::new(handle.clone()),
            handle,
            limits: node.kv_limits,
            config,
            closer,
            forwarder,
            watch_slots,
            transfer_timeout_ms: node.raft.election_timeout_ms_max.saturating_mul(2),
            election_timeout_ms_max: node.raft.election_timeout_ms_max,
            url_scheme,
            auth_hashing: tokio::sync::Semaphore::new(auth_token::HASHES_IN_FLIGHT_MAX),
        };
        Self { shared: Arc::new(shared) }
    }

    /// The `etcdserverpb.KV` service.
    pub fn kv_server(&self) -> EtcdKvServer {
        kv::server(EtcdKv { shared: Arc::clone(&self.shared) }, self.shared.config.message_bytes_max)
    }

    /// The `etcdserverpb.Watch` service.
    pub fn watch_server(&self) -> EtcdWatchServer {
        watch::server(EtcdWatch { shared: Arc::clone(&self.shared) }, self.shared.config.message_bytes_max)
    }

    /// The `etcdserverpb.Lease` service.
    pub fn lease_server(&self) -> EtcdLeaseServer {
        lease::server(EtcdLease { shared: Arc::clone(&self.shared) })
    }

    /// The `etcdserverpb.Auth` service.
    pub fn auth_server(&self) -> EtcdAuthServer {
        auth::server(EtcdAuth { shared: Arc::clone(&self.shared) })
    }

    /// The `etcdserverpb.Cluster` service.
    pub fn cluster_server(&self) -> EtcdClusterServer {
        cluster::server(EtcdCluster { shared: Arc::clone(&self.shared) })
    }

    /// The `etcdserverpb.Maintenance` service.
    pub fn maintenance_server(&self) -> EtcdMaintenanceServer {
        maintenance::server(EtcdMaintenance { shared: Arc::clone(&self.shared) })
    }

    /// The gRPC health service, `grpc.health.v1.Health` (`grpc_health.rs`).
    pub fn grpc_health_server(&self) -> GrpcHealthServer {
        grpc_health::server(GrpcHealth { shared: Arc::clone(&self.shared) })
    }

    /// etcd's HTTP gateway (`gateway.rs`): these services as JSON over HTTP at etcd's paths
    /// (`POST /v3/kv/range`, `/v3/watch`, ...). Plain builds only.
    #[cfg(not(madsim))]
    pub fn http_gateway(&self) -> axum::Router {
        gateway::routes(self)
    }

    /// The server layer that logs a client certificate's common name in as an etcd user
    /// (`cert_identity.rs`). Plain builds only.
    #[cfg(not(madsim))]
    pub fn cert_identity_layer(&self) -> CertIdentityLayer {
        CertIdentityLayer { shared: Arc::clone(&self.shared) }
    }

    /// Starts the periodic corruption check ([`corruption`]) every `interval_ms`; `None` when
    /// `interval_ms` is 0 (off). Abort the task when the node stops.
    pub fn start_corruption_check(&self, interval_ms: u64) -> Option<tokio::task::JoinHandle<()>> {
        (interval_ms > 0).then(|| tokio::spawn(corruption::check_periodically(Arc::clone(&self.shared), interval_ms)))
    }
}
