//! Embedded mode (plain build only): a node started in this process with fjall storage, used
//! through its in-process handle, stopped, and started again on the same data directory.
#![cfg(not(madsim))]

use std::collections::BTreeMap;
use std::time::Duration;

use keel_core::kv::{KvCommand, KvEventKind};
use keel_core::NodeId;
use keel_runtime::embedded::EmbeddedNode;
use keel_runtime::node::{NodeConfig, ReadConsistency};
use keel_runtime::server::ServerConfig;

fn config(address: &str, dir: &std::path::Path) -> ServerConfig {
    member_config(1, &BTreeMap::from([(1, address.to_string())]), dir)
}

/// The configuration of member `id` of `members`, with short timeouts, storing under `dir`.
fn member_config(id: NodeId, members: &BTreeMap<NodeId, String>, dir: &std::path::Path) -> ServerConfig {
    let address = &members[&id];
    let mut node = NodeConfig::new(id, members.clone());
    node.raft.election_timeout_ms_min = 200;
    node.raft.election_timeout_ms_max = 400;
    node.raft.heartbeat_interval_ms = 50;
    let mut config = ServerConfig::new(node, address.parse().expect("an address"));
    config.data_dir = Some(dir.to_path_buf());
    config
}

/// Writes until the single node has become leader and accepted one.
async fn first_write(node: &EmbeddedNode, command: KvCommand) {
    for _ in 0..200 {
        if node.handle().write(command.clone()).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the embedded node never accepted a write");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedded_node_serves_its_handle_and_keeps_data_across_a_restart() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let address = std::net::TcpListener::bind("127.0.0.1:0").expect("a port").local_addr().expect("bound").to_string();
    let node = EmbeddedNode::start(config(&address, dir.path())).await.expect("the node starts");
    let handle = node.handle();
    first_write(&node, KvCommand::Put { key: "/a".into(), value: "1".into(), ttl_ms: None }).await;

    let (mut events, revision) = handle.subscribe_at_revision().await.expect("subscribed");
    let written = handle
        .write(KvCommand::CompareAndSwap {
            key: "/a".into(),
            expected_value: Some("1".into()),
            new_value: "2".into(),
            ttl_ms: None,
        })
        .await
        .expect("cas applied");
    assert!(written.succeeded);
    let event = events.recv().await.expect("the cas event");
    assert_eq!((event.kind, &event.key[..], &event.value[..]), (KvEventKind::Put, &b"/a"[..], &b"2"[..]));
    assert_eq!(event.revision, revision + 1);
    let read = handle.read(vec!["/a".into(), "/absent".into()], ReadConsistency::Linearizable).await.expect("read");
    assert_eq!(read[0].as_ref().map(|kv| kv.value.clone()), Some("2".into()));
    assert!(read[1].is_none());
    node.shutdown().await.expect("a clean shutdown");

    let node = EmbeddedNode::start(config(&address, dir.path())).await.expect("the node starts again");
    first_write(&node, KvCommand::Put { key: "/b".into(), value: "3".into(), ttl_ms: None }).await;
    let read = node.handle().read(vec!["/a".into()], ReadConsistency::Linearizable).await.expect("read");
    assert_eq!(read[0].as_ref().map(|kv| kv.value.clone()), Some("2".into()), "the data survived the restart");
    node.shutdown().await.expect("a clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_configuration_is_refused_at_start() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut config = config("127.0.0.1:0", dir.path());
    config.node.raft.election_timeout_ms_min = 10;
    let error = EmbeddedNode::start(config).await.err().expect("refused");
    assert!(error.to_string().contains("election"), "{error}");
}

/// A whole cluster stopped at once stops promptly: each node's server ends the peer streams it
/// receives as soon as it starts closing, instead of waiting, until its drain timeout, for
/// senders on the other nodes that are themselves waiting to stop. The drain timeout here is
/// two minutes, so a node that waits for its peers misses the one-minute bound by far.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_cluster_stopped_at_once_does_not_wait_out_its_drain_timeout() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().expect("a temporary directory")).collect();
    let listeners: Vec<_> = (0..3).map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("a port")).collect();
    let members: BTreeMap<NodeId, String> =
        listeners.iter().zip(1..).map(|(l, id)| (id, l.local_addr().expect("bound").to_string())).collect();
    drop(listeners);
    let mut nodes = Vec::new();
    for (id, dir) in (1..).zip(&dirs) {
        let mut config = member_config(id, &members, dir.path());
        config.drain_timeout_ms = 120_000;
        nodes.push(EmbeddedNode::start(config).await.expect("the node starts"));
    }
    // Some node leads and commits through the others: the peer streams are up.
    let put = KvCommand::Put { key: "/a".into(), value: "1".into(), ttl_ms: None };
    let mut written = false;
    for _ in 0..200 {
        for node in &nodes {
            written = written || node.handle().write(put.clone()).await.is_ok();
        }
        if written {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(written, "no node of the cluster accepted a write");

    let stopping = futures_util::future::join_all(nodes.into_iter().map(EmbeddedNode::shutdown));
    let stopped = tokio::time::timeout(Duration::from_secs(60), stopping).await;
    let results = stopped.expect("every node stopped within a minute, not after its two-minute drain");
    for result in results {
        result.expect("a clean shutdown");
    }
}
