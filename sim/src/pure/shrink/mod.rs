//! Shrinking a failing seed (`keel-sim shrink --seed N`): the smallest run of that seed found by
//! greedy search that still fails with the same kind of violation (the same checker, see
//! `planted::detector`). Fewer nodes (5 → 3), parts of the fault mix switched off, a cap on the
//! number of faults, fewer client operations and fewer clients; each candidate is one run.
//!
//! Data flow: [`shrink`] starts from the seed and the command line's [`Overrides`], runs it to
//! get the failure to keep, then tries each reduction in turn, keeping those under which the run
//! still fails the same way, and repeats the passes until none helps. The result is a set of
//! overrides: `keel-sim run --seed N` plus [`Overrides::args`] reproduces the minimal run.

mod overrides;

pub use overrides::{FaultSwitch, Overrides};

use super::outcome::{RunOutcome, RunVerdict};
use super::planted::{detector, run_catching};

/// Passes over every reduction, at most (each pass after the first only runs when one helped).
const PASSES_MAX: usize = 3;

/// What shrinking found.
#[derive(Clone, Debug)]
pub struct Shrunk {
    /// The seed.
    pub seed: u64,
    /// The overrides the search started from, and the run they gave.
    pub original: Overrides,
    /// The original run's failure.
    pub original_failure: String,
    /// Client operations and faults of the original run.
    pub original_size: RunSize,
    /// The smallest overrides found that still fail the same way.
    pub minimal: Overrides,
    /// The minimal run's failure.
    pub minimal_failure: String,
    /// Client operations and faults of the minimal run.
    pub minimal_size: RunSize,
    /// The checker both failures come from.
    pub detector: &'static str,
    /// Runs made by the search.
    pub runs: u64,
}

/// The size of one run, for comparing the original and the shrunk one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunSize {
    /// Initial voters.
    pub nodes: u32,
    /// Client operations invoked in the fault phase.
    pub operations: u64,
    /// Concurrent clients.
    pub clients: u32,
    /// Faults injected.
    pub faults: u64,
    /// Loop steps.
    pub steps: u64,
}

impl RunSize {
    fn of(outcome: &RunOutcome) -> Self {
        Self {
            nodes: outcome.scenario.node_count,
            operations: outcome.scenario.operation_count,
            clients: outcome.scenario.client_count,
            faults: outcome.faults_injected,
            steps: outcome.steps,
        }
    }
}

/// The search state: the best overrides so far and what runs cost.
struct Search<'a> {
    seed: u64,
    detector: &'static str,
    best: Overrides,
    best_outcome: RunOutcome,
    runs: u64,
    progress: &'a mut dyn FnMut(&str),
}

impl Search<'_> {
    /// Runs `candidate`; keeps it when it fails the same way and is no bigger than the best run
    /// in nodes, operations, clients or faults injected (a run with fewer nodes or operations can
    /// run longer before it fails and so draw more faults: that is not smaller). Returns whether
    /// it was kept.
    fn try_candidate(&mut self, candidate: Overrides) -> bool {
        if candidate == self.best {
            return false;
        }
        self.runs += 1;
        let outcome = run_catching(candidate.scenario(self.seed), false);
        let (size, best) = (RunSize::of(&outcome), RunSize::of(&self.best_outcome));
        let no_bigger = size.nodes <= best.nodes
            && size.operations <= best.operations
            && size.clients <= best.clients
            && size.faults <= best.faults;
        let same = no_bigger && matches!(&outcome.verdict, RunVerdict::Failed(why) if detector(why) == self.detector);
        if same {
            (self.progress)(&format!("still fails with{}", candidate.args()));
            self.best = candidate;
            self.best_outcome = outcome;
        }
        same
    }

    /// The smallest value in `low..=high` for which `with(value)` still fails, assuming `high`
    /// does (bisection; failure need not be monotonic, so this is a local minimum).
    fn bisect(&mut self, mut low: u64, mut high: u64, with: impl Fn(&Overrides, u64) -> Overrides) -> bool {
        let mut improved = false;
        while low < high {
            let middle = low + (high - low) / 2;
            if self.try_candidate(with(&self.best, middle)) {
                high = middle;
                improved = true;
            } else {
                low = middle + 1;
            }
        }
        improved
    }

    /// A cap above the faults the best run injected changes nothing: lower it to that number.
    fn tighten_fault_cap(&mut self) {
        let injected = self.best_outcome.faults_injected;
        if self.best.faults.is_some_and(|cap| cap > injected) {
            self.try_candidate(Overrides { faults: Some(injected), ..self.best.clone() });
        }
    }

    fn shrink_nodes(&mut self) -> bool {
        let nodes = self.best_outcome.scenario.node_count;
        nodes > 3 && self.try_candidate(Overrides { nodes: Some(3), ..self.best.clone() })
    }

    fn shrink_switches(&mut self) -> bool {
        let mut improved = false;
        for switch in FaultSwitch::ALL {
            if switch.is_on(&self.best_outcome.scenario) {
                let mut candidate = self.best.clone();
                candidate.without.push(switch);
                candidate.without.sort();
                improved |= self.try_candidate(candidate);
            }
        }
        improved
    }

    fn shrink_faults(&mut self) -> bool {
        let injected = self.best_outcome.faults_injected;
        self.bisect(0, injected, |best, faults| Overrides { faults: Some(faults), ..best.clone() })
    }

    fn shrink_operations(&mut self) -> bool {
        let operations = self.best_outcome.scenario.operation_count;
        self.bisect(1, operations, |best, ops| Overrides { ops: Some(ops), ..best.clone() })
    }

    fn shrink_clients(&mut self) -> bool {
        let clients = self.best_outcome.scenario.client_count;
        self.bisect(1, clients.into(), |best, clients| Overrides { clients: Some(clients as u32), ..best.clone() })
    }
}

/// Shrinks the failing run of `seed` under `start`. `progress` hears of every reduction kept.
/// Fails when the run does not fail to begin with.
pub fn shrink(seed: u64, start: Overrides, progress: &mut dyn FnMut(&str)) -> Result<Shrunk, String> {
    let original = run_catching(start.scenario(seed), false);
    let RunVerdict::Failed(original_failure) = original.verdict.clone() else {
        return Err(format!("seed {seed} does not fail{}: nothing to shrink", start.args()));
    };
    let original_size = RunSize::of(&original);
    let detector = detector(&original_failure);
    let mut search = Search { seed, detector, best: start.clone(), best_outcome: original, runs: 1, progress };
    for _ in 0..PASSES_MAX {
        let mut improved = search.shrink_nodes();
        improved |= search.shrink_switches();
        improved |= search.shrink_faults();
        improved |= search.shrink_operations();
        improved |= search.shrink_clients();
        if !improved {
            break;
        }
    }
    search.tighten_fault_cap();
    let minimal_failure = match &search.best_outcome.verdict {
        RunVerdict::Failed(why) => why.clone(),
        _ => unreachable!("only failing runs are kept"),
    };
    Ok(Shrunk {
        seed,
        original: start,
        original_failure,
        original_size,
        minimal_size: RunSize::of(&search.best_outcome),
        minimal: search.best,
        minimal_failure,
        detector,
        runs: search.runs,
    })
}
