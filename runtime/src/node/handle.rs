//! The client side of a running node: [`NodeHandle`] sends requests to the driver and waits for
//! the answer, with a deadline; it is what the gRPC services and the embedded (in-process) client
//! use. Requests travel as Rust values: no serialization.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use keel_core::kv::{
    Alarm, ApplyResult, AuthState, KeyRange, KeyValue, KvCommand, KvError, KvEvent, LeaseInfo, RangeResult,
};
use keel_core::{Index, LeaderHint, Membership, MembershipChange, NodeId, Role};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::clock::Clock;

/// How a read must be confirmed (seed 000 `ReadConsistencyPolicy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadConsistency {
    /// Served by the leader from its lease when one is held; ReadIndex otherwise.
    Lease,
    /// ReadIndex: leadership confirmed by a quorum after the read arrived.
    Linearizable,
    /// From this node's state machine as it is: may be stale.
    Eventual,
}

/// Why a request failed; each maps to one `keel.error.ErrorCode`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// This node is not the leader; retry at the hinted one.
    #[error("not the leader; leader is {}", describe(.0))]
    NotLeader(LeaderHint),
    /// No leader is known right now (election in progress).
    #[error("no leader is known right now; retry shortly")]
    LeaderUnknown,
    /// The request is invalid (size limits, malformed fields).
    #[error("{0}")]
    Invalid(String),
    /// The write was never appended, or its log slot went to another entry: it will never apply.
    #[error("the write was dropped before it could commit; it will not be applied and is safe to retry ({0})")]
    ProposalDropped(String),
    /// The write was appended but its fate is unknown (deadline passed or leadership changed).
    #[error(
        "the outcome is unknown: the change may or may not have been applied; read the key (or, for a membership change, list the members) to find out"
    )]
    OutcomeUnknown,
    /// The request did not complete before its deadline and has no effect.
    #[error("the request timed out")]
    Timeout,
    /// A bounded queue is full.
    #[error("overloaded: {0}; retry later")]
    Overloaded(String),
    /// Another membership change is still in progress.
    #[error("another membership change is in progress; retry when it has committed")]
    MembershipChangeInProgress,
    /// The membership change is invalid.
    #[error("{0}")]
    Membership(String),
    /// The node cannot serve the request now.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The node is shutting down.
    #[error("the node is shutting down")]
    ShuttingDown,
    /// The requested revision is older than the store's compaction point: its history is gone.
    #[error("revision {requested} is compacted (the oldest revision kept is {compacted}); re-read the state and watch from its revision")]
    Compacted {
        /// The revision asked for.
        requested: u64,
        /// The store's compaction revision.
        compacted: u64,
    },
}

fn describe(hint: &LeaderHint) -> String {
    match hint.leader_id {
        Some(id) => format!("node {id} at '{}'", hint.address),
        None => "unknown".to_string(),
    }
}

impl From<KvError> for ClientError {
    fn from(error: KvError) -> Self {
        match error {
            KvError::Compacted { requested, compacted } => Self::Compacted { requested, compacted },
            other => Self::Invalid(other.to_string()),
        }
    }
}

/// One peer's replication state as seen by the leader.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerStatus {
    /// The peer.
    pub id: NodeId,
    /// Highest index known durable and matching on the peer.
    pub match_index: Index,
    /// Milliseconds since the leader last heard from it.
    pub last_contact_ms_ago: Option<u64>,
}

/// A node's view of itself and the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeStatus {
    /// This node.
    pub id: NodeId,
    /// Its role.
    pub role: Role,
    /// Its term.
    pub term: u64,
    /// The leader it knows.
    pub leader: LeaderHint,
    /// Commit index.
    pub commit_index: Index,
    /// Applied index.
    pub applied_index: Index,
    /// Last log index.
    pub last_log_index: Index,
    /// Current store revision.
    pub revision: u64,
    /// Latest configuration.
    pub membership: Membership,
    /// Per-peer progress (leader only).
    pub peers: Vec<PeerStatus>,
    /// Leader only: whether a quorum was heard from within an election timeout.
    pub has_quorum: bool,
}

pub(crate) type Reply<T> = oneshot::Sender<Result<T, ClientError>>;

/// The answer to [`NodeHandle::range`]: the keys read and the store's current revision, or why
/// the revision asked for cannot be read (compacted, or in the future).
pub type RangeAnswer = Result<(RangeResult, u64), KvError>;

/// The answer to [`NodeHandle::hash_kv`]: the hash, the compacted revision and the current
/// revision, or why the revision cannot be hashed (compacted, or in the future).
pub type HashAnswer = Result<(u32, u64, u64), KvError>;

/// What a [`NodeHandle::range`] reads.
pub(crate) struct RangeQuery {
    /// The keys, in etcd's range conventions.
    pub range: KeyRange,
    /// The revision read; `None` for the latest.
    pub revision: Option<u64>,
    /// Most keys returned, in key order; 0 for all.
    pub limit: usize,
}

/// A request to the driver.
pub(crate) enum Request {
    Write { command: KvCommand, reply: Reply<ApplyResult> },
    Read { keys: Vec<Bytes>, consistency: ReadConsistency, reply: Reply<Vec<Option<KeyValue>>> },
    Scan { prefix: Bytes, consistency: ReadConsistency, reply: Reply<RangeResult> },
    Range { query: RangeQuery, consistency: ReadConsistency, reply: Reply<RangeAnswer> },
    ChangeMembership { change: MembershipChange, reply: Reply<Membership> },
    TransferLeader { target: NodeId, reply: Reply<()> },
    Status { reply: Reply<NodeStatus> },
    Subscribe { reply: Reply<(broadcast::Receiver<KvEvent>, u64)> },
    History { after_revision: u64, limit: usize, reply: Reply<Vec<KvEvent>> },
    Leases { id: Option<u64>, reply: Reply<(Vec<LeaseInfo>, u64)> },
    HashKv { revision: Option<u64>, reply: Reply<HashAnswer> },
    KvSnapshot { reply: Reply<(Bytes, u64)> },
    KvSize { reply: Reply<u64> },
    Alarms { reply: Reply<Vec<(u64, Alarm)>> },
}

/// A cheap, cloneable handle on a running node.
#[derive(Clone)]
pub struct NodeHandle {
    pub(crate) id: NodeId,
    pub(crate) requests: mpsc::Sender<Request>,
    pub(crate) events: broadcast::Sender<KvEvent>,
    pub(crate) membership: watch::Receiver<(Index, Membership)>,
    /// The etcd authentication table as last applied, published by the driver on each change.
    pub(crate) auth: watch::Receiver<Arc<AuthState>>,
    /// The node's clock port (tokens' expiry is wall-clock time).
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) request_timeout: Duration,
    /// Calls sent through any clone of this handle and not answered yet (see [`NodeHandle::calls_in_flight`]).
    pub(crate) calls_in_flight: Arc<AtomicUsize>,
}

/// Counts one call in flight for as long as it lives.
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn start(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self(count.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl NodeHandle {
    /// The node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// How many calls made through this handle (or any clone of it) wait for their answer now:
    /// a stopping server drains them before it lets go of its peers (`server.rs`).
    pub fn calls_in_flight(&self) -> usize {
        self.calls_in_flight.load(Ordering::Relaxed)
    }

    /// Sends a request and waits for its answer. `unanswered` is the error when the deadline
    /// passes or the driver stops before answering: `OutcomeUnknown` for requests that may have
    /// been proposed, a plain failure otherwise.
    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Request, unanswered: ClientError) -> Result<T, ClientError> {
        let _in_flight = InFlight::start(&self.calls_in_flight);
        let (reply, answer) = oneshot::channel();
        self.requests.try_send(make(reply)).map_err(|error| match error {
            mpsc::error::TrySendError::Full(_) => ClientError::Overloaded("the node's request queue is full".into()),
            mpsc::error::TrySendError::Closed(_) => ClientError::ShuttingDown,
        })?;
        match tokio::time::timeout(self.request_timeout, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) if unanswered == ClientError::OutcomeUnknown => Err(unanswered),
            Ok(Err(_)) => Err(ClientError::ShuttingDown),
            Err(_) => Err(unanswered),
        }
    }

    /// Replicates a command and returns its result once applied (at the leader only).
    pub async fn write(&self, command: KvCommand) -> Result<ApplyResult, ClientError> {
        self.call(|reply| Request::Write { command, reply }, ClientError::OutcomeUnknown).await
    }

    /// Reads keys with the given consistency.
    pub async fn read(
        &self,
        keys: Vec<Bytes>,
        consistency: ReadConsistency,
    ) -> Result<Vec<Option<KeyValue>>, ClientError> {
        self.call(|reply| Request::Read { keys, consistency, reply }, ClientError::Timeout).await
    }

    /// Every live key under `prefix`, with the revision they were read at.
    pub async fn scan(&self, prefix: Bytes, consistency: ReadConsistency) -> Result<RangeResult, ClientError> {
        self.call(|reply| Request::Scan { prefix, consistency, reply }, ClientError::Timeout).await
    }

    /// The live keys of `range` (etcd's range conventions) at `revision` (`None`: the latest),
    /// at most `limit` of them in key order (0: all; `count` and `more` still cover the whole
    /// range), confirmed with `consistency`, together with the store's current revision (which
    /// a read at a past revision does not show). A revision that is compacted or not reached
    /// yet is the inner `KvError`, kept apart so that the etcd API can answer with etcd's own
    /// errors.
    pub async fn range(
        &self,
        range: KeyRange,
        revision: Option<u64>,
        limit: usize,
        consistency: ReadConsistency,
    ) -> Result<RangeAnswer, ClientError> {
        let query = RangeQuery { range, revision, limit };
        self.call(|reply| Request::Range { query, consistency, reply }, ClientError::Timeout).await
    }

    /// Changes the membership; returns the configuration once the change is applied.
    pub async fn change_membership(&self, change: MembershipChange) -> Result<Membership, ClientError> {
        self.call(|reply| Request::ChangeMembership { change, reply }, ClientError::OutcomeUnknown).await
    }

    /// Asks the leader to hand leadership to `target`.
    pub async fn transfer_leader(&self, target: NodeId) -> Result<(), ClientError> {
        self.call(|reply| Request::TransferLeader { target, reply }, ClientError::Timeout).await
    }

    /// The node's status.
    pub async fn status(&self) -> Result<NodeStatus, ClientError> {
        self.call(|reply| Request::Status { reply }, ClientError::Timeout).await
    }

    /// Every event applied on this node from now on. A subscriber that falls more than the
    /// watcher buffer behind receives `RecvError::Lagged` and must re-read and re-subscribe.
    pub fn subscribe_events(&self) -> broadcast::Receiver<KvEvent> {
        self.events.subscribe()
    }

    /// Every event applied from now on, and the store revision at the moment of subscribing:
    /// taken together on the driver, so every event above that revision is received (or the
    /// receiver reports a lag) and none at or below it is. This is how a watch anchors itself.
    pub async fn subscribe_at_revision(&self) -> Result<(broadcast::Receiver<KvEvent>, u64), ClientError> {
        self.call(|reply| Request::Subscribe { reply }, ClientError::Timeout).await
    }

    /// At most `limit` past events with a revision above `after_revision`, in order, from this
    /// node's history. Fails with `ClientError::Compacted` when that history is compacted away.
    pub async fn history(&self, after_revision: u64, limit: usize) -> Result<Vec<KvEvent>, ClientError> {
        self.call(|reply| Request::History { after_revision, limit, reply }, ClientError::Timeout).await
    }

    /// This node's leases as applied (lease `id` only, or all), with its wall clock in
    /// milliseconds, against which their `expires_at_ms` deadlines count.
    pub async fn leases(&self, id: Option<u64>) -> Result<(Vec<LeaseInfo>, u64), ClientError> {
        self.call(|reply| Request::Leases { id, reply }, ClientError::Timeout).await
    }

    /// The checksum of this node's key-value history at or below `revision` (`None`: the
    /// latest), equal on every replica at the same revision: etcd's `HashKV`.
    pub async fn hash_kv(&self, revision: Option<u64>) -> Result<HashAnswer, ClientError> {
        self.call(|reply| Request::HashKv { revision, reply }, ClientError::Timeout).await
    }

    /// This node's whole key-value store as snapshot bytes (the checksummed format of
    /// `KvStore::snapshot`), with its revision: etcd's `Snapshot`.
    pub async fn kv_snapshot(&self) -> Result<(Bytes, u64), ClientError> {
        self.call(|reply| Request::KvSnapshot { reply }, ClientError::Timeout).await
    }

    /// About how many bytes this node's key-value store holds (`KvStore::size_bytes`).
    pub async fn kv_size(&self) -> Result<u64, ClientError> {
        self.call(|reply| Request::KvSize { reply }, ClientError::Timeout).await
    }

    /// The alarms raised in this node's key-value store, as `(member, kind)` in order
    /// (`KvStore::alarms`; served from local state).
    pub async fn alarms(&self) -> Result<Vec<(u64, Alarm)>, ClientError> {
        self.call(|reply| Request::Alarms { reply }, ClientError::Timeout).await
    }

    /// The etcd authentication table (users, roles, permissions) as this node last applied it:
    /// a copy taken when it last changed, so reading it costs a reference count. Served from
    /// local state: a node that lags the leader may hold an older table (its `revision` says
    /// which); `etcd::access` waits for a read barrier when a client shows a newer one.
    pub fn auth(&self) -> Arc<AuthState> {
        Arc::clone(&self.auth.borrow())
    }

    /// This node's wall clock in milliseconds since the Unix epoch, from the node's clock port
    /// (skewed per node in simulation).
    pub fn wall_ms(&self) -> u64 {
        self.clock.wall_ms()
    }

    /// The latest committed membership and the index of its entry, updated on every change.
    pub fn membership(&self) -> watch::Receiver<(Index, Membership)> {
        self.membership.clone()
    }

    /// Completes once the node's driver has stopped (after `Node::stop`, or on a fatal error).
    pub async fn stopped(&self) {
        self.requests.closed().await
    }
}
