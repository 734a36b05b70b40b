//! The multi-version store: every key's versions since the last compaction, the index of
//! changes by revision that watches replay, the index of expiry deadlines, and the reads at a
//! revision. Writes live in `apply.rs`, events and watches in `event.rs`.
//!
//! Layout: `keys` maps each key to its versions in increasing [`ChangeId`] order, a version being
//! a live value or a tombstone. `changes` maps every change above the compacted revision to its
//! key, so that a watch walks changes in order without scanning keys. `expiries` holds
//! `(expires_at_ms, key)` for every live key with a time to live. All three are ordered
//! collections: nothing that drives behaviour depends on hash order.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use bytes::Bytes;

use super::command::KeyRange;
use super::error::KvError;

/// Where a change sits in the history: the revision that made it and its position among the
/// changes of that revision (etcd's main and sub revision).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct ChangeId {
    /// The store revision of the change.
    pub revision: u64,
    /// Its order inside the revision, from 0.
    pub sub: u32,
}

/// What a live version of a key holds besides its key and mod revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LiveValue {
    /// The value.
    pub value: Bytes,
    /// Revision of the put that created the key (after its last delete).
    pub create_revision: u64,
    /// 1 on creation, +1 per put since.
    pub version: u64,
    /// When an `Expire` at or after this time deletes the key, if it has a time to live.
    pub expires_at_ms: Option<u64>,
    /// The lease the key is attached to; 0 for none.
    pub lease: u64,
}

/// One version of a key: a live value, or a tombstone left by a delete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct KeyVersion {
    /// The change that wrote this version.
    pub change: ChangeId,
    /// The value, `None` for a tombstone.
    pub live: Option<LiveValue>,
}

/// A key and its value as of some revision (etcd `mvccpb.KeyValue`, with the expiry).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: Bytes,
    /// The value.
    pub value: Bytes,
    /// Revision of the put that created the key (after its last delete).
    pub create_revision: u64,
    /// Revision of the key's last change.
    pub mod_revision: u64,
    /// 1 on creation, +1 per put since.
    pub version: u64,
    /// Expiry deadline on the proposing leaders' clocks, in milliseconds, if the key has a TTL.
    pub expires_at_ms: Option<u64>,
    /// The lease the key is attached to (etcd); 0 for none.
    pub lease: u64,
}

impl KeyValue {
    /// The key-value pair of a live version; `None` for a tombstone.
    pub(crate) fn of(key: &Bytes, version: &KeyVersion) -> Option<KeyValue> {
        version.live.as_ref().map(|live| KeyValue {
            key: key.clone(),
            value: live.value.clone(),
            create_revision: live.create_revision,
            mod_revision: version.change.revision,
            version: live.version,
            expires_at_ms: live.expires_at_ms,
            lease: live.lease,
        })
    }
}

/// The answer to a range read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeResult {
    /// The revision the read observed. Watching from it (events above it) continues the read
    /// without a gap or an overlap.
    pub revision: u64,
    /// The live keys in key order, at most `limit` of them.
    pub kvs: Vec<KeyValue>,
    /// Whether the limit cut the answer short.
    pub more: bool,
    /// How many live keys the range holds, ignoring the limit.
    pub count: usize,
}

/// The replicated multi-version key-value store. See the module documentation of `kv` for the
/// model, the apply contract and expiry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvStore {
    /// Every key's versions, oldest first. Each list is shared copy-on-write with the
    /// [`super::StoreImage`]s taken of the store (a write to a key copies its list only while an
    /// image still holds it), so that taking an image costs the tree, not the versions.
    pub(crate) keys: BTreeMap<Bytes, Arc<Vec<KeyVersion>>>,
    /// Every change above the compacted revision, to its key.
    pub(crate) changes: BTreeMap<ChangeId, Bytes>,
    /// `(expires_at_ms, key)` of every live key with a time to live.
    pub(crate) expiries: BTreeSet<(u64, Bytes)>,
    /// Revision of the last change; [`FIRST_REVISION`] for a store that never changed.
    pub(crate) current_revision: u64,
    /// Reads below this revision fail; 0 before any compaction.
    pub(crate) compacted_revision: u64,
    /// Index of the last log entry applied; 0 before any.
    pub(crate) last_applied_index: u64,
    /// Every lease, by id.
    pub(crate) leases: BTreeMap<u64, super::lease::Lease>,
    /// `(expires_at_ms, id)` of every lease.
    pub(crate) lease_deadlines: BTreeSet<(u64, u64)>,
    /// The highest lease id granted so far (ids are never reused while it grows).
    pub(crate) last_lease_id: u64,
    /// Raised alarms as `(member, kind)` (see `alarm.rs`).
    pub(crate) alarms: BTreeSet<(u64, super::alarm::Alarm)>,
    /// The auth table (see `auth.rs`): changed only by [`super::KvCommand::Auth`].
    pub(crate) auth: super::auth::AuthState,
    /// [`KvStore::size_bytes`], kept up to date by every change to `keys` (a walk over the keys
    /// would cost the node driver time proportional to the store on every status and quota check).
    pub(crate) size_bytes: u64,
}

/// The revision of an empty store, as in etcd: the first change makes revision 2. etcd's
/// concurrency recipes (`etcdctl lock`, `elect`, clientv3's `concurrency` package) wait for keys
/// created at or below "my creation revision - 1" and read a bound of 0 as "no bound", so with a
/// first change at revision 1 the first lock holder would wait for itself forever.
pub const FIRST_REVISION: u64 = 1;

impl Default for KvStore {
    /// [`KvStore::new`]: an empty store at [`FIRST_REVISION`].
    fn default() -> Self {
        Self::new()
    }
}

/// Bytes of a version besides its key and value, as the snapshot encodes it.
const VERSION_OVERHEAD_BYTES: u64 = 8 + 4 + 1 + 8 + 8 + 9 + 8;

/// What one version of `key` adds to [`KvStore::size_bytes`].
pub(crate) fn version_bytes(key: &[u8], version: &KeyVersion) -> u64 {
    let value = version.live.as_ref().map_or(0, |live| live.value.len() as u64);
    key.len() as u64 + value + VERSION_OVERHEAD_BYTES
}

impl KvStore {
    /// An empty store at revision [`FIRST_REVISION`] (etcd's revision of an empty store: the
    /// first change makes revision 2), before log index 1.
    pub fn new() -> Self {
        Self {
            keys: BTreeMap::new(),
            changes: BTreeMap::new(),
            expiries: BTreeSet::new(),
            current_revision: FIRST_REVISION,
            compacted_revision: 0,
            last_applied_index: 0,
            leases: BTreeMap::new(),
            lease_deadlines: BTreeSet::new(),
            last_lease_id: 0,
            alarms: BTreeSet::new(),
            auth: super::auth::AuthState::default(),
            size_bytes: 0,
        }
    }

    /// An empty store at revision 0, for unit tests whose revision numbers read as counts of
    /// changes (`tests::mvcc::revisions_and_versions_follow_etcd` checks the real start).
    #[cfg(test)]
    pub(crate) fn counting_from_zero() -> Self {
        Self { current_revision: 0, ..Self::new() }
    }

    /// Revision of the last change ([`FIRST_REVISION`] for an empty history, as in etcd).
    pub fn current_revision(&self) -> u64 {
        self.current_revision
    }

    /// The compacted revision: reads and watches from below it fail.
    pub fn compacted_revision(&self) -> u64 {
        self.compacted_revision
    }

    /// Index of the last log entry applied (or reported with `advance_applied_index`).
    pub fn last_applied_index(&self) -> u64 {
        self.last_applied_index
    }

    /// The earliest expiry deadline among live keys and leases: the leader need not propose
    /// [`super::KvCommand::Expire`] before its adjusted clock reaches it.
    pub fn next_expiry_ms(&self) -> Option<u64> {
        let key = self.expiries.first().map(|(expires_at_ms, _)| *expires_at_ms);
        let lease = self.lease_deadlines.first().map(|(expires_at_ms, _)| *expires_at_ms);
        key.into_iter().chain(lease).min()
    }

    /// About how many bytes the store holds: every key once per version, every value, and a
    /// fixed overhead per version for its revisions, version, expiry and lease (etcd reports its
    /// database file size; this is Keel's equivalent). Kept up to date as the store changes, so
    /// it costs nothing to ask.
    pub fn size_bytes(&self) -> u64 {
        self.size_bytes
    }

    /// [`KvStore::size_bytes`] computed afresh by a walk over every version (restoring a
    /// snapshot sets the kept count with it; tests compare the two).
    pub fn measured_size_bytes(&self) -> u64 {
        let versions = self.keys.iter().flat_map(|(key, versions)| versions.iter().map(move |v| version_bytes(key, v)));
        versions.fold(0u64, u64::saturating_add)
    }

    /// `key` at `revision` (`None`: the current revision); `Ok(None)` when it did not exist then.
    pub fn get(&self, key: &[u8], revision: Option<u64>) -> Result<Option<KeyValue>, KvError> {
        let revision = self.readable_revision(revision)?;
        Ok(self.keys.get_key_value(key).and_then(|(key, versions)| visible_at(key, versions, revision)))
    }

    /// The live keys of `range` at `revision` (`None`: the current revision), in key order, at
    /// most `limit` of them (0: no limit).
    pub fn range(&self, range: &KeyRange, revision: Option<u64>, limit: usize) -> Result<RangeResult, KvError> {
        let revision = self.readable_revision(revision)?;
        let live = range.select(&self.keys).filter_map(|(key, versions)| visible_at(key, versions, revision));
        Ok(collect_range(revision, live, limit))
    }

    /// Every live key starting with `prefix` at `revision` (`None`: the current revision), with
    /// the revision read: the native API's prefix scan.
    pub fn scan_prefix(&self, prefix: &[u8], revision: Option<u64>) -> Result<RangeResult, KvError> {
        self.range(&KeyRange::prefix(Bytes::copy_from_slice(prefix)), revision, 0)
    }

    /// The current value of `key`, including changes already made by a transaction in progress.
    pub(crate) fn latest(&self, key: &[u8]) -> Option<KeyValue> {
        let (key, versions) = self.keys.get_key_value(key)?;
        KeyValue::of(key, versions.last()?)
    }

    /// The live keys of `range` as they are now (transaction reads), read as of `revision`.
    pub(crate) fn range_latest(&self, range: &KeyRange, revision: u64, limit: usize) -> RangeResult {
        let live =
            range.select(&self.keys).filter_map(|(key, versions)| versions.last().and_then(|v| KeyValue::of(key, v)));
        collect_range(revision, live, limit)
    }

    /// Checks that `revision` can be read: not compacted, not in the future.
    pub(crate) fn readable_revision(&self, revision: Option<u64>) -> Result<u64, KvError> {
        let requested = revision.unwrap_or(self.current_revision);
        if requested < self.compacted_revision {
            return Err(KvError::Compacted { requested, compacted: self.compacted_revision });
        }
        if requested > self.current_revision {
            return Err(KvError::FutureRevision { requested, current: self.current_revision });
        }
        Ok(requested)
    }

    /// Drops the history at and below `revision`: every version superseded at or before it and
    /// every tombstone at or before it; the latest version of each key live at `revision` stays.
    /// Refused for a revision at or below the compacted one, or above the current one.
    ///
    /// A replicated store must compact only by applying [`super::KvCommand::Compact`], so that
    /// every replica compacts at the same point of the log.
    pub fn compact(&mut self, revision: u64) -> Result<(), KvError> {
        if revision <= self.compacted_revision {
            return Err(KvError::Compacted { requested: revision, compacted: self.compacted_revision });
        }
        if revision > self.current_revision {
            return Err(KvError::FutureRevision { requested: revision, current: self.current_revision });
        }
        let mut emptied = Vec::new();
        for (key, versions) in self.keys.iter_mut() {
            let at_or_below = versions.partition_point(|version| version.change.revision <= revision);
            if at_or_below == 0 {
                continue;
            }
            let newest_old = at_or_below - 1;
            let drop = if versions[newest_old].live.is_some() { newest_old } else { at_or_below };
            if drop == 0 {
                continue;
            }
            let dropped: u64 = versions[..drop].iter().map(|version| version_bytes(key, version)).sum();
            self.size_bytes = self.size_bytes.checked_sub(dropped).expect("the size counts every version kept");
            Arc::make_mut(versions).drain(..drop);
            if versions.is_empty() {
                emptied.push(key.clone());
            }
        }
        for key in emptied {
            self.keys.remove(&key);
        }
        self.changes = self.changes.split_off(&ChangeId { revision: revision + 1, sub: 0 });
        self.compacted_revision = revision;
        Ok(())
    }
}

/// The key's value as of `revision`, if it was live then.
fn visible_at(key: &Bytes, versions: &[KeyVersion], revision: u64) -> Option<KeyValue> {
    let at_or_below = versions.partition_point(|version| version.change.revision <= revision);
    KeyValue::of(key, versions.get(at_or_below.checked_sub(1)?)?)
}

fn collect_range(revision: u64, live: impl Iterator<Item = KeyValue>, limit: usize) -> RangeResult {
    let mut result = RangeResult { revision, ..RangeResult::default() };
    for kv in live {
        result.count += 1;
        if limit == 0 || result.kvs.len() < limit {
            result.kvs.push(kv);
        } else {
            result.more = true;
        }
    }
    result
}
