//! What a space-time diagram shows, read out of a trace file: the nodes, message arrows (send to
//! delivery), dropped messages, fault intervals and instants, each node's role and term over
//! time, client operations, and the run's marks (liveness phase, violations), all clipped to a
//! time window and bounded in number.
//!
//! Data flow: [`Diagram::from_trace`] walks the trace lines once, in order, pairing each
//! delivery or drop with its send by message id and each fault with its end; `svg.rs` draws it.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::pure::header::{TraceFile, TraceLine};

/// Which part of a trace to draw, and how much of it at most.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RenderOptions {
    /// Start of the window (true time, ms).
    pub from_ms: u64,
    /// End of the window (true time, ms); `None`: the end of the run.
    pub to_ms: Option<u64>,
    /// Most message arrows drawn: the latest in the window (where a failure shows), the earlier
    /// ones are cut and counted.
    pub max_arrows: usize,
    /// Most lost-message marks drawn (the latest, like arrows).
    pub max_drops: usize,
    /// Width of the time axis in pixels.
    pub width_px: u32,
}

impl Default for RenderOptions {
    fn default() -> Self {
        Self { from_ms: 0, to_ms: None, max_arrows: 5_000, max_drops: 2_000, width_px: 2_400 }
    }
}

/// A delivered message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Arrow {
    /// Message id.
    pub id: u64,
    /// Sender and receiver.
    pub from: u64,
    /// Receiver.
    pub to: u64,
    /// Send and delivery times.
    pub sent_ms: u64,
    /// Delivery time.
    pub delivered_ms: u64,
    /// Message kind (`append`, `vote`, ...).
    pub kind: String,
    /// The sender's term.
    pub term: u64,
}

/// A message that was lost: at its send (`lost_ms == sent_ms`) or on the way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DropMark {
    /// Sender.
    pub from: u64,
    /// Intended receiver.
    pub to: u64,
    /// When it was sent.
    pub sent_ms: u64,
    /// When it was lost.
    pub lost_ms: u64,
    /// Why (`loss`, `cut`, `cut_in_flight`, `receiver_down`, ...).
    pub reason: String,
}

/// A fault that lasts: a partition (over the nodes in `nodes`), a crash or a pause of one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultSpan {
    /// `partition`, `crash` or `pause`.
    pub kind: &'static str,
    /// The nodes it touches.
    pub nodes: Vec<u64>,
    /// Start and end (the window's end when it never ended).
    pub start_ms: u64,
    /// End.
    pub end_ms: u64,
    /// The trace's description.
    pub detail: String,
}

/// A fault without duration: a clock step or jump, a membership change, a transfer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instant {
    /// When.
    pub at_ms: u64,
    /// The node (0: the cluster).
    pub node: u64,
    /// What (`wall_step`, `clock_jump`, `membership`, `transfer`, `liveness`, `violation`).
    pub kind: String,
    /// The trace's description.
    pub detail: String,
}

/// A node's role and term from `start_ms` until its next state (or the window's end).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleSpan {
    /// The node.
    pub node: u64,
    /// `follower`, `pre_candidate`, `candidate`, `leader`, `learner` or `down`.
    pub role: String,
    /// Its term.
    pub term: u64,
    /// Start.
    pub start_ms: u64,
    /// End.
    pub end_ms: u64,
}

/// A client operation from invocation to completion (or the window's end: still pending).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientOp {
    /// The client process.
    pub process: u64,
    /// Invoked and completed.
    pub start_ms: u64,
    /// Completion (or the window's end).
    pub end_ms: u64,
    /// `ok`, `fail`, `info` or `pending`.
    pub outcome: String,
    /// The operation as the trace describes it.
    pub detail: String,
}

/// Everything to draw, within the window.
#[derive(Clone, Debug, Default)]
pub struct Diagram {
    /// Header facts: seed, scenario description, verdict.
    pub title: String,
    /// The run's verdict (the `end` line).
    pub verdict: String,
    /// The window drawn.
    pub from_ms: u64,
    /// End of the window.
    pub to_ms: u64,
    /// Every node that appears, in id order.
    pub nodes: Vec<u64>,
    /// Client processes, in order.
    pub processes: Vec<u64>,
    /// Delivered messages: the latest `max_arrows` of the window, in order.
    pub arrows: VecDeque<Arrow>,
    /// Earlier deliveries in the window that were not drawn.
    pub arrows_cut: usize,
    /// Lost messages: the latest `max_drops` of the window, in order.
    pub drops: VecDeque<DropMark>,
    /// Earlier lost messages in the window that were not drawn.
    pub drops_cut: usize,
    /// Lasting faults.
    pub faults: Vec<FaultSpan>,
    /// Instant events.
    pub instants: Vec<Instant>,
    /// Role spans.
    pub roles: Vec<RoleSpan>,
    /// Client operations.
    pub operations: Vec<ClientOp>,
}

/// A message's send, kept until its delivery or drop.
struct Sent {
    at_ms: u64,
    from: u64,
    to: u64,
    kind: String,
    term: u64,
}

/// State while walking the trace.
#[derive(Default)]
struct Walk {
    sent: BTreeMap<u64, Sent>,
    open_faults: BTreeMap<(&'static str, u64), (u64, Vec<u64>, String)>,
    open_roles: BTreeMap<u64, (String, u64, u64)>,
    open_ops: BTreeMap<u64, (u64, String)>,
    nodes: BTreeSet<u64>,
}

fn detail(line: &TraceLine) -> String {
    line.text_field("detail").to_string()
}

fn mask_nodes(mask: u64) -> Vec<u64> {
    (0..64).filter(|bit| mask & (1 << bit) != 0).collect()
}

impl Diagram {
    /// One line saying what the diagram holds.
    pub fn summary(&self) -> String {
        format!(
            "{} to {} ms, {} nodes, {} message arrows, {} lost messages, {} faults, {} client operations",
            self.from_ms,
            self.to_ms,
            self.nodes.len(),
            self.arrows.len(),
            self.drops.len(),
            self.faults.len(),
            self.operations.len()
        )
    }

    /// What was left out of the drawing by the bounds, if anything.
    pub fn cut_note(&self) -> Option<String> {
        (self.arrows_cut + self.drops_cut > 0).then(|| {
            format!(
                "the {} earliest deliveries and {} earliest lost messages in this window were not drawn (raise \
                 --max-arrows, or narrow the window with --from-ms / --to-ms)",
                self.arrows_cut, self.drops_cut
            )
        })
    }

    /// Reads the diagram of `trace` within `options`' window.
    pub fn from_trace(trace: &TraceFile, options: &RenderOptions) -> Self {
        let end_ms = trace.lines.last().map_or(0, |line| line.time_ms);
        let to_ms = options.to_ms.unwrap_or(end_ms).max(options.from_ms);
        let scenario = &trace.header.scenario;
        let mut diagram = Diagram {
            title: format!("{} · seed {} · {}", trace.header.simulator, trace.header.seed, scenario.describe()),
            from_ms: options.from_ms,
            to_ms,
            ..Diagram::default()
        };
        diagram.verdict = trace.lines.last().map(|line| line.text_field("verdict").to_string()).unwrap_or_default();
        let mut walk = Walk::default();
        walk.nodes.extend(1..=u64::from(scenario.node_count));
        for line in &trace.lines {
            if line.time_ms > to_ms {
                break;
            }
            diagram.take(&mut walk, line, options);
        }
        diagram.close(walk, to_ms);
        diagram
    }

    fn in_window(&self, start_ms: u64, end_ms: u64) -> bool {
        end_ms >= self.from_ms && start_ms <= self.to_ms
    }

    fn take(&mut self, walk: &mut Walk, line: &TraceLine, options: &RenderOptions) {
        let t = line.time_ms;
        match line.event.as_str() {
            "send" => self.take_send(walk, line, options),
            "deliver" | "drop" => self.take_arrival(walk, line, options),
            "state" => {
                let node = line.num("node");
                walk.nodes.insert(node);
                let (role, term) = (line.text_field("role"), line.num("term"));
                if walk.open_roles.get(&node).is_some_and(|(r, tm, _)| r == role && *tm == term) {
                    return; // only the commit index or the known leader changed
                }
                if let Some((role, term, start_ms)) = walk.open_roles.insert(node, (role.to_string(), term, t)) {
                    self.push_role(RoleSpan { node, role, term, start_ms, end_ms: t });
                }
            }
            "fault" => self.take_fault(walk, line),
            "invoke" => {
                walk.open_ops.insert(line.num("process"), (t, detail(line)));
            }
            "complete" => {
                let process = line.num("process");
                if let Some((start_ms, detail)) = walk.open_ops.remove(&process) {
                    let outcome = line.text_field("outcome").to_string();
                    self.push_op(ClientOp { process, start_ms, end_ms: t, outcome, detail });
                }
            }
            "liveness" | "violation" if t >= self.from_ms => {
                let kind = line.event.clone();
                self.instants.push(Instant { at_ms: t, node: 0, kind, detail: detail(line) });
            }
            _ => {}
        }
    }

    fn take_send(&mut self, walk: &mut Walk, line: &TraceLine, options: &RenderOptions) {
        let (from, to, t) = (line.num("from"), line.num("to"), line.time_ms);
        walk.nodes.extend([from, to]);
        let reason = line.text_field("drop");
        if reason != "none" {
            if t >= self.from_ms {
                self.push_drop(DropMark { from, to, sent_ms: t, lost_ms: t, reason: reason.to_string() }, options);
            }
            return;
        }
        let sent = Sent { at_ms: t, from, to, kind: line.text_field("kind").to_string(), term: line.num("term") };
        walk.sent.insert(line.num("id"), sent);
    }

    fn take_arrival(&mut self, walk: &mut Walk, line: &TraceLine, options: &RenderOptions) {
        let Some(sent) = walk.sent.remove(&line.num("id")) else { return };
        let t = line.time_ms;
        if t < self.from_ms {
            return;
        }
        if line.event == "drop" {
            let reason = line.text_field("drop").to_string();
            self.push_drop(DropMark { from: sent.from, to: sent.to, sent_ms: sent.at_ms, lost_ms: t, reason }, options);
        } else {
            let (id, from, to, kind, term) = (line.num("id"), sent.from, sent.to, sent.kind, sent.term);
            self.arrows.push_back(Arrow { id, from, to, sent_ms: sent.at_ms, delivered_ms: t, kind, term });
            if self.arrows.len() > options.max_arrows {
                self.arrows.pop_front();
                self.arrows_cut += 1;
            }
        }
    }

    fn push_drop(&mut self, drop: DropMark, options: &RenderOptions) {
        self.drops.push_back(drop);
        if self.drops.len() > options.max_drops {
            self.drops.pop_front();
            self.drops_cut += 1;
        }
    }

    fn take_fault(&mut self, walk: &mut Walk, line: &TraceLine) {
        let (t, node, fault) = (line.time_ms, line.num("node"), line.text_field("fault"));
        let (open, close): (Option<&'static str>, Option<&'static str>) = match fault {
            "partition" => (Some("partition"), None),
            "heal" => (None, Some("partition")),
            "crash" | "bit_flip" => (Some("crash"), None),
            "restart" => (None, Some("crash")),
            "pause" => (Some("pause"), None),
            "resume" => (None, Some("pause")),
            _ => (None, None),
        };
        let key_node = if fault == "partition" || fault == "heal" { 0 } else { node };
        if let Some(kind) = open {
            let nodes = if kind == "partition" { mask_nodes(line.num("value")) } else { vec![node] };
            walk.open_faults.entry((kind, key_node)).or_insert((t, nodes, detail(line)));
        } else if let Some(kind) = close {
            if let Some((start_ms, nodes, detail)) = walk.open_faults.remove(&(kind, key_node)) {
                self.push_fault(FaultSpan { kind, nodes, start_ms, end_ms: t, detail });
            }
        } else if t >= self.from_ms {
            self.instants.push(Instant { at_ms: t, node, kind: fault.to_string(), detail: detail(line) });
        }
    }

    fn push_fault(&mut self, fault: FaultSpan) {
        if self.in_window(fault.start_ms, fault.end_ms) {
            self.faults.push(fault);
        }
    }

    fn push_role(&mut self, span: RoleSpan) {
        if self.in_window(span.start_ms, span.end_ms) {
            self.roles.push(span);
        }
    }

    fn push_op(&mut self, op: ClientOp) {
        if self.in_window(op.start_ms, op.end_ms) {
            self.operations.push(op);
        }
    }

    /// Ends what is still open at the window's end and fixes the lanes.
    fn close(&mut self, walk: Walk, to_ms: u64) {
        for ((kind, _), (start_ms, nodes, detail)) in walk.open_faults {
            self.push_fault(FaultSpan { kind, nodes, start_ms, end_ms: to_ms, detail });
        }
        for (node, (role, term, start_ms)) in walk.open_roles {
            self.push_role(RoleSpan { node, role, term, start_ms, end_ms: to_ms });
        }
        for (process, (start_ms, detail)) in walk.open_ops {
            self.push_op(ClientOp { process, start_ms, end_ms: to_ms, outcome: "pending".into(), detail });
        }
        self.faults.sort_by_key(|f| (f.start_ms, f.kind, f.nodes.clone()));
        self.operations.sort_by_key(|op| (op.start_ms, op.process));
        self.processes = self.operations.iter().map(|op| op.process).collect::<BTreeSet<_>>().into_iter().collect();
        self.nodes = walk.nodes.into_iter().filter(|node| *node != 0).collect();
    }
}
