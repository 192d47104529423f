//! The Sigil node: one party of the cluster.
//!
//! - [`peer`]: gRPC `sigil.peer.v1.Peer` over mutual TLS; a node accepts
//!   protocol messages only from the node its certificate names
//!   ([`session`] lists the acceptance rules).
//! - [`Node::run_keygen`] / [`Node::sign`]: the node that takes an API
//!   request coordinates it: picks the parties, proposes the session to
//!   them (`RunSession`), runs its own part and returns the result.
//! - [`api`]: the REST API (axum) with its OpenAPI document.
//! - Storage: [`sigil_store`], shares sealed under the node's master key.
#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod api;
pub mod attest;
pub mod audit;
pub mod auth;
pub mod authority;
pub mod catch_up;
pub mod certs;
pub mod config;
pub mod error;
pub mod family;
pub mod front;
pub mod in_process;
pub mod limits;
pub mod operations;
pub mod peer;
pub mod reshare;
pub mod selection;
pub mod session;
pub mod transport;
pub mod views;
pub mod wire;

pub use family::{ecdsa, paillier};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::RngCore;
use sigil_crypto::{Scheme, SessionId};
use sigil_proto::peer::session_proposal::Kind;
use sigil_proto::peer::{
    ClientAuthorization, DkgProposal, FinalizeKeyRequest, KeyMeta, SessionOutcome, SessionProposal, SignProposal,
};
use sigil_store::{KeyPolicy, KeyRecord, KeyStatus, MasterKey, Store};
use tokio::time::Instant;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use zeroize::Zeroizing;

pub use config::NodeConfig;
use error::{NodeError, SessionError};
use family::{LoadedKey, Operation};
use peer::PeerService;
use session::{SessionSpec, Sessions};
use transport::{PeerClients, Transport};

/// Largest message a sign request may carry, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024;

/// How long a node that failed to answer is tried last, in milliseconds.
const DOWN_PENALTY_MS: u64 = 5_000;

/// A running node's shared state.
pub struct Node {
    /// The configuration it started with.
    pub cfg: NodeConfig,
    store: Arc<Store>,
    /// Sessions this node has agreed to.
    pub sessions: Sessions,
    /// This node itself, for work that must run in a task of its own (a
    /// coordinator's own part of a session).
    me: std::sync::Weak<Node>,
    /// Keys with a recent on-demand catch-up attempt, and when.
    catch_up_tried: Mutex<HashMap<String, Instant>>,
    /// How this node reaches the others.
    peers: Arc<dyn Transport>,
    down: Mutex<HashMap<u16, Instant>>,
    /// Failures and latency of the other nodes, for choosing signers.
    health: selection::Health,
    /// Checks client tokens.
    verifier: auth::Verifier,
    /// This node's identity key (attests key records).
    identity: ed25519_dalek::SigningKey,
    /// Every node's identity public key, from this node's config.
    identities: HashMap<u16, ed25519_dalek::VerifyingKey>,
    /// The audit log.
    audit: audit::AuditLog,
    /// Coordinator of each DKG whose share is pending here (in memory: a
    /// restarted node activates pending shares through catch-up, which
    /// checks every party's attestation).
    dkg_coordinators: Mutex<HashMap<String, u16>>,
    keys: Mutex<HashMap<String, Arc<LoadedKey>>>,
    aux_lock: tokio::sync::Mutex<()>,
    /// Party sets with an aux session running here (one at a time per set).
    aux_running: Mutex<std::collections::HashSet<String>>,
    /// Party sets whose committed aux info every party confirmed since
    /// this process started.
    aux_confirmed: Mutex<std::collections::HashSet<String>>,
    /// Presignatures made but not yet committed by their coordinator, by
    /// session id (see [`Node::finalize_presignature`]).
    pending_presigs: Mutex<HashMap<SessionId, ecdsa::PendingPresig>>,
    /// The prime pool service, when `prime_source` is remote.
    remote_primes: Option<ecdsa::RemotePrimes>,
    operations: operations::Operations,
    /// Sessions admitted per kind and per peer.
    admission: limits::Admission,
    /// Key generations running per client (see [`Node::keygen_slot`]).
    keygens: limits::Counts<String>,
    /// The key pooled presignatures are sealed under in this process.
    presig_seal: ecdsa::ephemeral::ProcessSeal,
}

/// How [`Node`] coordinates one session.
#[derive(Clone, Copy)]
struct Run<'a> {
    /// Wait for every party's outcome (`false`: party 0's is enough).
    all: bool,
    /// The session deadline.
    budget: Duration,
    /// Run this node's own part (`false`: it already did, e.g. its
    /// partial signature from a pooled presignature).
    run_local: bool,
    /// The session id (32 random bytes).
    session_id: SessionId,
    /// The client's request the session carries out (none for presigning).
    auth: Option<&'a ClientAuthorization>,
}

/// A client's checked request, as the node that took it forwards it.
#[derive(Debug, Clone)]
pub struct RequestAuth {
    /// Client id.
    pub client: String,
    /// The token's `jti`.
    pub jti: String,
    /// Token, method, path and body, forwarded in every proposal.
    pub proto: ClientAuthorization,
}

/// What `POST /v1/keys` asks for (see [`api::CreateKeyRequest`]).
#[derive(Debug, Clone)]
pub struct KeygenRequest {
    /// The scheme.
    pub scheme: Scheme,
    /// Parties needed to sign or decrypt, `t`.
    pub threshold: u16,
    /// Node ids that get a share (default: every node).
    pub parties: Option<Vec<u16>>,
    /// Free text, at most 128 characters.
    pub label: Option<String>,
    /// `paillier`: bits of `N` (default 2048).
    pub bits: Option<u32>,
    /// `paillier`: trial-division bound for `N` (default 2000, TNO's).
    pub prime_threshold: Option<u32>,
    /// Who may use the key (default: the creating client).
    pub policy: Option<KeyPolicy>,
}

/// A checked key generation ([`Node::plan_keygen`]), ready to run.
#[derive(Debug, Clone)]
pub struct KeygenPlan {
    /// The id the key will have.
    pub key_id: String,
    /// The scheme.
    pub scheme: Scheme,
    threshold: u16,
    parties: Vec<u16>,
    label: Option<String>,
    kind: Kind,
    policy: KeyPolicy,
    auth: RequestAuth,
}

/// A signature made by the cluster.
#[derive(Debug, Clone)]
pub struct Signed {
    /// The signature in the scheme's standard encoding.
    pub signature: Vec<u8>,
    /// Node ids that signed, aggregator first.
    pub signers: Vec<u16>,
    /// What the scheme adds for clients (ECDSA: recovery id, DER, `v`).
    pub extras: family::SignatureExtras,
}

fn random_session_id() -> SessionId {
    let mut id = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut id);
    id
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn internal(e: impl std::fmt::Display) -> SessionError {
    SessionError::Internal(e.to_string())
}

/// Reads the master key from `SIGIL_MASTER_KEY` or the configured file.
///
/// # Errors
/// Neither is set, the file cannot be read, or the key is malformed.
pub fn load_master_key(cfg: &NodeConfig) -> anyhow::Result<MasterKey> {
    Ok(MasterKey::load(cfg.master_key_file.as_deref())?)
}

/// Starts a node and serves until `shutdown` resolves.
///
/// # Errors
/// Start-up failures: configuration, certificates, a store that does not
/// open (wrong master key), ports in use.
pub async fn run(
    cfg: NodeConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let master = load_master_key(&cfg)?;
    std::fs::create_dir_all(&cfg.data_dir)?;
    let store = sigil_store::open(&cfg.store, &cfg.data_dir, "node.db", &master).await?;
    drop(master);
    let read = |p: &std::path::Path| std::fs::read(p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()));
    let ca = Certificate::from_pem(read(&cfg.tls.ca_cert)?);
    let identity = Identity::from_pem(read(&cfg.tls.cert)?, read(&cfg.tls.key)?);
    let peers = PeerClients::new(&cfg, &ca, &identity)?;
    let remote_primes = ecdsa::RemotePrimes::new(&cfg.prime_source, &ca, &identity)?;
    let node_identity = certs::load_identity(&cfg.identity_key_file)?;
    let node = Node::build(cfg.clone(), store, Arc::new(peers), node_identity, remote_primes).await?;
    node.start_background().await?;

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let wait = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|v| *v).await;
    };

    let peer_listener = tokio::net::TcpListener::bind(cfg.listen_peer)
        .await
        .map_err(|e| anyhow::anyhow!("peer listener {}: {e}", cfg.listen_peer))?;
    let http_listener = tokio::net::TcpListener::bind(cfg.listen_http)
        .await
        .map_err(|e| anyhow::anyhow!("http listener {}: {e}", cfg.listen_http))?;
    let limits = &cfg.limits;
    // A request may run as long as the longest session (aux info), plus
    // the coordinator's margin.
    let request_timeout = Duration::from_millis(cfg.session_timeout_ms.max(cfg.aux_timeout_ms) + 5_000);
    let grpc = Server::builder()
        .tls_config(ServerTlsConfig::new().identity(identity).client_ca_root(ca))?
        .tcp_nodelay(true)
        .max_concurrent_streams(Some(limits.peer_max_concurrent_streams))
        .concurrency_limit_per_connection(limits.peer_concurrency_per_connection)
        .timeout(request_timeout)
        .add_service(
            sigil_proto::peer::peer_server::PeerServer::new(PeerService::new(node.clone()))
                .max_decoding_message_size(limits.peer_max_message_bytes),
        )
        .serve_with_incoming_shutdown(tokio_stream_listener(peer_listener), wait(stop_rx.clone()));
    let app = api::router(node.clone()).into_make_service_with_connect_info::<front::ClientAddr>();
    let http_stop = wait(stop_rx.clone());
    let http = async move {
        match &cfg.http_tls {
            Some(tls) => {
                let l = front::TlsListener::new(http_listener, tls)?;
                axum::serve(l, app).with_graceful_shutdown(http_stop).await
            }
            None => axum::serve(http_listener, app).with_graceful_shutdown(http_stop).await,
        }
        .map_err(anyhow::Error::from)
    };
    tracing::info!(node = cfg.node_id, http = %cfg.listen_http, peer = %cfg.listen_peer, "node started");
    let (g, h) = tokio::join!(grpc, http);
    g?;
    h?;
    tracing::info!(node = cfg.node_id, "node stopped");
    Ok(())
}

impl Node {
    /// A node of `cfg` over `store`, reaching the others through
    /// `transport`, attesting with `identity` (its Ed25519 identity key),
    /// taking aux-info primes from its own pool. Nothing runs in the
    /// background until [`Node::start_background`]; [`run`] does both and
    /// serves the APIs. Tests use this with [`in_process::InProcessHub`].
    ///
    /// # Errors
    /// A remote `prime_source` (use [`run`]), bad client keys, or an
    /// identity key other than the one `cfg.nodes` names for this node.
    pub async fn new(
        cfg: NodeConfig,
        store: Store,
        transport: Arc<dyn Transport>,
        identity: ed25519_dalek::SigningKey,
    ) -> anyhow::Result<Arc<Node>> {
        anyhow::ensure!(
            matches!(cfg.prime_source, config::PrimeSource::Local),
            "Node::new takes primes from the local pool only"
        );
        Self::build(cfg, store, transport, identity, None).await
    }

    async fn build(
        cfg: NodeConfig,
        store: Store,
        peers: Arc<dyn Transport>,
        identity: ed25519_dalek::SigningKey,
        remote_primes: Option<ecdsa::RemotePrimes>,
    ) -> anyhow::Result<Arc<Node>> {
        let verifier = auth::Verifier::new(&cfg.cluster_id, &cfg.clients, now_unix())?;
        if cfg.clients.is_empty() {
            tracing::warn!("no [[clients]] configured: every API request will be refused");
        }
        let identities = cfg
            .nodes
            .iter()
            .map(|n| attest::parse_public(&n.identity_key).map(|k| (n.id, k)))
            .collect::<anyhow::Result<HashMap<_, _>>>()?;
        anyhow::ensure!(
            identities.get(&cfg.node_id) == Some(&identity.verifying_key()),
            "identity_key_file does not hold the identity key nodes[{}].identity_key names",
            cfg.node_id
        );
        // Presignatures never outlive the process that made them.
        let dropped = store.clear_presignatures(cfg.node_id).await?;
        if dropped > 0 {
            tracing::info!(dropped, "dropped the pooled presignatures of an earlier process");
        }
        let store: Arc<Store> = Arc::new(store);
        let audit = audit::AuditLog::open(store.clone(), cfg.node_id).await?;
        Ok(Arc::new_cyclic(|me| Node {
            me: me.clone(),
            catch_up_tried: Mutex::new(HashMap::new()),
            store,
            sessions: Sessions::default(),
            peers,
            down: Mutex::new(HashMap::new()),
            health: selection::Health::default(),
            verifier,
            identity,
            identities,
            audit,
            dkg_coordinators: Mutex::new(HashMap::new()),
            keys: Mutex::new(HashMap::new()),
            aux_lock: tokio::sync::Mutex::new(()),
            aux_running: Mutex::default(),
            aux_confirmed: Mutex::default(),
            pending_presigs: Mutex::new(HashMap::new()),
            remote_primes,
            operations: operations::Operations::default(),
            admission: limits::Admission::new(&cfg.limits),
            keygens: limits::Counts::default(),
            presig_seal: ecdsa::ephemeral::ProcessSeal::generate(),
            cfg,
        }))
    }

    /// Imports `prime_seed_file` into the prime pool (each prime once ever)
    /// and starts
    /// the background work: prime and presignature refills, catch-up.
    ///
    /// # Errors
    /// An unreadable seed file or a store failure while seeding.
    pub async fn start_background(self: &Arc<Self>) -> anyhow::Result<()> {
        if let Some(path) = &self.cfg.prime_seed_file {
            tracing::warn!(file = %path.display(), "prime_seed_file is for development and tests only");
            let n = ecdsa::seed_primes(self, path).await?;
            tracing::info!(primes = n, file = %path.display(), "seeded the prime pool");
        }
        tokio::spawn(ecdsa::refill_primes(self.clone()));
        tokio::spawn(ecdsa::refill_presignatures(self.clone()));
        tokio::spawn(catch_up::run(self.clone()));
        Ok(())
    }
}

fn tokio_stream_listener(
    l: tokio::net::TcpListener,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    futures::stream::unfold(l, |l| async move {
        let r = l.accept().await.map(|(s, _)| {
            let _ = s.set_nodelay(true);
            s
        });
        Some((r, l))
    })
}

/// The remote parties' answers to a proposal: `(party index, result)`.
type RemoteAnswers = tokio::sync::mpsc::UnboundedReceiver<(usize, Result<SessionOutcome, SessionError>)>;

/// What the coordinator learned from a finished session.
pub(crate) struct Outcomes {
    pub(crate) by_party: Vec<Option<SessionOutcome>>,
}

impl Node {
    fn timeout(&self) -> Duration {
        Duration::from_millis(self.cfg.session_timeout_ms)
    }

    /// The token verifier.
    pub fn verifier(&self) -> &auth::Verifier {
        &self.verifier
    }

    /// The audit log.
    pub fn audit(&self) -> &audit::AuditLog {
        &self.audit
    }

    /// The store.
    pub fn store(&self) -> &Store {
        self.store.as_ref()
    }

    fn mark_down(&self, node: u16) {
        self.health.failed(node);
        self.down
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(node, Instant::now());
    }

    fn recently_down(&self, node: u16) -> bool {
        self.down
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&node)
            .is_some_and(|t| t.elapsed() < Duration::from_millis(DOWN_PENALTY_MS))
    }

    // ----- participant side -------------------------------------------------

    /// Runs this node's part of a session proposed by `caller`.
    ///
    /// # Errors
    /// [`SessionError::Invalid`] for a proposal this node cannot accept,
    /// or the session's failure.
    pub async fn participate(&self, caller: u16, p: SessionProposal) -> Result<SessionOutcome, SessionError> {
        if p.coordinator != u32::from(caller) {
            return Err(SessionError::Invalid(format!(
                "proposal claims coordinator {} but comes from node {caller}",
                p.coordinator
            )));
        }
        let entry = proposal_entry("participant", &p);
        let r = self.check_and_run(p, false).await;
        self.audit_outcome(entry, &r).await;
        r
    }

    /// Checks a proposal (shape, then the authority behind it) and runs
    /// this node's part. `from_own_door`: the proposal is this node's own,
    /// carrying a token its REST API verified (the signature is not checked
    /// a second time; everything else is).
    async fn check_and_run(&self, p: SessionProposal, from_own_door: bool) -> Result<SessionOutcome, SessionError> {
        let auth = p.authorization.clone();
        let (spec, kind) = self.check_proposal(p)?;
        let grant = self.authorize(&spec, &kind, auth.as_ref(), from_own_door).await?;
        let peer = (!from_own_door).then_some(spec.coordinator);
        let _ticket = self
            .admission
            .admit(self.cfg.node_id, spec.kind, peer, spec.deadline)
            .await?;
        self.run_part(spec, kind, grant.unwrap_or_default()).await
    }

    /// Appends the outcome of `r` to the audit log.
    async fn audit_outcome<T>(&self, mut entry: audit::Entry, r: &Result<T, SessionError>) {
        entry.outcome = match r {
            Ok(_) => "ok".into(),
            Err(SessionError::Refused { refusal, .. }) => format!("refused:{}", refusal.reason()),
            Err(e) => format!("failed:{}", e.code()),
        };
        self.audit.record(entry).await;
    }

    fn check_proposal(&self, p: SessionProposal) -> Result<(SessionSpec, Kind), SessionError> {
        let id: SessionId = p
            .session_id
            .as_slice()
            .try_into()
            .map_err(|_| SessionError::Invalid("session_id must be 32 bytes".into()))?;
        let mut parties = Vec::with_capacity(p.parties.len());
        for &x in &p.parties {
            let x = u16::try_from(x).map_err(|_| SessionError::Invalid(format!("party {x} out of range")))?;
            if !self.cfg.nodes.iter().any(|n| n.id == x) {
                return Err(SessionError::Invalid(format!(
                    "party {x} is not a node of this cluster"
                )));
            }
            if parties.contains(&x) {
                return Err(SessionError::Invalid(format!("party {x} listed twice")));
            }
            parties.push(x);
        }
        let me = parties
            .iter()
            .position(|&x| x == self.cfg.node_id)
            .and_then(|i| u16::try_from(i).ok())
            .ok_or_else(|| SessionError::Invalid("this node is not a party of the session".into()))?;
        let cap = match &p.kind {
            Some(Kind::Aux(_)) => Duration::from_millis(self.cfg.aux_timeout_ms),
            _ => self.timeout(),
        };
        let budget = Duration::from_millis(u64::from(p.deadline_ms)).min(cap);
        let kind = p
            .kind
            .ok_or_else(|| SessionError::Invalid("proposal has no kind".into()))?;
        let family_of = |name: &str| {
            name.parse::<Scheme>()
                .map(family::of)
                .map_err(|e| SessionError::Invalid(e.to_string()))
        };
        let (expects, session_kind): (session::ExpectFn, limits::SessionKind) = match &kind {
            Kind::Dkg(d) => {
                let f = family_of(&d.scheme)?;
                (f.keygen_schedule(), f.keygen_kind())
            }
            Kind::Sign(s) => {
                let f = family_of(&s.scheme)?;
                (f.sign_schedule(s), f.sign_kind())
            }
            Kind::Presign(_) => (sigil_crypto::ecdsa::expects::sign, limits::SessionKind::Presign),
            Kind::Aux(_) => (sigil_crypto::ecdsa::expects::aux_info, limits::SessionKind::Aux),
            Kind::Reshare(_) => (sigil_crypto::reshare::expects, limits::SessionKind::Dkg),
        };
        let coordinator = u16::try_from(p.coordinator)
            .map_err(|_| SessionError::Invalid(format!("coordinator {} out of range", p.coordinator)))?;
        let body = p.authorization.as_ref().map(|a| a.body.as_slice()).unwrap_or_default();
        let eid = authority::execution_id(&kind, &parties, coordinator, &id, body);
        let spec = SessionSpec {
            id,
            eid,
            parties: parties.into(),
            me,
            coordinator,
            expects,
            kind: session_kind,
            deadline: Instant::now() + budget,
        };
        Ok((spec, kind))
    }

    async fn run_part(
        &self,
        spec: SessionSpec,
        kind: Kind,
        grant: authority::Grant,
    ) -> Result<SessionOutcome, SessionError> {
        match kind {
            Kind::Dkg(d) => self.dkg_part(spec, d, grant).await,
            Kind::Sign(s) => self.sign_part(spec, s).await,
            Kind::Aux(a) => self.aux_part(spec, a).await,
            Kind::Presign(p) => self.presign_part(spec, p).await,
            Kind::Reshare(r) => self.reshare_part(spec, r).await,
        }
    }

    async fn dkg_part(
        &self,
        spec: SessionSpec,
        d: DkgProposal,
        grant: authority::Grant,
    ) -> Result<SessionOutcome, SessionError> {
        let scheme: Scheme = d
            .scheme
            .parse()
            .map_err(|e: sigil_crypto::Error| SessionError::Invalid(e.to_string()))?;
        let n = u16::try_from(spec.parties.len()).map_err(|_| SessionError::Invalid("too many parties".into()))?;
        let t = u16::try_from(d.threshold).map_err(|_| SessionError::Invalid("threshold out of range".into()))?;
        if t < scheme.min_threshold() || t > n {
            return Err(SessionError::Invalid(format!("threshold {t} must be within 2..={n}")));
        }
        if d.key_id.is_empty() || d.key_id.len() > 64 {
            return Err(SessionError::Invalid("key_id must be 1 to 64 characters".into()));
        }
        if self
            .store
            .get_key(&d.key_id)
            .await
            .map_err(SessionError::from)?
            .is_some()
        {
            return Err(SessionError::Invalid(format!("key {} exists", d.key_id)));
        }
        let parties: Vec<u16> = spec.parties.to_vec();
        let coordinator = spec.coordinator;
        let family::KeygenPart { key, mut outcome } = family::of(scheme).keygen_part(self, spec, scheme, &d, t).await?;
        let Some((key_package, public_package)) = key else {
            return Ok(outcome);
        };

        let record = KeyRecord {
            key_id: d.key_id.clone(),
            scheme: scheme.as_str().to_string(),
            threshold: t,
            parties,
            public_key: scheme.public_key(&public_package).map_err(internal)?,
            public_package: public_package.clone(),
            epoch: 0,
            label: (!d.label.is_empty()).then(|| d.label.clone()),
            created_at: now_unix(),
            status: KeyStatus::Pending,
            policy: grant.policy,
            created_by: grant.client,
            create_jti: grant.jti,
            attestations: vec![],
            endorsements: vec![],
            activations: vec![],
        };
        self.store
            .put_key(&record, self.cfg.node_id, Some(&key_package))
            .await
            .map_err(SessionError::from)?;
        self.remember_coordinator(&record.key_id, coordinator);
        outcome.attestation = attest::sign(&self.identity, &record);
        outcome.public_key_package = public_package;
        Ok(outcome)
    }

    async fn sign_part(&self, spec: SessionSpec, s: SignProposal) -> Result<SessionOutcome, SessionError> {
        if s.message.len() > MAX_MESSAGE_BYTES {
            return Err(SessionError::Invalid(format!(
                "message longer than {MAX_MESSAGE_BYTES} bytes"
            )));
        }
        let behind = self
            .cached_key(&s.key_id)
            .await
            .map_err(internal)?
            .is_some_and(|k| k.record.epoch < s.epoch);
        if behind {
            // The coordinator is at a reshare's next epoch already.
            let epoch = s.epoch.saturating_sub(1);
            self.adopt_later_epoch(&s.key_id, epoch, &[spec.coordinator]).await;
        }
        let key = self
            .cached_key(&s.key_id)
            .await
            .map_err(internal)?
            .ok_or_else(|| SessionError::Unavailable {
                nodes: vec![self.cfg.node_id],
                reason: format!("key {} is not active on node {}", s.key_id, self.cfg.node_id),
            })?;
        let record = &key.record;
        if record.epoch != s.epoch {
            // Mid-switch (a reshare's commit reaches nodes one by one): not
            // a fault of this node (busy, not down); the coordinator tries
            // another set, or adopts the later epoch and signs there.
            return Err(SessionError::Busy {
                node: self.cfg.node_id,
                reason: format!("key epoch is {} here, proposal says {}", record.epoch, s.epoch),
            });
        }
        if s.scheme != record.scheme {
            return Err(SessionError::Invalid(format!(
                "proposal says scheme {:?}, key {} is {}",
                s.scheme, record.key_id, record.scheme
            )));
        }
        let signers = key.indices_of(&spec.parties)?;
        if signers.len() < usize::from(record.threshold) {
            return Err(SessionError::Invalid(format!(
                "{} signers, key needs {}",
                signers.len(),
                record.threshold
            )));
        }
        let family = key.family();
        family
            .check_message(key.scheme, &s.message, &s.derivation_path)
            .map_err(SessionError::Invalid)?;
        family.sign_part(self, spec, &key, &s, signers).await
    }

    /// Commits or abandons a key after its DKG, at the request of `caller`
    /// (`None`: this node itself). See [`authority`] for the rules.
    ///
    /// # Errors
    /// [`SessionError::Refused`] for a caller or record this node does not
    /// accept, `Invalid` for malformed metadata, storage failures.
    pub async fn finalize_key(&self, caller: Option<u16>, r: FinalizeKeyRequest) -> Result<(), SessionError> {
        let meta = r.key.ok_or_else(|| SessionError::Invalid("no key".into()))?;
        let local = self.store.get_key(&meta.key_id).await.map_err(SessionError::from)?;
        let coordinator = self
            .dkg_coordinators
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&meta.key_id)
            .copied();
        let from_coordinator = caller.is_none() || caller == coordinator;
        let forbid = |m: &str| self.refused(auth::Refusal::Forbidden(m.to_string()));
        if !r.commit {
            let abandoned = catch_up::record_of(&meta, KeyStatus::Pending)?;
            if self
                .finalize_epoch(&abandoned, false, from_coordinator, &r.session_id)
                .await?
            {
                return Ok(());
            }
            return match local {
                Some(k) if k.status == KeyStatus::Pending && from_coordinator => {
                    self.forget_dkg(&meta.key_id);
                    self.store
                        .delete_pending_key(&meta.key_id)
                        .await
                        .map_err(SessionError::from)
                }
                Some(k) if k.status == KeyStatus::Pending => Err(forbid("only the DKG's coordinator may abort it")),
                Some(_) => Err(forbid("an active key is never deleted by a peer")),
                None => Ok(()),
            };
        }
        let record = catch_up::record_of(&meta, KeyStatus::Active)?;
        self.check_shape(&record)?;
        attest::verify_all(&record, |n| self.identities.get(&n).copied())
            .map_err(|e| forbid(&format!("key record not attested: {e}")))?;
        if self.finalize_epoch(&record, true, from_coordinator, &[]).await? {
            return Ok(());
        }
        match local {
            Some(k) if k.status == KeyStatus::Active => {
                if attest::record_bytes(&k) != attest::record_bytes(&record) {
                    return Err(forbid("an active key record is never replaced"));
                }
                Ok(())
            }
            Some(k) => {
                if attest::record_bytes(&k) != attest::record_bytes(&record) {
                    return Err(forbid("the record differs from this node's pending record"));
                }
                if !from_coordinator && coordinator.is_some() {
                    return Err(forbid("only the DKG's coordinator may commit it"));
                }
                self.forget_dkg(&meta.key_id);
                self.store
                    .activate_key(&meta.key_id, &record.attestations)
                    .await
                    .map_err(SessionError::from)?;
                Ok(())
            }
            None if record.parties.contains(&self.cfg.node_id) => {
                Err(forbid("this node is a party of the key but holds no share of it"))
            }
            // A later epoch of a key this node never knew: without the
            // previous record its endorsements cannot be checked.
            None if record.epoch > 0 => Err(forbid(
                "a later epoch of a key unknown here is taken only by a party of it",
            )),
            // Not a party: keep the attested metadata so this node can coordinate.
            None => self
                .store
                .put_key(&record, self.cfg.node_id, None)
                .await
                .map_err(SessionError::from),
        }
    }

    /// [`Node::finalize_key`], answering a commit of a later epoch with this
    /// node's activation when it is a party of it and uses its new share
    /// (`attest::sign_activation`); empty otherwise.
    ///
    /// # Errors
    /// As [`Node::finalize_key`].
    pub async fn finalize_key_acked(
        &self,
        caller: Option<u16>,
        r: FinalizeKeyRequest,
    ) -> Result<Vec<u8>, SessionError> {
        let (commit, meta) = (r.commit, r.key.clone());
        self.finalize_key(caller, r).await?;
        let Some(meta) = meta.filter(|m| commit && m.epoch > 0) else {
            return Ok(Vec::new());
        };
        let record = catch_up::record_of(&meta, KeyStatus::Active)?;
        let me = self.cfg.node_id;
        let active = self.store.get_key(&record.key_id).await.map_err(SessionError::from)?;
        let same = active.is_some_and(|k| {
            k.status == KeyStatus::Active && attest::record_bytes(&k) == attest::record_bytes(&record)
        });
        let holds = same
            && record.parties.contains(&me)
            && self
                .store
                .get_share(&record.key_id, me, record.epoch)
                .await
                .map_err(SessionError::from)?
                .is_some();
        Ok(if holds {
            attest::sign_activation(&self.identity, &record)
        } else {
            Vec::new()
        })
    }

    /// Remembers `coordinator` as the coordinator of the session that left
    /// something pending of `key_id` here (a DKG or a reshare): only it may
    /// abort.
    fn remember_coordinator(&self, key_id: &str, coordinator: u16) {
        self.dkg_coordinators
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key_id.to_string(), coordinator);
    }

    fn forget_dkg(&self, key_id: &str) {
        self.dkg_coordinators
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key_id);
    }

    // ----- coordinator side -------------------------------------------------

    /// Proposes a session to `parties` and runs our own part if we are one.
    /// Waits for every party (`all = true`) or only for party 0's outcome.
    async fn coordinate(
        &self,
        parties: &[u16],
        kind: Kind,
        all: bool,
        auth: Option<&ClientAuthorization>,
    ) -> Result<Outcomes, SessionError> {
        self.coordinate_with_budget(parties, kind, all, self.timeout(), auth)
            .await
    }

    /// [`Node::coordinate`] with a session deadline of `budget`.
    async fn coordinate_with_budget(
        &self,
        parties: &[u16],
        kind: Kind,
        all: bool,
        budget: Duration,
        auth: Option<&ClientAuthorization>,
    ) -> Result<Outcomes, SessionError> {
        let run = Run {
            all,
            budget,
            run_local: true,
            session_id: random_session_id(),
            auth,
        };
        self.coordinate_inner(parties, kind, run)
            .await
            .map_err(|e| self.replay_as_unavailable(e))
    }

    /// Runs a session as [`Run`] says: proposes it to `parties`, runs this
    /// node's part (unless `run.run_local` is false) and collects the
    /// outcomes.
    async fn coordinate_inner(&self, parties: &[u16], kind: Kind, run: Run<'_>) -> Result<Outcomes, SessionError> {
        let proposal = SessionProposal {
            session_id: run.session_id.to_vec(),
            coordinator: u32::from(self.cfg.node_id),
            parties: parties.iter().map(|&p| u32::from(p)).collect(),
            deadline_ms: u32::try_from(run.budget.as_millis()).unwrap_or(u32::MAX),
            authorization: run.auth.cloned(),
            kind: Some(kind),
        };
        let (mut rx, tasks) = self.propose_to_peers(parties, &proposal, run.budget);
        let r = self
            .collect_outcomes(parties, proposal, &run, &mut rx, tasks.len())
            .await;
        if r.is_err() {
            // Stop asking the others; on success their calls run to the
            // end (they finish their part and audit it).
            tasks.iter().for_each(tokio::task::JoinHandle::abort);
        }
        r
    }

    /// Sends `proposal` to every party but this node, each call in its own
    /// task; the answers arrive on the channel as `(party index, result)`.
    fn propose_to_peers(
        &self,
        parties: &[u16],
        proposal: &SessionProposal,
        budget: Duration,
    ) -> (RemoteAnswers, Vec<tokio::task::JoinHandle<()>>) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let mut tasks = Vec::new();
        for (i, &node) in parties.iter().enumerate() {
            if node == self.cfg.node_id {
                continue;
            }
            let (peers, p, tx) = (self.peers.clone(), proposal.clone(), tx.clone());
            tasks.push(tokio::spawn(async move {
                let r = peers.run_session(node, p, budget + Duration::from_millis(500)).await;
                let _ = tx.send((i, r));
            }));
        }
        (rx, tasks)
    }

    /// Runs this node's own part (as `run` says) while `remote` answers
    /// arrive, until every party's outcome (`run.all`) or party 0's is in.
    /// An unavailable or refusing party ends it at once (the caller may
    /// pick other parties; a refusal is final); protocol errors and
    /// timeouts are kept while the rest finishes.
    async fn collect_outcomes(
        &self,
        parties: &[u16],
        proposal: SessionProposal,
        run: &Run<'_>,
        remote: &mut RemoteAnswers,
        mut remote_left: usize,
    ) -> Result<Outcomes, SessionError> {
        let my_index = parties.iter().position(|&p| p == self.cfg.node_id);
        let mut by_party: Vec<Option<SessionOutcome>> = vec![None; parties.len()];
        let mut local_pending = run.run_local && my_index.is_some();
        if !run.run_local {
            if let Some(slot) = my_index.and_then(|i| by_party.get_mut(i)) {
                *slot = Some(SessionOutcome::default());
            }
        }
        let is_party = local_pending;
        // Our own part runs in a task of its own: a heavy protocol takes
        // its thread off the workers (`session::run_heavy`), and the
        // peers' answers must still be read meanwhile. Aborted when we
        // return first (it then ends at its next await or its deadline).
        let me = if is_party { self.me.upgrade() } else { None };
        if is_party && me.is_none() {
            return Err(SessionError::Internal("the node is shutting down".into()));
        }
        let mut task = me.map(|me| tokio::spawn(async move { me.check_and_run(proposal, true).await }));
        let _abort = AbortOnDrop(task.as_ref().map(tokio::task::JoinHandle::abort_handle));
        let local = async {
            match task.as_mut() {
                Some(h) => h
                    .await
                    .unwrap_or_else(|e| Err(SessionError::Internal(format!("own session part: {e}")))),
                None => futures::future::pending().await,
            }
        };
        tokio::pin!(local);
        let mut first_error: Option<SessionError> = None;
        loop {
            let done = if run.all {
                by_party.iter().all(Option::is_some)
            } else {
                by_party.first().is_some_and(Option::is_some)
            };
            if done {
                return Ok(Outcomes { by_party });
            }
            if !local_pending && remote_left == 0 {
                break;
            }
            let (i, r) = tokio::select! {
                r = &mut local, if local_pending => {
                    local_pending = false;
                    (my_index.unwrap_or_default(), r)
                }
                Some((i, r)) = remote.recv(), if remote_left > 0 => {
                    remote_left -= 1;
                    if let Err(
                        e @ (SessionError::Unavailable { .. } | SessionError::Refused { .. } | SessionError::Busy { .. }),
                    ) = r
                    {
                        return Err(e);
                    }
                    (i, r)
                }
            };
            match r {
                Ok(o) => {
                    if let Some(slot) = by_party.get_mut(i) {
                        *slot = Some(o);
                    }
                }
                // Our own part failed: that is the session's outcome.
                Err(e) if Some(i) == my_index => return Err(e),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        Err(first_error.unwrap_or_else(|| SessionError::Internal("session ended without an outcome".into())))
    }

    /// Checks a request to create a key by DKG among `parties` (default:
    /// every node): every 400 is found here, before anything runs. Fixes
    /// the key id. [`Node::run_keygen`] runs the plan.
    ///
    /// # Errors
    /// [`NodeError::BadRequest`] for bad parameters.
    pub fn plan_keygen(&self, req: KeygenRequest, auth: RequestAuth) -> Result<KeygenPlan, NodeError> {
        let KeygenRequest {
            scheme,
            threshold,
            parties,
            label,
            bits,
            prime_threshold,
            policy,
        } = req;
        let policy = authority::resolve_policy(policy.as_ref(), &auth.client).map_err(NodeError::bad_request)?;
        let cluster = self.cfg.node_ids();
        let parties = match parties {
            None => cluster.clone(),
            Some(p) => {
                let mut sorted = p.clone();
                sorted.sort_unstable();
                sorted.dedup();
                if sorted.len() != p.len() {
                    return Err(NodeError::bad_request("parties: duplicate node id"));
                }
                if let Some(x) = p.iter().find(|x| !cluster.contains(x)) {
                    return Err(NodeError::bad_request(format!(
                        "parties: node {x} is not in the cluster {cluster:?}"
                    )));
                }
                p
            }
        };
        let n = parties.len();
        if threshold < scheme.min_threshold() || usize::from(threshold) > n {
            return Err(NodeError::bad_request(format!(
                "threshold must be within {}..={n} for {scheme} with {n} parties, got {threshold}",
                scheme.min_threshold()
            )));
        }
        if let Some(l) = &label {
            if l.chars().count() > 128 {
                return Err(NodeError::bad_request("label longer than 128 characters"));
            }
        }
        let (bits, prime_threshold) = family::of(scheme)
            .keygen_settings(n, threshold, bits, prime_threshold)
            .map_err(NodeError::bad_request)?;
        let key_id = uuid::Uuid::new_v4().to_string();
        let kind = Kind::Dkg(DkgProposal {
            key_id: key_id.clone(),
            scheme: scheme.as_str().into(),
            threshold: u32::from(threshold),
            label: label.clone().unwrap_or_default(),
            bits,
            prime_threshold,
        });
        Ok(KeygenPlan {
            key_id,
            scheme,
            threshold,
            parties,
            label,
            kind,
            policy,
            auth,
        })
    }

    /// Runs a planned key generation, counting progress into `progress`.
    /// On failure nothing is kept: every party deletes its pending share.
    ///
    /// # Errors
    /// The session's failure (naming nodes), or [`NodeError::Budget`] when
    /// a Paillier search exceeds [`paillier::KEYGEN_BUDGET`].
    pub async fn run_keygen(
        &self,
        plan: KeygenPlan,
        progress: &operations::KeygenProgress,
    ) -> Result<KeyRecord, NodeError> {
        let KeygenPlan {
            key_id,
            scheme,
            threshold,
            parties,
            label,
            kind,
            policy,
            auth,
        } = plan;
        let cluster = self.cfg.node_ids();
        let started = Instant::now();
        let result = family::of(scheme)
            .coordinate_keygen(self, &parties, kind, progress, &auth.proto)
            .await;
        let mut record = KeyRecord {
            key_id: key_id.clone(),
            scheme: scheme.as_str().into(),
            threshold,
            parties: parties.clone(),
            public_key: vec![],
            public_package: vec![],
            epoch: 0,
            label: label.clone(),
            created_at: now_unix(),
            status: KeyStatus::Active,
            policy,
            created_by: auth.client.clone(),
            create_jti: auth.jti.clone(),
            attestations: vec![],
            endorsements: vec![],
            activations: vec![],
        };
        let attested = result.and_then(|o| {
            self.attested_record(scheme, &mut record, &parties, o)
                .map_err(NodeError::from)
        });
        if let Err(e) = attested {
            let named = e.nodes();
            self.finalize_everywhere(&parties, catch_up::meta_of(&record), false, &named)
                .await;
            tracing::warn!(key_id, error = ?e, "key generation failed");
            return Err(e);
        }
        self.finalize_everywhere(&cluster, catch_up::meta_of(&record), true, &[])
            .await;
        metrics::histogram!("sigil_dkg_seconds", "scheme" => scheme.as_str()).record(started.elapsed().as_secs_f64());
        tracing::info!(key_id, %scheme, threshold, ?parties, "key created");
        self.store
            .get_key(&key_id)
            .await?
            .ok_or_else(|| NodeError::internal("created key missing from the local store"))
    }

    /// A place for one more key generation of `client`, held while it runs.
    ///
    /// # Errors
    /// [`SessionError::Busy`] when the client already runs
    /// `limits.keygens_per_client` here.
    pub fn keygen_slot(&self, client: &str) -> Result<limits::Place<String>, NodeError> {
        let max = self.cfg.limits.keygens_per_client;
        limits::Place::claim(&self.keygens, &client.to_string(), max).map_err(|n| {
            NodeError::Session(SessionError::Busy {
                node: self.cfg.node_id,
                reason: format!("client {client} runs {n} key generations here (at most {max})"),
            })
        })
    }

    /// The long operations this node coordinates.
    #[must_use]
    pub fn operations(&self) -> &operations::Operations {
        &self.operations
    }

    /// Fills `record` from a finished DKG session's outcomes: the public
    /// package every party reported (they must agree) and every party's
    /// attestation of the resulting record (each must verify).
    fn attested_record(
        &self,
        scheme: Scheme,
        record: &mut KeyRecord,
        parties: &[u16],
        o: Outcomes,
    ) -> Result<(), SessionError> {
        let first = o
            .by_party
            .first()
            .cloned()
            .flatten()
            .unwrap_or_default()
            .public_key_package;
        if first.is_empty()
            || o.by_party
                .iter()
                .any(|x| x.as_ref().map(|x| &x.public_key_package) != Some(&first))
        {
            return Err(SessionError::Protocol {
                culprits: vec![],
                reason: "parties finished the DKG with different public keys".into(),
            });
        }
        record.public_key = scheme.public_key(&first).map_err(internal)?;
        record.public_package = first;
        record.attestations = parties
            .iter()
            .zip(&o.by_party)
            .map(|(&node, x)| attest::attestation(node, x.as_ref().map(|x| x.attestation.clone()).unwrap_or_default()))
            .collect();
        attest::verify_all(record, |n| self.identities.get(&n).copied()).map_err(|e| {
            let culprits = match e {
                attest::AttestError::Invalid(n) | attest::AttestError::Missing(n) => vec![n],
                _ => vec![],
            };
            SessionError::Protocol {
                culprits,
                reason: format!("key record attestation: {e}"),
            }
        })
    }

    /// Tells `nodes` to activate (`commit`) or delete their pending share
    /// of a key, and waits for them, except for the nodes in `detach`
    /// (nodes a failed session named as silent or down): those are told in
    /// the background, so a failure is answered at its deadline rather
    /// than after another timeout.
    async fn finalize_everywhere(&self, nodes: &[u16], meta: KeyMeta, commit: bool, detach: &[u16]) {
        let req = FinalizeKeyRequest {
            key: Some(meta),
            commit,
            session_id: Vec::new(),
        };
        self.finalize_request_everywhere(nodes, req, detach).await;
    }

    /// [`Node::finalize_everywhere`] with the whole request.
    async fn finalize_request_everywhere(&self, nodes: &[u16], req: FinalizeKeyRequest, detach: &[u16]) {
        let commit = req.commit;
        for &node in nodes.iter().filter(|n| detach.contains(n) && **n != self.cfg.node_id) {
            let (peers, r) = (self.peers.clone(), req.clone());
            tokio::spawn(async move {
                if let Err(e) = peers.finalize_key(node, r, Duration::from_secs(30)).await.map(|_| ()) {
                    tracing::warn!(node, commit, error = %e, "could not finalize key on node");
                }
            });
        }
        let calls = nodes
            .iter()
            .filter(|n| !detach.contains(n) || **n == self.cfg.node_id)
            .map(|&node| {
                let req = req.clone();
                async move {
                    let r = if node == self.cfg.node_id {
                        self.finalize_key(None, req).await.map_err(|e| e.to_string())
                    } else {
                        self.peers
                            .finalize_key(node, req, Duration::from_secs(5))
                            .await
                            .map(|_| ())
                            .map_err(|e| e.to_string())
                    };
                    if let Err(e) = r {
                        tracing::warn!(node, commit, error = %e, "could not finalize key on node");
                    }
                }
            });
        futures::future::join_all(calls).await;
    }

    /// The active key `key_id`.
    ///
    /// # Errors
    /// 404 if unknown here.
    pub async fn active_key(&self, key_id: &str) -> Result<KeyRecord, NodeError> {
        Ok(self.loaded_key(key_id).await?.record.clone())
    }

    /// The active key `key_id`, loaded (from the cache).
    ///
    /// # Errors
    /// 404 if unknown here.
    pub async fn loaded_key(&self, key_id: &str) -> Result<Arc<LoadedKey>, NodeError> {
        self.cached_key(key_id)
            .await?
            .ok_or_else(|| NodeError::not_found(format!("no key {key_id:?}")))
    }

    /// [`Node::loaded_key`] for signing or decrypting on behalf of
    /// `client`: a key held pending here (a missed commit) whose policy
    /// names the client is caught up from the peers first.
    ///
    /// # Errors
    /// 404 if unknown here.
    pub(crate) async fn usable_key(&self, key_id: &str, client: &str) -> Result<Arc<LoadedKey>, NodeError> {
        if let Some(k) = self.cached_key(key_id).await? {
            return Ok(k);
        }
        if self
            .activate_pending(key_id, client, &self.cfg.node_ids(), ON_DEMAND_CATCH_UP)
            .await
        {
            if let Some(k) = self.cached_key(key_id).await? {
                return Ok(k);
            }
        }
        Err(NodeError::not_found(format!("no key {key_id:?}")))
    }

    /// The public key at `path` below `key` (ECDSA, BIP-32).
    ///
    /// # Errors
    /// 400 for schemes without derivation or a bad path.
    pub fn derived_public_key(&self, key: &LoadedKey, path: &[u32]) -> Result<Vec<u8>, NodeError> {
        key.scheme
            .derive_public_key(&key.record.public_package, path)
            .map_err(|e| NodeError::bad_request(e.to_string()))
    }

    /// This node's share of `key` at its epoch, unsealed.
    async fn own_share(&self, key: &KeyRecord) -> Result<Zeroizing<Vec<u8>>, SessionError> {
        if let Some(share) = self
            .store
            .get_share(&key.key_id, self.cfg.node_id, key.epoch)
            .await
            .map_err(SessionError::from)?
        {
            return Ok(share);
        }
        // The key moved to a later epoch since this record was read.
        let moved = self
            .store
            .get_key(&key.key_id)
            .await
            .map_err(SessionError::from)?
            .is_some_and(|k| k.epoch > key.epoch);
        if moved {
            return Err(SessionError::Busy {
                node: self.cfg.node_id,
                reason: format!("key {} moved past epoch {} here", key.key_id, key.epoch),
            });
        }
        Err(SessionError::Invalid(format!(
            "no share of key {} on this node",
            key.key_id
        )))
    }

    /// The active key `key_id`, from memory or the store (parsed once, when
    /// it enters the cache). A record of a scheme this build does not know
    /// is reported as a store error.
    async fn cached_key(&self, key_id: &str) -> Result<Option<Arc<LoadedKey>>, sigil_store::StoreError> {
        if let Some(k) = self.keys.lock().unwrap_or_else(|p| p.into_inner()).get(key_id) {
            return Ok(Some(k.clone()));
        }
        let Some(record) = self
            .store
            .get_key(key_id)
            .await?
            .filter(|k| k.status == KeyStatus::Active)
        else {
            return Ok(None);
        };
        let entry = Arc::new(LoadedKey::new(record).map_err(|e| sigil_store::StoreError::Corrupt(e.to_string()))?);
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        Ok(Some(keys.entry(key_id.to_string()).or_insert(entry).clone()))
    }

    /// Signs `message` with key `key_id`: picks `t` signers (this node
    /// first when it holds a share, the others drawn by health), and
    /// if a signer turns out unreachable, tries another set until the
    /// deadline. ECDSA keys sign from a pooled presignature when one is
    /// ready.
    ///
    /// # Errors
    /// 404 for an unknown key, 400 for a long message or one the scheme
    /// does not sign, 503 naming the unreachable nodes when fewer than `t`
    /// can sign, 504 naming the silent ones at the deadline, 502 naming
    /// culprits.
    pub async fn sign(
        &self,
        key_id: &str,
        message: Vec<u8>,
        derivation_path: &[u32],
        auth: &RequestAuth,
    ) -> Result<Signed, NodeError> {
        if message.len() > MAX_MESSAGE_BYTES {
            return Err(NodeError::bad_request(format!(
                "message longer than {MAX_MESSAGE_BYTES} bytes"
            )));
        }
        let key = self.usable_key(key_id, &auth.client).await?;
        if !key.record.policy.sign.contains(&auth.client) {
            return Err(NodeError::refused(&auth::Refusal::Forbidden(format!(
                "client {} may not sign with key {key_id}",
                auth.client
            ))));
        }
        if key.operation() != Operation::Sign {
            return Err(NodeError::bad_request(format!(
                "{} keys {} (POST /v1/keys/{{key_id}}/{}); they do not sign",
                key.scheme,
                key.operation().route(),
                key.operation().route()
            )));
        }
        let family = key.family();
        family
            .check_message(key.scheme, &message, derivation_path)
            .map_err(NodeError::bad_request)?;
        let mut signed = match family
            .sign_pooled(self, &key, &message, derivation_path, &auth.proto)
            .await?
        {
            Some(signed) => signed,
            None => {
                self.sign_across_epochs(key.clone(), &message, derivation_path, auth)
                    .await?
            }
        };
        signed.extras = family
            .signature_extras(&key, &message, derivation_path, &signed.signature)
            .map_err(NodeError::internal)?;
        Ok(signed)
    }

    /// [`Node::sign_in_session`], and when the signers are already at a
    /// reshare's next epoch (its commit reaches nodes one by one), adopt
    /// that epoch from them and sign there (at most three times).
    async fn sign_across_epochs(
        &self,
        mut key: Arc<LoadedKey>,
        message: &[u8],
        derivation_path: &[u32],
        auth: &RequestAuth,
    ) -> Result<Signed, NodeError> {
        // The pauses cover the commit's second phase (an old party adopts a
        // later epoch only with every new party's activation).
        let mut pauses = [0u64, 20, 100].into_iter();
        loop {
            let e = match self.sign_in_session(&key, message, derivation_path, auth).await {
                // Signers at another epoch count as busy, which ends as
                // "fewer than t reachable" (unavailable); a silent or lying
                // signer is no reason to look for a later epoch.
                Err(e @ NodeError::Session(SessionError::Unavailable { .. })) => e,
                other => return other,
            };
            let mut adopted = false;
            for pause in pauses.by_ref() {
                tokio::time::sleep(Duration::from_millis(pause)).await;
                if self
                    .adopt_later_epoch(&key.record.key_id, key.record.epoch, &e.nodes())
                    .await
                {
                    adopted = true;
                    break;
                }
            }
            if !adopted {
                return Err(e);
            }
            key = self.usable_key(&key.record.key_id, &auth.client).await?;
        }
    }

    /// [`Node::sign`] by a full signing session.
    async fn sign_in_session(
        &self,
        key: &LoadedKey,
        message: &[u8],
        derivation_path: &[u32],
        auth: &RequestAuth,
    ) -> Result<Signed, NodeError> {
        let kind = Kind::Sign(SignProposal {
            key_id: key.record.key_id.clone(),
            message: message.to_vec(),
            epoch: key.record.epoch,
            scheme: key.record.scheme.clone(),
            derivation_path: derivation_path.to_vec(),
            presignature_id: String::new(),
        });
        let (o, signers) = self
            .coordinate_quorum(&key.record, kind, false, "signers", Some(&auth.proto), &[])
            .await?;
        let signature = o
            .by_party
            .into_iter()
            .next()
            .flatten()
            .map(|o| o.signature)
            .unwrap_or_default();
        if signature.is_empty() {
            return Err(NodeError::internal("aggregator returned no signature"));
        }
        Ok(Signed {
            signature,
            signers,
            extras: family::SignatureExtras::default(),
        })
    }

    /// Runs a session among `key.threshold` of the key's parties: this node
    /// first when it is one, the others drawn by health
    /// ([`selection::Health::choose`]). When a chosen
    /// party is unreachable it is marked down and another set is tried,
    /// until the session deadline. Returns the outcomes and the parties
    /// used (in session order).
    ///
    /// # Errors
    /// [`SessionError::Unavailable`] naming the unreachable nodes when fewer
    /// than `threshold` remain; the session's own errors otherwise.
    pub(crate) async fn coordinate_quorum(
        &self,
        key: &KeyRecord,
        kind: Kind,
        wait_all: bool,
        role: &str,
        auth: Option<&ClientAuthorization>,
        avoid: &[u16],
    ) -> Result<(Outcomes, Vec<u16>), SessionError> {
        let deadline = Instant::now() + self.timeout();
        let mut excluded: Vec<u16> = avoid.to_vec();
        let mut last_reason = String::new();
        loop {
            let candidates: Vec<u16> = key.parties.iter().copied().filter(|p| !excluded.contains(p)).collect();
            if candidates.len() < usize::from(key.threshold) {
                return Err(SessionError::Unavailable {
                    nodes: excluded,
                    reason: format!(
                        "fewer than {} {role} reachable; last error: {last_reason}",
                        key.threshold
                    ),
                });
            }
            let chosen = self
                .health
                .choose(self.cfg.node_id, &candidates, usize::from(key.threshold), |n| {
                    self.recently_down(n)
                });
            let started = Instant::now();
            match self.coordinate(&chosen, kind.clone(), wait_all, auth).await {
                Ok(o) => {
                    let took = started.elapsed();
                    chosen
                        .iter()
                        .filter(|&&n| n != self.cfg.node_id)
                        .for_each(|&n| self.health.answered(n, took));
                    return Ok((o, chosen));
                }
                Err(SessionError::Busy { node, reason }) if Instant::now() < deadline => {
                    tracing::info!(node, %reason, "{role}: a party is busy, choosing another set");
                    if !excluded.contains(&node) {
                        excluded.push(node);
                    }
                    last_reason = reason;
                }
                Err(SessionError::Unavailable { nodes, reason }) if Instant::now() < deadline => {
                    tracing::info!(?nodes, %reason, "{role}: a party is unavailable, choosing another set");
                    for n in nodes {
                        self.mark_down(n);
                        if !excluded.contains(&n) {
                            excluded.push(n);
                        }
                    }
                    last_reason = reason;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

impl Node {
    /// A peer's refusal of a token issued before that peer started (it
    /// restarted since: its replay cache starts empty) is the peer's state,
    /// not the client's doing: the party counts as busy, so another set is
    /// tried (the others check the token themselves) and, if none is left,
    /// the client gets a 503 to retry with a new token. A real replay
    /// (`replayed`: the token was presented by another coordinator) stays
    /// a refusal that reaches the client.
    fn replay_as_unavailable(&self, e: SessionError) -> SessionError {
        match e {
            SessionError::Refused {
                node,
                refusal: auth::Refusal::PredatesStart,
            } if node != self.cfg.node_id => SessionError::Busy {
                node,
                reason: format!("node {node} started after the client's token was issued; retry with a new token"),
            },
            e => e,
        }
    }
}

/// Aborts a task when dropped (a `JoinHandle` only detaches).
struct AbortOnDrop(Option<tokio::task::AbortHandle>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(h) = &self.0 {
            h.abort();
        }
    }
}

/// How long a node waits for each peer when it catches up on a key it
/// holds pending because a request needs it now.
const ON_DEMAND_CATCH_UP: Duration = Duration::from_secs(2);

/// The audit entry of a proposal (outcome filled in later).
fn proposal_entry(role: &'static str, p: &SessionProposal) -> audit::Entry {
    let (client, jti) = p
        .authorization
        .as_ref()
        .and_then(|a| auth::unverified_claims(&a.token).ok())
        .map(|c| (c.sub, c.jti))
        .unwrap_or_default();
    let (operation, key_id, message): (&'static str, String, &[u8]) = match &p.kind {
        Some(Kind::Dkg(d)) => ("create_key", d.key_id.clone(), &[]),
        Some(Kind::Sign(s)) => {
            let op = s
                .scheme
                .parse::<Scheme>()
                .map_or(Operation::Sign, |s| family::of(s).operation());
            (op.route(), s.key_id.clone(), &s.message)
        }
        Some(Kind::Aux(_)) => ("aux_info", String::new(), &[]),
        Some(Kind::Presign(x)) => ("presign", x.key_id.clone(), &[]),
        Some(Kind::Reshare(r)) => (
            "reshare",
            r.current.as_ref().map(|c| c.key_id.clone()).unwrap_or_default(),
            &[],
        ),
        None => ("unknown", String::new(), &[]),
    };
    audit::Entry {
        role,
        client,
        jti,
        operation,
        key_id,
        message_sha256: if message.is_empty() {
            String::new()
        } else {
            audit::message_hash(message)
        },
        session_id: hex::encode(&p.session_id),
        outcome: String::new(),
    }
}
