//! Threshold ECDSA (CGGMP21, `cggmp21` 0.6) in the node, on secp256k1
//! and P-256: aux info once per ordered party set ([`aux`]), from safe
//! primes out of the node's sealed pool ([`primes`]); key generation;
//! signing, in full (CGGMP21 Figure 7, presigning and signing in one
//! session) or from a pooled presignature ([`presign`]).
//!
//! Aux info (Paillier keys and ring-Pedersen parameters) costs seconds of
//! CPU per party, so it is generated once per ordered party set (the
//! coordinator runs an aux session before the first ECDSA keygen of a set),
//! stored sealed as record `("aux_info", "<ids>", node, 0)`, and reused for
//! every key of that set. Aux info is committed in two phases: each party
//! stores its result *pending* and answers with the fingerprint of all
//! parties' public parameters ([`ecdsa::aux_fingerprint`]) signed with its
//! identity key; the coordinator sends every party all the signatures
//! (`FinalizeAux`), and a party commits only if all of them verify over its
//! own fingerprint. Keygen uses committed aux info only. Each aux run
//! consumes two 1536-bit safe primes from the local pool; the pool is
//! refilled in the background (`StdRng` seeded from `OsRng`, not `OsRng`
//! itself, which spends its time in the kernel) and can be seeded from a
//! file of primes.
//!
//! The share is stored as the incomplete key share (JSON, as `cggmp21`
//! serializes it) and joined with the set's aux info when loaded; the
//! public package is [`EcdsaPublic`] JSON.

pub mod aux;
pub mod ephemeral;
pub mod presign;
pub mod primes;

use rand::SeedableRng;
use sigil_crypto::ecdsa::{self, cggmp21};
use sigil_crypto::relay::has_external;
use sigil_crypto::scheme::EcdsaPublic;
use sigil_crypto::{with_curve, Scheme};
use sigil_proto::peer::{ClientAuthorization, DkgProposal, SessionOutcome, SignProposal};
use zeroize::Zeroizing;

pub use presign::*;
pub use primes::*;

use super::{no_messages, wrong_material, Family, KeygenPart, LoadedKey, Operation, SignatureExtras, ViewExtras};

use crate::error::SessionError;
use crate::session::{self, ExpectFn, SessionSpec};
use crate::{internal, Node};

/// The round schedule and admission kind of a presigning session
/// (CGGMP21's signing rounds up to the presignature).
pub(crate) fn presign_schedule() -> (ExpectFn, crate::limits::SessionKind) {
    (ecdsa::expects::sign, crate::limits::SessionKind::Presign)
}

/// The round schedule and admission kind of an aux-info session
/// (CGGMP21's auxiliary-info rounds).
pub(crate) fn aux_schedule() -> (ExpectFn, crate::limits::SessionKind) {
    (ecdsa::expects::aux_info, crate::limits::SessionKind::Aux)
}

/// The ECDSA family.
pub(crate) struct Ecdsa;

/// A complete key share (share and aux info) for each curve.
pub(crate) enum Material {
    Secp256k1(ecdsa::KeyShare<ecdsa::Secp256k1>),
    P256(ecdsa::KeyShare<ecdsa::Secp256r1>),
}

/// Maps a curve to its [`Material`] variant.
pub(crate) trait Curve: cggmp21::generic_ec::Curve {
    fn wrap(s: ecdsa::KeyShare<Self>) -> Material;
    fn get(m: &Material) -> Option<&ecdsa::KeyShare<Self>>;
}

macro_rules! curve {
    ($e:ty, $v:ident) => {
        impl Curve for $e {
            fn wrap(s: ecdsa::KeyShare<Self>) -> Material {
                Material::$v(s)
            }
            fn get(m: &Material) -> Option<&ecdsa::KeyShare<Self>> {
                match m {
                    Material::$v(s) => Some(s),
                    _ => None,
                }
            }
        }
    };
}
curve!(ecdsa::Secp256k1, Secp256k1);
curve!(ecdsa::Secp256r1, P256);

fn not_ecdsa(scheme: Scheme) -> SessionError {
    SessionError::Invalid(format!("{scheme} is not ECDSA"))
}

/// The 32-byte digest an ECDSA key signs.
fn digest(message: &[u8]) -> Result<[u8; 32], SessionError> {
    sigil_crypto::scheme::ecdsa_digest(message).map_err(|e| SessionError::Invalid(e.to_string()))
}

/// The incomplete key share (the DKG output) in a stored share: stored
/// as such for a node-only set; the core of the complete share for a key
/// with its own aux info (`own_aux`: a key with an external party).
fn incomplete_share<E: Curve>(stored: &[u8], own_aux: bool) -> Result<ecdsa::IncompleteKeyShare<E>, SessionError> {
    if !own_aux {
        return serde_json::from_slice(stored).map_err(internal);
    }
    use cggmp21::key_share::Validate as _;
    let complete: ecdsa::KeyShare<E> = serde_json::from_slice(stored).map_err(internal)?;
    complete
        .into_inner()
        .core
        .validate()
        .map_err(|e| internal(e.into_error()))
}

/// The complete key share (share joined with aux info) of curve `E` in
/// `m`, the material [`Node::material`] loaded.
pub(crate) fn share_of<E: Curve>(m: &super::Material) -> Result<&ecdsa::KeyShare<E>, SessionError> {
    match m {
        super::Material::Ecdsa(e) => E::get(e).ok_or_else(wrong_material),
        _ => Err(wrong_material()),
    }
}

#[async_trait::async_trait]
impl Family for Ecdsa {
    fn operation(&self) -> Operation {
        Operation::Sign
    }

    fn uses_aux_info(&self) -> bool {
        true
    }

    fn sign_schedule(&self, s: &SignProposal) -> ExpectFn {
        if s.presignature_id.is_empty() {
            ecdsa::expects::sign
        } else {
            no_messages
        }
    }

    fn check_message(&self, _scheme: Scheme, message: &[u8], path: &[u32]) -> Result<(), String> {
        if path.len() > ecdsa::MAX_DERIVATION_DEPTH {
            return Err(format!(
                "derivation paths have at most {} levels",
                ecdsa::MAX_DERIVATION_DEPTH
            ));
        }
        sigil_crypto::scheme::ecdsa_digest(message)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// A key generation with its own aux info costs what an aux session
    /// costs, and is admitted as one.
    fn keygen_kind(&self, parties: &[u16]) -> crate::limits::SessionKind {
        if has_external(parties) {
            crate::limits::SessionKind::Aux
        } else {
            crate::limits::SessionKind::Dkg
        }
    }

    fn keygen_schedule(&self, parties: &[u16]) -> ExpectFn {
        if has_external(parties) {
            ecdsa::expects::keygen_with_aux
        } else {
            ecdsa::expects::keygen
        }
    }

    /// Keygen among a node-only set uses the set's committed aux info; a
    /// set with an external party makes the key's own aux info in the same
    /// session ([`ecdsa::keygen_with_aux`], two primes from this node's
    /// pool), and the share is stored complete (with that aux info).
    async fn keygen_part(
        &self,
        node: &Node,
        spec: SessionSpec,
        scheme: Scheme,
        _d: &DkgProposal,
        t: u16,
    ) -> Result<KeygenPart, SessionError> {
        let n = u16::try_from(spec.parties.len()).map_err(|_| SessionError::Invalid("too many parties".into()))?;
        let (me, sid) = (spec.me, spec.eid);
        if has_external(&spec.parties) {
            let primes = node.primes_for_aux().await?;
            let (share, package) = with_curve!(scheme, E => {
                let (share, aux) = session::run_heavy::<ecdsa::KeygenAuxMsg<E>, _, _, _>(&node.sessions, &node.peers, spec, |party| async move {
                    let mut rng = rand::rngs::StdRng::from_rng(rand::rngs::OsRng).map_err(|e| sigil_crypto::Error::Frost(e.to_string()))?;
                    ecdsa::keygen_with_aux::<E, _, _>(party, &sid, me, n, t, primes, &mut rng).await
                })
                .await?;
                let package = serde_json::to_vec(&ecdsa::public_package(&share, Some(&aux))).map_err(internal)?;
                let complete = ecdsa::complete(share, aux).map_err(internal)?;
                (Zeroizing::new(serde_json::to_vec(&complete).map_err(internal)?), package)
            }, other => return Err(not_ecdsa(other)));
            return Ok(KeygenPart::found(share, package));
        }
        let aux = node.load_aux(&spec.parties).await?;
        let (share, package) = with_curve!(scheme, E => {
            let share = session::run_heavy::<ecdsa::KeygenMsg<E>, _, _, _>(&node.sessions, &node.peers, spec, |party| async move {
                let mut rng = rand::rngs::OsRng;
                ecdsa::keygen::<E, _, _>(party, &sid, me, n, t, &mut rng).await
            })
            .await?;
            let public = ecdsa::public_package(&share, None);
            let bytes = Zeroizing::new(serde_json::to_vec(&share).map_err(internal)?);
            // Check now that the share and our aux info fit together.
            ecdsa::complete(share, aux).map_err(internal)?;
            (bytes, serde_json::to_vec(&public).map_err(internal)?)
        }, other => return Err(not_ecdsa(other)));
        Ok(KeygenPart::found(share, package))
    }

    /// Full CGGMP21 signing of a 32-byte digest, or (with a presignature
    /// id) the partial signature from this node's pooled presignature.
    async fn sign_part(
        &self,
        node: &Node,
        spec: SessionSpec,
        key: &LoadedKey,
        s: &SignProposal,
        signers: Vec<u16>,
    ) -> Result<SessionOutcome, SessionError> {
        let digest = digest(&s.message)?;
        if !s.presignature_id.is_empty() {
            return node.pooled_partial_part(key, &spec.parties, s, &digest).await;
        }
        let path = &s.derivation_path;
        let signature = with_curve!(key.scheme, E => {
            let m = node.material(key).await?;
            let share = share_of::<E>(&m)?;
            let (me, sid) = (spec.me, spec.eid);
            let sig = session::run_heavy::<ecdsa::SignMsg<E>, _, _, _>(&node.sessions, &node.peers, spec, |party| async move {
                let mut rng = rand::rngs::StdRng::from_rng(rand::rngs::OsRng).map_err(|e| sigil_crypto::Error::Frost(e.to_string()))?;
                ecdsa::sign::<E, _, _>(party, &sid, me, &signers, share, &digest, path, &mut rng).await
            })
            .await?;
            let mut out = vec![0u8; 64];
            sig.write_to_slice(&mut out);
            out
        }, other => return Err(not_ecdsa(other)));
        Ok(SessionOutcome {
            signature,
            ..Default::default()
        })
    }

    fn reshares(&self) -> bool {
        true
    }

    /// The external party runs the same `sigil_crypto::ecdsa` functions
    /// in `sigil-client` (`sigil_crypto::party::protocols`), with its own
    /// primes.
    fn runs_external_parties(&self) -> bool {
        true
    }

    /// The verifiable resharing in the `frost-core` suite of the key's
    /// curve (`ecdsa::reshare`); the new incomplete share goes through
    /// `key_share`'s validation with the chain code unchanged, and must fit
    /// the committed aux info of the new party set (made before the
    /// session) before it is kept.
    async fn reshare_part(
        &self,
        node: &Node,
        spec: SessionSpec,
        key: &LoadedKey,
        roles: &sigil_crypto::reshare::Roles,
        new_parties: &[u16],
        old_share: Option<Zeroizing<Vec<u8>>>,
    ) -> Result<(Option<Zeroizing<Vec<u8>>>, Vec<u8>), SessionError> {
        use ecdsa::reshare as r;
        let (me, sid) = (spec.me, spec.eid);
        let deals = roles.dealer.get(usize::from(me)).copied().flatten().is_some();
        let public: EcdsaPublic = serde_json::from_slice(&key.record.public_package).map_err(internal)?;
        let out = with_curve!(key.scheme, E => {
            let own_aux = has_external(key.parties.nodes());
            let own: Option<ecdsa::IncompleteKeyShare<E>> = old_share
                .map(|s| incomplete_share::<E>(&s, own_aux))
                .transpose()?;
            let old = if public.public_shares.is_empty() {
                // A key made before its record listed the verifying shares:
                // only an old party's own share has them.
                let s = own.as_ref().ok_or_else(|| SessionError::Invalid(
                    "this key predates resharing to new members: refresh it among its parties first".into(),
                ))?;
                r::package_of(s)
            } else {
                let shares = public
                    .public_shares
                    .iter()
                    .map(hex::decode)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(internal)?;
                r::package::<E>(&key.record.public_key, &shares, key.record.threshold)
            }
            .map_err(|e| SessionError::Invalid(e.to_string()))?;
            let share = own.as_ref().filter(|_| deals).map(r::signing_share).transpose().map_err(internal)?;
            let out = session::run::<sigil_crypto::reshare::Msg<<E as r::ReshareCurve>::Suite>, _, _, _>(
                &node.sessions,
                &node.peers,
                spec,
                |party| async move {
                    let mut rng = rand::rngs::OsRng;
                    sigil_crypto::reshare::run(party, &sid, me, roles, &old, share.as_ref(), &mut rng).await
                },
            )
            .await?;
            let next = EcdsaPublic {
                public_key: public.public_key.clone(),
                chain_code: public.chain_code.clone(),
                public_shares: r::package_shares(&out.public_key_package)
                    .map_err(internal)?
                    .iter()
                    .map(hex::encode)
                    .collect(),
                aux_fingerprint: None,
            };
            let package = serde_json::to_vec(&next).map_err(internal)?;
            let share = match roles.receiver.get(usize::from(me)).copied().flatten() {
                None => None,
                Some(j) => {
                    let chain_code: Option<[u8; 32]> = hex::decode(&public.chain_code)
                        .ok()
                        .and_then(|c| c.try_into().ok());
                    let new = r::share_from::<E>(&out, j, chain_code).map_err(internal)?;
                    let bytes = Zeroizing::new(serde_json::to_vec(&new).map_err(internal)?);
                    // The new share must fit the new set's aux info.
                    ecdsa::complete(new, node.load_aux(new_parties).await?).map_err(internal)?;
                    Some(bytes)
                }
            };
            (share, package)
        }, other => return Err(not_ecdsa(other)));
        Ok(out)
    }

    async fn load(
        &self,
        node: &Node,
        key: &LoadedKey,
        share: Zeroizing<Vec<u8>>,
    ) -> Result<super::Material, SessionError> {
        if has_external(key.parties.nodes()) {
            // Stored complete: the key's own aux info.
            let m = with_curve!(key.scheme, E => {
                E::wrap(serde_json::from_slice::<ecdsa::KeyShare<E>>(&share).map_err(internal)?)
            }, other => return Err(not_ecdsa(other)));
            return Ok(super::Material::Ecdsa(Box::new(m)));
        }
        let aux = node.load_aux(key.parties.nodes()).await?;
        let m = with_curve!(key.scheme, E => {
            let incomplete: ecdsa::IncompleteKeyShare<E> = serde_json::from_slice(&share).map_err(internal)?;
            E::wrap(ecdsa::complete(incomplete, aux).map_err(internal)?)
        }, other => return Err(not_ecdsa(other)));
        Ok(super::Material::Ecdsa(Box::new(m)))
    }

    async fn sign_pooled(
        &self,
        node: &Node,
        key: &LoadedKey,
        message: &[u8],
        path: &[u32],
        auth: &ClientAuthorization,
    ) -> Result<Option<crate::Signed>, SessionError> {
        let digest = digest(message)?;
        let Some((signature, signers)) = node.sign_from_pool(key, &digest, path, auth).await? else {
            return Ok(None);
        };
        metrics::counter!("sigil_presignatures_used_total").increment(1);
        Ok(Some(crate::Signed {
            signature,
            signers,
            extras: SignatureExtras::default(),
        }))
    }

    fn signature_extras(
        &self,
        key: &LoadedKey,
        message: &[u8],
        path: &[u32],
        signature: &[u8],
    ) -> Result<SignatureExtras, String> {
        let digest = sigil_crypto::scheme::ecdsa_digest(message).map_err(|e| e.to_string())?;
        let public_key = if path.is_empty() {
            key.record.public_key.clone()
        } else {
            key.scheme
                .derive_public_key(&key.record.public_package, path)
                .map_err(|e| e.to_string())?
        };
        let (rid, der) = sigil_crypto::scheme::ecdsa_recovery_and_der(key.scheme, &public_key, &digest, signature)
            .map_err(|e| e.to_string())?;
        Ok(SignatureExtras {
            recovery_id: Some(rid),
            der: Some(hex::encode(der)),
            v: (key.scheme == Scheme::EcdsaSecp256k1).then_some(27 + rid),
        })
    }

    fn view_extras(&self, scheme: Scheme, record: &sigil_store::KeyRecord) -> ViewExtras {
        let secp = scheme == Scheme::EcdsaSecp256k1;
        ViewExtras {
            public_key: hex::encode(&record.public_key),
            public_key_pem: scheme.public_key_pem(&record.public_key).ok(),
            ethereum_address: secp
                .then(|| sigil_crypto::scheme::ethereum_address(&record.public_key).ok())
                .flatten(),
            xpub: secp
                .then(|| sigil_crypto::scheme::xpub(&record.public_package, &[]).ok())
                .flatten(),
            n: None,
        }
    }
}
