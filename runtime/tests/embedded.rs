//! Embedded mode (plain build only): a node started in this process with fjall storage, used
//! through its in-process handle, stopped, and started again on the same data directory.
#![cfg(not(madsim))]

use std::collections::BTreeMap;
use std::time::Duration;

use keel_core::kv::{KvCommand, KvEventKind};
use keel_runtime::embedded::EmbeddedNode;
use keel_runtime::node::{NodeConfig, ReadConsistency};
use keel_runtime::server::ServerConfig;

fn config(address: &str, dir: &std::path::Path) -> ServerConfig {
    let members = BTreeMap::from([(1, address.to_string())]);
    let mut node = NodeConfig::new(1, members);
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
