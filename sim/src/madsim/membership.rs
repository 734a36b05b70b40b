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
//!
//! After every change the admin asks a node drawn at random for the configuration with a
//! linearizable etcd `MemberList` and holds the answer to what it knows for certain: the
//! configuration in the last answered change. Nodes named by a change of unknown outcome are left
//! out of that comparison for the rest of the run, since such a change may still take effect.

use std::collections::BTreeSet;
use std::time::Duration;

use ::madsim::runtime::{Handle, NodeHandle as MachineHandle};
use keel::client::{KeelClient, Membership};
use keel_core::{NodeId, Rng};

use super::clients::{client_options, write_certainly_failed};
use super::cluster::node_address;
use super::etcd_clients::linearizable_members;

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

/// What the admin knows for certain about the configuration, to check member lists against.
#[derive(Debug, Default)]
struct Acknowledged {
    /// Voters in the last answered change (the initial voters before one).
    voters: BTreeSet<NodeId>,
    /// Learners in the last answered change.
    learners: BTreeSet<NodeId>,
    /// Nodes named by a change whose outcome is unknown: their membership is not checked.
    in_doubt: BTreeSet<NodeId>,
}

impl Acknowledged {
    /// The nodes whose membership in the listed configuration differs from the acknowledged one.
    fn differences(&self, voters: &BTreeSet<NodeId>, learners: &BTreeSet<NodeId>) -> BTreeSet<NodeId> {
        let everyone = voters.iter().chain(learners).chain(&self.voters).chain(&self.learners);
        everyone
            .filter(|id| !self.in_doubt.contains(id))
            .filter(|id| {
                voters.contains(id) != self.voters.contains(id) || learners.contains(id) != self.learners.contains(id)
            })
            .copied()
            .collect()
    }
}

/// The operator's machine and its client.
pub struct Admin {
    machine: MachineHandle,
    client: std::sync::Arc<KeelClient>,
    /// Every node's address, spares included: member lists are asked of any of them.
    addresses: Vec<String>,
    acknowledged: Acknowledged,
    /// Draws the node each member list is asked of.
    rng: Rng,
    /// Member lists that contradicted an acknowledged change.
    problems: Vec<String>,
}

impl Admin {
    /// An admin on machine `ip`, making changes through the initial voters `initial` and asking
    /// any node of `addresses` for member lists.
    pub fn new(
        ip: std::net::IpAddr,
        initial: &std::collections::BTreeMap<NodeId, String>,
        addresses: Vec<String>,
        rng: Rng,
    ) -> Result<Self, String> {
        // Membership changes and transfers need the root role once authentication is on.
        let credentials = Some(super::etcd_auth::root_credentials());
        let options = keel::client::ClientOptions { credentials, ..client_options(ADMIN_CLIENT_ID, false) };
        let client = KeelClient::new(initial.values().cloned().collect(), options)
            .map_err(|error| format!("cannot make the admin client: {error}"))?;
        let machine = Handle::current().create_node().name("admin").ip(ip).build();
        let acknowledged = Acknowledged { voters: initial.keys().copied().collect(), ..Acknowledged::default() };
        let client = std::sync::Arc::new(client);
        Ok(Self { machine, client, addresses, acknowledged, rng, problems: Vec::new() })
    }

    /// Member lists that contradicted an acknowledged change, one line each.
    pub fn problems(&self) -> &[String] {
        &self.problems
    }

    /// Sends `fault` and waits for the answer (at most [`CHANGE_TIMEOUT`]); a membership the
    /// answer reports replaces `members`. Returns the trace line: the change and its outcome.
    pub async fn apply(&mut self, fault: &AdminFault, members: &mut Members) -> String {
        let client = std::sync::Arc::clone(&self.client);
        let change = fault.clone();
        let call = self.machine.spawn(async move {
            match change {
                AdminFault::TransferLeader(id) => client.transfer_leader(id).await.map(|()| None),
                AdminFault::AddLearner(id) => client.add_learner(id, node_address(id), false).await.map(Some),
                AdminFault::Promote(id) => client.promote(&[id]).await.map(Some),
                AdminFault::Remove(id) => client.remove(&[id]).await.map(Some),
            }
        });
        let (outcome, known) = match tokio::time::timeout(CHANGE_TIMEOUT, call).await {
            Ok(Ok(Ok(Some(reported)))) => {
                members.update(&reported);
                self.acknowledged.voters = members.voters.clone();
                self.acknowledged.learners = members.learners.clone();
                (format!("voters {:?} learners {:?}", members.voters, members.learners), true)
            }
            Ok(Ok(Ok(None))) => ("done".to_string(), true),
            Ok(Ok(Err(error))) => (format!("refused: {error}"), write_certainly_failed(&error)),
            Ok(Err(error)) => (format!("admin task failed: {error}"), false),
            Err(_) => (format!("no answer within {} ms", CHANGE_TIMEOUT.as_millis()), false),
        };
        let named = match fault {
            AdminFault::TransferLeader(_) => None,
            AdminFault::AddLearner(id) | AdminFault::Promote(id) | AdminFault::Remove(id) => Some(*id),
        };
        if let (Some(id), false) = (named, known) {
            self.acknowledged.in_doubt.insert(id);
        }
        if named.is_some() && !outcome.starts_with("voters") {
            // A change without an answer may still be applied: ask what the configuration is.
            self.refresh(members).await;
        }
        let listed = self.check_members().await;
        format!("{fault:?}: {outcome}; {listed}")
    }

    /// Asks a node drawn at random for the configuration with a linearizable etcd `MemberList`
    /// and records a problem when it contradicts the acknowledged one. No answer checks nothing.
    /// Returns what happened, for the trace line.
    async fn check_members(&mut self) -> String {
        let node = self.rng.range(0, self.addresses.len() as u64) as usize;
        let address = self.addresses[node].clone();
        let asked = address.clone();
        let listed = self.machine.spawn(async move { linearizable_members(&asked).await });
        let Ok(Ok(Ok((voters, learners)))) = tokio::time::timeout(CHANGE_TIMEOUT, listed).await else {
            return format!("no member list from {address}");
        };
        // An id beyond a node id's range can never match an acknowledged member.
        let ids = |members: BTreeSet<u64>| -> BTreeSet<NodeId> {
            members.into_iter().map(|id| NodeId::try_from(id).unwrap_or(NodeId::MAX)).collect()
        };
        let (voters, learners) = (ids(voters), ids(learners));
        let differences = self.acknowledged.differences(&voters, &learners);
        if !differences.is_empty() {
            self.problems.push(format!(
                "a linearizable MemberList from {address} listed voters {voters:?} learners {learners:?}, but the \
                 acknowledged configuration has voters {:?} learners {:?} (nodes {differences:?} differ; not \
                 checked, changes of unknown outcome: {:?})",
                self.acknowledged.voters, self.acknowledged.learners, self.acknowledged.in_doubt
            ));
            return format!("member list from {address} differs");
        }
        format!("member list from {address} agrees")
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
