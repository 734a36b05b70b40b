//! The auth table's rules: every refusal, revision counting, the root protections, and
//! `Authorized` commands applied or refused by the auth revision.

use bytes::Bytes;

use super::{apply, b, put};
use crate::kv::{
    validate, Alarm, AuthCommand, AuthState, KeyRange, KvCommand, KvDecodeError, KvError, KvEventKind, KvStore,
    Permission, PermissionKind, AUTH_ROLES_MAX, AUTH_ROLE_PERMISSIONS_MAX, AUTH_USERS_MAX, AUTH_USER_ROLES_MAX, ROOT,
};

/// Applies an auth command and checks what every auth command must do: no store revision, no
/// event, no response; on success the auth revision advances by 1, on refusal nothing changes.
pub(super) fn apply_auth(store: &mut KvStore, command: AuthCommand) -> Result<(), KvError> {
    let (before, revision) = (store.auth().clone(), store.current_revision());
    let result = apply(store, KvCommand::Auth(command));
    assert_eq!(result.revision, revision, "auth commands make no store revision");
    assert_eq!(store.current_revision(), revision);
    assert!(result.events.is_empty() && result.responses.is_empty());
    assert_eq!(result.succeeded, result.error.is_none());
    match result.error {
        None => {
            assert_eq!(store.auth().revision(), before.revision() + 1, "a success counts one revision");
            Ok(())
        }
        Some(error) => {
            assert_eq!(store.auth(), &before, "a refused command changes nothing");
            Err(error)
        }
    }
}

pub(super) fn user_add(name: &str) -> AuthCommand {
    AuthCommand::UserAdd { name: name.into(), password_hash: b("hash"), no_password: false }
}

pub(super) fn role_add(name: &str) -> AuthCommand {
    AuthCommand::RoleAdd { name: name.into() }
}

pub(super) fn grant_role(user: &str, role: &str) -> AuthCommand {
    AuthCommand::UserGrantRole { user: user.into(), role: role.into() }
}

fn revoke_role(user: &str, role: &str) -> AuthCommand {
    AuthCommand::UserRevokeRole { user: user.into(), role: role.into() }
}

pub(super) fn grant(role: &str, kind: PermissionKind, range: KeyRange) -> AuthCommand {
    AuthCommand::RoleGrantPermission { role: role.into(), permission: Permission { kind, range } }
}

fn enable() -> AuthCommand {
    AuthCommand::Enable { token_key: b("key") }
}

/// A store whose auth table has user root with role root (the role exists), enabled.
fn enabled_store() -> KvStore {
    let mut store = KvStore::new();
    for command in [user_add(ROOT), role_add(ROOT), grant_role(ROOT, ROOT), enable()] {
        apply_auth(&mut store, command).unwrap();
    }
    assert_eq!((store.auth().enabled(), store.auth().revision()), (true, 4));
    store
}

#[test]
fn enabling_needs_root_with_the_root_role_and_replaces_the_key() {
    let mut store = KvStore::new();
    assert_eq!(apply_auth(&mut store, enable()), Err(KvError::AuthRootUserMissing));
    apply_auth(&mut store, user_add(ROOT)).unwrap();
    assert_eq!(apply_auth(&mut store, enable()), Err(KvError::AuthRootRoleMissing));
    apply_auth(&mut store, grant_role(ROOT, ROOT)).unwrap();
    assert!(store.auth().role(ROOT).is_none(), "role root may be granted before it exists");
    assert!(store.auth().is_admin(ROOT));
    apply_auth(&mut store, enable()).unwrap();
    assert_eq!((store.auth().enabled(), store.auth().token_key()), (true, &b("key")));
    apply_auth(&mut store, AuthCommand::Enable { token_key: b("other") }).unwrap();
    assert_eq!((store.auth().enabled(), store.auth().token_key(), store.auth().revision()), (true, &b("other"), 4));
    apply_auth(&mut store, AuthCommand::Disable).unwrap();
    apply_auth(&mut store, AuthCommand::Disable).unwrap();
    assert_eq!((store.auth().enabled(), store.auth().revision()), (false, 6), "disabling twice succeeds twice");
}

#[test]
fn users_are_added_deleted_and_their_passwords_changed() {
    let mut store = KvStore::new();
    assert_eq!(apply_auth(&mut store, user_add("")), Err(KvError::AuthEmptyName { what: "user" }));
    let alice = AuthCommand::UserAdd { name: "alice".into(), password_hash: Bytes::new(), no_password: true };
    apply_auth(&mut store, alice.clone()).unwrap();
    assert_eq!(apply_auth(&mut store, alice), Err(KvError::AuthUserExists));
    let change = |name: &str| AuthCommand::UserChangePassword { name: name.into(), password_hash: b("new") };
    assert_eq!(apply_auth(&mut store, change("bob")), Err(KvError::AuthUserNotFound));
    apply_auth(&mut store, change("alice")).unwrap();
    let alice = store.auth().user("alice").unwrap();
    assert_eq!((&alice.password_hash, alice.no_password), (&b("new"), true), "no_password is kept");
    let delete = |name: &str| AuthCommand::UserDelete { name: name.into() };
    assert_eq!(apply_auth(&mut store, delete("bob")), Err(KvError::AuthUserNotFound));
    apply_auth(&mut store, delete("alice")).unwrap();
    assert!(store.auth().user("alice").is_none());
    assert_eq!(store.auth().users().count(), 0);
}

#[test]
fn roles_are_granted_and_revoked() {
    let mut store = KvStore::new();
    apply_auth(&mut store, user_add("alice")).unwrap();
    assert_eq!(apply_auth(&mut store, grant_role("bob", "reader")), Err(KvError::AuthUserNotFound));
    assert_eq!(apply_auth(&mut store, grant_role("alice", "reader")), Err(KvError::AuthRoleNotFound));
    assert_eq!(apply_auth(&mut store, role_add("")), Err(KvError::AuthEmptyName { what: "role" }));
    apply_auth(&mut store, role_add("reader")).unwrap();
    assert_eq!(apply_auth(&mut store, role_add("reader")), Err(KvError::AuthRoleExists));
    apply_auth(&mut store, grant_role("alice", "reader")).unwrap();
    let before = store.auth().user("alice").cloned();
    apply_auth(&mut store, grant_role("alice", "reader")).unwrap();
    assert_eq!(store.auth().user("alice").cloned(), before, "granting a held role changes nothing but the revision");
    assert!(store.auth().has_role("alice", "reader") && !store.auth().has_role("bob", "reader"));
    assert!(!store.auth().is_admin("alice"));
    assert_eq!(apply_auth(&mut store, revoke_role("bob", "reader")), Err(KvError::AuthUserNotFound));
    apply_auth(&mut store, revoke_role("alice", "reader")).unwrap();
    assert_eq!(apply_auth(&mut store, revoke_role("alice", "reader")), Err(KvError::AuthRoleNotGranted));
    assert_eq!(store.auth().revision(), 5);
}

#[test]
fn deleting_a_role_revokes_it_from_every_user() {
    let mut store = KvStore::new();
    for command in [user_add("alice"), user_add("bob"), role_add("reader"), role_add("writer")] {
        apply_auth(&mut store, command).unwrap();
    }
    for (user, role) in [("alice", "reader"), ("bob", "reader"), ("bob", "writer")] {
        apply_auth(&mut store, grant_role(user, role)).unwrap();
    }
    let delete = |name: &str| AuthCommand::RoleDelete { name: name.into() };
    assert_eq!(apply_auth(&mut store, delete("nobody")), Err(KvError::AuthRoleNotFound));
    apply_auth(&mut store, delete("reader")).unwrap();
    assert!(store.auth().role("reader").is_none());
    assert!(store.auth().user("alice").unwrap().roles.is_empty());
    assert_eq!(store.auth().user("bob").unwrap().roles.iter().collect::<Vec<_>>(), vec!["writer"]);
    assert_eq!(store.auth().roles().map(|(name, _)| name).collect::<Vec<_>>(), vec!["writer"]);
}

#[test]
fn root_is_protected_only_while_auth_is_enabled() {
    let mut store = enabled_store();
    let delete_user = AuthCommand::UserDelete { name: ROOT.into() };
    let delete_role = AuthCommand::RoleDelete { name: ROOT.into() };
    assert_eq!(apply_auth(&mut store, delete_user.clone()), Err(KvError::AuthInvalidManagement));
    assert_eq!(apply_auth(&mut store, delete_role.clone()), Err(KvError::AuthInvalidManagement));
    assert_eq!(apply_auth(&mut store, revoke_role(ROOT, ROOT)), Err(KvError::AuthInvalidManagement));
    // Other roles of root, and role root of other users, are not protected.
    for command in [role_add("extra"), grant_role(ROOT, "extra"), revoke_role(ROOT, "extra")] {
        apply_auth(&mut store, command).unwrap();
    }
    for command in [user_add("alice"), grant_role("alice", ROOT), revoke_role("alice", ROOT)] {
        apply_auth(&mut store, command).unwrap();
    }
    apply_auth(&mut store, AuthCommand::Disable).unwrap();
    apply_auth(&mut store, revoke_role(ROOT, ROOT)).unwrap();
    apply_auth(&mut store, delete_role).unwrap();
    apply_auth(&mut store, delete_user).unwrap();
    assert_eq!(store.auth().users().map(|(name, _)| name).collect::<Vec<_>>(), vec!["alice"]);
}

#[test]
fn permissions_stay_sorted_and_a_grant_on_a_held_range_replaces_its_kind() {
    let mut store = KvStore::new();
    let range = |start: &str, end: &str| KeyRange::new(b(start), b(end));
    assert_eq!(
        apply_auth(&mut store, grant("r", PermissionKind::Read, range("a", ""))),
        Err(KvError::AuthRoleNotFound)
    );
    apply_auth(&mut store, role_add("r")).unwrap();
    for (start, end) in [("b", ""), ("a", "c"), ("a", ""), ("a", "b")] {
        apply_auth(&mut store, grant("r", PermissionKind::Read, range(start, end))).unwrap();
    }
    apply_auth(&mut store, grant("r", PermissionKind::ReadWrite, range("a", "c"))).unwrap();
    let held: Vec<_> = store.auth().role("r").unwrap().permissions.iter().map(|p| (p.range.clone(), p.kind)).collect();
    let expected = vec![
        (range("a", ""), PermissionKind::Read),
        (range("a", "b"), PermissionKind::Read),
        (range("a", "c"), PermissionKind::ReadWrite),
        (range("b", ""), PermissionKind::Read),
    ];
    assert_eq!(held, expected);
    let revoke = |role: &str, range: KeyRange| AuthCommand::RoleRevokePermission { role: role.into(), range };
    assert_eq!(apply_auth(&mut store, revoke("x", range("a", "b"))), Err(KvError::AuthRoleNotFound));
    assert_eq!(apply_auth(&mut store, revoke("r", range("a", "bb"))), Err(KvError::AuthPermissionNotGranted));
    apply_auth(&mut store, revoke("r", range("a", "b"))).unwrap();
    assert_eq!(store.auth().role("r").unwrap().permissions.len(), 3);
}

#[test]
fn the_bounds_of_the_table_are_refused_when_applied() {
    // The bulk of the table is applied without `apply_auth`, whose copy per command of the
    // whole table would make this test quadratic.
    let bulk = |store: &mut KvStore, command: AuthCommand| assert!(apply(store, KvCommand::Auth(command)).succeeded);
    let mut store = KvStore::new();
    apply_auth(&mut store, user_add("u")).unwrap();
    apply_auth(&mut store, role_add("r")).unwrap();
    for index in 1..AUTH_USERS_MAX {
        bulk(&mut store, user_add(&format!("user{index}")));
    }
    assert_eq!(
        apply_auth(&mut store, user_add("more")),
        Err(KvError::AuthLimit { what: "users", max: AUTH_USERS_MAX })
    );
    for index in 1..AUTH_ROLES_MAX {
        bulk(&mut store, role_add(&format!("role{index}")));
    }
    assert_eq!(
        apply_auth(&mut store, role_add("more")),
        Err(KvError::AuthLimit { what: "roles", max: AUTH_ROLES_MAX })
    );
    for index in 1..=AUTH_USER_ROLES_MAX {
        bulk(&mut store, grant_role("u", &format!("role{index}")));
    }
    let refused = apply_auth(&mut store, grant_role("u", "r"));
    assert_eq!(refused, Err(KvError::AuthLimit { what: "roles per user", max: AUTH_USER_ROLES_MAX }));
    apply_auth(&mut store, grant_role("u", "role1")).unwrap(); // a held role: nothing added
    let key = |index: usize| KeyRange::key(Bytes::from(format!("k{index:04}")));
    for index in 0..AUTH_ROLE_PERMISSIONS_MAX {
        bulk(&mut store, grant("r", PermissionKind::Read, key(index)));
    }
    let refused = apply_auth(&mut store, grant("r", PermissionKind::Read, key(AUTH_ROLE_PERMISSIONS_MAX)));
    assert_eq!(refused, Err(KvError::AuthLimit { what: "permissions per role", max: AUTH_ROLE_PERMISSIONS_MAX }));
    apply_auth(&mut store, grant("r", PermissionKind::Write, key(0))).unwrap(); // a held range: replaced
    let successes = AUTH_USERS_MAX + AUTH_ROLES_MAX + AUTH_USER_ROLES_MAX + AUTH_ROLE_PERMISSIONS_MAX + 2;
    assert_eq!(store.auth().revision(), successes as u64);
    assert_eq!(KvStore::restore(&store.snapshot()).as_ref(), Ok(&store), "a table at its bounds restores");
}

#[test]
fn auth_commands_are_never_refused_for_space() {
    let mut store = KvStore::new();
    apply(&mut store, KvCommand::Alarm { member: 1, alarm: Alarm::NoSpace, active: true });
    apply_auth(&mut store, user_add(ROOT)).unwrap();
    assert!(!KvCommand::Auth(user_add("x")).grows_store());
}

fn authorized(auth_revision: u64, command: KvCommand) -> KvCommand {
    KvCommand::Authorized { auth_revision, command: Box::new(command) }
}

#[test]
fn authorized_commands_apply_only_at_the_checked_revision_while_enabled() {
    let mut store = KvStore::new();
    let result = apply(&mut store, authorized(77, put("/a", "1")));
    assert!(result.succeeded, "auth disabled: any revision applies");
    let mut store = enabled_store();
    let (revision, auth) = (store.current_revision(), store.auth().clone());
    let stale = apply(&mut store, authorized(3, put("/a", "1")));
    assert_eq!((stale.succeeded, stale.error, stale.revision), (false, Some(KvError::AuthOldRevision), revision));
    assert!(stale.events.is_empty() && stale.responses.is_empty());
    assert_eq!((store.current_revision(), store.auth()), (revision, &auth), "nothing changed");
    assert_eq!(store.get(b"/a", None), Ok(None));
    let fresh = apply(&mut store, authorized(4, put("/a", "1")));
    assert_eq!((fresh.succeeded, fresh.revision, fresh.events.len()), (true, revision + 1, 1));
    assert_eq!((fresh.events[0].kind, &fresh.events[0].key[..]), (KvEventKind::Put, &b"/a"[..]));
    apply_auth(&mut store, AuthCommand::Disable).unwrap();
    assert!(apply(&mut store, authorized(4, put("/b", "1"))).succeeded, "disabled again: old revisions apply");
}

#[test]
fn an_authorized_command_is_checked_for_its_revision_before_space() {
    let mut store = enabled_store();
    apply(&mut store, KvCommand::Alarm { member: 1, alarm: Alarm::NoSpace, active: true });
    let stale = apply(&mut store, authorized(1, put("/a", "1")));
    assert_eq!(stale.error, Some(KvError::AuthOldRevision));
    let fresh = apply(&mut store, authorized(4, put("/a", "1")));
    assert_eq!(fresh.error, Some(KvError::NoSpace), "the inner put grows the store");
    assert!(authorized(4, put("/a", "1")).grows_store());
    let delete = apply(&mut store, authorized(4, KvCommand::Delete { key: b("/a") }));
    assert_eq!((delete.succeeded, delete.error), (true, None));
    let auth_inside = apply(&mut store, authorized(4, KvCommand::Auth(user_add("alice"))));
    assert!(auth_inside.succeeded && store.auth().user("alice").is_some());
    assert_eq!(store.auth().revision(), 5);
}

#[test]
fn nested_authorized_commands_are_refused_by_validation_and_decoding() {
    let nested = authorized(1, authorized(1, put("/a", "1")));
    assert_eq!(validate(&nested), Err(KvError::NestedAuthorized));
    assert_eq!(validate(&authorized(1, put("", "1"))), Err(KvError::EmptyKey), "the inner command is validated");
    assert_eq!(validate(&authorized(1, put("/a", "1"))), Ok(()));
    let bytes = nested.encode();
    assert_eq!(bytes.len(), nested.encoded_len());
    assert_eq!(KvCommand::decode(&bytes), Err(KvDecodeError::NestedAuthorized { offset: 10 }));
    // The legacy transaction tag is never written inside `Authorized` (found by the
    // decode_kv_command fuzz target: it re-encoded as tag 8, so not to the same bytes).
    let mut legacy = vec![1, 15];
    legacy.extend_from_slice(&[0xff; 8]);
    legacy.extend_from_slice(&[5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    let refused = KvDecodeError::UnknownTag { field: "command", offset: 10, tag: 5 };
    assert_eq!(KvCommand::decode(&legacy), Err(refused));
    let single = authorized(9, put("/a", "1"));
    assert_eq!(KvCommand::decode(&single.encode()), Ok(single.clone()));
    assert_eq!(&single.encode()[..11], &[1, 15, 9, 0, 0, 0, 0, 0, 0, 0, 1], "no second version byte");
}

#[test]
fn a_restored_table_is_the_same_table() {
    let mut store = enabled_store();
    for command in [user_add("alice"), role_add("reader"), grant_role("alice", "reader")] {
        apply_auth(&mut store, command).unwrap();
    }
    apply_auth(&mut store, grant("reader", PermissionKind::Read, KeyRange::prefix(b("/a/")))).unwrap();
    let restored = KvStore::restore(&store.snapshot()).unwrap();
    assert_eq!(restored.auth(), store.auth());
    assert_eq!(restored.auth().revision(), 8);
    assert!(restored.auth().can_read("alice", &KeyRange::key(b("/a/x"))));
    assert_eq!(store.image().snapshot(), store.snapshot(), "the image copies the table");
    assert_ne!(store.auth(), &AuthState::default());
}

#[test]
fn every_auth_error_says_what_to_do() {
    let errors = [
        KvError::AuthRootUserMissing,
        KvError::AuthRootRoleMissing,
        KvError::AuthUserExists,
        KvError::AuthUserNotFound,
        KvError::AuthRoleExists,
        KvError::AuthRoleNotFound,
        KvError::AuthRoleNotGranted,
        KvError::AuthPermissionNotGranted,
        KvError::AuthInvalidManagement,
        KvError::AuthOldRevision,
        KvError::AuthEmptyName { what: "role" },
        KvError::AuthNameTooLarge { size: 300, max: 256 },
        KvError::AuthHashTooLarge { size: 2000, max: 1024 },
        KvError::AuthLimit { what: "users", max: 10 },
        KvError::NestedAuthorized,
    ];
    for error in errors {
        let text = error.to_string();
        assert!(text.contains("; ") && !text.contains("Auth"), "{error:?}: {text}");
    }
    assert!(KvError::AuthEmptyName { what: "role" }.to_string().starts_with("the role name is empty"));
    assert!(KvError::AuthNameTooLarge { size: 300, max: 256 }.to_string().contains("300 bytes"));
}
