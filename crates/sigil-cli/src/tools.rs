//! `sigil clients keygen`, `sigil token`, `sigil keys verify`, `sigil audit`.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use clap::Args;
use sigil_crypto::Scheme;

use crate::client::{AuthArgs, Client};

/// Options of `sigil token`.
#[derive(Args, Debug)]
pub struct TokenArgs {
    /// HTTP method.
    #[arg(long, default_value = "POST")]
    pub method: String,
    /// Request path, e.g. /v1/keys or /v1/keys/ID/sign (a query is ignored).
    #[arg(long)]
    pub path: String,
    /// The exact body the request will send (a write token binds it).
    #[arg(long, conflicts_with = "body_file")]
    pub body: Option<String>,
    /// Read the body from this file.
    #[arg(long)]
    pub body_file: Option<PathBuf>,
    /// Lifetime in seconds (write tokens at most 300, read tokens 3600).
    #[arg(long)]
    pub ttl: Option<i64>,
    #[command(flatten)]
    pub auth: AuthArgs,
}

/// `sigil clients keygen`.
///
/// # Errors
/// File-system failures.
pub fn client_keygen(id: &str, out: &Path, p256: bool, roles: &[String]) -> anyhow::Result<()> {
    std::fs::create_dir_all(out)?;
    let (private, public) = sigil_node::auth::generate_client_key(p256)?;
    let key = out.join(format!("{id}.key"));
    anyhow::ensure!(!key.exists(), "{} exists; not overwritten", key.display());
    sigil_node::certs::write_secret(&key, private.as_bytes())?;
    std::fs::write(out.join(format!("{id}.pub")), &public)?;
    eprintln!("private key: {} (mode 0600)", key.display());
    let roles: Vec<String> = roles.iter().map(|r| format!("{r:?}")).collect();
    println!(
        "[[clients]]\nid = {id:?}\npublic_key = \"\"\"\n{}\"\"\"\nroles = [{}]",
        public,
        roles.join(", ")
    );
    Ok(())
}

/// `sigil token`.
///
/// # Errors
/// Bad key or arguments.
pub fn token(a: &TokenArgs) -> anyhow::Result<()> {
    let body = match (&a.body, &a.body_file) {
        (Some(b), _) => Some(b.as_bytes().to_vec()),
        (None, Some(f)) => Some(std::fs::read(f).with_context(|| format!("read {}", f.display()))?),
        (None, None) => None,
    };
    let method = a.method.to_ascii_uppercase();
    if body.is_none() && method != "GET" {
        bail!("{method} needs --body (a write token binds the exact body bytes)");
    }
    let maker = crate::client::tokens(&a.auth)?;
    let t = match a.ttl {
        Some(ttl) => maker.token_ttl(&method, &a.path, body.as_deref(), ttl)?,
        None => maker.token(&method, &a.path, body.as_deref())?,
    };
    println!("{t}");
    Ok(())
}

/// `sigil keys verify`: rebuilds the canonical record from the node's view
/// and checks every party's signature against `identities`.
///
/// # Errors
/// The key is not attested by all its parties, or its public key does not
/// match its package.
pub async fn verify_key(c: &Client, key: &str, identities: &Path) -> anyhow::Result<()> {
    let v = c.get(&format!("/v1/keys/{key}")).await?;
    let ids: std::collections::BTreeMap<String, String> = serde_json::from_str(
        &std::fs::read_to_string(identities).with_context(|| format!("read {}", identities.display()))?,
    )?;
    let ids = ids
        .iter()
        .map(|(n, k)| Ok((n.parse::<u16>()?, sigil_node::attest::parse_public(k)?)))
        .collect::<anyhow::Result<std::collections::HashMap<_, _>>>()?;
    let scheme: Scheme = v["scheme"].as_str().unwrap_or_default().parse()?;
    let package = hex::decode(v["public_key_package"].as_str().unwrap_or_default())?;
    let public_key = scheme.public_key(&package)?;
    let shown = v["public_key"].as_str().unwrap_or_default();
    anyhow::ensure!(
        crate::schemes::shows_public_key(scheme, &public_key, shown),
        "public_key is not the key of public_key_package"
    );
    let record = sigil_store::KeyRecord {
        key_id: v["key_id"].as_str().unwrap_or_default().into(),
        scheme: scheme.as_str().into(),
        threshold: u16::try_from(v["threshold"].as_u64().unwrap_or_default())?,
        parties: serde_json::from_value(v["parties"].clone())?,
        public_key,
        public_package: package,
        epoch: u32::try_from(v["epoch"].as_u64().unwrap_or_default())?,
        label: None,
        created_at: 0,
        status: sigil_store::KeyStatus::Active,
        policy: serde_json::from_value(v["policy"].clone())?,
        created_by: v["created_by"].as_str().unwrap_or_default().into(),
        create_jti: v["create_jti"].as_str().unwrap_or_default().into(),
        attestations: serde_json::from_value(v["attestations"].clone())?,
        endorsements: Vec::new(),
        activations: Vec::new(),
    };
    sigil_node::attest::verify_all(&record, |n| ids.get(&n).copied()).map_err(|e| anyhow!("NOT attested: {e}"))?;
    println!(
        "key {} attested by every party {:?}; record {}",
        record.key_id,
        record.parties,
        sigil_node::attest::record_hash(&record)
    );
    Ok(())
}

/// `sigil audit verify`.
///
/// # Errors
/// The chain is broken (names the first bad seq) or unreadable.
pub async fn audit_verify(file: Option<&Path>, db: Option<&Path>) -> anyhow::Result<()> {
    let texts: Vec<String> = match (file, db) {
        (Some(f), _) => records_of_file(&std::fs::read_to_string(f).with_context(|| format!("read {}", f.display()))?)?,
        (None, Some(d)) => sigil_store::read_audit_log(d)
            .await
            .with_context(|| format!("read {}", d.display()))?
            .into_iter()
            .map(|r| r.record)
            .collect(),
        (None, None) => bail!("give --file F or --db node.db"),
    };
    let n = sigil_node::audit::verify_chain(texts.iter().map(String::as_str))?;
    println!("audit chain intact: {n} records");
    Ok(())
}

/// Records from JSON lines, or from `{"records": [...]}` pages.
fn records_of_file(text: &str) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).context("a line is not JSON")?;
        match v.get("records").and_then(|r| r.as_array()) {
            Some(rs) => out.extend(rs.iter().map(|r| r.to_string())),
            None => out.push(line.to_string()),
        }
    }
    Ok(out)
}

/// `sigil audit export`: every record after `after`, one JSON line each.
///
/// # Errors
/// API failures.
pub async fn audit_export(c: &Client, mut after: u64) -> anyhow::Result<()> {
    loop {
        let page = c.get(&format!("/v1/audit?after={after}&limit=1000")).await?;
        let records = page["records"].as_array().cloned().unwrap_or_default();
        for r in &records {
            println!("{r}");
        }
        match records.last().and_then(|r| r["seq"].as_u64()) {
            Some(seq) if records.len() == 1000 => after = seq,
            _ => return Ok(()),
        }
    }
}
