//! Decodes arbitrary bytes as a `ClientWriteRequest`: decoding must never panic, and whatever
//! decodes must survive an encode/decode round trip unchanged.

#![no_main]

use keel::proto::client::ClientWriteRequest;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = ClientWriteRequest::decode(data) {
        let encoded = request.encode_to_vec();
        let again = ClientWriteRequest::decode(encoded.as_slice()).expect("re-encoding a decoded request must decode");
        assert_eq!(again, request);
    }
});
