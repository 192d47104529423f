//! In-process simulations of CGGMP21 keygen, signing, presigning and HD
//! signing on secp256k1 and P-256, verified by `k256` / `p256`.
//!
//! Aux info is expensive (seconds of CPU per party), so it is cached in
//! `tests/fixtures/ecdsa_aux_n{3,5}.json`. Regenerate with
//! `cargo test -p sigil-crypto --test ecdsa_sim -- --ignored regenerate_fixtures`
//! (needs `openssl` for the safe primes; about four minutes).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    missing_docs
)]

use rand::rngs::StdRng;
use rand::SeedableRng;
use round_based::sim::async_env;
use sigil_crypto::ecdsa::{self, cggmp21, AuxInfo, KeyShare, Secp256k1, Secp256r1};
use sigil_crypto::schedule::checked;

#[path = "common/snapshot.rs"]
mod common_snapshot;

fn fixture_path(n: u16) -> String {
    format!("{}/tests/fixtures/ecdsa_aux_n{n}.json", env!("CARGO_MANIFEST_DIR"))
}

fn load_aux(n: u16) -> Vec<AuxInfo> {
    let text = std::fs::read_to_string(fixture_path(n)).expect("aux info fixture (see the module docs to regenerate)");
    serde_json::from_str(&text).unwrap()
}

async fn incomplete_keygen<E: cggmp21::generic_ec::Curve>(
    t: u16,
    n: u16,
    seed: u64,
) -> Vec<ecdsa::IncompleteKeyShare<E>>
where
    ecdsa::KeygenMsg<E>: Unpin,
{
    let sid = [seed as u8; 32];
    async_env::run(n, |i, party| async move {
        let mut rng = StdRng::seed_from_u64(seed + u64::from(i));
        let party = checked(party, i, n, ecdsa::expects::keygen);
        ecdsa::keygen::<E, _, _>(party, &sid, i, n, t, &mut rng).await
    })
    .await
    .into_vec()
    .into_iter()
    .map(Result::unwrap)
    .collect()
}

async fn keygen<E: cggmp21::generic_ec::Curve>(t: u16, n: u16, seed: u64) -> Vec<KeyShare<E>>
where
    ecdsa::KeygenMsg<E>: Unpin,
{
    incomplete_keygen::<E>(t, n, seed)
        .await
        .into_iter()
        .zip(load_aux(n))
        .map(|(s, a)| ecdsa::complete(s, a).unwrap())
        .collect()
}

fn verify_secp256k1(pk_sec1: &[u8], digest: &[u8; 32], sig: &[u8; 64]) {
    use k256::ecdsa::signature::hazmat::PrehashVerifier;
    let vk = k256::ecdsa::VerifyingKey::from_sec1_bytes(pk_sec1).unwrap();
    let s = k256::ecdsa::Signature::from_slice(sig).unwrap();
    assert!(s.normalize_s().is_none(), "signature is low-s");
    vk.verify_prehash(digest, &s).unwrap();
    // Recovery gives the key back for one of the two recovery ids.
    let recovered = (0u8..2).any(|v| {
        k256::ecdsa::RecoveryId::from_byte(v)
            .and_then(|rid| k256::ecdsa::VerifyingKey::recover_from_prehash(digest, &s, rid).ok())
            .is_some_and(|k| k == vk)
    });
    assert!(recovered);
}

fn verify_p256(pk_sec1: &[u8], digest: &[u8; 32], sig: &[u8; 64]) {
    use p256::ecdsa::signature::hazmat::PrehashVerifier;
    let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(pk_sec1).unwrap();
    let s = p256::ecdsa::Signature::from_slice(sig).unwrap();
    assert!(s.normalize_s().is_none(), "signature is low-s");
    vk.verify_prehash(digest, &s).unwrap();
}

fn bytes<E: cggmp21::generic_ec::Curve>(sig: &ecdsa::Signature<E>) -> [u8; 64] {
    let mut out = [0u8; 64];
    sig.write_to_slice(&mut out);
    out
}

async fn sign<E: cggmp21::generic_ec::Curve>(
    shares: &[KeyShare<E>],
    signers: &[u16],
    digest: [u8; 32],
    path: Vec<u32>,
) -> [u8; 64]
where
    ecdsa::SignMsg<E>: Unpin,
    cggmp21::generic_ec::NonZero<cggmp21::generic_ec::Point<E>>: cggmp21::generic_ec::coords::AlwaysHasAffineX<E>,
    cggmp21::generic_ec::Point<E>: cggmp21::generic_ec::coords::HasAffineX<E>,
    cggmp21::hd_wallet::Slip10: cggmp21::hd_wallet::HdWallet<E>,
{
    let sid = [9u8; 32];
    let signers = signers.to_vec();
    let out = async_env::run(signers.len() as u16, |i, party| {
        let share = shares[usize::from(signers[usize::from(i)])].clone();
        let signers = signers.clone();
        let path = path.clone();
        async move {
            let mut rng = StdRng::seed_from_u64(u64::from(i));
            let party = checked(party, i, signers.len() as u16, ecdsa::expects::sign);
            ecdsa::sign::<E, _, _>(party, &sid, i, &signers, &share, &digest, &path, &mut rng).await
        }
    })
    .await
    .into_vec();
    let sigs: Vec<[u8; 64]> = out.iter().map(|s| bytes(s.as_ref().unwrap())).collect();
    assert!(
        sigs.windows(2).all(|w| w[0] == w[1]),
        "every signer outputs the same signature"
    );
    sigs[0]
}

fn public_key<E: cggmp21::generic_ec::Curve>(share: &KeyShare<E>) -> Vec<u8> {
    share.shared_public_key.to_bytes(true).to_vec()
}

#[tokio::test]
async fn secp256k1_keygen_sign_matrix() {
    for (t, n) in [(2u16, 3u16), (3, 5)] {
        let shares = keygen::<Secp256k1>(t, n, u64::from(t * 10 + n)).await;
        let digest: [u8; 32] = sha2_digest(b"secp256k1 threshold ecdsa");
        let signers: Vec<u16> = (n - t..n).collect();
        let sig = sign(&shares, &signers, digest, vec![]).await;
        verify_secp256k1(&public_key(&shares[0]), &digest, &sig);
    }
}

#[tokio::test]
async fn p256_keygen_sign_matrix() {
    for (t, n) in [(2u16, 3u16), (3, 5)] {
        let shares = keygen::<Secp256r1>(t, n, u64::from(t * 10 + n) + 100).await;
        let digest: [u8; 32] = sha2_digest(b"p256 threshold ecdsa");
        let signers: Vec<u16> = (0..t).rev().collect();
        let sig = sign(&shares, &signers, digest, vec![]).await;
        verify_p256(&public_key(&shares[0]), &digest, &sig);
    }
}

#[tokio::test]
async fn presignature_then_one_local_step() {
    let shares = keygen::<Secp256k1>(2, 3, 50).await;
    let signers = vec![2u16, 0];
    let sid = [4u8; 32];
    let presigs = async_env::run(2, |i, party| {
        let share = shares[usize::from(signers[usize::from(i)])].clone();
        let signers = signers.clone();
        async move {
            let mut rng = StdRng::seed_from_u64(7 + u64::from(i));
            let party = checked(party, i, signers.len() as u16, ecdsa::expects::sign);
            ecdsa::presign::<Secp256k1, _, _>(party, &sid, i, &signers, &share, &mut rng).await
        }
    })
    .await
    .into_vec();
    let digest = sha2_digest(b"signed from a presignature");
    let scalar = cggmp21::generic_ec::Scalar::<Secp256k1>::from_be_bytes_mod_order(digest);
    let partials: Vec<_> = presigs
        .into_iter()
        .map(|p| {
            p.unwrap()
                .issue_partial_signature(cggmp21::DataToSign::from_scalar(scalar))
        })
        .collect();
    let sig = cggmp21::PartialSignature::combine(&partials).unwrap().normalize_s();
    verify_secp256k1(&public_key(&shares[0]), &digest, &bytes(&sig));
}

#[tokio::test]
async fn hd_child_key_signature_verifies_under_the_derived_key() {
    let shares = keygen::<Secp256k1>(2, 3, 60).await;
    let path = ecdsa::parse_derivation_path("m/0/1").unwrap();
    let digest = sha2_digest(b"child key");
    let sig = sign(&shares, &[0, 1], digest, path.clone()).await;
    let epub = shares[0].extended_public_key().unwrap();
    let child =
        <cggmp21::hd_wallet::Slip10 as cggmp21::hd_wallet::HdWallet<Secp256k1>>::derive_child_public_key_with_path(
            &epub,
            path.iter()
                .map(|&i| cggmp21::hd_wallet::NonHardenedIndex::try_from(i).unwrap()),
        );
    let child_pk = child.public_key.to_bytes(true).to_vec();
    verify_secp256k1(&child_pk, &digest, &sig);
    assert_ne!(child_pk, public_key(&shares[0]));
}

/// Reshares incomplete `old` shares (old committee = nodes `0..n`) from
/// the dealing nodes `quorum` to the nodes `new` (in new-index order) with
/// threshold `new_t`; returns the new incomplete shares in new-index order.
async fn reshare<E: ecdsa::reshare::ReshareCurve>(
    old: &[ecdsa::IncompleteKeyShare<E>],
    quorum: &[u16],
    new: &[u16],
    new_t: u16,
) -> Vec<ecdsa::IncompleteKeyShare<E>>
where
    sigil_crypto::reshare::Msg<E::Suite>: Unpin,
{
    use ecdsa::reshare as r;
    let mut session: Vec<u16> = quorum.iter().chain(new).copied().collect();
    session.sort_unstable();
    session.dedup();
    let roles = sigil_crypto::reshare::Roles {
        dealer: session.iter().map(|x| quorum.contains(x).then_some(*x)).collect(),
        receiver: session
            .iter()
            .map(|x| new.iter().position(|y| y == x).map(|p| p as u16))
            .collect(),
        new_t,
    };
    let package = r::package_of(&old[0]).unwrap();
    let chain_code = old[0].chain_code;
    let n = session.len() as u16;
    let out = async_env::run(n, |i, party| {
        let node = session[usize::from(i)];
        let share = old
            .get(usize::from(node))
            .filter(|_| roles.dealer[usize::from(i)].is_some())
            .map(|s| r::signing_share(s).unwrap());
        let (roles, package) = (roles.clone(), package.clone());
        async move {
            let mut rng = StdRng::seed_from_u64(70 + u64::from(i));
            let party = checked(party, i, n, sigil_crypto::reshare::expects);
            let out = sigil_crypto::reshare::run::<E::Suite, _, _>(
                party,
                &[3; 32],
                i,
                &roles,
                &package,
                share.as_ref(),
                &mut rng,
            )
            .await
            .unwrap();
            roles.receiver[usize::from(i)].map(|j| (j, out))
        }
    })
    .await
    .into_vec();
    let mut shares: Vec<_> = out
        .into_iter()
        .flatten()
        .map(|(j, o)| r::share_from::<E>(&o, j, chain_code).unwrap())
        .collect();
    shares.sort_by_key(|s| s.i);
    shares
}

fn ecdsa_public(share: &ecdsa::IncompleteKeyShare<Secp256k1>) -> Vec<u8> {
    serde_json::to_vec(&sigil_crypto::scheme::EcdsaPublic {
        public_key: hex::encode(share.shared_public_key.to_bytes(true)),
        chain_code: hex::encode(share.chain_code.unwrap()),
        public_shares: Vec::new(),
        aux_fingerprint: None,
    })
    .unwrap()
}

/// 2-of-3 -> 3-of-5 on secp256k1: the public key, the xpub and the
/// Ethereum address are unchanged, and the new shares (with aux info for
/// the new set) sign at the root and at a derived path; then 3-of-5 ->
/// 2-of-3 on P-256 to a committee sharing one member.
#[tokio::test]
async fn reshared_ecdsa_keys_sign_with_the_same_public_key_and_xpub() {
    let old = incomplete_keygen::<Secp256k1>(2, 3, 80).await;
    let new = reshare::<Secp256k1>(&old, &[0, 2], &[0, 1, 2, 3, 4], 3).await;
    assert_eq!(new.len(), 5);
    assert_eq!(new[0].min_signers(), 3);
    let pk = old[0].shared_public_key.to_bytes(true).to_vec();
    assert_eq!(new[4].shared_public_key.to_bytes(true).to_vec(), pk);
    assert_eq!(
        sigil_crypto::scheme::xpub(&ecdsa_public(&new[1]), &[]).unwrap(),
        sigil_crypto::scheme::xpub(&ecdsa_public(&old[1]), &[]).unwrap()
    );
    let address = sigil_crypto::scheme::ethereum_address(&pk).unwrap();
    assert_eq!(
        sigil_crypto::scheme::ethereum_address(&new[3].shared_public_key.to_bytes(true)).unwrap(),
        address
    );
    let complete: Vec<KeyShare<Secp256k1>> = new
        .into_iter()
        .zip(load_aux(5))
        .map(|(s, a)| ecdsa::complete(s, a).unwrap())
        .collect();
    let digest = sha2_digest(b"after a reshare");
    let sig = sign(&complete, &[4, 1, 3], digest, vec![]).await;
    verify_secp256k1(&pk, &digest, &sig);
    let path = ecdsa::parse_derivation_path("m/7/9").unwrap();
    let sig = sign(&complete, &[0, 2, 3], digest, path.clone()).await;
    let child = sigil_crypto::ecdsa::derive_public_key::<Secp256k1>(&pk, old[0].chain_code.unwrap(), &path).unwrap();
    verify_secp256k1(&child, &digest, &sig);

    let old = incomplete_keygen::<Secp256r1>(3, 5, 81).await;
    let new = reshare::<Secp256r1>(&old, &[1, 3, 4], &[4, 6, 5], 2).await;
    let pk = old[0].shared_public_key.to_bytes(true).to_vec();
    let complete: Vec<KeyShare<Secp256r1>> = new
        .into_iter()
        .zip(load_aux(3))
        .map(|(s, a)| ecdsa::complete(s, a).unwrap())
        .collect();
    let sig = sign(&complete, &[2, 0], digest, vec![]).await;
    verify_p256(&pk, &digest, &sig);
}

/// A reshared share whose data does not fit together is refused by
/// `key_share`'s validation.
#[tokio::test]
async fn a_reshared_share_must_validate() {
    let old = incomplete_keygen::<Secp256k1>(2, 3, 82).await;
    let new = reshare::<Secp256k1>(&old, &[0, 1], &[0, 1, 2], 2).await;
    let mut dirty = new[0].clone().into_inner();
    dirty.key_info.public_shares.swap(0, 1);
    assert!(cggmp21::key_share::Validate::validate(dirty).is_err());
}

fn sha2_digest(m: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(m).into()
}

/// Regenerates the aux info fixtures from fresh safe primes (OpenSSL).
#[tokio::test]
#[ignore = "regenerates fixtures; about four minutes"]
async fn regenerate_fixtures() {
    for n in [3u16, 5] {
        let primes: Vec<ecdsa::PregeneratedPrimes> = (0..n)
            .map(|_| {
                let p = openssl_safe_prime(1536);
                let q = openssl_safe_prime(1536);
                ecdsa::PregeneratedPrimes::new(p, q).unwrap()
            })
            .collect();
        let sid = [n as u8; 32];
        let aux = async_env::run(n, |i, party| {
            let primes = primes[usize::from(i)].clone();
            async move {
                let mut rng = StdRng::from_entropy();
                let party = checked(party, i, n, ecdsa::expects::aux_info);
                ecdsa::aux_info(party, &sid, i, n, primes, &mut rng).await
            }
        })
        .await
        .into_vec()
        .into_iter()
        .map(Result::unwrap)
        .collect::<Vec<_>>();
        std::fs::create_dir_all(format!("{}/tests/fixtures", env!("CARGO_MANIFEST_DIR"))).unwrap();
        std::fs::write(fixture_path(n), serde_json::to_string(&aux).unwrap()).unwrap();
    }
}

fn openssl_safe_prime(bits: u32) -> cggmp21::rug::Integer {
    let out = std::process::Command::new("openssl")
        .args(["prime", "-generate", "-safe", "-bits", &bits.to_string()])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().parse().unwrap()
}

/// All parties of one aux session share the fingerprint; another set's
/// aux info (other moduli) does not.
#[test]
fn aux_fingerprint_is_shared_by_the_parties() {
    let three = load_aux(3);
    let fp = ecdsa::aux_fingerprint(&three[0]);
    assert!(three.iter().all(|a| ecdsa::aux_fingerprint(a) == fp));
    assert_ne!(ecdsa::aux_fingerprint(&load_aux(5)[0]), fp);
}

/// Pins the at-rest encodings of ECDSA keys: the incomplete key share (the
/// sealed share, `cggmp21`'s JSON) for both curves and a pooled
/// presignature (JSON), from runs with fixed seeds; what is stored decodes
/// and completes with the aux info.
#[tokio::test]
async fn at_rest_encodings_are_pinned() {
    async fn share<E: cggmp21::generic_ec::Curve>(name: &str)
    where
        ecdsa::KeygenMsg<E>: Unpin,
    {
        let shares = incomplete_keygen::<E>(2, 3, 90).await;
        let stored = common_snapshot::snapshot(name, &serde_json::to_vec(&shares[0]).unwrap());
        let parsed: ecdsa::IncompleteKeyShare<E> = serde_json::from_slice(&stored).unwrap();
        ecdsa::complete(parsed, load_aux(3).remove(0)).unwrap();
    }
    share::<Secp256k1>("ecdsa-secp256k1-share.json").await;
    share::<Secp256r1>("ecdsa-p256-share.json").await;

    let shares = keygen::<Secp256k1>(2, 3, 90).await;
    let signers = vec![0u16, 1];
    let sid = [5u8; 32];
    let presigs = async_env::run(2, |i, party| {
        let share = shares[usize::from(signers[usize::from(i)])].clone();
        let signers = signers.clone();
        async move {
            let mut rng = StdRng::seed_from_u64(31 + u64::from(i));
            let party = checked(party, i, 2, ecdsa::expects::sign);
            ecdsa::presign::<Secp256k1, _, _>(party, &sid, i, &signers, &share, &mut rng).await
        }
    })
    .await
    .into_vec();
    let presig = presigs.into_iter().next().unwrap().unwrap();
    let stored = common_snapshot::snapshot(
        "ecdsa-secp256k1-presignature.json",
        &serde_json::to_vec(&presig).unwrap(),
    );
    let _: ecdsa::Presignature<Secp256k1> = serde_json::from_slice(&stored).unwrap();
}

#[test]
fn aux_info_with_a_shared_factor_is_found() {
    let aux = load_aux(3);
    assert_eq!(ecdsa::shared_factor(&aux[0]), None);
    let ns: Vec<&cggmp21::rug::Integer> = aux[0].parties.iter().map(|p| &p.N).collect();
    assert_eq!(ecdsa::shared_factor_of(&[ns[0], ns[1], ns[0]]), Some((0, 2)));
    // One prime in common is enough.
    let p = cggmp21::rug::Integer::from(1_000_003u32);
    let (a, b) = (p.clone() * 1_000_033u32, p * 1_000_037u32);
    assert_eq!(ecdsa::shared_factor_of(&[ns[0], &a, &b]), Some((1, 2)));
}

/// Key generation with the key's own aux info (how a key with an external
/// party is made): both protocols in one session under the combined
/// schedule, every party with the same public package (aux fingerprint
/// included), shares that sign, at a BIP-32 child too, verified by `k256`;
/// and every message fits a relay payload.
#[tokio::test]
async fn keygen_with_aux_makes_a_key_that_signs() {
    use futures::SinkExt;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    // The fixture's primes (aux info made with them before; a fresh run
    // with the same primes gives fresh ring-Pedersen parameters).
    let primes: Vec<ecdsa::PregeneratedPrimes> = load_aux(3)
        .into_iter()
        .take(2)
        .map(|a| ecdsa::primes_from(a.p.clone(), a.q.clone()).unwrap())
        .collect();
    let largest = Arc::new(AtomicUsize::new(0));
    let sid = [21u8; 32];
    let out = async_env::run_with_setup(primes, |i, party, primes| {
        let largest = largest.clone();
        async move {
            let mut rng = StdRng::seed_from_u64(70 + u64::from(i));
            let round_based::MpcParty { delivery, .. } = party;
            let (incoming, outgoing) = round_based::Delivery::split(delivery);
            let outgoing = outgoing.with(move |out: round_based::Outgoing<ecdsa::KeygenAuxMsg<Secp256k1>>| {
                let size = postcard::to_allocvec(&out.msg).unwrap().len();
                largest.fetch_max(size, Ordering::Relaxed);
                futures::future::ready(Ok::<_, tokio::sync::broadcast::error::SendError<()>>(out))
            });
            let party = round_based::MpcParty::connected((incoming, outgoing));
            let party = checked(party, i, 2, ecdsa::expects::keygen_with_aux);
            ecdsa::keygen_with_aux::<Secp256k1, _, _>(party, &sid, i, 2, 2, primes, &mut rng).await
        }
    })
    .await
    .expect_ok()
    .into_vec();
    let largest = largest.load(Ordering::Relaxed);
    eprintln!("largest keygen-with-aux message: {largest} bytes");
    assert!(largest <= sigil_crypto::relay::MAX_PAYLOAD_BYTES, "{largest} bytes");
    let packages: Vec<Vec<u8>> = out
        .iter()
        .map(|(s, a)| serde_json::to_vec(&ecdsa::public_package(s, Some(a))).unwrap())
        .collect();
    assert_eq!(packages[0], packages[1], "one package for every party");
    let public: sigil_crypto::scheme::EcdsaPublic = serde_json::from_slice(&packages[0]).unwrap();
    assert!(public.aux_fingerprint.is_some());
    let shares: Vec<KeyShare<Secp256k1>> = out.into_iter().map(|(s, a)| ecdsa::complete(s, a).unwrap()).collect();
    let digest = sha2_digest(b"keygen with aux");
    let sig = sign(&shares, &[0, 1], digest, vec![]).await;
    verify_secp256k1(&public_key(&shares[0]), &digest, &sig);
    let child = sigil_crypto::Scheme::EcdsaSecp256k1
        .derive_public_key(&packages[0], &[7, 1])
        .unwrap();
    let sig = sign(&shares, &[1, 0], digest, vec![7, 1]).await;
    verify_secp256k1(&child, &digest, &sig);
}
