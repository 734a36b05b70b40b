//! [`FjallStorage`]: production storage on fjall 3, an LSM-tree with a write-ahead journal.
//!
//! One fjall database per node, with three keyspaces (`log`, `state`, `snapshot`; see
//! `records.rs` for the keys). Every batch of records is one fjall `OwnedWriteBatch`, atomic
//! across keyspaces. The database is opened with `manual_journal_persist(true)`, so committing a
//! batch only appends it to the journal buffer; a write is durable only once
//! `Database::persist(PersistMode::SyncAll)` (fsync) has returned, which is what `sync`, hard-state
//! writes, snapshot installation, compaction and `load` do. fjall's journal recovery drops a torn
//! last batch, so after a crash the database holds a prefix of the committed batches.
//!
//! fjall starts OS worker threads, which madsim forbids: this module is compiled only without
//! `--cfg madsim`; the simulator uses `MemoryStorage`.

use std::path::{Path, PathBuf};

use ::fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};

use super::engine::{delegate_storage, Engine};
use super::records::{Op, RecordStore, Space};
use super::StorageError;

fn io_error(action: &'static str, error: ::fjall::Error) -> StorageError {
    let message = match error {
        ::fjall::Error::Locked => "the data directory is locked by another process".to_owned(),
        ::fjall::Error::Poisoned => {
            "an earlier fsync failed, so the database refuses writes (restart the node to recover)".to_owned()
        }
        other => format!("{other:?}"),
    };
    StorageError::Io { action, message }
}

/// The [`RecordStore`] over one fjall database.
pub(crate) struct FjallRecords {
    /// Keyspaces in [`Space::ALL`] order.
    keyspaces: [Keyspace; 3],
    /// Kept last so that it is dropped after the keyspaces.
    db: Database,
}

impl std::fmt::Debug for FjallRecords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FjallRecords").finish_non_exhaustive()
    }
}

impl FjallRecords {
    fn open(path: &Path) -> Result<Self, StorageError> {
        let db = Database::builder(path)
            .manual_journal_persist(true)
            .open()
            .map_err(|e| io_error("opening the database", e))?;
        let open = |space: Space| {
            db.keyspace(space.name(), KeyspaceCreateOptions::default).map_err(|e| io_error("opening a keyspace", e))
        };
        let keyspaces = [open(Space::Log)?, open(Space::State)?, open(Space::Snapshot)?];
        Ok(Self { keyspaces, db })
    }

    fn keyspace(&self, space: Space) -> &Keyspace {
        &self.keyspaces[space.slot()]
    }
}

impl RecordStore for FjallRecords {
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        let value = self.keyspace(space).get(key).map_err(|e| io_error("reading a record", e))?;
        Ok(value.map(|v| v.to_vec()))
    }

    fn scan(&self, space: Space, visit: &mut dyn FnMut(&[u8], &[u8])) -> Result<(), StorageError> {
        for guard in self.keyspace(space).iter() {
            let (key, value) = guard.into_inner().map_err(|e| io_error("scanning records", e))?;
            visit(&key, &value);
        }
        Ok(())
    }

    fn commit(&mut self, ops: Vec<Op>, durable: bool) -> Result<(), StorageError> {
        if !ops.is_empty() {
            let mut batch = self.db.batch();
            for op in ops {
                match op {
                    Op::Put(space, key, value) => batch.insert(self.keyspace(space), key, value),
                    Op::Delete(space, key) => batch.remove(self.keyspace(space), key),
                }
            }
            batch.commit().map_err(|e| io_error("writing a batch", e))?;
        }
        if durable {
            self.db.persist(PersistMode::SyncAll).map_err(|e| io_error("syncing the journal", e))?;
        }
        Ok(())
    }
}

/// Durable storage on fjall in one data directory. See the [`Storage`](super::Storage) contract.
#[derive(Debug)]
pub struct FjallStorage {
    engine: Engine<FjallRecords>,
    path: PathBuf,
}

impl FjallStorage {
    /// Opens (or creates) the storage in directory `path`. Call `load` before writing.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StorageError> {
        let path = path.as_ref().to_path_buf();
        let records = FjallRecords::open(&path)?;
        Ok(Self { engine: Engine::new(records), path })
    }

    /// The data directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The engine, for tests that write raw records.
    #[cfg(test)]
    pub(crate) fn engine_mut(&mut self) -> &mut Engine<FjallRecords> {
        &mut self.engine
    }
}

delegate_storage!(FjallStorage);

#[cfg(test)]
mod tests {
    use super::FjallStorage;
    use crate::storage::{Storage, StorageError};

    #[test]
    fn a_data_directory_in_use_is_refused_with_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut first = FjallStorage::open(dir.path()).unwrap();
        first.load().unwrap();
        assert_eq!(first.path(), dir.path());
        let error = FjallStorage::open(dir.path()).unwrap_err();
        assert!(matches!(error, StorageError::Io { .. }), "{error}");
        assert!(error.to_string().contains("locked by another process"), "{error}");
    }
}
