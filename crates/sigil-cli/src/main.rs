//! `sigil`: run a node or a local dev cluster, manage certificates, talk to
//! the REST API, and benchmark.
#![forbid(unsafe_code)]
// `serde_json::Value` indexing returns `Null` for a missing key and never
// panics; vectors indexed here are checked non-empty first.
#![allow(clippy::indexing_slicing)]

mod bench;
mod bench_external;
mod bench_reshare;
mod client;
mod dev;
mod eth;
mod party;
mod primes;
mod schemes;
mod soak;
mod tools;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Sigil: threshold key management and signing.
#[derive(Parser)]
#[command(name = "sigil", version, about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

/// Where the REST API is and how to authenticate.
#[derive(Args, Clone, Debug)]
pub struct ApiArgs {
    /// Base URL of a node's REST API.
    #[arg(long, env = "SIGIL_URL", default_value = "http://127.0.0.1:7070", global = true)]
    pub url: String,
    /// Who signs the requests.
    #[command(flatten)]
    pub auth: client::AuthArgs,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run one node (party) of a cluster.
    Node {
        /// TOML configuration; every setting can also come from SIGIL_* env.
        #[arg(long, env = "SIGIL_CONFIG")]
        config: PathBuf,
    },
    /// Certificates of a cluster.
    Certs {
        #[command(subcommand)]
        cmd: CertsCmd,
    },
    /// Start a local cluster of node processes on loopback (the embedded default).
    Dev(dev::DevCommand),
    /// Keys.
    Keys {
        #[command(subcommand)]
        cmd: KeysCmd,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// This process as the external party of a key: it holds one share
    /// (sealed in a file) and takes part through a node that relays it.
    Party {
        #[command(subcommand)]
        cmd: party::PartyCmd,
    },
    /// Sign a message with a key.
    Sign {
        /// Key id.
        #[arg(long)]
        key: String,
        /// ECDSA: BIP-32 non-hardened derivation path (m/0/1).
        #[arg(long)]
        derivation_path: Option<String>,
        #[command(flatten)]
        msg: client::MessageArgs,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Verify a signature locally with an ordinary single-key verifier
    /// (the public key is fetched from the API, or given with --public-key).
    Verify {
        /// Key id (to fetch the public key and scheme).
        #[arg(long)]
        key: Option<String>,
        /// Scheme, when --public-key is given.
        #[arg(long)]
        scheme: Option<String>,
        /// Public key hex, instead of fetching it.
        #[arg(long)]
        public_key: Option<String>,
        /// Signature, hex.
        #[arg(long)]
        signature: String,
        #[command(flatten)]
        msg: client::MessageArgs,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Paillier: encrypt a value to a key, locally (public key only; the
    /// key's N is fetched from the API). Prints the decimal ciphertext.
    Encrypt {
        /// Key id.
        #[arg(long)]
        key: String,
        /// Plaintext, a decimal integer in [0, N).
        value: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Paillier: decrypt a ciphertext with the cluster (T parties).
    Decrypt {
        /// Key id.
        #[arg(long)]
        key: String,
        /// Ciphertext, decimal.
        ciphertext: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Ethereum: sign a transaction with an ecdsa-secp256k1 key.
    Eth {
        #[command(subcommand)]
        cmd: EthCmd,
    },
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        cmd: bench::BenchCmd,
    },
    /// Safe primes: generate them, benchmark the generator.
    Primes {
        #[command(subcommand)]
        cmd: primes::PrimesCmd,
    },
    /// Client identities.
    Clients {
        #[command(subcommand)]
        cmd: ClientsCmd,
    },
    /// Print a signed request token (for curl): a write token bound to
    /// --body, or with no body a read token for GET.
    Token(tools::TokenArgs),
    /// The audit log.
    Audit {
        #[command(subcommand)]
        cmd: AuditCmd,
    },
}

#[derive(Subcommand)]
enum ClientsCmd {
    /// Make a client key pair: OUT/ID.key (private, mode 0600) and
    /// OUT/ID.pub; prints the `[[clients]]` entry for node configs.
    Keygen {
        /// Client id.
        #[arg(long)]
        id: String,
        /// Output directory.
        #[arg(long, default_value = ".")]
        out: PathBuf,
        /// ECDSA P-256 (ES256) instead of Ed25519 (EdDSA).
        #[arg(long)]
        p256: bool,
        /// Roles to print in the entry (admin, create, read, audit).
        #[arg(long, value_delimiter = ',', default_value = "create,read")]
        roles: Vec<String>,
    },
}

#[derive(Subcommand)]
enum AuditCmd {
    /// Check a hash chain: from a file of records (JSON lines or GET
    /// /v1/audit pages) or straight from a node's SQLite database (no
    /// master key needed). Reports the first broken link.
    Verify {
        /// File of records.
        #[arg(long, conflicts_with = "db")]
        file: Option<PathBuf>,
        /// A node's `node.db`.
        #[arg(long)]
        db: Option<PathBuf>,
    },
    /// Print a node's audit log as JSON lines (needs role audit or admin).
    Export {
        /// Records after this seq.
        #[arg(long, default_value_t = 0)]
        after: u64,
        #[command(flatten)]
        api: ApiArgs,
    },
}

#[derive(Subcommand)]
enum EthCmd {
    /// Build an EIP-1559 transaction, have the cluster sign its hash, print
    /// the raw signed transaction and check ecrecover gives the key's address.
    SignTx(eth::SignTxArgs),
}

#[derive(Subcommand)]
enum CertsCmd {
    /// Create a CA (its key in CA_DIR), one certificate per node
    /// (`node-<id>.pem`/`.key`), one for the prime service
    /// (`prime-service.pem`/`.key`) and node identity keys, in DIR.
    Init {
        /// Output directory (what the nodes get).
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
        /// Where the CA's private key goes: not beside the node keys; in
        /// production, offline.
        #[arg(long, default_value = "ca")]
        ca_dir: PathBuf,
        /// Number of nodes (ids 0..N).
        #[arg(long, default_value_t = 3)]
        nodes: u16,
        /// Validity of the node and service certificates, in days.
        #[arg(long, default_value_t = sigil_node::certs::CERT_DAYS)]
        days: u32,
    },
    /// Issue the certificate (`node-<ID>.pem`/`.key`, signed by the CA in
    /// CA_DIR) and identity key of a new node ID into DIR, update
    /// `identities.json`, and print the `[[nodes]]` entry every node's
    /// config needs (then `SIGHUP` the running nodes).
    AddNode {
        /// The certificate directory of `sigil certs init`.
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
        /// The CA's directory (its key and certificate).
        #[arg(long, default_value = "ca")]
        ca_dir: PathBuf,
        /// The new node's id (never one used before).
        #[arg(long)]
        id: u16,
        /// The new node's peer address, `host:port`, for the printed entry.
        #[arg(long)]
        peer_addr: String,
        /// Validity of the certificate, in days.
        #[arg(long, default_value_t = sigil_node::certs::CERT_DAYS)]
        days: u32,
    },
}

#[derive(Subcommand)]
enum KeysCmd {
    /// Create a key by distributed key generation.
    Create {
        /// frost-ed25519, frost-secp256k1-tr, frost-p256, ecdsa-secp256k1,
        /// ecdsa-p256 or paillier (threshold = parties needed to decrypt).
        #[arg(long, default_value = "frost-ed25519")]
        scheme: String,
        /// Signers needed.
        #[arg(long, default_value_t = 2)]
        threshold: u16,
        /// Node ids that get a share (comma-separated; default all).
        #[arg(long, value_delimiter = ',')]
        parties: Option<Vec<u16>>,
        /// Label.
        #[arg(long)]
        label: Option<String>,
        /// `paillier`: bits of the modulus N (default 2048).
        #[arg(long)]
        bits: Option<u32>,
        /// `paillier`: N has no prime factor up to this bound (trial
        /// division; TNO's `prime_threshold`, default 2000).
        #[arg(long)]
        prime_threshold: Option<u32>,
        /// Send one request and wait for its answer, without following the
        /// operation (no progress bar).
        #[arg(long)]
        no_progress: bool,
        /// Refresh the key automatically every `[rotation] interval_s` of
        /// the cluster (default 24 h).
        #[arg(long)]
        rotate: bool,
    },
    /// Refresh a key's shares: a new epoch with the same committee and
    /// threshold (the public key is unchanged). Admins of the key only.
    Refresh {
        /// Key id.
        key: String,
    },
    /// Reshare a key to a new committee and threshold (a new epoch; the
    /// public key, xpub and addresses are unchanged). Admins of the key
    /// only.
    Reshare {
        /// Key id.
        key: String,
        /// The new committee, node ids in key order (comma-separated;
        /// default: the current one).
        #[arg(long, value_delimiter = ',')]
        parties: Option<Vec<u16>>,
        /// The new threshold (default: the current one).
        #[arg(long)]
        threshold: Option<u16>,
    },
    /// List keys.
    List,
    /// Show one key.
    Get {
        /// Key id.
        key: String,
    },
    /// Check a key's attestations: every party's identity-key signature
    /// over the canonical record, against the node keys in --identities
    /// (so the node asked need not be trusted).
    Verify {
        /// Key id.
        key: String,
        /// `identities.json` of the cluster (`sigil certs init` writes it).
        #[arg(long, default_value = ".sigil-dev/certs/identities.json")]
        identities: PathBuf,
    },
}

/// `keys create` for a long key generation (Paillier): follows the
/// operation with a spinner on stderr showing elapsed time, attempts,
/// candidates and how many passed trial division.
async fn create_with_progress(
    c: &client::Client,
    scheme: &str,
    threshold: u16,
    o: &client::KeyOptions,
) -> anyhow::Result<serde_json::Value> {
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {elapsed_precise} {prefix} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    bar.set_prefix(format!("{scheme} keygen"));
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    let every = std::time::Duration::from_millis(250);
    let r = c
        .create_key_following(scheme, threshold, o, every, |op| {
            bar.set_message(format!(
                "attempt {} · {} candidates · {} past trial division",
                op["attempts"], op["candidates"], op["past_trial_division"]
            ));
        })
        .await;
    match &r {
        Ok(_) => bar.finish_with_message(format!("{} done", bar.message())),
        Err(_) => bar.abandon(),
    }
    r
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SIGIL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

fn main() -> std::process::ExitCode {
    // Before any thread exists: the master key leaves the environment.
    sigil_store::take_master_key_env();
    match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt.block_on(async_main()),
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn async_main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(cli.cmd).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

/// Runs one command: hands each subcommand family to its function.
async fn run(cmd: Cmd) -> anyhow::Result<()> {
    match cmd {
        Cmd::Node { config } => node_command(&config).await,
        Cmd::Certs { cmd } => certs_command(cmd),
        Cmd::Dev(c) => dev::command(c).await,
        Cmd::Keys { cmd, api } => keys_command(cmd, &api).await,
        Cmd::Party { cmd } => party::command(cmd).await,
        Cmd::Sign {
            key,
            derivation_path,
            msg,
            api,
        } => sign_command(&key, derivation_path.as_deref(), &msg, &api).await,
        Cmd::Verify {
            key,
            scheme,
            public_key,
            signature,
            msg,
            api,
        } => client::verify(&api, key, scheme, public_key, &signature, &msg).await,
        Cmd::Bench { cmd } => bench::run(cmd).await,
        Cmd::Encrypt { key, value, api } => client::paillier_encrypt(&api, &key, &value).await,
        Cmd::Decrypt { key, ciphertext, api } => decrypt_command(&key, &ciphertext, &api).await,
        Cmd::Clients {
            cmd: ClientsCmd::Keygen { id, out, p256, roles },
        } => tools::client_keygen(&id, &out, p256, &roles),
        Cmd::Token(a) => tools::token(&a),
        Cmd::Audit { cmd } => audit_command(cmd).await,
        Cmd::Primes { cmd } => primes_command(cmd).await,
        Cmd::Eth { cmd: EthCmd::SignTx(a) } => eth::sign_tx(a).await,
    }
}

/// `sigil node`: loads the configuration and runs the node until a signal.
async fn node_command(config: &std::path::Path) -> anyhow::Result<()> {
    init_tracing();
    sigil_node::api::init_metrics();
    let cfg = sigil_node::NodeConfig::load(config)?;
    sigil_node::run(cfg, shutdown_signal(), Some(config.to_path_buf())).await
}

/// `sigil certs`: makes the cluster's CA and certificates.
fn certs_command(cmd: CertsCmd) -> anyhow::Result<()> {
    let (dir, ca_dir, nodes, days) = match cmd {
        CertsCmd::Init {
            dir,
            ca_dir,
            nodes,
            days,
        } => (dir, ca_dir, nodes, days),
        CertsCmd::AddNode {
            dir,
            ca_dir,
            id,
            peer_addr,
            days,
        } => {
            let identity_key = sigil_node::certs::add_node(&dir, &ca_dir, id, days)?;
            let entry = sigil_node::config::NodeEntry {
                id,
                peer_addr,
                identity_key,
            };
            eprintln!(
                "node {id}: {} and its identity key written; add this to every node's config, then kill -HUP each node:",
                sigil_node::certs::node_cert_paths(&dir, id).cert.display()
            );
            #[derive(serde::Serialize)]
            struct Entry {
                nodes: Vec<sigil_node::config::NodeEntry>,
            }
            print!("{}", toml::to_string(&Entry { nodes: vec![entry] })?);
            return Ok(());
        }
    };
    let ids: Vec<u16> = (0..nodes).collect();
    if sigil_node::certs::init(&dir, &ca_dir, &ids, days)? {
        println!(
            "created {nodes} node certificates and the prime service's in {} (valid {days} days); the CA key is in {}: keep it offline",
            dir.display(),
            ca_dir.display()
        );
    } else {
        println!("{} already holds a CA; left unchanged", dir.display());
    }
    Ok(())
}

/// `sigil keys`: key generation, refresh, reshare, listing and checks.
async fn keys_command(cmd: KeysCmd, api: &ApiArgs) -> anyhow::Result<()> {
    let c = client::connect(api)?;
    match cmd {
        KeysCmd::Create {
            scheme,
            threshold,
            parties,
            label,
            bits,
            prime_threshold,
            no_progress,
            rotate,
        } => {
            let o = client::KeyOptions {
                parties,
                label,
                bits,
                prime_threshold,
                rotate,
            };
            keys_create(&c, &scheme, threshold, &o, no_progress).await
        }
        KeysCmd::Refresh { key } => c
            .post(&format!("/v1/keys/{key}/refresh"), &serde_json::json!({}))
            .await
            .map(|v| client::print_json(&v)),
        KeysCmd::Reshare {
            key,
            parties,
            threshold,
        } => keys_reshare(&c, &key, parties, threshold).await,
        KeysCmd::List => c.get("/v1/keys").await.map(|v| client::print_json(&v)),
        KeysCmd::Get { key } => c.get(&format!("/v1/keys/{key}")).await.map(|v| client::print_json(&v)),
        KeysCmd::Verify { key, identities } => tools::verify_key(&c, &key, &identities).await,
    }
}

/// `sigil keys create`: one request, or a followed operation with a
/// progress spinner for a scheme whose key generation is long.
async fn keys_create(
    c: &client::Client,
    scheme: &str,
    threshold: u16,
    o: &client::KeyOptions,
    no_progress: bool,
) -> anyhow::Result<()> {
    let long = scheme.parse().is_ok_and(schemes::long_keygen);
    let key = if no_progress || !long {
        c.create_key_with(scheme, threshold, o).await
    } else {
        create_with_progress(c, scheme, threshold, o).await
    };
    key.map(|v| client::print_json(&v))
}

/// `sigil keys reshare`: asks for a new committee and/or threshold.
async fn keys_reshare(
    c: &client::Client,
    key: &str,
    parties: Option<Vec<u16>>,
    threshold: Option<u16>,
) -> anyhow::Result<()> {
    let mut body = serde_json::Map::new();
    if let Some(p) = parties {
        body.insert("parties".into(), serde_json::json!(p));
    }
    if let Some(t) = threshold {
        body.insert("threshold".into(), serde_json::json!(t));
    }
    c.post(&format!("/v1/keys/{key}/reshare"), &serde_json::Value::Object(body))
        .await
        .map(|v| client::print_json(&v))
}

/// `sigil sign`: has the cluster sign a message and prints the answer.
async fn sign_command(
    key: &str,
    derivation_path: Option<&str>,
    msg: &client::MessageArgs,
    api: &ApiArgs,
) -> anyhow::Result<()> {
    let m = msg.bytes()?;
    let c = client::connect(api)?;
    c.sign_with_path(key, &m, derivation_path)
        .await
        .map(|v| client::print_json(&v))
}

/// `sigil decrypt`: has the cluster decrypt a ciphertext and prints the answer.
async fn decrypt_command(key: &str, ciphertext: &str, api: &ApiArgs) -> anyhow::Result<()> {
    let c = client::connect(api)?;
    c.post(
        &format!("/v1/keys/{key}/decrypt"),
        &serde_json::json!({"ciphertext": ciphertext}),
    )
    .await
    .map(|v| client::print_json(&v))
}

/// `sigil audit`: checks a hash chain or exports a node's log.
async fn audit_command(cmd: AuditCmd) -> anyhow::Result<()> {
    match cmd {
        AuditCmd::Verify { file, db } => tools::audit_verify(file.as_deref(), db.as_deref()).await,
        AuditCmd::Export { after, api } => {
            let c = client::connect(&api)?;
            tools::audit_export(&c, after).await
        }
    }
}

/// `sigil primes`: the prime service and its benchmark here (they need the
/// runtime), the local generator and its benchmark in `primes::run`.
async fn primes_command(cmd: primes::PrimesCmd) -> anyhow::Result<()> {
    match cmd {
        primes::PrimesCmd::Serve { config } => {
            init_tracing();
            let cfg = sigil_primes::PrimeServiceConfig::load(&config)?;
            sigil_primes::run(cfg, shutdown_signal()).await
        }
        primes::PrimesCmd::BenchService(a) => primes::bench_service(a).await,
        cmd => primes::run(cmd),
    }
}

fn fail(e: anyhow::Error) -> std::process::ExitCode {
    eprintln!("error: {e:#}");
    std::process::ExitCode::FAILURE
}
