//! The gRPC services a node serves to clients and operators, on top of a
//! [`NodeHandle`](crate::node::NodeHandle):
//!
//! * [`ClientService`] implements `keel.client.RaftClientService` (seed 000): writes, multi-key
//!   reads with a consistency policy, prefix scans, key and prefix watches, membership watches;
//! * [`AdminService`] implements `keel.admin.ClusterAdmin`: membership changes, leadership
//!   transfer, membership and status reports.
//!
//! # Errors are in-band
//!
//! Every answer that has an `error` field carries a precise `keel.error.ErrorCode` there, with an
//! `ErrorMetadata` (message, leader hint, retry delay); the gRPC call itself succeeds. A gRPC
//! `Status` is used only where the answer has no error field (`HandleClientScan`, the end of a
//! `WatchMembership` stream) and for transport-level failures. The mapping from
//! [`ClientError`](crate::node::ClientError) to codes is in [`error`].
//!
//! # Bounds
//!
//! Every answer is bounded by [`ServiceConfig::message_bytes_max`] (larger reads and scans are
//! refused with `REQUEST_TOO_LARGE` / `RESOURCE_EXHAUSTED`), a read names at most
//! [`ServiceConfig::read_keys_max`] keys, at most [`ServiceConfig::watchers_max`] watch streams
//! are open at once, and each stream has an output buffer of
//! [`ServiceConfig::watch_output_buffer`] messages. A watcher that falls more than the node's
//! event buffer (`NodeConfig::watch_buffer_events`) behind is canceled with `WATCH_LAGGED`. A
//! `Batch` stream carries at most [`ServiceConfig::batch_requests_max`] requests per message and
//! [`ServiceConfig::batch_inflight_max`] in flight (see `batch.rs`).
//!
//! All tokio and tonic use goes through `madsim-tokio` / `madsim-tonic`, so the services run
//! unchanged in the simulator (`--cfg madsim`).

mod access;
pub mod admin;
mod batch;
pub mod client;
#[cfg(not(madsim))]
mod decode_status;
pub mod error;
mod watcher;

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::{mpsc, watch};
use tonic::codegen::tokio_stream::Stream;
use tonic::Status;

pub use admin::{AdminServer, AdminService};
pub use client::{ClientServer, ClientService};
#[cfg(not(madsim))]
pub use decode_status::DecodeErrorLayer;

use crate::node::{NodeConfig, ReadConsistency};

/// Size charged to every key-value pair of an answer on top of its key and value, when answers
/// are measured against [`ServiceConfig::message_bytes_max`].
pub(crate) const ENTRY_OVERHEAD_BYTES: usize = 16;

/// Room left in a message for everything but the payload of one command.
const MESSAGE_OVERHEAD_BYTES: usize = 64 * 1024;

/// Settings of the client and admin services.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceConfig {
    /// Consistency of a read that names no policy (the cluster default).
    pub default_read_consistency: ReadConsistency,
    /// Most keys in one `HandleClientRead`; more are refused with `REQUEST_TOO_LARGE`.
    pub read_keys_max: usize,
    /// Most watch streams (`Watch` and `WatchMembership` together) open at once on this node;
    /// more are refused with `OVERLOADED`.
    pub watchers_max: usize,
    /// An idle watch stream receives a `PROGRESS` event this often.
    pub watch_progress_interval_ms: u64,
    /// Messages buffered per watch stream between the node and the network.
    pub watch_output_buffer: usize,
    /// Largest encoded gRPC message accepted or sent by the client and admin services. Must leave
    /// room for the largest command (`KvLimits::command_bytes_max`) plus 64 KiB.
    pub message_bytes_max: usize,
    /// Suggested retry delay sent with `OVERLOADED`, in milliseconds. `LEADER_UNKNOWN` and
    /// `UNAVAILABLE` suggest the minimum election timeout instead.
    pub overloaded_retry_after_ms: u64,
    /// Most requests in one message of a `Batch` stream; a larger message ends the stream with
    /// `RESOURCE_EXHAUSTED` (`REQUEST_TOO_LARGE`).
    pub batch_requests_max: usize,
    /// Most requests in flight on one `Batch` stream; a message that would exceed it ends the
    /// stream with `RESOURCE_EXHAUSTED` (`OVERLOADED`).
    pub batch_inflight_max: usize,
    /// How long a token from the etcd API's `Authenticate` stays valid, in milliseconds (etcd's
    /// `--auth-token-ttl`); any change of users, roles or permissions ends it sooner.
    pub auth_token_ttl_ms: u64,
    /// PBKDF2 rounds of a new etcd password hash: the cost of one `Authenticate` (and of adding
    /// a user) against that of guessing a password from a stolen hash.
    pub auth_password_iterations: u32,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            default_read_consistency: ReadConsistency::Linearizable,
            read_keys_max: 1_024,
            watchers_max: 10_000,
            watch_progress_interval_ms: 1_000,
            watch_output_buffer: 256,
            message_bytes_max: crate::transport::DEFAULT_MESSAGE_BYTES_MAX,
            overloaded_retry_after_ms: 100,
            batch_requests_max: 1_024,
            batch_inflight_max: 4_096,
            auth_token_ttl_ms: 300_000,
            auth_password_iterations: 100_000,
        }
    }
}

impl ServiceConfig {
    /// Checks the settings against the node's; the error says which setting to change.
    pub fn validate(&self, node: &NodeConfig) -> Result<(), String> {
        if self.default_read_consistency == ReadConsistency::Lease && node.raft.lease.is_none() {
            return Err("default_read_consistency is Lease but lease reads are disabled (raft.lease is None); \
                        use Linearizable or configure leases"
                .into());
        }
        let needed = node.kv_limits.command_bytes_max.saturating_add(MESSAGE_OVERHEAD_BYTES);
        if self.message_bytes_max < needed {
            return Err(format!(
                "message_bytes_max is {} bytes but the largest command is {} bytes; raise it to at least {needed}",
                self.message_bytes_max, node.kv_limits.command_bytes_max
            ));
        }
        for (name, value) in [
            ("read_keys_max", self.read_keys_max),
            ("watchers_max", self.watchers_max),
            ("watch_output_buffer", self.watch_output_buffer),
            ("batch_requests_max", self.batch_requests_max),
            ("batch_inflight_max", self.batch_inflight_max),
        ] {
            if value == 0 {
                return Err(format!("{name} is 0; give at least 1"));
            }
        }
        if self.auth_token_ttl_ms == 0 {
            return Err("auth_token_ttl_ms is 0; give at least 1".into());
        }
        if !(1_000..=crate::etcd::AUTH_HASH_ITERATIONS_MAX).contains(&self.auth_password_iterations) {
            return Err(format!(
                "auth_password_iterations is {}; give 1000 to {}",
                self.auth_password_iterations,
                crate::etcd::AUTH_HASH_ITERATIONS_MAX
            ));
        }
        if self.watch_progress_interval_ms == 0 {
            return Err("watch_progress_interval_ms is 0; give at least 1".into());
        }
        Ok(())
    }
}

/// Ends every open watch stream of the services it was taken from (on shutdown: `Watch`
/// streams and `WatchMembership` streams end with the gRPC status `UNAVAILABLE`, so that
/// clients reconnect elsewhere). Cheap to clone.
#[derive(Clone, Debug)]
pub struct StreamCloser {
    sender: Arc<watch::Sender<bool>>,
}

impl StreamCloser {
    fn new() -> Self {
        Self { sender: Arc::new(watch::channel(false).0) }
    }

    /// Ends every open stream and makes new ones end at once.
    pub fn close(&self) {
        self.sender.send_replace(true);
    }

    /// Whether [`StreamCloser::close`] was called.
    pub fn is_closed(&self) -> bool {
        *self.sender.borrow()
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<bool> {
        self.sender.subscribe()
    }
}

/// Counts open watch streams against [`ServiceConfig::watchers_max`].
#[derive(Debug)]
pub(crate) struct WatcherSlots {
    open: AtomicUsize,
    max: usize,
}

impl WatcherSlots {
    pub(crate) fn new(max: usize) -> Arc<Self> {
        Arc::new(Self { open: AtomicUsize::new(0), max })
    }

    /// Takes a slot; `None` when every slot is taken. The slot is released when the guard drops.
    pub(crate) fn acquire(self: &Arc<Self>) -> Option<WatcherSlot> {
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| (open < self.max).then_some(open + 1))
            .ok()
            .map(|_| WatcherSlot { slots: Arc::clone(self) })
    }

    /// How many streams are open.
    pub(crate) fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }
}

/// One taken watcher slot, released on drop.
#[derive(Debug)]
pub(crate) struct WatcherSlot {
    slots: Arc<WatcherSlots>,
}

impl Drop for WatcherSlot {
    fn drop(&mut self) {
        self.slots.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A server stream fed by a bounded channel: what the watch RPCs return.
pub(crate) struct ChannelStream<T> {
    receiver: mpsc::Receiver<Result<T, Status>>,
}

impl<T> ChannelStream<T> {
    pub(crate) fn new(receiver: mpsc::Receiver<Result<T, Status>>) -> Self {
        Self { receiver }
    }
}

impl<T> Stream for ChannelStream<T> {
    type Item = Result<T, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().receiver.poll_recv(cx)
    }
}

/// Sends `item` on a stream's bounded output, waiting for room, unless the client went away or
/// the streams are being closed. Returns whether it was sent.
pub(crate) async fn send_or_stop<T>(
    output: &mpsc::Sender<Result<T, Status>>,
    item: Result<T, Status>,
    closing: &mut watch::Receiver<bool>,
) -> bool {
    if *closing.borrow() {
        return false;
    }
    // `biased`: no random branch order, so that a simulated run depends on its seed alone.
    tokio::select! {
        biased;
        _ = closing.wait_for(|closed| *closed) => false,
        sent = output.send(item) => sent.is_ok(),
    }
}

/// The status that ends a stream when the node shuts down.
pub(crate) fn shutting_down_status() -> Status {
    Status::unavailable("the node is shutting down; reconnect to another node and watch again")
}
