//! Threshold ECDSA (CGGMP21) in the node: aux info once per ordered party
//! set, from safe primes out of the node's sealed pool; keygen; signing.
//!
//! Aux info (Paillier keys and ring-Pedersen parameters) costs seconds of
//! CPU per party, so it is generated once per ordered party set (the
//! coordinator runs an aux session before the first ECDSA keygen of a set),
//! stored sealed as record `("aux_info", "<ids>", node, 0)`, and reused for
//! every key of that set. Each aux run consumes two 1536-bit safe primes
//! from the local pool; the pool is refilled in the background (`StdRng`
//! seeded from `OsRng`, not `OsRng` itself, which spends its time in the
//! kernel) and can be seeded from a file of primes.

use std::sync::Arc;
use std::time::Duration;

use rand::SeedableRng;
use sigil_crypto::ecdsa::{self, cggmp21};
use sigil_crypto::scheme::EcdsaPublic;
use sigil_crypto::{with_curve, Scheme};
use sigil_proto::peer::session_proposal::Kind;
use sigil_proto::peer::{AuxProposal, SessionOutcome};
use zeroize::Zeroizing;

use crate::error::SessionError;
use crate::session::{self, SessionSpec};
use crate::{internal, CachedKey, Node};

/// Bit length of the safe primes of CGGMP21 aux info at 128-bit security
/// (4 x 384).
pub const PRIME_BITS: u32 = 1536;

/// The name of an ordered party set: node ids joined by commas.
pub fn party_set(parties: &[u16]) -> String {
    parties.iter().map(u16::to_string).collect::<Vec<_>>().join(",")
}

impl Node {
    /// Takes two primes from the pool, or generates them now if the pool
    /// is short (slow: seconds to tens of seconds).
    async fn primes_for_aux(&self) -> Result<ecdsa::PregeneratedPrimes, SessionError> {
        let (p, q) = match self.store.take_primes(PRIME_BITS, 2).await.map_err(internal)? {
            Some(v) => {
                let parse = |b: &[u8]| -> Result<cggmp21::rug::Integer, SessionError> {
                    let s = std::str::from_utf8(b).map_err(internal)?;
                    s.parse::<cggmp21::rug::Integer>().map_err(internal)
                };
                let p = parse(v.first().map(|x| x.as_slice()).unwrap_or_default())?;
                let q = parse(v.get(1).map(|x| x.as_slice()).unwrap_or_default())?;
                (p, q)
            }
            None => {
                tracing::info!("prime pool empty: generating two safe primes now");
                let a = generate_prime().await?;
                let b = generate_prime().await?;
                (a, b)
            }
        };
        ecdsa::PregeneratedPrimes::new(p, q).ok_or_else(|| internal("pooled primes are too small"))
    }

    /// This node's part of an aux info session for the session's parties.
    pub(crate) async fn aux_part(&self, spec: SessionSpec, _a: AuxProposal) -> Result<SessionOutcome, SessionError> {
        let set = party_set(&spec.parties);
        let n = u16::try_from(spec.parties.len()).map_err(|_| SessionError::Invalid("too many parties".into()))?;
        let primes = self.primes_for_aux().await?;
        let (me, sid) = (spec.me, spec.id);
        let aux = session::run::<ecdsa::AuxMsg, _, _, _>(&self.sessions, &self.peers, spec, |party| async move {
            let mut rng = rand::rngs::StdRng::from_rng(rand::rngs::OsRng)
                .map_err(|e| sigil_crypto::Error::Frost(e.to_string()))?;
            ecdsa::aux_info(party, &sid, me, n, primes, &mut rng).await
        })
        .await?;
        let bytes = Zeroizing::new(serde_json::to_vec(&aux).map_err(internal)?);
        self.store
            .put_aux_info(&set, self.cfg.node_id, &bytes)
            .await
            .map_err(internal)?;
        tracing::info!(party_set = %set, "aux info stored");
        Ok(SessionOutcome::default())
    }

    /// Runs aux info generation among `parties` unless this node already
    /// has it for that ordered set (every party makes it in the same
    /// session, so one node's copy speaks for all).
    ///
    /// # Errors
    /// The aux session's failure.
    pub async fn ensure_aux(&self, parties: &[u16]) -> Result<(), SessionError> {
        let set = party_set(parties);
        let _one_at_a_time = self.aux_lock.lock().await;
        if !parties.contains(&self.cfg.node_id)
            || self
                .store
                .get_aux_info(&set, self.cfg.node_id)
                .await
                .map_err(internal)?
                .is_some()
        {
            return Ok(());
        }
        tracing::info!(party_set = %set, "generating CGGMP21 aux info");
        let started = std::time::Instant::now();
        self.coordinate_with_budget(parties, Kind::Aux(AuxProposal {}), true, self.aux_timeout())
            .await?;
        metrics::histogram!("sigil_aux_info_seconds").record(started.elapsed().as_secs_f64());
        Ok(())
    }

    fn aux_timeout(&self) -> Duration {
        Duration::from_millis(self.cfg.aux_timeout_ms)
    }

    async fn load_aux(&self, parties: &[u16]) -> Result<ecdsa::AuxInfo, SessionError> {
        let set = party_set(parties);
        let bytes = self
            .store
            .get_aux_info(&set, self.cfg.node_id)
            .await
            .map_err(internal)?
            .ok_or_else(|| {
                SessionError::Invalid(format!("no aux info for party set {set} on node {}", self.cfg.node_id))
            })?;
        serde_json::from_slice(&bytes).map_err(internal)
    }

    /// ECDSA keygen part: returns the sealed-to-be share (the incomplete
    /// key share, JSON) and the public package ([`EcdsaPublic`], JSON).
    pub(crate) async fn ecdsa_keygen_part(
        &self,
        spec: SessionSpec,
        scheme: Scheme,
        n: u16,
        t: u16,
    ) -> Result<(Zeroizing<Vec<u8>>, Vec<u8>), SessionError> {
        let aux = self.load_aux(&spec.parties).await?;
        let (me, sid) = (spec.me, spec.id);
        with_curve!(scheme, E => {
            let share = session::run::<ecdsa::KeygenMsg<E>, _, _, _>(&self.sessions, &self.peers, spec, |party| async move {
                let mut rng = rand::rngs::OsRng;
                ecdsa::keygen::<E, _, _>(party, &sid, me, n, t, &mut rng).await
            })
            .await?;
            let public = EcdsaPublic {
                public_key: hex::encode(share.shared_public_key.to_bytes(true)),
                chain_code: hex::encode(share.chain_code.unwrap_or_default()),
            };
            let bytes = Zeroizing::new(serde_json::to_vec(&share).map_err(internal)?);
            // Check now that the share and our aux info fit together.
            ecdsa::complete(share, aux).map_err(internal)?;
            Ok((bytes, serde_json::to_vec(&public).map_err(internal)?))
        }, other => Err(SessionError::Invalid(format!("{other} is not ECDSA"))))
    }

    /// ECDSA signing part: full CGGMP21 signing of a 32-byte digest.
    pub(crate) async fn ecdsa_sign_part(
        &self,
        spec: SessionSpec,
        cached: &CachedKey,
        scheme: Scheme,
        signers: Vec<u16>,
        message: &[u8],
        derivation_path: &[u32],
    ) -> Result<Vec<u8>, SessionError> {
        let digest = sigil_crypto::scheme::ecdsa_digest(message).map_err(|e| SessionError::Invalid(e.to_string()))?;
        let key = &cached.record;
        with_curve!(scheme, E => {
            let material = match cached.material.get() {
                Some(m) => m.clone(),
                None => {
                    let share = self
                        .store
                        .get_share(&key.key_id, self.cfg.node_id, key.epoch)
                        .await
                        .map_err(internal)?
                        .ok_or_else(|| SessionError::Invalid(format!("no share of key {} on this node", key.key_id)))?;
                    let incomplete: ecdsa::IncompleteKeyShare<E> = serde_json::from_slice(&share).map_err(internal)?;
                    let aux = self.load_aux(&key.parties).await?;
                    let complete = ecdsa::complete(incomplete, aux).map_err(internal)?;
                    let m: Arc<dyn std::any::Any + Send + Sync> = Arc::new(complete);
                    cached.material.get_or_init(|| m).clone()
                }
            };
            let share = material
                .downcast_ref::<ecdsa::KeyShare<E>>()
                .ok_or_else(|| internal("cached key material of another scheme"))?;
            let (me, sid) = (spec.me, spec.id);
            let sig = session::run::<ecdsa::SignMsg<E>, _, _, _>(&self.sessions, &self.peers, spec, |party| async move {
                let mut rng = rand::rngs::StdRng::from_rng(rand::rngs::OsRng).map_err(|e| sigil_crypto::Error::Frost(e.to_string()))?;
                ecdsa::sign::<E, _, _>(party, &sid, me, &signers, share, &digest, derivation_path, &mut rng).await
            })
            .await?;
            let mut out = vec![0u8; 64];
            sig.write_to_slice(&mut out);
            Ok(out)
        }, other => Err(SessionError::Invalid(format!("{other} is not ECDSA"))))
    }
}

/// One 1536-bit safe prime from `fast-paillier`'s sieve (what `cggmp21`
/// uses), on a blocking thread, as a decimal string's value.
async fn generate_prime() -> Result<cggmp21::rug::Integer, SessionError> {
    tokio::task::spawn_blocking(|| {
        let mut rng = rand::rngs::StdRng::from_rng(rand::rngs::OsRng).map_err(internal)?;
        Ok(cggmp21::fast_paillier::utils::generate_safe_prime(&mut rng, PRIME_BITS))
    })
    .await
    .map_err(internal)?
}

/// Imports primes (decimal, one a line) from `path` into the pool. Lines
/// that are not numbers of the pool's size are skipped with a warning.
///
/// # Errors
/// An unreadable file or a storage failure.
pub async fn seed_primes(node: &Node, path: &std::path::Path) -> anyhow::Result<usize> {
    let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let mut n = 0;
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        match line.parse::<cggmp21::rug::Integer>() {
            Ok(p) if p.significant_bits() == PRIME_BITS => {
                node.store.put_prime(PRIME_BITS, p.to_string().as_bytes()).await?;
                n += 1;
            }
            _ => tracing::warn!(file = %path.display(), "skipping a line that is not a {PRIME_BITS}-bit number"),
        }
    }
    Ok(n)
}

/// Keeps the prime pool at `prime_pool_size`, one prime at a time.
pub async fn refill_primes(node: Arc<Node>) {
    let target = node.cfg.prime_pool_size;
    if target == 0 {
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
