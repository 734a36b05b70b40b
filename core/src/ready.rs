//! [`Ready`]: the effects the core asks its caller to carry out, and the ordering contract.
//!
//! # Effect-ordering contract
//!
//! The caller takes a `Ready` with `RaftNode::ready` after feeding inputs, and carries it out
//! in this order:
//!
//! 1. **`hard_state`** is written and synced **before any message of the same `Ready` is sent**
//!    (a vote or a new term must survive a crash before anyone learns of it).
//! 2. **`snapshot`** (a follower received a whole snapshot): restore the state machine from it and
//!    durably replace the log prefix it covers; then call `RaftNode::snapshot_installed`.
//! 3. **`log_write`**: delete every stored entry at or after `first_index`, then append `entries`.
//!    Writes may be carried out asynchronously and grouped under one sync, but **in order**; after
//!    the sync, call `RaftNode::persisted` with the log id of the last entry of the latest write
//!    made durable. The core never counts an entry toward a quorum, and never acknowledges it to a
//!    leader, before that call.
//! 4. **`messages`** may be sent as soon as step 1 is done, in parallel with step 3: a leader
//!    replicates while it writes its own log, and a follower's acknowledgements are only produced
//!    after its `persisted` input, so they never claim more than is on disk.
//! 5. **`committed_entries`** are committed on a quorum and durable locally: apply them in order,
//!    then call `RaftNode::applied`. A client waiting on a proposal with log id `L` is answered when
//!    the entry at `L.index` is applied: success if its term is `L.term`, failure otherwise.
//! 6. **`reads`**: each `Ok(index)` may be answered from the state machine now (the core only
//!    releases a read once the applied index has reached its read index); each `Err` is answered
//!    with the error, which carries a leader hint.

use crate::error::Error;
use crate::message::{Message, ReadId};
use crate::types::{Entry, HardState, Index, LeaderHint, Role, Snapshot};

/// A write to the log store: delete entries from `first_index` on, then append `entries`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogWrite {
    /// First index overwritten; every stored entry at or after it is deleted first.
    pub first_index: Index,
    /// Entries to append, `first_index` onwards (may be empty for a pure truncation).
    pub entries: Vec<Entry>,
}

/// The outcome of one read request submitted with `RaftNode::read`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadOutcome {
    /// The id the caller gave.
    pub id: ReadId,
    /// `Ok(read_index)`: serve it now; the applied index is at least `read_index`.
    pub result: Result<Index, Error>,
}

/// Role, term and leader, reported when any of them changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SoftState {
    /// This node's role.
    pub role: Role,
    /// The leader this node knows of, with its address and term.
    pub leader: LeaderHint,
}

/// Effects produced by the core since the last call to `RaftNode::ready`. See the module docs
/// for the order in which they must be carried out.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ready {
    /// Term and vote to persist and sync before sending `messages`.
    pub hard_state: Option<HardState>,
    /// A complete snapshot received from the leader, to install.
    pub snapshot: Option<Snapshot>,
    /// Log entries to persist.
    pub log_write: Option<LogWrite>,
    /// Messages to send.
    pub messages: Vec<Message>,
    /// Committed entries to apply, in order.
    pub committed_entries: Vec<Entry>,
    /// Reads that may be answered now, or failed.
    pub reads: Vec<ReadOutcome>,
    /// New role or leader, when changed.
    pub soft_state: Option<SoftState>,
}

impl Ready {
    /// True when there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.hard_state.is_none()
            && self.snapshot.is_none()
            && self.log_write.is_none()
            && self.messages.is_empty()
            && self.committed_entries.is_empty()
            && self.reads.is_empty()
            && self.soft_state.is_none()
    }
}
