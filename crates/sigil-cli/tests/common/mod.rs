//! The end-to-end harness: real `sigil node` processes on loopback, each
//! with its own data directory, config, master key and mTLS certificate,
//! driven through the REST API. Shared by the e2e test files.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    dead_code,
    missing_docs
)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sha2::Digest;
use sigil_crypto::Scheme;
use sigil_node::auth::{ClientEntry, ClientSigner, Role};
use sigil_node::config::{NodeConfig, NodeEntry, TlsConfig};

pub const SESSION_TIMEOUT_MS: u64 = 10_000;
/// The cluster id (token audience) of test clusters.
pub const CLUSTER_ID: &str = "e2e";

/// The clients of a test cluster: `admin` (Ed25519, role admin), `alice`
/// (P-256, create and read), `bob` (Ed25519, read only).
pub const CLIENTS: [(&str, bool, &[Role]); 3] = [
    ("admin", false, &[Role::Admin]),
    ("alice", true, &[Role::Create, Role::Read]),
    ("bob", false, &[Role::Read]),
];

/// Writes the key pairs of [`CLIENTS`] to `dir/clients/<id>.key`; returns
/// their config entries.
pub fn make_clients(dir: &std::path::Path) -> Vec<ClientEntry> {
    let cdir = dir.join("clients");
    std::fs::create_dir_all(&cdir).unwrap();
    CLIENTS
        .iter()
        .map(|&(id, p256, roles)| {
            let (sk, pk) = sigil_node::auth::generate_client_key(p256).unwrap();
            std::fs::write(cdir.join(format!("{id}.key")), sk.as_bytes()).unwrap();
            ClientEntry {
                id: id.into(),
                public_key: pk,
                roles: roles.to_vec(),
            }
        })
        .collect()
}

/// Client `id`'s signer, from `dir/clients/<id>.key`.
pub fn signer(dir: &std::path::Path, id: &str) -> ClientSigner {
    ClientSigner::load(id, &dir.join(format!("clients/{id}.key"))).unwrap()
}

/// A token of client `id` (key in `dir`) for `aud`: a write token over
/// `body` (GET: a read token).
pub fn token_in(dir: &std::path::Path, aud: &str, id: &str, method: &str, path: &str, body: Option<&str>) -> String {
    let ttl = if body.is_some() { 300 } else { 600 };
    signer(dir, id)
        .token(aud, method, path, body.map(str::as_bytes), ttl)
        .unwrap()
}

/// The primes (decimal, one a line) of fixture `name` in `tests/fixtures`.
pub fn fixture_primes(name: &str) -> Vec<String> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A block of `len` consecutive ports that are free now (nodes of a dev
/// cluster listen on `base + i`; separate random ports could overlap
/// another range's `+ i`). Drawn below Linux's ephemeral range (32768 and
/// up), where no outgoing connection takes a port between this check and
/// the nodes' bind.
pub fn free_port_block(len: u16) -> u16 {
    use rand::Rng;
    loop {
        let base: u16 = rand::thread_rng().gen_range(20_000..32_000 - len);
        let held: Vec<_> = (base..base + len)
            .map_while(|p| std::net::TcpListener::bind(("127.0.0.1", p)).ok())
            .collect();
        if held.len() == usize::from(len) {
            return base;
        }
    }
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub configs: Vec<PathBuf>,
    pub http: Vec<u16>,
    pub procs: Vec<Option<Child>>,
    pub http_client: reqwest::Client,
}

impl Cluster {
    /// `n` nodes, each with a presignature pool of 2.
    pub fn new(n: u16) -> Self {
        Self::with_presign_pool(n, 2)
    }

    /// `n` nodes with a presignature pool of `presign_pool_size` each
    /// (0: no background presigning).
    pub fn with_presign_pool(n: u16, presign_pool_size: usize) -> Self {
        Self::with_stores(n, presign_pool_size, vec![Default::default(); usize::from(n)])
    }

    /// `n` nodes, node `i` on `stores[i]` (SQLite by default, or PostgreSQL).
    pub fn with_stores(n: u16, presign_pool_size: usize, stores: Vec<sigil_store::StoreConfig>) -> Self {
        // Two primes of the fixture per node, never shared.
        let all = fixture_primes("primes-1536.txt");
        let seeds = (0..usize::from(n))
            .map(|i| all.iter().skip(2 * i).take(2).cloned().collect())
            .collect();
        Self::build(n, presign_pool_size, stores, seeds, &|_| {})
    }

    /// `n` nodes without presignature pools, each config changed by
    /// `tweak` first.
    pub fn with_config(n: u16, tweak: &dyn Fn(&mut NodeConfig)) -> Self {
        Self::build(n, 0, vec![Default::default(); usize::from(n)], Vec::new(), tweak)
    }

    /// `n` SQLite nodes without presignature pools, node `i` seeded with
    /// the safe primes `seeds[i]` (decimal).
    pub fn with_seeds(n: u16, seeds: Vec<Vec<String>>) -> Self {
        Self::with_seeds_and_config(n, seeds, &|_| {})
    }

    /// [`Cluster::with_seeds`], each config changed by `tweak` first.
    pub fn with_seeds_and_config(n: u16, seeds: Vec<Vec<String>>, tweak: &dyn Fn(&mut NodeConfig)) -> Self {
        Self::build(n, 0, vec![Default::default(); usize::from(n)], seeds, tweak)
    }

    fn build(
        n: u16,
        presign_pool_size: usize,
        stores: Vec<sigil_store::StoreConfig>,
        seeds: Vec<Vec<String>>,
        tweak: &dyn Fn(&mut NodeConfig),
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let certs = dir.path().join("certs");
        let ids: Vec<u16> = (0..n).collect();
        sigil_node::certs::init(&certs, &dir.path().join("ca"), &ids, 30).unwrap();
        let clients = make_clients(dir.path());
        let http: Vec<u16> = ids.iter().map(|_| free_port()).collect();
        let peer: Vec<u16> = ids.iter().map(|_| free_port()).collect();
        let nodes: Vec<NodeEntry> = ids
            .iter()
            .map(|&i| NodeEntry {
                id: i,
                peer_addr: format!("127.0.0.1:{}", peer[usize::from(i)]),
                identity_key: sigil_node::certs::identity_public(&certs, i).unwrap(),
            })
            .collect();
        let mut configs = Vec::new();
        for &i in &ids {
            let nd = dir.path().join(format!("node-{i}"));
            std::fs::create_dir_all(&nd).unwrap();
            let seed = nd.join("primes.txt");
            let mine = seeds.get(usize::from(i)).cloned().unwrap_or_default();
            std::fs::write(&seed, mine.join("\n")).unwrap();
            let mk = nd.join("master.key");
            std::fs::write(&mk, sigil_store::MasterKey::generate().to_hex().as_bytes()).unwrap();
            let c = sigil_node::certs::node_cert_paths(&certs, i);
            let mut cfg = NodeConfig {
                limits: Default::default(),
                // Looked for often, so a test key with a short interval
                // rotates within a second of being due.
                rotation: sigil_node::config::RotationConfig {
                    check_ms: 300,
                    min_interval_s: 1,
                    ..Default::default()
                },
                store: stores[usize::from(i)].clone(),
                prime_source: Default::default(),
                node_id: i,
                data_dir: nd.clone(),
                listen_http: format!("127.0.0.1:{}", http[usize::from(i)]).parse().unwrap(),
                listen_peer: format!("127.0.0.1:{}", peer[usize::from(i)]).parse().unwrap(),
                master_key_file: Some(mk),
                cluster_id: CLUSTER_ID.into(),
                identity_key_file: sigil_node::certs::identity_key_path(&certs, i),
                clients: clients.clone(),
                allowed_ips: vec!["127.0.0.0/8".parse().unwrap()],
                http_tls: None,
                insecure_plaintext_http: false,
                listen_grpc: None,
                grpc_tls: None,
                session_timeout_ms: SESSION_TIMEOUT_MS,
                external_session_timeout_ms: 120_000,
                max_body_bytes: 64 * 1024,
                aux_timeout_ms: 120_000,
                prime_pool_size: 0,
                presign_pool_size,
                prime_seed_file: Some(seed.clone()),
                tls: TlsConfig {
                    ca_cert: sigil_node::certs::ca_cert_path(&certs),
                    cert: c.cert,
                    key: c.key,
                },
                nodes: nodes.clone(),
                retired_nodes: Vec::new(),
            };
            tweak(&mut cfg);
            let path = nd.join("config.toml");
            std::fs::write(&path, toml::to_string(&cfg).unwrap()).unwrap();
            configs.push(path);
        }
        let mut c = Cluster {
            dir,
            configs,
            http,
            procs: Vec::new(),
            http_client: reqwest::Client::new(),
        };
        for i in 0..n {
            let p = c.spawn(i, None);
            c.procs.push(Some(p));
        }
        c
    }

    pub fn spawn(&self, i: u16, master_key_env: Option<&str>) -> Child {
        let log = std::fs::File::create(self.dir.path().join(format!("node-{i}.{}.log", now_ms()))).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sigil"));
        cmd.arg("node").arg("--config").arg(&self.configs[usize::from(i)]);
        cmd.env_remove("SIGIL_MASTER_KEY");
        if let Some(k) = master_key_env {
            cmd.env("SIGIL_MASTER_KEY", k);
        }
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap()
    }

    pub fn url(&self, i: u16) -> String {
        format!("http://127.0.0.1:{}", self.http[usize::from(i)])
    }

    pub async fn wait_healthy(&self, i: u16) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(r) = self.http_client.get(format!("{}/health", self.url(i))).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("node {i} not healthy");
    }

    pub fn kill9(&mut self, i: u16) {
        if let Some(mut p) = self.procs[usize::from(i)].take() {
            p.kill().unwrap(); // SIGKILL
            p.wait().unwrap();
        }
    }

    pub async fn restart(&mut self, i: u16) {
        let p = self.spawn(i, None);
        self.procs[usize::from(i)] = Some(p);
        self.wait_healthy(i).await;
    }

    pub fn signal(&self, i: u16, sig: &str) {
        let pid = self.procs[usize::from(i)].as_ref().unwrap().id();
        assert!(Command::new("kill")
            .arg(sig)
            .arg(pid.to_string())
            .status()
            .unwrap()
            .success());
        if sig == "-STOP" {
            // Wait until every thread of the node has actually stopped.
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                let stopped = std::fs::read_dir(format!("/proc/{pid}/task"))
                    .unwrap()
                    .filter_map(|t| t.ok())
                    .all(|t| {
                        std::fs::read_to_string(t.path().join("stat"))
                            .map(|s| s.rsplit(')').next().unwrap_or("").trim_start().starts_with('T'))
                            .unwrap_or(true)
                    });
                if stopped {
                    break;
                }
                assert!(Instant::now() < deadline, "node {i} did not stop");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    /// A token of client `id` for `method path` over `body`.
    pub fn token(&self, id: &str, method: &str, path: &str, body: Option<&str>) -> String {
        token_in(self.dir.path(), CLUSTER_ID, id, method, path, body)
    }

    /// One request with `token` (raw, as given) as bearer.
    pub async fn call(
        &self,
        i: u16,
        method: &str,
        path: &str,
        body: Option<String>,
        token: Option<&str>,
    ) -> (u16, Value) {
        let url = format!("{}{path}", self.url(i));
        let mut req = match method {
            "GET" => self.http_client.get(url),
            _ => self.http_client.post(url).header("content-type", "application/json"),
        };
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        if let Some(b) = body {
            req = req.body(b);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// A request signed by the admin client.
    pub async fn api(&self, i: u16, method: &str, path: &str, body: Value) -> (u16, Value) {
        self.api_as("admin", i, method, path, body).await
    }

    /// A request signed by client `id`.
    pub async fn api_as(&self, id: &str, i: u16, method: &str, path: &str, body: Value) -> (u16, Value) {
        let b = if method == "GET" { None } else { Some(body.to_string()) };
        let t = self.token(id, method, path, b.as_deref());
        self.call(i, method, path, b, Some(&t)).await
    }

    /// The environment for a `sigil` CLI command acting as client `id`.
    pub fn cli_env(&self, id: &str) -> Vec<(String, String)> {
        vec![
            ("SIGIL_CLIENT_ID".into(), id.into()),
            (
                "SIGIL_CLIENT_KEY".into(),
                self.dir.path().join(format!("clients/{id}.key")).display().to_string(),
            ),
            ("SIGIL_CLUSTER_ID".into(), CLUSTER_ID.into()),
        ]
    }

    pub async fn create(&self, i: u16, scheme: &str, t: u16) -> Value {
        let (s, v) = self
            .api(i, "POST", "/v1/keys", json!({"scheme": scheme, "threshold": t}))
            .await;
        assert_eq!(s, 201, "create {scheme}: {v}");
        v
    }

    /// A `bits`-bit threshold Paillier key, `t` parties to decrypt, made
    /// through node `i`.
    pub async fn create_paillier(&self, i: u16, t: u16, bits: u32) -> Value {
        let (s, v) = self
            .api(
                i,
                "POST",
                "/v1/keys",
                json!({"scheme": "paillier", "threshold": t, "bits": bits}),
            )
            .await;
        assert_eq!(s, 201, "create a {bits}-bit paillier key: {v}");
        v
    }

    /// Signs `msg` (ECDSA: its SHA-256 digest) and verifies the result.
    pub async fn sign_ok(&self, i: u16, key: &Value, msg: &[u8]) -> Value {
        let scheme: Scheme = key["scheme"].as_str().unwrap().parse().unwrap();
        let msg: Vec<u8> = if scheme.is_ecdsa() {
            sha2::Sha256::digest(msg).to_vec()
        } else {
            msg.to_vec()
        };
        let id = key["key_id"].as_str().unwrap();
        let (s, v) = self
            .api(
                i,
                "POST",
                &format!("/v1/keys/{id}/sign"),
                json!({"message": hex::encode(&msg)}),
            )
            .await;
        assert_eq!(s, 200, "sign via node {i}: {v}");
        let pk = hex::decode(key["public_key"].as_str().unwrap()).unwrap();
        let sig = hex::decode(v["signature"].as_str().unwrap()).unwrap();
        scheme.verify(&pk, &msg, &sig).unwrap();
        if scheme.is_ecdsa() {
            let der = hex::decode(v["der"].as_str().unwrap()).unwrap();
            assert_eq!(der.first(), Some(&0x30), "DER sequence");
            let rid = v["recovery_id"].as_u64().unwrap();
            assert!(rid < 2);
            if scheme == Scheme::EcdsaSecp256k1 {
                // ecrecover: the key comes back from (digest, r || s, recovery id).
                let sig = k256::ecdsa::Signature::from_slice(&sig).unwrap();
                let rid8 = k256::ecdsa::RecoveryId::from_byte(u8::try_from(rid).unwrap()).unwrap();
                let rec = k256::ecdsa::VerifyingKey::recover_from_prehash(&msg, &sig, rid8).unwrap();
                assert_eq!(rec.to_encoded_point(true).as_bytes(), pk.as_slice());
                assert_eq!(v["v"].as_u64(), Some(27 + rid));
            }
        }
        v
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // Show what the nodes said: the test's directory is deleted next.
            let mut logs: Vec<_> = std::fs::read_dir(self.dir.path())
                .into_iter()
                .flatten()
                .filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
                .collect();
            logs.sort_by_key(|e| e.file_name());
            for e in logs {
                let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                let lines: Vec<&str> = text.lines().filter(|l| !l.contains(" INFO ")).collect();
                eprintln!("--- {} (warnings and errors, last 30)", e.file_name().to_string_lossy());
                for l in &lines[lines.len().saturating_sub(30)..] {
                    eprintln!("{l}");
                }
            }
        }
        for p in self.procs.iter_mut().flatten() {
            let _ = p.kill();
            let _ = p.wait();
        }
    }
}

/// A node's store opened beside the running node (SQLite allows it), with
/// its backend's test hooks.
pub struct NodeStore {
    pub store: sigil_store::Store,
    pub backend: std::sync::Arc<sigil_store::SqliteBackend>,
}

impl std::ops::Deref for NodeStore {
    type Target = sigil_store::Store;
    fn deref(&self) -> &sigil_store::Store {
        &self.store
    }
}

/// Opens the store of the node whose data directory is `dir`, with its
/// master key.
pub async fn open_store(dir: &std::path::Path) -> NodeStore {
    let mk = std::fs::read_to_string(dir.join("master.key")).unwrap();
    let mk = sigil_store::MasterKey::from_hex(mk.trim()).unwrap();
    let backend = std::sync::Arc::new(sigil_store::SqliteBackend::open(&dir.join("node.db")).await.unwrap());
    let store = sigil_store::Store::new(backend.clone(), &mk).await.unwrap();
    NodeStore { store, backend }
}

pub fn now_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

pub fn assert_error(status: u16, v: &Value, want_status: u16, what: &str) {
    assert_eq!(status, want_status, "{what}: {v}");
    assert!(
        v["error"]["code"].is_string() && v["error"]["message"].is_string(),
        "{what}: JSON error body, got {v}"
    );
}

/// POST `body` to `url` + `path` signed by the admin client of the
/// `sigil dev` cluster in `data_dir` (usable from a spawned task).
pub async fn dev_post(data_dir: &std::path::Path, url: &str, path: &str, body: &Value) -> (u16, Value) {
    let b = body.to_string();
    let t = token_in(data_dir, "sigil-dev", "admin", "POST", path, Some(&b));
    let r = reqwest::Client::new()
        .post(format!("{url}{path}"))
        .header("authorization", format!("Bearer {t}"))
        .header("content-type", "application/json")
        .body(b)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// A `sigil dev` process (the front-door command; its nodes are its child
/// processes), in `data_dir`, with no background pools. Stopped with
/// SIGINT, as a user would, on drop.
pub struct DevCluster {
    child: Child,
    data_dir: PathBuf,
    nodes: u16,
    /// Node 0's REST port; node `i` listens on `http + i`.
    pub http: u16,
    /// Node 0's gRPC (`sigil.v1.Signer`) port; node `i` on `grpc + i`.
    pub grpc: u16,
}

impl DevCluster {
    /// Starts `nodes` nodes (threshold 2) with the extra environment
    /// `env`, and waits until every node answers /health.
    pub async fn start(nodes: u16, data_dir: &std::path::Path, env: &[(&str, String)]) -> Self {
        std::fs::create_dir_all(data_dir).unwrap();
        // REST, peer and gRPC ranges of 8 nodes each (room to add nodes),
        // in one block of free ports.
        let http = free_port_block(24);
        let (peer, grpc) = (http + 8, http + 16);
        let child = Command::new(env!("CARGO_BIN_EXE_sigil"))
            .args(["dev", "--nodes", &nodes.to_string(), "--threshold", "2"])
            .args(["--prime-pool-size", "0", "--presign-pool-size", "0"])
            .args([
                "--http-port",
                &http.to_string(),
                "--peer-port",
                &peer.to_string(),
                "--grpc-port",
                &grpc.to_string(),
            ])
            .arg("--data-dir")
            .arg(data_dir)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(data_dir.join("dev.log")).unwrap())
            .spawn()
            .unwrap();
        let dev = DevCluster {
            child,
            data_dir: data_dir.to_path_buf(),
            nodes,
            http,
            grpc,
        };
        let web = reqwest::Client::new();
        let start = Instant::now();
        for i in 0..nodes {
            while web.get(format!("{}/health", dev.url(i))).send().await.is_err() {
                assert!(
                    start.elapsed() < Duration::from_secs(60),
                    "dev cluster did not start\n{}",
                    dev.logs()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        dev
    }

    /// Node `i`'s REST base URL.
    pub fn url(&self, i: u16) -> String {
        format!("http://127.0.0.1:{}", self.http + i)
    }

    /// POST `body` to node `i` signed by the admin client `sigil dev` made.
    pub async fn post(&self, i: u16, path: &str, body: &Value) -> (u16, Value) {
        dev_post(&self.data_dir, &self.url(i), path, body).await
    }

    /// `sigil dev add-node` on this cluster (the running `sigil dev`
    /// starts the node); asserts it succeeded and returns its stdout.
    pub fn add_node(&mut self) -> String {
        let out = Command::new(env!("CARGO_BIN_EXE_sigil"))
            .args(["dev", "add-node", "--data-dir"])
            .arg(&self.data_dir)
            .output()
            .unwrap();
        self.nodes += 1;
        assert!(
            out.status.success(),
            "add-node: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.logs()
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Sends `SIGHUP` to the `sigil dev` process (it starts added nodes
    /// and has every node reload its `[[nodes]]`).
    pub fn hangup(&self) {
        assert!(Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .unwrap()
            .success());
    }

    /// Node `i`'s config file.
    pub fn config_path(&self, i: u16) -> PathBuf {
        self.data_dir.join(format!("node-{i}/config.toml"))
    }

    /// GET `path` on node `i` signed by the admin client.
    pub async fn get(&self, i: u16, path: &str) -> (u16, Value) {
        let t = token_in(&self.data_dir, "sigil-dev", "admin", "GET", path, None);
        let r = reqwest::Client::new()
            .get(format!("{}{path}", self.url(i)))
            .header("authorization", format!("Bearer {t}"))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// The environment for a `sigil` CLI command as the admin client.
    pub fn cli_env(&self) -> Vec<(String, String)> {
        vec![(
            "SIGIL_CLIENT_KEY".into(),
            self.data_dir.join("clients/admin.key").display().to_string(),
        )]
    }

    /// `sigil dev`'s log and every node's, concatenated.
    pub fn logs(&self) -> String {
        std::iter::once("dev.log".to_string())
            .chain((0..self.nodes).map(|i| format!("node-{i}/node.log")))
            .map(|f| std::fs::read_to_string(self.data_dir.join(f)).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for DevCluster {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

/// Checks that the gRPC server behind `ch` reports `service` serving
/// (`grpc.health.v1`) and lists it through server reflection, as grpcurl
/// finds services.
pub async fn assert_served_with_health_and_reflection(ch: tonic::transport::Channel, service: &str) {
    use tonic_reflection::pb::v1::{
        server_reflection_client::ServerReflectionClient, server_reflection_request::MessageRequest,
        server_reflection_response::MessageResponse, ServerReflectionRequest,
    };
    let health = tonic_health::pb::health_client::HealthClient::new(ch.clone())
        .check(tonic_health::pb::HealthCheckRequest {
            service: service.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        health.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = ServerReflectionClient::new(ch)
        .server_reflection_info(tokio_stream::iter(vec![req]))
        .await
        .unwrap()
        .into_inner();
    let resp = stream.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = resp.message_response else {
        panic!("reflection: {resp:?}")
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(names.iter().any(|n| n == service), "{names:?}");
}
