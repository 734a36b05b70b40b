//! Size limits of key-value requests, checked by [`validate`] before a command is proposed. They
//! are never checked when applying: a committed command is applied the same way on every
//! replica whatever limits each is configured with.

use super::auth::{AuthCommand, AUTH_HASH_BYTES_MAX, AUTH_NAME_BYTES_MAX, AUTH_TOKEN_KEY_BYTES_MAX};
use super::command::{Compare, CompareTarget, KvCommand, TxnOp, TXN_NESTING_MAX};
use super::error::KvError;

/// Limits on the commands accepted for proposal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvLimits {
    /// Longest key, in bytes (also range starts and ends).
    pub key_bytes_max: usize,
    /// Longest value, in bytes (also compared values).
    pub value_bytes_max: usize,
    /// Most compares, and most operations in each branch, of one transaction (etcd's
    /// `--max-txn-ops`).
    pub txn_ops_max: usize,
    /// Largest encoded command, in bytes (etcd's `--max-request-bytes`). Keep it below the Raft
    /// core's `bytes_per_message_max` so that one entry always fits in a message.
    pub command_bytes_max: usize,
}

impl KvLimits {
    /// 4 KiB keys, 1 MiB values, 128 operations per transaction list, 1.5 MiB commands.
    pub const DEFAULT: KvLimits = KvLimits {
        key_bytes_max: 4 * 1024,
        value_bytes_max: 1024 * 1024,
        txn_ops_max: 128,
        command_bytes_max: 1536 * 1024,
    };

    /// Checks `command` against the limits and the rules of well-formed requests: keys of
    /// single-key operations are not empty, a time to live is not zero, auth names, hashes and
    /// token keys within their bounds (`auth.rs`), the name of a user or role to add not empty,
    /// permission ranges checked like other ranges, and no [`KvCommand::Authorized`] inside
    /// another one (the inner command of one is checked like any command).
    pub fn validate(&self, command: &KvCommand) -> Result<(), KvError> {
        match command {
            KvCommand::Put { key, value, ttl_ms } => self.check_put(key, value, *ttl_ms)?,
            KvCommand::Delete { key } => self.check_key(key)?,
            KvCommand::DeleteRange { start, end } => self.check_range(start, end)?,
            KvCommand::CompareAndSwap { key, expected_value, new_value, ttl_ms } => {
                self.check_put(key, new_value, *ttl_ms)?;
                if let Some(expected) = expected_value {
                    self.check_value(expected)?;
                }
            }
            KvCommand::Txn { compares, success, failure } => self.check_txn(compares, success, failure, 1)?,
            KvCommand::LeaseGrant { ttl_ms: 0, .. } => return Err(KvError::ZeroTtl),
            KvCommand::Compact { .. }
            | KvCommand::Expire { .. }
            | KvCommand::LeaseGrant { .. }
            | KvCommand::LeaseRevoke { .. }
            | KvCommand::LeaseKeepAlive { .. }
            | KvCommand::LeaseRefreshAll
            | KvCommand::Alarm { .. } => {}
            KvCommand::Auth(auth) => self.check_auth(auth)?,
            KvCommand::Authorized { command, .. } => {
                if let KvCommand::Authorized { .. } = **command {
                    return Err(KvError::NestedAuthorized);
                }
                self.validate(command)?;
            }
        }
        let size = command.encoded_len();
        if size > self.command_bytes_max {
            return Err(KvError::CommandTooLarge { size, max: self.command_bytes_max });
        }
        Ok(())
    }

    fn check_key_size(&self, key: &[u8]) -> Result<(), KvError> {
        if key.len() > self.key_bytes_max {
            return Err(KvError::KeyTooLarge { size: key.len(), max: self.key_bytes_max });
        }
        Ok(())
    }

    fn check_key(&self, key: &[u8]) -> Result<(), KvError> {
        if key.is_empty() {
            return Err(KvError::EmptyKey);
        }
        self.check_key_size(key)
    }

    fn check_value(&self, value: &[u8]) -> Result<(), KvError> {
        if value.len() > self.value_bytes_max {
            return Err(KvError::ValueTooLarge { size: value.len(), max: self.value_bytes_max });
        }
        Ok(())
    }

    fn check_put(&self, key: &[u8], value: &[u8], ttl_ms: Option<u64>) -> Result<(), KvError> {
        self.check_key(key)?;
        self.check_value(value)?;
        if ttl_ms == Some(0) {
            return Err(KvError::ZeroTtl);
        }
        Ok(())
    }

    /// A range start may be empty (from the first key) unless the range is a single key.
    fn check_range(&self, start: &[u8], end: &[u8]) -> Result<(), KvError> {
        if end.is_empty() {
            return self.check_key(start);
        }
        self.check_key_size(start)?;
        self.check_key_size(end)
    }

    /// An auth command: names, hashes, the token key and permission ranges. Empty names are
    /// refused only for the user or role being added: any other command naming no existing
    /// user or role is refused when applied (`AuthUserNotFound`, `AuthRoleNotFound`), as in etcd.
    fn check_auth(&self, command: &AuthCommand) -> Result<(), KvError> {
        match command {
            AuthCommand::Enable { token_key } => check_hash(token_key, AUTH_TOKEN_KEY_BYTES_MAX),
            AuthCommand::Disable => Ok(()),
            AuthCommand::UserAdd { name, password_hash, .. } => {
                check_new_name(name, "user")?;
                check_hash(password_hash, AUTH_HASH_BYTES_MAX)
            }
            AuthCommand::UserChangePassword { name, password_hash } => {
                check_name(name)?;
                check_hash(password_hash, AUTH_HASH_BYTES_MAX)
            }
            AuthCommand::RoleAdd { name } => check_new_name(name, "role"),
            AuthCommand::UserDelete { name } | AuthCommand::RoleDelete { name } => check_name(name),
            AuthCommand::UserGrantRole { user, role } | AuthCommand::UserRevokeRole { user, role } => {
                check_name(user)?;
                check_name(role)
            }
            AuthCommand::RoleGrantPermission { role, permission } => {
                check_name(role)?;
                self.check_range(&permission.range.start, &permission.range.end)
            }
            AuthCommand::RoleRevokePermission { role, range } => {
                check_name(role)?;
                self.check_range(&range.start, &range.end)
            }
        }
    }

    /// A transaction at nesting `depth` (1 for the outermost): list lengths, compares, and every
    /// operation of both branches, nested transactions included.
    fn check_txn(
        &self,
        compares: &[Compare],
        success: &[TxnOp],
        failure: &[TxnOp],
        depth: usize,
    ) -> Result<(), KvError> {
        if depth > TXN_NESTING_MAX {
            return Err(KvError::TxnTooDeep { max: TXN_NESTING_MAX });
        }
        for (list, count) in [("compares", compares.len()), ("success", success.len()), ("failure", failure.len())] {
            if count > self.txn_ops_max {
                return Err(KvError::TooManyTxnOps { list, count, max: self.txn_ops_max });
            }
        }
        for compare in compares {
            if compare.range_end.is_empty() {
                self.check_key(&compare.key)?;
            } else {
                self.check_range(&compare.key, &compare.range_end)?;
            }
            if let CompareTarget::Value(value) = &compare.target {
                self.check_value(value)?;
            }
        }
        for op in success.iter().chain(failure) {
            match op {
                TxnOp::Put { key, value, ttl_ms } => self.check_put(key, value, *ttl_ms)?,
                TxnOp::PutInLease { key, value, .. } | TxnOp::PutKeepLease { key, value } => {
                    self.check_put(key, value, None)?
                }
                TxnOp::Delete { key }
                | TxnOp::PutSameValue { key }
                | TxnOp::PutSameValueInLease { key, .. }
                | TxnOp::PutSameValueKeepLease { key } => self.check_key(key)?,
                TxnOp::DeleteRange { start, end }
                | TxnOp::Range { start, end, .. }
                | TxnOp::RangeAt { start, end, .. } => self.check_range(start, end)?,
                TxnOp::Txn { compares, success, failure } => self.check_txn(compares, success, failure, depth + 1)?,
            }
        }
        Ok(())
    }
}

/// A user or role name within [`AUTH_NAME_BYTES_MAX`].
fn check_name(name: &str) -> Result<(), KvError> {
    if name.len() > AUTH_NAME_BYTES_MAX {
        return Err(KvError::AuthNameTooLarge { size: name.len(), max: AUTH_NAME_BYTES_MAX });
    }
    Ok(())
}

/// The name of a user or role to add (`what`): not empty, within [`AUTH_NAME_BYTES_MAX`].
fn check_new_name(name: &str, what: &'static str) -> Result<(), KvError> {
    if name.is_empty() {
        return Err(KvError::AuthEmptyName { what });
    }
    check_name(name)
}

/// A password hash or token key within `max` bytes.
fn check_hash(hash: &[u8], max: usize) -> Result<(), KvError> {
    if hash.len() > max {
        return Err(KvError::AuthHashTooLarge { size: hash.len(), max });
    }
    Ok(())
}

impl Default for KvLimits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Checks `command` against [`KvLimits::DEFAULT`]; see [`KvLimits::validate`].
pub fn validate(command: &KvCommand) -> Result<(), KvError> {
    KvLimits::DEFAULT.validate(command)
}
