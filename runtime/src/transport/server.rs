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
//! queue). Under light load one acknowledgement covers the batches of up to 10 ms; under heavy
//! load one goes out per half window, before the sender could wait for it. A malformed or
//! misaddressed batch ends the call with `INVALID_ARGUMENT`, none of its messages queued; a
//! stopped node ends it with `UNAVAILABLE`.

use keel::proto::raft::raft_peer_server::{RaftPeer, RaftPeerServer};
use keel::proto::raft::{DeliverResponse, RaftMessageBatch, StreamAck};
use keel_core::{Message, NodeId};
use tokio::sync::{mpsc, watch};
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status, Streaming};

use super::convert::{self, DecodeError};
pub use super::sender::DEFAULT_MESSAGE_BYTES_MAX;
use super::stream::STREAM_WINDOW_BATCHES;

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

/// Batches queued and not yet acknowledged after which the answer stream acknowledges at once:
/// half the sender's window, so that an acknowledgement is on its way well before the window
/// fills and the sender never waits for one while it has batches to send.
const ACK_EVERY_BATCHES: u64 = (STREAM_WINDOW_BATCHES / 2) as u64;

/// Longest an acknowledgement waits for more batches to cover. Under light load a batch is
/// acknowledged this long after it is queued rather than at once: acknowledging every batch cost
/// each side a socket write or read and a wake-up per batch, for a count the sender only needs
/// before its window fills (see above) and within its call deadline (seconds).
const ACK_DELAY_MS: u64 = 10;

/// The answer stream of a `Stream` call: cumulative acknowledgements of the batches queued,
/// coalesced (one per [`ACK_EVERY_BATCHES`] batches, or [`ACK_DELAY_MS`] after the first batch
/// it covers), and the call's end at once.
fn acknowledgements(progress: watch::Receiver<Progress>) -> BoxStream<StreamAck> {
    let stream = futures_util::stream::unfold(Some((progress, 0u64)), |state| async move {
        let (mut progress, acknowledged) = state?;
        loop {
            progress.changed().await.ok()?;
            let current = progress.borrow_and_update().clone();
            let settled = match current {
                Progress::Queued(batches) if batches == acknowledged => continue,
                Progress::Queued(batches) if batches - acknowledged < ACK_EVERY_BATCHES => {
                    coalesce(&mut progress, acknowledged).await
                }
                current => current,
            };
            return Some(match settled {
                Progress::Queued(batches) => (Ok(StreamAck { batches }), Some((progress, batches))),
                Progress::Ended(status) => (Err(status), None),
            });
        }
    });
    Box::pin(stream)
}

/// Waits until [`ACK_EVERY_BATCHES`] batches beyond `acknowledged` are queued, the call ends,
/// or [`ACK_DELAY_MS`] pass, and returns the progress then. A closed channel reads as the last
/// progress published (the receiving task always publishes its end before it stops).
async fn coalesce(progress: &mut watch::Receiver<Progress>, acknowledged: u64) -> Progress {
    let deadline = tokio::time::sleep(std::time::Duration::from_millis(ACK_DELAY_MS));
    let mut deadline = std::pin::pin!(deadline);
    loop {
        tokio::select! {
            biased;
            changed = progress.changed() => {
                if changed.is_err() {
                    return progress.borrow().clone();
                }
            }
            () = &mut deadline => return progress.borrow_and_update().clone(),
        }
        let current = progress.borrow_and_update().clone();
        match current {
            Progress::Queued(batches) if batches - acknowledged < ACK_EVERY_BATCHES => continue,
            current => return current,
        }
    }
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

#[cfg(all(test, not(madsim)))]
mod tests {
    use futures_util::{FutureExt, StreamExt};

    use super::*;

    /// The next acknowledgement, or `None` when the stream ended.
    fn batches(answer: Option<Result<StreamAck, Status>>) -> Option<u64> {
        answer.map(|ack| ack.map(|ack| ack.batches).unwrap_or_default())
    }

    /// A call's progress and answer stream after its first batch is queued.
    fn one_batch_queued() -> (watch::Sender<Progress>, BoxStream<StreamAck>) {
        let (progress, watcher) = watch::channel(Progress::Queued(0));
        let acks = acknowledgements(watcher);
        progress.send_replace(Progress::Queued(1));
        (progress, acks)
    }

    #[tokio::test]
    async fn a_lone_batch_is_acknowledged_with_those_queued_within_the_delay() {
        let (progress, mut acks) = one_batch_queued();
        let mut next = acks.next();
        assert!((&mut next).now_or_never().is_none(), "a single batch is not acknowledged at once");
        progress.send_replace(Progress::Queued(5));
        assert_eq!(batches(next.await), Some(5), "one acknowledgement covers the batches queued meanwhile");
        progress.send_replace(Progress::Queued(6));
        assert_eq!(batches(acks.next().await), Some(6), "a later lone batch is acknowledged after the delay");
    }

    #[tokio::test]
    async fn half_a_window_of_batches_is_acknowledged_at_once() {
        let (progress, mut acks) = one_batch_queued();
        let mut next = acks.next();
        assert!((&mut next).now_or_never().is_none());
        progress.send_replace(Progress::Queued(1 + ACK_EVERY_BATCHES));
        match (&mut next).now_or_never() {
            Some(answer) => assert_eq!(batches(answer), Some(1 + ACK_EVERY_BATCHES)),
            None => panic!("half a window must be acknowledged without waiting"),
        }
    }

    #[tokio::test]
    async fn the_end_of_the_call_is_answered_at_once_even_while_coalescing() {
        let (progress, mut acks) = one_batch_queued();
        let mut next = acks.next();
        assert!((&mut next).now_or_never().is_none());
        progress.send_replace(Progress::Ended(Status::unavailable(SHUTTING_DOWN)));
        match (&mut next).now_or_never() {
            Some(Some(Err(status))) => assert_eq!(status.message(), SHUTTING_DOWN),
            other => panic!("expected the call's end at once, got {other:?}"),
        }
        assert!(acks.next().await.is_none(), "nothing follows the end");
    }
}
