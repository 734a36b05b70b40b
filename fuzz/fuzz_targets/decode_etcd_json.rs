//! Fuzz target: the bodies etcd's JSON gateway decodes (`runtime/src/etcd/gateway.rs`): proto3
//! JSON of every etcd v3 request, from arbitrary bytes. The first byte picks the request type;
//! decoding must never panic, and whatever decodes must survive a JSON encode/decode round trip
//! unchanged (when it can be encoded at all: an enum number the schema does not name decodes, as
//! proto3 keeps unknown enum values, but has no name to encode).

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Decodes `bytes` as JSON of `T` and checks the round trip.
fn round_trip<T: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug>(bytes: &[u8]) {
    if let Ok(message) = serde_json::from_slice::<T>(bytes) {
        if let Ok(encoded) = serde_json::to_vec(&message) {
            let again: T = serde_json::from_slice(&encoded).expect("re-encoded JSON must decode");
            assert_eq!(again, message);
        }
    }
}

/// One arm per request type, selected by the first byte modulo their number.
macro_rules! fuzz_requests {
    ($selector:expr, $bytes:expr, [$($request:ty),+ $(,)?]) => {{
        let types: &[fn(&[u8])] = &[$(round_trip::<$request>),+];
        types[usize::from($selector) % types.len()]($bytes);
    }};
}

fuzz_target!(|data: &[u8]| {
    let Some((selector, bytes)) = data.split_first() else { return };
    use keel::proto::etcdserverpb as etcd;
    fuzz_requests!(
        *selector,
        bytes,
        [
            etcd::RangeRequest,
            etcd::PutRequest,
            etcd::DeleteRangeRequest,
            etcd::TxnRequest,
            etcd::CompactionRequest,
            etcd::WatchRequest,
            etcd::LeaseGrantRequest,
            etcd::LeaseRevokeRequest,
            etcd::LeaseKeepAliveRequest,
            etcd::LeaseTimeToLiveRequest,
            etcd::LeaseLeasesRequest,
            etcd::MemberAddRequest,
            etcd::MemberRemoveRequest,
            etcd::MemberUpdateRequest,
            etcd::MemberPromoteRequest,
            etcd::AlarmRequest,
            etcd::StatusRequest,
            etcd::DefragmentRequest,
            etcd::HashRequest,
            etcd::HashKvRequest,
            etcd::MoveLeaderRequest,
            etcd::AuthEnableRequest,
            etcd::AuthDisableRequest,
            etcd::AuthStatusRequest,
            etcd::AuthenticateRequest,
            etcd::AuthUserAddRequest,
            etcd::AuthUserGetRequest,
            etcd::AuthUserListRequest,
            etcd::AuthUserDeleteRequest,
            etcd::AuthUserChangePasswordRequest,
            etcd::AuthUserGrantRoleRequest,
            etcd::AuthUserRevokeRoleRequest,
            etcd::AuthRoleAddRequest,
            etcd::AuthRoleGetRequest,
            etcd::AuthRoleListRequest,
            etcd::AuthRoleDeleteRequest,
            etcd::AuthRoleGrantPermissionRequest,
            etcd::AuthRoleRevokePermissionRequest,
        ]
    );
});
