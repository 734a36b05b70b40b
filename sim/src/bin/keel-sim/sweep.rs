//! `keel-sim sweep --seeds A..B --jobs J`: runs every seed of the range with the pure simulator,
//! `J` runs at a time (each run is single-threaded and deterministic, so running them on several
//! threads changes nothing in any run). Shows a progress bar, then a summary; every failure
//! prints the one command that reproduces it and has its trace written (the failing seed is run
//! again with the trace kept, which reproduces it exactly). Exit code 0 when no seed failed.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use keel_sim::pure::outcome::run_traced_catching;
use keel_sim::pure::planted::run_catching as run_scenario;
use keel_sim::pure::replay::{check_determinism, NONDETERMINISTIC};
use keel_sim::pure::shrink::Overrides;
use keel_sim::pure::trace::Trace;
use keel_sim::pure::RunVerdict;

use crate::run::{reproduce_command, scenario_of};

/// Arguments of `keel-sim sweep`.
#[derive(Debug, clap::Args)]
pub struct SweepArgs {
    /// Seeds to run, as `A..B` (B excluded) or `A..=B`.
    #[arg(long, value_parser = parse_seed_range)]
    pub seeds: (u64, u64),
    /// Runs at a time.
    #[arg(long, default_value_t = 1)]
    pub jobs: usize,
    /// Overrides of every seed's scenario (cluster and workload size, fault mix, planted bug).
    #[command(flatten)]
    pub overrides: Overrides,
    /// Stop at the first failing seed (implied by `--planted-bug`): report it and the time taken.
    #[arg(long)]
    pub first_failure: bool,
    /// Run every seed twice and compare trace hashes; a difference fails the seed.
    #[arg(long)]
    pub check_determinism: bool,
    /// Where the traces of failing seeds are written.
    #[arg(long, default_value = "keel-sim-failures")]
    pub trace_dir: PathBuf,
}

/// Parses `A..B` (exclusive) or `A..=B` (inclusive) into `(first, end_exclusive)`.
pub fn parse_seed_range(text: &str) -> Result<(u64, u64), String> {
    let (first, rest, inclusive) = if let Some((a, b)) = text.split_once("..=") {
        (a, b, true)
    } else if let Some((a, b)) = text.split_once("..") {
        (a, b, false)
    } else {
        return Err(format!("expected a range like 1..10000, got {text:?}"));
    };
    let first: u64 = first.trim().parse().map_err(|e| format!("bad first seed {first:?}: {e}"))?;
    let last: u64 = rest.trim().parse().map_err(|e| format!("bad last seed {rest:?}: {e}"))?;
    let end = if inclusive { last.saturating_add(1) } else { last };
    if end <= first {
        return Err(format!("the range {text:?} holds no seed"));
    }
    Ok((first, end))
}

/// What one seed gave.
struct SeedResult {
    seed: u64,
    verdict: RunVerdict,
    messages: u64,
}

fn run_seeds(arguments: &SweepArgs, bar: &ProgressBar) -> Vec<SeedResult> {
    let (first, end) = arguments.seeds;
    let next = AtomicU64::new(first);
    let (sender, receiver) = mpsc::channel();
    std::thread::scope(|scope| {
        for _ in 0..arguments.jobs.max(1) {
            let sender = sender.clone();
            let next = &next;
            scope.spawn(move || loop {
                let seed = next.fetch_add(1, Ordering::Relaxed);
                if seed >= end {
                    return;
                }
                let outcome = run_scenario(scenario_of(seed, &arguments.overrides), false);
                let verdict = match arguments.check_determinism.then(|| check_determinism(&outcome, run_scenario)) {
                    Some(Err(why)) => RunVerdict::Failed(why),
                    _ => outcome.verdict,
                };
                let result = SeedResult { seed, verdict, messages: outcome.messages_delivered };
                if sender.send(result).is_err() {
                    return;
                }
            });
        }
        drop(sender);
        let mut results = Vec::new();
        for result in receiver {
            if let RunVerdict::Failed(why) = &result.verdict {
                bar.println(format!("seed {} FAILED: {why}", result.seed));
            }
            bar.inc(1);
            results.push(result);
        }
        results.sort_by_key(|r| r.seed);
        results
    })
}

fn write_failure_trace(arguments: &SweepArgs, seed: u64, directory: &Path) -> String {
    let outcome = run_traced_catching(scenario_of(seed, &arguments.overrides), Trace::new(true)).0;
    let Some(text) = outcome.trace_file() else {
        return "no trace: the run kept none".to_string();
    };
    let path = directory.join(format!("seed-{seed}.jsonl"));
    let written = std::fs::create_dir_all(directory).and_then(|()| std::fs::write(&path, text));
    match written {
        Ok(()) => {
            format!("trace {0}; verify it with keel-sim replay {0}, draw it with keel-sim render {0}", path.display())
        }
        Err(error) => format!("trace not written to {}: {error}", path.display()),
    }
}

/// Runs `keel-sim sweep`.
pub fn run(arguments: &SweepArgs) -> ExitCode {
    if arguments.first_failure || crate::shrink::plants_a_bug(&arguments.overrides) {
        return crate::shrink::sweep_to_first_failure(arguments);
    }
    let (first, end) = arguments.seeds;
    let bar = ProgressBar::new(end - first);
    let style =
        ProgressStyle::with_template("{bar:40} {pos}/{len} seeds  {per_sec}  eta {eta}").expect("a valid template");
    bar.set_style(style);
    let started = Instant::now();
    let results = run_seeds(arguments, &bar);
    bar.finish_and_clear();
    let elapsed = started.elapsed().as_secs_f64();
    let failures: Vec<&SeedResult> = results.iter().filter(|r| matches!(r.verdict, RunVerdict::Failed(_))).collect();
    let expected = results.iter().filter(|r| matches!(r.verdict, RunVerdict::ExpectedLeaseViolation(_))).count();
    let messages: u64 = results.iter().map(|r| r.messages).sum();
    println!(
        "{} seeds in {elapsed:.1} s ({:.1} seeds/s, {:.0} messages/s): {} passed, {} expected lease violations, {} failed",
        results.len(),
        results.len() as f64 / elapsed.max(1e-9),
        messages as f64 / elapsed.max(1e-9),
        results.len() - failures.len() - expected,
        expected,
        failures.len()
    );
    if arguments.check_determinism {
        let differing = failures
            .iter()
            .filter(|f| matches!(&f.verdict, RunVerdict::Failed(why) if why.starts_with(NONDETERMINISTIC)))
            .count();
        println!("determinism: every seed ran twice; {differing} gave two different traces");
    }
    for failure in &failures {
        let trace = write_failure_trace(arguments, failure.seed, &arguments.trace_dir);
        let why = match &failure.verdict {
            RunVerdict::Failed(why) => why.as_str(),
            _ => "",
        };
        println!("FAIL seed {}: {why}", failure.seed);
        println!("  reproduce: {}   ({trace})", reproduce_command(failure.seed, &arguments.overrides));
    }
    if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_ranges_parse() {
        assert_eq!(parse_seed_range("1..10"), Ok((1, 10)));
        assert_eq!(parse_seed_range("1..=10"), Ok((1, 11)));
        assert!(parse_seed_range("5..5").is_err());
        assert!(parse_seed_range("x").is_err());
    }
}
