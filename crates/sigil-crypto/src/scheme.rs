//! Schemes and their standard encodings.
//!
//! Stored key material is the `frost-core` serialization (postcard with a
//! version and ciphersuite header) of `KeyPackage` (secret) and
//! `PublicKeyPackage` (public). What clients see is the scheme's ordinary
//! encoding, so that single-key verifiers accept Sigil's signatures.

use std::fmt;
use std::str::FromStr;

use frost_core::Ciphersuite;
use sha2::Sha256;

use crate::ecdsa::cggmp21;

use crate::Error;

/// A signature scheme Sigil can hold keys for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Scheme {
    /// FROST(Ed25519, SHA-512), RFC 9591 §6.1. Signatures are RFC 8032 Ed25519.
    #[serde(rename = "frost-ed25519")]
    FrostEd25519,
    /// FROST(secp256k1, SHA-256) with BIP-340 / Taproot conventions.
    #[serde(rename = "frost-secp256k1-tr")]
    FrostSecp256k1Tr,
    /// FROST(P-256, SHA-256), RFC 9591 §6.4.
    #[serde(rename = "frost-p256")]
    FrostP256,
    /// Threshold ECDSA (CGGMP21) on secp256k1; signs 32-byte digests.
    #[serde(rename = "ecdsa-secp256k1")]
    EcdsaSecp256k1,
    /// Threshold ECDSA (CGGMP21) on P-256; signs 32-byte digests.
    #[serde(rename = "ecdsa-p256")]
    EcdsaP256,
    /// Threshold Paillier (`sigil-paillier`): dealerless key generation,
    /// threshold decryption; it does not sign.
    #[serde(rename = "paillier")]
    Paillier,
}

/// The public material of a Paillier key, as stored and compared after
/// key generation (decimal strings).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PaillierPublic {
    /// The modulus `N`, decimal.
    pub n: String,
    /// `theta = s mod N` (public decryption constant), decimal.
    pub theta: String,
    /// Number of parties.
    pub parties: usize,
    /// Corruption threshold `t` (decryption needs `t + 1`).
    pub corruption_threshold: usize,
    /// Verification keys `v_j = v^{s_j} mod N^2`, decimal, one per party
    /// in key order (`sigil_paillier::verify`; the base `v` is derived
    /// from `N`). Empty for keys made before verifiable decryption.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verification_keys: Vec<String>,
    /// Bound, in bits, of every share `|s_j|` (sizes the proofs); 0 with
    /// no verification keys.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub share_bits: u32,
}

fn is_zero(x: &u32) -> bool {
    *x == 0
}

/// The public material of an ECDSA key, as stored and compared after
/// keygen: the SEC1 compressed group key and the BIP-32 chain code.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EcdsaPublic {
    /// SEC1 compressed public key, 33 bytes, hex.
    pub public_key: String,
    /// BIP-32 chain code, 32 bytes, hex.
    pub chain_code: String,
    /// Every party's verifying share `x_k G`, SEC1 compressed, hex, in key
    /// order: what a reshare pins each dealer to. Empty for keys made
    /// before resharing existed (their reshare takes the shares from an
    /// old party's own key share).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub public_shares: Vec<String>,
    /// For a key made with its own aux info (a key with an external
    /// party, [`crate::ecdsa::keygen_with_aux`]): the SHA-256 fingerprint
    /// of every party's Paillier and ring-Pedersen parameters
    /// ([`crate::ecdsa::aux_fingerprint`]), hex; so the attested record
    /// pins the aux info every party signs with. Absent otherwise (the
    /// party set's aux info is committed on its own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aux_fingerprint: Option<String>,
}

/// Runs `$body` with `$c` bound to the FROST ciphersuite type of
/// `$scheme`, or `$fallback` for the schemes that are not FROST.
#[macro_export]
macro_rules! with_ciphersuite {
    ($scheme:expr, $c:ident => $body:expr, $other:pat => $fallback:expr) => {
        match $scheme {
            $crate::Scheme::FrostEd25519 => {
                type $c = $crate::scheme::frost_ed25519::Ed25519Sha512;
                $body
            }
            $crate::Scheme::FrostSecp256k1Tr => {
                type $c = $crate::scheme::frost_secp256k1_tr::Secp256K1Sha256TR;
                $body
            }
            $crate::Scheme::FrostP256 => {
                type $c = $crate::scheme::frost_p256::P256Sha256;
                $body
            }
            $other => $fallback,
        }
    };
}

/// Runs `$body` with `$e` bound to the `cggmp21` curve of an ECDSA
/// `$scheme`, or `$fallback` for the others.
#[macro_export]
macro_rules! with_curve {
    ($scheme:expr, $e:ident => $body:expr, $other:pat => $fallback:expr) => {
        match $scheme {
            $crate::Scheme::EcdsaSecp256k1 => {
                type $e = $crate::ecdsa::Secp256k1;
                $body
            }
            $crate::Scheme::EcdsaP256 => {
                type $e = $crate::ecdsa::Secp256r1;
                $body
            }
            $other => $fallback,
        }
    };
}

pub use frost_core;
pub use frost_ed25519;
pub use frost_p256;
pub use frost_secp256k1_tr;

impl Scheme {
    /// Every signing scheme, in a fixed order.
    pub const ALL: [Scheme; 5] = [
        Scheme::FrostEd25519,
        Scheme::FrostSecp256k1Tr,
        Scheme::FrostP256,
        Scheme::EcdsaSecp256k1,
        Scheme::EcdsaP256,
    ];

    /// Whether the scheme is threshold Paillier (encryption, not signing).
    pub fn is_paillier(self) -> bool {
        self == Scheme::Paillier
    }

    /// Whether the scheme is threshold ECDSA (CGGMP21).
    pub fn is_ecdsa(self) -> bool {
        matches!(self, Scheme::EcdsaSecp256k1 | Scheme::EcdsaP256)
    }

    /// The scheme's name in the API (`frost-ed25519`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::FrostEd25519 => "frost-ed25519",
            Scheme::FrostSecp256k1Tr => "frost-secp256k1-tr",
            Scheme::FrostP256 => "frost-p256",
            Scheme::EcdsaSecp256k1 => "ecdsa-secp256k1",
            Scheme::EcdsaP256 => "ecdsa-p256",
            Scheme::Paillier => "paillier",
        }
    }

    /// The smallest threshold the scheme supports (FROST needs 2).
    pub fn min_threshold(self) -> u16 {
        2
    }

    /// The group public key in the scheme's standard encoding, from a
    /// serialized `PublicKeyPackage` (FROST) or [`EcdsaPublic`] JSON
    /// (ECDSA): Ed25519 32 bytes; BIP-340 32-byte x-only; P-256 and ECDSA
    /// 33-byte SEC1 compressed.
    ///
    /// # Errors
    /// [`Error::Frost`] if the package does not parse.
    pub fn public_key(self, public_key_package: &[u8]) -> Result<Vec<u8>, Error> {
        with_ciphersuite!(self, C => {
            let pkg = frost_core::keys::PublicKeyPackage::<C>::deserialize(public_key_package)
                .map_err(|e| Error::Frost(e.to_string()))?;
            let bytes = pkg.verifying_key().serialize().map_err(|e| Error::Frost(e.to_string()))?;
            Ok(match self {
                // x-only: drop the SEC1 parity byte (the key has even y).
                Scheme::FrostSecp256k1Tr => bytes.get(1..).unwrap_or_default().to_vec(),
                _ => bytes,
            })
        }, other => {
            if other.is_paillier() {
                let p: PaillierPublic =
                    serde_json::from_slice(public_key_package).map_err(|e| Error::Frost(e.to_string()))?;
                return Ok(p.n.into_bytes());
            }
            let p: EcdsaPublic = serde_json::from_slice(public_key_package).map_err(|e| Error::Frost(e.to_string()))?;
            hex::decode(&p.public_key).map_err(|e| Error::Frost(e.to_string()))
        })
    }

    /// The public key as PEM SubjectPublicKeyInfo: Ed25519 (RFC 8410),
    /// secp256k1 (BIP-340 key lifted to its even-y point) and P-256
    /// (RFC 5480). `public_key` is the encoding of [`Scheme::public_key`].
    ///
    /// # Errors
    /// [`Error::InvalidParameters`] if `public_key` is not a valid key.
    pub fn public_key_pem(self, public_key: &[u8]) -> Result<String, Error> {
        use ed25519_dalek::pkcs8::EncodePublicKey as _;
        let bad = |e: &dyn fmt::Display| Error::InvalidParameters(format!("invalid public key: {e}"));
        let line = ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF;
        match self {
            Scheme::FrostEd25519 => {
                let bytes: [u8; 32] = public_key.try_into().map_err(|_| bad(&"length"))?;
                let vk = ed25519_dalek::VerifyingKey::from_bytes(&bytes).map_err(|e| bad(&e))?;
                vk.to_public_key_pem(line).map_err(|e| bad(&e))
            }
            Scheme::FrostSecp256k1Tr => {
                let mut sec1 = vec![0x02];
                sec1.extend_from_slice(public_key);
                let pk = k256::PublicKey::from_sec1_bytes(&sec1).map_err(|e| bad(&e))?;
                k256::pkcs8::EncodePublicKey::to_public_key_pem(&pk, line).map_err(|e| bad(&e))
            }
            Scheme::FrostP256 | Scheme::EcdsaP256 => {
                let pk = p256::PublicKey::from_sec1_bytes(public_key).map_err(|e| bad(&e))?;
                p256::pkcs8::EncodePublicKey::to_public_key_pem(&pk, line).map_err(|e| bad(&e))
            }
            Scheme::EcdsaSecp256k1 => {
                let pk = k256::PublicKey::from_sec1_bytes(public_key).map_err(|e| bad(&e))?;
                k256::pkcs8::EncodePublicKey::to_public_key_pem(&pk, line).map_err(|e| bad(&e))
            }
            Scheme::Paillier => Err(bad(&"Paillier keys have no PEM form")),
        }
    }

    /// ECDSA: the child public key (SEC1 compressed) at `path` below the
    /// key whose public package ([`EcdsaPublic`] JSON) is given.
    ///
    /// # Errors
    /// [`Error::InvalidParameters`] for FROST schemes, a malformed package
    /// or a hardened step.
    pub fn derive_public_key(self, public_package: &[u8], path: &[u32]) -> Result<Vec<u8>, Error> {
        let p: EcdsaPublic = serde_json::from_slice(public_package).map_err(|e| Error::Frost(e.to_string()))?;
        let pk = hex::decode(&p.public_key).map_err(|e| Error::Frost(e.to_string()))?;
        let mut cc = [0u8; 32];
        hex::decode_to_slice(&p.chain_code, &mut cc).map_err(|e| Error::Frost(e.to_string()))?;
        crate::with_curve!(self, E => crate::ecdsa::derive_public_key::<E>(&pk, cc, path),
            other => Err(Error::InvalidParameters(format!("{other} keys have no derivation"))))
    }

    /// Verifies `signature` on `message` under `public_key` (both in the
    /// standard encodings) with an ordinary single-key verifier, not FROST:
    /// `ed25519-dalek` `verify_strict`, `k256` BIP-340 over the raw message (`verify_raw`), `k256`/`p256` ECDSA
    /// `verify_prehash` over a 32-byte digest (secp256k1 also requires low `s`), and for FROST(P-256) (which
    /// has no single-key standard for this Schnorr variant) `frost-p256`'s
    /// RFC 9591 verifier.
    ///
    /// # Errors
    /// [`Error::InvalidParameters`] for a malformed key or signature, or a
    /// signature that does not verify.
    pub fn verify(self, public_key: &[u8], message: &[u8], signature: &[u8]) -> Result<(), Error> {
        let bad = |e: &dyn fmt::Display| Error::InvalidParameters(e.to_string());
        match self {
            Scheme::FrostEd25519 => {
                let pk: [u8; 32] = public_key.try_into().map_err(|_| bad(&"public key must be 32 bytes"))?;
                let sig: [u8; 64] = signature.try_into().map_err(|_| bad(&"signature must be 64 bytes"))?;
                let vk = ed25519_dalek::VerifyingKey::from_bytes(&pk).map_err(|e| bad(&e))?;
                vk.verify_strict(message, &ed25519_dalek::Signature::from_bytes(&sig))
                    .map_err(|e| bad(&e))
            }
            Scheme::FrostSecp256k1Tr => {
                let vk = k256::schnorr::VerifyingKey::from_bytes(public_key).map_err(|e| bad(&e))?;
                let sig = k256::schnorr::Signature::try_from(signature).map_err(|e| bad(&e))?;
                vk.verify_raw(message, &sig).map_err(|e| bad(&e))
            }
            Scheme::FrostP256 => {
                let vk = frost_p256::VerifyingKey::deserialize(public_key).map_err(|e| bad(&e))?;
                let sig = frost_p256::Signature::deserialize(signature).map_err(|e| bad(&e))?;
                vk.verify(message, &sig).map_err(|e| bad(&e))
            }
            Scheme::EcdsaSecp256k1 => {
                use k256::ecdsa::signature::hazmat::PrehashVerifier as _;
                let vk = k256::ecdsa::VerifyingKey::from_sec1_bytes(public_key).map_err(|e| bad(&e))?;
                let sig = k256::ecdsa::Signature::from_slice(signature).map_err(|e| bad(&e))?;
                if sig.normalize_s().is_some() {
                    return Err(bad(&"signature is not low-s"));
                }
                let digest = ecdsa_digest(message)?;
                vk.verify_prehash(&digest, &sig).map_err(|e| bad(&e))
            }
            Scheme::EcdsaP256 => {
                use p256::ecdsa::signature::hazmat::PrehashVerifier as _;
                let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(public_key).map_err(|e| bad(&e))?;
                let sig = p256::ecdsa::Signature::from_slice(signature).map_err(|e| bad(&e))?;
                let digest = ecdsa_digest(message)?;
                vk.verify_prehash(&digest, &sig).map_err(|e| bad(&e))
            }
            Scheme::Paillier => Err(bad(&"Paillier keys do not sign")),
        }
    }
}

/// Checks that an ECDSA message is a 32-byte digest.
///
/// # Errors
/// [`Error::InvalidParameters`] for any other length.
pub fn ecdsa_digest(message: &[u8]) -> Result<[u8; 32], Error> {
    message.try_into().map_err(|_| {
        Error::InvalidParameters(format!(
            "ECDSA signs a 32-byte digest; the message has {} bytes",
            message.len()
        ))
    })
}

/// For an ECDSA `r || s` signature on `digest` under `public_key` (SEC1):
/// the recovery id (0 or 1; the `y` parity of `R`, as `ecrecover` wants it)
/// and the DER encoding.
///
/// # Errors
/// [`Error::InvalidParameters`] for a non-ECDSA scheme, a malformed input,
/// or a signature from which the key does not recover.
pub fn ecdsa_recovery_and_der(
    scheme: Scheme,
    public_key: &[u8],
    digest: &[u8; 32],
    signature: &[u8],
) -> Result<(u8, Vec<u8>), Error> {
    let bad = |e: &dyn fmt::Display| Error::InvalidParameters(e.to_string());
    macro_rules! recover {
        ($curve:ident) => {{
            let vk = $curve::ecdsa::VerifyingKey::from_sec1_bytes(public_key).map_err(|e| bad(&e))?;
            let sig = $curve::ecdsa::Signature::from_slice(signature).map_err(|e| bad(&e))?;
            let der = sig.to_der().as_bytes().to_vec();
            for v in 0u8..2 {
                let Some(rid) = k256::ecdsa::RecoveryId::from_byte(v) else {
                    continue;
                };
                if $curve::ecdsa::VerifyingKey::recover_from_prehash(digest, &sig, rid).is_ok_and(|k| k == vk) {
                    return Ok((v, der));
                }
            }
            Err(bad(&"the public key does not recover from the signature"))
        }};
    }
    match scheme {
        Scheme::EcdsaSecp256k1 => recover!(k256),
        Scheme::EcdsaP256 => recover!(p256),
        other => Err(bad(&format!("{other} is not ECDSA"))),
    }
}

/// The Ethereum address of a secp256k1 public key (SEC1, either form):
/// the last 20 bytes of Keccak-256 of the uncompressed point without its
/// prefix, written with the EIP-55 mixed-case checksum.
///
/// # Errors
/// [`Error::InvalidParameters`] if the key does not parse.
pub fn ethereum_address(public_key: &[u8]) -> Result<String, Error> {
    use sha3::Digest as _;
    let pk = k256::PublicKey::from_sec1_bytes(public_key).map_err(|e| Error::InvalidParameters(e.to_string()))?;
    let point = k256::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(&pk, false);
    let hash = sha3::Keccak256::digest(point.as_bytes().get(1..).unwrap_or_default());
    let addr = hex::encode(hash.get(12..).unwrap_or_default());
    let check = hex::encode(sha3::Keccak256::digest(addr.as_bytes()));
    let mixed: String = addr
        .chars()
        .zip(check.chars())
        .map(|(c, h)| {
            if c.is_ascii_alphabetic() && h >= '8' {
                c.to_ascii_uppercase()
            } else {
                c
            }
        })
        .collect();
    Ok(format!("0x{mixed}"))
}

/// The BIP-32 extended public key (`xpub`, mainnet version `0488B21E`,
/// Base58Check) of an `ecdsa-secp256k1` key from its public package
/// ([`EcdsaPublic`] JSON), at the non-hardened `path` below it. The key
/// itself is encoded as a master key (depth 0, no parent); a derived key
/// has depth = path length, its parent's fingerprint (HASH160 of the
/// parent key, first 4 bytes) and its last index. A watch-only wallet
/// that imports the depth-0 xpub derives the same children as the cluster.
///
/// # Errors
/// [`Error::InvalidParameters`] for a malformed package or a hardened step.
pub fn xpub(public_package: &[u8], path: &[u32]) -> Result<String, Error> {
    use cggmp21::hd_wallet::HdWallet as _;
    use ripemd::Digest as _;
    type E = crate::ecdsa::Secp256k1;
    let bad = |e: &dyn fmt::Display| Error::InvalidParameters(e.to_string());
    let p: EcdsaPublic = serde_json::from_slice(public_package).map_err(|e| bad(&e))?;
    let pk = hex::decode(&p.public_key).map_err(|e| bad(&e))?;
    let mut chain_code = [0u8; 32];
    hex::decode_to_slice(&p.chain_code, &mut chain_code).map_err(|e| bad(&e))?;
    let point = cggmp21::generic_ec::Point::<E>::from_bytes(&pk).map_err(|e| bad(&e))?;
    let mut cur = cggmp21::hd_wallet::ExtendedPublicKey {
        public_key: point,
        chain_code,
    };
    let mut parent_fingerprint = [0u8; 4];
    for &i in path {
        let idx =
            cggmp21::hd_wallet::NonHardenedIndex::try_from(i).map_err(|_| bad(&format!("step {i} is hardened")))?;
        let sha = Sha256::digest(cur.public_key.to_bytes(true));
        let h160 = ripemd::Ripemd160::digest(sha);
        parent_fingerprint.copy_from_slice(h160.get(..4).unwrap_or(&[0; 4]));
        cur = cggmp21::hd_wallet::Slip10::derive_child_public_key(&cur, idx);
    }
    let depth = u8::try_from(path.len()).map_err(|_| bad(&"path longer than 255 steps"))?;
    let mut out = Vec::with_capacity(78);
    out.extend_from_slice(&[0x04, 0x88, 0xB2, 0x1E]);
    out.push(depth);
    out.extend_from_slice(&parent_fingerprint);
    out.extend_from_slice(&path.last().copied().unwrap_or(0).to_be_bytes());
    out.extend_from_slice(&cur.chain_code);
    out.extend_from_slice(&cur.public_key.to_bytes(true));
    Ok(bs58::encode(out).with_check().into_string())
}

/// Serializes a FROST signature in the scheme's standard encoding.
///
/// # Errors
/// [`Error::Frost`] if serialization fails.
pub fn signature_bytes<C: Ciphersuite>(signature: &frost_core::Signature<C>) -> Result<Vec<u8>, Error> {
    signature.serialize().map_err(|e| Error::Frost(e.to_string()))
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scheme {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Scheme::ALL
            .into_iter()
            .chain([Scheme::Paillier])
            .find(|x| x.as_str() == s)
            .ok_or_else(|| {
                Error::InvalidParameters(format!(
                    "unknown scheme {s:?}; expected one of frost-ed25519, frost-secp256k1-tr, frost-p256, ecdsa-secp256k1, ecdsa-p256, paillier"
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ethereum_address_of_the_generator_is_the_known_one() {
        // Private key 1: its public key is G; its address is well known.
        let g = hex::decode("0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798").unwrap_or_default();
        assert_eq!(
            ethereum_address(&g).ok().as_deref(),
            Some("0x7E5F4552091A69125d5DfCb7b8C2659029395Bdf")
        );
        assert!(ethereum_address(b"nope").is_err());
    }

    fn package(pk: &str, cc: &str) -> Vec<u8> {
        serde_json::to_vec(&EcdsaPublic {
            public_key: pk.into(),
            chain_code: cc.into(),
            public_shares: Vec::new(),
            aux_fingerprint: None,
        })
        .unwrap_or_default()
    }

    /// BIP-32 test vector 1: the master key, and the non-hardened child 1
    /// of m/0H (our encoding puts m/0H at depth 0, so the depth byte of the
    /// child differs from the vector's and is not compared).
    #[test]
    fn xpub_matches_bip32_test_vector_1() {
        let master = package(
            "0339a36013301597daef41fbe593a02cc513d0b55527ec2df1050e2e8ff49c85c2",
            "873dff81c02f525623fd1fe5167eac3a55a049de3d314bb42ee227ffed37d508",
        );
        assert_eq!(
            xpub(&master, &[]).ok().as_deref(),
            Some("xpub661MyMwAqRbcFtXgS5sYJABqqG9YLmC4Q1Rdap9gSE8NqtwybGhePY2gZ29ESFjqJoCu1Rupje8YtGqsefD265TMg7usUDFdp6W1EGMcet8")
        );
        let m0h = package(
            "035a784662a4a20a65bf6aab9ae98a6c068a81c52e4b032c0fb5400c706cfccc56",
            "47fdacbd0f1097043b78c63c20c34ef4ed9a111d980047ad16282c7ae6236141",
        );
        let ours = bs58::decode(xpub(&m0h, &[1]).unwrap_or_default())
            .with_check(None)
            .into_vec()
            .unwrap_or_default();
        let want = bs58::decode("xpub6ASuArnXKPbfEwhqN6e3mwBcDTgzisQN1wXN9BJcM47sSikHjJf3UFHKkNAWbWMiGj7Wf5uMash7SyYq527Hqck2AxYysAA7xmALppuCkwQ")
            .with_check(None)
            .into_vec()
            .unwrap_or_default();
        assert_eq!(ours.len(), 78);
        assert_eq!(
            ours.get(5..),
            want.get(5..),
            "fingerprint, index, chain code and key match"
        );
        assert!(xpub(&master, &[1 << 31]).is_err(), "hardened");
    }

    #[test]
    fn ecdsa_digest_must_be_32_bytes() {
        assert!(ecdsa_digest(&[0; 32]).is_ok());
        assert!(ecdsa_digest(&[0; 31]).is_err());
        assert!(ecdsa_digest(&[0; 33]).is_err());
    }
}
