//! The leader's view of one follower or learner (raft-rs `tracker`): how far its log matches,
//! what to send next, how many appends are in flight, and when it last answered.
//!
//! States (etcd raft's design): **Probe** sends one append at a time until the follower's match
//! point is found; **Replicate** streams appends optimistically, at most `inflight_messages_max`
//! at a time; **Snapshot** sends a snapshot in chunks, one chunk in flight, resuming from the
//! follower's reported offset.

use std::collections::VecDeque;

use crate::types::Index;

/// Replication state of one peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressState {
    /// Looking for the point where the logs match; one message at a time.
    Probe,
    /// Streaming entries; `next_index` runs ahead of `match_index`.
    Replicate,
    /// Sending the snapshot at `snapshot_index`.
    Snapshot {
        /// Index covered by the snapshot being sent.
        snapshot_index: Index,
        /// Next byte to send.
        next_offset: u64,
        /// When the chunk in flight was sent, if one is.
        sent_ms: Option<u64>,
    },
}

/// The leader's bookkeeping for one peer.
#[derive(Clone, Debug)]
pub(crate) struct Progress {
    /// Highest index known to match the leader's log and be durable on the peer.
    pub match_index: Index,
    /// Next index to send.
    pub next_index: Index,
    pub state: ProgressState,
    /// Last index and send time of each append in flight (Replicate state), oldest first.
    pub inflight: VecDeque<(Index, u64)>,
    /// A probe is outstanding (Probe state); cleared by a response or a heartbeat answer.
    pub probe_sent: bool,
    /// Leader clock reading of the last message received from the peer in this term.
    pub last_contact_ms: Option<u64>,
    /// Highest heartbeat round the peer acknowledged.
    pub acked_round: u64,
    /// Commit index last sent to the peer.
    pub commit_sent: Index,
}

impl Progress {
    /// A fresh peer: probe right after the leader's last entry.
    pub fn new(last_index: Index) -> Self {
        Self {
            match_index: 0,
            next_index: last_index + 1,
            state: ProgressState::Probe,
            inflight: VecDeque::new(),
            probe_sent: false,
            last_contact_ms: None,
            acked_round: 0,
            commit_sent: 0,
        }
    }

    /// Whether another append may be sent now.
    pub fn can_send(&self, inflight_max: usize) -> bool {
        match self.state {
            ProgressState::Probe => !self.probe_sent,
            ProgressState::Replicate => self.inflight.len() < inflight_max,
            ProgressState::Snapshot { .. } => false,
        }
    }

    /// Records an append covering up to `last` as sent at `now_ms`.
    pub fn on_sent(&mut self, last: Index, now_ms: u64) {
        match self.state {
            ProgressState::Probe => self.probe_sent = true,
            ProgressState::Replicate => {
                self.next_index = last + 1;
                self.inflight.push_back((last, now_ms));
            }
            ProgressState::Snapshot { .. } => {}
        }
    }

    /// The peer matches up to `index`. Returns true when that is news.
    pub fn on_match(&mut self, index: Index) -> bool {
        self.probe_sent = false;
        while self.inflight.front().is_some_and(|(last, _)| *last <= index) {
            self.inflight.pop_front();
        }
        if index <= self.match_index {
            return false;
        }
        self.match_index = index;
        self.next_index = self.next_index.max(index + 1);
        if self.state == ProgressState::Probe {
            self.become_replicate();
        }
        true
    }

    /// When the oldest unacknowledged append was sent, if one is in flight.
    pub fn oldest_inflight_sent_ms(&self) -> Option<u64> {
        self.inflight.front().map(|(_, sent_ms)| *sent_ms)
    }

    /// Streams from just after the match point.
    pub fn become_replicate(&mut self) {
        self.state = ProgressState::Replicate;
        self.next_index = self.match_index + 1;
        self.inflight.clear();
    }

    /// Falls back to probing at `next_index` (never below the match point).
    pub fn become_probe(&mut self, next_index: Index) {
        self.state = ProgressState::Probe;
        self.next_index = next_index.max(self.match_index + 1);
        self.inflight.clear();
        self.probe_sent = false;
    }

    /// Starts (or restarts) sending the snapshot at `snapshot_index` from its first byte.
    pub fn become_snapshot(&mut self, snapshot_index: Index) {
        self.state = ProgressState::Snapshot { snapshot_index, next_offset: 0, sent_ms: None };
        self.inflight.clear();
        self.probe_sent = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicate_window_is_bounded_and_freed_by_acks() {
        let mut progress = Progress::new(10);
        assert!(progress.on_match(10));
        assert_eq!(progress.state, ProgressState::Replicate);
        for last in [12, 14, 16] {
            assert!(progress.can_send(3));
            progress.on_sent(last, 0);
        }
        assert!(!progress.can_send(3), "window of 3 is full");
        progress.on_match(14);
        assert_eq!(progress.inflight.len(), 1);
        assert!(progress.can_send(3));
        assert_eq!(progress.next_index, 17);
    }

    #[test]
    fn probe_sends_one_message_at_a_time_and_never_goes_below_match() {
        let mut progress = Progress::new(10);
        progress.on_sent(10, 0);
        assert!(!progress.can_send(64));
        progress.match_index = 5;
        progress.become_probe(2);
        assert_eq!(progress.next_index, 6);
        assert!(progress.can_send(64));
    }
}
