//! The record codec: round trips, and malformed bytes always give an error, never a panic.

use bytes::Bytes;
use keel_core::{Entry, EntryPayload, HardState, LearnerKind, LogId, Membership, SnapshotMeta};
use proptest::collection::{btree_map, btree_set, vec};
use proptest::prelude::*;

use super::full_membership;
use crate::storage::codec::*;

fn sample_entries() -> Vec<Entry> {
    vec![
        Entry { log_id: LogId::new(1, 1), payload: EntryPayload::Noop },
        Entry { log_id: LogId::new(2, 7), payload: EntryPayload::Command(Bytes::from_static(b"put k v")) },
        Entry { log_id: LogId::new(2, 8), payload: EntryPayload::Command(Bytes::new()) },
        Entry {
            log_id: LogId::new(u64::MAX, u64::MAX),
            payload: EntryPayload::Membership(Box::new(full_membership())),
        },
        Entry { log_id: LogId::new(3, 9), payload: EntryPayload::Membership(Box::default()) },
    ]
}

/// Every valid record kind, encoded, with a decoder that reports only success or failure.
#[allow(clippy::type_complexity)]
fn sample_records() -> Vec<(Vec<u8>, fn(&[u8]) -> bool)> {
    let meta = SnapshotMeta { last_included: LogId::new(4, 40), membership: full_membership() };
    let mut records: Vec<(Vec<u8>, fn(&[u8]) -> bool)> = Vec::new();
    for entry in sample_entries() {
        records.push((encode_entry(&entry).unwrap(), |b| decode_entry(b).is_ok()));
    }
    for hard_state in [HardState::default(), HardState { term: 9, voted_for: Some(3) }] {
        records.push((encode_hard_state(&hard_state).unwrap(), |b| decode_hard_state(b).is_ok()));
    }
    records.push((encode_snapshot_meta(&meta, b"data").unwrap(), |b| decode_snapshot_meta(b).is_ok()));
    records.push((encode_snapshot_data(b"some state").unwrap(), |b| decode_snapshot_data(b).is_ok()));
    records.push((encode_log_mark(77).unwrap(), |b| decode_log_mark(b).is_ok()));
    records
}

/// A frame with a valid checksum around arbitrary payload bytes (to reach payload parsing).
fn framed(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![FORMAT_VERSION, kind];
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

fn decode_everything(bytes: &[u8]) {
    let _ = decode_entry(bytes);
    let _ = decode_hard_state(bytes);
    let _ = decode_snapshot_meta(bytes);
    let _ = decode_snapshot_data(bytes);
    let _ = decode_log_mark(bytes);
}

#[test]
fn every_record_kind_round_trips() {
    for entry in sample_entries() {
        assert_eq!(decode_entry(&encode_entry(&entry).unwrap()).unwrap(), entry);
    }
    for hard_state in
        [HardState::default(), HardState { term: 5, voted_for: Some(0) }, HardState { term: 6, voted_for: Some(2) }]
    {
        assert_eq!(decode_hard_state(&encode_hard_state(&hard_state).unwrap()).unwrap(), hard_state);
    }
    let meta = SnapshotMeta { last_included: LogId::new(4, 40), membership: full_membership() };
    let stored = decode_snapshot_meta(&encode_snapshot_meta(&meta, b"abc").unwrap()).unwrap();
    assert_eq!((stored.meta, stored.data_len, stored.data_crc), (meta, 3, crc32fast::hash(b"abc")));
    assert_eq!(decode_snapshot_data(&encode_snapshot_data(b"abc").unwrap()).unwrap(), Bytes::from_static(b"abc"));
    assert_eq!(decode_log_mark(&encode_log_mark(12).unwrap()).unwrap(), 12);
}

#[test]
fn the_layout_is_little_endian_and_versioned() {
    let bytes = encode_log_mark(0x0102).unwrap();
    assert_eq!(bytes.len(), HEADER_LEN + 8 + TRAILER_LEN);
    assert_eq!(&bytes[..HEADER_LEN], &[FORMAT_VERSION, RecordKind::LogMark as u8, 8, 0, 0, 0]);
    assert_eq!(&bytes[HEADER_LEN..HEADER_LEN + 8], &[2, 1, 0, 0, 0, 0, 0, 0]);
    assert_eq!(&bytes[HEADER_LEN + 8..], &crc32fast::hash(&bytes[..HEADER_LEN + 8]).to_le_bytes());
}

#[test]
fn every_single_bit_flip_of_a_valid_record_is_an_error() {
    for (record, decodes) in sample_records() {
        for bit in 0..record.len() * 8 {
            let mut bytes = record.clone();
            bytes[bit / 8] ^= 1 << (bit % 8);
            assert!(!decodes(&bytes), "flip of bit {bit} decoded: {record:?}");
            decode_everything(&bytes);
        }
    }
}

#[test]
fn every_truncation_and_extension_of_a_valid_record_is_an_error() {
    for (record, decodes) in sample_records() {
        for len in 0..record.len() {
            assert!(!decodes(&record[..len]), "prefix of {len} bytes decoded");
        }
        let mut longer = record.clone();
        longer.push(0);
        assert!(!decodes(&longer));
    }
    assert!(matches!(decode_entry(&[]), Err(CodecError::Truncated { len: 0, .. })));
}

#[test]
fn a_record_of_another_kind_is_refused() {
    let bytes = encode_hard_state(&HardState::default()).unwrap();
    assert!(matches!(decode_entry(&bytes), Err(CodecError::WrongKind { expected: "log entry", found: 2 })));
}

#[test]
fn malformed_payloads_behind_a_valid_checksum_are_refused() {
    let header = [0u8; 16];
    let with = |tail: &[u8]| header.iter().chain(tail).copied().collect::<Vec<u8>>();
    let entry = |payload: &[u8]| decode_entry(&framed(RecordKind::Entry as u8, payload));
    assert_eq!(entry(&with(&[9])), Err(CodecError::Malformed("unknown entry payload tag")));
    assert_eq!(entry(&with(&[1, 255, 255, 255, 255])), Err(CodecError::Malformed("payload ends inside a field")));
    assert_eq!(entry(&with(&[2, 255, 255, 255, 255])), Err(CodecError::Malformed("item count exceeds the payload")));
    let vote = framed(RecordKind::HardState as u8, &[0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0]);
    assert_eq!(decode_hard_state(&vote), Err(CodecError::Malformed("invalid vote")));
    let mark = framed(RecordKind::LogMark as u8, &[0; 9]);
    assert_eq!(decode_log_mark(&mark), Err(CodecError::Malformed("payload has trailing bytes")));
    let mut duplicate = Vec::new();
    duplicate.extend_from_slice(&2u32.to_le_bytes());
    duplicate.extend_from_slice(&1u32.to_le_bytes());
    duplicate.extend_from_slice(&1u32.to_le_bytes());
    duplicate.extend_from_slice(&[0; 12]);
    let mut payload = vec![0; 16];
    payload.push(2);
    payload.extend_from_slice(&duplicate);
    let error = decode_entry(&framed(RecordKind::Entry as u8, &payload)).unwrap_err();
    assert_eq!(error, CodecError::Malformed("membership ids are not strictly ascending"));
}

fn arb_membership() -> impl Strategy<Value = Membership> {
    let ids = || btree_set(1u32..50, 0..6);
    let kind = prop_oneof![Just(LearnerKind::Promotable), Just(LearnerKind::ReadOnly)];
    (ids(), ids(), btree_map(1u32..50, kind, 0..4), btree_map(1u32..50, ".{0,12}", 0..6)).prop_map(
        |(voters, voters_outgoing, learners, addresses)| Membership { voters, voters_outgoing, learners, addresses },
    )
}

fn arb_entry() -> impl Strategy<Value = Entry> {
    let payload = prop_oneof![
        Just(EntryPayload::Noop),
        vec(any::<u8>(), 0..64).prop_map(|b| EntryPayload::Command(Bytes::from(b))),
        arb_membership().prop_map(|m| EntryPayload::Membership(Box::new(m))),
    ];
    (any::<u64>(), any::<u64>(), payload)
        .prop_map(|(term, index, payload)| Entry { log_id: LogId::new(term, index), payload })
}

proptest! {
    #[test]
    fn arbitrary_entries_round_trip(entry in arb_entry()) {
        prop_assert_eq!(decode_entry(&encode_entry(&entry).unwrap()).unwrap(), entry);
    }

    #[test]
    fn arbitrary_snapshot_meta_round_trips(membership in arb_membership(), term: u64, index: u64) {
        let meta = SnapshotMeta { last_included: LogId::new(term, index), membership };
        prop_assert_eq!(decode_snapshot_meta(&encode_snapshot_meta(&meta, b"").unwrap()).unwrap().meta, meta);
    }

    #[test]
    fn random_bytes_never_panic(bytes in vec(any::<u8>(), 0..256)) {
        decode_everything(&bytes);
    }

    #[test]
    fn random_payloads_behind_a_valid_checksum_never_panic(kind in 0u8..7, payload in vec(any::<u8>(), 0..256)) {
        decode_everything(&framed(kind, &payload));
    }
}
