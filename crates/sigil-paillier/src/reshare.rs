//! Resharing the decryption exponent over the integers to a new
//! committee and threshold, with `N` unchanged: the integer analogue of
//! verifiable secret redistribution (Wong, Wang and Wing, IEEE SISW 2002,
//! section 4; Desmedt and Jajodia 1997), with integer Shamir sharing as
//! in the key generation ([`crate::key`]; Veugen et al. section 4.5,
//! statistical hiding after Damgard and Thorbek, PKC 2007, section 3) and
//! Feldman commitments in `Z_{N^2}^*` to the base `v` of [`crate::verify`].
//!
//! Setting: the key `s` is shared with corruption threshold `t` among `n`
//! old parties (party `j` holds `s_j = f(j)`, `deg f = t`) and everyone
//! knows the verification keys `v_j = v^{s_j}` from the attested public
//! package. A quorum `Q` of at least `t + 1` old parties (the *dealers*)
//! re-shares to `n'` new parties with corruption threshold `t'` (the
//! *receivers*). A session party may be both.
//!
//! Steps (WWW02 section 4, over the integers):
//! 1. Dealer `j` in `Q` scales its share by `Delta' l_j`, with its integer
//!    Lagrange coefficient `l_j = Delta lambda_{0,j}^Q` (`Delta = n!`, so
//!    `l_j` is an integer and `sum_Q l_j s_j = Delta s`) and `Delta' = n'!`,
//!    picks `g_j(x) = Delta' l_j s_j + sum_{k=1..t'} c_jk x^k` with random
//!    `c_jk` of [`Plan::coefficient_bits`] bits, and broadcasts
//!    `C_jk = v^{c_jk}` (`C_j0 = v^{Delta' l_j s_j}`) (round 0, [`Commit`]).
//!    The factor `Delta'` is Shoup's and Damgard-Thorbek's (PKC 2007,
//!    section 3): `g_j(k) = g_j(0) (mod k)`, so without it receiver `k`
//!    would learn the dealt value mod `k`; with it, that residue is 0 for
//!    every `k <= n'`, and the random coefficients (`stat_sec` bits above
//!    the constant) hide the rest statistically against any `t'`
//!    receivers.
//! 2. It sends receiver `k` the sub-share `g_j(k)` point to point; every
//!    party sends the hash of all round-0 commitments it saw (the echo)
//!    (round 1, [`Deal`]).
//! 3. Every party checks, per dealer: `t' + 1` commitments in
//!    `[1, N^2)`; `C_j0 = v_j^{Delta' l_j}` with `v_j` the dealer's old
//!    verification key (this pins what it deals to its share; a dealer
//!    that deals anything else is named); and that every echo equals its
//!    own. A receiver checks its sub-share's size and
//!    `v^{g_j(k)} = prod_c C_jc^{k^c}`.
//! 4. Receiver `k`'s new share is `s'_k = sum_Q g_j(k)`, a share of
//!    `s' = Delta Delta' s`; every party derives the new verification keys
//!    `v'_k = prod_j prod_c C_jc^{k^c}` and the new
//!    `theta' = Delta Delta' theta mod N`, and checks
//!    `prod_j C_j0 = (1 + 2 theta N)^{Delta Delta'} = v^{s'}`.
//!
//! `s'` is still `0 mod phi(N)` and `theta' = s' mod N` is invertible
//! (`Delta Delta'` has only prime factors below `max(n, n')`), so the new
//! committee decrypts with [`crate::decrypt`] unchanged.
//!
//! Security notes:
//! - The model is the key generation's for secrecy (at most `t` old and
//!   `t'` new parties corrupt, and they follow the protocol in what is not
//!   checked); unlike the key generation the reshare needs no honest
//!   majority (no multiplication). What a malicious dealer could do to the
//!   result is checked: its commitments are bound to its old
//!   verification key and every sub-share to the commitments, so a wrong
//!   deal is named, never a wrong key.
//! - Shares grow: the bound on `|s'_k|` ([`Plan::share_bits`]) is the old
//!   one plus the bits of `Delta' l_j`, `stat_sec`, `2 log2 Delta'`,
//!   `t' log2 n'` and `log2 |Q|` (about 70 bits for 2-of-3 <-> 3-of-4),
//!   because integer sharing cannot reduce mod the unknown `phi(N)`; so
//!   decryption slows a little with every reshare, and keys are not
//!   refreshed on a schedule.
//! - Sub-shares travel point to point only; dealt polynomials and
//!   received sub-shares are wiped (the copies handed to the transport are
//!   out of reach, as GMP's temporaries are).

use std::collections::BTreeSet;

use futures::SinkExt;
use rand_core::{CryptoRng, RngCore};
use round_based::rounds_router::simple_store::RoundInput;
use round_based::rounds_router::RoundsRouter;
use round_based::{Delivery, Mpc, MpcParty, Outgoing, ProtocolMessage};
use rug::integer::Order;
use rug::Integer;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::decrypt::PublicKey;
use crate::key::KeyShare;
use crate::math::{delta, lagrange_delta, random_bits, secure_pow_mod};
use crate::verify::{commit, eval_commitments, share_matches, Verification};
use crate::Error;

/// Statistical hiding of a dealt constant, in bits (the key generation's
/// default `stat_sec_shamir`).
pub const STAT_SEC: u32 = 40;

/// Who plays which role in a reshare session, and the new threshold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The attested public key of the current epoch (with verification
    /// keys; a key without them cannot be reshared).
    pub old: PublicKey,
    /// Per session party: its old party number (1-based) when it deals.
    pub dealer: Vec<Option<usize>>,
    /// Per session party: its new party number (1-based) when it
    /// receives; exactly `1..=n'`.
    pub receiver: Vec<Option<usize>>,
    /// The new corruption threshold `t'` (`t' + 1` decrypt).
    pub new_threshold: usize,
}

/// Bit length of `x` (so `x < 2^bits(x)`).
fn bits(x: usize) -> u32 {
    usize::BITS - x.leading_zeros()
}

impl Plan {
    /// The session size, after checking the plan: one role list entry per
    /// party, every party with a role, at least `t + 1` distinct dealers
    /// numbered within the old committee, receivers exactly `1..=n'`,
    /// `1 <= t' < n'`, and an old key with verification keys.
    ///
    /// # Errors
    /// [`Error::InvalidParameters`] naming the first problem.
    pub fn check(&self) -> Result<usize, Error> {
        let bad = |m: &str| Err(Error::InvalidParameters(m.into()));
        if self.dealer.len() != self.receiver.len() {
            return bad("dealer and receiver lists differ in length");
        }
        if self.dealer.iter().zip(&self.receiver).any(|r| r == (&None, &None)) {
            return bad("a session party has no role");
        }
        let q = self.quorum();
        if q.len() != self.dealer.iter().flatten().count() || q.iter().any(|&j| j == 0 || j > self.old.parties) {
            return bad("dealers must be distinct old parties");
        }
        if q.len() < self.old.threshold + 1 {
            return bad("fewer dealers than the old key needs to decrypt");
        }
        let receivers: BTreeSet<usize> = self.receiver.iter().flatten().copied().collect();
        let new_n = self.new_n();
        if receivers.len() != new_n || receivers.iter().copied().ne(1..=new_n) {
            return bad("new party numbers must be exactly 1..=n'");
        }
        if self.new_threshold == 0 || self.new_threshold >= new_n {
            return bad("need 1 <= t' < n'");
        }
        if self.verification().is_err() {
            return bad("a key without verification keys cannot be reshared");
        }
        Ok(self.dealer.len())
    }

    /// The number of new parties `n'`.
    pub fn new_n(&self) -> usize {
        self.receiver.iter().flatten().count()
    }

    /// The dealers' old party numbers, ascending.
    fn quorum(&self) -> Vec<usize> {
        self.dealer
            .iter()
            .flatten()
            .copied()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    }

    /// What old party `j` multiplies its share by before dealing it:
    /// `Delta' l_j` with `l_j = Delta lambda_{0,j}` over the quorum and
    /// `Delta' = n'!`.
    fn scale(&self, j: usize) -> Integer {
        delta(self.new_n()) * lagrange_delta(&self.quorum(), j, self.old.parties)
    }

    /// `Delta Delta'`: the new secret is this times the old one.
    fn factor(&self) -> Integer {
        delta(self.old.parties) * delta(self.new_n())
    }

    /// Every honest dealt constant `|Delta' l_j s_j|` is below `2^this`.
    fn constant_bits(&self) -> u32 {
        let max_lambda = self
            .quorum()
            .iter()
            .map(|&j| self.scale(j).significant_bits())
            .max()
            .unwrap_or(0);
        self.old_share_bits() + max_lambda
    }

    fn old_share_bits(&self) -> u32 {
        self.verification().map_or(0, |v| v.share_bits)
    }

    /// The old key's verification values.
    ///
    /// # Errors
    /// [`Error::InvalidParameters`] for a key without them.
    fn verification(&self) -> Result<&Verification, Error> {
        self.old
            .verification
            .as_ref()
            .ok_or_else(|| Error::InvalidParameters("no verification keys".into()))
    }

    /// Bits of the random coefficients `c_jk`: `STAT_SEC` plus twice the
    /// bits of `Delta' = n'!` above the constant (as the key generation's
    /// integer sharing).
    pub fn coefficient_bits(&self) -> u32 {
        self.constant_bits() + STAT_SEC + 2 * delta(self.new_n()).significant_bits()
    }

    /// Every honest sub-share `|g_j(k)|` is below `2^this`.
    pub fn dealt_bits(&self) -> u32 {
        let t = u32::try_from(self.new_threshold).unwrap_or(u32::MAX);
        self.coefficient_bits() + t * bits(self.new_n()) + bits(self.new_threshold + 1) + 1
    }

    /// Every new share `|s'_k|` is below `2^this`.
    pub fn share_bits(&self) -> u32 {
        self.dealt_bits() + bits(self.quorum().len()) + 1
    }
}

/// Messages of a reshare, one variant a round (rounds 0 and 1): the
/// schedule of every reshare, `sigil_crypto::reshare::expects` (every
/// party sends in both), which the node enforces on receipt.
#[derive(Clone, Serialize, Deserialize, ProtocolMessage)]
pub enum Msg {
    /// Round 0, broadcast: a dealer's commitments (step 1).
    Commit(Commit),
    /// Round 1, point to point: a sub-share and the echo (step 2).
    Deal(Deal),
}

/// Round-0 message: `[C_j0, ..., C_jt']` from a dealer, `None` from a
/// party that does not deal.
#[derive(Clone, Serialize, Deserialize)]
pub struct Commit {
    /// The commitments, constant term first.
    pub commitments: Option<Vec<Integer>>,
}

/// Round-1 message: the sub-share `g_j(k)` (secret; `None` unless the
/// sender deals and the recipient receives) and the SHA-256 echo of every
/// party's round-0 message as the sender saw them.
#[derive(Clone, Serialize, Deserialize)]
pub struct Deal {
    /// The sub-share.
    pub share: Option<Integer>,
    /// The echo.
    pub echo: [u8; 32],
}

/// Names the variant only: sub-shares must never reach a log.
impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Msg::Commit(_) => write!(f, "Commit"),
            Msg::Deal(_) => write!(f, "Deal"),
        }
    }
}

/// A dealer's polynomial: its commitments and one sub-share per new party
/// (element `k - 1` for party `k`). The sub-shares are wiped on drop.
pub struct Dealt {
    /// `[C_j0, ..., C_jt']`.
    pub commitments: Vec<Integer>,
    /// `g_j(1), ..., g_j(n')` (secret).
    pub shares: Vec<Integer>,
}

impl Drop for Dealt {
    fn drop(&mut self) {
        self.shares.iter_mut().for_each(crate::math_wipe);
    }
}

/// Step 1 for old party `j` with share `share`: its scaled share dealt
/// with a fresh degree-`t'` integer polynomial.
///
/// # Errors
/// [`Error::InvalidParameters`] if `share` is not the one `j`'s
/// verification key pins (a stale share would only get us named).
pub fn deal<R: RngCore + CryptoRng>(plan: &Plan, j: usize, share: &Integer, rng: &mut R) -> Result<Dealt, Error> {
    let ver = plan.verification()?;
    let n2 = &plan.old.n2;
    let ours = secure_pow_mod(&ver.v, share, n2);
    if ours.is_none() || ours.as_ref() != ver.keys.get(j.wrapping_sub(1)) {
        return Err(Error::InvalidParameters(
            "our share does not match our verification key".into(),
        ));
    }
    let cbits = plan.coefficient_bits();
    let mut coeffs: Vec<Integer> = std::iter::once(plan.scale(j) * share)
        .chain((0..plan.new_threshold).map(|_| random_bits(cbits, rng)))
        .collect();
    let commitments = commit(&ver.v, n2, &coeffs);
    let shares = (1..=plan.new_n())
        .map(|k| {
            let x = Integer::from(k);
            let mut g = Integer::new();
            for c in coeffs.iter().rev() {
                g = g * &x + c;
            }
            g
        })
        .collect();
    coeffs.iter_mut().for_each(crate::math_wipe);
    Ok(Dealt { commitments, shares })
}

/// Step 3 on the public commitments (per session party, ours included):
/// each dealer sent `t' + 1` values in `[1, N^2)` whose constant term is
/// `v_j^{l_j}`, and no other party sent any.
///
/// # Errors
/// [`Error::InvalidCommitments`] naming the session parties at fault.
pub fn check_commitments(plan: &Plan, commitments: &[Option<Vec<Integer>>]) -> Result<(), Error> {
    let ver = plan.verification()?;
    let n2 = &plan.old.n2;
    let mut parties = Vec::new();
    for (p, (role, c)) in plan.dealer.iter().zip(commitments).enumerate() {
        let ok = match (role, c) {
            (None, None) => true,
            (Some(j), Some(c)) => {
                let pinned = ver
                    .keys
                    .get(j.wrapping_sub(1))
                    .and_then(|vj| vj.clone().pow_mod(&plan.scale(*j), n2).ok());
                c.len() == plan.new_threshold + 1
                    && c.iter().all(|x| *x >= 1 && x < n2)
                    && pinned.is_some_and(|want| c.first() == Some(&want))
            }
            _ => false,
        };
        if !ok {
            parties.push(p);
        }
    }
    if commitments.len() != plan.dealer.len() {
        return Err(Error::InvalidParameters("one commitment slot per session party".into()));
    }
    if parties.is_empty() {
        Ok(())
    } else {
        Err(Error::InvalidCommitments { parties })
    }
}

/// The echo: SHA-256 over the session id and every party's round-0
/// message in session order.
fn echo_of(session_id: &[u8], commitments: &[Option<Vec<Integer>>]) -> [u8; 32] {
    let mut h = Sha256::new().chain_update(b"sigil-paillier/reshare/echo/v1");
    h.update((session_id.len() as u64).to_be_bytes());
    h.update(session_id);
    for c in commitments {
        match c {
            None => h.update([0u8]),
            Some(c) => {
                h.update([1u8]);
                h.update((c.len() as u64).to_be_bytes());
                for x in c {
                    let d = x.to_digits::<u8>(Order::Msf);
                    h.update((d.len() as u64).to_be_bytes());
                    h.update(&d);
                }
            }
        }
    }
    h.finalize().into()
}

/// Step 4 on public data, after [`check_commitments`]: the new public key
/// (`theta' = Delta Delta' theta mod N`, `n'`, `t'`, every new verification key,
/// the new share bound), after checking that the constant terms combine
/// to `v^{Delta Delta' s}`.
///
/// # Errors
/// [`Error::InvalidCommitments`] (no one named) if they do not.
pub fn new_public_key(plan: &Plan, commitments: &[Option<Vec<Integer>>]) -> Result<PublicKey, Error> {
    let old = &plan.old;
    let ver = plan.verification()?;
    let dealt: Vec<&Vec<Integer>> = commitments.iter().flatten().collect();
    let d = plan.factor();
    let mut product = Integer::from(1);
    for c in &dealt {
        product = product * c.first().cloned().unwrap_or_default() % &old.n2;
    }
    let v_s = (Integer::from(&old.theta * 2u32) * &old.n + 1u32) % &old.n2;
    if v_s.pow_mod(&d, &old.n2).ok() != Some(product) {
        return Err(Error::InvalidCommitments { parties: vec![] });
    }
    let keys = (1..=plan.new_n())
        .map(|k| {
            dealt.iter().fold(Integer::from(1), |acc, c| {
                acc * eval_commitments(c, k, &old.n2) % &old.n2
            })
        })
        .collect();
    let theta = crate::math::modulo(d * &old.theta, &old.n);
    Ok(
        PublicKey::new(old.n.clone(), theta, plan.new_n(), plan.new_threshold).with_verification(Verification {
            v: ver.v.clone(),
            keys,
            share_bits: plan.share_bits(),
        }),
    )
}

/// Step 3 at receiver `k` for the sub-share from session party `p`:
/// within [`Plan::dealt_bits`] and matching `p`'s commitments.
fn sub_share_ok(plan: &Plan, k: usize, share: &Integer, commitments: &[Integer]) -> bool {
    share.significant_bits() <= plan.dealt_bits()
        && plan
            .verification()
            .is_ok_and(|v| share_matches(&v.v, &plan.old.n2, commitments, k, share))
}

/// A party's result: the new public key at every party and, at a
/// receiver, its new key share (secret: store sealed only).
pub struct Output {
    /// The new public key (same `N`).
    pub public_key: PublicKey,
    /// A receiver's new share.
    pub share: Option<KeyShare>,
}

/// Runs the reshare as session party `i` of `plan`; `share` is this
/// party's old share, required when it deals.
///
/// # Errors
/// - [`Error::InvalidParameters`] for a bad plan ([`Plan::check`]) or a
///   dealer without its (right) share;
/// - [`Error::InvalidCommitments`] naming dealers whose commitments are
///   missing, malformed or not bound to their verification key, and
///   parties that sent some without dealing;
/// - [`Error::InvalidSubShares`] naming dealers whose sub-share to us is
///   missing, too large or does not match their commitments;
/// - [`Error::InconsistentEcho`] naming parties that saw other
///   commitments than we did;
/// - [`Error::Transport`].
pub async fn run<M, R>(
    party: M,
    session_id: &[u8],
    i: u16,
    plan: &Plan,
    share: Option<&Integer>,
    rng: &mut R,
) -> Result<Output, Error>
where
    M: Mpc<ProtocolMessage = Msg>,
    R: RngCore + CryptoRng,
{
    let n = u16::try_from(plan.check()?).map_err(|_| Error::InvalidParameters("too many parties".into()))?;
    let me = usize::from(i);
    if me >= usize::from(n) {
        return Err(Error::InvalidParameters(format!("party index {i} >= n = {n}")));
    }
    let MpcParty { delivery, .. } = party.into_party();
    let (incoming, mut outgoing) = delivery.split();
    let mut rounds = RoundsRouter::<Msg>::builder();
    let round0 = rounds.add_round(RoundInput::<Commit>::broadcast(i, n));
    let round1 = rounds.add_round(RoundInput::<Deal>::p2p(i, n));
    let mut rounds = rounds.listen(incoming);
    let transport = |e: &dyn std::fmt::Display| Error::Transport(e.to_string());

    // Step 1.
    let dealt = match (plan.dealer.get(me).copied().flatten(), share) {
        (Some(j), Some(s)) => Some(deal(plan, j, s, rng)?),
        (Some(_), None) => return Err(Error::InvalidParameters("a dealer needs its share".into())),
        (None, _) => None,
    };
    let mine = dealt.as_ref().map(|d| d.commitments.clone());
    outgoing
        .send(Outgoing::broadcast(Msg::Commit(Commit {
            commitments: mine.clone(),
        })))
        .await
        .map_err(|e| transport(&e))?;
    let mut commitments = vec![None; usize::from(n)];
    for (p, _, msg) in rounds
        .complete(round0)
        .await
        .map_err(|e| transport(&e))?
        .into_iter_indexed()
    {
        if let Some(slot) = commitments.get_mut(usize::from(p)) {
            *slot = msg.commitments;
        }
    }
    if let Some(slot) = commitments.get_mut(me) {
        *slot = mine;
    }
    check_commitments(plan, &commitments)?;
    let echo = echo_of(session_id, &commitments);

    // Step 2.
    for p in (0..n).filter(|&p| p != i) {
        let to = plan.receiver.get(usize::from(p)).copied().flatten();
        let share = dealt
            .as_ref()
            .zip(to)
            .and_then(|(d, k)| k.checked_sub(1).and_then(|x| d.shares.get(x)).cloned());
        outgoing
            .send(Outgoing::p2p(p, Msg::Deal(Deal { share, echo })))
            .await
            .map_err(|e| transport(&e))?;
    }
    let received = rounds.complete(round1).await.map_err(|e| transport(&e))?;
    let my_k = plan.receiver.get(me).copied().flatten();
    let mut sub = SubShares(vec![None; usize::from(n)]);
    if let (Some(d), Some(k), Some(slot)) = (&dealt, my_k, sub.0.get_mut(me)) {
        *slot = k.checked_sub(1).and_then(|x| d.shares.get(x)).cloned();
    }
    let mut disagree = Vec::new();
    for (p, _, msg) in received.into_iter_indexed() {
        if msg.echo != echo {
            disagree.push(usize::from(p));
        }
        if let Some(slot) = sub.0.get_mut(usize::from(p)) {
            *slot = msg.share;
        }
    }
    if !disagree.is_empty() {
        return Err(Error::InconsistentEcho { parties: disagree });
    }
    let public_key = new_public_key(plan, &commitments)?;
    let share = my_k
        .map(|k| new_share(plan, k, &commitments, &sub, &public_key))
        .transpose()?;
    Ok(Output { public_key, share })
}

/// The sub-shares a receiver got, by session party; wiped when dropped,
/// on every path out of [`run`].
struct SubShares(Vec<Option<Integer>>);

impl Drop for SubShares {
    fn drop(&mut self) {
        self.0.iter_mut().flatten().for_each(crate::math_wipe);
    }
}

/// Steps 3 and 4 at receiver `k`: every dealer's sub-share checked, then
/// summed; the result must match our new verification key.
fn new_share(
    plan: &Plan,
    k: usize,
    commitments: &[Option<Vec<Integer>>],
    sub: &SubShares,
    public_key: &PublicKey,
) -> Result<KeyShare, Error> {
    let mut bad = Vec::new();
    let mut share = Integer::new();
    for (p, role) in plan.dealer.iter().enumerate() {
        if role.is_none() {
            continue;
        }
        let c = commitments.get(p).and_then(Option::as_ref);
        match (sub.0.get(p).and_then(Option::as_ref), c) {
            (Some(s), Some(c)) if sub_share_ok(plan, k, s, c) => share += s,
            _ => bad.push(p),
        }
    }
    if !bad.is_empty() {
        crate::math_wipe(&mut share);
        return Err(Error::InvalidSubShares { parties: bad });
    }
    let verification = public_key
        .verification
        .clone()
        .ok_or_else(|| Error::InvalidParameters("no verification keys".into()))?;
    Ok(KeyShare {
        party: k,
        share,
        theta: public_key.theta.clone(),
        verification,
    })
}
