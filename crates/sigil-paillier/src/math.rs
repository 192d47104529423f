//! Arithmetic shared by the protocol steps: random integers, small
//! primes, Shamir sharing over prime fields (big and word-sized), and
//! integer Lagrange coefficients scaled by `Delta = n!`.
//!
//! Shamir shares are the polynomial's values at `x = 1..=n` (party `i`,
//! 1-based, holds `f(i)`).

use rand_core::{CryptoRng, RngCore};
use rug::integer::Order;
use rug::Integer;

/// `x mod m` in `[0, m)` for `m > 0`.
pub fn modulo(x: Integer, m: &Integer) -> Integer {
    let r = x % m;
    if r < 0 {
        r + m
    } else {
        r
    }
}

/// A uniform integer in `[0, bound)` (`bound > 0`; 64 extra random bits
/// make the modular bias below 2^-64).
pub fn random_below<R: RngCore + CryptoRng>(bound: &Integer, rng: &mut R) -> Integer {
    let bytes = usize::try_from(bound.significant_bits().div_ceil(8)).unwrap_or(0) + 8;
    let mut buf = vec![0u8; bytes];
    rng.fill_bytes(&mut buf);
    let x = Integer::from_digits(&buf, Order::Msf) % bound;
    zeroize::Zeroize::zeroize(&mut buf);
    x
}

/// A uniform integer in `[0, 2^bits)`.
pub fn random_bits<R: RngCore + CryptoRng>(bits: u32, rng: &mut R) -> Integer {
    random_below(&(Integer::from(1) << bits), rng)
}

/// A uniform `u64` in `[0, bound)` (`bound > 0`).
pub fn random_u64_below<R: RngCore + CryptoRng>(bound: u64, rng: &mut R) -> u64 {
    // 128-bit draw: bias below 2^-64.
    let x = (u128::from(rng.next_u64()) << 64) | u128::from(rng.next_u64());
    u64::try_from(x % u128::from(bound)).unwrap_or(0)
}

/// The primes `2 <= r < bound` (Eratosthenes).
pub fn small_primes(bound: u32) -> Vec<u32> {
    let bound = bound as usize;
    let mut composite = vec![false; bound.max(2)];
    let mut out = Vec::new();
    for i in 2..bound {
        if composite.get(i).copied().unwrap_or(true) {
            continue;
        }
        out.push(u32::try_from(i).unwrap_or(u32::MAX));
        let mut j = i * i;
        while j < bound {
            if let Some(c) = composite.get_mut(j) {
                *c = true;
            }
            j += i;
        }
    }
    out
}

/// Shamir shares of `secret` with a random polynomial of degree `t` over
/// `Z_modulus` (prime): the values at `x = 1..=n`.
pub fn share<R: RngCore + CryptoRng>(
    secret: &Integer,
    t: usize,
    n: usize,
    modulus: &Integer,
    rng: &mut R,
) -> Vec<Integer> {
    let mut coeffs = Vec::with_capacity(t + 1);
    coeffs.push(modulo(secret.clone(), modulus));
    for _ in 0..t {
        coeffs.push(random_below(modulus, rng));
    }
    (1..=n)
        .map(|x| {
            // Horner.
            let mut acc = Integer::new();
            for c in coeffs.iter().rev() {
                acc *= x as u32;
                acc += c;
                acc %= modulus;
            }
            acc
        })
        .collect()
}

/// The Lagrange coefficient at 0 of point `j` among `xs` (all distinct,
/// nonzero mod `modulus`), in `Z_modulus`.
pub fn lagrange_at_zero(xs: &[usize], j: usize, modulus: &Integer) -> Integer {
    let mut num = Integer::from(1);
    let mut den = Integer::from(1);
    for &k in xs.iter().filter(|&&k| k != j) {
        num *= -(k as i64);
        den *= j as i64 - k as i64;
    }
    let den_inv = modulo(den, modulus).invert(modulus).unwrap_or_default();
    modulo(num * den_inv, modulus)
}

/// Reconstructs `f(0)` from `(x, f(x))` points over `Z_modulus`, in `[0, modulus)`.
pub fn reconstruct(points: &[(usize, Integer)], modulus: &Integer) -> Integer {
    let xs: Vec<usize> = points.iter().map(|(x, _)| *x).collect();
    let mut acc = Integer::new();
    for (x, y) in points {
        acc += lagrange_at_zero(&xs, *x, modulus) * y;
    }
    modulo(acc, modulus)
}

/// `v` in `[0, modulus)` read as a centered integer in `(-modulus/2, modulus/2]`.
pub fn centered(v: Integer, modulus: &Integer) -> Integer {
    if Integer::from(&v << 1u32) > *modulus {
        v - modulus
    } else {
        v
    }
}

/// Shamir shares of `secret` over `F_r` (`r` prime, `r > n`).
pub fn share_small<R: RngCore + CryptoRng>(secret: u64, t: usize, n: usize, r: u64, rng: &mut R) -> Vec<u64> {
    let mut coeffs = vec![secret % r];
    for _ in 0..t {
        coeffs.push(random_u64_below(r, rng));
    }
    (1..=n as u64)
        .map(|x| coeffs.iter().rev().fold(0u64, |acc, c| (acc * x + c) % r))
        .collect()
}

/// Reconstructs `f(0)` over `F_r` from the values at `x = 1..=values.len()`.
pub fn reconstruct_small(values: &[u64], r: u64) -> u64 {
    let n = values.len() as i64;
    let ri = i128::from(r as i64);
    let mut acc: i128 = 0;
    for (idx, &y) in values.iter().enumerate() {
        let j = idx as i64 + 1;
        let (mut num, mut den) = (1i128, 1i128);
        for k in (1..=n).filter(|&k| k != j) {
            num = (num * i128::from(-k)).rem_euclid(ri);
            den = (den * i128::from(j - k)).rem_euclid(ri);
        }
        let inv = pow_mod_small(u64::try_from(den).unwrap_or(0), r - 2, r);
        acc = (acc + num * i128::from(inv) % ri * i128::from(y)).rem_euclid(ri);
    }
    u64::try_from(acc).unwrap_or(0)
}

/// `b^e mod m` for word-sized values.
pub fn pow_mod_small(b: u64, mut e: u64, m: u64) -> u64 {
    let m128 = u128::from(m);
    let (mut base, mut acc) = (u128::from(b) % m128, 1u128);
    while e > 0 {
        if e & 1 == 1 {
            acc = acc * base % m128;
        }
        base = base * base % m128;
        e >>= 1;
    }
    u64::try_from(acc).unwrap_or(0)
}

/// At least `len` bytes of SHA-256 output over `(tag, parts..., block)`
/// for `block = 0, 1, ...` (big-endian `u32`), concatenated: public
/// coins derived from public values (biprimality bases, the verification
/// base).
pub fn hash_expand(tag: &[u8], parts: &[&[u8]], len: usize) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    let mut buf = Vec::with_capacity(len + 32);
    let mut block = 0u32;
    while buf.len() < len {
        let mut h = Sha256::new().chain_update(tag);
        for p in parts {
            h.update(p);
        }
        buf.extend_from_slice(&h.chain_update(block.to_be_bytes()).finalize());
        block += 1;
    }
    buf
}

/// `Delta = n!`.
pub fn delta(n: usize) -> Integer {
    Integer::from(Integer::factorial(u32::try_from(n).unwrap_or(u32::MAX)))
}

/// `Delta * lambda_{0,j}` over the integers for the set `xs` (exact:
/// `Delta = n!` clears every denominator `prod (j - k)`).
pub fn lagrange_delta(xs: &[usize], j: usize, n: usize) -> Integer {
    let mut num = delta(n);
    let mut den = Integer::from(1);
    for &k in xs.iter().filter(|&&k| k != j) {
        num *= -(k as i64);
        den *= j as i64 - k as i64;
    }
    num / den
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn shamir_round_trips_over_big_and_small_fields() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let p = Integer::from(Integer::u_pow_u(2, 127)) - 1u32; // a Mersenne prime
        let secret = Integer::from(123_456_789u64);
        let shares = share(&secret, 2, 5, &p, &mut rng);
        let pts: Vec<(usize, Integer)> = shares.iter().cloned().enumerate().map(|(i, s)| (i + 1, s)).collect();
        assert_eq!(reconstruct(&pts[..3], &p), secret);
        assert_eq!(reconstruct(&pts[2..], &p), secret);
        assert_ne!(
            reconstruct(&pts[..2], &p),
            secret,
            "t shares do not determine it (w.h.p.)"
        );
        let s = share_small(4, 1, 3, 11, &mut rng);
        assert_eq!(reconstruct_small(&s, 11), 4);
        assert_eq!(small_primes(20), vec![2, 3, 5, 7, 11, 13, 17, 19]);
        assert_eq!(centered(Integer::from(10), &Integer::from(11)), -1);
    }

    #[test]
    fn integer_lagrange_with_delta_interpolates() {
        // f(x) = 7 + 3x + 2x^2 over Z; Delta f(0) from any 3 of 5 points.
        let f = |x: i64| 7 + 3 * x + 2 * x * x;
        let xs = [2usize, 4, 5];
        let sum: Integer = xs.iter().map(|&j| lagrange_delta(&xs, j, 5) * f(j as i64)).sum();
        assert_eq!(sum, delta(5) * 7u32);
    }
}

/// `base^e mod m` in GMP's constant-time `mpz_powm_sec`, for secret
/// exponents (decryption shares, factor shares); a negative `e` uses the
/// inverse of `base`. `None` for an even or non-positive modulus (every
/// Paillier modulus is odd) or a non-invertible base with a negative `e`.
pub fn secure_pow_mod(base: &Integer, e: &Integer, m: &Integer) -> Option<Integer> {
    if m.is_even() || *m <= 1 {
        return None;
    }
    match e.cmp0() {
        std::cmp::Ordering::Equal => Some(Integer::from(1)),
        std::cmp::Ordering::Greater => Some(Integer::from(base.secure_pow_mod_ref(e, m))),
        std::cmp::Ordering::Less => {
            let inv = Integer::from(base.invert_ref(m)?);
            let neg = Integer::from(-e);
            Some(Integer::from(inv.secure_pow_mod_ref(&neg, m)))
        }
    }
}

#[cfg(test)]
mod secure_pow_tests {
    use super::*;

    #[test]
    fn secure_pow_mod_matches_pow_mod() {
        let m = Integer::from(1_000_003u64 * 1_000_033u64);
        let b = Integer::from(123_456_789u64);
        for e in [0i64, 1, 2, 65_537, 1 << 40, -1, -65_537] {
            let e = Integer::from(e);
            let want = b.clone().pow_mod(&e, &m).ok();
            assert_eq!(secure_pow_mod(&b, &e, &m), want, "{e}");
        }
        assert_eq!(
            secure_pow_mod(&b, &Integer::from(3), &Integer::from(10)),
            None,
            "even modulus"
        );
    }
}
