//! BIP-32 derivation paths as clients send them.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(p) = sigil_crypto::ecdsa::parse_derivation_path(s) {
            assert!(p.len() <= sigil_crypto::ecdsa::MAX_DERIVATION_DEPTH);
            assert!(p.iter().all(|&i| i < 1 << 31));
        }
    }
});
