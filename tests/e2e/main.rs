//! End-to-end tests against real `keel node` processes on loopback (plain build only).
//!
//! Each test starts its own cluster of node processes (see [`cluster`]) and talks to it as users
//! do: through the Rust client library, the generated gRPC stubs, or the `keel` command line.
//! Failures are injected the hard way: `kill -9` of a process. Run them with
//! `cargo test -p keel-runtime --test e2e`.
#![cfg(not(madsim))]

mod bad_input;
mod cluster;
mod crash;
mod etcdctl;
mod gateway;
mod membership;
mod pki;
mod redirect;
mod tls;
mod watch_and_ttl;
