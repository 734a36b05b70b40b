//! The linearizability checker on classic hand-written histories, on generated histories of a
//! real linearizable map (and corrupted copies of them), and the `keel-sim check` exit codes.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use keel_sim::check::generate::{generate, GeneratorConfig};
use keel_sim::check::{
    check_history, check_history_with_limits, parse_jsonl, write_jsonl, CheckLimits, CheckOutcome, Verdict,
};
use keel_sim::history::{EventType, Function, History};
use proptest::prelude::*;

/// Parses a history written as JSON lines in a compact form: `P TYPE F KEY VALUE` per line,
/// where VALUE is `-` for null, `a>b` for a cas from a to b (`->b` from absent).
fn history(lines: &str) -> History {
    let mut text = String::new();
    for line in lines.lines().map(str::trim).filter(|line| !line.is_empty()) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [process, event_type, function, key, value] = fields[..] else { panic!("bad test line {line}") };
        let json_value = match value.split_once('>') {
            Some((expected, new)) => format!("[{}, \"{new}\"]", quoted(expected)),
            None => quoted(value),
        };
        text.push_str(&format!(
            "{{\"process\": {process}, \"type\": \"{event_type}\", \"f\": \"{function}\", \"key\": \"{key}\", \"value\": {json_value}}}\n"
        ));
    }
    parse_jsonl(&text).unwrap()
}

fn quoted(value: &str) -> String {
    if value == "-" || value.is_empty() {
        "null".to_owned()
    } else {
        format!("\"{value}\"")
    }
}

fn is_linearizable(history: &History) -> bool {
    match check_history(history).unwrap() {
        Verdict::Linearizable => true,
        Verdict::NotLinearizable(counterexample) => {
            // Every counterexample must itself be a non-linearizable history of its key.
            assert!(counterexample.events.iter().all(|event| event.key == counterexample.key));
            let again = check_history(&counterexample.events).unwrap();
            assert!(matches!(again, Verdict::NotLinearizable(_)), "counterexample {counterexample:?} is linearizable");
            false
        }
    }
}

#[test]
fn stale_read_after_a_completed_write_is_not_linearizable() {
    let stale = history(
        "1 invoke write x 1
         1 ok write x 1
         2 invoke read x -
         2 ok read x -",
    );
    assert!(!is_linearizable(&stale));
    let fresh = history(
        "1 invoke write x 1
         1 ok write x 1
         2 invoke read x -
         2 ok read x 1",
    );
    assert!(is_linearizable(&fresh));
}

#[test]
fn concurrent_writes_may_be_seen_in_either_order_but_not_both() {
    let writes = "1 invoke write x 1
                  2 invoke write x 2
                  1 ok write x 1
                  2 ok write x 2
                  3 invoke read x -";
    assert!(is_linearizable(&history(&format!("{writes}\n3 ok read x 1"))));
    assert!(is_linearizable(&history(&format!("{writes}\n3 ok read x 2"))));
    // Two sequential reads after both writes completed must agree.
    let disagreeing = format!("{writes}\n3 ok read x 1\n4 invoke read x -\n4 ok read x 2");
    assert!(!is_linearizable(&history(&disagreeing)));
    // While the writes are in flight, readers may see 1 then 2.
    let in_flight = history(
        "1 invoke write x 1
         2 invoke write x 2
         3 invoke read x -
         3 ok read x 1
         3 invoke read x -
         3 ok read x 2
         1 ok write x 1
         2 ok write x 2",
    );
    assert!(is_linearizable(&in_flight));
}

#[test]
fn a_successful_cas_requires_the_expected_value_and_sets_the_new_one() {
    let succeeded = "1 invoke write x 1
                     1 ok write x 1
                     2 invoke cas x 1>2
                     2 ok cas x 1>2
                     3 invoke read x -";
    assert!(is_linearizable(&history(&format!("{succeeded}\n3 ok read x 2"))));
    assert!(!is_linearizable(&history(&format!("{succeeded}\n3 ok read x 1"))));
    let wrong_expectation = history(
        "1 invoke write x 1
         1 ok write x 1
         2 invoke cas x 3>2
         2 ok cas x 3>2",
    );
    assert!(!is_linearizable(&wrong_expectation));
    let from_absent = history(
        "2 invoke cas x ->2
         2 ok cas x ->2
         3 invoke read x -
         3 ok read x 2",
    );
    assert!(is_linearizable(&from_absent));
}

#[test]
fn a_failed_cas_saw_a_different_value_and_changed_nothing() {
    let failed = "1 invoke write x 1
                  1 ok write x 1
                  2 invoke cas x 3>2
                  2 fail cas x 3>2
                  3 invoke read x -";
    assert!(is_linearizable(&history(&format!("{failed}\n3 ok read x 1"))));
    assert!(!is_linearizable(&history(&format!("{failed}\n3 ok read x 2"))));
    // A cas that fails although the key surely held its expected value is not linearizable.
    let impossible_failure = history(
        "1 invoke write x 1
         1 ok write x 1
         2 invoke cas x 1>2
         2 fail cas x 1>2",
    );
    assert!(!is_linearizable(&impossible_failure));
    // Expected absent, and the key is absent: the cas could not have failed.
    assert!(!is_linearizable(&history("2 invoke cas x ->2\n2 fail cas x ->2")));
}

#[test]
fn a_write_of_unknown_outcome_may_or_may_not_have_taken_effect() {
    let unknown = "1 invoke write x 1
                   1 info write x 1
                   2 invoke read x -";
    assert!(is_linearizable(&history(&format!("{unknown}\n2 ok read x 1"))));
    assert!(is_linearizable(&history(&format!("{unknown}\n2 ok read x -"))));
    // It may take effect late, but only once: absent, then 1, then absent again is impossible.
    let flip_flop = format!("{unknown}\n2 ok read x 1\n2 invoke read x -\n2 ok read x -");
    assert!(!is_linearizable(&history(&flip_flop)));
    // The same with no completion at all (the history ends while it is in flight).
    assert!(is_linearizable(&history("1 invoke write x 1\n2 invoke read x -\n2 ok read x 1")));
}

#[test]
fn a_cas_of_unknown_outcome_swaps_only_from_its_expected_value() {
    let unknown = "1 invoke write x 1
                   1 ok write x 1
                   2 invoke cas x 1>2
                   2 info cas x 1>2
                   3 invoke read x -";
    assert!(is_linearizable(&history(&format!("{unknown}\n3 ok read x 2"))));
    assert!(is_linearizable(&history(&format!("{unknown}\n3 ok read x 1"))));
    let wrong_expectation = "1 invoke write x 1
                             1 ok write x 1
                             2 invoke cas x 5>2
                             2 info cas x 5>2
                             3 invoke read x -
                             3 ok read x 2";
    assert!(!is_linearizable(&history(wrong_expectation)));
}

#[test]
fn failed_reads_and_writes_did_not_happen() {
    let failed_read = history(
        "1 invoke write x 1
         1 ok write x 1
         2 invoke read x -
         2 fail read x -",
    );
    assert!(is_linearizable(&failed_read));
    let failed_write = "1 invoke write x 1
                        1 fail write x 1
                        2 invoke read x -";
    assert!(is_linearizable(&history(&format!("{failed_write}\n2 ok read x -"))));
    assert!(!is_linearizable(&history(&format!("{failed_write}\n2 ok read x 1"))));
}

#[test]
fn a_delete_makes_the_key_read_as_absent() {
    let deleted = "1 invoke write x 1
                   1 ok write x 1
                   1 invoke write x -
                   1 ok write x -
                   2 invoke read x -";
    assert!(is_linearizable(&history(&format!("{deleted}\n2 ok read x -"))));
    assert!(!is_linearizable(&history(&format!("{deleted}\n2 ok read x 1"))));
    let recreated = format!("{deleted}\n2 ok read x -\n3 invoke cas x ->7\n3 ok cas x ->7");
    assert!(is_linearizable(&history(&recreated)));
}

#[test]
fn keys_are_independent_and_the_failing_key_is_named() {
    // x alone and y alone are linearizable, each read sees its own key's write.
    let separate = history(
        "1 invoke write x 1
         1 ok write x 1
         2 invoke read y -
         2 ok read y -
         2 invoke write y 1
         2 ok write y 1",
    );
    assert!(is_linearizable(&separate));
    let broken_y = history(
        "1 invoke write x 1
         1 ok write x 1
         2 invoke write y 1
         2 ok write y 1
         3 invoke read y -
         3 ok read y 9
         3 invoke read x -
         3 ok read x 1",
    );
    let Verdict::NotLinearizable(counterexample) = check_history(&broken_y).unwrap() else {
        panic!("a read of a value never written is not linearizable");
    };
    assert_eq!(counterexample.key, "y");
    assert_eq!(counterexample.events.len(), 2, "the impossible read alone suffices: {counterexample:?}");
    assert_eq!(counterexample.events[1].read_value.as_deref(), Some("9"));
    assert!(counterexample.explanation.contains("lines 5, 6"), "{}", counterexample.explanation);
}

#[test]
fn the_counterexample_is_small_and_names_the_lines_that_matter() {
    // Sixty unrelated, overlapping operations, then a stale read after a completed write.
    let mut lines = String::new();
    for index in 0..30 {
        lines.push_str(&format!("1 invoke write x a{index}\n2 invoke read x -\n1 ok write x a{index}\n"));
        lines.push_str(&format!("2 ok read x a{index}\n"));
    }
    lines.push_str("1 invoke write x final\n1 ok write x final\n2 invoke read x -\n2 ok read x a29\n");
    let Verdict::NotLinearizable(counterexample) = check_history(&history(&lines)).unwrap() else {
        panic!("a stale read after a completed write is not linearizable");
    };
    // The write of the value read, the write that overwrote it, and the stale read.
    assert_eq!(counterexample.events.len(), 6, "{counterexample:?}");
    assert_eq!(counterexample.events[0].function, Function::Write(Some("a29".to_owned())));
    assert_eq!(counterexample.events[2].function, Function::Write(Some("final".to_owned())));
    let explanation = &counterexample.explanation;
    assert!(explanation.contains("3 of its 62 operations (lines 117, 119, 121, 122, 123, 124)"), "{explanation}");
    assert!(explanation.contains("linearizable until the ok of a read on line 124"), "{explanation}");
    assert!(counterexample.explanation.contains("Without any one of these"), "{}", counterexample.explanation);
}

#[test]
fn malformed_events_are_refused_with_their_position() {
    let mut events = history("1 invoke read x -\n1 ok read x 1\n2 invoke read x -");
    events[1].process = 7;
    let error = check_history(&events).unwrap_err();
    assert_eq!(error.line, Some(2));
    assert!(error.message.contains("without invocation"), "{error}");
}

#[test]
fn a_memory_limit_gives_unknown_never_a_verdict() {
    let config = GeneratorConfig { seed: 3, operations: 2000, keys: 1, ..GeneratorConfig::default() };
    let limits = CheckLimits { memory_bytes_max: 64, ..CheckLimits::default() };
    let outcome = check_history_with_limits(&generate(&config), &limits).unwrap();
    assert!(matches!(outcome, CheckOutcome::Unknown { ref key, .. } if key == "k0"), "{outcome:?}");
}

/// Turns the value of one ok read (chosen by `choice`) into a value no operation ever wrote, and
/// returns its key.
fn corrupt_one_read(history: &mut History, choice: usize) -> Option<String> {
    let reads: Vec<usize> = (0..history.len())
        .filter(|&index| history[index].event_type == EventType::Ok && history[index].function == Function::Read)
        .collect();
    let &index = reads.get(choice % reads.len().max(1))?;
    history[index].read_value = Some("never-written".to_owned());
    Some(history[index].key.clone())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn generated_histories_are_linearizable_even_with_many_unknown_outcomes(
        seed in any::<u64>(),
        clients in 1usize..12,
        keys in 1usize..4,
        values in 1usize..6,
        info_percent in 0u32..30,
    ) {
        let config = GeneratorConfig { seed, clients, operations: 300, keys, values, info_percent, fail_percent: 5 };
        prop_assert_eq!(check_history(&generate(&config)).unwrap(), Verdict::Linearizable);
    }

    // Proving a history not linearizable explores every order, which grows exponentially with the
    // operations pending at once (`info` ones stay pending to the end): few unknown outcomes here.
    #[test]
    fn a_read_of_a_value_never_written_is_caught_and_shown(
        seed in any::<u64>(),
        clients in 1usize..12,
        keys in 1usize..4,
        values in 1usize..6,
        info_percent in 0u32..4,
        choice in any::<usize>(),
    ) {
        let config = GeneratorConfig { seed, clients, operations: 200, keys, values, info_percent, fail_percent: 5 };
        let mut generated = generate(&config);
        prop_assert_eq!(check_history(&generated).unwrap(), Verdict::Linearizable);
        if let Some(key) = corrupt_one_read(&mut generated, choice) {
            // `is_linearizable` also checks that the counterexample fails on its own.
            let verdict = check_history(&generated).unwrap();
            prop_assert!(!is_linearizable(&generated), "a read of a value never written was accepted");
            let Verdict::NotLinearizable(counterexample) = verdict else { unreachable!() };
            prop_assert_eq!(counterexample.key, key);
        }
    }
}

fn run_binary(arguments: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_keel-sim"))
        .args(arguments)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

fn data_file(name: &str) -> String {
    format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn the_binary_exits_0_on_a_linearizable_file() {
    let output = run_binary(&["check", &data_file("linearizable.jsonl")], "");
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "linearizable");
}

#[test]
fn the_binary_exits_1_with_a_counterexample_that_is_itself_a_history() {
    let output = run_binary(&["check", &data_file("stale_read.jsonl")], "");
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let mut lines = stdout.lines();
    assert_eq!(lines.next(), Some("not linearizable"));
    assert!(lines.next().is_some_and(|explanation| explanation.contains("On key \"x\"")), "{stdout}");
    let counterexample: String = lines.map(|line| format!("{line}\n")).collect();
    let events = parse_jsonl(&counterexample).unwrap();
    assert_eq!(events.len(), 6, "both writes and the stale read: {stdout}");
    // Fed back through standard input, the counterexample fails the same way.
    let again = run_binary(&["check", "-"], &write_jsonl(&events));
    assert_eq!(again.status.code(), Some(1), "{again:?}");
}

#[test]
fn the_binary_exits_2_with_the_line_of_a_malformed_event() {
    let output = run_binary(&["check", &data_file("malformed.jsonl")], "");
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("line 3: unknown type \"done\""), "{stderr}");
    let missing = run_binary(&["check", &data_file("no-such-file.jsonl")], "");
    assert_eq!(missing.status.code(), Some(2), "{missing:?}");
    assert!(String::from_utf8_lossy(&missing.stderr).contains("cannot read"));
}

#[test]
fn the_binary_exits_3_when_the_memory_limit_is_reached() {
    let config = GeneratorConfig { seed: 5, operations: 3000, keys: 1, ..GeneratorConfig::default() };
    let text = write_jsonl(&generate(&config));
    let output = run_binary(&["check", "-", "--memory-limit-mb", "0"], &text);
    assert_eq!(output.status.code(), Some(3), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stdout).starts_with("unknown"));
}
