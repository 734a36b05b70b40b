//! The metrics endpoint exposes the node's metrics after real work, and etcd's `/health` beside
//! them.

#![cfg(not(madsim))]

use std::collections::BTreeMap;

use bytes::Bytes;
use keel_core::kv::KvCommand;
use keel_core::{Message, NodeId};
use keel_runtime::clock::SystemClock;
use keel_runtime::node::{MessageSink, Node, NodeConfig};
use keel_runtime::storage::MemoryStorage;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct NoPeers;

impl MessageSink for NoPeers {
    fn send(&mut self, _message: Message) {}
    fn set_peers(&mut self, _peers: BTreeMap<NodeId, String>) {}
}

/// `GET path` over HTTP/1.1: the status code and the whole answer.
async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("metrics endpoint listens");
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    let status = answer.split(' ').nth(1).and_then(|code| code.parse().ok()).expect("a status line");
    (status, answer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_node_reports_commit_sync_snapshot_and_index_metrics_and_its_health() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let prometheus = keel_runtime::metrics::install_prometheus().expect("the recorder installs");
    let members = BTreeMap::from([(1, "n1".to_string())]);
    let mut config = NodeConfig::new(1, members);
    config.raft.election_timeout_ms_min = 100;
    config.raft.election_timeout_ms_max = 200;
    config.raft.heartbeat_interval_ms = 20;
    // Snapshots every two entries, so that the snapshot and compaction pauses are recorded.
    config.snapshot_interval_entries = 2;
    let node = Node::start(config, Box::new(MemoryStorage::new()), SystemClock::new(), Box::new(NoPeers)).unwrap();
    let handle = node.handle();
    tokio::spawn(keel_runtime::metrics::serve_http(listener, prometheus, handle.clone()));
    let mut written = 0;
    for _ in 0..300 {
        let put = KvCommand::Put { key: Bytes::from(format!("m{written}")), value: Bytes::new(), ttl_ms: None };
        if handle.write(put).await.is_ok() {
            written += 1;
            if written == 5 {
                break;
            }
        } else {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
    assert_eq!(written, 5, "the single node became leader and committed");
    let (status, body) = get(addr, "/metrics").await;
    assert_eq!(status, 200, "{body}");
    let names = [
        "keel_commit_latency_seconds",
        "keel_sync_latency_seconds",
        "keel_snapshot_seconds",
        "keel_snapshot_copy_seconds",
        "keel_log_compaction_seconds",
        "keel_applied_index",
        "keel_is_leader 1",
    ];
    for name in names {
        assert!(body.contains(name), "{name} missing from:\n{body}");
    }
    let (status, health) = get(addr, "/health").await;
    assert_eq!(status, 200, "{health}");
    assert!(health.ends_with(r#"{"health":"true","reason":""}"#), "{health}");
    // A probe pointed at a wrong path must fail, not read the metrics as a pass.
    assert_eq!(get(addr, "/healthz").await.0, 404);
    node.stop().await.unwrap();
    let (status, health) = get(addr, "/health").await;
    assert_eq!(status, 503, "a stopped node is not healthy: {health}");
}
