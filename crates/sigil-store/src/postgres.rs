//! The PostgreSQL backend (sqlx, runtime queries). Schema:
//! `migrations/postgres`. Every multi-row change is one transaction; the
//! single-use takes (`take_primes`, `take_presignature`) delete with
//! `DELETE ... RETURNING` over rows locked `FOR UPDATE SKIP LOCKED`, so
//! concurrent takers get disjoint rows and nothing is handed out twice.

use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

use crate::backend::{Backend, SealedShare};
use crate::rows::{audit_conflict, audit_seq, convert, count, to_json, AuditDbRow, KeyJson, KeyRow};
use crate::{Attestation, AuditRow, EpochEntry, KeyRecord, KeyStatus, StoreError};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

/// PostgreSQL implementation of [`Backend`].
pub struct PgBackend {
    pool: PgPool,
}

/// `url` with any password replaced by `***`, for logs and errors.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        Ok(u) => u.to_string(),
        Err(_) => "<unparsable postgres url>".into(),
    }
}

/// Creates database `name` (`[a-z0-9_]`, at most 48 characters) on the
/// server of `server_url` unless it exists, and returns its URL (the
/// server URL with the database path replaced). For `sigil dev`, which
/// gives every node its own database.
///
/// # Errors
/// A bad name or URL, or the server refusing.
pub async fn ensure_database(server_url: &str, name: &str) -> Result<String, StoreError> {
    use sqlx::Connection;
    if name.is_empty()
        || name.len() > 48
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(StoreError::Config(format!(
            "database name {name:?} must be [a-z0-9_]{{1,48}}"
        )));
    }
    let mut url = url::Url::parse(server_url)
        .map_err(|e| StoreError::Config(format!("postgres url {}: {e}", redact_url(server_url))))?;
    let mut conn = sqlx::PgConnection::connect(url.as_str()).await?;
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(name)
        .fetch_one(&mut conn)
        .await?;
    if !exists {
        // The name is checked above; identifiers cannot be bound.
        sqlx::raw_sql(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut conn)
            .await?;
    }
    conn.close().await?;
    url.set_path(name);
    Ok(url.to_string())
}

impl PgBackend {
    /// Connects to `url` with a pool of `pool_size` connections and applies
    /// the migrations. A database that is still starting is not a crash:
    /// the first connection is retried with exponential backoff (100 ms
    /// doubling, at most 5 s apart) for up to `startup` in total.
    ///
    /// # Errors
    /// The last connection or migration error, naming the URL without its
    /// password.
    pub async fn connect(url: &str, pool_size: u32, startup: Duration) -> Result<Self, StoreError> {
        let opts: PgConnectOptions = url
            .parse()
            .map_err(|e| StoreError::Config(format!("postgres url {}: {e}", redact_url(url))))?;
        let deadline = Instant::now() + startup;
        let mut wait = Duration::from_millis(100);
        let pool = loop {
            let attempt = PgPoolOptions::new()
                .max_connections(pool_size.max(1))
                .acquire_timeout(Duration::from_secs(3))
                .connect_with(opts.clone())
                .await;
            match attempt {
                Ok(pool) => break pool,
                Err(e) if Instant::now() + wait < deadline => {
                    tracing::warn!(url = %redact_url(url), error = %e, retry_in_ms = wait.as_millis() as u64, "postgres not reachable yet");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(5));
                }
                Err(e) => {
                    return Err(StoreError::Unavailable(format!(
                        "postgres at {} not reachable after {} s: {e}",
                        redact_url(url),
                        startup.as_secs()
                    )))
                }
            }
        };
        MIGRATOR.run(&pool).await.map_err(|e| StoreError::Database(e.into()))?;
        Ok(PgBackend { pool })
    }
}

fn unique_violation(e: sqlx::Error, what: String) -> StoreError {
    match e {
        sqlx::Error::Database(d) if d.is_unique_violation() => StoreError::Conflict(what),
        e => StoreError::Database(e),
    }
}

#[async_trait::async_trait]
impl Backend for PgBackend {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    async fn schema_version(&self) -> Result<i64, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM _sqlx_migrations WHERE success")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    async fn get_meta(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(sqlx::query_scalar("SELECT value FROM meta WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?)
    }

    async fn insert_meta(&self, name: &str, value: &[u8]) -> Result<bool, StoreError> {
        let r = sqlx::query("INSERT INTO meta (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
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
            sqlx::query("INSERT INTO key_shares (key_id, party, epoch, sealed) VALUES ($1, $2, $3, $4)")
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
        // One writer of a key's pending epoch at a time (READ COMMITTED
        // would let two both find none and the second fail on the key).
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
            .bind(&key.key_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "DELETE FROM pending_epochs WHERE key_id = $1 AND acked = FALSE AND (session = $2 OR created_at <= $3)",
        )
        .bind(&key.key_id)
        .bind(session)
        .bind(stale_before)
        .execute(&mut *tx)
        .await?;
        let (kept,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM pending_epochs WHERE key_id = $1")
            .bind(&key.key_id)
            .fetch_one(&mut *tx)
            .await?;
        if kept > 0 {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO pending_epochs (key_id, epoch, party, record, session, sealed, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
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
            sqlx::query_as("SELECT epoch, record, session FROM pending_epochs WHERE key_id = $1")
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
            "UPDATE pending_epochs SET record = $1, acked = TRUE WHERE key_id = $2 AND epoch = $3 AND session = $4",
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
        let r = sqlx::query(
            "DELETE FROM pending_epochs WHERE key_id = $1 AND epoch = $2 AND session = $3 AND acked = FALSE",
        )
        .bind(key_id)
        .bind(i64::from(epoch))
        .bind(session)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() > 0)
    }

    async fn list_pending_epochs(&self, created_before: i64) -> Result<Vec<(String, u32)>, StoreError> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT key_id, epoch FROM pending_epochs WHERE created_at <= $1 ORDER BY key_id")
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
        let mut tx = self.pool.begin().await?;
        // One switch of a key at a time (READ COMMITTED would let two read
        // the same epoch and the second undo the first).
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
            .bind(&key.key_id)
            .execute(&mut *tx)
            .await?;
        let current: Option<i64> = sqlx::query_scalar("SELECT epoch FROM keys WHERE key_id = $1")
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
                "SELECT COUNT(*) FROM pending_epochs WHERE key_id = $1 AND epoch = $2 AND sealed IS NOT NULL AND acked = TRUE",
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
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
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
            "DELETE FROM key_shares WHERE key_id = $1",
            "DELETE FROM keys WHERE key_id = $1",
            "DELETE FROM presignatures WHERE key_id = $1",
        ] {
            sqlx::query(q).bind(&key.key_id).execute(&mut *tx).await?;
        }
        insert_key(&mut tx, key).await?;
        sqlx::query(
            "INSERT INTO key_shares (key_id, party, epoch, sealed)
             SELECT key_id, party, epoch, sealed FROM pending_epochs
             WHERE key_id = $1 AND epoch = $2 AND sealed IS NOT NULL",
        )
        .bind(&key.key_id)
        .bind(i64::from(key.epoch))
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM pending_epochs WHERE key_id = $1")
            .bind(&key.key_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn set_activations(&self, key_id: &str, epoch: u32, activations: &str) -> Result<bool, StoreError> {
        let r = sqlx::query("UPDATE keys SET activations = $1 WHERE key_id = $2 AND epoch = $3")
            .bind(activations)
            .bind(key_id)
            .bind(i64::from(epoch))
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    async fn epoch_record(&self, key_id: &str, epoch: u32) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT record FROM key_epochs WHERE key_id = $1 AND epoch = $2 AND record <> ''")
                .bind(key_id)
                .bind(i64::from(epoch))
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    async fn key_history(&self, key_id: &str) -> Result<Vec<EpochEntry>, StoreError> {
        let rows: Vec<crate::rows::EpochRow> = sqlx::query_as(
            "SELECT epoch, threshold, parties, record_hash, started_at, ended_at FROM key_epochs
             WHERE key_id = $1 ORDER BY epoch",
        )
        .bind(key_id)
        .fetch_all(&self.pool)
        .await?;
        convert(rows)
    }

    async fn activate_key(&self, key_id: &str, attestations: &[Attestation]) -> Result<bool, StoreError> {
        let r = sqlx::query("UPDATE keys SET status = 'active', attestations = $1 WHERE key_id = $2")
            .bind(to_json(&attestations)?)
            .bind(key_id)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    async fn delete_pending_key(&self, key_id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM keys WHERE key_id = $1 AND status = $2")
            .bind(key_id)
            .bind(KeyStatus::Pending.as_str())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn get_key(&self, key_id: &str) -> Result<Option<KeyRecord>, StoreError> {
        let row: Option<KeyRow> = sqlx::query_as("SELECT * FROM keys WHERE key_id = $1")
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
        // COLLATE "C": bytewise order, as SQLite's, whatever the database's.
        let rows: Vec<(String, i64)> = sqlx::query_as(
            r#"SELECT key_id, epoch FROM keys WHERE key_id COLLATE "C" > $1 AND status = 'active'
               ORDER BY key_id COLLATE "C" LIMIT $2"#,
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
            r#"SELECT * FROM keys WHERE status = 'pending' AND created_at <= $1 ORDER BY created_at, key_id COLLATE "C""#,
        )
        .bind(created_before)
        .fetch_all(&self.pool)
        .await?;
        convert(rows)
    }

    async fn get_share(&self, key_id: &str, party: u16, epoch: u32) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT sealed FROM key_shares WHERE key_id = $1 AND party = $2 AND epoch = $3")
                .bind(key_id)
                .bind(i64::from(party))
                .bind(i64::from(epoch))
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    async fn put_aux_info(&self, party_set: &str, party: u16, sealed: &[u8]) -> Result<(), StoreError> {
        let r = sqlx::query(
            "INSERT INTO aux_info (party_set, party, sealed, committed) VALUES ($1, $2, $3, FALSE) \
             ON CONFLICT (party_set, party) DO UPDATE SET sealed = excluded.sealed WHERE NOT aux_info.committed",
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
            sqlx::query_scalar("SELECT sealed FROM aux_info WHERE party_set = $1 AND party = $2 AND committed = $3")
                .bind(party_set)
                .bind(i64::from(party))
                .bind(committed)
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
            "UPDATE aux_info SET committed = TRUE, evidence = $1 \
             WHERE party_set = $2 AND party = $3 AND NOT committed AND sealed = $4",
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
            sqlx::query_scalar("SELECT evidence FROM aux_info WHERE party_set = $1 AND party = $2 AND committed")
                .bind(party_set)
                .bind(i64::from(party))
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    async fn put_primes(&self, bits: u32, sealed: &[Vec<u8>]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for s in sealed {
            sqlx::query("INSERT INTO primes (bits, sealed) VALUES ($1, $2)")
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
                "INSERT INTO seeded_primes (hash, imported_at) VALUES ($1, $2) ON CONFLICT (hash) DO NOTHING",
            )
            .bind(hash.as_slice())
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected()
                == 1;
            if new {
                sqlx::query("INSERT INTO primes (bits, sealed) VALUES ($1, $2)")
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
        let limit = i64::try_from(count).map_err(|_| StoreError::Conflict("count too large".into()))?;
        let mut tx = self.pool.begin().await?;
        let mut rows: Vec<(i64, Vec<u8>)> = sqlx::query_as(
            "DELETE FROM primes WHERE id IN (
                SELECT id FROM primes WHERE bits = $1 ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED)
             RETURNING id, sealed",
        )
        .bind(i64::from(bits))
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        if rows.len() < count {
            tx.rollback().await?;
            return Ok(None);
        }
        tx.commit().await?;
        rows.sort_by_key(|(id, _)| *id);
        Ok(Some(rows.into_iter().map(|(_, s)| s).collect()))
    }

    async fn count_primes(&self, bits: u32) -> Result<usize, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM primes WHERE bits = $1")
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
        sqlx::query(
            "INSERT INTO presignatures (key_id, signer_set, party, presig_id, sealed) VALUES ($1, $2, $3, $4, $5)",
        )
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
        Ok(sqlx::query_as(
            "DELETE FROM presignatures WHERE seq = (
                SELECT seq FROM presignatures
                 WHERE key_id = $1 AND signer_set = $2 AND party = $3 AND ($4::TEXT IS NULL OR presig_id = $4)
                 ORDER BY seq LIMIT 1 FOR UPDATE SKIP LOCKED)
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
        let r = sqlx::query("DELETE FROM presignatures WHERE party = $1 AND presig_id = $2")
            .bind(i64::from(party))
            .bind(presig_id)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    async fn clear_presignatures(&self, party: u16) -> Result<usize, StoreError> {
        let r = sqlx::query("DELETE FROM presignatures WHERE party = $1")
            .bind(i64::from(party))
            .execute(&self.pool)
            .await?;
        Ok(usize::try_from(r.rows_affected()).unwrap_or(usize::MAX))
    }

    async fn count_presignatures(&self, key_id: &str, signer_set: &str) -> Result<usize, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM presignatures WHERE key_id = $1 AND signer_set = $2")
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
        let seqs = rows.iter().map(audit_seq).collect::<Result<Vec<_>, _>>()?;
        let mut q = sqlx::QueryBuilder::<sqlx::Postgres>::new("INSERT INTO audit (seq, record) ");
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
        let rows: Vec<AuditDbRow> =
            sqlx::query_as("SELECT seq, record FROM audit WHERE seq > $1 ORDER BY seq LIMIT $2")
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
async fn insert_key(tx: &mut sqlx::PgConnection, key: &KeyRecord) -> Result<u64, StoreError> {
    let json = KeyJson::of(key)?;
    let r = sqlx::query(
        "INSERT INTO keys (key_id, scheme, threshold, parties, public_key, public_package, epoch, label, created_at,
                           status, policy, created_by, create_jti, attestations, endorsements, activations)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) ON CONFLICT (key_id) DO NOTHING",
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
