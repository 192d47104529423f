//! Sigil's storage: one [`Store`] trait, an embedded SQLite implementation
//! ([`SqliteStore`]), and sealing of every secret record ([`seal`]).
//!
//! Secret material (key shares) is written only sealed (AES-256-GCM, see
//! [`seal`]); public material (public key packages, metadata) is written in
//! the clear. A store remembers a sealed canary record, so opening it with
//! the wrong master key is a clear error ([`StoreError::WrongMasterKey`])
//! rather than garbage later.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod conformance;
pub mod seal;
mod sqlite;

pub use seal::{MasterKey, RecordId, Sealer};
pub use sqlite::{read_audit_log, SqliteStore};
use zeroize::Zeroizing;

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The master key is malformed.
    #[error("invalid master key: {0}")]
    InvalidMasterKey(String),
    /// The master key does not open this store's records.
    #[error("the master key does not match this store ({0}); refusing to start")]
    WrongMasterKey(String),
    /// Sealing failed.
    #[error("seal: {0}")]
    Seal(String),
    /// A sealed record failed to open (tampered, moved or foreign).
    #[error("unseal: {0}")]
    Unseal(String),
    /// A record already exists.
    #[error("conflict: {0}")]
    Conflict(String),
    /// A stored row does not decode.
    #[error("corrupt record: {0}")]
    Corrupt(String),
    /// The database failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

/// Lifecycle state of a key on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyStatus {
    /// DKG finished here but the coordinator has not confirmed that every
    /// party finished; not listed and not usable for signing.
    Pending,
    /// Confirmed by the coordinator; usable.
    Active,
}

impl KeyStatus {
    fn as_str(self) -> &'static str {
        match self {
            KeyStatus::Pending => "pending",
            KeyStatus::Active => "active",
        }
    }
}

/// Public metadata of a key, the same on every node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    /// Key id (a UUID string chosen by the coordinator).
    pub key_id: String,
    /// Scheme name (`frost-ed25519`, ...).
    pub scheme: String,
    /// Signers needed, `t`.
    pub threshold: u16,
    /// Node ids holding a share, in key order (key-level party index =
    /// position in this list).
    pub parties: Vec<u16>,
    /// The group public key in the scheme's standard encoding.
    pub public_key: Vec<u8>,
    /// The scheme's public key package (group key and verifying shares),
    /// serialized by the protocol crate.
    pub public_package: Vec<u8>,
    /// Share generation; 0 after DKG.
    pub epoch: u32,
    /// Optional user label (at most 128 characters, checked by the API).
    pub label: Option<String>,
    /// Creation time, seconds since the Unix epoch.
    pub created_at: i64,
    /// Lifecycle state on this node.
    pub status: KeyStatus,
    /// Which clients may use the key.
    pub policy: KeyPolicy,
    /// Id of the client whose signed request created the key.
    pub created_by: String,
    /// `jti` of that request's token.
    pub create_jti: String,
    /// Every party's signature over the canonical key record (empty while
    /// pending); the record is valid only with all of them.
    pub attestations: Vec<Attestation>,
}

/// Which clients may use a key, by client id. Sent as JSON in `POST
/// /v1/keys` (`"policy": {"sign": [...], "decrypt": [...], "admin": [...]}`);
/// a missing list means the creating client alone.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyPolicy {
    /// Clients that may ask for signatures.
    #[serde(default)]
    pub sign: Vec<String>,
    /// Clients that may ask for decryptions (paillier keys).
    #[serde(default)]
    pub decrypt: Vec<String>,
    /// Clients that may manage the key (refresh, reshare, policy).
    #[serde(default)]
    pub admin: Vec<String>,
}

/// One party's signature over a key record.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Attestation {
    /// The party's node id.
    pub node: u16,
    /// Ed25519 signature by the node's identity key (64 bytes, hex in JSON).
    #[serde(with = "hex_bytes")]
    pub signature: Vec<u8>,
}

mod hex_bytes {
    pub fn serialize<S: serde::Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(b))
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text: String = serde::Deserialize::deserialize(d)?;
        hex::decode(text).map_err(serde::de::Error::custom)
    }
}

/// One audit-log record as stored: its sequence number (from 1) and its
/// JSON text (which carries its own and the previous record's hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    /// Sequence number, from 1, without gaps.
    pub seq: u64,
    /// The record, JSON.
    pub record: String,
}

/// The storage of one node.
///
/// Every implementation must pass [`conformance::run_all`].
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// Stores a key's metadata and, if this node holds one, its secret share
    /// (`share` in plaintext; the store seals it as record
    /// `("key_share", key_id, party, epoch)`), in one transaction.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] if the key id exists.
    async fn put_key(&self, key: &KeyRecord, party: u16, share: Option<&[u8]>) -> Result<(), StoreError>;

    /// Marks a pending key active with its parties' `attestations`.
    /// Returns whether the key exists.
    async fn activate_key(&self, key_id: &str, attestations: &[Attestation]) -> Result<bool, StoreError>;

    /// Deletes a key that is still pending (nothing half-made is kept).
    async fn delete_pending_key(&self, key_id: &str) -> Result<(), StoreError>;

    /// One key's metadata, whatever its status.
    async fn get_key(&self, key_id: &str) -> Result<Option<KeyRecord>, StoreError>;

    /// Every active key, oldest first.
    async fn list_keys(&self) -> Result<Vec<KeyRecord>, StoreError>;

    /// Ids of the active keys, in bytewise (UTF-8) order, strictly after
    /// `after` (`""`: from the first), at most `limit`. Reads ids only, in
    /// index order, so a page costs the same however many keys there are.
    async fn list_active_key_ids(&self, after: &str, limit: u32) -> Result<Vec<String>, StoreError>;

    /// Every pending key created at or before `created_before` (seconds
    /// since the Unix epoch), oldest first.
    async fn list_pending_keys(&self, created_before: i64) -> Result<Vec<KeyRecord>, StoreError>;

    /// This node's secret share of `key_id` at `epoch`, unsealed.
    ///
    /// # Errors
    /// [`StoreError::Unseal`] if the sealed record fails authentication.
    async fn get_share(&self, key_id: &str, party: u16, epoch: u32) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError>;

    /// Stores this node's aux info for an ordered party set as *pending*
    /// (sealed as record `("aux_info", party_set, party, 0)`): not served by
    /// [`Store::get_aux_info`] until [`Store::commit_aux_info`]. A pending
    /// record is replaced by a newer run; a committed one never is.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] if committed aux info of that set and party
    /// exists.
    async fn put_aux_info(&self, party_set: &str, party: u16, aux: &[u8]) -> Result<(), StoreError>;

    /// This node's *committed* aux info for `party_set`, unsealed.
    async fn get_aux_info(&self, party_set: &str, party: u16) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError>;

    /// This node's *pending* aux info for `party_set`, unsealed (to check
    /// its fingerprint before committing it).
    async fn get_pending_aux_info(&self, party_set: &str, party: u16)
        -> Result<Option<Zeroizing<Vec<u8>>>, StoreError>;

    /// Commits the pending aux info of `party_set`. Idempotent: `Ok(true)`
    /// if it is committed now (also when it already was), `Ok(false)` if no
    /// aux info of that set is stored.
    async fn commit_aux_info(&self, party_set: &str, party: u16) -> Result<bool, StoreError>;

    /// Adds one pre-generated safe prime of `bits` bits to the pool
    /// (sealed as record `("prime", "", 0, 0)`).
    async fn put_prime(&self, bits: u32, prime: &[u8]) -> Result<(), StoreError>;

    /// Takes `count` primes of `bits` bits out of the pool, or none if the
    /// pool holds fewer: they are deleted in the same transaction that
    /// reads them, so a prime is handed out at most once.
    async fn take_primes(&self, bits: u32, count: usize) -> Result<Option<Vec<Zeroizing<Vec<u8>>>>, StoreError>;

    /// Number of primes of `bits` bits in the pool.
    async fn count_primes(&self, bits: u32) -> Result<usize, StoreError>;

    /// Pools one presignature of `key_id` for the ordered `signer_set`,
    /// made in presigning session `presig_id` (sealed as record
    /// `("presignature", key_id, party, 0)` with the id and set bound in).
    async fn put_presignature(
        &self,
        key_id: &str,
        signer_set: &str,
        party: u16,
        presig_id: &str,
        presig: &[u8],
    ) -> Result<(), StoreError>;

    /// Takes a presignature out of the pool: the one with `presig_id` if
    /// given, else the oldest for (`key_id`, `signer_set`). It is deleted in
    /// the transaction that reads it, so it is handed out at most once.
    /// Returns its id and the unsealed presignature.
    async fn take_presignature(
        &self,
        key_id: &str,
        signer_set: &str,
        party: u16,
        presig_id: Option<&str>,
    ) -> Result<Option<(String, Zeroizing<Vec<u8>>)>, StoreError>;

    /// Deletes the pooled presignature `presig_id` of `party` (whatever its
    /// key and set), if there is one. Returns whether one was deleted.
    async fn discard_presignature(&self, party: u16, presig_id: &str) -> Result<bool, StoreError>;

    /// Number of pooled presignatures of (`key_id`, `signer_set`).
    async fn count_presignatures(&self, key_id: &str, signer_set: &str) -> Result<usize, StoreError>;

    /// Appends audit records (consecutive `seq`s after the last one) in one
    /// transaction.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] if a `seq` exists.
    async fn append_audit(&self, rows: &[AuditRow]) -> Result<(), StoreError>;

    /// Audit records with `seq > after`, ascending, at most `limit`.
    async fn audit_after(&self, after: u64, limit: u32) -> Result<Vec<AuditRow>, StoreError>;

    /// The last audit record, if any.
    async fn last_audit(&self) -> Result<Option<AuditRow>, StoreError>;
}
