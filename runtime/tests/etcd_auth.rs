//! etcd authentication over gRPC on a 3-node cluster (plain build only): enabling it, tokens
//! that every member accepts (followers forward writes with them), permission checks on reads,
//! writes, transactions, watches, leases and administration, old tokens after a change, expiry,
//! and the JSON gateway's `Authorization` header.
#![cfg(not(madsim))]

use std::time::Duration;

use futures_util::StreamExt;
use keel::proto::authpb::UserAddOptions;
use keel::proto::etcdserverpb::auth_client::AuthClient;
use keel::proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use keel::proto::etcdserverpb::kv_client::KvClient;
use keel::proto::etcdserverpb::lease_client::LeaseClient;
use keel::proto::etcdserverpb::maintenance_client::MaintenanceClient;
use keel::proto::etcdserverpb::watch_client::WatchClient;
use keel::proto::etcdserverpb::watch_request::RequestUnion;
use keel::proto::etcdserverpb::*;
use tonic::Code;

#[path = "support/etcd_auth.rs"]
mod support;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_gate_every_request_and_every_member_accepts_them() {
    let (nodes, channels, _) = cluster(300_000).await;
    let root = enable(&channels[0]).await;
    let mut kv = KvClient::new(channels[1].clone());
    assert_status(kv.put(put("/a", "1")).await, (Code::InvalidArgument, "etcdserver: user name is empty"));
    assert_status(kv.put(with("keel1.00.1.1.00", put("/a", "1"))).await, INVALID_TOKEN);
    assert_status(authenticate(&channels[2], "root", "nope").await, AUTH_FAILED);
    // The token one member issued works on all three; followers forward writes with it.
    for channel in &channels {
        let answer = KvClient::new(channel.clone()).put(with(&root, put("/a", "root"))).await;
        answer.expect("root writes through every member");
    }
    // A token outlives changes of other users, roles and permissions...
    add_alice(&channels[2], &root).await;
    assert_eq!(kv.range(with(&root, get("/a"))).await.expect("read").into_inner().count, 1);
    // ...but not a new password of its user; etcd clients then log in again.
    let new_password = AuthUserChangePasswordRequest { name: "root".into(), password: "newpw".into() };
    AuthClient::new(channels[2].clone()).user_change_password(with(&root, new_password)).await.expect("changed");
    assert_status(kv.range(with(&root, get("/a"))).await, INVALID_TOKEN);
    assert_status(authenticate(&channels[0], "root", "rootpw").await, AUTH_FAILED);
    let root = authenticate(&channels[1], "root", "newpw").await.expect("the new password");
    assert_eq!(kv.range(with(&root, get("/a"))).await.expect("read").into_inner().count, 1);
    for node in nodes {
        node.shutdown().await.expect("a clean stop");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_roles_decide_what_it_reads_writes_and_watches() {
    let (nodes, channels, _) = cluster(300_000).await;
    let root = enable(&channels[0]).await;
    add_alice(&channels[0], &root).await;
    let alice = authenticate(&channels[1], "alice", "alicepw").await.expect("alice authenticates");
    let mut kv = KvClient::new(channels[2].clone());
    kv.put(with(&alice, put("/app/x", "1"))).await.expect("inside /app/");
    assert_status(kv.put(with(&alice, put("/other", "1"))).await, PERMISSION_DENIED);
    assert_status(kv.put(with(&alice, put("/shared", "1"))).await, PERMISSION_DENIED);
    let prefix = RangeRequest { key: "/app/".into(), range_end: "/app0".into(), ..Default::default() };
    assert_eq!(kv.range(with(&alice, prefix)).await.expect("prefix read").into_inner().count, 1);
    let serializable = RangeRequest { serializable: true, ..get("/shared") };
    kv.range(with(&alice, serializable)).await.expect("a read-only key reads");
    assert_status(kv.range(with(&alice, get("/other"))).await, PERMISSION_DENIED);
    let wider = RangeRequest { key: "/app/".into(), range_end: "/b".into(), ..Default::default() };
    assert_status(kv.range(with(&alice, wider)).await, PERMISSION_DENIED);
    // A transaction needs every key it compares, reads or writes, in both branches.
    let compare = |key: &str| Compare {
        key: bytes(key),
        result: CompareResult::Equal as i32,
        target: CompareTarget::Version as i32,
        target_union: Some(TargetUnion::Version(0)),
        ..Default::default()
    };
    let write_op = |key: &str| RequestOp { request: Some(request_op::Request::RequestPut(put(key, "t"))) };
    let txn = |compare_key: &str, failure_key: &str| TxnRequest {
        compare: vec![compare(compare_key)],
        success: vec![write_op("/app/t")],
        failure: vec![write_op(failure_key)],
    };
    kv.txn(with(&alice, txn("/app/x", "/app/u"))).await.expect("all inside /app/");
    assert_status(kv.txn(with(&alice, txn("/other", "/app/u"))).await, PERMISSION_DENIED);
    assert_status(kv.txn(with(&alice, txn("/app/x", "/other"))).await, PERMISSION_DENIED);
    // Deleting with prev_kv reads the keys too.
    let delete = DeleteRangeRequest { key: "/shared".into(), prev_kv: true, ..Default::default() };
    assert_status(kv.delete_range(with(&alice, delete)).await, PERMISSION_DENIED);
    // A watch on keys it cannot read is created and canceled at once, with the reason.
    let (requests, receiver) = tokio::sync::mpsc::channel(4);
    let mut watch = WatchClient::new(channels[0].clone());
    let stream = tokio_stream(receiver);
    let mut responses = watch.watch(with(&alice, stream)).await.expect("stream opens").into_inner();
    for key in ["/other", "/app/"] {
        let create = WatchCreateRequest { key: key.into(), ..Default::default() };
        requests.send(WatchRequest { request_union: Some(RequestUnion::CreateRequest(create)) }).await.expect("sent");
    }
    let refused = responses.next().await.expect("an answer").expect("not an error");
    assert!(refused.created && refused.canceled, "{refused:?}");
    assert_eq!(refused.cancel_reason, "etcdserver: permission denied");
    let accepted = responses.next().await.expect("an answer").expect("not an error");
    assert!(accepted.created && !accepted.canceled, "{accepted:?}");
    // Administration needs the root role; a user may read itself and its roles.
    let mut auth = AuthClient::new(channels[1].clone());
    assert_status(auth.user_list(with(&alice, AuthUserListRequest {})).await, PERMISSION_DENIED);
    let me = auth.user_get(with(&alice, AuthUserGetRequest { name: "alice".into() })).await.expect("itself");
    assert_eq!(me.into_inner().roles, vec!["app".to_string()]);
    let role = auth.role_get(with(&alice, AuthRoleGetRequest { role: "app".into() })).await.expect("its role");
    assert_eq!(role.into_inner().perm.len(), 2);
    assert_status(auth.user_get(with(&alice, AuthUserGetRequest { name: "root".into() })).await, PERMISSION_DENIED);
    let mut maintenance = MaintenanceClient::new(channels[1].clone());
    assert_status(maintenance.hash_kv(with(&alice, HashKvRequest { revision: 0 })).await, PERMISSION_DENIED);
    assert_status(maintenance.snapshot(with(&alice, SnapshotRequest {})).await.map(|_| ()), PERMISSION_DENIED);
    maintenance.hash_kv(with(&root, HashKvRequest { revision: 0 })).await.expect("root hashes");
    let compact = CompactionRequest { revision: 2, physical: false };
    assert_status(kv.compact(with(&alice, compact)).await, PERMISSION_DENIED);
    for node in nodes {
        node.shutdown().await.expect("a clean stop");
    }
}

/// A stream of the requests sent on `receiver`.
fn tokio_stream<T: Send + 'static>(
    mut receiver: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send + 'static {
    futures_util::stream::poll_fn(move |context| receiver.poll_recv(context))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_permission_ends_writes_and_disabling_opens_everything() {
    let (nodes, channels, _) = cluster(300_000).await;
    let root = enable(&channels[0]).await;
    add_alice(&channels[0], &root).await;
    let alice = authenticate(&channels[2], "alice", "alicepw").await.expect("alice");
    let mut kv = KvClient::new(channels[1].clone());
    kv.put(with(&alice, put("/app/k", "1"))).await.expect("allowed");
    // A key attached to a lease: revoking the lease deletes it, so it needs write permission.
    let mut lease = LeaseClient::new(channels[2].clone());
    let granted = lease.lease_grant(with(&root, LeaseGrantRequest { ttl: 60, id: 0 })).await.expect("lease");
    let id = granted.into_inner().id;
    kv.put(with(&root, PutRequest { lease: id, ..put("/other/leased", "1") })).await.expect("attached");
    let revoke = LeaseRevokeRequest { id };
    assert_status(lease.lease_revoke(with(&alice, revoke)).await, PERMISSION_DENIED);
    let revoke = revoke_from_app("/app/", "/app0");
    AuthClient::new(channels[2].clone()).role_revoke_permission(with(&root, revoke)).await.expect("revoked");
    // The same token: a revoked permission counts from the moment the revocation is answered.
    assert_status(kv.put(with(&alice, put("/app/k", "2"))).await, PERMISSION_DENIED);
    let mut auth = AuthClient::new(channels[1].clone());
    let status = auth.auth_status(with(&root, AuthStatusRequest {})).await.expect("status").into_inner();
    assert!(status.enabled);
    let refused = auth.user_delete(with(&root, AuthUserDeleteRequest { name: "root".into() })).await;
    assert_status(refused, (Code::InvalidArgument, "etcdserver: invalid auth management"));
    auth.auth_disable(with(&root, AuthDisableRequest {})).await.expect("disabled");
    kv.put(put("/other", "anyone")).await.expect("open again");
    let refused = authenticate(&channels[0], "root", "rootpw").await;
    assert_status(refused, (Code::FailedPrecondition, "etcdserver: authentication is not enabled"));
    for node in nodes {
        node.shutdown().await.expect("a clean stop");
    }
}

/// A `RoleRevokePermission` of role `app`'s permission on `key`..`range_end`.
fn revoke_from_app(key: &str, range_end: &str) -> AuthRoleRevokePermissionRequest {
    AuthRoleRevokePermissionRequest { role: "app".into(), key: bytes(key), range_end: bytes(range_end) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_expire_and_users_without_password_cannot_log_in() {
    let (nodes, channels, _) = cluster(1_000).await;
    let root = enable(&channels[0]).await;
    let mut auth = AuthClient::new(channels[0].clone());
    let options = Some(UserAddOptions { no_password: true });
    auth.user_add(with(&root, AuthUserAddRequest { name: "cert-only".into(), password: String::new(), options }))
        .await
        .expect("added");
    let refused = authenticate(&channels[0], "cert-only", "").await;
    assert_status(refused, AUTH_FAILED);
    let mut kv = KvClient::new(channels[2].clone());
    kv.put(with(&root, put("/k", "1"))).await.expect("a fresh token");
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    assert_status(kv.put(with(&root, put("/k", "2"))).await, INVALID_TOKEN);
    for node in nodes {
        node.shutdown().await.expect("a clean stop");
    }
}

/// One HTTP/1.1 POST of `body` to `path`, with an `Authorization` header when `token` is given:
/// the status and body.
async fn post(address: &str, path: &str, token: Option<&str>, body: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address).await.expect("connects");
    let authorization = token.map(|token| format!("Authorization: {token}\r\n")).unwrap_or_default();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {address}\r\n{authorization}Content-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("sent");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.expect("read");
    let status = answer.split(' ').nth(1).and_then(|code| code.parse().ok()).expect("a status line");
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default().to_string();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_json_gateway_authenticates_and_takes_the_authorization_header() {
    let (nodes, channels, addresses) = cluster(300_000).await;
    enable(&channels[0]).await;
    let (status, body) =
        post(&addresses[1], "/v3/auth/authenticate", None, r#"{"name":"root","password":"rootpw"}"#).await;
    assert_eq!(status, 200, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let token = answer["token"].as_str().expect("a token").to_string();
    let put = r#"{"key":"L2c=","value":"MQ=="}"#;
    let (status, body) = post(&addresses[2], "/v3/kv/put", None, put).await;
    assert_eq!(status, 400, "no token: {body}");
    assert!(body.contains("user name is empty"), "{body}");
    let (status, body) = post(&addresses[2], "/v3/kv/put", Some(&token), put).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = post(&addresses[0], "/v3/auth/user/list", Some(&token), "{}").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("root"), "{body}");
    for node in nodes {
        node.shutdown().await.expect("a clean stop");
    }
}
