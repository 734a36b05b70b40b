//! keel-runtime: the driver that runs `keel-core` on tokio, tonic and durable storage.
//!
//! This crate holds the production side of a Keel node: durable storage, the peer transport,
//! timers and the client services (the native API from `keel::proto`, the etcd v3 compatible API
//! and the cache API), and it builds the `keel` node binary. The same code is meant to compile
//! with `--cfg madsim`, so that the simulator in `keel-sim` can run it unchanged.
//!
//! # Storage
//!
//! [`storage::Storage`] is one node's durable consensus state: hard state, log and latest
//! snapshot. Its docs state the contract the node relies on to carry out a `keel_core::Ready`
//! (hard state synced before messages; log writes applied in order and reported with
//! `RaftNode::persisted` only after a sync; snapshots installed atomically), and `load` rebuilds
//! `keel_core::RecoveredState` after a restart, truncating a torn tail left by a crash and
//! refusing to start, with a message naming the damaged record, on any other corruption.
//!
//! * `storage::FjallStorage` keeps it in a fjall database (fsync with `PersistMode::SyncAll`);
//!   it is left out of `--cfg madsim` builds because fjall starts OS threads.
//! * [`storage::MemoryStorage`] keeps it on a simulated [`storage::MemoryDisk`] that loses or
//!   tears unsynced writes on a crash, flips bits and counts slow syncs, all chosen
//!   deterministically by the caller; it is what the simulator uses.
//! * [`storage::codec`] is the versioned, checksummed record format both backends store.

pub mod clock;
#[cfg(not(madsim))]
pub mod connections;
pub mod embedded;
pub mod etcd;
pub mod metrics;
pub mod node;
pub mod server;
pub mod service;
pub mod storage;
pub mod tls;
#[cfg(not(madsim))]
pub mod tls_listener;
pub mod tls_reload;
pub mod transport;
