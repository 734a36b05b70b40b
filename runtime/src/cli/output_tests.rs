//! The output formats, without a cluster.

use std::collections::BTreeMap;

use keel::client::{LeaderHint, Role};
use serde_json::Value;

use super::*;

fn kv(key: &'static str, value: &'static [u8]) -> KeyValue {
    KeyValue { key: Bytes::from_static(key.as_bytes()), value: Bytes::from_static(value) }
}

fn parse(text: &str) -> Value {
    assert!(text.ends_with('\n'));
    serde_json::from_str(text).unwrap()
}

#[test]
fn writes_print_ok() {
    assert_eq!(ok(Format::Simple), "OK\n");
    assert_eq!(parse(&ok(Format::Json))["ok"], true);
    assert_eq!(parse(&cas(Format::Json, false))["succeeded"], false);
    assert!(cas(Format::Simple, false).starts_with("NOT SWAPPED"));
}

#[test]
fn reads_print_pairs_or_json() {
    let found = [kv("/a", b"1"), kv("/b", &[0xff, 0x00])];
    assert_eq!(get(Format::Simple, &found[..1], &[]), "/a\n1\n");
    let json = parse(&get(Format::Json, &found, &["/c".to_string()]));
    assert_eq!(json["kvs"][0]["key"], "/a");
    assert_eq!(json["kvs"][0]["value"], "1");
    assert_eq!(json["kvs"][1]["value_hex"], "ff00");
    assert_eq!(json["missing"][0], "/c");
    let scanned = ScanResult { entries: found[..1].to_vec(), revision: 7 };
    let json = parse(&scan(Format::Json, &scanned));
    assert_eq!((json["revision"].as_u64(), json["kvs"].as_array().map(Vec::len)), (Some(7), Some(1)));
}

#[test]
fn watch_events_are_lines() {
    let event = WatchEvent {
        kind: WatchEventKind::Put,
        key: Bytes::from_static(b"/a"),
        value: Bytes::from_static(b"2"),
        prev_value: Bytes::from_static(b"1"),
        revision: 9,
    };
    assert_eq!(watch_event(Format::Simple, &event, true), "PUT /a 2 (was 1)\n");
    assert_eq!(watch_event(Format::Simple, &event, false), "PUT /a 2\n");
    let json = parse(&watch_event(Format::Json, &event, true));
    assert_eq!(
        (json["type"].as_str(), json["revision"].as_u64(), json["prev_value"].as_str()),
        (Some("PUT"), Some(9), Some("1"))
    );
    let progress = WatchEvent {
        kind: WatchEventKind::Progress,
        key: Bytes::new(),
        value: Bytes::new(),
        prev_value: Bytes::new(),
        revision: 10,
    };
    assert_eq!(watch_event(Format::Simple, &progress, false), "");
    assert_eq!(parse(&watch_event(Format::Json, &progress, false))["type"], "PROGRESS");
}

#[test]
fn members_list_voters_then_learners() {
    let membership = Membership {
        voters: vec![1, 2],
        learners: vec![4, 5],
        read_only_learners: vec![5],
        addresses: BTreeMap::from([(1, "h:1".to_string()), (2, "h:2".into()), (4, "h:4".into()), (5, "h:5".into())]),
    };
    let text = members(Format::Simple, &membership);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5);
    assert!(lines[3].starts_with("4 ") && lines[3].contains("learner") && lines[3].ends_with("h:4"));
    assert!(lines[4].contains("learner (read-only)"));
    let json = parse(&members(Format::Json, &membership));
    assert_eq!(json["members"].as_array().map(Vec::len), Some(4));
    assert_eq!(json["members"][3]["role"], "learner");
    assert_eq!(json["members"][3]["read_only"], true);
    assert_eq!(json["voters"], serde_json::json!([1, 2]));
}

#[test]
fn status_rows_and_failures() {
    let node = NodeStatus {
        endpoint: "http://127.0.0.1:7001".into(),
        id: 1,
        role: Role::Leader,
        term: 3,
        leader: Some(LeaderHint { id: 1, address: "127.0.0.1:7001".into() }),
        commit_index: 10,
        applied_index: 10,
        last_log_index: 10,
        revision: 8,
        voters: vec![1, 2, 3],
        learners: vec![],
        peers: vec![],
        has_quorum: true,
    };
    let failures = [("http://127.0.0.1:7002".to_string(), "connection refused".to_string())];
    let text = status(Format::Simple, std::slice::from_ref(&node), &failures);
    assert!(text.lines().nth(1).is_some_and(|row| row.starts_with("127.0.0.1:7001") && row.contains("leader")));
    assert!(text.contains("127.0.0.1:7002") && text.contains("unreachable: connection refused"));
    let json = parse(&status(Format::Json, &[node], &failures));
    assert_eq!(json["statuses"][0]["role"], "leader");
    assert_eq!(json["statuses"][0]["leader_id"], 1);
    assert_eq!(json["statuses"][0]["endpoint"], "127.0.0.1:7001");
    assert_eq!(json["errors"][0]["endpoint"], "127.0.0.1:7002");
}
