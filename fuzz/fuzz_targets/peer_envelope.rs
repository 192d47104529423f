//! Every protocol message type through the envelope payload decoder
//! (postcard, as `session::run` decodes a `Deliver` payload). The first
//! byte picks the type.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sigil_crypto::ecdsa::{AuxMsg, KeygenMsg, Secp256k1, Secp256r1, SignMsg};
use sigil_crypto::frost::{dkg, sign};
use sigil_crypto::scheme::{frost_ed25519::Ed25519Sha512, frost_p256::P256Sha256, frost_secp256k1_tr::Secp256K1Sha256TR};

fn decode<M: serde::de::DeserializeOwned>(data: &[u8]) {
    let _ = postcard::from_bytes::<M>(data);
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else { return };
    match which % 15 {
        0 => decode::<dkg::Msg<Ed25519Sha512>>(rest),
        1 => decode::<dkg::Msg<Secp256K1Sha256TR>>(rest),
        2 => decode::<dkg::Msg<P256Sha256>>(rest),
        3 => decode::<sign::Msg<Ed25519Sha512>>(rest),
        4 => decode::<sign::Msg<Secp256K1Sha256TR>>(rest),
        5 => decode::<sign::Msg<P256Sha256>>(rest),
        6 => decode::<KeygenMsg<Secp256k1>>(rest),
        7 => decode::<KeygenMsg<Secp256r1>>(rest),
        8 => decode::<SignMsg<Secp256k1>>(rest),
        9 => decode::<AuxMsg>(rest),
        10 => decode::<sigil_paillier::protocol::Msg>(rest),
        11 => decode::<sigil_crypto::reshare::Msg<Ed25519Sha512>>(rest),
        12 => decode::<sigil_crypto::reshare::Msg<Secp256K1Sha256TR>>(rest),
        13 => decode::<sigil_crypto::reshare::Msg<P256Sha256>>(rest),
        _ => decode::<sigil_paillier::reshare::Msg>(rest),
    }
});
