//! `sigil dev`: a local cluster of real node processes on loopback.
//!
//! Layout of the data directory (reused on the next start, so keys stay):
//! ```text
//! ca/ca.key, ca.pem               the cluster CA (its key is kept apart from the
//!                              node keys; in production it belongs offline)
//! certs/ca.pem, node-<i>.pem, node-<i>.key
//! certs/prime-service.pem/.key a certificate for `sigil primes serve`
//! certs/node-<i>.identity.key  node i's Ed25519 identity key (attests key records)
//! certs/identities.json        every node's identity public key
//! clients/admin.key, admin.pub the admin client's key pair (private: mode 0600),
//!                              registered on every node; the CLI's default key
//! node-<i>/config.toml         rewritten at every start
//! node-<i>/master.key          the node's master key (mode 0600)
//! node-<i>/node.db             the node's SQLite store
//! node-<i>/node.log            the node's log
//! dev.pid                      the running `sigil dev`'s process id
//! ```
//!
//! A cluster grown by `sigil dev add-node` ([`add_node`]) keeps its size:
//! the next start runs every node with a config here, whatever `--nodes`
//! says (`--nodes` still splits `--prime-seed-file`).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use sigil_node::auth::{ClientEntry, Role};
use sigil_node::config::{NodeConfig, NodeEntry, TlsConfig};
use sigil_store::MasterKey;

pub mod add_node;

/// `sigil dev`: run the cluster, or `sigil dev add-node`.
#[derive(Args, Debug, Clone)]
#[command(args_conflicts_with_subcommands = true)]
pub struct DevCommand {
    /// `add-node`, or nothing to run the cluster.
    #[command(subcommand)]
    pub cmd: Option<DevCmd>,
    /// Options of the cluster.
    #[command(flatten)]
    pub args: DevArgs,
}

/// Subcommands of `sigil dev`.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum DevCmd {
    /// Add a node to the cluster (certificate, identity key, config; the
    /// running `sigil dev` starts it and the others reload `[[nodes]]`).
    AddNode(add_node::AddNodeArgs),
}

/// Options of `sigil dev`.
#[derive(Args, Debug, Clone)]
pub struct DevArgs {
    /// Number of nodes.
    #[arg(long, default_value_t = 3)]
    pub nodes: u16,
    /// Threshold used in the printed example.
    #[arg(long, default_value_t = 2)]
    pub threshold: u16,
    /// Data directory.
    #[arg(long, default_value = "./.sigil-dev")]
    pub data_dir: PathBuf,
    /// REST port of node 0; node i serves on http-port + i.
    #[arg(long, default_value_t = 7070)]
    pub http_port: u16,
    /// Peer (gRPC) port of node 0; default http-port + 100.
    #[arg(long)]
    pub peer_port: Option<u16>,
    /// Client gRPC (`sigil.v1.Signer`) port of node 0; node i serves on
    /// grpc-port + i; default http-port + 200.
    #[arg(long)]
    pub grpc_port: Option<u16>,
    /// Cluster id: the `aud` of client tokens.
    #[arg(long, default_value = "sigil-dev")]
    pub cluster_id: String,
    /// Public keys (PEM files) of more clients to register on every node,
    /// as ID=FILE with roles create and read (repeatable).
    #[arg(long = "client", value_parser = parse_client)]
    pub clients: Vec<(String, PathBuf)>,
    /// Session deadline in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    pub session_timeout_ms: u64,
    /// 1536-bit safe primes each node keeps pooled for ECDSA aux info
    /// (refilled in the background; 0 disables).
    #[arg(long, default_value_t = 2)]
    pub prime_pool_size: usize,
    /// ECDSA presignatures pooled per key and signer set (0: full protocol
    /// for every signature).
    #[arg(long, default_value_t = 4)]
    pub presign_pool_size: usize,
    /// File of 1536-bit safe primes (decimal, one a line) to seed empty
    /// pools; node i gets lines i, i + n, i + 2n, ... (no prime is shared).
    #[arg(long)]
    pub prime_seed_file: Option<PathBuf>,
    /// Where the nodes keep their data: `sqlite` (a file in each node's
    /// directory) or `postgres` (one database per node, `sigil_dev_node_<i>`,
    /// created on the server of `--postgres-url`).
    #[arg(long, value_enum, default_value_t = StoreChoice::Sqlite)]
    pub store: StoreChoice,
    /// PostgreSQL server URL for `--store postgres`, e.g.
    /// `postgres://postgres@127.0.0.1:5432/postgres`.
    #[arg(long, env = "SIGIL_DEV_POSTGRES_URL", hide_env_values = true)]
    pub postgres_url: Option<String>,
}

/// The backend of `sigil dev`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum StoreChoice {
    /// Embedded SQLite.
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

/// The `[store]` section of node `i`.
async fn store_config(args: &DevArgs, i: u16) -> anyhow::Result<sigil_store::StoreConfig> {
    match args.store {
        StoreChoice::Sqlite => Ok(sigil_store::StoreConfig::default()),
        StoreChoice::Postgres => {
            let server = args
                .postgres_url
                .as_deref()
                .context("--store postgres needs --postgres-url")?;
            let url = sigil_store::ensure_database(server, &format!("sigil_dev_node_{i}")).await?;
            Ok(sigil_store::StoreConfig::postgres(&url))
        }
    }
}

fn parse_client(s: &str) -> Result<(String, PathBuf), String> {
    let (id, file) = s.split_once('=').ok_or("expected ID=FILE")?;
    Ok((id.to_string(), PathBuf::from(file)))
}

/// The admin client's key pair in `data_dir/clients` (made once); returns
/// its public key PEM.
fn admin_client(data_dir: &Path) -> anyhow::Result<String> {
    let dir = data_dir.join("clients");
    std::fs::create_dir_all(&dir)?;
    let (key, public) = (dir.join("admin.key"), dir.join("admin.pub"));
    if !key.exists() {
        let (private, pem) = sigil_node::auth::generate_client_key(false)?;
        sigil_node::certs::write_secret(&key, private.as_bytes())?;
        std::fs::write(&public, pem)?;
    }
    Ok(std::fs::read_to_string(&public)?)
}

/// What every node's configuration shares.
struct Cluster {
    /// The certificate directory.
    certs: PathBuf,
    /// Peer port of node 0.
    peer_base: u16,
    /// The clients every node registers.
    clients: Vec<ClientEntry>,
    /// Every node of the cluster.
    nodes: Vec<NodeEntry>,
}

/// Writes the config of every node; returns their config paths.
pub async fn prepare(args: &DevArgs) -> anyhow::Result<Vec<PathBuf>> {
    anyhow::ensure!(args.nodes >= 1 && args.nodes <= 64, "--nodes must be within 1..=64");
    std::fs::create_dir_all(&args.data_dir).with_context(|| format!("create {}", args.data_dir.display()))?;
    let data_dir = std::fs::canonicalize(&args.data_dir)?;
    // A grown cluster keeps its added nodes.
    let ids: Vec<u16> = (0..args.nodes.max(add_node::existing_nodes(&data_dir))).collect();
    anyhow::ensure!(ids.len() <= 64, "at most 64 nodes");
    let certs = data_dir.join("certs");
    sigil_node::certs::init(&certs, &data_dir.join("ca"), &ids, sigil_node::certs::CERT_DAYS)?;
    let clients = client_entries(args, &data_dir)?;
    let peer_base = args.peer_port.unwrap_or(args.http_port.saturating_add(100));
    let nodes: Vec<NodeEntry> = ids
        .iter()
        .map(|&i| {
            Ok(NodeEntry {
                id: i,
                peer_addr: format!("127.0.0.1:{}", peer_base + i),
                identity_key: sigil_node::certs::identity_public(&certs, i)?,
            })
        })
        .collect::<anyhow::Result<_>>()?;
    let cluster = Cluster {
        certs,
        peer_base,
        clients,
        nodes,
    };
    let mut paths = Vec::new();
    for &i in &ids {
        paths.push(write_node_config(args, &cluster, &data_dir, i).await?);
    }
    Ok(paths)
}

/// The clients every node registers: the admin (its key pair made once)
/// and those of `--client`.
fn client_entries(args: &DevArgs, data_dir: &Path) -> anyhow::Result<Vec<ClientEntry>> {
    let mut clients = vec![ClientEntry {
        id: "admin".into(),
        public_key: admin_client(data_dir)?,
        roles: vec![Role::Admin],
    }];
    for (id, file) in &args.clients {
        clients.push(ClientEntry {
            id: id.clone(),
            public_key: std::fs::read_to_string(file).with_context(|| format!("read {}", file.display()))?,
            roles: vec![Role::Create, Role::Read],
        });
    }
    Ok(clients)
}

/// Writes node `i`'s directory, master key (made once) and checked
/// `config.toml`; returns the config's path.
async fn write_node_config(args: &DevArgs, cluster: &Cluster, data_dir: &Path, i: u16) -> anyhow::Result<PathBuf> {
    let dir = data_dir.join(format!("node-{i}"));
    std::fs::create_dir_all(&dir)?;
    let mk = dir.join("master.key");
    if !mk.exists() {
        sigil_node::certs::write_secret(&mk, MasterKey::generate().to_hex().as_bytes())?;
    }
    let certs = &cluster.certs;
    let node_certs = sigil_node::certs::node_cert_paths(certs, i);
    let cfg = NodeConfig {
        limits: Default::default(),
        rotation: Default::default(),
        store: store_config(args, i).await?,
        prime_source: Default::default(),
        node_id: i,
        data_dir: dir.clone(),
        listen_http: format!("127.0.0.1:{}", args.http_port + i).parse()?,
        listen_peer: format!("127.0.0.1:{}", cluster.peer_base + i).parse()?,
        master_key_file: Some(mk),
        cluster_id: args.cluster_id.clone(),
        identity_key_file: sigil_node::certs::identity_key_path(certs, i),
        clients: cluster.clients.clone(),
        allowed_ips: vec!["127.0.0.0/8".parse()?, "::1/128".parse()?],
        http_tls: None,
        insecure_plaintext_http: false,
        listen_grpc: Some(format!("127.0.0.1:{}", grpc_port(args) + i).parse()?),
        grpc_tls: None,
        session_timeout_ms: args.session_timeout_ms,
        external_session_timeout_ms: 120_000,
        max_body_bytes: 64 * 1024,
        aux_timeout_ms: 120_000,
        prime_pool_size: args.prime_pool_size,
        presign_pool_size: args.presign_pool_size,
        prime_seed_file: prime_seed(args, i, &dir)?,
        tls: TlsConfig {
            ca_cert: sigil_node::certs::ca_cert_path(certs),
            cert: node_certs.cert,
            key: node_certs.key,
        },
        nodes: cluster.nodes.clone(),
        retired_nodes: Vec::new(),
    };
    let path = dir.join("config.toml");
    // Nodes this node retired stay retired (and out of its nodes).
    let cfg = match std::fs::read_to_string(&path)
        .ok()
        .and_then(|t| toml::from_str::<NodeConfig>(&t).ok())
    {
        Some(old) if !old.retired_nodes.is_empty() => NodeConfig {
            nodes: cfg
                .nodes
                .into_iter()
                .filter(|n| !old.retired_nodes.iter().any(|r| r.id == n.id))
                .collect(),
            retired_nodes: old.retired_nodes,
            ..cfg
        },
        _ => cfg,
    };
    cfg.validate()?;
    std::fs::write(&path, toml::to_string_pretty(&cfg)?)?;
    Ok(path)
}

/// Node `i`'s share of `--prime-seed-file`, written to its directory
/// `dir`: lines i, i + n, i + 2n, ...; `None` without the flag.
fn prime_seed(args: &DevArgs, i: u16, dir: &Path) -> anyhow::Result<Option<PathBuf>> {
    let Some(all) = &args.prime_seed_file else {
        return Ok(None);
    };
    // Each node gets its own lines: a prime must never serve two
    // parties (they would share a Paillier modulus).
    let text = std::fs::read_to_string(all).with_context(|| format!("read {}", all.display()))?;
    let mine: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .filter(|(k, _)| k % usize::from(args.nodes) == usize::from(i))
        .map(|(_, l)| l)
        .collect();
    let path = dir.join("primes-seed.txt");
    sigil_node::certs::write_secret(&path, mine.join("\n").as_bytes())?;
    Ok(Some(path))
}

/// Starts `exe node --config cfg` (node `i`), its output appended to
/// `node.log` beside the config, without the caller's master key in its
/// environment; killed when the handle drops.
///
/// # Errors
/// The log cannot be opened or the process cannot start.
pub fn spawn_node(exe: &Path, cfg: &Path, i: usize) -> anyhow::Result<tokio::process::Child> {
    let dir = cfg.parent().map(Path::to_path_buf).unwrap_or_default();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("node.log"))?;
    tokio::process::Command::new(exe)
        .arg("node")
        .arg("--config")
        .arg(cfg)
        .env_remove("SIGIL_MASTER_KEY")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("start node {i}"))
}

/// Whether `url/health` answers 200 before `deadline`.
pub async fn wait_healthy(url: &str, deadline: tokio::time::Instant) -> bool {
    let http = reqwest::Client::new();
    while tokio::time::Instant::now() < deadline {
        if let Ok(r) = http.get(format!("{url}/health")).send().await {
            if r.status().is_success() {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// `sigil dev` and its subcommands.
///
/// # Errors
/// See [`run`] and [`add_node::run`].
pub async fn command(c: DevCommand) -> anyhow::Result<()> {
    match c.cmd {
        Some(DevCmd::AddNode(a)) => add_node::run(a).await,
        None => run(c.args).await,
    }
}

/// Runs the dev cluster until Ctrl-C / SIGTERM; on SIGHUP starts the
/// nodes `sigil dev add-node` added and has the others reload.
pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let configs = prepare(&args).await?;
    let args = DevArgs {
        nodes: u16::try_from(configs.len()).unwrap_or(u16::MAX),
        ..args
    };
    let exe = std::env::current_exe()?;
    // Environment the nodes must not inherit from the caller.
    let mut children = Vec::new();
    for (i, cfg) in configs.iter().enumerate() {
        let child = spawn_node(&exe, cfg, i)?;
        children.push(child);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    for i in 0..args.nodes {
        let url = format!("http://127.0.0.1:{}", args.http_port + i);
        if !wait_healthy(&url, deadline).await {
            let log = args.data_dir.join(format!("node-{i}")).join("node.log");
            stop(&mut children).await;
            bail!(
                "node {i} did not become healthy at {url}; last log lines of {}:\n{}",
                log.display(),
                tail(&log, 20)
            );
        }
    }
    let url0 = format!("http://127.0.0.1:{}", args.http_port);
    println!(
        "Sigil dev cluster: {} nodes, data in {}",
        args.nodes,
        args.data_dir.display()
    );
    for i in 0..args.nodes {
        println!(
            "  node {i}: http://127.0.0.1:{}  grpc 127.0.0.1:{}",
            args.http_port + i,
            grpc_port(&args) + i
        );
    }
    println!(
        "Admin client: id admin, key {} (the CLI's default; cluster id {})",
        args.data_dir.join("clients/admin.key").display(),
        args.cluster_id
    );
    println!();
    println!("Try (every request is signed by the client; `sigil token` makes one for curl):");
    println!(
        "  BODY='{{\"scheme\":\"frost-ed25519\",\"threshold\":{}}}'",
        args.threshold.min(args.nodes)
    );
    println!("  TOKEN=$(sigil token --method POST --path /v1/keys --body \"$BODY\")");
    println!(
        "  curl -s -X POST {url0}/v1/keys -H \"Authorization: Bearer $TOKEN\" -H 'content-type: application/json' -d \"$BODY\""
    );
    println!("Press Ctrl-C to stop.");
    let pid_file = add_node::pid_path(&args.data_dir);
    std::fs::write(&pid_file, std::process::id().to_string())?;
    let mut exited = None;
    let shutdown = crate::shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            i = watch_children(&mut children) => { exited = Some(i); break; }
            _ = hangups.recv() => {
                if let Err(e) = grow(&exe, &args.data_dir, &mut children) {
                    eprintln!("SIGHUP: {e:#}");
                }
            }
        }
    }
    let _ = std::fs::remove_file(&pid_file);
    stop(&mut children).await;
    if let Some(i) = exited {
        bail!(
            "node {i} exited; see {}",
            args.data_dir.join(format!("node-{i}/node.log")).display()
        );
    }
    println!("stopped");
    Ok(())
}

/// On SIGHUP: starts every node with a config beyond the running ones
/// (added by `sigil dev add-node`), then sends SIGHUP to the others so
/// that they reload `[[nodes]]`.
fn grow(exe: &Path, data_dir: &Path, children: &mut Vec<tokio::process::Child>) -> anyhow::Result<()> {
    let running = children.len();
    for i in running..usize::from(add_node::existing_nodes(data_dir)) {
        let cfg = add_node::config_path(data_dir, u16::try_from(i)?);
        children.push(spawn_node(exe, &cfg, i)?);
        println!("  node {i}: started ({})", cfg.display());
    }
    for c in children.iter().take(running) {
        if let Some(pid) = c.id() {
            let _ = std::process::Command::new("kill")
                .arg("-HUP")
                .arg(pid.to_string())
                .status();
        }
    }
    Ok(())
}

async fn watch_children(children: &mut [tokio::process::Child]) -> usize {
    loop {
        for (i, c) in children.iter_mut().enumerate() {
            if let Ok(Some(_)) = c.try_wait() {
                return i;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn stop(children: &mut [tokio::process::Child]) {
    for c in children.iter() {
        if let Some(pid) = c.id() {
            let _ = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status();
        }
    }
    for c in children.iter_mut() {
        if tokio::time::timeout(Duration::from_secs(5), c.wait()).await.is_err() {
            let _ = c.kill().await;
        }
    }
}

/// The client gRPC port of node 0.
fn grpc_port(args: &DevArgs) -> u16 {
    args.grpc_port.unwrap_or(args.http_port.saturating_add(200))
}
