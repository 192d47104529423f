//! Signing and decryption as the coordinator runs them: pick a quorum,
//! use a pooled presignature when the family has one, and follow a key to
//! its next epoch when a reshare's commit is under way
//! ([`Node::sign_across_epochs`]).

use super::*;

/// A signature made by the cluster.
#[derive(Debug, Clone)]
pub struct Signed {
    /// The signature in the scheme's standard encoding.
    pub signature: Vec<u8>,
    /// Node ids that signed, aggregator first.
    pub signers: Vec<u16>,
    /// What the scheme adds for clients (ECDSA: recovery id, DER, `v`).
    pub extras: family::SignatureExtras,
}

impl Node {
    /// Signs `message` with key `key_id`: picks `t` signers (this node
    /// first when it holds a share, the others drawn by health), and
    /// if a signer turns out unreachable, tries another set until the
    /// deadline. ECDSA keys sign from a pooled presignature when one is
    /// ready.
    ///
    /// # Errors
    /// 404 for an unknown key, 400 for a long message or one the scheme
    /// does not sign, 503 naming the unreachable nodes when fewer than `t`
    /// can sign, 504 naming the silent ones at the deadline, 502 naming
    /// culprits.
    pub async fn sign(
        &self,
        key_id: &str,
        message: Vec<u8>,
        derivation_path: &[u32],
        auth: &RequestAuth,
    ) -> Result<Signed, NodeError> {
        if message.len() > MAX_MESSAGE_BYTES {
            return Err(NodeError::bad_request(format!(
                "message longer than {MAX_MESSAGE_BYTES} bytes"
            )));
        }
        let key = self.usable_key(key_id, &auth.client).await?;
        if !key.record.policy.sign.contains(&auth.client) {
            return Err(NodeError::refused(&auth::Refusal::Forbidden(format!(
                "client {} may not sign with key {key_id}",
                auth.client
            ))));
        }
        let nodes = sigil_crypto::relay::node_parties(key.parties.nodes()).count();
        if key.record.policy.require_external || nodes < usize::from(key.record.threshold) {
            return Err(NodeError::refused(&auth::Refusal::Forbidden(format!(
                "key {key_id} signs only with its external party: its client signs through sigil-client (party_keys)"
            ))));
        }
        if key.operation() != Operation::Sign {
            return Err(NodeError::bad_request(format!(
                "{} keys {} (POST /v1/keys/{{key_id}}/{}); they do not sign",
                key.scheme,
                key.operation().route(),
                key.operation().route()
            )));
        }
        let family = key.family();
        family
            .check_message(key.scheme, &message, derivation_path)
            .map_err(NodeError::bad_request)?;
        let mut signed = match family
            .sign_pooled(self, &key, &message, derivation_path, &auth.proto)
            .await?
        {
            Some(signed) => signed,
            None => {
                self.sign_across_epochs(key.clone(), &message, derivation_path, auth)
                    .await?
            }
        };
        signed.extras = family
            .signature_extras(&key, &message, derivation_path, &signed.signature)
            .map_err(NodeError::internal)?;
        Ok(signed)
    }

    /// [`Node::sign_in_session`], and when the signers are already at a
    /// reshare's next epoch (its commit reaches nodes one by one), adopt
    /// that epoch from them and sign there (at most three times).
    pub(crate) async fn sign_across_epochs(
        &self,
        mut key: Arc<LoadedKey>,
        message: &[u8],
        derivation_path: &[u32],
        auth: &RequestAuth,
    ) -> Result<Signed, NodeError> {
        // The pauses cover the commit's second phase (an old party adopts a
        // later epoch only with every new party's activation).
        let mut pauses = [0u64, 20, 100].into_iter();
        loop {
            let e = match self.sign_in_session(&key, message, derivation_path, auth).await {
                // Signers at another epoch count as busy, which ends as
                // "fewer than t reachable" (unavailable); a silent or lying
                // signer is no reason to look for a later epoch.
                Err(e @ NodeError::Session(SessionError::Unavailable { .. })) => e,
                other => return other,
            };
            let mut adopted = false;
            for pause in pauses.by_ref() {
                tokio::time::sleep(Duration::from_millis(pause)).await;
                if self
                    .adopt_later_epoch(&key.record.key_id, key.record.epoch, &e.nodes())
                    .await
                {
                    adopted = true;
                    break;
                }
            }
            if !adopted {
                return Err(e);
            }
            key = self.usable_key(&key.record.key_id, &auth.client).await?;
        }
    }

    /// [`Node::sign`] by a full signing session.
    pub(crate) async fn sign_in_session(
        &self,
        key: &LoadedKey,
        message: &[u8],
        derivation_path: &[u32],
        auth: &RequestAuth,
    ) -> Result<Signed, NodeError> {
        let kind = Kind::Sign(SignProposal {
            key_id: key.record.key_id.clone(),
            message: message.to_vec(),
            epoch: key.record.epoch,
            scheme: key.record.scheme.clone(),
            derivation_path: derivation_path.to_vec(),
            presignature_id: String::new(),
        });
        let (o, signers) = self
            .coordinate_quorum(&key.record, kind, false, "signers", Some(&auth.proto), &[])
            .await?;
        let signature = o.aggregate_signature()?;
        Ok(Signed {
            signature,
            signers,
            extras: family::SignatureExtras::default(),
        })
    }
}
