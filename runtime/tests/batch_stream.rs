//! The `Batch` stream of the native API (Keel extension) over real loopback gRPC: answers
//! matched by request id, an error per request, each write its own entry and outcome, the
//! limits on requests per message and in flight with their gRPC status, and the Rust client
//! multiplexing many tasks over it. Plain build only (real sockets).
#![cfg(not(madsim))]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use keel::client::{ClientOptions, Consistency, KeelClient};
use keel::proto::client::batch_request::Request as BatchItem;
use keel::proto::client::client_response::SuccessResult;
use keel::proto::client::raft_client_service_client::RaftClientServiceClient;
use keel::proto::client::write_command::{CompareAndSwap, Insert, Operation};
use keel::proto::client::{
    BatchRequest, BatchRequests, BatchResponse, BatchResponses, ClientReadRequest, ClientWriteRequest,
    ReadConsistencyPolicy, WriteCommand,
};
use keel::proto::error::ErrorCode;
use keel_runtime::node::NodeConfig;
use keel_runtime::server::{serve_with_listener, ServerConfig};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::time::timeout;
use tonic::transport::Channel;
use tonic::{Code, Streaming};

/// Upper bound on any wait; the tests normally finish far sooner.
const WAIT: Duration = Duration::from_secs(20);

/// A one-node cluster (it elects itself) with `tweak` applied; stops when the sender drops.
async fn single_node(tweak: impl Fn(&mut ServerConfig)) -> (SocketAddr, oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback port");
    let addr = listener.local_addr().expect("bound address");
    let members = BTreeMap::from([(1, addr.to_string())]);
    let mut node = NodeConfig::new(1, members);
    node.raft.heartbeat_interval_ms = 30;
    node.raft.election_timeout_ms_min = 300;
    node.raft.election_timeout_ms_max = 600;
    let mut config = ServerConfig::new(node, addr);
    tweak(&mut config);
    config.validate().expect("a valid test configuration");
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(serve_with_listener(config, listener, async move {
        let _ = stopped.await;
    }));
    (addr, stop)
}

/// Options of a client that waits for the node's first election.
fn options(batch_stream: bool) -> ClientOptions {
    ClientOptions { batch_stream, deadline: WAIT, max_attempts: 100, ..ClientOptions::default() }
}

/// Waits until the node accepts writes (its election is over).
async fn wait_for_leader(addr: SocketAddr) {
    let client = KeelClient::new(vec![addr.to_string()], options(false)).expect("valid endpoint");
    client.put("/ready", "yes", None).await.expect("the node elects itself and accepts a write");
}

/// Opens a raw `Batch` stream; requests go in through the returned sender.
async fn open(addr: SocketAddr) -> (mpsc::Sender<BatchRequests>, Streaming<BatchResponses>) {
    let mut client: RaftClientServiceClient<Channel> =
        RaftClientServiceClient::connect(format!("http://{addr}")).await.expect("connect");
    let (sender, receiver) = mpsc::channel(16);
    let outbound = tokio_stream_of(receiver);
    let inbound = client.batch(outbound).await.expect("the stream opens").into_inner();
    (sender, inbound)
}

/// The request side of a call, from a channel.
fn tokio_stream_of(
    receiver: mpsc::Receiver<BatchRequests>,
) -> impl tonic::codegen::tokio_stream::Stream<Item = BatchRequests> {
    futures_util::stream::unfold(
        receiver,
        |mut receiver| async move { receiver.recv().await.map(|item| (item, receiver)) },
    )
}

fn put(id: u64, key: &str, value: &str) -> BatchRequest {
    let insert = Insert { key: Bytes::from(key.to_owned()), value: Bytes::from(value.to_owned()), ttl_secs: 0 };
    write(id, Operation::Insert(insert))
}

fn write(id: u64, operation: Operation) -> BatchRequest {
    let command = Some(WriteCommand { operation: Some(operation) });
    BatchRequest { request_id: id, request: Some(BatchItem::Write(ClientWriteRequest { client_id: 9, command })) }
}

fn read(id: u64, key: &str) -> BatchRequest {
    let read = ClientReadRequest {
        client_id: 9,
        keys: vec![Bytes::from(key.to_owned())],
        consistency_policy: Some(ReadConsistencyPolicy::LinearizableRead as i32),
    };
    BatchRequest { request_id: id, request: Some(BatchItem::Read(read)) }
}

/// Receives answers until `count` have arrived, by request id.
async fn answers(inbound: &mut Streaming<BatchResponses>, count: usize) -> BTreeMap<u64, BatchResponse> {
    let mut found = BTreeMap::new();
    while found.len() < count {
        let message = timeout(WAIT, inbound.message()).await.expect("answers in time").expect("no error");
        for answer in message.expect("the stream stays open").responses {
            assert!(found.insert(answer.request_id, answer).is_none(), "each request is answered once");
        }
    }
    found
}

fn code(answer: &BatchResponse) -> ErrorCode {
    ErrorCode::try_from(answer.response.as_ref().expect("a response").error).expect("a known code")
}

fn read_value(answer: &BatchResponse) -> Vec<String> {
    match answer.response.as_ref().and_then(|response| response.success_result.clone()) {
        Some(SuccessResult::ReadData(data)) => {
            data.results.iter().map(|result| String::from_utf8_lossy(&result.value).into_owned()).collect()
        }
        other => panic!("not read data: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_are_matched_by_request_id_with_an_outcome_per_request() {
    let (addr, _stop) = single_node(|_| {}).await;
    wait_for_leader(addr).await;
    let (sender, mut inbound) = open(addr).await;
    // Ids need not be in order; each write is its own entry, each error its own answer.
    let empty_key = write(30, Operation::Insert(Insert { key: Bytes::new(), value: Bytes::from("v"), ttl_secs: 0 }));
    let swap = |id, expected: &str| {
        write(
            id,
            Operation::CompareAndSwap(CompareAndSwap {
                key: Bytes::from("/b/1"),
                expected_value: Some(Bytes::from(expected.to_owned())),
                new_value: Bytes::from("swapped"),
            }),
        )
    };
    let requests =
        vec![put(7, "/b/1", "one"), put(3, "/b/2", "two"), empty_key, BatchRequest { request_id: 31, request: None }];
    sender.send(BatchRequests { requests }).await.expect("send");
    let first = answers(&mut inbound, 4).await;
    assert_eq!(first.keys().copied().collect::<Vec<_>>(), [3, 7, 30, 31]);
    assert_eq!(code(&first[&7]), ErrorCode::Success);
    assert_eq!(code(&first[&3]), ErrorCode::Success);
    assert_eq!(code(&first[&30]), ErrorCode::InvalidArgument, "{:?}", first[&30]);
    assert_eq!(code(&first[&31]), ErrorCode::InvalidArgument, "{:?}", first[&31]);
    // Two compare-and-swaps of the same key in one message: separate entries, separate outcomes.
    sender.send(BatchRequests { requests: vec![swap(40, "one"), swap(41, "one")] }).await.expect("send");
    let swaps = answers(&mut inbound, 2).await;
    let succeeded: Vec<bool> = swaps
        .values()
        .map(|answer| match answer.response.as_ref().and_then(|response| response.success_result.clone()) {
            Some(SuccessResult::WriteResult(result)) => result.succeeded,
            other => panic!("not a write result: {other:?}"),
        })
        .collect();
    assert_eq!(succeeded, [true, false], "the first applied swap wins, the second sees its value");
    sender
        .send(BatchRequests { requests: vec![read(50, "/b/1"), read(51, "/b/2"), read(52, "/b/none")] })
        .await
        .unwrap();
    let reads = answers(&mut inbound, 3).await;
    assert_eq!(read_value(&reads[&50]), ["swapped"]);
    assert_eq!(read_value(&reads[&51]), ["two"]);
    assert!(read_value(&reads[&52]).is_empty(), "a missing key is left out");
    // Half-closing ends the stream normally once everything was answered.
    drop(sender);
    assert!(timeout(WAIT, inbound.message()).await.expect("ends in time").expect("no error").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_above_the_request_limit_ends_the_stream_with_resource_exhausted() {
    let (addr, _stop) = single_node(|config| config.service.batch_requests_max = 3).await;
    wait_for_leader(addr).await;
    let (sender, mut inbound) = open(addr).await;
    sender.send(BatchRequests { requests: vec![put(1, "/l/1", "a")] }).await.unwrap();
    let too_many = (10..14).map(|id| put(id, "/l/refused", "x")).collect();
    sender.send(BatchRequests { requests: too_many }).await.unwrap();
    // The request accepted first is answered; then the status; nothing of the refused message ran.
    let accepted = answers(&mut inbound, 1).await;
    assert_eq!(code(&accepted[&1]), ErrorCode::Success);
    let status = timeout(WAIT, inbound.message()).await.expect("in time").expect_err("the stream ends with a status");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let keel_code = status.metadata().get("keel-error-code").and_then(|value| value.to_str().ok());
    assert_eq!(keel_code, Some("ERROR_CODE_REQUEST_TOO_LARGE"));
    assert!(status.message().contains("above the limit of 3"), "{}", status.message());
    let client = KeelClient::new(vec![addr.to_string()], options(false)).unwrap();
    assert!(client.get(["/l/refused"], Consistency::Linearizable).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_requests_in_flight_end_the_stream_with_overloaded() {
    let (addr, _stop) = single_node(|config| config.service.batch_inflight_max = 2).await;
    wait_for_leader(addr).await;
    let (sender, mut inbound) = open(addr).await;
    sender.send(BatchRequests { requests: (1..=3).map(|id| read(id, "/ready")).collect() }).await.unwrap();
    let status = timeout(WAIT, inbound.message()).await.expect("in time").expect_err("the stream ends with a status");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let keel_code = status.metadata().get("keel-error-code").and_then(|value| value.to_str().ok());
    assert_eq!(keel_code, Some("ERROR_CODE_OVERLOADED"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_multiplexes_many_tasks_over_one_stream() {
    let (addr, _stop) = single_node(|_| {}).await;
    wait_for_leader(addr).await;
    let client = Arc::new(KeelClient::new(vec![addr.to_string()], options(true)).unwrap());
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..32u32 {
        let client = Arc::clone(&client);
        tasks.spawn(async move {
            for round in 0..10u32 {
                let key = format!("/m/{task}");
                client.put(key.clone(), format!("{round}"), None).await.expect("put");
                let found = client.get([key.clone()], Consistency::Linearizable).await.expect("get");
                assert_eq!(found[0].value, Bytes::from(format!("{round}")), "a read sees the task's own last write");
            }
            assert!(client.cas(format!("/m/{task}"), Some("9"), "done").await.expect("cas"));
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.expect("no task panics");
    }
    let all = client.scan("/m/").await.expect("scan");
    assert_eq!(all.entries.len(), 32);
    assert!(all.entries.iter().all(|entry| entry.value == "done"));
}
