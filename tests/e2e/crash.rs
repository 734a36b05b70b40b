//! `kill -9` of the leader under a write load: every acknowledged write is present after the
//! cluster recovers and the killed node restarts, on every node.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use keel::client::{Consistency, KeelClient};
use tokio::time::Instant;

use crate::cluster::Cluster;

/// Concurrent writers of the load.
const WRITERS: usize = 8;

/// Keys read back per request when checking.
const KEYS_PER_READ: usize = 200;

/// One writer's acknowledged writes, with the time each was acknowledged.
type Acknowledged = Vec<(String, Instant)>;

/// Writes fresh keys (value = key) until `stop`, recording those acknowledged.
async fn writer(client: Arc<KeelClient>, index: usize, stop: Arc<AtomicBool>) -> Acknowledged {
    let mut acknowledged = Vec::new();
    let mut sequence = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let key = format!("/load/{index}/{sequence:06}");
        sequence += 1;
        // Failures are expected while the leader is gone; only acknowledged writes are checked
        // (a write of unknown outcome may or may not be there).
        if client.put(key.clone(), key.clone(), None).await.is_ok() {
            acknowledged.push((key, Instant::now()));
        }
    }
    acknowledged
}

/// Reads every key of `keys` from node `id` alone (eventual reads: that node's own state) and
/// returns those missing or with a wrong value.
async fn missing_on(cluster: &Cluster, id: u32, keys: &[String]) -> Vec<String> {
    let client = cluster.client_of_node(id);
    let mut missing = Vec::new();
    for chunk in keys.chunks(KEYS_PER_READ) {
        let found = client.get(chunk.iter().cloned(), Consistency::Eventual).await.expect("node reads");
        for key in chunk {
            if !found.iter().any(|entry| entry.key == key.as_bytes() && entry.value == key.as_bytes()) {
                missing.push(key.clone());
            }
        }
    }
    missing
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_leader_under_load_loses_no_acknowledged_write() {
    let mut cluster = Cluster::start(3, &[]);
    let old_leader = cluster.leader(&[1, 2, 3]).await;
    let client = Arc::new(cluster.client());
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..WRITERS).map(|index| tokio::spawn(writer(client.clone(), index, stop.clone()))).collect();

    tokio::time::sleep(Duration::from_secs(1)).await;
    let killed_at = Instant::now();
    cluster.nodes.get_mut(&old_leader).expect("the leader").kill_9();
    let survivors: Vec<u32> = cluster.nodes.keys().copied().filter(|id| *id != old_leader).collect();
    let new_leader = cluster.leader(&survivors).await;
    assert_ne!(new_leader, old_leader);
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let mut acknowledged = Vec::new();
    for writer in writers {
        acknowledged.extend(writer.await.expect("the writer finishes"));
    }
    let before = acknowledged.iter().filter(|(_, at)| *at < killed_at).count();
    let after = acknowledged.len() - before;
    assert!(before > 0 && after > 0, "writes were acknowledged before ({before}) and after ({after}) the kill");

    cluster.nodes.get_mut(&old_leader).expect("the old leader").restart();
    let leader = cluster.leader(&[1, 2, 3]).await;
    cluster.converged(leader, &[1, 2, 3]).await;
    let keys: Vec<String> = acknowledged.into_iter().map(|(key, _)| key).collect();
    for id in [1, 2, 3] {
        let missing = missing_on(&cluster, id, &keys).await;
        assert!(
            missing.is_empty(),
            "node {id} lacks {} acknowledged writes: {:?}",
            missing.len(),
            &missing[..5.min(missing.len())]
        );
    }
}
