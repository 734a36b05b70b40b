//! The simulated clients' etcd v3 API: a share of every client's puts, deletes, compare-and-swaps
//! and linearizable reads on the contended keys goes through the etcd `KV` service (the generated
//! `etcdserverpb` stubs over simulated gRPC) of a node drawn at random, so that the runtime's etcd
//! layer (`runtime/src/etcd/`: request conversion, follower forwarding, ReadIndex ranges) runs
//! under the faults too. Its operations land in the same history, on the same keys, as the native
//! ones: the checker holds both APIs to one linearizable store.
//!
//! Outcomes: etcd's errors do not say whether a failed write was applied (a forwarded write may
//! commit after its deadline), so every failed write is `info`, pending to the end; a transaction
//! whose compare did not hold was evaluated, a `fail`; a failed read had no effect, a `fail`.
//!
//! Data flow: `clients.rs` draws the operation and the node, records the invocation, calls
//! [`EtcdClients`], and records what came back. Connections are made lazily from the client's own
//! machine and forgotten after a failed call, so the next call reconnects.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use keel::proto::etcdserverpb::cluster_client::ClusterClient;
use keel::proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use keel::proto::etcdserverpb::kv_client::KvClient;
use keel::proto::etcdserverpb::maintenance_client::MaintenanceClient;
use keel::proto::etcdserverpb::request_op::Request as TxnRequestKind;
use keel::proto::etcdserverpb::{
    AlarmRequest, Compare, DeleteRangeRequest, MemberListRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use keel::proto::health::health_client::HealthClient;
use keel::proto::health::HealthCheckRequest;
use tonic::transport::{Channel, Endpoint};

/// Longest wait for a connection (virtual time).
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// Longest wait for one call's answer (virtual time); the outcome of a write past it is unknown.
const CALL_TIMEOUT: Duration = Duration::from_millis(3_000);

/// Why a call gave no answer, as the history needs to know it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallFailure {
    /// The request certainly had no effect (for etcd: it was never sent, no connection).
    NoEffect,
    /// The call failed or timed out after it was sent: a write may still take effect.
    Unknown,
}

/// One client process's etcd connections, one per node, made on first use.
pub struct EtcdClients {
    addresses: Vec<String>,
    connected: BTreeMap<usize, KvClient<Channel>>,
}

impl EtcdClients {
    /// Connections to the nodes at `addresses` (none made yet).
    pub fn new(addresses: Vec<String>) -> Self {
        Self { addresses, connected: BTreeMap::new() }
    }

    /// How many nodes a call may be sent to.
    pub fn nodes(&self) -> usize {
        self.addresses.len()
    }

    /// Puts `value` at `key`, or deletes `key` when `value` is `None`, through node `node`.
    pub async fn write(&mut self, node: usize, key: &str, value: Option<&str>) -> Result<(), CallFailure> {
        let mut client = self.client(node).await?;
        let call = async {
            match value {
                Some(value) => {
                    let request =
                        PutRequest { key: key.to_owned().into(), value: value.to_owned().into(), ..Default::default() };
                    client.put(request).await.map(|_| ())
                }
                None => {
                    let request = DeleteRangeRequest { key: key.to_owned().into(), ..Default::default() };
                    client.delete_range(request).await.map(|_| ())
                }
            }
        };
        self.finish(node, tokio::time::timeout(CALL_TIMEOUT, call).await)
    }

    /// Sets `key` to `new` if it holds `expected` (absent: `None`), as one etcd transaction;
    /// returns whether the compare held.
    pub async fn compare_and_swap(
        &mut self,
        node: usize,
        key: &str,
        expected: Option<&str>,
        new: &str,
    ) -> Result<bool, CallFailure> {
        let mut client = self.client(node).await?;
        // etcd has no "absent" value: a key that does not exist has version 0.
        let (target, target_union) = match expected {
            Some(value) => (CompareTarget::Value, TargetUnion::Value(value.to_owned().into())),
            None => (CompareTarget::Version, TargetUnion::Version(0)),
        };
        let compare = Compare {
            result: CompareResult::Equal as i32,
            target: target as i32,
            key: key.to_owned().into(),
            target_union: Some(target_union),
            ..Default::default()
        };
        let put = PutRequest { key: key.to_owned().into(), value: new.to_owned().into(), ..Default::default() };
        let request = TxnRequest {
            compare: vec![compare],
            success: vec![RequestOp { request: Some(TxnRequestKind::RequestPut(put)) }],
            failure: Vec::new(),
        };
        let call = async { client.txn(request).await.map(|response| response.into_inner().succeeded) };
        self.finish(node, tokio::time::timeout(CALL_TIMEOUT, call).await)
    }

    /// Reads `key` with a linearizable (not serializable) Range through node `node`.
    pub async fn read(&mut self, node: usize, key: &str) -> Result<Option<String>, CallFailure> {
        let mut client = self.client(node).await?;
        let request = RangeRequest { key: key.to_owned().into(), ..Default::default() };
        let call = async {
            let response = client.range(request).await?.into_inner();
            let found = response.kvs.into_iter().find(|kv| kv.key.as_ref() == key.as_bytes());
            Ok(found.map(|kv| String::from_utf8_lossy(&kv.value).into_owned()))
        };
        self.finish(node, tokio::time::timeout(CALL_TIMEOUT, call).await)
    }

    /// The answer of a call; a failed call forgets its connection.
    fn finish<T>(
        &mut self,
        node: usize,
        outcome: Result<Result<T, tonic::Status>, tokio::time::error::Elapsed>,
    ) -> Result<T, CallFailure> {
        match outcome {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(_)) | Err(_) => {
                self.connected.remove(&node);
                Err(CallFailure::Unknown)
            }
        }
    }

    async fn client(&mut self, node: usize) -> Result<KvClient<Channel>, CallFailure> {
        if let Some(client) = self.connected.get(&node) {
            return Ok(client.clone());
        }
        let address = self.addresses.get(node).ok_or(CallFailure::NoEffect)?;
        let client = KvClient::new(connect(address).await?);
        self.connected.insert(node, client.clone());
        Ok(client)
    }
}

/// The voters and the learners of the configuration, by a linearizable etcd `MemberList`
/// (`linearizable: true`) sent to the node at `address` on a connection of its own.
pub async fn linearizable_members(address: &str) -> Result<(BTreeSet<u64>, BTreeSet<u64>), CallFailure> {
    let mut client = ClusterClient::new(connect(address).await?);
    let call = client.member_list(MemberListRequest { linearizable: true });
    let response = match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(Ok(response)) => response.into_inner(),
        Ok(Err(_)) | Err(_) => return Err(CallFailure::Unknown),
    };
    let (learners, voters): (Vec<_>, Vec<_>) = response.members.iter().partition(|member| member.is_learner);
    Ok((voters.iter().map(|member| member.id).collect(), learners.iter().map(|member| member.id).collect()))
}

/// The alarms raised in the cluster, as (member, etcd alarm type), by a linearizable etcd
/// `alarm list` sent to the node at `address`.
pub async fn raised_alarms(address: &str) -> Result<Vec<(u64, i32)>, CallFailure> {
    let mut client = MaintenanceClient::new(connect(address).await?);
    let list = AlarmRequest { action: 0, member_id: 0, alarm: 0 }; // GET, every type.
    match tokio::time::timeout(CALL_TIMEOUT, client.alarm(list)).await {
        Ok(Ok(response)) => {
            Ok(response.into_inner().alarms.iter().map(|alarm| (alarm.member_id, alarm.alarm)).collect())
        }
        Ok(Err(_)) | Err(_) => Err(CallFailure::Unknown),
    }
}

/// The gRPC health status (`grpc.health.v1` `Check` of the whole node, as a status number) of
/// the node at `address`.
pub async fn grpc_health(address: &str) -> Result<i32, CallFailure> {
    let mut client = HealthClient::new(connect(address).await?);
    let check = HealthCheckRequest { service: String::new() };
    match tokio::time::timeout(CALL_TIMEOUT, client.check(check)).await {
        Ok(Ok(response)) => Ok(response.into_inner().status),
        Ok(Err(_)) | Err(_) => Err(CallFailure::Unknown),
    }
}

/// A connection to the node at `address`, made within [`CONNECT_TIMEOUT`].
async fn connect(address: &str) -> Result<Channel, CallFailure> {
    let endpoint = Endpoint::from_shared(format!("http://{address}"))
        .map_err(|_| CallFailure::NoEffect)?
        .connect_timeout(CONNECT_TIMEOUT);
    match tokio::time::timeout(CONNECT_TIMEOUT, endpoint.connect()).await {
        Ok(Ok(channel)) => Ok(channel),
        Ok(Err(_)) | Err(_) => Err(CallFailure::NoEffect),
    }
}
