//! Paillier ciphertexts (client input) and partial decryptions with their
//! proofs (peer answers) against a fixed small public key.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sigil_paillier::decrypt::PublicKey;
use sigil_paillier::rug::Integer;
use sigil_paillier::verify::{base, Verification};

fuzz_target!(|data: &[u8]| {
    // N = 1000003 * 1000033 (not a secure key; only the parsers matter).
    let n = Integer::from(1_000_003u64 * 1_000_033u64);
    let n2 = Integer::from(n.square_ref());
    let v = base(&n);
    let keys = (1..=3u32).map(|j| v.clone().pow_mod(&Integer::from(j), &n2).unwrap_or_default()).collect();
    let pk = PublicKey::new(n, Integer::from(12345), 3, 1).with_verification(Verification { v, keys, share_bits: 40 });
    let c = sigil_node::paillier::parse_ciphertext(&pk, data).unwrap_or_else(|_| Integer::from(2));
    let answers: Vec<(u16, usize, Vec<u8>)> = data
        .split(|&b| b == b'|')
        .enumerate()
        .map(|(i, a)| (i as u16, i + 1, a.to_vec()))
        .collect();
    let _ = sigil_node::paillier::combine(&pk, &c, &answers, Some(1));
});
