//! The external party's key generation and signing for each scheme that
//! can have one, in this one place: the very functions the nodes run
//! (`crate::frost::dkg`/`sign`, `crate::ecdsa::keygen_with_aux`/`sign`),
//! driven by [`PartySession::run`].
//!
//! The party's share has the encoding a node stores for the same scheme:
//! FROST, `frost-core`'s serialized `KeyPackage`; ECDSA, the JSON of the
//! complete `cggmp21` key share (its aux info included: a key with an
//! external party has its own aux info, made in the key generation
//! session). The public package is the one the key record attests.
//!
//! ECDSA needs `cggmp21` and GMP, so this module (unlike the FROST party
//! alone) cannot build for `wasm32-unknown-unknown`.

use rand::SeedableRng;
use zeroize::Zeroizing;

use super::{PartyError, PartySession, Relay};
use crate::scheme::frost_core::keys::{KeyPackage, PublicKeyPackage};
use crate::{ecdsa, frost, with_ciphersuite, with_curve, Scheme, SessionId};

/// A key as the party holds it: its share (secret) and the key's public
/// package, in the node's encodings for the scheme.
pub struct KeyMaterial {
    /// The share. Secret: store sealed only.
    pub share: Zeroizing<Vec<u8>>,
    /// The public package (FROST: serialized `PublicKeyPackage`; ECDSA:
    /// `EcdsaPublic` JSON with the aux fingerprint).
    pub package: Vec<u8>,
}

fn invalid(e: impl std::fmt::Display) -> PartyError {
    PartyError::Invalid(e.to_string())
}

fn heavy_rng() -> Result<rand::rngs::StdRng, crate::Error> {
    rand::rngs::StdRng::from_rng(rand::rngs::OsRng).map_err(|e| crate::Error::Frost(e.to_string()))
}

/// The party's part of a key generation of `scheme` with threshold `t`
/// under execution id `eid`, over `relay`. ECDSA needs the party's own
/// two 1536-bit safe `primes` for the key's aux info
/// ([`ecdsa::generate_primes`], or a file of them); FROST needs none.
///
/// # Errors
/// [`PartyError::Invalid`] for a scheme without external parties or ECDSA
/// without primes; the session's errors ([`PartySession::run`]).
pub async fn keygen<R: Relay>(
    session: &PartySession,
    relay: &R,
    scheme: Scheme,
    eid: &SessionId,
    t: u16,
    primes: Option<ecdsa::PregeneratedPrimes>,
) -> Result<KeyMaterial, PartyError> {
    let (i, n) = (session.index, session.n());
    with_ciphersuite!(scheme, C => {
        let out = session
            .run(relay, |party| async move {
                frost::dkg::run::<C, _, _>(party, eid, i, n, t, &mut rand::rngs::OsRng).await
            })
            .await?;
        Ok(KeyMaterial {
            share: Zeroizing::new(out.key_package.serialize().map_err(invalid)?),
            package: out.public_key_package.serialize().map_err(invalid)?,
        })
    }, other => with_curve!(other, E => {
        let primes = primes.ok_or_else(|| invalid("an ECDSA party needs its two safe primes for aux info"))?;
        let (share, aux) = session
            .run(relay, |party| async move {
                let mut rng = heavy_rng()?;
                ecdsa::keygen_with_aux::<E, _, _>(party, eid, i, n, t, primes, &mut rng).await
            })
            .await?;
        let package = serde_json::to_vec(&ecdsa::public_package(&share, Some(&aux))).map_err(invalid)?;
        let complete = ecdsa::complete(share, aux).map_err(invalid)?;
        Ok(KeyMaterial {
            share: Zeroizing::new(serde_json::to_vec(&complete).map_err(invalid)?),
            package,
        })
    }, other => Err(invalid(format!("{other} keys cannot have an external party")))))
}

/// Checks that `key.share` is the share of session slot `index` of the key
/// whose public package is `key.package` (a user share, received sealed,
/// before it is kept): FROST, its identifier is the slot's and its
/// verifying share the one the package lists, under the package's key;
/// ECDSA, its index is the slot's and the package its complete share
/// gives (aux fingerprint included) is `key.package`.
///
/// # Errors
/// [`PartyError::Invalid`] naming what does not fit.
pub fn check_share(scheme: Scheme, key: &KeyMaterial, index: u16) -> Result<(), PartyError> {
    let fits = with_ciphersuite!(scheme, C => {
        let kp = KeyPackage::<C>::deserialize(&key.share).map_err(|e| invalid(format!("share: {e}")))?;
        let pkp = PublicKeyPackage::<C>::deserialize(&key.package).map_err(|e| invalid(format!("public package: {e}")))?;
        let id = frost::identifier::<C>(index).map_err(invalid)?;
        *kp.identifier() == id
            && pkp.verifying_shares().get(&id) == Some(kp.verifying_share())
            && kp.verifying_key() == pkp.verifying_key()
    }, other => with_curve!(other, E => {
        let share: ecdsa::KeyShare<E> = serde_json::from_slice(&key.share).map_err(|e| invalid(format!("share: {e}")))?;
        let package = serde_json::to_vec(&ecdsa::public_package(&share.core, Some(&share.aux))).map_err(invalid)?;
        share.core.i == index && package == key.package
    }, other => return Err(invalid(format!("{other} keys have no external party")))));
    if fits {
        Ok(())
    } else {
        Err(invalid("the share does not belong to the key's external slot"))
    }
}

/// The party's part of a signature of `message` with `key` (a key of
/// `scheme`) among `signers` (the key-level indices of the session's
/// parties, in session order), under execution id `eid`; ECDSA signs the
/// 32-byte digest `message` at BIP-32 `path`. Returns the signature when
/// this party computes it (ECDSA: every signer; FROST: the aggregator
/// only, which is never the external party).
///
/// # Errors
/// [`PartyError::Invalid`] for a malformed key, a path on a FROST key or
/// a message that is not a digest; the session's errors.
#[allow(clippy::too_many_arguments)] // the protocol's inputs, each needed
pub async fn sign<R: Relay>(
    session: &PartySession,
    relay: &R,
    scheme: Scheme,
    eid: &SessionId,
    key: &KeyMaterial,
    signers: &[u16],
    message: &[u8],
    path: &[u32],
) -> Result<Option<Vec<u8>>, PartyError> {
    let i = session.index;
    with_ciphersuite!(scheme, C => {
        if !path.is_empty() {
            return Err(invalid(format!("{scheme} keys have no derivation")));
        }
        let kp = KeyPackage::<C>::deserialize(&key.share).map_err(|e| invalid(format!("share: {e}")))?;
        let pkp = PublicKeyPackage::<C>::deserialize(&key.package).map_err(|e| invalid(format!("public package: {e}")))?;
        let (kp, pkp) = (&kp, &pkp);
        let sig = session
            .run(relay, |party| async move {
                frost::sign::run::<C, _, _>(party, i, signers, kp, pkp, message, &mut rand::rngs::OsRng).await
            })
            .await?;
        sig.map(|s| s.serialize().map_err(invalid)).transpose()
    }, other => with_curve!(other, E => {
        let digest = crate::scheme::ecdsa_digest(message).map_err(invalid)?;
        let share: ecdsa::KeyShare<E> = serde_json::from_slice(&key.share).map_err(|e| invalid(format!("share: {e}")))?;
        let share = &share;
        let sig = session
            .run(relay, |party| async move {
                let mut rng = heavy_rng()?;
                ecdsa::sign::<E, _, _>(party, eid, i, signers, share, &digest, path, &mut rng).await
            })
            .await?;
        let mut out = vec![0u8; 64];
        sig.write_to_slice(&mut out);
        Ok(Some(out))
    }, other => Err(invalid(format!("{other} keys cannot have an external party")))))
}
