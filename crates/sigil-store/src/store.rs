//! The typed store: seals and unseals every secret record over a
//! [`Backend`] that only ever sees sealed blobs, with every record identity
//! built by [`RecordId`]'s constructors.

use std::sync::Arc;

use zeroize::Zeroizing;

use crate::backend::{Backend, SealedShare};
use crate::{Attestation, AuditRow, EpochEntry, KeyRecord, MasterKey, RecordId, Sealer, StoreError};

/// The canary's plaintext: a store opened with another master key fails to
/// open it ([`StoreError::WrongMasterKey`]).
const CANARY: &[u8] = b"sigil store canary v1";

/// Pending aux info as read: the plaintext and the sealed bytes it came
/// from (which a commit must still find).
pub struct PendingAux {
    /// The aux info, unsealed.
    pub aux: Zeroizing<Vec<u8>>,
    sealed: Vec<u8>,
}

/// The storage of one node (or of the prime service): sealing above a
/// [`Backend`]. Cheap to share behind an `Arc`.
pub struct Store {
    backend: Arc<dyn Backend>,
    sealer: Sealer,
}

impl Store {
    /// A store over `backend` sealing under `master`; checks (or, on a new
    /// database, writes) the sealed canary.
    ///
    /// # Errors
    /// [`StoreError::WrongMasterKey`] if the database was written under
    /// another master key; database errors.
    pub async fn new(backend: Arc<dyn Backend>, master: &MasterKey) -> Result<Self, StoreError> {
        let store = Store {
            backend,
            sealer: Sealer::new(master),
        };
        store.check_canary().await?;
        Ok(store)
    }

    async fn check_canary(&self) -> Result<(), StoreError> {
        let id = RecordId::canary();
        if let Some(sealed) = self.backend.get_meta("canary").await? {
            return match self.sealer.open(&id, &sealed) {
                Ok(v) if v.as_slice() == CANARY => Ok(()),
                _ => Err(StoreError::WrongMasterKey("the canary record does not open".into())),
            };
        }
        let sealed = self.sealer.seal(&id, CANARY)?;
        if !self.backend.insert_meta("canary", &sealed).await? {
            // Another process wrote one meanwhile: it must open too.
            return Box::pin(self.check_canary()).await;
        }
        Ok(())
    }

    /// The backend (`kind()`, `schema_version()`).
    pub fn backend(&self) -> &dyn Backend {
        self.backend.as_ref()
    }

    /// Stores a key's metadata and, if this node holds one, its secret share
    /// (`share` in plaintext; sealed as [`RecordId::key_share`] of `party`
    /// at the key's epoch), in one transaction.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] if the key id exists.
    pub async fn put_key(&self, key: &KeyRecord, party: u16, share: Option<&[u8]>) -> Result<(), StoreError> {
        let sealed = match share {
            Some(s) => Some(
                self.sealer
                    .seal(&RecordId::key_share(&key.key_id, party, key.epoch), s)?,
            ),
            None => None,
        };
        let share = sealed.as_deref().map(|sealed| SealedShare {
            party,
            epoch: key.epoch,
            sealed,
        });
        self.backend.put_key(key, share).await
    }

    /// Marks a pending key active with its parties' `attestations`.
    /// Returns whether the key exists.
    pub async fn activate_key(&self, key_id: &str, attestations: &[Attestation]) -> Result<bool, StoreError> {
        self.backend.activate_key(key_id, attestations).await
    }

    /// Deletes a key that is still pending, with its share (nothing
    /// half-made is kept). An active key is never deleted.
    pub async fn delete_pending_key(&self, key_id: &str) -> Result<(), StoreError> {
        self.backend.delete_pending_key(key_id).await
    }

    /// Stores `key` (the record of a key's next epoch) made by session
    /// `session` (hex), with this node's share of it (sealed under the
    /// share's record identity), as the key's pending epoch. A pending
    /// epoch already there is replaced only when it is not acknowledged
    /// and is of the same session or created at or before `stale_before`
    /// (seconds since the Unix epoch); otherwise nothing is stored and the
    /// answer is false (one reshare of a key at a time).
    ///
    /// # Errors
    /// Storage failures.
    pub async fn put_pending_epoch(
        &self,
        key: &KeyRecord,
        session: &str,
        party: u16,
        share: Option<&[u8]>,
        stale_before: i64,
    ) -> Result<bool, StoreError> {
        let sealed = share
            .map(|s| self.sealer.seal(&RecordId::key_share(&key.key_id, party, key.epoch), s))
            .transpose()?;
        let record = crate::rows::to_json(key)?;
        self.backend
            .put_pending_epoch(key, &record, session, party, sealed.as_deref(), stale_before)
            .await
    }

    /// The record of a key's pending epoch, if one waits.
    ///
    /// # Errors
    /// Storage failures; [`StoreError::Corrupt`] for a record that does not
    /// decode.
    pub async fn pending_epoch(&self, key_id: &str) -> Result<Option<KeyRecord>, StoreError> {
        Ok(self.pending_epoch_of(key_id).await?.map(|(k, _)| k))
    }

    /// The record of a key's pending epoch and the session (hex) that made
    /// it, if one waits.
    ///
    /// # Errors
    /// As [`Store::pending_epoch`].
    pub async fn pending_epoch_of(&self, key_id: &str) -> Result<Option<(KeyRecord, String)>, StoreError> {
        let Some((epoch, record, session)) = self.backend.get_pending_epoch(key_id).await? else {
            return Ok(None);
        };
        let key: KeyRecord =
            serde_json::from_str(&record).map_err(|e| StoreError::Corrupt(format!("pending epoch: {e}")))?;
        if key.epoch != epoch || key.key_id != key_id {
            return Err(StoreError::Corrupt("pending epoch of another key".into()));
        }
        Ok(Some((key, session)))
    }

    /// Acknowledges a key's pending epoch made by `session`: stores its
    /// attested record `key` (every new party's attestation and the
    /// quorum's endorsements) in place of the session's unattested one and
    /// marks it acknowledged, so that it is never deleted (only switched
    /// to) nor replaced; the share stays. Whether a pending epoch
    /// `key.epoch` of `session` was there. The caller checks `key` against
    /// the stored record first (same content).
    ///
    /// # Errors
    /// Storage failures.
    pub async fn ack_pending_epoch(&self, key: &KeyRecord, session: &str) -> Result<bool, StoreError> {
        let record = crate::rows::to_json(key)?;
        self.backend
            .set_pending_record(&key.key_id, key.epoch, session, &record)
            .await
    }

    /// Deletes pending epoch `epoch` of a key made by `session`, with its
    /// share (a reshare that failed), unless it is acknowledged; whether it
    /// did.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn delete_pending_epoch(&self, key_id: &str, epoch: u32, session: &str) -> Result<bool, StoreError> {
        self.backend.delete_pending_epoch(key_id, epoch, session).await
    }

    /// Pending epochs (key id, epoch) older than `created_before`.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn list_pending_epochs(&self, created_before: i64) -> Result<Vec<(String, u32)>, StoreError> {
        self.backend.list_pending_epochs(created_before).await
    }

    /// Switches a key to its next epoch `key` (active, attested by every
    /// new party), in one transaction; see [`Backend::activate_epoch`].
    /// `retired` is the history line of the epoch it replaces and that
    /// epoch's whole attested record (kept for [`Store::epoch_record`]).
    /// Returns false when the stored key is not at an earlier epoch.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn activate_epoch(
        &self,
        key: &KeyRecord,
        retired: Option<(&EpochEntry, &KeyRecord)>,
        party: Option<u16>,
    ) -> Result<bool, StoreError> {
        let retired = match retired {
            Some((entry, record)) => Some((
                entry,
                serde_json::to_string(record).map_err(|e| StoreError::Corrupt(e.to_string()))?,
            )),
            None => None,
        };
        self.backend
            .activate_epoch(key, retired.as_ref().map(|(e, r)| (*e, r.as_str())), party)
            .await
    }

    /// The whole attested record of a key's retired `epoch` (its
    /// attestations, endorsements and activations), what a node that
    /// missed several epochs needs to check each transition; `None` for an
    /// epoch not retired here or retired before records were kept.
    ///
    /// # Errors
    /// Storage failures; [`StoreError::Corrupt`] for a record that does
    /// not parse.
    pub async fn epoch_record(&self, key_id: &str, epoch: u32) -> Result<Option<KeyRecord>, StoreError> {
        self.backend
            .epoch_record(key_id, epoch)
            .await?
            .map(|json| serde_json::from_str(&json).map_err(|_| StoreError::Corrupt("key_epochs.record".into())))
            .transpose()
    }

    /// Stores every party's activation of the key's `epoch` with it (a
    /// party learns them after it activated); whether the key is at that
    /// epoch.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn set_activations(
        &self,
        key_id: &str,
        epoch: u32,
        activations: &[Attestation],
    ) -> Result<bool, StoreError> {
        let json = crate::rows::to_json(&activations)?;
        self.backend.set_activations(key_id, epoch, &json).await
    }

    /// The retired epochs of a key, oldest first.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn key_history(&self, key_id: &str) -> Result<Vec<EpochEntry>, StoreError> {
        self.backend.key_history(key_id).await
    }

    /// One key's metadata, whatever its status.
    pub async fn get_key(&self, key_id: &str) -> Result<Option<KeyRecord>, StoreError> {
        self.backend.get_key(key_id).await
    }

    /// Every active key, oldest first.
    pub async fn list_keys(&self) -> Result<Vec<KeyRecord>, StoreError> {
        self.backend.list_keys().await
    }

    /// Ids of the active keys with their epochs, in bytewise (UTF-8) order
    /// of the ids, strictly after `after` (`""`: from the first), at most
    /// `limit`. Reads two columns only, in index order, so a page costs the
    /// same however many keys there are.
    pub async fn list_active_key_ids(&self, after: &str, limit: u32) -> Result<Vec<(String, u32)>, StoreError> {
        self.backend.list_active_key_ids(after, limit).await
    }

    /// Every pending key created at or before `created_before` (seconds
    /// since the Unix epoch), oldest first.
    pub async fn list_pending_keys(&self, created_before: i64) -> Result<Vec<KeyRecord>, StoreError> {
        self.backend.list_pending_keys(created_before).await
    }

    /// This node's secret share of `key_id` at `epoch`, unsealed.
    ///
    /// # Errors
    /// [`StoreError::Unseal`] if the sealed record fails authentication.
    pub async fn get_share(
        &self,
        key_id: &str,
        party: u16,
        epoch: u32,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
        match self.backend.get_share(key_id, party, epoch).await? {
            Some(sealed) => self
                .sealer
                .open(&RecordId::key_share(key_id, party, epoch), &sealed)
                .map(Some),
            None => Ok(None),
        }
    }

    /// Stores this node's aux info for an ordered party set as *pending*
    /// (sealed as [`RecordId::aux_info`]): not served by
    /// [`Store::get_aux_info`] until [`Store::commit_aux_info`]. A pending
    /// record is replaced by a newer run; a committed one never is.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] if committed aux info of that set and party
    /// exists.
    pub async fn put_aux_info(&self, party_set: &str, party: u16, aux: &[u8]) -> Result<(), StoreError> {
        let sealed = self.sealer.seal(&RecordId::aux_info(party_set, party), aux)?;
        self.backend.put_aux_info(party_set, party, &sealed).await
    }

    /// This node's *committed* aux info for `party_set`, unsealed.
    pub async fn get_aux_info(&self, party_set: &str, party: u16) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
        self.aux_info(party_set, party, true).await
    }

    /// This node's *pending* aux info for `party_set`, unsealed, to check
    /// before [`Store::commit_aux_info`].
    pub async fn get_pending_aux_info(&self, party_set: &str, party: u16) -> Result<Option<PendingAux>, StoreError> {
        match self.backend.get_aux_info(party_set, party, false).await? {
            Some(sealed) => {
                let aux = self.sealer.open(&RecordId::aux_info(party_set, party), &sealed)?;
                Ok(Some(PendingAux { aux, sealed }))
            }
            None => Ok(None),
        }
    }

    async fn aux_info(
        &self,
        party_set: &str,
        party: u16,
        committed: bool,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
        match self.backend.get_aux_info(party_set, party, committed).await? {
            Some(sealed) => self
                .sealer
                .open(&RecordId::aux_info(party_set, party), &sealed)
                .map(Some),
            None => Ok(None),
        }
    }

    /// Commits `pending` (as read by [`Store::get_pending_aux_info`]) with
    /// the `evidence` that justified it (public: every party's attestation),
    /// only if it is still the pending aux info of the set: a newer run that
    /// replaced it in between is not committed. Returns whether it did.
    pub async fn commit_aux_info(
        &self,
        party_set: &str,
        party: u16,
        pending: &PendingAux,
        evidence: &str,
    ) -> Result<bool, StoreError> {
        self.backend
            .commit_aux_info(party_set, party, &pending.sealed, evidence)
            .await
    }

    /// The evidence stored when aux info of the set was committed.
    pub async fn aux_evidence(&self, party_set: &str, party: u16) -> Result<Option<String>, StoreError> {
        self.backend.aux_evidence(party_set, party).await
    }

    /// Adds one pre-generated safe prime of `bits` bits to the pool
    /// (sealed as [`RecordId::prime`]).
    pub async fn put_prime(&self, bits: u32, prime: &[u8]) -> Result<(), StoreError> {
        self.put_primes(bits, &[prime]).await
    }

    /// Adds several primes of `bits` bits in one transaction (the prime
    /// service's group commit: one fsync for a batch).
    pub async fn put_primes(&self, bits: u32, primes: &[&[u8]]) -> Result<(), StoreError> {
        let id = RecordId::prime(bits);
        let sealed = primes
            .iter()
            .map(|p| self.sealer.seal(&id, p))
            .collect::<Result<Vec<_>, _>>()?;
        self.backend.put_primes(bits, &sealed).await
    }

    /// Imports primes of `bits` bits from a seed file: each is added to the
    /// pool unless a prime with the same hash (SHA-256 of
    /// `sigil/seeded-prime/v1` and its bytes) was ever imported into this
    /// store, so a restart or the same file again adds nothing. Returns how
    /// many were added.
    pub async fn import_primes(&self, bits: u32, primes: &[&[u8]]) -> Result<usize, StoreError> {
        use sha2::Digest as _;
        let id = RecordId::prime(bits);
        let items = primes
            .iter()
            .map(|p| {
                let mut h = sha2::Sha256::new();
                h.update(b"sigil/seeded-prime/v1");
                h.update(p);
                Ok((h.finalize().into(), self.sealer.seal(&id, p)?))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        self.backend.put_seeded_primes(bits, &items).await
    }

    /// Takes `count` primes of `bits` bits out of the pool, oldest first,
    /// or none if the pool holds fewer: they are deleted in the same
    /// statement or transaction that reads them, so a prime is handed out
    /// at most once.
    pub async fn take_primes(&self, bits: u32, count: usize) -> Result<Option<Vec<Zeroizing<Vec<u8>>>>, StoreError> {
        let Some(sealed) = self.backend.take_primes(bits, count).await? else {
            return Ok(None);
        };
        let id = RecordId::prime(bits);
        sealed
            .iter()
            .map(|s| self.sealer.open(&id, s))
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    /// Number of primes of `bits` bits in the pool.
    pub async fn count_primes(&self, bits: u32) -> Result<usize, StoreError> {
        self.backend.count_primes(bits).await
    }

    /// Pools one presignature of `key_id` for the ordered `signer_set`,
    /// made in presigning session `presig_id` (sealed as
    /// [`RecordId::presignature`]).
    pub async fn put_presignature(
        &self,
        key_id: &str,
        signer_set: &str,
        party: u16,
        presig_id: &str,
        presig: &[u8],
    ) -> Result<(), StoreError> {
        let sealed = self
            .sealer
            .seal(&RecordId::presignature(key_id, signer_set, presig_id, party), presig)?;
        self.backend
            .put_presignature(key_id, signer_set, party, presig_id, &sealed)
            .await
    }

    /// Takes a presignature out of the pool: the one with `presig_id` if
    /// given, else the oldest for (`key_id`, `signer_set`). It is deleted in
    /// the statement that reads it, so it is handed out at most once.
    /// Returns its id and the unsealed presignature.
    pub async fn take_presignature(
        &self,
        key_id: &str,
        signer_set: &str,
        party: u16,
        presig_id: Option<&str>,
    ) -> Result<Option<(String, Zeroizing<Vec<u8>>)>, StoreError> {
        let Some((id, sealed)) = self
            .backend
            .take_presignature(key_id, signer_set, party, presig_id)
            .await?
        else {
            return Ok(None);
        };
        let presig = self
            .sealer
            .open(&RecordId::presignature(key_id, signer_set, &id, party), &sealed)?;
        Ok(Some((id, presig)))
    }

    /// Deletes the pooled presignature `presig_id` of `party` (whatever its
    /// key and set), if there is one. Returns whether one was deleted.
    pub async fn discard_presignature(&self, party: u16, presig_id: &str) -> Result<bool, StoreError> {
        self.backend.discard_presignature(party, presig_id).await
    }

    /// Deletes every pooled presignature of `party` (a node does at start:
    /// presignatures never outlive the process that made them). Returns
    /// how many were deleted.
    pub async fn clear_presignatures(&self, party: u16) -> Result<usize, StoreError> {
        self.backend.clear_presignatures(party).await
    }

    /// Number of pooled presignatures of (`key_id`, `signer_set`).
    pub async fn count_presignatures(&self, key_id: &str, signer_set: &str) -> Result<usize, StoreError> {
        self.backend.count_presignatures(key_id, signer_set).await
    }

    /// Appends audit records (consecutive `seq`s after the last one)
    /// atomically.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] if a `seq` exists.
    pub async fn append_audit(&self, rows: &[AuditRow]) -> Result<(), StoreError> {
        self.backend.append_audit(rows).await
    }

    /// Audit records with `seq > after`, ascending, at most `limit`.
    pub async fn audit_after(&self, after: u64, limit: u32) -> Result<Vec<AuditRow>, StoreError> {
        self.backend.audit_after(after, limit).await
    }

    /// The last audit record, if any.
    pub async fn last_audit(&self) -> Result<Option<AuditRow>, StoreError> {
        self.backend.last_audit().await
    }
}
