//! Fuzz target: storage recovery from damaged disk contents.
//!
//! A valid disk is written through the `Storage` trait (hard state, a snapshot, entries, some of
//! them synced and some not), then the fuzz input damages it: crashes that lose, keep or tear
//! unsynced writes, bit flips in any durable record. Loading must never panic: it either
//! refuses with an error, or returns a state that keeps recovery's promises (entries contiguous
//! after the snapshot, terms never decreasing and never above the hard state's term, every
//! synced entry still there unless an error was reported).

#![no_main]

use bytes::Bytes;
use keel_core::{Entry, EntryPayload, HardState, LogId, LogWrite, Membership, Snapshot, SnapshotMeta};
use keel_runtime::storage::{CrashFault, MemoryDisk, MemoryStorage, RecordRef, Storage};
use libfuzzer_sys::fuzz_target;

/// Entries written before the damage: enough for several records of each kind.
const ENTRIES: u64 = 12;

fn entry(index: u64, term: u64) -> Entry {
    Entry { log_id: LogId { term, index }, payload: EntryPayload::Command(Bytes::from(vec![index as u8; 8])) }
}

/// Writes the valid disk: entries 1..=ENTRIES in terms 1 and 2, synced up to `synced`, and a
/// snapshot at index 3.
fn write_disk(disk: &MemoryDisk, synced: u64) -> Option<()> {
    let mut storage = MemoryStorage::open(disk.clone());
    storage.load().ok()?;
    storage.save_hard_state(HardState { term: 2, voted_for: Some(1) }).ok()?;
    let entries = (1..=ENTRIES).map(|index| entry(index, if index <= 6 { 1 } else { 2 })).collect::<Vec<_>>();
    let (first, rest) = entries.split_at(synced as usize);
    storage.append(&LogWrite { first_index: 1, entries: first.to_vec() }).ok()?;
    storage.sync().ok()?;
    let meta = SnapshotMeta { last_included: LogId { term: 1, index: 3 }, membership: Membership::with_voters([1]) };
    storage.compact(&Snapshot { meta, data: Bytes::from_static(b"state") }).ok()?;
    storage.sync().ok()?;
    if let Some(next) = rest.first() {
        storage.append(&LogWrite { first_index: next.log_id.index, entries: rest.to_vec() }).ok()?;
    }
    Some(())
}

/// Applies the damage the fuzz input describes.
fn damage(disk: &MemoryDisk, input: &[u8]) {
    let mut bytes = input.iter().copied();
    let crash = bytes.next().unwrap_or(0);
    let batches = usize::from(bytes.next().unwrap_or(0) % 4);
    let fault = match crash % 3 {
        0 => CrashFault::LoseUnsynced,
        1 => CrashFault::KeepUnsynced { batches },
        _ => CrashFault::TearUnsynced { batches, keep_bytes: usize::from(bytes.next().unwrap_or(0)) },
    };
    disk.crash(fault);
    while let (Some(which), Some(bit)) = (bytes.next(), bytes.next()) {
        let records: Vec<RecordRef> = disk.records();
        if let Some(record) = records.get(usize::from(which) % records.len().max(1)) {
            disk.flip_bit(*record, u64::from(bit) * 7);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((synced, damage_input)) = data.split_first() else { return };
    let synced = u64::from(*synced) % (ENTRIES + 1);
    let disk = MemoryDisk::new();
    if write_disk(&disk, synced.max(3)).is_none() {
        return;
    }
    damage(&disk, damage_input);
    let Ok(loaded) = MemoryStorage::open(disk.clone()).load() else { return };
    let first = loaded.snapshot.as_ref().map_or(1, |snapshot| snapshot.meta.last_included.index + 1);
    for (offset, entry) in loaded.entries.iter().enumerate() {
        assert_eq!(entry.log_id.index, first + offset as u64, "entries are contiguous after the snapshot");
        assert!(entry.log_id.term <= loaded.hard_state.term, "no entry above the hard state's term");
    }
    assert!(loaded.entries.windows(2).all(|pair| pair[0].log_id.term <= pair[1].log_id.term), "terms never decrease");
    // Without a bit flip, every synced entry must survive a crash.
    if damage_input.len() < 4 {
        assert!(loaded.last_log_id().index >= synced.max(3), "a synced entry was lost: {loaded:?}");
    }
});
