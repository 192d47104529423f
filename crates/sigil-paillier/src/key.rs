//! The threshold decryption key (Veugen et al. section 4.5): the secret
//! exponent `s = beta * phi(N)` with `beta = sum beta_i` random, shared
//! with threshold `t` over the integers, and `theta = s mod N` public.
//! `s = 0 (mod phi(N))` kills the randomness of a ciphertext and
//! `s = theta (mod N)` scales the plaintext by a known factor.
//!
//! Two rounds:
//! 1. (p2p) every party `i` Shamir-shares over `F_K` its `phi_i` (party 1:
//!    `N + 1 - p_1 - q_1`, others `-(p_i + q_i)`), `beta_i` (uniform in
//!    `[0, N)`) and a mask `r_i` (uniform with `stat_sec_shamir` bits
//!    above `s`), and shares `r_i` again over the integers with a degree
//!    `t` polynomial (coefficients `stat_sec_shamir + 2 log Delta` bits
//!    above `r_i`: statistical hiding, Damgard-Thorbek); it also publishes
//!    `r_i mod N`.
//! 2. (broadcast) its `F_K` share of `z = phi * beta - sum r_i` (degree
//!    `2t`). `z` is interpolated exactly (centered; `F_K` is large enough);
//!    it hides `s` statistically. Party `j`'s key share is
//!    `s_j = z + sum_i g_i(j)`, an integer Shamir share of `s`, and
//!    `theta = z + sum (r_i mod N) mod N`.
//!
//! For verifiable decryption ([`crate::verify`]) party `i` also
//! broadcasts Feldman commitments to the coefficients of its integer
//! polynomial `g_i` in round 1; each party checks the integer shares it
//! received against them (naming a dealer whose share does not match),
//! derives every party's verification key from them and checks `theta`
//! against the committed constant terms.

use rand_core::{CryptoRng, RngCore};
use rug::Integer;

use crate::math::{centered, delta, random_below, random_bits, reconstruct, share};
use crate::modulus::check;
use crate::params::Setup;
use crate::Error;

/// A party's secret state between the key rounds.
pub struct KeyState {
    phi: Integer,
    beta: Integer,
}

/// Round-1 output: p2p messages (element `j - 1` to party `j`: `[phi, beta,
/// r]` shares over `F_K` and the integer share of `r_i`), and the public
/// `r_i mod N`.
pub struct KeyRound1 {
    /// Per recipient: `[phi_share, beta_share, r_share, r_int_share]`.
    pub p2p: Vec<[Integer; 4]>,
    /// `r_i mod N`, broadcast.
    pub r_mod_n: Integer,
    /// `v^{g_i coefficient} mod N^2`, constant term first (`t + 1`
    /// values), broadcast.
    pub commitments: Vec<Integer>,
}

/// Bits of the masks `r_i`: `stat_sec_shamir` above the largest `|s|`.
fn mask_bits(setup: &Setup) -> u32 {
    let nbits = usize::BITS - setup.n().leading_zeros();
    2 * setup.params.key_length + nbits + setup.params.stat_sec_shamir
}

/// Bits of the coefficients of the integer sharing of `r_i`.
fn coefficient_bits(setup: &Setup) -> u32 {
    mask_bits(setup) + setup.params.stat_sec_shamir + 2 * delta(setup.n()).significant_bits()
}

/// The bit length of `x` (so `x < 2^bits_of(x)`).
fn bits_of(x: usize) -> u32 {
    usize::BITS - x.leading_zeros()
}

/// Every honest dealer's integer share `|g_i(j)|` is below `2^this`.
pub fn dealt_share_bits(setup: &Setup) -> u32 {
    let t = u32::try_from(setup.t()).unwrap_or(u32::MAX);
    coefficient_bits(setup) + t * bits_of(setup.n()) + bits_of(setup.t()) + 1
}

/// Every key share `|s_j|` is below `2^this`: the sum of `n` dealt shares
/// (each checked against [`dealt_share_bits`]) and `z` (centered in
/// `F_K`, so below the field's size whatever the parties sent).
pub fn share_bits(setup: &Setup) -> u32 {
    dealt_share_bits(setup).max(setup.field_key.significant_bits()) + bits_of(setup.n()) + 1
}

/// Round 1 for party `me` (1-based) with candidate shares `p_i`, `q_i` of `N`.
pub fn start<R: RngCore + CryptoRng>(
    setup: &Setup,
    me: usize,
    n: &Integer,
    p_i: &Integer,
    q_i: &Integer,
    rng: &mut R,
) -> (KeyState, KeyRound1) {
    let (parties, t) = (setup.n(), setup.t());
    let phi = if me == 1 {
        Integer::from(n + 1u32) - p_i - q_i
    } else {
        -Integer::from(p_i + q_i)
    };
    let beta = random_below(n, rng);
    let r = random_bits(mask_bits(setup), rng);
    let k = &setup.field_key;
    let phis = share(&phi, t, parties, k, rng);
    let betas = share(&beta, t, parties, k, rng);
    let rs = share(&r, t, parties, k, rng);
    // Integer sharing of r: g(x) = r + sum c_k x^k.
    let cbits = coefficient_bits(setup);
    let mut coeffs: Vec<Integer> = (0..t).map(|_| random_bits(cbits, rng)).collect();
    let n2 = Integer::from(n.square_ref());
    let mut committed: Vec<Integer> = std::iter::once(r.clone()).chain(coeffs.iter().cloned()).collect();
    let commitments = crate::verify::commit(&crate::verify::base(n), &n2, &committed);
    committed.iter_mut().for_each(crate::math_wipe);
    let p2p = (0..parties)
        .map(|j| {
            let x = Integer::from(j + 1);
            let mut g = Integer::new();
            for c in coeffs.iter().rev() {
                g = (g + c) * &x;
            }
            g += &r;
            [
                phis.get(j).cloned().unwrap_or_default(),
                betas.get(j).cloned().unwrap_or_default(),
                rs.get(j).cloned().unwrap_or_default(),
                g,
            ]
        })
        .collect();
    let r_mod_n = crate::math::modulo(r.clone(), n);
    coeffs.iter_mut().for_each(crate::math_wipe);
    let mut r = r;
    crate::math_wipe(&mut r);
    (
        KeyState { phi, beta },
        KeyRound1 {
            p2p,
            r_mod_n,
            commitments,
        },
    )
}

/// Round 2 (broadcast): our `F_K` share of `z`.
///
/// # Errors
/// [`Error::Malformed`] for shares outside `F_K`.
pub fn z_share(setup: &Setup, received: &[[Integer; 4]]) -> Result<Integer, Error> {
    let fields: Vec<Vec<Integer>> = received.iter().map(|m| m[..3].to_vec()).collect();
    check(&fields, 3, setup.n(), &setup.field_key)?;
    let k = &setup.field_key;
    let (mut phi, mut beta, mut r) = (Integer::new(), Integer::new(), Integer::new());
    for m in received {
        phi += &m[0];
        beta += &m[1];
        r += &m[2];
    }
    Ok(crate::math::modulo(phi * beta - r, k))
}

/// Checks the integer shares `received[i][3]` (from dealer `i + 1`) that
/// party `me` got against each dealer's broadcast `commitments[i]`:
/// `t + 1` values in `[1, N^2)`, a share of the size an honest dealer
/// deals, and `v^{g_i(me)} = prod_k C_ik^{me^k}`.
///
/// # Errors
/// [`Error::Malformed`] naming the first dealer whose commitments or
/// share are wrong.
pub fn check_dealt_shares(
    setup: &Setup,
    me: usize,
    n: &Integer,
    received: &[[Integer; 4]],
    commitments: &[Vec<Integer>],
) -> Result<(), Error> {
    let n2 = Integer::from(n.square_ref());
    let v = crate::verify::base(n);
    let bound = dealt_share_bits(setup);
    if received.len() != setup.n() || commitments.len() != setup.n() {
        return Err(Error::InvalidParameters(
            "one key share and commitment per party".into(),
        ));
    }
    for (i, (m, c)) in received.iter().zip(commitments).enumerate() {
        let bad = |reason: &str| Error::Malformed {
            party: i + 1,
            reason: reason.into(),
        };
        if c.len() != setup.t() + 1 || c.iter().any(|x| *x < 1 || *x >= n2) {
            return Err(bad("commitments of the wrong count or out of range"));
        }
        if m[3].significant_bits() > bound {
            return Err(bad("integer key share larger than an honest dealer deals"));
        }
        if !crate::verify::share_matches(&v, &n2, c, me, &m[3]) {
            return Err(bad("integer key share does not match its commitments"));
        }
    }
    Ok(())
}

/// A party's key material.
#[derive(Clone)]
pub struct KeyShare {
    /// 1-based party number.
    pub party: usize,
    /// Integer Shamir share of `s` (secret).
    pub share: Integer,
    /// `theta = s mod N` (public).
    pub theta: Integer,
    /// Every party's verification key (public).
    pub verification: crate::verify::Verification,
}

impl Drop for KeyShare {
    fn drop(&mut self) {
        crate::math_wipe(&mut self.share);
    }
}

/// Finishes: `z` from every party's broadcast share, our key share,
/// `theta` and the verification keys (`commitments` as checked by
/// [`check_dealt_shares`]). Returns `None` if `theta` is not invertible
/// mod `N` (then the key round is repeated; probability about
/// `2^-(L/2)`).
///
/// # Errors
/// [`Error::Malformed`] for broadcasts outside `F_K`, and with party 0
/// (unknown) when `theta` disagrees with the committed constant terms
/// (some party's `r_i mod N` is not its committed `r_i`).
#[allow(clippy::too_many_arguments)]
pub fn finish(
    setup: &Setup,
    me: usize,
    n: &Integer,
    state: KeyState,
    received: &[[Integer; 4]],
    z_shares: &[Integer],
    r_mod_n: &[Integer],
    commitments: &[Vec<Integer>],
) -> Result<Option<KeyShare>, Error> {
    let zs: Vec<Vec<Integer>> = z_shares.iter().map(|z| vec![z.clone()]).collect();
    check(&zs, 1, setup.n(), &setup.field_key)?;
    drop(state);
    let pts: Vec<(usize, Integer)> = z_shares.iter().cloned().enumerate().map(|(i, z)| (i + 1, z)).collect();
    let z = centered(reconstruct(&pts, &setup.field_key), &setup.field_key);
    let mut theta = z.clone();
    for r in r_mod_n {
        theta += r;
    }
    let theta = crate::math::modulo(theta, n);
    if Integer::from(theta.gcd_ref(n)) != 1 {
        return Ok(None);
    }
    let v = crate::verify::base(n);
    let constants: Vec<&Integer> = commitments.iter().filter_map(|c| c.first()).collect();
    if constants.len() != setup.n() || !crate::verify::theta_matches(&v, n, &z, &constants, &theta) {
        return Err(Error::Malformed {
            party: 0,
            reason: "theta does not match the committed masks (a party's r mod N is wrong)".into(),
        });
    }
    let n2 = Integer::from(n.square_ref());
    let keys = (1..=setup.n())
        .map(|j| crate::verify::verification_key(&v, &n2, &z, commitments, j))
        .collect::<Option<Vec<Integer>>>()
        .ok_or_else(|| Error::InvalidParameters("verification base not invertible".into()))?;
    let mut share = z;
    for m in received {
        share += &m[3];
    }
    Ok(Some(KeyShare {
        party: me,
        share,
        theta,
        verification: crate::verify::Verification {
            v,
            keys,
            share_bits: share_bits(setup),
        },
    }))
}

impl Drop for KeyState {
    fn drop(&mut self) {
        crate::math_wipe(&mut self.phi);
        crate::math_wipe(&mut self.beta);
    }
}
