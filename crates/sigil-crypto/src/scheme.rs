//! Schemes and their standard encodings.
//!
//! Stored key material is the `frost-core` serialization (postcard with a
//! version and ciphersuite header) of `KeyPackage` (secret) and
//! `PublicKeyPackage` (public). What clients see is the scheme's ordinary
//! encoding, so that single-key verifiers accept Sigil's signatures.

use std::fmt;
use std::str::FromStr;

use frost_core::Ciphersuite;

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
}

/// Runs `$body` with `$c` bound to the ciphersuite type of `$scheme`.
#[macro_export]
macro_rules! with_ciphersuite {
    ($scheme:expr, $c:ident => $body:expr) => {
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
        }
    };
}

pub use frost_core;
pub use frost_ed25519;
pub use frost_p256;
pub use frost_secp256k1_tr;

impl Scheme {
    /// Every scheme, in a fixed order.
    pub const ALL: [Scheme; 3] = [Scheme::FrostEd25519, Scheme::FrostSecp256k1Tr, Scheme::FrostP256];

    /// The scheme's name in the API (`frost-ed25519`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::FrostEd25519 => "frost-ed25519",
            Scheme::FrostSecp256k1Tr => "frost-secp256k1-tr",
            Scheme::FrostP256 => "frost-p256",
        }
    }

    /// The smallest threshold the scheme supports (FROST needs 2).
    pub fn min_threshold(self) -> u16 {
        2
    }

    /// The group public key in the scheme's standard encoding, from a
    /// serialized `PublicKeyPackage`: Ed25519 32 bytes; BIP-340 32-byte
    /// x-only; P-256 33-byte SEC1 compressed.
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
            Scheme::FrostP256 => {
                let pk = p256::PublicKey::from_sec1_bytes(public_key).map_err(|e| bad(&e))?;
                p256::pkcs8::EncodePublicKey::to_public_key_pem(&pk, line).map_err(|e| bad(&e))
            }
        }
    }

    /// Verifies `signature` on `message` under `public_key` (both in the
    /// standard encodings) with an ordinary single-key verifier, not FROST:
    /// `ed25519-dalek` `verify_strict`, `k256` BIP-340 over the raw message (`verify_raw`), and for P-256 (which
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
        }
    }
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
        Scheme::ALL.into_iter().find(|x| x.as_str() == s).ok_or_else(|| {
            Error::InvalidParameters(format!(
                "unknown scheme {s:?}; expected one of frost-ed25519, frost-secp256k1-tr, frost-p256"
            ))
        })
    }
}
