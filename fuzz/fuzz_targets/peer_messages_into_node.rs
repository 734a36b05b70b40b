//! Fuzz target: arbitrary bytes arriving on the peer port, all the way into a consensus node.
//!
//! The bytes are decoded as a `RaftMessageBatch` (the wire form peers send), each message is
//! converted to a core message with the runtime's checked conversion (malformed ones are refused),
//! and the accepted ones are stepped into a node of a 3-voter cluster, interleaved with ticks
//! and proposals, while a minimal driver carries out each `Ready` (persist, apply, install).
//! Nothing may panic: neither decoding, nor conversion, nor the node's own release-build
//! invariant assertions. The node must also keep its basic promises: its term never goes back
//! and its commit index never regresses.

#![no_main]

use bytes::Bytes;
use keel::proto::raft::RaftMessageBatch;
use keel_core::{Config, Membership, RaftNode, RecoveredState};
use keel_runtime::transport::convert::message_from_wire;
use libfuzzer_sys::fuzz_target;
use prost::Message;

/// Carries out one `Ready` the way the contract asks, without real storage.
fn drive(node: &mut RaftNode) {
    if !node.has_ready() {
        return;
    }
    let ready = node.ready();
    if let Some(snapshot) = ready.snapshot {
        node.snapshot_installed(snapshot.meta.last_included);
    }
    if let Some(last) = ready.log_write.as_ref().and_then(|write| write.entries.last()) {
        node.persisted(last.log_id);
    }
    if let Some(last) = ready.committed_entries.last() {
        node.applied(last.log_id.index);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((schedule, wire)) = data.split_first() else { return };
    let Ok(batch) = RaftMessageBatch::decode(wire) else { return };
    let recovered = RecoveredState::bootstrap(Membership::with_voters([1, 2, 3]));
    let Ok(mut node) = RaftNode::new(Config::new(1), recovered) else { return };
    let mut now_ms = 0;
    let (mut term, mut commit_index) = (node.term(), node.commit_index());
    for (position, wire_message) in batch.messages.into_iter().enumerate() {
        // The schedule byte decides, per message, whether time passes and a proposal is made.
        let bits = schedule.rotate_left(position as u32 % 8);
        if bits & 1 == 1 {
            now_ms += 1_000;
            node.tick(now_ms);
        }
        if bits & 2 == 2 {
            let _ = node.propose(Bytes::from_static(b"fuzz"));
        }
        if let Ok(mut message) = message_from_wire(wire_message) {
            message.to = 1;
            node.step(message);
        }
        drive(&mut node);
        assert!(node.term() >= term, "the term went back");
        assert!(node.commit_index() >= commit_index, "the commit index regressed");
        (term, commit_index) = (node.term(), node.commit_index());
    }
});
