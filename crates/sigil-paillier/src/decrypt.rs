//! Standard Paillier with `g = N + 1` (any Paillier library encrypts to
//! it) and threshold decryption (Veugen et al. section 3.3, with Shoup's
//! exponent `2 Delta s_j`, Damgard-Jurik section 5): party `j` publishes
//! `c_j = c^{2 Delta s_j} mod N^2` and a proof ([`crate::verify`]); any
//! `t + 1` of them combine as `w = prod c_j^{2 Delta lambda_j} =
//! c^{4 Delta^2 s}`, so `L(w) = 4 Delta^2 m theta (mod N)` with
//! `L(x) = (x - 1) / N`, and `m = L(w) (4 Delta^2 theta)^-1 mod N`.

use rand_core::{CryptoRng, RngCore};
use rug::Integer;

use crate::math::{delta, lagrange_delta, random_below};
use crate::verify::{Proof, Verification};
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
    /// Verification keys (`None` for keys made before verifiable
    /// decryption: their partials are combined unchecked).
    pub verification: Option<Verification>,
}

/// A party's partial decryption as sent to the combiner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partial {
    /// 1-based party number.
    pub party: usize,
    /// `c^{2 Delta s_party} mod N^2`.
    pub value: Integer,
    /// The proof ([`crate::verify`]); required when the key has
    /// verification keys.
    pub proof: Option<Proof>,
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
            verification: None,
        }
    }

    /// The key with its verification values.
    pub fn with_verification(mut self, verification: Verification) -> Self {
        self.verification = Some(verification);
        self
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

    /// Combines `(party, c^{2 Delta s_party})` from `t + 1` distinct
    /// parties into the plaintext (unchecked; see [`Self::combine_verified`]).
    ///
    /// # Errors
    /// [`Error::InvalidParameters`] for too few or repeated parties or a
    /// party number out of range; [`Error::BadPartials`] (naming no one)
    /// when the combination is not `1 (mod N)`, i.e. some partial is wrong.
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
            let e = lagrange_delta(&xs, *j, self.parties) * 2u32;
            let f = cj
                .clone()
                .pow_mod(&e, &self.n2)
                .map_err(|_| Error::InvalidCiphertext("partial decryption not invertible".into()))?;
            w = w * f % &self.n2;
        }
        if Integer::from(&w % &self.n) != 1 {
            return Err(Error::BadPartials {
                parties: vec![],
                reason: "the partial decryptions do not combine to 1 mod N".into(),
            });
        }
        let l = (w - 1u32) / &self.n;
        let d = delta(self.parties);
        let k = (Integer::from(d.square_ref()) * 4u32 * &self.theta)
            .invert(&self.n)
            .map_err(|_| Error::InvalidParameters("4 Delta^2 theta not invertible".into()))?;
        Ok(l * k % &self.n)
    }

    /// Checks every partial's proof except `trusted`'s (the combiner's
    /// own), then combines.
    ///
    /// # Errors
    /// [`Error::BadPartials`] naming every party whose proof is missing
    /// or wrong (a key without verification keys: nothing is checked);
    /// then the errors of [`Self::combine`].
    pub fn combine_verified(
        &self,
        c: &Integer,
        partials: &[Partial],
        trusted: Option<usize>,
    ) -> Result<Integer, Error> {
        // One thread per checked partial below: never more than the parties.
        if partials.len() > self.parties {
            return Err(Error::InvalidParameters(format!(
                "{} partial decryptions for {} parties",
                partials.len(),
                self.parties
            )));
        }
        if let Some(ver) = &self.verification {
            let d = delta(self.parties);
            let ok = |p: &Partial| {
                p.proof
                    .as_ref()
                    .is_some_and(|proof| crate::verify::verify(&self.n, &d, ver, p.party, c, &p.value, proof))
            };
            // One thread per partial to check (at most `parties`, above).
            let bad: Vec<usize> = std::thread::scope(|sc| {
                let checks: Vec<_> = partials
                    .iter()
                    .filter(|p| Some(p.party) != trusted)
                    .map(|p| (p.party, sc.spawn(move || ok(p))))
                    .collect();
                checks
                    .into_iter()
                    .filter_map(|(j, h)| (!h.join().unwrap_or(false)).then_some(j))
                    .collect()
            });
            if !bad.is_empty() {
                return Err(Error::BadPartials {
                    parties: bad,
                    reason: "partial decryption proof missing or wrong".into(),
                });
            }
        }
        let plain: Vec<(usize, Integer)> = partials.iter().map(|p| (p.party, p.value.clone())).collect();
        self.combine(&plain)
    }
}

/// Party's partial decryption `c^{2 Delta share} mod N^2` (the
/// ciphertext is checked with [`PublicKey::check_ciphertext`]).
///
/// # Errors
/// [`Error::InvalidCiphertext`] for a ciphertext out of range or not
/// invertible.
pub fn partial(pk: &PublicKey, c: &Integer, share: &Integer) -> Result<Integer, Error> {
    pk.check_ciphertext(c)?;
    let mut e = Integer::from(share * 2u32) * delta(pk.parties);
    let p = crate::math::secure_pow_mod(c, &e, &pk.n2);
    crate::math_wipe(&mut e);
    p.ok_or_else(|| Error::InvalidCiphertext("not invertible".into()))
}

/// [`partial`] with its proof when the key has verification keys.
///
/// # Errors
/// As [`partial`]; [`Error::InvalidParameters`] when the party has no
/// verification key.
pub fn partial_with_proof<R: RngCore + CryptoRng>(
    pk: &PublicKey,
    c: &Integer,
    party: usize,
    share: &Integer,
    rng: &mut R,
) -> Result<Partial, Error> {
    let Some(ver) = &pk.verification else {
        return Ok(Partial {
            party,
            value: partial(pk, c, share)?,
            proof: None,
        });
    };
    pk.check_ciphertext(c)?;
    // The partial and the proof's commitment are independent: in parallel.
    let d = delta(pk.parties);
    let (value, k) = std::thread::scope(|sc| {
        let value = sc.spawn(|| partial(pk, c, share));
        let k = crate::verify::commit_proof(&pk.n, &d, ver, c, rng);
        (value.join(), k)
    });
    let value = value.map_err(|_| Error::InvalidParameters("partial decryption failed".into()))??;
    let no_key = || Error::InvalidParameters(format!("no verification key for party {party}"));
    let proof =
        crate::verify::finish_proof(&pk.n, ver, party, &value, share, k.ok_or_else(no_key)?).ok_or_else(no_key)?;
    Ok(Partial {
        party,
        value,
        proof: Some(proof),
    })
}
