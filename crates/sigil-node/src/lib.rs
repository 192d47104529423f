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
pub mod epoch;
pub mod error;
pub mod family;
pub mod front;
pub mod grpc;
pub mod in_process;
pub mod limits;
pub mod members;
pub mod operations;
pub mod peer;
mod proposal;
pub mod records;
pub mod relay;
pub mod reshare;
pub mod rotation;
pub mod selection;
pub mod session;
pub mod transport;
pub mod views;
pub mod wire;

mod commit;
mod coordinator;
mod external;
mod keygen;
mod keys;
mod participant;
mod signing;

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
use coordinator::{Outcomes, Run};
use error::{NodeError, SessionError};
pub use external::{RelayGuard, RelayedRun, RelayedSign, SessionView};
use family::{LoadedKey, Operation};
pub use keygen::{KeygenPlan, KeygenRequest};
use peer::PeerService;
use session::{SessionSpec, Sessions};
pub use signing::Signed;
use transport::{PeerClients, Transport};

/// Largest message a sign request may carry, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024;

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
    /// The cluster's members (ids, peer addresses, identity keys), from
    /// this node's `[[nodes]]`; replaced on `SIGHUP` ([`members`]).
    members: std::sync::RwLock<Arc<members::Members>>,
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
    /// The current record of each key this node was new to when a reshare
    /// session made it a party (`reshare::remember_current`).
    reshared_from: Mutex<HashMap<String, KeyRecord>>,
    /// Failed automatic rotations, for their backoff.
    rotations: rotation::Backoff,
    /// Failed completions of acknowledged epochs (catch-up), for theirs.
    epoch_commits: rotation::Backoff,
    /// The key pooled presignatures are sealed under in this process.
    presig_seal: ecdsa::ephemeral::ProcessSeal,
    /// The mailboxes of the external parties this node relays.
    relay: relay::Relay,
    /// Relayed sessions running per client (see [`Node::relay_guard`]).
    relayed: limits::Counts<String>,
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

/// Re-reads `path` at every `SIGHUP` and applies its `[[nodes]]`; a file
/// that does not load, names another node or changes what cannot change
/// is refused (logged and audited) and the node goes on as it was.
async fn reload_on_hangup(node: Arc<Node>, mut signals: tokio::signal::unix::Signal, path: std::path::PathBuf) {
    while signals.recv().await.is_some() {
        let next = match NodeConfig::load(&path) {
            Ok(c) if c.node_id == node.cfg.node_id => c,
            Ok(c) => {
                tracing::error!(node_id = c.node_id, "SIGHUP: the config names another node; ignored");
                continue;
            }
            Err(e) => {
                tracing::error!(error = %e, "SIGHUP: the config does not load; ignored");
                continue;
            }
        };
        let rest_changed = NodeConfig {
            nodes: node.cfg.nodes.clone(),
            retired_nodes: node.cfg.retired_nodes.clone(),
            ..next.clone()
        } != node.cfg;
        if rest_changed {
            tracing::warn!("SIGHUP applies [[nodes]] only; restart the node for its other changes");
        }
        let _ = node.reload_members(&next.nodes, &next.retired_nodes).await;
    }
}

/// Reads the master key from `SIGIL_MASTER_KEY` or the configured file.
///
/// # Errors
/// Neither is set, the file cannot be read, or the key is malformed.
pub fn load_master_key(cfg: &NodeConfig) -> anyhow::Result<MasterKey> {
    Ok(MasterKey::load(cfg.master_key_file.as_deref())?)
}

/// Starts a node and serves until `shutdown` resolves. With
/// `config_path` (the file `cfg` came from), `SIGHUP` re-reads it and
/// applies its `[[nodes]]` and `[[retired_nodes]]` ([`Node::reload_members`]); other changes need
/// a restart.
///
/// # Errors
/// Start-up failures: configuration, certificates, a store that does not
/// open (wrong master key), ports in use.
pub async fn run(
    cfg: NodeConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    config_path: Option<std::path::PathBuf>,
) -> anyhow::Result<()> {
    // Before anything slow: a SIGHUP must never find the default action
    // (termination) in place.
    let hangups = match config_path {
        Some(path) => Some((
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?,
            path,
        )),
        None => None,
    };
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
    if let Some((signals, path)) = hangups {
        tokio::spawn(reload_on_hangup(node.clone(), signals, path));
    }

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
    let signer = serve_signer(node.clone(), &cfg, wait(stop_rx.clone())).await?;
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
    tracing::info!(node = node.cfg.node_id, http = %node.cfg.listen_http, peer = %node.cfg.listen_peer, grpc = ?node.cfg.listen_grpc, "node started");
    let (g, h, s) = tokio::join!(grpc, http, signer);
    g?;
    h?;
    s?;
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
        let members = members::Members::new(&cfg.nodes, &cfg.retired_nodes)?;
        anyhow::ensure!(
            members.identity(cfg.node_id) == Some(identity.verifying_key()),
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
            members: std::sync::RwLock::new(Arc::new(members)),
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
            reshared_from: Mutex::new(HashMap::new()),
            rotations: rotation::Backoff::default(),
            epoch_commits: rotation::Backoff::default(),
            relay: relay::Relay::default(),
            relayed: limits::Counts::default(),
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
        tokio::spawn(rotation::run(self.clone()));
        Ok(())
    }
}

/// Binds `listen_grpc` (if set) and returns the `sigil.v1.Signer` server
/// (with health and reflection) to run until `stop`.
async fn serve_signer(
    node: Arc<Node>,
    cfg: &NodeConfig,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<futures::future::BoxFuture<'static, anyhow::Result<()>>> {
    use futures::FutureExt;
    use sigil_proto::signer::signer_server::SignerServer;
    let Some(addr) = cfg.listen_grpc else {
        return Ok(futures::future::ready(Ok(())).boxed());
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("grpc listener {addr}: {e}"))?;
    let mut builder = Server::builder().tcp_nodelay(true);
    if let Some(tls) = &cfg.grpc_tls {
        let read = |p: &std::path::Path| std::fs::read(p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()));
        let mut t = ServerTlsConfig::new().identity(Identity::from_pem(read(&tls.cert)?, read(&tls.key)?));
        if let Some(ca) = &tls.client_ca {
            t = t.client_ca_root(Certificate::from_pem(read(ca)?));
        }
        builder = builder.tls_config(t)?;
    }
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_serving::<SignerServer<grpc::SignerService>>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(sigil_proto::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let limit = cfg
        .max_body_bytes
        .max(crate::front::RELAY_BODY_BYTES)
        .saturating_add(4096);
    let server = builder
        .add_service(health)
        .add_service(reflection)
        .add_service(SignerServer::new(grpc::SignerService::new(node)).max_decoding_message_size(limit))
        .serve_with_incoming_shutdown(tokio_stream_listener(listener), stop);
    Ok(async move { server.await.map_err(anyhow::Error::from) }.boxed())
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

    /// The mailboxes of the external parties this node relays.
    #[must_use]
    pub fn relay(&self) -> &relay::Relay {
        &self.relay
    }

    /// The long operations this node coordinates.
    #[must_use]
    pub fn operations(&self) -> &operations::Operations {
        &self.operations
    }
}
