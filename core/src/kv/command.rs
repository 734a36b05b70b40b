//! The commands of the key-value state machine and their parts: key ranges in etcd's
//! convention, transaction compares and transaction operations. Their meaning is defined here;
//! their byte encoding lives in `command_codec.rs`, their effect in `apply.rs`.

use std::collections::btree_map;
use std::collections::BTreeMap;
use std::ops::Bound;

use bytes::Bytes;

use super::store::KeyValue;

/// A set of keys in etcd's range convention:
/// - `end` empty: the single key `start`;
/// - `end == [0]` (one zero byte): every key `>= start` (so `start` empty and `end == [0]` is
///   every key);
/// - otherwise the half-open interval `[start, end)`, empty when `start >= end`.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyRange {
    /// First key of the range (inclusive).
    pub start: Bytes,
    /// End of the range (exclusive), with the special values described on the type.
    pub end: Bytes,
}

impl KeyRange {
    /// A range from its raw etcd-style `start` and `end`.
    pub fn new(start: impl Into<Bytes>, end: impl Into<Bytes>) -> Self {
        Self { start: start.into(), end: end.into() }
    }

    /// Exactly one key.
    pub fn key(key: impl Into<Bytes>) -> Self {
        Self { start: key.into(), end: Bytes::new() }
    }

    /// Every key that starts with `prefix` (every key when `prefix` is empty).
    pub fn prefix(prefix: impl Into<Bytes>) -> Self {
        let start = prefix.into();
        let end = prefix_range_end(&start);
        Self { start, end }
    }

    /// Every key greater than or equal to `start`.
    pub fn from_key(start: impl Into<Bytes>) -> Self {
        Self { start: start.into(), end: Bytes::from_static(&[0]) }
    }

    /// Every key.
    pub fn all() -> Self {
        Self::from_key(Bytes::new())
    }

    /// Whether `key` belongs to the range.
    pub fn contains(&self, key: &[u8]) -> bool {
        if self.end.is_empty() {
            key == &self.start[..]
        } else if self.end[..] == [0] {
            key >= &self.start[..]
        } else {
            key >= &self.start[..] && key < &self.end[..]
        }
    }

    /// The entries of `map` whose keys are in the range, in key order. Never panics, even for
    /// `start >= end`.
    pub(crate) fn select<'a, V>(&self, map: &'a BTreeMap<Bytes, V>) -> btree_map::Range<'a, Bytes, V> {
        let start: &[u8] = &self.start;
        let end: &[u8] = &self.end;
        let bounds = if end.is_empty() {
            (Bound::Included(start), Bound::Included(start))
        } else if end == [0] {
            (Bound::Included(start), Bound::Unbounded)
        } else if start < end {
            (Bound::Included(start), Bound::Excluded(end))
        } else {
            // Empty: `BTreeMap::range` accepts an interval that includes and excludes one point.
            (Bound::Included(start), Bound::Excluded(start))
        };
        map.range::<[u8], _>(bounds)
    }
}

/// The `end` of the range of every key starting with `prefix` (etcd's `GetPrefixRangeEnd`): the
/// prefix with its last byte below `0xff` incremented and the bytes after it dropped; `[0]`
/// (every key) when the prefix is empty or all `0xff`.
pub fn prefix_range_end(prefix: &[u8]) -> Bytes {
    match prefix.iter().rposition(|&byte| byte < 0xff) {
        Some(position) => {
            let mut end = prefix[..=position].to_vec();
            end[position] += 1;
            Bytes::from(end)
        }
        None => Bytes::from_static(&[0]),
    }
}

/// A command of the replicated key-value store: the payload of one log entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvCommand {
    /// Create or replace `key`. `ttl_ms` makes it expire `ttl_ms` after the proposal stamp
    /// (through [`KvCommand::Expire`]); `None` never expires and clears an earlier expiry.
    Put {
        /// The key (not empty).
        key: Bytes,
        /// The new value.
        value: Bytes,
        /// Time to live in milliseconds from `proposed_at_ms`; `None` for no expiry.
        ttl_ms: Option<u64>,
    },
    /// Delete `key` if it exists.
    Delete {
        /// The key.
        key: Bytes,
    },
    /// Delete every live key of the [`KeyRange`] `start`/`end` (etcd convention), as one revision.
    DeleteRange {
        /// First key (inclusive).
        start: Bytes,
        /// End of the range; see [`KeyRange`] for the special values.
        end: Bytes,
    },
    /// Put `new_value` only if the key's current value is `expected_value` (`None`: only if the
    /// key does not exist). Same as a [`KvCommand::Txn`] comparing the value (or `version == 0`),
    /// putting on success and reading the key on failure.
    CompareAndSwap {
        /// The key (not empty).
        key: Bytes,
        /// The value the key must hold; `None` means the key must not exist.
        expected_value: Option<Bytes>,
        /// The value written when the comparison holds.
        new_value: Bytes,
        /// Time to live of the new value in milliseconds; `None` for no expiry.
        ttl_ms: Option<u64>,
    },
    /// An etcd transaction: if every compare holds, run `success` in order, else `failure`; all
    /// changes form one revision and later operations see earlier ones.
    Txn {
        /// Conditions, all evaluated against the state before the transaction.
        compares: Vec<Compare>,
        /// Operations run when every compare holds.
        success: Vec<TxnOp>,
        /// Operations run otherwise.
        failure: Vec<TxnOp>,
    },
    /// Drop the history at and below `revision` (see the module documentation).
    Compact {
        /// The new compacted revision; must lie above the current one and not in the future.
        revision: u64,
    },
    /// Delete every key whose expiry is at or before `now_ms`, and every lease due then with its
    /// keys, proposed by the leader.
    Expire {
        /// The leader's clock minus the maximum clock offset, in milliseconds.
        now_ms: u64,
    },
    /// Grant a lease of `ttl_ms` from the proposal stamp (see `lease.rs`). Refused with
    /// [`super::KvError::LeaseExists`] if `id` is in use.
    LeaseGrant {
        /// The lease id; 0 lets the store pick the lowest unused id above every id granted.
        id: u64,
        /// Time to live in milliseconds (not 0).
        ttl_ms: u64,
    },
    /// Delete a lease and every key attached to it, as one revision.
    LeaseRevoke {
        /// The lease.
        id: u64,
    },
    /// Move a lease's deadline to the proposal stamp plus its TTL.
    LeaseKeepAlive {
        /// The lease.
        id: u64,
    },
    /// Give every lease its full TTL from the proposal stamp: proposed by a new leader.
    LeaseRefreshAll,
    /// Raise (`active`) or clear an alarm of a member (see `alarm.rs`): no revision, no event.
    Alarm {
        /// The member the alarm is about.
        member: u64,
        /// Which alarm.
        alarm: super::Alarm,
        /// `true` raises it, `false` clears it.
        active: bool,
    },
    /// Change the auth table (see `auth.rs`): no store revision, no event; the table's own
    /// revision advances by 1 when the command succeeds.
    Auth(super::AuthCommand),
    /// A command checked against the auth table at `auth_revision` before it was proposed (etcd
    /// API requests). Applied only if auth is disabled when it is applied, or enabled with
    /// revision `auth_revision`; otherwise refused as a whole with
    /// [`super::KvError::AuthOldRevision`] (nothing changes, no revision). Never nested:
    /// validation and decoding refuse an `Authorized` inside an `Authorized`.
    Authorized {
        /// [`super::AuthState::revision`] of the table the command was checked against.
        auth_revision: u64,
        /// The command checked.
        command: Box<KvCommand>,
    },
}

/// Deepest nesting of transactions inside transactions ([`TxnOp::Txn`]) a command may have:
/// checked by validation and by decoding, so that no command can exhaust the stack.
pub const TXN_NESTING_MAX: usize = 16;

/// One condition of a [`KvCommand::Txn`] on the current state of one key, or of every live key
/// of a range (etcd `Compare`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compare {
    /// The key examined (the start of the range when `range_end` is set).
    pub key: Bytes,
    /// Empty: only `key` is examined. Otherwise every live key of the [`KeyRange`] `key` /
    /// `range_end` must satisfy the condition; a range with no live key is examined as one
    /// missing key (as in etcd).
    pub range_end: Bytes,
    /// What is compared, and the operand.
    pub target: CompareTarget,
    /// How the key's field is compared with the operand (`field op operand`).
    pub op: CompareOp,
}

/// The field of a key a [`Compare`] examines, with the operand it is compared to. For a missing
/// key the version and both revisions are 0, and every value comparison fails (as in etcd).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CompareTarget {
    /// The value, compared as bytes (lexicographically).
    Value(Bytes),
    /// The version.
    Version(u64),
    /// The create revision.
    CreateRevision(u64),
    /// The mod revision.
    ModRevision(u64),
    /// The id of the lease the key is attached to (0: none, and for a missing key).
    Lease(u64),
}

/// The comparison of a [`Compare`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CompareOp {
    /// `field == operand`.
    Equal,
    /// `field != operand`.
    NotEqual,
    /// `field < operand`.
    Less,
    /// `field > operand`.
    Greater,
}

impl CompareOp {
    fn holds(self, ordering: std::cmp::Ordering) -> bool {
        match self {
            Self::Equal => ordering.is_eq(),
            Self::NotEqual => ordering.is_ne(),
            Self::Less => ordering.is_lt(),
            Self::Greater => ordering.is_gt(),
        }
    }
}

impl Compare {
    /// Whether the comparison holds for the key's current state (`None`: the key is missing).
    pub fn evaluate(&self, current: Option<&KeyValue>) -> bool {
        let field = |get: fn(&KeyValue) -> u64| current.map_or(0, get);
        let ordering = match &self.target {
            CompareTarget::Value(operand) => match current {
                Some(kv) => kv.value[..].cmp(&operand[..]),
                None => return false,
            },
            CompareTarget::Version(operand) => field(|kv| kv.version).cmp(operand),
            CompareTarget::CreateRevision(operand) => field(|kv| kv.create_revision).cmp(operand),
            CompareTarget::ModRevision(operand) => field(|kv| kv.mod_revision).cmp(operand),
            CompareTarget::Lease(operand) => field(|kv| kv.lease).cmp(operand),
        };
        self.op.holds(ordering)
    }
}

/// One operation of a [`KvCommand::Txn`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxnOp {
    /// Create or replace a key, as [`KvCommand::Put`].
    Put {
        /// The key (not empty).
        key: Bytes,
        /// The new value.
        value: Bytes,
        /// Time to live in milliseconds; `None` for no expiry.
        ttl_ms: Option<u64>,
    },
    /// Delete one key, as [`KvCommand::Delete`].
    Delete {
        /// The key.
        key: Bytes,
    },
    /// Delete a range, as [`KvCommand::DeleteRange`].
    DeleteRange {
        /// First key (inclusive).
        start: Bytes,
        /// End of the range; see [`KeyRange`].
        end: Bytes,
    },
    /// Put `key` again with its current value (etcd's `ignore_value`): a new version, the value
    /// unchanged, no time to live. The key must be live before the transaction, or the whole
    /// transaction is refused with [`super::KvError::KeyNotFound`] and changes nothing; if an
    /// earlier operation of the same transaction deleted it, the value written is empty.
    PutSameValue {
        /// The key (not empty).
        key: Bytes,
    },
    /// Create or replace a key attached to lease `lease` (not 0), which must exist before the
    /// transaction, or the whole transaction is refused with [`super::KvError::LeaseNotFound`].
    PutInLease {
        /// The key (not empty).
        key: Bytes,
        /// The new value.
        value: Bytes,
        /// The lease.
        lease: u64,
    },
    /// Create or replace a key keeping the lease it is attached to (etcd's `ignore_lease`). The
    /// key must be live before the transaction ([`super::KvError::KeyNotFound`] otherwise).
    PutKeepLease {
        /// The key (not empty).
        key: Bytes,
        /// The new value.
        value: Bytes,
    },
    /// Put `key` again with its current value, attached to lease `lease` (not 0) (etcd's
    /// `ignore_value` with a lease). The key must be live before the transaction
    /// ([`super::KvError::KeyNotFound`]) and the lease must exist
    /// ([`super::KvError::LeaseNotFound`]), checked in that order, or the whole transaction is
    /// refused.
    PutSameValueInLease {
        /// The key (not empty).
        key: Bytes,
        /// The lease.
        lease: u64,
    },
    /// Put `key` again with its current value and its current lease (etcd's `ignore_value`
    /// with `ignore_lease`): only its version and mod revision change. The key must be live
    /// before the transaction ([`super::KvError::KeyNotFound`] otherwise).
    PutSameValueKeepLease {
        /// The key (not empty).
        key: Bytes,
    },
    /// A nested transaction. Its compares, like every compare of the command, are evaluated
    /// against the state before the outermost transaction (as in etcd); its operations run in
    /// place, at the same revision.
    Txn {
        /// Conditions of the nested transaction.
        compares: Vec<Compare>,
        /// Operations run when every compare holds.
        success: Vec<TxnOp>,
        /// Operations run otherwise.
        failure: Vec<TxnOp>,
    },
    /// Read a range as it was at `revision`, a revision before the transaction (etcd's range
    /// with a revision inside a transaction). A compacted or future revision refuses the whole
    /// transaction with the read's error, before anything changes.
    RangeAt {
        /// First key (inclusive).
        start: Bytes,
        /// End of the range; see [`KeyRange`].
        end: Bytes,
        /// Most keys returned; 0 for no limit.
        limit: u64,
        /// The revision read (at most the revision before the transaction).
        revision: u64,
    },
    /// Read a range of the state as it is at this point of the transaction (earlier operations
    /// of the transaction included). Reading at a past revision is not offered inside a
    /// transaction.
    Range {
        /// First key (inclusive).
        start: Bytes,
        /// End of the range; see [`KeyRange`].
        end: Bytes,
        /// Most keys returned; 0 for no limit.
        limit: u64,
    },
}
