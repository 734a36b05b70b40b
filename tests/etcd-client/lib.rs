//! Keel's etcd v3 API as the `etcd-client` crate sees it: a 3-node cluster of Keel servers in
//! this process, each on its own loopback port with in-memory storage, reached by the library
//! through their addresses as any application would (`tests/etcd_client.rs`).
//!
//! This crate is a workspace of its own (see its `Cargo.toml`): `etcd-client` needs a protobuf
//! compiler at build time, which the main workspace must never need.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use keel_runtime::node::NodeConfig;
use keel_runtime::server::{serve_with_listener, ServerConfig};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// Upper bound on any wait; the tests normally finish far sooner.
pub const WAIT: Duration = Duration::from_secs(20);

/// How long an etcd auth token lasts on these nodes.
pub const AUTH_TOKEN_TTL: Duration = Duration::from_secs(2);

/// A running cluster; its servers stop when it is dropped.
pub struct Cluster {
    /// Each node's client address (`host:port`), by node id.
    pub addresses: BTreeMap<u64, String>,
    _stops: Vec<oneshot::Sender<()>>,
}

impl Cluster {
    /// Starts voters `1..=size` with short election timeouts.
    pub async fn start(size: u64) -> Cluster {
        let mut listeners = BTreeMap::new();
        for id in 1..=size {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
            listeners.insert(id, listener);
        }
        let local = |listener: &TcpListener| listener.local_addr().expect("bound");
        let members: BTreeMap<u32, String> =
            listeners.iter().map(|(id, listener)| (*id as u32, local(listener).to_string())).collect();
        let mut stops = Vec::new();
        for (id, listener) in listeners {
            let config = server_config(id as u32, &members, local(&listener));
            let (stop, stopped) = oneshot::channel::<()>();
            tokio::spawn(serve_with_listener(config, listener, async move {
                let _ = stopped.await;
            }));
            stops.push(stop);
        }
        let addresses = members.into_iter().map(|(id, address)| (u64::from(id), address)).collect();
        Cluster { addresses, _stops: stops }
    }

    /// Every node's address, in id order.
    pub fn endpoints(&self) -> Vec<String> {
        self.addresses.values().cloned().collect()
    }
}

/// A loopback node with short timeouts, so that elections and transfers take well under a second.
fn server_config(id: u32, members: &BTreeMap<u32, String>, address: SocketAddr) -> ServerConfig {
    let mut node = NodeConfig::new(id, members.clone());
    node.raft.heartbeat_interval_ms = 30;
    node.raft.election_timeout_ms_min = 300;
    node.raft.election_timeout_ms_max = 600;
    let mut config = ServerConfig::new(node, address);
    // Authentication's tests: cheap password hashes, and tokens that expire within a test.
    config.service.auth_password_iterations = 1_000;
    config.service.auth_token_ttl_ms = AUTH_TOKEN_TTL.as_millis() as u64;
    config.transport.backoff_ms_min = 5;
    config.transport.backoff_ms_max = 100;
    config
}

/// Polls `attempt` every 50 ms until it yields a value; panics naming `what` after [`WAIT`].
pub async fn eventually<T, Fut: std::future::Future<Output = Option<T>>>(
    what: &str,
    mut attempt: impl FnMut() -> Fut,
) -> T {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(value) = attempt().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
