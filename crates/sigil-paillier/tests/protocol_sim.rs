//! The `round_based` keygen attempt, all parties over the simulated
//! network: attempts repeat (new session ids) until one yields a key, every
//! party ends with the same public key, and any t + 1 shares decrypt.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use rand::rngs::StdRng;
use rand::SeedableRng;
use round_based::sim::async_env;
use sigil_paillier::decrypt::{partial_with_proof, Partial};
use sigil_paillier::protocol::{attempt, Msg, Output};
use sigil_paillier::rug::Integer;
use sigil_paillier::Params;

async fn keygen(n: usize, t: usize, bits: u32) -> (Vec<Output>, usize) {
    let mut params = Params::new(n, t, bits);
    params.batch_size = 32;
    let setup = params.setup().unwrap();
    let mut candidates = 0;
    for a in 0u64.. {
        let session = a.to_be_bytes();
        let setup = &setup;
        let out = async_env::run(n as u16, |i, party| async move {
            let mut rng = StdRng::seed_from_u64(1000 * a + u64::from(i));
            let party = sigil_crypto::schedule::checked(party, i, n as u16, sigil_paillier::protocol::expects);
            attempt(party, setup, &session, i, &mut rng).await
        })
        .await
        .into_vec();
        let out: Vec<_> = out.into_iter().map(Result::unwrap).collect();
        candidates += out[0].1.candidates;
        assert!(
            out.iter().all(|(o, _)| o.is_some() == out[0].0.is_some()),
            "parties agree"
        );
        if out[0].0.is_some() {
            return (out.into_iter().map(|(o, _)| o.unwrap()).collect(), candidates);
        }
    }
    unreachable!()
}

#[tokio::test]
async fn attempts_until_a_key_then_decrypts() {
    for (n, t) in [(3, 1), (5, 2)] {
        let (outs, candidates) = keygen(n, t, 256).await;
        let pk = &outs[0].public_key;
        assert!(outs.iter().all(|o| &o.public_key == pk));
        assert_eq!(pk.n.significant_bits(), 256);
        eprintln!("n = {n}, t = {t}: key after {candidates} candidates");
        let mut rng = StdRng::seed_from_u64(9);
        for m in [Integer::from(0), Integer::from(1), Integer::from(&pk.n - 1u32)] {
            let c = pk.encrypt(&m, &mut rng).unwrap();
            let partials: Vec<Partial> = outs
                .iter()
                .skip(n - t - 1)
                .map(|o| partial_with_proof(pk, &c, o.share.party, &o.share.share, &mut rng).unwrap())
                .collect();
            assert!(pk.verification.is_some(), "keys come with verification keys");
            assert_eq!(pk.combine_verified(&c, &partials, None).unwrap(), m);
        }
    }
}

/// How a lying party changes its biprimality broadcasts.
#[derive(Clone, Copy, Debug)]
enum Lie {
    /// Its round 4 or 5 vector with the last value dropped.
    Short(u16),
    /// Its round 4 or 5 vector with an extra value.
    Long(u16),
}

/// `party`, changing its biprimality broadcasts as `lie` says if `lying`.
fn liar<D: round_based::Delivery<Msg>>(
    party: round_based::MpcParty<Msg, D>,
    lying: bool,
    lie: Lie,
) -> round_based::MpcParty<Msg, impl round_based::Delivery<Msg>> {
    use futures::SinkExt;
    use round_based::{Mpc, MpcParty, Outgoing};
    let MpcParty { delivery, .. } = party.into_party();
    let (incoming, outgoing) = delivery.split();
    let outgoing = outgoing.with(move |mut out: Outgoing<Msg>| {
        let v = match (&mut out.msg, lie) {
            (Msg::Biprime1(b), Lie::Short(4) | Lie::Long(4)) if lying => Some(&mut b.0),
            (Msg::Biprime2(b), Lie::Short(5) | Lie::Long(5)) if lying => Some(&mut b.0),
            _ => None,
        };
        match (v, lie) {
            (Some(v), Lie::Short(_)) => {
                v.pop();
            }
            (Some(v), Lie::Long(_)) => v.push(Integer::from(1)),
            (None, _) => {}
        }
        futures::future::ready(Ok::<_, D::SendError>(out))
    });
    MpcParty::connected((incoming, outgoing))
}

/// Runs attempt `a` of a 2-of-3 256-bit search with party `bad` lying:
/// each party's result (whether it found the key).
async fn attempt_with_liar(a: u64, bad: u16, lie: Lie) -> Vec<Result<bool, sigil_paillier::Error>> {
    let mut params = Params::new(3, 1, 256);
    params.batch_size = 32;
    let setup = params.setup().unwrap();
    let session = a.to_be_bytes();
    let setup = &setup;
    // The liar would wait forever for the rounds the others never reach:
    // it stops once both honest parties have finished.
    let (done_tx, done_rx) = tokio::sync::watch::channel(0usize);
    let (done_tx, done_rx) = (&done_tx, &done_rx);
    async_env::run(3, |i, party| async move {
        let mut rng = StdRng::seed_from_u64(1000 * a + u64::from(i));
        let party = liar(party, i == bad, lie);
        let run = attempt(party, setup, &session, i, &mut rng);
        if i != bad {
            let r = run.await.map(|(o, _)| o.is_some());
            done_tx.send_modify(|d| *d += 1);
            return r;
        }
        let mut rx = done_rx.clone();
        tokio::select! {
            r = run => r.map(|(o, _)| o.is_some()),
            _ = rx.wait_for(|&d| d == 2) => Ok(false),
        }
    })
    .await
    .into_vec()
}

#[tokio::test]
async fn a_short_or_long_biprimality_vector_is_a_protocol_error_naming_the_party() {
    // The first attempt that finds a key has candidates in both rounds
    // (party 9 does not exist: nobody lies).
    let mut a = 0u64;
    while !attempt_with_liar(a, 9, Lie::Short(4))
        .await
        .iter()
        .all(|r| matches!(r, Ok(true)))
    {
        a += 1;
    }
    for bad in 0..3u16 {
        for lie in [Lie::Short(4), Lie::Long(4), Lie::Short(5), Lie::Long(5)] {
            let out = attempt_with_liar(a, bad, lie).await;
            for (j, r) in out.iter().enumerate().filter(|(j, _)| *j != usize::from(bad)) {
                match r {
                    Err(sigil_paillier::Error::Malformed { party, .. }) => {
                        assert_eq!(*party, usize::from(bad) + 1, "{lie:?} by {bad}, seen by {j}");
                    }
                    other => panic!("{lie:?} by party {bad}: party {j} got {other:?}"),
                }
            }
        }
    }
}
