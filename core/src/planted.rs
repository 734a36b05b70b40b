//! Planted bugs (feature `planted-bugs`, never in production builds): classic Raft mistakes that
//! can be switched on per node through [`crate::Config::planted_bug`], so that the simulator can
//! show it finds each of them and how fast. Every planted change in the core is a small block
//! marked `PLANTED BUG` and gated on this feature; without the feature none of them is compiled.
//!
//! Where each bug lives:
//! - [`PlantedBug::DoubleVote`]: `election.rs`, `handle_vote_request` / `vote_for`;
//! - [`PlantedBug::CommitPreviousTerm`]: `replication.rs`, `maybe_commit`;
//! - [`PlantedBug::AckBeforeSync`]: `replication.rs`, `handle_append` and `maybe_commit`;
//! - [`PlantedBug::ReadWithoutQuorum`]: `read_index.rs`, `leader_read`;
//! - [`PlantedBug::LeaseIgnoresDrift`]: `config.rs`, `lease_duration_ms`;
//! - [`PlantedBug::NoTruncateConflict`]: `log.rs`, `append_from_leader`;
//! - [`PlantedBug::VoteNotPersisted`]: `node.rs`, `hard_state_to_persist`.

use std::fmt;
use std::str::FromStr;

/// One classic Raft bug to plant in a node's core.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PlantedBug {
    /// Grants a vote to a second candidate in a term it already voted in (and skips the core's
    /// own single-vote assertion, so that only the outside checkers can notice).
    DoubleVote,
    /// Commits an entry of an earlier term as soon as a quorum holds it (Raft paper §5.4.2,
    /// Figure 8), instead of only entries of the leader's own term.
    CommitPreviousTerm,
    /// Acknowledges appended entries to the leader, and counts the leader's own entries toward
    /// the quorum, before storage reported them durable.
    AckBeforeSync,
    /// Serves a linearizable read on the leader at once, without a heartbeat round confirming
    /// that it still leads.
    ReadWithoutQuorum,
    /// Computes the read lease as if clocks had no drift: not shortened by the drift bound.
    LeaseIgnoresDrift,
    /// Keeps a follower's conflicting entries instead of truncating the conflicting suffix: an
    /// entry already at an index is kept whatever its term, new entries are appended past it.
    NoTruncateConflict,
    /// Replies to a vote request without persisting the vote: the hard state handed out for
    /// syncing carries the term but drops a vote granted to another node.
    VoteNotPersisted,
}

impl PlantedBug {
    /// Every planted bug, in a fixed order.
    pub const ALL: [PlantedBug; 7] = [
        PlantedBug::DoubleVote,
        PlantedBug::CommitPreviousTerm,
        PlantedBug::AckBeforeSync,
        PlantedBug::ReadWithoutQuorum,
        PlantedBug::LeaseIgnoresDrift,
        PlantedBug::NoTruncateConflict,
        PlantedBug::VoteNotPersisted,
    ];

    /// The bug's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            PlantedBug::DoubleVote => "double-vote",
            PlantedBug::CommitPreviousTerm => "commit-previous-term",
            PlantedBug::AckBeforeSync => "ack-before-sync",
            PlantedBug::ReadWithoutQuorum => "read-without-quorum",
            PlantedBug::LeaseIgnoresDrift => "lease-ignores-drift",
            PlantedBug::NoTruncateConflict => "no-truncate-conflict",
            PlantedBug::VoteNotPersisted => "vote-not-persisted",
        }
    }
}

impl fmt::Display for PlantedBug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for PlantedBug {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|bug| bug.name() == text).ok_or_else(|| {
            let names: Vec<&str> = Self::ALL.iter().map(|bug| bug.name()).collect();
            format!("unknown planted bug {text:?}; expected one of {}", names.join(", "))
        })
    }
}

/// True when `config` plants `bug` (always false without the `planted-bugs` feature, where this
/// macro is not even defined: every use sits in a `#[cfg(feature = "planted-bugs")]` block).
macro_rules! planted {
    ($config:expr, $bug:ident) => {
        $config.planted_bug == Some($crate::planted::PlantedBug::$bug)
    };
}
pub(crate) use planted;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for bug in PlantedBug::ALL {
            assert_eq!(bug.name().parse::<PlantedBug>(), Ok(bug));
        }
        assert!("no-such-bug".parse::<PlantedBug>().unwrap_err().contains("double-vote"));
    }
}
