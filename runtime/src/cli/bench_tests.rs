//! `keel bench` without a cluster: arguments, the plan's checks, keys, errors and the report.

use clap::Parser;
use serde_json::Value;

use super::*;
use crate::cli::{Cli, Command};

fn args(line: &[&str]) -> Result<BenchArgs, clap::Error> {
    let cli = Cli::try_parse_from(["keel", "bench"].iter().chain(line.iter()).copied())?;
    match cli.command {
        Command::Bench(args) => Ok(*args),
        other => panic!("not bench: {other:?}"),
    }
}

fn plan(line: &[&str]) -> Result<Plan, String> {
    Plan::from_args(&args(line).unwrap())
}

#[test]
fn defaults_measure_writes_for_ten_seconds() {
    let plan = plan(&[]).unwrap();
    assert_eq!(plan.workload, Workload::Write);
    assert_eq!(plan.read_ratio, 0.0);
    assert_eq!((plan.clients, plan.connections, plan.key_size, plan.value_size, plan.keys), (64, 1, 16, 256, 10_000));
    assert_eq!(plan.length, Length::Duration(Duration::from_secs(10)));
    assert_eq!(plan.warmup, Duration::from_secs(2));
    assert_eq!(plan.format, Format::Simple);
    assert_eq!(plan.timeout, Duration::from_secs(15));
    assert_eq!(
        plan.target,
        Target::Endpoints(vec!["127.0.0.1:7001".into(), "127.0.0.1:7002".into(), "127.0.0.1:7003".into()])
    );
}

#[test]
fn options_are_parsed() {
    let plan = plan(&[
        "--local",
        "--lease-drift-ppm",
        "500",
        "--workload",
        "mixed",
        "--read-ratio",
        "0.9",
        "--consistency",
        "lease",
        "--clients",
        "8",
        "--connections",
        "16",
        "--requests",
        "2000",
        "--warmup",
        "0s",
        "--key-size",
        "32",
        "--value-size",
        "0",
        "--keys",
        "100",
        "-w",
        "json",
    ])
    .unwrap();
    assert_eq!(plan.target, Target::Local { lease_drift_ppm: Some(500) });
    assert_eq!((plan.workload, plan.read_ratio, plan.consistency), (Workload::Mixed, 0.9, ConsistencyArg::Lease));
    assert_eq!((plan.clients, plan.connections), (8, 8), "at most one connection per client");
    assert_eq!(plan.length, Length::Requests(2000));
    assert_eq!(plan.warmup, Duration::ZERO);
    assert_eq!((plan.key_size, plan.value_size, plan.keys), (32, 0, 100));
    assert_eq!(plan.format, Format::Json);
    assert_eq!(plan.key(7), "/0000000000000000000000000000007");
    assert!(plan.value().is_empty());
}

#[test]
fn contradictions_are_refused() {
    use clap::error::ErrorKind;
    let refused = |line: &[&str]| args(line).unwrap_err().kind();
    assert_eq!(refused(&["--local", "--endpoints", "a:1"]), ErrorKind::ArgumentConflict);
    assert_eq!(refused(&["--duration", "5s", "--requests", "10"]), ErrorKind::ArgumentConflict);
    assert_eq!(refused(&["--lease-drift-ppm", "500"]), ErrorKind::MissingRequiredArgument);
    assert_eq!(refused(&["--clients", "0"]), ErrorKind::ValueValidation);
    assert_eq!(refused(&["--read-ratio", "1.5"]), ErrorKind::ValueValidation);
    assert_eq!(refused(&["--duration", "ten"]), ErrorKind::ValueValidation);
    assert_eq!(refused(&["--workload", "scan"]), ErrorKind::InvalidValue);

    assert!(plan(&["--duration", "0s"]).unwrap_err().contains("--duration"));
    assert!(plan(&["--keys", "1000", "--key-size", "3"]).unwrap_err().contains("--key-size 4"));
    assert!(plan(&["--keys", "1000", "--key-size", "4"]).is_ok());
    let lease = plan(&["--local", "--workload", "read", "--consistency", "lease"]).unwrap_err();
    assert!(lease.contains("--lease-drift-ppm"), "{lease}");
    // Writes ignore the read consistency; an existing cluster may have leases on.
    assert!(plan(&["--local", "--consistency", "lease"]).is_ok());
    assert!(plan(&["--workload", "read", "--consistency", "lease"]).is_ok());
    // A local cluster has no users to log in as.
    assert!(plan(&["--local", "--user", "alice:pw"]).unwrap_err().contains("without authentication"));
    let user = plan(&["--endpoints", "a:1", "--user", "alice:pw"]).unwrap().credentials.unwrap();
    assert_eq!((user.user.as_str(), user.password.as_str()), ("alice", "pw"));
}

#[test]
fn durations_take_units() {
    assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
    assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
    assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
    assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
    assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
    assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    for bad in ["", "s", "-1s", "1d", "1e400", "1.2.3s"] {
        assert!(parse_duration(bad).is_err(), "{bad}");
    }
}

#[test]
fn keys_are_uniform_enough() {
    let mut rng = Rng::new(1);
    let mut counts = [0u32; 10];
    for _ in 0..100_000 {
        counts[rng.below(10) as usize] += 1;
    }
    assert!(counts.iter().all(|&count| (9_000..11_000).contains(&count)), "{counts:?}");
    let unit = (0..1000).map(|_| rng.unit()).fold(0.0, f64::max);
    assert!((0.9..1.0).contains(&unit));
}

#[test]
fn errors_are_counted_by_code() {
    let overloaded = ClientError::Server {
        code: keel::proto::error::ErrorCode::Overloaded,
        message: "queue full".into(),
        leader_hint: None,
        retry_after_ms: 10,
    };
    assert_eq!(error_label(&overloaded), "OVERLOADED");
    let gave_up = ClientError::GaveUp { attempts: 3, elapsed_ms: 5, last: Box::new(overloaded) };
    assert_eq!(error_label(&gave_up), "OVERLOADED");
    let unknown = ClientError::OutcomeUnknown { endpoint: "e".into(), reason: "r".into() };
    assert_eq!(error_label(&unknown), "OUTCOME_UNKNOWN");
    let unreachable = ClientError::Unreachable { endpoint: "e".into(), reason: "refused".into() };
    assert_eq!(error_label(&unreachable), "UNREACHABLE");
    let rpc = ClientError::Rpc { endpoint: "e".into(), code: tonic::Code::Unimplemented, message: String::new() };
    assert_eq!(error_label(&rpc), "GRPC_UNIMPLEMENTED");

    let mut tally = Tally::new();
    tally.fail(&gave_up);
    let mut other = Tally::new();
    other.fail(&unreachable);
    other.fail(&unreachable);
    tally.merge(other);
    assert_eq!(tally.errors["OVERLOADED"].count, 1);
    assert_eq!(tally.errors["UNREACHABLE"].count, 2);
    assert!(tally.errors["UNREACHABLE"].example.contains("refused"));
}

fn report(workload: Workload, succeeded: u64, failed: u64) -> Report {
    let mut plan = plan(&["--local", "--requests", "100"]).unwrap();
    plan.workload = workload;
    plan.read_ratio = match workload {
        Workload::Write => 0.0,
        Workload::Read => 1.0,
        Workload::Mixed => 0.5,
    };
    let mut tally = Tally::new();
    for index in 0..succeeded {
        let op = if workload == Workload::Read || (workload == Workload::Mixed && index % 2 == 0) {
            Op::Read
        } else {
            Op::Write
        };
        tally.record(op, Duration::from_micros(1_000 + index * 10));
    }
    for _ in 0..failed {
        tally.fail(&ClientError::OutcomeUnknown { endpoint: "e".into(), reason: "lost".into() });
    }
    let cluster = ClusterInfo::Local {
        dir: PathBuf::from("/tmp/keel-bench-1"),
        endpoints: vec!["127.0.0.1:1".into(), "127.0.0.1:2".into(), "127.0.0.1:3".into()],
        leader: (2, 3),
        lease_drift_ppm: None,
    };
    Report::new(plan, cluster, Duration::from_secs(2), tally)
}

#[test]
fn the_report_has_ordered_percentiles_and_a_verdict() {
    let ok = report(Workload::Write, 1000, 10);
    assert_eq!((ok.requests(), ok.failed()), (1010, 10));
    assert!((ok.throughput() - 500.0).abs() < 1e-6);
    let l = ok.all;
    assert!(l.p50 <= l.p90 && l.p90 <= l.p99 && l.p99 <= l.p999 && l.p999 <= l.max, "{l:?}");
    assert!((l.p50 - 6.0).abs() < 0.1, "{l:?}");
    assert_eq!(ok.verdict(), Ok(()), "1 % or less may fail");
    let bad = report(Workload::Write, 1000, 11);
    assert!(bad.verdict().unwrap_err().contains("11 of 1011 requests failed"));
    assert!(report(Workload::Write, 0, 0).verdict().unwrap_err().contains("no request succeeded"));
}

#[test]
fn json_and_text_carry_the_same_fields() {
    let report = report(Workload::Mixed, 100, 1);
    let json: Value = serde_json::from_str(&render(Format::Json, &report)).unwrap();
    assert_eq!(json["requests"], 101);
    assert_eq!(json["succeeded"], 100);
    assert_eq!(json["failed"], 1);
    assert_eq!(json["passed"], true);
    assert_eq!(json["throughput"], 50.0);
    assert_eq!(json["errors"]["OUTCOME_UNKNOWN"]["count"], 1);
    assert_eq!(json["latency_ms"]["count"], 100);
    assert_eq!(json["reads"]["latency_ms"]["count"], 50);
    assert_eq!(json["writes"]["latency_ms"]["count"], 50);
    for field in ["p50", "p90", "p99", "p99_9", "max", "mean"] {
        assert!(json["latency_ms"][field].as_f64().unwrap() > 0.0, "{field}");
    }
    let config = &json["config"];
    assert_eq!(config["target"], "local");
    assert_eq!(config["local"]["leader"], 2);
    assert_eq!(config["local"]["fsync"], true);
    assert_eq!(config["workload"], "mixed");
    assert_eq!(config["consistency"], "linearizable");
    assert_eq!(config["requests"], 100);
    assert_eq!(config["clients"], 64);
    assert!(config.get("duration_s").is_none());

    let text = render(Format::Simple, &report);
    for expected in [
        "Configuration",
        "local: 3 nodes on loopback",
        "leader: node 2, term 3",
        "mixed: 50 % reads (linearizable), 50 % writes",
        "64 closed-loop",
        "100 requests, after a 2 s warm-up",
        "10000 keys of 16 bytes, values of 256 bytes",
        "101 (100 succeeded, 1 failed: 0.99 %)",
        "50.0 requests/s",
        "p99.9",
        "reads",
        "writes",
        "OUTCOME_UNKNOWN",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }
    let writes = render(Format::Json, &self::report(Workload::Write, 10, 0));
    let writes: Value = serde_json::from_str(&writes).unwrap();
    assert!(writes.get("reads").is_none());
    assert!(writes["config"].get("consistency").is_none());
}

#[test]
fn the_etcd_api_refuses_lease_reads() {
    let error = plan(&["--api", "etcd", "--workload", "read", "--consistency", "lease"]).unwrap_err();
    assert!(error.contains("etcd API has no lease reads"), "{error}");
    assert_eq!(plan(&["--api", "etcd", "--workload", "write"]).unwrap().api, Api::Etcd);
}

/// Runs a short measurement on a `--local` cluster through each API: every request is counted,
/// answered and succeeds, and the report says which API was measured.
#[test]
fn both_apis_measure_a_local_cluster() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    for (api, workload) in [("native", "mixed"), ("etcd", "mixed"), ("etcd", "write")] {
        let plan = plan(&[
            "--local",
            "--api",
            api,
            "--workload",
            workload,
            "--consistency",
            "eventual",
            "--requests",
            "300",
            "--warmup",
            "0s",
            "--clients",
            "8",
            "--keys",
            "100",
        ])
        .unwrap();
        let (dir, report) =
            runtime.block_on(run_target(&plan)).unwrap_or_else(|failure| panic!("{api} {workload}: {failure:?}"));
        if let Some(dir) = dir {
            remove_dir(&dir);
        }
        assert_eq!((report.requests(), report.failed()), (300, 0), "{api} {workload}");
        let json: Value = serde_json::from_str(&render(Format::Json, &report)).unwrap();
        assert_eq!(json["config"]["api"], api);
        assert_eq!(json["succeeded"], 300);
    }
}
