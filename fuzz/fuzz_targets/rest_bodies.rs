//! REST request bodies as the API parses them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sigil_node::api::{CreateKeyRequest, DecryptRequest, SignRequest};

fuzz_target!(|data: &[u8]| {
    let _ = serde_json::from_slice::<CreateKeyRequest>(data);
    let _ = serde_json::from_slice::<SignRequest>(data);
    let _ = serde_json::from_slice::<DecryptRequest>(data);
    let _ = serde_json::from_slice::<sigil_store::KeyPolicy>(data);
});
