//! The `keel` command line: run a node (`keel node`), a local cluster (`keel dev`), talk to
//! a cluster (`put`, `get`, `del`, `cas`, `scan`, `watch`, `members`, `member`,
//! `transfer-leader`, `status`) through the client library, which follows leader hints, and
//! measure one (`keel bench`).
//!
//! Exit codes: 0 success, 1 the request (or the node) failed, 2 a usage or configuration error.

mod bench;
mod commands;
mod node;
mod output;
mod settings;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub use settings::NodeSettings;

/// The default endpoints: the cluster `keel dev` starts.
pub const DEFAULT_ENDPOINTS: &str = "127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003";

/// Exit code of a request that failed.
pub const EXIT_FAILED: u8 = 1;
/// Exit code of a usage or configuration error.
pub const EXIT_USAGE: u8 = 2;

/// Keel: a strongly consistent, replicated key-value and coordination engine built on Raft.
#[derive(Parser, Debug)]
#[command(name = "keel", version, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run one node of a cluster.
    Node(Box<NodeArgs>),
    /// Run a local cluster on loopback in this process, until Ctrl-C.
    Dev(DevArgs),
    /// Set a key to a value.
    Put {
        /// The key (e.g. /config/a).
        key: String,
        /// The value.
        value: String,
        /// Expire the key this many seconds after the write.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        ttl: Option<u64>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Read one or more keys.
    Get {
        /// The keys.
        #[arg(required = true)]
        keys: Vec<String>,
        /// How the read is confirmed.
        #[arg(long, value_enum, default_value_t = ConsistencyArg::Linearizable)]
        consistency: ConsistencyArg,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete a key (deleting a missing key succeeds).
    Del {
        /// The key.
        key: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Set KEY to NEW only if its value is --expected V (or it is --absent).
    Cas(CasArgs),
    /// List every key under a prefix (starting with /), with the revision of the scan.
    Scan {
        /// The prefix, e.g. /config/.
        prefix: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Print the changes of a key (or of every key under a prefix) until Ctrl-C.
    Watch {
        /// The key, or with --prefix a path prefix that starts and ends with / (e.g. /config/).
        key: String,
        /// Watch every key under KEY.
        #[arg(long)]
        prefix: bool,
        /// Show each key's value before the change.
        #[arg(long)]
        prev_kv: bool,
        /// Start at this revision: past changes from it on are printed first (0: from now on).
        #[arg(long, default_value_t = 0)]
        rev: u64,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List the members of the cluster.
    Members {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Change the membership: add a learner, promote learners, remove members.
    Member {
        #[command(subcommand)]
        command: MemberCommand,
    },
    /// Hand leadership over to another voter.
    TransferLeader {
        /// The voter that should lead.
        id: u32,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show the status of each endpoint.
    Status {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Measure throughput and latency with concurrent closed-loop clients (--local: on a 3-node
    /// cluster started in this process).
    Bench(Box<bench::BenchArgs>),
}

/// `keel member ...`
#[derive(Subcommand, Debug)]
pub enum MemberCommand {
    /// Add a node as a learner (it replicates but does not vote until promoted).
    Add {
        /// The new node's id.
        id: u32,
        /// The new node's address (HOST:PORT), as its peers reach it.
        address: String,
        /// Never promote it (a permanent read replica).
        #[arg(long)]
        read_only: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Promote learners to voters, in one change.
    Promote {
        /// The learners' ids.
        #[arg(required = true)]
        ids: Vec<u32>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Remove members (voters or learners), in one change.
    Remove {
        /// The members' ids.
        #[arg(required = true)]
        ids: Vec<u32>,
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// `keel node` arguments.
#[derive(Args, Debug)]
pub struct NodeArgs {
    /// A TOML file with the same settings (keys named like the flags, with underscores); flags
    /// override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub settings: NodeSettings,
}

/// `keel dev` arguments.
#[derive(Args, Debug)]
pub struct DevArgs {
    /// Where the nodes keep their data (one directory per node); default: a fresh temporary
    /// directory, removed on exit.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// How many nodes.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=9))]
    pub nodes: u32,
    /// Port of node 1; node N listens on BASE-PORT + N - 1.
    #[arg(long, default_value_t = 7001, value_parser = clap::value_parser!(u16).range(1..))]
    pub base_port: u16,
}

/// `keel cas` arguments.
#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("expectation").required(true).args(["expected", "absent"])))]
pub struct CasArgs {
    /// The key.
    pub key: String,
    /// The value to set when the comparison holds.
    pub new: String,
    /// The value the key must have now.
    #[arg(long)]
    pub expected: Option<String>,
    /// The key must not exist now.
    #[arg(long)]
    pub absent: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Options of every client command.
#[derive(Args, Debug, Clone)]
pub struct ClientArgs {
    /// Client addresses of the nodes, comma-separated; the leader is found from any of them.
    #[arg(long, value_delimiter = ',', default_value = DEFAULT_ENDPOINTS)]
    pub endpoints: Vec<String>,
    /// Output format.
    #[arg(short = 'w', long = "write-out", value_enum, default_value_t = Format::Simple)]
    pub format: Format,
    /// Give up after this many seconds (retries and redirects included).
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: u64,
    /// TLS: dial the nodes over TLS, verifying them against the certificate authorities in
    /// this PEM file (as etcdctl's --cacert).
    #[arg(long)]
    pub cacert: Option<PathBuf>,
    /// TLS: this client's certificate (PEM), for nodes that require one (client_cert_auth).
    #[arg(long, requires_all = ["client_key", "cacert"])]
    pub cert: Option<PathBuf>,
    /// TLS: the private key of --cert (PEM).
    #[arg(long = "key", id = "client_key", requires_all = ["cert", "cacert"])]
    pub client_key: Option<PathBuf>,
    /// The etcd user to act as on a cluster with authentication enabled, as NAME:PASSWORD, or
    /// NAME with the password in the KEEL_PASSWORD environment variable (as etcdctl's --user).
    #[arg(long, value_name = "NAME[:PASSWORD]")]
    pub user: Option<String>,
}

impl ClientArgs {
    /// The credentials of `--user` (the password after the first `:`, else from
    /// `KEEL_PASSWORD`); `None` without `--user`.
    pub fn credentials(&self) -> Result<Option<keel::client::Credentials>, String> {
        let Some(user) = &self.user else { return Ok(None) };
        let (name, password) = match user.split_once(':') {
            Some((name, password)) => (name.to_string(), password.to_string()),
            None => {
                let password = std::env::var("KEEL_PASSWORD").map_err(|_| {
                    format!("--user {user} names no password: give --user {user}:PASSWORD or set KEEL_PASSWORD")
                })?;
                (user.clone(), password)
            }
        };
        if name.is_empty() {
            return Err("--user needs a user name before the ':'".into());
        }
        Ok(Some(keel::client::Credentials { user: name, password }))
    }

    /// The TLS settings of `--cacert`, `--cert` and `--key`; `None` without `--cacert`.
    pub fn tls(&self) -> Result<Option<keel::tls::ClientTls>, keel::tls::TlsError> {
        match &self.cacert {
            Some(ca) => {
                keel::tls::ClientTls::from_files(ca, self.cert.as_deref(), self.client_key.as_deref()).map(Some)
            }
            None if self.cert.is_some() || self.client_key.is_some() => Err(keel::tls::TlsError::NoTrustedCa),
            None => Ok(None),
        }
    }
}

/// Output formats.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// For people.
    Simple,
    /// One JSON document (one per line for `watch`), for scripts.
    Json,
}

/// `--consistency` values.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConsistencyArg {
    /// Confirmed by a quorum: sees every acknowledged write.
    Linearizable,
    /// Served by the leader under its lease (when the cluster enables leases).
    Lease,
    /// Served by any node from its own state: may be stale.
    Eventual,
}

/// Runs the command line; returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Node(args) => node::run_node(*args),
        Command::Dev(args) => node::run_dev(args),
        Command::Bench(args) => bench::run(*args),
        command => commands::run(command),
    }
}

#[cfg(test)]
#[path = "cli_tests.rs"]
mod tests;
