//! Keel: a strongly consistent, replicated key-value and coordination engine built on Raft.
//!
//! This crate is the root package of the Keel workspace. It holds the Rust types generated from
//! the protocol definitions in `proto/` (see [`proto`]): the messages of the native API and the
//! gRPC client and server stubs of its services; and the Rust client library ([`client`]), which
//! finds the leader by itself and retries only what is safe to retry; and the TLS material ([`tls`])
//! that the client and the nodes load from PEM files.
//!
//! The stubs come in two builds from the same source: the normal build uses real tonic, and a
//! build with `--cfg madsim` uses madsim's simulated tonic, so that the node code runs unchanged
//! inside the deterministic simulator.
//!
//! The other crates of the workspace are `keel-core` (the sans-IO Raft state machine),
//! `keel-runtime` (its tokio/tonic driver and the `keel` node binary) and `keel-sim` (the
//! simulator).

pub mod client;
pub mod proto;
pub mod tls;
