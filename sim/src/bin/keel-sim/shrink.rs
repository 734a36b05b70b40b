//! `keel-sim shrink --seed N [overrides]`: minimises a failing run (fewer nodes, faults, client
//! operations and clients, parts of the fault mix off) while it still fails with the same kind of
//! violation, then prints the minimal parameters and the `keel-sim run` command that reproduces
//! the minimal run. Also the first-failure mode of `keel-sim sweep` (`--first-failure`, implied
//! by `--planted-bug`): stop at the lowest failing seed and report the wall time to it.
//! Exit codes: 0 shrunk (or, for the sweep, a failing seed found); 1 nothing failed; 2 the seed
//! given to shrink does not fail.

use std::process::ExitCode;

use keel_sim::pure::planted::first_failure;
use keel_sim::pure::shrink::{shrink, Overrides, RunSize};

use crate::run::reproduce_command;
use crate::sweep::SweepArgs;

/// Arguments of `keel-sim shrink`.
#[derive(Debug, clap::Args)]
pub struct ShrinkArgs {
    /// The failing seed.
    #[arg(long)]
    pub seed: u64,
    /// Overrides the failing run was found with (a planted bug, a fault mix, ...).
    #[command(flatten)]
    pub overrides: Overrides,
}

fn describe(size: &RunSize) -> String {
    format!(
        "{} nodes, {} operations, {} clients, {} faults, {} steps",
        size.nodes, size.operations, size.clients, size.faults, size.steps
    )
}

/// Runs `keel-sim shrink`.
pub fn run(arguments: &ShrinkArgs) -> ExitCode {
    let mut progress = |line: &str| println!("  {line}");
    let shrunk = match shrink(arguments.seed, arguments.overrides.clone(), &mut progress) {
        Ok(shrunk) => shrunk,
        Err(why) => {
            eprintln!("keel-sim shrink: {why}");
            return ExitCode::from(2);
        }
    };
    println!("original: {}", describe(&shrunk.original_size));
    println!("  FAIL ({}): {}", shrunk.detector, shrunk.original_failure);
    println!("minimal after {} runs: {}", shrunk.runs, describe(&shrunk.minimal_size));
    println!("  FAIL ({}): {}", shrunk.detector, shrunk.minimal_failure);
    println!("reproduce the minimal run with: {}", reproduce_command(shrunk.seed, &shrunk.minimal));
    ExitCode::SUCCESS
}

/// Whether the overrides plant a bug (always false without the `planted-bugs` feature).
pub fn plants_a_bug(overrides: &Overrides) -> bool {
    #[cfg(feature = "planted-bugs")]
    if overrides.planted_bug.is_some() {
        return true;
    }
    let _ = overrides;
    false
}

/// `keel-sim sweep --first-failure`: the lowest failing seed of the range and the time to it.
pub fn sweep_to_first_failure(arguments: &SweepArgs) -> ExitCode {
    let (first, end) = arguments.seeds;
    let scenario_of = |seed: u64| arguments.overrides.scenario(seed);
    let started = std::time::Instant::now();
    let Some(found) = first_failure(first..end, arguments.jobs, &scenario_of) else {
        let elapsed = started.elapsed().as_secs_f64();
        println!("no failure in seeds {first}..{end} ({elapsed:.1} s){}", arguments.overrides.args());
        return ExitCode::FAILURE;
    };
    println!(
        "first failing seed {} after {:.2} s ({} seeds run); found by {}",
        found.seed,
        found.elapsed.as_secs_f64(),
        found.seeds_run,
        found.detector
    );
    println!("FAIL seed {}: {}", found.seed, found.violation);
    println!("  reproduce: {}", reproduce_command(found.seed, &arguments.overrides));
    println!("  shrink:    keel-sim shrink --seed {}{}", found.seed, arguments.overrides.args());
    ExitCode::SUCCESS
}
