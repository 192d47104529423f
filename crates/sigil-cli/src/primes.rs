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
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// Runs a `sigil primes` command.
pub fn run(cmd: PrimesCmd) -> anyhow::Result<()> {
    match cmd {
        PrimesCmd::Generate(a) => generate(a),
        PrimesCmd::Bench(a) => bench(a),
        PrimesCmd::Serve { .. } => Err(anyhow!("serve runs from main")),
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

fn bench(a: BenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(a.count > 0, "--count must be at least 1");
    // Build the shared sieve table before timing anything.
    let t0 = Instant::now();
    let table = primes::SieveTable::shared();
    eprintln!(
        "sieve table: {} primes below 2^24 in {:.0} ms",
        table.len(),
        t0.elapsed().as_secs_f64() * 1e3
    );
    let mut rows = Vec::new();
    for &bits in &a.bits {
        if !a.no_openssl {
            let mut times = Vec::new();
            let start = Instant::now();
            for _ in 0..a.count {
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
            rows.push((bits, s));
        }
        let mut thread_counts = vec![1];
        if !a.no_parallel && cores() > 1 {
            thread_counts.push(cores());
        }
        for threads in thread_counts {
            let times = Mutex::new(Vec::new());
            let last = Mutex::new(Instant::now());
            let stats = Stats::default();
            let start = Instant::now();
            *last.lock().unwrap_or_else(|e| e.into_inner()) = start;
            let n = primes::generate(bits, a.count, threads, &AtomicBool::new(false), &stats, &|p| {
                let now = Instant::now();
                let mut l = last.lock().unwrap_or_else(|e| e.into_inner());
                times
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((now - *l).as_secs_f64());
                *l = now;
                debug_assert_eq!(p.significant_bits(), bits);
            })?;
            anyhow::ensure!(n == a.count, "generator stopped early");
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
                stats.tested.load(Ordering::Relaxed) as f64 / a.count as f64
            );
            rows.push((bits, s));
        }
    }
    println!("| generator | bits | count | total s | mean s/prime | median s | primes/s | vs openssl |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for (bits, s) in &rows {
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
    Ok(())
}
