//! The external party's two operations end to end over REST: make a key
//! whose share this client holds ([`keygen`]) and sign with it
//! ([`sign`]). Each starts the session with a signed request naming
//! fresh session keys, runs the party ([`crate::party`]) through the
//! node that took the request, and checks the cluster's result against
//! its own: the key's public key against its DKG output, the signature
//! with the scheme's ordinary verifier.
// `serde_json::Value` indexing: reads of a missing field give `Null`, never
// a panic; writes go only to objects built here.
#![allow(clippy::indexing_slicing)]

use std::collections::HashMap;
use std::path::Path;

use anyhow::{anyhow, bail, Context};
use ed25519_dalek::VerifyingKey;
use rand::SeedableRng;
use serde_json::{json, Value};
use sigil_crypto::ecdsa;
use sigil_crypto::party::protocols::{self, KeyMaterial};
use sigil_crypto::Scheme;

use crate::grpc::{status_json, GrpcClient, GrpcRelay};
use crate::keyfile::{self, Header, Unlock};
use crate::party::{PartySession, Relay, SessionKeys};
use crate::rest::{Client, SessionRelay};

/// The node API an external party starts its sessions through: REST
/// ([`Client`]) or gRPC ([`GrpcClient`]).
pub trait Door {
    /// The relay of one session through this door.
    type Relay<'a>: Relay
    where
        Self: 'a;

    /// The client id its requests are signed as.
    fn client_id(&self) -> &str;

    /// Starts a key generation with the exact JSON `body` of
    /// `POST /v1/keys`; the session view.
    fn start_dkg(&self, body: Vec<u8>) -> impl std::future::Future<Output = anyhow::Result<Value>>;

    /// Starts a signature with the exact JSON `body` of
    /// `POST /v1/keys/{key_id}/sign`; the session view.
    fn start_sign(&self, key_id: &str, body: Vec<u8>) -> impl std::future::Future<Output = anyhow::Result<Value>>;

    /// The view of session `id` (a key generation when `dkg`), once it
    /// ended or a long poll passed.
    fn session(&self, id: &str, dkg: bool) -> impl std::future::Future<Output = anyhow::Result<Value>>;

    /// The relay of session `id`.
    fn relay<'a>(&'a self, id: &str, dkg: bool) -> Self::Relay<'a>;
}

impl Door for Client {
    type Relay<'a> = SessionRelay<'a>;

    fn client_id(&self) -> &str {
        Client::client_id(self)
    }

    async fn start_dkg(&self, body: Vec<u8>) -> anyhow::Result<Value> {
        self.post_bytes("/v1/keys", body).await
    }

    async fn start_sign(&self, key_id: &str, body: Vec<u8>) -> anyhow::Result<Value> {
        self.post_bytes(&format!("/v1/keys/{key_id}/sign"), body).await
    }

    async fn session(&self, id: &str, _dkg: bool) -> anyhow::Result<Value> {
        self.get(&format!("/v1/sessions/{id}?wait_ms={SESSION_WAIT_MS}")).await
    }

    fn relay<'a>(&'a self, id: &str, _dkg: bool) -> SessionRelay<'a> {
        SessionRelay::new(self, id)
    }
}

impl Door for GrpcClient {
    type Relay<'a> = GrpcRelay<'a>;

    fn client_id(&self) -> &str {
        GrpcClient::client_id(self)
    }

    async fn start_dkg(&self, body: Vec<u8>) -> anyhow::Result<Value> {
        status_json(&GrpcClient::start_dkg(self, body).await?)
    }

    async fn start_sign(&self, key_id: &str, body: Vec<u8>) -> anyhow::Result<Value> {
        status_json(&GrpcClient::start_sign(self, key_id, body).await?)
    }

    async fn session(&self, id: &str, dkg: bool) -> anyhow::Result<Value> {
        status_json(&self.status(id, dkg, SESSION_WAIT_MS).await?)
    }

    fn relay<'a>(&'a self, id: &str, dkg: bool) -> GrpcRelay<'a> {
        GrpcRelay::new(self, id, dkg)
    }
}

/// A relay's reads once its session has succeeded: the nodes may finish
/// before their last messages to the party reach the mailbox (ECDSA
/// signing: the party still needs every partial signature), so a relay
/// that finds nothing reads again, every 100 ms, for up to
/// [`crate::party::ENDED_GRACE`] after the first empty read, and then
/// gives up with [`crate::party::unfinished`].
#[derive(Default)]
pub struct Ended(std::sync::Mutex<Option<std::time::Instant>>);

impl Ended {
    /// After an empty read of a succeeded session: nothing yet (read
    /// again), after a short pause; or, once the grace has passed, the
    /// error.
    ///
    /// # Errors
    /// [`crate::party::unfinished`] after the grace.
    pub async fn read_again(&self) -> Result<Vec<(u64, sigil_crypto::relay::RelayMessage)>, crate::party::PartyError> {
        let first = *self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert_with(std::time::Instant::now);
        if first.elapsed() >= crate::party::ENDED_GRACE {
            return Err(crate::party::unfinished());
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        Ok(Vec::new())
    }
}

/// Waits for session `id` to end: its result, or (inside) the error it
/// failed with; the outer error is the door's (no answer).
async fn session_end<D: Door>(door: &D, id: &str, dkg: bool) -> anyhow::Result<Result<Value, Value>> {
    loop {
        let view = door.session(id, dkg).await?;
        match view["state"].as_str() {
            Some("succeeded") => return Ok(Ok(view["result"].clone())),
            Some("failed") => return Ok(Err(view["error"].clone())),
            _ => {}
        }
    }
}

/// What a party knows of the key it made, to check the record it is
/// asked to confirm.
struct Made<'a> {
    key_id: &'a str,
    scheme: Scheme,
    threshold: u16,
    parties: &'a [u16],
    public_key: &'a [u8],
    package: &'a [u8],
    client_id: &'a str,
    require_external: bool,
}

/// Waits for key generation `id` to end; when the relay puts the new
/// key's record to this party (`confirming`), checks it
/// ([`record_to_confirm`]) and confirms it, once (then `confirmed`).
async fn confirm_and_end<D: Door, R: Relay>(
    door: &D,
    relay: &R,
    session: &PartySession,
    id: &str,
    made: &Made<'_>,
    confirmed: &std::cell::Cell<bool>,
) -> anyhow::Result<Result<Value, Value>> {
    loop {
        let view = door.session(id, true).await?;
        match view["state"].as_str() {
            Some("succeeded") => return Ok(Ok(view["result"].clone())),
            Some("failed") => return Ok(Err(view["error"].clone())),
            Some("confirming") if !confirmed.get() => {
                let record = record_to_confirm(&view["record"], made, &session.verifying_key_hex())?;
                let confirmation = session.confirmation(&record)?;
                // Submitted, maybe: from here on the share is kept.
                confirmed.set(true);
                relay.submit(&confirmation).await?;
            }
            _ => {}
        }
    }
}

/// The canonical bytes (`sigil_api::record`) of the record `view` puts to
/// the party, built from what the party itself knows (key id, scheme,
/// threshold, parties, public key and package, epoch 0) and the view's
/// `policy_json`, `created_by` and `create_jti`, after checking those: the
/// key was created by this client, its policy names this client as its
/// external party with this session's key (`verifying_key`), and requires
/// the party as asked. The view's `record_hash` must be the hash of those
/// bytes (else the nodes hold another record, which this party's
/// signature would not cover anyway).
///
/// # Errors
/// A record this party must not confirm.
fn record_to_confirm(view: &Value, made: &Made<'_>, verifying_key: &str) -> anyhow::Result<Vec<u8>> {
    use sigil_api::record::{record_bytes, record_hash, RecordFields};
    let key = &view["key"];
    let text = |v: &Value, f: &str| {
        v[f].as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow!("no {f} in the record to confirm"))
    };
    let policy_json = text(view, "policy_json")?;
    let (created_by, create_jti) = (text(key, "created_by")?, text(key, "create_jti")?);
    anyhow::ensure!(
        created_by == made.client_id,
        "the record names another creator: {created_by}"
    );
    let policy: Value = serde_json::from_str(&policy_json).context("policy_json")?;
    let ours = policy["external"] == json!([made.client_id])
        && policy["external_keys"] == json!([verifying_key])
        && policy["require_external"].as_bool().unwrap_or(false) == made.require_external;
    anyhow::ensure!(ours, "the record's policy is not this party's: {policy_json}");
    let fields = RecordFields {
        key_id: made.key_id,
        scheme: made.scheme.as_str(),
        threshold: made.threshold,
        parties: made.parties,
        public_key: made.public_key,
        public_package: made.package,
        epoch: 0,
        policy_json: &policy_json,
        created_by: &created_by,
        create_jti: &create_jti,
    };
    anyhow::ensure!(
        key["record_hash"].as_str() == Some(record_hash(&fields).as_str()),
        "the record to confirm is not the key this party made"
    );
    Ok(record_bytes(&fields))
}

/// How long one read of a session's view waits for its end (long poll),
/// in milliseconds.
const SESSION_WAIT_MS: u32 = 20_000;

/// A relayed session as the node's `202` describes it.
struct Started {
    session_id: String,
    parties: Vec<u16>,
    key_id: String,
    coordinator: u16,
}

fn started(view: &Value) -> anyhow::Result<Started> {
    let parties = view["parties"]
        .as_array()
        .ok_or_else(|| anyhow!("no parties in {view}"))?
        .iter()
        .map(|p| p.as_u64().and_then(|p| u16::try_from(p).ok()))
        .collect::<Option<Vec<u16>>>()
        .ok_or_else(|| anyhow!("bad parties in {view}"))?;
    Ok(Started {
        session_id: view["session_id"].as_str().unwrap_or_default().to_string(),
        parties,
        key_id: view["key_id"].as_str().unwrap_or_default().to_string(),
        coordinator: view["coordinator"]
            .as_u64()
            .and_then(|c| u16::try_from(c).ok())
            .ok_or_else(|| anyhow!("no coordinator in {view}"))?,
    })
}

fn session_id_bytes(hex_id: &str) -> anyhow::Result<[u8; 32]> {
    hex::decode(hex_id)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| anyhow!("bad session id {hex_id:?}"))
}

/// What [`keygen`] asks for.
pub struct KeygenArgs<'a> {
    /// A FROST or ECDSA scheme.
    pub scheme: Scheme,
    /// Signers needed, `t`, counting this party.
    pub threshold: u16,
    /// The node parties (default: every node).
    pub parties: Option<Vec<u16>>,
    /// Label.
    pub label: Option<String>,
    /// Every signature needs this party (`policy.require_external`).
    pub require_external: bool,
    /// Where to write the sealed share (must not exist).
    pub key_file: &'a Path,
    /// What seals it.
    pub unlock: &'a Unlock,
    /// ECDSA: this party's two 1536-bit safe primes for the key's aux
    /// info (single use); `None` generates them here (seconds of CPU).
    pub primes: Option<ecdsa::PregeneratedPrimes>,
}

/// Makes a key with `client` as its external party: the DKG runs among
/// the node parties and this process; the share goes sealed to
/// `args.key_file` (before the cluster commits, so a commit never leaves
/// the client without it; removed again if the key is not committed).
/// Returns the key as the cluster committed it.
///
/// # Errors
/// A refused request, a failed session (naming nodes), a key the cluster
/// reports other than the one this party computed, or the file.
pub async fn keygen<D: Door>(
    client: &D,
    identities: &HashMap<u16, VerifyingKey>,
    args: KeygenArgs<'_>,
) -> anyhow::Result<Value> {
    if args.key_file.exists() {
        bail!("{} exists: a share file is never overwritten", args.key_file.display());
    }
    // Made before the session starts: the nodes would wait meanwhile.
    let primes = match args.primes {
        Some(p) => Some(p),
        None if args.scheme.is_ecdsa() => Some(generate_primes().await?),
        None => None,
    };
    let keys = SessionKeys::generate();
    let mut body = json!({
        "scheme": args.scheme.as_str(),
        "threshold": args.threshold,
        "external_parties": [{"client": client.client_id()}],
        "party_keys": keys.public_json(),
    });
    if let Some(p) = &args.parties {
        body["parties"] = json!(p);
    }
    if let Some(l) = &args.label {
        body["label"] = json!(l);
    }
    if args.require_external {
        let me = client.client_id();
        body["policy"] = json!({"sign": [me], "decrypt": [me], "admin": [me], "require_external": true});
    }
    let bytes = serde_json::to_vec(&body)?;
    let view = client.start_dkg(bytes.clone()).await?;
    let s = started(&view)?;
    // The relay's word is checked: the parties asked for (every node of
    // identities.json by default), then this party.
    let mut asked = match &args.parties {
        Some(p) => p.clone(),
        None => {
            let mut all: Vec<u16> = identities.keys().copied().collect();
            all.sort_unstable();
            all
        }
    };
    asked.push(sigil_crypto::relay::EXTERNAL_PARTY);
    if s.parties != asked || view["threshold"].as_u64() != Some(u64::from(args.threshold)) {
        bail!("the relay started another session than asked for: {view}");
    }
    let sid = session_id_bytes(&s.session_id)?;
    let eid = sigil_crypto::execution_id(b"dkg", &s.key_id, &s.parties, s.coordinator, &sid, &bytes);
    let session = PartySession::new(sid, s.parties.clone(), identities, keys)?;
    let relay = client.relay(&s.session_id, true);
    let (i, t) = (session.index, args.threshold);
    let KeyMaterial { share, package } = protocols::keygen(&session, &relay, args.scheme, &eid, t, primes).await?;
    let public_key = args.scheme.public_key(&package)?;
    let header = Header::new(
        &s.key_id,
        args.scheme.as_str(),
        t,
        s.parties,
        i,
        &public_key,
        &package,
        args.unlock,
    );
    keyfile::write(args.key_file, &header, &share, args.unlock)?;
    let made = Made {
        key_id: &s.key_id,
        scheme: args.scheme,
        threshold: t,
        parties: &asked,
        public_key: &public_key,
        package: &package,
        client_id: client.client_id(),
        require_external: args.require_external,
    };
    let confirmed = std::cell::Cell::new(false);
    let end = confirm_and_end(client, &relay, &session, &s.session_id, &made, &confirmed)
        .await
        .with_context(|| {
            format!(
                "the share is in {}, but the key's commit was not confirmed",
                args.key_file.display()
            )
        })?;
    // Once this party confirmed the record, the nodes may have committed
    // the key whatever the relay says next: the share is kept.
    let unknown = |what: String| {
        if confirmed.get() {
            anyhow!(
                "{what}; this party had confirmed the key, so its share stays in {}: ask another node party for key {}",
                args.key_file.display(),
                s.key_id
            )
        } else {
            let _ = std::fs::remove_file(args.key_file);
            anyhow!("{what} (share file removed)")
        }
    };
    let key = end.map_err(|e| unknown(format!("the key generation failed: {e}")))?;
    let same = key["public_key"].as_str() == Some(hex::encode(&public_key).as_str())
        && key["public_key_package"].as_str() == Some(hex::encode(&package).as_str())
        && key["parties"] == json!(asked)
        && key["threshold"].as_u64() == Some(u64::from(t));
    if !same {
        return Err(unknown(format!(
            "the relay reports another key than this party computed: {key}"
        )));
    }
    Ok(key)
}

/// Two fresh 1536-bit safe primes for an ECDSA key's aux info, made on a
/// blocking thread (seconds of CPU).
///
/// # Errors
/// The generator's.
pub async fn generate_primes() -> anyhow::Result<ecdsa::PregeneratedPrimes> {
    tokio::task::spawn_blocking(|| {
        let mut rng = rand::rngs::StdRng::from_rng(rand::rngs::OsRng)?;
        Ok(ecdsa::generate_primes(&mut rng)?)
    })
    .await?
}

/// Two primes from a file of decimal 1536-bit safe primes, one per line
/// (the format of `crates/sigil-cli/tests/fixtures/primes-1536.txt`):
/// the pair at `pair` (0: the first two lines). Each pair must be used
/// once only, and never by another party.
///
/// # Errors
/// An unreadable file, too few primes, or numbers that are not 1536-bit
/// safe primes.
pub fn primes_from_file(path: &Path, pair: usize) -> anyhow::Result<ecdsa::PregeneratedPrimes> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    let mut lines = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .skip(pair.saturating_mul(2));
    let mut next = || -> anyhow::Result<ecdsa::cggmp21::rug::Integer> {
        let line = lines
            .next()
            .ok_or_else(|| anyhow!("{}: too few primes", path.display()))?;
        line.parse().map_err(|e| anyhow!("{}: {e}", path.display()))
    };
    let (p, q) = (next()?, next()?);
    Ok(ecdsa::primes_from(p, q)?)
}

/// Signs `message` (ECDSA: a 32-byte digest, at BIP-32 `path`) with the
/// key whose share is in `key_file` (opened with `unlock`), through
/// `client`'s node; the signature is checked with the scheme's ordinary
/// verifier (under the derived key for a path) before it is returned.
///
/// # Errors
/// The file, a refused request, a failed session, or a signature that
/// does not verify.
pub async fn sign<D: Door>(
    client: &D,
    identities: &HashMap<u16, VerifyingKey>,
    key_file: &Path,
    unlock: &Unlock,
    message: &[u8],
    path: &[u32],
) -> anyhow::Result<Value> {
    let (header, share) = keyfile::read(key_file, unlock).context("the share file")?;
    let scheme: Scheme = header.scheme.parse()?;
    let package = hex::decode(&header.public_package).context("public_package")?;
    let keys = SessionKeys::generate();
    let mut body = json!({"message": hex::encode(message), "party_keys": keys.public_json()});
    if !path.is_empty() {
        let steps: Vec<String> = path.iter().map(u32::to_string).collect();
        body["derivation_path"] = json!(format!("m/{}", steps.join("/")));
    }
    let body = serde_json::to_vec(&body)?;
    let view = client.start_sign(&header.key_id, body.clone()).await?;
    let s = started(&view)?;
    let signers = s
        .parties
        .iter()
        .map(|p| {
            header
                .parties
                .iter()
                .position(|x| x == p)
                .and_then(|i| u16::try_from(i).ok())
        })
        .collect::<Option<Vec<u16>>>()
        .ok_or_else(|| anyhow!("the session's parties {:?} are not all the key's", s.parties))?;
    let sid = session_id_bytes(&s.session_id)?;
    let eid = sigil_crypto::execution_id(b"sign", &s.key_id, &s.parties, s.coordinator, &sid, &body);
    let session = PartySession::new(sid, s.parties, identities, keys)?;
    let relay = client.relay(&s.session_id, false);
    let key = KeyMaterial { share, package };
    protocols::sign(&session, &relay, scheme, &eid, &key, &signers, message, path).await?;
    let result = session_end(client, &s.session_id, false)
        .await?
        .map_err(|e| anyhow!("the signature failed: {e}"))?;
    let signature = hex::decode(result["signature"].as_str().unwrap_or_default()).context("signature")?;
    let public_key = if path.is_empty() {
        hex::decode(&header.public_key).context("public_key")?
    } else {
        scheme.derive_public_key(&key.package, path)?
    };
    scheme
        .verify(&public_key, message, &signature)
        .map_err(|e| anyhow!("the cluster's signature does not verify: {e}"))?;
    Ok(result)
}

/// Imports a user share: `key` is the answer of `POST /v1/keys` with
/// `"user_share"` (the key, with `user_share` sealed to `recipient`);
/// the share is opened, checked against the key's public package (its
/// identifier is the external slot's, its verifying share the one the
/// package lists, under the key's public key) and written sealed to
/// `key_file`, for [`sign`].
///
/// # Errors
/// Another recipient or an altered share, a share that does not belong
/// to the key, or the file.
pub fn import_user_share(
    key: &Value,
    recipient: &sigil_crypto::relay::SessionSecret,
    key_file: &Path,
    unlock: &Unlock,
) -> anyhow::Result<()> {
    let text = |f: &str| {
        key[f]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow!("no {f} in the key"))
    };
    let (key_id, scheme) = (text("key_id")?, text("scheme")?.parse::<Scheme>()?);
    let sealed = hex::decode(text("user_share")?).context("user_share")?;
    let package = hex::decode(text("public_key_package")?).context("public_key_package")?;
    let public_key = hex::decode(text("public_key")?).context("public_key")?;
    let parties: Vec<u16> = serde_json::from_value(key["parties"].clone()).context("parties")?;
    let threshold = key["threshold"]
        .as_u64()
        .and_then(|t| u16::try_from(t).ok())
        .ok_or_else(|| anyhow!("no threshold"))?;
    let index = parties
        .iter()
        .position(|&p| p == sigil_crypto::relay::EXTERNAL_PARTY)
        .and_then(|i| u16::try_from(i).ok())
        .ok_or_else(|| anyhow!("the key has no external party"))?;
    let share = sigil_crypto::relay::open_user_share(recipient, &key_id, &sealed)
        .map_err(|e| anyhow!("the user share does not open with this recipient key: {e}"))?;
    anyhow::ensure!(
        scheme.public_key(&package)? == public_key,
        "public key and package disagree"
    );
    let key = KeyMaterial { share, package };
    protocols::check_share(scheme, &key, index).with_context(|| format!("the user share of key {key_id}"))?;
    let KeyMaterial { share, package } = key;
    let header = Header::new(
        &key_id,
        scheme.as_str(),
        threshold,
        parties,
        index,
        &public_key,
        &package,
        unlock,
    );
    keyfile::write(key_file, &header, &share, unlock)?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use sigil_api::record::{record_hash, RecordFields};

    const VK: &str = "aa11";

    fn made() -> Made<'static> {
        Made {
            key_id: "k1",
            scheme: Scheme::FrostEd25519,
            threshold: 2,
            parties: &[0, sigil_crypto::relay::EXTERNAL_PARTY],
            public_key: b"pk",
            package: b"package",
            client_id: "alice",
            require_external: false,
        }
    }

    /// The view a relay shows, hashed over `policy_json` and `creator`.
    fn view(policy_json: &str, creator: &str) -> Value {
        let m = made();
        let hash = record_hash(&RecordFields {
            key_id: m.key_id,
            scheme: m.scheme.as_str(),
            threshold: m.threshold,
            parties: m.parties,
            public_key: m.public_key,
            public_package: m.package,
            epoch: 0,
            policy_json,
            created_by: creator,
            create_jti: "jti-1",
        });
        json!({"policy_json": policy_json,
            "key": {"created_by": creator, "create_jti": "jti-1", "record_hash": hash}})
    }

    /// The party confirms its own record only: itself as creator and
    /// external party with this session's key, the requirement it asked
    /// for, and a hash of what it rebuilt from its own DKG output.
    #[test]
    fn a_party_confirms_only_its_own_record() {
        let ours = r#"{"sign":["alice"],"external":["alice"],"external_keys":["aa11"]}"#;
        let bytes = record_to_confirm(&view(ours, "alice"), &made(), VK).unwrap();
        assert!(!bytes.is_empty());
        let refused = [
            (view(ours, "mallory"), "another creator"),
            (
                view(r#"{"external":["mallory"],"external_keys":["aa11"]}"#, "alice"),
                "another party's client",
            ),
            (
                view(r#"{"external":["alice"],"external_keys":["bb22"]}"#, "alice"),
                "another session key",
            ),
            (
                view(
                    r#"{"external":["alice"],"external_keys":["aa11"],"require_external":true}"#,
                    "alice",
                ),
                "a requirement not asked for",
            ),
        ];
        for (v, what) in refused {
            assert!(record_to_confirm(&v, &made(), VK).is_err(), "{what}");
        }
        // A record of another key (its hash is not of ours).
        let mut v = view(ours, "alice");
        v["key"]["record_hash"] = json!("00");
        assert!(record_to_confirm(&v, &made(), VK).is_err(), "another record");
    }
}
