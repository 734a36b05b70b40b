//! keel-sim: the future deterministic simulator of Keel.
//!
//! **Skeleton.** Nothing is implemented yet. This crate will drive `keel-core` directly (a fast
//! pure-core simulator) and the `keel-runtime` code compiled with `--cfg madsim`; inject network
//! partitions, message loss and delay, per-node clock skew and drift, crashes, pauses and disk
//! faults; check every run for linearizability; and replay failures from a seed or a trace file.
