//! Leadership transfer (thesis §3.10), the preferred leader, leader stickiness with pre-vote
//! (thesis §9.6) and check-quorum (thesis §6.2).

use keel_core::{Error, Message, MessageBody, NodeId, Role};

use crate::harness::{Cluster, Options};

/// Steps of the harness in the shortest election timeout (100 ms / 5 ms).
const ELECTION_TIMEOUT_STEPS: u64 = 20;

fn other_than(cluster: &Cluster, excluded: &[NodeId]) -> NodeId {
    *cluster.nodes.keys().find(|id| !excluded.contains(id)).unwrap()
}

fn commit_commands(cluster: &mut Cluster, count: usize) {
    let leader = cluster.elect();
    for i in 0..count {
        cluster.propose(leader, format!("c{i}").as_bytes()).unwrap();
    }
    assert!(cluster.settle(1_000));
}

fn is_timeout_now(message: &Message) -> bool {
    matches!(message.body, MessageBody::TimeoutNow)
}

#[test]
fn thesis_3_10_transfer_to_a_caught_up_follower_completes_faster_than_an_election_timeout() {
    for seed in 0..5 {
        let mut cluster = Cluster::new(Options::new(3, seed));
        commit_commands(&mut cluster, 5);
        assert!(cluster.run_until(200, |c| c.converged()));
        let old = cluster.leader().unwrap();
        let term = cluster.node(old).term();
        let target = other_than(&cluster, &[old]);
        cluster.node_mut(old).transfer_leadership(target).unwrap();
        // Proposals are refused while the transfer runs, with a hint to retry at the leader.
        let refused = cluster.propose(old, b"during");
        assert!(matches!(&refused, Err(Error::TransferInProgress(hint)) if hint.leader_id == Some(old)), "{refused:?}");
        let mut steps = 0;
        while cluster.leader() != Some(target) {
            cluster.step();
            steps += 1;
            assert!(steps < ELECTION_TIMEOUT_STEPS, "seed {seed}: transfer took {steps} steps");
        }
        assert_eq!(cluster.node(target).term(), term + 1, "the target campaigns at once, one term later");
        assert!(cluster.run_until(50, |c| c.node(old).leader_id() == Some(target)));
        assert_eq!(cluster.node(old).role(), Role::Follower);
        let log_id = cluster.propose(target, b"after").unwrap();
        assert!(cluster.settle(400));
        assert!(cluster.acknowledged.contains(&log_id));
    }
}

#[test]
fn thesis_3_10_transfer_to_a_lagging_follower_catches_it_up_before_timeout_now() {
    let mut cluster = Cluster::new(Options::new(3, 4));
    cluster.message_log = Some(Vec::new());
    let old = cluster.elect();
    let target = other_than(&cluster, &[old]);
    // The target misses 30 entries.
    cluster.blocked.insert((old, target));
    commit_commands(&mut cluster, 30);
    let old_last = cluster.node(old).last_log_id();
    assert!(cluster.node(target).last_log_id() < old_last);
    cluster.node_mut(old).transfer_leadership(target).unwrap();
    // While the target cannot receive entries, no TimeoutNow may be sent.
    cluster.run(5);
    assert!(!cluster.message_log.as_ref().unwrap().iter().any(|(_, m)| is_timeout_now(m)));
    assert_eq!(cluster.node(old).role(), Role::Leader);
    cluster.blocked.remove(&(old, target));
    assert!(cluster.run_until(ELECTION_TIMEOUT_STEPS, |c| c.leader() == Some(target)), "transfer did not complete");
    // TimeoutNow went out only once the target held the leader's whole log.
    let log = cluster.message_log.as_ref().unwrap();
    let timeout_now_at = log.iter().position(|(_, m)| is_timeout_now(m)).expect("TimeoutNow was sent");
    let acked_before = log[..timeout_now_at].iter().any(|(_, m)| {
        m.from == target
            && matches!(m.body, MessageBody::AppendEntriesResponse { success: true, match_index, .. } if match_index >= old_last.index)
    });
    assert!(acked_before, "TimeoutNow was sent before the target acknowledged the whole log");
    assert!(cluster.node(target).entry(old_last.index).is_some_and(|e| e.log_id == old_last));
    cluster.check_no_acknowledged_write_lost();
}

#[test]
fn thesis_3_10_a_transfer_to_an_unreachable_target_times_out_and_the_leader_keeps_leading() {
    let mut cluster = Cluster::new(Options::new(3, 8));
    commit_commands(&mut cluster, 3);
    let leader = cluster.leader().unwrap();
    let term = cluster.node(leader).term();
    let target = other_than(&cluster, &[leader]);
    cluster.isolate(target);
    cluster.node_mut(leader).transfer_leadership(target).unwrap();
    assert!(matches!(cluster.propose(leader, b"x"), Err(Error::TransferInProgress(_))));
    // A second transfer to another node is refused while the first runs.
    let third = other_than(&cluster, &[leader, target]);
    assert!(matches!(cluster.node_mut(leader).transfer_leadership(third), Err(Error::TransferInProgress(_))));
    let mut steps = 0;
    while cluster.propose(leader, b"x").is_err() {
        cluster.step();
        steps += 1;
        assert!(steps <= 2 * ELECTION_TIMEOUT_STEPS, "the transfer was never abandoned");
    }
    assert!(steps >= ELECTION_TIMEOUT_STEPS - 1, "abandoned after {steps} steps, before an election timeout");
    assert_eq!(cluster.leader(), Some(leader));
    assert_eq!(cluster.node(leader).term(), term, "the leader kept its term");
    assert!(cluster.settle(400));
    cluster.run(200);
    assert_eq!((cluster.leader(), cluster.node(leader).term()), (Some(leader), term));
}

#[test]
fn thesis_3_10_invalid_transfer_targets_are_refused() {
    let mut cluster = Cluster::new(Options::new(3, 2));
    let leader = cluster.elect();
    let follower = other_than(&cluster, &[leader]);
    assert_eq!(cluster.node_mut(leader).transfer_leadership(leader), Err(Error::InvalidTransferTarget(leader)));
    assert_eq!(cluster.node_mut(leader).transfer_leadership(9), Err(Error::InvalidTransferTarget(9)));
    assert!(matches!(cluster.node_mut(follower).transfer_leadership(leader), Err(Error::NotLeader(_))));
}

#[test]
fn thesis_3_10_leadership_moves_to_the_preferred_leader_and_stays_there() {
    for seed in 0..4 {
        let mut options = Options::new(3, seed);
        options.configure = |c| c.preferred_leader = Some(3);
        let mut cluster = Cluster::new(options);
        // Node 3 is unreachable at first, so another node is elected.
        cluster.isolate(3);
        let first = cluster.elect();
        assert_ne!(first, 3);
        commit_commands(&mut cluster, 5);
        cluster.heal();
        assert!(cluster.run_until(1_000, |c| c.leader() == Some(3)), "seed {seed}: never moved to node 3");
        let term = cluster.node(3).term();
        commit_commands(&mut cluster, 5);
        cluster.run(400);
        assert_eq!((cluster.leader(), cluster.node(3).term()), (Some(3), term), "seed {seed}: leadership moved on");
        cluster.check_no_acknowledged_write_lost();
    }
}

#[test]
fn thesis_9_6_a_partitioned_follower_that_rejoins_does_not_disrupt_the_leader() {
    for seed in 0..4 {
        let mut cluster = Cluster::new(Options::new(5, seed));
        let leader = cluster.elect();
        cluster.message_log = Some(Vec::new());
        let term = cluster.node(leader).term();
        let straggler = other_than(&cluster, &[leader]);
        cluster.isolate(straggler);
        // Ten election timeouts away: pre-vote keeps its term from growing.
        commit_commands(&mut cluster, 10);
        cluster.run(10 * ELECTION_TIMEOUT_STEPS);
        assert_eq!(cluster.node(straggler).term(), term, "seed {seed}: the isolated node raised its term");
        let pre_votes = cluster.stats.sent.get("pre_vote").copied().unwrap_or(0);
        assert!(pre_votes > 0, "seed {seed}: the isolated node never tried to campaign");
        cluster.heal();
        cluster.run(10 * ELECTION_TIMEOUT_STEPS);
        assert_eq!(cluster.leader(), Some(leader), "seed {seed}");
        assert_eq!(cluster.node(leader).term(), term, "seed {seed}: the rejoining node disrupted the leader");
        assert!(cluster.leaders.keys().all(|t| *t == term));
        assert_eq!(cluster.node(straggler).leader_id(), Some(leader));
        assert!(cluster.run_until(200, |c| c.converged()));
        // No real vote request was ever sent.
        assert!(!cluster.message_log.as_ref().unwrap().iter().any(|(_, m)| m.body.kind() == "vote"));
    }
}

#[test]
fn thesis_6_2_check_quorum_makes_a_leader_cut_off_from_the_majority_step_down() {
    for seed in 0..4 {
        let mut cluster = Cluster::new(Options::new(5, seed));
        let old = cluster.elect();
        let term = cluster.node(old).term();
        let buddy = other_than(&cluster, &[old]);
        cluster.partition(&[old, buddy]);
        let cut_at = cluster.now_ms;
        assert!(cluster.run_until(3 * ELECTION_TIMEOUT_STEPS, |c| c.node(old).role() != Role::Leader));
        // One check period plus the check itself: at most two election timeouts.
        assert!(cluster.now_ms - cut_at <= 2 * 100 + 5, "stepped down only after {} ms", cluster.now_ms - cut_at);
        assert_eq!(cluster.node(old).term(), term, "stepping down needs no new term");
        assert!(matches!(cluster.propose(old, b"x"), Err(Error::NotLeader(_))));
        // The majority side elects a leader; the minority never does.
        assert!(cluster.run_until(1_000, |c| c.leader().is_some_and(|l| l != old && l != buddy)));
        cluster.run(200);
        assert!(cluster.node(old).role() != Role::Leader && cluster.node(buddy).role() != Role::Leader);
    }
}
