//! Unit tests of the key-value state machine, one file per feature, and a property test against
//! a simple model. Shared helpers live here.

mod auth;
mod auth_checks;
mod codec;
mod expiry;
mod lease;
mod model;
mod mvcc;
mod snapshot;
mod txn;

use bytes::Bytes;

use super::{ApplyResult, KvCommand, KvStore, OpResponse};

/// Bytes from a string literal.
pub(super) fn b(text: &str) -> Bytes {
    Bytes::copy_from_slice(text.as_bytes())
}

/// A put without time to live.
pub(super) fn put(key: &str, value: &str) -> KvCommand {
    KvCommand::Put { key: b(key), value: b(value), ttl_ms: None }
}

/// A delete of one key.
pub(super) fn delete(key: &str) -> KvCommand {
    KvCommand::Delete { key: b(key) }
}

/// Applies `command` at the next log index, stamped at time 0.
pub(super) fn apply(store: &mut KvStore, command: KvCommand) -> ApplyResult {
    apply_at(store, 0, command)
}

/// Applies `command` at the next log index, stamped `proposed_at_ms`.
pub(super) fn apply_at(store: &mut KvStore, proposed_at_ms: u64, command: KvCommand) -> ApplyResult {
    let index = store.last_applied_index() + 1;
    store.apply(index, proposed_at_ms, &command)
}

/// The current value of `key` as a string, if live.
pub(super) fn value(store: &KvStore, key: &str) -> Option<String> {
    let kv = store.get(key.as_bytes(), None).unwrap()?;
    Some(String::from_utf8(kv.value.to_vec()).unwrap())
}

/// The keys deleted by a single-response result.
pub(super) fn deleted_keys(result: &ApplyResult) -> Vec<Bytes> {
    match &result.responses[..] {
        [OpResponse::Delete { deleted }] => deleted.iter().map(|kv| kv.key.clone()).collect(),
        other => panic!("expected one delete response, got {other:?}"),
    }
}
