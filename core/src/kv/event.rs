//! Change events for the watch hub: [`KvEvent`], and [`Watch`], the ordered replay of every
//! event above a past revision. The events an [`super::ApplyResult`] carries and the events a
//! watch replays are built by the same function from the same history, so they are identical.

use std::collections::btree_map;
use std::ops::Bound;

use bytes::Bytes;

use super::error::KvError;
use super::store::{ChangeId, KeyValue, KvStore};

/// What a change did to its key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KvEventKind {
    /// The key was created or replaced.
    Put,
    /// The key was deleted (explicitly, by a range delete, or by expiry).
    Delete,
}

/// One change to one key. The changes of a revision are delivered together, in the order they
/// were made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvEvent {
    /// The store revision of the change.
    pub revision: u64,
    /// Put or delete.
    pub kind: KvEventKind,
    /// The key changed.
    pub key: Bytes,
    /// The new value; empty for a delete.
    pub value: Bytes,
    /// The value before the change; `None` if the key did not exist.
    pub prev_value: Option<Bytes>,
    /// The key's create revision after a put; 0 for a delete.
    pub create_revision: u64,
    /// The revision of the change (equal to `revision`).
    pub mod_revision: u64,
    /// The key's version after a put; 0 for a delete.
    pub version: u64,
    /// The lease the key is attached to after a put; 0 for a delete or no lease.
    pub lease: u64,
    /// The whole previous key-value (revisions, version, lease); `None` if the key did not
    /// exist. Its value is `prev_value`. Boxed to keep events small in the broadcast buffers.
    pub prev_kv: Option<Box<KeyValue>>,
}

/// The events above a revision, in revision order (see [`KvStore::watch`]).
#[derive(Debug)]
pub struct Watch<'a> {
    store: &'a KvStore,
    changes: btree_map::Range<'a, ChangeId, Bytes>,
}

impl Iterator for Watch<'_> {
    type Item = KvEvent;

    fn next(&mut self) -> Option<KvEvent> {
        let (change, key) = self.changes.next()?;
        Some(self.store.event(*change, key))
    }
}

impl KvStore {
    /// Every event with a revision above `after_revision`, in order: what a watch created at
    /// `after_revision` has missed. Fails with [`KvError::Compacted`] when
    /// `after_revision < compacted_revision` (events are gone); a revision at or above the
    /// current one yields nothing yet.
    pub fn watch(&self, after_revision: u64) -> Result<Watch<'_>, KvError> {
        if after_revision < self.compacted_revision {
            return Err(KvError::Compacted { requested: after_revision, compacted: self.compacted_revision });
        }
        // Everything after the last possible change of `after_revision`.
        let last_of_revision = ChangeId { revision: after_revision, sub: u32::MAX };
        let changes = self.changes.range((Bound::Excluded(last_of_revision), Bound::Unbounded));
        Ok(Watch { store: self, changes })
    }

    /// The events of one revision, in order.
    pub(crate) fn events_of(&self, revision: u64) -> Vec<KvEvent> {
        let first = ChangeId { revision, sub: 0 };
        let last = ChangeId { revision, sub: u32::MAX };
        self.changes.range(first..=last).map(|(change, key)| self.event(*change, key)).collect()
    }

    /// The event of one recorded change.
    fn event(&self, change: ChangeId, key: &Bytes) -> KvEvent {
        let versions = self.keys.get(key).expect("every indexed change has its key's history");
        let position = versions
            .binary_search_by(|version| version.change.cmp(&change))
            .expect("every indexed change is in its key's history");
        let prev_kv = position.checked_sub(1).and_then(|p| KeyValue::of(key, &versions[p])).map(Box::new);
        let prev_value = prev_kv.as_ref().map(|prev| prev.value.clone());
        let (kind, value, create_revision, version, lease) = match &versions[position].live {
            Some(live) => (KvEventKind::Put, live.value.clone(), live.create_revision, live.version, live.lease),
            None => (KvEventKind::Delete, Bytes::new(), 0, 0, 0),
        };
        KvEvent {
            revision: change.revision,
            kind,
            key: key.clone(),
            value,
            prev_value,
            create_revision,
            mod_revision: change.revision,
            version,
            lease,
            prev_kv,
        }
    }
}
