//! The `keel` node binary.
//!
//! **Skeleton.** The node is not built yet: apart from `--help` and `--version`, this binary
//! prints a message saying so and exits with status 2.

use std::process::ExitCode;

use clap::Parser;

/// Keel: a strongly consistent, replicated key-value and coordination engine built on Raft.
///
/// This build is a skeleton: the node is not implemented yet.
#[derive(Parser, Debug)]
#[command(name = "keel", version)]
struct Cli {}

fn main() -> ExitCode {
    let _cli = Cli::parse();
    eprintln!(
        "keel {}: the Keel node is not built yet; this binary is only a skeleton and cannot run a node.",
        env!("CARGO_PKG_VERSION")
    );
    ExitCode::from(2)
}
