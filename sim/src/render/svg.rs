//! Drawing a [`Diagram`] as one self-contained HTML page with an inline SVG (no script, no
//! external style or font): a horizontal lane per node, time flowing left to right, the node's
//! role as a coloured band with its term written at each change (the leader in gold), message
//! arrows from send to delivery, crosses for lost messages, shaded rectangles for crashes, pauses
//! and partitions, ticks for clock steps, membership changes and transfers, and a lane of client
//! operations below. Every mark has a `<title>` tooltip with the trace's details.
//!
//! Data flow: `keel-sim render` builds the [`Diagram`] (`model.rs`) and writes [`html`]'s text.

use std::fmt::Write as _;

use super::model::Diagram;

const LEFT: f64 = 110.0;
const TOP: f64 = 36.0;
const LANE: f64 = 56.0;
const BAND: f64 = 12.0;
const CLIENT_ROW: f64 = 7.0;

/// Escapes text for HTML and SVG.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Geometry of one drawing.
struct Frame {
    from_ms: u64,
    scale: f64,
    lanes: Vec<u64>,
    width: f64,
}

impl Frame {
    fn x(&self, t: u64) -> f64 {
        LEFT + (t.saturating_sub(self.from_ms)) as f64 * self.scale
    }

    fn lane_top(&self, node: u64) -> f64 {
        let index = self.lanes.iter().position(|n| *n == node).unwrap_or(0);
        TOP + index as f64 * LANE
    }

    fn center(&self, node: u64) -> f64 {
        self.lane_top(node) + LANE / 2.0
    }

    fn clients_top(&self) -> f64 {
        TOP + self.lanes.len() as f64 * LANE + 10.0
    }
}

fn message_colour(kind: &str) -> &'static str {
    match kind {
        "append" => "#1f5fbf",
        "append_response" => "#7aa7e0",
        "heartbeat" | "heartbeat_response" => "#a0a0a0",
        "pre_vote" | "vote" | "pre_vote_response" | "vote_response" => "#8a3ab9",
        "snapshot_chunk" | "snapshot_response" => "#8b5a2b",
        "timeout_now" => "#d62728",
        _ => "#2ca02c",
    }
}

fn role_colour(role: &str) -> &'static str {
    match role {
        "leader" => "#f2b705",
        "candidate" => "#f08080",
        "pre_candidate" => "#f8c8c8",
        "learner" => "#bfe3bf",
        "down" => "#707070",
        _ => "#d5e1ef",
    }
}

fn outcome_colour(outcome: &str) -> &'static str {
    match outcome {
        "ok" => "#2e9e44",
        "fail" => "#d62728",
        "info" => "#ff9900",
        _ => "#999999",
    }
}

const STYLE: &str = "body{font-family:sans-serif;margin:12px;color:#222}h1{font-size:16px;margin:0 0 4px}\
p{margin:2px 0;font-size:13px}.legend span{display:inline-block;margin-right:12px}\
.swatch{display:inline-block;width:12px;height:10px;margin-right:4px;vertical-align:middle}\
svg text{font-size:10px}.lane-label{font-size:12px;font-weight:bold}.term{font-size:9px}\
.fault-label{font-size:9px;fill:#333}";

/// The whole page.
pub fn html(diagram: &Diagram, width_px: u32) -> String {
    let span_ms = diagram.to_ms.saturating_sub(diagram.from_ms).max(1);
    let scale = f64::from(width_px) / span_ms as f64;
    let frame = Frame { from_ms: diagram.from_ms, scale, lanes: diagram.nodes.clone(), width: f64::from(width_px) };
    let height = frame.clients_top() + diagram.processes.len() as f64 * CLIENT_ROW + 30.0;
    let mut out = String::with_capacity(64 * 1024 + diagram.arrows.len() * 200);
    let _ = write!(out, "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>keel-sim trace</title>");
    let _ = writeln!(out, "<style>{STYLE}</style></head><body>");
    header(&mut out, diagram);
    let _ = writeln!(out, "<svg width=\"{:.0}\" height=\"{height:.0}\" role=\"img\">", LEFT + frame.width + 20.0);
    out.push_str("<defs><marker id=\"head\" viewBox=\"0 0 6 6\" refX=\"6\" refY=\"3\" markerWidth=\"5\" markerHeight=\"5\" orient=\"auto\"><path d=\"M0,0 L6,3 L0,6 z\" fill=\"#444\"/></marker></defs>\n");
    axis(&mut out, &frame, diagram, height);
    lanes(&mut out, &frame, diagram);
    faults(&mut out, &frame, diagram);
    arrows(&mut out, &frame, diagram);
    drops(&mut out, &frame, diagram);
    instants(&mut out, &frame, diagram, height);
    clients(&mut out, &frame, diagram);
    out.push_str("</svg>\n</body></html>\n");
    out
}

fn header(out: &mut String, diagram: &Diagram) {
    let _ = writeln!(out, "<h1>{}</h1>", escape(&diagram.title));
    let _ = writeln!(out, "<p><b>verdict:</b> {}</p>", escape(&diagram.verdict));
    let _ = writeln!(out, "<p>{}</p>", diagram.summary());
    if let Some(note) = diagram.cut_note() {
        let _ = writeln!(out, "<p class=\"cut\"><b>cut:</b> {note}</p>");
    }
    out.push_str("<p class=\"legend\">");
    for (name, colour) in
        [("leader", "#f2b705"), ("candidate", "#f08080"), ("follower", "#d5e1ef"), ("down", "#707070")]
    {
        let _ = write!(out, "<span><i class=\"swatch\" style=\"background:{colour}\"></i>{name}</span>");
    }
    for (name, colour) in
        [("append", "#1f5fbf"), ("heartbeat", "#a0a0a0"), ("vote", "#8a3ab9"), ("read index", "#2ca02c")]
    {
        let _ = write!(out, "<span><i class=\"swatch\" style=\"background:{colour}\"></i>{name} →</span>");
    }
    for (name, colour) in [("crash", "#555"), ("pause", "#3b7dd8"), ("partition", "#ff7f0e")] {
        let _ = write!(out, "<span><i class=\"swatch\" style=\"background:{colour};opacity:.4\"></i>{name}</span>");
    }
    out.push_str("<span>× lost message</span></p>\n");
}

/// A step between time ticks that gives about ten of them.
fn tick_step(span_ms: u64) -> u64 {
    let mut step = 1;
    while span_ms / step > 12 {
        step = match step.to_string().as_bytes()[0] {
            b'1' => step * 2,
            b'2' => step / 2 * 5,
            _ => step * 2,
        };
    }
    step
}

fn axis(out: &mut String, frame: &Frame, diagram: &Diagram, height: f64) {
    let step = tick_step(diagram.to_ms - diagram.from_ms);
    let mut t = diagram.from_ms.div_ceil(step) * step;
    out.push_str("<g class=\"axis\">");
    while t <= diagram.to_ms {
        let x = frame.x(t);
        let _ = write!(
            out,
            "<line x1=\"{x:.1}\" y1=\"{:.0}\" x2=\"{x:.1}\" y2=\"{height:.0}\" stroke=\"#eee\"/>\
             <text x=\"{x:.1}\" y=\"{:.0}\" text-anchor=\"middle\">{t} ms</text>",
            TOP - 12.0,
            TOP - 16.0
        );
        t += step;
    }
    out.push_str("</g>\n");
}

fn lanes(out: &mut String, frame: &Frame, diagram: &Diagram) {
    for node in &diagram.nodes {
        let (top, center) = (frame.lane_top(*node), frame.center(*node));
        let _ = write!(
            out,
            "<g class=\"lane\" data-node=\"{node}\"><text class=\"lane-label\" x=\"8\" y=\"{:.1}\">node {node}</text>\
             <line x1=\"{LEFT}\" y1=\"{center:.1}\" x2=\"{:.1}\" y2=\"{center:.1}\" stroke=\"#ccc\"/>",
            center + 4.0,
            LEFT + frame.width
        );
        let mut last_term = None;
        for span in diagram.roles.iter().filter(|s| s.node == *node) {
            let (x1, x2) = (frame.x(span.start_ms.max(diagram.from_ms)), frame.x(span.end_ms.min(diagram.to_ms)));
            let _ = write!(
                out,
                "<rect class=\"role {role}\" x=\"{x1:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{BAND}\" fill=\"{}\">\
                 <title>node {node}: {role} in term {term}, {} to {} ms</title></rect>",
                center - BAND / 2.0,
                (x2 - x1).max(0.5),
                role_colour(&span.role),
                span.start_ms,
                span.end_ms,
                role = span.role,
                term = span.term
            );
            if span.role == "leader" || (last_term != Some(span.term) && span.role != "down") {
                let label = if span.role == "leader" {
                    format!("★ leader t{}", span.term)
                } else {
                    format!("t{}", span.term)
                };
                let _ = write!(out, "<text class=\"term\" x=\"{x1:.1}\" y=\"{:.1}\">{label}</text>", top + 12.0);
            }
            last_term = Some(span.term);
        }
        out.push_str("</g>\n");
    }
}

fn faults(out: &mut String, frame: &Frame, diagram: &Diagram) {
    for fault in &diagram.faults {
        let (x1, x2) = (frame.x(fault.start_ms.max(diagram.from_ms)), frame.x(fault.end_ms.min(diagram.to_ms)));
        let colour = match fault.kind {
            "crash" => "#555555",
            "pause" => "#3b7dd8",
            _ => "#ff7f0e",
        };
        for node in &fault.nodes {
            let top = frame.lane_top(*node);
            let _ = writeln!(
                out,
                "<rect class=\"fault {}\" x=\"{x1:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{colour}\" \
                 fill-opacity=\"0.22\"><title>{} {} to {} ms: {}</title></rect>\
                 <text class=\"fault-label\" x=\"{:.1}\" y=\"{:.1}\">{}</text>",
                fault.kind,
                top + 2.0,
                (x2 - x1).max(1.0),
                LANE - 4.0,
                fault.kind,
                fault.start_ms,
                fault.end_ms,
                escape(&fault.detail),
                x1 + 2.0,
                top + LANE - 5.0,
                fault.kind
            );
        }
    }
}

fn arrows(out: &mut String, frame: &Frame, diagram: &Diagram) {
    for arrow in &diagram.arrows {
        let _ = writeln!(
            out,
            "<line class=\"msg {kind}\" x1=\"{:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"{}\" stroke-width=\"0.8\" \
             marker-end=\"url(#head)\"><title>#{} {kind} {}→{} term {}: sent {} ms, delivered {} ms</title></line>",
            frame.x(arrow.sent_ms.max(diagram.from_ms)),
            frame.center(arrow.from),
            frame.x(arrow.delivered_ms),
            frame.center(arrow.to),
            message_colour(&arrow.kind),
            arrow.id,
            arrow.from,
            arrow.to,
            arrow.term,
            arrow.sent_ms,
            arrow.delivered_ms,
            kind = arrow.kind
        );
    }
}

fn drops(out: &mut String, frame: &Frame, diagram: &Diagram) {
    for drop in &diagram.drops {
        let (x, y) = (frame.x(drop.lost_ms), frame.center(drop.to));
        let title = format!(
            "{}→{} lost ({}): sent {} ms, lost {} ms",
            drop.from, drop.to, drop.reason, drop.sent_ms, drop.lost_ms
        );
        if drop.lost_ms == drop.sent_ms {
            let y = frame.center(drop.from) + 10.0;
            let _ = writeln!(
                out,
                "<text class=\"drop\" x=\"{x:.1}\" y=\"{y:.1}\" fill=\"#d62728\"><title>{title}</title>×</text>"
            );
            continue;
        }
        let _ = writeln!(
            out,
            "<g class=\"drop\"><line x1=\"{:.1}\" y1=\"{:.1}\" x2=\"{x:.1}\" y2=\"{y:.1}\" stroke=\"#d62728\" stroke-width=\"0.6\" \
             stroke-dasharray=\"2,2\"/><text x=\"{x:.1}\" y=\"{:.1}\" fill=\"#d62728\" text-anchor=\"middle\">×</text>\
             <title>{title}</title></g>",
            frame.x(drop.sent_ms.max(diagram.from_ms)),
            frame.center(drop.from),
            y + 3.0
        );
    }
}

fn instants(out: &mut String, frame: &Frame, diagram: &Diagram, height: f64) {
    for instant in &diagram.instants {
        let x = frame.x(instant.at_ms);
        let (y1, y2, colour) = match (instant.node, instant.kind.as_str()) {
            (_, "violation") => (TOP, height, "#d62728"),
            (0, _) => (TOP, frame.clients_top(), "#555"),
            (node, _) => (frame.lane_top(node) + 2.0, frame.lane_top(node) + LANE - 2.0, "#9467bd"),
        };
        let _ = writeln!(
            out,
            "<g class=\"instant {kind}\"><line x1=\"{x:.1}\" y1=\"{y1:.1}\" x2=\"{x:.1}\" y2=\"{y2:.1}\" stroke=\"{colour}\" \
             stroke-dasharray=\"4,2\"/><text x=\"{:.1}\" y=\"{:.1}\" fill=\"{colour}\">{kind}</text>\
             <title>{kind} at {} ms: {}</title></g>",
            x + 2.0,
            y1 + 22.0,
            instant.at_ms,
            escape(&instant.detail),
            kind = instant.kind
        );
    }
}

fn clients(out: &mut String, frame: &Frame, diagram: &Diagram) {
    let top = frame.clients_top();
    let _ =
        write!(out, "<g class=\"clients\"><text class=\"lane-label\" x=\"8\" y=\"{:.1}\">clients</text>", top + 10.0);
    for op in &diagram.operations {
        let row = diagram.processes.iter().position(|p| *p == op.process).unwrap_or(0);
        let (x1, x2) = (frame.x(op.start_ms.max(diagram.from_ms)), frame.x(op.end_ms.min(diagram.to_ms)));
        let _ = write!(
            out,
            "<rect class=\"op {}\" x=\"{x1:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{}\">\
             <title>process {}: {} ({}), {} to {} ms</title></rect>",
            op.outcome,
            top + row as f64 * CLIENT_ROW,
            (x2 - x1).max(1.0),
            CLIENT_ROW - 2.0,
            outcome_colour(&op.outcome),
            op.process,
            escape(&op.detail),
            op.outcome,
            op.start_ms,
            op.end_ms
        );
    }
    out.push_str("</g>\n");
}
