//! Who calls, and whether they may: etcd authentication's check of every etcd request.
//!
//! Data flow: a request's `token` metadata (or `authorization`, which etcd's HTTP gateway
//! uses) is checked against the auth table this node has applied ([`Shared::caller`]), giving a
//! [`Caller`]: nobody in particular while authentication is disabled, else the token's user.
//! The caller is then asked for what the request needs, as etcd asks it:
//!
//! * reads (Range, Watch, a transaction's compares and reads): read permission on the range;
//! * writes (Put, DeleteRange, a transaction's puts and deletes, the keys of a revoked lease):
//!   write permission, and read permission too where the answer carries previous values;
//! * the Auth service's changes and lists, Defragment, Snapshot, Hash, HashKV, MoveLeader and
//!   the Cluster service's changes: the `root` role.
//!
//! **Consistency.** A write is proposed as `KvCommand::Authorized` carrying the auth revision
//! it was checked at; the state machine refuses it if the table moved on before it applied
//! (etcd's "revision of auth store is old"), so a revoked permission can never let through a
//! write that applies after the revocation. A linearizable read is checked again after it is
//! served if the table moved meanwhile ([`Shared::auth_moved`]): the read barrier has applied
//! every change committed before the read arrived. A token this node cannot accept yet (its user or password, or the
//! key it was signed with, is newer than this node's table) makes the node wait for a read
//! barrier once before refusing it.

use std::sync::Arc;

use keel::proto::etcdserverpb::request_op::Request as Op;
use keel::proto::etcdserverpb::TxnRequest;
use keel_core::kv::{AuthState, KeyRange, KvCommand};
use tonic::metadata::MetadataMap;
use tonic::{Code, Status};

use super::auth_token::{self, TokenError, TOKEN_METADATA};
use super::{errors, Shared};
use crate::node::NodeHandle;

/// The metadata key etcd's HTTP gateway turns an `Authorization` header into.
const AUTHORIZATION_METADATA: &str = "authorization";

/// Who sent a request, with the auth table their rights were checked against.
#[derive(Clone, Debug)]
pub(crate) struct Caller {
    /// The authenticated user; `None` while authentication is disabled.
    user: Option<String>,
    /// The table the token was checked against.
    state: Arc<AuthState>,
}

impl Caller {
    /// The auth table's revision the caller was checked at.
    pub(crate) fn auth_revision(&self) -> u64 {
        self.state.revision()
    }

    /// The table the caller was checked against.
    pub(crate) fn state(&self) -> &AuthState {
        &self.state
    }

    /// `command`, to be applied only if the auth table is still the one it was checked against.
    pub(crate) fn authorized(&self, command: KvCommand) -> KvCommand {
        KvCommand::Authorized { auth_revision: self.auth_revision(), command: Box::new(command) }
    }

    /// Ok if the caller may read `range`.
    pub(crate) fn require_read(&self, range: &KeyRange) -> Result<(), Status> {
        self.require(|user, state| state.can_read(user, range))
    }

    /// Ok if the caller may write `range`.
    pub(crate) fn require_write(&self, range: &KeyRange) -> Result<(), Status> {
        self.require(|user, state| state.can_write(user, range))
    }

    /// Ok if the caller holds the `root` role (or authentication is disabled).
    pub(crate) fn require_admin(&self) -> Result<(), Status> {
        self.require(|user, state| state.is_admin(user))
    }

    /// Ok if the caller is an administrator or `allowed` holds for them.
    pub(crate) fn require_admin_or(&self, allowed: impl FnOnce(&str, &AuthState) -> bool) -> Result<(), Status> {
        self.require(|user, state| state.is_admin(user) || allowed(user, state))
    }

    fn require(&self, allowed: impl FnOnce(&str, &AuthState) -> bool) -> Result<(), Status> {
        match &self.user {
            None => Ok(()),
            Some(user) if allowed(user, &self.state) => Ok(()),
            Some(_) => Err(errors::status(errors::PERMISSION_DENIED)),
        }
    }

    /// Ok if the caller may run every part of `request`, both branches included, as etcd
    /// checks a transaction: its compares and reads need read permission, its puts and deletes
    /// write permission, and those that return previous values read permission too.
    pub(crate) fn require_txn(&self, request: &TxnRequest) -> Result<(), Status> {
        if self.user.is_none() {
            return Ok(());
        }
        for compare in &request.compare {
            self.require_read(&range_of(&compare.key, &compare.range_end))?;
        }
        for op in request.success.iter().chain(&request.failure).filter_map(|op| op.request.as_ref()) {
            match op {
                Op::RequestRange(range) => self.require_read(&range_of(&range.key, &range.range_end))?,
                Op::RequestPut(put) => self.require_put(&put.key, put.prev_kv)?,
                Op::RequestDeleteRange(delete) => {
                    self.require_delete(&range_of(&delete.key, &delete.range_end), delete.prev_kv)?
                }
                Op::RequestTxn(nested) => self.require_txn(nested)?,
            }
        }
        Ok(())
    }

    /// Ok if the caller may put `key` (and read it back, with `prev_kv`).
    pub(crate) fn require_put(&self, key: &bytes::Bytes, prev_kv: bool) -> Result<(), Status> {
        let range = KeyRange::key(key.clone());
        self.require_write(&range)?;
        if prev_kv {
            self.require_read(&range)?;
        }
        Ok(())
    }

    /// Ok if the caller may delete `range` (and read the deleted keys, with `prev_kv`).
    pub(crate) fn require_delete(&self, range: &KeyRange, prev_kv: bool) -> Result<(), Status> {
        self.require_write(range)?;
        if prev_kv {
            self.require_read(range)?;
        }
        Ok(())
    }
}

/// The range of an etcd `key` / `range_end` pair, unchecked (a check only needs to cover it).
fn range_of(key: &bytes::Bytes, range_end: &bytes::Bytes) -> KeyRange {
    KeyRange::new(key.clone(), range_end.clone())
}

/// Whether `status` refuses the caller for what the auth table says (and a newer table could
/// allow): no token, or no permission.
fn refusal(status: &Status) -> bool {
    let answer = (status.code(), status.message());
    answer == errors::USER_EMPTY || answer == errors::PERMISSION_DENIED
}

/// The token a request carries, if any.
pub(crate) fn token_of(metadata: &MetadataMap) -> Option<String> {
    let value = metadata.get(TOKEN_METADATA).or_else(|| metadata.get(AUTHORIZATION_METADATA))?;
    value.to_str().ok().map(str::to_owned)
}

/// The caller of a request carrying `token`, on the node behind `handle`, once `check` allows
/// it: used by the etcd services and the native API alike. A refusal (no token while
/// authentication is enabled, or a permission the caller lacks) is only given after a read
/// barrier, against the table as of then: a member whose table lags must not refuse what an
/// acknowledged `auth disable` or permission grant allows. An allowed request needs no
/// barrier: its write carries the auth revision it was checked at.
pub(crate) async fn authorize_token(
    handle: &NodeHandle,
    token: Option<&str>,
    check: impl Fn(&Caller) -> Result<(), Status>,
) -> Result<Caller, Status> {
    let first = caller_of(handle, token).await.and_then(|caller| check(&caller).map(|()| caller));
    match first {
        Err(status) if refusal(&status) => {
            read_barrier(handle).await?;
            let caller = caller_of(handle, token).await?;
            check(&caller)?;
            Ok(caller)
        }
        answer => answer,
    }
}

/// The caller of a request carrying `token`: anybody while authentication is disabled, else the
/// user of a valid token, or etcd's error for a missing or invalid token.
pub(crate) async fn caller_of(handle: &NodeHandle, token: Option<&str>) -> Result<Caller, Status> {
    let state = handle.auth();
    if !state.enabled() {
        return Ok(Caller { user: None, state });
    }
    let token = token.ok_or_else(|| errors::status(errors::USER_EMPTY))?;
    match check_token(handle, &state, token) {
        Err(status) if status.code() != Code::Unauthenticated => Err(status),
        Ok(caller) => Ok(caller),
        // Signed with a key, or for a user or password, this node has not applied yet:
        // catch up once.
        Err(_) => {
            read_barrier(handle).await?;
            let state = handle.auth();
            if !state.enabled() {
                return Ok(Caller { user: None, state });
            }
            check_token(handle, &state, token)
        }
    }
}

/// Waits until the node behind `handle` has applied everything committed when the call
/// arrived, confirmed by the leader (a ReadIndex round), so that a read of its state that
/// follows is linearizable.
pub(crate) async fn read_barrier(handle: &NodeHandle) -> Result<(), Status> {
    let nothing = KeyRange::key(bytes::Bytes::from_static(b"\0"));
    // The read itself cannot fail: the latest revision is always readable.
    let _latest = handle
        .range(nothing, None, 1, crate::node::ReadConsistency::Linearizable)
        .await
        .map_err(|error| errors::of_client(&error))?;
    Ok(())
}

/// Whether the auth table of the node behind `handle` changed since `caller` was checked, in
/// a way that can change the answer (see [`Shared::auth_moved`]).
pub(crate) fn auth_moved(handle: &NodeHandle, caller: &Caller) -> bool {
    let state = handle.auth();
    state.revision() != caller.auth_revision() && (state.enabled() || caller.user.is_some())
}

fn check_token(handle: &NodeHandle, state: &Arc<AuthState>, token: &str) -> Result<Caller, Status> {
    let invalid = || errors::status(errors::INVALID_AUTH_TOKEN);
    let claims = auth_token::verify(state.token_key(), token, handle.wall_ms()).map_err(|error| {
        if error == TokenError::Expired {
            tracing::debug!("an expired etcd auth token was refused");
        }
        invalid()
    })?;
    let user = state.user(&claims.user).ok_or_else(invalid)?;
    // A user without a password has tokens too, issued for its client certificate.
    if auth_token::credential_of(&user.password_hash) != claims.credential {
        return Err(invalid());
    }
    Ok(Caller { user: Some(claims.user), state: Arc::clone(state) })
}

impl Shared {
    /// The caller of a request with `metadata`: anybody while authentication is disabled, else
    /// the user of a valid token, or etcd's error for a missing or invalid token.
    pub(crate) async fn caller(&self, metadata: &MetadataMap) -> Result<Caller, Status> {
        caller_of(&self.handle, token_of(metadata).as_deref()).await
    }

    /// The caller of a request with `metadata` once `check` allows it ([`authorize_token`]).
    pub(crate) async fn authorize(
        &self,
        metadata: &MetadataMap,
        check: impl Fn(&Caller) -> Result<(), Status>,
    ) -> Result<Caller, Status> {
        authorize_token(&self.handle, token_of(metadata).as_deref(), check).await
    }

    /// [`Shared::authorize`] for a token already taken from a request.
    pub(crate) async fn authorize_token(
        &self,
        token: Option<&str>,
        check: impl Fn(&Caller) -> Result<(), Status>,
    ) -> Result<Caller, Status> {
        authorize_token(&self.handle, token, check).await
    }

    /// Whether the auth table changed since `caller` was checked: a linearizable read checked
    /// before its barrier is checked again when it did (`kv.rs`), against a table at least as
    /// new as the read.
    pub(crate) fn auth_moved(&self, caller: &Caller) -> bool {
        auth_moved(&self.handle, caller)
    }

    /// A short-lived `root` token for this node's own calls to other members (the corruption
    /// check's HashKV), while authentication is enabled: signed with the cluster's key, like
    /// any token, so peers need no other trust.
    pub(crate) fn internal_token(&self) -> Option<String> {
        self.token_for(keel_core::kv::ROOT)
    }

    /// A token for `user`, issued without a password: for this node's own calls, and for the
    /// user a verified client certificate names (`cert_identity.rs`). `None` while
    /// authentication is disabled or when there is no such user.
    pub(crate) fn token_for(&self, user: &str) -> Option<String> {
        let state = self.handle.auth();
        if !state.enabled() {
            return None;
        }
        let found = state.user(user)?;
        let claims = auth_token::Claims {
            user: user.to_string(),
            credential: auth_token::credential_of(&found.password_hash),
            expires_at_ms: self.handle.wall_ms().saturating_add(self.config.auth_token_ttl_ms),
        };
        Some(auth_token::mint(state.token_key(), &claims))
    }
}
