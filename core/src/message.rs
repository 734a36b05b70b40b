//! Messages between consensus cores. The runtime carries them over gRPC, the simulators over a
//! simulated network; the core neither encodes nor sends them. Every field arriving from the
//! network is validated by the receiver before use (`validate.rs`): a malformed message is dropped
//! with a warning, never a panic.

use bytes::Bytes;

use crate::types::{Entry, Index, LogId, NodeId, SnapshotMeta, Term};

/// Identifies one read request at the node where it was submitted (chosen by the caller).
pub type ReadId = u64;

/// One message from one node to another.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Sender.
    pub from: NodeId,
    /// Receiver.
    pub to: NodeId,
    /// Sender's term (for a pre-vote request: the term the sender would campaign in).
    pub term: Term,
    /// What the message says.
    pub body: MessageBody,
}

/// Where a follower's log stops matching the leader's, so that the leader can skip a whole term
/// per round trip instead of one index (Raft paper §5.3, "fast backtracking").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConflictHint {
    /// First index the leader should try next.
    pub index: Index,
    /// Term of the follower's entry at the conflicting position, when it has one.
    pub term: Option<Term>,
}

/// The leader's answer to forwarded reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadIndexAnswer {
    /// Leadership was confirmed after the reads arrived: serve them once this index is applied.
    Confirmed(Index),
    /// The receiver is not (or no longer) the leader.
    NotLeader,
    /// The leader's read queue is full (`pending_reads_max`).
    Overloaded,
}

/// The content of a [`Message`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MessageBody {
    /// Leader → follower: entries following `prev_log_id` (empty for a probe).
    AppendEntries {
        /// The entry just before `entries`, which the follower must hold.
        prev_log_id: LogId,
        /// Consecutive entries, `prev_log_id.index + 1` onwards.
        entries: Vec<Entry>,
        /// The leader's commit index.
        leader_commit: Index,
        /// True for a *commit notice*: no entries, sent in Replicate state only to carry a new
        /// commit index. The leader does not count it in flight and the follower answers it only
        /// when the answer is news (a rejection, or a match it has not acknowledged yet), which
        /// saves a message in each direction per follower per commit advance.
        commit_notice: bool,
    },
    /// Follower → leader: the answer to an append, sent once the entries are durable.
    AppendEntriesResponse {
        /// Whether the follower's log matched at the probed position.
        success: bool,
        /// On success: the follower's log matches the leader's up to here and is durable.
        match_index: Index,
        /// On rejection: the `prev_log_id.index` that did not match.
        rejected_index: Index,
        /// On rejection: where to try next.
        conflict: Option<ConflictHint>,
    },
    /// Leader → follower: liveness, the commit index the follower may safely adopt, and a read
    /// round sequence number for ReadIndex and leases.
    Heartbeat {
        /// `min(commit index, follower's match index)`.
        commit: Index,
        /// Sequence number of the heartbeat round.
        read_round: u64,
    },
    /// Follower → leader: acknowledges a heartbeat round.
    HeartbeatResponse {
        /// The round acknowledged.
        read_round: u64,
    },
    /// Candidate → voter: a vote request, or a pre-vote probe that changes no state.
    RequestVote {
        /// The candidate's last log entry (election restriction, §5.4.1).
        last_log_id: LogId,
        /// A pre-vote: the receiver answers without changing its term or vote.
        pre_vote: bool,
        /// Sent after `TimeoutNow`: voters skip the leader-stickiness check.
        leadership_transfer: bool,
    },
    /// Voter → candidate.
    RequestVoteResponse {
        /// Whether the vote (or pre-vote) was granted.
        granted: bool,
        /// Whether this answers a pre-vote.
        pre_vote: bool,
    },
    /// Leader → follower: one chunk of a snapshot.
    InstallSnapshot {
        /// The snapshot being sent.
        meta: SnapshotMeta,
        /// Offset of `data` within the snapshot.
        offset: u64,
        /// Total size of the snapshot.
        total_bytes: u64,
        /// The chunk.
        data: Bytes,
    },
    /// Follower → leader: progress of a snapshot transfer.
    InstallSnapshotResponse {
        /// Index of the snapshot this answers.
        snapshot_index: Index,
        /// Offset the follower expects next (resume point).
        next_offset: u64,
        /// True once the snapshot is installed and durable.
        installed: bool,
    },
    /// Leader → transfer target: start an election now (leadership transfer, thesis §3.10).
    TimeoutNow,
    /// Follower or learner → leader: confirm leadership for these reads.
    ReadIndexRequest {
        /// Read ids chosen by the requesting node.
        read_ids: Vec<ReadId>,
    },
    /// Leader → follower: answer to [`MessageBody::ReadIndexRequest`].
    ReadIndexResponse {
        /// The reads answered.
        read_ids: Vec<ReadId>,
        /// The index to wait for, or why there is none.
        answer: ReadIndexAnswer,
    },
}

impl MessageBody {
    /// A short name for logs and traces.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::AppendEntries { .. } => "append",
            Self::AppendEntriesResponse { .. } => "append_response",
            Self::Heartbeat { .. } => "heartbeat",
            Self::HeartbeatResponse { .. } => "heartbeat_response",
            Self::RequestVote { pre_vote: true, .. } => "pre_vote",
            Self::RequestVote { .. } => "vote",
            Self::RequestVoteResponse { pre_vote: true, .. } => "pre_vote_response",
            Self::RequestVoteResponse { .. } => "vote_response",
            Self::InstallSnapshot { .. } => "snapshot_chunk",
            Self::InstallSnapshotResponse { .. } => "snapshot_response",
            Self::TimeoutNow => "timeout_now",
            Self::ReadIndexRequest { .. } => "read_index",
            Self::ReadIndexResponse { .. } => "read_index_response",
        }
    }
}
