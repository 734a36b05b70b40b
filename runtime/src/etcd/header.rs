//! The `ResponseHeader` every etcd answer carries: cluster id, member id, store revision and
//! Raft term.
//!
//! Keel has no cluster identity of its own yet, so `cluster_id` is a fixed value
//! ([`CLUSTER_ID`], the bytes "keel"); the member id is the node id. The term and, for requests
//! that did not produce a revision themselves, the revision come from the node's status, read
//! when the answer is built.

use keel::proto::etcdserverpb::ResponseHeader;
use tonic::Status;

use super::convert::int;
use super::errors;
use crate::node::{NodeHandle, NodeStatus};

/// The `cluster_id` of every answer: "keel" in ASCII.
pub const CLUSTER_ID: u64 = 0x6b65_656c;

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

/// A header for an answer about to be sent, reading the node's status for the term.
pub(crate) async fn header(handle: &NodeHandle, revision: Option<u64>) -> Result<ResponseHeader, Status> {
    let status = handle.status().await.map_err(|error| errors::of_client(&error))?;
    Ok(from_status(&status, revision))
}
