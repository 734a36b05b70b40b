//! The node's metrics, recorded through the `metrics` facade and exported for Prometheus.
//!
//! Names (all prefixed `keel_`): commit latency (client write to applied, at the leader), sync
//! latency and entries per sync (group commit), the time to take a snapshot, the driver's pause
//! for it (copying the store) and storing it (on the storage worker), corruption-check
//! comparisons, leader changes, term, commit and applied index, leadership, open watchers, and
//! TLS reloads (done and failed).
//! Without an installed recorder (tests, the simulator) recording is a no-op. `keel node
//! --metrics-listen` serves them at `/metrics`, beside etcd's `/health` ([`serve_http`]).

/// Histogram, seconds: from a client write reaching the driver to its entry being applied.
pub const COMMIT_LATENCY_SECONDS: &str = "keel_commit_latency_seconds";
/// Histogram, seconds: one storage sync (a group commit).
pub const SYNC_LATENCY_SECONDS: &str = "keel_sync_latency_seconds";
/// Histogram: log writes made durable by one sync.
pub const SYNC_BATCH_WRITES: &str = "keel_sync_batch_writes";
/// Histogram, seconds: taking a snapshot of the key-value store (every
/// `snapshot_interval_entries` applied entries), from copying the store to its bytes being ready;
/// the encoding runs on a blocking thread while the driver goes on.
pub const SNAPSHOT_SECONDS: &str = "keel_snapshot_seconds";
/// Histogram, seconds: copying the key-value store for a snapshot, the part of taking one during
/// which the node's driver serves nothing.
pub const SNAPSHOT_COPY_SECONDS: &str = "keel_snapshot_copy_seconds";
/// Histogram, seconds: storing a snapshot and compacting the log to it, during which the storage
/// worker makes no log write durable.
pub const LOG_COMPACTION_SECONDS: &str = "keel_log_compaction_seconds";
/// Counter: member hashes this node, as leader, compared with its own in corruption checks.
pub const CORRUPTION_CHECKS_TOTAL: &str = "keel_corruption_checks_total";
/// Counter: times this node saw the leader change.
pub const LEADER_CHANGES_TOTAL: &str = "keel_leader_changes_total";
/// Gauge: current term.
pub const TERM: &str = "keel_term";
/// Gauge: commit index.
pub const COMMIT_INDEX: &str = "keel_commit_index";
/// Gauge: applied index.
pub const APPLIED_INDEX: &str = "keel_applied_index";
/// Gauge: 1 while this node leads.
pub const IS_LEADER: &str = "keel_is_leader";
/// Gauge: open watch streams.
pub const WATCHERS: &str = "keel_watchers";
/// Counter: times the node read its changed TLS files and put them in use (`tls_reload.rs`).
pub const TLS_RELOADS_TOTAL: &str = "keel_tls_reloads_total";
/// Counter: times the node's TLS files changed but could not be used (the previous stay).
pub const TLS_RELOAD_FAILURES_TOTAL: &str = "keel_tls_reload_failures_total";

/// Records a duration measured in microseconds into the histogram `name`, in seconds.
pub(crate) fn record_seconds(name: &'static str, elapsed_us: u64) {
    metrics::histogram!(name).record(elapsed_us as f64 / 1e6);
}

/// Installs the Prometheus recorder for this process (once: a second install fails), whose
/// handle renders every metric recorded from then on.
#[cfg(not(madsim))]
pub fn install_prometheus() -> Result<metrics_exporter_prometheus::PrometheusHandle, String> {
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .map_err(|error| format!("cannot install the Prometheus recorder: {error}"))
}

/// Serves, over HTTP/1.1 on `listener`, `GET /metrics` (Prometheus text format, rendered from
/// `prometheus`) and etcd's `GET /health` of `node` (`etcd/health.rs`), as etcd does on its
/// metrics URLs, where orchestrators' probes look; any other path is 404, so that a probe
/// pointed at a wrong path fails instead of passing. Runs until the listener fails.
#[cfg(not(madsim))]
pub async fn serve_http(
    listener: tokio::net::TcpListener,
    prometheus: metrics_exporter_prometheus::PrometheusHandle,
    node: crate::node::NodeHandle,
) -> Result<(), String> {
    use axum::http::{header, StatusCode};

    let address = listener.local_addr().map_or_else(|_| "the metrics address".to_owned(), |a| a.to_string());
    let render = move || {
        let text = prometheus.render();
        async move { ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text) }
    };
    let router = axum::Router::new()
        .route("/metrics", axum::routing::get(render))
        .route("/health", crate::etcd::health::http_route(node))
        .fallback(|| async { StatusCode::NOT_FOUND });
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    tonic::transport::Server::builder()
        .accept_http1(true)
        .add_routes(tonic::service::Routes::from(router))
        .serve_with_incoming(incoming)
        .await
        .map_err(|error| format!("serving metrics on {address} failed: {error}"))
}
