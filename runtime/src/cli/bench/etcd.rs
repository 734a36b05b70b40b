//! `keel bench --api etcd`: the same closed-loop load sent through the etcd v3 API
//! (`etcdserverpb.KV`), so that one load generator measures a Keel cluster and a real etcd
//! cluster alike.
//!
//! Data flow: [`EtcdLoad::connect`] asks every endpoint for `Maintenance.Status` and picks the
//! one that reports itself as the leader (an etcd follower forwards writes to its leader, which
//! would add a hop that Keel's native client never pays); it then opens `--connections` HTTP/2
//! connections to that endpoint. Each request is one unary `Put` or `Range` with the run's
//! deadline. A write is `Put{key, value}`; a read is `Range{key}`, with `serializable` set for
//! `--consistency eventual` (etcd's serializable read) and unset for `linearizable`.

use std::time::Duration;

use bytes::Bytes;
use keel::client::ClientError;
use keel::proto::etcdserverpb::kv_client::KvClient;
use keel::proto::etcdserverpb::maintenance_client::MaintenanceClient;
use keel::proto::etcdserverpb::{PutRequest, RangeRequest, StatusRequest};
use keel::tls::ClientTls;
use tonic::transport::{Channel, Endpoint};

/// Longest wait for one endpoint's `Status` answer while looking for the leader.
const STATUS_TIMEOUT: Duration = Duration::from_secs(5);

/// Clients of one etcd-API endpoint, one per connection.
#[derive(Clone, Debug)]
pub struct EtcdLoad {
    /// The endpoint the load goes to (the leader when one answered as such).
    pub endpoint: String,
    clients: Vec<KvClient<Channel>>,
    timeout: Duration,
}

impl EtcdLoad {
    /// Finds the leader among `endpoints` and opens `connections` connections to it.
    pub async fn connect(
        endpoints: &[String],
        connections: usize,
        timeout: Duration,
        tls: Option<&ClientTls>,
    ) -> Result<Self, ClientError> {
        let endpoint = find_leader(endpoints, tls).await?;
        let mut clients = Vec::with_capacity(connections.max(1));
        for _ in 0..connections.max(1) {
            clients.push(KvClient::new(channel(&endpoint, tls)?.connect_lazy()));
        }
        Ok(Self { endpoint, clients, timeout })
    }

    /// The number of connections.
    pub fn connections(&self) -> usize {
        self.clients.len()
    }

    /// Puts `value` at `key` through connection `connection`.
    pub async fn put(&self, connection: usize, key: Bytes, value: Bytes) -> Result<(), ClientError> {
        let mut client = self.client(connection);
        let request = PutRequest { key, value, ..PutRequest::default() };
        self.deadline(async move { client.put(request).await.map(drop) }).await
    }

    /// Reads `key` through connection `connection`: serializable (served by the member alone)
    /// or linearizable.
    pub async fn get(&self, connection: usize, key: Bytes, serializable: bool) -> Result<(), ClientError> {
        let mut client = self.client(connection);
        let request = RangeRequest { key, serializable, ..RangeRequest::default() };
        self.deadline(async move { client.range(request).await.map(drop) }).await
    }

    fn client(&self, connection: usize) -> KvClient<Channel> {
        self.clients[connection % self.clients.len()].clone()
    }

    async fn deadline(
        &self,
        call: impl std::future::Future<Output = Result<(), tonic::Status>>,
    ) -> Result<(), ClientError> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(status)) => Err(rpc_error(&self.endpoint, &status)),
            Err(_) => Err(ClientError::Rpc {
                endpoint: self.endpoint.clone(),
                code: tonic::Code::DeadlineExceeded,
                message: format!("no answer within {} ms", self.timeout.as_millis()),
            }),
        }
    }
}

/// The endpoint whose `Status` names itself as leader; the first that answered when none does.
async fn find_leader(endpoints: &[String], tls: Option<&ClientTls>) -> Result<String, ClientError> {
    let mut answered = None;
    let mut last_error = None;
    for endpoint in endpoints {
        let mut client = MaintenanceClient::new(channel(endpoint, tls)?.connect_lazy());
        match tokio::time::timeout(STATUS_TIMEOUT, client.status(StatusRequest {})).await {
            Ok(Ok(status)) => {
                let status = status.into_inner();
                let member = status.header.map_or(0, |header| header.member_id);
                if member != 0 && status.leader == member {
                    return Ok(endpoint.clone());
                }
                answered.get_or_insert_with(|| endpoint.clone());
            }
            Ok(Err(status)) => last_error = Some(rpc_error(endpoint, &status)),
            Err(_) => {
                last_error = Some(ClientError::Unreachable {
                    endpoint: endpoint.clone(),
                    reason: format!("no Status answer within {} s", STATUS_TIMEOUT.as_secs()),
                })
            }
        }
    }
    match (answered, last_error) {
        (Some(endpoint), _) => Ok(endpoint),
        (None, Some(error)) => Err(error),
        (None, None) => Err(ClientError::NoEndpoints),
    }
}

fn channel(endpoint: &str, tls: Option<&ClientTls>) -> Result<Endpoint, ClientError> {
    keel::tls::endpoint(endpoint, tls)
        .map(|endpoint| endpoint.tcp_nodelay(true))
        .map_err(|reason| ClientError::InvalidEndpoint { endpoint: endpoint.to_owned(), reason })
}

fn rpc_error(endpoint: &str, status: &tonic::Status) -> ClientError {
    ClientError::Rpc { endpoint: endpoint.to_owned(), code: status.code(), message: status.message().to_owned() }
}
