//! Client authorization: signed requests (JWT), roles, and the replay cache.
//!
//! A client is an id and a public key (Ed25519 or ECDSA P-256) that each
//! node's operator lists in its own config (`[[clients]]`). Every request
//! carries `Authorization: Bearer <JWT>` signed by the client, with the
//! algorithm pinned by the client's key type (`EdDSA` for Ed25519, `ES256`
//! for P-256) and the claims of [`Claims`]:
//! - `sub` (client id), `aud` (the cluster id), `iat`, `exp`, `jti`
//!   (random, single use), `htm` and `htu` (method and path, as in DPoP,
//!   RFC 9449 section 4.2; the path without query);
//! - `body_sha256`: hex SHA-256 of the exact body bytes. A token with it is
//!   a *write* token: `exp - iat` at most [`MAX_WRITE_TTL_S`], single use.
//!   A token without it is a *read* token, valid for `GET` only, `exp -
//!   iat` at most [`MAX_READ_TTL_S`], reusable.
//!
//! The node that takes the request checks the token ([`Verifier::check`])
//! and claims its `jti` ([`Verifier::claim_at_door`]); it forwards the
//! token with the raw body in every session proposal, and **each
//! participant** checks the token again with its own copy of the client's
//! key and claims the `jti` for that coordinator
//! ([`Verifier::claim_as_participant`]) before it loads a share.
//!
//! Replay: `jti`s are remembered in memory until `exp` plus
//! [`CONTINUATION_S`]; a token issued before the second the node started
//! (`iat < started_at`, both in whole seconds, no skew allowance) is
//! refused as `replayed`, so a restart cannot reopen a token the node may
//! have seen. (A token used within the same second just before a crash
//! and replayed just after the restart is the one gap; clients with a
//! clock behind the node's are refused for their skew after a restart.) A participant accepts a `jti`
//! again only from the coordinator that first presented it (the same
//! request retried with another signer set, or a Paillier key generation's
//! next attempt), so a token replayed to another coordinator is refused by
//! every party that saw it.
//!
//! Security notes: nothing here logs a token; refusals name only the
//! reason ([`Refusal::reason`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
pub use sigil_api::token::{body_hash, generate_client_key, Claims, ClientSigner, MAX_READ_TTL_S, MAX_WRITE_TTL_S};

/// Clock difference tolerated between client and node, in seconds.
pub const CLOCK_SKEW_S: i64 = 60;
/// How long past `exp` a participant still accepts a token it already
/// accepted from the same coordinator (an operation that started in time
/// and continues: Paillier key generation runs up to 10 minutes), in
/// seconds.
pub const CONTINUATION_S: i64 = 900;
/// Most `jti`s remembered; beyond it new write tokens are refused
/// (`busy`) until old ones expire. At 1 000 requests/s with 5-minute
/// tokens about 300 000 are live.
pub const REPLAY_CAPACITY: usize = 2_000_000;
/// Longest accepted token, in bytes.
pub const MAX_TOKEN_BYTES: usize = 4096;

/// A client's role: what it may do beyond the per-key policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything below.
    Admin,
    /// Create keys (`POST /v1/keys`).
    Create,
    /// Read keys and operations.
    Read,
    /// Read the audit log (`GET /v1/audit`).
    Audit,
}

/// One trusted client as a node's config lists it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ClientEntry {
    /// Client id (the token's `sub`), 1 to 64 characters.
    pub id: String,
    /// The client's public key, PEM SubjectPublicKeyInfo: Ed25519 (tokens
    /// signed `EdDSA`) or ECDSA P-256 (tokens signed `ES256`).
    pub public_key: String,
    /// Roles (`admin`, `create`, `read`, `audit`). Signing and decryption
    /// are granted per key by its policy, not by a role.
    #[serde(default)]
    pub roles: Vec<Role>,
}

/// Why a request or a proposal's authorization was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// No `Authorization: Bearer` token.
    #[error("no bearer token")]
    MissingToken,
    /// Not a JWT, or claims that do not parse.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// `sub` names no client this node trusts.
    #[error("unknown client")]
    UnknownClient,
    /// The header's algorithm is not the one pinned for the client.
    #[error("wrong algorithm for this client")]
    WrongAlgorithm,
    /// The signature does not verify under the client's key.
    #[error("bad signature")]
    BadSignature,
    /// `aud` is not this cluster.
    #[error("token is for another cluster")]
    WrongAudience,
    /// Expired, not yet valid, or a lifetime over the limit.
    #[error("expired: {0}")]
    Expired(String),
    /// The `jti` was used already (or the token predates this node's start).
    #[error("replayed: {0}")]
    Replayed(String),
    /// Method, path or body differ from what the client signed.
    #[error("body mismatch: {0}")]
    BodyMismatch(String),
    /// The client is not allowed this operation (role or key policy).
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// The token was issued before this node started (its replay cache
    /// starts empty, so it cannot tell whether the token was used).
    #[error("issued before this node started; retry with a new token")]
    PredatesStart,
    /// The replay cache is full.
    #[error("too many live tokens; retry later")]
    Busy,
}

impl Refusal {
    /// Stable reason code (API error code, metric label, audit outcome).
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::MissingToken => "missing_token",
            Refusal::Malformed(_) => "malformed_token",
            Refusal::UnknownClient => "unknown_client",
            Refusal::WrongAlgorithm => "wrong_algorithm",
            Refusal::BadSignature => "bad_signature",
            Refusal::WrongAudience => "wrong_audience",
            Refusal::Expired(_) => "expired",
            Refusal::Replayed(_) => "replayed",
            Refusal::BodyMismatch(_) => "body_mismatch",
            Refusal::Forbidden(_) => "forbidden",
            Refusal::PredatesStart => "predates_start",
            Refusal::Busy => "busy",
        }
    }

    /// The refusal a [`Refusal::reason`] code names (details are not sent
    /// between nodes).
    pub fn from_reason(code: &str) -> Refusal {
        let d = || format!("refused by a peer ({code})");
        match code {
            "missing_token" => Refusal::MissingToken,
            "unknown_client" => Refusal::UnknownClient,
            "wrong_algorithm" => Refusal::WrongAlgorithm,
            "bad_signature" => Refusal::BadSignature,
            "wrong_audience" => Refusal::WrongAudience,
            "expired" => Refusal::Expired(d()),
            "replayed" => Refusal::Replayed(d()),
            "body_mismatch" => Refusal::BodyMismatch(d()),
            "busy" => Refusal::Busy,
            "predates_start" => Refusal::PredatesStart,
            "malformed_token" => Refusal::Malformed(d()),
            _ => Refusal::Forbidden(d()),
        }
    }

    /// Whether the refusal is about who the caller is (401) rather than
    /// what it may do (403).
    pub fn is_authentication(&self) -> bool {
        !matches!(self, Refusal::Forbidden(_) | Refusal::Busy)
    }
}

/// A checked token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorized {
    /// The client id.
    pub client: String,
    /// The token's `jti`.
    pub jti: String,
    /// The token's `exp`.
    pub exp: i64,
    /// Whether it is a write token (carries `body_sha256`).
    pub write: bool,
    /// The client's roles on this node.
    pub roles: Vec<Role>,
}

impl Authorized {
    /// Whether the client has `role` (or `admin`).
    pub fn has(&self, role: Role) -> bool {
        self.roles.iter().any(|&r| r == role || r == Role::Admin)
    }

    /// [`Refusal::Forbidden`] unless the client has `role`.
    ///
    /// # Errors
    /// The refusal.
    pub fn require(&self, role: Role) -> Result<(), Refusal> {
        if self.has(role) {
            Ok(())
        } else {
            Err(Refusal::Forbidden(format!(
                "client {} lacks role {role:?}",
                self.client
            )))
        }
    }
}

struct ClientKey {
    alg: Algorithm,
    key: VerifyKey,
    roles: Vec<Role>,
}

/// A client's public key, parsed once at start-up.
enum VerifyKey {
    /// Verified with `ed25519-dalek` (the point decompressed once, not per
    /// token as `jsonwebtoken` does; RFC 8037 section 3.1 signatures over
    /// the JWS signing input, RFC 8032 section 5.1.7).
    Ed25519(ed25519_dalek::VerifyingKey),
    /// Verified with `jsonwebtoken` (ES256).
    Jwt(DecodingKey),
}

#[derive(Default)]
struct ReplayCache {
    /// jti -> (coordinator that first presented it, keep until).
    seen: HashMap<String, (u16, i64)>,
    /// keep-until -> jtis, for expiry.
    by_time: BTreeMap<i64, Vec<String>>,
}

impl ReplayCache {
    fn purge(&mut self, now: i64) {
        while let Some(entry) = self.by_time.first_entry() {
            if *entry.key() >= now {
                break;
            }
            for jti in entry.remove() {
                self.seen.remove(&jti);
            }
        }
    }
}

/// Checks request tokens against this node's trusted clients.
pub struct Verifier {
    aud: String,
    clients: HashMap<String, ClientKey>,
    started_at: i64,
    replay: Mutex<ReplayCache>,
}

/// Parses a PEM SubjectPublicKeyInfo into the algorithm and decoding key.
fn decoding_key(pem: &str) -> anyhow::Result<(Algorithm, VerifyKey)> {
    use p256::pkcs8::DecodePublicKey;
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    if let Ok(k) = ed25519_dalek::VerifyingKey::from_public_key_pem(pem.trim()) {
        return Ok((Algorithm::EdDSA, VerifyKey::Ed25519(k)));
    }
    let k = p256::PublicKey::from_public_key_pem(pem.trim())
        .map_err(|_| anyhow::anyhow!("not an Ed25519 or P-256 public key (PEM SubjectPublicKeyInfo)"))?;
    let point = p256::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(&k, false);
    let (x, y) = (
        point.x().ok_or_else(|| anyhow::anyhow!("P-256 key has no x"))?,
        point.y().ok_or_else(|| anyhow::anyhow!("P-256 key has no y"))?,
    );
    Ok((
        Algorithm::ES256,
        VerifyKey::Jwt(DecodingKey::from_ec_components(&b64(x), &b64(y))?),
    ))
}

/// Seconds since the Unix epoch.
pub fn now_unix() -> i64 {
    crate::now_unix()
}

impl Verifier {
    /// A verifier for `aud` trusting `clients`; tokens issued before
    /// `started_at` (seconds) are refused.
    ///
    /// # Errors
    /// A client with a malformed id or key, or listed twice.
    pub fn new(aud: &str, clients: &[ClientEntry], started_at: i64) -> anyhow::Result<Self> {
        let mut map = HashMap::new();
        for c in clients {
            anyhow::ensure!(
                !c.id.is_empty() && c.id.len() <= 64,
                "clients: id {:?} must be 1 to 64 characters",
                c.id
            );
            let (alg, key) = decoding_key(&c.public_key).map_err(|e| anyhow::anyhow!("client {}: {e}", c.id))?;
            let entry = ClientKey {
                alg,
                key,
                roles: c.roles.clone(),
            };
            anyhow::ensure!(
                map.insert(c.id.clone(), entry).is_none(),
                "clients: {} listed twice",
                c.id
            );
        }
        Ok(Verifier {
            aud: aud.to_string(),
            clients: map,
            started_at,
            replay: Mutex::new(ReplayCache::default()),
        })
    }

    /// Verifies `token` for a request `method path` with `body` (None for
    /// bodiless reads): signature under the client's pinned algorithm,
    /// `aud`, method, path, body hash, and the lifetime limits. Does not
    /// check `exp` against the clock nor claim the `jti`: the `claim_*`
    /// functions do.
    ///
    /// # Errors
    /// The [`Refusal`].
    pub fn check(
        &self,
        token: &str,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<(Authorized, Claims), Refusal> {
        self.check_inner(token, method, path, body, true)
    }

    /// [`Verifier::check`] without the signature check, for a token this
    /// very process verified at its door and passes to its own part of the
    /// session in memory (never for a token that came over the network):
    /// the request is re-derived and the policy applied as for any party.
    ///
    /// # Errors
    /// The [`Refusal`].
    pub(crate) fn recheck_own(
        &self,
        token: &str,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<(Authorized, Claims), Refusal> {
        self.check_inner(token, method, path, body, false)
    }

    fn check_inner(
        &self,
        token: &str,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        verify_signature: bool,
    ) -> Result<(Authorized, Claims), Refusal> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(Refusal::Malformed(format!("token over {MAX_TOKEN_BYTES} bytes")));
        }
        let unverified = unverified_claims(token)?;
        let client = self.clients.get(&unverified.sub).ok_or(Refusal::UnknownClient)?;
        let claims = if verify_signature {
            verified_claims(token, client, unverified)?
        } else {
            unverified
        };
        if claims.aud != self.aud {
            return Err(Refusal::WrongAudience);
        }
        if claims.jti.is_empty() || claims.jti.len() > 128 {
            return Err(Refusal::Malformed("jti must be 1 to 128 characters".into()));
        }
        if !claims.htm.eq_ignore_ascii_case(method) || claims.htu != path {
            return Err(Refusal::BodyMismatch(format!(
                "token is for {} {}, request is {method} {path}",
                claims.htm, claims.htu
            )));
        }
        let write = match (&claims.body_sha256, body) {
            (Some(h), Some(b)) if h.eq_ignore_ascii_case(&body_hash(b)) => true,
            (Some(_), Some(_)) => return Err(Refusal::BodyMismatch("body_sha256 does not match the body".into())),
            (Some(_), None) => true,
            (None, _) if method.eq_ignore_ascii_case("GET") => false,
            (None, _) => {
                return Err(Refusal::Forbidden(
                    "a read token (no body_sha256) is for GET requests only".into(),
                ))
            }
        };
        let ttl = claims.exp - claims.iat;
        let max = if write { MAX_WRITE_TTL_S } else { MAX_READ_TTL_S };
        if ttl <= 0 || ttl > max {
            return Err(Refusal::Expired(format!("lifetime {ttl} s is outside 1..={max} s")));
        }
        let auth = Authorized {
            client: claims.sub.clone(),
            jti: claims.jti.clone(),
            exp: claims.exp,
            write,
            roles: client.roles.clone(),
        };
        Ok((auth, claims))
    }

    fn check_time(&self, c: &Claims, now: i64) -> Result<(), Refusal> {
        if c.iat > now + CLOCK_SKEW_S {
            return Err(Refusal::Expired("issued in the future".into()));
        }
        if c.exp + CLOCK_SKEW_S < now {
            return Err(Refusal::Expired(format!("expired {} s ago", now - c.exp)));
        }
        if c.iat < self.started_at {
            return Err(Refusal::PredatesStart);
        }
        Ok(())
    }

    /// The node taking a request: the token must be current and, if it is
    /// a write token, its `jti` never seen here; it is then remembered as
    /// presented by this node (`me`).
    ///
    /// # Errors
    /// [`Refusal::Expired`], [`Refusal::Replayed`], [`Refusal::Busy`].
    pub fn claim_at_door(&self, c: &Claims, write: bool, me: u16, now: i64) -> Result<(), Refusal> {
        self.check_time(c, now)?;
        if !write {
            return Ok(());
        }
        let mut cache = self.replay.lock().unwrap_or_else(|p| p.into_inner());
        cache.purge(now);
        if cache.seen.contains_key(&c.jti) {
            return Err(Refusal::Replayed("jti already used".into()));
        }
        Self::remember(&mut cache, c, me)
    }

    /// A participant: accepts the `jti` if unseen (the token must then be
    /// current), or seen from the same `coordinator` (the same request's
    /// next session, even past `exp` by up to [`CONTINUATION_S`]).
    ///
    /// # Errors
    /// [`Refusal::Expired`], [`Refusal::Replayed`], [`Refusal::Busy`].
    pub fn claim_as_participant(&self, c: &Claims, coordinator: u16, now: i64) -> Result<(), Refusal> {
        let mut cache = self.replay.lock().unwrap_or_else(|p| p.into_inner());
        cache.purge(now);
        match cache.seen.get(&c.jti) {
            Some(&(first, _)) if first == coordinator => Ok(()),
            Some(&(first, _)) => Err(Refusal::Replayed(format!("jti already presented by node {first}"))),
            None => {
                self.check_time(c, now)?;
                Self::remember(&mut cache, c, coordinator)
            }
        }
    }

    fn remember(cache: &mut ReplayCache, c: &Claims, by: u16) -> Result<(), Refusal> {
        if cache.seen.len() >= REPLAY_CAPACITY {
            return Err(Refusal::Busy);
        }
        let until = c.exp.saturating_add(CLOCK_SKEW_S + CONTINUATION_S);
        cache.seen.insert(c.jti.clone(), (by, until));
        cache.by_time.entry(until).or_default().push(c.jti.clone());
        Ok(())
    }
}

/// The claims of `token` after checking its header's algorithm (the one
/// pinned for `client`) and its signature under `client`'s key.
/// `unverified` are the token's claims as parsed before the check.
fn verified_claims(token: &str, client: &ClientKey, unverified: Claims) -> Result<Claims, Refusal> {
    let header = jsonwebtoken::decode_header(token).map_err(|e| Refusal::Malformed(e.to_string()))?;
    if header.alg != client.alg {
        return Err(Refusal::WrongAlgorithm);
    }
    match &client.key {
        VerifyKey::Ed25519(k) => {
            // JWS compact serialization (RFC 7515 section 7.1): the
            // signature covers `header.payload` exactly, so the claims
            // parsed from that payload are the signed ones.
            let (signing_input, signature) = token
                .rsplit_once('.')
                .ok_or_else(|| Refusal::Malformed("not a JWS compact serialization".into()))?;
            let mut sig = [0u8; 64];
            let n = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode_slice(signature, &mut sig)
                .map_err(|_| Refusal::BadSignature)?;
            if n != sig.len() {
                return Err(Refusal::BadSignature);
            }
            // RFC 8032 verification as `jsonwebtoken` (ring) does it:
            // canonical `S`, cofactorless equation.
            ed25519_dalek::Verifier::verify(k, signing_input.as_bytes(), &ed25519_dalek::Signature::from_bytes(&sig))
                .map_err(|_| Refusal::BadSignature)?;
            Ok(unverified)
        }
        VerifyKey::Jwt(key) => {
            let mut v = Validation::new(client.alg);
            v.validate_exp = false;
            v.validate_aud = false;
            v.required_spec_claims.clear();
            jsonwebtoken::decode::<Claims>(token, key, &v)
                .map(|d| d.claims)
                .map_err(|e| match e.kind() {
                    jsonwebtoken::errors::ErrorKind::InvalidSignature => Refusal::BadSignature,
                    jsonwebtoken::errors::ErrorKind::InvalidAlgorithm => Refusal::WrongAlgorithm,
                    _ => Refusal::Malformed(e.to_string()),
                })
        }
    }
}

/// The claims of `token` before its signature is checked (to find the
/// client's key); never trusted as such.
pub(crate) fn unverified_claims(token: &str) -> Result<Claims, Refusal> {
    let mut parts = token.split('.');
    let payload = match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(_), Some(p), Some(_), None) => p,
        _ => return Err(Refusal::Malformed("not a JWS compact serialization".into())),
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| Refusal::Malformed("payload is not base64url".into()))?;
    serde_json::from_slice(&bytes).map_err(|e| Refusal::Malformed(format!("claims: {e}")))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header};

    fn setup(p256: bool) -> (Verifier, ClientSigner, ClientSigner) {
        let (sk, pk) = generate_client_key(p256).unwrap();
        let (other_sk, _) = generate_client_key(p256).unwrap();
        let clients = vec![ClientEntry {
            id: "alice".into(),
            public_key: pk,
            roles: vec![Role::Create],
        }];
        let v = Verifier::new("c1", &clients, now_unix() - 10).unwrap();
        (
            v,
            ClientSigner::from_pem("alice", &sk).unwrap(),
            ClientSigner::from_pem("alice", &other_sk).unwrap(),
        )
    }

    #[test]
    fn good_tokens_pass_and_each_refusal_names_its_reason() {
        for p256 in [false, true] {
            let (v, alice, mallory) = setup(p256);
            let body = br#"{"message":"00"}"#;
            let path = "/v1/keys/k/sign";
            let t = alice.token("c1", "POST", path, Some(body), 60).unwrap();
            let (a, c) = v.check(&t, "POST", path, Some(body)).unwrap();
            assert!(a.write && a.has(Role::Create) && !a.has(Role::Audit));
            v.claim_at_door(&c, true, 0, now_unix()).unwrap();
            let reason = |r: Result<_, Refusal>| r.err().map(|e| e.reason());
            assert_eq!(reason(v.claim_at_door(&c, true, 0, now_unix())), Some("replayed"));
            // A participant accepts the coordinator that presented it, no other.
            v.claim_as_participant(&c, 0, now_unix()).unwrap();
            assert_eq!(reason(v.claim_as_participant(&c, 2, now_unix())), Some("replayed"));
            let check = |t: &str| reason(v.check(t, "POST", path, Some(body)).map(|_| ()));
            assert_eq!(
                check(&mallory.token("c1", "POST", path, Some(body), 60).unwrap()),
                Some("bad_signature")
            );
            assert_eq!(
                check(&alice.token("c2", "POST", path, Some(body), 60).unwrap()),
                Some("wrong_audience")
            );
            assert_eq!(
                check(&alice.token("c1", "POST", path, Some(b"{}"), 60).unwrap()),
                Some("body_mismatch")
            );
            assert_eq!(
                check(&alice.token("c1", "POST", "/v1/keys/x/sign", Some(body), 60).unwrap()),
                Some("body_mismatch")
            );
            assert_eq!(
                check(&alice.token("c1", "POST", path, Some(body), 301).unwrap()),
                Some("expired")
            );
            assert_eq!(
                check(&alice.token("c1", "POST", path, None, 60).unwrap()),
                Some("forbidden"),
                "read token for a write"
            );
            let bob = ClientSigner::from_pem("bob", &generate_client_key(p256).unwrap().0).unwrap();
            assert_eq!(
                check(&bob.token("c1", "POST", path, Some(body), 60).unwrap()),
                Some("unknown_client")
            );
            // The payload swapped under a valid signature, a cut signature.
            let other = alice.token("c1", "POST", path, Some(body), 60).unwrap();
            let parts: Vec<&str> = t.split('.').collect();
            let other_parts: Vec<&str> = other.split('.').collect();
            let swapped = format!("{}.{}.{}", parts[0], other_parts[1], parts[2]);
            assert_eq!(check(&swapped), Some("bad_signature"));
            let cut = &t[..t.len() - 4];
            assert!(matches!(check(cut), Some("bad_signature" | "malformed_token")));
            assert_eq!(check("not.a.jwt"), Some("malformed_token"));
            assert_eq!(check(""), Some("malformed_token"));
            // Wrong algorithm: an HS256 token made with the public key as secret.
            let claims = alice.claims("c1", "POST", path, Some(body), 60);
            let hs = jsonwebtoken::encode(
                &Header::new(Algorithm::HS256),
                &claims,
                &EncodingKey::from_secret(b"pk"),
            )
            .unwrap();
            assert_eq!(check(&hs), Some("wrong_algorithm"));
            // Expired and pre-start tokens.
            let mut old = alice.claims("c1", "POST", path, Some(body), 60);
            old.iat -= 400;
            old.exp -= 400;
            let (_, c) = v
                .check(&alice.sign_claims(&old).unwrap(), "POST", path, Some(body))
                .unwrap();
            assert_eq!(reason(v.claim_at_door(&c, true, 0, now_unix())), Some("expired"));
            let mut before_start = alice.claims("c1", "POST", path, Some(body), 60);
            before_start.iat -= 100;
            let (_, c) = v
                .check(&alice.sign_claims(&before_start).unwrap(), "POST", path, Some(body))
                .unwrap();
            assert_eq!(reason(v.claim_at_door(&c, true, 0, now_unix())), Some("predates_start"));
            // Read tokens: GET only, reusable.
            let r = alice.token("c1", "GET", "/v1/keys", None, 3600).unwrap();
            let (a, c) = v.check(&r, "GET", "/v1/keys", None).unwrap();
            assert!(!a.write);
            v.claim_at_door(&c, false, 0, now_unix()).unwrap();
            v.claim_at_door(&c, false, 0, now_unix()).unwrap();
        }
    }

    /// Ed25519 signatures are deterministic: our EdDSA tokens are byte for
    /// byte what `jsonwebtoken` makes from the same key and claims.
    #[test]
    fn eddsa_tokens_match_jsonwebtoken() {
        use p256::pkcs8::DecodePrivateKey;
        let (sk, _) = generate_client_key(false).unwrap();
        let ours = ClientSigner::from_pem("alice", &sk).unwrap();
        let claims = ours.claims("c1", "POST", "/v1/keys", Some(b"{}"), 60);
        let der = ed25519_dalek::pkcs8::EncodePrivateKey::to_pkcs8_der(
            &ed25519_dalek::SigningKey::from_pkcs8_pem(&sk).unwrap(),
        )
        .unwrap();
        let theirs = jsonwebtoken::encode(
            &Header::new(Algorithm::EdDSA),
            &claims,
            &EncodingKey::from_ed_der(der.as_bytes()),
        )
        .unwrap();
        assert_eq!(ours.sign_claims(&claims).unwrap(), theirs);
    }

    #[test]
    fn the_replay_cache_forgets_expired_tokens() {
        let (v, alice, _) = setup(false);
        let (_, c) = v
            .check(
                &alice.token("c1", "POST", "/p", Some(b""), 10).unwrap(),
                "POST",
                "/p",
                Some(b""),
            )
            .unwrap();
        v.claim_at_door(&c, true, 0, now_unix()).unwrap();
        let later = c.exp + CLOCK_SKEW_S + CONTINUATION_S + 1;
        v.replay.lock().unwrap().purge(later);
        assert!(v.replay.lock().unwrap().seen.is_empty());
    }
}
