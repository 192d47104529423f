//! Revealing `N = p q` from the parties' additive shares of `p` and `q`
//! (Veugen et al. section 4.2, BGW): Shamir sharing of `p_i`, `q_i` over
//! the prime field `F_P` (`P > 4N`), local multiplication of the summed
//! shares (degree `2t <= n - 1`), and interpolation of the product from
//! all `n` broadcast shares. Then trial division of `N` (section 4.3).

use rand_core::{CryptoRng, RngCore};
use rug::Integer;

use crate::math::{reconstruct, share};
use crate::params::Setup;
use crate::Error;

/// Round 1 (p2p): Shamir shares over `F_P` of our `p_i`, `q_i` for every
/// candidate; element `j - 1` goes to party `j` (`[p_c0, q_c0, p_c1, ...]`).
pub fn share_candidates<R: RngCore + CryptoRng>(
    setup: &Setup,
    cands: &[(Integer, Integer)],
    rng: &mut R,
) -> Vec<Vec<Integer>> {
    let (n, t) = (setup.n(), setup.t());
    let mut out = vec![Vec::with_capacity(2 * cands.len()); n];
    for (p, q) in cands {
        let ps = share(p, t, n, &setup.field_n, rng);
        let qs = share(q, t, n, &setup.field_n, rng);
        for (j, msg) in out.iter_mut().enumerate() {
            msg.push(ps.get(j).cloned().unwrap_or_default());
            msg.push(qs.get(j).cloned().unwrap_or_default());
        }
    }
    out
}

/// Round 2 (broadcast): our share of `N` per candidate, from the shares
/// every party sent us (index `i - 1`).
///
/// # Errors
/// [`Error::Malformed`] for a wrong count or a share outside `F_P`.
pub fn modulus_shares(setup: &Setup, received: &[Vec<Integer>], count: usize) -> Result<Vec<Integer>, Error> {
    check(received, 2 * count, setup.n(), &setup.field_n)?;
    let p = &setup.field_n;
    Ok((0..count)
        .map(|c| {
            let (mut a, mut b) = (Integer::new(), Integer::new());
            for m in received {
                a += m.get(2 * c).map_or(&Integer::ZERO, |x| x);
                b += m.get(2 * c + 1).map_or(&Integer::ZERO, |x| x);
            }
            (a * b) % p
        })
        .collect())
}

/// `N` per candidate from every party's broadcast share.
///
/// # Errors
/// [`Error::Malformed`] for a wrong count or a share outside `F_P`.
pub fn reveal(setup: &Setup, broadcasts: &[Vec<Integer>], count: usize) -> Result<Vec<Integer>, Error> {
    check(broadcasts, count, setup.n(), &setup.field_n)?;
    Ok((0..count)
        .map(|c| {
            let pts: Vec<(usize, Integer)> = broadcasts
                .iter()
                .enumerate()
                .map(|(i, b)| (i + 1, b.get(c).cloned().unwrap_or_default()))
                .collect();
            reconstruct(&pts, &setup.field_n)
        })
        .collect())
}

/// Whether `N` has exactly `key_length` bits and no prime factor below
/// `prime_threshold`.
pub fn passes_trial_division(setup: &Setup, n: &Integer) -> bool {
    n.significant_bits() == setup.params.key_length && setup.trial_primes.iter().all(|&r| n.mod_u(r) != 0)
}

pub(crate) fn check(msgs: &[Vec<Integer>], len: usize, n: usize, modulus: &Integer) -> Result<(), Error> {
    crate::sieve::check_len(msgs, len, n)?;
    for (i, m) in msgs.iter().enumerate() {
        if m.iter().any(|x| *x < 0 || x >= modulus) {
            return Err(Error::Malformed {
                party: i + 1,
                reason: "value outside the field".into(),
            });
        }
    }
    Ok(())
}
