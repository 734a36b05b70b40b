//! `etcdserverpb.Auth`: users, roles and permissions, and the tokens of authenticated callers.
//!
//! The auth table lives in the replicated store (core's `kv::auth`): every change is one
//! `KvCommand::Auth` through the log, checked against the caller's rights at the auth revision
//! it carries (`access.rs`), and applied on every member alike. A follower forwards changes to
//! the leader with the caller's token, as it forwards writes (`forward.rs`).
//!
//! * **AuthEnable** needs a `root` user holding the `root` role, and draws the cluster's random
//!   token key, which travels in the command. **AuthDisable**, user and role changes and lists
//!   need the `root` role while authentication is enabled; `UserGet` of oneself and `RoleGet`
//!   of a held role do not, as in etcd. Reads of the table follow a read barrier, so they see
//!   every change acknowledged before they arrived.
//! * **Passwords** are hashed by the member that receives the request (`auth_token.rs`); only
//!   the hash is proposed. A follower forwards the request as it came (over the peer link, TLS
//!   when the node has it) and the leader hashes it.
//! * **Authenticate** checks the password against the table after a read barrier and returns a
//!   token signed with the cluster's key: valid on every member, for `auth_token_ttl_ms`, until
//!   the auth table changes.

use std::num::NonZeroU32;
use std::sync::Arc;

use keel::proto::authpb::{permission, Permission as EtcdPermission};
use keel::proto::etcdserverpb::auth_client::AuthClient;
use keel::proto::etcdserverpb::auth_server::{Auth, AuthServer};
use keel::proto::etcdserverpb::*;
use keel_core::kv::{AuthCommand, KeyRange, KvCommand, Permission, PermissionKind};
use tonic::metadata::MetadataMap;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use super::access::Caller;
use super::auth_token::{self, Claims};
use super::forward::{forwarded, Answer};
use super::{errors, Shared, Written};

/// The gRPC server type of [`EtcdAuth`].
#[cfg(not(madsim))]
pub type EtcdAuthServer = AuthServer<EtcdAuth>;
/// The gRPC server type of [`EtcdAuth`] (the simulated stubs carry an interceptor type).
#[cfg(madsim)]
pub type EtcdAuthServer = AuthServer<EtcdAuth, tonic::codegen::IdentityInterceptor>;

/// The etcd `Auth` service of one node.
#[derive(Clone, Debug)]
pub struct EtcdAuth {
    pub(super) shared: Arc<Shared>,
}

pub(super) fn server(auth: EtcdAuth) -> EtcdAuthServer {
    AuthServer::new(auth)
}

/// An answer that is only a header: most of the Auth service's. A follower relays them from the
/// leader ([`Answer`]).
trait HeaderOnly: Answer + Send + 'static {
    fn of(header: ResponseHeader) -> Self;
}

macro_rules! header_only {
    ($($answer:ty),* $(,)?) => {
        $(impl HeaderOnly for $answer {
            fn of(header: ResponseHeader) -> Self {
                Self { header: Some(header) }
            }
        }

        impl Answer for $answer {
            fn header_mut(&mut self) -> Option<&mut ResponseHeader> {
                self.header.as_mut()
            }
        })*
    };
}

header_only!(
    AuthEnableResponse,
    AuthDisableResponse,
    AuthUserAddResponse,
    AuthUserDeleteResponse,
    AuthUserChangePasswordResponse,
    AuthUserGrantRoleResponse,
    AuthUserRevokeRoleResponse,
    AuthRoleAddResponse,
    AuthRoleDeleteResponse,
    AuthRoleGrantPermissionResponse,
    AuthRoleRevokePermissionResponse,
);

impl EtcdAuth {
    /// Proposes `command` for `caller`; on a follower, forwards the request with `call`.
    async fn change<T, F, Fut>(
        &self,
        caller: &Caller,
        metadata: &MetadataMap,
        command: AuthCommand,
        call: F,
    ) -> Result<T, Status>
    where
        T: HeaderOnly,
        F: FnOnce(AuthClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<Response<T>, Status>>,
    {
        match self.shared.propose(caller.authorized(KvCommand::Auth(command))).await? {
            Written::Applied(_) => Ok(T::of(self.shared.headers.header(None).await?)),
            Written::Elsewhere(hint) => {
                let client = AuthClient::new(self.shared.forwarder.channel(&hint, metadata).await?);
                self.shared.forwarder.relay(&hint.address, call(client)).await
            }
        }
    }

    /// The caller of `metadata`, who must hold the `root` role.
    async fn admin(&self, metadata: &MetadataMap) -> Result<Caller, Status> {
        self.shared.authorize(metadata, Caller::require_admin).await
    }

    /// The caller of `metadata` with the auth table as of now: checked after a read barrier, so
    /// that the table read back holds every change acknowledged before the call.
    async fn reader(&self, metadata: &MetadataMap) -> Result<Caller, Status> {
        self.shared.read_barrier().await?;
        self.shared.caller(metadata).await
    }

    /// PBKDF2 rounds of a new password hash (the `auth_password_iterations` setting).
    fn iterations(&self) -> NonZeroU32 {
        NonZeroU32::new(self.shared.config.auth_password_iterations).unwrap_or(NonZeroU32::MIN)
    }

    /// The stored hash of a new password, computed off the async workers.
    async fn hash(&self, password: String) -> Result<bytes::Bytes, Status> {
        let iterations = self.iterations();
        let salt = auth_token::random_bytes::<16>()?;
        let _permit = self.shared.auth_hashing.acquire().await.map_err(|_| errors::status(errors::STOPPED))?;
        auth_token::off_runtime(move || auth_token::hash_password(&password, iterations, salt)).await
    }

    async fn enable(&self, metadata: MetadataMap, request: AuthEnableRequest) -> Result<AuthEnableResponse, Status> {
        let caller = self.admin(&metadata).await?;
        let token_key = bytes::Bytes::copy_from_slice(&auth_token::random_bytes::<{ auth_token::TOKEN_KEY_BYTES }>()?);
        let md = &metadata;
        let command = AuthCommand::Enable { token_key };
        self.change(&caller, md, command, |mut c| async move { c.auth_enable(forwarded(request, md)).await }).await
    }

    async fn disable(&self, metadata: MetadataMap, request: AuthDisableRequest) -> Result<AuthDisableResponse, Status> {
        let caller = self.admin(&metadata).await?;
        let md = &metadata;
        let command = AuthCommand::Disable;
        self.change(&caller, md, command, |mut c| async move { c.auth_disable(forwarded(request, md)).await }).await
    }

    async fn status(&self, metadata: MetadataMap) -> Result<AuthStatusResponse, Status> {
        let caller = self.reader(&metadata).await?;
        caller.require_admin()?;
        Ok(AuthStatusResponse {
            header: Some(self.shared.headers.header(None).await?),
            enabled: caller.state().enabled(),
            auth_revision: caller.auth_revision(),
        })
    }

    async fn authenticate(&self, request: AuthenticateRequest) -> Result<AuthenticateResponse, Status> {
        self.shared.read_barrier().await?;
        let state = self.shared.handle.auth();
        if !state.enabled() {
            return Err(errors::status(errors::AUTH_NOT_ENABLED));
        }
        let failed = || errors::status(errors::AUTH_FAILED);
        let user = state.user(&request.name).filter(|user| !user.no_password);
        let stored = user.map(|user| user.password_hash.clone());
        let (checked, password, iterations) = (stored.clone(), request.password, self.iterations());
        let permit = self.shared.auth_hashing.acquire().await.map_err(|_| errors::status(errors::STOPPED))?;
        let matches = auth_token::off_runtime(move || match &checked {
            Some(stored) => auth_token::password_matches(stored, &password),
            // An unknown user costs as long as a wrong password: the answer's time does not
            // tell which user names exist.
            None => {
                let _decoy = auth_token::hash_password(&password, iterations, [0; 16]);
                false
            }
        })
        .await?;
        drop(permit);
        let Some(stored) = stored.filter(|_| matches) else {
            return Err(failed());
        };
        let claims = Claims {
            user: request.name,
            credential: auth_token::credential_of(&stored),
            expires_at_ms: self.shared.handle.wall_ms().saturating_add(self.shared.config.auth_token_ttl_ms),
        };
        Ok(AuthenticateResponse {
            header: Some(self.shared.headers.header(None).await?),
            token: auth_token::mint(state.token_key(), &claims),
        })
    }

    async fn user_add(
        &self,
        metadata: MetadataMap,
        request: AuthUserAddRequest,
    ) -> Result<AuthUserAddResponse, Status> {
        let caller = self.admin(&metadata).await?;
        if request.name.is_empty() {
            return Err(errors::status(errors::USER_EMPTY));
        }
        let no_password = request.options.as_ref().is_some_and(|options| options.no_password);
        let password_hash = if no_password { bytes::Bytes::new() } else { self.hash(request.password.clone()).await? };
        let command = AuthCommand::UserAdd { name: request.name.clone(), password_hash, no_password };
        let md = &metadata;
        self.change(&caller, md, command, |mut c| async move { c.user_add(forwarded(request, md)).await }).await
    }

    async fn user_get(
        &self,
        metadata: MetadataMap,
        request: AuthUserGetRequest,
    ) -> Result<AuthUserGetResponse, Status> {
        let caller = self.reader(&metadata).await?;
        caller.require_admin_or(|user, _| user == request.name)?;
        let user = caller.state().user(&request.name).ok_or_else(|| errors::status(errors::USER_NOT_FOUND))?;
        Ok(AuthUserGetResponse {
            header: Some(self.shared.headers.header(None).await?),
            roles: user.roles.iter().cloned().collect(),
        })
    }

    async fn user_list(&self, metadata: MetadataMap) -> Result<AuthUserListResponse, Status> {
        let caller = self.reader(&metadata).await?;
        caller.require_admin()?;
        Ok(AuthUserListResponse {
            header: Some(self.shared.headers.header(None).await?),
            users: caller.state().users().map(|(name, _)| name.to_string()).collect(),
        })
    }

    async fn user_delete(
        &self,
        metadata: MetadataMap,
        request: AuthUserDeleteRequest,
    ) -> Result<AuthUserDeleteResponse, Status> {
        let caller = self.admin(&metadata).await?;
        let command = AuthCommand::UserDelete { name: request.name.clone() };
        let md = &metadata;
        self.change(&caller, md, command, |mut c| async move { c.user_delete(forwarded(request, md)).await }).await
    }

    async fn user_change_password(
        &self,
        metadata: MetadataMap,
        request: AuthUserChangePasswordRequest,
    ) -> Result<AuthUserChangePasswordResponse, Status> {
        let caller = self.admin(&metadata).await?;
        let password_hash = self.hash(request.password.clone()).await?;
        let command = AuthCommand::UserChangePassword { name: request.name.clone(), password_hash };
        let md = &metadata;
        let call = |mut c: AuthClient<Channel>| async move { c.user_change_password(forwarded(request, md)).await };
        self.change(&caller, md, command, call).await
    }

    async fn user_grant_role(
        &self,
        metadata: MetadataMap,
        request: AuthUserGrantRoleRequest,
    ) -> Result<AuthUserGrantRoleResponse, Status> {
        let caller = self.admin(&metadata).await?;
        let command = AuthCommand::UserGrantRole { user: request.user.clone(), role: request.role.clone() };
        let md = &metadata;
        self.change(&caller, md, command, |mut c| async move { c.user_grant_role(forwarded(request, md)).await }).await
    }

    async fn user_revoke_role(
        &self,
        metadata: MetadataMap,
        request: AuthUserRevokeRoleRequest,
    ) -> Result<AuthUserRevokeRoleResponse, Status> {
        let caller = self.admin(&metadata).await?;
        let command = AuthCommand::UserRevokeRole { user: request.name.clone(), role: request.role.clone() };
        let md = &metadata;
        self.change(&caller, md, command, |mut c| async move { c.user_revoke_role(forwarded(request, md)).await }).await
    }

    async fn role_add(
        &self,
        metadata: MetadataMap,
        request: AuthRoleAddRequest,
    ) -> Result<AuthRoleAddResponse, Status> {
        let caller = self.admin(&metadata).await?;
        if request.name.is_empty() {
            return Err(errors::status(errors::ROLE_EMPTY));
        }
        let command = AuthCommand::RoleAdd { name: request.name.clone() };
        let md = &metadata;
        self.change(&caller, md, command, |mut c| async move { c.role_add(forwarded(request, md)).await }).await
    }

    async fn role_get(
        &self,
        metadata: MetadataMap,
        request: AuthRoleGetRequest,
    ) -> Result<AuthRoleGetResponse, Status> {
        let caller = self.reader(&metadata).await?;
        caller.require_admin_or(|user, state| state.has_role(user, &request.role))?;
        let role = caller.state().role(&request.role).ok_or_else(|| errors::status(errors::ROLE_NOT_FOUND))?;
        Ok(AuthRoleGetResponse {
            header: Some(self.shared.headers.header(None).await?),
            perm: role.permissions.iter().map(etcd_permission).collect(),
        })
    }

    async fn role_list(&self, metadata: MetadataMap) -> Result<AuthRoleListResponse, Status> {
        let caller = self.reader(&metadata).await?;
        caller.require_admin()?;
        Ok(AuthRoleListResponse {
            header: Some(self.shared.headers.header(None).await?),
            roles: caller.state().roles().map(|(name, _)| name.to_string()).collect(),
        })
    }

    async fn role_delete(
        &self,
        metadata: MetadataMap,
        request: AuthRoleDeleteRequest,
    ) -> Result<AuthRoleDeleteResponse, Status> {
        let caller = self.admin(&metadata).await?;
        let command = AuthCommand::RoleDelete { name: request.role.clone() };
        let md = &metadata;
        self.change(&caller, md, command, |mut c| async move { c.role_delete(forwarded(request, md)).await }).await
    }

    async fn role_grant_permission(
        &self,
        metadata: MetadataMap,
        request: AuthRoleGrantPermissionRequest,
    ) -> Result<AuthRoleGrantPermissionResponse, Status> {
        let caller = self.admin(&metadata).await?;
        let permission = request.perm.as_ref().ok_or_else(|| errors::status(errors::PERMISSION_NOT_GIVEN))?;
        let kind = PermissionKind::from_etcd(permission.perm_type).ok_or_else(|| {
            Status::invalid_argument("etcdserver: unknown permission type (READ, WRITE or READWRITE)")
        })?;
        let range = KeyRange::new(permission.key.clone(), permission.range_end.clone());
        let command =
            AuthCommand::RoleGrantPermission { role: request.name.clone(), permission: Permission { kind, range } };
        let md = &metadata;
        let call = |mut c: AuthClient<Channel>| async move { c.role_grant_permission(forwarded(request, md)).await };
        self.change(&caller, md, command, call).await
    }

    async fn role_revoke_permission(
        &self,
        metadata: MetadataMap,
        request: AuthRoleRevokePermissionRequest,
    ) -> Result<AuthRoleRevokePermissionResponse, Status> {
        let caller = self.admin(&metadata).await?;
        let range = KeyRange::new(request.key.clone(), request.range_end.clone());
        let command = AuthCommand::RoleRevokePermission { role: request.role.clone(), range };
        let md = &metadata;
        let call = |mut c: AuthClient<Channel>| async move { c.role_revoke_permission(forwarded(request, md)).await };
        self.change(&caller, md, command, call).await
    }
}

/// A permission in etcd's message.
fn etcd_permission(permission: &Permission) -> EtcdPermission {
    let kind = match permission.kind {
        PermissionKind::Read => permission::Type::Read,
        PermissionKind::Write => permission::Type::Write,
        PermissionKind::ReadWrite => permission::Type::Readwrite,
    };
    EtcdPermission {
        perm_type: kind as i32,
        key: permission.range.start.clone(),
        range_end: permission.range.end.clone(),
    }
}

/// Splits a request into its metadata and message.
fn parts<T>(request: Request<T>) -> (MetadataMap, T) {
    let (metadata, _, message) = request.into_parts();
    (metadata, message)
}

#[tonic::async_trait]
impl Auth for EtcdAuth {
    async fn auth_enable(&self, request: Request<AuthEnableRequest>) -> Result<Response<AuthEnableResponse>, Status> {
        let (metadata, request) = parts(request);
        self.enable(metadata, request).await.map(Response::new)
    }

    async fn auth_disable(
        &self,
        request: Request<AuthDisableRequest>,
    ) -> Result<Response<AuthDisableResponse>, Status> {
        let (metadata, request) = parts(request);
        self.disable(metadata, request).await.map(Response::new)
    }

    async fn auth_status(&self, request: Request<AuthStatusRequest>) -> Result<Response<AuthStatusResponse>, Status> {
        self.status(parts(request).0).await.map(Response::new)
    }

    async fn authenticate(
        &self,
        request: Request<AuthenticateRequest>,
    ) -> Result<Response<AuthenticateResponse>, Status> {
        EtcdAuth::authenticate(self, request.into_inner()).await.map(Response::new)
    }

    async fn user_add(&self, request: Request<AuthUserAddRequest>) -> Result<Response<AuthUserAddResponse>, Status> {
        let (metadata, request) = parts(request);
        EtcdAuth::user_add(self, metadata, request).await.map(Response::new)
    }

    async fn user_get(&self, request: Request<AuthUserGetRequest>) -> Result<Response<AuthUserGetResponse>, Status> {
        let (metadata, request) = parts(request);
        EtcdAuth::user_get(self, metadata, request).await.map(Response::new)
    }

    async fn user_list(&self, request: Request<AuthUserListRequest>) -> Result<Response<AuthUserListResponse>, Status> {
        EtcdAuth::user_list(self, parts(request).0).await.map(Response::new)
    }

    async fn user_delete(
        &self,
        request: Request<AuthUserDeleteRequest>,
    ) -> Result<Response<AuthUserDeleteResponse>, Status> {
        let (metadata, request) = parts(request);
        EtcdAuth::user_delete(self, metadata, request).await.map(Response::new)
    }

    async fn user_change_password(
        &self,
        request: Request<AuthUserChangePasswordRequest>,
    ) -> Result<Response<AuthUserChangePasswordResponse>, Status> {
        let (metadata, request) = parts(request);
        EtcdAuth::user_change_password(self, metadata, request).await.map(Response::new)
    }

    async fn user_grant_role(
        &self,
        request: Request<AuthUserGrantRoleRequest>,
    ) -> Result<Response<AuthUserGrantRoleResponse>, Status> {
        let (metadata, request) = parts(request);
        EtcdAuth::user_grant_role(self, metadata, request).await.map(Response::new)
    }

    async fn user_revoke_role(
        &self,
        request: Request<AuthUserRevokeRoleRequest>,
    ) -> Result<Response<AuthUserRevokeRoleResponse>, Status> {
        let (metadata, request) = parts(request);
        EtcdAuth::user_revoke_role(self, metadata, request).await.map(Response::new)
    }

    async fn role_add(&self, request: Request<AuthRoleAddRequest>) -> Result<Response<AuthRoleAddResponse>, Status> {
        let (metadata, request) = parts(request);
        EtcdAuth::role_add(self, metadata, request).await.map(Response::new)
    }

    async fn role_get(&self, request: Request<AuthRoleGetRequest>) -> Result<Response<AuthRoleGetResponse>, Status> {
        let (metadata, request) = parts(request);
        EtcdAuth::role_get(self, metadata, request).await.map(Response::new)
    }

    async fn role_list(&self, request: Request<AuthRoleListRequest>) -> Result<Response<AuthRoleListResponse>, Status> {
        EtcdAuth::role_list(self, parts(request).0).await.map(Response::new)
    }

    async fn role_delete(
        &self,
        request: Request<AuthRoleDeleteRequest>,
    ) -> Result<Response<AuthRoleDeleteResponse>, Status> {
        let (metadata, request) = parts(request);
        EtcdAuth::role_delete(self, metadata, request).await.map(Response::new)
    }

    async fn role_grant_permission(
        &self,
        request: Request<AuthRoleGrantPermissionRequest>,
    ) -> Result<Response<AuthRoleGrantPermissionResponse>, Status> {
        let (metadata, request) = parts(request);
        EtcdAuth::role_grant_permission(self, metadata, request).await.map(Response::new)
    }

    async fn role_revoke_permission(
        &self,
        request: Request<AuthRoleRevokePermissionRequest>,
    ) -> Result<Response<AuthRoleRevokePermissionResponse>, Status> {
        let (metadata, request) = parts(request);
        EtcdAuth::role_revoke_permission(self, metadata, request).await.map(Response::new)
    }
}
