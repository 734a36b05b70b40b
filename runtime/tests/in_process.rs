//! A three-node cluster of real node drivers in one process: storage on simulated disks, peers
//! connected by channels. Checks the driver's contract end to end: writes are answered only once
//! applied, linearizable reads on any node see every acknowledged write, a leader's crash loses
//! no acknowledged write, and a restarted node recovers from its disk.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use keel_core::kv::KvCommand;
use keel_core::{Message, NodeId, Role};
use keel_runtime::clock::SystemClock;
use keel_runtime::node::{ClientError, MessageSink, Node, NodeConfig, NodeHandle, ReadConsistency};
use keel_runtime::storage::{MemoryDisk, MemoryStorage};
use tokio::sync::mpsc;

type Routes = Arc<Mutex<BTreeMap<NodeId, mpsc::Sender<Vec<Message>>>>>;

struct ChannelSink {
    routes: Routes,
}

impl MessageSink for ChannelSink {
    fn send(&mut self, message: Message) {
        let route = self.routes.lock().unwrap().get(&message.to).cloned();
        if let Some(route) = route {
            let _ = route.try_send(vec![message]);
        }
    }

    fn set_peers(&mut self, _peers: BTreeMap<NodeId, String>) {}
}

struct TestCluster {
    routes: Routes,
    disks: BTreeMap<NodeId, MemoryDisk>,
    nodes: BTreeMap<NodeId, Node>,
    members: BTreeMap<NodeId, String>,
}

impl TestCluster {
    fn new(size: NodeId) -> Self {
        let members = (1..=size).map(|id| (id, format!("node-{id}"))).collect();
        let disks = (1..=size).map(|id| (id, MemoryDisk::new())).collect();
        let mut cluster = Self { routes: Routes::default(), disks, nodes: BTreeMap::new(), members };
        for id in 1..=size {
            cluster.start(id);
        }
        cluster
    }

    fn start(&mut self, id: NodeId) {
        let mut config = NodeConfig::new(id, self.members.clone());
        config.raft.heartbeat_interval_ms = 20;
        config.raft.election_timeout_ms_min = 200;
        config.raft.election_timeout_ms_max = 400;
        config.snapshot_interval_entries = 50;
        let storage = Box::new(MemoryStorage::open(self.disks[&id].clone()));
        let sink = Box::new(ChannelSink { routes: self.routes.clone() });
        let node = Node::start(config, storage, SystemClock::new(), sink).expect("node starts");
        self.routes.lock().unwrap().insert(id, node.inbound());
        self.nodes.insert(id, node);
    }

    async fn crash(&mut self, id: NodeId) {
        self.routes.lock().unwrap().remove(&id);
        if let Some(node) = self.nodes.remove(&id) {
            let _ = node.stop().await;
        }
        self.disks[&id].crash(keel_runtime::storage::CrashFault::LoseUnsynced);
    }

    fn handle(&self, id: NodeId) -> NodeHandle {
        self.nodes[&id].handle()
    }

    async fn leader(&self) -> NodeId {
        for _ in 0..200 {
            for (id, node) in &self.nodes {
                if let Ok(status) = node.handle().status().await {
                    if status.role == Role::Leader && status.commit_index > 0 {
                        return *id;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("no leader within 4 s");
    }
}

fn put(key: &str, value: &str) -> KvCommand {
    KvCommand::Put { key: Bytes::from(key.to_string()), value: Bytes::from(value.to_string()), ttl_ms: None }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_reads_failover_and_restart_lose_no_acknowledged_write() {
    let mut cluster = TestCluster::new(3);
    let leader = cluster.leader().await;
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    let refused = cluster.handle(follower).write(put("x", "0")).await;
    assert!(matches!(refused, Err(ClientError::NotLeader(hint)) if hint.leader_id == Some(leader)));
    let mut acknowledged = Vec::new();
    for i in 0..120 {
        let result = cluster.handle(leader).write(put(&format!("k{i:03}"), &format!("v{i}"))).await.expect("write");
        assert!(result.succeeded);
        acknowledged.push(i);
    }
    // A linearizable read on a follower sees every acknowledged write.
    let keys = vec![Bytes::from("k000"), Bytes::from("k119")];
    let values = cluster.handle(follower).read(keys, ReadConsistency::Linearizable).await.expect("read");
    assert_eq!(values[1].as_ref().map(|kv| kv.value.clone()), Some(Bytes::from("v119")));
    // The leader crashes; the others elect a new one and keep every acknowledged write.
    cluster.crash(leader).await;
    let new_leader = cluster.leader().await;
    assert_ne!(new_leader, leader);
    let scan = cluster.handle(new_leader).scan(Bytes::from("k"), ReadConsistency::Linearizable).await.unwrap();
    assert_eq!(scan.kvs.len(), acknowledged.len(), "an acknowledged write was lost");
    cluster.handle(new_leader).write(put("after", "crash")).await.expect("write after failover");
    // The old leader restarts from its disk (it took snapshots every 50 entries) and catches up.
    cluster.start(leader);
    let mut caught_up = false;
    for _ in 0..200 {
        let keys = vec![Bytes::from("after")];
        if let Ok(values) = cluster.handle(leader).read(keys, ReadConsistency::Eventual).await {
            if values[0].is_some() {
                caught_up = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(caught_up, "restarted node did not catch up");
    let scan = cluster.handle(leader).scan(Bytes::from("k"), ReadConsistency::Eventual).await.unwrap();
    assert_eq!(scan.kvs.len(), acknowledged.len());
    for (_, node) in std::mem::take(&mut cluster.nodes) {
        node.stop().await.expect("clean stop");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_and_swap_and_lease_policy_errors_are_reported() {
    let cluster = TestCluster::new(3);
    let leader = cluster.leader().await;
    let handle = cluster.handle(leader);
    let cas = |expected: Option<&str>, new: &str| KvCommand::CompareAndSwap {
        key: Bytes::from("lock"),
        expected_value: expected.map(|e| Bytes::from(e.to_string())),
        new_value: Bytes::from(new.to_string()),
        ttl_ms: None,
    };
    assert!(handle.write(cas(None, "a")).await.unwrap().succeeded, "absent key: CAS with None succeeds");
    assert!(!handle.write(cas(None, "b")).await.unwrap().succeeded, "present key: CAS with None fails");
    assert!(handle.write(cas(Some("a"), "c")).await.unwrap().succeeded);
    let lease = handle.read(vec![Bytes::from("lock")], ReadConsistency::Lease).await;
    assert!(matches!(lease, Err(ClientError::Invalid(message)) if message.contains("lease reads are disabled")));
    let too_big = KvCommand::Put { key: Bytes::from(vec![b'k'; 10_000]), value: Bytes::new(), ttl_ms: None };
    assert!(matches!(handle.write(too_big).await, Err(ClientError::Invalid(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_cluster_restarts_from_its_disks_and_elects_a_leader_again() {
    let mut cluster = TestCluster::new(3);
    let leader = cluster.leader().await;
    for i in 0..10 {
        cluster.handle(leader).write(put(&format!("r{i}"), "v")).await.expect("write");
    }
    for id in 1..=3 {
        cluster.crash(id).await;
    }
    for id in 1..=3 {
        cluster.start(id);
    }
    let leader = cluster.leader().await;
    let scan = cluster.handle(leader).scan(Bytes::from("r"), ReadConsistency::Linearizable).await.unwrap();
    assert_eq!(scan.kvs.len(), 10, "the restarted cluster lost acknowledged writes");
    for (_, node) in std::mem::take(&mut cluster.nodes) {
        node.stop().await.expect("clean stop");
    }
}

/// Regression: a node that stopped answered the writes it had already proposed with
/// `SHUTTING_DOWN`, which the protocol documents as "not applied", although the next leader may
/// still commit them. Their outcome is unknown, and must be reported so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_proposed_before_a_stop_are_answered_outcome_unknown() {
    let mut cluster = TestCluster::new(3);
    let leader = cluster.leader().await;
    for id in (1..=3).filter(|&id| id != leader) {
        cluster.crash(id).await;
    }
    // The leader keeps its role for an election timeout (check-quorum): the write is proposed
    // and cannot commit.
    let handle = cluster.handle(leader);
    let pending = tokio::spawn(async move { handle.write(put("/pending", "v")).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let node = cluster.nodes.remove(&leader).expect("the leader runs");
    node.stop().await.expect("clean stop");
    let answer = pending.await.expect("the write task ends");
    assert_eq!(answer.map(|_| ()), Err(ClientError::OutcomeUnknown));
}
