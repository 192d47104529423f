//! Sigil's storage: a typed [`Store`] that seals every secret record
//! ([`seal`]) over a [`Backend`] that only ever sees sealed blobs, with two
//! backends: embedded SQLite ([`SqliteBackend`], the default) and
//! PostgreSQL ([`PgBackend`]). [`open`] picks one from a [`StoreConfig`].
//!
//! Secret material (key shares, aux info, primes, presignatures) is written
//! only sealed (AES-256-GCM, see [`seal`]), each bound to its identity
//! ([`RecordId`]); public material (public key packages, metadata) is
//! written in the clear. A store remembers a sealed canary record, so
//! opening it with the wrong master key is a clear error
//! ([`StoreError::WrongMasterKey`]) rather than garbage later. Schemas are
//! `sqlx` migrations, one directory per backend (`migrations/sqlite`,
//! `migrations/postgres`); [`Backend::schema_version`] reports the last
//! applied.
#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod backend;
mod config;
pub mod conformance;
mod postgres;
mod rows;
pub mod seal;
mod sqlite;
mod store;
pub mod testing;

pub use backend::{Backend, SealedShare};
pub use config::{open, open_sqlite, StoreConfig, StoreKind};
pub use postgres::{ensure_database, redact_url, PgBackend};
pub use seal::{take_master_key_env, MasterKey, RecordId, Sealer, MASTER_KEY_ENV};
pub use sqlite::{read_audit_log, SqliteBackend};
pub use store::{PendingAux, Store};

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
    /// The database is not reachable (PostgreSQL down).
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The store configuration is wrong.
    #[error("store config: {0}")]
    Config(String),
}

impl StoreError {
    /// Whether the error means the database is unreachable right now (a
    /// request may succeed later) rather than a bad request or record.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Unavailable(_) => true,
            StoreError::Database(e) => {
                matches!(
                    e,
                    sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Tls(_)
                ) || matches!(e, sqlx::Error::Database(d)
                // PostgreSQL: connection exceptions (08) and operator
                // intervention, e.g. the server shutting down (57P).
                if d.code().is_some_and(|c| c.starts_with("08") || c.starts_with("57P")))
            }
            _ => false,
        }
    }
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
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            KeyStatus::Pending => "pending",
            KeyStatus::Active => "active",
        }
    }
}

/// Public metadata of a key, the same on every node. Serialized (JSON) as
/// the record of a pending epoch.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
    /// After a refresh or reshare: the dealing old parties' signatures
    /// over the transition from the previous epoch's record (at least its
    /// threshold of them); what lets an old party delete its share. Empty
    /// at epoch 0.
    #[serde(default)]
    pub endorsements: Vec<Attestation>,
    /// After a refresh or reshare: every party's signature that it
    /// activated this epoch (its new share is in use); what lets a node
    /// outside the committee switch and an old party delete its share.
    #[serde(default)]
    pub activations: Vec<Attestation>,
}

/// One retired epoch of a key, in its history: what the API shows of the
/// key's past committees.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EpochEntry {
    /// The epoch (0 after the DKG).
    pub epoch: u32,
    /// Its threshold `t`.
    pub threshold: u16,
    /// Its committee, node ids in key order.
    pub parties: Vec<u16>,
    /// Hex SHA-256 of its canonical attested record.
    pub record_hash: String,
    /// When it became active, seconds since the Unix epoch (the key's
    /// creation for epoch 0).
    pub started_at: i64,
    /// When the next epoch replaced it.
    pub ended_at: i64,
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
    /// Refresh the key automatically when its epoch is this many seconds
    /// old (set by `"rotate": true` at creation); none: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation_interval_s: Option<u64>,
    /// The clients of the key's external parties, in key party order
    /// (each holds the share of an `EXTERNAL_PARTY` slot of `parties`; set
    /// by the nodes from the creating request, never by a client's
    /// policy). Empty (and absent from the record's JSON) for node-only keys.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub external: Vec<String>,
    /// The Ed25519 session key (64 hex characters) of each external party
    /// in the key generation, in the order of `external` (set by the
    /// nodes from the creating request): the record's attestation of the
    /// external slot is the party's signature under it, its confirmation
    /// that it holds its share of this record. Empty for node-only keys.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub external_keys: Vec<String>,
    /// Every signature needs the external party (else `t` nodes may sign
    /// alone when the key has that many).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub require_external: bool,
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

/// Seconds since the Unix epoch (0 before it).
pub(crate) fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
