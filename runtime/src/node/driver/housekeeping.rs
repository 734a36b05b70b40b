//! The driver's housekeeping, run after every batch of inputs: snapshots and log compaction on
//! every node (local: each node decides its own snapshot points), and, on the leader, the
//! proposals that keep the store bounded and correct over time (lease and key expiry, history
//! compaction, the NOSPACE alarm). Those go through the log, so that every replica applies them
//! at the same point.

use keel_core::kv::{Alarm, KvCommand};
use keel_core::{Index, Role};

use super::Driver;
use crate::node::{envelope, NodeConfig, NodeError};

impl Driver {
    /// Takes a snapshot of the KV store once the applied index reaches the next snapshot point,
    /// hands it to the core (which compacts its log) and has the storage worker compact the
    /// stored log behind it. A snapshot the core refuses is skipped until the next point.
    pub(super) async fn maybe_snapshot(&mut self) -> Result<(), NodeError> {
        let applied = self.raft.applied_index();
        if applied < self.next_snapshot_index {
            return Ok(());
        }
        let started_us = self.clock.now_us();
        let data = self.kv.snapshot();
        let elapsed_us = self.clock.now_us().saturating_sub(started_us);
        crate::metrics::record_seconds(crate::metrics::SNAPSHOT_SECONDS, elapsed_us);
        let meta = match self.raft.snapshot_taken(applied, data.clone()) {
            Ok(meta) => meta,
            Err(error) => {
                tracing::warn!(applied, "snapshot not taken: {error}");
                return Ok(());
            }
        };
        self.next_snapshot_index = applied + self.config.snapshot_interval_entries;
        self.storage.compact(keel_core::Snapshot { meta, data }).await.map_err(NodeError::Storage)
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
