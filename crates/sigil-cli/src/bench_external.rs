//! `sigil bench external`: key generation and signing with an external
//! party (this process, the `sigil-client` party) over the node's gRPC
//! `sigil.v1.Signer` and over REST, beside the same scheme's node-only
//! 2-of-3 figures measured in the same run, against a running cluster
//! (`sigil dev`). Each measured operation is the client's whole call:
//! start the session, run the party over the relay, and read the
//! committed key or the signature (checked) from the session.

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
    /// A FROST scheme.
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
    let mut h = hist()?;
    let start = Instant::now();
    let mut file = None;
    for k in 0..keygens.max(1) {
        let f = ctx.dir.join(format!("{name}-{k}.json"));
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
            },
        )
        .await?;
        h.record(micros(t.elapsed()))?;
        file = Some(f);
    }
    let keygen = row(
        format!("{name} keygen 2-of-2 (node + external party)"),
        &h,
        start.elapsed(),
    );
    let file = file.ok_or_else(|| anyhow!("no key"))?;
    let mut h = hist()?;
    let start = Instant::now();
    for i in 0..signs {
        let t = Instant::now();
        external::sign(door, ctx.identities, &file, ctx.unlock, format!("bench {i}").as_bytes()).await?;
        h.record(micros(t.elapsed()))?;
    }
    let sign = row(
        format!("{name} sign 2-of-2 (node + external party)"),
        &h,
        start.elapsed(),
    );
    Ok(vec![keygen, sign])
}

/// The same scheme's 2-of-3 node-only key generation and signing, in the
/// same run, through REST.
async fn node_only(
    rest: &sigil_client::Client,
    scheme: &str,
    keygens: usize,
    signs: usize,
) -> anyhow::Result<Vec<Row>> {
    let mut h = hist()?;
    let start = Instant::now();
    let mut key = None;
    for _ in 0..keygens.max(1) {
        let t = Instant::now();
        let k = rest.create_key(scheme, 2, Some(vec![0, 1, 2]), None).await?;
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
            &json!({"message": hex::encode(format!("bench {i}"))}),
        )
        .await?;
        h.record(micros(t.elapsed()))?;
    }
    Ok(vec![keygen, row("REST sign 2-of-3, nodes only", &h, start.elapsed())])
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}
