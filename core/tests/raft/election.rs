//! Leader election: §5.2 (randomized timeouts), thesis §9.6 (pre-vote), §6.2 / thesis §6.2
//! (check-quorum) and leader stickiness.

use crate::harness::{Cluster, Options};
use keel_core::Role;

#[test]
fn section_5_2_a_single_leader_is_elected_and_commits_its_noop() {
    for seed in 0..20 {
        let mut cluster = Cluster::new(Options::new(3, seed));
        let leader = cluster.elect();
        let term = cluster.node(leader).term();
        let followers = (1..=3).filter(|id| *id != leader);
        for id in followers {
            assert!(cluster.run_until(200, |c| c.node(id).leader_id() == Some(leader)));
            assert_eq!(cluster.node(id).term(), term);
        }
    }
}

#[test]
fn section_5_2_a_new_leader_is_elected_after_the_leader_crashes() {
    let mut cluster = Cluster::new(Options::new(5, 7));
    let first = cluster.elect();
    cluster.crash(first);
    assert!(cluster.run_until(1_000, |c| c.leader().is_some_and(|l| l != first)));
    let second = cluster.leader().unwrap();
    assert!(cluster.node(second).term() > 1);
}

#[test]
fn thesis_9_6_pre_vote_keeps_a_rejoining_node_from_disrupting_the_leader() {
    let mut cluster = Cluster::new(Options::new(3, 11));
    let leader = cluster.elect();
    let term = cluster.node(leader).term();
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    cluster.isolate(follower);
    cluster.run(1_000); // 5 s: many election timeouts while cut off
    assert_eq!(cluster.node(follower).term(), term, "pre-vote must not raise the isolated node's term");
    assert!(cluster.stats.sent.get("pre_vote").copied().unwrap_or(0) > 0, "the isolated node did try");
    cluster.heal();
    cluster.run(400);
    assert_eq!(cluster.leader(), Some(leader), "the healthy leader keeps leading");
    assert_eq!(cluster.node(leader).term(), term);
    assert_eq!(cluster.node(follower).leader_id(), Some(leader));
}

#[test]
fn thesis_6_2_check_quorum_makes_an_isolated_leader_step_down() {
    let mut cluster = Cluster::new(Options::new(3, 5));
    let leader = cluster.elect();
    cluster.isolate(leader);
    // Election timeout is 100 ms; check-quorum runs every election timeout.
    assert!(cluster.run_until(100, |c| c.node(leader).role() != Role::Leader), "isolated leader kept leading");
    assert!(cluster.run_until(1_000, |c| c.leader().is_some_and(|l| l != leader)), "majority elects a new leader");
}

#[test]
fn thesis_6_2_without_check_quorum_an_isolated_leader_keeps_its_role() {
    let mut options = Options::new(3, 5);
    options.configure = |config| config.check_quorum = false;
    let mut cluster = Cluster::new(options);
    let leader = cluster.elect();
    cluster.isolate(leader);
    cluster.run(200);
    assert_eq!(cluster.node(leader).role(), Role::Leader, "the control case: only check-quorum steps down");
}

#[test]
fn thesis_4_2_3_leader_stickiness_refuses_votes_while_the_leader_is_live() {
    use keel_core::{LogId, Message, MessageBody};
    let mut cluster = Cluster::new(Options::new(3, 3));
    let leader = cluster.elect();
    cluster.run(20);
    let voter = (1..=3).find(|id| *id != leader).unwrap();
    let candidate = (1..=3).find(|id| *id != leader && *id != voter).unwrap();
    let term = cluster.node(voter).term();
    let vote_before = cluster.node(voter).hard_state().voted_for;
    let last_log_id = LogId::new(term + 5, 1_000); // a better log than anyone's
    let request = MessageBody::RequestVote { last_log_id, pre_vote: false, leadership_transfer: false };
    cluster.node_mut(voter).step(Message { from: candidate, to: voter, term: term + 5, body: request });
    assert_eq!(cluster.node(voter).term(), term, "a sticky follower ignores a higher-term vote request");
    assert_eq!(cluster.node(voter).hard_state().voted_for, vote_before, "and keeps its vote");
    let ready = cluster.node_mut(voter).ready();
    assert!(
        !ready.messages.iter().any(|m| matches!(m.body, MessageBody::RequestVoteResponse { granted: true, .. })),
        "no vote granted"
    );
    // The same request flagged as a leadership transfer is honoured.
    let request = MessageBody::RequestVote { last_log_id, pre_vote: false, leadership_transfer: true };
    cluster.node_mut(voter).step(Message { from: candidate, to: voter, term: term + 5, body: request });
    assert_eq!(cluster.node(voter).term(), term + 5);
    assert_eq!(cluster.node(voter).hard_state().voted_for, Some(candidate));
}

#[test]
fn section_5_2_a_node_votes_at_most_once_per_term() {
    use keel_core::{Config, LogId, Membership, Message, MessageBody, RaftNode, RecoveredState};
    let mut node =
        RaftNode::new(Config::new(1), RecoveredState::bootstrap(Membership::with_voters([1, 2, 3]))).unwrap();
    node.tick(10_000); // past the boot stickiness window
    node.tick(20_000);
    // Node 1 may have campaigned by now; candidates 2 and 3 ask in the next term.
    let term = node.term() + 1;
    let vote = |from| Message {
        from,
        to: 1,
        term,
        body: MessageBody::RequestVote { last_log_id: LogId::new(0, 0), pre_vote: false, leadership_transfer: false },
    };
    node.step(vote(2));
    node.step(vote(3));
    let granted: Vec<u32> = node
        .ready()
        .messages
        .iter()
        .filter(|m| matches!(m.body, MessageBody::RequestVoteResponse { granted: true, pre_vote: false }))
        .map(|m| m.to)
        .collect();
    assert_eq!(granted, vec![2], "only the first candidate of the term gets the vote");
    assert_eq!(node.hard_state().voted_for, Some(2));
}

#[test]
fn section_5_4_1_a_candidate_with_a_stale_log_cannot_win() {
    let mut cluster = Cluster::new(Options::new(3, 21));
    let leader = cluster.elect();
    let stale = (1..=3).find(|id| *id != leader).unwrap();
    let other = (1..=3).find(|id| *id != leader && *id != stale).unwrap();
    cluster.isolate(stale);
    for i in 0..20u8 {
        cluster.propose(leader, &[i]).unwrap();
    }
    assert!(cluster.settle(400));
    cluster.crash(leader);
    cluster.heal();
    cluster.isolate(leader);
    assert!(cluster.run_until(2_000, |c| c.leader().is_some()));
    assert_eq!(cluster.leader(), Some(other), "only the up-to-date node can collect a majority");
    cluster.run(200);
    assert_eq!(cluster.leader(), Some(other));
}

#[test]
fn section_5_2_randomized_timeouts_resolve_split_votes_for_every_seed() {
    for seed in 0..50 {
        let mut options = Options::new(5, seed);
        options.delay_ms = (5, 20);
        let mut cluster = Cluster::new(options);
        cluster.elect();
    }
}
