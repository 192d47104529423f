//! Committing and abandoning what a session left pending: a DKG's key or
//! a reshare's next epoch ([`Node::finalize_key`], the receiver's checks;
//! [`crate::authority`] and [`crate::reshare`] give the rules), and the
//! coordinator's calls that send the decision to every node.

use super::*;

impl Node {
    /// Commits or abandons a key after its DKG, at the request of `caller`
    /// (`None`: this node itself). See [`authority`] for the rules.
    ///
    /// # Errors
    /// [`SessionError::Refused`] for a caller or record this node does not
    /// accept, `Invalid` for malformed metadata, storage failures.
    pub async fn finalize_key(&self, caller: Option<u16>, r: FinalizeKeyRequest) -> Result<(), SessionError> {
        let meta = r.key.ok_or_else(|| SessionError::Invalid("no key".into()))?;
        let local = self.store.get_key(&meta.key_id).await.map_err(SessionError::from)?;
        let coordinator = self
            .dkg_coordinators
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&meta.key_id)
            .copied();
        let from_coordinator = caller.is_none() || caller == coordinator;
        let forbid = |m: &str| self.refused(auth::Refusal::Forbidden(m.to_string()));
        if !r.commit {
            let abandoned = records::record_of(&meta, KeyStatus::Pending)?;
            if self
                .finalize_epoch(&abandoned, false, from_coordinator, &r.session_id)
                .await?
            {
                return Ok(());
            }
            return match local {
                Some(k) if k.status == KeyStatus::Pending && from_coordinator => {
                    self.forget_dkg(&meta.key_id);
                    self.store
                        .delete_pending_key(&meta.key_id)
                        .await
                        .map_err(SessionError::from)
                }
                Some(k) if k.status == KeyStatus::Pending => Err(forbid("only the DKG's coordinator may abort it")),
                Some(_) => Err(forbid("an active key is never deleted by a peer")),
                None => Ok(()),
            };
        }
        let record = records::record_of(&meta, KeyStatus::Active)?;
        self.check_shape(&record)?;
        attest::verify_all(&record, self.identities()).map_err(|e| forbid(&format!("key record not attested: {e}")))?;
        if self.finalize_epoch(&record, true, from_coordinator, &[]).await? {
            return Ok(());
        }
        match local {
            Some(k) if k.status == KeyStatus::Active => {
                if attest::record_bytes(&k) != attest::record_bytes(&record) {
                    return Err(forbid("an active key record is never replaced"));
                }
                Ok(())
            }
            Some(k) => {
                if attest::record_bytes(&k) != attest::record_bytes(&record) {
                    return Err(forbid("the record differs from this node's pending record"));
                }
                if !from_coordinator && coordinator.is_some() {
                    return Err(forbid("only the DKG's coordinator may commit it"));
                }
                self.forget_dkg(&meta.key_id);
                self.store
                    .activate_key(&meta.key_id, &record.attestations)
                    .await
                    .map_err(SessionError::from)?;
                Ok(())
            }
            None if record.parties.contains(&self.cfg.node_id) => {
                Err(forbid("this node is a party of the key but holds no share of it"))
            }
            // A later epoch of a key this node never knew: without the
            // previous record its endorsements cannot be checked.
            None if record.epoch > 0 => Err(forbid(
                "a later epoch of a key unknown here is taken only by a party of it",
            )),
            // A key with an external party is kept by its node parties
            // only: the external party attests nothing, so a record naming
            // one node and the external slot carries a single node's word.
            None if sigil_crypto::relay::has_external(&record.parties) => {
                Err(forbid("a key with an external party is kept by its node parties only"))
            }
            // Not a party: keep the attested metadata so this node can coordinate.
            None => self
                .store
                .put_key(&record, self.cfg.node_id, None)
                .await
                .map_err(SessionError::from),
        }
    }

    /// [`Node::finalize_key`], answering a commit of a later epoch with this
    /// node's activation when it is a party of it and holds its share,
    /// acknowledged or active (`attest::sign_activation`); empty otherwise.
    ///
    /// # Errors
    /// As [`Node::finalize_key`].
    pub async fn finalize_key_acked(
        &self,
        caller: Option<u16>,
        r: FinalizeKeyRequest,
    ) -> Result<Vec<u8>, SessionError> {
        let (commit, meta) = (r.commit, r.key.clone());
        self.finalize_key(caller, r).await?;
        let Some(meta) = meta.filter(|m| commit && m.epoch > 0) else {
            return Ok(Vec::new());
        };
        let record = records::record_of(&meta, KeyStatus::Active)?;
        let holds = self.holds_epoch(&record).await?;
        Ok(if holds {
            attest::sign_activation(&self.identity, &record)
        } else {
            Vec::new()
        })
    }

    /// Remembers `coordinator` as the coordinator of the session that left
    /// something pending of `key_id` here (a DKG or a reshare): only it may
    /// abort.
    pub(crate) fn remember_coordinator(&self, key_id: &str, coordinator: u16) {
        self.dkg_coordinators
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key_id.to_string(), coordinator);
    }

    pub(crate) fn forget_dkg(&self, key_id: &str) {
        self.dkg_coordinators
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key_id);
    }

    /// Tells `nodes` to activate (`commit`) or delete their pending share
    /// of a key, and waits for them, except for the nodes in `detach`
    /// (nodes a failed session named as silent or down): those are told in
    /// the background, so a failure is answered at its deadline rather
    /// than after another timeout.
    pub(crate) async fn finalize_everywhere(&self, nodes: &[u16], meta: KeyMeta, commit: bool, detach: &[u16]) {
        let req = FinalizeKeyRequest {
            key: Some(meta),
            commit,
            session_id: Vec::new(),
        };
        self.finalize_request_everywhere(nodes, req, detach).await;
    }

    /// [`Node::finalize_everywhere`] with the whole request.
    pub(crate) async fn finalize_request_everywhere(&self, nodes: &[u16], req: FinalizeKeyRequest, detach: &[u16]) {
        let commit = req.commit;
        // An external party keeps nothing at a node (its client learns the
        // outcome from its relay).
        let nodes: Vec<u16> = sigil_crypto::relay::node_parties(nodes).collect();
        let nodes = nodes.as_slice();
        for &node in nodes.iter().filter(|n| detach.contains(n) && **n != self.cfg.node_id) {
            let (peers, r) = (self.peers.clone(), req.clone());
            tokio::spawn(async move {
                if let Err(e) = peers.finalize_key(node, r, Duration::from_secs(30)).await.map(|_| ()) {
                    tracing::warn!(node, commit, error = %e, "could not finalize key on node");
                }
            });
        }
        let calls = nodes
            .iter()
            .filter(|n| !detach.contains(n) || **n == self.cfg.node_id)
            .map(|&node| {
                let req = req.clone();
                async move {
                    let r = if node == self.cfg.node_id {
                        self.finalize_key(None, req).await.map_err(|e| e.to_string())
                    } else {
                        self.peers
                            .finalize_key(node, req, Duration::from_secs(5))
                            .await
                            .map(|_| ())
                            .map_err(|e| e.to_string())
                    };
                    if let Err(e) = r {
                        tracing::warn!(node, commit, error = %e, "could not finalize key on node");
                    }
                }
            });
        futures::future::join_all(calls).await;
    }
}
