//! Safety invariants asserted in every build, release included. A broken invariant is a bug in
//! Keel (or a caller breaking the documented contract), never an error value: the node crashes
//! rather than risk replicating a wrong history. The simulator checks the same properties again
//! from the outside, without trusting these assertions.
//!
//! Where each invariant is asserted:
//! - term never decreases: [`check_term_advance`], called by every term change;
//! - at most one vote per term: [`check_single_vote`];
//! - commit index never decreases and never passes the last entry: `RaftLog::commit_to`;
//! - the leader's commit index never passes the quorum's durable match point:
//!   [`check_commit_is_quorum_durable`];
//! - committed entries are never truncated, so a leader never truncates its own log (all its
//!   truncation paths run as follower): `RaftLog::truncate_from`;
//! - applied index never passes commit index (nor what was handed out): `RaftLog::set_applied`.

use crate::config::ConfigError;
use crate::node::RecoveredState;
use crate::types::{NodeId, Term};

/// Terms only move forward.
pub(crate) fn check_term_advance(current: Term, next: Term) {
    assert!(next >= current, "term went backwards from {current} to {next}");
}

/// A node votes for at most one candidate per term.
pub(crate) fn check_single_vote(term: Term, voted_for: Option<NodeId>, candidate: NodeId) {
    assert!(
        voted_for.is_none() || voted_for == Some(candidate),
        "voted twice in term {term}: for {voted_for:?} and for {candidate}"
    );
}

/// The leader commits only what a quorum holds durably, and never moves the commit index back.
pub(crate) fn check_commit_is_quorum_durable(new_commit: u64, quorum_durable: u64, old_commit: u64) {
    assert!(
        new_commit <= quorum_durable,
        "commit index {new_commit} passes the quorum's durable index {quorum_durable}"
    );
    assert!(new_commit >= old_commit, "commit index regressed from {old_commit} to {new_commit}");
}

/// Recovered state comes from disk: inconsistencies are reported as errors, not crashes.
pub(crate) fn check_recovered(recovered: &RecoveredState) -> Result<(), ConfigError> {
    let fail = |message: String| Err(ConfigError { message });
    let base = recovered.snapshot.as_ref().map_or_else(Default::default, |s| s.meta.last_included);
    let mut previous = base;
    for entry in &recovered.entries {
        if entry.log_id.index != previous.index + 1 || entry.log_id.term < previous.term {
            return fail(format!(
                "recovered log is not contiguous: entry {} follows {}; the log store is corrupt",
                entry.log_id, previous
            ));
        }
        previous = entry.log_id;
    }
    if previous.term > recovered.hard_state.term {
        return fail(format!(
            "recovered log holds term {} above the stored term {}; the hard state is stale or corrupt",
            previous.term, recovered.hard_state.term
        ));
    }
    if recovered.applied < base.index || recovered.applied > previous.index {
        return fail(format!(
            "applied index {} lies outside the recovered log [{}, {}]; the state machine and log disagree",
            recovered.applied, base.index, previous.index
        ));
    }
    Ok(())
}
