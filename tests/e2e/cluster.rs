//! Real `keel node` processes on loopback: start, kill -9, restart, and wait for them.
//!
//! Each node runs the release or debug `keel` binary that cargo built for this test, with its own
//! data directory under a temporary directory and its log (stderr) in `node-N.log` there. Waits
//! poll in small steps under [`WAIT`]; a failing test prints the logs of every node.

use std::collections::BTreeMap;
use std::fs::File;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use keel::client::{ClientOptions, KeelClient, NodeStatus, Role};
use keel::tls::ClientTls;
use tempfile::TempDir;

/// The binary under test.
pub const KEEL: &str = env!("CARGO_BIN_EXE_keel");

/// Upper bound on any wait; the tests normally finish far sooner.
pub const WAIT: Duration = Duration::from_secs(60);

/// Step of every polling loop.
pub const POLL: Duration = Duration::from_millis(50);

/// Timing flags for a fast loopback cluster.
const TIMING: [&str; 6] =
    ["--heartbeat-interval-ms", "50", "--election-timeout-ms-min", "300", "--election-timeout-ms-max", "600"];

/// A free loopback address (bound and released: the node binds it right after).
pub fn free_address() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("bound").to_string()
}

/// One `keel node` process and what is needed to start it again.
pub struct NodeProcess {
    /// The node's id.
    pub id: u32,
    /// Its client and peer address.
    pub address: String,
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
}

impl NodeProcess {
    fn spawn(&mut self) {
        let log = File::options().create(true).append(true).open(&self.log).expect("the node's log file opens");
        let child = Command::new(KEEL)
            .arg("node")
            .args(&self.args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("keel node starts");
        self.child = Some(child);
    }

    /// SIGKILL: the process gets no chance to flush or hand over anything.
    pub fn kill_9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the process again on the same data directory and address.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "node {} is still running", self.id);
        self.spawn();
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(Child::try_wait), Some(Ok(None)))
    }

    /// The node's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill_9();
    }
}

/// A cluster of node processes under one temporary directory.
pub struct Cluster {
    /// The nodes by id, started or not.
    pub nodes: BTreeMap<u32, NodeProcess>,
    dir: TempDir,
    extra: Vec<String>,
    initial_cluster: String,
    /// How the test's clients dial the nodes: plain text unless the nodes serve TLS.
    tls: Option<ClientTls>,
}

impl Cluster {
    /// Starts voters `1..=size`, each with the extra flags `extra`.
    pub fn start(size: u32, extra: &[&str]) -> Self {
        Self::start_with_tls(size, extra, None)
    }

    /// Like [`Cluster::start`]; the test's clients dial the nodes with `tls` (which must match
    /// the TLS flags in `extra`).
    pub fn start_with_tls(size: u32, extra: &[&str], tls: Option<ClientTls>) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let addresses: BTreeMap<u32, String> = (1..=size).map(|id| (id, free_address())).collect();
        let initial_cluster =
            addresses.iter().map(|(id, address)| format!("{id}={address}")).collect::<Vec<_>>().join(",");
        let extra = extra.iter().map(|flag| flag.to_string()).collect();
        let mut cluster = Self { nodes: BTreeMap::new(), dir, extra, initial_cluster, tls };
        for (id, address) in addresses {
            cluster.add_process(id, address);
        }
        cluster
    }

    /// Starts node `id` at `address` with an empty data directory; it is part of the initial
    /// cluster only if listed there, and otherwise waits to be added.
    pub fn add_process(&mut self, id: u32, address: String) {
        let data_dir = self.dir.path().join(format!("node-{id}"));
        let mut args = vec![
            format!("--id={id}"),
            format!("--listen={address}"),
            format!("--data-dir={}", data_dir.display()),
            format!("--initial-cluster={}", self.initial_cluster),
        ];
        args.extend(TIMING.iter().map(|flag| flag.to_string()));
        args.extend(self.extra.iter().cloned());
        let log = self.dir.path().join(format!("node-{id}.log"));
        let mut node = NodeProcess { id, address, args, log, child: None };
        node.spawn();
        self.nodes.insert(id, node);
    }

    /// Kills node `id` (`kill -9`) and starts it again on its data directory, listening at
    /// `address` from now on.
    pub fn restart_at(&mut self, id: u32, address: String) {
        let node = self.nodes.get_mut(&id).expect("a node of the cluster");
        node.kill_9();
        for arg in node.args.iter_mut().filter(|arg| arg.starts_with("--listen=")) {
            *arg = format!("--listen={address}");
        }
        node.address = address;
        node.spawn();
    }

    /// Every node's client address, in id order.
    pub fn endpoints(&self) -> Vec<String> {
        self.nodes.values().map(|node| node.address.clone()).collect()
    }

    /// A client of the whole cluster.
    pub fn client(&self) -> KeelClient {
        client_with(self.endpoints(), self.tls.clone())
    }

    /// A client that talks to node `id` only.
    pub fn client_of_node(&self, id: u32) -> KeelClient {
        client_with(vec![self.nodes[&id].address.clone()], self.tls.clone())
    }

    /// Every node's log, for a failure message.
    pub fn logs(&self) -> String {
        self.nodes.values().map(|node| format!("---- node {} ----\n{}", node.id, node.log())).collect()
    }

    /// The status of node `id`, if it answers.
    pub async fn status(&self, id: u32) -> Option<NodeStatus> {
        let client = self.client_of_node(id);
        client.status(&self.nodes[&id].address).await.ok()
    }

    /// Waits until a node of `among` leads with a quorum and every other node of `among`
    /// follows it; returns its id.
    pub async fn leader(&self, among: &[u32]) -> u32 {
        self.eventually("a leader followed by every running node", || async {
            let mut statuses = Vec::new();
            for id in among {
                statuses.push(self.status(*id).await?);
            }
            let leader = statuses.iter().find(|status| status.role == Role::Leader && status.has_quorum)?.id;
            let followed = statuses.iter().all(|status| status.leader.as_ref().is_some_and(|hint| hint.id == leader));
            followed.then_some(leader)
        })
        .await
    }

    /// Waits until every node in `ids` has applied at least what the leader `leader` committed.
    pub async fn converged(&self, leader: u32, ids: &[u32]) {
        let commit_index = self.status(leader).await.expect("the leader answers").commit_index;
        self.eventually("every node applied the leader's commit index", || async {
            for id in ids {
                if self.status(*id).await?.applied_index < commit_index {
                    return None;
                }
            }
            Some(())
        })
        .await;
    }

    /// Polls `attempt` until it yields a value; panics with every node's log after [`WAIT`].
    pub async fn eventually<T, F, Fut>(&self, what: &str, mut attempt: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(value) = attempt().await {
                return value;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("timed out waiting for {what}\n{}", self.logs());
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

/// A client of `endpoints` with short per-attempt deadlines, so that a dead node is skipped fast;
/// over `tls` when given.
pub fn client_with(endpoints: Vec<String>, tls: Option<ClientTls>) -> KeelClient {
    let options = ClientOptions {
        tls,
        connect_timeout: Duration::from_millis(500),
        request_timeout: Duration::from_secs(6),
        deadline: Duration::from_secs(20),
        max_attempts: 40,
        backoff_min: Duration::from_millis(20),
        backoff_max: Duration::from_millis(300),
        ..ClientOptions::default()
    };
    KeelClient::new(endpoints, options).expect("valid endpoints")
}
