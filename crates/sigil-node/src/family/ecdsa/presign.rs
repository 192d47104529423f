//! ECDSA presignatures: the pool (sessions that presign for a signer set,
//! two-phase commit of the results), and signing from it (each signer's
//! partial signature from its pooled presignature, combined by the
//! coordinator; CGGMP21 section 3, "presigning" and "signing").

use std::sync::Arc;
use std::time::Duration;

use rand::SeedableRng;
use sigil_crypto::ecdsa::{self, cggmp21};
use sigil_crypto::with_curve;
use sigil_proto::peer::session_proposal::Kind;
use sigil_proto::peer::{SessionOutcome, SignProposal};
use zeroize::Zeroizing;

use super::share_of;
use crate::error::SessionError;
use crate::family::{party_set, LoadedKey};
use crate::session::{self, SessionSpec};
use crate::{internal, Node};

/// A presignature this node made, held in memory until the session's
/// coordinator commits it to the pool or discards it. Never served while
/// pending; dropped (zeroized) when discarded or after [`PENDING_TTL`].
pub(crate) struct PendingPresig {
    coordinator: u16,
    key_id: String,
    set: String,
    presig: Zeroizing<Vec<u8>>,
    made: std::time::Instant,
}

/// How long an uncommitted presignature is kept for its coordinator's
/// commit (the coordinator commits right after the session, so this only
/// bounds memory when it died in between).
const PENDING_TTL: Duration = Duration::from_secs(60);

impl Node {
    /// This node's part of a presigning session: presign, then pool the
    /// result sealed under the session id.
    pub(crate) async fn presign_part(
        &self,
        spec: SessionSpec,
        p: sigil_proto::peer::PresignProposal,
    ) -> Result<SessionOutcome, SessionError> {
        let loaded = self
            .cached_key(&p.key_id)
            .await
            .map_err(internal)?
            .ok_or_else(|| SessionError::Invalid(format!("key {} is not active here", p.key_id)))?;
        let key = &loaded.record;
        if key.scheme != p.scheme || !loaded.scheme.is_ecdsa() {
            return Err(SessionError::Invalid("scheme mismatch".into()));
        }
        let signers = loaded.indices_of(&spec.parties)?;
        if signers.len() != usize::from(key.threshold) {
            return Err(SessionError::Invalid("a presignature needs exactly t signers".into()));
        }
        let set = party_set(&spec.parties);
        let (me, sid, eid, spec_coordinator) = (spec.me, spec.id, spec.eid, spec.coordinator);
        let bytes = with_curve!(loaded.scheme, E => {
            let m = self.material(&loaded).await?;
            let share = share_of::<E>(&m)?;
            let presig = session::run_heavy::<ecdsa::SignMsg<E>, _, _, _>(&self.sessions, &self.peers, spec, |party| async move {
                let mut rng = rand::rngs::StdRng::from_rng(rand::rngs::OsRng).map_err(|e| sigil_crypto::Error::Frost(e.to_string()))?;
                ecdsa::presign::<E, _, _>(party, &eid, me, &signers, share, &mut rng).await
            })
            .await?;
            Zeroizing::new(serde_json::to_vec(&presig).map_err(internal)?)
        }, other => return Err(SessionError::Invalid(format!("{other} has no presignatures"))));
        let mut pending = self.pending_presigs.lock().unwrap_or_else(|p| p.into_inner());
        pending.retain(|_, p| p.made.elapsed() < PENDING_TTL);
        pending.insert(
            sid,
            PendingPresig {
                coordinator: spec_coordinator,
                key_id: key.key_id.clone(),
                set,
                presig: bytes,
                made: std::time::Instant::now(),
            },
        );
        Ok(SessionOutcome::default())
    }

    /// Sends commit or discard of presigning session `sid` to every signer
    /// of `set` (this node directly). Returns whether all of them did it.
    async fn finalize_presignature_everywhere(&self, set: &[u16], sid: &sigil_crypto::SessionId, commit: bool) -> bool {
        let calls = set.iter().map(|&node| async move {
            let r = if node == self.cfg.node_id {
                self.finalize_presignature(node, sid, commit)
                    .await
                    .map_err(|e| e.to_string())
            } else {
                let r = sigil_proto::peer::FinalizePresignatureRequest {
                    session_id: sid.to_vec(),
                    commit,
                };
                self.peers
                    .finalize_presignature(node, r, Duration::from_secs(5))
                    .await
                    .map_err(|e| e.to_string())
            };
            if let Err(e) = &r {
                tracing::warn!(node, commit, error = %e, "could not finalize presignature on node");
            }
            r.is_ok()
        });
        futures::future::join_all(calls).await.into_iter().all(|ok| ok)
    }

    /// Commits (pools, sealed) or discards the presignature this node made in
    /// presigning session `session_id`, at the request of that session's
    /// coordinator `caller`. Discarding also removes an already pooled one.
    /// Unknown ids are ignored (idempotent).
    ///
    /// # Errors
    /// [`SessionError::Invalid`] for a malformed id or a caller that is not
    /// the session's coordinator; storage failures as internal errors.
    pub async fn finalize_presignature(
        &self,
        caller: u16,
        session_id: &[u8],
        commit: bool,
    ) -> Result<(), SessionError> {
        let sid: sigil_crypto::SessionId = session_id
            .try_into()
            .map_err(|_| SessionError::Invalid("session_id must be 32 bytes".into()))?;
        let entry = {
            let mut pending = self.pending_presigs.lock().unwrap_or_else(|p| p.into_inner());
            match pending.get(&sid) {
                Some(p) if p.coordinator != caller => {
                    return Err(SessionError::Invalid(format!(
                        "node {caller} is not the coordinator of this presigning session"
                    )))
                }
                Some(_) => pending.remove(&sid),
                None => None,
            }
        };
        let presig_id = hex::encode(sid);
        match (entry, commit) {
            (Some(p), true) => {
                let record = super::ephemeral::record(&p.key_id, &p.set, self.cfg.node_id, &presig_id);
                let sealed = self.presig_seal.seal(&record, &p.presig);
                self.store
                    .put_presignature(&p.key_id, &p.set, self.cfg.node_id, &presig_id, &sealed)
                    .await
                    .map_err(SessionError::from)?;
            }
            (Some(_), false) => {} // dropped here, zeroized
            (None, false) => {
                // Committed before the coordinator gave up on another party:
                // remove it from the pool.
                self.store
                    .discard_presignature(self.cfg.node_id, &presig_id)
                    .await
                    .map_err(SessionError::from)?;
            }
            (None, true) => {}
        }
        Ok(())
    }

    /// Takes a presignature of (`key`, `parties`) out of the pool (by id,
    /// or the oldest) and issues the partial signature on `digest` (for the
    /// child at `path` if given). The presignature is deleted in the same
    /// transaction that reads it, before anything leaves the node.
    pub(crate) async fn partial_from_pool(
        &self,
        loaded: &LoadedKey,
        parties: &[u16],
        presig_id: Option<&str>,
        digest: &[u8; 32],
        path: &[u32],
    ) -> Result<Option<(String, Vec<u8>)>, SessionError> {
        let key = &loaded.record;
        let set = party_set(parties);
        let Some((id, bytes)) = self
            .store
            .take_presignature(&key.key_id, &set, self.cfg.node_id, presig_id)
            .await
            .map_err(SessionError::from)?
        else {
            return Ok(None);
        };
        // Deleted already; unreadable means made by an earlier process.
        let record = super::ephemeral::record(&key.key_id, &set, self.cfg.node_id, &id);
        let Some(bytes) = self.presig_seal.open(&record, &bytes) else {
            tracing::warn!(key_id = %key.key_id, %set, "dropped a pooled presignature this process did not make");
            metrics::counter!("sigil_presignatures_unreadable_total").increment(1);
            return Ok(None);
        };
        let partial = with_curve!(loaded.scheme, E => {
            let mut presig: ecdsa::Presignature<E> = serde_json::from_slice(&bytes).map_err(internal)?;
            if !path.is_empty() {
                let m = self.material(loaded).await?;
                let share = share_of::<E>(&m)?;
                let epub = share.extended_public_key().ok_or_else(|| SessionError::Invalid("key is not HD-capable".into()))?;
                presig = presig
                    .set_derivation_path(epub, path.iter().copied())
                    .map_err(|e| SessionError::Invalid(format!("derivation path: {e}")))?;
            }
            let scalar = cggmp21::generic_ec::Scalar::<E>::from_be_bytes_mod_order(digest);
            let partial = presig.issue_partial_signature(cggmp21::DataToSign::from_scalar(scalar));
            serde_json::to_vec(&partial).map_err(internal)?
        }, other => return Err(SessionError::Invalid(format!("{other} has no presignatures"))));
        Ok(Some((id, partial)))
    }

    /// A signer's part of pooled signing: the partial signature on
    /// `digest` from its presignature `s.presignature_id` of the session's
    /// signer set `parties`, taken out of the pool.
    ///
    /// # Errors
    /// [`SessionError::Invalid`] when that presignature is not pooled here
    /// (used, discarded, dropped at a restart, or never made).
    pub(crate) async fn pooled_partial_part(
        &self,
        loaded: &LoadedKey,
        parties: &[u16],
        s: &SignProposal,
        digest: &[u8; 32],
    ) -> Result<SessionOutcome, SessionError> {
        let (_, partial) = self
            .partial_from_pool(loaded, parties, Some(&s.presignature_id), digest, &s.derivation_path)
            .await?
            // Not `Unavailable`: this node is healthy (it may have
            // restarted and dropped its pool); the coordinator falls back to
            // the full protocol without marking it down.
            .ok_or_else(|| {
                SessionError::Invalid(format!(
                    "presignature {} is not pooled on node {}",
                    s.presignature_id, self.cfg.node_id
                ))
            })?;
        Ok(SessionOutcome {
            partial_signature: partial,
            ..Default::default()
        })
    }

    /// Coordinator: signs `digest` from a pooled presignature of a signer
    /// set that includes this node. `Ok(None)` when none is available or
    /// the pooled attempt failed (the caller then runs the full protocol;
    /// the presignatures involved are gone either way, never reused).
    pub(crate) async fn sign_from_pool(
        &self,
        loaded: &LoadedKey,
        digest: &[u8; 32],
        path: &[u32],
        auth: &sigil_proto::peer::ClientAuthorization,
    ) -> Result<Option<(Vec<u8>, Vec<u16>)>, SessionError> {
        if self.cfg.presign_pool_size == 0 || !loaded.parties.contains(self.cfg.node_id) {
            return Ok(None);
        }
        // Sets with this node, in a random order so pooled signing spreads
        // over the other nodes too.
        let mut sets: Vec<Vec<u16>> = signer_sets(&loaded.record, None)
            .into_iter()
            .filter(|s| s.contains(&self.cfg.node_id))
            .collect();
        rand::seq::SliceRandom::shuffle(sets.as_mut_slice(), &mut rand::thread_rng());
        for set in sets {
            if set.iter().any(|&n| n != self.cfg.node_id && self.recently_down(n)) {
                continue;
            }
            let Some((presig_id, own)) = self.partial_from_pool(loaded, &set, None, digest, path).await? else {
                continue;
            };
            let pooled = Pooled {
                set: &set,
                presig_id: &presig_id,
                own,
                digest,
                path,
            };
            match self.combine_pooled(loaded, pooled, auth).await {
                Ok(sig) => return Ok(Some((sig, set))),
                Err(e) => {
                    if let SessionError::Unavailable { nodes, .. } = &e {
                        nodes
                            .iter()
                            .filter(|&&n| n != self.cfg.node_id)
                            .for_each(|&n| self.mark_down(n));
                    }
                    tracing::warn!(error = %e, set = %party_set(&set), "pooled signing failed; falling back to the full protocol");
                    return Ok(None);
                }
            }
        }
        Ok(None)
    }

    /// Collects the other signers' partial signatures from their pooled
    /// presignatures of the same session and combines them with ours.
    async fn combine_pooled(
        &self,
        loaded: &LoadedKey,
        pooled: Pooled<'_>,
        auth: &sigil_proto::peer::ClientAuthorization,
    ) -> Result<Vec<u8>, SessionError> {
        let Pooled {
            set,
            presig_id,
            own,
            digest,
            path,
        } = pooled;
        let (key, scheme) = (&loaded.record, loaded.scheme);
        let kind = Kind::Sign(SignProposal {
            key_id: key.key_id.clone(),
            message: digest.to_vec(),
            epoch: key.epoch,
            scheme: key.scheme.clone(),
            derivation_path: path.to_vec(),
            presignature_id: presig_id.to_string(),
        });
        let outcomes = self
            .coordinate_inner(
                set,
                kind,
                crate::Run {
                    all: true,
                    budget: self.timeout(),
                    run_local: false,
                    session_id: crate::random_session_id(),
                    auth: Some(auth),
                },
            )
            .await?;
        let public_key = if path.is_empty() {
            key.public_key.clone()
        } else {
            scheme.derive_public_key(&key.public_package, path).map_err(internal)?
        };
        with_curve!(scheme, E => {
            let mut partials: Vec<cggmp21::PartialSignature<E>> = vec![serde_json::from_slice(&own).map_err(internal)?];
            for (i, o) in outcomes.by_party.iter().enumerate() {
                let node = set.get(i).copied().unwrap_or_default();
                if node == self.cfg.node_id {
                    continue;
                }
                let o = o.as_ref().ok_or_else(|| internal("missing outcome"))?;
                let p = serde_json::from_slice(&o.partial_signature).map_err(|e| SessionError::Protocol {
                    culprits: vec![node],
                    reason: format!("malformed partial signature: {e}"),
                })?;
                partials.push(p);
            }
            let sig = cggmp21::PartialSignature::combine(&partials)
                .ok_or_else(|| SessionError::Protocol { culprits: vec![], reason: "partial signatures do not combine".into() })?
                .normalize_s();
            let mut out = vec![0u8; 64];
            sig.write_to_slice(&mut out);
            scheme
                .verify(&public_key, digest, &out)
                .map_err(|e| SessionError::Protocol { culprits: vec![], reason: format!("combined signature invalid: {e}") })?;
            Ok(out)
        }, other => Err(SessionError::Invalid(format!("{other} has no presignatures"))))
    }
}

/// The ordered signer sets of `key` that pools are kept for: every
/// `t`-subset of its parties, in ascending node order, whose lowest node
/// is `refiller` (all sets when `None`), at most 16.
pub fn signer_sets(key: &sigil_store::KeyRecord, refiller: Option<u16>) -> Vec<Vec<u16>> {
    fn choose(from: &[u16], t: usize, acc: &mut Vec<u16>, out: &mut Vec<Vec<u16>>) {
        if out.len() >= 16 {
            return;
        }
        if acc.len() == t {
            out.push(acc.clone());
            return;
        }
        for (k, &x) in from.iter().enumerate() {
            acc.push(x);
            choose(from.get(k + 1..).unwrap_or_default(), t, acc, out);
            acc.pop();
        }
    }
    // Only node parties presign: the external party signs in full.
    let mut parties: Vec<u16> = sigil_crypto::relay::node_parties(&key.parties).collect();
    parties.sort_unstable();
    let mut all = Vec::new();
    choose(&parties, usize::from(key.threshold), &mut Vec::new(), &mut all);
    all.retain(|set| refiller.is_none_or(|r| set.first() == Some(&r)));
    all
}

/// Keeps every signer set this node refills (those whose lowest node it
/// is) at `presign_pool_size` presignatures per ECDSA key, one presigning
/// session at a time.
pub async fn refill_presignatures(node: Arc<Node>) {
    let target = node.cfg.presign_pool_size;
    if target == 0 {
        return;
    }
    loop {
        let mut worked = false;
        let keys = node.store.list_keys().await.unwrap_or_default();
        for key in keys.iter().filter(|k| {
            k.scheme
                .parse::<sigil_crypto::Scheme>()
                .is_ok_and(sigil_crypto::Scheme::is_ecdsa)
        }) {
            if node
                .store
                .get_aux_info(&party_set(&key.parties), node.cfg.node_id)
                .await
                .ok()
                .flatten()
                .is_none()
            {
                continue;
            }
            for set in signer_sets(key, Some(node.cfg.node_id)) {
                if set.iter().any(|&n| n != node.cfg.node_id && node.recently_down(n)) {
                    continue;
                }
                let have = node
                    .store
                    .count_presignatures(&key.key_id, &party_set(&set))
                    .await
                    .unwrap_or(target);
                if have >= target {
                    continue;
                }
                match node.presign_once(key, &set).await {
                    Ok(()) => worked = true,
                    Err(e) => {
                        if let SessionError::Unavailable { nodes, .. } | SessionError::Timeout { missing: nodes, .. } =
                            &e
                        {
                            nodes
                                .iter()
                                .filter(|&&n| n != node.cfg.node_id)
                                .for_each(|&n| node.mark_down(n));
                        }
                        tracing::warn!(key_id = %key.key_id, set = %party_set(&set), error = %e, "presigning failed");
                    }
                }
            }
        }
        if !worked {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

impl Node {
    /// One presigning session for `key` among `set`, committed to every
    /// signer's pool only if every signer made its presignature (otherwise
    /// discarded everywhere, including any party that already committed).
    async fn presign_once(&self, key: &sigil_store::KeyRecord, set: &[u16]) -> Result<(), SessionError> {
        let kind = Kind::Presign(sigil_proto::peer::PresignProposal {
            key_id: key.key_id.clone(),
            scheme: key.scheme.clone(),
        });
        let started = std::time::Instant::now();
        let sid = crate::random_session_id();
        let run = crate::Run {
            all: true,
            budget: self.timeout(),
            run_local: true,
            session_id: sid,
            auth: None,
        };
        let r = self.coordinate_inner(set, kind, run).await;
        let committed = r.is_ok() && self.finalize_presignature_everywhere(set, &sid, true).await;
        if !committed {
            self.finalize_presignature_everywhere(set, &sid, false).await;
            r?;
            return Err(SessionError::Internal(
                "presignature commit did not reach every signer".into(),
            ));
        }
        metrics::counter!("sigil_presignatures_made_total").increment(1);
        metrics::histogram!("sigil_presign_seconds").record(started.elapsed().as_secs_f64());
        Ok(())
    }
}

/// A pooled signing attempt: the signer set, the presignature's id, our own
/// partial signature (JSON), the digest and the derivation path.
struct Pooled<'a> {
    set: &'a [u16],
    presig_id: &'a str,
    own: Vec<u8>,
    digest: &'a [u8; 32],
    path: &'a [u32],
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(parties: Vec<u16>, t: u16) -> sigil_store::KeyRecord {
        let mut k = sigil_store::conformance::sample_key("k");
        k.parties = parties;
        k.threshold = t;
        k
    }

    #[test]
    fn signer_sets_are_the_t_subsets_split_by_lowest_node() {
        let k = key(vec![2, 0, 1], 2);
        assert_eq!(signer_sets(&k, None), vec![vec![0, 1], vec![0, 2], vec![1, 2]]);
        assert_eq!(signer_sets(&k, Some(0)), vec![vec![0, 1], vec![0, 2]]);
        assert_eq!(signer_sets(&k, Some(1)), vec![vec![1, 2]]);
        assert!(signer_sets(&k, Some(2)).is_empty());
        assert_eq!(signer_sets(&key(vec![0, 1, 2, 3, 4], 3), None).len(), 10);
        assert_eq!(party_set(&[0, 2]), "0,2");
    }
}
