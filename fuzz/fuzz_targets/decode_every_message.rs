//! Fuzz target: every protocol message of Keel's `.proto` files decoded from arbitrary bytes
//! (the native, peer and admin messages, and the etcd v3 and gRPC health requests clients send).
//! The first byte picks the message type; decoding must never panic, and whatever decodes must
//! survive an encode/decode round trip unchanged.

#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;

/// Decodes `bytes` as `T` and checks the round trip.
fn round_trip<T: Message + Default + PartialEq + std::fmt::Debug>(bytes: &[u8]) {
    if let Ok(message) = T::decode(bytes) {
        let encoded = message.encode_to_vec();
        let again = T::decode(encoded.as_slice()).expect("re-encoding a decoded message must decode");
        assert_eq!(again, message);
    }
}

/// One arm per message type, selected by the first byte modulo their number.
macro_rules! fuzz_messages {
    ($selector:expr, $bytes:expr, [$($message:ty),+ $(,)?]) => {{
        let types: &[fn(&[u8])] = &[$(round_trip::<$message>),+];
        types[usize::from($selector) % types.len()]($bytes);
    }};
}

fuzz_target!(|data: &[u8]| {
    let Some((selector, bytes)) = data.split_first() else { return };
    use keel::proto::{admin, client, common, error, etcdserverpb as etcd, health, raft};
    fuzz_messages!(
        *selector,
        bytes,
        [
            client::ClientWriteRequest,
            client::ClientReadRequest,
            client::ClientResponse,
            client::ScanRequest,
            client::ScanResponse,
            client::WatchRequest,
            client::WatchResponse,
            client::WatchMembershipRequest,
            client::MembershipSnapshot,
            client::BatchRequests,
            client::BatchResponses,
            admin::MembershipResponse,
            admin::TransferLeadershipRequest,
            admin::AdminResponse,
            admin::StatusRequest,
            admin::StatusResponse,
            common::Entry,
            common::MembershipChange,
            common::Snapshot,
            common::LeaderHint,
            error::ErrorMetadata,
            raft::RaftMessageBatch,
            raft::RaftMessage,
            raft::AppendEntries,
            raft::InstallSnapshot,
            raft::StreamAck,
            etcd::RangeRequest,
            etcd::RangeResponse,
            etcd::PutRequest,
            etcd::DeleteRangeRequest,
            etcd::TxnRequest,
            etcd::TxnResponse,
            etcd::CompactionRequest,
            etcd::WatchRequest,
            etcd::WatchResponse,
            etcd::LeaseGrantRequest,
            etcd::LeaseKeepAliveRequest,
            etcd::LeaseTimeToLiveRequest,
            etcd::MemberAddRequest,
            etcd::MemberUpdateRequest,
            etcd::AlarmRequest,
            etcd::HashKvRequest,
            etcd::MoveLeaderRequest,
            etcd::AuthenticateRequest,
            etcd::AuthUserAddRequest,
            etcd::AuthRoleGrantPermissionRequest,
            etcd::AuthRoleRevokePermissionRequest,
            health::HealthCheckRequest,
        ]
    );
});
