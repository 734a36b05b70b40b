//! Snapshots: round trip with history, byte-identical output, and refusal of corrupt,
//! truncated, foreign or inconsistent data without panicking.

use bytes::Bytes;
use proptest::prelude::*;

use super::{apply, apply_at, b, delete, put};
use crate::kv::crc32::crc32;
use crate::kv::{Alarm, AuthCommand, KeyRange, KvCommand, KvSnapshotError, KvStore, PermissionKind, ROOT};

/// A store with history, tombstones, a compaction, expiries and a multi-change revision.
fn busy_store() -> KvStore {
    let mut store = KvStore::counting_from_zero();
    apply(&mut store, put("a", "1"));
    apply(&mut store, put("b", "1"));
    apply(&mut store, delete("a"));
    apply(&mut store, put("a", "2"));
    apply(&mut store, KvCommand::Compact { revision: 2 });
    apply_at(&mut store, 100, KvCommand::Put { key: b("ttl"), value: b("x"), ttl_ms: Some(50) });
    apply(&mut store, KvCommand::DeleteRange { start: b("a"), end: b("c") });
    apply(&mut store, put("c", "3"));
    store.advance_applied_index(20);
    store
}

#[test]
fn an_image_gives_the_stores_snapshot_and_hash() {
    let mut store = busy_store();
    store.apply(21, 0, &KvCommand::LeaseGrant { id: 7, ttl_ms: 5_000 });
    store.apply(22, 0, &KvCommand::Alarm { member: 3, alarm: crate::kv::Alarm::NoSpace, active: true });
    let image = store.image();
    assert_eq!(image.snapshot(), store.snapshot(), "the same bytes, leases and alarms included");
    assert_eq!(KvStore::restore(&image.snapshot()).unwrap(), store);
    for revision in [None, Some(store.compacted_revision()), Some(store.current_revision() - 1), Some(1)] {
        assert_eq!(image.hash_kv(revision), store.hash_kv(revision), "hash at {revision:?}");
    }
    let point = (image.last_applied_index(), image.current_revision(), image.compacted_revision());
    assert_eq!(point, (store.last_applied_index(), store.current_revision(), store.compacted_revision()));
    // The image is a copy: the store moves on (the alarm cleared, a new key, a key overwritten
    // and deleted, history compacted, all in lists the image shares), the image does not.
    let before = store.snapshot();
    apply(&mut store, KvCommand::Alarm { member: 3, alarm: crate::kv::Alarm::NoSpace, active: false });
    apply(&mut store, put("d", "4"));
    apply(&mut store, put("c", "5"));
    apply(&mut store, delete("c"));
    let current = store.current_revision();
    apply(&mut store, KvCommand::Compact { revision: current });
    assert_ne!(store.snapshot(), before);
    assert_eq!(image.snapshot(), before, "the image still encodes the store as it was");
    assert_eq!(image.current_revision() + 3, store.current_revision());
}

#[test]
fn stores_from_the_empty_revision_and_from_zero_both_restore() {
    // Today's stores start at revision 1 (etcd's empty revision); stores written before started
    // at 0 and have a change at revision 1. Both restore, empty or not, compacted or not.
    let empty = KvStore::new();
    assert_eq!(KvStore::restore(&empty.snapshot()).unwrap(), empty);
    let mut store = KvStore::new();
    apply(&mut store, put("a", "1"));
    apply(&mut store, put("b", "1"));
    assert_eq!(store.current_revision(), 3);
    assert_eq!(KvStore::restore(&store.snapshot()).unwrap(), store);
    apply(&mut store, KvCommand::Compact { revision: 2 });
    assert_eq!(KvStore::restore(&store.snapshot()).unwrap(), store);
    let mut old = KvStore::counting_from_zero();
    apply(&mut old, put("a", "1"));
    assert_eq!(KvStore::restore(&old.snapshot()).unwrap(), old);
    assert_eq!(KvStore::restore(&KvStore::counting_from_zero().snapshot()).unwrap(), KvStore::counting_from_zero());
}

#[test]
fn a_restored_store_is_the_same_store() {
    let store = busy_store();
    let snapshot = store.snapshot();
    let restored = KvStore::restore(&snapshot).unwrap();
    assert_eq!(restored, store, "history, indexes and counters all restored");
    assert_eq!(restored.snapshot(), snapshot, "byte-identical");
    assert_eq!(restored.last_applied_index(), 20);
    assert_eq!(restored.next_expiry_ms(), Some(150));
    assert_eq!(restored.watch(2).unwrap().collect::<Vec<_>>(), store.watch(2).unwrap().collect::<Vec<_>>());
    for revision in 2..=store.current_revision() {
        assert_eq!(
            restored.range(&KeyRange::all(), Some(revision), 0),
            store.range(&KeyRange::all(), Some(revision), 0)
        );
    }
    assert_eq!(busy_store().snapshot(), snapshot, "equal stores give equal bytes");
    assert_eq!(KvStore::restore(&KvStore::counting_from_zero().snapshot()).unwrap(), KvStore::counting_from_zero());
}

#[test]
fn restored_stores_keep_applying_identically() {
    let mut original = busy_store();
    let mut restored = KvStore::restore(&original.snapshot()).unwrap();
    for store in [&mut original, &mut restored] {
        apply(store, KvCommand::Expire { now_ms: 150 });
        apply(store, put("c", "4"));
        apply(store, KvCommand::Compact { revision: 6 });
    }
    assert_eq!(original, restored);
    assert_eq!(original.snapshot(), restored.snapshot());
}

/// Every byte of `snapshot` flipped, and every truncation of it, is refused.
fn assert_every_damage_refused(snapshot: &[u8]) {
    for position in 0..snapshot.len() {
        let mut corrupted = snapshot.to_vec();
        corrupted[position] ^= 0x5a;
        assert!(KvStore::restore(&corrupted).is_err(), "byte {position} flipped");
    }
    for length in 0..snapshot.len() {
        assert!(KvStore::restore(&snapshot[..length]).is_err(), "truncated to {length}");
    }
}

#[test]
fn every_corrupted_byte_and_truncation_is_refused() {
    let snapshot = busy_store().snapshot();
    assert_every_damage_refused(&snapshot);
    let mut body_flip = snapshot.to_vec();
    body_flip[20] ^= 1;
    let error = KvStore::restore(&body_flip).unwrap_err();
    assert!(matches!(error, KvSnapshotError::ChecksumMismatch { .. }));
    assert!(error.to_string().contains("corrupt"), "{error}");
    assert_eq!(KvStore::restore(b"nope"), Err(KvSnapshotError::TooShort { size: 4 }));
    assert_eq!(KvStore::restore(b"NOTASNAPSHOT!"), Err(KvSnapshotError::BadMagic));
    let mut future = snapshot.to_vec();
    future[8] = 5;
    assert_eq!(KvStore::restore(&future), Err(KvSnapshotError::UnsupportedVersion { version: 5 }));
}

#[test]
fn snapshots_written_before_leases_still_restore() {
    // Version 1: applied index 1, revision 1, nothing compacted, key "k" = "v" put at revision 1.
    let mut v1 = b"KEELKVSN\x01".to_vec();
    for number in [1u64, 1, 0] {
        v1.extend_from_slice(&number.to_le_bytes());
    }
    v1.extend_from_slice(&1u32.to_le_bytes());
    v1.extend_from_slice(&[1, 0, 0, 0, b'k', 1, 0, 0, 0]);
    v1.extend_from_slice(&1u64.to_le_bytes());
    v1.extend_from_slice(&[0, 0, 0, 0, 1, 1, 0, 0, 0, b'v']);
    v1.extend_from_slice(&1u64.to_le_bytes());
    v1.extend_from_slice(&1u64.to_le_bytes());
    v1.push(0);
    let store = KvStore::restore(&sealed(v1)).unwrap();
    let kv = store.get(b"k", None).unwrap().unwrap();
    assert_eq!((&kv.value[..], kv.lease, store.current_revision()), (&b"v"[..], 0, 1));
    assert_eq!(store.snapshot()[8], 2, "written again in the current format");
}

/// Re-seals `content` (everything but the checksum) with a valid checksum.
fn sealed(mut content: Vec<u8>) -> Vec<u8> {
    let checksum = crc32(&content);
    content.extend_from_slice(&checksum.to_le_bytes());
    content
}

fn inconsistency(store: &KvStore) -> String {
    match KvStore::restore(&store.snapshot()) {
        Err(KvSnapshotError::Inconsistent(what)) => what,
        other => panic!("expected an inconsistency, got {other:?}"),
    }
}

#[test]
fn inconsistent_content_with_a_valid_checksum_is_refused() {
    let mut ahead = busy_store();
    ahead.current_revision += 1;
    assert!(inconsistency(&ahead).contains("changes stop at revision 7"), "{}", inconsistency(&ahead));

    let mut behind = busy_store();
    behind.compacted_revision = behind.current_revision + 1;
    assert!(inconsistency(&behind).contains("compacted revision 8 is above"));

    let mut versions = busy_store();
    let history = std::sync::Arc::make_mut(versions.keys.get_mut(&b("c")[..]).unwrap());
    history[0].live.as_mut().unwrap().version = 2;
    assert!(inconsistency(&versions).contains("not a creation"), "{}", inconsistency(&versions));

    let mut tombstone_first = busy_store();
    std::sync::Arc::make_mut(tombstone_first.keys.get_mut(&b("b")[..]).unwrap()).remove(0);
    assert!(inconsistency(&tombstone_first).contains("tombstone"));

    let mut trailing = busy_store().snapshot().to_vec();
    trailing.truncate(trailing.len() - 4);
    trailing.push(0);
    assert!(matches!(KvStore::restore(&sealed(trailing)), Err(KvSnapshotError::Malformed(_))));
}

proptest! {
    #[test]
    fn sealed_random_content_never_panics(body in proptest::collection::vec(any::<u8>(), 0..200)) {
        let mut content = b"KEELKVSN\x01".to_vec();
        content.extend_from_slice(&body);
        let _ = KvStore::restore(&sealed(content));
    }

    #[test]
    fn sealed_mutations_of_a_real_snapshot_never_panic(position in any::<usize>(), byte in any::<u8>()) {
        let mut content = busy_store().snapshot().to_vec();
        content.truncate(content.len() - 4);
        let position = 9 + position % (content.len() - 9);
        content[position] = byte;
        if let Ok(store) = KvStore::restore(&sealed(content.clone())) {
            prop_assert_eq!(store.snapshot(), Bytes::from(sealed(content)), "accepted data is canonical");
        }
    }
}

/// `busy_store` with an auth table: enabled, root and a reader with a permission.
fn store_with_auth() -> KvStore {
    use super::auth::{apply_auth, grant, grant_role, role_add, user_add};
    let mut store = busy_store();
    let commands = [
        user_add(ROOT),
        grant_role(ROOT, ROOT),
        user_add("alice"),
        role_add("reader"),
        grant_role("alice", "reader"),
        grant("reader", PermissionKind::Read, KeyRange::prefix(b("/a/"))),
        grant("reader", PermissionKind::ReadWrite, KeyRange::key(b("k"))),
        AuthCommand::Enable { token_key: b("secret") },
    ];
    for command in commands {
        apply_auth(&mut store, command).unwrap();
    }
    store
}

#[test]
fn the_auth_table_round_trips_in_version_4_written_only_when_used() {
    assert_eq!(busy_store().snapshot()[8], 2, "no auth, no alarm: version 2");
    let mut alarmed = busy_store();
    apply(&mut alarmed, KvCommand::Alarm { member: 2, alarm: Alarm::Corrupt, active: true });
    assert_eq!(alarmed.snapshot()[8], 3, "alarms without auth: still version 3");
    let store = store_with_auth();
    let snapshot = store.snapshot();
    assert_eq!(snapshot[8], 4);
    let restored = KvStore::restore(&snapshot).unwrap();
    assert_eq!(restored, store);
    assert_eq!(restored.auth(), store.auth());
    assert_eq!(restored.snapshot(), snapshot, "byte-identical");
    assert!(restored.auth().enabled() && restored.auth().can_write("alice", &KeyRange::key(b("k"))));
    let mut both = store_with_auth();
    apply(&mut both, KvCommand::Alarm { member: 2, alarm: Alarm::NoSpace, active: true });
    let restored = KvStore::restore(&both.snapshot()).unwrap();
    assert_eq!((restored.out_of_space(), restored.auth()), (true, both.auth()), "alarms and auth together");
    for mut store in [store_with_auth(), both] {
        let mut restored = KvStore::restore(&store.snapshot()).unwrap();
        for target in [&mut store, &mut restored] {
            apply(target, KvCommand::Auth(AuthCommand::UserDelete { name: "alice".into() }));
        }
        assert_eq!(restored, store, "restored stores keep applying identically");
    }
}

#[test]
fn corrupted_or_inconsistent_auth_tables_are_refused() {
    assert_every_damage_refused(&store_with_auth().snapshot());
    let mut no_root = store_with_auth();
    no_root.auth.users.remove(ROOT);
    assert!(inconsistency(&no_root).contains("root"), "{}", inconsistency(&no_root));
    let mut missing_role = store_with_auth();
    missing_role.auth.roles.remove("reader");
    assert!(inconsistency(&missing_role).contains("does not exist"), "{}", inconsistency(&missing_role));
    let mut empty_name = store_with_auth();
    empty_name.auth.roles.insert(String::new(), Default::default());
    assert!(inconsistency(&empty_name).contains("empty"), "{}", inconsistency(&empty_name));
    let mut unsorted = store_with_auth();
    unsorted.auth.roles.get_mut("reader").unwrap().permissions.reverse();
    assert!(inconsistency(&unsorted).contains("out of order"), "{}", inconsistency(&unsorted));
    let mut exhausted = store_with_auth();
    exhausted.auth.revision = u64::MAX;
    assert!(inconsistency(&exhausted).contains("u64::MAX"), "{}", inconsistency(&exhausted));
}

#[test]
fn a_version_4_snapshot_of_the_default_auth_table_is_refused() {
    let mut store = busy_store();
    apply(&mut store, KvCommand::Auth(AuthCommand::Disable)); // auth revision 1: written as version 4
    let mut content = store.snapshot().to_vec();
    assert_eq!(content[8], 4);
    content.truncate(content.len() - 4);
    // The table is the last 21 bytes: enabled, revision, empty token key, no users, no roles.
    let revision_at = content.len() - 20;
    assert_eq!(&content[revision_at..revision_at + 8], &1u64.to_le_bytes());
    content[revision_at] = 0;
    match KvStore::restore(&sealed(content)) {
        Err(KvSnapshotError::Inconsistent(what)) => assert!(what.contains("default auth table"), "{what}"),
        other => panic!("expected an inconsistency, got {other:?}"),
    }
}

#[test]
fn snapshots_from_before_auth_restore_with_the_default_table() {
    let mut alarmed = busy_store();
    apply(&mut alarmed, KvCommand::Alarm { member: 2, alarm: Alarm::Corrupt, active: true });
    for store in [busy_store(), alarmed] {
        let restored = KvStore::restore(&store.snapshot()).unwrap();
        assert_eq!(restored.auth(), &Default::default());
        assert_eq!(restored, store);
    }
}

proptest! {
    #[test]
    fn sealed_mutations_of_an_auth_snapshot_never_panic(position in any::<usize>(), byte in any::<u8>()) {
        let mut content = store_with_auth().snapshot().to_vec();
        content.truncate(content.len() - 4);
        let position = 9 + position % (content.len() - 9);
        content[position] = byte;
        if let Ok(store) = KvStore::restore(&sealed(content.clone())) {
            prop_assert_eq!(store.snapshot(), Bytes::from(sealed(content)), "accepted data is canonical");
        }
    }
}
