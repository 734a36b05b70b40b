//! Leases: grant, attach, keep-alive, revoke, expiry through `Expire`, refresh by a new leader,
//! and their place in snapshots.

use super::{apply, apply_at, b, deleted_keys, value};
use crate::kv::{Compare, CompareOp, CompareTarget, KvCommand, KvError, KvStore, OpResponse, TxnOp};

fn grant(id: u64, ttl_ms: u64) -> KvCommand {
    KvCommand::LeaseGrant { id, ttl_ms }
}

fn put_in(key: &str, value: &str, lease: u64) -> KvCommand {
    let op = TxnOp::PutInLease { key: b(key), value: b(value), lease };
    KvCommand::Txn { compares: vec![], success: vec![op], failure: vec![] }
}

fn granted(result: &crate::kv::ApplyResult) -> u64 {
    match &result.responses[..] {
        [OpResponse::Lease { id, .. }] => *id,
        other => panic!("expected a lease response, got {other:?}"),
    }
}

#[test]
fn grants_pick_ids_and_refuse_duplicates() {
    let mut store = KvStore::counting_from_zero();
    assert_eq!(granted(&apply_at(&mut store, 1_000, grant(0, 5_000))), 1);
    assert_eq!(granted(&apply(&mut store, grant(7, 5_000))), 7);
    assert_eq!(granted(&apply(&mut store, grant(0, 5_000))), 8, "above every id granted");
    assert_eq!(apply(&mut store, grant(7, 1)).error, Some(KvError::LeaseExists));
    assert_eq!(store.lease_ids(), vec![1, 7, 8]);
    let lease = store.lease(1).unwrap();
    assert_eq!((lease.ttl_ms, lease.expires_at_ms), (5_000, 6_000));
    assert_eq!(store.current_revision(), 0, "grants change no key");
}

#[test]
fn keys_attach_and_expire_with_their_lease_at_one_revision() {
    let mut store = KvStore::counting_from_zero();
    apply_at(&mut store, 1_000, grant(3, 5_000)); // expires at 6_000
    assert!(apply(&mut store, put_in("a", "1", 3)).error.is_none()); // 1
    apply(&mut store, put_in("b", "2", 3)); // 2
    apply(&mut store, put_in("c", "3", 3)); // 3
    apply(&mut store, super::put("c", "detached")); // 4: a put without lease detaches
    assert_eq!(store.lease(3).unwrap().keys, vec![b("a"), b("b")]);
    assert_eq!(store.get(b"a", None).unwrap().unwrap().lease, 3);
    assert_eq!(apply(&mut store, put_in("d", "x", 99)).error, Some(KvError::LeaseNotFound));
    assert_eq!(store.next_expiry_ms(), Some(6_000));
    assert!(deleted_keys(&apply(&mut store, KvCommand::Expire { now_ms: 5_999 })).is_empty(), "never early");
    let expired = apply(&mut store, KvCommand::Expire { now_ms: 6_000 });
    assert_eq!(deleted_keys(&expired), vec![b("a"), b("b")]);
    assert_eq!(expired.revision, 5, "one revision for every key of the lease");
    assert_eq!((store.lease(3), value(&store, "c").as_deref()), (None, Some("detached")));
    assert_eq!(store.next_expiry_ms(), None);
}

#[test]
fn keep_alive_and_refresh_move_the_deadline_and_revoke_deletes_the_keys() {
    let mut store = KvStore::counting_from_zero();
    apply_at(&mut store, 1_000, grant(1, 5_000));
    apply(&mut store, put_in("k", "v", 1));
    let kept = apply_at(&mut store, 4_000, KvCommand::LeaseKeepAlive { id: 1 });
    assert!(matches!(kept.responses[..], [OpResponse::Lease { id: 1, ttl_ms: 5_000 }]));
    assert_eq!(store.lease(1).unwrap().expires_at_ms, 9_000);
    apply_at(&mut store, 10_000, KvCommand::LeaseRefreshAll);
    assert_eq!(store.lease(1).unwrap().expires_at_ms, 15_000, "a new leader gives the full TTL again");
    assert_eq!(apply(&mut store, KvCommand::LeaseKeepAlive { id: 2 }).error, Some(KvError::LeaseNotFound));
    let revoked = apply(&mut store, KvCommand::LeaseRevoke { id: 1 });
    assert_eq!(deleted_keys(&revoked), vec![b("k")]);
    assert_eq!(apply(&mut store, KvCommand::LeaseRevoke { id: 1 }).error, Some(KvError::LeaseNotFound));
}

#[test]
fn ignore_lease_keeps_the_lease_and_lease_compares_see_it() {
    let mut store = KvStore::counting_from_zero();
    apply(&mut store, grant(4, 5_000));
    apply(&mut store, put_in("k", "v", 4));
    let keep = TxnOp::PutKeepLease { key: b("k"), value: b("w") };
    apply(&mut store, KvCommand::Txn { compares: vec![], success: vec![keep], failure: vec![] });
    let kv = store.get(b"k", None).unwrap().unwrap();
    assert_eq!((kv.value, kv.lease), (b("w"), 4));
    let compare = Compare { key: b("k"), range_end: b(""), target: CompareTarget::Lease(4), op: CompareOp::Equal };
    let result = apply(&mut store, KvCommand::Txn { compares: vec![compare], success: vec![], failure: vec![] });
    assert!(result.succeeded);
    let missing = TxnOp::PutKeepLease { key: b("missing"), value: b("w") };
    let refused = apply(&mut store, KvCommand::Txn { compares: vec![], success: vec![missing], failure: vec![] });
    assert_eq!(refused.error, Some(KvError::KeyNotFound));
}

fn single(op: TxnOp) -> KvCommand {
    KvCommand::Txn { compares: vec![], success: vec![op], failure: vec![] }
}

#[test]
fn ignore_value_with_a_lease_moves_the_key_and_with_ignore_lease_keeps_both() {
    let mut store = KvStore::counting_from_zero();
    apply(&mut store, grant(4, 5_000));
    apply(&mut store, grant(5, 5_000));
    apply(&mut store, put_in("k", "v", 4)); // 1
    let moved = apply(&mut store, single(TxnOp::PutSameValueInLease { key: b("k"), lease: 5 })); // 2
    assert!(moved.error.is_none());
    let kv = store.get(b"k", None).unwrap().unwrap();
    assert_eq!((kv.value, kv.lease, kv.version, kv.mod_revision), (b("v"), 5, 2, 2));
    assert!(store.lease(4).unwrap().keys.is_empty(), "the key left its old lease");
    assert_eq!(store.lease(5).unwrap().keys, vec![b("k")]);
    apply(&mut store, single(TxnOp::PutSameValueKeepLease { key: b("k") })); // 3
    let kv = store.get(b"k", None).unwrap().unwrap();
    assert_eq!((kv.value, kv.lease, kv.version, kv.mod_revision), (b("v"), 5, 3, 3));
    // etcd's order of refusals: a missing key first, then a missing lease; nothing changes.
    let missing_both = single(TxnOp::PutSameValueInLease { key: b("missing"), lease: 99 });
    assert_eq!(apply(&mut store, missing_both).error, Some(KvError::KeyNotFound));
    let missing_lease = single(TxnOp::PutSameValueInLease { key: b("k"), lease: 99 });
    assert_eq!(apply(&mut store, missing_lease).error, Some(KvError::LeaseNotFound));
    let missing_key = single(TxnOp::PutSameValueKeepLease { key: b("missing") });
    assert_eq!(apply(&mut store, missing_key).error, Some(KvError::KeyNotFound));
    assert_eq!(store.current_revision(), 3);
    // Revoking the lease the key moved to deletes it; the old lease no longer holds it.
    assert_eq!(deleted_keys(&apply(&mut store, KvCommand::LeaseRevoke { id: 5 })), vec![b("k")]);
    assert!(deleted_keys(&apply(&mut store, KvCommand::LeaseRevoke { id: 4 })).is_empty());
}

#[test]
fn snapshots_keep_leases_and_their_keys() {
    let mut store = KvStore::counting_from_zero();
    apply_at(&mut store, 1_000, grant(2, 5_000));
    apply(&mut store, put_in("a", "1", 2));
    apply(&mut store, grant(0, 100));
    let restored = KvStore::restore(&store.snapshot()).unwrap();
    assert_eq!(restored, store);
    assert_eq!(restored.lease(2).unwrap().keys, vec![b("a")]);
    assert_eq!(restored.next_expiry_ms(), Some(100));
}
