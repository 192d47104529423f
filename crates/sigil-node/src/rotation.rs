//! Automatic key rotation: a key whose policy names a rotation interval
//! (`"rotate": true` at creation, `[rotation] interval_s` of the cluster,
//! default 24 h) is refreshed (a reshare to the same committee and
//! threshold, `crate::reshare`) when its epoch is that old. Proactive
//! security: shares stolen over time from different epochs never combine.
//!
//! - **Who coordinates.** The key's lowest party that this node does not
//!   hold for down (each node decides for itself from its own view; two
//!   nodes that both think they are lowest run two attempts, and the second
//!   finds the first's pending epoch: `Busy`, never two epochs).
//! - **When.** When the epoch is `interval` old plus a jitter of up to a
//!   twentieth of it (from the key id and epoch, so coordinators of many
//!   keys do not start together); after a failure, again after a backoff
//!   that doubles from 30 s up to the interval.
//! - **Signing is never blocked:** epoch `e` signs until the switch.
//!
//! | peer call | who may send it | what the receiver verifies |
//! |---|---|---|
//! | `RunSession` reshare without a client token | a party of the key | the key's attested record (as any reshare) names a rotation interval; the proposal keeps the committee and threshold; this node's own record of the epoch is at least the interval old, less a tenth of it or 2 s, whichever is more (clock skew; each node dates its epoch from its own switch); intervals below `[rotation] min_interval_s` count as that |
//!
//! Visible as `sigil_rotations_total{outcome}` in `/metrics` and as
//! `rotate` entries in the audit log.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::Digest;
use sigil_proto::peer::ReshareProposal;
use sigil_store::{KeyRecord, KeyStatus};

use crate::auth::Refusal;
use crate::error::SessionError;
use crate::family::LoadedKey;
use crate::{audit, now_unix, Node};

/// The first wait after a failed rotation; it doubles up to the interval.
const FIRST_BACKOFF: Duration = Duration::from_secs(30);

/// Keys listed per page while looking for keys due.
const PAGE: u32 = 500;

/// Failed attempts per key (rotations, or completions of acknowledged
/// epochs): attempts so far and when the last one ended.
#[derive(Default)]
pub struct Backoff(std::sync::Mutex<HashMap<String, (u32, Instant)>>);

impl Backoff {
    /// Whether `key_id` may be tried again (its backoff, capped at
    /// `interval`, has passed).
    pub(crate) fn ready(&self, key_id: &str, interval: Duration) -> bool {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.get(key_id).is_none_or(|(n, at)| {
            let wait = FIRST_BACKOFF.saturating_mul(1 << (*n).min(16)).min(interval);
            at.elapsed() >= wait
        })
    }

    /// Records the outcome of a rotation of `key_id`.
    pub(crate) fn record(&self, key_id: &str, ok: bool) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if ok {
            map.remove(key_id);
        } else {
            let n = map.get(key_id).map_or(0, |(n, _)| n + 1);
            map.insert(key_id.to_string(), (n, Instant::now()));
        }
    }
}

/// Seconds after `interval` a key's rotation waits: up to a twentieth of
/// it, from the key id and epoch.
fn jitter(key: &KeyRecord, interval: u64) -> u64 {
    let h = sha2::Sha256::digest(format!("{}/{}", key.key_id, key.epoch));
    let x = h.get(..8).and_then(|b| b.try_into().ok()).map_or(0, u64::from_be_bytes);
    x % (interval / 20 + 1)
}

impl Node {
    /// Refreshes every key this node coordinates the rotation of that is
    /// due (see the module docs), one after the other. Returns how many
    /// were refreshed.
    pub async fn rotate_due_keys(&self) -> usize {
        let mut rotated = 0;
        let mut after = String::new();
        loop {
            let page = match self.store.list_active_key_ids(&after, PAGE).await {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(error = %e, "rotation: cannot list keys");
                    return rotated;
                }
            };
            for (key_id, _) in &page {
                if let Ok(Some(key)) = self.store.get_key(key_id).await {
                    rotated += usize::from(self.rotate_if_due(&key).await);
                }
            }
            match page.last() {
                Some((last, _)) if page.len() == PAGE as usize => after = last.clone(),
                _ => return rotated,
            }
        }
    }

    /// Refreshes `key` if it rotates, is due, and this node coordinates it.
    async fn rotate_if_due(&self, key: &KeyRecord) -> bool {
        let Some(interval) = key.policy.rotation_interval_s else {
            return false;
        };
        let interval = interval.max(self.cfg.rotation.min_interval_s);
        if !LoadedKey::new(key.clone()).is_ok_and(|k| k.family().rotates().is_ok()) {
            return false;
        }
        let me = self.cfg.node_id;
        let lowest_live = sigil_crypto::relay::node_parties(&key.parties).find(|&p| p == me || !self.recently_down(p));
        let age = u64::try_from(now_unix().saturating_sub(key.created_at)).unwrap_or(0);
        let due = age >= interval.saturating_add(jitter(key, interval));
        let wait = Duration::from_secs(interval);
        if key.status != KeyStatus::Active
            || lowest_live != Some(me)
            || !due
            || !self.rotations.ready(&key.key_id, wait)
        {
            return false;
        }
        let r = self.reshare_to(key, key.parties.clone(), key.threshold, None).await;
        let ok = r.is_ok();
        self.rotations.record(&key.key_id, ok);
        let outcome = match &r {
            Ok(next) => {
                tracing::info!(key_id = key.key_id, epoch = next.epoch, "key rotated");
                "ok".to_string()
            }
            Err(e) => {
                tracing::warn!(key_id = key.key_id, error = %e, "rotation failed; retried after a backoff");
                match e {
                    crate::error::NodeError::Session(s) => format!("failed:{}", s.code()),
                    _ => "failed:node".to_string(),
                }
            }
        };
        metrics::counter!("sigil_rotations_total", "outcome" => if ok { "ok" } else { "failed" }).increment(1);
        let entry = audit::Entry {
            role: "coordinator",
            operation: "rotate",
            key_id: key.key_id.clone(),
            outcome,
            ..audit::Entry::default()
        };
        self.audit.record(entry).await;
        ok
    }

    /// The participant's check of a rotation: a reshare proposal that
    /// carries no client token (see the module table).
    ///
    /// # Errors
    /// [`SessionError::Refused`] naming this node.
    pub(crate) async fn check_rotation(&self, coordinator: u16, r: &ReshareProposal) -> Result<(), SessionError> {
        let current = self.reshare_current(r).await?;
        let forbid = |m: String| self.refused(Refusal::Forbidden(m));
        let Some(interval) = current.policy.rotation_interval_s else {
            return Err(self.refused(Refusal::MissingToken));
        };
        let interval = interval.max(self.cfg.rotation.min_interval_s);
        let family = crate::family::LoadedKey::new(current.clone())
            .map(|k| k.family())
            .map_err(|e| SessionError::Invalid(e.to_string()))?;
        family
            .rotates()
            .map_err(|why| forbid(format!("key {} does not rotate: {why}", current.key_id)))?;
        let same_committee = r.new_parties == current.parties.iter().map(|&p| u32::from(p)).collect::<Vec<_>>()
            && r.threshold == u32::from(current.threshold);
        if !same_committee {
            return Err(forbid(format!(
                "a rotation of key {} keeps its committee and threshold",
                current.key_id
            )));
        }
        if !current.parties.contains(&coordinator) {
            return Err(forbid(format!(
                "node {coordinator} is not a party of key {}",
                current.key_id
            )));
        }
        // The epoch's age by this node's own record (the proposal's
        // `created_at` is not attested): set here at its DKG or switch.
        let own = self
            .store
            .get_key(&current.key_id)
            .await
            .map_err(SessionError::from)?
            .filter(|k| k.status == KeyStatus::Active && k.epoch == current.epoch)
            .ok_or_else(|| forbid(format!("key {} is not active here at that epoch", current.key_id)))?;
        let age = u64::try_from(now_unix().saturating_sub(own.created_at)).unwrap_or(0);
        if age < interval.saturating_sub((interval / 10).max(2)) {
            return Err(forbid(format!(
                "key {} epoch {} is {age} s old; it rotates every {interval} s",
                current.key_id, current.epoch
            )));
        }
        Ok(())
    }
}

/// Runs [`Node::rotate_due_keys`] every `[rotation] check_ms`.
pub async fn run(node: Arc<Node>) {
    let every = Duration::from_millis(node.cfg.rotation.check_ms);
    loop {
        tokio::time::sleep(every).await;
        node.rotate_due_keys().await;
    }
}
