//! `keel bench --api etcd`: the same closed-loop load sent through the etcd v3 API
//! (`etcdserverpb.KV`), so that one load generator measures a Keel cluster and a real etcd
//! cluster alike.
//!
//! Data flow: [`EtcdLoad::connect`] asks every endpoint for `Maintenance.Status` and picks the
//! one that reports itself as the leader (an etcd follower forwards writes to its leader, which
//! would add a hop that Keel's native client never pays); it then opens `--connections` HTTP/2
//! connections to that endpoint. Each request is one unary `Put` or `Range` with the run's
//! deadline. A write is `Put{key, value}`; a read is `Range{key}`, with `serializable` set for
//! `--consistency eventual` (etcd's serializable read) and unset for `linearizable`. With
//! `--user`, it logs in once (`Auth.Authenticate` on that endpoint) and sends the token with
//! every request: a run longer than the token's lifetime (`--auth-token-ttl-ms`, 5 minutes by
//! default) sees its later requests refused.

use std::time::Duration;

use bytes::Bytes;
use keel::client::{ClientError, Credentials};
use keel::proto::etcdserverpb::auth_client::AuthClient;
use keel::proto::etcdserverpb::kv_client::KvClient;
use keel::proto::etcdserverpb::maintenance_client::MaintenanceClient;
use keel::proto::etcdserverpb::{AuthenticateRequest, PutRequest, RangeRequest, StatusRequest};
use keel::tls::ClientTls;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Channel, Endpoint};

/// The gRPC metadata key of an etcd auth token.
const TOKEN_METADATA: &str = "token";

/// Longest wait for one endpoint's `Status` answer while looking for the leader.
const STATUS_TIMEOUT: Duration = Duration::from_secs(5);

/// Clients of one etcd-API endpoint, one per connection.
#[derive(Clone, Debug)]
pub struct EtcdLoad {
    /// The endpoint the load goes to (the leader when one answered as such).
    pub endpoint: String,
    clients: Vec<KvClient<Channel>>,
    timeout: Duration,
    /// The `token` metadata every request carries, with `--user`.
    token: Option<MetadataValue<Ascii>>,
}

impl EtcdLoad {
    /// Finds the leader among `endpoints`, logs in there as `credentials` if given, and opens
    /// `connections` connections to it.
    pub async fn connect(
        endpoints: &[String],
        connections: usize,
        timeout: Duration,
        tls: Option<&ClientTls>,
        credentials: Option<&Credentials>,
    ) -> Result<Self, ClientError> {
        let endpoint = find_leader(endpoints, tls).await?;
        let mut clients = Vec::with_capacity(connections.max(1));
        for _ in 0..connections.max(1) {
            clients.push(KvClient::new(channel(&endpoint, tls)?.connect_lazy()));
        }
        let token = match credentials {
            Some(credentials) => Some(log_in(&endpoint, tls, credentials).await?),
            None => None,
        };
        Ok(Self { endpoint, clients, timeout, token })
    }

    /// The number of connections.
    pub fn connections(&self) -> usize {
        self.clients.len()
    }

    /// Puts `value` at `key` through connection `connection`.
    pub async fn put(&self, connection: usize, key: Bytes, value: Bytes) -> Result<(), ClientError> {
        let mut client = self.client(connection);
        let request = self.request(PutRequest { key, value, ..PutRequest::default() });
        self.deadline(async move { client.put(request).await.map(drop) }).await
    }

    /// Reads `key` through connection `connection`: serializable (served by the member alone)
    /// or linearizable.
    pub async fn get(&self, connection: usize, key: Bytes, serializable: bool) -> Result<(), ClientError> {
        let mut client = self.client(connection);
        let request = self.request(RangeRequest { key, serializable, ..RangeRequest::default() });
        self.deadline(async move { client.range(request).await.map(drop) }).await
    }

    /// `message` as a request, with the login token if there is one.
    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(token) = &self.token {
            request.metadata_mut().insert(TOKEN_METADATA, token.clone());
        }
        request
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

/// A token for `credentials` from `endpoint` (etcd's `Authenticate`).
async fn log_in(
    endpoint: &str,
    tls: Option<&ClientTls>,
    credentials: &Credentials,
) -> Result<MetadataValue<Ascii>, ClientError> {
    let mut auth = AuthClient::new(channel(endpoint, tls)?.connect_lazy());
    let request = AuthenticateRequest { name: credentials.user.clone(), password: credentials.password.clone() };
    let answer = tokio::time::timeout(STATUS_TIMEOUT, auth.authenticate(request)).await.map_err(|_| {
        ClientError::Unreachable {
            endpoint: endpoint.to_owned(),
            reason: format!("no Authenticate answer within {} s", STATUS_TIMEOUT.as_secs()),
        }
    })?;
    let token = answer.map_err(|status| rpc_error(endpoint, &status))?.into_inner().token;
    token.parse().map_err(|_| ClientError::Protocol {
        endpoint: endpoint.to_owned(),
        reason: "the auth token is not valid metadata text".into(),
    })
}

fn channel(endpoint: &str, tls: Option<&ClientTls>) -> Result<Endpoint, ClientError> {
    keel::tls::endpoint(endpoint, tls)
        .map(|endpoint| endpoint.tcp_nodelay(true))
        .map_err(|reason| ClientError::InvalidEndpoint { endpoint: endpoint.to_owned(), reason })
}

fn rpc_error(endpoint: &str, status: &tonic::Status) -> ClientError {
    ClientError::Rpc { endpoint: endpoint.to_owned(), code: status.code(), message: status.message().to_owned() }
}
