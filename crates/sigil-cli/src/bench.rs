//! `sigil bench`: load a running cluster through its REST API and compare
//! with the in-process floor (the same protocol, one process, no network).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use clap::{Args, Subcommand};
use hdrhistogram::Histogram;
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use round_based::sim::async_env;
use sigil_crypto::frost::{dkg, sign};
use sigil_crypto::scheme::frost_core;
use sigil_crypto::{ecdsa, with_ciphersuite, with_curve, Scheme};

use crate::client::Client;
use crate::schemes::{self, Family};

/// Benchmarks.
#[derive(Subcommand)]
pub enum BenchCmd {
    /// DKG and signing through the REST API of a running cluster, with the
    /// in-process floor beside it.
    Sign(SignArgs),
    /// Threshold Paillier through the REST API of a running cluster:
    /// dealerless key generation (sequential runs) and decryption latency.
    Paillier(PaillierArgs),
    /// Mixed load against a local cluster of real node processes while a
    /// chaos loop kill -9s, SIGSTOPs and restarts nodes; checks that
    /// nothing is lost, duplicated or wrong.
    Soak(crate::soak::SoakArgs),
    /// Refresh and reshare latency through the REST API of a running
    /// cluster, and signing throughput while a key is refreshed in a loop.
    Reshare(crate::bench_reshare::ReshareArgs),
    /// Key generation and signing with an external party (this process)
    /// over gRPC and REST, beside node-only 2-of-3 in the same run.
    External(crate::bench_external::ExternalArgs),
}

/// Options of `sigil bench paillier`.
#[derive(Args, Debug)]
pub struct PaillierArgs {
    /// Node URL.
    #[arg(long, default_value = "http://127.0.0.1:7070")]
    pub url: String,
    /// Who signs the requests.
    #[command(flatten)]
    pub auth: crate::client::AuthArgs,
    /// Bits of N, one or more sizes (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1024")]
    pub bits: Vec<u32>,
    /// Key generations per size.
    #[arg(long, default_value_t = 10)]
    pub runs: usize,
    /// Parties needed to decrypt.
    #[arg(long, default_value_t = 2)]
    pub threshold: u16,
    /// Sequential decryptions with the last key of each size.
    #[arg(long, default_value_t = 50)]
    pub decrypts: usize,
    /// Also run TNO's keygen in the same run, for the same sizes and run
    /// count, with this Python (a venv with the PEERS.md pins) and
    /// `scripts/tno_keygen.py`.
    #[arg(long)]
    pub tno_python: Option<std::path::PathBuf>,
    /// Per-run limit for TNO, in seconds (a run past it counts as not finished).
    #[arg(long, default_value_t = 1800)]
    pub tno_timeout: u64,
    /// TNO key generations per size (default: `--runs`).
    #[arg(long)]
    pub tno_runs: Option<usize>,
    /// Trial-division bound for N, sent to the cluster and to TNO alike
    /// (TNO's `prime_threshold`; 2000 is its default and the node's).
    #[arg(long, default_value_t = 2000)]
    pub prime_threshold: u32,
}

/// Runs `scripts/tno_keygen.py` and returns the seconds of each run
/// (`None` for a run that hit the timeout).
fn tno_runs(
    python: &std::path::Path,
    bits: u32,
    runs: usize,
    timeout: u64,
    prime_threshold: u32,
) -> anyhow::Result<Vec<Option<f64>>> {
    use std::io::BufRead;
    let mut child = std::process::Command::new(python)
        .args([
            "scripts/tno_keygen.py",
            "--bits",
            &bits.to_string(),
            "--runs",
            &runs.to_string(),
        ])
        .args(["--timeout", &timeout.to_string()])
        .args(["--prime-threshold", &prime_threshold.to_string()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .context("running scripts/tno_keygen.py (from the repository root)")?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow!("no stdout from tno_keygen.py"))?;
    let mut runs_out = Vec::new();
    // One JSON line per run, shown as it comes (a TNO run takes minutes).
    for line in std::io::BufReader::new(stdout).lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line?) else {
            continue;
        };
        let secs = v["seconds"].as_f64();
        match secs {
            Some(t) => eprintln!("{bits}-bit TNO keygen: {t:.2} s"),
            None => eprintln!("{bits}-bit TNO keygen: not finished within {timeout} s"),
        }
        runs_out.push(secs);
    }
    anyhow::ensure!(child.wait()?.success(), "tno_keygen.py failed");
    Ok(runs_out)
}

/// `sigil bench paillier`: per size, the keygen runs (Sigil, then TNO if
/// asked) and the decryption latency with the last key; prints the tables.
async fn bench_paillier(a: PaillierArgs) -> anyhow::Result<()> {
    let client = Client::with_url(&a.url, crate::client::tokens(&a.auth)?);
    println!("| what | bits | count | mean s | median s | min s | max s |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let mut dec_rows = Vec::new();
    for &bits in &a.bits {
        let (mean, last) = paillier_keygens(&client, &a, bits).await?;
        if let Some(py) = &a.tno_python {
            tno_keygens(py, &a, bits, mean)?;
        }
        let Some(key) = last else { continue };
        dec_rows.push(paillier_decrypts(&client, &key, bits, a.decrypts).await?);
    }
    println!();
    print_rows(dec_rows);
    Ok(())
}

/// `a.runs` Paillier key generations of `bits` through the REST API;
/// prints their row and returns the mean seconds and the last key.
async fn paillier_keygens(
    client: &Client,
    a: &PaillierArgs,
    bits: u32,
) -> anyhow::Result<(f64, Option<serde_json::Value>)> {
    let mut times = Vec::new();
    let mut last = None;
    for _ in 0..a.runs {
        let t = Instant::now();
        let o = crate::client::KeyOptions {
            label: Some("bench".into()),
            bits: Some(bits),
            prime_threshold: Some(a.prime_threshold),
            ..Default::default()
        };
        let v = client.create_key_with("paillier", a.threshold, &o).await?;
        times.push(t.elapsed().as_secs_f64());
        eprintln!("{bits}-bit paillier keygen: {:.2} s", t.elapsed().as_secs_f64());
        last = Some(v);
    }
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    let mean = times.iter().sum::<f64>() / times.len().max(1) as f64;
    println!(
        "| Sigil REST keygen, dealerless (T = {}, prime_threshold {}) | {bits} | {} | {mean:.2} | {:.2} | {:.2} | {:.2} |",
        a.threshold,
        a.prime_threshold,
        times.len(),
        sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN),
        sorted.first().copied().unwrap_or(f64::NAN),
        sorted.last().copied().unwrap_or(f64::NAN),
    );
    Ok((mean, last))
}

/// TNO's key generations of `bits` with `python`; prints their row and
/// the ratio of their mean to Sigil's `sigil_mean`.
fn tno_keygens(python: &std::path::Path, a: &PaillierArgs, bits: u32, sigil_mean: f64) -> anyhow::Result<()> {
    let tno = tno_runs(
        python,
        bits,
        a.tno_runs.unwrap_or(a.runs),
        a.tno_timeout,
        a.prime_threshold,
    )?;
    let done: Vec<f64> = tno.iter().flatten().copied().collect();
    let mut sorted = done.clone();
    sorted.sort_by(f64::total_cmp);
    let cell = |x: Option<f64>| x.map_or_else(|| "-".to_string(), |v| format!("{v:.2}"));
    let tmean = (!done.is_empty()).then(|| done.iter().sum::<f64>() / done.len() as f64);
    println!(
        "| TNO distributed_keygen 4.3.0, same parameters, all parties in one process ({} of {} finished within {} s) | {bits} | {} | {} | {} | {} | {} |",
        done.len(),
        tno.len(),
        a.tno_timeout,
        done.len(),
        cell(tmean),
        cell(sorted.get(sorted.len() / 2).copied()),
        cell(sorted.first().copied()),
        cell(sorted.last().copied()),
    );
    if let Some(tmean) = tmean {
        println!(
            "| mean ratio TNO / Sigil | {bits} | | {:.0}x | | | |",
            tmean / sigil_mean
        );
    }
    Ok(())
}

/// `count` sequential REST decryptions with the Paillier `key` (each
/// plaintext checked); their latency row.
pub(crate) async fn paillier_decrypts(
    client: &Client,
    key: &serde_json::Value,
    bits: u32,
    count: usize,
) -> anyhow::Result<Row> {
    use sigil_paillier::rug::Integer;
    let id = key["key_id"].as_str().ok_or_else(|| anyhow!("no key_id"))?.to_string();
    let n: Integer = key["n"].as_str().ok_or_else(|| anyhow!("no n"))?.parse()?;
    let pk = sigil_paillier::decrypt::PublicKey::new(n, Integer::from(1), 1, 0);
    let mut h = hist()?;
    let start = Instant::now();
    for k in 0..count {
        let m = Integer::from(k * 1000 + 7);
        let c = pk.encrypt(&m, &mut rand::rngs::OsRng).map_err(|e| anyhow!("{e}"))?;
        let t = Instant::now();
        let v = client
            .post(
                &format!("/v1/keys/{id}/decrypt"),
                &serde_json::json!({"ciphertext": c.to_string()}),
            )
            .await?;
        h.record(u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX))?;
        anyhow::ensure!(v["plaintext"] == m.to_string().as_str(), "wrong plaintext");
    }
    Ok(row(format!("REST decrypt, {bits}-bit N"), &h, start.elapsed()))
}

/// Prints a latency table: its header, then one line per row.
pub(crate) fn print_rows(rows: Vec<Row>) {
    println!("| what | count | p50 ms | p99 ms | per second |");
    println!("|---|---:|---:|---:|---:|");
    for r in rows {
        println!(
            "| {} | {} | {:.2} | {:.2} | {:.0} |",
            r.what, r.count, r.p50_ms, r.p99_ms, r.per_sec
        );
    }
}

/// Options of `sigil bench sign`.
#[derive(Args, Debug)]
pub struct SignArgs {
    /// Node URLs; requests go round-robin (repeat the flag, or comma-separate).
    #[arg(
        long = "url",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:7070,http://127.0.0.1:7071,http://127.0.0.1:7072"
    )]
    pub urls: Vec<String>,
    /// Who signs the requests.
    #[command(flatten)]
    pub auth: crate::client::AuthArgs,
    /// Scheme.
    #[arg(long, default_value = "frost-ed25519")]
    pub scheme: String,
    /// Threshold of the benchmark key.
    #[arg(long, default_value_t = 2)]
    pub threshold: u16,
    /// Signing requests in the concurrent phase.
    #[arg(short = 'n', long, default_value_t = 5000)]
    pub requests: usize,
    /// Concurrency of the concurrent phase.
    #[arg(short = 'c', long, default_value_t = 32)]
    pub concurrency: usize,
    /// Sequential signing requests (latency at concurrency 1).
    #[arg(long, default_value_t = 500)]
    pub sequential: usize,
    /// Keys created to time the DKG.
    #[arg(long, default_value_t = 30)]
    pub dkg: usize,
    /// Message size in bytes (ECDSA: must be 32, the digest).
    #[arg(long, default_value_t = 32)]
    pub message_bytes: usize,
    /// Sign with this existing key instead of the last one the DKG phase made.
    #[arg(long)]
    pub key: Option<String>,
    /// Skip the concurrent phase.
    #[arg(long)]
    pub no_concurrent: bool,
    /// ECDSA in-process floor: aux info of the n parties (JSON array of
    /// `cggmp21` AuxInfo, as the `ecdsa_sim` fixtures). Defaults to the
    /// committed test fixture when run from the repository; without it the
    /// ECDSA floor is skipped.
    #[arg(long)]
    pub ecdsa_aux: Option<std::path::PathBuf>,
    /// Full signatures (and presignatures) in the ECDSA in-process floor.
    #[arg(long, default_value_t = 10)]
    pub ecdsa_floor: usize,
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

pub(crate) struct Row {
    what: String,
    count: usize,
    p50_ms: f64,
    p99_ms: f64,
    per_sec: f64,
}

pub(crate) fn row(what: impl Into<String>, h: &Histogram<u64>, wall: Duration) -> Row {
    Row {
        what: what.into(),
        count: usize::try_from(h.len()).unwrap_or(0),
        p50_ms: ms(h.value_at_quantile(0.5)),
        p99_ms: ms(h.value_at_quantile(0.99)),
        per_sec: h.len() as f64 / wall.as_secs_f64().max(1e-9),
    }
}

pub(crate) fn hist() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, 600_000_000, 3).map_err(|e| anyhow!("{e}"))
}

async fn load(
    clients: &[Client],
    key: &str,
    n: usize,
    c: usize,
    msg_len: usize,
    scheme: Scheme,
    public_key: &[u8],
) -> anyhow::Result<(Histogram<u64>, Duration)> {
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..c.max(1) {
        let next = next.clone();
        let clients = clients.to_vec();
        let key = key.to_string();
        let public_key = public_key.to_vec();
        tasks.push(tokio::spawn(async move {
            let mut h = hist()?;
            let mut rng = StdRng::from_entropy();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let mut msg = vec![0u8; msg_len];
                rng.fill_bytes(&mut msg);
                let client = &clients[i % clients.len()];
                let t = Instant::now();
                let v = client.sign(&key, &msg).await?;
                h.record(u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX))?;
                if i < 20 {
                    // Check a sample with the independent verifier.
                    let sig = hex::decode(v["signature"].as_str().unwrap_or_default())?;
                    scheme
                        .verify(&public_key, &msg, &sig)
                        .map_err(|e| anyhow!("bad signature: {e}"))?;
                }
            }
            anyhow::Ok(h)
        }));
    }
    let mut total = hist()?;
    for t in tasks {
        total.add(t.await??)?;
    }
    Ok((total, start.elapsed()))
}

/// In-process floor: `count` DKGs and signatures of `scheme`, all parties
/// in one process over `round_based`'s simulated network.
async fn floor(scheme: Scheme, t: u16, n: u16, count: usize) -> anyhow::Result<(Row, Row)> {
    with_ciphersuite!(scheme, C => {
        let mut h_dkg = hist()?;
        let mut h_sign = hist()?;
        let mut keys = Vec::new();
        let start = Instant::now();
        for k in 0..count.min(50) {
            let sid = [k as u8; 32];
            let t0 = Instant::now();
            let out = async_env::run(n, |i, party| async move {
                let mut rng = StdRng::from_entropy();
                dkg::run::<C, _, _>(party, &sid, i, n, t, &mut rng).await
            })
            .await
            .into_vec();
            h_dkg.record(u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX))?;
            keys = out.into_iter().collect::<Result<Vec<_>, _>>()?;
        }
        let dkg_wall = start.elapsed();
        let signers: Vec<u16> = (0..t).collect();
        let start = Instant::now();
        for _ in 0..count {
            let t0 = Instant::now();
            let out = async_env::run(t, |i, party| {
                let o = &keys[usize::from(i)];
                let (kp, pkp): (frost_core::keys::KeyPackage<C>, frost_core::keys::PublicKeyPackage<C>) =
                    (o.key_package.clone(), o.public_key_package.clone());
                let signers = signers.clone();
                async move {
                    let mut rng = StdRng::from_entropy();
                    sign::run::<C, _, _>(party, i, &signers, &kp, &pkp, b"floor", &mut rng).await
                }
            })
            .await
            .into_vec();
            h_sign.record(u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX))?;
            anyhow::ensure!(out.iter().all(Result::is_ok), "floor signing failed");
        }
        let sign_wall = start.elapsed();
        Ok((
            row(format!("in-process DKG {t}-of-{n} (all parties, one process)"), &h_dkg, dkg_wall),
            row(format!("in-process sign {t}-of-{n} (all signers, one process)"), &h_sign, sign_wall),
        ))
    }, other => Err(anyhow!("no in-process floor for {other}")))
}

/// ECDSA in-process floor: `count` full CGGMP21 signings and presignings
/// with all `t` signers on one thread over `round_based`'s simulated
/// network (so CPU per signer is about p50 / t), plus the local step that
/// turns a presignature into a signature (issue partials, combine).
async fn ecdsa_floor(scheme: Scheme, aux: Vec<ecdsa::AuxInfo>, t: u16, count: usize) -> anyhow::Result<Vec<Row>> {
    let n = u16::try_from(aux.len())?;
    with_curve!(scheme, E => {
        let sid = [7u8; 32];
        let shares = async_env::run(n, |i, party| async move {
            let mut rng = StdRng::from_entropy();
            ecdsa::keygen::<E, _, _>(party, &sid, i, n, t, &mut rng).await
        })
        .await
        .into_vec();
        let shares: Vec<ecdsa::KeyShare<E>> = shares
            .into_iter()
            .zip(aux)
            .map(|(s, a)| ecdsa::complete(s?, a))
            .collect::<Result<_, _>>()?;
        let signers: Vec<u16> = (0..t).collect();
        let digest = [0x5au8; 32];
        let (mut h_sign, mut h_pre, mut h_local) = (hist()?, hist()?, hist()?);
        let (mut sign_wall, mut pre_wall, mut local_wall) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
        for k in 0..count {
            let sid = [k as u8; 32];
            let t0 = Instant::now();
            let out = async_env::run(t, |i, party| {
                let share = shares[usize::from(i)].clone();
                let signers = signers.clone();
                async move {
                    let mut rng = StdRng::from_entropy();
                    ecdsa::sign::<E, _, _>(party, &sid, i, &signers, &share, &digest, &[], &mut rng).await
                }
            })
            .await
            .into_vec();
            sign_wall += t0.elapsed();
            h_sign.record(u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX))?;
            anyhow::ensure!(out.iter().all(Result::is_ok), "floor signing failed");

            let t0 = Instant::now();
            let presigs = async_env::run(t, |i, party| {
                let share = shares[usize::from(i)].clone();
                let signers = signers.clone();
                async move {
                    let mut rng = StdRng::from_entropy();
                    ecdsa::presign::<E, _, _>(party, &sid, i, &signers, &share, &mut rng).await
                }
            })
            .await
            .into_vec();
            pre_wall += t0.elapsed();
            h_pre.record(u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX))?;
            let presigs = presigs.into_iter().collect::<Result<Vec<_>, _>>()?;

            let t0 = Instant::now();
            let scalar = ecdsa::cggmp21::generic_ec::Scalar::<E>::from_be_bytes_mod_order(digest);
            let partials: Vec<_> = presigs
                .into_iter()
                .map(|p| p.issue_partial_signature(ecdsa::cggmp21::DataToSign::from_scalar(scalar)))
                .collect();
            let sig = ecdsa::cggmp21::PartialSignature::combine(&partials).ok_or_else(|| anyhow!("combine failed"))?;
            local_wall += t0.elapsed();
            h_local.record(u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX))?;
            let data = ecdsa::cggmp21::DataToSign::from_scalar(scalar);
            sig.verify(&shares[0].shared_public_key, &data).map_err(|e| anyhow!("floor signature invalid: {e}"))?;
        }
        Ok(vec![
            row(format!("in-process full sign {t}-of-{n} ({t} signers on one thread; CPU per signer = p50 / {t})"), &h_sign, sign_wall),
            row(format!("in-process presign {t}-of-{n} ({t} signers on one thread)"), &h_pre, pre_wall),
            row(format!("in-process presignature -> signature (issue {t} partials, combine)"), &h_local, local_wall),
        ])
    }, other => Err(anyhow!("no ECDSA floor for {other}")))
}

/// Runs a benchmark.
pub async fn run(cmd: BenchCmd) -> anyhow::Result<()> {
    match cmd {
        BenchCmd::Sign(a) => bench_sign(a).await,
        BenchCmd::Paillier(p) => bench_paillier(p).await,
        BenchCmd::Soak(s) => crate::soak::run(s).await,
        BenchCmd::Reshare(r) => crate::bench_reshare::run(r).await,
        BenchCmd::External(e) => crate::bench_external::run(e).await,
    }
}

/// `sigil bench sign`: REST DKG, REST signing (sequential, then
/// concurrent) and the in-process floor; prints the table.
async fn bench_sign(a: SignArgs) -> anyhow::Result<()> {
    let scheme: Scheme = a.scheme.parse()?;
    let tokens = crate::client::tokens(&a.auth)?;
    let clients: Vec<Client> = a.urls.iter().map(|u| Client::with_url(u, tokens.clone())).collect();
    let first = clients.first().ok_or_else(|| anyhow!("no --url"))?;
    let health = first
        .get("/health")
        .await
        .context("is the cluster running? (sigil dev)")?;
    let n_nodes = u16::try_from(health["nodes"].as_u64().unwrap_or(3)).unwrap_or(3);
    let mut rows = Vec::new();
    let key = rest_dkg(&clients, &a, scheme, n_nodes, &mut rows).await?;
    let key_id = key["key_id"].as_str().ok_or_else(|| anyhow!("no key_id"))?.to_string();
    let public_key = hex::decode(key["public_key"].as_str().unwrap_or_default())?;
    rest_sign(&clients, &a, scheme, n_nodes, &key_id, &public_key, &mut rows).await?;
    floor_rows(&a, scheme, n_nodes, &mut rows).await?;
    print_rows(rows);
    Ok(())
}

/// `a.dkg` sequential REST DKGs, round-robin over the nodes (their row
/// added to `rows`); returns `--key` or else the last key made.
async fn rest_dkg(
    clients: &[Client],
    a: &SignArgs,
    scheme: Scheme,
    n_nodes: u16,
    rows: &mut Vec<Row>,
) -> anyhow::Result<serde_json::Value> {
    let first = clients.first().ok_or_else(|| anyhow!("no --url"))?;
    let mut h = hist()?;
    let start = Instant::now();
    let mut key = match &a.key {
        Some(id) => Some(first.get(&format!("/v1/keys/{id}")).await?),
        None => None,
    };
    for i in 0..a.dkg {
        let t = Instant::now();
        let v = clients[i % clients.len()]
            .create_key(&a.scheme, a.threshold, None, Some("bench".into()))
            .await?;
        h.record(u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX))?;
        key = Some(v);
    }
    if a.dkg > 0 {
        rows.push(row(
            format!("REST DKG {}-of-{n_nodes} {scheme}", a.threshold),
            &h,
            start.elapsed(),
        ));
    }
    key.ok_or_else(|| anyhow!("no key: give --key or --dkg > 0"))
}

/// REST signing with `key_id`: a warm-up, latency at concurrency 1, then
/// (unless `--no-concurrent`) the concurrent load; rows added to `rows`.
async fn rest_sign(
    clients: &[Client],
    a: &SignArgs,
    scheme: Scheme,
    n_nodes: u16,
    key_id: &str,
    public_key: &[u8],
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    // Warm-up (connections; FROST only, since for ECDSA it would eat the
    // presignature pool), then latency at concurrency 1, then load.
    if !schemes::uses_presignatures(scheme) {
        load(clients, key_id, 50, 4, a.message_bytes, scheme, public_key).await?;
    }
    let (h, wall) = load(clients, key_id, a.sequential, 1, a.message_bytes, scheme, public_key).await?;
    rows.push(row(
        format!("REST sign {}-of-{n_nodes}, concurrency 1", a.threshold),
        &h,
        wall,
    ));
    if !a.no_concurrent {
        let (h, wall) = load(
            clients,
            key_id,
            a.requests,
            a.concurrency,
            a.message_bytes,
            scheme,
            public_key,
        )
        .await?;
        rows.push(row(
            format!("REST sign {}-of-{n_nodes}, concurrency {}", a.threshold, a.concurrency),
            &h,
            wall,
        ));
    }
    Ok(())
}

/// The in-process floor of `scheme` (FROST: DKG and signing; ECDSA: with
/// the aux info of `--ecdsa-aux` or the test fixture, if found); rows
/// added to `rows`.
async fn floor_rows(a: &SignArgs, scheme: Scheme, n_nodes: u16, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    // (Paillier keys do not sign: the REST phase has failed before this.)
    let family = schemes::family(scheme);
    if family != Family::Ecdsa {
        let (fd, fs) = floor(scheme, a.threshold, n_nodes, 500).await?;
        rows.push(fd);
        rows.push(fs);
    } else if a.ecdsa_floor > 0 {
        let path = a
            .ecdsa_aux
            .clone()
            .unwrap_or_else(|| format!("crates/sigil-crypto/tests/fixtures/ecdsa_aux_n{n_nodes}.json").into());
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let aux: Vec<ecdsa::AuxInfo> =
                    serde_json::from_str(&text).with_context(|| format!("aux info in {}", path.display()))?;
                rows.extend(ecdsa_floor(scheme, aux, a.threshold, a.ecdsa_floor).await?);
            }
            Err(e) => eprintln!("no ECDSA in-process floor: {}: {e} (give --ecdsa-aux)", path.display()),
        }
    }
    Ok(())
}
