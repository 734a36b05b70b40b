//! The simulated disk: crash semantics and fault injection.

use keel_core::{HardState, LogId};

use super::{entries, snapshot, write, MemoryBackend};
use crate::storage::{CrashFault, LoadedState, MemoryDisk, MemoryStorage, RecordRef, Storage, StorageError};

/// Storage on a fresh disk holding hard state term 2, a snapshot at 1-3 and entries 4..=8 synced.
fn populated() -> MemoryStorage {
    let mut storage = MemoryStorage::new();
    storage.load().unwrap();
    storage.save_hard_state(HardState { term: 2, voted_for: Some(2) }).unwrap();
    storage.append(&write(1, entries(1, 1, 6))).unwrap();
    storage.append(&write(7, entries(2, 7, 8))).unwrap();
    storage.sync().unwrap();
    storage.compact(&snapshot(1, 3)).unwrap();
    storage
}

fn crash_and_load(disk: &MemoryDisk, fault: CrashFault) -> LoadedState {
    disk.crash(fault);
    MemoryStorage::open(disk.clone()).load().expect("load after crash")
}

#[test]
fn unsynced_writes_are_lost_on_crash_and_synced_ones_survive() {
    let mut storage = populated();
    storage.append(&write(9, entries(2, 9, 11))).unwrap();
    let disk = storage.disk();
    let loaded = crash_and_load(&disk, CrashFault::LoseUnsynced);
    assert_eq!(loaded.entries, entries(1, 4, 6).into_iter().chain(entries(2, 7, 8)).collect::<Vec<_>>());
    assert_eq!(loaded.hard_state, HardState { term: 2, voted_for: Some(2) });
    assert_eq!(loaded.snapshot, Some(snapshot(1, 3)));
}

#[test]
fn a_storage_opened_before_a_crash_is_refused() {
    let mut storage = populated();
    storage.disk().crash(CrashFault::LoseUnsynced);
    let error = storage.append(&write(9, entries(2, 9, 9))).unwrap_err();
    assert!(matches!(error, StorageError::Crashed), "{error}");
    assert!(storage.load().is_err());
}

#[test]
fn a_crash_may_keep_a_prefix_of_unsynced_writes() {
    let mut storage = populated();
    for index in 9..=12 {
        storage.append(&write(index, entries(2, index, index))).unwrap();
    }
    let loaded = crash_and_load(&storage.disk(), CrashFault::KeepUnsynced { batches: 2 });
    assert_eq!(loaded.last_log_id(), LogId::new(2, 10));
    assert_eq!(loaded.repaired_tail, None);
}

#[test]
fn a_torn_unsynced_append_is_truncated_at_the_torn_record() {
    let mut storage = populated();
    storage.append(&write(9, entries(2, 9, 11))).unwrap();
    let loaded = crash_and_load(&storage.disk(), CrashFault::TearUnsynced { batches: 0, keep_bytes: 9 });
    assert_eq!(loaded.last_log_id(), LogId::new(2, 10));
    assert_eq!(loaded.repaired_tail.map(|r| (r.first_index, r.records)), Some((11, 1)));
}

#[test]
fn a_torn_truncating_write_leaves_a_consistent_log() {
    let mut storage = populated();
    storage.save_hard_state(HardState { term: 3, voted_for: None }).unwrap();
    storage.append(&write(5, entries(3, 5, 5))).unwrap();
    let loaded = crash_and_load(&storage.disk(), CrashFault::TearUnsynced { batches: 0, keep_bytes: 100 });
    assert_eq!(loaded.entries, entries(1, 4, 4));
    assert_eq!(loaded.repaired_tail.map(|r| r.first_index), Some(5));
    let mut storage = populated();
    storage.append(&write(6, Vec::new())).unwrap();
    let loaded = crash_and_load(&storage.disk(), CrashFault::TearUnsynced { batches: 0, keep_bytes: 0 });
    assert_eq!(loaded.last_log_id(), LogId::new(1, 6), "the lowest delete did not land");
}

#[test]
fn group_commit_makes_one_sync_for_many_appends() {
    let mut storage = populated();
    let disk = storage.disk();
    let before = disk.stats();
    for index in 9..=40 {
        storage.append(&write(index, entries(2, index, index))).unwrap();
    }
    assert_eq!(disk.unsynced_batches(), 32);
    assert_eq!(storage.sync().unwrap(), LogId::new(2, 40));
    let after = disk.stats();
    assert_eq!(after.syncs - before.syncs, 1);
    assert_eq!(after.synced_batches - before.synced_batches, 33, "32 appends and the log mark");
    assert_eq!(storage.sync().unwrap(), LogId::new(2, 40));
    assert_eq!(disk.stats().syncs, after.syncs, "nothing to sync: no I/O");
    assert_eq!(crash_and_load(&disk, CrashFault::LoseUnsynced).last_log_id(), LogId::new(2, 40));
}

#[test]
fn slow_sync_hook_counts_without_sleeping() {
    let mut storage = populated();
    let disk = storage.disk();
    disk.set_sync_delay(7);
    let before = disk.stats().sync_delay;
    for index in 9..=10 {
        storage.append(&write(index, entries(2, index, index))).unwrap();
        storage.sync().unwrap();
    }
    assert_eq!(disk.stats().sync_delay - before, 14);
}

#[test]
fn every_single_bit_flip_of_every_record_is_detected() {
    let disk = populated().disk();
    let records = disk.records();
    assert!(records.contains(&RecordRef::HardState) && records.contains(&RecordRef::SnapshotData));
    let mut checked = 0;
    for record in records {
        let bits = disk.record_len(record).expect("durable record") as u64 * 8;
        for bit in 0..bits {
            let copy = disk.deep_copy();
            assert!(copy.flip_bit(record, bit));
            let result = MemoryStorage::open(copy).load();
            assert!(result.is_err(), "flip of bit {bit} in {record:?} went unnoticed");
            checked += 1;
        }
    }
    assert!(checked > 1000, "{checked}");
}

#[test]
fn random_faults_are_deterministic_from_the_seed() {
    for seed in 0..50 {
        let outcome = || {
            let mut storage = populated();
            storage.append(&write(9, entries(2, 9, 10))).unwrap();
            storage.append(&write(10, entries(2, 10, 12))).unwrap();
            let disk = storage.disk();
            let fault = disk.crash_random(seed);
            let flip = disk.flip_random_bit(seed);
            (fault, flip, MemoryStorage::open(disk).load().map_err(|e| e.to_string()))
        };
        assert_eq!(outcome(), outcome(), "seed {seed}");
    }
}

#[test]
fn a_random_bit_flip_is_always_detected() {
    for seed in 0..300 {
        let disk = populated().disk();
        let (record, bit) = disk.flip_random_bit(seed).expect("records exist");
        let result = MemoryStorage::open(disk).load();
        assert!(result.is_err(), "seed {seed}: flip of bit {bit} in {record:?} went unnoticed");
    }
}

#[test]
fn the_generic_backend_reopens_without_a_crash() {
    let mut backend = MemoryBackend::new();
    super::seed_log(&mut backend, 1, entries(1, 1, 2));
    backend.storage.append(&write(3, entries(1, 3, 3))).unwrap();
    assert_eq!(super::reload(&mut backend).last_log_id(), LogId::new(1, 3), "a clean restart keeps buffered writes");
}
