//! One node's simulated disk: what is durable (hard state, snapshot, log entries with their
//! checksums) and the log writes still waiting for their sync.
//!
//! Data flow: the node saves its hard state synchronously (the contract wants it synced before
//! any message of the same `Ready`), queues each `LogWrite` with the time its sync completes,
//! and asks [`Disk::complete_syncs`] which log id became durable so it can call `persisted`.
//! Syncs complete in order. A snapshot (taken or installed) is written synchronously.
//!
//! Faults, and the recovery rule:
//! - **Crash**: every queued write is lost, except that with a torn write some of them land
//!   (a prefix, in order) and the next one lands in part, its last landed entry torn (bad
//!   checksum). Entries that land this way are marked *unsynced*: they model records whose batch
//!   never got its commit marker, which a real log store can tell from synced ones.
//! - **Bit flips** hit synced entries only.
//! - **Recovery** verifies every entry's checksum. At the first bad entry: if it is unsynced (a
//!   torn, never acknowledged tail) the log is truncated there and the node starts; otherwise the
//!   corruption is *detected* and the node refuses to start, with a message saying where.
//!
//! Keeping storage faults within what a quorum can recover from (as TigerBeetle does): the fault
//! scheduler flips bits on at most one node per run, never on a node added later, and keeps at
//! least three voters, so a quorum of intact nodes always remains once the faults heal.

use std::collections::VecDeque;

use bytes::Bytes;
use keel_core::{Entry, EntryPayload, HardState, LogId, LogWrite, RecoveredState, Snapshot};

use super::rng::SimRng;

/// One durable log entry as stored: the entry, the checksum written with it, and whether the
/// write that carried it completed its sync.
#[derive(Clone, Debug)]
struct StoredEntry {
    entry: Entry,
    checksum: u64,
    synced: bool,
}

/// A log write waiting for its sync.
#[derive(Clone, Debug)]
struct PendingWrite {
    sync_at_ms: u64,
    write: LogWrite,
}

/// Counters of what the disk did, for reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DiskStats {
    /// Writes made durable.
    pub syncs: u64,
    /// Crashes that tore a write.
    pub torn_writes: u64,
    /// Bits flipped in synced entries.
    pub bit_flips: u64,
    /// Entries dropped on recovery as a torn, unsynced tail.
    pub truncated_on_recovery: u64,
}

/// One node's disk.
#[derive(Clone, Debug, Default)]
pub struct Disk {
    /// Term and vote, as last synced.
    pub hard_state: HardState,
    /// The latest durable snapshot (its data is the key-value store's snapshot).
    pub snapshot: Option<Snapshot>,
    entries: Vec<StoredEntry>,
    pending: VecDeque<PendingWrite>,
    /// What happened so far.
    pub stats: DiskStats,
}

/// A checksum of one entry (FNV-1a over its id and payload), computed when it is written and
/// verified on recovery.
pub fn entry_checksum(entry: &Entry) -> u64 {
    let mut hash = 0xCBF2_9CE4_8422_2325_u64;
    let mut mix = |bytes: &[u8]| {
        for byte in bytes {
            hash = (hash ^ u64::from(*byte)).wrapping_mul(0x100_0000_01B3);
        }
    };
    mix(&entry.log_id.term.to_le_bytes());
    mix(&entry.log_id.index.to_le_bytes());
    match &entry.payload {
        EntryPayload::Noop => mix(b"noop"),
        EntryPayload::Command(bytes) => mix(bytes),
        EntryPayload::Membership(membership) => {
            for id in membership.voters.iter().chain(&membership.voters_outgoing) {
                mix(&id.to_le_bytes());
            }
            for id in membership.learners.keys() {
                mix(&id.to_le_bytes());
            }
        }
    }
    hash
}

impl Disk {
    /// A disk holding `recovered` (a brand-new node's initial state), all synced.
    pub fn new(recovered: &RecoveredState) -> Self {
        let mut disk =
            Self { hard_state: recovered.hard_state, snapshot: recovered.snapshot.clone(), ..Self::default() };
        for entry in &recovered.entries {
            disk.entries.push(StoredEntry { checksum: entry_checksum(entry), entry: entry.clone(), synced: true });
        }
        disk
    }

    fn snapshot_index(&self) -> u64 {
        self.snapshot.as_ref().map_or(0, |s| s.meta.last_included.index)
    }

    /// The last durable entry's id (or the snapshot's).
    pub fn last_log_id(&self) -> LogId {
        let from_snapshot = self.snapshot.as_ref().map(|s| s.meta.last_included).unwrap_or_default();
        self.entries.last().map_or(from_snapshot, |e| e.entry.log_id)
    }

    /// Writes the hard state and syncs it at once.
    pub fn save_hard_state(&mut self, hard_state: HardState) {
        self.hard_state = hard_state;
    }

    /// Queues a log write whose sync completes at `sync_at_ms` (or after the previous one).
    pub fn queue_write(&mut self, write: LogWrite, sync_at_ms: u64) {
        let after_previous = self.pending.back().map_or(0, |p| p.sync_at_ms);
        self.pending.push_back(PendingWrite { sync_at_ms: sync_at_ms.max(after_previous), write });
    }

    /// When the next queued sync completes.
    pub fn next_sync_ms(&self) -> Option<u64> {
        self.pending.front().map(|p| p.sync_at_ms)
    }

    /// Completes every sync due at `now_ms`; returns the last durable log id if any write completed.
    pub fn complete_syncs(&mut self, now_ms: u64) -> Option<LogId> {
        let mut completed = false;
        while self.pending.front().is_some_and(|p| p.sync_at_ms <= now_ms) {
            let pending = self.pending.pop_front().expect("checked above");
            self.land(&pending.write, pending.write.entries.len(), true);
            self.stats.syncs += 1;
            completed = true;
        }
        completed.then(|| self.last_log_id())
    }

    /// Completes every queued sync now (before a snapshot is installed).
    pub fn flush(&mut self) -> Option<LogId> {
        self.complete_syncs(u64::MAX)
    }

    /// Puts the first `count` entries of `write` on the platter (truncating first).
    fn land(&mut self, write: &LogWrite, count: usize, synced: bool) {
        let base = self.snapshot_index();
        let keep = write.first_index.saturating_sub(base + 1) as usize;
        self.entries.truncate(keep.min(self.entries.len()));
        for entry in write.entries.iter().take(count).filter(|e| e.log_id.index > base) {
            self.entries.push(StoredEntry { checksum: entry_checksum(entry), entry: entry.clone(), synced });
        }
    }

    /// Stores a snapshot this node took and drops the entries it covers. Every entry it covers
    /// is applied, hence already durable: no queued write is affected.
    pub fn compact(&mut self, snapshot: Snapshot) {
        let index = snapshot.meta.last_included.index;
        self.entries.retain(|e| e.entry.log_id.index > index);
        self.snapshot = Some(snapshot);
    }

    /// Installs a snapshot received from the leader: queued writes complete first (the contract
    /// orders them before), then entries after the snapshot survive only if the log holds its
    /// last entry. Returns the durable log id to report as persisted.
    pub fn install_snapshot(&mut self, snapshot: Snapshot) -> LogId {
        self.flush();
        let last = snapshot.meta.last_included;
        let matching = self.entries.iter().any(|e| e.entry.log_id == last);
        self.entries.retain(|e| matching && e.entry.log_id.index > last.index);
        self.snapshot = Some(snapshot);
        self.last_log_id()
    }

    /// A crash: queued writes are lost, except that with `tear` a prefix of them lands and the
    /// next lands in part with its last landed entry torn.
    pub fn crash(&mut self, tear: bool, rng: &mut SimRng) {
        let pending: Vec<PendingWrite> = self.pending.drain(..).collect();
        if !tear || pending.is_empty() {
            return;
        }
        let landed = rng.index(pending.len());
        for write in &pending[..landed] {
            self.land(&write.write, write.write.entries.len(), false);
        }
        let torn = &pending[landed].write;
        if torn.entries.is_empty() {
            return;
        }
        let count = 1 + rng.index(torn.entries.len());
        self.land(torn, count, false);
        let base = self.snapshot_index();
        if torn.entries[count - 1].log_id.index > base {
            if let Some(last) = self.entries.last_mut() {
                last.checksum ^= 1 << rng.index(64);
                self.stats.torn_writes += 1;
            }
        }
    }

    /// Flips one bit in a random synced entry; returns its index, or `None` if there is none.
    pub fn flip_bit(&mut self, rng: &mut SimRng) -> Option<u64> {
        let synced: Vec<usize> = (0..self.entries.len()).filter(|i| self.entries[*i].synced).collect();
        let position = rng.pick(&synced)?;
        let stored = &mut self.entries[position];
        match &stored.entry.payload {
            EntryPayload::Command(bytes) if !bytes.is_empty() => {
                let mut flipped = bytes.to_vec();
                let byte = rng.index(flipped.len());
                flipped[byte] ^= 1 << rng.index(8);
                stored.entry.payload = EntryPayload::Command(Bytes::from(flipped));
            }
            _ => stored.checksum ^= 1 << rng.index(64),
        }
        self.stats.bit_flips += 1;
        Some(stored.entry.log_id.index)
    }

    /// Verifies every entry and rebuilds what the node starts from: a torn, unsynced tail is
    /// truncated; any other bad entry is a detected corruption and the node must not start.
    pub fn recover(&mut self) -> Result<RecoveredState, String> {
        self.pending.clear();
        if let Some(bad) = self.entries.iter().position(|e| entry_checksum(&e.entry) != e.checksum) {
            let stored = &self.entries[bad];
            if stored.synced {
                return Err(format!(
                    "log entry {} fails its checksum and was synced: the log is corrupt; \
                     remove this node from the cluster and add it back with an empty disk",
                    stored.entry.log_id
                ));
            }
            self.stats.truncated_on_recovery += (self.entries.len() - bad) as u64;
            self.entries.truncate(bad);
        }
        for stored in &mut self.entries {
            stored.synced = true;
        }
        Ok(RecoveredState {
            hard_state: self.hard_state,
            snapshot: self.snapshot.clone(),
            entries: self.entries.iter().map(|e| e.entry.clone()).collect(),
            applied: self.snapshot_index(),
        })
    }

    /// Durable entries, for checks (index order).
    pub fn durable_log_ids(&self) -> impl Iterator<Item = LogId> + '_ {
        self.entries.iter().map(|e| e.entry.log_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_core::Membership;

    fn write(first: u64, last: u64, term: u64) -> LogWrite {
        let entries = (first..=last)
            .map(|i| Entry {
                log_id: LogId::new(term, i),
                payload: EntryPayload::Command(Bytes::from(vec![i as u8; 4])),
            })
            .collect();
        LogWrite { first_index: first, entries }
    }

    fn disk() -> Disk {
        Disk::new(&RecoveredState::bootstrap(Membership::with_voters([1, 2, 3])))
    }

    #[test]
    fn crash_loses_unsynced_writes_and_syncs_complete_in_order() {
        let mut disk = disk();
        disk.queue_write(write(1, 3, 1), 10);
        disk.queue_write(write(4, 5, 1), 5);
        assert_eq!(disk.complete_syncs(9), None, "the second sync waits for the first");
        assert_eq!(disk.complete_syncs(10), Some(LogId::new(1, 5)));
        disk.queue_write(write(6, 8, 1), 20);
        disk.crash(false, &mut SimRng::new(1));
        assert_eq!(disk.recover().unwrap().entries.len(), 5);
    }

    #[test]
    fn torn_tail_is_truncated_but_flipped_synced_entry_is_refused() {
        for seed in 0..20 {
            let mut disk = disk();
            disk.queue_write(write(1, 3, 1), 0);
            disk.complete_syncs(0);
            disk.queue_write(write(4, 9, 1), 50);
            disk.crash(true, &mut SimRng::new(seed));
            let recovered = disk.recover().expect("a torn unsynced tail is recoverable");
            assert!(recovered.entries.len() >= 3, "synced entries survive");
            assert!(recovered.entries.iter().all(|e| disk.entries.iter().any(|s| s.entry == *e)));
            disk.flip_bit(&mut SimRng::new(seed)).expect("there are synced entries");
            assert!(disk.recover().unwrap_err().contains("corrupt"));
        }
    }
}
