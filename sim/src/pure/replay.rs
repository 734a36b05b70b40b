//! Replaying a trace file: the run is rebuilt from the header's scenario and executed again with
//! a trace that compares every event it produces, in order, with the recorded line; the run stops
//! at the first difference. A trace replays identically exactly when the simulator (and the core
//! it drives) behave as when the trace was written.
//!
//! Data flow: `keel-sim replay FILE` reads the file with [`super::header::TraceFile::parse`],
//! calls [`replay`] and prints the [`ReplayReport`]. The cheaper determinism self-check
//! ([`check_determinism`], `keel-sim run --check-determinism`, `sweep --check-determinism`)
//! compares only trace hashes of two runs.

use super::header::{TraceFile, SIMULATOR_VERSION};
use super::outcome::{run_traced_catching, RunOutcome, RunVerdict};
use super::scenario::Scenario;
use super::trace::{Divergence, Trace};

/// What a replay found.
#[derive(Clone, Debug)]
pub struct ReplayReport {
    /// Events compared equal before the end or the first difference (the `end` line included).
    pub lines_verified: usize,
    /// Where the replay first differed, if it did.
    pub divergence: Option<Divergence>,
    /// The replayed run's verdict.
    pub verdict: RunVerdict,
    /// The replayed run's trace hash.
    pub trace_hash: u64,
    /// The simulator that wrote the trace, when it is not this one (a difference may come from
    /// the change of version).
    pub other_version: Option<String>,
}

impl ReplayReport {
    /// Whether the replay reproduced every recorded line.
    pub fn identical(&self) -> bool {
        self.divergence.is_none()
    }
}

/// Re-executes `file`'s run and verifies it line by line (a run that panicked when it was
/// recorded must panic at the same event with the same message).
pub fn replay(file: &TraceFile) -> ReplayReport {
    let expected: Vec<String> = file.lines.iter().map(|line| line.text.clone()).collect();
    let first_line = file.lines.first().map_or(2, |line| line.number);
    let (outcome, divergence) =
        run_traced_catching(file.header.scenario.clone(), Trace::verifying(expected, first_line));
    let verified = match &divergence {
        Some(divergence) => divergence.line - first_line,
        None => file.lines.len(),
    };
    ReplayReport {
        lines_verified: verified,
        divergence,
        verdict: outcome.verdict,
        trace_hash: outcome.trace_hash,
        other_version: (file.header.simulator != SIMULATOR_VERSION).then(|| file.header.simulator.clone()),
    }
}

/// The prefix of the failure a nondeterministic run reports.
pub const NONDETERMINISTIC: &str = "nondeterministic";

/// The determinism self-check: runs `first`'s scenario again with `rerun` (hash only) and
/// compares trace hash, event count and verdict. `Ok` carries a line for people; `Err` says how
/// the two runs differed.
pub fn check_determinism(
    first: &RunOutcome,
    rerun: impl FnOnce(Scenario, bool) -> RunOutcome,
) -> Result<String, String> {
    let second = rerun(first.scenario.clone(), false);
    let same = (first.trace_hash, first.trace_events) == (second.trace_hash, second.trace_events);
    if same && first.verdict == second.verdict {
        return Ok(format!("determinism: a second run gave the same trace hash {:016x}", second.trace_hash));
    }
    Err(format!(
        "{NONDETERMINISTIC}: seed {} gave trace hash {:016x} ({} events, {}), then {:016x} ({} events, {})",
        first.scenario.seed,
        first.trace_hash,
        first.trace_events,
        first.verdict.describe(),
        second.trace_hash,
        second.trace_events,
        second.verdict.describe()
    ))
}
