//! Threshold ECDSA (CGGMP21, eprint 2021/060) on secp256k1 and P-256 through
//! the audited `cggmp21` crate (0.6.3 or later: it carries the fix for
//! CVE-2025-66016), in the same sans-IO model as [`crate::frost`].
//!
//! Flow, per CGGMP21 and the crate's docs:
//! 1. **aux info** ([`aux_info`]): Paillier keys and ring-Pedersen parameters
//!    from two 1536-bit safe primes per party (CGGMP21 Fig. 6 without the
//!    refresh part). Expensive (seconds of CPU per party) but valid for every
//!    key of the same ordered party set, so it is made once per party set.
//! 2. **keygen** ([`keygen`]): threshold DKG, milliseconds; HD enabled so
//!    BIP-32-compatible (SLIP-10) non-hardened children can be signed for.
//! 3. **signing** ([`sign`]): the (3+1)-round protocol (CGGMP21 Fig. 7-8
//!    with `cggmp21`'s threshold extension), or [`presign`] ahead of time
//!    then one local step ([`Presignature`]).
//!
//! Security notes:
//! - A presignature is bound to its signer set and key; using one twice (for
//!   two messages) leaks the key. The node deletes it before its partial
//!   signature leaves the node.
//! - Reliable broadcast is enforced by the crate (an extra echo round).
//! - `cggmp21` reports no culprits for most failures; Sigil names the silent
//!   parties at the session deadline instead.

use rand_core::{CryptoRng, RngCore};
use round_based::Mpc;
use sha2::Sha256;

pub use cggmp21;
use cggmp21::generic_ec::Curve;
use cggmp21::security_level::SecurityLevel128;

use crate::{Error, PartyIndex, SessionId};

/// The curves Sigil signs ECDSA on.
pub use cggmp21::supported_curves::{Secp256k1, Secp256r1};

/// Security level of aux info and signing: 128 bits (1536-bit safe primes,
/// 3072-bit Paillier moduli).
pub type Level = SecurityLevel128;

/// A party's pair of safe primes for aux info.
pub type PregeneratedPrimes = cggmp21::PregeneratedPrimes<Level>;
/// A party's aux info (Paillier secret and everyone's public parameters).
/// Secret: store sealed only.
pub type AuxInfo = cggmp21::key_share::AuxInfo<Level>;
/// A party's key share without aux info (the DKG output). Secret.
pub type IncompleteKeyShare<E> = cggmp21::IncompleteKeyShare<E>;
/// A complete key share (DKG output plus aux info). Secret.
pub type KeyShare<E> = cggmp21::KeyShare<E, Level>;
/// A presignature. Secret and single use.
pub type Presignature<E> = cggmp21::Presignature<E>;
/// An ECDSA signature `(r, s)`.
pub type Signature<E> = cggmp21::Signature<E>;

/// Messages of threshold keygen.
pub type KeygenMsg<E> = cggmp21::keygen::msg::threshold::Msg<E, Level, Sha256>;
/// Messages of aux info generation.
pub type AuxMsg = cggmp21::key_refresh::msg::aux_only::Msg<Sha256, Level>;
/// Messages of signing and presigning.
pub type SignMsg<E> = cggmp21::signing::msg::Msg<E, Sha256>;

/// Message schedules of the `cggmp21` protocols, for the node's transport
/// (round = variant index of the message enum; every party sends every
/// round, broadcast or p2p as the crate's `RoundInput`s declare).
pub mod expects {
    use round_based::MessageType::{self, Broadcast, P2P};

    use crate::PartyIndex;

    fn kind(table: &[MessageType], round: u16, from: PartyIndex, me: PartyIndex, n: u16) -> Option<MessageType> {
        if from == me || from >= n {
            return None;
        }
        table.get(usize::from(round)).copied()
    }

    /// Threshold keygen: Round1, Round2Broad, Round2Uni (p2p), Round3,
    /// ReliabilityCheck.
    pub fn keygen(round: u16, from: PartyIndex, me: PartyIndex, n: u16) -> Option<MessageType> {
        kind(&[Broadcast, Broadcast, P2P, Broadcast, Broadcast], round, from, me, n)
    }

    /// Aux info: Round1, Round2, Round3 (p2p), ReliabilityCheck.
    pub fn aux_info(round: u16, from: PartyIndex, me: PartyIndex, n: u16) -> Option<MessageType> {
        kind(&[Broadcast, Broadcast, P2P, Broadcast], round, from, me, n)
    }

    /// Signing: Round1a, Round1b (p2p), Round2 (p2p), Round3 (p2p), Round4,
    /// ReliabilityCheck. Presigning stops before Round4.
    pub fn sign(round: u16, from: PartyIndex, me: PartyIndex, n: u16) -> Option<MessageType> {
        kind(&[Broadcast, P2P, P2P, P2P, Broadcast, Broadcast], round, from, me, n)
    }

    /// Key generation with its own aux info ([`super::keygen_with_aux`]):
    /// the aux-info rounds as rounds 0 to 3, then the keygen rounds as
    /// rounds 4 to 8.
    pub fn keygen_with_aux(round: u16, from: PartyIndex, me: PartyIndex, n: u16) -> Option<MessageType> {
        match round.checked_sub(super::AUX_ROUNDS) {
            None => aux_info(round, from, me, n),
            Some(r) => keygen(r, from, me, n),
        }
    }
}

fn protocol_error(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Frost(format!("{what}: {e}"))
}

/// `2 <= t <= n` and `i < n`, or [`Error::InvalidParameters`].
fn check_keygen(i: PartyIndex, n: u16, t: u16) -> Result<(), Error> {
    if t < 2 || t > n || i >= n {
        return Err(Error::InvalidParameters(format!(
            "need 2 <= t <= n and i < n, got t={t}, n={n}, i={i}"
        )));
    }
    Ok(())
}

/// Threshold keygen as party `i` of `n`, threshold `t` (CGGMP21 keygen with
/// `cggmp21`'s threshold extension), HD wallet enabled.
///
/// # Errors
/// [`Error::InvalidParameters`] for `t < 2`, `t > n` or `i >= n`; the
/// protocol's failure otherwise.
pub async fn keygen<E, M, R>(
    party: M,
    session_id: &SessionId,
    i: PartyIndex,
    n: u16,
    t: u16,
    rng: &mut R,
) -> Result<IncompleteKeyShare<E>, Error>
where
    E: Curve,
    M: Mpc<ProtocolMessage = KeygenMsg<E>>,
    R: RngCore + CryptoRng,
{
    check_keygen(i, n, t)?;
    let eid = cggmp21::ExecutionId::new(session_id);
    cggmp21::keygen::<E>(eid, i, n)
        .set_threshold(t)
        .hd_wallet(true)
        .start(rng, party)
        .await
        .map_err(|e| protocol_error("keygen", e))
}

/// Aux info generation as party `i` of `n` from the party's own primes.
///
/// # Errors
/// The protocol's failure.
pub async fn aux_info<M, R>(
    party: M,
    session_id: &SessionId,
    i: PartyIndex,
    n: u16,
    primes: PregeneratedPrimes,
    rng: &mut R,
) -> Result<AuxInfo, Error>
where
    M: Mpc<ProtocolMessage = AuxMsg>,
    R: RngCore + CryptoRng,
{
    if i >= n {
        return Err(Error::InvalidParameters(format!("party index {i} >= n = {n}")));
    }
    let eid = cggmp21::ExecutionId::new(session_id);
    cggmp21::aux_info_gen(eid, i, n, primes)
        .start(rng, party)
        .await
        .map_err(|e| protocol_error("aux info", e))
}

/// SHA-256 fingerprint of the public part of aux info: every party's
/// Paillier modulus `N_j` and ring-Pedersen parameters `s_j`, `t_j`, in
/// party order (each serialized as the crate serializes it, length-prefixed
/// by its `u32` BE byte length), after the domain tag `sigil/aux-public/v1`.
/// Every party of one aux session computes the same value; the node commits
/// aux info only when all parties attest to the same fingerprint.
pub fn aux_fingerprint(aux: &cggmp21::key_share::DirtyAuxInfo<Level>) -> [u8; 32] {
    use sha2::Digest;
    let mut h = Sha256::new();
    let mut lp = |x: &[u8]| {
        h.update(u32::try_from(x.len()).unwrap_or(u32::MAX).to_be_bytes());
        h.update(x);
    };
    lp(b"sigil/aux-public/v1");
    for p in &aux.parties {
        for x in [&p.N, &p.s, &p.t] {
            lp(&serde_json::to_vec(x).unwrap_or_default());
        }
    }
    h.finalize().into()
}

/// The first pair of parties `(i, j)` (0-based, `i < j`) whose Paillier
/// moduli share a factor (`gcd(N_i, N_j) != 1`), if any. Two parties with
/// a common prime (the same seed file on two nodes, a reused prime) can
/// each factor the other's modulus and recover its share of the key, so
/// such aux info must be refused.
pub fn shared_factor(aux: &AuxInfo) -> Option<(usize, usize)> {
    let ns: Vec<&cggmp21::rug::Integer> = aux.parties.iter().map(|p| &p.N).collect();
    shared_factor_of(&ns)
}

/// [`shared_factor`] over the moduli `ns` themselves.
pub fn shared_factor_of(ns: &[&cggmp21::rug::Integer]) -> Option<(usize, usize)> {
    for (i, a) in ns.iter().enumerate() {
        for (j, b) in ns.iter().enumerate().skip(i + 1) {
            if cggmp21::rug::Integer::from(a.gcd_ref(b)) != 1 {
                return Some((i, j));
            }
        }
    }
    None
}

/// Joins a DKG output with the aux info of the same ordered party set.
///
/// # Errors
/// [`Error::InvalidParameters`] if they do not belong together.
pub fn complete<E: Curve>(share: IncompleteKeyShare<E>, aux: AuxInfo) -> Result<KeyShare<E>, Error> {
    cggmp21::KeyShare::from_parts((share, aux))
        .map_err(|e| Error::InvalidParameters(format!("key share and aux info: {e}")))
}

/// The number of rounds of aux info generation (Round1, Round2, Round3,
/// ReliabilityCheck): [`KeygenAuxMsg`] numbers keygen's rounds after them.
pub const AUX_ROUNDS: u16 = 4;

/// A message of [`keygen_with_aux`]: one of aux info generation (rounds 0
/// to 3) or one of keygen (rounds 4 to 8), postcard-encoded as the enum.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
#[serde(bound = "")]
#[allow(clippy::large_enum_variant)]
pub enum KeygenAuxMsg<E: Curve> {
    /// Aux info generation.
    Aux(AuxMsg),
    /// Threshold keygen.
    Keygen(KeygenMsg<E>),
}

impl<E: Curve> round_based::ProtocolMessage for KeygenAuxMsg<E> {
    fn round(&self) -> u16 {
        match self {
            KeygenAuxMsg::Aux(m) => m.round(),
            KeygenAuxMsg::Keygen(m) => AUX_ROUNDS.saturating_add(m.round()),
        }
    }
}

/// The execution id of one of [`keygen_with_aux`]'s two protocols:
/// SHA-256 of `sigil/keygen-with-aux/v1`, `tag` and the session's id.
fn sub_execution_id(tag: &[u8], session_id: &SessionId) -> SessionId {
    use sha2::Digest;
    let mut h = Sha256::new();
    h.update(b"sigil/keygen-with-aux/v1");
    h.update([u8::try_from(tag.len()).unwrap_or(u8::MAX)]);
    h.update(tag);
    h.update(session_id);
    h.finalize().into()
}

/// Key generation of a key that has its own aux info: aux info generation
/// ([`aux_info`], from this party's `primes`) and then threshold keygen
/// ([`keygen`]), as one session of `n` parties with one message type
/// ([`KeygenAuxMsg`], schedule [`expects::keygen_with_aux`]); each runs
/// under its own execution id derived from `session_id`.
///
/// This is how a key with an external party is made: the party set
/// includes a client, so its aux info cannot be shared with other keys
/// the way a node-only set's is (CGGMP21 Fig. 6 is run for the key).
/// Aux info whose Paillier moduli share a factor is refused
/// ([`shared_factor`]).
///
/// # Errors
/// [`Error::InvalidParameters`] as [`keygen`]; the failure of either
/// protocol; a shared factor.
pub async fn keygen_with_aux<E, M, R>(
    party: M,
    session_id: &SessionId,
    i: PartyIndex,
    n: u16,
    t: u16,
    primes: PregeneratedPrimes,
    rng: &mut R,
) -> Result<(IncompleteKeyShare<E>, AuxInfo), Error>
where
    E: Curve,
    M: Mpc<ProtocolMessage = KeygenAuxMsg<E>>,
    R: RngCore + CryptoRng,
{
    use futures::channel::mpsc::unbounded;
    use futures::{SinkExt, StreamExt};
    use round_based::{Delivery, Incoming, MpcParty, Outgoing};
    use std::convert::Infallible;

    check_keygen(i, n, t)?;
    let (mut incoming, mut outgoing) = party.into_party().delivery.split();
    let (aux_in, aux_rx) = unbounded::<Incoming<AuxMsg>>();
    let (keygen_in, keygen_rx) = unbounded::<Incoming<KeygenMsg<E>>>();
    let (aux_out, aux_out_rx) = unbounded::<Outgoing<AuxMsg>>();
    let (keygen_out, keygen_out_rx) = unbounded::<Outgoing<KeygenMsg<E>>>();
    // Incoming messages to the protocol of their round (keygen's wait in
    // their channel until aux info is done); ends only on a failure.
    let route_in = async move {
        while let Some(m) = incoming.next().await {
            let m = match m {
                Ok(m) => m,
                Err(e) => return Error::transport(e),
            };
            let head = Incoming {
                id: m.id,
                sender: m.sender,
                msg_type: m.msg_type,
                msg: (),
            };
            // A closed channel: that protocol is over, its late messages
            // have no reader.
            let _ = match m.msg {
                KeygenAuxMsg::Aux(msg) => aux_in.unbounded_send(head.map(|()| msg)).is_ok(),
                KeygenAuxMsg::Keygen(msg) => keygen_in.unbounded_send(head.map(|()| msg)).is_ok(),
            };
        }
        Error::transport("the session's incoming messages ended")
    };
    // Outgoing messages of both protocols; ends once both are done.
    let route_out = async move {
        let aux = aux_out_rx.map(|o| o.map(KeygenAuxMsg::Aux));
        let keygen = keygen_out_rx.map(|o| o.map(KeygenAuxMsg::Keygen));
        let mut all = futures::stream::select(aux, keygen);
        while let Some(o) = all.next().await {
            outgoing.send(o).await.map_err(Error::transport)?;
        }
        Ok::<(), Error>(())
    };
    let protocol = async move {
        let ok = Ok::<_, Infallible> as fn(_) -> _;
        let party = MpcParty::connected((aux_rx.map(ok), aux_out));
        let aux = aux_info(party, &sub_execution_id(b"aux", session_id), i, n, primes, rng).await?;
        if let Some((a, b)) = shared_factor(&aux) {
            return Err(Error::Frost(format!(
                "aux info: the Paillier moduli of parties {a} and {b} share a prime factor"
            )));
        }
        let ok = Ok::<_, Infallible> as fn(_) -> _;
        let party = MpcParty::connected((keygen_rx.map(ok), keygen_out));
        let share = keygen::<E, _, _>(party, &sub_execution_id(b"keygen", session_id), i, n, t, rng).await?;
        Ok((share, aux))
    };
    let both = futures::future::try_join(protocol, route_out);
    futures::pin_mut!(both, route_in);
    match futures::future::select(both, route_in).await {
        futures::future::Either::Left((r, _)) => r.map(|(out, ())| out),
        futures::future::Either::Right((e, _)) => Err(e),
    }
}

/// The public package of an ECDSA key: the group key, chain code and
/// every party's verifying share of `share`, and (for a key made with its
/// own aux info, [`keygen_with_aux`]) the fingerprint of `aux`'s public
/// part ([`aux_fingerprint`]). Every party computes the same package;
/// its JSON is what the key record stores and attests.
pub fn public_package<E: Curve>(
    share: &cggmp21::key_share::DirtyIncompleteKeyShare<E>,
    aux: Option<&cggmp21::key_share::DirtyAuxInfo<Level>>,
) -> crate::scheme::EcdsaPublic {
    crate::scheme::EcdsaPublic {
        public_key: hex::encode(share.shared_public_key.to_bytes(true)),
        chain_code: hex::encode(share.chain_code.unwrap_or_default()),
        public_shares: reshare::public_shares(share).iter().map(hex::encode).collect(),
        aux_fingerprint: aux.map(|a| hex::encode(aux_fingerprint(a))),
    }
}

/// Two 1536-bit safe primes for aux info from Sigil's sieve
/// ([`crate::primes`]), as an external party makes them: seconds of CPU,
/// blocking.
///
/// # Errors
/// The generator's.
pub fn generate_primes<R: RngCore + CryptoRng>(rng: &mut R) -> Result<PregeneratedPrimes, Error> {
    let mut one = || {
        crate::primes::safe_prime(
            PRIME_BITS,
            rng,
            crate::primes::SieveTable::shared(),
            &std::sync::atomic::AtomicBool::new(false),
            &crate::primes::Stats::default(),
        )?
        .ok_or_else(|| Error::InvalidParameters("prime search stopped".into()))
    };
    let (p, q) = (one()?, one()?);
    primes_from(p, q)
}

/// Bit length of the safe primes of aux info at 128-bit security.
pub const PRIME_BITS: u32 = 1536;

/// `p` and `q` as aux-info primes.
///
/// # Errors
/// [`Error::InvalidParameters`] for equal primes, or primes that are not
/// [`PRIME_BITS`]-bit safe primes.
pub fn primes_from(p: cggmp21::rug::Integer, q: cggmp21::rug::Integer) -> Result<PregeneratedPrimes, Error> {
    let bad = |m: &str| Error::InvalidParameters(m.into());
    if p == q {
        return Err(bad("the two primes are equal"));
    }
    for x in [&p, &q] {
        if x.significant_bits() != PRIME_BITS || !crate::primes::is_safe_prime(x) {
            return Err(bad("aux info needs 1536-bit safe primes"));
        }
    }
    PregeneratedPrimes::new(p, q).ok_or_else(|| bad("primes too small for the security level"))
}

/// CGGMP21 key shares through the verifiable resharing of
/// [`crate::reshare`]: the share and its public data are carried over to
/// the `frost-core` suite of the same curve (big-endian scalars, SEC1
/// compressed points; `cggmp21`'s share indices `I[k] = k + 1` are FROST's
/// identifiers), reshared, and the result is loaded back through
/// `key_share`'s validation with the new `VssSetup` and the chain code
/// unchanged, so the public key, the xpub and every derived address stay
/// the same. The new share needs new aux info for its new party set before
/// it signs ([`complete`]).
pub mod reshare {
    use cggmp21::generic_ec::{NonZero, Point, Scalar, SecretScalar};
    use cggmp21::key_share::{DirtyIncompleteKeyShare, DirtyKeyInfo, Validate, VssSetup};
    use frost_core::keys::{PublicKeyPackage, SigningShare, VerifyingShare};
    use frost_core::{Ciphersuite, VerifyingKey};

    use super::{Curve, IncompleteKeyShare};
    use crate::frost::identifier;
    use crate::Error;

    /// A curve with the `frost-core` suite whose group it is (only the
    /// group arithmetic and encodings of the suite are used).
    pub trait ReshareCurve: Curve {
        /// The suite.
        type Suite: Ciphersuite + Send + 'static;
    }

    impl ReshareCurve for super::Secp256k1 {
        type Suite = frost_secp256k1_tr::Secp256K1Sha256TR;
    }

    impl ReshareCurve for super::Secp256r1 {
        type Suite = frost_p256::P256Sha256;
    }

    fn bad<C: Ciphersuite>(what: &str) -> impl Fn(frost_core::Error<C>) -> Error + '_ {
        move |e| Error::InvalidParameters(format!("{what}: {e}"))
    }

    /// The public key package of a key with group key `public_key` and
    /// verifying shares `public_shares` (SEC1, in key order), threshold `t`.
    ///
    /// # Errors
    /// [`Error::InvalidParameters`] for a point that does not decode.
    pub fn package<E: ReshareCurve>(
        public_key: &[u8],
        public_shares: &[Vec<u8>],
        t: u16,
    ) -> Result<PublicKeyPackage<E::Suite>, Error> {
        let mut shares = std::collections::BTreeMap::new();
        for (k, bytes) in (0u16..).zip(public_shares) {
            let vs = VerifyingShare::deserialize(bytes).map_err(bad("verifying share"))?;
            shares.insert(identifier::<E::Suite>(k)?, vs);
        }
        let key = VerifyingKey::deserialize(public_key).map_err(bad("public key"))?;
        Ok(PublicKeyPackage::new(shares, key, Some(t)))
    }

    /// The verifying shares of `share`'s key, SEC1 compressed, in key order.
    pub fn public_shares<E: Curve>(share: &cggmp21::key_share::DirtyIncompleteKeyShare<E>) -> Vec<Vec<u8>> {
        share.public_shares.iter().map(|p| p.to_bytes(true).to_vec()).collect()
    }

    /// The public key package of `share`'s key.
    ///
    /// # Errors
    /// [`Error::InvalidParameters`] for a share without the standard
    /// indices `I[k] = k + 1` (every Sigil key has them).
    pub fn package_of<E: ReshareCurve>(share: &IncompleteKeyShare<E>) -> Result<PublicKeyPackage<E::Suite>, Error> {
        let vss = share
            .vss_setup
            .as_ref()
            .ok_or_else(|| Error::InvalidParameters("an n-of-n share has no VSS setup".into()))?;
        let standard = (1u64..).zip(&vss.I).all(|(k, i)| Scalar::<E>::from(k) == *i.as_ref());
        if !standard || vss.I.len() != share.public_shares.len() {
            return Err(Error::InvalidParameters("share indices are not 1..n".into()));
        }
        let public_key = share.shared_public_key.to_bytes(true);
        package::<E>(&public_key, &public_shares(share), vss.min_signers)
    }

    /// The verifying shares of a (new) package of `n` parties, SEC1
    /// compressed, in key order.
    ///
    /// # Errors
    /// [`Error::InvalidParameters`] for a package without every party.
    pub fn package_shares<C: Ciphersuite>(package: &PublicKeyPackage<C>) -> Result<Vec<Vec<u8>>, Error> {
        let n = u16::try_from(package.verifying_shares().len()).map_err(|_| Error::InvalidParameters("n".into()))?;
        (0..n)
            .map(|k| {
                package
                    .verifying_shares()
                    .get(&identifier::<C>(k)?)
                    .ok_or_else(|| Error::InvalidParameters(format!("no verifying share for {k}")))?
                    .serialize()
                    .map_err(bad("verifying share"))
            })
            .collect()
    }

    /// `share`'s secret as a share of the suite. Secret.
    ///
    /// # Errors
    /// Never for a valid share (the encodings agree).
    pub fn signing_share<E: ReshareCurve>(share: &IncompleteKeyShare<E>) -> Result<SigningShare<E::Suite>, Error> {
        let x: &SecretScalar<E> = share.x.as_ref();
        let bytes = zeroize::Zeroizing::new(x.as_ref().to_be_bytes().as_ref().to_vec());
        SigningShare::deserialize(&bytes).map_err(bad("share"))
    }

    /// The new CGGMP21 share of party `i` (new key-level index) from a
    /// reshare's output, with `chain_code` of the key, validated by
    /// `key_share` (every public share consistent with the VSS setup and
    /// the secret).
    ///
    /// # Errors
    /// [`Error::InvalidParameters`] if the output does not make a valid
    /// share.
    pub fn share_from<E: ReshareCurve>(
        out: &crate::reshare::Output<E::Suite>,
        i: u16,
        chain_code: Option<[u8; 32]>,
    ) -> Result<IncompleteKeyShare<E>, Error> {
        let point = |bytes: &[u8]| -> Result<NonZero<Point<E>>, Error> {
            Point::<E>::from_bytes(bytes)
                .ok()
                .and_then(NonZero::from_point)
                .ok_or_else(|| Error::InvalidParameters("a point of the new package does not decode".into()))
        };
        let pkg = &out.public_key_package;
        let n = u16::try_from(pkg.verifying_shares().len()).map_err(|_| Error::InvalidParameters("n".into()))?;
        let mut public_shares = Vec::with_capacity(usize::from(n));
        for k in 0..n {
            let vs = pkg
                .verifying_shares()
                .get(&identifier::<E::Suite>(k)?)
                .ok_or_else(|| Error::InvalidParameters(format!("no verifying share for {k}")))?;
            public_shares.push(point(&vs.serialize().map_err(bad("verifying share"))?)?);
        }
        let t = pkg
            .min_signers()
            .ok_or_else(|| Error::InvalidParameters("no threshold".into()))?;
        let indices = (1..=n)
            .map(|k| NonZero::from_scalar(Scalar::<E>::from(k)))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| Error::InvalidParameters("zero index".into()))?;
        let (_, share) = out
            .share
            .as_ref()
            .ok_or_else(|| Error::InvalidParameters("no new share at a party that does not receive".into()))?;
        let secret = zeroize::Zeroizing::new(share.serialize());
        let x = SecretScalar::<E>::from_be_bytes(&secret)
            .ok()
            .and_then(NonZero::from_secret_scalar)
            .ok_or_else(|| Error::InvalidParameters("the new share is zero or malformed".into()))?;
        let dirty = DirtyIncompleteKeyShare {
            i,
            key_info: DirtyKeyInfo {
                curve: Default::default(),
                shared_public_key: point(&pkg.verifying_key().serialize().map_err(bad("public key"))?)?,
                public_shares,
                vss_setup: Some(VssSetup {
                    min_signers: t,
                    I: indices,
                }),
                chain_code,
            },
            x,
        };
        dirty
            .validate()
            .map_err(|e| Error::InvalidParameters(format!("reshared share: {}", e.into_error())))
    }
}

/// The deepest derivation path accepted: BIP-32 encodes the depth in one
/// byte.
pub const MAX_DERIVATION_DEPTH: usize = 255;

/// Parses a BIP-32 path of non-hardened steps, `m/0/1` (or `0/1`), of at
/// most [`MAX_DERIVATION_DEPTH`] steps.
///
/// # Errors
/// [`Error::InvalidParameters`] for a hardened step (`'` or `h`, or an
/// index >= 2^31), a path deeper than 255 levels, or anything that is not
/// a path.
pub fn parse_derivation_path(path: &str) -> Result<Vec<u32>, Error> {
    let bad = |m: String| Error::InvalidParameters(m);
    let rest = path.trim();
    let rest = rest
        .strip_prefix("m/")
        .or_else(|| (rest == "m").then_some(""))
        .unwrap_or(rest);
    if rest.is_empty() {
        return Ok(Vec::new());
    }
    if rest.split('/').count() > MAX_DERIVATION_DEPTH {
        return Err(bad(format!(
            "derivation paths have at most {MAX_DERIVATION_DEPTH} levels (BIP-32 depth is one byte)"
        )));
    }
    rest.split('/')
        .map(|step| {
            if step.ends_with('\'') || step.ends_with('h') || step.ends_with('H') {
                return Err(bad(format!(
                    "hardened step {step:?}: only non-hardened derivation is possible for a threshold key"
                )));
            }
            let v: u32 = step
                .parse()
                .map_err(|_| bad(format!("derivation step {step:?} is not a number")))?;
            if v >= 1 << 31 {
                return Err(bad(format!("derivation step {v} is a hardened index")));
            }
            Ok(v)
        })
        .collect()
}

/// The child public key (SEC1 compressed) at non-hardened `path` below
/// the extended public key `(public_key, chain_code)`, by SLIP-10 (which is
/// BIP-32 on secp256k1): what [`sign`] with the same path signs for.
///
/// # Errors
/// [`Error::InvalidParameters`] for a malformed key or a hardened index.
pub fn derive_public_key<E: Curve>(public_key: &[u8], chain_code: [u8; 32], path: &[u32]) -> Result<Vec<u8>, Error>
where
    cggmp21::hd_wallet::Slip10: cggmp21::hd_wallet::HdWallet<E>,
{
    use cggmp21::hd_wallet::HdWallet as _;
    let point = cggmp21::generic_ec::Point::<E>::from_bytes(public_key)
        .map_err(|e| Error::InvalidParameters(format!("public key: {e}")))?;
    let epub = cggmp21::hd_wallet::ExtendedPublicKey {
        public_key: point,
        chain_code,
    };
    let mut steps = Vec::with_capacity(path.len());
    for &i in path {
        steps.push(
            cggmp21::hd_wallet::NonHardenedIndex::try_from(i)
                .map_err(|_| Error::InvalidParameters(format!("derivation step {i} is hardened")))?,
        );
    }
    let child = cggmp21::hd_wallet::Slip10::derive_child_public_key_with_path(&epub, steps);
    Ok(child.public_key.to_bytes(true).to_vec())
}

/// Full signing of a 32-byte digest as session party `i`; `signers[j]` is
/// the keygen index of session party `j`. Every signer outputs the same
/// signature, normalized to low `s`.
///
/// # Errors
/// [`Error::InvalidParameters`] for a bad path or signer set; the
/// protocol's failure otherwise.
#[allow(clippy::too_many_arguments)] // the protocol's inputs, each needed
pub async fn sign<E, M, R>(
    party: M,
    session_id: &SessionId,
    i: PartyIndex,
    signers: &[PartyIndex],
    share: &KeyShare<E>,
    digest: &[u8; 32],
    derivation_path: &[u32],
    rng: &mut R,
) -> Result<Signature<E>, Error>
where
    E: Curve,
    cggmp21::generic_ec::NonZero<cggmp21::generic_ec::Point<E>>: cggmp21::generic_ec::coords::AlwaysHasAffineX<E>,
    cggmp21::generic_ec::Point<E>: cggmp21::generic_ec::coords::HasAffineX<E>,
    cggmp21::hd_wallet::Slip10: cggmp21::hd_wallet::HdWallet<E>,
    M: Mpc<ProtocolMessage = SignMsg<E>>,
    R: RngCore + CryptoRng,
{
    let eid = cggmp21::ExecutionId::new(session_id);
    let scalar = cggmp21::generic_ec::Scalar::<E>::from_be_bytes_mod_order(digest);
    let data = cggmp21::DataToSign::from_scalar(scalar);
    let mut builder = cggmp21::signing(eid, i, signers, share);
    if !derivation_path.is_empty() {
        builder = builder
            .set_derivation_path(derivation_path.iter().copied())
            .map_err(|e| Error::InvalidParameters(format!("derivation path: {e}")))?;
    }
    let sig = builder
        .sign(rng, party, data)
        .await
        .map_err(|e| protocol_error("signing", e))?;
    Ok(sig.normalize_s())
}

/// Presigning as session party `i` (CGGMP21 signing without the message):
/// the result signs one message later with
/// [`Presignature::issue_partial_signature`], combined by
/// [`cggmp21::PartialSignature::combine`].
///
/// # Errors
/// The protocol's failure.
pub async fn presign<E, M, R>(
    party: M,
    session_id: &SessionId,
    i: PartyIndex,
    signers: &[PartyIndex],
    share: &KeyShare<E>,
    rng: &mut R,
) -> Result<Presignature<E>, Error>
where
    E: Curve,
    cggmp21::generic_ec::NonZero<cggmp21::generic_ec::Point<E>>: cggmp21::generic_ec::coords::AlwaysHasAffineX<E>,
    cggmp21::generic_ec::Point<E>: cggmp21::generic_ec::coords::HasAffineX<E>,
    M: Mpc<ProtocolMessage = SignMsg<E>>,
    R: RngCore + CryptoRng,
{
    let eid = cggmp21::ExecutionId::new(session_id);
    cggmp21::signing(eid, i, signers, share)
        .generate_presignature(rng, party)
        .await
        .map_err(|e| protocol_error("presigning", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derivation_paths() {
        assert_eq!(parse_derivation_path("m/0/1").ok(), Some(vec![0, 1]));
        assert_eq!(
            parse_derivation_path("0/1/2147483647").ok(),
            Some(vec![0, 1, 2_147_483_647])
        );
        assert_eq!(parse_derivation_path("m").ok(), Some(vec![]));
        assert!(parse_derivation_path("m/0'/1").is_err());
        assert!(parse_derivation_path("m/0h").is_err());
        assert!(parse_derivation_path("m/2147483648").is_err());
        assert!(parse_derivation_path("m/x").is_err());
        assert!(parse_derivation_path("m//1").is_err());
        let deep = |n: usize| format!("m/{}", vec!["1"; n].join("/"));
        assert_eq!(parse_derivation_path(&deep(255)).map(|p| p.len()).ok(), Some(255));
        assert!(parse_derivation_path(&deep(256)).is_err());
    }
}
