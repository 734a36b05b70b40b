//! Requests multiplexed over one `Batch` stream (Keel extension of the native API), used when
//! [`ClientOptions::batch_stream`](super::ClientOptions::batch_stream) is on.
//!
//! A [`BatchStream`] owns one bidirectional `RaftClientService.Batch` call to one node and two
//! tasks: the **writer** takes the requests callers submitted, gives each an id, and sends every
//! request queued at that moment in one message (at most [`BATCH_REQUESTS_MAX`]); the **reader**
//! receives answer messages and hands each answer to its caller by id. The two never wait on each
//! other, so a full send window cannot keep answers from being read.
//!
//! Bounds: at most [`BATCH_INFLIGHT_MAX`] requests are in flight per stream (a caller waits for a
//! permit, which it holds until its answer arrives or the stream fails), and the submission queue
//! holds at most as many. Both are below the server's defaults (1,024 per message, 4,096 in
//! flight), so a default server never refuses this client's messages.
//!
//! Failures keep the retry policy safe: a request still queued when the stream fails was never
//! sent ([`Failure::NotSent`]); a request in flight gets the status that ended the stream
//! (`RESOURCE_EXHAUSTED` / `UNAVAILABLE` with a Keel code when the server gave one, since the
//! server answers everything it accepted before ending the stream), or [`Failure::Lost`] when
//! the connection broke, which a write reports as an unknown outcome.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tonic::codegen::tokio_stream::Stream;

use super::retry::Failure;
use super::{failure_from_status, KeelClient};
use crate::proto::client::batch_request::Request as BatchItem;
use crate::proto::client::raft_client_service_client::RaftClientServiceClient;
use crate::proto::client::{BatchRequest, BatchRequests, BatchResponses, ClientResponse};

/// Most requests the writer puts in one message.
pub const BATCH_REQUESTS_MAX: usize = 512;

/// Most requests in flight on one stream.
pub const BATCH_INFLIGHT_MAX: usize = 1_024;

/// Messages queued between the writer and the connection.
const OUTBOUND_MESSAGES: usize = 4;

/// The answer a caller waits for.
type Answer = Result<ClientResponse, Failure>;

/// A request handed to the writer, with the permit it holds and where its answer goes.
struct Submission {
    request: BatchItem,
    permit: OwnedSemaphorePermit,
    reply: oneshot::Sender<Answer>,
}

/// Requests sent and not answered yet, by id; `closed` once the stream failed.
#[derive(Default)]
struct Pending {
    waiting: BTreeMap<u64, (oneshot::Sender<Answer>, OwnedSemaphorePermit)>,
    closed: bool,
}

/// One multiplexed `Batch` stream to one node. Dropping it ends the stream once the requests
/// queued so far were sent.
#[derive(Debug)]
pub(crate) struct BatchStream {
    submissions: mpsc::Sender<Submission>,
    permits: Arc<Semaphore>,
    /// The login (`retry::Session::generation`) whose token opened the stream: the server
    /// checks every request on it with that token, so a new login needs a new stream.
    generation: u64,
}

impl BatchStream {
    /// Opens the stream on `service` with `metadata` (the login token of `generation`) and
    /// starts its writer and reader tasks.
    pub(crate) fn open(
        service: RaftClientServiceClient<tonic::transport::Channel>,
        metadata: tonic::metadata::MetadataMap,
        generation: u64,
    ) -> Self {
        let (submissions, queue) = mpsc::channel(BATCH_INFLIGHT_MAX);
        let pending = Arc::new(Mutex::new(Pending::default()));
        tokio::spawn(run(service, metadata, queue, pending));
        Self { submissions, permits: Arc::new(Semaphore::new(BATCH_INFLIGHT_MAX)), generation }
    }

    /// Whether the stream has ended (its tasks stopped) or was opened with an older login:
    /// open a new one.
    pub(crate) fn is_stale(&self, generation: u64) -> bool {
        self.submissions.is_closed() || self.generation != generation
    }

    /// Sends one request on the stream and waits for its answer.
    pub(crate) async fn call(&self, request: BatchItem) -> Answer {
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|_| Failure::NotSent("the batch stream is closed".into()))?;
        let (reply, answer) = oneshot::channel();
        self.submissions
            .send(Submission { request, permit, reply })
            .await
            .map_err(|_| Failure::NotSent("the batch stream has ended".into()))?;
        // Dropped unanswered: the writer never took it (the stream had already failed).
        answer.await.unwrap_or_else(|_| Err(Failure::NotSent("the batch stream has ended".into())))
    }
}

impl KeelClient {
    /// Sends `request` on the batch stream to `endpoint` (opened now if there is none, or if the
    /// last one ended) and waits for its answer.
    pub(super) async fn batched(&self, endpoint: &str, request: BatchItem) -> Answer {
        let stream = self.batch_stream(endpoint).await?;
        let answer = stream.call(request).await;
        if matches!(answer, Err(Failure::NotSent(_) | Failure::Lost(_))) {
            // The connection may be broken: the next attempt reconnects.
            self.lock_channels().remove(endpoint);
        }
        answer
    }

    async fn batch_stream(&self, endpoint: &str) -> Result<Arc<BatchStream>, Failure> {
        let generation = self.login_generation();
        if let Some(stream) = self.lock_batch_streams().get(endpoint).filter(|stream| !stream.is_stale(generation)) {
            return Ok(Arc::clone(stream));
        }
        let service = self.service(endpoint).await?;
        // After connecting: a login there gives the token.
        let generation = self.login_generation();
        let metadata = self.stream_request(()).into_parts().0;
        let mut streams = self.lock_batch_streams();
        // Another caller may have opened one meanwhile: share it.
        if let Some(stream) = streams.get(endpoint).filter(|stream| !stream.is_stale(generation)) {
            return Ok(Arc::clone(stream));
        }
        let stream = Arc::new(BatchStream::open(service, metadata, generation));
        streams.insert(endpoint.to_owned(), Arc::clone(&stream));
        Ok(stream)
    }

    fn lock_batch_streams(&self) -> MutexGuard<'_, std::collections::BTreeMap<String, Arc<BatchStream>>> {
        self.batch_streams.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Opens the call, then runs the writer and the reader until the stream ends.
async fn run(
    mut service: RaftClientServiceClient<tonic::transport::Channel>,
    metadata: tonic::metadata::MetadataMap,
    queue: mpsc::Receiver<Submission>,
    pending: Arc<Mutex<Pending>>,
) {
    let (outbound, outbound_queue) = mpsc::channel(OUTBOUND_MESSAGES);
    let writer = tokio::spawn(write_loop(queue, outbound, Arc::clone(&pending)));
    let request = tonic::Request::from_parts(metadata, Default::default(), OutboundStream { queue: outbound_queue });
    let failure = match service.batch(request).await {
        Ok(response) => read_loop(response.into_inner(), &pending).await,
        Err(status) => failure_from_status(&status),
    };
    fail_all(&pending, &failure);
    writer.abort();
}

/// Takes submissions, numbers them, and sends those queued together in one message.
async fn write_loop(
    mut queue: mpsc::Receiver<Submission>,
    outbound: mpsc::Sender<BatchRequests>,
    pending: Arc<Mutex<Pending>>,
) {
    let mut next_id = 1u64;
    while let Some(first) = queue.recv().await {
        let mut taken = vec![first];
        while taken.len() < BATCH_REQUESTS_MAX {
            match queue.try_recv() {
                Ok(submission) => taken.push(submission),
                Err(_) => break,
            }
        }
        let mut requests = Vec::with_capacity(taken.len());
        {
            let mut pending = lock(&pending);
            if pending.closed {
                for submission in taken {
                    let _ = submission.reply.send(Err(Failure::NotSent("the batch stream has ended".into())));
                }
                return;
            }
            for submission in taken {
                let request_id = next_id;
                next_id += 1;
                pending.waiting.insert(request_id, (submission.reply, submission.permit));
                requests.push(BatchRequest { request_id, request: Some(submission.request) });
            }
        }
        if outbound.send(BatchRequests { requests }).await.is_err() {
            return;
        }
    }
}

/// Hands each answer to its caller until the stream ends; returns how it ended.
async fn read_loop(mut inbound: tonic::Streaming<BatchResponses>, pending: &Mutex<Pending>) -> Failure {
    loop {
        let message = match inbound.message().await {
            Ok(Some(message)) => message,
            Ok(None) => return Failure::Lost("the node ended the batch stream".into()),
            Err(status) => return failure_from_status(&status),
        };
        let mut pending = lock(pending);
        for answer in message.responses {
            // An id this stream did not send (or answered twice) is ignored.
            if let Some((reply, _permit)) = pending.waiting.remove(&answer.request_id) {
                let result =
                    answer.response.ok_or_else(|| Failure::Protocol("a batch answer without a response".into()));
                let _ = reply.send(result);
            }
        }
    }
}

/// Fails every request in flight with `failure` and refuses new ones.
fn fail_all(pending: &Mutex<Pending>, failure: &Failure) {
    let mut pending = lock(pending);
    pending.closed = true;
    // In request order (a BTreeMap): the order the callers wake in must not depend on hashing,
    // or a simulated run would not be reproducible from its seed.
    for (_, (reply, _permit)) in std::mem::take(&mut pending.waiting) {
        let _ = reply.send(Err(failure.clone()));
    }
}

fn lock(pending: &Mutex<Pending>) -> MutexGuard<'_, Pending> {
    pending.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The request side of the call: the messages the writer queues.
struct OutboundStream {
    queue: mpsc::Receiver<BatchRequests>,
}

impl Stream for OutboundStream {
    type Item = BatchRequests;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().queue.poll_recv(cx)
    }
}
