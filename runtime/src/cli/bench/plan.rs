//! What a `keel bench` run is asked to do: its command-line arguments, and the [`Plan`] they
//! are checked into before anything connects (every error names the flag to change), together
//! with the keys, the value and the small generator that picks keys.

use std::time::Duration;

use bytes::Bytes;
use clap::{Args, ValueEnum};
use keel::client::Consistency;

use crate::cli::{ClientArgs, ConsistencyArg, Format};

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
    pub(super) fn name(self) -> &'static str {
        match self {
            Self::Write => "write",
            Self::Read => "read",
            Self::Mixed => "mixed",
        }
    }

    pub(super) fn reads(self) -> bool {
        self != Self::Write
    }
}

pub(super) fn consistency_name(arg: ConsistencyArg) -> &'static str {
    match arg {
        ConsistencyArg::Linearizable => "linearizable",
        ConsistencyArg::Lease => "lease",
        ConsistencyArg::Eventual => "eventual",
    }
}

pub(super) fn consistency(arg: ConsistencyArg) -> Consistency {
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
    /// TLS of the connections to an existing cluster (`--cacert`, `--cert`, `--key`).
    pub tls: Option<keel::tls::ClientTls>,
    /// The etcd user the load acts as on a cluster with authentication enabled (`--user`).
    pub credentials: Option<keel::client::Credentials>,
}

impl Plan {
    /// Checks the arguments together; the error says what to change.
    pub fn from_args(args: &BenchArgs) -> Result<Self, String> {
        let target = if args.local {
            Target::Local { lease_drift_ppm: args.lease_drift_ppm }
        } else {
            Target::Endpoints(args.client.endpoints.clone())
        };
        let tls = args.client.tls().map_err(|error| error.to_string())?;
        if args.local && tls.is_some() {
            return Err("--local starts a plain-text cluster: give --cacert, --cert and --key with --endpoints".into());
        }
        let credentials = args.client.credentials()?;
        if args.local && credentials.is_some() {
            return Err("--local starts a cluster without authentication: give --user with --endpoints".into());
        }
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
            tls,
            credentials,
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
