//! A leader is elected; a write sent to a follower is redirected and succeeds.

use std::process::Command;

use keel::client::Consistency;
use keel::proto::client::raft_client_service_client::RaftClientServiceClient;
use keel::proto::client::write_command::{Insert, Operation};
use keel::proto::client::{ClientWriteRequest, WriteCommand};
use keel::proto::error::ErrorCode;

use crate::cluster::{Cluster, KEEL};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_is_elected_and_a_write_to_a_follower_is_redirected() {
    let cluster = Cluster::start(3, &[]);
    let leader = cluster.leader(&[1, 2, 3]).await;
    let follower = *cluster.nodes.keys().find(|id| **id != leader).expect("a follower");
    let follower_address = &cluster.nodes[&follower].address;

    // Straight to the follower: refused, with a hint that names the leader and its address.
    let mut raw = RaftClientServiceClient::connect(format!("http://{follower_address}")).await.expect("connects");
    let insert = Insert { key: "/redirect/raw".into(), value: "1".into(), ttl_secs: 0 };
    let request =
        ClientWriteRequest { client_id: 1, command: Some(WriteCommand { operation: Some(Operation::Insert(insert)) }) };
    let response = raw.handle_client_write(request).await.expect("an answer").into_inner();
    assert_eq!(response.error(), ErrorCode::NotLeader, "{response:?}");
    let hint = response.metadata.and_then(|metadata| metadata.leader_hint).expect("a leader hint");
    assert_eq!((hint.leader_id, hint.address.as_str()), (leader, cluster.nodes[&leader].address.as_str()));

    // The client library, given only the follower, follows the hint by itself.
    let client = cluster.client_of_node(follower);
    client.put("/redirect/library", "2", None).await.expect("the write is redirected and succeeds");
    assert_eq!(client.get_one("/redirect/library").await.expect("read"), Some("2".into()));

    // So does the command line.
    let output = Command::new(KEEL)
        .args(["put", "/redirect/cli", "3", "--endpoints", follower_address, "-w", "json"])
        .output()
        .expect("keel runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let everywhere = cluster.client();
    let read = everywhere.get(["/redirect/cli", "/redirect/raw"], Consistency::Linearizable).await.expect("read");
    assert_eq!(read.len(), 1, "the refused write did not happen: {read:?}");
    assert_eq!(read[0].value, "3");
}
