//! The integer reshare, all parties over the simulated network: a 2-of-3
//! key reshared to 3-of-5, back to 2-of-3 and refreshed, `N` unchanged and
//! decrypting after each step; old and new shares do not combine; a
//! cheating dealer is named.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use rand::rngs::StdRng;
use rand::SeedableRng;
use round_based::sim::async_env;
use sigil_paillier::decrypt::{partial, partial_with_proof, PublicKey};
use sigil_paillier::protocol::attempt;
use sigil_paillier::reshare::{run, Output, Plan};
use sigil_paillier::rug::Integer;
use sigil_paillier::{Error, Params};

/// A 256-bit 2-of-3 key (corruption threshold 1): the public key and the
/// shares of parties 1..=3.
async fn keygen() -> (PublicKey, Vec<Integer>) {
    let mut params = Params::new(3, 1, 256);
    params.batch_size = 32;
    let setup = params.setup().unwrap();
    for a in 0u64.. {
        let session = a.to_be_bytes();
        let setup = &setup;
        let out = async_env::run(3, |i, party| async move {
            let mut rng = StdRng::seed_from_u64(1000 * a + u64::from(i));
            attempt(party, setup, &session, i, &mut rng).await
        })
        .await
        .into_vec();
        let out: Vec<_> = out.into_iter().map(|r| r.unwrap().0).collect();
        if out[0].is_some() {
            let out: Vec<_> = out.into_iter().map(Option::unwrap).collect();
            let pk = out[0].public_key.clone();
            return (pk, out.iter().map(|o| o.share.share.clone()).collect());
        }
    }
    unreachable!()
}

/// How a cheating dealer changes its messages.
#[derive(Clone, Copy)]
enum Cheat {
    None,
    /// Session party `p` deals a sub-share off by one to every receiver.
    SubShare(u16),
    /// Session party `p` commits to (and deals) another constant.
    Constant(u16),
    /// Session party `p` deals sub-shares larger than an honest dealer can.
    Oversized(u16),
    /// Session party `p`, which does not deal, sends commitments anyway.
    Commits(u16),
}

/// Runs one reshare session: per session party its old party number (if
/// it deals, with its old share) and new party number (if it receives).
async fn reshare(
    old: &PublicKey,
    roles: &[(Option<usize>, Option<usize>)],
    old_shares: &[Integer],
    new_threshold: usize,
    cheat: Cheat,
) -> Vec<Result<Output, Error>> {
    let plan = Plan {
        old: old.clone(),
        dealer: roles.iter().map(|r| r.0).collect(),
        receiver: roles.iter().map(|r| r.1).collect(),
        new_threshold,
    };
    let n = roles.len() as u16;
    let (plan, roles) = (&plan, roles);
    // A cheater the others stop talking to would wait forever: it stops
    // once every honest party has finished.
    let (done_tx, done_rx) = tokio::sync::watch::channel(0u16);
    let (done_tx, done_rx) = (&done_tx, &done_rx);
    async_env::run(n, |i, party| async move {
        let cheats = matches!(cheat, Cheat::SubShare(p) | Cheat::Constant(p) | Cheat::Oversized(p) | Cheat::Commits(p) if p == i);
        let run = one_party(party, plan, roles, old_shares, i, cheat);
        if !cheats {
            let r = run.await;
            done_tx.send_modify(|d| *d += 1);
            return r;
        }
        let mut done = done_rx.clone();
        tokio::select! {
            r = run => r,
            _ = done.wait_for(|&d| d + 1 == n) => Err(Error::Transport("the others stopped".into())),
        }
    })
    .await
    .into_vec()
}

/// Session party `i` of a reshare (cheating as `cheat` says).
async fn one_party<D: round_based::Delivery<sigil_paillier::reshare::Msg>>(
    party: round_based::MpcParty<sigil_paillier::reshare::Msg, D>,
    plan: &Plan,
    roles: &[(Option<usize>, Option<usize>)],
    old_shares: &[Integer],
    i: u16,
    cheat: Cheat,
) -> Result<Output, Error> {
    let n = roles.len() as u16;
    {
        let mut rng = StdRng::seed_from_u64(77 + u64::from(i));
        // The schedule the node enforces for every reshare.
        let party = sigil_crypto::schedule::checked(party, i, n, sigil_crypto::reshare::expects);
        let party = cheater(party, i, cheat);
        let share = roles[usize::from(i)].0.map(|j| old_shares[j - 1].clone());
        let share = match cheat {
            Cheat::Constant(p) if p == i => share.map(|s| s + 1u32),
            _ => share,
        };
        if matches!(cheat, Cheat::Constant(p) if p == i) {
            // `deal` refuses a share its verification key does not pin:
            // the cheater deals by hand.
            return cheat_constant(party, plan, i, share.as_ref().unwrap(), &mut rng).await;
        }
        run(party, b"session", i, plan, share.as_ref(), &mut rng).await
    }
}

/// A dealer that commits to `share` (not its real share) and deals it.
async fn cheat_constant<M: round_based::Mpc<ProtocolMessage = sigil_paillier::reshare::Msg>>(
    party: M,
    plan: &Plan,
    i: u16,
    share: &Integer,
    rng: &mut StdRng,
) -> Result<Output, Error> {
    let mut fake = plan.clone();
    // A key whose verification key for us is v^share: our deal passes our
    // own check and nobody else's.
    let ver = fake.old.verification.as_mut().unwrap();
    let j = plan.dealer[usize::from(i)].unwrap();
    ver.keys[j - 1] = Integer::from(ver.v.pow_mod_ref(share, &plan.old.n2).unwrap());
    run(party, b"session", i, &fake, Some(share), rng).await
}

fn cheater<D: round_based::Delivery<sigil_paillier::reshare::Msg>>(
    party: round_based::MpcParty<sigil_paillier::reshare::Msg, D>,
    i: u16,
    cheat: Cheat,
) -> round_based::MpcParty<sigil_paillier::reshare::Msg, impl round_based::Delivery<sigil_paillier::reshare::Msg>> {
    use futures::SinkExt;
    use round_based::{Mpc, MpcParty, Outgoing};
    use sigil_paillier::reshare::Msg as R;
    let MpcParty { delivery, .. } = party.into_party();
    let (incoming, outgoing) = delivery.split();
    let outgoing = outgoing.with(move |mut out: Outgoing<R>| {
        match (&mut out.msg, cheat) {
            (R::Deal(d), Cheat::SubShare(p)) if p == i => d.share = d.share.take().map(|s| s + 1u32),
            (R::Deal(d), Cheat::Oversized(p)) if p == i => {
                d.share = d.share.take().map(|s| s + (Integer::from(1) << 20_000u32));
            }
            (R::Commit(c), Cheat::Commits(p)) if p == i => c.commitments = Some(vec![Integer::from(1); 2]),
            _ => {}
        }
        futures::future::ready(Ok::<_, D::SendError>(out))
    });
    MpcParty::connected((incoming, outgoing))
}

/// Decrypts `m`'s encryption with the new shares of `parties` (1-based).
fn decrypts(pk: &PublicKey, shares: &[(usize, Integer)], parties: &[usize], m: u32) -> bool {
    let mut rng = StdRng::seed_from_u64(5);
    let c = pk.encrypt(&Integer::from(m), &mut rng).unwrap();
    let partials: Vec<_> = parties
        .iter()
        .map(|&j| {
            let s = &shares.iter().find(|(k, _)| *k == j).unwrap().1;
            partial_with_proof(pk, &c, j, s, &mut rng).unwrap()
        })
        .collect();
    pk.combine_verified(&c, &partials, None).is_ok_and(|x| x == m)
}

/// Every party's new public key (all equal) and the receivers' shares.
fn collect(out: Vec<Result<Output, Error>>) -> (PublicKey, Vec<(usize, Integer)>) {
    let out: Vec<Output> = out.into_iter().map(Result::unwrap).collect();
    let pk = out[0].public_key.clone();
    assert!(
        out.iter().all(|o| o.public_key == pk),
        "every party derives the same key"
    );
    let shares = out
        .iter()
        .filter_map(|o| o.share.as_ref().map(|s| (s.party, s.share.clone())))
        .collect();
    (pk, shares)
}

#[tokio::test]
async fn reshares_grow_shrink_and_refresh_with_n_unchanged() {
    let (pk, shares) = keygen().await;
    // 2-of-3 -> 3-of-5: old parties 1 and 2 deal; old party 3 and two new
    // nodes only receive.
    let roles = [
        (Some(1), Some(1)),
        (Some(2), Some(2)),
        (None, Some(3)),
        (None, Some(4)),
        (None, Some(5)),
    ];
    let (pk5, shares5) = collect(reshare(&pk, &roles, &shares, 2, Cheat::None).await);
    assert_eq!(pk5.n, pk.n, "N never changes");
    assert_eq!((pk5.parties, pk5.threshold), (5, 2));
    assert!(decrypts(&pk5, &shares5, &[1, 3, 5], 42));
    assert!(decrypts(&pk5, &shares5, &[2, 3, 4], 7));
    assert!(!decrypts(&pk5, &shares5, &[4, 5], 7), "t' shares do not decrypt");

    // Old and new shares do not combine: new parties 4, 5 with old share 3.
    let mut rng = StdRng::seed_from_u64(3);
    let c = pk5.encrypt(&Integer::from(9), &mut rng).unwrap();
    let mixed: Vec<(usize, Integer)> = [(4, &shares5[3].1), (5, &shares5[4].1), (3, &shares[2])]
        .iter()
        .map(|(j, s)| (*j, partial(&pk5, &c, s).unwrap()))
        .collect();
    assert!(pk5.combine(&mixed).map_or(true, |m| m != 9));

    // 3-of-5 -> 2-of-3 among new parties 3, 4, 5 (dealers: all three).
    let roles = [(Some(3), Some(1)), (Some(4), Some(2)), (Some(5), Some(3))];
    let old5: Vec<Integer> = (1..=5).map(|j| shares5[j - 1].1.clone()).collect();
    let (pk3, shares3) = collect(reshare(&pk5, &roles, &old5, 1, Cheat::None).await);
    assert_eq!(pk3.n, pk.n);
    assert!(decrypts(&pk3, &shares3, &[1, 3], 1234));

    // To a committee sharing one member with the old one: old parties 1
    // and 2 deal, only old party 1 stays (as new party 1), two new nodes
    // join.
    let roles = [(Some(1), Some(1)), (Some(2), None), (None, Some(2)), (None, Some(3))];
    let (pk3x, shares3x) = collect(
        reshare(
            &pk3,
            &roles,
            &(1..=3).map(|j| shares3[j - 1].1.clone()).collect::<Vec<_>>(),
            1,
            Cheat::None,
        )
        .await,
    );
    assert_eq!(pk3x.n, pk.n);
    assert!(decrypts(&pk3x, &shares3x, &[2, 3], 31));
    assert!(decrypts(&pk3x, &shares3x, &[1, 3], 32));

    // A refresh (same committee and threshold): new shares, same key.
    let roles = [(Some(1), Some(1)), (Some(2), Some(2)), (None, Some(3))];
    let old3: Vec<Integer> = (1..=3).map(|j| shares3[j - 1].1.clone()).collect();
    let (pk3b, shares3b) = collect(reshare(&pk3, &roles, &old3, 1, Cheat::None).await);
    assert!(decrypts(&pk3b, &shares3b, &[2, 3], 99));
    assert!(shares3b.iter().all(|(j, s)| *s != old3[j - 1]), "every share changed");
    let grown = pk3b.verification.as_ref().unwrap().share_bits - pk.verification.as_ref().unwrap().share_bits;
    eprintln!("share bound grew by {grown} bits over four reshares");
    assert!(grown < 4 * 120, "shares grow by a bounded amount per reshare");
}

#[tokio::test]
async fn cheating_dealers_are_named() {
    let (pk, shares) = keygen().await;
    let roles = [(Some(1), Some(1)), (Some(2), Some(2)), (Some(3), Some(3))];
    // A wrong sub-share: every receiver but the cheater names it.
    let out = reshare(&pk, &roles, &shares, 1, Cheat::SubShare(1)).await;
    for (i, r) in out.iter().enumerate() {
        match r {
            Err(Error::InvalidSubShares { parties }) => assert_eq!(parties, &vec![1], "party {i}"),
            Ok(_) | Err(Error::Transport(_)) if i == 1 => {}
            other => panic!("party {i}: {:?}", other.as_ref().err()),
        }
    }
    // A dealer that deals another constant: named by everyone else from
    // its commitments alone.
    let out = reshare(&pk, &roles, &shares, 1, Cheat::Constant(2)).await;
    for (i, r) in out.iter().enumerate().filter(|(i, _)| *i != 2) {
        match r {
            Err(Error::InvalidCommitments { parties }) => assert_eq!(parties, &vec![2], "party {i}"),
            other => panic!("party {i}: {:?}", other.as_ref().err()),
        }
    }
    // Sub-shares larger than any honest deal: refused before any
    // exponentiation, the dealer named.
    let out = reshare(&pk, &roles, &shares, 1, Cheat::Oversized(0)).await;
    for (i, r) in out.iter().enumerate().filter(|(i, _)| *i != 0) {
        match r {
            Err(Error::InvalidSubShares { parties }) => assert_eq!(parties, &vec![0], "party {i}"),
            other => panic!("party {i}: {:?}", other.as_ref().err()),
        }
    }
    // A party that does not deal but sends commitments: named by all.
    let receiver_only = [(Some(1), Some(1)), (Some(2), Some(2)), (None, Some(3))];
    let out = reshare(&pk, &receiver_only, &shares, 1, Cheat::Commits(2)).await;
    for (i, r) in out.iter().enumerate().filter(|(i, _)| *i != 2) {
        match r {
            Err(Error::InvalidCommitments { parties }) => assert_eq!(parties, &vec![2], "party {i}"),
            other => panic!("party {i}: {:?}", other.as_ref().err()),
        }
    }

    // Without the cheater, two honest dealers suffice (t + 1 = 2).
    let roles = [(Some(1), Some(1)), (None, Some(2)), (Some(3), Some(3))];
    let (pk2, shares2) = collect(reshare(&pk, &roles, &shares, 1, Cheat::None).await);
    assert!(decrypts(&pk2, &shares2, &[1, 2], 5));
}

#[test]
fn plans_are_checked() {
    let pk = PublicKey::new(Integer::from(35), Integer::from(1), 3, 1);
    let plan = Plan {
        old: pk,
        dealer: vec![Some(1), Some(2)],
        receiver: vec![Some(1), Some(2)],
        new_threshold: 1,
    };
    assert!(plan.check().is_err(), "no verification keys");
    let mut with = plan.clone();
    with.old = with.old.with_verification(sigil_paillier::verify::Verification {
        v: Integer::from(4),
        keys: vec![Integer::from(1); 3],
        share_bits: 10,
    });
    assert_eq!(with.check(), Ok(2));
    for bad in [
        Plan {
            dealer: vec![Some(1), Some(1)],
            ..with.clone()
        },
        Plan {
            dealer: vec![Some(1), None],
            ..with.clone()
        },
        Plan {
            receiver: vec![Some(1), Some(3)],
            ..with.clone()
        },
        Plan {
            new_threshold: 2,
            ..with.clone()
        },
        Plan {
            dealer: vec![Some(1), Some(4)],
            ..with.clone()
        },
    ] {
        assert!(bad.check().is_err());
    }
}
