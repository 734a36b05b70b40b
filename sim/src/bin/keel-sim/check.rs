//! `keel-sim check FILE`: reads a JSON-lines history (see `keel_sim::check::jsonl`) and says
//! whether it is linearizable, with a small counterexample when it is not.
//!
//! Exit codes: 0 linearizable; 1 not linearizable (the counterexample's explanation and events,
//! as JSON lines, on stdout); 2 unreadable file or malformed history (the line number on stderr);
//! 3 unknown: `--timeout-s` passed or one key's search cache reached `--memory-limit-mb` before
//! the checker could decide (no verdict is implied). The file is read whole into memory.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use keel_sim::check::{check_history_with_limits, parse_jsonl_with_line_numbers, write_jsonl};
use keel_sim::check::{CheckLimits, CheckOutcome, Verdict};

/// Exit code: the history is linearizable.
const EXIT_LINEARIZABLE: u8 = 0;
/// Exit code: the history is not linearizable.
const EXIT_NOT_LINEARIZABLE: u8 = 1;
/// Exit code: the file could not be read or the history is malformed.
const EXIT_MALFORMED: u8 = 2;
/// Exit code: a limit was reached before a verdict.
const EXIT_UNKNOWN: u8 = 3;

/// Arguments of `keel-sim check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The history: one JSON object a line, in time order; `-` reads standard input.
    file: PathBuf,
    /// Give up after this many seconds of searching: prints `unknown` and exits 3.
    #[arg(long)]
    timeout_s: Option<u64>,
    /// Upper bound on one key's search cache, in MiB: reaching it prints `unknown`, exits 3.
    #[arg(long, default_value_t = 1024)]
    memory_limit_mb: usize,
}

/// Runs the check and returns the documented exit code.
pub fn run(arguments: &CheckArgs) -> ExitCode {
    let name = arguments.file.display();
    let text = match read_input(&arguments.file) {
        Ok(text) => text,
        Err(error) => {
            eprintln!("keel-sim check: cannot read {name}: {error}");
            return ExitCode::from(EXIT_MALFORMED);
        }
    };
    let (history, line_numbers) = match parse_jsonl_with_line_numbers(&text) {
        Ok(parsed) => parsed,
        Err(error) => {
            eprintln!("keel-sim check: {name}: {error}");
            return ExitCode::from(EXIT_MALFORMED);
        }
    };
    let limits = CheckLimits {
        memory_bytes_max: arguments.memory_limit_mb.saturating_mul(1 << 20),
        deadline: arguments.timeout_s.map(|seconds| Instant::now() + Duration::from_secs(seconds)),
        steps_max: u64::MAX,
        line_numbers: Some(line_numbers),
    };
    match check_history_with_limits(&history, &limits) {
        Err(error) => {
            eprintln!("keel-sim check: {name}: {error}");
            ExitCode::from(EXIT_MALFORMED)
        }
        Ok(CheckOutcome::Decided(Verdict::Linearizable)) => {
            println!("linearizable");
            ExitCode::from(EXIT_LINEARIZABLE)
        }
        Ok(CheckOutcome::Decided(Verdict::NotLinearizable(counterexample))) => {
            println!("not linearizable");
            println!("{}", counterexample.explanation);
            print!("{}", write_jsonl(&counterexample.events));
            ExitCode::from(EXIT_NOT_LINEARIZABLE)
        }
        Ok(CheckOutcome::Unknown { key, reason }) => {
            println!("unknown: gave up on key {key:?}: {reason}");
            ExitCode::from(EXIT_UNKNOWN)
        }
    }
}

/// The whole file, or standard input for `-`.
fn read_input(file: &PathBuf) -> std::io::Result<String> {
    if file.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text)?;
        Ok(text)
    } else {
        std::fs::read_to_string(file)
    }
}
