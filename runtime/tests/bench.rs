//! `keel bench --local` end to end (plain build only): the built binary starts its own 3-node
//! cluster (fjall, fsync on), measures 2,000 writes, then 2,000 linearizable reads, with 8
//! clients, and reports JSON: positive throughput, ordered percentiles, no error. A usage error
//! exits with 2.
#![cfg(not(madsim))]

use std::process::{Command, Output};
use std::time::Instant;

use serde_json::Value;

const KEEL: &str = env!("CARGO_BIN_EXE_keel");

fn keel(args: &[&str]) -> Output {
    Command::new(KEEL).args(args).output().expect("the keel binary runs")
}

/// Runs a bench and returns its JSON report, checked for what every successful run must show.
fn bench(args: &[&str]) -> Value {
    let started = Instant::now();
    let mut line = vec!["bench", "--local", "--requests", "2000", "--clients", "8", "-w", "json"];
    line.extend_from_slice(args);
    let output = keel(&line);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "keel {line:?} failed: {:?}\nstdout: {stdout}\nstderr: {stderr}", output.status);
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|error| panic!("not JSON ({error}): {stdout}"));
    eprintln!("keel {} took {:?}", line.join(" "), started.elapsed());

    assert_eq!(report["passed"], true, "{report}");
    assert_eq!(report["requests"], 2000, "{report}");
    assert_eq!(report["succeeded"], 2000, "{report}");
    assert_eq!(report["failed"], 0, "{report}");
    assert_eq!(report["errors"].as_object().map(|errors| errors.len()), Some(0), "{report}");
    assert!(report["throughput"].as_f64().unwrap() > 0.0, "{report}");
    assert!(report["elapsed_s"].is_f64(), "{report}");
    let latency = &report["latency_ms"];
    assert_eq!(latency["count"], 2000, "{report}");
    let percentiles: Vec<f64> =
        ["p50", "p90", "p99", "p99_9", "max"].iter().map(|name| latency[*name].as_f64().unwrap()).collect();
    assert!(percentiles[0] > 0.0, "{report}");
    assert!(percentiles.windows(2).all(|pair| pair[0] <= pair[1]), "percentiles out of order: {report}");
    let mean = latency["mean"].as_f64().unwrap();
    assert!(mean > 0.0 && mean <= percentiles[4], "{report}");

    let config = &report["config"];
    assert_eq!(config["target"], "local", "{report}");
    assert_eq!(config["clients"], 8, "{report}");
    assert_eq!(config["requests"], 2000, "{report}");
    assert_eq!(config["local"]["nodes"], 3, "{report}");
    assert_eq!(config["local"]["fsync"], true, "{report}");
    assert_eq!(config["endpoints"].as_array().map(Vec::len), Some(3), "{report}");
    let dir = config["local"]["data_dir"].as_str().unwrap();
    assert!(!std::path::Path::new(dir).exists(), "the temporary directory {dir} is left behind");
    report
}

#[test]
fn bench_measures_writes_and_linearizable_reads_on_a_local_cluster() {
    let writes = bench(&[]);
    assert_eq!(writes["config"]["workload"], "write");
    assert!(writes["config"].get("consistency").is_none());

    // A smaller key space than the default keeps the pre-population short in a debug build.
    let reads = bench(&["--workload", "read", "--consistency", "linearizable", "--keys", "2000"]);
    assert_eq!(reads["config"]["workload"], "read");
    assert_eq!(reads["config"]["consistency"], "linearizable");
    assert_eq!(reads["config"]["keys"], 2000);
}

#[test]
fn bench_refuses_unusable_arguments_with_exit_code_2() {
    let lease = keel(&["bench", "--local", "--workload", "read", "--consistency", "lease"]);
    assert_eq!(lease.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&lease.stderr).contains("--lease-drift-ppm"));
    let conflict = keel(&["bench", "--local", "--endpoints", "127.0.0.1:1"]);
    assert_eq!(conflict.status.code(), Some(2));
}
