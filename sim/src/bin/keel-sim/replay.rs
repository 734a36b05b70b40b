//! `keel-sim replay FILE`: re-executes the run a trace file records (from its header's scenario)
//! and verifies, event by event, that it produces exactly the recorded lines. Exit code 0 when
//! every line matched (with a summary), 1 at the first difference (its line number, the recorded
//! and the produced event), 2 when the file cannot be read or is malformed (the line is named).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use keel_sim::pure::header::TraceFile;
use keel_sim::pure::replay::replay;

/// Arguments of `keel-sim replay`.
#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// The trace file (written by `keel-sim run --trace` or by a sweep's failures).
    pub file: PathBuf,
}

/// Reads and parses a trace file, or says why not (for `replay` and `render`).
pub fn read_trace(path: &PathBuf, command: &str) -> Result<TraceFile, ExitCode> {
    let text = std::fs::read_to_string(path).map_err(|error| {
        eprintln!("keel-sim {command}: cannot read {}: {error}", path.display());
        ExitCode::from(2)
    })?;
    TraceFile::parse(&text).map_err(|error| {
        eprintln!("keel-sim {command}: {}: {error}", path.display());
        ExitCode::from(2)
    })
}

/// Runs `keel-sim replay`.
pub fn run(arguments: &ReplayArgs) -> ExitCode {
    let file = match read_trace(&arguments.file, "replay") {
        Ok(file) => file,
        Err(code) => return code,
    };
    println!(
        "replaying {} ({} lines): seed {}: {}",
        arguments.file.display(),
        file.lines.len() + 1,
        file.header.seed,
        file.header.scenario.describe()
    );
    let started = Instant::now();
    let report = replay(&file);
    if let Some(version) = &report.other_version {
        println!("note: the trace was written by {version}; a difference may come from the change of version");
    }
    let Some(divergence) = &report.divergence else {
        println!(
            "identical: all {} event lines match (the end line included) in {:.1} ms; trace hash {:016x}; {}",
            report.lines_verified,
            started.elapsed().as_secs_f64() * 1e3,
            report.trace_hash,
            report.verdict.describe()
        );
        return ExitCode::SUCCESS;
    };
    println!("DIVERGED at line {} (after {} matching event lines)", divergence.line, report.lines_verified);
    println!("  recorded: {}", divergence.expected.as_deref().unwrap_or("<the recorded trace ends here>"));
    println!("  replayed: {}", divergence.actual.as_deref().unwrap_or("<the run ended here>"));
    ExitCode::FAILURE
}
