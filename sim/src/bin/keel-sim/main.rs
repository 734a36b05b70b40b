//! `keel-sim`: the simulator's command line. This file only parses the command line and hands
//! over to one module per subcommand.

mod check;
mod render;
mod replay;
mod run;
mod shrink;
mod sweep;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc rather than the system allocator: simulated runs allocate per message and per entry.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Keel's deterministic simulator and its tools.
#[derive(Debug, Parser)]
#[command(name = "keel-sim", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The subcommands, each in its own module.
#[derive(Debug, Subcommand)]
enum Command {
    /// Check a Jepsen-style JSON-lines history for linearizability (exit 0 linearizable, 1 not
    /// linearizable, 2 malformed input, 3 unknown: a limit was reached).
    Check(check::CheckArgs),
    /// Run one seed of the pure simulator (exit 0 no bug found, 1 a check failed).
    Run(run::RunArgs),
    /// Run a range of seeds in parallel, with a progress bar and a summary (exit 1 if any failed).
    Sweep(sweep::SweepArgs),
    /// Re-execute a trace file's run and verify it event by event (exit 0 identical, 1 diverged
    /// at the printed line, 2 unreadable or malformed trace).
    Replay(replay::ReplayArgs),
    /// Draw a trace file as a self-contained HTML space-time diagram (exit 2 on a bad trace).
    Render(render::RenderArgs),
    /// Minimise a failing seed's run while it still fails the same way; print the command that
    /// reproduces the minimal run.
    Shrink(shrink::ShrinkArgs),
}

fn main() -> ExitCode {
    die_quietly_on_closed_pipe();
    match Cli::parse().command {
        Command::Check(arguments) => check::run(&arguments),
        Command::Run(arguments) => run::run(&arguments),
        Command::Sweep(arguments) => sweep::run(&arguments),
        Command::Replay(arguments) => replay::run(&arguments),
        Command::Render(arguments) => render::run(&arguments),
        Command::Shrink(arguments) => shrink::run(&arguments),
    }
}

/// `keel-sim run ... | head`: when the reader of standard output goes away, end the way Unix
/// tools do (killed by `SIGPIPE`, no message) instead of panicking in `println!`. Rust ignores
/// `SIGPIPE` by default, which turns the closed pipe into a write error.
fn die_quietly_on_closed_pipe() {
    #[cfg(unix)]
    // SAFETY: restoring a signal's default disposition at start-up, before any thread exists,
    // touches no memory and races with nothing.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
