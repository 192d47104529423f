//! Protocol parameters, named and defaulted as TNO's
//! `tno.mpc.protocols.distributed_keygen` names them, and the public
//! values every party derives from them.

use rug::Integer;

use crate::math::small_primes;
use crate::Error;

/// Settings of a distributed key generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    /// Number of parties `n`.
    pub parties: usize,
    /// `t`: up to `t` colluding parties learn nothing; `t + 1` decrypt.
    /// Needs `n >= 2t + 1`.
    pub corruption_threshold: usize,
    /// Bits of `N` (exact: the top bit is set).
    pub key_length: u32,
    /// `N` is trial-divided by every prime up to this (TNO default 2000;
    /// TNO's `primerange(3, prime_threshold + 1)`).
    pub prime_threshold: u32,
    /// Boneh-Franklin test rounds; a non-biprime passes each with
    /// probability at most 1/2 (default 40).
    pub correct_param_biprime: u32,
    /// Statistical hiding, in bits, of the integer secret sharing (default 40).
    pub stat_sec_shamir: u32,
    /// Candidate pairs `(p, q)` tried per round (default 256).
    pub batch_size: usize,
}

impl Params {
    /// TNO's defaults for `n` parties, corruption threshold `t`, `key_length` bits.
    pub fn new(parties: usize, corruption_threshold: usize, key_length: u32) -> Self {
        Self {
            parties,
            corruption_threshold,
            key_length,
            prime_threshold: 2_000,
            correct_param_biprime: 40,
            stat_sec_shamir: 40,
            batch_size: 256,
        }
    }

    /// Checks the settings and derives the public values.
    ///
    /// # Errors
    /// [`Error::InvalidParameters`]: `n < 2t + 1`, `t = 0`, a key length
    /// below 128 bits or not a multiple of 2, zero rounds or batch size.
    pub fn setup(&self) -> Result<Setup, Error> {
        self.check()?;
        let (n, l) = (self.parties, self.key_length);
        let (m, sieve) = sieve_primes(n, l / 2);
        let (w_base, w_range) = size_offsets(n, l, &m)?;
        let field_n = (Integer::from(1) << (l + 2)).next_prime();
        let nbits = usize::BITS - n.leading_zeros();
        let key_bits = 2 * l + 2 * nbits + self.stat_sec_shamir + 8;
        let field_key = (Integer::from(1) << key_bits).next_prime();
        let (crt_basis, crt_four) = crt_basis(&m, &sieve);
        Ok(Setup {
            lagrange_small: lagrange_small(&sieve, n),
            crt_basis,
            crt_four,
            params: self.clone(),
            sieve_primes: sieve,
            sieve_modulus: m,
            w_base,
            w_range,
            field_n,
            field_key,
            trial_primes: small_primes(self.prime_threshold.saturating_add(1).max(3)),
        })
    }

    /// The checks of [`Params::setup`]: `n >= 2t + 1`, `t >= 1`, an even
    /// key length of at least 128 bits, positive rounds and batch size.
    fn check(&self) -> Result<(), Error> {
        let (n, t, l) = (self.parties, self.corruption_threshold, self.key_length);
        if t == 0 || n < 2 * t + 1 {
            return Err(Error::InvalidParameters(format!(
                "need n >= 2t + 1 with t >= 1 (n = {n}, t = {t}); decryption needs t + 1 parties"
            )));
        }
        if l < 128 || l % 2 != 0 {
            return Err(Error::InvalidParameters(format!(
                "key_length {l} must be even and at least 128"
            )));
        }
        if self.correct_param_biprime == 0 || self.batch_size == 0 {
            return Err(Error::InvalidParameters(
                "correct_param_biprime and batch_size must be positive".into(),
            ));
        }
        Ok(())
    }
}

/// The sieve modulus `M' = 4 * prod r` and the sieve primes `r` for `n`
/// parties and factors of `half` bits.
fn sieve_primes(n: usize, half: u32) -> (Integer, Vec<u32>) {
    // Sieve primes: odd primes r whose product, times 4, stays 2^(slack)
    // below 2^(L/2), so the random multiple of M' that sets p's size
    // has at least `slack` bits of range.
    let slack = 24 + (usize::BITS - n.leading_zeros());
    let limit = Integer::from(1) << half.saturating_sub(slack);
    let mut m = Integer::from(4);
    let mut sieve = Vec::new();
    for r in small_primes(1 << 20).into_iter().skip(1) {
        let next = Integer::from(&m * r);
        if next > limit {
            break;
        }
        m = next;
        sieve.push(r);
    }
    (m, sieve)
}

/// `w_base` and `w_range` of [`Setup`] for `n` parties, an `l`-bit `N`
/// and the sieve modulus `m`.
///
/// # Errors
/// [`Error::InvalidParameters`] if the range is below 2^16 (the key is too
/// small for the sieve).
fn size_offsets(n: usize, l: u32, m: &Integer) -> Result<(Integer, Integer), Error> {
    // p and q in [base, 2^(L/2)) with base = ceil(sqrt(2) 2^(L/2 - 1)),
    // so N = p q has exactly L bits.
    let upper = Integer::from(1) << (l / 2);
    let base = Integer::from((Integer::from(1) << (l - 1)).sqrt_ref()) + 1u32;
    let w_base = (Integer::from(&base + m) - 1u32) / m;
    let room = Integer::from(&upper / m) - n as u32 - &w_base;
    let w_range = room / n as u32;
    if w_range < 1 << 16 {
        return Err(Error::InvalidParameters("key_length too small for the sieve".into()));
    }
    Ok((w_base, w_range))
}

/// The CRT basis of the sieve primes modulo `m` and the basis element
/// for the residue mod 4.
fn crt_basis(m: &Integer, sieve: &[u32]) -> (Vec<Integer>, Integer) {
    // CRT basis: e_r = (M'/r) ((M'/r)^-1 mod r), so x = sum x_r e_r mod M'.
    let basis = |r: u32| -> Integer {
        let co = Integer::from(m / r);
        let inv = Integer::from(co.mod_u(r)).invert(&Integer::from(r)).unwrap_or_default();
        co * inv
    };
    let crt_basis = sieve.iter().map(|&r| basis(r)).collect();
    let crt_four = {
        let co = Integer::from(m / 4u32);
        let inv = Integer::from(co.mod_u(4)).invert(&Integer::from(4)).unwrap_or_default();
        co * inv
    };
    (crt_basis, crt_four)
}

/// Lagrange coefficients at 0 for the points `1..=n` over `F_r`, per
/// sieve prime `r` (zeros for `r <= n`).
fn lagrange_small(sieve: &[u32], n: usize) -> Vec<Vec<u64>> {
    sieve
        .iter()
        .map(|&r| {
            let r64 = u64::from(r);
            (1..=n as u64)
                .map(|j| {
                    if r as usize <= n {
                        return 0;
                    }
                    let (mut num, mut den) = (1u64, 1u64);
                    for k in (1..=n as u64).filter(|&k| k != j) {
                        num = num * (r64 - k % r64) % r64;
                        den = den * ((j + r64 - k % r64) % r64) % r64;
                    }
                    num * crate::math::pow_mod_small(den, r64 - 2, r64) % r64
                })
                .collect()
        })
        .collect()
}

/// Public values derived from [`Params`]; the same at every party.
#[derive(Debug, Clone)]
pub struct Setup {
    /// The settings.
    pub params: Params,
    /// Odd primes `3 <= r` sieved out of `p` and `q` (product times 4 is `sieve_modulus`).
    pub sieve_primes: Vec<u32>,
    /// Lagrange coefficients at 0 for the points `1..=n` over `F_r`, per
    /// sieve prime (zeros for `r <= n`, which are not Shamir-shared).
    pub lagrange_small: Vec<Vec<u64>>,
    /// CRT basis for `sieve_primes` modulo `sieve_modulus`.
    pub crt_basis: Vec<Integer>,
    /// CRT basis element for the residue mod 4.
    pub crt_four: Integer,
    /// `M' = 4 * prod sieve_primes`.
    pub sieve_modulus: Integer,
    /// Party 1's size offset: `p >= M' * w_base >= sqrt(2) 2^(L/2 - 1)`.
    pub w_base: Integer,
    /// Each party's random multiple of `M'` is below `w_range`.
    pub w_range: Integer,
    /// Prime field (`> 4 N`) for computing `N = p q` from Shamir shares.
    pub field_n: Integer,
    /// Prime field for the decryption-exponent multiplication (bigger than
    /// every intermediate, with room for the statistical masks).
    pub field_key: Integer,
    /// Primes `N` is trial-divided by.
    pub trial_primes: Vec<u32>,
}

impl Setup {
    /// `n`.
    pub fn n(&self) -> usize {
        self.params.parties
    }
    /// `t`.
    pub fn t(&self) -> usize {
        self.params.corruption_threshold
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn setup_checks_and_sizes() {
        assert!(Params::new(2, 1, 256).setup().is_err(), "n < 2t + 1");
        assert!(Params::new(3, 0, 256).setup().is_err());
        assert!(Params::new(3, 1, 100).setup().is_err());
        let s = Params::new(3, 1, 1024).setup().unwrap();
        assert!(s.sieve_modulus.significant_bits() <= 512 - 24);
        assert!(s.sieve_primes.len() > 50, "{}", s.sieve_primes.len());
        let s = Params::new(3, 1, 2048).setup().unwrap();
        assert!(*s.sieve_primes.last().unwrap() > 600);
    }
}
