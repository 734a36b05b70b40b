//! The `Storage` contract, checked against both backends.

use keel_core::{Config, HardState, LogId, Membership, RaftNode, RecoveredState, Snapshot, SnapshotMeta};

use super::{entries, entry, for_each_backend, reload, seed_log, snapshot, write, Backend};
use crate::storage::engine::PURGE_PER_COMMIT_MIN;
use crate::storage::records::{log_key, Space};
use crate::storage::{Storage, StorageError};

for_each_backend!(
    empty_disk_loads_as_a_new_node,
    writes_before_load_are_refused,
    synced_entries_and_hard_state_survive_a_restart,
    group_commit_one_sync_covers_many_appends,
    sync_without_writes_returns_the_last_entry,
    log_write_truncates_then_appends_in_order,
    pure_truncation_moves_the_last_entry_back,
    invalid_log_writes_are_refused,
    hard_state_is_durable_on_return,
    install_snapshot_keeps_a_matching_suffix,
    install_snapshot_drops_a_mismatching_log,
    install_snapshot_beyond_the_log_drops_it,
    install_snapshot_at_the_stored_point_keeps_the_log,
    compaction_deletes_covered_entries_and_keeps_the_snapshot,
    compaction_purges_covered_entries_a_slice_per_commit,
    a_restart_in_the_middle_of_a_purge_finishes_it,
    install_below_the_purge_point_deletes_everything_above_it,
    invalid_compactions_are_refused,
    bootstrap_snapshot_at_index_zero_round_trips,
    loaded_state_builds_a_raft_node,
    stale_hard_state_is_refused,
);

fn empty_disk_loads_as_a_new_node<B: Backend>(backend: &mut B) {
    let loaded = backend.storage().load().unwrap();
    assert!(loaded.is_empty());
    assert_eq!(loaded.applied, 0);
    assert_eq!(loaded.repaired_tail, None);
    assert_eq!(backend.storage().last_log_id(), LogId::default());
    let recovered = loaded.into_recovered();
    let joining = RecoveredState::joining();
    assert_eq!(
        (recovered.hard_state, recovered.snapshot, recovered.entries, recovered.applied),
        (joining.hard_state, joining.snapshot, joining.entries, joining.applied)
    );
}

fn writes_before_load_are_refused<B: Backend>(backend: &mut B) {
    let storage = backend.storage();
    assert!(matches!(storage.append(&write(1, entries(1, 1, 1))), Err(StorageError::NotLoaded)));
    assert!(matches!(storage.save_hard_state(HardState::default()), Err(StorageError::NotLoaded)));
    assert!(matches!(storage.sync(), Err(StorageError::NotLoaded)));
    let message = storage.sync().unwrap_err().to_string();
    assert!(message.contains("call load()"), "{message}");
}

fn synced_entries_and_hard_state_survive_a_restart<B: Backend>(backend: &mut B) {
    seed_log(backend, 2, entries(1, 1, 3).into_iter().chain(entries(2, 4, 5)).collect());
    let loaded = reload(backend);
    assert_eq!(loaded.hard_state, HardState { term: 2, voted_for: Some(1) });
    assert_eq!(loaded.entries, entries(1, 1, 3).into_iter().chain(entries(2, 4, 5)).collect::<Vec<_>>());
    assert_eq!(loaded.snapshot, None);
    assert_eq!(loaded.last_log_id(), LogId::new(2, 5));
    assert_eq!(backend.storage().last_log_id(), LogId::new(2, 5));
}

fn group_commit_one_sync_covers_many_appends<B: Backend>(backend: &mut B) {
    seed_log(backend, 1, Vec::new());
    let storage = backend.storage();
    for index in 1..=50 {
        storage.append(&write(index, vec![entry(1, index)])).unwrap();
        assert!(storage.has_unsynced_writes());
        assert_eq!(storage.last_log_id(), LogId::new(1, index));
    }
    assert_eq!(storage.sync().unwrap(), LogId::new(1, 50));
    assert!(!storage.has_unsynced_writes());
    assert_eq!(reload(backend).entries, entries(1, 1, 50));
}

fn sync_without_writes_returns_the_last_entry<B: Backend>(backend: &mut B) {
    seed_log(backend, 1, entries(1, 1, 3));
    assert_eq!(backend.storage().sync().unwrap(), LogId::new(1, 3));
    assert_eq!(backend.storage().sync().unwrap(), LogId::new(1, 3));
}

fn log_write_truncates_then_appends_in_order<B: Backend>(backend: &mut B) {
    seed_log(backend, 3, entries(1, 1, 5));
    let storage = backend.storage();
    storage.append(&write(3, entries(2, 3, 4))).unwrap();
    storage.append(&write(5, entries(2, 5, 6))).unwrap();
    storage.append(&write(6, entries(3, 6, 7))).unwrap();
    assert_eq!(storage.sync().unwrap(), LogId::new(3, 7));
    let expected: Vec<_> = entries(1, 1, 2).into_iter().chain(entries(2, 3, 5)).chain(entries(3, 6, 7)).collect();
    assert_eq!(reload(backend).entries, expected);
}

fn pure_truncation_moves_the_last_entry_back<B: Backend>(backend: &mut B) {
    seed_log(backend, 2, entries(1, 1, 2).into_iter().chain(entries(2, 3, 6)).collect());
    let storage = backend.storage();
    storage.append(&write(4, Vec::new())).unwrap();
    assert_eq!(storage.last_log_id(), LogId::new(2, 3));
    assert_eq!(storage.sync().unwrap(), LogId::new(2, 3));
    storage.append(&write(3, Vec::new())).unwrap();
    assert_eq!(storage.sync().unwrap(), LogId::new(1, 2));
    assert_eq!(reload(backend).entries, entries(1, 1, 2));
}

fn invalid_log_writes_are_refused<B: Backend>(backend: &mut B) {
    seed_log(backend, 2, entries(2, 1, 3));
    let storage = backend.storage();
    let hole = storage.append(&write(5, entries(2, 5, 5))).unwrap_err();
    assert!(matches!(hole, StorageError::InvalidRequest(_)), "{hole}");
    assert!(hole.to_string().contains("hole"), "{hole}");
    let gap = storage.append(&write(4, vec![entry(2, 4), entry(2, 6)])).unwrap_err();
    assert!(gap.to_string().contains("contiguous"), "{gap}");
    let term = storage.append(&write(4, vec![entry(1, 4)])).unwrap_err();
    assert!(term.to_string().contains("terms never decrease"), "{term}");
    storage.compact(&snapshot(2, 2)).unwrap();
    let rewrite = storage.append(&write(2, entries(2, 2, 2))).unwrap_err();
    assert!(rewrite.to_string().contains("rewrite the snapshot"), "{rewrite}");
    assert_eq!(storage.last_log_id(), LogId::new(2, 3), "refused writes change nothing");
}

fn hard_state_is_durable_on_return<B: Backend>(backend: &mut B) {
    let storage = backend.storage();
    storage.load().unwrap();
    storage.save_hard_state(HardState { term: 7, voted_for: None }).unwrap();
    storage.save_hard_state(HardState { term: 8, voted_for: Some(3) }).unwrap();
    assert_eq!(reload(backend).hard_state, HardState { term: 8, voted_for: Some(3) });
}

fn install_snapshot_keeps_a_matching_suffix<B: Backend>(backend: &mut B) {
    seed_log(backend, 1, entries(1, 1, 10));
    let snap = snapshot(1, 6);
    backend.storage().install_snapshot(&snap).unwrap();
    assert_eq!(backend.storage().last_log_id(), LogId::new(1, 10));
    let loaded = reload(backend);
    assert_eq!(loaded.snapshot, Some(snap));
    assert_eq!(loaded.entries, entries(1, 7, 10));
    assert_eq!(loaded.applied, 6);
}

fn install_snapshot_drops_a_mismatching_log<B: Backend>(backend: &mut B) {
    seed_log(backend, 2, entries(1, 1, 10));
    backend.storage().install_snapshot(&snapshot(2, 6)).unwrap();
    assert_eq!(backend.storage().last_log_id(), LogId::new(2, 6));
    assert_eq!(backend.storage().sync().unwrap(), LogId::new(2, 6));
    let loaded = reload(backend);
    assert_eq!(loaded.entries, Vec::new());
    assert_eq!(loaded.last_log_id(), LogId::new(2, 6));
    backend.storage().append(&write(7, entries(2, 7, 8))).unwrap();
    assert_eq!(backend.storage().sync().unwrap(), LogId::new(2, 8));
    assert_eq!(reload(backend).entries, entries(2, 7, 8));
}

fn install_snapshot_beyond_the_log_drops_it<B: Backend>(backend: &mut B) {
    seed_log(backend, 1, entries(1, 1, 4));
    backend.storage().install_snapshot(&snapshot(1, 20)).unwrap();
    let loaded = reload(backend);
    assert_eq!(loaded.entries, Vec::new());
    assert_eq!(loaded.applied, 20);
}

fn install_snapshot_at_the_stored_point_keeps_the_log<B: Backend>(backend: &mut B) {
    seed_log(backend, 1, entries(1, 1, 8));
    backend.storage().compact(&snapshot(1, 3)).unwrap();
    backend.storage().install_snapshot(&snapshot(1, 3)).unwrap();
    assert_eq!(reload(backend).entries, entries(1, 4, 8));
}

fn compaction_deletes_covered_entries_and_keeps_the_snapshot<B: Backend>(backend: &mut B) {
    seed_log(backend, 1, entries(1, 1, 10));
    backend.storage().compact(&snapshot(1, 4)).unwrap();
    let loaded = reload(backend);
    assert_eq!(loaded.snapshot, Some(snapshot(1, 4)));
    assert_eq!(loaded.entries, entries(1, 5, 10));
    backend.storage().compact(&snapshot(1, 10)).unwrap();
    assert_eq!(backend.storage().sync().unwrap(), LogId::new(1, 10));
    let loaded = reload(backend);
    assert_eq!(loaded.snapshot, Some(snapshot(1, 10)));
    assert_eq!(loaded.entries, Vec::new());
    assert_eq!(loaded.applied, 10);
}

/// The log keys in `from..=to` that are stored.
fn stored_keys<B: Backend>(backend: &mut B, from: u64, to: u64) -> Vec<u64> {
    (from..=to).filter(|index| backend.raw_get(Space::Log, &log_key(*index)).is_some()).collect()
}

/// Checks that the covered keys still stored are the top of `1..=covered`, at most `most`.
fn purge_left<B: Backend>(backend: &mut B, covered: u64, most: u64) -> u64 {
    let left = stored_keys(backend, 1, covered);
    let count = left.len() as u64;
    assert!(count <= most, "{count} covered entries left, {most} at most");
    assert_eq!(left, (covered - count + 1..=covered).collect::<Vec<_>>(), "the lowest go first");
    count
}

fn compaction_purges_covered_entries_a_slice_per_commit<B: Backend>(backend: &mut B) {
    let covered = PURGE_PER_COMMIT_MIN * 4 + 3;
    seed_log(backend, 1, entries(1, 1, covered + 5));
    backend.storage().compact(&snapshot(1, covered)).unwrap();
    // Each commit (the compaction's own included) deletes at least PURGE_PER_COMMIT_MIN.
    let mut left = purge_left(backend, covered, covered - PURGE_PER_COMMIT_MIN);
    assert!(left > 0, "a purge is under way");
    let mut next = covered + 6;
    while left > 0 {
        backend.storage().append(&write(next, entries(1, next, next))).unwrap();
        left = purge_left(backend, covered, left.saturating_sub(PURGE_PER_COMMIT_MIN));
        next += 1;
    }
    // Nothing above the snapshot was touched.
    assert_eq!(stored_keys(backend, covered + 1, next), (covered + 1..next).collect::<Vec<_>>());
    assert_eq!(backend.storage().sync().unwrap(), LogId::new(1, next - 1));
    let loaded = reload(backend);
    assert_eq!(loaded.snapshot, Some(snapshot(1, covered)));
    assert_eq!(loaded.entries, entries(1, covered + 1, next - 1));
}

fn a_restart_in_the_middle_of_a_purge_finishes_it<B: Backend>(backend: &mut B) {
    let covered = PURGE_PER_COMMIT_MIN * 3;
    seed_log(backend, 1, entries(1, 1, covered + 3));
    backend.storage().compact(&snapshot(1, covered)).unwrap();
    assert!(purge_left(backend, covered, covered) > 0, "a purge is under way");
    let loaded = reload(backend);
    assert_eq!(loaded.snapshot, Some(snapshot(1, covered)));
    assert_eq!(loaded.entries, entries(1, covered + 1, covered + 3));
    assert_eq!(purge_left(backend, covered, 0), 0, "recovery deleted the rest");
    backend.storage().append(&write(covered + 4, entries(2, covered + 4, covered + 4))).unwrap();
    assert_eq!(backend.storage().sync().unwrap(), LogId::new(2, covered + 4));
}

fn install_below_the_purge_point_deletes_everything_above_it<B: Backend>(backend: &mut B) {
    let covered = PURGE_PER_COMMIT_MIN * 8;
    seed_log(backend, 1, entries(1, 1, covered + 10));
    backend.storage().compact(&snapshot(1, covered)).unwrap();
    // A snapshot of another history, below the stored one and below the purge point: nothing
    // above its point may stay, or it would be read back as the log.
    let point = PURGE_PER_COMMIT_MIN / 2;
    assert!(stored_keys(backend, 1, point).is_empty() && !stored_keys(backend, point, covered).is_empty());
    let lower = snapshot(2, point);
    backend.storage().install_snapshot(&lower).unwrap();
    assert_eq!(stored_keys(backend, point + 1, covered + 10), Vec::<u64>::new());
    backend.storage().save_hard_state(HardState { term: 2, voted_for: None }).unwrap();
    backend.storage().append(&write(point + 1, entries(2, point + 1, point + 3))).unwrap();
    assert_eq!(backend.storage().sync().unwrap(), LogId::new(2, point + 3));
    let loaded = reload(backend);
    assert_eq!(loaded.snapshot, Some(lower));
    assert_eq!(loaded.entries, entries(2, point + 1, point + 3));
}

fn invalid_compactions_are_refused<B: Backend>(backend: &mut B) {
    seed_log(backend, 1, entries(1, 1, 10));
    let storage = backend.storage();
    storage.compact(&snapshot(1, 5)).unwrap();
    for bad in [snapshot(1, 5), snapshot(1, 3), snapshot(1, 11), snapshot(2, 7)] {
        let error = storage.compact(&bad).unwrap_err();
        assert!(matches!(error, StorageError::InvalidRequest(_)), "{error}");
    }
    assert_eq!(reload(backend).snapshot, Some(snapshot(1, 5)));
}

fn bootstrap_snapshot_at_index_zero_round_trips<B: Backend>(backend: &mut B) {
    backend.storage().load().unwrap();
    let bootstrap = RecoveredState::bootstrap(Membership::with_voters([1, 2, 3]));
    let snap = bootstrap.snapshot.clone().unwrap();
    backend.storage().install_snapshot(&snap).unwrap();
    let loaded = reload(backend);
    assert!(!loaded.is_empty());
    let recovered = loaded.into_recovered();
    assert_eq!(recovered.snapshot, bootstrap.snapshot);
    assert_eq!((recovered.hard_state, recovered.applied), (bootstrap.hard_state, bootstrap.applied));
    assert!(recovered.entries.is_empty());
    assert!(RaftNode::new(Config::new(1), recovered).is_ok());
}

fn loaded_state_builds_a_raft_node<B: Backend>(backend: &mut B) {
    seed_log(backend, 2, entries(2, 1, 6));
    let meta = SnapshotMeta { last_included: LogId::new(2, 3), membership: Membership::with_voters([1, 2, 3]) };
    backend.storage().compact(&Snapshot { meta, data: bytes::Bytes::from_static(b"sm") }).unwrap();
    let recovered = reload(backend).into_recovered();
    let node = RaftNode::new(Config::new(1), recovered).expect("core accepts the recovered state");
    assert_eq!(node.last_log_id(), LogId::new(2, 6));
    assert_eq!(node.first_log_index(), 4);
    assert_eq!(node.persisted_index(), 6);
}

fn stale_hard_state_is_refused<B: Backend>(backend: &mut B) {
    seed_log(backend, 1, entries(1, 1, 2));
    backend.storage().append(&write(3, entries(3, 3, 3))).unwrap();
    backend.storage().sync().unwrap();
    let error = super::reload_err(backend);
    assert!(matches!(error, StorageError::Inconsistent(_)), "{error}");
    assert!(error.to_string().contains("hard state is stale"), "{error}");
}

#[test]
fn storages_are_send_and_usable_as_trait_objects() {
    fn assert_send<T: Send + 'static>() {}
    assert_send::<crate::storage::MemoryStorage>();
    assert_send::<crate::storage::MemoryDisk>();
    #[cfg(not(madsim))]
    assert_send::<crate::storage::FjallStorage>();
    let mut boxed: Box<dyn Storage + Send> = Box::new(crate::storage::MemoryStorage::new());
    assert!(boxed.load().unwrap().is_empty());
}
