//! `sigil bench soak`: mixed load (key generation, FROST and ECDSA
//! signing, Paillier decryption) against a local cluster of real node
//! processes (the `sigil dev` layout, in its own data directory) while a
//! chaos loop `kill -9`s, `SIGSTOP`s and restarts random nodes, never more
//! than `n - t` at once.
//!
//! At the end every node is brought back and the run checks what a
//! custody operator cares about: every returned signature verifies with
//! the independent verifiers (`ed25519-dalek`, `k256`, `p256`), every
//! plaintext is the one encrypted, every key made is on every node and
//! still signs (or decrypts), no nonce appears twice (no presignature was
//! served twice), and no node panicked. It prints the counts as a
//! Markdown table and fails (exit code 1) when any check does.
//!
//! Failures a client sees while nodes are down are counted by kind, not
//! fatal: an unreachable door node, 503 (`party_unavailable`, `busy`,
//! `store_unavailable`), 504 (`party_timeout`). Any other status (a 500,
//! a 4xx, a 502 naming a party: no party lies here) is fatal.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use rand::seq::SliceRandom;
use rand::Rng;
use serde_json::{json, Value};
use sigil_crypto::Scheme;
use sigil_paillier::rug::Integer;

use crate::client::Client;
use crate::dev::{self, DevArgs};
use crate::schemes::{self, Family, Use};

/// Options of `sigil bench soak`.
#[derive(Args, Debug, Clone)]
pub struct SoakArgs {
    /// Length of the loaded, chaotic phase, in minutes (fractions allowed).
    #[arg(long, default_value_t = 2.0)]
    pub minutes: f64,
    /// Number of nodes.
    #[arg(long, default_value_t = 3)]
    pub nodes: u16,
    /// Signers (and decrypting parties) per key, `t`.
    #[arg(long, default_value_t = 2)]
    pub threshold: u16,
    /// Data directory for the cluster (default: a new directory under the
    /// system's temp dir). Kept afterwards: the node logs are there.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// REST port of node 0; node i serves on http-port + i.
    #[arg(long, default_value_t = 7370)]
    pub http_port: u16,
    /// Peer (gRPC) port of node 0; default http-port + 100.
    #[arg(long)]
    pub peer_port: Option<u16>,
    /// Concurrent clients.
    #[arg(long, default_value_t = 4)]
    pub workers: usize,
    /// Milliseconds between chaos actions.
    #[arg(long, default_value_t = 3000)]
    pub chaos_every_ms: u64,
    /// No chaos: load only (for comparison).
    #[arg(long)]
    pub no_chaos: bool,
    /// Bits of the Paillier keys.
    #[arg(long, default_value_t = 1024)]
    pub paillier_bits: u32,
    /// Session deadline of the nodes, in milliseconds.
    #[arg(long, default_value_t = 4000)]
    pub session_timeout_ms: u64,
    /// 1536-bit safe primes to seed the nodes' pools (ECDSA aux info), as
    /// for `sigil dev`.
    #[arg(long)]
    pub prime_seed_file: Option<PathBuf>,
}

/// The node processes and what the chaos loop did to each.
struct Cluster {
    exe: PathBuf,
    configs: Vec<PathBuf>,
    children: Vec<Option<tokio::process::Child>>,
    /// What each node is now; the load's clients use the `Up` ones.
    state: Arc<Mutex<Vec<NodeState>>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NodeState {
    Up,
    Killed,
    Stopped,
}

impl Cluster {
    fn start(&mut self, i: usize) -> anyhow::Result<()> {
        let cfg = self.configs.get(i).context("no such node")?;
        let child = dev::spawn_node(&self.exe, cfg, i)?;
        if let Some(slot) = self.children.get_mut(i) {
            *slot = Some(child);
        }
        self.set(i, NodeState::Up);
        Ok(())
    }

    fn set(&self, i: usize, s: NodeState) {
        if let Some(x) = self.state.lock().unwrap_or_else(|p| p.into_inner()).get_mut(i) {
            *x = s;
        }
    }

    fn pid(&self, i: usize) -> Option<u32> {
        self.children.get(i)?.as_ref()?.id()
    }

    fn signal(&self, i: usize, sig: &str) {
        if let Some(pid) = self.pid(i) {
            let _ = std::process::Command::new("kill")
                .arg(sig)
                .arg(pid.to_string())
                .status();
        }
    }

    async fn kill9(&mut self, i: usize) {
        if let Some(Some(c)) = self.children.get_mut(i) {
            let _ = c.start_kill();
            let _ = c.wait().await;
        }
        self.set(i, NodeState::Killed);
    }

    /// Brings node `i` back: `SIGCONT` or a restart.
    fn revive(&mut self, i: usize) -> anyhow::Result<()> {
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner()).get(i).copied();
        match s {
            Some(NodeState::Stopped) => {
                self.signal(i, "-CONT");
                self.set(i, NodeState::Up);
            }
            Some(NodeState::Killed) => self.start(i)?,
            _ => {}
        }
        Ok(())
    }

    async fn stop_all(&mut self) {
        for i in 0..self.children.len() {
            self.signal(i, "-CONT");
            self.signal(i, "-TERM");
        }
        for c in self.children.iter_mut().flatten() {
            if tokio::time::timeout(Duration::from_secs(5), c.wait()).await.is_err() {
                let _ = c.kill().await;
            }
        }
    }
}

/// A key the load uses: id, scheme, public key (and `N` for Paillier).
#[derive(Clone)]
struct Key {
    id: String,
    scheme: Scheme,
    public_key: Vec<u8>,
    paillier: Option<sigil_paillier::decrypt::PublicKey>,
}

impl Key {
    fn from_view(v: &Value) -> anyhow::Result<Key> {
        let id = v["key_id"].as_str().context("no key_id")?.to_string();
        let scheme: Scheme = v["scheme"].as_str().context("no scheme")?.parse()?;
        if schemes::operation(scheme) == Use::Decrypt {
            let n: Integer = v["n"].as_str().context("no n")?.parse()?;
            return Ok(Key {
                id,
                scheme,
                public_key: Vec::new(),
                paillier: Some(sigil_paillier::decrypt::PublicKey::new(n, Integer::from(1), 1, 0)),
            });
        }
        let public_key = hex::decode(v["public_key"].as_str().context("no public_key")?)?;
        Ok(Key {
            id,
            scheme,
            public_key,
            paillier: None,
        })
    }
}

/// Counts of the run.
#[derive(Default)]
struct Stats {
    /// Per operation: (requests, succeeded).
    ops: BTreeMap<String, (usize, usize)>,
    /// Tolerated failures by kind.
    failures: BTreeMap<String, usize>,
    /// Fatal findings, with detail.
    fatal: Vec<String>,
    signatures_verified: usize,
    plaintexts_checked: usize,
    /// Every signature's nonce part (`R` or `r`), by key.
    nonces: HashSet<(String, Vec<u8>)>,
    duplicate_nonces: usize,
    faults: BTreeMap<&'static str, usize>,
}

type Shared<T> = Arc<Mutex<T>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Whether a failed request is what a client expects while nodes are
/// down; the kind it is counted under.
fn classify(status: u16, body: &Value) -> (bool, String) {
    let code = body["error"]["code"].as_str().unwrap_or("").to_string();
    let tolerated = matches!(
        (status, code.as_str()),
        (503, "party_unavailable" | "busy" | "store_unavailable") | (504, "party_timeout")
    );
    (tolerated, format!("{status} {code}"))
}

/// The operations of the mix, with their weights (out of 100).
const MIX: &[(&str, u32)] = &[
    ("keygen", 4),
    ("sign frost", 40),
    ("sign ecdsa", 36),
    ("decrypt paillier", 20),
];

/// The request a worker sends: (operation label, path, body, the key and
/// what to check the answer against).
struct Request {
    op: String,
    path: String,
    body: Value,
    key: Option<Key>,
    message: Vec<u8>,
    plaintext: Option<Integer>,
}

fn pick_request(keys: &[Key], paillier_bits: u32, threshold: u16) -> Option<Request> {
    let mut rng = rand::thread_rng();
    let total: u32 = MIX.iter().map(|(_, w)| w).sum();
    let mut r = rng.gen_range(0..total);
    let op = MIX.iter().find(|(_, w)| {
        let hit = r < *w;
        r = r.saturating_sub(*w);
        hit
    })?;
    let of = |f: &dyn Fn(Scheme) -> bool| -> Option<Key> {
        let ks: Vec<&Key> = keys.iter().filter(|k| f(k.scheme)).collect();
        ks.choose(&mut rand::thread_rng()).map(|k| (*k).clone())
    };
    match op.0 {
        "keygen" => {
            // A Paillier key now and then; mostly the signing schemes.
            let pool: &[Scheme] = if rng.gen_range(0..10) == 0 {
                &schemes::DECRYPTING_SCHEMES
            } else {
                &schemes::SIGNING_SCHEMES
            };
            let scheme = pool.choose(&mut rng).copied().unwrap_or(Scheme::FrostEd25519);
            Some(Request {
                op: format!("keygen {scheme}"),
                path: "/v1/keys".into(),
                body: keygen_body(scheme, threshold, paillier_bits),
                key: None,
                message: Vec::new(),
                plaintext: None,
            })
        }
        "decrypt paillier" => request_for(&of(&|s| schemes::operation(s) == Use::Decrypt)?),
        label => {
            let family = if label == "sign ecdsa" {
                Family::Ecdsa
            } else {
                Family::Frost
            };
            request_for(&of(&|s| schemes::family(s) == family)?)
        }
    }
}

/// The body of a key generation request (with `bits` where the scheme
/// takes it).
fn keygen_body(scheme: Scheme, threshold: u16, paillier_bits: u32) -> Value {
    let mut body = json!({"scheme": scheme.as_str(), "threshold": threshold});
    if schemes::keygen_takes_bits(scheme) {
        body["bits"] = json!(paillier_bits);
    }
    body
}

/// A sign (or decrypt) request with `key`.
fn request_for(key: &Key) -> Option<Request> {
    let mut rng = rand::thread_rng();
    if let Some(pk) = &key.paillier {
        let m = Integer::from(rng.gen::<u64>());
        let c = pk.encrypt(&m, &mut rand::rngs::OsRng).ok()?;
        return Some(Request {
            op: "decrypt paillier".into(),
            path: format!("/v1/keys/{}/decrypt", key.id),
            body: json!({"ciphertext": c.to_string()}),
            key: Some(key.clone()),
            message: Vec::new(),
            plaintext: Some(m),
        });
    }
    let mut message = vec![0u8; 32];
    rng.fill(&mut message[..]);
    Some(Request {
        op: format!("sign {}", key.scheme.as_str()),
        path: format!("/v1/keys/{}/sign", key.id),
        body: json!({"message": hex::encode(&message)}),
        key: Some(key.clone()),
        message,
        plaintext: None,
    })
}

/// Checks a 2xx answer; returns a fatal finding or `None`.
fn check_answer(req: &Request, v: &Value, stats: &mut Stats, keys: &Shared<Vec<Key>>) -> Option<String> {
    if req.path == "/v1/keys" {
        return match Key::from_view(v) {
            Ok(k) => {
                lock(keys).push(k);
                None
            }
            Err(e) => Some(format!("{}: malformed key view: {e}", req.op)),
        };
    }
    let key = req.key.as_ref()?;
    if let Some(m) = &req.plaintext {
        stats.plaintexts_checked += 1;
        return (v["plaintext"].as_str() != Some(m.to_string().as_str()))
            .then(|| format!("{}: wrong plaintext {} for {m}", req.op, v["plaintext"]));
    }
    let sig = match v["signature"].as_str().map(hex::decode) {
        Some(Ok(s)) if s.len() > 32 => s,
        _ => return Some(format!("{}: no signature in {v}", req.op)),
    };
    if let Err(e) = key.scheme.verify(&key.public_key, &req.message, &sig) {
        return Some(format!("{}: signature does not verify: {e}", req.op));
    }
    stats.signatures_verified += 1;
    // The nonce part: R (FROST) or r (ECDSA), all but the last 32 bytes.
    let nonce = sig.get(..sig.len() - 32).unwrap_or_default().to_vec();
    if !stats.nonces.insert((key.id.clone(), nonce)) {
        stats.duplicate_nonces += 1;
        return Some(format!("{}: a nonce was used twice with key {}", req.op, key.id));
    }
    None
}

/// One client: requests until `until` through a node the chaos loop has
/// not taken down.
async fn worker(
    clients: Arc<Vec<Client>>,
    state: Shared<Vec<NodeState>>,
    keys: Shared<Vec<Key>>,
    stats: Shared<Stats>,
    until: Instant,
    a: SoakArgs,
) {
    while Instant::now() < until {
        let up: Vec<usize> = lock(&state)
            .iter()
            .enumerate()
            .filter(|(_, s)| **s == NodeState::Up)
            .map(|(i, _)| i)
            .collect();
        let Some(&door) = up.choose(&mut rand::thread_rng()) else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let snapshot = lock(&keys).clone();
        let Some(req) = pick_request(&snapshot, a.paillier_bits, a.threshold) else {
            continue;
        };
        let timeout = if req.path == "/v1/keys" {
            Duration::from_secs(300)
        } else {
            Duration::from_millis(a.session_timeout_ms * 4 + 5000)
        };
        let Some(client) = clients.get(door) else { continue };
        let answer = client.post_raw(&req.path, &req.body, timeout).await;
        let mut s = lock(&stats);
        let entry = s.ops.entry(req.op.clone()).or_default();
        entry.0 += 1;
        match answer {
            Ok((status, v)) if (200..300).contains(&status) => {
                if let Some(f) = check_answer(&req, &v, &mut s, &keys) {
                    s.fatal.push(f);
                } else if let Some(e) = s.ops.get_mut(&req.op) {
                    e.1 += 1;
                }
            }
            Ok((status, v)) => {
                let (tolerated, kind) = classify(status, &v);
                if tolerated {
                    *s.failures.entry(kind).or_default() += 1;
                } else {
                    s.fatal.push(format!("{} via node {door}: {kind}: {v}", req.op));
                }
            }
            Err(kind) => *s.failures.entry(format!("no answer ({kind})")).or_default() += 1,
        }
    }
}

/// The chaos loop: every `every`, takes one more node down (kill -9 or
/// SIGSTOP) if fewer than `n - t` are down, or brings one back.
async fn chaos(cluster: &mut Cluster, stats: &Shared<Stats>, until: Instant, every: Duration, max_down: usize) {
    let mut down: Vec<(usize, Instant)> = Vec::new();
    while Instant::now() < until {
        tokio::time::sleep(every).await;
        let now = Instant::now();
        // Bring back the nodes whose time is up.
        let (back, still): (Vec<_>, Vec<_>) = down.iter().partition(|(_, at)| *at <= now);
        down = still;
        for (i, at) in back {
            if cluster.revive(i).is_ok() {
                *lock(stats).faults.entry("revived").or_default() += 1;
            } else {
                down.push((i, at));
            }
        }
        if down.len() >= max_down {
            continue;
        }
        let up: Vec<usize> = (0..cluster.configs.len())
            .filter(|i| !down.iter().any(|(d, _)| d == i))
            .collect();
        let (victim, kill, secs) = {
            let mut rng = rand::thread_rng();
            (up.choose(&mut rng).copied(), rng.gen_bool(0.5), rng.gen_range(1..=4u64))
        };
        let Some(v) = victim else { continue };
        if kill {
            cluster.kill9(v).await;
            *lock(stats).faults.entry("kill -9").or_default() += 1;
        } else {
            cluster.signal(v, "-STOP");
            cluster.set(v, NodeState::Stopped);
            *lock(stats).faults.entry("SIGSTOP").or_default() += 1;
        }
        down.push((v, now + Duration::from_secs(secs)));
    }
    for (i, _) in down {
        let _ = cluster.revive(i);
    }
}

/// The first keys: one per scheme.
async fn initial_keys(client: &Client, a: &SoakArgs) -> anyhow::Result<Vec<Key>> {
    let mut keys = Vec::new();
    for s in schemes::all() {
        let body = keygen_body(s, a.threshold, a.paillier_bits);
        let (status, v) = client
            .post_raw("/v1/keys", &body, Duration::from_secs(600))
            .await
            .map_err(|e| anyhow::anyhow!("create a {s} key: {e}"))?;
        anyhow::ensure!(status == 201, "create a {s} key: {status} {v}");
        keys.push(Key::from_view(&v)?);
    }
    Ok(keys)
}

/// After the chaos: every key is on every node and still signs or
/// decrypts (a few tries: the nodes have just come back). Returns the
/// keys that did not.
async fn check_keys(clients: &[Client], keys: &[Key], stats: &Shared<Stats>, a: &SoakArgs) -> Vec<String> {
    let mut lost = Vec::new();
    for k in keys {
        for (i, c) in clients.iter().enumerate() {
            let path = format!("/v1/keys/{}", k.id);
            if !matches!(c.get_raw(&path, Duration::from_secs(10)).await, Ok((200, _))) {
                lost.push(format!("key {} missing on node {i}", k.id));
            }
        }
        let mut ok = false;
        let mut last = String::new();
        for attempt in 0..10 {
            let Some(req) = request_for(k) else {
                break;
            };
            let c = &clients[attempt % clients.len()];
            let timeout = Duration::from_millis(a.session_timeout_ms * 4 + 5000);
            match c.post_raw(&req.path, &req.body, timeout).await {
                Ok((status, v)) if (200..300).contains(&status) => {
                    let mut s = lock(stats);
                    let dummy = Arc::new(Mutex::new(Vec::new()));
                    match check_answer(&req, &v, &mut s, &dummy) {
                        None => ok = true,
                        Some(f) => s.fatal.push(f),
                    }
                    break;
                }
                Ok((status, v)) => last = format!("node {}: {status} {v}", attempt % clients.len()),
                Err(e) => last = format!("node {}: no answer ({e})", attempt % clients.len()),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        if !ok {
            lost.push(format!(
                "key {} ({}) no longer signs or decrypts; last: {last}",
                k.id,
                k.scheme.as_str()
            ));
        }
    }
    lost
}

/// `panicked` lines in the node logs.
fn panics(data_dir: &Path, n: u16) -> Vec<String> {
    (0..n)
        .flat_map(|i| {
            let log = std::fs::read_to_string(data_dir.join(format!("node-{i}/node.log"))).unwrap_or_default();
            log.lines()
                .filter(|l| l.contains("panicked"))
                .map(|l| format!("node {i}: {l}"))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Runs the soak; see the module docs.
///
/// # Errors
/// The cluster does not start, or a check fails.
pub async fn run(a: SoakArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        a.threshold >= 2 && a.threshold <= a.nodes,
        "need 2 <= threshold <= nodes"
    );
    let data_dir = a.data_dir.clone().unwrap_or_else(|| {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        std::env::temp_dir().join(format!("sigil-soak-{}-{secs}", std::process::id()))
    });
    let dev_args = DevArgs {
        nodes: a.nodes,
        threshold: a.threshold,
        data_dir: data_dir.clone(),
        http_port: a.http_port,
        peer_port: a.peer_port,
        grpc_port: None,
        cluster_id: "sigil-soak".into(),
        clients: Vec::new(),
        session_timeout_ms: a.session_timeout_ms,
        prime_pool_size: 2,
        presign_pool_size: 4,
        prime_seed_file: a.prime_seed_file.clone(),
        store: dev::StoreChoice::Sqlite,
        postgres_url: None,
    };
    let configs = dev::prepare(&dev_args).await?;
    let n = configs.len();
    let mut cluster = Cluster {
        exe: std::env::current_exe()?,
        configs,
        children: (0..n).map(|_| None).collect(),
        state: Arc::new(Mutex::new(vec![NodeState::Up; n])),
    };
    for i in 0..n {
        cluster.start(i)?;
    }
    let result = soak(&mut cluster, &a, &data_dir).await;
    cluster.stop_all().await;
    eprintln!("node logs: {}", data_dir.display());
    result
}

async fn soak(cluster: &mut Cluster, a: &SoakArgs, data_dir: &Path) -> anyhow::Result<()> {
    let auth = crate::client::AuthArgs {
        client_id: "admin".into(),
        client_key: data_dir.join("clients/admin.key"),
        cluster_id: "sigil-soak".into(),
    };
    let tokens = crate::client::tokens(&auth)?;
    let urls: Vec<String> = (0..a.nodes)
        .map(|i| format!("http://127.0.0.1:{}", a.http_port + i))
        .collect();
    let clients: Arc<Vec<Client>> = Arc::new(urls.iter().map(|u| Client::with_url(u, tokens.clone())).collect());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    for u in &urls {
        anyhow::ensure!(dev::wait_healthy(u, deadline).await, "{u} did not become healthy");
    }
    let first = clients.first().context("no nodes")?;
    let keys = Arc::new(Mutex::new(initial_keys(first, a).await?));
    eprintln!(
        "soak: {} keys made; {} minutes of load and chaos",
        lock(&keys).len(),
        a.minutes
    );
    let stats: Shared<Stats> = Arc::default();
    let started = Instant::now();
    let until = started + Duration::from_secs_f64(a.minutes * 60.0);
    let workers: Vec<_> = (0..a.workers.max(1))
        .map(|_| {
            tokio::spawn(worker(
                clients.clone(),
                cluster.state.clone(),
                keys.clone(),
                stats.clone(),
                until,
                a.clone(),
            ))
        })
        .collect();
    let max_down = usize::from(a.nodes - a.threshold);
    if a.no_chaos || max_down == 0 {
        tokio::time::sleep_until(until.into()).await;
    } else {
        chaos(
            cluster,
            &stats,
            until,
            Duration::from_millis(a.chaos_every_ms),
            max_down,
        )
        .await;
    }
    for w in workers {
        let _ = w.await;
    }
    let loaded = started.elapsed();
    // Every node back, then the end checks.
    for i in 0..cluster.configs.len() {
        cluster.revive(i)?;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    for u in &urls {
        anyhow::ensure!(dev::wait_healthy(u, deadline).await, "{u} did not come back");
    }
    let all_keys = lock(&keys).clone();
    let lost = check_keys(&clients, &all_keys, &stats, a).await;
    let panicked = panics(data_dir, a.nodes);
    let s = lock(&stats);
    report(&s, a, loaded, all_keys.len(), &lost, &panicked);
    if !s.fatal.is_empty() || !lost.is_empty() || !panicked.is_empty() || s.duplicate_nonces > 0 {
        for f in s.fatal.iter().chain(&lost).chain(&panicked).take(20) {
            eprintln!("FAIL: {f}");
        }
        bail!("the soak found problems (above)");
    }
    Ok(())
}

fn report(s: &Stats, a: &SoakArgs, loaded: Duration, keys: usize, lost: &[String], panicked: &[String]) {
    println!(
        "soak: {} nodes, t = {}, {} workers, {:.1} min of load{}",
        a.nodes,
        a.threshold,
        a.workers,
        loaded.as_secs_f64() / 60.0,
        if a.no_chaos { ", no chaos" } else { " with chaos" }
    );
    println!();
    println!("| operation | requests | succeeded |");
    println!("|---|---:|---:|");
    let (mut req, mut ok) = (0, 0);
    for (op, (r, o)) in &s.ops {
        println!("| {op} | {r} | {o} |");
        req += r;
        ok += o;
    }
    println!("| **all** | **{req}** | **{ok}** |");
    println!();
    println!("| finding | count |");
    println!("|---|---:|");
    for (f, c) in &s.faults {
        println!("| fault injected: {f} | {c} |");
    }
    for (k, c) in &s.failures {
        println!("| failed request (tolerated): {k} | {c} |");
    }
    println!(
        "| signatures verified (independent verifiers) | {} |",
        s.signatures_verified
    );
    println!("| plaintexts checked | {} |", s.plaintexts_checked);
    println!("| keys checked on every node afterwards | {keys} |");
    println!("| keys lost | {} |", lost.len());
    println!("| nonces used twice | {} |", s.duplicate_nonces);
    println!("| node panics | {} |", panicked.len());
    println!("| fatal findings | {} |", s.fatal.len());
}
