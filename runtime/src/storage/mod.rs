//! Durable consensus state of one node: the [`Storage`] trait, its two backends and the record
//! codec they share.
//!
//! * `FjallStorage` (not under `--cfg madsim`): production storage on fjall, an LSM-tree with a
//!   write-ahead journal. A write is durable once fjall reports `PersistMode::SyncAll` done.
//! * [`MemoryStorage`]: a simulated disk that models sync and crash exactly and injects disk
//!   faults deterministically (lost or torn unsynced writes, bit flips, slow syncs). It runs in
//!   plain builds and under `--cfg madsim`.
//!
//! Both store the same [`codec`] records through one small internal key-value interface, so the
//! Raft logic (ordering, group commit, snapshot installation, compaction) and recovery (checksum
//! verification, torn-tail repair, corruption reports) are written and tested once.
//!
//! # Durable log mark
//!
//! Every sync also records the highest log index it made durable (the *log mark*). Recovery uses
//! it to tell a torn write from corruption: a bad record above the mark was never synced, so it
//! is the tail a crash left behind and is truncated with a warning; a bad or missing record at or
//! below the mark was synced (and may have been acknowledged to a leader), so `load` refuses to
//! start rather than silently lose it.

pub mod codec;
mod engine;
#[cfg(not(madsim))]
mod fjall;
pub mod memory;
mod records;
mod recovery;
#[cfg(test)]
mod tests;

use keel_core::{Entry, HardState, Index, LogId, LogWrite, RecoveredState, Snapshot};

#[cfg(not(madsim))]
pub use self::fjall::FjallStorage;
pub use self::memory::{CrashFault, DiskStats, MemoryDisk, MemoryStorage, RecordRef};
pub use codec::CodecError;

/// What an operator must do when the node's durable state cannot be trusted.
const REBUILD: &str = "stop the node, move its data directory aside for diagnosis, and re-add the node to the \
                       cluster as a learner so that it catches up from the leader";

/// Why a storage operation failed. Every message says what is wrong and what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The storage engine or the operating system failed (I/O error, full disk, lock held).
    #[error("storage failed while {action}: {message}; check the disk (free space, permissions, hardware errors) and that no other process uses the data directory, then restart the node")]
    Io {
        /// What the storage was doing.
        action: &'static str,
        /// The underlying error.
        message: String,
    },
    /// A log entry is unreadable, and it is not a torn tail: it was synced, or intact entries
    /// follow it.
    #[error("log entry {index} is corrupt ({reason}); it is not a torn write because {why}; {}", REBUILD)]
    CorruptEntry {
        /// Index of the first bad entry.
        index: Index,
        /// What is wrong with its bytes.
        reason: String,
        /// Why it cannot be truncated as a torn tail.
        why: String,
    },
    /// The log has a hole, or ends before entries a sync reported durable.
    #[error("log entry {index} is missing ({reason}); {}", REBUILD)]
    MissingEntry {
        /// Index of the first missing entry.
        index: Index,
        /// Where it should have been.
        reason: String,
    },
    /// A non-log record (hard state, snapshot meta or data, log mark) or a log key is unreadable.
    #[error("the {record} record is corrupt ({reason}); {}", REBUILD)]
    CorruptRecord {
        /// Which record.
        record: String,
        /// What is wrong with its bytes.
        reason: String,
    },
    /// A record was written by a newer record format than this build reads.
    #[error("the {record} record uses format version {version}, which this build cannot read (it reads version {}); run a Keel build that supports it and keep the data directory as it is", codec::FORMAT_VERSION)]
    UnsupportedVersion {
        /// Which record.
        record: String,
        /// The version found.
        version: u8,
    },
    /// Records are individually intact but contradict each other.
    #[error("the stored state is inconsistent: {0}; {rebuild}", rebuild = REBUILD)]
    Inconsistent(String),
    /// A write was attempted before `load`, or after a failed write left the cached state unknown.
    #[error("storage is not loaded (it was just opened, or an earlier write failed); call load() before writing")]
    NotLoaded,
    /// The simulated disk crashed after this storage was opened on it.
    #[error(
        "the simulated disk crashed after this storage was opened; open a new MemoryStorage on the disk and load it"
    )]
    Crashed,
    /// The caller asked for something the contract forbids (a bug in the caller).
    #[error("invalid storage request: {0}; this is a bug in the caller of the storage")]
    InvalidRequest(String),
    /// A value does not fit in one record.
    #[error("cannot store {what}: {reason}; lower the configured entry or snapshot size limits")]
    TooLarge {
        /// What was being stored.
        what: String,
        /// The codec's explanation.
        reason: String,
    },
}

/// The torn tail that `load` truncated: records above the durable log mark that a crash left
/// half-written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TailRepair {
    /// First log index removed; every stored record from it on was removed.
    pub first_index: Index,
    /// Number of records removed.
    pub records: u64,
    /// What was wrong with the first removed record.
    pub reason: String,
}

/// Everything recovered from disk by [`Storage::load`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadedState {
    /// Term and vote as last synced ([`HardState::default`] on a new disk).
    pub hard_state: HardState,
    /// The latest snapshot with its data, if one was ever stored.
    pub snapshot: Option<Snapshot>,
    /// Durable log entries following the snapshot (from index 1 without one), contiguous.
    pub entries: Vec<Entry>,
    /// The applied index the caller should start from: the snapshot's index (0 without one). The
    /// state machine is restored from the snapshot data; committed entries after it are handed
    /// out again by the core.
    pub applied: Index,
    /// The torn tail truncated during this load, if any (already logged as a warning).
    pub repaired_tail: Option<TailRepair>,
}

impl LoadedState {
    /// True when the disk held nothing: a node that never started (bootstrap it or let it join).
    pub fn is_empty(&self) -> bool {
        self.hard_state == HardState::default() && self.snapshot.is_none() && self.entries.is_empty()
    }

    /// The last log id recovered: the last entry, else the snapshot's last included entry.
    pub fn last_log_id(&self) -> LogId {
        self.entries
            .last()
            .map(|e| e.log_id)
            .or_else(|| self.snapshot.as_ref().map(|s| s.meta.last_included))
            .unwrap_or_default()
    }

    /// The state to build a `keel_core::RaftNode` from.
    pub fn into_recovered(self) -> RecoveredState {
        RecoveredState {
            hard_state: self.hard_state,
            snapshot: self.snapshot,
            entries: self.entries,
            applied: self.applied,
        }
    }
}

/// One node's durable consensus state: hard state, log, and latest snapshot.
///
/// # Correctness contract
///
/// Every implementation guarantees all of the following; the generic test suite checks each one
/// against both backends.
///
/// 1. **Load first.** [`load`](Storage::load) is called once after opening and before any write;
///    writes before it fail with [`StorageError::NotLoaded`], and so do writes after a write that
///    failed (the caller must `load` again, which re-reads the disk). `load` may be called again
///    at any time; it ends with a sync, so what it returns is durable.
/// 2. **Durability only through sync.** A log write is durable only after a later
///    [`sync`](Storage::sync) (or any other operation documented as syncing) returns `Ok`. A crash
///    may lose any write not yet synced, but never a synced one.
/// 3. **Order.** Writes take effect in the order issued. After a crash the disk holds every
///    synced write plus possibly a prefix of the unsynced ones, in order; never a later write
///    without an earlier one.
/// 4. **No holes.** The stored log is always contiguous: the entries after the snapshot's index
///    (after index 0 without a snapshot) up to the last entry, each present exactly once, with
///    terms that never decrease.
/// 5. **Log writes.** [`append`](Storage::append) deletes every stored entry at or after
///    `first_index`, then appends `entries` (which start at `first_index` and are contiguous).
///    `first_index` must lie after the snapshot and at most one past the last entry.
/// 6. **Group commit.** `append` only buffers; any number of appends share one `sync`, which
///    returns the log id of the last entry now durable: exactly what the caller passes to
///    `keel_core::RaftNode::persisted`. With nothing buffered, `sync` does no I/O.
/// 7. **Hard state.** [`save_hard_state`](Storage::save_hard_state) is durable on return (and,
///    since the journal is ordered, so is every log write issued before it).
/// 8. **Snapshot installation** ([`install_snapshot`](Storage::install_snapshot), a snapshot
///    received from the leader) is atomic and durable on return: either the old state or the new
///    one survives a crash. Like `RaftLog::reset_to_snapshot` in keel-core, it keeps the entries
///    after the snapshot's index only if the stored log holds the snapshot's last included entry
///    (same term at that index, or the same point as the stored snapshot); otherwise it drops the
///    whole log. The prefix up to the snapshot's index is always dropped (as for compaction).
/// 9. **Compaction** ([`compact`](Storage::compact), after `RaftNode::snapshot_taken`) stores the
///    snapshot's meta and data, atomically and durably, and drops every entry at or below its
///    index: from then on they are neither read nor loaded. The snapshot must be newer than the
///    stored one and cover a stored entry of the same term. (The engine deletes dropped entries
///    from disk a slice per later commit, so that one compaction does not hold up log writes;
///    `load` deletes any left over.)
/// 10. **Recovery.** `load` verifies the checksum of every record. Bad records above the durable
///     log mark with no intact entry after them (a torn tail) are truncated with a warning and
///     reported in [`LoadedState::repaired_tail`]. Any other damage (a bad entry that was synced
///     or is followed by intact ones, a hole, a bad hard state, snapshot or mark, contradicting
///     records) makes `load` fail with an error naming the record and telling the operator what
///     to do. Nothing read from disk can panic.
pub trait Storage {
    /// Recovers and verifies everything on disk, repairs a torn tail, syncs, and returns the
    /// state to build `keel_core::RecoveredState` from (see [`LoadedState::into_recovered`]).
    fn load(&mut self) -> Result<LoadedState, StorageError>;

    /// Writes `hard_state` and syncs it (and every earlier write) before returning.
    fn save_hard_state(&mut self, hard_state: HardState) -> Result<(), StorageError>;

    /// Buffers a log write: deletes entries from `write.first_index` on, then appends
    /// `write.entries`. Not durable until the next [`sync`](Storage::sync).
    fn append(&mut self, write: &LogWrite) -> Result<(), StorageError>;

    /// Makes every write issued so far durable with one sync, and returns the log id of the last
    /// durable entry (the snapshot's last included entry when the log is empty).
    fn sync(&mut self) -> Result<LogId, StorageError>;

    /// Installs a snapshot received from the leader, atomically and durably (contract item 8).
    fn install_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), StorageError>;

    /// Stores a snapshot the application took, atomically and durably, and drops the entries it
    /// covers (contract item 9).
    fn compact(&mut self, snapshot: &Snapshot) -> Result<(), StorageError>;

    /// The log id of the last entry written, synced or not (the snapshot point when empty).
    fn last_log_id(&self) -> LogId;

    /// True when some log write has not been synced yet.
    fn has_unsynced_writes(&self) -> bool;

    /// Virtual time a simulated disk takes per group of operations (a slow disk). Under
    /// `--cfg madsim` the storage worker waits this long before carrying out each group, so
    /// the node's syncs, and its acknowledgements, come that much later. Real disks take their
    /// time themselves: zero.
    fn sync_delay(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }
}
