//! [`MemoryStorage`]: storage on a simulated disk ([`MemoryDisk`]) that models sync and crash
//! exactly and injects disk faults, deterministically.
//!
//! # The disk model
//!
//! The disk holds *durable* records and a queue of *unsynced* batches. Reads see both. A sync
//! (any durable commit) moves every unsynced batch, in order, to the durable records. A crash
//! ([`MemoryDisk::crash`]) keeps the durable records and, depending on the [`CrashFault`], none,
//! a prefix, or a prefix plus a torn part of the unsynced batches: exactly what a write-ahead
//! journal may leave behind. A synced write is never lost.
//!
//! Every fault is chosen by the caller, either explicitly or from a seed (through
//! `keel_core::Rng`), so a simulation replays byte for byte. The model uses no threads, no clocks
//! and no hash maps, so it runs under `--cfg madsim`.
//!
//! # Sharing across restarts
//!
//! A [`MemoryDisk`] is a cheap handle to shared state (clone it to keep it). A simulator keeps
//! one handle, gives a node `MemoryStorage::open(disk.clone())`, and when it kills the node calls
//! [`MemoryDisk::crash`] and opens a fresh storage on the same disk for the restarted node. A
//! storage opened before a crash refuses further use with [`StorageError::Crashed`].

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use keel_core::{Index, Rng};

use super::engine::{delegate_storage, Engine};
use super::records::{
    log_index, log_key, Op, RecordStore, Space, HARD_STATE_KEY, LOG_MARK_KEY, SNAPSHOT_DATA_KEY, SNAPSHOT_META_KEY,
};
use super::StorageError;

/// A stored record, as named by fault injection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum RecordRef {
    /// The log entry at this index.
    LogEntry(Index),
    /// The hard state.
    HardState,
    /// The snapshot metadata.
    SnapshotMeta,
    /// The snapshot data.
    SnapshotData,
    /// The durable log mark.
    LogMark,
}

impl RecordRef {
    fn location(self) -> (Space, Vec<u8>) {
        match self {
            Self::LogEntry(index) => (Space::Log, log_key(index)),
            Self::HardState => (Space::State, HARD_STATE_KEY.to_vec()),
            Self::SnapshotMeta => (Space::State, SNAPSHOT_META_KEY.to_vec()),
            Self::SnapshotData => (Space::Snapshot, SNAPSHOT_DATA_KEY.to_vec()),
            Self::LogMark => (Space::State, LOG_MARK_KEY.to_vec()),
        }
    }

    fn from_location(space: Space, key: &[u8]) -> Option<Self> {
        match space {
            Space::Log => log_index(key).map(Self::LogEntry),
            Space::Snapshot => (key == SNAPSHOT_DATA_KEY).then_some(Self::SnapshotData),
            Space::State if key == HARD_STATE_KEY => Some(Self::HardState),
            Space::State if key == SNAPSHOT_META_KEY => Some(Self::SnapshotMeta),
            Space::State if key == LOG_MARK_KEY => Some(Self::LogMark),
            Space::State => None,
        }
    }
}

/// What a crash does to the writes that were not synced yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashFault {
    /// Every unsynced write is lost.
    LoseUnsynced,
    /// The oldest `batches` unsynced writes reached the disk; the rest are lost.
    KeepUnsynced {
        /// How many unsynced batches survive (clamped to how many there are).
        batches: usize,
    },
    /// The oldest `batches` unsynced writes reached the disk, and the next one only in part: all
    /// of its operations but the last landed, and its last record was cut to `keep_bytes` bytes
    /// (at most one byte short of whole), or, if that operation was a delete, it did not happen.
    TearUnsynced {
        /// How many unsynced batches survive whole (clamped).
        batches: usize,
        /// How many bytes of the torn record survive.
        keep_bytes: usize,
    },
}

/// Counters the simulator reads, for example to charge virtual time for syncs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DiskStats {
    /// Batches committed (durable or not).
    pub commits: u64,
    /// Syncs performed.
    pub syncs: u64,
    /// Batches made durable by those syncs.
    pub synced_batches: u64,
    /// Record bytes made durable by those syncs.
    pub synced_bytes: u64,
    /// Sum of the slow-sync delay (see [`MemoryDisk::set_sync_delay`]) over all syncs.
    pub sync_delay: u64,
    /// Crashes.
    pub crashes: u64,
    /// Bits flipped by fault injection.
    pub bit_flips: u64,
}

type Records = BTreeMap<Vec<u8>, Vec<u8>>;

#[derive(Clone, Debug, Default)]
struct DiskState {
    durable: [Records; 3],
    unsynced: Vec<Vec<Op>>,
    generation: u64,
    stats: DiskStats,
    sync_delay: u64,
}

fn apply(records: &mut [Records; 3], op: Op) {
    match op {
        Op::Put(space, key, value) => {
            records[space.slot()].insert(key, value);
        }
        Op::Delete(space, key) => {
            records[space.slot()].remove(&key);
        }
    }
}

fn op_bytes(op: &Op) -> u64 {
    match op {
        Op::Put(_, key, value) => (key.len() + value.len()) as u64,
        Op::Delete(_, key) => key.len() as u64,
    }
}

impl DiskState {
    fn sync(&mut self) {
        let batches = std::mem::take(&mut self.unsynced);
        self.stats.syncs += 1;
        self.stats.synced_batches += batches.len() as u64;
        self.stats.sync_delay += self.sync_delay;
        for op in batches.into_iter().flatten() {
            self.stats.synced_bytes += op_bytes(&op);
            apply(&mut self.durable, op);
        }
    }

    fn crash(&mut self, fault: CrashFault) {
        let unsynced = std::mem::take(&mut self.unsynced);
        let (keep, tear) = match fault {
            CrashFault::LoseUnsynced => (0, None),
            CrashFault::KeepUnsynced { batches } => (batches, None),
            CrashFault::TearUnsynced { batches, keep_bytes } => (batches, Some(keep_bytes)),
        };
        let mut batches = unsynced.into_iter();
        for op in batches.by_ref().take(keep).flatten() {
            apply(&mut self.durable, op);
        }
        if let (Some(keep_bytes), Some(mut torn)) = (tear, batches.next()) {
            let last = torn.pop();
            for op in torn {
                apply(&mut self.durable, op);
            }
            if let Some(Op::Put(space, key, mut value)) = last {
                value.truncate(keep_bytes.min(value.len().saturating_sub(1)));
                apply(&mut self.durable, Op::Put(space, key, value));
            }
        }
        self.generation += 1;
        self.stats.crashes += 1;
    }

    /// The records of `space` as reads see them: durable, then every unsynced batch in order.
    fn visible(&self, space: Space) -> Records {
        let mut records = self.durable[space.slot()].clone();
        for op in self.unsynced.iter().flatten() {
            match op {
                Op::Put(s, key, value) if *s == space => {
                    records.insert(key.clone(), value.clone());
                }
                Op::Delete(s, key) if *s == space => {
                    records.remove(key);
                }
                _ => {}
            }
        }
        records
    }

    fn durable_records(&self) -> Vec<RecordRef> {
        Space::ALL
            .iter()
            .flat_map(|space| self.durable[space.slot()].keys().filter_map(|k| RecordRef::from_location(*space, k)))
            .collect()
    }
}

/// A simulated disk: a shared handle (clones see the same disk) with fault-injection hooks.
#[derive(Clone, Debug, Default)]
pub struct MemoryDisk {
    state: Arc<Mutex<DiskState>>,
}

impl MemoryDisk {
    /// An empty disk.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, DiskState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// An independent copy of this disk's current contents (to fork a simulation).
    pub fn deep_copy(&self) -> Self {
        Self { state: Arc::new(Mutex::new(self.lock().clone())) }
    }

    /// Crashes the disk: unsynced writes are lost, kept or torn as `fault` says; synced ones
    /// survive. Every storage opened on this disk before the crash stops working.
    pub fn crash(&self, fault: CrashFault) {
        self.lock().crash(fault);
    }

    /// Crashes the disk with a fault chosen from `seed`, and returns the fault (for the trace).
    pub fn crash_random(&self, seed: u64) -> CrashFault {
        let mut rng = Rng::new(seed);
        let pending = self.unsynced_batches() as u64;
        let batches = rng.range(0, pending + 1) as usize;
        let fault = match rng.range(0, 3) {
            0 => CrashFault::LoseUnsynced,
            1 => CrashFault::KeepUnsynced { batches },
            _ => CrashFault::TearUnsynced { batches, keep_bytes: rng.range(0, 64) as usize },
        };
        self.crash(fault);
        fault
    }

    /// Number of committed batches not yet synced.
    pub fn unsynced_batches(&self) -> usize {
        self.lock().unsynced.len()
    }

    /// Every durable record, in a fixed order (log entries by index, then state, then snapshot).
    pub fn records(&self) -> Vec<RecordRef> {
        self.lock().durable_records()
    }

    /// Length in bytes of the durable copy of `record`, if it exists.
    pub fn record_len(&self, record: RecordRef) -> Option<usize> {
        let (space, key) = record.location();
        self.lock().durable[space.slot()].get(&key).map(Vec::len)
    }

    /// Flips bit `bit` (modulo the record's length in bits) of the durable copy of `record`.
    /// Returns false when no such durable record exists.
    pub fn flip_bit(&self, record: RecordRef, bit: u64) -> bool {
        let (space, key) = record.location();
        let mut state = self.lock();
        let Some(value) = state.durable[space.slot()].get_mut(&key) else { return false };
        let bits = value.len() as u64 * 8;
        if bits == 0 {
            return false;
        }
        let bit = bit % bits;
        value[(bit / 8) as usize] ^= 1 << (bit % 8);
        state.stats.bit_flips += 1;
        true
    }

    /// Flips one bit of one durable record, both chosen from `seed`; returns which, or `None` on
    /// an empty disk.
    pub fn flip_random_bit(&self, seed: u64) -> Option<(RecordRef, u64)> {
        let mut rng = Rng::new(seed);
        let records = self.records();
        let record = *records.get(rng.range(0, records.len() as u64) as usize)?;
        let bit = rng.next_u64();
        self.flip_bit(record, bit).then_some((record, bit))
    }

    /// Slow-sync hook: every later sync adds `delay` to [`DiskStats::sync_delay`], which the
    /// simulator turns into virtual time. Nothing sleeps.
    pub fn set_sync_delay(&self, delay: u64) {
        self.lock().sync_delay = delay;
    }

    /// The disk's counters.
    pub fn stats(&self) -> DiskStats {
        self.lock().stats
    }
}

/// The [`RecordStore`] of one storage opened on a [`MemoryDisk`].
#[derive(Debug)]
pub(crate) struct MemoryRecords {
    disk: MemoryDisk,
    generation: u64,
}

impl MemoryRecords {
    fn state(&self) -> Result<MutexGuard<'_, DiskState>, StorageError> {
        let state = self.disk.lock();
        if state.generation != self.generation {
            return Err(StorageError::Crashed);
        }
        Ok(state)
    }
}

impl RecordStore for MemoryRecords {
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        let state = self.state()?;
        for op in state.unsynced.iter().rev().flat_map(|batch| batch.iter().rev()) {
            match op {
                Op::Put(s, k, value) if *s == space && k == key => return Ok(Some(value.clone())),
                Op::Delete(s, k) if *s == space && k == key => return Ok(None),
                _ => {}
            }
        }
        Ok(state.durable[space.slot()].get(key).cloned())
    }

    fn scan(&self, space: Space, visit: &mut dyn FnMut(&[u8], &[u8])) -> Result<(), StorageError> {
        let records = self.state()?.visible(space);
        records.iter().for_each(|(key, value)| visit(key, value));
        Ok(())
    }

    fn commit(&mut self, ops: Vec<Op>, durable: bool) -> Result<(), StorageError> {
        let mut state = self.state()?;
        state.stats.commits += 1;
        if !ops.is_empty() {
            state.unsynced.push(ops);
        }
        if durable {
            state.sync();
        }
        Ok(())
    }
}

/// Storage on a simulated [`MemoryDisk`]; see the module docs for the disk model.
#[derive(Debug)]
pub struct MemoryStorage {
    engine: Engine<MemoryRecords>,
    disk: MemoryDisk,
}

impl MemoryStorage {
    /// Storage on a new, empty disk.
    pub fn new() -> Self {
        Self::open(MemoryDisk::new())
    }

    /// Storage on `disk` (a restarted node reopens its disk this way). Call `load` first.
    pub fn open(disk: MemoryDisk) -> Self {
        let generation = disk.lock().generation;
        let records = MemoryRecords { disk: disk.clone(), generation };
        Self { engine: Engine::new(records), disk }
    }

    /// A handle to this storage's disk, for fault injection and reopening.
    pub fn disk(&self) -> MemoryDisk {
        self.disk.clone()
    }

    /// The engine, for tests that write raw records.
    #[cfg(test)]
    pub(crate) fn engine_mut(&mut self) -> &mut Engine<MemoryRecords> {
        &mut self.engine
    }
}

impl Default for MemoryStorage {
    fn default() -> Self {
        Self::new()
    }
}

delegate_storage!(MemoryStorage);
