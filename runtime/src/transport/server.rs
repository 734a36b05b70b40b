//! The receiving side of the peer transport: the `keel.raft.RaftPeer` service.
//!
//! `Deliver` decodes the whole batch first (any malformed message rejects the batch with
//! `INVALID_ARGUMENT` and nothing is queued), checks that every message is addressed to this
//! node, and hands the batch to the driver through a bounded queue without waiting: when the
//! queue is full the call fails with `RESOURCE_EXHAUSTED` and the sender drops the batch (Raft
//! tolerates lost messages). The call returns as soon as the batch is queued.

use keel::proto::raft::raft_peer_server::{RaftPeer, RaftPeerServer};
use keel::proto::raft::{DeliverResponse, RaftMessageBatch};
use keel_core::{Message, NodeId};
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};

use super::convert::{self, DecodeError};
pub use super::sender::DEFAULT_MESSAGE_BYTES_MAX;

/// The gRPC server type that serves [`PeerService`] (`add_service` it to a
/// `tonic::transport::Server`).
#[cfg(not(madsim))]
pub type PeerServer = RaftPeerServer<PeerService>;
/// The gRPC server type that serves [`PeerService`] (`add_service` it to a
/// `tonic::transport::Server`). The simulated stubs carry an interceptor type parameter.
#[cfg(madsim)]
pub type PeerServer = RaftPeerServer<PeerService, tonic::codegen::IdentityInterceptor>;

/// The `RaftPeer` implementation of one node: decodes batches and queues them for its driver.
#[derive(Debug, Clone)]
pub struct PeerService {
    node_id: NodeId,
    inbound: mpsc::Sender<Vec<Message>>,
}

impl PeerService {
    /// The service of node `node_id`, queueing each decoded batch into `inbound`.
    pub fn new(node_id: NodeId, inbound: mpsc::Sender<Vec<Message>>) -> Self {
        Self { node_id, inbound }
    }
}

/// The peer service of `node_id`, ready to serve, accepting messages up to
/// [`DEFAULT_MESSAGE_BYTES_MAX`] bytes encoded.
pub fn peer_service(node_id: NodeId, inbound_tx: mpsc::Sender<Vec<Message>>) -> PeerServer {
    peer_service_with_limit(node_id, inbound_tx, DEFAULT_MESSAGE_BYTES_MAX)
}

/// The peer service of `node_id`, accepting and sending messages up to `message_bytes_max`
/// bytes encoded (keep it above the snapshot chunk size plus a full batch). The limit is not
/// exercised under madsim, where messages are passed as objects.
pub fn peer_service_with_limit(
    node_id: NodeId,
    inbound_tx: mpsc::Sender<Vec<Message>>,
    message_bytes_max: usize,
) -> PeerServer {
    RaftPeerServer::new(PeerService::new(node_id, inbound_tx))
        .max_decoding_message_size(message_bytes_max)
        .max_encoding_message_size(message_bytes_max)
}

/// Decodes a whole batch for node `node_id`: every message must decode and be addressed to it.
pub fn decode_batch(node_id: NodeId, batch: RaftMessageBatch) -> Result<Vec<Message>, DecodeError> {
    batch
        .messages
        .into_iter()
        .map(|wire| {
            let message = convert::message_from_wire(wire)?;
            if message.to != node_id {
                return Err(DecodeError(format!(
                    "message from node {} is addressed to node {}, but this is node {node_id}",
                    message.from, message.to
                )));
            }
            Ok(message)
        })
        .collect()
}

#[tonic::async_trait]
impl RaftPeer for PeerService {
    async fn deliver(&self, request: Request<RaftMessageBatch>) -> Result<Response<DeliverResponse>, Status> {
        let messages = match decode_batch(self.node_id, request.into_inner()) {
            Ok(messages) => messages,
            Err(error) => {
                tracing::warn!(node = self.node_id, %error, "peer batch refused");
                return Err(Status::invalid_argument(error.to_string()));
            }
        };
        if messages.is_empty() {
            return Ok(Response::new(DeliverResponse {}));
        }
        match self.inbound.try_send(messages) {
            Ok(()) => Ok(Response::new(DeliverResponse {})),
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::debug!(node = self.node_id, "inbound queue full; peer batch refused");
                Err(Status::resource_exhausted("inbound queue full; retry later"))
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(Status::unavailable("node is shutting down")),
        }
    }
}
