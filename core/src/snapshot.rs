//! Log compaction and snapshot transfer (Raft paper §7, thesis §5).
//!
//! Data flow: the application reports "snapshot taken at index I" with the serialized state
//! (`snapshot_taken`); the core discards the log up to I and keeps the snapshot to send. A peer
//! whose next index falls at or before the compaction point receives the snapshot in chunks of
//! `snapshot_chunk_bytes`, one chunk in flight; the follower answers each chunk with the offset it
//! expects next, so an interrupted transfer resumes where it stopped, and a transfer of a snapshot
//! the follower does not know restarts at offset 0. The complete snapshot is handed to the
//! application in `Ready::snapshot`; once installed durably (`snapshot_installed`) the follower
//! reports it to the leader, which resumes normal replication after it.

use bytes::{Bytes, BytesMut};

use crate::error::Error;
use crate::message::MessageBody;
use crate::node::RaftNode;
use crate::progress::ProgressState;
use crate::types::{Index, LogId, NodeId, Snapshot, SnapshotMeta};

/// A snapshot being received.
#[derive(Debug)]
struct Receiving {
    meta: SnapshotMeta,
    total_bytes: u64,
    data: BytesMut,
}

/// A follower's snapshot transfer state.
#[derive(Debug, Default)]
pub(crate) struct FollowerSnapshot {
    receiving: Option<Receiving>,
    installing: Option<SnapshotMeta>,
}

impl FollowerSnapshot {
    /// True while a received snapshot awaits `snapshot_installed`; the log is frozen meanwhile.
    pub fn is_installing(&self) -> bool {
        self.installing.is_some()
    }
}

impl RaftNode {
    /// Input: the application serialized its state machine as of applied index `index`. The log
    /// up to `index` is discarded; the returned metadata (with the membership in force at
    /// `index`) must be stored with `data`. Fails if `index` is not applied or already covered.
    pub fn snapshot_taken(&mut self, index: Index, data: Bytes) -> Result<SnapshotMeta, Error> {
        if index > self.log.applied() {
            return Err(Error::InvalidSnapshotIndex(format!(
                "index {index} is not applied yet (applied {})",
                self.log.applied()
            )));
        }
        if index <= self.log.compacted().index {
            return Err(Error::InvalidSnapshotIndex(format!(
                "index {index} is already covered by the snapshot at {}",
                self.log.compacted().index
            )));
        }
        let term = self.log.term_at(index).expect("an applied, uncompacted index is in the log");
        let meta =
            SnapshotMeta { last_included: LogId::new(term, index), membership: self.configs.as_of(index).clone() };
        self.snapshot = Some(Snapshot { meta: meta.clone(), data });
        self.log.compact(index);
        self.configs.rebase(index, meta.membership.clone());
        Ok(meta)
    }

    /// Input: the snapshot handed out in `Ready::snapshot` is installed and durable.
    pub fn snapshot_installed(&mut self, last_included: LogId) {
        let Some(meta) = self.follower.snapshot.installing.take() else { return };
        if meta.last_included != last_included {
            tracing::warn!(node = self.id, %last_included, expected = %meta.last_included, "ignoring install report for another snapshot");
            self.follower.snapshot.installing = Some(meta);
            return;
        }
        self.log.snapshot_installed(last_included);
        self.follower.match_hint = self.follower.match_hint.max(last_included.index);
        self.follower.acked = self.follower.acked.max(last_included.index);
        if let Some(leader) = self.leader_id.filter(|id| *id != self.id) {
            let total = self.snapshot.as_ref().map_or(0, |s| s.data.len() as u64);
            let body = MessageBody::InstallSnapshotResponse {
                snapshot_index: last_included.index,
                next_offset: total,
                installed: true,
            };
            self.send(leader, body);
        }
        self.release_applied_reads();
    }

    /// Leader: sends the chunk at the peer's offset of the current snapshot.
    pub(crate) fn send_snapshot_chunk(&mut self, to: NodeId) {
        let now = self.now_ms;
        let chunk_bytes = self.config.snapshot_chunk_bytes;
        let Some(snapshot) = self.snapshot.as_ref() else { return };
        let Some(progress) = self.leader.as_mut().and_then(|l| l.progress.get_mut(&to)) else { return };
        let current = snapshot.meta.last_included.index;
        if !matches!(progress.state, ProgressState::Snapshot { snapshot_index, .. } if snapshot_index == current) {
            progress.become_snapshot(current);
        }
        let ProgressState::Snapshot { next_offset, sent_ms, .. } = &mut progress.state else {
            unreachable!("set above")
        };
        let total_bytes = snapshot.data.len() as u64;
        let offset = (*next_offset).min(total_bytes);
        let end = (offset + chunk_bytes).min(total_bytes);
        *sent_ms = Some(now);
        let data = snapshot.data.slice(offset as usize..end as usize);
        let body = MessageBody::InstallSnapshot { meta: snapshot.meta.clone(), offset, total_bytes, data };
        self.send(to, body);
    }

    /// Leader: resends the chunk in flight to peers that did not answer within an election
    /// timeout (resuming from the last acknowledged offset).
    pub(crate) fn tick_snapshot_sends(&mut self) {
        let since = self.now_ms.saturating_sub(self.config.election_timeout_ms_min);
        let Some(leader) = self.leader.as_ref() else { return };
        let stalled: Vec<NodeId> = leader
            .progress
            .iter()
            .filter(|(_, p)| matches!(p.state, ProgressState::Snapshot { sent_ms, .. } if sent_ms.is_none_or(|sent| sent <= since)))
            .map(|(id, _)| *id)
            .collect();
        for to in stalled {
            self.send_snapshot_chunk(to);
        }
    }

    /// Leader: a follower's answer to a chunk.
    pub(crate) fn handle_snapshot_response(
        &mut self,
        from: NodeId,
        snapshot_index: Index,
        next_offset: u64,
        installed: bool,
    ) {
        let now = self.now_ms;
        if snapshot_index > self.log.last_index() {
            tracing::warn!(node = self.id, from, snapshot_index, "ignoring a snapshot answer beyond the log");
            return;
        }
        let Some(progress) = self.leader.as_mut().and_then(|l| l.progress.get_mut(&from)) else { return };
        progress.last_contact_ms = Some(now);
        if installed {
            let advanced = progress.on_match(snapshot_index);
            progress.become_replicate();
            if advanced {
                self.maybe_commit();
            }
            return;
        }
        match &mut progress.state {
            ProgressState::Snapshot { snapshot_index: sending, next_offset: offset, sent_ms }
                if *sending == snapshot_index =>
            {
                *offset = next_offset;
                *sent_ms = None;
            }
            _ => return,
        }
        self.send_snapshot_chunk(from);
    }

    /// Follower: one chunk of a snapshot from the leader.
    pub(crate) fn handle_snapshot_chunk(
        &mut self,
        from: NodeId,
        meta: SnapshotMeta,
        offset: u64,
        total_bytes: u64,
        data: Bytes,
    ) {
        self.accept_leader(from);
        if self.follower.snapshot.is_installing() {
            return;
        }
        let index = meta.last_included.index;
        let covered = index <= self.log.compacted().index;
        if covered || (self.log.matches(meta.last_included) && index <= self.log.persisted()) {
            // Already durable here: the leader only needs to learn our match point.
            let body = MessageBody::InstallSnapshotResponse {
                snapshot_index: index,
                next_offset: total_bytes,
                installed: true,
            };
            self.send(from, body);
            return;
        }
        let receiving = &mut self.follower.snapshot.receiving;
        if receiving.as_ref().is_none_or(|r| r.meta != meta || r.total_bytes != total_bytes) {
            if offset != 0 {
                self.reply_snapshot_offset(from, index, 0);
                return;
            }
            *receiving = Some(Receiving { meta, total_bytes, data: BytesMut::new() });
        }
        let receiving = self.follower.snapshot.receiving.as_mut().expect("set above");
        let expected = receiving.data.len() as u64;
        if offset != expected {
            self.reply_snapshot_offset(from, index, expected);
            return;
        }
        receiving.data.extend_from_slice(&data);
        if (receiving.data.len() as u64) < receiving.total_bytes {
            let next = receiving.data.len() as u64;
            self.reply_snapshot_offset(from, index, next);
            return;
        }
        let receiving = self.follower.snapshot.receiving.take().expect("set above");
        self.complete_snapshot(receiving.meta, receiving.data.freeze());
    }

    fn reply_snapshot_offset(&mut self, to: NodeId, snapshot_index: Index, next_offset: u64) {
        self.send(to, MessageBody::InstallSnapshotResponse { snapshot_index, next_offset, installed: false });
    }

    /// Follower: the whole snapshot arrived; hand it to the application and freeze the log until
    /// it reports the installation.
    fn complete_snapshot(&mut self, meta: SnapshotMeta, data: Bytes) {
        let last_included = meta.last_included;
        tracing::info!(node = self.id, %last_included, bytes = data.len(), "snapshot received");
        if !self.log.matches(last_included) {
            self.configs.truncate_from(last_included.index + 1);
        }
        self.log.reset_to_snapshot(last_included);
        self.configs.rebase(last_included.index, meta.membership.clone());
        let snapshot = Snapshot { meta: meta.clone(), data };
        self.snapshot = Some(snapshot.clone());
        self.out.snapshot = Some(snapshot);
        self.follower.snapshot.installing = Some(meta);
        self.on_config_changed();
    }
}
