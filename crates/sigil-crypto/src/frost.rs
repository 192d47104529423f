//! FROST (RFC 9591) distributed key generation and two-round signing as
//! `round-based` protocols, generic over the ZF `frost-core` ciphersuite.

use std::collections::BTreeMap;

use frost_core::{Ciphersuite, Identifier};
use futures::SinkExt;
use rand_core::{CryptoRng, RngCore};
use round_based::rounds_router::simple_store::{RoundInput, RoundMsgs};
use round_based::rounds_router::RoundsRouter;
use round_based::{Delivery, MessageType, Mpc, MpcParty, Outgoing, ProtocolMessage};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{Error, PartyIndex, SessionId};

/// The FROST identifier of the party at 0-based index `i`: `i + 1`.
///
/// This is the only place where Sigil's 0-based party indices meet FROST's
/// 1-based identifiers.
///
/// # Errors
/// [`Error::InvalidParameters`] for `i == u16::MAX` (no identifier exists).
pub fn identifier<C: Ciphersuite>(i: PartyIndex) -> Result<Identifier<C>, Error> {
    let one_based = i
        .checked_add(1)
        .ok_or_else(|| Error::InvalidParameters(format!("party index {i} out of range")))?;
    Identifier::try_from(one_based).map_err(|e| Error::Frost(e.to_string()))
}

/// The inverse of [`identifier`] over the first `n` parties.
fn index_of<C: Ciphersuite>(id: &Identifier<C>, n: u16) -> Option<PartyIndex> {
    (0..n).find(|&i| identifier::<C>(i).ok().as_ref() == Some(id))
}

/// Maps FROST's blame to session party indices through `key_index`, the map
/// from key-level identifier to session index.
fn blame<C: Ciphersuite>(e: frost_core::Error<C>, to_session: impl Fn(&Identifier<C>) -> Option<PartyIndex>) -> Error {
    let culprits: Vec<PartyIndex> = e.culprits().iter().filter_map(&to_session).collect();
    match e {
        frost_core::Error::InvalidSecretShare { .. } => Error::InvalidSecretShare { culprits },
        frost_core::Error::InvalidProofOfKnowledge { .. } => Error::InvalidProofOfKnowledge { culprits },
        frost_core::Error::InvalidSignatureShare { .. } => Error::InvalidSignatureShare { culprits },
        other => Error::Frost(other.to_string()),
    }
}

/// Distributed key generation: the two-round Pedersen DKG with proofs of
/// knowledge of RFC 9591 Appendix C (`frost_core::keys::dkg`), plus an echo
/// of the round-1 transcript hash for broadcast consistency.
pub mod dkg {
    use super::*;
    use frost_core::keys::dkg::{round1, round2};
    use frost_core::keys::{KeyPackage, PublicKeyPackage};

    /// Messages of the DKG, one variant a round (round numbers 0 and 1).
    #[derive(Clone, Debug, Serialize, Deserialize, ProtocolMessage)]
    #[serde(bound = "")]
    pub enum Msg<C: Ciphersuite> {
        /// Round 0, broadcast: commitment and proof of knowledge.
        Round1(Round1<C>),
        /// Round 1, point to point: the secret share for the recipient.
        Round2(Round2<C>),
    }

    /// Round-1 message: the party's `round1::Package` (commitment to its
    /// polynomial $\phi_i$ and proof of knowledge $\sigma_i$).
    #[derive(Clone, Debug, Serialize, Deserialize)]
    #[serde(bound = "")]
    pub struct Round1<C: Ciphersuite>(pub round1::Package<C>);

    /// Round-2 message: the share $f_i(\ell)$ for recipient $\ell$, and the
    /// sender's hash of the whole round-1 transcript (the echo).
    #[derive(Clone, Debug, Serialize, Deserialize)]
    #[serde(bound = "")]
    pub struct Round2<C: Ciphersuite> {
        /// The secret share for the recipient. Private: send p2p only.
        pub package: round2::Package<C>,
        /// SHA-256 of the round-1 transcript as the sender saw it.
        pub echo: [u8; 32],
    }

    /// What a party keeps after a successful DKG.
    #[derive(Debug)]
    pub struct Output<C: Ciphersuite> {
        /// The party's long-lived secret share. Secret: store sealed only.
        pub key_package: KeyPackage<C>,
        /// The group public key and every party's verifying share. Public.
        pub public_key_package: PublicKeyPackage<C>,
    }

    /// Which message `me` expects from `from` in `round`, if any. The node's
    /// transport drops anything else before it reaches the protocol.
    pub fn expects(round: u16, from: PartyIndex, me: PartyIndex, n: u16) -> Option<MessageType> {
        if from == me || from >= n {
            return None;
        }
        match round {
            0 => Some(MessageType::Broadcast),
            1 => Some(MessageType::P2P),
            _ => None,
        }
    }

    /// Runs the DKG as party `i` of `n` with threshold `t` (signers needed).
    ///
    /// # Errors
    /// - [`Error::InvalidParameters`] if `t < 2`, `t > n` or `i >= n`;
    /// - [`Error::InvalidProofOfKnowledge`] / [`Error::InvalidSecretShare`]
    ///   naming the culprits;
    /// - [`Error::InconsistentBroadcast`] if the echoes disagree;
    /// - [`Error::Transport`] if the delivery fails.
    pub async fn run<C, M, R>(
        party: M,
        session_id: &SessionId,
        i: PartyIndex,
        n: u16,
        t: u16,
        rng: &mut R,
    ) -> Result<Output<C>, Error>
    where
        C: Ciphersuite + Send + 'static,
        M: Mpc<ProtocolMessage = Msg<C>>,
        R: RngCore + CryptoRng,
    {
        if t < 2 || t > n || i >= n {
            return Err(Error::InvalidParameters(format!(
                "need 2 <= t <= n and i < n, got t={t}, n={n}, i={i}"
            )));
        }
        let MpcParty { delivery, .. } = party.into_party();
        let (incoming, mut outgoing) = delivery.split();
        let mut rounds = RoundsRouter::<Msg<C>>::builder();
        let round1 = rounds.add_round(RoundInput::<Round1<C>>::broadcast(i, n));
        let round2 = rounds.add_round(RoundInput::<Round2<C>>::p2p(i, n));
        let mut rounds = rounds.listen(incoming);

        let me = identifier::<C>(i)?;
        let to_session = |id: &Identifier<C>| index_of(id, n);
        // Round 1, RFC 9591 Appendix C steps 1-5.
        let (secret1, my_round1) =
            frost_core::keys::dkg::part1::<C, _>(me, n, t, &mut *rng).map_err(|e| blame(e, to_session))?;
        outgoing
            .send(Outgoing::broadcast(Msg::Round1(Round1(my_round1.clone()))))
            .await
            .map_err(Error::transport)?;
        let received = rounds.complete(round1).await.map_err(Error::transport)?;
        let mut round1_packages = BTreeMap::new();
        for (j, _, msg) in received.into_iter_indexed() {
            round1_packages.insert(identifier::<C>(j)?, msg.0);
        }
        let echo = transcript_hash(session_id, me, &my_round1, &round1_packages)?;

        // Round 2, steps 1-2: verify proofs, send shares.
        let (secret2, shares) =
            frost_core::keys::dkg::part2(secret1, &round1_packages).map_err(|e| blame(e, to_session))?;
        for (id, package) in shares {
            let j = index_of(&id, n).ok_or_else(|| Error::Frost("share for unknown identifier".into()))?;
            outgoing
                .send(Outgoing::p2p(j, Msg::Round2(Round2 { package, echo })))
                .await
                .map_err(Error::transport)?;
        }
        let received = rounds.complete(round2).await.map_err(Error::transport)?;
        let mut round2_packages = BTreeMap::new();
        let mut disagree = Vec::new();
        for (j, _, msg) in received.into_iter_indexed() {
            if msg.echo != echo {
                disagree.push(j);
            }
            round2_packages.insert(identifier::<C>(j)?, msg.package);
        }
        if !disagree.is_empty() {
            return Err(Error::InconsistentBroadcast { parties: disagree });
        }
        // Round 2, step 3: verify shares against commitments, derive keys.
        let (key_package, public_key_package) =
            frost_core::keys::dkg::part3(&secret2, &round1_packages, &round2_packages)
                .map_err(|e| blame(e, to_session))?;
        Ok(Output {
            key_package,
            public_key_package,
        })
    }

    /// SHA-256 over the session id and every party's round-1 package in
    /// identifier order, our own included.
    fn transcript_hash<C: Ciphersuite>(
        session_id: &SessionId,
        me: Identifier<C>,
        mine: &round1::Package<C>,
        others: &BTreeMap<Identifier<C>, round1::Package<C>>,
    ) -> Result<[u8; 32], Error> {
        let mut all: BTreeMap<Identifier<C>, &round1::Package<C>> = others.iter().map(|(k, v)| (*k, v)).collect();
        all.insert(me, mine);
        let mut h = Sha256::new();
        h.update(b"sigil/frost-dkg/echo/v1");
        h.update(session_id);
        for (id, package) in all {
            let bytes = package.serialize().map_err(|e| Error::Frost(e.to_string()))?;
            h.update(id.serialize());
            h.update((bytes.len() as u64).to_be_bytes());
            h.update(&bytes);
        }
        Ok(h.finalize().into())
    }
}

/// Two-round FROST signing (RFC 9591 §5.1-§5.3). Party 0 of the session is
/// the aggregator: the others send it their signature shares, it verifies
/// each share (cheater detection, §5.4) and aggregates.
pub mod sign {
    use super::*;
    use frost_core::keys::{KeyPackage, PublicKeyPackage};
    use frost_core::round1::SigningCommitments;
    use frost_core::round2::SignatureShare;
    use frost_core::{Signature, SigningPackage};

    /// Messages of signing, one variant a round (round numbers 0 and 1).
    #[derive(Clone, Debug, Serialize, Deserialize, ProtocolMessage)]
    #[serde(bound = "")]
    pub enum Msg<C: Ciphersuite> {
        /// Round 0, broadcast: the signer's nonce commitments
        /// $(D_i, E_i)$.
        Round1(Round1<C>),
        /// Round 1, p2p to party 0: the signature share $z_i$.
        Round2(Round2<C>),
    }

    /// Round-1 message: nonce commitments (RFC 9591 §5.1 `commit`).
    #[derive(Clone, Debug, Serialize, Deserialize)]
    #[serde(bound = "")]
    pub struct Round1<C: Ciphersuite>(pub SigningCommitments<C>);

    /// Round-2 message: the signature share (RFC 9591 §5.2 `sign`).
    #[derive(Clone, Debug, Serialize, Deserialize)]
    #[serde(bound = "")]
    pub struct Round2<C: Ciphersuite>(pub SignatureShare<C>);

    /// Which message `me` expects from `from` in `round`, if any.
    pub fn expects(round: u16, from: PartyIndex, me: PartyIndex, n: u16) -> Option<MessageType> {
        if from == me || from >= n {
            return None;
        }
        match round {
            0 => Some(MessageType::Broadcast),
            1 if me == 0 => Some(MessageType::P2P),
            _ => None,
        }
    }

    /// Signs `message` as session party `i`.
    ///
    /// `signers` lists, in session order, the key-level party index of each
    /// signer (the position of its node in the key's party list); its length
    /// is the session's `n` and must be at least the key's threshold.
    ///
    /// Returns `Some(signature)` at party 0 (the aggregator; the signature
    /// is verified against the group key before it is returned) and `None`
    /// elsewhere.
    ///
    /// Security: the nonces are drawn fresh from `rng` and dropped (zeroized
    /// by `frost-core`) when this function returns; they are never stored.
    ///
    /// # Errors
    /// [`Error::InvalidSignatureShare`] naming cheating signers (session
    /// indices); [`Error::InvalidParameters`] for a bad signer set;
    /// [`Error::Transport`].
    pub async fn run<C, M, R>(
        party: M,
        i: PartyIndex,
        signers: &[PartyIndex],
        key_package: &KeyPackage<C>,
        public_key_package: &PublicKeyPackage<C>,
        message: &[u8],
        rng: &mut R,
    ) -> Result<Option<Signature<C>>, Error>
    where
        C: Ciphersuite + Send + 'static,
        M: Mpc<ProtocolMessage = Msg<C>>,
        R: RngCore + CryptoRng,
    {
        let (n, ids) = signer_ids(i, signers, key_package)?;
        let to_session = |id: &Identifier<C>| ids.iter().position(|x| x == id).and_then(|p| u16::try_from(p).ok());

        let MpcParty { delivery, .. } = party.into_party();
        let (incoming, mut outgoing) = delivery.split();
        let mut rounds = RoundsRouter::<Msg<C>>::builder();
        let round1 = rounds.add_round(RoundInput::<Round1<C>>::broadcast(i, n));
        let round2 = (i == 0).then(|| rounds.add_round(RoundInput::<Round2<C>>::p2p(i, n)));
        let mut rounds = rounds.listen(incoming);

        // Round 1 (§5.1): fresh nonces, broadcast commitments.
        let (nonces, my_commitments) = frost_core::round1::commit(key_package.signing_share(), rng);
        outgoing
            .send(Outgoing::broadcast(Msg::Round1(Round1(my_commitments))))
            .await
            .map_err(Error::transport)?;
        let received = rounds.complete(round1).await.map_err(Error::transport)?;
        let commitments = by_identifier(&ids, (*key_package.identifier(), my_commitments), received, |m| m.0)?;
        let signing_package = SigningPackage::new(commitments, message);

        // Round 2 (§5.2): our share.
        let my_share =
            frost_core::round2::sign(&signing_package, &nonces, key_package).map_err(|e| blame(e, to_session))?;
        drop(nonces);
        let Some(round2) = round2 else {
            outgoing
                .send(Outgoing::p2p(0, Msg::Round2(Round2(my_share))))
                .await
                .map_err(Error::transport)?;
            return Ok(None);
        };
        let received = rounds.complete(round2).await.map_err(Error::transport)?;
        let shares = by_identifier(&ids, (*key_package.identifier(), my_share), received, |m| m.0)?;
        // §5.3 aggregate, with §5.4 cheater detection naming every culprit.
        // `aggregate_custom` verifies the aggregate signature against the
        // group key and returns it only if it verifies (on failure it checks
        // every share to name the culprits), so no second verification here.
        let signature = frost_core::aggregate_custom(
            &signing_package,
            &shares,
            public_key_package,
            frost_core::CheaterDetection::AllCheaters,
        )
        .map_err(|e| blame(e, to_session))?;
        Ok(Some(signature))
    }

    /// The session size `n` and every signer's identifier in session
    /// order, after checking the signer set: no more than `u16::MAX`
    /// signers, at least the key's threshold, none twice, and our slot `i`
    /// holding the identifier of our key share.
    fn signer_ids<C: Ciphersuite>(
        i: PartyIndex,
        signers: &[PartyIndex],
        key_package: &KeyPackage<C>,
    ) -> Result<(u16, Vec<Identifier<C>>), Error> {
        let n = u16::try_from(signers.len()).map_err(|_| Error::InvalidParameters("too many signers".into()))?;
        if usize::from(*key_package.min_signers()) > signers.len() {
            return Err(Error::InvalidParameters(format!(
                "{} signers given, the key needs {}",
                signers.len(),
                key_package.min_signers()
            )));
        }
        let my_key_index = *signers
            .get(usize::from(i))
            .ok_or_else(|| Error::InvalidParameters(format!("party index {i} >= n = {n}")))?;
        if identifier::<C>(my_key_index)? != *key_package.identifier() {
            return Err(Error::InvalidParameters(
                "our key share does not belong to our signer slot".into(),
            ));
        }
        let mut ids = Vec::with_capacity(signers.len());
        for &k in signers {
            let id = identifier::<C>(k)?;
            if ids.contains(&id) {
                return Err(Error::InvalidParameters(format!("signer {k} listed twice")));
            }
            ids.push(id);
        }
        Ok((n, ids))
    }

    /// Every signer's message of a round by identifier: ours (`own`) and
    /// the received ones, whose session index `j` maps to `ids[j]`.
    fn by_identifier<C: Ciphersuite, T, V>(
        ids: &[Identifier<C>],
        own: (Identifier<C>, V),
        received: RoundMsgs<T>,
        value: impl Fn(T) -> V,
    ) -> Result<BTreeMap<Identifier<C>, V>, Error> {
        let mut all = BTreeMap::from([own]);
        for (j, _, msg) in received.into_iter_indexed() {
            let id = *ids
                .get(usize::from(j))
                .ok_or_else(|| Error::Frost("sender out of range".into()))?;
            all.insert(id, value(msg));
        }
        Ok(all)
    }
}
