//! Key metadata from a peer (`GetKeyMeta`, `FinalizeKey`): protobuf, then
//! the record it describes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    if let Ok(meta) = sigil_proto::peer::KeyMeta::decode(data) {
        if let Ok(record) = sigil_node::records::record_of(&meta, sigil_store::KeyStatus::Active) {
            let _ = sigil_node::attest::record_bytes(&record);
        }
    }
    let _ = sigil_proto::peer::SessionProposal::decode(data);
    let _ = sigil_proto::peer::FinalizeAuxRequest::decode(data);
});
