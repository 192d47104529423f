//! Safe primes `p = 2q + 1` (`p` and `q` prime) with a combined sieve,
//! for CGGMP21 aux info and tss-lib-style pre-parameters.
//!
//! Method (M. Wiener, "Safe prime generation with a combined sieve",
//! eprint 2003/186, sections 2-3):
//! 1. Pick a random `q0` of `bits - 1` bits (top two bits set, so `p` has
//!    exactly `bits` bits and a product of two such primes exactly
//!    `2 * bits`) with `q0 = 5 (mod 6)`: then `q` and `2q + 1` are prime to
//!    2 and 3. Candidates are `q = q0 + 6k`, `k = 0, 1, ...`.
//! 2. **Combined sieve**: for every prime `r` with `5 <= r < bound`
//!    ([`DEFAULT_SIEVE_BOUND`], 2^24: a million primes) strike the `k` with
//!    `q = 0 (mod r)` *or* `2q + 1 = 0 (mod r)`, i.e. `q = (r - 1) / 2`.
//!    One residue `q0 mod r` per prime serves both, and the window is
//!    sieved in cache-sized segments. A survivor is prime-looking on both
//!    sides with probability about `(e^gamma ln bound / ln 2^bits)^2`
//!    times the unsieved odds, so a larger bound means fewer
//!    exponentiations (about 1,300 per 1536-bit safe prime at 2^24,
//!    against about 5,800 with OpenSSL's 384-prime trial division).
//! 3. **Cheap tests first**: a base-2 Fermat test on `q`, and only if it
//!    passes (about 3% of survivors) one on `p`.
//! 4. **Certainty**: the final `q` passes GMP's Baillie-PSW test (strong
//!    base-2 Miller-Rabin plus a strong Lucas test) and
//!    [`miller_rabin_rounds`] further random-base Miller-Rabin rounds (FIPS
//!    186-5, Table B.1 and Appendix C.1 for error below 2^-128 even
//!    without the Lucas test). Then `p` is *proven* prime by Pocklington's
//!    criterion: `p - 1 = 2q` with `q` prime and `q > sqrt(p)`, `2^(p-1) = 1
//!    (mod p)` (the Fermat test above) and `gcd(2^2 - 1, p) = gcd(3, p) = 1`
//!    (step 1). `p` also passes Baillie-PSW, as a cross-check.
//!
//! Each call starts from a fresh random `q0` and returns the first safe
//! prime of its window, so two outputs are never close to each other (a
//! Paillier modulus from two nearby primes would fall to Fermat
//! factoring). The search spreads over threads with [`generate`].
//!
//! The random source should be a seeded CSPRNG (`StdRng::from_rng(OsRng)`):
//! `OsRng` itself spends its time in the kernel.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;

use rand_core::{CryptoRng, RngCore};
use rug::integer::{IsPrime, Order};
use rug::Integer;

pub use rug;

use crate::Error;

/// Sieve bound: every prime below it (except 2 and 3, handled by the
/// `q = 5 mod 6` step) is sieved out of both `q` and `2q + 1`.
pub const DEFAULT_SIEVE_BOUND: u32 = 1 << 24;

/// Smallest safe prime size [`safe_prime`] accepts, in bits.
pub const MIN_BITS: u32 = 64;

/// Candidates per sieve segment (bytes of the segment bitmap).
const SEGMENT: usize = 1 << 16;

/// Candidates per window before starting over from a fresh random `q0`
/// (at 1536 bits a window holds about 100 safe primes on average).
const WINDOW: u64 = 1 << 24;

/// Random-base Miller-Rabin rounds on `q` beyond Baillie-PSW, from FIPS
/// 186-5 Table B.1 / Appendix C.1 (error at most 2^-128 for random
/// candidates even without the Lucas test), and 40 below 1024 bits.
pub fn miller_rabin_rounds(bits: u32) -> u32 {
    match bits {
        0..=1023 => 40,
        1024..=1535 => 6,
        _ => 4,
    }
}

/// The odd primes `5 <= r < bound` and `6^-1 mod r` for each, shared by
/// every search (built once, about 50 ms and 8 MiB for 2^24).
pub struct SieveTable {
    primes: Vec<u32>,
    inv6: Vec<u32>,
}

impl SieveTable {
    /// Builds the table for `bound` (at least 7).
    pub fn new(bound: u32) -> Self {
        let bound = bound.max(7) as usize;
        // Eratosthenes over odd numbers: index i stands for 2i + 1.
        let half = bound / 2;
        let mut composite = vec![false; half];
        let mut i = 1;
        while (2 * i + 1) * (2 * i + 1) < bound {
            if !composite.get(i).copied().unwrap_or(true) {
                let p = 2 * i + 1;
                let mut j = (p * p) / 2;
                while let Some(c) = composite.get_mut(j) {
                    *c = true;
                    j += p;
                }
            }
            i += 1;
        }
        let primes: Vec<u32> = composite
            .iter()
            .enumerate()
            .skip(2) // 1 and 3
            .filter(|(_, &c)| !c)
            .filter_map(|(i, _)| u32::try_from(2 * i + 1).ok())
            .collect();
        let inv6 = primes.iter().map(|&r| inverse_mod(6, r)).collect();
        Self { primes, inv6 }
    }

    /// The table for [`DEFAULT_SIEVE_BOUND`], built on first use.
    pub fn shared() -> &'static SieveTable {
        static TABLE: OnceLock<SieveTable> = OnceLock::new();
        TABLE.get_or_init(|| SieveTable::new(DEFAULT_SIEVE_BOUND))
    }

    /// Number of sieving primes.
    pub fn len(&self) -> usize {
        self.primes.len()
    }

    /// Whether the table has no primes (never, for a bound of 7 or more).
    pub fn is_empty(&self) -> bool {
        self.primes.is_empty()
    }
}

/// `a^-1 mod r` for prime `r` not dividing `a` (Fermat: `a^(r-2)`).
fn inverse_mod(a: u64, r: u32) -> u32 {
    let m = u64::from(r);
    let (mut base, mut e, mut acc) = (a % m, m - 2, 1u64);
    while e > 0 {
        if e & 1 == 1 {
            acc = acc * base % m;
        }
        base = base * base % m;
        e >>= 1;
    }
    u32::try_from(acc).unwrap_or(0)
}

/// Work counters of a search, for benchmarks and progress reporting.
#[derive(Debug, Default)]
pub struct Stats {
    /// Candidates that survived the sieve and were Fermat-tested.
    pub tested: AtomicU64,
    /// Windows started (random `q0` values).
    pub windows: AtomicU64,
}

/// One safe prime of exactly `bits` bits (top two bits set), with
/// Pocklington-certified `p` given a Baillie-PSW plus Miller-Rabin `q`.
///
/// Returns `Ok(None)` if `stop` became true before one was found.
///
/// # Errors
/// [`Error::InvalidParameters`] if `bits < MIN_BITS`.
pub fn safe_prime<R: RngCore + CryptoRng>(
    bits: u32,
    rng: &mut R,
    table: &SieveTable,
    stop: &AtomicBool,
    stats: &Stats,
) -> Result<Option<Integer>, Error> {
    if bits < MIN_BITS {
        return Err(Error::InvalidParameters(format!(
            "safe primes need at least {MIN_BITS} bits, not {bits}"
        )));
    }
    let qbits = bits - 1;
    let nbytes = usize::try_from(qbits.div_ceil(8)).unwrap_or(0);
    let mut buf = vec![0u8; nbytes];
    let n = table.primes.len();
    // Next struck k (relative to the window start) per prime, for q = 0
    // and for 2q + 1 = 0. u32 (the window is 2^24 candidates) to halve the
    // memory each segment pass streams through: with one search per core
    // the sieve is memory-bound.
    let mut next_q = vec![0u32; n];
    let mut next_p = vec![0u32; n];
    let mut segment = vec![true; SEGMENT];
    let two = Integer::from(2);
    loop {
        if stop.load(Ordering::Relaxed) {
            return Ok(None);
        }
        stats.windows.fetch_add(1, Ordering::Relaxed);
        let q0 = random_q0(rng, &mut buf, qbits);
        first_struck(table, &q0, &mut next_q, &mut next_p);
        let mut base = 0u32;
        while u64::from(base) < WINDOW {
            let end = base + SEGMENT as u32;
            sieve_segment(table, base, end, &mut segment, &mut next_q, &mut next_p);
            for (off, _) in segment.iter().enumerate().filter(|(_, &alive)| alive) {
                if stop.load(Ordering::Relaxed) {
                    return Ok(None);
                }
                stats.tested.fetch_add(1, Ordering::Relaxed);
                let q = Integer::from(&q0 + 6 * (u64::from(base) + off as u64));
                if let Some(p) = test_candidate(q, &two, bits) {
                    return Ok(Some(p));
                }
            }
            base = end;
        }
    }
}

/// Step 1: a random `q0` of `qbits` bits, top two bits set, `q0 = 5 mod
/// 6` (`buf` holds `qbits` bits' worth of bytes).
fn random_q0<R: RngCore + CryptoRng>(rng: &mut R, buf: &mut [u8], qbits: u32) -> Integer {
    rng.fill_bytes(buf);
    let mut q0 = Integer::from_digits(buf, Order::Msf);
    q0.keep_bits_mut(qbits);
    q0.set_bit(qbits - 1, true);
    q0.set_bit(qbits - 2, true);
    let m6 = q0.mod_u(6);
    q0 += (11 - m6) % 6;
    q0
}

/// Step 2, per window: the residue `q0 mod r` of every sieving prime and
/// the first struck `k` for `q = 0` (`next_q`) and `2q + 1 = 0`
/// (`next_p`).
fn first_struck(table: &SieveTable, q0: &Integer, next_q: &mut [u32], next_p: &mut [u32]) {
    for (j, (&r, &inv6)) in table.primes.iter().zip(&table.inv6).enumerate() {
        let a = u64::from(q0.mod_u(r));
        let (r64, inv) = (u64::from(r), u64::from(inv6));
        // q0 + 6k = 0 (mod r)  <=>  k = -a / 6
        let kq = (r64 - a) % r64 * inv % r64;
        // q0 + 6k = (r - 1) / 2 (mod r)  <=>  k = ((r - 1) / 2 - a) / 6
        let kp = ((r64 - 1) / 2 + r64 - a) % r64 * inv % r64;
        if let (Some(x), Some(y)) = (next_q.get_mut(j), next_p.get_mut(j)) {
            // Both are below r < 2^24.
            *x = u32::try_from(kq).unwrap_or(u32::MAX);
            *y = u32::try_from(kp).unwrap_or(u32::MAX);
        }
    }
}

/// Step 2, per segment `[base, end)` of the window: strikes every struck
/// `k` from `segment` (`true` = survivor) and advances `next_q` and
/// `next_p` past `end`.
fn sieve_segment(
    table: &SieveTable,
    base: u32,
    end: u32,
    segment: &mut [bool],
    next_q: &mut [u32],
    next_p: &mut [u32],
) {
    segment.fill(true);
    for ((&r, x), y) in table.primes.iter().zip(next_q.iter_mut()).zip(next_p.iter_mut()) {
        for next in [x, y] {
            let mut k = *next;
            while k < end {
                if let Some(s) = segment.get_mut((k - base) as usize) {
                    *s = false;
                }
                k += r;
            }
            *next = k;
        }
    }
}

/// Steps 3 and 4 on a sieve survivor `q`: base-2 Fermat on `q`, then on
/// `p = 2q + 1`, then [`certify`]. Returns `p` if it is a safe prime of
/// exactly `bits` bits.
fn test_candidate(q: Integer, two: &Integer, bits: u32) -> Option<Integer> {
    // Base-2 Fermat on q, then on p.
    let qm1 = Integer::from(&q - 1u32);
    let f = two.clone().pow_mod(&qm1, &q).ok()?;
    if f != 1 {
        return None;
    }
    let p = Integer::from(&q << 1u32) + 1u32;
    let pm1 = Integer::from(&p - 1u32);
    let f = two.clone().pow_mod(&pm1, &p).ok()?;
    if f != 1 {
        return None;
    }
    if p.significant_bits() != bits {
        return None; // q0 + 6k ran past the top (vanishingly rare)
    }
    certify(&q, &p, bits).then_some(p)
}

/// Final tests on a candidate pair that passed base-2 Fermat on both:
/// Baillie-PSW plus [`miller_rabin_rounds`] on `q`; Baillie-PSW on `p` (a
/// cross-check: Pocklington already proves `p` given `q`).
fn certify(q: &Integer, p: &Integer, bits: u32) -> bool {
    let reps = 24 + miller_rabin_rounds(bits); // GMP: BPSW, then reps - 24 MR rounds
    q.is_probably_prime(reps) != IsPrime::No && p.is_probably_prime(24) != IsPrime::No
}

/// Whether `p` is a safe prime to 2^-128 by the same tests [`safe_prime`]
/// certifies with (for checking primes from elsewhere, e.g. a seed file or
/// a remote pool).
pub fn is_safe_prime(p: &Integer) -> bool {
    if *p < 7 || p.is_even() {
        return false;
    }
    let q = Integer::from(p - 1u32) >> 1u32;
    let bits = p.significant_bits();
    let pm1 = Integer::from(p - 1u32);
    let fermat = Integer::from(2).pow_mod(&pm1, p).is_ok_and(|f| f == 1);
    fermat && p.mod_u(3) == 2 && certify(&q, p, bits)
}

/// Generates `count` safe primes of `bits` bits on `threads` threads (each
/// with its own `StdRng` seeded from `OsRng`), calling `on_prime` from the
/// finding thread as each is found. Stops early when `stop` becomes true.
///
/// # Errors
/// [`Error::InvalidParameters`] for `bits < MIN_BITS`; an error if the OS
/// random source fails.
pub fn generate(
    bits: u32,
    count: usize,
    threads: usize,
    stop: &AtomicBool,
    stats: &Stats,
    on_prime: &(dyn Fn(Integer) + Sync),
) -> Result<usize, Error> {
    use rand::SeedableRng;
    if bits < MIN_BITS {
        return Err(Error::InvalidParameters(format!(
            "safe primes need at least {MIN_BITS} bits, not {bits}"
        )));
    }
    let table = SieveTable::shared();
    let claimed = AtomicU64::new(0);
    let done = AtomicU64::new(0);
    let count64 = count as u64;
    let threads = threads.max(1).min(count.max(1));
    std::thread::scope(|s| {
        let mut handles = Vec::new();
        for _ in 0..threads {
            handles.push(s.spawn(|| -> Result<(), Error> {
                let mut rng = rand::rngs::StdRng::from_rng(rand::rngs::OsRng)
                    .map_err(|e| Error::InvalidParameters(format!("OS random source: {e}")))?;
                while claimed.fetch_add(1, Ordering::Relaxed) < count64 {
                    match safe_prime(bits, &mut rng, table, stop, stats)? {
                        Some(p) => {
                            on_prime(p);
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                        None => return Ok(()),
                    }
                }
                Ok(())
            }));
        }
        for h in handles {
            h.join()
                .map_err(|_| Error::InvalidParameters("a prime search thread panicked".into()))??;
        }
        Ok::<(), Error>(())
    })?;
    Ok(usize::try_from(done.load(Ordering::Relaxed)).unwrap_or(usize::MAX))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn sieve_table_holds_the_primes_from_five() {
        let t = SieveTable::new(100);
        assert_eq!(
            t.primes,
            vec![5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79, 83, 89, 97]
        );
        for (&r, &i) in t.primes.iter().zip(&t.inv6) {
            assert_eq!(6 * u64::from(i) % u64::from(r), 1, "6^-1 mod {r}");
        }
        assert_eq!(
            SieveTable::new(1 << 20).len(),
            82_025 - 2,
            "pi(2^20) = 82025, minus 2 and 3"
        );
    }

    #[test]
    fn small_safe_primes_are_safe_and_exactly_sized() {
        let table = SieveTable::new(1 << 16);
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let (stop, stats) = (AtomicBool::new(false), Stats::default());
        for bits in [64u32, 65, 128, 256, 512] {
            let p = safe_prime(bits, &mut rng, &table, &stop, &stats).unwrap().unwrap();
            assert_eq!(p.significant_bits(), bits);
            assert!(p.get_bit(bits - 2), "top two bits set");
            let q = Integer::from(&p - 1u32) >> 1u32;
            assert_ne!(p.is_probably_prime(40), IsPrime::No);
            assert_ne!(q.is_probably_prime(40), IsPrime::No);
            assert!(is_safe_prime(&p));
        }
        assert!(stats.tested.load(Ordering::Relaxed) > 0);
    }

    /// `openssl prime N` (Miller-Rabin in OpenSSL's BIGNUM): an independent
    /// primality test of our outputs, both p and q.
    fn openssl_says_prime(n: &Integer) -> bool {
        let out = std::process::Command::new("openssl")
            .args(["prime", &n.to_string()])
            .output()
            .expect("openssl is installed (the test machine has it; apt-get install openssl)");
        String::from_utf8_lossy(&out.stdout).trim_end().ends_with("is prime")
    }

    #[test]
    fn openssl_agrees_our_safe_primes_are_safe_primes() {
        let table = SieveTable::new(1 << 20);
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let (stop, stats) = (AtomicBool::new(false), Stats::default());
        for bits in [256u32, 512, 1024] {
            let p = safe_prime(bits, &mut rng, &table, &stop, &stats).unwrap().unwrap();
            let q = Integer::from(&p - 1u32) >> 1u32;
            assert!(openssl_says_prime(&p), "{bits}-bit p");
            assert!(openssl_says_prime(&q), "{bits}-bit q");
        }
        // And OpenSSL rejects what is not prime (the check can fail).
        assert!(!openssl_says_prime(&Integer::from(1_000_001u32 * 3)));
        // OpenSSL's own safe prime passes ours.
        let out = std::process::Command::new("openssl")
            .args(["prime", "-generate", "-safe", "-bits", "256"])
            .output()
            .unwrap();
        let o: Integer = String::from_utf8(out.stdout).unwrap().trim().parse().unwrap();
        assert!(is_safe_prime(&o));
    }

    #[test]
    fn non_safe_primes_are_rejected() {
        // 23 = 2*11+1 is safe; 29 is prime but (29-1)/2 = 14 is not; 15 composite.
        assert!(is_safe_prime(&Integer::from(23)));
        assert!(!is_safe_prime(&Integer::from(29)));
        assert!(!is_safe_prime(&Integer::from(15)));
        assert!(!is_safe_prime(&Integer::from(2)));
        // The first prime after 2^1023 is safe exactly when (p - 1) / 2 is prime.
        let p = (Integer::from(1) << 1023u32).next_prime();
        let q = Integer::from(&p - 1u32) >> 1u32;
        assert_eq!(is_safe_prime(&p), q.is_probably_prime(30) != IsPrime::No);
    }

    #[test]
    fn too_small_is_an_error_and_stop_stops() {
        let table = SieveTable::new(1000);
        let mut rng = rand::rngs::StdRng::seed_from_u64(2);
        let stats = Stats::default();
        assert!(safe_prime(32, &mut rng, &table, &AtomicBool::new(false), &stats).is_err());
        assert!(safe_prime(1024, &mut rng, &table, &AtomicBool::new(true), &stats)
            .unwrap()
            .is_none());
    }

    #[test]
    fn generate_spreads_over_threads_and_returns_distinct_primes() {
        let found = std::sync::Mutex::new(Vec::new());
        let n = generate(256, 6, 2, &AtomicBool::new(false), &Stats::default(), &|p| {
            found.lock().unwrap().push(p)
        })
        .unwrap();
        let mut found = found.into_inner().unwrap();
        assert_eq!(n, 6);
        found.sort();
        found.dedup();
        assert_eq!(found.len(), 6);
        assert!(found.iter().all(is_safe_prime));
    }
}
