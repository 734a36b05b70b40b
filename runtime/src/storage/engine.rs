//! The Raft side of storage, shared by both backends: how log writes, syncs, hard state,
//! snapshot installation and compaction become atomic batches of records (see `records.rs`).
//!
//! The engine caches four facts about what is stored (the snapshot point, the last entry, the
//! stored log mark, and whether writes await a sync), so that the write path never reads the
//! disk except to look up the term of an entry it truncates to or installs a snapshot at.
//!
//! Compaction and snapshot installation store the snapshot at once but delete the entries it
//! covers a slice at a time: each later commit carries the deletes of at most
//! [`PURGE_PER_COMMIT_MIN`] covered entries plus as many as it writes, so that the purge always
//! outpaces the log's growth. Deleting the 100,000 entries of one snapshot interval in one batch
//! took 80-340 ms, during which no log write could be made durable. Entries at or below the
//! snapshot point are never read, and recovery deletes any that a crash leaves behind.

use keel_core::{Entry, HardState, Index, LogId, LogWrite, Snapshot, Term};

use super::codec::{self, CodecError};
use super::records::{
    log_key, Op, RecordStore, Space, HARD_STATE_KEY, LOG_MARK_KEY, SNAPSHOT_DATA_KEY, SNAPSHOT_META_KEY,
};
use super::{recovery, LoadedState, Storage, StorageError};

/// What the engine knows about the stored state, valid from `load` until an error.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Cache {
    /// Last entry covered by the stored snapshot (`LogId::default()` without one).
    pub snapshot: LogId,
    /// Last stored entry, synced or not (the snapshot point when the log is empty).
    pub last: LogId,
    /// Value of the stored log mark record (0 when absent).
    pub mark: Index,
    /// True when a log write has not been synced yet.
    pub unsynced: bool,
}

/// Fewest entries covered by a stored snapshot that each commit deletes, while any are left.
#[cfg(not(any(test, madsim)))]
pub(crate) const PURGE_PER_COMMIT_MIN: u64 = 1_024;
/// Under madsim, whose nodes snapshot every 200 entries, few: purges then stay pending across
/// the crashes the simulator injects.
#[cfg(all(madsim, not(test)))]
pub(crate) const PURGE_PER_COMMIT_MIN: u64 = 16;
/// In unit tests, two: the storage model's short logs then leave purges pending across crashes.
#[cfg(test)]
pub(crate) const PURGE_PER_COMMIT_MIN: u64 = 2;

/// The shared implementation of [`Storage`] over a [`RecordStore`].
#[derive(Debug)]
pub(crate) struct Engine<S> {
    store: S,
    /// `None` until `load` succeeds, and again after any failed write (the caller must reload).
    cache: Option<Cache>,
    /// Every log key at or below this index is deleted; those above it and at or below the
    /// snapshot point are covered entries still to purge.
    purged_through: Index,
}

fn too_large(what: String, error: CodecError) -> StorageError {
    StorageError::TooLarge { what, reason: error.to_string() }
}

/// Deletes of every log key in `from..=to`, highest first, so that any prefix of the batch still
/// leaves a contiguous log.
fn delete_range(ops: &mut Vec<Op>, from: Index, to: Index) {
    ops.extend((from..=to).rev().map(|index| Op::Delete(Space::Log, log_key(index))));
}

fn snapshot_ops(snapshot: &Snapshot) -> Result<Vec<Op>, StorageError> {
    let what = || format!("the snapshot at {}", snapshot.meta.last_included);
    let meta = codec::encode_snapshot_meta(&snapshot.meta, &snapshot.data).map_err(|e| too_large(what(), e))?;
    let data = codec::encode_snapshot_data(&snapshot.data).map_err(|e| too_large(what(), e))?;
    Ok(vec![
        Op::Put(Space::State, SNAPSHOT_META_KEY.to_vec(), meta),
        Op::Put(Space::Snapshot, SNAPSHOT_DATA_KEY.to_vec(), data),
    ])
}

/// Checks the shape of a log write against the stored log and its own entries.
fn check_write(write: &LogWrite, prev_term: Term) -> Result<(), StorageError> {
    let mut previous = LogId::new(prev_term, write.first_index - 1);
    for entry in &write.entries {
        if entry.log_id.index != previous.index.saturating_add(1) {
            return Err(StorageError::InvalidRequest(format!(
                "log write from index {} holds entry {} after {}; entries must be contiguous from first_index",
                write.first_index, entry.log_id, previous
            )));
        }
        if entry.log_id.term < previous.term {
            return Err(StorageError::InvalidRequest(format!(
                "log write entry {} has a lower term than the entry before it ({previous}); terms never decrease",
                entry.log_id
            )));
        }
        previous = entry.log_id;
    }
    Ok(())
}

impl<S: RecordStore> Engine<S> {
    /// An engine over `store`; call `load` before writing.
    pub fn new(store: S) -> Self {
        Self { store, cache: None, purged_through: 0 }
    }

    /// The record store (tests write raw records through it).
    #[cfg(test)]
    pub fn store_mut(&mut self) -> &mut S {
        &mut self.store
    }

    fn cache(&self) -> Result<Cache, StorageError> {
        self.cache.ok_or(StorageError::NotLoaded)
    }

    /// Commits `ops`, with the next slice of the purge; on failure forgets the cache so that
    /// nothing is written on stale knowledge.
    fn commit(&mut self, mut ops: Vec<Op>, durable: bool, next: Cache) -> Result<(), StorageError> {
        let mut purge = Vec::new();
        let purged_through = self.purge_slice(&mut purge, ops.len(), next.snapshot.index);
        if purge.is_empty() {
            // The usual case: nothing to purge, and the write path copies nothing.
        } else if durable {
            // A synced batch lands whole, and one that stores a snapshot holds it before the
            // deletes of what it covers.
            ops.append(&mut purge);
        } else {
            // An unsynced batch may land in part (a prefix, its last record torn): the purge goes
            // first, as a batch of its own before it would.
            purge.append(&mut ops);
            ops = purge;
        }
        self.cache = None;
        self.store.commit(ops, durable)?;
        self.cache = Some(next);
        // A snapshot installed below the purge point lets those indexes be written again.
        self.purged_through = purged_through.min(next.snapshot.index);
        Ok(())
    }

    /// Adds to `purge` the deletes of the next entries covered by the snapshot at
    /// `snapshot_index` (highest first), for a batch of `written` other operations; returns the
    /// index purged through once they are committed.
    fn purge_slice(&self, purge: &mut Vec<Op>, written: usize, snapshot_index: Index) -> Index {
        let budget = PURGE_PER_COMMIT_MIN.saturating_add(written as u64);
        let through = snapshot_index.min(self.purged_through.saturating_add(budget));
        if through <= self.purged_through {
            return self.purged_through;
        }
        delete_range(purge, self.purged_through + 1, through);
        through
    }

    /// Commits `ops` durably, recording the new last index as the log mark in the same batch.
    fn commit_durable(&mut self, mut ops: Vec<Op>, mut next: Cache) -> Result<(), StorageError> {
        if next.mark != next.last.index {
            let mark = codec::encode_log_mark(next.last.index).map_err(|e| too_large("the log mark".into(), e))?;
            ops.push(Op::Put(Space::State, LOG_MARK_KEY.to_vec(), mark));
            next.mark = next.last.index;
        }
        next.unsynced = false;
        self.commit(ops, true, next)
    }

    /// The term of the stored entry at `index`, or of the snapshot point; `None` outside the log.
    fn term_at(&self, cache: &Cache, index: Index) -> Result<Option<Term>, StorageError> {
        if index == cache.snapshot.index {
            return Ok(Some(cache.snapshot.term));
        }
        if index == cache.last.index {
            return Ok(Some(cache.last.term));
        }
        if index < cache.snapshot.index || index > cache.last.index {
            return Ok(None);
        }
        let Some(bytes) = self.store.get(Space::Log, &log_key(index))? else {
            return Err(StorageError::MissingEntry {
                index,
                reason: format!("it lies inside the stored log ({}, {}] but was not found", cache.snapshot, cache.last),
            });
        };
        let entry = codec::decode_entry(&bytes).map_err(|e| StorageError::CorruptEntry {
            index,
            reason: e.to_string(),
            why: "it was read back while the log was being written".into(),
        })?;
        Ok(Some(entry.log_id.term))
    }

    fn encode_entries(entries: &[Entry], ops: &mut Vec<Op>) -> Result<(), StorageError> {
        for entry in entries {
            let record = codec::encode_entry(entry).map_err(|e| too_large(format!("log entry {}", entry.log_id), e))?;
            ops.push(Op::Put(Space::Log, log_key(entry.log_id.index), record));
        }
        Ok(())
    }

    fn do_append(&mut self, write: &LogWrite) -> Result<(), StorageError> {
        let mut cache = self.cache()?;
        let first = write.first_index;
        if first <= cache.snapshot.index || first > cache.last.index.saturating_add(1) {
            return Err(StorageError::InvalidRequest(format!(
                "log write from index {first} lies outside ({}, {}]: it would rewrite the snapshot or leave a hole",
                cache.snapshot.index,
                cache.last.index.saturating_add(1)
            )));
        }
        let prev_index = first - 1;
        let Some(prev_term) = self.term_at(&cache, prev_index)? else {
            return Err(StorageError::InvalidRequest(format!("no stored entry precedes log write index {first}")));
        };
        check_write(write, prev_term)?;
        let mut ops = Vec::with_capacity(write.entries.len() + 1);
        if first <= cache.last.index {
            if first <= cache.mark {
                let mark = codec::encode_log_mark(prev_index).map_err(|e| too_large("the log mark".into(), e))?;
                ops.push(Op::Put(Space::State, LOG_MARK_KEY.to_vec(), mark));
                cache.mark = prev_index;
            }
            delete_range(&mut ops, first, cache.last.index);
        }
        Self::encode_entries(&write.entries, &mut ops)?;
        if ops.is_empty() {
            return Ok(());
        }
        cache.last = write.entries.last().map_or(LogId::new(prev_term, prev_index), |e| e.log_id);
        cache.unsynced = true;
        self.commit(ops, false, cache)
    }

    fn do_install(&mut self, snapshot: &Snapshot) -> Result<(), StorageError> {
        let cache = self.cache()?;
        let point = snapshot.meta.last_included;
        let keep = point.index >= cache.snapshot.index && self.term_at(&cache, point.index)? == Some(point.term);
        let mut ops = snapshot_ops(snapshot)?;
        let mut next = cache;
        if keep {
            next.last = if cache.last.index > point.index { cache.last } else { point };
        } else {
            // Every key above the new point goes now (covered entries not purged yet included,
            // when the point is below the old one); those below it are purged later.
            delete_range(&mut ops, point.index.max(self.purged_through).saturating_add(1), cache.last.index);
            next.last = point;
        }
        next.snapshot = point;
        self.commit_durable(ops, next)
    }

    fn do_compact(&mut self, snapshot: &Snapshot) -> Result<(), StorageError> {
        let cache = self.cache()?;
        let point = snapshot.meta.last_included;
        if point.index <= cache.snapshot.index || point.index > cache.last.index {
            return Err(StorageError::InvalidRequest(format!(
                "cannot compact to {point}: a snapshot must be newer than the stored one ({}) and cover a stored entry (last {})",
                cache.snapshot, cache.last
            )));
        }
        let stored = self.term_at(&cache, point.index)?;
        if stored != Some(point.term) {
            return Err(StorageError::InvalidRequest(format!(
                "cannot compact to {point}: the stored entry at index {} has term {stored:?}",
                point.index
            )));
        }
        let ops = snapshot_ops(snapshot)?;
        self.commit_durable(ops, Cache { snapshot: point, ..cache })
    }
}

impl<S: RecordStore> Storage for Engine<S> {
    fn load(&mut self) -> Result<LoadedState, StorageError> {
        self.cache = None;
        let (loaded, cache) = recovery::recover(&mut self.store)?;
        self.cache = Some(cache);
        // Recovery deleted every covered entry a crash left behind.
        self.purged_through = cache.snapshot.index;
        Ok(loaded)
    }

    fn save_hard_state(&mut self, hard_state: HardState) -> Result<(), StorageError> {
        let cache = self.cache()?;
        let record = codec::encode_hard_state(&hard_state).map_err(|e| too_large("the hard state".into(), e))?;
        self.commit_durable(vec![Op::Put(Space::State, HARD_STATE_KEY.to_vec(), record)], cache)
    }

    fn append(&mut self, write: &LogWrite) -> Result<(), StorageError> {
        self.do_append(write)
    }

    fn sync(&mut self) -> Result<LogId, StorageError> {
        let cache = self.cache()?;
        if cache.unsynced {
            self.commit_durable(Vec::new(), cache)?;
        }
        Ok(cache.last)
    }

    fn install_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), StorageError> {
        self.do_install(snapshot)
    }

    fn compact(&mut self, snapshot: &Snapshot) -> Result<(), StorageError> {
        self.do_compact(snapshot)
    }

    fn last_log_id(&self) -> LogId {
        self.cache.map(|c| c.last).unwrap_or_default()
    }

    fn has_unsynced_writes(&self) -> bool {
        self.cache.is_some_and(|c| c.unsynced)
    }
}

/// Implements [`Storage`] for a newtype around an [`Engine`] by delegation.
macro_rules! delegate_storage {
    ($outer:ty) => {
        impl $crate::storage::Storage for $outer {
            fn load(&mut self) -> Result<$crate::storage::LoadedState, $crate::storage::StorageError> {
                self.engine.load()
            }
            fn save_hard_state(
                &mut self,
                hard_state: keel_core::HardState,
            ) -> Result<(), $crate::storage::StorageError> {
                self.engine.save_hard_state(hard_state)
            }
            fn append(&mut self, write: &keel_core::LogWrite) -> Result<(), $crate::storage::StorageError> {
                self.engine.append(write)
            }
            fn sync(&mut self) -> Result<keel_core::LogId, $crate::storage::StorageError> {
                self.engine.sync()
            }
            fn install_snapshot(
                &mut self,
                snapshot: &keel_core::Snapshot,
            ) -> Result<(), $crate::storage::StorageError> {
                self.engine.install_snapshot(snapshot)
            }
            fn compact(&mut self, snapshot: &keel_core::Snapshot) -> Result<(), $crate::storage::StorageError> {
                self.engine.compact(snapshot)
            }
            fn last_log_id(&self) -> keel_core::LogId {
                self.engine.last_log_id()
            }
            fn has_unsynced_writes(&self) -> bool {
                self.engine.has_unsynced_writes()
            }
        }
    };
}
pub(crate) use delegate_storage;
