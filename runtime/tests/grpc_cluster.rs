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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_reads_and_scans_with_redirection_and_precise_errors() {
    let servers = start_cluster(3, |_| {}).await;
    let leader = ready_leader(&servers).await;
    let follower = *servers.keys().find(|id| **id != leader).expect("a follower");
    let mut on_leader = servers[&leader].client().await;
    let mut on_follower = servers[&follower].client().await;

    // A write on a follower is redirected with the leader's id and address.
    let refused = write(&mut on_follower, insert("/app/a", "1")).await;
    assert_eq!(refused.error(), ErrorCode::NotLeader);
    let hint = refused.metadata.and_then(|m| m.leader_hint).expect("a leader hint");
    assert_eq!((hint.leader_id, hint.address), (leader, servers[&leader].addr.to_string()));

    // Writes on the leader, with and without a time to live.
    assert!(write_ok(&mut on_leader, insert("/app/a", "1")).await);
    assert!(write_ok(&mut on_leader, insert("/app/b", "2")).await);
    let with_ttl =
        write_request(Operation::Insert(Insert { key: "/app/t".into(), value: "t".into(), ttl_secs: 3_600 }));
    assert!(write_ok(&mut on_leader, with_ttl).await);
    assert!(write_ok(&mut on_leader, delete("/app/t")).await);
    assert!(write_ok(&mut on_leader, delete("/app/never-existed")).await, "deleting a missing key succeeds");

    // Malformed and oversized writes get their own codes.
    let empty = ClientWriteRequest { client_id: 7, command: None };
    assert_eq!(write(&mut on_leader, empty).await.error(), ErrorCode::InvalidArgument);
    let long_key = "k".repeat(5_000);
    assert_eq!(write(&mut on_leader, insert(&long_key, "v")).await.error(), ErrorCode::KeyTooLarge);
    let big_value = Bytes::from(vec![b'v'; (1 << 20) + 1]);
    assert_eq!(write(&mut on_leader, insert("/app/big", big_value)).await.error(), ErrorCode::ValueTooLarge);
    assert_eq!(write(&mut on_leader, insert("", "v")).await.error(), ErrorCode::InvalidArgument);

    // Compare-and-swap: absent expected value means "must not exist"; a failed comparison is
    // not an error but `succeeded = false`.
    assert!(write_ok(&mut on_leader, cas("/app/lock", None, "alice")).await);
    assert!(!write_ok(&mut on_leader, cas("/app/lock", None, "bob")).await);
    assert!(!write_ok(&mut on_leader, cas("/app/lock", Some("bob"), "carol")).await);
    assert!(write_ok(&mut on_leader, cas("/app/lock", Some("alice"), "dave")).await);

    // Reads: absent keys are omitted, the rest come in request order, under every policy.
    let keys = ["/app/lock", "/app/missing", "/app/a"];
    let expected = vec![pair("/app/lock", "dave"), pair("/app/a", "1")];
    assert_eq!(pairs(&read(&mut on_leader, &keys, None).await), expected, "default policy");
    let linearizable = Some(ReadConsistencyPolicy::LinearizableRead);
    assert_eq!(pairs(&read(&mut on_follower, &keys, linearizable).await), expected, "linearizable on a follower");
    let eventual = Some(ReadConsistencyPolicy::EventualConsistency);
    assert_eq!(pairs(&read(&mut on_leader, &keys, eventual).await), expected);
    let lease = read(&mut on_leader, &keys, Some(ReadConsistencyPolicy::LeaseRead)).await;
    assert_eq!(lease.error(), ErrorCode::ConsistencyPolicyUnsupported, "leases are off in this cluster");
    assert!(lease.metadata.is_some_and(|m| m.message.contains("lease reads are disabled")));
    let too_many: Vec<String> = (0..1_025).map(|i| format!("/k/{i}")).collect();
    let too_many: Vec<&str> = too_many.iter().map(String::as_str).collect();
    assert_eq!(read(&mut on_leader, &too_many, None).await.error(), ErrorCode::RequestTooLarge);
    assert_eq!(read(&mut on_leader, &[""], None).await.error(), ErrorCode::InvalidArgument);

    // A scan returns the entries under the prefix and the revision it read at.
    let mut admin = servers[&leader].admin().await;
    let revision = status(&mut admin).await.expect("status").revision;
    for client in [&mut on_leader, &mut on_follower] {
        let scan = client
            .handle_client_scan(ScanRequest { client_id: 7, prefix: "/app/".into() })
            .await
            .expect("scan")
            .into_inner();
        let entries: Vec<(&str, &str)> = scan.entries.iter().map(|e| (text(&e.key), text(&e.value))).collect();
        assert_eq!(entries, vec![("/app/a", "1"), ("/app/b", "2"), ("/app/lock", "dave")]);
        assert_eq!(scan.revision, revision, "the scan reads the latest revision");
    }
    let bad = on_leader.handle_client_scan(ScanRequest { client_id: 7, prefix: "app/".into() }).await;
    let status = bad.expect_err("a prefix without a leading '/' is refused");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        status.metadata().get("keel-error-code").and_then(|v| v.to_str().ok()),
        Some("ERROR_CODE_INVALID_ARGUMENT")
    );

    for (_, server) in servers {
        server.shutdown().await.expect("clean shutdown");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_deliver_changes_previous_values_progress_and_refusals() {
    let servers = start_cluster(3, |config| {
        config.service.watchers_max = 3;
        config.node.raft.lease = Some(LeaseConfig { clock_drift_ppm_max: 1_000 });
    })
    .await;
    let leader = ready_leader(&servers).await;
    let server = &servers[&leader];
    let mut client = server.client().await;

    // With leases configured, a lease read is served.
    assert!(write_ok(&mut client, insert("/other/x", "0")).await);
    let lease = read(&mut client, &["/other/x"], Some(ReadConsistencyPolicy::LeaseRead)).await;
    assert_eq!(pairs(&lease), vec![pair("/other/x", "0")]);

    let mut prefix = watch(&mut client, "/w/", true, true).await;
    let mut exact = watch(&mut client, "/w/x", false, false).await;
    assert!(write_ok(&mut client, insert("/w/x", "1")).await);
    assert!(write_ok(&mut client, insert("/other/y", "no")).await);
    assert!(write_ok(&mut client, insert("/w/x", "2")).await);
    assert!(write_ok(&mut client, insert("/w/z", "3")).await);
    assert!(write_ok(&mut client, delete("/w/x")).await);

    let mut events = Vec::new();
    for _ in 0..4 {
        events.push(next_change(&mut prefix).await);
    }
    let seen: Vec<(WatchEventType, &str, &str, &str)> =
        events.iter().map(|e| (e.event_type(), text(&e.key), text(&e.value), text(&e.prev_value))).collect();
    assert_eq!(
        seen,
        vec![
            (WatchEventType::Put, "/w/x", "1", ""),
            (WatchEventType::Put, "/w/x", "2", "1"),
            (WatchEventType::Put, "/w/z", "3", ""),
            (WatchEventType::Delete, "/w/x", "", "2"),
        ]
    );
    let revisions: Vec<u64> = events.iter().map(|e| e.revision).collect();
    assert!(revisions.windows(2).all(|w| w[0] < w[1]), "revisions increase: {revisions:?}");
    assert_eq!(revisions[1], revisions[0] + 2, "the write to /other/y took a revision in between");
    assert!(events.iter().all(|e| e.error() == ErrorCode::Success));

    // The exact watch sees only its key, and no previous values (prev_kv is off).
    let mut exact_seen = Vec::new();
    for _ in 0..3 {
        let e = next_change(&mut exact).await;
        exact_seen.push((e.event_type(), text(&e.value).to_string(), e.prev_value.is_empty()));
    }
    assert_eq!(
        exact_seen,
        vec![
            (WatchEventType::Put, "1".to_string(), true),
            (WatchEventType::Put, "2".to_string(), true),
            (WatchEventType::Delete, String::new(), true),
        ]
    );

    // Idle streams receive PROGRESS with the store's revision.
    let mut admin = server.admin().await;
    let revision = status(&mut admin).await.expect("status").revision;
    assert_eq!(revision, revisions[3]);
    let progress = next(&mut prefix).await.expect("open");
    assert_eq!((progress.event_type(), progress.revision), (WatchEventType::Progress, revision));

    // An invalid prefix is refused in-band: one CANCELED event, then the stream ends.
    let mut invalid = watch(&mut client, "/w", true, false).await;
    let refusal = next(&mut invalid).await.expect("a refusal");
    assert_eq!((refusal.event_type(), refusal.error()), (WatchEventType::Canceled, ErrorCode::InvalidArgument));
    assert!(next(&mut invalid).await.is_none());

    // The watcher limit (3) counts membership watches too.
    let mut membership =
        client.watch_membership(WatchMembershipRequest { client_id: 7 }).await.expect("membership watch").into_inner();
    let first: MembershipSnapshot = next(&mut membership).await.expect("the current membership");
    assert_eq!((first.members, first.learners), (vec![1, 2, 3], vec![]));
    let mut over = watch(&mut client, "/w/", true, false).await;
    let refusal = next(&mut over).await.expect("a refusal");
    assert_eq!((refusal.event_type(), refusal.error()), (WatchEventType::Canceled, ErrorCode::Overloaded));
    let over_membership = client.watch_membership(WatchMembershipRequest { client_id: 7 }).await;
    assert_eq!(over_membership.expect_err("over the limit").code(), Code::ResourceExhausted);
    // Closing a stream frees its slot.
    drop(exact);
    let again = eventually("a free watcher slot", || {
        let mut client = client.clone();
        async move {
            let mut stream = watch(&mut client, "/w/", true, false).await;
            assert!(write_ok(&mut client, insert("/w/again", "1")).await);
            let event = next(&mut stream).await?;
            (event.event_type() != WatchEventType::Canceled).then_some((stream, event))
        }
    })
    .await;
    assert_eq!((again.1.event_type(), text(&again.1.key)), (WatchEventType::Put, "/w/again"));

    // Shutdown ends the open streams with UNAVAILABLE.
    drop(again);
    let mut servers = servers;
    let TestServer { stop, task, .. } = servers.remove(&leader).expect("the leader's server");
    let _ = stop.send(());
    let ended = timeout(WAIT, async {
        loop {
            match prefix.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => return None,
                Err(status) => return Some(status.code()),
            }
        }
    })
    .await
    .expect("the stream ends in time");
    assert_eq!(ended, Some(Code::Unavailable));
    timeout(WAIT, task).await.expect("stops").expect("no panic").expect("clean shutdown");
    for (_, server) in servers {
        server.shutdown().await.expect("clean shutdown");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_watcher_is_canceled_with_a_resume_revision() {
    let servers = start_cluster(3, |config| {
        config.node.watch_buffer_events = 4;
        config.service.watch_output_buffer = 1;
        config.service.watch_progress_interval_ms = 60_000;
    })
    .await;
    let leader = ready_leader(&servers).await;
    let mut client = servers[&leader].client().await;
    // A watcher that does not read: HTTP/2 flow control stops the server from sending after a
    // few large events, and the node's event buffer (4 events) overflows.
    let mut stream = watch(&mut client, "/big/", true, false).await;
    let value = Bytes::from(vec![b'x'; 128 * 1024]);
    let mut revisions = Vec::new();
    for i in 0..40 {
        assert!(write_ok(&mut client, insert(&format!("/big/{i:02}"), value.clone())).await);
    }
    let mut admin = servers[&leader].admin().await;
    let last = status(&mut admin).await.expect("status").revision;
    let canceled = loop {
        let event = next(&mut stream).await.expect("the stream ends with a CANCELED event");
        if event.event_type() == WatchEventType::Canceled {
            break event;
        }
        assert_eq!(event.event_type(), WatchEventType::Put);
        revisions.push(event.revision);
    };
    assert_eq!(canceled.error(), ErrorCode::WatchLagged);
    assert!(next(&mut stream).await.is_none(), "the stream ends after CANCELED");
    assert!(revisions.len() < 40, "some events were lost to the lag");
    assert!(revisions.windows(2).all(|w| w[1] == w[0] + 1), "delivered events have no gap: {revisions:?}");
    // Everything at or below the resume revision was delivered; it is at most one revision
    // behind the last delivered event (the lag may have cut that revision short).
    let delivered_last = revisions.last().copied().unwrap_or(0);
    assert!(canceled.revision <= delivered_last && canceled.revision + 1 >= delivered_last, "{canceled:?}");
    assert!(canceled.revision < last);
    // Resuming at the revision after CANCELED replays the missed events from the history, then
    // continues live: every write appears exactly once, in order.
    let mut resumed = watch_from(&mut client, "/big/", true, true, canceled.revision + 1).await;
    assert!(write_ok(&mut client, insert("/big/live", "after")).await);
    let mut replayed = Vec::new();
    let live = loop {
        let event = next_change(&mut resumed).await;
        assert_eq!(event.event_type(), WatchEventType::Put, "{event:?}");
        if text(&event.key) == "/big/live" {
            break event;
        }
        replayed.push(event.revision);
    };
    let mut all = revisions.into_iter().filter(|revision| *revision <= canceled.revision).collect::<Vec<_>>();
    all.extend(replayed);
    all.push(live.revision);
    assert_eq!(all, ((all[0])..=live.revision).collect::<Vec<_>>(), "no gap, no duplicate");
    assert_eq!(all.len(), 41, "the 40 writes and the live one");
    // A start in the future skips what comes before it.
    let mut future = watch_from(&mut client, "/big/", true, false, live.revision + 2).await;
    assert!(write_ok(&mut client, insert("/big/skipped", "x")).await);
    assert!(write_ok(&mut client, insert("/big/seen", "y")).await);
    let first = next_change(&mut future).await;
    assert_eq!((text(&first.key), first.revision), ("/big/seen", live.revision + 2));
    for (_, server) in servers {
        server.shutdown().await.expect("clean shutdown");
    }
}

/// Waits for the next membership snapshot that satisfies `wanted`; indexes must increase.
async fn next_membership(
    stream: &mut Streaming<MembershipSnapshot>,
    last_index: &mut u64,
    wanted: impl Fn(&MembershipSnapshot) -> bool,
) -> MembershipSnapshot {
    loop {
        let snapshot = next(stream).await.expect("the membership stream stays open");
        assert!(snapshot.committed_index > *last_index, "committed_index increases: {snapshot:?}");
        *last_index = snapshot.committed_index;
        if wanted(&snapshot) {
            return snapshot;
        }
    }
}

fn change(change: Change) -> MembershipChange {
    MembershipChange { change: Some(change) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_status_transfer_and_graceful_shutdown() {
    let mut servers = start_cluster(3, |_| {}).await;
    let leader = ready_leader(&servers).await;
    let follower = *servers.keys().find(|id| **id != leader).expect("a follower");
    let mut admin = servers[&leader].admin().await;

    let mut client = servers[&follower].client().await;
    let mut membership =
        client.watch_membership(WatchMembershipRequest { client_id: 7 }).await.expect("membership watch").into_inner();
    let first = next(&mut membership).await.expect("the current membership");
    assert_eq!((first.members.clone(), first.learners.clone()), (vec![1, 2, 3], vec![]));
    let mut last_index = first.committed_index;

    // Refusals with precise codes.
    let (listener4, addr4) = listener().await;
    let add = |status: NodeStatus, id: NodeId| {
        change(Change::AddNode(AddNode { node_id: id, address: addr4.to_string(), status: status as i32 }))
    };
    let active = admin.change_membership(add(NodeStatus::Active, 4)).await.expect("call").into_inner();
    assert_eq!(active.error(), ErrorCode::InvalidArgument);
    assert!(active.metadata.is_some_and(|m| m.message.contains("nodes join as learners")));
    let existing = admin.change_membership(add(NodeStatus::Promotable, 2)).await.expect("call").into_inner();
    assert_eq!(existing.error(), ErrorCode::MemberAlreadyExists);
    let unknown = admin.change_membership(change(Change::RemoveNode(RemoveNode { node_id: 9 }))).await;
    assert_eq!(unknown.expect("call").into_inner().error(), ErrorCode::UnknownMember);
    let mut follower_admin = servers[&follower].admin().await;
    let redirected = follower_admin.change_membership(add(NodeStatus::Promotable, 4)).await.expect("call").into_inner();
    assert_eq!(redirected.error(), ErrorCode::NotLeader);
    assert_eq!(redirected.metadata.and_then(|m| m.leader_hint).map(|h| h.leader_id), Some(leader));

    // A fourth node starts with an empty membership (it is not among the initial members, which
    // only tell it where the cluster is) and is added as a learner, then promoted.
    let cluster: BTreeMap<NodeId, String> = servers.iter().map(|(id, s)| (*id, s.addr.to_string())).collect();
    let config4 = server_config(4, &cluster, addr4);
    servers.insert(4, TestServer::start(config4, listener4));
    let added = admin.change_membership(add(NodeStatus::Promotable, 4)).await.expect("call").into_inner();
    assert_eq!(added.error(), ErrorCode::Success, "{:?}", added.metadata);
    assert_eq!((added.voters.clone(), added.learners.clone()), (vec![1, 2, 3], vec![4]));
    assert_eq!(added.addresses.get(&4), Some(&addr4.to_string()));
    let with_learner = next_membership(&mut membership, &mut last_index, |s| s.learners == [4]).await;
    assert_eq!(with_learner.members, vec![1, 2, 3]);

    let promote = change(Change::Promote(PromoteLearner { node_id: 4, status: NodeStatus::Active as i32 }));
    let promoted = eventually("the learner's promotion", || {
        let (mut admin, promote) = (admin.clone(), promote.clone());
        async move {
            let response = admin.change_membership(promote).await.ok()?.into_inner();
            match response.error() {
                ErrorCode::Success => Some(response),
                ErrorCode::Unavailable | ErrorCode::MembershipChangeInProgress => None,
                other => panic!("promotion refused with {other:?}: {:?}", response.metadata),
            }
        }
    })
    .await;
    assert_eq!((promoted.voters, promoted.learners), (vec![1, 2, 3, 4], vec![]));
    let all_voters = next_membership(&mut membership, &mut last_index, |s| s.members == [1, 2, 3, 4]).await;
    assert!(all_voters.learners.is_empty());

    // The new node learns the configuration too.
    let admin4 = servers[&4].admin().await;
    eventually("node 4 to see itself a voter", || {
        let mut admin4 = admin4.clone();
        async move {
            let response = admin4.get_membership(StatusRequest {}).await.ok()?.into_inner();
            (response.voters == [1, 2, 3, 4]).then_some(())
        }
    })
    .await;

    // The leader's status shows every peer's progress.
    let mut client_on_leader = servers[&leader].client().await;
    assert!(write_ok(&mut client_on_leader, insert("/m/after-promotion", "1")).await);
    let leader_status = eventually("every peer caught up", || {
        let mut admin = admin.clone();
        async move {
            let s = status(&mut admin).await?;
            (s.peers.len() == 3 && s.peers.iter().all(|p| p.match_index == s.last_log_index)).then_some(s)
        }
    })
    .await;
    assert_eq!(leader_status.role(), NodeRole::Leader);
    assert_eq!(leader_status.voters, vec![1, 2, 3, 4]);
    assert!(leader_status.has_quorum);
    let hint = leader_status.leader.clone().expect("the leader names itself");
    assert_eq!((hint.leader_id, hint.address), (leader, servers[&leader].addr.to_string()));
    for peer in &leader_status.peers {
        assert_eq!(peer.address, servers[&peer.id].addr.to_string());
        assert!(peer.last_contact_ms_ago.is_some(), "{peer:?}");
    }
    let follower_status = status(&mut follower_admin).await.expect("status");
    assert_eq!(follower_status.role(), NodeRole::Follower);
    assert!(follower_status.peers.is_empty());

    // Leadership moves on request.
    let target = *servers.keys().find(|id| **id != leader && **id != follower).expect("a target");
    let moved = admin.transfer_leadership(TransferLeadershipRequest { target }).await.expect("call").into_inner();
    assert_eq!(moved.error(), ErrorCode::Success, "{:?}", moved.metadata);
    let mut target_admin = servers[&target].admin().await;
    let target_status = eventually("the target to lead", || {
        let mut admin = target_admin.clone();
        async move { status(&mut admin).await.filter(|s| s.role() == NodeRole::Leader) }
    })
    .await;
    assert_eq!(target_status.id, target);
    let unknown_target = target_admin.transfer_leadership(TransferLeadershipRequest { target: 9 }).await;
    assert_eq!(unknown_target.expect("call").into_inner().error(), ErrorCode::UnknownMember);

    // Graceful shutdown of the leader hands leadership over before the server exits: another
    // node leads at once, well before an election timeout could have elapsed.
    let old_term = target_status.term;
    let stopping = servers.remove(&target).expect("the leader's server");
    stopping.shutdown().await.expect("clean shutdown");
    let exited = Instant::now();
    let mut others = Vec::new();
    for (id, server) in &servers {
        others.push((*id, server.admin().await));
    }
    let (new_leader, new_status) = eventually("a new leader", || {
        let others = others.clone();
        async move {
            for (id, mut admin) in others {
                if let Some(s) = status(&mut admin).await.filter(|s| s.role() == NodeRole::Leader) {
                    return Some((id, s));
                }
            }
            None
        }
    })
    .await;
    let after = exited.elapsed();
    assert!(new_status.term > old_term);
    assert!(
        after < Duration::from_millis(ELECTION_MS_MIN / 2),
        "node {new_leader} led only {after:?} after the old leader exited: no hand-over"
    );
    let mut on_new_leader = servers[&new_leader].client().await;
    let written = eventually("a write on the new leader", || {
        let mut client = on_new_leader.clone();
        async move {
            let response = write(&mut client, insert("/m/after-shutdown", "1")).await;
            (response.error() == ErrorCode::Success).then_some(())
        }
    });
    written.await;
    assert_eq!(pairs(&read(&mut on_new_leader, &["/m/after-shutdown"], None).await).len(), 1);

    for (_, server) in servers {
        server.shutdown().await.expect("clean shutdown");
    }
}

/// Starts `size` servers on fjall data directories under `dir`, on fresh ephemeral ports (the
/// stored membership keeps the first addresses: restarts reuse them when they are free).
/// Retries briefly while a directory is still locked by the previous run's storage worker.
async fn start_durable(
    size: NodeId,
    dir: &std::path::Path,
    addresses: &mut BTreeMap<NodeId, SocketAddr>,
) -> BTreeMap<NodeId, TestServer> {
    let mut listeners = BTreeMap::new();
    for id in 1..=size {
        let listener = match addresses.get(&id) {
            Some(addr) => bind_again(*addr).await,
            None => listener().await.0,
        };
        addresses.insert(id, listener.local_addr().expect("bound address"));
        listeners.insert(id, listener);
    }
    let members: BTreeMap<NodeId, String> = addresses.iter().map(|(id, a)| (*id, a.to_string())).collect();
    let mut servers = BTreeMap::new();
    for (id, mut listener) in listeners {
        let deadline = Instant::now() + WAIT;
        let server = loop {
            let mut config = server_config(id, &members, addresses[&id]);
            config.data_dir = Some(dir.join(format!("node-{id}")));
            let server = TestServer::start(config, listener);
            sleep(Duration::from_millis(50)).await;
            if !server.task.is_finished() {
                break server;
            }
            let error = server.shutdown().await.expect_err("it stopped on its own");
            assert!(matches!(error, ServerError::Storage(_)), "{error}");
            assert!(Instant::now() < deadline, "the data directory stays locked: {error}");
            listener = bind_again(addresses[&id]).await;
        };
        servers.insert(id, server);
    }
    servers
}

/// A listener on `addr` again, retrying while the port is still held.
async fn bind_again(addr: SocketAddr) -> TcpListener {
    eventually("the port to be free", || async move { TcpListener::bind(addr).await.ok() }).await
}

/// Writes, stops every server, restarts them on the same data directories, and reads.
async fn restart_keeps_data(size: NodeId) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut addresses = BTreeMap::new();
    let servers = start_durable(size, dir.path(), &mut addresses).await;
    let leader = ready_leader(&servers).await;
    let mut client = servers[&leader].client().await;
    assert!(write_ok(&mut client, insert("/d/kept", "yes")).await);
    assert!(write_ok(&mut client, insert("/d/also", "kept")).await);
    for (_, server) in servers {
        server.shutdown().await.expect("clean shutdown");
    }

    let servers = start_durable(size, dir.path(), &mut addresses).await;
    let leader = ready_leader(&servers).await;
    for id in servers.keys() {
        let mut client = servers[id].client().await;
        let policy = if *id == leader { None } else { Some(ReadConsistencyPolicy::LinearizableRead) };
        let values = pairs(&read(&mut client, &["/d/kept", "/d/also"], policy).await);
        assert_eq!(values, vec![pair("/d/kept", "yes"), pair("/d/also", "kept")], "node {id}");
    }
    for (_, server) in servers {
        server.shutdown().await.expect("clean shutdown");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_cluster_keeps_its_data_across_a_full_restart() {
    restart_keeps_data(3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_single_node_server_keeps_its_data_across_a_restart() {
    restart_keeps_data(1).await;
}
