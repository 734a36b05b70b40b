//! Lowe's memoization for the search, extended with subsumption of pending operations: the set
//! of explored configurations, in a bounded open-addressing table.
//!
//! A configuration is the set of linearized operations that returned, the set of linearized
//! pending ones (which never return: `info` or no completion), and the key's state. A
//! configuration that has linearized more pending operations than an explored one, but is equal
//! otherwise, can do nothing the explored one could not (a pending operation may always be
//! linearized later, and never blocks another), so it is skipped too: this keeps histories with
//! many `info` operations from exploring every subset of them.
//!
//! Configurations are grouped by (returned set, state); each group keeps the pending sets seen
//! with it. A bitset keeps a running Zobrist-style hash (the xor of one fixed 64-bit key per set
//! bit), so hashing costs O(1) instead of O(operations); bitsets are compared only when hashes
//! agree. Groups live in flat arrays, and the table refuses to grow past its byte budget: the
//! search then stops with an "unknown" outcome instead of exhausting memory.

use keel_core::Rng;

use super::model::ValueId;

/// A fixed-size set of operation indexes with an incrementally maintained hash.
#[derive(Clone, Debug)]
pub(crate) struct Bitset {
    words: Vec<u64>,
    hash: u64,
}

impl Bitset {
    /// An empty set able to hold indexes `0..capacity`.
    pub(crate) fn new(capacity: usize) -> Self {
        Bitset { words: vec![0; capacity.div_ceil(64)], hash: 0 }
    }

    /// Adds or removes `index` (which must be absent or present respectively: the caller toggles).
    pub(crate) fn toggle(&mut self, index: usize) {
        self.words[index / 64] ^= 1 << (index % 64);
        self.hash ^= bit_key(index);
    }

    /// How many 64-bit words a set holds.
    pub(crate) fn word_count(&self) -> usize {
        self.words.len()
    }
}

/// The fixed pseudo-random key of one bit (the first SplitMix64 output seeded with its index):
/// deterministic across runs.
fn bit_key(index: usize) -> u64 {
    Rng::new(index as u64).next_u64()
}

/// The hash of a group: its returned set and its state.
fn group_hash(returned: &Bitset, state: ValueId) -> u64 {
    returned.hash ^ bit_key(usize::MAX - state as usize)
}

/// The cache could not take one more configuration without passing its byte budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CacheFull {
    /// How many configurations it held.
    pub(crate) entries: usize,
}

const EMPTY_SLOT: u32 = u32::MAX;
/// Bytes of one group besides its bitsets: state, hash, pending-set list header, two slots.
const GROUP_OVERHEAD_BYTES: usize = 4 + 8 + 24 + 2 * 4;

/// The explored configurations of one search.
#[derive(Debug)]
pub(crate) struct Cache {
    returned_words: usize,
    pending_words: usize,
    /// Group `i`'s returned set is `returned_sets[i * returned_words..(i + 1) * returned_words]`.
    returned_sets: Vec<u64>,
    states: Vec<ValueId>,
    hashes: Vec<u64>,
    /// Per group, its pending sets one after the other (`pending_words` words each).
    pending_sets: Vec<Vec<u64>>,
    /// Open addressing with linear probing: group indexes, or [`EMPTY_SLOT`]. Length a power of
    /// two, kept at most half full.
    slots: Vec<u32>,
    configurations: usize,
    bytes_used: usize,
    memory_bytes_max: usize,
}

impl Cache {
    /// A cache for returned and pending sets of the given sizes (in words) that stops growing at
    /// about `memory_bytes_max` bytes (counted from what its arrays reserve).
    pub(crate) fn new(returned_words: usize, pending_words: usize, memory_bytes_max: usize) -> Self {
        const INITIAL_SLOTS: usize = 1024;
        Cache {
            returned_words,
            pending_words,
            returned_sets: Vec::new(),
            states: Vec::new(),
            hashes: Vec::new(),
            pending_sets: Vec::new(),
            slots: vec![EMPTY_SLOT; INITIAL_SLOTS],
            configurations: 0,
            bytes_used: INITIAL_SLOTS * 4,
            memory_bytes_max,
        }
    }

    /// Records the configuration. `Ok(true)` if it is new and not subsumed; `Ok(false)` if an
    /// explored configuration with the same returned set and state had a subset of its pending set.
    pub(crate) fn insert(&mut self, returned: &Bitset, pending: &Bitset, state: ValueId) -> Result<bool, CacheFull> {
        let hash = group_hash(returned, state);
        let mask = self.slots.len() - 1;
        let mut slot = hash as usize & mask;
        loop {
            let group = self.slots[slot];
            if group == EMPTY_SLOT {
                break;
            }
            if self.group_matches(group as usize, hash, returned, state) {
                return self.add_pending_set(group as usize, pending);
            }
            slot = (slot + 1) & mask;
        }
        let group_bytes = self.returned_words * 8 + GROUP_OVERHEAD_BYTES + self.pending_words * 8;
        if self.bytes_used + group_bytes > self.memory_bytes_max {
            return Err(CacheFull { entries: self.configurations });
        }
        let group = self.states.len();
        self.returned_sets.extend_from_slice(&returned.words);
        self.states.push(state);
        self.hashes.push(hash);
        self.pending_sets.push(pending.words.clone());
        self.slots[slot] = group as u32;
        self.configurations += 1;
        self.bytes_used += group_bytes;
        if (group + 1) * 2 > self.slots.len() {
            self.grow_slots();
        }
        Ok(true)
    }

    fn group_matches(&self, group: usize, hash: u64, returned: &Bitset, state: ValueId) -> bool {
        let start = group * self.returned_words;
        self.hashes[group] == hash
            && self.states[group] == state
            && self.returned_sets[start..start + self.returned_words] == returned.words[..]
    }

    /// Adds `pending` to a group unless one of its pending sets is a subset of it.
    fn add_pending_set(&mut self, group: usize, pending: &Bitset) -> Result<bool, CacheFull> {
        let known = &self.pending_sets[group];
        // With no pending operations at all, every set is empty: the same configuration.
        let subsumed = known.is_empty()
            || known
                .chunks_exact(self.pending_words)
                .any(|set| set.iter().zip(&pending.words).all(|(explored, current)| explored & !current == 0));
        if subsumed {
            return Ok(false);
        }
        if self.bytes_used + self.pending_words * 8 > self.memory_bytes_max {
            return Err(CacheFull { entries: self.configurations });
        }
        self.pending_sets[group].extend_from_slice(&pending.words);
        self.configurations += 1;
        self.bytes_used += self.pending_words * 8;
        Ok(true)
    }

    /// Doubles the slot array and reinserts every group.
    fn grow_slots(&mut self) {
        let mut slots = vec![EMPTY_SLOT; self.slots.len() * 2];
        let mask = slots.len() - 1;
        for (group, &hash) in self.hashes.iter().enumerate() {
            let mut slot = hash as usize & mask;
            while slots[slot] != EMPTY_SLOT {
                slot = (slot + 1) & mask;
            }
            slots[slot] = group as u32;
        }
        self.bytes_used += self.slots.len() * 4;
        self.slots = slots;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_depends_on_the_set_not_on_the_order_of_toggles() {
        let mut forward = Bitset::new(200);
        let mut backward = Bitset::new(200);
        for index in [3, 150, 64] {
            forward.toggle(index);
        }
        for index in [64, 150, 3, 7, 7] {
            backward.toggle(index);
        }
        assert_eq!(forward.hash, backward.hash);
        assert_eq!(forward.words, backward.words);
        backward.toggle(3);
        assert_ne!(forward.hash, backward.hash);
    }

    #[test]
    fn insert_reports_new_and_known_configurations_across_growth() {
        let mut cache = Cache::new(Bitset::new(100).word_count(), 0, 1 << 22);
        let (mut returned, pending) = (Bitset::new(100), Bitset::new(0));
        for index in 0..100 {
            returned.toggle(index);
            for state in 0..30 {
                assert_eq!(cache.insert(&returned, &pending, state), Ok(true));
            }
        }
        let mut again = Bitset::new(100);
        for index in 0..100 {
            again.toggle(index);
            assert_eq!(cache.insert(&again, &pending, 29), Ok(false));
        }
        assert_eq!(cache.insert(&again, &pending, 30), Ok(true));
    }

    #[test]
    fn more_linearized_pending_operations_are_subsumed_fewer_are_not() {
        let mut cache = Cache::new(1, 1, 1 << 20);
        let returned = Bitset::new(10);
        let mut pending = Bitset::new(10);
        pending.toggle(2);
        assert_eq!(cache.insert(&returned, &pending, 1), Ok(true));
        pending.toggle(5);
        assert_eq!(cache.insert(&returned, &pending, 1), Ok(false), "{{2, 5}} is subsumed by {{2}}");
        assert_eq!(cache.insert(&returned, &pending, 2), Ok(true), "another state is another group");
        pending.toggle(2);
        assert_eq!(cache.insert(&returned, &pending, 1), Ok(true), "{{5}} is not a superset of {{2}}");
        pending.toggle(5);
        assert_eq!(cache.insert(&returned, &pending, 1), Ok(true), "the empty set neither");
        pending.toggle(7);
        assert_eq!(cache.insert(&returned, &pending, 1), Ok(false));
    }

    #[test]
    fn a_full_cache_refuses_new_entries_but_still_recognises_old_ones() {
        let group_bytes = 8 + GROUP_OVERHEAD_BYTES;
        let mut cache = Cache::new(1, 0, 1024 * 4 + group_bytes * 3);
        let (returned, pending) = (Bitset::new(10), Bitset::new(0));
        for state in 0..3 {
            assert_eq!(cache.insert(&returned, &pending, state), Ok(true));
        }
        assert_eq!(cache.insert(&returned, &pending, 3), Err(CacheFull { entries: 3 }));
        assert_eq!(cache.insert(&returned, &pending, 1), Ok(false));
    }
}
