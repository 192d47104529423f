//! Key generation as the coordinator runs it: [`Node::plan_keygen`]
//! finds every 400 before anything runs, [`Node::run_keygen`] runs the
//! family's DKG, collects every party's attestation of the record and
//! commits it everywhere (or abandons it everywhere).

use super::*;

/// What `POST /v1/keys` asks for (see [`api::CreateKeyRequest`]).
#[derive(Debug, Clone)]
pub struct KeygenRequest {
    /// The scheme.
    pub scheme: Scheme,
    /// Parties needed to sign or decrypt, `t`.
    pub threshold: u16,
    /// Node ids that get a share (default: every node).
    pub parties: Option<Vec<u16>>,
    /// Free text, at most 128 characters.
    pub label: Option<String>,
    /// `paillier`: bits of `N` (default 2048).
    pub bits: Option<u32>,
    /// `paillier`: trial-division bound for `N` (default 2000, TNO's).
    pub prime_threshold: Option<u32>,
    /// Who may use the key (default: the creating client).
    pub policy: Option<KeyPolicy>,
    /// Refresh the key automatically (`crate::rotation`), every
    /// `[rotation] interval_s` unless the policy names an interval.
    pub rotate: bool,
    /// The external parties ([`authority::check_external`]).
    pub external_parties: Vec<relay::ExternalParty>,
    /// Their session keys.
    pub party_keys: Option<relay::PartyKeys>,
    /// Run the external party here and seal its share to the caller.
    pub user_share: Option<relay::UserShareRequest>,
}

/// A checked key generation ([`Node::plan_keygen`]), ready to run.
#[derive(Debug, Clone)]
pub struct KeygenPlan {
    /// The id the key will have.
    pub key_id: String,
    /// The scheme.
    pub scheme: Scheme,
    pub(crate) threshold: u16,
    pub(crate) parties: Vec<u16>,
    label: Option<String>,
    pub(crate) kind: Kind,
    pub(crate) policy: KeyPolicy,
    pub(crate) auth: RequestAuth,
    /// The external party's session keys, when the key has one (its DKG
    /// is relayed by this node).
    pub(crate) party_keys: Option<relay::PartyKeys>,
    /// The recipient of a user share (this node runs the external party).
    pub(crate) user_share: Option<[u8; 32]>,
}

impl Node {
    /// Checks a request to create a key by DKG among `parties` (default:
    /// every node): every 400 is found here, before anything runs. Fixes
    /// the key id. [`Node::run_keygen`] runs the plan.
    ///
    /// # Errors
    /// [`NodeError::BadRequest`] for bad parameters.
    pub fn plan_keygen(&self, req: KeygenRequest, auth: RequestAuth) -> Result<KeygenPlan, NodeError> {
        let KeygenRequest {
            scheme,
            threshold,
            parties,
            label,
            bits,
            prime_threshold,
            policy,
            rotate,
            external_parties,
            party_keys,
            user_share,
        } = req;
        let mut policy = authority::resolve_policy(policy.as_ref(), &auth.client, rotate, &self.cfg.rotation)
            .map_err(NodeError::bad_request)?;
        let external = authority::External {
            parties: &external_parties,
            party_keys: party_keys.as_ref(),
            user_share: user_share.as_ref(),
        };
        authority::check_external(scheme, &external, &auth.client, &mut policy).map_err(NodeError::bad_request)?;
        if policy.rotation_interval_s.is_some() {
            family::of(scheme)
                .rotates()
                .map_err(|why| NodeError::bad_request(format!("{scheme} keys cannot rotate: {why}")))?;
        }
        let cluster = self.members().ids();
        let parties = match parties {
            None => cluster.clone(),
            Some(p) => {
                let mut sorted = p.clone();
                sorted.sort_unstable();
                sorted.dedup();
                if sorted.len() != p.len() {
                    return Err(NodeError::bad_request("parties: duplicate node id"));
                }
                if let Some(x) = p.iter().find(|x| !cluster.contains(x)) {
                    return Err(NodeError::bad_request(format!(
                        "parties: node {x} is not in the cluster {cluster:?}"
                    )));
                }
                p
            }
        };
        let mut parties = parties;
        if !policy.external.is_empty() {
            if !parties.contains(&self.cfg.node_id) {
                return Err(NodeError::bad_request(format!(
                    "node {} is not one of the key's parties: ask one of {parties:?}, which relays the external party",
                    self.cfg.node_id
                )));
            }
            parties.push(sigil_crypto::relay::EXTERNAL_PARTY);
        }
        let n = parties.len();
        if threshold < scheme.min_threshold() || usize::from(threshold) > n {
            return Err(NodeError::bad_request(format!(
                "threshold must be within {}..={n} for {scheme} with {n} parties, got {threshold}",
                scheme.min_threshold()
            )));
        }
        if let Some(l) = &label {
            if l.chars().count() > 128 {
                return Err(NodeError::bad_request("label longer than 128 characters"));
            }
        }
        let (bits, prime_threshold) = family::of(scheme)
            .keygen_settings(n, threshold, bits, prime_threshold)
            .map_err(NodeError::bad_request)?;
        let key_id = uuid::Uuid::new_v4().to_string();
        let kind = Kind::Dkg(DkgProposal {
            key_id: key_id.clone(),
            scheme: scheme.as_str().into(),
            threshold: u32::from(threshold),
            label: label.clone().unwrap_or_default(),
            bits,
            prime_threshold,
            ..DkgProposal::default()
        });
        Ok(KeygenPlan {
            key_id,
            scheme,
            threshold,
            parties,
            label,
            kind,
            policy,
            auth,
            party_keys,
            user_share: user_share
                .map(|u| sigil_crypto::relay::key_from_hex("user_share.recipient_public_key", &u.recipient_public_key))
                .transpose()
                .map_err(|e| NodeError::bad_request(e.to_string()))?,
        })
    }

    /// Runs a planned key generation, counting progress into `progress`.
    /// On failure nothing is kept: every party deletes its pending share.
    ///
    /// # Errors
    /// The session's failure (naming nodes), or [`NodeError::Budget`] when
    /// a Paillier search exceeds [`paillier::KEYGEN_BUDGET`].
    pub async fn run_keygen(
        &self,
        plan: KeygenPlan,
        progress: &operations::KeygenProgress,
    ) -> Result<KeyRecord, NodeError> {
        self.run_keygen_in(plan, progress, None).await
    }

    /// [`Node::run_keygen`], in the relayed session `relayed` when the key
    /// has an external party.
    pub(crate) async fn run_keygen_in(
        &self,
        plan: KeygenPlan,
        progress: &operations::KeygenProgress,
        relayed: Option<external::RelayedRun>,
    ) -> Result<KeyRecord, NodeError> {
        let KeygenPlan {
            key_id,
            scheme,
            threshold,
            parties,
            label,
            kind,
            policy,
            auth,
            party_keys: _,
            user_share: _,
        } = plan;
        let cluster = self.members().ids();
        let started = Instant::now();
        let result = match relayed {
            None => {
                family::of(scheme)
                    .coordinate_keygen(self, &parties, kind, progress, &auth.proto)
                    .await
            }
            Some(run) => self
                .coordinate_inner(&parties, kind, run.run(true, &auth.proto))
                .await
                .map_err(NodeError::from),
        };
        let mut record = KeyRecord {
            key_id: key_id.clone(),
            scheme: scheme.as_str().into(),
            threshold,
            parties: parties.clone(),
            public_key: vec![],
            public_package: vec![],
            epoch: 0,
            label: label.clone(),
            created_at: now_unix(),
            status: KeyStatus::Active,
            policy,
            created_by: auth.client.clone(),
            create_jti: auth.jti.clone(),
            attestations: vec![],
            endorsements: vec![],
            activations: vec![],
        };
        let mut attested = result.and_then(|o| {
            self.attested_record(scheme, &mut record, &parties, o)
                .map_err(NodeError::from)
        });
        // A key with an external party is committed only on the party's
        // own confirmation of the record (`Node::external_confirmation`).
        if let (Ok(()), Some(run)) = (&attested, relayed.filter(|_| !record.policy.external_keys.is_empty())) {
            attested = self
                .external_confirmation(&run, &record)
                .await
                .map(|a| record.attestations.push(a))
                .map_err(NodeError::from);
        }
        if let Err(e) = attested {
            let named = e.nodes();
            self.finalize_everywhere(&parties, records::meta_of(&record), false, &named)
                .await;
            tracing::warn!(key_id, error = ?e, "key generation failed");
            return Err(e);
        }
        // A key with an external party is kept by its node parties only
        // (see `Node::finalize_key`).
        let commit_to = if sigil_crypto::relay::has_external(&parties) {
            &parties
        } else {
            &cluster
        };
        self.finalize_everywhere(commit_to, records::meta_of(&record), true, &[])
            .await;
        metrics::histogram!("sigil_dkg_seconds", "scheme" => scheme.as_str()).record(started.elapsed().as_secs_f64());
        tracing::info!(key_id, %scheme, threshold, ?parties, "key created");
        self.store
            .get_key(&key_id)
            .await?
            .ok_or_else(|| NodeError::internal("created key missing from the local store"))
    }

    /// A place for one more key generation of `client`, held while it runs.
    ///
    /// # Errors
    /// [`SessionError::Busy`] when the client already runs
    /// `limits.keygens_per_client` here.
    pub fn keygen_slot(&self, client: &str) -> Result<limits::Place<String>, NodeError> {
        let max = self.cfg.limits.keygens_per_client;
        limits::Place::claim(&self.keygens, &client.to_string(), max).map_err(|n| {
            NodeError::Session(SessionError::Busy {
                node: self.cfg.node_id,
                reason: format!("client {client} runs {n} key generations here (at most {max})"),
            })
        })
    }

    /// Fills `record` from a finished DKG session's outcomes: the public
    /// package every party reported (they must agree) and every party's
    /// attestation of the resulting record (each must verify).
    pub(crate) fn attested_record(
        &self,
        scheme: Scheme,
        record: &mut KeyRecord,
        parties: &[u16],
        o: Outcomes,
    ) -> Result<(), SessionError> {
        let first = o
            .by_party
            .first()
            .cloned()
            .flatten()
            .unwrap_or_default()
            .public_key_package;
        // The nodes' outcomes: an external party reports none (its
        // client checks the committed key against its own result).
        let nodes: Vec<(u16, Option<&SessionOutcome>)> = parties
            .iter()
            .zip(&o.by_party)
            .filter(|(&p, _)| p != sigil_crypto::relay::EXTERNAL_PARTY)
            .map(|(&p, x)| (p, x.as_ref()))
            .collect();
        if first.is_empty()
            || nodes
                .iter()
                .any(|(_, x)| x.map(|x| &x.public_key_package) != Some(&first))
        {
            return Err(SessionError::Protocol {
                culprits: vec![],
                reason: "parties finished the DKG with different public keys".into(),
            });
        }
        record.public_key = scheme.public_key(&first).map_err(internal)?;
        record.public_package = first;
        record.attestations = nodes
            .iter()
            .map(|&(node, x)| attest::attestation(node, x.map(|x| x.attestation.clone()).unwrap_or_default()))
            .collect();
        attest::verify_nodes(record, self.identities()).map_err(|e| {
            let culprits = match e {
                attest::AttestError::Invalid(n) | attest::AttestError::Missing(n) => vec![n],
                _ => vec![],
            };
            SessionError::Protocol {
                culprits,
                reason: format!("key record attestation: {e}"),
            }
        })
    }
}
