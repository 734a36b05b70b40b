//! etcd transactions: a `TxnRequest` becomes one `KvCommand::Txn` (one log entry, one
//! revision, compares decided when it applies), and the command's `OpResponse`s become etcd's
//! `ResponseOp`s, with each read's range options applied.
//!
//! Refused as etcd refuses them: a list longer than the node's `txn_ops_max` (`too many
//! operations`), a branch that writes one key twice or puts a key its own delete covers
//! (`duplicate key`). Puts map as outside a transaction (`kv.rs`); a range with a `revision`
//! reads that past revision (a compacted or future one refuses the whole transaction with
//! etcd's revision errors, as etcd does).

use bytes::Bytes;
use keel::proto::etcdserverpb::compare::{CompareResult, CompareTarget as WireTarget, TargetUnion};
use keel::proto::etcdserverpb::request_op::Request as WireRequest;
use keel::proto::etcdserverpb::response_op::Response as WireResponse;
use keel::proto::etcdserverpb::{
    Compare as WireCompare, DeleteRangeResponse, PutResponse, RangeResponse, RequestOp, ResponseHeader, ResponseOp,
    TxnRequest, TxnResponse,
};
use keel_core::kv::{Compare, CompareOp, CompareTarget, KeyRange, KvCommand, OpResponse, TxnOp};
use tonic::Status;

use super::convert::{finish_range, int, key_range, key_value, revision_of};
use super::errors;

/// The command of a transaction request, refused with etcd's errors where etcd refuses it.
pub(crate) fn command_of(request: &TxnRequest, ops_max: usize) -> Result<KvCommand, Status> {
    let (compares, success, failure) = parts_of(request, ops_max)?;
    Ok(KvCommand::Txn { compares, success, failure })
}

type Parts = (Vec<Compare>, Vec<TxnOp>, Vec<TxnOp>);

fn parts_of(request: &TxnRequest, ops_max: usize) -> Result<Parts, Status> {
    if [request.compare.len(), request.success.len(), request.failure.len()].iter().any(|len| *len > ops_max) {
        return Err(errors::status(errors::TOO_MANY_OPS));
    }
    let compares = request.compare.iter().map(compare_of).collect::<Result<_, _>>()?;
    let success = ops_of(&request.success, ops_max)?;
    let failure = ops_of(&request.failure, ops_max)?;
    Ok((compares, success, failure))
}

fn compare_of(compare: &WireCompare) -> Result<Compare, Status> {
    if compare.key.is_empty() && compare.range_end.is_empty() {
        return Err(errors::status(errors::EMPTY_KEY));
    }
    let number = |value: i64| u64::try_from(value).unwrap_or(0);
    let union = compare.target_union.as_ref();
    let target = match WireTarget::try_from(compare.target) {
        Ok(WireTarget::Version) => CompareTarget::Version(number(match union {
            Some(TargetUnion::Version(value)) => *value,
            _ => 0,
        })),
        Ok(WireTarget::Create) => CompareTarget::CreateRevision(number(match union {
            Some(TargetUnion::CreateRevision(value)) => *value,
            _ => 0,
        })),
        Ok(WireTarget::Mod) => CompareTarget::ModRevision(number(match union {
            Some(TargetUnion::ModRevision(value)) => *value,
            _ => 0,
        })),
        Ok(WireTarget::Value) => CompareTarget::Value(match union {
            Some(TargetUnion::Value(value)) => value.clone(),
            _ => Bytes::new(),
        }),
        Ok(WireTarget::Lease) => CompareTarget::Lease(number(match union {
            Some(TargetUnion::Lease(value)) => *value,
            _ => 0,
        })),
        Err(_) => {
            return Err(Status::invalid_argument(format!("etcdserver: unknown compare target {}", compare.target)))
        }
    };
    let op = match CompareResult::try_from(compare.result) {
        Ok(CompareResult::Equal) => CompareOp::Equal,
        Ok(CompareResult::Greater) => CompareOp::Greater,
        Ok(CompareResult::Less) => CompareOp::Less,
        Ok(CompareResult::NotEqual) => CompareOp::NotEqual,
        Err(_) => {
            return Err(Status::invalid_argument(format!("etcdserver: unknown compare result {}", compare.result)))
        }
    };
    Ok(Compare { key: compare.key.clone(), range_end: compare.range_end.clone(), target, op })
}

fn ops_of(ops: &[RequestOp], ops_max: usize) -> Result<Vec<TxnOp>, Status> {
    let ops: Vec<TxnOp> = ops.iter().map(|op| op_of(op, ops_max)).collect::<Result<_, _>>()?;
    check_duplicates(&ops)?;
    Ok(ops)
}

fn op_of(op: &RequestOp, ops_max: usize) -> Result<TxnOp, Status> {
    match &op.request {
        Some(WireRequest::RequestRange(range)) => {
            let keys = key_range(&range.key, &range.range_end)?;
            Ok(match revision_of(range.revision) {
                Some(revision) => TxnOp::RangeAt { start: keys.start, end: keys.end, limit: 0, revision },
                None => TxnOp::Range { start: keys.start, end: keys.end, limit: 0 },
            })
        }
        Some(WireRequest::RequestPut(put)) => match super::kv::put_command(put)? {
            KvCommand::Put { key, value, ttl_ms } => Ok(TxnOp::Put { key, value, ttl_ms }),
            KvCommand::Txn { mut success, .. } if success.len() == 1 => Ok(success.remove(0)),
            _ => Err(errors::unimplemented("this put inside a transaction")),
        },
        Some(WireRequest::RequestDeleteRange(delete)) => {
            let keys = key_range(&delete.key, &delete.range_end)?;
            Ok(TxnOp::DeleteRange { start: keys.start, end: keys.end })
        }
        Some(WireRequest::RequestTxn(txn)) => {
            let (compares, success, failure) = parts_of(txn, ops_max)?;
            Ok(TxnOp::Txn { compares, success, failure })
        }
        None => Err(Status::invalid_argument("etcdserver: a transaction operation has no request")),
    }
}

/// etcd's rule for one branch: no key is put twice, and no key put is inside a range the same
/// branch deletes.
fn check_duplicates(ops: &[TxnOp]) -> Result<(), Status> {
    let mut puts = std::collections::BTreeSet::new();
    let mut deletes = Vec::new();
    for op in ops {
        match op {
            TxnOp::Put { key, .. }
            | TxnOp::PutSameValue { key }
            | TxnOp::PutInLease { key, .. }
            | TxnOp::PutKeepLease { key, .. }
            | TxnOp::PutSameValueInLease { key, .. }
            | TxnOp::PutSameValueKeepLease { key } => {
                if !puts.insert(key.clone()) {
                    return Err(errors::status(errors::DUPLICATE_KEY));
                }
            }
            TxnOp::DeleteRange { start, end } => deletes.push(KeyRange::new(start.clone(), end.clone())),
            TxnOp::Delete { key } => deletes.push(KeyRange::key(key.clone())),
            TxnOp::Range { .. } | TxnOp::RangeAt { .. } | TxnOp::Txn { .. } => {}
        }
    }
    if puts.iter().any(|key| deletes.iter().any(|range| range.contains(key))) {
        return Err(errors::status(errors::DUPLICATE_KEY));
    }
    Ok(())
}

/// etcd's responses of the branch a transaction took, every one with `header`.
pub(crate) fn responses_of(
    request: &TxnRequest,
    succeeded: bool,
    responses: &[OpResponse],
    header: &ResponseHeader,
) -> Vec<ResponseOp> {
    let ops = if succeeded { &request.success } else { &request.failure };
    ops.iter().zip(responses).filter_map(|(op, response)| response_of(op, response, header)).collect()
}

fn response_of(op: &RequestOp, response: &OpResponse, shared: &ResponseHeader) -> Option<ResponseOp> {
    let header = Some(*shared);
    let wire = match (op.request.as_ref()?, response) {
        (WireRequest::RequestRange(request), OpResponse::Range(read)) => {
            let finished = finish_range(request, read.clone());
            WireResponse::ResponseRange(RangeResponse {
                header,
                kvs: finished.kvs,
                more: finished.more,
                count: finished.count,
            })
        }
        (WireRequest::RequestPut(request), OpResponse::Put { prev }) => WireResponse::ResponsePut(PutResponse {
            header,
            prev_kv: prev.as_ref().filter(|_| request.prev_kv).map(|kv| key_value(kv, false)),
        }),
        (WireRequest::RequestDeleteRange(request), OpResponse::Delete { deleted }) => {
            WireResponse::ResponseDeleteRange(DeleteRangeResponse {
                header,
                deleted: int(deleted.len() as u64),
                prev_kvs: if request.prev_kv {
                    deleted.iter().map(|kv| key_value(kv, false)).collect()
                } else {
                    vec![]
                },
            })
        }
        (WireRequest::RequestTxn(request), OpResponse::Txn { succeeded, responses }) => {
            WireResponse::ResponseTxn(TxnResponse {
                header,
                succeeded: *succeeded,
                responses: responses_of(request, *succeeded, responses, shared),
            })
        }
        _ => return None,
    };
    Some(ResponseOp { response: Some(wire) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel::proto::etcdserverpb::{DeleteRangeRequest, PutRequest, RangeRequest};
    use keel_core::kv::KvStore;

    fn put(key: &str, value: &str) -> RequestOp {
        let put = PutRequest {
            key: key.as_bytes().to_vec().into(),
            value: value.as_bytes().to_vec().into(),
            ..Default::default()
        };
        RequestOp { request: Some(WireRequest::RequestPut(put)) }
    }

    fn get(key: &str, range_end: &str) -> RequestOp {
        let range = RangeRequest {
            key: key.as_bytes().to_vec().into(),
            range_end: range_end.as_bytes().to_vec().into(),
            ..Default::default()
        };
        RequestOp { request: Some(WireRequest::RequestRange(range)) }
    }

    fn compare(key: &str, target: WireTarget, result: CompareResult, union: TargetUnion) -> WireCompare {
        WireCompare {
            result: result as i32,
            target: target as i32,
            key: key.as_bytes().to_vec().into(),
            target_union: Some(union),
            range_end: Bytes::new(),
        }
    }

    /// Applies a request to a store through the conversion, as the leader would.
    fn run(store: &mut KvStore, request: &TxnRequest) -> TxnResponse {
        let command = command_of(request, 128).unwrap();
        let result = store.apply(store.last_applied_index() + 1, 0, &command);
        let header = ResponseHeader { revision: int(result.revision), ..Default::default() };
        TxnResponse {
            header: None,
            succeeded: result.succeeded,
            responses: responses_of(request, result.succeeded, &result.responses, &header),
        }
    }

    #[test]
    fn compares_map_on_every_target_and_result() {
        let cases = [
            (WireTarget::Version, TargetUnion::Version(2), CompareTarget::Version(2)),
            (WireTarget::Create, TargetUnion::CreateRevision(3), CompareTarget::CreateRevision(3)),
            (WireTarget::Mod, TargetUnion::ModRevision(4), CompareTarget::ModRevision(4)),
            (WireTarget::Value, TargetUnion::Value("v".into()), CompareTarget::Value("v".into())),
            (WireTarget::Lease, TargetUnion::Lease(5), CompareTarget::Lease(5)),
        ];
        for (target, union, expected) in cases {
            assert_eq!(compare_of(&compare("k", target, CompareResult::Equal, union)).unwrap().target, expected);
        }
        let results = [
            (CompareResult::Equal, CompareOp::Equal),
            (CompareResult::Greater, CompareOp::Greater),
            (CompareResult::Less, CompareOp::Less),
            (CompareResult::NotEqual, CompareOp::NotEqual),
        ];
        for (result, op) in results {
            assert_eq!(compare_of(&compare("k", WireTarget::Version, result, TargetUnion::Version(0))).unwrap().op, op);
        }
    }

    #[test]
    fn a_transaction_applies_one_branch_at_one_revision_with_nested_responses() {
        let mut store = KvStore::new();
        let setup = TxnRequest { success: vec![put("a", "1"), put("b", "2")], ..Default::default() };
        assert!(run(&mut store, &setup).succeeded);
        assert_eq!(store.current_revision(), 2, "both puts share one revision (an empty store is at 1)");
        let nested = TxnRequest { success: vec![get("a", "c")], ..Default::default() };
        let request = TxnRequest {
            compare: vec![compare("a", WireTarget::Value, CompareResult::Equal, TargetUnion::Value("1".into()))],
            success: vec![put("a", "x"), RequestOp { request: Some(WireRequest::RequestTxn(nested)) }],
            failure: vec![get("a", "")],
        };
        let response = run(&mut store, &request);
        assert!(response.succeeded);
        let Some(WireResponse::ResponseTxn(inner)) = &response.responses[1].response else { panic!("{response:?}") };
        let Some(WireResponse::ResponseRange(read)) = &inner.responses[0].response else { panic!("{inner:?}") };
        assert_eq!(read.count, 2);
        assert_eq!(&read.kvs[0].value[..], b"x", "the nested read sees the earlier put");
        assert_eq!(read.kvs[0].mod_revision, 3);
        let again = run(&mut store, &request);
        assert!(!again.succeeded, "a is x now");
        let Some(WireResponse::ResponseRange(read)) = &again.responses[0].response else { panic!("{again:?}") };
        assert_eq!(&read.kvs[0].value[..], b"x");
    }

    #[test]
    fn etcd_refusals() {
        let two = TxnRequest { success: vec![put("a", "1"), put("a", "2")], ..Default::default() };
        assert_eq!(command_of(&two, 128).unwrap_err().message(), errors::DUPLICATE_KEY.1);
        let delete = DeleteRangeRequest { key: "a".into(), range_end: "b".into(), prev_kv: false };
        let covered = TxnRequest {
            failure: vec![RequestOp { request: Some(WireRequest::RequestDeleteRange(delete)) }, put("a1", "1")],
            ..Default::default()
        };
        assert_eq!(command_of(&covered, 128).unwrap_err().message(), errors::DUPLICATE_KEY.1);
        let many = TxnRequest { success: vec![get("a", ""); 3], ..Default::default() };
        assert_eq!(command_of(&many, 2).unwrap_err().message(), errors::TOO_MANY_OPS.1);
        let mut past = RangeRequest { key: "a".into(), revision: 3, ..Default::default() };
        let at_past = TxnRequest {
            success: vec![RequestOp { request: Some(WireRequest::RequestRange(past.clone())) }],
            ..Default::default()
        };
        let KvCommand::Txn { success, .. } = command_of(&at_past, 128).unwrap() else { panic!("a transaction") };
        assert_eq!(success, vec![TxnOp::RangeAt { start: "a".into(), end: Bytes::new(), limit: 0, revision: 3 }]);
        past.revision = 0;
        past.key = Bytes::new();
        let empty = TxnRequest {
            success: vec![RequestOp { request: Some(WireRequest::RequestRange(past)) }],
            ..Default::default()
        };
        assert_eq!(command_of(&empty, 128).unwrap_err().message(), errors::EMPTY_KEY.1);
    }
}
