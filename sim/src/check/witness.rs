//! A small counterexample for a key whose history is not linearizable.
//!
//! Two steps, each a series of ordinary searches: first the shortest prefix of the key's history
//! that is already not linearizable (binary search over its completions: cutting a history can
//! only make it easier to linearize, because the operations cut off at their completion become
//! pending, which allows strictly more), then operations are dropped greedily, in halving chunks
//! down to single operations, as long as what is left stays non-linearizable. The number of
//! searches is bounded by [`WITNESS_SEARCHES_MAX`] and their steps by [`WITNESS_WORK_FACTOR`]
//! times the original search's; a search that hits a limit counts as "could not show it", so the
//! witness only ever shrinks to something proven non-linearizable.
//! Shrinking never drops the last writer of a value that a kept operation observed.

use std::collections::BTreeMap;

use super::jsonl::type_name;
use super::pairing::{describe, PairedOperation};
use super::partition::search_operations;
use super::search::{search, SearchLimits, SearchOutcome};
use super::Counterexample;
use crate::history::{EventType, Function, HistoryEvent};

/// The most searches spent shrinking one counterexample.
pub const WITNESS_SEARCHES_MAX: usize = 512;

/// The shrinking searches together take at most this many times the steps of the search that
/// found the history not linearizable (plus [`WITNESS_STEPS_ALLOWANCE`]), so that shrinking
/// costs a bounded multiple of checking.
pub const WITNESS_WORK_FACTOR: u64 = 8;

/// Steps every shrink may take whatever the original search cost (small histories shrink fully).
const WITNESS_STEPS_ALLOWANCE: u64 = 1_000_000;

/// The step budget of shrinking after a search of `steps` steps.
pub(crate) fn witness_steps_max(steps: u64) -> u64 {
    steps.saturating_mul(WITNESS_WORK_FACTOR).saturating_add(WITNESS_STEPS_ALLOWANCE)
}

/// A shrunk non-linearizable sub-history of one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Witness {
    /// The kept operations; completions after `breaking_completion` are left out (pending).
    pub(crate) operations: Vec<PairedOperation>,
    /// Position of the completion that made the prefix non-linearizable.
    pub(crate) breaking_completion: Option<usize>,
    /// Whether dropping any single operation was tried and made the rest linearizable.
    pub(crate) one_minimal: bool,
}

/// Shrinks the (non-linearizable) `operations` of one key; `limits.steps_max` is the budget of
/// all the shrinking searches together.
pub(crate) fn shrink(events: &[HistoryEvent], operations: &[PairedOperation], limits: SearchLimits) -> Witness {
    let mut budget = WITNESS_SEARCHES_MAX;
    let mut steps_left = limits.steps_max;
    let all_writers = writers(events, operations);
    let mut still_fails = |candidate: &[PairedOperation]| {
        if !keeps_writers(events, candidate, &all_writers) {
            return Some(false);
        }
        budget = budget.checked_sub(1)?;
        let probe_limits = SearchLimits { steps_max: steps_left, ..limits };
        let (outcome, steps) = search(&search_operations(events, candidate), probe_limits);
        steps_left = steps_left.saturating_sub(steps);
        match outcome {
            SearchOutcome::NotLinearizable => Some(true),
            SearchOutcome::Linearizable => Some(false),
            SearchOutcome::MemoryLimit(_) | SearchOutcome::Deadline | SearchOutcome::StepLimit => None,
        }
    };
    let (prefix, breaking_completion) = shortest_failing_prefix(operations, &mut still_fails);
    let (operations, one_minimal) = drop_operations(prefix, &mut still_fails);
    Witness { operations, breaking_completion, one_minimal }
}

/// The counterexample for `key` shown by `witness`, a shrunk part of `all_operations` (the key's).
/// `line_of` gives the position reported for an event index.
pub(crate) fn counterexample(
    key: &str,
    events: &[HistoryEvent],
    all_operations: &[PairedOperation],
    witness: &Witness,
    line_of: &dyn Fn(usize) -> usize,
) -> Counterexample {
    let mut indexes: Vec<usize> = witness
        .operations
        .iter()
        .flat_map(|operation| std::iter::once(operation.invoke).chain(operation.completion))
        .collect();
    indexes.sort_unstable();
    let lines: Vec<String> = indexes.iter().map(|&index| line_of(index).to_string()).collect();
    let mut explanation = format!(
        "On key {key:?}, these {} of its {} operations (lines {}) cannot be ordered so that each takes \
         effect between its invocation and its completion while every read returns the value last \
         written, and every cas succeeds exactly when the key holds its expected value.",
        witness.operations.len(),
        all_operations.len(),
        lines.join(", ")
    );
    if let Some(breaking) = witness.breaking_completion {
        let event = &events[breaking];
        explanation.push_str(&format!(
            " The key's history is linearizable until the {} of {} on line {}.",
            type_name(event.event_type),
            describe(&event.function),
            line_of(breaking)
        ));
    }
    if witness.operations.iter().any(|operation| operation.completion.is_none()) {
        explanation.push_str(" Operations shown without a completion are pending: they may or may not take effect.");
    }
    if witness.one_minimal {
        explanation.push_str(" Without any one of these operations the rest is linearizable.");
    }
    Counterexample {
        key: key.to_owned(),
        events: indexes.iter().map(|&index| events[index].clone()).collect(),
        explanation,
    }
}

/// Whether a candidate sub-history is shown non-linearizable; `None` once the budget is spent or
/// a search hit a limit.
type Probe<'probe> = dyn FnMut(&[PairedOperation]) -> Option<bool> + 'probe;

/// The value an operation may have written: a write's (if it did not fail) or a CAS's new one.
/// A failed CAS counts too, so that a counterexample reading its value shows the CAS that failed.
fn written_value<'history>(events: &'history [HistoryEvent], operation: &PairedOperation) -> Option<&'history str> {
    let failed = operation.completion.is_some_and(|index| events[index].event_type == EventType::Fail);
    match &events[operation.invoke].function {
        Function::Write(Some(value)) if !failed => Some(value),
        Function::Cas { new, .. } => Some(new),
        _ => None,
    }
}

/// The invocation positions of the operations of `operations` that may have written each value.
fn writers<'history>(
    events: &'history [HistoryEvent],
    operations: &[PairedOperation],
) -> BTreeMap<&'history str, Vec<usize>> {
    let mut writers: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for operation in operations {
        if let Some(value) = written_value(events, operation) {
            writers.entry(value).or_default().push(operation.invoke);
        }
    }
    writers
}

/// Whether every value that an operation of `candidate` observed (a read's result, a successful
/// CAS's expected value), and that another operation of the key invoked before that observation
/// may have written (`all_writers`), may also have been written so within `candidate`. Shrinking
/// keeps to such candidates, so that a counterexample shows where the values it reads come from
/// instead of degenerating into "a read of a value never written".
fn keeps_writers(
    events: &[HistoryEvent],
    candidate: &[PairedOperation],
    all_writers: &BTreeMap<&str, Vec<usize>>,
) -> bool {
    let kept_writers = writers(events, candidate);
    candidate.iter().all(|operation| {
        let Some(completed) = operation.completion else { return true };
        let completion = &events[completed];
        let observed = match (&completion.function, completion.event_type) {
            (Function::Read, EventType::Ok) => completion.read_value.as_deref(),
            (Function::Cas { expected, .. }, EventType::Ok) => expected.as_deref(),
            _ => None,
        };
        let Some(value) = observed else { return true };
        let explained_in = |writers: &BTreeMap<&str, Vec<usize>>| {
            writers
                .get(value)
                .is_some_and(|invokes| invokes.iter().any(|&invoke| invoke != operation.invoke && invoke < completed))
        };
        !explained_in(all_writers) || explained_in(&kept_writers)
    })
}

/// The operations as seen by a history cut just after position `last`.
fn prefix_through(operations: &[PairedOperation], last: usize) -> Vec<PairedOperation> {
    operations
        .iter()
        .filter(|operation| operation.invoke <= last)
        .map(|operation| PairedOperation {
            invoke: operation.invoke,
            completion: operation.completion.filter(|&completion| completion <= last),
        })
        .collect()
}

/// The shortest non-linearizable prefix, cut just after some completion, and that completion.
fn shortest_failing_prefix(
    operations: &[PairedOperation],
    still_fails: &mut Probe<'_>,
) -> (Vec<PairedOperation>, Option<usize>) {
    let mut completions: Vec<usize> = operations.iter().filter_map(|operation| operation.completion).collect();
    completions.sort_unstable();
    // Invariant: cutting after completions[high] fails (the whole history does); cutting after
    // any completion before index `low` was not shown to fail.
    let (mut low, mut high) = (0, completions.len());
    if high == 0 {
        return (operations.to_vec(), None);
    }
    high -= 1;
    while low < high {
        let middle = low + (high - low) / 2;
        if still_fails(&prefix_through(operations, completions[middle])) == Some(true) {
            high = middle;
        } else {
            low = middle + 1;
        }
    }
    (prefix_through(operations, completions[high]), Some(completions[high]))
}

/// Drops chunks of operations (halves, quarters, ... single ones) while the rest still fails.
/// Returns what is left and whether a full pass of single drops changed nothing (when the budget
/// runs out first, `false`).
fn drop_operations(mut kept: Vec<PairedOperation>, still_fails: &mut Probe<'_>) -> (Vec<PairedOperation>, bool) {
    let mut chunk = kept.len().div_ceil(2).max(1);
    loop {
        let mut dropped_any = false;
        let mut start = 0;
        while start < kept.len() {
            let end = (start + chunk).min(kept.len());
            let candidate: Vec<PairedOperation> = kept[..start].iter().chain(&kept[end..]).copied().collect();
            match still_fails(&candidate) {
                None => return (kept, false),
                Some(true) => {
                    kept = candidate;
                    dropped_any = true;
                }
                Some(false) => start = end,
            }
        }
        if chunk > 1 {
            chunk = chunk.div_ceil(2);
        } else if !dropped_any {
            return (kept, true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn operation(invoke: usize, completion: usize) -> PairedOperation {
        PairedOperation { invoke, completion: Some(completion) }
    }

    #[test]
    fn a_prefix_turns_late_completions_into_pending_operations() {
        let operations = [operation(0, 5), operation(1, 2), operation(6, 7)];
        let prefix = prefix_through(&operations, 2);
        assert_eq!(prefix, vec![PairedOperation { invoke: 0, completion: None }, operation(1, 2)]);
    }

    #[test]
    fn finds_the_first_failing_completion_and_the_operations_that_matter() {
        // A pretend checker: the history "fails" once it holds operations 3 and 7 both completed.
        let operations: Vec<PairedOperation> = (0..10).map(|index| operation(index * 2, index * 2 + 1)).collect();
        let mut fails = |candidate: &[PairedOperation]| {
            Some([3, 7].iter().all(|&needed| candidate.contains(&operation(needed * 2, needed * 2 + 1))))
        };
        let (prefix, breaking) = shortest_failing_prefix(&operations, &mut fails);
        assert_eq!(breaking, Some(15));
        assert_eq!(prefix.len(), 8);
        let (kept, one_minimal) = drop_operations(prefix, &mut fails);
        assert_eq!(kept, vec![operation(6, 7), operation(14, 15)]);
        assert!(one_minimal);
    }

    #[test]
    fn a_spent_budget_keeps_the_larger_witness_and_does_not_claim_minimality() {
        let operations: Vec<PairedOperation> = (0..10).map(|index| operation(index * 2, index * 2 + 1)).collect();
        let mut probes_left = 3;
        let mut fails = |_: &[PairedOperation]| {
            probes_left -= 1;
            (probes_left >= 0).then_some(false)
        };
        let (kept, one_minimal) = drop_operations(operations.clone(), &mut fails);
        assert_eq!(kept, operations);
        assert!(!one_minimal);
    }
}
