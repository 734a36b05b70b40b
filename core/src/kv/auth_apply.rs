//! Applying [`AuthCommand`]s to the [`AuthState`], and the revision check of
//! [`KvCommand::Authorized`]. Every rule is checked before anything changes, so a refused command
//! leaves the table as it was; a command that succeeds advances the table's revision by exactly 1.
//! The rules and their order follow etcd's auth store (`server/auth/store.go`), except that
//! enabling an enabled table counts as a change (it replaces the token key).

use bytes::Bytes;

use super::auth::{
    AuthCommand, AuthRole, AuthState, AuthUser, Permission, AUTH_ROLES_MAX, AUTH_ROLE_PERMISSIONS_MAX, AUTH_USERS_MAX,
    AUTH_USER_ROLES_MAX, ROOT,
};
use super::command::{KeyRange, KvCommand};
use super::error::KvError;
use super::store::KvStore;

impl KvStore {
    /// The replicated auth table (see `auth.rs`).
    pub fn auth(&self) -> &AuthState {
        &self.auth
    }
}

impl AuthState {
    /// Applies a committed auth command: `Ok` and the revision advanced by 1, or the refusal
    /// with nothing changed.
    pub(crate) fn apply(&mut self, command: &AuthCommand) -> Result<(), KvError> {
        let before = self.revision;
        self.change(command)?;
        self.revision = before.checked_add(1).expect("the auth revision is below u64::MAX (restore refuses it)");
        assert!(self.revision > before, "the auth revision never decreases");
        assert!(!self.enabled || self.is_admin(ROOT), "auth is enabled only while user root holds role root");
        Ok(())
    }

    /// The command an [`KvCommand::Authorized`] (nested ones included) wraps, once every
    /// wrapper's `auth_revision` is checked: [`KvError::AuthOldRevision`] if auth is enabled and
    /// the table's revision differs. Any other command is returned as it is.
    pub(crate) fn authorize<'a>(&self, mut command: &'a KvCommand) -> Result<&'a KvCommand, KvError> {
        while let KvCommand::Authorized { auth_revision, command: inner } = command {
            if self.enabled && *auth_revision != self.revision {
                return Err(KvError::AuthOldRevision);
            }
            command = inner;
        }
        Ok(command)
    }

    fn change(&mut self, command: &AuthCommand) -> Result<(), KvError> {
        match command {
            AuthCommand::Enable { token_key } => self.enable(token_key),
            AuthCommand::Disable => {
                self.enabled = false;
                Ok(())
            }
            AuthCommand::UserAdd { name, password_hash, no_password } => {
                self.user_add(name, password_hash, *no_password)
            }
            AuthCommand::UserDelete { name } => self.user_delete(name),
            AuthCommand::UserChangePassword { name, password_hash } => {
                self.user_mut(name)?.password_hash = password_hash.clone();
                Ok(())
            }
            AuthCommand::UserGrantRole { user, role } => self.user_grant_role(user, role),
            AuthCommand::UserRevokeRole { user, role } => self.user_revoke_role(user, role),
            AuthCommand::RoleAdd { name } => self.role_add(name),
            AuthCommand::RoleDelete { name } => self.role_delete(name),
            AuthCommand::RoleGrantPermission { role, permission } => self.role_grant_permission(role, permission),
            AuthCommand::RoleRevokePermission { role, range } => self.role_revoke_permission(role, range),
        }
    }

    fn enable(&mut self, token_key: &Bytes) -> Result<(), KvError> {
        let root = self.users.get(ROOT).ok_or(KvError::AuthRootUserMissing)?;
        if !root.roles.contains(ROOT) {
            return Err(KvError::AuthRootRoleMissing);
        }
        self.token_key = token_key.clone();
        self.enabled = true;
        Ok(())
    }

    fn user_mut(&mut self, name: &str) -> Result<&mut AuthUser, KvError> {
        self.users.get_mut(name).ok_or(KvError::AuthUserNotFound)
    }

    fn role_mut(&mut self, name: &str) -> Result<&mut AuthRole, KvError> {
        self.roles.get_mut(name).ok_or(KvError::AuthRoleNotFound)
    }

    fn user_add(&mut self, name: &str, password_hash: &Bytes, no_password: bool) -> Result<(), KvError> {
        if name.is_empty() {
            return Err(KvError::AuthEmptyName { what: "user" });
        }
        if self.users.contains_key(name) {
            return Err(KvError::AuthUserExists);
        }
        if self.users.len() >= AUTH_USERS_MAX {
            return Err(KvError::AuthLimit { what: "users", max: AUTH_USERS_MAX });
        }
        let user = AuthUser { password_hash: password_hash.clone(), no_password, roles: Default::default() };
        self.users.insert(name.to_owned(), user);
        Ok(())
    }

    fn user_delete(&mut self, name: &str) -> Result<(), KvError> {
        if self.enabled && name == ROOT {
            return Err(KvError::AuthInvalidManagement);
        }
        self.users.remove(name).map(drop).ok_or(KvError::AuthUserNotFound)
    }

    fn user_grant_role(&mut self, user: &str, role: &str) -> Result<(), KvError> {
        let role_exists = role == ROOT || self.roles.contains_key(role);
        let user = self.user_mut(user)?;
        if !role_exists {
            return Err(KvError::AuthRoleNotFound);
        }
        if !user.roles.contains(role) {
            if user.roles.len() >= AUTH_USER_ROLES_MAX {
                return Err(KvError::AuthLimit { what: "roles per user", max: AUTH_USER_ROLES_MAX });
            }
            user.roles.insert(role.to_owned());
        }
        Ok(())
    }

    fn user_revoke_role(&mut self, user: &str, role: &str) -> Result<(), KvError> {
        if self.enabled && user == ROOT && role == ROOT {
            return Err(KvError::AuthInvalidManagement);
        }
        if !self.user_mut(user)?.roles.remove(role) {
            return Err(KvError::AuthRoleNotGranted);
        }
        Ok(())
    }

    fn role_add(&mut self, name: &str) -> Result<(), KvError> {
        if name.is_empty() {
            return Err(KvError::AuthEmptyName { what: "role" });
        }
        if self.roles.contains_key(name) {
            return Err(KvError::AuthRoleExists);
        }
        if self.roles.len() >= AUTH_ROLES_MAX {
            return Err(KvError::AuthLimit { what: "roles", max: AUTH_ROLES_MAX });
        }
        self.roles.insert(name.to_owned(), AuthRole::default());
        Ok(())
    }

    fn role_delete(&mut self, name: &str) -> Result<(), KvError> {
        if self.enabled && name == ROOT {
            return Err(KvError::AuthInvalidManagement);
        }
        self.roles.remove(name).ok_or(KvError::AuthRoleNotFound)?;
        for user in self.users.values_mut() {
            user.roles.remove(name);
        }
        Ok(())
    }

    fn role_grant_permission(&mut self, role: &str, permission: &Permission) -> Result<(), KvError> {
        let permissions = &mut self.role_mut(role)?.permissions;
        match permissions.binary_search_by(|held| held.range.cmp(&permission.range)) {
            Ok(position) => permissions[position].kind = permission.kind,
            Err(_) if permissions.len() >= AUTH_ROLE_PERMISSIONS_MAX => {
                return Err(KvError::AuthLimit { what: "permissions per role", max: AUTH_ROLE_PERMISSIONS_MAX })
            }
            Err(position) => permissions.insert(position, permission.clone()),
        }
        Ok(())
    }

    fn role_revoke_permission(&mut self, role: &str, range: &KeyRange) -> Result<(), KvError> {
        let permissions = &mut self.role_mut(role)?.permissions;
        let position = permissions
            .binary_search_by(|held| held.range.cmp(range))
            .map_err(|_| KvError::AuthPermissionNotGranted)?;
        permissions.remove(position);
        Ok(())
    }
}
