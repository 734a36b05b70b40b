//! The etcd checks: revisions totally order the writes, so an etcd history is checked in linear
//! time against the reference model (`mvcc_model.rs`, replayed by `reference.rs` on the
//! committed log), with no search:
//!
//! - **replies**: every write answered to a client (etcd or native) was committed at the entry
//!   it was answered at,
//!   and its reply (revision, succeeded flag, error, every response with its previous key-values,
//!   ranges and nested results) equals the model's;
//! - **real-time order**: if A completed before B was invoked, A's revision is at most B's, and
//!   strictly below it when B is a write that changed something; every revision a client received
//!   existed when it completed (no revision from the future);
//! - **ranges**: a range served by a node at applied index I reports the model's revision at I
//!   as its header, and returns exactly the model's keys at the revision asked for, or the
//!   compacted (below the model's compaction point at I) or future-revision error; a watch
//!   refused as compacted was below that point;
//! - **expiry never early**: every key with a TTL and every lease that an `Expire` entry deleted
//!   had been given its whole time to live (see [`check_expiries`] for the bound).
//!
//! Watches from a past revision are etcd watch streams and are checked with the native ones by
//! `weak_checks.rs`: exactly the committed events of their prefix after their start, in order,
//! without gaps or duplicates. Outcome-unknown writes are not checked: they may or may not appear.
//!
//! Data flow: called once at the end of a run with the [`EtcdHistory`] and the [`CommittedLog`];
//! returns the first violation as a sentence.

use keel_core::kv::KvError;

use super::etcd_history::{EtcdHistory, EtcdRecord, Observation};
use super::reference::CommittedLog;
use super::scenario::ClockFaults;

/// Runs every etcd check; the first violation, if any.
pub fn check(history: &EtcdHistory, committed: &CommittedLog, clock: &ClockFaults) -> Result<(), String> {
    check_replies(&history.records, committed)?;
    check_real_time(&history.records, committed)?;
    check_ranges(&history.records, committed)?;
    check_expiries(history, committed, clock)
}

/// Every acknowledged etcd write was committed where it was answered, with the model's reply.
pub fn check_replies(records: &[EtcdRecord], committed: &CommittedLog) -> Result<(), String> {
    for record in records {
        let Observation::Write { log_id, reply } = &record.observation else { continue };
        if committed.log_id_at(log_id.index) != Some(*log_id) {
            return Err(format!(
                "etcd write of client {} answered at {log_id}, which was not committed",
                record.process
            ));
        }
        let expected = committed.reply_at(log_id.index);
        if expected != Some(reply) {
            return Err(format!(
                "etcd write of client {} at {log_id}: the client received {reply:?}; the reference model computes {expected:?}",
                record.process
            ));
        }
    }
    Ok(())
}

/// The revision a record's client saw, and whether the record is a write that changed the store.
fn revision_of(record: &EtcdRecord, committed: &CommittedLog) -> Option<(u64, bool)> {
    match &record.observation {
        Observation::Write { log_id, reply } => {
            let before = committed.revisions_at(log_id.index.saturating_sub(1)).map_or(0, |(revision, _)| revision);
            Some((reply.revision, reply.revision > before))
        }
        Observation::Range { header_revision, .. } => Some((*header_revision, false)),
        Observation::WatchRefused { .. } => None,
    }
}

/// Real-time order of revisions: a record invoked after A completed saw at least A's revision
/// (more, if it changed the store); no record saw a revision that did not exist yet.
pub fn check_real_time(records: &[EtcdRecord], committed: &CommittedLog) -> Result<(), String> {
    // Records are in completion order: the running maximum of the revisions completed so far.
    let mut completed: Vec<(u64, u64, usize)> = Vec::with_capacity(records.len());
    for (number, record) in records.iter().enumerate() {
        let Some((revision, _)) = revision_of(record, committed) else { continue };
        let best = completed.last().map_or((0, 0), |&(_, max, at)| (max, at));
        let (max, at) = if revision >= best.0 { (revision, number) } else { best };
        completed.push((record.completed, max, at));
    }
    for record in records {
        let Some((revision, changed)) = revision_of(record, committed) else { continue };
        if revision > record.revision_existing {
            return Err(format!(
                "etcd client {} received revision {revision}, but only {} existed when it completed",
                record.process, record.revision_existing
            ));
        }
        let before = completed.partition_point(|(at, _, _)| *at < record.invoked);
        let Some(&(_, floor, source)) = before.checked_sub(1).map(|last| &completed[last]) else { continue };
        if revision < floor || (changed && revision == floor) {
            return Err(format!(
                "real-time order: {:?} (client {}) completed at revision {floor} before {:?} (client {}) was invoked, which {} revision {revision}",
                records[source].observation,
                records[source].process,
                record.observation,
                record.process,
                if changed { "wrote" } else { "read" }
            ));
        }
    }
    Ok(())
}

/// Ranges and refused watches agree with the model at the serving node's applied index.
pub fn check_ranges(records: &[EtcdRecord], committed: &CommittedLog) -> Result<(), String> {
    for record in records {
        match &record.observation {
            Observation::Range { node, applied_index, header_revision, range, revision, limit, result } => {
                let Some((current, compacted)) = committed.revisions_at(*applied_index) else {
                    return Err(format!("etcd range served at node {node} at index {applied_index}, never committed"));
                };
                let asked = if *revision == 0 { current } else { *revision };
                let expected = if asked < compacted {
                    Err(KvError::Compacted { requested: asked, compacted })
                } else if asked > current {
                    Err(KvError::FutureRevision { requested: asked, current })
                } else {
                    Ok(committed.range_at(range, asked, *limit))
                };
                if *header_revision != current || *result != expected {
                    return Err(format!(
                        "etcd range {range:?} at revision {revision} (node {node}, index {applied_index}) returned {result:?} at header revision {header_revision}; the reference model holds {expected:?} at revision {current}"
                    ));
                }
            }
            Observation::WatchRefused { node, applied_index, after_revision, error } => {
                let compacted = committed.revisions_at(*applied_index).map_or(0, |(_, compacted)| compacted);
                let expected = KvError::Compacted { requested: *after_revision, compacted };
                if *after_revision >= compacted || *error != expected {
                    return Err(format!(
                        "etcd watch after revision {after_revision} refused by node {node} (index {applied_index}) with {error:?}; the compaction point there is {compacted}"
                    ));
                }
            }
            Observation::Write { .. } => {}
        }
    }
    Ok(())
}

/// Expiry is never early. An `Expire` proposed at true time `t_e` by leader B deletes what is due
/// at B's wall clock minus `M = clock_offset_ms_max` (`2 * offset + drift_ppm / 10`); the deadline
/// was set by the entry proposed at true time `t_p` by A, at A's wall clock plus the TTL. Wall
/// clocks read the epoch plus the elapsed true time scaled by `1 + d` (`|d| <= drift_ppm / 2`
/// millionths) plus an offset within `± offset`, so deletion implies
/// `t_e - t_p >= ttl - max(0, (t_e + t_p) * drift_ppm / 2e6 - drift_ppm / 10) - 2` (2 ms of
/// integer rounding): the TTL in full for runs shorter than 100 s of simulated time, a little
/// less after. The anchor is the latest entry before the expiry that set the deadline (a put with
/// a TTL, a lease grant, keep-alive, or a new leader's refresh of every lease), so a key or lease
/// kept alive is measured from its last keep-alive. Skipped when clocks run beyond the bound.
pub fn check_expiries(history: &EtcdHistory, committed: &CommittedLog, clock: &ClockFaults) -> Result<(), String> {
    if clock.beyond_bound {
        return Ok(());
    }
    let drift = clock.drift_ppm_max;
    for record in &committed.expiries {
        let anchor = committed.log_id_at(record.expired.anchor);
        let times = (history.proposals.get(&record.expire), anchor.and_then(|a| history.proposals.get(&a)));
        let (Some(&expired_ms), Some(&anchor_ms)) = times else {
            return Err(format!("expiry at {} of {}: no proposal time recorded", record.expire, record.expired.what));
        };
        let slack = ((expired_ms + anchor_ms) * drift / 2_000_000).saturating_sub(drift / 10) + 2;
        let given = expired_ms.saturating_sub(anchor_ms) + slack;
        if given < record.expired.ttl_ms {
            return Err(format!(
                "early expiry: {} (TTL {} ms, deadline set by the entry proposed at {anchor_ms} ms) deleted by the expiry proposed at {expired_ms} ms ({})",
                record.expired.what, record.expired.ttl_ms, record.expire
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "etcd_checks_tests.rs"]
mod tests;
