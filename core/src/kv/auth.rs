//! The auth table: etcd v3 authentication state (users, roles, key-range permissions), replicated
//! through the key-value state machine.
//!
//! Data flow:
//!
//! 1. The runtime turns an etcd `Auth*`/`User*`/`Role*` request into a [`KvCommand::Auth`] (it
//!    hashes passwords itself: the core only stores the opaque hash), checks it with
//!    [`super::validate`] and proposes it.
//! 2. Every replica applies the committed command to its [`AuthState`] (rules in
//!    `auth_apply.rs`). A command that succeeds advances the table's own [`AuthState::revision`]
//!    by exactly 1; a refused one changes nothing. Auth commands make no store revision and no
//!    event (like alarms), and a `NoSpace` alarm never refuses them.
//! 3. Before proposing an etcd key-value request, the runtime checks it against its replica's
//!    table ([`AuthState::can_read`], [`AuthState::can_write`], [`AuthState::is_admin`]) and
//!    proposes it wrapped in [`KvCommand::Authorized`] with the revision it checked at. If the
//!    table changed in between (auth enabled with another revision when the entry is applied),
//!    the whole command is refused with [`KvError::AuthOldRevision`], on every replica alike, and
//!    the client retries with a fresh check.
//! 4. The table is part of the snapshot (`auth_codec.rs` holds its encoding), so it survives
//!    restarts and reaches new members.
//!
//! Permission checks follow etcd: a user holding the [`ROOT`] role may do anything; any other
//! user may touch a range only if the union of the permission ranges of its roles covers every
//! key of it.
//!
//! [`KvError::AuthOldRevision`]: super::KvError::AuthOldRevision

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;

use super::command::KeyRange;
#[cfg(doc)]
use super::command::KvCommand;

/// The name of etcd's root user and of its root role. A user holding the root role is an
/// administrator; auth can be enabled only while the root user exists and holds the root role.
pub const ROOT: &str = "root";

/// Most users the table holds: [`AuthCommand::UserAdd`] beyond it is refused when applied with
/// [`super::KvError::AuthLimit`].
pub const AUTH_USERS_MAX: usize = 10_000;
/// Most roles the table holds ([`AuthCommand::RoleAdd`] beyond it is refused when applied).
pub const AUTH_ROLES_MAX: usize = 10_000;
/// Most permissions one role holds ([`AuthCommand::RoleGrantPermission`] of a new range beyond
/// it is refused when applied; replacing the kind of a held range is always allowed).
pub const AUTH_ROLE_PERMISSIONS_MAX: usize = 1_000;
/// Most roles one user holds ([`AuthCommand::UserGrantRole`] of a new role beyond it is refused
/// when applied).
pub const AUTH_USER_ROLES_MAX: usize = 1_000;
/// Longest user or role name, in bytes, accepted by [`super::validate`].
pub const AUTH_NAME_BYTES_MAX: usize = 256;
/// Longest password hash, in bytes, accepted by [`super::validate`].
pub const AUTH_HASH_BYTES_MAX: usize = 1024;
/// Longest token signing key, in bytes, accepted by [`super::validate`] (refused with
/// [`super::KvError::AuthHashTooLarge`]).
pub const AUTH_TOKEN_KEY_BYTES_MAX: usize = 64;

/// What a permission allows (etcd `authpb.Permission.Type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PermissionKind {
    /// Reads (range, watch).
    Read,
    /// Writes (put, delete, transactions' writes).
    Write,
    /// Both.
    ReadWrite,
}

impl PermissionKind {
    /// The kind of etcd's wire code (`READ = 0`, `WRITE = 1`, `READWRITE = 2`); `None` for any
    /// other code.
    pub fn from_etcd(code: i32) -> Option<Self> {
        match code {
            0 => Some(Self::Read),
            1 => Some(Self::Write),
            2 => Some(Self::ReadWrite),
            _ => None,
        }
    }

    /// etcd's wire code of the kind.
    pub fn etcd_code(self) -> i32 {
        match self {
            Self::Read => 0,
            Self::Write => 1,
            Self::ReadWrite => 2,
        }
    }

    /// Whether the kind allows reads.
    pub fn allows_read(self) -> bool {
        matches!(self, Self::Read | Self::ReadWrite)
    }

    /// Whether the kind allows writes.
    pub fn allows_write(self) -> bool {
        matches!(self, Self::Write | Self::ReadWrite)
    }

    /// The kind's byte in the command and snapshot encodings (tags start at 1).
    pub(crate) fn code(self) -> u8 {
        match self {
            Self::Read => 1,
            Self::Write => 2,
            Self::ReadWrite => 3,
        }
    }

    /// The kind of an encoding byte.
    pub(crate) fn of_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(Self::Read),
            2 => Some(Self::Write),
            3 => Some(Self::ReadWrite),
            _ => None,
        }
    }
}

/// A permission of a role: what it allows on which keys (etcd `authpb.Permission`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Permission {
    /// What it allows.
    pub kind: PermissionKind,
    /// The keys, in etcd's range convention ([`KeyRange`]: `end` empty for one key, `end == [0]`
    /// for every key from `start`).
    pub range: KeyRange,
}

/// A user of the auth table (etcd `authpb.User`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuthUser {
    /// The password hash, opaque to the core (the runtime hashes and checks passwords); empty
    /// when the user was added with `no_password`.
    pub password_hash: Bytes,
    /// The user cannot authenticate with a password (etcd's `UserAddOptions.no_password`).
    pub no_password: bool,
    /// The roles the user holds, by name.
    pub roles: BTreeSet<String>,
}

/// A role of the auth table (etcd `authpb.Role`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuthRole {
    /// The role's permissions, sorted by `(range.start, range.end)`, at most one per range.
    pub permissions: Vec<Permission>,
}

/// The replicated auth table: whether auth is enabled, its revision, the token signing key, the
/// users and the roles. It changes only by applying [`AuthCommand`]s (see the module
/// documentation).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuthState {
    /// Whether auth is enabled.
    pub(crate) enabled: bool,
    /// Number of auth commands applied successfully.
    pub(crate) revision: u64,
    /// The key the runtime signs tokens with, set by [`AuthCommand::Enable`].
    pub(crate) token_key: Bytes,
    /// Users by name.
    pub(crate) users: BTreeMap<String, AuthUser>,
    /// Roles by name.
    pub(crate) roles: BTreeMap<String, AuthRole>,
}

/// A change to the auth table, the payload of [`KvCommand::Auth`]. The refusals listed are
/// [`super::KvError`] variants returned when the command is applied; a refused command changes
/// nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthCommand {
    /// Enable auth and set the token signing key. Refused with `AuthRootUserMissing` without a
    /// user [`ROOT`], `AuthRootRoleMissing` if that user lacks the role [`ROOT`]. Enabling while
    /// enabled succeeds and replaces the key.
    Enable {
        /// The key the runtime signs tokens with.
        token_key: Bytes,
    },
    /// Disable auth (succeeds if already disabled).
    Disable,
    /// Add a user. Refused with `AuthEmptyName` for an empty name, `AuthUserExists`, or
    /// `AuthLimit` beyond [`AUTH_USERS_MAX`].
    UserAdd {
        /// The user's name.
        name: String,
        /// The password hash (empty with `no_password`).
        password_hash: Bytes,
        /// The user cannot authenticate with a password.
        no_password: bool,
    },
    /// Delete a user. Refused with `AuthInvalidManagement` for [`ROOT`] while auth is enabled,
    /// `AuthUserNotFound`.
    UserDelete {
        /// The user's name.
        name: String,
    },
    /// Replace a user's password hash (its `no_password` flag is kept). Refused with
    /// `AuthUserNotFound`.
    UserChangePassword {
        /// The user's name.
        name: String,
        /// The new hash.
        password_hash: Bytes,
    },
    /// Grant a role to a user (granting a held role succeeds unchanged). Refused with
    /// `AuthUserNotFound`, `AuthRoleNotFound` (except for [`ROOT`], which may be granted before
    /// the role exists, as in etcd), `AuthLimit` beyond [`AUTH_USER_ROLES_MAX`].
    UserGrantRole {
        /// The user's name.
        user: String,
        /// The role's name.
        role: String,
    },
    /// Revoke a role from a user. Refused with `AuthInvalidManagement` for role [`ROOT`] of user
    /// [`ROOT`] while auth is enabled, `AuthUserNotFound`, `AuthRoleNotGranted`.
    UserRevokeRole {
        /// The user's name.
        user: String,
        /// The role's name.
        role: String,
    },
    /// Add a role. Refused with `AuthEmptyName` for an empty name, `AuthRoleExists`, or
    /// `AuthLimit` beyond [`AUTH_ROLES_MAX`].
    RoleAdd {
        /// The role's name.
        name: String,
    },
    /// Delete a role, and revoke it from every user. Refused with `AuthInvalidManagement` for
    /// [`ROOT`] while auth is enabled, `AuthRoleNotFound`.
    RoleDelete {
        /// The role's name.
        name: String,
    },
    /// Grant a permission to a role; a permission on a range the role already has replaces its
    /// kind. Refused with `AuthRoleNotFound`, or `AuthLimit` beyond
    /// [`AUTH_ROLE_PERMISSIONS_MAX`].
    RoleGrantPermission {
        /// The role's name.
        role: String,
        /// The permission.
        permission: Permission,
    },
    /// Revoke the permission on exactly `range` from a role. Refused with `AuthRoleNotFound`,
    /// `AuthPermissionNotGranted`.
    RoleRevokePermission {
        /// The role's name.
        role: String,
        /// The range of the permission (exactly as granted).
        range: KeyRange,
    },
}

impl AuthState {
    /// Whether auth is enabled.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The table's revision: the number of auth commands applied successfully (0 for a table
    /// that never changed). [`KvCommand::Authorized`] carries it.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// The token signing key set by the last [`AuthCommand::Enable`] (empty before any).
    pub fn token_key(&self) -> &Bytes {
        &self.token_key
    }

    /// The user named `name`.
    pub fn user(&self, name: &str) -> Option<&AuthUser> {
        self.users.get(name)
    }

    /// Every user, in name order.
    pub fn users(&self) -> impl Iterator<Item = (&str, &AuthUser)> + '_ {
        self.users.iter().map(|(name, user)| (name.as_str(), user))
    }

    /// The role named `name`.
    pub fn role(&self, name: &str) -> Option<&AuthRole> {
        self.roles.get(name)
    }

    /// Every role, in name order.
    pub fn roles(&self) -> impl Iterator<Item = (&str, &AuthRole)> + '_ {
        self.roles.iter().map(|(name, role)| (name.as_str(), role))
    }

    /// Whether `user` exists and holds the role [`ROOT`] (whether or not that role exists).
    pub fn is_admin(&self, user: &str) -> bool {
        self.has_role(user, ROOT)
    }

    /// Whether `user` exists and holds `role`.
    pub fn has_role(&self, user: &str, role: &str) -> bool {
        self.users.get(user).is_some_and(|user| user.roles.contains(role))
    }

    /// Whether `user` may read every key of `range`: an administrator may; otherwise the read
    /// permissions of the user's existing roles must together cover the whole range (an empty
    /// range is covered). `false` for an unknown user. Does not look at [`AuthState::enabled`].
    pub fn can_read(&self, user: &str, range: &KeyRange) -> bool {
        self.permitted(user, range, PermissionKind::allows_read)
    }

    /// Whether `user` may write every key of `range`, as [`AuthState::can_read`] with the write
    /// permissions.
    pub fn can_write(&self, user: &str, range: &KeyRange) -> bool {
        self.permitted(user, range, PermissionKind::allows_write)
    }

    fn permitted(&self, user: &str, range: &KeyRange, allows: fn(PermissionKind) -> bool) -> bool {
        let Some(user) = self.users.get(user) else {
            return false;
        };
        if user.roles.contains(ROOT) {
            return true;
        }
        let ranges = user
            .roles
            .iter()
            .filter_map(|name| self.roles.get(name))
            .flat_map(|role| role.permissions.iter())
            .filter(|permission| allows(permission.kind))
            .map(|permission| &permission.range);
        covers(ranges, range)
    }
}

/// The exclusive upper end of a key interval: a key, or above every key. Keys order before
/// `Unbounded` (the derived order compares the variant first).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Upper<'a> {
    Key(Cow<'a, [u8]>),
    Unbounded,
}

/// The keys of `range` as a half-open interval `[start, upper)`, `None` when it holds no key.
/// One key `k` is `[k, k + "\0")`: `k` followed by a zero byte is the next key after `k`.
fn interval(range: &KeyRange) -> Option<(&[u8], Upper<'_>)> {
    let start = &range.start[..];
    match &range.end[..] {
        [] => {
            let mut next = Vec::with_capacity(start.len() + 1);
            next.extend_from_slice(start);
            next.push(0);
            Some((start, Upper::Key(Cow::Owned(next))))
        }
        [0] => Some((start, Upper::Unbounded)),
        end if start < end => Some((start, Upper::Key(Cow::Borrowed(end)))),
        _ => None,
    }
}

/// Whether the union of `granted` covers every key of `requested`: the granted intervals,
/// sorted by start, are walked while each starts at or before the point covered so far.
fn covers<'a>(granted: impl Iterator<Item = &'a KeyRange>, requested: &'a KeyRange) -> bool {
    let Some((start, end)) = interval(requested) else {
        return true;
    };
    let mut intervals: Vec<(&[u8], Upper<'_>)> = granted.filter_map(interval).collect();
    intervals.sort_by(|a, b| a.0.cmp(b.0));
    let mut reached = Upper::Key(Cow::Borrowed(start));
    for (low, high) in intervals {
        if reached >= end || Upper::Key(Cow::Borrowed(low)) > reached {
            break; // covered, or a gap at `reached`: every later interval starts after it too
        }
        reached = reached.max(high);
    }
    reached >= end
}
