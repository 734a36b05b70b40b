//! Conversions between etcd's wire messages and Keel's key-value types: key ranges, revisions
//! (etcd's `int64`, Keel's `u64`), key-values, and the post-processing of a range read that etcd
//! does on the server (revision filters, sorting, limit, keys-only, count-only).

use std::cmp::Ordering;

use bytes::Bytes;
use keel::proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use keel::proto::etcdserverpb::RangeRequest;
use keel::proto::mvccpb;
use keel_core::kv::{KeyRange, KeyValue, KvError, RangeResult};
use tonic::Status;

use super::errors;

/// The key set of an etcd `key` / `range_end` pair: `range_end` empty is the single `key` (which
/// must then not be empty), `"\0"` every key from `key` on, otherwise `[key, range_end)`.
pub(crate) fn key_range(key: &Bytes, range_end: &Bytes) -> Result<KeyRange, Status> {
    if key.is_empty() && range_end.is_empty() {
        return Err(errors::status(errors::EMPTY_KEY));
    }
    Ok(KeyRange::new(key.clone(), range_end.clone()))
}

/// An etcd revision argument: 0 or less is "the latest".
pub(crate) fn revision_of(revision: i64) -> Option<u64> {
    u64::try_from(revision).ok().filter(|revision| *revision > 0)
}

/// A Keel revision, counter or id as etcd's `int64` (saturating: never reached in practice).
pub(crate) fn int(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// The wire form of a key-value; `keys_only` leaves the value out.
pub(crate) fn key_value(kv: &KeyValue, keys_only: bool) -> mvccpb::KeyValue {
    mvccpb::KeyValue {
        key: kv.key.clone(),
        create_revision: int(kv.create_revision),
        mod_revision: int(kv.mod_revision),
        version: int(kv.version),
        value: if keys_only { Bytes::new() } else { kv.value.clone() },
        lease: int(kv.lease),
    }
}

/// What is left of a range read after etcd's server-side options: the key-values to send,
/// `more`, and `count` (the live keys of the range, before filters and limit, as etcd counts).
#[derive(Debug, PartialEq)]
pub(crate) struct RangeAnswer {
    pub kvs: Vec<mvccpb::KeyValue>,
    pub more: bool,
    pub count: i64,
}

/// Applies `request`'s filters, sort, limit, keys-only and count-only to the read `read` (every
/// key of the range, or its first `limit` when the store could stop there).
pub(crate) fn finish_range(request: &RangeRequest, read: RangeResult) -> RangeAnswer {
    let count = int(read.count as u64);
    let mut kvs: Vec<KeyValue> = read.kvs.into_iter().filter(|kv| passes_filters(request, kv)).collect();
    sort(request, &mut kvs);
    let limit = usize::try_from(request.limit).unwrap_or(0);
    // The store may have stopped at the limit already (`read.more`).
    let more = limit > 0 && (kvs.len() > limit || read.more);
    if more {
        kvs.truncate(limit);
    }
    let kvs =
        if request.count_only { Vec::new() } else { kvs.iter().map(|kv| key_value(kv, request.keys_only)).collect() };
    RangeAnswer { kvs, more, count }
}

fn passes_filters(request: &RangeRequest, kv: &KeyValue) -> bool {
    let within = |value: u64, min: i64, max: i64| {
        let value = int(value);
        (min <= 0 || value >= min) && (max <= 0 || value <= max)
    };
    within(kv.mod_revision, request.min_mod_revision, request.max_mod_revision)
        && within(kv.create_revision, request.min_create_revision, request.max_create_revision)
}

/// Sorts as etcd does: no order with a target other than the key means ascending; the key in
/// ascending order is the natural order of the read.
fn sort(request: &RangeRequest, kvs: &mut [KeyValue]) {
    let target = SortTarget::try_from(request.sort_target).unwrap_or(SortTarget::Key);
    let order = match SortOrder::try_from(request.sort_order).unwrap_or(SortOrder::None) {
        SortOrder::None if target != SortTarget::Key => SortOrder::Ascend,
        order => order,
    };
    let compare = |a: &KeyValue, b: &KeyValue| -> Ordering {
        match target {
            SortTarget::Key => a.key.cmp(&b.key),
            SortTarget::Version => a.version.cmp(&b.version),
            SortTarget::Create => a.create_revision.cmp(&b.create_revision),
            SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
            SortTarget::Value => a.value.cmp(&b.value),
        }
    };
    match order {
        SortOrder::None => {}
        SortOrder::Ascend => kvs.sort_by(compare),
        SortOrder::Descend => kvs.sort_by(|a, b| compare(b, a)),
    }
}

/// A revision error of a read, as etcd words it.
pub(crate) fn read_error(error: &KvError) -> Status {
    errors::of_kv(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(key: &str, value: &str, create: u64, modified: u64) -> KeyValue {
        KeyValue {
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: Bytes::copy_from_slice(value.as_bytes()),
            create_revision: create,
            mod_revision: modified,
            version: 1,
            expires_at_ms: None,
            lease: 0,
        }
    }

    fn read() -> RangeResult {
        let kvs = vec![kv("a", "3", 1, 5), kv("b", "1", 2, 2), kv("c", "2", 3, 4)];
        RangeResult { revision: 5, count: kvs.len(), kvs, more: false }
    }

    fn keys(answer: &RangeAnswer) -> Vec<&[u8]> {
        answer.kvs.iter().map(|kv| &kv.key[..]).collect()
    }

    #[test]
    fn range_ends_follow_etcd_conventions() {
        let b = |s: &str| Bytes::copy_from_slice(s.as_bytes());
        let single = key_range(&b("k"), &b("")).unwrap();
        assert!(single.contains(b"k") && !single.contains(b"k1"));
        let from_key = key_range(&b("k"), &b("\0")).unwrap();
        assert!(from_key.contains(b"k") && from_key.contains(b"z") && !from_key.contains(b"a"));
        let every = key_range(&b("\0"), &b("\0")).unwrap();
        assert!(every.contains(b"\x01") && every.contains(b"zzz"));
        let prefix = key_range(&b("a/"), &b("a0")).unwrap();
        assert!(prefix.contains(b"a/x") && !prefix.contains(b"a0"));
        assert_eq!(key_range(&b(""), &b("")).unwrap_err().message(), "etcdserver: key is not provided");
        assert_eq!((revision_of(0), revision_of(-3), revision_of(7)), (None, None, Some(7)));
    }

    #[test]
    fn a_read_cut_short_by_the_store_keeps_more() {
        let request = RangeRequest { limit: 1, ..RangeRequest::default() };
        let mut cut = read();
        cut.kvs.truncate(1);
        cut.more = true;
        let answer = finish_range(&request, cut);
        assert_eq!((answer.kvs.len(), answer.more, answer.count), (1, true, 3));
    }

    #[test]
    fn limit_sets_more_and_count_ignores_it() {
        let request = RangeRequest { limit: 2, ..RangeRequest::default() };
        let answer = finish_range(&request, read());
        assert_eq!((keys(&answer), answer.more, answer.count), (vec![&b"a"[..], b"b"], true, 3));
        let exact = RangeRequest { limit: 3, ..RangeRequest::default() };
        assert!(!finish_range(&exact, read()).more);
    }

    #[test]
    fn sorting_and_filters_and_projections() {
        let by_value = RangeRequest { sort_target: SortTarget::Value as i32, ..RangeRequest::default() };
        assert_eq!(keys(&finish_range(&by_value, read())), vec![&b"b"[..], b"c", b"a"], "no order: ascending");
        let descend = RangeRequest { sort_order: SortOrder::Descend as i32, ..RangeRequest::default() };
        assert_eq!(keys(&finish_range(&descend, read())), vec![&b"c"[..], b"b", b"a"]);
        let filtered = RangeRequest { min_mod_revision: 3, max_create_revision: 2, ..RangeRequest::default() };
        assert_eq!(keys(&finish_range(&filtered, read())), vec![&b"a"[..]]);
        let keys_only = RangeRequest { keys_only: true, ..RangeRequest::default() };
        assert!(finish_range(&keys_only, read()).kvs.iter().all(|kv| kv.value.is_empty()));
        let count_only = RangeRequest { count_only: true, ..RangeRequest::default() };
        let answer = finish_range(&count_only, read());
        assert_eq!((answer.kvs.len(), answer.count), (0, 3));
    }
}
