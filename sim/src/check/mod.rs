//! The linearizability checker for the KV model (reads, writes, deletes and compare-and-swap).
//!
//! In the family of Porcupine: the history is split by key ([`partition`]), each key's operations
//! are searched with Wing & Gong's algorithm and Lowe's memoization ([`search`], [`cache`])
//! against a sequential register ([`model`]), and a failure is shrunk to a small sub-history
//! ([`witness`]). Histories come from the simulators as [`HistoryEvent`]s or from files in the
//! JSON-lines format ([`jsonl`]); malformed ones are refused with the position of the bad event
//! ([`pairing`]).
//!
//! Outcomes: `ok` completions must take effect between invocation and completion; a read or write
//! that `fail`s did not happen; a CAS that `fail`s was evaluated and saw a value other than the
//! expected one; an `info` completion (or none at all) leaves the operation pending: it may take
//! effect at any point after its invocation, or never.
//!
//! Limits: the search cache of each key is bounded by [`CheckLimits::memory_bytes_max`] (default
//! [`DEFAULT_MEMORY_BYTES_MAX`]); reaching it, or the optional deadline, gives
//! [`CheckOutcome::Unknown`] (and an error from [`check_history`]) rather than a guess. Shrinking
//! a counterexample costs at most [`WITNESS_SEARCHES_MAX`] further searches, which together take
//! at most [`WITNESS_WORK_FACTOR`] times the steps of the search that found the key not
//! linearizable (plus a fixed allowance); past that, the counterexample is the smallest found.

mod cache;
pub mod generate;
pub mod jsonl;
mod model;
mod pairing;
mod partition;
mod search;
mod witness;

use std::fmt;
use std::time::Instant;

pub use jsonl::{parse_jsonl, parse_jsonl_with_line_numbers, write_jsonl};
pub use witness::{WITNESS_SEARCHES_MAX, WITNESS_WORK_FACTOR};

use crate::history::HistoryEvent;
use search::{SearchLimits, SearchOutcome};

/// The default byte budget of one key's search cache: 1 GiB.
pub const DEFAULT_MEMORY_BYTES_MAX: usize = 1 << 30;

/// The checker's answer on a well-formed history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Some order of the operations respects real time and the KV model.
    Linearizable,
    /// No such order exists; the counterexample shows a small part that cannot be ordered.
    NotLinearizable(Counterexample),
}

/// A small sub-history of one key that is already not linearizable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Counterexample {
    /// The key whose history is not linearizable (the first such key in lexicographic order).
    pub key: String,
    /// The events of the sub-history, in history order: a well-formed history on its own, which
    /// the checker also finds not linearizable.
    pub events: Vec<HistoryEvent>,
    /// What the sub-history shows, for people, with the positions of its events in the input.
    pub explanation: String,
}

/// A malformed history: what is wrong and where.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct HistoryError {
    /// The 1-based position of the offending event (its line in a JSON-lines file), if any.
    pub line: Option<usize>,
    /// What is wrong, for people.
    pub message: String,
}

impl fmt::Display for HistoryError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(formatter, "line {line}: {}", self.message),
            None => formatter.write_str(&self.message),
        }
    }
}

/// Bounds on one check, so that a pathological history ends with "unknown" instead of running
/// out of memory or time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckLimits {
    /// Upper bound on one key's search cache, in bytes (the rest of the checker's memory is linear
    /// in the history's length).
    pub memory_bytes_max: usize,
    /// When to give up; `None` (the default) never does, which keeps the outcome deterministic.
    pub deadline: Option<Instant>,
    /// Upper bound on one key's search steps (deterministic, unlike `deadline`); `u64::MAX`
    /// (the default) never gives up.
    pub steps_max: u64,
    /// The position to report for each event (e.g. its line in a file); `None`: 1-based index.
    pub line_numbers: Option<Vec<usize>>,
}

impl Default for CheckLimits {
    fn default() -> Self {
        CheckLimits {
            memory_bytes_max: DEFAULT_MEMORY_BYTES_MAX,
            deadline: None,
            steps_max: u64::MAX,
            line_numbers: None,
        }
    }
}

/// The checker's answer when it may give up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckOutcome {
    /// The checker decided.
    Decided(Verdict),
    /// A limit was reached on `key` before it could decide (and no other key was found not
    /// linearizable).
    Unknown {
        /// The key whose search was cut short.
        key: String,
        /// Which limit, for people.
        reason: String,
    },
}

/// Checks a history against the KV model with the default limits (no deadline, so the answer is
/// deterministic). Reaching the memory limit is reported as an error whose `line` is `None`:
/// the caller must not take it as either verdict.
pub fn check_history(history: &[HistoryEvent]) -> Result<Verdict, HistoryError> {
    match check_history_with_limits(history, &CheckLimits::default())? {
        CheckOutcome::Decided(verdict) => Ok(verdict),
        CheckOutcome::Unknown { key, reason } => {
            Err(HistoryError { line: None, message: format!("the checker gave up on key {key:?}: {reason}") })
        }
    }
}

/// Checks a history within `limits`. Keys are searched in lexicographic order; the first key
/// found not linearizable decides, and a key cut short by a limit gives `Unknown` only if no
/// later key is found not linearizable.
pub fn check_history_with_limits(history: &[HistoryEvent], limits: &CheckLimits) -> Result<CheckOutcome, HistoryError> {
    let line_of =
        |index: usize| limits.line_numbers.as_ref().and_then(|lines| lines.get(index).copied()).unwrap_or(index + 1);
    let operations = pairing::pair_events(history, &line_of)?;
    let search_limits = SearchLimits {
        memory_bytes_max: limits.memory_bytes_max,
        deadline: limits.deadline,
        steps_max: limits.steps_max,
    };
    let mut unknown = None;
    for (key, key_operations) in partition::split_by_key(history, &operations) {
        let input = partition::search_operations(history, &key_operations);
        let (outcome, steps) = search::search(&input, search_limits);
        let reason = match outcome {
            SearchOutcome::Linearizable => continue,
            SearchOutcome::NotLinearizable => {
                let witness_limits = SearchLimits { steps_max: witness::witness_steps_max(steps), ..search_limits };
                let witness = witness::shrink(history, &key_operations, witness_limits);
                let counterexample = witness::counterexample(key, history, &key_operations, &witness, &line_of);
                return Ok(CheckOutcome::Decided(Verdict::NotLinearizable(counterexample)));
            }
            SearchOutcome::MemoryLimit(full) => format!(
                "its search cache reached the memory limit of {} bytes ({} configurations) on {} operations",
                limits.memory_bytes_max,
                full.entries,
                input.len()
            ),
            SearchOutcome::Deadline => format!("the deadline passed while searching its {} operations", input.len()),
            SearchOutcome::StepLimit => {
                format!("{} search steps did not decide its {} operations", limits.steps_max, input.len())
            }
        };
        unknown.get_or_insert(CheckOutcome::Unknown { key: key.to_owned(), reason });
    }
    Ok(unknown.unwrap_or(CheckOutcome::Decided(Verdict::Linearizable)))
}
