//! Recovery: reading every record back, verifying it, repairing a torn tail, and refusing to
//! start on any other damage.
//!
//! # Torn tail or corruption?
//!
//! The log mark (see `storage/mod.rs`) is the highest index a completed sync made durable. Walking
//! the log from the snapshot point, the first *problem* (an unreadable record, or a missing index)
//! at index `p` is
//!
//! * a **torn tail** when `p` is above the mark and no intact entry is stored after `p`: those
//!   records were never synced, so a crash may legitimately have left them half-written. They are
//!   deleted (durably) and reported with a warning;
//! * **corruption** otherwise: `p` was synced (it may have been acknowledged to a leader), or an
//!   intact entry follows it, which a crash mid-write cannot produce. `load` fails with an error
//!   naming `p`.
//!
//! Intact records that contradict each other (an entry stored under another index, terms going
//! backwards, entries with a term above the hard state's) are also refused. Entries at or below the
//! snapshot point are left-overs of an interrupted compaction: they are covered by the snapshot and
//! deleted without being read.

use bytes::Bytes;
use keel_core::{Entry, HardState, Index, LogId, Snapshot};

use super::codec::{self, CodecError};
use super::engine::Cache;
use super::records::{
    log_index, log_key, Op, RecordStore, Space, HARD_STATE_KEY, LOG_MARK_KEY, SNAPSHOT_DATA_KEY, SNAPSHOT_META_KEY,
};
use super::{LoadedState, StorageError, TailRepair};

/// Maps a codec error on a non-log record to a storage error naming the record.
fn record_error(record: impl Into<String>, error: CodecError) -> StorageError {
    match error {
        CodecError::UnsupportedVersion(version) => StorageError::UnsupportedVersion { record: record.into(), version },
        other => StorageError::CorruptRecord { record: record.into(), reason: other.to_string() },
    }
}

fn read_hard_state<S: RecordStore>(store: &S) -> Result<HardState, StorageError> {
    match store.get(Space::State, HARD_STATE_KEY)? {
        None => Ok(HardState::default()),
        Some(bytes) => codec::decode_hard_state(&bytes).map_err(|e| record_error("hard state", e)),
    }
}

fn read_log_mark<S: RecordStore>(store: &S) -> Result<Index, StorageError> {
    match store.get(Space::State, LOG_MARK_KEY)? {
        None => Ok(0),
        Some(bytes) => codec::decode_log_mark(&bytes).map_err(|e| record_error("log mark", e)),
    }
}

fn read_snapshot<S: RecordStore>(store: &S) -> Result<Option<Snapshot>, StorageError> {
    let meta = store.get(Space::State, SNAPSHOT_META_KEY)?;
    let data = store.get(Space::Snapshot, SNAPSHOT_DATA_KEY)?;
    let (meta, data) = match (meta, data) {
        (None, None) => return Ok(None),
        (None, Some(_)) => {
            return Err(StorageError::Inconsistent("snapshot data is stored without its snapshot meta record".into()))
        }
        (Some(meta), data) => (meta, data),
    };
    let stored = codec::decode_snapshot_meta(&meta).map_err(|e| record_error("snapshot meta", e))?;
    let name = format!("snapshot data (snapshot at {})", stored.meta.last_included);
    let Some(data) = data else {
        return Err(StorageError::CorruptRecord {
            record: name,
            reason: format!("missing, although the snapshot meta names {} bytes", stored.data_len),
        });
    };
    let data: Bytes = codec::decode_snapshot_data(&data).map_err(|e| record_error(name.clone(), e))?;
    let crc = crc32fast::hash(&data);
    if data.len() as u64 != stored.data_len || crc != stored.data_crc {
        return Err(StorageError::CorruptRecord {
            record: name,
            reason: format!(
                "{} bytes with checksum {crc:#010x}, but the snapshot meta names {} bytes with checksum {:#010x}",
                data.len(),
                stored.data_len,
                stored.data_crc
            ),
        });
    }
    Ok(Some(Snapshot { meta: stored.meta, data }))
}

/// One stored log record, decoded or not.
struct LogRecord {
    index: Index,
    entry: Result<Entry, CodecError>,
}

/// The log as stored: records after the snapshot point, and keys at or below it.
struct LogScan {
    records: Vec<LogRecord>,
    covered: Vec<Index>,
}

fn scan_log<S: RecordStore>(store: &S, base: Index) -> Result<LogScan, StorageError> {
    let mut scan = LogScan { records: Vec::new(), covered: Vec::new() };
    let mut bad_key = None;
    store.scan(Space::Log, &mut |key, value| match log_index(key) {
        None => {
            bad_key.get_or_insert_with(|| key.iter().map(|b| format!("{b:02x}")).collect::<String>());
        }
        Some(index) if index <= base => scan.covered.push(index),
        Some(index) => scan.records.push(LogRecord { index, entry: codec::decode_entry(value) }),
    })?;
    if let Some(key) = bad_key {
        return Err(StorageError::CorruptRecord {
            record: format!("log key 0x{key} (keyspace `{}`)", Space::Log.name()),
            reason: "log keys are 8-byte indexes".into(),
        });
    }
    Ok(scan)
}

/// What is wrong at the first problem of the log.
enum Problem {
    Missing,
    Unreadable(CodecError),
}

/// The verified log: its entries and, when a torn tail was cut, what was cut.
struct CheckedLog {
    entries: Vec<Entry>,
    repair: Option<(TailRepair, Vec<Index>)>,
}

fn check_intact(record: &LogRecord, previous: LogId) -> Result<Option<Entry>, StorageError> {
    let entry = match &record.entry {
        Err(CodecError::UnsupportedVersion(version)) => {
            return Err(StorageError::UnsupportedVersion {
                record: format!("log entry {}", record.index),
                version: *version,
            })
        }
        Err(_) => return Ok(None),
        Ok(entry) => entry,
    };
    if entry.log_id.index != record.index {
        return Err(StorageError::Inconsistent(format!(
            "the record stored as log entry {} holds entry {}",
            record.index, entry.log_id
        )));
    }
    if record.index == previous.index.saturating_add(1) && entry.log_id.term < previous.term {
        return Err(StorageError::Inconsistent(format!(
            "log entry {} has term {}, below the term {} of the entry before it",
            record.index, entry.log_id.term, previous.term
        )));
    }
    Ok(Some(entry.clone()))
}

/// Walks the log from `base`, classifying the first problem as a torn tail or as corruption.
fn check_log(base: LogId, mark: Index, records: &[LogRecord]) -> Result<CheckedLog, StorageError> {
    let mut entries: Vec<Entry> = Vec::with_capacity(records.len());
    let mut previous = base;
    for (position, record) in records.iter().enumerate() {
        let problem = if record.index != previous.index.saturating_add(1) {
            Some(Problem::Missing)
        } else {
            match check_intact(record, previous)? {
                Some(entry) => {
                    previous = entry.log_id;
                    entries.push(entry);
                    None
                }
                None => record.entry.clone().err().map(Problem::Unreadable),
            }
        };
        if let Some(problem) = problem {
            let repair = classify(previous.index.saturating_add(1), problem, mark, &records[position..])?;
            return Ok(CheckedLog { entries, repair: Some(repair) });
        }
    }
    if previous.index < mark && mark > base.index {
        return Err(StorageError::MissingEntry {
            index: previous.index.saturating_add(1),
            reason: format!("the log ends at {}, but a sync made entries up to {mark} durable", previous.index),
        });
    }
    Ok(CheckedLog { entries, repair: None })
}

/// Decides whether the problem at `index` is a torn tail (returns what to cut) or corruption.
fn classify(
    index: Index,
    problem: Problem,
    mark: Index,
    rest: &[LogRecord],
) -> Result<(TailRepair, Vec<Index>), StorageError> {
    let reason = match &problem {
        Problem::Missing => "the entry is missing".to_owned(),
        Problem::Unreadable(error) => error.to_string(),
    };
    let intact_after =
        rest.iter().find(|r| r.index > index && r.entry.as_ref().is_ok_and(|e| e.log_id.index == r.index));
    let why = if index <= mark {
        Some(format!("a sync made entries up to {mark} durable"))
    } else {
        intact_after.map(|r| format!("intact entry {} is stored after it", r.index))
    };
    if let Some(why) = why {
        return Err(match problem {
            Problem::Missing => StorageError::MissingEntry { index, reason: why },
            Problem::Unreadable(_) => StorageError::CorruptEntry { index, reason, why },
        });
    }
    let cut: Vec<Index> = rest.iter().map(|r| r.index).filter(|i| *i >= index).collect();
    let repair = TailRepair { first_index: index, records: cut.len() as u64, reason };
    Ok((repair, cut))
}

/// Reads and verifies the whole store, repairs a torn tail, and syncs.
pub(crate) fn recover<S: RecordStore>(store: &mut S) -> Result<(LoadedState, Cache), StorageError> {
    let hard_state = read_hard_state(store)?;
    let snapshot = read_snapshot(store)?;
    let mark = read_log_mark(store)?;
    let base = snapshot.as_ref().map(|s| s.meta.last_included).unwrap_or_default();
    let scan = scan_log(store, base.index)?;
    let checked = check_log(base, mark, &scan.records)?;
    let last = checked.entries.last().map_or(base, |e| e.log_id);
    if last.term > hard_state.term {
        return Err(StorageError::Inconsistent(format!(
            "log entry {} has term {}, above the stored term {}: the hard state is stale",
            last.index, last.term, hard_state.term
        )));
    }
    let mut ops: Vec<Op> = scan.covered.iter().map(|i| Op::Delete(Space::Log, log_key(*i))).collect();
    if !scan.covered.is_empty() {
        tracing::debug!(count = scan.covered.len(), snapshot = %base, "deleting log entries covered by the snapshot");
    }
    let repaired_tail = checked.repair.map(|(repair, cut)| {
        tracing::warn!(
            first_index = repair.first_index,
            records = repair.records,
            reason = %repair.reason,
            "truncating a torn log tail left by a crash: these records were never synced"
        );
        ops.extend(cut.iter().rev().map(|i| Op::Delete(Space::Log, log_key(*i))));
        repair
    });
    if mark != last.index {
        let record = codec::encode_log_mark(last.index).map_err(|e| record_error("log mark", e))?;
        ops.push(Op::Put(Space::State, LOG_MARK_KEY.to_vec(), record));
    }
    // Always a durable commit: what was read may still sit in OS buffers only.
    store.commit(ops, true)?;
    let cache = Cache { snapshot: base, last, mark: last.index, unsynced: false };
    let applied = base.index;
    let loaded = LoadedState { hard_state, snapshot, entries: checked.entries, applied, repaired_tail };
    Ok((loaded, cache))
}
