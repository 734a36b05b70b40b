//! Keel node servers over real loopback gRPC (plain build only: the listeners are real sockets on
//! ephemeral ports, and madsim-tonic has no `serve_with_incoming`).
//!
//! Every test talks to the servers only through the generated tonic clients, as an application
//! would: redirection with leader hints, writes and compare-and-swap, reads under each
//! consistency policy, scans with their revision, key and prefix watches (events, previous
//! values, progress, lag, limits), membership watches through a learner's addition and
//! promotion, status, leadership transfer, graceful shutdown with hand-over, and a restart from
//! a fjall data directory. Waits poll in small steps under an overall deadline.
#![cfg(not(madsim))]

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use keel::proto::admin::cluster_admin_client::ClusterAdminClient;
use keel::proto::admin::{StatusRequest, StatusResponse, TransferLeadershipRequest};
use keel::proto::client::raft_client_service_client::RaftClientServiceClient;
use keel::proto::client::write_command::{CompareAndSwap, Delete, Insert, Operation};
use keel::proto::client::{
    client_response, ClientReadRequest, ClientResponse, ClientWriteRequest, MembershipSnapshot, ReadConsistencyPolicy,
    ScanRequest, WatchEventType, WatchMembershipRequest, WatchRequest, WatchResponse, WriteCommand,
};
use keel::proto::common::membership_change::Change;
use keel::proto::common::{AddNode, MembershipChange, NodeRole, NodeStatus, PromoteLearner, RemoveNode};
use keel::proto::error::ErrorCode;
use keel_core::{LeaseConfig, NodeId};
use keel_runtime::node::NodeConfig;
use keel_runtime::server::{serve_with_listener, ServerConfig, ServerError};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::{sleep, timeout, Instant};
use tonic::transport::Channel;
use tonic::{Code, Streaming};

/// Upper bound on any wait; the tests normally finish far sooner.
const WAIT: Duration = Duration::from_secs(20);
/// Step of every polling loop.
const POLL: Duration = Duration::from_millis(10);
/// Minimum election timeout of the test clusters: a leader can only appear this long after the
/// old one went silent, unless leadership was handed over.
const ELECTION_MS_MIN: u64 = 600;

type Client = RaftClientServiceClient<Channel>;
type Admin = ClusterAdminClient<Channel>;

/// One running server and the means to stop it.
struct TestServer {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), ServerError>>,
}

impl TestServer {
    fn start(config: ServerConfig, listener: TcpListener) -> Self {
        let addr = listener.local_addr().expect("bound address");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve_with_listener(config, listener, async move {
            let _ = stopped.await;
        }));
        Self { addr, stop, task }
    }

    /// Asks for a graceful shutdown and waits for `serve` to return.
    async fn shutdown(self) -> Result<(), ServerError> {
        let _ = self.stop.send(());
        timeout(WAIT, self.task).await.expect("the server stops in time").expect("the server task does not panic")
    }

    async fn client(&self) -> Client {
        RaftClientServiceClient::connect(format!("http://{}", self.addr)).await.expect("connect the client service")
    }

    async fn admin(&self) -> Admin {
        ClusterAdminClient::connect(format!("http://{}", self.addr)).await.expect("connect the admin service")
    }
}

async fn listener() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback port");
    let addr = listener.local_addr().expect("bound address");
    (listener, addr)
}

/// Short timeouts for loopback clusters.
fn server_config(id: NodeId, members: &BTreeMap<NodeId, String>, addr: SocketAddr) -> ServerConfig {
    let mut node = NodeConfig::new(id, members.clone());
    node.raft.heartbeat_interval_ms = 30;
    node.raft.election_timeout_ms_min = ELECTION_MS_MIN;
    node.raft.election_timeout_ms_max = 2 * ELECTION_MS_MIN;
    node.request_timeout_ms = 5_000;
    let mut config = ServerConfig::new(node, addr);
    config.transport.call_timeout_ms = 500;
    config.transport.backoff_ms_min = 5;
    config.transport.backoff_ms_max = 100;
    config.service.watch_progress_interval_ms = 100;
    config
}

/// Starts `size` servers that form one cluster, each configured by `tweak`.
async fn start_cluster(size: NodeId, tweak: impl Fn(&mut ServerConfig)) -> BTreeMap<NodeId, TestServer> {
    let mut listeners = BTreeMap::new();
    let mut members = BTreeMap::new();
    for id in 1..=size {
        let (listener, addr) = listener().await;
        members.insert(id, addr.to_string());
        listeners.insert(id, (listener, addr));
    }
    listeners
        .into_iter()
        .map(|(id, (listener, addr))| {
            let mut config = server_config(id, &members, addr);
            tweak(&mut config);
            (id, TestServer::start(config, listener))
        })
        .collect()
}

/// Polls `attempt` until it yields a value, within [`WAIT`].
async fn eventually<T, F, Fut>(what: &str, mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(value) = attempt().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        sleep(POLL).await;
    }
}

async fn status(admin: &mut Admin) -> Option<StatusResponse> {
    admin.status(StatusRequest {}).await.ok().map(|response| response.into_inner())
}

/// The node that leads with an entry of its term committed and applied (ready for writes).
async fn ready_leader(servers: &BTreeMap<NodeId, TestServer>) -> NodeId {
    let mut admins = Vec::new();
    for (id, server) in servers {
        admins.push((*id, server.admin().await));
    }
    eventually("a ready leader", || {
        let admins = admins.clone();
        async move {
            for (id, mut admin) in admins {
                let Some(s) = status(&mut admin).await else { continue };
                let ready =
                    s.commit_index > 0 && s.commit_index == s.last_log_index && s.applied_index == s.commit_index;
                if s.role == NodeRole::Leader as i32 && ready {
                    return Some(id);
                }
            }
            None
        }
    })
    .await
}

fn write_request(operation: Operation) -> ClientWriteRequest {
    ClientWriteRequest { client_id: 7, command: Some(WriteCommand { operation: Some(operation) }) }
}

fn insert(key: &str, value: impl Into<Bytes>) -> ClientWriteRequest {
    write_request(Operation::Insert(Insert { key: Bytes::from(key.to_string()), value: value.into(), ttl_secs: 0 }))
}

fn delete(key: &str) -> ClientWriteRequest {
    write_request(Operation::Delete(Delete { key: Bytes::from(key.to_string()) }))
}

fn cas(key: &str, expected: Option<&str>, new_value: &str) -> ClientWriteRequest {
    write_request(Operation::CompareAndSwap(CompareAndSwap {
        key: Bytes::from(key.to_string()),
        expected_value: expected.map(|e| Bytes::from(e.to_string())),
        new_value: Bytes::from(new_value.to_string()),
    }))
}

async fn write(client: &mut Client, request: ClientWriteRequest) -> ClientResponse {
    client.handle_client_write(request).await.expect("the write call itself succeeds").into_inner()
}

/// Writes and expects success; returns `WriteResult.succeeded`.
async fn write_ok(client: &mut Client, request: ClientWriteRequest) -> bool {
    let response = write(client, request).await;
    assert_eq!(response.error(), ErrorCode::Success, "{:?}", response.metadata);
    match response.success_result {
        Some(client_response::SuccessResult::WriteResult(result)) => result.succeeded,
        other => panic!("a write answers a WriteResult, got {other:?}"),
    }
}

async fn read(client: &mut Client, keys: &[&str], policy: Option<ReadConsistencyPolicy>) -> ClientResponse {
    let request = ClientReadRequest {
        client_id: 7,
        keys: keys.iter().map(|k| Bytes::from(k.to_string())).collect(),
        consistency_policy: policy.map(|p| p as i32),
    };
    client.handle_client_read(request).await.expect("the read call itself succeeds").into_inner()
}

/// The key-value pairs of a successful read.
fn pairs(response: &ClientResponse) -> Vec<(String, String)> {
    assert_eq!(response.error(), ErrorCode::Success, "{:?}", response.metadata);
    match &response.success_result {
        Some(client_response::SuccessResult::ReadData(data)) => data
            .results
            .iter()
            .map(|r| (String::from_utf8_lossy(&r.key).into_owned(), String::from_utf8_lossy(&r.value).into_owned()))
            .collect(),
        other => panic!("a read answers ReadResults, got {other:?}"),
    }
}

fn pair(key: &str, value: &str) -> (String, String) {
    (key.to_string(), value.to_string())
}

async fn watch(client: &mut Client, key: &str, prefix: bool, prev_kv: bool) -> Streaming<WatchResponse> {
    watch_from(client, key, prefix, prev_kv, 0).await
}

async fn watch_from(
    client: &mut Client,
    key: &str,
    prefix: bool,
    prev_kv: bool,
    start_revision: u64,
) -> Streaming<WatchResponse> {
    let request = WatchRequest { client_id: 7, key: Bytes::from(key.to_string()), prefix, prev_kv, start_revision };
    client.watch(request).await.expect("the watch opens").into_inner()
}

/// The next message of a stream, within [`WAIT`]; `None` when the stream ended.
async fn next<T>(stream: &mut Streaming<T>) -> Option<T> {
    timeout(WAIT, stream.message()).await.expect("a stream message in time").expect("the stream does not fail")
}

/// The next PUT or DELETE (progress events are skipped), within [`WAIT`].
async fn next_change(stream: &mut Streaming<WatchResponse>) -> WatchResponse {
    let deadline = Instant::now() + WAIT;
    loop {
        let event = next(stream).await.expect("the watch stream stays open");
        if event.event_type() != WatchEventType::Progress {
            return event;
        }
        assert!(Instant::now() < deadline, "no change arrived, only progress events");
    }
}

fn text(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).expect("utf-8")
}

mod data;
mod membership;
mod watches;
