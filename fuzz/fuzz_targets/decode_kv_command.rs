//! Fuzz target: decoding arbitrary bytes as a replicated KV command must never panic, and any
//! command that decodes must re-encode to the very same bytes (the encoding is canonical, so
//! replicas cannot disagree on what an entry means).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(command) = keel_core::kv::KvCommand::decode(data) {
        assert_eq!(command.encode().as_ref(), data, "decoded command must re-encode identically");
    }
});
