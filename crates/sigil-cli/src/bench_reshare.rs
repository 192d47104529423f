//! `sigil bench reshare`: refresh and reshare latency through the REST
//! API of a running cluster (`sigil dev --nodes 4` for 2-of-3 -> 3-of-4),
//! and signing throughput while the key is refreshed in a loop, beside the
//! throughput without refreshes, in one run. For a Paillier key (`--scheme
//! paillier`, `--bits`): the latencies, then REST decryption at the last
//! epoch beside a fresh key's (integer shares grow with every reshare).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use clap::Args;
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use sigil_crypto::Scheme;

use crate::client::Client;
use crate::schemes::Use;

/// Options of `sigil bench reshare`.
#[derive(Args, Debug)]
pub struct ReshareArgs {
    /// Node URLs; node 0's first (it coordinates: it is in every committee).
    #[arg(
        long = "url",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:7070,http://127.0.0.1:7071,http://127.0.0.1:7072,http://127.0.0.1:7073"
    )]
    pub urls: Vec<String>,
    /// Who signs the requests.
    #[command(flatten)]
    pub auth: crate::client::AuthArgs,
    /// Scheme of the benchmark key.
    #[arg(long, default_value = "frost-ed25519")]
    pub scheme: String,
    /// Timed refreshes, and timed reshares each way.
    #[arg(long, default_value_t = 10)]
    pub runs: usize,
    /// Signing requests in each throughput phase.
    #[arg(short = 'n', long, default_value_t = 2000)]
    pub requests: usize,
    /// Concurrency of the throughput phases.
    #[arg(short = 'c', long, default_value_t = 16)]
    pub concurrency: usize,
    /// `paillier`: bits of `N`.
    #[arg(long, default_value_t = 2048)]
    pub bits: u32,
}

fn hist() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).map_err(|e| anyhow!("{e}"))
}

fn us(t: Instant) -> u64 {
    u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX)
}

fn print_row(what: &str, h: &Histogram<u64>) {
    println!(
        "| {what} | {} | {:.2} | {:.2} |",
        h.len(),
        h.value_at_quantile(0.5) as f64 / 1000.0,
        h.value_at_quantile(0.99) as f64 / 1000.0
    );
}

/// `runs` timed calls of `path` with `body`; the answers must be 200.
async fn timed(c: &Client, path: &str, bodies: &[Value], runs: usize) -> anyhow::Result<Histogram<u64>> {
    let mut h = hist()?;
    for i in 0..runs {
        let body = &bodies[i % bodies.len()];
        let t = Instant::now();
        c.post(path, body).await.with_context(|| format!("{path} {body}"))?;
        h.record(us(t))?;
    }
    Ok(h)
}

/// Signs `n` random 32-byte messages at concurrency `conc`, checking every
/// signature; returns signatures per second.
async fn sign_load(
    clients: &[Client],
    key: &str,
    scheme: Scheme,
    pk: &[u8],
    n: usize,
    conc: usize,
) -> anyhow::Result<f64> {
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..conc.max(1) {
        let (next, clients, key, pk) = (next.clone(), clients.to_vec(), key.to_string(), pk.to_vec());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return anyhow::Ok(());
                }
                let msg: [u8; 32] = rand::random();
                let v = clients[i % clients.len()].sign(&key, &msg).await?;
                let sig = hex::decode(v["signature"].as_str().unwrap_or_default())?;
                scheme
                    .verify(&pk, &msg, &sig)
                    .map_err(|e| anyhow!("bad signature: {e}"))?;
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64().max(1e-9))
}

/// Runs the benchmark (see the module docs) and prints a table.
///
/// # Errors
/// No cluster, or any request that fails.
pub async fn run(a: ReshareArgs) -> anyhow::Result<()> {
    let scheme: Scheme = a.scheme.parse()?;
    let tokens = crate::client::tokens(&a.auth)?;
    let clients: Vec<Client> = a.urls.iter().map(|u| Client::with_url(u, tokens.clone())).collect();
    let door = clients.first().ok_or_else(|| anyhow!("no --url"))?;
    let health = door
        .get("/health")
        .await
        .context("is the cluster running? (sigil dev --nodes 4)")?;
    let nodes = u16::try_from(health["nodes"].as_u64().unwrap_or(3)).unwrap_or(3);
    let key = create_key(door, scheme, &a).await?;
    let id = key["key_id"].as_str().ok_or_else(|| anyhow!("no key_id"))?.to_string();
    println!("| what ({scheme}, {nodes} nodes) | count | p50 ms | p99 ms |");
    println!("|---|---:|---:|---:|");
    latencies(door, &id, nodes, a.runs).await?;
    match crate::schemes::operation(scheme) {
        Use::Sign => {
            let pk = hex::decode(key["public_key"].as_str().unwrap_or_default())?;
            throughput(&clients, &id, scheme, &pk, &a).await
        }
        Use::Decrypt => {
            let rows = vec![
                crate::bench::paillier_decrypts(door, &key, a.bits, a.runs).await?,
                crate::bench::paillier_decrypts(door, &create_key(door, scheme, &a).await?, a.bits, a.runs).await?,
            ];
            println!();
            println!("after the reshares above, then with a fresh key (epoch 0):");
            crate::bench::print_rows(rows);
            Ok(())
        }
    }
}

/// The benchmark key: 2-of-3 on nodes 0, 1, 2 (a Paillier key of
/// `a.bits`, followed as an operation).
async fn create_key(door: &Client, scheme: Scheme, a: &ReshareArgs) -> anyhow::Result<Value> {
    let o = crate::client::KeyOptions {
        parties: Some(vec![0, 1, 2]),
        label: Some("bench-reshare".into()),
        bits: crate::schemes::keygen_takes_bits(scheme).then_some(a.bits),
        ..Default::default()
    };
    if crate::schemes::long_keygen(scheme) {
        door.create_key_following(&a.scheme, 2, &o, Duration::from_secs(1), |_| ())
            .await
    } else {
        door.create_key_with(&a.scheme, 2, &o).await
    }
}

/// The latency rows: the first reshare to the grown set (ECDSA: with its
/// aux info), refreshes, and reshares there and back.
async fn latencies(door: &Client, id: &str, nodes: u16, runs: usize) -> anyhow::Result<()> {
    let grow = if nodes >= 4 {
        json!({"parties": [0, 1, 2, 3], "threshold": 3})
    } else {
        json!({"parties": [0, 1, 2], "threshold": 3})
    };
    let back = json!({"parties": [0, 1, 2], "threshold": 2});
    let reshare = format!("/v1/keys/{id}/reshare");
    // The first move to the grown set makes its aux info (ECDSA), once.
    let mut first = hist()?;
    let t = Instant::now();
    door.post(&reshare, &grow).await?;
    first.record(us(t))?;
    print_row(
        &format!(
            "first reshare 2-of-3 -> {} (ECDSA: with the new set's aux info)",
            grow["parties"]
        ),
        &first,
    );
    door.post(&reshare, &back).await?;
    let refresh = timed(door, &format!("/v1/keys/{id}/refresh"), &[json!({})], runs).await?;
    print_row("refresh 2-of-3", &refresh);
    let mut there = hist()?;
    let mut home = hist()?;
    for _ in 0..runs {
        there.add(timed(door, &reshare, std::slice::from_ref(&grow), 1).await?)?;
        home.add(timed(door, &reshare, std::slice::from_ref(&back), 1).await?)?;
    }
    print_row(&format!("reshare 2-of-3 -> {}", grow["parties"]), &there);
    print_row("reshare back to 2-of-3", &home);
    Ok(())
}

/// Signing throughput, without and then with refreshes in a loop.
async fn throughput(clients: &[Client], id: &str, scheme: Scheme, pk: &[u8], a: &ReshareArgs) -> anyhow::Result<()> {
    let door = clients.first().ok_or_else(|| anyhow!("no --url"))?;
    let quiet = sign_load(clients, id, scheme, pk, a.requests, a.concurrency).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let looping = {
        let (stop, door, path) = (stop.clone(), door.clone(), format!("/v1/keys/{id}/refresh"));
        tokio::spawn(async move {
            let mut done = 0usize;
            while !stop.load(Ordering::Relaxed) {
                door.post(&path, &json!({})).await?;
                done += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            anyhow::Ok(done)
        })
    };
    let busy = sign_load(clients, id, scheme, pk, a.requests, a.concurrency).await?;
    stop.store(true, Ordering::Relaxed);
    let refreshes = looping.await??;
    println!();
    println!("| signing, concurrency {} | signatures/s |", a.concurrency);
    println!("|---|---:|");
    println!("| no refresh | {quiet:.0} |");
    println!("| refreshed in a loop ({refreshes} refreshes meanwhile) | {busy:.0} |");
    Ok(())
}
