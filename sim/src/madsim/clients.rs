//! Simulated clients: each runs on its own madsim machine with the real Rust client
//! (`keel::client::KeelClient`, over simulated gRPC), issues puts, compare-and-swaps, deletes and
//! reads (linearizable and lease) on a few contended keys, and records every operation in a
//! shared history for the linearizability checker. A share of the puts, compare-and-swaps,
//! deletes, linearizable reads and write-once keys goes through the etcd v3 API of a node drawn
//! at random instead ([`super::etcd_clients`]), into the same history and on the same keys.
//!
//! Outcomes map onto the history as the client library defines them: a write is `fail` only
//! when the library says it was certainly not applied (the node was never reached, or the
//! cluster refused it with a code that means so); a compare-and-swap that found another value
//! is a `fail` too (it was evaluated); every other write failure (outcome unknown, time-out,
//! broken connection) is `info`, pending to the end. A read that fails had no effect: `fail`.
//!
//! Each client also writes keys of its own, once each, under [`DURABLE_PREFIX`]: after the heal
//! the scenario reads every acknowledged one back.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use keel::client::{ClientError, ClientOptions, Consistency, KeelClient};
use keel::proto::error::ErrorCode;
use keel_core::Rng;
use tokio::time::Instant;

use super::etcd_clients::{CallFailure, EtcdClients};
use crate::history::{EventType, Function, HistoryEvent, ProcessId};

/// Percent of the operations that can go through the etcd API which do.
const ETCD_SHARE_PERCENT: u64 = 25;

/// Prefix of the write-once keys whose acknowledged values must all survive.
pub const DURABLE_PREFIX: &str = "/durable/";

/// The contended keys every client reads and writes.
pub fn register_keys(count: usize) -> Vec<String> {
    (0..count).map(|k| format!("/reg/{k}")).collect()
}

/// The history of a run, in the order events happened (madsim runs one task at a time), with
/// virtual times measured from the scenario's start.
#[derive(Clone)]
pub struct Recorder {
    events: Arc<Mutex<Vec<HistoryEvent>>>,
    start: Instant,
    /// etcd API calls made, and those answered: shows that the etcd share of the workload ran.
    etcd_calls: Arc<[AtomicUsize; 2]>,
}

impl Recorder {
    /// An empty history whose times count from now.
    pub fn new() -> Self {
        Self { events: Arc::default(), start: Instant::now(), etcd_calls: Arc::default() }
    }

    /// Counts one etcd API call, and whether it was answered.
    pub fn count_etcd_call(&self, answered: bool) {
        self.etcd_calls[0].fetch_add(1, Ordering::Relaxed);
        if answered {
            self.etcd_calls[1].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The etcd API calls made so far, and how many of them were answered.
    pub fn etcd_calls(&self) -> (usize, usize) {
        (self.etcd_calls[0].load(Ordering::Relaxed), self.etcd_calls[1].load(Ordering::Relaxed))
    }

    /// Appends one event stamped with the current virtual time.
    pub fn record(
        &self,
        process: ProcessId,
        event_type: EventType,
        function: &Function,
        key: &str,
        read: Option<String>,
    ) {
        let time_ns = u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let event = HistoryEvent {
            process,
            event_type,
            function: function.clone(),
            key: key.to_owned(),
            read_value: read,
            time_ns: Some(time_ns),
        };
        self.lock().push(event);
    }

    /// Removes the pending invocation of `process` (its last event): for an operation known to
    /// have had no effect and no result, which constrains nothing.
    pub fn retract(&self, process: ProcessId) {
        let mut events = self.lock();
        if let Some(last) = events.iter().rposition(|event| event.process == process) {
            if events[last].event_type == EventType::Invoke {
                events.remove(last);
            }
        }
    }

    /// A copy of the history so far.
    pub fn snapshot(&self) -> Vec<HistoryEvent> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<HistoryEvent>> {
        self.events.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

/// Client options for the simulation: deadlines short enough that an operation stuck behind a
/// fault ends (as unknown) well within the heal phase, with lease and batch variants. The
/// clients log in as [`super::etcd_auth::SIM_USER`] on the seeds that enable etcd
/// authentication (`etcd_auth.rs`); elsewhere no node asks them to, and they never do.
pub fn client_options(client_id: u32, batch_stream: bool) -> ClientOptions {
    ClientOptions {
        credentials: Some(super::etcd_auth::sim_credentials()),
        client_id,
        connect_timeout: Duration::from_millis(500),
        request_timeout: Duration::from_millis(3_000),
        deadline: Duration::from_millis(6_000),
        max_attempts: 20,
        backoff_min: Duration::from_millis(20),
        backoff_max: Duration::from_millis(400),
        batch_stream,
        ..ClientOptions::default()
    }
}

/// True when the client library guarantees that a failed write was not applied: it never
/// reached a node, or the cluster refused it before proposing it (or saw its slot taken). A write
/// given up after retries was only ever retried after such failures. `SHUTTING_DOWN` means "not
/// applied" too: a stopping node answers the writes it had already proposed `OUTCOME_UNKNOWN`
/// (they may still commit under the next leader), and the simulation holds it to that.
pub fn write_certainly_failed(error: &ClientError) -> bool {
    use ErrorCode as C;
    match error {
        ClientError::GaveUp { .. } | ClientError::Unreachable { .. } | ClientError::InvalidRequest(_) => true,
        ClientError::Server { code, .. } => matches!(
            code,
            C::NotLeader
                | C::LeaderUnknown
                | C::ProposalDropped
                | C::Overloaded
                | C::MembershipChangeInProgress
                | C::InvalidArgument
                | C::KeyTooLarge
                | C::ValueTooLarge
                | C::RequestTooLarge
                | C::ShuttingDown
                | C::Unauthenticated
                | C::PermissionDenied
        ),
        _ => false,
    }
}

/// One client process and its workload.
pub struct SimClient {
    /// The history process id (operations of one process never overlap).
    pub process: ProcessId,
    /// The client library instance, over every node (it follows leader hints).
    pub client: KeelClient,
    /// One client per node that knows only that node: reads through them exercise followers'
    /// read paths (forwarded ReadIndex, lease refusals) instead of always the leader's.
    pub pinned: Vec<KeelClient>,
    /// The same client's etcd v3 API connections.
    pub etcd: EtcdClients,
    /// The contended keys.
    pub keys: Vec<String>,
    /// Where operations are recorded.
    pub recorder: Recorder,
    /// Draws the operations.
    pub rng: Rng,
    /// Durable keys this client wrote and had acknowledged, with their values.
    pub acknowledged: BTreeMap<String, String>,
    /// The next sequence number of a value or durable key written by this client.
    pub sequence: u64,
}

impl SimClient {
    /// Runs operations until `stop` is set, then returns the acknowledged durable keys.
    pub async fn run(mut self, stop: Arc<AtomicBool>) -> BTreeMap<String, String> {
        while !stop.load(Ordering::Relaxed) {
            self.one_operation().await;
            let pause = self.rng.range(0, 30);
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
        self.acknowledged
    }

    fn next_value(&mut self) -> String {
        self.sequence += 1;
        format!("p{}-{}", self.process, self.sequence)
    }

    async fn one_operation(&mut self) {
        let key = self.keys[self.rng.range(0, self.keys.len() as u64) as usize].clone();
        let via_etcd = self.rng.range(0, 100) < ETCD_SHARE_PERCENT;
        match self.rng.range(0, 100) {
            0..=24 => {
                let value = self.next_value();
                self.write(key, Some(value), via_etcd).await;
            }
            25..=39 => {
                let expected = self.current_guess(&key).await;
                let new = self.next_value();
                self.cas(key, expected, new, via_etcd).await;
            }
            40..=44 => {
                self.write(key, None, via_etcd).await;
            }
            45..=69 if via_etcd => self.etcd_read(key).await,
            45..=69 => self.read(key, Consistency::Linearizable).await,
            70..=89 => self.read(key, Consistency::Lease).await,
            _ => self.durable_write(via_etcd).await,
        }
    }

    /// The node an etcd call goes to: any of them, as etcd clients may use every member.
    fn etcd_node(&mut self) -> usize {
        self.rng.range(0, self.etcd.nodes() as u64) as usize
    }

    /// The expected value of a compare-and-swap: usually the value just read (so that many
    /// succeed), sometimes absent or made up (so that some fail).
    async fn current_guess(&mut self, key: &str) -> Option<String> {
        match self.rng.range(0, 10) {
            0 => None,
            1 => Some("never-written".to_owned()),
            _ => match self.client.get([key.to_owned()], Consistency::Linearizable).await {
                Ok(found) => found.into_iter().next().map(|kv| String::from_utf8_lossy(&kv.value).into_owned()),
                Err(_) => None,
            },
        }
    }

    async fn write(&mut self, key: String, value: Option<String>, via_etcd: bool) -> EventType {
        let function = Function::Write(value.clone());
        self.recorder.record(self.process, EventType::Invoke, &function, &key, None);
        let outcome = if via_etcd {
            let node = self.etcd_node();
            let written = self.etcd.write(node, &key, value.as_deref()).await;
            self.recorder.count_etcd_call(written.is_ok());
            match written {
                Ok(()) => EventType::Ok,
                Err(CallFailure::NoEffect) => EventType::Fail,
                Err(CallFailure::Unknown) => EventType::Info,
            }
        } else {
            let result = match &value {
                Some(value) => self.client.put(key.clone(), value.clone(), None).await,
                None => self.client.delete(key.clone()).await,
            };
            match result {
                Ok(()) => EventType::Ok,
                Err(error) if write_certainly_failed(&error) => EventType::Fail,
                Err(_) => EventType::Info,
            }
        };
        self.recorder.record(self.process, outcome, &function, &key, None);
        outcome
    }

    async fn cas(&mut self, key: String, expected: Option<String>, new: String, via_etcd: bool) {
        let function = Function::Cas { expected: expected.clone(), new: new.clone() };
        self.recorder.record(self.process, EventType::Invoke, &function, &key, None);
        let result =
            if via_etcd {
                let node = self.etcd_node();
                let swapped = self.etcd.compare_and_swap(node, &key, expected.as_deref(), &new).await;
                self.recorder.count_etcd_call(swapped.is_ok());
                swapped
            } else {
                let swapped = self.client.cas(key.clone(), expected, new).await;
                swapped.map_err(|error| {
                    if write_certainly_failed(&error) {
                        CallFailure::NoEffect
                    } else {
                        CallFailure::Unknown
                    }
                })
            };
        let outcome = match result {
            Ok(true) => EventType::Ok,
            Ok(false) => EventType::Fail,
            Err(CallFailure::NoEffect) => {
                // Never evaluated. A CAS `fail` means "evaluated, another value found", which
                // this is not; an operation without any effect constrains nothing: drop it.
                self.recorder.retract(self.process);
                return;
            }
            Err(CallFailure::Unknown) => EventType::Info,
        };
        self.recorder.record(self.process, outcome, &function, &key, None);
    }

    /// A linearizable etcd Range of `key` through a node drawn at random.
    async fn etcd_read(&mut self, key: String) {
        let function = Function::Read;
        let node = self.etcd_node();
        self.recorder.record(self.process, EventType::Invoke, &function, &key, None);
        let read = self.etcd.read(node, &key).await;
        self.recorder.count_etcd_call(read.is_ok());
        match read {
            Ok(value) => self.recorder.record(self.process, EventType::Ok, &function, &key, value),
            Err(_) => self.recorder.record(self.process, EventType::Fail, &function, &key, None),
        }
    }

    async fn read(&mut self, key: String, consistency: Consistency) {
        let function = Function::Read;
        let choice = self.rng.range(0, self.pinned.len() as u64 * 2) as usize;
        let client = self.pinned.get(choice).unwrap_or(&self.client);
        self.recorder.record(self.process, EventType::Invoke, &function, &key, None);
        match client.get([key.clone()], consistency).await {
            Ok(found) => {
                let value = found
                    .into_iter()
                    .find(|kv| kv.key.as_ref() == key.as_bytes())
                    .map(|kv| String::from_utf8_lossy(&kv.value).into_owned());
                self.recorder.record(self.process, EventType::Ok, &function, &key, value);
            }
            Err(_) => self.recorder.record(self.process, EventType::Fail, &function, &key, None),
        }
    }

    async fn durable_write(&mut self, via_etcd: bool) {
        self.sequence += 1;
        let key = format!("{DURABLE_PREFIX}{}/{}", self.process, self.sequence);
        let value = format!("v{}", self.sequence);
        if self.write(key.clone(), Some(value.clone()), via_etcd).await == EventType::Ok {
            self.acknowledged.insert(key, value);
        }
    }
}
