//! # keel-core: the sans-IO Raft state machine
//!
//! A pure Raft implementation in the style of etcd's `RawNode`/`Ready`: the caller feeds a
//! [`RaftNode`] inputs and takes back effects. The core owns no thread, clock, socket, file or
//! global randomness: time arrives with [`RaftNode::tick`], randomness comes from a generator
//! seeded by [`Config::rng_seed`], and durability is reported back with [`RaftNode::persisted`].
//! The same core runs in the `keel` node (tokio, tonic, fjall) and in the simulators.
//!
//! Inputs: [`RaftNode::tick`], [`RaftNode::step`] (a peer's message), [`RaftNode::propose`],
//! [`RaftNode::read`], [`RaftNode::change_membership`], [`RaftNode::transfer_leadership`],
//! [`RaftNode::persisted`], [`RaftNode::applied`], [`RaftNode::snapshot_taken`] and
//! [`RaftNode::snapshot_installed`]. Effects: [`Ready`], whose module documents the
//! **effect-ordering contract** (hard state before messages; acknowledgements only after
//! durability; committed entries only once durable locally; reads only once applied).
//!
//! Features: pre-vote, check-quorum and leader stickiness; pipelined, batched replication with
//! probe / replicate / snapshot progress states and fast backtracking; ReadIndex and lease reads
//! batched per heartbeat round, forwarded from followers; leadership transfer and a preferred
//! leader; membership changes with learners and joint consensus; compaction and chunked,
//! resumable snapshot transfer. Safety invariants are asserted in release builds (`invariants`).
//!
//! Cargo feature `planted-bugs` (off by default, for the simulator only): `Config::planted_bug`
//! makes a node plant one of seven classic Raft bugs (`PlantedBug`), each a small block marked
//! `PLANTED BUG` in the module where the correct rule lives; without the feature none is compiled.
//!
//! ## Driving three nodes by hand
//!
//! ```
//! use std::collections::VecDeque;
//! use keel_core::{Config, Membership, Message, RaftNode, RecoveredState, Role};
//!
//! let membership = Membership::with_voters([1, 2, 3]);
//! let mut nodes: Vec<RaftNode> = (1..=3)
//!     .map(|id| RaftNode::new(Config::new(id), RecoveredState::bootstrap(membership.clone())).unwrap())
//!     .collect();
//! let mut network: VecDeque<Message> = VecDeque::new();
//! let mut applied = vec![Vec::new(); 3];
//! let mut proposed = None;
//! for now_ms in (0..20_000).step_by(10) {
//!     for (i, node) in nodes.iter_mut().enumerate() {
//!         node.tick(now_ms);
//!         let ready = node.ready();
//!         // A real node syncs `hard_state` and `log_write` to disk here.
//!         if let Some(write) = &ready.log_write {
//!             if let Some(last) = write.entries.last() {
//!                 node.persisted(last.log_id);
//!             }
//!         }
//!         network.extend(ready.messages);
//!         for entry in &ready.committed_entries {
//!             applied[i].push(entry.log_id);
//!             node.applied(entry.log_id.index);
//!         }
//!     }
//!     while let Some(message) = network.pop_front() {
//!         nodes[message.to as usize - 1].step(message);
//!     }
//!     if proposed.is_none() {
//!         if let Some(leader) = nodes.iter_mut().find(|n| n.role() == Role::Leader) {
//!             proposed = Some(leader.propose(bytes::Bytes::from("hello")).unwrap());
//!         }
//!     }
//!     if let Some(log_id) = proposed {
//!         if applied.iter().all(|a| a.contains(&log_id)) {
//!             break;
//!         }
//!     }
//! }
//! let log_id = proposed.expect("a leader was elected");
//! assert!(applied.iter().all(|a| a.contains(&log_id)), "every node applied the command");
//! ```

mod config;
mod election;
mod error;
mod invariants;
pub mod kv;
mod log;
mod membership;
mod message;
mod node;
#[cfg(feature = "planted-bugs")]
mod planted;
mod progress;
mod quorum;
mod read_index;
mod ready;
mod reconfigure;
mod replication;
mod rng;
mod snapshot;
mod transfer;
mod types;
mod validate;

pub use config::{Config, ConfigError, LeaseConfig};
pub use error::Error;
pub use membership::{LearnerKind, Membership, MembershipChange, MembershipError};
pub use message::{ConflictHint, Message, MessageBody, ReadId, ReadIndexAnswer};
pub use node::{RaftNode, RecoveredState};
#[cfg(feature = "planted-bugs")]
pub use planted::PlantedBug;
pub use progress::ProgressState;
pub use quorum::is_quorum;
pub use read_index::ReadPolicy;
pub use ready::{LogWrite, ReadOutcome, Ready, SoftState};
pub use rng::Rng;
pub use types::{
    Entry, EntryPayload, HardState, Index, LeaderHint, LogId, NodeId, Role, Snapshot, SnapshotMeta, Term,
    ENTRY_OVERHEAD_BYTES,
};
