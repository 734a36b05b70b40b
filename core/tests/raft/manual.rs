//! A hand-driven cluster of cores for tests that must control exactly which message is delivered
//! and which write becomes durable when. Nothing happens unless the test asks for it: no clock
//! advances, no message moves and no write is synced on its own.
//!
//! Elections never start by themselves: the election timeout range is huge, and `campaign`
//! advances the candidate's own clock past it (each node has its own clock).

use std::collections::{BTreeMap, BTreeSet};

use keel_core::{
    Config, Entry, LogId, Membership, Message, MessageBody, NodeId, RaftNode, ReadOutcome, Ready, RecoveredState, Role,
};

use crate::harness::test_config;

/// Election timeouts of manual nodes: no node campaigns unless `campaign` pushes its clock.
const ELECTION_TIMEOUT_MS_MAX: u64 = 100_000_000;

/// Test configuration of a manual node: 10 ms heartbeats, no check-quorum (clocks only move when
/// the test says so), and an election timeout that never fires on its own.
pub fn manual_config(id: NodeId) -> Config {
    let mut config = test_config(id, 0);
    config.election_timeout_ms_max = ELECTION_TIMEOUT_MS_MAX;
    config.check_quorum = false;
    config
}

pub struct Manual {
    pub nodes: BTreeMap<NodeId, RaftNode>,
    /// Each node's configuration and the initial membership, for restarts.
    pub configs: BTreeMap<NodeId, Config>,
    pub bootstrap: Membership,
    pub clocks: BTreeMap<NodeId, u64>,
    /// Messages sent and not yet delivered, in send order.
    pub network: Vec<Message>,
    /// Every message ever sent, in order.
    pub sent: Vec<Message>,
    /// Directed links that drop messages at delivery.
    pub blocked: BTreeSet<(NodeId, NodeId)>,
    /// Last log id of the latest write each node was asked to make and has not synced.
    pub unsynced: BTreeMap<NodeId, LogId>,
    /// Entries each node applied, in order.
    pub applied: BTreeMap<NodeId, Vec<Entry>>,
    /// Read outcomes each node released.
    pub reads: BTreeMap<NodeId, Vec<ReadOutcome>>,
}

impl Manual {
    /// Voters `1..=voters`, each configured with `manual_config` then `configure`.
    pub fn new(voters: NodeId, configure: fn(&mut Config)) -> Self {
        let membership = Membership::with_voters(1..=voters);
        let mut manual = Self {
            nodes: BTreeMap::new(),
            configs: BTreeMap::new(),
            bootstrap: membership.clone(),
            clocks: BTreeMap::new(),
            network: Vec::new(),
            sent: Vec::new(),
            blocked: BTreeSet::new(),
            unsynced: BTreeMap::new(),
            applied: BTreeMap::new(),
            reads: BTreeMap::new(),
        };
        for id in 1..=voters {
            let mut config = manual_config(id);
            configure(&mut config);
            manual.configs.insert(id, config.clone());
            let raft = RaftNode::new(config, RecoveredState::bootstrap(membership.clone())).expect("valid config");
            manual.nodes.insert(id, raft);
            manual.clocks.insert(id, 0);
        }
        manual
    }

    pub fn node(&self, id: NodeId) -> &RaftNode {
        &self.nodes[&id]
    }

    pub fn node_mut(&mut self, id: NodeId) -> &mut RaftNode {
        self.nodes.get_mut(&id).expect("known node")
    }

    /// Takes `id`'s `Ready` and carries it out, except that log writes wait for `sync`. Returns
    /// a copy of what was taken, for inspection.
    pub fn pump(&mut self, id: NodeId) -> Ready {
        let raft = self.nodes.get_mut(&id).expect("known node");
        let ready = raft.ready();
        if let Some(snapshot) = &ready.snapshot {
            raft.snapshot_installed(snapshot.meta.last_included);
        }
        if let Some(write) = &ready.log_write {
            let last = match write.entries.last() {
                Some(entry) => Some(entry.log_id),
                None => raft.entry(write.first_index - 1).map(|e| e.log_id),
            };
            if let Some(last) = last {
                self.unsynced.insert(id, last);
            }
        }
        if let Some(last) = ready.committed_entries.last() {
            raft.applied(last.log_id.index);
            self.applied.entry(id).or_default().extend(ready.committed_entries.iter().cloned());
        }
        self.reads.entry(id).or_default().extend(ready.reads.iter().cloned());
        self.network.extend(ready.messages.iter().cloned());
        self.sent.extend(ready.messages.iter().cloned());
        ready
    }

    /// Pumps `id` until it has nothing more to hand out (committed entries come in bounded
    /// batches).
    pub fn pump_all(&mut self, id: NodeId) {
        self.pump(id);
        while self.node(id).has_ready() {
            self.pump(id);
        }
    }

    /// Makes `id`'s outstanding writes durable and reports it, then carries out the effects.
    pub fn sync(&mut self, id: NodeId) {
        if let Some(last) = self.unsynced.remove(&id) {
            self.node_mut(id).persisted(last);
        }
        self.pump_all(id);
    }

    /// Delivers (in order) every queued message for which `which` holds; messages on blocked
    /// links are dropped; the others stay queued. Each receiver's effects are carried out.
    /// Returns how many messages were delivered.
    pub fn deliver(&mut self, which: impl Fn(&Message) -> bool) -> usize {
        let (now, later): (Vec<Message>, Vec<Message>) =
            std::mem::take(&mut self.network).into_iter().partition(&which);
        self.network = later;
        let mut delivered = 0;
        let mut receivers = BTreeSet::new();
        for message in now {
            if self.blocked.contains(&(message.from, message.to)) || !self.nodes.contains_key(&message.to) {
                continue;
            }
            receivers.insert(message.to);
            self.node_mut(message.to).step(message);
            delivered += 1;
        }
        for id in receivers {
            self.pump_all(id);
        }
        delivered
    }

    /// Delivers everything and syncs every write until nothing moves.
    pub fn settle(&mut self) {
        for _ in 0..1_000 {
            let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
            for id in ids {
                self.sync(id);
            }
            if self.network.is_empty() && self.unsynced.is_empty() {
                return;
            }
            self.deliver(|_| true);
        }
        panic!("manual cluster did not settle");
    }

    /// Like `settle`, but messages for which `held` holds stay queued.
    pub fn settle_except(&mut self, held: impl Fn(&Message) -> bool) {
        for _ in 0..1_000 {
            let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
            for id in ids {
                self.sync(id);
            }
            if self.network.iter().all(&held) && self.unsynced.is_empty() {
                return;
            }
            self.deliver(|m| !held(m));
        }
        panic!("manual cluster did not settle");
    }

    /// Advances `id`'s clock by `ms`, ticks it and carries out its effects.
    pub fn tick(&mut self, id: NodeId, ms: u64) -> Ready {
        let clock = self.clocks.get_mut(&id).expect("known node");
        *clock += ms;
        let now = *clock;
        self.node_mut(id).tick(now);
        self.pump(id)
    }

    /// Makes `id` campaign until it leads (other nodes' clocks move just past their leader
    /// leases so that they may vote), delivering and syncing everything on unblocked links.
    pub fn campaign(&mut self, id: NodeId) {
        for _ in 0..5 {
            let others: Vec<NodeId> = self.nodes.keys().copied().filter(|other| *other != id).collect();
            for other in others {
                self.tick(other, 150);
            }
            self.tick(id, 2 * ELECTION_TIMEOUT_MS_MAX);
            self.settle();
            if self.node(id).role() == Role::Leader {
                return;
            }
        }
        panic!("node {id} could not win an election");
    }

    /// Shorthand: messages from `from` to `to` whose body satisfies `kind`.
    pub fn count_sent(&self, from: NodeId, to: NodeId, kind: impl Fn(&MessageBody) -> bool) -> usize {
        self.sent.iter().filter(|m| m.from == from && m.to == to && kind(&m.body)).count()
    }

    /// Crashes and restarts `id` from what it made durable (term, vote and synced entries). The
    /// restarted core has not been ticked yet.
    pub fn restart(&mut self, id: NodeId) {
        let old = self.nodes.remove(&id).expect("known node");
        let entries = (1..=old.persisted_index()).filter_map(|i| old.entry(i).cloned()).collect();
        let recovered = RecoveredState {
            hard_state: old.hard_state(),
            entries,
            ..RecoveredState::bootstrap(self.bootstrap.clone())
        };
        self.unsynced.remove(&id);
        self.network.retain(|m| m.to != id);
        let raft = RaftNode::new(self.configs[&id].clone(), recovered).expect("recovered state is consistent");
        self.nodes.insert(id, raft);
    }

    /// Cuts `id` off from every other node (both directions).
    pub fn isolate(&mut self, id: NodeId) {
        let others: Vec<NodeId> = self.nodes.keys().copied().filter(|other| *other != id).collect();
        for other in others {
            self.blocked.insert((id, other));
            self.blocked.insert((other, id));
        }
    }
}
