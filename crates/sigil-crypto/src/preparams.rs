//! Pre-parameters made from safe primes, in the two shapes threshold ECDSA
//! stacks consume:
//! - [`Kind::Cggmp21`]: CGGMP21's `PregeneratedPrimes` (two 1536-bit safe
//!   primes for a party's aux info, at `cggmp21`'s 128-bit security level);
//! - [`Kind::TssLib`]: bnb-chain tss-lib's `LocalPreParams` (GG18/GG20): a
//!   2048-bit Paillier key from two 1024-bit safe primes `P`, `Q` with
//!   `|P - Q|` of at least 1021 bits, and the range-proof parameters
//!   `NTilde = P' Q'` (two more 1024-bit safe primes, `P' = 2p + 1`,
//!   `Q' = 2q + 1`), `h1 = f^2 mod NTilde` for random `f`, `h2 = h1^alpha`,
//!   `beta = alpha^-1 mod pq` (tss-lib `ecdsa/keygen/prepare.go`).
//!   [`TssLibPreParams::to_tss_lib_json`] writes the JSON Go's
//!   `encoding/json` reads into `keygen.LocalPreParams`.
//!
//! Security: every field here is secret (the primes factor the moduli).
//! Whoever generates them knows the party's Paillier secret.

use rand_core::{CryptoRng, RngCore};
use rug::Integer;
use zeroize::Zeroize;

use crate::Error;

/// Which shape of pre-parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Two 1536-bit safe primes (CGGMP21 `PregeneratedPrimes`).
    Cggmp21,
    /// tss-lib `LocalPreParams`: four 1024-bit safe primes and derived values.
    TssLib,
}

impl Kind {
    /// Safe primes one set needs.
    pub fn primes(self) -> usize {
        match self {
            Kind::Cggmp21 => 2,
            Kind::TssLib => 4,
        }
    }

    /// Bits of each safe prime.
    pub fn bits(self) -> u32 {
        match self {
            Kind::Cggmp21 => 1536,
            Kind::TssLib => 1024,
        }
    }

    /// The wire name (`cggmp21`, `tss-lib`).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Cggmp21 => "cggmp21",
            Kind::TssLib => "tss-lib",
        }
    }
}

impl std::str::FromStr for Kind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "cggmp21" => Ok(Kind::Cggmp21),
            "tss-lib" | "tsslib" => Ok(Kind::TssLib),
            other => Err(Error::InvalidParameters(format!(
                "unknown pre-parameters kind {other:?} (cggmp21 or tss-lib)"
            ))),
        }
    }
}

/// tss-lib's `LocalPreParams`, all secret (zeroized on drop).
pub struct TssLibPreParams {
    /// Paillier modulus `N = P Q`.
    pub n: Integer,
    /// `(P - 1)(Q - 1)`.
    pub phi_n: Integer,
    /// `lcm(P - 1, Q - 1)`.
    pub lambda_n: Integer,
    /// Paillier primes.
    pub paillier_p: Integer,
    /// Paillier primes.
    pub paillier_q: Integer,
    /// `NTilde = P' Q'`.
    pub n_tilde: Integer,
    /// `h1 = f^2 mod NTilde`.
    pub h1: Integer,
    /// `h2 = h1^alpha mod NTilde`.
    pub h2: Integer,
    /// Random `alpha` prime to `NTilde` and to `p q`.
    pub alpha: Integer,
    /// `alpha^-1 mod p q`.
    pub beta: Integer,
    /// Sophie Germain prime `p = (P' - 1) / 2`.
    pub p: Integer,
    /// Sophie Germain prime `q = (Q' - 1) / 2`.
    pub q: Integer,
}

impl Drop for TssLibPreParams {
    fn drop(&mut self) {
        for x in [
            &mut self.n,
            &mut self.phi_n,
            &mut self.lambda_n,
            &mut self.paillier_p,
            &mut self.paillier_q,
            &mut self.n_tilde,
            &mut self.h1,
            &mut self.h2,
            &mut self.alpha,
            &mut self.beta,
            &mut self.p,
            &mut self.q,
        ] {
            wipe(x);
        }
    }
}

/// Overwrites an integer's limbs with zeros in place (bit by bit from the
/// bottom, so every limb is zero before GMP shrinks the size). Copies GMP
/// made earlier during arithmetic are out of reach.
pub fn wipe(x: &mut Integer) {
    for i in 0..x.significant_bits() {
        x.set_bit(i, false);
    }
}

/// A uniformly random integer in `[1, m)` prime to `m` (rejection sampling).
fn random_unit<R: RngCore + CryptoRng>(m: &Integer, rng: &mut R) -> Integer {
    let bytes = usize::try_from(m.significant_bits().div_ceil(8) + 8).unwrap_or(0);
    let mut buf = vec![0u8; bytes];
    loop {
        rng.fill_bytes(&mut buf);
        let x = Integer::from_digits(&buf, rug::integer::Order::Msf) % m;
        buf.zeroize();
        if x != 0 && Integer::from(x.gcd_ref(m)) == 1 {
            return x;
        }
    }
}

impl TssLibPreParams {
    /// Builds pre-parameters from at least four distinct 1024-bit safe
    /// primes: the first pair that differs in at least 1021 bits (tss-lib's
    /// check against square-root attacks on the Paillier modulus) becomes
    /// the Paillier key, the next two make `NTilde`. Returns the primes it
    /// did not use (for the pool).
    ///
    /// # Errors
    /// [`Error::InvalidParameters`] if a prime is not a 1024-bit safe prime,
    /// two are equal, or no pair is far enough apart (give one more prime).
    pub fn from_safe_primes<R: RngCore + CryptoRng>(
        mut primes: Vec<Integer>,
        rng: &mut R,
    ) -> Result<(Self, Vec<Integer>), Error> {
        let bad = |m: &str| Err(Error::InvalidParameters(m.to_string()));
        if primes.len() < 4 {
            return bad("tss-lib pre-parameters need four safe primes");
        }
        for p in &primes {
            if p.significant_bits() != 1024 || !crate::primes::is_safe_prime(p) {
                return bad("tss-lib pre-parameters need 1024-bit safe primes");
            }
        }
        let mut sorted: Vec<&Integer> = primes.iter().collect();
        sorted.sort();
        if sorted.windows(2).any(|w| matches!(w, [a, b] if a == b)) {
            return bad("pre-parameters need distinct primes");
        }
        let far = |a: &Integer, b: &Integer| Integer::from(a - b).significant_bits() >= 1021;
        let len = primes.len();
        let Some((i, j)) = (0..len)
            .flat_map(|i| (i + 1..len).map(move |j| (i, j)))
            .find(|&(i, j)| matches!((primes.get(i), primes.get(j)), (Some(a), Some(b)) if far(a, b)))
        else {
            return bad("no two of the primes differ in 1021 bits or more; give one more prime");
        };
        let pq = primes.remove(j);
        let pp = primes.remove(i);
        let tp = primes.remove(0);
        let tq = primes.remove(0);
        let n = Integer::from(&pp * &pq);
        let (pm1, qm1) = (Integer::from(&pp - 1u32), Integer::from(&pq - 1u32));
        let phi_n = Integer::from(&pm1 * &qm1);
        let lambda_n = &phi_n / Integer::from(pm1.gcd_ref(&qm1));
        let n_tilde = Integer::from(&tp * &tq);
        let p = Integer::from(&tp - 1u32) >> 1u32;
        let q = Integer::from(&tq - 1u32) >> 1u32;
        let pq_small = Integer::from(&p * &q);
        let f = random_unit(&n_tilde, rng);
        let h1 = Integer::from(&f * &f) % &n_tilde;
        let alpha = loop {
            let a = random_unit(&n_tilde, rng);
            if Integer::from(a.gcd_ref(&pq_small)) == 1 {
                break a;
            }
        };
        let beta = alpha
            .clone()
            .invert(&pq_small)
            .map_err(|_| Error::InvalidParameters("alpha not invertible".into()))?;
        let h2 = h1
            .clone()
            .pow_mod(&alpha, &n_tilde)
            .map_err(|_| Error::InvalidParameters("h2".into()))?;
        Ok((
            Self {
                n,
                phi_n,
                lambda_n,
                paillier_p: pp,
                paillier_q: pq,
                n_tilde,
                h1,
                h2,
                alpha,
                beta,
                p,
                q,
            },
            primes,
        ))
    }

    /// The JSON tss-lib's `keygen.LocalPreParams` unmarshals (Go
    /// `encoding/json`: `*big.Int` as bare decimal numbers; the Paillier
    /// key's embedded `PublicKey.N` flattened):
    /// `{"PaillierSK":{"N","LambdaN","PhiN","P","Q"},"NTildei","H1i","H2i","Alpha","Beta","P","Q"}`.
    /// Secret: contains the factorizations.
    pub fn to_tss_lib_json(&self) -> zeroize::Zeroizing<String> {
        zeroize::Zeroizing::new(format!(
            "{{\"PaillierSK\":{{\"N\":{},\"LambdaN\":{},\"PhiN\":{},\"P\":{},\"Q\":{}}},\
             \"NTildei\":{},\"H1i\":{},\"H2i\":{},\"Alpha\":{},\"Beta\":{},\"P\":{},\"Q\":{}}}",
            self.n,
            self.lambda_n,
            self.phi_n,
            self.paillier_p,
            self.paillier_q,
            self.n_tilde,
            self.h1,
            self.h2,
            self.alpha,
            self.beta,
            self.p,
            self.q
        ))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn tss_lib_preparams_are_consistent() {
        let table = crate::primes::SieveTable::new(1 << 18);
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let (stop, stats) = (
            std::sync::atomic::AtomicBool::new(false),
            crate::primes::Stats::default(),
        );
        let ps: Vec<Integer> = (0..6)
            .map(|_| {
                crate::primes::safe_prime(1024, &mut rng, &table, &stop, &stats)
                    .unwrap()
                    .unwrap()
            })
            .collect();
        let (pp, rest) = TssLibPreParams::from_safe_primes(ps.clone(), &mut rng).unwrap();
        assert_eq!(rest.len(), 2);
        assert!(Integer::from(&pp.paillier_p - &pp.paillier_q).significant_bits() >= 1021);
        assert!(
            TssLibPreParams::from_safe_primes(vec![ps[0].clone(); 4], &mut rng).is_err(),
            "repeated prime"
        );
        assert_eq!(pp.n.significant_bits(), 2048);
        assert_eq!(Integer::from(&pp.paillier_p * &pp.paillier_q), pp.n);
        let pq = Integer::from(&pp.p * &pp.q);
        assert_eq!(Integer::from(&pp.alpha * &pp.beta) % &pq, 1);
        assert_eq!(pp.h1.clone().pow_mod(&pp.alpha, &pp.n_tilde).unwrap(), pp.h2);
        let tp = Integer::from(&pp.p << 1u32) + 1u32;
        let tq = Integer::from(&pp.q << 1u32) + 1u32;
        assert_eq!(Integer::from(&tp * &tq), pp.n_tilde);
        // Bare decimal numbers (as Go writes *big.Int): quote them to parse
        // with serde_json, then compare every field.
        let mut quoted = String::new();
        let (mut in_num, mut prev) = (false, ' ');
        for c in pp.to_tss_lib_json().chars() {
            if (!in_num && prev == ':' && c.is_ascii_digit()) || (in_num && !c.is_ascii_digit()) {
                quoted.push('"');
                in_num = !in_num;
            }
            quoted.push(c);
            prev = c;
        }
        let json: serde_json::Value = serde_json::from_str(&quoted).unwrap();
        let get = |v: &serde_json::Value| v.as_str().unwrap().parse::<Integer>().unwrap();
        assert_eq!(get(&json["NTildei"]), pp.n_tilde);
        assert_eq!(get(&json["H1i"]), pp.h1);
        assert_eq!(get(&json["H2i"]), pp.h2);
        assert_eq!(get(&json["Alpha"]), pp.alpha);
        assert_eq!(get(&json["Beta"]), pp.beta);
        assert_eq!(get(&json["P"]), pp.p);
        assert_eq!(get(&json["Q"]), pp.q);
        assert_eq!(get(&json["PaillierSK"]["N"]), pp.n);
        assert_eq!(get(&json["PaillierSK"]["LambdaN"]), pp.lambda_n);
        assert_eq!(get(&json["PaillierSK"]["PhiN"]), pp.phi_n);
        assert_eq!(get(&json["PaillierSK"]["P"]), pp.paillier_p);
        assert_eq!(get(&json["PaillierSK"]["Q"]), pp.paillier_q);
        // Not safe primes: refused.
        let small = vec![
            Integer::from(23),
            Integer::from(47),
            Integer::from(59),
            Integer::from(83),
        ];
        assert!(TssLibPreParams::from_safe_primes(small, &mut rng).is_err());
    }

    #[test]
    fn kinds_parse() {
        assert_eq!("cggmp21".parse::<Kind>().unwrap(), Kind::Cggmp21);
        assert_eq!("tss-lib".parse::<Kind>().unwrap().primes(), 4);
        assert!("rsa".parse::<Kind>().is_err());
    }
}
