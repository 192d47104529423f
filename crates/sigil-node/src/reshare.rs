//! Key epochs: refresh and resharing of a key to a new committee and
//! threshold, with the public key unchanged (the protocol is
//! `sigil_crypto::reshare`, Wong-Wang-Wing 2002).
//!
//! Flow, coordinated by the node that takes the client's request:
//! 1. `POST /v1/keys/{key_id}/reshare` `{"parties": [...], "threshold": t'}`
//!    (or `/refresh`, the same committee and threshold) from a client in the
//!    key's `admin` policy.
//! 2. ECDSA: aux info for the new ordered party set first (from the prime
//!    pools), as for a key generation.
//! 3. A session among the quorum `Q` (the first `t` old parties, the
//!    coordinator first when it is one, nodes recently down last) and the
//!    new committee `C'`. Each party checks the proposal itself (below),
//!    runs its roles, and each new party stores its new share as the key's
//!    *pending* epoch `e + 1` and signs the new record.
//! 4. The coordinator checks every new party's attestation over the same
//!    record, then sends the attested record to every node (`FinalizeKey`).
//!    A node switches only on a record attested by every new party (its own
//!    config's identity keys), at exactly its epoch + 1, and (as a new
//!    party) equal to its own pending record: then, in one store
//!    transaction, the new share becomes the key's share and the epoch-`e`
//!    share, the key's presignatures and the pending row are deleted.
//!    Epoch `e` signs until then; old parties delete their share only on
//!    the attested record of `e + 1` (tss-lib's lesson: never before the
//!    new committee's acknowledgements).
//! 5. On failure the coordinator tells every party to delete its pending
//!    epoch; epoch `e` stays active everywhere.
//!
//! | peer call | who may send it | what the receiver verifies |
//! |---|---|---|
//! | `RunSession` reshare | any node | the record of the current epoch carries every party's attestation (own config's identity keys) and equals this node's own record if it has one; the client's token (signature, `aud`, lifetime, `jti`) for `POST /v1/keys/{key_id}/reshare` with this committee and threshold, or `/refresh` with the current ones; the client in the record's `admin` policy; the quorum is at least `t` distinct old parties, the new committee distinct configured nodes, `2 <= t' <= n'`, the session parties exactly their union |
//! | `FinalizeKey` commit, a later epoch | any node (the coordinator, or a peer in the catch-up pass) | every new party's attestation of the record; same key id, scheme, public key, policy and creator as the active record of an earlier epoch here; a new party's own pending record equal to it |
//! | `FinalizeKey` abort, pending epoch | the reshare's coordinator | a pending epoch of that key here, never the active one |

use std::time::Duration;

use sigil_crypto::reshare::Roles;
use sigil_proto::peer::session_proposal::Kind;
use sigil_proto::peer::{ClientAuthorization, ReshareProposal, SessionOutcome};
use sigil_store::{EpochEntry, KeyRecord, KeyStatus};

use crate::auth::Refusal;
use crate::error::{NodeError, SessionError};
use crate::family::LoadedKey;
use crate::session::SessionSpec;
use crate::{attest, catch_up, internal, now_unix, Node, RequestAuth};

/// `POST /v1/keys/{key_id}/reshare` body: the new committee (node ids, in
/// new key order) and threshold. `/refresh` takes `{}`.
#[derive(Debug, Clone, Default, serde::Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReshareRequest {
    /// The new committee; default (and for `/refresh`): the current one.
    #[serde(default)]
    pub parties: Option<Vec<u16>>,
    /// The new threshold `t'`; default: the current one.
    #[serde(default)]
    pub threshold: Option<u16>,
}

/// A reshare as planned from the request and the current record.
struct Plan {
    current: KeyRecord,
    quorum: Vec<u16>,
    new_parties: Vec<u16>,
    threshold: u16,
}

impl Plan {
    /// The session parties: the union of quorum and committee, ascending.
    fn session(&self) -> Vec<u16> {
        let mut all: Vec<u16> = self.quorum.iter().chain(&self.new_parties).copied().collect();
        all.sort_unstable();
        all.dedup();
        all
    }

    /// The roles of the session parties `session`.
    fn roles(&self, session: &[u16]) -> Roles {
        let old_index = |n: u16| {
            self.current
                .parties
                .iter()
                .position(|&x| x == n)
                .and_then(|i| u16::try_from(i).ok())
        };
        Roles {
            dealer: session
                .iter()
                .map(|&n| if self.quorum.contains(&n) { old_index(n) } else { None })
                .collect(),
            receiver: session
                .iter()
                .map(|&n| {
                    self.new_parties
                        .iter()
                        .position(|&x| x == n)
                        .and_then(|i| u16::try_from(i).ok())
                })
                .collect(),
            new_t: self.threshold,
        }
    }

    /// The record of the new epoch (pending, unattested) with
    /// `public_package`.
    fn next_record(&self, public_package: Vec<u8>) -> KeyRecord {
        KeyRecord {
            parties: self.new_parties.clone(),
            threshold: self.threshold,
            public_package,
            epoch: self.current.epoch.saturating_add(1),
            status: KeyStatus::Pending,
            attestations: Vec::new(),
            endorsements: Vec::new(),
            activations: Vec::new(),
            created_at: now_unix(),
            ..self.current.clone()
        }
    }
}

/// Checks a requested committee and threshold for a key of `current`
/// against the cluster `cluster`. The error is the client-facing reason.
fn check_committee(current: &KeyRecord, parties: &[u16], t: u16, cluster: &[u16]) -> Result<(), String> {
    let mut sorted = parties.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    if sorted.len() != parties.len() {
        return Err("parties: duplicate node id".into());
    }
    if let Some(x) = parties.iter().find(|x| !cluster.contains(x)) {
        return Err(format!("parties: node {x} is not in the cluster {cluster:?}"));
    }
    let min = current
        .scheme
        .parse::<sigil_crypto::Scheme>()
        .map_err(|e| e.to_string())?
        .min_threshold();
    if t < min || usize::from(t) > parties.len() {
        return Err(format!(
            "threshold must be within {min}..={} for {} parties, got {t}",
            parties.len(),
            parties.len()
        ));
    }
    Ok(())
}

impl Node {
    /// Refreshes (`refresh`) or reshares key `key_id` as `req` asks, on
    /// behalf of `auth`'s client, and returns the record of the new epoch.
    ///
    /// # Errors
    /// 404 for an unknown key; 400 for a bad committee or threshold or a
    /// scheme without resharing; 403 for a client not in the key's `admin`
    /// policy (each before any session); the session's failure naming
    /// nodes (epoch `e` stays active).
    pub async fn reshare(
        &self,
        key_id: &str,
        req: ReshareRequest,
        refresh: bool,
        auth: &RequestAuth,
    ) -> Result<KeyRecord, NodeError> {
        let key = self.loaded_key(key_id).await?;
        let current = key.record.clone();
        if !current.policy.admin.iter().any(|c| c == &auth.client) {
            return Err(NodeError::refused(&Refusal::Forbidden(format!(
                "client {} is not an admin of key {key_id}",
                auth.client
            ))));
        }
        if refresh && (req.parties.is_some() || req.threshold.is_some()) {
            return Err(NodeError::bad_request(
                "refresh keeps the committee and threshold; use reshare",
            ));
        }
        if !key.family().reshares() {
            return Err(NodeError::bad_request(format!(
                "{} keys cannot be reshared yet",
                key.scheme
            )));
        }
        let new_parties = req.parties.unwrap_or_else(|| current.parties.clone());
        let threshold = req.threshold.unwrap_or(current.threshold);
        check_committee(&current, &new_parties, threshold, &self.cfg.node_ids()).map_err(NodeError::bad_request)?;
        if key.family().uses_aux_info() {
            // Aux info of a set is made (or found committed) by one of its
            // parties.
            if !new_parties.contains(&self.cfg.node_id) {
                return Err(NodeError::bad_request(format!(
                    "send an ECDSA reshare to a node of the new committee {new_parties:?} (it makes the committee's aux info)"
                )));
            }
            self.ensure_aux(&new_parties, &auth.proto).await?;
        }
        let mut avoid: Vec<u16> = Vec::new();
        let mut last = None;
        for _ in 0..2 {
            let plan = Plan {
                quorum: self.quorum_of(&current, &avoid)?,
                current: current.clone(),
                new_parties: new_parties.clone(),
                threshold,
            };
            match self.run_reshare(&plan, &auth.proto).await {
                Ok(record) => return Ok(record),
                Err(e) => {
                    // A dealer named (a culprit, down or silent) is left out
                    // of the next quorum, if enough old parties remain; a
                    // refusal is final.
                    let named: Vec<u16> = e.nodes().into_iter().filter(|n| plan.quorum.contains(n)).collect();
                    let retry = !named.is_empty()
                        && matches!(
                            &e,
                            NodeError::Session(
                                SessionError::Protocol { .. }
                                    | SessionError::Unavailable { .. }
                                    | SessionError::Timeout { .. }
                            )
                        );
                    last = Some(e);
                    if !retry {
                        break;
                    }
                    avoid.extend(named);
                }
            }
        }
        Err(last.unwrap_or_else(|| NodeError::internal("reshare did not run")))
    }

    /// The dealing quorum: `t` old parties, this node first when it is
    /// one, nodes recently down last, none of `avoid`.
    fn quorum_of(&self, current: &KeyRecord, avoid: &[u16]) -> Result<Vec<u16>, NodeError> {
        let mut old: Vec<u16> = current.parties.iter().copied().filter(|n| !avoid.contains(n)).collect();
        old.sort_by_key(|&n| (n != self.cfg.node_id, self.recently_down(n), n));
        if old.len() < usize::from(current.threshold) {
            return Err(NodeError::Session(SessionError::Unavailable {
                nodes: avoid.to_vec(),
                reason: format!("fewer than {} honest old parties remain", current.threshold),
            }));
        }
        old.truncate(usize::from(current.threshold));
        Ok(old)
    }

    /// One reshare session and its commit or abort everywhere.
    async fn run_reshare(&self, plan: &Plan, auth: &ClientAuthorization) -> Result<KeyRecord, NodeError> {
        let session = plan.session();
        let kind = Kind::Reshare(ReshareProposal {
            current: Some(catch_up::meta_of(&plan.current)),
            quorum: plan.quorum.iter().map(|&n| u32::from(n)).collect(),
            new_parties: plan.new_parties.iter().map(|&n| u32::from(n)).collect(),
            threshold: u32::from(plan.threshold),
        });
        let started = std::time::Instant::now();
        let run = crate::Run {
            all: true,
            budget: self.timeout(),
            run_local: true,
            session_id: crate::random_session_id(),
            auth: Some(auth),
        };
        let outcomes = self
            .coordinate_inner(&session, kind, run)
            .await
            .map_err(|e| self.replay_as_unavailable(e));
        let attested = outcomes.and_then(|o| self.attested_epoch(plan, &session, &o.by_party));
        let mut everyone = self.cfg.node_ids();
        everyone.extend(
            plan.new_parties
                .iter()
                .filter(|n| !everyone.contains(n))
                .copied()
                .collect::<Vec<_>>(),
        );
        match attested {
            Ok(mut record) => {
                // Phase 1: the new committee activates and acknowledges;
                // phase 2: with every acknowledgement, everyone else
                // switches (old parties delete their shares only then).
                record.activations = self.activate_committee(&record).await;
                if let Err(e) = attest::verify_activations(&record, |n| self.identities.get(&n).copied()) {
                    tracing::warn!(key_id = record.key_id, error = %e,
                        "not every new party activated; old parties keep their shares until they catch up");
                }
                self.finalize_everywhere(&everyone, catch_up::meta_of(&record), true, &[])
                    .await;
                metrics::histogram!("sigil_reshare_seconds", "scheme" => record.scheme.clone())
                    .record(started.elapsed().as_secs_f64());
                tracing::info!(key_id = record.key_id, epoch = record.epoch, parties = ?record.parties, threshold = record.threshold, "key reshared");
                // This node's own record, or the attested one if its own
                // switch did not happen (it catches up later).
                match self.store.get_key(&record.key_id).await? {
                    Some(active) if active.epoch == record.epoch => Ok(active),
                    _ => Ok(record),
                }
            }
            Err(e) => {
                // The abort names this attempt's session: an abort that
                // arrives late never deletes a later attempt's epoch.
                let abandoned = plan.next_record(Vec::new());
                let req = sigil_proto::peer::FinalizeKeyRequest {
                    key: Some(catch_up::meta_of(&abandoned)),
                    commit: false,
                    session_id: run.session_id.to_vec(),
                };
                self.finalize_request_everywhere(&session, req, &e.nodes()).await;
                tracing::warn!(key_id = plan.current.key_id, error = ?e, "reshare failed; the current epoch stays active");
                Err(NodeError::from(e))
            }
        }
    }

    /// Phase 1 of a commit: sends the attested record to every new party
    /// and returns the activations they answer with (each checked later,
    /// with the others, by `attest::verify_activations`).
    async fn activate_committee(&self, record: &KeyRecord) -> Vec<sigil_store::Attestation> {
        let req = sigil_proto::peer::FinalizeKeyRequest {
            key: Some(catch_up::meta_of(record)),
            commit: true,
            session_id: Vec::new(),
        };
        let calls = record.parties.iter().map(|&node| {
            let req = req.clone();
            async move {
                let r = if node == self.cfg.node_id {
                    self.finalize_key_acked(None, req).await
                } else {
                    self.peers.finalize_key(node, req, Duration::from_secs(5)).await
                };
                match r {
                    Ok(ack) => Some(attest::attestation(node, ack)),
                    Err(e) => {
                        tracing::warn!(node, error = %e, "a new party did not activate the epoch");
                        None
                    }
                }
            }
        });
        futures::future::join_all(calls).await.into_iter().flatten().collect()
    }

    /// The new epoch's record from the session's outcomes: every new party
    /// reported the same public package and attested the same record.
    fn attested_epoch(
        &self,
        plan: &Plan,
        session: &[u16],
        by_party: &[Option<SessionOutcome>],
    ) -> Result<KeyRecord, SessionError> {
        let outcome_of = |node: u16| {
            session
                .iter()
                .position(|&n| n == node)
                .and_then(|p| by_party.get(p))
                .and_then(Option::as_ref)
        };
        let first = plan
            .new_parties
            .first()
            .and_then(|&n| outcome_of(n))
            .map(|o| o.public_key_package.clone())
            .unwrap_or_default();
        let differs: Vec<u16> = plan
            .new_parties
            .iter()
            .copied()
            .filter(|&n| outcome_of(n).map(|o| &o.public_key_package) != Some(&first))
            .collect();
        if first.is_empty() || !differs.is_empty() {
            return Err(SessionError::Protocol {
                culprits: vec![],
                reason: format!("new parties finished the reshare with different public packages ({differs:?})"),
            });
        }
        let mut record = plan.next_record(first);
        record.status = KeyStatus::Active;
        record.endorsements = plan
            .quorum
            .iter()
            .map(|&n| attest::attestation(n, outcome_of(n).map(|o| o.endorsement.clone()).unwrap_or_default()))
            .collect();
        attest::verify_transition(&plan.current, &record, |n| self.identities.get(&n).copied()).map_err(|e| {
            // Name the dealers whose endorsement is missing or wrong.
            let bytes = attest::transition_bytes(&plan.current, &record);
            let culprits = record
                .endorsements
                .iter()
                .filter(|a| {
                    !self.identities.get(&a.node).is_some_and(|k| {
                        ed25519_dalek::Signature::from_slice(&a.signature)
                            .is_ok_and(|s| ed25519_dalek::Verifier::verify(k, &bytes, &s).is_ok())
                    })
                })
                .map(|a| a.node)
                .collect();
            SessionError::Protocol {
                culprits,
                reason: format!("epoch transition: {e}"),
            }
        })?;
        record.attestations = plan
            .new_parties
            .iter()
            .map(|&n| attest::attestation(n, outcome_of(n).map(|o| o.attestation.clone()).unwrap_or_default()))
            .collect();
        attest::verify_all(&record, |n| self.identities.get(&n).copied()).map_err(|e| {
            let culprits = match e {
                attest::AttestError::Invalid(n) | attest::AttestError::Missing(n) => vec![n],
                _ => vec![],
            };
            SessionError::Protocol {
                culprits,
                reason: format!("new epoch attestation: {e}"),
            }
        })?;
        Ok(record)
    }

    /// The attested current record a reshare proposal carries, checked:
    /// every party's attestation, and equal to this node's own record when
    /// it has one.
    pub(crate) async fn reshare_current(&self, r: &ReshareProposal) -> Result<KeyRecord, SessionError> {
        let meta = r
            .current
            .as_ref()
            .ok_or_else(|| SessionError::Invalid("no current record".into()))?;
        let current = catch_up::record_of(meta, KeyStatus::Active)?;
        self.check_shape(&current)?;
        attest::verify_all(&current, |n| self.identities.get(&n).copied())
            .map_err(|e| self.refused(Refusal::Forbidden(format!("current record not attested: {e}"))))?;
        if let Some(local) = self.store.get_key(&current.key_id).await.map_err(SessionError::from)? {
            if local.status != KeyStatus::Active || attest::record_bytes(&local) != attest::record_bytes(&current) {
                return Err(SessionError::Unavailable {
                    nodes: vec![self.cfg.node_id],
                    reason: format!(
                        "key {} is at epoch {} here, the proposal reshares epoch {}",
                        current.key_id, local.epoch, current.epoch
                    ),
                });
            }
        }
        Ok(current)
    }

    /// Checks a reshare request the client signed (`a`) against the
    /// proposal: the operation, the committee and threshold, and the client
    /// in the current record's `admin` policy.
    pub(crate) fn check_reshare(
        current: &KeyRecord,
        r: &ReshareProposal,
        a: &ClientAuthorization,
        client: &str,
    ) -> Result<(), Refusal> {
        let mismatch =
            |what: &str| Refusal::BodyMismatch(format!("the proposal's {what} is not what the client signed"));
        let (req, refresh) = parse_reshare(a, &current.key_id).ok_or_else(|| mismatch("operation"))?;
        let parties = req.parties.unwrap_or_else(|| current.parties.clone());
        let threshold = req.threshold.unwrap_or(current.threshold);
        if refresh && (parties != current.parties || threshold != current.threshold) {
            return Err(mismatch("refresh"));
        }
        let proposed: Vec<u16> = r.new_parties.iter().filter_map(|&n| u16::try_from(n).ok()).collect();
        if proposed.len() != r.new_parties.len() || proposed != parties || u32::from(threshold) != r.threshold {
            return Err(mismatch("committee or threshold"));
        }
        if !current.policy.admin.iter().any(|c| c == client) {
            return Err(Refusal::Forbidden(format!(
                "client {client} is not an admin of key {}",
                current.key_id
            )));
        }
        Ok(())
    }

    /// This node's part of a reshare session (see the module docs).
    pub(crate) async fn reshare_part(
        &self,
        spec: SessionSpec,
        r: ReshareProposal,
    ) -> Result<SessionOutcome, SessionError> {
        let current = self.reshare_current(&r).await?;
        let small = |x: &u32| u16::try_from(*x).map_err(|_| SessionError::Invalid(format!("node {x} out of range")));
        let plan = Plan {
            quorum: r.quorum.iter().map(small).collect::<Result<_, _>>()?,
            new_parties: r.new_parties.iter().map(small).collect::<Result<_, _>>()?,
            threshold: u16::try_from(r.threshold)
                .map_err(|_| SessionError::Invalid("threshold out of range".into()))?,
            current,
        };
        check_committee(&plan.current, &plan.new_parties, plan.threshold, &self.cfg.node_ids())
            .map_err(SessionError::Invalid)?;
        let mut quorum = plan.quorum.clone();
        quorum.sort_unstable();
        quorum.dedup();
        if quorum.len() != plan.quorum.len()
            || quorum.len() < usize::from(plan.current.threshold)
            || quorum.iter().any(|n| !plan.current.parties.contains(n))
        {
            return Err(SessionError::Invalid(
                "the quorum must be t distinct old parties".into(),
            ));
        }
        if spec.parties.to_vec() != plan.session() {
            return Err(SessionError::Invalid(
                "session parties are not quorum and committee".into(),
            ));
        }
        let roles = plan.roles(&spec.parties);
        let key = LoadedKey::new(plan.current.clone()).map_err(|e| SessionError::Invalid(e.to_string()))?;
        let (coordinator, session_id) = (spec.coordinator, spec.id);
        // One reshare of a key at a time: a fresh pending epoch of another
        // session is never overwritten.
        if let Some((p, session)) = self
            .store
            .pending_epoch_of(&plan.current.key_id)
            .await
            .map_err(SessionError::from)?
        {
            let fresh = now_unix().saturating_sub(p.created_at)
                < i64::try_from(PENDING_EPOCH_TTL.as_secs()).unwrap_or(i64::MAX);
            if fresh && session != hex::encode(session_id) {
                return Err(SessionError::Busy {
                    node: self.cfg.node_id,
                    reason: format!("another reshare of key {} is pending here", p.key_id),
                });
            }
        }
        // The current share of an old party (a dealer deals it; an ECDSA key
        // made before its record listed the verifying shares needs it too).
        let old_share = if plan.current.parties.contains(&self.cfg.node_id) {
            Some(self.own_share(&plan.current).await?)
        } else {
            None
        };
        let part = key
            .family()
            .reshare_part(self, spec, &key, &roles, &plan.new_parties, old_share)
            .await?;
        let (share, package) = part;
        let record = plan.next_record(package.clone());
        let public_key = key.scheme.public_key(&package).map_err(internal)?;
        if public_key != plan.current.public_key {
            return Err(internal("the reshared key has another public key"));
        }
        let mut outcome = SessionOutcome {
            public_key_package: package,
            ..Default::default()
        };
        // A dealer endorses the move it took part in (what old parties
        // need before they delete their shares).
        if plan.quorum.contains(&self.cfg.node_id) {
            outcome.endorsement = attest::sign_transition(&self.identity, &plan.current, &record);
        }
        if let Some(share) = share {
            self.store
                .put_pending_epoch(&record, &hex::encode(session_id), self.cfg.node_id, Some(&share))
                .await
                .map_err(SessionError::from)?;
            self.remember_coordinator(&record.key_id, coordinator);
            outcome.attestation = attest::sign(&self.identity, &record);
        }
        Ok(outcome)
    }

    /// `FinalizeKey` for a record of a key's next epoch (see the module
    /// table). `Ok(false)`: the record is not an epoch switch here. An
    /// abort (`commit` false) deletes the pending epoch only when it was
    /// made by `session_id` (when given).
    pub(crate) async fn finalize_epoch(
        &self,
        record: &KeyRecord,
        commit: bool,
        from_coordinator: bool,
        session_id: &[u8],
    ) -> Result<bool, SessionError> {
        let local = self.store.get_key(&record.key_id).await.map_err(SessionError::from)?;
        let pending_of = self
            .store
            .pending_epoch_of(&record.key_id)
            .await
            .map_err(SessionError::from)?;
        let forbid = |m: &str| self.refused(Refusal::Forbidden(m.to_string()));
        if !commit {
            let Some((p, session)) = pending_of.filter(|(p, _)| p.epoch == record.epoch) else {
                return Ok(false);
            };
            if !from_coordinator {
                return Err(forbid("only the reshare's coordinator may abort it"));
            }
            if !session_id.is_empty() && hex::encode(session_id) != session {
                tracing::info!(
                    key_id = p.key_id,
                    "reshare abort of an earlier attempt; the pending epoch is kept"
                );
                return Ok(true);
            }
            self.store
                .delete_pending_epoch(&p.key_id, p.epoch)
                .await
                .map_err(SessionError::from)?;
            self.forget_dkg(&p.key_id);
            return Ok(true);
        }
        let pending = pending_of.map(|(p, _)| p);
        let local = match local {
            // A node new to the key: its pending share makes it one.
            None if record.epoch > 0 && record.parties.contains(&self.cfg.node_id) => {
                return self.switch_epoch(record, None, pending.as_ref()).await.map(|()| true);
            }
            // One epoch at a time: the record must follow this node's own.
            Some(l) if l.status == KeyStatus::Active && l.epoch.checked_add(1) == Some(record.epoch) => l,
            // Already at a later epoch (another commit, or the catch-up,
            // came first): nothing to do.
            Some(l) if l.status == KeyStatus::Active && l.epoch >= record.epoch && record.epoch > 0 => {
                let same = attest::record_bytes(&l) == attest::record_bytes(record);
                // The second phase of the commit brings every party's
                // activation: keep it (peers catching up need it).
                if same
                    && l.activations.is_empty()
                    && !record.activations.is_empty()
                    && attest::verify_activations(record, |n| self.identities.get(&n).copied()).is_ok()
                {
                    self.store
                        .set_activations(&record.key_id, record.epoch, &record.activations)
                        .await
                        .map_err(SessionError::from)?;
                }
                return Ok(same || l.epoch > record.epoch);
            }
            _ => return Ok(false),
        };
        let same_key = local.scheme == record.scheme
            && local.public_key == record.public_key
            && local.policy == record.policy
            && local.created_by == record.created_by
            && local.create_jti == record.create_jti;
        if !same_key {
            return Err(forbid("the next epoch's record names another key"));
        }
        // At least t of this node's own committee endorsed exactly this
        // move: fewer than t nodes cannot make it delete its share.
        attest::verify_transition(&local, record, |n| self.identities.get(&n).copied())
            .map_err(|e| forbid(&format!("epoch {} not endorsed: {e}", record.epoch)))?;
        // An old party outside the new committee (about to delete its share)
        // switches only once every new party has activated the epoch
        // (tss-lib's lesson: never before the new committee's final
        // acknowledgements). A node that holds no share waits the same way,
        // so it never follows an epoch its committee did not take up.
        let me = self.cfg.node_id;
        if !record.parties.contains(&me) {
            attest::verify_activations(record, |n| self.identities.get(&n).copied()).map_err(|e| {
                forbid(&format!(
                    "epoch {} not confirmed by its committee yet: {e}",
                    record.epoch
                ))
            })?;
        }
        self.switch_epoch(record, Some(&local), pending.as_ref())
            .await
            .map(|()| true)
    }

    /// Activates the attested `record` of the next epoch (after `local`).
    async fn switch_epoch(
        &self,
        record: &KeyRecord,
        local: Option<&KeyRecord>,
        pending: Option<&KeyRecord>,
    ) -> Result<(), SessionError> {
        if record.parties.contains(&self.cfg.node_id) {
            let mine = pending.filter(|p| p.epoch == record.epoch);
            if mine.map(attest::record_bytes) != Some(attest::record_bytes(record)) {
                return Err(self.refused(Refusal::Forbidden(
                    "this node is a new party but holds no pending share of this record".into(),
                )));
            }
        }
        let retired = local.map(|l| EpochEntry {
            epoch: l.epoch,
            threshold: l.threshold,
            parties: l.parties.clone(),
            record_hash: attest::record_hash(l),
            started_at: l.created_at,
            ended_at: now_unix(),
        });
        let mut next = record.clone();
        next.status = KeyStatus::Active;
        next.created_at = now_unix();
        let me = self.cfg.node_id;
        let switched = self
            .store
            .activate_epoch(&next, retired.as_ref(), record.parties.contains(&me).then_some(me))
            .await
            .map_err(SessionError::from)?;
        self.forget_dkg(&record.key_id);
        if switched {
            // Replace, not remove: a lookup that read the old record from
            // the store before the switch then finds this entry instead of
            // caching the old one.
            let loaded = crate::family::LoadedKey::new(next).map_err(|e| internal(e.to_string()))?;
            self.keys
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(record.key_id.clone(), std::sync::Arc::new(loaded));
            metrics::counter!("sigil_epoch_switches_total").increment(1);
            tracing::info!(key_id = record.key_id, epoch = record.epoch, "key epoch switched");
        }
        Ok(())
    }
}

impl Node {
    /// Checks the shape of a key record a peer sent, before any signature
    /// is verified: distinct parties, each a node of this cluster, and
    /// `1 <= t <= n` (so a record with a million parties costs nothing).
    ///
    /// # Errors
    /// [`SessionError::Invalid`] naming the problem.
    pub(crate) fn check_shape(&self, r: &KeyRecord) -> Result<(), SessionError> {
        let cluster = self.cfg.node_ids();
        let mut sorted = r.parties.clone();
        sorted.sort_unstable();
        sorted.dedup();
        if sorted.len() != r.parties.len() || r.parties.iter().any(|p| !cluster.contains(p)) {
            return Err(SessionError::Invalid(format!(
                "key {}: parties must be distinct nodes of this cluster",
                r.key_id
            )));
        }
        if r.epoch == u32::MAX {
            return Err(SessionError::Invalid(format!("key {}: epoch out of range", r.key_id)));
        }
        if r.threshold == 0 || usize::from(r.threshold) > r.parties.len() {
            return Err(SessionError::Invalid(format!(
                "key {}: threshold out of range",
                r.key_id
            )));
        }
        Ok(())
    }

    /// Adopts a later epoch of `key_id` (held here at `epoch`) from the
    /// first of `peers` that has one: its attested record goes through the
    /// checks of a commit. Returns whether this node switched. Used when a
    /// signing session meets the switch window of a reshare (the commit
    /// reaches nodes one by one): a participant behind the coordinator, or
    /// a coordinator behind its signers.
    pub(crate) async fn adopt_later_epoch(&self, key_id: &str, epoch: u32, peers: &[u16]) -> bool {
        for &peer in peers.iter().filter(|&&p| p != self.cfg.node_id).take(3) {
            let Ok(Some(meta)) = self.peers.get_key_meta(peer, key_id, Duration::from_millis(500)).await else {
                continue;
            };
            if meta.key_id != key_id || meta.epoch <= epoch {
                continue;
            }
            let req = sigil_proto::peer::FinalizeKeyRequest {
                key: Some(meta),
                commit: true,
                session_id: Vec::new(),
            };
            if let Err(e) = self.finalize_key(None, req).await {
                tracing::warn!(peer, key_id, error = %e, "a later epoch from a peer was not adopted");
            }
            // Switched by this call or by the commit arriving meanwhile.
            if let Ok(Some(k)) = self.store.get_key(key_id).await {
                if k.epoch > epoch {
                    return true;
                }
            }
        }
        false
    }
}

/// The reshare request `a` signs for key `key_id`, and whether it is a
/// refresh; `None` for another operation or a body that does not parse.
pub(crate) fn parse_reshare(a: &ClientAuthorization, key_id: &str) -> Option<(ReshareRequest, bool)> {
    if a.method != "POST" {
        return None;
    }
    let refresh = if a.path == format!("/v1/keys/{key_id}/refresh") {
        true
    } else if a.path == format!("/v1/keys/{key_id}/reshare") {
        false
    } else {
        return None;
    };
    let req = if a.body.iter().all(u8::is_ascii_whitespace) {
        ReshareRequest::default()
    } else {
        serde_json::from_slice(&a.body).ok()?
    };
    Some((req, refresh))
}

/// How long a reshare's pending epoch may wait for its commit before the
/// catch-up pass deletes it.
pub const PENDING_EPOCH_TTL: Duration = Duration::from_secs(600);
