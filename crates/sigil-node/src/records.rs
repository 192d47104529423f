//! Key records on the peer wire: [`meta_of`] and [`record_of`] convert
//! between the store's [`KeyRecord`] and the proto's [`KeyMeta`] (numbers
//! range-checked, the policy as JSON). Checks of what a record says
//! (attestations, endorsements, activations) are in [`crate::attest`].

use sigil_proto::peer::KeyMeta;
use sigil_store::{KeyRecord, KeyStatus};

use crate::error::SessionError;

/// The wire form of a key record.
pub fn meta_of(k: &KeyRecord) -> KeyMeta {
    KeyMeta {
        key_id: k.key_id.clone(),
        scheme: k.scheme.clone(),
        threshold: u32::from(k.threshold),
        parties: k.parties.iter().map(|&p| u32::from(p)).collect(),
        public_key: k.public_key.clone(),
        public_key_package: k.public_package.clone(),
        epoch: k.epoch,
        label: k.label.clone().unwrap_or_default(),
        created_at: k.created_at,
        policy: serde_json::to_string(&k.policy).unwrap_or_default(),
        created_by: k.created_by.clone(),
        create_jti: k.create_jti.clone(),
        attestations: wire_attestations(&k.attestations),
        endorsements: wire_attestations(&k.endorsements),
        activations: wire_attestations(&k.activations),
    }
}

fn wire_attestations(list: &[sigil_store::Attestation]) -> Vec<sigil_proto::peer::Attestation> {
    list.iter()
        .map(|a| sigil_proto::peer::Attestation {
            node: u32::from(a.node),
            signature: a.signature.clone(),
        })
        .collect()
}

/// A key record from its wire form, with `status`.
///
/// # Errors
/// `Invalid` for out-of-range numbers or a policy that does not parse.
pub fn record_of(meta: &KeyMeta, status: KeyStatus) -> Result<KeyRecord, SessionError> {
    let small =
        |x: u32, what: &str| u16::try_from(x).map_err(|_| SessionError::Invalid(format!("{what} out of range")));
    let parties = meta
        .parties
        .iter()
        .map(|&p| small(p, "party"))
        .collect::<Result<Vec<_>, _>>()?;
    let attestations_of = |list: &[sigil_proto::peer::Attestation]| {
        list.iter()
            .map(|a| {
                Ok(sigil_store::Attestation {
                    node: small(a.node, "attesting node")?,
                    signature: a.signature.clone(),
                })
            })
            .collect::<Result<Vec<_>, SessionError>>()
    };
    let attestations = attestations_of(&meta.attestations)?;
    let endorsements = attestations_of(&meta.endorsements)?;
    let activations = attestations_of(&meta.activations)?;
    Ok(KeyRecord {
        key_id: meta.key_id.clone(),
        scheme: meta.scheme.clone(),
        threshold: small(meta.threshold, "threshold")?,
        parties,
        public_key: meta.public_key.clone(),
        public_package: meta.public_key_package.clone(),
        epoch: meta.epoch,
        label: (!meta.label.is_empty()).then(|| meta.label.clone()),
        created_at: meta.created_at,
        status,
        policy: serde_json::from_str(&meta.policy).map_err(|e| SessionError::Invalid(format!("policy: {e}")))?,
        created_by: meta.created_by.clone(),
        create_jti: meta.create_jti.clone(),
        attestations,
        endorsements,
        activations,
    })
}
