//! The simulated clients and the operations they invoke: puts, TTL puts, compare-and-swaps,
//! deletes, reads under each consistency policy, prefix scans and watches, and (a share of
//! [`ETCD_SHARE_PERCENT`] percent, drawn by `etcd_workload.rs`) etcd v3 operations. Each client
//! has at most one operation pending; the mix, keys and values come from the workload's own stream.
//!
//! Data flow: the simulator asks [`Workload::next_operation`] for a client's next operation when
//! the client is idle and its think time has passed; `clients.rs` carries the operation to the
//! nodes (following leader hints) and reports its completion; the history recorder turns
//! invocations and completions into [`crate::history::HistoryEvent`]s.

use super::etcd_workload::{EtcdOperation, EtcdWorkload, ETCD_SHARE_PERCENT};
use super::rng::SimRng;
use super::scenario::Scenario;
use crate::history::ProcessId;

/// How a read is served.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ReadKind {
    /// ReadIndex through the leader.
    Linearizable,
    /// From the leader's lease when it holds one.
    Lease,
    /// From any node's local store, no confirmation: may be stale.
    Eventual,
}

/// What an operation does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OperationKind {
    /// Set the key; with a time to live when `ttl_ms` is set.
    Put {
        /// The new value.
        value: String,
        /// Time to live, if any.
        ttl_ms: Option<u64>,
    },
    /// Set the key to `new` if it holds `expected` (`None`: if it is absent).
    Cas {
        /// The value the key must hold.
        expected: Option<String>,
        /// The value it gets.
        new: String,
    },
    /// Delete the key.
    Delete,
    /// Read the key.
    Read(ReadKind),
    /// Linearizable scan of every key under the prefix `key`.
    Scan,
    /// Watch the prefix `key` for `duration_ms` from the client's last seen revision.
    Watch {
        /// How long the watch stays open.
        duration_ms: u64,
    },
    /// An etcd v3 operation (`etcd_workload.rs`).
    Etcd(EtcdOperation),
}

/// One client operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    /// Unique across the run.
    pub id: u64,
    /// The client process.
    pub process: ProcessId,
    /// What it does.
    pub kind: OperationKind,
    /// The key (or prefix for scans and watches).
    pub key: String,
    /// True time of the invocation.
    pub invoked_ms: u64,
    /// True time at which the client gives up.
    pub deadline_ms: u64,
}

/// How the workload chooses operations.
#[derive(Debug)]
pub struct Workload {
    rng: SimRng,
    keys: Vec<String>,
    next_operation_id: u64,
    next_value: u64,
    operation_timeout_ms: u64,
    lease_reads: bool,
    /// Operations invoked so far.
    pub invoked: u64,
    /// Operations to invoke in the fault phase.
    pub operation_count: u64,
    /// Last value each client wrote or read per key, as a CAS expectation.
    last_seen: Vec<Vec<Option<String>>>,
    /// The etcd operations' keys and what each client saw of them.
    pub etcd: EtcdWorkload,
}

impl Workload {
    /// The workload of `scenario`, drawing from `rng`.
    pub fn new(scenario: &Scenario, rng: SimRng) -> Self {
        let keys = (0..scenario.key_count).map(|k| format!("k{k}")).collect();
        Self {
            rng,
            keys,
            next_operation_id: 0,
            next_value: 0,
            operation_timeout_ms: scenario.operation_timeout_ms,
            lease_reads: scenario.lease_reads,
            invoked: 0,
            operation_count: scenario.operation_count,
            last_seen: vec![vec![None; scenario.key_count as usize]; scenario.client_count as usize],
            etcd: EtcdWorkload::new(scenario.client_count as usize, scenario.key_count as usize),
        }
    }

    /// Think time before a client's next operation.
    pub fn think_ms(&mut self) -> u64 {
        self.rng.between(0, 15)
    }

    /// Whether the fault phase still wants operations.
    pub fn wants_more(&self) -> bool {
        self.invoked < self.operation_count
    }

    /// Draws the next operation of client `process` (0-based) invoked at `now_ms`.
    pub fn next_operation(&mut self, process: ProcessId, now_ms: u64) -> Operation {
        self.invoked += 1;
        if self.rng.between(0, 99) < ETCD_SHARE_PERCENT {
            let value = self.fresh_value(process);
            let (operation, key) = self.etcd.draw(&mut self.rng, process as usize, value);
            return self.operation(process, OperationKind::Etcd(operation), key, now_ms);
        }
        let key_index = self.rng.index(self.keys.len());
        let mut key = self.keys[key_index].clone();
        let roll = self.rng.between(0, 99);
        let kind = match roll {
            0..=24 => OperationKind::Put { value: self.fresh_value(process), ttl_ms: None },
            25..=31 => {
                OperationKind::Put { value: self.fresh_value(process), ttl_ms: Some(self.rng.between(50, 2_000)) }
            }
            32..=44 => {
                let expected = self.last_seen[process as usize][key_index].clone();
                OperationKind::Cas { expected, new: self.fresh_value(process) }
            }
            45..=51 => OperationKind::Delete,
            52..=71 => OperationKind::Read(ReadKind::Linearizable),
            72..=81 if self.lease_reads => OperationKind::Read(ReadKind::Lease),
            72..=81 => OperationKind::Read(ReadKind::Linearizable),
            82..=89 => OperationKind::Read(ReadKind::Eventual),
            90..=95 => {
                key = if self.rng.coin() { String::new() } else { key };
                OperationKind::Scan
            }
            _ => {
                key = if self.rng.coin() { "k".to_string() } else { key };
                OperationKind::Watch { duration_ms: self.rng.between(50, 1_000) }
            }
        };
        self.operation(process, kind, key, now_ms)
    }

    /// A new operation with the next id and the client deadline.
    fn operation(&mut self, process: ProcessId, kind: OperationKind, key: String, now_ms: u64) -> Operation {
        self.next_operation_id += 1;
        let deadline_ms = now_ms + self.operation_timeout_ms;
        Operation { id: self.next_operation_id, process, kind, key, invoked_ms: now_ms, deadline_ms }
    }

    fn fresh_value(&mut self, process: ProcessId) -> String {
        self.next_value += 1;
        format!("v{process}.{}", self.next_value)
    }

    /// Remembers what client `process` last saw in `key`, for its next compare-and-swap.
    pub fn observe(&mut self, process: ProcessId, key: &str, value: Option<String>) {
        let position = self.keys.iter().position(|k| k == key);
        if let (Some(index), Some(row)) = (position, self.last_seen.get_mut(process as usize)) {
            row[index] = value;
        }
    }

    /// A short retry delay after a refusal.
    pub fn retry_delay_ms(&mut self) -> u64 {
        self.rng.between(2, 20)
    }

    /// A random index in `0..length`, from the workload's stream (client target choice).
    pub fn pick_index(&mut self, length: usize) -> usize {
        self.rng.index(length)
    }
}

impl Workload {
    /// The liveness probe: a plain put of a fresh value, which must succeed once faults heal.
    pub fn probe_operation(&mut self, process: ProcessId, now_ms: u64) -> Operation {
        let kind = OperationKind::Put { value: self.fresh_value(process), ttl_ms: None };
        let key = self.keys[0].clone();
        self.operation(process, kind, key, now_ms)
    }
}
