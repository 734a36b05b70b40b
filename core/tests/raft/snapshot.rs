//! Log compaction and snapshot transfer (Raft paper §7, thesis §5): chunked, resumable
//! InstallSnapshot to followers and new learners behind the compaction point, and recovery from
//! a snapshot on restart.

use std::sync::atomic::{AtomicUsize, Ordering};

use keel_core::{LearnerKind, LogId, MembershipChange, Message, MessageBody, NodeId, RecoveredState};

use crate::harness::{Cluster, Options};

/// 256-byte chunks: the harness's 2,016-byte snapshots (16 bytes of state, 2,000 of padding)
/// travel in 8 chunks.
fn small_chunks(options: &mut Options) {
    options.configure = |c| c.snapshot_chunk_bytes = 256;
}

const CHUNKS: usize = 8;

fn commit_commands(cluster: &mut Cluster, count: usize, tag: &str) -> Vec<LogId> {
    let leader = cluster.elect();
    let log_ids: Vec<LogId> =
        (0..count).map(|i| cluster.propose(leader, format!("{tag} {i}").as_bytes()).unwrap()).collect();
    assert!(cluster.settle(2_000), "proposals were not decided");
    log_ids
}

fn chunks_to(cluster: &Cluster, to: NodeId) -> Vec<(u64, u64)> {
    let log = cluster.message_log.as_ref().expect("message log enabled");
    log.iter()
        .filter(|(_, m)| m.to == to)
        .filter_map(|(_, m)| match &m.body {
            MessageBody::InstallSnapshot { offset, data, .. } => Some((*offset, data.len() as u64)),
            _ => None,
        })
        .collect()
}

/// Crashes a follower, commits `count` commands without it, and compacts the leader's log past
/// everything the follower holds. Returns the follower.
fn leave_a_follower_behind_the_compaction_point(cluster: &mut Cluster, count: usize) -> NodeId {
    let leader = cluster.elect();
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    commit_commands(cluster, 5, "before");
    assert!(cluster.run_until(400, |c| c.converged()));
    cluster.crash(follower);
    commit_commands(cluster, count, "while down");
    let leader = cluster.leader().unwrap();
    assert!(cluster.take_snapshot(leader));
    assert!(
        cluster.node(leader).first_log_index() > cluster.nodes[&follower].disk.entries.last().unwrap().log_id.index + 1
    );
    follower
}

fn assert_same_state(cluster: &Cluster, a: NodeId, b: NodeId) {
    assert_eq!(cluster.nodes[&a].machine, cluster.nodes[&b].machine, "state machines of {a} and {b} differ");
}

#[test]
fn section_7_a_follower_behind_the_compaction_point_receives_the_snapshot_in_chunks_and_converges() {
    for seed in [1, 2, 3] {
        let mut options = Options::new(3, seed);
        small_chunks(&mut options);
        let mut cluster = Cluster::new(options);
        let follower = leave_a_follower_behind_the_compaction_point(&mut cluster, 30);
        let leader = cluster.leader().unwrap();
        let snapshot_index = cluster.node(leader).first_log_index() - 1;
        cluster.message_log = Some(Vec::new());
        cluster.restart(follower);
        assert!(cluster.run_until(1_000, |c| c.converged()), "seed {seed}: the follower never caught up");
        let chunks = chunks_to(&cluster, follower);
        assert_eq!(chunks.len(), CHUNKS, "seed {seed}: {chunks:?}");
        let offsets: Vec<u64> = chunks.iter().map(|(offset, _)| *offset).collect();
        assert_eq!(offsets, (0..CHUNKS as u64).map(|i| i * 256).collect::<Vec<_>>());
        assert!(chunks.iter().all(|(_, len)| *len <= 256));
        assert_eq!(chunks.iter().map(|(_, len)| len).sum::<u64>(), 2_016);
        let installed = cluster.nodes[&follower].disk.snapshot.as_ref().expect("snapshot installed");
        assert_eq!(installed.meta.last_included.index, snapshot_index);
        assert_eq!(cluster.node(follower).first_log_index(), snapshot_index + 1);
        assert_same_state(&cluster, leader, follower);
        // Replication resumes normally after the snapshot.
        commit_commands(&mut cluster, 10, "after");
        assert!(cluster.run_until(400, |c| c.converged()));
        assert_same_state(&cluster, leader, follower);
        assert_eq!(chunks_to(&cluster, follower).len(), CHUNKS, "no second snapshot was needed");
        cluster.check_no_acknowledged_write_lost();
    }
}

#[test]
fn section_7_an_interrupted_snapshot_transfer_resumes_where_it_stopped() {
    static DROPPED: AtomicUsize = AtomicUsize::new(0);
    fn drop_two_middle_chunks(message: &Message) -> bool {
        let middle = matches!(message.body, MessageBody::InstallSnapshot { offset, .. } if offset == 768);
        middle && DROPPED.fetch_add(1, Ordering::SeqCst) < 2
    }
    let mut options = Options::new(3, 4);
    small_chunks(&mut options);
    let mut cluster = Cluster::new(options);
    let follower = leave_a_follower_behind_the_compaction_point(&mut cluster, 20);
    let leader = cluster.leader().unwrap();
    cluster.message_log = Some(Vec::new());
    cluster.drop_filter = Some(drop_two_middle_chunks);
    cluster.restart(follower);
    assert!(cluster.run_until(2_000, |c| c.converged()), "the transfer never completed");
    assert!(DROPPED.load(Ordering::SeqCst) >= 2, "the chunk at 768 was not sent twice");
    let offsets: Vec<u64> = chunks_to(&cluster, follower).iter().map(|(offset, _)| *offset).collect();
    // The chunk at 768 is resent (twice lost, then delivered); nothing before it is sent again.
    assert_eq!(offsets.iter().filter(|o| **o == 768).count(), 3, "{offsets:?}");
    assert_eq!(offsets.iter().filter(|o| **o == 0).count(), 1, "the transfer restarted from the start: {offsets:?}");
    assert_eq!(offsets.len(), CHUNKS + 2, "{offsets:?}");
    assert_same_state(&cluster, leader, follower);
    commit_commands(&mut cluster, 5, "after");
    assert!(cluster.run_until(400, |c| c.converged()));
    cluster.check_no_acknowledged_write_lost();
}

#[test]
fn section_7_a_snapshot_transfer_cut_by_a_partition_resumes_after_it_heals() {
    let mut options = Options::new(3, 5);
    small_chunks(&mut options);
    let mut cluster = Cluster::new(options);
    let follower = leave_a_follower_behind_the_compaction_point(&mut cluster, 20);
    let leader = cluster.leader().unwrap();
    cluster.message_log = Some(Vec::new());
    cluster.restart(follower);
    assert!(cluster.run_until(400, |c| chunks_to(c, follower).len() >= 3), "the transfer never started");
    cluster.isolate(follower);
    cluster.run(100);
    let installed = cluster.nodes[&follower].disk.snapshot.as_ref().map_or(0, |s| s.meta.last_included.index);
    assert_eq!(installed, 0, "the transfer completed despite the partition");
    cluster.heal();
    assert!(cluster.run_until(2_000, |c| c.converged()), "the transfer never completed");
    let offsets: Vec<u64> = chunks_to(&cluster, follower).iter().map(|(offset, _)| *offset).collect();
    assert_eq!(offsets.iter().filter(|o| **o == 0).count(), 1, "the transfer restarted from the start: {offsets:?}");
    assert!(offsets.contains(&(256 * (CHUNKS as u64 - 1))));
    assert_same_state(&cluster, leader, follower);
    cluster.check_no_acknowledged_write_lost();
}

#[test]
fn section_7_a_learner_added_after_compaction_catches_up_by_snapshot() {
    let mut options = Options::new(3, 6);
    small_chunks(&mut options);
    let mut cluster = Cluster::new(options);
    commit_commands(&mut cluster, 20, "before");
    assert!(cluster.run_until(400, |c| c.converged()));
    for id in 1..=3 {
        assert!(cluster.take_snapshot(id));
    }
    let leader = cluster.leader().unwrap();
    let snapshot_index = cluster.node(leader).first_log_index() - 1;
    assert!(snapshot_index >= 20);
    cluster.message_log = Some(Vec::new());
    cluster.add_node(4, RecoveredState::joining());
    let change = MembershipChange::AddLearner { node_id: 4, address: "n4".into(), kind: LearnerKind::Promotable };
    cluster.node_mut(leader).change_membership(change).unwrap();
    assert!(cluster.run_until(1_000, |c| c.converged()), "the learner never caught up");
    assert_eq!(chunks_to(&cluster, 4).len(), CHUNKS);
    let installed = cluster.nodes[&4].disk.snapshot.as_ref().expect("the learner installed a snapshot");
    assert_eq!(installed.meta.last_included.index, snapshot_index);
    assert!(!installed.meta.membership.contains(4), "the snapshot predates the learner");
    assert!(cluster.node(4).membership().learners.contains_key(&4));
    assert_same_state(&cluster, leader, 4);
    commit_commands(&mut cluster, 5, "after");
    assert!(cluster.run_until(400, |c| c.converged()));
    assert_same_state(&cluster, leader, 4);
    cluster.check_no_acknowledged_write_lost();
}

#[test]
fn section_7_nodes_restart_from_their_snapshot_and_log_suffix() {
    for seed in [7, 8] {
        let mut options = Options::new(3, seed);
        small_chunks(&mut options);
        let mut cluster = Cluster::new(options);
        commit_commands(&mut cluster, 15, "before");
        assert!(cluster.run_until(400, |c| c.converged()));
        let mut snapshot_indexes = Vec::new();
        for id in 1..=3 {
            assert!(cluster.take_snapshot(id));
            snapshot_indexes.push(cluster.node(id).first_log_index() - 1);
        }
        // Entries after the snapshot live only in the log.
        commit_commands(&mut cluster, 10, "after snapshot");
        assert!(cluster.run_until(400, |c| c.converged()));
        let leader = cluster.leader().unwrap();
        let commit = cluster.node(leader).commit_index();
        // The leader and one follower restart; the third node keeps its state machine running.
        let survivor = (1..=3).find(|id| *id != leader).unwrap();
        let restarted: Vec<NodeId> = (1..=3).filter(|id| *id != survivor).collect();
        for id in &restarted {
            cluster.crash(*id);
        }
        for id in &restarted {
            cluster.restart(*id);
            let snapshot_index = snapshot_indexes[*id as usize - 1];
            let raft = cluster.node(*id);
            assert_eq!(raft.first_log_index(), snapshot_index + 1, "log restored after the snapshot");
            assert_eq!(raft.applied_index(), snapshot_index, "the snapshot counts as applied");
            assert!(raft.last_log_id().index >= commit, "committed entries survive the restart");
            assert_eq!(cluster.nodes[id].machine.applied, snapshot_index, "state machine restored from the snapshot");
        }
        // A leader commits again and the restarted state machines replay the log suffix.
        commit_commands(&mut cluster, 3, "after restart");
        assert!(cluster.run_until(400, |c| c.converged()));
        for id in &restarted {
            assert!(cluster.nodes[id].machine.applied > commit);
            assert_same_state(&cluster, *id, survivor);
        }
        cluster.check_no_acknowledged_write_lost();
    }
}

#[test]
fn section_7_a_follower_restarting_from_its_own_snapshot_needs_only_the_missing_entries() {
    let mut options = Options::new(3, 9);
    small_chunks(&mut options);
    let mut cluster = Cluster::new(options);
    commit_commands(&mut cluster, 10, "before");
    assert!(cluster.run_until(400, |c| c.converged()));
    let leader = cluster.leader().unwrap();
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    assert!(cluster.take_snapshot(follower));
    cluster.crash(follower);
    commit_commands(&mut cluster, 10, "while down");
    cluster.message_log = Some(Vec::new());
    cluster.restart(follower);
    assert!(cluster.run_until(1_000, |c| c.converged()));
    assert!(chunks_to(&cluster, follower).is_empty(), "the leader still holds the entries: no snapshot needed");
    assert_same_state(&cluster, leader, follower);
}

#[test]
fn section_7_a_newer_snapshot_taken_mid_transfer_replaces_the_one_being_sent() {
    let mut options = Options::new(3, 10);
    small_chunks(&mut options);
    let mut cluster = Cluster::new(options);
    let follower = leave_a_follower_behind_the_compaction_point(&mut cluster, 20);
    let leader = cluster.leader().unwrap();
    let first_snapshot = cluster.node(leader).first_log_index() - 1;
    cluster.message_log = Some(Vec::new());
    cluster.restart(follower);
    assert!(cluster.run_until(400, |c| chunks_to(c, follower).len() >= 3), "the transfer never started");
    // The leader commits more and compacts again while the first snapshot is half sent.
    let leader_now = cluster.leader().unwrap();
    assert_eq!(leader_now, leader);
    for i in 0..5 {
        cluster.propose(leader, format!("mid {i}").as_bytes()).unwrap();
    }
    assert!(cluster.run_until(400, |c| c.nodes[&leader].machine.applied >= c.node(leader).last_log_id().index));
    assert!(cluster.take_snapshot(leader));
    let second_snapshot = cluster.node(leader).first_log_index() - 1;
    assert!(second_snapshot > first_snapshot);
    assert!(cluster.run_until(2_000, |c| c.converged()), "the follower never caught up");
    let installed = cluster.nodes[&follower].disk.snapshot.as_ref().unwrap().meta.last_included.index;
    let log = cluster.message_log.as_ref().unwrap();
    let sent: Vec<(u64, u64)> = log
        .iter()
        .filter_map(|(_, m)| match &m.body {
            MessageBody::InstallSnapshot { meta, offset, .. } if m.to == follower => {
                Some((meta.last_included.index, *offset))
            }
            _ => None,
        })
        .collect();
    // The half-sent first snapshot is abandoned; the newer one is sent whole, from its start.
    assert_eq!(installed, second_snapshot, "{sent:?}");
    let first_chunks = sent.iter().filter(|(index, _)| *index == first_snapshot).count();
    assert!((3..CHUNKS).contains(&first_chunks), "{sent:?}");
    let second: Vec<u64> = sent.iter().filter(|(index, _)| *index == second_snapshot).map(|(_, o)| *o).collect();
    assert_eq!(second, (0..CHUNKS as u64).map(|i| i * 256).collect::<Vec<_>>());
    assert_same_state(&cluster, leader, follower);
    commit_commands(&mut cluster, 3, "after");
    assert!(cluster.run_until(400, |c| c.converged()));
    assert_same_state(&cluster, leader, follower);
    cluster.check_no_acknowledged_write_lost();
}

#[test]
fn section_7_a_follower_that_restarts_mid_transfer_receives_the_snapshot_again_from_the_start() {
    let mut options = Options::new(3, 11);
    small_chunks(&mut options);
    let mut cluster = Cluster::new(options);
    let follower = leave_a_follower_behind_the_compaction_point(&mut cluster, 20);
    let leader = cluster.leader().unwrap();
    cluster.message_log = Some(Vec::new());
    cluster.restart(follower);
    assert!(cluster.run_until(400, |c| chunks_to(c, follower).len() >= 4), "the transfer never started");
    // The chunks received so far were only in memory: a crash loses them.
    cluster.crash(follower);
    cluster.run(10);
    cluster.restart(follower);
    assert!(cluster.run_until(2_000, |c| c.converged()), "the transfer never completed");
    let offsets: Vec<u64> = chunks_to(&cluster, follower).iter().map(|(offset, _)| *offset).collect();
    assert_eq!(
        offsets.iter().filter(|o| **o == 0).count(),
        2,
        "the restarted follower needs the start again: {offsets:?}"
    );
    assert_same_state(&cluster, leader, follower);
    cluster.check_no_acknowledged_write_lost();
}
