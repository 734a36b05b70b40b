//! The `keel` binary: runs a node (`keel node`), a local cluster (`keel dev`), and talks to a
//! cluster (`keel put`, `get`, `del`, `cas`, `scan`, `watch`, `members`, `member`,
//! `transfer-leader`, `status`), and measures one (`keel bench`). See the `cli` module and
//! `keel --help`.
//!
//! Exit codes: 0 success, 1 the request (or the node) failed, 2 a usage or configuration error.

#[cfg(not(madsim))]
mod cli;

/// mimalloc rather than the system allocator: the node allocates per request and per log entry
/// on several threads, where mimalloc's thread-local free lists are markedly cheaper.
#[cfg(not(madsim))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[cfg(not(madsim))]
fn main() -> std::process::ExitCode {
    cli::main()
}

/// Under `--cfg madsim` the library is built for the simulator; the binary has nothing to run.
#[cfg(madsim)]
fn main() {
    eprintln!("the keel binary is not available in a --cfg madsim build");
    std::process::exit(2);
}
