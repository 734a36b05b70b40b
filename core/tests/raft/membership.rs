//! Cluster membership changes (thesis §4): learners (§4.2.1), one change at a time (§4.1), joint
//! consensus for changes of several voters (§4.3), removing the leader (§4.2.2) and removed
//! servers that must not disrupt the cluster (§4.2.3).

use std::collections::BTreeSet;

use keel_core::{
    EntryPayload, Error, LearnerKind, LogId, Membership, MembershipChange, MembershipError, NodeId, RecoveredState,
    Role,
};

use crate::harness::{Cluster, Options};
use crate::manual::Manual;

fn add_learner(node_id: NodeId, kind: LearnerKind) -> MembershipChange {
    MembershipChange::AddLearner { node_id, address: format!("n{node_id}"), kind }
}

fn commit_commands(cluster: &mut Cluster, count: usize, tag: &str) {
    let leader = cluster.elect();
    for i in 0..count {
        cluster.propose(leader, format!("{tag} {i}").as_bytes()).unwrap();
    }
    assert!(cluster.settle(2_000));
}

/// Asks the current leader for `change` and runs until its entry is committed on the leader and
/// the committed configuration is no longer joint. Returns the change's log id.
fn change(cluster: &mut Cluster, change: MembershipChange) -> LogId {
    let leader = cluster.elect();
    let log_id = cluster.node_mut(leader).change_membership(change).expect("change accepted");
    let done = cluster.run_until(2_000, |c| {
        c.leader().is_some_and(|l| {
            let (index, membership) = c.node(l).committed_membership();
            index >= log_id.index && !membership.is_joint()
        })
    });
    assert!(done, "membership change {log_id} did not complete");
    log_id
}

/// Runs until `id` applied everything the leader committed, and the leader knows it.
fn caught_up(cluster: &mut Cluster, id: NodeId) {
    let done = cluster.run_until(2_000, |c| {
        c.leader().is_some_and(|l| {
            let leader = c.node(l);
            let known =
                leader.peer_progress().iter().any(|(p, matched, _)| *p == id && *matched >= leader.commit_index());
            known && c.node(id).applied_index() >= leader.commit_index()
        })
    });
    assert!(done, "node {id} did not catch up");
}

fn voters(membership: &Membership) -> BTreeSet<NodeId> {
    membership.voters.clone()
}

fn membership_entries(cluster: &Cluster, id: NodeId, from: u64) -> Vec<(LogId, Membership)> {
    let raft = cluster.node(id);
    (from..=raft.last_log_id().index)
        .filter_map(|i| raft.entry(i))
        .filter_map(|e| match &e.payload {
            EntryPayload::Membership(m) => Some((e.log_id, (**m).clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn thesis_4_2_1_a_new_learner_catches_up_and_never_votes() {
    for seed in [1, 2, 3] {
        let mut cluster = Cluster::new(Options::new(3, seed));
        commit_commands(&mut cluster, 10, "before");
        cluster.add_node(4, RecoveredState::joining());
        cluster.message_log = Some(Vec::new());
        let added = change(&mut cluster, add_learner(4, LearnerKind::Promotable));
        caught_up(&mut cluster, 4);
        assert_eq!(cluster.node(4).role(), Role::Learner);
        assert!(cluster.node(4).membership().learners.contains_key(&4));
        assert!(cluster.node(4).entry(added.index).is_some());
        // Elections happen with the learner present: it is never asked and never campaigns.
        for _ in 0..2 {
            let leader = cluster.leader().unwrap();
            cluster.isolate(leader);
            assert!(cluster.run_until(1_000, |c| c.leader().is_some_and(|l| l != leader)));
            cluster.heal();
            commit_commands(&mut cluster, 3, "after");
        }
        cluster.run(400);
        assert_eq!(cluster.node(4).role(), Role::Learner);
        let log = cluster.message_log.as_ref().unwrap();
        let votes = ["pre_vote", "vote", "pre_vote_response", "vote_response"];
        assert!(log.iter().any(|(_, m)| m.body.kind() == "vote"), "seed {seed}: no election took place");
        assert!(
            !log.iter().any(|(_, m)| (m.from == 4 || m.to == 4) && votes.contains(&m.body.kind())),
            "seed {seed}: the learner took part in an election"
        );
        assert!(cluster.run_until(400, |c| c.converged()));
        cluster.check_no_acknowledged_write_lost();
    }
}

#[test]
fn thesis_4_2_1_a_caught_up_learner_is_promoted_and_counts_toward_the_quorum() {
    let mut cluster = Cluster::new(Options::new(3, 4));
    commit_commands(&mut cluster, 10, "before");
    cluster.add_node(4, RecoveredState::joining());
    change(&mut cluster, add_learner(4, LearnerKind::Promotable));
    caught_up(&mut cluster, 4);
    let promoted = change(&mut cluster, MembershipChange::PromoteLearner { node_id: 4 });
    let leader = cluster.leader().unwrap();
    let entry = cluster.node(leader).entry(promoted.index).unwrap().clone();
    assert!(
        matches!(&entry.payload, EntryPayload::Membership(m) if !m.is_joint() && m.voters == BTreeSet::from([1, 2, 3, 4])),
        "promoting one learner changes one voter: no joint configuration needed"
    );
    caught_up(&mut cluster, 4);
    assert_eq!(cluster.node(4).role(), Role::Follower);
    // With four voters the quorum is three: with two original voters down, node 4 must ack.
    let down: Vec<NodeId> = (1..=3).filter(|id| *id != leader).collect();
    cluster.crash(down[0]);
    commit_commands(&mut cluster, 5, "with node 4 in the quorum");
    cluster.crash(4);
    let leader = cluster.leader().unwrap();
    let stuck = cluster.propose(leader, b"no quorum").unwrap();
    cluster.run(200);
    assert!(!cluster.acknowledged.contains(&stuck), "committed with 2 of 4 voters");
    cluster.restart(4);
    assert!(cluster.settle(2_000));
    assert!(cluster.acknowledged.contains(&stuck) || cluster.failed.contains(&stuck));
}

#[test]
fn thesis_4_2_1_promoting_a_lagging_learner_is_refused_until_it_catches_up() {
    let mut options = Options::new(3, 5);
    options.configure = |c| c.promote_lag_entries_max = 5;
    let mut cluster = Cluster::new(options);
    commit_commands(&mut cluster, 3, "before");
    cluster.add_node(4, RecoveredState::joining());
    change(&mut cluster, add_learner(4, LearnerKind::Promotable));
    cluster.isolate(4);
    commit_commands(&mut cluster, 20, "while away");
    let leader = cluster.leader().unwrap();
    let refused = cluster.node_mut(leader).change_membership(MembershipChange::PromoteLearner { node_id: 4 });
    assert!(matches!(refused, Err(Error::LearnerLagging { node_id: 4, lag }) if lag >= 20), "{refused:?}");
    let refused = cluster.node_mut(leader).change_membership(MembershipChange::BatchPromote { node_ids: vec![4] });
    assert!(matches!(refused, Err(Error::LearnerLagging { node_id: 4, .. })), "{refused:?}");
    assert!(cluster.node(leader).membership().learners.contains_key(&4), "a refused change changes nothing");
    cluster.heal();
    caught_up(&mut cluster, 4);
    change(&mut cluster, MembershipChange::PromoteLearner { node_id: 4 });
    assert!(cluster.run_until(400, |c| c.node(4).role() == Role::Follower));
}

#[test]
fn thesis_4_2_1_a_read_only_learner_is_never_promoted() {
    let mut cluster = Cluster::new(Options::new(3, 6));
    cluster.add_node(4, RecoveredState::joining());
    change(&mut cluster, add_learner(4, LearnerKind::ReadOnly));
    caught_up(&mut cluster, 4);
    let leader = cluster.leader().unwrap();
    for request in
        [MembershipChange::PromoteLearner { node_id: 4 }, MembershipChange::BatchPromote { node_ids: vec![4] }]
    {
        let refused = cluster.node_mut(leader).change_membership(request);
        assert_eq!(refused, Err(Error::Membership(MembershipError::NotPromotable(4))));
    }
    assert_eq!(cluster.node(4).membership().learners.get(&4), Some(&LearnerKind::ReadOnly));
    assert_eq!(cluster.node(4).role(), Role::Learner);
}

#[test]
fn thesis_4_1_only_one_membership_change_is_in_progress_at_a_time() {
    let mut cluster = Cluster::new(Options::new(3, 7));
    // A new leader must first commit an entry of its term.
    assert!(cluster.run_until(2_000, |c| c.leader().is_some()));
    let leader = cluster.leader().unwrap();
    assert!(cluster.node(leader).commit_index() < cluster.node(leader).last_log_id().index);
    let early = cluster.node_mut(leader).change_membership(add_learner(4, LearnerKind::Promotable));
    assert_eq!(early, Err(Error::LeaderNotReady));
    let leader = cluster.elect();
    cluster.add_node(4, RecoveredState::joining());
    cluster.add_node(5, RecoveredState::joining());
    let first = cluster.node_mut(leader).change_membership(add_learner(4, LearnerKind::Promotable)).unwrap();
    let second = cluster.node_mut(leader).change_membership(add_learner(5, LearnerKind::Promotable));
    assert_eq!(second, Err(Error::MembershipChangeInProgress));
    assert!(cluster.run_until(400, |c| c.node(leader).commit_index() >= first.index));
    change(&mut cluster, add_learner(5, LearnerKind::Promotable));
    let leader = cluster.leader().unwrap();
    assert_eq!(cluster.node(leader).membership().learners.len(), 2);
}

#[test]
fn thesis_4_3_batch_promote_goes_through_a_joint_configuration_while_proposals_commit() {
    for seed in [8, 9] {
        let mut cluster = Cluster::new(Options::new(3, seed));
        commit_commands(&mut cluster, 5, "before");
        for id in [4, 5] {
            cluster.add_node(id, RecoveredState::joining());
            change(&mut cluster, add_learner(id, LearnerKind::Promotable));
        }
        caught_up(&mut cluster, 4);
        caught_up(&mut cluster, 5);
        let leader = cluster.elect();
        let joint_id = cluster
            .node_mut(leader)
            .change_membership(MembershipChange::BatchPromote { node_ids: vec![4, 5] })
            .unwrap();
        // Clients keep writing while the configuration changes.
        let mut proposed = Vec::new();
        for step in 0..2_000 {
            if let Some(l) = cluster.leader() {
                if let Ok(log_id) = cluster.propose(l, format!("during {step}").as_bytes()) {
                    proposed.push(log_id);
                }
            }
            cluster.step();
            let done = cluster.leader().is_some_and(|l| {
                let (index, m) = cluster.node(l).committed_membership();
                index > joint_id.index && !m.is_joint()
            });
            if done && proposed.len() >= 20 {
                break;
            }
        }
        let leader = cluster.leader().unwrap();
        let entries = membership_entries(&cluster, leader, joint_id.index);
        assert!(entries.len() >= 2, "seed {seed}: {entries:?}");
        let (joint_log_id, joint) = &entries[0];
        assert_eq!(*joint_log_id, joint_id);
        assert_eq!(voters(joint), BTreeSet::from([1, 2, 3, 4, 5]));
        assert_eq!(joint.voters_outgoing, BTreeSet::from([1, 2, 3]), "two voters change: joint configuration");
        let (leave_log_id, leave) = &entries[1];
        assert!(leave_log_id.index > joint_id.index && !leave.is_joint());
        assert_eq!(voters(leave), BTreeSet::from([1, 2, 3, 4, 5]));
        assert!(leave.learners.is_empty());
        assert!(cluster.settle(2_000));
        assert!(cluster.run_until(1_000, |c| c.converged()));
        for id in 1..=5 {
            assert_eq!(voters(cluster.node(id).membership()), BTreeSet::from([1, 2, 3, 4, 5]));
            assert!(!cluster.node(id).membership().is_joint());
        }
        let acknowledged = proposed.iter().filter(|l| cluster.acknowledged.contains(l)).count();
        assert!(acknowledged >= 20, "seed {seed}: only {acknowledged} writes during the change");
        cluster.check_no_acknowledged_write_lost();
    }
}

#[test]
fn thesis_4_3_batch_remove_of_two_voters_goes_through_a_joint_configuration() {
    let mut cluster = Cluster::new(Options::new(5, 10));
    commit_commands(&mut cluster, 5, "before");
    let leader = cluster.leader().unwrap();
    let removed: Vec<NodeId> = (1..=5).filter(|id| *id != leader).take(2).collect();
    let kept: BTreeSet<NodeId> = (1..=5).filter(|id| !removed.contains(id)).collect();
    let joint_id = change(&mut cluster, MembershipChange::BatchRemove { node_ids: removed.clone() });
    let leader = cluster.leader().unwrap();
    let entries = membership_entries(&cluster, leader, joint_id.index);
    assert_eq!(entries.len(), 2, "{entries:?}");
    assert_eq!(voters(&entries[0].1), kept);
    assert_eq!(entries[0].1.voters_outgoing, BTreeSet::from([1, 2, 3, 4, 5]));
    assert_eq!(voters(&entries[1].1), kept);
    assert!(!entries[1].1.is_joint());
    assert!(!entries[1].1.addresses.keys().any(|id| removed.contains(id)));
    // The removed nodes are shut down; the three left commit on their own (quorum of 2 of 3).
    for id in &removed {
        cluster.crash(*id);
    }
    let follower = kept.iter().copied().find(|id| *id != leader).unwrap();
    cluster.crash(follower);
    commit_commands(&mut cluster, 5, "after");
    cluster.restart(follower);
    assert!(cluster.run_until(1_000, |c| c.converged()));
    cluster.check_no_acknowledged_write_lost();
}

#[test]
fn thesis_4_2_2_a_removed_leader_hands_over_leadership_and_steps_down() {
    for seed in [11, 12, 13] {
        let mut cluster = Cluster::new(Options::new(3, seed));
        commit_commands(&mut cluster, 5, "before");
        let old = cluster.leader().unwrap();
        let term = cluster.node(old).term();
        let removal = cluster.node_mut(old).change_membership(MembershipChange::RemoveNode { node_id: old }).unwrap();
        assert!(!cluster.node(old).membership().is_voter(old));
        // The removed leader still replicates and commits the change (counting only the others).
        assert!(cluster.run_until(400, |c| c.node(old).commit_index() >= removal.index));
        let mut steps = 0;
        while cluster.leader().is_none_or(|l| l == old) {
            cluster.step();
            steps += 1;
            assert!(steps < 20, "seed {seed}: no hand-over within an election timeout");
        }
        let new = cluster.leader().unwrap();
        assert_eq!(cluster.node(new).term(), term + 1, "seed {seed}: handed over with TimeoutNow");
        // The old leader learns of the new term from the voters it still heartbeats, and then
        // stays a learner: it is not a voter of its own configuration.
        assert!(cluster.run_until(10, |c| c.node(old).role() != Role::Leader), "seed {seed}: still leading");
        assert_eq!(cluster.node(old).role(), Role::Learner);
        assert!(matches!(cluster.propose(old, b"x"), Err(Error::NotLeader(_))));
        assert_eq!(voters(cluster.node(new).membership()), (1..=3).filter(|id| *id != old).collect());
        cluster.crash(old);
        commit_commands(&mut cluster, 5, "after");
        assert!(cluster.run_until(400, |c| c.converged()));
        cluster.check_no_acknowledged_write_lost();
    }
}

#[test]
fn thesis_4_2_3_a_removed_node_that_keeps_running_does_not_disrupt_the_cluster() {
    for seed in [14, 15] {
        let mut cluster = Cluster::new(Options::new(3, seed));
        commit_commands(&mut cluster, 5, "before");
        let leader = cluster.leader().unwrap();
        let term = cluster.node(leader).term();
        let removed = (1..=3).find(|id| *id != leader).unwrap();
        let removed_term = cluster.node(removed).term();
        change(&mut cluster, MembershipChange::RemoveNode { node_id: removed });
        cluster.message_log = Some(Vec::new());
        // Ten seconds of simulated time: the removed node times out again and again.
        for round in 0..20 {
            commit_commands(&mut cluster, 2, &format!("round {round}"));
            cluster.run(100);
        }
        let log = cluster.message_log.as_ref().unwrap();
        let pre_votes_from_removed =
            log.iter().filter(|(_, m)| m.from == removed && m.body.kind() == "pre_vote").count();
        assert!(pre_votes_from_removed > 0, "seed {seed}: the removed node never tried to campaign");
        assert_eq!(cluster.leader(), Some(leader), "seed {seed}");
        assert_eq!(cluster.node(leader).term(), term, "seed {seed}: the removed node disrupted the leader");
        assert_eq!(
            cluster.node(removed).term(),
            removed_term,
            "seed {seed}: pre-vote let the removed node's term grow"
        );
        assert!(cluster.leaders.keys().all(|t| *t <= term));
    }
}

#[test]
fn thesis_4_3_a_batch_removal_including_the_leader_leaves_the_joint_configuration_then_hands_over() {
    let mut cluster = Cluster::new(Options::new(5, 16));
    commit_commands(&mut cluster, 5, "before");
    let old = cluster.leader().unwrap();
    let term = cluster.node(old).term();
    let other = (1..=5).find(|id| *id != old).unwrap();
    let kept: BTreeSet<NodeId> = (1..=5).filter(|id| *id != old && *id != other).collect();
    let joint_id =
        cluster.node_mut(old).change_membership(MembershipChange::BatchRemove { node_ids: vec![old, other] }).unwrap();
    // The leader stays in charge through the joint phase: it is an outgoing voter.
    assert!(cluster.run_until(1_000, |c| c.leader().is_some_and(|l| l != old)), "the leader never handed over");
    let new = cluster.leader().unwrap();
    assert!(kept.contains(&new));
    assert_eq!(cluster.node(new).term(), term + 1, "handed over with TimeoutNow, not an election timeout");
    let entries = membership_entries(&cluster, new, joint_id.index);
    assert!(entries.len() >= 2 && entries[0].1.is_joint() && !entries[1].1.is_joint(), "{entries:?}");
    assert_eq!(voters(&entries[1].1), kept);
    assert_eq!(cluster.elect(), new);
    let (committed_at, committed) = cluster.node(new).committed_membership();
    assert!(committed_at >= entries[1].0.index && voters(committed) == kept);
    cluster.crash(old);
    cluster.crash(other);
    commit_commands(&mut cluster, 5, "after");
    assert!(cluster.run_until(400, |c| c.converged()));
    cluster.check_no_acknowledged_write_lost();
}

#[test]
fn thesis_4_3_an_entry_of_a_joint_configuration_commits_only_with_a_majority_of_both_halves() {
    let mut m = Manual::new(5, |_| {});
    m.campaign(1);
    let joint_id = m.node_mut(1).change_membership(MembershipChange::BatchRemove { node_ids: vec![4, 5] }).unwrap();
    assert!(m.node(1).membership().is_joint());
    m.pump(1);
    m.sync(1);
    // The leaving voters 4 and 5 acknowledge: with the leader that is 3 of the 5 old voters,
    // but only 1 of the 3 new ones.
    for id in [4, 5] {
        m.deliver(|msg| msg.to == id);
        m.sync(id);
    }
    m.deliver(|msg| msg.to == 1);
    assert!(m.node(1).commit_index() < joint_id.index, "committed without a majority of the new voters");
    // Node 2 makes it 2 of 3 new voters as well.
    m.deliver(|msg| msg.to == 2);
    m.sync(2);
    m.deliver(|msg| msg.to == 1);
    assert!(m.node(1).commit_index() >= joint_id.index);
    // The leader then leaves the joint configuration on its own; the leave entry needs only the
    // new voters.
    let leave = m.node(1).last_log_id();
    assert!(leave.index > joint_id.index && !m.node(1).membership().is_joint());
    m.isolate(4);
    m.isolate(5);
    m.settle();
    let (index, committed) = m.node(1).committed_membership();
    assert_eq!(index, leave.index);
    assert_eq!(committed.voters, BTreeSet::from([1, 2, 3]));
}
