//! The byte encoding of auth commands (the body of command tag 14, see `command_codec.rs`) and of
//! the auth table (the end of a version-4 snapshot, see `snapshot.rs`). Primitives as in
//! `wire.rs`; a `string` is a byte string holding UTF-8 (decoding refuses anything else).
//!
//! ```text
//! auth command = tag:u8 body
//!                tag 1 Enable token_key:bytes; 2 Disable;
//!                tag 3 UserAdd name:string password_hash:bytes no_password:u8 (0 or 1);
//!                tag 4 UserDelete name:string; 5 UserChangePassword name:string password_hash:bytes;
//!                tag 6 UserGrantRole user:string role:string; 7 UserRevokeRole user:string role:string;
//!                tag 8 RoleAdd name:string; 9 RoleDelete name:string;
//!                tag 10 RoleGrantPermission role:string permission;
//!                tag 11 RoleRevokePermission role:string start:bytes end:bytes
//! permission   = kind:u8 (1 Read, 2 Write, 3 ReadWrite) start:bytes end:bytes
//! auth table   = enabled:u8 revision:u64 token_key:bytes user_count:u32 user* role_count:u32 role*
//! user         = name:string password_hash:bytes no_password:u8 role_count:u32 role_name:string*
//! role         = name:string permission_count:u32 permission*
//! ```
//!
//! In the table, users, roles and each user's role names are in strictly increasing name order,
//! and each role's permissions in strictly increasing `(start, end)` order, so that equal tables
//! have equal bytes. Restoring checks that order and every invariant applying keeps (names not
//! empty, the bounds of `auth.rs`, a user's roles exist or are [`ROOT`], enabled auth has its
//! root administrator), and refuses anything else.

use std::collections::BTreeSet;

use bytes::Bytes;

use super::auth::{
    AuthCommand, AuthRole, AuthState, AuthUser, Permission, PermissionKind, AUTH_ROLES_MAX, AUTH_ROLE_PERMISSIONS_MAX,
    AUTH_USERS_MAX, AUTH_USER_ROLES_MAX, ROOT,
};
use super::command::KeyRange;
use super::error::{KvDecodeError, KvSnapshotError};
use super::wire::{Reader, Sink};

/// Fewest bytes of one name (its length).
const NAME_BYTES_MIN: usize = 4;
/// Fewest bytes of one permission (kind, empty start and end).
const PERMISSION_BYTES_MIN: usize = 1 + 4 + 4;
/// Fewest bytes of one user record (name, hash, flag, role count).
const USER_BYTES_MIN: usize = 4 + 4 + 1 + 4;
/// Fewest bytes of one role record (name, permission count).
const ROLE_BYTES_MIN: usize = 4 + 4;

/// Writes an auth command's tag and body.
pub(crate) fn write_auth_command(out: &mut impl Sink, command: &AuthCommand) {
    match command {
        AuthCommand::Enable { token_key } => {
            out.put_u8(1);
            out.put_bytes(token_key);
        }
        AuthCommand::Disable => out.put_u8(2),
        AuthCommand::UserAdd { name, password_hash, no_password } => {
            out.put_u8(3);
            out.put_bytes(name.as_bytes());
            out.put_bytes(password_hash);
            out.put_u8(u8::from(*no_password));
        }
        AuthCommand::UserDelete { name } => write_names(out, 4, &[name]),
        AuthCommand::UserChangePassword { name, password_hash } => {
            write_names(out, 5, &[name]);
            out.put_bytes(password_hash);
        }
        AuthCommand::UserGrantRole { user, role } => write_names(out, 6, &[user, role]),
        AuthCommand::UserRevokeRole { user, role } => write_names(out, 7, &[user, role]),
        AuthCommand::RoleAdd { name } => write_names(out, 8, &[name]),
        AuthCommand::RoleDelete { name } => write_names(out, 9, &[name]),
        AuthCommand::RoleGrantPermission { role, permission } => {
            write_names(out, 10, &[role]);
            write_permission(out, permission);
        }
        AuthCommand::RoleRevokePermission { role, range } => {
            write_names(out, 11, &[role]);
            out.put_bytes(&range.start);
            out.put_bytes(&range.end);
        }
    }
}

fn write_names(out: &mut impl Sink, tag: u8, names: &[&String]) {
    out.put_u8(tag);
    for name in names {
        out.put_bytes(name.as_bytes());
    }
}

fn write_permission(out: &mut impl Sink, permission: &Permission) {
    out.put_u8(permission.kind.code());
    out.put_bytes(&permission.range.start);
    out.put_bytes(&permission.range.end);
}

/// Reads an auth command's tag and body.
pub(crate) fn read_auth_command(reader: &mut Reader<'_>) -> Result<AuthCommand, KvDecodeError> {
    let offset = reader.offset();
    Ok(match reader.u8("auth command tag")? {
        1 => AuthCommand::Enable { token_key: reader.bytes("token_key")? },
        2 => AuthCommand::Disable,
        3 => AuthCommand::UserAdd {
            name: reader.string("user name")?,
            password_hash: reader.bytes("password_hash")?,
            no_password: reader.flag("no_password")?,
        },
        4 => AuthCommand::UserDelete { name: reader.string("user name")? },
        5 => AuthCommand::UserChangePassword {
            name: reader.string("user name")?,
            password_hash: reader.bytes("password_hash")?,
        },
        6 => AuthCommand::UserGrantRole { user: reader.string("user name")?, role: reader.string("role name")? },
        7 => AuthCommand::UserRevokeRole { user: reader.string("user name")?, role: reader.string("role name")? },
        8 => AuthCommand::RoleAdd { name: reader.string("role name")? },
        9 => AuthCommand::RoleDelete { name: reader.string("role name")? },
        10 => {
            AuthCommand::RoleGrantPermission { role: reader.string("role name")?, permission: read_permission(reader)? }
        }
        11 => AuthCommand::RoleRevokePermission {
            role: reader.string("role name")?,
            range: KeyRange::new(reader.bytes("permission start")?, reader.bytes("permission end")?),
        },
        tag => return Err(KvDecodeError::UnknownTag { field: "auth command", offset, tag }),
    })
}

fn read_permission(reader: &mut Reader<'_>) -> Result<Permission, KvDecodeError> {
    let offset = reader.offset();
    let tag = reader.u8("permission kind")?;
    let kind =
        PermissionKind::of_code(tag).ok_or(KvDecodeError::UnknownTag { field: "permission kind", offset, tag })?;
    let start: Bytes = reader.bytes("permission start")?;
    let end: Bytes = reader.bytes("permission end")?;
    Ok(Permission { kind, range: KeyRange { start, end } })
}

/// Writes the auth table.
pub(crate) fn write_auth_state(out: &mut impl Sink, state: &AuthState) {
    out.put_u8(u8::from(state.enabled));
    out.put_u64(state.revision);
    out.put_bytes(&state.token_key);
    out.put_count(state.users.len());
    for (name, user) in &state.users {
        out.put_bytes(name.as_bytes());
        out.put_bytes(&user.password_hash);
        out.put_u8(u8::from(user.no_password));
        out.put_count(user.roles.len());
        for role in &user.roles {
            out.put_bytes(role.as_bytes());
        }
    }
    out.put_count(state.roles.len());
    for (name, role) in &state.roles {
        out.put_bytes(name.as_bytes());
        out.put_count(role.permissions.len());
        for permission in &role.permissions {
            write_permission(out, permission);
        }
    }
}

/// Reads the auth table, refusing any order or invariant that applying commands cannot produce.
pub(crate) fn read_auth_state(reader: &mut Reader<'_>) -> Result<AuthState, KvSnapshotError> {
    let mut state = AuthState {
        enabled: reader.flag("auth enabled")?,
        revision: reader.u64("auth revision")?,
        token_key: reader.bytes("token_key")?,
        ..AuthState::default()
    };
    read_users(reader, &mut state)?;
    read_roles(reader, &mut state)?;
    check_auth_state(&state).map_err(KvSnapshotError::Inconsistent)?;
    Ok(state)
}

/// A name that is not empty and follows `previous` in strictly increasing order.
fn read_name(
    reader: &mut Reader<'_>,
    field: &'static str,
    previous: Option<&String>,
) -> Result<String, KvSnapshotError> {
    let name = reader.string(field)?;
    if name.is_empty() || previous.is_some_and(|previous| *previous >= name) {
        return Err(KvSnapshotError::Inconsistent(format!("{field} {name:?} is empty, out of order or repeated")));
    }
    Ok(name)
}

/// A count of at most `max` items of at least `item_bytes_min` bytes each.
fn read_bounded_count(
    reader: &mut Reader<'_>,
    field: &'static str,
    item_bytes_min: usize,
    max: usize,
) -> Result<usize, KvSnapshotError> {
    let count = reader.count(field, item_bytes_min)?;
    if count > max {
        return Err(KvSnapshotError::Inconsistent(format!("{field} {count} is above the bound {max}")));
    }
    Ok(count)
}

fn read_users(reader: &mut Reader<'_>, state: &mut AuthState) -> Result<(), KvSnapshotError> {
    for _ in 0..read_bounded_count(reader, "user count", USER_BYTES_MIN, AUTH_USERS_MAX)? {
        let name = read_name(reader, "user name", state.users.last_key_value().map(|(name, _)| name))?;
        let password_hash = reader.bytes("password_hash")?;
        let no_password = reader.flag("no_password")?;
        let mut roles = BTreeSet::new();
        for _ in 0..read_bounded_count(reader, "user role count", NAME_BYTES_MIN, AUTH_USER_ROLES_MAX)? {
            roles.insert(read_name(reader, "user role name", roles.last())?);
        }
        state.users.insert(name, AuthUser { password_hash, no_password, roles });
    }
    Ok(())
}

fn read_roles(reader: &mut Reader<'_>, state: &mut AuthState) -> Result<(), KvSnapshotError> {
    for _ in 0..read_bounded_count(reader, "role count", ROLE_BYTES_MIN, AUTH_ROLES_MAX)? {
        let name = read_name(reader, "role name", state.roles.last_key_value().map(|(name, _)| name))?;
        let count = read_bounded_count(reader, "permission count", PERMISSION_BYTES_MIN, AUTH_ROLE_PERMISSIONS_MAX)?;
        let mut permissions: Vec<Permission> = Vec::with_capacity(count);
        for _ in 0..count {
            let permission = read_permission(reader)?;
            if permissions.last().is_some_and(|last| last.range >= permission.range) {
                return Err(KvSnapshotError::Inconsistent(format!(
                    "role {name:?}: permission on {:?} is out of order or repeated",
                    permission.range
                )));
            }
            permissions.push(permission);
        }
        state.roles.insert(name, AuthRole { permissions });
    }
    Ok(())
}

fn check_auth_state(state: &AuthState) -> Result<(), String> {
    if state.revision == u64::MAX {
        return Err("the auth revision is u64::MAX: no revision is left for the next change".into());
    }
    if state.enabled && !state.is_admin(ROOT) {
        return Err("auth is enabled but user root does not hold role root".into());
    }
    for (name, user) in &state.users {
        if let Some(role) = user.roles.iter().find(|role| *role != ROOT && !state.roles.contains_key(*role)) {
            return Err(format!("user {name:?} holds role {role:?}, which does not exist"));
        }
    }
    Ok(())
}
