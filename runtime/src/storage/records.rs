//! The small key-value interface both backends implement ([`RecordStore`]), and the key layout.
//!
//! Everything Raft-specific (what to write, in which order, how to recover) lives above this
//! trait in `engine.rs` and `recovery.rs`, so it is written and tested once for both backends.
//!
//! # Key layout
//!
//! | space | key | value |
//! |---|---|---|
//! | `log` | log index, 8 bytes big-endian (so key order is index order) | entry record |
//! | `state` | `hard_state` | hard state record |
//! | `state` | `snapshot_meta` | snapshot meta record |
//! | `state` | `log_mark` | log mark record |
//! | `snapshot` | `data` | snapshot data record |

use keel_core::Index;

use super::StorageError;

/// A group of records: a keyspace in fjall, a map in the simulated disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Space {
    /// Log entries by index.
    Log,
    /// Hard state, snapshot meta and log mark.
    State,
    /// Snapshot data.
    Snapshot,
}

impl Space {
    /// Every space, in a fixed order.
    pub const ALL: [Space; 3] = [Space::Log, Space::State, Space::Snapshot];

    /// The keyspace name on disk.
    pub fn name(self) -> &'static str {
        match self {
            Self::Log => "log",
            Self::State => "state",
            Self::Snapshot => "snapshot",
        }
    }

    /// Position in [`Space::ALL`].
    pub fn slot(self) -> usize {
        match self {
            Self::Log => 0,
            Self::State => 1,
            Self::Snapshot => 2,
        }
    }
}

/// Key of the hard state record in [`Space::State`].
pub(crate) const HARD_STATE_KEY: &[u8] = b"hard_state";
/// Key of the snapshot meta record in [`Space::State`].
pub(crate) const SNAPSHOT_META_KEY: &[u8] = b"snapshot_meta";
/// Key of the log mark record in [`Space::State`].
pub(crate) const LOG_MARK_KEY: &[u8] = b"log_mark";
/// Key of the snapshot data record in [`Space::Snapshot`].
pub(crate) const SNAPSHOT_DATA_KEY: &[u8] = b"data";

/// The key of the log entry at `index`.
pub(crate) fn log_key(index: Index) -> Vec<u8> {
    index.to_be_bytes().to_vec()
}

/// The index a log key names, or `None` for a key of the wrong length.
pub(crate) fn log_index(key: &[u8]) -> Option<Index> {
    let bytes: [u8; 8] = key.try_into().ok()?;
    Some(Index::from_be_bytes(bytes))
}

/// One operation of an atomic batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    /// Store `value` under `key`.
    Put(Space, Vec<u8>, Vec<u8>),
    /// Remove `key`.
    Delete(Space, Vec<u8>),
}

/// A minimal ordered key-value store with explicit durability.
///
/// Contract, relied upon by recovery:
/// * `commit` applies a batch atomically and in order with respect to every other batch: after
///   a crash the store holds a prefix of the committed batches (the simulated disk may also tear
///   the first lost batch, see `memory.rs`).
/// * A batch is durable only once a `commit` with `durable = true` returns; that commit makes
///   every earlier batch durable too.
/// * Reads see every committed batch, durable or not.
pub(crate) trait RecordStore {
    /// The value stored under `key`.
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError>;
    /// Calls `visit` with every record of `space`, in ascending key order.
    fn scan(&self, space: Space, visit: &mut dyn FnMut(&[u8], &[u8])) -> Result<(), StorageError>;
    /// Applies `ops` atomically; when `durable`, syncs it and everything before it to disk.
    fn commit(&mut self, ops: Vec<Op>, durable: bool) -> Result<(), StorageError>;
}
