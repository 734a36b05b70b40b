//! The closed-loop clients of `keel bench` and what they measure: each client sends one request,
//! waits for its answer and sends the next, recording the latency of every request answered
//! while the shared phase is `MEASURE` into its own [`Tally`]; the coordinator merges them.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use keel::client::{ClientError, Consistency, KeelClient};

use super::etcd::EtcdLoad;
use super::{ErrorCount, Rng, LATENCY_MAX_US};

/// Which operation a request was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Op {
    Read,
    Write,
}

/// Phases shared by the clients.
pub(super) const WARMUP: u8 = 0;
pub(super) const MEASURE: u8 = 1;
pub(super) const STOP: u8 = 2;

/// State shared by the clients and the coordinator.
pub(super) struct Shared {
    pub(super) phase: AtomicU8,
    /// Measured requests started (bounded by `limit` in `--requests` mode).
    pub(super) started: AtomicU64,
    /// Measured requests answered, and those that failed (for the progress bar).
    pub(super) answered: AtomicU64,
    pub(super) failed: AtomicU64,
    pub(super) limit: Option<u64>,
}

/// What every client needs to build requests.
pub(super) struct Workset {
    pub(super) keys: Vec<Bytes>,
    pub(super) value: Bytes,
    pub(super) read_ratio: f64,
    pub(super) consistency: Consistency,
}

/// An empty latency histogram, in microseconds.
pub(super) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_MAX_US, 3).expect("valid histogram bounds")
}

/// What some clients measured.
pub struct Tally {
    pub(super) reads: Histogram<u64>,
    pub(super) writes: Histogram<u64>,
    pub(super) errors: BTreeMap<String, ErrorCount>,
}

impl Tally {
    pub(super) fn new() -> Self {
        Self { reads: histogram(), writes: histogram(), errors: BTreeMap::new() }
    }

    pub(super) fn record(&mut self, op: Op, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        match op {
            Op::Read => self.reads.saturating_record(micros),
            Op::Write => self.writes.saturating_record(micros),
        }
    }

    pub(super) fn fail(&mut self, error: &ClientError) {
        let entry = self
            .errors
            .entry(error_label(error))
            .or_insert_with(|| ErrorCount { count: 0, example: error.to_string() });
        entry.count += 1;
    }

    pub(super) fn merge(&mut self, other: Tally) {
        // Same bounds: adding cannot fail.
        let _ = self.reads.add(&other.reads);
        let _ = self.writes.add(&other.writes);
        for (label, count) in other.errors {
            let entry = self.errors.entry(label).or_insert(ErrorCount { count: 0, example: count.example });
            entry.count += count.count;
        }
    }
}

/// The name a failure is counted under: the cluster's error code without its `ERROR_CODE_`
/// prefix, or what went wrong on the way.
pub fn error_label(error: &ClientError) -> String {
    if let Some(code) = error.code() {
        return code.as_str_name().trim_start_matches("ERROR_CODE_").to_owned();
    }
    match error.root() {
        ClientError::Unreachable { .. } => "UNREACHABLE".into(),
        ClientError::Rpc { code, .. } => format!("GRPC_{code:?}").to_uppercase(),
        ClientError::UnknownCode { code, .. } => format!("UNKNOWN_CODE_{code}"),
        ClientError::Protocol { .. } => "PROTOCOL".into(),
        ClientError::InvalidRequest(_) => "INVALID_REQUEST".into(),
        ClientError::InvalidEndpoint { .. } | ClientError::NoEndpoints => "INVALID_ENDPOINT".into(),
        ClientError::Server { .. }
        | ClientError::WatchCanceled { .. }
        | ClientError::OutcomeUnknown { .. }
        | ClientError::GaveUp { .. } => "OTHER".into(),
    }
}

/// How one client sends its requests: through the native client library, or through the etcd
/// v3 API on one of the connections of an [`EtcdLoad`].
#[derive(Clone)]
pub(super) enum Sender {
    /// The native API (leader redirection, `Batch` streams or unary calls).
    Native(Arc<KeelClient>),
    /// The etcd v3 API, on this connection.
    Etcd(Arc<EtcdLoad>, usize),
}

impl Sender {
    /// Writes `value` at `key`.
    pub(super) async fn put(&self, key: Bytes, value: Bytes) -> Result<(), ClientError> {
        match self {
            Self::Native(client) => client.put(key, value, None).await,
            Self::Etcd(load, connection) => load.put(*connection, key, value).await,
        }
    }

    /// Reads `key`; over the etcd API, an eventual read is a serializable `Range` and any other
    /// a linearizable one (the plan refuses lease reads there).
    pub(super) async fn get(&self, key: Bytes, consistency: Consistency) -> Result<(), ClientError> {
        match self {
            Self::Native(client) => client.get([key], consistency).await.map(drop),
            Self::Etcd(load, connection) => {
                load.get(*connection, key, matches!(consistency, Consistency::Eventual)).await
            }
        }
    }
}

/// One closed-loop client: sends requests until the phase says stop (or the request budget is
/// spent), timing those sent while measuring.
pub(super) async fn client_loop(index: usize, client: Sender, shared: Arc<Shared>, work: Arc<Workset>) -> Tally {
    let mut rng = Rng::new(0x5eed_0000 ^ index as u64);
    let mut tally = Tally::new();
    let keys = work.keys.len() as u64;
    loop {
        let measured = match shared.phase.load(Ordering::Acquire) {
            WARMUP => false,
            MEASURE => {
                if let Some(limit) = shared.limit {
                    if shared.started.fetch_add(1, Ordering::Relaxed) >= limit {
                        break;
                    }
                }
                true
            }
            _ => break,
        };
        let key = work.keys[rng.below(keys) as usize].clone();
        let op = if work.read_ratio > 0.0 && (work.read_ratio >= 1.0 || rng.unit() < work.read_ratio) {
            Op::Read
        } else {
            Op::Write
        };
        let start = Instant::now();
        let result = match op {
            Op::Read => client.get(key, work.consistency).await,
            Op::Write => client.put(key, work.value.clone()).await,
        };
        let latency = start.elapsed();
        if !measured {
            continue;
        }
        match result {
            Ok(()) => tally.record(op, latency),
            Err(error) => {
                tally.fail(&error);
                shared.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
        shared.answered.fetch_add(1, Ordering::Relaxed);
    }
    tally
}
