//! Model-based property test: random log writes, syncs, hard states, snapshots and crashes
//! (with every crash fault) applied to `MemoryStorage` and to a simple model of what the disk
//! must hold; after every crash or restart, `load` must return exactly the model's state.

use bytes::Bytes;
use keel_core::{Entry, HardState, Index, LogId, LogWrite, Membership, Snapshot, SnapshotMeta, Term};
use proptest::prelude::*;

use super::{entry, write};
use crate::storage::{CrashFault, LoadedState, MemoryStorage, Storage};

/// One step of a schedule.
#[derive(Clone, Debug)]
enum Step {
    /// Start a new term (durable hard state), voting or not.
    NewTerm { vote: bool },
    /// A log write from `back` entries before the end, of `count` entries of the current term.
    Append { back: u8, count: u8 },
    /// Sync.
    Sync,
    /// Compact to `back` entries before the end.
    Compact { back: u8 },
    /// Install a snapshot `offset` entries from the end, matching the stored term or not.
    Install { offset: i8, matching: bool },
    /// Crash with this fault, reopen and load.
    Crash(CrashFault),
    /// Clean restart: reopen and load.
    Reload,
}

fn arb_step() -> impl Strategy<Value = Step> {
    let fault = prop_oneof![
        Just(CrashFault::LoseUnsynced),
        (0usize..4).prop_map(|batches| CrashFault::KeepUnsynced { batches }),
        (0usize..4, 0usize..40).prop_map(|(batches, keep_bytes)| CrashFault::TearUnsynced { batches, keep_bytes }),
    ];
    prop_oneof![
        1 => any::<bool>().prop_map(|vote| Step::NewTerm { vote }),
        6 => (0u8..4, 0u8..4).prop_map(|(back, count)| Step::Append { back, count }),
        3 => Just(Step::Sync),
        1 => (0u8..6).prop_map(|back| Step::Compact { back }),
        1 => (-3i8..4, any::<bool>()).prop_map(|(offset, matching)| Step::Install { offset, matching }),
        2 => fault.prop_map(Step::Crash),
        1 => Just(Step::Reload),
    ]
}

/// What a disk holds.
#[derive(Clone, Debug, Default, PartialEq)]
struct Image {
    hard_state: HardState,
    snapshot: Option<Snapshot>,
    log: Vec<Entry>,
}

impl Image {
    fn base(&self) -> LogId {
        self.snapshot.as_ref().map(|s| s.meta.last_included).unwrap_or_default()
    }

    fn last(&self) -> LogId {
        self.log.last().map_or(self.base(), |e| e.log_id)
    }

    fn term_at(&self, index: Index) -> Option<Term> {
        if index == self.base().index {
            return Some(self.base().term);
        }
        self.log.iter().find(|e| e.log_id.index == index).map(|e| e.log_id.term)
    }

    fn apply(&mut self, write: &LogWrite) {
        self.log.retain(|e| e.log_id.index < write.first_index);
        self.log.extend(write.entries.iter().cloned());
    }

    /// The write torn by a crash: all its operations but the last landed (see `memory.rs`).
    fn apply_torn(&mut self, write: &LogWrite) {
        match write.entries.split_last() {
            Some((_, landed)) => self.apply(&LogWrite { first_index: write.first_index, entries: landed.to_vec() }),
            None => self.log.retain(|e| e.log_id.index <= write.first_index),
        }
    }

    /// Mirrors `RaftLog::reset_to_snapshot`.
    fn install(&mut self, snapshot: Snapshot) {
        let point = snapshot.meta.last_included;
        if point.index >= self.base().index && self.term_at(point.index) == Some(point.term) {
            self.log.retain(|e| e.log_id.index > point.index);
        } else {
            self.log.clear();
        }
        self.snapshot = Some(snapshot);
    }
}

/// The model: the durable image, the unsynced writes, and what reads see.
struct Model {
    durable: Image,
    unsynced: Vec<LogWrite>,
    visible: Image,
}

impl Model {
    fn make_durable(&mut self) {
        self.durable = self.visible.clone();
        self.unsynced.clear();
    }

    fn crash(&mut self, fault: CrashFault) {
        let (keep, tear) = match fault {
            CrashFault::LoseUnsynced => (0, false),
            CrashFault::KeepUnsynced { batches } => (batches, false),
            CrashFault::TearUnsynced { batches, .. } => (batches, true),
        };
        let mut writes = std::mem::take(&mut self.unsynced).into_iter();
        writes.by_ref().take(keep).for_each(|w| self.durable.apply(&w));
        if let (true, Some(torn)) = (tear, writes.next()) {
            self.durable.apply_torn(&torn);
        }
        self.visible = self.durable.clone();
    }
}

fn snapshot_at(point: LogId) -> Snapshot {
    let meta =
        SnapshotMeta { last_included: point, membership: Membership::with_voters([1, point.index as u32 % 5 + 1]) };
    Snapshot { meta, data: Bytes::from(format!("sm@{point}")) }
}

fn check_loaded(loaded: &LoadedState, image: &Image) -> Result<(), TestCaseError> {
    prop_assert_eq!(loaded.hard_state, image.hard_state);
    prop_assert_eq!(&loaded.snapshot, &image.snapshot);
    prop_assert_eq!(&loaded.entries, &image.log);
    prop_assert_eq!(loaded.applied, image.base().index);
    Ok(())
}

/// Carries out one step on the storage and the model. Returns the (possibly reopened) storage.
fn step(mut storage: MemoryStorage, model: &mut Model, step: &Step) -> Result<MemoryStorage, TestCaseError> {
    let last = model.visible.last();
    let term = model.visible.hard_state.term;
    match step {
        Step::NewTerm { vote } => {
            let hard_state = HardState { term: term + 1, voted_for: vote.then_some(1) };
            storage.save_hard_state(hard_state).unwrap();
            model.visible.hard_state = hard_state;
            model.make_durable();
        }
        Step::Append { back, count } => {
            let first = (last.index + 1).saturating_sub(Index::from(*back)).max(model.visible.base().index + 1);
            let log_write = write(first, (first..first + Index::from(*count)).map(|i| entry(term, i)).collect());
            storage.append(&log_write).unwrap();
            if first <= last.index || !log_write.entries.is_empty() {
                model.visible.apply(&log_write);
                model.unsynced.push(log_write);
            }
        }
        Step::Sync => {
            prop_assert_eq!(storage.sync().unwrap(), last);
            model.make_durable();
        }
        Step::Compact { back } => {
            let index = last.index.saturating_sub(Index::from(*back));
            if index > model.visible.base().index {
                let point = LogId::new(model.visible.term_at(index).unwrap(), index);
                storage.compact(&snapshot_at(point)).unwrap();
                model.visible.log.retain(|e| e.log_id.index > index);
                model.visible.snapshot = Some(snapshot_at(point));
                model.make_durable();
            }
        }
        Step::Install { offset, matching } => {
            let index = last.index.saturating_add_signed(i64::from(*offset));
            let stored = model.visible.term_at(index).filter(|_| *matching);
            let point = LogId::new(stored.unwrap_or(term), index);
            storage.install_snapshot(&snapshot_at(point)).unwrap();
            model.visible.install(snapshot_at(point));
            model.make_durable();
        }
        Step::Crash(fault) => {
            let disk = storage.disk();
            disk.crash(*fault);
            model.crash(*fault);
            storage = MemoryStorage::open(disk);
            check_loaded(&storage.load().unwrap(), &model.visible)?;
            model.make_durable();
        }
        Step::Reload => {
            storage = MemoryStorage::open(storage.disk());
            check_loaded(&storage.load().unwrap(), &model.visible)?;
            model.make_durable();
        }
    }
    prop_assert_eq!(storage.last_log_id(), model.visible.last());
    Ok(storage)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn memory_storage_matches_the_model_across_crashes(steps in proptest::collection::vec(arb_step(), 1..60)) {
        let mut storage = MemoryStorage::new();
        storage.load().unwrap();
        let mut model = Model { durable: Image::default(), unsynced: Vec::new(), visible: Image::default() };
        for s in &steps {
            storage = step(storage, &mut model, s)?;
        }
        storage.disk().crash(CrashFault::LoseUnsynced);
        model.crash(CrashFault::LoseUnsynced);
        check_loaded(&MemoryStorage::open(storage.disk()).load().unwrap(), &model.visible)?;
    }
}
