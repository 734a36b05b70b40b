//! `keel-sim run --seed N`: runs one seed of the pure simulator and reports its verdict, its
//! trace hash (equal on every run of the same seed and options) and its figures. `--trace FILE`
//! writes the trace file (a header with the whole scenario, then one JSON line per event) that
//! `keel-sim replay` re-executes and `keel-sim render` draws; `--check-determinism` runs the seed
//! a second time and compares trace hashes; `--history FILE` writes the client history in the
//! format `keel-sim check` reads. Exit code 0 when the run found no bug, 1 otherwise.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use keel_sim::pure::outcome::run_traced_catching;
use keel_sim::pure::planted::run_catching as run_scenario;
use keel_sim::pure::replay::check_determinism;
use keel_sim::pure::shrink::Overrides;
use keel_sim::pure::trace::Trace;
use keel_sim::pure::{RunOutcome, RunVerdict, Scenario};

/// Arguments of `keel-sim run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The seed: it determines the whole run.
    #[arg(long)]
    pub seed: u64,
    /// Overrides of the seed's scenario (cluster and workload size, fault mix, planted bug).
    #[command(flatten)]
    pub overrides: Overrides,
    /// Write the trace as JSON lines to this file.
    #[arg(long)]
    pub trace: Option<PathBuf>,
    /// Write the client history as JSON lines (for `keel-sim check`) to this file.
    #[arg(long)]
    pub history: Option<PathBuf>,
    /// Run the seed a second time and compare the trace hashes (exit 1 if they differ).
    #[arg(long)]
    pub check_determinism: bool,
}

/// The scenario of a seed with the command line's overrides.
pub fn scenario_of(seed: u64, overrides: &Overrides) -> Scenario {
    overrides.scenario(seed)
}

/// The command line that reproduces a run.
pub fn reproduce_command(seed: u64, overrides: &Overrides) -> String {
    format!("keel-sim run --seed {seed}{}", overrides.args())
}

/// Writes `lines` to `path`, one a line.
pub fn write_lines(path: &PathBuf, lines: &[String]) -> std::io::Result<()> {
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(path, text)
}

/// One line describing a run's verdict.
pub fn describe_verdict(outcome: &RunOutcome) -> String {
    match &outcome.verdict {
        RunVerdict::Passed => "PASS".to_string(),
        RunVerdict::ExpectedLeaseViolation(why) => format!("PASS (expected lease violation: {why})"),
        RunVerdict::Failed(why) => format!("FAIL: {why}"),
    }
}

/// Runs `keel-sim run`.
pub fn run(arguments: &RunArgs) -> ExitCode {
    let scenario = scenario_of(arguments.seed, &arguments.overrides);
    println!("seed {}: {}", arguments.seed, scenario.describe());
    let started = Instant::now();
    // With a trace, a run stopped by a panic (a keel-core assertion) still leaves its trace.
    let outcome = match arguments.trace {
        Some(_) => run_traced_catching(scenario, Trace::new(true)).0,
        None => run_scenario(scenario, false),
    };
    let elapsed = started.elapsed();
    println!("{}", describe_verdict(&outcome));
    println!(
        "trace hash {:016x} ({} events); {} ms simulated in {:.1} ms; {} messages delivered; operations ok {} fail {} info {}",
        outcome.trace_hash,
        outcome.trace_events,
        outcome.simulated_ms,
        elapsed.as_secs_f64() * 1e3,
        outcome.messages_delivered,
        outcome.operations.ok,
        outcome.operations.fail,
        outcome.operations.info
    );
    for corruption in &outcome.detected_corruptions {
        println!("detected (expected after a bit flip): {corruption}");
    }
    if let (Some(path), Some(text)) = (&arguments.trace, outcome.trace_file()) {
        match std::fs::write(path, text) {
            Ok(()) => println!("trace written to {} (keel-sim replay / render read it)", path.display()),
            Err(error) => eprintln!("could not write the trace to {}: {error}", path.display()),
        }
    }
    if let Some(path) = &arguments.history {
        let lines: Vec<String> = keel_sim::check::write_jsonl(&outcome.history).lines().map(str::to_string).collect();
        if let Err(error) = write_lines(path, &lines) {
            eprintln!("could not write the history to {}: {error}", path.display());
        }
    }
    let deterministic = !arguments.check_determinism
        || check_determinism(&outcome, run_scenario)
            .inspect(|note| println!("{note}"))
            .inspect_err(|why| println!("FAIL: {why}"))
            .is_ok();
    if outcome.passed() && deterministic {
        ExitCode::SUCCESS
    } else {
        println!("reproduce with: {}", reproduce_command(arguments.seed, &arguments.overrides));
        ExitCode::FAILURE
    }
}
