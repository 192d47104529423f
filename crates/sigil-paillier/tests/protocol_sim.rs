//! The `round_based` keygen attempt, all parties over the simulated
//! network: attempts repeat (new session ids) until one yields a key, every
//! party ends with the same public key, and any t + 1 shares decrypt.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use rand::rngs::StdRng;
use rand::SeedableRng;
use round_based::sim::async_env;
use sigil_paillier::decrypt::partial;
use sigil_paillier::protocol::{attempt, Output};
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
            let partials: Vec<(usize, Integer)> = outs
                .iter()
                .skip(n - t - 1)
                .map(|o| (o.share.party, partial(pk, &c, &o.share.share).unwrap()))
                .collect();
            assert_eq!(pk.combine(&partials).unwrap(), m);
        }
    }
}
