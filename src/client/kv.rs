//! Key-value operations: put, get, delete, compare-and-swap and prefix scan.

use std::time::Duration;

use bytes::Bytes;

use super::retry::{Failure, OpKind};
use super::{check_code, ClientError, Consistency, KeelClient, KeyValue, ScanResult};
use crate::proto::client::batch_request::Request as BatchItem;
use crate::proto::client::client_response::SuccessResult;
use crate::proto::client::raft_client_service_client::RaftClientServiceClient;
use crate::proto::client::write_command::{CompareAndSwap, Delete, Insert, Operation};
use crate::proto::client::{ClientReadRequest, ClientResponse, ClientWriteRequest, ScanRequest, WriteCommand};

impl KeelClient {
    /// Sets `key` to `value`. With a `ttl` the key expires that long after the write (rounded up
    /// to whole seconds); without one it never expires.
    pub async fn put(
        &self,
        key: impl Into<Bytes>,
        value: impl Into<Bytes>,
        ttl: Option<Duration>,
    ) -> Result<(), ClientError> {
        let ttl_secs = match ttl {
            None => 0,
            Some(ttl) if ttl.is_zero() => {
                return Err(ClientError::InvalidRequest("a time to live must be at least 1 second".into()))
            }
            Some(ttl) => ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0),
        };
        let command = Operation::Insert(Insert { key: key.into(), value: value.into(), ttl_secs });
        self.write(command).await.map(|_| ())
    }

    /// Deletes `key`. Deleting a key that does not exist succeeds.
    pub async fn delete(&self, key: impl Into<Bytes>) -> Result<(), ClientError> {
        self.write(Operation::Delete(Delete { key: key.into() })).await.map(|_| ())
    }

    /// Sets `key` to `new` if its current value is `expected` (`None`: if the key does not
    /// exist). Returns whether it did.
    pub async fn cas(
        &self,
        key: impl Into<Bytes>,
        expected: Option<impl Into<Bytes>>,
        new: impl Into<Bytes>,
    ) -> Result<bool, ClientError> {
        let command = Operation::CompareAndSwap(CompareAndSwap {
            key: key.into(),
            expected_value: expected.map(Into::into),
            new_value: new.into(),
        });
        self.write(command).await
    }

    /// Reads `keys` with the given consistency. Returns the keys that exist, with their values;
    /// a key that does not exist is left out.
    pub async fn get<K: Into<Bytes>>(
        &self,
        keys: impl IntoIterator<Item = K>,
        consistency: Consistency,
    ) -> Result<Vec<KeyValue>, ClientError> {
        let request = ClientReadRequest {
            client_id: self.options.client_id,
            keys: keys.into_iter().map(Into::into).collect(),
            consistency_policy: Some(consistency.to_proto() as i32),
        };
        if request.keys.is_empty() {
            return Err(ClientError::InvalidRequest("name at least one key to read".into()));
        }
        self.router
            .run(&self.options, OpKind::Read, |endpoint| {
                let request = request.clone();
                async move {
                    match success(self.call_read(&endpoint, request).await?)? {
                        SuccessResult::ReadData(read) => Ok(read
                            .results
                            .into_iter()
                            .map(|result| KeyValue { key: result.key, value: result.value })
                            .collect()),
                        SuccessResult::WriteResult(_) => {
                            Err(Failure::Protocol("a read answered with a write result".into()))
                        }
                    }
                }
            })
            .await
    }

    /// The value of one key, linearizably; `None` when it does not exist.
    pub async fn get_one(&self, key: impl Into<Bytes>) -> Result<Option<Bytes>, ClientError> {
        let key = key.into();
        let found = self.get([key.clone()], Consistency::Linearizable).await?;
        Ok(found.into_iter().find(|entry| entry.key == key).map(|entry| entry.value))
    }

    /// Every key under `prefix` (which must start with `/`), with the revision of the scan.
    pub async fn scan(&self, prefix: impl Into<Bytes>) -> Result<ScanResult, ClientError> {
        let request = ScanRequest { client_id: self.options.client_id, prefix: prefix.into() };
        self.router
            .run(&self.options, OpKind::Read, |endpoint| {
                let message = request.clone();
                async move {
                    let mut service = self.service(&endpoint).await?;
                    // After connecting: a login there gives the token.
                    let request = self.request(message);
                    let response = service
                        .handle_client_scan(request)
                        .await
                        .map_err(|status| self.status_failure(&endpoint, &status))?
                        .into_inner();
                    Ok(ScanResult {
                        entries: response
                            .entries
                            .into_iter()
                            .map(|entry| KeyValue { key: entry.key, value: entry.value })
                            .collect(),
                        revision: response.revision,
                    })
                }
            })
            .await
    }

    /// Sends one write command; returns `WriteResult.succeeded`.
    async fn write(&self, operation: Operation) -> Result<bool, ClientError> {
        let request = ClientWriteRequest {
            client_id: self.options.client_id,
            command: Some(WriteCommand { operation: Some(operation) }),
        };
        self.router
            .run(&self.options, OpKind::Write, |endpoint| {
                let request = request.clone();
                async move {
                    match success(self.call_write(&endpoint, request).await?)? {
                        SuccessResult::WriteResult(result) => Ok(result.succeeded),
                        SuccessResult::ReadData(_) => Err(Failure::Protocol("a write answered with read data".into())),
                    }
                }
            })
            .await
    }

    /// One read attempt at `endpoint`: on its batch stream, or as a unary call.
    async fn call_read(&self, endpoint: &str, request: ClientReadRequest) -> Result<ClientResponse, Failure> {
        if self.options.batch_stream {
            return self.batched(endpoint, BatchItem::Read(request)).await;
        }
        let mut service = self.service(endpoint).await?;
        match service.handle_client_read(self.request(request)).await {
            Ok(response) => Ok(response.into_inner()),
            Err(status) => Err(self.status_failure(endpoint, &status)),
        }
    }

    /// One write attempt at `endpoint`: on its batch stream, or as a unary call.
    async fn call_write(&self, endpoint: &str, request: ClientWriteRequest) -> Result<ClientResponse, Failure> {
        if self.options.batch_stream {
            return self.batched(endpoint, BatchItem::Write(request)).await;
        }
        let mut service = self.service(endpoint).await?;
        match service.handle_client_write(self.request(request)).await {
            Ok(response) => Ok(response.into_inner()),
            Err(status) => Err(self.status_failure(endpoint, &status)),
        }
    }

    /// The client service stub of `endpoint`, connecting if needed.
    pub(super) async fn service(
        &self,
        endpoint: &str,
    ) -> Result<RaftClientServiceClient<tonic::transport::Channel>, Failure> {
        let channel = self.channel(endpoint).await?;
        Ok(RaftClientServiceClient::new(channel)
            .max_decoding_message_size(self.options.message_bytes_max)
            .max_encoding_message_size(self.options.message_bytes_max))
    }
}

/// The success result of a response, or its failure (any code but success, known or not).
fn success(response: ClientResponse) -> Result<SuccessResult, Failure> {
    check_code(response.error, response.metadata)?;
    response.success_result.ok_or_else(|| Failure::Protocol("success without a result".into()))
}
