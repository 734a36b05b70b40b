//! Membership watches through a learner's addition and promotion, status, leadership transfer
//! and graceful shutdown.

use super::*;

/// Waits for the next membership snapshot that satisfies `wanted`; indexes must increase.
async fn next_membership(
    stream: &mut Streaming<MembershipSnapshot>,
    last_index: &mut u64,
    wanted: impl Fn(&MembershipSnapshot) -> bool,
) -> MembershipSnapshot {
    loop {
        let snapshot = next(stream).await.expect("the membership stream stays open");
        assert!(snapshot.committed_index > *last_index, "committed_index increases: {snapshot:?}");
        *last_index = snapshot.committed_index;
        if wanted(&snapshot) {
            return snapshot;
        }
    }
}

fn change(change: Change) -> MembershipChange {
    MembershipChange { change: Some(change) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_status_transfer_and_graceful_shutdown() {
    let mut servers = start_cluster(3, |_| {}).await;
    let leader = ready_leader(&servers).await;
    let follower = *servers.keys().find(|id| **id != leader).expect("a follower");
    let mut admin = servers[&leader].admin().await;

    let mut client = servers[&follower].client().await;
    let mut membership =
        client.watch_membership(WatchMembershipRequest { client_id: 7 }).await.expect("membership watch").into_inner();
    let first = next(&mut membership).await.expect("the current membership");
    assert_eq!((first.members.clone(), first.learners.clone()), (vec![1, 2, 3], vec![]));
    let mut last_index = first.committed_index;

    // Refusals with precise codes.
    let (listener4, addr4) = listener().await;
    let add = |status: NodeStatus, id: NodeId| {
        change(Change::AddNode(AddNode { node_id: id, address: addr4.to_string(), status: status as i32 }))
    };
    let active = admin.change_membership(add(NodeStatus::Active, 4)).await.expect("call").into_inner();
    assert_eq!(active.error(), ErrorCode::InvalidArgument);
    assert!(active.metadata.is_some_and(|m| m.message.contains("nodes join as learners")));
    let existing = admin.change_membership(add(NodeStatus::Promotable, 2)).await.expect("call").into_inner();
    assert_eq!(existing.error(), ErrorCode::MemberAlreadyExists);
    let unknown = admin.change_membership(change(Change::RemoveNode(RemoveNode { node_id: 9 }))).await;
    assert_eq!(unknown.expect("call").into_inner().error(), ErrorCode::UnknownMember);
    let mut follower_admin = servers[&follower].admin().await;
    let redirected = follower_admin.change_membership(add(NodeStatus::Promotable, 4)).await.expect("call").into_inner();
    assert_eq!(redirected.error(), ErrorCode::NotLeader);
    assert_eq!(redirected.metadata.and_then(|m| m.leader_hint).map(|h| h.leader_id), Some(leader));

    // A fourth node starts with an empty membership (it is not among the initial members, which
    // only tell it where the cluster is) and is added as a learner, then promoted.
    let cluster: BTreeMap<NodeId, String> = servers.iter().map(|(id, s)| (*id, s.addr.to_string())).collect();
    let config4 = server_config(4, &cluster, addr4);
    servers.insert(4, TestServer::start(config4, listener4));
    let added = admin.change_membership(add(NodeStatus::Promotable, 4)).await.expect("call").into_inner();
    assert_eq!(added.error(), ErrorCode::Success, "{:?}", added.metadata);
    assert_eq!((added.voters.clone(), added.learners.clone()), (vec![1, 2, 3], vec![4]));
    assert_eq!(added.addresses.get(&4), Some(&addr4.to_string()));
    let with_learner = next_membership(&mut membership, &mut last_index, |s| s.learners == [4]).await;
    assert_eq!(with_learner.members, vec![1, 2, 3]);

    let promote = change(Change::Promote(PromoteLearner { node_id: 4, status: NodeStatus::Active as i32 }));
    let promoted = eventually("the learner's promotion", || {
        let (mut admin, promote) = (admin.clone(), promote.clone());
        async move {
            let response = admin.change_membership(promote).await.ok()?.into_inner();
            match response.error() {
                ErrorCode::Success => Some(response),
                ErrorCode::Unavailable | ErrorCode::MembershipChangeInProgress => None,
                other => panic!("promotion refused with {other:?}: {:?}", response.metadata),
            }
        }
    })
    .await;
    assert_eq!((promoted.voters, promoted.learners), (vec![1, 2, 3, 4], vec![]));
    let all_voters = next_membership(&mut membership, &mut last_index, |s| s.members == [1, 2, 3, 4]).await;
    assert!(all_voters.learners.is_empty());

    // The new node learns the configuration too.
    let admin4 = servers[&4].admin().await;
    eventually("node 4 to see itself a voter", || {
        let mut admin4 = admin4.clone();
        async move {
            let response = admin4.get_membership(StatusRequest {}).await.ok()?.into_inner();
            (response.voters == [1, 2, 3, 4]).then_some(())
        }
    })
    .await;

    // The leader's status shows every peer's progress.
    let mut client_on_leader = servers[&leader].client().await;
    assert!(write_ok(&mut client_on_leader, insert("/m/after-promotion", "1")).await);
    let leader_status = eventually("every peer caught up", || {
        let mut admin = admin.clone();
        async move {
            let s = status(&mut admin).await?;
            (s.peers.len() == 3 && s.peers.iter().all(|p| p.match_index == s.last_log_index)).then_some(s)
        }
    })
    .await;
    assert_eq!(leader_status.role(), NodeRole::Leader);
    assert_eq!(leader_status.voters, vec![1, 2, 3, 4]);
    assert!(leader_status.has_quorum);
    let hint = leader_status.leader.clone().expect("the leader names itself");
    assert_eq!((hint.leader_id, hint.address), (leader, servers[&leader].addr.to_string()));
    for peer in &leader_status.peers {
        assert_eq!(peer.address, servers[&peer.id].addr.to_string());
        assert!(peer.last_contact_ms_ago.is_some(), "{peer:?}");
    }
    let follower_status = status(&mut follower_admin).await.expect("status");
    assert_eq!(follower_status.role(), NodeRole::Follower);
    assert!(follower_status.peers.is_empty());

    // Leadership moves on request.
    let target = *servers.keys().find(|id| **id != leader && **id != follower).expect("a target");
    let moved = admin.transfer_leadership(TransferLeadershipRequest { target }).await.expect("call").into_inner();
    assert_eq!(moved.error(), ErrorCode::Success, "{:?}", moved.metadata);
    let mut target_admin = servers[&target].admin().await;
    let target_status = eventually("the target to lead", || {
        let mut admin = target_admin.clone();
        async move { status(&mut admin).await.filter(|s| s.role() == NodeRole::Leader) }
    })
    .await;
    assert_eq!(target_status.id, target);
    let unknown_target = target_admin.transfer_leadership(TransferLeadershipRequest { target: 9 }).await;
    assert_eq!(unknown_target.expect("call").into_inner().error(), ErrorCode::UnknownMember);

    // Graceful shutdown of the leader hands leadership over before the server exits: another
    // node leads at once, well before an election timeout could have elapsed.
    let old_term = target_status.term;
    let stopping = servers.remove(&target).expect("the leader's server");
    stopping.shutdown().await.expect("clean shutdown");
    let exited = Instant::now();
    let mut others = Vec::new();
    for (id, server) in &servers {
        others.push((*id, server.admin().await));
    }
    let (new_leader, new_status) = eventually("a new leader", || {
        let others = others.clone();
        async move {
            for (id, mut admin) in others {
                if let Some(s) = status(&mut admin).await.filter(|s| s.role() == NodeRole::Leader) {
                    return Some((id, s));
                }
            }
            None
        }
    })
    .await;
    let after = exited.elapsed();
    assert!(new_status.term > old_term);
    assert!(
        after < Duration::from_millis(ELECTION_MS_MIN / 2),
        "node {new_leader} led only {after:?} after the old leader exited: no hand-over"
    );
    let mut on_new_leader = servers[&new_leader].client().await;
    let written = eventually("a write on the new leader", || {
        let mut client = on_new_leader.clone();
        async move {
            let response = write(&mut client, insert("/m/after-shutdown", "1")).await;
            (response.error() == ErrorCode::Success).then_some(())
        }
    });
    written.await;
    assert_eq!(pairs(&read(&mut on_new_leader, &["/m/after-shutdown"], None).await).len(), 1);

    for (_, server) in servers {
        server.shutdown().await.expect("clean shutdown");
    }
}
