//! Paillier ciphertexts (client input) and partial decryptions (peer
//! answers) against a fixed small public key.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sigil_paillier::decrypt::PublicKey;
use sigil_paillier::rug::Integer;

fuzz_target!(|data: &[u8]| {
    // N = 1000003 * 1000033 (not a secure key; only the parsers matter).
    let n = Integer::from(1_000_003u64 * 1_000_033u64);
    let pk = PublicKey::new(n, Integer::from(12345), 3, 1);
    let _ = sigil_node::paillier::parse_ciphertext(&pk, data);
    let answers: Vec<Vec<u8>> = data.split(|&b| b == b'|').map(<[u8]>::to_vec).collect();
    let _ = sigil_node::paillier::combine(&pk, &answers);
});
