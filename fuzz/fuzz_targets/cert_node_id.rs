//! Certificate node-id parsing: arbitrary DER, and DNS names.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = sigil_node::certs::node_id_of_cert(data);
    if let Ok(name) = std::str::from_utf8(data) {
        if let Some(id) = sigil_node::certs::node_id_from_dns_name(name) {
            // One id, one name.
            assert_eq!(sigil_node::certs::node_dns_name(id), name);
        }
    }
});
