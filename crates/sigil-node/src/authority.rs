//! Who may ask this node for what: the checks a node makes itself, on
//! evidence it can verify, before it loads a share.
//!
//! | peer call | who may send it | what the receiver verifies |
//! |---|---|---|
//! | `RunSession` DKG | any node (the coordinator, as its certificate says) | the client's token (signature with its own copy of the client key, `aud`, lifetime, `jti` unseen or seen from this coordinator), role `create`, and that the body the client signed asks for this scheme, threshold, parties, label, bits and policy |
//! | `RunSession` sign / decrypt (full or pooled) | any node | the token as above, path `/v1/keys/{key_id}/sign` or `/decrypt`, body message / derivation path / ciphertext equal to the proposal's, and the client in the key's policy (`sign` / `decrypt`) of this node's own record |
//! | `RunSession` aux info | any node | the token of a `POST /v1/keys` for an ECDSA key among exactly these parties, role `create`; or of a `POST /v1/keys/{id}/reshare` of an ECDSA key to exactly these parties by a client this node's record names an admin of the key (role `create` instead at a node that does not know the key); no committed aux info of the set here and no other aux session of the set running here; the result is stored *pending* |
//! | `RunSession` presign | only the signer set's refiller (its lowest node id) | the set is a `t`-subset of the key's parties in ascending order, this node holds the key active |
//! | `FinalizeKey` commit | any node | every party's attestation of the record under the identity keys of this node's config; a pending record here must equal it and the caller must be its DKG's coordinator; an active record is never replaced |
//! | `FinalizeKey` abort | the DKG's coordinator | a pending record of that DKG here |
//! | `FinalizePresignature` | the presigning session's coordinator | a presignature pending from that session |
//! | `FinalizeAux` | any node | this node is in the set, and every party of the set signed (identity key of this node's config) the fingerprint of *this node's own* pending aux info: all parties hold the same public Paillier and ring-Pedersen parameters; only then is the aux info committed (usable by keygen) |
//!
//! Every protocol run is bound to its context: its execution id is
//! `H(domain, kind, key id, parties, coordinator, session id, H(body))`
//! ([`execution_id`]), so parties that were shown different proposals
//! cannot complete it together.

use sigil_proto::peer::session_proposal::Kind;
use sigil_proto::peer::{ClientAuthorization, DkgProposal, SignProposal};
use sigil_store::KeyPolicy;

use crate::api::{CreateKeyRequest, DecryptRequest, SignRequest};
use crate::auth::{Refusal, Role};
use crate::error::SessionError;
use crate::family::LoadedKey;
use crate::proposal::Part;
use crate::session::SessionSpec;
use crate::Node;

/// What an authorized proposal grants: the client and its token's `jti`.
#[derive(Debug, Clone, Default)]
pub struct Grant {
    /// Client id.
    pub client: String,
    /// Token `jti`.
    pub jti: String,
    /// DKG: the key's policy, from the body the client signed.
    pub policy: KeyPolicy,
}

/// The execution id protocols run under: [`sigil_crypto::execution_id`]
/// of the proposal's kind and key id.
pub fn execution_id(kind: &Kind, parties: &[u16], coordinator: u16, session_id: &[u8; 32], body: &[u8]) -> [u8; 32] {
    let (tag, key_id): (&[u8], &str) = match kind {
        Kind::Dkg(d) => (b"dkg", &d.key_id),
        Kind::Sign(s) => (b"sign", &s.key_id),
        Kind::Aux(_) => (b"aux", ""),
        Kind::Presign(p) => (b"presign", &p.key_id),
        Kind::Reshare(r) => (b"reshare", r.current.as_ref().map_or("", |c| c.key_id.as_str())),
    };
    sigil_crypto::execution_id(tag, key_id, parties, coordinator, session_id, body)
}

/// The policy of a new key: as the client gave it, or the creating client
/// alone in every list; with `rotation.interval_s` as its rotation
/// interval when the request says `"rotate": true` and the policy names
/// none.
///
/// # Errors
/// A list longer than 64 entries, a client id outside 1 to 64
/// characters, or a rotation interval below `rotation.min_interval_s`.
pub fn resolve_policy(
    given: Option<&KeyPolicy>,
    creator: &str,
    rotate: bool,
    rotation: &crate::config::RotationConfig,
) -> Result<KeyPolicy, String> {
    let mut policy = match given {
        None => KeyPolicy {
            sign: vec![creator.into()],
            decrypt: vec![creator.into()],
            admin: vec![creator.into()],
            rotation_interval_s: None,
            ..KeyPolicy::default()
        },
        Some(p) => {
            for list in [&p.sign, &p.decrypt, &p.admin] {
                if list.len() > 64 || list.iter().any(|c| c.is_empty() || c.len() > 64) {
                    return Err("policy: at most 64 client ids per list, each 1 to 64 characters".into());
                }
            }
            // The nodes set `external` and `external_keys` from the
            // request's `external_parties` and `party_keys`
            // ([`check_external`]), never a client.
            KeyPolicy {
                external: Vec::new(),
                external_keys: Vec::new(),
                ..p.clone()
            }
        }
    };
    if rotate {
        policy.rotation_interval_s.get_or_insert(rotation.interval_s);
    }
    if policy.rotation_interval_s.is_some_and(|i| i < rotation.min_interval_s) {
        return Err(format!(
            "policy: rotation_interval_s must be at least {} (seconds)",
            rotation.min_interval_s
        ));
    }
    Ok(policy)
}

/// What a create request says of its external party.
pub struct External<'a> {
    /// `external_parties`.
    pub parties: &'a [crate::relay::ExternalParty],
    /// `party_keys`.
    pub party_keys: Option<&'a crate::relay::PartyKeys>,
    /// `user_share`.
    pub user_share: Option<&'a crate::relay::UserShareRequest>,
}

/// Checks the external party of a new key and writes its client into
/// `policy.external` (and its session verifying key into
/// `policy.external_keys`; for a user share the coordinator's proposal
/// names it, see `check_dkg`): at most one, run by the requesting `client` itself
/// with the session keys of its request (`party_keys`), or by the node
/// that takes the request with its share sealed to the client
/// (`user_share`, instead of both); for a scheme whose family runs
/// external parties, on a key that does not rotate; and
/// `require_external` only with one. The error is the client-facing
/// reason.
pub fn check_external(
    scheme: sigil_crypto::Scheme,
    x: &External<'_>,
    client: &str,
    policy: &mut KeyPolicy,
) -> Result<(), String> {
    let external = match (x.parties, x.user_share) {
        ([], Some(u)) => {
            if x.party_keys.is_some() {
                return Err("party_keys is for external_parties, not user_share".into());
            }
            sigil_crypto::relay::key_from_hex("user_share.recipient_public_key", &u.recipient_public_key)
                .map_err(|e| e.to_string())?;
            client.to_string()
        }
        (_, Some(_)) => return Err("user_share and external_parties exclude each other".into()),
        ([], None) => {
            if x.party_keys.is_some() {
                return Err("party_keys is for keys with external_parties".into());
            }
            if policy.require_external {
                return Err("policy.require_external needs external_parties or user_share".into());
            }
            return Ok(());
        }
        ([party], None) => {
            if party.client != client {
                return Err(format!(
                    "external_parties: the external party's client must be the requesting client {client} (it runs the party)"
                ));
            }
            let keys = x
                .party_keys
                .ok_or("party_keys: the session keys of the external party are required")?;
            keys.parse()?;
            policy.external_keys = vec![keys.verifying_key.clone()];
            party.client.clone()
        }
        (_, None) => return Err("external_parties: at most one external party per key".into()),
    };
    if !crate::family::of(scheme).runs_external_parties() {
        return Err(format!("{scheme} keys cannot have external parties yet"));
    }
    if policy.rotation_interval_s.is_some() {
        return Err("keys with an external party do not rotate".into());
    }
    policy.external = vec![external];
    Ok(())
}

fn mismatch(what: &str) -> Refusal {
    Refusal::BodyMismatch(format!("the proposal's {what} is not what the client signed"))
}

impl Node {
    pub(crate) fn refused(&self, refusal: Refusal) -> SessionError {
        SessionError::Refused {
            node: self.cfg.node_id,
            refusal,
        }
    }

    /// Checks the authority behind a proposal (see the module table).
    ///
    /// # Errors
    /// [`SessionError::Refused`] naming this node, or `Invalid`.
    pub(crate) async fn authorize(
        &self,
        spec: &SessionSpec,
        part: &Part,
        auth: Option<&ClientAuthorization>,
        from_own_door: bool,
    ) -> Result<Option<Grant>, SessionError> {
        if let Part::Presign(p) = part {
            self.check_refiller(spec, &p.key_id).await?;
            return Ok(None);
        }
        if let (Part::Reshare(r), None) = (part, auth) {
            self.check_rotation(spec.coordinator, r).await?;
            return Ok(None);
        }
        let a = auth.ok_or_else(|| self.refused(Refusal::MissingToken))?;
        let (who, claims) = if from_own_door {
            self.verifier.recheck_own(&a.token, &a.method, &a.path, Some(&a.body))
        } else {
            self.verifier.check(&a.token, &a.method, &a.path, Some(&a.body))
        }
        .map_err(|r| self.refused(r))?;
        let mut grant = Grant {
            client: who.client.clone(),
            jti: who.jti.clone(),
            policy: KeyPolicy::default(),
        };
        let mut needs_create = matches!(part, Part::Dkg { .. });
        let r = match part {
            Part::Dkg { scheme, d } => self
                .check_dkg(spec, *scheme, d, a, &who.client)
                .map(|p| grant.policy = p),
            Part::Aux(_) => self.check_aux(spec, a, &who.client).await.map(|by_admin| {
                // A key admin's reshare needs no `create` role.
                needs_create = !by_admin;
            }),
            Part::Reshare(r) => {
                let current = self.reshare_current(r).await?;
                Self::check_reshare(&current, r, a, &who.client)
            }
            Part::Sign { s, .. } => {
                // A store that cannot answer is not a refusal: the
                // coordinator then tries a signer set without this node.
                let mut key = self.cached_key(&s.key_id).await?;
                // Pending here (the commit was missed): the coordinator has
                // it active; catch up from it (attestations checked).
                if key.is_none()
                    && self
                        .activate_pending(
                            &s.key_id,
                            &who.client,
                            &[spec.coordinator],
                            std::time::Duration::from_secs(2),
                        )
                        .await
                {
                    key = self.cached_key(&s.key_id).await?;
                }
                match key {
                    Some(key) => Self::check_use(&key, s, a, &who.client, spec.has_external()),
                    None => Err(Refusal::Forbidden(format!("no active key {} here", s.key_id))),
                }
            }
            Part::Presign(_) => Ok(()),
        };
        r.map_err(|r| self.refused(r))?;
        if needs_create {
            who.require(Role::Create).map_err(|r| self.refused(r))?;
        }
        self.verifier
            .claim_as_participant(&claims, spec.coordinator, crate::now_unix())
            .map_err(|r| self.refused(r))?;
        Ok(Some(grant))
    }

    /// The parties a create request asks for (default: every node), then
    /// its external party ([`sigil_crypto::relay::EXTERNAL_PARTY`]) if any.
    fn requested_parties(&self, req: &CreateKeyRequest) -> Vec<u16> {
        let mut parties = req.parties.clone().unwrap_or_else(|| self.members().ids());
        if req.external_parties.as_ref().is_some_and(|x| !x.is_empty()) || req.user_share.is_some() {
            parties.push(sigil_crypto::relay::EXTERNAL_PARTY);
        }
        parties
    }

    fn parse_create(a: &ClientAuthorization) -> Result<CreateKeyRequest, Refusal> {
        if a.method != "POST" || a.path != "/v1/keys" {
            return Err(mismatch("operation"));
        }
        serde_json::from_slice(&a.body).map_err(|_| mismatch("body"))
    }

    fn check_dkg(
        &self,
        spec: &SessionSpec,
        scheme: sigil_crypto::Scheme,
        d: &DkgProposal,
        a: &ClientAuthorization,
        client: &str,
    ) -> Result<KeyPolicy, Refusal> {
        let req = Self::parse_create(a)?;
        if req.scheme != d.scheme || u32::from(req.threshold) != d.threshold {
            return Err(mismatch("scheme or threshold"));
        }
        if self.requested_parties(&req) != spec.parties.to_vec() {
            return Err(mismatch("party list"));
        }
        if req.label.unwrap_or_default() != d.label {
            return Err(mismatch("label"));
        }
        let (bits, bound) = crate::family::of(scheme)
            .keygen_settings(spec.parties.len(), req.threshold, req.bits, req.prime_threshold)
            .map_err(|_| mismatch("key size"))?;
        if bits != d.bits || bound != d.prime_threshold {
            return Err(mismatch("key size"));
        }
        let mut policy = resolve_policy(req.policy.as_ref(), client, req.rotate, &self.cfg.rotation)
            .map_err(Refusal::BodyMismatch)?;
        let external = External {
            parties: req.external_parties.as_deref().unwrap_or_default(),
            party_keys: req.party_keys.as_ref(),
            user_share: req.user_share.as_ref(),
        };
        check_external(scheme, &external, client, &mut policy).map_err(Refusal::BodyMismatch)?;
        // The user party's keys come from the coordinator (it runs the
        // party) when, and only when, the client asked for a user share.
        let user_party = !d.user_party_verifying_key.is_empty() || !d.user_party_hpke_key.is_empty();
        if user_party != req.user_share.is_some() {
            return Err(mismatch("user party"));
        }
        if user_party {
            policy.external_keys = vec![d.user_party_verifying_key.clone()];
        }
        if policy.rotation_interval_s.is_some() {
            // A coordinator that skipped its own check cannot make this
            // node keep a key that rotates when its scheme must not.
            crate::family::of(scheme)
                .rotates()
                .map_err(|why| Refusal::Forbidden(format!("{scheme} keys cannot rotate: {why}")))?;
        }
        Ok(policy)
    }

    /// An aux session for `spec.parties` is asked for by a client's ECDSA
    /// key request among them (the caller then requires role `create`),
    /// or by a reshare of an ECDSA key to them: `Ok(true)` when this
    /// node's own record names `client` an admin of that key (no role
    /// needed: the reshare itself is the admin's right), `Ok(false)` for
    /// a key this node does not know (role `create` then).
    async fn check_aux(&self, spec: &SessionSpec, a: &ClientAuthorization, client: &str) -> Result<bool, Refusal> {
        if let Some((parties, admin)) = self.reshare_aux_parties(a).await {
            if parties == spec.parties.to_vec() {
                return match admin {
                    Some(admins) if admins.iter().any(|c| c == client) => Ok(true),
                    Some(_) => Err(Refusal::Forbidden(format!(
                        "client {client} is not an admin of the key"
                    ))),
                    None => Ok(false),
                };
            }
        }
        let req = Self::parse_create(a)?;
        let aux = req
            .scheme
            .parse::<sigil_crypto::Scheme>()
            .is_ok_and(|s| crate::family::of(s).uses_aux_info());
        if !aux || self.requested_parties(&req) != spec.parties.to_vec() {
            return Err(Refusal::Forbidden(
                "aux info is made only for a client's ECDSA key request among these parties".into(),
            ));
        }
        Ok(false)
    }

    /// The new committee of a reshare request `a` signs for an ECDSA key
    /// this node knows (the aux info its new committee needs), with the
    /// key's admins from this node's record; or for a key this node does
    /// not know (a node new to the key: its own check of the record comes
    /// with the reshare proposal), without.
    ///
    /// For a known key the request must also be one this node would plan
    /// itself: the key active here, and the committee and threshold valid
    /// for it ([`crate::reshare::check_committee`]); `None` otherwise.
    async fn reshare_aux_parties(&self, a: &ClientAuthorization) -> Option<(Vec<u16>, Option<Vec<String>>)> {
        let key_id = a.path.strip_prefix("/v1/keys/")?.split('/').next()?;
        let (req, _) = crate::reshare::parse_reshare(a, key_id)?;
        match self.store.get_key(key_id).await.ok()? {
            Some(k) if k.status == sigil_store::KeyStatus::Active => {
                let scheme: sigil_crypto::Scheme = k.scheme.parse().ok()?;
                let parties = req.parties.unwrap_or_else(|| k.parties.clone());
                let t = req.threshold.unwrap_or(k.threshold);
                crate::reshare::check_committee(&k, &parties, t, &self.members().ids()).ok()?;
                crate::family::of(scheme)
                    .uses_aux_info()
                    .then_some((parties, Some(k.policy.admin)))
            }
            Some(_) => None,
            None => req.parties.map(|p| (p, None)),
        }
    }

    /// Sign or decrypt: the body signed by the client asks for exactly this
    /// operation, and this node's record of the key lets the client do it.
    fn check_use(
        key: &LoadedKey,
        s: &SignProposal,
        a: &ClientAuthorization,
        client: &str,
        with_external: bool,
    ) -> Result<(), Refusal> {
        let decrypt = key.operation() == crate::family::Operation::Decrypt;
        let op = key.operation().route();
        if a.method != "POST" || a.path != format!("/v1/keys/{}/{op}", s.key_id) {
            return Err(mismatch("key or operation"));
        }
        if decrypt {
            let req: DecryptRequest = serde_json::from_slice(&a.body).map_err(|_| mismatch("body"))?;
            if req.ciphertext.trim().as_bytes() != s.message.as_slice() {
                return Err(mismatch("ciphertext"));
            }
        } else {
            let req: SignRequest = serde_json::from_slice(&a.body).map_err(|_| mismatch("body"))?;
            if hex::decode(req.message.trim()).ok().as_deref() != Some(s.message.as_slice()) {
                return Err(mismatch("message"));
            }
            let path = match &req.derivation_path {
                Some(p) => sigil_crypto::ecdsa::parse_derivation_path(p).map_err(|_| mismatch("derivation path"))?,
                None => Vec::new(),
            };
            if path != s.derivation_path {
                return Err(mismatch("derivation path"));
            }
            Self::check_external_use(key, client, req.party_keys.is_some(), with_external)?;
        }
        let allowed = if decrypt {
            &key.record.policy.decrypt
        } else {
            &key.record.policy.sign
        };
        if !allowed.iter().any(|c| c == client) {
            return Err(Refusal::Forbidden(format!(
                "client {client} may not {op} with key {}",
                s.key_id
            )));
        }
        Ok(())
    }

    /// A signature with the key's external party is asked for by that
    /// party's client, with its session keys; one without it only when the
    /// key's policy does not require it.
    fn check_external_use(key: &LoadedKey, client: &str, has_keys: bool, with_external: bool) -> Result<(), Refusal> {
        let policy = &key.record.policy;
        if with_external {
            if !has_keys {
                return Err(mismatch("party keys"));
            }
            if policy.external.first().map(String::as_str) != Some(client) {
                return Err(Refusal::Forbidden(format!(
                    "only the client of key {}'s external party signs with it",
                    key.record.key_id
                )));
            }
        } else if has_keys {
            return Err(mismatch("signer set (the client asked to take part)"));
        } else if policy.require_external {
            return Err(Refusal::Forbidden(format!(
                "key {} needs its external party on every signature",
                key.record.key_id
            )));
        }
        Ok(())
    }

    /// Presigning is proposed only by the signer set's refiller: the set is
    /// one of the key's `t`-subsets in ascending order, led by the caller.
    async fn check_refiller(&self, spec: &SessionSpec, key_id: &str) -> Result<(), SessionError> {
        let key = self
            .cached_key(key_id)
            .await
            .map_err(crate::internal)?
            .ok_or_else(|| SessionError::Invalid(format!("key {key_id} is not active here")))?;
        let set = spec.parties.to_vec();
        let ok = spec.parties.first() == Some(&spec.coordinator)
            && crate::ecdsa::signer_sets(&key.record, Some(spec.coordinator)).contains(&set);
        if !ok {
            return Err(self.refused(Refusal::Forbidden(format!(
                "node {} is not the refiller of signer set {set:?}",
                spec.coordinator
            ))));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn execution_ids_differ_with_every_input() {
        let sid = [7u8; 32];
        let sign = |key: &str| {
            Kind::Sign(SignProposal {
                key_id: key.into(),
                ..Default::default()
            })
        };
        let base = execution_id(&sign("k"), &[0, 1], 0, &sid, b"body");
        assert_eq!(base, execution_id(&sign("k"), &[0, 1], 0, &sid, b"body"));
        assert_ne!(base, execution_id(&sign("j"), &[0, 1], 0, &sid, b"body"));
        assert_ne!(base, execution_id(&sign("k"), &[1, 0], 0, &sid, b"body"));
        assert_ne!(base, execution_id(&sign("k"), &[0, 1], 1, &sid, b"body"));
        assert_ne!(base, execution_id(&sign("k"), &[0, 1], 0, &[8; 32], b"body"));
        assert_ne!(base, execution_id(&sign("k"), &[0, 1], 0, &sid, b"other"));
    }

    #[test]
    fn the_default_policy_is_the_creator() {
        let p = resolve_policy(None, "alice", false, &Default::default()).unwrap_or_default();
        assert_eq!(p.sign, ["alice"]);
        assert_eq!(p.admin, ["alice"]);
        let long = KeyPolicy {
            sign: vec!["x".repeat(65)],
            ..Default::default()
        };
        assert!(resolve_policy(Some(&long), "alice", false, &Default::default()).is_err());
        let fast = KeyPolicy {
            rotation_interval_s: Some(5),
            ..Default::default()
        };
        assert!(
            resolve_policy(Some(&fast), "alice", false, &Default::default()).is_err(),
            "below min_interval_s"
        );
        let daily = resolve_policy(None, "alice", true, &Default::default()).unwrap_or_default();
        assert_eq!(daily.rotation_interval_s, Some(86_400));
    }
}
