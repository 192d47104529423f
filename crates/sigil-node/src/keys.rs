//! The key cache: active keys loaded once ([`LoadedKey`]: record, parsed
//! scheme, party set, key material), the own share unsealed on demand,
//! and the on-demand catch-up of a key this node still holds pending.

use super::*;

/// How long a node waits for each peer when it catches up on a key it
/// holds pending because a request needs it now.
const ON_DEMAND_CATCH_UP: Duration = Duration::from_secs(2);

impl Node {
    /// The active key `key_id`.
    ///
    /// # Errors
    /// 404 if unknown here.
    pub async fn active_key(&self, key_id: &str) -> Result<KeyRecord, NodeError> {
        Ok(self.loaded_key(key_id).await?.record.clone())
    }

    /// The active key `key_id`, loaded (from the cache).
    ///
    /// # Errors
    /// 404 if unknown here.
    pub async fn loaded_key(&self, key_id: &str) -> Result<Arc<LoadedKey>, NodeError> {
        self.cached_key(key_id)
            .await?
            .ok_or_else(|| NodeError::not_found(format!("no key {key_id:?}")))
    }

    /// [`Node::loaded_key`] for signing or decrypting on behalf of
    /// `client`: a key held pending here (a missed commit) whose policy
    /// names the client is caught up from the peers first.
    ///
    /// # Errors
    /// 404 if unknown here.
    pub(crate) async fn usable_key(&self, key_id: &str, client: &str) -> Result<Arc<LoadedKey>, NodeError> {
        if let Some(k) = self.cached_key(key_id).await? {
            return Ok(k);
        }
        if self
            .activate_pending(key_id, client, &self.members().ids(), ON_DEMAND_CATCH_UP)
            .await
        {
            if let Some(k) = self.cached_key(key_id).await? {
                return Ok(k);
            }
        }
        Err(NodeError::not_found(format!("no key {key_id:?}")))
    }

    /// The public key at `path` below `key` (ECDSA, BIP-32).
    ///
    /// # Errors
    /// 400 for schemes without derivation or a bad path.
    pub fn derived_public_key(&self, key: &LoadedKey, path: &[u32]) -> Result<Vec<u8>, NodeError> {
        key.scheme
            .derive_public_key(&key.record.public_package, path)
            .map_err(|e| NodeError::bad_request(e.to_string()))
    }

    /// This node's share of `key` at its epoch, unsealed.
    pub(crate) async fn own_share(&self, key: &KeyRecord) -> Result<Zeroizing<Vec<u8>>, SessionError> {
        if let Some(share) = self
            .store
            .get_share(&key.key_id, self.cfg.node_id, key.epoch)
            .await
            .map_err(SessionError::from)?
        {
            return Ok(share);
        }
        // The key moved to a later epoch since this record was read.
        let moved = self
            .store
            .get_key(&key.key_id)
            .await
            .map_err(SessionError::from)?
            .is_some_and(|k| k.epoch > key.epoch);
        if moved {
            return Err(SessionError::Busy {
                node: self.cfg.node_id,
                reason: format!("key {} moved past epoch {} here", key.key_id, key.epoch),
            });
        }
        Err(SessionError::Invalid(format!(
            "no share of key {} on this node",
            key.key_id
        )))
    }

    /// The active key `key_id`, from memory or the store (parsed once, when
    /// it enters the cache). A record of a scheme this build does not know
    /// is reported as a store error.
    pub(crate) async fn cached_key(&self, key_id: &str) -> Result<Option<Arc<LoadedKey>>, sigil_store::StoreError> {
        if let Some(k) = self.keys.lock().unwrap_or_else(|p| p.into_inner()).get(key_id) {
            return Ok(Some(k.clone()));
        }
        let Some(record) = self
            .store
            .get_key(key_id)
            .await?
            .filter(|k| k.status == KeyStatus::Active)
        else {
            return Ok(None);
        };
        let entry = Arc::new(LoadedKey::new(record).map_err(|e| sigil_store::StoreError::Corrupt(e.to_string()))?);
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        Ok(Some(keys.entry(key_id.to_string()).or_insert(entry).clone()))
    }
}
