//! What the etcd authentication tests share (`etcd_auth.rs`, `native_auth.rs`): a 3-member
//! cluster with cheap password hashes, tokens on requests, and the users `root` and `alice`.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::Duration;

use keel::proto::authpb::{permission, Permission};
use keel::proto::etcdserverpb::auth_client::AuthClient;
use keel::proto::etcdserverpb::kv_client::KvClient;
use keel::proto::etcdserverpb::*;
use keel_runtime::embedded::EmbeddedNode;
use keel_runtime::node::NodeConfig;
use keel_runtime::server::ServerConfig;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

pub fn free_address() -> String {
    std::net::TcpListener::bind("127.0.0.1:0").expect("a port").local_addr().expect("bound").to_string()
}

/// Three in-memory members with cheap password hashes and `token_ttl_ms` tokens, and a
/// channel to each, once one of them takes writes.
pub async fn cluster(token_ttl_ms: u64) -> (Vec<EmbeddedNode>, Vec<Channel>, Vec<String>) {
    let members: BTreeMap<u32, String> = (1..=3).map(|id| (id, free_address())).collect();
    let mut nodes = Vec::new();
    for (&id, address) in &members {
        let mut node = NodeConfig::new(id, members.clone());
        node.raft.election_timeout_ms_min = 200;
        node.raft.election_timeout_ms_max = 400;
        node.raft.heartbeat_interval_ms = 50;
        let mut config = ServerConfig::new(node, address.parse().expect("an address"));
        config.service.auth_password_iterations = 1_000;
        config.service.auth_token_ttl_ms = token_ttl_ms;
        nodes.push(EmbeddedNode::start(config).await.expect("the node starts"));
    }
    let channels: Vec<Channel> = members
        .values()
        .map(|address| Channel::from_shared(format!("http://{address}")).expect("a URI").connect_lazy())
        .collect();
    let mut kv = KvClient::new(channels[0].clone());
    for _ in 0..200 {
        if kv.put(put("/ready", "1")).await.is_ok() {
            return (nodes, channels, members.into_values().collect());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the cluster never took a write");
}

pub fn bytes(text: &str) -> bytes::Bytes {
    text.as_bytes().to_vec().into()
}

pub fn put(key: &str, value: &str) -> PutRequest {
    PutRequest { key: key.as_bytes().to_vec().into(), value: value.as_bytes().to_vec().into(), ..Default::default() }
}

pub fn get(key: &str) -> RangeRequest {
    RangeRequest { key: key.as_bytes().to_vec().into(), ..Default::default() }
}

/// `message` as a request carrying `token`.
pub fn with<T>(token: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert("token", token.parse().expect("an ASCII token"));
    request
}

pub async fn authenticate(channel: &Channel, name: &str, password: &str) -> Result<String, Status> {
    let request = AuthenticateRequest { name: name.into(), password: password.into() };
    Ok(AuthClient::new(channel.clone()).authenticate(request).await?.into_inner().token)
}

pub fn assert_status<T: std::fmt::Debug>(result: Result<T, Status>, expected: (Code, &str)) {
    let status = result.expect_err("refused");
    assert_eq!((status.code(), status.message()), expected, "{status:?}");
}

pub const PERMISSION_DENIED: (Code, &str) = (Code::PermissionDenied, "etcdserver: permission denied");
pub const INVALID_TOKEN: (Code, &str) = (Code::Unauthenticated, "etcdserver: invalid auth token");
pub const AUTH_FAILED: (Code, &str) =
    (Code::InvalidArgument, "etcdserver: authentication failed, invalid user ID or password");

/// Adds `root` with the root role and enables authentication; returns root's token.
pub async fn enable(channel: &Channel) -> String {
    let mut auth = AuthClient::new(channel.clone());
    let refused = auth.auth_enable(AuthEnableRequest {}).await;
    assert_status(refused, (Code::FailedPrecondition, "etcdserver: root user does not exist"));
    let root = AuthUserAddRequest { name: "root".into(), password: "rootpw".into(), options: None };
    auth.user_add(root).await.expect("root added");
    let refused = auth.auth_enable(AuthEnableRequest {}).await;
    assert_status(refused, (Code::FailedPrecondition, "etcdserver: root user does not have root role"));
    auth.user_grant_role(AuthUserGrantRoleRequest { user: "root".into(), role: "root".into() }).await.expect("granted");
    auth.auth_enable(AuthEnableRequest {}).await.expect("enabled");
    authenticate(channel, "root", "rootpw").await.expect("root authenticates")
}

/// A cluster as [`cluster`] gives it, with authentication enabled and `alice` added
/// ([`add_alice`]); root's token last.
pub async fn cluster_with_alice(token_ttl_ms: u64) -> (Vec<EmbeddedNode>, Vec<Channel>, Vec<String>, String) {
    let (nodes, channels, addresses) = cluster(token_ttl_ms).await;
    let root = enable(&channels[0]).await;
    add_alice(&channels[0], &root).await;
    (nodes, channels, addresses, root)
}

/// Stops every node, each cleanly.
pub async fn stop(nodes: Vec<EmbeddedNode>) {
    for node in nodes {
        node.shutdown().await.expect("a clean stop");
    }
}

/// As root: a role `app` with READWRITE on `/app/` and READ on `/shared`, and a user `alice`
/// holding it.
pub async fn add_alice(channel: &Channel, root: &str) {
    let mut auth = AuthClient::new(channel.clone());
    auth.role_add(with(root, AuthRoleAddRequest { name: "app".into() })).await.expect("role added");
    let grant = |kind: permission::Type, key: &str, range_end: &str| AuthRoleGrantPermissionRequest {
        name: "app".into(),
        perm: Some(Permission { perm_type: kind as i32, key: bytes(key), range_end: bytes(range_end) }),
    };
    auth.role_grant_permission(with(root, grant(permission::Type::Readwrite, "/app/", "/app0"))).await.expect("rw");
    auth.role_grant_permission(with(root, grant(permission::Type::Read, "/shared", ""))).await.expect("read");
    let alice = AuthUserAddRequest { name: "alice".into(), password: "alicepw".into(), options: None };
    auth.user_add(with(root, alice)).await.expect("alice added");
    auth.user_grant_role(with(root, AuthUserGrantRoleRequest { user: "alice".into(), role: "app".into() }))
        .await
        .expect("app granted");
}
