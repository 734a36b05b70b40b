//! The in-memory replicated log of one node: the entries after the last compaction point, and the
//! four indexes that describe them (durably persisted, committed, handed out for applying, and
//! applied).
//!
//! Data flow: entries are appended by the leader (`append`) or from a leader's message
//! (`append_from_leader`); every change is remembered in `unpersisted_from` and handed to storage
//! as a [`LogWrite`]; storage reports back with `set_persisted`; committed and durable entries are
//! handed out for applying (`take_committed`); `compact` drops the prefix a snapshot covers.
//!
//! Invariants asserted here: a committed entry is never truncated; commit never decreases and
//! never passes the last entry; applied never passes commit.

use std::collections::VecDeque;

use crate::message::ConflictHint;
use crate::ready::LogWrite;
use crate::types::{Entry, Index, LogId, Term};

/// The log of one node.
#[derive(Debug)]
pub(crate) struct RaftLog {
    /// The last entry dropped by compaction (or covered by the installed snapshot).
    compacted: LogId,
    /// Entries `compacted.index + 1 ..= last`.
    entries: VecDeque<Entry>,
    /// Highest index known durable on this node's disk.
    persisted: Index,
    /// Highest index known committed.
    committed: Index,
    /// Highest index handed out for applying.
    handed_out: Index,
    /// Highest index the caller reported applied.
    applied: Index,
    /// First index changed since the last `take_write`.
    unpersisted_from: Option<Index>,
    /// PLANTED BUG (no-truncate-conflict) switched on: conflicting entries are kept.
    #[cfg(feature = "planted-bugs")]
    pub keep_conflicts: bool,
}

impl RaftLog {
    /// A log recovered from storage: everything given is already durable.
    pub fn recovered(compacted: LogId, entries: Vec<Entry>, applied: Index) -> Self {
        let persisted = entries.last().map_or(compacted.index, |e| e.log_id.index);
        Self {
            compacted,
            entries: entries.into(),
            persisted,
            committed: applied,
            handed_out: applied,
            applied,
            unpersisted_from: None,
            #[cfg(feature = "planted-bugs")]
            keep_conflicts: false,
        }
    }

    /// PLANTED BUG (no-truncate-conflict) switch: the same log, keeping conflicting entries.
    #[cfg(feature = "planted-bugs")]
    pub fn keeping_conflicts(self, keep_conflicts: bool) -> Self {
        Self { keep_conflicts, ..self }
    }

    pub fn compacted(&self) -> LogId {
        self.compacted
    }

    pub fn first_index(&self) -> Index {
        self.compacted.index + 1
    }

    pub fn last_index(&self) -> Index {
        self.compacted.index + self.entries.len() as Index
    }

    pub fn last_log_id(&self) -> LogId {
        self.entries.back().map_or(self.compacted, |e| e.log_id)
    }

    pub fn persisted(&self) -> Index {
        self.persisted
    }

    pub fn committed(&self) -> Index {
        self.committed
    }

    pub fn applied(&self) -> Index {
        self.applied
    }

    /// The entry at `index`, if it is in memory.
    pub fn entry(&self, index: Index) -> Option<&Entry> {
        if index <= self.compacted.index {
            return None;
        }
        self.entries.get((index - self.first_index()) as usize)
    }

    /// The term of the entry at `index`, if known (the compaction point's term is known).
    pub fn term_at(&self, index: Index) -> Option<Term> {
        if index == self.compacted.index {
            return Some(self.compacted.term);
        }
        self.entry(index).map(|e| e.log_id.term)
    }

    /// True when this log holds `log_id` (same term at that index).
    pub fn matches(&self, log_id: LogId) -> bool {
        self.term_at(log_id.index) == Some(log_id.term)
    }

    /// Appends one entry created by this node as leader.
    pub fn append(&mut self, entry: Entry) {
        assert_eq!(entry.log_id.index, self.last_index() + 1, "log append must be contiguous");
        assert!(entry.log_id.term >= self.last_log_id().term, "log terms must not decrease");
        self.mark_changed(entry.log_id.index);
        self.entries.push_back(entry);
    }

    fn mark_changed(&mut self, index: Index) {
        self.unpersisted_from = Some(self.unpersisted_from.map_or(index, |from| from.min(index)));
    }

    /// Appends entries from a leader after `prev`, truncating a conflicting suffix (Raft paper
    /// §5.3). Returns the last index now known to match the leader and the first index truncated
    /// (if a conflicting suffix was dropped), or where the leader should probe next.
    pub fn append_from_leader(
        &mut self,
        prev: LogId,
        mut entries: Vec<Entry>,
    ) -> Result<(Index, Option<Index>), ConflictHint> {
        let last_new = prev.index + entries.len() as Index;
        if prev.index < self.compacted.index {
            // Everything up to the compaction point is committed, hence identical on the leader.
            let skip = (self.compacted.index - prev.index).min(entries.len() as Index) as usize;
            entries.drain(..skip);
            if entries.is_empty() {
                return Ok((self.compacted.index, None));
            }
            return self.append_from_leader(self.compacted, entries);
        }
        if !self.matches(prev) {
            return Err(self.conflict_hint(prev.index));
        }
        let mut truncated = None;
        for entry in entries {
            match self.term_at(entry.log_id.index) {
                Some(term) if term == entry.log_id.term => continue,
                Some(_) => {
                    // PLANTED BUG (no-truncate-conflict): the conflicting entry and its suffix stay.
                    #[cfg(feature = "planted-bugs")]
                    if self.keep_conflicts {
                        continue;
                    }
                    self.truncate_from(entry.log_id.index);
                    truncated = Some(entry.log_id.index);
                }
                None => {}
            }
            self.append(entry);
        }
        Ok((last_new, truncated))
    }

    fn conflict_hint(&self, rejected: Index) -> ConflictHint {
        if rejected > self.last_index() {
            return ConflictHint { index: self.last_index() + 1, term: None };
        }
        let term = self.term_at(rejected).expect("rejected index is in the log");
        let mut first = rejected;
        while first > self.first_index() && self.term_at(first - 1) == Some(term) {
            first -= 1;
        }
        ConflictHint { index: first, term: Some(term) }
    }

    /// Where a leader should probe next after a rejection carrying `hint` at `rejected`:
    /// just after its own last entry of the follower's conflicting term, or the hinted index.
    pub fn next_probe_index(&self, rejected: Index, hint: ConflictHint) -> Index {
        let Some(term) = hint.term else { return hint.index.min(rejected) };
        let mut index = rejected.min(self.last_index());
        while index > self.compacted.index {
            match self.term_at(index) {
                Some(t) if t > term => index -= 1,
                Some(t) if t == term => return (index + 1).min(rejected),
                _ => break,
            }
        }
        hint.index.min(rejected)
    }

    /// Drops every entry at or after `index`. Committed entries are never dropped.
    fn truncate_from(&mut self, index: Index) {
        assert!(
            index > self.committed,
            "log matching violated: truncating committed entry {index} (commit index {})",
            self.committed
        );
        let keep = (index - self.first_index()) as usize;
        self.entries.truncate(keep);
        self.persisted = self.persisted.min(index - 1);
        self.mark_changed(index);
    }

    /// The entries `from ..= to`, at most `count_max` of them and at most `bytes_max` bytes
    /// (always at least one when the range is not empty).
    pub fn slice(&self, from: Index, to: Index, count_max: usize, bytes_max: u64) -> Vec<Entry> {
        let from = from.max(self.first_index());
        let to = to.min(self.last_index());
        if from > to {
            return Vec::new();
        }
        let start = (from - self.first_index()) as usize;
        let count = ((to - from + 1) as usize).min(count_max);
        let range = self.entries.range(start..start + count);
        if bytes_max == u64::MAX {
            return range.cloned().collect();
        }
        let mut out = Vec::with_capacity(count);
        let mut bytes = 0;
        for entry in range {
            bytes += entry.size_bytes();
            if !out.is_empty() && bytes > bytes_max {
                break;
            }
            out.push(entry.clone());
        }
        out
    }

    /// True when entries changed since the last `take_write` (a write is due).
    pub fn has_unpersisted_changes(&self) -> bool {
        self.unpersisted_from.is_some()
    }

    /// The write to hand to storage since the last call, if any.
    pub fn take_write(&mut self) -> Option<LogWrite> {
        let first_index = self.unpersisted_from.take()?;
        let entries = self.slice(first_index, self.last_index(), usize::MAX, u64::MAX);
        Some(LogWrite { first_index, entries })
    }

    /// Storage made the log durable up to `log_id`; ignored when that entry was overwritten since.
    pub fn set_persisted(&mut self, log_id: LogId) -> bool {
        if log_id.index <= self.persisted || !self.matches(log_id) {
            return false;
        }
        self.persisted = log_id.index;
        true
    }

    /// Raises the commit index. It never decreases and never passes the last entry.
    pub fn commit_to(&mut self, index: Index) {
        assert!(index >= self.committed, "commit index regressed from {} to {index}", self.committed);
        assert!(index <= self.last_index(), "commit index {index} passes the last entry {}", self.last_index());
        self.committed = index;
    }

    /// Committed, locally durable entries not yet handed out, at most `count_max`.
    pub fn take_committed(&mut self, count_max: usize) -> Vec<Entry> {
        let to = self.committed.min(self.persisted);
        let out = self.slice(self.handed_out + 1, to, count_max, u64::MAX);
        if let Some(last) = out.last() {
            self.handed_out = last.log_id.index;
        }
        out
    }

    /// True when committed entries wait to be handed out.
    pub fn has_committed_to_hand_out(&self) -> bool {
        self.committed.min(self.persisted) > self.handed_out
    }

    /// The caller applied everything up to `index`.
    pub fn set_applied(&mut self, index: Index) {
        assert!(
            index <= self.handed_out,
            "applied index {index} passes what was handed out for applying ({})",
            self.handed_out
        );
        assert!(index <= self.committed, "applied index {index} passes commit index {}", self.committed);
        self.applied = self.applied.max(index);
    }

    /// Drops entries up to and including `index` (covered by a snapshot).
    pub fn compact(&mut self, index: Index) {
        assert!(index <= self.applied, "compacting unapplied entries up to {index}");
        if index <= self.compacted.index {
            return;
        }
        let term = self.term_at(index).expect("compaction point is in the log");
        let drop = (index - self.compacted.index) as usize;
        self.entries.drain(..drop);
        self.compacted = LogId::new(term, index);
    }

    /// Moves the log's start to the point a received snapshot covers. Entries after it are kept
    /// when the log holds that very entry (they match the leader's); otherwise the whole log is
    /// dropped, which can only happen above the commit index.
    pub fn reset_to_snapshot(&mut self, last_included: LogId) {
        let index = last_included.index;
        if self.matches(last_included) && index >= self.compacted.index {
            let drop = (index - self.compacted.index) as usize;
            self.entries.drain(..drop);
            self.compacted = last_included;
            self.unpersisted_from =
                self.unpersisted_from.map(|from| from.max(index + 1)).filter(|from| *from <= self.last_index());
            return;
        }
        assert!(
            index > self.committed,
            "a snapshot at {index} conflicts with the log at or below the commit index {}",
            self.committed
        );
        self.entries.clear();
        self.compacted = last_included;
        self.persisted = self.persisted.min(index);
        self.unpersisted_from = None;
    }

    /// The snapshot at `last_included` was installed durably: everything up to it is durable,
    /// committed and applied.
    pub fn snapshot_installed(&mut self, last_included: LogId) {
        self.persisted = self.persisted.max(last_included.index);
        self.committed = self.committed.max(last_included.index);
        self.handed_out = self.handed_out.max(last_included.index);
        self.applied = self.applied.max(last_included.index);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::EntryPayload;

    fn entry(term: Term, index: Index) -> Entry {
        Entry { log_id: LogId::new(term, index), payload: EntryPayload::Noop }
    }

    fn log_with_terms(terms: &[Term]) -> RaftLog {
        let entries = terms.iter().enumerate().map(|(i, t)| entry(*t, i as Index + 1)).collect();
        RaftLog::recovered(LogId::default(), entries, 0)
    }

    #[test]
    fn conflicting_suffix_is_truncated_and_replaced() {
        let mut log = log_with_terms(&[1, 1, 2, 2]);
        let (last, truncated) = log.append_from_leader(LogId::new(1, 2), vec![entry(3, 3)]).unwrap();
        assert_eq!((last, truncated), (3, Some(3)));
        assert_eq!(log.last_log_id(), LogId::new(3, 3));
        assert_eq!(log.persisted(), 2, "overwritten entries are no longer durable");
        assert_eq!(log.take_write().unwrap().first_index, 3);
    }

    #[test]
    fn matching_entries_are_kept_and_not_rewritten() {
        let mut log = log_with_terms(&[1, 1, 2, 2]);
        assert_eq!(log.append_from_leader(LogId::new(1, 1), vec![entry(1, 2)]).unwrap(), (2, None));
        assert_eq!(log.last_index(), 4, "a stale append must not drop later entries");
        assert!(log.take_write().is_none());
    }

    #[test]
    fn conflict_hint_points_at_first_index_of_conflicting_term() {
        let mut log = log_with_terms(&[1, 2, 2, 2]);
        let hint = log.append_from_leader(LogId::new(3, 4), vec![]).unwrap_err();
        assert_eq!(hint, ConflictHint { index: 2, term: Some(2) });
        let hint = log.append_from_leader(LogId::new(3, 9), vec![]).unwrap_err();
        assert_eq!(hint, ConflictHint { index: 5, term: None });
    }

    #[test]
    fn leader_skips_a_whole_term_when_backtracking() {
        let leader = log_with_terms(&[1, 1, 1, 4, 4, 5, 5]);
        // Follower has term 2 at index 4..6: leader has no term 2, so it jumps to the hint.
        assert_eq!(leader.next_probe_index(6, ConflictHint { index: 4, term: Some(2) }), 4);
        // Follower has term 1 where the leader has 4: probe right after the leader's last term 1.
        assert_eq!(leader.next_probe_index(6, ConflictHint { index: 2, term: Some(1) }), 4);
    }

    #[test]
    #[should_panic(expected = "truncating committed entry")]
    fn truncating_a_committed_entry_is_a_crash() {
        let mut log = log_with_terms(&[1, 1, 1]);
        log.set_persisted(LogId::new(1, 3));
        log.commit_to(3);
        let _ = log.append_from_leader(LogId::new(1, 1), vec![entry(2, 2)]);
    }

    #[test]
    fn committed_entries_are_handed_out_only_when_durable() {
        let mut log = log_with_terms(&[]);
        log.append(entry(1, 1));
        log.append(entry(1, 2));
        log.commit_to(2);
        assert!(log.take_committed(10).is_empty());
        assert!(log.set_persisted(LogId::new(1, 1)));
        assert_eq!(log.take_committed(10).len(), 1);
        assert!(!log.set_persisted(LogId::new(9, 2)), "a stale term is ignored");
    }

    #[test]
    fn compaction_keeps_the_boundary_term() {
        let mut log = log_with_terms(&[1, 2, 3]);
        log.commit_to(3);
        log.take_committed(10);
        log.set_applied(3);
        log.compact(2);
        assert_eq!(log.first_index(), 3);
        assert_eq!(log.term_at(2), Some(2));
        assert_eq!(log.term_at(1), None);
        // An append from before the compaction point still succeeds.
        assert_eq!(log.append_from_leader(LogId::new(1, 1), vec![entry(2, 2), entry(3, 3)]).unwrap(), (3, None));
    }
}
