//! Round trips of generated messages through prost encoding and decoding.
//!
//! They check that the generated code is what the protos say: field presence, field numbers,
//! enum values and their names, and that malformed input is an error rather than a panic.

use bytes::Bytes;
use prost::Message;

use super::client::{
    write_command, ClientReadRequest, ClientResponse, ClientWriteRequest, ReadConsistencyPolicy, WatchEventType,
    WriteCommand, WriteResult,
};
use super::common::{
    entry_payload, membership_change, BatchPromote, Entry, EntryPayload, LeaderHint, MembershipChange, NodeStatus,
};
use super::error::{ErrorCode, ErrorMetadata};

fn round_trip<M: Message + Default>(message: &M) -> M {
    M::decode(message.encode_to_vec().as_slice()).expect("a message we encoded must decode")
}

fn cas(expected_value: Option<Bytes>) -> ClientWriteRequest {
    ClientWriteRequest {
        client_id: 7,
        command: Some(WriteCommand {
            operation: Some(write_command::Operation::CompareAndSwap(write_command::CompareAndSwap {
                key: Bytes::from_static(b"/locks/a"),
                expected_value,
                new_value: Bytes::from_static(b"owner-7"),
            })),
        }),
    }
}

#[test]
fn cas_expected_absent_and_expected_empty_decode_distinctly() {
    let absent = cas(None);
    let empty = cas(Some(Bytes::new()));

    assert_ne!(absent.encode_to_vec(), empty.encode_to_vec());

    let absent_back = round_trip(&absent);
    let empty_back = round_trip(&empty);
    assert_eq!(absent_back, absent);
    assert_eq!(empty_back, empty);

    let expected = |request: &ClientWriteRequest| match &request.command {
        Some(WriteCommand { operation: Some(write_command::Operation::CompareAndSwap(cas)) }) => {
            cas.expected_value.clone()
        }
        other => panic!("not a compare-and-swap: {other:?}"),
    };
    assert_eq!(expected(&absent_back), None);
    assert_eq!(expected(&empty_back), Some(Bytes::new()));
}

#[test]
fn insert_has_the_seed_field_numbers_on_the_wire() {
    let request = ClientWriteRequest {
        client_id: 1,
        command: Some(WriteCommand {
            operation: Some(write_command::Operation::Insert(write_command::Insert {
                key: Bytes::from_static(b"k"),
                value: Bytes::from_static(b"v"),
                ttl_secs: 5,
            })),
        }),
    };
    #[rustfmt::skip]
    let wire: &[u8] = &[
        0x08, 0x01,       // client_id: field 1, varint, = 1
        0x12, 0x0a,       // command: field 2, length-delimited, 10 bytes
        0x0a, 0x08,       //   insert: field 1, length-delimited, 8 bytes
        0x0a, 0x01, b'k', //     key: field 1 = "k"
        0x12, 0x01, b'v', //     value: field 2 = "v"
        0x18, 0x05,       //     ttl_secs: field 3, varint, = 5
    ];
    assert_eq!(request.encode_to_vec(), wire);
    assert_eq!(ClientWriteRequest::decode(wire).unwrap(), request);
}

#[test]
fn delete_round_trips() {
    let request = ClientWriteRequest {
        client_id: 3,
        command: Some(WriteCommand {
            operation: Some(write_command::Operation::Delete(write_command::Delete {
                key: Bytes::from_static(b"/gone"),
            })),
        }),
    };
    assert_eq!(round_trip(&request), request);
}

#[test]
fn read_policy_absent_differs_from_lease_read_the_zero_value() {
    let default_policy = ClientReadRequest {
        client_id: 1,
        keys: vec![Bytes::from_static(b"/a"), Bytes::from_static(b"/b")],
        consistency_policy: None,
    };
    let mut lease = default_policy.clone();
    lease.set_consistency_policy(ReadConsistencyPolicy::LeaseRead);

    let default_back = round_trip(&default_policy);
    let lease_back = round_trip(&lease);
    assert_eq!(default_back.consistency_policy, None);
    assert_eq!(lease_back.consistency_policy, Some(ReadConsistencyPolicy::LeaseRead as i32));
    assert_eq!(lease_back.keys, default_policy.keys);
}

#[test]
fn success_response_is_the_default_and_encodes_empty() {
    let response = ClientResponse::default();
    assert_eq!(response.error(), ErrorCode::Success);
    assert!(response.encode_to_vec().is_empty());
}

#[test]
fn not_leader_response_carries_the_leader_hint() {
    let response = ClientResponse {
        error: ErrorCode::NotLeader as i32,
        success_result: None,
        metadata: Some(ErrorMetadata {
            message: "node 2 is not the leader".to_owned(),
            leader_hint: Some(LeaderHint { leader_id: 3, address: "127.0.0.1:5003".to_owned() }),
            retry_after_ms: 0,
        }),
    };
    let back = round_trip(&response);
    assert_eq!(back, response);
    assert_eq!(back.error(), ErrorCode::NotLeader);
    let hint = back.metadata.and_then(|m| m.leader_hint).expect("hint");
    assert_eq!(hint.leader_id, 3);
    assert_eq!(hint.address, "127.0.0.1:5003");
}

#[test]
fn write_result_round_trips_in_the_oneof() {
    let response = ClientResponse {
        error: ErrorCode::Success as i32,
        success_result: Some(super::client::client_response::SuccessResult::WriteResult(WriteResult {
            succeeded: false,
        })),
        metadata: None,
    };
    assert_eq!(round_trip(&response), response);
}

#[test]
fn unknown_error_code_survives_decoding_but_the_getter_hides_it() {
    // A newer server may send a code this build does not know. The raw field keeps it, while the
    // generated getter silently maps it to the default (SUCCESS): clients must use `try_from`.
    let response = ClientResponse { error: 999, ..Default::default() };
    let back = round_trip(&response);
    assert_eq!(back.error, 999);
    assert!(ErrorCode::try_from(back.error).is_err());
    assert_eq!(back.error(), ErrorCode::Success);
}

#[test]
fn enum_values_keep_their_prefixed_proto_names() {
    assert_eq!(ErrorCode::Success as i32, 0);
    assert_eq!(ErrorCode::NotLeader.as_str_name(), "ERROR_CODE_NOT_LEADER");
    assert_eq!(ErrorCode::from_str_name("ERROR_CODE_OUTCOME_UNKNOWN"), Some(ErrorCode::OutcomeUnknown));
    assert_eq!(
        ReadConsistencyPolicy::EventualConsistency.as_str_name(),
        "READ_CONSISTENCY_POLICY_EVENTUAL_CONSISTENCY"
    );
    assert_eq!(WatchEventType::Progress as i32, 3);
    assert_eq!(NodeStatus::ReadOnly as i32, 2);
}

#[test]
fn membership_entry_round_trips() {
    let entry = Entry {
        index: 42,
        term: 7,
        payload: Some(EntryPayload {
            payload: Some(entry_payload::Payload::Config(MembershipChange {
                change: Some(membership_change::Change::BatchPromote(BatchPromote {
                    node_ids: vec![4, 5],
                    new_status: NodeStatus::Active as i32,
                })),
            })),
        }),
    };
    assert_eq!(round_trip(&entry), entry);
}

#[test]
fn malformed_input_is_an_error_not_a_panic() {
    let inputs: &[&[u8]] = &[
        // Field 2 (command) with its length missing.
        &[0x12],
        // A length that runs past the end of the input.
        &[0x12, 0x05, 0x0a],
        // A tag varint longer than ten bytes.
        &[0xff; 11],
        // Field 1 with the deprecated start-group wire type.
        &[0x0b],
        // Wire type 7, which does not exist.
        &[0x0f],
    ];
    for input in inputs {
        assert!(ClientWriteRequest::decode(*input).is_err(), "{input:02x?} decoded");
    }
}

/// etcd's HTTP gateway writes proto3 JSON with the proto field names: int64 as strings, bytes in
/// base64, enums by name, default values left out; it reads numbers or strings for int64.
#[test]
fn etcd_messages_read_and_write_the_json_of_etcds_gateway() {
    use super::etcdserverpb::{compare, Compare, RangeRequest, RangeResponse, ResponseHeader, WatchRequest};
    use super::mvccpb::{event::EventType, Event, KeyValue};

    let header = ResponseHeader { cluster_id: 14841639068965178418, member_id: 1, revision: 5, raft_term: 2 };
    let kv = KeyValue {
        key: Bytes::from_static(b"foo"),
        value: Bytes::from_static(b"bar"),
        create_revision: 2,
        mod_revision: 5,
        version: 3,
        lease: 0,
    };
    let response = RangeResponse { header: Some(header), kvs: vec![kv.clone()], more: false, count: 1 };
    let json: serde_json::Value = serde_json::to_value(&response).unwrap();
    assert_eq!(json["header"]["cluster_id"], "14841639068965178418");
    assert_eq!(json["header"]["raft_term"], "2");
    assert_eq!(json["kvs"][0]["key"], "Zm9v");
    assert_eq!(json["kvs"][0]["mod_revision"], "5");
    assert_eq!(json["count"], "1");
    assert!(json["kvs"][0].get("lease").is_none() && json.get("more").is_none(), "defaults are left out: {json}");

    let request: RangeRequest =
        serde_json::from_str(r#"{"key":"Zm9v","range_end":"Zm9w","limit":"2","serializable":true}"#).unwrap();
    assert_eq!(
        (request.key.as_ref(), request.range_end.as_ref(), request.limit, request.serializable),
        (&b"foo"[..], &b"fop"[..], 2, true)
    );
    let numeric: RangeRequest = serde_json::from_str(r#"{"key":"Zm9v","limit":2,"unknown":1}"#).unwrap();
    assert_eq!(numeric.limit, 2, "numbers are read too, unknown fields skipped");
    assert!(serde_json::from_str::<RangeRequest>(r#"{"key":"not base64!"}"#).is_err());

    let watch: WatchRequest =
        serde_json::from_str(r#"{"create_request":{"key":"Zm9v","start_revision":"3"}}"#).unwrap();
    assert!(format!("{watch:?}").contains("start_revision: 3"), "{watch:?}");
    let compare: Compare =
        serde_json::from_str(r#"{"result":"GREATER","target":"MOD","key":"Zm9v","mod_revision":"1"}"#).unwrap();
    assert_eq!(compare.result(), compare::CompareResult::Greater);
    assert_eq!(compare.target(), compare::CompareTarget::Mod);

    let put =
        serde_json::to_value(Event { r#type: EventType::Put as i32, kv: Some(kv.clone()), prev_kv: None }).unwrap();
    assert!(put.get("type").is_none(), "PUT is the default: {put}");
    let delete = serde_json::to_value(Event { r#type: EventType::Delete as i32, kv: Some(kv), prev_kv: None }).unwrap();
    assert_eq!(delete["type"], "DELETE");
}
