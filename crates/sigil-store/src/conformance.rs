//! The conformance suite every [`Backend`](crate::Backend) must pass,
//! through the [`Store`] above it: one check per function, each on a fresh,
//! empty store (openraft's `Suite::test_all` shape), so a failure names the
//! check that failed.
//!
//! Call [`test_all`] from the backend's tests with a function that makes a
//! fresh store.

use std::future::Future;
use std::pin::Pin;

use crate::{AuditRow, KeyRecord, KeyStatus, Store, StoreError};

/// A key record for tests, pending, epoch 0.
pub fn sample_key(key_id: &str) -> KeyRecord {
    KeyRecord {
        key_id: key_id.to_string(),
        scheme: "frost-ed25519".into(),
        threshold: 2,
        parties: vec![0, 1, 2],
        public_key: vec![7; 32],
        public_package: vec![1, 2, 3],
        epoch: 0,
        label: Some("test".into()),
        created_at: 1_700_000_000,
        status: KeyStatus::Pending,
        policy: crate::KeyPolicy {
            sign: vec!["alice".into()],
            decrypt: vec![],
            admin: vec!["alice".into()],
            rotation_interval_s: None,
            ..Default::default()
        },
        created_by: "alice".into(),
        create_jti: "jti-1".into(),
        attestations: vec![],
        endorsements: vec![],
        activations: vec![],
    }
}

fn check(cond: bool, what: &str) -> Result<(), StoreError> {
    if cond {
        Ok(())
    } else {
        Err(StoreError::Corrupt(format!("conformance failed: {what}")))
    }
}

/// A check's future.
type CheckFuture<'a> = Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send + 'a>>;

/// One conformance check: its name and its body.
pub type Check = (&'static str, for<'a> fn(&'a Store) -> CheckFuture<'a>);

macro_rules! checks {
    ($($name:ident),* $(,)?) => {
        /// Every check, by name.
        pub const CHECKS: &[Check] = &[$((stringify!($name), |s| Box::pin($name(s)))),*];
    };
}

checks!(
    schema_is_migrated,
    pending_epoch_waits_beside_active,
    epochs_switch_atomically,
    new_node_activates_and_failed_epoch_is_deleted,
    pending_epochs_are_acknowledged,
    pending_key_is_stored_not_listed,
    duplicate_key_id_conflicts,
    share_is_sealed_and_bound_to_party_and_epoch,
    activate_lists_every_field,
    key_without_share,
    delete_pending_key_only,
    pending_keys_by_age,
    active_key_ids_in_pages,
    aux_info_two_phase,
    aux_commit_needs_the_verified_bytes,
    primes_all_or_none_oldest_first,
    primes_in_one_batch,
    seeded_primes_are_imported_once,
    presignatures_single_use,
    presignature_discard,
    presignatures_cleared_per_party,
    audit_append_and_pages,
);

/// Runs every check, each on a store `fresh` makes (empty, never shared).
///
/// # Errors
/// `"<check>: <error>"` for every failing check (all are run).
pub async fn test_all<F, Fut>(mut fresh: F) -> Result<(), String>
where
    F: FnMut(&'static str) -> Fut,
    Fut: Future<Output = Result<Store, StoreError>>,
{
    let mut failed = Vec::new();
    for (name, run) in CHECKS {
        let r = match fresh(name).await {
            Ok(store) => run(&store).await,
            Err(e) => Err(e),
        };
        if let Err(e) = r {
            failed.push(format!("{name}: {e}"));
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(failed.join("\n"))
    }
}

async fn schema_is_migrated(store: &Store) -> Result<(), StoreError> {
    check(
        store.backend().schema_version().await? >= 1,
        "schema version at least 1",
    )
}

async fn pending_key_is_stored_not_listed(store: &Store) -> Result<(), StoreError> {
    store.put_key(&sample_key("a"), 1, Some(b"share-a")).await?;
    check(store.list_keys().await?.is_empty(), "pending keys are not listed")?;
    check(
        store.get_key("a").await?.map(|k| k.status) == Some(KeyStatus::Pending),
        "get pending key",
    )
}

async fn duplicate_key_id_conflicts(store: &Store) -> Result<(), StoreError> {
    store.put_key(&sample_key("a"), 1, Some(b"share-a")).await?;
    let dup = store.put_key(&sample_key("a"), 1, Some(b"other")).await;
    check(
        matches!(dup, Err(StoreError::Conflict(_))),
        "duplicate key id conflicts",
    )?;
    let share = store.get_share("a", 1, 0).await?;
    check(
        share.as_deref().map(|s| s.as_slice()) == Some(&b"share-a"[..]),
        "the first share is kept",
    )
}

async fn share_is_sealed_and_bound_to_party_and_epoch(store: &Store) -> Result<(), StoreError> {
    store.put_key(&sample_key("a"), 1, Some(b"share-a")).await?;
    let raw = store.backend().get_share("a", 1, 0).await?.unwrap_or_default();
    check(
        !raw.is_empty() && !raw.windows(7).any(|w| w == b"share-a"),
        "the backend holds the share sealed",
    )?;
    let share = store.get_share("a", 1, 0).await?;
    check(
        share.as_deref().map(|s| s.as_slice()) == Some(&b"share-a"[..]),
        "share round trip",
    )?;
    check(
        store.get_share("a", 2, 0).await?.is_none(),
        "share of another party is absent",
    )?;
    check(
        store.get_share("a", 1, 1).await?.is_none(),
        "share of another epoch is absent",
    )
}

async fn activate_lists_every_field(store: &Store) -> Result<(), StoreError> {
    store.put_key(&sample_key("a"), 1, Some(b"share-a")).await?;
    let att = vec![crate::Attestation {
        node: 1,
        signature: vec![9; 64],
    }];
    check(store.activate_key("a", &att).await?, "activate existing key")?;
    check(!store.activate_key("missing", &att).await?, "activate missing key")?;
    let mut want = sample_key("a");
    want.status = KeyStatus::Active;
    want.attestations = att;
    check(
        store.list_keys().await? == vec![want.clone()],
        "listed key equals stored key",
    )?;
    let mut unlabeled = sample_key("b");
    unlabeled.label = None;
    store.put_key(&unlabeled, 0, None).await?;
    check(store.get_key("b").await? == Some(unlabeled), "a key without label")?;
    check(store.get_key("a").await? == Some(want), "get active key")
}

async fn key_without_share(store: &Store) -> Result<(), StoreError> {
    store.put_key(&sample_key("b"), 0, None).await?;
    check(store.get_key("b").await?.is_some(), "key stored")?;
    check(store.get_share("b", 0, 0).await?.is_none(), "key without share")
}

async fn delete_pending_key_only(store: &Store) -> Result<(), StoreError> {
    store.put_key(&sample_key("c"), 1, Some(b"share-c")).await?;
    store.delete_pending_key("c").await?;
    check(store.get_key("c").await?.is_none(), "pending key deleted")?;
    check(store.get_share("c", 1, 0).await?.is_none(), "pending share deleted")?;
    store.put_key(&sample_key("a"), 1, Some(b"share-a")).await?;
    store.activate_key("a", &[]).await?;
    store.delete_pending_key("a").await?;
    check(store.get_key("a").await?.is_some(), "active key is not deleted")?;
    check(
        store.get_share("a", 1, 0).await?.is_some(),
        "active share is not deleted",
    )
}

async fn pending_keys_by_age(store: &Store) -> Result<(), StoreError> {
    store.put_key(&sample_key("b"), 0, None).await?;
    let mut newer = sample_key("n");
    newer.created_at += 10;
    store.put_key(&newer, 0, None).await?;
    store.put_key(&sample_key("a"), 0, None).await?;
    store.activate_key("a", &[]).await?;
    let pending = store.list_pending_keys(1_700_000_000).await?;
    check(
        pending.iter().map(|k| k.key_id.as_str()).collect::<Vec<_>>() == ["b"],
        "pending keys at or before a time",
    )?;
    check(
        store.list_pending_keys(1_699_999_999).await?.is_empty(),
        "no pending key before its creation",
    )
}

async fn active_key_ids_in_pages(store: &Store) -> Result<(), StoreError> {
    for id in ["e", "d", "f", "a", "B"] {
        store.put_key(&sample_key(id), 1, None).await?;
        store.activate_key(id, &[]).await?;
    }
    store.put_key(&sample_key("c"), 1, None).await?;
    let ids = |page: Vec<(String, u32)>| page.into_iter().map(|(k, _)| k).collect::<Vec<_>>();
    check(
        ids(store.list_active_key_ids("", 10).await?) == ["B", "a", "d", "e", "f"],
        "all active key ids, bytewise order, pending left out",
    )?;
    check(
        ids(store.list_active_key_ids("a", 2).await?) == ["d", "e"],
        "a page of active key ids",
    )?;
    check(store.list_active_key_ids("f", 10).await?.is_empty(), "past the last id")
}

async fn aux_info_two_phase(store: &Store) -> Result<(), StoreError> {
    store.put_aux_info("0,1,2", 1, b"aux-v0").await?;
    check(
        store.get_aux_info("0,1,2", 1).await?.is_none(),
        "pending aux info is not served",
    )?;
    store.put_aux_info("0,1,2", 1, b"aux-v1").await?;
    let pending = store.get_pending_aux_info("0,1,2", 1).await?;
    check(
        pending.as_ref().map(|p| p.aux.as_slice()) == Some(&b"aux-v1"[..]),
        "pending aux info is replaced by a newer run",
    )?;
    let Some(pending) = pending else {
        return check(false, "pending aux info");
    };
    check(
        store.aux_evidence("0,1,2", 1).await?.is_none(),
        "no evidence before the commit",
    )?;
    check(
        store.commit_aux_info("0,1,2", 1, &pending, "ev").await?,
        "pending aux info commits",
    )?;
    check(
        store.aux_evidence("0,1,2", 1).await?.as_deref() == Some("ev"),
        "evidence kept",
    )?;
    check(
        matches!(
            store.put_aux_info("0,1,2", 1, b"aux-v2").await,
            Err(StoreError::Conflict(_))
        ),
        "committed aux info is not replaced",
    )?;
    let aux = store.get_aux_info("0,1,2", 1).await?;
    check(
        aux.as_deref().map(|s| s.as_slice()) == Some(&b"aux-v1"[..]),
        "aux info kept",
    )?;
    check(
        store.get_pending_aux_info("0,1,2", 1).await?.is_none(),
        "committed aux info is not pending",
    )?;
    check(
        store.get_aux_info("0,1", 1).await?.is_none(),
        "aux info of another set is absent",
    )?;
    check(
        store.get_aux_info("0,1,2", 2).await?.is_none(),
        "aux info of another party is absent",
    )
}

async fn aux_commit_needs_the_verified_bytes(store: &Store) -> Result<(), StoreError> {
    store.put_aux_info("0,1", 0, b"run-1").await?;
    let Some(first) = store.get_pending_aux_info("0,1", 0).await? else {
        return check(false, "pending aux info");
    };
    store.put_aux_info("0,1", 0, b"run-2").await?;
    check(
        !store.commit_aux_info("0,1", 0, &first, "ev").await?,
        "a replaced pending record is not committed",
    )?;
    check(store.get_aux_info("0,1", 0).await?.is_none(), "nothing committed")?;
    let Some(second) = store.get_pending_aux_info("0,1", 0).await? else {
        return check(false, "second pending aux info");
    };
    check(
        store.commit_aux_info("0,1", 0, &second, "ev").await?,
        "the current one commits",
    )?;
    check(
        !store.commit_aux_info("0,1", 0, &second, "ev").await?,
        "a second commit changes nothing",
    )
}

async fn primes_all_or_none_oldest_first(store: &Store) -> Result<(), StoreError> {
    for p in [&b"p1"[..], b"p2", b"p3"] {
        store.put_prime(1536, p).await?;
    }
    store.put_prime(1024, b"small").await?;
    check(store.count_primes(1536).await? == 3, "three primes pooled")?;
    check(
        store.take_primes(1536, 4).await?.is_none(),
        "not enough primes: none taken",
    )?;
    check(store.count_primes(1536).await? == 3, "a refused take removes nothing")?;
    let two = store.take_primes(1536, 2).await?.unwrap_or_default();
    let two: Vec<&[u8]> = two.iter().map(|p| p.as_slice()).collect();
    check(two == vec![&b"p1"[..], b"p2"], "oldest primes first")?;
    check(store.count_primes(1536).await? == 1, "taken primes are deleted")?;
    check(store.count_primes(1024).await? == 1, "other sizes untouched")
}

async fn primes_in_one_batch(store: &Store) -> Result<(), StoreError> {
    store.put_primes(2048, &[b"q1", b"q2", b"q3"]).await?;
    check(store.count_primes(2048).await? == 3, "a batch of primes")?;
    let all = store.take_primes(2048, 3).await?.unwrap_or_default();
    check(
        all.len() == 3 && all.first().map(|p| p.as_slice()) == Some(&b"q1"[..]),
        "batch order kept",
    )
}

async fn seeded_primes_are_imported_once(store: &Store) -> Result<(), StoreError> {
    check(
        store.import_primes(1536, &[b"s1", b"s2"]).await? == 2,
        "two new primes imported",
    )?;
    check(
        store.import_primes(1536, &[b"s2", b"s3"]).await? == 1,
        "a prime imported before is skipped",
    )?;
    let taken = store.take_primes(1536, 3).await?.unwrap_or_default();
    check(taken.len() == 3, "three primes in the pool")?;
    check(
        store.import_primes(1536, &[b"s1", b"s2", b"s3"]).await? == 0,
        "a used prime is never imported again",
    )?;
    check(store.count_primes(1536).await? == 0, "nothing added")
}

async fn presignatures_cleared_per_party(store: &Store) -> Result<(), StoreError> {
    store.put_presignature("a", "0,1", 1, "s1", b"pre-1").await?;
    store.put_presignature("b", "0,1", 1, "s2", b"pre-2").await?;
    store.put_presignature("a", "0,1", 0, "s1", b"pre-3").await?;
    check(store.clear_presignatures(1).await? == 2, "both of party 1 deleted")?;
    check(store.count_presignatures("a", "0,1").await? == 1, "party 0's kept")?;
    check(store.clear_presignatures(1).await? == 0, "nothing left of party 1")
}

async fn presignatures_single_use(store: &Store) -> Result<(), StoreError> {
    store.put_presignature("a", "0,1", 1, "s1", b"pre-1").await?;
    store.put_presignature("a", "0,1", 1, "s2", b"pre-2").await?;
    store.put_presignature("a", "0,2", 1, "s3", b"pre-3").await?;
    check(
        store.count_presignatures("a", "0,1").await? == 2,
        "two presignatures pooled",
    )?;
    let by_id = store.take_presignature("a", "0,1", 1, Some("s2")).await?;
    check(
        by_id.as_ref().map(|(id, p)| (id.as_str(), p.as_slice())) == Some(("s2", &b"pre-2"[..])),
        "take by id",
    )?;
    check(
        store.take_presignature("a", "0,1", 1, Some("s2")).await?.is_none(),
        "never handed out twice",
    )?;
    let oldest = store.take_presignature("a", "0,1", 1, None).await?;
    check(oldest.map(|(id, _)| id) == Some("s1".to_string()), "oldest first")?;
    check(
        store.take_presignature("a", "0,1", 1, None).await?.is_none(),
        "pool of the set empty",
    )?;
    check(
        store.count_presignatures("a", "0,2").await? == 1,
        "other signer sets untouched",
    )
}

async fn presignature_discard(store: &Store) -> Result<(), StoreError> {
    store.put_presignature("a", "0,2", 1, "s3", b"pre-3").await?;
    check(!store.discard_presignature(2, "s3").await?, "discard is per party")?;
    check(store.discard_presignature(1, "s3").await?, "discard by id")?;
    check(
        store.count_presignatures("a", "0,2").await? == 0 && !store.discard_presignature(1, "s3").await?,
        "discarded presignature gone",
    )
}

async fn audit_append_and_pages(store: &Store) -> Result<(), StoreError> {
    check(store.last_audit().await?.is_none(), "empty audit log")?;
    let row = |seq: u64| AuditRow {
        seq,
        record: format!("{{\"seq\":{seq}}}"),
    };
    store.append_audit(&[row(1), row(2)]).await?;
    store.append_audit(&[row(3)]).await?;
    check(
        matches!(
            store.append_audit(&[row(3), row(4)]).await,
            Err(StoreError::Conflict(_))
        ),
        "an audit record is never overwritten",
    )?;
    check(
        store.last_audit().await? == Some(row(3)),
        "a conflicting batch writes nothing",
    )?;
    check(
        store.audit_after(1, 10).await? == vec![row(2), row(3)],
        "audit page after a seq",
    )?;
    check(store.audit_after(0, 1).await? == vec![row(1)], "audit page limit")
}

/// Key `e1` active at epoch 0 (its share and a presignature stored), and
/// epoch 1 (parties 0 and 3) pending beside it; returns the pending record.
async fn key_with_pending_epoch(store: &Store) -> Result<KeyRecord, StoreError> {
    let mut k = sample_key("e1");
    k.status = KeyStatus::Active;
    store.put_key(&k, 0, Some(b"epoch 0")).await?;
    store.put_presignature("e1", "0,1", 0, "p1", b"presig").await?;
    let mut next = k.clone();
    next.epoch = 1;
    next.parties = vec![0, 3];
    next.status = KeyStatus::Pending;
    check(
        store.put_pending_epoch(&next, "s1", 0, Some(b"epoch 1"), 0).await?,
        "pending stored",
    )?;
    Ok(next)
}

/// A pending epoch waits beside the active one, which still signs; a
/// stale switch (to the active epoch) is refused.
async fn pending_epoch_waits_beside_active(store: &Store) -> Result<(), StoreError> {
    let next = key_with_pending_epoch(store).await?;
    check(
        store.pending_epoch("e1").await? == Some(next.clone()),
        "pending record kept",
    )?;
    check(
        store.get_share("e1", 0, 0).await?.as_deref().map(|s| s.as_slice()) == Some(b"epoch 0"),
        "epoch 0 still signs while 1 is pending",
    )?;
    let mut stale = next;
    stale.epoch = 0;
    check(
        !store.activate_epoch(&stale, None, None).await?,
        "a switch to the same epoch is refused",
    )
}

/// The switch moves the pending share in, deletes the old share, the
/// presignatures and the pending row, and records the history; the
/// activations are stored at the new epoch only; the same switch twice is
/// refused.
async fn epochs_switch_atomically(store: &Store) -> Result<(), StoreError> {
    let mut next = key_with_pending_epoch(store).await?;
    check(
        !store.activate_epoch(&next, None, Some(0)).await?,
        "no switch to an unacknowledged share",
    )?;
    check(store.ack_pending_epoch(&next, "s1").await?, "acknowledged")?;
    next.status = KeyStatus::Active;
    let retired = crate::EpochEntry {
        epoch: 0,
        threshold: 2,
        parties: vec![0, 1, 2],
        record_hash: "ab".into(),
        started_at: 1,
        ended_at: 2,
    };
    let before = store
        .get_key("e1")
        .await?
        .ok_or_else(|| StoreError::Corrupt("no e1".into()))?;
    check(
        store.activate_epoch(&next, Some((&retired, &before)), Some(0)).await?,
        "switch",
    )?;
    check(
        store.epoch_record("e1", 0).await?.as_ref() == Some(&before),
        "the retired epoch's whole record kept",
    )?;
    check(
        store.epoch_record("e1", 1).await?.is_none(),
        "the current epoch is not retired",
    )?;
    check(store.get_key("e1").await?.map(|k| k.epoch) == Some(1), "epoch 1 active")?;
    check(
        store.list_active_key_ids("", 10).await? == [("e1".to_string(), 1)],
        "listed with its epoch",
    )?;
    check(store.get_share("e1", 0, 0).await?.is_none(), "old share deleted")?;
    check(
        store.get_share("e1", 0, 1).await?.as_deref().map(|s| s.as_slice()) == Some(b"epoch 1"),
        "new share moved in",
    )?;
    check(store.pending_epoch("e1").await?.is_none(), "pending row gone")?;
    check(
        store.count_presignatures("e1", "0,1").await? == 0,
        "presignatures of the old epoch gone",
    )?;
    check(store.key_history("e1").await? == vec![retired], "history")?;
    let acks = vec![crate::Attestation {
        node: 0,
        signature: vec![5; 64],
    }];
    check(store.set_activations("e1", 1, &acks).await?, "activations stored")?;
    check(!store.set_activations("e1", 0, &acks).await?, "not at another epoch")?;
    check(
        store.get_key("e1").await?.map(|k| k.activations) == Some(acks),
        "activations read back",
    )?;
    check(
        !store.activate_epoch(&next, None, Some(0)).await?,
        "the same switch twice is refused",
    )
}

/// A node new to the key activates its epoch from nothing (only if it is
/// a party of the record); a failed epoch is deleted with its share.
async fn new_node_activates_and_failed_epoch_is_deleted(store: &Store) -> Result<(), StoreError> {
    let mut fresh = sample_key("e2");
    fresh.epoch = 3;
    fresh.status = KeyStatus::Pending;
    store.put_pending_epoch(&fresh, "s2", 4, Some(b"new here"), 0).await?;
    store.ack_pending_epoch(&fresh, "s2").await?;
    check(
        store.list_pending_epochs(crate::now_unix() - 60).await?.is_empty(),
        "a pending epoch's age counts from when it was stored",
    )?;
    fresh.status = KeyStatus::Active;
    fresh.parties = vec![0, 4];
    check(
        !store.activate_epoch(&fresh, None, Some(5)).await?,
        "a node that is not a party of the record moves nothing in",
    )?;
    check(
        store.activate_epoch(&fresh, None, Some(4)).await?,
        "activate from nothing",
    )?;
    check(store.get_share("e2", 4, 3).await?.is_some(), "share of the new node")?;
    let mut failed = fresh.clone();
    failed.epoch = 4;
    failed.status = KeyStatus::Pending;
    store.put_pending_epoch(&failed, "s3", 4, Some(b"doomed"), 0).await?;
    check(
        store.list_pending_epochs(i64::MAX).await? == vec![("e2".to_string(), 4)],
        "listed",
    )?;
    check(
        !store.delete_pending_epoch("e2", 4, "s4").await?,
        "another session's abort",
    )?;
    check(store.delete_pending_epoch("e2", 4, "s3").await?, "deleted")?;
    check(
        store.pending_epoch("e2").await?.is_none(),
        "nothing of the failed epoch",
    )?;
    check(
        store.get_share("e2", 4, 4).await?.is_none(),
        "no share of the failed epoch",
    )
}

/// An acknowledgement stores the attested record of a pending epoch in
/// place of the session's own (only for that session), keeps the share;
/// an acknowledged epoch is never deleted nor replaced, while an
/// unacknowledged one is replaced by its own session or once stale.
async fn pending_epochs_are_acknowledged(store: &Store) -> Result<(), StoreError> {
    let mut next = sample_key("a1");
    next.epoch = 1;
    store
        .put_pending_epoch(&next, "s1", 2, Some(b"pending share"), 0)
        .await?;
    check(
        !store.put_pending_epoch(&next, "s2", 2, Some(b"other"), 0).await?,
        "a fresh pending epoch of another session is kept",
    )?;
    check(
        store
            .put_pending_epoch(&next, "s1", 2, Some(b"pending share"), 0)
            .await?,
        "its own session replaces it",
    )?;
    let mut attested = next.clone();
    attested.attestations = vec![crate::Attestation {
        node: 2,
        signature: vec![7; 64],
    }];
    let mut other = attested.clone();
    other.epoch = 2;
    check(!store.ack_pending_epoch(&other, "s1").await?, "no pending epoch 2")?;
    check(
        !store.ack_pending_epoch(&attested, "s2").await?,
        "not another session's",
    )?;
    check(store.ack_pending_epoch(&attested, "s1").await?, "acknowledged")?;
    check(
        store.pending_epoch_of("a1").await? == Some((attested.clone(), "s1".to_string())),
        "attested record and session read back",
    )?;
    check(store.get_share("a1", 2, 1).await?.is_none(), "the share stays pending")?;
    check(
        !store.delete_pending_epoch("a1", 1, "s1").await?,
        "never deleted once acknowledged",
    )?;
    check(
        !store.put_pending_epoch(&next, "s1", 2, Some(b"x"), i64::MAX).await?,
        "never replaced once acknowledged, not even stale",
    )?;
    check(
        store.pending_epoch_of("a1").await? == Some((attested, "s1".to_string())),
        "still there",
    )?;
    let mut stale = sample_key("a2");
    stale.epoch = 1;
    store.put_pending_epoch(&stale, "s1", 2, Some(b"old"), 0).await?;
    check(
        store.put_pending_epoch(&stale, "s2", 2, Some(b"new"), i64::MAX).await?,
        "a stale unacknowledged epoch is replaced",
    )?;
    check(
        store.pending_epoch_of("a2").await?.map(|(_, s)| s) == Some("s2".to_string()),
        "by the new session",
    )
}
