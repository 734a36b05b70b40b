//! The trace commands end to end, as a user runs them: `keel-sim run --trace` writes a file that
//! `replay` verifies (exit 0) and `render` draws; an edited line makes `replay` exit 1 naming the
//! line; a truncated or malformed file makes it exit 2 naming the line; `--check-determinism`
//! reports equal hashes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn keel_sim(arguments: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_keel-sim")).args(arguments).output().expect("keel-sim runs")
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

/// A fresh directory for this test's files.
fn scratch(name: &str) -> PathBuf {
    let directory = std::env::temp_dir().join(format!("keel-sim-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&directory);
    std::fs::create_dir_all(&directory).unwrap();
    directory
}

fn write_trace(directory: &Path) -> PathBuf {
    let path = directory.join("seed-4.jsonl");
    let output = keel_sim(&["run", "--seed", "4", "--ops", "120", "--trace", path.to_str().unwrap()]);
    assert!(output.status.success(), "{}", text(&output));
    path
}

#[test]
fn run_writes_a_trace_that_replay_verifies_and_render_draws() {
    let directory = scratch("replay-ok");
    let trace = write_trace(&directory);
    let output = keel_sim(&["replay", trace.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert!(text(&output).contains("identical: all"), "{}", text(&output));
    let page = directory.join("page.html");
    let output = keel_sim(&["render", trace.to_str().unwrap(), "-o", page.to_str().unwrap(), "--to-ms", "3000"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert!(std::fs::read_to_string(&page).unwrap().contains("<svg"));
    let _ = std::fs::remove_dir_all(directory);
}

#[test]
fn replay_names_the_edited_line_and_refuses_broken_files() {
    let directory = scratch("replay-bad");
    let trace = write_trace(&directory);
    let original = std::fs::read_to_string(&trace).unwrap();
    let mut lines: Vec<&str> = original.lines().collect();
    let edited_line = lines.iter().position(|l| l.contains("\"event\":\"apply\"")).unwrap();
    let edited = lines[edited_line].replacen("\"index\":", "\"index\":9", 1);
    lines[edited_line] = &edited;
    let path = directory.join("edited.jsonl");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    let output = keel_sim(&["replay", path.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(text(&output).contains(&format!("DIVERGED at line {}", edited_line + 1)), "{}", text(&output));

    let truncated = directory.join("truncated.jsonl");
    std::fs::write(&truncated, &original[..original.len() / 2]).unwrap();
    let output = keel_sim(&["replay", truncated.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert!(text(&output).contains("line "), "{}", text(&output));

    let output = keel_sim(&["replay", directory.join("missing.jsonl").to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    let output = keel_sim(&["render", truncated.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    let _ = std::fs::remove_dir_all(directory);
}

#[test]
fn run_checks_its_own_determinism() {
    let output = keel_sim(&["run", "--seed", "13", "--ops", "100", "--check-determinism"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert!(text(&output).contains("determinism: a second run gave the same trace hash"), "{}", text(&output));
}
