//! A slow disk for the madsim simulation: [`SlowStorage`] is a `MemoryStorage` whose every group
//! of operations takes a delay the simulation sets and changes at any time ([`DiskSpeed`]); the
//! storage worker waits that long in virtual time (`Storage::sync_delay`). Everything else,
//! crash semantics included, is the `MemoryStorage` contract unchanged.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use keel_core::{HardState, LogId, LogWrite, Snapshot};
use keel_runtime::storage::{LoadedState, MemoryStorage, Storage, StorageError};

/// The current delay of one node's disk, in milliseconds, shared between the simulation (which
/// sets it) and the node's storage (which reports it). Outlives the node, like its disk.
#[derive(Clone, Debug, Default)]
pub struct DiskSpeed(Arc<AtomicU64>);

impl DiskSpeed {
    /// Makes every later group of operations take `delay_ms` (0: a fast disk).
    pub fn set_delay_ms(&self, delay_ms: u64) {
        self.0.store(delay_ms, Ordering::Relaxed);
    }

    /// The current delay in milliseconds.
    pub fn delay_ms(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A `MemoryStorage` on a disk as slow as its [`DiskSpeed`] says.
#[derive(Debug)]
pub struct SlowStorage {
    inner: MemoryStorage,
    speed: DiskSpeed,
}

impl SlowStorage {
    /// Wraps `inner`, slowed down by `speed`.
    pub fn new(inner: MemoryStorage, speed: DiskSpeed) -> Self {
        Self { inner, speed }
    }
}

impl Storage for SlowStorage {
    fn load(&mut self) -> Result<LoadedState, StorageError> {
        self.inner.load()
    }

    fn save_hard_state(&mut self, hard_state: HardState) -> Result<(), StorageError> {
        self.inner.save_hard_state(hard_state)
    }

    fn append(&mut self, write: &LogWrite) -> Result<(), StorageError> {
        self.inner.append(write)
    }

    fn sync(&mut self) -> Result<LogId, StorageError> {
        self.inner.sync()
    }

    fn install_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), StorageError> {
        self.inner.install_snapshot(snapshot)
    }

    fn compact(&mut self, snapshot: &Snapshot) -> Result<(), StorageError> {
        self.inner.compact(snapshot)
    }

    fn last_log_id(&self) -> LogId {
        self.inner.last_log_id()
    }

    fn has_unsynced_writes(&self) -> bool {
        self.inner.has_unsynced_writes()
    }

    fn sync_delay(&self) -> Duration {
        Duration::from_millis(self.speed.delay_ms())
    }
}
