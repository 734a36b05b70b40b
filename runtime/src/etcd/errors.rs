//! etcd's error statuses. etcd clients (etcdctl, clientv3) recognise a server error by its exact
//! message text and gRPC code and turn it into a typed error, so every failure of the etcd API
//! is answered with etcd's own message and code. Keel conditions etcd has no word for keep a
//! Keel message under the closest etcd code.

use keel_core::kv::KvError;
use tonic::{Code, Status};

use crate::node::ClientError;

/// The key of a single-key request is empty.
pub(crate) const EMPTY_KEY: (Code, &str) = (Code::InvalidArgument, "etcdserver: key is not provided");
/// An `ignore_value` / `ignore_lease` put names a key that does not exist.
pub(crate) const KEY_NOT_FOUND: (Code, &str) = (Code::InvalidArgument, "etcdserver: key not found");
/// `ignore_value` was set together with a value.
pub(crate) const VALUE_PROVIDED: (Code, &str) = (Code::InvalidArgument, "etcdserver: value is provided");
/// `ignore_lease` was set together with a lease.
pub(crate) const LEASE_PROVIDED: (Code, &str) = (Code::InvalidArgument, "etcdserver: lease is provided");
/// A transaction list is longer than the limit.
pub(crate) const TOO_MANY_OPS: (Code, &str) = (Code::InvalidArgument, "etcdserver: too many operations in txn request");
/// A transaction writes one key twice in a branch.
pub(crate) const DUPLICATE_KEY: (Code, &str) =
    (Code::InvalidArgument, "etcdserver: duplicate key given in txn request");
/// A key, value or request is larger than the limits.
pub(crate) const REQUEST_TOO_LARGE: (Code, &str) = (Code::InvalidArgument, "etcdserver: request is too large");
/// The revision asked for is compacted.
pub(crate) const COMPACTED: (Code, &str) = (Code::OutOfRange, "etcdserver: mvcc: required revision has been compacted");
/// The revision asked for is not reached yet.
pub(crate) const FUTURE_REVISION: (Code, &str) =
    (Code::OutOfRange, "etcdserver: mvcc: required revision is a future revision");
/// A write that grows the store while a NOSPACE alarm is raised.
pub(crate) const NO_SPACE: (Code, &str) = (Code::ResourceExhausted, "etcdserver: mvcc: database space exceeded");
/// The lease named does not exist.
pub(crate) const LEASE_NOT_FOUND: (Code, &str) = (Code::NotFound, "etcdserver: requested lease not found");
/// A lease with the id asked for exists already.
pub(crate) const LEASE_EXISTS: (Code, &str) = (Code::FailedPrecondition, "etcdserver: lease already exists");
/// A lease TTL above etcd's maximum.
pub(crate) const LEASE_TTL_TOO_LARGE: (Code, &str) = (Code::OutOfRange, "etcdserver: too large lease TTL");
/// No leader is known.
pub(crate) const NO_LEADER: (Code, &str) = (Code::Unavailable, "etcdserver: no leader");
/// Leadership moved while the request was in flight; it did not apply.
pub(crate) const LEADER_CHANGED: (Code, &str) = (Code::Unavailable, "etcdserver: leader changed");
/// The request's outcome is unknown at its deadline.
pub(crate) const TIMEOUT: (Code, &str) = (Code::Unavailable, "etcdserver: request timed out");
/// The link to the leader failed while a forwarded request was on it: its outcome is unknown.
pub(crate) const TIMEOUT_LEADER_FAIL: (Code, &str) =
    (Code::Unavailable, "etcdserver: request timed out, possibly due to previous leader failure");
/// The node is stopping.
pub(crate) const STOPPED: (Code, &str) = (Code::Unavailable, "etcdserver: server stopped");
/// A bounded queue is full.
pub(crate) const TOO_MANY_REQUESTS: (Code, &str) = (Code::ResourceExhausted, "etcdserver: too many requests");
/// The member id is not in the configuration.
pub(crate) const MEMBER_NOT_FOUND: (Code, &str) = (Code::NotFound, "etcdserver: member not found");
/// Only a learner can be promoted.
pub(crate) const MEMBER_NOT_LEARNER: (Code, &str) =
    (Code::FailedPrecondition, "etcdserver: can only promote a learner member");
/// The learner has not caught up yet.
pub(crate) const LEARNER_NOT_READY: (Code, &str) =
    (Code::FailedPrecondition, "etcdserver: can only promote a learner member which is in sync with leader");
/// Another member has the peer URL given.
pub(crate) const PEER_URL_EXISTS: (Code, &str) = (Code::FailedPrecondition, "etcdserver: Peer URLs already exists");
/// The peer URLs given cannot be used.
pub(crate) const MEMBER_BAD_URLS: (Code, &str) = (Code::InvalidArgument, "etcdserver: given member URLs are invalid");
/// The leader-transfer target is not a voter.
pub(crate) const BAD_LEADER_TRANSFEREE: (Code, &str) = (Code::FailedPrecondition, "etcdserver: bad leader transferee");
/// This member is not the leader (MoveLeader must be sent to the leader).
pub(crate) const NOT_LEADER: (Code, &str) = (Code::FailedPrecondition, "etcdserver: not leader");
/// Authentication is enabled and the request carries no token.
pub(crate) const USER_EMPTY: (Code, &str) = (Code::InvalidArgument, "etcdserver: user name is empty");
/// The token is not one this cluster signed, has expired, or names an unknown user.
pub(crate) const INVALID_AUTH_TOKEN: (Code, &str) = (Code::Unauthenticated, "etcdserver: invalid auth token");
/// The auth table changed since the token was issued (or the request was checked): etcd
/// clients authenticate again and retry.
pub(crate) const AUTH_OLD_REVISION: (Code, &str) = (Code::InvalidArgument, "etcdserver: revision of auth store is old");
/// The user's roles do not allow the request.
pub(crate) const PERMISSION_DENIED: (Code, &str) = (Code::PermissionDenied, "etcdserver: permission denied");
/// Wrong user name or password (or a user without a password).
pub(crate) const AUTH_FAILED: (Code, &str) =
    (Code::InvalidArgument, "etcdserver: authentication failed, invalid user ID or password");
/// `Authenticate` while authentication is disabled.
pub(crate) const AUTH_NOT_ENABLED: (Code, &str) =
    (Code::FailedPrecondition, "etcdserver: authentication is not enabled");
/// `AuthEnable` without a `root` user.
pub(crate) const ROOT_USER_NOT_EXIST: (Code, &str) = (Code::FailedPrecondition, "etcdserver: root user does not exist");
/// `AuthEnable` while the `root` user lacks the `root` role.
pub(crate) const ROOT_ROLE_NOT_EXIST: (Code, &str) =
    (Code::FailedPrecondition, "etcdserver: root user does not have root role");
/// `UserAdd` of an existing user.
pub(crate) const USER_ALREADY_EXIST: (Code, &str) = (Code::FailedPrecondition, "etcdserver: user name already exists");
/// The user named does not exist.
pub(crate) const USER_NOT_FOUND: (Code, &str) = (Code::FailedPrecondition, "etcdserver: user name not found");
/// `RoleAdd` of an existing role.
pub(crate) const ROLE_ALREADY_EXIST: (Code, &str) = (Code::FailedPrecondition, "etcdserver: role name already exists");
/// The role named does not exist.
pub(crate) const ROLE_NOT_FOUND: (Code, &str) = (Code::FailedPrecondition, "etcdserver: role name not found");
/// A role name is empty.
pub(crate) const ROLE_EMPTY: (Code, &str) = (Code::InvalidArgument, "etcdserver: role name is empty");
/// `RoleRevokePermission` of a range the role has no permission on.
pub(crate) const PERMISSION_NOT_GRANTED: (Code, &str) =
    (Code::FailedPrecondition, "etcdserver: permission is not granted to the role");
/// `UserRevokeRole` of a role the user does not hold.
pub(crate) const ROLE_NOT_GRANTED: (Code, &str) =
    (Code::FailedPrecondition, "etcdserver: role is not granted to the user");
/// A change that would lock the administrator out while authentication is enabled (deleting
/// `root`, or taking its `root` role).
pub(crate) const INVALID_AUTH_MGMT: (Code, &str) = (Code::InvalidArgument, "etcdserver: invalid auth management");
/// `RoleGrantPermission` without a permission.
pub(crate) const PERMISSION_NOT_GIVEN: (Code, &str) = (Code::InvalidArgument, "etcdserver: permission not given");

/// A status from one of the constants above.
pub(crate) fn status((code, message): (Code, &str)) -> Status {
    Status::new(code, message)
}

/// The status of a key-value error (limits, revisions, transaction checks).
pub(crate) fn of_kv(error: &KvError) -> Status {
    match error {
        KvError::EmptyKey => status(EMPTY_KEY),
        KvError::KeyTooLarge { .. } | KvError::ValueTooLarge { .. } | KvError::CommandTooLarge { .. } => {
            status(REQUEST_TOO_LARGE)
        }
        KvError::TooManyTxnOps { .. } | KvError::TxnTooDeep { .. } => status(TOO_MANY_OPS),
        KvError::KeyNotFound => status(KEY_NOT_FOUND),
        KvError::LeaseNotFound => status(LEASE_NOT_FOUND),
        KvError::LeaseExists => status(LEASE_EXISTS),
        KvError::Compacted { .. } => status(COMPACTED),
        KvError::FutureRevision { .. } => status(FUTURE_REVISION),
        KvError::NoSpace => status(NO_SPACE),
        KvError::ZeroTtl => Status::invalid_argument(format!("etcdserver: {error}")),
        KvError::AuthRootUserMissing => status(ROOT_USER_NOT_EXIST),
        KvError::AuthRootRoleMissing => status(ROOT_ROLE_NOT_EXIST),
        KvError::AuthUserExists => status(USER_ALREADY_EXIST),
        KvError::AuthUserNotFound => status(USER_NOT_FOUND),
        KvError::AuthRoleExists => status(ROLE_ALREADY_EXIST),
        KvError::AuthRoleNotFound => status(ROLE_NOT_FOUND),
        KvError::AuthRoleNotGranted => status(ROLE_NOT_GRANTED),
        KvError::AuthPermissionNotGranted => status(PERMISSION_NOT_GRANTED),
        KvError::AuthInvalidManagement => status(INVALID_AUTH_MGMT),
        KvError::AuthOldRevision => status(AUTH_OLD_REVISION),
        KvError::AuthEmptyName { what: "role" } => status(ROLE_EMPTY),
        KvError::AuthEmptyName { .. } => status(USER_EMPTY),
        KvError::AuthNameTooLarge { .. } | KvError::AuthHashTooLarge { .. } => status(REQUEST_TOO_LARGE),
        KvError::AuthLimit { .. } => Status::resource_exhausted(format!("etcdserver: {error}")),
        KvError::NestedAuthorized => Status::invalid_argument(format!("etcdserver: {error}")),
    }
}

/// The status of a node error.
pub(crate) fn of_client(error: &ClientError) -> Status {
    match error {
        ClientError::NotLeader(hint) if hint.leader_id.is_some() => status(LEADER_CHANGED),
        ClientError::NotLeader(_) | ClientError::LeaderUnknown => status(NO_LEADER),
        ClientError::ProposalDropped(_) => status(LEADER_CHANGED),
        ClientError::OutcomeUnknown | ClientError::Timeout => status(TIMEOUT),
        ClientError::Overloaded(_) => status(TOO_MANY_REQUESTS),
        ClientError::ShuttingDown => status(STOPPED),
        ClientError::Compacted { .. } => status(COMPACTED),
        ClientError::Invalid(message) => Status::invalid_argument(format!("etcdserver: {message}")),
        ClientError::Membership(message) => Status::failed_precondition(format!("etcdserver: {message}")),
        ClientError::MembershipChangeInProgress | ClientError::Unavailable(_) => {
            Status::unavailable(format!("etcdserver: {error}"))
        }
    }
}

/// The status of a call Keel's etcd API does not serve.
pub(crate) fn unimplemented(what: &str) -> Status {
    Status::unimplemented(format!("{what} is not implemented by Keel's etcd API; see the README"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_core::LeaderHint;

    #[test]
    fn revision_errors_carry_etcd_text_and_codes() {
        let compacted = of_kv(&KvError::Compacted { requested: 1, compacted: 5 });
        assert_eq!(compacted.code(), Code::OutOfRange);
        assert_eq!(compacted.message(), "etcdserver: mvcc: required revision has been compacted");
        let future = of_kv(&KvError::FutureRevision { requested: 9, current: 5 });
        assert_eq!((future.code(), future.message()), (Code::OutOfRange, FUTURE_REVISION.1));
        let ops = of_kv(&KvError::TooManyTxnOps { list: "success", count: 200, max: 128 });
        assert_eq!((ops.code(), ops.message()), (Code::InvalidArgument, TOO_MANY_OPS.1));
        assert_eq!(of_kv(&KvError::EmptyKey).message(), "etcdserver: key is not provided");
    }

    #[test]
    fn node_errors_map_to_etcd_availability_errors() {
        let no_leader = of_client(&ClientError::LeaderUnknown);
        assert_eq!((no_leader.code(), no_leader.message()), (Code::Unavailable, "etcdserver: no leader"));
        let hint = LeaderHint { leader_id: Some(2), address: "x".into(), term: 1 };
        assert_eq!(of_client(&ClientError::NotLeader(hint)).message(), LEADER_CHANGED.1);
        assert_eq!(of_client(&ClientError::OutcomeUnknown).code(), Code::Unavailable);
        assert_eq!(of_client(&ClientError::Overloaded("q".into())).code(), Code::ResourceExhausted);
    }
}
