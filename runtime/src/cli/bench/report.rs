//! The report of `keel bench`: throughput, latency percentiles and errors, as text for people
//! (with the exact configuration) or as one JSON document with the same fields.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};

use super::plan::consistency_name;
use super::{Api, Length, Plan, Tally, Workload, FAILED_RATIO_MAX, LOCAL_NODES};
use crate::cli::Format;

/// What the report says about the cluster measured.
#[derive(Clone, Debug, PartialEq)]
pub enum ClusterInfo {
    /// An existing cluster.
    Endpoints(Vec<String>),
    /// The `--local` cluster.
    Local {
        /// Its data directory (removed afterwards).
        dir: PathBuf,
        /// Its client addresses.
        endpoints: Vec<String>,
        /// The leader (id, term) when the measurement started.
        leader: (u32, u64),
        /// Lease reads enabled with this drift bound.
        lease_drift_ppm: Option<u64>,
    },
}

/// One failed kind of request: how many, and one message as an example.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorCount {
    /// How many requests failed so.
    pub count: u64,
    /// The first one's message.
    pub example: String,
}

/// Latency percentiles of one kind of request, in milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Latency {
    /// Requests that succeeded.
    pub count: u64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Slowest.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

impl Latency {
    fn of(histogram: &Histogram<u64>) -> Self {
        if histogram.is_empty() {
            return Self::default();
        }
        let ms = |micros: u64| micros as f64 / 1_000.0;
        Self {
            count: histogram.len(),
            p50: ms(histogram.value_at_quantile(0.5)),
            p90: ms(histogram.value_at_quantile(0.9)),
            p99: ms(histogram.value_at_quantile(0.99)),
            p999: ms(histogram.value_at_quantile(0.999)),
            max: ms(histogram.max()),
            mean: histogram.mean() / 1_000.0,
        }
    }

    fn json(&self) -> Value {
        json!({
            "count": self.count,
            "p50": round3(self.p50),
            "p90": round3(self.p90),
            "p99": round3(self.p99),
            "p99_9": round3(self.p999),
            "max": round3(self.max),
            "mean": round3(self.mean),
        })
    }
}

fn round3(value: f64) -> f64 {
    (value * 1_000.0).round() / 1_000.0
}

/// The result of a run.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// The settings.
    pub plan: Plan,
    /// The cluster measured.
    pub cluster: ClusterInfo,
    /// From the end of the warm-up to the last answer.
    pub elapsed: Duration,
    /// Every request that succeeded.
    pub all: Latency,
    /// Reads that succeeded.
    pub reads: Latency,
    /// Writes that succeeded.
    pub writes: Latency,
    /// Failed requests by error label.
    pub errors: BTreeMap<String, ErrorCount>,
}

impl Report {
    pub(super) fn new(plan: Plan, cluster: ClusterInfo, elapsed: Duration, tally: Tally) -> Self {
        let mut all = tally.reads.clone();
        let _ = all.add(&tally.writes);
        Self {
            plan,
            cluster,
            elapsed,
            all: Latency::of(&all),
            reads: Latency::of(&tally.reads),
            writes: Latency::of(&tally.writes),
            errors: tally.errors,
        }
    }

    /// Requests that failed.
    pub fn failed(&self) -> u64 {
        self.errors.values().map(|error| error.count).sum()
    }

    /// Requests measured.
    pub fn requests(&self) -> u64 {
        self.all.count + self.failed()
    }

    /// Failed requests, in percent of those measured.
    pub fn failed_percent(&self) -> f64 {
        match self.requests() {
            0 => 0.0,
            requests => self.failed() as f64 * 100.0 / requests as f64,
        }
    }

    /// Requests that succeeded per second.
    pub fn throughput(&self) -> f64 {
        self.all.count as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Whether the run passed: something succeeded and at most 1 % failed.
    pub fn verdict(&self) -> Result<(), String> {
        if self.all.count == 0 {
            return Err(format!("no request succeeded ({} failed)", self.failed()));
        }
        if self.failed() as f64 > self.requests() as f64 * FAILED_RATIO_MAX {
            return Err(format!(
                "{} of {} requests failed ({:.2} %, more than {} %)",
                self.failed(),
                self.requests(),
                self.failed_percent(),
                FAILED_RATIO_MAX * 100.0
            ));
        }
        Ok(())
    }
}

pub(super) fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |cpus| cpus.get())
}

/// The configuration as JSON (also what the text form shows).
fn config_json(report: &Report) -> Value {
    let plan = &report.plan;
    let mut config = Map::new();
    match &report.cluster {
        ClusterInfo::Endpoints(endpoints) => {
            config.insert("target".into(), json!("endpoints"));
            config.insert("endpoints".into(), json!(endpoints));
        }
        ClusterInfo::Local { dir, endpoints, leader, lease_drift_ppm } => {
            config.insert("target".into(), json!("local"));
            config.insert("endpoints".into(), json!(endpoints));
            config.insert(
                "local".into(),
                json!({
                    "nodes": LOCAL_NODES,
                    "storage": "fjall",
                    "fsync": true,
                    "data_dir": dir.display().to_string(),
                    "leader": leader.0,
                    "term": leader.1,
                    "lease_drift_ppm": lease_drift_ppm,
                }),
            );
        }
    }
    config.insert("workload".into(), json!(plan.workload.name()));
    if plan.workload == Workload::Mixed {
        config.insert("read_ratio".into(), json!(plan.read_ratio));
    }
    if plan.workload.reads() {
        config.insert("consistency".into(), json!(consistency_name(plan.consistency)));
    }
    config.insert("clients".into(), json!(plan.clients));
    config.insert("connections".into(), json!(plan.connections));
    config.insert("api".into(), json!(plan.api.name()));
    config.insert("calls".into(), json!(calls_name(plan)));
    match plan.length {
        Length::Duration(duration) => config.insert("duration_s".into(), json!(duration.as_secs_f64())),
        Length::Requests(requests) => config.insert("requests".into(), json!(requests)),
    };
    config.insert("warmup_s".into(), json!(plan.warmup.as_secs_f64()));
    config.insert("key_size".into(), json!(plan.key_size));
    config.insert("value_size".into(), json!(plan.value_size));
    config.insert("keys".into(), json!(plan.keys));
    config.insert("timeout_s".into(), json!(plan.timeout.as_secs()));
    config.insert("cpus".into(), json!(cpus()));
    config.insert("keel_version".into(), json!(env!("CARGO_PKG_VERSION")));
    Value::Object(config)
}

/// The report, as text for people or as one JSON document.
pub fn render(format: Format, report: &Report) -> String {
    match format {
        Format::Json => format!("{}\n", render_json(report)),
        Format::Simple => render_text(report),
    }
}

fn render_json(report: &Report) -> Value {
    let errors: Map<String, Value> = report
        .errors
        .iter()
        .map(|(label, error)| (label.clone(), json!({ "count": error.count, "example": error.example })))
        .collect();
    let mut document = json!({
        "config": config_json(report),
        "requests": report.requests(),
        "succeeded": report.all.count,
        "failed": report.failed(),
        "failed_percent": round3(report.failed_percent()),
        "elapsed_s": round3(report.elapsed.as_secs_f64()),
        "throughput": round3(report.throughput()),
        "latency_ms": report.all.json(),
        "errors": errors,
        "passed": report.verdict().is_ok(),
    });
    if report.plan.workload == Workload::Mixed {
        document["reads"] = json!({ "latency_ms": report.reads.json() });
        document["writes"] = json!({ "latency_ms": report.writes.json() });
    }
    document
}

fn render_text(report: &Report) -> String {
    let plan = &report.plan;
    let mut text = String::from("Configuration\n");
    let mut row = |name: &str, value: String| {
        let _ = writeln!(text, "  {name:<13} {value}");
    };
    match &report.cluster {
        ClusterInfo::Endpoints(endpoints) => row("target", format!("the cluster at {}", endpoints.join(","))),
        ClusterInfo::Local { dir, endpoints, leader, lease_drift_ppm } => {
            let lease = match lease_drift_ppm {
                Some(ppm) => format!("lease reads on (clock drift bound {ppm} ppm)"),
                None => "lease reads off".into(),
            };
            row(
                "target",
                format!("local: {LOCAL_NODES} nodes on loopback in this process, fjall storage with fsync, {lease}"),
            );
            row("endpoints", format!("{} (leader: node {}, term {})", endpoints.join(","), leader.0, leader.1));
            row("data", format!("{} (removed afterwards)", dir.display()));
        }
    }
    let workload = match plan.workload {
        Workload::Write => "write (put of a random key)".to_string(),
        Workload::Read => format!("read (get of a random key, {})", consistency_name(plan.consistency)),
        Workload::Mixed => format!(
            "mixed: {:.0} % reads ({}), {:.0} % writes",
            plan.read_ratio * 100.0,
            consistency_name(plan.consistency),
            (1.0 - plan.read_ratio) * 100.0
        ),
    };
    row("workload", workload);
    let clients = match plan.api {
        Api::Native if plan.unary => {
            format!("over {} gRPC connection(s) per node, one unary call per request", plan.connections)
        }
        Api::Native => format!("over {} gRPC connection(s) per node, multiplexed on a Batch stream", plan.connections),
        Api::Etcd => {
            format!("over {} gRPC connection(s) to the leader, etcd API (unary Put / Range)", plan.connections)
        }
    };
    row("clients", format!("{} closed-loop, {clients}", plan.clients));
    let warmup = if plan.warmup.is_zero() {
        "no warm-up".to_string()
    } else {
        format!("after a {} s warm-up", plan.warmup.as_secs_f64())
    };
    match plan.length {
        Length::Duration(duration) => row("length", format!("{} s, {warmup}", duration.as_secs_f64())),
        Length::Requests(requests) => row("length", format!("{requests} requests, {warmup}")),
    }
    row("keys", format!("{} keys of {} bytes, values of {} bytes", plan.keys, plan.key_size, plan.value_size));
    row("machine", format!("{} CPUs, keel {}", cpus(), env!("CARGO_PKG_VERSION")));

    text.push_str("\nResults\n");
    let mut row = |name: &str, value: String| {
        let _ = writeln!(text, "  {name:<13} {value}");
    };
    row(
        "requests",
        format!(
            "{} ({} succeeded, {} failed: {:.2} %)",
            report.requests(),
            report.all.count,
            report.failed(),
            report.failed_percent()
        ),
    );
    row("elapsed", format!("{:.3} s", report.elapsed.as_secs_f64()));
    row("throughput", format!("{:.1} requests/s", report.throughput()));
    let _ = writeln!(
        text,
        "  {:<13} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "latency (ms)", "p50", "p90", "p99", "p99.9", "max", "mean"
    );
    let mut latency = |name: &str, l: &Latency| {
        let _ = writeln!(
            text,
            "  {name:<13} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
            l.p50, l.p90, l.p99, l.p999, l.max, l.mean
        );
    };
    latency("all", &report.all);
    if plan.workload == Workload::Mixed {
        latency("reads", &report.reads);
        latency("writes", &report.writes);
    }
    if !report.errors.is_empty() {
        text.push_str("\nErrors\n");
        for (label, error) in &report.errors {
            let _ = writeln!(text, "  {label:<24} {:>9}  e.g. {}", error.count, error.example);
        }
    }
    text
}

/// How requests travel, in the JSON report: `batch` or `unary` (native API), `unary` (etcd API).
fn calls_name(plan: &Plan) -> &'static str {
    if plan.unary || plan.api == Api::Etcd {
        "unary"
    } else {
        "batch"
    }
}
