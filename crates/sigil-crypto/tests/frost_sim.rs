//! In-process simulations of FROST DKG and signing for every scheme, over the
//! (t, n) matrix of the issue, with cheating parties, and the RFC 9591 test
//! vectors run through our signing protocol.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    missing_docs
)]

use std::collections::BTreeMap;

use frost_core::keys::{KeyPackage, PublicKeyPackage, SigningShare, VerifyingShare};
use frost_core::{Ciphersuite, VerifyingKey};
use futures::SinkExt;
use rand::rngs::StdRng;
use rand::SeedableRng;
use round_based::sim::async_env;
use round_based::{Delivery, MpcParty, Outgoing};
use sigil_crypto::frost::{dkg, identifier, sign};
use sigil_crypto::schedule::checked;
use sigil_crypto::scheme::signature_bytes;
use sigil_crypto::{with_ciphersuite, Error, Scheme};

#[path = "common/snapshot.rs"]
mod common_snapshot;

const MATRIX: [(u16, u16); 3] = [(2, 3), (3, 5), (5, 7)];

type Keys<C> = Vec<(KeyPackage<C>, PublicKeyPackage<C>)>;

async fn run_dkg<C: Ciphersuite + Send + 'static>(t: u16, n: u16, seed: u64) -> Keys<C>
where
    dkg::Msg<C>: Unpin,
{
    let sid = [seed as u8; 32];
    let out = async_env::run(n, |i, party| async move {
        let mut rng = StdRng::seed_from_u64(seed * 1000 + u64::from(i));
        dkg::run::<C, _, _>(checked(party, i, n, dkg::expects), &sid, i, n, t, &mut rng).await
    })
    .await;
    out.into_vec()
        .into_iter()
        .map(|r| {
            let o = r.expect("dkg succeeds");
            (o.key_package, o.public_key_package)
        })
        .collect()
}

async fn run_sign<C: Ciphersuite + Send + 'static>(
    keys: &Keys<C>,
    signers: &[u16],
    msg: &[u8],
    seed: u64,
) -> Vec<Result<Option<frost_core::Signature<C>>, Error>>
where
    sign::Msg<C>: Unpin,
{
    let signers = signers.to_vec();
    let n = signers.len() as u16;
    async_env::run(n, |i, party| {
        let signers = signers.clone();
        let (kp, pkp) = keys[usize::from(signers[usize::from(i)])].clone();
        let msg = msg.to_vec();
        async move {
            let mut rng = StdRng::seed_from_u64(seed + u64::from(i));
            let party = checked(party, i, signers.len() as u16, sign::expects);
            sign::run::<C, _, _>(party, i, &signers, &kp, &pkp, &msg, &mut rng).await
        }
    })
    .await
    .into_vec()
}

async fn dkg_and_sign_matrix(scheme: Scheme) {
    for (t, n) in MATRIX {
        with_ciphersuite!(scheme, C => {
            let keys = run_dkg::<C>(t, n, u64::from(t * 10 + n)).await;
            // Every party agrees on the public key package.
            let first = keys[0].1.serialize().unwrap();
            for (_, pkp) in &keys {
                assert_eq!(pkp.serialize().unwrap(), first, "{scheme} ({t},{n}): same public key package");
            }
            let public_key = scheme.public_key(&first).unwrap();
            // Sign with the last t parties, in an order that puts a
            // non-first key index in the aggregator slot.
            let signers: Vec<u16> = (n - t..n).rev().collect();
            let msg = format!("message for {scheme} {t}-of-{n}").into_bytes();
            let results = run_sign::<C>(&keys, &signers, &msg, 7).await;
            let sig = results[0].clone().unwrap().expect("aggregator returns the signature");
            for r in &results[1..] {
                assert!(r.as_ref().unwrap().is_none());
            }
            let sig = signature_bytes(&sig).unwrap();
            // Independent single-key verifier (ed25519-dalek verify_strict,
            // k256 BIP-340, RFC 9591 for P-256).
            scheme.verify(&public_key, &msg, &sig).unwrap();
            assert!(scheme.verify(&public_key, b"another message", &sig).is_err());
            assert!(scheme.public_key_pem(&public_key).unwrap().starts_with("-----BEGIN PUBLIC KEY-----"));
        }, other => panic!("{other} is not FROST"));
    }
}

#[tokio::test]
async fn frost_ed25519_dkg_and_sign() {
    dkg_and_sign_matrix(Scheme::FrostEd25519).await;
}

#[tokio::test]
async fn frost_secp256k1_tr_dkg_and_sign() {
    dkg_and_sign_matrix(Scheme::FrostSecp256k1Tr).await;
}

#[tokio::test]
async fn frost_p256_dkg_and_sign() {
    dkg_and_sign_matrix(Scheme::FrostP256).await;
}

#[tokio::test]
async fn ed25519_signatures_pass_dalek_strict_and_bip340_passes_k256() {
    // Explicit checks with the external crates, not through Scheme::verify.
    let keys = run_dkg::<frost_ed25519::Ed25519Sha512>(2, 3, 99).await;
    let res = run_sign(&keys, &[0, 2], b"hello", 1).await;
    let sig = res[0].clone().unwrap().unwrap();
    let pk: [u8; 32] = keys[0].1.verifying_key().serialize().unwrap().try_into().unwrap();
    let vk = ed25519_dalek::VerifyingKey::from_bytes(&pk).unwrap();
    let sig: [u8; 64] = sig.serialize().unwrap().try_into().unwrap();
    vk.verify_strict(b"hello", &ed25519_dalek::Signature::from_bytes(&sig))
        .unwrap();

    let keys = run_dkg::<frost_secp256k1_tr::Secp256K1Sha256TR>(2, 3, 98).await;
    let res = run_sign(&keys, &[1, 2], b"taproot", 2).await;
    let sig = res[0].clone().unwrap().unwrap().serialize().unwrap();
    assert_eq!(sig.len(), 64);
    let xonly = Scheme::FrostSecp256k1Tr
        .public_key(&keys[0].1.serialize().unwrap())
        .unwrap();
    let vk = k256::schnorr::VerifyingKey::from_bytes(&xonly).unwrap();
    vk.verify_raw(b"taproot", &k256::schnorr::Signature::try_from(sig.as_slice()).unwrap())
        .unwrap();
}

/// Party `bad` corrupts the share it sends to every other party in DKG
/// round 2. Every honest party must name it.
#[tokio::test]
async fn dkg_bad_share_names_the_culprit() {
    type C = frost_ed25519::Ed25519Sha512;
    let (t, n, bad) = (2u16, 3u16, 1u16);
    let sid = [5u8; 32];
    let out = async_env::run(n, |i, party| async move {
        let mut rng = StdRng::seed_from_u64(u64::from(i));
        if i != bad {
            return dkg::run::<C, _, _>(party, &sid, i, n, t, &mut rng).await.map(|_| ());
        }
        // The cheater: replace each round-2 share by a share of another DKG.
        let party = party.map_delivery(|d| {
            let (incoming, outgoing) = d.split();
            let outgoing = outgoing.with(|m: Outgoing<dkg::Msg<C>>| async move {
                Ok::<_, tokio::sync::broadcast::error::SendError<()>>(match m.msg {
                    dkg::Msg::Round2(mut r2) => {
                        let bogus: SigningShare<C> = SigningShare::deserialize(&[3u8; 32]).unwrap();
                        r2.package = frost_core::keys::dkg::round2::Package::new(bogus);
                        Outgoing {
                            recipient: m.recipient,
                            msg: dkg::Msg::Round2(r2),
                        }
                    }
                    other => Outgoing {
                        recipient: m.recipient,
                        msg: other,
                    },
                })
            });
            (incoming, Box::pin(outgoing))
        });
        let party = MpcParty::connected(party.delivery);
        dkg::run::<C, _, _>(party, &sid, i, n, t, &mut rng).await.map(|_| ())
    })
    .await
    .into_vec();
    for (i, r) in out.iter().enumerate() {
        if i as u16 == bad {
            continue;
        }
        match r {
            Err(e @ Error::InvalidSecretShare { .. }) => {
                assert_eq!(e.culprits(), vec![bad], "party {i}")
            }
            other => panic!("party {i}: expected InvalidSecretShare naming {bad}, got {other:?}"),
        }
    }
}

/// A signer sends a bad signature share; the aggregator names it.
#[tokio::test]
async fn sign_bad_share_names_the_culprit() {
    type C = frost_p256::P256Sha256;
    let keys = run_dkg::<C>(3, 5, 17).await;
    let signers = vec![4u16, 0, 2];
    let bad = 2u16; // session index of key party 2
    let out = async_env::run(3, |i, party| {
        let signers = signers.clone();
        let (kp, pkp) = keys[usize::from(signers[usize::from(i)])].clone();
        async move {
            let mut rng = StdRng::seed_from_u64(u64::from(i));
            if i != bad {
                return sign::run::<C, _, _>(party, i, &signers, &kp, &pkp, b"m", &mut rng).await;
            }
            let party = party.map_delivery(|d| {
                let (incoming, outgoing) = d.split();
                let outgoing = outgoing.with(|m: Outgoing<sign::Msg<C>>| async move {
                    Ok::<_, tokio::sync::broadcast::error::SendError<()>>(match m.msg {
                        sign::Msg::Round2(_) => {
                            let z = frost_core::round2::SignatureShare::<C>::deserialize(&[1u8; 32]).unwrap();
                            Outgoing {
                                recipient: m.recipient,
                                msg: sign::Msg::Round2(sign::Round2(z)),
                            }
                        }
                        other => Outgoing {
                            recipient: m.recipient,
                            msg: other,
                        },
                    })
                });
                (incoming, Box::pin(outgoing))
            });
            let party = MpcParty::connected(party.delivery);
            sign::run::<C, _, _>(party, i, &signers, &kp, &pkp, b"m", &mut rng).await
        }
    })
    .await
    .into_vec();
    match &out[0] {
        Err(e @ Error::InvalidSignatureShare { .. }) => assert_eq!(e.culprits(), vec![bad]),
        other => panic!("expected InvalidSignatureShare, got {other:?}"),
    }
}

#[test]
fn bad_parameters_are_errors_not_panics() {
    futures::executor::block_on(async {
        let r = async_env::run(3u16, |i, party| async move {
            let mut rng = StdRng::seed_from_u64(0);
            dkg::run::<frost_ed25519::Ed25519Sha512, _, _>(party, &[0; 32], i, 3, 1, &mut rng)
                .await
                .map(|_| ())
        })
        .await
        .into_vec();
        assert!(r.iter().all(|x| matches!(x, Err(Error::InvalidParameters(_)))));
    });
    assert!("frost-ed448".parse::<Scheme>().is_err());
    assert_eq!("frost-p256".parse::<Scheme>().unwrap(), Scheme::FrostP256);
}

/// An RNG that replays fixed bytes: feeds the vectors' nonce randomness to
/// `frost_core::round1::commit` (hiding randomness, then binding).
struct Replay(Vec<u8>);
impl rand_core::RngCore for Replay {
    fn next_u32(&mut self) -> u32 {
        unimplemented!()
    }
    fn next_u64(&mut self) -> u64 {
        unimplemented!()
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        let n = dest.len();
        dest.copy_from_slice(&self.0[..n]);
        self.0.drain(..n);
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}
impl rand_core::CryptoRng for Replay {}

async fn rfc_vectors<C: Ciphersuite + Send + 'static>(file: &str)
where
    sign::Msg<C>: Unpin,
{
    let path = format!("{}/tests/vectors/{file}", env!("CARGO_MANIFEST_DIR"));
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let hx = |s: &serde_json::Value| hex::decode(s.as_str().unwrap()).unwrap();
    let inputs = &v["inputs"];
    let verifying_key = VerifyingKey::<C>::deserialize(&hx(&inputs["verifying_key_key"])).unwrap();
    let min_signers = inputs["share_polynomial_coefficients"].as_array().unwrap().len() as u16 + 1;
    let mut key_packages = BTreeMap::new();
    let mut verifying_shares = BTreeMap::new();
    for s in inputs["participant_shares"].as_array().unwrap() {
        let id_num = s["identifier"].as_u64().unwrap() as u16;
        let id = identifier::<C>(id_num - 1).unwrap();
        let share = SigningShare::<C>::deserialize(&hx(&s["participant_share"])).unwrap();
        let vs = VerifyingShare::<C>::from(share);
        verifying_shares.insert(id, vs);
        key_packages.insert(id_num - 1, KeyPackage::new(id, share, vs, verifying_key, min_signers));
    }
    let pkp = PublicKeyPackage::new(verifying_shares, verifying_key, Some(min_signers));
    let signers: Vec<u16> = inputs["participant_list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u16 - 1)
        .collect();
    let mut randomness = BTreeMap::new();
    for o in v["round_one_outputs"]["outputs"].as_array().unwrap() {
        let mut r = hx(&o["hiding_nonce_randomness"]);
        r.extend(hx(&o["binding_nonce_randomness"]));
        randomness.insert(o["identifier"].as_u64().unwrap() as u16 - 1, r);
    }
    let msg = hx(&inputs["message"]);
    let expected = hx(&v["final_output"]["sig"]);
    let out = async_env::run(signers.len() as u16, |i, party| {
        let k = signers[usize::from(i)];
        let kp = key_packages[&k].clone();
        let (pkp, signers, msg) = (pkp.clone(), signers.clone(), msg.clone());
        let mut rng = Replay(randomness[&k].clone());
        let n = signers.len() as u16;
        async move {
            sign::run::<C, _, _>(
                checked(party, i, n, sign::expects),
                i,
                &signers,
                &kp,
                &pkp,
                &msg,
                &mut rng,
            )
            .await
        }
    })
    .await
    .into_vec();
    let sig = out[0].clone().unwrap().unwrap();
    assert_eq!(hex::encode(sig.serialize().unwrap()), hex::encode(expected), "{file}");
}

#[tokio::test]
async fn rfc9591_vectors_ed25519() {
    rfc_vectors::<frost_ed25519::Ed25519Sha512>("frost-ed25519.json").await;
}

#[tokio::test]
async fn rfc9591_vectors_p256() {
    rfc_vectors::<frost_p256::P256Sha256>("frost-p256.json").await;
}

/// RFC 9591 has no Taproot suite; these are ZF's vectors for
/// `frost-secp256k1-tr`, in the same format.
#[tokio::test]
async fn zf_vectors_secp256k1_tr() {
    rfc_vectors::<frost_secp256k1_tr::Secp256K1Sha256TR>("frost-secp256k1-tr.json").await;
}

/// The schedule check can fail: signing under a schedule that expects
/// nothing panics at the first message.
#[tokio::test]
#[should_panic(expected = "which expects None")]
async fn a_message_outside_the_schedule_is_caught() {
    type C = frost_ed25519::Ed25519Sha512;
    let keys = run_dkg::<C>(2, 3, 77).await;
    let signers = vec![0u16, 1];
    let _ = async_env::run(2, |i, party| {
        let (kp, pkp) = keys[usize::from(i)].clone();
        let signers = signers.clone();
        async move {
            let party = checked(party, i, 2, |_, _, _, _| None);
            let mut rng = StdRng::seed_from_u64(1);
            sign::run::<C, _, _>(party, i, &signers, &kp, &pkp, b"m", &mut rng).await
        }
    })
    .await;
}

/// Pins the at-rest encodings of FROST keys: `frost-core`'s serialized
/// `KeyPackage` (the sealed share) and `PublicKeyPackage` (the public
/// package of the key record), from a DKG with fixed seeds.
#[tokio::test]
async fn at_rest_encodings_are_pinned() {
    for scheme in [Scheme::FrostEd25519, Scheme::FrostSecp256k1Tr, Scheme::FrostP256] {
        with_ciphersuite!(scheme, C => {
            let keys = run_dkg::<C>(2, 3, 77).await;
            let (kp, pkp) = &keys[0];
            let share = common_snapshot::snapshot(&format!("{scheme}-key-package.bin"), &kp.serialize().unwrap());
            let public = common_snapshot::snapshot(&format!("{scheme}-public-package.bin"), &pkp.serialize().unwrap());
            assert_eq!(&KeyPackage::<C>::deserialize(&share).unwrap(), kp);
            assert_eq!(&PublicKeyPackage::<C>::deserialize(&public).unwrap(), pkp);
        }, _ => unreachable!());
    }
}
