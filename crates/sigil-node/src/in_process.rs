//! An in-process [`Transport`]: nodes of one process call each other's
//! [`Handler`] directly, so tests run a whole cluster in one process,
//! without sockets or certificates, and can cut a node off at will.
//!
//! The caller's node id is the one the transport was made for (what a
//! client certificate proves on the network); requests and answers go
//! through the same handler and the same error encoding as gRPC
//! ([`crate::wire`]), so a test sees what a networked node would.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use sigil_proto::peer::{
    Envelope, FinalizeAuxRequest, FinalizeKeyRequest, FinalizePresignatureRequest, KeyMeta, ListKeyIdsRequest,
    SessionOutcome, SessionProposal,
};
use tonic::Status;

use crate::error::SessionError;
use crate::peer::Handler;
use crate::transport::{DeliverError, Transport};
use crate::wire::status_session_error;
use crate::Node;

/// Rewrites a session outcome (a malicious node's answer).
pub type Tamper = Arc<dyn Fn(&mut SessionOutcome) + Send + Sync>;

/// The nodes of one process, by id. Nodes hold it through their
/// transports; it holds them weakly, so dropping a node stops it.
#[derive(Default)]
pub struct InProcessHub {
    nodes: Mutex<HashMap<u16, Weak<Node>>>,
    cut_off: Mutex<HashSet<u16>>,
    tamper: Mutex<HashMap<u16, Tamper>>,
    /// Nodes whose `FinalizeKey` calls are lost on the way.
    no_finalize: Mutex<HashSet<u16>>,
}

impl InProcessHub {
    /// A new, empty hub.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// The transport of node `me`.
    pub fn transport(self: &Arc<Self>, me: u16) -> Arc<dyn Transport> {
        Arc::new(InProcess { hub: self.clone(), me })
    }

    /// Makes `node` reachable under its configured id.
    pub fn attach(&self, node: &Arc<Node>) {
        self.nodes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(node.cfg.node_id, Arc::downgrade(node));
    }

    /// Cuts node `id` off (`true`: nothing reaches it and nothing it sends
    /// arrives, as if its network were down) or reconnects it.
    pub fn cut_off(&self, id: u16, cut: bool) {
        let mut c = self.cut_off.lock().unwrap_or_else(|p| p.into_inner());
        if cut {
            c.insert(id);
        } else {
            c.remove(&id);
        }
    }

    /// Loses every `FinalizeKey` sent to node `id` (`true`) or delivers
    /// them again: a commit that does not reach a node while its sessions
    /// do.
    pub fn lose_finalize(&self, id: u16, lose: bool) {
        let mut c = self.no_finalize.lock().unwrap_or_else(|p| p.into_inner());
        if lose {
            c.insert(id);
        } else {
            c.remove(&id);
        }
    }

    /// Makes node `id` malicious: `f` rewrites every session outcome it
    /// answers with (`None`: honest again). For tests of what a
    /// coordinator checks in its peers' answers.
    pub fn tamper_outcomes(&self, id: u16, f: Option<Tamper>) {
        let mut t = self.tamper.lock().unwrap_or_else(|p| p.into_inner());
        match f {
            Some(f) => t.insert(id, f),
            None => t.remove(&id),
        };
    }

    fn node(&self, from: u16, to: u16) -> Result<Arc<Node>, Status> {
        let cut = self.cut_off.lock().unwrap_or_else(|p| p.into_inner());
        if cut.contains(&from) || cut.contains(&to) {
            return Err(Status::unavailable(format!("node {to} is cut off")));
        }
        drop(cut);
        self.nodes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&to)
            .and_then(Weak::upgrade)
            .ok_or_else(|| Status::unavailable(format!("node {to} is not running")))
    }
}

/// The in-process transport of one node.
struct InProcess {
    hub: Arc<InProcessHub>,
    me: u16,
}

impl InProcess {
    /// Runs `call` with the handler of `to` for this node, within `timeout`.
    async fn call<T, F, Fut>(&self, to: u16, timeout: Duration, call: F) -> Result<T, Status>
    where
        F: FnOnce(Handler) -> Fut + Send,
        Fut: std::future::Future<Output = Result<T, Status>> + Send,
    {
        let node = self.hub.node(self.me, to)?;
        let h = Handler::new(node, self.me)?;
        match tokio::time::timeout(timeout, call(h)).await {
            Ok(r) => r,
            Err(_) => Err(Status::deadline_exceeded("deadline exceeded")),
        }
    }
}

#[async_trait::async_trait]
impl Transport for InProcess {
    async fn run_session(
        &self,
        to: u16,
        p: SessionProposal,
        timeout: Duration,
    ) -> Result<SessionOutcome, SessionError> {
        let mut o = self
            .call(to, timeout, |h| h.run_session(p))
            .await
            .map_err(|s| status_session_error(to, &s))?;
        let tamper = self
            .hub
            .tamper
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&to)
            .cloned();
        if let Some(f) = tamper {
            f(&mut o);
        }
        Ok(o)
    }

    async fn deliver(&self, to: u16, env: Envelope, timeout: Duration) -> Result<(), DeliverError> {
        self.call(to, timeout, |h| h.deliver(env))
            .await
            .map(|_| ())
            .map_err(|s| DeliverError::of_status(&s))
    }

    async fn finalize_key(&self, to: u16, r: FinalizeKeyRequest, timeout: Duration) -> Result<Vec<u8>, SessionError> {
        let lost = self
            .hub
            .no_finalize
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&to);
        if lost {
            return Err(status_session_error(to, &Status::unavailable("FinalizeKey lost")));
        }
        self.call(to, timeout, |h| h.finalize_key(r))
            .await
            .map(|r| r.activation)
            .map_err(|s| status_session_error(to, &s))
    }

    async fn finalize_aux(&self, to: u16, r: FinalizeAuxRequest, timeout: Duration) -> Result<(), SessionError> {
        self.call(to, timeout, |h| h.finalize_aux(r))
            .await
            .map(|_| ())
            .map_err(|s| status_session_error(to, &s))
    }

    async fn finalize_presignature(
        &self,
        to: u16,
        r: FinalizePresignatureRequest,
        timeout: Duration,
    ) -> Result<(), SessionError> {
        self.call(to, timeout, |h| h.finalize_presignature(r))
            .await
            .map(|_| ())
            .map_err(|s| status_session_error(to, &s))
    }

    async fn list_key_ids(
        &self,
        to: u16,
        r: ListKeyIdsRequest,
        timeout: Duration,
    ) -> Result<Vec<(String, u32)>, SessionError> {
        self.call(to, timeout, |h| h.list_key_ids(r))
            .await
            .map(crate::wire::key_page)
            .map_err(|s| status_session_error(to, &s))
    }

    async fn key_meta(
        &self,
        to: u16,
        key_id: &str,
        which: crate::transport::MetaOf,
        timeout: Duration,
    ) -> Result<Option<KeyMeta>, SessionError> {
        let r = which.request(key_id);
        match self.call(to, timeout, |h| h.get_key_meta(r)).await {
            Ok(meta) => Ok(Some(meta)),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
            Err(s) => Err(status_session_error(to, &s)),
        }
    }
}
