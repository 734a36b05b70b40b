//! A new learner catches up through a snapshot, is promoted, and a node is removed.

use keel::client::{Consistency, Role};

use crate::cluster::{free_address, Cluster};

/// Keys written before the learner joins: several snapshot intervals.
const KEYS: usize = 400;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learner_catches_up_by_snapshot_is_promoted_and_a_node_is_removed() {
    let mut cluster = Cluster::start(3, &["--snapshot-interval-entries", "100"]);
    let leader = cluster.leader(&[1, 2, 3]).await;
    let client = cluster.client();
    let keys: Vec<String> = (0..KEYS).map(|i| format!("/members/{i:04}")).collect();
    for key in &keys {
        client.put(key.clone(), key.clone(), None).await.expect("write");
    }

    // Node 4 starts empty (not in the initial cluster) and waits to be added.
    let address = free_address();
    cluster.add_process(4, address.clone());
    let membership = client.add_learner(4, address, false).await.expect("learner added");
    assert!(membership.learners.contains(&4), "{membership:?}");
    cluster.converged(leader, &[4]).await;
    let log = cluster.nodes[&4].log();
    assert!(log.contains("installed the leader's snapshot"), "the learner caught up by a snapshot:\n{log}");
    let learner = cluster.client_of_node(4);
    for chunk in keys.chunks(200) {
        let found = learner.get(chunk.iter().cloned(), Consistency::Eventual).await.expect("the learner reads");
        assert_eq!(found.len(), chunk.len(), "the learner has every key");
    }
    let status = cluster.status(4).await.expect("node 4 answers");
    assert_eq!(status.role, Role::Learner);

    let membership = client.promote(&[4]).await.expect("promoted");
    assert_eq!(membership.voters, vec![1, 2, 3, 4]);
    assert!(membership.learners.is_empty());

    // Remove a follower; the other three keep serving.
    let removed = *[1, 2, 3].iter().find(|id| **id != leader).expect("a follower");
    let membership = client.remove(&[removed]).await.expect("removed");
    let remaining: Vec<u32> = [1, 2, 3, 4].into_iter().filter(|id| *id != removed).collect();
    assert_eq!(membership.voters, remaining);
    let members = client.members().await.expect("members");
    assert_eq!(members.voters, remaining);
    client.put("/members/after", "removal", None).await.expect("writes go on");
    let leader = cluster.leader(&remaining).await;
    cluster.converged(leader, &remaining).await;
    let on_new_voter = learner.get(["/members/after"], Consistency::Eventual).await.expect("read");
    assert_eq!(on_new_voter.len(), 1);
}
