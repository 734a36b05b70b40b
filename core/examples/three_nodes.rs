//! Runs a 3-node Keel cluster in memory: elects a leader, commits writes, crashes the leader,
//! elects a new one and checks that no acknowledged write was lost. Everything derives from the
//! seed, so the same seed prints the same run.
//!
//! `cargo run --release -p keel-core --example three_nodes -- [seed]`

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use keel_core::{Config, Entry, LogId, Membership, Message, RaftNode, RecoveredState, Rng, Role};

/// One node with an instantly synced in-memory disk (its durable log survives a crash).
struct Node {
    raft: Option<RaftNode>,
    config: Config,
    durable: Vec<Entry>,
    hard_state: keel_core::HardState,
    applied: Vec<LogId>,
}

fn main() {
    let seed: u64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(1);
    let membership = Membership::with_voters([1, 2, 3]);
    let mut nodes: BTreeMap<u32, Node> = (1..=3)
        .map(|id| {
            let mut config = Config::new(id);
            config.rng_seed = seed ^ u64::from(id);
            let raft = RaftNode::new(config.clone(), RecoveredState::bootstrap(membership.clone())).expect("valid");
            let node =
                Node { raft: Some(raft), config, durable: Vec::new(), hard_state: Default::default(), applied: vec![] };
            (id, node)
        })
        .collect();
    let mut rng = Rng::new(seed);
    let mut network: VecDeque<(u64, Message)> = VecDeque::new();
    let mut acknowledged: Vec<LogId> = Vec::new();
    let mut proposals: Vec<(u32, LogId)> = Vec::new();
    let mut crashed_leader = None;
    let mut last_leader = None;
    println!("keel three-node demo, seed {seed}: 1 s to 2 s election timeouts, 100 ms heartbeats");
    for now_ms in (0..30_000u64).step_by(10) {
        for (id, node) in nodes.iter_mut() {
            let Some(raft) = node.raft.as_mut() else { continue };
            raft.tick(now_ms);
            let ready = raft.ready();
            if let Some(hard_state) = ready.hard_state {
                node.hard_state = hard_state;
            }
            if let Some(write) = ready.log_write {
                node.durable.retain(|e| e.log_id.index < write.first_index);
                node.durable.extend(write.entries);
                if let Some(last) = node.durable.last() {
                    raft.persisted(last.log_id);
                }
            }
            for message in ready.messages {
                network.push_back((now_ms + rng.range(1, 20), message));
            }
            for entry in &ready.committed_entries {
                node.applied.push(entry.log_id);
                let mine = proposals.iter().position(|(proposer, l)| proposer == id && l.index == entry.log_id.index);
                if let Some(position) = mine {
                    let (_, proposed) = proposals.remove(position);
                    if proposed == entry.log_id {
                        acknowledged.push(proposed);
                    }
                }
            }
            if let Some(last) = ready.committed_entries.last() {
                raft.applied(last.log_id.index);
            }
        }
        deliver(&mut nodes, &mut network, now_ms);
        let leader = nodes.iter().find(|(_, n)| n.raft.as_ref().is_some_and(|r| r.role() == Role::Leader));
        let leader = leader.map(|(id, n)| (*id, n.raft.as_ref().map_or(0, |r| r.term())));
        if leader != last_leader {
            if let Some((id, term)) = leader {
                println!("{:>6} ms  node {id} is leader of term {term}", now_ms);
            }
            last_leader = leader;
        }
        if let Some((id, _)) = leader {
            if now_ms % 100 == 0 && acknowledged.len() < 200 {
                let raft = nodes.get_mut(&id).and_then(|n| n.raft.as_mut()).expect("leader is up");
                if let Ok(log_id) = raft.propose(Bytes::from(format!("write {now_ms}"))) {
                    proposals.push((id, log_id));
                }
            }
            if acknowledged.len() >= 100 && crashed_leader.is_none() {
                println!("{:>6} ms  {} writes acknowledged; crashing leader {id}", now_ms, acknowledged.len());
                crash(&mut nodes, id);
                crashed_leader = Some((id, now_ms));
            }
        }
        if let Some((id, at)) = crashed_leader {
            if now_ms == at + 3_000 {
                println!("{:>6} ms  restarting node {id} from its durable log", now_ms);
                restart(&mut nodes, id);
            }
        }
        let settled = nodes.values().all(|n| acknowledged.iter().all(|l| n.applied.contains(l)));
        if acknowledged.len() >= 200 && settled {
            break;
        }
    }
    report(&nodes, &acknowledged);
}

fn deliver(nodes: &mut BTreeMap<u32, Node>, network: &mut VecDeque<(u64, Message)>, now_ms: u64) {
    let mut later = VecDeque::new();
    while let Some((at, message)) = network.pop_front() {
        if at > now_ms {
            later.push_back((at, message));
        } else if let Some(raft) = nodes.get_mut(&message.to).and_then(|n| n.raft.as_mut()) {
            raft.step(message);
        }
    }
    *network = later;
}

fn crash(nodes: &mut BTreeMap<u32, Node>, id: u32) {
    let node = nodes.get_mut(&id).expect("known node");
    node.raft = None;
    node.applied.clear();
}

fn restart(nodes: &mut BTreeMap<u32, Node>, id: u32) {
    let node = nodes.get_mut(&id).expect("known node");
    let membership = Membership::with_voters([1, 2, 3]);
    let mut recovered = RecoveredState::bootstrap(membership);
    recovered.hard_state = node.hard_state;
    recovered.entries = node.durable.clone();
    node.raft = Some(RaftNode::new(node.config.clone(), recovered).expect("durable state is consistent"));
}

fn report(nodes: &BTreeMap<u32, Node>, acknowledged: &[LogId]) {
    println!("{} writes acknowledged to clients", acknowledged.len());
    for (id, node) in nodes {
        let lost = acknowledged.iter().filter(|l| !node.applied.contains(l)).count();
        let commit = node.raft.as_ref().map_or(0, |r| r.commit_index());
        println!(
            "node {id}: applied {} entries, commit index {commit}, acknowledged writes missing: {lost}",
            node.applied.len()
        );
    }
    let leader = nodes.values().filter_map(|n| n.raft.as_ref()).find(|r| r.role() == Role::Leader);
    let all_have = |node: &Node| acknowledged.iter().all(|l| node.applied.contains(l));
    assert!(nodes.values().all(all_have), "an acknowledged write is missing: a durability bug");
    println!("ok: every node applied every acknowledged write; leader now {:?}", leader.map(|r| r.id()));
}
