//! The settings of `keel node`: the same fields as command-line flags and as keys of a TOML
//! file (`--config keel.toml`); a flag overrides the file. [`NodeSettings::validate`] checks them
//! and builds the [`ServerConfig`], with an error that names the field to fix.
//!
//! ```toml
//! id = 1
//! listen = "127.0.0.1:7001"
//! data_dir = "/var/lib/keel"
//! initial_cluster = "1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003"
//! metrics_listen = "127.0.0.1:9101"
//! # TLS (all three files, or none)
//! cert_file = "/etc/keel/node1.pem"
//! key_file = "/etc/keel/node1-key.pem"
//! trusted_ca_file = "/etc/keel/ca.pem"
//! client_cert_auth = true
//! heartbeat_interval_ms = 100
//! election_timeout_ms_min = 1000
//! election_timeout_ms_max = 2000
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use keel_core::LeaseConfig;
use keel_runtime::node::NodeConfig;
use keel_runtime::server::ServerConfig;
use keel_runtime::tls::NodeTls;
use serde::Deserialize;

/// Bytes a command needs beyond its key and value.
const COMMAND_OVERHEAD_BYTES: usize = 4 * 1024;

/// Most threads a node's async runtime may be given.
const WORKER_THREADS_MAX: usize = 1_024;

/// Room a gRPC message needs beyond the largest command.
const MESSAGE_OVERHEAD_BYTES: usize = 64 * 1024;

/// One node's settings. Every field is optional here: flags and file are merged first, then
/// validated; absent limits take the node's defaults.
#[derive(clap::Args, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct NodeSettings {
    /// This node's id (1 or more).
    #[arg(long)]
    pub id: Option<u32>,
    /// Address to serve clients and peers on, e.g. 127.0.0.1:7001.
    #[arg(long)]
    pub listen: Option<String>,
    /// Directory of the node's durable state (created if missing).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// The initial voters, as ID=HOST:PORT,...; used only when the data directory is empty. A
    /// node not listed starts empty and waits to be added with `keel member add`.
    #[arg(long)]
    pub initial_cluster: Option<String>,
    /// Serve Prometheus metrics on this address (http://ADDR/metrics).
    #[arg(long)]
    pub metrics_listen: Option<String>,
    /// Leader heartbeat interval, in milliseconds [default: 100].
    #[arg(long)]
    pub heartbeat_interval_ms: Option<u64>,
    /// Lower bound of the randomized election timeout, in milliseconds; at least twice the
    /// heartbeat interval [default: 1000].
    #[arg(long)]
    pub election_timeout_ms_min: Option<u64>,
    /// Upper bound of the randomized election timeout, in milliseconds [default: 2000].
    #[arg(long)]
    pub election_timeout_ms_max: Option<u64>,
    /// How often the consensus core is ticked, in milliseconds; at most the heartbeat interval
    /// [default: 10].
    #[arg(long)]
    pub tick_interval_ms: Option<u64>,
    /// Deadline of one client request inside the node, in milliseconds [default: 5000].
    #[arg(long)]
    pub request_timeout_ms: Option<u64>,
    /// Client requests queued at most; more are refused as OVERLOADED [default: 16384].
    #[arg(long)]
    pub request_queue_max: Option<usize>,
    /// Entries appended but not yet committed at most; more writes are refused [default: 1048576].
    #[arg(long)]
    pub uncommitted_entries_max: Option<u64>,
    /// Reads waiting at most; more are refused [default: 65536].
    #[arg(long)]
    pub pending_reads_max: Option<usize>,
    /// Snapshot and compact the log every this many applied entries [default: 100000].
    #[arg(long)]
    pub snapshot_interval_entries: Option<u64>,
    /// Events a slow watcher may fall behind before it is canceled [default: 4096].
    #[arg(long)]
    pub watch_buffer_events: Option<usize>,
    /// Watch streams open at once at most [default: 10000].
    #[arg(long)]
    pub watchers_max: Option<usize>,
    /// How long a token from the etcd API's Authenticate stays valid, in milliseconds (etcd's
    /// --auth-token-ttl); any change of users, roles or permissions ends it sooner
    /// [default: 300000].
    #[arg(long)]
    pub auth_token_ttl_ms: Option<u64>,
    /// PBKDF2-HMAC-SHA256 rounds of a new etcd user password hash, 1000 to 10000000: the CPU
    /// cost of an Authenticate against that of guessing passwords from a stolen hash
    /// [default: 100000].
    #[arg(long)]
    pub auth_password_iterations: Option<u32>,
    /// Connections (clients' and peers') open at once at most; more are closed as they arrive.
    /// Keep it below the open-file limit (`ulimit -n`) [default: 4096].
    #[arg(long)]
    pub connections_max: Option<usize>,
    /// Longest key, in bytes [default: 4096].
    #[arg(long)]
    pub key_bytes_max: Option<usize>,
    /// Largest value, in bytes [default: 1048576].
    #[arg(long)]
    pub value_bytes_max: Option<usize>,
    /// Storage quota, in bytes of key-value data (history included): past it the leader raises
    /// etcd's NOSPACE alarm and writes that grow the store are refused until `etcdctl alarm
    /// disarm` [default: none].
    #[arg(long)]
    pub quota_backend_bytes: Option<u64>,
    /// How often the leader compares every member's store hash with its own and raises etcd's
    /// CORRUPT alarm for a member that differs, in milliseconds; 0 turns it off [default: 300000].
    #[arg(long)]
    pub corrupt_check_interval_ms: Option<u64>,
    /// Largest gRPC message, in bytes, for clients and peers [default: 16777216].
    #[arg(long)]
    pub message_bytes_max: Option<usize>,
    /// Enables lease reads, safe while clocks drift apart by at most this many parts per million.
    #[arg(long)]
    pub lease_clock_drift_ppm: Option<u64>,
    /// Deadline of one message batch to a peer, in milliseconds [default: 2000].
    #[arg(long)]
    pub peer_timeout_ms: Option<u64>,
    /// Messages queued per peer at most; more are dropped (Raft resends) [default: 1024].
    #[arg(long)]
    pub peer_queue_max: Option<usize>,
    /// Threads that run the node's async tasks (gRPC, replication, the driver); the storage
    /// thread comes on top. Lower it when several nodes share a machine's cores
    /// [default: one per core].
    #[arg(long)]
    pub worker_threads: Option<usize>,
    /// TLS: the node's certificate (PEM), for clients and peers alike; it must name every
    /// address the node is reached by and allow both TLS server and client use. Needs key_file
    /// and trusted_ca_file.
    #[arg(long)]
    pub cert_file: Option<PathBuf>,
    /// TLS: the private key of cert_file (PEM).
    #[arg(long)]
    pub key_file: Option<PathBuf>,
    /// TLS: the certificate authorities (PEM) that the node verifies its peers against, and its
    /// clients with client_cert_auth.
    #[arg(long)]
    pub trusted_ca_file: Option<PathBuf>,
    /// TLS: refuse every connection, client or peer, without a certificate that trusted_ca_file
    /// signed [default: false].
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub client_cert_auth: Option<bool>,
}

/// A setting that cannot be used; the message names it and says what to do.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SettingsError(pub String);

fn fail<T>(message: impl Into<String>) -> Result<T, SettingsError> {
    Err(SettingsError(message.into()))
}

/// A validated node: what to serve, and what to tell the operator.
#[derive(Clone, Debug)]
pub struct ValidNode {
    /// The server configuration.
    pub server: ServerConfig,
    /// Where to serve metrics, if anywhere.
    pub metrics_listen: Option<SocketAddr>,
    /// True when the node is not among the initial voters (it waits to be added).
    pub joining: bool,
    /// Threads of the node's async runtime; `None` for one per core.
    pub worker_threads: Option<usize>,
}

impl NodeSettings {
    /// Reads a TOML file of settings.
    pub fn from_file(path: &Path) -> Result<Self, SettingsError> {
        let text = std::fs::read_to_string(path)
            .map_err(|error| SettingsError(format!("cannot read the config file {}: {error}", path.display())))?;
        Self::from_toml(&text).map_err(|SettingsError(message)| SettingsError(format!("{}: {message}", path.display())))
    }

    /// Parses TOML settings; unknown keys are refused.
    pub fn from_toml(text: &str) -> Result<Self, SettingsError> {
        toml::from_str(text)
            .map_err(|error| SettingsError(format!("invalid config file: {}", error.to_string().trim())))
    }

    /// These settings, with each absent one taken from `file`.
    pub fn or(self, file: NodeSettings) -> NodeSettings {
        macro_rules! merge {
            ($($field:ident),* $(,)?) => { NodeSettings { $($field: self.$field.or(file.$field)),* } };
        }
        merge!(
            id,
            listen,
            data_dir,
            initial_cluster,
            metrics_listen,
            heartbeat_interval_ms,
            election_timeout_ms_min,
            election_timeout_ms_max,
            tick_interval_ms,
            request_timeout_ms,
            request_queue_max,
            uncommitted_entries_max,
            pending_reads_max,
            snapshot_interval_entries,
            watch_buffer_events,
            watchers_max,
            auth_token_ttl_ms,
            auth_password_iterations,
            connections_max,
            key_bytes_max,
            value_bytes_max,
            quota_backend_bytes,
            corrupt_check_interval_ms,
            message_bytes_max,
            lease_clock_drift_ppm,
            peer_timeout_ms,
            peer_queue_max,
            worker_threads,
            cert_file,
            key_file,
            trusted_ca_file,
            client_cert_auth,
        )
    }

    /// Checks every setting and builds the server configuration. Names in errors are the
    /// config-file keys (flags are the same with dashes).
    pub fn validate(&self) -> Result<ValidNode, SettingsError> {
        let Some(id) = self.id else { return fail("id is missing: give --id N (1 or more)") };
        if id == 0 {
            return fail("id must be 1 or more (0 means \"no node\")");
        }
        let Some(listen) = &self.listen else { return fail("listen is missing: give --listen HOST:PORT") };
        let listen_addr = parse_socket("listen", listen)?;
        let Some(data_dir) = self.data_dir.clone() else {
            return fail("data_dir is missing: give --data-dir DIR (the node's durable state lives there)");
        };
        let initial_members = match &self.initial_cluster {
            Some(text) => parse_cluster(text)?,
            None => BTreeMap::new(),
        };
        let metrics_listen =
            self.metrics_listen.as_deref().map(|text| parse_socket("metrics_listen", text)).transpose()?;

        let mut node = NodeConfig::new(id, initial_members);
        self.apply_timing(&mut node)?;
        self.apply_limits(&mut node)?;
        let mut server = ServerConfig::new(node, listen_addr);
        server.data_dir = Some(data_dir);
        set(&mut server.service.watchers_max, "watchers_max", self.watchers_max)?;
        set(&mut server.service.auth_token_ttl_ms, "auth_token_ttl_ms", self.auth_token_ttl_ms)?;
        set(&mut server.service.auth_password_iterations, "auth_password_iterations", self.auth_password_iterations)?;
        set(&mut server.connections_max, "connections_max", self.connections_max)?;
        set(&mut server.transport.call_timeout_ms, "peer_timeout_ms", self.peer_timeout_ms)?;
        set(&mut server.transport.queue_messages_max, "peer_queue_max", self.peer_queue_max)?;
        if let Some(bytes) = self.message_bytes_max {
            let needed = server.node.kv_limits.command_bytes_max + MESSAGE_OVERHEAD_BYTES;
            if bytes < needed {
                return fail(format!(
                    "message_bytes_max ({bytes}) must be at least {needed}: the largest command plus 64 KiB; \
                     raise it or lower value_bytes_max"
                ));
            }
            server.service.message_bytes_max = bytes;
            server.transport.message_bytes_max = bytes;
        }
        server.tls = self.tls()?;
        server.validate().map_err(|error| SettingsError(error.to_string()))?;
        let joining = !server.node.initial_members.contains_key(&id);
        if let Some(threads) = self.worker_threads {
            if !(1..=WORKER_THREADS_MAX).contains(&threads) {
                return fail(format!(
                    "worker_threads must be at least 1 and at most {WORKER_THREADS_MAX}, not {threads}"
                ));
            }
        }
        Ok(ValidNode { server, metrics_listen, joining, worker_threads: self.worker_threads })
    }

    /// The node's TLS from cert_file, key_file, trusted_ca_file and client_cert_auth: all
    /// three files or none of them.
    fn tls(&self) -> Result<Option<NodeTls>, SettingsError> {
        let client_cert_auth = self.client_cert_auth.unwrap_or(false);
        let (cert, key, ca) = match (&self.cert_file, &self.key_file, &self.trusted_ca_file) {
            (None, None, None) if client_cert_auth => {
                return fail("client_cert_auth needs TLS: give cert_file, key_file and trusted_ca_file too")
            }
            (None, None, None) => return Ok(None),
            (Some(cert), Some(key), Some(ca)) => (cert, key, ca),
            (None, _, _) => return fail("cert_file is missing: TLS needs cert_file, key_file and trusted_ca_file"),
            (_, None, _) => return fail("key_file is missing: TLS needs cert_file, key_file and trusted_ca_file"),
            (_, _, None) => {
                return fail(
                    "trusted_ca_file is missing: with TLS the node verifies its peers' certificates against it",
                )
            }
        };
        let tls =
            NodeTls::from_files(cert, key, ca, client_cert_auth).map_err(|error| SettingsError(error.to_string()))?;
        // What rustls refuses (a key that does not match the certificate, an authority it
        // cannot use) is a settings error too, found before anything starts.
        #[cfg(not(madsim))]
        tls.server_config().map_err(SettingsError)?;
        Ok(Some(tls))
    }

    fn apply_timing(&self, node: &mut NodeConfig) -> Result<(), SettingsError> {
        let raft = &mut node.raft;
        set(&mut raft.heartbeat_interval_ms, "heartbeat_interval_ms", self.heartbeat_interval_ms)?;
        set(&mut raft.election_timeout_ms_min, "election_timeout_ms_min", self.election_timeout_ms_min)?;
        match self.election_timeout_ms_max {
            Some(max) => raft.election_timeout_ms_max = max,
            // Keep the default spread (min to 2 × min) when only the minimum is given.
            None => raft.election_timeout_ms_max = raft.election_timeout_ms_max.max(raft.election_timeout_ms_min * 2),
        }
        if raft.election_timeout_ms_min < 2 * raft.heartbeat_interval_ms {
            return fail(format!(
                "election_timeout_ms_min ({}) must be at least twice heartbeat_interval_ms ({})",
                raft.election_timeout_ms_min, raft.heartbeat_interval_ms
            ));
        }
        if raft.election_timeout_ms_max <= raft.election_timeout_ms_min {
            return fail(format!(
                "election_timeout_ms_max ({}) must be greater than election_timeout_ms_min ({})",
                raft.election_timeout_ms_max, raft.election_timeout_ms_min
            ));
        }
        if let Some(ppm) = self.lease_clock_drift_ppm {
            raft.lease = Some(LeaseConfig { clock_drift_ppm_max: ppm });
            if raft.lease_duration_ms() == 0 {
                return fail(format!(
                    "lease_clock_drift_ppm ({ppm}) leaves no lease with election_timeout_ms_min {}: lower it or raise the timeout",
                    raft.election_timeout_ms_min
                ));
            }
        }
        set(&mut node.tick_interval_ms, "tick_interval_ms", self.tick_interval_ms)?;
        if node.tick_interval_ms > node.raft.heartbeat_interval_ms {
            return fail(format!(
                "tick_interval_ms ({}) must not exceed heartbeat_interval_ms ({})",
                node.tick_interval_ms, node.raft.heartbeat_interval_ms
            ));
        }
        set(&mut node.request_timeout_ms, "request_timeout_ms", self.request_timeout_ms)?;
        Ok(())
    }

    fn apply_limits(&self, node: &mut NodeConfig) -> Result<(), SettingsError> {
        set(&mut node.request_queue_max, "request_queue_max", self.request_queue_max)?;
        set(&mut node.raft.uncommitted_entries_max, "uncommitted_entries_max", self.uncommitted_entries_max)?;
        set(&mut node.raft.pending_reads_max, "pending_reads_max", self.pending_reads_max)?;
        set(&mut node.snapshot_interval_entries, "snapshot_interval_entries", self.snapshot_interval_entries)?;
        set(&mut node.watch_buffer_events, "watch_buffer_events", self.watch_buffer_events)?;
        set(&mut node.kv_quota_bytes, "quota_backend_bytes", self.quota_backend_bytes)?;
        if let Some(interval_ms) = self.corrupt_check_interval_ms {
            node.corrupt_check_interval_ms = interval_ms;
        }
        let limits = &mut node.kv_limits;
        set(&mut limits.key_bytes_max, "key_bytes_max", self.key_bytes_max)?;
        set(&mut limits.value_bytes_max, "value_bytes_max", self.value_bytes_max)?;
        limits.command_bytes_max =
            limits.command_bytes_max.max(limits.key_bytes_max + limits.value_bytes_max + COMMAND_OVERHEAD_BYTES);
        Ok(())
    }
}

/// Sets `target` to `value` when given; zero is refused by name.
fn set<T: Copy + Default + PartialEq + std::fmt::Display>(
    target: &mut T,
    name: &str,
    value: Option<T>,
) -> Result<(), SettingsError> {
    match value {
        Some(value) if value == T::default() => fail(format!("{name} must be at least 1 (it is {value})")),
        Some(value) => {
            *target = value;
            Ok(())
        }
        None => Ok(()),
    }
}

fn parse_socket(name: &str, text: &str) -> Result<SocketAddr, SettingsError> {
    text.trim().parse().map_err(|_| {
        SettingsError(format!("{name}: '{text}' is not a valid IP address and port (for example 127.0.0.1:7001)"))
    })
}

/// Parses `ID=HOST:PORT,...` into the initial voters.
pub fn parse_cluster(text: &str) -> Result<BTreeMap<u32, String>, SettingsError> {
    let mut members = BTreeMap::new();
    for entry in text.split(',').map(str::trim).filter(|entry| !entry.is_empty()) {
        let Some((id, address)) = entry.split_once('=') else {
            return fail(format!("initial_cluster: '{entry}' is not ID=HOST:PORT"));
        };
        let id: u32 = match id.trim().parse() {
            Ok(id) if id > 0 => id,
            _ => return fail(format!("initial_cluster: '{id}' in '{entry}' is not a node id (1 or more)")),
        };
        let address = address.trim();
        check_peer_address(address)
            .map_err(|reason| SettingsError(format!("initial_cluster: '{address}' (node {id}) {reason}")))?;
        if members.insert(id, address.to_owned()).is_some() {
            return fail(format!("initial_cluster: node {id} is listed twice"));
        }
    }
    if members.is_empty() {
        return fail("initial_cluster is empty: give ID=HOST:PORT,... or leave it out for a joining node");
    }
    Ok(members)
}

/// A peer address must be HOST:PORT with a host and a port number (the host may be a name).
fn check_peer_address(address: &str) -> Result<(), &'static str> {
    let Some((host, port)) = address.rsplit_once(':') else { return Err("has no port (HOST:PORT)") };
    if host.is_empty() || host.contains(char::is_whitespace) || host.contains('/') {
        return Err("has no valid host (HOST:PORT)");
    }
    match port.parse::<u16>() {
        Ok(port) if port > 0 => Ok(()),
        _ => Err("has no valid port (1 to 65535)"),
    }
}

#[cfg(test)]
#[path = "settings_tests.rs"]
mod tests;
