//! A running Keel node: the driver task around `keel_core::RaftNode`, its storage worker, its
//! KV state machine, and the handle clients use.
//!
//! Data flow: clients call [`NodeHandle`] → bounded request queue → driver (`driver.rs`) →
//! `RaftNode` → `Ready` → storage worker (sync) / [`MessageSink`] (peers) / KV store (apply) →
//! the client's reply. Peer messages arrive through the sender returned by [`Node::inbound`].

mod driver;
pub mod envelope;
mod handle;
mod storage_worker;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use keel_core::kv::{KvLimits, KvStore};
use keel_core::{Config, Membership, Message, NodeId, RaftNode, RecoveredState};
use tokio::sync::{broadcast, mpsc, watch};

pub use handle::{ClientError, HashAnswer, NodeHandle, NodeStatus, PeerStatus, RangeAnswer, ReadConsistency};

use crate::clock::Clock;
use crate::storage::Storage;

/// Where the driver sends peer messages: the gRPC transport in production, channels in tests
/// and in the simulator. Sending never blocks; a message that cannot be queued is dropped.
pub trait MessageSink: Send + 'static {
    /// Queues one message for its destination.
    fn send(&mut self, message: Message);
    /// The peers (id → address) of the latest configuration, this node excluded.
    fn set_peers(&mut self, peers: BTreeMap<NodeId, String>);
}

/// Everything that configures a node beyond the consensus core.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// The consensus core's configuration (id, timeouts, limits).
    pub raft: Config,
    /// The initial voters and their addresses, used only when the data directory is empty. A
    /// node not listed starts empty and waits to be added as a learner.
    pub initial_members: BTreeMap<NodeId, String>,
    /// How often the core is ticked.
    pub tick_interval_ms: u64,
    /// Client requests queued at most; more are refused as overloaded.
    pub request_queue_max: usize,
    /// Peer batches queued at most; more are refused (the sender drops them).
    pub inbound_queue_max: usize,
    /// Inputs taken before one `Ready` is processed (batching bound).
    pub batch_inputs_max: usize,
    /// Deadline of a client request.
    pub request_timeout_ms: u64,
    /// A snapshot is taken (and the log compacted) every this many applied entries; a node's
    /// first one comes a quarter interval later per step of `id % 4`, so that the nodes of a
    /// cluster do not all snapshot at once.
    pub snapshot_interval_entries: u64,
    /// Revisions of key-value history kept for reads at a past revision and watches from one:
    /// the leader proposes a compaction down to the latest this many once twice as many have
    /// accumulated (checked every `expire_interval_ms`). 0 keeps the whole history (it, and
    /// every snapshot, then grow with every write).
    pub history_retention_revisions: u64,
    /// How often the leader checks for expired keys.
    pub expire_interval_ms: u64,
    /// Bound on the wall-clock offset between nodes; subtracted from expiry times so that keys
    /// never expire early.
    pub clock_offset_ms_max: u64,
    /// Events a slow watcher may fall behind before it is canceled.
    pub watch_buffer_events: usize,
    /// Key, value and transaction size limits.
    pub kv_limits: KvLimits,
    /// Storage quota (etcd's `--quota-backend-bytes`): once the key-value data
    /// (`KvStore::size_bytes`, history included) exceeds this many bytes, the leader raises a
    /// NOSPACE alarm through the log (checked every `expire_interval_ms`), after which writes
    /// that grow the store are refused until the alarm is cleared. 0 for no quota.
    pub kv_quota_bytes: u64,
    /// How often the leader compares every member's store hash with its own and raises etcd's
    /// CORRUPT alarm for a member that differs (`etcd::corruption`); 0 turns the check off.
    pub corrupt_check_interval_ms: u64,
}

impl NodeConfig {
    /// Defaults for a node `id` of the cluster `initial_members`.
    pub fn new(id: NodeId, initial_members: BTreeMap<NodeId, String>) -> Self {
        Self {
            raft: Config::new(id),
            initial_members,
            tick_interval_ms: 10,
            request_queue_max: 16_384,
            inbound_queue_max: 1_024,
            batch_inputs_max: 4_096,
            request_timeout_ms: 5_000,
            snapshot_interval_entries: 100_000,
            history_retention_revisions: 10_000,
            expire_interval_ms: 1_000,
            clock_offset_ms_max: 500,
            watch_buffer_events: 4_096,
            kv_limits: KvLimits::DEFAULT,
            kv_quota_bytes: 0,
            corrupt_check_interval_ms: 300_000,
        }
    }
}

/// Why a node could not start or had to stop.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeError {
    /// The configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Storage failed; the node stopped to avoid acknowledging writes it cannot keep.
    #[error("storage failure, node stopped: {0}")]
    Storage(String),
    /// A snapshot could not be restored.
    #[error("snapshot failure, node stopped: {0}; remove the data directory and re-add the node as a learner")]
    Snapshot(String),
}

/// A started node: its handle, the inbound peer queue, and the means to stop it.
pub struct Node {
    handle: NodeHandle,
    inbound: mpsc::Sender<Vec<Message>>,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), NodeError>>,
}

impl Node {
    /// Recovers the node from `storage` (or bootstraps it) and starts its driver task.
    pub fn start(
        config: NodeConfig,
        mut storage: Box<dyn Storage + Send>,
        clock: Arc<dyn Clock>,
        sink: Box<dyn MessageSink>,
    ) -> Result<Self, NodeError> {
        let loaded = storage.load().map_err(|error| NodeError::Storage(error.to_string()))?;
        let (kv, recovered) = recover(&config, loaded)?;
        if let Some(snapshot) = recovered.snapshot.as_ref().filter(|s| s.meta.last_included.index == 0) {
            // A new cluster's initial membership must survive a restart like any other state.
            storage.install_snapshot(snapshot).map_err(|error| NodeError::Storage(error.to_string()))?;
        }
        let raft =
            RaftNode::new(config.raft.clone(), recovered).map_err(|error| NodeError::Config(error.to_string()))?;
        let (requests_tx, requests_rx) = mpsc::channel(config.request_queue_max);
        let (inbound_tx, inbound_rx) = mpsc::channel(config.inbound_queue_max);
        let (events_tx, _) = broadcast::channel(config.watch_buffer_events.max(1));
        let committed = raft.committed_membership();
        let (membership_tx, membership_rx) = watch::channel((committed.0, committed.1.clone()));
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let (auth_tx, auth_rx) = watch::channel(Arc::new(kv.auth().clone()));
        let handle = NodeHandle {
            id: config.raft.id,
            requests: requests_tx,
            events: events_tx.clone(),
            membership: membership_rx,
            auth: auth_rx,
            clock: clock.clone(),
            request_timeout: Duration::from_millis(config.request_timeout_ms),
            calls_in_flight: Default::default(),
        };
        let worker = storage_worker::StorageWorker::start(storage, clock.clone());
        let driver = driver::Driver::new(
            config,
            raft,
            kv,
            clock,
            worker,
            sink,
            (requests_rx, inbound_rx),
            (events_tx, membership_tx, auth_tx),
            shutdown_rx,
        );
        let task = tokio::spawn(driver.run());
        Ok(Self { handle, inbound: inbound_tx, shutdown: shutdown_tx, task })
    }

    /// The client handle.
    pub fn handle(&self) -> NodeHandle {
        self.handle.clone()
    }

    /// Where peer message batches for this node are queued (bounded).
    pub fn inbound(&self) -> mpsc::Sender<Vec<Message>> {
        self.inbound.clone()
    }

    /// Stops the driver and waits for it; returns the fatal error if it had stopped on one.
    pub async fn stop(self) -> Result<(), NodeError> {
        let _ = self.shutdown.send(true);
        match self.task.await {
            Ok(result) => result,
            Err(error) => Err(NodeError::Storage(format!("the driver task ended abnormally: {error}"))),
        }
    }

    /// True once the driver has stopped (after `stop` or a fatal error).
    pub fn is_stopped(&self) -> bool {
        self.task.is_finished()
    }
}

/// Builds the state machine and the core's recovered state from what storage loaded.
fn recover(config: &NodeConfig, loaded: crate::storage::LoadedState) -> Result<(KvStore, RecoveredState), NodeError> {
    if loaded.is_empty() {
        let id = config.raft.id;
        if !config.initial_members.contains_key(&id) {
            return Ok((KvStore::new(), RecoveredState::joining()));
        }
        let mut membership = Membership::with_voters(config.initial_members.keys().copied());
        membership.addresses = config.initial_members.clone();
        return Ok((KvStore::new(), RecoveredState::bootstrap(membership)));
    }
    let kv = match &loaded.snapshot {
        Some(snapshot) if !snapshot.data.is_empty() => KvStore::restore(&snapshot.data).map_err(|error| {
            NodeError::Snapshot(format!("the stored snapshot at {} is corrupt: {error}", snapshot.meta.last_included))
        })?,
        _ => KvStore::new(),
    };
    let mut recovered = loaded.into_recovered();
    recovered.applied = recovered.applied.min(kv.last_applied_index().max(recovered.applied));
    Ok((kv, recovered))
}
