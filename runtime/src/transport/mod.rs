//! The peer transport: consensus messages between nodes over gRPC (`keel.raft.RaftPeer`).
//!
//! Data flow: the node's driver hands each outgoing `keel_core::Message` to
//! [`PeerTransport::send`], which routes it to the sender task of its destination
//! ([`sender::PeerSender`], one per peer, with a bounded queue that drops the newest message when
//! full — Raft tolerates lost messages); the task batches queued messages and sends them in order
//! on one long-lived `Stream` call per peer, acknowledged cumulatively, with a deadline on the
//! acknowledgements. On the receiving side [`server::PeerService`] decodes each batch
//! ([`convert`]) and queues it for its driver, waiting for room (backpressure) on a stream.
//!
//! All tokio and tonic use goes through `madsim-tokio` / `madsim-tonic`, so the same code runs in
//! the simulator (`--cfg madsim`), where tasks, timers and the network are simulated.

pub mod convert;
pub mod sender;
pub mod server;
mod stream;

#[cfg(all(test, not(madsim)))]
mod tests;

use std::collections::BTreeMap;
use std::sync::Arc;

use keel_core::{Message, NodeId};

pub use sender::{PeerSender, TransportConfig, TransportStats, TransportStatsSnapshot, DEFAULT_MESSAGE_BYTES_MAX};
pub use server::{peer_server, peer_service, peer_service_with_limit, PeerServer, PeerService};

/// The outgoing side of one node's peer transport: a [`PeerSender`] per peer, routed by
/// destination, with shared [`TransportStats`].
#[derive(Debug)]
pub struct PeerTransport {
    node_id: NodeId,
    config: TransportConfig,
    stats: Arc<TransportStats>,
    senders: BTreeMap<NodeId, PeerSender>,
}

impl PeerTransport {
    /// The transport of node `node_id`, with no peers yet (see [`PeerTransport::set_peers`]).
    pub fn new(node_id: NodeId, config: TransportConfig) -> Self {
        Self { node_id, config: config.normalized(), stats: Arc::default(), senders: BTreeMap::new() }
    }

    /// Makes the peers exactly `peers` (node id → `host:port`): starts a sender for each new
    /// peer, stops (aborts) the sender of each removed peer, and restarts the sender of a peer
    /// whose address changed. This node's own entry is ignored. Must be called inside a tokio (or
    /// madsim) runtime.
    pub fn set_peers(&mut self, peers: &BTreeMap<NodeId, String>) {
        self.senders.retain(|id, sender| {
            let keep = peers.get(id).is_some_and(|address| address == sender.address());
            if !keep {
                tracing::debug!(node = self.node_id, peer = id, "peer sender stopped");
            }
            keep
        });
        for (&id, address) in peers {
            if id == self.node_id || self.senders.contains_key(&id) {
                continue;
            }
            let sender = PeerSender::spawn(self.node_id, id, address.clone(), &self.config, Arc::clone(&self.stats));
            tracing::debug!(node = self.node_id, peer = id, address = address.as_str(), "peer sender started");
            self.senders.insert(id, sender);
        }
    }

    /// Queues `message` for its destination without waiting. Returns false when it is dropped:
    /// the destination is not a peer, or its queue is full. Both are counted.
    pub fn send(&self, message: Message) -> bool {
        match self.senders.get(&message.to) {
            Some(sender) => sender.send(message),
            None => {
                self.stats.count_unknown_peer();
                tracing::warn!(
                    node = self.node_id,
                    to = message.to,
                    kind = message.body.kind(),
                    "message to an unknown peer dropped"
                );
                false
            }
        }
    }

    /// The current peers and their addresses.
    pub fn peers(&self) -> impl Iterator<Item = (NodeId, &str)> + '_ {
        self.senders.iter().map(|(&id, sender)| (id, sender.address()))
    }

    /// The id of the node this transport sends for.
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// The counters of all senders, past and present.
    pub fn stats(&self) -> TransportStatsSnapshot {
        self.stats.snapshot()
    }
}

impl crate::node::MessageSink for PeerTransport {
    fn send(&mut self, message: keel_core::Message) {
        PeerTransport::send(self, message);
    }

    fn set_peers(&mut self, peers: std::collections::BTreeMap<keel_core::NodeId, String>) {
        PeerTransport::set_peers(self, &peers);
    }
}
