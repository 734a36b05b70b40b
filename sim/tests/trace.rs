//! Tests of the trace file and `replay`: a trace holds every kind of event the simulator
//! produces, a fresh trace replays identically, an edited line is reported at its line number, a
//! truncated or malformed file is refused with the line named, and runs are deterministic.

use keel_sim::pure::header::{TraceFile, TraceFileError};
use keel_sim::pure::outcome::{run_traced_catching, PANICKED};
use keel_sim::pure::replay::{check_determinism, replay};
use keel_sim::pure::trace::Trace;
use keel_sim::pure::{run, RunVerdict, Scenario};

/// A seed's scenario, small enough for a debug build.
fn small(seed: u64) -> Scenario {
    let mut scenario = Scenario::from_seed(seed);
    scenario.operation_count = scenario.operation_count.min(150);
    scenario
}

fn trace_text(seed: u64) -> String {
    run(small(seed), true).trace_file().expect("lines were kept")
}

#[test]
fn a_trace_holds_every_kind_of_event_and_ends_with_the_verdict() {
    let mut scenario = Scenario::standard(7);
    scenario.operation_count = 600;
    let outcome = run(scenario, true);
    let file = TraceFile::parse(&outcome.trace_file().unwrap()).expect("a trace the simulator wrote parses");
    assert_eq!(file.header.scenario, outcome.scenario);
    let count = |event: &str| file.lines.iter().filter(|l| l.event == event).count();
    for event in ["send", "deliver", "drop", "tick", "state", "fault", "invoke", "propose", "complete", "apply"] {
        assert!(count(event) > 0, "no {event} event in the trace");
    }
    assert_eq!(count("deliver") as u64, outcome.messages_delivered);
    let faults: Vec<&str> = file.lines.iter().filter(|l| l.event == "fault").map(|l| l.text_field("fault")).collect();
    for fault in ["partition", "heal", "crash", "restart"] {
        assert!(faults.contains(&fault), "no {fault} fault in {faults:?}");
    }
    let leaders = file.lines.iter().filter(|l| l.event == "state" && l.text_field("role") == "leader").count();
    assert!(leaders > 0, "no node ever became leader");
    let end = file.lines.last().unwrap();
    assert_eq!(end.event, "end");
    assert_eq!(end.text_field("verdict"), outcome.verdict.describe());
    assert_eq!(end.num("events"), outcome.trace_events);
    assert_eq!(end.text_field("hash"), format!("{:016x}", outcome.trace_hash));
}

#[test]
fn a_fresh_trace_replays_identically() {
    let text = trace_text(5);
    let file = TraceFile::parse(&text).unwrap();
    let report = replay(&file);
    assert!(report.identical(), "{:?}", report.divergence);
    assert_eq!(report.lines_verified, file.lines.len());
    assert_eq!(report.other_version, None);
}

#[test]
fn an_edited_line_fails_the_replay_at_that_line() {
    let text = trace_text(6);
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let target = lines.iter().position(|l| l.contains("\"event\":\"deliver\"")).expect("a delivery") + 40;
    let target = target + lines[target..].iter().position(|l| l.contains("\"event\":\"tick\"")).unwrap();
    let original = lines[target].clone();
    lines[target] = original.replacen("\"clock\":", "\"clock\":1", 1);
    assert_ne!(lines[target], original);
    let edited = TraceFile::parse(&(lines.join("\n") + "\n")).expect("still well-formed");
    let report = replay(&edited);
    let divergence = report.divergence.expect("the edited line differs");
    assert_eq!(divergence.line, target + 1, "line numbers are 1-based, the header is line 1");
    assert_eq!(divergence.expected.as_deref(), Some(lines[target].as_str()));
    assert_eq!(divergence.actual.as_deref(), Some(original.as_str()));
    assert_eq!(report.lines_verified, target - 1);
}

#[test]
fn a_trace_with_a_removed_event_or_extra_lines_diverges() {
    let text = trace_text(8);
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    lines.remove(20);
    let report = replay(&TraceFile::parse(&(lines.join("\n") + "\n")).unwrap());
    assert_eq!(report.divergence.expect("one event is missing").line, 21);

    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let end = lines.pop().unwrap();
    lines.push(r#"{"t":1,"event":"tick","node":1,"clock":5}"#.to_string());
    lines.push(end);
    let report = replay(&TraceFile::parse(&(lines.join("\n") + "\n")).unwrap());
    let divergence = report.divergence.expect("the recorded trace has one more event");
    assert_eq!(divergence.line, lines.len() - 1);
}

#[test]
fn truncated_and_malformed_traces_are_refused_with_the_line() {
    let text = trace_text(9);
    let lines: Vec<&str> = text.lines().collect();
    let cut_between_lines = lines[..30].join("\n");
    assert_eq!(TraceFile::parse(&cut_between_lines).unwrap_err(), TraceFileError::Truncated { line: 31 });
    let cut_inside_a_line = &text[..text.len() - 20];
    let error = TraceFile::parse(cut_inside_a_line).unwrap_err();
    assert!(matches!(error, TraceFileError::BadLine { line, .. } if line == lines.len()), "{error}");
    assert!(error.to_string().starts_with(&format!("line {}:", lines.len())), "{error}");
    let no_header = lines[1..].join("\n");
    assert!(matches!(TraceFile::parse(&no_header).unwrap_err(), TraceFileError::BadHeader(_)));
}

#[test]
fn several_seeds_give_equal_trace_hashes_on_two_runs() {
    for seed in [1, 2, 12, 33] {
        let (first, second) = (run(small(seed), false), run(small(seed), true));
        assert_eq!(first.trace_hash, second.trace_hash, "seed {seed} is not deterministic");
        assert_eq!(first.trace_events, second.trace_events, "seed {seed}");
        assert_eq!(first.verdict, second.verdict, "seed {seed}");
    }
}

#[test]
fn the_determinism_self_check_passes_on_a_real_run_and_catches_a_different_one() {
    let first = run(small(21), false);
    let note = check_determinism(&first, run).expect("the simulator is deterministic");
    assert!(note.contains(&format!("{:016x}", first.trace_hash)), "{note}");
    let other_seed = |mut scenario: Scenario, keep| {
        scenario.seed += 1;
        run(scenario, keep)
    };
    let why = check_determinism(&first, other_seed).expect_err("another run differs");
    assert!(why.starts_with("nondeterministic: seed 21"), "{why}");
}

#[test]
fn a_run_that_panics_keeps_its_trace_up_to_the_panic_and_replays_identically() {
    let mut scenario = small(4);
    scenario.key_count = 0; // the first client operation finds no key to pick: a panic mid-run
    let (outcome, _) = run_traced_catching(scenario.clone(), Trace::new(true));
    let why = match &outcome.verdict {
        RunVerdict::Failed(why) => why.clone(),
        other => panic!("the run should have failed: {other:?}"),
    };
    assert!(why.starts_with(PANICKED), "{why}");
    let lines = outcome.trace_lines.as_ref().expect("the trace survived the panic");
    assert!(lines.len() > 1 && lines.iter().any(|l| l.contains("\"event\":\"tick\"")));
    assert!(lines.last().unwrap().contains(&why.replace('"', "\\\"")), "the end line carries the panic");

    // The header check refuses key_count 0 in a file; build the file around a valid header.
    let text = outcome.trace_file().unwrap().replacen("\"key_count\":0", "\"key_count\":1", 1);
    let mut file = TraceFile::parse(&text).unwrap();
    file.header.scenario = scenario;
    let report = replay(&file);
    assert!(report.identical(), "{:?}", report.divergence);
}
