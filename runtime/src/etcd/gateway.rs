//! etcd's HTTP gateway: the etcd v3 API as JSON over HTTP on the client address, at etcd 3.4's
//! paths (`POST /v3/kv/range`, `/v3/watch`, ...; `/v3beta/` as an alias, as etcd 3.4 serves
//! it), for clients that speak HTTP and JSON rather than gRPC, such as Patroni's etcd3 backend,
//! etcd3gw and `curl`.
//!
//! Data flow: a request body is one message in proto3's JSON mapping with the proto field names
//! (the serde implementations `build.rs` generates: bytes in base64, int64 as strings or
//! numbers, enums by name; an empty body is the default message). It goes to the same service
//! implementation a gRPC call reaches (so a follower forwards writes to the leader, and limits
//! and errors are the same), and the answer comes back in the same JSON. A failure is
//! grpc-gateway's error body, `{"error": text, "code": gRPC code, "message": text}`, with the
//! HTTP status grpc-gateway gives that code (`NotFound` 404, `Unavailable` 503, ...).
//!
//! Streams (Watch, LeaseKeepAlive, Snapshot): the body holds one or more JSON requests, read as
//! they arrive; the answers are a chunked stream of `{"result": ...}` objects, one per line, and
//! an error ends it with `{"error": {"grpc_code", "http_code", "message", "http_status"}}`.
//!
//! Bounds: a body holds at most twice the gRPC message limit (base64 makes binary fields 4/3 as
//! long); a larger unary body gets 413, and a stream whose pending text grows past it is ended
//! with `OUT_OF_RANGE`. Stream outputs are the services' bounded channels. Plain builds only.

use std::future::Future;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{any, post, MethodRouter};
use axum::Router;
use futures_util::{Stream, StreamExt};
use keel::proto::etcdserverpb::auth_server::Auth;
use keel::proto::etcdserverpb::cluster_server::Cluster;
use keel::proto::etcdserverpb::kv_server::Kv;
use keel::proto::etcdserverpb::lease_server::Lease;
use keel::proto::etcdserverpb::maintenance_server::Maintenance;
use keel::proto::etcdserverpb::{LeaseKeepAliveRequest, SnapshotRequest, WatchRequest};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::mpsc;
use tonic::metadata::MetadataMap;
use tonic::{Code, Request, Status};

use super::{EtcdApi, EtcdAuth, EtcdCluster, EtcdKv, EtcdLease, EtcdMaintenance};
use crate::service::ChannelStream;

/// The gateway's routes, under `/v3/` and `/v3beta/`.
pub(crate) fn routes(api: &EtcdApi) -> Router {
    let limit = api.shared.config.message_bytes_max.saturating_mul(2);
    let v3 = Router::new()
        .merge(kv_routes(api))
        .merge(lease_routes(api, limit))
        .merge(auth_routes(api))
        .merge(other_routes(api, limit));
    let v3 = v3.layer(DefaultBodyLimit::max(limit));
    Router::new().nest("/v3", v3.clone()).nest("/v3beta", v3)
}

fn kv_routes(api: &EtcdApi) -> Router {
    let kv = EtcdKv { shared: Arc::clone(&api.shared) };
    Router::new()
        .route("/kv/range", unary(kv.clone(), |kv, request| async move { kv.range(request).await }))
        .route("/kv/put", unary(kv.clone(), |kv, request| async move { kv.put(request).await }))
        .route("/kv/deleterange", unary(kv.clone(), |kv, request| async move { kv.delete_range(request).await }))
        .route("/kv/txn", unary(kv.clone(), |kv, request| async move { kv.txn(request).await }))
        .route("/kv/compaction", unary(kv, |kv, request| async move { kv.compact(request).await }))
}

fn lease_routes(api: &EtcdApi, limit: usize) -> Router {
    let lease = EtcdLease { shared: Arc::clone(&api.shared) };
    let revoke = unary(lease.clone(), |lease, request| async move { lease.lease_revoke(request).await });
    let time_to_live = unary(lease.clone(), |lease, request| async move { lease.lease_time_to_live(request).await });
    let leases = unary(lease.clone(), |lease, request| async move { lease.lease_leases(request).await });
    let buffer = api.shared.config.watch_output_buffer.max(1);
    let keep_alive = lease.clone();
    Router::new()
        .route("/lease/grant", unary(lease, |lease, request| async move { lease.lease_grant(request).await }))
        .route("/lease/revoke", revoke.clone())
        .route("/kv/lease/revoke", revoke)
        .route("/lease/timetolive", time_to_live.clone())
        .route("/kv/lease/timetolive", time_to_live)
        .route("/lease/leases", leases.clone())
        .route("/kv/lease/leases", leases)
        .route(
            "/lease/keepalive",
            post(move |headers: HeaderMap, body: Body| {
                let lease = keep_alive.clone();
                async move {
                    let requests = json_requests::<LeaseKeepAliveRequest>(body, limit);
                    let (output, receiver) = mpsc::channel(buffer);
                    tokio::spawn(lease.keep_alive_stream(metadata_of(&headers), requests, output));
                    json_lines(ChannelStream::new(receiver))
                }
            }),
        )
}

/// The Auth service at etcd's paths (`/v3/auth/authenticate`, `/v3/auth/user/add`, ...).
fn auth_routes(api: &EtcdApi) -> Router {
    let auth = EtcdAuth { shared: Arc::clone(&api.shared) };
    Router::new()
        .route("/auth/enable", unary(auth.clone(), |a, r| async move { a.auth_enable(r).await }))
        .route("/auth/disable", unary(auth.clone(), |a, r| async move { a.auth_disable(r).await }))
        .route("/auth/status", unary(auth.clone(), |a, r| async move { a.auth_status(r).await }))
        .route("/auth/authenticate", unary(auth.clone(), |a, r| async move { a.authenticate(r).await }))
        .route("/auth/user/add", unary(auth.clone(), |a, r| async move { a.user_add(r).await }))
        .route("/auth/user/get", unary(auth.clone(), |a, r| async move { a.user_get(r).await }))
        .route("/auth/user/list", unary(auth.clone(), |a, r| async move { a.user_list(r).await }))
        .route("/auth/user/delete", unary(auth.clone(), |a, r| async move { a.user_delete(r).await }))
        .route("/auth/user/changepw", unary(auth.clone(), |a, r| async move { a.user_change_password(r).await }))
        .route("/auth/user/grant", unary(auth.clone(), |a, r| async move { a.user_grant_role(r).await }))
        .route("/auth/user/revoke", unary(auth.clone(), |a, r| async move { a.user_revoke_role(r).await }))
        .route("/auth/role/add", unary(auth.clone(), |a, r| async move { a.role_add(r).await }))
        .route("/auth/role/get", unary(auth.clone(), |a, r| async move { a.role_get(r).await }))
        .route("/auth/role/list", unary(auth.clone(), |a, r| async move { a.role_list(r).await }))
        .route("/auth/role/delete", unary(auth.clone(), |a, r| async move { a.role_delete(r).await }))
        .route("/auth/role/grant", unary(auth.clone(), |a, r| async move { a.role_grant_permission(r).await }))
        .route("/auth/role/revoke", unary(auth, |a, r| async move { a.role_revoke_permission(r).await }))
}

fn other_routes(api: &EtcdApi, limit: usize) -> Router {
    let cluster = EtcdCluster { shared: Arc::clone(&api.shared) };
    let maintenance = EtcdMaintenance { shared: Arc::clone(&api.shared) };
    let (snapshot, shared) = (maintenance.clone(), Arc::clone(&api.shared));
    Router::new()
        .route("/cluster/member/add", unary(cluster.clone(), |c, request| async move { c.member_add(request).await }))
        .route("/cluster/member/remove", unary(cluster.clone(), |c, r| async move { c.member_remove(r).await }))
        .route("/cluster/member/update", unary(cluster.clone(), |c, r| async move { c.member_update(r).await }))
        .route("/cluster/member/list", unary(cluster.clone(), |c, r| async move { c.member_list(r).await }))
        .route("/cluster/member/promote", unary(cluster, |c, r| async move { c.member_promote(r).await }))
        .route("/maintenance/alarm", unary(maintenance.clone(), |m, r| async move { m.alarm(r).await }))
        .route("/maintenance/status", unary(maintenance.clone(), |m, r| async move { m.status(r).await }))
        .route("/maintenance/defragment", unary(maintenance.clone(), |m, r| async move { m.defragment(r).await }))
        // etcd maps Hash and HashKV to this one path; its gateway answers with Hash.
        .route("/maintenance/hash", unary(maintenance.clone(), |m, r| async move { m.hash(r).await }))
        .route("/maintenance/transfer-leadership", unary(maintenance, |m, r| async move { m.move_leader(r).await }))
        .route(
            "/maintenance/snapshot",
            post(move |headers: HeaderMap| {
                let snapshot = snapshot.clone();
                async move {
                    match snapshot.snapshot(with_token(SnapshotRequest {}, &headers)).await {
                        Ok(stream) => json_lines(stream.into_inner()),
                        Err(status) => error_response(&status),
                    }
                }
            }),
        )
        .route(
            "/watch",
            post(move |headers: HeaderMap, body: Body| {
                let shared = Arc::clone(&shared);
                async move {
                    let token = super::access::token_of(&metadata_of(&headers));
                    match super::watch::open(shared, json_requests::<WatchRequest>(body, limit), false, token) {
                        Ok(receiver) => json_lines(ChannelStream::new(receiver)),
                        Err(status) => error_response(&status),
                    }
                }
            }),
        )
        // Any other path under the prefix: grpc-gateway's "Not Found", rather than the gRPC
        // router's answer, which an HTTP client would read as an empty success.
        .route("/{*path}", any(|| async { error_response(&Status::not_found("Not Found")) }))
}

/// A route that decodes the JSON body into `Req`, calls the service, and encodes its answer.
fn unary<S, Req, Resp, F, Fut>(service: S, call: F) -> MethodRouter
where
    S: Clone + Send + Sync + 'static,
    Req: DeserializeOwned + Default + Send + 'static,
    Resp: Serialize + Send + 'static,
    F: Fn(S, Request<Req>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<tonic::Response<Resp>, Status>> + Send,
{
    post(move |headers: HeaderMap, body: Bytes| {
        let (service, call) = (service.clone(), call.clone());
        async move {
            let request = match parse::<Req>(&body) {
                Ok(request) => request,
                Err(status) => return error_response(&status),
            };
            match call(service, with_token(request, &headers)).await {
                Ok(answer) => json_response(StatusCode::OK, serde_json::to_vec(answer.get_ref())),
                Err(status) => error_response(&status),
            }
        }
    })
}

/// The auth token of an HTTP request: its `Authorization` header, as etcd's gateway reads it.
fn metadata_of(headers: &HeaderMap) -> MetadataMap {
    let mut metadata = MetadataMap::new();
    if let Some(token) = headers.get(header::AUTHORIZATION).and_then(|value| value.to_str().ok()) {
        if let Ok(value) = token.parse() {
            metadata.insert(super::auth_token::TOKEN_METADATA, value);
        }
    }
    metadata
}

/// `message` as a gRPC request carrying the HTTP request's auth token.
fn with_token<T>(message: T, headers: &HeaderMap) -> Request<T> {
    Request::from_parts(metadata_of(headers), Default::default(), message)
}

/// One JSON message; an empty body (or only whitespace) is the default message, as in etcd.
fn parse<T: DeserializeOwned + Default>(body: &[u8]) -> Result<T, Status> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|error| Status::invalid_argument(invalid_json(&error)))
}

fn invalid_json(error: &serde_json::Error) -> String {
    format!(
        "the body is not a valid JSON request ({error}): bytes fields are base64, fields use the proto names \
         (key, range_end, ID, ...)"
    )
}

/// The JSON requests of a stream's body, decoded as their text arrives. Text that stays
/// undecoded past `limit` bytes, malformed JSON, or a body cut in the middle of a message ends
/// the stream with an error.
fn json_requests<T>(body: Body, limit: usize) -> std::pin::Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>
where
    T: DeserializeOwned + Send + 'static,
{
    let chunks = body.into_data_stream();
    let state = (chunks, Vec::<u8>::new(), std::collections::VecDeque::<T>::new(), false);
    Box::pin(futures_util::stream::unfold(state, move |(mut chunks, mut text, mut ready, mut done)| async move {
        loop {
            if let Some(request) = ready.pop_front() {
                return Some((Ok(request), (chunks, text, ready, done)));
            }
            if done {
                return None;
            }
            let failure = match chunks.next().await {
                Some(Ok(chunk)) => {
                    text.extend_from_slice(&chunk);
                    decode_ready(&mut text, &mut ready).err().or_else(|| {
                        (text.len() > limit).then(|| {
                            Status::out_of_range(format!("a request of the stream is over {limit} bytes of JSON"))
                        })
                    })
                }
                Some(Err(_)) => Some(Status::cancelled("the client stopped sending")),
                None => {
                    done = true;
                    (!text.iter().all(u8::is_ascii_whitespace))
                        .then(|| Status::invalid_argument("the body ends in the middle of a JSON request"))
                }
            };
            if let Some(status) = failure {
                return Some((Err(status), (chunks, text, ready, true)));
            }
        }
    }))
}

/// Moves every complete JSON message at the front of `text` into `ready`, keeping the rest.
fn decode_ready<T: DeserializeOwned>(
    text: &mut Vec<u8>,
    ready: &mut std::collections::VecDeque<T>,
) -> Result<(), Status> {
    let mut messages = serde_json::Deserializer::from_slice(text).into_iter::<T>();
    let outcome = loop {
        match messages.next() {
            Some(Ok(message)) => ready.push_back(message),
            Some(Err(error)) if error.is_eof() => break Ok(()),
            Some(Err(error)) => break Err(Status::invalid_argument(invalid_json(&error))),
            None => break Ok(()),
        }
    };
    let consumed = messages.byte_offset();
    text.drain(..consumed);
    outcome
}

/// A chunked body of `{"result": ...}` lines; an error ends it with grpc-gateway's stream error.
fn json_lines<T, S>(answers: S) -> Response
where
    T: Serialize + Send + 'static,
    S: Stream<Item = Result<T, Status>> + Send + Unpin + 'static,
{
    let lines = futures_util::stream::unfold((answers, false), |(mut answers, ended)| async move {
        if ended {
            return None;
        }
        let (line, ended) = match answers.next().await? {
            Ok(answer) => match serde_json::to_vec(&serde_json::json!({ "result": answer })) {
                Ok(line) => (line, false),
                Err(error) => (stream_error(&Status::internal(error.to_string())), true),
            },
            Err(status) => (stream_error(&status), true),
        };
        let mut line = line;
        line.push(b'\n');
        Some((Ok::<_, std::convert::Infallible>(Bytes::from(line)), (answers, ended)))
    });
    let mut response = Response::new(Body::from_stream(lines));
    response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
    response
}

fn stream_error(status: &Status) -> Vec<u8> {
    let http = http_status(status.code());
    let error = serde_json::json!({ "error": {
        "grpc_code": status.code() as i32,
        "http_code": http.as_u16(),
        "message": status.message(),
        "http_status": http.canonical_reason().unwrap_or_default(),
    }});
    error.to_string().into_bytes()
}

/// grpc-gateway's error answer for a failed call.
fn error_response(status: &Status) -> Response {
    let body =
        serde_json::json!({ "error": status.message(), "code": status.code() as i32, "message": status.message() });
    json_response(http_status(status.code()), Ok(body.to_string().into_bytes()))
}

fn json_response(status: StatusCode, body: Result<Vec<u8>, serde_json::Error>) -> Response {
    let (status, body) = match body {
        Ok(body) => (status, body),
        Err(error) => {
            let text = serde_json::json!({ "error": error.to_string(), "code": Code::Internal as i32, "message": error.to_string() });
            (StatusCode::INTERNAL_SERVER_ERROR, text.to_string().into_bytes())
        }
    };
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
    response
}

/// The HTTP status grpc-gateway (v1, as etcd 3.4 uses) gives a gRPC code.
fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::REQUEST_TIMEOUT,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel::proto::etcdserverpb::RangeRequest;

    #[test]
    fn complete_messages_are_taken_and_the_rest_kept() {
        let mut text = br#"{"key":"YQ=="} {"key":"Yg=="}{"key":"#.to_vec();
        let mut ready = std::collections::VecDeque::<RangeRequest>::new();
        decode_ready(&mut text, &mut ready).unwrap();
        assert_eq!(ready.iter().map(|r| r.key.clone()).collect::<Vec<_>>(), vec![&b"a"[..], &b"b"[..]]);
        assert_eq!(text, br#"{"key":"#.to_vec(), "the unfinished message waits for more text");
        let mut bad = br#"{"key": 5}"#.to_vec();
        assert_eq!(decode_ready::<RangeRequest>(&mut bad, &mut ready).unwrap_err().code(), Code::InvalidArgument);
    }

    #[test]
    fn a_stream_error_is_grpc_gateways_error_object() {
        let line: serde_json::Value = serde_json::from_slice(&stream_error(&Status::unavailable("no leader"))).unwrap();
        let expected = serde_json::json!({"error": {
            "grpc_code": 14, "http_code": 503, "message": "no leader", "http_status": "Service Unavailable"
        }});
        assert_eq!(line, expected);
    }

    #[test]
    fn an_empty_body_is_the_default_request_and_bad_json_is_invalid_argument() {
        assert_eq!(parse::<RangeRequest>(b" \n").unwrap(), RangeRequest::default());
        let error = parse::<RangeRequest>(b"{").unwrap_err();
        assert_eq!((error.code(), http_status(error.code())), (Code::InvalidArgument, StatusCode::BAD_REQUEST));
        assert_eq!(http_status(Code::NotFound), StatusCode::NOT_FOUND);
        assert_eq!(http_status(Code::Unavailable), StatusCode::SERVICE_UNAVAILABLE);
    }
}
