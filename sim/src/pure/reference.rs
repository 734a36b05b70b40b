//! The committed history, rebuilt independently of the nodes: which entry each log index holds,
//! and the independent reference model of the key-value store (`mvcc_model.rs`: every command,
//! etcd's included) that replays the committed commands and computes their revisions, events and
//! replies itself.
//!
//! Data flow: every entry any node applies is reported to [`CommittedLog::record_applied`]. The
//! first application of an index (they come in index order across the cluster) is replayed on the
//! reference model, and the node's events must equal the model's; every later application of that
//! index, on any node, must carry the same log id and the same events (state machine safety).
//! The weak checks of eventual reads, scans and watches then ask the model what a key held at an
//! index ([`CommittedLog::value_at`]) and which events each revision made; the etcd checks ask
//! it for the reply each entry must have given, the revision and compaction point at each index,
//! ranges at past revisions, and what each expiry deleted.

use std::collections::BTreeMap;

use keel_core::kv::{ApplyResult, KeyRange, KvCommand, KvEvent, KvEventKind, RangeResult};
use keel_core::{Index, LogId, NodeId, Term};

use super::mvcc_model::{Expired, MvccModel, Reply};

/// One change to one key, as a watch reports it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct EventRecord {
    /// The store revision of the change.
    pub revision: u64,
    /// Put or delete.
    pub kind: KvEventKind,
    /// The key.
    pub key: String,
    /// The new value; empty for a delete.
    pub value: String,
    /// The key's create revision after a put; 0 for a delete.
    pub create_revision: u64,
    /// The key's version after a put; 0 for a delete.
    pub version: u64,
    /// The lease the key is attached to after a put; 0 for a delete or none.
    pub lease: u64,
}

/// What the committed history knows about one index.
#[derive(Clone, Debug)]
struct CommittedEntry {
    log_id: LogId,
    events: Vec<EventRecord>,
    /// Lowest term any node was in when applying it: the entry was committed in that term or
    /// earlier, so every leader of a later term must hold it.
    term_min: Term,
    /// The reply the model computed (`None` for entries without a command).
    reply: Option<Reply>,
    /// The model's revision and compacted revision once the entry was applied.
    revision: u64,
    compacted: u64,
}

/// A deletion by an `Expire` entry, for the lease check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpiryRecord {
    /// The `Expire` entry.
    pub expire: LogId,
    /// What it deleted, and the entry that last set its deadline.
    pub expired: Expired,
}

/// The committed history and the reference model.
#[derive(Debug, Default)]
pub struct CommittedLog {
    entries: BTreeMap<Index, CommittedEntry>,
    store: MvccModel,
    /// Every key and lease an expiry deleted, in log order.
    pub expiries: Vec<ExpiryRecord>,
    /// Every key's values by the index that set them (`None`: deleted).
    key_history: BTreeMap<String, Vec<(Index, Option<String>)>>,
    events: BTreeMap<u64, Vec<EventRecord>>,
}

/// One store event in the simulator's form.
pub fn event_record(event: &KvEvent) -> EventRecord {
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    EventRecord {
        revision: event.revision,
        kind: event.kind,
        key: text(&event.key),
        value: text(&event.value),
        create_revision: event.create_revision,
        version: event.version,
        lease: event.lease,
    }
}

/// The events an apply result reports, in the simulator's form.
pub fn events_of(result: &ApplyResult) -> Vec<EventRecord> {
    result.events.iter().map(event_record).collect()
}

impl CommittedLog {
    /// Records that `node`, in `term`, applied `log_id` carrying `command` (with its stamp) and
    /// reported `events`. Fails with a description on any disagreement.
    pub fn record_applied(
        &mut self,
        node: NodeId,
        term: Term,
        log_id: LogId,
        command: Option<&(u64, KvCommand)>,
        events: Vec<EventRecord>,
    ) -> Result<(), String> {
        if let Some(known) = self.entries.get_mut(&log_id.index) {
            known.term_min = known.term_min.min(term);
            if known.log_id != log_id {
                return Err(format!(
                    "state machine safety: node {node} applied {log_id} where {} was applied before",
                    known.log_id
                ));
            }
            if known.events != events {
                return Err(format!(
                    "state machine safety: node {node} made other changes at {log_id}: {events:?} instead of {:?}",
                    known.events
                ));
            }
            return Ok(());
        }
        let expected_index = self.entries.last_key_value().map_or(1, |(index, _)| index + 1);
        if log_id.index != expected_index && !self.entries.is_empty() {
            return Err(format!("node {node} applied {log_id} first, but index {expected_index} was never applied"));
        }
        let applied =
            command.map(|(stamp, command)| self.store.apply(log_id.index, *stamp, command)).unwrap_or_default();
        let expected = applied.events;
        let expire = log_id;
        self.expiries.extend(applied.expired.into_iter().map(|expired| ExpiryRecord { expire, expired }));
        if expected != events {
            return Err(format!(
                "key-value store disagrees with the reference model at {log_id} on node {node}: {events:?} instead of {expected:?}"
            ));
        }
        for event in &expected {
            let value = (event.kind == KvEventKind::Put).then(|| event.value.clone());
            self.key_history.entry(event.key.clone()).or_default().push((log_id.index, value));
        }
        if let Some(revision) = expected.first().map(|e| e.revision) {
            self.events.insert(revision, expected.clone());
        }
        let (revision, compacted) = (self.store.revision(), self.store.compacted());
        let entry =
            CommittedEntry { log_id, events: expected, term_min: term, reply: applied.reply, revision, compacted };
        self.entries.insert(log_id.index, entry);
        Ok(())
    }

    /// The reply the reference model computed for the entry at `index`.
    pub fn reply_at(&self, index: Index) -> Option<&Reply> {
        self.entries.get(&index).and_then(|e| e.reply.as_ref())
    }

    /// The store revision and compacted revision once `index` was applied (0 and 0 before any).
    pub fn revisions_at(&self, index: Index) -> Option<(u64, u64)> {
        if index == 0 {
            return Some((0, 0));
        }
        self.entries.get(&index).map(|e| (e.revision, e.compacted))
    }

    /// The highest revision any node has reached so far.
    pub fn current_revision(&self) -> u64 {
        self.store.revision()
    }

    /// The reference model's keys of `range` at `revision` (every version is kept, so this
    /// answers below later compactions too; the caller judges whether the revision was readable).
    pub fn range_at(&self, range: &KeyRange, revision: u64, limit: u64) -> RangeResult {
        self.store.history_range(range, revision, limit)
    }

    /// The first index ever applied anywhere (1, unless nothing was applied).
    pub fn last_index(&self) -> Index {
        self.entries.last_key_value().map_or(0, |(index, _)| *index)
    }

    /// The entry committed at `index`, if any node applied it.
    pub fn log_id_at(&self, index: Index) -> Option<LogId> {
        self.entries.get(&index).map(|e| e.log_id)
    }

    /// Committed entries from `from` on, with the lowest term of a node applying them.
    pub fn committed_from(&self, from: Index) -> impl Iterator<Item = (LogId, Term)> + '_ {
        self.entries.range(from..).map(|(_, e)| (e.log_id, e.term_min))
    }

    /// The value `key` held once index `index` was applied.
    pub fn value_at(&self, key: &str, index: Index) -> Option<String> {
        let history = self.key_history.get(key)?;
        let position = history.partition_point(|(at, _)| *at <= index);
        position.checked_sub(1).and_then(|p| history[p].1.clone())
    }

    /// Every live key under `prefix` with its value once index `index` was applied.
    pub fn scan_at(&self, prefix: &str, index: Index) -> Vec<(String, String)> {
        self.key_history
            .keys()
            .filter(|key| key.starts_with(prefix))
            .filter_map(|key| self.value_at(key, index).map(|value| (key.clone(), value)))
            .collect()
    }

    /// The committed events with revisions in `(after, through]` on keys under `prefix`.
    pub fn events_between(&self, prefix: &str, after: u64, through: u64) -> Vec<EventRecord> {
        if through <= after {
            return Vec::new();
        }
        let events = self.events.range(after + 1..=through).flat_map(|(_, events)| events.iter());
        events.filter(|e| e.key.starts_with(prefix)).cloned().collect()
    }

    /// The reference model's current state: every live key and its value.
    pub fn final_state(&self) -> BTreeMap<String, String> {
        self.store.live()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn put(key: &str, value: &str) -> KvCommand {
        KvCommand::Put { key: Bytes::from(key.to_string()), value: Bytes::from(value.to_string()), ttl_ms: None }
    }

    #[test]
    fn a_different_entry_at_an_applied_index_is_caught() {
        let mut log = CommittedLog::default();
        let command = (0, put("a", "1"));
        let event = EventRecord {
            revision: 2,
            kind: KvEventKind::Put,
            key: "a".into(),
            value: "1".into(),
            create_revision: 2,
            version: 1,
            lease: 0,
        };
        log.record_applied(1, 1, LogId::new(1, 1), Some(&command), vec![event.clone()]).unwrap();
        log.record_applied(2, 1, LogId::new(1, 1), Some(&command), vec![event]).unwrap();
        let error = log.record_applied(3, 2, LogId::new(2, 1), None, Vec::new()).unwrap_err();
        assert!(error.contains("state machine safety"));
        assert_eq!(log.value_at("a", 1), Some("1".into()));
        assert_eq!(log.value_at("a", 0), None);
    }

    #[test]
    fn wrong_events_from_the_store_are_caught() {
        let mut log = CommittedLog::default();
        let command = (0, put("a", "1"));
        let wrong = EventRecord {
            revision: 1,
            kind: KvEventKind::Put,
            key: "a".into(),
            value: "1".into(),
            create_revision: 1,
            version: 2,
            lease: 0,
        };
        assert!(log.record_applied(1, 1, LogId::new(1, 1), Some(&command), vec![wrong]).is_err());
    }
}
