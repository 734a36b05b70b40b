//! The binary encoding of [`KvCommand`], written by hand so that it is deterministic (one
//! command, one byte string), versioned, and decodable without ever panicking.
//!
//! Format version 1 (primitives as in `wire.rs`: integers fixed-width little-endian, byte
//! strings as a `u32` length then the bytes, options as a 0/1 marker then the value, lists as a
//! `u32` count then the items):
//!
//! ```text
//! command      = version:u8(=1) tag:u8 body          (no bytes may follow)
//! tag 1 Put            key:bytes value:bytes ttl_ms:option<u64>
//! tag 2 Delete         key:bytes
//! tag 3 DeleteRange    start:bytes end:bytes
//! tag 4 CompareAndSwap key:bytes expected_value:option<bytes> new_value:bytes ttl_ms:option<u64>
//! tag 5 Txn            compares:list<compare> success:list<op> failure:list<op>   (read only)
//! tag 6 Compact        revision:u64
//! tag 7 Expire         now_ms:u64
//! tag 8 Txn            compares:list<compare8> success:list<op> failure:list<op>
//! tag 9 LeaseGrant     id:u64 ttl_ms:u64
//! tag 10 LeaseRevoke   id:u64
//! tag 11 LeaseKeepAlive id:u64
//! tag 12 LeaseRefreshAll
//! tag 13 Alarm         member:u64 alarm:u8 (1 NoSpace, 2 Corrupt) active:u8 (0 clear, 1 raise)
//! tag 14 Auth          auth command (tag:u8 body, see `auth_codec.rs`)
//! tag 15 Authorized    auth_revision:u64 tag:u8 body   (the inner command, not tag 15; no
//!                      second version byte)
//! compare      = key:bytes target:u8 operand op:u8
//!                target 1 Value (operand bytes), 2 Version, 3 CreateRevision, 4 ModRevision,
//!                5 Lease (operand u64)
//!                op 1 Equal, 2 NotEqual, 3 Less, 4 Greater
//! compare8     = key:bytes range_end:bytes target:u8 operand op:u8
//! op           = tag:u8 body
//!                tag 1 Put key:bytes value:bytes ttl_ms:option<u64>; 2 Delete key:bytes;
//!                tag 3 DeleteRange start:bytes end:bytes; 4 Range start:bytes end:bytes limit:u64;
//!                tag 5 Txn compares:list<compare8> success:list<op> failure:list<op>;
//!                tag 6 PutSameValue key:bytes; 7 PutInLease key:bytes value:bytes lease:u64;
//!                tag 8 PutKeepLease key:bytes value:bytes;
//!                tag 9 RangeAt start:bytes end:bytes limit:u64 revision:u64;
//!                tag 10 PutSameValueInLease key:bytes lease:u64; 11 PutSameValueKeepLease key:bytes
//! ```
//!
//! Tag 5 is how transactions were written before compares had a range end; it is still read
//! (its compares get an empty `range_end`), and transactions are now always written as tag 8.
//! Nested transactions deeper than `TXN_NESTING_MAX` are refused when decoding, so that no input
//! can exhaust the stack; so is an `Authorized` inside an `Authorized`. Tags start at 1 so that zeroed memory never decodes as a command. A
//! later format adds a new version number and keeps decoding version 1.

use bytes::Bytes;

use super::alarm::Alarm;
use super::auth_codec::{read_auth_command, write_auth_command};
use super::command::{Compare, CompareOp, CompareTarget, KvCommand, TxnOp, TXN_NESTING_MAX};
use super::error::KvDecodeError;
use super::wire::{ByteCounter, Reader, Sink};

/// The command format version written by this build.
pub(crate) const COMMAND_FORMAT_VERSION: u8 = 1;

/// Fewest bytes one compare can take (empty key, u64 operand): list counts are checked with it.
const COMPARE_BYTES_MIN: usize = 4 + 1 + 1;
/// Fewest bytes one transaction operation can take (tag and an empty key).
const TXN_OP_BYTES_MIN: usize = 1 + 4;

impl KvCommand {
    /// The command's bytes in the current format. Deterministic: equal commands give equal bytes.
    pub fn encode(&self) -> Bytes {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.write(&mut out);
        Bytes::from(out)
    }

    /// The length of [`KvCommand::encode`]'s output, computed without encoding.
    pub fn encoded_len(&self) -> usize {
        let mut counter = ByteCounter::default();
        self.write(&mut counter);
        counter.0
    }

    /// Decodes bytes written by [`KvCommand::encode`]. Any other input is an error naming the
    /// field and byte offset at fault; decoding never panics.
    pub fn decode(data: &[u8]) -> Result<KvCommand, KvDecodeError> {
        let mut reader = Reader::new(data);
        let version = reader.u8("format version")?;
        if version != COMMAND_FORMAT_VERSION {
            return Err(KvDecodeError::UnsupportedVersion { version });
        }
        let command = read_command(&mut reader, false)?;
        reader.finish()?;
        Ok(command)
    }

    fn write(&self, out: &mut impl Sink) {
        out.put_u8(COMMAND_FORMAT_VERSION);
        self.write_body(out);
    }

    /// The command's tag and body, without the version byte.
    fn write_body(&self, out: &mut impl Sink) {
        match self {
            KvCommand::Put { key, value, ttl_ms } => {
                out.put_u8(1);
                write_put(out, key, value, *ttl_ms);
            }
            KvCommand::Delete { key } => {
                out.put_u8(2);
                out.put_bytes(key);
            }
            KvCommand::DeleteRange { start, end } => {
                out.put_u8(3);
                out.put_bytes(start);
                out.put_bytes(end);
            }
            KvCommand::CompareAndSwap { key, expected_value, new_value, ttl_ms } => {
                out.put_u8(4);
                out.put_bytes(key);
                out.put_option_bytes(expected_value.as_deref());
                out.put_bytes(new_value);
                out.put_option_u64(*ttl_ms);
            }
            KvCommand::Txn { compares, success, failure } => {
                out.put_u8(8);
                write_txn(out, compares, success, failure);
            }
            KvCommand::Compact { revision } => {
                out.put_u8(6);
                out.put_u64(*revision);
            }
            KvCommand::Expire { now_ms } => {
                out.put_u8(7);
                out.put_u64(*now_ms);
            }
            KvCommand::LeaseGrant { id, ttl_ms } => {
                out.put_u8(9);
                out.put_u64(*id);
                out.put_u64(*ttl_ms);
            }
            KvCommand::LeaseRevoke { id } => {
                out.put_u8(10);
                out.put_u64(*id);
            }
            KvCommand::LeaseKeepAlive { id } => {
                out.put_u8(11);
                out.put_u64(*id);
            }
            KvCommand::LeaseRefreshAll => out.put_u8(12),
            KvCommand::Alarm { member, alarm, active } => {
                out.put_u8(13);
                out.put_u64(*member);
                out.put_u8(alarm.code());
                out.put_u8(u8::from(*active));
            }
            KvCommand::Auth(command) => {
                out.put_u8(14);
                write_auth_command(out, command);
            }
            KvCommand::Authorized { auth_revision, command } => {
                out.put_u8(15);
                out.put_u64(*auth_revision);
                command.write_body(out);
            }
        }
    }
}

/// A command's tag and body; `authorized` when it is the inner command of an `Authorized`, which
/// may not be another one.
fn read_command(reader: &mut Reader<'_>, authorized: bool) -> Result<KvCommand, KvDecodeError> {
    let offset = reader.offset();
    Ok(match reader.u8("command tag")? {
        1 => KvCommand::Put {
            key: reader.bytes("key")?,
            value: reader.bytes("value")?,
            ttl_ms: reader.option_u64("ttl_ms")?,
        },
        2 => KvCommand::Delete { key: reader.bytes("key")? },
        3 => KvCommand::DeleteRange { start: reader.bytes("range start")?, end: reader.bytes("range end")? },
        4 => KvCommand::CompareAndSwap {
            key: reader.bytes("key")?,
            expected_value: reader.option_bytes("expected_value")?,
            new_value: reader.bytes("new_value")?,
            ttl_ms: reader.option_u64("ttl_ms")?,
        },
        // The legacy transaction format predates `Authorized`, which was never written around
        // it: refused there, so that every command inside one re-encodes to the same bytes.
        5 if authorized => return Err(KvDecodeError::UnknownTag { field: "command", offset, tag: 5 }),
        5 => txn_command(read_txn(reader, false, 1)?),
        6 => KvCommand::Compact { revision: reader.u64("revision")? },
        7 => KvCommand::Expire { now_ms: reader.u64("now_ms")? },
        8 => txn_command(read_txn(reader, true, 1)?),
        9 => KvCommand::LeaseGrant { id: reader.u64("lease id")?, ttl_ms: reader.u64("lease ttl_ms")? },
        10 => KvCommand::LeaseRevoke { id: reader.u64("lease id")? },
        11 => KvCommand::LeaseKeepAlive { id: reader.u64("lease id")? },
        12 => KvCommand::LeaseRefreshAll,
        13 => read_alarm(reader)?,
        14 => KvCommand::Auth(read_auth_command(reader)?),
        15 if authorized => return Err(KvDecodeError::NestedAuthorized { offset }),
        15 => {
            let auth_revision = reader.u64("auth_revision")?;
            KvCommand::Authorized { auth_revision, command: Box::new(read_command(reader, true)?) }
        }
        tag => return Err(KvDecodeError::UnknownTag { field: "command", offset, tag }),
    })
}

fn read_alarm(reader: &mut Reader<'_>) -> Result<KvCommand, KvDecodeError> {
    let member = reader.u64("alarm member")?;
    let offset = reader.offset();
    let tag = reader.u8("alarm kind")?;
    let alarm = Alarm::of_code(tag).ok_or(KvDecodeError::UnknownTag { field: "alarm kind", offset, tag })?;
    let offset = reader.offset();
    let active = match reader.u8("alarm active")? {
        0 => false,
        1 => true,
        tag => return Err(KvDecodeError::UnknownTag { field: "alarm active", offset, tag }),
    };
    Ok(KvCommand::Alarm { member, alarm, active })
}

fn write_put(out: &mut impl Sink, key: &[u8], value: &[u8], ttl_ms: Option<u64>) {
    out.put_bytes(key);
    out.put_bytes(value);
    out.put_option_u64(ttl_ms);
}

fn write_txn(out: &mut impl Sink, compares: &[Compare], success: &[TxnOp], failure: &[TxnOp]) {
    out.put_count(compares.len());
    for compare in compares {
        write_compare(out, compare);
    }
    write_ops(out, success);
    write_ops(out, failure);
}

fn write_compare(out: &mut impl Sink, compare: &Compare) {
    out.put_bytes(&compare.key);
    out.put_bytes(&compare.range_end);
    match &compare.target {
        CompareTarget::Value(value) => {
            out.put_u8(1);
            out.put_bytes(value);
        }
        CompareTarget::Version(operand) => {
            out.put_u8(2);
            out.put_u64(*operand);
        }
        CompareTarget::CreateRevision(operand) => {
            out.put_u8(3);
            out.put_u64(*operand);
        }
        CompareTarget::ModRevision(operand) => {
            out.put_u8(4);
            out.put_u64(*operand);
        }
        CompareTarget::Lease(operand) => {
            out.put_u8(5);
            out.put_u64(*operand);
        }
    }
    out.put_u8(match compare.op {
        CompareOp::Equal => 1,
        CompareOp::NotEqual => 2,
        CompareOp::Less => 3,
        CompareOp::Greater => 4,
    });
}

fn write_ops(out: &mut impl Sink, ops: &[TxnOp]) {
    out.put_count(ops.len());
    for op in ops {
        match op {
            TxnOp::Put { key, value, ttl_ms } => {
                out.put_u8(1);
                write_put(out, key, value, *ttl_ms);
            }
            TxnOp::Delete { key } => {
                out.put_u8(2);
                out.put_bytes(key);
            }
            TxnOp::DeleteRange { start, end } => {
                out.put_u8(3);
                out.put_bytes(start);
                out.put_bytes(end);
            }
            TxnOp::Range { start, end, limit } => {
                out.put_u8(4);
                out.put_bytes(start);
                out.put_bytes(end);
                out.put_u64(*limit);
            }
            TxnOp::Txn { compares, success, failure } => {
                out.put_u8(5);
                write_txn(out, compares, success, failure);
            }
            TxnOp::PutSameValue { key } => {
                out.put_u8(6);
                out.put_bytes(key);
            }
            TxnOp::PutInLease { key, value, lease } => {
                out.put_u8(7);
                out.put_bytes(key);
                out.put_bytes(value);
                out.put_u64(*lease);
            }
            TxnOp::PutKeepLease { key, value } => {
                out.put_u8(8);
                out.put_bytes(key);
                out.put_bytes(value);
            }
            TxnOp::PutSameValueInLease { key, lease } => {
                out.put_u8(10);
                out.put_bytes(key);
                out.put_u64(*lease);
            }
            TxnOp::PutSameValueKeepLease { key } => {
                out.put_u8(11);
                out.put_bytes(key);
            }
            TxnOp::RangeAt { start, end, limit, revision } => {
                out.put_u8(9);
                out.put_bytes(start);
                out.put_bytes(end);
                out.put_u64(*limit);
                out.put_u64(*revision);
            }
        }
    }
}

/// A transaction's body at nesting `depth`; `ranged` compares carry a range end (tag 8 and
/// nested transactions), the others (tag 5) do not.
fn read_txn(reader: &mut Reader<'_>, ranged: bool, depth: usize) -> Result<TxnParts, KvDecodeError> {
    if depth > TXN_NESTING_MAX {
        return Err(KvDecodeError::TooDeep { offset: reader.offset(), max: TXN_NESTING_MAX });
    }
    let count = reader.count("compares", COMPARE_BYTES_MIN)?;
    let mut compares = Vec::with_capacity(count);
    for _ in 0..count {
        compares.push(read_compare(reader, ranged)?);
    }
    let success = read_ops(reader, "success ops", depth)?;
    let failure = read_ops(reader, "failure ops", depth)?;
    Ok((compares, success, failure))
}

/// A transaction's compares, success operations and failure operations.
type TxnParts = (Vec<Compare>, Vec<TxnOp>, Vec<TxnOp>);

fn txn_command((compares, success, failure): TxnParts) -> KvCommand {
    KvCommand::Txn { compares, success, failure }
}

fn read_compare(reader: &mut Reader<'_>, ranged: bool) -> Result<Compare, KvDecodeError> {
    let key = reader.bytes("compare key")?;
    let range_end = if ranged { reader.bytes("compare range_end")? } else { Bytes::new() };
    let offset = reader.offset();
    let target = match reader.u8("compare target")? {
        1 => CompareTarget::Value(reader.bytes("compare value")?),
        2 => CompareTarget::Version(reader.u64("compare version")?),
        3 => CompareTarget::CreateRevision(reader.u64("compare create_revision")?),
        4 => CompareTarget::ModRevision(reader.u64("compare mod_revision")?),
        5 => CompareTarget::Lease(reader.u64("compare lease")?),
        tag => return Err(KvDecodeError::UnknownTag { field: "compare target", offset, tag }),
    };
    let offset = reader.offset();
    let op = match reader.u8("compare op")? {
        1 => CompareOp::Equal,
        2 => CompareOp::NotEqual,
        3 => CompareOp::Less,
        4 => CompareOp::Greater,
        tag => return Err(KvDecodeError::UnknownTag { field: "compare op", offset, tag }),
    };
    Ok(Compare { key, range_end, target, op })
}

fn read_ops(reader: &mut Reader<'_>, field: &'static str, depth: usize) -> Result<Vec<TxnOp>, KvDecodeError> {
    let count = reader.count(field, TXN_OP_BYTES_MIN)?;
    let mut ops = Vec::with_capacity(count);
    for _ in 0..count {
        ops.push(read_op(reader, depth)?);
    }
    Ok(ops)
}

fn read_op(reader: &mut Reader<'_>, depth: usize) -> Result<TxnOp, KvDecodeError> {
    let offset = reader.offset();
    Ok(match reader.u8("txn op tag")? {
        1 => TxnOp::Put {
            key: reader.bytes("put key")?,
            value: reader.bytes("put value")?,
            ttl_ms: reader.option_u64("put ttl_ms")?,
        },
        2 => TxnOp::Delete { key: reader.bytes("delete key")? },
        3 => TxnOp::DeleteRange { start: reader.bytes("delete start")?, end: reader.bytes("delete end")? },
        4 => TxnOp::Range {
            start: reader.bytes("range start")?,
            end: reader.bytes("range end")?,
            limit: reader.u64("range limit")?,
        },
        5 => {
            let (compares, success, failure) = read_txn(reader, true, depth + 1)?;
            TxnOp::Txn { compares, success, failure }
        }
        6 => TxnOp::PutSameValue { key: reader.bytes("put key")? },
        7 => TxnOp::PutInLease {
            key: reader.bytes("put key")?,
            value: reader.bytes("put value")?,
            lease: reader.u64("put lease")?,
        },
        8 => TxnOp::PutKeepLease { key: reader.bytes("put key")?, value: reader.bytes("put value")? },
        9 => TxnOp::RangeAt {
            start: reader.bytes("range start")?,
            end: reader.bytes("range end")?,
            limit: reader.u64("range limit")?,
            revision: reader.u64("range revision")?,
        },
        10 => TxnOp::PutSameValueInLease { key: reader.bytes("put key")?, lease: reader.u64("put lease")? },
        11 => TxnOp::PutSameValueKeepLease { key: reader.bytes("put key")? },
        tag => return Err(KvDecodeError::UnknownTag { field: "txn op", offset, tag }),
    })
}
