//! In-process simulations of verifiable resharing (WWW02) for FROST keys
//! of every suite: refresh, 2-of-3 -> 3-of-5, 3-of-5 -> 2-of-3, a new
//! committee sharing one member with the old one, cheating dealers named;
//! the group key (BIP-340 x-only key included) unchanged, the new shares
//! sign, and old and new shares never combine.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    missing_docs
)]

use frost_core::keys::{KeyPackage, PublicKeyPackage, SigningShare};
use frost_core::{Ciphersuite, SigningKey, VerifyingKey};
use futures::SinkExt;
use rand::rngs::StdRng;
use rand::SeedableRng;
use round_based::sim::async_env;
use round_based::{Delivery, MpcParty, Outgoing};
use sigil_crypto::frost::{dkg, sign};
use sigil_crypto::reshare::{self, Roles};
use sigil_crypto::schedule::checked;
use sigil_crypto::scheme::signature_bytes;
use sigil_crypto::{with_ciphersuite, Error, Scheme};

type Keys<C> = Vec<(KeyPackage<C>, PublicKeyPackage<C>)>;

async fn run_dkg<C: Ciphersuite + Send + 'static>(t: u16, n: u16, seed: u64) -> Keys<C>
where
    dkg::Msg<C>: Unpin,
{
    let sid = [seed as u8; 32];
    let out = async_env::run(n, |i, party| async move {
        let mut rng = StdRng::seed_from_u64(seed * 1000 + u64::from(i));
        dkg::run::<C, _, _>(party, &sid, i, n, t, &mut rng).await
    })
    .await;
    out.into_vec()
        .into_iter()
        .map(|r| {
            let o = r.unwrap();
            (o.key_package, o.public_key_package)
        })
        .collect()
}

/// A reshare plan in node ids: the old committee is nodes `0..n` (node
/// `k` holds old index `k`); `quorum` lists the dealing nodes, `new` the
/// new committee in new-index order. Session parties are the union, in
/// node order.
struct Plan {
    quorum: Vec<u16>,
    new: Vec<u16>,
    new_t: u16,
}

impl Plan {
    fn session(&self) -> Vec<u16> {
        let mut all: Vec<u16> = self.quorum.iter().chain(&self.new).copied().collect();
        all.sort_unstable();
        all.dedup();
        all
    }

    fn roles(&self) -> Roles {
        let s = self.session();
        Roles {
            dealer: s.iter().map(|x| self.quorum.contains(x).then_some(*x)).collect(),
            receiver: s
                .iter()
                .map(|x| self.new.iter().position(|y| y == x).map(|p| p as u16))
                .collect(),
            new_t: self.new_t,
        }
    }
}

type Tamper<C> = fn(u16, reshare::Msg<C>) -> reshare::Msg<C>;

/// Runs `plan` over `old`; the session party `bad` (if any) rewrites its
/// outgoing messages with `tamper` (recipient, message).
async fn run_reshare<C: Ciphersuite + Send + 'static>(
    old: &Keys<C>,
    plan: &Plan,
    bad: Option<(u16, Tamper<C>)>,
    seed: u64,
) -> Vec<Result<reshare::Output<C>, Error>>
where
    reshare::Msg<C>: Unpin,
{
    let session = plan.session();
    let roles = plan.roles();
    let n = session.len() as u16;
    let sid = [seed as u8; 32];
    async_env::run(n, |i, party| {
        let node = session[usize::from(i)];
        let (share, package) = match old.get(usize::from(node)) {
            Some((kp, pkp)) => (Some(*kp.signing_share()), pkp.clone()),
            None => (None, old[0].1.clone()),
        };
        let roles = roles.clone();
        async move {
            let mut rng = StdRng::seed_from_u64(seed * 100 + u64::from(i));
            let share = share.filter(|_| roles.dealer[usize::from(i)].is_some());
            match bad {
                Some((b, tamper)) if b == i => {
                    let party = party.map_delivery(|d| {
                        let (incoming, outgoing) = d.split();
                        let outgoing = outgoing.with(move |m: Outgoing<reshare::Msg<C>>| async move {
                            let to = match m.recipient {
                                round_based::MessageDestination::OneParty(j) => j,
                                round_based::MessageDestination::AllParties => u16::MAX,
                            };
                            Ok::<_, tokio::sync::broadcast::error::SendError<()>>(Outgoing {
                                recipient: m.recipient,
                                msg: tamper(to, m.msg),
                            })
                        });
                        (incoming, Box::pin(outgoing))
                    });
                    let party = MpcParty::connected(party.delivery);
                    // The honest parties may abort before the cheater's
                    // last round completes.
                    let run = reshare::run::<C, _, _>(party, &sid, i, &roles, &package, share.as_ref(), &mut rng);
                    tokio::time::timeout(std::time::Duration::from_secs(2), run)
                        .await
                        .unwrap_or(Err(Error::Transport("the others stopped".into())))
                }
                _ => {
                    let party = checked(party, i, n, reshare::expects);
                    reshare::run::<C, _, _>(party, &sid, i, &roles, &package, share.as_ref(), &mut rng).await
                }
            }
        }
    })
    .await
    .into_vec()
}

/// The new keys of a successful run, in new-index order.
fn new_keys<C: Ciphersuite>(out: Vec<Result<reshare::Output<C>, Error>>, t: u16) -> Keys<C> {
    let outs: Vec<reshare::Output<C>> = out.into_iter().map(Result::unwrap).collect();
    let first = outs[0].public_key_package.serialize().unwrap();
    for o in &outs {
        assert_eq!(
            o.public_key_package.serialize().unwrap(),
            first,
            "every party, dealers too, derives one package"
        );
    }
    let mut keys: Vec<_> = outs
        .into_iter()
        .filter_map(|o| {
            let (id, share) = o.share?;
            let vs = o.public_key_package.verifying_shares()[&id];
            let kp = KeyPackage::new(id, share, vs, *o.public_key_package.verifying_key(), t);
            Some((kp, o.public_key_package))
        })
        .collect();
    keys.sort_by_key(|(kp, _)| *kp.identifier());
    keys
}

async fn sign_with<C: Ciphersuite + Send + 'static>(keys: &Keys<C>, signers: &[u16], msg: &[u8]) -> Vec<u8>
where
    sign::Msg<C>: Unpin,
{
    let signers = signers.to_vec();
    let n = signers.len() as u16;
    let out = async_env::run(n, |i, party| {
        let signers = signers.clone();
        let (kp, pkp) = keys[usize::from(signers[usize::from(i)])].clone();
        let msg = msg.to_vec();
        async move {
            let mut rng = StdRng::seed_from_u64(u64::from(i) + 5);
            sign::run::<C, _, _>(party, i, &signers, &kp, &pkp, &msg, &mut rng).await
        }
    })
    .await
    .into_vec();
    signature_bytes(&out[0].clone().unwrap().unwrap()).unwrap()
}

/// The key `t` of `shares` reconstruct to.
fn reconstructed<C: Ciphersuite>(shares: &[KeyPackage<C>]) -> VerifyingKey<C> {
    let sk: SigningKey<C> = frost_core::keys::reconstruct(shares).unwrap();
    VerifyingKey::from(&sk)
}

/// (old t, old n, quorum, new committee, new t).
type Case = (u16, u16, Vec<u16>, Vec<u16>, u16);

async fn matrix(scheme: Scheme) {
    // (old t, old n, quorum, new committee, new t)
    let plans: [Case; 4] = [
        (2, 3, vec![0, 1, 2], vec![0, 1, 2], 2), // refresh
        (2, 3, vec![0, 2], vec![0, 1, 2, 3, 4], 3),
        (3, 5, vec![1, 3, 4], vec![4, 0, 2], 2),
        (2, 3, vec![1, 2], vec![2, 5, 6], 2), // one shared member
    ];
    for (k, (t, n, quorum, new, new_t)) in plans.into_iter().enumerate() {
        with_ciphersuite!(scheme, C => {
            let old = run_dkg::<C>(t, n, 40 + k as u64).await;
            let public_key = scheme.public_key(&old[0].1.serialize().unwrap()).unwrap();
            let plan = Plan { quorum, new: new.clone(), new_t };
            let out = run_reshare::<C>(&old, &plan, None, 7 + k as u64).await;
            let keys = new_keys(out, new_t);
            assert_eq!(keys.len(), new.len(), "{scheme} plan {k}");
            let first = keys[0].1.serialize().unwrap();
            for (_, p) in &keys {
                assert_eq!(p.serialize().unwrap(), first, "{scheme} plan {k}: one new package");
            }
            // The public key (for secp256k1-tr: the BIP-340 x-only key) is unchanged.
            assert_eq!(scheme.public_key(&first).unwrap(), public_key, "{scheme} plan {k}");
            assert_eq!(keys[0].1.min_signers(), Some(new_t));
            // The new shares sign (the last t' of them).
            let signers: Vec<u16> = (new.len() as u16 - new_t..new.len() as u16).rev().collect();
            let msg = format!("after reshare {k}").into_bytes();
            let sig = sign_with(&keys, &signers, &msg).await;
            scheme.verify(&public_key, &msg, &sig).unwrap();
            // t' new shares give the key; t'-1 new plus one old do not,
            // and neither do old and new shares of different parties.
            let group = *old[0].1.verifying_key();
            let new_kps: Vec<KeyPackage<C>> = keys.iter().map(|(kp, _)| kp.clone()).collect();
            assert_eq!(reconstructed(&new_kps[..usize::from(new_t)]), group);
            let mut mixed: Vec<KeyPackage<C>> = new_kps[1..usize::from(new_t)].to_vec();
            mixed.push(old[0].0.clone());
            assert_ne!(reconstructed(&mixed), group, "{scheme} plan {k}: old and new shares combined");
            // A refreshed share differs from the old one.
            if k == 0 {
                assert_ne!(new_kps[0].signing_share(), old[0].0.signing_share());
            }
        }, other => panic!("{other} is not FROST"));
    }
}

#[tokio::test]
async fn frost_ed25519_reshares() {
    matrix(Scheme::FrostEd25519).await;
}

#[tokio::test]
async fn frost_secp256k1_tr_reshares_with_the_x_only_key_unchanged() {
    matrix(Scheme::FrostSecp256k1Tr).await;
}

#[tokio::test]
async fn frost_p256_reshares() {
    matrix(Scheme::FrostP256).await;
}

type C = frost_ed25519::Ed25519Sha512;

/// A dealer that commits to another secret (a fresh polynomial) is named
/// by every receiver; one that sends one receiver a wrong sub-share is
/// named by that receiver.
#[tokio::test]
async fn cheating_dealers_are_named() {
    let old = run_dkg::<C>(2, 3, 3).await;
    let plan = Plan {
        quorum: vec![0, 1],
        new: vec![0, 1, 2, 3],
        new_t: 3,
    };
    fn other_secret(_to: u16, m: reshare::Msg<C>) -> reshare::Msg<C> {
        match m {
            reshare::Msg::Commit(_) => {
                let mut rng = StdRng::seed_from_u64(9);
                let key = SigningKey::<C>::new(&mut rng);
                let (shares, _) =
                    frost_core::keys::split(&key, 4, 3, frost_core::keys::IdentifierList::Default, &mut rng).unwrap();
                let c = shares.values().next().unwrap().commitment().clone();
                reshare::Msg::Commit(reshare::Commit { commitment: Some(c) })
            }
            other => other,
        }
    }
    let out = run_reshare::<C>(&old, &plan, Some((1, other_secret)), 1).await;
    for (p, r) in out.iter().enumerate() {
        if p == 1 {
            continue;
        }
        match r {
            Err(e @ Error::InvalidCommitment { .. }) => assert_eq!(e.culprits(), vec![1], "party {p}"),
            other => panic!("party {p}: expected InvalidCommitment naming 1, got {other:?}"),
        }
    }

    fn wrong_share_to_3(to: u16, m: reshare::Msg<C>) -> reshare::Msg<C> {
        match m {
            reshare::Msg::Deal(mut d) if to == 3 => {
                d.share = Some(SigningShare::deserialize(&[3u8; 32]).unwrap());
                reshare::Msg::Deal(d)
            }
            other => other,
        }
    }
    let out = run_reshare::<C>(&old, &plan, Some((0, wrong_share_to_3)), 2).await;
    match &out[3] {
        Err(e @ Error::InvalidSecretShare { .. }) => assert_eq!(e.culprits(), vec![0]),
        other => panic!("expected InvalidSecretShare naming 0, got {other:?}"),
    }
    assert!(out[2].as_ref().unwrap().share.is_some(), "the others still finish");

    fn withhold(to: u16, m: reshare::Msg<C>) -> reshare::Msg<C> {
        match m {
            reshare::Msg::Deal(mut d) if to == 2 => {
                d.share = None;
                reshare::Msg::Deal(d)
            }
            other => other,
        }
    }
    let out = run_reshare::<C>(&old, &plan, Some((1, withhold)), 3).await;
    assert!(matches!(&out[2], Err(Error::InvalidSecretShare { culprits }) if culprits == &[1]));

    fn echo_lie(_to: u16, m: reshare::Msg<C>) -> reshare::Msg<C> {
        match m {
            reshare::Msg::Deal(mut d) => {
                d.echo = [0; 32];
                reshare::Msg::Deal(d)
            }
            other => other,
        }
    }
    let out = run_reshare::<C>(&old, &plan, Some((3, echo_lie)), 4).await;
    assert!(matches!(&out[0], Err(Error::InconsistentBroadcast { parties }) if parties == &[3]));
}

#[test]
fn bad_roles_are_refused() {
    let ok = Roles {
        dealer: vec![Some(0), Some(1), None],
        receiver: vec![Some(0), None, Some(1)],
        new_t: 2,
    };
    assert_eq!(ok.check(2).unwrap(), 3);
    assert!(ok.check(3).is_err(), "fewer dealers than the old threshold");
    let mut r = ok.clone();
    r.new_t = 3;
    assert!(r.check(2).is_err(), "t' > n'");
    let mut r = ok.clone();
    r.new_t = 1;
    assert!(r.check(2).is_err(), "t' < 2");
    let mut r = ok.clone();
    r.receiver[2] = Some(0);
    assert!(r.check(2).is_err(), "a new index twice");
    let mut r = ok.clone();
    r.dealer[1] = Some(0);
    assert!(r.check(2).is_err(), "an old party twice");
    let r = Roles {
        dealer: vec![Some(0), Some(1), None],
        receiver: vec![Some(0), Some(1), None],
        new_t: 2,
    };
    assert!(r.check(2).is_err(), "a party with no role");
}
