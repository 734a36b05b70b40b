//! `keel.client.RaftClientService` (seed 000) on a [`NodeHandle`].
//!
//! * **HandleClientWrite** maps the `WriteCommand` to a `KvCommand` (insert: `ttl_secs` becomes
//!   `ttl_ms`, 0 meaning no expiry; delete; compare-and-swap, where an absent `expected_value`
//!   means the key must not exist), checks it against the key-value limits (so that size errors
//!   get their own codes) and replicates it. The answer is `ClientResponse { error, write_result
//!   { succeeded }, metadata }`; `succeeded` is false only for a compare-and-swap whose
//!   comparison failed. A request without a command is `INVALID_ARGUMENT`.
//! * **HandleClientRead** reads at most [`ServiceConfig::read_keys_max`] keys (more:
//!   `REQUEST_TOO_LARGE`) with the requested policy, or the configured default when none is
//!   given. `LEASE_READ` is refused with `CONSISTENCY_POLICY_UNSUPPORTED` when leases are
//!   disabled (`raft.lease` is `None`); otherwise the leader serves it from its lease, or with a
//!   ReadIndex round when it holds none. `ReadResults` lists the keys that exist, in request
//!   order; **keys that do not exist are omitted** (as d-engine does), and a key named twice is
//!   listed twice. An answer larger than [`ServiceConfig::message_bytes_max`] is refused with
//!   `REQUEST_TOO_LARGE`.
//! * **HandleClientScan** is served linearizably (on any node: a follower confirms with the
//!   leader). `ScanResponse` has no error field, so errors are gRPC statuses built by
//!   [`super::error::status_of`]: a prefix that does not start with `/` is `INVALID_ARGUMENT`, a
//!   result larger than the message limit `RESOURCE_EXHAUSTED`, `NOT_LEADER` and the like
//!   `UNAVAILABLE` with the Keel code in the `keel-error-code` metadata. `revision` is the store
//!   revision the scan read: every event with a revision at or below it is reflected in the
//!   entries, so a client opens a watch first, then scans, then skips watch events at or below
//!   the scan's revision.
//! * **Watch** streams the changes of one exact key, or of every key under a prefix that starts
//!   and ends with `/`, from the moment the stream is opened: `PUT` and `DELETE` events with the
//!   change's store revision, and `prev_value` when `prev_kv` is set. An idle stream receives a
//!   `PROGRESS` event carrying the latest revision every
//!   [`ServiceConfig::watch_progress_interval_ms`]. A watcher that falls behind by more than the
//!   node's event buffer receives one `CANCELED` event with error `WATCH_LAGGED` and the
//!   revision to resume from, and the stream ends. An invalid request or the watcher limit
//!   ([`ServiceConfig::watchers_max`], `OVERLOADED`) is answered the same way: one `CANCELED`
//!   event with the error. On shutdown the stream ends with the gRPC status `UNAVAILABLE`. With
//!   etcd authentication enabled, a caller without read permission on the key or prefix (or
//!   without a valid token) is refused with the call's gRPC status instead (`access.rs`).
//! * **WatchMembership** sends the committed `MembershipSnapshot` at once, then one per
//!   committed configuration change; on shutdown it ends with `UNAVAILABLE`.
//! * **Batch** (Keel extension) carries many writes and reads over one stream, each with its
//!   request id and its unary call's semantics; its limits are in `batch.rs`.
//!
//! # The resume revision of a lagged watcher
//!
//! `CANCELED.revision` is the highest revision `R` such that every matching event with a
//! revision at or below `R` was delivered on this stream (or happened before it was opened).
//! Events of one revision (a transaction, an expiry) arrive one by one, so when the watcher
//! falls behind in the middle of a revision, `R` is the revision before it.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use keel::proto::client::client_response::SuccessResult;
use keel::proto::client::raft_client_service_server::{RaftClientService, RaftClientServiceServer};
use keel::proto::client::write_command::Operation;
use keel::proto::client::{
    BatchRequests, BatchResponses, ClientReadRequest, ClientResponse, ClientResult, ClientWriteRequest, KvEntry,
    MembershipSnapshot, ReadConsistencyPolicy, ReadResults, ScanRequest, ScanResponse, WatchMembershipRequest,
    WatchRequest, WatchResponse, WriteCommand, WriteResult,
};
use keel::proto::error::ErrorCode;
use keel_core::kv::{KeyRange, KvCommand, KvLimits};
use tokio::sync::mpsc;
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status};

use super::access;
use super::error::{kv_wire_error, status_of, wire_error, RetryHints, WireError};
pub use super::watcher::membership_snapshot;
use super::watcher::{canceled, watch_membership, KeyFilter, Watcher};
use super::{shutting_down_status, ChannelStream, ServiceConfig, StreamCloser, WatcherSlots, ENTRY_OVERHEAD_BYTES};
use crate::etcd::access::Caller;
use crate::node::{ClientError, NodeConfig, NodeHandle, ReadConsistency};

/// The gRPC server type that serves [`ClientService`] (`add_service` it to a
/// `tonic::transport::Server`).
#[cfg(not(madsim))]
pub type ClientServer = RaftClientServiceServer<ClientService>;
/// The gRPC server type that serves [`ClientService`] (`add_service` it to a
/// `tonic::transport::Server`). The simulated stubs carry an interceptor type parameter.
#[cfg(madsim)]
pub type ClientServer = RaftClientServiceServer<ClientService, tonic::codegen::IdentityInterceptor>;

/// What the client service needs besides the handle.
#[derive(Debug)]
struct Shared {
    config: ServiceConfig,
    limits: KvLimits,
    lease_reads: bool,
    retry: RetryHints,
    slots: Arc<WatcherSlots>,
    closer: StreamCloser,
}

/// The native client service of one node. Cheap to clone.
#[derive(Clone)]
pub struct ClientService {
    handle: NodeHandle,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for ClientService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientService").field("node", &self.handle.id()).field("config", &self.shared.config).finish()
    }
}

impl ClientService {
    /// The service of the node behind `handle`, configured as `node` (its key-value limits,
    /// whether leases are on, its election timeout for retry hints). Call
    /// [`ServiceConfig::validate`] first.
    pub fn new(handle: NodeHandle, node: &NodeConfig, config: ServiceConfig) -> Self {
        Self::with_closer(handle, node, config, StreamCloser::new())
    }

    /// Like [`ClientService::new`], with streams ended by `closer` (shared with an
    /// [`super::AdminService`] or a server).
    pub fn with_closer(handle: NodeHandle, node: &NodeConfig, config: ServiceConfig, closer: StreamCloser) -> Self {
        let retry = RetryHints {
            election_ms: node.raft.election_timeout_ms_min,
            overloaded_ms: config.overloaded_retry_after_ms,
        };
        let slots = WatcherSlots::new(config.watchers_max.max(1));
        let shared =
            Shared { config, limits: node.kv_limits, lease_reads: node.raft.lease.is_some(), retry, slots, closer };
        Self { handle, shared: Arc::new(shared) }
    }

    /// The service ready to serve, with message size limits of
    /// [`ServiceConfig::message_bytes_max`] both ways.
    pub fn into_server(self) -> ClientServer {
        let max = self.shared.config.message_bytes_max;
        RaftClientServiceServer::new(self).max_decoding_message_size(max).max_encoding_message_size(max)
    }

    /// What ends this service's streams.
    pub fn closer(&self) -> StreamCloser {
        self.shared.closer.clone()
    }

    /// How many watch streams are open.
    pub fn open_watchers(&self) -> usize {
        self.shared.slots.open()
    }

    /// The service's settings.
    pub fn config(&self) -> &ServiceConfig {
        &self.shared.config
    }

    /// Serves one `Batch` stream of requests (see `batch.rs`) opened with `token` (etcd
    /// authentication, see `access.rs`; `None` while it is off): answers stream back as the
    /// requests complete, tagged with their ids.
    pub fn open_batch<S>(&self, token: Option<String>, requests: S) -> BoxStream<BatchResponses>
    where
        S: tonic::codegen::tokio_stream::Stream<Item = Result<BatchRequests, Status>> + Send + Unpin + 'static,
    {
        super::batch::open(self.clone(), token, requests, self.shared.closer.subscribe())
    }

    /// Carries out one write sent with `token` (see `access.rs`); errors are in the answer.
    pub async fn write(&self, token: Option<&str>, request: ClientWriteRequest) -> ClientResponse {
        let command = match command_of(request.command) {
            Ok(command) => command,
            Err(error) => return error_response(error),
        };
        if let Err(error) = self.shared.limits.validate(&command) {
            return error_response(kv_wire_error(&error));
        }
        let caller =
            match access::authorize(&self.handle, token, |caller| access::require_write(caller, &command)).await {
                Ok(caller) => caller,
                Err(error) => return error_response(error),
            };
        match self.handle.write(caller.authorized(command)).await {
            Ok(result) => match result.error {
                Some(error) => error_response(kv_wire_error(&error)),
                None => ClientResponse {
                    error: ErrorCode::Success as i32,
                    success_result: Some(SuccessResult::WriteResult(WriteResult { succeeded: result.succeeded })),
                    metadata: None,
                },
            },
            Err(error) => error_response(self.client_error(&error).await),
        }
    }

    /// Carries out one read sent with `token` (see `access.rs`); errors are in the answer.
    pub async fn read(&self, token: Option<&str>, request: ClientReadRequest) -> ClientResponse {
        let config = &self.shared.config;
        if request.keys.len() > config.read_keys_max {
            let message = format!(
                "the read names {} keys, above the limit of {}; split it into several reads",
                request.keys.len(),
                config.read_keys_max
            );
            return error_response(WireError::new(ErrorCode::RequestTooLarge, message));
        }
        if let Some(error) = request.keys.iter().find_map(|key| self.check_key(key).err()) {
            return error_response(error);
        }
        let consistency = match self.consistency_of(request.consistency_policy) {
            Ok(consistency) => consistency,
            Err(error) => return error_response(error),
        };
        let check =
            |caller: &Caller| request.keys.iter().try_for_each(|key| caller.require_read(&KeyRange::key(key.clone())));
        let caller = match access::authorize(&self.handle, token, check).await {
            Ok(caller) => caller,
            Err(error) => return error_response(error),
        };
        let values = match self.handle.read(request.keys.clone(), consistency).await {
            Ok(values) => values,
            Err(error) => return error_response(self.client_error(&error).await),
        };
        // Checked before the read's barrier: checked again against a table as new as the read.
        if consistency != ReadConsistency::Eventual && access::auth_moved(&self.handle, &caller) {
            if let Err(error) = access::authorize(&self.handle, token, check).await {
                return error_response(error);
            }
        }
        let results: Vec<ClientResult> =
            values.into_iter().flatten().map(|kv| ClientResult { key: kv.key, value: kv.value }).collect();
        let size: usize = results.iter().map(|r| r.key.len() + r.value.len() + ENTRY_OVERHEAD_BYTES).sum();
        if size > config.message_bytes_max {
            let message = format!(
                "the answer would be about {size} bytes, above the message limit of {} bytes; read fewer keys at once",
                config.message_bytes_max
            );
            return error_response(WireError::new(ErrorCode::RequestTooLarge, message));
        }
        ClientResponse {
            error: ErrorCode::Success as i32,
            success_result: Some(SuccessResult::ReadData(ReadResults { results })),
            metadata: None,
        }
    }

    /// Carries out one prefix scan sent with `token` (see `access.rs`); errors are gRPC
    /// statuses (see the module docs).
    pub async fn scan(&self, token: Option<&str>, request: ScanRequest) -> Result<ScanResponse, Status> {
        let prefix = request.prefix;
        if !prefix.starts_with(b"/") {
            let message = "the scan prefix must start with '/', for example \"/services/\"";
            return Err(status_of(&WireError::new(ErrorCode::InvalidArgument, message)));
        }
        if prefix.len() > self.shared.limits.key_bytes_max {
            let error =
                keel_core::kv::KvError::KeyTooLarge { size: prefix.len(), max: self.shared.limits.key_bytes_max };
            return Err(status_of(&kv_wire_error(&error)));
        }
        let check = |caller: &Caller| caller.require_read(&KeyRange::prefix(prefix.clone()));
        let caller = access::authorize(&self.handle, token, check).await.map_err(|error| status_of(&error))?;
        let range = match self.handle.scan(prefix.clone(), ReadConsistency::Linearizable).await {
            Ok(range) => range,
            Err(error) => return Err(status_of(&self.client_error(&error).await)),
        };
        if access::auth_moved(&self.handle, &caller) {
            access::authorize(&self.handle, token, check).await.map_err(|error| status_of(&error))?;
        }
        let size: usize = range.kvs.iter().map(|kv| kv.key.len() + kv.value.len() + ENTRY_OVERHEAD_BYTES).sum();
        let max = self.shared.config.message_bytes_max;
        if size > max {
            let message = format!(
                "the scan found {} keys, about {size} bytes, above the message limit of {max} bytes; scan a narrower prefix",
                range.kvs.len()
            );
            return Err(status_of(&WireError::new(ErrorCode::RequestTooLarge, message)));
        }
        let entries = range.kvs.into_iter().map(|kv| KvEntry { key: kv.key, value: kv.value }).collect();
        Ok(ScanResponse { entries, revision: range.revision })
    }

    /// Opens a watch stream sent with `token` (see the module docs). The caller is checked once,
    /// when the stream opens, as etcd checks its watches (`access.rs`); a refusal is the call's
    /// gRPC status (`UNAUTHENTICATED` or `PERMISSION_DENIED`, the Keel code in the
    /// `keel-error-code` metadata), so that a client can log in again and retry the call.
    pub async fn open_watch(
        &self,
        token: Option<&str>,
        request: WatchRequest,
    ) -> Result<BoxStream<WatchResponse>, Status> {
        let (output, receiver) = mpsc::channel(self.shared.config.watch_output_buffer.max(1));
        let stream: BoxStream<WatchResponse> = Box::pin(ChannelStream::new(receiver));
        if self.shared.closer.is_closed() {
            let _ = output.try_send(Err(shutting_down_status()));
            return Ok(stream);
        }
        let filter = match self.watch_filter(&request) {
            Ok(filter) => filter,
            Err(error) => {
                let _ = output.try_send(Ok(canceled(error.code, 0)));
                return Ok(stream);
            }
        };
        let range = match &filter {
            KeyFilter::Exact(key) => KeyRange::key(key.clone()),
            KeyFilter::Prefix(prefix) => KeyRange::prefix(prefix.clone()),
        };
        let check = |caller: &Caller| caller.require_read(&range);
        access::authorize(&self.handle, token, check).await.map_err(|error| status_of(&error))?;
        let Some(slot) = self.shared.slots.acquire() else {
            let _ = output.try_send(Ok(canceled(ErrorCode::Overloaded, 0)));
            return Ok(stream);
        };
        // Subscribing and reading the revision happen together on the driver: every event
        // above `revision` is received (or lost to a lag, which cancels the stream), and every
        // event at or below it is in the history the watcher replays from.
        let (events, revision) = match self.handle.subscribe_at_revision().await {
            Ok(subscription) => subscription,
            Err(error) => {
                let _ = output.try_send(Ok(canceled(self.client_error(&error).await.code, 0)));
                return Ok(stream);
            }
        };
        let watcher = Watcher {
            filter,
            prev_kv: request.prev_kv,
            events,
            output,
            closing: self.shared.closer.subscribe(),
            progress_interval: Duration::from_millis(self.shared.config.watch_progress_interval_ms.max(1)),
            first_revision: request.start_revision,
            current: revision,
            complete: revision,
            handle: self.handle.clone(),
            _slot: slot,
        };
        tokio::spawn(watcher.run());
        Ok(stream)
    }

    /// Opens a membership watch stream sent with `token` (see `access.rs`: any valid token)
    /// (see the module docs).
    pub async fn open_membership_watch(&self, token: Option<&str>) -> Result<BoxStream<MembershipSnapshot>, Status> {
        access::authenticate(&self.handle, token).await.map_err(|error| status_of(&error))?;
        let Some(slot) = self.shared.slots.acquire() else {
            let message = format!("too many open watch streams (watchers_max = {})", self.shared.config.watchers_max);
            let error = WireError::new(ErrorCode::Overloaded, message).retry_after(self.shared.retry.overloaded_ms);
            return Err(status_of(&error));
        };
        let (output, receiver) = mpsc::channel(self.shared.config.watch_output_buffer.max(1));
        let membership = self.handle.membership();
        let closing = self.shared.closer.subscribe();
        tokio::spawn(watch_membership(membership, output, closing, slot));
        Ok(Box::pin(ChannelStream::new(receiver)))
    }

    fn check_key(&self, key: &Bytes) -> Result<(), WireError> {
        if key.is_empty() {
            return Err(kv_wire_error(&keel_core::kv::KvError::EmptyKey));
        }
        if key.len() > self.shared.limits.key_bytes_max {
            let max = self.shared.limits.key_bytes_max;
            return Err(kv_wire_error(&keel_core::kv::KvError::KeyTooLarge { size: key.len(), max }));
        }
        Ok(())
    }

    fn consistency_of(&self, policy: Option<i32>) -> Result<ReadConsistency, WireError> {
        let consistency = match policy.map(ReadConsistencyPolicy::try_from) {
            None => self.shared.config.default_read_consistency,
            Some(Ok(ReadConsistencyPolicy::LeaseRead)) => ReadConsistency::Lease,
            Some(Ok(ReadConsistencyPolicy::LinearizableRead)) => ReadConsistency::Linearizable,
            Some(Ok(ReadConsistencyPolicy::EventualConsistency)) => ReadConsistency::Eventual,
            Some(Err(_)) => {
                let message = format!("unknown consistency policy {}", policy.unwrap_or_default());
                return Err(WireError::new(ErrorCode::InvalidArgument, message));
            }
        };
        if consistency == ReadConsistency::Lease && !self.shared.lease_reads {
            let message = "lease reads are disabled on this cluster (they need check-quorum and a clock drift \
                           bound); use READ_CONSISTENCY_POLICY_LINEARIZABLE_READ";
            return Err(WireError::new(ErrorCode::ConsistencyPolicyUnsupported, message));
        }
        Ok(consistency)
    }

    fn watch_filter(&self, request: &WatchRequest) -> Result<KeyFilter, WireError> {
        self.check_key(&request.key)?;
        if !request.prefix {
            return Ok(KeyFilter::Exact(request.key.clone()));
        }
        if !request.key.starts_with(b"/") || !request.key.ends_with(b"/") {
            let message = "a watch prefix must start and end with '/', for example \"/config/\"";
            return Err(WireError::new(ErrorCode::InvalidArgument, message));
        }
        Ok(KeyFilter::Prefix(request.key.clone()))
    }

    /// The wire form of a node error; a dropped proposal gets the current leader hint.
    async fn client_error(&self, error: &ClientError) -> WireError {
        let wire = wire_error(error, self.shared.retry);
        if matches!(error, ClientError::ProposalDropped(_)) {
            if let Ok(status) = self.handle.status().await {
                return wire.with_leader(&status.leader);
            }
        }
        wire
    }
}

#[tonic::async_trait]
impl RaftClientService for ClientService {
    async fn handle_client_write(
        &self,
        request: Request<ClientWriteRequest>,
    ) -> Result<Response<ClientResponse>, Status> {
        let token = access::token_of(request.metadata());
        Ok(Response::new(self.write(token.as_deref(), request.into_inner()).await))
    }

    async fn handle_client_read(
        &self,
        request: Request<ClientReadRequest>,
    ) -> Result<Response<ClientResponse>, Status> {
        let token = access::token_of(request.metadata());
        Ok(Response::new(self.read(token.as_deref(), request.into_inner()).await))
    }

    async fn handle_client_scan(&self, request: Request<ScanRequest>) -> Result<Response<ScanResponse>, Status> {
        let token = access::token_of(request.metadata());
        self.scan(token.as_deref(), request.into_inner()).await.map(Response::new)
    }

    type WatchStream = BoxStream<WatchResponse>;

    async fn watch(&self, request: Request<WatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
        let token = access::token_of(request.metadata());
        self.open_watch(token.as_deref(), request.into_inner()).await.map(Response::new)
    }

    type WatchMembershipStream = BoxStream<MembershipSnapshot>;

    async fn watch_membership(
        &self,
        request: Request<WatchMembershipRequest>,
    ) -> Result<Response<Self::WatchMembershipStream>, Status> {
        let token = access::token_of(request.metadata());
        self.open_membership_watch(token.as_deref()).await.map(Response::new)
    }

    type BatchStream = BoxStream<BatchResponses>;

    async fn batch(
        &self,
        request: Request<tonic::Streaming<BatchRequests>>,
    ) -> Result<Response<Self::BatchStream>, Status> {
        let token = access::token_of(request.metadata());
        Ok(Response::new(self.open_batch(token, request.into_inner())))
    }
}

/// The `KvCommand` of a `WriteCommand`.
fn command_of(command: Option<WriteCommand>) -> Result<KvCommand, WireError> {
    let missing = || {
        WireError::new(ErrorCode::InvalidArgument, "the write has no command; set insert, delete or compare_and_swap")
    };
    match command.and_then(|c| c.operation).ok_or_else(missing)? {
        Operation::Insert(insert) => {
            let ttl_ms = match insert.ttl_secs {
                0 => None,
                secs => Some(secs.checked_mul(1_000).ok_or_else(|| {
                    WireError::new(ErrorCode::InvalidArgument, format!("ttl_secs {secs} is too large"))
                })?),
            };
            Ok(KvCommand::Put { key: insert.key, value: insert.value, ttl_ms })
        }
        Operation::Delete(delete) => Ok(KvCommand::Delete { key: delete.key }),
        Operation::CompareAndSwap(cas) => Ok(KvCommand::CompareAndSwap {
            key: cas.key,
            expected_value: cas.expected_value,
            new_value: cas.new_value,
            ttl_ms: None,
        }),
    }
}

fn error_response(error: WireError) -> ClientResponse {
    ClientResponse { error: error.code as i32, success_result: None, metadata: Some(error.metadata) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel::proto::client::write_command::{CompareAndSwap, Delete, Insert};
    use keel_core::Membership;

    #[test]
    fn write_commands_map_to_kv_commands() {
        let insert = |ttl_secs| WriteCommand {
            operation: Some(Operation::Insert(Insert { key: "/a".into(), value: "1".into(), ttl_secs })),
        };
        assert_eq!(
            command_of(Some(insert(0))),
            Ok(KvCommand::Put { key: "/a".into(), value: "1".into(), ttl_ms: None })
        );
        assert_eq!(
            command_of(Some(insert(3))),
            Ok(KvCommand::Put { key: "/a".into(), value: "1".into(), ttl_ms: Some(3_000) })
        );
        assert_eq!(command_of(Some(insert(u64::MAX))).map_err(|e| e.code), Err(ErrorCode::InvalidArgument));
        let delete = WriteCommand { operation: Some(Operation::Delete(Delete { key: "/a".into() })) };
        assert_eq!(command_of(Some(delete)), Ok(KvCommand::Delete { key: "/a".into() }));
        let cas = WriteCommand {
            operation: Some(Operation::CompareAndSwap(CompareAndSwap {
                key: "/a".into(),
                expected_value: None,
                new_value: "2".into(),
            })),
        };
        assert_eq!(
            command_of(Some(cas)),
            Ok(KvCommand::CompareAndSwap {
                key: "/a".into(),
                expected_value: None,
                new_value: "2".into(),
                ttl_ms: None
            })
        );
        assert_eq!(command_of(None).map_err(|e| e.code), Err(ErrorCode::InvalidArgument));
        assert_eq!(
            command_of(Some(WriteCommand { operation: None })).map_err(|e| e.code),
            Err(ErrorCode::InvalidArgument)
        );
    }

    #[test]
    fn key_filters_match_exact_keys_and_prefixes() {
        let exact = KeyFilter::Exact("/a".into());
        assert!(exact.matches(b"/a") && !exact.matches(b"/ab"));
        let prefix = KeyFilter::Prefix("/a/".into());
        assert!(prefix.matches(b"/a/x") && prefix.matches(b"/a/") && !prefix.matches(b"/a"));
    }

    #[test]
    fn membership_snapshots_list_voters_of_both_halves_and_learners() {
        let mut membership = Membership::with_voters([1, 2]);
        membership.voters_outgoing.insert(3);
        membership.learners.insert(4, keel_core::LearnerKind::Promotable);
        let snapshot = membership_snapshot(7, &membership);
        assert_eq!((snapshot.members, snapshot.learners, snapshot.committed_index), (vec![1, 2, 3], vec![4], 7));
    }
}
