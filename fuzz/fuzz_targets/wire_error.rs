//! Peer error decoding: any status details a peer sends.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&code, rest)) = data.split_first() else { return };
    let status = tonic::Status::with_details(
        tonic::Code::from_i32(i32::from(code % 17)),
        "fuzz",
        rest.to_vec().into(),
    );
    let e = sigil_node::wire::status_session_error(3, &status);
    // A peer's word never names another node.
    assert!(e.nodes().iter().all(|&n| n == 3), "{e:?}");
});
