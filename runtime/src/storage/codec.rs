//! The binary record codec shared by every storage backend.
//!
//! # Record layout
//!
//! Every stored value is one self-checking record. All integers are little-endian.
//!
//! ```text
//! offset  size  field
//! 0       1     format version (currently 1; every version keeps this header and the trailer)
//! 1       1     record kind: 1 entry, 2 hard state, 3 snapshot meta, 4 snapshot data, 5 log mark
//! 2       4     payload length N (u32)
//! 6       N     payload (per kind, below)
//! 6+N     4     CRC32 (IEEE, crc32fast) of bytes 0 .. 6+N
//! ```
//!
//! Payloads:
//!
//! * **entry**: term u64, index u64, payload tag u8, then for tag 0 (no-op) nothing, tag 1
//!   (command) a u32 length and the bytes, tag 2 (membership) a membership.
//! * **hard state**: term u64, vote flag u8 (0 none, 1 some), voted-for node id u32.
//! * **snapshot meta**: last included term u64 and index u64, data length u64, data CRC32 u32,
//!   then a membership.
//! * **snapshot data**: the application's bytes, as is.
//! * **log mark**: index u64, the highest log index made durable by a sync (see `recovery.rs`).
//! * **membership**: voters (count u32, then each id u32, strictly ascending), outgoing voters
//!   (same), learners (count u32, then id u32 and kind u8: 0 promotable, 1 read-only, ascending),
//!   addresses (count u32, then id u32, UTF-8 length u32 and bytes, ascending).
//!
//! Decoding checks the length, the checksum, the version, the kind, every tag and count, and that
//! the payload is consumed exactly. Malformed bytes give a [`CodecError`]; nothing here panics.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use keel_core::{Entry, EntryPayload, HardState, Index, LearnerKind, LogId, Membership, NodeId, SnapshotMeta};

/// The record format version this build writes and reads.
pub const FORMAT_VERSION: u8 = 1;
/// Bytes of header (version, kind, payload length) before the payload.
pub const HEADER_LEN: usize = 6;
/// Bytes of checksum after the payload.
pub const TRAILER_LEN: usize = 4;
/// Largest payload a record may carry (the storage engine limits values to 4 GiB).
pub const MAX_PAYLOAD_LEN: usize = u32::MAX as usize - HEADER_LEN - TRAILER_LEN;

/// What a record holds; the second byte of every record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordKind {
    /// One log entry.
    Entry = 1,
    /// Term and vote.
    HardState = 2,
    /// Snapshot metadata (with the length and checksum of the data record).
    SnapshotMeta = 3,
    /// The snapshot's state-machine bytes.
    SnapshotData = 4,
    /// The highest log index made durable by a sync.
    LogMark = 5,
}

impl RecordKind {
    fn name(self) -> &'static str {
        match self {
            Self::Entry => "log entry",
            Self::HardState => "hard state",
            Self::SnapshotMeta => "snapshot meta",
            Self::SnapshotData => "snapshot data",
            Self::LogMark => "log mark",
        }
    }
}

/// Why bytes could not be decoded as a record. The messages say what is wrong with the bytes;
/// the storage layer adds which record it was and what the operator should do.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// Fewer bytes than the header announces: typically a write torn by a crash.
    #[error("record is truncated: {len} bytes where {needed} were expected (a torn write)")]
    Truncated {
        /// Bytes present.
        len: usize,
        /// Bytes the header (or the minimum record size) requires.
        needed: usize,
    },
    /// The checksum does not match the contents.
    #[error("checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Checksum {
        /// Checksum found in the record.
        stored: u32,
        /// Checksum of the bytes as read.
        computed: u32,
    },
    /// A well-formed record of a format version this build cannot read.
    #[error("record format version {0} is not supported (this build reads version {FORMAT_VERSION}); run a Keel build that supports it")]
    UnsupportedVersion(u8),
    /// A well-formed record of another kind than the key it is stored under requires.
    #[error("found a record of kind {found} where a {expected} record was expected")]
    WrongKind {
        /// Kind the key requires.
        expected: &'static str,
        /// Kind byte found.
        found: u8,
    },
    /// The payload passed its checksum but does not parse (a bug or a deliberate forgery).
    #[error("malformed payload: {0}")]
    Malformed(&'static str),
    /// A value too large to store in one record.
    #[error("{what} of {size} bytes exceeds the record limit of {MAX_PAYLOAD_LEN} bytes")]
    TooLarge {
        /// What was being encoded.
        what: &'static str,
        /// Its encoded size.
        size: usize,
    },
}

// ---------------------------------------------------------------- framing

fn frame(kind: RecordKind, payload: &[u8]) -> Result<Vec<u8>, CodecError> {
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|len| *len as usize <= MAX_PAYLOAD_LEN)
        .ok_or(CodecError::TooLarge { what: kind.name(), size: payload.len() })?;
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len() + TRAILER_LEN);
    out.push(FORMAT_VERSION);
    out.push(kind as u8);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(payload);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    Ok(out)
}

/// Checks a record's framing and checksum and returns its payload.
pub fn open_record(bytes: &[u8], kind: RecordKind) -> Result<&[u8], CodecError> {
    let minimum = HEADER_LEN + TRAILER_LEN;
    let (Some(header), Some(len_bytes)) = (bytes.get(..HEADER_LEN), bytes.get(2..HEADER_LEN)) else {
        return Err(CodecError::Truncated { len: bytes.len(), needed: minimum });
    };
    let mut len_le = [0u8; 4];
    len_le.copy_from_slice(len_bytes);
    let payload_len = u32::from_le_bytes(len_le) as usize;
    let total = minimum.saturating_add(payload_len);
    if bytes.len() < total {
        return Err(CodecError::Truncated { len: bytes.len(), needed: total });
    }
    if bytes.len() > total {
        return Err(CodecError::Malformed("bytes follow the checksum"));
    }
    let body_end = HEADER_LEN + payload_len;
    let (body, trailer) = bytes.split_at(body_end);
    let mut crc_le = [0u8; 4];
    crc_le.copy_from_slice(trailer);
    let stored = u32::from_le_bytes(crc_le);
    let computed = crc32fast::hash(body);
    if stored != computed {
        return Err(CodecError::Checksum { stored, computed });
    }
    if header[0] != FORMAT_VERSION {
        return Err(CodecError::UnsupportedVersion(header[0]));
    }
    if header[1] != kind as u8 {
        return Err(CodecError::WrongKind { expected: kind.name(), found: header[1] });
    }
    Ok(&body[HEADER_LEN..])
}

// ---------------------------------------------------------------- writer / reader

fn put_u32(out: &mut Vec<u8>, value: u32) {
    out.extend_from_slice(&value.to_le_bytes());
}

fn put_u64(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(&value.to_le_bytes());
}

fn put_len(out: &mut Vec<u8>, len: usize, what: &'static str) -> Result<(), CodecError> {
    let len32 = u32::try_from(len).map_err(|_| CodecError::TooLarge { what, size: len })?;
    put_u32(out, len32);
    Ok(())
}

/// A bounds-checked cursor over a payload.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        if self.rest.len() < n {
            return Err(CodecError::Malformed("payload ends inside a field"));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, CodecError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, CodecError> {
        let mut le = [0u8; 4];
        le.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(le))
    }

    fn u64(&mut self) -> Result<u64, CodecError> {
        let mut le = [0u8; 8];
        le.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(le))
    }

    /// A count of items of at least `min_item_len` bytes each, checked against what is left so
    /// that a corrupt count can never drive a long loop or a huge allocation.
    fn count(&mut self, min_item_len: usize) -> Result<usize, CodecError> {
        let count = self.u32()? as usize;
        if count.saturating_mul(min_item_len) > self.rest.len() {
            return Err(CodecError::Malformed("item count exceeds the payload"));
        }
        Ok(count)
    }

    fn finish(&self) -> Result<(), CodecError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(CodecError::Malformed("payload has trailing bytes"))
        }
    }
}

// ---------------------------------------------------------------- membership

fn put_id_set(out: &mut Vec<u8>, ids: &BTreeSet<NodeId>) -> Result<(), CodecError> {
    put_len(out, ids.len(), "membership")?;
    ids.iter().for_each(|id| put_u32(out, *id));
    Ok(())
}

fn put_membership(out: &mut Vec<u8>, membership: &Membership) -> Result<(), CodecError> {
    put_id_set(out, &membership.voters)?;
    put_id_set(out, &membership.voters_outgoing)?;
    put_len(out, membership.learners.len(), "membership")?;
    for (id, kind) in &membership.learners {
        put_u32(out, *id);
        out.push(match kind {
            LearnerKind::Promotable => 0,
            LearnerKind::ReadOnly => 1,
        });
    }
    put_len(out, membership.addresses.len(), "membership")?;
    for (id, address) in &membership.addresses {
        put_u32(out, *id);
        put_len(out, address.len(), "membership address")?;
        out.extend_from_slice(address.as_bytes());
    }
    Ok(())
}

/// Reads `count` strictly ascending ids, so that every membership has exactly one encoding.
fn ascending_id(reader: &mut Reader<'_>, previous: Option<NodeId>) -> Result<NodeId, CodecError> {
    let id = reader.u32()?;
    if previous.is_some_and(|p| p >= id) {
        return Err(CodecError::Malformed("membership ids are not strictly ascending"));
    }
    Ok(id)
}

fn read_id_set(reader: &mut Reader<'_>) -> Result<BTreeSet<NodeId>, CodecError> {
    let count = reader.count(4)?;
    let mut ids = BTreeSet::new();
    let mut previous = None;
    for _ in 0..count {
        let id = ascending_id(reader, previous)?;
        ids.insert(id);
        previous = Some(id);
    }
    Ok(ids)
}

fn read_membership(reader: &mut Reader<'_>) -> Result<Membership, CodecError> {
    let voters = read_id_set(reader)?;
    let voters_outgoing = read_id_set(reader)?;
    let mut learners = BTreeMap::new();
    let mut previous = None;
    for _ in 0..reader.count(5)? {
        let id = ascending_id(reader, previous)?;
        let kind = match reader.u8()? {
            0 => LearnerKind::Promotable,
            1 => LearnerKind::ReadOnly,
            _ => return Err(CodecError::Malformed("unknown learner kind")),
        };
        learners.insert(id, kind);
        previous = Some(id);
    }
    let mut addresses = BTreeMap::new();
    previous = None;
    for _ in 0..reader.count(8)? {
        let id = ascending_id(reader, previous)?;
        let len = reader.u32()? as usize;
        let text = std::str::from_utf8(reader.take(len)?).map_err(|_| CodecError::Malformed("address is not UTF-8"))?;
        addresses.insert(id, text.to_owned());
        previous = Some(id);
    }
    Ok(Membership { voters, voters_outgoing, learners, addresses })
}

// ---------------------------------------------------------------- entries

/// Encodes one log entry as a record.
pub fn encode_entry(entry: &Entry) -> Result<Vec<u8>, CodecError> {
    let mut payload = Vec::with_capacity(32);
    put_u64(&mut payload, entry.log_id.term);
    put_u64(&mut payload, entry.log_id.index);
    match &entry.payload {
        EntryPayload::Noop => payload.push(0),
        EntryPayload::Command(command) => {
            payload.push(1);
            put_len(&mut payload, command.len(), "log entry")?;
            payload.extend_from_slice(command);
        }
        EntryPayload::Membership(membership) => {
            payload.push(2);
            put_membership(&mut payload, membership)?;
        }
    }
    frame(RecordKind::Entry, &payload)
}

/// Decodes a log entry record.
pub fn decode_entry(bytes: &[u8]) -> Result<Entry, CodecError> {
    let mut reader = Reader { rest: open_record(bytes, RecordKind::Entry)? };
    let log_id = LogId::new(reader.u64()?, reader.u64()?);
    let payload = match reader.u8()? {
        0 => EntryPayload::Noop,
        1 => {
            let len = reader.u32()? as usize;
            EntryPayload::Command(Bytes::copy_from_slice(reader.take(len)?))
        }
        2 => EntryPayload::Membership(Box::new(read_membership(&mut reader)?)),
        _ => return Err(CodecError::Malformed("unknown entry payload tag")),
    };
    reader.finish()?;
    Ok(Entry { log_id, payload })
}

// ---------------------------------------------------------------- hard state, mark

/// Encodes the hard state as a record.
pub fn encode_hard_state(hard_state: &HardState) -> Result<Vec<u8>, CodecError> {
    let mut payload = Vec::with_capacity(13);
    put_u64(&mut payload, hard_state.term);
    payload.push(u8::from(hard_state.voted_for.is_some()));
    put_u32(&mut payload, hard_state.voted_for.unwrap_or(0));
    frame(RecordKind::HardState, &payload)
}

/// Decodes a hard state record.
pub fn decode_hard_state(bytes: &[u8]) -> Result<HardState, CodecError> {
    let mut reader = Reader { rest: open_record(bytes, RecordKind::HardState)? };
    let term = reader.u64()?;
    let voted_for = match (reader.u8()?, reader.u32()?) {
        (0, 0) => None,
        (1, id) => Some(id),
        _ => return Err(CodecError::Malformed("invalid vote")),
    };
    reader.finish()?;
    Ok(HardState { term, voted_for })
}

/// Encodes a log mark (the highest index made durable by a sync) as a record.
pub fn encode_log_mark(index: Index) -> Result<Vec<u8>, CodecError> {
    frame(RecordKind::LogMark, &index.to_le_bytes())
}

/// Decodes a log mark record.
pub fn decode_log_mark(bytes: &[u8]) -> Result<Index, CodecError> {
    let mut reader = Reader { rest: open_record(bytes, RecordKind::LogMark)? };
    let index = reader.u64()?;
    reader.finish()?;
    Ok(index)
}

// ---------------------------------------------------------------- snapshots

/// Snapshot metadata as stored: the core's metadata plus what binds it to its data record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredSnapshotMeta {
    /// The core's metadata.
    pub meta: SnapshotMeta,
    /// Length of the snapshot data.
    pub data_len: u64,
    /// CRC32 of the snapshot data.
    pub data_crc: u32,
}

/// Encodes snapshot metadata, binding it to `data` by length and checksum.
pub fn encode_snapshot_meta(meta: &SnapshotMeta, data: &[u8]) -> Result<Vec<u8>, CodecError> {
    let mut payload = Vec::with_capacity(64);
    put_u64(&mut payload, meta.last_included.term);
    put_u64(&mut payload, meta.last_included.index);
    put_u64(&mut payload, data.len() as u64);
    put_u32(&mut payload, crc32fast::hash(data));
    put_membership(&mut payload, &meta.membership)?;
    frame(RecordKind::SnapshotMeta, &payload)
}

/// Decodes a snapshot metadata record.
pub fn decode_snapshot_meta(bytes: &[u8]) -> Result<StoredSnapshotMeta, CodecError> {
    let mut reader = Reader { rest: open_record(bytes, RecordKind::SnapshotMeta)? };
    let last_included = LogId::new(reader.u64()?, reader.u64()?);
    let data_len = reader.u64()?;
    let data_crc = reader.u32()?;
    let membership = read_membership(&mut reader)?;
    reader.finish()?;
    Ok(StoredSnapshotMeta { meta: SnapshotMeta { last_included, membership }, data_len, data_crc })
}

/// Encodes snapshot data as a record.
pub fn encode_snapshot_data(data: &[u8]) -> Result<Vec<u8>, CodecError> {
    frame(RecordKind::SnapshotData, data)
}

/// Decodes a snapshot data record.
pub fn decode_snapshot_data(bytes: &[u8]) -> Result<Bytes, CodecError> {
    open_record(bytes, RecordKind::SnapshotData).map(Bytes::copy_from_slice)
}
