//! Alarms: replicated flags that a member raises and an operator clears (etcd's `Alarm` call).
//!
//! An alarm is a `(member, kind)` pair set by [`KvCommand::Alarm`] through the log, so every
//! replica holds the same set, and it is part of the snapshot, so it survives restarts and
//! reaches new members. While any member has [`Alarm::NoSpace`] raised, the store refuses every
//! command that can grow it with [`KvError::NoSpace`], when the command is **applied** (so the
//! decision is the same on every replica, whatever was checked before proposing): a put, a
//! compare-and-swap, a transaction with a put in any branch (nested ones included) and a lease
//! grant. Reads, deletes, compaction, expiry, lease revokes and keep-alives still work, which is
//! how an operator frees space before clearing the alarm. [`Alarm::Corrupt`] is recorded and
//! listed only: etcd stops serving on it, Keel leaves that decision to the operator.

use super::command::{KvCommand, TxnOp};
use super::error::KvError;
use super::store::KvStore;

/// The kind of an alarm (etcd's `AlarmType`, without `NONE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Alarm {
    /// The store is out of space: commands that grow it are refused.
    NoSpace,
    /// A member found its data corrupt.
    Corrupt,
}

impl Alarm {
    /// The alarm's byte in the command and snapshot encodings.
    pub(crate) fn code(self) -> u8 {
        match self {
            Alarm::NoSpace => 1,
            Alarm::Corrupt => 2,
        }
    }

    /// The alarm of an encoding byte.
    pub(crate) fn of_code(code: u8) -> Option<Alarm> {
        match code {
            1 => Some(Alarm::NoSpace),
            2 => Some(Alarm::Corrupt),
            _ => None,
        }
    }
}

/// True when any operation of `ops`, nested transactions included, writes a key.
fn txn_puts(ops: &[TxnOp]) -> bool {
    ops.iter().any(|op| match op {
        TxnOp::Put { .. }
        | TxnOp::PutSameValue { .. }
        | TxnOp::PutInLease { .. }
        | TxnOp::PutKeepLease { .. }
        | TxnOp::PutSameValueInLease { .. }
        | TxnOp::PutSameValueKeepLease { .. } => true,
        TxnOp::Txn { success, failure, .. } => txn_puts(success) || txn_puts(failure),
        TxnOp::Delete { .. } | TxnOp::DeleteRange { .. } | TxnOp::RangeAt { .. } | TxnOp::Range { .. } => false,
    })
}

impl KvCommand {
    /// True for the commands a raised [`Alarm::NoSpace`] refuses: those that can grow the store
    /// (for a [`KvCommand::Authorized`], its inner command's answer; never an auth command).
    pub fn grows_store(&self) -> bool {
        match self {
            KvCommand::Put { .. } | KvCommand::CompareAndSwap { .. } | KvCommand::LeaseGrant { .. } => true,
            KvCommand::Txn { success, failure, .. } => txn_puts(success) || txn_puts(failure),
            KvCommand::Authorized { command, .. } => command.grows_store(),
            // Auth commands are never refused for space: they are how an operator keeps control.
            KvCommand::Auth(_) => false,
            _ => false,
        }
    }
}

impl KvStore {
    /// Every raised alarm as `(member, kind)`, in order.
    pub fn alarms(&self) -> impl Iterator<Item = (u64, Alarm)> + '_ {
        self.alarms.iter().copied()
    }

    /// True while some member has [`Alarm::NoSpace`] raised.
    pub fn out_of_space(&self) -> bool {
        self.alarms.iter().any(|(_, alarm)| *alarm == Alarm::NoSpace)
    }

    /// [`KvError::NoSpace`] if `command` must be refused because the store is out of space.
    pub(crate) fn check_space(&self, command: &KvCommand) -> Result<(), KvError> {
        if self.out_of_space() && command.grows_store() {
            return Err(KvError::NoSpace);
        }
        Ok(())
    }

    /// Raises (`active`) or clears alarm `alarm` of `member`.
    pub(crate) fn set_alarm(&mut self, member: u64, alarm: Alarm, active: bool) {
        if active {
            self.alarms.insert((member, alarm));
        } else {
            self.alarms.remove(&(member, alarm));
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn put(key: &str) -> KvCommand {
        KvCommand::Put { key: Bytes::from(key.to_string()), value: Bytes::from_static(b"v"), ttl_ms: None }
    }

    #[test]
    fn no_space_refuses_growth_but_not_deletes_and_clears_again() {
        let mut store = KvStore::counting_from_zero();
        store.apply(1, 0, &put("/a"));
        let raise = KvCommand::Alarm { member: 2, alarm: Alarm::NoSpace, active: true };
        let raised = store.apply(2, 0, &raise);
        assert!(raised.succeeded && raised.events.is_empty());
        assert_eq!(store.alarms().collect::<Vec<_>>(), vec![(2, Alarm::NoSpace)]);
        let refused = store.apply(3, 0, &put("/b"));
        assert_eq!((refused.error, refused.revision), (Some(KvError::NoSpace), 1));
        let grant = store.apply(4, 0, &KvCommand::LeaseGrant { id: 0, ttl_ms: 1_000 });
        assert_eq!(grant.error, Some(KvError::NoSpace));
        let delete = store.apply(5, 0, &KvCommand::Delete { key: Bytes::from_static(b"/a") });
        assert_eq!((delete.error, delete.revision), (None, 2), "deletes still work");
        let restored = KvStore::restore(&store.snapshot()).expect("a valid snapshot");
        assert!(restored.out_of_space(), "the alarm is part of the snapshot");
        store.apply(6, 0, &KvCommand::Alarm { member: 2, alarm: Alarm::NoSpace, active: false });
        assert_eq!(store.alarms().count(), 0);
        assert_eq!(store.apply(7, 0, &put("/b")).revision, 3);
    }

    #[test]
    fn transactions_grow_the_store_only_with_a_put_somewhere() {
        let delete = TxnOp::Delete { key: Bytes::from_static(b"/a") };
        let nested_put = TxnOp::Txn {
            compares: vec![],
            success: vec![],
            failure: vec![TxnOp::PutSameValue { key: Bytes::from_static(b"/a") }],
        };
        let txn = |ops: Vec<TxnOp>| KvCommand::Txn { compares: vec![], success: vec![], failure: ops };
        assert!(!txn(vec![delete.clone()]).grows_store());
        assert!(txn(vec![delete, nested_put]).grows_store());
        assert!(!KvCommand::LeaseKeepAlive { id: 1 }.grows_store());
    }

    #[test]
    fn alarm_commands_round_trip_and_bad_bytes_are_refused() {
        for (alarm, active) in [(Alarm::NoSpace, true), (Alarm::Corrupt, false)] {
            let command = KvCommand::Alarm { member: 3, alarm, active };
            let bytes = command.encode();
            assert_eq!(bytes.len(), command.encoded_len());
            assert_eq!(KvCommand::decode(&bytes), Ok(command));
        }
        let mut bad_kind = KvCommand::Alarm { member: 3, alarm: Alarm::NoSpace, active: true }.encode().to_vec();
        bad_kind[10] = 9;
        assert!(KvCommand::decode(&bad_kind).is_err());
        let mut bad_flag = KvCommand::Alarm { member: 3, alarm: Alarm::NoSpace, active: true }.encode().to_vec();
        bad_flag[11] = 2;
        assert!(KvCommand::decode(&bad_flag).is_err());
    }
}
