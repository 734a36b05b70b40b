//! The weaker promises, checked against the committed history the simulator rebuilt:
//!
//! - an **eventual read** returns the key's value in some committed prefix of the log: exactly
//!   the reference model's value at the serving node's applied index, which must be committed;
//! - a **scan** is linearizable: served at an applied index at least that of every write
//!   acknowledged before it was invoked, and equal to the reference model's keys and values under
//!   the prefix at that index;
//! - a **watch stream** delivers events in revision order, without duplicates or gaps, and agrees
//!   with the committed history: exactly the committed events under its prefix with revisions
//!   after its start and up to the revision its node had reached when the stream ended.
//!
//! Data flow: called once at the end of a run with the [`Recorder`]'s records; returns the first
//! violation as a sentence.

use super::recorder::Recorder;
use super::reference::CommittedLog;

/// Runs every weak check; the first violation, if any.
pub fn check(recorder: &Recorder, committed: &CommittedLog) -> Result<(), String> {
    check_eventual_reads(recorder, committed)?;
    check_scans(recorder, committed)?;
    check_watches(recorder, committed)
}

fn check_eventual_reads(recorder: &Recorder, committed: &CommittedLog) -> Result<(), String> {
    for read in &recorder.eventual_reads {
        if read.applied_index > committed.last_index() {
            return Err(format!(
                "eventual read at node {} served at index {} beyond anything committed ({})",
                read.node,
                read.applied_index,
                committed.last_index()
            ));
        }
        let expected = committed.value_at(&read.key, read.applied_index);
        if read.value != expected {
            return Err(format!(
                "eventual read of {} at node {} (applied {}) returned {:?}; the committed state there holds {:?}",
                read.key, read.node, read.applied_index, read.value, expected
            ));
        }
    }
    Ok(())
}

fn check_scans(recorder: &Recorder, committed: &CommittedLog) -> Result<(), String> {
    for scan in &recorder.scans {
        if scan.applied_index < scan.floor_index {
            return Err(format!(
                "scan of {:?} at node {} served at index {}, below write {} acknowledged before it began",
                scan.prefix, scan.node, scan.applied_index, scan.floor_index
            ));
        }
        let expected = committed.scan_at(&scan.prefix, scan.applied_index);
        if scan.result != expected {
            return Err(format!(
                "scan of {:?} at node {} (index {}) returned {:?}; the committed state holds {:?}",
                scan.prefix, scan.node, scan.applied_index, scan.result, expected
            ));
        }
    }
    Ok(())
}

fn check_watches(recorder: &Recorder, committed: &CommittedLog) -> Result<(), String> {
    for (number, watch) in recorder.watches.iter().enumerate() {
        let describe = || {
            format!(
                "watch {number} of {:?} at node {} after revision {}",
                watch.prefix, watch.node, watch.after_revision
            )
        };
        for pair in watch.events.windows(2) {
            if pair[1].revision < pair[0].revision {
                return Err(format!("{}: revision {} after {}", describe(), pair[1].revision, pair[0].revision));
            }
            if pair[1] == pair[0] {
                return Err(format!("{}: event {:?} delivered twice", describe(), pair[0]));
            }
        }
        if let Some(first) = watch.events.first().filter(|e| e.revision <= watch.after_revision) {
            return Err(format!("{}: event at revision {} is not after the start", describe(), first.revision));
        }
        let Some(through) = watch.covered_through else { continue };
        let expected = committed.events_between(&watch.prefix, watch.after_revision, through);
        if watch.events != expected {
            let missing = expected.iter().find(|e| !watch.events.contains(e));
            let extra = watch.events.iter().find(|e| !expected.contains(e));
            return Err(format!(
                "{} through revision {through}: missing {missing:?}, unexpected {extra:?} ({} events, {} committed)",
                describe(),
                watch.events.len(),
                expected.len()
            ));
        }
    }
    Ok(())
}
