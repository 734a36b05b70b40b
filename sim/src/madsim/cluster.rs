//! A Keel cluster inside madsim: one simulated machine per Keel node, each running the real
//! server (`keel_runtime::server::serve_with`: gRPC services, peer transport, node driver) on a
//! disk and a clock the simulation owns.
//!
//! * **Disk.** Each node's [`MemoryDisk`] lives here, outside the madsim node, so it survives a
//!   kill: [`SimCluster::kill`] stops every task of the node and then crashes the disk with a
//!   fault drawn from the seed (unsynced writes lost, kept in part, or torn); the restarted node
//!   opens a fresh `MemoryStorage` on the same disk and recovers from what was synced. The disk
//!   can also be made slow ([`SimCluster::slow_disk`], see `disk.rs`).
//! * **Clock.** madsim has one virtual clock; each node reads it through its own
//!   [`SkewedClock`] (an offset and a drift drawn from the seed, within the bounds the cluster is
//!   configured to tolerate), created anew at every (re)start like a process's clock.
//! * **Network.** Node `i` has the address `10.0.0.i:7000`; partitions clog madsim links.
//! * **Membership.** Spare nodes run empty outside the configuration until the admin machine
//!   adds them ([`SimCluster::add_spares`], `membership.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use ::madsim::net::NetSim;
use ::madsim::runtime::{Handle, NodeHandle as MachineHandle};
use keel_core::{LeaseConfig, NodeId, Rng};
use keel_runtime::clock::{Clock, SkewedClock, SystemClock};
use keel_runtime::node::{NodeConfig, NodeHandle};
use keel_runtime::server::{serve_with, ServerConfig};
use keel_runtime::storage::{CrashFault, MemoryDisk, MemoryStorage};
use tokio::sync::{oneshot, watch};

use super::disk::{DiskSpeed, SlowStorage};
use super::membership::{Admin, AdminFault, Members};

/// The port every node serves peers and clients on.
pub const NODE_PORT: u16 = 7000;

/// Bound on the rate difference between any two nodes' clocks that the cluster is configured
/// with (lease reads shorten their lease by it); each node drifts by at most half of it.
pub const CLOCK_DRIFT_PPM_MAX: u64 = 2_000;

/// Bound on the wall-clock offset between nodes that the cluster is configured with; each node
/// is offset by at most a third of it.
pub const CLOCK_OFFSET_MS_MAX: u64 = 300;

/// The simulated address of node `id`.
pub fn node_ip(id: NodeId) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, (id % 250) as u8))
}

/// The `host:port` clients and peers reach node `id` at.
pub fn node_address(id: NodeId) -> String {
    SocketAddr::new(node_ip(id), NODE_PORT).to_string()
}

/// One node's clock error, drawn from the seed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClockSkew {
    /// Fixed offset of both readings, in milliseconds.
    pub offset_ms: i64,
    /// Rate error in parts per million.
    pub drift_ppm: i64,
}

impl ClockSkew {
    /// A skew within the cluster's configured bounds (see [`CLOCK_DRIFT_PPM_MAX`] and
    /// [`CLOCK_OFFSET_MS_MAX`]).
    pub fn draw(rng: &mut Rng) -> Self {
        let offset = (CLOCK_OFFSET_MS_MAX / 3) as i64;
        let drift = (CLOCK_DRIFT_PPM_MAX / 2) as i64;
        Self {
            offset_ms: rng.range(0, 2 * offset as u64 + 1) as i64 - offset,
            drift_ppm: rng.range(0, 2 * drift as u64 + 1) as i64 - drift,
        }
    }
}

/// The node configuration the simulation runs: short timeouts (so that a scenario of a few
/// virtual seconds sees many elections), lease reads on, frequent snapshots and compaction (so
/// that restarted nodes catch up by snapshot too), and a corruption check every virtual second
/// (under the faults it must never raise CORRUPT: the scenario lists the alarms at the end).
pub fn node_config(id: NodeId, members: &BTreeMap<NodeId, String>, seed: u64) -> ServerConfig {
    let mut node = NodeConfig::new(id, members.clone());
    node.raft.election_timeout_ms_min = 300;
    node.raft.election_timeout_ms_max = 600;
    node.raft.heartbeat_interval_ms = 50;
    node.raft.lease = Some(LeaseConfig { clock_drift_ppm_max: CLOCK_DRIFT_PPM_MAX });
    node.raft.rng_seed = seed ^ u64::from(id).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    node.request_timeout_ms = 2_000;
    node.snapshot_interval_entries = 200;
    node.history_retention_revisions = 100;
    node.corrupt_check_interval_ms = 1_000;
    node.clock_offset_ms_max = CLOCK_OFFSET_MS_MAX;
    let mut config = ServerConfig::new(node, SocketAddr::new(node_ip(id), NODE_PORT));
    config.transport.call_timeout_ms = 1_000;
    config.drain_timeout_ms = 1_000;
    // etcd passwords: cheap hashes, so that logins take little of the simulation's real time.
    config.service.auth_password_iterations = 1_000;
    config
}

/// What the simulation knows about one node.
struct SimNode {
    machine: MachineHandle,
    disk: MemoryDisk,
    speed: DiskSpeed,
    skew: ClockSkew,
    /// Bumped to ask the running incarnation for a graceful shutdown.
    stop: watch::Sender<u64>,
}

/// Errors a node's server returned (it stopped on its own): a scenario must end with none.
pub type NodeErrors = Arc<Mutex<Vec<String>>>;

/// What the nodes' incarnations report to the cluster: the errors of servers that stopped on
/// their own, and each node's latest [`NodeHandle`] (a killed incarnation's handle answers
/// every call with an error until the restarted one replaces it).
#[derive(Clone, Default)]
struct Reports {
    errors: NodeErrors,
    handles: Arc<Mutex<BTreeMap<NodeId, NodeHandle>>>,
}

/// A running cluster and the faults currently applied to it.
pub struct SimCluster {
    nodes: BTreeMap<NodeId, SimNode>,
    reports: Reports,
    members: Members,
    admin: Option<Admin>,
    /// The machine that changes the etcd auth table among the faults, once authentication is on.
    auth_admin: Option<MachineHandle>,
    killed: BTreeSet<NodeId>,
    paused: BTreeSet<NodeId>,
    isolated: BTreeSet<NodeId>,
    clogged_links: BTreeSet<(NodeId, NodeId)>,
}

impl SimCluster {
    /// Starts nodes `1..=size` on the current madsim runtime, clocks drawn from `rng`.
    pub fn start(size: u32, seed: u64, rng: &mut Rng) -> Self {
        let members: BTreeMap<NodeId, String> = (1..=size).map(|id| (id, node_address(id))).collect();
        let reports = Reports::default();
        let nodes = members.keys().map(|&id| (id, start_node(id, &members, seed, rng, &reports))).collect();
        let voters = members.keys().copied().collect();
        Self {
            nodes,
            reports,
            members: Members { voters, voters_min: size as usize, ..Members::default() },
            admin: None,
            auth_admin: None,
            killed: BTreeSet::new(),
            paused: BTreeSet::new(),
            isolated: BTreeSet::new(),
            clogged_links: BTreeSet::new(),
        }
    }

    /// Starts `count` spare nodes (empty, outside the configuration, waiting to be added) and
    /// the admin machine at `admin_ip` that adds, promotes and removes members and transfers
    /// leadership ([`SimCluster::change`]).
    pub fn add_spares(&mut self, count: u32, seed: u64, rng: &mut Rng, admin_ip: IpAddr) -> Result<(), String> {
        let initial: BTreeMap<NodeId, String> = self.members.voters.iter().map(|&id| (id, node_address(id))).collect();
        let first = self.nodes.keys().last().copied().unwrap_or(0) + 1;
        for id in first..first + count {
            let node = start_node(id, &initial, seed, rng, &self.reports);
            self.nodes.insert(id, node);
            self.members.spares.insert(id);
        }
        let admin_rng = Rng::new(rng.next_u64());
        self.admin = Some(Admin::new(admin_ip, &initial, self.addresses(), admin_rng)?);
        Ok(())
    }

    /// Whether membership changes and transfers can be made ([`SimCluster::add_spares`]).
    pub fn has_admin(&self) -> bool {
        self.admin.is_some()
    }

    /// The configuration as last reported to the admin (the initial voters until a change).
    pub fn members(&self) -> &Members {
        &self.members
    }

    /// Makes a membership change or leadership transfer through the admin; returns its trace
    /// line (`None` without an admin, see [`SimCluster::add_spares`]).
    pub async fn change(&mut self, fault: &AdminFault) -> Option<String> {
        let admin = self.admin.as_mut()?;
        Some(admin.apply(fault, &mut self.members).await)
    }

    /// Turns on changes of the etcd auth table among the faults ([`SimCluster::auth_change`]),
    /// made from `machine`, once authentication is set up (`etcd_auth::set_up`).
    pub fn enable_auth_changes(&mut self, machine: MachineHandle) {
        self.auth_admin = Some(machine);
    }

    /// Whether the auth table can be changed ([`SimCluster::enable_auth_changes`]).
    pub fn has_auth(&self) -> bool {
        self.auth_admin.is_some()
    }

    /// Grants or revokes an unrelated permission as `root` through a node drawn from `draw`,
    /// moving the auth revision under the clients' feet; returns the trace line (`None` without
    /// authentication).
    pub async fn auth_change(&mut self, draw: u64) -> Option<String> {
        let machine = self.auth_admin.as_ref()?;
        let addresses = self.addresses();
        let address = addresses[(draw % addresses.len() as u64) as usize].clone();
        let (grant, slot) = ((draw >> 8).is_multiple_of(2), (draw >> 16) % 4);
        let change = machine.spawn(async move { super::etcd_auth::change(&address, grant, slot).await });
        Some(change.await.unwrap_or_else(|error| format!("auth change failed: {error}")))
    }

    /// Member lists that contradicted an acknowledged membership change (none without an admin).
    pub fn membership_problems(&self) -> Vec<String> {
        self.admin.as_ref().map(|admin| admin.problems().to_vec()).unwrap_or_default()
    }

    /// The node ids, in order.
    pub fn ids(&self) -> Vec<NodeId> {
        self.nodes.keys().copied().collect()
    }

    /// Every node's client address, in id order.
    pub fn addresses(&self) -> Vec<String> {
        self.nodes.keys().map(|&id| node_address(id)).collect()
    }

    /// The clock skew of every node, in id order.
    pub fn skews(&self) -> Vec<(NodeId, ClockSkew)> {
        self.nodes.iter().map(|(&id, node)| (id, node.skew)).collect()
    }

    /// The errors with which node servers stopped on their own so far.
    pub fn node_errors(&self) -> Vec<String> {
        self.reports.errors.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The in-process handle of node `id`'s current incarnation, once it has started: for
    /// checking what the node answers locally (such as etcd's health check), never for the
    /// clients' operations, which go over the simulated network.
    pub fn handle(&self, id: NodeId) -> Option<NodeHandle> {
        self.reports.handles.lock().unwrap_or_else(PoisonError::into_inner).get(&id).cloned()
    }

    /// The nodes currently killed.
    pub fn killed(&self) -> &BTreeSet<NodeId> {
        &self.killed
    }

    /// The nodes currently cut off by [`SimCluster::isolate`].
    pub fn isolated(&self) -> &BTreeSet<NodeId> {
        &self.isolated
    }

    /// The nodes currently paused.
    pub fn paused(&self) -> &BTreeSet<NodeId> {
        &self.paused
    }

    /// Kills node `id` (every task stops at once) and crashes its disk with a fault drawn from
    /// `fault_seed`; returns the fault. Killing a killed node does nothing.
    pub fn kill(&mut self, id: NodeId, fault_seed: u64) -> Option<CrashFault> {
        let node = self.nodes.get(&id)?;
        if !self.killed.insert(id) {
            return None;
        }
        self.paused.remove(&id);
        Handle::current().kill(node.machine.id());
        Some(node.disk.crash_random(fault_seed))
    }

    /// Asks a running node to shut down gracefully (it hands leadership over, drains its calls
    /// and stops; its disk is not crashed). It counts as killed until restarted.
    pub fn shutdown(&mut self, id: NodeId) -> bool {
        let Some(node) = self.nodes.get(&id) else { return false };
        if self.killed.contains(&id) || self.paused.contains(&id) {
            return false;
        }
        node.stop.send_modify(|generation| *generation += 1);
        self.killed.insert(id);
        true
    }

    /// Restarts a killed (or shut down) node on its disk.
    pub fn restart(&mut self, id: NodeId) {
        if let Some(node) = self.nodes.get(&id).filter(|_| self.killed.remove(&id)) {
            // madsim frees a node's sockets on `kill` only, not when its task ends after a
            // graceful shutdown nor on `restart`: kill first, as the process's exit would.
            Handle::current().kill(node.machine.id());
            Handle::current().restart(node.machine.id());
        }
    }

    /// Pauses a running node: its tasks stop being polled while time goes on.
    pub fn pause(&mut self, id: NodeId) {
        if let Some(node) = self.nodes.get(&id).filter(|_| !self.killed.contains(&id)) {
            if self.paused.insert(id) {
                Handle::current().pause(node.machine.id());
            }
        }
    }

    /// Resumes a paused node.
    pub fn resume(&mut self, id: NodeId) {
        if let Some(node) = self.nodes.get(&id).filter(|_| self.paused.remove(&id)) {
            Handle::current().resume(node.machine.id());
        }
    }

    /// Makes node `id`'s disk take `delay_ms` per group of operations (0: fast again).
    pub fn slow_disk(&mut self, id: NodeId, delay_ms: u64) {
        if let Some(node) = self.nodes.get(&id) {
            node.speed.set_delay_ms(delay_ms);
        }
    }

    /// Cuts node `id` off from everyone (peers and clients), both ways.
    pub fn isolate(&mut self, id: NodeId) {
        if let Some(node) = self.nodes.get(&id) {
            if self.isolated.insert(id) {
                NetSim::current().clog_node(node.machine.id());
            }
        }
    }

    /// Drops every packet from node `from` to node `to` (one direction).
    pub fn clog_link(&mut self, from: NodeId, to: NodeId) {
        if let (Some(a), Some(b)) = (self.nodes.get(&from), self.nodes.get(&to)) {
            if from != to && self.clogged_links.insert((from, to)) {
                NetSim::current().clog_link(a.machine.id(), b.machine.id());
            }
        }
    }

    /// Splits the nodes into `side` and the rest, both ways (clients still reach everyone).
    pub fn partition(&mut self, side: &BTreeSet<NodeId>) {
        for from in self.ids() {
            for to in self.ids() {
                if side.contains(&from) != side.contains(&to) {
                    self.clog_link(from, to);
                }
            }
        }
    }

    /// Removes every partition and clogged link.
    pub fn heal_network(&mut self) {
        let net = NetSim::current();
        for id in std::mem::take(&mut self.isolated) {
            net.unclog_node(self.nodes[&id].machine.id());
        }
        for (from, to) in std::mem::take(&mut self.clogged_links) {
            net.unclog_link(self.nodes[&from].machine.id(), self.nodes[&to].machine.id());
        }
    }

    /// Ends every fault: the network heals, disks are fast again, paused nodes resume, killed
    /// nodes restart.
    pub fn heal(&mut self) {
        self.heal_network();
        for node in self.nodes.values() {
            node.speed.set_delay_ms(0);
        }
        for id in self.paused.clone() {
            self.resume(id);
        }
        for id in self.killed.clone() {
            self.restart(id);
        }
    }
}

/// Creates the machine of node `id` (peers `members`; a node not among them starts empty and
/// waits to be added) and starts its first incarnation.
fn start_node(id: NodeId, members: &BTreeMap<NodeId, String>, seed: u64, rng: &mut Rng, reports: &Reports) -> SimNode {
    let (disk, speed) = (MemoryDisk::new(), DiskSpeed::default());
    let skew = ClockSkew::draw(rng);
    let config = node_config(id, members, seed);
    let (init_disk, init_speed) = (disk.clone(), speed.clone());
    let init_reports = reports.clone();
    let stop = watch::Sender::new(0);
    let init_stop = stop.clone();
    let machine = Handle::current()
        .create_node()
        .name(format!("keel-{id}"))
        .ip(node_ip(id))
        .init(move || {
            let storage = SlowStorage::new(MemoryStorage::open(init_disk.clone()), init_speed.clone());
            let parts = NodeParts { storage, skew, stop: init_stop.subscribe() };
            run_node(config.clone(), parts, init_reports.clone())
        })
        .build();
    SimNode { machine, disk, speed, skew, stop }
}

/// What one incarnation of a node runs on.
struct NodeParts {
    storage: SlowStorage,
    skew: ClockSkew,
    stop: watch::Receiver<u64>,
}

/// One incarnation of a node: a fresh storage on the surviving disk, a fresh skewed clock, and
/// the real server until the node is killed or asked to shut down. A server that stops on its
/// own, or fails to shut down cleanly, records why.
async fn run_node(config: ServerConfig, parts: NodeParts, reports: Reports) {
    let id = config.node.raft.id;
    let NodeParts { storage, skew, mut stop } = parts;
    let clock: Arc<dyn Clock> = SkewedClock::new(SystemClock::new(), skew.offset_ms, skew.drift_ppm);
    let asked = Arc::new(AtomicBool::new(false));
    let asked_by_stop = Arc::clone(&asked);
    let shutdown = async move {
        // An error means the simulation is over: keep serving until the node is dropped.
        if stop.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
        asked_by_stop.store(true, Ordering::Relaxed);
    };
    let (started, handle) = oneshot::channel();
    let handles = Arc::clone(&reports.handles);
    tokio::spawn(async move {
        if let Ok(handle) = handle.await {
            handles.lock().unwrap_or_else(PoisonError::into_inner).insert(id, handle);
        }
    });
    let message = match serve_with(config, Box::new(storage), clock, shutdown, Some(started)).await {
        Ok(()) if asked.load(Ordering::Relaxed) => return,
        Ok(()) => format!("node {id}: the server stopped without being asked to"),
        Err(error) => format!("node {id}: {error}"),
    };
    reports.errors.lock().unwrap_or_else(PoisonError::into_inner).push(message);
}
