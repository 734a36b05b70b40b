//! Integration tests of keel-core on the in-memory cluster harness. Each module checks one Raft
//! concept and names the section of the Raft paper (§) or Ongaro's thesis it exercises.

mod harness;
mod manual;

mod election;
mod membership;
mod properties;
mod reads;
mod replication;
mod snapshot;
mod transfer;
