//! Conversion between keel-core's `Message` and the wire type `keel.raft.RaftMessage`.
//!
//! Encoding never fails. Decoding validates everything that arrives from the network: a missing
//! field, an unknown enum value or an empty `oneof` is a [`DecodeError`] that names the field, so
//! the receiver can answer `INVALID_ARGUMENT` and drop the batch; nothing panics.

use std::collections::{BTreeMap, BTreeSet};

use keel::proto::common::{NodeStatus, Noop};
use keel::proto::raft as wire;
use keel::proto::raft::raft_entry::Payload;
use keel::proto::raft::raft_message::Body;
use keel_core::{
    ConflictHint, Entry, EntryPayload, LearnerKind, LogId, Membership, Message, MessageBody, ReadIndexAnswer,
    SnapshotMeta,
};

/// A peer message that could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed peer message: {0}; the sending node runs an incompatible version or is faulty")]
pub struct DecodeError(pub String);

fn missing(field: &str) -> DecodeError {
    DecodeError(format!("field `{field}` is missing"))
}

fn log_id_to_wire(log_id: LogId) -> wire::RaftLogId {
    wire::RaftLogId { term: log_id.term, index: log_id.index }
}

fn log_id_from_wire(log_id: Option<wire::RaftLogId>, field: &str) -> Result<LogId, DecodeError> {
    let log_id = log_id.ok_or_else(|| missing(field))?;
    Ok(LogId::new(log_id.term, log_id.index))
}

/// Encodes a configuration.
pub fn membership_to_wire(membership: &Membership) -> wire::ClusterConfig {
    let kind = |kind: &LearnerKind| match kind {
        LearnerKind::Promotable => NodeStatus::Promotable as i32,
        LearnerKind::ReadOnly => NodeStatus::ReadOnly as i32,
    };
    wire::ClusterConfig {
        voters: membership.voters.iter().copied().collect(),
        voters_outgoing: membership.voters_outgoing.iter().copied().collect(),
        learners: membership.learners.iter().map(|(id, k)| (*id, kind(k))).collect(),
        addresses: membership.addresses.iter().map(|(id, a)| (*id, a.clone())).collect(),
    }
}

/// Decodes a configuration, refusing unknown learner kinds.
pub fn membership_from_wire(config: wire::ClusterConfig) -> Result<Membership, DecodeError> {
    let mut learners = BTreeMap::new();
    for (id, status) in config.learners {
        let kind = match NodeStatus::try_from(status) {
            Ok(NodeStatus::Promotable) => LearnerKind::Promotable,
            Ok(NodeStatus::ReadOnly) => LearnerKind::ReadOnly,
            _ => return Err(DecodeError(format!("learner {id} has invalid status {status}"))),
        };
        learners.insert(id, kind);
    }
    Ok(Membership {
        voters: config.voters.into_iter().collect::<BTreeSet<_>>(),
        voters_outgoing: config.voters_outgoing.into_iter().collect(),
        learners,
        addresses: config.addresses.into_iter().collect(),
    })
}

fn entry_to_wire(entry: &Entry) -> wire::RaftEntry {
    let payload = match &entry.payload {
        EntryPayload::Noop => Payload::Noop(Noop {}),
        EntryPayload::Command(command) => Payload::Command(command.clone()),
        EntryPayload::Membership(membership) => Payload::Config(membership_to_wire(membership)),
    };
    wire::RaftEntry { log_id: Some(log_id_to_wire(entry.log_id)), payload: Some(payload) }
}

fn entry_from_wire(entry: wire::RaftEntry) -> Result<Entry, DecodeError> {
    let log_id = log_id_from_wire(entry.log_id, "entry.log_id")?;
    let payload = match entry.payload.ok_or_else(|| missing("entry.payload"))? {
        Payload::Noop(_) => EntryPayload::Noop,
        Payload::Command(command) => EntryPayload::Command(command),
        Payload::Config(config) => EntryPayload::Membership(Box::new(membership_from_wire(config)?)),
    };
    Ok(Entry { log_id, payload })
}

fn meta_to_wire(meta: &SnapshotMeta) -> wire::SnapshotMetadata {
    wire::SnapshotMetadata {
        last_included: Some(log_id_to_wire(meta.last_included)),
        membership: Some(membership_to_wire(&meta.membership)),
    }
}

fn meta_from_wire(meta: Option<wire::SnapshotMetadata>) -> Result<SnapshotMeta, DecodeError> {
    let meta = meta.ok_or_else(|| missing("snapshot.meta"))?;
    let last_included = log_id_from_wire(meta.last_included, "snapshot.meta.last_included")?;
    let membership = membership_from_wire(meta.membership.ok_or_else(|| missing("snapshot.meta.membership"))?)?;
    Ok(SnapshotMeta { last_included, membership })
}

/// Encodes a core message for the wire.
pub fn message_to_wire(message: &Message) -> wire::RaftMessage {
    wire::RaftMessage {
        from: message.from,
        to: message.to,
        term: message.term,
        body: Some(body_to_wire(&message.body)),
    }
}

fn body_to_wire(body: &MessageBody) -> Body {
    match body {
        MessageBody::AppendEntries { prev_log_id, entries, leader_commit, commit_notice } => {
            Body::Append(wire::AppendEntries {
                prev_log_id: Some(log_id_to_wire(*prev_log_id)),
                entries: entries.iter().map(entry_to_wire).collect(),
                leader_commit: *leader_commit,
                commit_notice: *commit_notice,
            })
        }
        MessageBody::AppendEntriesResponse { success, match_index, rejected_index, conflict } => {
            Body::AppendResponse(wire::AppendEntriesResponse {
                success: *success,
                match_index: *match_index,
                rejected_index: *rejected_index,
                conflict_index: conflict.map(|c| c.index),
                conflict_term: conflict.and_then(|c| c.term),
            })
        }
        MessageBody::Heartbeat { commit, read_round } => {
            Body::Heartbeat(wire::Heartbeat { commit: *commit, read_round: *read_round })
        }
        MessageBody::HeartbeatResponse { read_round } => {
            Body::HeartbeatResponse(wire::HeartbeatResponse { read_round: *read_round })
        }
        MessageBody::RequestVote { last_log_id, pre_vote, leadership_transfer } => Body::Vote(wire::RequestVote {
            last_log_id: Some(log_id_to_wire(*last_log_id)),
            pre_vote: *pre_vote,
            leadership_transfer: *leadership_transfer,
        }),
        MessageBody::RequestVoteResponse { granted, pre_vote } => {
            Body::VoteResponse(wire::RequestVoteResponse { granted: *granted, pre_vote: *pre_vote })
        }
        MessageBody::InstallSnapshot { meta, offset, total_bytes, data } => Body::Snapshot(wire::InstallSnapshot {
            meta: Some(meta_to_wire(meta)),
            offset: *offset,
            total_bytes: *total_bytes,
            data: data.clone(),
        }),
        MessageBody::InstallSnapshotResponse { snapshot_index, next_offset, installed } => {
            Body::SnapshotResponse(wire::InstallSnapshotResponse {
                snapshot_index: *snapshot_index,
                next_offset: *next_offset,
                installed: *installed,
            })
        }
        MessageBody::TimeoutNow => Body::TimeoutNow(wire::TimeoutNow {}),
        MessageBody::ReadIndexRequest { read_ids } => {
            Body::ReadIndex(wire::ReadIndexRequest { read_ids: read_ids.clone() })
        }
        MessageBody::ReadIndexResponse { read_ids, answer } => {
            let (outcome, read_index) = match answer {
                ReadIndexAnswer::Confirmed(index) => (wire::ReadIndexOutcome::Confirmed, *index),
                ReadIndexAnswer::NotLeader => (wire::ReadIndexOutcome::NotLeader, 0),
                ReadIndexAnswer::Overloaded => (wire::ReadIndexOutcome::Overloaded, 0),
            };
            Body::ReadIndexResponse(wire::ReadIndexResponse {
                read_ids: read_ids.clone(),
                outcome: outcome as i32,
                read_index,
            })
        }
    }
}

/// Decodes a wire message; every field is checked, nothing panics.
pub fn message_from_wire(message: wire::RaftMessage) -> Result<Message, DecodeError> {
    let body = body_from_wire(message.body.ok_or_else(|| missing("body"))?)?;
    Ok(Message { from: message.from, to: message.to, term: message.term, body })
}

fn body_from_wire(body: Body) -> Result<MessageBody, DecodeError> {
    Ok(match body {
        Body::Append(append) => MessageBody::AppendEntries {
            prev_log_id: log_id_from_wire(append.prev_log_id, "append.prev_log_id")?,
            entries: append.entries.into_iter().map(entry_from_wire).collect::<Result<_, _>>()?,
            leader_commit: append.leader_commit,
            commit_notice: append.commit_notice,
        },
        Body::AppendResponse(response) => MessageBody::AppendEntriesResponse {
            success: response.success,
            match_index: response.match_index,
            rejected_index: response.rejected_index,
            conflict: response.conflict_index.map(|index| ConflictHint { index, term: response.conflict_term }),
        },
        Body::Heartbeat(beat) => MessageBody::Heartbeat { commit: beat.commit, read_round: beat.read_round },
        Body::HeartbeatResponse(response) => MessageBody::HeartbeatResponse { read_round: response.read_round },
        Body::Vote(vote) => MessageBody::RequestVote {
            last_log_id: log_id_from_wire(vote.last_log_id, "vote.last_log_id")?,
            pre_vote: vote.pre_vote,
            leadership_transfer: vote.leadership_transfer,
        },
        Body::VoteResponse(response) => {
            MessageBody::RequestVoteResponse { granted: response.granted, pre_vote: response.pre_vote }
        }
        Body::Snapshot(chunk) => MessageBody::InstallSnapshot {
            meta: meta_from_wire(chunk.meta)?,
            offset: chunk.offset,
            total_bytes: chunk.total_bytes,
            data: chunk.data,
        },
        Body::SnapshotResponse(response) => MessageBody::InstallSnapshotResponse {
            snapshot_index: response.snapshot_index,
            next_offset: response.next_offset,
            installed: response.installed,
        },
        Body::TimeoutNow(_) => MessageBody::TimeoutNow,
        Body::ReadIndex(request) => MessageBody::ReadIndexRequest { read_ids: request.read_ids },
        Body::ReadIndexResponse(response) => {
            let answer = match wire::ReadIndexOutcome::try_from(response.outcome) {
                Ok(wire::ReadIndexOutcome::Confirmed) => ReadIndexAnswer::Confirmed(response.read_index),
                Ok(wire::ReadIndexOutcome::NotLeader) => ReadIndexAnswer::NotLeader,
                Ok(wire::ReadIndexOutcome::Overloaded) => ReadIndexAnswer::Overloaded,
                Err(_) => return Err(DecodeError(format!("unknown read index outcome {}", response.outcome))),
            };
            MessageBody::ReadIndexResponse { read_ids: response.read_ids, answer }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use prost::Message as _;

    fn samples() -> Vec<MessageBody> {
        let mut membership = Membership::with_voters([1, 2, 3]);
        membership.voters_outgoing = [1, 2].into();
        membership.learners.insert(4, LearnerKind::ReadOnly);
        membership.addresses.insert(4, "127.0.0.1:4004".into());
        let entries = vec![
            Entry { log_id: LogId::new(2, 5), payload: EntryPayload::Noop },
            Entry { log_id: LogId::new(2, 6), payload: EntryPayload::Command(Bytes::from_static(b"put x")) },
            Entry { log_id: LogId::new(2, 7), payload: EntryPayload::Membership(Box::new(membership.clone())) },
        ];
        let meta = SnapshotMeta { last_included: LogId::new(2, 7), membership };
        vec![
            MessageBody::AppendEntries {
                prev_log_id: LogId::new(1, 4),
                entries,
                leader_commit: 4,
                commit_notice: false,
            },
            MessageBody::AppendEntries {
                prev_log_id: LogId::new(2, 7),
                entries: Vec::new(),
                leader_commit: 7,
                commit_notice: true,
            },
            MessageBody::AppendEntriesResponse {
                success: false,
                match_index: 0,
                rejected_index: 9,
                conflict: Some(ConflictHint { index: 3, term: Some(1) }),
            },
            MessageBody::AppendEntriesResponse { success: true, match_index: 9, rejected_index: 0, conflict: None },
            MessageBody::Heartbeat { commit: 7, read_round: 11 },
            MessageBody::HeartbeatResponse { read_round: 11 },
            MessageBody::RequestVote { last_log_id: LogId::new(2, 7), pre_vote: true, leadership_transfer: false },
            MessageBody::RequestVoteResponse { granted: true, pre_vote: true },
            MessageBody::InstallSnapshot { meta, offset: 1024, total_bytes: 4096, data: Bytes::from_static(&[7; 16]) },
            MessageBody::InstallSnapshotResponse { snapshot_index: 7, next_offset: 2048, installed: false },
            MessageBody::TimeoutNow,
            MessageBody::ReadIndexRequest { read_ids: vec![1, 2, 3] },
            MessageBody::ReadIndexResponse { read_ids: vec![1], answer: ReadIndexAnswer::Confirmed(7) },
            MessageBody::ReadIndexResponse { read_ids: vec![2], answer: ReadIndexAnswer::Overloaded },
        ]
    }

    #[test]
    fn every_message_kind_round_trips_through_protobuf_bytes() {
        for body in samples() {
            let message = Message { from: 1, to: 2, term: 3, body };
            let bytes = message_to_wire(&message).encode_to_vec();
            let decoded = wire::RaftMessage::decode(bytes.as_slice()).expect("valid protobuf");
            assert_eq!(message_from_wire(decoded), Ok(message));
        }
    }

    #[test]
    fn missing_fields_and_unknown_enums_are_errors_not_panics() {
        let empty = wire::RaftMessage { from: 1, to: 2, term: 3, body: None };
        assert!(message_from_wire(empty).unwrap_err().0.contains("body"));
        let append = wire::AppendEntries { prev_log_id: None, entries: vec![], leader_commit: 0, commit_notice: false };
        let message = wire::RaftMessage { from: 1, to: 2, term: 3, body: Some(Body::Append(append)) };
        assert!(message_from_wire(message).unwrap_err().0.contains("prev_log_id"));
        let response = wire::ReadIndexResponse { read_ids: vec![1], outcome: 99, read_index: 0 };
        let message = wire::RaftMessage { from: 1, to: 2, term: 3, body: Some(Body::ReadIndexResponse(response)) };
        assert!(message_from_wire(message).unwrap_err().0.contains("99"));
        let mut config = membership_to_wire(&Membership::with_voters([1]));
        config.learners.insert(5, NodeStatus::Active as i32);
        assert!(membership_from_wire(config).is_err(), "a learner cannot be ACTIVE");
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_decoder() {
        let mut rng = keel_core::Rng::new(42);
        let valid = message_to_wire(&Message { from: 1, to: 2, term: 3, body: samples().remove(0) }).encode_to_vec();
        for _ in 0..20_000 {
            let mut bytes = valid.clone();
            let flips = rng.range(1, 8);
            for _ in 0..flips {
                let at = rng.range(0, bytes.len() as u64) as usize;
                bytes[at] ^= 1 << rng.range(0, 8);
            }
            if let Ok(decoded) = wire::RaftMessage::decode(bytes.as_slice()) {
                let _ = message_from_wire(decoded);
            }
        }
    }
}
