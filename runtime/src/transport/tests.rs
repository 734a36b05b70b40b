//! Tests of the peer transport over real loopback sockets (plain tokio build only: madsim-tonic
//! has no `serve_with_incoming`, and codecs and size limits are not exercised under madsim).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use keel::proto::raft::raft_peer_client::RaftPeerClient;
use keel::proto::raft::{RaftMessage, RaftMessageBatch};
use keel_core::{Entry, EntryPayload, LogId, Membership, Message, MessageBody, NodeId, SnapshotMeta};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{sleep, timeout, Instant};
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;
use tonic::Code;

use super::*;

/// Upper bound on any wait in these tests; they normally finish far sooner.
const WAIT: Duration = Duration::from_secs(10);

fn fast_config() -> TransportConfig {
    TransportConfig { call_timeout_ms: 1_000, backoff_ms_min: 5, backoff_ms_max: 40, ..TransportConfig::default() }
}

fn heartbeat(from: NodeId, to: NodeId, read_round: u64) -> Message {
    Message { from, to, term: 1, body: MessageBody::Heartbeat { commit: 0, read_round } }
}

fn append(from: NodeId, to: NodeId, index: u64, payload_bytes: usize) -> Message {
    let entry = Entry { log_id: LogId::new(1, index), payload: EntryPayload::Command(vec![7; payload_bytes].into()) };
    let prev_log_id = LogId::new(1, index - 1);
    let body = MessageBody::AppendEntries { prev_log_id, entries: vec![entry], leader_commit: 0, commit_notice: false };
    Message { from, to, term: 1, body }
}

fn read_round(message: &Message) -> Option<u64> {
    match message.body {
        MessageBody::Heartbeat { read_round, .. } => Some(read_round),
        _ => None,
    }
}

/// Serves node `id`'s peer service on `addr` (port 0: an ephemeral port) with an inbound queue of
/// `capacity` batches. Returns the bound address, the inbound queue and the server task.
fn serve(id: NodeId, addr: SocketAddr, capacity: usize) -> (SocketAddr, mpsc::Receiver<Vec<Message>>, JoinHandle<()>) {
    let incoming = TcpIncoming::bind(addr).expect("bind a loopback port");
    let local = incoming.local_addr().expect("bound address");
    let (inbound_tx, inbound_rx) = mpsc::channel(capacity);
    let task = tokio::spawn(async move {
        let served = Server::builder().add_service(peer_service(id, inbound_tx)).serve_with_incoming(incoming).await;
        served.expect("server runs until the test ends");
    });
    (local, inbound_rx, task)
}

fn any_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// A loopback address where nothing listens (the probe listener is closed at once).
fn dead_address() -> SocketAddr {
    std::net::TcpListener::bind(any_port()).and_then(|l| l.local_addr()).expect("free loopback port")
}

/// Receives batches until `n` messages have arrived, within [`WAIT`].
async fn receive(inbound: &mut mpsc::Receiver<Vec<Message>>, n: usize) -> Vec<Message> {
    let mut received = Vec::new();
    let all = timeout(WAIT, async {
        while received.len() < n {
            match inbound.recv().await {
                Some(batch) => received.extend(batch),
                None => break,
            }
        }
    });
    all.await.expect("messages arrive in time");
    received
}

/// Polls `condition` every few milliseconds until it holds, within [`WAIT`].
async fn wait_until(mut condition: impl FnMut() -> bool) {
    let polled = timeout(WAIT, async {
        while !condition() {
            sleep(Duration::from_millis(5)).await;
        }
    });
    polled.await.expect("condition reached in time");
}

fn transport(id: NodeId, config: TransportConfig, peers: &BTreeMap<NodeId, String>) -> PeerTransport {
    let mut transport = PeerTransport::new(id, config);
    transport.set_peers(peers);
    transport
}

#[tokio::test]
async fn two_transports_exchange_messages_both_ways_in_order() {
    let (addr1, mut inbound1, _server1) = serve(1, any_port(), 1024);
    let (addr2, mut inbound2, _server2) = serve(2, any_port(), 1024);
    let peers = BTreeMap::from([(1, addr1.to_string()), (2, addr2.to_string())]);
    // Small batches, and appends big enough to split batches by bytes too.
    let config = TransportConfig { batch_messages_max: 7, batch_bytes_max: 1_000, ..fast_config() };
    let (t1, t2) = (transport(1, config.clone(), &peers), transport(2, config, &peers));
    assert_eq!(t1.peers().collect::<Vec<_>>(), vec![(2, addr2.to_string().as_str())]);

    let message = |from, to, i: u64| if i % 10 == 3 { append(from, to, i + 1, 600) } else { heartbeat(from, to, i) };
    let to2: Vec<Message> = (0..300).map(|i| message(1, 2, i)).collect();
    let to1: Vec<Message> = (0..300).map(|i| message(2, 1, i)).collect();
    for (a, b) in to2.iter().zip(&to1) {
        assert!(t1.send(a.clone()) && t2.send(b.clone()), "queues have room");
    }
    assert_eq!(receive(&mut inbound2, 300).await, to2, "node 2 receives node 1's messages in order");
    assert_eq!(receive(&mut inbound1, 300).await, to1, "node 1 receives node 2's messages in order");

    wait_until(|| t1.stats().sent == 300 && t2.stats().sent == 300).await;
    let stats = t1.stats();
    assert!(stats.batches >= 300 / 7, "at most 7 messages per call: {stats:?}");
    assert_eq!((stats.dropped_queue_full, stats.dropped_send_failed, stats.failed_calls), (0, 0, 0));
}

#[tokio::test]
async fn messages_to_a_dead_peer_are_dropped_and_delivery_resumes_after_it_starts() {
    let addr = dead_address();
    let t1 = transport(1, fast_config(), &BTreeMap::from([(2, addr.to_string())]));
    for round in 0..5 {
        assert!(t1.send(heartbeat(1, 2, round)));
    }
    wait_until(|| t1.stats().dropped_send_failed == 5).await;
    let stats = t1.stats();
    assert_eq!(stats.sent, 0);
    assert!(stats.failed_calls >= 1, "{stats:?}");

    let (_, mut inbound, _server) = serve(2, addr, 1024);
    let deadline = Instant::now() + WAIT;
    let mut next_round = 5;
    let first = loop {
        assert!(Instant::now() < deadline, "delivery did not resume");
        t1.send(heartbeat(1, 2, next_round));
        next_round += 1;
        if let Ok(Some(batch)) = timeout(Duration::from_millis(20), inbound.recv()).await {
            break batch;
        }
    };
    assert!(first.iter().all(|m| read_round(m) >= Some(5)), "messages dropped before the restart stay dropped");
    let rounds: Vec<_> = first.iter().filter_map(read_round).collect();
    assert!(rounds.windows(2).all(|w| w[0] < w[1]), "order preserved: {rounds:?}");
    // Every message is accounted for: delivered, or dropped with a failed call.
    wait_until(|| {
        let stats = t1.stats();
        stats.sent + stats.dropped_send_failed == next_round
    })
    .await;
    assert!(t1.stats().sent >= 1);
}

#[tokio::test]
async fn a_stalled_peer_fails_the_call_at_the_deadline() {
    // Accepts TCP connections in the kernel backlog but never answers.
    let silent = std::net::TcpListener::bind(any_port()).expect("bind");
    let addr = silent.local_addr().expect("bound address");
    let config = TransportConfig { call_timeout_ms: 200, ..fast_config() };
    let stats = Arc::new(TransportStats::default());
    let sender = PeerSender::spawn(1, 2, addr.to_string(), &config, Arc::clone(&stats));
    assert!(sender.send(heartbeat(1, 2, 0)));
    wait_until(|| stats.snapshot().dropped_send_failed == 1).await;
    assert_eq!(stats.snapshot().failed_calls, 1, "the stalled call is counted as failed, not left hanging");
    assert_eq!(stats.snapshot().sent, 0);
    drop(silent);
}

#[tokio::test]
async fn a_full_inbound_queue_refuses_deliver_and_holds_a_stream_back() {
    let (addr, mut inbound, _server) = serve(2, any_port(), 1);
    let mut client = RaftPeerClient::connect(format!("http://{addr}")).await.expect("connect");
    let batch = || RaftMessageBatch { messages: vec![convert::message_to_wire(&heartbeat(1, 2, 0))] };
    client.deliver(batch()).await.expect("the first batch is queued");
    let status = client.deliver(batch()).await.expect_err("the queue is full");
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(status.message(), "inbound queue full; retry later");

    // A sender's stream waits for room instead of dropping: its batch arrives, in order, once
    // the driver has drained the queue.
    let stats = Arc::new(TransportStats::default());
    let sender = PeerSender::spawn(1, 2, addr.to_string(), &fast_config(), Arc::clone(&stats));
    assert!(sender.send(heartbeat(1, 2, 1)));
    assert_eq!(inbound.recv().await, Some(vec![heartbeat(1, 2, 0)]));
    assert_eq!(inbound.recv().await, Some(vec![heartbeat(1, 2, 1)]));
    wait_until(|| stats.snapshot().sent == 1).await;
    assert_eq!((stats.snapshot().dropped_send_failed, stats.snapshot().failed_calls), (0, 0));
    client.deliver(batch()).await.expect("accepted again once the driver has drained the queue");
}

#[tokio::test]
async fn a_malformed_batch_on_a_stream_ends_it_with_invalid_argument() {
    let (addr, mut inbound, _server) = serve(2, any_port(), 16);
    let mut client = RaftPeerClient::connect(format!("http://{addr}")).await.expect("connect");
    let good = convert::message_to_wire(&heartbeat(1, 2, 0));
    let malformed = RaftMessage { body: None, ..good.clone() };
    let batches =
        vec![RaftMessageBatch { messages: vec![good.clone()] }, RaftMessageBatch { messages: vec![good, malformed] }];
    let mut acks = client.stream(futures_util::stream::iter(batches)).await.expect("the stream opens").into_inner();
    let status = loop {
        match acks.message().await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the stream must end with a status"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(inbound.recv().await, Some(vec![heartbeat(1, 2, 0)]), "the batch before it was queued");
    assert!(inbound.try_recv().is_err(), "nothing of the malformed batch was queued");
}

#[tokio::test]
async fn a_malformed_or_misaddressed_batch_answers_invalid_argument_and_queues_nothing() {
    let (addr, mut inbound, _server) = serve(2, any_port(), 16);
    let mut client = RaftPeerClient::connect(format!("http://{addr}")).await.expect("connect");
    let good = convert::message_to_wire(&heartbeat(1, 2, 0));
    let malformed = RaftMessage { from: 1, to: 2, term: 1, body: None };
    let status = client
        .deliver(RaftMessageBatch { messages: vec![good.clone(), malformed] })
        .await
        .expect_err("a message has no body");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("body"), "{}", status.message());

    let misaddressed = convert::message_to_wire(&heartbeat(1, 3, 0));
    let status = client.deliver(RaftMessageBatch { messages: vec![misaddressed] }).await.expect_err("wrong node");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("addressed to node 3"), "{}", status.message());
    assert!(inbound.try_recv().is_err(), "nothing was queued");

    client.deliver(RaftMessageBatch { messages: vec![good] }).await.expect("a valid batch");
    assert_eq!(inbound.recv().await, Some(vec![heartbeat(1, 2, 0)]));
}

#[tokio::test]
async fn a_snapshot_chunk_above_tonics_default_4_mib_limit_is_delivered() {
    let (addr, mut inbound, _server) = serve(2, any_port(), 16);
    let t1 = transport(1, fast_config(), &BTreeMap::from([(2, addr.to_string())]));
    let meta = SnapshotMeta { last_included: LogId::new(1, 9), membership: Membership::with_voters([1, 2]) };
    let data = Bytes::from(vec![5u8; 6 << 20]);
    let body = MessageBody::InstallSnapshot { meta, offset: 0, total_bytes: 6 << 20, data };
    let chunk = Message { from: 1, to: 2, term: 1, body };
    assert!(t1.send(chunk.clone()));
    assert_eq!(receive(&mut inbound, 1).await, vec![chunk]);
}

#[tokio::test]
async fn a_full_outbound_queue_drops_instead_of_blocking() {
    let config = TransportConfig { queue_messages_max: 4, ..fast_config() };
    let t1 = transport(1, config, &BTreeMap::from([(2, dead_address().to_string())]));
    // On this current-thread runtime the sender task cannot run during the loop: the queue only
    // fills, and every send beyond its capacity returns at once with a drop.
    let accepted = (0..20).filter(|&round| t1.send(heartbeat(1, 2, round))).count();
    assert_eq!(accepted, 4);
    assert_eq!(t1.stats().dropped_queue_full, 16);

    assert!(!t1.send(heartbeat(1, 9, 0)), "node 9 is not a peer");
    assert_eq!(t1.stats().dropped_unknown_peer, 1);
}

#[tokio::test]
async fn set_peers_starts_stops_and_restarts_senders() {
    let peers = |list: &[(NodeId, &str)]| list.iter().map(|&(id, a)| (id, a.to_owned())).collect();
    let mut t1 = transport(1, fast_config(), &peers(&[(1, "self:1"), (2, "b:2"), (3, "c:3")]));
    assert_eq!(t1.peers().collect::<Vec<_>>(), vec![(2, "b:2"), (3, "c:3")], "the node's own entry is ignored");
    t1.set_peers(&peers(&[(2, "b:22"), (4, "d:4")]));
    assert_eq!(t1.peers().collect::<Vec<_>>(), vec![(2, "b:22"), (4, "d:4")]);
    assert!(!t1.send(heartbeat(1, 3, 0)), "node 3 was removed");
    assert!(t1.send(heartbeat(1, 4, 0)));
    assert_eq!(t1.node_id(), 1);
}
