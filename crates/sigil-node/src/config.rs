//! Node configuration: a TOML file, every setting also from `SIGIL_*`
//! environment variables (nested with `__`, e.g. `SIGIL_TLS__CERT`).
//! Defaults live in this module only; [`NodeConfig::validate`] runs at
//! start-up.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

/// One node of the cluster as the others reach it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NodeEntry {
    /// Node id (0-based); the node's certificate names it as DNS SAN
    /// `node-<id>`.
    pub id: u16,
    /// `host:port` of the node's peer gRPC endpoint.
    pub peer_addr: String,
    /// The node's Ed25519 identity public key, 64 hex characters (made by
    /// `sigil certs init` beside its certificate); key records must carry
    /// its signature when the node is a party.
    pub identity_key: String,
}

/// TLS of the REST listener (PEM files).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HttpTls {
    /// Certificate chain, leaf first.
    pub cert: PathBuf,
    /// Private key (PKCS#8 PEM). Secret.
    pub key: PathBuf,
}

/// TLS of the gRPC `sigil.v1.Signer` listener (PEM files).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct GrpcTls {
    /// Certificate chain, leaf first.
    pub cert: PathBuf,
    /// Private key (PKCS#8 PEM). Secret.
    pub key: PathBuf,
    /// CA of client certificates: when set, every caller must present one
    /// it issued (mutual TLS), on top of its signed token.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
}

/// Automatic key rotation (`[rotation]`): keys created with `"rotate":
/// true` get `interval_s` in their policy and are refreshed when their
/// epoch is that old (see `crate::rotation`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct RotationConfig {
    /// Rotation interval given to new rotating keys, in seconds (default
    /// 86 400: daily, as the TEE-DAO system reshares). Every node of a
    /// cluster must use the same value (it is part of the attested record).
    pub interval_s: u64,
    /// How often a node looks for keys due, in milliseconds (default
    /// 30 000).
    pub check_ms: u64,
    /// The shortest rotation interval a client may ask for, in seconds
    /// (default 600: a reshare costs every party a session).
    pub min_interval_s: u64,
}

impl Default for RotationConfig {
    fn default() -> Self {
        Self {
            interval_s: 86_400,
            check_ms: 30_000,
            min_interval_s: 600,
        }
    }
}

/// Certificate files of the node (PEM).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The cluster CA certificate.
    pub ca_cert: PathBuf,
    /// This node's certificate, issued by the cluster CA.
    pub cert: PathBuf,
    /// This node's private key (PKCS#8 PEM). Secret.
    pub key: PathBuf,
}

/// Where a node's aux-info safe primes come from.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum PrimeSource {
    /// The node's own sealed pool, refilled in the background (default).
    #[default]
    Local,
    /// A `sigil primes serve` service, reached over mTLS with this node's
    /// certificate. Trust: that service knows the node's Paillier secret;
    /// use it only if you trust it as you trust the node.
    Remote {
        /// `https://host:port` of the service.
        url: String,
        /// The name the service's certificate carries
        /// (`sigil-prime-service` for the one `sigil certs init` makes).
        server_name: String,
        /// File holding the service's API token, if it requires one.
        #[serde(default)]
        api_token_file: Option<PathBuf>,
    },
}

/// Everything a node needs to start.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// This node's id; must appear in `nodes`.
    pub node_id: u16,
    /// Directory of the node's SQLite store (`node.db`) and other files.
    pub data_dir: PathBuf,
    /// `[store]`: `kind = "sqlite"` (default, `data_dir/node.db`) or
    /// `kind = "postgres"` with `url` or `url_file`, `pool_size`,
    /// `startup_timeout_s` (see [`sigil_store::StoreConfig`]).
    #[serde(default)]
    pub store: sigil_store::StoreConfig,
    /// Address of the REST API.
    #[serde(default = "default_listen_http")]
    pub listen_http: SocketAddr,
    /// Address of the peer gRPC endpoint (mTLS).
    pub listen_peer: SocketAddr,
    /// File holding the 64-hex-character master key; used when
    /// `SIGIL_MASTER_KEY` is not set.
    #[serde(default)]
    pub master_key_file: Option<PathBuf>,
    /// The cluster's id: the `aud` every client token must carry (1 to 64
    /// characters).
    pub cluster_id: String,
    /// This node's Ed25519 identity key (PKCS#8 PEM, secret), with which it
    /// attests key records; its public key is this node's
    /// `nodes[].identity_key`.
    pub identity_key_file: PathBuf,
    /// The clients this node trusts (`[[clients]] id, public_key,
    /// roles`); each operator lists them independently.
    #[serde(default)]
    pub clients: Vec<crate::auth::ClientEntry>,
    /// Source addresses allowed on the REST API, as CIDRs (default
    /// loopback only: `127.0.0.0/8` and `::1/128`). Others get a 403.
    #[serde(default = "default_allowed_ips")]
    pub allowed_ips: Vec<ipnet::IpNet>,
    /// TLS for the REST listener (optional).
    #[serde(default)]
    pub http_tls: Option<HttpTls>,
    /// Address of the gRPC `sigil.v1.Signer` API (with `grpc.health.v1`
    /// and reflection); none (the default): not served.
    #[serde(default)]
    pub listen_grpc: Option<SocketAddr>,
    /// TLS (optionally mutual) of the gRPC listener.
    #[serde(default)]
    pub grpc_tls: Option<GrpcTls>,
    /// Allow a non-loopback `listen_http` without `http_tls`, or
    /// `listen_grpc` without `grpc_tls` (default false: such a config does
    /// not start).
    #[serde(default)]
    pub insecure_plaintext_http: bool,
    /// Deadline of a protocol session, in milliseconds (default 10 000).
    #[serde(default = "default_session_timeout_ms")]
    pub session_timeout_ms: u64,
    /// Deadline of a session with an external party (a client's
    /// `sigil-client`, relayed by the coordinator: a phone is slow), in
    /// milliseconds (default 120 000).
    #[serde(default = "default_external_session_timeout_ms")]
    pub external_session_timeout_ms: u64,
    /// Largest accepted REST request body, in bytes (default 65 536).
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Deadline of a CGGMP21 aux info session, in milliseconds (default
    /// 120 000: seconds of CPU per party).
    #[serde(default = "default_aux_timeout_ms")]
    pub aux_timeout_ms: u64,
    /// Safe primes (1536-bit) the node keeps pooled for aux info, refilled
    /// in the background (default 2, one aux run; 0 disables refilling).
    #[serde(default = "default_prime_pool_size")]
    pub prime_pool_size: usize,
    /// Development and tests only: a file of 1536-bit safe primes
    /// (decimal, one a line, e.g. from `openssl prime -generate -safe`)
    /// imported into the pool at start-up. Each prime is imported once
    /// ever (remembered by hash), and the file must be this node's own:
    /// the same primes on two nodes would let each factor the other's
    /// Paillier modulus (such aux info is refused).
    #[serde(default)]
    pub prime_seed_file: Option<PathBuf>,
    /// Where aux-info primes come from: `{ kind = "local" }` (default) or
    /// `{ kind = "remote", url, server_name, api_token_file? }`.
    #[serde(default)]
    pub prime_source: PrimeSource,
    /// ECDSA presignatures kept per key and signer set, refilled in the
    /// background by the set's lowest node id (default 4; 0 disables the
    /// pool, so every signature runs the full protocol).
    #[serde(default = "default_presign_pool_size")]
    pub presign_pool_size: usize,
    /// `[limits]`: sessions per kind running and queued, sessions per
    /// peer, and the peer server's stream and message limits
    /// ([`crate::limits::LimitsConfig`]).
    #[serde(default)]
    pub limits: crate::limits::LimitsConfig,
    /// `[rotation]`: automatic refresh of keys created with `"rotate":
    /// true` ([`RotationConfig`]).
    #[serde(default)]
    pub rotation: RotationConfig,
    /// Certificate files.
    pub tls: TlsConfig,
    /// Every node of the cluster, this one included.
    pub nodes: Vec<NodeEntry>,
    /// Nodes taken out of the cluster (`[[retired_nodes]] id,
    /// identity_key`): never peers again, and their ids never come back;
    /// their identity keys still check the key records they attested in
    /// earlier epochs. A node leaves `nodes` only by moving here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retired_nodes: Vec<RetiredNode>,
}

/// A node that left the cluster (see [`NodeConfig::retired_nodes`]).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RetiredNode {
    /// Its node id, never used again.
    pub id: u16,
    /// Its Ed25519 identity public key, 64 hex characters.
    pub identity_key: String,
}

/// Top-level fields, the only `SIGIL_*` variables read as configuration
/// (others, such as `SIGIL_LOG` or `SIGIL_MASTER_KEY`, are not settings).
const CONFIG_FIELDS: [&str; 27] = [
    "store",
    "rotation",
    "limits",
    "cluster_id",
    "identity_key_file",
    "clients",
    "allowed_ips",
    "http_tls",
    "insecure_plaintext_http",
    "listen_grpc",
    "grpc_tls",
    "prime_source",
    "presign_pool_size",
    "aux_timeout_ms",
    "prime_pool_size",
    "prime_seed_file",
    "node_id",
    "data_dir",
    "listen_http",
    "listen_peer",
    "master_key_file",
    "session_timeout_ms",
    "external_session_timeout_ms",
    "max_body_bytes",
    "tls",
    "nodes",
    "retired_nodes",
];

fn default_listen_http() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7070))
}
fn default_allowed_ips() -> Vec<ipnet::IpNet> {
    ["127.0.0.0/8", "::1/128"]
        .iter()
        .filter_map(|c| c.parse().ok())
        .collect()
}
fn default_session_timeout_ms() -> u64 {
    10_000
}
fn default_external_session_timeout_ms() -> u64 {
    120_000
}
fn default_max_body_bytes() -> usize {
    64 * 1024
}
fn default_aux_timeout_ms() -> u64 {
    120_000
}
fn default_prime_pool_size() -> usize {
    2
}
fn default_presign_pool_size() -> usize {
    4
}

impl NodeConfig {
    /// Loads `path` (TOML) and overlays `SIGIL_*` environment variables.
    ///
    /// # Errors
    /// A message naming the file or variable that does not parse.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let cfg: NodeConfig = Figment::new()
            .merge(Toml::file_exact(path))
            .merge(
                Env::prefixed("SIGIL_")
                    .filter(|k| {
                        let top = k.as_str().split("__").next().unwrap_or_default();
                        CONFIG_FIELDS.iter().any(|f| top.eq_ignore_ascii_case(f))
                    })
                    .split("__"),
            )
            .extract()
            .map_err(|e| anyhow::anyhow!("config {}: {e}", path.display()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks the configuration as a whole.
    ///
    /// # Errors
    /// What is wrong, in one line.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(!self.nodes.is_empty(), "nodes: at least one node is required");
        let mut ids: Vec<u16> = self.nodes.iter().map(|n| n.id).collect();
        ids.sort_unstable();
        ids.dedup();
        anyhow::ensure!(ids.len() == self.nodes.len(), "nodes: duplicate node id");
        anyhow::ensure!(ids.contains(&self.node_id), "node_id {} is not in nodes", self.node_id);
        anyhow::ensure!(
            !self.cluster_id.is_empty() && self.cluster_id.len() <= 64,
            "cluster_id must be 1 to 64 characters"
        );
        crate::members::Members::new(&self.nodes, &self.retired_nodes)?;
        anyhow::ensure!(
            self.listen_http.ip().is_loopback() || self.http_tls.is_some() || self.insecure_plaintext_http,
            "listen_http {} is not a loopback address: set http_tls, or insecure_plaintext_http = true to serve plaintext",
            self.listen_http
        );
        if let Some(addr) = self.listen_grpc {
            anyhow::ensure!(
                addr.ip().is_loopback() || self.grpc_tls.is_some() || self.insecure_plaintext_http,
                "listen_grpc {addr} is not a loopback address: set grpc_tls, or insecure_plaintext_http = true to serve plaintext"
            );
        }
        anyhow::ensure!(
            (100..=600_000).contains(&self.session_timeout_ms),
            "session_timeout_ms must be within 100..=600000 (milliseconds)"
        );
        anyhow::ensure!(
            (100..=3_600_000).contains(&self.external_session_timeout_ms),
            "external_session_timeout_ms must be within 100..=3600000 (milliseconds)"
        );
        anyhow::ensure!(self.max_body_bytes >= 1024, "max_body_bytes must be at least 1024");
        anyhow::ensure!(
            self.rotation.min_interval_s >= 1
                && self.rotation.interval_s >= self.rotation.min_interval_s
                && self.rotation.check_ms >= 10,
            "rotation: min_interval_s must be at least 1, interval_s at least min_interval_s, check_ms at least 10"
        );
        Ok(())
    }

    /// Node ids of the cluster, ascending.
    pub fn node_ids(&self) -> Vec<u16> {
        let mut ids: Vec<u16> = self.nodes.iter().map(|n| n.id).collect();
        ids.sort_unstable();
        ids
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    #[test]
    fn env_overrides_settings_and_ignores_other_sigil_vars() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "node.toml",
                r#"
                node_id = 0
                data_dir = "/tmp/x"
                listen_peer = "127.0.0.1:7100"
                cluster_id = "c1"
                identity_key_file = "id.key"
                [tls]
                ca_cert = "ca.pem"
                cert = "c.pem"
                key = "k.pem"
                [[nodes]]
                id = 0
                peer_addr = "127.0.0.1:7100"
                identity_key = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
                "#,
            )?;
            jail.set_env("SIGIL_SESSION_TIMEOUT_MS", "2500");
            jail.set_env("SIGIL_TLS__CERT", "other.pem");
            jail.set_env("SIGIL_LOG", "debug");
            jail.set_env("SIGIL_API_KEY", "not a setting");
            let cfg = NodeConfig::load(Path::new("node.toml")).map_err(|e| e.to_string())?;
            assert_eq!(cfg.session_timeout_ms, 2500);
            assert_eq!(cfg.tls.cert, PathBuf::from("other.pem"));
            assert_eq!(cfg.max_body_bytes, 64 * 1024, "default");
            assert_eq!(cfg.allowed_ips.len(), 2, "loopback by default");
            jail.set_env("SIGIL_SESSION_TIMEOUT_MS", "5");
            assert!(NodeConfig::load(Path::new("node.toml")).is_err(), "validate() runs");
            jail.set_env("SIGIL_SESSION_TIMEOUT_MS", "2500");
            jail.set_env("SIGIL_LISTEN_HTTP", "0.0.0.0:7070");
            let e = NodeConfig::load(Path::new("node.toml"))
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(e.contains("not a loopback address"), "{e}");
            jail.set_env("SIGIL_INSECURE_PLAINTEXT_HTTP", "true");
            assert!(NodeConfig::load(Path::new("node.toml")).is_ok());
            Ok(())
        });
    }
}
