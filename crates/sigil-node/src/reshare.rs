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
//!    record and the quorum's endorsements of the move, then commits in two
//!    phases (`crate::epoch`). Phase 1: each new party, on the attested
//!    record equal to its own pending one, *acknowledges* it (stores the
//!    attested record with its share, and from then on never deletes it:
//!    no abort, no sweep, no other reshare) and answers with its
//!    activation. Phase 2, with every activation: every node switches in
//!    one store transaction (the new share becomes the key's; the epoch-`e`
//!    share, the key's presignatures and the pending row are deleted).
//!    Epoch `e` signs until then; no node deletes an epoch-`e` share before
//!    every new party promised to keep its epoch-`e + 1` share (tss-lib's
//!    lesson), and a coordinator cannot split the committee by committing
//!    to some and aborting others. A coordinator that stops between the
//!    phases leaves the epoch acknowledged: any node holding it completes
//!    the commit from its catch-up pass.
//! 5. On failure before phase 1 the coordinator tells every party to delete
//!    its pending epoch; epoch `e` stays active everywhere.
//!
//! | peer call | who may send it | what the receiver verifies |
//! |---|---|---|
//! | `RunSession` reshare | any node | the record of the current epoch carries every party's attestation (own config's identity keys) and equals this node's own record if it has one; the client's token (signature, `aud`, lifetime, `jti`) for `POST /v1/keys/{key_id}/reshare` with this committee and threshold, or `/refresh` with the current ones; the client in the record's `admin` policy; the quorum is at least `t` distinct old parties, the new committee distinct configured nodes, `2 <= t' <= n'`, the session parties exactly their union |
//! | `FinalizeKey` commit, a later epoch | any node (the coordinator, or a peer in the catch-up pass) | every new party's attestation of the record; the endorsements of `t` parties of this node's own epoch (`attest::verify_transition`); same key id, scheme, public key, policy and creator as the active record of the earlier epoch here. Then: with every new party's activation, the switch; without, a new party's acknowledgement of its own pending record equal to it, and a refusal at any other node |
//! | `FinalizeKey` abort, pending epoch | the reshare's coordinator | a pending epoch of that key here made by the named session, not acknowledged; never the active one |
//! | `GetKeyMeta` with `pending` | any node | nothing (public data): the acknowledged pending record with this node's activation |

use sigil_crypto::reshare::Roles;
use sigil_crypto::SessionId;
use sigil_proto::peer::session_proposal::Kind;
use sigil_proto::peer::{ClientAuthorization, ReshareProposal, SessionOutcome};
use sigil_store::{KeyRecord, KeyStatus};

use crate::auth::Refusal;
use crate::error::{NodeError, SessionError};
use crate::family::LoadedKey;
use crate::session::SessionSpec;
use crate::{attest, internal, now_unix, records, Node, RequestAuth};

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

/// A checked reshare request ([`Node::plan_reshare`]), ready to run.
#[derive(Debug, Clone)]
pub struct ReshareTarget {
    /// The key's current record.
    pub current: KeyRecord,
    /// The new committee.
    pub new_parties: Vec<u16>,
    /// The new threshold.
    pub threshold: u16,
    /// The family needs aux info for the new committee (ECDSA).
    aux: bool,
}

/// How one reshare attempt failed.
enum Attempt {
    /// Before its commit: nothing of the next epoch is kept; may be retried.
    Failed(NodeError),
    /// During its commit: the next epoch is acknowledged and completes later.
    Committing(NodeError),
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
    /// `public_package`. A key reshared away from its external party (to a
    /// committee of nodes) loses the party from its policy too.
    fn next_record(&self, public_package: Vec<u8>) -> KeyRecord {
        KeyRecord {
            policy: next_policy(&self.current.policy, &self.new_parties),
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

/// The policy of a key's next epoch among `new_parties`: the current one,
/// without the external party when the new committee has none (a key
/// reshared away from its external party).
pub(crate) fn next_policy(current: &sigil_store::KeyPolicy, new_parties: &[u16]) -> sigil_store::KeyPolicy {
    let mut policy = current.clone();
    if !sigil_crypto::relay::has_external(new_parties) {
        policy.external.clear();
        policy.external_keys.clear();
        policy.require_external = false;
    }
    policy
}

/// Checks a requested committee and threshold for a key of `current`
/// against the cluster `cluster`. A key with an external party can only
/// be reshared away from it, to a committee of nodes, by `t` of its node
/// parties (the party deals nothing: what a client that lost its share
/// file does with a 2-of-3 key). The error is the client-facing reason.
pub(crate) fn check_committee(current: &KeyRecord, parties: &[u16], t: u16, cluster: &[u16]) -> Result<(), String> {
    if sigil_crypto::relay::has_external(&current.parties) {
        if sigil_crypto::relay::has_external(parties) {
            return Err(
                "a key with an external party is only reshared away from it: give a committee of nodes (parties)"
                    .into(),
            );
        }
        let nodes = sigil_crypto::relay::node_parties(&current.parties).count();
        if nodes < usize::from(current.threshold) {
            return Err(format!(
                "only {nodes} node(s) hold shares of this key, fewer than t = {}: it cannot be reshared without its external party",
                current.threshold
            ));
        }
    }
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
        let target = self.plan_reshare(key_id, req, refresh, auth).await?;
        self.run_planned_reshare(&target, auth).await
    }

    /// The checks of [`Node::reshare`] that come before any session (every
    /// 400, 403 and 404 is found here).
    ///
    /// # Errors
    /// As [`Node::reshare`], before any session.
    pub async fn plan_reshare(
        &self,
        key_id: &str,
        req: ReshareRequest,
        refresh: bool,
        auth: &RequestAuth,
    ) -> Result<ReshareTarget, NodeError> {
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
        check_committee(&current, &new_parties, threshold, &self.members().ids()).map_err(NodeError::bad_request)?;
        if key.family().uses_aux_info() {
            // Aux info of a set is made (or found committed) by one of its
            // parties.
            if !new_parties.contains(&self.cfg.node_id) {
                return Err(NodeError::bad_request(format!(
                    "send an ECDSA reshare to a node of the new committee {new_parties:?} (it makes the committee's aux info)"
                )));
            }
        }
        Ok(ReshareTarget {
            aux: key.family().uses_aux_info(),
            current,
            new_parties,
            threshold,
        })
    }

    /// Runs a checked reshare ([`Node::plan_reshare`]): ECDSA aux info for
    /// the new committee first, then the reshare itself.
    ///
    /// # Errors
    /// As [`Node::reshare`], from its sessions.
    pub async fn run_planned_reshare(&self, t: &ReshareTarget, auth: &RequestAuth) -> Result<KeyRecord, NodeError> {
        if t.aux {
            self.ensure_aux(&t.new_parties, &auth.proto).await?;
        }
        self.reshare_to(&t.current, t.new_parties.clone(), t.threshold, Some(&auth.proto))
            .await
    }

    /// Runs the reshare of `current` to `new_parties` and `threshold`, for
    /// the client request `auth` (none: an automatic rotation), retried once
    /// without the dealers a failed attempt named.
    ///
    /// # Errors
    /// As [`Node::reshare`], after its request checks.
    pub(crate) async fn reshare_to(
        &self,
        current: &KeyRecord,
        new_parties: Vec<u16>,
        threshold: u16,
        auth: Option<&ClientAuthorization>,
    ) -> Result<KeyRecord, NodeError> {
        let mut avoid: Vec<u16> = Vec::new();
        let mut last = None;
        for _ in 0..2 {
            let plan = Plan {
                quorum: self.quorum_of(current, &avoid)?,
                current: current.clone(),
                new_parties: new_parties.clone(),
                threshold,
            };
            match self.run_reshare(&plan, auth).await {
                Ok(record) => return Ok(record),
                // The commit began: the epoch completes later; another
                // session would only find it pending.
                Err(Attempt::Committing(e)) => return Err(e),
                Err(Attempt::Failed(e)) => {
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
        // Node parties only: an external party never deals.
        let mut old: Vec<u16> = sigil_crypto::relay::node_parties(&current.parties)
            .filter(|n| !avoid.contains(n))
            .collect();
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
    async fn run_reshare(&self, plan: &Plan, auth: Option<&ClientAuthorization>) -> Result<KeyRecord, Attempt> {
        let session = plan.session();
        let kind = Kind::Reshare(ReshareProposal {
            current: Some(records::meta_of(&plan.current)),
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
            auth,
        };
        let outcomes = self
            .coordinate_inner(&session, kind, run)
            .await
            .map_err(|e| self.replay_as_unavailable(e));
        let attested = outcomes.and_then(|o| self.attested_epoch(plan, &session, &o.by_party));
        let mut everyone = self.members().ids();
        everyone.extend(
            plan.new_parties
                .iter()
                .filter(|n| !everyone.contains(n))
                .copied()
                .collect::<Vec<_>>(),
        );
        match attested {
            Ok(record) => {
                let record = self
                    .commit_epoch(&record)
                    .await
                    .map_err(|e| Attempt::Committing(e.into()))?;
                metrics::histogram!("sigil_reshare_seconds", "scheme" => record.scheme.clone())
                    .record(started.elapsed().as_secs_f64());
                tracing::info!(key_id = record.key_id, epoch = record.epoch, parties = ?record.parties, threshold = record.threshold, "key reshared");
                // This node's own record, or the attested one if its own
                // switch did not happen (it catches up later).
                match self
                    .store
                    .get_key(&record.key_id)
                    .await
                    .map_err(|e| Attempt::Committing(e.into()))?
                {
                    Some(active) if active.epoch == record.epoch => Ok(active),
                    _ => Ok(record),
                }
            }
            Err(e) => {
                // The abort names this attempt's session: an abort that
                // arrives late never deletes a later attempt's epoch.
                let abandoned = plan.next_record(Vec::new());
                let req = sigil_proto::peer::FinalizeKeyRequest {
                    key: Some(records::meta_of(&abandoned)),
                    commit: false,
                    session_id: run.session_id.to_vec(),
                };
                self.finalize_request_everywhere(&session, req, &e.nodes()).await;
                tracing::warn!(key_id = plan.current.key_id, error = ?e, "reshare failed; the current epoch stays active");
                Err(Attempt::Failed(NodeError::from(e)))
            }
        }
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
        attest::verify_transition(&plan.current, &record, self.identities()).map_err(|e| {
            // Name the dealers whose endorsement is missing or wrong.
            let bytes = attest::transition_bytes(&plan.current, &record);
            let culprits = record
                .endorsements
                .iter()
                .filter(|a| {
                    !self.identity_of(a.node).is_some_and(|k| {
                        ed25519_dalek::Signature::from_slice(&a.signature)
                            .is_ok_and(|s| ed25519_dalek::Verifier::verify(&k, &bytes, &s).is_ok())
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
        attest::verify_all(&record, self.identities()).map_err(|e| {
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
        let current = records::record_of(meta, KeyStatus::Active)?;
        self.check_shape(&current)?;
        attest::verify_all(&current, self.identities())
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

    /// The plan a reshare proposal `r` describes, checked against this
    /// node's own record of the key and the session's parties.
    async fn checked_plan(&self, spec: &SessionSpec, r: &ReshareProposal) -> Result<Plan, SessionError> {
        let current = self.reshare_current(r).await?;
        let small = |x: &u32| u16::try_from(*x).map_err(|_| SessionError::Invalid(format!("node {x} out of range")));
        let plan = Plan {
            quorum: r.quorum.iter().map(small).collect::<Result<_, _>>()?,
            new_parties: r.new_parties.iter().map(small).collect::<Result<_, _>>()?,
            threshold: u16::try_from(r.threshold)
                .map_err(|_| SessionError::Invalid("threshold out of range".into()))?,
            current,
        };
        check_committee(&plan.current, &plan.new_parties, plan.threshold, &self.members().ids())
            .map_err(SessionError::Invalid)?;
        let mut quorum = plan.quorum.clone();
        quorum.sort_unstable();
        quorum.dedup();
        if quorum.len() != plan.quorum.len()
            || quorum.len() < usize::from(plan.current.threshold)
            || quorum
                .iter()
                .any(|&n| !plan.current.parties.contains(&n) || n == sigil_crypto::relay::EXTERNAL_PARTY)
        {
            return Err(SessionError::Invalid(
                "the quorum must be t distinct old node parties".into(),
            ));
        }
        if spec.parties.to_vec() != plan.session() {
            return Err(SessionError::Invalid(
                "session parties are not quorum and committee".into(),
            ));
        }
        Ok(plan)
    }

    /// One reshare of a key at a time: a fresh or acknowledged pending
    /// epoch of another session than `session_id` is never overwritten
    /// (`Busy`).
    async fn refuse_other_pending(&self, key_id: &str, session_id: &SessionId) -> Result<(), SessionError> {
        let Some((p, session)) = self.store.pending_epoch_of(key_id).await.map_err(SessionError::from)? else {
            return Ok(());
        };
        let fresh = now_unix().saturating_sub(p.created_at)
            < i64::try_from(crate::epoch::PENDING_EPOCH_TTL.as_secs()).unwrap_or(i64::MAX);
        // An acknowledged epoch is kept until it completes, at any age.
        let kept = fresh || !p.attestations.is_empty();
        if kept && session != hex::encode(session_id) {
            return Err(SessionError::Busy {
                node: self.cfg.node_id,
                reason: format!("another reshare of key {} is pending here", p.key_id),
            });
        }
        Ok(())
    }

    /// A node new to the key (it holds no record of it) remembers the
    /// attested current record the session reshared, in memory until the
    /// commit: the acknowledgement then checks the endorsements against it
    /// and registers it, so a stale record a coordinator might send is never
    /// stored (honest dealers cannot deal for it: their shares are of
    /// another epoch).
    async fn remember_current(&self, current: &KeyRecord) -> Result<(), SessionError> {
        let known = self.store.get_key(&current.key_id).await.map_err(SessionError::from)?;
        if known.is_none() {
            self.reshared_from
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(current.key_id.clone(), current.clone());
        }
        Ok(())
    }

    /// This node's part of a reshare session (see the module docs).
    pub(crate) async fn reshare_part(
        &self,
        spec: SessionSpec,
        r: ReshareProposal,
    ) -> Result<SessionOutcome, SessionError> {
        let plan = self.checked_plan(&spec, &r).await?;
        self.remember_current(&plan.current).await?;
        let roles = plan.roles(&spec.parties);
        let key = LoadedKey::new(plan.current.clone()).map_err(|e| SessionError::Invalid(e.to_string()))?;
        let (coordinator, session_id) = (spec.coordinator, spec.id);
        self.refuse_other_pending(&plan.current.key_id, &session_id).await?;
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
            let ttl = i64::try_from(crate::epoch::PENDING_EPOCH_TTL.as_secs()).unwrap_or(i64::MAX);
            let stored = self
                .store
                .put_pending_epoch(
                    &record,
                    &hex::encode(session_id),
                    self.cfg.node_id,
                    Some(&share),
                    now_unix().saturating_sub(ttl),
                )
                .await
                .map_err(SessionError::from)?;
            if !stored {
                return Err(SessionError::Busy {
                    node: self.cfg.node_id,
                    reason: format!("another reshare of key {} is pending here", record.key_id),
                });
            }
            self.remember_coordinator(&record.key_id, coordinator);
            outcome.attestation = attest::sign(&self.identity, &record);
        }
        Ok(outcome)
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
