//! Standard Paillier with `g = N + 1` (any Paillier library encrypts to
//! it) and threshold decryption (Veugen et al. section 3.3): party `j`
//! publishes `c_j = c^{s_j} mod N^2`; any `t + 1` of them combine as
//! `w = prod c_j^{Delta lambda_j} = c^{Delta s}`, so
//! `L(w) = m Delta theta (mod N)` with `L(x) = (x - 1) / N`, and
//! `m = L(w) (Delta theta)^-1 mod N`.

use rand_core::{CryptoRng, RngCore};
use rug::Integer;

use crate::math::{delta, lagrange_delta, random_below};
use crate::Error;

/// The public key and the public decryption values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    /// `N = p q`.
    pub n: Integer,
    /// `N^2`.
    pub n2: Integer,
    /// `theta = s mod N`.
    pub theta: Integer,
    /// Number of parties (for `Delta = n!`).
    pub parties: usize,
    /// Corruption threshold `t`; `t + 1` partial decryptions are needed.
    pub threshold: usize,
}

impl PublicKey {
    /// The key for `N`, `theta`, `n` parties, threshold `t`.
    pub fn new(n: Integer, theta: Integer, parties: usize, threshold: usize) -> Self {
        let n2 = Integer::from(n.square_ref());
        Self {
            n,
            n2,
            theta,
            parties,
            threshold,
        }
    }

    /// `(1 + N)^m r^N mod N^2` with `r` uniform in `Z_N^*`.
    ///
    /// # Errors
    /// [`Error::InvalidCiphertext`] if `m` is outside `[0, N)`.
    pub fn encrypt<R: RngCore + CryptoRng>(&self, m: &Integer, rng: &mut R) -> Result<Integer, Error> {
        if *m < 0 || *m >= self.n {
            return Err(Error::InvalidCiphertext("plaintext outside [0, N)".into()));
        }
        let r = loop {
            let r = random_below(&self.n, rng);
            if r > 0 && Integer::from(r.gcd_ref(&self.n)) == 1 {
                break r;
            }
        };
        let gm = (Integer::from(m * &self.n) + 1u32) % &self.n2;
        let rn = r.pow_mod(&self.n, &self.n2).unwrap_or_default();
        Ok(gm * rn % &self.n2)
    }

    /// The ciphertext of the sum of the plaintexts.
    pub fn add(&self, c1: &Integer, c2: &Integer) -> Integer {
        Integer::from(c1 * c2) % &self.n2
    }

    /// Checks `c` is in `[1, N^2)` and invertible mod `N`.
    ///
    /// # Errors
    /// [`Error::InvalidCiphertext`] otherwise.
    pub fn check_ciphertext(&self, c: &Integer) -> Result<(), Error> {
        if *c < 1 || *c >= self.n2 {
            return Err(Error::InvalidCiphertext("ciphertext outside [1, N^2)".into()));
        }
        if Integer::from(c.gcd_ref(&self.n)) != 1 {
            return Err(Error::InvalidCiphertext("ciphertext not invertible mod N".into()));
        }
        Ok(())
    }

    /// Combines `(party, c^{s_party})` from `t + 1` distinct parties into
    /// the plaintext.
    ///
    /// # Errors
    /// [`Error::InvalidParameters`] for too few or repeated parties or a
    /// party number out of range.
    pub fn combine(&self, partials: &[(usize, Integer)]) -> Result<Integer, Error> {
        let mut xs: Vec<usize> = partials.iter().map(|(j, _)| *j).collect();
        xs.sort_unstable();
        xs.dedup();
        if xs.len() != partials.len() || xs.len() < self.threshold + 1 {
            return Err(Error::InvalidParameters(format!(
                "need {} partial decryptions from distinct parties",
                self.threshold + 1
            )));
        }
        if xs.iter().any(|&j| j == 0 || j > self.parties) {
            return Err(Error::InvalidParameters("party number out of range".into()));
        }
        let xs: Vec<usize> = xs.into_iter().take(self.threshold + 1).collect();
        let mut w = Integer::from(1);
        for (j, cj) in partials.iter().filter(|(j, _)| xs.contains(j)) {
            let e = lagrange_delta(&xs, *j, self.parties);
            let f = cj
                .clone()
                .pow_mod(&e, &self.n2)
                .map_err(|_| Error::InvalidCiphertext("partial decryption not invertible".into()))?;
            w = w * f % &self.n2;
        }
        let l = (w - 1u32) / &self.n;
        let k = (delta(self.parties) * &self.theta)
            .invert(&self.n)
            .map_err(|_| Error::InvalidParameters("Delta * theta not invertible".into()))?;
        Ok(l * k % &self.n)
    }
}

/// Party's partial decryption `c^{share} mod N^2` (the ciphertext must
/// have passed [`PublicKey::check_ciphertext`]).
///
/// # Errors
/// [`Error::InvalidCiphertext`] if `c` is not invertible (negative shares).
pub fn partial(pk: &PublicKey, c: &Integer, share: &Integer) -> Result<Integer, Error> {
    pk.check_ciphertext(c)?;
    crate::math::secure_pow_mod(c, share, &pk.n2).ok_or_else(|| Error::InvalidCiphertext("not invertible".into()))
}
