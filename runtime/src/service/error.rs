//! From the node's errors to `keel.error.ErrorCode` and `ErrorMetadata`, and, where an answer has
//! no error field, to a gRPC `Status`.
//!
//! | node error | `ErrorCode` | metadata |
//! |---|---|---|
//! | `ClientError::NotLeader(hint)` | `NOT_LEADER` (`LEADER_UNKNOWN` if the hint names no one) | `leader_hint { leader_id, address }` |
//! | `ClientError::LeaderUnknown` | `LEADER_UNKNOWN` | `retry_after_ms` = minimum election timeout |
//! | `ClientError::Invalid` | `INVALID_ARGUMENT` | |
//! | `KvError::KeyTooLarge` (checked before proposing) | `KEY_TOO_LARGE` | |
//! | `KvError::ValueTooLarge` | `VALUE_TOO_LARGE` | |
//! | `KvError::CommandTooLarge`, `TooManyTxnOps` | `REQUEST_TOO_LARGE` | |
//! | `KvError::EmptyKey`, `ZeroTtl`, `Compacted`, `FutureRevision` | `INVALID_ARGUMENT` | |
//! | `KvError::NoSpace` (a write that grows the store while a NOSPACE alarm is raised) | `INVALID_ARGUMENT` | |
//! | `KvError::AuthOldRevision` (a write checked against an auth table that changed before it applied) | `PROPOSAL_DROPPED` | |
//! | `KvError::Auth*`, `NestedAuthorized` (auth commands) | `INVALID_ARGUMENT` | |
//! | a refusal of the caller (`access.rs`): no token, an invalid or expired one; no permission | `UNAUTHENTICATED`; `PERMISSION_DENIED` | |
//! | `ClientError::ProposalDropped` | `PROPOSAL_DROPPED` | leader hint when known |
//! | `ClientError::OutcomeUnknown` | `OUTCOME_UNKNOWN` | |
//! | `ClientError::Timeout` | `TIMEOUT` | |
//! | `ClientError::Overloaded` | `OVERLOADED` | `retry_after_ms` = `ServiceConfig::overloaded_retry_after_ms` |
//! | `ClientError::MembershipChangeInProgress` | `MEMBERSHIP_CHANGE_IN_PROGRESS` | `retry_after_ms` = minimum election timeout |
//! | `ClientError::Membership` (classified by the admin service) | `UNKNOWN_MEMBER`, `MEMBER_ALREADY_EXISTS`, `INVALID_ARGUMENT`, or `UNAVAILABLE` for a lagging learner | |
//! | `ClientError::Unavailable` | `UNAVAILABLE` | `retry_after_ms` = minimum election timeout |
//! | `ClientError::ShuttingDown` | `SHUTTING_DOWN` | |
//!
//! The message is always the error's own text (`ErrorMetadata.message`). [`status_of`] turns a
//! code into a gRPC status for the answers without an error field; the status carries the code's
//! name in the `keel-error-code` metadata entry, and the leader hint in `keel-leader-id` and
//! `keel-leader-address` when there is one.

use keel::proto::common::LeaderHint as WireLeaderHint;
use keel::proto::error::{ErrorCode, ErrorMetadata};
use keel_core::kv::KvError;
use keel_core::LeaderHint;
use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

use crate::node::ClientError;

/// Retry delays suggested with the retryable codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryHints {
    /// Sent with `LEADER_UNKNOWN`, `UNAVAILABLE` and `MEMBERSHIP_CHANGE_IN_PROGRESS`.
    pub election_ms: u64,
    /// Sent with `OVERLOADED`.
    pub overloaded_ms: u64,
}

/// An error as the client sees it: a code and its metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WireError {
    /// The code.
    pub code: ErrorCode,
    /// Message, leader hint and retry delay.
    pub metadata: ErrorMetadata,
}

impl WireError {
    /// An error with a message and no hint.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, metadata: ErrorMetadata { message: message.into(), leader_hint: None, retry_after_ms: 0 } }
    }

    /// The same error with a retry delay.
    pub fn retry_after(mut self, ms: u64) -> Self {
        self.metadata.retry_after_ms = ms;
        self
    }

    /// The same error with a leader hint, if the hint names a leader.
    pub fn with_leader(mut self, hint: &LeaderHint) -> Self {
        self.metadata.leader_hint = wire_leader_hint(hint);
        self
    }
}

/// The wire form of a core leader hint; `None` when it names no leader.
pub fn wire_leader_hint(hint: &LeaderHint) -> Option<WireLeaderHint> {
    hint.leader_id.map(|leader_id| WireLeaderHint { leader_id, address: hint.address.clone() })
}

/// The code of a node error (see the module table). `ClientError::Membership` maps to
/// `INVALID_ARGUMENT` here; the admin service refines it.
pub fn code_of(error: &ClientError) -> ErrorCode {
    match error {
        ClientError::NotLeader(hint) if hint.leader_id.is_some() => ErrorCode::NotLeader,
        ClientError::NotLeader(_) | ClientError::LeaderUnknown => ErrorCode::LeaderUnknown,
        ClientError::Invalid(_) | ClientError::Membership(_) => ErrorCode::InvalidArgument,
        ClientError::ProposalDropped(_) => ErrorCode::ProposalDropped,
        ClientError::OutcomeUnknown => ErrorCode::OutcomeUnknown,
        ClientError::Timeout => ErrorCode::Timeout,
        ClientError::Overloaded(_) => ErrorCode::Overloaded,
        ClientError::MembershipChangeInProgress => ErrorCode::MembershipChangeInProgress,
        ClientError::Unavailable(_) => ErrorCode::Unavailable,
        ClientError::ShuttingDown => ErrorCode::ShuttingDown,
        ClientError::Compacted { .. } => ErrorCode::Compacted,
    }
}

/// The code and metadata of a node error.
pub fn wire_error(error: &ClientError, retry: RetryHints) -> WireError {
    let code = code_of(error);
    let wire = WireError::new(code, error.to_string());
    match (code, error) {
        (_, ClientError::NotLeader(hint)) => {
            wire.with_leader(hint).retry_after(if hint.leader_id.is_some() { 0 } else { retry.election_ms })
        }
        (ErrorCode::LeaderUnknown | ErrorCode::Unavailable | ErrorCode::MembershipChangeInProgress, _) => {
            wire.retry_after(retry.election_ms)
        }
        (ErrorCode::Overloaded, _) => wire.retry_after(retry.overloaded_ms),
        _ => wire,
    }
}

/// The code of a request refused by the key-value limits.
pub fn kv_code_of(error: &KvError) -> ErrorCode {
    match error {
        KvError::KeyTooLarge { .. } => ErrorCode::KeyTooLarge,
        KvError::ValueTooLarge { .. } => ErrorCode::ValueTooLarge,
        KvError::CommandTooLarge { .. } | KvError::TooManyTxnOps { .. } => ErrorCode::RequestTooLarge,
        KvError::EmptyKey
        | KvError::ZeroTtl
        | KvError::TxnTooDeep { .. }
        | KvError::KeyNotFound
        | KvError::LeaseNotFound
        | KvError::LeaseExists
        | KvError::Compacted { .. }
        | KvError::FutureRevision { .. }
        | KvError::NoSpace
        | KvError::AuthRootUserMissing
        | KvError::AuthRootRoleMissing
        | KvError::AuthUserExists
        | KvError::AuthUserNotFound
        | KvError::AuthRoleExists
        | KvError::AuthRoleNotFound
        | KvError::AuthRoleNotGranted
        | KvError::AuthPermissionNotGranted
        | KvError::AuthInvalidManagement
        | KvError::AuthEmptyName { .. }
        | KvError::AuthNameTooLarge { .. }
        | KvError::AuthHashTooLarge { .. }
        | KvError::AuthLimit { .. }
        | KvError::NestedAuthorized => ErrorCode::InvalidArgument,
        // Not applied, on any member: a retry is checked against the new table.
        KvError::AuthOldRevision => ErrorCode::ProposalDropped,
    }
}

/// The code and message of a request refused by the key-value limits.
pub fn kv_wire_error(error: &KvError) -> WireError {
    WireError::new(kv_code_of(error), error.to_string())
}

/// The gRPC status code that stands for `code` where an answer has no error field.
pub fn grpc_code_of(code: ErrorCode) -> Code {
    match code {
        ErrorCode::Success => Code::Ok,
        ErrorCode::NotLeader
        | ErrorCode::LeaderUnknown
        | ErrorCode::Unavailable
        | ErrorCode::ShuttingDown
        | ErrorCode::ProposalDropped => Code::Unavailable,
        ErrorCode::InvalidArgument
        | ErrorCode::KeyTooLarge
        | ErrorCode::ValueTooLarge
        | ErrorCode::UnknownMember
        | ErrorCode::MemberAlreadyExists => Code::InvalidArgument,
        ErrorCode::RequestTooLarge | ErrorCode::Overloaded => Code::ResourceExhausted,
        ErrorCode::ConsistencyPolicyUnsupported | ErrorCode::MembershipChangeInProgress => Code::FailedPrecondition,
        ErrorCode::Timeout => Code::DeadlineExceeded,
        ErrorCode::OutcomeUnknown => Code::Unknown,
        ErrorCode::WatchLagged => Code::Aborted,
        ErrorCode::Compacted => Code::OutOfRange,
        ErrorCode::StorageFailure | ErrorCode::Internal => Code::Internal,
        ErrorCode::Unauthenticated => Code::Unauthenticated,
        ErrorCode::PermissionDenied => Code::PermissionDenied,
    }
}

/// A gRPC status for an answer without an error field: the code from [`grpc_code_of`], the
/// message, and the Keel code and leader hint in metadata (`keel-error-code`,
/// `keel-leader-id`, `keel-leader-address`, `keel-retry-after-ms`).
pub fn status_of(error: &WireError) -> Status {
    let mut status = Status::new(grpc_code_of(error.code), error.metadata.message.clone());
    let metadata = status.metadata_mut();
    metadata.insert("keel-error-code", MetadataValue::from_static(error.code.as_str_name()));
    if let Some(hint) = &error.metadata.leader_hint {
        metadata.insert("keel-leader-id", MetadataValue::from(hint.leader_id));
        if let Ok(address) = hint.address.parse() {
            metadata.insert("keel-leader-address", address);
        }
    }
    if error.metadata.retry_after_ms > 0 {
        metadata.insert("keel-retry-after-ms", MetadataValue::from(error.metadata.retry_after_ms));
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    const RETRY: RetryHints = RetryHints { election_ms: 300, overloaded_ms: 50 };

    #[test]
    fn every_client_error_has_its_code_and_hints() {
        let hint = LeaderHint { leader_id: Some(2), address: "10.0.0.2:7000".into(), term: 4 };
        let not_leader = wire_error(&ClientError::NotLeader(hint), RETRY);
        assert_eq!(not_leader.code, ErrorCode::NotLeader);
        assert_eq!(
            not_leader.metadata.leader_hint,
            Some(WireLeaderHint { leader_id: 2, address: "10.0.0.2:7000".into() })
        );
        let unknown = wire_error(&ClientError::NotLeader(LeaderHint::default()), RETRY);
        assert_eq!((unknown.code, unknown.metadata.retry_after_ms), (ErrorCode::LeaderUnknown, 300));
        let cases = [
            (ClientError::LeaderUnknown, ErrorCode::LeaderUnknown, 300),
            (ClientError::Invalid("x".into()), ErrorCode::InvalidArgument, 0),
            (ClientError::ProposalDropped("x".into()), ErrorCode::ProposalDropped, 0),
            (ClientError::OutcomeUnknown, ErrorCode::OutcomeUnknown, 0),
            (ClientError::Timeout, ErrorCode::Timeout, 0),
            (ClientError::Overloaded("q".into()), ErrorCode::Overloaded, 50),
            (ClientError::MembershipChangeInProgress, ErrorCode::MembershipChangeInProgress, 300),
            (ClientError::Membership("m".into()), ErrorCode::InvalidArgument, 0),
            (ClientError::Unavailable("u".into()), ErrorCode::Unavailable, 300),
            (ClientError::ShuttingDown, ErrorCode::ShuttingDown, 0),
        ];
        for (error, code, retry) in cases {
            let wire = wire_error(&error, RETRY);
            assert_eq!((wire.code, wire.metadata.retry_after_ms), (code, retry), "{error:?}");
            assert_eq!(wire.metadata.message, error.to_string());
        }
    }

    #[test]
    fn kv_errors_map_to_size_codes() {
        assert_eq!(kv_code_of(&KvError::KeyTooLarge { size: 9, max: 8 }), ErrorCode::KeyTooLarge);
        assert_eq!(kv_code_of(&KvError::ValueTooLarge { size: 9, max: 8 }), ErrorCode::ValueTooLarge);
        assert_eq!(kv_code_of(&KvError::CommandTooLarge { size: 9, max: 8 }), ErrorCode::RequestTooLarge);
        assert_eq!(kv_code_of(&KvError::EmptyKey), ErrorCode::InvalidArgument);
        assert_eq!(kv_code_of(&KvError::AuthOldRevision), ErrorCode::ProposalDropped);
    }

    #[test]
    fn statuses_carry_the_keel_code_and_leader() {
        let hint = LeaderHint { leader_id: Some(3), address: "127.0.0.1:9".into(), term: 1 };
        let status = status_of(&wire_error(&ClientError::NotLeader(hint), RETRY));
        assert_eq!(status.code(), Code::Unavailable);
        let metadata = status.metadata();
        assert_eq!(metadata.get("keel-error-code").and_then(|v| v.to_str().ok()), Some("ERROR_CODE_NOT_LEADER"));
        assert_eq!(metadata.get("keel-leader-id").and_then(|v| v.to_str().ok()), Some("3"));
        assert_eq!(metadata.get("keel-leader-address").and_then(|v| v.to_str().ok()), Some("127.0.0.1:9"));
    }
}
