//! The committed history, rebuilt independently of the nodes: which entry each log index holds,
//! and an independent reference model of the key-value store (puts, deletes, compare-and-swap,
//! expiry) that replays the committed commands and computes their revisions and events itself.
//!
//! Data flow: every entry any node applies is reported to [`CommittedLog::record_applied`]. The
//! first application of an index (they come in index order across the cluster) is replayed on the
//! reference model, and the node's events must equal the model's; every later application of that
//! index, on any node, must carry the same log id and the same events (state machine safety).
//! The weak checks of eventual reads, scans and watches then ask the model what a key held at an
//! index ([`CommittedLog::value_at`]) and which events each revision made.

use std::collections::BTreeMap;

use keel_core::kv::{ApplyResult, KvCommand, KvEvent, KvEventKind};
use keel_core::{Index, LogId, NodeId, Term};

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
}

/// What the committed history knows about one index.
#[derive(Clone, Debug)]
struct CommittedEntry {
    log_id: LogId,
    events: Vec<EventRecord>,
    /// Lowest term any node was in when applying it: the entry was committed in that term or
    /// earlier, so every leader of a later term must hold it.
    term_min: Term,
}

/// The reference key-value model.
#[derive(Clone, Debug, Default)]
struct ReferenceStore {
    revision: u64,
    values: BTreeMap<String, (String, Option<u64>)>,
}

impl ReferenceStore {
    fn put(&mut self, key: &str, value: &str, expires_at_ms: Option<u64>) -> Vec<EventRecord> {
        self.revision += 1;
        self.values.insert(key.to_string(), (value.to_string(), expires_at_ms));
        vec![EventRecord { revision: self.revision, kind: KvEventKind::Put, key: key.into(), value: value.into() }]
    }

    fn apply(&mut self, stamp_ms: u64, command: &KvCommand) -> Result<Vec<EventRecord>, String> {
        let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
        let deadline = |ttl_ms: &Option<u64>| ttl_ms.map(|ttl| stamp_ms.saturating_add(ttl));
        Ok(match command {
            KvCommand::Put { key, value, ttl_ms } => self.put(&text(key), &text(value), deadline(ttl_ms)),
            KvCommand::CompareAndSwap { key, expected_value, new_value, ttl_ms } => {
                let current = self.values.get(&text(key)).map(|(value, _)| value.clone());
                if current == expected_value.as_ref().map(|v| text(v)) {
                    self.put(&text(key), &text(new_value), deadline(ttl_ms))
                } else {
                    Vec::new()
                }
            }
            KvCommand::Delete { key } => self.delete(&[text(key)]),
            KvCommand::Expire { now_ms } => {
                let due: Vec<String> = self
                    .values
                    .iter()
                    .filter(|(_, (_, expires))| expires.is_some_and(|at| at <= *now_ms))
                    .map(|(key, _)| key.clone())
                    .collect();
                self.delete(&due)
            }
            // Compaction drops old history only: no current value and no revision changes.
            KvCommand::Compact { .. } => Vec::new(),
            other => return Err(format!("the reference model does not know {other:?}")),
        })
    }

    fn delete(&mut self, keys: &[String]) -> Vec<EventRecord> {
        let live: Vec<&String> = keys.iter().filter(|k| self.values.contains_key(*k)).collect();
        if live.is_empty() {
            return Vec::new();
        }
        self.revision += 1;
        let revision = self.revision;
        live.into_iter()
            .map(|key| {
                self.values.remove(key);
                EventRecord { revision, kind: KvEventKind::Delete, key: key.clone(), value: String::new() }
            })
            .collect()
    }
}

/// The committed history and the reference model.
#[derive(Debug, Default)]
pub struct CommittedLog {
    entries: BTreeMap<Index, CommittedEntry>,
    store: ReferenceStore,
    /// Every key's values by the index that set them (`None`: deleted).
    key_history: BTreeMap<String, Vec<(Index, Option<String>)>>,
    events: BTreeMap<u64, Vec<EventRecord>>,
}

/// One store event in the simulator's form.
pub fn event_record(event: &KvEvent) -> EventRecord {
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    EventRecord { revision: event.revision, kind: event.kind, key: text(&event.key), value: text(&event.value) }
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
        let expected = match command {
            Some((stamp, command)) => self.store.apply(*stamp, command)?,
            None => Vec::new(),
        };
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
        self.entries.insert(log_id.index, CommittedEntry { log_id, events: expected, term_min: term });
        Ok(())
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
        self.store.values.iter().map(|(key, (value, _))| (key.clone(), value.clone())).collect()
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
        let event = EventRecord { revision: 1, kind: KvEventKind::Put, key: "a".into(), value: "1".into() };
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
        let wrong = EventRecord { revision: 1, kind: KvEventKind::Put, key: "a".into(), value: "2".into() };
        assert!(log.record_applied(1, 1, LogId::new(1, 1), Some(&command), vec![wrong]).is_err());
    }
}
