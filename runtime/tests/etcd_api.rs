//! The etcd v3 API over gRPC with the generated etcd clients (plain build only): what etcdctl
//! cannot exercise, such as several watches on one stream, filters, explicit and duplicate
//! watch ids, progress requests, cancel, the compacted answer, nested transactions, raising an
//! alarm (etcdctl can only list and disarm them), MemberUpdate's errors, the HTTP `/health` check,
//! and the gRPC health service.
#![cfg(not(madsim))]

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::StreamExt;
use keel::proto::etcdserverpb::alarm_request::AlarmAction;
use keel::proto::etcdserverpb::cluster_client::ClusterClient;
use keel::proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use keel::proto::etcdserverpb::kv_client::KvClient;
use keel::proto::etcdserverpb::lease_client::LeaseClient;
use keel::proto::etcdserverpb::maintenance_client::MaintenanceClient;
use keel::proto::etcdserverpb::request_op::Request as Op;
use keel::proto::etcdserverpb::response_op::Response as OpAnswer;
use keel::proto::etcdserverpb::watch_client::WatchClient;
use keel::proto::etcdserverpb::watch_create_request::FilterType;
use keel::proto::etcdserverpb::watch_request::RequestUnion;
use keel::proto::etcdserverpb::{
    AlarmMember, AlarmRequest, AlarmType, CompactionRequest, Compare, DeleteRangeRequest, LeaseGrantRequest,
    MemberAddRequest, MemberListRequest, MemberUpdateRequest, PutRequest, RangeRequest, RequestOp, StatusRequest,
    TxnRequest, WatchCancelRequest, WatchCreateRequest, WatchProgressRequest, WatchRequest, WatchResponse,
};
use keel::proto::health::health_check_response::ServingStatus;
use keel::proto::health::health_client::HealthClient;
use keel::proto::health::{HealthCheckRequest, HealthCheckResponse};
use keel::proto::mvccpb::event::EventType;
use keel_runtime::embedded::EmbeddedNode;
use keel_runtime::node::NodeConfig;
use keel_runtime::server::ServerConfig;
use tokio::sync::mpsc;
use tonic::transport::Channel;

/// A single in-memory node, its address, and a channel to it once it leads.
async fn node() -> (EmbeddedNode, Channel) {
    node_with(|_| {}).await
}

/// [`node`], configured further by `tweak`.
async fn node_with(tweak: impl FnOnce(&mut NodeConfig)) -> (EmbeddedNode, Channel) {
    let (node, channel, _) = node_at(tweak).await;
    (node, channel)
}

/// [`node_with`], with the node's address as well.
async fn node_at(tweak: impl FnOnce(&mut NodeConfig)) -> (EmbeddedNode, Channel, String) {
    let address = free_address();
    let mut node = NodeConfig::new(1, BTreeMap::from([(1, address.clone())]));
    tweak(&mut node);
    node.raft.election_timeout_ms_min = 200;
    node.raft.election_timeout_ms_max = 400;
    node.raft.heartbeat_interval_ms = 50;
    let config = ServerConfig::new(node, address.parse().expect("an address"));
    let node = EmbeddedNode::start(config).await.expect("the node starts");
    let channel = Channel::from_shared(format!("http://{address}")).expect("a URI").connect_lazy();
    let mut kv = KvClient::new(channel.clone());
    for _ in 0..200 {
        if kv.put(put("/ready", "1")).await.is_ok() {
            return (node, channel, address);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the node never took a write");
}

fn free_address() -> String {
    std::net::TcpListener::bind("127.0.0.1:0").expect("a port").local_addr().expect("bound").to_string()
}

fn put(key: &str, value: &str) -> PutRequest {
    PutRequest { key: key.as_bytes().to_vec().into(), value: value.as_bytes().to_vec().into(), ..Default::default() }
}

fn create(key: &str, range_end: &str, f: impl FnOnce(&mut WatchCreateRequest)) -> WatchRequest {
    let mut create = WatchCreateRequest {
        key: key.as_bytes().to_vec().into(),
        range_end: range_end.as_bytes().to_vec().into(),
        ..Default::default()
    };
    f(&mut create);
    WatchRequest { request_union: Some(RequestUnion::CreateRequest(create)) }
}

/// A watch stream: the sender of its requests and the stream of its responses.
async fn watch_stream(channel: &Channel) -> (mpsc::Sender<WatchRequest>, tonic::Streaming<WatchResponse>) {
    let (sender, receiver) = mpsc::channel(16);
    let requests = futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|request| (request, receiver))
    });
    let responses = WatchClient::new(channel.clone()).watch(requests).await.expect("the watch opens").into_inner();
    (sender, responses)
}

async fn next(responses: &mut tonic::Streaming<WatchResponse>) -> WatchResponse {
    let next = tokio::time::timeout(Duration::from_secs(10), responses.next()).await.expect("a response in time");
    next.expect("the stream stays open").expect("a response, not an error")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_watches_share_one_stream_with_filters_ids_progress_and_cancel() {
    let (_node, channel) = node().await;
    let mut kv = KvClient::new(channel.clone());
    let (requests, mut responses) = watch_stream(&channel).await;
    requests.send(create("a/", "a0", |_| {})).await.expect("sent");
    let first = next(&mut responses).await;
    assert!(first.created && first.watch_id == 0, "{first:?}");
    requests
        .send(create("a/", "a0", |c| (c.watch_id, c.filters) = (7, vec![FilterType::Nodelete as i32])))
        .await
        .expect("sent");
    let second = next(&mut responses).await;
    assert!(second.created && second.watch_id == 7, "{second:?}");
    requests.send(create("x", "", |c| c.watch_id = 7)).await.expect("sent");
    let duplicate = next(&mut responses).await;
    assert!(duplicate.canceled && duplicate.cancel_reason.contains("duplicate"), "{duplicate:?}");

    let revision = kv.put(put("a/1", "v")).await.expect("put").into_inner().header.expect("a header").revision;
    kv.delete_range(DeleteRangeRequest { key: "a/1".into(), ..Default::default() }).await.expect("delete");
    let mut seen: BTreeMap<i64, Vec<(i32, i64)>> = BTreeMap::new();
    while seen.values().map(Vec::len).sum::<usize>() < 3 {
        let response = next(&mut responses).await;
        for event in response.events {
            seen.entry(response.watch_id).or_default().push((event.r#type, event.kv.expect("a kv").mod_revision));
        }
    }
    let (put_event, delete_event) = (EventType::Put as i32, EventType::Delete as i32);
    assert_eq!(seen[&0], vec![(put_event, revision), (delete_event, revision + 1)]);
    assert_eq!(seen[&7], vec![(put_event, revision)], "NODELETE drops the delete");

    requests
        .send(WatchRequest { request_union: Some(RequestUnion::ProgressRequest(WatchProgressRequest {})) })
        .await
        .expect("sent");
    let progress = next(&mut responses).await;
    assert_eq!((progress.watch_id, progress.header.expect("a header").revision), (-1, revision + 1));
    requests
        .send(WatchRequest { request_union: Some(RequestUnion::CancelRequest(WatchCancelRequest { watch_id: 0 })) })
        .await
        .expect("sent");
    let canceled = next(&mut responses).await;
    assert!(canceled.canceled && canceled.watch_id == 0, "{canceled:?}");
    kv.put(put("a/2", "w")).await.expect("put");
    let after = next(&mut responses).await;
    assert_eq!(after.watch_id, 7, "only the remaining watch reports");
    drop(requests); // the client closes its side of the stream and keeps reading
    kv.put(put("a/3", "z")).await.expect("put");
    let half_closed = next(&mut responses).await;
    assert_eq!((half_closed.watch_id, &half_closed.events[0].kv.as_ref().expect("a kv").key[..]), (7, &b"a/3"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_from_a_compacted_revision_gets_the_compacted_answer() {
    let (_node, channel) = node().await;
    let mut kv = KvClient::new(channel.clone());
    for value in ["1", "2", "3"] {
        kv.put(put("/c", value)).await.expect("put");
    }
    // /ready made revision 2 (an empty store is at 1, as in etcd), the puts of /c 3, 4 and 5.
    kv.compact(CompactionRequest { revision: 4, physical: false }).await.expect("compacted");
    let (requests, mut responses) = watch_stream(&channel).await;
    requests.send(create("/c", "", |c| (c.start_revision, c.prev_kv) = (3, true))).await.expect("sent");
    assert!(next(&mut responses).await.created);
    let compacted = next(&mut responses).await;
    assert!(compacted.canceled && compacted.compact_revision == 4, "{compacted:?}");
    requests.send(create("/c", "", |c| (c.start_revision, c.prev_kv) = (5, true))).await.expect("sent");
    assert!(next(&mut responses).await.created);
    let replayed = next(&mut responses).await;
    let event = &replayed.events[0];
    assert_eq!(event.kv.as_ref().map(|kv| (kv.mod_revision, kv.version)), Some((5, 3)));
    let prev = event.prev_kv.as_ref().expect("the previous key-value");
    assert_eq!((&prev.value[..], prev.mod_revision, prev.version), (&b"2"[..], 4, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_transactions_and_ranged_compares_over_grpc() {
    let (_node, channel) = node().await;
    let mut kv = KvClient::new(channel);
    kv.put(put("p/1", "x")).await.expect("put");
    kv.put(put("p/2", "x")).await.expect("put");
    let every_x = Compare {
        result: CompareResult::Equal as i32,
        target: CompareTarget::Value as i32,
        key: "p/".into(),
        range_end: "p0".into(),
        target_union: Some(TargetUnion::Value("x".into())),
    };
    let read = RequestOp {
        request: Some(Op::RequestRange(RangeRequest {
            key: "p/".into(),
            range_end: "p0".into(),
            count_only: true,
            ..Default::default()
        })),
    };
    let inner = TxnRequest { success: vec![read], ..Default::default() };
    let txn = TxnRequest {
        compare: vec![every_x],
        success: vec![
            RequestOp { request: Some(Op::RequestPut(put("p/3", "y"))) },
            RequestOp { request: Some(Op::RequestTxn(inner)) },
        ],
        failure: vec![],
    };
    let answer = kv.txn(txn.clone()).await.expect("txn").into_inner();
    assert!(answer.succeeded);
    let Some(OpAnswer::ResponseTxn(nested)) = &answer.responses[1].response else { panic!("{answer:?}") };
    let Some(OpAnswer::ResponseRange(range)) = &nested.responses[0].response else { panic!("{nested:?}") };
    assert_eq!((range.count, range.kvs.len()), (3, 0), "the nested read sees the put; count_only");
    assert!(!kv.txn(txn).await.expect("txn").into_inner().succeeded, "p/3 is y now: not every key is x");
    let too_many = TxnRequest {
        success: vec![RequestOp { request: Some(Op::RequestPut(put("k", "v"))) }; 200],
        ..Default::default()
    };
    let mut deep =
        TxnRequest { success: vec![RequestOp { request: Some(Op::RequestPut(put("d", "v"))) }], ..Default::default() };
    for _ in 0..40 {
        deep = TxnRequest { success: vec![RequestOp { request: Some(Op::RequestTxn(deep)) }], ..Default::default() };
    }
    let refused = kv.txn(deep).await.expect_err("nested too deep");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    let status = kv.txn(too_many).await.expect_err("refused");
    assert_eq!(
        (status.code(), status.message()),
        (tonic::Code::InvalidArgument, "etcdserver: too many operations in txn request")
    );
}

fn alarm(action: AlarmAction, member_id: u64) -> AlarmRequest {
    AlarmRequest { action: action as i32, member_id, alarm: AlarmType::Nospace as i32 }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nospace_alarm_refuses_growth_until_it_is_cleared() {
    let (_node, channel) = node().await;
    let (mut kv, mut maintenance) = (KvClient::new(channel.clone()), MaintenanceClient::new(channel.clone()));
    kv.put(put("/n/a", "1")).await.expect("put");
    let raised = maintenance.alarm(alarm(AlarmAction::Activate, 1)).await.expect("raised").into_inner();
    let nospace = AlarmMember { member_id: 1, alarm: AlarmType::Nospace as i32 };
    assert_eq!(raised.alarms, vec![nospace]);
    let listed = maintenance.alarm(alarm(AlarmAction::Get, 0)).await.expect("listed").into_inner();
    assert_eq!(listed.alarms, vec![nospace]);
    let status = maintenance.status(StatusRequest {}).await.expect("a status").into_inner();
    assert_eq!(status.errors, vec!["memberID:1 alarm:NOSPACE ".to_string()], "raised alarms, as etcd lists them");
    let exceeded = |status: tonic::Status| (status.code(), status.message().to_string());
    let expected = (tonic::Code::ResourceExhausted, "etcdserver: mvcc: database space exceeded".to_string());
    assert_eq!(exceeded(kv.put(put("/n/b", "2")).await.expect_err("refused")), expected);
    let put_in_txn = TxnRequest {
        success: vec![RequestOp { request: Some(Op::RequestPut(put("/n/c", "3"))) }],
        ..Default::default()
    };
    assert_eq!(exceeded(kv.txn(put_in_txn).await.expect_err("refused")), expected);
    let grant = LeaseClient::new(channel.clone()).lease_grant(LeaseGrantRequest { ttl: 60, id: 0 }).await;
    assert_eq!(exceeded(grant.expect_err("refused")), expected);
    let read = kv.range(RangeRequest { key: "/n/a".into(), ..Default::default() }).await.expect("reads work");
    assert_eq!(read.into_inner().count, 1);
    let delete = DeleteRangeRequest { key: "/n/a".into(), ..Default::default() };
    assert_eq!(kv.delete_range(delete).await.expect("deletes work").into_inner().deleted, 1);
    let cleared = maintenance.alarm(alarm(AlarmAction::Deactivate, 1)).await.expect("cleared").into_inner();
    assert_eq!(cleared.alarms, vec![nospace]);
    let again = maintenance.alarm(alarm(AlarmAction::Deactivate, 1)).await.expect("nothing to clear").into_inner();
    assert!(again.alarms.is_empty());
    assert!(maintenance.alarm(alarm(AlarmAction::Get, 0)).await.expect("listed").into_inner().alarms.is_empty());
    assert!(maintenance.status(StatusRequest {}).await.expect("a status").into_inner().errors.is_empty());
    kv.put(put("/n/b", "2")).await.expect("writes work again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_its_quota_the_leader_raises_nospace_which_stays_cleared_once_space_is_freed() {
    let (_node, channel) = node_with(|node| (node.kv_quota_bytes, node.expire_interval_ms) = (4_000, 50)).await;
    let (mut kv, mut maintenance) = (KvClient::new(channel.clone()), MaintenanceClient::new(channel));
    let big = "x".repeat(1_000);
    // About 1 KB of data each: three stay under the quota, the fourth goes past it.
    for i in 0..4 {
        kv.put(put(&format!("/q/{i}"), &big)).await.expect("within the quota when proposed");
    }
    let nospace = AlarmMember { member_id: 1, alarm: AlarmType::Nospace as i32 };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while maintenance.alarm(alarm(AlarmAction::Get, 0)).await.expect("listed").into_inner().alarms != vec![nospace] {
        assert!(tokio::time::Instant::now() < deadline, "the quota never raised NOSPACE");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let refused = kv.put(put("/q/more", "1")).await.expect_err("out of space");
    assert_eq!(refused.message(), "etcdserver: mvcc: database space exceeded");
    // Freeing space: delete, compact the history away, then disarm.
    let deleted =
        kv.delete_range(DeleteRangeRequest { key: "/q/".into(), range_end: "/q0".into(), ..Default::default() });
    let revision = deleted.await.expect("deletes work").into_inner().header.expect("a header").revision;
    kv.compact(CompactionRequest { revision, physical: false }).await.expect("compacted");
    maintenance.alarm(alarm(AlarmAction::Deactivate, 1)).await.expect("cleared");
    tokio::time::sleep(Duration::from_millis(300)).await; // several quota checks
    assert!(maintenance.alarm(alarm(AlarmAction::Get, 0)).await.expect("listed").into_inner().alarms.is_empty());
    kv.put(put("/q/more", "1")).await.expect("writes work again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_update_moves_a_member_and_refuses_unknown_ids_and_taken_urls() {
    let (_node, channel) = node().await;
    let mut cluster = ClusterClient::new(channel);
    let url = |port: u16| format!("http://127.0.0.1:{port}");
    let add = MemberAddRequest { peer_ur_ls: vec![url(1)], is_learner: true };
    let added = cluster.member_add(add.clone()).await.expect("a learner added").into_inner();
    let learner = added.member.expect("the new member").id;
    let update = |id: u64, port: u16| MemberUpdateRequest { id, peer_ur_ls: vec![url(port)] };
    let updated = cluster.member_update(update(learner, 2)).await.expect("updated").into_inner();
    let moved = updated.members.iter().find(|member| member.id == learner).expect("still a member");
    assert_eq!((moved.peer_ur_ls.clone(), moved.is_learner), (vec![url(2)], true));
    let listed = cluster.member_list(MemberListRequest::default()).await.expect("listed").into_inner();
    assert_eq!(listed.members, updated.members);
    let unknown = cluster.member_update(update(99, 3)).await.expect_err("no member 99");
    assert_eq!((unknown.code(), unknown.message()), (tonic::Code::NotFound, "etcdserver: member not found"));
    let taken = cluster.member_update(update(1, 2)).await.expect_err("the learner's URL");
    assert_eq!(
        (taken.code(), taken.message()),
        (tonic::Code::FailedPrecondition, "etcdserver: Peer URLs already exists")
    );
    let again = MemberAddRequest { peer_ur_ls: vec![url(2)], is_learner: true };
    assert_eq!(cluster.member_add(again).await.expect_err("taken").message(), "etcdserver: Peer URLs already exists");
    let bad = MemberUpdateRequest { id: learner, peer_ur_ls: vec![] };
    assert_eq!(cluster.member_update(bad).await.expect_err("no URL").code(), tonic::Code::InvalidArgument);
}

/// An HTTP/1.1 request to the node's client address: the status code and the body.
async fn http(address: &str, method: &str, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address).await.expect("the client address listens");
    let request = format!("{method} {path} HTTP/1.1\r\nHost: keel\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("sent");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.expect("an answer");
    let status = answer.split(' ').nth(1).and_then(|code| code.parse().ok()).expect("a status line");
    let body = answer.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default();
    (status, body)
}

const HEALTHY: &str = r#"{"health":"true","reason":""}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_answers_like_etcd_and_counts_alarms_unless_excluded() {
    let (_node, channel, address) = node_at(|_| {}).await;
    assert_eq!(http(&address, "GET", "/health").await, (200, HEALTHY.to_owned()));
    assert_eq!(http(&address, "POST", "/health").await.0, 405);
    let version = (200, r#"{"etcdserver":"3.4.0","etcdcluster":"3.4.0"}"#.to_owned());
    assert_eq!(http(&address, "GET", "/version").await, version);
    let mut maintenance = MaintenanceClient::new(channel.clone());
    maintenance.alarm(alarm(AlarmAction::Activate, 1)).await.expect("raised");
    let nospace = (503, r#"{"health":"false","reason":"ALARM NOSPACE"}"#.to_owned());
    assert_eq!(http(&address, "GET", "/health").await, nospace);
    assert_eq!(http(&address, "GET", "/health?serializable=true").await, nospace);
    assert_eq!(http(&address, "GET", "/health?exclude=CORRUPT").await, nospace);
    assert_eq!(http(&address, "GET", "/health?exclude=NOSPACE").await, (200, HEALTHY.to_owned()));
    maintenance.alarm(alarm(AlarmAction::Deactivate, 1)).await.expect("cleared");
    assert_eq!(http(&address, "GET", "/health").await, (200, HEALTHY.to_owned()));
    // gRPC on the same address is unaffected by the HTTP/1 route.
    KvClient::new(channel).put(put("/after", "1")).await.expect("gRPC still served");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_without_a_quorum_is_no_leader_unless_serializable() {
    // Member 2 never starts, so member 1 can never be elected.
    let address = free_address();
    let members = BTreeMap::from([(1, address.clone()), (2, free_address())]);
    let mut node = NodeConfig::new(1, members);
    node.raft.election_timeout_ms_min = 100;
    node.raft.election_timeout_ms_max = 200;
    node.raft.heartbeat_interval_ms = 25;
    let config = ServerConfig::new(node, address.parse().expect("an address"));
    let _node = EmbeddedNode::start(config).await.expect("the node starts");
    let no_leader = (503, r#"{"health":"false","reason":"RAFT NO LEADER"}"#.to_owned());
    // Through several election timeouts: never healthy.
    for _ in 0..5 {
        assert_eq!(http(&address, "GET", "/health").await, no_leader);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(http(&address, "GET", "/health?serializable=true").await, (200, HEALTHY.to_owned()));
    let channel = Channel::from_shared(format!("http://{address}")).expect("a URI").connect_lazy();
    let answer = HealthClient::new(channel).check(health_of("")).await.expect("answered").into_inner();
    assert_eq!(answer.status(), ServingStatus::NotServing, "gRPC health agrees");
}

fn health_of(service: &str) -> HealthCheckRequest {
    HealthCheckRequest { service: service.to_owned() }
}

/// The next status on a health `Watch` stream, within a few check intervals.
async fn next_status(stream: &mut tonic::Streaming<HealthCheckResponse>) -> ServingStatus {
    let message = tokio::time::timeout(Duration::from_secs(5), stream.message()).await.expect("a status in time");
    message.expect("no error").expect("the stream stays open").status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_health_follows_the_health_check_and_watch_sends_each_change() {
    let (node, channel) = node().await;
    let mut health = HealthClient::new(channel.clone());
    for service in ["", "etcdserverpb.KV", "keel.client.RaftClientService"] {
        let answer = health.check(health_of(service)).await.expect("a known service").into_inner();
        assert_eq!(answer.status(), ServingStatus::Serving, "{service:?}");
    }
    let unknown = health.check(health_of("no.such.Service")).await.expect_err("an unknown service");
    assert_eq!(unknown.code(), tonic::Code::NotFound);

    let mut watch = health.watch(health_of("")).await.expect("a watch").into_inner();
    assert_eq!(next_status(&mut watch).await, ServingStatus::Serving, "the status at once");
    let mut maintenance = MaintenanceClient::new(channel);
    maintenance.alarm(alarm(AlarmAction::Activate, 1)).await.expect("raised");
    assert_eq!(next_status(&mut watch).await, ServingStatus::NotServing, "an alarm is a change");
    let answer = health.check(health_of("")).await.unwrap().into_inner();
    assert_eq!(answer.status(), ServingStatus::NotServing);
    maintenance.alarm(alarm(AlarmAction::Deactivate, 1)).await.expect("cleared");
    assert_eq!(next_status(&mut watch).await, ServingStatus::Serving, "cleared: serving again");

    // An unknown service: SERVICE_UNKNOWN, and the stream stays open, as the protocol says.
    let mut unknown = health.watch(health_of("no.such.Service")).await.expect("a watch").into_inner();
    assert_eq!(next_status(&mut unknown).await, ServingStatus::ServiceUnknown);
    let quiet = tokio::time::timeout(Duration::from_millis(300), unknown.message()).await;
    assert!(quiet.is_err(), "nothing more, and not ended: {quiet:?}");

    // Shutting down ends the watch streams cleanly instead of leaving them to be cut off.
    let stopping = tokio::spawn(node.shutdown());
    let ended = tokio::time::timeout(Duration::from_secs(20), watch.message()).await.expect("the stream ends");
    assert!(matches!(ended, Ok(None)), "a clean end: {ended:?}");
    stopping.await.unwrap().expect("a clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ignore_value_with_a_lease_or_with_ignore_lease_over_grpc() {
    let (_node, channel) = node().await;
    let (mut kv, mut leases) = (KvClient::new(channel.clone()), LeaseClient::new(channel));
    let first = leases.lease_grant(LeaseGrantRequest { ttl: 60, id: 0 }).await.expect("granted").into_inner().id;
    let second = leases.lease_grant(LeaseGrantRequest { ttl: 60, id: 0 }).await.expect("granted").into_inner().id;
    kv.put(PutRequest { lease: first, ..put("/iv", "kept") }).await.expect("put in the first lease");
    let ignore_value = |lease, ignore_lease| PutRequest {
        key: "/iv".into(),
        lease,
        ignore_value: true,
        ignore_lease,
        prev_kv: true,
        ..Default::default()
    };
    let moved = kv.put(ignore_value(second, false)).await.expect("moved to the second lease").into_inner();
    assert_eq!(moved.prev_kv.expect("prev_kv").lease, first);
    let touched = kv.put(ignore_value(0, true)).await.expect("value and lease kept").into_inner();
    assert_eq!(touched.prev_kv.expect("prev_kv").lease, second);
    let read = kv.range(RangeRequest { key: "/iv".into(), ..Default::default() }).await.expect("read").into_inner();
    let now = &read.kvs[0];
    assert_eq!((now.value.as_ref(), now.lease, now.version), (&b"kept"[..], second, 3));
    let missing = PutRequest { key: "/absent".into(), ..ignore_value(0, true) };
    let refused = kv.put(missing).await.expect_err("no such key");
    assert_eq!((refused.code(), refused.message()), (tonic::Code::InvalidArgument, "etcdserver: key not found"));
    // The key left the first lease: revoking it deletes nothing; revoking the second deletes it.
    leases.lease_revoke(keel::proto::etcdserverpb::LeaseRevokeRequest { id: first }).await.expect("revoked");
    assert_eq!(kv.range(RangeRequest { key: "/iv".into(), ..Default::default() }).await.unwrap().into_inner().count, 1);
    leases.lease_revoke(keel::proto::etcdserverpb::LeaseRevokeRequest { id: second }).await.expect("revoked");
    assert_eq!(kv.range(RangeRequest { key: "/iv".into(), ..Default::default() }).await.unwrap().into_inner().count, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_connections_max_are_closed_until_one_ends() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = free_address();
    let mut node = NodeConfig::new(1, BTreeMap::from([(1, address.clone())]));
    node.raft.election_timeout_ms_min = 200;
    node.raft.election_timeout_ms_max = 400;
    node.raft.heartbeat_interval_ms = 50;
    let mut config = ServerConfig::new(node, address.parse().expect("an address"));
    config.connections_max = 2;
    let _node = EmbeddedNode::start(config).await.expect("the node starts");
    // One gRPC connection, which serves, and one idle connection fill both places.
    let channel = Channel::from_shared(format!("http://{address}")).expect("a URI").connect().await.expect("connects");
    let mut kv = KvClient::new(channel);
    let mut served = false;
    for _ in 0..200 {
        if kv.put(put("/c", "1")).await.is_ok() {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(served, "the first connection serves");
    let idle = tokio::net::TcpStream::connect(&address).await.expect("the second connection is accepted");
    tokio::time::sleep(Duration::from_millis(50)).await;
    // A third is closed at once: a request on it gets no answer, only the end of the stream.
    let mut third = tokio::net::TcpStream::connect(&address).await.expect("the kernel accepts it");
    let _ = third.write_all(b"GET /health HTTP/1.1\r\nHost: keel\r\n\r\n").await;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(2), third.read_to_end(&mut answer)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "the third connection was served: {read:?} {answer:?}");
    kv.put(put("/c", "2")).await.expect("the open gRPC connection still serves");
    // Once the idle connection ends, a new one is served.
    drop(idle);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(http(&address, "GET", "/health").await, (200, HEALTHY.to_owned()));
}
