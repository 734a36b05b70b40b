//! `keel node` (one node) and `keel dev` (a local cluster in one process): logging, signals and
//! graceful shutdown around [`keel_runtime::server::serve`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use keel::client::{ClientOptions, KeelClient, Role};
use keel_runtime::node::{NodeConfig, NodeHandle};
use keel_runtime::server::{serve, serve_embedded, ServerConfig, ServerError};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinSet;

use super::settings::NodeSettings;
use super::{DevArgs, NodeArgs, DEFAULT_ENDPOINTS, EXIT_FAILED, EXIT_USAGE};

/// Longest wait for the nodes of `keel dev` to stop after Ctrl-C.
const DEV_STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest wait for `keel dev` to elect a leader before it says so.
const DEV_LEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// Logs to standard error, filtered by `RUST_LOG` (`default` when unset or invalid).
pub fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

/// Completes on Ctrl-C (SIGINT) or SIGTERM.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    result = tokio::signal::ctrl_c() => if result.is_err() { std::future::pending::<()>().await },
                    _ = terminate.recv() => {}
                }
                return;
            }
            Err(error) => tracing::warn!("cannot listen for SIGTERM ({error}); only Ctrl-C stops the node"),
        }
    }
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// A multi-threaded runtime with `worker_threads` workers, or one per core when `None`.
pub fn multi_thread_runtime(worker_threads: Option<usize>) -> Result<tokio::runtime::Runtime, ExitCode> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = worker_threads {
        builder.worker_threads(threads);
    }
    builder.enable_all().build().map_err(|error| {
        eprintln!("Error: cannot start the async runtime: {error}");
        ExitCode::from(EXIT_FAILED)
    })
}

/// The exit code of a server error: 2 for a configuration error, 1 otherwise.
fn server_failure(error: &ServerError) -> ExitCode {
    eprintln!("Error: {error}");
    match error {
        ServerError::Config(_) => ExitCode::from(EXIT_USAGE),
        ServerError::Serve { .. } => {
            eprintln!("Hint: check that the address is free and belongs to this machine");
            ExitCode::from(EXIT_FAILED)
        }
        _ => ExitCode::from(EXIT_FAILED),
    }
}

/// `keel node`: validates the settings (exit 2 on an error), then serves until SIGTERM or Ctrl-C
/// and shuts down gracefully (leadership handed over first).
pub fn run_node(args: NodeArgs) -> ExitCode {
    init_logging("info");
    let settings = match &args.config {
        Some(path) => NodeSettings::from_file(path).map(|file| args.settings.clone().or(file)),
        None => Ok(args.settings.clone()),
    };
    let node = match settings.and_then(|settings| settings.validate()) {
        Ok(node) => node,
        Err(error) => {
            eprintln!("Error: {error}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let id = node.server.node.raft.id;
    let data_dir = node.server.data_dir.as_deref().map(Path::display);
    tracing::info!(
        node = id,
        listen = %node.server.listen_addr,
        data_dir = %data_dir.map(|dir| dir.to_string()).unwrap_or_default(),
        initial_cluster = ?node.server.node.initial_members,
        tls = match &node.server.tls {
            None => "off (plain text)",
            Some(tls) if tls.client_cert_auth() => "on, client certificates required",
            Some(_) => "on",
        },
        "starting"
    );
    if node.joining {
        tracing::info!(
            node = id,
            "node {id} is not in the initial cluster: it joins an existing cluster, starting empty (unless its \
             data directory holds state) and waiting to be added with `keel member add {id} ADDRESS`"
        );
    } else if let Some(address) = node.server.node.initial_members.get(&id) {
        if address.parse::<SocketAddr>().is_ok_and(|peer| peer != node.server.listen_addr)
            && !node.server.listen_addr.ip().is_unspecified()
        {
            tracing::warn!(
                node = id,
                "peers reach this node at {address} but it listens on {}",
                node.server.listen_addr
            );
        }
    }
    let runtime = match multi_thread_runtime(node.worker_threads) {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    runtime.block_on(async move {
        let (started, handle) = oneshot::channel();
        if let Some(address) = node.metrics_listen {
            match metrics_endpoint(address).await {
                Ok((listener, prometheus)) => {
                    tokio::spawn(serve_metrics(id, listener, prometheus, handle));
                    tracing::info!(node = id, address = %address, "serving /metrics and /health");
                }
                Err(error) => {
                    eprintln!("Error: {error}");
                    return ExitCode::from(EXIT_FAILED);
                }
            }
        }
        let shutdown = async {
            shutdown_signal().await;
            tracing::info!(node = id, "shutdown requested; handing leadership over and stopping");
        };
        match serve_embedded(node.server, shutdown, started).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => server_failure(&error),
        }
    })
}

/// Binds `--metrics-listen` and installs the Prometheus recorder, before the node starts, so
/// that a taken address stops `keel node` at once.
async fn metrics_endpoint(address: SocketAddr) -> Result<(TcpListener, PrometheusHandle), String> {
    let listener =
        TcpListener::bind(address).await.map_err(|error| format!("cannot serve metrics on {address}: {error}"))?;
    Ok((listener, keel_runtime::metrics::install_prometheus()?))
}

/// Serves the metrics listener once the node has started (see `metrics::serve_http`); a failure
/// is logged, and the node keeps serving clients.
async fn serve_metrics(
    id: u32,
    listener: TcpListener,
    prometheus: PrometheusHandle,
    handle: oneshot::Receiver<NodeHandle>,
) {
    let Ok(handle) = handle.await else { return };
    if let Err(error) = keel_runtime::metrics::serve_http(listener, prometheus, handle).await {
        tracing::error!(node = id, "{error}");
    }
}

/// The configuration of dev node `id` of `members`, its data in `dir`.
pub fn dev_config(id: u32, members: &BTreeMap<u32, String>, dir: &Path) -> Result<ServerConfig, String> {
    let address = &members[&id];
    let listen: SocketAddr = address.parse().map_err(|_| format!("invalid address {address}"))?;
    let mut node = NodeConfig::new(id, members.clone());
    // Loopback: quicker elections than the LAN defaults.
    node.raft.heartbeat_interval_ms = 50;
    node.raft.election_timeout_ms_min = 500;
    node.raft.election_timeout_ms_max = 1_000;
    let mut server = ServerConfig::new(node, listen);
    server.data_dir = Some(dir.join(format!("node-{id}")));
    // Ctrl-C stops every node at once: handing leadership to a node that is stopping as well
    // would only time out (and log that it did).
    server.handover_timeout_ms = Some(0);
    server.validate().map_err(|error| error.to_string())?;
    Ok(server)
}

/// A fresh directory under the system's temporary directory, named after `prefix`.
pub fn fresh_temp_dir(prefix: &str) -> std::io::Result<PathBuf> {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let dir = std::env::temp_dir().join(format!("{prefix}-{}-{nanos:09}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// `keel dev`: runs `--nodes` nodes on loopback ports from `--base-port`, prints how to use them,
/// announces the leader, and runs until Ctrl-C or SIGTERM.
pub fn run_dev(args: DevArgs) -> ExitCode {
    init_logging("warn");
    let last_port = u32::from(args.base_port) + args.nodes - 1;
    if last_port > u32::from(u16::MAX) {
        eprintln!(
            "Error: --base-port {} leaves no room for {} nodes (the last port would be {last_port})",
            args.base_port, args.nodes
        );
        return ExitCode::from(EXIT_USAGE);
    }
    let (dir, temporary) = match args.dir {
        Some(dir) => (dir, false),
        None => match fresh_temp_dir("keel-dev") {
            Ok(dir) => (dir, true),
            Err(error) => {
                eprintln!("Error: cannot create a temporary directory: {error}; pass --dir DIR");
                return ExitCode::from(EXIT_FAILED);
            }
        },
    };
    let members: BTreeMap<u32, String> =
        (1..=args.nodes).map(|id| (id, format!("127.0.0.1:{}", u32::from(args.base_port) + id - 1))).collect();
    let mut configs = Vec::new();
    for id in members.keys() {
        match dev_config(*id, &members, &dir) {
            Ok(config) => configs.push(config),
            Err(error) => {
                eprintln!("Error: {error}");
                return ExitCode::from(EXIT_USAGE);
            }
        }
    }
    let runtime = match multi_thread_runtime(None) {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    let code = runtime.block_on(run_cluster(configs, &members, &dir, temporary));
    if temporary {
        if let Err(error) = std::fs::remove_dir_all(&dir) {
            eprintln!("warning: cannot remove {}: {error}", dir.display());
        }
    }
    code
}

async fn run_cluster(
    configs: Vec<ServerConfig>,
    members: &BTreeMap<u32, String>,
    dir: &Path,
    temporary: bool,
) -> ExitCode {
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut nodes = JoinSet::new();
    for config in configs {
        let id = config.node.raft.id;
        let mut stop = stop_rx.clone();
        nodes.spawn(async move {
            let shutdown = async move {
                let _ = stop.wait_for(|stop| *stop).await;
            };
            (id, serve(config, shutdown).await)
        });
    }
    print_banner(members, dir, temporary);

    let endpoints: Vec<String> = members.values().cloned().collect();
    let mut ready = std::pin::pin!(wait_for_leader(endpoints));
    let mut signal = std::pin::pin!(shutdown_signal());
    let mut announced = false;
    let mut failed = false;
    loop {
        tokio::select! {
            _ = &mut signal => {
                println!("Stopping...");
                break;
            }
            leader = &mut ready, if !announced => {
                announced = true;
                match leader {
                    Some((id, term)) => println!("Ready: node {id} leads (term {term}). Press Ctrl-C to stop."),
                    None => println!("No leader after {} s; the nodes keep trying (see the logs). Press Ctrl-C to stop.", DEV_LEADER_TIMEOUT.as_secs()),
                }
            }
            Some(joined) = nodes.join_next() => {
                failed = true;
                match joined {
                    Ok((id, Err(error))) => {
                        eprintln!("Error: node {id} stopped: {error}");
                        if matches!(error, ServerError::Serve { .. }) {
                            eprintln!("Hint: another program may use the port; pass another --base-port");
                        }
                    }
                    Ok((id, Ok(()))) => eprintln!("Error: node {id} stopped unexpectedly"),
                    Err(error) => eprintln!("Error: a node task failed: {error}"),
                }
                break;
            }
        }
    }
    let _ = stop_tx.send(true);
    let stopping = async {
        while let Some(joined) = nodes.join_next().await {
            if let Ok((id, Err(error))) = joined {
                eprintln!("node {id} stopped with an error: {error}");
                failed = true;
            }
        }
    };
    if tokio::time::timeout(DEV_STOP_TIMEOUT, stopping).await.is_err() {
        eprintln!("Error: the nodes did not stop within {} s", DEV_STOP_TIMEOUT.as_secs());
        failed = true;
    }
    if failed {
        ExitCode::from(EXIT_FAILED)
    } else {
        println!("Stopped.");
        ExitCode::SUCCESS
    }
}

fn print_banner(members: &BTreeMap<u32, String>, dir: &Path, temporary: bool) {
    let endpoints = members.values().cloned().collect::<Vec<_>>().join(",");
    let kept = if temporary { " (removed on exit)" } else { "" };
    println!("Keel dev cluster: {} node(s), data in {}{kept}", members.len(), dir.display());
    for (id, address) in members {
        println!("  node {id}  {address}  {}", dir.join(format!("node-{id}")).display());
    }
    let flag = if endpoints == DEFAULT_ENDPOINTS { String::new() } else { format!(" --endpoints {endpoints}") };
    println!("Endpoints: {endpoints}");
    println!();
    println!("Try, in another terminal:");
    for example in ["put /hello world", "get /hello", "scan /", "watch /hello", "members", "status"] {
        println!("  keel {example}{flag}");
    }
    println!();
    println!("Waiting for a leader...");
}

/// The leader's id and term once one of `endpoints` reports leading, polling every 100 ms, or
/// `None` after [`DEV_LEADER_TIMEOUT`].
pub async fn wait_for_leader(endpoints: Vec<String>) -> Option<(u32, u64)> {
    let options = ClientOptions {
        connect_timeout: Duration::from_millis(500),
        request_timeout: Duration::from_secs(1),
        deadline: Duration::from_secs(2),
        max_attempts: 1,
        ..ClientOptions::default()
    };
    let client = KeelClient::new(endpoints, options).ok()?;
    let polling = async {
        loop {
            for (_, status) in client.status_all().await {
                if let Ok(status) = status {
                    if status.role == Role::Leader {
                        return (status.id, status.term);
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(DEV_LEADER_TIMEOUT, polling).await.ok()
}
