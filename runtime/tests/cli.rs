//! The `keel` binary end to end (plain build only): `keel dev` runs a 3-node cluster in the
//! background on free loopback ports, the client commands talk to it with `-w json`, and SIGTERM
//! stops it gracefully. Also the exit codes of usage and configuration errors.
#![cfg(not(madsim))]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

const KEEL: &str = env!("CARGO_BIN_EXE_keel");

/// Upper bound on the cluster's start (a leader elected) and on its stop.
const WAIT: Duration = Duration::from_secs(60);

/// Three consecutive free loopback ports, the first returned.
fn free_base_port() -> u16 {
    for _ in 0..50 {
        let first = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = first.local_addr().unwrap().port();
        if base > u16::MAX - 2 {
            continue;
        }
        if (1..3).all(|offset| TcpListener::bind(("127.0.0.1", base + offset)).is_ok()) {
            return base;
        }
    }
    panic!("no three consecutive free ports");
}

/// A running `keel dev`, stopped (SIGKILL) if the test fails before stopping it itself.
struct DevCluster {
    child: Child,
    lines: mpsc::Receiver<String>,
    /// What it logged on standard error (warnings and errors: `keel dev` logs at `warn`).
    logged: mpsc::Receiver<String>,
    endpoints: String,
}

/// Sends each line of `from` on a channel, from a thread of its own.
fn line_channel(from: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (sender, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines().map_while(Result::ok) {
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    lines
}

impl DevCluster {
    fn start(dir: &Path) -> Self {
        let base = free_base_port();
        let mut child = Command::new(KEEL)
            .args(["dev", "--dir", dir.to_str().unwrap(), "--base-port", &base.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("keel dev starts");
        let lines = line_channel(child.stdout.take().unwrap());
        let logged = line_channel(child.stderr.take().unwrap());
        let endpoints = (0..3).map(|offset| format!("127.0.0.1:{}", base + offset)).collect::<Vec<_>>().join(",");
        let cluster = Self { child, lines, logged, endpoints };
        let banner = cluster.wait_for_line("Ready:");
        assert!(banner.iter().any(|line| line.contains(&format!("Endpoints: {}", cluster.endpoints))), "{banner:?}");
        assert!(banner.iter().any(|line| line.contains("keel put /hello world --endpoints")), "{banner:?}");
        cluster
    }

    /// The lines printed until one that starts with `prefix` (included).
    fn wait_for_line(&self, prefix: &str) -> Vec<String> {
        let deadline = Instant::now() + WAIT;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let done = line.starts_with(prefix);
                    seen.push(line);
                    if done {
                        return seen;
                    }
                }
                Err(error) => panic!("no line starting with {prefix:?} ({error}); saw {seen:?}"),
            }
        }
    }

    /// Runs `keel ARGS --endpoints ... -w json`.
    fn keel(&self, args: &[&str]) -> Output {
        Command::new(KEEL).args(args).args(["--endpoints", &self.endpoints, "-w", "json"]).output().expect("keel runs")
    }

    /// Runs a command that must succeed, and parses its JSON output.
    fn json(&self, args: &[&str]) -> Value {
        let output = self.keel(args);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "keel {args:?}: {:?}\n{stdout}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_str(&stdout).unwrap_or_else(|error| panic!("keel {args:?} printed {stdout:?}: {error}"))
    }

    /// SIGTERM, then waits (bounded) for a graceful exit.
    fn stop(mut self) {
        let pid = self.child.id().to_string();
        let killed = Command::new("kill").args(["-TERM", &pid]).status().expect("kill runs");
        assert!(killed.success());
        let deadline = Instant::now() + WAIT;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "keel dev did not stop after SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(status.success(), "keel dev exited with {status:?}");
        self.wait_for_line("Stopped.");
        // The whole cluster stops at once: no node tries to hand leadership to another that is
        // stopping too (the attempt could only time out, and warn that it did).
        let mut logged = Vec::new();
        let deadline = Instant::now() + WAIT;
        loop {
            match self.logged.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => logged.push(line),
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => panic!("standard error still open after the exit"),
            }
        }
        let handover = ["leadership transfer timed out", "still the leader after"];
        let warned: Vec<&String> = logged.iter().filter(|line| handover.iter().any(|m| line.contains(m))).collect();
        assert!(warned.is_empty(), "shutdown warnings: {warned:?}");
    }
}

impl Drop for DevCluster {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[test]
fn keel_dev_serves_the_client_commands_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = DevCluster::start(dir.path());

    assert_eq!(cluster.json(&["put", "/hello", "world"]), serde_json::json!({ "ok": true }));
    let got = cluster.json(&["get", "/hello", "/absent"]);
    assert_eq!(got["kvs"], serde_json::json!([{ "key": "/hello", "value": "world" }]));
    assert_eq!(got["missing"], serde_json::json!(["/absent"]));
    assert_eq!(cluster.json(&["get", "/hello", "--consistency", "eventual"])["kvs"].as_array().map(Vec::len), Some(1));

    assert_eq!(cluster.json(&["cas", "/hello", "keel", "--expected", "world"])["succeeded"], true);
    assert_eq!(cluster.json(&["cas", "/hello", "again", "--expected", "world"])["succeeded"], false);
    assert_eq!(cluster.json(&["cas", "/lock", "me", "--absent"])["succeeded"], true);
    assert_eq!(cluster.json(&["put", "/tmp/x", "1", "--ttl", "60"])["ok"], true);
    assert_eq!(cluster.json(&["del", "/tmp/x"])["ok"], true);

    let scan = cluster.json(&["scan", "/"]);
    let keys: Vec<&str> = scan["kvs"].as_array().unwrap().iter().map(|kv| kv["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["/hello", "/lock"]);
    assert_eq!(scan["kvs"][0]["value"], "keel");
    assert!(scan["revision"].as_u64().unwrap() >= 4, "{scan}");

    let members = cluster.json(&["members"]);
    assert_eq!(members["voters"], serde_json::json!([1, 2, 3]));
    assert_eq!(members["members"].as_array().map(Vec::len), Some(3));

    let status = cluster.json(&["status"]);
    let statuses = status["statuses"].as_array().unwrap();
    assert_eq!(statuses.len(), 3);
    assert_eq!(statuses.iter().filter(|node| node["role"] == "leader").count(), 1, "{status}");
    assert_eq!(status["errors"], serde_json::json!([]));

    // A request the cluster refuses: exit 1, with the reason.
    let refused = cluster.keel(&["scan", "no-slash"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("ERROR_CODE_INVALID_ARGUMENT"));

    cluster.stop();
}

#[test]
fn usage_and_configuration_errors_exit_with_2() {
    let run = |args: &[&str]| Command::new(KEEL).args(args).output().expect("keel runs");
    let missing_expectation = run(&["cas", "/k", "v"]);
    assert_eq!(missing_expectation.status.code(), Some(2));
    let no_listen = run(&["node", "--id", "1", "--data-dir", "/nonexistent"]);
    assert_eq!(no_listen.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&no_listen.stderr).contains("listen is missing"));
    let bad_timeouts = run(&[
        "node",
        "--id",
        "1",
        "--listen",
        "127.0.0.1:1",
        "--data-dir",
        "/nonexistent",
        "--heartbeat-interval-ms",
        "100",
        "--election-timeout-ms-min",
        "150",
    ]);
    assert_eq!(bad_timeouts.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad_timeouts.stderr).contains("election_timeout_ms_min"));
    let bad_endpoint = run(&["get", "/k", "--endpoints", "bad host:1"]);
    assert_eq!(bad_endpoint.status.code(), Some(2));
    // Nothing listens: the request fails (exit 1) within its deadline, saying what to check.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let down = run(&["get", "/k", "--endpoints", &format!("127.0.0.1:{port}"), "--timeout", "2"]);
    assert_eq!(down.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&down.stderr).contains("Hint: check that the nodes are running"));
}
