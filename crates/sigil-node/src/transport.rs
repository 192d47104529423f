//! The client side of the peer transport: what one node asks another.
//! [`Transport`] is implemented by [`PeerClients`] (lazily connected mTLS
//! gRPC clients of `sigil.peer.v1.Peer`, one per other node) and by the
//! in-process transport of tests ([`crate::in_process`]). The session
//! layer, the coordinator and catch-up send through it; the server side is
//! [`crate::peer`].
//!
//! Errors come back as [`SessionError`] decoded by
//! [`crate::wire::status_session_error`]: a remote error names at most the
//! node that sent it, and anything undecodable (a refused connection, a
//! deadline) is `Unavailable` naming that node.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use sigil_proto::peer::peer_client::PeerClient;
use sigil_proto::peer::{
    Envelope, FinalizeAuxRequest, FinalizeKeyRequest, FinalizePresignatureRequest, GetKeyMetaRequest, KeyMeta,
    ListKeyIdsRequest, SessionOutcome, SessionProposal,
};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::Status;

use crate::certs::node_dns_name;
use crate::config::NodeConfig;
use crate::error::SessionError;
use crate::wire::status_session_error;

/// Why a protocol message was not delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliverError {
    /// Not yet: the peer is unreachable or has not registered the session
    /// (retry until the session deadline).
    Retry(String),
    /// The peer refused the message (wrong sender, unexpected round,
    /// duplicate, garbage); retrying will not help.
    Refused(String),
}

impl DeliverError {
    /// Classifies a `Deliver` status.
    pub fn of_status(s: &Status) -> Self {
        let text = format!("{:?}: {}", s.code(), s.message());
        match s.code() {
            tonic::Code::NotFound | tonic::Code::Unavailable | tonic::Code::Unknown => DeliverError::Retry(text),
            _ => DeliverError::Refused(text),
        }
    }
}

/// What a node can ask another node `to`. Every call has a deadline,
/// `timeout`. Who may send each request and what the receiver checks is
/// written at the receiver ([`crate::peer`]).
#[async_trait::async_trait]
pub trait Transport: Send + Sync + 'static {
    /// Points the transport at a new membership (a reload of
    /// `[[nodes]]`): connections to nodes that stay, at the same address,
    /// are kept. The default (a transport that reaches every node it
    /// knows, as the in-process hub) does nothing.
    ///
    /// # Errors
    /// A malformed peer address (nothing is changed then).
    fn set_peers(&self, _nodes: &[crate::config::NodeEntry]) -> anyhow::Result<()> {
        Ok(())
    }

    /// `RunSession`: asks `to` to run its part of the proposal.
    async fn run_session(&self, to: u16, p: SessionProposal, timeout: Duration)
        -> Result<SessionOutcome, SessionError>;

    /// `Deliver`: one protocol message.
    async fn deliver(&self, to: u16, env: Envelope, timeout: Duration) -> Result<(), DeliverError>;

    /// `FinalizeKey`: commit or abort a key after its DKG (or a later
    /// epoch); returns the party's activation of a later epoch (empty
    /// otherwise).
    async fn finalize_key(&self, to: u16, r: FinalizeKeyRequest, timeout: Duration) -> Result<Vec<u8>, SessionError>;

    /// `FinalizeAux`: commit pending aux info.
    async fn finalize_aux(&self, to: u16, r: FinalizeAuxRequest, timeout: Duration) -> Result<(), SessionError>;

    /// `FinalizePresignature`: pool or discard a pending presignature.
    async fn finalize_presignature(
        &self,
        to: u16,
        r: FinalizePresignatureRequest,
        timeout: Duration,
    ) -> Result<(), SessionError>;

    /// `ListKeyIds`: a page of `to`'s active key ids after `r.after`, with
    /// their epochs (0 from a node that sends none).
    async fn list_key_ids(
        &self,
        to: u16,
        r: ListKeyIdsRequest,
        timeout: Duration,
    ) -> Result<Vec<(String, u32)>, SessionError>;

    /// `GetKeyMeta`: the public metadata of `to`'s active key `key_id`;
    /// `None` when `to` holds no such active key.
    async fn get_key_meta(&self, to: u16, key_id: &str, timeout: Duration) -> Result<Option<KeyMeta>, SessionError> {
        self.key_meta(to, key_id, MetaOf::Active, timeout).await
    }

    /// `GetKeyMeta` with `epoch`: node `to`'s whole attested record of
    /// `key_id` at `epoch` (retired or current; `None`: it holds none).
    async fn get_epoch_record(
        &self,
        to: u16,
        key_id: &str,
        epoch: u32,
        timeout: Duration,
    ) -> Result<Option<KeyMeta>, SessionError> {
        self.key_meta(to, key_id, MetaOf::Epoch(epoch), timeout).await
    }

    /// `GetKeyMeta` with `pending`: node `to`'s acknowledged pending epoch
    /// of `key_id` (`None`: it holds none).
    async fn get_pending_epoch(
        &self,
        to: u16,
        key_id: &str,
        timeout: Duration,
    ) -> Result<Option<KeyMeta>, SessionError> {
        self.key_meta(to, key_id, MetaOf::Pending, timeout).await
    }

    /// `GetKeyMeta` as asked, `NotFound` mapped to `None`.
    async fn key_meta(
        &self,
        to: u16,
        key_id: &str,
        which: MetaOf,
        timeout: Duration,
    ) -> Result<Option<KeyMeta>, SessionError>;
}

/// Which record of a key a `GetKeyMeta` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaOf {
    /// The active record.
    Active,
    /// The node's acknowledged pending epoch.
    Pending,
    /// The record of this epoch (retired or current).
    Epoch(u32),
}

impl MetaOf {
    /// The request for `key_id`.
    pub fn request(self, key_id: &str) -> GetKeyMetaRequest {
        GetKeyMetaRequest {
            key_id: key_id.to_string(),
            pending: self == MetaOf::Pending,
            epoch: match self {
                MetaOf::Epoch(e) => Some(e),
                _ => None,
            },
        }
    }
}

/// Each peer's client, with the address it dials.
type Clients = HashMap<u16, (String, PeerClient<Channel>)>;

/// Lazily connected mTLS clients, one per other node, replaced on a
/// reload of `[[nodes]]` ([`Transport::set_peers`]).
#[derive(Clone)]
pub struct PeerClients {
    clients: Arc<std::sync::RwLock<Clients>>,
    me: u16,
    tls: Arc<(Certificate, Identity)>,
    max_message_bytes: usize,
}

impl PeerClients {
    /// Builds a client for every node of `cfg` except this one. Nothing is
    /// dialled until first use.
    ///
    /// # Errors
    /// Unreadable certificate files or a malformed peer address.
    pub fn new(cfg: &NodeConfig, ca: &Certificate, identity: &Identity) -> anyhow::Result<Self> {
        let pc = PeerClients {
            clients: Arc::default(),
            me: cfg.node_id,
            tls: Arc::new((ca.clone(), identity.clone())),
            max_message_bytes: cfg.limits.peer_max_message_bytes,
        };
        pc.set_peers(&cfg.nodes)?;
        Ok(pc)
    }

    /// A lazily connected client of node `n`.
    fn connect(&self, n: &crate::config::NodeEntry) -> anyhow::Result<PeerClient<Channel>> {
        let tls = ClientTlsConfig::new()
            .ca_certificate(self.tls.0.clone())
            .identity(self.tls.1.clone())
            .domain_name(node_dns_name(n.id));
        let ep = Endpoint::from_shared(format!("https://{}", n.peer_addr))?
            .tls_config(tls)?
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_millis(1000))
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_while_idle(true);
        Ok(PeerClient::new(ep.connect_lazy()).max_decoding_message_size(self.max_message_bytes))
    }

    /// The client for node `id`, or `Unavailable` for one not configured.
    fn client(&self, id: u16) -> Result<PeerClient<Channel>, SessionError> {
        let clients = self.clients.read().unwrap_or_else(|p| p.into_inner());
        clients
            .get(&id)
            .map(|(_, c)| c.clone())
            .ok_or_else(|| SessionError::Unavailable {
                nodes: vec![id],
                reason: "not a configured peer".into(),
            })
    }
}

/// A request with a deadline.
fn request<T>(body: T, timeout: Duration) -> tonic::Request<T> {
    let mut r = tonic::Request::new(body);
    r.set_timeout(timeout.max(Duration::from_millis(1)));
    r
}

#[async_trait::async_trait]
impl Transport for PeerClients {
    fn set_peers(&self, nodes: &[crate::config::NodeEntry]) -> anyhow::Result<()> {
        let current = self.clients.read().unwrap_or_else(|p| p.into_inner()).clone();
        let mut next = HashMap::new();
        for n in nodes.iter().filter(|n| n.id != self.me) {
            let client = match current.get(&n.id) {
                Some((addr, c)) if *addr == n.peer_addr => c.clone(),
                _ => self.connect(n)?,
            };
            next.insert(n.id, (n.peer_addr.clone(), client));
        }
        *self.clients.write().unwrap_or_else(|p| p.into_inner()) = next;
        Ok(())
    }

    async fn run_session(
        &self,
        to: u16,
        p: SessionProposal,
        timeout: Duration,
    ) -> Result<SessionOutcome, SessionError> {
        let r = self.client(to)?.run_session(request(p, timeout)).await;
        r.map(tonic::Response::into_inner)
            .map_err(|s| status_session_error(to, &s))
    }

    async fn deliver(&self, to: u16, env: Envelope, timeout: Duration) -> Result<(), DeliverError> {
        let mut c = self.client(to).map_err(|e| DeliverError::Refused(e.to_string()))?;
        c.deliver(request(env, timeout))
            .await
            .map(|_| ())
            .map_err(|s| DeliverError::of_status(&s))
    }

    async fn finalize_key(&self, to: u16, r: FinalizeKeyRequest, timeout: Duration) -> Result<Vec<u8>, SessionError> {
        let r = self.client(to)?.finalize_key(request(r, timeout)).await;
        r.map(|r| r.into_inner().activation)
            .map_err(|s| status_session_error(to, &s))
    }

    async fn finalize_aux(&self, to: u16, r: FinalizeAuxRequest, timeout: Duration) -> Result<(), SessionError> {
        let r = self.client(to)?.finalize_aux(request(r, timeout)).await;
        r.map(|_| ()).map_err(|s| status_session_error(to, &s))
    }

    async fn finalize_presignature(
        &self,
        to: u16,
        r: FinalizePresignatureRequest,
        timeout: Duration,
    ) -> Result<(), SessionError> {
        let r = self.client(to)?.finalize_presignature(request(r, timeout)).await;
        r.map(|_| ()).map_err(|s| status_session_error(to, &s))
    }

    async fn list_key_ids(
        &self,
        to: u16,
        r: ListKeyIdsRequest,
        timeout: Duration,
    ) -> Result<Vec<(String, u32)>, SessionError> {
        let r = self.client(to)?.list_key_ids(request(r, timeout)).await;
        r.map(|r| crate::wire::key_page(r.into_inner()))
            .map_err(|s| status_session_error(to, &s))
    }

    async fn key_meta(
        &self,
        to: u16,
        key_id: &str,
        which: MetaOf,
        timeout: Duration,
    ) -> Result<Option<KeyMeta>, SessionError> {
        let req = which.request(key_id);
        match self.client(to)?.get_key_meta(request(req, timeout)).await {
            Ok(r) => Ok(Some(r.into_inner())),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
            Err(s) => Err(status_session_error(to, &s)),
        }
    }
}
