//! Verifiable threshold decryption: verification keys and proofs that a
//! partial decryption is correct (Shoup, "Practical threshold
//! signatures", Eurocrypt 2000, section 2, the proof of correctness;
//! Damgard and Jurik, "A generalisation, a simplification and some
//! applications of Paillier's probabilistic public-key system", PKC 2001,
//! section 5, which carries it over to `Z_{N^2}^*`).
//!
//! **Verification base.** `v = ((1 + N) h^N)^2 mod N^2` with `h` a hash of
//! `N` (public coins): a square, so a generator of the squares with the
//! same probability as Shoup's random `v`, and with a known plaintext, so
//! that `v^s = 1 + 2 theta N (mod N^2)` for `s = beta phi(N)`: the key
//! generation checks `theta` against the parties' commitments.
//!
//! **Verification keys** without a dealer. Party `i` shares its mask `r_i`
//! over the integers with `g_i(x) = r_i + sum_k c_ik x^k` (see
//! [`crate::key`]) and broadcasts Feldman commitments `C_ik = v^{c_ik}`
//! (`C_i0 = v^{r_i}`). The recipient `j` checks `v^{g_i(j)} = prod_k
//! C_ik^{j^k}` for every dealer `i`, so its share matches what everyone
//! sees. Every party then computes `v_j = v^{s_j} = v^z prod_i prod_k
//! C_ik^{j^k}` for every `j` (`z` is public): no party chooses its own
//! verification key.
//!
//! **Proof** (Shoup's, over the integers). A partial decryption is
//! `c_j = c^{2 Delta s_j}`; with `c~ = c^{4 Delta}` the party proves
//! `log_{c~} c_j^2 = log_v v_j`: it picks `r` with
//! `share_bits + 2 * 128` bits, computes `a = c~^r`, `b = v^r`,
//! `e = H(N, v, c~, c_j^2, v_j, a, b, j)` (128 bits) and `z = r + e s_j`;
//! the verifier recomputes `a = c~^z c_j^{-2e}`, `b = v^z v_j^{-e}` and
//! checks `e`. Squaring `c_j` removes the sign a party could flip; the
//! factor `2 Delta` in the exponent keeps `c = -1` from revealing a
//! share's parity.
//!
//! **Caveat.** Shoup's soundness argument needs safe primes, which a
//! dealerless key does not have (Boneh-Franklin primes are `3 mod 4`
//! only). A cheater that knows an element `w` of small order could shift
//! its partial by it and, under Fiat-Shamir, find a passing proof after
//! about `ord(w)` offline tries of `r`. Such a shift lands in the `Z_N^*`
//! component of `Z_{N^2}^*`, so the combination no longer satisfies
//! `w = 1 (mod N)` and [`crate::decrypt::PublicKey::combine`] fails
//! (`BadPartials` naming no one) instead of returning a wrong plaintext;
//! finding such a `w` without the factors of `N` is believed hard. A shift
//! of the plaintext itself needs an element of order `p` or `q`, that is,
//! the factorization.

use rand_core::{CryptoRng, RngCore};
use rug::integer::Order;
use rug::Integer;
use sha2::{Digest, Sha256};

use crate::math::{random_bits, secure_pow_mod};

/// Bits of the Fiat-Shamir challenge `e`.
pub const CHALLENGE_BITS: u32 = 128;

/// Statistical zero-knowledge of a proof: `r` has this many bits more
/// than `e * s_j` can have.
pub const STAT_BITS: u32 = 128;

/// The verification values of a key: the base and every party's `v_j`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    /// The base `v` ([`base`]).
    pub v: Integer,
    /// `v_j = v^{s_j} mod N^2`, element `j - 1` for party `j`.
    pub keys: Vec<Integer>,
    /// Every share `|s_j|` is below `2^share_bits` (it sets the size of
    /// the proof's randomness and bounds an honest response).
    pub share_bits: u32,
}

/// A proof that a partial decryption is `c^{2 Delta s_j}` for the `s_j`
/// behind `v_j`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proof {
    /// The challenge, below `2^CHALLENGE_BITS`.
    pub e: Integer,
    /// The response `r + e s_j`.
    pub z: Integer,
}

/// The verification base for `N`: `((1 + N) h^N)^2 mod N^2` with
/// `h = SHA-256 expansion of ("sigil-paillier/verify/v1", N) mod N`.
pub fn base(n: &Integer) -> Integer {
    let n2 = Integer::from(n.square_ref());
    let nbytes = n.to_digits::<u8>(Order::Msf);
    let len = usize::try_from(n.significant_bits() / 8 + 16).unwrap_or(0);
    let mut k = 0u32;
    loop {
        let buf = crate::math::hash_expand(b"sigil-paillier/verify/v1", &[&nbytes, &k.to_be_bytes()], len);
        let h = Integer::from_digits(&buf, Order::Msf) % n;
        k += 1;
        if h <= 1 || Integer::from(h.gcd_ref(n)) != 1 {
            continue;
        }
        let hn = h.pow_mod(n, &n2).unwrap_or_default();
        let x = Integer::from(n + 1u32) * hn % &n2;
        return x.square() % &n2;
    }
}

/// Feldman commitments `v^{coeff} mod N^2` to a polynomial's coefficients
/// (constant term first). The coefficients are secret: GMP's
/// constant-time exponentiation.
pub fn commit(v: &Integer, n2: &Integer, coeffs: &[Integer]) -> Vec<Integer> {
    coeffs
        .iter()
        .map(|c| secure_pow_mod(v, c, n2).unwrap_or_default())
        .collect()
}

/// `prod_k C_k^{j^k} mod N^2`: the committed polynomial at `x = j`, in
/// the exponent of `v`.
pub fn eval_commitments(commitments: &[Integer], j: usize, n2: &Integer) -> Integer {
    let x = Integer::from(j);
    let mut acc = Integer::from(1);
    let mut power = Integer::from(1);
    for c in commitments {
        let f = c.clone().pow_mod(&power, n2).unwrap_or_default();
        acc = acc * f % n2;
        power *= &x;
    }
    acc
}

/// Whether `share = g(j)` for the polynomial committed to.
pub fn share_matches(v: &Integer, n2: &Integer, commitments: &[Integer], j: usize, share: &Integer) -> bool {
    secure_pow_mod(v, share, n2).is_some_and(|lhs| lhs == eval_commitments(commitments, j, n2))
}

/// `v^z prod_i C_i(j)` for party `j`: its verification key `v^{s_j}`.
/// `None` if `v` is not invertible (never for [`base`]).
pub fn verification_key(
    v: &Integer,
    n2: &Integer,
    z: &Integer,
    commitments: &[Vec<Integer>],
    j: usize,
) -> Option<Integer> {
    let mut acc = v.clone().pow_mod(z, n2).ok()?;
    for c in commitments {
        acc = acc * eval_commitments(c, j, n2) % n2;
    }
    Some(acc)
}

/// Whether `v^s = 1 + 2 theta N (mod N^2)` for the committed
/// `s = z + sum_i r_i`, i.e. `theta = s mod N`.
pub fn theta_matches(v: &Integer, n: &Integer, z: &Integer, constant_terms: &[&Integer], theta: &Integer) -> bool {
    let n2 = Integer::from(n.square_ref());
    let Ok(mut acc) = v.clone().pow_mod(z, &n2) else {
        return false;
    };
    for c in constant_terms {
        acc = acc * *c % &n2;
    }
    let want = (Integer::from(theta * 2u32) * n + 1u32) % &n2;
    acc == want
}

/// The Fiat-Shamir challenge over the statement and the commitments.
fn challenge(n: &Integer, items: &[&Integer], j: usize) -> Integer {
    let mut h = Sha256::new().chain_update(b"sigil-paillier/partial-proof/v1");
    for x in std::iter::once(n).chain(items.iter().copied()) {
        let d = x.to_digits::<u8>(Order::Msf);
        h.update((d.len() as u64).to_be_bytes());
        h.update(&d);
    }
    h.update((j as u64).to_be_bytes());
    let e = Integer::from_digits(&h.finalize(), Order::Msf);
    e.keep_bits(CHALLENGE_BITS)
}

/// The statement's public values: `c~ = c^{4 Delta}` and `c_j^2`
/// (verifier side).
fn statement(c: &Integer, delta: &Integer, partial: &Integer, n2: &Integer) -> (Integer, Integer) {
    let ct = c.clone().pow_mod(&Integer::from(delta * 4u32), n2).unwrap_or_default();
    let p2 = Integer::from(partial.square_ref()) % n2;
    (ct, p2)
}

/// The prover's first move: `r`, `a = c~^r`, `b = v^r` (independent of
/// the partial decryption, so computed beside it).
pub struct Commitment {
    r: Integer,
    ct: Integer,
    a: Integer,
    b: Integer,
}

impl Drop for Commitment {
    fn drop(&mut self) {
        crate::math_wipe(&mut self.r);
    }
}

/// [`Commitment`] for ciphertext `c` under `ver` (`None` for a
/// non-invertible `c`).
///
/// # Security
/// `r` is secret: constant-time exponentiation; wiped on drop.
pub fn commit_proof<R: RngCore + CryptoRng>(
    n: &Integer,
    delta: &Integer,
    ver: &Verification,
    c: &Integer,
    rng: &mut R,
) -> Option<Commitment> {
    let n2 = Integer::from(n.square_ref());
    let ct = c.clone().pow_mod(&Integer::from(delta * 4u32), &n2).ok()?;
    let r = random_bits(ver.share_bits + CHALLENGE_BITS + STAT_BITS, rng);
    // The two exponentiations are independent: one thread each.
    let (a, b) = std::thread::scope(|sc| {
        let b = sc.spawn(|| secure_pow_mod(&ver.v, &r, &n2));
        let a = secure_pow_mod(&ct, &r, &n2);
        (a, b.join().ok().flatten())
    });
    Some(Commitment { r, ct, a: a?, b: b? })
}

/// Party `j`'s proof for its `partial = c^{2 Delta share}` from its
/// [`Commitment`] for the same `c`.
pub fn finish_proof(
    n: &Integer,
    ver: &Verification,
    j: usize,
    partial: &Integer,
    share: &Integer,
    k: Commitment,
) -> Option<Proof> {
    let n2 = Integer::from(n.square_ref());
    let vj = ver.keys.get(j.checked_sub(1)?)?;
    let p2 = Integer::from(partial.square_ref()) % &n2;
    let e = challenge(n, &[&ver.v, &k.ct, &p2, vj, &k.a, &k.b], j);
    let mut es = Integer::from(&e * share);
    let z = Integer::from(&es + &k.r);
    crate::math_wipe(&mut es);
    Some(Proof { e, z })
}

/// Party `j`'s proof for its `partial = c^{2 Delta share}`
/// ([`commit_proof`] then [`finish_proof`]).
#[allow(clippy::too_many_arguments)]
pub fn prove<R: RngCore + CryptoRng>(
    n: &Integer,
    delta: &Integer,
    ver: &Verification,
    j: usize,
    c: &Integer,
    partial: &Integer,
    share: &Integer,
    rng: &mut R,
) -> Option<Proof> {
    let k = commit_proof(n, delta, ver, c, rng)?;
    finish_proof(n, ver, j, partial, share, k)
}

/// Whether `proof` shows `partial = c^{2 Delta s_j}` for party `j`'s
/// verification key (`|z|` bounded by the key's `share_bits`).
pub fn verify(
    n: &Integer,
    delta: &Integer,
    ver: &Verification,
    j: usize,
    c: &Integer,
    partial: &Integer,
    proof: &Proof,
) -> bool {
    let n2 = Integer::from(n.square_ref());
    let Some(vj) = j.checked_sub(1).and_then(|k| ver.keys.get(k)) else {
        return false;
    };
    let zbits = ver.share_bits + CHALLENGE_BITS + STAT_BITS + 1;
    if proof.e < 0 || proof.e.significant_bits() > CHALLENGE_BITS || proof.z.significant_bits() > zbits {
        return false;
    }
    if *partial <= 0 || *partial >= n2 {
        return false;
    }
    let (ct, p2) = statement(c, delta, partial, &n2);
    let neg_e = Integer::from(-&proof.e);
    // a and b are independent: one thread each.
    let (a, b) = std::thread::scope(|sc| {
        let b = sc.spawn(|| {
            let vz = ver.v.clone().pow_mod(&proof.z, &n2).ok()?;
            let vje = vj.clone().pow_mod(&neg_e, &n2).ok()?;
            Some(vz * vje % &n2)
        });
        let a = ct
            .clone()
            .pow_mod(&proof.z, &n2)
            .ok()
            .zip(p2.clone().pow_mod(&neg_e, &n2).ok())
            .map(|(x, y)| x * y % &n2);
        (a, b.join().ok().flatten())
    });
    let (Some(a), Some(b)) = (a, b) else {
        return false;
    };
    challenge(n, &[&ver.v, &ct, &p2, vj, &a, &b], j) == proof.e
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::math::delta;
    use rand::SeedableRng;

    #[test]
    fn the_base_has_plaintext_two() {
        let n = Integer::from(1_000_003u64 * 1_000_033u64);
        let v = base(&n);
        let n2 = Integer::from(n.square_ref());
        // v^phi(N) = (1 + N)^{2 phi} = 1 + 2 phi N.
        let phi = Integer::from(1_000_002u64 * 1_000_032u64);
        let got = v.clone().pow_mod(&phi, &n2).unwrap();
        assert_eq!(got, (Integer::from(&phi * 2u32) * &n + 1u32) % &n2);
        assert_eq!(base(&n), v, "deterministic");
    }

    #[test]
    fn a_proof_verifies_and_a_shifted_partial_does_not() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let n = Integer::from(1_000_003u64 * 1_000_033u64);
        let n2 = Integer::from(n.square_ref());
        let d = delta(3);
        let v = base(&n);
        let share = Integer::from(123_456_789_012u64);
        let ver = Verification {
            keys: vec![Integer::from(1), v.clone().pow_mod(&share, &n2).unwrap()],
            v,
            share_bits: 40,
        };
        let c = Integer::from(987_654_321_123u64);
        let partial = c.clone().pow_mod(&(Integer::from(&d * 2u32) * &share), &n2).unwrap();
        let proof = prove(&n, &d, &ver, 2, &c, &partial, &share, &mut rng).unwrap();
        assert!(verify(&n, &d, &ver, 2, &c, &partial, &proof));
        assert!(!verify(&n, &d, &ver, 1, &c, &partial, &proof), "another party's key");
        let shifted = partial.clone() * (Integer::from(&n + 1u32)) % &n2;
        assert!(!verify(&n, &d, &ver, 2, &c, &shifted, &proof), "plaintext shifted");
        let mut bad = proof.clone();
        bad.z += 1;
        assert!(!verify(&n, &d, &ver, 2, &c, &partial, &bad));
        bad.z = Integer::from(1) << 1000u32;
        assert!(!verify(&n, &d, &ver, 2, &c, &partial, &bad), "oversized response");
    }
}
