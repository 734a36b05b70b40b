//! `RaftClientService.Batch` (Keel extension): many writes and reads multiplexed over one
//! long-lived bidirectional stream, so that the fixed cost of a gRPC call (HTTP/2 stream set-up,
//! headers, a task and a wake-up per call on each side) is shared by many requests.
//!
//! One task serves one stream. It reads a message of requests, starts each request exactly as
//! its unary call would ([`ClientService::write`] / [`ClientService::read`]: the same
//! validation, the same path through the node, the same in-band errors), and keeps every request
//! in flight in one `FuturesUnordered`. Whenever requests complete, it sends the answers that are
//! ready at that moment together, in one message, each tagged with its request id.
//!
//! # Bounds and their behaviour
//!
//! * A message with more than [`ServiceConfig::batch_requests_max`] requests, or one that would
//!   bring the requests in flight above [`ServiceConfig::batch_inflight_max`], is refused as a
//!   whole (none of its requests is carried out): the task stops reading, answers the requests
//!   already accepted, then ends the stream with `RESOURCE_EXHAUSTED`, the Keel code
//!   (`REQUEST_TOO_LARGE` or `OVERLOADED`) in the `keel-error-code` metadata.
//! * The answers go through a bounded channel; while it is full (the client does not read), the
//!   task waits, and so reads no further requests: HTTP/2 flow control pushes back on the client.
//! * On shutdown ([`super::StreamCloser`]) the task stops reading, answers the requests in
//!   flight, then ends the stream with `UNAVAILABLE`. When the client half-closes its side, the
//!   requests in flight are answered and the stream ends normally. When the client goes away,
//!   the requests in flight are abandoned (a write among them may still apply, as with a unary
//!   call whose connection broke).

use std::future::Future;
use std::pin::Pin;

use futures_util::stream::{FuturesUnordered, StreamExt};
use futures_util::FutureExt;
use keel::proto::client::batch_request::Request as BatchItem;
use keel::proto::client::{BatchRequest, BatchRequests, BatchResponse, BatchResponses, ClientResponse};
use keel::proto::error::ErrorCode;
use tokio::sync::{mpsc, watch};
use tonic::codegen::tokio_stream::Stream;
use tonic::codegen::BoxStream;
use tonic::Status;

use super::client::ClientService;
use super::error::{status_of, WireError};
use super::{shutting_down_status, ChannelStream, ServiceConfig};

/// Answer messages buffered per stream between the serving task and the network.
const OUTPUT_BUFFER_MESSAGES: usize = 16;

/// One request in flight: resolves to its id and answer.
type InFlight = Pin<Box<dyn Future<Output = BatchResponse> + Send>>;

/// Opens the answer stream of one `Batch` call and spawns the task that serves it.
pub(super) fn open<S>(
    service: ClientService,
    token: Option<String>,
    inbound: S,
    closing: watch::Receiver<bool>,
) -> BoxStream<BatchResponses>
where
    S: Stream<Item = Result<BatchRequests, Status>> + Send + Unpin + 'static,
{
    let (output, receiver) = mpsc::channel(OUTPUT_BUFFER_MESSAGES);
    let token = token.map(std::sync::Arc::<str>::from);
    let session = Session { service, token, inbound, output, closing, in_flight: FuturesUnordered::new() };
    tokio::spawn(session.run());
    Box::pin(ChannelStream::new(receiver))
}

/// The state of one `Batch` stream.
struct Session<S> {
    service: ClientService,
    /// The token the stream was opened with (`access.rs`): each request is checked with it.
    token: Option<std::sync::Arc<str>>,
    inbound: S,
    output: mpsc::Sender<Result<BatchResponses, Status>>,
    closing: watch::Receiver<bool>,
    in_flight: FuturesUnordered<InFlight>,
}

/// What woke the task.
enum Step {
    /// A request completed.
    Answered(BatchResponse),
    /// A message of requests, the client's end of its side, or a broken stream.
    Received(Option<Result<BatchRequests, Status>>),
    /// The node is shutting down.
    Closing,
}

/// Why the task stopped reading requests.
enum Stop {
    /// The client half-closed its side: end normally once the requests in flight are answered.
    Finished,
    /// End with this status once the requests in flight are answered.
    Status(Status),
    /// The client is gone: end now.
    Gone,
}

impl<S> Session<S>
where
    S: Stream<Item = Result<BatchRequests, Status>> + Send + Unpin + 'static,
{
    async fn run(mut self) {
        let mut stop = None;
        loop {
            if let Some(reason) = &stop {
                if matches!(reason, Stop::Gone) || self.in_flight.is_empty() {
                    break;
                }
            }
            let reading = stop.is_none();
            let step = tokio::select! {
                biased;
                Some(answer) = self.in_flight.next(), if !self.in_flight.is_empty() => Step::Answered(answer),
                message = self.inbound.next(), if reading => Step::Received(message),
                _ = self.closing.wait_for(|closed| *closed), if reading => Step::Closing,
            };
            match step {
                Step::Answered(first) => {
                    if !self.answer(first).await {
                        stop = Some(Stop::Gone);
                    }
                }
                Step::Received(Some(Ok(batch))) => stop = self.accept(batch).err().map(Stop::Status),
                Step::Received(Some(Err(_))) => stop = Some(Stop::Gone),
                Step::Received(None) => stop = Some(Stop::Finished),
                Step::Closing => stop = Some(Stop::Status(shutting_down_status())),
            }
        }
        if let Some(Stop::Status(status)) = stop {
            let _ = self.output.send(Err(status)).await;
        }
    }

    /// Sends `first` and every other answer ready now, in one message. False when the client
    /// is gone.
    async fn answer(&mut self, first: BatchResponse) -> bool {
        let mut responses = vec![first];
        while let Some(Some(response)) = self.in_flight.next().now_or_never() {
            responses.push(response);
        }
        self.output.send(Ok(BatchResponses { responses })).await.is_ok()
    }

    /// Starts every request of `batch`, or refuses the whole message when it breaks a limit.
    fn accept(&mut self, batch: BatchRequests) -> Result<(), Status> {
        check_limits(self.service.config(), batch.requests.len(), self.in_flight.len())?;
        for request in batch.requests {
            self.in_flight.push(start(self.service.clone(), self.token.clone(), request));
        }
        Ok(())
    }
}

/// The status that refuses a message of `count` requests arriving while `in_flight` are, if it
/// breaks a limit.
pub(super) fn check_limits(config: &ServiceConfig, count: usize, in_flight: usize) -> Result<(), Status> {
    if count > config.batch_requests_max {
        let message = format!(
            "a batch message holds {count} requests, above the limit of {}; send fewer per message",
            config.batch_requests_max
        );
        return Err(status_of(&WireError::new(ErrorCode::RequestTooLarge, message)));
    }
    if in_flight.saturating_add(count) > config.batch_inflight_max {
        let message = format!(
            "{in_flight} requests in flight plus {count} new ones exceed the limit of {} per batch stream; \
             wait for answers before sending more",
            config.batch_inflight_max
        );
        return Err(status_of(&WireError::new(ErrorCode::Overloaded, message)));
    }
    Ok(())
}

/// The future that carries out one request as its unary call would, and tags the answer.
fn start(service: ClientService, token: Option<std::sync::Arc<str>>, request: BatchRequest) -> InFlight {
    let request_id = request.request_id;
    Box::pin(async move {
        let token = token.as_deref();
        let response = match request.request {
            Some(BatchItem::Write(write)) => service.write(token, write).await,
            Some(BatchItem::Read(read)) => service.read(token, read).await,
            None => missing_request(),
        };
        BatchResponse { request_id, response: Some(response) }
    })
}

fn missing_request() -> ClientResponse {
    let error = WireError::new(ErrorCode::InvalidArgument, "the batch request has neither a write nor a read");
    ClientResponse { error: error.code as i32, success_result: None, metadata: Some(error.metadata) }
}
