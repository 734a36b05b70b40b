//! The storage worker: owns the node's [`Storage`] and carries out its operations in the order
//! the driver issued them, so that the driver never blocks on a sync while it replicates.
//!
//! Group commit: the worker drains every queued operation, issues the log writes, and then syncs
//! once, reporting the last durable log id back to the driver (which calls
//! `RaftNode::persisted`). Hard-state writes, snapshot installations and compactions are durable
//! when their acknowledgement arrives. A storage error is fatal: the worker reports it and stops,
//! because retrying a failed fsync can silently lose data.
//!
//! Bounds, and why they cannot deadlock: the driver queues operations on a channel of
//! [`OPERATIONS_QUEUED_MAX`]; when it is full the driver waits for room (backpressure: a disk that
//! falls that far behind slows the node down instead of queueing without bound). The worker
//! reports back through a `watch` channel holding only its latest [`WorkerState`] (durable log
//! ids coalesce: the latest covers the earlier ones), so it never waits for the driver, and the
//! driver waiting for the worker always ends.
//!
//! In production the worker is an OS thread (fjall blocks); under `--cfg madsim` it is a task,
//! since the simulated storage never blocks and madsim forbids OS threads, and it waits
//! `Storage::sync_delay` of virtual time before each group (the simulation's slow disks).

use std::sync::Arc;

use keel_core::{HardState, LogId, LogWrite, Snapshot};
use tokio::sync::{mpsc, oneshot, watch};

use crate::clock::Clock;

use crate::storage::{Storage, StorageError};

/// Most operations carried out before one sync (bounds the latency of a group commit).
const GROUP_OPERATIONS_MAX: usize = 1_024;

/// Operations queued for the worker at most; the driver waits for room beyond.
pub const OPERATIONS_QUEUED_MAX: usize = 4_096;

/// What the worker reports to the driver on its own: only the latest state is kept.
#[derive(Debug, Default)]
pub enum WorkerState {
    /// Nothing made durable since the start.
    #[default]
    Started,
    /// Every log write issued before the last sync is durable up to this log id.
    Persisted(LogId),
    /// Storage failed; the node must stop.
    Failed(StorageError),
}

/// The worker's side of the report channel.
type Reports = watch::Sender<WorkerState>;

enum Operation {
    HardState(HardState, oneshot::Sender<Result<(), String>>),
    Append(LogWrite),
    Install(Snapshot, oneshot::Sender<Result<(), String>>),
    Compact(Snapshot),
}

/// The driver's handle on the worker.
pub struct StorageWorker {
    operations: mpsc::Sender<Operation>,
}

impl StorageWorker {
    /// Starts the worker; its events arrive on the returned receiver.
    /// Sync latency is measured on `clock` (the runtime's clock port).
    pub fn start(storage: Box<dyn Storage + Send>, clock: Arc<dyn Clock>) -> (Self, watch::Receiver<WorkerState>) {
        let (operations, receiver) = mpsc::channel(OPERATIONS_QUEUED_MAX);
        let (reports, reports_rx) = watch::channel(WorkerState::Started);
        spawn_worker(storage, receiver, reports, clock);
        (Self { operations }, reports_rx)
    }

    /// Writes and syncs the hard state (and everything issued before it). The error is the
    /// storage failure's message; the node must stop.
    pub async fn save_hard_state(&self, hard_state: HardState) -> Result<(), String> {
        let (reply, done) = oneshot::channel();
        self.send(Operation::HardState(hard_state, reply)).await?;
        done.await.map_err(|_| stopped())?
    }

    /// Installs a snapshot received from the leader, durably.
    pub async fn install_snapshot(&self, snapshot: Snapshot) -> Result<(), String> {
        let (reply, done) = oneshot::channel();
        self.send(Operation::Install(snapshot, reply)).await?;
        done.await.map_err(|_| stopped())?
    }

    /// Queues a log write, waiting while the queue is full; its durability is reported as
    /// [`WorkerState::Persisted`].
    pub async fn append(&self, write: LogWrite) -> Result<(), String> {
        self.send(Operation::Append(write)).await
    }

    /// Queues a compaction after `snapshot_taken`, waiting while the queue is full (failures
    /// arrive as [`WorkerState::Failed`]).
    pub async fn compact(&self, snapshot: Snapshot) -> Result<(), String> {
        self.send(Operation::Compact(snapshot)).await
    }

    async fn send(&self, operation: Operation) -> Result<(), String> {
        self.operations.send(operation).await.map_err(|_| stopped())
    }
}

fn stopped() -> String {
    "the storage worker has stopped after an earlier storage failure".to_string()
}

/// Carries out a group of operations, then syncs once if any log write was issued.
fn run_group(storage: &mut dyn Storage, group: Vec<Operation>, reports: &Reports, clock: &dyn Clock) -> bool {
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
            Operation::Compact(snapshot) => {
                let started_us = clock.now_us();
                let result = storage.compact(&snapshot);
                let elapsed_us = clock.now_us().saturating_sub(started_us);
                crate::metrics::record_seconds(crate::metrics::LOG_COMPACTION_SECONDS, elapsed_us);
                result
            }
        };
        if let Err(error) = result {
            reports.send_replace(WorkerState::Failed(error));
            return false;
        }
    }
    if appended > 0 || storage.has_unsynced_writes() {
        let started_us = clock.now_us();
        let synced = storage.sync();
        let elapsed_us = clock.now_us().saturating_sub(started_us);
        crate::metrics::record_seconds(crate::metrics::SYNC_LATENCY_SECONDS, elapsed_us);
        metrics::histogram!(crate::metrics::SYNC_BATCH_WRITES).record(appended as f64);
        match synced {
            Ok(log_id) => {
                reports.send_replace(WorkerState::Persisted(log_id));
            }
            Err(error) => {
                reports.send_replace(WorkerState::Failed(error));
                return false;
            }
        }
    }
    true
}

fn drain(first: Operation, receiver: &mut mpsc::Receiver<Operation>) -> Vec<Operation> {
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
    mut receiver: mpsc::Receiver<Operation>,
    reports: Reports,
    clock: Arc<dyn Clock>,
) {
    let thread_reports = reports.clone();
    let spawned = std::thread::Builder::new().name("keel-storage".into()).spawn(move || {
        while let Some(first) = receiver.blocking_recv() {
            let group = drain(first, &mut receiver);
            if !run_group(storage.as_mut(), group, &thread_reports, clock.as_ref()) {
                break;
            }
        }
    });
    if let Err(error) = spawned {
        let reason = format!("cannot start the storage thread: {error}");
        reports.send_replace(WorkerState::Failed(StorageError::InvalidRequest(reason)));
    }
}

#[cfg(madsim)]
fn spawn_worker(
    mut storage: Box<dyn Storage + Send>,
    mut receiver: mpsc::Receiver<Operation>,
    reports: Reports,
    clock: Arc<dyn Clock>,
) {
    tokio::spawn(async move {
        while let Some(first) = receiver.recv().await {
            // A slow simulated disk: the group waits (and grows) before it is written and synced.
            let delay = storage.sync_delay();
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let group = drain(first, &mut receiver);
            if !run_group(storage.as_mut(), group, &reports, clock.as_ref()) {
                break;
            }
        }
    });
}

#[cfg(all(test, not(madsim)))]
mod tests {
    use keel_core::{Entry, EntryPayload};

    use super::*;
    use crate::clock::SystemClock;
    use crate::storage::MemoryStorage;

    fn write(index: u64) -> LogWrite {
        let entry = Entry { log_id: LogId::new(1, index), payload: EntryPayload::Noop };
        LogWrite { first_index: index, entries: vec![entry] }
    }

    /// More writes than the queue holds: the sender waits for room instead of failing, the
    /// worker never waits for the reader of its reports, and the last report covers every write.
    #[tokio::test]
    async fn a_full_queue_makes_the_sender_wait_and_reports_coalesce() {
        let mut storage = MemoryStorage::new();
        storage.load().expect("an empty disk loads");
        let (worker, mut reports) = StorageWorker::start(Box::new(storage), SystemClock::new());
        let last = (OPERATIONS_QUEUED_MAX * 2 + 7) as u64;
        for index in 1..=last {
            worker.append(write(index)).await.expect("queued, after waiting for room if needed");
        }
        loop {
            if let WorkerState::Persisted(log_id) = &*reports.borrow_and_update() {
                if log_id.index == last {
                    break;
                }
            }
            reports.changed().await.expect("the worker keeps running");
        }
    }
}
