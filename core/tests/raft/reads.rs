//! Linearizable reads without log writes: ReadIndex (thesis §6.4), reads forwarded by followers,
//! and leader leases (thesis §6.4.1).

use bytes::Bytes;
use keel_core::{Error, LeaseConfig, MessageBody, NodeId, ReadIndexAnswer, ReadOutcome, ReadPolicy, Role};

use crate::harness::{Cluster, Options};
use crate::manual::Manual;

fn heartbeat_round(body: &MessageBody) -> Option<u64> {
    match body {
        MessageBody::Heartbeat { read_round, .. } => Some(*read_round),
        _ => None,
    }
}

fn heartbeats_sent(cluster: &Cluster) -> u64 {
    cluster.stats.sent.get("heartbeat").copied().unwrap_or(0)
}

fn with_lease(options: &mut Options) {
    options.configure = |c| c.lease = Some(LeaseConfig { clock_drift_ppm_max: 10_000 });
}

/// A manual three-node cluster led by node 1 with a few committed commands.
fn manual_with_commands() -> Manual {
    let mut m = Manual::new(3, |_| {});
    m.campaign(1);
    for i in 0..3 {
        m.node_mut(1).propose(Bytes::from(format!("c{i}"))).unwrap();
    }
    m.settle();
    m
}

#[test]
fn thesis_6_4_a_read_index_is_released_only_after_a_quorum_answers_a_round_sent_after_the_read() {
    let mut m = manual_with_commands();
    let commit = m.node(1).commit_index();
    // A periodic heartbeat round is in flight when the read arrives: its answers prove nothing
    // about leadership at the time of the read.
    let early = m.tick(1, 10);
    let early_round = early.messages.iter().find_map(|msg| heartbeat_round(&msg.body)).expect("periodic heartbeat");
    m.node_mut(1).read(7, ReadPolicy::Linearizable).unwrap();
    let ready = m.pump(1);
    assert!(ready.reads.is_empty(), "a read was served before leadership was confirmed");
    let rounds: Vec<(NodeId, u64)> =
        ready.messages.iter().filter_map(|msg| heartbeat_round(&msg.body).map(|r| (msg.to, r))).collect();
    assert_eq!(rounds.len(), 2, "the read starts one heartbeat round to each follower");
    let read_round = rounds[0].1;
    assert!(read_round > early_round && rounds.iter().all(|(_, r)| *r == read_round));
    // Both followers answer the earlier round: not enough.
    m.deliver(|msg| heartbeat_round(&msg.body) == Some(early_round));
    m.deliver(|msg| matches!(msg.body, MessageBody::HeartbeatResponse { read_round } if read_round == early_round));
    assert!(m.reads[&1].is_empty(), "an answer to a round sent before the read confirmed it");
    // One follower answers the read's round: with the leader that is a quorum of three.
    m.deliver(|msg| msg.to == 2 && heartbeat_round(&msg.body) == Some(read_round));
    assert!(m.reads[&1].is_empty());
    m.deliver(|msg| msg.from == 2 && matches!(msg.body, MessageBody::HeartbeatResponse { .. }));
    assert_eq!(m.reads[&1], vec![ReadOutcome { id: 7, result: Ok(commit) }]);
}

#[test]
fn thesis_6_4_concurrent_reads_share_one_heartbeat_round() {
    let mut m = manual_with_commands();
    let commit = m.node(1).commit_index();
    for id in 0..50 {
        m.node_mut(1).read(id, ReadPolicy::Linearizable).unwrap();
    }
    let ready = m.pump(1);
    let rounds: Vec<u64> = ready.messages.iter().filter_map(|msg| heartbeat_round(&msg.body)).collect();
    assert_eq!(rounds.len(), 2, "fifty reads need a single round: one heartbeat per follower");
    let heartbeats_before = m.sent.iter().filter(|msg| heartbeat_round(&msg.body).is_some()).count();
    m.settle();
    let heartbeats_after = m.sent.iter().filter(|msg| heartbeat_round(&msg.body).is_some()).count();
    assert_eq!(heartbeats_before, heartbeats_after, "no further round was needed");
    let mut served: Vec<ReadOutcome> = m.reads[&1].clone();
    served.sort_by_key(|r| r.id);
    assert_eq!(served, (0..50).map(|id| ReadOutcome { id, result: Ok(commit) }).collect::<Vec<_>>());
    // A read arriving after the round was sent needs the next round.
    m.node_mut(1).read(50, ReadPolicy::Linearizable).unwrap();
    let ready = m.pump(1);
    assert_eq!(ready.messages.iter().filter(|msg| heartbeat_round(&msg.body).is_some()).count(), 2);
}

#[test]
fn thesis_6_4_a_leader_cut_off_from_the_majority_never_completes_a_read() {
    for seed in [3, 4, 5] {
        let mut cluster = Cluster::new(Options::new(5, seed));
        let old = cluster.elect();
        assert!(cluster.settle(100));
        let buddy = (1..=5).find(|id| *id != old).unwrap();
        cluster.partition(&[old, buddy]);
        cluster.read(old, 1, ReadPolicy::Linearizable).unwrap();
        // The majority moves on and commits a write the old leader does not know of.
        assert!(cluster.run_until(1_000, |c| c.leader().is_some_and(|l| l != old)));
        let new = cluster.leader().unwrap();
        let write = cluster.propose(new, b"newer").unwrap();
        assert!(cluster.run_until(1_000, |c| c.acknowledged.contains(&write)));
        assert!(cluster.run_until(1_000, |c| c.node(old).role() != Role::Leader), "check-quorum never fired");
        cluster.run(50);
        let outcomes = cluster.take_reads(old);
        assert_eq!(outcomes.len(), 1, "seed {seed}: {outcomes:?}");
        assert!(matches!(outcomes[0].result, Err(Error::LeadershipLost(_))), "seed {seed}: {outcomes:?}");
    }
}

#[test]
fn thesis_6_4_a_follower_forwards_reads_and_serves_them_once_it_applied_the_leaders_index() {
    let mut m = manual_with_commands();
    // Node 3 misses the next commands: it knows the leader but lags behind it.
    for i in 0..5 {
        m.node_mut(1).propose(Bytes::from(format!("more {i}"))).unwrap();
    }
    for _ in 0..4 {
        m.sync(1);
        m.sync(2);
        m.deliver(|msg| msg.to != 3);
    }
    let commit = m.node(1).commit_index();
    assert!(m.node(3).applied_index() < commit);
    assert_eq!(m.node(3).leader_id(), Some(1));
    m.node_mut(3).read(42, ReadPolicy::Linearizable).unwrap();
    let ready = m.pump(3);
    assert!(
        ready
            .messages
            .iter()
            .any(|msg| msg.to == 1
                && matches!(&msg.body, MessageBody::ReadIndexRequest { read_ids } if read_ids == &[42]))
    );
    // The leader confirms its leadership with node 2 and answers with its commit index.
    m.deliver(|msg| matches!(msg.body, MessageBody::ReadIndexRequest { .. }));
    m.deliver(|msg| msg.to == 2 && heartbeat_round(&msg.body).is_some());
    m.deliver(|msg| msg.from == 2 && msg.to == 1);
    let answered = m.deliver(|msg| {
        msg.to == 3
            && matches!(msg.body, MessageBody::ReadIndexResponse { answer: ReadIndexAnswer::Confirmed(index), .. } if index == commit)
    });
    assert_eq!(answered, 1, "the leader answers a forwarded read with its commit index");
    assert!(m.reads.get(&3).is_none_or(Vec::is_empty), "read served before the follower applied the read index");
    // The follower catches up; only then is the read served.
    m.settle();
    assert!(m.node(3).applied_index() >= commit);
    assert_eq!(m.reads[&3], vec![ReadOutcome { id: 42, result: Ok(commit) }]);
}

#[test]
fn thesis_6_4_a_forwarded_read_in_a_running_cluster_sees_every_write_acknowledged_before_it() {
    let mut cluster = Cluster::new(Options::new(3, 9));
    let leader = cluster.elect();
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    for round in 0..10u64 {
        let write = cluster.propose(leader, format!("w{round}").as_bytes()).unwrap();
        assert!(cluster.run_until(400, |c| c.acknowledged.contains(&write)));
        cluster.read(follower, round, ReadPolicy::Linearizable).unwrap();
        assert!(cluster.run_until(400, |c| !c.nodes[&follower].reads.is_empty()));
        let outcome = cluster.take_reads(follower).pop().unwrap();
        let index = outcome.result.expect("a forwarded read succeeds in a healthy cluster");
        assert!(index >= write.index, "read index {index} misses acknowledged write {write}");
        assert!(cluster.nodes[&follower].machine.applied >= index, "served before applying the read index");
    }
}

#[test]
fn thesis_6_4_1_a_lease_read_is_served_locally_while_the_lease_is_held() {
    let mut options = Options::new(3, 1);
    with_lease(&mut options);
    let mut cluster = Cluster::new(options);
    let leader = cluster.elect();
    cluster.run(20);
    let commit = cluster.node(leader).commit_index();
    let before = heartbeats_sent(&cluster);
    cluster.read(leader, 1, ReadPolicy::Lease).unwrap();
    cluster.process_ready(leader);
    assert_eq!(heartbeats_sent(&cluster), before, "a lease read needs no heartbeat round");
    assert_eq!(cluster.take_reads(leader), vec![ReadOutcome { id: 1, result: Ok(commit) }]);
    // A linearizable read on the same leader still needs a round.
    cluster.read(leader, 2, ReadPolicy::Linearizable).unwrap();
    cluster.process_ready(leader);
    assert_eq!(heartbeats_sent(&cluster), before + 2);
    assert!(cluster.take_reads(leader).is_empty());
    assert!(cluster.run_until(50, |c| !c.nodes[&leader].reads.is_empty()));
    assert_eq!(cluster.take_reads(leader), vec![ReadOutcome { id: 2, result: Ok(commit) }]);
}

#[test]
fn thesis_6_4_1_without_lease_configuration_a_lease_read_falls_back_to_read_index() {
    let mut cluster = Cluster::new(Options::new(3, 1));
    let leader = cluster.elect();
    cluster.run(20);
    let before = heartbeats_sent(&cluster);
    cluster.read(leader, 1, ReadPolicy::Lease).unwrap();
    cluster.process_ready(leader);
    assert_eq!(heartbeats_sent(&cluster), before + 2, "the read must confirm leadership with a round");
    assert!(cluster.take_reads(leader).is_empty());
    assert!(cluster.run_until(50, |c| !c.nodes[&leader].reads.is_empty()));
    assert!(cluster.take_reads(leader)[0].result.is_ok());
}

#[test]
fn thesis_6_4_1_a_leader_cut_off_from_the_majority_stops_serving_lease_reads_before_anyone_else_can_lead() {
    for seed in [1, 2, 3, 4] {
        let mut options = Options::new(5, seed);
        with_lease(&mut options);
        let mut cluster = Cluster::new(options);
        let old = cluster.elect();
        cluster.run(20);
        let old_term = cluster.node(old).term();
        let buddy = (1..=5).find(|id| *id != old).unwrap();
        cluster.partition(&[old, buddy]);
        let cut_at = cluster.now_ms;
        // Every step, a client asks the old leader for a lease read while it believes it leads.
        let mut issued: Vec<(u64, u64)> = Vec::new();
        let mut outcomes: Vec<ReadOutcome> = Vec::new();
        let mut new_leader_at = None;
        let mut fallback_checked = false;
        for step in 0..400u64 {
            if cluster.is_up(old) && cluster.node(old).role() == Role::Leader {
                let heartbeats = heartbeats_sent(&cluster);
                cluster.read(old, step, ReadPolicy::Lease).unwrap();
                issued.push((step, cluster.now_ms));
                if cluster.now_ms >= cut_at + 80 && !fallback_checked {
                    // The lease has run out: the read falls back to a (hopeless) heartbeat round.
                    cluster.process_ready(old);
                    assert!(heartbeats_sent(&cluster) > heartbeats, "seed {seed}: expired lease served locally");
                    fallback_checked = true;
                }
            }
            cluster.step();
            outcomes.extend(cluster.take_reads(old));
            let elected = cluster.leaders.iter().any(|(term, id)| *term > old_term && *id != old);
            if elected && new_leader_at.is_none() {
                new_leader_at = Some(cluster.now_ms);
            }
        }
        let new_leader_at = new_leader_at.expect("the majority elects a new leader");
        assert!(fallback_checked, "seed {seed}: the old leader stepped down before its lease expired");
        let served: Vec<u64> = outcomes
            .iter()
            .filter(|o| o.result.is_ok())
            .map(|o| issued.iter().find(|(id, _)| *id == o.id).unwrap().1)
            .collect();
        assert!(!served.is_empty(), "seed {seed}: no lease read was served right after the partition");
        for at in &served {
            assert!(*at < new_leader_at, "seed {seed}: lease read at {at} ms, new leader since {new_leader_at} ms");
            assert!(*at < cut_at + 100, "seed {seed}: lease read at {at} ms outlived the lease");
        }
        let failed = outcomes.iter().filter(|o| matches!(o.result, Err(Error::LeadershipLost(_)))).count();
        assert_eq!(served.len() + failed, issued.len(), "seed {seed}: every read got an answer");
        assert!(failed > 0);
    }
}

#[test]
fn thesis_6_4_reads_beyond_pending_reads_max_are_refused() {
    let mut options = Options::new(3, 2);
    options.configure = |c| c.pending_reads_max = 4;
    let mut cluster = Cluster::new(options);
    let leader = cluster.elect();
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    for id in 0..4 {
        cluster.read(leader, id, ReadPolicy::Linearizable).unwrap();
    }
    assert_eq!(cluster.read(leader, 4, ReadPolicy::Linearizable), Err(Error::TooManyPendingReads { limit: 4 }));
    assert!(cluster.run_until(100, |c| c.nodes[&leader].reads.len() == 4));
    assert!(cluster.take_reads(leader).iter().all(|o| o.result.is_ok()));
    // A follower counts the reads it forwarded and waits on.
    for id in 0..4 {
        cluster.read(follower, id, ReadPolicy::Linearizable).unwrap();
    }
    assert_eq!(cluster.read(follower, 4, ReadPolicy::Linearizable), Err(Error::TooManyPendingReads { limit: 4 }));
    assert!(cluster.run_until(100, |c| c.nodes[&follower].reads.len() == 4));
    assert!(cluster.take_reads(follower).iter().all(|o| o.result.is_ok()));
    // Served reads free their slots.
    cluster.read(leader, 10, ReadPolicy::Linearizable).unwrap();
    assert!(cluster.run_until(100, |c| c.nodes[&leader].reads.len() == 1));
}

#[test]
fn thesis_6_4_1_a_leader_holds_no_lease_after_sending_timeout_now_even_if_the_transfer_is_abandoned() {
    // The transfer target's election skips leader stickiness, and TimeoutNow may arrive late:
    // once it is sent, the old leader can no longer rely on voters refusing other candidates.
    let mut m = Manual::new(3, |c| {
        c.check_quorum = true;
        c.lease = Some(LeaseConfig { clock_drift_ppm_max: 10_000 });
    });
    m.campaign(1);
    m.tick(1, 10);
    m.settle();
    // The lease works: a lease read is served at once, without a heartbeat round.
    m.node_mut(1).read(1, ReadPolicy::Lease).unwrap();
    let ready = m.pump(1);
    assert!(matches!(ready.reads.as_slice(), [ReadOutcome { id: 1, result: Ok(_) }]), "{ready:?}");
    assert!(ready.messages.iter().all(|msg| heartbeat_round(&msg.body).is_none()));
    m.node_mut(1).transfer_leadership(2).unwrap();
    m.pump(1);
    let is_timeout_now = |msg: &keel_core::Message| matches!(msg.body, MessageBody::TimeoutNow);
    assert!(m.network.iter().any(is_timeout_now), "the caught-up target gets TimeoutNow at once");
    // TimeoutNow is delayed; the transfer times out and the leader carries on with heartbeats.
    for _ in 0..12 {
        m.tick(1, 10);
        for _ in 0..3 {
            m.deliver(|msg| !is_timeout_now(msg));
        }
    }
    assert_eq!(m.node(1).role(), Role::Leader);
    assert!(m.node_mut(1).propose(Bytes::from_static(b"after abandon")).is_ok(), "the transfer was abandoned");
    m.settle_except(is_timeout_now);
    let stale_commit = m.node(1).commit_index();
    // TimeoutNow finally arrives: node 2 wins with node 3's vote and commits a write, while node
    // 1 is cut off from both.
    m.deliver(is_timeout_now);
    m.isolate(1);
    m.settle();
    assert_eq!(m.node(2).role(), Role::Leader);
    let write = m.node_mut(2).propose(Bytes::from_static(b"newer")).unwrap();
    m.settle();
    assert!(m.node(2).commit_index() >= write.index, "the new leader committed a write");
    // The old leader's clock has not moved: a lease it took after the abandoned transfer would
    // still be running. Serving from it would miss the committed write.
    m.node_mut(1).read(99, ReadPolicy::Lease).unwrap();
    m.pump(1);
    let outcome = m.reads[&1].iter().find(|r| r.id == 99).cloned();
    assert!(
        !matches!(outcome, Some(ReadOutcome { result: Ok(index), .. }) if index < write.index),
        "stale lease read at {stale_commit} after {write} committed: {outcome:?}"
    );
    // Confirming with a heartbeat round instead reveals the new term: the read fails.
    m.blocked.clear();
    m.tick(1, 10);
    m.settle();
    let outcome = m.reads[&1].iter().find(|r| r.id == 99).cloned();
    assert!(matches!(outcome, Some(ReadOutcome { result: Err(Error::LeadershipLost(_)), .. })), "{outcome:?}");
}

#[test]
fn thesis_6_4_a_forwarded_read_that_the_leader_never_answers_times_out() {
    static FOLLOWER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let mut cluster = Cluster::new(Options::new(3, 12));
    let leader = cluster.elect();
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    FOLLOWER.store(follower, std::sync::atomic::Ordering::SeqCst);
    // The follower's read requests are lost; it still hears the leader's heartbeats.
    cluster.drop_filter = Some(|m| {
        m.from == FOLLOWER.load(std::sync::atomic::Ordering::SeqCst)
            && matches!(m.body, MessageBody::ReadIndexRequest { .. })
    });
    cluster.read(follower, 5, ReadPolicy::Linearizable).unwrap();
    let asked_at = cluster.now_ms;
    assert!(cluster.run_until(100, |c| !c.nodes[&follower].reads.is_empty()));
    assert!(cluster.now_ms >= asked_at + 100, "timed out before an election timeout");
    assert_eq!(cluster.take_reads(follower), vec![ReadOutcome { id: 5, result: Err(Error::Timeout) }]);
    assert_eq!(cluster.node(follower).leader_id(), Some(leader));
    // A retry once the network recovers succeeds.
    cluster.drop_filter = None;
    cluster.read(follower, 6, ReadPolicy::Linearizable).unwrap();
    assert!(cluster.run_until(100, |c| !c.nodes[&follower].reads.is_empty()));
    assert!(cluster.take_reads(follower)[0].result.is_ok());
}

#[test]
fn thesis_6_4_a_new_leader_serves_reads_only_after_committing_its_no_op() {
    // The old leader acknowledges a write and crashes before the followers learn that it
    // committed: the new leader's commit index is stale until its own no-op commits.
    for seed in [20, 21, 22, 23] {
        let mut cluster = Cluster::new(Options::new(3, seed));
        let old = cluster.elect();
        let write = cluster.propose(old, b"acknowledged").unwrap();
        assert!(cluster.run_until(100, |c| c.acknowledged.contains(&write)));
        cluster.crash(old);
        assert!(cluster.run_until(1_000, |c| c.leader().is_some()));
        let new = cluster.leader().unwrap();
        cluster.read(new, 1, ReadPolicy::Linearizable).unwrap();
        assert!(cluster.run_until(200, |c| !c.nodes[&new].reads.is_empty()));
        let outcome = cluster.take_reads(new).pop().unwrap();
        let index = outcome.result.expect("the new leader serves the read");
        assert!(index >= write.index, "seed {seed}: read index {index} misses acknowledged write {write}");
        let noop = cluster.node(new).entry(index).map(|e| e.log_id.term);
        assert_eq!(noop, Some(cluster.node(new).term()), "seed {seed}: read index is not of the leader's term");
    }
}

#[test]
fn thesis_6_4_a_learner_serves_linearizable_reads_through_the_leader() {
    use keel_core::{LearnerKind, MembershipChange, RecoveredState};
    let mut cluster = Cluster::new(Options::new(3, 13));
    let leader = cluster.elect();
    cluster.add_node(4, RecoveredState::joining());
    let change = MembershipChange::AddLearner { node_id: 4, address: "n4".into(), kind: LearnerKind::ReadOnly };
    let added = cluster.node_mut(leader).change_membership(change).unwrap();
    assert!(cluster.run_until(400, |c| c.node(4).applied_index() >= added.index));
    let write = cluster.propose(leader, b"seen by the learner").unwrap();
    assert!(cluster.run_until(400, |c| c.acknowledged.contains(&write)));
    cluster.read(4, 1, ReadPolicy::Linearizable).unwrap();
    assert!(cluster.run_until(200, |c| !c.nodes[&4].reads.is_empty()));
    let index = cluster.take_reads(4)[0].result.clone().expect("a learner read succeeds");
    assert!(index >= write.index);
    assert!(cluster.nodes[&4].machine.applied >= index);
    assert_eq!(cluster.node(4).role(), Role::Learner);
}

#[test]
fn thesis_6_4_1_a_restarted_voter_grants_no_vote_before_its_first_tick() {
    // Node 2 acknowledged the round that gave node 1 its lease, then restarted. Until it has run
    // for an election timeout it must refuse votes, even before its first tick: node 1 may still
    // serve lease reads that count on node 2's promise.
    let mut m = Manual::new(3, |c| {
        c.check_quorum = true;
        c.lease = Some(LeaseConfig { clock_drift_ppm_max: 10_000 });
    });
    m.campaign(1);
    m.tick(1, 10);
    m.settle();
    m.node_mut(1).read(1, ReadPolicy::Lease).unwrap();
    assert!(matches!(m.pump(1).reads.as_slice(), [ReadOutcome { result: Ok(_), .. }]), "node 1 holds a lease");
    m.isolate(1);
    m.restart(2);
    // Node 3 campaigns; the restarted node 2 receives the requests before it ticks.
    m.tick(3, 150);
    m.tick(3, 1 << 30);
    m.settle();
    assert_ne!(m.node(3).role(), Role::Leader, "a restarted voter granted a vote while node 1's lease may hold");
    assert_eq!(m.node(2).term(), 1);
    // Once node 2 has run for an election timeout, node 3 can be elected.
    m.tick(2, 0);
    m.tick(2, 150);
    m.tick(3, 1 << 30);
    m.settle();
    assert_eq!(m.node(3).role(), Role::Leader);
}

#[test]
fn thesis_6_4_a_leader_with_a_full_read_queue_refuses_forwarded_reads_as_overloaded() {
    let mut m = Manual::new(3, |c| c.pending_reads_max = 2);
    m.campaign(1);
    m.settle();
    // Two reads wait at the leader for a heartbeat round that is never answered.
    m.node_mut(1).read(1, ReadPolicy::Linearizable).unwrap();
    m.node_mut(1).read(2, ReadPolicy::Linearizable).unwrap();
    m.pump(1);
    m.node_mut(3).read(9, ReadPolicy::Linearizable).unwrap();
    m.pump(3);
    let forwarded = m.deliver(|msg| matches!(msg.body, MessageBody::ReadIndexRequest { .. }));
    assert_eq!(forwarded, 1);
    let answered =
        m.deliver(|msg| matches!(msg.body, MessageBody::ReadIndexResponse { answer: ReadIndexAnswer::Overloaded, .. }));
    assert_eq!(answered, 1, "the leader says why it refused");
    let outcomes = m.reads.get(&3).cloned().unwrap_or_default();
    assert_eq!(outcomes.len(), 1);
    assert_eq!(outcomes[0].result, Err(Error::TooManyPendingReads { limit: 2 }), "not a misleading NotLeader");
}
