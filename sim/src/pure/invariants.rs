//! Safety checkers that do not trust keel-core's own assertions. They look at the nodes from the
//! outside (roles, terms, logs, commit indexes) and at the committed history the simulator
//! rebuilt itself.
//!
//! Data flow: the simulator reports every role change ([`Invariants::observe_soft_state`]),
//! calls [`Invariants::check_nodes`] at a fixed interval of simulated time (log matching, leader
//! completeness, commit never regressing) and [`Invariants::check_acknowledged`] at the end.
//! Every check returns the first violation as a sentence naming the nodes, terms and indexes.
//! State machine safety (the same entry and the same changes at every index on every node) is
//! checked as entries are applied, in `reference.rs`.

use std::collections::BTreeMap;

use keel_core::{Entry, EntryPayload, Index, LogId, NodeId, RaftNode, Role, Term};

use super::reference::CommittedLog;

/// What the checkers remember between checks.
#[derive(Debug, Default)]
pub struct Invariants {
    /// The leader of each term seen (election safety).
    leaders: BTreeMap<Term, NodeId>,
    /// Each running node's commit index at the last check, with the incarnation it belongs to.
    commit_seen: BTreeMap<NodeId, (u64, Index)>,
}

impl Invariants {
    /// Election safety: at most one leader per term. Call whenever a node reports it leads.
    pub fn observe_leader(&mut self, node: NodeId, term: Term) -> Result<(), String> {
        let leader = *self.leaders.entry(term).or_insert(node);
        if leader != node {
            return Err(format!("election safety: nodes {leader} and {node} both led term {term}"));
        }
        Ok(())
    }

    /// Number of terms that had a leader.
    pub fn leader_terms(&self) -> usize {
        self.leaders.len()
    }

    /// Log matching, leader completeness and commit monotonicity over the running nodes.
    /// `nodes` holds `(id, incarnation, core)`; a restart starts a new incarnation, whose commit
    /// index may restart lower (it is volatile state).
    pub fn check_nodes(&mut self, nodes: &[(NodeId, u64, &RaftNode)], committed: &CommittedLog) -> Result<(), String> {
        for (id, incarnation, raft) in nodes {
            let commit = raft.commit_index();
            let previous = self.commit_seen.insert(*id, (*incarnation, commit));
            if let Some((seen_incarnation, seen_commit)) = previous {
                if seen_incarnation == *incarnation && commit < seen_commit {
                    return Err(format!("node {id}: commit index regressed from {seen_commit} to {commit}"));
                }
            }
            if raft.role() == Role::Leader {
                self.observe_leader(*id, raft.term())?;
                check_leader_completeness(*id, raft, committed)?;
            }
        }
        for (i, (a_id, _, a)) in nodes.iter().enumerate() {
            for (b_id, _, b) in &nodes[i + 1..] {
                check_log_matching(*a_id, a, *b_id, b)?;
            }
        }
        Ok(())
    }
}

/// A leader holds every entry committed in an earlier term. Checked at every periodic check and
/// also the moment a node reports it became leader, before its first appends can reach anyone.
pub fn check_leader_completeness(id: NodeId, raft: &RaftNode, committed: &CommittedLog) -> Result<(), String> {
    for (log_id, term_min) in committed.committed_from(raft.first_log_index()) {
        if term_min >= raft.term() {
            continue;
        }
        let held = raft.entry(log_id.index).map(|e| e.log_id);
        if held != Some(log_id) {
            return Err(format!(
                "leader completeness: leader {id} of term {} holds {held:?} at {} where {log_id} was committed",
                raft.term(),
                log_id.index
            ));
        }
    }
    Ok(())
}

/// Log matching: if two logs hold an entry with the same index and term, they are identical in
/// every entry up to it (compared over the indexes both still hold).
pub fn check_log_matching(a_id: NodeId, a: &RaftNode, b_id: NodeId, b: &RaftNode) -> Result<(), String> {
    let low = a.first_log_index().max(b.first_log_index());
    let high = a.last_log_id().index.min(b.last_log_id().index);
    let mut index = high;
    while index >= low && index > 0 {
        if a.entry(index).map(|e| e.log_id) == b.entry(index).map(|e| e.log_id) {
            break;
        }
        index -= 1;
    }
    for i in low..=index {
        if !same_entry(a.entry(i), b.entry(i)) {
            return Err(format!(
                "log matching: nodes {a_id} and {b_id} share entry at {index} but differ at {i}: {:?} vs {:?}",
                a.entry(i).map(|e| e.log_id),
                b.entry(i).map(|e| e.log_id)
            ));
        }
    }
    Ok(())
}

/// Whether two stored entries are identical. Entries replicated in the simulator usually share
/// their payload's allocation, so equal pointers and lengths settle it without comparing bytes;
/// otherwise the bytes are compared.
fn same_entry(a: Option<&Entry>, b: Option<&Entry>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => {
            a.log_id == b.log_id
                && match (&a.payload, &b.payload) {
                    (EntryPayload::Command(x), EntryPayload::Command(y)) => {
                        (x.as_ptr() == y.as_ptr() && x.len() == y.len()) || x == y
                    }
                    (x, y) => x == y,
                }
        }
        (a, b) => a == b,
    }
}

/// No acknowledged write lost: every write acknowledged to a client is in the committed history
/// at its index, and every node of `applied` (id, applied index) has applied past it.
pub fn check_acknowledged(
    acknowledged: &[LogId],
    committed: &CommittedLog,
    applied: &[(NodeId, Index)],
) -> Result<(), String> {
    for log_id in acknowledged {
        let held = committed.log_id_at(log_id.index);
        if held != Some(*log_id) {
            return Err(format!("acknowledged write {log_id} was lost: index {} holds {held:?}", log_id.index));
        }
        if let Some((node, index)) = applied.iter().find(|(_, index)| *index < log_id.index) {
            return Err(format!("node {node} converged at {index} without acknowledged write {log_id}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_leaders_in_one_term_are_caught() {
        let mut invariants = Invariants::default();
        invariants.observe_leader(1, 5).unwrap();
        invariants.observe_leader(1, 5).unwrap();
        invariants.observe_leader(2, 6).unwrap();
        let error = invariants.observe_leader(3, 5).unwrap_err();
        assert!(error.contains("election safety") && error.contains("term 5"), "{error}");
    }

    #[test]
    fn entries_compare_by_content_whether_or_not_they_share_their_payload() {
        let command = |bytes: &'static [u8], index| Entry {
            log_id: LogId::new(2, index),
            payload: EntryPayload::Command(bytes::Bytes::from(bytes.to_vec())),
        };
        let a = command(b"put x 1", 7);
        assert!(same_entry(Some(&a), Some(&a.clone())), "a shared payload");
        assert!(same_entry(Some(&a), Some(&command(b"put x 1", 7))), "an equal copy");
        assert!(!same_entry(Some(&a), Some(&command(b"put x 2", 7))), "other bytes, same log id");
        assert!(!same_entry(Some(&a), Some(&command(b"put x 1", 8))), "same bytes, other log id");
        assert!(!same_entry(Some(&a), None) && same_entry(None, None));
        let slice = a.clone();
        let EntryPayload::Command(bytes) = &slice.payload else { unreachable!() };
        let prefix = Entry { log_id: a.log_id, payload: EntryPayload::Command(bytes.slice(0..3)) };
        assert!(!same_entry(Some(&a), Some(&prefix)), "a shorter view of the same allocation");
    }

    #[test]
    fn a_lost_acknowledged_write_is_caught() {
        let committed = CommittedLog::default();
        let error = check_acknowledged(&[LogId::new(1, 3)], &committed, &[]).unwrap_err();
        assert!(error.contains("lost"), "{error}");
    }
}
