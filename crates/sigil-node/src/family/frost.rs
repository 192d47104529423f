//! FROST in the node (RFC 9591 via ZF `frost-core` 3.x): Ed25519,
//! secp256k1 with BIP-340 (Taproot) conventions, and P-256.
//!
//! Key generation is the Pedersen DKG of RFC 9591 Appendix C (three
//! rounds in `sigil_crypto::frost::dkg`); the share is stored as
//! `frost-core`'s serialized `KeyPackage` and the public package as its
//! serialized `PublicKeyPackage`. Signing is the two-round protocol of RFC
//! 9591 section 5 among `t` signers, aggregated by party 0.

use sigil_crypto::frost::{dkg, sign};
use sigil_crypto::reshare;
use sigil_crypto::scheme::frost_core::keys::{KeyPackage, PublicKeyPackage};
use sigil_crypto::scheme::frost_core::Ciphersuite;
use sigil_crypto::scheme::{frost_ed25519, frost_p256, frost_secp256k1_tr};
use sigil_crypto::{with_ciphersuite, Scheme};
use sigil_proto::peer::{DkgProposal, SessionOutcome, SignProposal};
use zeroize::Zeroizing;

use super::{wrong_material, Family, KeygenPart, LoadedKey, Operation};
use crate::error::SessionError;
use crate::session::{self, ExpectFn, SessionSpec};
use crate::{internal, Node};

/// The FROST family.
pub(crate) struct Frost;

/// A FROST key's share and public package, deserialized once (zeroized on
/// drop by `frost-core`).
pub(crate) struct Loaded<C: Ciphersuite> {
    key_package: KeyPackage<C>,
    public: PublicKeyPackage<C>,
}

/// [`Loaded`] for each suite.
pub(crate) enum Material {
    Ed25519(Loaded<frost_ed25519::Ed25519Sha512>),
    Secp256k1Tr(Loaded<frost_secp256k1_tr::Secp256K1Sha256TR>),
    P256(Loaded<frost_p256::P256Sha256>),
}

/// Maps a suite to its [`Material`] variant.
trait Suite: Ciphersuite {
    fn wrap(l: Loaded<Self>) -> Material;
    fn get(m: &Material) -> Option<&Loaded<Self>>;
}

macro_rules! suite {
    ($c:ty, $v:ident) => {
        impl Suite for $c {
            fn wrap(l: Loaded<Self>) -> Material {
                Material::$v(l)
            }
            fn get(m: &Material) -> Option<&Loaded<Self>> {
                match m {
                    Material::$v(l) => Some(l),
                    _ => None,
                }
            }
        }
    };
}
suite!(frost_ed25519::Ed25519Sha512, Ed25519);
suite!(frost_secp256k1_tr::Secp256K1Sha256TR, Secp256k1Tr);
suite!(frost_p256::P256Sha256, P256);

fn not_frost(scheme: Scheme) -> SessionError {
    internal(format!("{scheme} is not a FROST scheme"))
}

#[async_trait::async_trait]
impl Family for Frost {
    fn operation(&self) -> Operation {
        Operation::Sign
    }

    fn keygen_schedule(&self, _parties: &[u16]) -> ExpectFn {
        dkg::expects
    }

    fn sign_schedule(&self, _s: &SignProposal) -> ExpectFn {
        sign::expects
    }

    fn check_message(&self, scheme: Scheme, _message: &[u8], path: &[u32]) -> Result<(), String> {
        if path.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{scheme} keys have no derivation; derivation_path is for ECDSA keys"
            ))
        }
    }

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
        let (share, package) = with_ciphersuite!(scheme, C => {
            let out = session::run::<dkg::Msg<C>, _, _, _>(&node.sessions, &node.peers, spec, |party| async move {
                let mut rng = rand::rngs::OsRng;
                dkg::run::<C, _, _>(party, &sid, me, n, t, &mut rng).await
            })
            .await?;
            (
                Zeroizing::new(out.key_package.serialize().map_err(internal)?),
                out.public_key_package.serialize().map_err(internal)?,
            )
        }, other => return Err(not_frost(other)));
        Ok(KeygenPart::found(share, package))
    }

    async fn sign_part(
        &self,
        node: &Node,
        spec: SessionSpec,
        key: &LoadedKey,
        s: &SignProposal,
        signers: Vec<u16>,
    ) -> Result<SessionOutcome, SessionError> {
        let material = node.material(key).await?;
        let super::Material::Frost(m) = &*material else {
            return Err(wrong_material());
        };
        let me = spec.me;
        let message = &s.message;
        let signature = with_ciphersuite!(key.scheme, C => {
            let l = C::get(m).ok_or_else(wrong_material)?;
            let (kp, pkp) = (&l.key_package, &l.public);
            let sig = session::run::<sign::Msg<C>, _, _, _>(&node.sessions, &node.peers, spec, |party| async move {
                let mut rng = rand::rngs::OsRng;
                sign::run::<C, _, _>(party, me, &signers, kp, pkp, message, &mut rng).await
            })
            .await?;
            match sig {
                Some(sig) => sig.serialize().map_err(internal)?,
                None => Vec::new(),
            }
        }, other => return Err(not_frost(other)));
        Ok(SessionOutcome {
            signature,
            ..Default::default()
        })
    }

    fn reshares(&self) -> bool {
        true
    }

    /// The external party runs the same `sigil_crypto::frost` functions
    /// in `sigil-client`.
    fn runs_external_parties(&self) -> bool {
        true
    }

    /// The verifiable resharing of `sigil_crypto::reshare` in the key's
    /// own suite; the new `KeyPackage` is built with the public
    /// constructor (a `frost-secp256k1-tr` key keeps its DKG tweak: the
    /// shares are of the tweaked secret, and `post_dkg` is not applied
    /// again).
    async fn reshare_part(
        &self,
        node: &Node,
        spec: SessionSpec,
        key: &LoadedKey,
        roles: &sigil_crypto::reshare::Roles,
        _new_parties: &[u16],
        old_share: Option<Zeroizing<Vec<u8>>>,
    ) -> Result<(Option<Zeroizing<Vec<u8>>>, Vec<u8>), SessionError> {
        let (me, sid, t) = (spec.me, spec.eid, roles.new_t);
        let deals = roles.dealer.get(usize::from(me)).copied().flatten().is_some();
        let dealer_share = old_share.filter(|_| deals);
        let out = with_ciphersuite!(key.scheme, C => {
            let old = PublicKeyPackage::<C>::deserialize(&key.record.public_package).map_err(internal)?;
            let share = dealer_share
                .map(|s| KeyPackage::<C>::deserialize(&s).map(|kp| *kp.signing_share()))
                .transpose()
                .map_err(internal)?;
            let out = session::run::<reshare::Msg<C>, _, _, _>(&node.sessions, &node.peers, spec, |party| async move {
                let mut rng = rand::rngs::OsRng;
                reshare::run::<C, _, _>(party, &sid, me, roles, &old, share.as_ref(), &mut rng).await
            })
            .await?;
            let package = out.public_key_package.serialize().map_err(internal)?;
            let share = match out.share {
                None => None,
                Some((id, share)) => {
                    let verifying_share = *out
                        .public_key_package
                        .verifying_shares()
                        .get(&id)
                        .ok_or_else(|| internal("no verifying share of ours"))?;
                    let kp = KeyPackage::new(id, share, verifying_share, *out.public_key_package.verifying_key(), t);
                    Some(Zeroizing::new(kp.serialize().map_err(internal)?))
                }
            };
            (share, package)
        }, other => return Err(not_frost(other)));
        Ok(out)
    }

    async fn load(
        &self,
        _node: &Node,
        key: &LoadedKey,
        share: Zeroizing<Vec<u8>>,
    ) -> Result<super::Material, SessionError> {
        let m = with_ciphersuite!(key.scheme, C => C::wrap(Loaded {
            key_package: KeyPackage::<C>::deserialize(&share).map_err(internal)?,
            public: PublicKeyPackage::<C>::deserialize(&key.record.public_package).map_err(internal)?,
        }), other => return Err(not_frost(other)));
        Ok(super::Material::Frost(Box::new(m)))
    }
}
