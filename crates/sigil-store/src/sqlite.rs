//! The embedded SQLite backend (sqlx), WAL journal with `synchronous =
//! FULL` so a committed key survives `kill -9` and power loss. Schema:
//! `migrations/sqlite`.

use std::path::Path;
use std::str::FromStr;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

use crate::backend::{Backend, SealedShare};
use crate::rows::{audit_conflict, audit_seq, convert, count, AuditDbRow, KeyJson, KeyRow};
use crate::{Attestation, AuditRow, EpochEntry, KeyRecord, KeyStatus, StoreError};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

/// Columns that stores made before migrations existed may lack: `(table,
/// column, definition)`, added at open after the migrations ran.
const LEGACY_COLUMNS: [(&str, &str, &str); 6] = [
    ("keys", "policy", "TEXT NOT NULL DEFAULT '{}'"),
    ("keys", "created_by", "TEXT NOT NULL DEFAULT ''"),
    ("keys", "create_jti", "TEXT NOT NULL DEFAULT ''"),
    ("keys", "attestations", "TEXT NOT NULL DEFAULT '[]'"),
    // Aux info stored before two-phase commit existed was committed.
    ("aux_info", "committed", "INTEGER NOT NULL DEFAULT 1"),
    ("aux_info", "evidence", "TEXT NOT NULL DEFAULT ''"),
];

/// SQLite implementation of [`Backend`].
pub struct SqliteBackend {
    pool: SqlitePool,
}

impl SqliteBackend {
    /// Opens (creating if missing) the database at `path` and applies the
    /// migrations.
    ///
    /// # Errors
    /// [`StoreError::Database`] if the file cannot be opened or migrated.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let opts = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(std::time::Duration::from_secs(5));
        let pool = SqlitePoolOptions::new().max_connections(4).connect_with(opts).await?;
        MIGRATOR.run(&pool).await.map_err(|e| StoreError::Database(e.into()))?;
        for (table, column, def) in LEGACY_COLUMNS {
            add_missing_column(&pool, table, column, def).await?;
        }
        Ok(SqliteBackend { pool })
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

/// Adds `column` to `table` unless it has it: the schema of stores made by
/// older versions grows in place.
async fn add_missing_column(pool: &SqlitePool, table: &str, column: &str, def: &str) -> Result<(), StoreError> {
    let have: Vec<String> = sqlx::query_scalar(&format!("SELECT name FROM pragma_table_info('{table}')"))
        .fetch_all(pool)
        .await?;
    if !have.iter().any(|h| h == column) {
        sqlx::raw_sql(&format!("ALTER TABLE {table} ADD COLUMN {column} {def}"))
            .execute(pool)
            .await?;
    }
    Ok(())
}

/// Reads the audit log of the SQLite store at `path` without its master
/// key (the log holds no secrets), read-only, for `sigil audit verify`.
///
/// # Errors
/// The file cannot be opened or holds no audit table.
pub async fn read_audit_log(path: &Path) -> Result<Vec<AuditRow>, StoreError> {
    let opts = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))?.read_only(true);
    let pool = SqlitePoolOptions::new().max_connections(1).connect_with(opts).await?;
    let rows: Vec<AuditDbRow> = sqlx::query_as("SELECT seq, record FROM audit ORDER BY seq")
        .fetch_all(&pool)
        .await?;
    convert(rows)
}

fn unique_violation(e: sqlx::Error, what: String) -> StoreError {
    match e {
        sqlx::Error::Database(d) if d.is_unique_violation() => StoreError::Conflict(what),
        e => StoreError::Database(e),
    }
}

#[async_trait::async_trait]
impl Backend for SqliteBackend {
    fn kind(&self) -> &'static str {
        "sqlite"
    }

    async fn schema_version(&self) -> Result<i64, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM _sqlx_migrations WHERE success")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    async fn get_meta(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(sqlx::query_scalar("SELECT value FROM meta WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?)
    }

    async fn insert_meta(&self, name: &str, value: &[u8]) -> Result<bool, StoreError> {
        let r = sqlx::query("INSERT INTO meta (name, value) VALUES (?, ?) ON CONFLICT(name) DO NOTHING")
            .bind(name)
            .bind(value)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    async fn put_key(&self, key: &KeyRecord, share: Option<SealedShare<'_>>) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        if insert_key(&mut tx, key).await? == 0 {
            return Err(StoreError::Conflict(format!("key {} exists", key.key_id)));
        }
        if let Some(s) = share {
            sqlx::query("INSERT INTO key_shares (key_id, party, epoch, sealed) VALUES (?, ?, ?, ?)")
                .bind(&key.key_id)
                .bind(i64::from(s.party))
                .bind(i64::from(s.epoch))
                .bind(s.sealed)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn put_pending_epoch(
        &self,
        key: &KeyRecord,
        record: &str,
        session: &str,
        party: u16,
        sealed: Option<&[u8]>,
        stale_before: i64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM pending_epochs WHERE key_id = ? AND acked = 0 AND (session = ? OR created_at <= ?)")
            .bind(&key.key_id)
            .bind(session)
            .bind(stale_before)
            .execute(&mut *tx)
            .await?;
        let (kept,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM pending_epochs WHERE key_id = ?")
            .bind(&key.key_id)
            .fetch_one(&mut *tx)
            .await?;
        if kept > 0 {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO pending_epochs (key_id, epoch, party, record, session, sealed, created_at)
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&key.key_id)
        .bind(i64::from(key.epoch))
        .bind(i64::from(party))
        .bind(record)
        .bind(session)
        .bind(sealed)
        .bind(crate::now_unix())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn get_pending_epoch(&self, key_id: &str) -> Result<Option<(u32, String, String)>, StoreError> {
        let row: Option<(i64, String, String)> =
            sqlx::query_as("SELECT epoch, record, session FROM pending_epochs WHERE key_id = ?")
                .bind(key_id)
                .fetch_optional(&self.pool)
                .await?;
        row.map(|(e, r, s)| Ok((crate::rows::epoch_of(e)?, r, s))).transpose()
    }

    async fn set_pending_record(
        &self,
        key_id: &str,
        epoch: u32,
        session: &str,
        record: &str,
    ) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "UPDATE pending_epochs SET record = ?, acked = 1 WHERE key_id = ? AND epoch = ? AND session = ?",
        )
        .bind(record)
        .bind(key_id)
        .bind(i64::from(epoch))
        .bind(session)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() > 0)
    }

    async fn delete_pending_epoch(&self, key_id: &str, epoch: u32, session: &str) -> Result<bool, StoreError> {
        let r = sqlx::query("DELETE FROM pending_epochs WHERE key_id = ? AND epoch = ? AND session = ? AND acked = 0")
            .bind(key_id)
            .bind(i64::from(epoch))
            .bind(session)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    async fn list_pending_epochs(&self, created_before: i64) -> Result<Vec<(String, u32)>, StoreError> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT key_id, epoch FROM pending_epochs WHERE created_at <= ? ORDER BY key_id")
                .bind(created_before)
                .fetch_all(&self.pool)
                .await?;
        rows.into_iter()
            .map(|(k, e)| Ok((k, crate::rows::epoch_of(e)?)))
            .collect()
    }

    async fn activate_epoch(
        &self,
        key: &KeyRecord,
        retired: Option<(&EpochEntry, &str)>,
        party: Option<u16>,
    ) -> Result<bool, StoreError> {
        // IMMEDIATE: the transaction reads before it writes, and a deferred
        // one would fail (SQLITE_BUSY_SNAPSHOT, no busy wait) if another
        // connection wrote in between.
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let current: Option<i64> = sqlx::query_scalar("SELECT epoch FROM keys WHERE key_id = ?")
            .bind(&key.key_id)
            .fetch_optional(&mut *tx)
            .await?;
        if current.is_some_and(|e| e >= i64::from(key.epoch)) {
            return Ok(false);
        }
        // A party of the new epoch must move its pending share in (checked
        // inside the transaction: an abort or a sweep may have come first).
        if let Some(party) = party {
            let pending: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM pending_epochs WHERE key_id = ? AND epoch = ? AND sealed IS NOT NULL AND acked = 1",
            )
            .bind(&key.key_id)
            .bind(i64::from(key.epoch))
            .fetch_one(&mut *tx)
            .await?;
            if pending == 0 || !key.parties.contains(&party) {
                return Ok(false);
            }
        }
        if let Some((r, record)) = retired {
            sqlx::query(
                "INSERT INTO key_epochs (key_id, epoch, threshold, parties, record_hash, started_at, ended_at, record)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            )
            .bind(&key.key_id)
            .bind(i64::from(r.epoch))
            .bind(i64::from(r.threshold))
            .bind(crate::rows::to_json(&r.parties)?)
            .bind(&r.record_hash)
            .bind(r.started_at)
            .bind(r.ended_at)
            .bind(record)
            .execute(&mut *tx)
            .await?;
        }
        for q in [
            "DELETE FROM key_shares WHERE key_id = ?",
            "DELETE FROM keys WHERE key_id = ?",
            "DELETE FROM presignatures WHERE key_id = ?",
        ] {
            sqlx::query(q).bind(&key.key_id).execute(&mut *tx).await?;
        }
        insert_key(&mut tx, key).await?;
        sqlx::query(
            "INSERT INTO key_shares (key_id, party, epoch, sealed)
             SELECT key_id, party, epoch, sealed FROM pending_epochs
             WHERE key_id = ? AND epoch = ? AND sealed IS NOT NULL",
        )
        .bind(&key.key_id)
        .bind(i64::from(key.epoch))
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM pending_epochs WHERE key_id = ?")
            .bind(&key.key_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn set_activations(&self, key_id: &str, epoch: u32, activations: &str) -> Result<bool, StoreError> {
        let r = sqlx::query("UPDATE keys SET activations = ? WHERE key_id = ? AND epoch = ?")
            .bind(activations)
            .bind(key_id)
            .bind(i64::from(epoch))
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    async fn epoch_record(&self, key_id: &str, epoch: u32) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT record FROM key_epochs WHERE key_id = ? AND epoch = ? AND record <> ''")
                .bind(key_id)
                .bind(i64::from(epoch))
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    async fn key_history(&self, key_id: &str) -> Result<Vec<EpochEntry>, StoreError> {
        let rows: Vec<crate::rows::EpochRow> = sqlx::query_as(
            "SELECT epoch, threshold, parties, record_hash, started_at, ended_at FROM key_epochs
             WHERE key_id = ? ORDER BY epoch",
        )
        .bind(key_id)
        .fetch_all(&self.pool)
        .await?;
        convert(rows)
    }

    async fn activate_key(&self, key_id: &str, attestations: &[Attestation]) -> Result<bool, StoreError> {
        let r = sqlx::query("UPDATE keys SET status = 'active', attestations = ? WHERE key_id = ?")
            .bind(crate::rows::to_json(&attestations)?)
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
        let row: Option<KeyRow> = sqlx::query_as("SELECT * FROM keys WHERE key_id = ?")
            .bind(key_id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(KeyRecord::try_from).transpose()
    }

    async fn list_keys(&self) -> Result<Vec<KeyRecord>, StoreError> {
        let rows: Vec<KeyRow> =
            sqlx::query_as("SELECT * FROM keys WHERE status = 'active' ORDER BY created_at, key_id")
                .fetch_all(&self.pool)
                .await?;
        convert(rows)
    }

    async fn list_active_key_ids(&self, after: &str, limit: u32) -> Result<Vec<(String, u32)>, StoreError> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT key_id, epoch FROM keys WHERE key_id > ? AND status = 'active' ORDER BY key_id LIMIT ?",
        )
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(k, e)| Ok((k, crate::rows::epoch_of(e)?)))
            .collect()
    }

    async fn list_pending_keys(&self, created_before: i64) -> Result<Vec<KeyRecord>, StoreError> {
        let rows: Vec<KeyRow> = sqlx::query_as(
            "SELECT * FROM keys WHERE status = 'pending' AND created_at <= ? ORDER BY created_at, key_id",
        )
        .bind(created_before)
        .fetch_all(&self.pool)
        .await?;
        convert(rows)
    }

    async fn get_share(&self, key_id: &str, party: u16, epoch: u32) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT sealed FROM key_shares WHERE key_id = ? AND party = ? AND epoch = ?")
                .bind(key_id)
                .bind(i64::from(party))
                .bind(i64::from(epoch))
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    async fn put_aux_info(&self, party_set: &str, party: u16, sealed: &[u8]) -> Result<(), StoreError> {
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

    async fn get_aux_info(&self, party_set: &str, party: u16, committed: bool) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT sealed FROM aux_info WHERE party_set = ? AND party = ? AND committed = ?")
                .bind(party_set)
                .bind(i64::from(party))
                .bind(i64::from(committed))
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    async fn commit_aux_info(
        &self,
        party_set: &str,
        party: u16,
        sealed: &[u8],
        evidence: &str,
    ) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "UPDATE aux_info SET committed = 1, evidence = ? \
             WHERE party_set = ? AND party = ? AND committed = 0 AND sealed = ?",
        )
        .bind(evidence)
        .bind(party_set)
        .bind(i64::from(party))
        .bind(sealed)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() > 0)
    }

    async fn aux_evidence(&self, party_set: &str, party: u16) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT evidence FROM aux_info WHERE party_set = ? AND party = ? AND committed = 1")
                .bind(party_set)
                .bind(i64::from(party))
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    async fn put_primes(&self, bits: u32, sealed: &[Vec<u8>]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for s in sealed {
            sqlx::query("INSERT INTO primes (bits, sealed) VALUES (?, ?)")
                .bind(i64::from(bits))
                .bind(s)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn put_seeded_primes(&self, bits: u32, items: &[([u8; 32], Vec<u8>)]) -> Result<usize, StoreError> {
        let now = crate::now_unix();
        let mut tx = self.pool.begin().await?;
        let mut added = 0;
        for (hash, sealed) in items {
            let new = sqlx::query(
                "INSERT INTO seeded_primes (hash, imported_at) VALUES (?, ?) ON CONFLICT (hash) DO NOTHING",
            )
            .bind(hash.as_slice())
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected()
                == 1;
            if new {
                sqlx::query("INSERT INTO primes (bits, sealed) VALUES (?, ?)")
                    .bind(i64::from(bits))
                    .bind(sealed)
                    .execute(&mut *tx)
                    .await?;
                added += 1;
            }
        }
        tx.commit().await?;
        Ok(added)
    }

    async fn take_primes(&self, bits: u32, count: usize) -> Result<Option<Vec<Vec<u8>>>, StoreError> {
        // One statement, so the write lock is taken at once (a deferred
        // read-then-write transaction can fail with SQLITE_BUSY under a
        // concurrent writer): all `count` oldest primes or none.
        let limit = i64::try_from(count).map_err(|_| StoreError::Conflict("count too large".into()))?;
        let mut rows: Vec<(i64, Vec<u8>)> = sqlx::query_as(
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
        rows.sort_by_key(|(id, _)| *id);
        Ok(Some(rows.into_iter().map(|(_, s)| s).collect()))
    }

    async fn count_primes(&self, bits: u32) -> Result<usize, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM primes WHERE bits = ?")
            .bind(i64::from(bits))
            .fetch_one(&self.pool)
            .await?;
        Ok(count(n))
    }

    async fn put_presignature(
        &self,
        key_id: &str,
        signer_set: &str,
        party: u16,
        presig_id: &str,
        sealed: &[u8],
    ) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO presignatures (key_id, signer_set, party, presig_id, sealed) VALUES (?, ?, ?, ?, ?)")
            .bind(key_id)
            .bind(signer_set)
            .bind(i64::from(party))
            .bind(presig_id)
            .bind(sealed)
            .execute(&self.pool)
            .await
            .map_err(|e| unique_violation(e, format!("presignature {presig_id} exists")))?;
        Ok(())
    }

    async fn take_presignature(
        &self,
        key_id: &str,
        signer_set: &str,
        party: u16,
        presig_id: Option<&str>,
    ) -> Result<Option<(String, Vec<u8>)>, StoreError> {
        // One statement: read and delete atomically under the write lock.
        Ok(sqlx::query_as(
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
        .await?)
    }

    async fn discard_presignature(&self, party: u16, presig_id: &str) -> Result<bool, StoreError> {
        let r = sqlx::query("DELETE FROM presignatures WHERE party = ? AND presig_id = ?")
            .bind(i64::from(party))
            .bind(presig_id)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    async fn clear_presignatures(&self, party: u16) -> Result<usize, StoreError> {
        let r = sqlx::query("DELETE FROM presignatures WHERE party = ?")
            .bind(i64::from(party))
            .execute(&self.pool)
            .await?;
        Ok(usize::try_from(r.rows_affected()).unwrap_or(usize::MAX))
    }

    async fn count_presignatures(&self, key_id: &str, signer_set: &str) -> Result<usize, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM presignatures WHERE key_id = ? AND signer_set = ?")
            .bind(key_id)
            .bind(signer_set)
            .fetch_one(&self.pool)
            .await?;
        Ok(count(n))
    }

    async fn append_audit(&self, rows: &[AuditRow]) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        // One statement for the whole batch: atomic, and one round trip to
        // SQLite's worker thread however many rows.
        let seqs = rows.iter().map(audit_seq).collect::<Result<Vec<_>, _>>()?;
        let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new("INSERT INTO audit (seq, record) ");
        q.push_values(rows.iter().zip(seqs), |mut b, (r, seq)| {
            b.push_bind(seq).push_bind(r.record.clone());
        });
        q.build()
            .execute(&self.pool)
            .await
            .map_err(|e| unique_violation(e, audit_conflict(rows)))?;
        Ok(())
    }

    async fn audit_after(&self, after: u64, limit: u32) -> Result<Vec<AuditRow>, StoreError> {
        let rows: Vec<AuditDbRow> = sqlx::query_as("SELECT seq, record FROM audit WHERE seq > ? ORDER BY seq LIMIT ?")
            .bind(i64::try_from(after).unwrap_or(i64::MAX))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        convert(rows)
    }

    async fn last_audit(&self) -> Result<Option<AuditRow>, StoreError> {
        let row: Option<AuditDbRow> = sqlx::query_as("SELECT seq, record FROM audit ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&self.pool)
            .await?;
        row.map(AuditRow::try_from).transpose()
    }
}

/// Inserts `key`'s row unless its id exists; the rows inserted (0 or 1).
async fn insert_key(tx: &mut sqlx::SqliteConnection, key: &KeyRecord) -> Result<u64, StoreError> {
    let json = KeyJson::of(key)?;
    let r = sqlx::query(
        "INSERT INTO keys (key_id, scheme, threshold, parties, public_key, public_package, epoch, label, created_at,
                           status, policy, created_by, create_jti, attestations, endorsements, activations)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(key_id) DO NOTHING",
    )
    .bind(&key.key_id)
    .bind(&key.scheme)
    .bind(i64::from(key.threshold))
    .bind(json.parties)
    .bind(&key.public_key)
    .bind(&key.public_package)
    .bind(i64::from(key.epoch))
    .bind(&key.label)
    .bind(key.created_at)
    .bind(key.status.as_str())
    .bind(json.policy)
    .bind(&key.created_by)
    .bind(&key.create_jti)
    .bind(json.attestations)
    .bind(json.endorsements)
    .bind(json.activations)
    .execute(&mut *tx)
    .await?;
    Ok(r.rows_affected())
}
