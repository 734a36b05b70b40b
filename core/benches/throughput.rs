//! Throughput of the consensus core alone: a 3-voter cluster of [`RaftNode`]s driven in memory on
//! one thread, storage modelled as instantly durable, the network as one FIFO queue, time as a
//! virtual clock advanced by 1 ms per round.
//!
//! Load: a closed loop of N proposers. Each proposer has at most one proposal outstanding; when
//! the leader applies the entry at the log id `propose` returned, that proposer proposes again at
//! once (16-byte payloads). Replication batching is on (the core's defaults). Compaction is on:
//! every node takes a snapshot of its state machine every `--compact-every` applied entries.
//!
//! Reported: committed entries (applied on the leader) per second of wall time and ns per entry,
//! with 1 and with 256 proposers, and for 256 proposers the per-entry cost at growing log sizes
//! (separate runs of 10k, 100k, 1M, 10M entries, and the per-decade windows of the largest run).
//!
//! ```text
//! cargo bench -p keel-core --bench throughput [-- OPTIONS]
//!   --entries N        largest run of the sweep (default 10000000; env KEEL_BENCH_ENTRIES)
//!   --quick            cap the sweep at 1000000 entries (env KEEL_BENCH_QUICK=1)
//!   --single N         entries of the 1-proposer run (default 200000; env KEEL_BENCH_SINGLE)
//!   --proposers N      proposers of the sweep (default 256; env KEEL_BENCH_PROPOSERS)
//!   --compact-every K  snapshot every K applied entries (default 10000; env KEEL_BENCH_COMPACT_EVERY)
//!   --min-entries M    small sizes are repeated until M entries were measured, median reported
//!                      (default 1000000; env KEEL_BENCH_MIN_ENTRIES)
//!   --static-payloads  payloads are `Bytes::from_static` slices, whose clones cost nothing, instead of
//!                      slices of a shared buffer (one atomic increment per clone): isolates the cost of
//!                      the core's entry copies from the cost of its logic (env KEEL_BENCH_STATIC_PAYLOADS=1)
//! ```
//!
//! At the end of every run the bench checks that all three nodes applied exactly the acknowledged
//! commands, in the same order (an order-sensitive checksum of the payloads), and that no election
//! happened while measuring.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use keel_core::{
    Config, Entry, EntryPayload, Index, LogId, Membership, Message, MessageBody, NodeId, RaftNode, RecoveredState, Role,
};

const VOTERS: [NodeId; 3] = [1, 2, 3];
const PAYLOAD_BYTES: usize = 16;
/// Bytes of one payload arena block: payloads are slices of a shared buffer, as a server's
/// decoded requests are slices of its receive buffer.
const ARENA_BYTES: usize = 64 << 10;
/// Source of `--static-payloads`: distinct 16-byte windows of a static table.
static STATIC_PAYLOADS: [u8; 4096 + PAYLOAD_BYTES] = {
    let mut table = [0u8; 4096 + PAYLOAD_BYTES];
    let mut i = 0;
    let mut x: u32 = 0x9e37_79b9;
    while i < table.len() {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        table[i] = x as u8;
        i += 1;
    }
    table
};
/// Rounds allowed for the election and for the final catch-up of the followers.
const SETTLE_ROUNDS_MAX: u64 = 100_000;
/// Ready batches one node may hand out in one round before the bench declares it stuck.
const DRAIN_BATCHES_MAX: u32 = 100_000;

/// The state machine of one node: how many commands it applied and an order-sensitive checksum.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct StateMachine {
    commands: u64,
    checksum: u64,
}

impl StateMachine {
    fn apply(&mut self, command: &[u8]) {
        assert_eq!(command.len(), PAYLOAD_BYTES, "payload size");
        let (a, b) = command.split_at(8);
        for word in [a, b] {
            let word = u64::from_le_bytes(word.try_into().expect("8 bytes"));
            self.checksum = (self.checksum ^ word).wrapping_mul(0x0100_0000_01b3).rotate_left(29);
        }
        self.commands += 1;
    }

    fn encode(&self) -> Bytes {
        let mut data = Vec::with_capacity(16);
        data.extend_from_slice(&self.commands.to_le_bytes());
        data.extend_from_slice(&self.checksum.to_le_bytes());
        Bytes::from(data)
    }

    fn decode(data: &[u8]) -> Self {
        assert_eq!(data.len(), 16, "snapshot size");
        let (a, b) = data.split_at(8);
        Self {
            commands: u64::from_le_bytes(a.try_into().expect("8 bytes")),
            checksum: u64::from_le_bytes(b.try_into().expect("8 bytes")),
        }
    }
}

/// One node with its (instantly durable) storage and its state machine.
struct Host {
    node: RaftNode,
    machine: StateMachine,
    applied: Index,
    snapshot_index: Index,
}

/// Counters of the measured phase.
#[derive(Clone, Copy, Debug, Default)]
struct Stats {
    rounds: u64,
    readies: u64,
    messages: u64,
    appends: u64,
    append_entries: u64,
    snapshots: u64,
    rejected_proposals: u64,
    log_len_max: u64,
}

/// The closed-loop clients: `slots.len()` proposers, each with at most one proposal outstanding.
struct Clients {
    /// Next sequence number of each proposer.
    seq: Vec<u64>,
    /// Proposals in flight on the leader, in log order.
    pending: VecDeque<(LogId, usize)>,
    /// Proposers whose proposal was refused, to retry next round.
    blocked: Vec<usize>,
    /// Proposals made (accepted by the leader).
    issued: u64,
    /// Proposals applied on the leader (committed entries).
    acked: u64,
    /// Stop issuing at this many proposals.
    target: u64,
    arena: BytesMut,
    static_payloads: bool,
    /// `(acked, elapsed)` when `acked` reached each checkpoint.
    checkpoints: Vec<(u64, Duration)>,
    next_checkpoint: usize,
    started: Instant,
}

impl Clients {
    fn new(proposers: usize, target: u64, checkpoints: &[u64], static_payloads: bool) -> Self {
        Self {
            seq: vec![0; proposers],
            pending: VecDeque::with_capacity(proposers),
            blocked: Vec::new(),
            issued: 0,
            acked: 0,
            target,
            arena: BytesMut::new(),
            static_payloads,
            checkpoints: checkpoints.iter().map(|c| (*c, Duration::ZERO)).collect(),
            next_checkpoint: 0,
            started: Instant::now(),
        }
    }

    fn payload(&mut self, slot: usize) -> Bytes {
        if self.static_payloads {
            let offset = (self.issued % 4096) as usize;
            return Bytes::from_static(&STATIC_PAYLOADS[offset..offset + PAYLOAD_BYTES]);
        }
        if self.arena.capacity() < PAYLOAD_BYTES {
            self.arena = BytesMut::with_capacity(ARENA_BYTES);
        }
        self.arena.extend_from_slice(&(slot as u64).to_le_bytes());
        self.arena.extend_from_slice(&self.seq[slot].to_le_bytes());
        self.seq[slot] += 1;
        self.arena.split().freeze()
    }

    /// Proposer `slot` proposes to `leader` if the run still needs entries.
    fn propose(&mut self, leader: &mut RaftNode, slot: usize, stats: &mut Stats) {
        if self.issued >= self.target {
            return;
        }
        let payload = self.payload(slot);
        match leader.propose(payload) {
            Ok(log_id) => {
                self.issued += 1;
                self.pending.push_back((log_id, slot));
            }
            Err(_) => {
                stats.rejected_proposals += 1;
                if !self.static_payloads {
                    self.seq[slot] -= 1;
                }
                self.blocked.push(slot);
            }
        }
    }

    /// The leader applied `entry`: answer its proposer, who proposes again.
    fn on_leader_applied(&mut self, leader: &mut RaftNode, entry: &Entry, stats: &mut Stats) {
        let Some(&(log_id, slot)) = self.pending.front() else { return };
        if log_id.index != entry.log_id.index {
            assert!(log_id.index > entry.log_id.index, "proposal {log_id} was skipped");
            return;
        }
        self.pending.pop_front();
        assert_eq!(log_id.term, entry.log_id.term, "proposal {log_id} lost to a leader change");
        self.acked += 1;
        if let Some((at, elapsed)) = self.checkpoints.get_mut(self.next_checkpoint) {
            if self.acked == *at {
                *elapsed = self.started.elapsed();
                self.next_checkpoint += 1;
            }
        }
        self.propose(leader, slot, stats);
    }
}

struct Cluster {
    hosts: Vec<Host>,
    network: VecDeque<Message>,
    now_ms: u64,
    compact_every: u64,
    leader: usize,
    leader_term: u64,
    stats: Stats,
}

impl Cluster {
    fn new(compact_every: u64) -> Self {
        let membership = Membership::with_voters(VOTERS);
        let hosts = VOTERS
            .iter()
            .map(|&id| {
                let mut config = Config::new(id);
                // Generous elections: the first one completes in virtual time at no wall cost, and
                // a follower hears from the leader every round, so none happens while measuring.
                config.election_timeout_ms_min = 1_000;
                config.election_timeout_ms_max = 2_000;
                config.heartbeat_interval_ms = 100;
                config.rng_seed = 0x5eed ^ u64::from(id);
                let node =
                    RaftNode::new(config, RecoveredState::bootstrap(membership.clone())).expect("valid configuration");
                Host { node, machine: StateMachine::default(), applied: 0, snapshot_index: 0 }
            })
            .collect();
        Self {
            hosts,
            network: VecDeque::new(),
            now_ms: 0,
            compact_every,
            leader: usize::MAX,
            leader_term: 0,
            stats: Stats::default(),
        }
    }

    /// Runs rounds until a leader has committed an entry of its term (it accepts proposals then).
    fn elect(&mut self, clients: &mut Clients) {
        for _ in 0..SETTLE_ROUNDS_MAX {
            self.round(clients);
            let ready = self.hosts.iter().position(|h| {
                h.node.role() == Role::Leader
                    && h.node.entry(h.node.commit_index()).is_some_and(|e| e.log_id.term == h.node.term())
            });
            if let Some(leader) = ready {
                self.leader = leader;
                self.leader_term = self.hosts[leader].node.term();
                return;
            }
        }
        panic!("no leader elected within {SETTLE_ROUNDS_MAX} rounds");
    }

    /// One round: advance the clock 1 ms, carry out every node's effects, deliver every message.
    fn round(&mut self, clients: &mut Clients) {
        self.now_ms += 1;
        self.stats.rounds += 1;
        if self.leader != usize::MAX {
            let leader = &mut self.hosts[self.leader].node;
            for slot in std::mem::take(&mut clients.blocked) {
                clients.propose(leader, slot, &mut self.stats);
            }
        }
        for host in &mut self.hosts {
            host.node.tick(self.now_ms);
        }
        for i in 0..self.hosts.len() {
            self.drain(i, clients);
        }
        if self.leader != usize::MAX {
            let node = &self.hosts[self.leader].node;
            let log_len = node.last_log_id().index + 1 - node.first_log_index();
            self.stats.log_len_max = self.stats.log_len_max.max(log_len);
        }
        self.stats.messages += self.network.len() as u64;
        while let Some(message) = self.network.pop_front() {
            if let MessageBody::AppendEntries { entries, .. } = &message.body {
                self.stats.appends += 1;
                self.stats.append_entries += entries.len() as u64;
            }
            self.hosts[message.to as usize - 1].node.step(message);
        }
    }

    /// Carries out node `i`'s effects until it has none, as instantly durable storage would.
    fn drain(&mut self, i: usize, clients: &mut Clients) {
        let is_leader = i == self.leader;
        let host = &mut self.hosts[i];
        let mut batches = 0;
        while host.node.has_ready() {
            batches += 1;
            assert!(batches <= DRAIN_BATCHES_MAX, "node {} keeps reporting work after {batches} Ready batches", i + 1);
            let ready = host.node.ready();
            self.stats.readies += 1;
            if let Some(snapshot) = ready.snapshot {
                self.stats.snapshots += 1;
                host.machine = StateMachine::decode(&snapshot.data);
                host.applied = snapshot.meta.last_included.index;
                host.snapshot_index = host.applied;
                host.node.snapshot_installed(snapshot.meta.last_included);
            }
            if let Some(last) = ready.log_write.as_ref().and_then(|w| w.entries.last()) {
                host.node.persisted(last.log_id);
            }
            self.network.extend(ready.messages);
            let Some(last) = ready.committed_entries.last().map(|e| e.log_id.index) else { continue };
            for entry in &ready.committed_entries {
                if let EntryPayload::Command(command) = &entry.payload {
                    host.machine.apply(command);
                    if is_leader {
                        clients.on_leader_applied(&mut host.node, entry, &mut self.stats);
                    }
                }
            }
            host.applied = last;
            host.node.applied(last);
            if host.applied >= host.snapshot_index + self.compact_every {
                host.node.snapshot_taken(host.applied, host.machine.encode()).expect("snapshot of applied state");
                host.snapshot_index = host.applied;
            }
        }
    }
}

/// The result of one measured run.
struct Run {
    entries: u64,
    elapsed: Duration,
    stats: Stats,
    checkpoints: Vec<(u64, Duration)>,
}

impl Run {
    fn ns_per_entry(&self) -> f64 {
        self.elapsed.as_nanos() as f64 / self.entries as f64
    }
}

/// Measures `entries` committed entries with `proposers` closed-loop proposers on a fresh cluster.
fn run(proposers: usize, entries: u64, compact_every: u64, checkpoints: &[u64], static_payloads: bool) -> Run {
    let mut cluster = Cluster::new(compact_every);
    let mut clients = Clients::new(proposers, entries, checkpoints, static_payloads);
    cluster.elect(&mut clients);
    cluster.stats = Stats::default();

    let started = Instant::now();
    clients.started = started;
    for slot in 0..proposers {
        clients.propose(&mut cluster.hosts[cluster.leader].node, slot, &mut cluster.stats);
    }
    while clients.acked < entries {
        cluster.round(&mut clients);
    }
    let elapsed = started.elapsed();
    let stats = cluster.stats;

    // Not measured: let the followers apply the tail, then check that everyone agrees.
    let mut settle = 0;
    while cluster.hosts.iter().any(|h| h.machine.commands < entries) {
        cluster.round(&mut clients);
        settle += 1;
        assert!(settle < SETTLE_ROUNDS_MAX, "followers did not catch up");
    }
    assert_eq!(clients.acked, entries, "acknowledged proposals");
    assert_eq!(clients.issued, entries, "issued proposals");
    assert!(clients.pending.is_empty(), "proposals left unanswered");
    let leader_machine = cluster.hosts[cluster.leader].machine;
    for (i, host) in cluster.hosts.iter().enumerate() {
        assert_eq!(host.machine.commands, entries, "node {} applied {} commands", i + 1, host.machine.commands);
        assert_eq!(host.machine, leader_machine, "node {} diverged from the leader", i + 1);
        assert_eq!(host.node.term(), cluster.leader_term, "node {}: an election happened while measuring", i + 1);
    }
    assert_eq!(cluster.hosts[cluster.leader].node.role(), Role::Leader, "the leader stepped down");

    Run { entries, elapsed, stats, checkpoints: clients.checkpoints }
}

/// Repeats `run` until at least `min_entries` were measured; returns the median run by ns/entry.
fn median_run(proposers: usize, entries: u64, options: &Options) -> (Run, usize) {
    let Options { compact_every, min_entries, static_payloads, .. } = *options;
    let reps = min_entries.div_ceil(entries).max(1) as usize;
    let mut runs: Vec<Run> = (0..reps).map(|_| run(proposers, entries, compact_every, &[], static_payloads)).collect();
    runs.sort_by(|a, b| a.ns_per_entry().total_cmp(&b.ns_per_entry()));
    let median = runs.swap_remove(reps / 2);
    (median, reps)
}

#[derive(Clone, Copy)]
struct Options {
    entries: u64,
    single: u64,
    proposers: usize,
    compact_every: u64,
    min_entries: u64,
    static_payloads: bool,
}

fn parse_options() -> Options {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let number = |name: &str, value: Option<String>| -> Option<u64> {
        value.map(|v| v.replace('_', "").parse().unwrap_or_else(|_| panic!("{name}: not a number: {v}")))
    };
    let mut entries = number("KEEL_BENCH_ENTRIES", env("KEEL_BENCH_ENTRIES")).unwrap_or(10_000_000);
    let mut single = number("KEEL_BENCH_SINGLE", env("KEEL_BENCH_SINGLE")).unwrap_or(200_000);
    let mut proposers = number("KEEL_BENCH_PROPOSERS", env("KEEL_BENCH_PROPOSERS")).unwrap_or(256);
    let mut compact_every = number("KEEL_BENCH_COMPACT_EVERY", env("KEEL_BENCH_COMPACT_EVERY")).unwrap_or(10_000);
    let mut min_entries = number("KEEL_BENCH_MIN_ENTRIES", env("KEEL_BENCH_MIN_ENTRIES")).unwrap_or(1_000_000);
    let mut quick = env("KEEL_BENCH_QUICK").is_some_and(|v| v != "0");
    let mut static_payloads = env("KEEL_BENCH_STATIC_PAYLOADS").is_some_and(|v| v != "0");
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| number(name, Some(args.next().unwrap_or_else(|| panic!("{name} needs a value"))));
        match arg.as_str() {
            "--entries" => entries = value("--entries").expect("value"),
            "--single" => single = value("--single").expect("value"),
            "--proposers" => proposers = value("--proposers").expect("value"),
            "--compact-every" => compact_every = value("--compact-every").expect("value"),
            "--min-entries" => min_entries = value("--min-entries").expect("value"),
            "--quick" => quick = true,
            "--static-payloads" => static_payloads = true,
            // `cargo bench` passes `--bench`; a name filter may follow it. Neither applies here.
            "--bench" => {}
            other if other.starts_with('-') => {
                panic!("unknown option {other} (see the header of benches/throughput.rs)")
            }
            _ => {}
        }
    }
    if quick {
        entries = entries.min(1_000_000);
        single = single.min(100_000);
        min_entries = min_entries.min(200_000);
    }
    assert!(entries >= 1 && single >= 1 && proposers >= 1 && compact_every >= 1, "sizes must be at least 1");
    Options { entries, single, proposers: proposers as usize, compact_every, min_entries, static_payloads }
}

fn print_header() {
    println!(
        "{:>10} {:>11} {:>5} {:>9} {:>12} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8}",
        "proposers",
        "entries",
        "reps",
        "wall s",
        "entries/s",
        "ns/entry",
        "msgs/ent",
        "ready/ent",
        "ent/append",
        "rounds",
        "log max"
    );
}

fn print_row(proposers: usize, run: &Run, reps: usize) {
    let s = &run.stats;
    let per_entry = |count: u64| count as f64 / run.entries as f64;
    println!(
        "{:>10} {:>11} {:>5} {:>9.3} {:>12.0} {:>9.1} {:>9.4} {:>9.4} {:>9.1} {:>9} {:>8}",
        proposers,
        run.entries,
        reps,
        run.elapsed.as_secs_f64(),
        run.entries as f64 / run.elapsed.as_secs_f64(),
        run.ns_per_entry(),
        per_entry(s.messages),
        per_entry(s.readies),
        s.append_entries as f64 / s.appends.max(1) as f64,
        s.rounds,
        s.log_len_max,
    );
    assert_eq!(s.rejected_proposals, 0, "proposals were refused (uncommitted limits)");
    assert_eq!(s.snapshots, 0, "a follower fell behind the compaction point");
}

fn main() {
    let options = parse_options();
    let sizes: Vec<u64> = std::iter::successors(Some(10_000u64), |s| s.checked_mul(10))
        .take_while(|s| *s < options.entries)
        .chain([options.entries])
        .collect();
    println!(
        "keel-core throughput: 3 voters in memory on one thread, instant storage, {PAYLOAD_BYTES}-byte {} payloads, \
         compaction every {} entries",
        if options.static_payloads { "static" } else { "shared-buffer" },
        options.compact_every
    );
    println!(
        "columns: msgs/ent = messages delivered per entry, ready/ent = Ready batches (all nodes) per entry, \
         ent/append = entries per AppendEntries, log max = most entries held in the leader's log"
    );
    println!();
    print_header();

    let (single, reps) = median_run(1, options.single, &Options { min_entries: options.single, ..options });
    print_row(1, &single, reps);
    let mut largest = None;
    for &size in &sizes {
        let (run, reps) = if size == options.entries {
            (run(options.proposers, size, options.compact_every, &sizes, options.static_payloads), 1)
        } else {
            median_run(options.proposers, size, &options)
        };
        print_row(options.proposers, &run, reps);
        if size == options.entries {
            largest = Some(run);
        }
    }

    let largest = largest.expect("the sweep ends with the largest size");
    println!();
    println!("flatness: ns/entry per window of the {}-entry run ({} proposers)", largest.entries, options.proposers);
    println!("{:>24} {:>9}", "window (entries)", "ns/entry");
    let mut previous = (0, Duration::ZERO);
    for &(at, elapsed) in &largest.checkpoints {
        let ns = (elapsed - previous.1).as_nanos() as f64 / (at - previous.0) as f64;
        println!("{:>24} {:>9.1}", format!("{}..{}", previous.0, at), ns);
        previous = (at, elapsed);
    }
    if let Some(peak) = peak_rss() {
        println!("peak resident memory of the process: {peak}");
    }
    let rate = largest.entries as f64 / largest.elapsed.as_secs_f64();
    println!();
    println!(
        "target: >= 2,000,000 entries/s at 256 proposers: {} ({:.0} entries/s at {} proposers, {} entries)",
        if rate >= 2_000_000.0 { "met" } else { "MISSED" },
        rate,
        options.proposers,
        largest.entries
    );
}

/// Peak resident set size of this process, as Linux reports it.
fn peak_rss() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    Some(line["VmHWM:".len()..].trim().to_string())
}
