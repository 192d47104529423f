//! `sigil dev add-node`: grows a `sigil dev` cluster by one node, the
//! operator's procedure of the README run on loopback:
//!
//! 1. `certs::add_node` issues node `n`'s certificate (signed by the dev
//!    CA in `ca/`) and identity key (`n` is one more than the highest id).
//! 2. Node `n`'s directory and `config.toml` (node 0's settings with its
//!    own id, ports `http_port + n`, `peer_port + n`, a new master key,
//!    no seeded primes), and every node's `[[nodes]]` with `n` added.
//! 3. `SIGHUP` to the running `sigil dev` (its pid in `dev.pid`): it starts
//!    node `n` and sends `SIGHUP` to the other nodes, which reload their
//!    `[[nodes]]` without dropping a session.
//!
//! The new node holds no key until a reshare moves one to it. SQLite
//! clusters only (a PostgreSQL dev cluster would need a database for the
//! new node).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use sigil_node::config::{NodeConfig, NodeEntry};
use sigil_store::MasterKey;

/// Options of `sigil dev add-node`.
#[derive(Args, Debug, Clone)]
pub struct AddNodeArgs {
    /// Data directory of the cluster.
    #[arg(long, default_value = "./.sigil-dev")]
    pub data_dir: PathBuf,
    /// Seconds to wait for the new node to answer `/health`.
    #[arg(long, default_value_t = 30)]
    pub wait_s: u64,
}

/// The path of node `i`'s config in `data_dir`.
pub fn config_path(data_dir: &Path, i: u16) -> PathBuf {
    data_dir.join(format!("node-{i}")).join("config.toml")
}

/// The file holding the running `sigil dev`'s process id.
pub fn pid_path(data_dir: &Path) -> PathBuf {
    data_dir.join("dev.pid")
}

/// Node ids with a config in `data_dir`: `0..n` for the first missing
/// `n`.
pub fn existing_nodes(data_dir: &Path) -> u16 {
    (0u16..).find(|&i| !config_path(data_dir, i).exists()).unwrap_or(0)
}

fn read_config(path: &Path) -> anyhow::Result<NodeConfig> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parse {}", path.display()))
}

fn write_config(path: &Path, cfg: &NodeConfig) -> anyhow::Result<()> {
    cfg.validate()?;
    std::fs::write(path, toml::to_string_pretty(cfg)?).with_context(|| format!("write {}", path.display()))
}

/// `addr` with its port moved up by `by`.
fn port_plus(addr: std::net::SocketAddr, by: u16) -> anyhow::Result<std::net::SocketAddr> {
    let port = addr.port().checked_add(by).context("port out of range")?;
    Ok(std::net::SocketAddr::new(addr.ip(), port))
}

/// Node `id`'s config, from node 0's: its own identity, ports, directory,
/// master key (made once) and certificate, no seeded primes.
fn new_node_config(
    data_dir: &Path,
    template: &NodeConfig,
    id: u16,
    nodes: Vec<NodeEntry>,
) -> anyhow::Result<NodeConfig> {
    let dir = data_dir.join(format!("node-{id}"));
    std::fs::create_dir_all(&dir)?;
    let mk = dir.join("master.key");
    if !mk.exists() {
        sigil_node::certs::write_secret(&mk, MasterKey::generate().to_hex().as_bytes())?;
    }
    let certs = data_dir.join("certs");
    let paths = sigil_node::certs::node_cert_paths(&certs, id);
    let mut cfg = template.clone();
    cfg.node_id = id;
    cfg.data_dir = dir;
    cfg.listen_http = port_plus(template.listen_http, id)?;
    cfg.listen_peer = port_plus(template.listen_peer, id)?;
    cfg.listen_grpc = template.listen_grpc.map(|a| port_plus(a, id)).transpose()?;
    cfg.master_key_file = Some(mk);
    cfg.identity_key_file = sigil_node::certs::identity_key_path(&certs, id);
    cfg.tls.cert = paths.cert;
    cfg.tls.key = paths.key;
    cfg.prime_seed_file = None;
    cfg.nodes = nodes;
    Ok(cfg)
}

/// Runs `sigil dev add-node` (see the module docs).
///
/// # Errors
/// No dev cluster in `data_dir`, a PostgreSQL one, file-system or
/// certificate failures, or a new node that does not become healthy.
pub async fn run(a: AddNodeArgs) -> anyhow::Result<()> {
    let data_dir = std::fs::canonicalize(&a.data_dir)
        .with_context(|| format!("{}: no dev cluster here (run sigil dev first)", a.data_dir.display()))?;
    let template = read_config(&config_path(&data_dir, 0))?;
    anyhow::ensure!(
        template.store.kind == sigil_store::StoreKind::Sqlite,
        "sigil dev add-node grows SQLite dev clusters only"
    );
    let id = template.nodes.iter().map(|n| n.id).max().map_or(0, |m| m + 1);
    anyhow::ensure!(
        existing_nodes(&data_dir) == id,
        "node directories and [[nodes]] of node 0 disagree: expected nodes 0..{id}"
    );
    let identity_key = sigil_node::certs::add_node(
        &data_dir.join("certs"),
        &data_dir.join("ca"),
        id,
        sigil_node::certs::CERT_DAYS,
    )?;
    let entry = NodeEntry {
        id,
        peer_addr: port_plus(template.listen_peer, id)?.to_string(),
        identity_key,
    };
    let dev = running_dev(&data_dir);
    let mut nodes = template.nodes.clone();
    nodes.push(entry.clone());
    let mut cfg = new_node_config(&data_dir, &template, id, nodes)?;
    cfg.retired_nodes = template.retired_nodes.clone();
    let http = cfg.listen_http;
    write_config(&config_path(&data_dir, id), &cfg)?;
    // Each node's own list, with the new node added (a node one of them
    // retired stays retired there).
    for i in 0..id {
        let path = config_path(&data_dir, i);
        let mut c = read_config(&path)?;
        c.nodes.push(entry.clone());
        write_config(&path, &c)?;
    }
    println!("node {id}: certificate, identity key and config written; every node's [[nodes]] lists it");
    let Some(pid) = dev else {
        println!("no running sigil dev here: start it (sigil dev --data-dir ...) to run node {id}");
        return Ok(());
    };
    hangup(pid)?;
    let url = format!("http://{http}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(a.wait_s);
    anyhow::ensure!(
        super::wait_healthy(&url, deadline).await,
        "node {id} did not become healthy at {url}; see {}",
        data_dir.join(format!("node-{id}/node.log")).display()
    );
    println!("node {id}: running at {url}; it holds no key until a reshare moves one to it, e.g.");
    println!("  sigil keys reshare $KEY --parties <committee with {id}> --threshold <t'>");
    Ok(())
}

/// The pid of the `sigil dev` running in `data_dir`: from `dev.pid`, and
/// only if that process is still a `sigil dev` (a stale file after a
/// crash may name a reused pid).
fn running_dev(data_dir: &Path) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(pid_path(data_dir)).ok()?.trim().parse().ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
    let is_dev = args.first().is_some_and(|a| a.ends_with(b"sigil")) && args.iter().any(|a| *a == b"dev");
    is_dev.then_some(pid)
}

/// Sends `SIGHUP` to `pid`.
fn hangup(pid: u32) -> anyhow::Result<()> {
    let ok = std::process::Command::new("kill")
        .arg("-HUP")
        .arg(pid.to_string())
        .status()
        .is_ok_and(|s| s.success());
    anyhow::ensure!(
        ok,
        "sigil dev (pid {pid}) is not running; start it again to run the new node"
    );
    Ok(())
}
