//! The watch streams of the native API: a `Watch` stream's task ([`Watcher`]) and a
//! `WatchMembership` stream's task ([`watch_membership`]).
//!
//! Data flow: `ClientService::open_watch` subscribes to the node's event broadcast and reads the
//! store revision in one driver request, then spawns a [`Watcher`]. The watcher first replays the
//! history from the requested start revision through the opening revision (page by page, from
//! the driver), then forwards live events that match its [`KeyFilter`], a `PROGRESS` event when
//! idle, and ends with one `CANCELED` event when it lags behind the broadcast (see the resume
//! revision in `client.rs`'s module docs) or with `UNAVAILABLE` on shutdown.

use std::time::Duration;

use bytes::Bytes;
use keel::proto::client::{MembershipSnapshot, WatchEventType, WatchResponse};
use keel::proto::error::ErrorCode;
use keel_core::kv::{KvEvent, KvEventKind};
use keel_core::{Index, Membership};
use tokio::sync::{broadcast, mpsc, watch};
use tokio::time::Instant;
use tonic::Status;

use super::{send_or_stop, shutting_down_status, WatcherSlot};
use crate::node::{ClientError, NodeHandle};

/// Past events fetched from the driver at a time while a watch replays history (whole
/// revisions: a page may exceed this by the rest of its last revision).
const HISTORY_PAGE_EVENTS: usize = 1024;

/// Which keys a watcher wants.
#[derive(Clone, Debug)]
pub(super) enum KeyFilter {
    Exact(Bytes),
    Prefix(Bytes),
}

impl KeyFilter {
    pub(super) fn matches(&self, key: &[u8]) -> bool {
        match self {
            Self::Exact(watched) => key == &watched[..],
            Self::Prefix(prefix) => key.starts_with(prefix),
        }
    }
}

pub(super) fn canceled(error: ErrorCode, revision: u64) -> WatchResponse {
    WatchResponse {
        key: Bytes::new(),
        value: Bytes::new(),
        event_type: WatchEventType::Canceled as i32,
        error: error as i32,
        revision,
        prev_value: Bytes::new(),
    }
}

/// What woke a watcher up.
enum Step {
    Closing,
    Received(Result<KvEvent, broadcast::error::RecvError>),
    Idle,
}

/// One open `Watch` stream: forwards the matching events of the node's broadcast.
pub(super) struct Watcher {
    pub(super) filter: KeyFilter,
    pub(super) prev_kv: bool,
    pub(super) events: broadcast::Receiver<KvEvent>,
    pub(super) output: mpsc::Sender<Result<WatchResponse, Status>>,
    pub(super) closing: watch::Receiver<bool>,
    pub(super) progress_interval: Duration,
    /// Events below this revision are not delivered (0: deliver everything from the start).
    pub(super) first_revision: u64,
    /// The node, to replay history from.
    pub(super) handle: NodeHandle,
    /// The latest revision seen (an event's, or the store's when the stream opened).
    pub(super) current: u64,
    /// Every event at or below this revision was handled (see the module docs).
    pub(super) complete: u64,
    pub(super) _slot: WatcherSlot,
}

impl Watcher {
    pub(super) async fn run(mut self) {
        if self.first_revision > 0 && self.first_revision <= self.current && !self.replay().await {
            return;
        }
        let mut idle_until = Instant::now() + self.progress_interval;
        loop {
            let step = tokio::select! {
                biased;
                _ = self.closing.wait_for(|closed| *closed) => Step::Closing,
                _ = self.output.closed() => return,
                received = self.events.recv() => Step::Received(received),
                _ = tokio::time::sleep_until(idle_until) => Step::Idle,
            };
            let keep_going = match step {
                Step::Closing => false,
                Step::Received(Err(broadcast::error::RecvError::Closed)) => {
                    // The node stopped: end like a shutdown.
                    let _ = self.output.try_send(Err(shutting_down_status()));
                    return;
                }
                Step::Received(Ok(event)) => {
                    if event.revision > self.current {
                        self.complete = self.current;
                        self.current = event.revision;
                    }
                    if event.revision < self.first_revision || !self.filter.matches(&event.key) {
                        continue;
                    }
                    let response = self.event_response(event);
                    idle_until = Instant::now() + self.progress_interval;
                    send_or_stop(&self.output, Ok(response), &mut self.closing).await
                }
                Step::Received(Err(broadcast::error::RecvError::Lagged(missed))) => {
                    tracing::debug!(missed, resume = self.complete, "watcher lagged; canceled");
                    let lagged = canceled(ErrorCode::WatchLagged, self.complete);
                    let _ = send_or_stop(&self.output, Ok(lagged), &mut self.closing).await;
                    false
                }
                Step::Idle => {
                    // Quiet for a whole interval: the revision seen last is complete.
                    self.complete = self.current;
                    let progress = WatchResponse {
                        event_type: WatchEventType::Progress as i32,
                        revision: self.current,
                        ..WatchResponse::default()
                    };
                    idle_until = Instant::now() + self.progress_interval;
                    send_or_stop(&self.output, Ok(progress), &mut self.closing).await
                }
            };
            if !keep_going {
                if *self.closing.borrow() {
                    let _ = self.output.try_send(Err(shutting_down_status()));
                }
                return;
            }
        }
    }

    /// Sends the matching past events from `first_revision` through the revision the stream
    /// opened at, page by page; false when the stream ended (compacted history, node gone, or
    /// the client left).
    async fn replay(&mut self) -> bool {
        let opened_at = self.current;
        let mut after = self.first_revision - 1;
        while after < opened_at {
            let page = match self.handle.history(after, HISTORY_PAGE_EVENTS).await {
                Ok(page) => page,
                Err(error) => {
                    let (code, revision) = match error {
                        ClientError::Compacted { compacted, .. } => (ErrorCode::Compacted, compacted),
                        ClientError::ShuttingDown => (ErrorCode::ShuttingDown, after),
                        _ => (ErrorCode::Unavailable, after),
                    };
                    let _ = send_or_stop(&self.output, Ok(canceled(code, revision)), &mut self.closing).await;
                    return false;
                }
            };
            let Some(last) = page.last().map(|event| event.revision) else { break };
            for event in page.into_iter().filter(|event| event.revision <= opened_at) {
                if self.filter.matches(&event.key) {
                    let response = self.event_response(event);
                    if !send_or_stop(&self.output, Ok(response), &mut self.closing).await {
                        return false;
                    }
                }
            }
            after = last;
        }
        true
    }

    fn event_response(&self, event: KvEvent) -> WatchResponse {
        let event_type = match event.kind {
            KvEventKind::Put => WatchEventType::Put,
            KvEventKind::Delete => WatchEventType::Delete,
        };
        let prev_value = if self.prev_kv { event.prev_value.unwrap_or_default() } else { Bytes::new() };
        WatchResponse {
            key: event.key,
            value: event.value,
            event_type: event_type as i32,
            error: ErrorCode::Success as i32,
            revision: event.revision,
            prev_value,
        }
    }
}

/// The wire form of a committed configuration.
pub fn membership_snapshot(index: Index, membership: &Membership) -> MembershipSnapshot {
    MembershipSnapshot {
        members: membership.voters.union(&membership.voters_outgoing).copied().collect(),
        learners: membership.learners.keys().copied().collect(),
        committed_index: index,
    }
}

/// Feeds one `WatchMembership` stream: the current configuration, then every change.
pub(super) async fn watch_membership(
    mut membership: watch::Receiver<(Index, Membership)>,
    output: mpsc::Sender<Result<MembershipSnapshot, Status>>,
    mut closing: watch::Receiver<bool>,
    _slot: WatcherSlot,
) {
    loop {
        let snapshot = {
            let current = membership.borrow_and_update();
            membership_snapshot(current.0, &current.1)
        };
        if !send_or_stop(&output, Ok(snapshot), &mut closing).await {
            let _ = output.try_send(Err(shutting_down_status()));
            return;
        }
        tokio::select! {
            biased;
            _ = closing.wait_for(|closed| *closed) => {
                let _ = output.try_send(Err(shutting_down_status()));
                return;
            }
            _ = output.closed() => return,
            changed = membership.changed() => {
                if changed.is_err() {
                    let _ = output.try_send(Err(shutting_down_status()));
                    return;
                }
            }
        }
    }
}
