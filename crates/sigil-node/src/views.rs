//! What the REST API shows of a key ([`KeyView`]), apart from the API
//! itself so that the operations registry (which keeps finished key
//! creations) and the API both use it without depending on each other.

use serde::{Deserialize, Serialize};
use sigil_store::KeyRecord;

use utoipa::ToSchema;

/// A key as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct KeyView {
    /// Key id (UUID).
    pub key_id: String,
    /// Scheme name.
    pub scheme: String,
    /// Group public key, hex, in the scheme's standard encoding: Ed25519
    /// 32 bytes; BIP-340 x-only 32 bytes; P-256 SEC1 compressed 33 bytes.
    /// `paillier`: the modulus `N`, decimal.
    pub public_key: String,
    /// `paillier`: the modulus `N`, decimal (`g = N + 1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<String>,
    /// The public key as PEM SubjectPublicKeyInfo (for secp256k1 the even-y
    /// point of the x-only key).
    pub public_key_pem: Option<String>,
    /// Signers needed.
    pub threshold: u16,
    /// Node ids holding shares.
    pub parties: Vec<u16>,
    /// Share generation (0 after DKG).
    pub epoch: u32,
    /// Label, if any.
    pub label: Option<String>,
    /// Creation time, seconds since the Unix epoch.
    pub created_at: i64,
    /// `ecdsa-secp256k1`: the EIP-55 Ethereum address of `public_key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ethereum_address: Option<String>,
    /// `ecdsa-secp256k1`: the BIP-32 extended public key (Base58Check
    /// `xpub`), so a watch-only wallet derives the same children.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xpub: Option<String>,
    /// Set when the view is of a derived child key (`?derivation_path=`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub derivation_path: Option<String>,
    /// Which clients may use the key.
    #[schema(value_type = Object)]
    pub policy: sigil_store::KeyPolicy,
    /// The client whose request created the key.
    pub created_by: String,
    /// That request's token `jti`.
    pub create_jti: String,
    /// The scheme's public key package, hex (as the protocol crate
    /// serializes it; its SHA-256 is in the attested record).
    pub public_key_package: String,
    /// Hex SHA-256 of the canonical key record (`crate::attest`).
    pub record_hash: String,
    /// Every party's Ed25519 signature over the canonical record:
    /// `[{"node", "signature" (hex)}]`; check with `sigil keys verify`.
    #[schema(value_type = Vec<Object>)]
    pub attestations: Vec<sigil_store::Attestation>,
    /// The key's retired epochs, oldest first: `[{"epoch", "threshold",
    /// "parties", "record_hash", "started_at", "ended_at"}]` (times in
    /// seconds since the Unix epoch); empty before the first refresh or
    /// reshare, and in lists.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<Object>)]
    pub history: Vec<sigil_store::EpochEntry>,
    /// Only in the answer that created a key with `"user_share"`: the
    /// user's share (the serialized FROST key package of the external
    /// slot), HPKE-sealed to the request's `recipient_public_key`
    /// (`sigil_crypto::relay::seal_user_share`), hex. Never stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_share: Option<String>,
}

/// What the API shows of a key beyond its record.
#[derive(Debug, Clone, Default)]
pub struct ViewExtras {
    /// The public key as text (hex for the signing schemes; Paillier: `N`
    /// in decimal).
    pub public_key: String,
    /// Paillier: `N` in decimal.
    pub n: Option<String>,
    /// PEM SubjectPublicKeyInfo of the public key, where one exists.
    pub public_key_pem: Option<String>,
    /// `ecdsa-secp256k1`: the EIP-55 Ethereum address.
    pub ethereum_address: Option<String>,
    /// `ecdsa-secp256k1`: the BIP-32 `xpub` of the key.
    pub xpub: Option<String>,
}

impl KeyView {
    /// The view of `k` with what its family adds (`extras`; see
    /// `crate::family::view_of`, which picks them).
    pub fn new(k: &KeyRecord, x: ViewExtras) -> Self {
        KeyView {
            key_id: k.key_id.clone(),
            scheme: k.scheme.clone(),
            public_key: x.public_key,
            n: x.n,
            public_key_pem: x.public_key_pem,
            threshold: k.threshold,
            parties: k.parties.clone(),
            epoch: k.epoch,
            label: k.label.clone(),
            created_at: k.created_at,
            ethereum_address: x.ethereum_address,
            xpub: x.xpub,
            derivation_path: None,
            policy: k.policy.clone(),
            created_by: k.created_by.clone(),
            create_jti: k.create_jti.clone(),
            public_key_package: hex::encode(&k.public_package),
            record_hash: crate::attest::record_hash(k),
            attestations: k.attestations.clone(),
            history: Vec::new(),
            user_share: None,
        }
    }
}
