//! # The replicated key-value state machine (MVCC, etcd semantics)
//!
//! [`KvStore`] is the state machine that committed log entries are applied to. It is pure and
//! deterministic: the same commands applied in the same order produce the same store, the same
//! [`ApplyResult`]s and a byte-identical [`KvStore::snapshot`] on every replica. It reads no clock
//! and no randomness; time only arrives inside commands and as the `proposed_at_ms` stamp.
//!
//! ## The MVCC model (etcd v3)
//!
//! - The store has a **revision**, `1` when empty (as in etcd, [`FIRST_REVISION`]). Every
//!   applied command that changes at least one key advances it by exactly 1; a transaction with several changes is one revision, and
//!   its changes are ordered inside the revision (etcd's "sub-revision"). Commands that change
//!   nothing (a delete of a missing key, a failed compare-and-swap, a compaction) leave it alone.
//! - Each live key carries a `create_revision` (revision of the put that created it), a
//!   `mod_revision` (revision of its last change) and a `version` (1 on creation, +1 per put,
//!   reset by a delete: the next put creates it again with version 1).
//! - Deletes leave **tombstones**; every version is kept until compaction, so
//!   [`KvStore::get`], [`KvStore::range`] and [`KvStore::scan_prefix`] can read at any revision
//!   `R` with `compacted_revision <= R <= current_revision` ([`KvError::Compacted`] below,
//!   [`KvError::FutureRevision`] above), and [`KvStore::watch`] replays every event with a
//!   revision above any `R >= compacted_revision`, in order.
//! - **Compaction** at `C` ([`KvCommand::Compact`]) removes every version superseded at or before
//!   `C` and every tombstone at or before `C`, keeping the latest version of each key live at
//!   `C`. It does not advance the revision. Afterwards reads at `C` still work, reads below it fail.
//! - Key sets follow etcd's range convention ([`KeyRange`]): `end` empty is the single key
//!   `start`; `end == [0]` is every key `>= start`; otherwise `[start, end)` (empty if
//!   `start >= end`). [`prefix_range_end`] computes `end` for a prefix scan.
//!
//! ## Applying entries: the contract with the runtime
//!
//! The runtime calls [`validate`] (or [`KvLimits::validate`]) before proposing, and rejects a
//! command that fails it with the [`KvError`]'s message; limits are **not** checked again when
//! applying, so replicas with different configured limits still agree. When proposing, the
//! leader stamps the entry with its wall clock, `proposed_at_ms`, and carries it in its own
//! entry envelope next to [`KvCommand::encode`]'s bytes (the stamp is outside the command so that
//! the client's command stays unchanged). Every committed command is applied with
//! [`KvStore::apply`]`(log_index, proposed_at_ms, &command)` in log order; log entries that are
//! not key-value commands (no-ops, membership) may be reported with
//! [`KvStore::advance_applied_index`] so that [`KvStore::last_applied_index`] tracks the log.
//! Both assert (release builds too) that log indexes strictly increase; the revision is asserted
//! never to decrease.
//!
//! ## Expiry through the log
//!
//! A put or compare-and-swap with `ttl_ms` records `expires_at_ms = proposed_at_ms + ttl_ms`.
//! Replicas never expire keys on their own clock: the leader periodically proposes
//! [`KvCommand::Expire`]`{ now_ms }` and applying it deletes, on every replica at the same log
//! index, every key whose `expires_at_ms <= now_ms`, in key order, as one revision of DELETE
//! events. A put without `ttl_ms` on a key clears its expiry. Until the `Expire` entry is applied
//! an expired key stays readable.
//!
//! The runtime's side of the contract: every `expire_interval_ms` (and only when
//! [`KvStore::next_expiry_ms`] is due) the leader proposes `now_ms = clock_ms - max_clock_offset_ms`,
//! where `max_clock_offset_ms` bounds the difference between any two nodes' clocks. Then:
//!
//! - **Never early.** A key put by leader A at A-clock `t_a` is deleted by leader B only if
//!   `t_a + ttl <= t_b - max_clock_offset_ms`; since `t_b - t_a` exceeds the real elapsed time by
//!   at most `max_clock_offset_ms`, at least `ttl` real time has passed since the proposal.
//! - **How late.** After `ttl` has elapsed since the proposal, the key is gone within
//!   `expire_interval_ms + 2 * max_clock_offset_ms` plus the commit and apply latency of the
//!   `Expire` entry; while there is no leader (election, partition) nothing expires, so add the
//!   time to elect a leader in that case.
//!
//! ## Auth
//!
//! The store also holds etcd's auth table ([`KvStore::auth`], an [`AuthState`]: users, roles,
//! permissions, whether auth is enabled, and the table's own revision). It changes only through
//! [`KvCommand::Auth`], which makes no store revision and no event, and it is part of the
//! snapshot. The runtime checks an etcd request against the table and proposes it as
//! [`KvCommand::Authorized`] with the table's revision; if the table moved on in between, the
//! entry is refused on every replica with [`KvError::AuthOldRevision`]. See `auth.rs`.
//!
//! ## Encodings
//!
//! Commands ([`KvCommand::encode`]) and snapshots ([`KvStore::snapshot`]) use hand-written,
//! versioned, little-endian binary formats documented in `command_codec.rs` and `snapshot.rs`.
//! Decoding never panics: malformed input is a [`KvDecodeError`] or a [`KvSnapshotError`].
//!
//! ## Example
//!
//! ```
//! use bytes::Bytes;
//! use keel_core::kv::{validate, KeyRange, KvCommand, KvEventKind, KvStore};
//!
//! let mut store = KvStore::new();
//! let put = KvCommand::Put { key: Bytes::from("/config/a"), value: Bytes::from("1"), ttl_ms: Some(5_000) };
//! validate(&put).expect("within the limits"); // the runtime checks before proposing
//! let entry = put.encode(); // what goes into the log
//! let command = KvCommand::decode(&entry).unwrap(); // what every replica applies
//! let result = store.apply(1, 10_000, &command); // log index 1, stamped at 10 s by the leader
//! assert_eq!((result.revision, result.events[0].kind), (2, KvEventKind::Put)); // an empty store is at 1
//! store.apply(2, 11_000, &KvCommand::Put { key: Bytes::from("/config/a"), value: Bytes::from("2"), ttl_ms: None });
//!
//! let old = store.get(b"/config/a", Some(2)).unwrap().unwrap(); // a read in the past
//! assert_eq!((old.value, old.expires_at_ms), (Bytes::from("1"), Some(15_000)));
//! let scan = store.scan_prefix(b"/config/", None).unwrap();
//! assert_eq!((scan.kvs.len(), scan.revision), (1, 3));
//! assert_eq!(store.watch(2).unwrap().count(), 1); // the events after revision 2
//!
//! let snapshot = store.snapshot();
//! assert_eq!(KvStore::restore(&snapshot).unwrap(), store);
//! assert_eq!(store.range(&KeyRange::all(), None, 0).unwrap().count, 1);
//! ```
//!
//! ## Module map
//!
//! | file | role |
//! |---|---|
//! | `command.rs` | [`KvCommand`], [`Compare`], [`TxnOp`], [`KeyRange`] |
//! | `command_codec.rs` | the command encoding |
//! | `wire.rs` | byte-level writer and bounds-checked reader shared by both encodings |
//! | `limits.rs` | [`KvLimits`] and [`validate`] |
//! | `store.rs` | [`KvStore`]: versions, reads at a revision, compaction |
//! | `apply.rs` | [`KvStore::apply`]: puts, deletes, transactions, expiry |
//! | `event.rs` | [`KvEvent`] and the [`Watch`] iterator |
//! | `lease.rs` | leases: grant, keep-alive, revoke, expiry through the log, refresh on a new leader |
//! | `alarm.rs` | [`Alarm`]s (etcd's NOSPACE, CORRUPT) and the refusal of growth while out of space |
//! | `auth.rs` | the auth table ([`AuthState`]: etcd's users, roles and permissions), [`AuthCommand`], permission checks |
//! | `auth_apply.rs` | applying [`AuthCommand`]s, and the revision check of [`KvCommand::Authorized`] |
//! | `auth_codec.rs` | the encoding of auth commands and of the auth table in snapshots |
//! | `snapshot.rs` | snapshot and checked restore |
//! | `hash.rs` | the checksum of the history up to a revision (etcd's `HashKV`) |
//! | `crc32.rs` | the snapshot checksum |
//! | `error.rs` | [`KvError`], [`KvDecodeError`], [`KvSnapshotError`] |

mod alarm;
mod apply;
mod auth;
mod auth_apply;
mod auth_codec;
mod command;
mod command_codec;
mod crc32;
mod error;
mod event;
mod hash;
mod lease;
mod limits;
mod snapshot;
mod store;
mod wire;

#[cfg(test)]
mod tests;

pub use alarm::Alarm;
pub use apply::{ApplyResult, OpResponse};
pub use auth::{
    AuthCommand, AuthRole, AuthState, AuthUser, Permission, PermissionKind, AUTH_HASH_BYTES_MAX, AUTH_NAME_BYTES_MAX,
    AUTH_ROLES_MAX, AUTH_ROLE_PERMISSIONS_MAX, AUTH_TOKEN_KEY_BYTES_MAX, AUTH_USERS_MAX, AUTH_USER_ROLES_MAX, ROOT,
};
pub use command::{prefix_range_end, Compare, CompareOp, CompareTarget, KeyRange, KvCommand, TxnOp, TXN_NESTING_MAX};
pub use error::{KvDecodeError, KvError, KvSnapshotError};
pub use event::{KvEvent, KvEventKind, Watch};
pub use lease::LeaseInfo;
pub use limits::{validate, KvLimits};
pub use snapshot::StoreImage;
pub use store::{KeyValue, KvStore, RangeResult, FIRST_REVISION};
