//! Tests of `render`: a real trace drawn as HTML has one lane per node and one arrow per delivery
//! in the window, cuts what exceeds the bound and says so, is self-contained, and is the same
//! bytes every time.

use keel_sim::pure::header::TraceFile;
use keel_sim::pure::{run, Scenario};
use keel_sim::render::{render, RenderOptions};

fn trace(seed: u64, operations: u64) -> TraceFile {
    let mut scenario = Scenario::standard(seed);
    scenario.operation_count = operations;
    TraceFile::parse(&run(scenario, true).trace_file().expect("lines were kept")).expect("a valid trace")
}

fn deliveries_between(trace: &TraceFile, from_ms: u64, to_ms: u64) -> usize {
    trace.lines.iter().filter(|l| l.event == "deliver" && (from_ms..=to_ms).contains(&l.time_ms)).count()
}

#[test]
fn a_real_trace_has_a_lane_per_node_and_an_arrow_per_delivery_in_the_window() {
    let trace = trace(3, 300);
    let options = RenderOptions { from_ms: 500, to_ms: Some(2_500), max_arrows: 1_000_000, ..RenderOptions::default() };
    let (page, diagram) = render(&trace, &options);
    let expected_nodes: std::collections::BTreeSet<u64> =
        trace.lines.iter().filter(|l| l.event == "state").map(|l| l.num("node")).collect();
    assert_eq!(diagram.nodes, expected_nodes.into_iter().collect::<Vec<_>>());
    assert_eq!(page.matches("<g class=\"lane\"").count(), diagram.nodes.len());
    for node in &diagram.nodes {
        assert!(page.contains(&format!("data-node=\"{node}\"")), "no lane for node {node}");
    }
    let expected = deliveries_between(&trace, 500, 2_500);
    assert!(expected > 100, "the window holds traffic");
    assert_eq!(diagram.arrows.len(), expected);
    assert_eq!(page.matches("<line class=\"msg ").count(), expected);
    assert_eq!(diagram.arrows_cut, 0);
    assert!(page.contains("★ leader t"), "a leader is marked");
    assert!(page.contains("class=\"role leader\""));
    assert!(page.contains("class=\"op ok\""), "client operations are drawn");
}

#[test]
fn faults_are_shaded_and_lost_messages_marked() {
    let trace = trace(7, 600);
    let (page, diagram) = render(&trace, &RenderOptions::default());
    let kinds: std::collections::BTreeSet<&str> = diagram.faults.iter().map(|f| f.kind).collect();
    assert!(kinds.contains("crash") && kinds.contains("partition"), "{kinds:?}");
    assert!(page.contains("<rect class=\"fault crash\""));
    assert!(page.contains("<rect class=\"fault partition\""));
    assert!(!diagram.drops.is_empty() && page.contains("class=\"drop\""));
    assert!(diagram.instants.iter().any(|i| i.kind == "liveness"));
}

#[test]
fn the_page_is_bounded_self_contained_and_deterministic() {
    let trace = trace(5, 300);
    let options = RenderOptions { max_arrows: 50, max_drops: 10, ..RenderOptions::default() };
    let (page, diagram) = render(&trace, &options);
    assert_eq!(diagram.arrows.len(), 50);
    assert_eq!(diagram.arrows.len() + diagram.arrows_cut, deliveries_between(&trace, 0, u64::MAX));
    let last_delivered: Vec<u64> =
        trace.lines.iter().filter(|l| l.event == "deliver").map(|l| l.num("id")).rev().take(50).collect();
    let drawn: Vec<u64> = diagram.arrows.iter().rev().map(|arrow| arrow.id).collect();
    assert_eq!(drawn, last_delivered, "the latest deliveries are the ones drawn");
    assert!(page.contains(&format!("the {} earliest deliveries", diagram.arrows_cut)), "the page says what was cut");
    for outside in ["<script", "http:", "https:", "src=", "@import", "url(http"] {
        assert!(!page.contains(outside), "the page refers to something outside: {outside}");
    }
    assert!(page.starts_with("<!DOCTYPE html>") && page.trim_end().ends_with("</html>"));
    assert_eq!(page.matches("<svg").count(), 1);
    assert_eq!(page.matches("</svg>").count(), 1);
    assert_eq!(render(&trace, &options).0, page, "rendering is deterministic");
}
