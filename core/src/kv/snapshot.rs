//! Deterministic snapshots of the whole store, history since compaction included, and their
//! checked restore. Equal stores give byte-identical snapshots (keys and versions are written in
//! order; the change and expiry indexes are rebuilt, not stored).
//!
//! Format version 2 (primitives as in `wire.rs`, little-endian):
//!
//! ```text
//! snapshot = magic:"KEELKVSN" version:u8(=2) body crc32:u32
//! body     = last_applied_index:u64 current_revision:u64 compacted_revision:u64
//!            key_count:u32 key*                       (keys in strictly increasing order)
//!            last_lease_id:u64 lease_count:u32 lease* (ids in strictly increasing order)
//! key      = key:bytes version_count:u32 version*     (oldest first)
//! version  = revision:u64 sub:u32 live:u8 (0 tombstone, 1 live) [if live:
//!            value:bytes create_revision:u64 version:u64 expires_at_ms:option<u64> lease:u64]
//! lease    = id:u64 ttl_ms:u64 expires_at_ms:u64
//! ```
//!
//! Version 3 is version 2 followed, after the leases, by `alarm_count:u32 alarm*` with
//! `alarm = member:u64 kind:u8` (1 NoSpace, 2 Corrupt), in strictly increasing order. It is
//! written only while an alarm is raised, so that a store without alarms keeps its version-2
//! bytes (and stays readable by builds from before alarms).
//!
//! Version 4 is version 2 followed by `alarm_count:u32 alarm*` (as in version 3, but the list may
//! be empty) and then the auth table (`auth_codec.rs`: enabled flag, auth revision, token key,
//! users with their hash, `no_password` flag and roles, roles with their permissions). It is
//! written only while the auth table is not the default one (auth never used), so that stores
//! without auth keep their version-2 or version-3 bytes; versions 1 to 3 restore with the
//! default table, and a version-4 snapshot holding the default table is refused (not canonical).
//!
//! Version 1, written before leases, is still restored: the same without the `lease` field of
//! a version and without the leases after the keys.
//!
//! The CRC-32 (IEEE) covers every byte before it. [`KvStore::restore`] checks, in order, the
//! size, the magic, the version, the checksum, the structure, and then every invariant of the
//! store (revisions in range and increasing, versions and create revisions consistent, every
//! revision above the compacted one present), and names the first thing that is wrong.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use bytes::Bytes;

use super::alarm::Alarm;
use super::auth::AuthState;
use super::auth_codec::{read_auth_state, write_auth_state};
use super::crc32::crc32;
use super::error::{KvDecodeError, KvSnapshotError};
use super::lease::Lease;
use super::store::{ChangeId, KeyVersion, KvStore, LiveValue, FIRST_REVISION};
use super::wire::{Reader, Sink};

/// The first bytes of every key-value snapshot.
const MAGIC: &[u8; 8] = b"KEELKVSN";
/// The snapshot format version written by this build.
const SNAPSHOT_FORMAT_VERSION: u8 = 2;
/// The format before leases, still restored.
const SNAPSHOT_FORMAT_V1: u8 = 1;
/// Version 2 followed by the raised alarms, written while there are any.
const SNAPSHOT_FORMAT_V3: u8 = 3;
/// Version 2 followed by the alarms (maybe none) and the auth table, written while the table is
/// not the default one.
const SNAPSHOT_FORMAT_V4: u8 = 4;
/// Bytes of one alarm record.
const ALARM_BYTES: usize = 8 + 1;
/// Bytes of one lease record.
const LEASE_BYTES: usize = 8 + 8 + 8;
/// Fewest bytes of one key record (empty key, version count).
const KEY_BYTES_MIN: usize = 4 + 4;
/// Fewest bytes of one version record (a tombstone).
const VERSION_BYTES_MIN: usize = 8 + 4 + 1;

/// A copy of what a snapshot and a hash of a [`KvStore`] cover: every key's versions (sharing
/// their keys and values), the leases, the alarms, the auth table and the counters, without the
/// indexes a restore rebuilds (changes by revision, expiry queues). Taking one is the cheap part
/// of a snapshot; the node driver takes it and encodes or hashes it on another thread, so that a
/// large store does not stop the driver for the encoding.
#[derive(Clone, Debug)]
pub struct StoreImage {
    /// A store whose derived indexes are left empty; only encoded and hashed, never applied to.
    store: KvStore,
}

impl StoreImage {
    /// The applied index of the copied store (the snapshot's point).
    pub fn last_applied_index(&self) -> u64 {
        self.store.last_applied_index
    }

    /// The current revision of the copied store.
    pub fn current_revision(&self) -> u64 {
        self.store.current_revision
    }

    /// The compacted revision of the copied store.
    pub fn compacted_revision(&self) -> u64 {
        self.store.compacted_revision
    }

    /// [`KvStore::snapshot`] of the copied store: the same bytes.
    pub fn snapshot(&self) -> Bytes {
        self.store.snapshot()
    }

    /// [`KvStore::hash_kv`] of the copied store: the same hash.
    pub fn hash_kv(&self, revision: Option<u64>) -> Result<u32, super::KvError> {
        self.store.hash_kv(revision)
    }
}

impl KvStore {
    /// A [`StoreImage`] of this store: what its snapshot and hash cover, copied.
    pub fn image(&self) -> StoreImage {
        let store = KvStore {
            keys: self.keys.clone(),
            changes: BTreeMap::new(),
            expiries: BTreeSet::new(),
            current_revision: self.current_revision,
            compacted_revision: self.compacted_revision,
            last_applied_index: self.last_applied_index,
            leases: self.leases.clone(),
            lease_deadlines: BTreeSet::new(),
            last_lease_id: self.last_lease_id,
            alarms: self.alarms.clone(),
            auth: self.auth.clone(),
            size_bytes: self.size_bytes,
        };
        StoreImage { store }
    }
}

impl KvStore {
    /// The whole store as bytes, for a Raft snapshot taken at [`KvStore::last_applied_index`].
    /// Equal stores give byte-identical snapshots.
    pub fn snapshot(&self) -> Bytes {
        // `size_bytes` counts what the encoding holds (keys, values, version fields), so one
        // allocation is enough: growing by doubling copied up to twice the snapshot's size.
        let mut out = Vec::with_capacity(usize::try_from(self.size_bytes).unwrap_or(0).saturating_add(1 << 12));
        out.put_slice(MAGIC);
        let version = self.snapshot_version();
        out.put_u8(version);
        out.put_u64(self.last_applied_index);
        out.put_u64(self.current_revision);
        out.put_u64(self.compacted_revision);
        out.put_count(self.keys.len());
        for (key, versions) in &self.keys {
            out.put_bytes(key);
            out.put_count(versions.len());
            for version in versions.iter() {
                write_version(&mut out, version);
            }
        }
        out.put_u64(self.last_lease_id);
        out.put_count(self.leases.len());
        for (id, lease) in &self.leases {
            out.put_u64(*id);
            out.put_u64(lease.ttl_ms);
            out.put_u64(lease.expires_at_ms);
        }
        if version >= SNAPSHOT_FORMAT_V3 {
            out.put_count(self.alarms.len());
            for (member, alarm) in &self.alarms {
                out.put_u64(*member);
                out.put_u8(alarm.code());
            }
        }
        if version == SNAPSHOT_FORMAT_V4 {
            write_auth_state(&mut out, &self.auth);
        }
        let checksum = crc32(&out);
        out.put_u32(checksum);
        Bytes::from(out)
    }

    /// The oldest format that holds the whole store: 4 with an auth table, 3 with alarms, else 2.
    fn snapshot_version(&self) -> u8 {
        if self.auth != AuthState::default() {
            SNAPSHOT_FORMAT_V4
        } else if !self.alarms.is_empty() {
            SNAPSHOT_FORMAT_V3
        } else {
            SNAPSHOT_FORMAT_VERSION
        }
    }

    /// Rebuilds a store from [`KvStore::snapshot`]'s bytes, refusing anything corrupt or
    /// inconsistent with an error naming what is wrong. Never panics.
    pub fn restore(data: &[u8]) -> Result<KvStore, KvSnapshotError> {
        let header = MAGIC.len() + 1;
        if data.len() < header + 4 {
            return Err(KvSnapshotError::TooShort { size: data.len() });
        }
        if &data[..MAGIC.len()] != MAGIC {
            return Err(KvSnapshotError::BadMagic);
        }
        let version = data[MAGIC.len()];
        if ![SNAPSHOT_FORMAT_V1, SNAPSHOT_FORMAT_VERSION, SNAPSHOT_FORMAT_V3, SNAPSHOT_FORMAT_V4].contains(&version) {
            return Err(KvSnapshotError::UnsupportedVersion { version });
        }
        let (content, trailer) = data.split_at(data.len() - 4);
        let stored = u32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]);
        let computed = crc32(content);
        if stored != computed {
            return Err(KvSnapshotError::ChecksumMismatch { stored, computed });
        }
        let mut reader = Reader::new(content);
        reader.slice(header, "header")?;
        let mut store = read_body(&mut reader, version != SNAPSHOT_FORMAT_V1)?;
        if version >= SNAPSHOT_FORMAT_V3 {
            read_alarms(&mut reader, &mut store, version == SNAPSHOT_FORMAT_V4)?;
        }
        if version == SNAPSHOT_FORMAT_V4 {
            store.auth = read_auth_state(&mut reader)?;
            if store.auth == AuthState::default() {
                return Err(KvSnapshotError::Inconsistent("a version-4 snapshot holds the default auth table".into()));
            }
        }
        reader.finish()?;
        check_store(&store).map_err(KvSnapshotError::Inconsistent)?;
        Ok(store.with_indexes())
    }

    /// Rebuilds the change and expiry indexes from the key histories.
    fn with_indexes(mut self) -> KvStore {
        for (key, versions) in &self.keys {
            for version in versions.iter().filter(|version| version.change.revision > self.compacted_revision) {
                self.changes.insert(version.change, key.clone());
            }
            let last = versions.last().and_then(|last| last.live.as_ref());
            if let Some(expires_at_ms) = last.and_then(|live| live.expires_at_ms) {
                self.expiries.insert((expires_at_ms, key.clone()));
            }
            if let Some(lease) = last.and_then(|live| self.leases.get_mut(&live.lease)) {
                lease.keys.insert(key.clone());
            }
        }
        self.lease_deadlines = self.leases.iter().map(|(id, lease)| (lease.expires_at_ms, *id)).collect();
        self
    }
}

fn write_version(out: &mut Vec<u8>, version: &KeyVersion) {
    out.put_u64(version.change.revision);
    out.put_u32(version.change.sub);
    match &version.live {
        None => out.put_u8(0),
        Some(live) => {
            out.put_u8(1);
            out.put_bytes(&live.value);
            out.put_u64(live.create_revision);
            out.put_u64(live.version);
            out.put_option_u64(live.expires_at_ms);
            out.put_u64(live.lease);
        }
    }
}

fn read_body(reader: &mut Reader<'_>, with_leases: bool) -> Result<KvStore, KvSnapshotError> {
    let mut store = KvStore {
        last_applied_index: reader.u64("last_applied_index")?,
        current_revision: reader.u64("current_revision")?,
        compacted_revision: reader.u64("compacted_revision")?,
        ..KvStore::default()
    };
    let key_count = reader.count("key count", KEY_BYTES_MIN)?;
    let mut previous: Option<Bytes> = None;
    for _ in 0..key_count {
        let key = reader.bytes("key")?;
        if previous.as_ref().is_some_and(|previous| *previous >= key) {
            return Err(KvSnapshotError::Inconsistent(format!("key {key:?} is out of order or repeated")));
        }
        let version_count = reader.count("version count", VERSION_BYTES_MIN)?;
        let mut versions = Vec::with_capacity(version_count);
        for _ in 0..version_count {
            versions.push(read_version(reader, with_leases)?);
        }
        previous = Some(key.clone());
        store.keys.insert(key, Arc::new(versions));
    }
    if with_leases {
        read_leases(reader, &mut store)?;
    }
    store.size_bytes = store.measured_size_bytes();
    Ok(store)
}

fn read_leases(reader: &mut Reader<'_>, store: &mut KvStore) -> Result<(), KvSnapshotError> {
    store.last_lease_id = reader.u64("last_lease_id")?;
    let count = reader.count("lease count", LEASE_BYTES)?;
    for _ in 0..count {
        let id = reader.u64("lease id")?;
        let lease = Lease {
            ttl_ms: reader.u64("lease ttl_ms")?,
            expires_at_ms: reader.u64("lease expires_at_ms")?,
            keys: BTreeSet::new(),
        };
        if id == 0 || store.leases.last_key_value().is_some_and(|(last, _)| *last >= id) {
            return Err(KvSnapshotError::Inconsistent(format!("lease {id} is 0, out of order or repeated")));
        }
        if id > store.last_lease_id {
            return Err(KvSnapshotError::Inconsistent(format!("lease {id} is above the last lease id granted")));
        }
        store.leases.insert(id, lease);
    }
    Ok(())
}

/// The alarms of a version-3 snapshot (at least one) or of a version-4 one (`may_be_empty`).
fn read_alarms(reader: &mut Reader<'_>, store: &mut KvStore, may_be_empty: bool) -> Result<(), KvSnapshotError> {
    let count = reader.count("alarm count", ALARM_BYTES)?;
    for _ in 0..count {
        let member = reader.u64("alarm member")?;
        let offset = reader.offset();
        let tag = reader.u8("alarm kind")?;
        let alarm = Alarm::of_code(tag).ok_or(KvDecodeError::UnknownTag { field: "alarm kind", offset, tag })?;
        if store.alarms.last().is_some_and(|last| *last >= (member, alarm)) {
            return Err(KvSnapshotError::Inconsistent(format!("alarm {alarm:?} of {member} is out of order")));
        }
        store.alarms.insert((member, alarm));
    }
    if count == 0 && !may_be_empty {
        return Err(KvSnapshotError::Inconsistent("a version-3 snapshot lists no alarm".into()));
    }
    Ok(())
}

fn read_version(reader: &mut Reader<'_>, with_lease: bool) -> Result<KeyVersion, KvDecodeError> {
    let change = ChangeId { revision: reader.u64("version revision")?, sub: reader.u32("version sub")? };
    let offset = reader.offset();
    let live = match reader.u8("version kind")? {
        0 => None,
        1 => Some(LiveValue {
            value: reader.bytes("value")?,
            create_revision: reader.u64("create_revision")?,
            version: reader.u64("version")?,
            expires_at_ms: reader.option_u64("expires_at_ms")?,
            lease: if with_lease { reader.u64("lease")? } else { 0 },
        }),
        tag => return Err(KvDecodeError::UnknownTag { field: "version kind", offset, tag }),
    };
    Ok(KeyVersion { change, live })
}

/// Every invariant the apply path maintains, checked on untrusted data.
fn check_store(store: &KvStore) -> Result<(), String> {
    if store.current_revision == u64::MAX {
        return Err("the current revision is u64::MAX: no revision is left for the next change".into());
    }
    if store.compacted_revision > store.current_revision {
        return Err(format!(
            "compacted revision {} is above the current revision {}",
            store.compacted_revision, store.current_revision
        ));
    }
    let mut changes = BTreeMap::new();
    for (key, versions) in &store.keys {
        let lease = versions.last().and_then(|last| last.live.as_ref()).map_or(0, |live| live.lease);
        if lease != 0 && !store.leases.contains_key(&lease) {
            return Err(format!("key {key:?} is attached to lease {lease}, which does not exist"));
        }
        check_history(key, versions, store.compacted_revision, store.current_revision)
            .map_err(|what| format!("key {key:?}: {what}"))?;
        for version in versions.iter().filter(|version| version.change.revision > store.compacted_revision) {
            if let Some(other) = changes.insert(version.change, key) {
                return Err(format!("change {:?} is claimed by keys {other:?} and {key:?}", version.change));
            }
        }
    }
    check_revisions_complete(&changes, store.compacted_revision, store.current_revision)
}

/// One key's versions: increasing, in range, with consistent versions and create revisions.
fn check_history(key: &Bytes, versions: &[KeyVersion], compacted: u64, current: u64) -> Result<(), String> {
    let first = versions.first().ok_or("no versions")?;
    let first_live = first.live.as_ref().ok_or("the oldest version is a tombstone")?;
    if first.change.revision <= compacted {
        if first_live.version == 0 || first_live.create_revision == 0 {
            return Err("version 0 or create revision 0 on a live version".into());
        }
        if first_live.create_revision > first.change.revision {
            return Err(format!("created at {} after it was written", first_live.create_revision));
        }
    } else if first_live.version != 1 || first_live.create_revision != first.change.revision {
        return Err(format!("the oldest version above the compacted revision {compacted} is not a creation"));
    }
    if versions.iter().any(|version| version.live.as_ref().is_some_and(|live| live.version == u64::MAX)) {
        return Err("version u64::MAX leaves no room for another put".into());
    }
    for pair in versions.windows(2) {
        let (before, after) = (&pair[0], &pair[1]);
        if after.change <= before.change {
            return Err(format!("change {:?} does not follow {:?}", after.change, before.change));
        }
        if after.change.revision <= compacted {
            return Err(format!("superseded version at {:?} survived compaction at {compacted}", before.change));
        }
        let expected = match &before.live {
            Some(live) => (live.create_revision, live.version.saturating_add(1)),
            None => (after.change.revision, 1),
        };
        match &after.live {
            Some(live) if (live.create_revision, live.version) != expected => {
                return Err(format!(
                    "at {:?}: create revision {} and version {}, expected {} and {}",
                    after.change, live.create_revision, live.version, expected.0, expected.1
                ));
            }
            None if before.live.is_none() => return Err(format!("two tombstones in a row at {:?}", after.change)),
            _ => {}
        }
    }
    let last = versions.last().map_or(0, |last| last.change.revision);
    if last > current {
        return Err(format!("written at revision {last}, above the current revision {current} ({key:?})"));
    }
    Ok(())
}

/// Every revision above the compacted one made at least one change, numbered from sub 0 up;
/// the empty store's revision ([`FIRST_REVISION`]) made none (stores written before it was 1
/// started at 0 and have a change at revision 1: both restore).
fn check_revisions_complete(changes: &BTreeMap<ChangeId, &Bytes>, compacted: u64, current: u64) -> Result<(), String> {
    let starts_empty = match changes.keys().next() {
        Some(first) => first.revision == FIRST_REVISION + 1,
        None => current == FIRST_REVISION,
    };
    let base = if compacted < FIRST_REVISION && starts_empty { FIRST_REVISION } else { compacted };
    let mut expected = ChangeId { revision: base.saturating_add(1), sub: 0 };
    for change in changes.keys() {
        let next_revision = ChangeId { revision: expected.revision.saturating_add(1), sub: 0 };
        if *change == next_revision && expected.sub > 0 {
            expected = next_revision;
        }
        if *change != expected {
            return Err(format!("change {change:?} found where {expected:?} was expected"));
        }
        expected.sub = expected.sub.saturating_add(1);
    }
    let last_revision = if expected.sub > 0 { expected.revision } else { base };
    if last_revision != current {
        return Err(format!("changes stop at revision {last_revision} but the current revision is {current}"));
    }
    Ok(())
}
