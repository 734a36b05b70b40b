//! The simulated network: messages in flight in a deterministic priority queue keyed by
//! `(delivery time, sequence number)`, with loss, delay, duplication, reordering and partitions.
//!
//! Data flow: the simulator hands every message a node's `Ready` produced to [`Network::send`],
//! which decides its fate (dropped, delivered once or twice, delayed or held back) from the
//! network's random stream, and says what it decided ([`SendFate`], for the trace);
//! [`Network::pop_due`] hands back, in order and with their ids, the messages whose delivery time
//! has come. Partitions are a set of cut directed links, consulted both when a message is sent
//! and when it arrives (a link cut while a message is in flight loses it). The queue is bounded:
//! past `in_flight_max` messages a new one is dropped (a full send buffer), and counted.

use std::collections::{BTreeMap, BTreeSet};

use keel_core::{Message, NodeId};

use super::rng::SimRng;
use super::scenario::NetworkFaults;
use super::trace::DropReason;

/// Most messages in flight at once; more are dropped as if a send buffer were full.
pub const IN_FLIGHT_MAX: usize = 100_000;

/// The shapes of partition the fault scheduler draws.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum PartitionKind {
    /// Two sides, a minority and a majority, cut in both directions.
    MinorityMajority,
    /// One node cut from everyone in both directions.
    IsolateOne,
    /// Messages from one side to the other are lost; the other direction works.
    OneWay,
    /// Two sides that cannot talk directly, both connected to one bridge node.
    Bridge,
    /// A random set of directed links cut (asymmetric).
    RandomLinks,
}

/// Counters of what the network did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetworkStats {
    /// Messages handed to the network.
    pub sent: u64,
    /// Messages delivered to a running node.
    pub delivered: u64,
    /// Lost: random loss, cut links, full queue, or a down receiver.
    pub dropped: u64,
    /// Extra copies delivered.
    pub duplicated: u64,
    /// Messages held back so that later ones overtake them.
    pub reordered: u64,
}

/// What the network did with a message handed to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendFate {
    /// Dropped at once.
    Dropped(DropReason),
    /// Queued under `id` for delivery at `at_ms`; `copy` is a duplicate's id and delivery time.
    Queued {
        /// The message's id (its sequence number in the queue).
        id: u64,
        /// When it is due.
        at_ms: u64,
        /// A duplicate copy, if the network made one.
        copy: Option<(u64, u64)>,
    },
}

/// A message whose delivery time has come.
#[derive(Debug)]
pub struct Arrival {
    /// The id it was queued under.
    pub id: u64,
    /// The message.
    pub message: Message,
    /// Its link was cut while it was in flight: it is lost (and counted as dropped).
    pub cut: bool,
}

/// The network of one run.
#[derive(Debug)]
pub struct Network {
    faults: NetworkFaults,
    rng: SimRng,
    /// Boxed: a message is large, and the queue's nodes shift their values on every removal.
    in_flight: BTreeMap<(u64, u64), Box<Message>>,
    sequence: u64,
    cut: BTreeSet<(NodeId, NodeId)>,
    faults_on: bool,
    /// What happened so far.
    pub stats: NetworkStats,
}

impl Network {
    /// An empty network with the run's fault settings and its own random stream.
    pub fn new(faults: NetworkFaults, rng: SimRng) -> Self {
        Self {
            faults,
            rng,
            in_flight: BTreeMap::new(),
            sequence: 0,
            cut: BTreeSet::new(),
            faults_on: true,
            stats: NetworkStats::default(),
        }
    }

    /// Hands `message` to the network at `now_ms` and says what became of it.
    pub fn send(&mut self, now_ms: u64, message: Message) -> SendFate {
        self.stats.sent += 1;
        let lost = self.faults_on && self.rng.chance(self.faults.loss_per_million);
        let reason = if lost {
            Some(DropReason::Loss)
        } else if self.is_cut(message.from, message.to) {
            Some(DropReason::Cut)
        } else {
            (self.in_flight.len() >= IN_FLIGHT_MAX).then_some(DropReason::QueueFull)
        };
        if let Some(reason) = reason {
            self.stats.dropped += 1;
            return SendFate::Dropped(reason);
        }
        let mut copy = None;
        if self.faults_on && self.rng.chance(self.faults.duplicate_per_million) {
            self.stats.duplicated += 1;
            let at = now_ms + self.delay_ms();
            copy = Some((self.enqueue(at, message.clone()), at));
        }
        let at_ms = now_ms + self.delay_ms();
        SendFate::Queued { id: self.enqueue(at_ms, message), at_ms, copy }
    }

    /// Queues `message` for `at_ms`; returns its id.
    fn enqueue(&mut self, at_ms: u64, message: Message) -> u64 {
        self.sequence += 1;
        self.in_flight.insert((at_ms, self.sequence), Box::new(message));
        self.sequence
    }

    fn delay_ms(&mut self) -> u64 {
        let mut delay = self.rng.between(self.faults.delay_ms_min, self.faults.delay_ms_max);
        if self.faults_on && self.rng.chance(self.faults.reorder_per_million) {
            self.stats.reordered += 1;
            delay += self.rng.between(1, self.faults.reorder_delay_ms_max);
        }
        delay
    }

    /// When the next message is due, if any is in flight.
    pub fn next_delivery_ms(&self) -> Option<u64> {
        self.in_flight.first_key_value().map(|((at, _), _)| *at)
    }

    /// The next message due at or before `now_ms`, in (time, send order); one over a link cut
    /// since it was sent comes back marked `cut` (lost, and counted as dropped).
    pub fn pop_due(&mut self, now_ms: u64) -> Option<Arrival> {
        let entry = self.in_flight.first_entry()?;
        if entry.key().0 > now_ms {
            return None;
        }
        let ((_, id), message) = entry.remove_entry();
        let cut = self.is_cut(message.from, message.to);
        if cut {
            self.stats.dropped += 1;
        }
        Some(Arrival { id, message: *message, cut })
    }

    /// Messages in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Whether the directed link `from → to` is cut.
    pub fn is_cut(&self, from: NodeId, to: NodeId) -> bool {
        !self.cut.is_empty() && self.cut.contains(&(from, to))
    }

    /// Cuts the directed link `from → to`.
    pub fn cut_link(&mut self, from: NodeId, to: NodeId) {
        self.cut.insert((from, to));
    }

    /// Cuts every link between `side` and the rest of `nodes`, in both directions or only from
    /// `side` outwards.
    pub fn cut_between(&mut self, side: &[NodeId], nodes: &[NodeId], both_directions: bool) {
        for a in side {
            for b in nodes.iter().filter(|b| !side.contains(b)) {
                self.cut.insert((*a, *b));
                if both_directions {
                    self.cut.insert((*b, *a));
                }
            }
        }
    }

    /// Applies a partition of `kind` over `nodes`, drawn from the network's stream; returns a
    /// description for the trace.
    pub fn partition(&mut self, kind: PartitionKind, nodes: &[NodeId]) -> String {
        let shuffled = self.rng.shuffled(nodes);
        let minority = (nodes.len() - 1) / 2;
        match kind {
            PartitionKind::MinorityMajority => {
                let side = &shuffled[..minority.max(1)];
                self.cut_between(side, nodes, true);
                format!("minority {side:?} | majority")
            }
            PartitionKind::IsolateOne => {
                self.cut_between(&shuffled[..1], nodes, true);
                format!("isolate {}", shuffled[0])
            }
            PartitionKind::OneWay => {
                let side = &shuffled[..minority.max(1)];
                self.cut_between(side, nodes, false);
                format!("one-way from {side:?}")
            }
            PartitionKind::Bridge => {
                let bridge = shuffled[0];
                let half = shuffled.len() / 2;
                let (left, right) = (&shuffled[1..=half.max(1)], &shuffled[half.max(1) + 1..]);
                for a in left {
                    for b in right {
                        self.cut.insert((*a, *b));
                        self.cut.insert((*b, *a));
                    }
                }
                format!("bridge {bridge} between {left:?} and {right:?}")
            }
            PartitionKind::RandomLinks => {
                for a in nodes {
                    for b in nodes.iter().filter(|b| *b != a) {
                        if self.rng.chance(300_000) {
                            self.cut.insert((*a, *b));
                        }
                    }
                }
                format!("random links cut: {}", self.cut.len())
            }
        }
    }

    /// Restores every link.
    pub fn heal(&mut self) {
        self.cut.clear();
    }

    /// Switches random loss, duplication and reordering on or off (off in the liveness phase).
    pub fn set_faults(&mut self, on: bool) {
        self.faults_on = on;
    }

    /// Whether any link is cut.
    pub fn is_partitioned(&self) -> bool {
        !self.cut.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_core::MessageBody;

    fn faults() -> NetworkFaults {
        NetworkFaults {
            delay_ms_min: 1,
            delay_ms_max: 5,
            loss_per_million: 0,
            duplicate_per_million: 0,
            reorder_per_million: 0,
            reorder_delay_ms_max: 10,
            partitions: true,
        }
    }

    fn message(from: NodeId, to: NodeId) -> Message {
        Message { from, to, term: 1, body: MessageBody::TimeoutNow }
    }

    #[test]
    fn delivers_in_time_order_and_respects_cuts() {
        let mut network = Network::new(faults(), SimRng::new(1));
        for i in 0..50 {
            network.send(i, message(1, 2));
        }
        network.cut_link(1, 3);
        assert_eq!(network.send(0, message(1, 3)), SendFate::Dropped(DropReason::Cut));
        let mut last = 0;
        let mut delivered = 0;
        for now in 0..100 {
            while let Some(arrival) = network.pop_due(now) {
                assert!(!arrival.cut);
                assert_eq!(arrival.message.to, 2);
                assert!(now >= last);
                last = now;
                delivered += 1;
            }
        }
        assert_eq!(delivered, 50);
        assert_eq!(network.stats.dropped, 1);
    }

    #[test]
    fn partitions_cut_the_expected_links() {
        let mut network = Network::new(faults(), SimRng::new(2));
        network.partition(PartitionKind::IsolateOne, &[1, 2, 3]);
        let cut_links = (1..=3).flat_map(|a| (1..=3).map(move |b| (a, b))).filter(|(a, b)| network.is_cut(*a, *b));
        assert_eq!(cut_links.count(), 4, "one node cut both ways from two others");
        network.heal();
        assert!(!network.is_partitioned());
    }
}
