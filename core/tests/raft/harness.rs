//! An in-memory cluster of keel-core nodes driven deterministically from a seed.
//!
//! The network delays, drops, duplicates and reorders messages and can partition nodes; each
//! node's disk keeps written entries in an unsynced queue until a (delayed) sync, and a crash
//! loses everything not yet synced. After every step the harness checks, without trusting the
//! core's own assertions: election safety, log matching, leader completeness and state machine
//! safety; it records which proposals were acknowledged to clients so that tests can check none
//! is ever lost.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use keel_core::{
    Config, Entry, EntryPayload, Error, HardState, Index, LogId, LogWrite, Membership, Message, NodeId, RaftNode,
    ReadId, ReadOutcome, ReadPolicy, RecoveredState, Rng, Role, Snapshot, Term,
};

/// How the harness builds its cluster and injects faults.
#[derive(Clone, Debug)]
pub struct Options {
    pub voters: u32,
    pub seed: u64,
    pub tick_ms: u64,
    pub delay_ms: (u64, u64),
    pub sync_delay_ms: (u64, u64),
    pub drop_per_million: u64,
    pub duplicate_per_million: u64,
    pub configure: fn(&mut Config),
}

impl Options {
    pub fn new(voters: u32, seed: u64) -> Self {
        Self {
            voters,
            seed,
            tick_ms: 5,
            delay_ms: (1, 4),
            sync_delay_ms: (0, 3),
            drop_per_million: 0,
            duplicate_per_million: 0,
            configure: |_| {},
        }
    }
}

/// Test-sized timeouts: 10 ms heartbeats, 100–200 ms elections.
pub fn test_config(id: NodeId, seed: u64) -> Config {
    let mut config = Config::new(id);
    config.heartbeat_interval_ms = 10;
    config.election_timeout_ms_min = 100;
    config.election_timeout_ms_max = 200;
    config.rng_seed = seed.wrapping_mul(1_000_003).wrapping_add(u64::from(id));
    config
}

/// A simulated disk: synced state plus writes waiting for their sync.
#[derive(Debug, Default)]
pub struct Disk {
    pub hard_state: HardState,
    pub snapshot: Option<Snapshot>,
    pub entries: Vec<Entry>,
    unsynced: Vec<(u64, LogWrite)>,
}

impl Disk {
    fn apply(&mut self, write: LogWrite) {
        let base = self.snapshot.as_ref().map_or(0, |s| s.meta.last_included.index);
        let keep = write.first_index.saturating_sub(base + 1) as usize;
        self.entries.truncate(keep.min(self.entries.len()));
        self.entries.extend(write.entries.into_iter().filter(|e| e.log_id.index > base));
    }

    fn last_log_id(&self) -> LogId {
        self.entries
            .last()
            .map(|e| e.log_id)
            .or(self.snapshot.as_ref().map(|s| s.meta.last_included))
            .unwrap_or_default()
    }

    fn sync_all(&mut self) {
        for (_, write) in std::mem::take(&mut self.unsynced) {
            self.apply(write);
        }
    }

    fn install(&mut self, snapshot: Snapshot) {
        self.sync_all();
        let last = snapshot.meta.last_included;
        let matching = self.entries.iter().any(|e| e.log_id == last);
        self.entries.retain(|e| matching && e.log_id.index > last.index);
        self.snapshot = Some(snapshot);
    }
}

/// The replicated state machine of the tests: a hash chain over applied entries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StateMachine {
    pub applied: Index,
    pub hash: u64,
}

impl StateMachine {
    fn apply(&mut self, entry: &Entry) {
        assert_eq!(entry.log_id.index, self.applied + 1, "entries must be applied in order without gaps");
        let payload: &[u8] = match &entry.payload {
            EntryPayload::Command(bytes) => bytes,
            _ => b"",
        };
        let mut hash = self.hash ^ entry.log_id.index.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        for byte in payload {
            hash = (hash ^ u64::from(*byte)).wrapping_mul(0x100_0000_01B3);
        }
        self.hash = hash;
        self.applied = entry.log_id.index;
    }

    fn encode(&self, padding: usize) -> Bytes {
        let mut out = Vec::with_capacity(16 + padding);
        out.extend_from_slice(&self.applied.to_le_bytes());
        out.extend_from_slice(&self.hash.to_le_bytes());
        out.resize(16 + padding, 0xAB);
        Bytes::from(out)
    }

    fn decode(data: &[u8]) -> Self {
        if data.len() < 16 {
            return Self::default();
        }
        let applied = u64::from_le_bytes(data[..8].try_into().unwrap());
        let hash = u64::from_le_bytes(data[8..16].try_into().unwrap());
        Self { applied, hash }
    }
}

/// One node: its core (absent while crashed), disk and state machine.
pub struct Node {
    pub config: Config,
    pub raft: Option<RaftNode>,
    pub disk: Disk,
    pub machine: StateMachine,
    pub reads: Vec<ReadOutcome>,
}

impl Node {
    pub fn raft(&self) -> &RaftNode {
        self.raft.as_ref().expect("node is up")
    }
}

/// Counters of what the network did.
#[derive(Clone, Debug, Default)]
pub struct NetworkStats {
    pub sent: BTreeMap<&'static str, u64>,
    pub dropped: u64,
}

/// The cluster, its network and the independent checkers.
pub struct Cluster {
    pub options: Options,
    pub nodes: BTreeMap<NodeId, Node>,
    pub now_ms: u64,
    pub rng: Rng,
    in_flight: BTreeMap<(u64, u64), Message>,
    message_seq: u64,
    pub blocked: BTreeSet<(NodeId, NodeId)>,
    pub drop_filter: Option<fn(&Message) -> bool>,
    pub stats: NetworkStats,
    /// When `Some`, every message handed to the network (dropped or not) with its send time.
    pub message_log: Option<Vec<(u64, Message)>>,
    /// Every entry applied anywhere, by index (state machine safety: all agree).
    pub committed: BTreeMap<Index, LogId>,
    /// Lowest term of a node seen applying each index: the entry was committed in that term or
    /// earlier, so every leader of a later term must hold it (leader completeness).
    pub committed_by_term: BTreeMap<Index, Term>,
    /// State machine after each applied index (all nodes must agree).
    pub machine_at: BTreeMap<Index, u64>,
    /// Leader of each term seen (election safety).
    pub leaders: BTreeMap<Term, NodeId>,
    /// Proposals not yet decided: log id → proposing node.
    pub pending: BTreeMap<LogId, NodeId>,
    /// Proposals acknowledged to a client (applied by the proposing leader in its term).
    pub acknowledged: BTreeSet<LogId>,
    /// Proposals that failed (another entry took their index).
    pub failed: BTreeSet<LogId>,
    pub snapshot_padding: usize,
    /// For each read in progress, the highest index acknowledged to any client when it was
    /// invoked: a linearizable read must return a read index at least that high.
    read_floors: BTreeMap<(NodeId, ReadId), Index>,
}

impl Cluster {
    /// A new cluster of `options.voters` voters, all up.
    pub fn new(options: Options) -> Self {
        let membership = Membership::with_voters(1..=options.voters);
        let mut cluster = Self {
            rng: Rng::new(options.seed),
            options,
            nodes: BTreeMap::new(),
            now_ms: 0,
            in_flight: BTreeMap::new(),
            message_seq: 0,
            blocked: BTreeSet::new(),
            drop_filter: None,
            stats: NetworkStats::default(),
            message_log: None,
            committed: BTreeMap::new(),
            committed_by_term: BTreeMap::new(),
            machine_at: BTreeMap::new(),
            leaders: BTreeMap::new(),
            pending: BTreeMap::new(),
            acknowledged: BTreeSet::new(),
            failed: BTreeSet::new(),
            snapshot_padding: 2_000,
            read_floors: BTreeMap::new(),
        };
        for id in 1..=cluster.options.voters {
            cluster.add_node(id, RecoveredState::bootstrap(membership.clone()));
        }
        cluster
    }

    /// Starts a node with the given initial state (use `RecoveredState::joining()` for a node
    /// that will be added as a learner).
    pub fn add_node(&mut self, id: NodeId, recovered: RecoveredState) {
        let mut config = test_config(id, self.options.seed);
        (self.options.configure)(&mut config);
        let disk = Disk {
            hard_state: recovered.hard_state,
            snapshot: recovered.snapshot.clone(),
            entries: recovered.entries.clone(),
            unsynced: Vec::new(),
        };
        let raft = RaftNode::new(config.clone(), recovered).expect("valid test configuration");
        let node = Node { config, raft: Some(raft), disk, machine: StateMachine::default(), reads: Vec::new() };
        self.nodes.insert(id, node);
    }

    pub fn node(&self, id: NodeId) -> &RaftNode {
        self.nodes[&id].raft()
    }

    pub fn node_mut(&mut self, id: NodeId) -> &mut RaftNode {
        self.nodes.get_mut(&id).and_then(|n| n.raft.as_mut()).expect("node is up")
    }

    pub fn is_up(&self, id: NodeId) -> bool {
        self.nodes.get(&id).is_some_and(|n| n.raft.is_some())
    }

    /// The leader with the highest term among live nodes.
    pub fn leader(&self) -> Option<NodeId> {
        self.nodes
            .iter()
            .filter_map(|(id, n)| n.raft.as_ref().filter(|r| r.role() == Role::Leader).map(|r| (r.term(), *id)))
            .max()
            .map(|(_, id)| id)
    }

    /// Runs one step of `tick_ms`: ticks, deliveries, syncs, effects, then the checks.
    pub fn step(&mut self) {
        self.now_ms += self.options.tick_ms;
        let now = self.now_ms;
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in &ids {
            if let Some(raft) = self.nodes.get_mut(id).and_then(|n| n.raft.as_mut()) {
                raft.tick(now);
            }
        }
        self.deliver_due();
        self.sync_due();
        for id in &ids {
            self.process_ready(*id);
        }
        self.check_safety();
    }

    /// Steps until `done` holds or `steps_max` steps ran; returns whether it held.
    pub fn run_until(&mut self, steps_max: u64, mut done: impl FnMut(&Cluster) -> bool) -> bool {
        for _ in 0..steps_max {
            if done(self) {
                return true;
            }
            self.step();
        }
        done(self)
    }

    pub fn run(&mut self, steps: u64) {
        for _ in 0..steps {
            self.step();
        }
    }

    /// Runs until a leader exists and has committed an entry of its term.
    pub fn elect(&mut self) -> NodeId {
        let ok = self.run_until(2_000, |c| {
            c.leader().is_some_and(|l| {
                let raft = c.node(l);
                // The first entry of the leader's term (its no-op) is committed, or already
                // compacted into a snapshot (hence committed).
                let first_of_term = (raft.first_log_index()..=raft.last_log_id().index)
                    .find(|i| raft.entry(*i).is_some_and(|e| e.log_id.term == raft.term()));
                match first_of_term {
                    Some(index) => raft.commit_index() >= index,
                    None => raft.last_log_id().term == raft.term(),
                }
            })
        });
        assert!(ok, "no leader elected within 10 s of simulated time");
        self.leader().unwrap()
    }

    /// Proposes a command at `id`, tracking it for the acknowledgement checks.
    pub fn propose(&mut self, id: NodeId, command: &[u8]) -> Result<LogId, Error> {
        let log_id = self.node_mut(id).propose(Bytes::copy_from_slice(command))?;
        self.pending.insert(log_id, id);
        Ok(log_id)
    }

    /// Submits a read at `id`; its outcome is checked for linearizability when it completes.
    pub fn read(&mut self, id: NodeId, read_id: ReadId, policy: ReadPolicy) -> Result<(), Error> {
        self.node_mut(id).read(read_id, policy)?;
        let floor = self.acknowledged.iter().map(|l| l.index).max().unwrap_or(0);
        self.read_floors.insert((id, read_id), floor);
        Ok(())
    }

    /// Runs until every pending proposal is decided; returns whether that happened in time.
    pub fn settle(&mut self, steps_max: u64) -> bool {
        self.run_until(steps_max, |c| c.pending.is_empty())
    }

    /// True when every live member of the leader's configuration applied everything any node
    /// committed (removed nodes stop receiving entries, by design).
    pub fn converged(&self) -> bool {
        let Some(leader) = self.leader() else { return false };
        let members = self.node(leader).membership().members();
        let max_commit = self.nodes.values().filter_map(|n| n.raft.as_ref()).map(|r| r.commit_index()).max();
        let Some(max_commit) = max_commit else { return true };
        let live_members = members.iter().filter(|id| self.is_up(**id));
        live_members.map(|id| self.node(*id)).all(|r| r.applied_index() >= max_commit)
    }

    fn send(&mut self, message: Message) {
        *self.stats.sent.entry(message.body.kind()).or_default() += 1;
        if let Some(log) = self.message_log.as_mut() {
            log.push((self.now_ms, message.clone()));
        }
        let blocked = self.blocked.contains(&(message.from, message.to));
        let filtered = self.drop_filter.is_some_and(|f| f(&message));
        if blocked || filtered || self.chance(self.options.drop_per_million) {
            self.stats.dropped += 1;
            return;
        }
        let copies = if self.chance(self.options.duplicate_per_million) { 2 } else { 1 };
        for _ in 0..copies {
            let (low, high) = self.options.delay_ms;
            let at = self.now_ms + self.rng.range(low, high + 1);
            self.message_seq += 1;
            self.in_flight.insert((at, self.message_seq), message.clone());
        }
    }

    fn chance(&mut self, per_million: u64) -> bool {
        per_million > 0 && self.rng.range(0, 1_000_000) < per_million
    }

    fn deliver_due(&mut self) {
        while let Some(entry) = self.in_flight.first_entry() {
            if entry.key().0 > self.now_ms {
                break;
            }
            let message = entry.remove();
            if self.blocked.contains(&(message.from, message.to)) {
                self.stats.dropped += 1;
                continue;
            }
            if let Some(raft) = self.nodes.get_mut(&message.to).and_then(|n| n.raft.as_mut()) {
                raft.step(message);
            }
        }
    }

    fn sync_due(&mut self) {
        let now = self.now_ms;
        for node in self.nodes.values_mut() {
            let Some(raft) = node.raft.as_mut() else { continue };
            let due = node.disk.unsynced.iter().rposition(|(at, _)| *at <= now);
            let Some(last_due) = due else { continue };
            for (_, write) in node.disk.unsynced.drain(..=last_due).collect::<Vec<_>>() {
                node.disk.apply(write);
            }
            raft.persisted(node.disk.last_log_id());
        }
    }

    /// Carries out one node's `Ready` in the documented order.
    pub fn process_ready(&mut self, id: NodeId) {
        let sync_delay = self.options.sync_delay_ms;
        let sync_at = self.now_ms + self.rng.range(sync_delay.0, sync_delay.1 + 1);
        let Some(node) = self.nodes.get_mut(&id) else { return };
        let Some(raft) = node.raft.as_mut() else { return };
        let ready = raft.ready();
        if let Some(hard_state) = ready.hard_state {
            node.disk.hard_state = hard_state;
        }
        if let Some(snapshot) = ready.snapshot {
            node.machine = StateMachine::decode(&snapshot.data);
            let last = snapshot.meta.last_included;
            node.disk.install(snapshot);
            raft.snapshot_installed(last);
        }
        if let Some(write) = ready.log_write {
            node.disk.unsynced.push((sync_at, write));
        }
        let committed = ready.committed_entries;
        if let Some(last) = committed.last() {
            for entry in &committed {
                node.machine.apply(entry);
            }
            raft.applied(last.log_id.index);
        }
        for outcome in &ready.reads {
            let floor = self.read_floors.remove(&(id, outcome.id));
            if let (Ok(read_index), Some(floor)) = (&outcome.result, floor) {
                assert!(*read_index >= floor, "linearizability: read {} at node {id} returned read index {read_index} below acknowledged write {floor}", outcome.id);
                assert!(
                    node.machine.applied >= *read_index,
                    "read {} released before its read index was applied",
                    outcome.id
                );
            }
        }
        node.reads.extend(ready.reads);
        for message in ready.messages {
            self.send(message);
        }
        self.record_applied(id, &committed);
    }

    fn record_applied(&mut self, id: NodeId, entries: &[Entry]) {
        let term = self.nodes[&id].raft().term();
        for entry in entries {
            let by_term = self.committed_by_term.entry(entry.log_id.index).or_insert(term);
            *by_term = (*by_term).min(term);
            let log_id = entry.log_id;
            let previous = *self.committed.entry(log_id.index).or_insert(log_id);
            assert_eq!(
                previous, log_id,
                "state machine safety: node {id} applied {log_id} where another applied {previous}"
            );
            let decided: Vec<(LogId, NodeId)> =
                self.pending.iter().filter(|(l, _)| l.index == log_id.index).map(|(l, p)| (*l, *p)).collect();
            for (proposed, proposer) in decided {
                if proposer != id {
                    continue;
                }
                self.pending.remove(&proposed);
                if proposed == log_id {
                    self.acknowledged.insert(proposed);
                } else {
                    self.failed.insert(proposed);
                }
            }
        }
        let machine = self.nodes[&id].machine;
        if machine.applied > 0 {
            let previous = *self.machine_at.entry(machine.applied).or_insert(machine.hash);
            assert_eq!(previous, machine.hash, "state machine safety: node {id} diverged at index {}", machine.applied);
        }
    }

    /// Election safety, log matching and leader completeness, checked from the outside.
    pub fn check_safety(&mut self) {
        let live: Vec<(NodeId, &RaftNode)> =
            self.nodes.iter().filter_map(|(id, n)| n.raft.as_ref().map(|r| (*id, r))).collect();
        for (id, raft) in &live {
            if raft.role() == Role::Leader {
                let leader = *self.leaders.entry(raft.term()).or_insert(*id);
                assert_eq!(leader, *id, "election safety: two leaders in term {}", raft.term());
                for (index, log_id) in self.committed.range(raft.first_log_index()..) {
                    if self.committed_by_term[index] >= raft.term() {
                        continue;
                    }
                    let held = raft.entry(*index).map(|e| e.log_id);
                    assert_eq!(held, Some(*log_id), "leader completeness: leader {id} lacks committed entry {log_id}");
                }
            }
        }
        for (i, (a_id, a)) in live.iter().enumerate() {
            for (b_id, b) in &live[i + 1..] {
                check_log_matching(*a_id, a, *b_id, b);
            }
        }
    }

    /// Crashes a node: unsynced writes are lost.
    pub fn crash(&mut self, id: NodeId) {
        let node = self.nodes.get_mut(&id).expect("known node");
        node.raft = None;
        node.disk.unsynced.clear();
        node.reads.clear();
    }

    /// Restarts a crashed node from its disk.
    pub fn restart(&mut self, id: NodeId) {
        let node = self.nodes.get_mut(&id).expect("known node");
        assert!(node.raft.is_none(), "restart of a running node");
        let applied = node.disk.snapshot.as_ref().map_or(0, |s| s.meta.last_included.index);
        node.machine =
            node.disk.snapshot.as_ref().map_or_else(StateMachine::default, |s| StateMachine::decode(&s.data));
        let recovered = RecoveredState {
            hard_state: node.disk.hard_state,
            snapshot: node.disk.snapshot.clone(),
            entries: node.disk.entries.clone(),
            applied,
        };
        node.raft = Some(RaftNode::new(node.config.clone(), recovered).expect("recovered state is consistent"));
    }

    /// The application of `id` snapshots its state machine; the core compacts its log.
    pub fn take_snapshot(&mut self, id: NodeId) -> bool {
        let padding = self.snapshot_padding;
        let node = self.nodes.get_mut(&id).expect("known node");
        let Some(raft) = node.raft.as_mut() else { return false };
        let index = node.machine.applied;
        let Ok(meta) = raft.snapshot_taken(index, node.machine.encode(padding)) else { return false };
        node.disk.sync_all();
        let data = node.machine.encode(padding);
        node.disk.entries.retain(|e| e.log_id.index > index);
        node.disk.snapshot = Some(Snapshot { meta, data });
        true
    }

    /// Cuts every link between the two groups.
    pub fn partition(&mut self, group: &[NodeId]) {
        let all: Vec<NodeId> = self.nodes.keys().copied().collect();
        for a in group {
            for b in all.iter().filter(|b| !group.contains(b)) {
                self.blocked.insert((*a, *b));
                self.blocked.insert((*b, *a));
            }
        }
    }

    pub fn isolate(&mut self, id: NodeId) {
        self.partition(&[id]);
    }

    pub fn heal(&mut self) {
        self.blocked.clear();
    }

    /// Reads that completed at `id`, taken.
    pub fn take_reads(&mut self, id: NodeId) -> Vec<ReadOutcome> {
        std::mem::take(&mut self.nodes.get_mut(&id).expect("known node").reads)
    }

    /// Every acknowledged proposal is applied, at its index, on every live member of the
    /// leader's configuration (call once the cluster `converged`).
    pub fn check_no_acknowledged_write_lost(&self) {
        let members = self.leader().map(|l| self.node(l).membership().members()).unwrap_or_default();
        for log_id in &self.acknowledged {
            assert_eq!(self.committed.get(&log_id.index), Some(log_id), "acknowledged {log_id} was lost");
            for id in members.iter().filter(|id| self.is_up(**id)) {
                let applied = self.nodes[id].machine.applied;
                assert!(applied >= log_id.index, "node {id} has not applied acknowledged {log_id} (applied {applied})");
            }
        }
    }
}

fn check_log_matching(a_id: NodeId, a: &RaftNode, b_id: NodeId, b: &RaftNode) {
    let low = a.first_log_index().max(b.first_log_index());
    let high = a.last_log_id().index.min(b.last_log_id().index);
    let mut index = high;
    while index >= low && index > 0 {
        let (ea, eb) = (a.entry(index), b.entry(index));
        if ea.map(|e| e.log_id) == eb.map(|e| e.log_id) {
            break;
        }
        index -= 1;
    }
    for i in low..=index {
        assert_eq!(a.entry(i), b.entry(i), "log matching: nodes {a_id} and {b_id} differ at {i} below a common entry");
    }
}
