//! A complete Keel node server: storage, peer transport, the node driver and the gRPC services
//! on one address.
//!
//! [`serve`] opens the storage (`FjallStorage` in
//! [`ServerConfig::data_dir`]; [`MemoryStorage`] when there is none, and always under
//! `--cfg madsim`, where fjall cannot run), starts the [`Node`] with a [`PeerTransport`] as its
//! message sink, and serves `keel.raft.RaftPeer`, `keel.client.RaftClientService`,
//! `keel.admin.ClusterAdmin` and the etcd v3 services ([`crate::etcd`]) on
//! [`ServerConfig::listen_addr`] until the `shutdown` future completes, the server fails, or the
//! node stops on a fatal error. [`serve_with`] does the same on a storage and a clock the caller
//! provides (the madsim simulation: a disk that outlives a node's crash, a skewed clock per node).
//!
//! # Joining a cluster
//!
//! A node whose id is not in `node.initial_members` starts empty and waits to be added as a
//! learner (`ClusterAdmin.ChangeMembership` with `AddNode`, sent to the leader). Give it the
//! current members' addresses in `initial_members` (without itself): the node driver adds them
//! to the transport's peers, so that the node can answer the leader before the log has told it
//! the configuration.
//!
//! # Graceful shutdown
//!
//! When `shutdown` completes:
//!
//! 1. if this node leads, it hands leadership to the most caught-up voter (highest match index)
//!    and waits until it is no longer leader, at most [`ServerConfig::handover_timeout_ms`]
//!    (two maximum election timeouts by default; 0 skips the hand-over, for a whole cluster that
//!    stops at once, as `keel dev` does); the services keep serving meanwhile, so the peers'
//!    answers still arrive, and new writes are refused with a leader hint;
//! 2. every open watch stream ends with the gRPC status `UNAVAILABLE`;
//! 3. the gRPC server stops accepting connections and drains the calls in flight, at most
//!    [`ServerConfig::drain_timeout_ms`], after which it is aborted; the peers' streams into the
//!    node stay open until the node's own calls are answered (so a write in flight when it stopped
//!    leading still learns its outcome) and then end, so that nodes stopping together do not hold
//!    each other's drains open;
//! 4. the node stops (its storage is closed once its worker has finished).
//!
//! # Message sizes
//!
//! The client and admin services accept and send messages up to
//! [`ServiceConfig::message_bytes_max`] (checked to leave room for the largest key-value command,
//! `KvLimits::command_bytes_max`, plus 64 KiB); the peer service uses
//! [`TransportConfig::message_bytes_max`], which must also exceed the largest command.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use keel_core::{NodeId, Role};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tonic::transport::Server;

use crate::clock::{Clock, SystemClock};
use crate::node::{Node, NodeConfig, NodeError, NodeHandle, NodeStatus};
use crate::service::{AdminService, ClientService, ServiceConfig};
use crate::storage::{MemoryStorage, Storage};
use crate::tls::NodeTls;
use crate::tls_reload::{ReloadingTls, RELOAD_CHECK_INTERVAL};
use crate::transport::{peer_server, PeerService, PeerTransport, TransportConfig};

/// How often the hand-over on shutdown checks whether leadership moved.
const HANDOVER_POLL: Duration = Duration::from_millis(10);

/// How often a stopping server looks whether its calls in flight are all answered.
const DRAIN_POLL: Duration = Duration::from_millis(10);

/// Room a peer message needs beyond the largest command it carries.
const PEER_MESSAGE_OVERHEAD_BYTES: usize = 64 * 1024;

/// Default of [`ServerConfig::connections_max`]: far above what a cluster's peers and clients
/// usually need. The process's open-file limit (`ulimit -n`) must be higher, with room for the
/// storage's files: a login shell often allows only 1,024, so raise that limit for a node, or
/// lower this one.
pub const CONNECTIONS_MAX_DEFAULT: usize = 4_096;

/// Everything a node server needs.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// The node: id, initial members, consensus and key-value settings. A joining node (not in
    /// `initial_members`) uses `initial_members` as the addresses of the cluster it joins.
    pub node: NodeConfig,
    /// Where the gRPC services listen (peers and clients alike). Ignored by
    /// `serve_with_listener`, which is given a bound listener.
    pub listen_addr: SocketAddr,
    /// The data directory of the durable storage; `None` keeps the state in memory (lost when
    /// the process ends). Ignored under `--cfg madsim`, which always uses memory.
    pub data_dir: Option<PathBuf>,
    /// The peer transport.
    pub transport: TransportConfig,
    /// The client and admin services (read default, watch settings, limits).
    pub service: ServiceConfig,
    /// Longest wait for leadership to move on shutdown; `None` is two maximum election
    /// timeouts. `Some(0)` stops without handing over: for a whole cluster stopping at once,
    /// where every target is stopping too and the attempt would only time out.
    pub handover_timeout_ms: Option<u64>,
    /// Longest wait for the calls in flight to finish on shutdown.
    pub drain_timeout_ms: u64,
    /// Connections (clients' and peers' alike) open at once at most; one that arrives while
    /// this many are open is closed at once (`connections.rs`). Keep it below the process's
    /// open-file limit, which the node also needs for its storage. Plain builds only.
    pub connections_max: usize,
    /// TLS on the listener and on every connection the node opens (peers, etcd forwarding); see
    /// [`crate::tls`]. `None`: plain text. Ignored under `--cfg madsim`.
    pub tls: Option<NodeTls>,
}

impl ServerConfig {
    /// Defaults around `node`, listening on `listen_addr`, with in-memory storage.
    pub fn new(node: NodeConfig, listen_addr: SocketAddr) -> Self {
        let drain_timeout_ms = node.request_timeout_ms.saturating_add(1_000);
        Self {
            node,
            listen_addr,
            data_dir: None,
            transport: TransportConfig::default(),
            service: ServiceConfig::default(),
            handover_timeout_ms: None,
            drain_timeout_ms,
            connections_max: CONNECTIONS_MAX_DEFAULT,
            tls: None,
        }
    }

    /// Checks that the settings are coherent; the error says which one to change.
    pub fn validate(&self) -> Result<(), ServerError> {
        self.node.raft.validate().map_err(|error| ServerError::Config(error.message))?;
        let peers = self.node.initial_members.len();
        if self.connections_max <= peers {
            return Err(ServerError::Config(format!(
                "connections_max is {} but the {peers} initial members alone need as many connections; raise it",
                self.connections_max
            )));
        }
        self.service.validate(&self.node).map_err(ServerError::Config)?;
        let needed = self.node.kv_limits.command_bytes_max.saturating_add(PEER_MESSAGE_OVERHEAD_BYTES);
        if self.transport.message_bytes_max < needed {
            return Err(ServerError::Config(format!(
                "transport.message_bytes_max is {} bytes but the largest command is {} bytes; raise it to at least {needed}",
                self.transport.message_bytes_max, self.node.kv_limits.command_bytes_max
            )));
        }
        Ok(())
    }

    fn handover_timeout(&self) -> Duration {
        let default = self.node.raft.election_timeout_ms_max.saturating_mul(2);
        Duration::from_millis(self.handover_timeout_ms.unwrap_or(default))
    }
}

/// Why a server could not start, or stopped on its own.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The storage could not be opened.
    #[error("cannot open the storage: {0}")]
    Storage(String),
    /// The node could not start, or stopped on a fatal error.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// The gRPC server could not listen, or failed while serving.
    #[error("cannot serve on {address}: {message}")]
    Serve {
        /// The address.
        address: String,
        /// What failed.
        message: String,
    },
}

/// Where the gRPC server listens.
enum Listen {
    #[cfg(not(madsim))]
    Incoming(crate::connections::LimitedIncoming),
    #[cfg(madsim)]
    Address(SocketAddr),
}

/// Runs a node server until `shutdown` completes (then shuts down gracefully, see the module
/// docs), the server fails, or the node stops on a fatal error.
pub async fn serve(config: ServerConfig, shutdown: impl Future<Output = ()>) -> Result<(), ServerError> {
    config.validate()?;
    let listen = bind(&config)?;
    let storage = open_storage(&config)?;
    run(config, listen, (storage, SystemClock::new()), shutdown, None).await
}

/// Like [`serve`], on the given storage and clock instead of the configured storage and the
/// system clock (`config.data_dir` is ignored), handing the node's [`NodeHandle`] to `started`
/// (if given) once the node has started. The simulator uses it to keep each node's disk across
/// a crash and restart, to give each node its own skewed clock, and to check a node's local
/// answers (such as etcd's health check) directly.
pub async fn serve_with(
    config: ServerConfig,
    storage: Box<dyn Storage + Send>,
    clock: Arc<dyn Clock>,
    shutdown: impl Future<Output = ()>,
    started: Option<oneshot::Sender<NodeHandle>>,
) -> Result<(), ServerError> {
    config.validate()?;
    let listen = bind(&config)?;
    run(config, listen, (storage, clock), shutdown, started).await
}

/// Like [`serve`], on a listener the caller has bound already (for example to an ephemeral port
/// whose address must be known before the server starts); `config.listen_addr` is ignored.
/// Not available under `--cfg madsim`.
#[cfg(not(madsim))]
pub async fn serve_with_listener(
    config: ServerConfig,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    config.validate()?;
    let incoming = crate::connections::LimitedIncoming::new(listener, config.connections_max);
    let storage = open_storage(&config)?;
    run(config, Listen::Incoming(incoming), (storage, SystemClock::new()), shutdown, None).await
}

/// Like [`serve`], and hands the running node's [`NodeHandle`] to `started` as soon as the node
/// has started (before it is elected or serves anything): the embedded mode, see
/// [`crate::embedded`].
pub async fn serve_embedded(
    config: ServerConfig,
    shutdown: impl Future<Output = ()>,
    started: oneshot::Sender<NodeHandle>,
) -> Result<(), ServerError> {
    config.validate()?;
    let listen = bind(&config)?;
    let storage = open_storage(&config)?;
    run(config, listen, (storage, SystemClock::new()), shutdown, Some(started)).await
}

/// Binds `config.listen_addr` (under madsim, only records it: madsim-tonic binds when serving).
fn bind(config: &ServerConfig) -> Result<Listen, ServerError> {
    #[cfg(not(madsim))]
    {
        let incoming =
            crate::connections::LimitedIncoming::bind(config.listen_addr, config.connections_max).map_err(|error| {
                ServerError::Serve { address: config.listen_addr.to_string(), message: error.to_string() }
            })?;
        Ok(Listen::Incoming(incoming))
    }
    #[cfg(madsim)]
    Ok(Listen::Address(config.listen_addr))
}

/// etcd's HTTP routes on the client address, ahead of the gRPC services, whose unknown paths
/// keep tonic's `UNIMPLEMENTED` answer: `GET /health` (see `etcd/health.rs`), `GET /version`,
/// and the JSON gateway under `/v3/` (`etcd/gateway.rs`).
#[cfg(not(madsim))]
fn http_routes(handle: NodeHandle, etcd: &crate::etcd::EtcdApi) -> tonic::service::Routes {
    let version = || async { ([(axum::http::header::CONTENT_TYPE, "application/json")], crate::etcd::version_json()) };
    let mut routes = tonic::service::Routes::default();
    let router = std::mem::take(routes.axum_router_mut());
    *routes.axum_router_mut() = router
        .route("/health", crate::etcd::health::http_route(handle))
        .route("/version", axum::routing::get(version))
        .merge(etcd.http_gateway());
    routes
}

/// How the serving phase ended.
enum Ending {
    Requested,
    ServerEnded(String),
    NodeStopped,
}

/// The node's storage and clock.
type NodeParts = (Box<dyn Storage + Send>, Arc<dyn Clock>);

async fn run(
    config: ServerConfig,
    listen: Listen,
    (storage, clock): NodeParts,
    shutdown: impl Future<Output = ()>,
    started: Option<oneshot::Sender<NodeHandle>>,
) -> Result<(), ServerError> {
    let id = config.node.raft.id;
    // Before the node starts: a certificate that rustls refuses stops the server at once.
    let tls = config.tls.clone().map(|tls| ReloadingTls::new(tls, RELOAD_CHECK_INTERVAL));
    let tls = tls.transpose().map_err(ServerError::Config)?;
    let outbound_tls = tls.as_ref().map(ReloadingTls::outbound);
    let transport = PeerTransport::new(id, TransportConfig { tls: outbound_tls.clone(), ..config.transport.clone() });
    let node = Node::start(config.node.clone(), storage, clock, Box::new(transport))?;
    let handle = node.handle();
    if let Some(started) = started {
        // The embedder may have given up waiting; the node serves anyway until shut down.
        let _ = started.send(handle.clone());
    }
    let client = ClientService::new(handle.clone(), &config.node, config.service.clone());
    let closer = client.closer();
    let admin = AdminService::new(handle.clone(), &config.node, &config.service);
    // Peer streams end once the server closes and its calls are answered, so that nodes stopping
    // together do not wait for each other's senders (see `PeerService::closing_with`).
    let (release_peers, peers_released) = tokio::sync::watch::channel(false);
    let peer_service = PeerService::new(id, node.inbound()).closing_with(peers_released);
    let peer = peer_server(peer_service, config.transport.message_bytes_max);
    // The etcd v3 API (runtime/src/etcd) on the same address, over the same store.
    let etcd =
        crate::etcd::EtcdApi::new(handle.clone(), &config.node, config.service.clone(), closer.clone(), outbound_tls);
    // Plain builds also answer etcd's HTTP routes on this address (`GET /health`, `GET
    // /version`, the JSON gateway), over HTTP/1.1 as well as HTTP/2.
    #[cfg(not(madsim))]
    let router = Server::builder()
        .accept_http1(true)
        .layer(crate::service::DecodeErrorLayer)
        .layer(etcd.cert_identity_layer())
        .add_routes(http_routes(handle.clone(), &etcd))
        .add_service(peer);
    #[cfg(madsim)]
    let router = Server::builder().add_service(peer);
    let corruption_check = etcd.start_corruption_check(config.node.corrupt_check_interval_ms);
    let router = router
        .add_service(client.into_server())
        .add_service(admin.into_server())
        .add_service(etcd.kv_server())
        .add_service(etcd.watch_server())
        .add_service(etcd.lease_server())
        .add_service(etcd.cluster_server())
        .add_service(etcd.maintenance_server())
        .add_service(etcd.auth_server())
        .add_service(etcd.grpc_health_server());

    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let signal = async move {
        let _ = stop_rx.await;
    };
    let address = match &listen {
        #[cfg(not(madsim))]
        Listen::Incoming(incoming) => {
            incoming.local_addr().map_or_else(|_| config.listen_addr.to_string(), |a| a.to_string())
        }
        #[cfg(madsim)]
        Listen::Address(address) => address.to_string(),
    };
    let serving = match listen {
        #[cfg(not(madsim))]
        Listen::Incoming(incoming) => {
            router.serve_with_incoming_shutdown(crate::tls_listener::ServerIncoming::new(incoming, tls), signal)
        }
        #[cfg(madsim)]
        Listen::Address(address) => router.serve_with_shutdown(address, signal),
    };
    let mut server = tokio::spawn(serving);
    tracing::info!(node = id, address = address.as_str(), "serving");

    let mut shutdown = std::pin::pin!(shutdown);
    // `biased`: no random branch order, so that a simulated run depends on its seed alone.
    let ending = tokio::select! {
        biased;
        _ = &mut shutdown => Ending::Requested,
        joined = &mut server => Ending::ServerEnded(match joined {
            Ok(Ok(())) => "the gRPC server stopped unexpectedly".to_string(),
            Ok(Err(error)) => error.to_string(),
            Err(error) => format!("the gRPC server task failed: {error}"),
        }),
        _ = handle.stopped() => Ending::NodeStopped,
    };

    let handover_timeout = config.handover_timeout();
    if matches!(ending, Ending::Requested) && !handover_timeout.is_zero() {
        hand_over(&handle, handover_timeout).await;
    }
    closer.close();
    if let Some(task) = corruption_check {
        task.abort();
    }
    let _ = stop_tx.send(());
    if !matches!(ending, Ending::ServerEnded(_)) {
        let drain = Duration::from_millis(config.drain_timeout_ms);
        let released = release_peers_when_answered(&handle, Instant::now() + drain, &release_peers);
        match tokio::join!(released, tokio::time::timeout(drain, &mut server)).1 {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(error))) => tracing::warn!(node = id, "the gRPC server ended with an error: {error}"),
            Ok(Err(error)) => tracing::warn!(node = id, "the gRPC server task failed: {error}"),
            Err(_) => {
                tracing::warn!(node = id, "calls still in flight after {} ms; aborting them", drain.as_millis());
                server.abort();
            }
        }
    }
    let stopped = node.stop().await;
    tracing::info!(node = id, "stopped");
    match ending {
        Ending::ServerEnded(message) => {
            if let Err(error) = stopped {
                tracing::warn!(node = id, "the node stopped with an error: {error}");
            }
            Err(ServerError::Serve { address, message })
        }
        Ending::Requested | Ending::NodeStopped => stopped.map_err(ServerError::Node),
    }
}

fn open_storage(config: &ServerConfig) -> Result<Box<dyn Storage + Send>, ServerError> {
    match &config.data_dir {
        #[cfg(not(madsim))]
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|error| {
                ServerError::Storage(format!("cannot create the data directory {}: {error}", dir.display()))
            })?;
            let storage = crate::storage::FjallStorage::open(dir)
                .map_err(|error| ServerError::Storage(format!("{}: {error}", dir.display())))?;
            Ok(Box::new(storage))
        }
        #[cfg(madsim)]
        Some(dir) => {
            tracing::warn!(dir = %dir.display(), "the simulator keeps storage in memory; the data directory is ignored");
            Ok(Box::new(MemoryStorage::new()))
        }
        None => Ok(Box::new(MemoryStorage::new())),
    }
}

/// Waits until every call made through `handle` is answered (or `deadline` passes), then ends
/// the peers' streams into this node. Until then the node keeps hearing from its peers, so that
/// a write in flight when it stopped leading can still learn its outcome from the new leader.
async fn release_peers_when_answered(
    handle: &NodeHandle,
    deadline: Instant,
    release: &tokio::sync::watch::Sender<bool>,
) {
    while handle.calls_in_flight() > 0 && Instant::now() < deadline {
        tokio::time::sleep(DRAIN_POLL).await;
    }
    release.send_replace(true);
}

/// The voter other than this node that holds the most of the log (ties: the one heard from most
/// recently, then the highest id).
fn most_caught_up_voter(status: &NodeStatus) -> Option<NodeId> {
    status
        .peers
        .iter()
        .filter(|peer| peer.id != status.id && status.membership.is_voter(peer.id))
        .max_by_key(|peer| (peer.match_index, peer.last_contact_ms_ago.map_or(0, |ago| u64::MAX - ago), peer.id))
        .map(|peer| peer.id)
}

/// If this node leads, hands leadership to the most caught-up voter and waits (bounded) until it
/// is no longer leader. The transfer is asked again while it has not happened: the core abandons
/// a transfer after an election timeout, and asking again for the same target is harmless.
async fn hand_over(handle: &NodeHandle, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    let mut target = None;
    loop {
        let Ok(status) = handle.status().await else { return };
        if status.role != Role::Leader {
            if let Some(target) = target {
                tracing::info!(node = status.id, target, "leadership handed over before shutdown");
            }
            return;
        }
        if Instant::now() >= deadline {
            tracing::warn!(node = status.id, "still the leader after {} ms; stopping anyway", timeout.as_millis());
            return;
        }
        let Some(next) = most_caught_up_voter(&status) else { return };
        if let Err(error) = handle.transfer_leader(next).await {
            tracing::debug!(node = status.id, target = next, "transfer not started: {error}");
        }
        target = Some(next);
        tokio::time::sleep(HANDOVER_POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::PeerStatus;
    use keel_core::{LeaderHint, Membership};
    use std::collections::BTreeMap;

    fn status(peers: Vec<PeerStatus>, voters: &[NodeId]) -> NodeStatus {
        NodeStatus {
            id: 1,
            role: Role::Leader,
            term: 1,
            leader: LeaderHint::default(),
            commit_index: 0,
            applied_index: 0,
            last_log_index: 0,
            revision: 0,
            membership: Membership::with_voters(voters.iter().copied()),
            peers,
            has_quorum: true,
        }
    }

    fn peer(id: NodeId, match_index: u64, ago: Option<u64>) -> PeerStatus {
        PeerStatus { id, match_index, last_contact_ms_ago: ago }
    }

    #[test]
    fn the_hand_over_target_is_the_most_caught_up_voter() {
        let peers = vec![peer(2, 10, Some(5)), peer(3, 12, Some(50)), peer(4, 20, Some(1))];
        // Node 4 is a learner: never a target.
        assert_eq!(most_caught_up_voter(&status(peers.clone(), &[1, 2, 3])), Some(3));
        let tied = vec![peer(2, 12, Some(5)), peer(3, 12, Some(50))];
        assert_eq!(most_caught_up_voter(&status(tied, &[1, 2, 3])), Some(2), "ties go to the most recent contact");
        assert_eq!(most_caught_up_voter(&status(Vec::new(), &[1])), None);
    }

    #[test]
    fn configurations_too_small_for_the_largest_command_are_refused() {
        let node = NodeConfig::new(1, BTreeMap::from([(1, "127.0.0.1:1".to_string())]));
        let mut config = ServerConfig::new(node, SocketAddr::from(([127, 0, 0, 1], 0)));
        assert!(config.validate().is_ok());
        config.service.message_bytes_max = 1024;
        assert!(matches!(config.validate(), Err(ServerError::Config(m)) if m.contains("message_bytes_max")));
        config.service = ServiceConfig::default();
        config.transport.message_bytes_max = 1024;
        assert!(matches!(config.validate(), Err(ServerError::Config(m)) if m.contains("transport.message_bytes_max")));
        config.transport = TransportConfig::default();
        config.service.default_read_consistency = crate::node::ReadConsistency::Lease;
        assert!(matches!(config.validate(), Err(ServerError::Config(m)) if m.contains("lease")));
    }
}
