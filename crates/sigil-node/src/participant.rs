//! The participant side of a session: a proposal from a peer (or this
//! node's own, from its door) is checked for shape
//! ([`Node::participate`]), then for the client authority behind it
//! ([`crate::authority`]), admitted ([`crate::limits`]) and run by the
//! key's family.

use super::*;
use crate::proposal::Part;
use sigil_crypto::relay::EXTERNAL_PARTY;

impl Node {
    /// Runs this node's part of a session proposed by `caller`.
    ///
    /// # Errors
    /// [`SessionError::Invalid`] for a proposal this node cannot accept,
    /// or the session's failure.
    pub async fn participate(&self, caller: u16, p: SessionProposal) -> Result<SessionOutcome, SessionError> {
        if p.coordinator != u32::from(caller) {
            return Err(SessionError::Invalid(format!(
                "proposal claims coordinator {} but comes from node {caller}",
                p.coordinator
            )));
        }
        let entry = proposal_entry("participant", &p);
        let r = self.check_and_run(p, false).await;
        self.audit_outcome(entry, &r).await;
        r
    }

    /// Checks a proposal (shape, then the authority behind it) and runs
    /// this node's part. `from_own_door`: the proposal is this node's own,
    /// carrying a token its REST API verified (the signature is not checked
    /// a second time; everything else is).
    pub(crate) async fn check_and_run(
        &self,
        p: SessionProposal,
        from_own_door: bool,
    ) -> Result<SessionOutcome, SessionError> {
        let auth = p.authorization.clone();
        let (mut spec, part) = self.check_proposal(p)?;
        let grant = self.authorize(&spec, &part, auth.as_ref(), from_own_door).await?;
        spec.external = self.external_link(&spec, &part, auth.as_ref(), grant.as_ref())?;
        let peer = (!from_own_door).then_some(spec.coordinator);
        let _ticket = self
            .admission
            .admit(self.cfg.node_id, spec.kind, peer, spec.deadline)
            .await?;
        self.run_part(spec, part, grant.unwrap_or_default()).await
    }

    /// Appends the outcome of `r` to the audit log.
    pub(crate) async fn audit_outcome<T>(&self, mut entry: audit::Entry, r: &Result<T, SessionError>) {
        entry.outcome = match r {
            Ok(_) => "ok".into(),
            Err(SessionError::Refused { refusal, .. }) => format!("refused:{}", refusal.reason()),
            Err(e) => format!("failed:{}", e.code()),
        };
        self.audit.record(entry).await;
    }

    /// Checks a proposal's shape: its session id, its parties (distinct
    /// nodes of this cluster, this node among them), its deadline (capped
    /// by this node's own limits) and its kind ([`Part::parse`]).
    pub(crate) fn check_proposal(&self, p: SessionProposal) -> Result<(SessionSpec, Part), SessionError> {
        let id: SessionId = p
            .session_id
            .as_slice()
            .try_into()
            .map_err(|_| SessionError::Invalid("session_id must be 32 bytes".into()))?;
        let mut parties = Vec::with_capacity(p.parties.len());
        for &x in &p.parties {
            let x = u16::try_from(x).map_err(|_| SessionError::Invalid(format!("party {x} out of range")))?;
            // The external party (checked with the client's body, once
            // authorized: `external_link`).
            if x != EXTERNAL_PARTY && !self.members().contains(x) {
                return Err(SessionError::Invalid(format!(
                    "party {x} is not a node of this cluster"
                )));
            }
            if parties.contains(&x) {
                return Err(SessionError::Invalid(format!("party {x} listed twice")));
            }
            parties.push(x);
        }
        let me = parties
            .iter()
            .position(|&x| x == self.cfg.node_id)
            .and_then(|i| u16::try_from(i).ok())
            .ok_or_else(|| SessionError::Invalid("this node is not a party of the session".into()))?;
        let cap = match &p.kind {
            Some(Kind::Aux(_)) => Duration::from_millis(self.cfg.aux_timeout_ms),
            _ if sigil_crypto::relay::has_external(&parties) => {
                Duration::from_millis(self.cfg.external_session_timeout_ms)
            }
            _ => self.timeout(),
        };
        let budget = Duration::from_millis(u64::from(p.deadline_ms)).min(cap);
        let kind = p
            .kind
            .ok_or_else(|| SessionError::Invalid("proposal has no kind".into()))?;
        let coordinator = u16::try_from(p.coordinator)
            .map_err(|_| SessionError::Invalid(format!("coordinator {} out of range", p.coordinator)))?;
        let body = p.authorization.as_ref().map(|a| a.body.as_slice()).unwrap_or_default();
        let eid = authority::execution_id(&kind, &parties, coordinator, &id, body);
        let part = Part::parse(kind)?;
        let (expects, session_kind) = part.schedule(&parties);
        let spec = SessionSpec {
            id,
            eid,
            parties: parties.into(),
            me,
            coordinator,
            expects,
            kind: session_kind,
            deadline: Instant::now() + budget,
            external: None,
        };
        Ok((spec, part))
    }

    /// The external party of a session whose parties hold
    /// [`EXTERNAL_PARTY`]: its client's session keys from the body the
    /// client signed (checked by [`Node::authorize`]: the client is the
    /// key's, or the new key's, external party), its relay (the session's
    /// coordinator) and, at the relay, its mailbox. Only key generation
    /// and signing sessions of a family that runs external parties have
    /// one.
    fn external_link(
        &self,
        spec: &SessionSpec,
        part: &Part,
        auth: Option<&ClientAuthorization>,
        grant: Option<&authority::Grant>,
    ) -> Result<Option<Arc<relay::ExternalSession>>, SessionError> {
        let Some(index) = spec.parties.iter().position(|&p| p == EXTERNAL_PARTY) else {
            return Ok(None);
        };
        let invalid = |m: &str| SessionError::Invalid(m.to_string());
        let index = u16::try_from(index).map_err(|_| invalid("too many parties"))?;
        let (Some(a), Some(grant)) = (auth, grant) else {
            return Err(invalid("a session with an external party carries its client's request"));
        };
        let keys = match part {
            Part::Dkg { scheme, .. } | Part::Sign { scheme, .. } if family::of(*scheme).runs_external_parties() => {
                let keys = match part {
                    Part::Dkg { d, .. } => serde_json::from_slice::<api::CreateKeyRequest>(&a.body).map(|r| {
                        // A user share: the coordinator runs the party.
                        let user = r.user_share.is_some().then(|| relay::PartyKeys {
                            verifying_key: d.user_party_verifying_key.clone(),
                            hpke_public_key: d.user_party_hpke_key.clone(),
                        });
                        r.party_keys.or(user)
                    }),
                    _ => serde_json::from_slice::<api::SignRequest>(&a.body).map(|r| r.party_keys),
                };
                keys.ok().flatten()
            }
            _ => None,
        }
        .ok_or_else(|| {
            invalid(
                "only FROST and ECDSA key generation and signing sessions have an external party, with its party_keys",
            )
        })?;
        let mailbox = if spec.coordinator == self.cfg.node_id {
            Some(
                self.relay
                    .get(&spec.id)
                    .ok_or_else(|| invalid("no mailbox for the external party"))?,
            )
        } else {
            None
        };
        relay::ExternalSession::new(
            index,
            spec.coordinator,
            grant.client.clone(),
            &keys,
            self.identity.clone(),
            mailbox,
        )
        .map(|x| Some(Arc::new(x)))
        .map_err(SessionError::Invalid)
    }

    pub(crate) async fn run_part(
        &self,
        spec: SessionSpec,
        part: Part,
        grant: authority::Grant,
    ) -> Result<SessionOutcome, SessionError> {
        match part {
            Part::Dkg { scheme, d } => self.dkg_part(spec, scheme, d, grant).await,
            Part::Sign { scheme, s } => self.sign_part(spec, scheme, s).await,
            Part::Aux(a) => self.aux_part(spec, a).await,
            Part::Presign(p) => self.presign_part(spec, p).await,
            Part::Reshare(r) => self.reshare_part(spec, *r).await,
        }
    }

    pub(crate) async fn dkg_part(
        &self,
        spec: SessionSpec,
        scheme: Scheme,
        d: DkgProposal,
        grant: authority::Grant,
    ) -> Result<SessionOutcome, SessionError> {
        let n = u16::try_from(spec.parties.len()).map_err(|_| SessionError::Invalid("too many parties".into()))?;
        let t = u16::try_from(d.threshold).map_err(|_| SessionError::Invalid("threshold out of range".into()))?;
        if t < scheme.min_threshold() || t > n {
            return Err(SessionError::Invalid(format!("threshold {t} must be within 2..={n}")));
        }
        if d.key_id.is_empty() || d.key_id.len() > 64 {
            return Err(SessionError::Invalid("key_id must be 1 to 64 characters".into()));
        }
        if self
            .store
            .get_key(&d.key_id)
            .await
            .map_err(SessionError::from)?
            .is_some()
        {
            return Err(SessionError::Invalid(format!("key {} exists", d.key_id)));
        }
        let parties: Vec<u16> = spec.parties.to_vec();
        let coordinator = spec.coordinator;
        let family::KeygenPart { key, mut outcome } = family::of(scheme).keygen_part(self, spec, scheme, &d, t).await?;
        let Some((key_package, public_package)) = key else {
            return Ok(outcome);
        };

        let record = KeyRecord {
            key_id: d.key_id.clone(),
            scheme: scheme.as_str().to_string(),
            threshold: t,
            parties,
            public_key: scheme.public_key(&public_package).map_err(internal)?,
            public_package: public_package.clone(),
            epoch: 0,
            label: (!d.label.is_empty()).then(|| d.label.clone()),
            created_at: now_unix(),
            status: KeyStatus::Pending,
            policy: grant.policy,
            created_by: grant.client,
            create_jti: grant.jti,
            attestations: vec![],
            endorsements: vec![],
            activations: vec![],
        };
        self.store
            .put_key(&record, self.cfg.node_id, Some(&key_package))
            .await
            .map_err(SessionError::from)?;
        self.remember_coordinator(&record.key_id, coordinator);
        outcome.attestation = attest::sign(&self.identity, &record);
        outcome.public_key_package = public_package;
        Ok(outcome)
    }

    pub(crate) async fn sign_part(
        &self,
        spec: SessionSpec,
        scheme: Scheme,
        s: SignProposal,
    ) -> Result<SessionOutcome, SessionError> {
        if s.message.len() > MAX_MESSAGE_BYTES {
            return Err(SessionError::Invalid(format!(
                "message longer than {MAX_MESSAGE_BYTES} bytes"
            )));
        }
        let behind = self
            .cached_key(&s.key_id)
            .await
            .map_err(internal)?
            .is_some_and(|k| k.record.epoch < s.epoch);
        if behind {
            // The coordinator is at a reshare's next epoch already.
            let epoch = s.epoch.saturating_sub(1);
            self.adopt_later_epoch(&s.key_id, epoch, &[spec.coordinator]).await;
        }
        let key = self
            .cached_key(&s.key_id)
            .await
            .map_err(internal)?
            .ok_or_else(|| SessionError::Unavailable {
                nodes: vec![self.cfg.node_id],
                reason: format!("key {} is not active on node {}", s.key_id, self.cfg.node_id),
            })?;
        let record = &key.record;
        if record.epoch != s.epoch {
            // Mid-switch (a reshare's commit reaches nodes one by one): not
            // a fault of this node (busy, not down); the coordinator tries
            // another set, or adopts the later epoch and signs there.
            return Err(SessionError::Busy {
                node: self.cfg.node_id,
                reason: format!("key epoch is {} here, proposal says {}", record.epoch, s.epoch),
            });
        }
        if scheme != key.scheme {
            return Err(SessionError::Invalid(format!(
                "proposal says scheme {:?}, key {} is {}",
                s.scheme, record.key_id, record.scheme
            )));
        }
        let signers = key.indices_of(&spec.parties)?;
        if signers.len() < usize::from(record.threshold) {
            return Err(SessionError::Invalid(format!(
                "{} signers, key needs {}",
                signers.len(),
                record.threshold
            )));
        }
        let family = key.family();
        family
            .check_message(key.scheme, &s.message, &s.derivation_path)
            .map_err(SessionError::Invalid)?;
        family.sign_part(self, spec, &key, &s, signers).await
    }
}

/// The audit entry of a proposal (outcome filled in later).
fn proposal_entry(role: &'static str, p: &SessionProposal) -> audit::Entry {
    let (client, jti) = p
        .authorization
        .as_ref()
        .and_then(|a| auth::unverified_claims(&a.token).ok())
        .map(|c| (c.sub, c.jti))
        .unwrap_or_default();
    let (operation, key_id, message): (&'static str, String, &[u8]) = match &p.kind {
        Some(Kind::Dkg(d)) => ("create_key", d.key_id.clone(), &[]),
        Some(Kind::Sign(s)) => {
            let op = s
                .scheme
                .parse::<Scheme>()
                .map_or(Operation::Sign, |s| family::of(s).operation());
            (op.route(), s.key_id.clone(), &s.message)
        }
        Some(Kind::Aux(_)) => ("aux_info", String::new(), &[]),
        Some(Kind::Presign(x)) => ("presign", x.key_id.clone(), &[]),
        Some(Kind::Reshare(r)) => (
            "reshare",
            r.current.as_ref().map(|c| c.key_id.clone()).unwrap_or_default(),
            &[],
        ),
        None => ("unknown", String::new(), &[]),
    };
    audit::Entry {
        role,
        client,
        jti,
        operation,
        key_id,
        message_sha256: if message.is_empty() {
            String::new()
        } else {
            audit::message_hash(message)
        },
        session_id: hex::encode(&p.session_id),
        outcome: String::new(),
    }
}
