//! etcd's login by client certificate: with `client_cert_auth`, a request that carries no token
//! is made by the user named by its client certificate's common name, if such a user exists and
//! authentication is enabled (etcd does the same; `user add NAME --no-password` makes a user
//! for it).
//!
//! Data flow: a server layer, in front of every service, reads the connection's
//! [`PeerInfo`] (the verified common name, `tls_listener.rs`) and, when the request has neither
//! a token nor the forwarding mark, gives it a short-lived token for that user in the
//! `authorization` metadata, signed with the cluster's key like any token. From there the
//! request takes the token path of `access.rs`: the same checks, and a follower forwards it to
//! the leader with that token (the leader never takes the follower's own certificate for the
//! caller's). Plain builds only: under madsim there is no TLS.

use std::sync::Arc;
use std::task::{Context, Poll};

use axum::http::{header, HeaderValue, Request};

use super::auth_token::TOKEN_METADATA;
use super::forward::FORWARDED;
use super::Shared;
use crate::tls_listener::PeerInfo;

/// The layer; add it to the server builder.
#[derive(Clone, Debug)]
pub struct CertIdentityLayer {
    pub(super) shared: Arc<Shared>,
}

impl<S> tower_layer::Layer<S> for CertIdentityLayer {
    type Service = CertIdentity<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CertIdentity { inner, shared: Arc::clone(&self.shared) }
    }
}

/// The service the layer wraps around each service of the node.
#[derive(Clone, Debug)]
pub struct CertIdentity<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S, B> tower_service::Service<Request<B>> for CertIdentity<S>
where
    S: tower_service::Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        if let Some(token) = self.token_for(&request) {
            request.headers_mut().insert(header::AUTHORIZATION, token);
        }
        self.inner.call(request)
    }
}

impl<S> CertIdentity<S> {
    /// A token for the user the request's client certificate names, when it needs one.
    fn token_for<B>(&self, request: &Request<B>) -> Option<HeaderValue> {
        let name = request.extensions().get::<PeerInfo>()?.common_name.as_deref()?;
        let headers = request.headers();
        if [TOKEN_METADATA, header::AUTHORIZATION.as_str(), FORWARDED].iter().any(|key| headers.contains_key(*key)) {
            return None;
        }
        HeaderValue::from_str(&self.shared.token_for(name)?).ok()
    }
}
