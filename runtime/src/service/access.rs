//! The native API under etcd authentication: once `etcdctl auth enable` (or any etcd client's
//! `AuthEnable`) has turned authentication on, the native services check every request's
//! caller as the etcd services do, against the same replicated users, roles and permissions.
//!
//! Data flow: a request's `token` metadata (a token from etcd's `Authenticate`, on the same
//! address; `KeelClient` logs in by itself with `ClientOptions::credentials`) goes through the
//! etcd layer's check (`crate::etcd::access`): anybody while authentication is disabled, else
//! the token's user, whose roles must allow what the request does:
//!
//! | request | needs |
//! |---|---|
//! | `HandleClientRead`, `HandleClientScan`, `Watch` | read permission on the keys, the prefix or the key watched |
//! | `HandleClientWrite` insert and delete | write permission on the key |
//! | `HandleClientWrite` compare-and-swap | read and write permission on the key |
//! | `WatchMembership`, `GetMembership` | a valid token |
//! | `ChangeMembership`, `TransferLeadership` | the `root` role |
//! | `Status` | nothing (as etcd's `Status`) |
//!
//! A `Batch` stream carries the token of the call that opened it; each request on it is checked
//! on its own. A write is proposed as `KvCommand::Authorized` with the auth revision it was
//! checked at, so a write that a permission change overtakes is refused on every member alike
//! (`PROPOSAL_DROPPED`: not applied, retry), and a refusal is only given after the member has
//! caught up with the leader's table. The errors are `UNAUTHENTICATED` (no token, or an invalid
//! or expired one) and `PERMISSION_DENIED`.

use keel::proto::error::ErrorCode;
use keel_core::kv::{KeyRange, KvCommand};
use tonic::{Code, Status};

use super::error::WireError;
use crate::etcd::access::{self, Caller};
use crate::node::NodeHandle;

/// Whether a linearizable read checked as a caller must be checked again (the auth table moved
/// while it waited for its barrier), and the token a request carries: the etcd layer's own.
pub(crate) use crate::etcd::access::{auth_moved, token_of};

/// The caller of a request carrying `token`, once `check` allows it; the refusal as the native
/// API's error otherwise.
pub(crate) async fn authorize(
    handle: &NodeHandle,
    token: Option<&str>,
    check: impl Fn(&Caller) -> Result<(), Status>,
) -> Result<Caller, WireError> {
    access::authorize_token(handle, token, check).await.map_err(|status| wire_error_of(&status))
}

/// The caller of a request carrying `token`, whatever its rights: for the calls that need a
/// valid token only.
pub(crate) async fn authenticate(handle: &NodeHandle, token: Option<&str>) -> Result<Caller, WireError> {
    authorize(handle, token, |_| Ok(())).await
}

/// What a native write needs: write permission on its key, and read permission as well for a
/// compare-and-swap, whose outcome tells the caller the key's value.
pub(crate) fn require_write(caller: &Caller, command: &KvCommand) -> Result<(), Status> {
    match command {
        KvCommand::Put { key, .. } | KvCommand::Delete { key } => caller.require_write(&KeyRange::key(key.clone())),
        KvCommand::CompareAndSwap { key, .. } => {
            let range = KeyRange::key(key.clone());
            caller.require_write(&range)?;
            caller.require_read(&range)
        }
        // The native API proposes no other command; refusing keeps this total.
        _ => caller.require_admin(),
    }
}

/// The native error for a refusal of the etcd layer's check.
fn wire_error_of(status: &Status) -> WireError {
    match status.code() {
        Code::PermissionDenied => WireError::new(
            ErrorCode::PermissionDenied,
            "permission denied: no role of the token's user allows this request; grant one with \
             `etcdctl role grant-permission` or use another user",
        ),
        // `Unauthenticated` is an invalid or expired token; etcd's "user name is empty"
        // (`InvalidArgument`) is a missing one.
        Code::Unauthenticated => WireError::new(
            ErrorCode::Unauthenticated,
            "the auth token is invalid or expired; log in again (etcd's Authenticate) and send the new token",
        ),
        _ if (status.code(), status.message()) == crate::etcd::errors::USER_EMPTY => WireError::new(
            ErrorCode::Unauthenticated,
            "authentication is enabled and the request carries no token: log in with etcd's Authenticate \
             on this address and send the token as `token` metadata (KeelClient: ClientOptions::credentials; \
             keel: --user)",
        ),
        // The read barrier before a refusal could not complete: no leader, a partition.
        _ => WireError::new(
            ErrorCode::Unavailable,
            format!("could not check the request against the cluster's users and roles: {}", status.message()),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_map_to_native_codes() {
        let code = |status: Status| wire_error_of(&status).code;
        assert_eq!(code(Status::permission_denied("etcdserver: permission denied")), ErrorCode::PermissionDenied);
        assert_eq!(code(Status::unauthenticated("etcdserver: invalid auth token")), ErrorCode::Unauthenticated);
        assert_eq!(code(Status::invalid_argument("etcdserver: user name is empty")), ErrorCode::Unauthenticated);
        assert_eq!(code(Status::unavailable("etcdserver: leader changed")), ErrorCode::Unavailable);
    }
}
