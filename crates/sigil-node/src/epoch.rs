//! Key epochs after a reshare session: the two-phase commit that makes
//! the next epoch active, its abort, and the catch-up of epochs whose
//! commit a node missed.

use std::time::Duration;

use sigil_proto::peer::KeyMeta;
use sigil_store::{EpochEntry, KeyRecord, KeyStatus};

use crate::auth::Refusal;
use crate::error::SessionError;
use crate::{attest, internal, now_unix, records, Node};

/// How long a reshare's pending epoch may wait for its commit before the
/// catch-up pass deletes it.
pub const PENDING_EPOCH_TTL: Duration = Duration::from_secs(600);

impl Node {
    /// `FinalizeKey` for a record of a key's next epoch (see the module
    /// table). `Ok(false)`: the record is not an epoch switch here. An
    /// abort (`commit` false) deletes the pending epoch only when it was
    /// made by `session_id` (when given).
    pub(crate) async fn finalize_epoch(
        &self,
        record: &KeyRecord,
        commit: bool,
        from_coordinator: bool,
        session_id: &[u8],
    ) -> Result<bool, SessionError> {
        let local = self.store.get_key(&record.key_id).await.map_err(SessionError::from)?;
        let pending_of = self
            .store
            .pending_epoch_of(&record.key_id)
            .await
            .map_err(SessionError::from)?;
        if !commit {
            return self.abort_epoch(record, pending_of, from_coordinator, session_id).await;
        }
        let forbid = |m: &str| self.refused(Refusal::Forbidden(m.to_string()));
        let pending = pending_of.as_ref();
        let local = match local {
            // One epoch at a time: the record must follow this node's own.
            Some(l) if l.status == KeyStatus::Active && l.epoch.checked_add(1) == Some(record.epoch) => l,
            // Already at a later epoch (another commit, or the catch-up,
            // came first): nothing to do.
            Some(l) if l.status == KeyStatus::Active && l.epoch >= record.epoch && record.epoch > 0 => {
                return self.keep_activations(&l, record).await;
            }
            // A node new to the key: the record its reshare session
            // reshared (see `remember_current`), checked below like a local one.
            None if record.parties.contains(&self.cfg.node_id) => match self.reshared_from_record(record) {
                Some(prev) => prev,
                None => return Ok(false),
            },
            _ => return Ok(false),
        };
        let same_key = local.scheme == record.scheme
            && local.public_key == record.public_key
            && crate::reshare::next_policy(&local.policy, &record.parties) == record.policy
            && local.created_by == record.created_by
            && local.create_jti == record.create_jti;
        if !same_key {
            return Err(forbid("the next epoch's record names another key"));
        }
        // At least t of this node's own committee endorsed exactly this
        // move: fewer than t nodes cannot make it delete its share.
        attest::verify_transition(&local, record, self.identities())
            .map_err(|e| forbid(&format!("epoch {} not endorsed: {e}", record.epoch)))?;
        let known = self.store.get_key(&record.key_id).await.map_err(SessionError::from)?;
        if known.is_none() {
            // Registered only now, endorsed: the node follows this key.
            self.store
                .put_key(&local, self.cfg.node_id, None)
                .await
                .map_err(SessionError::from)?;
        }
        self.take_epoch(record, Some(&local), pending).await
    }

    /// The record a reshare session of `record`'s key reshared here, when
    /// this node was new to the key and it is the epoch before `record`.
    fn reshared_from_record(&self, record: &KeyRecord) -> Option<KeyRecord> {
        self.reshared_from
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&record.key_id)
            .filter(|prev| prev.epoch.checked_add(1) == Some(record.epoch))
            .cloned()
    }

    /// The two phases of an epoch's commit, at one node. With every new
    /// party's activation (phase 2) the node switches: the new share (if
    /// any) becomes the key's and the old one is deleted. Without them
    /// (phase 1) a new party holding the matching pending share
    /// acknowledges it: it stores the attested record with it and from then
    /// on never deletes it (no abort, no sweep) until the epoch completes;
    /// other nodes refuse. So no node deletes an epoch-`e` share before
    /// every new party has promised to keep its epoch-`e + 1` share
    /// (tss-lib's lesson), and a coordinator cannot split the committee by
    /// committing to some parties and aborting the others.
    pub(crate) async fn take_epoch(
        &self,
        record: &KeyRecord,
        local: Option<&KeyRecord>,
        pending: Option<&(KeyRecord, String)>,
    ) -> Result<bool, SessionError> {
        let activated = attest::verify_activations(record, self.identities());
        if activated.is_ok() {
            return self
                .switch_epoch(record, local, pending.map(|(p, _)| p))
                .await
                .map(|()| true);
        }
        if !record.parties.contains(&self.cfg.node_id) {
            let e = activated.err().map(|e| e.to_string()).unwrap_or_default();
            return Err(self.refused(Refusal::Forbidden(format!(
                "epoch {} not confirmed by its committee yet: {e}",
                record.epoch
            ))));
        }
        let mine = self.own_pending(record, pending.map(|(p, _)| p))?;
        if mine.attestations.is_empty() {
            let mut acked = record.clone();
            acked.activations.clear();
            acked.status = KeyStatus::Pending;
            let session = pending.map(|(_, s)| s.as_str()).unwrap_or_default();
            // Bound to the session whose pending record was compared: a
            // pending epoch replaced meanwhile is not acknowledged.
            let stored = self
                .store
                .ack_pending_epoch(&acked, session)
                .await
                .map_err(SessionError::from)?;
            if !stored {
                return Err(self.refused(Refusal::Forbidden(
                    "the pending epoch changed while it was acknowledged".into(),
                )));
            }
            tracing::info!(
                key_id = record.key_id,
                epoch = record.epoch,
                "pending epoch acknowledged"
            );
        }
        Ok(true)
    }

    /// This node's pending record of `record`'s epoch (`pending`), which
    /// must equal `record`: a new party takes up only an epoch it holds
    /// the share of.
    pub(crate) fn own_pending<'a>(
        &self,
        record: &KeyRecord,
        pending: Option<&'a KeyRecord>,
    ) -> Result<&'a KeyRecord, SessionError> {
        pending
            .filter(|p| p.epoch == record.epoch && attest::record_bytes(p) == attest::record_bytes(record))
            .ok_or_else(|| {
                self.refused(Refusal::Forbidden(
                    "this node is a new party but holds no pending share of this record".into(),
                ))
            })
    }

    /// An abort of the reshare that made `record`'s epoch: deletes the
    /// pending epoch (`pending_of`) when the coordinator asks and the
    /// session is the one that made it (`session_id`, when given).
    /// `Ok(false)`: no pending epoch of that number here.
    pub(crate) async fn abort_epoch(
        &self,
        record: &KeyRecord,
        pending_of: Option<(KeyRecord, String)>,
        from_coordinator: bool,
        session_id: &[u8],
    ) -> Result<bool, SessionError> {
        let Some((p, session)) = pending_of.filter(|(p, _)| p.epoch == record.epoch) else {
            return Ok(false);
        };
        if !from_coordinator {
            return Err(self.refused(Refusal::Forbidden("only the reshare's coordinator may abort it".into())));
        }
        if !p.attestations.is_empty() {
            return Err(self.refused(Refusal::Forbidden(
                "an acknowledged epoch is never abandoned; it completes through the catch-up".into(),
            )));
        }
        if !session_id.is_empty() && hex::encode(session_id) != session {
            tracing::info!(
                key_id = p.key_id,
                "reshare abort of an earlier attempt; the pending epoch is kept"
            );
            return Ok(true);
        }
        // Deleted only if still unacknowledged (checked again in the
        // statement itself).
        self.store
            .delete_pending_epoch(&p.key_id, p.epoch, &session)
            .await
            .map_err(SessionError::from)?;
        self.forget_dkg(&p.key_id);
        Ok(true)
    }

    /// A commit of an epoch this node is at already (`local`, another
    /// commit or the catch-up came first): the commit's second phase brings
    /// every party's activation, kept when they verify (peers catching up
    /// need them). `Ok(true)`: `record` is this node's epoch or an earlier one.
    pub(crate) async fn keep_activations(&self, local: &KeyRecord, record: &KeyRecord) -> Result<bool, SessionError> {
        let same = attest::record_bytes(local) == attest::record_bytes(record);
        if same
            && local.activations.is_empty()
            && !record.activations.is_empty()
            && attest::verify_activations(record, self.identities()).is_ok()
        {
            self.store
                .set_activations(&record.key_id, record.epoch, &record.activations)
                .await
                .map_err(SessionError::from)?;
        }
        Ok(same || local.epoch > record.epoch)
    }

    /// Activates the attested `record` of the next epoch (after `local`).
    pub(crate) async fn switch_epoch(
        &self,
        record: &KeyRecord,
        local: Option<&KeyRecord>,
        pending: Option<&KeyRecord>,
    ) -> Result<(), SessionError> {
        if record.parties.contains(&self.cfg.node_id) {
            self.own_pending(record, pending)?;
        }
        let retired = local.map(|l| EpochEntry {
            epoch: l.epoch,
            threshold: l.threshold,
            parties: l.parties.clone(),
            record_hash: attest::record_hash(l),
            started_at: l.created_at,
            ended_at: now_unix(),
        });
        let mut next = record.clone();
        next.status = KeyStatus::Active;
        next.created_at = now_unix();
        let me = self.cfg.node_id;
        let switched = self
            .store
            .activate_epoch(
                &next,
                retired.as_ref().zip(local),
                record.parties.contains(&me).then_some(me),
            )
            .await
            .map_err(SessionError::from)?;
        self.forget_dkg(&record.key_id);
        self.reshared_from
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&record.key_id);
        if !switched {
            // Not an error when another switch (a commit, the catch-up)
            // came first; an error when the store refused this one.
            let now = self.store.get_key(&record.key_id).await.map_err(SessionError::from)?;
            if !now.is_some_and(|k| k.status == KeyStatus::Active && k.epoch >= record.epoch) {
                return Err(internal(format!(
                    "the store refused the switch of key {} to epoch {} (no acknowledged share here)",
                    record.key_id, record.epoch
                )));
            }
        }
        if switched {
            // Replace, not remove: a lookup that read the old record from
            // the store before the switch then finds this entry instead of
            // caching the old one.
            let loaded = crate::family::LoadedKey::new(next).map_err(|e| internal(e.to_string()))?;
            self.keys
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(record.key_id.clone(), std::sync::Arc::new(loaded));
            metrics::counter!("sigil_epoch_switches_total").increment(1);
            tracing::info!(key_id = record.key_id, epoch = record.epoch, "key epoch switched");
        }
        Ok(())
    }

    /// Checks the shape of a key record a peer sent, before any signature
    /// is verified: distinct parties, each a node of this cluster (or a
    /// retired one) or an external party whose client the policy names
    /// (one [`sigil_crypto::relay::EXTERNAL_PARTY`] slot per
    /// `policy.external` entry), and `1 <= t <= n` (so a record with a
    /// million parties costs nothing).
    ///
    /// # Errors
    /// [`SessionError::Invalid`] naming the problem.
    pub(crate) fn check_shape(&self, r: &KeyRecord) -> Result<(), SessionError> {
        // Retired nodes too: a record of an earlier epoch may list them.
        let members = self.members();
        let mut sorted = r.parties.clone();
        sorted.sort_unstable();
        sorted.dedup();
        let external = sigil_crypto::relay::EXTERNAL_PARTY;
        let slots = r.parties.iter().filter(|&&p| p == external).count();
        if sorted.len() != r.parties.len()
            || r.parties.iter().any(|&p| p != external && !members.knows(p))
            || slots != r.policy.external.len()
        {
            return Err(SessionError::Invalid(format!(
                "key {}: parties must be distinct nodes of this cluster",
                r.key_id
            )));
        }
        if r.epoch == u32::MAX {
            return Err(SessionError::Invalid(format!("key {}: epoch out of range", r.key_id)));
        }
        if r.threshold == 0 || usize::from(r.threshold) > r.parties.len() {
            return Err(SessionError::Invalid(format!(
                "key {}: threshold out of range",
                r.key_id
            )));
        }
        Ok(())
    }

    /// Adopts a later epoch of `key_id` (held here at `epoch`) from the
    /// first of `peers` that has one: its attested record goes through the
    /// checks of a commit. Returns whether this node switched. Used when a
    /// signing session meets the switch window of a reshare (the commit
    /// reaches nodes one by one): a participant behind the coordinator, or
    /// a coordinator behind its signers.
    pub(crate) async fn adopt_later_epoch(&self, key_id: &str, epoch: u32, peers: &[u16]) -> bool {
        for &peer in peers.iter().filter(|&&p| p != self.cfg.node_id).take(3) {
            let Ok(Some(meta)) = self.peers.get_key_meta(peer, key_id, Duration::from_millis(500)).await else {
                continue;
            };
            if meta.key_id != key_id || meta.epoch <= epoch {
                continue;
            }
            if let Err(e) = self.commit_from_peer(meta).await {
                tracing::warn!(peer, key_id, error = %e, "a later epoch from a peer was not adopted");
            }
            // Switched by this call or by the commit arriving meanwhile.
            if let Ok(Some(k)) = self.store.get_key(key_id).await {
                if k.epoch > epoch {
                    return true;
                }
            }
        }
        false
    }
}

/// How long an acknowledged epoch waits for its coordinator's second
/// phase before the catch-up pass completes it from here, in sessions
/// (`session_timeout_ms` each): the phase-1 calls take at most one.
pub const ACK_GRACE_SESSIONS: u64 = 2;

/// How long the settling of pending epochs waits for each peer.
const PEER_TIMEOUT: Duration = Duration::from_secs(10);

/// What one pass over the pending epochs did ([`Node::settle_pending_epochs`]).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Settled {
    /// Epochs switched to or acknowledged here.
    pub activated: usize,
    /// Pending epochs deleted (no node took them up).
    pub deleted: usize,
}

impl Node {
    /// Whether this node holds its share of `record`'s epoch: active (the
    /// record is its own) or acknowledged pending.
    ///
    /// # Errors
    /// Storage failures.
    pub(crate) async fn holds_epoch(&self, record: &KeyRecord) -> Result<bool, SessionError> {
        let me = self.cfg.node_id;
        if !record.parties.contains(&me) {
            return Ok(false);
        }
        let bytes = attest::record_bytes(record);
        let active = self.store.get_key(&record.key_id).await.map_err(SessionError::from)?;
        if active.is_some_and(|k| k.status == KeyStatus::Active && attest::record_bytes(&k) == bytes) {
            let share = self.store.get_share(&record.key_id, me, record.epoch).await;
            return Ok(share.map_err(SessionError::from)?.is_some());
        }
        let pending = self
            .store
            .pending_epoch(&record.key_id)
            .await
            .map_err(SessionError::from)?;
        Ok(pending.is_some_and(|p| !p.attestations.is_empty() && attest::record_bytes(&p) == bytes))
    }

    /// This node's acknowledged pending epoch of `key_id`, as `GetKeyMeta`
    /// with `pending` answers it: the attested record, with this node's
    /// own activation.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn acked_epoch_meta(&self, key_id: &str) -> Result<Option<KeyMeta>, SessionError> {
        let pending = self.store.pending_epoch(key_id).await.map_err(SessionError::from)?;
        let Some(mut p) = pending.filter(|p| !p.attestations.is_empty()) else {
            return Ok(None);
        };
        let me = self.cfg.node_id;
        p.activations = vec![attest::attestation(me, attest::sign_activation(&self.identity, &p))];
        Ok(Some(records::meta_of(&p)))
    }

    /// Commits the attested `record` of a key's next epoch from this node.
    /// Phase 1 sends it to every new party, which acknowledges it and
    /// answers with its activation; phase 2, once every activation is in,
    /// sends it with them to every node of the cluster and the committee,
    /// and each switches. Run by the reshare's coordinator, and by any node
    /// completing an acknowledged epoch whose coordinator stopped. Returns
    /// the record with its activations.
    ///
    /// # Errors
    /// `Unavailable` naming the new parties whose activation is missing:
    /// nothing switched; the epoch completes when they are back, and epoch
    /// `e` signs until then.
    pub(crate) async fn commit_epoch(&self, record: &KeyRecord) -> Result<KeyRecord, SessionError> {
        let mut record = record.clone();
        record.status = KeyStatus::Active;
        record.activations = self.acknowledge_committee(&record).await;
        let missing: Vec<u16> = sigil_crypto::relay::node_parties(&record.parties)
            .filter(|n| !record.activations.iter().any(|a| a.node == *n))
            .collect();
        if !missing.is_empty() {
            return Err(SessionError::Unavailable {
                reason: format!(
                    "epoch {} of key {} is acknowledged but not by nodes {missing:?}; it completes when they are back, and epoch {} signs until then",
                    record.epoch,
                    record.key_id,
                    record.epoch.saturating_sub(1)
                ),
                nodes: missing,
            });
        }
        let mut everyone = self.members().ids();
        everyone.extend(
            record
                .parties
                .iter()
                .filter(|n| !everyone.contains(n))
                .copied()
                .collect::<Vec<_>>(),
        );
        self.finalize_everywhere(&everyone, records::meta_of(&record), true, &[])
            .await;
        Ok(record)
    }

    /// Phase 1 of a commit: sends the attested record to every new party
    /// and returns the valid activations they answer with.
    pub(crate) async fn acknowledge_committee(&self, record: &KeyRecord) -> Vec<sigil_store::Attestation> {
        let req = sigil_proto::peer::FinalizeKeyRequest {
            key: Some(records::meta_of(record)),
            commit: true,
            session_id: Vec::new(),
        };
        let calls = sigil_crypto::relay::node_parties(&record.parties).map(|node| {
            let req = req.clone();
            async move {
                let r = if node == self.cfg.node_id {
                    self.finalize_key_acked(None, req).await
                } else {
                    self.peers.finalize_key(node, req, Duration::from_secs(5)).await
                };
                match r {
                    Ok(ack) => Some(attest::attestation(node, ack))
                        .filter(|a| attest::activation_valid(record, a, self.identities())),
                    Err(e) => {
                        tracing::warn!(node, error = %e, "a new party did not activate the epoch");
                        None
                    }
                }
            }
        });
        futures::future::join_all(calls).await.into_iter().flatten().collect()
    }

    /// Settles this node's pending epochs (see [`crate::catch_up`]): an
    /// acknowledged one older than [`ACK_GRACE_SESSIONS`] session timeouts
    /// is committed from here
    /// (`Node::commit_epoch`); an unacknowledged one older than
    /// [`PENDING_EPOCH_TTL`] is taken up from a peer that holds the epoch
    /// (active or acknowledged), or deleted once every other node answers
    /// and none does.
    pub async fn settle_pending_epochs(&self) -> Settled {
        let mut done = Settled::default();
        let now = now_unix();
        let ttl = i64::try_from(PENDING_EPOCH_TTL.as_secs()).unwrap_or(i64::MAX);
        let grace = i64::try_from(self.cfg.session_timeout_ms.saturating_mul(ACK_GRACE_SESSIONS) / 1000)
            .unwrap_or(i64::MAX)
            .max(1);
        let (listed, stale) = match (
            self.store.list_pending_epochs(now.saturating_sub(grace)).await,
            self.store.list_pending_epochs(now.saturating_sub(ttl)).await,
        ) {
            (Ok(l), Ok(s)) => (l, s),
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(error = %e, "catch-up: cannot list pending epochs");
                return done;
            }
        };
        for (key_id, epoch) in listed {
            let (pending, session) = match self.store.pending_epoch_of(&key_id).await {
                Ok(Some((p, s))) if p.epoch == epoch => (p, s),
                _ => continue,
            };
            if !pending.attestations.is_empty() {
                if !self.epoch_commits.ready(&key_id, Duration::from_secs(600)) {
                    continue;
                }
                let r = self.commit_epoch(&pending).await;
                self.epoch_commits.record(&key_id, r.is_ok());
                match r {
                    Ok(_) => done.activated += 1,
                    Err(e) => {
                        tracing::info!(key_id, epoch, error = %e, "catch-up: acknowledged epoch not complete yet")
                    }
                }
            } else if stale.contains(&(key_id.clone(), epoch)) {
                self.settle_unacknowledged(&key_id, epoch, &session, &mut done).await;
            }
        }
        done
    }

    /// An unacknowledged pending epoch past its TTL: a peer holding the key
    /// at that epoch or later brings its record (the commit's checks); a
    /// peer that acknowledged it brings the attested record (this node
    /// acknowledges too); when every other node answers and none does, it
    /// is deleted. An unreachable peer keeps it until a later pass.
    pub(crate) async fn settle_unacknowledged(&self, key_id: &str, epoch: u32, session: &str, done: &mut Settled) {
        for peer in self.members().ids().into_iter().filter(|&p| p != self.cfg.node_id) {
            let meta = match self.peers.get_key_meta(peer, key_id, PEER_TIMEOUT).await {
                Ok(Some(meta)) if meta.epoch >= epoch => Some(meta),
                Ok(_) => match self.peers.get_pending_epoch(peer, key_id, PEER_TIMEOUT).await {
                    Ok(m) => m.filter(|m| m.epoch == epoch).map(|mut m| {
                        m.activations.clear();
                        m
                    }),
                    Err(_) => return,
                },
                Err(_) => return,
            };
            let Some(meta) = meta.filter(|m| m.key_id == key_id) else {
                continue;
            };
            match self.commit_from_peer(meta).await {
                Ok(()) => done.activated += 1,
                Err(e) => tracing::warn!(peer, key_id, error = %e, "catch-up: pending epoch kept"),
            }
            return;
        }
        // Deleted only if still unacknowledged and of the same session
        // (checked again in the statement itself).
        match self.store.delete_pending_epoch(key_id, epoch, session).await {
            Ok(false) => {}
            Ok(true) => {
                tracing::info!(key_id, epoch, "catch-up: deleted a pending epoch no node took up");
                done.deleted += 1;
            }
            Err(e) => tracing::warn!(key_id, error = %e, "catch-up: cannot delete a pending epoch"),
        }
    }
}
