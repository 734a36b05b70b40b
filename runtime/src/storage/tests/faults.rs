//! Recovery from damaged records, planted through the raw record store of both backends.

use keel_core::LogId;

use super::{entries, entry, entry_op, for_each_backend, reload, reload_err, seed_log, snapshot, write, Backend};
use crate::storage::codec::{self, HEADER_LEN};
use crate::storage::records::{log_key, Op, Space, HARD_STATE_KEY, LOG_MARK_KEY, SNAPSHOT_DATA_KEY, SNAPSHOT_META_KEY};
use crate::storage::{Storage, StorageError, TailRepair};

for_each_backend!(
    torn_tail_is_truncated_with_a_warning,
    torn_tail_of_several_records_is_truncated,
    corrupt_entry_in_the_middle_names_its_index,
    corrupt_synced_last_entry_is_refused_not_truncated,
    torn_record_followed_by_an_intact_one_is_refused,
    hole_in_the_log_names_the_missing_index,
    missing_synced_tail_is_refused,
    corrupt_hard_state_is_refused,
    corrupt_snapshot_meta_is_refused,
    snapshot_data_not_matching_its_meta_is_refused,
    snapshot_data_without_meta_is_refused,
    corrupt_log_mark_is_refused,
    newer_record_version_is_reported_not_truncated,
    entry_under_the_wrong_index_is_refused,
    bad_log_key_is_refused,
    entries_covered_by_the_snapshot_are_cleaned_up,
);

/// Flips one bit in the middle of a stored record.
fn damage<B: Backend>(backend: &mut B, space: Space, key: &[u8]) {
    let mut bytes = backend.raw_get(space, key).expect("record exists");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x10;
    backend.raw(vec![Op::Put(space, key.to_vec(), bytes)]);
}

/// The record for `entry`, cut short as a crash mid-write leaves it.
fn torn(index: u64, keep: usize) -> Op {
    let mut bytes = codec::encode_entry(&entry(1, index)).unwrap();
    bytes.truncate(keep);
    Op::Put(Space::Log, log_key(index), bytes)
}

fn assert_message(error: &StorageError, parts: &[&str]) {
    let message = error.to_string();
    for part in parts {
        assert!(message.contains(part), "message lacks {part:?}: {message}");
    }
}

fn torn_tail_is_truncated_with_a_warning<B: Backend>(backend: &mut B) {
    seed_log(backend, 1, entries(1, 1, 5));
    backend.raw(vec![torn(6, 20)]);
    let loaded = reload(backend);
    assert_eq!(loaded.entries, entries(1, 1, 5));
    let repair = loaded.repaired_tail.expect("tail repaired");
    assert_eq!((repair.first_index, repair.records), (6, 1));
    assert!(repair.reason.contains("truncated"), "{}", repair.reason);
    let again = reload(backend);
    assert_eq!(again.repaired_tail, None, "the repair was durable");
    assert_eq!(backend.raw_get(Space::Log, &log_key(6)), None);
    backend.storage().append(&write(6, entries(1, 6, 6))).unwrap();
    assert_eq!(backend.storage().sync().unwrap(), LogId::new(1, 6));
}

fn torn_tail_of_several_records_is_truncated<B: Backend>(backend: &mut B) {
    seed_log(backend, 1, entries(1, 1, 3));
    backend.raw(vec![torn(4, 12), Op::Put(Space::Log, log_key(5), vec![0xAB; 7]), torn(7, 3)]);
    let loaded = reload(backend);
    assert_eq!(loaded.entries, entries(1, 1, 3));
    let expected = TailRepair { first_index: 4, records: 3, reason: loaded.repaired_tail.clone().unwrap().reason };
    assert_eq!(loaded.repaired_tail, Some(expected));
}

fn corrupt_entry_in_the_middle_names_its_index<B: Backend>(backend: &mut B) {
    seed_log(backend, 1, entries(1, 1, 5));
    damage(backend, Space::Log, &log_key(3));
    let error = reload_err(backend);
    assert!(matches!(error, StorageError::CorruptEntry { index: 3, .. }), "{error}");
    assert_message(&error, &["log entry 3", "checksum", "re-add the node", "learner"]);
}

fn corrupt_synced_last_entry_is_refused_not_truncated<B: Backend>(backend: &mut B) {
    seed_log(backend, 1, entries(1, 1, 5));
    damage(backend, Space::Log, &log_key(5));
    let error = reload_err(backend);
    assert!(matches!(error, StorageError::CorruptEntry { index: 5, .. }), "{error}");
    assert_message(&error, &["log entry 5", "a sync made entries up to 5 durable"]);
}

fn torn_record_followed_by_an_intact_one_is_refused<B: Backend>(backend: &mut B) {
    seed_log(backend, 1, entries(1, 1, 5));
    backend.raw(vec![torn(6, 9), entry_op(&entry(1, 7))]);
    let error = reload_err(backend);
    assert!(matches!(error, StorageError::CorruptEntry { index: 6, .. }), "{error}");
    assert_message(&error, &["log entry 6", "intact entry 7"]);
}

fn hole_in_the_log_names_the_missing_index<B: Backend>(backend: &mut B) {
    seed_log(backend, 1, entries(1, 1, 5));
    backend.raw(vec![Op::Delete(Space::Log, log_key(3))]);
    let error = reload_err(backend);
    assert!(matches!(error, StorageError::MissingEntry { index: 3, .. }), "{error}");
    assert_message(&error, &["log entry 3 is missing"]);
}

fn missing_synced_tail_is_refused<B: Backend>(backend: &mut B) {
    seed_log(backend, 1, entries(1, 1, 5));
    backend.raw(vec![Op::Delete(Space::Log, log_key(5)), Op::Delete(Space::Log, log_key(4))]);
    let error = reload_err(backend);
    assert!(matches!(error, StorageError::MissingEntry { index: 4, .. }), "{error}");
    assert_message(&error, &["log entry 4 is missing", "up to 5 durable"]);
}

fn corrupt_hard_state_is_refused<B: Backend>(backend: &mut B) {
    seed_log(backend, 1, entries(1, 1, 2));
    damage(backend, Space::State, HARD_STATE_KEY);
    let error = reload_err(backend);
    assert_message(&error, &["hard state record is corrupt", "re-add the node"]);
}

fn corrupt_snapshot_meta_is_refused<B: Backend>(backend: &mut B) {
    seed_log(backend, 1, entries(1, 1, 4));
    backend.storage().compact(&snapshot(1, 2)).unwrap();
    damage(backend, Space::State, SNAPSHOT_META_KEY);
    assert_message(&reload_err(backend), &["snapshot meta record is corrupt"]);
}

fn snapshot_data_not_matching_its_meta_is_refused<B: Backend>(backend: &mut B) {
    seed_log(backend, 1, entries(1, 1, 4));
    backend.storage().compact(&snapshot(1, 2)).unwrap();
    let other = codec::encode_snapshot_data(b"another state machine").unwrap();
    backend.raw(vec![Op::Put(Space::Snapshot, SNAPSHOT_DATA_KEY.to_vec(), other)]);
    assert_message(
        &reload_err(backend),
        &["snapshot data (snapshot at 1-2) record is corrupt", "the snapshot meta names"],
    );
    backend.raw(vec![Op::Delete(Space::Snapshot, SNAPSHOT_DATA_KEY.to_vec())]);
    assert_message(&reload_err(backend), &["snapshot data (snapshot at 1-2)", "missing"]);
}

fn snapshot_data_without_meta_is_refused<B: Backend>(backend: &mut B) {
    seed_log(backend, 1, entries(1, 1, 4));
    backend.storage().compact(&snapshot(1, 2)).unwrap();
    backend.raw(vec![Op::Delete(Space::State, SNAPSHOT_META_KEY.to_vec())]);
    let error = reload_err(backend);
    assert!(matches!(error, StorageError::Inconsistent(_)), "{error}");
}

fn corrupt_log_mark_is_refused<B: Backend>(backend: &mut B) {
    seed_log(backend, 1, entries(1, 1, 2));
    damage(backend, Space::State, LOG_MARK_KEY);
    assert_message(&reload_err(backend), &["log mark record is corrupt"]);
}

fn newer_record_version_is_reported_not_truncated<B: Backend>(backend: &mut B) {
    seed_log(backend, 1, entries(1, 1, 2));
    let mut bytes = codec::encode_entry(&entry(1, 3)).unwrap();
    bytes[0] = codec::FORMAT_VERSION + 1;
    let body = bytes.len() - 4;
    let crc = crc32fast::hash(&bytes[..body]).to_le_bytes();
    bytes[body..].copy_from_slice(&crc);
    backend.raw(vec![Op::Put(Space::Log, log_key(3), bytes)]);
    let error = reload_err(backend);
    assert!(matches!(error, StorageError::UnsupportedVersion { version: 2, .. }), "{error}");
    assert_message(&error, &["log entry 3", "keep the data directory"]);
}

fn entry_under_the_wrong_index_is_refused<B: Backend>(backend: &mut B) {
    seed_log(backend, 1, entries(1, 1, 2));
    let record = codec::encode_entry(&entry(1, 9)).unwrap();
    backend.raw(vec![Op::Put(Space::Log, log_key(3), record)]);
    assert_message(&reload_err(backend), &["stored as log entry 3 holds entry 1-9"]);
}

fn bad_log_key_is_refused<B: Backend>(backend: &mut B) {
    seed_log(backend, 1, entries(1, 1, 2));
    backend.raw(vec![Op::Put(Space::Log, b"abc".to_vec(), vec![0; HEADER_LEN])]);
    assert_message(&reload_err(backend), &["log key 0x616263"]);
}

fn entries_covered_by_the_snapshot_are_cleaned_up<B: Backend>(backend: &mut B) {
    seed_log(backend, 1, entries(1, 1, 5));
    backend.storage().compact(&snapshot(1, 3)).unwrap();
    backend.raw(vec![entry_op(&entry(1, 2)), Op::Put(Space::Log, log_key(1), vec![0xFF; 3])]);
    let loaded = reload(backend);
    assert_eq!(loaded.entries, entries(1, 4, 5));
    assert_eq!(loaded.repaired_tail, None);
    assert_eq!(backend.raw_get(Space::Log, &log_key(1)), None);
    assert_eq!(backend.raw_get(Space::Log, &log_key(2)), None);
}
