//! The receiving side of the peer transport: the `keel.raft.RaftPeer` service.
//!
//! `Deliver` decodes the whole batch first (any malformed message rejects the batch with
//! `INVALID_ARGUMENT` and nothing is queued), checks that every message is addressed to this
//! node, and hands the batch to the driver through a bounded queue without waiting: when the
//! queue is full the call fails with `RESOURCE_EXHAUSTED` and the sender drops the batch (Raft
//! tolerates lost messages). The call returns as soon as the batch is queued.
//!
//! `Stream`, the long-lived form senders use, runs one task per call: it decodes each batch the
//! same way, waits for room in the driver's queue (backpressure through HTTP/2 flow control
//! rather than drops), and publishes the count of batches queued on a `watch` channel that the
//! answer stream turns into cumulative `StreamAck`s (so acknowledgements coalesce and never
//! queue). A malformed or misaddressed batch ends the call with `INVALID_ARGUMENT`, none of its
//! messages queued; a stopped node ends it with `UNAVAILABLE`.

use keel::proto::raft::raft_peer_server::{RaftPeer, RaftPeerServer};
use keel::proto::raft::{DeliverResponse, RaftMessageBatch, StreamAck};
use keel_core::{Message, NodeId};
use tokio::sync::{mpsc, watch};
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status, Streaming};

use super::convert::{self, DecodeError};
pub use super::sender::DEFAULT_MESSAGE_BYTES_MAX;

/// The message of the `UNAVAILABLE` status a peer stream ends with when this node shuts down;
/// senders recognise it and report a peer that left on purpose, not a failure.
pub(crate) const SHUTTING_DOWN: &str = "node is shutting down";

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
    /// Turns true when the server starts closing: open `Stream` calls then end at once.
    closing: Option<watch::Receiver<bool>>,
}

impl PeerService {
    /// The service of node `node_id`, queueing each decoded batch into `inbound`.
    pub fn new(node_id: NodeId, inbound: mpsc::Sender<Vec<Message>>) -> Self {
        Self { node_id, inbound, closing: None }
    }

    /// Ends every open and future `Stream` call with `UNAVAILABLE` once `closing` turns true.
    /// A server that drains its calls before stopping needs it: the peers' senders keep their
    /// streams open for as long as their own nodes run, so when a whole cluster stops at once
    /// each server would otherwise wait out its drain timeout for the others.
    pub fn closing_with(mut self, closing: watch::Receiver<bool>) -> Self {
        self.closing = Some(closing);
        self
    }
}

/// Resolves once `closing` turns true; never without one, or once its sender is gone unraised.
async fn closed(closing: Option<watch::Receiver<bool>>) {
    if let Some(mut closing) = closing {
        if closing.wait_for(|closed| *closed).await.is_ok() {
            return;
        }
    }
    std::future::pending::<()>().await;
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
    peer_server(PeerService::new(node_id, inbound_tx), message_bytes_max)
}

/// `service`, ready to serve, accepting and sending messages up to `message_bytes_max` bytes
/// encoded (see [`peer_service_with_limit`]).
pub fn peer_server(service: PeerService, message_bytes_max: usize) -> PeerServer {
    RaftPeerServer::new(service)
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

/// What a `Stream` call's receiving task reports to its answer stream.
#[derive(Clone, Debug)]
enum Progress {
    /// This many batches are queued for the node.
    Queued(u64),
    /// The call ends with this status.
    Ended(Status),
}

impl PeerService {
    /// Queues every batch of `batches` in order, publishing progress, until the stream ends or
    /// a batch is refused.
    async fn receive(self, mut batches: Streaming<RaftMessageBatch>, progress: watch::Sender<Progress>) {
        let mut queued = 0u64;
        let mut closed = std::pin::pin!(closed(self.closing.clone()));
        let ended = loop {
            // `biased`: no random branch order, so that a simulated run depends on its seed alone.
            let received = tokio::select! {
                biased;
                () = &mut closed => break Status::unavailable(SHUTTING_DOWN),
                received = batches.message() => received,
            };
            let batch = match received {
                Ok(Some(batch)) => batch,
                Ok(None) | Err(_) => return,
            };
            let messages = match decode_batch(self.node_id, batch) {
                Ok(messages) => messages,
                Err(error) => {
                    tracing::warn!(node = self.node_id, %error, "peer stream refused");
                    break Status::invalid_argument(error.to_string());
                }
            };
            if !messages.is_empty() && self.inbound.send(messages).await.is_err() {
                break Status::unavailable(SHUTTING_DOWN);
            }
            queued += 1;
            progress.send_replace(Progress::Queued(queued));
        };
        progress.send_replace(Progress::Ended(ended));
    }
}

/// The answer stream of a `Stream` call: the latest progress each time it changes.
fn acknowledgements(progress: watch::Receiver<Progress>) -> BoxStream<StreamAck> {
    let stream = futures_util::stream::unfold(Some(progress), |progress| async move {
        let mut progress = progress?;
        progress.changed().await.ok()?;
        let current = progress.borrow_and_update().clone();
        match current {
            Progress::Queued(batches) => Some((Ok(StreamAck { batches }), Some(progress))),
            Progress::Ended(status) => Some((Err(status), None)),
        }
    });
    Box::pin(stream)
}

#[tonic::async_trait]
impl RaftPeer for PeerService {
    type StreamStream = BoxStream<StreamAck>;

    async fn stream(
        &self,
        request: Request<Streaming<RaftMessageBatch>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        let (progress, watcher) = watch::channel(Progress::Queued(0));
        tokio::spawn(self.clone().receive(request.into_inner(), progress));
        Ok(Response::new(acknowledgements(watcher)))
    }

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
            Err(mpsc::error::TrySendError::Closed(_)) => Err(Status::unavailable(SHUTTING_DOWN)),
        }
    }
}
