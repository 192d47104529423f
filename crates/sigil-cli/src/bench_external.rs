//! `sigil bench external`: key generation and signing with an external
//! party (this process, the `sigil-client` party) over the node's gRPC
//! `sigil.v1.Signer` and over REST, beside the same scheme's node-only
//! 2-of-3 figures measured in the same run, against a running cluster
//! (`sigil dev`). Each measured operation is the client's whole call:
//! start the session, run the party over the relay, and read the
//! committed key or the signature (checked) from the session. An ECDSA
//! party's two safe primes are made before each key generation and
//! measured on their own row (a client may make them ahead of time).

use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use clap::Args;
use serde_json::json;
use sigil_client::external::{self, Door, KeygenArgs};
use sigil_client::keyfile::Unlock;
use zeroize::Zeroizing;

use crate::bench::{hist, print_rows, row, Row};

/// Options of `sigil bench external`.
#[derive(Args, Debug)]
pub struct ExternalArgs {
    /// REST URL of the node that relays (node 0 of `sigil dev`).
    #[arg(long, default_value = "http://127.0.0.1:7070")]
    pub url: String,
    /// Its gRPC `sigil.v1.Signer` URL (`sigil dev`: REST port + 200).
    #[arg(long, default_value = "http://127.0.0.1:7270")]
    pub grpc: String,
    /// Who signs the requests (and runs the party).
    #[command(flatten)]
    pub auth: crate::client::AuthArgs,
    /// The cluster's `identities.json`.
    #[arg(long, default_value = ".sigil-dev/certs/identities.json")]
    pub identities: std::path::PathBuf,
    /// frost-ed25519, frost-secp256k1-tr, frost-p256, ecdsa-secp256k1 or
    /// ecdsa-p256 (ECDSA signs the SHA-256 of each message).
    #[arg(long, default_value = "frost-ed25519")]
    pub scheme: String,
    /// Key generations per door.
    #[arg(long, default_value_t = 20)]
    pub keygens: usize,
    /// Signatures per door.
    #[arg(long, default_value_t = 200)]
    pub signs: usize,
}

/// Runs the benchmark and prints its table.
///
/// # Errors
/// A cluster that does not answer, or a failed operation.
pub async fn run(a: ExternalArgs) -> anyhow::Result<()> {
    let tokens = crate::client::tokens(&a.auth)?;
    let rest = sigil_client::Client::with_url(&a.url, tokens.clone());
    let grpc = sigil_client::GrpcClient::connect(&a.grpc, None, tokens)?;
    grpc.ping()
        .await
        .context("is the cluster running with gRPC? (sigil dev)")?;
    let text = std::fs::read_to_string(&a.identities).with_context(|| a.identities.display().to_string())?;
    let identities = sigil_client::party::parse_identities(&text)?;
    let dir = tempfile::tempdir()?;
    // A raw sealing key: Argon2id (tens of ms by design) is not what this
    // measures.
    let unlock = Unlock::Raw(Zeroizing::new([7; 32]));
    let mut rows = Vec::new();
    for (door, name) in [(Either::Grpc(&grpc), "gRPC"), (Either::Rest(&rest), "REST")] {
        let ctx = Ctx {
            identities: &identities,
            unlock: &unlock,
            dir: dir.path(),
            scheme: &a.scheme,
        };
        rows.extend(door.measure(name, &ctx, a.keygens, a.signs).await?);
    }
    rows.extend(node_only(&rest, &a.scheme, a.keygens, a.signs).await?);
    println!("{} (p50 / p99 of the client's whole call):", a.scheme);
    print_rows(rows);
    Ok(())
}

struct Ctx<'a> {
    identities: &'a std::collections::HashMap<u16, ed25519_dalek::VerifyingKey>,
    unlock: &'a Unlock,
    dir: &'a std::path::Path,
    scheme: &'a str,
}

enum Either<'a> {
    Grpc(&'a sigil_client::GrpcClient),
    Rest(&'a sigil_client::Client),
}

impl Either<'_> {
    async fn measure(&self, name: &str, ctx: &Ctx<'_>, keygens: usize, signs: usize) -> anyhow::Result<Vec<Row>> {
        match self {
            Either::Grpc(g) => measure(*g, name, ctx, keygens, signs).await,
            Either::Rest(r) => measure(*r, name, ctx, keygens, signs).await,
        }
    }
}

/// 2-of-2 (node 0 and this process) key generations, then signatures
/// with the last key, through `door`.
async fn measure<D: Door>(
    door: &D,
    name: &str,
    ctx: &Ctx<'_>,
    keygens: usize,
    signs: usize,
) -> anyhow::Result<Vec<Row>> {
    let scheme: sigil_crypto::Scheme = ctx.scheme.parse()?;
    let mut h = hist()?;
    let mut primes_h = hist()?;
    let mut busy = Duration::ZERO;
    let mut file = None;
    for k in 0..keygens.max(1) {
        let f = ctx.dir.join(format!("{name}-{k}.json"));
        let primes = if scheme.is_ecdsa() {
            let t = Instant::now();
            let p = external::generate_primes().await?;
            primes_h.record(micros(t.elapsed()))?;
            Some(p)
        } else {
            None
        };
        let t = Instant::now();
        external::keygen(
            door,
            ctx.identities,
            KeygenArgs {
                scheme: ctx.scheme.parse()?,
                threshold: 2,
                parties: Some(vec![0]),
                label: Some("bench".into()),
                require_external: false,
                key_file: &f,
                unlock: ctx.unlock,
                primes,
            },
        )
        .await?;
        h.record(micros(t.elapsed()))?;
        busy += t.elapsed();
        file = Some(f);
    }
    let mut rows = Vec::new();
    if scheme.is_ecdsa() {
        rows.push(row(format!("{name} the party's two safe primes"), &primes_h, busy));
    }
    rows.push(row(format!("{name} keygen 2-of-2 (node + external party)"), &h, busy));
    let file = file.ok_or_else(|| anyhow!("no key"))?;
    let mut h = hist()?;
    let start = Instant::now();
    for i in 0..signs {
        let t = Instant::now();
        external::sign(door, ctx.identities, &file, ctx.unlock, &message(scheme, i), &[]).await?;
        h.record(micros(t.elapsed()))?;
    }
    rows.push(row(
        format!("{name} sign 2-of-2 (node + external party)"),
        &h,
        start.elapsed(),
    ));
    Ok(rows)
}

/// The `i`-th message signed: `bench i`, or its SHA-256 for ECDSA.
fn message(scheme: sigil_crypto::Scheme, i: usize) -> Vec<u8> {
    let m = format!("bench {i}").into_bytes();
    if scheme.is_ecdsa() {
        use sha2::Digest;
        sha2::Sha256::digest(&m).to_vec()
    } else {
        m
    }
}

/// The same scheme's 2-of-3 node-only key generation and signing, in the
/// same run, through REST.
async fn node_only(
    rest: &sigil_client::Client,
    scheme_name: &str,
    keygens: usize,
    signs: usize,
) -> anyhow::Result<Vec<Row>> {
    let scheme: sigil_crypto::Scheme = scheme_name.parse()?;
    if scheme.is_ecdsa() {
        // The set's aux info, made once per party set, is not measured.
        rest.create_key(scheme_name, 2, Some(vec![0, 1, 2]), None).await?;
    }
    let mut h = hist()?;
    let start = Instant::now();
    let mut key = None;
    for _ in 0..keygens.max(1) {
        let t = Instant::now();
        let k = rest.create_key(scheme_name, 2, Some(vec![0, 1, 2]), None).await?;
        h.record(micros(t.elapsed()))?;
        key = k["key_id"].as_str().map(str::to_string);
    }
    let keygen = row("REST keygen 2-of-3, nodes only", &h, start.elapsed());
    let key = key.ok_or_else(|| anyhow!("no key"))?;
    let mut h = hist()?;
    let start = Instant::now();
    for i in 0..signs {
        let t = Instant::now();
        rest.post(
            &format!("/v1/keys/{key}/sign"),
            &json!({"message": hex::encode(message(scheme, i))}),
        )
        .await?;
        h.record(micros(t.elapsed()))?;
    }
    Ok(vec![keygen, row("REST sign 2-of-3, nodes only", &h, start.elapsed())])
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}
