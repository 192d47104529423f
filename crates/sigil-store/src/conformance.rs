//! The conformance suite every [`Store`] implementation must pass.
//!
//! Call [`run_all`] on a fresh, empty store from the implementation's tests.

use crate::{KeyRecord, KeyStatus, Store, StoreError};

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
        },
        created_by: "alice".into(),
        create_jti: "jti-1".into(),
        attestations: vec![],
    }
}

fn check(cond: bool, what: &str) -> Result<(), StoreError> {
    if cond {
        Ok(())
    } else {
        Err(StoreError::Corrupt(format!("conformance failed: {what}")))
    }
}

/// Runs every conformance check against `store`, which must start empty.
///
/// # Errors
/// The first failing check, as [`StoreError::Corrupt`] with its name, or
/// the store's own error.
pub async fn run_all(store: &dyn Store) -> Result<(), StoreError> {
    // A pending key is stored but not listed.
    store.put_key(&sample_key("a"), 1, Some(b"share-a")).await?;
    check(store.list_keys().await?.is_empty(), "pending keys are not listed")?;
    check(
        store.get_key("a").await?.map(|k| k.status) == Some(KeyStatus::Pending),
        "get pending key",
    )?;

    // Duplicate key ids conflict and change nothing.
    let dup = store.put_key(&sample_key("a"), 1, Some(b"other")).await;
    check(
        matches!(dup, Err(StoreError::Conflict(_))),
        "duplicate key id conflicts",
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
    )?;

    // Activation lists the key with all its fields.
    let att = vec![crate::Attestation {
        node: 1,
        signature: vec![9; 64],
    }];
    check(store.activate_key("a", &att).await?, "activate existing key")?;
    check(!store.activate_key("missing", &att).await?, "activate missing key")?;
    let listed = store.list_keys().await?;
    let mut want = sample_key("a");
    want.status = KeyStatus::Active;
    want.attestations = att;
    check(listed == vec![want], "listed key equals stored key")?;

    // A key without a share (a non-party's registry entry).
    store.put_key(&sample_key("b"), 0, None).await?;
    check(store.get_share("b", 0, 0).await?.is_none(), "key without share")?;

    // Deleting a pending key removes it and its share; active keys stay.
    store.put_key(&sample_key("c"), 1, Some(b"share-c")).await?;
    store.delete_pending_key("c").await?;
    check(store.get_key("c").await?.is_none(), "pending key deleted")?;
    check(store.get_share("c", 1, 0).await?.is_none(), "pending share deleted")?;
    store.delete_pending_key("a").await?;
    check(store.get_key("a").await?.is_some(), "active key is not deleted")?;

    // Pending keys by age: "b" (pending, created at 1_700_000_000) only.
    let pending = store.list_pending_keys(1_700_000_000).await?;
    check(
        pending.iter().map(|k| k.key_id.as_str()).collect::<Vec<_>>() == ["b"],
        "pending keys at or before a time",
    )?;
    check(
        store.list_pending_keys(1_699_999_999).await?.is_empty(),
        "no pending key before its creation",
    )?;

    // Active key ids in pages, sorted, pending ones left out.
    for id in ["e", "d", "f"] {
        store.put_key(&sample_key(id), 1, None).await?;
        store.activate_key(id, &[]).await?;
    }
    check(
        store.list_active_key_ids("", 10).await? == ["a", "d", "e", "f"],
        "all active key ids, sorted",
    )?;
    check(
        store.list_active_key_ids("a", 2).await? == ["d", "e"],
        "a page of active key ids",
    )?;
    check(store.list_active_key_ids("f", 10).await?.is_empty(), "past the last id")?;

    // Aux info per party set: pending until committed, then never replaced.
    store.put_aux_info("0,1,2", 1, b"aux-v0").await?;
    check(
        store.get_aux_info("0,1,2", 1).await?.is_none(),
        "pending aux info is not served",
    )?;
    store.put_aux_info("0,1,2", 1, b"aux-v1").await?;
    let pending = store.get_pending_aux_info("0,1,2", 1).await?;
    check(
        pending.as_deref().map(|s| s.as_slice()) == Some(&b"aux-v1"[..]),
        "pending aux info is replaced by a newer run",
    )?;
    check(store.commit_aux_info("0,1,2", 1).await?, "pending aux info commits")?;
    check(store.commit_aux_info("0,1,2", 1).await?, "commit is idempotent")?;
    check(
        !store.commit_aux_info("0,1", 1).await?,
        "nothing to commit for another set",
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

    // The prime pool hands each prime out once, oldest first, all or none.
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
    check(store.count_primes(1024).await? == 1, "other sizes untouched")?;

    // Presignatures: single use, by id or oldest first, bound to their set.
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
    )?;
    check(!store.discard_presignature(2, "s3").await?, "discard is per party")?;
    check(store.discard_presignature(1, "s3").await?, "discard by id")?;
    check(
        store.count_presignatures("a", "0,2").await? == 0 && !store.discard_presignature(1, "s3").await?,
        "discarded presignature gone",
    )?;

    // The audit log: appended in order, read in pages, never overwritten.
    check(store.last_audit().await?.is_none(), "empty audit log")?;
    let row = |seq: u64| crate::AuditRow {
        seq,
        record: format!("{{\"seq\":{seq}}}"),
    };
    store.append_audit(&[row(1), row(2)]).await?;
    store.append_audit(&[row(3)]).await?;
    check(
        matches!(store.append_audit(&[row(3)]).await, Err(StoreError::Conflict(_))),
        "an audit record is never overwritten",
    )?;
    check(store.last_audit().await? == Some(row(3)), "last audit record")?;
    check(
        store.audit_after(1, 10).await? == vec![row(2), row(3)],
        "audit page after a seq",
    )?;
    check(store.audit_after(0, 1).await? == vec![row(1)], "audit page limit")?;
    Ok(())
}
