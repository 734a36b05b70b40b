//! The Rust client of a Keel cluster, over gRPC.
//!
//! [`KeelClient`] talks to the native API (`keel.client.RaftClientService`) and to the cluster
//! administration service (`keel.admin.ClusterAdmin`) of the nodes whose client addresses it is
//! given. It finds the leader by itself: a node that is not the leader answers `NOT_LEADER` with a
//! hint, and the client retries at the hinted address; when no leader is known it waits and tries
//! the other endpoints. Only what is safe is retried (see the `retry` module docs): reads always,
//! writes only when the cluster says they were not applied. A write whose outcome is unknown is
//! returned as such ([`ClientError::is_outcome_unknown`]), never retried behind the caller's back.
//!
//! ```no_run
//! # async fn demo() -> Result<(), keel::client::ClientError> {
//! use keel::client::{ClientOptions, Consistency, KeelClient};
//!
//! let endpoints = vec!["127.0.0.1:7001".to_string(), "127.0.0.1:7002".to_string()];
//! let client = KeelClient::connect(endpoints, ClientOptions::default()).await?;
//! client.put("/hello", "world", None).await?;
//! let found = client.get(["/hello"], Consistency::Linearizable).await?;
//! assert_eq!(found[0].value, "world");
//! let swapped = client.cas("/hello", Some("world"), "keel").await?;
//! assert!(swapped);
//! let mut events = client.watch("/config/", true, false).await?;
//! while let Some(event) = events.next().await {
//!     println!("{:?}", event?);
//! }
//! # Ok(()) }
//! ```
//!
//! With [`ClientOptions::batch_stream`] on, writes and reads share one multiplexed `Batch`
//! stream per node (a Keel extension of the native API, see the `batch` module) instead of one
//! unary call each: the same requests, answers and retries, at a fraction of the CPU per request
//! when many tasks share one client.
//!
//! On a cluster with etcd authentication enabled, give [`ClientOptions::credentials`]: the
//! client logs in through etcd's `Authenticate` when a node first answers `UNAUTHENTICATED`,
//! sends the token with every request, and logs in again when it expires.
//!
//! The client works in the simulator too: built with `--cfg madsim`, its tokio and tonic are
//! madsim's.

mod admin;
mod batch;
mod error;
mod kv;
mod options;
mod retry;
mod types;
mod watch;

use std::collections::BTreeMap;
use std::sync::Mutex;

use tonic::transport::{Channel, Endpoint};

pub use error::{ClientError, LeaderHint};
pub use options::{ClientOptions, Consistency, Credentials};
/// The form the client dials an endpoint in: `host:port` becomes `http://host:port`.
pub use retry::normalize as normalize_endpoint;
pub use types::{KeyValue, Membership, NodeStatus, PeerStatus, Role, ScanResult, WatchEvent, WatchEventKind};
pub use watch::WatchStream;

use crate::proto::error::{ErrorCode, ErrorMetadata};
use retry::{Failure, Router};

/// A client of one Keel cluster. Cheap to share behind an `Arc`; all methods take `&self`.
#[derive(Debug)]
pub struct KeelClient {
    router: Router,
    options: ClientOptions,
    /// Open connections by endpoint URI, made on first use and dropped on a transport failure.
    channels: Mutex<BTreeMap<String, Channel>>,
    /// With [`ClientOptions::batch_stream`]: the open `Batch` stream of each endpoint.
    batch_streams: Mutex<BTreeMap<String, std::sync::Arc<batch::BatchStream>>>,
    /// Held while logging in, so that the tasks that find the token gone log in once, not each.
    logging_in: tokio::sync::Mutex<()>,
}

impl KeelClient {
    /// A client of the cluster reachable at `endpoints` (client addresses, `host:port` or
    /// `http://host:port`). Connects to the first endpoint that answers; fails when none is valid
    /// or none can be reached.
    pub async fn connect(endpoints: Vec<String>, options: ClientOptions) -> Result<Self, ClientError> {
        let client = Self::new(endpoints, options)?;
        let mut last = None;
        for endpoint in client.router.endpoints() {
            match client.channel(endpoint).await {
                Ok(_) => return Ok(client),
                Err(failure) => last = Some(retry::decide(retry::OpKind::Read, endpoint, failure).1),
            }
        }
        Err(last.unwrap_or(ClientError::NoEndpoints))
    }

    /// A client that connects lazily, on its first request. Fails only when an endpoint is not a
    /// valid address or none is given.
    pub fn new(endpoints: Vec<String>, options: ClientOptions) -> Result<Self, ClientError> {
        let mut normalized: Vec<String> = Vec::with_capacity(endpoints.len());
        for endpoint in endpoints.iter().map(|endpoint| endpoint.trim()).filter(|endpoint| !endpoint.is_empty()) {
            let uri = retry::normalize(endpoint);
            Endpoint::from_shared(uri.clone()).map_err(|error| ClientError::InvalidEndpoint {
                endpoint: endpoint.to_owned(),
                reason: error_chain(&error),
            })?;
            if !normalized.contains(&uri) {
                normalized.push(uri);
            }
        }
        if normalized.is_empty() {
            return Err(ClientError::NoEndpoints);
        }
        Ok(Self {
            router: Router::new(normalized),
            options,
            channels: Mutex::new(BTreeMap::new()),
            batch_streams: Mutex::new(BTreeMap::new()),
            logging_in: tokio::sync::Mutex::new(()),
        })
    }

    /// The endpoints the client was given, as URIs.
    pub fn endpoints(&self) -> &[String] {
        self.router.endpoints()
    }

    /// The options the client runs with.
    pub fn options(&self) -> &ClientOptions {
        &self.options
    }

    /// The open connection to `endpoint`, made now if there is none.
    /// Logs in first when a node asked for a token ([`ClientOptions::credentials`]).
    async fn channel(&self, endpoint: &str) -> Result<Channel, Failure> {
        let channel = self.connection(endpoint).await?;
        self.log_in_if_wanted(&channel).await?;
        Ok(channel)
    }

    async fn connection(&self, endpoint: &str) -> Result<Channel, Failure> {
        if let Some(channel) = self.lock_channels().get(endpoint).cloned() {
            return Ok(channel);
        }
        let target = crate::tls::endpoint(endpoint, self.options.tls.as_ref())
            .map_err(|reason| Failure::NotSent(format!("invalid address: {reason}")))?
            .connect_timeout(self.options.connect_timeout);
        let channel = target.connect().await.map_err(|error| Failure::NotSent(error_chain(&error)))?;
        self.lock_channels().insert(endpoint.to_owned(), channel.clone());
        Ok(channel)
    }

    /// Logs in through `channel` if a node asked for a token since the last login; a cluster
    /// whose authentication was disabled meanwhile needs no token. One task logs in at a time;
    /// the others wait for it and use its token (a login costs the server a password hash).
    async fn log_in_if_wanted(&self, channel: &Channel) -> Result<(), Failure> {
        let Some(credentials) = &self.options.credentials else { return Ok(()) };
        if !self.router.session().login_wanted {
            return Ok(());
        }
        let _logging_in = self.logging_in.lock().await;
        if !self.router.session().login_wanted {
            return Ok(());
        }
        let request = crate::proto::etcdserverpb::AuthenticateRequest {
            name: credentials.user.clone(),
            password: credentials.password.clone(),
        };
        let mut auth = crate::proto::etcdserverpb::auth_client::AuthClient::new(channel.clone());
        let token = match auth.authenticate(self.request(request)).await {
            Ok(response) => Some(response.into_inner().token.parse().map_err(|_| {
                Failure::Protocol("the auth token from Authenticate is not valid metadata text".into())
            })?),
            Err(status) if status.code() == tonic::Code::FailedPrecondition => None,
            Err(status) => return Err(failure_from_status(&status)),
        };
        let mut session = self.router.session();
        session.token = token;
        session.login_wanted = false;
        session.generation += 1;
        Ok(())
    }

    fn lock_channels(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Channel>> {
        self.channels.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Classifies a failed call, dropping the connection when the transport failed.
    fn status_failure(&self, endpoint: &str, status: &tonic::Status) -> Failure {
        let failure = failure_from_status(status);
        if matches!(failure, Failure::NotSent(_) | Failure::Lost(_)) {
            self.lock_channels().remove(endpoint);
        }
        failure
    }

    /// A request carrying the per-attempt deadline to the server too, and the login token.
    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = self.stream_request(message);
        request.set_timeout(self.options.request_timeout);
        request
    }

    /// A request with the login token, if there is one, and no deadline (a stream's).
    fn stream_request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if self.options.credentials.is_some() {
            if let Some(token) = self.router.session().token.clone() {
                request.metadata_mut().insert(TOKEN_METADATA, token);
            }
        }
        request
    }

    /// The login `Batch` streams must have been opened with (`retry::Session::generation`);
    /// always 0 without credentials.
    fn login_generation(&self) -> u64 {
        if self.options.credentials.is_some() {
            self.router.session().generation
        } else {
            0
        }
    }
}

/// The failure behind a keel error code and its metadata (`code` is not success).
fn code_failure(code: i32, metadata: Option<ErrorMetadata>) -> Failure {
    let metadata = metadata.unwrap_or_default();
    Failure::Code {
        code,
        message: metadata.message,
        leader_hint: LeaderHint::from_proto(metadata.leader_hint.as_ref()),
        retry_after_ms: metadata.retry_after_ms,
    }
}

/// `Ok(())` for `ERROR_CODE_SUCCESS`; the failure for any other code, known or not.
fn check_code(code: i32, metadata: Option<ErrorMetadata>) -> Result<(), Failure> {
    match ErrorCode::try_from(code) {
        Ok(ErrorCode::Success) => Ok(()),
        _ => Err(code_failure(code, metadata)),
    }
}

/// gRPC metadata keys under which a node may report a Keel error on a call whose response
/// message has no error field (scans and watches).
const ERROR_CODE_KEY: &str = "keel-error-code";
/// The gRPC metadata key of an etcd auth token (what etcd's clients send).
const TOKEN_METADATA: &str = "token";
const LEADER_ID_KEY: &str = "keel-leader-id";
const LEADER_ADDRESS_KEY: &str = "keel-leader-address";
const RETRY_AFTER_KEY: &str = "keel-retry-after-ms";

/// Classifies a gRPC status: a Keel error carried in its metadata, a connection that could not be
/// made (the request was not sent), a transport failure (it may have been), or another status.
fn failure_from_status(status: &tonic::Status) -> Failure {
    let metadata = status.metadata();
    let text = |key: &str| metadata.get(key).and_then(|value| value.to_str().ok()).map(str::to_owned);
    if let Some(code) = text(ERROR_CODE_KEY).map(|code| parse_code(&code)) {
        let leader_id = text(LEADER_ID_KEY).and_then(|id| id.parse::<u32>().ok()).unwrap_or(0);
        let leader_hint = (leader_id != 0)
            .then(|| LeaderHint { id: leader_id, address: text(LEADER_ADDRESS_KEY).unwrap_or_default() });
        let retry_after_ms = text(RETRY_AFTER_KEY).and_then(|ms| ms.parse().ok()).unwrap_or(0);
        return Failure::Code { code, message: status.message().to_owned(), leader_hint, retry_after_ms };
    }
    let message = status_text(status);
    if is_connect_error(status) {
        return Failure::NotSent(message);
    }
    match status.code() {
        tonic::Code::Unavailable
        | tonic::Code::Cancelled
        | tonic::Code::DeadlineExceeded
        | tonic::Code::Unknown
        | tonic::Code::Aborted => Failure::Lost(message),
        code => Failure::Rpc { code, message: status.message().to_owned() },
    }
}

/// A code sent as its name (`ERROR_CODE_NOT_LEADER`) or its number; a name this client does not
/// know becomes -1, which no build knows either (so it is a failure, never a success).
fn parse_code(text: &str) -> i32 {
    match ErrorCode::from_str_name(text.trim()) {
        Some(code) => code as i32,
        None => text.trim().parse::<i32>().unwrap_or(-1),
    }
}

/// True when the status says the connection could not be made, so the request was not sent.
fn is_connect_error(status: &tonic::Status) -> bool {
    #[cfg(not(madsim))]
    {
        let mut source = std::error::Error::source(status);
        while let Some(error) = source {
            if error.is::<tonic::ConnectError>() {
                return true;
            }
            source = error.source();
        }
    }
    let _ = status;
    false
}

/// A status for people: its code, its message, and the root cause when the message lacks it
/// (for example "Unavailable: tcp connect error: Connection refused (os error 111)").
fn status_text(status: &tonic::Status) -> String {
    let mut text = format!("{:?}: {}", status.code(), status.message());
    let mut root = None;
    let mut source = std::error::Error::source(status);
    while let Some(cause) = source {
        root = Some(cause.to_string());
        source = cause.source();
    }
    if let Some(root) = root.filter(|root| !text.contains(root.as_str())) {
        text.push_str(": ");
        text.push_str(&root);
    }
    if status.code() == tonic::Code::Cancelled && status.message() == "Timeout expired" {
        text = "no answer before the request timeout".into();
    }
    text
}

/// An error and its sources, joined by ": " (tonic's transport errors say little at the top).
/// Shared with `crate::tls`, whose endpoint errors are tonic's too.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(all(test, not(madsim)))]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_validated_and_normalized() {
        let client = KeelClient::new(
            vec!["127.0.0.1:7001".into(), " ".into(), "http://127.0.0.1:7001".into()],
            ClientOptions::default(),
        )
        .unwrap();
        assert_eq!(client.endpoints(), ["http://127.0.0.1:7001"]);
        assert_eq!(KeelClient::new(vec![], ClientOptions::default()).unwrap_err(), ClientError::NoEndpoints);
        assert!(matches!(
            KeelClient::new(vec!["bad host:1".into()], ClientOptions::default()).unwrap_err(),
            ClientError::InvalidEndpoint { .. }
        ));
    }

    #[test]
    fn statuses_are_classified() {
        let mut status = tonic::Status::failed_precondition("not the leader");
        status.metadata_mut().insert(ERROR_CODE_KEY, "ERROR_CODE_NOT_LEADER".parse().unwrap());
        status.metadata_mut().insert(LEADER_ID_KEY, "2".parse().unwrap());
        status.metadata_mut().insert(LEADER_ADDRESS_KEY, "127.0.0.1:7002".parse().unwrap());
        match failure_from_status(&status) {
            Failure::Code { code: 1, leader_hint: Some(hint), .. } => assert_eq!(hint.address, "127.0.0.1:7002"),
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(parse_code("22"), ErrorCode::OutcomeUnknown as i32);
        assert_eq!(parse_code("ERROR_CODE_FROM_THE_FUTURE"), -1);
        assert!(matches!(failure_from_status(&tonic::Status::unavailable("gone")), Failure::Lost(_)));
        assert!(matches!(failure_from_status(&tonic::Status::unimplemented("no")), Failure::Rpc { .. }));
        assert_eq!(check_code(0, None), Ok(()));
        // A code this build does not know is a failure, never a success.
        assert!(matches!(check_code(77, None), Err(Failure::Code { code: 77, .. })));
    }
}
