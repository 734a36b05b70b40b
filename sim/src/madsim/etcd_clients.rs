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
//!
//! With etcd authentication on (`etcd_auth.rs`, every other seed), the clients log in as
//! [`super::etcd_auth::SIM_USER`] through the node of their first call and send that one token
//! to every node, so that each member checks tokens another member issued; a token refused as
//! invalid is dropped and the next call logs in again.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use keel::proto::etcdserverpb::auth_client::AuthClient;
use keel::proto::etcdserverpb::cluster_client::ClusterClient;
use keel::proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use keel::proto::etcdserverpb::kv_client::KvClient;
use keel::proto::etcdserverpb::maintenance_client::MaintenanceClient;
use keel::proto::etcdserverpb::request_op::Request as TxnRequestKind;
use keel::proto::etcdserverpb::{
    AlarmRequest, AuthenticateRequest, Compare, DeleteRangeRequest, MemberListRequest, PutRequest, RangeRequest,
    RequestOp, TxnRequest,
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
    connected: BTreeMap<usize, Channel>,
    /// The user and password to log in with, when authentication is on.
    credentials: Option<Credentials>,
    /// The token of the last login, sent with every call.
    token: Option<String>,
}

impl EtcdClients {
    /// Connections to the nodes at `addresses` (none made yet), logging in with `credentials`
    /// when authentication is on.
    pub fn new(addresses: Vec<String>, credentials: Option<Credentials>) -> Self {
        Self { addresses, connected: BTreeMap::new(), credentials, token: None }
    }

    /// `message` as a request carrying this client's token, if it has one.
    fn request<T>(&self, message: T) -> tonic::Request<T> {
        with_token(self.token.as_deref(), message)
    }

    /// How many nodes a call may be sent to.
    pub fn nodes(&self) -> usize {
        self.addresses.len()
    }

    /// Puts `value` at `key`, or deletes `key` when `value` is `None`, through node `node`.
    pub async fn write(&mut self, node: usize, key: &str, value: Option<&str>) -> Result<(), CallFailure> {
        let mut client = self.client(node).await?;
        let key: bytes::Bytes = key.to_owned().into();
        let put =
            value.map(|value| PutRequest { key: key.clone(), value: value.to_owned().into(), ..Default::default() });
        let (put, delete) =
            (put.map(|put| self.request(put)), self.request(DeleteRangeRequest { key, ..Default::default() }));
        let call = async {
            match put {
                Some(put) => client.put(put).await.map(|_| ()),
                None => client.delete_range(delete).await.map(|_| ()),
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
        let request = self.request(TxnRequest {
            compare: vec![compare],
            success: vec![RequestOp { request: Some(TxnRequestKind::RequestPut(put)) }],
            failure: Vec::new(),
        });
        let call = async { client.txn(request).await.map(|response| response.into_inner().succeeded) };
        self.finish(node, tokio::time::timeout(CALL_TIMEOUT, call).await)
    }

    /// Reads `key` with a linearizable (not serializable) Range through node `node`.
    pub async fn read(&mut self, node: usize, key: &str) -> Result<Option<String>, CallFailure> {
        let mut client = self.client(node).await?;
        let request = self.request(RangeRequest { key: key.to_owned().into(), ..Default::default() });
        let call = async {
            let response = client.range(request).await?.into_inner();
            let found = response.kvs.into_iter().find(|kv| kv.key.as_ref() == key.as_bytes());
            Ok(found.map(|kv| String::from_utf8_lossy(&kv.value).into_owned()))
        };
        self.finish(node, tokio::time::timeout(CALL_TIMEOUT, call).await)
    }

    /// The answer of a call; a failed call forgets its connection, and a refused token.
    fn finish<T>(
        &mut self,
        node: usize,
        outcome: Result<Result<T, tonic::Status>, tokio::time::error::Elapsed>,
    ) -> Result<T, CallFailure> {
        match outcome {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(status)) => {
                if status.code() == tonic::Code::Unauthenticated {
                    self.token = None;
                }
                self.connected.remove(&node);
                Err(CallFailure::Unknown)
            }
            Err(_) => {
                self.connected.remove(&node);
                Err(CallFailure::Unknown)
            }
        }
    }

    /// A client of node `node`'s KV service, logged in first when authentication is on and this
    /// client has no token (a failed login sent nothing: `NoEffect`).
    async fn client(&mut self, node: usize) -> Result<KvClient<Channel>, CallFailure> {
        let channel = match self.connected.get(&node) {
            Some(channel) => channel.clone(),
            None => {
                let address = self.addresses.get(node).ok_or(CallFailure::NoEffect)?;
                let channel = connect(address).await?;
                self.connected.insert(node, channel.clone());
                channel
            }
        };
        if let (Some(credentials), None) = (&self.credentials, &self.token) {
            match log_in(&channel, credentials).await {
                Ok(token) => self.token = Some(token),
                Err(_) => {
                    self.connected.remove(&node);
                    return Err(CallFailure::NoEffect);
                }
            }
        }
        Ok(KvClient::new(channel))
    }
}

/// A user name and password of etcd authentication: the native client's, so that both kinds
/// of simulated client log in alike.
pub use keel::client::Credentials;

/// A token for `credentials` from the node behind `channel` (etcd's `Authenticate`).
pub async fn log_in(channel: &Channel, credentials: &Credentials) -> Result<String, CallFailure> {
    let request = AuthenticateRequest { name: credentials.user.clone(), password: credentials.password.clone() };
    match tokio::time::timeout(CALL_TIMEOUT, AuthClient::new(channel.clone()).authenticate(request)).await {
        Ok(Ok(answer)) => Ok(answer.into_inner().token),
        Ok(Err(_)) | Err(_) => Err(CallFailure::Unknown),
    }
}

/// `message` as a request carrying `token` (etcd's `token` metadata), if there is one.
pub fn with_token<T>(token: Option<&str>, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(value) = token.and_then(|token| token.parse().ok()) {
        request.metadata_mut().insert("token", value);
    }
    request
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
pub async fn connect(address: &str) -> Result<Channel, CallFailure> {
    let endpoint = Endpoint::from_shared(format!("http://{address}"))
        .map_err(|_| CallFailure::NoEffect)?
        .connect_timeout(CONNECT_TIMEOUT);
    match tokio::time::timeout(CONNECT_TIMEOUT, endpoint.connect()).await {
        Ok(Ok(channel)) => Ok(channel),
        Ok(Err(_)) | Err(_) => Err(CallFailure::NoEffect),
    }
}
