//! The fault schedule of a madsim scenario, drawn from the seed: partitions (one node cut off,
//! a minority split from the rest, one-way links), kills with a disk crash or graceful shutdowns
//! and later restarts, pauses and resumes, slow disks, membership changes and leadership
//! transfers (`membership.rs`), and changes of the etcd auth table (`etcd_auth.rs`). Every fault applied is logged with its virtual time, for the
//! trace.

use std::collections::BTreeSet;
use std::time::Duration;

use keel_core::{NodeId, Rng};
use tokio::time::Instant;

use super::cluster::SimCluster;
use super::membership::AdminFault;

/// One fault the schedule can apply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Cut a node off from everyone.
    Isolate(NodeId),
    /// Split these nodes (a minority) from the rest.
    Partition(BTreeSet<NodeId>),
    /// Drop packets from the first node to the second.
    ClogLink(NodeId, NodeId),
    /// Remove every network fault.
    HealNetwork,
    /// Kill a node and crash its disk (the fault drawn from this seed).
    Kill(NodeId, u64),
    /// Shut a node down gracefully (hand-over, drain; no disk crash).
    Shutdown(NodeId),
    /// Restart a killed or shut down node.
    Restart(NodeId),
    /// Pause a node.
    Pause(NodeId),
    /// Resume a paused node.
    Resume(NodeId),
    /// Make a node's disk take this many milliseconds per group of operations (0: fast again).
    SlowDisk(NodeId, u64),
    /// A membership change or leadership transfer, through the admin API.
    Admin(AdminFault),
    /// A change of the etcd auth table (when authentication is on), drawn from the number.
    AuthChange(u64),
}

/// Draws the next fault for `cluster`: at most a minority of the voters down at once, so that
/// the cluster also makes progress between faults.
pub fn draw(rng: &mut Rng, cluster: &SimCluster) -> Fault {
    let ids = cluster.ids();
    let pick = |rng: &mut Rng, from: &[NodeId]| from[rng.range(0, from.len() as u64) as usize];
    let voters = &cluster.members().voters;
    let minority = (voters.len().max(1) - 1) / 2;
    // Voters killed, paused or cut off (isolations add up until the network heals): past a
    // minority the cluster could not work at all until then, and the run would test little.
    let out =
        |id: &&NodeId| [cluster.killed(), cluster.paused(), cluster.isolated()].iter().any(|set| set.contains(id));
    let down = voters.iter().filter(out).count();
    match rng.range(0, 16) {
        13..=15 if cluster.has_admin() => Fault::Admin(cluster.members().draw(rng)),
        0 | 1 if down < minority.max(1) => Fault::Isolate(pick(rng, &ids)),
        2 => {
            let size = rng.range(1, minority as u64 + 1) as usize;
            let mut side = BTreeSet::new();
            while side.len() < size {
                side.insert(pick(rng, &ids));
            }
            Fault::Partition(side)
        }
        3 => {
            let from = pick(rng, &ids);
            let others: Vec<NodeId> = ids.iter().copied().filter(|&id| id != from).collect();
            Fault::ClogLink(from, pick(rng, &others))
        }
        4..=6 => Fault::HealNetwork,
        7 if down < minority => Fault::Kill(pick(rng, &ids), rng.next_u64()),
        8 if down < minority => Fault::Pause(pick(rng, &ids)),
        10 if down < minority => Fault::Shutdown(pick(rng, &ids)),
        9 => Fault::SlowDisk(pick(rng, &ids), [0, 0, 5, 20, 100, 400][rng.range(0, 6) as usize]),
        11 | 12 if cluster.has_auth() => Fault::AuthChange(rng.next_u64()),
        _ => {
            let killed: Vec<NodeId> = cluster.killed().iter().copied().collect();
            let paused: Vec<NodeId> = cluster.paused().iter().copied().collect();
            if !killed.is_empty() && (paused.is_empty() || rng.range(0, 2) == 0) {
                Fault::Restart(pick(rng, &killed))
            } else if !paused.is_empty() {
                Fault::Resume(pick(rng, &paused))
            } else {
                Fault::HealNetwork
            }
        }
    }
}

/// Applies `fault` and returns its trace line (`None` when it changed nothing).
pub fn apply(cluster: &mut SimCluster, fault: &Fault) -> Option<String> {
    match fault {
        Fault::Isolate(id) => cluster.isolate(*id),
        Fault::Partition(side) => cluster.partition(side),
        Fault::ClogLink(from, to) => cluster.clog_link(*from, *to),
        Fault::HealNetwork => cluster.heal_network(),
        Fault::Kill(id, seed) => {
            let crash = cluster.kill(*id, *seed)?;
            return Some(format!("kill {id}, disk {crash:?}"));
        }
        Fault::Shutdown(id) => {
            if !cluster.shutdown(*id) {
                return None;
            }
        }
        Fault::Restart(id) => cluster.restart(*id),
        Fault::Pause(id) => cluster.pause(*id),
        Fault::Resume(id) => cluster.resume(*id),
        Fault::SlowDisk(id, delay_ms) => cluster.slow_disk(*id, *delay_ms),
        // Sent and awaited by `inject`, which can wait for the answer.
        Fault::Admin(_) | Fault::AuthChange(_) => return None,
    }
    Some(format!("{fault:?}"))
}

/// Applies faults drawn from `rng` every 100 to 1,000 virtual milliseconds for `duration`, and
/// returns the trace lines (`<ms since start> <fault>`).
pub async fn inject(cluster: &mut SimCluster, rng: &mut Rng, duration: Duration, start: Instant) -> Vec<String> {
    let end = Instant::now() + duration;
    let mut log = Vec::new();
    loop {
        let wait = Duration::from_millis(rng.range(100, 1_000));
        if Instant::now() + wait >= end {
            tokio::time::sleep_until(end).await;
            return log;
        }
        tokio::time::sleep(wait).await;
        let fault = draw(rng, cluster);
        let line = match &fault {
            Fault::Admin(change) => cluster.change(change).await,
            Fault::AuthChange(draw) => cluster.auth_change(*draw).await,
            _ => apply(cluster, &fault),
        };
        if let Some(line) = line {
            log.push(format!("{} {line}", start.elapsed().as_millis()));
        }
    }
}
