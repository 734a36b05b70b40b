//! keel-runtime: the driver that runs `keel-core` on tokio, tonic and durable storage.
//!
//! **Skeleton.** Nothing is implemented yet. This crate will hold the production side of a Keel
//! node: durable storage, the peer transport, timers and the client services (the native API from
//! `keel::proto`, the etcd v3 compatible API and the cache API), and it builds the `keel` node
//! binary. The same code is meant to compile with `--cfg madsim`, so that the simulator in
//! `keel-sim` can run it unchanged.
