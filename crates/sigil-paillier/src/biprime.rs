//! The distributed biprimality test of Boneh and Franklin (section 3.1;
//! Veugen et al. section 4.4) for `N = p q` with `p = q = 3 (mod 4)` and
//! additive shares `p = sum p_i`, `q = sum q_i` (party 1's shares `3 mod
//! 4`, the others' `0 mod 4`).
//!
//! For a public `g` with Jacobi symbol `(g / N) = 1`, party 1 publishes
//! `v_1 = g^((N + 1 - p_1 - q_1) / 4)` and party `i > 1` publishes
//! `v_i = g^((p_i + q_i) / 4)` (mod `N`). If `N` is a product of two
//! primes then `v_1 = +-prod_{i>1} v_i`, since the product is
//! `g^(phi(N)/4)`; otherwise the check fails for at least half of the `g`
//! (for all but a negligible fraction of `N` of this shape). The bases come
//! from a hash of the session and `N` (public coins; the model is
//! semi-honest).

use rug::integer::Order;
use rug::Integer;

/// `count` test bases for `N`: SHA-256 expansions of `(session, N, k)`
/// reduced mod `N`, kept when their Jacobi symbol is 1.
pub fn bases(session: &[u8], n: &Integer, count: u32) -> Vec<Integer> {
    bases_range(session, n, 0, count)
}

/// Bases number `skip..skip + count` of [`bases`] (the same sequence), so
/// a candidate can be screened with the first base before the others are
/// derived.
pub fn bases_range(session: &[u8], n: &Integer, skip: u32, count: u32) -> Vec<Integer> {
    let total = (skip + count) as usize;
    let nbytes = n.to_string().into_bytes();
    let len = usize::try_from(n.significant_bits() / 8 + 16).unwrap_or(0);
    let mut out = Vec::new();
    let mut k = 0u64;
    while out.len() < total {
        let buf = crate::math::hash_expand(b"sigil-paillier/biprime/v1", &[session, &nbytes, &k.to_be_bytes()], len);
        let g = Integer::from_digits(&buf, Order::Msf) % n;
        if g.jacobi(n) == 1 {
            out.push(g);
        }
        k += 1;
    }
    out.split_off(skip as usize)
}

/// Party `me`'s (1-based) published values for `bases`.
pub fn values(me: usize, n: &Integer, p_i: &Integer, q_i: &Integer, bases: &[Integer]) -> Vec<Integer> {
    let e = if me == 1 {
        (Integer::from(n + 1u32) - p_i - q_i) >> 2u32
    } else {
        Integer::from(p_i + q_i) >> 2u32
    };
    bases
        .iter()
        .map(|g| crate::math::secure_pow_mod(g, &e, n).unwrap_or_default())
        .collect()
}

/// Whether every base passes: `v_1 = +-prod_{i>1} v_i (mod N)`, with
/// `values[i - 1]` from party `i`. Fails closed: no parties, no values,
/// or vectors of different lengths never pass.
pub fn check(n: &Integer, values: &[Vec<Integer>]) -> bool {
    let Some((first, rest)) = values.split_first() else {
        return false;
    };
    if first.is_empty() || rest.iter().any(|v| v.len() != first.len()) {
        return false;
    }
    first.iter().enumerate().all(|(k, v1)| {
        let mut prod = Integer::from(1);
        for vs in rest {
            match vs.get(k) {
                Some(v) => prod = (prod * v) % n,
                None => return false,
            }
        }
        *v1 == prod || Integer::from(v1 + &prod) == *n
    })
}
