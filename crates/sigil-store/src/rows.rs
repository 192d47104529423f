//! Row shapes shared by the backends (`sqlx::FromRow` works for both
//! databases) and their conversion to the store's types, in one place.

use crate::{Attestation, AuditRow, EpochEntry, KeyPolicy, KeyRecord, KeyStatus, StoreError};

/// A `keys` row as stored.
#[derive(sqlx::FromRow)]
pub(crate) struct KeyRow {
    key_id: String,
    scheme: String,
    threshold: i64,
    parties: String,
    public_key: Vec<u8>,
    public_package: Vec<u8>,
    epoch: i64,
    label: Option<String>,
    created_at: i64,
    status: String,
    policy: String,
    created_by: String,
    create_jti: String,
    attestations: String,
    endorsements: String,
    activations: String,
}

impl TryFrom<KeyRow> for KeyRecord {
    type Error = StoreError;

    fn try_from(r: KeyRow) -> Result<Self, StoreError> {
        let corrupt = |what: &str, e: &dyn std::fmt::Display| StoreError::Corrupt(format!("{what}: {e}"));
        let status = match r.status.as_str() {
            "pending" => KeyStatus::Pending,
            "active" => KeyStatus::Active,
            other => return Err(StoreError::Corrupt(format!("status {other:?}"))),
        };
        Ok(KeyRecord {
            key_id: r.key_id,
            scheme: r.scheme,
            threshold: u16::try_from(r.threshold).map_err(|e| corrupt("threshold", &e))?,
            parties: serde_json::from_str(&r.parties).map_err(|e| corrupt("parties", &e))?,
            public_key: r.public_key,
            public_package: r.public_package,
            epoch: u32::try_from(r.epoch).map_err(|e| corrupt("epoch", &e))?,
            label: r.label,
            created_at: r.created_at,
            status,
            policy: serde_json::from_str::<KeyPolicy>(&r.policy).map_err(|e| corrupt("policy", &e))?,
            created_by: r.created_by,
            create_jti: r.create_jti,
            attestations: serde_json::from_str::<Vec<Attestation>>(&r.attestations)
                .map_err(|e| corrupt("attestations", &e))?,
            endorsements: serde_json::from_str::<Vec<Attestation>>(&r.endorsements)
                .map_err(|e| corrupt("endorsements", &e))?,
            activations: serde_json::from_str::<Vec<Attestation>>(&r.activations)
                .map_err(|e| corrupt("activations", &e))?,
        })
    }
}

/// The text columns of a key record: parties, policy and attestations as
/// JSON.
pub(crate) struct KeyJson {
    pub parties: String,
    pub policy: String,
    pub attestations: String,
    pub endorsements: String,
    pub activations: String,
}

impl KeyJson {
    pub fn of(key: &KeyRecord) -> Result<Self, StoreError> {
        Ok(KeyJson {
            parties: to_json(&key.parties)?,
            policy: to_json(&key.policy)?,
            attestations: to_json(&key.attestations)?,
            endorsements: to_json(&key.endorsements)?,
            activations: to_json(&key.activations)?,
        })
    }
}

/// A `key_epochs` row as stored.
#[derive(sqlx::FromRow)]
pub(crate) struct EpochRow {
    epoch: i64,
    threshold: i64,
    parties: String,
    record_hash: String,
    started_at: i64,
    ended_at: i64,
}

impl TryFrom<EpochRow> for EpochEntry {
    type Error = StoreError;

    fn try_from(r: EpochRow) -> Result<Self, StoreError> {
        let corrupt = |what: &str| StoreError::Corrupt(format!("key_epochs.{what}"));
        Ok(EpochEntry {
            epoch: u32::try_from(r.epoch).map_err(|_| corrupt("epoch"))?,
            threshold: u16::try_from(r.threshold).map_err(|_| corrupt("threshold"))?,
            parties: serde_json::from_str(&r.parties).map_err(|_| corrupt("parties"))?,
            record_hash: r.record_hash,
            started_at: r.started_at,
            ended_at: r.ended_at,
        })
    }
}

/// A pending epoch's number as the databases return it.
pub(crate) fn epoch_of(n: i64) -> Result<u32, StoreError> {
    u32::try_from(n).map_err(|_| StoreError::Corrupt("pending_epochs.epoch".into()))
}

/// An `audit` row as stored.
#[derive(sqlx::FromRow)]
pub(crate) struct AuditDbRow {
    seq: i64,
    record: String,
}

impl TryFrom<AuditDbRow> for AuditRow {
    type Error = StoreError;

    fn try_from(r: AuditDbRow) -> Result<Self, StoreError> {
        Ok(AuditRow {
            seq: u64::try_from(r.seq).map_err(|_| StoreError::Corrupt("audit seq".into()))?,
            record: r.record,
        })
    }
}

/// Converts rows, failing on the first that does not decode.
pub(crate) fn convert<R, T: TryFrom<R, Error = StoreError>>(rows: Vec<R>) -> Result<Vec<T>, StoreError> {
    rows.into_iter().map(T::try_from).collect()
}

/// JSON text of `v`.
pub(crate) fn to_json<T: serde::Serialize>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// `seq` of an audit row as the databases store it.
pub(crate) fn audit_seq(r: &AuditRow) -> Result<i64, StoreError> {
    i64::try_from(r.seq).map_err(|_| StoreError::Corrupt("audit seq".into()))
}

/// A count as the databases return it.
pub(crate) fn count(n: i64) -> usize {
    usize::try_from(n).unwrap_or(0)
}

/// The conflict message of an audit batch whose `seq`s exist.
pub(crate) fn audit_conflict(rows: &[AuditRow]) -> String {
    format!(
        "audit records {}..={} overlap existing ones",
        rows.first().map_or(0, |r| r.seq),
        rows.last().map_or(0, |r| r.seq)
    )
}
