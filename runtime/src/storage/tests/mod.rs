//! Storage tests: the codec, the contract suite run against both backends, recovery from torn and
//! corrupt records, the simulated disk's faults, and a model-based property test.

mod codec;
mod contract;
mod faults;
mod model;
mod sim_disk;

use bytes::Bytes;
use keel_core::{
    Entry, EntryPayload, HardState, Index, LearnerKind, LogId, LogWrite, Membership, Snapshot, SnapshotMeta, Term,
};

use super::codec::encode_entry;
use super::records::{log_key, Op, RecordStore, Space};
use super::{MemoryStorage, Storage};

/// A command entry whose payload names its position.
pub(super) fn entry(term: Term, index: Index) -> Entry {
    Entry {
        log_id: LogId::new(term, index),
        payload: EntryPayload::Command(Bytes::from(format!("cmd {term}-{index}"))),
    }
}

/// Entries `from..=to` of one term.
pub(super) fn entries(term: Term, from: Index, to: Index) -> Vec<Entry> {
    (from..=to).map(|index| entry(term, index)).collect()
}

/// A log write.
pub(super) fn write(first_index: Index, entries: Vec<Entry>) -> LogWrite {
    LogWrite { first_index, entries }
}

/// A membership with every field populated: voters, outgoing voters, both learner kinds, addresses.
pub(super) fn full_membership() -> Membership {
    let mut membership = Membership::with_voters([1, 2, 3]);
    membership.voters_outgoing = [1, 2, 4].into_iter().collect();
    membership.learners.insert(5, LearnerKind::Promotable);
    membership.learners.insert(6, LearnerKind::ReadOnly);
    for id in [1, 2, 3, 4, 5, 6] {
        membership.addresses.insert(id, format!("10.0.0.{id}:7000"));
    }
    membership
}

/// A snapshot at `term`/`index` with the full membership and some data.
pub(super) fn snapshot(term: Term, index: Index) -> Snapshot {
    let meta = SnapshotMeta { last_included: LogId::new(term, index), membership: full_membership() };
    Snapshot { meta, data: Bytes::from(format!("state machine at {term}-{index}").repeat(3)) }
}

/// A backend the generic tests run against.
pub(super) trait Backend {
    /// The storage type.
    type S: Storage;
    /// The open storage.
    fn storage(&mut self) -> &mut Self::S;
    /// A clean restart: drops the storage and opens the same data again (not loaded).
    fn reopen(&mut self);
    /// Commits raw operations durably, bypassing the engine (to plant damage).
    fn raw(&mut self, ops: Vec<Op>);
    /// Reads a raw record.
    fn raw_get(&mut self, space: Space, key: &[u8]) -> Option<Vec<u8>>;
}

/// The simulated disk.
pub(super) struct MemoryBackend {
    storage: MemoryStorage,
}

impl MemoryBackend {
    pub fn new() -> Self {
        Self { storage: MemoryStorage::new() }
    }
}

impl Backend for MemoryBackend {
    type S = MemoryStorage;

    fn storage(&mut self) -> &mut MemoryStorage {
        &mut self.storage
    }

    fn reopen(&mut self) {
        self.storage = MemoryStorage::open(self.storage.disk());
    }

    fn raw(&mut self, ops: Vec<Op>) {
        self.storage.engine_mut().store_mut().commit(ops, true).expect("raw commit");
    }

    fn raw_get(&mut self, space: Space, key: &[u8]) -> Option<Vec<u8>> {
        self.storage.engine_mut().store_mut().get(space, key).expect("raw get")
    }
}

/// fjall in a temporary directory.
#[cfg(not(madsim))]
pub(super) struct FjallBackend {
    storage: Option<super::FjallStorage>,
    dir: tempfile::TempDir,
}

#[cfg(not(madsim))]
impl FjallBackend {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let storage = super::FjallStorage::open(dir.path()).expect("open fjall");
        Self { storage: Some(storage), dir }
    }

    fn open(&mut self) -> &mut super::FjallStorage {
        self.storage.as_mut().expect("storage is open")
    }
}

#[cfg(not(madsim))]
impl Backend for FjallBackend {
    type S = super::FjallStorage;

    fn storage(&mut self) -> &mut super::FjallStorage {
        self.open()
    }

    fn reopen(&mut self) {
        self.storage = None;
        self.storage = Some(super::FjallStorage::open(self.dir.path()).expect("reopen fjall"));
    }

    fn raw(&mut self, ops: Vec<Op>) {
        self.open().engine_mut().store_mut().commit(ops, true).expect("raw commit");
    }

    fn raw_get(&mut self, space: Space, key: &[u8]) -> Option<Vec<u8>> {
        self.open().engine_mut().store_mut().get(space, key).expect("raw get")
    }
}

/// Runs each named generic test `fn name<B: Backend>(backend: &mut B)` against both backends.
macro_rules! for_each_backend {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(#[test]
            fn $name() {
                super::$name(&mut $crate::storage::tests::MemoryBackend::new());
            })*
        }
        #[cfg(not(madsim))]
        mod fjall {
            $(#[test]
            fn $name() {
                super::$name(&mut $crate::storage::tests::FjallBackend::new());
            })*
        }
    };
}
pub(super) use for_each_backend;

/// Loads a fresh backend and writes the hard state of `term` and `entries` synced.
pub(super) fn seed_log<B: Backend>(backend: &mut B, term: Term, log: Vec<Entry>) {
    let storage = backend.storage();
    storage.load().expect("load");
    storage.save_hard_state(HardState { term, voted_for: Some(1) }).expect("hard state");
    let first = log.first().map_or(1, |e| e.log_id.index);
    storage.append(&write(first, log)).expect("append");
    storage.sync().expect("sync");
}

/// Reopens and loads, expecting success.
pub(super) fn reload<B: Backend>(backend: &mut B) -> super::LoadedState {
    backend.reopen();
    backend.storage().load().expect("load after reopen")
}

/// Reopens and loads, expecting an error.
pub(super) fn reload_err<B: Backend>(backend: &mut B) -> super::StorageError {
    backend.reopen();
    backend.storage().load().expect_err("load must refuse the damaged store")
}

/// The stored record for `entry`, as the engine writes it.
pub(super) fn entry_op(entry: &Entry) -> Op {
    Op::Put(Space::Log, log_key(entry.log_id.index), encode_entry(entry).expect("encode"))
}
