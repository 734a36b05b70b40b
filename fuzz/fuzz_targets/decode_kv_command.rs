//! Fuzz target: decoding arbitrary bytes as a replicated KV command must never panic; any command
//! that decodes must re-encode to bytes that decode to the same command, and to the very same
//! bytes unless it was written in the legacy transaction format (command tag 5, still read but
//! always re-written as tag 8, see `command_codec.rs`). So the encoding is canonical for
//! everything this build writes, and replicas cannot disagree on what an entry means.

#![no_main]

use keel_core::kv::KvCommand;
use libfuzzer_sys::fuzz_target;

/// The command tag of transactions written before compares had a range end.
const LEGACY_TXN_TAG: u8 = 5;

fuzz_target!(|data: &[u8]| {
    if let Ok(command) = KvCommand::decode(data) {
        let encoded = command.encode();
        assert_eq!(KvCommand::decode(&encoded).ok().as_ref(), Some(&command), "re-encoding must decode to itself");
        if data[1] != LEGACY_TXN_TAG {
            assert_eq!(encoded.as_ref(), data, "decoded command must re-encode identically");
        }
    }
});
