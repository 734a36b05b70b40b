//! Expiry through the log: deadlines from the proposal stamp, deletion only by `Expire`, in key
//! order, one revision, never early, identical on every replica.

use super::{apply, apply_at, b, deleted_keys, put, value};
use crate::kv::{KvCommand, KvEventKind, KvStore, TxnOp};

fn put_ttl(key: &str, ttl_ms: u64) -> KvCommand {
    KvCommand::Put { key: b(key), value: b("v"), ttl_ms: Some(ttl_ms) }
}

#[test]
fn keys_expire_only_through_the_log_and_never_early() {
    let mut store = KvStore::counting_from_zero();
    apply_at(&mut store, 1_000, put_ttl("session", 500));
    assert_eq!(store.get(b"session", None).unwrap().unwrap().expires_at_ms, Some(1_500));
    assert_eq!(store.next_expiry_ms(), Some(1_500));

    let early = apply(&mut store, KvCommand::Expire { now_ms: 1_499 });
    assert!(early.events.is_empty(), "one millisecond before the deadline nothing expires");
    assert_eq!(value(&store, "session").as_deref(), Some("v"), "no replica expires on its own");

    let due = apply(&mut store, KvCommand::Expire { now_ms: 1_500 });
    assert_eq!(due.revision, 2);
    assert_eq!(deleted_keys(&due), vec![b("session")]);
    assert_eq!(due.events[0].kind, KvEventKind::Delete);
    assert_eq!(store.get(b"session", None).unwrap(), None);
    assert_eq!(store.next_expiry_ms(), None);
}

#[test]
fn expiry_deletes_in_key_order_as_one_revision() {
    let mut store = KvStore::counting_from_zero();
    apply_at(&mut store, 100, put_ttl("c", 10)); // 110
    apply_at(&mut store, 100, put_ttl("a", 30)); // 130
    apply_at(&mut store, 100, put_ttl("b", 20)); // 120
    apply_at(&mut store, 100, put_ttl("d", 1_000)); // 1100
    apply(&mut store, put("e", "forever"));
    let result = apply(&mut store, KvCommand::Expire { now_ms: 130 });
    assert_eq!(deleted_keys(&result), vec![b("a"), b("b"), b("c")], "key order, not deadline order");
    assert_eq!(result.revision, 6);
    assert!(result.events.iter().all(|event| event.revision == 6 && event.kind == KvEventKind::Delete));
    assert_eq!(store.next_expiry_ms(), Some(1_100));
}

#[test]
fn a_put_without_ttl_clears_the_expiry_and_a_new_ttl_replaces_it() {
    let mut store = KvStore::counting_from_zero();
    apply_at(&mut store, 0, put_ttl("k", 100));
    apply_at(&mut store, 50, put("k", "kept"));
    assert_eq!(store.next_expiry_ms(), None);
    assert!(apply(&mut store, KvCommand::Expire { now_ms: 1_000 }).events.is_empty());
    apply_at(&mut store, 2_000, put_ttl("k", 100));
    apply_at(&mut store, 2_050, put_ttl("k", 100));
    assert!(apply(&mut store, KvCommand::Expire { now_ms: 2_100 }).events.is_empty(), "the later deadline counts");
    assert_eq!(deleted_keys(&apply(&mut store, KvCommand::Expire { now_ms: 2_150 })), vec![b("k")]);
}

#[test]
fn deleted_keys_leave_the_expiry_index() {
    let mut store = KvStore::counting_from_zero();
    apply_at(&mut store, 0, put_ttl("k", 10));
    apply(&mut store, KvCommand::Delete { key: b("k") });
    assert_eq!(store.next_expiry_ms(), None);
    apply(&mut store, put("k", "again"));
    assert!(apply(&mut store, KvCommand::Expire { now_ms: 100 }).events.is_empty());
}

#[test]
fn ttl_in_transactions_and_compare_and_swap_use_the_entry_stamp() {
    let mut store = KvStore::counting_from_zero();
    let txn = KvCommand::Txn {
        compares: vec![],
        success: vec![TxnOp::Put { key: b("t"), value: b("v"), ttl_ms: Some(5) }],
        failure: vec![],
    };
    apply_at(&mut store, 10, txn);
    let cas = KvCommand::CompareAndSwap { key: b("c"), expected_value: None, new_value: b("v"), ttl_ms: Some(7) };
    apply_at(&mut store, 10, cas);
    assert_eq!(store.get(b"t", None).unwrap().unwrap().expires_at_ms, Some(15));
    assert_eq!(store.get(b"c", None).unwrap().unwrap().expires_at_ms, Some(17));
    let overflow = KvCommand::Put { key: b("far"), value: b("v"), ttl_ms: Some(u64::MAX) };
    apply_at(&mut store, 10, overflow);
    assert_eq!(store.get(b"far", None).unwrap().unwrap().expires_at_ms, Some(u64::MAX), "saturates");
}

#[test]
fn replicas_expire_identically_whatever_their_clocks() {
    let commands = [
        (1_000, put_ttl("x", 100)),
        (1_010, put_ttl("y", 50)),
        (0, KvCommand::Expire { now_ms: 1_060 }),
        (1_070, put("x", "renewed")),
        (0, KvCommand::Expire { now_ms: 2_000 }),
    ];
    let mut replicas = [KvStore::counting_from_zero(), KvStore::counting_from_zero()];
    let mut results = Vec::new();
    for replica in &mut replicas {
        let run: Vec<_> = commands.iter().map(|(stamp, command)| apply_at(replica, *stamp, command.clone())).collect();
        results.push(run);
    }
    assert_eq!(results[0], results[1]);
    assert_eq!(replicas[0], replicas[1]);
    assert_eq!(deleted_keys(&results[0][2]), vec![b("y")]);
    assert_eq!(value(&replicas[0], "x").as_deref(), Some("renewed"));
}
