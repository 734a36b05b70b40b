//! The simulator's entry envelope: what a simulated node puts in a log entry's command bytes.
//! Like the runtime's, it carries the proposing leader's wall-clock stamp (from which every
//! replica computes the same expiry deadlines) next to `KvCommand::encode`'s bytes.
//!
//! Layout: version byte `1`, the stamp as 8 bytes little-endian, then the encoded command.
//! Decoding never panics; a malformed entry is an error the node reports as an anomaly.

use bytes::{BufMut, Bytes, BytesMut};
use keel_core::kv::KvCommand;

const VERSION: u8 = 1;
const HEADER_BYTES: usize = 9;

/// Wraps `command` with the stamp `proposed_at_ms`.
pub fn encode(proposed_at_ms: u64, command: &KvCommand) -> Bytes {
    let encoded = command.encode();
    let mut out = BytesMut::with_capacity(HEADER_BYTES + encoded.len());
    out.put_u8(VERSION);
    out.put_u64_le(proposed_at_ms);
    out.extend_from_slice(&encoded);
    out.freeze()
}

/// Unwraps an envelope into its stamp and command.
pub fn decode(bytes: &[u8]) -> Result<(u64, KvCommand), String> {
    if bytes.len() < HEADER_BYTES || bytes[0] != VERSION {
        return Err(format!("malformed entry envelope of {} bytes", bytes.len()));
    }
    let stamp = u64::from_le_bytes(bytes[1..HEADER_BYTES].try_into().expect("eight bytes"));
    let command = KvCommand::decode(&bytes[HEADER_BYTES..]).map_err(|error| error.to_string())?;
    Ok((stamp, command))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_garbage() {
        let command = KvCommand::Expire { now_ms: 77 };
        let bytes = encode(1_234, &command);
        assert_eq!(decode(&bytes), Ok((1_234, command)));
        assert!(decode(&bytes[..5]).is_err());
    }
}
