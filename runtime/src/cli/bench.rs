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

use indicatif::{ProgressBar, ProgressStyle};
use keel::client::{ClientError, ClientOptions, KeelClient};
use tokio::task::JoinSet;

use super::node::{fresh_temp_dir, init_logging, multi_thread_runtime, shutdown_signal};
#[cfg(test)]
use super::ConsistencyArg;
use super::{Format, EXIT_FAILED, EXIT_USAGE};

mod etcd;
mod load;
mod local;
mod plan;
mod report;

use etcd::EtcdLoad;
use load::Tally;
use load::{client_loop, Sender, Shared, Workset, MEASURE, STOP, WARMUP};
#[cfg(test)]
use load::{error_label, Op};
use local::LocalCluster;
use plan::consistency;
#[cfg(test)]
use plan::parse_duration;
pub use plan::{Api, BenchArgs, Length, Plan, Rng, Target, Workload};
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
        let load = Arc::new(
            EtcdLoad::connect(endpoints, plan.connections, plan.timeout, plan.tls.as_ref(), plan.credentials.as_ref())
                .await
                .map_err(failure)?,
        );
        return Ok((0..load.connections()).map(|connection| Sender::Etcd(load.clone(), connection)).collect());
    }
    let options = ClientOptions {
        deadline: plan.timeout,
        request_timeout: ClientOptions::default().request_timeout.min(plan.timeout),
        batch_stream: !plan.unary,
        tls: plan.tls.clone(),
        credentials: plan.credentials.clone(),
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
