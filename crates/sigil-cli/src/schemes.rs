//! What the CLI needs to know about a scheme, in one place: the rest of
//! the CLI asks these functions and never tests the scheme itself, so a
//! new scheme in [`sigil_crypto::Scheme`] is one more arm of [`profile`].

use sigil_crypto::Scheme;

/// What a key of a scheme is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Use {
    /// It signs (`POST /v1/keys/{id}/sign`).
    Sign,
    /// Anyone encrypts to it; the cluster decrypts
    /// (`POST /v1/keys/{id}/decrypt`).
    Decrypt,
}

/// The protocol family of a scheme.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// FROST Schnorr signatures.
    Frost,
    /// Threshold ECDSA (CGGMP21): signs 32-byte digests, from
    /// presignatures when the node has them pooled.
    Ecdsa,
    /// Threshold Paillier: dealerless key generation of a modulus `N`
    /// (long), threshold decryption.
    Paillier,
}

/// What the CLI knows about one scheme.
struct Profile {
    family: Family,
    /// Its keys have an Ethereum address (secp256k1 ECDSA).
    ethereum: bool,
}

/// The one `match` on the scheme in the CLI.
const fn profile(scheme: Scheme) -> Profile {
    let (family, ethereum) = match scheme {
        Scheme::FrostEd25519 | Scheme::FrostSecp256k1Tr | Scheme::FrostP256 => (Family::Frost, false),
        Scheme::EcdsaSecp256k1 => (Family::Ecdsa, true),
        Scheme::EcdsaP256 => (Family::Ecdsa, false),
        Scheme::Paillier => (Family::Paillier, false),
    };
    Profile { family, ethereum }
}

/// The schemes whose keys sign, in [`Scheme::ALL`]'s order.
pub const SIGNING_SCHEMES: [Scheme; Scheme::ALL.len()] = Scheme::ALL;

/// The schemes whose keys decrypt.
pub const DECRYPTING_SCHEMES: [Scheme; 1] = [Scheme::Paillier];

/// Every scheme: the signing ones, then the decrypting ones.
pub fn all() -> impl Iterator<Item = Scheme> {
    SIGNING_SCHEMES.into_iter().chain(DECRYPTING_SCHEMES)
}

/// The scheme's protocol family.
pub const fn family(scheme: Scheme) -> Family {
    profile(scheme).family
}

/// Whether keys of the scheme sign or decrypt.
pub const fn operation(scheme: Scheme) -> Use {
    match family(scheme) {
        Family::Frost | Family::Ecdsa => Use::Sign,
        Family::Paillier => Use::Decrypt,
    }
}

/// Whether keys of the scheme have an Ethereum address (`sigil eth`).
pub const fn has_ethereum_address(scheme: Scheme) -> bool {
    profile(scheme).ethereum
}

/// Whether the nodes sign with the scheme from pooled presignatures (so
/// that a warm-up load would use up the pool).
pub const fn uses_presignatures(scheme: Scheme) -> bool {
    matches!(family(scheme), Family::Ecdsa)
}

/// Whether a key generation of the scheme takes long enough (minutes) to
/// follow it as an operation with progress.
pub const fn long_keygen(scheme: Scheme) -> bool {
    matches!(family(scheme), Family::Paillier)
}

/// Whether a key generation of the scheme takes `bits` (the size of the
/// modulus `N`) and `prime_threshold`.
pub const fn keygen_takes_bits(scheme: Scheme) -> bool {
    matches!(family(scheme), Family::Paillier)
}

/// The scheme a key view (`GET /v1/keys/{id}`) names, if it names one.
pub fn of_view(view: &serde_json::Value) -> Option<Scheme> {
    view["scheme"].as_str().and_then(|s| s.parse().ok())
}

/// Whether `shown`, a key view's `public_key`, is `public_key` in the
/// API's encoding: the decimal `N` for Paillier, hex for the others.
pub fn shows_public_key(scheme: Scheme, public_key: &[u8], shown: &str) -> bool {
    match family(scheme) {
        Family::Paillier => public_key == shown.as_bytes(),
        Family::Frost | Family::Ecdsa => hex::encode(public_key) == shown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lists_agree_with_operation() {
        assert!(SIGNING_SCHEMES.iter().all(|&s| operation(s) == Use::Sign));
        assert!(DECRYPTING_SCHEMES.iter().all(|&s| operation(s) == Use::Decrypt));
    }

    #[test]
    fn every_scheme_name_parses_and_is_listed_once() {
        let names: Vec<&str> = all().map(Scheme::as_str).collect();
        assert_eq!(
            names,
            [
                "frost-ed25519",
                "frost-secp256k1-tr",
                "frost-p256",
                "ecdsa-secp256k1",
                "ecdsa-p256",
                "paillier"
            ]
        );
        for s in all() {
            assert_eq!(s.as_str().parse::<Scheme>().ok(), Some(s));
            assert_eq!(of_view(&serde_json::json!({"scheme": s.as_str()})), Some(s));
        }
        assert_eq!(of_view(&serde_json::json!({"scheme": "rsa"})), None);
        assert_eq!(of_view(&serde_json::json!({})), None);
    }

    #[test]
    fn the_cli_facts_match_the_crypto_crate() {
        for s in all() {
            assert_eq!(uses_presignatures(s), s.is_ecdsa(), "{s}");
            assert_eq!(long_keygen(s), s.is_paillier(), "{s}");
            assert_eq!(keygen_takes_bits(s), s.is_paillier(), "{s}");
            assert_eq!(operation(s) == Use::Decrypt, s.is_paillier(), "{s}");
            assert_eq!(has_ethereum_address(s), s == Scheme::EcdsaSecp256k1, "{s}");
        }
    }
}
