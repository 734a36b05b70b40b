//! `keel bench`: a closed-loop load generator that measures a cluster's throughput and latency.
//!
//! `--clients` tasks each send one request, wait for its answer, and send the next, through the
//! client library (which finds the leader and retries what is safe, as any application would).
//! The clients are spread round-robin over `--connections` gRPC connections; the clients of one
//! connection multiplex their requests over one `Batch` stream per node (many requests per
//! message, each with its own outcome), or send one unary call each with `--unary`. After `--warmup`,
//! every request is timed and its latency recorded in an HDR histogram; the run measures for
//! `--duration` or until `--requests` requests were sent, and reports the throughput (requests
//! that succeeded per second of the measured window), the latency percentiles, and the failed
//! requests counted by error code. It fails (exit 1) when more than 1 % of the requests failed.
//!
//! Reads (`--workload read` or `mixed`) first write every key of the key space, so that each
//! read finds its key. Keys are `/` followed by the key's number zero-padded to `--key-size`
//! bytes; values are `--value-size` printable pseudo-random bytes.
//!
//! With `--local` the command starts its own 3-node cluster on loopback in this process, exactly
//! like `keel dev` (fjall storage with fsync on, in a temporary directory removed afterwards), so
//! that one command measures a default setup. The clients then share the machine's cores with
//! the nodes.
//!
//! Only errors are logged, unless `RUST_LOG` says otherwise (`RUST_LOG=warn` shows the nodes'
//! warnings too). The progress bar goes to standard error, and only when it is a terminal and
//! the output is not JSON.

use std::io::{IsTerminal, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use keel::client::{ClientError, ClientOptions, Consistency, KeelClient};
use tokio::task::JoinSet;

use super::node::{fresh_temp_dir, init_logging, multi_thread_runtime, shutdown_signal};
use super::{ClientArgs, ConsistencyArg, Format, EXIT_FAILED, EXIT_USAGE};

mod etcd;
mod load;
mod local;
mod report;

use etcd::EtcdLoad;
use load::Tally;
use load::{client_loop, Sender, Shared, Workset, MEASURE, STOP, WARMUP};
#[cfg(test)]
use load::{error_label, Op};
use local::LocalCluster;
pub use report::{render, ClusterInfo, ErrorCount, Report};

/// Nodes of the `--local` cluster.
const LOCAL_NODES: u32 = 3;

/// Longest wait for the `--local` cluster to stop.
const LOCAL_STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// The share of failed requests above which the run fails.
const FAILED_RATIO_MAX: f64 = 0.01;

/// Highest latency the histograms track, in microseconds (one hour); longer ones count as this.
const LATENCY_MAX_US: u64 = 3_600_000_000;

/// Writes in flight at least while the key space is pre-populated (not measured: more at once
/// make it quicker, as the cluster batches them).
const POPULATE_CONCURRENCY_MIN: usize = 256;

/// How often the progress bar is refreshed.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(200);

/// `keel bench` arguments.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Start a 3-node cluster on loopback in this process (like `keel dev`: fjall storage with
    /// fsync on, data in a temporary directory removed afterwards) and measure it, instead of the
    /// cluster at --endpoints.
    #[arg(long, conflicts_with = "endpoints")]
    pub local: bool,
    /// With --local: enable lease reads (check-quorum is on), safe while the nodes' clocks drift
    /// apart by at most this many parts per million.
    #[arg(long, requires = "local")]
    pub lease_drift_ppm: Option<u64>,
    /// What the clients send.
    #[arg(long, value_enum, default_value_t = Workload::Write)]
    pub workload: Workload,
    /// With --workload mixed: the share of reads, from 0 to 1 (the rest are writes).
    #[arg(long, default_value_t = 0.5, value_parser = parse_ratio)]
    pub read_ratio: f64,
    /// How reads are confirmed.
    #[arg(long, value_enum, default_value_t = ConsistencyArg::Linearizable)]
    pub consistency: ConsistencyArg,
    /// Concurrent closed-loop clients: each sends its next request when the previous one was
    /// answered.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub clients: u32,
    /// gRPC connections the clients are spread over, round-robin (at most one per client). The
    /// clients of one connection multiplex their requests over one `Batch` stream per node.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1_024))]
    pub connections: u32,
    /// Send one unary call per request (seed 000's calls) instead of multiplexing the requests
    /// over `Batch` streams.
    #[arg(long)]
    pub unary: bool,
    /// Which API the load goes through: Keel's native API, or the etcd v3 API (`Put` and
    /// `Range` unary calls to the leader), which Keel and etcd both serve.
    #[arg(long, value_enum, default_value_t = Api::Native)]
    pub api: Api,
    /// How long to measure, after the warm-up: e.g. 10s, 500ms, 2m.
    #[arg(long, default_value = "10s", value_parser = parse_duration, conflicts_with = "requests")]
    pub duration: Duration,
    /// Measure this many requests instead of a duration.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub requests: Option<u64>,
    /// Load sent before measuring (not counted): e.g. 2s, 0s for none.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Bytes per key.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(2..=4_096))]
    pub key_size: u32,
    /// Bytes per value.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(0..=16 << 20))]
    pub value_size: u32,
    /// Keys in the key space; each request picks one uniformly at random.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub keys: u64,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `--api` values.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Api {
    /// Keel's native API, through the Rust client library.
    Native,
    /// The etcd v3 API (`etcdserverpb.KV`): measures Keel or a real etcd cluster alike.
    Etcd,
}

impl Api {
    /// The name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Native => "native",
            Self::Etcd => "etcd",
        }
    }
}

/// `--workload` values.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// Puts of random keys.
    Write,
    /// Single-key gets of random keys, with --consistency.
    Read,
    /// Reads (share --read-ratio) and writes.
    Mixed,
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Self::Write => "write",
            Self::Read => "read",
            Self::Mixed => "mixed",
        }
    }

    fn reads(self) -> bool {
        self != Self::Write
    }
}

fn consistency_name(arg: ConsistencyArg) -> &'static str {
    match arg {
        ConsistencyArg::Linearizable => "linearizable",
        ConsistencyArg::Lease => "lease",
        ConsistencyArg::Eventual => "eventual",
    }
}

fn consistency(arg: ConsistencyArg) -> Consistency {
    match arg {
        ConsistencyArg::Linearizable => Consistency::Linearizable,
        ConsistencyArg::Lease => Consistency::Lease,
        ConsistencyArg::Eventual => Consistency::Eventual,
    }
}

/// Parses a duration: a number followed by `ms`, `s` (the default), `m` or `h`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let invalid = || format!("'{text}' is not a duration (for example 10s, 500ms, 2m)");
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().map_err(|_| invalid())?;
    let seconds = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1_000.0,
        "m" | "min" => value * 60.0,
        "h" => value * 3_600.0,
        _ => return Err(invalid()),
    };
    if !seconds.is_finite() || !(0.0..=1e9).contains(&seconds) {
        return Err(invalid());
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// Parses a share from 0 to 1.
fn parse_ratio(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(ratio) if (0.0..=1.0).contains(&ratio) => Ok(ratio),
        _ => Err(format!("'{text}' is not a share from 0 to 1 (for example 0.9)")),
    }
}

/// When the measurement ends.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Length {
    /// After this long.
    Duration(Duration),
    /// After this many requests.
    Requests(u64),
}

/// Where the load goes.
#[derive(Clone, Debug, PartialEq)]
pub enum Target {
    /// An existing cluster.
    Endpoints(Vec<String>),
    /// A cluster started in this process.
    Local {
        /// Lease reads enabled with this drift bound.
        lease_drift_ppm: Option<u64>,
    },
}

/// The validated settings of a run.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// Where the load goes.
    pub target: Target,
    /// What the clients send.
    pub workload: Workload,
    /// Share of reads of a mixed workload (1 for reads, 0 for writes).
    pub read_ratio: f64,
    /// Consistency of the reads.
    pub consistency: ConsistencyArg,
    /// Concurrent clients.
    pub clients: usize,
    /// gRPC connections.
    pub connections: usize,
    /// One unary call per request rather than `Batch` streams.
    pub unary: bool,
    /// The API the load goes through.
    pub api: Api,
    /// When the measurement ends.
    pub length: Length,
    /// Load before measuring.
    pub warmup: Duration,
    /// Bytes per key.
    pub key_size: usize,
    /// Bytes per value.
    pub value_size: usize,
    /// Keys in the key space.
    pub keys: u64,
    /// Output format.
    pub format: Format,
    /// Deadline of one request, retries included.
    pub timeout: Duration,
}

impl Plan {
    /// Checks the arguments together; the error says what to change.
    pub fn from_args(args: &BenchArgs) -> Result<Self, String> {
        let target = if args.local {
            Target::Local { lease_drift_ppm: args.lease_drift_ppm }
        } else {
            Target::Endpoints(args.client.endpoints.clone())
        };
        let length = match args.requests {
            Some(requests) => Length::Requests(requests),
            None if args.duration.is_zero() => return Err("--duration must be more than 0".into()),
            None => Length::Duration(args.duration),
        };
        let digits = (args.keys - 1).to_string().len();
        if (args.key_size as usize) < digits + 1 {
            return Err(format!(
                "--key-size {} is too small for {} keys: keys are '/' and a {digits}-digit number; use --key-size {} or more",
                args.key_size,
                args.keys,
                digits + 1
            ));
        }
        if args.workload.reads()
            && args.consistency == ConsistencyArg::Lease
            && args.local
            && args.lease_drift_ppm.is_none()
        {
            return Err(
                "lease reads need leases on the cluster: add --lease-drift-ppm N (for example 500) to --local".into()
            );
        }
        if args.api == Api::Etcd && args.workload.reads() && args.consistency == ConsistencyArg::Lease {
            return Err(
                "the etcd API has no lease reads: use --consistency linearizable or eventual (serializable)".into()
            );
        }
        let read_ratio = match args.workload {
            Workload::Write => 0.0,
            Workload::Read => 1.0,
            Workload::Mixed => args.read_ratio,
        };
        Ok(Self {
            target,
            workload: args.workload,
            read_ratio,
            consistency: args.consistency,
            clients: args.clients as usize,
            connections: args.connections.min(args.clients) as usize,
            unary: args.unary,
            api: args.api,
            length,
            warmup: args.warmup,
            key_size: args.key_size as usize,
            value_size: args.value_size as usize,
            keys: args.keys,
            format: args.client.format,
            timeout: Duration::from_secs(args.client.timeout),
        })
    }

    /// The key numbered `index`: `/` and the number, zero-padded to the key size.
    pub fn key(&self, index: u64) -> Bytes {
        Bytes::from(format!("/{index:0>width$}", width = self.key_size - 1))
    }

    /// The value every write sends: printable pseudo-random bytes.
    pub fn value(&self) -> Bytes {
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
        let mut rng = Rng::new(0x6b65_656c);
        (0..self.value_size).map(|_| ALPHABET[rng.below(ALPHABET.len() as u64) as usize]).collect::<Vec<u8>>().into()
    }
}

/// SplitMix64: a small, fast generator, good enough to pick keys.
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Runs `keel bench`; returns the exit code.
pub fn run(args: BenchArgs) -> ExitCode {
    // Failed requests are counted in the report; the nodes' warnings (RUST_LOG=warn) would mix
    // with it, and those of the local cluster's shutdown are expected.
    init_logging("error");
    let plan = match Plan::from_args(&args) {
        Ok(plan) => plan,
        Err(message) => {
            eprintln!("Error: {message}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let runtime = match multi_thread_runtime(None) {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    let outcome = runtime.block_on(async {
        tokio::select! {
            outcome = run_target(&plan) => outcome,
            () = shutdown_signal() => Err(Failure::Failed("interrupted".into())),
        }
    });
    // Node and client tasks still running (after an interruption) end with the runtime.
    runtime.shutdown_timeout(Duration::from_secs(1));
    let (dir, outcome) = match outcome {
        Ok((dir, outcome)) => (dir, Ok(outcome)),
        Err(failure) => (None, Err(failure)),
    };
    if let Some(dir) = &dir {
        remove_dir(dir);
    }
    match outcome {
        Ok(report) => {
            print(&render(plan.format, &report));
            match report.verdict() {
                Ok(()) => ExitCode::SUCCESS,
                Err(message) => {
                    eprintln!("Error: {message}");
                    ExitCode::from(EXIT_FAILED)
                }
            }
        }
        Err(Failure::Usage(message)) => {
            eprintln!("Error: {message}");
            ExitCode::from(EXIT_USAGE)
        }
        Err(Failure::Failed(message)) => {
            eprintln!("Error: {message}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

fn remove_dir(dir: &Path) {
    if let Err(error) = std::fs::remove_dir_all(dir) {
        if error.kind() != std::io::ErrorKind::NotFound {
            eprintln!("warning: cannot remove {}: {error}", dir.display());
        }
    }
}

fn print(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush());
}

/// Why a run could not produce a report.
#[derive(Debug)]
enum Failure {
    /// The arguments are unusable (exit 2).
    Usage(String),
    /// The run failed (exit 1).
    Failed(String),
}

/// Starts the local cluster if asked, measures, stops the cluster; returns its data directory
/// (to remove) and the report.
async fn run_target(plan: &Plan) -> Result<(Option<PathBuf>, Report), Failure> {
    match &plan.target {
        Target::Endpoints(endpoints) => {
            let cluster = ClusterInfo::Endpoints(endpoints.clone());
            Ok((None, measure(plan, endpoints.clone(), cluster).await?))
        }
        Target::Local { lease_drift_ppm } => {
            let dir = fresh_temp_dir("keel-bench").map_err(|error| {
                Failure::Failed(format!("cannot create a temporary directory for the local cluster: {error}"))
            })?;
            let result = async {
                let bar = progress_bar(plan, None, "{spinner} starting a local 3-node cluster [{elapsed}]");
                bar.enable_steady_tick(PROGRESS_INTERVAL);
                let started = LocalCluster::start(&dir, *lease_drift_ppm).await;
                bar.finish_and_clear();
                let mut local = started?;
                let info = ClusterInfo::Local {
                    dir: dir.clone(),
                    endpoints: local.endpoints.clone(),
                    leader: local.leader,
                    lease_drift_ppm: *lease_drift_ppm,
                };
                let measured = measure(plan, local.endpoints.clone(), info).await;
                let stopped = local.stop().await;
                let report = measured?;
                stopped?;
                Ok(report)
            }
            .await;
            match result {
                Ok(report) => Ok((Some(dir), report)),
                Err(failure) => {
                    remove_dir(&dir);
                    Err(failure)
                }
            }
        }
    }
}

/// The clients' connections: `plan.connections` clients of the library, each with its own
/// connection to each node, or `plan.connections` connections to the etcd API's leader. Fails
/// early when no endpoint can be reached.
async fn connect(plan: &Plan, endpoints: &[String]) -> Result<Vec<Sender>, Failure> {
    let failure = |error: ClientError| match error {
        ClientError::InvalidEndpoint { .. } | ClientError::NoEndpoints => Failure::Usage(error.to_string()),
        error => Failure::Failed(format!("{error}\nHint: {}", error.advice())),
    };
    if plan.api == Api::Etcd {
        let load = Arc::new(EtcdLoad::connect(endpoints, plan.connections, plan.timeout).await.map_err(failure)?);
        return Ok((0..load.connections()).map(|connection| Sender::Etcd(load.clone(), connection)).collect());
    }
    let options = ClientOptions {
        deadline: plan.timeout,
        request_timeout: ClientOptions::default().request_timeout.min(plan.timeout),
        batch_stream: !plan.unary,
        ..ClientOptions::default()
    };
    let mut clients = Vec::with_capacity(plan.connections);
    for index in 0..plan.connections {
        let options = ClientOptions { client_id: index as u32 + 1, ..options.clone() };
        let client = if index == 0 {
            KeelClient::connect(endpoints.to_vec(), options).await
        } else {
            KeelClient::new(endpoints.to_vec(), options)
        };
        clients.push(Sender::Native(Arc::new(client.map_err(failure)?)));
    }
    Ok(clients)
}

/// A progress bar on standard error, hidden for JSON output or when standard error is not a
/// terminal.
fn progress_bar(plan: &Plan, length: Option<u64>, template: &str) -> ProgressBar {
    if plan.format == Format::Json || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = match length {
        Some(length) => ProgressBar::new(length),
        None => ProgressBar::new_spinner(),
    };
    let style = ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style.progress_chars("=> "));
    bar
}

/// Writes every key once, `plan.clients` at a time (at least [`POPULATE_CONCURRENCY_MIN`]).
async fn populate(plan: &Plan, clients: &[Sender], work: &Arc<Workset>) -> Result<(), Failure> {
    let bar = progress_bar(plan, Some(plan.keys), "populating {bar:40} {pos}/{len} keys [{elapsed}]");
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = JoinSet::new();
    for index in 0..plan.clients.max(POPULATE_CONCURRENCY_MIN).min(plan.keys as usize) {
        let client = clients[index % clients.len()].clone();
        let (next, work, bar) = (next.clone(), work.clone(), bar.clone());
        tasks.spawn(async move {
            loop {
                let key = next.fetch_add(1, Ordering::Relaxed);
                if key >= work.keys.len() as u64 {
                    return Ok(());
                }
                let name = work.keys[key as usize].clone();
                client.put(name.clone(), work.value.clone()).await.map_err(|error| {
                    format!("pre-populating the key space failed at {}: {error}", String::from_utf8_lossy(&name))
                })?;
                bar.inc(1);
            }
        });
    }
    let mut result = Ok(());
    while let Some(joined) = tasks.join_next().await {
        let outcome = match joined {
            Ok(done) => done,
            // Cancelled below, after the first failure.
            Err(error) if error.is_cancelled() => continue,
            Err(error) => Err(format!("a client task failed: {error}")),
        };
        if let Err(message) = outcome {
            if result.is_ok() {
                tasks.abort_all();
                result = Err(Failure::Failed(message));
            }
        }
    }
    bar.finish_and_clear();
    result
}

/// Populates if needed, warms up, measures, and builds the report.
async fn measure(plan: &Plan, endpoints: Vec<String>, cluster: ClusterInfo) -> Result<Report, Failure> {
    let clients = connect(plan, &endpoints).await?;
    let work = Arc::new(Workset {
        keys: (0..plan.keys).map(|index| plan.key(index)).collect(),
        value: plan.value(),
        read_ratio: plan.read_ratio,
        consistency: consistency(plan.consistency),
    });
    if plan.workload.reads() {
        populate(plan, &clients, &work).await?;
    }
    let limit = match plan.length {
        Length::Requests(requests) => Some(requests),
        Length::Duration(_) => None,
    };
    let first_phase = if plan.warmup.is_zero() { MEASURE } else { WARMUP };
    let shared = Arc::new(Shared {
        phase: AtomicU8::new(first_phase),
        started: AtomicU64::new(0),
        answered: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        limit,
    });
    let mut tasks = JoinSet::new();
    for index in 0..plan.clients {
        let client = clients[index % clients.len()].clone();
        tasks.spawn(client_loop(index, client, shared.clone(), work.clone()));
    }
    let mut tally = Tally::new();
    if first_phase == WARMUP {
        let bar = progress_bar(plan, None, "{spinner} warming up [{elapsed}]");
        bar.enable_steady_tick(PROGRESS_INTERVAL);
        tokio::select! {
            () = tokio::time::sleep(plan.warmup) => {}
            Some(joined) = tasks.join_next() => {
                bar.finish_and_clear();
                let reason = joined.err().map_or_else(|| "it returned".to_string(), |error| error.to_string());
                return Err(Failure::Failed(format!("a client stopped during the warm-up: {reason}")));
            }
        }
        bar.finish_and_clear();
        shared.phase.store(MEASURE, Ordering::Release);
    }
    let start = Instant::now();
    let (bar, deadline) = match plan.length {
        Length::Requests(requests) => {
            (progress_bar(plan, Some(requests), "measuring {bar:40} {pos}/{len} requests [{elapsed}] {msg}"), None)
        }
        Length::Duration(duration) => {
            let millis = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
            let bar = progress_bar(plan, Some(millis), "measuring {bar:40} {elapsed}/{duration} {msg}");
            (bar, Some(tokio::time::Instant::from_std(start) + duration))
        }
    };
    let mut ticker = tokio::time::interval(PROGRESS_INTERVAL);
    let mut stopping = false;
    loop {
        tokio::select! {
            joined = tasks.join_next() => match joined {
                Some(Ok(client)) => tally.merge(client),
                Some(Err(error)) => return Err(Failure::Failed(format!("a client task failed: {error}"))),
                None => break,
            },
            () = tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)), if deadline.is_some() && !stopping => {
                stopping = true;
                shared.phase.store(STOP, Ordering::Release);
            }
            _ = ticker.tick() => {
                let answered = shared.answered.load(Ordering::Relaxed);
                let failed = shared.failed.load(Ordering::Relaxed);
                let seconds = start.elapsed().as_secs_f64().max(1e-3);
                match plan.length {
                    Length::Requests(_) => bar.set_position(answered),
                    Length::Duration(_) => bar.set_position(u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)),
                }
                bar.set_message(format!("{:.0} requests/s, {failed} failed", (answered - failed) as f64 / seconds));
            }
        }
    }
    let elapsed = start.elapsed();
    bar.finish_and_clear();
    Ok(Report::new(plan.clone(), cluster, elapsed, tally))
}

#[cfg(test)]
#[path = "bench_tests.rs"]
mod tests;
