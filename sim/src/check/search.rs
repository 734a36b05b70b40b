//! The linearizability search of one key's operations: Wing & Gong's backtracking over a linked
//! list of call and return entries, with Lowe's memoization of explored configurations.
//!
//! The entries of all operations are linked in history order. Scanning from the head, a call
//! entry's operation may be linearized now if the model accepts it in the current state and the
//! resulting (linearized set, state) configuration has not been explored before: its call and
//! return entries are then unlinked ("lifted"), it is pushed on a stack and the scan restarts at
//! the head. Reaching a return entry means that operation had to be linearized already: the last
//! choice is undone ("unlifted") and the scan resumes after it. The history is linearizable once
//! every operation that returned is linearized; operations that never returned (`info`) may stay
//! unlinearized, which stands for "never took effect" or "took effect after everything else".
//!
//! Two reductions keep `info` operations (pending to the end) from making the search explore
//! every subset of them: a pending operation is not tried while an earlier pending twin (same
//! step) is still unlinearized, and the cache skips a configuration that only adds linearized
//! pending operations to an explored one (see `cache`). Both are exact: whatever the skipped
//! choice could complete, the twin or the explored configuration completes too.
//!
//! The loop is iterative (the stack is a `Vec`), and memory is bounded by the cache's budget.

use std::collections::BTreeMap;
use std::time::Instant;

use super::cache::{Bitset, Cache, CacheFull};
use super::model::{Contribution, Step, ValueId, ABSENT};

/// One operation as the search sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SearchOperation {
    /// Its model step and whether it returned.
    pub(crate) contribution: Contribution,
    /// Position of its invocation in the history (only the order of positions matters).
    pub(crate) invoke: usize,
    /// Position of its `ok` / `fail` completion, when it returned.
    pub(crate) returned_at: Option<usize>,
}

/// What the search concluded, or why it could not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SearchOutcome {
    /// Some order of the operations respects real time and the model.
    Linearizable,
    /// No such order exists.
    NotLinearizable,
    /// The cache reached its byte budget first.
    MemoryLimit(CacheFull),
    /// The deadline passed first.
    Deadline,
    /// The step budget ran out first.
    StepLimit,
}

/// Stops the search: a byte budget for the cache and an optional wall-clock deadline.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SearchLimits {
    /// Upper bound on the cache's size.
    pub(crate) memory_bytes_max: usize,
    /// When to give up; `None` never does (the outcome is then deterministic).
    pub(crate) deadline: Option<Instant>,
    /// How many loop steps to take at most (a deterministic budget; `u64::MAX`: unbounded).
    pub(crate) steps_max: u64,
}

/// Marks the end of the list (and "no return entry" for a pending operation).
const NONE: u32 = u32::MAX;
/// The list's head sentinel.
const HEAD: u32 = 0;
/// How many loop steps pass between two looks at the clock.
const STEPS_PER_DEADLINE_CHECK: u64 = 1 << 14;

/// The doubly linked list of entries. Entry 0 is the head; entry `e > 0` belongs to operation
/// `operation[e]` and is its call entry when `is_call[e]`.
struct EntryList {
    next: Vec<u32>,
    previous: Vec<u32>,
    operation: Vec<u32>,
    is_call: Vec<bool>,
    /// Per operation: its call entry and its return entry ([`NONE`] if it never returned).
    call_entry: Vec<u32>,
    return_entry: Vec<u32>,
    /// Per pending operation: the nearest earlier pending operation (in list order) with the
    /// same step, or [`NONE`]. While that twin is not linearized, linearizing this one instead
    /// leads nowhere new (the twin is available whenever this one is, and does the same).
    twin_before: Vec<u32>,
    /// Per operation: whether it is lifted (linearized).
    lifted: Vec<bool>,
}

impl EntryList {
    /// Links the call and return entries of `operations` in history order, except that the call
    /// of a pending operation moves to just before the next return entry. That changes nothing
    /// about which operations may precede which (only calls are passed over), but makes the
    /// search try returned operations first and pending ones last, so that configurations with
    /// fewer pending operations are explored first and subsume those with more.
    fn new(operations: &[SearchOperation]) -> Self {
        let mut returns: Vec<usize> = operations.iter().filter_map(|operation| operation.returned_at).collect();
        returns.sort_unstable();
        // Sort keys: (position, rank, operation, is_call); a pending call takes the position of
        // the next return, with a rank that puts it first there.
        let mut positions: Vec<(usize, u8, u32, bool)> = Vec::with_capacity(operations.len() * 2);
        for (index, operation) in operations.iter().enumerate() {
            if let Some(position) = operation.returned_at {
                positions.push((operation.invoke, 1, index as u32, true));
                positions.push((position, 1, index as u32, false));
            } else {
                let next_return = returns.partition_point(|&position| position < operation.invoke);
                let position = returns.get(next_return).copied().unwrap_or(usize::MAX);
                positions.push((position, 0, index as u32, true));
            }
        }
        positions.sort_unstable();
        let count = positions.len() + 1;
        let mut list = EntryList {
            next: (1..=count as u32).map(|entry| if entry as usize == count { NONE } else { entry }).collect(),
            previous: (0..count as u32).map(|entry| entry.wrapping_sub(1)).collect(),
            operation: vec![NONE; count],
            is_call: vec![false; count],
            call_entry: vec![NONE; operations.len()],
            return_entry: vec![NONE; operations.len()],
            twin_before: vec![NONE; operations.len()],
            lifted: vec![false; operations.len()],
        };
        let mut last_pending_with_step: BTreeMap<Step, u32> = BTreeMap::new();
        for (offset, &(_, rank, operation, is_call)) in positions.iter().enumerate() {
            let entry = offset + 1;
            list.operation[entry] = operation;
            list.is_call[entry] = is_call;
            let slot = if is_call { &mut list.call_entry } else { &mut list.return_entry };
            slot[operation as usize] = entry as u32;
            if rank == 0 {
                let step = operations[operation as usize].contribution.step;
                list.twin_before[operation as usize] = last_pending_with_step.insert(step, operation).unwrap_or(NONE);
            }
        }
        list
    }

    /// Whether linearizing `operation` now is redundant: an unlinearized twin comes before it.
    fn has_waiting_twin(&self, operation: u32) -> bool {
        let twin = self.twin_before[operation as usize];
        twin != NONE && !self.lifted[twin as usize]
    }

    fn unlink(&mut self, entry: u32) {
        let (previous, next) = (self.previous[entry as usize], self.next[entry as usize]);
        self.next[previous as usize] = next;
        if next != NONE {
            self.previous[next as usize] = previous;
        }
    }

    fn relink(&mut self, entry: u32) {
        let (previous, next) = (self.previous[entry as usize], self.next[entry as usize]);
        self.next[previous as usize] = entry;
        if next != NONE {
            self.previous[next as usize] = entry;
        }
    }

    /// Removes an operation's entries from the list.
    fn lift(&mut self, operation: u32) {
        self.lifted[operation as usize] = true;
        self.unlink(self.call_entry[operation as usize]);
        let returned = self.return_entry[operation as usize];
        if returned != NONE {
            self.unlink(returned);
        }
    }

    /// Puts back the entries of the most recently lifted operation.
    fn unlift(&mut self, operation: u32) {
        let returned = self.return_entry[operation as usize];
        if returned != NONE {
            self.relink(returned);
        }
        self.relink(self.call_entry[operation as usize]);
        self.lifted[operation as usize] = false;
    }
}

/// The linearized operations, split into those that returned and the pending ones (the cache
/// treats them differently); each operation has an index within its class.
struct Linearized {
    returned: Bitset,
    pending: Bitset,
    /// Per operation: whether it is pending, and its index within its class.
    class_index: Vec<(bool, usize)>,
}

impl Linearized {
    fn new(operations: &[SearchOperation]) -> Self {
        let (mut returned_count, mut pending_count) = (0, 0);
        let class_index = operations
            .iter()
            .map(|operation| {
                let counter = if operation.returned_at.is_some() { &mut returned_count } else { &mut pending_count };
                *counter += 1;
                (operation.returned_at.is_none(), *counter - 1)
            })
            .collect();
        Linearized { returned: Bitset::new(returned_count), pending: Bitset::new(pending_count), class_index }
    }

    fn toggle(&mut self, operation: u32) {
        match self.class_index[operation as usize] {
            (true, index) => self.pending.toggle(index),
            (false, index) => self.returned.toggle(index),
        }
    }
}

/// Decides whether `operations` (one key's, from the absent initial state) are linearizable;
/// also returns how many loop steps that took (a measure of the work done).
pub(crate) fn search(operations: &[SearchOperation], limits: SearchLimits) -> (SearchOutcome, u64) {
    let mut list = EntryList::new(operations);
    let mut remaining_returned = operations.iter().filter(|operation| operation.returned_at.is_some()).count();
    let mut linearized = Linearized::new(operations);
    let returned_words = linearized.returned.word_count();
    let mut cache = Cache::new(returned_words, linearized.pending.word_count(), limits.memory_bytes_max);
    // Each linearized operation with the state before it.
    let mut stack: Vec<(u32, ValueId)> = Vec::new();
    let mut state = ABSENT;
    let mut cursor = list.next[HEAD as usize];
    let mut steps: u64 = 0;
    while remaining_returned > 0 && cursor != NONE {
        steps += 1;
        if steps >= limits.steps_max {
            return (SearchOutcome::StepLimit, steps);
        }
        if steps.is_multiple_of(STEPS_PER_DEADLINE_CHECK)
            && limits.deadline.is_some_and(|deadline| Instant::now() >= deadline)
        {
            return (SearchOutcome::Deadline, steps);
        }
        let operation = list.operation[cursor as usize];
        if list.is_call[cursor as usize] && !list.has_waiting_twin(operation) {
            let next_state = operations[operation as usize].contribution.step.apply(state);
            if let Some(next_state) = next_state {
                linearized.toggle(operation);
                match cache.insert(&linearized.returned, &linearized.pending, next_state) {
                    Ok(true) => {
                        stack.push((operation, state));
                        state = next_state;
                        list.lift(operation);
                        remaining_returned -= usize::from(list.return_entry[operation as usize] != NONE);
                        cursor = list.next[HEAD as usize];
                        continue;
                    }
                    Ok(false) => linearized.toggle(operation),
                    Err(full) => return (SearchOutcome::MemoryLimit(full), steps),
                }
            }
            cursor = list.next[cursor as usize];
        } else if list.is_call[cursor as usize] {
            cursor = list.next[cursor as usize];
        } else {
            // An operation returned before being linearized: undo the latest choice.
            let Some((undone, previous_state)) = stack.pop() else {
                return (SearchOutcome::NotLinearizable, steps);
            };
            state = previous_state;
            linearized.toggle(undone);
            list.unlift(undone);
            remaining_returned += usize::from(list.return_entry[undone as usize] != NONE);
            cursor = list.next[list.call_entry[undone as usize] as usize];
        }
    }
    // Either every returned operation is linearized, or only calls of pending operations are left
    // after the cursor, which (with only calls before it) means the same.
    (SearchOutcome::Linearizable, steps)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NO_LIMITS: SearchLimits = SearchLimits { memory_bytes_max: 1 << 24, deadline: None, steps_max: u64::MAX };

    fn returned(step: Step, invoke: usize, returned_at: usize) -> SearchOperation {
        SearchOperation { contribution: Contribution { step, returned: true }, invoke, returned_at: Some(returned_at) }
    }

    fn pending(step: Step, invoke: usize) -> SearchOperation {
        SearchOperation { contribution: Contribution { step, returned: false }, invoke, returned_at: None }
    }

    #[test]
    fn empty_and_sequential_histories() {
        assert_eq!(search(&[], NO_LIMITS).0, SearchOutcome::Linearizable);
        let operations = [returned(Step::Write { value: 1 }, 0, 1), returned(Step::Read { value: 1 }, 2, 3)];
        assert_eq!(search(&operations, NO_LIMITS).0, SearchOutcome::Linearizable);
        let stale = [returned(Step::Write { value: 1 }, 0, 1), returned(Step::Read { value: ABSENT }, 2, 3)];
        assert_eq!(search(&stale, NO_LIMITS).0, SearchOutcome::NotLinearizable);
    }

    #[test]
    fn overlapping_operations_may_be_reordered() {
        // The read overlaps the write and sees the old value; a later read sees the new one.
        let operations = [
            returned(Step::Write { value: 1 }, 0, 3),
            returned(Step::Read { value: ABSENT }, 1, 2),
            returned(Step::Read { value: 1 }, 4, 5),
        ];
        assert_eq!(search(&operations, NO_LIMITS).0, SearchOutcome::Linearizable);
    }

    #[test]
    fn a_pending_write_may_apply_late_or_never() {
        let pending_write = pending(Step::Write { value: 1 }, 0);
        let applied =
            [pending_write, returned(Step::Read { value: ABSENT }, 1, 2), returned(Step::Read { value: 1 }, 3, 4)];
        assert_eq!(search(&applied, NO_LIMITS).0, SearchOutcome::Linearizable);
        let never = [pending_write, returned(Step::Read { value: ABSENT }, 1, 2)];
        assert_eq!(search(&never, NO_LIMITS).0, SearchOutcome::Linearizable);
        let flip_back =
            [pending_write, returned(Step::Read { value: 1 }, 1, 2), returned(Step::Read { value: ABSENT }, 3, 4)];
        assert_eq!(search(&flip_back, NO_LIMITS).0, SearchOutcome::NotLinearizable);
    }

    #[test]
    fn a_tiny_memory_budget_gives_up_instead_of_deciding() {
        let operations: Vec<SearchOperation> =
            (0..50).map(|index| returned(Step::Write { value: index }, index as usize, 100 + index as usize)).collect();
        let limits = SearchLimits { memory_bytes_max: 100, deadline: None, steps_max: u64::MAX };
        assert!(matches!(search(&operations, limits).0, SearchOutcome::MemoryLimit(_)));
        let limits = SearchLimits { steps_max: 10, ..NO_LIMITS };
        assert_eq!(search(&operations, limits), (SearchOutcome::StepLimit, 10));
    }
}
