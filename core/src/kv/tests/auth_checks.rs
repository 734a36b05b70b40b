//! Permission checks (`can_read`, `can_write`): edge cases of range coverage, and a property test
//! against a brute-force check over every key that can matter.

use bytes::Bytes;
use proptest::prelude::*;

use super::auth::{apply_auth, grant, grant_role, role_add, user_add};
use super::b;
use crate::kv::{AuthState, KeyRange, KvStore, PermissionKind, ROOT};

/// A store whose user `u` holds role `r` with the permissions given (kind, start, end).
fn user_with(permissions: &[(PermissionKind, &str, &[u8])]) -> KvStore {
    let mut store = KvStore::new();
    for command in [user_add("u"), role_add("r"), grant_role("u", "r")] {
        apply_auth(&mut store, command).unwrap();
    }
    for (kind, start, end) in permissions {
        apply_auth(&mut store, grant("r", *kind, KeyRange::new(b(start), Bytes::copy_from_slice(end)))).unwrap();
    }
    store
}

fn range(start: &str, end: &[u8]) -> KeyRange {
    KeyRange::new(b(start), Bytes::copy_from_slice(end))
}

const READ: PermissionKind = PermissionKind::Read;
const WRITE: PermissionKind = PermissionKind::Write;
const FROM: &[u8] = &[0];

#[test]
fn unknown_users_may_do_nothing_and_admins_everything() {
    let mut store = user_with(&[]);
    let auth = store.auth();
    assert!(!auth.can_read("nobody", &KeyRange::key(b("a"))));
    assert!(!auth.can_read("nobody", &range("b", b"a")), "even an empty range: the user is unknown");
    assert!(!auth.can_read("u", &KeyRange::key(b("a"))) && !auth.can_write("u", &KeyRange::all()));
    assert!(auth.can_read("u", &range("b", b"a")) && auth.can_write("u", &range("b", b"b")), "empty ranges");
    apply_auth(&mut store, grant_role("u", ROOT)).unwrap();
    assert!(store.auth().is_admin("u") && store.auth().role(ROOT).is_none());
    assert!(store.auth().can_read("u", &KeyRange::all()) && store.auth().can_write("u", &KeyRange::all()));
}

#[test]
fn a_single_key_permission_covers_that_key_only() {
    let store = user_with(&[(READ, "k", b"")]);
    let auth = store.auth();
    assert!(auth.can_read("u", &KeyRange::key(b("k"))));
    assert!(auth.can_read("u", &range("k", b"k\0")), "[k, k\\0) is exactly the key k");
    assert!(!auth.can_read("u", &range("k", b"k\0\0")));
    assert!(!auth.can_read("u", &KeyRange::key(b("k\0"))) && !auth.can_read("u", &KeyRange::key(b("j"))));
    assert!(!auth.can_read("u", &KeyRange::prefix(b("k"))));
    assert!(!auth.can_write("u", &KeyRange::key(b("k"))), "a read permission allows no write");
}

#[test]
fn adjacent_intervals_merge_and_gaps_are_found() {
    let store = user_with(&[(READ, "a", b"b"), (READ, "b", b"c"), (READ, "d", b"e")]);
    let auth = store.auth();
    assert!(auth.can_read("u", &range("a", b"c")));
    assert!(auth.can_read("u", &range("aa", b"bz")));
    assert!(!auth.can_read("u", &range("a", b"c\0")), "c itself is not covered");
    assert!(!auth.can_read("u", &range("a", b"e")), "the gap [c, d)");
    assert!(!auth.can_read("u", &range("a", FROM)));
    let gap_at_a_key = user_with(&[(READ, "a", b"b"), (READ, "b\0", b"c")]);
    assert!(!gap_at_a_key.auth().can_read("u", &range("a", b"c")), "b is missing");
    let filled = user_with(&[(READ, "a", b"b"), (READ, "b\0", b"c"), (READ, "b", b"")]);
    assert!(filled.auth().can_read("u", &range("a", b"c")), "the single key b fills the gap");
    let nested = user_with(&[(READ, "a", b"z"), (READ, "b", b"c"), (READ, "c", b"d")]);
    assert!(nested.auth().can_read("u", &range("a", b"z")) && !nested.auth().can_read("u", &range("a", b"z\0")));
}

#[test]
fn from_key_permissions_and_requests_are_unbounded_above() {
    let store = user_with(&[(READ, "b", FROM), (READ, "a", b"b")]);
    let auth = store.auth();
    assert!(auth.can_read("u", &range("a", FROM)));
    assert!(auth.can_read("u", &range("c", b"\xff\xff\xff")) && auth.can_read("u", &KeyRange::key(b("zzz"))));
    assert!(!auth.can_read("u", &KeyRange::all()), "the keys below a are not covered");
    let everything = user_with(&[(READ, "", FROM)]);
    assert!(everything.auth().can_read("u", &KeyRange::all()));
    assert!(everything.auth().can_read("u", &KeyRange::key(Bytes::new())), "even the empty key");
    let bounded = user_with(&[(READ, "a", b"\xff")]);
    assert!(!bounded.auth().can_read("u", &range("a", FROM)), "a bounded union never covers a from-key range");
}

#[test]
fn kinds_combine_across_permissions_and_roles() {
    let mut store = user_with(&[(READ, "a", b"c"), (WRITE, "a", b"b"), (PermissionKind::ReadWrite, "b", b"c")]);
    let auth = store.auth();
    assert!(auth.can_read("u", &range("a", b"c")) && auth.can_write("u", &range("a", b"c")));
    assert!(!auth.can_write("u", &range("a", b"d")));
    for command in [role_add("w"), grant("w", WRITE, range("c", b"d")), grant_role("u", "w")] {
        apply_auth(&mut store, command).unwrap();
    }
    assert!(store.auth().can_write("u", &range("a", b"d")), "the union spans the user's roles");
    assert!(!store.auth().can_read("u", &range("a", b"d")));
}

/// The keys of an alphabet of `0`, `a` and `b` up to two bytes long, each also followed by a
/// zero byte: every range bound the property test generates, and the key after each. Coverage
/// can only fail at a requested start or at a bound (or the key after a single key), so checking
/// these keys is exact for the generated ranges.
fn universe() -> Vec<Bytes> {
    let letters: [u8; 3] = [0, b'a', b'b'];
    let mut keys = vec![vec![]];
    keys.extend(letters.iter().map(|&x| vec![x]));
    keys.extend(letters.iter().flat_map(|&x| letters.iter().map(move |&y| vec![x, y])));
    let successors: Vec<Vec<u8>> = keys.iter().map(|key| [&key[..], &[0]].concat()).collect();
    keys.into_iter().chain(successors).map(Bytes::from).collect()
}

fn brute_force(auth: &AuthState, user: &str, requested: &KeyRange, allows: fn(PermissionKind) -> bool) -> bool {
    let Some(holder) = auth.user(user) else { return false };
    if auth.is_admin(user) {
        return true;
    }
    let permissions: Vec<_> =
        holder.roles.iter().filter_map(|role| auth.role(role)).flat_map(|role| &role.permissions).collect();
    universe()
        .iter()
        .filter(|key| requested.contains(key))
        .all(|key| permissions.iter().any(|permission| allows(permission.kind) && permission.range.contains(key)))
}

fn small_key() -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(prop_oneof![Just(0u8), Just(b'a'), Just(b'b')], 0..=2).prop_map(Bytes::from)
}

fn small_range() -> impl Strategy<Value = KeyRange> {
    let end = prop_oneof![Just(Bytes::new()), Just(Bytes::from_static(&[0])), small_key()];
    (small_key(), end).prop_map(|(start, end)| KeyRange { start, end })
}

fn kind() -> impl Strategy<Value = PermissionKind> {
    prop_oneof![Just(PermissionKind::Read), Just(PermissionKind::Write), Just(PermissionKind::ReadWrite)]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn checks_agree_with_a_brute_force_check(
        grants in proptest::collection::vec((0..3usize, kind(), small_range()), 0..8),
        roles in proptest::collection::btree_set(0..4usize, 0..4),
        requests in proptest::collection::vec(small_range(), 1..8),
    ) {
        let names = ["r0", "r1", "r2", ROOT];
        let mut store = KvStore::new();
        apply_auth(&mut store, user_add("u")).unwrap();
        for name in &names[..3] {
            apply_auth(&mut store, role_add(name)).unwrap();
        }
        for (role, kind, range) in grants {
            apply_auth(&mut store, grant(names[role], kind, range)).unwrap();
        }
        for role in roles {
            apply_auth(&mut store, grant_role("u", names[role])).unwrap();
        }
        let auth = store.auth();
        for requested in &requests {
            prop_assert_eq!(auth.can_read("u", requested), brute_force(auth, "u", requested, PermissionKind::allows_read), "read {:?}", requested);
            prop_assert_eq!(auth.can_write("u", requested), brute_force(auth, "u", requested, PermissionKind::allows_write), "write {:?}", requested);
            prop_assert!(!auth.can_read("v", requested));
        }
    }
}

#[test]
fn permission_kinds_map_to_etcd_codes() {
    for (code, kind) in [(0, PermissionKind::Read), (1, PermissionKind::Write), (2, PermissionKind::ReadWrite)] {
        assert_eq!((PermissionKind::from_etcd(code), kind.etcd_code()), (Some(kind), code));
    }
    assert_eq!((PermissionKind::from_etcd(3), PermissionKind::from_etcd(-1)), (None, None));
    assert!(PermissionKind::ReadWrite.allows_read() && PermissionKind::ReadWrite.allows_write());
    assert!(!PermissionKind::Read.allows_write() && !PermissionKind::Write.allows_read());
}
