//! Attested key records: every party of a key signs its canonical record
//! with its node identity key (Ed25519), and a record counts only with the
//! signatures of all its parties.
//!
//! The canonical record is [`sigil_api::record::record_bytes`] of the
//! record's fields ([`record_bytes`]).
//!
//! Nodes accept a key record from a peer (`FinalizeKey`, catch-up) only
//! if every party's signature verifies under the identity key *their own
//! config* lists for that party; clients check the same with `sigil keys
//! verify`, so none needs to trust the node it asks.

use ed25519_dalek::{Signer, Verifier as _};
use sha2::Digest;
use sigil_crypto::relay::EXTERNAL_PARTY;
use sigil_store::{Attestation, KeyRecord};

fn lp(out: &mut Vec<u8>, x: &[u8]) {
    out.extend_from_slice(&u32::try_from(x.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(x);
}

/// The canonical bytes of `k`'s record ([`sigil_api::record`]).
pub fn record_bytes(k: &KeyRecord) -> Vec<u8> {
    sigil_api::record::record_bytes(&fields(k, &policy_json(k)))
}

/// The policy of `k` as its canonical bytes cover it.
pub fn policy_json(k: &KeyRecord) -> String {
    serde_json::to_string(&k.policy).unwrap_or_default()
}

fn fields<'a>(k: &'a KeyRecord, policy_json: &'a str) -> sigil_api::record::RecordFields<'a> {
    sigil_api::record::RecordFields {
        key_id: &k.key_id,
        scheme: &k.scheme,
        threshold: k.threshold,
        parties: &k.parties,
        public_key: &k.public_key,
        public_package: &k.public_package,
        epoch: k.epoch,
        policy_json,
        created_by: &k.created_by,
        create_jti: &k.create_jti,
    }
}

/// Hex SHA-256 of the canonical record (shown by the API as `record_hash`).
pub fn record_hash(k: &KeyRecord) -> String {
    hex::encode(sha2::Sha256::digest(record_bytes(k)))
}

/// This node's signature over `k`'s record.
pub fn sign(identity: &ed25519_dalek::SigningKey, k: &KeyRecord) -> Vec<u8> {
    identity.sign(&record_bytes(k)).to_bytes().to_vec()
}

/// Why a record's attestations do not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttestError {
    /// A party's signature is missing.
    #[error("no attestation of party node {0}")]
    Missing(u16),
    /// A party's signature does not verify.
    #[error("the attestation of node {0} does not verify")]
    Invalid(u16),
    /// No identity key is configured for a party.
    #[error("no identity key configured for node {0}")]
    UnknownNode(u16),
    /// An attestation names a node that is not a party.
    #[error("attestation by node {0}, which is not a party of the key")]
    NotAParty(u16),
    /// Fewer valid endorsements of an epoch transition than the previous
    /// epoch's threshold.
    #[error("{have} valid endorsements of the epoch transition, {need} needed")]
    TooFew {
        /// Valid endorsements by distinct old parties.
        have: usize,
        /// The previous epoch's threshold.
        need: u16,
    },
}

/// Checks that `k.attestations` hold a valid signature of every party of
/// `k` (and nothing else) under the identity keys `identity_of` gives,
/// and of its external party, when the record names that party's session
/// key (`policy.external_keys`), under that key: the party's confirmation
/// that it holds its share of this very record. (Records made before
/// external parties confirmed carry none.)
///
/// # Errors
/// The first [`AttestError`].
pub fn verify_all(
    k: &KeyRecord,
    identity_of: impl Fn(u16) -> Option<ed25519_dalek::VerifyingKey>,
) -> Result<(), AttestError> {
    let confirms = !k.policy.external_keys.is_empty();
    let external = external_key(k);
    if confirms && (external.is_none() || k.policy.external_keys.len() != k.policy.external.len()) {
        // Named but unusable: never read as "no confirmation needed".
        return Err(AttestError::UnknownNode(EXTERNAL_PARTY));
    }
    let key_of = |p: u16| {
        if p == EXTERNAL_PARTY {
            external
        } else {
            identity_of(p)
        }
    };
    verify_parties(&record_bytes(k), &k.parties, &k.attestations, key_of, confirms)
}

/// [`verify_all`] for the node parties only: the coordinator's check of
/// the nodes' attestations before it asks the external party to confirm.
///
/// # Errors
/// The first [`AttestError`].
pub fn verify_nodes(
    k: &KeyRecord,
    identity_of: impl Fn(u16) -> Option<ed25519_dalek::VerifyingKey>,
) -> Result<(), AttestError> {
    verify_parties(&record_bytes(k), &k.parties, &k.attestations, identity_of, false)
}

/// The session key of `k`'s external party that its confirmation
/// verifies under (`policy.external_keys[0]`), if the record names one.
pub fn external_key(k: &KeyRecord) -> Option<ed25519_dalek::VerifyingKey> {
    let hex_key = k.policy.external_keys.first()?;
    sigil_crypto::relay::verifying_key_from_hex("external key", hex_key).ok()
}

/// The external party's confirmation of `k` as an attestation of the
/// external slot: its session key's Ed25519 signature over the record.
pub fn external_attestation(signature: Vec<u8>) -> Attestation {
    attestation(EXTERNAL_PARTY, signature)
}

/// Checks that `attestations` hold a valid signature over `bytes` of every
/// party in `parties` under the key `key_of` gives (and of no one else);
/// the external slot ([`EXTERNAL_PARTY`]) signs only when `external`.
fn verify_parties(
    bytes: &[u8],
    parties: &[u16],
    attestations: &[Attestation],
    key_of: impl Fn(u16) -> Option<ed25519_dalek::VerifyingKey>,
    external: bool,
) -> Result<(), AttestError> {
    let signs = |p: u16| p != EXTERNAL_PARTY || external;
    if let Some(a) = attestations
        .iter()
        .find(|a| !parties.contains(&a.node) || !signs(a.node))
    {
        return Err(AttestError::NotAParty(a.node));
    }
    for &party in parties.iter().filter(|&&p| signs(p)) {
        let a = attestations
            .iter()
            .find(|a| a.node == party)
            .ok_or(AttestError::Missing(party))?;
        let key = key_of(party).ok_or(AttestError::UnknownNode(party))?;
        if !signed_by(&key, bytes, a) {
            return Err(AttestError::Invalid(party));
        }
    }
    Ok(())
}

/// Whether `a.signature` is `key`'s Ed25519 signature over `bytes`.
fn signed_by(key: &ed25519_dalek::VerifyingKey, bytes: &[u8], a: &Attestation) -> bool {
    ed25519_dalek::Signature::from_slice(&a.signature).is_ok_and(|sig| key.verify(bytes, &sig).is_ok())
}

/// Whether `a` is a party of `k` signing that it holds and keeps its share
/// of `k`'s epoch ([`sign_activation`]).
pub fn activation_valid(
    k: &KeyRecord,
    a: &Attestation,
    identity_of: impl Fn(u16) -> Option<ed25519_dalek::VerifyingKey>,
) -> bool {
    k.parties.contains(&a.node) && identity_of(a.node).is_some_and(|key| signed_by(&key, &activation_bytes(k), a))
}

/// Domain separation tag of an epoch transition endorsement.
pub const TRANSITION_DOMAIN: &[u8] = b"sigil/epoch-transition/v1";

/// The bytes a dealing old party signs to endorse the move of a key from
/// record `prev` to record `next` (a refresh or reshare):
/// `lp("sigil/epoch-transition/v1")`, `lp(SHA-256(record_bytes(prev)))`,
/// `lp(SHA-256(record_bytes(next)))`.
pub fn transition_bytes(prev: &KeyRecord, next: &KeyRecord) -> Vec<u8> {
    let mut out = Vec::with_capacity(96);
    lp(&mut out, TRANSITION_DOMAIN);
    lp(&mut out, &sha2::Sha256::digest(record_bytes(prev)));
    lp(&mut out, &sha2::Sha256::digest(record_bytes(next)));
    out
}

/// This node's endorsement of the move from `prev` to `next`.
pub fn sign_transition(identity: &ed25519_dalek::SigningKey, prev: &KeyRecord, next: &KeyRecord) -> Vec<u8> {
    identity.sign(&transition_bytes(prev, next)).to_bytes().to_vec()
}

/// Checks that `next.endorsements` hold valid endorsements of the move
/// from `prev` by at least `prev.threshold` distinct parties of `prev`
/// (fewer than `t` nodes, however malicious, cannot move a key, so cannot
/// make an honest old party delete its share).
///
/// # Errors
/// [`AttestError::NotAParty`] for an endorsement by a node outside
/// `prev`'s committee, [`AttestError::TooFew`] for fewer valid ones than
/// the threshold.
pub fn verify_transition(
    prev: &KeyRecord,
    next: &KeyRecord,
    identity_of: impl Fn(u16) -> Option<ed25519_dalek::VerifyingKey>,
) -> Result<(), AttestError> {
    let bytes = transition_bytes(prev, next);
    let mut valid: Vec<u16> = Vec::new();
    for a in &next.endorsements {
        if !prev.parties.contains(&a.node) {
            return Err(AttestError::NotAParty(a.node));
        }
        let ok = identity_of(a.node).is_some_and(|key| signed_by(&key, &bytes, a));
        if ok && !valid.contains(&a.node) {
            valid.push(a.node);
        }
    }
    if valid.len() < usize::from(prev.threshold) {
        return Err(AttestError::TooFew {
            have: valid.len(),
            need: prev.threshold,
        });
    }
    Ok(())
}

/// Domain separation tag of an epoch activation.
pub const ACTIVATION_DOMAIN: &[u8] = b"sigil/epoch-active/v1";

/// The bytes a party signs when it holds its share of the epoch of `k` and
/// keeps it until the epoch completes (an acknowledged pending epoch, or
/// the active one):
/// `lp("sigil/epoch-active/v1")`, `lp(SHA-256(record_bytes(k)))`.
pub fn activation_bytes(k: &KeyRecord) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    lp(&mut out, ACTIVATION_DOMAIN);
    lp(&mut out, &sha2::Sha256::digest(record_bytes(k)));
    out
}

/// This node's signature that it activated the epoch of `k`.
pub fn sign_activation(identity: &ed25519_dalek::SigningKey, k: &KeyRecord) -> Vec<u8> {
    identity.sign(&activation_bytes(k)).to_bytes().to_vec()
}

/// Checks that `k.activations` hold every party's signature that it
/// activated `k`'s epoch (and nothing else).
///
/// # Errors
/// The first [`AttestError`].
pub fn verify_activations(
    k: &KeyRecord,
    identity_of: impl Fn(u16) -> Option<ed25519_dalek::VerifyingKey>,
) -> Result<(), AttestError> {
    verify_parties(&activation_bytes(k), &k.parties, &k.activations, identity_of, false)
}

/// Domain separation tag of an aux info attestation.
pub const AUX_DOMAIN: &[u8] = b"sigil/aux-info/v1";

/// The bytes a party signs to attest aux info: `lp("sigil/aux-info/v1")`,
/// `lp(party_set)` (node ids joined by `,`), then the 32-byte fingerprint
/// of all parties' public parameters (`sigil_crypto::ecdsa::aux_fingerprint`).
pub fn aux_bytes(party_set: &str, fingerprint: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + party_set.len());
    lp(&mut out, AUX_DOMAIN);
    lp(&mut out, party_set.as_bytes());
    lp(&mut out, fingerprint);
    out
}

/// This node's signature attesting aux info of `party_set` with `fingerprint`.
pub fn sign_aux(identity: &ed25519_dalek::SigningKey, party_set: &str, fingerprint: &[u8]) -> Vec<u8> {
    identity.sign(&aux_bytes(party_set, fingerprint)).to_bytes().to_vec()
}

/// Checks that every node of `parties` attested aux info of their set with
/// `fingerprint`.
///
/// # Errors
/// The first [`AttestError`].
pub fn verify_aux(
    parties: &[u16],
    fingerprint: &[u8],
    attestations: &[Attestation],
    identity_of: impl Fn(u16) -> Option<ed25519_dalek::VerifyingKey>,
) -> Result<(), AttestError> {
    let set = parties.iter().map(u16::to_string).collect::<Vec<_>>().join(",");
    verify_parties(&aux_bytes(&set, fingerprint), parties, attestations, identity_of, false)
}

/// One attestation.
pub fn attestation(node: u16, signature: Vec<u8>) -> Attestation {
    Attestation { node, signature }
}

/// Parses a hex Ed25519 public key (32 bytes).
///
/// # Errors
/// Not 64 hex characters or not a valid point.
pub fn parse_public(hex_key: &str) -> anyhow::Result<ed25519_dalek::VerifyingKey> {
    let mut b = [0u8; 32];
    hex::decode_to_slice(hex_key.trim(), &mut b).map_err(|e| anyhow::anyhow!("identity key: {e}"))?;
    ed25519_dalek::VerifyingKey::from_bytes(&b).map_err(|e| anyhow::anyhow!("identity key: {e}"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn all_parties_must_sign_the_same_record() {
        let keys: Vec<ed25519_dalek::SigningKey> = (0..3u8)
            .map(|i| ed25519_dalek::SigningKey::from_bytes(&[i + 1; 32]))
            .collect();
        let of = |n: u16| keys.get(usize::from(n)).map(|k| k.verifying_key());
        let mut k = sigil_store::conformance::sample_key("k");
        k.attestations = (0..3u16)
            .map(|i| attestation(i, sign(&keys[usize::from(i)], &k)))
            .collect();
        verify_all(&k, of).unwrap();
        // Any field changed breaks every signature.
        let mut other = k.clone();
        other.public_key[0] ^= 1;
        assert_eq!(verify_all(&other, of), Err(AttestError::Invalid(0)));
        let mut other = k.clone();
        other.policy.sign.push("mallory".into());
        assert_eq!(verify_all(&other, of), Err(AttestError::Invalid(0)));
        // A missing party, a forged signature, a non-party.
        let mut other = k.clone();
        other.attestations.pop();
        assert_eq!(verify_all(&other, of), Err(AttestError::Missing(2)));
        let mut other = k.clone();
        other.attestations[1] = attestation(1, sign(&keys[0], &k));
        assert_eq!(verify_all(&other, of), Err(AttestError::Invalid(1)));
        let mut other = k.clone();
        other.attestations.push(attestation(7, vec![0; 64]));
        assert_eq!(verify_all(&other, of), Err(AttestError::NotAParty(7)));
        // The label is not part of the record.
        let mut other = k.clone();
        other.label = None;
        verify_all(&other, of).unwrap();
    }

    /// A record with an external slot whose policy names the party's
    /// session key needs the party's signature under that key too; the
    /// coordinator's check before it asks (`verify_nodes`) does not; a
    /// record without the key takes no signature of the slot.
    #[test]
    fn the_external_party_confirms_its_record_under_its_session_key() {
        use ed25519_dalek::Signer as _;
        let node = ed25519_dalek::SigningKey::from_bytes(&[1; 32]);
        let party = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
        let of = |n: u16| (n == 0).then(|| node.verifying_key());
        let mut k = sigil_store::conformance::sample_key("k");
        k.parties = vec![0, EXTERNAL_PARTY];
        k.policy.external = vec!["alice".into()];
        k.policy.external_keys = vec![hex::encode(party.verifying_key().to_bytes())];
        k.attestations = vec![attestation(0, sign(&node, &k))];
        verify_nodes(&k, of).unwrap();
        assert_eq!(verify_all(&k, of), Err(AttestError::Missing(EXTERNAL_PARTY)));
        let confirmed = external_attestation(party.sign(&record_bytes(&k)).to_bytes().to_vec());
        k.attestations.push(confirmed.clone());
        verify_all(&k, of).unwrap();
        assert_eq!(
            verify_nodes(&k, of),
            Err(AttestError::NotAParty(EXTERNAL_PARTY)),
            "not yet asked"
        );
        let mut other = k.clone();
        other.attestations[1] = external_attestation(node.sign(&record_bytes(&k)).to_bytes().to_vec());
        assert_eq!(verify_all(&other, of), Err(AttestError::Invalid(EXTERNAL_PARTY)));
        // The key is part of the record: another key breaks every signature.
        let mut other = k.clone();
        other.policy.external_keys = vec![hex::encode(node.verifying_key().to_bytes())];
        assert_eq!(verify_all(&other, of), Err(AttestError::Invalid(0)));
        // Without the key (records before confirmations), the slot signs nothing.
        let mut old = k.clone();
        old.policy.external_keys.clear();
        old.attestations = vec![attestation(0, sign(&node, &old))];
        verify_all(&old, of).unwrap();
        old.attestations.push(confirmed);
        assert_eq!(verify_all(&old, of), Err(AttestError::NotAParty(EXTERNAL_PARTY)));
        // A key named but unusable never means "no confirmation needed".
        let mut bad = k.clone();
        bad.policy.external_keys = vec!["not hex".into()];
        assert_eq!(verify_all(&bad, of), Err(AttestError::UnknownNode(EXTERNAL_PARTY)));
    }

    #[test]
    fn aux_attestations_bind_set_and_fingerprint() {
        let keys: Vec<ed25519_dalek::SigningKey> = (0..3u8)
            .map(|i| ed25519_dalek::SigningKey::from_bytes(&[i + 1; 32]))
            .collect();
        let of = |n: u16| keys.get(usize::from(n)).map(|k| k.verifying_key());
        let fp = [7u8; 32];
        let all: Vec<Attestation> = (0..3u16)
            .map(|i| attestation(i, sign_aux(&keys[usize::from(i)], "0,1,2", &fp)))
            .collect();
        verify_aux(&[0, 1, 2], &fp, &all, of).unwrap();
        assert_eq!(
            verify_aux(&[0, 1, 2], &[8u8; 32], &all, of),
            Err(AttestError::Invalid(0))
        );
        assert_eq!(verify_aux(&[0, 1], &fp, &all[..2], of), Err(AttestError::Invalid(0)));
        assert_eq!(verify_aux(&[0, 1, 2], &fp, &all[..2], of), Err(AttestError::Missing(2)));
        // A record attestation is no aux attestation.
        let k = sigil_store::conformance::sample_key("k");
        let wrong = vec![attestation(0, sign(&keys[0], &k))];
        assert_eq!(verify_aux(&[0], &fp, &wrong, of), Err(AttestError::Invalid(0)));
    }
}
