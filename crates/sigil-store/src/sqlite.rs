//! The embedded SQLite store (sqlx), WAL journal with `synchronous = FULL`
//! so a committed key survives `kill -9` and power loss.

use std::path::Path;
use std::str::FromStr;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};
use zeroize::Zeroizing;

use crate::{Attestation, AuditRow, KeyPolicy, KeyRecord, KeyStatus, MasterKey, RecordId, Sealer, Store, StoreError};

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS meta (
    name  TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS keys (
    key_id         TEXT PRIMARY KEY,
    scheme         TEXT NOT NULL,
    threshold      INTEGER NOT NULL,
    parties        TEXT NOT NULL,
    public_key     BLOB NOT NULL,
    public_package BLOB NOT NULL,
    epoch          INTEGER NOT NULL,
    label          TEXT,
    created_at     INTEGER NOT NULL,
    status         TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS aux_info (
    party_set TEXT NOT NULL,
    party     INTEGER NOT NULL,
    sealed    BLOB NOT NULL,
    committed INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (party_set, party)
);
CREATE TABLE IF NOT EXISTS presignatures (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    key_id     TEXT NOT NULL,
    signer_set TEXT NOT NULL,
    party      INTEGER NOT NULL,
    presig_id  TEXT NOT NULL,
    sealed     BLOB NOT NULL,
    UNIQUE (key_id, signer_set, party, presig_id)
);
CREATE TABLE IF NOT EXISTS primes (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    bits   INTEGER NOT NULL,
    sealed BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
    seq     INTEGER PRIMARY KEY,
    record  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS key_shares (
    key_id  TEXT NOT NULL REFERENCES keys(key_id) ON DELETE CASCADE,
    party   INTEGER NOT NULL,
    epoch   INTEGER NOT NULL,
    sealed  BLOB NOT NULL,
    PRIMARY KEY (key_id, party, epoch)
);
"#;

/// Columns added to `keys` after the first release: `(name, definition)`,
/// added to older databases at open.
const KEY_COLUMNS: [(&str, &str); 4] = [
    ("policy", "TEXT NOT NULL DEFAULT '{}'"),
    ("created_by", "TEXT NOT NULL DEFAULT ''"),
    ("create_jti", "TEXT NOT NULL DEFAULT ''"),
    ("attestations", "TEXT NOT NULL DEFAULT '[]'"),
];

fn aux_id(party_set: &str, party: u16) -> RecordId<'_> {
    RecordId {
        kind: "aux_info",
        key_id: party_set,
        party,
        epoch: 0,
    }
}

/// Adds each of `columns` (`(name, definition)`) that `table` lacks: the
/// schema of stores made by older versions grows in place.
async fn add_missing_columns(pool: &SqlitePool, table: &str, columns: &[(&str, &str)]) -> Result<(), StoreError> {
    let have: Vec<String> = sqlx::query(&format!("SELECT name FROM pragma_table_info('{table}')"))
        .fetch_all(pool)
        .await?
        .iter()
        .map(|r| r.try_get::<String, _>("name"))
        .collect::<Result<_, _>>()?;
    for (name, def) in columns {
        if !have.iter().any(|h| h == name) {
            sqlx::raw_sql(&format!("ALTER TABLE {table} ADD COLUMN {name} {def}"))
                .execute(pool)
                .await?;
        }
    }
    Ok(())
}

const CANARY: &[u8] = b"sigil store canary v1";

/// SQLite implementation of [`Store`].
pub struct SqliteStore {
    pool: SqlitePool,
    sealer: Sealer,
}

impl SqliteStore {
    /// Opens (creating if missing) the database at `path` and checks that
    /// `master` opens its records.
    ///
    /// # Errors
    /// [`StoreError::WrongMasterKey`] if the store was created under another
    /// master key; [`StoreError::Database`] if the file cannot be opened.
    pub async fn open(path: &Path, master: &MasterKey) -> Result<Self, StoreError> {
        let opts = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(std::time::Duration::from_secs(5));
        let pool = SqlitePoolOptions::new().max_connections(4).connect_with(opts).await?;
        sqlx::raw_sql(SCHEMA).execute(&pool).await?;
        add_missing_columns(&pool, "keys", &KEY_COLUMNS).await?;
        // Aux info stored before two-phase commit existed was committed.
        add_missing_columns(&pool, "aux_info", &[("committed", "INTEGER NOT NULL DEFAULT 1")]).await?;
        let store = SqliteStore {
            pool,
            sealer: Sealer::new(master),
        };
        store.check_canary().await?;
        Ok(store)
    }

    async fn aux_info(
        &self,
        party_set: &str,
        party: u16,
        committed: bool,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
        let row = sqlx::query("SELECT sealed FROM aux_info WHERE party_set = ? AND party = ? AND committed = ?")
            .bind(party_set)
            .bind(i64::from(party))
            .bind(i64::from(committed))
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else { return Ok(None) };
        let sealed: Vec<u8> = row.try_get("sealed")?;
        self.sealer.open(&aux_id(party_set, party), &sealed).map(Some)
    }

    async fn check_canary(&self) -> Result<(), StoreError> {
        let id = RecordId {
            kind: "canary",
            key_id: "",
            party: 0,
            epoch: 0,
        };
        let row = sqlx::query("SELECT value FROM meta WHERE name = 'canary'")
            .fetch_optional(&self.pool)
            .await?;
        match row {
            Some(row) => {
                let sealed: Vec<u8> = row.try_get("value")?;
                match self.sealer.open(&id, &sealed) {
                    Ok(v) if v.as_slice() == CANARY => Ok(()),
                    _ => Err(StoreError::WrongMasterKey("the canary record does not open".into())),
                }
            }
            None => {
                let sealed = self.sealer.seal(&id, CANARY)?;
                sqlx::query("INSERT INTO meta (name, value) VALUES ('canary', ?)")
                    .bind(sealed)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }
        }
    }

    /// Overwrites the sealed share of a key with raw bytes. For tests of
    /// tamper detection only.
    #[doc(hidden)]
    pub async fn corrupt_share_for_tests(&self, key_id: &str, sealed: &[u8]) -> Result<(), StoreError> {
        sqlx::query("UPDATE key_shares SET sealed = ? WHERE key_id = ?")
            .bind(sealed)
            .bind(key_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Sets a key's status, whatever it was. For tests of a missed
    /// `FinalizeKey` only.
    #[doc(hidden)]
    pub async fn set_status_for_tests(&self, key_id: &str, status: KeyStatus) -> Result<(), StoreError> {
        sqlx::query("UPDATE keys SET status = ? WHERE key_id = ?")
            .bind(status.as_str())
            .bind(key_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The raw sealed share of a key, for tests.
    #[doc(hidden)]
    pub async fn raw_share_for_tests(&self, key_id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let row = sqlx::query("SELECT sealed FROM key_shares WHERE key_id = ?")
            .bind(key_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(r) => Some(r.try_get("sealed")?),
            None => None,
        })
    }
}

fn key_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<KeyRecord, StoreError> {
    let parties: String = row.try_get("parties")?;
    let parties: Vec<u16> = serde_json::from_str(&parties).map_err(|e| StoreError::Corrupt(format!("parties: {e}")))?;
    let status: String = row.try_get("status")?;
    let status = match status.as_str() {
        "pending" => KeyStatus::Pending,
        "active" => KeyStatus::Active,
        other => return Err(StoreError::Corrupt(format!("status {other:?}"))),
    };
    let threshold: i64 = row.try_get("threshold")?;
    let epoch: i64 = row.try_get("epoch")?;
    let policy: String = row.try_get("policy")?;
    let policy: KeyPolicy = serde_json::from_str(&policy).map_err(|e| StoreError::Corrupt(format!("policy: {e}")))?;
    let attestations: String = row.try_get("attestations")?;
    let attestations: Vec<Attestation> =
        serde_json::from_str(&attestations).map_err(|e| StoreError::Corrupt(format!("attestations: {e}")))?;
    Ok(KeyRecord {
        key_id: row.try_get("key_id")?,
        scheme: row.try_get("scheme")?,
        threshold: u16::try_from(threshold).map_err(|_| StoreError::Corrupt("threshold".into()))?,
        parties,
        public_key: row.try_get("public_key")?,
        public_package: row.try_get("public_package")?,
        epoch: u32::try_from(epoch).map_err(|_| StoreError::Corrupt("epoch".into()))?,
        label: row.try_get("label")?,
        created_at: row.try_get("created_at")?,
        status,
        policy,
        created_by: row.try_get("created_by")?,
        create_jti: row.try_get("create_jti")?,
        attestations,
    })
}

fn audit_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<AuditRow, StoreError> {
    let seq: i64 = row.try_get("seq")?;
    Ok(AuditRow {
        seq: u64::try_from(seq).map_err(|_| StoreError::Corrupt("audit seq".into()))?,
        record: row.try_get("record")?,
    })
}

/// Reads the audit log of the SQLite store at `path` without its master
/// key (the log holds no secrets), read-only, for `sigil audit verify`.
///
/// # Errors
/// The file cannot be opened or holds no audit table.
pub async fn read_audit_log(path: &Path) -> Result<Vec<AuditRow>, StoreError> {
    let opts = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))?.read_only(true);
    let pool = SqlitePoolOptions::new().max_connections(1).connect_with(opts).await?;
    let rows = sqlx::query("SELECT seq, record FROM audit ORDER BY seq")
        .fetch_all(&pool)
        .await?;
    rows.iter().map(audit_from_row).collect()
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Corrupt(e.to_string()))
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn put_key(&self, key: &KeyRecord, party: u16, share: Option<&[u8]>) -> Result<(), StoreError> {
        let parties = to_json(&key.parties)?;
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO keys (key_id, scheme, threshold, parties, public_key, public_package, epoch, label, created_at, status,
                               policy, created_by, create_jti, attestations)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(key_id) DO NOTHING",
        )
        .bind(&key.key_id)
        .bind(&key.scheme)
        .bind(i64::from(key.threshold))
        .bind(parties)
        .bind(&key.public_key)
        .bind(&key.public_package)
        .bind(i64::from(key.epoch))
        .bind(&key.label)
        .bind(key.created_at)
        .bind(key.status.as_str())
        .bind(to_json(&key.policy)?)
        .bind(&key.created_by)
        .bind(&key.create_jti)
        .bind(to_json(&key.attestations)?)
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 0 {
            return Err(StoreError::Conflict(format!("key {} exists", key.key_id)));
        }
        if let Some(share) = share {
            let id = RecordId {
                kind: "key_share",
                key_id: &key.key_id,
                party,
                epoch: key.epoch,
            };
            let sealed = self.sealer.seal(&id, share)?;
            sqlx::query("INSERT INTO key_shares (key_id, party, epoch, sealed) VALUES (?, ?, ?, ?)")
                .bind(&key.key_id)
                .bind(i64::from(party))
                .bind(i64::from(key.epoch))
                .bind(sealed)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn activate_key(&self, key_id: &str, attestations: &[Attestation]) -> Result<bool, StoreError> {
        let attestations = to_json(&attestations)?;
        let r = sqlx::query("UPDATE keys SET status = 'active', attestations = ? WHERE key_id = ?")
            .bind(attestations)
            .bind(key_id)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    async fn delete_pending_key(&self, key_id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM keys WHERE key_id = ? AND status = 'pending'")
            .bind(key_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn get_key(&self, key_id: &str) -> Result<Option<KeyRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM keys WHERE key_id = ?")
            .bind(key_id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(key_from_row).transpose()
    }

    async fn list_keys(&self) -> Result<Vec<KeyRecord>, StoreError> {
        let rows = sqlx::query("SELECT * FROM keys WHERE status = 'active' ORDER BY created_at, key_id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(key_from_row).collect()
    }

    async fn list_active_key_ids(&self, after: &str, limit: u32) -> Result<Vec<String>, StoreError> {
        let rows =
            sqlx::query("SELECT key_id FROM keys WHERE key_id > ? AND status = 'active' ORDER BY key_id LIMIT ?")
                .bind(after)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| r.try_get::<String, _>("key_id").map_err(StoreError::from))
            .collect()
    }

    async fn list_pending_keys(&self, created_before: i64) -> Result<Vec<KeyRecord>, StoreError> {
        let rows =
            sqlx::query("SELECT * FROM keys WHERE status = 'pending' AND created_at <= ? ORDER BY created_at, key_id")
                .bind(created_before)
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(key_from_row).collect()
    }

    async fn get_share(&self, key_id: &str, party: u16, epoch: u32) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
        let row = sqlx::query("SELECT sealed FROM key_shares WHERE key_id = ? AND party = ? AND epoch = ?")
            .bind(key_id)
            .bind(i64::from(party))
            .bind(i64::from(epoch))
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else { return Ok(None) };
        let sealed: Vec<u8> = row.try_get("sealed")?;
        let id = RecordId {
            kind: "key_share",
            key_id,
            party,
            epoch,
        };
        self.sealer.open(&id, &sealed).map(Some)
    }

    async fn put_aux_info(&self, party_set: &str, party: u16, aux: &[u8]) -> Result<(), StoreError> {
        let sealed = self.sealer.seal(&aux_id(party_set, party), aux)?;
        let r = sqlx::query(
            "INSERT INTO aux_info (party_set, party, sealed, committed) VALUES (?, ?, ?, 0) \
             ON CONFLICT(party_set, party) DO UPDATE SET sealed = excluded.sealed WHERE committed = 0",
        )
        .bind(party_set)
        .bind(i64::from(party))
        .bind(sealed)
        .execute(&self.pool)
        .await?;
        if r.rows_affected() == 0 {
            return Err(StoreError::Conflict(format!(
                "aux info of party set {party_set} is committed"
            )));
        }
        Ok(())
    }

    async fn get_aux_info(&self, party_set: &str, party: u16) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
        self.aux_info(party_set, party, true).await
    }

    async fn get_pending_aux_info(
        &self,
        party_set: &str,
        party: u16,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
        self.aux_info(party_set, party, false).await
    }

    async fn commit_aux_info(&self, party_set: &str, party: u16) -> Result<bool, StoreError> {
        let r = sqlx::query("UPDATE aux_info SET committed = 1 WHERE party_set = ? AND party = ?")
            .bind(party_set)
            .bind(i64::from(party))
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    async fn put_prime(&self, bits: u32, prime: &[u8]) -> Result<(), StoreError> {
        let id = RecordId {
            kind: "prime",
            key_id: "",
            party: 0,
            epoch: bits,
        };
        let sealed = self.sealer.seal(&id, prime)?;
        sqlx::query("INSERT INTO primes (bits, sealed) VALUES (?, ?)")
            .bind(i64::from(bits))
            .bind(sealed)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn take_primes(&self, bits: u32, count: usize) -> Result<Option<Vec<Zeroizing<Vec<u8>>>>, StoreError> {
        // One statement, so the write lock is taken at once (a deferred
        // read-then-write transaction can fail with SQLITE_BUSY under a
        // concurrent writer): all `count` oldest primes or none.
        let limit = i64::try_from(count).map_err(|_| StoreError::Conflict("count too large".into()))?;
        let rows = sqlx::query(
            "DELETE FROM primes WHERE id IN (SELECT id FROM primes WHERE bits = ?1 ORDER BY id LIMIT ?2)
               AND (SELECT COUNT(*) FROM primes WHERE bits = ?1) >= ?2
             RETURNING id, sealed",
        )
        .bind(i64::from(bits))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        if rows.len() < count {
            return Ok(None);
        }
        let id = RecordId {
            kind: "prime",
            key_id: "",
            party: 0,
            epoch: bits,
        };
        let mut sorted: Vec<(i64, Vec<u8>)> = Vec::with_capacity(rows.len());
        for row in &rows {
            sorted.push((row.try_get("id")?, row.try_get("sealed")?));
        }
        sorted.sort_by_key(|(rid, _)| *rid);
        sorted
            .iter()
            .map(|(_, sealed)| self.sealer.open(&id, sealed))
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    async fn count_primes(&self, bits: u32) -> Result<usize, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM primes WHERE bits = ?")
            .bind(i64::from(bits))
            .fetch_one(&self.pool)
            .await?;
        let n: i64 = row.try_get("n")?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    async fn put_presignature(
        &self,
        key_id: &str,
        signer_set: &str,
        party: u16,
        presig_id: &str,
        presig: &[u8],
    ) -> Result<(), StoreError> {
        let kind = format!("presignature/{signer_set}/{presig_id}");
        let id = RecordId {
            kind: &kind,
            key_id,
            party,
            epoch: 0,
        };
        let sealed = self.sealer.seal(&id, presig)?;
        sqlx::query("INSERT INTO presignatures (key_id, signer_set, party, presig_id, sealed) VALUES (?, ?, ?, ?, ?)")
            .bind(key_id)
            .bind(signer_set)
            .bind(i64::from(party))
            .bind(presig_id)
            .bind(sealed)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn take_presignature(
        &self,
        key_id: &str,
        signer_set: &str,
        party: u16,
        presig_id: Option<&str>,
    ) -> Result<Option<(String, Zeroizing<Vec<u8>>)>, StoreError> {
        // One statement: read and delete atomically under the write lock.
        let row = sqlx::query(
            "DELETE FROM presignatures WHERE seq = (
                SELECT seq FROM presignatures
                 WHERE key_id = ?1 AND signer_set = ?2 AND party = ?3 AND (?4 IS NULL OR presig_id = ?4)
                 ORDER BY seq LIMIT 1)
             RETURNING presig_id, sealed",
        )
        .bind(key_id)
        .bind(signer_set)
        .bind(i64::from(party))
        .bind(presig_id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let pid: String = row.try_get("presig_id")?;
        let sealed: Vec<u8> = row.try_get("sealed")?;
        let kind = format!("presignature/{signer_set}/{pid}");
        let id = RecordId {
            kind: &kind,
            key_id,
            party,
            epoch: 0,
        };
        let presig = self.sealer.open(&id, &sealed)?;
        Ok(Some((pid, presig)))
    }

    async fn discard_presignature(&self, party: u16, presig_id: &str) -> Result<bool, StoreError> {
        let r = sqlx::query("DELETE FROM presignatures WHERE party = ? AND presig_id = ?")
            .bind(i64::from(party))
            .bind(presig_id)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    async fn count_presignatures(&self, key_id: &str, signer_set: &str) -> Result<usize, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM presignatures WHERE key_id = ? AND signer_set = ?")
            .bind(key_id)
            .bind(signer_set)
            .fetch_one(&self.pool)
            .await?;
        let n: i64 = row.try_get("n")?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    async fn append_audit(&self, rows: &[AuditRow]) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        // One statement for the whole batch: atomic, and one round trip to
        // SQLite's worker thread however many rows.
        let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new("INSERT INTO audit (seq, record) ");
        let mut bad_seq = false;
        q.push_values(rows, |mut b, r| {
            let seq = i64::try_from(r.seq).unwrap_or_else(|_| {
                bad_seq = true;
                0
            });
            b.push_bind(seq).push_bind(r.record.clone());
        });
        if bad_seq {
            return Err(StoreError::Corrupt("audit seq".into()));
        }
        q.build().execute(&self.pool).await.map_err(|e| match e {
            sqlx::Error::Database(d) if d.is_unique_violation() => StoreError::Conflict(format!(
                "audit records {}..={} overlap existing ones",
                rows.first().map_or(0, |r| r.seq),
                rows.last().map_or(0, |r| r.seq)
            )),
            e => StoreError::Database(e),
        })?;
        Ok(())
    }

    async fn audit_after(&self, after: u64, limit: u32) -> Result<Vec<AuditRow>, StoreError> {
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        let rows = sqlx::query("SELECT seq, record FROM audit WHERE seq > ? ORDER BY seq LIMIT ?")
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(audit_from_row).collect()
    }

    async fn last_audit(&self) -> Result<Option<AuditRow>, StoreError> {
        let row = sqlx::query("SELECT seq, record FROM audit ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(audit_from_row).transpose()
    }
}

#[cfg(test)]
#[allow(clippy::panic)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sqlite_passes_conformance() -> Result<(), StoreError> {
        let dir = tempfile::tempdir().map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let store = SqliteStore::open(&dir.path().join("a.db"), &MasterKey::generate()).await?;
        crate::conformance::run_all(&store).await
    }

    #[tokio::test]
    async fn wrong_master_key_is_rejected_and_keys_survive_reopen() -> Result<(), StoreError> {
        let dir = tempfile::tempdir().map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let path = dir.path().join("b.db");
        let master = MasterKey::generate();
        {
            let store = SqliteStore::open(&path, &master).await?;
            store
                .put_key(&crate::conformance::sample_key("k1"), 3, Some(b"share"))
                .await?;
            store.pool.close().await;
        }
        match SqliteStore::open(&path, &MasterKey::generate()).await {
            Err(StoreError::WrongMasterKey(_)) => {}
            Err(e) => panic!("expected WrongMasterKey, got {e}"),
            Ok(_) => panic!("a wrong master key must be refused"),
        }
        let store = SqliteStore::open(&path, &master).await?;
        let share = store.get_share("k1", 3, 0).await?;
        assert_eq!(share.as_deref().map(|s| s.as_slice()), Some(&b"share"[..]));
        Ok(())
    }

    /// Concurrent takers and a concurrent writer: every presignature is
    /// handed out exactly once and no take fails with SQLITE_BUSY.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn presignatures_are_single_use_under_concurrency() -> Result<(), StoreError> {
        let dir = tempfile::tempdir().map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let store = std::sync::Arc::new(SqliteStore::open(&dir.path().join("p.db"), &MasterKey::generate()).await?);
        for k in 0..40 {
            store.put_presignature("k", "0,1", 0, &format!("p{k}"), b"x").await?;
        }
        let writer = {
            let store = store.clone();
            tokio::spawn(async move {
                for k in 40..80 {
                    store.put_presignature("k", "0,1", 0, &format!("p{k}"), b"x").await?;
                }
                Ok::<_, StoreError>(())
            })
        };
        let mut takers = Vec::new();
        for _ in 0..6 {
            let store = store.clone();
            takers.push(tokio::spawn(async move {
                let mut got = Vec::new();
                for _ in 0..200 {
                    match store.take_presignature("k", "0,1", 0, None).await? {
                        Some((id, _)) => got.push(id),
                        None => tokio::task::yield_now().await,
                    }
                }
                Ok::<_, StoreError>(got)
            }));
        }
        writer.await.map_err(|e| StoreError::Corrupt(e.to_string()))??;
        let mut all = Vec::new();
        for t in takers {
            all.extend(t.await.map_err(|e| StoreError::Corrupt(e.to_string()))??);
        }
        while let Some((id, _)) = store.take_presignature("k", "0,1", 0, None).await? {
            all.push(id);
        }
        let unique: std::collections::HashSet<_> = all.iter().collect();
        assert_eq!(unique.len(), all.len(), "a presignature was handed out twice");
        assert_eq!(all.len(), 80, "every presignature handed out");
        Ok(())
    }

    #[tokio::test]
    async fn tampered_share_is_rejected() -> Result<(), StoreError> {
        let dir = tempfile::tempdir().map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let store = SqliteStore::open(&dir.path().join("c.db"), &MasterKey::generate()).await?;
        store
            .put_key(&crate::conformance::sample_key("k1"), 1, Some(b"share"))
            .await?;
        let mut raw = store.raw_share_for_tests("k1").await?.unwrap_or_default();
        assert!(!raw.windows(5).any(|w| w == b"share"), "share is sealed at rest");
        if let Some(b) = raw.last_mut() {
            *b ^= 0x80;
        }
        store.corrupt_share_for_tests("k1", &raw).await?;
        assert!(matches!(store.get_share("k1", 1, 0).await, Err(StoreError::Unseal(_))));
        Ok(())
    }
}
