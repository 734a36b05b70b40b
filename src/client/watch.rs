//! Key and prefix watches.

use bytes::Bytes;

use super::retry::{decide, Failure, OpKind};
use super::{ClientError, KeelClient, WatchEvent, WatchEventKind};
use crate::proto::client::{WatchEventType, WatchRequest, WatchResponse};
use crate::proto::error::ErrorCode;

/// The events of one watch, in revision order. Read them with [`WatchStream::next`].
///
/// The stream ends (`None`) when the server closes it. A server that cancels the watcher (its
/// bounded buffer overflowed) yields one [`ClientError::WatchCanceled`] with
/// [`ErrorCode::WatchLagged`] and ends: resume with [`KeelClient::watch_from`] at its revision + 1.
#[derive(Debug)]
pub struct WatchStream {
    endpoint: String,
    inner: tonic::codec::Streaming<WatchResponse>,
    done: bool,
}

impl WatchStream {
    /// The endpoint serving this watch.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The next event; `None` once the stream has ended. After an error the stream ends.
    pub async fn next(&mut self) -> Option<Result<WatchEvent, ClientError>> {
        if self.done {
            return None;
        }
        let result = match self.inner.message().await {
            Ok(Some(response)) => event(&self.endpoint, response),
            Ok(None) => {
                self.done = true;
                return None;
            }
            Err(status) => {
                let failure = super::failure_from_status(&status);
                Err(decide(OpKind::Read, &self.endpoint, failure).1)
            }
        };
        self.done = result.is_err();
        Some(result)
    }
}

/// The error of a CANCELED response (or of any response with an error code).
fn canceled(response: &WatchResponse) -> ClientError {
    match ErrorCode::try_from(response.error) {
        Ok(ErrorCode::Success) => {
            ClientError::WatchCanceled { code: ErrorCode::WatchLagged, revision: response.revision }
        }
        Ok(code) => ClientError::WatchCanceled { code, revision: response.revision },
        Err(_) => ClientError::UnknownCode {
            code: response.error,
            message: format!("the watch was canceled at revision {}", response.revision),
        },
    }
}

/// One response as an event, or the error it carries.
fn event(endpoint: &str, response: WatchResponse) -> Result<WatchEvent, ClientError> {
    let kind = match WatchEventType::try_from(response.event_type) {
        _ if response.error != ErrorCode::Success as i32 => return Err(canceled(&response)),
        Ok(WatchEventType::Canceled) => return Err(canceled(&response)),
        Ok(WatchEventType::Put) => WatchEventKind::Put,
        Ok(WatchEventType::Delete) => WatchEventKind::Delete,
        Ok(WatchEventType::Progress) => WatchEventKind::Progress,
        Err(_) => {
            return Err(ClientError::Protocol {
                endpoint: endpoint.to_owned(),
                reason: format!("unknown watch event type {}", response.event_type),
            })
        }
    };
    Ok(WatchEvent {
        kind,
        key: response.key,
        value: response.value,
        prev_value: response.prev_value,
        revision: response.revision,
    })
}

impl KeelClient {
    /// Watches `key` (with `prefix` false) or every key under the path prefix `key` (with
    /// `prefix` true; it must start and end with `/`). With `prev_kv` each event carries the
    /// value before the change. Any node can serve a watch: the first endpoint that accepts it
    /// does.
    pub async fn watch(&self, key: impl Into<Bytes>, prefix: bool, prev_kv: bool) -> Result<WatchStream, ClientError> {
        self.watch_from(key, prefix, prev_kv, 0).await
    }

    /// Like [`KeelClient::watch`], starting at `start_revision`: the matching events from that
    /// revision on are replayed from the store's history first, then live ones follow, with no
    /// gap and no duplicate. Anchor a watch on a scan with `scan.revision + 1`; resume after
    /// [`ClientError::WatchCanceled`] with `revision + 1`. 0 watches from now on.
    pub async fn watch_from(
        &self,
        key: impl Into<Bytes>,
        prefix: bool,
        prev_kv: bool,
        start_revision: u64,
    ) -> Result<WatchStream, ClientError> {
        let request =
            WatchRequest { client_id: self.options.client_id, key: key.into(), prefix, prev_kv, start_revision };
        self.router
            .run(&self.options, OpKind::Read, |endpoint| {
                // No per-request deadline: the stream stays open.
                let message = request.clone();
                async move {
                    let mut service = self.service(&endpoint).await?;
                    // After connecting: a login there gives the token.
                    let request = self.stream_request(message);
                    let inner = service
                        .watch(request)
                        .await
                        .map_err(|status| self.status_failure(&endpoint, &status))?
                        .into_inner();
                    Ok::<_, Failure>(WatchStream { endpoint, inner, done: false })
                }
            })
            .await
    }
}
