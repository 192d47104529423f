//! Verifiable secret redistribution of a Shamir-shared key to a new
//! committee and threshold, with the group public key unchanged: Wong,
//! Wang and Wing, "Verifiable Secret Redistribution for Archive Systems"
//! (IEEE SISW 2002, section 4; after Desmedt and Jajodia 1997), over any
//! `frost-core` ciphersuite's group. FROST keys use their own suite;
//! CGGMP21 ECDSA keys use the suite of the same curve
//! ([`crate::ecdsa::reshare`]).
//!
//! Setting: the old key is shared with threshold `t` among the old
//! committee `C` (party `k` holds `s_k = f(x_k)`, `x_k = k + 1`, and
//! everyone knows the verifying shares `Y_k = s_k G` from the attested
//! public key package). A fixed quorum `Q` of at least `t` old parties
//! (the *dealers*) re-shares to the new committee `C'` of `n'` parties
//! with threshold `t'` (the *receivers*). A node may be both; it then plays
//! both roles in one session party, and its sub-share to itself never
//! leaves it.
//!
//! Steps (WWW02 section 4, with the names used here):
//! 1. Each dealer `k` in `Q` picks a random polynomial `g_k` of degree
//!    `t' - 1` with `g_k(0) = s_k` and broadcasts the Feldman commitments
//!    `C_{k,c} = a_{k,c} G` to its coefficients (round 0, [`Commit`]).
//!    `frost_core::keys::split` does the sharing.
//! 2. It sends receiver `j` the sub-share `s_{k,j} = g_k(x'_j)` with
//!    `x'_j = j + 1` (round 1, [`Deal`], point to point), and every party
//!    sends the hash of all round-0 commitments it saw (the echo).
//! 3. Each receiver checks, per dealer: exactly `t'` commitments; the
//!    constant term `C_{k,0}` equals the dealer's *old* verifying share
//!    `Y_k` (this pins the secret: a dealer cannot re-share anything but
//!    its share, and one that tries is named); its sub-share against the
//!    commitments (`SecretShare::verify`); that every party's echo equals
//!    its own (all receivers saw the same commitments).
//! 4. It combines with the Lagrange coefficients `λ_k` of `Q` at 0:
//!    `s'_j = Σ λ_k s_{k,j}`; everyone derives the new commitments
//!    `C'_c = Σ λ_k C_{k,c}`, hence every new verifying share and the
//!    group key `C'_0 = Σ λ_k Y_k`, which must be the old group key.
//!
//! Refresh is the special case `C' = C`, `t' = t`: the new polynomial
//! `Σ λ_k g_k` is fresh and random apart from its constant term, so old
//! and new shares are unrelated (proactive security).
//!
//! Security notes:
//! - Secrecy holds against `t - 1` corrupt old and `t' - 1` corrupt new
//!   parties (WWW02 Theorem 2). Sub-shares travel point to point only (the
//!   node sends them over mTLS).
//! - A cheating dealer is named (`culprits`) and the run fails: the node
//!   retries with a quorum without it. Nothing is complained about or
//!   repaired in-protocol.
//! - The group key is unchanged by construction; `frost-secp256k1-tr`
//!   keys stay tweaked as at DKG (`post_dkg` is not applied again).

use std::collections::{BTreeMap, BTreeSet};

use frost_core::keys::{
    IdentifierList, PublicKeyPackage, SecretShare, SigningShare, VerifiableSecretSharingCommitment, VerifyingShare,
};
use frost_core::{Ciphersuite, Field, Group, Identifier, SigningKey};
use futures::SinkExt;
use rand_core::{CryptoRng, RngCore};
use round_based::rounds_router::simple_store::{RoundInput, RoundMsgs};
use round_based::rounds_router::RoundsRouter;
use round_based::{Delivery, MessageType, Mpc, MpcParty, Outgoing, ProtocolMessage};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::frost::identifier;
use crate::{Error, PartyIndex, SessionId};

type Scalar<C> = <<<C as Ciphersuite>::Group as Group>::Field as Field>::Scalar;
type Element<C> = <<C as Ciphersuite>::Group as Group>::Element;

/// Who plays which role in a reshare session of `n` parties.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Roles {
    /// Per session party: its old key-level index when it deals (is in
    /// `Q`), else `None`.
    pub dealer: Vec<Option<PartyIndex>>,
    /// Per session party: its new key-level index when it receives (is in
    /// `C'`), else `None`. The new indices are exactly `0..n'`.
    pub receiver: Vec<Option<PartyIndex>>,
    /// The new threshold `t'`.
    pub new_t: u16,
}

impl Roles {
    /// The session size `n`, after checking the roles against the old
    /// threshold `old_t`: the same length for both lists, every party with
    /// a role, distinct dealers (at least `old_t`), receivers exactly
    /// `0..n'`, and `2 <= t' <= n'`.
    ///
    /// # Errors
    /// [`Error::InvalidParameters`] naming the first problem.
    pub fn check(&self, old_t: u16) -> Result<u16, Error> {
        let bad = |m: String| Err(Error::InvalidParameters(m));
        if self.dealer.len() != self.receiver.len() {
            return bad("dealer and receiver lists differ in length".into());
        }
        let n = u16::try_from(self.dealer.len()).map_err(|_| Error::InvalidParameters("too many parties".into()))?;
        if let Some(p) = (0..n).find(|&p| self.dealer_of(p).is_none() && self.receiver_of(p).is_none()) {
            return bad(format!("session party {p} has no role"));
        }
        let dealers: BTreeSet<u16> = self.dealer.iter().flatten().copied().collect();
        if dealers.len() != self.dealer.iter().flatten().count() {
            return bad("an old party deals twice".into());
        }
        if dealers.len() < usize::from(old_t) {
            return bad(format!("{} dealers, the old threshold is {old_t}", dealers.len()));
        }
        let receivers: BTreeSet<u16> = self.receiver.iter().flatten().copied().collect();
        let new_n = self.new_n();
        if receivers.len() != usize::from(new_n) || receivers.iter().copied().ne(0..new_n) {
            return bad("new party indices must be exactly 0..n'".into());
        }
        if self.new_t < 2 || self.new_t > new_n {
            return bad(format!("need 2 <= t' <= n', got t'={}, n'={new_n}", self.new_t));
        }
        Ok(n)
    }

    /// The number of new parties `n'`.
    pub fn new_n(&self) -> u16 {
        u16::try_from(self.receiver.iter().flatten().count()).unwrap_or(u16::MAX)
    }

    fn dealer_of(&self, p: PartyIndex) -> Option<PartyIndex> {
        self.dealer.get(usize::from(p)).copied().flatten()
    }

    fn receiver_of(&self, p: PartyIndex) -> Option<PartyIndex> {
        self.receiver.get(usize::from(p)).copied().flatten()
    }
}

/// Messages of a reshare, one variant a round (round numbers 0 and 1).
#[derive(Clone, Debug, Serialize, Deserialize, ProtocolMessage)]
#[serde(bound = "")]
pub enum Msg<C: Ciphersuite> {
    /// Round 0, broadcast: a dealer's commitments (step 1).
    Commit(Commit<C>),
    /// Round 1, point to point: a sub-share and the echo (step 2).
    Deal(Deal<C>),
}

/// Round-0 message: the Feldman commitments to the sender's resharing
/// polynomial `g_k`, `t'` group elements; `None` from a party that does not
/// deal.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct Commit<C: Ciphersuite> {
    /// `[C_{k,0}, ..., C_{k,t'-1}]`.
    pub commitment: Option<VerifiableSecretSharingCommitment<C>>,
}

/// Round-1 message: the sub-share `g_k(x'_j)` for the recipient (`None`
/// unless the sender deals and the recipient receives) and the SHA-256
/// echo of every party's round-0 message as the sender saw them.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct Deal<C: Ciphersuite> {
    /// The sub-share. Secret: point to point only.
    pub share: Option<SigningShare<C>>,
    /// The echo.
    pub echo: [u8; 32],
}

/// A party's result: the new public key package (the same group key,
/// every new verifying share, threshold `t'`; every party derives it from
/// the public commitments) and, at a receiver, its identifier in the new
/// committee (`j + 1`) and new share `s'_j` (secret: store sealed only).
#[derive(Debug)]
pub struct Output<C: Ciphersuite> {
    /// The new public key package.
    pub public_key_package: PublicKeyPackage<C>,
    /// A receiver's identifier and new share.
    pub share: Option<(Identifier<C>, SigningShare<C>)>,
}

/// Which message `me` expects from `from` in `round`: every party sends in
/// both rounds (a party without the role sends `None`), so the schedule
/// is the same for every role.
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

fn frost_err<C: Ciphersuite>(what: &str) -> impl Fn(frost_core::Error<C>) -> Error + '_ {
    move |e| Error::Frost(format!("{what}: {e}"))
}

fn scalar_of<C: Ciphersuite>(bytes: &[u8]) -> Result<Scalar<C>, Error> {
    let s = <<C::Group as Group>::Field as Field>::Serialization::try_from(bytes)
        .map_err(|_| Error::Frost("scalar of the wrong length".into()))?;
    <C::Group as Group>::Field::deserialize(&s).map_err(|e| Error::Frost(e.to_string()))
}

fn element_of<C: Ciphersuite>(bytes: &[u8]) -> Result<Element<C>, Error> {
    let s = <C::Group as Group>::Serialization::try_from(bytes)
        .map_err(|_| Error::Frost("element of the wrong length".into()))?;
    <C::Group as Group>::deserialize(&s).map_err(|e| Error::Frost(e.to_string()))
}

fn element_bytes<C: Ciphersuite>(e: &Element<C>) -> Result<Vec<u8>, Error> {
    <C::Group as Group>::serialize(e)
        .map(|s| s.as_ref().to_vec())
        .map_err(|e| Error::Frost(e.to_string()))
}

/// The Lagrange coefficient at 0 of `x_k` over `xs` (which holds `x_k`).
fn lagrange_at_zero<C: Ciphersuite>(xs: &[Scalar<C>], x_k: Scalar<C>) -> Result<Scalar<C>, Error> {
    let (mut num, mut den) = (<C::Group as Group>::Field::one(), <C::Group as Group>::Field::one());
    for &x in xs.iter().filter(|&&x| x != x_k) {
        num = num * x;
        den = den * (x - x_k);
    }
    let inv = <C::Group as Group>::Field::invert(&den).map_err(|_| Error::Frost("duplicate identifier".into()))?;
    Ok(num * inv)
}

/// The echo: SHA-256 over the session id and every party's round-0
/// message in session order (a flag byte, then the whole commitment).
fn echo_of<C: Ciphersuite>(
    session_id: &SessionId,
    commitments: &[Option<VerifiableSecretSharingCommitment<C>>],
) -> Result<[u8; 32], Error> {
    let mut h = Sha256::new();
    h.update(b"sigil/reshare/echo/v1");
    h.update(session_id);
    for c in commitments {
        match c {
            None => h.update([0u8]),
            Some(c) => {
                let bytes = c.serialize_whole().map_err(frost_err::<C>("commitment"))?;
                h.update([1u8]);
                h.update((bytes.len() as u64).to_be_bytes());
                h.update(&bytes);
            }
        }
    }
    Ok(h.finalize().into())
}

/// Runs the reshare as session party `i`.
///
/// `old` is the attested public key package of the current epoch (its
/// verifying shares pin what each dealer may deal; its group key is what
/// the result must have). `share` is this party's old share, required when
/// it deals. Returns the new package at every party, with the new share at
/// a receiver.
///
/// # Errors
/// - [`Error::InvalidParameters`] for bad roles ([`Roles::check`]) or a
///   dealer without its share;
/// - [`Error::InvalidCommitment`] naming dealers whose commitments are
///   missing, of the wrong length or not bound to their old verifying
///   share, and parties that sent a commitment without dealing;
/// - [`Error::InvalidSecretShare`] naming dealers whose sub-share does not
///   match their commitments, or that withheld it;
/// - [`Error::InconsistentBroadcast`] if the echoes disagree;
/// - [`Error::Transport`].
pub async fn run<C, M, R>(
    party: M,
    session_id: &SessionId,
    i: PartyIndex,
    roles: &Roles,
    old: &PublicKeyPackage<C>,
    share: Option<&SigningShare<C>>,
    rng: &mut R,
) -> Result<Output<C>, Error>
where
    C: Ciphersuite + Send + 'static,
    M: Mpc<ProtocolMessage = Msg<C>>,
    R: RngCore + CryptoRng,
{
    let (n, new_ids) = session_of(roles, old, i)?;

    let MpcParty { delivery, .. } = party.into_party();
    let (incoming, mut outgoing) = delivery.split();
    let mut rounds = RoundsRouter::<Msg<C>>::builder();
    let round0 = rounds.add_round(RoundInput::<Commit<C>>::broadcast(i, n));
    let round1 = rounds.add_round(RoundInput::<Deal<C>>::p2p(i, n));
    let mut rounds = rounds.listen(incoming);

    // Step 1: share our old share with a fresh degree t'-1 polynomial.
    let dealt = deal(roles, i, old, share, &new_ids, rng)?;
    let mine = dealt
        .as_ref()
        .and_then(|d| d.values().next().map(|s| s.commitment().clone()));
    outgoing
        .send(Outgoing::broadcast(Msg::Commit(Commit {
            commitment: mine.clone(),
        })))
        .await
        .map_err(Error::transport)?;
    let received = rounds.complete(round0).await.map_err(Error::transport)?;
    let commitments = all_commitments(i, n, mine, received);
    // Step 3, first half, at every party: the commitments are public, so
    // every honest party names the same dealers.
    check_commitments(roles, old, &commitments)?;
    let echo = echo_of(session_id, &commitments)?;

    // Step 2: sub-shares to the receivers, the echo to everyone.
    for j in (0..n).filter(|&j| j != i) {
        let share = sub_share_for(roles, dealt.as_ref(), &new_ids, j);
        outgoing
            .send(Outgoing::p2p(j, Msg::Deal(Deal { share, echo })))
            .await
            .map_err(Error::transport)?;
    }
    let received = rounds.complete(round1).await.map_err(Error::transport)?;
    let my_id = my_identifier(roles, i, &new_ids)?;
    let sub_shares = received_sub_shares(i, dealt.as_ref(), my_id.as_ref(), echo, received)?;
    finish(roles, old, &commitments, &new_ids, &sub_shares, my_id)
}

/// The session size `n` after checking the roles ([`Roles::check`]) and
/// our index `i` against it, and the new committee's identifiers `x'_j`.
fn session_of<C: Ciphersuite>(
    roles: &Roles,
    old: &PublicKeyPackage<C>,
    i: PartyIndex,
) -> Result<(u16, Vec<Identifier<C>>), Error> {
    let old_t = old
        .min_signers()
        .ok_or_else(|| Error::InvalidParameters("old package without a threshold".into()))?;
    let n = roles.check(old_t)?;
    if i >= n {
        return Err(Error::InvalidParameters(format!("party index {i} >= n = {n}")));
    }
    let new_ids = (0..roles.new_n()).map(identifier::<C>).collect::<Result<Vec<_>, _>>()?;
    Ok((n, new_ids))
}

/// Every party's round-0 commitment in session order, ours (`mine`, at
/// `i`) included.
fn all_commitments<C: Ciphersuite>(
    i: PartyIndex,
    n: u16,
    mine: Option<VerifiableSecretSharingCommitment<C>>,
    received: RoundMsgs<Commit<C>>,
) -> Vec<Option<VerifiableSecretSharingCommitment<C>>> {
    let mut commitments = vec![None; usize::from(n)];
    if let Some(c) = commitments.get_mut(usize::from(i)) {
        *c = mine;
    }
    for (j, _, msg) in received.into_iter_indexed() {
        if let Some(c) = commitments.get_mut(usize::from(j)) {
            *c = msg.commitment;
        }
    }
    commitments
}

/// Step 2 for a dealer: the sub-share for session party `j` (`None`
/// unless we deal and `j` receives).
fn sub_share_for<C: Ciphersuite>(
    roles: &Roles,
    dealt: Option<&Dealt<C>>,
    new_ids: &[Identifier<C>],
    j: PartyIndex,
) -> Option<SigningShare<C>> {
    let (d, r) = (dealt?, roles.receiver_of(j)?);
    new_ids
        .get(usize::from(r))
        .and_then(|id| d.get(id))
        .map(|s| *s.signing_share())
}

/// Our identifier in the new committee when we receive, else `None`.
fn my_identifier<C: Ciphersuite>(
    roles: &Roles,
    i: PartyIndex,
    new_ids: &[Identifier<C>],
) -> Result<Option<Identifier<C>>, Error> {
    roles
        .receiver_of(i)
        .map(|j| {
            new_ids
                .get(usize::from(j))
                .copied()
                .ok_or_else(|| Error::InvalidParameters("new index out of range".into()))
        })
        .transpose()
}

/// The sub-shares dealt to us by session party (our own to ourselves
/// included), after checking every party's round-1 echo against ours.
///
/// # Errors
/// [`Error::InconsistentBroadcast`] naming the parties whose echo differs.
fn received_sub_shares<C: Ciphersuite>(
    i: PartyIndex,
    dealt: Option<&Dealt<C>>,
    my_id: Option<&Identifier<C>>,
    echo: [u8; 32],
    received: RoundMsgs<Deal<C>>,
) -> Result<BTreeMap<PartyIndex, SigningShare<C>>, Error> {
    let mut sub_shares: BTreeMap<PartyIndex, SigningShare<C>> = BTreeMap::new();
    if let (Some(d), Some(id)) = (dealt, my_id) {
        if let Some(s) = d.get(id) {
            sub_shares.insert(i, *s.signing_share());
        }
    }
    let mut disagree = Vec::new();
    for (j, _, msg) in received.into_iter_indexed() {
        if msg.echo != echo {
            disagree.push(j);
        }
        if let Some(s) = msg.share {
            sub_shares.insert(j, s);
        }
    }
    if !disagree.is_empty() {
        return Err(Error::InconsistentBroadcast { parties: disagree });
    }
    Ok(sub_shares)
}

/// Step 4 on public data at every party (the new package), then steps 3
/// (the sub-shares) and 4 at a receiver (its new share).
fn finish<C: Ciphersuite>(
    roles: &Roles,
    old: &PublicKeyPackage<C>,
    commitments: &[Option<VerifiableSecretSharingCommitment<C>>],
    new_ids: &[Identifier<C>],
    sub_shares: &BTreeMap<PartyIndex, SigningShare<C>>,
    my_id: Option<Identifier<C>>,
) -> Result<Output<C>, Error> {
    // Step 4 on public data, at every party: the new package.
    let package = new_package(roles, old, commitments, new_ids)?;
    let share = match my_id {
        // Steps 3 (sub-shares) and 4 at a receiver.
        Some(id) => Some((id, my_share(roles, commitments, sub_shares, id, &package)?)),
        None => None,
    };
    Ok(Output {
        public_key_package: package,
        share,
    })
}

/// A dealer's sub-shares (with the commitments), by new identifier.
type Dealt<C> = BTreeMap<Identifier<C>, SecretShare<C>>;

/// Step 1 for a dealer: `split` of its old share among `new_ids` with
/// threshold `t'` (`None` at a party that does not deal).
fn deal<C: Ciphersuite, R: RngCore + CryptoRng>(
    roles: &Roles,
    i: PartyIndex,
    old: &PublicKeyPackage<C>,
    share: Option<&SigningShare<C>>,
    new_ids: &[Identifier<C>],
    rng: &mut R,
) -> Result<Option<Dealt<C>>, Error> {
    let Some(k) = roles.dealer_of(i) else {
        return Ok(None);
    };
    let share = share.ok_or_else(|| Error::InvalidParameters("a dealer needs its old share".into()))?;
    let key = SigningKey::<C>::deserialize(&share.serialize()).map_err(frost_err::<C>("old share"))?;
    // Our own share must be the one the attested record pins (a stale or
    // wrong share would only get us named by every receiver).
    let expected = old
        .verifying_shares()
        .get(&identifier::<C>(k)?)
        .ok_or_else(|| Error::InvalidParameters(format!("old party {k} has no verifying share")))?;
    let ours = element_bytes::<C>(&(<C::Group as Group>::generator() * scalar_of::<C>(&share.serialize())?))?;
    if expected.serialize().map_err(frost_err::<C>("verifying share"))? != ours {
        return Err(Error::InvalidParameters(
            "our old share does not match our verifying share".into(),
        ));
    }
    let (shares, _) = frost_core::keys::split(&key, roles.new_n(), roles.new_t, IdentifierList::Custom(new_ids), rng)
        .map_err(frost_err::<C>("split"))?;
    Ok(Some(shares))
}

/// Step 3, on the public commitments: each dealer sent exactly `t'`
/// commitments whose constant term is its old verifying share, and no
/// other party sent any.
fn check_commitments<C: Ciphersuite>(
    roles: &Roles,
    old: &PublicKeyPackage<C>,
    commitments: &[Option<VerifiableSecretSharingCommitment<C>>],
) -> Result<(), Error> {
    let mut culprits = Vec::new();
    for (p, c) in (0u16..).zip(commitments) {
        let ok = match (roles.dealer_of(p), c) {
            (None, None) => true,
            (Some(k), Some(c)) => {
                let coefficients = c.serialize().map_err(frost_err::<C>("commitment"))?;
                let pinned = old
                    .verifying_shares()
                    .get(&identifier::<C>(k)?)
                    .map(VerifyingShare::serialize)
                    .transpose()
                    .map_err(frost_err::<C>("verifying share"))?;
                coefficients.len() == usize::from(roles.new_t) && coefficients.first() == pinned.as_ref()
            }
            _ => false,
        };
        if !ok {
            culprits.push(p);
        }
    }
    if culprits.is_empty() {
        Ok(())
    } else {
        Err(Error::InvalidCommitment { culprits })
    }
}

/// The dealers (session index, old index) and their identifiers' scalars.
fn dealers_of<C: Ciphersuite>(roles: &Roles, n: usize) -> Result<(Vec<PartyIndex>, Vec<Scalar<C>>), Error> {
    let dealers: Vec<(PartyIndex, PartyIndex)> = (0..u16::try_from(n).unwrap_or(u16::MAX))
        .filter_map(|p| roles.dealer_of(p).map(|k| (p, k)))
        .collect();
    let xs = dealers
        .iter()
        .map(|&(_, k)| scalar_of::<C>(&identifier::<C>(k)?.serialize()))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((dealers.into_iter().map(|(p, _)| p).collect(), xs))
}

/// Step 4 on public data, after [`check_commitments`]: the new
/// commitments `C'_c = Σ λ_k C_{k,c}`, hence the new public key package,
/// whose group key must be the old one.
fn new_package<C: Ciphersuite>(
    roles: &Roles,
    old: &PublicKeyPackage<C>,
    commitments: &[Option<VerifiableSecretSharingCommitment<C>>],
    new_ids: &[Identifier<C>],
) -> Result<PublicKeyPackage<C>, Error> {
    let (dealers, xs) = dealers_of::<C>(roles, commitments.len())?;
    let mut combined: Vec<Element<C>> = vec![<C::Group as Group>::identity(); usize::from(roles.new_t)];
    for (&p, &x_k) in dealers.iter().zip(&xs) {
        let c = commitments
            .get(usize::from(p))
            .and_then(Option::as_ref)
            .ok_or(Error::InvalidCommitment { culprits: vec![p] })?;
        let lambda = lagrange_at_zero::<C>(&xs, x_k)?;
        for (acc, cc) in combined
            .iter_mut()
            .zip(c.serialize().map_err(frost_err::<C>("commitment"))?)
        {
            *acc = *acc + element_of::<C>(&cc)? * lambda;
        }
    }
    let combined = VerifiableSecretSharingCommitment::<C>::deserialize(
        combined.iter().map(element_bytes::<C>).collect::<Result<Vec<_>, _>>()?,
    )
    .map_err(frost_err::<C>("combined commitment"))?;
    let ids: BTreeSet<Identifier<C>> = new_ids.iter().copied().collect();
    let package = PublicKeyPackage::from_commitment(&ids, &combined).map_err(frost_err::<C>("new package"))?;
    if package.verifying_key() != old.verifying_key() {
        return Err(Error::Frost("the combined group key differs from the old one".into()));
    }
    Ok(package)
}

/// Steps 3 (the sub-shares) and 4 at receiver `my_id`: every dealer's
/// sub-share against its commitments, then `s'_j = Σ λ_k s_{k,j}`, which
/// must match the new package's verifying share of `my_id`.
fn my_share<C: Ciphersuite>(
    roles: &Roles,
    commitments: &[Option<VerifiableSecretSharingCommitment<C>>],
    sub_shares: &BTreeMap<PartyIndex, SigningShare<C>>,
    my_id: Identifier<C>,
    package: &PublicKeyPackage<C>,
) -> Result<SigningShare<C>, Error> {
    let (dealers, xs) = dealers_of::<C>(roles, commitments.len())?;
    let mut bad_share = Vec::new();
    let mut share = <C::Group as Group>::Field::zero();
    for (&p, &x_k) in dealers.iter().zip(&xs) {
        let c = commitments
            .get(usize::from(p))
            .and_then(Option::as_ref)
            .ok_or(Error::InvalidCommitment { culprits: vec![p] })?;
        let Some(sub) = sub_shares.get(&p) else {
            bad_share.push(p);
            continue;
        };
        if SecretShare::new(my_id, *sub, c.clone()).verify().is_err() {
            bad_share.push(p);
            continue;
        }
        share = share + lagrange_at_zero::<C>(&xs, x_k)? * scalar_of::<C>(&sub.serialize())?;
    }
    if !bad_share.is_empty() {
        return Err(Error::InvalidSecretShare { culprits: bad_share });
    }
    let signing_share = SigningShare::<C>::deserialize(<C::Group as Group>::Field::serialize(&share).as_ref())
        .map_err(frost_err::<C>("new share"))?;
    let mine = element_bytes::<C>(&(<C::Group as Group>::generator() * share))?;
    let listed = package
        .verifying_shares()
        .get(&my_id)
        .map(VerifyingShare::serialize)
        .transpose()
        .map_err(frost_err::<C>("verifying share"))?;
    if listed.as_ref() != Some(&mine) {
        return Err(Error::Frost("the new share does not match its verifying share".into()));
    }
    Ok(signing_share)
}
