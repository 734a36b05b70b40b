//! Log replication: §5.3 (consistency check, conflicting suffixes, fast backtracking), §5.4.2
//! (only current-term entries commit by counting replicas, Figure 8), thesis §10.2 (pipelining,
//! batching, durability before acknowledgement) and backpressure.

use bytes::Bytes;
use std::sync::atomic::{AtomicU32, Ordering};

use keel_core::{Entry, Error, LogId, MessageBody, NodeId, Role};

use crate::harness::{Cluster, Options};
use crate::manual::Manual;

fn is_append(body: &MessageBody) -> bool {
    matches!(body, MessageBody::AppendEntries { .. })
}

fn is_ack(body: &MessageBody) -> bool {
    matches!(body, MessageBody::AppendEntriesResponse { success: true, .. })
}

/// Proposes `count` commands at the current leader and runs until all are acknowledged.
fn commit_commands(cluster: &mut Cluster, count: usize, tag: &str) -> Vec<LogId> {
    let leader = cluster.elect();
    let log_ids: Vec<LogId> =
        (0..count).map(|i| cluster.propose(leader, format!("{tag} {i}").as_bytes()).expect("leader accepts")).collect();
    assert!(cluster.settle(2_000), "proposals were not decided");
    for log_id in &log_ids {
        assert!(cluster.acknowledged.contains(log_id), "{log_id} was not acknowledged");
    }
    log_ids
}

#[test]
fn section_5_3_an_entry_commits_once_a_quorum_holds_it_durably_and_the_leader_counts_only_its_durable_log() {
    let mut m = Manual::new(3, |_| {});
    m.campaign(1);
    let commit_before = m.node(1).commit_index();
    let x = m.node_mut(1).propose(Bytes::from_static(b"x")).unwrap();
    m.pump(1);
    // Both followers receive the entry but have not synced it: no acknowledgement may exist.
    m.deliver(|msg| msg.to != 1);
    assert!(m.node(2).last_log_id() == x && m.node(3).last_log_id() == x);
    assert!(!m.network.iter().any(|msg| is_ack(&msg.body)), "a follower acknowledged an entry it has not synced");
    // Follower 2 syncs and acknowledges: leader + follower 2 would be a quorum, but the leader's
    // own write is not durable yet, so it must not count itself.
    m.sync(2);
    assert_eq!(m.deliver(|msg| msg.to == 1 && is_ack(&msg.body)), 1);
    assert_eq!(m.node(1).commit_index(), commit_before, "leader counted its own unsynced entry toward the quorum");
    assert!(m.node(1).peer_progress().iter().any(|(id, matched, _)| *id == 2 && *matched == x.index));
    // Once its write is durable the leader and follower 2 form a durable quorum.
    m.sync(1);
    assert_eq!(m.node(1).commit_index(), x.index);
    assert_eq!(m.applied[&1].last().map(|e| e.log_id), Some(x));
    // Follower 3 learns the commit index but applies the entry only once its own copy is durable.
    m.deliver(|msg| msg.to == 3);
    assert_eq!(m.node(3).commit_index(), x.index);
    assert!(!m.applied.get(&3).is_some_and(|a| a.iter().any(|e| e.log_id == x)), "applied a non-durable entry");
    m.sync(3);
    assert_eq!(m.applied[&3].last().map(|e| e.log_id), Some(x));
}

#[test]
fn section_5_3_a_commit_needs_a_quorum_of_acknowledgements_not_just_the_leader() {
    let mut m = Manual::new(5, |_| {});
    m.campaign(1);
    let commit_before = m.node(1).commit_index();
    let x = m.node_mut(1).propose(Bytes::from_static(b"x")).unwrap();
    m.pump(1);
    m.sync(1);
    m.deliver(|msg| msg.to == 2);
    m.sync(2);
    m.deliver(|msg| msg.to == 1);
    assert_eq!(m.node(1).commit_index(), commit_before, "2 of 5 durable copies are not a quorum");
    m.deliver(|msg| msg.to == 3);
    m.sync(3);
    m.deliver(|msg| msg.to == 1);
    assert_eq!(m.node(1).commit_index(), x.index, "3 of 5 durable copies are a quorum");
}

#[test]
fn section_5_3_a_divergent_follower_has_its_conflicting_suffix_replaced_with_few_rejections() {
    for seed in [11, 12, 13] {
        let mut cluster = Cluster::new(Options::new(3, seed));
        commit_commands(&mut cluster, 5, "before");
        let old = cluster.leader().unwrap();
        let old_term = cluster.node(old).term();
        // The old leader appends 40 entries of its term that no one else receives.
        cluster.isolate(old);
        let stale: Vec<LogId> =
            (0..40).map(|i| cluster.propose(old, format!("stale {i}").as_bytes()).unwrap()).collect();
        assert!(stale.iter().all(|l| l.term == old_term));
        // The majority elects a new leader, which commits 50 entries over the same indexes.
        assert!(cluster.run_until(2_000, |c| c.leader().is_some_and(|l| l != old)));
        let new = cluster.leader().unwrap();
        let fresh: Vec<LogId> =
            (0..50).map(|i| cluster.propose(new, format!("fresh {i}").as_bytes()).unwrap()).collect();
        assert!(cluster.run_until(2_000, |c| fresh.iter().all(|l| c.acknowledged.contains(l))));
        assert!(stale[39].index <= fresh[49].index, "the new leader's log covers every stale index");
        assert!(cluster.node(old).entry(stale[39].index).is_some_and(|e| e.log_id == stale[39]));
        // Leadership moves to the third node, which starts probing the old leader right after its
        // own last entry, far past the point where the logs diverge.
        let third = (1..=3).find(|id| *id != old && *id != new).unwrap();
        cluster.node_mut(new).transfer_leadership(third).unwrap();
        assert!(cluster.run_until(400, |c| c.leader() == Some(third)));
        let leader = cluster.elect();
        assert_eq!(leader, third);
        // Heal: the old leader's conflicting suffix must be replaced by the new leader's entries.
        cluster.message_log = Some(Vec::new());
        cluster.heal();
        assert!(cluster.settle(2_000), "the stale proposals were never decided");
        assert!(cluster.run_until(2_000, |c| c.converged()));
        for log_id in &stale {
            assert!(cluster.failed.contains(log_id), "stale {log_id} must fail: it was never committed");
        }
        for log_id in &fresh {
            assert_eq!(cluster.node(old).entry(log_id.index).map(|e| e.log_id), Some(*log_id));
        }
        // Fast backtracking: the leader skips the whole conflicting term at once. Probing one
        // index per round trip would take about 50 rejections (from index 57 down to 7).
        let log = cluster.message_log.as_ref().unwrap();
        let rejections = log
            .iter()
            .filter(|(_, m)| {
                m.from == old && matches!(m.body, MessageBody::AppendEntriesResponse { success: false, .. })
            })
            .count();
        assert!(rejections >= 1, "seed {seed}: the divergent follower never rejected an append");
        assert!(rejections <= 4, "seed {seed}: {rejections} rejections to find the match point");
        cluster.check_no_acknowledged_write_lost();
    }
}

#[test]
fn thesis_10_2_appends_are_pipelined_up_to_the_in_flight_limit() {
    let mut m = Manual::new(3, |c| {
        c.entries_per_message_max = 4;
        c.inflight_messages_max = 3;
    });
    m.campaign(1);
    // A fresh leader probes: one append per peer until the peer answers.
    let first_answer = m.sent.iter().position(|msg| msg.from == 2 && msg.to == 1 && is_ack(&msg.body)).unwrap();
    let first_term_appends = m.sent[..first_answer].iter().filter(|msg| msg.to == 2 && is_append(&msg.body)).count();
    assert_eq!(first_term_appends, 1, "a probing leader sends one append at a time");
    let last_before = m.node(1).last_log_id().index;
    for i in 0..40 {
        m.node_mut(1).propose(Bytes::from(format!("c{i}"))).unwrap();
    }
    let ready = m.pump(1);
    let appends: Vec<(LogId, Vec<Entry>)> = ready
        .messages
        .iter()
        .filter(|msg| msg.to == 2)
        .filter_map(|msg| match &msg.body {
            MessageBody::AppendEntries { prev_log_id, entries, .. } => Some((*prev_log_id, entries.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(appends.len(), 3, "inflight_messages_max appends go out before any answer");
    let mut expected_prev = last_before;
    for (prev, entries) in &appends {
        assert_eq!(prev.index, expected_prev, "pipelined appends are contiguous");
        assert_eq!(entries.len(), 4, "each append carries entries_per_message_max entries");
        expected_prev = entries.last().unwrap().log_id.index;
    }
    // The window is full: nothing more until an answer frees a slot.
    assert!(m.pump(1).messages.iter().all(|msg| msg.to != 2 || !is_append(&msg.body)));
    // Follower 2 acknowledges the first append only: exactly one more append goes out.
    let first_prev = appends[0].0;
    m.deliver(|msg| {
        msg.to == 2 && matches!(msg.body, MessageBody::AppendEntries { prev_log_id, .. } if prev_log_id == first_prev)
    });
    m.sync(2);
    let sent_before = m.count_sent(1, 2, is_append);
    m.deliver(|msg| msg.to == 1 && msg.from == 2);
    assert_eq!(m.count_sent(1, 2, is_append), sent_before + 1, "one freed slot allows one more append");
    m.settle();
    assert_eq!(m.node(2).last_log_id(), m.node(1).last_log_id());
    assert_eq!(m.node(1).commit_index(), m.node(1).last_log_id().index);
}

fn is_commit_notice(body: &MessageBody) -> bool {
    matches!(body, MessageBody::AppendEntries { commit_notice: true, .. })
}

#[test]
fn thesis_10_2_a_commit_notice_is_not_answered_and_takes_no_in_flight_slot() {
    let mut m = Manual::new(3, |c| c.inflight_messages_max = 1);
    m.campaign(1);
    m.settle();
    let x = m.node_mut(1).propose(Bytes::from_static(b"x")).unwrap();
    m.pump(1);
    m.deliver(|msg| msg.to != 1);
    m.sync(2);
    m.sync(3);
    m.sync(1);
    assert_eq!(m.deliver(|msg| msg.to == 1 && is_ack(&msg.body)), 2);
    assert_eq!(m.node(1).commit_index(), x.index);
    // Nothing new to replicate: the commit index travels as a notice, without entries.
    let notices: Vec<_> = m.network.iter().filter(|msg| is_commit_notice(&msg.body)).cloned().collect();
    assert_eq!(notices.len(), 2, "one commit notice per follower: {notices:?}");
    assert!(notices.iter().all(|msg| matches!(&msg.body,
        MessageBody::AppendEntries { entries, leader_commit, .. } if entries.is_empty() && *leader_commit == x.index)));
    // The followers learn the commit index and apply, but send nothing back: the answer would
    // repeat a match index the leader already holds.
    let answers_before = m.count_sent(2, 1, is_ack) + m.count_sent(3, 1, is_ack);
    assert_eq!(m.deliver(|msg| is_commit_notice(&msg.body)), 2);
    assert_eq!(m.node(2).commit_index(), x.index);
    assert_eq!(m.applied[&3].last().map(|e| e.log_id), Some(x));
    assert_eq!(m.count_sent(2, 1, is_ack) + m.count_sent(3, 1, is_ack), answers_before, "a notice was answered");
    // With a window of one append, the next entry still goes out at once: the unanswered
    // notice took no slot.
    let sent_before = m.count_sent(1, 2, is_append);
    let y = m.node_mut(1).propose(Bytes::from_static(b"y")).unwrap();
    let ready = m.pump(1);
    assert!(
        ready.messages.iter().any(|msg| msg.to == 2
            && matches!(&msg.body, MessageBody::AppendEntries { entries, .. } if entries.last().map(|e| e.log_id) == Some(y))),
        "the notice blocked the in-flight window"
    );
    assert_eq!(m.count_sent(1, 2, is_append), sent_before + 1);
    m.settle();
    assert_eq!(m.node(2).commit_index(), y.index);
}

#[test]
fn thesis_10_2_append_batches_respect_the_entry_and_byte_limits() {
    const BYTES_MAX: u64 = 3 * (100 + keel_core::ENTRY_OVERHEAD_BYTES);
    let mut m = Manual::new(3, |c| {
        c.entries_per_message_max = 8;
        c.bytes_per_message_max = 3 * (100 + keel_core::ENTRY_OVERHEAD_BYTES);
    });
    m.campaign(1);
    let first = m.node(1).last_log_id().index + 1;
    let mut commands: Vec<Vec<u8>> = Vec::new();
    commands.extend((0..20).map(|_| Vec::new())); // tiny: the entry limit binds
    commands.extend((0..9).map(|_| vec![7; 100])); // 100 bytes: the byte limit binds
    commands.push(vec![9; 1_000]); // larger than a whole batch: sent alone
    commands.extend((0..5).map(|_| vec![1; 10]));
    for command in &commands {
        m.node_mut(1).propose(Bytes::from(command.clone())).unwrap();
    }
    let ready = m.pump(1);
    let batches: Vec<Vec<Entry>> = ready
        .messages
        .iter()
        .filter(|msg| msg.to == 2)
        .filter_map(|msg| match &msg.body {
            MessageBody::AppendEntries { entries, .. } => Some(entries.clone()),
            _ => None,
        })
        .collect();
    let mut next = first;
    for batch in &batches {
        assert!(!batch.is_empty() && batch.len() <= 8, "batch of {} entries", batch.len());
        let bytes: u64 = batch.iter().map(Entry::size_bytes).sum();
        assert!(batch.len() == 1 || bytes <= BYTES_MAX, "batch of {bytes} bytes exceeds bytes_per_message_max");
        assert_eq!(batch[0].log_id.index, next, "batches cover the log without gaps");
        next = batch.last().unwrap().log_id.index + 1;
    }
    assert_eq!(next, first + commands.len() as u64, "every entry was sent");
    let sizes: Vec<usize> = batches.iter().map(Vec::len).collect();
    assert_eq!(sizes, vec![8, 8, 6, 3, 3, 1, 1, 5], "batch sizes follow the entry then byte limits");
    m.settle();
    assert_eq!(m.node(2).last_log_id(), m.node(1).last_log_id());
}

/// Figure 8 of the Raft paper, up to (c): entry X of term 1 sits on nodes 1 and 3 (a majority)
/// while node 1 leads term 3 and its own no-op has reached no one. Returns the cluster, X, and
/// the term-3 no-op.
fn figure_8_until_c() -> (Manual, LogId, LogId) {
    let mut m = Manual::new(3, |c| {
        c.pre_vote = false;
        c.entries_per_message_max = 1;
    });
    // (a) Node 1 leads term 1; X reaches no one else.
    m.campaign(1);
    assert_eq!(m.node(1).term(), 1);
    m.isolate(1);
    let x = m.node_mut(1).propose(Bytes::from_static(b"x")).unwrap();
    m.settle();
    assert_eq!(m.node(1).commit_index(), x.index - 1);
    // (b) Node 2 leads term 2 with node 3's vote; its no-op at X's index reaches no one.
    m.tick(3, 150);
    m.tick(2, 1 << 30);
    m.deliver(|msg| msg.to == 3);
    m.deliver(|msg| msg.to == 2);
    assert_eq!((m.node(2).role(), m.node(2).term()), (Role::Leader, 2));
    m.isolate(2);
    m.settle();
    assert_eq!(m.node(2).entry(x.index).map(|e| e.log_id), Some(LogId::new(2, x.index)));
    // (c) Node 1 returns and leads term 3 with node 3's vote.
    m.blocked.clear();
    m.isolate(2);
    for _ in 0..3 {
        if m.node(1).role() == Role::Leader && m.node(1).term() > 2 {
            break;
        }
        m.tick(3, 150);
        m.tick(1, 1 << 30);
        m.deliver(|msg| msg.to == 3);
        m.deliver(|msg| msg.to == 1);
    }
    assert_eq!((m.node(1).role(), m.node(1).term()), (Role::Leader, 3));
    let noop = m.node(1).last_log_id();
    assert_eq!(noop, LogId::new(3, x.index + 1));
    m.sync(1);
    // Node 1 finds node 3's match point and sends it X alone (one entry per message).
    m.deliver(|msg| msg.to == 3);
    m.deliver(|msg| msg.to == 1);
    m.deliver(|msg| msg.to == 3);
    assert_eq!(m.node(3).last_log_id(), x);
    m.sync(3);
    m.deliver(|msg| msg.to == 1 && msg.from == 3);
    let progress = m.node(1).peer_progress();
    assert!(progress.iter().any(|(id, matched, _)| *id == 3 && *matched == x.index), "{progress:?}");
    // X is durable on nodes 1 and 3, a majority, but it is of term 1: counting must not commit it.
    assert_eq!(m.node(1).commit_index(), x.index - 1, "leader committed a previous-term entry by counting");
    (m, x, noop)
}

#[test]
fn section_5_4_2_figure_8_an_earlier_term_entry_on_a_majority_is_not_committed_and_may_be_overwritten() {
    let (mut m, x, _) = figure_8_until_c();
    // (d) Node 1 crashes before its term-3 no-op spreads; node 2 wins term 4 with node 3's vote
    // (its last entry, term 2, is more up to date than X) and overwrites X on node 3.
    m.blocked.clear();
    m.isolate(1);
    m.campaign(2);
    assert!(m.node(2).term() >= 4);
    assert_eq!(m.node(3).entry(x.index).map(|e| e.log_id), Some(LogId::new(2, x.index)), "X must be overwritten");
    assert!(m.node(3).commit_index() >= x.index);
    // Had node 1 committed X in (c), a committed entry would now be lost. It did not apply it.
    assert!(!m.applied.get(&1).is_some_and(|a| a.iter().any(|e| e.log_id == x)));
}

#[test]
fn section_5_4_2_figure_8_earlier_entries_commit_with_the_first_current_term_entry() {
    let (mut m, x, noop) = figure_8_until_c();
    // (e) The term-3 no-op reaches node 3: it commits, and X with it.
    m.deliver(|msg| msg.to == 3);
    m.sync(3);
    m.deliver(|msg| msg.to == 1 && msg.from == 3);
    assert_eq!(m.node(1).commit_index(), noop.index);
    let applied: Vec<LogId> = m.applied[&1].iter().map(|e| e.log_id).collect();
    assert!(applied.contains(&x) && applied.contains(&noop));
    // Node 2's term-2 entry at X's index is now overwritten when it rejoins.
    m.blocked.clear();
    m.tick(1, 10);
    m.settle();
    assert_eq!(m.node(2).entry(x.index).map(|e| e.log_id), Some(x));
    assert_eq!(m.node(2).role(), Role::Follower);
}

#[test]
fn thesis_10_2_proposals_are_refused_with_backpressure_once_too_many_are_uncommitted() {
    let mut options = Options::new(3, 5);
    options.configure = |c| c.uncommitted_entries_max = 10;
    let mut cluster = Cluster::new(options);
    let leader = cluster.elect();
    assert!(cluster.run_until(200, |c| c.node(leader).commit_index() == c.node(leader).last_log_id().index));
    // Appends are lost (heartbeats still flow, so the leader keeps its leadership).
    cluster.drop_filter = Some(|m| matches!(m.body, MessageBody::AppendEntries { .. }));
    let mut accepted = Vec::new();
    let refusal = loop {
        match cluster.propose(leader, b"load") {
            Ok(log_id) => accepted.push(log_id),
            Err(error) => break error,
        }
        assert!(accepted.len() <= 10, "more than uncommitted_entries_max proposals accepted");
    };
    assert_eq!(accepted.len(), 10);
    assert!(matches!(&refusal, Error::TooManyUncommitted { limit } if limit.contains("uncommitted_entries_max")));
    cluster.run(40);
    assert_eq!(cluster.node(leader).role(), Role::Leader);
    assert!(matches!(cluster.propose(leader, b"again"), Err(Error::TooManyUncommitted { .. })));
    // Once the entries commit the leader accepts proposals again, and none was lost.
    cluster.drop_filter = None;
    assert!(cluster.settle(1_000));
    assert!(accepted.iter().all(|l| cluster.acknowledged.contains(l)));
    let log_id = cluster.propose(leader, b"after").expect("accepted once committed");
    assert!(cluster.settle(1_000));
    assert!(cluster.acknowledged.contains(&log_id));
}

#[test]
fn thesis_10_2_proposals_are_refused_once_too_many_uncommitted_bytes_are_held() {
    let mut options = Options::new(3, 6);
    options.configure = |c| c.uncommitted_bytes_max = 1_000;
    let mut cluster = Cluster::new(options);
    let leader = cluster.elect();
    assert!(cluster.run_until(200, |c| c.node(leader).commit_index() == c.node(leader).last_log_id().index));
    cluster.drop_filter = Some(|m| matches!(m.body, MessageBody::AppendEntries { .. }));
    let mut accepted = 0;
    while cluster.propose(leader, &[0; 200]).is_ok() {
        accepted += 1;
        assert!(accepted <= 10, "the byte limit was never enforced");
    }
    // 232 bytes charged per entry: 0, 232, 464, 696 and 928 are below 1000; 1160 is not.
    assert_eq!(accepted, 5);
    cluster.drop_filter = None;
    assert!(cluster.settle(1_000));
    assert!(cluster.propose(leader, &[0; 200]).is_ok());
}

#[test]
fn section_5_3_a_lossy_network_commits_every_command_and_loses_no_acknowledged_write() {
    for seed in 0..4 {
        let mut options = Options::new(5, seed);
        options.drop_per_million = 100_000;
        options.duplicate_per_million = 50_000;
        let mut cluster = Cluster::new(options);
        let mut missing: Vec<String> = (0..60).map(|i| format!("cmd {i}")).collect();
        for _round in 0..50 {
            if missing.is_empty() {
                break;
            }
            let leader = cluster.elect();
            let mut proposed = Vec::new();
            for command in missing.iter().take(10) {
                match cluster.propose(leader, command.as_bytes()) {
                    Ok(log_id) => proposed.push((log_id, command.clone())),
                    Err(_) => break,
                }
            }
            cluster.run_until(2_000, |c| proposed.iter().all(|(l, _)| !c.pending.contains_key(l)));
            for (log_id, command) in proposed {
                if cluster.acknowledged.contains(&log_id) {
                    missing.retain(|c| *c != command);
                }
            }
        }
        assert!(missing.is_empty(), "seed {seed}: {} commands never committed", missing.len());
        assert!(cluster.stats.dropped > 0, "the network dropped nothing");
        assert!(cluster.run_until(4_000, |c| c.converged()), "seed {seed}: the cluster did not converge");
        cluster.check_no_acknowledged_write_lost();
        let leader = cluster.leader().unwrap();
        let commit = cluster.node(leader).commit_index();
        for id in 1..=5 as NodeId {
            assert!(cluster.node(id).applied_index() >= commit);
        }
    }
}

#[test]
fn thesis_10_2_a_follower_whose_appends_are_lost_is_probed_again_and_catches_up() {
    // Appends to one follower are lost while heartbeats get through: the leader must notice from
    // the heartbeat answers and fall back to probing, not wait forever on its in-flight window.
    static LAGGING: AtomicU32 = AtomicU32::new(0);
    let mut cluster = Cluster::new(Options::new(3, 21));
    let leader = cluster.elect();
    let lagging = (1..=3).find(|id| *id != leader).unwrap();
    LAGGING.store(lagging, Ordering::SeqCst);
    cluster.drop_filter =
        Some(|m| m.to == LAGGING.load(Ordering::SeqCst) && matches!(m.body, MessageBody::AppendEntries { .. }));
    commit_commands(&mut cluster, 20, "while lossy");
    cluster.run(20);
    assert!(cluster.node(lagging).last_log_id().index < cluster.node(leader).commit_index());
    assert_eq!(cluster.node(lagging).leader_id(), Some(leader), "heartbeats kept the follower following");
    cluster.drop_filter = None;
    let caught_up = |c: &Cluster| {
        let last = c.node(leader).last_log_id().index;
        c.node(lagging).applied_index() == last
            && c.node(leader).peer_progress().iter().any(|(id, matched, _)| *id == lagging && *matched == last)
    };
    assert!(cluster.run_until(400, caught_up));
    let progress = cluster.node(leader).peer_progress();
    let matched = progress.iter().find(|(id, _, _)| *id == lagging).map(|(_, m, _)| *m);
    assert_eq!(matched, Some(cluster.node(leader).last_log_id().index));
}

#[test]
fn thesis_10_2_a_slow_disk_delays_acknowledgements_without_triggering_resends() {
    // Followers sync 3.5 heartbeat intervals after a write: heartbeat answers overtake append
    // acknowledgements, which must not be mistaken for lost appends.
    let mut options = Options::new(3, 8);
    options.sync_delay_ms = (35, 35);
    let mut cluster = Cluster::new(options);
    let leader = cluster.elect();
    cluster.message_log = Some(Vec::new());
    for round in 0..20 {
        for i in 0..10 {
            cluster.propose(leader, format!("slow {round} {i}").as_bytes()).unwrap();
        }
        cluster.run(4);
    }
    assert!(cluster.settle(2_000), "slow-disk cluster did not commit");
    let mut sent: std::collections::BTreeMap<(NodeId, u64), usize> = Default::default();
    for (_, message) in cluster.message_log.as_ref().unwrap() {
        if let MessageBody::AppendEntries { entries, .. } = &message.body {
            for entry in entries {
                *sent.entry((message.to, entry.log_id.index)).or_default() += 1;
            }
        }
    }
    let resent = sent.values().filter(|count| **count > 1).count();
    assert!(!sent.is_empty());
    assert_eq!(resent, 0, "entries were sent twice to the same follower although nothing was lost");
}

#[test]
fn section_5_3_a_single_voter_driven_only_when_has_ready_says_so_commits_its_proposals() {
    use keel_core::{Config, Membership, RaftNode, RecoveredState};
    // A caller that calls `ready` only when `has_ready` is true (as a real driver does) must still
    // be handed the log write of a proposal, even when no peer needs a message.
    let mut node = RaftNode::new(Config::new(1), RecoveredState::bootstrap(Membership::with_voters([1]))).unwrap();
    let mut now = 0;
    let drive = |node: &mut RaftNode, now: u64| {
        node.tick(now);
        while node.has_ready() {
            let ready = node.ready();
            if let Some(last) = ready.log_write.as_ref().and_then(|w| w.entries.last()) {
                node.persisted(last.log_id);
            }
            if let Some(last) = ready.committed_entries.last() {
                node.applied(last.log_id.index);
            }
        }
    };
    while node.role() != Role::Leader {
        now += 100;
        drive(&mut node, now);
    }
    let log_id = node.propose(Bytes::from_static(b"alone")).unwrap();
    drive(&mut node, now + 1);
    assert_eq!(node.commit_index(), log_id.index, "the proposal's write was never handed out");
    assert_eq!(node.applied_index(), log_id.index);
}
