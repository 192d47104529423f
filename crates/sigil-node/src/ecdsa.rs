//! Threshold ECDSA (CGGMP21) in the node: aux info once per ordered party
//! set, from safe primes out of the node's sealed pool; keygen; signing.
//!
//! Aux info (Paillier keys and ring-Pedersen parameters) costs seconds of
//! CPU per party, so it is generated once per ordered party set (the
//! coordinator runs an aux session before the first ECDSA keygen of a set),
//! stored sealed as record `("aux_info", "<ids>", node, 0)`, and reused for
//! every key of that set. Aux info is committed in two phases: each party
//! stores its result *pending* and answers with the fingerprint of all
//! parties' public parameters ([`ecdsa::aux_fingerprint`]) signed with its
//! identity key; the coordinator sends every party all the signatures
//! (`FinalizeAux`), and a party commits only if all of them verify over its
//! own fingerprint. Keygen uses committed aux info only. Each aux run consumes two 1536-bit safe primes
//! from the local pool; the pool is refilled in the background (`StdRng`
//! seeded from `OsRng`, not `OsRng` itself, which spends its time in the
//! kernel) and can be seeded from a file of primes.

use std::sync::Arc;
use std::time::Duration;

use rand::SeedableRng;
use sigil_crypto::ecdsa::{self, cggmp21};
use sigil_crypto::scheme::EcdsaPublic;
use sigil_crypto::{with_curve, Scheme};
use sigil_proto::peer::session_proposal::Kind;
use sigil_proto::peer::{AuxProposal, FinalizeAuxRequest, SessionOutcome};
use zeroize::Zeroizing;

use crate::error::SessionError;
use crate::session::{self, SessionSpec};
use crate::{internal, CachedKey, Node};

/// Bit length of the safe primes of CGGMP21 aux info at 128-bit security
/// (4 x 384).
pub const PRIME_BITS: u32 = 1536;

/// A presignature this node made, held in memory until the session's
/// coordinator commits it to the pool or discards it. Never served while
/// pending; dropped (zeroized) when discarded or after [`PENDING_TTL`].
pub(crate) struct PendingPresig {
    coordinator: u16,
    key_id: String,
    set: String,
    presig: Zeroizing<Vec<u8>>,
    made: std::time::Instant,
}

/// How long an uncommitted presignature is kept for its coordinator's
/// commit (the coordinator commits right after the session, so this only
/// bounds memory when it died in between).
const PENDING_TTL: Duration = Duration::from_secs(60);

/// The name of an ordered party set: node ids joined by commas.
pub fn party_set(parties: &[u16]) -> String {
    parties.iter().map(u16::to_string).collect::<Vec<_>>().join(",")
}

impl Node {
    /// Takes two primes from the pool, or generates them now if the pool
    /// is short (slow: seconds to tens of seconds).
    async fn primes_for_aux(&self) -> Result<ecdsa::PregeneratedPrimes, SessionError> {
        if let Some(remote) = &self.remote_primes {
            let (p, q) = remote.take(Duration::from_millis(self.cfg.aux_timeout_ms)).await?;
            return ecdsa::PregeneratedPrimes::new(p, q).ok_or_else(|| internal("remote primes are too small"));
        }
        let (p, q) = match self.store.take_primes(PRIME_BITS, 2).await.map_err(internal)? {
            Some(v) => {
                let parse = |b: &[u8]| -> Result<cggmp21::rug::Integer, SessionError> {
                    let s = std::str::from_utf8(b).map_err(internal)?;
                    s.parse::<cggmp21::rug::Integer>().map_err(internal)
                };
                let p = parse(v.first().map(|x| x.as_slice()).unwrap_or_default())?;
                let q = parse(v.get(1).map(|x| x.as_slice()).unwrap_or_default())?;
                (p, q)
            }
            None => {
                tracing::info!("prime pool empty: generating two safe primes now");
                let a = generate_prime().await?;
                let b = generate_prime().await?;
                (a, b)
            }
        };
        ecdsa::PregeneratedPrimes::new(p, q).ok_or_else(|| internal("pooled primes are too small"))
    }

    /// This node's part of an aux info session for the session's parties:
    /// stores the result as pending and answers with the fingerprint of
    /// all parties' public parameters and this node's signature over it.
    /// Refused while another aux session of the same set runs here, and
    /// once aux info of the set is committed here.
    pub(crate) async fn aux_part(&self, spec: SessionSpec, _a: AuxProposal) -> Result<SessionOutcome, SessionError> {
        let set = party_set(&spec.parties);
        let n = u16::try_from(spec.parties.len()).map_err(|_| SessionError::Invalid("too many parties".into()))?;
        let _running = AuxRunning::claim(&self.aux_running, &set)?;
        if self.committed_aux(&set).await? {
            return Err(SessionError::Invalid(format!(
                "aux info of party set {set} is committed here and is never replaced"
            )));
        }
        let primes = self.primes_for_aux().await?;
        let (me, sid) = (spec.me, spec.eid);
        let aux = session::run::<ecdsa::AuxMsg, _, _, _>(&self.sessions, &self.peers, spec, |party| async move {
            let mut rng = rand::rngs::StdRng::from_rng(rand::rngs::OsRng)
                .map_err(|e| sigil_crypto::Error::Frost(e.to_string()))?;
            ecdsa::aux_info(party, &sid, me, n, primes, &mut rng).await
        })
        .await?;
        let fingerprint = ecdsa::aux_fingerprint(&aux);
        let bytes = Zeroizing::new(serde_json::to_vec(&aux).map_err(internal)?);
        self.store
            .put_aux_info(&set, self.cfg.node_id, &bytes)
            .await
            .map_err(internal)?;
        tracing::info!(party_set = %set, fingerprint = %hex::encode(fingerprint), "aux info stored, pending");
        Ok(SessionOutcome {
            attestation: crate::attest::sign_aux(&self.identity, &set, &fingerprint),
            aux_fingerprint: fingerprint.to_vec(),
            ..Default::default()
        })
    }

    async fn committed_aux(&self, set: &str) -> Result<bool, SessionError> {
        Ok(self
            .store
            .get_aux_info(set, self.cfg.node_id)
            .await
            .map_err(internal)?
            .is_some())
    }

    /// Runs aux info generation among `parties` unless this node already
    /// has committed aux info for that ordered set, then commits it on
    /// every party (two-phase: [`Node::finalize_aux`]). With committed aux
    /// info, the first call after a start sends the stored evidence to
    /// every party once more, so a party that missed the commit (down, or
    /// skipped by a faulty coordinator) catches up before keygen needs it.
    ///
    /// # Errors
    /// The aux session's failure; a protocol error naming the parties whose
    /// fingerprint or attestation differs; this node's own commit failure.
    pub async fn ensure_aux(
        &self,
        parties: &[u16],
        auth: &sigil_proto::peer::ClientAuthorization,
    ) -> Result<(), SessionError> {
        let set = party_set(parties);
        let _one_at_a_time = self.aux_lock.lock().await;
        if !parties.contains(&self.cfg.node_id) {
            return Ok(());
        }
        if self.committed_aux(&set).await? {
            return self.confirm_aux_everywhere(&set).await;
        }
        tracing::info!(party_set = %set, "generating CGGMP21 aux info");
        let started = std::time::Instant::now();
        let o = self
            .coordinate_with_budget(parties, Kind::Aux(AuxProposal {}), true, self.aux_timeout(), Some(auth))
            .await?;
        let req = aux_commit_request(parties, &o.by_party, |n| self.identities.get(&n).copied())?;
        self.finalize_aux(self.cfg.node_id, req.clone()).await?;
        if self.finalize_aux_everywhere(req).await {
            self.aux_confirmed_insert(&set);
        }
        metrics::histogram!("sigil_aux_info_seconds").record(started.elapsed().as_secs_f64());
        Ok(())
    }

    /// Resends the stored commit evidence of `set` to every party, once per
    /// process run (then remembered).
    async fn confirm_aux_everywhere(&self, set: &str) -> Result<(), SessionError> {
        if self
            .aux_confirmed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(set)
        {
            return Ok(());
        }
        let evidence = self
            .store
            .aux_evidence(set, self.cfg.node_id)
            .await
            .map_err(internal)?
            .unwrap_or_default();
        let Ok(e) = serde_json::from_str::<AuxEvidence>(&evidence) else {
            // Committed before evidence was kept: nothing to resend.
            self.aux_confirmed_insert(set);
            return Ok(());
        };
        if self.finalize_aux_everywhere(e.into_request()).await {
            self.aux_confirmed_insert(set);
        }
        Ok(())
    }

    fn aux_confirmed_insert(&self, set: &str) {
        self.aux_confirmed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(set.to_string());
    }

    /// Sends `req` to every other party of its set and waits for their
    /// first answer; parties that fail are retried in the background for
    /// about a minute. Returns whether every party answered at once.
    async fn finalize_aux_everywhere(&self, req: FinalizeAuxRequest) -> bool {
        let me = self.cfg.node_id;
        let calls = req
            .parties
            .iter()
            .filter_map(|&p| u16::try_from(p).ok())
            .filter(|&p| p != me)
            .map(|node| {
                let req = req.clone();
                async move {
                    let Some(mut c) = self.peers.client(node) else {
                        return false;
                    };
                    if finalize_aux_once(&mut c, node, &req).await {
                        return true;
                    }
                    tokio::spawn(async move {
                        let mut wait = Duration::from_millis(200);
                        for _ in 0..8 {
                            tokio::time::sleep(wait).await;
                            if finalize_aux_once(&mut c, node, &req).await {
                                return;
                            }
                            wait *= 2;
                        }
                    });
                    false
                }
            });
        futures::future::join_all(calls).await.into_iter().all(|ok| ok)
    }

    /// Commits this node's pending aux info of `req.parties`, at the
    /// request of `caller` (any peer: the evidence is every party's
    /// signature over the fingerprint of this node's own pending aux info).
    /// Idempotent once committed (the evidence is checked all the same).
    /// Audited.
    ///
    /// # Errors
    /// [`SessionError::Refused`] (`forbidden`) if this node is not a party,
    /// holds no aux info of the set, or the attestations do not all verify
    /// over its own fingerprint.
    pub async fn finalize_aux(&self, caller: u16, req: FinalizeAuxRequest) -> Result<(), SessionError> {
        let parties = self.check_aux_request(&req)?;
        let set = party_set(&parties);
        let entry = crate::audit::Entry {
            role: "peer",
            client: format!("node:{caller}"),
            jti: String::new(),
            operation: "aux_commit",
            key_id: format!("aux:{set}"),
            message_sha256: hex::encode(&req.fingerprint),
            session_id: String::new(),
            outcome: String::new(),
        };
        let r = self.commit_aux(&parties, &set, &req).await;
        self.audit_outcome(entry, &r).await;
        r
    }

    /// The shape of a `FinalizeAux` request, checked before anything is
    /// logged or loaded: a 32-byte fingerprint, distinct configured parties,
    /// at most one 64-byte signature per party.
    fn check_aux_request(&self, req: &FinalizeAuxRequest) -> Result<Vec<u16>, SessionError> {
        let bad = |m: &str| SessionError::Invalid(format!("FinalizeAux: {m}"));
        if req.fingerprint.len() != 32 {
            return Err(bad("fingerprint must be 32 bytes"));
        }
        if req.parties.len() > self.cfg.nodes.len() || req.attestations.len() > req.parties.len() {
            return Err(bad("more parties or attestations than nodes"));
        }
        let mut parties = Vec::with_capacity(req.parties.len());
        for &p in &req.parties {
            let p = u16::try_from(p).map_err(|_| bad("party id out of range"))?;
            if parties.contains(&p) || !self.cfg.nodes.iter().any(|n| n.id == p) {
                return Err(bad("parties must be distinct nodes of this cluster"));
            }
            parties.push(p);
        }
        if req.attestations.iter().any(|a| a.signature.len() != 64) {
            return Err(bad("signatures must be 64 bytes"));
        }
        Ok(parties)
    }

    async fn commit_aux(&self, parties: &[u16], set: &str, req: &FinalizeAuxRequest) -> Result<(), SessionError> {
        let forbid = |m: String| self.refused(crate::auth::Refusal::Forbidden(m));
        if !parties.contains(&self.cfg.node_id) {
            return Err(forbid(format!("this node is not a party of set {set}")));
        }
        // No aux session of the set may replace the pending record while
        // it is checked and committed.
        let _running = AuxRunning::claim(&self.aux_running, set)?;
        let evidence = AuxEvidence::of(req);
        let me = self.cfg.node_id;
        let verify = |aux: &[u8]| -> Result<(), SessionError> {
            let aux: ecdsa::AuxInfo = serde_json::from_slice(aux).map_err(internal)?;
            crate::attest::verify_aux(parties, &ecdsa::aux_fingerprint(&aux), &evidence.attestations, |n| {
                self.identities.get(&n).copied()
            })
            .map_err(|e| forbid(format!("aux info of set {set} not attested by every party: {e}")))
        };
        let Some(pending) = self.store.get_pending_aux_info(set, me).await.map_err(internal)? else {
            return match self.store.get_aux_info(set, me).await.map_err(internal)? {
                Some(committed) => verify(&committed),
                None => Err(forbid(format!("no aux info of set {set} here"))),
            };
        };
        verify(&pending.aux)?;
        let json = serde_json::to_string(&evidence).map_err(internal)?;
        if !self
            .store
            .commit_aux_info(set, me, &pending, &json)
            .await
            .map_err(internal)?
        {
            return Err(SessionError::Invalid(format!(
                "pending aux info of set {set} changed; not committed"
            )));
        }
        tracing::info!(party_set = %set, "aux info committed");
        Ok(())
    }

    fn aux_timeout(&self) -> Duration {
        Duration::from_millis(self.cfg.aux_timeout_ms)
    }

    async fn load_aux(&self, parties: &[u16]) -> Result<ecdsa::AuxInfo, SessionError> {
        let set = party_set(parties);
        let bytes = self
            .store
            .get_aux_info(&set, self.cfg.node_id)
            .await
            .map_err(internal)?
            .ok_or_else(|| {
                SessionError::Invalid(format!("no aux info for party set {set} on node {}", self.cfg.node_id))
            })?;
        serde_json::from_slice(&bytes).map_err(internal)
    }

    /// ECDSA keygen part: returns the sealed-to-be share (the incomplete
    /// key share, JSON) and the public package ([`EcdsaPublic`], JSON).
    pub(crate) async fn ecdsa_keygen_part(
        &self,
        spec: SessionSpec,
        scheme: Scheme,
        n: u16,
        t: u16,
    ) -> Result<(Zeroizing<Vec<u8>>, Vec<u8>), SessionError> {
        let aux = self.load_aux(&spec.parties).await?;
        let (me, sid) = (spec.me, spec.eid);
        with_curve!(scheme, E => {
            let share = session::run::<ecdsa::KeygenMsg<E>, _, _, _>(&self.sessions, &self.peers, spec, |party| async move {
                let mut rng = rand::rngs::OsRng;
                ecdsa::keygen::<E, _, _>(party, &sid, me, n, t, &mut rng).await
            })
            .await?;
            let public = EcdsaPublic {
                public_key: hex::encode(share.shared_public_key.to_bytes(true)),
                chain_code: hex::encode(share.chain_code.unwrap_or_default()),
            };
            let bytes = Zeroizing::new(serde_json::to_vec(&share).map_err(internal)?);
            // Check now that the share and our aux info fit together.
            ecdsa::complete(share, aux).map_err(internal)?;
            Ok((bytes, serde_json::to_vec(&public).map_err(internal)?))
        }, other => Err(SessionError::Invalid(format!("{other} is not ECDSA"))))
    }

    /// ECDSA signing part: full CGGMP21 signing of a 32-byte digest.
    pub(crate) async fn ecdsa_sign_part(
        &self,
        spec: SessionSpec,
        cached: &CachedKey,
        scheme: Scheme,
        signers: Vec<u16>,
        message: &[u8],
        derivation_path: &[u32],
    ) -> Result<Vec<u8>, SessionError> {
        let digest = sigil_crypto::scheme::ecdsa_digest(message).map_err(|e| SessionError::Invalid(e.to_string()))?;
        with_curve!(scheme, E => {
            let material = self.load_complete_share::<E>(cached).await?;
            let share = material
                .downcast_ref::<ecdsa::KeyShare<E>>()
                .ok_or_else(|| internal("cached key material of another scheme"))?;
            let (me, sid) = (spec.me, spec.eid);
            let sig = session::run::<ecdsa::SignMsg<E>, _, _, _>(&self.sessions, &self.peers, spec, |party| async move {
                let mut rng = rand::rngs::StdRng::from_rng(rand::rngs::OsRng).map_err(|e| sigil_crypto::Error::Frost(e.to_string()))?;
                ecdsa::sign::<E, _, _>(party, &sid, me, &signers, share, &digest, derivation_path, &mut rng).await
            })
            .await?;
            let mut out = vec![0u8; 64];
            sig.write_to_slice(&mut out);
            Ok(out)
        }, other => Err(SessionError::Invalid(format!("{other} is not ECDSA"))))
    }
}

/// One 1536-bit safe prime from `fast-paillier`'s sieve (what `cggmp21`
/// uses), on a blocking thread, as a decimal string's value.
/// One 1536-bit safe prime from Sigil's combined-sieve generator
/// (`sigil_crypto::primes`, several times faster than the `fast-paillier`
/// generator `cggmp21` ships), on a blocking thread.
async fn generate_prime() -> Result<cggmp21::rug::Integer, SessionError> {
    tokio::task::spawn_blocking(|| {
        let mut rng = rand::rngs::StdRng::from_rng(rand::rngs::OsRng).map_err(internal)?;
        let stop = std::sync::atomic::AtomicBool::new(false);
        sigil_crypto::primes::safe_prime(
            PRIME_BITS,
            &mut rng,
            sigil_crypto::primes::SieveTable::shared(),
            &stop,
            &sigil_crypto::primes::Stats::default(),
        )
        .map_err(internal)?
        .ok_or_else(|| internal("prime search stopped"))
    })
    .await
    .map_err(internal)?
}

/// A client of the prime pool service (`prime_source = remote`).
pub(crate) struct RemotePrimes {
    client: sigil_proto::prime::prime_service_client::PrimeServiceClient<tonic::transport::Channel>,
    token: Option<Zeroizing<String>>,
}

impl RemotePrimes {
    /// The client for `source` (None for a local source), over mTLS with
    /// this node's certificate; connects on first use.
    pub(crate) fn new(
        source: &crate::config::PrimeSource,
        ca: &tonic::transport::Certificate,
        identity: &tonic::transport::Identity,
    ) -> anyhow::Result<Option<Self>> {
        let crate::config::PrimeSource::Remote {
            url,
            server_name,
            api_token_file,
        } = source
        else {
            return Ok(None);
        };
        let tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(ca.clone())
            .identity(identity.clone())
            .domain_name(server_name.clone());
        let channel = tonic::transport::Channel::from_shared(url.clone())
            .map_err(|e| anyhow::anyhow!("prime_source.url {url}: {e}"))?
            .tls_config(tls)?
            .connect_lazy();
        let token = match api_token_file {
            Some(p) => Some(Zeroizing::new(
                std::fs::read_to_string(p)
                    .map_err(|e| anyhow::anyhow!("prime_source.api_token_file {}: {e}", p.display()))?
                    .trim()
                    .to_string(),
            )),
            None => None,
        };
        Ok(Some(Self {
            client: sigil_proto::prime::prime_service_client::PrimeServiceClient::new(channel),
            token,
        }))
    }

    /// Two 1536-bit safe primes from the service, each checked here
    /// (Baillie-PSW and Miller-Rabin on `q`, Pocklington on `p`) before use.
    async fn take(&self, timeout: Duration) -> Result<(cggmp21::rug::Integer, cggmp21::rug::Integer), SessionError> {
        let unavailable = |reason: String| SessionError::Internal(format!("prime service: {reason}"));
        let mut req = tonic::Request::new(sigil_proto::prime::GetPreParamsRequest {
            count: 1,
            kind: "cggmp21".into(),
        });
        req.set_timeout(timeout);
        if let Some(t) = &self.token {
            let v = format!("Bearer {}", t.as_str())
                .parse()
                .map_err(|_| unavailable("the API token is not a valid header value".into()))?;
            req.metadata_mut().insert("authorization", v);
        }
        let resp = self
            .client
            .clone()
            .get_pre_params(req)
            .await
            .map_err(|s| unavailable(format!("{:?}: {}", s.code(), s.message())))?
            .into_inner();
        let Some(sigil_proto::prime::pre_params::Params::Cggmp21(set)) =
            resp.sets.into_iter().next().and_then(|s| s.params)
        else {
            return Err(unavailable("answer holds no cggmp21 set".into()));
        };
        let parse = |s: &str| -> Result<cggmp21::rug::Integer, SessionError> {
            let x: cggmp21::rug::Integer = s.parse().map_err(|_| unavailable("a prime does not parse".into()))?;
            if x.significant_bits() != PRIME_BITS || !sigil_crypto::primes::is_safe_prime(&x) {
                return Err(unavailable(format!(
                    "served a number that is not a {PRIME_BITS}-bit safe prime"
                )));
            }
            Ok(x)
        };
        let (p, q) = (parse(&set.p)?, parse(&set.q)?);
        if p == q {
            return Err(unavailable("served the same prime twice".into()));
        }
        tracing::info!("aux-info primes from the prime service");
        Ok((p, q))
    }
}

/// Imports primes (decimal, one a line) from `path` into the pool. Lines
/// that are not numbers of the pool's size are skipped with a warning.
///
/// # Errors
/// An unreadable file or a storage failure.
pub async fn seed_primes(node: &Node, path: &std::path::Path) -> anyhow::Result<usize> {
    let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let mut n = 0;
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        match line.parse::<cggmp21::rug::Integer>() {
            Ok(p) if p.significant_bits() == PRIME_BITS && sigil_crypto::primes::is_safe_prime(&p) => {
                node.store.put_prime(PRIME_BITS, p.to_string().as_bytes()).await?;
                n += 1;
            }
            _ => tracing::warn!(file = %path.display(), "skipping a line that is not a {PRIME_BITS}-bit safe prime"),
        }
    }
    Ok(n)
}

/// Keeps the prime pool at `prime_pool_size`, one prime at a time.
pub async fn refill_primes(node: Arc<Node>) {
    let target = node.cfg.prime_pool_size;
    if target == 0 || node.remote_primes.is_some() {
        return;
    }
    loop {
        match node.store.count_primes(PRIME_BITS).await {
            Ok(have) if have < target => {
                let started = std::time::Instant::now();
                match generate_prime().await {
                    Ok(p) => {
                        if let Err(e) = node.store.put_prime(PRIME_BITS, p.to_string().as_bytes()).await {
                            tracing::warn!(error = %e, "could not store a generated prime");
                        }
                        metrics::histogram!("sigil_prime_generation_seconds").record(started.elapsed().as_secs_f64());
                        tracing::debug!(have = have + 1, target, "prime pool refilled by one");
                        continue;
                    }
                    Err(e) => tracing::warn!(error = %e, "prime generation failed"),
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not count pooled primes"),
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// No messages: pooled signing is one local step per party.
pub fn expects_nothing(_: u16, _: u16, _: u16, _: u16) -> Option<round_based::MessageType> {
    None
}

impl Node {
    /// Key-level indices of `nodes` in `key`'s party list.
    pub(crate) fn key_indices(key: &sigil_store::KeyRecord, nodes: &[u16]) -> Result<Vec<u16>, SessionError> {
        nodes
            .iter()
            .map(|node| {
                key.parties
                    .iter()
                    .position(|x| x == node)
                    .and_then(|k| u16::try_from(k).ok())
                    .ok_or_else(|| SessionError::Invalid(format!("node {node} holds no share of key {}", key.key_id)))
            })
            .collect()
    }

    /// The complete key share of `cached` (`KeyShare<E>` behind `Any`),
    /// unsealed and joined with the aux info on first use, then cached.
    async fn load_complete_share<E: cggmp21::generic_ec::Curve>(
        &self,
        cached: &CachedKey,
    ) -> Result<Arc<dyn std::any::Any + Send + Sync>, SessionError> {
        if let Some(m) = cached.material.get() {
            return Ok(m.clone());
        }
        let key = &cached.record;
        let share = self.own_share(key).await?;
        let incomplete: ecdsa::IncompleteKeyShare<E> = serde_json::from_slice(&share).map_err(internal)?;
        let aux = self.load_aux(&key.parties).await?;
        let complete = ecdsa::complete(incomplete, aux).map_err(internal)?;
        let m: Arc<dyn std::any::Any + Send + Sync> = Arc::new(complete);
        Ok(cached.material.get_or_init(|| m).clone())
    }

    /// This node's part of a presigning session: presign, then pool the
    /// result sealed under the session id.
    pub(crate) async fn presign_part(
        &self,
        spec: SessionSpec,
        p: sigil_proto::peer::PresignProposal,
    ) -> Result<SessionOutcome, SessionError> {
        let cached = self
            .cached_key(&p.key_id)
            .await
            .map_err(internal)?
            .ok_or_else(|| SessionError::Invalid(format!("key {} is not active here", p.key_id)))?;
        let key = &cached.record;
        if key.scheme != p.scheme {
            return Err(SessionError::Invalid("scheme mismatch".into()));
        }
        let scheme: Scheme = key.scheme.parse().map_err(internal)?;
        let signers = Self::key_indices(key, &spec.parties)?;
        if signers.len() != usize::from(key.threshold) {
            return Err(SessionError::Invalid("a presignature needs exactly t signers".into()));
        }
        let set = party_set(&spec.parties);
        let (me, sid, eid, spec_coordinator) = (spec.me, spec.id, spec.eid, spec.coordinator);
        let bytes = with_curve!(scheme, E => {
            let material = self.load_complete_share::<E>(&cached).await?;
            let share = material.downcast_ref::<ecdsa::KeyShare<E>>().ok_or_else(|| internal("key material of another scheme"))?;
            let presig = session::run::<ecdsa::SignMsg<E>, _, _, _>(&self.sessions, &self.peers, spec, |party| async move {
                let mut rng = rand::rngs::StdRng::from_rng(rand::rngs::OsRng).map_err(|e| sigil_crypto::Error::Frost(e.to_string()))?;
                ecdsa::presign::<E, _, _>(party, &eid, me, &signers, share, &mut rng).await
            })
            .await?;
            Zeroizing::new(serde_json::to_vec(&presig).map_err(internal)?)
        }, other => return Err(SessionError::Invalid(format!("{other} has no presignatures"))));
        let mut pending = self.pending_presigs.lock().unwrap_or_else(|p| p.into_inner());
        pending.retain(|_, p| p.made.elapsed() < PENDING_TTL);
        pending.insert(
            sid,
            PendingPresig {
                coordinator: spec_coordinator,
                key_id: key.key_id.clone(),
                set,
                presig: bytes,
                made: std::time::Instant::now(),
            },
        );
        Ok(SessionOutcome::default())
    }

    /// Sends commit or discard of presigning session `sid` to every signer
    /// of `set` (this node directly). Returns whether all of them did it.
    async fn finalize_presignature_everywhere(&self, set: &[u16], sid: &sigil_crypto::SessionId, commit: bool) -> bool {
        let calls = set.iter().map(|&node| async move {
            let r = if node == self.cfg.node_id {
                self.finalize_presignature(node, sid, commit)
                    .await
                    .map_err(|e| e.to_string())
            } else if let Some(mut c) = self.peers.client(node) {
                let mut r = tonic::Request::new(sigil_proto::peer::FinalizePresignatureRequest {
                    session_id: sid.to_vec(),
                    commit,
                });
                r.set_timeout(Duration::from_secs(5));
                c.finalize_presignature(r)
                    .await
                    .map(|_| ())
                    .map_err(|s| s.message().to_string())
            } else {
                Err("not a configured peer".to_string())
            };
            if let Err(e) = &r {
                tracing::warn!(node, commit, error = %e, "could not finalize presignature on node");
            }
            r.is_ok()
        });
        futures::future::join_all(calls).await.into_iter().all(|ok| ok)
    }

    /// Commits (pools, sealed) or discards the presignature this node made in
    /// presigning session `session_id`, at the request of that session's
    /// coordinator `caller`. Discarding also removes an already pooled one.
    /// Unknown ids are ignored (idempotent).
    ///
    /// # Errors
    /// [`SessionError::Invalid`] for a malformed id or a caller that is not
    /// the session's coordinator; storage failures as internal errors.
    pub async fn finalize_presignature(
        &self,
        caller: u16,
        session_id: &[u8],
        commit: bool,
    ) -> Result<(), SessionError> {
        let sid: sigil_crypto::SessionId = session_id
            .try_into()
            .map_err(|_| SessionError::Invalid("session_id must be 32 bytes".into()))?;
        let entry = {
            let mut pending = self.pending_presigs.lock().unwrap_or_else(|p| p.into_inner());
            match pending.get(&sid) {
                Some(p) if p.coordinator != caller => {
                    return Err(SessionError::Invalid(format!(
                        "node {caller} is not the coordinator of this presigning session"
                    )))
                }
                Some(_) => pending.remove(&sid),
                None => None,
            }
        };
        let presig_id = hex::encode(sid);
        match (entry, commit) {
            (Some(p), true) => {
                self.store
                    .put_presignature(&p.key_id, &p.set, self.cfg.node_id, &presig_id, &p.presig)
                    .await
                    .map_err(internal)?;
            }
            (Some(_), false) => {} // dropped here, zeroized
            (None, false) => {
                // Committed before the coordinator gave up on another party:
                // remove it from the pool.
                self.store
                    .discard_presignature(self.cfg.node_id, &presig_id)
                    .await
                    .map_err(internal)?;
            }
            (None, true) => {}
        }
        Ok(())
    }

    /// Takes a presignature of (`key`, `parties`) out of the pool (by id,
    /// or the oldest) and issues the partial signature on `digest` (for the
    /// child at `path` if given). The presignature is deleted in the same
    /// transaction that reads it, before anything leaves the node.
    pub(crate) async fn partial_from_pool(
        &self,
        cached: &CachedKey,
        parties: &[u16],
        presig_id: Option<&str>,
        digest: &[u8; 32],
        path: &[u32],
    ) -> Result<Option<(String, Vec<u8>)>, SessionError> {
        let key = &cached.record;
        let scheme: Scheme = key.scheme.parse().map_err(internal)?;
        let set = party_set(parties);
        let Some((id, bytes)) = self
            .store
            .take_presignature(&key.key_id, &set, self.cfg.node_id, presig_id)
            .await
            .map_err(internal)?
        else {
            return Ok(None);
        };
        let partial = with_curve!(scheme, E => {
            let mut presig: ecdsa::Presignature<E> = serde_json::from_slice(&bytes).map_err(internal)?;
            if !path.is_empty() {
                let material = self.load_complete_share::<E>(cached).await?;
                let share = material.downcast_ref::<ecdsa::KeyShare<E>>().ok_or_else(|| internal("key material of another scheme"))?;
                let epub = share.extended_public_key().ok_or_else(|| SessionError::Invalid("key is not HD-capable".into()))?;
                presig = presig
                    .set_derivation_path(epub, path.iter().copied())
                    .map_err(|e| SessionError::Invalid(format!("derivation path: {e}")))?;
            }
            let scalar = cggmp21::generic_ec::Scalar::<E>::from_be_bytes_mod_order(digest);
            let partial = presig.issue_partial_signature(cggmp21::DataToSign::from_scalar(scalar));
            serde_json::to_vec(&partial).map_err(internal)?
        }, other => return Err(SessionError::Invalid(format!("{other} has no presignatures"))));
        Ok(Some((id, partial)))
    }

    /// Coordinator: signs `digest` from a pooled presignature of a signer
    /// set that includes this node. `Ok(None)` when none is available or
    /// the pooled attempt failed (the caller then runs the full protocol;
    /// the presignatures involved are gone either way, never reused).
    pub(crate) async fn sign_from_pool(
        &self,
        key: &sigil_store::KeyRecord,
        digest: &[u8; 32],
        path: &[u32],
        auth: &sigil_proto::peer::ClientAuthorization,
    ) -> Result<Option<(Vec<u8>, Vec<u16>)>, SessionError> {
        if self.cfg.presign_pool_size == 0 || !key.parties.contains(&self.cfg.node_id) {
            return Ok(None);
        }
        let cached = self
            .cached_key(&key.key_id)
            .await
            .map_err(internal)?
            .ok_or_else(|| internal("key vanished"))?;
        for set in signer_sets(key, None)
            .into_iter()
            .filter(|s| s.contains(&self.cfg.node_id))
        {
            if set.iter().any(|&n| n != self.cfg.node_id && self.recently_down(n)) {
                continue;
            }
            let Some((presig_id, own)) = self.partial_from_pool(&cached, &set, None, digest, path).await? else {
                continue;
            };
            let pooled = Pooled {
                set: &set,
                presig_id: &presig_id,
                own,
                digest,
                path,
            };
            match self.combine_pooled(&cached, pooled, auth).await {
                Ok(sig) => return Ok(Some((sig, set))),
                Err(e) => {
                    if let SessionError::Unavailable { nodes, .. } = &e {
                        nodes
                            .iter()
                            .filter(|&&n| n != self.cfg.node_id)
                            .for_each(|&n| self.mark_down(n));
                    }
                    tracing::warn!(error = %e, set = %party_set(&set), "pooled signing failed; falling back to the full protocol");
                    return Ok(None);
                }
            }
        }
        Ok(None)
    }

    /// Collects the other signers' partial signatures from their pooled
    /// presignatures of the same session and combines them with ours.
    async fn combine_pooled(
        &self,
        cached: &CachedKey,
        pooled: Pooled<'_>,
        auth: &sigil_proto::peer::ClientAuthorization,
    ) -> Result<Vec<u8>, SessionError> {
        let Pooled {
            set,
            presig_id,
            own,
            digest,
            path,
        } = pooled;
        let key = &cached.record;
        let scheme: Scheme = key.scheme.parse().map_err(internal)?;
        let kind = Kind::Sign(sigil_proto::peer::SignProposal {
            key_id: key.key_id.clone(),
            message: digest.to_vec(),
            epoch: key.epoch,
            scheme: key.scheme.clone(),
            derivation_path: path.to_vec(),
            presignature_id: presig_id.to_string(),
        });
        let outcomes = self
            .coordinate_inner(
                set,
                kind,
                crate::Run {
                    all: true,
                    budget: self.timeout(),
                    run_local: false,
                    session_id: crate::random_session_id(),
                    auth: Some(auth),
                },
            )
            .await?;
        let public_key = if path.is_empty() {
            key.public_key.clone()
        } else {
            scheme.derive_public_key(&key.public_package, path).map_err(internal)?
        };
        with_curve!(scheme, E => {
            let mut partials: Vec<cggmp21::PartialSignature<E>> = vec![serde_json::from_slice(&own).map_err(internal)?];
            for (i, o) in outcomes.by_party.iter().enumerate() {
                let node = set.get(i).copied().unwrap_or_default();
                if node == self.cfg.node_id {
                    continue;
                }
                let o = o.as_ref().ok_or_else(|| internal("missing outcome"))?;
                let p = serde_json::from_slice(&o.partial_signature).map_err(|e| SessionError::Protocol {
                    culprits: vec![node],
                    reason: format!("malformed partial signature: {e}"),
                })?;
                partials.push(p);
            }
            let sig = cggmp21::PartialSignature::combine(&partials)
                .ok_or_else(|| SessionError::Protocol { culprits: vec![], reason: "partial signatures do not combine".into() })?
                .normalize_s();
            let mut out = vec![0u8; 64];
            sig.write_to_slice(&mut out);
            scheme
                .verify(&public_key, digest, &out)
                .map_err(|e| SessionError::Protocol { culprits: vec![], reason: format!("combined signature invalid: {e}") })?;
            Ok(out)
        }, other => Err(SessionError::Invalid(format!("{other} has no presignatures"))))
    }
}

/// The ordered signer sets of `key` that pools are kept for: every
/// `t`-subset of its parties, in ascending node order, whose lowest node
/// is `refiller` (all sets when `None`), at most 16.
pub fn signer_sets(key: &sigil_store::KeyRecord, refiller: Option<u16>) -> Vec<Vec<u16>> {
    fn choose(from: &[u16], t: usize, acc: &mut Vec<u16>, out: &mut Vec<Vec<u16>>) {
        if out.len() >= 16 {
            return;
        }
        if acc.len() == t {
            out.push(acc.clone());
            return;
        }
        for (k, &x) in from.iter().enumerate() {
            acc.push(x);
            choose(from.get(k + 1..).unwrap_or_default(), t, acc, out);
            acc.pop();
        }
    }
    let mut parties = key.parties.clone();
    parties.sort_unstable();
    let mut all = Vec::new();
    choose(&parties, usize::from(key.threshold), &mut Vec::new(), &mut all);
    all.retain(|set| refiller.is_none_or(|r| set.first() == Some(&r)));
    all
}

/// Keeps every signer set this node refills (those whose lowest node it
/// is) at `presign_pool_size` presignatures per ECDSA key, one presigning
/// session at a time.
pub async fn refill_presignatures(node: Arc<Node>) {
    let target = node.cfg.presign_pool_size;
    if target == 0 {
        return;
    }
    loop {
        let mut worked = false;
        let keys = node.store.list_keys().await.unwrap_or_default();
        for key in keys
            .iter()
            .filter(|k| k.scheme.parse::<Scheme>().is_ok_and(Scheme::is_ecdsa))
        {
            if node
                .store
                .get_aux_info(&party_set(&key.parties), node.cfg.node_id)
                .await
                .ok()
                .flatten()
                .is_none()
            {
                continue;
            }
            for set in signer_sets(key, Some(node.cfg.node_id)) {
                if set.iter().any(|&n| n != node.cfg.node_id && node.recently_down(n)) {
                    continue;
                }
                let have = node
                    .store
                    .count_presignatures(&key.key_id, &party_set(&set))
                    .await
                    .unwrap_or(target);
                if have >= target {
                    continue;
                }
                let kind = Kind::Presign(sigil_proto::peer::PresignProposal {
                    key_id: key.key_id.clone(),
                    scheme: key.scheme.clone(),
                });
                let started = std::time::Instant::now();
                let sid = crate::random_session_id();
                let r = node
                    .coordinate_inner(
                        &set,
                        kind,
                        crate::Run {
                            all: true,
                            budget: node.timeout(),
                            run_local: true,
                            session_id: sid,
                            auth: None,
                        },
                    )
                    .await;
                // Pool only what every signer made; otherwise discard
                // everywhere, including any party that already committed.
                let r = match r {
                    Ok(_) if node.finalize_presignature_everywhere(&set, &sid, true).await => r,
                    Ok(_) => {
                        node.finalize_presignature_everywhere(&set, &sid, false).await;
                        Err(SessionError::Internal(
                            "presignature commit did not reach every signer".into(),
                        ))
                    }
                    Err(e) => {
                        node.finalize_presignature_everywhere(&set, &sid, false).await;
                        Err(e)
                    }
                };
                match r {
                    Ok(_) => {
                        worked = true;
                        metrics::counter!("sigil_presignatures_made_total").increment(1);
                        metrics::histogram!("sigil_presign_seconds").record(started.elapsed().as_secs_f64());
                    }
                    Err(e) => {
                        if let SessionError::Unavailable { nodes, .. } | SessionError::Timeout { missing: nodes, .. } =
                            &e
                        {
                            nodes
                                .iter()
                                .filter(|&&n| n != node.cfg.node_id)
                                .for_each(|&n| node.mark_down(n));
                        }
                        tracing::warn!(key_id = %key.key_id, set = %party_set(&set), error = %e, "presigning failed");
                    }
                }
            }
        }
        if !worked {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// The evidence a commit of aux info rests on, stored with it (public):
/// the set, the fingerprint (hex) and every party's attestation.
#[derive(serde::Serialize, serde::Deserialize)]
struct AuxEvidence {
    parties: Vec<u16>,
    fingerprint: String,
    attestations: Vec<sigil_store::Attestation>,
}

impl AuxEvidence {
    fn of(req: &FinalizeAuxRequest) -> Self {
        AuxEvidence {
            parties: req.parties.iter().filter_map(|&p| u16::try_from(p).ok()).collect(),
            fingerprint: hex::encode(&req.fingerprint),
            attestations: req
                .attestations
                .iter()
                .map(|a| crate::attest::attestation(u16::try_from(a.node).unwrap_or(u16::MAX), a.signature.clone()))
                .collect(),
        }
    }

    fn into_request(self) -> FinalizeAuxRequest {
        FinalizeAuxRequest {
            parties: self.parties.into_iter().map(u32::from).collect(),
            fingerprint: hex::decode(&self.fingerprint).unwrap_or_default(),
            attestations: self
                .attestations
                .into_iter()
                .map(|a| sigil_proto::peer::Attestation {
                    node: u32::from(a.node),
                    signature: a.signature,
                })
                .collect(),
        }
    }
}

/// A pooled signing attempt: the signer set, the presignature's id, our own
/// partial signature (JSON), the digest and the derivation path.
struct Pooled<'a> {
    set: &'a [u16],
    presig_id: &'a str,
    own: Vec<u8>,
    digest: &'a [u8; 32],
    path: &'a [u32],
}

/// One `FinalizeAux` call to `node`; whether it succeeded.
async fn finalize_aux_once(
    c: &mut sigil_proto::peer::peer_client::PeerClient<tonic::transport::Channel>,
    node: u16,
    req: &FinalizeAuxRequest,
) -> bool {
    let mut r = tonic::Request::new(req.clone());
    r.set_timeout(Duration::from_secs(5));
    match c.finalize_aux(r).await {
        Ok(_) => true,
        Err(e) => {
            tracing::warn!(node, error = %e.message(), "could not commit aux info on node");
            false
        }
    }
}

/// Marks an aux session of a party set as running on this node until
/// dropped: a second one of the same set is refused meanwhile.
struct AuxRunning<'a> {
    running: &'a std::sync::Mutex<std::collections::HashSet<String>>,
    set: String,
}

impl<'a> AuxRunning<'a> {
    fn claim(
        running: &'a std::sync::Mutex<std::collections::HashSet<String>>,
        set: &str,
    ) -> Result<Self, SessionError> {
        if !running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(set.to_string())
        {
            return Err(SessionError::Invalid(format!(
                "an aux session of party set {set} is already running here"
            )));
        }
        Ok(AuxRunning {
            running,
            set: set.to_string(),
        })
    }
}

impl Drop for AuxRunning<'_> {
    fn drop(&mut self) {
        self.running.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.set);
    }
}

/// The commit request of a finished aux session: every party must report
/// the same fingerprint with a valid attestation over it.
///
/// # Errors
/// A protocol error naming the parties that differ or do not attest.
fn aux_commit_request(
    parties: &[u16],
    outcomes: &[Option<SessionOutcome>],
    identity_of: impl Fn(u16) -> Option<ed25519_dalek::VerifyingKey>,
) -> Result<FinalizeAuxRequest, SessionError> {
    let fingerprint = outcomes.first().cloned().flatten().unwrap_or_default().aux_fingerprint;
    let differ: Vec<u16> = parties
        .iter()
        .zip(outcomes)
        .filter(|(_, o)| o.as_ref().map(|o| &o.aux_fingerprint) != Some(&fingerprint))
        .map(|(&p, _)| p)
        .collect();
    if fingerprint.len() != 32 || !differ.is_empty() {
        return Err(SessionError::Protocol {
            culprits: differ,
            reason: "parties finished aux info with different public parameters".into(),
        });
    }
    let attestations: Vec<_> = parties
        .iter()
        .zip(outcomes)
        .map(|(&node, o)| {
            crate::attest::attestation(node, o.as_ref().map(|o| o.attestation.clone()).unwrap_or_default())
        })
        .collect();
    crate::attest::verify_aux(parties, &fingerprint, &attestations, identity_of).map_err(|e| {
        let culprits = match e {
            crate::attest::AttestError::Invalid(n) | crate::attest::AttestError::Missing(n) => vec![n],
            _ => vec![],
        };
        SessionError::Protocol {
            culprits,
            reason: format!("aux info attestation: {e}"),
        }
    })?;
    Ok(FinalizeAuxRequest {
        parties: parties.iter().map(|&p| u32::from(p)).collect(),
        fingerprint,
        attestations: attestations
            .into_iter()
            .map(|a| sigil_proto::peer::Attestation {
                node: u32::from(a.node),
                signature: a.signature,
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(parties: Vec<u16>, t: u16) -> sigil_store::KeyRecord {
        let mut k = sigil_store::conformance::sample_key("k");
        k.parties = parties;
        k.threshold = t;
        k
    }

    #[test]
    fn signer_sets_are_the_t_subsets_split_by_lowest_node() {
        let k = key(vec![2, 0, 1], 2);
        assert_eq!(signer_sets(&k, None), vec![vec![0, 1], vec![0, 2], vec![1, 2]]);
        assert_eq!(signer_sets(&k, Some(0)), vec![vec![0, 1], vec![0, 2]]);
        assert_eq!(signer_sets(&k, Some(1)), vec![vec![1, 2]]);
        assert!(signer_sets(&k, Some(2)).is_empty());
        assert_eq!(signer_sets(&key(vec![0, 1, 2, 3, 4], 3), None).len(), 10);
        assert_eq!(party_set(&[0, 2]), "0,2");
    }
}
