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
//! | 7 | broadcast | key: `r_i mod N` and commitments to `g_i` |
//! | 8 | broadcast | key: share of `z` |
//!
//! Every decision (which pairs survive, which `N` passes) is a function of
//! broadcast values, so all parties take the same branch. The attempt
//! returns `None` when no `N` of the batch is a biprime; the caller starts
//! another attempt with a new session id.

use futures::{Sink, SinkExt, Stream};
use rand_core::{CryptoRng, RngCore};
use round_based::rounds_router::simple_store::RoundInput;
use round_based::rounds_router::{Round, RoundsRouter};
use round_based::{Delivery, Incoming, MessageType, Mpc, MpcParty, Outgoing, ProtocolMessage};
use rug::Integer;
use serde::{Deserialize, Serialize};

use crate::decrypt::PublicKey;
use crate::key::KeyShare;
use crate::params::Setup;
use crate::{biprime, key, modulus, sieve, Error};

/// Messages, one variant a round (the variant index is the round number).
#[derive(Clone, Serialize, Deserialize, ProtocolMessage)]
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
    /// Round 7 (broadcast): r_i mod N, then the commitments to g_i.
    Key1Public(Key1Public),
    /// Round 8 (broadcast): share of z.
    Key2(Key2),
}

/// Round 0 (p2p): sieve shares.
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct Sieve(pub Vec<u16>);

/// Round 1 (broadcast): sieve products.
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct SieveProducts(pub Vec<u16>);

/// Round 2 (p2p): shares of p_i, q_i.
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct ModShares(pub Vec<Integer>);

/// Round 3 (broadcast): shares of N.
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct NShares(pub Vec<Integer>);

/// Round 4 (broadcast): first-base values.
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct Biprime1(pub Vec<Integer>);

/// Round 5 (broadcast): other-base values.
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct Biprime2(pub Vec<Integer>);

/// Round 6 (p2p): key shares.
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct Key1(pub Vec<Integer>);

/// Round 7 (broadcast): `[r_i mod N, C_i0, ..., C_it]`.
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct Key1Public(pub Vec<Integer>);

/// Round 8 (broadcast): share of z.
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct Key2(pub Vec<Integer>);

/// Names the variant and its length only: p2p payloads carry shares of
/// secret factors and key shares, which must never reach a log.
impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (name, len) = match self {
            Msg::Sieve(m) => ("Sieve", m.0.len()),
            Msg::SieveProducts(m) => ("SieveProducts", m.0.len()),
            Msg::ModShares(m) => ("ModShares", m.0.len()),
            Msg::NShares(m) => ("NShares", m.0.len()),
            Msg::Biprime1(m) => ("Biprime1", m.0.len()),
            Msg::Biprime2(m) => ("Biprime2", m.0.len()),
            Msg::Key1(m) => ("Key1", m.0.len()),
            Msg::Key1Public(m) => ("Key1Public", m.0.len()),
            Msg::Key2(m) => ("Key2", m.0.len()),
        };
        write!(f, "{name}([{len} values])")
    }
}

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
        let mine = $mine;
        $out.send(Outgoing::broadcast(Msg::$variant($variant(mine.clone()))))
            .await
            .map_err(transport)?;
        let got = $rounds.complete($round).await.map_err(transport)?;
        with_own($i, mine, got.into_iter_indexed().map(|(j, _, m)| (j, m.0)))
    }};
}

/// Sends `sent[j]` to each other party `j` and returns every party's
/// message to us, ours (`sent[i]`) included, by party.
macro_rules! exchange_p2p {
    ($out:expr, $rounds:expr, $round:expr, $i:expr, $sent:expr, $variant:ident) => {{
        let mut sent = $sent;
        let own = sent.get_mut(usize::from($i)).map(std::mem::take).unwrap_or_default();
        for (j, msg) in sent.into_iter().enumerate() {
            let j = u16::try_from(j).unwrap_or(u16::MAX);
            if j != $i {
                $out.send(Outgoing::p2p(j, Msg::$variant($variant(msg))))
                    .await
                    .map_err(transport)?;
            }
        }
        let got = $rounds.complete($round).await.map_err(transport)?;
        with_own($i, own, got.into_iter_indexed().map(|(j, _, m)| (j, m.0)))
    }};
}

/// The candidate pairs whose sieving succeeded: `p` of pair `c` is
/// instance `2c`, `q` is `2c + 1`.
fn pairs(shares: &[Option<Integer>], batch: usize) -> Vec<(Integer, Integer)> {
    (0..batch)
        .filter_map(|c| match (shares.get(2 * c), shares.get(2 * c + 1)) {
            (Some(Some(p)), Some(Some(q))) => Some((p.clone(), q.clone())),
            _ => None,
        })
        .collect()
}

/// What the biprimality rounds work on: the revealed moduli, our shares
/// of their factors, and the session's base derivation.
struct Biprimality<'a> {
    session: &'a [u8],
    me: usize,
    ns: &'a [Integer],
    cands: &'a [(Integer, Integer)],
}

impl Biprimality<'_> {
    /// Our values for `bases(x)` of each candidate in `which` (flattened).
    fn values(&self, which: &[usize], from: u32, count: u32) -> Vec<Integer> {
        which
            .iter()
            .flat_map(|&c| match (self.ns.get(c), self.cands.get(c)) {
                (Some(x), Some((p, q))) => {
                    let bases = biprime::bases_range(self.session, x, from, count);
                    biprime::values(self.me, x, p, q, &bases)
                }
                _ => Vec::new(),
            })
            .collect()
    }

    /// Checks every party's vector of a biprimality round before any is
    /// used: exactly `per` values for each candidate of `which`, each in
    /// `[1, N)` of its candidate. A short vector must not pass as "no
    /// values to check".
    ///
    /// # Errors
    /// [`Error::Malformed`] naming the first party (1-based) that sent a
    /// wrong length or a value out of range.
    fn check_shape(&self, which: &[usize], all: &[Vec<Integer>], per: usize) -> Result<(), Error> {
        let want = which.len() * per;
        for (j, v) in all.iter().enumerate() {
            if v.len() != want {
                return Err(Error::Malformed {
                    party: j + 1,
                    reason: format!("{} biprimality values, expected {want}", v.len()),
                });
            }
            for (k, &c) in which.iter().enumerate() {
                let n = self.ns.get(c).ok_or_else(|| expected(j, "a candidate"))?;
                // Honest values are units: the bases have Jacobi symbol 1.
                if v.iter().skip(k * per).take(per).any(|x| *x <= 0 || x >= n) {
                    return Err(Error::Malformed {
                        party: j + 1,
                        reason: "biprimality value outside [1, N)".into(),
                    });
                }
            }
        }
        Ok(())
    }

    /// The candidates of `which` whose `per` values from every party
    /// (`all[j]`, flattened in the order of `which`) pass the check.
    fn passing(&self, which: &[usize], all: &[Vec<Integer>], per: usize) -> Vec<usize> {
        which
            .iter()
            .enumerate()
            .filter(|(k, &c)| {
                let vals: Vec<Vec<Integer>> = all
                    .iter()
                    .map(|v| v.iter().skip(k * per).take(per).cloned().collect())
                    .collect();
                self.ns.get(c).is_some_and(|x| biprime::check(x, &vals))
            })
            .map(|(_, &c)| c)
            .collect()
    }
}

/// Our round-6 state and messages for the key of `found` (`N` and our
/// factor shares): the p2p payload for each party and our public `r mod N`;
/// empty payloads when this attempt found no key.
fn key_round1<R: RngCore + CryptoRng>(
    setup: &Setup,
    me: usize,
    found: Option<&(Integer, (Integer, Integer))>,
    rng: &mut R,
) -> (Option<key::KeyState>, Vec<Vec<Integer>>, Vec<Integer>) {
    let Some((x, (p, q))) = found else {
        return (None, vec![Vec::new(); setup.n()], Vec::new());
    };
    let (state, round1) = key::start(setup, me, x, p, q, rng);
    let sent = round1.p2p.iter().map(|a| a.to_vec()).collect();
    let public = std::iter::once(round1.r_mod_n.clone())
        .chain(round1.commitments.iter().cloned())
        .collect();
    (Some(state), sent, public)
}

/// What round 8 works on: the four key values each party sent us in
/// round 6, each party's `r mod N` and commitments from round 7 (checked
/// against what we received), and our share of `z` (all empty when this
/// attempt found no key).
struct KeyRound2 {
    received: Vec<[Integer; 4]>,
    r_mod_n: Vec<Integer>,
    commitments: Vec<Vec<Integer>>,
    z_mine: Vec<Integer>,
}

fn key_round2(
    setup: &Setup,
    me: usize,
    found: Option<&Integer>,
    inbox: Vec<Vec<Integer>>,
    public: Vec<Vec<Integer>>,
) -> Result<KeyRound2, Error> {
    let Some(x) = found else {
        return Ok(KeyRound2 {
            received: Vec::new(),
            r_mod_n: Vec::new(),
            commitments: Vec::new(),
            z_mine: Vec::new(),
        });
    };
    let received: Vec<[Integer; 4]> = inbox
        .into_iter()
        .enumerate()
        .map(|(j, v)| <[Integer; 4]>::try_from(v).map_err(|_| expected(j, "four key values")))
        .collect::<Result<_, _>>()?;
    let mut r_mod_n = Vec::with_capacity(public.len());
    let mut commitments = Vec::with_capacity(public.len());
    for (j, mut v) in public.into_iter().enumerate() {
        if v.len() != setup.t() + 2 {
            return Err(expected(j, "r mod N and t + 1 commitments"));
        }
        r_mod_n.push(v.remove(0));
        commitments.push(v);
    }
    key::check_dealt_shares(setup, me, x, &received, &commitments)?;
    let z = key::z_share(setup, &received)?;
    Ok(KeyRound2 {
        received,
        r_mod_n,
        commitments,
        z_mine: vec![z],
    })
}

/// The first value of each party's vector, or a protocol error naming the
/// party that sent none.
fn single(all: Vec<Vec<Integer>>, what: &str) -> Result<Vec<Integer>, Error> {
    all.into_iter()
        .enumerate()
        .map(|(j, v)| v.into_iter().next().ok_or_else(|| expected(j, what)))
        .collect()
}

/// The error for party index `j` (0-based) not sending `what`.
fn expected(j: usize, what: &str) -> Error {
    Error::Malformed {
        party: j + 1,
        reason: format!("expected {what}"),
    }
}

/// The nine rounds of an attempt, in order (see the table above).
struct Rounds {
    r0: Round<RoundInput<Sieve>>,
    r1: Round<RoundInput<SieveProducts>>,
    r2: Round<RoundInput<ModShares>>,
    r3: Round<RoundInput<NShares>>,
    r4: Round<RoundInput<Biprime1>>,
    r5: Round<RoundInput<Biprime2>>,
    r6: Round<RoundInput<Key1>>,
    r7: Round<RoundInput<Key1Public>>,
    r8: Round<RoundInput<Key2>>,
}

/// Our end of an attempt's transport: our index (0-based `i`, 1-based
/// `me`), the sink we send on and the router we receive through.
struct Channel<O, S> {
    i: u16,
    me: usize,
    out: O,
    rounds: RoundsRouter<Msg, S>,
}

impl<O, S, E> Channel<O, S>
where
    O: Sink<Outgoing<Msg>> + Unpin,
    O::Error: std::fmt::Display,
    S: Stream<Item = Result<Incoming<Msg>, E>> + Unpin,
    E: std::error::Error,
{
    /// Rounds 0-1: sieve `2 * batch` instances; our shares of the
    /// candidate pairs whose sieving succeeded.
    async fn sieve_rounds<R: RngCore + CryptoRng>(
        &mut self,
        r0: Round<RoundInput<Sieve>>,
        r1: Round<RoundInput<SieveProducts>>,
        setup: &Setup,
        rng: &mut R,
    ) -> Result<Vec<(Integer, Integer)>, Error> {
        let batch = setup.params.batch_size;
        let (state, sent) = sieve::start(setup, self.me, 2 * batch, rng);
        let inbox = exchange_p2p!(self.out, self.rounds, r0, self.i, sent, Sieve);
        let products = sieve::products(setup, &state, &inbox)?;
        let all = exchange_broadcast!(self.out, self.rounds, r1, self.i, products, SieveProducts);
        let cands = pairs(&sieve::finish(setup, &state, &all, rng)?, batch);
        drop(state);
        Ok(cands)
    }

    /// Rounds 2-3: `N` per surviving pair (shared, then revealed).
    async fn modulus_rounds<R: RngCore + CryptoRng>(
        &mut self,
        r2: Round<RoundInput<ModShares>>,
        r3: Round<RoundInput<NShares>>,
        setup: &Setup,
        cands: &[(Integer, Integer)],
        rng: &mut R,
    ) -> Result<Vec<Integer>, Error> {
        let sent = modulus::share_candidates(setup, cands, rng);
        let inbox = exchange_p2p!(self.out, self.rounds, r2, self.i, sent, ModShares);
        let nshare = modulus::modulus_shares(setup, &inbox, cands.len())?;
        let all = exchange_broadcast!(self.out, self.rounds, r3, self.i, nshare, NShares);
        modulus::reveal(setup, &all, cands.len())
    }

    /// Rounds 4-5: biprimality of the `N` of `passing` (past trial
    /// division), the first base for all, the rest for survivors; the
    /// first candidate that passes every base.
    async fn biprimality_rounds(
        &mut self,
        r4: Round<RoundInput<Biprime1>>,
        r5: Round<RoundInput<Biprime2>>,
        setup: &Setup,
        bp: &Biprimality<'_>,
        passing: &[usize],
    ) -> Result<Option<usize>, Error> {
        let values = bp.values(passing, 0, 1);
        let all = exchange_broadcast!(self.out, self.rounds, r4, self.i, values, Biprime1);
        bp.check_shape(passing, &all, 1)?;
        let survivors = bp.passing(passing, &all, 1);
        let extra = setup.params.correct_param_biprime.saturating_sub(1);
        let values = bp.values(&survivors, 1, extra);
        let all = exchange_broadcast!(self.out, self.rounds, r5, self.i, values, Biprime2);
        bp.check_shape(&survivors, &all, extra as usize)?;
        Ok(if extra == 0 {
            // One base in all: the first survivor of round 4 is the key.
            survivors.first().copied()
        } else {
            bp.passing(&survivors, &all, extra as usize).first().copied()
        })
    }

    /// Rounds 6-8: the key for `found`, the first biprime (`N` and our
    /// shares of its factors), with empty payloads if there is none.
    async fn key_rounds<R: RngCore + CryptoRng>(
        &mut self,
        r6: Round<RoundInput<Key1>>,
        r7: Round<RoundInput<Key1Public>>,
        r8: Round<RoundInput<Key2>>,
        setup: &Setup,
        found: Option<(Integer, (Integer, Integer))>,
        rng: &mut R,
    ) -> Result<Option<Output>, Error> {
        let me = self.me;
        let (kstate, sent, r_public) = key_round1(setup, me, found.as_ref(), rng);
        let inbox = exchange_p2p!(self.out, self.rounds, r6, self.i, sent, Key1);
        let r_all = exchange_broadcast!(self.out, self.rounds, r7, self.i, r_public, Key1Public);
        let k2 = key_round2(setup, me, found.as_ref().map(|f| &f.0), inbox, r_all)?;
        let z_all = exchange_broadcast!(self.out, self.rounds, r8, self.i, k2.z_mine.clone(), Key2);
        let (Some((x, _)), Some(kstate)) = (found, kstate) else {
            return Ok(None);
        };
        let z_shares = single(z_all, "a z share")?;
        let Some(share) = key::finish(
            setup,
            me,
            &x,
            kstate,
            &k2.received,
            &z_shares,
            &k2.r_mod_n,
            &k2.commitments,
        )?
        else {
            return Ok(None);
        };
        let public_key =
            PublicKey::new(x, share.theta.clone(), setup.n(), setup.t()).with_verification(share.verification.clone());
        Ok(Some(Output { public_key, share }))
    }
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
    let (incoming, out) = delivery.split();
    let mut rounds = RoundsRouter::<Msg>::builder();
    let r = Rounds {
        r0: rounds.add_round(RoundInput::<Sieve>::p2p(i, n)),
        r1: rounds.add_round(RoundInput::<SieveProducts>::broadcast(i, n)),
        r2: rounds.add_round(RoundInput::<ModShares>::p2p(i, n)),
        r3: rounds.add_round(RoundInput::<NShares>::broadcast(i, n)),
        r4: rounds.add_round(RoundInput::<Biprime1>::broadcast(i, n)),
        r5: rounds.add_round(RoundInput::<Biprime2>::broadcast(i, n)),
        r6: rounds.add_round(RoundInput::<Key1>::p2p(i, n)),
        r7: rounds.add_round(RoundInput::<Key1Public>::broadcast(i, n)),
        r8: rounds.add_round(RoundInput::<Key2>::broadcast(i, n)),
    };
    let mut ch = Channel {
        i,
        me,
        out,
        rounds: rounds.listen(incoming),
    };
    let mut stats = AttemptStats::default();

    // Rounds 0-1: sieve 2 * batch instances.
    let cands = ch.sieve_rounds(r.r0, r.r1, setup, rng).await?;
    // Rounds 2-3: N per surviving pair, then trial division.
    let ns = ch.modulus_rounds(r.r2, r.r3, setup, &cands, rng).await?;
    stats.candidates = cands.len();
    let passing: Vec<usize> = (0..ns.len())
        .filter(|&c| ns.get(c).is_some_and(|x| modulus::passes_trial_division(setup, x)))
        .collect();
    stats.trial_passed = passing.len();
    // Rounds 4-5: biprimality, the first base for all, the rest for survivors.
    let bp = Biprimality {
        session,
        me,
        ns: &ns,
        cands: &cands,
    };
    let chosen = ch.biprimality_rounds(r.r4, r.r5, setup, &bp, &passing).await?;
    // Rounds 6-8: the key for the first biprime (empty payloads if none).
    let found = chosen.and_then(|c| Some((ns.get(c)?.clone(), cands.get(c)?.clone())));
    let output = ch.key_rounds(r.r6, r.r7, r.r8, setup, found, rng).await?;
    Ok((output, stats))
}
