//! keel-sim: Keel's deterministic simulators and checkers.
//!
//! - [`history`]: client-visible histories (invocations and completions) shared by the
//!   simulators, which write them, and the linearizability checker, which reads them.
//! - [`check`]: the linearizability checker for the KV model (also `keel-sim check FILE`).
//! - [`pure`]: the pure simulator (VOPR style) that steps keel-core nodes and the KV store with
//!   a simulated network, disks and clocks (`keel-sim run`, `keel-sim sweep`), its trace files
//!   and their replay (`keel-sim replay`).
//! - [`render`]: space-time diagrams of trace files (`keel-sim render`).
//! - `madsim` (only in `--cfg madsim` builds): the real `keel-runtime` nodes on madsim's
//!   simulated machines, network and time, with seeded faults (`tests/madsim.rs`).
//!
//! The crate drives `keel-core` directly (a fast pure-core simulator) and the `keel-runtime`
//! code compiled with `--cfg madsim`; it injects network, clock, process and disk
//! faults, checks every run for linearizability, and replays failures from a seed or a trace.

pub mod check;
pub mod history;
#[cfg(madsim)]
pub mod madsim;
pub mod pure;
pub mod render;
