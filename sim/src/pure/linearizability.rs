//! The linearizability verdict of a run, from the checker in `crate::check`.
//!
//! Data flow: the [`Recorder`]'s history goes to `check_history`. When clocks ran beyond the
//! drift bound and the history is not linearizable, the history is checked again without its
//! lease reads: if that one is linearizable, the stale lease reads alone explain the violation,
//! which is what the beyond-bound mode exists to show, and the run reports it as expected.

use super::outcome::RunVerdict;
use super::recorder::Recorder;
use crate::check::{check_history, Verdict};

/// The verdict on `recorder`'s history.
pub fn verdict(recorder: &Recorder, clocks_beyond_bound: bool) -> RunVerdict {
    let history = recorder.history(false);
    let counterexample = match check_history(&history) {
        Ok(Verdict::Linearizable) => return RunVerdict::Passed,
        Ok(Verdict::NotLinearizable(counterexample)) => counterexample,
        Err(error) => return RunVerdict::Failed(format!("linearizability check could not decide: {error}")),
    };
    let described = format!("not linearizable on key {:?}: {}", counterexample.key, counterexample.explanation);
    if clocks_beyond_bound && recorder.has_lease_reads() {
        let without_leases = recorder.history(true);
        if matches!(check_history(&without_leases), Ok(Verdict::Linearizable)) {
            return RunVerdict::ExpectedLeaseViolation(format!(
                "clocks beyond the drift bound made lease reads stale (the history without them is linearizable): {described}"
            ));
        }
    }
    RunVerdict::Failed(described)
}
