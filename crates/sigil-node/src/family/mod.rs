//! Scheme families: FROST (RFC 9591, three suites), CGGMP21 ECDSA (two
//! curves) and threshold Paillier. Each family implements `Family`: its
//! message schedules, request checks, key loading, this party's part of
//! key generation and of signing or decryption, and what the API shows of
//! its keys and signatures. `of` is the one place that maps a [`Scheme`]
//! to its family; code outside this module asks the family instead of
//! branching on the scheme.
//!
//! A key enters the node's cache as a [`LoadedKey`]: the record with its
//! scheme parsed once, its [`PartySet`], and, after first use, the
//! family's deserialized share (`Material`).

pub mod ecdsa;
pub mod frost;
pub mod paillier;

use std::sync::{Arc, OnceLock};

use sigil_crypto::Scheme;
use sigil_proto::peer::{ClientAuthorization, DkgProposal, SessionOutcome, SignProposal};
use sigil_store::KeyRecord;
use zeroize::Zeroizing;

use sigil_proto::peer::session_proposal::Kind;

use crate::error::{NodeError, SessionError};
use crate::limits::SessionKind;
use crate::operations::KeygenProgress;
use crate::session::{ExpectFn, SessionSpec};
use crate::views::{KeyView, ViewExtras};
use crate::{Node, Outcomes};

/// What a client does with a key of a family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// `POST /v1/keys/{key_id}/sign`.
    Sign,
    /// `POST /v1/keys/{key_id}/decrypt`.
    Decrypt,
}

impl Operation {
    /// The last path segment of the operation's REST route.
    pub fn route(self) -> &'static str {
        match self {
            Operation::Sign => "sign",
            Operation::Decrypt => "decrypt",
        }
    }
}

/// This party's result of a key generation session: the share to seal and
/// the public package (none when the session ended without a key, as a
/// Paillier attempt without a biprime does), and the outcome to report.
pub(crate) struct KeygenPart {
    pub key: Option<(Zeroizing<Vec<u8>>, Vec<u8>)>,
    pub outcome: SessionOutcome,
}

impl KeygenPart {
    /// A finished key generation: the share and the public package.
    pub fn found(share: Zeroizing<Vec<u8>>, package: Vec<u8>) -> Self {
        KeygenPart {
            key: Some((share, package)),
            outcome: SessionOutcome::default(),
        }
    }
}

/// What the API adds to a signature of a family (ECDSA: recovery id, DER,
/// Ethereum `v`); empty for the others.
#[derive(Debug, Clone, Default)]
pub struct SignatureExtras {
    /// ECDSA: the recovery id (0 or 1) of the signature.
    pub recovery_id: Option<u8>,
    /// ECDSA: the signature in DER, hex.
    pub der: Option<String>,
    /// `ecdsa-secp256k1`: `27 + recovery_id`.
    pub v: Option<u8>,
}

/// A family's deserialized key material, cached in [`LoadedKey`].
pub(crate) enum Material {
    /// A FROST key package and public key package.
    Frost(Box<frost::Material>),
    /// A complete CGGMP21 key share (share joined with aux info).
    Ecdsa(Box<ecdsa::Material>),
    /// A Paillier decryption share.
    Paillier(paillier::Material),
}

/// The operations of one scheme family. Implemented by [`frost::Frost`],
/// [`ecdsa::Ecdsa`] and [`paillier::Paillier`]; picked by [`of`].
#[async_trait::async_trait]
pub(crate) trait Family: Send + Sync {
    /// What clients do with keys of this family.
    fn operation(&self) -> Operation;

    /// Whether keys of this family need CGGMP21 aux info for their party
    /// set (made in an aux session before the first key generation).
    fn uses_aux_info(&self) -> bool {
        false
    }

    /// The admission kind of this family's key generation sessions among
    /// `parties`.
    fn keygen_kind(&self, _parties: &[u16]) -> SessionKind {
        SessionKind::Dkg
    }

    /// The admission kind of this family's sign or decrypt sessions.
    fn sign_kind(&self) -> SessionKind {
        match self.operation() {
            Operation::Sign => SessionKind::Sign,
            Operation::Decrypt => SessionKind::Decrypt,
        }
    }

    /// The round schedule of this family's key generation among
    /// `parties` (session order).
    fn keygen_schedule(&self, parties: &[u16]) -> ExpectFn;

    /// The round schedule of the sign or decrypt session `s`.
    fn sign_schedule(&self, s: &SignProposal) -> ExpectFn;

    /// Checks a sign or decrypt request for a key of `scheme`: the message
    /// (ECDSA: a 32-byte digest) and the derivation path (ECDSA only).
    /// The error is the client-facing reason.
    fn check_message(&self, scheme: Scheme, message: &[u8], path: &[u32]) -> Result<(), String>;

    /// The key size settings of a key generation request with `n` parties
    /// and threshold `t`, as the proposal carries them (`bits`,
    /// `prime_threshold`; 0 when the family has none). The error is the
    /// client-facing reason.
    fn keygen_settings(
        &self,
        _n: usize,
        _t: u16,
        bits: Option<u32>,
        prime_threshold: Option<u32>,
    ) -> Result<(u32, u32), String> {
        if bits.is_some() {
            return Err("bits is for paillier keys".into());
        }
        if prime_threshold.is_some() {
            return Err("prime_threshold is for paillier keys".into());
        }
        Ok((0, 0))
    }

    /// Coordinates a planned key generation among `parties` (the DKG
    /// proposal `kind`), with whatever the family needs first (ECDSA: aux
    /// info) or repeats (Paillier: attempts until a biprime).
    async fn coordinate_keygen(
        &self,
        node: &Node,
        parties: &[u16],
        kind: Kind,
        _progress: &KeygenProgress,
        auth: &ClientAuthorization,
    ) -> Result<Outcomes, NodeError> {
        // A set with an external party makes the key's own aux info in
        // the key generation session itself.
        if self.uses_aux_info() && !sigil_crypto::relay::has_external(parties) {
            node.ensure_aux(parties, auth).await?;
        }
        node.coordinate(parties, kind, true, Some(auth))
            .await
            .map_err(NodeError::from)
    }

    /// This party's key generation among `spec.parties` with threshold
    /// `t`, as `d` proposes.
    async fn keygen_part(
        &self,
        node: &Node,
        spec: SessionSpec,
        scheme: Scheme,
        d: &DkgProposal,
        t: u16,
    ) -> Result<KeygenPart, SessionError>;

    /// This party's part of the sign or decrypt session `s` with `key`;
    /// `signers` are the key-level indices of the session's parties.
    async fn sign_part(
        &self,
        node: &Node,
        spec: SessionSpec,
        key: &LoadedKey,
        s: &SignProposal,
        signers: Vec<u16>,
    ) -> Result<SessionOutcome, SessionError>;

    /// Deserializes this node's unsealed `share` of `key` (and whatever
    /// else the family joins it with) into cacheable material.
    async fn load(&self, node: &Node, key: &LoadedKey, share: Zeroizing<Vec<u8>>) -> Result<Material, SessionError>;

    /// A coordinator's fast path before a full signing session (ECDSA: a
    /// pooled presignature). `Ok(None)`: run the full session.
    async fn sign_pooled(
        &self,
        _node: &Node,
        _key: &LoadedKey,
        _message: &[u8],
        _path: &[u32],
        _auth: &ClientAuthorization,
    ) -> Result<Option<crate::Signed>, SessionError> {
        Ok(None)
    }

    /// What the API adds to `signature`, made by `key` (at `path`) over
    /// `message`.
    fn signature_extras(
        &self,
        _key: &LoadedKey,
        _message: &[u8],
        _path: &[u32],
        _signature: &[u8],
    ) -> Result<SignatureExtras, String> {
        Ok(SignatureExtras::default())
    }

    /// Whether keys of this family may have an external party (a client
    /// that runs its share with `sigil-client`, [`crate::relay`]).
    fn runs_external_parties(&self) -> bool {
        false
    }

    /// Whether keys of this family can be refreshed and reshared.
    fn reshares(&self) -> bool {
        false
    }

    /// Whether keys of this family may be refreshed on a schedule
    /// (`policy.rotation_interval_s`); `Err` says why not.
    fn rotates(&self) -> Result<(), String> {
        if self.reshares() {
            Ok(())
        } else {
            Err("keys of this scheme cannot be reshared".into())
        }
    }

    /// This party's part of a reshare session of `key` (the current
    /// epoch's record) to `new_parties` with `roles`
    /// (`sigil_crypto::reshare`); `old_share` is this node's unsealed
    /// current share when it is an old party (it deals it when `roles`
    /// say so). Returns the new public package (every party derives it)
    /// and, at a new party, its new share.
    async fn reshare_part(
        &self,
        _node: &Node,
        _spec: SessionSpec,
        key: &LoadedKey,
        _roles: &sigil_crypto::reshare::Roles,
        _new_parties: &[u16],
        _old_share: Option<Zeroizing<Vec<u8>>>,
    ) -> Result<(Option<Zeroizing<Vec<u8>>>, Vec<u8>), SessionError> {
        Err(SessionError::Invalid(format!(
            "{} keys cannot be reshared yet",
            key.scheme
        )))
    }

    /// What the API shows of `record` (a key of `scheme`) beyond its fields.
    fn view_extras(&self, scheme: Scheme, record: &KeyRecord) -> ViewExtras {
        ViewExtras {
            public_key: hex::encode(&record.public_key),
            public_key_pem: scheme.public_key_pem(&record.public_key).ok(),
            ..ViewExtras::default()
        }
    }
}

/// What the API shows of `record`: its fields and what its family adds
/// (a record of a scheme this build does not know shows its public key
/// in hex and nothing more).
pub fn view_of(record: &KeyRecord) -> KeyView {
    let extras = match record.scheme.parse::<Scheme>() {
        Ok(scheme) => of(scheme).view_extras(scheme, record),
        Err(_) => ViewExtras {
            public_key: hex::encode(&record.public_key),
            ..ViewExtras::default()
        },
    };
    KeyView::new(record, extras)
}

/// The family of `scheme`: the one `match` on the scheme in the node.
pub(crate) fn of(scheme: Scheme) -> &'static dyn Family {
    match scheme {
        Scheme::FrostEd25519 | Scheme::FrostSecp256k1Tr | Scheme::FrostP256 => &frost::Frost,
        Scheme::EcdsaSecp256k1 | Scheme::EcdsaP256 => &ecdsa::Ecdsa,
        Scheme::Paillier => &paillier::Paillier,
    }
}

/// The name of an ordered party set: node ids joined by commas (`"0,2"`);
/// aux info and presignature pools are kept per set.
pub fn party_set(parties: &[u16]) -> String {
    parties.iter().map(u16::to_string).collect::<Vec<_>>().join(",")
}

/// An ordered party set: node ids, in the order that gives each its party
/// index (a key's parties in key order; a session's in session order).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartySet(Arc<[u16]>);

impl PartySet {
    /// The set of `nodes`, in that order.
    pub fn new(nodes: &[u16]) -> Self {
        PartySet(nodes.into())
    }

    /// Node ids in order.
    pub fn nodes(&self) -> &[u16] {
        &self.0
    }

    /// Whether `node` is in the set.
    pub fn contains(&self, node: u16) -> bool {
        self.0.contains(&node)
    }

    /// `node`'s 0-based index in the set.
    pub fn index(&self, node: u16) -> Option<usize> {
        self.0.iter().position(|&x| x == node)
    }

    /// The set's name ([`party_set`]).
    pub fn name(&self) -> String {
        party_set(&self.0)
    }

    /// The index in this set of each of `nodes`.
    ///
    /// # Errors
    /// [`SessionError::Invalid`] for a node not in the set (`what` names
    /// the set in the message, e.g. `key k1`).
    pub fn indices_of(&self, nodes: &[u16], what: &str) -> Result<Vec<u16>, SessionError> {
        nodes
            .iter()
            .map(|&node| {
                self.index(node)
                    .and_then(|k| u16::try_from(k).ok())
                    .ok_or_else(|| SessionError::Invalid(format!("node {node} holds no share of {what}")))
            })
            .collect()
    }
}

/// An active key as the node uses it: its record, its scheme parsed once,
/// its parties, and (after first use) its deserialized share. Keys are
/// immutable once active, so a cached `LoadedKey` never goes stale; the
/// cache trades keeping shares in process memory (where the master key
/// lives anyway) for not unsealing on every signature.
pub struct LoadedKey {
    /// The stored record.
    pub record: KeyRecord,
    /// `record.scheme`, parsed.
    pub scheme: Scheme,
    /// `record.parties`, in key order.
    pub parties: PartySet,
    material: OnceLock<Arc<Material>>,
}

impl LoadedKey {
    /// Parses `record`.
    ///
    /// # Errors
    /// An unknown scheme name (a record this build cannot use).
    pub fn new(record: KeyRecord) -> Result<Self, sigil_crypto::Error> {
        let scheme = record.scheme.parse()?;
        Ok(LoadedKey {
            parties: PartySet::new(&record.parties),
            scheme,
            record,
            material: OnceLock::new(),
        })
    }

    /// The key's family.
    pub(crate) fn family(&self) -> &'static dyn Family {
        of(self.scheme)
    }

    /// What clients do with the key.
    pub fn operation(&self) -> Operation {
        self.family().operation()
    }

    /// The key-level indices of `nodes`.
    ///
    /// # Errors
    /// [`SessionError::Invalid`] for a node that holds no share.
    pub fn indices_of(&self, nodes: &[u16]) -> Result<Vec<u16>, SessionError> {
        self.parties.indices_of(nodes, &format!("key {}", self.record.key_id))
    }
}

impl Node {
    /// The deserialized material of `key` on this node: unsealed and
    /// loaded by its family on first use, then cached with the key.
    pub(crate) async fn material(&self, key: &LoadedKey) -> Result<Arc<Material>, SessionError> {
        if let Some(m) = key.material.get() {
            return Ok(m.clone());
        }
        let share = self.own_share(&key.record).await?;
        let m = Arc::new(key.family().load(self, key, share).await?);
        Ok(key.material.get_or_init(|| m).clone())
    }
}

/// The error for material of another family than the one asking.
pub(crate) fn wrong_material() -> SessionError {
    crate::internal("cached key material of another family")
}

/// No messages: pooled signing and Paillier decryption are one local step
/// per party.
pub fn no_messages(_: u16, _: u16, _: u16, _: u16) -> Option<round_based::MessageType> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scheme_has_a_family_with_its_operation() {
        for s in Scheme::ALL {
            assert_eq!(of(s).operation(), Operation::Sign, "{s}");
        }
        assert_eq!(of(Scheme::Paillier).operation(), Operation::Decrypt);
    }

    #[test]
    fn party_sets_name_and_index() {
        let p = PartySet::new(&[3, 0, 2]);
        assert_eq!(p.name(), "3,0,2");
        assert!(matches!(p.indices_of(&[2, 3], "k").as_deref(), Ok([2, 0])));
        assert!(matches!(p.indices_of(&[1], "k"), Err(SessionError::Invalid(_))));
        assert!(p.contains(0) && !p.contains(1));
    }
}
