//! The sending side of the peer transport: one task per peer, fed by a bounded queue.
//!
//! [`PeerSender::send`] never blocks the driver: it queues the message or, when the queue is
//! full, drops it and counts the drop (Raft tolerates lost messages and retransmits what
//! matters). The peer's task drains the queue in batches (at most
//! [`TransportConfig::batch_messages_max`] messages and about
//! [`TransportConfig::batch_bytes_max`] bytes) and sends the batches, in send order, on one
//! long-lived `RaftPeer.Stream` call (`stream.rs`): a gRPC call per batch would cost more CPU
//! than the batch itself under load. Up to `STREAM_WINDOW_BATCHES` batches are in flight; the
//! receiver acknowledges them cumulatively, and only acknowledged messages count as sent.
//!
//! Any failure — connection refused, `UNAVAILABLE`, `CANCELLED`, a stream that cannot be opened
//! or acknowledges nothing within the call deadline, or one the receiver ends — drops the batch
//! being sent and every unacknowledged one, tears the connection down, and the task waits an
//! exponential backoff with jitter before it reconnects. The jitter comes from a [`Rng`] seeded
//! from the node and peer ids, so a simulation replays the same delays from the same seed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use keel::proto::raft::raft_peer_client::RaftPeerClient;
use keel::proto::raft::RaftMessageBatch;
use keel_core::{Entry, Message, MessageBody, NodeId, Rng};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tonic::Code;

use super::convert;
use super::stream::{Delivered, PeerStream};

/// Default limit on the size of one encoded gRPC message, both ways: well above the default
/// snapshot chunk (1 MiB) and a full batch of entries.
pub const DEFAULT_MESSAGE_BYTES_MAX: usize = 16 << 20;

/// Size charged to every message on top of its payload when batches are measured.
const MESSAGE_OVERHEAD_BYTES: u64 = 32;

/// Limits and timings of the peer transport.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransportConfig {
    /// Messages waiting per peer; a message sent while the queue is full is dropped.
    pub queue_messages_max: usize,
    /// Messages per `Deliver` call at most.
    pub batch_messages_max: usize,
    /// Approximate bytes per `Deliver` call (entry payloads, snapshot chunk data and a fixed
    /// overhead per message). A single larger message still travels alone.
    pub batch_bytes_max: u64,
    /// Deadline of one call, connecting included; a call that stalls longer counts as failed.
    pub call_timeout_ms: u64,
    /// First backoff after a failure.
    pub backoff_ms_min: u64,
    /// Longest backoff after repeated failures.
    pub backoff_ms_max: u64,
    /// Largest encoded message the client sends or accepts.
    pub message_bytes_max: usize,
    /// Dial peers over TLS with these settings, as they are when a connection opens; `None`:
    /// plain text. A node server sets it from `ServerConfig::tls` (see `crate::tls` and
    /// `crate::tls_reload`), so that its listener and its links agree.
    pub tls: Option<crate::tls_reload::OutboundTls>,
}

impl Default for TransportConfig {
    fn default() -> Self {
        Self {
            queue_messages_max: 1024,
            batch_messages_max: 64,
            batch_bytes_max: 4 << 20,
            call_timeout_ms: 2_000,
            backoff_ms_min: 20,
            backoff_ms_max: 1_000,
            message_bytes_max: DEFAULT_MESSAGE_BYTES_MAX,
            tls: None,
        }
    }
}

impl TransportConfig {
    /// The same limits with zeroes raised to one and `backoff_ms_max >= backoff_ms_min`, so that
    /// no setting can panic a channel constructor or stop a sender.
    pub fn normalized(&self) -> Self {
        Self {
            queue_messages_max: self.queue_messages_max.max(1),
            batch_messages_max: self.batch_messages_max.max(1),
            batch_bytes_max: self.batch_bytes_max.max(1),
            call_timeout_ms: self.call_timeout_ms.max(1),
            backoff_ms_min: self.backoff_ms_min.max(1),
            backoff_ms_max: self.backoff_ms_max.max(self.backoff_ms_min.max(1)),
            message_bytes_max: self.message_bytes_max.max(1),
            tls: self.tls.clone(),
        }
    }

    fn call_timeout(&self) -> Duration {
        Duration::from_millis(self.call_timeout_ms)
    }
}

/// Counters of the peer transport, shared by all its senders. Read them with
/// [`TransportStats::snapshot`].
#[derive(Debug, Default)]
pub struct TransportStats {
    sent: AtomicU64,
    batches: AtomicU64,
    dropped_queue_full: AtomicU64,
    dropped_send_failed: AtomicU64,
    dropped_unknown_peer: AtomicU64,
    failed_calls: AtomicU64,
}

/// A copy of the [`TransportStats`] counters at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TransportStatsSnapshot {
    /// Messages the receiver acknowledged.
    pub sent: u64,
    /// Batches the receiver acknowledged.
    pub batches: u64,
    /// Messages dropped because the peer's queue was full.
    pub dropped_queue_full: u64,
    /// Messages dropped with a failed call (unreachable, timed out, rejected or overloaded peer).
    pub dropped_send_failed: u64,
    /// Messages addressed to a node that is not a peer.
    pub dropped_unknown_peer: u64,
    /// Failed `Deliver` calls (connection failures included).
    pub failed_calls: u64,
}

impl TransportStats {
    /// The current values of all counters.
    pub fn snapshot(&self) -> TransportStatsSnapshot {
        TransportStatsSnapshot {
            sent: self.sent.load(Ordering::Relaxed),
            batches: self.batches.load(Ordering::Relaxed),
            dropped_queue_full: self.dropped_queue_full.load(Ordering::Relaxed),
            dropped_send_failed: self.dropped_send_failed.load(Ordering::Relaxed),
            dropped_unknown_peer: self.dropped_unknown_peer.load(Ordering::Relaxed),
            failed_calls: self.failed_calls.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn count_unknown_peer(&self) {
        self.dropped_unknown_peer.fetch_add(1, Ordering::Relaxed);
    }
}

/// The handle of one peer's sender task. Dropping it aborts the task (queued messages are lost).
#[derive(Debug)]
pub struct PeerSender {
    peer_id: NodeId,
    address: String,
    queue: mpsc::Sender<Message>,
    stats: Arc<TransportStats>,
    task: JoinHandle<()>,
}

impl PeerSender {
    /// Starts the task that sends `node_id`'s messages to `peer_id` at `address` (`host:port`),
    /// counting into `stats`. It connects on the first batch. Must be called inside a tokio (or
    /// madsim) runtime.
    pub fn spawn(
        node_id: NodeId,
        peer_id: NodeId,
        address: String,
        config: &TransportConfig,
        stats: Arc<TransportStats>,
    ) -> Self {
        let config = config.normalized();
        let (queue, receiver) = mpsc::channel(config.queue_messages_max);
        let task = SenderTask {
            node_id,
            peer_id,
            address: address.clone(),
            rng: Rng::new(backoff_seed(node_id, peer_id)),
            config,
            queue: receiver,
            carry: None,
            client: None,
            stream: None,
            stats: Arc::clone(&stats),
            failures: 0,
        };
        let task = tokio::spawn(task.run());
        Self { peer_id, address, queue, stats, task }
    }

    /// Queues `message` without waiting. Returns false, and counts the drop, when the queue is
    /// full (or the task has stopped).
    pub fn send(&self, message: Message) -> bool {
        match self.queue.try_send(message) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(message)) | Err(mpsc::error::TrySendError::Closed(message)) => {
                self.stats.dropped_queue_full.fetch_add(1, Ordering::Relaxed);
                tracing::trace!(peer = self.peer_id, kind = message.body.kind(), "peer queue full; message dropped");
                false
            }
        }
    }

    /// The peer this sender delivers to.
    pub fn peer_id(&self) -> NodeId {
        self.peer_id
    }

    /// The peer's address (`host:port`).
    pub fn address(&self) -> &str {
        &self.address
    }
}

impl Drop for PeerSender {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Why a batch was not delivered. Only the code and text of a gRPC status are kept.
#[derive(Debug)]
pub(crate) enum CallError {
    /// The address does not form a valid URI.
    InvalidAddress(String),
    /// The connection could not be established.
    Connect(String),
    /// The peer did not answer within the deadline (opening the stream, or acknowledging).
    Timeout,
    /// The call failed with a gRPC status.
    Status { code: Code, message: String },
}

impl CallError {
    /// Whether the peer ended the call because it is shutting down (an expected, orderly end).
    pub(crate) fn is_peer_shutdown(&self) -> bool {
        matches!(self, Self::Status { code: Code::Unavailable, message } if message == super::server::SHUTTING_DOWN)
    }
}

impl From<tonic::Status> for CallError {
    fn from(status: tonic::Status) -> Self {
        Self::Status { code: status.code(), message: status.message().to_owned() }
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::InvalidAddress(error) => write!(f, "invalid peer address: {error}"),
            Self::Connect(error) => write!(f, "cannot connect: {error}"),
            Self::Timeout => write!(f, "call deadline exceeded"),
            Self::Status { code, message } => write!(f, "{code:?}: {message}"),
        }
    }
}

/// The state of one peer's sender task.
struct SenderTask {
    node_id: NodeId,
    peer_id: NodeId,
    address: String,
    config: TransportConfig,
    queue: mpsc::Receiver<Message>,
    /// A message taken from the queue that did not fit in the previous batch.
    carry: Option<Message>,
    /// The open connection, if any.
    client: Option<RaftPeerClient<Channel>>,
    /// The open stream on it, if any.
    stream: Option<PeerStream>,
    stats: Arc<TransportStats>,
    rng: Rng,
    /// Consecutive failed calls.
    failures: u32,
}

/// What woke a sender task.
enum Step {
    /// A batch to send, or `None` once the queue is closed.
    Batch(Option<Vec<Message>>),
    /// An acknowledgement, or the end of the stream.
    Acknowledged(Result<Delivered, CallError>),
}

impl SenderTask {
    async fn run(mut self) {
        let timeout = self.config.call_timeout();
        loop {
            let taking = self.stream.as_ref().is_none_or(|stream| !stream.is_full());
            // `biased` (no random branch order, so that a simulated run depends on its seed
            // alone), acknowledgements first: they are ready only for batches already sent, so
            // they cannot starve the queue, and they free room on a full stream.
            let step = tokio::select! {
                biased;
                delivered = acknowledged(&mut self.stream, timeout), if self.stream.is_some() => {
                    Step::Acknowledged(delivered)
                }
                batch = next_batch(&mut self.queue, &mut self.carry, &self.config), if taking => Step::Batch(batch),
            };
            match step {
                Step::Batch(None) => break,
                Step::Batch(Some(batch)) => self.send(batch).await,
                Step::Acknowledged(Ok(delivered)) => {
                    self.stats.sent.fetch_add(delivered.messages, Ordering::Relaxed);
                    self.stats.batches.fetch_add(delivered.batches, Ordering::Relaxed);
                    if self.failures > 0 {
                        tracing::info!(node = self.node_id, peer = self.peer_id, "peer reachable again");
                    }
                    self.failures = 0;
                }
                Step::Acknowledged(Err(error)) => self.fail_stream(error).await,
            }
        }
    }

    /// Sends `batch` on the stream, opening it (and connecting) first if needed.
    async fn send(&mut self, batch: Vec<Message>) {
        let count = batch.len() as u64;
        let stream = match self.stream.as_mut() {
            Some(stream) => stream,
            None => match self.open().await {
                Ok(stream) => self.stream.insert(stream),
                Err(error) => return self.back_off(count, &error).await,
            },
        };
        let wire = RaftMessageBatch { messages: batch.iter().map(convert::message_to_wire).collect() };
        if let Err(error) = stream.send(wire, count) {
            // Not handed over: dropped with the stream's unacknowledged messages.
            self.stats.dropped_send_failed.fetch_add(count, Ordering::Relaxed);
            self.fail_stream(error).await;
        }
    }

    /// Tears the stream and its connection down, counting its unacknowledged messages as
    /// dropped, and waits before the next attempt.
    async fn fail_stream(&mut self, error: CallError) {
        let lost = self.stream.take().map_or(0, |stream| stream.unacked_messages());
        self.client = None;
        self.back_off(lost, &error).await;
    }

    /// Counts the dropped messages and the failed call, and waits before the next attempt.
    async fn back_off(&mut self, count: u64, error: &CallError) {
        self.stats.dropped_send_failed.fetch_add(count, Ordering::Relaxed);
        self.stats.failed_calls.fetch_add(1, Ordering::Relaxed);
        self.failures = self.failures.saturating_add(1);
        let delay = backoff_delay(&self.config, self.failures, &mut self.rng);
        let (node, peer, address) = (self.node_id, self.peer_id, self.address.as_str());
        if self.failures == 1 && error.is_peer_shutdown() {
            tracing::info!(node, peer, address, dropped = count, "peer is shutting down; backing off");
        } else if self.failures == 1 {
            tracing::warn!(node, peer, address, %error, dropped = count, "peer call failed; backing off");
        } else {
            tracing::debug!(node, peer, address, %error, dropped = count, ?delay, "peer call failed again");
        }
        tokio::time::sleep(delay).await;
    }

    /// Opens the stream, connecting first if needed, each under the call deadline.
    async fn open(&mut self) -> Result<PeerStream, CallError> {
        let timeout = self.config.call_timeout();
        let mut client = match self.client.take() {
            Some(client) => client,
            None => tokio::time::timeout(timeout, connect(&self.address, &self.config))
                .await
                .map_err(|_| CallError::Timeout)??,
        };
        let stream = PeerStream::open(&mut client, timeout).await?;
        self.client = Some(client);
        Ok(stream)
    }
}

/// Connects to the peer at `address` (a free function: the task holds a stream that is not
/// `Sync` under madsim, so no `&SenderTask` may live across an await).
async fn connect(address: &str, config: &TransportConfig) -> Result<RaftPeerClient<Channel>, CallError> {
    let tls = config.tls.as_ref().map(crate::tls_reload::OutboundTls::current);
    let endpoint = keel::tls::endpoint(address, tls.as_ref())
        .map_err(CallError::InvalidAddress)?
        .connect_timeout(config.call_timeout());
    let channel = endpoint.connect().await.map_err(|error| CallError::Connect(error.to_string()))?;
    Ok(RaftPeerClient::new(channel)
        .max_decoding_message_size(config.message_bytes_max)
        .max_encoding_message_size(config.message_bytes_max))
}

/// The next acknowledgement of `stream` (never, without one).
async fn acknowledged(stream: &mut Option<PeerStream>, timeout: Duration) -> Result<Delivered, CallError> {
    match stream {
        Some(stream) => stream.acknowledged(timeout).await,
        None => std::future::pending().await,
    }
}

/// The next batch in queue order, or `None` once the queue is closed and empty. Cancel-safe:
/// it waits only for the first message.
async fn next_batch(
    queue: &mut mpsc::Receiver<Message>,
    carry: &mut Option<Message>,
    config: &TransportConfig,
) -> Option<Vec<Message>> {
    let first = match carry.take() {
        Some(message) => message,
        None => queue.recv().await?,
    };
    let mut bytes = approx_bytes(&first);
    let mut batch = vec![first];
    while batch.len() < config.batch_messages_max {
        let Ok(next) = queue.try_recv() else { break };
        let size = approx_bytes(&next);
        if bytes.saturating_add(size) > config.batch_bytes_max {
            *carry = Some(next);
            break;
        }
        bytes += size;
        batch.push(next);
    }
    Some(batch)
}

/// Seed of a sender's backoff jitter: distinct per (node, peer) pair, fixed across runs.
fn backoff_seed(node_id: NodeId, peer_id: NodeId) -> u64 {
    ((u64::from(node_id) << 32) | u64::from(peer_id)) ^ 0x6B65_656C_5F74_7870
}

/// The wait after the `failures`-th consecutive failure: the exponential step
/// `backoff_ms_min * 2^(failures - 1)`, capped at `backoff_ms_max`, then a uniform draw from its
/// upper half (never below `backoff_ms_min`), so that senders do not retry in lockstep.
pub(crate) fn backoff_delay(config: &TransportConfig, failures: u32, rng: &mut Rng) -> Duration {
    let exponent = failures.saturating_sub(1).min(32);
    let step = config.backoff_ms_min.saturating_mul(1u64 << exponent).min(config.backoff_ms_max);
    let low = (step / 2).max(config.backoff_ms_min).min(step);
    Duration::from_millis(rng.range(low, step + 1))
}

/// Approximate size of a message for batching: payloads plus a fixed overhead.
fn approx_bytes(message: &Message) -> u64 {
    let payload = match &message.body {
        MessageBody::AppendEntries { entries, .. } => entries.iter().map(Entry::size_bytes).sum(),
        MessageBody::InstallSnapshot { data, .. } => data.len() as u64,
        MessageBody::ReadIndexRequest { read_ids } | MessageBody::ReadIndexResponse { read_ids, .. } => {
            8 * read_ids.len() as u64
        }
        _ => 0,
    };
    MESSAGE_OVERHEAD_BYTES + payload
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_stays_bounded_and_replays_from_the_ids() {
        let config = TransportConfig { backoff_ms_min: 10, backoff_ms_max: 300, ..TransportConfig::default() };
        let delays = |node, peer| {
            let mut rng = Rng::new(backoff_seed(node, peer));
            (1..=40).map(|failures| backoff_delay(&config, failures, &mut rng)).collect::<Vec<_>>()
        };
        let first = delays(1, 2);
        assert_eq!(first, delays(1, 2), "same ids, same delays");
        assert_ne!(first, delays(2, 1), "another pair draws other delays");
        for (i, delay) in first.iter().enumerate() {
            let step = (10u64 << i.min(32)).min(300);
            let ms = delay.as_millis() as u64;
            assert!((10..=300).contains(&ms), "delay {ms} ms out of bounds");
            assert!(ms <= step && ms >= (step / 2).max(10), "failure {}: {ms} ms vs step {step}", i + 1);
        }
        assert!(first[0] < first[10], "backoff grows");
    }

    #[test]
    fn only_the_peers_own_shutdown_status_counts_as_an_orderly_end() {
        let status = |code, message: &str| CallError::from(tonic::Status::new(code, message));
        assert!(status(Code::Unavailable, super::super::server::SHUTTING_DOWN).is_peer_shutdown());
        assert!(!status(Code::Unavailable, "connection reset").is_peer_shutdown());
        assert!(!status(Code::Internal, super::super::server::SHUTTING_DOWN).is_peer_shutdown());
        assert!(!CallError::Timeout.is_peer_shutdown());
    }

    #[test]
    fn degenerate_settings_are_normalized() {
        let config = TransportConfig {
            queue_messages_max: 0,
            batch_messages_max: 0,
            backoff_ms_min: 50,
            backoff_ms_max: 5,
            ..TransportConfig::default()
        }
        .normalized();
        assert_eq!((config.queue_messages_max, config.batch_messages_max), (1, 1));
        assert_eq!((config.backoff_ms_min, config.backoff_ms_max), (50, 50));
        let mut rng = Rng::new(1);
        assert_eq!(backoff_delay(&config, u32::MAX, &mut rng), Duration::from_millis(50));
    }
}
