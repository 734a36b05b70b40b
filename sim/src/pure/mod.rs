//! The pure simulator, in the style of TigerBeetle's VOPR: it steps N keel-core nodes and the
//! key-value state machine directly, with a simulated network, disks and per-node clocks. No
//! async, no threads; everything in a run (configuration, workload, faults, delays) derives from
//! the seed, so `keel-sim run --seed N` reproduces a run exactly.
//!
//! Data flow: [`Scenario::from_seed`] draws the run's configuration; [`run`] builds the
//! [`simulator::Simulator`] (nodes from `node.rs` with their `disk.rs` and `clock.rs`, the
//! `network.rs`, clients from `workload.rs` and `clients.rs`, faults from `faults.rs` carried out
//! by `cluster.rs`) and steps it through the fault phase and the liveness phase. Every applied
//! entry is checked against the independently rebuilt committed history (`reference.rs`); nodes
//! are checked from the outside (`invariants.rs`); the client history (`recorder.rs`) is checked
//! for linearizability (`linearizability.rs`) and the weaker promises (`weak_checks.rs`); the
//! etcd operations (`etcd_workload.rs`, carried by `etcd_client.rs`, recorded in
//! `etcd_history.rs`) are checked by revision against the reference model (`mvcc_model.rs`) in
//! `etcd_checks.rs`; every
//! event feeds the trace hash and, when asked, the trace file (`trace.rs`, its header in
//! `header.rs`), which `replay.rs` re-executes and verifies line by line.

pub mod clients;
pub mod clock;
mod cluster;
pub mod disk;
pub mod envelope;
mod etcd_checks;
mod etcd_client;
pub mod etcd_history;
pub mod etcd_workload;
pub mod faults;
pub mod header;
pub mod invariants;
pub mod linearizability;
pub mod mvcc_model;
pub mod network;
pub mod node;
pub mod outcome;
pub mod planted;
pub mod recorder;
pub mod reference;
pub mod replay;
pub mod rng;
pub mod scenario;
pub mod shrink;
pub mod simulator;
pub mod trace;
pub mod weak_checks;
pub mod workload;

pub use outcome::{run, run_traced, RunOutcome, RunVerdict};
pub use scenario::{Scenario, Targeting};
