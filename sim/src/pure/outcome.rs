//! Running one seed to the end: the fault phase, the liveness phase (every fault healed; the
//! cluster must converge, answer every pending operation and accept a probe write within the
//! bound), and the final checks (acknowledged writes, final state against the reference model,
//! the weak checks, the etcd checks, and linearizability of the client history).
//!
//! Data flow: [`run`] builds a [`Simulator`] from a [`Scenario`], steps it until the run ends
//! and returns a [`RunOutcome`] with the verdict, the trace hash and the figures a report needs.
//! [`run_traced`] does the same with a given [`Trace`]: one that verifies a recorded trace stops
//! the run at the first difference (`keel-sim replay`); [`run_traced_catching`] also turns a
//! panic into a failure and keeps the trace up to it.

use std::panic::{catch_unwind, AssertUnwindSafe};

use keel_core::{Index, NodeId};

use super::clients::{ClientState, Stage};
use super::etcd_history::EtcdSummary;
use super::header::TraceHeader;
use super::invariants::check_acknowledged;
use super::recorder::OutcomeCounts;
use super::scenario::Scenario;
use super::simulator::{Phase, Simulator};
use super::trace::{Divergence, EventKind, Trace};
use super::weak_checks;
use crate::history::HistoryEvent;

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunVerdict {
    /// Every check passed.
    Passed,
    /// A check failed: a bug (in the core, the store, or the simulator).
    Failed(String),
    /// Clocks ran beyond the configured drift bound and lease reads returned stale values: the
    /// violation that mode exists to show. The history without lease reads is linearizable.
    ExpectedLeaseViolation(String),
}

/// Everything a report or a test needs from one run.
#[derive(Debug)]
pub struct RunOutcome {
    /// The scenario that ran.
    pub scenario: Scenario,
    /// The verdict.
    pub verdict: RunVerdict,
    /// The trace hash (equal for two runs of one scenario).
    pub trace_hash: u64,
    /// Events in the trace.
    pub trace_events: u64,
    /// The trace as JSON lines (events and the `end` line, without the header), when asked for.
    pub trace_lines: Option<Vec<String>>,
    /// Messages delivered to nodes.
    pub messages_delivered: u64,
    /// Loop steps.
    pub steps: u64,
    /// Simulated time at the end.
    pub simulated_ms: u64,
    /// Completed client operations by outcome.
    pub operations: OutcomeCounts,
    /// Faults the scheduler injected (their endings not counted).
    pub faults_injected: u64,
    /// Storage corruptions the nodes detected (expected after bit flips).
    pub detected_corruptions: Vec<String>,
    /// The client history given to the linearizability checker.
    pub history: Vec<HistoryEvent>,
    /// What the etcd operations exercised.
    pub etcd: EtcdSummary,
    /// Keys and leases deleted by expiry (each checked not to be early).
    pub expiries: usize,
}

impl RunVerdict {
    /// One line for people: `PASS`, `PASS (expected lease violation: ..)` or `FAIL: ..`.
    pub fn describe(&self) -> String {
        match self {
            RunVerdict::Passed => "PASS".to_string(),
            RunVerdict::ExpectedLeaseViolation(why) => format!("PASS (expected lease violation: {why})"),
            RunVerdict::Failed(why) => format!("FAIL: {why}"),
        }
    }
}

impl RunOutcome {
    /// Whether the run found no bug (an expected lease violation is not one).
    pub fn passed(&self) -> bool {
        !matches!(self.verdict, RunVerdict::Failed(_))
    }

    /// The trace file's text (header, events, `end` line), when the trace lines were kept.
    pub fn trace_file(&self) -> Option<String> {
        let lines = self.trace_lines.as_ref()?;
        let mut text = TraceHeader::new(&self.scenario).line();
        text.push('\n');
        for line in lines {
            text.push_str(line);
            text.push('\n');
        }
        Some(text)
    }
}

/// Runs `scenario` to its end; `keep_trace_lines` keeps the JSON-lines trace.
pub fn run(scenario: Scenario, keep_trace_lines: bool) -> RunOutcome {
    run_traced(scenario, Trace::new(keep_trace_lines)).0
}

/// Runs `scenario` to its end with `trace`; a verifying trace stops the run where it diverges
/// (the verdict is then a failure) and the divergence comes back with the outcome.
pub fn run_traced(scenario: Scenario, trace: Trace) -> (RunOutcome, Option<Divergence>) {
    let mut simulator = Simulator::with_trace(scenario, trace);
    let verdict = simulator.play();
    conclude(simulator, verdict)
}

/// The start of the verdict of a run that panicked: a keel-core assertion fired (a planted bug,
/// or a real one), or the simulator itself has a bug.
pub const PANICKED: &str = "core assertion (keel-core panicked)";

/// [`run_traced`], except that a panic inside the run is caught: the run then fails with the
/// panic's message, and its trace holds every event up to the panic, then the `end` line, so
/// that a run stopped by a keel-core assertion can still be replayed and rendered.
pub fn run_traced_catching(scenario: Scenario, trace: Trace) -> (RunOutcome, Option<Divergence>) {
    let mut simulator = Simulator::with_trace(scenario, trace);
    let played = catch_unwind(AssertUnwindSafe(|| simulator.play()));
    let verdict = played.unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|text| (*text).to_string()))
            .unwrap_or_else(|| "a panic without a message".to_string());
        RunVerdict::Failed(format!("{PANICKED}: {message}"))
    });
    conclude(simulator, verdict)
}

/// Ends the trace with `verdict` and gathers the outcome.
fn conclude(mut simulator: Simulator, verdict: RunVerdict) -> (RunOutcome, Option<Divergence>) {
    simulator.trace.finish(simulator.now_ms, &verdict.describe());
    let history = simulator.recorder.history(false);
    let divergence = simulator.trace.divergence().cloned();
    let outcome = RunOutcome {
        verdict,
        trace_hash: simulator.trace.hash(),
        trace_events: simulator.trace.events(),
        trace_lines: simulator.trace.take_lines(),
        messages_delivered: simulator.messages_delivered(),
        steps: simulator.steps,
        simulated_ms: simulator.now_ms,
        operations: simulator.recorder.counts,
        faults_injected: simulator.faults.drawn(),
        detected_corruptions: simulator.detected_corruptions.clone(),
        history,
        etcd: simulator.etcd.summary(),
        expiries: simulator.committed.expiries.len(),
        scenario: simulator.scenario,
    };
    (outcome, divergence)
}

impl Simulator {
    /// Plays the run's phases, then its final checks.
    fn play(&mut self) -> RunVerdict {
        self.run_phases();
        match self.violation.clone() {
            _ if self.trace.diverged() => RunVerdict::Failed("the run diverged from the recorded trace".into()),
            Some(violation) => RunVerdict::Failed(violation),
            None => self.final_checks(),
        }
    }

    fn run_phases(&mut self) {
        while self.violation.is_none() && !self.trace.diverged() {
            self.step();
            match self.phase {
                Phase::Faults if !self.workload.wants_more() => self.start_liveness(),
                Phase::Liveness { started_ms } => {
                    if self.is_settled() {
                        return;
                    }
                    if self.now_ms > started_ms + self.scenario.liveness_bound_ms {
                        let pending = self.clients.iter().filter(|c| c.stage != Stage::Idle || c.required > 0).count();
                        self.violate(format!(
                            "liveness: {} ms after healing every fault, {pending} clients still wait and the cluster {} converged",
                            self.scenario.liveness_bound_ms,
                            if self.is_converged() { "has" } else { "has not" }
                        ));
                    }
                }
                Phase::Faults => {}
            }
        }
    }

    fn start_liveness(&mut self) {
        self.phase = Phase::Liveness { started_ms: self.now_ms };
        self.trace.record(EventKind::Liveness, self.now_ms, &[], String::new);
        self.heal_everything();
        let mut probe = ClientState::new(u64::from(self.scenario.client_count));
        probe.required = 1;
        probe.next_action_ms = self.now_ms;
        self.clients.push(probe);
    }

    fn is_settled(&self) -> bool {
        self.clients.iter().all(|c| c.stage == Stage::Idle && c.required == 0) && self.is_converged()
    }

    /// A leader leads, has committed its whole log, and every running member applied it all.
    fn is_converged(&self) -> bool {
        let Some(leader) = self.leader() else { return false };
        let raft = self.nodes[&leader].raft.as_ref().expect("leader runs");
        let commit = raft.commit_index();
        if commit < raft.last_log_id().index {
            return false;
        }
        let members = raft.membership().members();
        self.running_members(&members).iter().all(|(_, applied)| *applied >= commit)
    }

    fn running_members(&self, members: &std::collections::BTreeSet<NodeId>) -> Vec<(NodeId, Index)> {
        members
            .iter()
            .filter_map(|id| self.nodes.get(id).and_then(|n| n.raft.as_ref()).map(|r| (*id, r.applied_index())))
            .collect()
    }

    fn final_checks(&mut self) -> RunVerdict {
        self.check_nodes_now();
        if let Some(violation) = self.violation.clone() {
            return RunVerdict::Failed(violation);
        }
        let leader = self.leader().expect("a settled run has a leader");
        let members = self.nodes[&leader].raft.as_ref().expect("leader runs").membership().members();
        let applied = self.running_members(&members);
        if let Err(violation) = check_acknowledged(&self.recorder.acknowledged, &self.committed, &applied) {
            return RunVerdict::Failed(violation);
        }
        if let Err(violation) = self.check_final_state(&applied) {
            return RunVerdict::Failed(violation);
        }
        if let Err(violation) = weak_checks::check(&self.recorder, &self.committed) {
            return RunVerdict::Failed(violation);
        }
        if let Err(violation) = super::etcd_checks::check(&self.etcd, &self.committed, &self.scenario.clock) {
            return RunVerdict::Failed(violation);
        }
        super::linearizability::verdict(&self.recorder, self.scenario.clock.beyond_bound)
    }

    /// Every running member that applied the whole committed log holds the reference state.
    fn check_final_state(&self, applied: &[(NodeId, Index)]) -> Result<(), String> {
        let expected = self.committed.final_state();
        for (id, index) in applied {
            if *index != self.committed.last_index() {
                continue;
            }
            let store = &self.nodes[id].kv;
            let all = store.range(&keel_core::kv::KeyRange::all(), None, 0).map_err(|e| e.to_string())?;
            let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
            let actual: std::collections::BTreeMap<String, String> =
                all.kvs.iter().map(|kv| (text(&kv.key), text(&kv.value))).collect();
            if actual != expected {
                return Err(format!("node {id}'s final store {actual:?} differs from the reference {expected:?}"));
            }
        }
        Ok(())
    }
}
