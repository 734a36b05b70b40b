//! The periodic corruption check (etcd's `--experimental-corrupt-check-time`): a store that has
//! silently diverged from the others (a bug, or damage that got past the checksums) gets etcd's
//! `CORRUPT` alarm, which `etcdctl alarm list` shows and `etcdctl alarm disarm` clears.
//!
//! Data flow: every `NodeConfig::corrupt_check_interval_ms` the leader hashes its store at its
//! current revision (`KvStore::hash_kv`, [`NodeHandle::hash_kv`]) and asks every other member of
//! the configuration, on that member's own etcd API, for `Maintenance.HashKV` at the same
//! revision. The hash of the history up to a revision is the same on every replica that has
//! compacted to the same revision, so a member that answers with the leader's compaction revision
//! and another hash has diverged: the leader raises `CORRUPT` for it through the log
//! (`KvCommand::Alarm`), once, and logs an error. A member that cannot answer (unreachable, not
//! at that revision yet, compacted differently) is skipped until the next round. The alarm is a
//! signal for the operator: replace the member's data (remove it, wipe its directory, add it
//! back) and disarm the alarm.

use std::sync::Arc;
use std::time::Duration;

use keel::proto::etcdserverpb::maintenance_client::MaintenanceClient;
use keel::proto::etcdserverpb::HashKvRequest;
use keel_core::kv::{Alarm, KvCommand};
use keel_core::{NodeId, Role};

use super::Shared;
use crate::node::NodeHandle;

/// The leader's hash of its store, and what it was taken at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Reference {
    hash: u32,
    compacted_revision: u64,
    revision: u64,
}

/// Runs a check every `interval_ms` (this node checks only while it leads) until aborted.
pub(super) async fn check_periodically(shared: Arc<Shared>, interval_ms: u64) {
    let interval = Duration::from_millis(interval_ms.max(1));
    loop {
        tokio::time::sleep(interval).await;
        if shared.closer.is_closed() {
            return;
        }
        let raised = check_once(&shared).await;
        if !raised.is_empty() {
            tracing::error!(
                node = shared.handle.id(),
                members = ?raised,
                "corruption check: these members' stores differ from the leader's at the same revision; \
                 raised CORRUPT. Replace their data (member remove, wipe the data directory, member add) \
                 and then disarm the alarm"
            );
        }
    }
}

/// One round: compares every other member's hash with this leader's and raises `CORRUPT` for
/// each member that differs and has no such alarm yet; returns those members.
async fn check_once(shared: &Shared) -> Vec<NodeId> {
    let handle = &shared.handle;
    let Ok(status) = handle.status().await else { return Vec::new() };
    if status.role != Role::Leader {
        return Vec::new();
    }
    let Some(reference) = reference(handle).await else { return Vec::new() };
    let mut diverged = Vec::new();
    for (&member, address) in &status.membership.addresses {
        if member == status.id || !status.membership.contains(member) {
            continue;
        }
        if let Some(hash) = member_hash(shared, address, reference).await {
            metrics::counter!(crate::metrics::CORRUPTION_CHECKS_TOTAL).increment(1);
            if hash != reference.hash {
                diverged.push(member);
            }
        }
    }
    let raised = match handle.alarms().await {
        Ok(alarms) => alarms,
        Err(_) => return Vec::new(),
    };
    let mut newly = Vec::new();
    for member in diverged {
        if raised.contains(&(u64::from(member), Alarm::Corrupt)) {
            continue;
        }
        let command = KvCommand::Alarm { member: u64::from(member), alarm: Alarm::Corrupt, active: true };
        if shared.propose(command).await.is_ok() {
            newly.push(member);
        }
    }
    newly
}

/// This node's hash at its current revision; none at revision 0 (an unchanged store written
/// before an empty store's revision became 1), since revision 0 in a `HashKV` request means
/// "your current revision", which would compare different histories.
async fn reference(handle: &NodeHandle) -> Option<Reference> {
    match handle.hash_kv(None).await {
        Ok(Ok((hash, compacted_revision, revision))) if revision > 0 => {
            Some(Reference { hash, compacted_revision, revision })
        }
        _ => None,
    }
}

/// The hash of the member at `address` at the reference's revision, if it answers within the
/// forwarding deadline with the same compaction revision (otherwise the two hashes cover
/// different histories).
async fn member_hash(shared: &Shared, address: &str, reference: Reference) -> Option<u32> {
    let revision = i64::try_from(reference.revision).ok()?;
    let mut client = MaintenanceClient::new(shared.forwarder.connect(address).await.ok()?);
    let mut request = tonic::Request::new(HashKvRequest { revision });
    // While authentication is enabled, HashKV needs the root role: the leader shows a root
    // token of its own, signed with the cluster's key.
    if let Some(token) = shared.internal_token().and_then(|token| token.parse().ok()) {
        request.metadata_mut().insert(super::auth_token::TOKEN_METADATA, token);
    }
    let answer = shared.forwarder.call(address, client.hash_kv(request)).await.ok()?;
    let same_history = u64::try_from(answer.compact_revision).ok() == Some(reference.compacted_revision);
    same_history.then_some(answer.hash)
}
