//! `sigil primes serve`: the prime pool service. gRPC `prime.v1.PrimeService`
//! (plus `grpc.health.v1` and server reflection, so `grpcurl` works) over
//! mutual TLS with the cluster CA, with an optional API token.
//!
//! The pool holds sealed safe primes per bit size in a store like a node's,
//! SQLite (`primes.db` in `data_dir`, the default) or PostgreSQL, as the
//! `[store]` section chooses, sealed under the service's master key. A set
//! of pre-parameters is assembled when served: the primes it needs are
//! taken with one `DELETE ... RETURNING` (all or none), so a set is served
//! at most once and a crash never leaves half a set; after a restart the
//! pool holds exactly the primes that were fully written.
//!
//! Trust: whoever generates a party's primes knows its Paillier secret.
//! Use a remote pool only if you trust it as you trust the node.
#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use figment::providers::{Env, Format, Toml};
use figment::Figment;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sigil_crypto::preparams::{Kind, TssLibPreParams};
use sigil_crypto::primes::{self, rug::Integer};
use sigil_proto::prime::prime_service_server::{PrimeService, PrimeServiceServer};
use sigil_proto::prime::{
    pre_params, Cggmp21Primes, GetPoolStatusRequest, GetPoolStatusResponse, GetPreParamsRequest, GetPreParamsResponse,
    HealthCheckRequest, HealthCheckResponse, KindStatus, PreParams,
};
use sigil_store::Store;
use subtle::ConstantTimeEq;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status};
use zeroize::Zeroizing;

/// Certificate files of the service (PEM): the same shape as a node's
/// `tls` section, since the service runs with a certificate of the
/// cluster CA.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The cluster CA certificate (client certificates must chain to it).
    pub ca_cert: PathBuf,
    /// The service's certificate, issued by the cluster CA.
    pub cert: PathBuf,
    /// The service's private key (PKCS#8 PEM). Secret.
    pub key: PathBuf,
}

/// Most sets one `GetPreParams` call may ask for.
pub const MAX_COUNT: u32 = 16;

/// Configuration of `sigil primes serve` (TOML file; every setting also
/// from `SIGIL_PRIMES_*` environment variables, nested with `__`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PrimeServiceConfig {
    /// gRPC address (mTLS).
    pub listen: SocketAddr,
    /// Directory of the store (`primes.db`).
    pub data_dir: PathBuf,
    /// `[store]`: SQLite in `data_dir` (default) or PostgreSQL (see
    /// [`sigil_store::StoreConfig`]).
    #[serde(default)]
    pub store: sigil_store::StoreConfig,
    /// File with the 64-hex master key (or `SIGIL_MASTER_KEY`).
    #[serde(default)]
    pub master_key_file: Option<PathBuf>,
    /// SHA-256 (hex) of the API token clients send as `authorization:
    /// Bearer <token>`; none means mTLS alone.
    #[serde(default)]
    pub api_token_sha256: Option<String>,
    /// Kinds kept pooled: `cggmp21`, `tss-lib` (default both).
    #[serde(default = "default_kinds")]
    pub kinds: Vec<String>,
    /// Below this many sets of a kind, `GetPoolStatus` and `HealthCheck`
    /// report the pool as low (default 1).
    #[serde(default = "default_min")]
    pub min_pool_size: usize,
    /// The generator fills each kind up to this many sets (default 4).
    #[serde(default = "default_max")]
    pub max_pool_size: usize,
    /// The generator starts again when a kind drops below this many sets
    /// (default 2), or when a caller waits for more than the pool holds.
    #[serde(default = "default_threshold")]
    pub refill_threshold: usize,
    /// Safe-prime searches at once (default: the number of cores minus
    /// one, so serving keeps a core).
    #[serde(default = "default_concurrent")]
    pub max_concurrent: usize,
    /// Certificate files: the service's certificate and the cluster CA
    /// that client certificates must chain to.
    pub tls: TlsConfig,
}

fn default_kinds() -> Vec<String> {
    vec!["cggmp21".into(), "tss-lib".into()]
}
fn default_min() -> usize {
    1
}
fn default_max() -> usize {
    4
}
fn default_threshold() -> usize {
    2
}
fn default_concurrent() -> usize {
    // One core stays free for serving.
    std::thread::available_parallelism().map_or(1, |n| n.get().saturating_sub(1).max(1))
}

impl PrimeServiceConfig {
    /// Loads the TOML file, then `SIGIL_PRIMES_*` overrides.
    ///
    /// # Errors
    /// Unreadable file, unknown or malformed settings, invalid values.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let cfg: Self = Figment::new()
            .merge(Toml::file(path))
            .merge(
                Env::prefixed("SIGIL_PRIMES_")
                    .filter(|k| !k.as_str().eq_ignore_ascii_case("config"))
                    .split("__"),
            )
            .extract()
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks the settings.
    ///
    /// # Errors
    /// An unknown kind, sizes out of order, a malformed token hash.
    pub fn validate(&self) -> anyhow::Result<()> {
        for k in &self.kinds {
            k.parse::<Kind>()?;
        }
        anyhow::ensure!(self.max_pool_size >= 1, "max_pool_size must be at least 1");
        anyhow::ensure!(
            self.refill_threshold <= self.max_pool_size && self.min_pool_size <= self.max_pool_size,
            "need min_pool_size <= max_pool_size and refill_threshold <= max_pool_size"
        );
        anyhow::ensure!(self.max_concurrent >= 1, "max_concurrent must be at least 1");
        if let Some(h) = &self.api_token_sha256 {
            anyhow::ensure!(
                hex::decode(h).is_ok_and(|b| b.len() == 32),
                "api_token_sha256 must be 64 hex characters"
            );
        }
        Ok(())
    }
}

#[derive(Default)]
struct KindCounters {
    generating: AtomicUsize,
    generated: AtomicU64,
    served: AtomicU64,
    waiting_sets: AtomicUsize,
    times_ms: Mutex<Vec<f64>>,
}

/// A request to the per-kind taker: `count` sets' worth of primes.
struct TakeReq {
    count: usize,
    reply: tokio::sync::oneshot::Sender<Result<Option<Vec<Integer>>, Status>>,
}

/// The service state shared by the gRPC handlers and the generators.
pub struct Pool {
    /// Per kind, the queue of the task that takes primes out of the store
    /// (group commit: concurrent requests share one transaction).
    takers: Vec<tokio::sync::mpsc::Sender<TakeReq>>,
    cfg: PrimeServiceConfig,
    store: Arc<Store>,
    kinds: Vec<Kind>,
    counters: Vec<KindCounters>,
    new_prime: tokio::sync::Notify,
    token_hash: Option<[u8; 32]>,
}

impl Pool {
    fn index(&self, kind: Kind) -> Option<usize> {
        self.kinds.iter().position(|&k| k == kind)
    }

    async fn sets(&self, kind: Kind) -> usize {
        self.store.count_primes(kind.bits()).await.unwrap_or(0) / kind.primes()
    }

    /// Keeps `kind` between `refill_threshold` and `max_pool_size` sets
    /// (more while callers wait), `max_concurrent` searches across kinds.
    async fn refill(self: Arc<Self>, kind: Kind, permits: Arc<tokio::sync::Semaphore>) {
        let Some(i) = self.index(kind) else { return };
        let Some(c) = self.counters.get(i) else { return };
        let mut filling = true;
        loop {
            let pooled = self.store.count_primes(kind.bits()).await.unwrap_or(0);
            let sets = pooled / kind.primes();
            let waiting = c.waiting_sets.load(Ordering::Relaxed);
            if sets < self.cfg.refill_threshold || waiting > sets {
                filling = true;
            }
            let want = self.cfg.max_pool_size.max(waiting) * kind.primes();
            if pooled >= want {
                filling = false;
            }
            if !filling || pooled + c.generating.load(Ordering::Relaxed) >= want {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            let Ok(permit) = permits.clone().acquire_owned().await else {
                return;
            };
            c.generating.fetch_add(1, Ordering::Relaxed);
            let pool = self.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                let found = tokio::task::spawn_blocking(move || {
                    let mut rng = rand::rngs::StdRng::from_rng(rand::rngs::OsRng).ok()?;
                    let stop = std::sync::atomic::AtomicBool::new(false);
                    let stats = primes::Stats::default();
                    primes::safe_prime(kind.bits(), &mut rng, primes::SieveTable::shared(), &stop, &stats)
                        .ok()
                        .flatten()
                })
                .await
                .ok()
                .flatten();
                let Some(c) = pool.counters.get(i) else { return };
                if let Some(p) = found {
                    let text = Zeroizing::new(p.to_string().into_bytes());
                    match pool.store.put_prime(kind.bits(), &text).await {
                        Ok(()) => {
                            c.generated.fetch_add(1, Ordering::Relaxed);
                            let mut t = c.times_ms.lock().unwrap_or_else(|e| e.into_inner());
                            if t.len() >= 1000 {
                                t.remove(0);
                            }
                            t.push(started.elapsed().as_secs_f64() * 1e3);
                            drop(t);
                            pool.new_prime.notify_waiters();
                        }
                        Err(e) => tracing::error!(error = %e, "could not store a safe prime"),
                    }
                }
                c.generating.fetch_sub(1, Ordering::Relaxed);
                drop(permit);
            });
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// The taker of `kind`: drains every queued request, takes the primes
    /// of as many whole requests as the pool holds in **one** store
    /// statement (one commit, one fsync, however many callers), and hands
    /// each its share; the rest are answered `None` (pool short). Every
    /// prime is deleted before any caller sees it.
    async fn taker(self: Arc<Self>, kind: Kind, mut rx: tokio::sync::mpsc::Receiver<TakeReq>) {
        let k = kind.primes();
        while let Some(first) = rx.recv().await {
            let mut batch = vec![first];
            while let Ok(more) = rx.try_recv() {
                batch.push(more);
            }
            let pooled = self.store.count_primes(kind.bits()).await.unwrap_or(0);
            // Serve requests in arrival order while the pool covers them.
            let mut budget = pooled / k;
            let mut served = Vec::new();
            let mut short = Vec::new();
            for r in batch {
                if r.count <= budget {
                    budget -= r.count;
                    served.push(r);
                } else {
                    short.push(r);
                }
            }
            for r in short {
                let _ = r.reply.send(Ok(None));
            }
            let total: usize = served.iter().map(|r| r.count * k).sum();
            if total == 0 {
                continue;
            }
            let taken = self.store.take_primes(kind.bits(), total).await;
            let mut primes = match taken {
                Ok(Some(raw)) => {
                    let parsed: Result<Vec<Integer>, Status> = raw
                        .iter()
                        .map(|r| {
                            std::str::from_utf8(r)
                                .ok()
                                .and_then(|t| t.parse::<Integer>().ok())
                                .ok_or_else(|| Status::internal("a pooled prime is malformed"))
                        })
                        .collect();
                    match parsed {
                        Ok(p) => p.into_iter(),
                        Err(e) => {
                            for r in served {
                                let _ = r.reply.send(Err(e.clone()));
                            }
                            continue;
                        }
                    }
                }
                Ok(None) => {
                    for r in served {
                        let _ = r.reply.send(Ok(None));
                    }
                    continue;
                }
                Err(e) => {
                    for r in served {
                        let _ = r.reply.send(Err(Status::internal(format!("store: {e}"))));
                    }
                    continue;
                }
            };
            for r in served {
                let mine: Vec<Integer> = primes.by_ref().take(r.count * k).collect();
                if let Err(Ok(Some(unsent))) = r.reply.send(Ok(Some(mine))) {
                    // The caller gave up (deadline) after the delete: its
                    // primes go back to the pool rather than being lost.
                    for p in unsent {
                        let _ = self.store.put_prime(kind.bits(), p.to_string().as_bytes()).await;
                    }
                }
            }
        }
    }

    /// Takes `count` sets of `kind` (all or none) through the taker.
    async fn take(&self, kind: Kind, count: usize) -> Result<Option<Vec<PreParams>>, Status> {
        let i = self.index(kind).ok_or_else(|| Status::internal("kind"))?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.takers
            .get(i)
            .ok_or_else(|| Status::internal("taker"))?
            .send(TakeReq { count, reply: tx })
            .await
            .map_err(|_| Status::unavailable("shutting down"))?;
        let Some(ps) = rx.await.map_err(|_| Status::unavailable("shutting down"))?? else {
            return Ok(None);
        };
        let mut rng = rand::rngs::StdRng::from_rng(rand::rngs::OsRng).map_err(|e| Status::internal(e.to_string()))?;
        match kind {
            Kind::Cggmp21 => Ok(Some(cggmp21_sets(ps))),
            Kind::TssLib => self.tss_lib_sets(ps, count, &mut rng).await,
        }
    }

    /// Assembles `count` tss-lib sets from the taken primes `ps`, four at a
    /// time ([`Pool::tss_lib_set`]), and puts the primes left over back.
    /// `None` when the store ran short (the primes not yet in a set are put
    /// back).
    async fn tss_lib_sets(
        &self,
        ps: Vec<Integer>,
        count: usize,
        rng: &mut rand::rngs::StdRng,
    ) -> Result<Option<Vec<PreParams>>, Status> {
        let bits = Kind::TssLib.bits();
        let mut sets = Vec::with_capacity(count);
        let mut rest = ps;
        while sets.len() < count {
            let take = rest.len().min(4);
            let group: Vec<Integer> = rest.drain(..take).collect();
            let Some(pp) = self.tss_lib_set(group, &mut rest, rng).await? else {
                return Ok(None);
            };
            sets.push(tss_lib_message(&pp));
        }
        for p in rest {
            let _ = self.store.put_prime(bits, p.to_string().as_bytes()).await;
        }
        Ok(Some(sets))
    }

    /// One tss-lib set from `group`, its unused primes added to `rest`.
    /// When no pair of the group is far enough apart (rare), one more prime
    /// from the store; if the store has none, `group` and `rest` go back to
    /// the pool and the result is `None` (the caller waits for more).
    async fn tss_lib_set(
        &self,
        mut group: Vec<Integer>,
        rest: &mut Vec<Integer>,
        rng: &mut rand::rngs::StdRng,
    ) -> Result<Option<TssLibPreParams>, Status> {
        let bits = Kind::TssLib.bits();
        loop {
            match TssLibPreParams::from_safe_primes(group.clone(), rng) {
                Ok((pp, unused)) => {
                    rest.extend(unused);
                    return Ok(Some(pp));
                }
                // No pair far enough apart (rare): one more prime.
                Err(_) => match self
                    .store
                    .take_primes(bits, 1)
                    .await
                    .map_err(|e| Status::internal(format!("store: {e}")))?
                {
                    Some(mut more) => {
                        let extra = more.pop().ok_or_else(|| Status::internal("empty take"))?;
                        let text =
                            std::str::from_utf8(&extra).map_err(|_| Status::internal("a pooled prime is malformed"))?;
                        group.push(text.parse().map_err(|_| Status::internal("malformed prime"))?);
                    }
                    None => {
                        // Put the primes back; the caller waits for more.
                        for p in group.iter().chain(rest.iter()) {
                            let _ = self.store.put_prime(bits, p.to_string().as_bytes()).await;
                        }
                        return Ok(None);
                    }
                },
            }
        }
    }

    fn authorize<T>(&self, req: &Request<T>) -> Result<(), Status> {
        let Some(want) = &self.token_hash else { return Ok(()) };
        let token = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| Status::unauthenticated("an API token is required (authorization: Bearer <token>)"))?;
        let h: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if bool::from(h.ct_eq(want)) {
            Ok(())
        } else {
            Err(Status::unauthenticated("wrong API token"))
        }
    }
}

/// CGGMP21 sets from taken primes, two at a time (`p`, `q`).
fn cggmp21_sets(ps: Vec<Integer>) -> Vec<PreParams> {
    let mut sets = Vec::with_capacity(ps.len() / 2);
    let mut it = ps.into_iter();
    while let (Some(p), Some(q)) = (it.next(), it.next()) {
        sets.push(PreParams {
            params: Some(pre_params::Params::Cggmp21(Cggmp21Primes {
                p: p.to_string(),
                q: q.to_string(),
            })),
        });
    }
    sets
}

/// The wire form of a tss-lib set.
fn tss_lib_message(pp: &TssLibPreParams) -> PreParams {
    PreParams {
        params: Some(pre_params::Params::TssLib(sigil_proto::prime::TssLibPreParams {
            paillier_n: pp.n.to_string(),
            paillier_lambda_n: pp.lambda_n.to_string(),
            paillier_phi_n: pp.phi_n.to_string(),
            paillier_p: pp.paillier_p.to_string(),
            paillier_q: pp.paillier_q.to_string(),
            n_tilde: pp.n_tilde.to_string(),
            h1: pp.h1.to_string(),
            h2: pp.h2.to_string(),
            alpha: pp.alpha.to_string(),
            beta: pp.beta.to_string(),
            p: pp.p.to_string(),
            q: pp.q.to_string(),
            tss_lib_json: pp.to_tss_lib_json().to_string(),
        })),
    }
}

/// The longest wait a caller's `grpc-timeout` can ask for.
const MAX_DEADLINE: Duration = Duration::from_secs(600);

/// The deadline a caller set (`grpc-timeout`, clamped to
/// [`MAX_DEADLINE`]), or 30 s when it set none or an unreadable one. A
/// peer-chosen value never overflows (`Instant + Duration` would panic).
fn deadline_of<T>(req: &Request<T>) -> Duration {
    req.metadata()
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_grpc_timeout)
        .map_or(Duration::from_secs(30), |d| d.min(MAX_DEADLINE))
}

/// A `grpc-timeout` value (digits and a unit: `H M S m u n`), saturating.
fn parse_grpc_timeout(v: &str) -> Option<Duration> {
    let (num, unit) = v.split_at(v.len().checked_sub(1)?);
    if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = num.parse().unwrap_or(u64::MAX);
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The gRPC handlers.
pub struct PrimeSvc(Arc<Pool>);

#[tonic::async_trait]
impl PrimeService for PrimeSvc {
    async fn get_pre_params(
        &self,
        req: Request<GetPreParamsRequest>,
    ) -> Result<Response<GetPreParamsResponse>, Status> {
        let pool = &self.0;
        pool.authorize(&req)?;
        let deadline = Instant::now() + deadline_of(&req);
        let r = req.into_inner();
        if r.count == 0 || r.count > MAX_COUNT {
            return Err(Status::invalid_argument(format!("count must be 1 to {MAX_COUNT}")));
        }
        let kind: Kind = r.kind.parse().map_err(|e| Status::invalid_argument(format!("{e}")))?;
        let i = pool
            .index(kind)
            .ok_or_else(|| Status::invalid_argument(format!("this service does not pool {}", kind.as_str())))?;
        let count = usize::try_from(r.count).unwrap_or(usize::MAX);
        if count > pool.cfg.max_pool_size {
            return Err(Status::invalid_argument(format!(
                "count {count} is above this pool's capacity ({} sets)",
                pool.cfg.max_pool_size
            )));
        }
        let c = pool.counters.get(i).ok_or_else(|| Status::internal("counters"))?;
        c.waiting_sets.fetch_add(count, Ordering::Relaxed);
        let result = loop {
            let notified = pool.new_prime.notified();
            match pool.take(kind, count).await {
                Ok(Some(sets)) => break Ok(sets),
                Ok(None) => {}
                Err(e) => break Err(e),
            }
            let now = Instant::now();
            if now >= deadline {
                break Err(Status::deadline_exceeded(format!(
                    "the pool holds {} {} sets, {count} asked; the generator did not catch up before the deadline",
                    pool.sets(kind).await,
                    kind.as_str()
                )));
            }
            let _ = tokio::time::timeout((deadline - now).min(Duration::from_millis(500)), notified).await;
        };
        c.waiting_sets.fetch_sub(count, Ordering::Relaxed);
        let sets = result?;
        c.served.fetch_add(sets.len() as u64, Ordering::Relaxed);
        tracing::info!(kind = kind.as_str(), count, "served pre-parameters");
        Ok(Response::new(GetPreParamsResponse { sets }))
    }

    async fn get_pool_status(
        &self,
        req: Request<GetPoolStatusRequest>,
    ) -> Result<Response<GetPoolStatusResponse>, Status> {
        let pool = &self.0;
        pool.authorize(&req)?;
        let mut kinds = Vec::new();
        for (k, c) in pool.kinds.iter().zip(&pool.counters) {
            let mut t = c.times_ms.lock().unwrap_or_else(|e| e.into_inner()).clone();
            t.sort_by(f64::total_cmp);
            kinds.push(KindStatus {
                kind: k.as_str().into(),
                pool_size: u32::try_from(pool.sets(*k).await).unwrap_or(u32::MAX),
                generating: u32::try_from(c.generating.load(Ordering::Relaxed)).unwrap_or(u32::MAX),
                total_generated: c.generated.load(Ordering::Relaxed),
                total_served: c.served.load(Ordering::Relaxed),
                generation_p50_ms: t.get(t.len() / 2).copied().unwrap_or(0.0),
            });
        }
        Ok(Response::new(GetPoolStatusResponse { kinds }))
    }

    async fn health_check(&self, req: Request<HealthCheckRequest>) -> Result<Response<HealthCheckResponse>, Status> {
        let pool = &self.0;
        pool.authorize(&req)?;
        let mut low = Vec::new();
        for k in &pool.kinds {
            if pool.sets(*k).await < pool.cfg.min_pool_size {
                low.push(k.as_str());
            }
        }
        let status = if low.is_empty() {
            "SERVING".to_string()
        } else {
            format!("SERVING (pool low: {})", low.join(", "))
        };
        Ok(Response::new(HealthCheckResponse { status }))
    }
}

/// Runs the service until `shutdown` resolves.
///
/// # Errors
/// Start-up failures: master key, store, certificates, the port.
pub async fn run(
    cfg: PrimeServiceConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let master = sigil_store::MasterKey::load(cfg.master_key_file.as_deref())?;
    std::fs::create_dir_all(&cfg.data_dir)?;
    let store = sigil_store::open(&cfg.store, &cfg.data_dir, "primes.db", &master).await?;
    drop(master);
    let read = |p: &Path| std::fs::read(p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()));
    let ca = Certificate::from_pem(read(&cfg.tls.ca_cert)?);
    let identity = Identity::from_pem(read(&cfg.tls.cert)?, read(&cfg.tls.key)?);
    let kinds: Vec<Kind> = cfg.kinds.iter().map(|k| k.parse()).collect::<Result<_, _>>()?;
    let token_hash = match &cfg.api_token_sha256 {
        Some(h) => {
            let b = hex::decode(h)?;
            Some(<[u8; 32]>::try_from(b.as_slice()).map_err(|_| anyhow::anyhow!("api_token_sha256"))?)
        }
        None => None,
    };
    // Build the sieve table before serving (about 50 ms).
    tokio::task::spawn_blocking(primes::SieveTable::shared).await?;
    let mut receivers = Vec::new();
    let mut takers = Vec::new();
    for _ in &kinds {
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        takers.push(tx);
        receivers.push(rx);
    }
    let pool = Arc::new(Pool {
        takers,
        counters: kinds.iter().map(|_| KindCounters::default()).collect(),
        kinds: kinds.clone(),
        store: Arc::new(store),
        new_prime: tokio::sync::Notify::new(),
        token_hash,
        cfg: cfg.clone(),
    });
    let permits = Arc::new(tokio::sync::Semaphore::new(cfg.max_concurrent));
    for (k, rx) in kinds.into_iter().zip(receivers) {
        tokio::spawn(pool.clone().refill(k, permits.clone()));
        tokio::spawn(pool.clone().taker(k, rx));
    }
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_serving::<PrimeServiceServer<PrimeSvc>>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(sigil_proto::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    tracing::info!(listen = %cfg.listen, "prime service listening (mTLS)");
    Server::builder()
        .tls_config(ServerTlsConfig::new().identity(identity).client_ca_root(ca))?
        .add_service(health)
        .add_service(reflection)
        .add_service(PrimeServiceServer::new(PrimeSvc(pool)))
        .serve_with_shutdown(cfg.listen, shutdown)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_huge_grpc_timeout_is_clamped_not_a_panic() {
        let mut req = tonic::Request::new(());
        let v = tonic::metadata::MetadataValue::from_static("99999999H");
        req.metadata_mut().insert("grpc-timeout", v);
        let d = super::deadline_of(&req);
        assert_eq!(d, super::MAX_DEADLINE);
        let _ = std::time::Instant::now() + d;
        assert!(super::parse_grpc_timeout("184467440737095516150n").is_some());
        assert_eq!(
            super::parse_grpc_timeout("5m"),
            Some(std::time::Duration::from_millis(5))
        );
        assert_eq!(super::parse_grpc_timeout("-5S"), None);
        assert_eq!(super::parse_grpc_timeout("S"), None);
    }
}
