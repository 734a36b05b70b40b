//! The driver's housekeeping, run after every batch of inputs: snapshots and log compaction on
//! every node (local: each node decides its own snapshot points), and, on the leader, the
//! proposals that keep the store bounded and correct over time (lease and key expiry, history
//! compaction, the NOSPACE alarm). Those go through the log, so that every replica applies them
//! at the same point.

use std::sync::Arc;

use bytes::Bytes;
use keel_core::kv::{Alarm, KvCommand, StoreImage};
use keel_core::{Index, Role};

use super::Driver;
use crate::node::handle::{ClientError, Reply};
use crate::node::{envelope, NodeConfig, NodeError};

/// Most whole-store reads (`HashKV`, the etcd `Snapshot` call) running at once on copies of the
/// store, away from the driver.
pub(super) const STORE_WALKS_IN_FLIGHT_MAX: usize = 2;

impl Driver {
    /// Starts a snapshot of the KV store once the applied index reaches the next snapshot point:
    /// the driver copies what the snapshot covers (a [`StoreImage`], which shares every key and
    /// value, so it costs the tree nodes only) and hands the copy to a blocking thread to encode,
    /// so that a large store never stops the driver for the encoding. At most one snapshot is in
    /// the works; [`Driver::snapshot_encoded`] finishes it.
    pub(super) fn maybe_snapshot(&mut self) {
        let applied = self.raft.applied_index();
        if applied < self.next_snapshot_index || self.encoding.is_some() {
            return;
        }
        assert_eq!(self.kv.last_applied_index(), applied, "the store and the core disagree on the applied index");
        let started_us = self.clock.now_us();
        let copy = self.kv.image();
        let copied_us = self.clock.now_us();
        crate::metrics::record_seconds(crate::metrics::SNAPSHOT_COPY_SECONDS, copied_us.saturating_sub(started_us));
        self.next_snapshot_index = applied + self.config.snapshot_interval_entries;
        let handle = spawn_off_driver(move || copy.snapshot());
        self.encoding = Some(SnapshotEncoding { index: applied, started_us, handle });
    }

    /// A snapshot's bytes arrived from the encoding thread: hands them to the core (which
    /// compacts its log) and has the storage worker store them and compact the stored log. A
    /// snapshot the core refuses (a leader's snapshot was installed past it meanwhile) is dropped.
    pub(super) async fn snapshot_encoded(&mut self, index: Index, encoded: EncodedSnapshot) -> Result<(), NodeError> {
        self.encoding = None;
        let data = encoded
            .map_err(|error| NodeError::Snapshot(format!("encoding the snapshot at {index} failed: {error}")))?;
        let meta = match self.raft.snapshot_taken(index, data.clone()) {
            Ok(meta) => meta,
            Err(error) => {
                tracing::info!(index, "snapshot dropped: {error}");
                return Ok(());
            }
        };
        self.storage.compact(keel_core::Snapshot { meta, data }).await.map_err(NodeError::Storage)
    }

    /// Answers `reply` with `walk` over a copy of the store, run away from the driver; at most
    /// [`STORE_WALKS_IN_FLIGHT_MAX`] at once (more are refused as overloaded: each holds a copy).
    pub(super) fn walk_store<T: Send + 'static>(
        &mut self,
        walk: impl FnOnce(StoreImage) -> T + Send + 'static,
        reply: Reply<T>,
    ) {
        let token = match self.store_walks.try_start() {
            Ok(token) => token,
            Err(in_flight) => {
                let reason = format!("{in_flight} whole-store reads (HashKV, Snapshot) are in flight already");
                let _ = reply.send(Err(ClientError::Overloaded(reason)));
                return;
            }
        };
        let copy = self.kv.image();
        drop(spawn_off_driver(move || {
            let answer = walk(copy);
            // The slot is free before the caller hears back, so its next call finds it free.
            drop(token);
            let _ = reply.send(Ok(answer));
        }));
    }

    /// Leader: proposes the deletion of expired keys (and leases) through the log, stamped with
    /// this leader's wall clock minus the configured clock-offset bound (keys never expire
    /// early). A new leader first gives every lease its full TTL again, as etcd does.
    pub(super) fn propose_expiry(&mut self) {
        let now = self.clock.now_ms();
        if self.raft.role() != Role::Leader || now < self.next_expire_ms {
            return;
        }
        if self.leases_refreshed_term != self.raft.term() {
            self.leases_refreshed_term = self.raft.term();
            if !self.kv.lease_ids().is_empty() {
                self.next_expire_ms = now + self.config.expire_interval_ms;
                let command = KvCommand::LeaseRefreshAll;
                if let Err(error) = self.raft.propose(envelope::encode(self.clock.wall_ms(), &command)) {
                    tracing::debug!("lease refresh not proposed: {error}");
                }
                return;
            }
        }
        self.next_expire_ms = now + self.config.expire_interval_ms;
        let cutoff = self.clock.wall_ms().saturating_sub(self.config.clock_offset_ms_max);
        if self.kv.next_expiry_ms().is_none_or(|due| due > cutoff) {
            return;
        }
        let command = KvCommand::Expire { now_ms: cutoff };
        if let Err(error) = self.raft.propose(envelope::encode(self.clock.wall_ms(), &command)) {
            tracing::debug!("expiry not proposed: {error}");
        }
    }

    /// Leader: once the store keeps more than twice `history_retention_revisions` revisions of
    /// history, proposes compacting it down to the latest `history_retention_revisions`, through
    /// the log so that every replica compacts at the same point. Without it the history (and so
    /// every snapshot) would grow with every write forever.
    ///
    /// On the same schedule, it raises a NOSPACE alarm (of this node) once the store exceeds
    /// `kv_quota_bytes`.
    pub(super) fn propose_history_compaction(&mut self) {
        let now = self.clock.now_ms();
        if self.raft.role() != Role::Leader || now < self.next_history_compaction_ms {
            return;
        }
        self.next_history_compaction_ms = now + self.config.expire_interval_ms;
        let quota = self.config.kv_quota_bytes;
        if quota > 0 && !self.kv.out_of_space() && self.kv.size_bytes() > quota {
            tracing::warn!(quota, size = self.kv.size_bytes(), "storage quota exceeded: raising NOSPACE");
            let command = KvCommand::Alarm { member: u64::from(self.raft.id()), alarm: Alarm::NoSpace, active: true };
            if let Err(error) = self.raft.propose(envelope::encode(self.clock.wall_ms(), &command)) {
                tracing::debug!("NOSPACE alarm not proposed: {error}");
            }
        }
        let retention = self.config.history_retention_revisions;
        if retention == 0 {
            return;
        }
        let current = self.kv.current_revision();
        if current.saturating_sub(self.kv.compacted_revision()) <= retention.saturating_mul(2) {
            return;
        }
        let command = KvCommand::Compact { revision: current - retention };
        if let Err(error) = self.raft.propose(envelope::encode(self.clock.wall_ms(), &command)) {
            tracing::debug!("history compaction not proposed: {error}");
        }
    }
}

/// The applied index of a node's first snapshot after `base`: one interval later, plus a
/// quarter interval per step of `id % 4`, so that the nodes of a cluster, which apply the same
/// entries at about the same time, do not all snapshot (and compact their logs) at once. Later
/// snapshots follow every interval, keeping the offsets.
pub(super) fn first_snapshot_index(config: &NodeConfig, base: Index) -> Index {
    let interval = config.snapshot_interval_entries;
    let stagger = interval / 4 * (u64::from(config.raft.id) % 4);
    base + interval + stagger
}

/// The whole-store reads running away from the driver, at most [`STORE_WALKS_IN_FLIGHT_MAX`]:
/// each holds a token, and the tokens out are counted by the shared pointer's count.
#[derive(Debug, Default)]
pub(super) struct StoreWalks(Arc<()>);

impl StoreWalks {
    /// A token for one more walk (dropping it ends the walk), or how many are in flight when the
    /// limit is reached.
    pub(super) fn try_start(&self) -> Result<Arc<()>, usize> {
        let in_flight = Arc::strong_count(&self.0) - 1;
        if in_flight >= STORE_WALKS_IN_FLIGHT_MAX {
            return Err(in_flight);
        }
        Ok(Arc::clone(&self.0))
    }
}

/// What the encoding thread gives back: the snapshot's bytes, or why the task ended without them
/// (it panicked: a bug in the encoder).
pub(super) type EncodedSnapshot = Result<Bytes, tokio::task::JoinError>;

/// A snapshot of the KV store being encoded away from the driver.
pub(super) struct SnapshotEncoding {
    /// The applied index (and the store's) when the copy was taken.
    index: Index,
    /// When the copy was started, for [`crate::metrics::SNAPSHOT_SECONDS`].
    started_us: u64,
    /// The encoding task.
    handle: tokio::task::JoinHandle<Bytes>,
}

impl SnapshotEncoding {
    /// Stops the encoding (its result is no longer wanted).
    pub(super) fn abort(self) {
        self.handle.abort();
    }
}

/// Waits for the snapshot in the works, if any (forever otherwise), for the driver's `select!`.
/// Cancel safe: the task is polled by reference, so a branch that loses the race loses nothing.
pub(super) async fn encoding_finished(
    encoding: &mut Option<SnapshotEncoding>,
    clock: &dyn crate::clock::Clock,
) -> (Index, EncodedSnapshot) {
    let Some(encoding) = encoding.as_mut() else { return std::future::pending().await };
    let encoded = (&mut encoding.handle).await;
    crate::metrics::record_seconds(
        crate::metrics::SNAPSHOT_SECONDS,
        clock.now_us().saturating_sub(encoding.started_us),
    );
    (encoding.index, encoded)
}

/// Runs `work` (a walk over a copy of the whole store: encoding a snapshot, hashing it) on
/// tokio's blocking pool, so that the driver goes on serving meanwhile. At most one snapshot
/// encoding (`Driver::encoding`) and [`STORE_WALKS_IN_FLIGHT_MAX`] whole-store reads run at once.
#[cfg(not(madsim))]
pub(super) fn spawn_off_driver<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> tokio::task::JoinHandle<T> {
    tokio::task::spawn_blocking(work)
}

/// Runs `work` in a simulated task of the node: the simulator has no threads, and the work then
/// takes no simulated time, but still completes after the driver moved on.
#[cfg(madsim)]
pub(super) fn spawn_off_driver<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> tokio::task::JoinHandle<T> {
    tokio::spawn(async move { work() })
}

#[cfg(test)]
mod tests {
    use super::{StoreWalks, STORE_WALKS_IN_FLIGHT_MAX};

    #[test]
    fn whole_store_reads_are_bounded_and_a_finished_one_frees_its_slot() {
        let walks = StoreWalks::default();
        let mut tokens: Vec<_> =
            (0..STORE_WALKS_IN_FLIGHT_MAX).map(|_| walks.try_start().expect("a free slot")).collect();
        assert_eq!(walks.try_start().err(), Some(STORE_WALKS_IN_FLIGHT_MAX), "one more is refused");
        drop(tokens.pop());
        let again = walks.try_start().expect("a finished walk frees its slot");
        assert_eq!(walks.try_start().err(), Some(STORE_WALKS_IN_FLIGHT_MAX));
        drop((again, tokens));
        assert!(walks.try_start().is_ok());
    }
}
