//! Size limits of key-value requests, checked by [`validate`] before a command is proposed. They
//! are never checked when applying: a committed command is applied the same way on every
//! replica whatever limits each is configured with.

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
    /// single-key operations are not empty, a time to live is not zero.
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

impl Default for KvLimits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Checks `command` against [`KvLimits::DEFAULT`]; see [`KvLimits::validate`].
pub fn validate(command: &KvCommand) -> Result<(), KvError> {
    KvLimits::DEFAULT.validate(command)
}
