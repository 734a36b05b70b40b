//! The standard madsim scenario: a cluster of real nodes, clients recording a history, faults
//! from the seed, then a heal phase and the verdicts.
//!
//! 1. Start the cluster ([`SimCluster`]) and the clients ([`SimClient`]), each client on its own
//!    madsim machine.
//! 2. Inject faults for [`Scenario::fault_ms`] while the clients run.
//! 3. Heal: every fault ends (network healed, paused nodes resumed, killed nodes restarted) and
//!    the clients stop invoking; every pending operation must complete within
//!    [`Scenario::heal_bound_ms`].
//! 4. Read back: a fresh client reads every register key (recorded in the history) and every
//!    acknowledged write-once key, which must hold its value.
//! 5. Verdicts: no node server stopped on its own, no acknowledged write lost, and the history
//!    is linearizable (`crate::check::check_history`).
//!
//! Everything the run did (faults with their virtual times, clock skews, the whole history) is
//! hashed into [`Report::trace_hash`]: the same seed must give the same hash.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ::madsim::runtime::Handle;
use ::madsim::task::JoinHandle;
use keel::client::{ClientError, Consistency, KeelClient};
use keel_core::Rng;
use tokio::time::Instant;

use super::clients::{client_options, register_keys, Recorder, SimClient};
use super::cluster::SimCluster;
use super::etcd_auth;
use super::etcd_clients::{raised_alarms, Credentials, EtcdClients};
use super::faults;
use crate::check::{check_history, write_jsonl, Verdict};
use crate::history::{EventType, Function, HistoryEvent};

/// The shape of a scenario.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scenario {
    /// Keel nodes (3 or 5).
    pub nodes: u32,
    /// Client processes.
    pub clients: u32,
    /// Contended keys.
    pub keys: usize,
    /// Virtual time with faults.
    pub fault_ms: u64,
    /// Virtual time within which every pending operation must end once faults stop.
    pub heal_bound_ms: u64,
    /// Nodes started outside the configuration, for the admin to add, promote and remove.
    pub spare_nodes: u32,
    /// etcd authentication on even seeds (`etcd_auth.rs`): the etcd clients log in, and the
    /// auth table changes among the faults.
    pub authentication: bool,
}

impl Scenario {
    /// The standard scenario: 3 nodes and 2 spares, 5 clients on 4 keys, 10 s of faults
    /// (membership changes and transfers among them, and on even seeds etcd authentication with
    /// changes of the auth table), 20 s to heal.
    pub fn standard() -> Self {
        Self {
            nodes: 3,
            clients: 5,
            keys: 4,
            fault_ms: 10_000,
            heal_bound_ms: 20_000,
            spare_nodes: 2,
            authentication: true,
        }
    }

    /// Like [`Scenario::standard`] with 5 nodes (two may be down at once).
    pub fn five_nodes() -> Self {
        Self { nodes: 5, ..Self::standard() }
    }
}

/// What a run did and found.
#[derive(Clone, Debug)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// The client-visible history, final reads included.
    pub history: Vec<HistoryEvent>,
    /// The faults applied, one line each with its virtual time in milliseconds.
    pub faults: Vec<String>,
    /// Write-once keys acknowledged (all read back).
    pub acknowledged: usize,
    /// Completed operations: `ok`, `fail` and `info` completions.
    pub outcomes: [usize; 3],
    /// Operations sent through the etcd v3 API, and how many of them were answered.
    pub etcd_calls: (usize, usize),
    /// Hash of everything above and the clock skews: equal for equal seeds.
    pub trace_hash: u64,
    /// Problems found; empty when the run passed.
    pub problems: Vec<String>,
}

impl Report {
    /// A one-line summary for people.
    pub fn summary(&self) -> String {
        let [ok, fail, info] = self.outcomes;
        let (etcd_calls, etcd_answered) = self.etcd_calls;
        format!(
            "seed {}: {} events ({ok} ok, {fail} fail, {info} info; {etcd_answered} of {etcd_calls} etcd API calls \
             answered), {} faults, {} acknowledged write-once keys, trace {:016x}",
            self.seed,
            self.history.len(),
            self.faults.len(),
            self.acknowledged,
            self.trace_hash
        )
    }
}

/// The history process id of the read-back client.
const READ_BACK_PROCESS: u64 = 1_000_000;

/// The read-back client's machine number (clients use `0..clients`).
const READER_INDEX: u32 = 200;

/// The admin's machine number (membership changes and transfers).
const ADMIN_INDEX: u32 = 201;

/// The machine number of the etcd auth administrator.
const AUTH_ADMIN_INDEX: u32 = 202;

/// Longest virtual time for setting etcd authentication up (the cluster elects its first
/// leader meanwhile; no faults yet).
const AUTH_SET_UP_BOUND: Duration = Duration::from_secs(20);

fn client_ip(index: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 1, (index % 250) as u8 + 1))
}

/// Runs `scenario` on the current madsim runtime with `seed` (use the runtime's own seed, so
/// that madsim's and Keel's random draws both follow it).
pub async fn run(seed: u64, scenario: &Scenario) -> Report {
    let mut rng = Rng::new(seed ^ 0x6B65_656C_6D61_6473);
    let start = Instant::now();
    let mut cluster = SimCluster::start(scenario.nodes, seed, &mut rng);
    if let Err(problem) = cluster.add_spares(scenario.spare_nodes, seed, &mut rng, client_ip(ADMIN_INDEX)) {
        return failed(seed, Recorder::new(), problem);
    }
    let recorder = Recorder::new();
    let keys = register_keys(scenario.keys);
    let stop = Arc::new(AtomicBool::new(false));
    let handle = Handle::current();
    let credentials = match with_authentication(seed, scenario, &mut cluster).await {
        Ok(credentials) => credentials,
        Err(problem) => return failed(seed, recorder, problem),
    };
    let clients = match start_clients(&cluster, scenario, &recorder, &stop, &mut rng, credentials.as_ref()) {
        Ok(clients) => clients,
        Err(problem) => return failed(seed, recorder, problem),
    };

    let mut fault_log = Vec::new();
    if credentials.is_some() {
        fault_log.push(format!("{} etcd authentication on", start.elapsed().as_millis()));
    }
    fault_log.extend(faults::inject(&mut cluster, &mut rng, Duration::from_millis(scenario.fault_ms), start).await);
    cluster.heal();
    stop.store(true, Ordering::Relaxed);
    fault_log.push(format!("{} heal", start.elapsed().as_millis()));

    let mut problems = Vec::new();
    let mut acknowledged = BTreeMap::new();
    let bound = Instant::now() + Duration::from_millis(scenario.heal_bound_ms);
    for (index, joined) in clients.into_iter().enumerate() {
        match tokio::time::timeout(bound.saturating_duration_since(Instant::now()), joined).await {
            Ok(Ok(keys)) => acknowledged.extend(keys),
            Ok(Err(error)) => problems.push(format!("client {index} failed: {error}")),
            Err(_) => problems.push(format!(
                "client {index} still had an operation pending {} ms after the heal",
                scenario.heal_bound_ms
            )),
        }
    }
    let acknowledged_count = acknowledged.len();
    if problems.is_empty() {
        let reader = handle.create_node().name("reader").ip(client_ip(READER_INDEX)).build();
        let (addresses, reader_recorder) = (cluster.addresses(), recorder.clone());
        let checked = reader.spawn(async move { read_back(addresses, &reader_recorder, &keys, &acknowledged).await });
        match tokio::time::timeout(bound.saturating_duration_since(Instant::now()), checked).await {
            Ok(Ok(found)) => problems.extend(found),
            Ok(Err(error)) => problems.push(format!("the read-back client failed: {error}")),
            Err(_) => problems.push(format!("the read-back did not end {} ms after the heal", scenario.heal_bound_ms)),
        }
    }
    problems.extend(cluster.node_errors());
    problems.extend(cluster.membership_problems());
    let history = recorder.snapshot();
    if problems.is_empty() {
        problems.extend(check_linearizable(&history));
    }
    let skews = format!("{:?}", cluster.skews());
    report(seed, history, recorder.etcd_calls(), fault_log, acknowledged_count, &skews, problems)
}

/// On even seeds with [`Scenario::authentication`]: sets etcd authentication up before the
/// clients start (`etcd_auth.rs`), turns on auth-table changes among the faults, and returns the
/// credentials the clients log in with. `None` on the other seeds.
async fn with_authentication(
    seed: u64,
    scenario: &Scenario,
    cluster: &mut SimCluster,
) -> Result<Option<Credentials>, String> {
    if !scenario.authentication || !seed.is_multiple_of(2) {
        return Ok(None);
    }
    let machine = Handle::current().create_node().name("auth-admin").ip(client_ip(AUTH_ADMIN_INDEX)).build();
    let addresses = cluster.addresses();
    let set_up = machine.spawn(async move { etcd_auth::set_up(&addresses).await });
    match tokio::time::timeout(AUTH_SET_UP_BOUND, set_up).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(problem))) => return Err(problem),
        Ok(Err(error)) => return Err(format!("the auth set-up task failed: {error}")),
        Err(_) => return Err(format!("etcd authentication was not set up within {AUTH_SET_UP_BOUND:?}")),
    }
    cluster.enable_auth_changes(machine);
    Ok(Some(etcd_auth::sim_credentials()))
}

/// Starts the client processes, each on a machine of its own, until `stop` is set; each task
/// returns the write-once keys its process had acknowledged. Their etcd calls log in with
/// `credentials` when authentication is on.
fn start_clients(
    cluster: &SimCluster,
    scenario: &Scenario,
    recorder: &Recorder,
    stop: &Arc<AtomicBool>,
    rng: &mut Rng,
    credentials: Option<&Credentials>,
) -> Result<Vec<JoinHandle<BTreeMap<String, String>>>, String> {
    let handle = Handle::current();
    let keys = register_keys(scenario.keys);
    let mut clients = Vec::new();
    for index in 0..scenario.clients {
        let (client, pinned) = make_clients(&cluster.addresses(), index)
            .map_err(|error| format!("cannot make client {index}: {error}"))?;
        let sim_client = SimClient {
            process: u64::from(index),
            client,
            pinned,
            etcd: EtcdClients::new(cluster.addresses(), credentials.cloned()),
            keys: keys.clone(),
            recorder: recorder.clone(),
            rng: Rng::new(rng.next_u64()),
            acknowledged: BTreeMap::new(),
            sequence: 0,
        };
        let machine = handle.create_node().name(format!("client-{index}")).ip(client_ip(index)).build();
        clients.push(machine.spawn(sim_client.run(Arc::clone(stop))));
    }
    Ok(clients)
}

/// The linearizability verdict on `history`, as problems (none when it is linearizable).
fn check_linearizable(history: &[HistoryEvent]) -> Option<String> {
    match check_history(history) {
        Ok(Verdict::Linearizable) => None,
        Ok(Verdict::NotLinearizable(counter)) => Some(format!(
            "not linearizable on key {}: {}\n{}",
            counter.key,
            counter.explanation,
            write_jsonl(&counter.events)
        )),
        Err(error) => Some(format!("the history is malformed: {error}")),
    }
}

/// The clients of process `index`: one over every node (in an order rotated by `index`, so that
/// processes start at different nodes), and one pinned to each node. Odd processes multiplex
/// their requests on `Batch` streams, even ones make unary calls.
fn make_clients(addresses: &[String], index: u32) -> Result<(KeelClient, Vec<KeelClient>), ClientError> {
    let options = client_options(index + 1, index % 2 == 1);
    let mut rotated = addresses.to_vec();
    rotated.rotate_left(index as usize % addresses.len().max(1));
    let client = KeelClient::new(rotated, options.clone())?;
    let pinned = addresses
        .iter()
        .map(|address| KeelClient::new(vec![address.clone()], options.clone()))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((client, pinned))
}

/// After the heal, from its own machine: reads every register key into the history, and checks
/// that every acknowledged write-once key holds its value; retries until the cluster answers
/// (the caller bounds the whole). Returns the problems found.
async fn read_back(
    addresses: Vec<String>,
    recorder: &Recorder,
    keys: &[String],
    acknowledged: &BTreeMap<String, String>,
) -> Vec<String> {
    let client = match KeelClient::new(addresses.clone(), client_options(999, false)) {
        Ok(client) => client,
        Err(error) => return vec![format!("cannot make the read-back client: {error}")],
    };
    for key in keys {
        loop {
            recorder.record(READ_BACK_PROCESS, EventType::Invoke, &Function::Read, key, None);
            if let Ok(found) = client.get([key.clone()], Consistency::Linearizable).await {
                let value = found.into_iter().next().map(|kv| String::from_utf8_lossy(&kv.value).into_owned());
                recorder.record(READ_BACK_PROCESS, EventType::Ok, &Function::Read, key, value);
                break;
            }
            recorder.record(READ_BACK_PROCESS, EventType::Fail, &Function::Read, key, None);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let mut problems = Vec::new();
    let written: Vec<(&String, &String)> = acknowledged.iter().collect();
    for chunk in written.chunks(64) {
        let wanted: Vec<String> = chunk.iter().map(|(key, _)| (*key).clone()).collect();
        let found = loop {
            if let Ok(found) = client.get(wanted.clone(), Consistency::Linearizable).await {
                break found;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let found: BTreeMap<String, String> = found
            .into_iter()
            .map(|kv| (String::from_utf8_lossy(&kv.key).into_owned(), String::from_utf8_lossy(&kv.value).into_owned()))
            .collect();
        for (key, value) in chunk {
            if found.get(*key) != Some(*value) {
                problems.push(format!("acknowledged write lost: {key} = {value}, read back {:?}", found.get(*key)));
            }
        }
    }
    problems.extend(alarms_raised(&addresses).await);
    problems
}

/// Lists the alarms through any node that answers (retrying until one does): the simulation sets
/// no quota and its stores never diverge, so any alarm (a CORRUPT from the corruption check
/// under the faults) is a problem.
async fn alarms_raised(addresses: &[String]) -> Option<String> {
    for address in addresses.iter().cycle() {
        if let Ok(alarms) = raised_alarms(address).await {
            return (!alarms.is_empty()).then(|| format!("alarms raised (member, etcd alarm type): {alarms:?}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

fn failed(seed: u64, recorder: Recorder, problem: String) -> Report {
    report(seed, recorder.snapshot(), recorder.etcd_calls(), Vec::new(), 0, "", vec![problem])
}

fn report(
    seed: u64,
    history: Vec<HistoryEvent>,
    etcd_calls: (usize, usize),
    faults: Vec<String>,
    acknowledged: usize,
    skews: &str,
    problems: Vec<String>,
) -> Report {
    let mut outcomes = [0usize; 3];
    for event in &history {
        match event.event_type {
            EventType::Ok => outcomes[0] += 1,
            EventType::Fail => outcomes[1] += 1,
            EventType::Info => outcomes[2] += 1,
            EventType::Invoke => {}
        }
    }
    let mut hash = Fnv::default();
    hash.write(skews.as_bytes());
    for line in &faults {
        hash.write(line.as_bytes());
    }
    hash.write(write_jsonl(&history).as_bytes());
    Report { seed, history, faults, acknowledged, outcomes, etcd_calls, trace_hash: hash.0, problems }
}

/// FNV-1a, 64 bits: a hash that is the same in every build and process (unlike `std`'s).
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Self(0xCBF2_9CE4_8422_2325)
    }
}

impl Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0 ^ u64::from(byte)).wrapping_mul(0x0100_0000_01B3);
        }
    }
}
