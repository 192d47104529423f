//! The cluster's membership as this node knows it: every node's id, peer
//! address and identity key, from its own `[[nodes]]` (see
//! [`crate::config::NodeEntry`]). Read on every check ("is this caller a
//! peer?", "whose attestation is this?"); replaced as a whole when the
//! operator changes `[[nodes]]` and sends the node `SIGHUP`
//! ([`Node::reload_members`]), without dropping a session.
//!
//! **Who may change it:** the operator of this node only, through its own
//! configuration file; no peer message adds, removes or re-keys a member.
//! A reload may add nodes, remove nodes and change peer addresses. It may
//! not change this node's own entry (id or identity key) nor the identity
//! key of a node that stays: key records attested by that key would stop
//! verifying, and a re-keyed node is a new node (give it a new id). A
//! refused reload keeps the membership as it was and says why in the log.

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::NodeEntry;
use crate::Node;

/// One consistent view of the membership.
#[derive(Debug, Clone)]
pub struct Members {
    nodes: Vec<NodeEntry>,
    identities: HashMap<u16, ed25519_dalek::VerifyingKey>,
}

impl Members {
    /// The membership of `nodes`.
    ///
    /// # Errors
    /// A duplicate id or an identity key that does not parse.
    pub fn new(nodes: &[NodeEntry]) -> anyhow::Result<Self> {
        let mut identities = HashMap::new();
        for n in nodes {
            let k =
                crate::attest::parse_public(&n.identity_key).map_err(|e| anyhow::anyhow!("nodes[{}]: {e}", n.id))?;
            anyhow::ensure!(identities.insert(n.id, k).is_none(), "nodes: node {} twice", n.id);
        }
        Ok(Members {
            nodes: nodes.to_vec(),
            identities,
        })
    }

    /// Node ids, ascending.
    pub fn ids(&self) -> Vec<u16> {
        let mut ids: Vec<u16> = self.nodes.iter().map(|n| n.id).collect();
        ids.sort_unstable();
        ids
    }

    /// Whether `id` is a member.
    pub fn contains(&self, id: u16) -> bool {
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

    /// Node `id`'s identity public key.
    pub fn identity(&self, id: u16) -> Option<ed25519_dalek::VerifyingKey> {
        self.identities.get(&id).copied()
    }

    /// The entries, as configured.
    pub fn nodes(&self) -> &[NodeEntry] {
        &self.nodes
    }

    /// Checks that `next` may replace this membership at node `me` (see
    /// the module docs): `me` is in both with the same identity key, and
    /// no node in both changed its identity key.
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

    /// Node `id`'s identity key, if it is a member.
    pub(crate) fn identity_of(&self, id: u16) -> Option<ed25519_dalek::VerifyingKey> {
        self.members().identity(id)
    }

    /// Replaces the membership with `nodes` (the `[[nodes]]` of this
    /// node's reloaded configuration) after [`Members::check_change`],
    /// and points the transport at the new peers. Sessions running keep
    /// running; keys are not touched (a removed node that still holds
    /// shares of keys here cannot take part in their sessions any more:
    /// retire it by resharing first). Audited as `reload_members`, by role
    /// `operator`, refused or not.
    ///
    /// # Errors
    /// A refused change (the membership stays as it was).
    pub async fn reload_members(&self, nodes: &[NodeEntry]) -> anyhow::Result<(Vec<u16>, Vec<u16>)> {
        let result = self.swap_members(nodes);
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

    fn swap_members(&self, nodes: &[NodeEntry]) -> anyhow::Result<(Vec<u16>, Vec<u16>)> {
        let next = Members::new(nodes)?;
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

    #[test]
    fn changes_add_remove_and_move_but_never_rekey() -> anyhow::Result<()> {
        let keys: Vec<ed25519_dalek::SigningKey> = (0..5u8)
            .map(|i| ed25519_dalek::SigningKey::from_bytes(&[i; 32]))
            .collect();
        let now = Members::new(&[entry(0, &keys[0]), entry(1, &keys[1]), entry(2, &keys[2])])?;
        let grown = Members::new(&[
            entry(0, &keys[0]),
            entry(1, &keys[1]),
            entry(2, &keys[2]),
            entry(3, &keys[3]),
        ])?;
        now.check_change(&grown, 1)?;
        assert_eq!(now.diff(&grown), (vec![3], vec![]));
        let mut moved = entry(2, &keys[2]);
        moved.peer_addr = "10.0.0.2:7102".into();
        let shrunk = Members::new(&[entry(1, &keys[1]), moved, entry(3, &keys[3])])?;
        grown.check_change(&shrunk, 1)?;
        assert_eq!(grown.diff(&shrunk), (vec![], vec![0]));
        assert!(grown.check_change(&shrunk, 0).is_err(), "a node cannot remove itself");
        let rekeyed = Members::new(&[entry(0, &keys[0]), entry(1, &keys[1]), entry(2, &keys[4])])?;
        assert!(now.check_change(&rekeyed, 0).is_err(), "node 2 re-keyed");
        assert!(now.check_change(&rekeyed, 2).is_err(), "our own key changed");
        assert!(Members::new(&[entry(0, &keys[0]), entry(0, &keys[1])]).is_err());
        assert_eq!(grown.identity(3), Some(keys[3].verifying_key()));
        Ok(())
    }
}
