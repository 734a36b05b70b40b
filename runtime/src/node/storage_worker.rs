//! The storage worker: owns the node's [`Storage`] and carries out its operations in the order
//! the driver issued them, so that the driver never blocks on a sync while it replicates.
//!
//! Group commit: the worker drains every queued operation, issues the log writes, and then syncs
//! once, reporting the last durable log id back to the driver (which calls
//! `RaftNode::persisted`). Hard-state writes, snapshot installations and compactions are durable
//! when their acknowledgement arrives. A storage error is fatal: the worker reports it and stops,
//! because retrying a failed fsync can silently lose data.
//!
//! In production the worker is an OS thread (fjall blocks); under `--cfg madsim` it is a task,
//! since the simulated storage never blocks and madsim forbids OS threads.

use std::sync::Arc;

use keel_core::{HardState, LogId, LogWrite, Snapshot};
use tokio::sync::{mpsc, oneshot};

use crate::clock::Clock;

use crate::storage::{Storage, StorageError};

/// Most operations carried out before one sync (bounds the latency of a group commit).
const GROUP_OPERATIONS_MAX: usize = 1_024;

/// What the worker reports to the driver on its own.
#[derive(Debug)]
pub enum WorkerEvent {
    /// Every log write issued so far is durable up to this log id.
    Persisted(LogId),
    /// Storage failed; the node must stop.
    Failed(StorageError),
}

enum Operation {
    HardState(HardState, oneshot::Sender<Result<(), String>>),
    Append(LogWrite),
    Install(Snapshot, oneshot::Sender<Result<(), String>>),
    Compact(Snapshot),
}

/// The driver's handle on the worker.
pub struct StorageWorker {
    operations: mpsc::UnboundedSender<Operation>,
}

impl StorageWorker {
    /// Starts the worker; its events arrive on the returned receiver.
    /// Sync latency is measured on `clock` (the runtime's clock port).
    pub fn start(
        storage: Box<dyn Storage + Send>,
        clock: Arc<dyn Clock>,
    ) -> (Self, mpsc::UnboundedReceiver<WorkerEvent>) {
        let (operations, receiver) = mpsc::unbounded_channel();
        let (events, events_rx) = mpsc::unbounded_channel();
        spawn_worker(storage, receiver, events, clock);
        (Self { operations }, events_rx)
    }

    /// Writes and syncs the hard state (and everything issued before it). The error is the
    /// storage failure's message; the node must stop.
    pub async fn save_hard_state(&self, hard_state: HardState) -> Result<(), String> {
        let (reply, done) = oneshot::channel();
        self.send(Operation::HardState(hard_state, reply))?;
        done.await.map_err(|_| stopped())?
    }

    /// Installs a snapshot received from the leader, durably.
    pub async fn install_snapshot(&self, snapshot: Snapshot) -> Result<(), String> {
        let (reply, done) = oneshot::channel();
        self.send(Operation::Install(snapshot, reply))?;
        done.await.map_err(|_| stopped())?
    }

    /// Queues a log write; its durability is reported as [`WorkerEvent::Persisted`].
    pub fn append(&self, write: LogWrite) -> Result<(), String> {
        self.send(Operation::Append(write))
    }

    /// Queues a compaction after `snapshot_taken` (failures arrive as [`WorkerEvent::Failed`]).
    pub fn compact(&self, snapshot: Snapshot) -> Result<(), String> {
        self.send(Operation::Compact(snapshot))
    }

    fn send(&self, operation: Operation) -> Result<(), String> {
        self.operations.send(operation).map_err(|_| stopped())
    }
}

fn stopped() -> String {
    "the storage worker has stopped after an earlier storage failure".to_string()
}

/// Carries out a group of operations, then syncs once if any log write was issued.
fn run_group(
    storage: &mut dyn Storage,
    group: Vec<Operation>,
    events: &mpsc::UnboundedSender<WorkerEvent>,
    clock: &dyn Clock,
) -> bool {
    let mut appended = 0u64;
    for operation in group {
        let result = match operation {
            Operation::HardState(hard_state, reply) => {
                let result = storage.save_hard_state(hard_state);
                let _ = reply.send(result.as_ref().map(|_| ()).map_err(ToString::to_string));
                result
            }
            Operation::Append(write) => {
                appended += 1;
                storage.append(&write)
            }
            Operation::Install(snapshot, reply) => {
                let result = storage.install_snapshot(&snapshot);
                let _ = reply.send(result.as_ref().map(|_| ()).map_err(ToString::to_string));
                result
            }
            Operation::Compact(snapshot) => storage.compact(&snapshot),
        };
        if let Err(error) = result {
            let _ = events.send(WorkerEvent::Failed(error));
            return false;
        }
    }
    if appended > 0 || storage.has_unsynced_writes() {
        let started_us = clock.now_us();
        let synced = storage.sync();
        let elapsed_us = clock.now_us().saturating_sub(started_us);
        metrics::histogram!(crate::metrics::SYNC_LATENCY_SECONDS).record(elapsed_us as f64 / 1e6);
        metrics::histogram!(crate::metrics::SYNC_BATCH_WRITES).record(appended as f64);
        match synced {
            Ok(log_id) => {
                let _ = events.send(WorkerEvent::Persisted(log_id));
            }
            Err(error) => {
                let _ = events.send(WorkerEvent::Failed(error));
                return false;
            }
        }
    }
    true
}

fn drain(first: Operation, receiver: &mut mpsc::UnboundedReceiver<Operation>) -> Vec<Operation> {
    let mut group = vec![first];
    while group.len() < GROUP_OPERATIONS_MAX {
        match receiver.try_recv() {
            Ok(operation) => group.push(operation),
            Err(_) => break,
        }
    }
    group
}

#[cfg(not(madsim))]
fn spawn_worker(
    mut storage: Box<dyn Storage + Send>,
    mut receiver: mpsc::UnboundedReceiver<Operation>,
    events: mpsc::UnboundedSender<WorkerEvent>,
    clock: Arc<dyn Clock>,
) {
    let thread_events = events.clone();
    let spawned = std::thread::Builder::new().name("keel-storage".into()).spawn(move || {
        while let Some(first) = receiver.blocking_recv() {
            let group = drain(first, &mut receiver);
            if !run_group(storage.as_mut(), group, &thread_events, clock.as_ref()) {
                break;
            }
        }
    });
    if let Err(error) = spawned {
        let reason = format!("cannot start the storage thread: {error}");
        let _ = events.send(WorkerEvent::Failed(StorageError::InvalidRequest(reason)));
    }
}

#[cfg(madsim)]
fn spawn_worker(
    mut storage: Box<dyn Storage + Send>,
    mut receiver: mpsc::UnboundedReceiver<Operation>,
    events: mpsc::UnboundedSender<WorkerEvent>,
    clock: Arc<dyn Clock>,
) {
    tokio::spawn(async move {
        while let Some(first) = receiver.recv().await {
            let group = drain(first, &mut receiver);
            if !run_group(storage.as_mut(), group, &events, clock.as_ref()) {
                break;
            }
        }
    });
}
