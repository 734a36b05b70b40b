//! The vocabulary of the replicated log (seed 001): node ids, terms, indexes, log ids, entries,
//! hard state and snapshots. Every other module speaks in these types; none of them does I/O.

use bytes::Bytes;

use crate::membership::Membership;

/// A node's identity in the cluster. `0` is never a valid id (it means "none" on the wire).
pub type NodeId = u32;
/// A Raft term: a logical clock that only moves forward on every node.
pub type Term = u64;
/// A position in the replicated log. Index `0` is the empty prefix before the first entry.
pub type Index = u64;

/// The identity of one log entry: the term of the leader that created it and its position.
/// By the log matching property two logs holding the same `LogId` agree on every entry up to it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LogId {
    /// Term in which a leader created the entry.
    pub term: Term,
    /// Position of the entry in the log.
    pub index: Index,
}

impl LogId {
    /// Builds a log id from a term and an index.
    pub const fn new(term: Term, index: Index) -> Self {
        Self { term, index }
    }
}

impl std::fmt::Display for LogId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.term, self.index)
    }
}

/// What an entry carries (seed 001 `EntryPayload`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryPayload {
    /// Appended by every new leader so that it can commit an entry of its own term at once
    /// (Raft paper §5.4.2 and thesis §6.4: a leader only learns the commit index that way).
    Noop,
    /// An application command, opaque to the consensus core.
    Command(Bytes),
    /// The complete cluster configuration that takes effect as soon as the entry is appended
    /// (Raft thesis §4.1). A joint configuration has both `voters` and `voters_outgoing`.
    Membership(Box<Membership>),
}

/// One entry of the replicated log (seed 001 `Entry`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Term and index of the entry.
    pub log_id: LogId,
    /// What the entry carries.
    pub payload: EntryPayload,
}

/// Bytes of bookkeeping charged to every entry on top of its payload when batches and
/// backpressure limits are measured, so that empty commands still count.
pub const ENTRY_OVERHEAD_BYTES: u64 = 32;

impl Entry {
    /// Size charged to this entry against byte limits: payload length plus a fixed overhead.
    pub fn size_bytes(&self) -> u64 {
        let payload = match &self.payload {
            EntryPayload::Noop => 0,
            EntryPayload::Command(command) => command.len() as u64,
            EntryPayload::Membership(membership) => membership.size_bytes(),
        };
        payload + ENTRY_OVERHEAD_BYTES
    }
}

/// The state a node must persist durably before it sends any message of the same `Ready`:
/// its current term and the candidate it voted for in that term (Raft paper Figure 2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HardState {
    /// Latest term this node has seen.
    pub term: Term,
    /// Candidate that received this node's vote in `term`, if any.
    pub voted_for: Option<NodeId>,
}

/// Metadata of a snapshot: the last entry it covers and the committed membership at that entry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotMeta {
    /// The last log entry whose effect the snapshot contains.
    pub last_included: LogId,
    /// The membership in force at `last_included` (the latest configuration entry at or before it).
    pub membership: Membership,
}

/// A snapshot of the application state machine, as opaque bytes, with its metadata.
/// The core slices `data` into bounded chunks to send it; it never interprets it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// What the snapshot covers.
    pub meta: SnapshotMeta,
    /// The serialized state machine.
    pub data: Bytes,
}

/// The role a node plays right now (seed 001 `NodeRole`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Follows a leader (or waits for one); a voter that may time out and campaign.
    Follower,
    /// Runs a pre-vote round (thesis §9.6) without increasing its term.
    PreCandidate,
    /// Runs a real election in a new term.
    Candidate,
    /// Leads the cluster for its term.
    Leader,
    /// Not a voter in its latest known configuration: replicates, never campaigns.
    Learner,
}

/// Who leads, as known by a node: the hint attached to every rejection so that a client can
/// redirect (seed 001 `LeaderHint`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaderHint {
    /// The leader's id, if this node knows one.
    pub leader_id: Option<NodeId>,
    /// The leader's address from the membership, empty when unknown.
    pub address: String,
    /// The term in which that leader leads.
    pub term: Term,
}
