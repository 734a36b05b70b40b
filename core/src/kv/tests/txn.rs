//! Compare-and-swap and transactions: compares on every target, branches, reads inside a
//! transaction, one revision per transaction.

use bytes::Bytes;

use super::{apply, b, put, value};
use crate::kv::{Compare, CompareOp, CompareTarget, KvCommand, KvEventKind, KvStore, OpResponse, TxnOp};

fn cas(key: &str, expected: Option<&str>, new_value: &str) -> KvCommand {
    KvCommand::CompareAndSwap { key: b(key), expected_value: expected.map(b), new_value: b(new_value), ttl_ms: None }
}

fn compare(key: &str, target: CompareTarget, op: CompareOp) -> Compare {
    Compare { key: b(key), range_end: Bytes::new(), target, op }
}

fn txn_put(key: &str, value: &str) -> TxnOp {
    TxnOp::Put { key: b(key), value: b(value), ttl_ms: None }
}

#[test]
fn compare_and_swap_on_an_absent_key() {
    let mut store = KvStore::counting_from_zero();
    let created = apply(&mut store, cas("lock", None, "me"));
    assert!(created.succeeded);
    assert_eq!((created.revision, created.events.len()), (1, 1));
    let refused = apply(&mut store, cas("lock", None, "you"));
    assert!(!refused.succeeded);
    assert_eq!(refused.revision, 1, "a failed CAS changes nothing");
    assert!(refused.events.is_empty());
    let [OpResponse::Range(current)] = &refused.responses[..] else { panic!("{:?}", refused.responses) };
    assert_eq!(current.kvs[0].value, b("me"), "a failed CAS tells the current value");
    assert_eq!(value(&store, "lock").as_deref(), Some("me"));
}

#[test]
fn compare_and_swap_on_a_present_key() {
    let mut store = KvStore::counting_from_zero();
    let missing = apply(&mut store, cas("k", Some("old"), "new"));
    assert!(!missing.succeeded, "a value compare on a missing key fails");
    apply(&mut store, put("k", "old"));
    assert!(!apply(&mut store, cas("k", Some("other"), "new")).succeeded);
    let swapped = apply(&mut store, cas("k", Some("old"), "new"));
    assert!(swapped.succeeded);
    let [OpResponse::Put { prev: Some(prev) }] = &swapped.responses[..] else { panic!("{:?}", swapped.responses) };
    assert_eq!(prev.value, b("old"));
    assert_eq!(value(&store, "k").as_deref(), Some("new"));
    assert_eq!(store.get(b"k", None).unwrap().unwrap().version, 2);
}

#[test]
fn compares_on_every_target_and_operator() {
    let mut store = KvStore::counting_from_zero();
    apply(&mut store, put("other", "x")); // 1
    apply(&mut store, put("k", "m")); // 2: create 2
    apply(&mut store, put("k", "m")); // 3: mod 3, version 2
    let current = store.get(b"k", None).unwrap();
    let holds = |target: CompareTarget, op| compare("k", target, op).evaluate(current.as_ref());
    use CompareOp::{Equal, Greater, Less, NotEqual};
    use CompareTarget::{CreateRevision, ModRevision, Value, Version};
    assert!(holds(Value(b("m")), Equal) && holds(Value(b("a")), Greater) && holds(Value(b("z")), Less));
    assert!(holds(Value(b("mm")), Less) && holds(Value(b("")), NotEqual) && !holds(Value(b("m")), NotEqual));
    assert!(holds(Version(2), Equal) && holds(Version(1), Greater) && holds(Version(3), Less));
    assert!(holds(CreateRevision(2), Equal) && !holds(CreateRevision(2), Less) && holds(CreateRevision(9), NotEqual));
    assert!(holds(ModRevision(3), Equal) && holds(ModRevision(2), Greater) && !holds(ModRevision(3), Greater));

    let missing = |target: CompareTarget, op| compare("none", target, op).evaluate(None);
    assert!(missing(Version(0), Equal) && missing(CreateRevision(0), Equal) && missing(ModRevision(1), Less));
    assert!(!missing(Value(b("")), Equal) && !missing(Value(b("")), NotEqual), "value compares on a missing key fail");
}

#[test]
fn a_transaction_is_one_revision_and_sees_its_own_writes() {
    let mut store = KvStore::counting_from_zero();
    apply(&mut store, put("a", "1"));
    let result = apply(
        &mut store,
        KvCommand::Txn {
            compares: vec![compare("a", CompareTarget::Value(b("1")), CompareOp::Equal)],
            success: vec![
                txn_put("b", "2"),
                txn_put("b", "3"),
                TxnOp::Delete { key: b("a") },
                TxnOp::Range { start: b(""), end: Bytes::from_static(&[0]), limit: 0 },
            ],
            failure: vec![],
        },
    );
    assert!(result.succeeded);
    assert_eq!(result.revision, 2, "every change of a transaction shares one revision");
    let summary: Vec<_> = result.events.iter().map(|e| (e.key.clone(), e.kind, e.revision, e.version)).collect();
    assert_eq!(
        summary,
        vec![(b("b"), KvEventKind::Put, 2, 1), (b("b"), KvEventKind::Put, 2, 2), (b("a"), KvEventKind::Delete, 2, 0)]
    );
    let OpResponse::Range(read) = &result.responses[3] else { panic!("{:?}", result.responses) };
    assert_eq!(read.revision, 2);
    assert_eq!(
        read.kvs.iter().map(|kv| (kv.key.clone(), kv.value.clone())).collect::<Vec<_>>(),
        vec![(b("b"), b("3"))]
    );
    assert_eq!(store.get(b"b", Some(2)).unwrap().unwrap().value, b("3"));
    assert_eq!(store.get(b"a", Some(1)).unwrap().unwrap().value, b("1"));
}

#[test]
fn a_failed_transaction_runs_the_failure_branch() {
    let mut store = KvStore::counting_from_zero();
    apply(&mut store, put("a", "1"));
    let result = apply(
        &mut store,
        KvCommand::Txn {
            compares: vec![
                compare("a", CompareTarget::Version(1), CompareOp::Equal),
                compare("a", CompareTarget::ModRevision(1), CompareOp::Greater),
            ],
            success: vec![txn_put("a", "success")],
            failure: vec![TxnOp::Range { start: b("a"), end: b(""), limit: 0 }],
        },
    );
    assert!(!result.succeeded);
    assert_eq!(result.revision, 1, "a read-only branch does not advance the revision");
    let [OpResponse::Range(read)] = &result.responses[..] else { panic!("{:?}", result.responses) };
    assert_eq!((read.revision, read.kvs[0].value.clone()), (1, b("1")));
    assert!(result.events.is_empty());
}

#[test]
fn delete_range_follows_the_etcd_range_convention() {
    let mut store = KvStore::counting_from_zero();
    for key in ["a", "b", "c", "d"] {
        apply(&mut store, put(key, "v"));
    }
    let single = apply(&mut store, KvCommand::DeleteRange { start: b("b"), end: b("") });
    assert_eq!(super::deleted_keys(&single), vec![b("b")]);
    let half_open = apply(&mut store, KvCommand::DeleteRange { start: b("a"), end: b("d") });
    assert_eq!(super::deleted_keys(&half_open), vec![b("a"), b("c")]);
    assert_eq!(half_open.revision, 6);
    let from = apply(&mut store, KvCommand::DeleteRange { start: b(""), end: Bytes::from_static(&[0]) });
    assert_eq!(super::deleted_keys(&from), vec![b("d")]);
    assert_eq!(store.range(&crate::kv::KeyRange::all(), None, 0).unwrap().count, 0);
}

#[test]
fn reads_at_a_past_revision_inside_a_transaction() {
    let mut store = KvStore::counting_from_zero();
    apply(&mut store, put("k", "old")); // 1
    apply(&mut store, put("k", "new")); // 2
    let at = |revision| TxnOp::RangeAt { start: b("k"), end: Bytes::new(), limit: 0, revision };
    let result = apply(&mut store, txn(vec![], vec![txn_put("k", "newer"), at(1), at(2)], vec![]));
    let [_, OpResponse::Range(first), OpResponse::Range(second)] = &result.responses[..] else {
        panic!("{:?}", result.responses)
    };
    assert_eq!((first.kvs[0].value.clone(), first.revision), (b("old"), 1));
    assert_eq!(second.kvs[0].value.clone(), b("new"), "the transaction's own put is not at revision 2");
    let future = apply(&mut store, txn(vec![], vec![txn_put("x", "1"), at(9)], vec![]));
    assert!(matches!(future.error, Some(crate::kv::KvError::FutureRevision { .. })));
    assert_eq!((future.events.len(), value(&store, "x")), (0, None), "a refused transaction changes nothing");
}

fn ranged(key: &str, range_end: &str, target: CompareTarget, op: CompareOp) -> Compare {
    Compare { key: b(key), range_end: b(range_end), target, op }
}

fn txn(compares: Vec<Compare>, success: Vec<TxnOp>, failure: Vec<TxnOp>) -> KvCommand {
    KvCommand::Txn { compares, success, failure }
}

#[test]
fn a_ranged_compare_holds_only_when_every_live_key_of_the_range_satisfies_it() {
    let mut store = KvStore::counting_from_zero();
    apply(&mut store, put("a/1", "x")); // 1
    apply(&mut store, put("a/2", "x")); // 2
    apply(&mut store, put("b", "y")); // 3
    let holds = |store: &KvStore, compare: Compare| {
        let mut store = store.clone();
        apply(&mut store, txn(vec![compare], vec![], vec![])).succeeded
    };
    use CompareOp::{Equal, Greater, Less};
    assert!(holds(&store, ranged("a/", "a0", CompareTarget::Value(b("x")), Equal)));
    assert!(!holds(&store, ranged("a/", "c", CompareTarget::Value(b("x")), Equal)), "b holds y");
    assert!(holds(&store, ranged("a/", "a0", CompareTarget::ModRevision(3), Less)));
    assert!(!holds(&store, ranged("a/", "\0", CompareTarget::ModRevision(3), Less)), "\\0: from the key on");
    assert!(holds(&store, ranged("", "\0", CompareTarget::CreateRevision(0), Greater)), "every key");
    // An empty range is examined as one missing key: version 0, and value compares fail.
    assert!(holds(&store, ranged("x", "y", CompareTarget::Version(0), Equal)));
    assert!(!holds(&store, ranged("x", "y", CompareTarget::Value(b("")), Greater)));
}

#[test]
fn lease_compares_see_lease_zero_on_every_key() {
    let mut store = KvStore::counting_from_zero();
    apply(&mut store, put("k", "v"));
    for key in ["k", "missing"] {
        let zero = compare(key, CompareTarget::Lease(0), CompareOp::Equal);
        assert!(apply(&mut store, txn(vec![zero], vec![], vec![])).succeeded);
        let other = compare(key, CompareTarget::Lease(7), CompareOp::Equal);
        assert!(!apply(&mut store, txn(vec![other], vec![], vec![])).succeeded);
    }
}

#[test]
fn nested_transactions_decide_on_the_state_before_the_outer_one_and_share_its_revision() {
    let mut store = KvStore::counting_from_zero();
    apply(&mut store, put("k", "old")); // 1
    let inner = TxnOp::Txn {
        // Sees "old", although the outer transaction wrote "new" before it.
        compares: vec![compare("k", CompareTarget::Value(b("old")), CompareOp::Equal)],
        success: vec![txn_put("inner", "saw old")],
        failure: vec![txn_put("inner", "saw new")],
    };
    let result = apply(&mut store, txn(vec![], vec![txn_put("k", "new"), inner], vec![]));
    assert!(result.succeeded);
    assert_eq!(result.revision, 2, "one revision for the whole transaction");
    assert_eq!(result.events.len(), 2);
    assert_eq!(value(&store, "inner").as_deref(), Some("saw old"));
    let [OpResponse::Put { .. }, OpResponse::Txn { succeeded: true, responses }] = &result.responses[..] else {
        panic!("{:?}", result.responses)
    };
    assert!(matches!(&responses[..], [OpResponse::Put { prev: None }]));
}

#[test]
fn put_same_value_keeps_the_value_and_refuses_a_missing_key_without_changing_anything() {
    let mut store = KvStore::counting_from_zero();
    apply(&mut store, put("k", "v")); // 1
    let touched = apply(&mut store, txn(vec![], vec![TxnOp::PutSameValue { key: b("k") }], vec![]));
    assert!(touched.succeeded && touched.error.is_none());
    let kv = store.get(b"k", None).unwrap().unwrap();
    assert_eq!((kv.value, kv.version, kv.mod_revision), (b("v"), 2, 2));
    let ops = vec![txn_put("other", "1"), TxnOp::PutSameValue { key: b("missing") }];
    let refused = apply(&mut store, txn(vec![], ops, vec![]));
    assert_eq!(refused.error, Some(crate::kv::KvError::KeyNotFound));
    assert!(!refused.succeeded && refused.events.is_empty() && refused.responses.is_empty());
    assert_eq!((store.current_revision(), value(&store, "other")), (2, None), "nothing of it applied");
    // Only the branch taken is checked.
    let failing = compare("k", CompareTarget::Version(99), CompareOp::Equal);
    let other_branch = apply(&mut store, txn(vec![failing], vec![TxnOp::PutSameValue { key: b("missing") }], vec![]));
    assert!(other_branch.error.is_none());
}
