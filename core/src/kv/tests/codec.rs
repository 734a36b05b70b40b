//! The command encoding (round trip, pinned bytes, no panic on any input) and the limits.

use bytes::Bytes;
use proptest::prelude::*;

use super::b;
use crate::kv::{
    validate, AuthCommand, Compare, CompareOp, CompareTarget, KeyRange, KvCommand, KvDecodeError, KvError, KvLimits,
    Permission, PermissionKind, TxnOp, AUTH_HASH_BYTES_MAX, AUTH_NAME_BYTES_MAX, AUTH_TOKEN_KEY_BYTES_MAX,
};

fn arb_bytes() -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..12).prop_map(Bytes::from)
}

fn arb_compare() -> impl Strategy<Value = Compare> {
    let target = prop_oneof![
        arb_bytes().prop_map(CompareTarget::Value),
        any::<u64>().prop_map(CompareTarget::Version),
        any::<u64>().prop_map(CompareTarget::CreateRevision),
        any::<u64>().prop_map(CompareTarget::ModRevision),
        any::<u64>().prop_map(CompareTarget::Lease),
    ];
    let op =
        prop_oneof![Just(CompareOp::Equal), Just(CompareOp::NotEqual), Just(CompareOp::Less), Just(CompareOp::Greater)];
    (arb_bytes(), arb_bytes(), target, op).prop_map(|(key, range_end, target, op)| Compare {
        key,
        range_end,
        target,
        op,
    })
}

/// Any operation, nested transactions (up to three deep) included.
fn arb_op() -> impl Strategy<Value = TxnOp> {
    arb_flat_op().prop_recursive(3, 12, 3, |inner| {
        let ops = move || proptest::collection::vec(inner.clone(), 0..3);
        (proptest::collection::vec(arb_compare(), 0..2), ops(), ops())
            .prop_map(|(compares, success, failure)| TxnOp::Txn { compares, success, failure })
    })
}

fn arb_flat_op() -> impl Strategy<Value = TxnOp> {
    prop_oneof![
        arb_bytes().prop_map(|key| TxnOp::PutSameValue { key }),
        (arb_bytes(), arb_bytes(), any::<u64>()).prop_map(|(key, value, lease)| TxnOp::PutInLease {
            key,
            value,
            lease
        }),
        (arb_bytes(), arb_bytes()).prop_map(|(key, value)| TxnOp::PutKeepLease { key, value }),
        (arb_bytes(), any::<u64>()).prop_map(|(key, lease)| TxnOp::PutSameValueInLease { key, lease }),
        arb_bytes().prop_map(|key| TxnOp::PutSameValueKeepLease { key }),
        (arb_bytes(), arb_bytes(), any::<u64>(), any::<u64>())
            .prop_map(|(start, end, limit, revision)| TxnOp::RangeAt { start, end, limit, revision }),
        (arb_bytes(), arb_bytes(), any::<Option<u64>>()).prop_map(|(key, value, ttl_ms)| TxnOp::Put {
            key,
            value,
            ttl_ms
        }),
        arb_bytes().prop_map(|key| TxnOp::Delete { key }),
        (arb_bytes(), arb_bytes()).prop_map(|(start, end)| TxnOp::DeleteRange { start, end }),
        (arb_bytes(), arb_bytes(), any::<u64>()).prop_map(|(start, end, limit)| TxnOp::Range { start, end, limit }),
    ]
}

fn arb_name() -> impl Strategy<Value = String> {
    "[a-zé0-9]{0,6}"
}

fn arb_range() -> impl Strategy<Value = KeyRange> {
    (arb_bytes(), arb_bytes()).prop_map(|(start, end)| KeyRange { start, end })
}

/// Any auth command, with arbitrary names, hashes and ranges.
fn arb_auth() -> impl Strategy<Value = AuthCommand> {
    let kind = prop_oneof![Just(PermissionKind::Read), Just(PermissionKind::Write), Just(PermissionKind::ReadWrite)];
    prop_oneof![
        arb_bytes().prop_map(|token_key| AuthCommand::Enable { token_key }),
        Just(AuthCommand::Disable),
        (arb_name(), arb_bytes(), any::<bool>()).prop_map(|(name, password_hash, no_password)| {
            AuthCommand::UserAdd { name, password_hash, no_password }
        }),
        arb_name().prop_map(|name| AuthCommand::UserDelete { name }),
        (arb_name(), arb_bytes())
            .prop_map(|(name, password_hash)| AuthCommand::UserChangePassword { name, password_hash }),
        (arb_name(), arb_name()).prop_map(|(user, role)| AuthCommand::UserGrantRole { user, role }),
        (arb_name(), arb_name()).prop_map(|(user, role)| AuthCommand::UserRevokeRole { user, role }),
        arb_name().prop_map(|name| AuthCommand::RoleAdd { name }),
        arb_name().prop_map(|name| AuthCommand::RoleDelete { name }),
        (arb_name(), kind, arb_range()).prop_map(|(role, kind, range)| AuthCommand::RoleGrantPermission {
            role,
            permission: Permission { kind, range }
        }),
        (arb_name(), arb_range()).prop_map(|(role, range)| AuthCommand::RoleRevokePermission { role, range }),
    ]
}

/// Any command, `Authorized` ones (never nested) included.
fn arb_command() -> impl Strategy<Value = KvCommand> {
    prop_oneof![
        4 => arb_plain_command(),
        1 => (any::<u64>(), arb_plain_command())
            .prop_map(|(auth_revision, command)| KvCommand::Authorized { auth_revision, command: Box::new(command) }),
    ]
}

/// Any command but `Authorized`, with arbitrary bytes and numbers.
fn arb_plain_command() -> impl Strategy<Value = KvCommand> {
    let ops = || proptest::collection::vec(arb_op(), 0..4);
    prop_oneof![
        (arb_bytes(), arb_bytes(), any::<Option<u64>>()).prop_map(|(key, value, ttl_ms)| KvCommand::Put {
            key,
            value,
            ttl_ms
        }),
        arb_bytes().prop_map(|key| KvCommand::Delete { key }),
        (arb_bytes(), arb_bytes()).prop_map(|(start, end)| KvCommand::DeleteRange { start, end }),
        (arb_bytes(), proptest::option::of(arb_bytes()), arb_bytes(), any::<Option<u64>>()).prop_map(
            |(key, expected_value, new_value, ttl_ms)| KvCommand::CompareAndSwap {
                key,
                expected_value,
                new_value,
                ttl_ms
            }
        ),
        (proptest::collection::vec(arb_compare(), 0..4), ops(), ops())
            .prop_map(|(compares, success, failure)| KvCommand::Txn { compares, success, failure }),
        any::<u64>().prop_map(|revision| KvCommand::Compact { revision }),
        any::<u64>().prop_map(|now_ms| KvCommand::Expire { now_ms }),
        (any::<u64>(), any::<u64>()).prop_map(|(id, ttl_ms)| KvCommand::LeaseGrant { id, ttl_ms }),
        any::<u64>().prop_map(|id| KvCommand::LeaseRevoke { id }),
        any::<u64>().prop_map(|id| KvCommand::LeaseKeepAlive { id }),
        Just(KvCommand::LeaseRefreshAll),
        arb_auth().prop_map(KvCommand::Auth),
    ]
}

proptest! {
    #[test]
    fn every_command_round_trips(command in arb_command()) {
        let encoded = command.encode();
        prop_assert_eq!(encoded.len(), command.encoded_len());
        prop_assert_eq!(KvCommand::decode(&encoded), Ok(command.clone()));
        prop_assert_eq!(command.clone().encode(), encoded, "deterministic");
    }

    #[test]
    fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..64)) {
        let _ = KvCommand::decode(&data);
        let mut versioned = vec![1];
        versioned.extend_from_slice(&data);
        if let Ok(command) = KvCommand::decode(&versioned) {
            prop_assert_eq!(command.encode(), Bytes::from(versioned), "only canonical bytes decode");
        }
    }

    #[test]
    fn corrupted_encodings_never_panic(command in arb_command(), position in any::<usize>(), byte in any::<u8>()) {
        let encoded = command.encode();
        for length in 0..encoded.len() {
            prop_assert!(KvCommand::decode(&encoded[..length]).is_err(), "a strict prefix never decodes");
        }
        let mut corrupted = encoded.to_vec();
        corrupted[position % encoded.len()] = byte;
        let _ = KvCommand::decode(&corrupted);
    }
}

#[test]
fn the_put_encoding_is_pinned() {
    let command = KvCommand::Put { key: b("k"), value: b("v"), ttl_ms: Some(258) };
    let expected: &[u8] = &[1, 1, 1, 0, 0, 0, b'k', 1, 0, 0, 0, b'v', 1, 2, 1, 0, 0, 0, 0, 0, 0];
    assert_eq!(&command.encode()[..], expected);
    assert_eq!(&KvCommand::Expire { now_ms: 1 }.encode()[..], &[1, 7, 1, 0, 0, 0, 0, 0, 0, 0]);
}

#[test]
fn decode_errors_name_the_problem() {
    assert_eq!(
        KvCommand::decode(&[]).unwrap_err().to_string(),
        "truncated input: format version at byte 0 needs 1 bytes but 0 are left"
    );
    assert_eq!(KvCommand::decode(&[2, 1]), Err(KvDecodeError::UnsupportedVersion { version: 2 }));
    assert_eq!(KvCommand::decode(&[1, 0]), Err(KvDecodeError::UnknownTag { field: "command", offset: 1, tag: 0 }));
    let mut trailing = KvCommand::Compact { revision: 3 }.encode().to_vec();
    trailing.push(0);
    assert_eq!(KvCommand::decode(&trailing), Err(KvDecodeError::TrailingBytes { offset: 10, count: 1 }));
    let huge_list = [1, 5, 0xff, 0xff, 0xff, 0x7f];
    assert!(matches!(KvCommand::decode(&huge_list), Err(KvDecodeError::TooManyItems { field: "compares", .. })));
}

#[test]
fn validation_enforces_the_limits() {
    let limits = KvLimits { key_bytes_max: 4, value_bytes_max: 8, txn_ops_max: 2, command_bytes_max: 64 };
    let put = |key: &str, value: &str, ttl_ms| KvCommand::Put { key: b(key), value: b(value), ttl_ms };
    assert_eq!(limits.validate(&put("k", "v", Some(1))), Ok(()));
    assert_eq!(limits.validate(&put("", "v", None)), Err(KvError::EmptyKey));
    assert_eq!(limits.validate(&put("kkkkk", "v", None)), Err(KvError::KeyTooLarge { size: 5, max: 4 }));
    assert_eq!(limits.validate(&put("k", "123456789", None)), Err(KvError::ValueTooLarge { size: 9, max: 8 }));
    assert_eq!(limits.validate(&put("k", "v", Some(0))), Err(KvError::ZeroTtl));
    let all_keys = KvCommand::DeleteRange { start: b(""), end: Bytes::from_static(&[0]) };
    assert_eq!(limits.validate(&all_keys), Ok(()), "a range may start at the empty key");
    let empty_single = KvCommand::DeleteRange { start: b(""), end: b("") };
    assert_eq!(limits.validate(&empty_single), Err(KvError::EmptyKey));
    let cas =
        KvCommand::CompareAndSwap { key: b("k"), expected_value: Some(b("123456789")), new_value: b(""), ttl_ms: None };
    assert_eq!(limits.validate(&cas), Err(KvError::ValueTooLarge { size: 9, max: 8 }));

    let op = TxnOp::Delete { key: b("k") };
    let txn = KvCommand::Txn { compares: vec![], success: vec![op.clone(); 3], failure: vec![] };
    let error = limits.validate(&txn).unwrap_err();
    assert_eq!(error, KvError::TooManyTxnOps { list: "success", count: 3, max: 2 });
    assert!(error.to_string().contains("split it into smaller transactions"));
    let bad_op = KvCommand::Txn {
        compares: vec![],
        success: vec![],
        failure: vec![TxnOp::Put { key: b("k"), value: b("v"), ttl_ms: Some(0) }],
    };
    assert_eq!(limits.validate(&bad_op), Err(KvError::ZeroTtl));
    let compare = Compare { key: b(""), range_end: b(""), target: CompareTarget::Version(0), op: CompareOp::Equal };
    let bad_compare = KvCommand::Txn { compares: vec![compare], success: vec![], failure: vec![] };
    assert_eq!(limits.validate(&bad_compare), Err(KvError::EmptyKey));

    let tight = KvLimits { command_bytes_max: 10, ..limits };
    assert_eq!(tight.validate(&put("k", "v", None)), Err(KvError::CommandTooLarge { size: 13, max: 10 }));
    assert_eq!(validate(&KvCommand::Put { key: b("k"), value: Bytes::from(vec![0; 1 << 20]), ttl_ms: None }), Ok(()));
    let too_big = KvCommand::Put { key: b("k"), value: Bytes::from(vec![0; (1 << 20) + 1]), ttl_ms: None };
    assert!(matches!(validate(&too_big), Err(KvError::ValueTooLarge { .. })));
}

#[test]
fn transactions_written_before_ranged_compares_still_decode() {
    // Tag 5: one compare (key "k", Version == 3) without a range end, one Delete "k" on success.
    let mut old = vec![1, 5, 1, 0, 0, 0, 1, 0, 0, 0, b'k', 2, 3, 0, 0, 0, 0, 0, 0, 0, 1];
    old.extend_from_slice(&[1, 0, 0, 0, 2, 1, 0, 0, 0, b'k', 0, 0, 0, 0]);
    let expected = KvCommand::Txn {
        compares: vec![Compare {
            key: b("k"),
            range_end: b(""),
            target: CompareTarget::Version(3),
            op: CompareOp::Equal,
        }],
        success: vec![TxnOp::Delete { key: b("k") }],
        failure: vec![],
    };
    assert_eq!(KvCommand::decode(&old), Ok(expected.clone()));
    assert_eq!(expected.encode()[1], 8, "transactions are written with the ranged format");
}

#[test]
fn nesting_beyond_the_limit_is_refused_by_validation_and_decoding() {
    let nest = |depth: usize| {
        let mut ops = vec![TxnOp::Delete { key: b("k") }];
        for _ in 1..depth {
            ops = vec![TxnOp::Txn { compares: vec![], success: ops, failure: vec![] }];
        }
        KvCommand::Txn { compares: vec![], success: ops, failure: vec![] }
    };
    let deepest = nest(crate::kv::TXN_NESTING_MAX);
    assert_eq!(validate(&deepest), Ok(()));
    assert_eq!(KvCommand::decode(&deepest.encode()), Ok(deepest));
    let too_deep = nest(crate::kv::TXN_NESTING_MAX + 1);
    assert_eq!(validate(&too_deep), Err(KvError::TxnTooDeep { max: crate::kv::TXN_NESTING_MAX }));
    assert!(matches!(KvCommand::decode(&too_deep.encode()), Err(KvDecodeError::TooDeep { .. })));
}

#[test]
fn auth_commands_have_pinned_bytes_and_bad_bytes_are_refused() {
    let add = KvCommand::Auth(AuthCommand::UserAdd { name: "é".into(), password_hash: b("h"), no_password: true });
    let expected: &[u8] = &[1, 14, 3, 2, 0, 0, 0, 0xc3, 0xa9, 1, 0, 0, 0, b'h', 1];
    assert_eq!(&add.encode()[..], expected);
    let mut not_utf8 = expected.to_vec();
    not_utf8[8] = 0x28;
    assert_eq!(KvCommand::decode(&not_utf8), Err(KvDecodeError::InvalidUtf8 { field: "user name", offset: 3 }));
    let mut bad_flag = expected.to_vec();
    bad_flag[14] = 2;
    assert!(matches!(KvCommand::decode(&bad_flag), Err(KvDecodeError::UnknownTag { field: "no_password", .. })));
    assert!(matches!(
        KvCommand::decode(&[1, 14, 12]),
        Err(KvDecodeError::UnknownTag { field: "auth command", offset: 2, tag: 12 })
    ));
    let permission = Permission { kind: PermissionKind::Write, range: KeyRange::new(b("a"), b("b")) };
    let grant = KvCommand::Auth(AuthCommand::RoleGrantPermission { role: "r".into(), permission });
    let expected: &[u8] = &[1, 14, 10, 1, 0, 0, 0, b'r', 2, 1, 0, 0, 0, b'a', 1, 0, 0, 0, b'b'];
    assert_eq!(&grant.encode()[..], expected);
    for kind in [0, 4] {
        let mut bad_kind = expected.to_vec();
        bad_kind[8] = kind;
        assert!(matches!(
            KvCommand::decode(&bad_kind),
            Err(KvDecodeError::UnknownTag { field: "permission kind", .. })
        ));
    }
}

#[test]
fn validation_checks_auth_names_hashes_keys_and_ranges() {
    let limits = KvLimits { key_bytes_max: 4, ..KvLimits::DEFAULT };
    let auth = |command: AuthCommand| limits.validate(&KvCommand::Auth(command));
    let long_name = "n".repeat(AUTH_NAME_BYTES_MAX + 1);
    let name_too_large = Err(KvError::AuthNameTooLarge { size: AUTH_NAME_BYTES_MAX + 1, max: AUTH_NAME_BYTES_MAX });
    let add = |name: &str, hash: usize| AuthCommand::UserAdd {
        name: name.into(),
        password_hash: Bytes::from(vec![1; hash]),
        no_password: false,
    };
    assert_eq!(auth(add(&"n".repeat(AUTH_NAME_BYTES_MAX), AUTH_HASH_BYTES_MAX)), Ok(()));
    assert_eq!(auth(add(&long_name, 0)), name_too_large);
    assert_eq!(auth(add("", 0)), Err(KvError::AuthEmptyName { what: "user" }));
    let hash_too_large = Err(KvError::AuthHashTooLarge { size: AUTH_HASH_BYTES_MAX + 1, max: AUTH_HASH_BYTES_MAX });
    assert_eq!(auth(add("u", AUTH_HASH_BYTES_MAX + 1)), hash_too_large);
    let change = AuthCommand::UserChangePassword {
        name: "u".into(),
        password_hash: Bytes::from(vec![1; AUTH_HASH_BYTES_MAX + 1]),
    };
    assert_eq!(auth(change), hash_too_large);
    assert_eq!(auth(AuthCommand::RoleAdd { name: String::new() }), Err(KvError::AuthEmptyName { what: "role" }));
    assert_eq!(auth(AuthCommand::RoleDelete { name: long_name.clone() }), name_too_large);
    assert_eq!(auth(AuthCommand::UserDelete { name: String::new() }), Ok(()), "refused when applied: not found");
    assert_eq!(auth(AuthCommand::UserGrantRole { user: "u".into(), role: long_name.clone() }), name_too_large);
    assert_eq!(auth(AuthCommand::UserRevokeRole { user: long_name, role: "r".into() }), name_too_large);
    let key = |size: usize| Bytes::from(vec![b'k'; size]);
    let token = |size: usize| auth(AuthCommand::Enable { token_key: key(size) });
    assert_eq!(token(AUTH_TOKEN_KEY_BYTES_MAX), Ok(()));
    let token_too_large =
        KvError::AuthHashTooLarge { size: AUTH_TOKEN_KEY_BYTES_MAX + 1, max: AUTH_TOKEN_KEY_BYTES_MAX };
    assert_eq!(token(AUTH_TOKEN_KEY_BYTES_MAX + 1), Err(token_too_large));
    let grant = |range: KeyRange| {
        auth(AuthCommand::RoleGrantPermission {
            role: "r".into(),
            permission: Permission { kind: PermissionKind::Read, range },
        })
    };
    assert_eq!(grant(KeyRange::all()), Ok(()), "an empty start with end [0] is every key");
    assert_eq!(grant(KeyRange::key(Bytes::new())), Err(KvError::EmptyKey));
    assert_eq!(grant(KeyRange::new(key(5), Bytes::new())), Err(KvError::KeyTooLarge { size: 5, max: 4 }));
    assert_eq!(grant(KeyRange::new(b("a"), key(5))), Err(KvError::KeyTooLarge { size: 5, max: 4 }));
    let revoke = |range: KeyRange| auth(AuthCommand::RoleRevokePermission { role: "r".into(), range });
    assert_eq!(revoke(KeyRange::key(Bytes::new())), Err(KvError::EmptyKey));
    assert_eq!(revoke(KeyRange::prefix(b("ab"))), Ok(()));
    assert!(KvError::AuthLimit { what: "users", max: 3 }.to_string().contains("remove some"));
}
