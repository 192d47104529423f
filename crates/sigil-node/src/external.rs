//! Sessions with an external party, as their relay (the node that took
//! the client's request) runs them: [`Node::open_relay`] makes the
//! party's mailbox before anything is proposed, the session then runs as
//! any other (the coordinator's `RunSession` to the node parties, the
//! party's messages through the mailbox, [`crate::relay`]), and its
//! outcome lands in the mailbox for `GET /v1/sessions/{session_id}`.

use super::*;
use crate::coordinator::Run;
use crate::error::ErrorDetail;
use crate::relay::{Mailbox, MailboxSpec, Outcome, PartyKeys, SessionKindView, SubmitRefusal};
use serde::Serialize;
use sigil_crypto::relay::{RelayMessage, EXTERNAL_PARTY};

/// A relayed session's id and deadline.
#[derive(Debug, Clone, Copy)]
pub struct RelayedRun {
    /// The session id (also the mailbox's).
    pub session_id: SessionId,
    /// The session deadline.
    pub budget: Duration,
}

impl RelayedRun {
    /// How the coordinator runs the session (every party's outcome when
    /// `all`, else party 0's).
    pub(crate) fn run<'a>(&self, all: bool, auth: &'a ClientAuthorization) -> Run<'a> {
        Run {
            all,
            budget: self.budget,
            run_local: true,
            session_id: self.session_id,
            auth: Some(auth),
        }
    }
}

/// A relayed session as the API shows it (`GET /v1/sessions/{session_id}`,
/// and the `202` that starts one).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SessionView {
    /// The session id, 64 hex characters.
    pub session_id: String,
    /// `dkg` or `sign`.
    pub kind: SessionKindView,
    /// The key it makes or uses.
    pub key_id: String,
    /// Its scheme.
    pub scheme: String,
    /// Node ids in session order; 65535 is the external party.
    pub parties: Vec<u16>,
    /// The external party's session index.
    pub external_index: u16,
    /// The coordinator and relay (this node).
    pub coordinator: u16,
    /// The key's threshold `t`.
    pub threshold: u16,
    /// `running`, `confirming` (a key generation waits for the external
    /// party to confirm `record`), `succeeded` or `failed`.
    pub state: &'static str,
    /// While running: the earliest round this node still waits in, and
    /// the parties it waits for (65535: the external party).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub round: Option<u16>,
    /// See `round`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub awaiting: Vec<u16>,
    /// Messages queued for the external party so far.
    pub queued: u64,
    /// Milliseconds left before the session's deadline.
    pub deadline_in_ms: u64,
    /// `succeeded`: the key (`dkg`) or the signature (`sign`), as
    /// `POST /v1/keys` and `.../sign` answer them.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub result: Option<serde_json::Value>,
    /// `failed`: the error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorDetail>,
    /// `confirming`: the new key's record, attested by every node party,
    /// for the external party to check and sign: `key` (the key as
    /// `GET /v1/keys/{key_id}` shows it, with `created_by`, `create_jti`
    /// and `record_hash`) and `policy_json` (the policy exactly as the
    /// canonical record covers it). The party confirms with a `CONFIRM_ROUND` message
    /// (`sigil_crypto::relay::CONFIRM_ROUND`) carrying its session key's
    /// signature over the canonical record (`sigil_api::record`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub record: Option<serde_json::Value>,
}

/// Ends a relayed session (see [`Node::relay_guard`]).
pub struct RelayGuard {
    node: Arc<Node>,
    mailbox: Arc<Mailbox>,
    _place: limits::Place<String>,
    done: bool,
}

impl RelayGuard {
    /// Ends the session with `r` (the API's view of its result).
    pub fn finish(mut self, r: Result<serde_json::Value, crate::error::ApiError>) {
        let outcome = match r {
            Ok(v) => Outcome::Succeeded(v),
            Err(e) => Outcome::Failed(e.detail().1),
        };
        self.end(outcome);
    }

    fn end(&mut self, outcome: Outcome) {
        self.done = true;
        self.mailbox.finish(outcome);
        self.node.relay.close(&self.mailbox.session_id);
    }
}

impl Drop for RelayGuard {
    fn drop(&mut self) {
        if !self.done {
            let e = crate::error::ApiError::internal("the relayed session ended without an outcome");
            self.end(Outcome::Failed(e.detail().1));
        }
    }
}

/// The relay of an external party this node runs itself (a user share):
/// its own mailbox, through the same checks as a client's submissions.
struct MailboxRelay<'a> {
    node: &'a Node,
    mailbox: &'a Mailbox,
    auth: &'a RequestAuth,
}

impl sigil_crypto::party::Relay for MailboxRelay<'_> {
    async fn fetch(&self, after: u64) -> Result<Vec<(u64, RelayMessage)>, sigil_crypto::party::PartyError> {
        let messages = self.mailbox.messages_after(after, Duration::from_secs(5)).await;
        if messages.is_empty() && self.mailbox.outcome().is_some() {
            return Err(sigil_crypto::party::PartyError::Relay("the session ended".into()));
        }
        Ok(messages)
    }

    async fn submit(&self, m: &RelayMessage) -> Result<(), sigil_crypto::party::PartyError> {
        self.node
            .submit_from_party(self.auth, m.clone())
            .await
            .map(|_| ())
            .map_err(|e| sigil_crypto::party::PartyError::Relay(e.to_string()))
    }
}

/// The user's party of a user-share key generation, which this node runs
/// for the client ([`Node::run_user_share_keygen`]).
struct UserParty {
    node: Arc<Node>,
    mailbox: Arc<Mailbox>,
    auth: RequestAuth,
    session: sigil_crypto::party::PartySession,
}

impl UserParty {
    /// Runs the party as a client's party runs: its key generation, then
    /// its confirmation of the record once the relay puts it and it names
    /// this key. Returns the party's share.
    async fn run(
        self,
        scheme: Scheme,
        eid: SessionId,
        t: u16,
        primes: Option<sigil_crypto::ecdsa::PregeneratedPrimes>,
    ) -> Result<Zeroizing<Vec<u8>>, String> {
        let relay = MailboxRelay {
            node: &self.node,
            mailbox: &self.mailbox,
            auth: &self.auth,
        };
        let key = sigil_crypto::party::protocols::keygen(&self.session, &relay, scheme, &eid, t, primes)
            .await
            .map_err(|e| e.to_string())?;
        let record = loop {
            if let Some((bytes, view)) = self.mailbox.to_confirm() {
                let package = view.pointer("/key/public_key_package").and_then(|p| p.as_str());
                if package != Some(hex::encode(&key.package).as_str()) {
                    return Err("the record to confirm is not the user party's key".to_string());
                }
                break bytes;
            }
            if self.mailbox.outcome().is_some() {
                return Err("the session ended before the user party confirmed".to_string());
            }
            self.mailbox.wait_end(Duration::from_secs(5)).await;
        };
        let confirmation = self.session.confirmation(&record).map_err(|e| e.to_string())?;
        sigil_crypto::party::Relay::submit(&relay, &confirmation)
            .await
            .map_err(|e| e.to_string())?;
        Ok(key.share)
    }
}

/// A checked signature with the key's external party, ready to run
/// ([`Node::run_relayed_sign`]).
pub struct RelayedSign {
    key: Arc<LoadedKey>,
    kind: Kind,
    signers: Vec<u16>,
    message: Vec<u8>,
    path: Vec<u32>,
    /// The mailbox.
    pub mailbox: Arc<Mailbox>,
    run: RelayedRun,
}

impl Node {
    /// Opens the mailbox of a new relayed session among `parties` (the
    /// external party among them) for `client` with its session `keys`.
    ///
    /// # Errors
    /// Malformed keys (400).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn open_relay(
        &self,
        kind: SessionKindView,
        key_id: &str,
        scheme: Scheme,
        client: &str,
        parties: &[u16],
        threshold: u16,
        keys: &PartyKeys,
        expects: session::ExpectFn,
    ) -> Result<(Arc<Mailbox>, RelayedRun), NodeError> {
        let budget = Duration::from_millis(self.cfg.external_session_timeout_ms);
        let session_id = random_session_id();
        let members = self.members();
        let identities = parties
            .iter()
            .filter_map(|&p| members.identity(p).map(|k| (p, k)))
            .collect();
        let mailbox = Mailbox::new(MailboxSpec {
            session_id,
            kind,
            key_id: key_id.to_string(),
            scheme: scheme.as_str().to_string(),
            client: client.to_string(),
            parties: parties.to_vec(),
            threshold,
            coordinator: self.cfg.node_id,
            expects,
            keys: keys.clone(),
            identities,
            deadline: Instant::now() + budget,
        })
        .map_err(NodeError::bad_request)?;
        let mailbox = Arc::new(mailbox);
        self.relay.open(mailbox.clone());
        Ok((mailbox, RelayedRun { session_id, budget }))
    }

    /// The mailbox and run of a planned key generation with an external
    /// party ([`KeygenPlan`] with party keys).
    ///
    /// # Errors
    /// A plan without an external party (400).
    pub fn open_relayed_keygen(&self, plan: &KeygenPlan) -> Result<(Arc<Mailbox>, RelayedRun), NodeError> {
        let keys = plan
            .party_keys
            .as_ref()
            .ok_or_else(|| NodeError::bad_request("the key has no external party"))?;
        self.open_relay(
            SessionKindView::Dkg,
            &plan.key_id,
            plan.scheme,
            &plan.auth.client,
            &plan.parties,
            plan.threshold,
            keys,
            family::of(plan.scheme).keygen_schedule(&plan.parties),
        )
    }

    /// The guard that ends relayed session `mailbox` (held by the task
    /// that runs it, with the client's place): with the result handed to
    /// [`RelayGuard::finish`], or, dropped without one (a panic, an
    /// aborted task), failed, so no client waits on it forever.
    ///
    /// # Errors
    /// [`SessionError::Busy`] (503) when `client` already runs
    /// `limits.keygens_per_client` relayed sessions here.
    pub fn relay_guard(self: &Arc<Self>, mailbox: Arc<Mailbox>) -> Result<RelayGuard, NodeError> {
        let max = self.cfg.limits.keygens_per_client.max(1) * 4;
        let place = match limits::Place::claim(&self.relayed, &mailbox.client, max) {
            Ok(p) => p,
            Err(n) => {
                let busy = SessionError::Busy {
                    node: self.cfg.node_id,
                    reason: format!(
                        "client {} runs {n} relayed sessions here (at most {max})",
                        mailbox.client
                    ),
                };
                mailbox.finish(Outcome::Failed(crate::error::ApiError::from(busy.clone()).detail().1));
                self.relay.close(&mailbox.session_id);
                return Err(NodeError::Session(busy));
            }
        };
        Ok(RelayGuard {
            node: self.clone(),
            mailbox,
            _place: place,
            done: false,
        })
    }

    /// Checks a signature of `message` (at BIP-32 `path`, ECDSA only) with
    /// key `key_id` in which its external party takes part with session
    /// `keys`, chooses the signers
    /// (this node first: it aggregates; the party; other node parties up
    /// to `t`) and opens the mailbox.
    ///
    /// # Errors
    /// 404 for an unknown key; 403 for a client that is not the key's
    /// external party's or may not sign; 400 for a key without an external
    /// party, a node that holds no share of it, or a bad message.
    pub async fn plan_relayed_sign(
        &self,
        key_id: &str,
        message: Vec<u8>,
        path: Vec<u32>,
        auth: &RequestAuth,
        keys: &PartyKeys,
    ) -> Result<RelayedSign, NodeError> {
        let key = self.usable_key(key_id, &auth.client).await?;
        let policy = &key.record.policy;
        if !policy.sign.contains(&auth.client) || policy.external.first() != Some(&auth.client) {
            return Err(NodeError::refused(&auth::Refusal::Forbidden(format!(
                "client {} is not the external party of key {key_id} or may not sign with it",
                auth.client
            ))));
        }
        if message.len() > MAX_MESSAGE_BYTES {
            return Err(NodeError::bad_request(format!(
                "message longer than {MAX_MESSAGE_BYTES} bytes"
            )));
        }
        key.family()
            .check_message(key.scheme, &message, &path)
            .map_err(NodeError::bad_request)?;
        let me = self.cfg.node_id;
        if !key.parties.contains(me) {
            return Err(NodeError::bad_request(format!(
                "node {me} holds no share of key {key_id}: ask one of its node parties, which relays the external party"
            )));
        }
        let others: Vec<u16> = sigil_crypto::relay::node_parties(key.parties.nodes())
            .filter(|&p| p != me)
            .collect();
        let need = usize::from(key.record.threshold).saturating_sub(2);
        let mut signers = vec![me, EXTERNAL_PARTY];
        signers.extend(self.health.choose(me, &others, need, |n| self.recently_down(n)));
        if signers.len() < usize::from(key.record.threshold) {
            return Err(NodeError::bad_request(format!(
                "key {key_id} has too few node parties for t = {}",
                key.record.threshold
            )));
        }
        let proposal = SignProposal {
            key_id: key_id.to_string(),
            message: message.clone(),
            epoch: key.record.epoch,
            scheme: key.record.scheme.clone(),
            derivation_path: path.clone(),
            presignature_id: String::new(),
        };
        let expects = key.family().sign_schedule(&proposal);
        let kind = Kind::Sign(proposal);
        let (mailbox, run) = self.open_relay(
            SessionKindView::Sign,
            key_id,
            key.scheme,
            &auth.client,
            &signers,
            key.record.threshold,
            keys,
            expects,
        )?;
        Ok(RelayedSign {
            key,
            kind,
            signers,
            message,
            path,
            mailbox,
            run,
        })
    }

    /// Runs a planned relayed signature; this node aggregates.
    ///
    /// # Errors
    /// The session's failure (a silent external party is named as 65535).
    pub async fn run_relayed_sign(&self, plan: RelayedSign, auth: &RequestAuth) -> Result<Signed, NodeError> {
        let o = self
            .coordinate_inner(&plan.signers, plan.kind, plan.run.run(false, &auth.proto))
            .await?;
        let signature = o.aggregate_signature()?;
        let extras = plan
            .key
            .family()
            .signature_extras(&plan.key, &plan.message, &plan.path, &signature)
            .map_err(NodeError::internal)?;
        Ok(Signed {
            signature,
            signers: plan.signers,
            extras,
        })
    }

    /// A key generation with a user share: this node runs the external
    /// party (the requesting client's) itself, in memory, with fresh
    /// session keys it names in the proposal (`DkgProposal.user_party_*`,
    /// which every participant takes only when the client's signed body
    /// asks for a user share), beside its own part, and answers with the
    /// key and the party's share HPKE-sealed to the client's recipient
    /// key. The share is never stored; it is zeroized once sealed.
    ///
    /// Trust: this node sees the user share during the DKG.
    ///
    /// # Errors
    /// The key generation's failure, or the user party's.
    pub async fn run_user_share_keygen(
        self: &Arc<Self>,
        mut plan: KeygenPlan,
        auth: &RequestAuth,
    ) -> Result<crate::views::KeyView, NodeError> {
        use futures::future::Either;
        use sigil_crypto::party::{PartySession, SessionKeys};
        let recipient = plan.user_share.ok_or_else(|| NodeError::bad_request("no user_share"))?;
        // An ECDSA user party's primes for the key's aux info: this node's.
        let primes = match plan.scheme.is_ecdsa() {
            true => Some(self.primes_for_aux().await?),
            false => None,
        };
        let keys = SessionKeys::generate();
        let public = PartyKeys {
            verifying_key: hex::encode(keys.signing.verifying_key().to_bytes()),
            hpke_public_key: hex::encode(keys.secret.public_key()),
        };
        if let Kind::Dkg(d) = &mut plan.kind {
            d.user_party_verifying_key = public.verifying_key.clone();
            d.user_party_hpke_key = public.hpke_public_key.clone();
        }
        plan.policy.external_keys = vec![public.verifying_key.clone()];
        plan.party_keys = Some(public);
        let (mailbox, run) = self.open_relayed_keygen(&plan)?;
        let guard = self.relay_guard(mailbox.clone())?;
        let members = self.members();
        let identities = plan
            .parties
            .iter()
            .filter_map(|&p| members.identity(p).map(|k| (p, k)))
            .collect();
        let session = PartySession::new(mailbox.session_id, plan.parties.clone(), &identities, keys)
            .map_err(NodeError::internal)?;
        let eid = authority::execution_id(
            &plan.kind,
            &plan.parties,
            self.cfg.node_id,
            &run.session_id,
            &auth.proto.body,
        );
        let (t, scheme, key_id) = (plan.threshold, plan.scheme, plan.key_id.clone());
        let user = UserParty {
            node: self.clone(),
            mailbox: mailbox.clone(),
            auth: auth.clone(),
            session,
        };
        let party = tokio::spawn(session::off_the_workers(user.run(scheme, eid, t, primes)));
        let party = async { party.await.unwrap_or_else(|e| Err(e.to_string())) };
        let progress = operations::KeygenProgress::default();
        let keygen = self.run_keygen_in(plan, &progress, Some(run));
        futures::pin_mut!(party, keygen);
        let (record, share) = match futures::future::select(keygen, party).await {
            Either::Left((record, party)) => {
                let record = record?;
                (
                    record,
                    tokio::time::timeout(Duration::from_secs(5), party)
                        .await
                        .map_err(internal)?,
                )
            }
            Either::Right((share, keygen)) => {
                if let Err(e) = &share {
                    // No confirmation will come: end the wait for it now.
                    let e = crate::error::ApiError::internal(format!("the user's party failed: {e}"));
                    mailbox.finish(Outcome::Failed(e.detail().1));
                }
                (keygen.await?, share)
            }
        };
        let mut view = family::view_of(&record);
        guard.finish(serde_json::to_value(&view).map_err(crate::error::ApiError::internal));
        let share = share.map_err(|e| NodeError::internal(format!("the user's party failed: {e}")))?;
        let sealed = sigil_crypto::relay::seal_user_share(&recipient, &key_id, &share, &mut rand::rngs::OsRng)
            .map_err(NodeError::internal)?;
        view.user_share = Some(hex::encode(sealed));
        Ok(view)
    }

    /// The view of the relayed session `id` for `client`, once it ended
    /// or `wait` passed (a long poll; zero: at once).
    ///
    /// # Errors
    /// [`SubmitRefusal::UnknownSession`] (404) for no such session of
    /// this client here.
    pub async fn session_view(
        &self,
        id: &SessionId,
        client: &str,
        wait: Duration,
    ) -> Result<SessionView, SubmitRefusal> {
        let m = self.relay.of_client(id, client)?;
        m.wait_end(wait).await;
        Ok(self.view_of_mailbox(&m))
    }

    /// The view of mailbox `m`.
    pub fn view_of_mailbox(&self, m: &Mailbox) -> SessionView {
        let record = m.to_confirm().map(|(_, view)| view);
        let (state, result, error) = match m.outcome() {
            None if record.is_some() => ("confirming", None, None),
            None => ("running", None, None),
            Some(Outcome::Succeeded(v)) => ("succeeded", Some(v), None),
            Some(Outcome::Failed(e)) => ("failed", None, Some(e)),
        };
        let (round, awaiting) = match (state, self.sessions.progress(&m.session_id)) {
            ("running", Some((round, awaiting))) => (Some(round), awaiting),
            _ => (None, Vec::new()),
        };
        SessionView {
            session_id: hex::encode(m.session_id),
            kind: m.kind,
            key_id: m.key_id.clone(),
            scheme: m.scheme.clone(),
            parties: m.parties.to_vec(),
            external_index: m.index,
            coordinator: m.coordinator,
            threshold: m.threshold,
            state,
            round,
            awaiting,
            queued: m.queued(),
            deadline_in_ms: u64::try_from(m.deadline.saturating_duration_since(Instant::now()).as_millis())
                .unwrap_or(u64::MAX),
            result,
            error,
            record,
        }
    }

    /// Puts `record` (a new key attested by its node parties) to the
    /// external party of the relayed key generation `run` and waits for
    /// its confirmation, the attestation of the external slot
    /// ([`attest::external_attestation`]).
    ///
    /// # Errors
    /// [`SessionError::Timeout`] naming the party (65535) when it does not
    /// confirm before the session's deadline.
    pub(crate) async fn external_confirmation(
        &self,
        run: &RelayedRun,
        record: &KeyRecord,
    ) -> Result<sigil_store::Attestation, SessionError> {
        let mailbox = self
            .relay
            .get(&run.session_id)
            .ok_or_else(|| internal("no mailbox for the external party"))?;
        let view = serde_json::json!({
            "key": family::view_of(record),
            "policy_json": attest::policy_json(record),
        });
        mailbox.ask_confirmation(attest::record_bytes(record), view);
        let signature = mailbox.confirmation().await.ok_or_else(|| SessionError::Timeout {
            missing: vec![EXTERNAL_PARTY],
            round: sigil_crypto::relay::CONFIRM_ROUND,
        })?;
        Ok(attest::external_attestation(signature))
    }

    /// Relays a message the external party's `client` submitted: checked
    /// by its mailbox ([`Mailbox::submit`]), then delivered to each
    /// recipient (this node's own session directly, the others through
    /// the transport, retried until the deadline). Returns whether it was
    /// a repeat (accepted before, not relayed again). Refusals are
    /// counted (`sigil_relay_refusals_total{reason}`), logged and audited.
    ///
    /// # Errors
    /// The [`SubmitRefusal`].
    pub async fn submit_from_party(&self, auth: &RequestAuth, m: RelayMessage) -> Result<bool, SubmitRefusal> {
        let client = auth.client.as_str();
        let session_id = hex::encode(m.session_id);
        let r = self
            .relay
            .of_client(&m.session_id, client)
            .and_then(|mailbox| mailbox.submit(&m).map(|to| (mailbox, to)));
        let (mailbox, recipients) = match r {
            Ok(x) => x,
            Err(e) => {
                metrics::counter!("sigil_relay_refusals_total", "reason" => e.reason()).increment(1);
                tracing::warn!(client, reason = e.reason(), detail = %e, "refused an external party's message");
                self.audit
                    .record(audit::Entry {
                        role: "relay",
                        client: auth.client.clone(),
                        jti: auth.jti.clone(),
                        operation: "relay_message",
                        session_id,
                        outcome: format!("refused:{}", e.reason()),
                        ..Default::default()
                    })
                    .await;
                return Err(e);
            }
        };
        let Some(recipients) = recipients else {
            return Ok(true);
        };
        let env = relay::envelope(m, false);
        for node in recipients {
            if node == self.cfg.node_id {
                if let Err(r) = self.sessions.route(node, &env) {
                    tracing::warn!(reason = r.reason(), "own session refused a relayed message");
                }
                continue;
            }
            let (peers, env, deadline) = (self.peers.clone(), env.clone(), mailbox.deadline);
            tokio::spawn(async move { session::deliver_with_retry(&*peers, node, env, deadline).await });
        }
        metrics::counter!("sigil_relay_messages_total").increment(1);
        Ok(false)
    }
}
