//! The tamper-evident audit log: one record for each operation a node
//! coordinates or takes part in, and for each refusal.
//!
//! A record ([`AuditRecord`]) carries `seq` (from 1, no gaps), the time,
//! the node, the client and its token's `jti`, the operation, the key id,
//! the SHA-256 of the message (never the message), the session id, the
//! outcome, the previous record's hash and its own: `hash` = hex SHA-256
//! of the record's JSON with `hash` set to `""` (fields in declaration
//! order); the first record's `prev_hash` is 64 zeros. Editing, removing
//! or reordering a record breaks the chain at that record
//! ([`verify_chain`], `sigil audit verify`). No secrets and no message
//! bytes are logged.
//!
//! Records are appended by one writer task in batches: after the first
//! record of a batch it waits [`LINGER`] (50 ms) for more, then writes the
//! batch in one statement (one fsync per batch, not per record). A record
//! is durable once its batch commits, up to about 50 ms after the
//! operation (a crash loses at most that window); `time_ms` is stamped
//! when the batch is written. The queue is bounded ([`QUEUE`]): when full,
//! callers wait.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::Digest;
use sigil_store::{AuditRow, Store};
use tokio::sync::mpsc;

/// Records waiting for the writer, at most.
pub const QUEUE: usize = 65_536;
/// Records per batch, at most.
const BATCH: usize = 1024;
/// How long the writer waits for more records after the first of a batch:
/// one transaction (one fsync) per this interval at most, instead of one
/// per record under load. Records are visible in `GET /v1/audit` after it.
pub const LINGER: std::time::Duration = std::time::Duration::from_millis(50);
/// `prev_hash` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One audit record (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditRecord {
    /// Sequence number, from 1.
    pub seq: u64,
    /// Time, milliseconds since the Unix epoch.
    pub time_ms: i64,
    /// The node that wrote it.
    pub node: u16,
    /// `door` (a REST request), `coordinator` or `participant`.
    pub role: String,
    /// Client id (empty for background sessions and unauthenticated calls).
    pub client: String,
    /// The token's `jti` (empty if none).
    pub jti: String,
    /// `create_key`, `sign`, `decrypt`, `presign`, `aux_info`,
    /// `finalize_key`, `read`, ...
    pub operation: String,
    /// Key id (empty if none).
    pub key_id: String,
    /// Hex SHA-256 of the message or ciphertext (empty if none).
    pub message_sha256: String,
    /// Hex session id (empty if none).
    pub session_id: String,
    /// `ok`, `refused:<reason>` or `failed:<code>`.
    pub outcome: String,
    /// The previous record's `hash`.
    pub prev_hash: String,
    /// This record's hash.
    pub hash: String,
}

impl AuditRecord {
    /// The hash this record must carry.
    pub fn compute_hash(&self) -> String {
        let mut r = self.clone();
        r.hash = String::new();
        hex::encode(sha2::Sha256::digest(serde_json::to_vec(&r).unwrap_or_default()))
    }
}

/// What a caller records; the writer adds seq, time, node and the hashes.
#[derive(Debug, Clone, Default)]
pub struct Entry {
    /// See [`AuditRecord::role`].
    pub role: &'static str,
    /// Client id.
    pub client: String,
    /// Token `jti`.
    pub jti: String,
    /// See [`AuditRecord::operation`].
    pub operation: &'static str,
    /// Key id.
    pub key_id: String,
    /// Hex SHA-256 of the message.
    pub message_sha256: String,
    /// Hex session id.
    pub session_id: String,
    /// See [`AuditRecord::outcome`].
    pub outcome: String,
}

/// Hex SHA-256 of a message, for [`Entry::message_sha256`].
pub fn message_hash(m: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(m))
}

/// The handle callers append through.
#[derive(Clone)]
pub struct AuditLog {
    tx: mpsc::Sender<Entry>,
}

impl AuditLog {
    /// Continues the chain in `store` and starts the writer task.
    ///
    /// # Errors
    /// The last record does not parse, or the store fails.
    pub async fn open(store: Arc<Store>, node: u16) -> anyhow::Result<Self> {
        let (seq, prev) = match store.last_audit().await? {
            Some(row) => {
                let r: AuditRecord =
                    serde_json::from_str(&row.record).map_err(|e| anyhow::anyhow!("last audit record: {e}"))?;
                (row.seq, r.hash)
            }
            None => (0, GENESIS.to_string()),
        };
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(writer(store, node, seq, prev, rx));
        Ok(AuditLog { tx })
    }

    /// Appends `e` (waits while the queue is full).
    pub async fn record(&self, e: Entry) {
        metrics::counter!("sigil_audit_records_total", "outcome" => outcome_label(&e.outcome)).increment(1);
        if self.tx.send(e).await.is_err() {
            tracing::error!("audit writer stopped; record lost");
        }
    }
}

fn outcome_label(outcome: &str) -> &'static str {
    match outcome.split(':').next() {
        Some("ok") => "ok",
        Some("refused") => "refused",
        _ => "failed",
    }
}

async fn writer(store: Arc<Store>, node: u16, mut seq: u64, mut prev: String, mut rx: mpsc::Receiver<Entry>) {
    let mut batch = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        if batch.len() < BATCH {
            tokio::time::sleep(LINGER).await;
            while batch.len() < BATCH {
                match rx.try_recv() {
                    Ok(e) => batch.push(e),
                    Err(_) => break,
                }
            }
        }
        let mut rows = Vec::with_capacity(batch.len());
        let (seq0, prev0) = (seq, prev.clone());
        for e in batch.drain(..) {
            seq += 1;
            let mut r = AuditRecord {
                seq,
                time_ms: now_ms(),
                node,
                role: e.role.into(),
                client: e.client,
                jti: e.jti,
                operation: e.operation.into(),
                key_id: e.key_id,
                message_sha256: e.message_sha256,
                session_id: e.session_id,
                outcome: e.outcome,
                prev_hash: prev,
                hash: String::new(),
            };
            r.hash = r.compute_hash();
            prev = r.hash.clone();
            rows.push(AuditRow {
                seq,
                record: serde_json::to_string(&r).unwrap_or_default(),
            });
        }
        let mut delay = std::time::Duration::from_millis(50);
        while let Err(e) = store.append_audit(&rows).await {
            if matches!(e, sigil_store::StoreError::Conflict(_)) {
                // Someone else wrote these seqs: continue after the real last one.
                tracing::error!(error = %e, "audit log conflict; records of this batch are lost");
                (seq, prev) = (seq0, prev0);
                break;
            }
            tracing::error!(error = %e, "cannot append to the audit log; retrying");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(std::time::Duration::from_secs(5));
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Where a chain breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit chain broken at seq {seq}: {reason}")]
pub struct BrokenLink {
    /// The first record that does not fit.
    pub seq: u64,
    /// Why.
    pub reason: String,
}

/// Checks a chain of records given as JSON texts, in order, starting at
/// seq 1 (or after `start`'s record when continuing a page). Returns the
/// number of records checked.
///
/// # Errors
/// The first [`BrokenLink`].
pub fn verify_chain<'a>(records: impl IntoIterator<Item = &'a str>) -> Result<u64, BrokenLink> {
    let mut prev = GENESIS.to_string();
    let mut expected = 1u64;
    for text in records {
        let r: AuditRecord = serde_json::from_str(text).map_err(|e| BrokenLink {
            seq: expected,
            reason: format!("record does not parse: {e}"),
        })?;
        let broken = |reason: String| BrokenLink { seq: r.seq, reason };
        if r.seq != expected {
            return Err(broken(format!("expected seq {expected}")));
        }
        if r.prev_hash != prev {
            return Err(broken("prev_hash is not the previous record's hash".into()));
        }
        if r.hash != r.compute_hash() {
            return Err(broken("hash does not match the record's contents".into()));
        }
        prev = r.hash;
        expected += 1;
    }
    Ok(expected - 1)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_chain_survives_a_reopen_and_edits_break_it() {
        let dir = tempfile::tempdir().unwrap();
        let mk = sigil_store::MasterKey::generate();
        let path = dir.path().join("n.db");
        let store: Arc<Store> = Arc::new(sigil_store::open_sqlite(&path, &mk).await.unwrap());
        let log = AuditLog::open(store.clone(), 3).await.unwrap();
        for k in 0..5 {
            log.record(Entry {
                role: "door",
                operation: "sign",
                key_id: format!("k{k}"),
                outcome: "ok".into(),
                ..Default::default()
            })
            .await;
        }
        let wait = |n: usize| {
            let store = store.clone();
            async move {
                for _ in 0..200 {
                    if store.audit_after(0, 100).await.unwrap().len() >= n {
                        break;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            }
        };
        wait(5).await;
        // Reopened, the chain continues.
        let log2 = AuditLog::open(store.clone(), 3).await.unwrap();
        log2.record(Entry {
            operation: "decrypt",
            outcome: "refused:forbidden".into(),
            ..Default::default()
        })
        .await;
        wait(6).await;
        let rows = store.audit_after(0, 100).await.unwrap();
        let texts: Vec<String> = rows.iter().map(|r| r.record.clone()).collect();
        assert_eq!(verify_chain(texts.iter().map(String::as_str)), Ok(6));
        // Edit one field of record 3: the chain breaks there.
        let mut edited = texts.clone();
        edited[2] = edited[2].replace("\"k2\"", "\"k9\"");
        assert_eq!(verify_chain(edited.iter().map(String::as_str)).unwrap_err().seq, 3);
        // Drop record 2: the chain breaks at the gap.
        let mut dropped = texts.clone();
        dropped.remove(1);
        assert_eq!(verify_chain(dropped.iter().map(String::as_str)).unwrap_err().seq, 3);
    }
}
