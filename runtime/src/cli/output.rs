//! What the client commands print: a form for people (`-w simple`, the default) and JSON for
//! scripts (`-w json`). Keys and values are shown as text; in JSON a key or value that is not
//! UTF-8 is given in hex under `key_hex` / `value_hex` instead.
//!
//! Every function returns the text to print on standard output, so that the formats are tested
//! without a cluster.

use std::fmt::Write as _;

use bytes::Bytes;
use keel::client::{KeyValue, Membership, NodeStatus, ScanResult, WatchEvent, WatchEventKind};
use serde_json::{json, Map, Value};

use super::Format;

/// Bytes as text for people (invalid UTF-8 replaced).
fn text(bytes: &Bytes) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Inserts `name` (UTF-8 text) or `name_hex` into a JSON object.
fn put_bytes(object: &mut Map<String, Value>, name: &str, bytes: &Bytes) {
    match std::str::from_utf8(bytes) {
        Ok(text) => object.insert(name.to_owned(), Value::from(text)),
        Err(_) => object.insert(format!("{name}_hex"), Value::from(hex(bytes))),
    };
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut out, byte| {
        let _ = write!(out, "{byte:02x}");
        out
    })
}

fn kv_json(entry: &KeyValue) -> Value {
    let mut object = Map::new();
    put_bytes(&mut object, "key", &entry.key);
    put_bytes(&mut object, "value", &entry.value);
    Value::Object(object)
}

fn kvs_simple(entries: &[KeyValue]) -> String {
    entries.iter().map(|entry| format!("{}\n{}\n", text(&entry.key), text(&entry.value))).collect()
}

fn document(value: Value) -> String {
    format!("{value}\n")
}

/// A write that succeeded (`put`, `del`).
pub fn ok(format: Format) -> String {
    match format {
        Format::Simple => "OK\n".into(),
        Format::Json => document(json!({ "ok": true })),
    }
}

/// The result of `cas`.
pub fn cas(format: Format, succeeded: bool) -> String {
    match (format, succeeded) {
        (Format::Json, _) => document(json!({ "succeeded": succeeded })),
        (Format::Simple, true) => "OK\n".into(),
        (Format::Simple, false) => "NOT SWAPPED: the key's current value is not the expected one\n".into(),
    }
}

/// The result of `get`: every key found, in `key\nvalue` pairs; `missing` lists the others.
pub fn get(format: Format, found: &[KeyValue], missing: &[String]) -> String {
    match format {
        Format::Simple => kvs_simple(found),
        Format::Json => document(json!({
            "kvs": found.iter().map(kv_json).collect::<Vec<_>>(),
            "missing": missing,
        })),
    }
}

/// The result of `scan`.
pub fn scan(format: Format, result: &ScanResult) -> String {
    match format {
        Format::Simple => kvs_simple(&result.entries),
        Format::Json => document(json!({
            "revision": result.revision,
            "kvs": result.entries.iter().map(kv_json).collect::<Vec<_>>(),
        })),
    }
}

/// One watch event: a line for people (progress events are not shown), a JSON line for scripts.
pub fn watch_event(format: Format, event: &WatchEvent, prev_kv: bool) -> String {
    match format {
        Format::Simple => match event.kind {
            WatchEventKind::Progress => String::new(),
            WatchEventKind::Put if prev_kv && !event.prev_value.is_empty() => {
                format!("PUT {} {} (was {})\n", text(&event.key), text(&event.value), text(&event.prev_value))
            }
            WatchEventKind::Put => format!("PUT {} {}\n", text(&event.key), text(&event.value)),
            WatchEventKind::Delete if prev_kv && !event.prev_value.is_empty() => {
                format!("DELETE {} (was {})\n", text(&event.key), text(&event.prev_value))
            }
            WatchEventKind::Delete => format!("DELETE {}\n", text(&event.key)),
        },
        Format::Json => {
            let mut object = Map::new();
            object.insert("type".into(), Value::from(event.kind.as_str()));
            object.insert("revision".into(), Value::from(event.revision));
            if event.kind != WatchEventKind::Progress {
                put_bytes(&mut object, "key", &event.key);
                put_bytes(&mut object, "value", &event.value);
                if prev_kv {
                    put_bytes(&mut object, "prev_value", &event.prev_value);
                }
            }
            document(Value::Object(object))
        }
    }
}

/// The role of `id` in `membership`.
fn member_role(membership: &Membership, id: u32) -> &'static str {
    if membership.voters.contains(&id) {
        "voter"
    } else if membership.read_only_learners.contains(&id) {
        "learner (read-only)"
    } else {
        "learner"
    }
}

/// Every member, voters first, each once.
fn member_ids(membership: &Membership) -> Vec<u32> {
    let mut ids: Vec<u32> = Vec::new();
    for id in membership.voters.iter().chain(&membership.learners).chain(&membership.read_only_learners) {
        if !ids.contains(id) {
            ids.push(*id);
        }
    }
    ids
}

/// The result of `members` and of membership changes.
pub fn members(format: Format, membership: &Membership) -> String {
    let ids = member_ids(membership);
    match format {
        Format::Simple => {
            let mut out = format!("{:<6} {:<20} {}\n", "ID", "ROLE", "ADDRESS");
            for id in ids {
                let address = membership.addresses.get(&id).map_or("-", String::as_str);
                let _ = writeln!(out, "{id:<6} {:<20} {address}", member_role(membership, id));
            }
            out
        }
        Format::Json => document(json!({
            "voters": membership.voters,
            "learners": membership.learners,
            "read_only_learners": membership.read_only_learners,
            "members": ids.iter().map(|id| json!({
                "id": id,
                "role": member_role(membership, *id).split(' ').next().unwrap_or("learner"),
                "read_only": membership.read_only_learners.contains(id),
                "address": membership.addresses.get(id),
            })).collect::<Vec<_>>(),
        })),
    }
}

/// An endpoint as people write it (without `http://`).
pub fn short_endpoint(endpoint: &str) -> &str {
    endpoint.strip_prefix("http://").unwrap_or(endpoint)
}

fn ids(ids: &[u32]) -> String {
    if ids.is_empty() {
        "-".into()
    } else {
        ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
    }
}

fn status_json(status: &NodeStatus) -> Value {
    json!({
        "endpoint": short_endpoint(&status.endpoint),
        "id": status.id,
        "role": status.role.as_str(),
        "term": status.term,
        "leader_id": status.leader.as_ref().map(|leader| leader.id),
        "leader_address": status.leader.as_ref().map(|leader| leader.address.clone()),
        "commit_index": status.commit_index,
        "applied_index": status.applied_index,
        "last_log_index": status.last_log_index,
        "revision": status.revision,
        "voters": status.voters,
        "learners": status.learners,
        "has_quorum": status.has_quorum,
        "peers": status.peers.iter().map(|peer| json!({
            "id": peer.id,
            "address": peer.address,
            "match_index": peer.match_index,
            "last_contact_ms_ago": peer.last_contact_ms_ago,
        })).collect::<Vec<_>>(),
    })
}

/// The result of `status`: one row per endpoint; endpoints that failed are listed with why.
pub fn status(format: Format, statuses: &[NodeStatus], failures: &[(String, String)]) -> String {
    match format {
        Format::Simple => {
            let mut out = format!(
                "{:<22} {:<4} {:<10} {:<6} {:<7} {:<8} {:<8} {:<9} {:<10} {}\n",
                "ENDPOINT", "ID", "ROLE", "TERM", "LEADER", "COMMIT", "APPLIED", "REVISION", "VOTERS", "LEARNERS"
            );
            for status in statuses {
                let leader = status.leader.as_ref().map_or_else(|| "-".to_string(), |leader| leader.id.to_string());
                let _ = writeln!(
                    out,
                    "{:<22} {:<4} {:<10} {:<6} {:<7} {:<8} {:<8} {:<9} {:<10} {}",
                    short_endpoint(&status.endpoint),
                    status.id,
                    status.role.as_str(),
                    status.term,
                    leader,
                    status.commit_index,
                    status.applied_index,
                    status.revision,
                    ids(&status.voters),
                    ids(&status.learners),
                );
            }
            for (endpoint, error) in failures {
                let _ = writeln!(out, "{:<22} unreachable: {error}", short_endpoint(endpoint));
            }
            out
        }
        Format::Json => document(json!({
            "statuses": statuses.iter().map(status_json).collect::<Vec<_>>(),
            "errors": failures.iter().map(|(endpoint, error)| json!({
                "endpoint": short_endpoint(endpoint),
                "error": error,
            })).collect::<Vec<_>>(),
        })),
    }
}

#[cfg(test)]
#[path = "output_tests.rs"]
mod tests;
