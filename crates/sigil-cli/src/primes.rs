//! `sigil primes`: generate safe primes (the combined-sieve generator of
//! `sigil_crypto::primes`) and benchmark it against OpenSSL.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use rand::SeedableRng;
use sigil_crypto::preparams::{Kind, TssLibPreParams};
use sigil_crypto::primes::{self, rug::Integer, Stats};

/// Safe primes.
#[derive(Subcommand)]
pub enum PrimesCmd {
    /// Write N safe primes of exactly B bits, one decimal number a line,
    /// with a progress bar (rate, ETA) on a terminal.
    Generate(GenerateArgs),
    /// Time the generator against `openssl prime -generate -safe`, side by
    /// side in one run (same bit sizes and counts).
    Bench(BenchArgs),
    /// Load a running prime service: wait until its pool holds
    /// `--requests` sets, then `GetPreParams(1)` from `--concurrency`
    /// clients at once; prints p50/p99 latency.
    BenchService(ServiceBenchArgs),
    /// Run the prime pool service: gRPC `prime.v1.PrimeService` over mTLS.
    Serve {
        /// TOML configuration; every setting also from SIGIL_PRIMES_* env.
        #[arg(long, env = "SIGIL_PRIMES_CONFIG")]
        config: PathBuf,
    },
}

/// Options of `sigil primes generate`.
#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// Size of each safe prime p in bits (p = 2q + 1, top two bits set).
    #[arg(long, default_value_t = 1536)]
    pub bits: u32,
    /// How many.
    #[arg(long, default_value_t = 1)]
    pub count: usize,
    /// Search threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Output file (default: standard output). Written as primes are found.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Options of `sigil primes bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Bit sizes (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1024,1536")]
    pub bits: Vec<u32>,
    /// Safe primes per size and generator.
    #[arg(long, default_value_t = 30)]
    pub count: usize,
    /// Skip OpenSSL (e.g. where it is not installed).
    #[arg(long)]
    pub no_openssl: bool,
    /// Skip the all-cores run.
    #[arg(long)]
    pub no_parallel: bool,
    /// Pre-parameter sets per kind (CGGMP21 and tss-lib) to time, made
    /// with all cores; 0 skips.
    #[arg(long, default_value_t = 0)]
    pub sets: usize,
}

/// Options of `sigil primes bench-service`.
#[derive(Args, Debug)]
pub struct ServiceBenchArgs {
    /// `https://host:port` of the service.
    #[arg(long, default_value = "https://127.0.0.1:7300")]
    pub url: String,
    /// Name in the service's certificate (`sigil certs init` makes
    /// `prime-service.pem` for it).
    #[arg(long, default_value = "sigil-prime-service")]
    pub server_name: String,
    /// Cluster CA certificate (PEM).
    #[arg(long)]
    pub ca: PathBuf,
    /// Client certificate and key (PEM), issued by the CA.
    #[arg(long)]
    pub cert: PathBuf,
    /// Client key (PEM).
    #[arg(long)]
    pub key: PathBuf,
    /// File with the API token, if the service requires one.
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Kind to request.
    #[arg(long, default_value = "cggmp21")]
    pub kind: String,
    /// Requests in total (the pool must hold this many sets first).
    #[arg(long, default_value_t = 100)]
    pub requests: usize,
    /// Concurrent clients (one connection each).
    #[arg(long, default_value_t = 50)]
    pub concurrency: usize,
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// Runs a `sigil primes` command.
pub fn run(cmd: PrimesCmd) -> anyhow::Result<()> {
    match cmd {
        PrimesCmd::Generate(a) => generate(a),
        PrimesCmd::Bench(a) => bench(a),
        PrimesCmd::Serve { .. } | PrimesCmd::BenchService(_) => Err(anyhow!("runs from main")),
    }
}

fn generate(a: GenerateArgs) -> anyhow::Result<()> {
    anyhow::ensure!(a.count > 0, "--count must be at least 1");
    let threads = a.threads.unwrap_or_else(cores);
    let out: Box<dyn Write + Send> = match &a.out {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("create {}", path.display()))?,
        )),
        None => Box::new(std::io::stdout()),
    };
    let out = Mutex::new(out);
    let bar = ProgressBar::new(a.count as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} {pos}/{len} safe primes of {msg} [{elapsed_precise}] {wide_bar} {per_sec} ETA {eta}",
        )
        .map_err(|e| anyhow!("{e}"))?,
    );
    bar.set_message(format!("{} bits, {threads} threads", a.bits));
    bar.enable_steady_tick(Duration::from_millis(200));
    let write_error = Mutex::new(None);
    let stats = Stats::default();
    let start = Instant::now();
    let n = primes::generate(a.bits, a.count, threads, &AtomicBool::new(false), &stats, &|p| {
        let mut w = out.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = writeln!(w, "{p}").and_then(|()| w.flush()) {
            write_error.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(e);
        }
        bar.inc(1);
    })?;
    bar.finish_and_clear();
    if let Some(e) = write_error.into_inner().unwrap_or_else(|e| e.into_inner()) {
        return Err(anyhow!("writing primes: {e}"));
    }
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "{n} safe primes of {} bits in {secs:.1} s ({:.2}/s, {threads} threads, {} sieve survivors tested)",
        a.bits,
        n as f64 / secs,
        stats.tested.load(Ordering::Relaxed)
    );
    Ok(())
}

/// One `openssl prime -generate -safe -bits B`, checked.
fn openssl_safe_prime(bits: u32) -> anyhow::Result<Integer> {
    let out = std::process::Command::new("openssl")
        .args(["prime", "-generate", "-safe", "-bits", &bits.to_string()])
        .output()
        .context("running openssl (install it, or pass --no-openssl)")?;
    anyhow::ensure!(
        out.status.success(),
        "openssl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout)?;
    let p: Integer = text.trim().parse().map_err(|e| anyhow!("openssl output: {e}"))?;
    Ok(p)
}

struct Sample {
    what: String,
    times: Vec<f64>,
    wall: f64,
}

impl Sample {
    fn median(&self) -> f64 {
        let mut t = self.times.clone();
        t.sort_by(f64::total_cmp);
        t.get(t.len() / 2).copied().unwrap_or(f64::NAN)
    }
}

/// `sigil primes bench`: OpenSSL and the generator (one thread, then all
/// cores) per size, then pre-parameter sets; prints the tables.
fn bench(a: BenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(a.count > 0, "--count must be at least 1");
    build_sieve_table();
    let mut rows = Vec::new();
    for &bits in &a.bits {
        if !a.no_openssl {
            rows.push((bits, openssl_sample(bits, a.count)?));
        }
        let mut thread_counts = vec![1];
        if !a.no_parallel && cores() > 1 {
            thread_counts.push(cores());
        }
        for threads in thread_counts {
            rows.push((bits, generator_sample(bits, a.count, threads)?));
        }
    }
    let mut set_rows = Vec::new();
    if a.sets > 0 {
        for kind in [Kind::Cggmp21, Kind::TssLib] {
            set_rows.push(preparams_sample(kind, a.sets)?);
        }
    }
    print_set_rows(&set_rows);
    print_prime_rows(&rows);
    Ok(())
}

/// Builds the shared sieve table (before timing anything) and reports it.
fn build_sieve_table() {
    let t0 = Instant::now();
    let table = primes::SieveTable::shared();
    eprintln!(
        "sieve table: {} primes below 2^24 in {:.0} ms",
        table.len(),
        t0.elapsed().as_secs_f64() * 1e3
    );
}

/// Times `count` safe primes of `bits` from `openssl prime`, one at a time.
fn openssl_sample(bits: u32, count: usize) -> anyhow::Result<Sample> {
    let mut times = Vec::new();
    let start = Instant::now();
    for _ in 0..count {
        let t = Instant::now();
        let p = openssl_safe_prime(bits)?;
        times.push(t.elapsed().as_secs_f64());
        anyhow::ensure!(p.significant_bits() == bits, "openssl gave a prime of another size");
    }
    let s = Sample {
        what: format!("openssl prime -generate -safe -bits {bits} (1 thread)"),
        times,
        wall: start.elapsed().as_secs_f64(),
    };
    eprintln!("{}: {:.1} s", s.what, s.wall);
    Ok(s)
}

/// Times `count` safe primes of `bits` from the generator on `threads`
/// threads (the time between consecutive primes).
fn generator_sample(bits: u32, count: usize, threads: usize) -> anyhow::Result<Sample> {
    let times = Mutex::new(Vec::new());
    let last = Mutex::new(Instant::now());
    let stats = Stats::default();
    let start = Instant::now();
    *last.lock().unwrap_or_else(|e| e.into_inner()) = start;
    let n = primes::generate(bits, count, threads, &AtomicBool::new(false), &stats, &|p| {
        let now = Instant::now();
        let mut l = last.lock().unwrap_or_else(|e| e.into_inner());
        times
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((now - *l).as_secs_f64());
        *l = now;
        debug_assert_eq!(p.significant_bits(), bits);
    })?;
    anyhow::ensure!(n == count, "generator stopped early");
    let s = Sample {
        what: format!("sigil primes generate --bits {bits} --threads {threads}"),
        times: times.into_inner().unwrap_or_else(|e| e.into_inner()),
        wall: start.elapsed().as_secs_f64(),
    };
    eprintln!(
        "{}: {:.1} s ({} survivors tested, {:.0} per prime)",
        s.what,
        s.wall,
        stats.tested.load(Ordering::Relaxed),
        stats.tested.load(Ordering::Relaxed) as f64 / count as f64
    );
    Ok(s)
}

/// Times `sets` pre-parameter sets of `kind`, each made with all cores.
fn preparams_sample(kind: Kind, sets: usize) -> anyhow::Result<Sample> {
    let mut times = Vec::new();
    let mut rng = rand::rngs::StdRng::from_rng(rand::rngs::OsRng)?;
    for _ in 0..sets {
        let t = Instant::now();
        preparams_set(kind, &mut rng)?;
        times.push(t.elapsed().as_secs_f64());
    }
    let s = Sample {
        what: format!(
            "{} pre-parameters, one set ({} x {}-bit safe primes, {} threads)",
            kind.as_str(),
            kind.primes(),
            kind.bits(),
            cores()
        ),
        wall: times.iter().sum(),
        times,
    };
    eprintln!("{}: median {:.2} s", s.what, s.median());
    Ok(s)
}

/// Makes the safe primes of one pre-parameter set of `kind` (tss-lib: and
/// checks they make a set, adding primes until they do).
fn preparams_set(kind: Kind, rng: &mut rand::rngs::StdRng) -> anyhow::Result<()> {
    let found = Mutex::new(Vec::new());
    primes::generate(
        kind.bits(),
        kind.primes(),
        cores(),
        &AtomicBool::new(false),
        &Stats::default(),
        &|p| {
            found.lock().unwrap_or_else(|e| e.into_inner()).push(p);
        },
    )?;
    let mut found = found.into_inner().unwrap_or_else(|e| e.into_inner());
    if kind == Kind::TssLib {
        // One more prime in the rare case no pair is 2^1020 apart.
        while TssLibPreParams::from_safe_primes(found.clone(), rng).is_err() {
            let more = Mutex::new(None);
            primes::generate(kind.bits(), 1, 1, &AtomicBool::new(false), &Stats::default(), &|p| {
                *more.lock().unwrap_or_else(|e| e.into_inner()) = Some(p);
            })?;
            found.extend(more.into_inner().unwrap_or_else(|e| e.into_inner()));
        }
    }
    Ok(())
}

/// Prints one line per pre-parameter sample.
fn print_set_rows(set_rows: &[Sample]) {
    for s in set_rows {
        println!(
            "| {} | sets | {} | median {:.2} s | mean {:.2} s |",
            s.what,
            s.times.len(),
            s.median(),
            s.wall / s.times.len() as f64
        );
    }
}

/// Prints the generator table, each row against OpenSSL's of its size.
fn print_prime_rows(rows: &[(u32, Sample)]) {
    println!("| generator | bits | count | total s | mean s/prime | median s | primes/s | vs openssl |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for (bits, s) in rows {
        let openssl = rows
            .iter()
            .find(|(b, o)| b == bits && o.what.starts_with("openssl"))
            .map(|(_, o)| o.wall);
        let ratio = openssl.map_or("".to_string(), |o| format!("{:.2}x", s.wall / o));
        println!(
            "| {} | {bits} | {} | {:.1} | {:.3} | {:.3} | {:.2} | {ratio} |",
            s.what,
            s.times.len(),
            s.wall,
            s.wall / s.times.len() as f64,
            s.median(),
            s.times.len() as f64 / s.wall,
        );
    }
}

/// `sigil primes bench-service`: waits for a warm pool, then times
/// `GetPreParams(1)` from `--concurrency` clients; prints the table.
pub async fn bench_service(a: ServiceBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        a.requests > 0 && a.concurrency > 0,
        "--requests and --concurrency must be positive"
    );
    let tls = tls_config(&a)?;
    let token = match &a.token_file {
        Some(p) => Some(std::fs::read_to_string(p)?.trim().to_string()),
        None => None,
    };
    let mut status_client = connect(&a.url, &tls).await.context("connecting to the prime service")?;
    wait_for_pool(&mut status_client, &a, token.as_deref()).await?;
    let mut clients = Vec::new();
    for _ in 0..a.concurrency {
        clients.push(connect(&a.url, &tls).await?);
    }
    let start = Instant::now();
    let all = load_service(clients, &a, token.as_deref()).await?;
    let wall = start.elapsed().as_secs_f64();
    println!(
        "| GetPreParams(1, {}) from a warm pool | requests | concurrency | p50 ms | p99 ms | per second |",
        a.kind
    );
    println!("|---|---:|---:|---:|---:|---:|");
    println!(
        "| {} | {} | {} | {:.2} | {:.2} | {:.0} |",
        a.url,
        all.len(),
        a.concurrency,
        all.value_at_quantile(0.5) as f64 / 1e3,
        all.value_at_quantile(0.99) as f64 / 1e3,
        all.len() as f64 / wall
    );
    Ok(())
}

/// A prime service client.
type ServiceClient = sigil_proto::prime::prime_service_client::PrimeServiceClient<tonic::transport::Channel>;

/// The client TLS configuration: the CA, the client identity, the name.
fn tls_config(a: &ServiceBenchArgs) -> anyhow::Result<tonic::transport::ClientTlsConfig> {
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};
    let read = |p: &PathBuf| std::fs::read(p).with_context(|| p.display().to_string());
    Ok(ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read(&a.ca)?))
        .identity(Identity::from_pem(read(&a.cert)?, read(&a.key)?))
        .domain_name(a.server_name.clone()))
}

/// Opens one connection to the service at `url`.
async fn connect(url: &str, tls: &tonic::transport::ClientTlsConfig) -> anyhow::Result<ServiceClient> {
    let ch = tonic::transport::Channel::from_shared(url.to_string())?
        .tls_config(tls.clone())?
        .connect()
        .await?;
    Ok(ServiceClient::new(ch))
}

/// Adds the bearer `token`, if any, to a request.
fn with_token<T>(mut r: tonic::Request<T>, token: Option<&str>) -> anyhow::Result<tonic::Request<T>> {
    if let Some(t) = token {
        r.metadata_mut().insert("authorization", format!("Bearer {t}").parse()?);
    }
    Ok(r)
}

/// Polls the pool status until it holds `--requests` sets of `--kind`,
/// with a progress bar.
async fn wait_for_pool(client: &mut ServiceClient, a: &ServiceBenchArgs, token: Option<&str>) -> anyhow::Result<()> {
    use sigil_proto::prime::GetPoolStatusRequest;
    let bar = ProgressBar::new(a.requests as u64);
    bar.set_style(
        ProgressStyle::with_template("waiting for the pool: {pos}/{len} {kind} sets [{elapsed_precise}] {wide_bar}")
            .map_err(|e| anyhow!("{e}"))?,
    );
    loop {
        let s = client
            .get_pool_status(with_token(tonic::Request::new(GetPoolStatusRequest {}), token)?)
            .await?
            .into_inner();
        let have = s
            .kinds
            .iter()
            .find(|k| k.kind == a.kind)
            .map_or(0, |k| k.pool_size as u64);
        bar.set_position(have.min(a.requests as u64));
        if have >= a.requests as u64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    bar.finish_and_clear();
    Ok(())
}

/// `--requests` `GetPreParams(1)` calls shared among `clients`, all at
/// once; the latency histogram (microseconds).
async fn load_service(
    clients: Vec<ServiceClient>,
    a: &ServiceBenchArgs,
    token: Option<&str>,
) -> anyhow::Result<hdrhistogram::Histogram<u64>> {
    use sigil_proto::prime::GetPreParamsRequest;
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for mut c in clients {
        let (next, kind, total) = (next.clone(), a.kind.clone(), a.requests);
        let token = token.map(str::to_string);
        tasks.push(tokio::spawn(async move {
            let mut h = hdrhistogram::Histogram::<u64>::new(3)?;
            while next.fetch_add(1, Ordering::Relaxed) < total {
                let r = with_token(
                    tonic::Request::new(GetPreParamsRequest {
                        count: 1,
                        kind: kind.clone(),
                    }),
                    token.as_deref(),
                )?;
                let t = Instant::now();
                let resp = c.get_pre_params(r).await?.into_inner();
                h.record(u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX))?;
                anyhow::ensure!(resp.sets.len() == 1, "wrong number of sets");
            }
            Ok::<_, anyhow::Error>(h)
        }));
    }
    let mut all = hdrhistogram::Histogram::<u64>::new(3)?;
    for t in tasks {
        all.add(t.await??)?;
    }
    Ok(all)
}
