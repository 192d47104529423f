//! Threshold Paillier keys in the node (scheme `paillier`, crate
//! `sigil-paillier`): dealerless key generation as a series of DKG
//! sessions (one attempt over a batch of candidates each, until one yields
//! a biprime), and threshold decryption as a one-step session in which
//! each chosen party returns its partial decryption.
//!
//! Stored like every other share: the party's integer share of the
//! decryption exponent, sealed, as JSON `{"party", "share"}` (decimal);
//! the public package is [`PaillierPublic`] JSON, with every party's
//! verification key.
//!
//! **Verified decryption.** Each chosen party answers with its partial
//! decryption `c^{2 Delta s_j}` and Shoup's proof of it
//! ([`sigil_paillier::verify`]). The coordinator checks that each answer
//! carries the party number of the node that sent it and that every
//! other party's proof verifies against the verification key in the
//! attested key record; a failure is a protocol error naming the nodes
//! (HTTP 502 with `nodes`; the named nodes are marked down and one more
//! set without them is tried), never a wrong plaintext. Keys made before
//! verifiable decryption have no verification keys: their partials are
//! combined unchecked (a wrong plaintext stays possible for them).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::Digest as _;
use sigil_crypto::scheme::PaillierPublic;
use sigil_paillier::decrypt::{partial_with_proof, Partial, PublicKey};
use sigil_paillier::params::Setup;
use sigil_paillier::rug::Integer;
use sigil_paillier::verify::{Proof, Verification};
use sigil_paillier::{protocol, Params};
use sigil_proto::peer::{DkgProposal, SessionOutcome, SignProposal};
use zeroize::Zeroizing;

use sigil_proto::peer::session_proposal::Kind;
use sigil_proto::peer::ClientAuthorization;

use super::{no_messages, wrong_material, Family, KeygenPart, LoadedKey, Operation, ViewExtras};
use crate::error::{NodeError, SessionError};
use crate::operations::KeygenProgress;
use crate::session::{self, ExpectFn, SessionSpec};
use crate::{internal, Node, Outcomes};

/// The threshold Paillier family.
pub(crate) struct Paillier;

/// A party's decryption share, parsed once; wiped when dropped (`rug`
/// integers do not zeroize themselves).
pub(crate) struct Material {
    party: usize,
    exponent: Integer,
}

impl Drop for Material {
    fn drop(&mut self) {
        sigil_paillier::wipe(&mut self.exponent);
    }
}

/// Bits of `N` when a request gives none.
pub const DEFAULT_BITS: u32 = 2048;

/// Key sizes accepted, in bits of `N`.
pub const BITS: std::ops::RangeInclusive<u32> = 512..=4096;

/// Setups kept in memory (each is a few kilobytes of field primes; the
/// key is chosen by the proposer, so the cache is bounded).
const SETUP_CACHE_ENTRIES: usize = 8;

/// Candidate pairs per attempt (session).
const BATCH: usize = 256;

#[derive(Serialize, Deserialize)]
struct StoredShare {
    party: usize,
    share: String,
}

impl Drop for StoredShare {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.share);
    }
}

/// The public values for `(n, t, bits, prime_threshold)`, derived once
/// (the field primes take about a second at 2048 bits).
fn setup(parties: usize, t: usize, bits: u32, prime_threshold: u32) -> Result<Arc<Setup>, SessionError> {
    type Cache = Mutex<HashMap<(usize, usize, u32, u32), Arc<Setup>>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    let k = (parties, t, bits, prime_threshold);
    if let Some(s) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(&k) {
        return Ok(s.clone());
    }
    let mut params = Params::new(parties, t, bits);
    params.batch_size = BATCH;
    params.prime_threshold = prime_threshold;
    let s = Arc::new(params.setup().map_err(|e| SessionError::Invalid(e.to_string()))?);
    let mut c = cache.lock().unwrap_or_else(|e| e.into_inner());
    // The parameters come from proposals: keep at most a few setups.
    if c.len() >= SETUP_CACHE_ENTRIES {
        c.clear();
    }
    c.insert(k, s.clone());
    Ok(s)
}

/// TNO's default `prime_threshold` (trial division of `N` by the primes up
/// to it), used when a request leaves it out.
pub const DEFAULT_PRIME_THRESHOLD: u32 = 2_000;

/// `prime_threshold` values accepted.
pub const PRIME_THRESHOLDS: std::ops::RangeInclusive<u32> = 3..=100_000;

/// The `prime_threshold` a proposal asks for (0: the default), checked.
///
/// # Errors
/// A message for a 400 when out of [`PRIME_THRESHOLDS`].
pub fn prime_threshold(requested: Option<u32>) -> Result<u32, String> {
    match requested {
        None | Some(0) => Ok(DEFAULT_PRIME_THRESHOLD),
        Some(b) if PRIME_THRESHOLDS.contains(&b) => Ok(b),
        Some(b) => Err(format!(
            "prime_threshold must be within {}..={}, got {b}",
            PRIME_THRESHOLDS.start(),
            PRIME_THRESHOLDS.end()
        )),
    }
}

/// Checks the API's settings: `threshold` parties decrypt (corruption
/// threshold `threshold - 1`), which needs `n >= 2 (threshold - 1) + 1`.
///
/// # Errors
/// A message for a 400.
pub fn check_settings(n: usize, threshold: u16, bits: u32) -> Result<(), String> {
    if threshold < 2 {
        return Err("threshold must be at least 2 (parties needed to decrypt)".into());
    }
    let t = usize::from(threshold) - 1;
    if n < 2 * t + 1 {
        return Err(format!(
            "threshold {threshold} needs at least {} parties (n >= 2(T-1)+1, honest majority); the key has {n}",
            2 * t + 1
        ));
    }
    if !BITS.contains(&bits) || !bits.is_multiple_of(2) {
        return Err(format!(
            "bits must be even and within {}..={}",
            BITS.start(),
            BITS.end()
        ));
    }
    Ok(())
}

impl Node {
    /// Decrypts `ciphertext` (decimal) with `T` of the key's parties (this
    /// node first, recently failed nodes last; another set if one is
    /// unreachable). Returns the plaintext (decimal) and the parties used.
    ///
    /// # Errors
    /// 404 unknown key; 400 not a paillier key or a bad ciphertext; 503
    /// fewer than `T` parties reachable; the session's errors.
    pub async fn decrypt(
        &self,
        key_id: &str,
        ciphertext: &str,
        auth: &crate::RequestAuth,
    ) -> Result<(String, Vec<u16>), crate::error::NodeError> {
        use crate::error::NodeError;
        let loaded = self.usable_key(key_id, &auth.client).await?;
        if loaded.operation() != Operation::Decrypt {
            return Err(NodeError::bad_request(format!("{} keys do not decrypt", loaded.scheme)));
        }
        let key = &loaded.record;
        if !key.policy.decrypt.contains(&auth.client) {
            return Err(NodeError::refused(&crate::auth::Refusal::Forbidden(format!(
                "client {} may not decrypt with key {key_id}",
                auth.client
            ))));
        }
        let pk = public_key(&key.public_package)?;
        let c = parse_ciphertext(&pk, ciphertext.as_bytes()).map_err(NodeError::bad_request)?;
        let kind = sigil_proto::peer::session_proposal::Kind::Sign(SignProposal {
            key_id: key.key_id.clone(),
            message: ciphertext.as_bytes().to_vec(),
            epoch: key.epoch,
            scheme: key.scheme.clone(),
            derivation_path: vec![],
            presignature_id: String::new(),
        });
        let own = loaded.parties.index(self.cfg.node_id).map(|i| i + 1);
        // A party whose partial fails its proof is named and marked down;
        // a second attempt runs without it, so one liar cannot block every
        // decryption it is drawn for.
        let mut avoid: Vec<u16> = Vec::new();
        let (m, chosen) = loop {
            let (o, chosen) = self
                .coordinate_quorum(key, kind.clone(), true, "decryption parties", Some(&auth.proto), &avoid)
                .await?;
            let answers: Vec<(u16, usize, Vec<u8>)> = o
                .by_party
                .into_iter()
                .zip(&chosen)
                .map(|(x, &node)| {
                    let party = loaded.parties.index(node).map_or(0, |i| i + 1);
                    (node, party, x.map(|o| o.partial_signature).unwrap_or_default())
                })
                .collect();
            let (pk, c) = (pk.clone(), c.clone());
            match tokio::task::spawn_blocking(move || combine(&pk, &c, &answers, own))
                .await
                .map_err(NodeError::internal)?
            {
                Ok(m) => break (m, chosen),
                Err(SessionError::Protocol { culprits, reason }) if avoid.is_empty() && !culprits.is_empty() => {
                    tracing::warn!(?culprits, %reason, "decryption: parties named, another set without them");
                    culprits.iter().for_each(|&n| self.mark_down(n));
                    avoid = culprits;
                }
                Err(e) => return Err(e.into()),
            }
        };
        Ok((m.to_string(), chosen))
    }
}

#[async_trait::async_trait]
impl Family for Paillier {
    fn operation(&self) -> Operation {
        Operation::Decrypt
    }

    fn keygen_kind(&self, _parties: &[u16]) -> crate::limits::SessionKind {
        crate::limits::SessionKind::PaillierAttempt
    }

    fn keygen_schedule(&self, _parties: &[u16]) -> ExpectFn {
        protocol::expects
    }

    fn keygen_settings(
        &self,
        n: usize,
        t: u16,
        bits: Option<u32>,
        prime_threshold: Option<u32>,
    ) -> Result<(u32, u32), String> {
        let b = bits.unwrap_or(DEFAULT_BITS);
        check_settings(n, t, b)?;
        Ok((b, self::prime_threshold(prime_threshold)?))
    }

    /// Paillier key generation: attempts (sessions over a batch of
    /// candidates each) until one yields the key, within
    /// [`KEYGEN_BUDGET`]; progress in `progress` and the log.
    async fn coordinate_keygen(
        &self,
        node: &Node,
        parties: &[u16],
        kind: Kind,
        progress: &KeygenProgress,
        auth: &ClientAuthorization,
    ) -> Result<Outcomes, NodeError> {
        let started = Instant::now();
        for attempt in 1u32.. {
            let o = node.coordinate(parties, kind.clone(), true, Some(auth)).await?;
            let outcomes: Vec<SessionOutcome> = o.by_party.iter().cloned().map(Option::unwrap_or_default).collect();
            let first = outcomes.first().cloned().unwrap_or_default();
            if outcomes.iter().any(|p| {
                p.public_key_package != first.public_key_package
                    || (p.candidates, p.past_trial_division) != (first.candidates, first.past_trial_division)
            }) {
                return Err(SessionError::Protocol {
                    culprits: vec![],
                    reason: "parties disagree on the outcome of a key generation attempt".into(),
                }
                .into());
            }
            progress.attempt(first.candidates, first.past_trial_division);
            let (_, candidates, past) = progress.get();
            if !first.public_key_package.is_empty() {
                tracing::info!(
                    attempt,
                    candidates,
                    past_trial_division = past,
                    seconds = started.elapsed().as_secs_f64(),
                    "paillier key found"
                );
                return Ok(o);
            }
            tracing::info!(
                attempt,
                candidates,
                past_trial_division = past,
                seconds = started.elapsed().as_secs_f64(),
                "paillier keygen: no biprime in this batch, next"
            );
            if started.elapsed() > KEYGEN_BUDGET {
                return Err(NodeError::Budget(format!(
                    "no Paillier key after {attempt} attempts ({candidates} candidates) in {} s",
                    KEYGEN_BUDGET.as_secs()
                )));
            }
        }
        Err(NodeError::internal("unreachable"))
    }

    fn sign_schedule(&self, _s: &SignProposal) -> ExpectFn {
        no_messages
    }

    fn check_message(&self, _scheme: sigil_crypto::Scheme, _message: &[u8], path: &[u32]) -> Result<(), String> {
        if path.is_empty() {
            Ok(())
        } else {
            Err("paillier keys have no derivation".into())
        }
    }

    /// One key generation attempt as a party. Returns the share and public
    /// package if this attempt found the key (every party alike), `None`
    /// otherwise, with the attempt's counters.
    async fn keygen_part(
        &self,
        node: &Node,
        spec: SessionSpec,
        _scheme: sigil_crypto::Scheme,
        d: &DkgProposal,
        threshold: u16,
    ) -> Result<KeygenPart, SessionError> {
        let n = spec.parties.len();
        check_settings(n, threshold, d.bits).map_err(SessionError::Invalid)?;
        let t = usize::from(threshold) - 1;
        let bound = prime_threshold(Some(d.prime_threshold)).map_err(SessionError::Invalid)?;
        let setup = setup(n, t, d.bits, bound)?;
        let (me, sid) = (spec.me, spec.eid);
        let started = Instant::now();
        let s2 = setup.clone();
        let (out, stats) = session::run_heavy::<protocol::Msg, _, _, _>(&node.sessions, &node.peers, spec, |party| {
            let setup = s2.clone();
            async move {
                let mut rng = rand::rngs::StdRng::from_rng(rand::rngs::OsRng)
                    .map_err(|e| sigil_crypto::Error::InvalidParameters(e.to_string()))?;
                protocol::attempt(party, &setup, &sid, me, &mut rng)
                    .await
                    .map_err(|e| sigil_crypto::Error::InvalidParameters(e.to_string()))
            }
        })
        .await?;
        tracing::info!(
            key_id = %d.key_id,
            candidates = stats.candidates,
            past_trial_division = stats.trial_passed,
            found = out.is_some(),
            ms = started.elapsed().as_millis() as u64,
            "paillier keygen attempt"
        );
        let outcome = SessionOutcome {
            candidates: stats.candidates as u64,
            past_trial_division: stats.trial_passed as u64,
            ..Default::default()
        };
        // No key in this attempt: nothing stored, no public package.
        let Some(out) = out else {
            return Ok(KeygenPart { key: None, outcome });
        };
        let public = public_of(&out.public_key)?;
        let share = Zeroizing::new(
            serde_json::to_vec(&StoredShare {
                party: out.share.party,
                share: out.share.share.to_string(),
            })
            .map_err(internal)?,
        );
        Ok(KeygenPart {
            key: Some((share, serde_json::to_vec(&public).map_err(internal)?)),
            outcome,
        })
    }

    /// A party's partial decryption of the ciphertext in `s.message`
    /// (decimal ASCII) with its proof, returned as `partial_signature`
    /// ([`WirePartial`] JSON).
    async fn sign_part(
        &self,
        node: &Node,
        _spec: SessionSpec,
        key: &LoadedKey,
        s: &SignProposal,
        _signers: Vec<u16>,
    ) -> Result<SessionOutcome, SessionError> {
        let pk = public_key(&key.record.public_package)?;
        let c = parse_ciphertext(&pk, &s.message).map_err(SessionError::Invalid)?;
        let m = node.material(key).await?;
        let super::Material::Paillier(share) = &*m else {
            return Err(wrong_material());
        };
        let (party, mut exp) = (share.party, share.exponent.clone());
        let p = tokio::task::spawn_blocking(move || {
            let p = partial_with_proof(&pk, &c, party, &exp, &mut rand::rngs::OsRng);
            sigil_paillier::wipe(&mut exp);
            p
        })
        .await
        .map_err(internal)?
        .map_err(|e| SessionError::Invalid(e.to_string()))?;
        Ok(SessionOutcome {
            partial_signature: serde_json::to_vec(&WirePartial::from(&p)).map_err(internal)?,
            ..Default::default()
        })
    }

    fn reshares(&self) -> bool {
        true
    }

    fn rotates(&self) -> Result<(), String> {
        Err("integer shares grow with every reshare (sigil_paillier::reshare), so paillier keys are reshared on request only".into())
    }

    /// The integer reshare of `sigil_paillier::reshare` (Feldman
    /// commitments in `Z_{N^2}^*` pinned to the attested verification
    /// keys); the new package has `theta' = n! theta mod N`, the new
    /// committee's verification keys and share bound, and the same `N`.
    async fn reshare_part(
        &self,
        node: &Node,
        spec: SessionSpec,
        key: &LoadedKey,
        roles: &sigil_crypto::reshare::Roles,
        _new_parties: &[u16],
        old_share: Option<Zeroizing<Vec<u8>>>,
    ) -> Result<(Option<Zeroizing<Vec<u8>>>, Vec<u8>), SessionError> {
        let plan = reshare_plan(&key.record.public_package, roles)?;
        let (me, sid) = (spec.me, spec.eid);
        let deals = plan.dealer.get(usize::from(me)).copied().flatten().is_some();
        let share = match old_share.filter(|_| deals) {
            Some(s) => Some(Material {
                party: 0,
                exponent: stored_exponent(&s)?,
            }),
            None => None,
        };
        let out = session::run_heavy::<sigil_paillier::reshare::Msg, _, _, _>(
            &node.sessions,
            &node.peers,
            spec,
            |party| async move {
                let mut rng = rand::rngs::StdRng::from_rng(rand::rngs::OsRng)
                    .map_err(|e| sigil_crypto::Error::InvalidParameters(e.to_string()))?;
                // `Material` wipes the exponent when dropped, also when the
                // session is cut at its deadline.
                let share = share;
                sigil_paillier::reshare::run(party, &sid, me, &plan, share.as_ref().map(|m| &m.exponent), &mut rng)
                    .await
                    .map_err(reshare_error)
            },
        )
        .await?;
        let package = serde_json::to_vec(&public_of(&out.public_key)?).map_err(internal)?;
        let share = out
            .share
            .as_ref()
            .map(|s| {
                serde_json::to_vec(&StoredShare {
                    party: s.party,
                    share: s.share.to_string(),
                })
                .map(Zeroizing::new)
            })
            .transpose()
            .map_err(internal)?;
        Ok((share, package))
    }

    async fn load(
        &self,
        _node: &Node,
        _key: &LoadedKey,
        share: Zeroizing<Vec<u8>>,
    ) -> Result<super::Material, SessionError> {
        let stored: StoredShare = serde_json::from_slice(&share).map_err(internal)?;
        Ok(super::Material::Paillier(Material {
            party: stored.party,
            exponent: stored_exponent(&share)?,
        }))
    }

    fn view_extras(&self, _scheme: sigil_crypto::Scheme, record: &sigil_store::KeyRecord) -> ViewExtras {
        let n = String::from_utf8_lossy(&record.public_key).into_owned();
        ViewExtras {
            public_key: n.clone(),
            n: Some(n),
            ..ViewExtras::default()
        }
    }
}

/// The decryption exponent in a sealed share ([`StoredShare`] JSON).
fn stored_exponent(share: &[u8]) -> Result<Integer, SessionError> {
    let stored: StoredShare = serde_json::from_slice(share).map_err(internal)?;
    stored
        .share
        .parse()
        .map_err(|_| internal("stored share does not parse"))
}

/// The package of `pk` ([`PaillierPublic`] JSON).
fn public_of(pk: &PublicKey) -> Result<PaillierPublic, SessionError> {
    let ver = pk
        .verification
        .as_ref()
        .ok_or_else(|| internal("a key without verification keys"))?;
    Ok(PaillierPublic {
        n: pk.n.to_string(),
        theta: pk.theta.to_string(),
        parties: pk.parties,
        corruption_threshold: pk.threshold,
        verification_keys: ver.keys.iter().map(Integer::to_string).collect(),
        share_bits: ver.share_bits,
    })
}

/// The integer reshare's plan for a key with public `package` and the
/// session's `roles` (0-based key indices become 1-based party numbers;
/// the API threshold `T'` becomes the corruption threshold `T' - 1`).
///
/// # Errors
/// [`SessionError::Invalid`] for a key made before verifiable decryption
/// (nothing pins what its dealers deal) or roles the plan refuses.
fn reshare_plan(
    package: &[u8],
    roles: &sigil_crypto::reshare::Roles,
) -> Result<sigil_paillier::reshare::Plan, SessionError> {
    let number = |r: &Option<u16>| r.map(|k| usize::from(k) + 1);
    let plan = sigil_paillier::reshare::Plan {
        old: public_key(package)?,
        dealer: roles.dealer.iter().map(number).collect(),
        receiver: roles.receiver.iter().map(number).collect(),
        new_threshold: usize::from(roles.new_t).saturating_sub(1),
    };
    plan.check().map_err(|e| SessionError::Invalid(e.to_string()))?;
    Ok(plan)
}

/// The protocol error of an integer reshare, with its culprits (session
/// party indices) carried over.
fn reshare_error(e: sigil_paillier::Error) -> sigil_crypto::Error {
    let parties = |p: Vec<usize>| p.into_iter().filter_map(|i| u16::try_from(i).ok()).collect();
    match e {
        sigil_paillier::Error::InvalidCommitments { parties: p } => {
            sigil_crypto::Error::InvalidCommitment { culprits: parties(p) }
        }
        sigil_paillier::Error::InvalidSubShares { parties: p } => {
            sigil_crypto::Error::InvalidSecretShare { culprits: parties(p) }
        }
        sigil_paillier::Error::InconsistentEcho { parties: p } => {
            sigil_crypto::Error::InconsistentBroadcast { parties: parties(p) }
        }
        sigil_paillier::Error::Transport(e) => sigil_crypto::Error::Transport(e),
        other => sigil_crypto::Error::InvalidParameters(other.to_string()),
    }
}

/// Parsed public keys kept in memory (parsing derives the verification
/// base, an exponentiation mod `N^2`), by SHA-256 of the package.
const PUBLIC_KEY_CACHE_ENTRIES: usize = 64;

/// The public key from a stored public package, parsed once per process
/// (a small bounded cache).
///
/// # Errors
/// An internal error for a malformed package.
pub fn public_key(package: &[u8]) -> Result<PublicKey, SessionError> {
    type Cache = Mutex<HashMap<[u8; 32], PublicKey>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    let id: [u8; 32] = sha2::Sha256::digest(package).into();
    if let Some(pk) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(&id) {
        return Ok(pk.clone());
    }
    let pk = parse_public_key(package)?;
    let mut c = cache.lock().unwrap_or_else(|e| e.into_inner());
    if c.len() >= PUBLIC_KEY_CACHE_ENTRIES {
        c.clear();
    }
    c.insert(id, pk.clone());
    Ok(pk)
}

fn parse_public_key(package: &[u8]) -> Result<PublicKey, SessionError> {
    let p: PaillierPublic = serde_json::from_slice(package).map_err(internal)?;
    let n: Integer = p.n.parse().map_err(|_| internal("N does not parse"))?;
    let theta: Integer = p.theta.parse().map_err(|_| internal("theta does not parse"))?;
    let keys = p
        .verification_keys
        .iter()
        .map(|k| k.parse::<Integer>())
        .collect::<Result<Vec<Integer>, _>>()
        .map_err(|_| internal("a verification key does not parse"))?;
    let pk = PublicKey::new(n, theta, p.parties, p.corruption_threshold);
    if keys.is_empty() {
        return Ok(pk);
    }
    if keys.len() != p.parties {
        return Err(internal("one verification key per party"));
    }
    let v = sigil_paillier::verify::base(&pk.n);
    Ok(pk.with_verification(Verification {
        v,
        keys,
        share_bits: p.share_bits,
    }))
}

/// A decimal ciphertext, checked: in `[1, N^2)` and invertible mod `N`.
///
/// # Errors
/// A message for a 400.
pub fn parse_ciphertext(pk: &PublicKey, text: &[u8]) -> Result<Integer, String> {
    let s = std::str::from_utf8(text).map_err(|_| "ciphertext must be a decimal string".to_string())?;
    if s.is_empty() || s.len() > 4000 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err("ciphertext must be a decimal string of at most 4000 digits".into());
    }
    let c: Integer = s
        .parse()
        .map_err(|_| "ciphertext must be a decimal string".to_string())?;
    pk.check_ciphertext(&c).map_err(|e| e.to_string())?;
    Ok(c)
}

/// A partial decryption between nodes: `{"party", "value", "e", "z"}`
/// (decimal strings; `e` and `z` empty for a key without verification
/// keys).
#[derive(Serialize, Deserialize)]
pub struct WirePartial {
    /// 1-based party number.
    pub party: usize,
    /// `c^{2 Delta s_j} mod N^2`.
    pub value: String,
    /// The proof's challenge.
    #[serde(default)]
    pub e: String,
    /// The proof's response.
    #[serde(default)]
    pub z: String,
}

impl From<&Partial> for WirePartial {
    fn from(p: &Partial) -> Self {
        let (e, z) = p
            .proof
            .as_ref()
            .map_or_else(Default::default, |q| (q.e.to_string(), q.z.to_string()));
        WirePartial {
            party: p.party,
            value: p.value.to_string(),
            e,
            z,
        }
    }
}

/// Decimal digits a value in an answer may have (`N^2` at 4096 bits has
/// 2467; a proof's response is a little longer).
const MAX_DIGITS: usize = 4000;

impl WirePartial {
    /// Parses an answer; `None` for anything malformed.
    fn parse(bytes: &[u8]) -> Option<Partial> {
        let w: WirePartial = serde_json::from_slice(bytes).ok()?;
        let num = |s: &str| -> Option<Integer> {
            let ok = !s.is_empty() && s.len() <= MAX_DIGITS && s.bytes().all(|b| b.is_ascii_digit() || b == b'-');
            ok.then(|| s.parse().ok()).flatten()
        };
        let proof = if w.e.is_empty() && w.z.is_empty() {
            None
        } else {
            Some(Proof {
                e: num(&w.e)?,
                z: num(&w.z)?,
            })
        };
        Some(Partial {
            party: w.party,
            value: num(&w.value)?,
            proof,
        })
    }
}

/// Combines the answers `(node, its party number, answer)` into the
/// plaintext: each answer must parse and carry its node's party number,
/// and every proof but `own`'s must verify.
///
/// # Errors
/// [`SessionError::Protocol`] naming the nodes whose answers are
/// malformed, claim another party or fail their proofs, or (naming no
/// one) when the partials do not combine.
pub fn combine(
    pk: &PublicKey,
    c: &Integer,
    answers: &[(u16, usize, Vec<u8>)],
    own: Option<usize>,
) -> Result<Integer, SessionError> {
    let mut partials = Vec::with_capacity(answers.len());
    let mut culprits = Vec::new();
    for (node, party, bytes) in answers {
        match WirePartial::parse(bytes) {
            Some(p) if p.party == *party && *party != 0 => partials.push(p),
            _ => culprits.push(*node),
        }
    }
    let node_of = |party: usize| answers.iter().find(|a| a.1 == party).map(|a| a.0);
    let result = if culprits.is_empty() {
        pk.combine_verified(c, &partials, own)
    } else {
        Err(sigil_paillier::Error::BadPartials {
            parties: vec![],
            reason: "malformed answer or another party's number".into(),
        })
    };
    result.map_err(|e| {
        if let sigil_paillier::Error::BadPartials { parties, .. } = &e {
            culprits.extend(parties.iter().filter_map(|&p| node_of(p)));
        }
        SessionError::Protocol {
            culprits,
            reason: format!("partial decryptions rejected: {e}"),
        }
    })
}

/// How long a whole key generation may take before it gives up.
pub const KEYGEN_BUDGET: Duration = Duration::from_secs(600);

use rand::SeedableRng as _;

#[cfg(test)]
mod tests {
    use super::*;

    /// The sealed Paillier share is this JSON; stored records depend on it.
    #[test]
    fn stored_share_encoding_is_pinned() {
        let s = StoredShare {
            party: 2,
            share: "123456789".into(),
        };
        let json = serde_json::to_string(&s).unwrap_or_default();
        assert_eq!(json, r#"{"party":2,"share":"123456789"}"#);
        let back: Result<StoredShare, _> = serde_json::from_str(&json);
        assert!(back.is_ok_and(|b| b.party == 2 && b.share == "123456789"));
    }
}
