//! One attempt of the dealerless key generation as a `round_based`
//! protocol over a batch of `batch_size` candidate pairs, for the node's
//! session transport (and the in-process simulation): nine rounds, every
//! party sends in every round (empty payloads where a step is skipped, so
//! the schedule is fixed).
//!
//! | round | kind | content |
//! |---|---|---|
//! | 0 | p2p | sieve: Shamir shares over `F_r` of residues and masks |
//! | 1 | broadcast | sieve: shares of `rho * x` |
//! | 2 | p2p | Shamir shares over `F_P` of `p_i`, `q_i` per surviving pair |
//! | 3 | broadcast | shares of `N` per pair |
//! | 4 | broadcast | first biprimality base, per `N` past trial division |
//! | 5 | broadcast | the other bases, per `N` past the first |
//! | 6 | p2p | key: shares of `phi_i`, `beta_i`, `r_i` (field and integer) |
//! | 7 | broadcast | key: `r_i mod N` |
//! | 8 | broadcast | key: share of `z` |
//!
//! Every decision (which pairs survive, which `N` passes) is a function of
//! broadcast values, so all parties take the same branch. The attempt
//! returns `None` when no `N` of the batch is a biprime; the caller starts
//! another attempt with a new session id.

use futures::SinkExt;
use rand_core::{CryptoRng, RngCore};
use round_based::rounds_router::simple_store::RoundInput;
use round_based::rounds_router::RoundsRouter;
use round_based::{Delivery, MessageType, Mpc, MpcParty, Outgoing, ProtocolMessage};
use rug::Integer;
use serde::{Deserialize, Serialize};

use crate::decrypt::PublicKey;
use crate::key::KeyShare;
use crate::params::Setup;
use crate::{biprime, key, modulus, sieve, Error};

/// Messages, one variant a round (the variant index is the round number).
#[derive(Clone, Debug, Serialize, Deserialize, ProtocolMessage)]
pub enum Msg {
    /// Round 0 (p2p): sieve shares.
    Sieve(Sieve),
    /// Round 1 (broadcast): sieve products.
    SieveProducts(SieveProducts),
    /// Round 2 (p2p): shares of p_i, q_i.
    ModShares(ModShares),
    /// Round 3 (broadcast): shares of N.
    NShares(NShares),
    /// Round 4 (broadcast): first-base values.
    Biprime1(Biprime1),
    /// Round 5 (broadcast): other-base values.
    Biprime2(Biprime2),
    /// Round 6 (p2p): key shares.
    Key1(Key1),
    /// Round 7 (broadcast): r_i mod N.
    Key1Public(Key1Public),
    /// Round 8 (broadcast): share of z.
    Key2(Key2),
}

/// Round 0 (p2p): sieve shares.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Sieve(pub Vec<u16>);

/// Round 1 (broadcast): sieve products.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SieveProducts(pub Vec<u16>);

/// Round 2 (p2p): shares of p_i, q_i.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ModShares(pub Vec<Integer>);

/// Round 3 (broadcast): shares of N.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct NShares(pub Vec<Integer>);

/// Round 4 (broadcast): first-base values.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Biprime1(pub Vec<Integer>);

/// Round 5 (broadcast): other-base values.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Biprime2(pub Vec<Integer>);

/// Round 6 (p2p): key shares.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Key1(pub Vec<Integer>);

/// Round 7 (broadcast): r_i mod N.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Key1Public(pub Vec<Integer>);

/// Round 8 (broadcast): share of z.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Key2(pub Vec<Integer>);

/// Which message party `me` expects from `from` in `round` (0-based
/// indices), for the node's transport.
pub fn expects(round: u16, from: u16, me: u16, n: u16) -> Option<MessageType> {
    if from == me || from >= n {
        return None;
    }
    match round {
        0 | 2 | 6 => Some(MessageType::P2P),
        1 | 3 | 4 | 5 | 7 | 8 => Some(MessageType::Broadcast),
        _ => None,
    }
}

/// Progress and outcome counters of an attempt.
#[derive(Debug, Default, Clone, Copy)]
pub struct AttemptStats {
    /// Candidate pairs whose `N` was revealed.
    pub candidates: usize,
    /// `N` values that passed trial division.
    pub trial_passed: usize,
}

/// What a party keeps from a successful attempt.
pub struct Output {
    /// The public key (with `theta`).
    pub public_key: PublicKey,
    /// This party's secret share.
    pub share: KeyShare,
}

fn transport(e: impl std::fmt::Display) -> Error {
    Error::Malformed {
        party: 0,
        reason: format!("transport: {e}"),
    }
}

/// Puts our own message at our index among the others' (0-based `i`).
fn with_own<T>(i: u16, own: T, others: impl IntoIterator<Item = (u16, T)>) -> Vec<T> {
    let mut all: Vec<(u16, T)> = others.into_iter().collect();
    all.push((i, own));
    all.sort_by_key(|(j, _)| *j);
    all.into_iter().map(|(_, m)| m).collect()
}

/// Broadcasts `$mine` (a `Vec<Integer>`) as `Msg::$variant` in round
/// `$round` and evaluates to every party's payload in party order.
macro_rules! exchange_broadcast {
    ($out:expr, $rounds:expr, $round:expr, $i:expr, $mine:expr, $variant:ident) => {{
        let mine: Vec<Integer> = $mine;
        $out.send(Outgoing::broadcast(Msg::$variant($variant(mine.clone()))))
            .await
            .map_err(transport)?;
        let got = $rounds.complete($round).await.map_err(transport)?;
        let mut others = Vec::new();
        for (j, _, m) in got.into_iter_indexed() {
            others.push((j, m.0));
        }
        with_own($i, mine, others)
    }};
}

/// Runs one attempt as party `i` (0-based). `session` must be unique per
/// attempt (it seeds the public biprimality bases).
///
/// # Errors
/// Transport failures and malformed messages.
pub async fn attempt<M, R>(
    party: M,
    setup: &Setup,
    session: &[u8],
    i: u16,
    rng: &mut R,
) -> Result<(Option<Output>, AttemptStats), Error>
where
    M: Mpc<ProtocolMessage = Msg>,
    R: RngCore + CryptoRng,
{
    let n = u16::try_from(setup.n()).map_err(|_| Error::InvalidParameters("too many parties".into()))?;
    let me = usize::from(i) + 1;
    let MpcParty { delivery, .. } = party.into_party();
    let (incoming, mut outgoing) = delivery.split();
    let mut rounds = RoundsRouter::<Msg>::builder();
    let r0 = rounds.add_round(RoundInput::<Sieve>::p2p(i, n));
    let r1 = rounds.add_round(RoundInput::<SieveProducts>::broadcast(i, n));
    let r2 = rounds.add_round(RoundInput::<ModShares>::p2p(i, n));
    let r3 = rounds.add_round(RoundInput::<NShares>::broadcast(i, n));
    let r4 = rounds.add_round(RoundInput::<Biprime1>::broadcast(i, n));
    let r5 = rounds.add_round(RoundInput::<Biprime2>::broadcast(i, n));
    let r6 = rounds.add_round(RoundInput::<Key1>::p2p(i, n));
    let r7 = rounds.add_round(RoundInput::<Key1Public>::broadcast(i, n));
    let r8 = rounds.add_round(RoundInput::<Key2>::broadcast(i, n));
    let mut rounds = rounds.listen(incoming);
    let mut stats = AttemptStats::default();
    let bad = |j: u16, what: &str| Error::Malformed {
        party: usize::from(j) + 1,
        reason: format!("expected {what}"),
    };

    // Rounds 0-1: sieve 2 * batch instances (p of pair c is 2c, q is 2c + 1).
    let batch = setup.params.batch_size;
    let (state, mut sent) = sieve::start(setup, me, 2 * batch, rng);
    for (j, msg) in sent.iter_mut().enumerate() {
        let j = u16::try_from(j).unwrap_or(u16::MAX);
        if j != i {
            outgoing
                .send(Outgoing::p2p(j, Msg::Sieve(Sieve(std::mem::take(msg)))))
                .await
                .map_err(transport)?;
        }
    }
    let own = sent.get(usize::from(i)).cloned().unwrap_or_default();
    let got = rounds.complete(r0).await.map_err(transport)?;
    let mut others = Vec::new();
    for (j, _, m) in got.into_iter_indexed() {
        let v = m.0;
        others.push((j, v));
    }
    let inbox = with_own(i, own, others);
    let products = sieve::products(setup, &state, &inbox)?;
    outgoing
        .send(Outgoing::broadcast(Msg::SieveProducts(SieveProducts(products.clone()))))
        .await
        .map_err(transport)?;
    let got = rounds.complete(r1).await.map_err(transport)?;
    let mut others = Vec::new();
    for (j, _, m) in got.into_iter_indexed() {
        let v = m.0;
        others.push((j, v));
    }
    let all = with_own(i, products, others);
    let shares = sieve::finish(setup, &state, &all, rng)?;
    drop(state);
    let mut cands = Vec::new();
    for c in 0..batch {
        if let (Some(Some(p)), Some(Some(q))) = (shares.get(2 * c), shares.get(2 * c + 1)) {
            cands.push((p.clone(), q.clone()));
        }
    }

    // Rounds 2-3: N per surviving pair.
    let mut sent = modulus::share_candidates(setup, &cands, rng);
    for (j, msg) in sent.iter_mut().enumerate() {
        let j = u16::try_from(j).unwrap_or(u16::MAX);
        if j != i {
            outgoing
                .send(Outgoing::p2p(j, Msg::ModShares(ModShares(std::mem::take(msg)))))
                .await
                .map_err(transport)?;
        }
    }
    let own = sent.get(usize::from(i)).cloned().unwrap_or_default();
    let got = rounds.complete(r2).await.map_err(transport)?;
    let mut others = Vec::new();
    for (j, _, m) in got.into_iter_indexed() {
        let v = m.0;
        others.push((j, v));
    }
    let inbox = with_own(i, own, others);
    let nshare = modulus::modulus_shares(setup, &inbox, cands.len())?;
    outgoing
        .send(Outgoing::broadcast(Msg::NShares(NShares(nshare.clone()))))
        .await
        .map_err(transport)?;
    let got = rounds.complete(r3).await.map_err(transport)?;
    let mut others = Vec::new();
    for (j, _, m) in got.into_iter_indexed() {
        let v = m.0;
        others.push((j, v));
    }
    let all = with_own(i, nshare, others);
    let ns = modulus::reveal(setup, &all, cands.len())?;
    stats.candidates = cands.len();
    let passing: Vec<usize> = (0..ns.len())
        .filter(|&c| ns.get(c).is_some_and(|x| modulus::passes_trial_division(setup, x)))
        .collect();
    stats.trial_passed = passing.len();

    // Rounds 4-5: biprimality, first base for all, the rest for survivors.
    let first: Vec<Vec<Integer>> = passing
        .iter()
        .filter_map(|&c| ns.get(c))
        .map(|x| biprime::bases_range(session, x, 0, 1))
        .collect();
    let mine: Vec<Integer> = passing
        .iter()
        .zip(&first)
        .filter_map(|(&c, b)| {
            let (x, (p, q)) = (ns.get(c)?, cands.get(c)?);
            biprime::values(me, x, p, q, b).into_iter().next()
        })
        .collect();
    let all = exchange_broadcast!(outgoing, rounds, r4, i, mine, Biprime1);
    let survivors: Vec<usize> = passing
        .iter()
        .enumerate()
        .filter(|(k, &c)| {
            let vals: Vec<Vec<Integer>> = all.iter().map(|v| v.get(*k).cloned().into_iter().collect()).collect();
            ns.get(c).is_some_and(|x| biprime::check(x, &vals))
        })
        .map(|(_, &c)| c)
        .collect();
    let extra = setup.params.correct_param_biprime.saturating_sub(1);
    let rest_bases: Vec<Vec<Integer>> = survivors
        .iter()
        .filter_map(|&c| ns.get(c))
        .map(|x| biprime::bases_range(session, x, 1, extra))
        .collect();
    let mine: Vec<Integer> = survivors
        .iter()
        .zip(&rest_bases)
        .flat_map(|(&c, b)| match (ns.get(c), cands.get(c)) {
            (Some(x), Some((p, q))) => biprime::values(me, x, p, q, b),
            _ => Vec::new(),
        })
        .collect();
    let all = exchange_broadcast!(outgoing, rounds, r5, i, mine, Biprime2);
    let per = extra as usize;
    let chosen = survivors.iter().enumerate().find_map(|(k, &c)| {
        let vals: Vec<Vec<Integer>> = all
            .iter()
            .map(|v| v.iter().skip(k * per).take(per).cloned().collect())
            .collect();
        let x = ns.get(c)?;
        biprime::check(x, &vals).then_some(c)
    });

    // Rounds 6-8: the key for the first biprime (empty payloads if none).
    let found = chosen.and_then(|c| Some((ns.get(c)?.clone(), cands.get(c)?.clone())));
    let (kstate, round1) = match &found {
        Some((x, (p, q))) => {
            let (s, r) = key::start(setup, me, x, p, q, rng);
            (Some(s), Some(r))
        }
        None => (None, None),
    };
    let own_p2p: Vec<Integer> = round1
        .as_ref()
        .and_then(|r| r.p2p.get(usize::from(i)))
        .map(|a| a.to_vec())
        .unwrap_or_default();
    for j in 0..n {
        if j != i {
            let payload = round1
                .as_ref()
                .and_then(|r| r.p2p.get(usize::from(j)))
                .map(|a| a.to_vec())
                .unwrap_or_default();
            outgoing
                .send(Outgoing::p2p(j, Msg::Key1(Key1(payload))))
                .await
                .map_err(transport)?;
        }
    }
    let got = rounds.complete(r6).await.map_err(transport)?;
    let mut others = Vec::new();
    for (j, _, m) in got.into_iter_indexed() {
        let v = m.0;
        others.push((j, v));
    }
    let inbox = with_own(i, own_p2p, others);
    let r_public: Vec<Integer> = round1.as_ref().map(|r| vec![r.r_mod_n.clone()]).unwrap_or_default();
    let r_all = exchange_broadcast!(outgoing, rounds, r7, i, r_public, Key1Public);
    let received: Vec<[Integer; 4]> = if found.is_some() {
        inbox
            .into_iter()
            .enumerate()
            .map(|(j, v)| {
                <[Integer; 4]>::try_from(v).map_err(|_| bad(u16::try_from(j).unwrap_or(0), "four key values"))
            })
            .collect::<Result<_, _>>()?
    } else {
        Vec::new()
    };
    let z_mine: Vec<Integer> = if found.is_some() {
        vec![key::z_share(setup, &received)?]
    } else {
        Vec::new()
    };
    let z_all = exchange_broadcast!(outgoing, rounds, r8, i, z_mine, Key2);
    let (Some((x, _)), Some(kstate)) = (found, kstate) else {
        return Ok((None, stats));
    };
    let single = |all: Vec<Vec<Integer>>, what: &str| -> Result<Vec<Integer>, Error> {
        all.into_iter()
            .enumerate()
            .map(|(j, v)| {
                v.into_iter()
                    .next()
                    .ok_or_else(|| bad(u16::try_from(j).unwrap_or(0), what))
            })
            .collect()
    };
    let z_shares = single(z_all, "a z share")?;
    let r_mod_n = single(r_all, "r mod N")?;
    let Some(share) = key::finish(setup, me, &x, kstate, &received, &z_shares, &r_mod_n)? else {
        return Ok((None, stats));
    };
    let public_key = PublicKey::new(x, share.theta.clone(), setup.n(), setup.t());
    Ok((Some(Output { public_key, share }), stats))
}
