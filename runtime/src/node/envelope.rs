//! The entry envelope: what the runtime puts in a log entry's command bytes. The leader stamps
//! its wall clock at proposal time next to the encoded `KvCommand`, so that every replica computes
//! the same expiry deadlines from the log alone.
//!
//! Layout: version byte `1`, the stamp as 8 bytes little-endian, then `KvCommand::encode`.

use bytes::{BufMut, Bytes, BytesMut};
use keel_core::kv::KvCommand;

const VERSION: u8 = 1;
const HEADER_BYTES: usize = 9;

/// Wraps a command with the proposing leader's wall-clock stamp.
pub fn encode(proposed_at_ms: u64, command: &KvCommand) -> Bytes {
    let encoded = command.encode();
    let mut out = BytesMut::with_capacity(HEADER_BYTES + encoded.len());
    out.put_u8(VERSION);
    out.put_u64_le(proposed_at_ms);
    out.extend_from_slice(&encoded);
    out.freeze()
}

/// Unwraps an envelope; malformed bytes are an error, never a panic.
pub fn decode(bytes: &[u8]) -> Result<(u64, KvCommand), String> {
    if bytes.len() < HEADER_BYTES {
        return Err(format!("entry of {} bytes is shorter than the {HEADER_BYTES}-byte envelope header", bytes.len()));
    }
    if bytes[0] != VERSION {
        return Err(format!("unknown envelope version {}", bytes[0]));
    }
    let mut stamp = [0u8; 8];
    stamp.copy_from_slice(&bytes[1..HEADER_BYTES]);
    let command = KvCommand::decode(&bytes[HEADER_BYTES..]).map_err(|error| error.to_string())?;
    Ok((u64::from_le_bytes(stamp), command))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_garbage() {
        let command =
            KvCommand::Put { key: Bytes::from_static(b"k"), value: Bytes::from_static(b"v"), ttl_ms: Some(5) };
        let bytes = encode(1_700_000_000_000, &command);
        assert_eq!(decode(&bytes), Ok((1_700_000_000_000, command)));
        assert!(decode(&bytes[..4]).is_err());
        let mut wrong = bytes.to_vec();
        wrong[0] = 9;
        assert!(decode(&wrong).unwrap_err().contains("version"));
    }
}
