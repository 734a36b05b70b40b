//! The driver: one task that owns a node's `RaftNode` and state machine and carries out the core's
//! effects in the documented order (keel-core `ready.rs`).
//!
//! Loop: wait for the next input (a peer batch, a client request, a durability report from the
//! storage worker, or a tick), feed it to the core, then `process_ready`: sync the hard state,
//! install a received snapshot, queue the log write with the storage worker (which syncs in the
//! background and reports back), send messages, apply committed entries to the KV store and
//! answer the clients waiting on them, serve released reads. Every queue is bounded; a storage
//! failure stops the node.

mod housekeeping;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use keel_core::kv::{KeyRange, KvCommand, KvStore, StoreImage};
use keel_core::{
    Entry, EntryPayload, Error as CoreError, Index, Membership, Message, RaftNode, ReadPolicy, Ready, Role,
};
use tokio::sync::{broadcast, mpsc, watch};

use super::envelope;
use super::handle::{ClientError, NodeStatus, PeerStatus, ReadConsistency, Reply, Request};
use super::storage_worker::{StorageWorker, WorkerState};
use super::{MessageSink, NodeConfig, NodeError};
use crate::clock::Clock;

/// A client waiting for a log entry to be applied.
enum Waiter {
    Write(Reply<keel_core::kv::ApplyResult>),
    Membership(Reply<Membership>),
}

/// A read waiting for the core to confirm it.
enum ReadWaiter {
    Keys(Vec<Bytes>, Reply<Vec<Option<keel_core::kv::KeyValue>>>),
    Scan(Bytes, Reply<keel_core::kv::RangeResult>),
    Range(super::handle::RangeQuery, Reply<super::handle::RangeAnswer>),
}

/// Where the driver publishes what it applies: events, the committed membership and the etcd
/// authentication table.
pub(crate) type Publishers = (
    broadcast::Sender<keel_core::kv::KvEvent>,
    watch::Sender<(Index, Membership)>,
    watch::Sender<Arc<keel_core::kv::AuthState>>,
);

pub(crate) struct Driver {
    pub config: NodeConfig,
    pub raft: RaftNode,
    pub kv: KvStore,
    pub clock: Arc<dyn Clock>,
    pub storage: StorageWorker,
    pub storage_events: watch::Receiver<WorkerState>,
    pub sink: Box<dyn MessageSink>,
    pub requests: mpsc::Receiver<Request>,
    pub inbound: mpsc::Receiver<Vec<Message>>,
    pub events: broadcast::Sender<keel_core::kv::KvEvent>,
    pub membership: watch::Sender<(Index, Membership)>,
    /// Where the etcd authentication table is published when an applied entry changes it.
    pub auth: watch::Sender<Arc<keel_core::kv::AuthState>>,
    pub shutdown: watch::Receiver<bool>,
    /// Writes and membership changes waiting for their entry: index → (term, deadline, waiter,
    /// start time in microseconds for the commit-latency metric).
    waiting: BTreeMap<Index, (u64, u64, Waiter, u64)>,
    reads: BTreeMap<u64, ReadWaiter>,
    next_read_id: u64,
    /// The applied index at which the next snapshot is taken (staggered per node, see
    /// [`housekeeping::first_snapshot_index`]).
    next_snapshot_index: Index,
    /// The snapshot being encoded away from the driver, if any.
    encoding: Option<housekeeping::SnapshotEncoding>,
    /// Held by each whole-store read running away from the driver (its count bounds them).
    store_walks: housekeeping::StoreWalks,
    next_expire_ms: u64,
    next_history_compaction_ms: u64,
    /// The last term in which this node, as leader, gave every lease its full TTL again.
    leases_refreshed_term: u64,
    peers_known: Option<Membership>,
}

impl Driver {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: NodeConfig,
        raft: RaftNode,
        kv: KvStore,
        clock: Arc<dyn Clock>,
        storage: (StorageWorker, watch::Receiver<WorkerState>),
        sink: Box<dyn MessageSink>,
        channels: (mpsc::Receiver<Request>, mpsc::Receiver<Vec<Message>>),
        broadcast: Publishers,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        let next_snapshot_index = housekeeping::first_snapshot_index(&config, raft.first_log_index().saturating_sub(1));
        Self {
            config,
            raft,
            kv,
            clock,
            storage: storage.0,
            storage_events: storage.1,
            sink,
            requests: channels.0,
            inbound: channels.1,
            events: broadcast.0,
            membership: broadcast.1,
            auth: broadcast.2,
            shutdown,
            waiting: BTreeMap::new(),
            reads: BTreeMap::new(),
            next_read_id: 1,
            next_snapshot_index,
            encoding: None,
            store_walks: housekeeping::StoreWalks::default(),
            next_expire_ms: 0,
            next_history_compaction_ms: 0,
            leases_refreshed_term: 0,
            peers_known: None,
        }
    }

    /// Runs until shutdown or a fatal error.
    pub async fn run(mut self) -> Result<(), NodeError> {
        let mut ticker = tokio::time::interval(Duration::from_millis(self.config.tick_interval_ms));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        self.sync_peers();
        loop {
            tokio::select! {
                biased;
                _ = self.shutdown.changed() => break,
                Ok(()) = self.storage_events.changed() => self.on_storage_event()?,
                (index, encoded) = housekeeping::encoding_finished(&mut self.encoding, self.clock.as_ref()) => {
                    self.snapshot_encoded(index, encoded).await?;
                }
                Some(batch) = self.inbound.recv() => self.on_peer_batch(batch),
                Some(request) = self.requests.recv() => self.on_request(request),
                _ = ticker.tick() => self.on_tick(),
            }
            self.drain_inputs()?;
            self.process_ready().await?;
        }
        self.fail_all_waiters(ClientError::ShuttingDown);
        Ok(())
    }

    /// Takes further queued inputs without waiting, so that one `Ready` covers them all.
    fn drain_inputs(&mut self) -> Result<(), NodeError> {
        for _ in 0..self.config.batch_inputs_max {
            if self.storage_events.has_changed().unwrap_or(false) {
                self.on_storage_event()?;
            } else if let Ok(batch) = self.inbound.try_recv() {
                self.on_peer_batch(batch);
            } else if let Ok(request) = self.requests.try_recv() {
                self.on_request(request);
            } else {
                break;
            }
        }
        Ok(())
    }

    /// Takes the storage worker's latest report.
    fn on_storage_event(&mut self) -> Result<(), NodeError> {
        let report = match &*self.storage_events.borrow_and_update() {
            WorkerState::Started => return Ok(()),
            WorkerState::Persisted(log_id) => Ok(*log_id),
            WorkerState::Failed(error) => Err(NodeError::Storage(error.to_string())),
        };
        self.raft.persisted(report?);
        Ok(())
    }

    fn on_peer_batch(&mut self, batch: Vec<Message>) {
        for message in batch {
            self.raft.step(message);
        }
    }

    fn on_tick(&mut self) {
        let now = self.clock.now_ms();
        self.raft.tick(now);
        self.expire_waiters(now);
        self.propose_expiry();
        self.propose_history_compaction();
    }

    /// Carries out the core's effects in the contract's order.
    async fn process_ready(&mut self) -> Result<(), NodeError> {
        while self.raft.has_ready() {
            let ready = self.raft.ready();
            self.carry_out(ready).await?;
        }
        Ok(())
    }

    async fn carry_out(&mut self, ready: Ready) -> Result<(), NodeError> {
        if let Some(hard_state) = ready.hard_state {
            self.storage.save_hard_state(hard_state).await.map_err(NodeError::Storage)?;
        }
        if let Some(snapshot) = ready.snapshot {
            self.install_snapshot(snapshot).await?;
        }
        if let Some(write) = ready.log_write {
            self.storage.append(write).await.map_err(NodeError::Storage)?;
        }
        for message in ready.messages {
            self.sink.send(message);
        }
        self.apply(ready.committed_entries);
        for outcome in ready.reads {
            self.finish_read(outcome.id, outcome.result);
        }
        if let Some(soft_state) = &ready.soft_state {
            metrics::counter!(crate::metrics::LEADER_CHANGES_TOTAL).increment(1);
            metrics::gauge!(crate::metrics::IS_LEADER).set(f64::from(u8::from(soft_state.role == Role::Leader)));
        }
        metrics::gauge!(crate::metrics::TERM).set(self.raft.term() as f64);
        metrics::gauge!(crate::metrics::COMMIT_INDEX).set(self.raft.commit_index() as f64);
        metrics::gauge!(crate::metrics::APPLIED_INDEX).set(self.raft.applied_index() as f64);
        self.maybe_snapshot();
        self.sync_peers();
        Ok(())
    }

    async fn install_snapshot(&mut self, snapshot: keel_core::Snapshot) -> Result<(), NodeError> {
        let kv = KvStore::restore(&snapshot.data).map_err(|error| {
            NodeError::Snapshot(format!("the leader's snapshot at {} is corrupt: {error}", snapshot.meta.last_included))
        })?;
        let last_included = snapshot.meta.last_included;
        self.storage.install_snapshot(snapshot).await.map_err(NodeError::Storage)?;
        self.kv = kv;
        self.next_snapshot_index = last_included.index + self.config.snapshot_interval_entries;
        // A snapshot of the store this one replaces would be refused by the core: not worth finishing.
        if let Some(encoding) = self.encoding.take() {
            encoding.abort();
        }
        self.raft.snapshot_installed(last_included);
        tracing::info!(index = last_included.index, term = last_included.term, "installed the leader's snapshot");
        self.publish_membership();
        self.publish_auth();
        Ok(())
    }

    fn apply(&mut self, entries: Vec<Entry>) {
        let Some(last) = entries.last().map(|e| e.log_id.index) else { return };
        for entry in entries {
            self.apply_entry(entry);
        }
        self.raft.applied(last);
    }

    fn apply_entry(&mut self, entry: Entry) {
        let index = entry.log_id.index;
        let result = match &entry.payload {
            EntryPayload::Command(bytes) => match envelope::decode(bytes) {
                Ok((proposed_at_ms, command)) => Some(self.kv.apply(index, proposed_at_ms, &command)),
                Err(error) => {
                    tracing::error!(index, "skipping an undecodable command: {error}");
                    self.kv.advance_applied_index(index);
                    None
                }
            },
            EntryPayload::Membership(_) | EntryPayload::Noop => {
                self.kv.advance_applied_index(index);
                None
            }
        };
        // No fan-out work at all while nobody watches (the common case under write load).
        if let Some(result) = result.as_ref().filter(|_| self.events.receiver_count() > 0) {
            for event in &result.events {
                let _ = self.events.send(event.clone());
            }
        }
        if matches!(entry.payload, EntryPayload::Membership(_)) {
            self.publish_membership();
        }
        self.publish_auth();
        self.answer_waiter(entry, result);
    }

    /// Publishes the authentication table if it changed: every change moves its revision, so
    /// comparing revisions is enough (and costs nothing for the entries that leave it alone).
    fn publish_auth(&mut self) {
        if self.kv.auth().revision() != self.auth.borrow().revision() {
            self.auth.send_replace(Arc::new(self.kv.auth().clone()));
        }
    }

    fn answer_waiter(&mut self, entry: Entry, result: Option<keel_core::kv::ApplyResult>) {
        let Some((term, _, waiter, started_us)) = self.waiting.remove(&entry.log_id.index) else { return };
        let ours = term == entry.log_id.term;
        if ours {
            let elapsed_us = self.clock.now_us().saturating_sub(started_us);
            crate::metrics::record_seconds(crate::metrics::COMMIT_LATENCY_SECONDS, elapsed_us);
        }
        match waiter {
            Waiter::Write(reply) => {
                let answer = match (ours, result) {
                    (true, Some(result)) => Ok(result),
                    (true, None) => Err(ClientError::Invalid("the command could not be decoded".into())),
                    (false, _) => Err(ClientError::ProposalDropped("another leader's entry took its place".into())),
                };
                let _ = reply.send(answer);
            }
            Waiter::Membership(reply) => {
                let answer = if ours {
                    Ok(self.raft.membership().clone())
                } else {
                    Err(ClientError::ProposalDropped("another leader's entry took its place".into()))
                };
                let _ = reply.send(answer);
            }
        }
    }

    fn publish_membership(&mut self) {
        let (index, membership) = self.raft.committed_membership();
        let current = (index, membership.clone());
        self.membership.send_if_modified(|published| {
            let changed = *published != current;
            *published = current;
            changed
        });
    }

    /// Keeps the transport's peer list equal to the latest configuration's addresses, on top of
    /// the configured initial members: a node that joins an existing cluster knows no
    /// configuration until the leader's log reaches it, yet must answer the leader meanwhile.
    fn sync_peers(&mut self) {
        if self.peers_known.as_ref() == Some(self.raft.membership()) {
            return;
        }
        let membership = self.raft.membership().clone();
        let mut peers = self.config.initial_members.clone();
        peers.extend(membership.addresses.iter().map(|(id, address)| (*id, address.clone())));
        self.peers_known = Some(membership);
        peers.remove(&self.raft.id());
        self.sink.set_peers(peers);
    }

    fn on_request(&mut self, request: Request) {
        match request {
            Request::Write { command, reply } => self.on_write(command, reply),
            Request::Read { keys, consistency, reply } => self.on_read(ReadWaiter::Keys(keys, reply), consistency),
            Request::Scan { prefix, consistency, reply } => self.on_read(ReadWaiter::Scan(prefix, reply), consistency),
            Request::Range { query, consistency, reply } => self.on_read(ReadWaiter::Range(query, reply), consistency),
            Request::ChangeMembership { change, reply } => {
                let deadline = self.deadline();
                match self.raft.change_membership(change) {
                    Ok(log_id) => {
                        let started_us = self.clock.now_us();
                        let waiter = (log_id.term, deadline, Waiter::Membership(reply), started_us);
                        self.waiting.insert(log_id.index, waiter);
                    }
                    Err(error) => drop(reply.send(Err(map_core_error(error)))),
                }
            }
            Request::TransferLeader { target, reply } => {
                let _ = reply.send(self.raft.transfer_leadership(target).map_err(map_core_error));
            }
            Request::Status { reply } => {
                let _ = reply.send(Ok(self.status()));
            }
            Request::Subscribe { reply } => {
                let _ = reply.send(Ok((self.events.subscribe(), self.kv.current_revision())));
            }
            Request::Leases { id, reply } => {
                let leases = match id {
                    Some(id) => self.kv.lease(id).into_iter().collect(),
                    None => self.kv.lease_ids().into_iter().filter_map(|id| self.kv.lease(id)).collect(),
                };
                let _ = reply.send(Ok((leases, self.clock.wall_ms())));
            }
            Request::HashKv { revision, reply } => {
                // A walk over the whole store: on a copy, away from the driver (as snapshots).
                let walk = move |copy: StoreImage| {
                    let (compacted, current) = (copy.compacted_revision(), copy.current_revision());
                    copy.hash_kv(revision).map(|hash| (hash, compacted, current))
                };
                self.walk_store(walk, reply);
            }
            Request::KvSize { reply } => {
                let _ = reply.send(Ok(self.kv.size_bytes()));
            }
            Request::Alarms { reply } => {
                let _ = reply.send(Ok(self.kv.alarms().collect()));
            }
            Request::KvSnapshot { reply } => {
                self.walk_store(|copy: StoreImage| (copy.snapshot(), copy.current_revision()), reply);
            }
            Request::History { after_revision, limit, reply } => {
                let history = self.kv.watch(after_revision).map(|events| whole_revisions(events, limit));
                let _ = reply.send(history.map_err(ClientError::from));
            }
        }
    }

    fn deadline(&self) -> u64 {
        self.clock.now_ms() + self.config.request_timeout_ms
    }

    fn on_write(&mut self, command: KvCommand, reply: Reply<keel_core::kv::ApplyResult>) {
        if let Err(error) = self.config.kv_limits.validate(&command) {
            let _ = reply.send(Err(error.into()));
            return;
        }
        let deadline = self.deadline();
        match self.raft.propose(envelope::encode(self.clock.wall_ms(), &command)) {
            Ok(log_id) => {
                let waiter = (log_id.term, deadline, Waiter::Write(reply), self.clock.now_us());
                self.waiting.insert(log_id.index, waiter);
            }
            Err(error) => {
                let _ = reply.send(Err(map_core_error(error)));
            }
        }
    }

    fn on_read(&mut self, waiter: ReadWaiter, consistency: ReadConsistency) {
        let policy = match consistency {
            ReadConsistency::Eventual => return self.serve_read(waiter, Ok(self.raft.applied_index())),
            ReadConsistency::Lease if self.config.raft.lease.is_none() => {
                let error = ClientError::Invalid(
                    "lease reads are disabled on this cluster (they need check-quorum and a clock drift bound); use linearizable".into(),
                );
                return self.serve_read(waiter, Err(error));
            }
            ReadConsistency::Lease => ReadPolicy::Lease,
            ReadConsistency::Linearizable => ReadPolicy::Linearizable,
        };
        let id = self.next_read_id;
        self.next_read_id += 1;
        match self.raft.read(id, policy) {
            Ok(()) => {
                self.reads.insert(id, waiter);
            }
            Err(error) => self.serve_read(waiter, Err(map_core_error(error))),
        }
    }

    fn finish_read(&mut self, id: u64, result: Result<Index, CoreError>) {
        if let Some(waiter) = self.reads.remove(&id) {
            self.serve_read(waiter, result.map_err(map_core_error));
        }
    }

    fn serve_read(&mut self, waiter: ReadWaiter, confirmed: Result<Index, ClientError>) {
        match waiter {
            ReadWaiter::Keys(keys, reply) => {
                let answer = confirmed
                    .and_then(|_| keys.iter().map(|key| self.kv.get(key, None).map_err(ClientError::from)).collect());
                let _ = reply.send(answer);
            }
            ReadWaiter::Scan(prefix, reply) => {
                let answer = confirmed.and_then(|_| {
                    self.kv.range(&KeyRange::prefix(prefix.clone()), None, usize::MAX).map_err(ClientError::from)
                });
                let _ = reply.send(answer);
            }
            ReadWaiter::Range(query, reply) => {
                let current = self.kv.current_revision();
                let answer = match confirmed {
                    Ok(_) => Ok(self.kv.range(&query.range, query.revision, query.limit).map(|kvs| (kvs, current))),
                    Err(error) => Err(error),
                };
                let _ = reply.send(answer);
            }
        }
    }

    /// Answers waiters whose deadline passed: their write may still commit later.
    fn expire_waiters(&mut self, now: u64) {
        let expired: Vec<Index> =
            self.waiting.iter().filter(|(_, (_, deadline, _, _))| *deadline <= now).map(|(index, _)| *index).collect();
        for index in expired {
            if let Some((_, _, waiter, _)) = self.waiting.remove(&index) {
                match waiter {
                    Waiter::Write(reply) => drop(reply.send(Err(ClientError::OutcomeUnknown))),
                    Waiter::Membership(reply) => drop(reply.send(Err(ClientError::OutcomeUnknown))),
                }
            }
        }
    }

    /// Answers every waiter as the node stops: reads fail with `error`, but writes and membership
    /// changes already proposed may still commit under the next leader, so their outcome is
    /// unknown (`SHUTTING_DOWN` would tell the client they were not applied).
    fn fail_all_waiters(&mut self, error: ClientError) {
        for (_, (_, _, waiter, _)) in std::mem::take(&mut self.waiting) {
            match waiter {
                Waiter::Write(reply) => drop(reply.send(Err(ClientError::OutcomeUnknown))),
                Waiter::Membership(reply) => drop(reply.send(Err(ClientError::OutcomeUnknown))),
            }
        }
        for (_, waiter) in std::mem::take(&mut self.reads) {
            self.serve_read(waiter, Err(error.clone()));
        }
    }

    fn status(&self) -> NodeStatus {
        let now = self.clock.now_ms();
        let peers: Vec<PeerStatus> = self
            .raft
            .peer_progress()
            .into_iter()
            .map(|(id, match_index, contact)| PeerStatus {
                id,
                match_index,
                last_contact_ms_ago: contact.map(|c| now.saturating_sub(c)),
            })
            .collect();
        let timeout = self.config.raft.election_timeout_ms_min;
        let recent = |p: &PeerStatus| p.last_contact_ms_ago.is_some_and(|ago| ago < timeout);
        let membership = self.raft.membership().clone();
        let has_quorum = self.raft.role() == Role::Leader
            && keel_core::is_quorum(&membership, |id| {
                id == self.raft.id() || peers.iter().any(|p| p.id == id && recent(p))
            });
        NodeStatus {
            id: self.raft.id(),
            role: self.raft.role(),
            term: self.raft.term(),
            leader: self.raft.leader_hint(),
            commit_index: self.raft.commit_index(),
            applied_index: self.raft.applied_index(),
            last_log_index: self.raft.last_log_id().index,
            revision: self.kv.current_revision(),
            membership,
            peers,
            has_quorum,
        }
    }
}

/// Maps a core refusal to the client's error.
pub(crate) fn map_core_error(error: CoreError) -> ClientError {
    match error {
        CoreError::NotLeader(hint) if hint.leader_id.is_none() => ClientError::LeaderUnknown,
        CoreError::NotLeader(hint) => ClientError::NotLeader(hint),
        CoreError::TransferInProgress(hint) => ClientError::NotLeader(hint),
        CoreError::LeadershipLost(hint) if hint.leader_id.is_some() => ClientError::NotLeader(hint),
        CoreError::LeadershipLost(_) => ClientError::LeaderUnknown,
        CoreError::LeaderNotReady => ClientError::Unavailable("the new leader is not ready yet; retry shortly".into()),
        CoreError::TooManyUncommitted { limit } => {
            ClientError::Overloaded(format!("too many uncommitted writes ({limit})"))
        }
        CoreError::TooManyPendingReads { limit } => {
            ClientError::Overloaded(format!("too many pending reads ({limit})"))
        }
        CoreError::Timeout => ClientError::Timeout,
        CoreError::MembershipChangeInProgress => ClientError::MembershipChangeInProgress,
        other => ClientError::Membership(other.to_string()),
    }
}

/// At least `limit` events (fewer only at the end), never splitting a revision: a page ends
/// with every event of its last revision, so the next page can start after that revision.
fn whole_revisions(events: impl Iterator<Item = keel_core::kv::KvEvent>, limit: usize) -> Vec<keel_core::kv::KvEvent> {
    let mut page: Vec<keel_core::kv::KvEvent> = Vec::new();
    for event in events {
        if page.len() >= limit && page.last().is_some_and(|last| last.revision != event.revision) {
            break;
        }
        page.push(event);
    }
    page
}

#[cfg(test)]
mod tests {
    use super::whole_revisions;
    use keel_core::kv::{KvEvent, KvEventKind};

    fn event(revision: u64) -> KvEvent {
        KvEvent {
            revision,
            kind: KvEventKind::Put,
            key: "/k".into(),
            value: "v".into(),
            prev_value: None,
            create_revision: revision,
            mod_revision: revision,
            version: 1,
            lease: 0,
            prev_kv: None,
        }
    }

    #[test]
    fn history_pages_never_split_a_revision() {
        let events = [1, 2, 2, 2, 3, 4].map(event);
        let revisions = |page: Vec<KvEvent>| page.iter().map(|e| e.revision).collect::<Vec<_>>();
        assert_eq!(revisions(whole_revisions(events.clone().into_iter(), 2)), [1, 2, 2, 2]);
        assert_eq!(revisions(whole_revisions(events.clone().into_iter(), 5)), [1, 2, 2, 2, 3]);
        assert_eq!(revisions(whole_revisions(events.into_iter(), 100)), [1, 2, 2, 2, 3, 4]);
    }
}
