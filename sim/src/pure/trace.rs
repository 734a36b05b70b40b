//! The run's trace: a running 64-bit hash of every event for the determinism self-check, and,
//! when asked, the events themselves as JSON lines that `keel-sim replay` re-executes and
//! `keel-sim render` draws.
//!
//! Events: every message sent (with its fate: queued for a delivery time, or dropped and why),
//! delivered or dropped on the way; every tick of a node's core with the node's clock reading;
//! every change of a node's role, term, known leader or commit index; every fault and its end;
//! every client invocation, proposal and completion; applied entries, expiry proposals, the
//! liveness phase and violations. The file starts with a header (`header.rs`) and ends with an
//! `end` line carrying the verdict, the event count and the hash.
//!
//! Data flow: the simulator calls [`Trace::record`] with an [`EventKind`], the true time and the
//! event's numbers. The hash mixes only the kind's code and the numbers (cheap); a line is
//! formatted only when the trace keeps lines or verifies them against a recorded trace
//! ([`Trace::verifying`]), which stops at the first difference. Two runs of one scenario must
//! end with the same [`Trace::hash`].

use std::fmt::Write as _;

use keel_core::{MessageBody, NodeId, Role};

use super::faults::Fault;

/// Names of message kinds, by code (the core's `MessageBody::kind`).
pub const MESSAGE_KINDS: [&str; 13] = [
    "append",
    "append_response",
    "heartbeat",
    "heartbeat_response",
    "pre_vote",
    "vote",
    "pre_vote_response",
    "vote_response",
    "snapshot_chunk",
    "snapshot_response",
    "timeout_now",
    "read_index",
    "read_index_response",
];

/// Names of roles, by code; `down` is a crashed node (or one that refused to start).
pub const ROLES: [&str; 6] = ["down", "follower", "pre_candidate", "candidate", "leader", "learner"];

/// Names of faults, by code (see [`fault_fields`]).
pub const FAULTS: [&str; 12] = [
    "none",
    "partition",
    "heal",
    "crash",
    "restart",
    "pause",
    "resume",
    "wall_step",
    "clock_jump",
    "bit_flip",
    "membership",
    "transfer",
];

/// Names of completion outcomes, by `EventType` code.
pub const OUTCOMES: [&str; 4] = ["invoke", "ok", "fail", "info"];

/// Why a message never reached its receiver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// Random loss.
    Loss = 1,
    /// The link was cut when it was sent.
    Cut = 2,
    /// Too many messages in flight.
    QueueFull = 3,
    /// The link was cut while it was in flight.
    CutInFlight = 4,
    /// The receiver was down or paused when it arrived.
    ReceiverDown = 5,
}

/// Names of drop reasons, by code.
pub const DROP_REASONS: [&str; 6] = ["none", "loss", "cut", "queue_full", "cut_in_flight", "receiver_down"];

/// How a field's number is written in a line: as itself or as a name from a table.
#[derive(Clone, Copy, Debug)]
enum Label {
    Num,
    Names(&'static [&'static str]),
}

use Label::{Names, Num};

/// Every kind of event, each with a fixed list of numeric fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A message handed to the network: `id` (0 when dropped at once), `at` its delivery time (0
    /// when dropped), `drop` why it was dropped at once (`none` when queued).
    Send,
    /// Message `id` delivered to its receiver.
    Deliver,
    /// Message `id` lost on the way (or at the receiver).
    Drop,
    /// A node's core ticked with its monotonic `clock` reading.
    Tick,
    /// A node's role, term, known leader (0: none) or commit index changed.
    State,
    /// A fault or the end of one (`node` 0: not about one node; `value`: a partition's mask of
    /// cut-off nodes, bit `n` for node `n`, or a clock jump in milliseconds).
    Fault,
    /// A client operation started.
    Invoke,
    /// A client's write was proposed on a node at a log position.
    Propose,
    /// A client operation completed.
    Complete,
    /// A node applied an entry.
    Apply,
    /// A leader proposed the deletion of expired keys.
    ExpireProposed,
    /// Every fault healed; the liveness phase began.
    Liveness,
    /// A safety check failed (the detail says which).
    Violation,
}

const KINDS: [EventKind; 13] = [
    EventKind::Send,
    EventKind::Deliver,
    EventKind::Drop,
    EventKind::Tick,
    EventKind::State,
    EventKind::Fault,
    EventKind::Invoke,
    EventKind::Propose,
    EventKind::Complete,
    EventKind::Apply,
    EventKind::ExpireProposed,
    EventKind::Liveness,
    EventKind::Violation,
];

impl EventKind {
    /// The name written in a line's `event` field.
    pub fn name(self) -> &'static str {
        match self {
            Self::Send => "send",
            Self::Deliver => "deliver",
            Self::Drop => "drop",
            Self::Tick => "tick",
            Self::State => "state",
            Self::Fault => "fault",
            Self::Invoke => "invoke",
            Self::Propose => "propose",
            Self::Complete => "complete",
            Self::Apply => "apply",
            Self::ExpireProposed => "expire_proposed",
            Self::Liveness => "liveness",
            Self::Violation => "violation",
        }
    }

    /// The kind of a line's `event` name.
    pub fn from_name(name: &str) -> Option<Self> {
        KINDS.into_iter().find(|kind| kind.name() == name)
    }

    /// The names of the kind's fields, in the order [`Trace::record`] takes them.
    pub fn field_names(self) -> impl Iterator<Item = &'static str> {
        self.fields().iter().map(|(name, _)| *name)
    }

    fn fields(self) -> &'static [(&'static str, Label)] {
        match self {
            Self::Send => &[
                ("id", Num),
                ("from", Num),
                ("to", Num),
                ("term", Num),
                ("kind", Names(&MESSAGE_KINDS)),
                ("at", Num),
                ("drop", Names(&DROP_REASONS)),
            ],
            Self::Deliver => &[("id", Num), ("from", Num), ("to", Num)],
            Self::Drop => &[("id", Num), ("from", Num), ("to", Num), ("drop", Names(&DROP_REASONS))],
            Self::Tick => &[("node", Num), ("clock", Num)],
            Self::State => &[("node", Num), ("role", Names(&ROLES)), ("term", Num), ("leader", Num), ("commit", Num)],
            Self::Fault => &[("fault", Names(&FAULTS)), ("node", Num), ("value", Num)],
            Self::Invoke => &[("process", Num), ("op", Num)],
            Self::Propose => &[("process", Num), ("node", Num), ("term", Num), ("index", Num)],
            Self::Complete => &[("process", Num), ("op", Num), ("outcome", Names(&OUTCOMES))],
            Self::Apply => &[("node", Num), ("term", Num), ("index", Num)],
            Self::ExpireProposed => &[("term", Num), ("index", Num)],
            Self::Liveness | Self::Violation => &[],
        }
    }
}

/// The code of a message kind in [`MESSAGE_KINDS`].
pub fn message_kind(body: &MessageBody) -> u64 {
    match body {
        MessageBody::AppendEntries { .. } => 0,
        MessageBody::AppendEntriesResponse { .. } => 1,
        MessageBody::Heartbeat { .. } => 2,
        MessageBody::HeartbeatResponse { .. } => 3,
        MessageBody::RequestVote { pre_vote: true, .. } => 4,
        MessageBody::RequestVote { .. } => 5,
        MessageBody::RequestVoteResponse { pre_vote: true, .. } => 6,
        MessageBody::RequestVoteResponse { .. } => 7,
        MessageBody::InstallSnapshot { .. } => 8,
        MessageBody::InstallSnapshotResponse { .. } => 9,
        MessageBody::TimeoutNow => 10,
        MessageBody::ReadIndexRequest { .. } => 11,
        MessageBody::ReadIndexResponse { .. } => 12,
    }
}

/// The code of a role in [`ROLES`] (`None`: down).
pub fn role_code(role: Option<Role>) -> u64 {
    match role {
        None => 0,
        Some(Role::Follower) => 1,
        Some(Role::PreCandidate) => 2,
        Some(Role::Candidate) => 3,
        Some(Role::Leader) => 4,
        Some(Role::Learner) => 5,
    }
}

/// The `fault`, `node` and `value` fields of a fault event (a partition's `value`, its cut mask,
/// is filled in by the simulator).
pub fn fault_fields(fault: &Fault) -> [u64; 3] {
    match fault {
        Fault::Partition(_) => [1, 0, 0],
        Fault::Heal => [2, 0, 0],
        Fault::Crash(node) => [3, u64::from(*node), 0],
        Fault::Restart(node) => [4, u64::from(*node), 0],
        Fault::Pause(node) => [5, u64::from(*node), 0],
        Fault::Resume(node) => [6, u64::from(*node), 0],
        Fault::StepWallClock(node) => [7, u64::from(*node), 0],
        Fault::JumpClock(node, jump_ms) => [8, u64::from(*node), *jump_ms],
        Fault::FlipBit(node) => [9, u64::from(*node), 0],
        Fault::ChangeMembership => [10, 0, 0],
        Fault::TransferLeadership => [11, 0, 0],
    }
}

/// Where a replayed run first differed from the recorded trace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Divergence {
    /// The line of the trace file (1-based, the header is line 1).
    pub line: usize,
    /// The recorded line, or `None` when the recorded trace ended first.
    pub expected: Option<String>,
    /// The line the run produced, or `None` when the run ended first.
    pub actual: Option<String>,
}

/// What the trace does with each event's line.
#[derive(Debug)]
enum Sink {
    HashOnly,
    Keep(Vec<String>),
    Verify { expected: Vec<String>, first_line: usize, next: usize, divergence: Option<Divergence> },
}

/// The trace of one run.
#[derive(Debug)]
pub struct Trace {
    hash: u64,
    events: u64,
    sink: Sink,
    /// Last recorded state of each node, by node id, for [`Trace::record_state`].
    states: Vec<Option<[u64; 4]>>,
}

impl Default for Trace {
    fn default() -> Self {
        Self::new(false)
    }
}

/// Mixes `value` into `hash` (SplitMix64's finalizer over the xor).
fn mix(hash: u64, value: u64) -> u64 {
    let mut z = (hash ^ value).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// One event as a JSON line.
fn format_line(kind: EventKind, time_ms: u64, fields: &[u64], detail: &str) -> String {
    let mut line = String::with_capacity(96 + detail.len());
    let _ = write!(line, "{{\"t\":{time_ms},\"event\":\"{}\"", kind.name());
    for ((name, label), value) in kind.fields().iter().zip(fields) {
        match label {
            Num => {
                let _ = write!(line, ",\"{name}\":{value}");
            }
            Names(names) => {
                let text = names.get(*value as usize).copied().unwrap_or("unknown");
                let _ = write!(line, ",\"{name}\":\"{text}\"");
            }
        }
    }
    if !detail.is_empty() {
        line.push_str(",\"detail\":");
        line.push_str(&serde_json::to_string(detail).expect("a string always serializes"));
    }
    line.push('}');
    line
}

impl Trace {
    /// A trace that keeps only the hash, or also every event as a JSON line.
    pub fn new(keep_lines: bool) -> Self {
        let sink = if keep_lines { Sink::Keep(Vec::new()) } else { Sink::HashOnly };
        Self { hash: 0, events: 0, sink, states: Vec::new() }
    }

    /// A trace that checks each event against `expected` (the recorded event lines, the first
    /// of which is line `first_line` of its file) and stops at the first difference.
    pub fn verifying(expected: Vec<String>, first_line: usize) -> Self {
        let sink = Sink::Verify { expected, first_line, next: 0, divergence: None };
        Self { hash: 0, events: 0, sink, states: Vec::new() }
    }

    /// Whether lines are formatted (kept or verified): callers skip costly details otherwise.
    pub fn formats_lines(&self) -> bool {
        !matches!(self.sink, Sink::HashOnly)
    }

    /// Records one event: `kind` and `fields` (in the order of [`EventKind::field_names`]) go
    /// into the hash; `detail` (formatted only when lines are) adds a description to the line.
    pub fn record(&mut self, kind: EventKind, time_ms: u64, fields: &[u64], detail: impl FnOnce() -> String) {
        debug_assert_eq!(fields.len(), kind.fields().len(), "fields of {kind:?}");
        let mut hash = mix(mix(self.hash, time_ms), kind as u64);
        for field in fields {
            hash = mix(hash, *field);
        }
        self.hash = hash;
        self.events += 1;
        if !matches!(self.sink, Sink::HashOnly) {
            let line = format_line(kind, time_ms, fields, &detail());
            self.push_line(line);
        }
    }

    fn push_line(&mut self, line: String) {
        match &mut self.sink {
            Sink::HashOnly => {}
            Sink::Keep(lines) => lines.push(line),
            Sink::Verify { expected, first_line, next, divergence } => {
                if divergence.is_some() {
                    return;
                }
                let recorded = expected.get(*next);
                if recorded != Some(&line) {
                    let line_number = *first_line + *next;
                    *divergence =
                        Some(Divergence { line: line_number, expected: recorded.cloned(), actual: Some(line) });
                }
                *next += 1;
            }
        }
    }

    /// Records node `node`'s state (role code, term, known leader, commit index) if it differs
    /// from the last one recorded for it.
    pub fn record_state(&mut self, time_ms: u64, node: NodeId, state: [u64; 4]) {
        let slot = node as usize;
        if self.states.len() <= slot {
            self.states.resize(slot + 1, None);
        }
        if self.states[slot] == Some(state) {
            return;
        }
        self.states[slot] = Some(state);
        let [role, term, leader, commit] = state;
        self.record(EventKind::State, time_ms, &[u64::from(node), role, term, leader, commit], String::new);
    }

    /// The last line of a trace file: the verdict, the event count and the hash.
    pub fn end_line(&self, time_ms: u64, verdict: &str) -> String {
        let verdict = serde_json::to_string(verdict).expect("a string always serializes");
        format!(
            "{{\"t\":{time_ms},\"event\":\"end\",\"events\":{},\"hash\":\"{:016x}\",\"verdict\":{verdict}}}",
            self.events, self.hash
        )
    }

    /// Ends the trace: appends (or verifies) the `end` line; a verifying trace also reports a
    /// recorded trace that goes on after the run ended.
    pub fn finish(&mut self, time_ms: u64, verdict: &str) {
        let line = self.end_line(time_ms, verdict);
        self.push_line(line);
        if let Sink::Verify { expected, first_line, next, divergence } = &mut self.sink {
            if divergence.is_none() && *next < expected.len() {
                let expected = Some(expected[*next].clone());
                *divergence = Some(Divergence { line: *first_line + *next, expected, actual: None });
            }
        }
    }

    /// Where a verifying trace first differed from the recorded one.
    pub fn divergence(&self) -> Option<&Divergence> {
        match &self.sink {
            Sink::Verify { divergence, .. } => divergence.as_ref(),
            _ => None,
        }
    }

    /// Whether the run should stop: a verifying trace has diverged.
    pub fn diverged(&self) -> bool {
        self.divergence().is_some()
    }

    /// Events verified so far against a recorded trace (0 unless verifying).
    pub fn verified(&self) -> usize {
        match &self.sink {
            Sink::Verify { next, .. } => *next,
            _ => 0,
        }
    }

    /// The running hash.
    pub fn hash(&self) -> u64 {
        self.hash
    }

    /// Events recorded.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// The JSON lines, if kept.
    pub fn lines(&self) -> Option<&[String]> {
        match &self.sink {
            Sink::Keep(lines) => Some(lines),
            _ => None,
        }
    }

    /// Takes the kept JSON lines out of the trace.
    pub fn take_lines(&mut self) -> Option<Vec<String>> {
        match &mut self.sink {
            Sink::Keep(lines) => Some(std::mem::take(lines)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_depends_on_every_field_and_order() {
        let mut a = Trace::new(true);
        let mut b = Trace::new(false);
        a.record(EventKind::Apply, 1, &[1, 2, 3], || "d".into());
        b.record(EventKind::Apply, 1, &[1, 2, 3], || "ignored".into());
        assert_eq!(a.hash(), b.hash());
        let mut c = Trace::new(false);
        c.record(EventKind::Apply, 1, &[2, 1, 3], String::new);
        assert_ne!(a.hash(), c.hash());
        assert_eq!(a.lines().unwrap()[0], r#"{"t":1,"event":"apply","node":1,"term":2,"index":3,"detail":"d"}"#);
    }

    #[test]
    fn names_replace_codes_and_every_kind_round_trips_its_name() {
        let mut trace = Trace::new(true);
        trace.record(EventKind::Send, 5, &[7, 1, 2, 3, 2, 9, 0], String::new);
        trace.record(EventKind::Drop, 6, &[0, 1, 2, DropReason::Loss as u64], String::new);
        let lines = trace.lines().unwrap();
        assert!(lines[0].contains(r#""kind":"heartbeat","at":9,"drop":"none""#), "{}", lines[0]);
        assert!(lines[1].contains(r#""drop":"loss""#), "{}", lines[1]);
        for kind in KINDS {
            assert_eq!(EventKind::from_name(kind.name()), Some(kind));
        }
    }

    #[test]
    fn states_are_recorded_only_when_they_change() {
        let mut trace = Trace::new(true);
        trace.record_state(0, 2, [1, 1, 0, 0]);
        trace.record_state(5, 2, [1, 1, 0, 0]);
        trace.record_state(9, 2, [4, 1, 2, 0]);
        trace.record_state(9, 1, [1, 1, 2, 0]);
        assert_eq!(trace.events(), 3);
    }

    #[test]
    fn a_verifying_trace_reports_the_first_different_line() {
        let mut recorded = Trace::new(true);
        for t in 0..3 {
            recorded.record(EventKind::Tick, t, &[1, t], String::new);
        }
        recorded.finish(3, "PASS");
        let mut lines = recorded.take_lines().unwrap();

        let mut same = Trace::verifying(lines.clone(), 2);
        (0..3).for_each(|t| same.record(EventKind::Tick, t, &[1, t], String::new));
        same.finish(3, "PASS");
        assert_eq!(same.divergence(), None);

        lines[1] = lines[1].replace("\"clock\":1", "\"clock\":7");
        let mut edited = Trace::verifying(lines, 2);
        (0..3).for_each(|t| edited.record(EventKind::Tick, t, &[1, t], String::new));
        let divergence = edited.divergence().expect("line 3 was edited");
        assert_eq!(divergence.line, 3);
        assert!(divergence.expected.as_deref().unwrap().contains("\"clock\":7"));
    }
}
