//! The gRPC health service (`grpc.health.v1.Health`) on the node's client address, as etcd
//! serves it: what gRPC load balancers, service meshes and Kubernetes' `grpc` probes ask.
//!
//! A node is `SERVING` when etcd's `/health` check passes (`health.rs`: no alarm raised, a
//! leader known, a linearizable one-key read within a second) and `NOT_SERVING` otherwise, so a
//! balancer stops sending to a member that cannot serve linearizable requests. The service name
//! `""` stands for the whole node, and each service the node serves answers the same; any other
//! name is `NOT_FOUND` to `Check` and `SERVICE_UNKNOWN` on a `Watch` stream, as the protocol
//! says.
//!
//! `Watch` sends the status at once and then checks again every [`WATCH_CHECK_INTERVAL`],
//! sending only changes. Its streams count against `watchers_max` with the etcd watch streams;
//! beyond, the call is refused with `RESOURCE_EXHAUSTED`. They end when the node shuts down.

use std::time::Duration;

use keel::proto::health::health_check_response::ServingStatus;
use keel::proto::health::health_server::{Health, HealthServer};
use keel::proto::health::{HealthCheckRequest, HealthCheckResponse};
use tokio::sync::{mpsc, watch};
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status};

use super::health::{self, HealthQuery};
use super::Shared;
use crate::node::NodeHandle;
use crate::service::{send_or_stop, ChannelStream, WatcherSlot};

/// How often a `Watch` stream checks the node again.
pub const WATCH_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// The service names a node answers for: the whole node, and each service it serves.
const SERVICES: [&str; 9] = [
    "",
    "etcdserverpb.KV",
    "etcdserverpb.Watch",
    "etcdserverpb.Lease",
    "etcdserverpb.Cluster",
    "etcdserverpb.Maintenance",
    "keel.client.RaftClientService",
    "keel.admin.ClusterAdmin",
    "grpc.health.v1.Health",
];

/// The `grpc.health.v1.Health` service of one node.
#[derive(Clone)]
pub struct GrpcHealth {
    pub(super) shared: std::sync::Arc<Shared>,
}

/// The gRPC server type of [`GrpcHealth`].
#[cfg(not(madsim))]
pub type GrpcHealthServer = HealthServer<GrpcHealth>;
/// The gRPC server type of [`GrpcHealth`] (the simulated stubs carry an interceptor type).
#[cfg(madsim)]
pub type GrpcHealthServer = HealthServer<GrpcHealth, tonic::codegen::IdentityInterceptor>;

pub(super) fn server(health: GrpcHealth) -> GrpcHealthServer {
    HealthServer::new(health)
}

/// The node's status now, as the protocol names it.
async fn status_of(handle: &NodeHandle) -> ServingStatus {
    if health::check(handle, &HealthQuery::default()).await.healthy {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    }
}

fn answer(status: ServingStatus) -> HealthCheckResponse {
    HealthCheckResponse { status: status as i32 }
}

/// Sends the status of `handle` on `output` at once and at each change, until the client goes
/// away or the node shuts down; for a service the node does not serve (`handle` is `None`),
/// `SERVICE_UNKNOWN` once, the stream staying open as the protocol asks. The slot is held (and
/// counted) until then.
async fn watch_status(
    handle: Option<NodeHandle>,
    output: mpsc::Sender<Result<HealthCheckResponse, Status>>,
    mut closing: watch::Receiver<bool>,
    _slot: WatcherSlot,
) {
    let mut sent = None;
    let mut ticks = tokio::time::interval(WATCH_CHECK_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // `biased`: no random branch order, so that a simulated run depends on its seed alone.
        tokio::select! {
            biased;
            _ = closing.wait_for(|closed| *closed) => return,
            () = output.closed() => return,
            _ = ticks.tick() => {}
        }
        let status = match &handle {
            Some(handle) => status_of(handle).await,
            None => ServingStatus::ServiceUnknown,
        };
        if sent != Some(status) {
            if !send_or_stop(&output, Ok(answer(status)), &mut closing).await {
                return;
            }
            sent = Some(status);
        }
    }
}

#[tonic::async_trait]
impl Health for GrpcHealth {
    async fn check(&self, request: Request<HealthCheckRequest>) -> Result<Response<HealthCheckResponse>, Status> {
        let service = request.into_inner().service;
        if !SERVICES.contains(&service.as_str()) {
            // The name is not echoed: it is the client's own, and may be as long as a message.
            return Err(Status::not_found("unknown service: ask about \"\" (the whole node) or a service it serves"));
        }
        Ok(Response::new(answer(status_of(&self.shared.handle).await)))
    }

    type WatchStream = BoxStream<HealthCheckResponse>;

    async fn watch(&self, request: Request<HealthCheckRequest>) -> Result<Response<Self::WatchStream>, Status> {
        let service = request.into_inner().service;
        let handle = SERVICES.contains(&service.as_str()).then(|| self.shared.handle.clone());
        let Some(slot) = self.shared.watch_slots.acquire() else {
            return Err(Status::resource_exhausted(format!(
                "too many watch streams on this node (watchers_max = {}); retry later or ask with Check",
                self.shared.config.watchers_max
            )));
        };
        let (output, receiver) = mpsc::channel(1);
        let closing = self.shared.closer.subscribe();
        tokio::spawn(watch_status(handle, output, closing, slot));
        Ok(Response::new(Box::pin(ChannelStream::new(receiver))))
    }
}
