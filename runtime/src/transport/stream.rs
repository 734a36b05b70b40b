//! One sender's long-lived `RaftPeer.Stream` call to its peer: batches go out on the request
//! side in send order, cumulative [`StreamAck`]s come back on the answer side.
//!
//! The sender counts a batch as delivered when its acknowledgement arrives. At most
//! [`STREAM_WINDOW_BATCHES`] batches are unacknowledged at a time; while the window is full the
//! sender takes nothing more from its queue (which then fills, and the driver's messages are
//! dropped there, as before). A call that answers nothing for the call deadline while batches
//! wait for their acknowledgement is stalled: the sender tears it down, counts the unacknowledged
//! messages as dropped, and reconnects after its backoff.

use std::collections::VecDeque;
use std::time::Duration;

use keel::proto::raft::raft_peer_client::RaftPeerClient;
use keel::proto::raft::{RaftMessageBatch, StreamAck};
use tokio::sync::mpsc;
use tonic::transport::Channel;
use tonic::Streaming;

use super::sender::CallError;

/// Batches sent and not yet acknowledged, at most.
pub(crate) const STREAM_WINDOW_BATCHES: usize = 16;

/// The open call.
pub(crate) struct PeerStream {
    /// The request side: batches queued here are sent in order.
    batches: mpsc::Sender<RaftMessageBatch>,
    /// The answer side.
    acks: Streaming<StreamAck>,
    /// Message count of each unacknowledged batch, oldest first.
    unacked: VecDeque<u64>,
    /// Batches acknowledged so far on this call.
    acked: u64,
}

/// What one acknowledgement confirmed.
pub(crate) struct Delivered {
    /// Batches newly acknowledged.
    pub batches: u64,
    /// Messages in them.
    pub messages: u64,
}

impl PeerStream {
    /// Opens the call on `client`; fails when the peer does not answer within `timeout`.
    pub(crate) async fn open(client: &mut RaftPeerClient<Channel>, timeout: Duration) -> Result<Self, CallError> {
        let (batches, queue) = mpsc::channel(STREAM_WINDOW_BATCHES);
        let outbound =
            futures_util::stream::unfold(
                queue,
                |mut queue| async move { queue.recv().await.map(|batch| (batch, queue)) },
            );
        let opened = tokio::time::timeout(timeout, client.stream(outbound)).await;
        let acks = match opened {
            Ok(Ok(response)) => response.into_inner(),
            Ok(Err(status)) => return Err(CallError::from(status)),
            Err(_) => return Err(CallError::Timeout),
        };
        Ok(Self { batches, acks, unacked: VecDeque::with_capacity(STREAM_WINDOW_BATCHES), acked: 0 })
    }

    /// Whether the window is full: wait for an acknowledgement before sending more.
    pub(crate) fn is_full(&self) -> bool {
        self.unacked.len() >= STREAM_WINDOW_BATCHES
    }

    /// Messages sent and not yet acknowledged.
    pub(crate) fn unacked_messages(&self) -> u64 {
        self.unacked.iter().sum()
    }

    /// Sends `batch` of `count` messages (the window has room, so this does not wait).
    pub(crate) fn send(&mut self, batch: RaftMessageBatch, count: u64) -> Result<(), CallError> {
        self.batches.try_send(batch).map_err(|_| CallError::Status {
            code: tonic::Code::Unavailable,
            message: "the peer stream has ended".into(),
        })?;
        self.unacked.push_back(count);
        Ok(())
    }

    /// The next acknowledgement. With batches unacknowledged, fails as stalled after `timeout`
    /// without one; otherwise waits as long as the call lives. Fails when the call ends.
    pub(crate) async fn acknowledged(&mut self, timeout: Duration) -> Result<Delivered, CallError> {
        let message = if self.unacked.is_empty() {
            self.acks.message().await
        } else {
            tokio::time::timeout(timeout, self.acks.message()).await.map_err(|_| CallError::Timeout)?
        };
        let ack = match message {
            Ok(Some(ack)) => ack,
            Ok(None) => {
                return Err(CallError::Status {
                    code: tonic::Code::Unavailable,
                    message: "the peer ended the stream".into(),
                })
            }
            Err(status) => return Err(CallError::from(status)),
        };
        let newly = ack.batches.saturating_sub(self.acked).min(self.unacked.len() as u64);
        self.acked += newly;
        let messages = self.unacked.drain(..newly as usize).sum();
        Ok(Delivered { batches: newly, messages })
    }
}
