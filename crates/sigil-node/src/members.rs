//! The cluster's membership as this node knows it: every node's id, peer
//! address and identity key, from its own `[[nodes]]` (see
//! [`crate::config::NodeEntry`]). Read on every check ("is this caller a
//! peer?", "whose attestation is this?"); replaced as a whole when the
//! operator changes `[[nodes]]` and sends the node `SIGHUP`
//! ([`Node::reload_members`]), without dropping a session.
//!
//! **Who may change it:** the operator of this node only, through its own
//! configuration file; no peer message adds, removes or re-keys a member.
//! A reload may add nodes, retire nodes and change peer addresses. It may
//! not change this node's own entry (id or identity key) nor the identity
//! key of a known node: key records attested by that key would stop
//! verifying, and a re-keyed node is a new node (give it a new id). A node
//! leaves `[[nodes]]` only by moving to `[[retired_nodes]]` (a tombstone:
//! its id never comes back, its identity key still checks the records of
//! earlier epochs it attested), and only once no key active here lists it
//! as a party. A refused reload keeps the membership as it was and says
//! why in the log and the audit log.

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::{NodeEntry, RetiredNode};
use crate::Node;

/// One consistent view of the membership.
#[derive(Debug, Clone)]
pub struct Members {
    nodes: Vec<NodeEntry>,
    /// Current and retired nodes' identity keys.
    identities: HashMap<u16, ed25519_dalek::VerifyingKey>,
    retired: Vec<u16>,
}

impl Members {
    /// The membership of `nodes`, with the `retired` nodes' identities
    /// (kept to check records of earlier epochs).
    ///
    /// # Errors
    /// An id twice (also across the lists), the id reserved for external
    /// parties ([`sigil_crypto::relay::EXTERNAL_PARTY`]), or an identity
    /// key that does not parse.
    pub fn new(nodes: &[NodeEntry], retired: &[RetiredNode]) -> anyhow::Result<Self> {
        let mut identities = HashMap::new();
        let all = nodes
            .iter()
            .map(|n| (n.id, n.identity_key.as_str(), "nodes"))
            .chain(retired.iter().map(|n| (n.id, n.identity_key.as_str(), "retired_nodes")));
        for (id, key, list) in all {
            anyhow::ensure!(
                id != sigil_crypto::relay::EXTERNAL_PARTY,
                "{list}: node id {id} is reserved for external parties"
            );
            let k = crate::attest::parse_public(key).map_err(|e| anyhow::anyhow!("{list}[{id}]: {e}"))?;
            anyhow::ensure!(
                identities.insert(id, k).is_none(),
                "{list}: node {id} twice (a retired id never comes back)"
            );
        }
        Ok(Members {
            nodes: nodes.to_vec(),
            identities,
            retired: retired.iter().map(|n| n.id).collect(),
        })
    }

    /// Node ids, ascending.
    pub fn ids(&self) -> Vec<u16> {
        let mut ids: Vec<u16> = self.nodes.iter().map(|n| n.id).collect();
        ids.sort_unstable();
        ids
    }

    /// Whether `id` is a member (a peer; retired nodes are not).
    pub fn contains(&self, id: u16) -> bool {
        self.nodes.iter().any(|n| n.id == id)
    }

    /// Whether `id` is a member or a retired node (whose records of
    /// earlier epochs still verify).
    pub fn knows(&self, id: u16) -> bool {
        self.identities.contains_key(&id)
    }

    /// The number of members.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether there are none (never for a running node).
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Node `id`'s identity public key (a member's or a retired node's).
    pub fn identity(&self, id: u16) -> Option<ed25519_dalek::VerifyingKey> {
        self.identities.get(&id).copied()
    }

    /// The entries, as configured.
    pub fn nodes(&self) -> &[NodeEntry] {
        &self.nodes
    }

    /// Checks that `next` may replace this membership at node `me` (see
    /// the module docs): `me` stays a member with the same identity key,
    /// no known node changes its identity key, a node leaves only by
    /// becoming retired, and a retired node stays retired.
    ///
    /// # Errors
    /// The first rule broken.
    pub fn check_change(&self, next: &Members, me: u16) -> anyhow::Result<()> {
        anyhow::ensure!(
            next.contains(me) && next.identity(me) == self.identity(me),
            "nodes: this node's own entry (id {me}, identity key) must stay as it is"
        );
        for (&id, k) in &self.identities {
            if let Some(new) = next.identities.get(&id) {
                anyhow::ensure!(
                    new == k,
                    "nodes[{id}]: the identity key of a node cannot change (records it attested would stop verifying); give a re-keyed node a new id"
                );
            }
        }
        for id in self.ids().into_iter().filter(|&i| !next.contains(i)) {
            anyhow::ensure!(
                next.retired.contains(&id),
                "node {id} left nodes without a [[retired_nodes]] entry: move it there (its id is then never used again)"
            );
        }
        if let Some(id) = self.retired.iter().find(|&&id| !next.retired.contains(&id)) {
            anyhow::bail!("retired node {id} must stay in [[retired_nodes]] (a retired id never comes back)");
        }
        Ok(())
    }

    /// `(added, removed)` node ids from this membership to `next`.
    pub fn diff(&self, next: &Members) -> (Vec<u16>, Vec<u16>) {
        let added = next.ids().into_iter().filter(|&i| !self.contains(i)).collect();
        let removed = self.ids().into_iter().filter(|&i| !next.contains(i)).collect();
        (added, removed)
    }
}

impl Node {
    /// The current membership.
    pub fn members(&self) -> Arc<Members> {
        self.members.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Node `id`'s identity key, if it is a member or retired.
    pub(crate) fn identity_of(&self, id: u16) -> Option<ed25519_dalek::VerifyingKey> {
        self.members().identity(id)
    }

    /// Every known node's identity key, from one snapshot of the
    /// membership: a check over several signatures sees one membership
    /// even when a reload lands meanwhile.
    pub(crate) fn identities(&self) -> impl Fn(u16) -> Option<ed25519_dalek::VerifyingKey> {
        let members = self.members();
        move |id| members.identity(id)
    }

    /// Replaces the membership with `nodes` (the `[[nodes]]` of this
    /// node's reloaded configuration) after [`Members::check_change`],
    /// and points the transport at the new peers. Sessions running keep
    /// running; keys are not touched. Audited as `reload_members`, by role
    /// `operator`, refused or not.
    ///
    /// # Errors
    /// A refused change (the membership stays as it was).
    pub async fn reload_members(
        &self,
        nodes: &[NodeEntry],
        retired: &[RetiredNode],
    ) -> anyhow::Result<(Vec<u16>, Vec<u16>)> {
        let result = match self.still_parties(nodes).await {
            Ok(()) => self.swap_members(nodes, retired),
            Err(e) => Err(e),
        };
        let outcome = match &result {
            Ok((added, removed)) => {
                tracing::info!(?added, ?removed, "membership reloaded");
                format!("ok:added={added:?},removed={removed:?}")
            }
            Err(e) => {
                tracing::error!(error = %e, "membership reload refused; the membership stays as it was");
                format!("refused:{e}")
            }
        };
        let entry = crate::audit::Entry {
            role: "operator",
            operation: "reload_members",
            outcome,
            ..crate::audit::Entry::default()
        };
        self.audit.record(entry).await;
        result
    }

    /// Refuses to drop a node that is still a party of a key active here:
    /// the key could neither sign with it nor be reshared away from it.
    async fn still_parties(&self, nodes: &[NodeEntry]) -> anyhow::Result<()> {
        let keys = self.store.list_keys().await?;
        let gone = |p: &u16| *p != sigil_crypto::relay::EXTERNAL_PARTY && !nodes.iter().any(|n| n.id == *p);
        if let Some((k, p)) = keys
            .iter()
            .find_map(|k| k.parties.iter().find(|p| gone(p)).map(|p| (k, *p)))
        {
            anyhow::bail!(
                "node {p} is still a party of key {} (epoch {}): reshare the key away from it first",
                k.key_id,
                k.epoch
            );
        }
        Ok(())
    }

    fn swap_members(&self, nodes: &[NodeEntry], retired: &[RetiredNode]) -> anyhow::Result<(Vec<u16>, Vec<u16>)> {
        let next = Members::new(nodes, retired)?;
        let mut slot = self.members.write().unwrap_or_else(|p| p.into_inner());
        slot.check_change(&next, self.cfg.node_id)?;
        self.peers.set_peers(next.nodes())?;
        let diff = slot.diff(&next);
        *slot = Arc::new(next);
        Ok(diff)
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn entry(id: u16, key: &ed25519_dalek::SigningKey) -> NodeEntry {
        NodeEntry {
            id,
            peer_addr: format!("127.0.0.1:{}", 7100 + id),
            identity_key: hex::encode(key.verifying_key().as_bytes()),
        }
    }

    fn retired(id: u16, key: &ed25519_dalek::SigningKey) -> RetiredNode {
        RetiredNode {
            id,
            identity_key: hex::encode(key.verifying_key().as_bytes()),
        }
    }

    #[test]
    fn changes_add_retire_and_move_but_never_rekey_or_revive() -> anyhow::Result<()> {
        let keys: Vec<ed25519_dalek::SigningKey> = (0..5u8)
            .map(|i| ed25519_dalek::SigningKey::from_bytes(&[i; 32]))
            .collect();
        let e = |i: u16| entry(i, &keys[usize::from(i)]);
        let now = Members::new(&[e(0), e(1), e(2)], &[])?;
        let grown = Members::new(&[e(0), e(1), e(2), e(3)], &[])?;
        now.check_change(&grown, 1)?;
        assert_eq!(now.diff(&grown), (vec![3], vec![]));
        let mut moved = e(2);
        moved.peer_addr = "10.0.0.2:7102".into();
        let dropped = Members::new(&[e(1), moved.clone(), e(3)], &[])?;
        assert!(
            grown.check_change(&dropped, 1).is_err(),
            "node 0 left without a tombstone"
        );
        let shrunk = Members::new(&[e(1), moved, e(3)], &[retired(0, &keys[0])])?;
        grown.check_change(&shrunk, 1)?;
        assert_eq!(grown.diff(&shrunk), (vec![], vec![0]));
        assert!(
            !shrunk.contains(0) && shrunk.knows(0),
            "retired: no peer, identity kept"
        );
        assert_eq!(shrunk.identity(0), Some(keys[0].verifying_key()));
        assert!(grown.check_change(&shrunk, 0).is_err(), "a node cannot remove itself");
        let revived = Members::new(&[e(0), e(1), e(2), e(3)], &[])?;
        assert!(
            shrunk.check_change(&revived, 1).is_err(),
            "a retired id never comes back"
        );
        assert!(
            Members::new(&[e(0), e(1)], &[retired(0, &keys[0])]).is_err(),
            "in both lists"
        );
        let rekeyed = Members::new(&[e(0), e(1), entry(2, &keys[4])], &[])?;
        assert!(now.check_change(&rekeyed, 0).is_err(), "node 2 re-keyed");
        assert!(now.check_change(&rekeyed, 2).is_err(), "our own key changed");
        assert!(Members::new(&[e(0), entry(0, &keys[1])], &[]).is_err());
        Ok(())
    }
}
