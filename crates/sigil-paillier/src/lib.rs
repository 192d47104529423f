//! Distributed Paillier: key generation without a trusted dealer and
//! threshold decryption, after Veugen, Attema and Spini, "An implementation
//! of the Paillier crypto system with threshold decryption without a
//! trusted dealer" (eprint 2019/1136), which builds on Boneh and Franklin,
//! "Efficient generation of shared RSA keys" (CRYPTO 1997, JACM 2001).
//!
//! **Security model.** Key generation is the paper's: semi-honest parties,
//! honest majority. With `n` parties and corruption threshold `t`,
//! `n >= 2t + 1`; any `t` parties together learn nothing about the
//! factorization or the secret key beyond what the public key reveals;
//! `t + 1` decrypt. A party that deviates during key generation can make
//! it fail or produce a wrong key; the checks that do exist (message
//! shapes in every round, integer key shares against Feldman commitments,
//! `theta` against the committed masks) name it where they can.
//! Decryption is verifiable against malicious parties: every partial
//! comes with Shoup's proof against the party's verification key
//! ([`verify`]), so a party that shifts the plaintext is named.
//!
//! The code is sans-IO: each step is a function of a party's state and the
//! messages it received, so the same code runs in the in-process
//! simulations and over the node's transport.
//!
//! Steps and where they come from:
//! 1. [`sieve`]: candidate shares `p = sum p_i`, `q = sum q_i` with
//!    `p = q = 3 (mod 4)` (paper section 4.1) that are **already free of
//!    every small prime factor below the sieve bound** before any
//!    multiplication: a CRT sieve (Chen, Chou, Hazay, Kolesnikov, Lindell,
//!    Shelat, "Multiparty Generation of an RSA Modulus", CRYPTO 2020,
//!    section 4) where each party picks its residue of `p` mod every sieve
//!    prime `r` at random and the parties check `p != 0 (mod r)` by
//!    revealing `rho * p mod r` for a jointly random `rho` (a Shamir
//!    multiplication over `F_r`, honest majority).
//! 2. [`modulus`]: Shamir sharing of `p_i`, `q_i` over a prime field
//!    larger than `N`, local multiplication, reveal of `N = p q` (paper
//!    section 4.2, BGW).
//! 3. Trial division of `N` (paper section 4.3) and the distributed
//!    biprimality test [`biprime`] (Boneh-Franklin section 3.1; paper
//!    section 4.4), `correct_param_biprime` rounds.
//! 4. [`key`]: the decryption exponent `s = beta * phi(N)` shared over the
//!    integers with threshold `t` and `theta = s mod N` public (paper
//!    section 4.5; statistical hiding with `stat_sec_shamir` bits).
//! 5. [`reshare`]: the exponent re-shared over the integers to a new
//!    committee and threshold (verifiable secret redistribution, Wong,
//!    Wang and Wing 2002, with Feldman commitments in `Z_{N^2}^*`), `N`
//!    unchanged.
//! 6. [`decrypt`]: partial decryptions `c^{2 Delta s_j}` and their
//!    combination with integer Lagrange coefficients scaled by
//!    `Delta = n!` (paper section 3.3), each partial checked against the
//!    party's verification key with Shoup's proof ([`verify`]; Shoup,
//!    Eurocrypt 2000; Damgard-Jurik, PKC 2001, section 5).

#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod biprime;
pub mod decrypt;
pub mod key;
pub mod math;
pub mod modulus;
pub mod params;
pub mod protocol;
pub mod reshare;
pub mod sieve;
pub mod verify;

pub use params::Params;

/// Overwrites an integer's limbs with zeros in place (bit by bit from the
/// bottom), for secrets held in `rug` integers (which do not zeroize on
/// drop). Copies GMP made during arithmetic are out of reach.
pub fn wipe(x: &mut rug::Integer) {
    math_wipe(x);
}

/// [`wipe`], as the crate's modules call it.
pub(crate) fn math_wipe(x: &mut rug::Integer) {
    for i in 0..x.significant_bits() {
        x.set_bit(i, false);
    }
}
pub use rug;

/// Errors of the distributed Paillier protocols.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// Settings out of range (`n < 2t + 1`, key length too small, ...).
    #[error("invalid parameters: {0}")]
    InvalidParameters(String),
    /// A message of the wrong shape (count, length, range).
    #[error("malformed message from party {party}: {reason}")]
    Malformed {
        /// 1-based party number.
        party: usize,
        /// What is wrong.
        reason: String,
    },
    /// A ciphertext outside `[1, N^2)` or not invertible mod `N`.
    #[error("invalid ciphertext: {0}")]
    InvalidCiphertext(String),
    /// Partial decryptions that fail their proofs (`parties`, 1-based) or
    /// do not combine (`parties` empty).
    #[error("bad partial decryptions from parties {parties:?}: {reason}")]
    BadPartials {
        /// 1-based party numbers; empty when the culprit is unknown.
        parties: Vec<usize>,
        /// What failed.
        reason: String,
    },
    /// Reshare dealers whose commitments are missing, malformed or not
    /// bound to their verification key, or parties that sent commitments
    /// without dealing ([`reshare`] step 3); empty when the constant terms
    /// do not combine to the key and no one can be named.
    #[error("invalid resharing commitments from session parties {parties:?}")]
    InvalidCommitments {
        /// 0-based session party indices.
        parties: Vec<usize>,
    },
    /// Reshare dealers whose sub-share is missing, too large or does not
    /// match their commitments ([`reshare`] step 3).
    #[error("invalid resharing sub-shares from session parties {parties:?}")]
    InvalidSubShares {
        /// 0-based session party indices.
        parties: Vec<usize>,
    },
    /// Parties that saw other reshare commitments than we did (the echo
    /// differs; this does not prove who equivocated).
    #[error("inconsistent broadcast: session parties {parties:?} saw other commitments")]
    InconsistentEcho {
        /// 0-based session party indices.
        parties: Vec<usize>,
    },
    /// Sending or receiving a message failed.
    #[error("transport: {0}")]
    Transport(String),
}
