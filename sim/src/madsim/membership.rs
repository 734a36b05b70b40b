//! Membership changes and leadership transfers in the madsim simulation, made the way an
//! operator makes them: through the admin API of the real client (`keel::client::KeelClient`)
//! from a machine of its own, while the other faults go on.
//!
//! Data flow: `faults::draw` picks an [`AdminFault`] from the seed against the membership the
//! cluster last reported ([`Members`]); [`Admin::apply`] sends it and waits (bounded) for the
//! answer; the membership in a successful answer replaces [`Members`]. Spare nodes run from the
//! start, empty and outside the configuration, until they are added as learners and promoted;
//! removed nodes keep running (they may still be killed, paused or cut off), as a process an
//! operator forgot to stop would.

use std::collections::BTreeSet;
use std::time::Duration;

use ::madsim::runtime::{Handle, NodeHandle as MachineHandle};
use keel::client::{KeelClient, Membership};
use keel_core::{NodeId, Rng};

use super::clients::client_options;
use super::cluster::node_address;

/// How long the admin waits for one change before it gives up on it (virtual time).
const CHANGE_TIMEOUT: Duration = Duration::from_millis(3_000);

/// The admin client's id (clients use 1 and up).
const ADMIN_CLIENT_ID: u32 = 900;

/// One membership change or leadership transfer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdminFault {
    /// Hand leadership to this voter.
    TransferLeader(NodeId),
    /// Add this spare node as a promotable learner.
    AddLearner(NodeId),
    /// Promote this learner to voter.
    Promote(NodeId),
    /// Remove this voter.
    Remove(NodeId),
}

/// The configuration as the cluster last reported it, and the spare nodes not added yet.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Members {
    /// Voting members.
    pub voters: BTreeSet<NodeId>,
    /// Learners.
    pub learners: BTreeSet<NodeId>,
    /// Running spare nodes never added.
    pub spares: BTreeSet<NodeId>,
    /// Voters the configuration never drops below (the initial ones' count).
    pub voters_min: usize,
}

impl Members {
    /// Draws the next change: a leadership transfer one time in three; otherwise the next step of
    /// a membership cycle: promote a learner, else remove a voter above the initial count or add a
    /// spare as a learner.
    pub fn draw(&self, rng: &mut Rng) -> AdminFault {
        let pick = |rng: &mut Rng, from: &BTreeSet<NodeId>| {
            *from.iter().nth(rng.range(0, from.len() as u64) as usize).expect("a non-empty set")
        };
        let transfer = rng.range(0, 3) == 0;
        if transfer {
            return AdminFault::TransferLeader(pick(rng, &self.voters));
        }
        let removable = self.voters.len() > self.voters_min;
        if !self.learners.is_empty() {
            AdminFault::Promote(pick(rng, &self.learners))
        } else if removable && (self.spares.is_empty() || rng.range(0, 2) == 0) {
            AdminFault::Remove(pick(rng, &self.voters))
        } else if !self.spares.is_empty() {
            AdminFault::AddLearner(pick(rng, &self.spares))
        } else {
            AdminFault::TransferLeader(pick(rng, &self.voters))
        }
    }

    fn update(&mut self, reported: &Membership) {
        self.voters = reported.voters.iter().map(|&id| NodeId::from(id)).collect();
        self.learners = reported.learners.iter().map(|&id| NodeId::from(id)).collect();
        self.spares.retain(|id| !self.voters.contains(id) && !self.learners.contains(id));
    }
}

/// The operator's machine and its client.
pub struct Admin {
    machine: MachineHandle,
    client: std::sync::Arc<KeelClient>,
}

impl Admin {
    /// An admin on machine `ip`, talking to the nodes at `addresses`.
    pub fn new(ip: std::net::IpAddr, addresses: Vec<String>) -> Result<Self, String> {
        let client = KeelClient::new(addresses, client_options(ADMIN_CLIENT_ID, false))
            .map_err(|error| format!("cannot make the admin client: {error}"))?;
        let machine = Handle::current().create_node().name("admin").ip(ip).build();
        Ok(Self { machine, client: std::sync::Arc::new(client) })
    }

    /// Sends `fault` and waits for the answer (at most [`CHANGE_TIMEOUT`]); a membership the
    /// answer reports replaces `members`. Returns the trace line: the change and its outcome.
    pub async fn apply(&self, fault: &AdminFault, members: &mut Members) -> String {
        let client = std::sync::Arc::clone(&self.client);
        let change = fault.clone();
        let call = self.machine.spawn(async move {
            let wire = |id: NodeId| u32::try_from(id).expect("simulated node ids are small");
            match change {
                AdminFault::TransferLeader(id) => client.transfer_leader(wire(id)).await.map(|()| None),
                AdminFault::AddLearner(id) => client.add_learner(wire(id), node_address(id), false).await.map(Some),
                AdminFault::Promote(id) => client.promote(&[wire(id)]).await.map(Some),
                AdminFault::Remove(id) => client.remove(&[wire(id)]).await.map(Some),
            }
        });
        let outcome = match tokio::time::timeout(CHANGE_TIMEOUT, call).await {
            Ok(Ok(Ok(Some(reported)))) => {
                members.update(&reported);
                format!("voters {:?} learners {:?}", members.voters, members.learners)
            }
            Ok(Ok(Ok(None))) => "done".to_string(),
            Ok(Ok(Err(error))) => format!("refused: {error}"),
            Ok(Err(error)) => format!("admin task failed: {error}"),
            Err(_) => format!("no answer within {} ms", CHANGE_TIMEOUT.as_millis()),
        };
        if !matches!(fault, AdminFault::TransferLeader(_)) && !outcome.starts_with("voters") {
            // A change without an answer may still be applied: ask what the configuration is.
            self.refresh(members).await;
        }
        format!("{fault:?}: {outcome}")
    }

    /// Replaces `members` with the configuration a node reports, if one answers in time.
    async fn refresh(&self, members: &mut Members) {
        let client = std::sync::Arc::clone(&self.client);
        let asked = self.machine.spawn(async move { client.members().await });
        if let Ok(Ok(Ok(reported))) = tokio::time::timeout(CHANGE_TIMEOUT, asked).await {
            members.update(&reported);
        }
    }
}
