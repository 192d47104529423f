//! The database under the [`Store`](crate::Store): a trait that sees only
//! sealed blobs and public metadata, implemented once per database
//! ([`SqliteBackend`](crate::SqliteBackend), [`PgBackend`](crate::PgBackend)).
//!
//! A backend never seals, unseals or builds a record identity: the store
//! does, above it. Every method that changes more than one row does it in
//! one transaction (or one statement), and every single-use take deletes
//! in the statement or transaction that reads.

use crate::{Attestation, AuditRow, EpochEntry, KeyRecord, StoreError};

/// A sealed share to store with its key's metadata.
#[derive(Debug, Clone, Copy)]
pub struct SealedShare<'a> {
    /// The party (node id) holding it.
    pub party: u16,
    /// Its share generation.
    pub epoch: u32,
    /// The sealed bytes ([`Sealer::seal`](crate::Sealer::seal) output).
    pub sealed: &'a [u8],
}

/// What a database must do for a [`Store`](crate::Store). Shapes and
/// semantics are those of the `Store` methods of the same names, with
/// sealed blobs where the store takes or returns plaintext.
#[async_trait::async_trait]
pub trait Backend: Send + Sync + 'static {
    /// `"sqlite"` or `"postgres"`.
    fn kind(&self) -> &'static str;

    /// The schema version: the number of the last migration applied.
    async fn schema_version(&self) -> Result<i64, StoreError>;

    /// The value of node-wide setting `name`.
    async fn get_meta(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Sets `name` unless it is set; returns whether it was inserted.
    async fn insert_meta(&self, name: &str, value: &[u8]) -> Result<bool, StoreError>;

    /// Inserts a key's metadata and, if given, its sealed share, in one
    /// transaction. [`StoreError::Conflict`] if the key id exists.
    async fn put_key(&self, key: &KeyRecord, share: Option<SealedShare<'_>>) -> Result<(), StoreError>;

    /// Marks a key active with its attestations; whether it exists.
    async fn activate_key(&self, key_id: &str, attestations: &[Attestation]) -> Result<bool, StoreError>;

    /// Deletes a pending key and its shares (an active key is kept).
    async fn delete_pending_key(&self, key_id: &str) -> Result<(), StoreError>;

    /// Stores `key` (the record of a key's next epoch, as JSON `record`)
    /// made by session `session` (hex) with this node's sealed share of
    /// it, if any, as the key's pending epoch, in one transaction. It
    /// replaces a pending epoch of the key only when that one is not
    /// acknowledged and is of the same session or created at or before
    /// `stale_before`; otherwise it stores nothing and returns false.
    async fn put_pending_epoch(
        &self,
        key: &KeyRecord,
        record: &str,
        session: &str,
        party: u16,
        sealed: Option<&[u8]>,
        stale_before: i64,
    ) -> Result<bool, StoreError>;

    /// The pending epoch of a key: its number, record JSON and session.
    async fn get_pending_epoch(&self, key_id: &str) -> Result<Option<(u32, String, String)>, StoreError>;

    /// Acknowledges pending epoch `epoch` of a key made by `session`:
    /// replaces its record JSON and marks it acknowledged (its share
    /// stays); whether there was one.
    async fn set_pending_record(
        &self,
        key_id: &str,
        epoch: u32,
        session: &str,
        record: &str,
    ) -> Result<bool, StoreError>;

    /// Deletes pending epoch `epoch` of a key made by `session`, and its
    /// share, unless it is acknowledged; whether it did.
    async fn delete_pending_epoch(&self, key_id: &str, epoch: u32, session: &str) -> Result<bool, StoreError>;

    /// Pending epochs (key id, epoch) created at or before `created_before`.
    async fn list_pending_epochs(&self, created_before: i64) -> Result<Vec<(String, u32)>, StoreError>;

    /// Switches a key to `key` (its next epoch, active and attested), in
    /// one transaction: the stored record must be at an earlier epoch (or
    /// absent: a node new to the key); `retired` goes to the history;
    /// the pending share of `key.epoch`, if any, becomes the key's share;
    /// every other share of the key, its pending epochs and its pooled
    /// presignatures are deleted. `party`: this node is a party of `key`
    /// and must hold an acknowledged pending share of its epoch. Returns false (and
    /// changes nothing) when the stored epoch does not fit or that share is
    /// missing.
    async fn activate_epoch(
        &self,
        key: &KeyRecord,
        retired: Option<(&EpochEntry, &str)>,
        party: Option<u16>,
    ) -> Result<bool, StoreError>;

    /// The whole record (JSON) of a key's retired `epoch`, as
    /// [`Backend::activate_epoch`] kept it; `None` for an epoch not
    /// retired here or retired before records were kept.
    async fn epoch_record(&self, key_id: &str, epoch: u32) -> Result<Option<String>, StoreError>;

    /// Stores `activations` (JSON) with the key at `epoch`; whether the key
    /// is at that epoch.
    async fn set_activations(&self, key_id: &str, epoch: u32, activations: &str) -> Result<bool, StoreError>;

    /// The retired epochs of a key, oldest first.
    async fn key_history(&self, key_id: &str) -> Result<Vec<EpochEntry>, StoreError>;

    /// A key's metadata, any status.
    async fn get_key(&self, key_id: &str) -> Result<Option<KeyRecord>, StoreError>;

    /// Active keys, oldest first.
    async fn list_keys(&self) -> Result<Vec<KeyRecord>, StoreError>;

    /// Active key ids after `after`, ascending, at most `limit`.
    async fn list_active_key_ids(&self, after: &str, limit: u32) -> Result<Vec<(String, u32)>, StoreError>;

    /// Pending keys created at or before `created_before` (seconds).
    async fn list_pending_keys(&self, created_before: i64) -> Result<Vec<KeyRecord>, StoreError>;

    /// The sealed share of (`key_id`, `party`, `epoch`).
    async fn get_share(&self, key_id: &str, party: u16, epoch: u32) -> Result<Option<Vec<u8>>, StoreError>;

    /// Stores sealed aux info as pending (replacing a pending one);
    /// [`StoreError::Conflict`] if committed aux info exists.
    async fn put_aux_info(&self, party_set: &str, party: u16, sealed: &[u8]) -> Result<(), StoreError>;

    /// Sealed aux info of the set, committed or pending as asked.
    async fn get_aux_info(&self, party_set: &str, party: u16, committed: bool) -> Result<Option<Vec<u8>>, StoreError>;

    /// Commits the pending aux info of the set if it still is exactly
    /// `sealed` (the bytes the caller verified), storing `evidence` beside
    /// it; whether it did.
    async fn commit_aux_info(
        &self,
        party_set: &str,
        party: u16,
        sealed: &[u8],
        evidence: &str,
    ) -> Result<bool, StoreError>;

    /// The evidence stored with committed aux info of the set.
    async fn aux_evidence(&self, party_set: &str, party: u16) -> Result<Option<String>, StoreError>;

    /// Adds sealed primes of `bits` bits, all in one transaction.
    async fn put_primes(&self, bits: u32, sealed: &[Vec<u8>]) -> Result<(), StoreError>;

    /// Adds the sealed primes of `items` whose hash was never imported
    /// before, remembering each hash, all in one transaction; returns how
    /// many were added.
    async fn put_seeded_primes(&self, bits: u32, items: &[([u8; 32], Vec<u8>)]) -> Result<usize, StoreError>;

    /// Deletes and returns the `count` oldest sealed primes of `bits` bits,
    /// oldest first, or none (and deletes nothing) if there are fewer.
    async fn take_primes(&self, bits: u32, count: usize) -> Result<Option<Vec<Vec<u8>>>, StoreError>;

    /// Number of primes of `bits` bits.
    async fn count_primes(&self, bits: u32) -> Result<usize, StoreError>;

    /// Adds a sealed presignature.
    async fn put_presignature(
        &self,
        key_id: &str,
        signer_set: &str,
        party: u16,
        presig_id: &str,
        sealed: &[u8],
    ) -> Result<(), StoreError>;

    /// Deletes and returns a presignature (the one with `presig_id`, else
    /// the oldest of the key and set) with its id.
    async fn take_presignature(
        &self,
        key_id: &str,
        signer_set: &str,
        party: u16,
        presig_id: Option<&str>,
    ) -> Result<Option<(String, Vec<u8>)>, StoreError>;

    /// Deletes presignature `presig_id` of `party`; whether there was one.
    async fn discard_presignature(&self, party: u16, presig_id: &str) -> Result<bool, StoreError>;

    /// Deletes every pooled presignature of `party`; returns how many.
    async fn clear_presignatures(&self, party: u16) -> Result<usize, StoreError>;

    /// Number of presignatures of (`key_id`, `signer_set`).
    async fn count_presignatures(&self, key_id: &str, signer_set: &str) -> Result<usize, StoreError>;

    /// Appends audit rows atomically; [`StoreError::Conflict`] if a `seq`
    /// exists.
    async fn append_audit(&self, rows: &[AuditRow]) -> Result<(), StoreError>;

    /// Audit rows with `seq > after`, ascending, at most `limit`.
    async fn audit_after(&self, after: u64, limit: u32) -> Result<Vec<AuditRow>, StoreError>;

    /// The last audit row.
    async fn last_audit(&self) -> Result<Option<AuditRow>, StoreError>;
}
