//! Revisions, versions, tombstones, reads at past revisions, compaction, watches and events.

use super::{apply, b, delete, put, value};
use crate::kv::{KeyRange, KvCommand, KvError, KvEvent, KvEventKind, KvStore, OpResponse};

#[test]
fn revisions_and_versions_follow_etcd() {
    // As in etcd, an empty store is at revision 1 and the first change makes revision 2.
    let mut store = KvStore::new();
    assert_eq!((store.current_revision(), store.compacted_revision(), store.last_applied_index()), (1, 0, 0));

    let first = apply(&mut store, put("a", "1"));
    assert_eq!((first.revision, first.log_index), (2, 1));
    assert_eq!(first.responses, vec![OpResponse::Put { prev: None }]);
    let kv = store.get(b"a", None).unwrap().unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (2, 2, 1));

    apply(&mut store, put("b", "x"));
    let second = apply(&mut store, put("a", "1")); // same value: still a new version
    assert_eq!(second.revision, 4);
    let OpResponse::Put { prev: Some(prev) } = &second.responses[0] else { panic!("prev expected") };
    assert_eq!((prev.mod_revision, prev.version), (2, 1));
    let kv = store.get(b"a", None).unwrap().unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (2, 4, 2));

    let deleted = apply(&mut store, delete("a"));
    assert_eq!(deleted.revision, 5);
    assert_eq!(store.get(b"a", None).unwrap(), None);

    apply(&mut store, put("a", "again"));
    let kv = store.get(b"a", None).unwrap().unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (6, 6, 1), "a delete resets the version");
    assert_eq!(store.last_applied_index(), 5);
    // The empty store's revision is readable, and holds nothing.
    assert!(KvStore::new().range(&KeyRange::all(), Some(1), 0).unwrap().kvs.is_empty());
}

#[test]
fn commands_that_change_nothing_keep_the_revision() {
    let mut store = KvStore::counting_from_zero();
    apply(&mut store, put("a", "1"));
    let result = apply(&mut store, delete("missing"));
    assert_eq!(result.revision, 1);
    assert!(result.succeeded && result.events.is_empty());
    assert_eq!(result.responses, vec![OpResponse::Delete { deleted: vec![] }]);
    let result = apply(&mut store, KvCommand::Expire { now_ms: u64::MAX });
    assert_eq!((result.revision, result.events.len()), (1, 0));
    assert_eq!(store.last_applied_index(), 3, "the log index advances anyway");
}

#[test]
fn reads_at_past_revisions_see_the_history() {
    let mut store = KvStore::counting_from_zero();
    apply(&mut store, put("a", "1")); // 1
    apply(&mut store, put("b", "1")); // 2
    apply(&mut store, put("a", "2")); // 3
    apply(&mut store, delete("b")); // 4
    apply(&mut store, put("c", "1")); // 5

    let at = |revision| {
        let result = store.range(&KeyRange::all(), Some(revision), 0).unwrap();
        assert_eq!(result.revision, revision);
        result.kvs.iter().map(|kv| format!("{:?}={:?}", kv.key, kv.value)).collect::<Vec<_>>().join(",")
    };
    assert_eq!(at(0), "");
    assert_eq!(at(1), r#"b"a"=b"1""#);
    assert_eq!(at(2), r#"b"a"=b"1",b"b"=b"1""#);
    assert_eq!(at(3), r#"b"a"=b"2",b"b"=b"1""#);
    assert_eq!(at(4), r#"b"a"=b"2""#);
    assert_eq!(at(5), r#"b"a"=b"2",b"c"=b"1""#);
    assert_eq!(store.get(b"b", Some(3)).unwrap().unwrap().mod_revision, 2);
    assert_eq!(
        store.get(b"a", Some(6)),
        Err(KvError::FutureRevision { requested: 6, current: 5 }),
        "a read in the future is refused"
    );
}

#[test]
fn ranges_limits_prefixes_and_counts() {
    let mut store = KvStore::counting_from_zero();
    for key in ["/app/a", "/app/b", "/app/c", "/apq", "/b"] {
        apply(&mut store, put(key, "v"));
    }
    let scan = store.scan_prefix(b"/app/", None).unwrap();
    assert_eq!(
        scan.kvs.iter().map(|kv| kv.key.clone()).collect::<Vec<_>>(),
        vec![b("/app/a"), b("/app/b"), b("/app/c")]
    );
    assert_eq!((scan.revision, scan.count, scan.more), (5, 3, false));
    let limited = store.range(&KeyRange::prefix(b("/ap")), None, 2).unwrap();
    assert_eq!((limited.kvs.len(), limited.count, limited.more), (2, 4, true));
    let between = store.range(&KeyRange::new(b("/app/b"), b("/b")), None, 0).unwrap();
    assert_eq!(between.count, 3, "[start, end) excludes end");
    let from = store.range(&KeyRange::from_key(b("/apq")), None, 0).unwrap();
    assert_eq!(from.count, 2);
    let backwards = store.range(&KeyRange::new(b("/b"), b("/a")), None, 0).unwrap();
    assert_eq!(backwards.count, 0, "start >= end is empty, not a panic");
    assert_eq!(store.range(&KeyRange::key(b("/apq")), None, 0).unwrap().count, 1);
}

#[test]
fn prefix_range_end_matches_etcd() {
    use crate::kv::prefix_range_end;
    assert_eq!(prefix_range_end(b"abc"), b("abd"));
    assert_eq!(prefix_range_end(b"a\xff"), b("b"));
    assert_eq!(&prefix_range_end(b"\xff\xff")[..], &[0]);
    assert_eq!(&prefix_range_end(b"")[..], &[0]);
    assert!(KeyRange::prefix(b("a")).contains(b"a\xff\xff"));
    assert!(!KeyRange::prefix(b("a")).contains(b"b"));
    assert!(KeyRange::all().contains(b""));
}

#[test]
fn compaction_drops_history_and_keeps_live_keys() {
    let mut store = KvStore::counting_from_zero();
    apply(&mut store, put("a", "1")); // 1
    apply(&mut store, put("b", "1")); // 2
    apply(&mut store, put("a", "2")); // 3
    apply(&mut store, delete("b")); // 4
    apply(&mut store, put("c", "1")); // 5
    apply(&mut store, put("a", "3")); // 6

    let result = apply(&mut store, KvCommand::Compact { revision: 4 });
    assert!(result.succeeded && result.events.is_empty());
    assert_eq!((result.revision, store.compacted_revision()), (6, 4), "compaction does not advance the revision");
    assert_eq!(store.get(b"a", Some(3)), Err(KvError::Compacted { requested: 3, compacted: 4 }));
    let at_compacted = store.range(&KeyRange::all(), Some(4), 0).unwrap();
    assert_eq!(at_compacted.kvs.len(), 1);
    assert_eq!(at_compacted.kvs[0].value, b("2"), "the latest version at the compacted revision stays");
    assert_eq!(store.get(b"a", None).unwrap().unwrap().version, 3);
    assert!(!store.keys.contains_key(&b("b")[..]), "a key deleted before compaction is gone entirely");
    assert_eq!(store.keys[&b("a")[..]].len(), 2);
    assert_eq!(value(&store, "c").as_deref(), Some("1"));
}

#[test]
fn compaction_errors_are_reported_through_the_log() {
    let mut store = KvStore::counting_from_zero();
    apply(&mut store, put("a", "1"));
    apply(&mut store, put("a", "2"));
    let future = apply(&mut store, KvCommand::Compact { revision: 3 });
    assert!(!future.succeeded);
    assert_eq!(future.error, Some(KvError::FutureRevision { requested: 3, current: 2 }));
    assert!(apply(&mut store, KvCommand::Compact { revision: 2 }).succeeded);
    let again = apply(&mut store, KvCommand::Compact { revision: 2 });
    assert_eq!(again.error, Some(KvError::Compacted { requested: 2, compacted: 2 }));
    assert!(again.error.unwrap().to_string().contains("read at 2 or later"));
    assert!(store.watch(1).is_err());
    assert_eq!(store.watch(2).unwrap().count(), 0);
}

#[test]
fn the_size_grows_with_versions_and_shrinks_with_compaction() {
    let mut store = KvStore::counting_from_zero();
    assert_eq!(store.size_bytes(), 0);
    apply(&mut store, put("k", "12345"));
    let one = store.size_bytes();
    apply(&mut store, put("k", "12345"));
    assert_eq!(store.size_bytes(), 2 * one, "two versions of the same size");
    apply(&mut store, KvCommand::Compact { revision: 2 });
    assert_eq!(store.size_bytes(), one);
}

#[test]
fn events_are_ordered_and_carry_previous_values() {
    let mut store = KvStore::counting_from_zero();
    let first = apply(&mut store, put("k", "v1"));
    assert_eq!(
        first.events,
        vec![KvEvent {
            revision: 1,
            kind: KvEventKind::Put,
            key: b("k"),
            value: b("v1"),
            prev_value: None,
            create_revision: 1,
            mod_revision: 1,
            version: 1,
            lease: 0,
            prev_kv: None,
        }]
    );
    let second = apply(&mut store, put("k", "v2"));
    assert_eq!(second.events[0].prev_value, Some(b("v1")));
    let prev = second.events[0].prev_kv.as_ref().unwrap();
    assert_eq!((prev.value.clone(), prev.create_revision, prev.mod_revision, prev.version), (b("v1"), 1, 1, 1));
    assert_eq!(second.events[0].version, 2);
    apply(&mut store, put("j", "x"));
    let range = apply(&mut store, KvCommand::DeleteRange { start: b("a"), end: b("z") });
    let kinds: Vec<_> =
        range.events.iter().map(|e| (e.key.clone(), e.kind, e.revision, e.prev_value.clone())).collect();
    assert_eq!(
        kinds,
        vec![(b("j"), KvEventKind::Delete, 4, Some(b("x"))), (b("k"), KvEventKind::Delete, 4, Some(b("v2"))),],
        "one revision, deletes in key order"
    );
    assert_eq!(range.events[0].value, b(""));
    assert_eq!(range.events[0].version, 0);
}

#[test]
fn watch_replays_exactly_the_applied_events() {
    let mut store = KvStore::counting_from_zero();
    let mut all_events = Vec::new();
    for command in [put("a", "1"), put("b", "2"), delete("a"), put("b", "3"), put("a", "4")] {
        all_events.extend(apply(&mut store, command).events);
    }
    for after in 0..=5u64 {
        let replayed: Vec<_> = store.watch(after).unwrap().collect();
        let expected: Vec<_> = all_events.iter().filter(|e| e.revision > after).cloned().collect();
        assert_eq!(replayed, expected, "watch after {after}");
    }
    assert_eq!(store.watch(99).unwrap().count(), 0, "a future start yields nothing yet");
    apply(&mut store, KvCommand::Compact { revision: 3 });
    let replayed: Vec<_> = store.watch(3).unwrap().collect();
    assert_eq!(replayed, all_events[3..].to_vec(), "events above the compacted revision survive compaction");
}

#[test]
#[should_panic(expected = "entries must be applied once each, in order")]
fn applying_an_old_log_index_is_a_bug() {
    let mut store = KvStore::counting_from_zero();
    store.apply(5, 0, &put("a", "1"));
    store.apply(5, 0, &put("a", "2"));
}

#[test]
fn other_log_entries_advance_the_applied_index() {
    let mut store = KvStore::counting_from_zero();
    store.advance_applied_index(3);
    let result = store.apply(7, 0, &put("a", "1"));
    assert_eq!((result.log_index, store.last_applied_index()), (7, 7));
}
