//! `etcdserverpb.Watch`: many watches multiplexed on one bidirectional stream.
//!
//! A stream is served by a session task that reads the client's requests; each watch is its own
//! task that writes into the stream's bounded output (`watch_output_buffer` responses), so a
//! client that does not read stalls its watches, whose event buffers then overflow and cancel
//! them. Each watch takes one of the node's etcd watcher slots (`watchers_max`).
//!
//! * **create**: the watch subscribes to the node's applied events together with the store
//!   revision `R` at that moment (`NodeHandle::subscribe_at_revision`), answers `created` with
//!   `header.revision = R`, replays the history from `start_revision` up to `R` when it is given
//!   (paged, `NodeHandle::history`), then forwards live events above `R`: no gap, no duplicate.
//!   `range_end`, `filters` (NOPUT, NODELETE) and `prev_kv` as in etcd. Watch ids are assigned
//!   from 0 per stream unless the request names one; a named id in use is refused.
//! * A `start_revision` below the compacted revision `C` is answered with `canceled` and
//!   `compact_revision = C` (etcd's compacted answer); starting at `C` itself replays from the
//!   events after `C`, those of `C` being compacted in Keel.
//! * **progress_notify**: an idle watch receives an empty response with the current revision
//!   every `watch_progress_interval_ms`. A **progress request** is answered at once with the
//!   current revision and watch id -1.
//! * **cancel** stops the watch and answers `canceled`.
//! * A watch that falls more than the node's event buffer behind is canceled with a reason that
//!   names the revision to watch again from (etcd never drops a watcher; Keel bounds memory).
//! * With the `hasleader` metadata (etcdctl sends it) the stream is refused, or ended, with
//!   `etcdserver: no leader` while this node knows no leader.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use keel::proto::etcdserverpb::watch_create_request::FilterType;
use keel::proto::etcdserverpb::watch_request::RequestUnion;
use keel::proto::etcdserverpb::watch_server::{Watch, WatchServer};
use keel::proto::etcdserverpb::{WatchCreateRequest, WatchRequest, WatchResponse};
use keel::proto::mvccpb::{event::EventType, Event, KeyValue};
use keel_core::kv::{KeyRange, KvEvent, KvEventKind};
use tokio::sync::{broadcast, mpsc, watch};
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status};

use super::convert::{int, key_value};
use super::{errors, Shared};
use crate::node::{ClientError, NodeHandle};
use crate::service::{send_or_stop, shutting_down_status, ChannelStream, WatcherSlot};

/// Events read from the history per call.
const HISTORY_PAGE_EVENTS: usize = 1_000;
/// Live events sent in one response at most.
const LIVE_BATCH_EVENTS: usize = 512;
/// How often a `hasleader` stream checks that a leader is known.
const LEADER_CHECK: Duration = Duration::from_millis(1_000);

/// The gRPC server type of [`EtcdWatch`].
#[cfg(not(madsim))]
pub type EtcdWatchServer = WatchServer<EtcdWatch>;
/// The gRPC server type of [`EtcdWatch`] (the simulated stubs carry an interceptor type).
#[cfg(madsim)]
pub type EtcdWatchServer = WatchServer<EtcdWatch, tonic::codegen::IdentityInterceptor>;

/// The etcd `Watch` service of one node.
#[derive(Clone, Debug)]
pub struct EtcdWatch {
    pub(super) shared: Arc<Shared>,
}

pub(super) fn server(watch: EtcdWatch, message_bytes_max: usize) -> EtcdWatchServer {
    WatchServer::new(watch).max_decoding_message_size(message_bytes_max).max_encoding_message_size(message_bytes_max)
}

type Output = mpsc::Sender<Result<WatchResponse, Status>>;

/// Completes once `flag` is (or becomes) true, or its sender is gone.
async fn raised(flag: &mut watch::Receiver<bool>) {
    let _ = flag.wait_for(|raised| *raised).await;
}

/// Whether the node knows a leader.
async fn leader_known(handle: &NodeHandle) -> bool {
    handle.status().await.is_ok_and(|status| status.leader.leader_id.is_some())
}

#[tonic::async_trait]
impl Watch for EtcdWatch {
    type WatchStream = BoxStream<WatchResponse>;

    async fn watch(
        &self,
        request: Request<tonic::Streaming<WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let require_leader = request.metadata().get("hasleader").is_some_and(|value| value == "true");
        if require_leader && !leader_known(&self.shared.handle).await {
            return Err(errors::status(errors::NO_LEADER));
        }
        let token = super::access::token_of(request.metadata());
        let receiver = open(Arc::clone(&self.shared), request.into_inner(), require_leader, token)?;
        Ok(Response::new(Box::pin(ChannelStream::new(receiver))))
    }
}

/// Starts a watch session over `requests` and returns its bounded output: what a `Watch` call
/// does, for the gRPC service and for the HTTP gateway (`gateway.rs`), whose requests come
/// from a JSON body. With `require_leader` the session ends when no leader is known. Each
/// watch created is checked against the rights of the stream's auth `token`, as it is created.
pub(super) fn open(
    shared: Arc<Shared>,
    requests: impl Stream<Item = Result<WatchRequest, Status>> + Unpin + Send + 'static,
    require_leader: bool,
    token: Option<String>,
) -> Result<mpsc::Receiver<Result<WatchResponse, Status>>, Status> {
    if shared.closer.is_closed() {
        return Err(shutting_down_status());
    }
    let (output, receiver) = mpsc::channel(shared.config.watch_output_buffer.max(1));
    let session = Session { shared, output, watches: BTreeMap::new(), next_id: 0, require_leader, token };
    tokio::spawn(session.run(requests));
    Ok(receiver)
}

/// One watch stream: its watches (id → stop signal) and its output.
struct Session {
    shared: Arc<Shared>,
    output: Output,
    watches: BTreeMap<i64, watch::Sender<bool>>,
    next_id: i64,
    require_leader: bool,
    /// The stream's auth token, checked at each create.
    token: Option<String>,
}

impl Session {
    async fn run(mut self, mut requests: impl Stream<Item = Result<WatchRequest, Status>> + Unpin + Send) {
        let mut closing = self.shared.closer.subscribe();
        let mut leader_check = tokio::time::interval(LEADER_CHECK);
        loop {
            tokio::select! {
                biased;
                request = requests.next() => match request {
                    Some(Ok(request)) => self.on_request(request).await,
                    Some(Err(_)) => break,
                    // The client closed its side but may still read: the watches go on until it
                    // goes away or the node stops.
                    None => {
                        tokio::select! {
                            biased;
                            _ = self.output.closed() => {}
                            _ = raised(&mut closing) => drop(self.output.try_send(Err(shutting_down_status()))),
                        }
                        break;
                    }
                },
                _ = raised(&mut closing) => {
                    let _ = self.output.try_send(Err(shutting_down_status()));
                    break;
                }
                _ = leader_check.tick(), if self.require_leader => {
                    if !leader_known(&self.shared.handle).await {
                        let _ = self.output.try_send(Err(errors::status(errors::NO_LEADER)));
                        break;
                    }
                }
            }
        }
        for stop in self.watches.values() {
            stop.send_replace(true);
        }
    }

    async fn on_request(&mut self, request: WatchRequest) {
        match request.request_union {
            Some(RequestUnion::CreateRequest(create)) => self.create(create).await,
            Some(RequestUnion::CancelRequest(cancel)) => {
                if let Some(stop) = self.watches.remove(&cancel.watch_id) {
                    stop.send_replace(true);
                    let response = self.answer(cancel.watch_id, |r| r.canceled = true).await;
                    self.send(response).await;
                }
            }
            Some(RequestUnion::ProgressRequest(_)) => {
                let response = self.answer(-1, |_| {}).await;
                self.send(response).await;
            }
            None => {}
        }
    }

    async fn create(&mut self, create: WatchCreateRequest) {
        // Forget the watches that ended on their own (canceled by the server): their tasks
        // dropped their receivers. This keeps the map as small as the watches running.
        self.watches.retain(|_, stop| !stop.is_closed());
        let id = if create.watch_id != 0 { create.watch_id } else { self.next_free_id() };
        if self.watches.contains_key(&id) {
            let reason = "mvcc: duplicate watch ID provided on the WatchStream".to_string();
            let response = self.answer(id, |r| (r.created, r.canceled, r.cancel_reason) = (true, true, reason)).await;
            return self.send(response).await;
        }
        if let Err(status) = self.permitted(&create).await {
            let reason = status.message().to_string();
            let response = self.answer(id, |r| (r.created, r.canceled, r.cancel_reason) = (true, true, reason)).await;
            return self.send(response).await;
        }
        let Some(slot) = self.shared.watch_slots.acquire() else {
            let reason = format!(
                "etcdserver: too many watchers on this node (watchers_max = {})",
                self.shared.config.watchers_max
            );
            let response = self.answer(id, |r| (r.created, r.canceled, r.cancel_reason) = (true, true, reason)).await;
            return self.send(response).await;
        };
        let (stop, stopped) = watch::channel(false);
        self.watches.insert(id, stop);
        let task = WatchTask::new(&self.shared, id, create, self.output.clone(), stopped, slot);
        tokio::spawn(task.run());
    }

    /// Ok if the stream's caller may read the keys `create` watches (etcd checks once, at
    /// creation; a refused watch is answered created and canceled, with the reason).
    async fn permitted(&self, create: &WatchCreateRequest) -> Result<(), Status> {
        let range = keel_core::kv::KeyRange::new(create.key.clone(), create.range_end.clone());
        self.shared.authorize_token(self.token.as_deref(), |caller| caller.require_read(&range)).await.map(drop)
    }

    fn next_free_id(&mut self) -> i64 {
        while self.watches.contains_key(&self.next_id) {
            self.next_id += 1;
        }
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// A response for watch `id` with the current header, shaped by `fill`.
    async fn answer(&self, id: i64, fill: impl FnOnce(&mut WatchResponse)) -> WatchResponse {
        let mut response =
            WatchResponse { header: self.shared.headers.header(None).await.ok(), watch_id: id, ..Default::default() };
        fill(&mut response);
        response
    }

    async fn send(&self, response: WatchResponse) {
        let mut closing = self.shared.closer.subscribe();
        send_or_stop(&self.output, Ok(response), &mut closing).await;
    }
}

/// Which events a watch forwards.
#[derive(Clone, Debug)]
struct Selector {
    range: KeyRange,
    no_put: bool,
    no_delete: bool,
    prev_kv: bool,
}

impl Selector {
    fn of(create: &WatchCreateRequest) -> Self {
        let filter = |kind: FilterType| create.filters.contains(&(kind as i32));
        Self {
            range: KeyRange::new(create.key.clone(), create.range_end.clone()),
            no_put: filter(FilterType::Noput),
            no_delete: filter(FilterType::Nodelete),
            prev_kv: create.prev_kv,
        }
    }

    fn selects(&self, event: &KvEvent) -> bool {
        let wanted = match event.kind {
            KvEventKind::Put => !self.no_put,
            KvEventKind::Delete => !self.no_delete,
        };
        wanted && self.range.contains(&event.key)
    }

    fn event(&self, event: &KvEvent) -> Event {
        let kv = KeyValue {
            key: event.key.clone(),
            create_revision: int(event.create_revision),
            mod_revision: int(event.mod_revision),
            version: int(event.version),
            value: event.value.clone(),
            lease: int(event.lease),
        };
        let prev_kv = event.prev_kv.as_ref().filter(|_| self.prev_kv).map(|prev| key_value(prev, false));
        let kind = match event.kind {
            KvEventKind::Put => EventType::Put,
            KvEventKind::Delete => EventType::Delete,
        };
        Event { r#type: kind as i32, kv: Some(kv), prev_kv }
    }
}

/// One watch: replays the history it asked for, then forwards live events.
struct WatchTask {
    handle: NodeHandle,
    headers: super::header::Headers,
    id: i64,
    selector: Selector,
    start_revision: u64,
    progress: Option<Duration>,
    output: Output,
    stopped: watch::Receiver<bool>,
    closing: watch::Receiver<bool>,
    bytes_max: usize,
    _slot: WatcherSlot,
}

/// Why a watch ends early.
enum Ended {
    /// Stopped, or the stream went away: nothing more to send.
    Quietly,
    /// Canceled by the server: the response to send last.
    Canceled(WatchResponse),
}

impl WatchTask {
    fn new(
        shared: &Shared,
        id: i64,
        create: WatchCreateRequest,
        output: Output,
        stopped: watch::Receiver<bool>,
        slot: WatcherSlot,
    ) -> Self {
        let interval = Duration::from_millis(shared.config.watch_progress_interval_ms.max(1));
        Self {
            handle: shared.handle.clone(),
            headers: shared.headers.clone(),
            id,
            selector: Selector::of(&create),
            start_revision: u64::try_from(create.start_revision).unwrap_or(0),
            progress: create.progress_notify.then_some(interval),
            output,
            stopped,
            closing: shared.closer.subscribe(),
            // Room for the response's other fields within the message limit.
            bytes_max: shared.config.message_bytes_max / 2,
            _slot: slot,
        }
    }

    async fn run(mut self) {
        let (events, anchor) = match self.handle.subscribe_at_revision().await {
            Ok(subscription) => subscription,
            Err(error) => {
                let reason = errors::of_client(&error).message().to_string();
                let response =
                    self.response(None, |r| (r.created, r.canceled, r.cancel_reason) = (true, true, reason)).await;
                self.send(response).await;
                return;
            }
        };
        let created = self.response(Some(anchor), |r| r.created = true).await;
        if !self.send(created).await {
            return;
        }
        let ended = match self.replay(anchor).await {
            Ok(()) => self.live(events, anchor).await,
            Err(ended) => ended,
        };
        if let Ended::Canceled(response) = ended {
            self.send(response).await;
        }
    }

    /// Sends the matching history from `start_revision` up to `anchor`, in pages.
    async fn replay(&mut self, anchor: u64) -> Result<(), Ended> {
        if self.start_revision == 0 || self.start_revision > anchor {
            return Ok(());
        }
        let mut after = self.start_revision - 1;
        while after < anchor {
            let page = match self.handle.history(after, HISTORY_PAGE_EVENTS).await {
                Ok(page) => page,
                // etcd serves a watch from the compacted revision itself: Keel starts after it.
                Err(ClientError::Compacted { compacted, .. }) if compacted == self.start_revision => {
                    after = compacted;
                    continue;
                }
                Err(ClientError::Compacted { compacted, .. }) => {
                    let compacted = int(compacted);
                    let reason = errors::COMPACTED.1.to_string();
                    let response = self
                        .response(None, |r| {
                            (r.canceled, r.compact_revision, r.cancel_reason) = (true, compacted, reason)
                        })
                        .await;
                    return Err(Ended::Canceled(response));
                }
                Err(error) => return Err(self.failed(&error).await),
            };
            let Some(last) = page.last().map(|event| event.revision) else { break };
            let events: Vec<&KvEvent> =
                page.iter().filter(|event| event.revision <= anchor && self.selector.selects(event)).collect();
            if !self.send_events(&events).await {
                return Err(Ended::Quietly);
            }
            after = last;
        }
        Ok(())
    }

    /// Forwards live events above `anchor` (and from `start_revision` on) until stopped.
    async fn live(&mut self, mut events: broadcast::Receiver<KvEvent>, anchor: u64) -> Ended {
        let floor = anchor.max(self.start_revision.saturating_sub(1));
        let mut complete = anchor;
        let mut stopped = self.stopped.clone();
        let period = self.progress.unwrap_or(Duration::from_secs(3_600));
        let mut progress = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        loop {
            tokio::select! {
                biased;
                received = events.recv() => {
                    let first = match received {
                        Ok(event) => event,
                        Err(broadcast::error::RecvError::Lagged(missed)) => return self.lagged(missed, complete).await,
                        Err(broadcast::error::RecvError::Closed) => return Ended::Quietly,
                    };
                    let mut batch = vec![first];
                    while batch.len() < LIVE_BATCH_EVENTS {
                        match events.try_recv() {
                            Ok(event) => batch.push(event),
                            Err(_) => break,
                        }
                    }
                    let selected: Vec<&KvEvent> = batch.iter().filter(|e| e.revision > floor && self.selector.selects(e)).collect();
                    if !self.send_events(&selected).await {
                        return Ended::Quietly;
                    }
                    complete = batch.last().map_or(complete, |event| event.revision.saturating_sub(1).max(complete));
                    progress.reset();
                }
                _ = progress.tick(), if self.progress.is_some() => {
                    let response = self.response(None, |_| {}).await;
                    if !self.send(response).await {
                        return Ended::Quietly;
                    }
                }
                _ = raised(&mut stopped) => return Ended::Quietly,
            }
        }
    }

    async fn lagged(&self, missed: u64, complete: u64) -> Ended {
        let reason = format!(
            "etcdserver: the watcher fell {missed} events behind and was canceled; watch again from revision {}",
            complete + 1
        );
        Ended::Canceled(self.response(None, |r| (r.canceled, r.cancel_reason) = (true, reason)).await)
    }

    async fn failed(&self, error: &ClientError) -> Ended {
        let reason = errors::of_client(error).message().to_string();
        Ended::Canceled(self.response(None, |r| (r.canceled, r.cancel_reason) = (true, reason)).await)
    }

    /// Sends `events` in responses of at most `bytes_max` bytes of keys and values; a response's
    /// header revision is the revision of its last event. Returns false when the stream ended.
    async fn send_events(&mut self, events: &[&KvEvent]) -> bool {
        let mut start = 0;
        while start < events.len() {
            let mut end = start;
            let mut bytes = 0;
            while end < events.len() && (end == start || bytes < self.bytes_max) {
                let event = events[end];
                bytes += event.key.len() + event.value.len() + event.prev_value.as_ref().map_or(0, |v| v.len());
                end += 1;
            }
            let chunk = &events[start..end];
            let revision = chunk.last().map(|event| event.revision);
            let converted: Vec<Event> = chunk.iter().map(|event| self.selector.event(event)).collect();
            let response = self.response(revision, |r| r.events = converted).await;
            if !self.send(response).await {
                return false;
            }
            start = end;
        }
        true
    }

    /// A response of this watch with a header at `revision` (`None`: the current revision).
    async fn response(&self, revision: Option<u64>, fill: impl FnOnce(&mut WatchResponse)) -> WatchResponse {
        let mut response =
            WatchResponse { header: self.headers.header(revision).await.ok(), watch_id: self.id, ..Default::default() };
        fill(&mut response);
        response
    }

    async fn send(&mut self, response: WatchResponse) -> bool {
        if *self.stopped.borrow() {
            return false;
        }
        send_or_stop(&self.output, Ok(response), &mut self.closing).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn event(kind: KvEventKind, key: &str, prev: Option<&str>) -> KvEvent {
        KvEvent {
            revision: 4,
            kind,
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: if kind == KvEventKind::Put { Bytes::from_static(b"v") } else { Bytes::new() },
            prev_value: prev.map(|p| Bytes::copy_from_slice(p.as_bytes())),
            create_revision: if kind == KvEventKind::Put { 2 } else { 0 },
            mod_revision: 4,
            version: if kind == KvEventKind::Put { 3 } else { 0 },
            lease: 0,
            prev_kv: prev.map(|p| {
                Box::new(keel_core::kv::KeyValue {
                    key: Bytes::copy_from_slice(key.as_bytes()),
                    value: Bytes::copy_from_slice(p.as_bytes()),
                    create_revision: 1,
                    mod_revision: 3,
                    version: 2,
                    expires_at_ms: None,
                    lease: 0,
                })
            }),
        }
    }

    #[test]
    fn selectors_apply_ranges_and_filters() {
        let create = WatchCreateRequest { key: "a/".into(), range_end: "a0".into(), ..Default::default() };
        let all = Selector::of(&create);
        assert!(all.selects(&event(KvEventKind::Put, "a/x", None)));
        assert!(all.selects(&event(KvEventKind::Delete, "a/x", None)));
        assert!(!all.selects(&event(KvEventKind::Put, "b", None)));
        let no_put = Selector::of(&WatchCreateRequest { filters: vec![FilterType::Noput as i32], ..create.clone() });
        assert!(!no_put.selects(&event(KvEventKind::Put, "a/x", None)));
        assert!(no_put.selects(&event(KvEventKind::Delete, "a/x", None)));
        let no_delete = Selector::of(&WatchCreateRequest { filters: vec![FilterType::Nodelete as i32], ..create });
        assert!(!no_delete.selects(&event(KvEventKind::Delete, "a/x", None)));
    }

    #[test]
    fn events_convert_with_and_without_prev_kv() {
        let create = WatchCreateRequest { key: "k".into(), prev_kv: true, ..Default::default() };
        let put = Selector::of(&create).event(&event(KvEventKind::Put, "k", Some("old")));
        let kv = put.kv.unwrap();
        assert_eq!((put.r#type, kv.create_revision, kv.mod_revision, kv.version), (EventType::Put as i32, 2, 4, 3));
        let prev = put.prev_kv.unwrap();
        assert_eq!((&prev.value[..], prev.mod_revision, prev.version), (&b"old"[..], 3, 2));
        let delete = Selector::of(&WatchCreateRequest { prev_kv: false, ..create }).event(&event(
            KvEventKind::Delete,
            "k",
            Some("old"),
        ));
        assert_eq!((delete.r#type, delete.kv.unwrap().mod_revision), (EventType::Delete as i32, 4));
        assert!(delete.prev_kv.is_none());
    }
}
