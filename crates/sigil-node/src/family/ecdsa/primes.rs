//! The node's pool of 1536-bit safe primes for aux info: local generation
//! in the background, the remote prime service, and the dev-only seed file.

use std::sync::Arc;
use std::time::Duration;

use rand::SeedableRng;
use sigil_crypto::ecdsa::cggmp21;
use zeroize::Zeroizing;

use crate::error::SessionError;
use crate::{internal, Node};

/// Bit length of the safe primes of CGGMP21 aux info at 128-bit security
/// (4 x 384).
pub const PRIME_BITS: u32 = 1536;

/// One 1536-bit safe prime from Sigil's combined-sieve generator
/// (`sigil_crypto::primes`, several times faster than the `fast-paillier`
/// generator `cggmp21` ships), on a blocking thread.
pub(crate) async fn generate_prime() -> Result<cggmp21::rug::Integer, SessionError> {
    tokio::task::spawn_blocking(|| {
        let mut rng = rand::rngs::StdRng::from_rng(rand::rngs::OsRng).map_err(internal)?;
        let stop = std::sync::atomic::AtomicBool::new(false);
        sigil_crypto::primes::safe_prime(
            PRIME_BITS,
            &mut rng,
            sigil_crypto::primes::SieveTable::shared(),
            &stop,
            &sigil_crypto::primes::Stats::default(),
        )
        .map_err(internal)?
        .ok_or_else(|| internal("prime search stopped"))
    })
    .await
    .map_err(internal)?
}

/// A client of the prime pool service (`prime_source = remote`).
pub(crate) struct RemotePrimes {
    client: sigil_proto::prime::prime_service_client::PrimeServiceClient<tonic::transport::Channel>,
    token: Option<Zeroizing<String>>,
}

impl RemotePrimes {
    /// The client for `source` (None for a local source), over mTLS with
    /// this node's certificate; connects on first use.
    pub(crate) fn new(
        source: &crate::config::PrimeSource,
        ca: &tonic::transport::Certificate,
        identity: &tonic::transport::Identity,
    ) -> anyhow::Result<Option<Self>> {
        let crate::config::PrimeSource::Remote {
            url,
            server_name,
            api_token_file,
        } = source
        else {
            return Ok(None);
        };
        let tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(ca.clone())
            .identity(identity.clone())
            .domain_name(server_name.clone());
        let channel = tonic::transport::Channel::from_shared(url.clone())
            .map_err(|e| anyhow::anyhow!("prime_source.url {url}: {e}"))?
            .tls_config(tls)?
            .connect_lazy();
        let token = match api_token_file {
            Some(p) => Some(Zeroizing::new(
                std::fs::read_to_string(p)
                    .map_err(|e| anyhow::anyhow!("prime_source.api_token_file {}: {e}", p.display()))?
                    .trim()
                    .to_string(),
            )),
            None => None,
        };
        Ok(Some(Self {
            client: sigil_proto::prime::prime_service_client::PrimeServiceClient::new(channel),
            token,
        }))
    }

    /// Two 1536-bit safe primes from the service, each checked here
    /// (Baillie-PSW and Miller-Rabin on `q`, Pocklington on `p`) before use.
    pub(crate) async fn take(
        &self,
        timeout: Duration,
    ) -> Result<(cggmp21::rug::Integer, cggmp21::rug::Integer), SessionError> {
        let unavailable = |reason: String| SessionError::Internal(format!("prime service: {reason}"));
        let mut req = tonic::Request::new(sigil_proto::prime::GetPreParamsRequest {
            count: 1,
            kind: "cggmp21".into(),
        });
        req.set_timeout(timeout);
        if let Some(t) = &self.token {
            let v = format!("Bearer {}", t.as_str())
                .parse()
                .map_err(|_| unavailable("the API token is not a valid header value".into()))?;
            req.metadata_mut().insert("authorization", v);
        }
        let resp = self
            .client
            .clone()
            .get_pre_params(req)
            .await
            .map_err(|s| unavailable(format!("{:?}: {}", s.code(), s.message())))?
            .into_inner();
        let Some(sigil_proto::prime::pre_params::Params::Cggmp21(set)) =
            resp.sets.into_iter().next().and_then(|s| s.params)
        else {
            return Err(unavailable("answer holds no cggmp21 set".into()));
        };
        let parse = |s: &str| -> Result<cggmp21::rug::Integer, SessionError> {
            let x: cggmp21::rug::Integer = s.parse().map_err(|_| unavailable("a prime does not parse".into()))?;
            if x.significant_bits() != PRIME_BITS || !sigil_crypto::primes::is_safe_prime(&x) {
                return Err(unavailable(format!(
                    "served a number that is not a {PRIME_BITS}-bit safe prime"
                )));
            }
            Ok(x)
        };
        let (p, q) = (parse(&set.p)?, parse(&set.q)?);
        if p == q {
            return Err(unavailable("served the same prime twice".into()));
        }
        tracing::info!("aux-info primes from the prime service");
        Ok((p, q))
    }
}

/// Imports the safe primes of the seed file `path` (one decimal prime per
/// line; dev and tests only) into the pool. Lines that are not
/// [`PRIME_BITS`]-bit safe primes are skipped, a prime listed twice is
/// imported once, and a prime this store ever imported before (a restart,
/// the same file again) is never imported again. Returns how many were
/// added.
///
/// A seed file must never be shared between nodes: two parties with the
/// same prime can factor each other's Paillier modulus. Aux info whose
/// moduli share a factor is refused ([`sigil_crypto::ecdsa::shared_factor`]).
///
/// # Errors
/// An unreadable file or a store failure.
pub async fn seed_primes(node: &Node, path: &std::path::Path) -> anyhow::Result<usize> {
    let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let mut seen = std::collections::HashSet::new();
    let mut primes: Vec<String> = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        match line.parse::<cggmp21::rug::Integer>() {
            Ok(p) if p.significant_bits() == PRIME_BITS && sigil_crypto::primes::is_safe_prime(&p) => {
                let p = p.to_string();
                if seen.insert(p.clone()) {
                    primes.push(p);
                } else {
                    tracing::warn!(file = %path.display(), "skipping a prime listed twice");
                }
            }
            _ => tracing::warn!(file = %path.display(), "skipping a line that is not a {PRIME_BITS}-bit safe prime"),
        }
    }
    let bytes: Vec<&[u8]> = primes.iter().map(String::as_bytes).collect();
    let added = node.store.import_primes(PRIME_BITS, &bytes).await?;
    if added < primes.len() {
        tracing::info!(
            skipped = primes.len() - added,
            "seed primes imported before were not imported again"
        );
    }
    Ok(added)
}

/// Keeps the prime pool at `prime_pool_size`, one prime at a time.
pub async fn refill_primes(node: Arc<Node>) {
    let target = node.cfg.prime_pool_size;
    if target == 0 || node.remote_primes.is_some() {
        return;
    }
    loop {
        match node.store.count_primes(PRIME_BITS).await {
            Ok(have) if have < target => {
                let started = std::time::Instant::now();
                match generate_prime().await {
                    Ok(p) => {
                        if let Err(e) = node.store.put_prime(PRIME_BITS, p.to_string().as_bytes()).await {
                            tracing::warn!(error = %e, "could not store a generated prime");
                        }
                        metrics::histogram!("sigil_prime_generation_seconds").record(started.elapsed().as_secs_f64());
                        tracing::debug!(have = have + 1, target, "prime pool refilled by one");
                        continue;
                    }
                    Err(e) => tracing::warn!(error = %e, "prime generation failed"),
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not count pooled primes"),
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}
