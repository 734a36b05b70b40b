//! Fuzz target: restoring a KV snapshot from arbitrary bytes must never panic; corrupt input is
//! refused with an error.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = keel_core::kv::KvStore::restore(data);
});
