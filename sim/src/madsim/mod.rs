//! The madsim simulation of the real runtime (only in `--cfg madsim` builds).
//!
//! The `keel-runtime` code itself — gRPC services, peer transport, node driver, storage worker —
//! runs here on madsim's simulated machines, network and virtual time, one machine per Keel
//! node, with clients using the real Rust client (`keel::client`). What madsim cannot provide
//! comes from Keel's own ports: a disk that outlives a crash and loses unsynced writes
//! (`keel_runtime::storage::MemoryDisk`), and a skewed, drifting clock per node
//! (`keel_runtime::clock::SkewedClock`).
//!
//! * [`cluster`]: the simulated cluster and its fault controls (partitions, kill and restart
//!   with a disk crash, pause and resume, slow disks).
//! * [`disk`]: slow disks (a delay per group of operations, changed at any time).
//! * [`clients`]: client processes and the history they record.
//! * [`etcd_clients`]: the share of their operations sent through the etcd v3 API.
//! * [`etcd_auth`]: etcd authentication on every other seed, and changes of the auth table
//!   among the faults.
//! * [`faults`]: the fault schedule drawn from the seed.
//! * [`membership`]: membership changes and leadership transfers through the admin API.
//! * [`scenario`]: the standard scenario and its verdicts (linearizable history, no
//!   acknowledged write lost, every operation ended after the heal), and the trace hash.
//!
//! Run it with `sim/tests/madsim.rs` (see the README, "Simulating the real runtime").

pub mod clients;
pub mod cluster;
pub mod disk;
pub mod etcd_auth;
pub mod etcd_clients;
pub mod faults;
pub mod membership;
pub mod scenario;

pub use scenario::{run, Report, Scenario};
