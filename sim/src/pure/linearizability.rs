//! The linearizability verdict of a run, from the checker in `crate::check`.
//!
//! Data flow: the [`Recorder`]'s history goes to `check_history`. When clocks ran beyond the
//! drift bound and the history is not linearizable, the history is checked again without its
//! lease reads: if that one is linearizable, the stale lease reads alone explain the violation,
//! which is what the beyond-bound mode exists to show, and the run reports it as expected.

use super::outcome::RunVerdict;
use super::recorder::Recorder;
use crate::check::{check_history_with_limits, CheckLimits, CheckOutcome, HistoryError, Verdict};

/// Search steps one key of a run's history may take. Correct runs need far fewer (a standard
/// seed's whole check takes milliseconds); a history with many operations pending forever can
/// make the search exponential, and a run must end whatever its history (a sweep waits for every
/// seed it started). Counted in steps, not time, so that the verdict stays deterministic.
pub const SEARCH_STEPS_MAX: u64 = 2_000_000;

/// How an undecided check's failure verdict begins (see [`SEARCH_STEPS_MAX`]).
pub const UNDECIDED: &str = "linearizability check could not decide";

/// The checker's verdict on `history` within [`SEARCH_STEPS_MAX`]; undecided is an error.
fn check(history: &[crate::history::HistoryEvent]) -> Result<Verdict, HistoryError> {
    let limits = CheckLimits { steps_max: SEARCH_STEPS_MAX, ..CheckLimits::default() };
    match check_history_with_limits(history, &limits)? {
        CheckOutcome::Decided(verdict) => Ok(verdict),
        CheckOutcome::Unknown { key, reason } => {
            Err(HistoryError { line: None, message: format!("the checker gave up on key {key:?}: {reason}") })
        }
    }
}

/// The verdict on `recorder`'s history. A history the checker cannot decide within its step
/// budget fails the run (it is not shown linearizable).
pub fn verdict(recorder: &Recorder, clocks_beyond_bound: bool) -> RunVerdict {
    let history = recorder.history(false);
    let counterexample = match check(&history) {
        Ok(Verdict::Linearizable) => return RunVerdict::Passed,
        Ok(Verdict::NotLinearizable(counterexample)) => counterexample,
        Err(error) => return RunVerdict::Failed(format!("{UNDECIDED}: {error}")),
    };
    let described = format!("not linearizable on key {:?}: {}", counterexample.key, counterexample.explanation);
    if clocks_beyond_bound && recorder.has_lease_reads() {
        let without_leases = recorder.history(true);
        if matches!(check(&without_leases), Ok(Verdict::Linearizable)) {
            return RunVerdict::ExpectedLeaseViolation(format!(
                "clocks beyond the drift bound made lease reads stale (the history without them is linearizable): {described}"
            ));
        }
    }
    RunVerdict::Failed(described)
}
