//! The `ResponseHeader` every etcd answer carries: cluster id, member id, store revision and
//! Raft term.
//!
//! Keel has no cluster identity of its own yet, so `cluster_id` is a fixed value
//! ([`CLUSTER_ID`], the bytes "keel"); the member id is the node id. The revision is the one the
//! request produced or read when it has one; otherwise, and for the term, the node's status is
//! read. The term is cached for [`TERM_CACHE`] so that a write or a read does not cost a second
//! trip to the node driver: a header's term may be that long out of date (it is informative;
//! nothing in etcd's clients depends on it).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use keel::proto::etcdserverpb::ResponseHeader;
use tokio::time::Instant;
use tonic::Status;

use super::convert::int;
use super::errors;
use crate::node::{NodeHandle, NodeStatus};

/// The `cluster_id` of every answer: "keel" in ASCII.
pub const CLUSTER_ID: u64 = 0x6b65_656c;

/// How long a term read from the node's status is reused.
const TERM_CACHE: Duration = Duration::from_millis(100);

/// A header from a status; `revision` overrides the status's revision (the revision a write
/// produced, which a later status may already have passed).
pub(crate) fn from_status(status: &NodeStatus, revision: Option<u64>) -> ResponseHeader {
    ResponseHeader {
        cluster_id: CLUSTER_ID,
        member_id: u64::from(status.id),
        revision: int(revision.unwrap_or(status.revision)),
        raft_term: status.term,
    }
}

/// Builds headers for one node, with the term cache. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Headers {
    handle: NodeHandle,
    term: Arc<Mutex<Option<(Instant, u64)>>>,
}

impl Headers {
    /// Headers of the node behind `handle`.
    pub(crate) fn new(handle: NodeHandle) -> Self {
        Self { handle, term: Arc::new(Mutex::new(None)) }
    }

    /// A header for an answer about to be sent: at `revision` when given (the term possibly
    /// cached), else at the node's current revision (a fresh status).
    pub(crate) async fn header(&self, revision: Option<u64>) -> Result<ResponseHeader, Status> {
        if let Some(revision) = revision {
            let cached = self.term.lock().ok().and_then(|term| *term);
            if let Some((_, term)) = cached.filter(|(read_at, _)| read_at.elapsed() < TERM_CACHE) {
                let member_id = u64::from(self.handle.id());
                return Ok(ResponseHeader {
                    cluster_id: CLUSTER_ID,
                    member_id,
                    revision: int(revision),
                    raft_term: term,
                });
            }
        }
        let status = self.handle.status().await.map_err(|error| errors::of_client(&error))?;
        if let Ok(mut term) = self.term.lock() {
            *term = Some((Instant::now(), status.term));
        }
        Ok(from_status(&status, revision))
    }
}
