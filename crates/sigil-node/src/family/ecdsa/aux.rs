//! CGGMP21 aux info (Paillier keys and ring-Pedersen parameters, CGGMP21
//! Figure 6) for an ordered party set: generated in an aux session, stored
//! pending, committed in two phases on every party's attestation of the
//! same fingerprint ([`ecdsa::aux_fingerprint`]), and confirmed with every
//! party after a restart.

use std::time::Duration;

use rand::SeedableRng;
use sigil_crypto::ecdsa::{self, cggmp21};
use sigil_proto::peer::session_proposal::Kind;
use sigil_proto::peer::{AuxProposal, FinalizeAuxRequest, SessionOutcome};
use zeroize::Zeroizing;

use super::{generate_prime, PRIME_BITS};
use crate::error::SessionError;
use crate::family::party_set;
use crate::session::{self, SessionSpec};
use crate::{internal, Node};

impl Node {
    /// Takes two primes from the pool, or generates them now if the pool
    /// is short (slow: seconds to tens of seconds).
    pub(crate) async fn primes_for_aux(&self) -> Result<ecdsa::PregeneratedPrimes, SessionError> {
        if let Some(remote) = &self.remote_primes {
            let (p, q) = remote.take(Duration::from_millis(self.cfg.aux_timeout_ms)).await?;
            if p == q {
                return Err(internal("the prime service sent the same prime twice"));
            }
            return ecdsa::PregeneratedPrimes::new(p, q).ok_or_else(|| internal("remote primes are too small"));
        }
        let (p, q) = match self
            .store
            .take_primes(PRIME_BITS, 2)
            .await
            .map_err(SessionError::from)?
        {
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
        if p == q {
            return Err(internal("the prime pool handed out the same prime twice"));
        }
        ecdsa::PregeneratedPrimes::new(p, q).ok_or_else(|| internal("pooled primes are too small"))
    }

    /// This node's part of an aux info session for the session's parties:
    /// stores the result as pending and answers with the fingerprint of
    /// all parties' public parameters and this node's signature over it.
    /// Refused while another aux session of the same set runs here, and
    /// once aux info of the set is committed here.
    pub(crate) async fn aux_part(&self, spec: SessionSpec, _a: AuxProposal) -> Result<SessionOutcome, SessionError> {
        let set = party_set(&spec.parties);
        let n = u16::try_from(spec.parties.len()).map_err(|_| SessionError::Invalid("too many parties".into()))?;
        let _running = AuxRunning::claim(&self.aux_running, &set)?;
        if self.committed_aux(&set).await? {
            return Err(SessionError::Invalid(format!(
                "aux info of party set {set} is committed here and is never replaced"
            )));
        }
        let primes = self.primes_for_aux().await?;
        let (me, sid, spec_parties) = (spec.me, spec.eid, spec.parties.clone());
        let aux = session::run_heavy::<ecdsa::AuxMsg, _, _, _>(&self.sessions, &self.peers, spec, |party| async move {
            let mut rng = rand::rngs::StdRng::from_rng(rand::rngs::OsRng)
                .map_err(|e| sigil_crypto::Error::Frost(e.to_string()))?;
            ecdsa::aux_info(party, &sid, me, n, primes, &mut rng).await
        })
        .await?;
        if let Some((a, b)) = ecdsa::shared_factor(&aux) {
            let culprits: Vec<u16> = [a, b].iter().filter_map(|&k| spec_parties.get(k).copied()).collect();
            return Err(SessionError::Protocol {
                culprits,
                reason: "two parties' Paillier moduli share a prime factor; aux info refused".into(),
            });
        }
        let fingerprint = ecdsa::aux_fingerprint(&aux);
        let bytes = Zeroizing::new(serde_json::to_vec(&aux).map_err(internal)?);
        self.store
            .put_aux_info(&set, self.cfg.node_id, &bytes)
            .await
            .map_err(SessionError::from)?;
        tracing::info!(party_set = %set, fingerprint = %hex::encode(fingerprint), "aux info stored, pending");
        Ok(SessionOutcome {
            attestation: crate::attest::sign_aux(&self.identity, &set, &fingerprint),
            aux_fingerprint: fingerprint.to_vec(),
            ..Default::default()
        })
    }

    async fn committed_aux(&self, set: &str) -> Result<bool, SessionError> {
        Ok(self
            .store
            .get_aux_info(set, self.cfg.node_id)
            .await
            .map_err(SessionError::from)?
            .is_some())
    }

    /// Runs aux info generation among `parties` unless this node already
    /// has committed aux info for that ordered set, then commits it on
    /// every party (two-phase: [`Node::finalize_aux`]). With committed aux
    /// info, the first call after a start sends the stored evidence to
    /// every party once more, so a party that missed the commit (down, or
    /// skipped by a faulty coordinator) catches up before keygen needs it.
    ///
    /// # Errors
    /// The aux session's failure; a protocol error naming the parties whose
    /// fingerprint or attestation differs; this node's own commit failure.
    pub async fn ensure_aux(
        &self,
        parties: &[u16],
        auth: &sigil_proto::peer::ClientAuthorization,
    ) -> Result<(), SessionError> {
        let set = party_set(parties);
        let _one_at_a_time = self.aux_lock.lock().await;
        if !parties.contains(&self.cfg.node_id) {
            return Ok(());
        }
        if self.committed_aux(&set).await? {
            return self.confirm_aux_everywhere(&set).await;
        }
        tracing::info!(party_set = %set, "generating CGGMP21 aux info");
        let started = std::time::Instant::now();
        let o = self
            .coordinate_with_budget(parties, Kind::Aux(AuxProposal {}), true, self.aux_timeout(), Some(auth))
            .await?;
        let req = aux_commit_request(parties, &o.by_party, self.identities())?;
        self.finalize_aux(self.cfg.node_id, req.clone()).await?;
        if self.finalize_aux_everywhere(req).await {
            self.aux_confirmed_insert(&set);
        }
        metrics::histogram!("sigil_aux_info_seconds").record(started.elapsed().as_secs_f64());
        Ok(())
    }

    /// Resends the stored commit evidence of `set` to every party, once per
    /// process run (then remembered).
    async fn confirm_aux_everywhere(&self, set: &str) -> Result<(), SessionError> {
        if self
            .aux_confirmed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(set)
        {
            return Ok(());
        }
        let evidence = self
            .store
            .aux_evidence(set, self.cfg.node_id)
            .await
            .map_err(SessionError::from)?
            .unwrap_or_default();
        let Ok(e) = serde_json::from_str::<AuxEvidence>(&evidence) else {
            // Committed before evidence was kept: nothing to resend.
            self.aux_confirmed_insert(set);
            return Ok(());
        };
        if self.finalize_aux_everywhere(e.into_request()).await {
            self.aux_confirmed_insert(set);
        }
        Ok(())
    }

    fn aux_confirmed_insert(&self, set: &str) {
        self.aux_confirmed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(set.to_string());
    }

    /// Sends `req` to every other party of its set and waits for their
    /// first answer; parties that fail are retried in the background for
    /// about a minute. Returns whether every party answered at once.
    async fn finalize_aux_everywhere(&self, req: FinalizeAuxRequest) -> bool {
        let me = self.cfg.node_id;
        let calls = req
            .parties
            .iter()
            .filter_map(|&p| u16::try_from(p).ok())
            .filter(|&p| p != me)
            .map(|node| {
                let req = req.clone();
                async move {
                    let c = self.peers.clone();
                    if finalize_aux_once(&*c, node, &req).await {
                        return true;
                    }
                    tokio::spawn(async move {
                        let mut wait = Duration::from_millis(200);
                        for _ in 0..8 {
                            tokio::time::sleep(wait).await;
                            if finalize_aux_once(&*c, node, &req).await {
                                return;
                            }
                            wait *= 2;
                        }
                    });
                    false
                }
            });
        futures::future::join_all(calls).await.into_iter().all(|ok| ok)
    }

    /// Commits this node's pending aux info of `req.parties`, at the
    /// request of `caller` (any peer: the evidence is every party's
    /// signature over the fingerprint of this node's own pending aux info).
    /// Idempotent once committed (the evidence is checked all the same).
    /// Audited.
    ///
    /// # Errors
    /// [`SessionError::Refused`] (`forbidden`) if this node is not a party,
    /// holds no aux info of the set, or the attestations do not all verify
    /// over its own fingerprint.
    pub async fn finalize_aux(&self, caller: u16, req: FinalizeAuxRequest) -> Result<(), SessionError> {
        let parties = self.check_aux_request(&req)?;
        let set = party_set(&parties);
        let entry = crate::audit::Entry {
            role: "peer",
            client: format!("node:{caller}"),
            jti: String::new(),
            operation: "aux_commit",
            key_id: format!("aux:{set}"),
            message_sha256: hex::encode(&req.fingerprint),
            session_id: String::new(),
            outcome: String::new(),
        };
        let r = self.commit_aux(&parties, &set, &req).await;
        self.audit_outcome(entry, &r).await;
        r
    }

    /// The shape of a `FinalizeAux` request, checked before anything is
    /// logged or loaded: a 32-byte fingerprint, distinct configured parties,
    /// at most one 64-byte signature per party.
    fn check_aux_request(&self, req: &FinalizeAuxRequest) -> Result<Vec<u16>, SessionError> {
        let bad = |m: &str| SessionError::Invalid(format!("FinalizeAux: {m}"));
        if req.fingerprint.len() != 32 {
            return Err(bad("fingerprint must be 32 bytes"));
        }
        if req.parties.len() > self.members().len() || req.attestations.len() > req.parties.len() {
            return Err(bad("more parties or attestations than nodes"));
        }
        let mut parties = Vec::with_capacity(req.parties.len());
        for &p in &req.parties {
            let p = u16::try_from(p).map_err(|_| bad("party id out of range"))?;
            if parties.contains(&p) || !self.members().contains(p) {
                return Err(bad("parties must be distinct nodes of this cluster"));
            }
            parties.push(p);
        }
        if req.attestations.iter().any(|a| a.signature.len() != 64) {
            return Err(bad("signatures must be 64 bytes"));
        }
        Ok(parties)
    }

    async fn commit_aux(&self, parties: &[u16], set: &str, req: &FinalizeAuxRequest) -> Result<(), SessionError> {
        let forbid = |m: String| self.refused(crate::auth::Refusal::Forbidden(m));
        if !parties.contains(&self.cfg.node_id) {
            return Err(forbid(format!("this node is not a party of set {set}")));
        }
        // No aux session of the set may replace the pending record while
        // it is checked and committed.
        let _running = AuxRunning::claim(&self.aux_running, set)?;
        let evidence = AuxEvidence::of(req);
        let me = self.cfg.node_id;
        let verify = |aux: &[u8]| -> Result<(), SessionError> {
            let aux: ecdsa::AuxInfo = serde_json::from_slice(aux).map_err(internal)?;
            crate::attest::verify_aux(parties, &ecdsa::aux_fingerprint(&aux), &evidence.attestations, |n| {
                self.identity_of(n)
            })
            .map_err(|e| forbid(format!("aux info of set {set} not attested by every party: {e}")))
        };
        let Some(pending) = self
            .store
            .get_pending_aux_info(set, me)
            .await
            .map_err(SessionError::from)?
        else {
            return match self.store.get_aux_info(set, me).await.map_err(SessionError::from)? {
                Some(committed) => verify(&committed),
                None => Err(forbid(format!("no aux info of set {set} here"))),
            };
        };
        verify(&pending.aux)?;
        let json = serde_json::to_string(&evidence).map_err(internal)?;
        if !self
            .store
            .commit_aux_info(set, me, &pending, &json)
            .await
            .map_err(SessionError::from)?
        {
            return Err(SessionError::Invalid(format!(
                "pending aux info of set {set} changed; not committed"
            )));
        }
        tracing::info!(party_set = %set, "aux info committed");
        Ok(())
    }

    fn aux_timeout(&self) -> Duration {
        Duration::from_millis(self.cfg.aux_timeout_ms)
    }

    pub(crate) async fn load_aux(&self, parties: &[u16]) -> Result<ecdsa::AuxInfo, SessionError> {
        let set = party_set(parties);
        let bytes = self
            .store
            .get_aux_info(&set, self.cfg.node_id)
            .await
            .map_err(SessionError::from)?
            .ok_or_else(|| {
                SessionError::Invalid(format!("no aux info for party set {set} on node {}", self.cfg.node_id))
            })?;
        serde_json::from_slice(&bytes).map_err(internal)
    }
}

/// The evidence a commit of aux info rests on, stored with it (public):
/// the set, the fingerprint (hex) and every party's attestation.
#[derive(serde::Serialize, serde::Deserialize)]
struct AuxEvidence {
    parties: Vec<u16>,
    fingerprint: String,
    attestations: Vec<sigil_store::Attestation>,
}

impl AuxEvidence {
    fn of(req: &FinalizeAuxRequest) -> Self {
        AuxEvidence {
            parties: req.parties.iter().filter_map(|&p| u16::try_from(p).ok()).collect(),
            fingerprint: hex::encode(&req.fingerprint),
            attestations: req
                .attestations
                .iter()
                .map(|a| crate::attest::attestation(u16::try_from(a.node).unwrap_or(u16::MAX), a.signature.clone()))
                .collect(),
        }
    }

    fn into_request(self) -> FinalizeAuxRequest {
        FinalizeAuxRequest {
            parties: self.parties.into_iter().map(u32::from).collect(),
            fingerprint: hex::decode(&self.fingerprint).unwrap_or_default(),
            attestations: self
                .attestations
                .into_iter()
                .map(|a| sigil_proto::peer::Attestation {
                    node: u32::from(a.node),
                    signature: a.signature,
                })
                .collect(),
        }
    }
}

/// One `FinalizeAux` call to `node`; whether it succeeded.
async fn finalize_aux_once(c: &dyn crate::transport::Transport, node: u16, req: &FinalizeAuxRequest) -> bool {
    match c.finalize_aux(node, req.clone(), Duration::from_secs(5)).await {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(node, error = %e, "could not commit aux info on node");
            false
        }
    }
}

/// Marks an aux session of a party set as running on this node until
/// dropped: a second one of the same set is refused meanwhile.
struct AuxRunning<'a> {
    running: &'a std::sync::Mutex<std::collections::HashSet<String>>,
    set: String,
}

impl<'a> AuxRunning<'a> {
    fn claim(
        running: &'a std::sync::Mutex<std::collections::HashSet<String>>,
        set: &str,
    ) -> Result<Self, SessionError> {
        if !running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(set.to_string())
        {
            return Err(SessionError::Invalid(format!(
                "an aux session of party set {set} is already running here"
            )));
        }
        Ok(AuxRunning {
            running,
            set: set.to_string(),
        })
    }
}

impl Drop for AuxRunning<'_> {
    fn drop(&mut self) {
        self.running.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.set);
    }
}

/// The commit request of a finished aux session: every party must report
/// the same fingerprint with a valid attestation over it.
///
/// # Errors
/// A protocol error naming the parties that differ or do not attest.
fn aux_commit_request(
    parties: &[u16],
    outcomes: &[Option<SessionOutcome>],
    identity_of: impl Fn(u16) -> Option<ed25519_dalek::VerifyingKey>,
) -> Result<FinalizeAuxRequest, SessionError> {
    let fingerprint = outcomes.first().cloned().flatten().unwrap_or_default().aux_fingerprint;
    let differ: Vec<u16> = parties
        .iter()
        .zip(outcomes)
        .filter(|(_, o)| o.as_ref().map(|o| &o.aux_fingerprint) != Some(&fingerprint))
        .map(|(&p, _)| p)
        .collect();
    if fingerprint.len() != 32 || !differ.is_empty() {
        return Err(SessionError::Protocol {
            culprits: differ,
            reason: "parties finished aux info with different public parameters".into(),
        });
    }
    let attestations: Vec<_> = parties
        .iter()
        .zip(outcomes)
        .map(|(&node, o)| {
            crate::attest::attestation(node, o.as_ref().map(|o| o.attestation.clone()).unwrap_or_default())
        })
        .collect();
    crate::attest::verify_aux(parties, &fingerprint, &attestations, identity_of).map_err(|e| {
        let culprits = match e {
            crate::attest::AttestError::Invalid(n) | crate::attest::AttestError::Missing(n) => vec![n],
            _ => vec![],
        };
        SessionError::Protocol {
            culprits,
            reason: format!("aux info attestation: {e}"),
        }
    })?;
    Ok(FinalizeAuxRequest {
        parties: parties.iter().map(|&p| u32::from(p)).collect(),
        fingerprint,
        attestations: attestations
            .into_iter()
            .map(|a| sigil_proto::peer::Attestation {
                node: u32::from(a.node),
                signature: a.signature,
            })
            .collect(),
    })
}
