//! The Prometheus endpoint exposes the node's metrics after real work.

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

async fn scrape(addr: std::net::SocketAddr) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("metrics endpoint listens");
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut body = String::new();
    stream.read_to_string(&mut body).await.unwrap();
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_node_reports_commit_sync_snapshot_and_index_metrics() {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = probe.local_addr().unwrap();
    drop(probe);
    keel_runtime::metrics::install_prometheus(addr).expect("exporter installs");
    let members = BTreeMap::from([(1, "n1".to_string())]);
    let mut config = NodeConfig::new(1, members);
    config.raft.election_timeout_ms_min = 100;
    config.raft.election_timeout_ms_max = 200;
    config.raft.heartbeat_interval_ms = 20;
    // Snapshots every two entries, so that the snapshot and compaction pauses are recorded.
    config.snapshot_interval_entries = 2;
    let node = Node::start(config, Box::new(MemoryStorage::new()), SystemClock::new(), Box::new(NoPeers)).unwrap();
    let handle = node.handle();
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
    let body = scrape(addr).await;
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
    node.stop().await.unwrap();
}
