//! Catching up with keys whose `FinalizeKey` this node missed.
//!
//! A key becomes active when its coordinator tells every node
//! (`FinalizeKey`, commit). A node that was down or silent at that moment
//! keeps its share *pending* (a party) or does not know the key at all (not
//! a party), so it can neither sign with it nor coordinate for it. Every
//! [`INTERVAL`], and [`FIRST_DELAY`] after start, each node asks its peers
//! for their active key ids (`ListKeyIds`, paged) and, for each id it does
//! not hold as active, fetches the public metadata (`GetKeyMeta`) and:
//! - holds a pending record with the same public key and package:
//!   activates it (the commit it missed);
//! - holds nothing and is not a party: stores the public metadata, as the
//!   commit would have;
//! - is a party but holds no share, or holds a different public key: logs
//!   a warning and changes nothing (a share cannot be recovered from
//!   peers).
//!
//!
//! A node also catches up **on demand** (`Node::activate_pending`):
//! a request at its door, or a peer's signing proposal, for a key it holds
//! pending asks the peers (the proposal's coordinator) for the attested
//! record at once, instead of answering 404 until the next pass.
//!
//! The same pass catches up with **key epochs** (refresh and reshare,
//! `crate::reshare`): peers list each key with its epoch, and a key held
//! here at an earlier epoch is switched to the peer's attested record (an
//! old party that missed the commit then deletes its old share); a key
//! several epochs behind follows each missed epoch's attested record from
//! the peer's history, checking every transition from its own. Pending
//! epochs older than [`crate::epoch::PENDING_EPOCH_TTL`] are committed
//! from a peer that has them, or deleted once every other node answers
//! that none does.
//!
//! The same pass deletes *stale* pending keys, older than [`PENDING_TTL`]
//! and active on no node: keygens that failed while this node missed the
//! abort (see [`Node::catch_up_keys`]).
//!
//! Only public metadata crosses the wire, over the same mutual TLS as
//! every peer call. A record is accepted only with every party's
//! attestation (see [`crate::attest`]); a pending share is activated only
//! by a record equal to its own pending record.

use std::time::Duration;

use sigil_proto::peer::{KeyMeta, ListKeyIdsRequest};
use sigil_store::{KeyRecord, KeyStatus};

use crate::error::SessionError;
use crate::Node;

/// Time between two catch-up passes.
pub const INTERVAL: Duration = Duration::from_secs(30);

/// Delay of the first pass after start.
pub const FIRST_DELAY: Duration = Duration::from_secs(2);

/// Ids per `ListKeyIds` page, and the most a peer returns.
pub const PAGE: u32 = 10_000;

/// An on-demand catch-up of one key is tried at most once in this time.
pub const ON_DEMAND_RETRY: Duration = Duration::from_secs(5);

/// Keys with a recent on-demand attempt remembered (beyond it, no more
/// on-demand attempts until old ones expire).
const ON_DEMAND_ENTRIES: usize = 1024;

/// Deadline of one `ListKeyIds` or `GetKeyMeta` call.
const PEER_TIMEOUT: Duration = Duration::from_secs(10);

/// What a catch-up pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CatchUp {
    /// Pending shares activated.
    pub activated: usize,
    /// Keys of other parties registered (metadata only).
    pub registered: usize,
    /// Stale pending keys deleted (aborted keygens whose abort was missed).
    pub deleted: usize,
}

/// Age after which a pending key is stale: far beyond any keygen's budget
/// (10 minutes for Paillier) and its commit or abort, which follow at once.
pub const PENDING_TTL: Duration = Duration::from_secs(3600);

impl Node {
    /// Ids of the active keys held here with their epochs, sorted by id,
    /// strictly after `after`, at most `limit` (0 or above [`PAGE`]:
    /// [`PAGE`]).
    ///
    /// # Errors
    /// Storage failures.
    pub async fn active_key_ids(&self, after: &str, limit: u32) -> Result<Vec<(String, u32)>, SessionError> {
        let limit = if limit == 0 || limit > PAGE { PAGE } else { limit };
        self.store
            .list_active_key_ids(after, limit)
            .await
            .map_err(SessionError::from)
    }

    /// The public metadata of the active key `key_id`, if held here.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn active_key_meta(&self, key_id: &str) -> Result<Option<KeyMeta>, SessionError> {
        Ok(self
            .store
            .get_key(key_id)
            .await
            .map_err(SessionError::from)?
            .filter(|k| k.status == KeyStatus::Active)
            .map(|k| crate::records::meta_of(&k)))
    }

    /// The whole attested record of `key_id` at `epoch`: the active one
    /// at that epoch, or the retired one from the history.
    pub async fn epoch_meta(&self, key_id: &str, epoch: u32) -> Result<Option<KeyMeta>, SessionError> {
        if let Some(k) = self.store.get_key(key_id).await.map_err(SessionError::from)? {
            if k.status == KeyStatus::Active && k.epoch == epoch {
                return Ok(Some(crate::records::meta_of(&k)));
            }
        }
        Ok(self
            .store
            .epoch_record(key_id, epoch)
            .await
            .map_err(SessionError::from)?
            .map(|k| crate::records::meta_of(&k)))
    }

    /// One catch-up pass over every reachable peer (see the module docs),
    /// then over this node's stale pending keys. Unreachable peers are
    /// skipped until the next pass.
    pub async fn catch_up_keys(&self) -> CatchUp {
        let mut done = CatchUp::default();
        for peer in self.members().ids() {
            if peer == self.cfg.node_id {
                continue;
            }
            let mut after = String::new();
            loop {
                let req = ListKeyIdsRequest {
                    after: after.clone(),
                    limit: PAGE,
                };
                let ids = match self.peers.list_key_ids(peer, req, PEER_TIMEOUT).await {
                    Ok(ids) => ids,
                    Err(e) => {
                        tracing::debug!(peer, error = %e, "catch-up: peer not reachable");
                        break;
                    }
                };
                for (id, epoch) in &ids {
                    if let Err(e) = self.catch_up_key(peer, id, *epoch, &mut done, PEER_TIMEOUT).await {
                        tracing::warn!(peer, key_id = %id, error = %e, "catch-up: key skipped");
                    }
                }
                match ids.last().map(|(id, _)| id) {
                    Some(last) if ids.len() == PAGE as usize && last.as_str() > after.as_str() => {
                        after = last.clone();
                    }
                    _ => break,
                }
            }
        }
        self.collect_stale_pending(&mut done).await;
        let settled = self.settle_pending_epochs().await;
        done.activated += settled.activated;
        done.deleted += settled.deleted;
        if done != CatchUp::default() {
            tracing::info!(
                activated = done.activated,
                registered = done.registered,
                deleted = done.deleted,
                "caught up with keys finalized while this node was away"
            );
        }
        done
    }

    /// Deletes the pending keys older than [`PENDING_TTL`] that no node
    /// holds as active: keygens that failed, whose abort (`FinalizeKey`,
    /// commit = false) this node missed. A key is deleted only when *every*
    /// other node answers that it holds no such active key; one unreachable
    /// node, or one that holds it active (then the listing pass activates
    /// it here), keeps it until a later pass. The commit of a key comes
    /// from its coordinator right after the keygen, so past the TTL none
    /// can still arrive.
    async fn collect_stale_pending(&self, done: &mut CatchUp) {
        let ttl = i64::try_from(PENDING_TTL.as_secs()).unwrap_or(i64::MAX);
        let stale = match self
            .store
            .list_pending_keys(crate::now_unix().saturating_sub(ttl))
            .await
        {
            Ok(keys) => keys,
            Err(e) => {
                tracing::warn!(error = %e, "catch-up: cannot list pending keys");
                return;
            }
        };
        'keys: for key in stale {
            for peer in self.members().ids() {
                if peer == self.cfg.node_id {
                    continue;
                }
                match self.peers.get_key_meta(peer, &key.key_id, PEER_TIMEOUT).await {
                    Ok(None) => {}
                    Ok(Some(_)) => continue 'keys,
                    Err(e) => {
                        tracing::debug!(peer, key_id = %key.key_id, error = %e,
                            "catch-up: stale pending key kept, peer not reachable");
                        continue 'keys;
                    }
                }
            }
            match self.store.delete_pending_key(&key.key_id).await {
                Ok(()) => {
                    tracing::info!(
                        key_id = %key.key_id,
                        created_at = key.created_at,
                        "catch-up: deleted a stale pending key that no node holds as active"
                    );
                    done.deleted += 1;
                }
                Err(e) => {
                    tracing::warn!(key_id = %key.key_id, error = %e, "catch-up: cannot delete a stale pending key")
                }
            }
        }
    }

    /// Activates `key_id` when this node holds it *pending* (it missed the
    /// commit), from the attested record of the first of `peers` that
    /// has it active, each asked within `timeout`. Returns whether it did.
    ///
    /// Only for a pending record whose policy lets `client` use the key
    /// (the caller checked the client's token), at most once per
    /// [`ON_DEMAND_RETRY`] per key: a client cannot make the node call its
    /// peers for ids it may not use, nor in a loop. Keys this node does
    /// not hold pending are left to the periodic pass.
    pub(crate) async fn activate_pending(&self, key_id: &str, client: &str, peers: &[u16], timeout: Duration) -> bool {
        let allowed = |k: &KeyRecord| {
            k.status == KeyStatus::Pending
                && (k.policy.sign.iter().any(|c| c == client) || k.policy.decrypt.iter().any(|c| c == client))
        };
        if !matches!(self.store.get_key(key_id).await, Ok(Some(k)) if allowed(&k)) {
            return false;
        }
        {
            let mut tried = self.catch_up_tried.lock().unwrap_or_else(|p| p.into_inner());
            let now = tokio::time::Instant::now();
            if tried
                .get(key_id)
                .is_some_and(|t| now.duration_since(*t) < ON_DEMAND_RETRY)
            {
                return false;
            }
            if tried.len() >= ON_DEMAND_ENTRIES {
                tried.retain(|_, t| now.duration_since(*t) < ON_DEMAND_RETRY);
                if tried.len() >= ON_DEMAND_ENTRIES {
                    return false;
                }
            }
            tried.insert(key_id.to_string(), now);
        }
        let mut done = CatchUp::default();
        for &peer in peers.iter().filter(|&&p| p != self.cfg.node_id) {
            match self.catch_up_key(peer, key_id, 0, &mut done, timeout).await {
                Ok(()) => return true,
                Err(e) => tracing::debug!(peer, key_id, error = %e, "on-demand catch-up: not from this peer"),
            }
        }
        false
    }

    /// Catches up with `peer`'s active key `key_id`, which it lists at
    /// `epoch`: a key this node holds pending, does not know, or holds at
    /// an earlier epoch (a reshare's commit it missed; the attested record
    /// of the later epoch then replaces its own, see `crate::reshare`).
    async fn catch_up_key(
        &self,
        peer: u16,
        key_id: &str,
        epoch: u32,
        done: &mut CatchUp,
        timeout: Duration,
    ) -> Result<(), SessionError> {
        let local = self.store.get_key(key_id).await.map_err(SessionError::from)?;
        if local
            .as_ref()
            .is_some_and(|k| k.status == KeyStatus::Active && k.epoch >= epoch)
        {
            return Ok(());
        }
        if let Some(held) = local
            .as_ref()
            .filter(|k| k.status == KeyStatus::Active)
            .map(|k| k.epoch)
        {
            self.catch_up_missed_epochs(peer, key_id, held, epoch, done, timeout)
                .await?;
        }
        let meta = self
            .peers
            .get_key_meta(peer, key_id, timeout)
            .await?
            .ok_or_else(|| SessionError::Unavailable {
                nodes: vec![peer],
                reason: format!("node {peer} no longer lists key {key_id} as active"),
            })?;
        if meta.key_id != key_id {
            return Err(SessionError::Invalid(format!("peer {peer} answered for another key")));
        }
        let external = u32::from(sigil_crypto::relay::EXTERNAL_PARTY);
        if local.is_none() && meta.parties.contains(&external) {
            // Kept by its node parties only (see `Node::finalize_key`).
            return Ok(());
        }
        // The same checks as a commit: every party's attestation, a pending
        // record here equal to it, never a party without a share.
        let pending = local.is_some();
        self.commit_from_peer(meta).await?;
        if pending {
            tracing::info!(
                key_id,
                peer,
                "catch-up: activated a pending share whose commit was missed"
            );
            done.activated += 1;
        } else {
            tracing::info!(key_id, peer, "catch-up: registered a key of other parties");
            done.registered += 1;
        }
        Ok(())
    }
}

impl Node {
    /// Takes a record a peer answered with through this node's own checks
    /// of a commit (`Node::finalize_key` with no caller): every party's
    /// attestation, and for a later epoch the endorsements and activations.
    pub(crate) async fn commit_from_peer(&self, meta: KeyMeta) -> Result<(), SessionError> {
        let r = sigil_proto::peer::FinalizeKeyRequest {
            key: Some(meta),
            commit: true,
            session_id: Vec::new(),
        };
        self.finalize_key(None, r).await
    }

    /// A key held here at epoch `held` that `peer` lists at `epoch`, more
    /// than one later: the attested record of each epoch in between, from
    /// the peer's history, one switch at a time, each with the checks of a
    /// commit (at least `t` endorsements from the committee of the epoch
    /// this node holds, every new party's attestation and activation). So
    /// a node that missed several reshares follows the chain from its own
    /// record and deletes its old share only on evidence it checked.
    ///
    /// # Errors
    /// A peer without the record of an epoch in between (retired before
    /// records were kept), or a record this node refuses.
    async fn catch_up_missed_epochs(
        &self,
        peer: u16,
        key_id: &str,
        held: u32,
        epoch: u32,
        done: &mut CatchUp,
        timeout: Duration,
    ) -> Result<(), SessionError> {
        for e in held.saturating_add(1)..epoch {
            let meta = self
                .peers
                .get_epoch_record(peer, key_id, e, timeout)
                .await?
                .filter(|m| m.key_id == key_id && m.epoch == e)
                .ok_or_else(|| SessionError::Unavailable {
                    nodes: vec![peer],
                    reason: format!("node {peer} has no record of epoch {e} of key {key_id}"),
                })?;
            self.commit_from_peer(meta).await?;
            tracing::info!(key_id, peer, epoch = e, "catch-up: followed a missed epoch");
            done.activated += 1;
        }
        Ok(())
    }
}

/// Runs [`Node::catch_up_keys`] after [`FIRST_DELAY`], then every [`INTERVAL`].
pub async fn run(node: std::sync::Arc<Node>) {
    tokio::time::sleep(FIRST_DELAY).await;
    loop {
        node.catch_up_keys().await;
        tokio::time::sleep(INTERVAL).await;
    }
}
