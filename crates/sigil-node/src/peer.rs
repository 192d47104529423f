//! The server side of the peer transport: gRPC `sigil.peer.v1.Peer` over
//! mutual TLS ([`PeerService`]), and the [`Handler`] both it and the
//! in-process transport ([`crate::in_process`]) call.
//!
//! Who may send what, and what the receiver checks:
//! - every RPC: the caller is a current member (`[[nodes]]` of this node's
//!   config as last reloaded; a retired node is not), identified by its
//!   client certificate (gRPC) or by construction (in-process); anything
//!   else is `Unauthenticated` / `PermissionDenied`;
//! - `RunSession`: the proposal names the caller as coordinator; the node
//!   then checks the proposal's shape and the client authority behind it
//!   ([`crate::authority`]) before running its part;
//! - `Deliver`: the envelope's sender index is the caller's index in a
//!   session this node agreed to, in a round the schedule expects (the
//!   external party's index only from the session's relay, with the
//!   party's signature); `to_external`: for the mailbox of an external
//!   party this node relays ([`crate::relay`]);
//! - `FinalizeKey`, `FinalizeAux`, `FinalizePresignature`: see the
//!   [`Node`] methods they call (every party's attestation, the
//!   session's coordinator only);
//! - `ListKeyIds`, `GetKeyMeta` (the active record, the acknowledged
//!   pending epoch, or with `epoch` a retired epoch's whole record):
//!   public, attested metadata only; the asker checks every signature in
//!   it against its own configuration before it acts on it.

use std::sync::Arc;
use std::time::Duration;

use sigil_proto::peer::peer_server::Peer;
use sigil_proto::peer::{
    DeliverAck, Envelope, FinalizeAuxRequest, FinalizeAuxResponse, FinalizeKeyRequest, FinalizeKeyResponse,
    FinalizePresignatureRequest, FinalizePresignatureResponse, GetKeyMetaRequest, KeyMeta, ListKeyIdsRequest,
    ListKeyIdsResponse, SessionOutcome, SessionProposal,
};
use tonic::{Request, Response, Status};

use crate::certs::node_id_of_cert;
use crate::session::Reject;
use crate::wire::session_status;
use crate::Node;

/// How long an envelope for a not-yet-registered session is held.
const EARLY_MESSAGE_WAIT: Duration = Duration::from_millis(250);

/// What a node does with a peer's request, once the caller's node id is
/// known (from its certificate, or in-process by construction). Errors are
/// the gRPC statuses the peer sees.
#[derive(Clone)]
pub struct Handler {
    node: Arc<Node>,
    caller: u16,
}

impl Handler {
    /// The handler of `node` for requests of node `caller`.
    ///
    /// # Errors
    /// `PermissionDenied` when `caller` is not another node of the cluster.
    pub fn new(node: Arc<Node>, caller: u16) -> Result<Self, Status> {
        if !node.members().contains(caller) || caller == node.cfg.node_id {
            return Err(Status::permission_denied(format!(
                "node {caller} is not a peer of this cluster"
            )));
        }
        Ok(Handler { node, caller })
    }

    /// `RunSession`: this node's part of the caller's proposal.
    ///
    /// # Errors
    /// The session's failure, encoded by [`session_status`].
    pub async fn run_session(self, p: SessionProposal) -> Result<SessionOutcome, Status> {
        self.node
            .participate(self.caller, p)
            .await
            .map_err(|e| session_status(&e))
    }

    /// `Deliver`: routes one protocol message into its session.
    ///
    /// # Errors
    /// `NotFound` for an unknown session (the sender retries until its
    /// deadline); `PermissionDenied`, `FailedPrecondition`,
    /// `AlreadyExists`, `InvalidArgument` for a message the session refuses.
    pub async fn deliver(self, env: Envelope) -> Result<DeliverAck, Status> {
        let caller = self.caller;
        let routed = if env.to_external {
            // For the external party this node relays.
            self.node.relay().queue_from_node(caller, &env)
        } else {
            self.node.sessions.route_wait(caller, &env, EARLY_MESSAGE_WAIT).await
        };
        match routed {
            Ok(()) => {
                metrics::counter!("sigil_peer_messages_accepted_total").increment(1);
                Ok(DeliverAck {})
            }
            Err(r) => {
                metrics::counter!("sigil_peer_messages_rejected_total", "reason" => r.reason()).increment(1);
                let sid = hex::encode(env.session_id.get(..8).unwrap_or_default());
                match &r {
                    Reject::UnknownSession => {
                        tracing::debug!(from = caller, session = %sid, round = env.round, "message for an unknown session")
                    }
                    other => tracing::warn!(
                        from = caller,
                        session = %sid,
                        round = env.round,
                        party = env.from,
                        reason = other.reason(),
                        detail = ?other,
                        "dropped a peer message"
                    ),
                }
                Err(match r {
                    Reject::UnknownSession => Status::not_found("unknown session"),
                    Reject::WrongSender => Status::permission_denied("sender index does not match the certificate"),
                    Reject::UnexpectedRound => Status::failed_precondition("message not expected"),
                    Reject::Duplicate => Status::already_exists("duplicate message"),
                    Reject::Garbage(_) => Status::invalid_argument("payload does not decode"),
                    Reject::Unauthentic(_) => {
                        Status::permission_denied("relayed message: signature or encryption does not verify")
                    }
                })
            }
        }
    }

    /// `FinalizeKey`: commit or abort a key after its DKG.
    ///
    /// # Errors
    /// See [`Node::finalize_key`].
    pub async fn finalize_key(self, r: FinalizeKeyRequest) -> Result<FinalizeKeyResponse, Status> {
        self.node
            .finalize_key_acked(Some(self.caller), r)
            .await
            .map(|activation| FinalizeKeyResponse { activation })
            .map_err(|e| session_status(&e))
    }

    /// `ListKeyIds`: a page of this node's active key ids.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn list_key_ids(self, r: ListKeyIdsRequest) -> Result<ListKeyIdsResponse, Status> {
        self.node
            .active_key_ids(&r.after, r.limit)
            .await
            .map(|page| {
                let (key_ids, epochs) = page.into_iter().unzip();
                ListKeyIdsResponse { key_ids, epochs }
            })
            .map_err(|e| session_status(&e))
    }

    /// `GetKeyMeta`: the public metadata of an active key, or (`pending`)
    /// of this node's acknowledged pending epoch of it, or (`epoch`) its
    /// whole attested record of that epoch. Any node may ask: every
    /// answer is public and attested, and the asker checks it.
    ///
    /// # Errors
    /// `NotFound` when this node holds no such key (or epoch).
    pub async fn get_key_meta(self, r: GetKeyMetaRequest) -> Result<KeyMeta, Status> {
        let meta = match (r.epoch, r.pending) {
            (Some(epoch), _) => self.node.epoch_meta(&r.key_id, epoch).await,
            (None, true) => self.node.acked_epoch_meta(&r.key_id).await,
            (None, false) => self.node.active_key_meta(&r.key_id).await,
        };
        match meta {
            Ok(Some(meta)) => Ok(meta),
            Ok(None) => Err(Status::not_found(format!("no such key or epoch {:?}", r.key_id))),
            Err(e) => Err(session_status(&e)),
        }
    }

    /// `FinalizeAux`: commit pending aux info on every party's attestation.
    ///
    /// # Errors
    /// See [`Node::finalize_aux`].
    pub async fn finalize_aux(self, r: FinalizeAuxRequest) -> Result<FinalizeAuxResponse, Status> {
        self.node
            .finalize_aux(self.caller, r)
            .await
            .map(|()| FinalizeAuxResponse {})
            .map_err(|e| session_status(&e))
    }

    /// `FinalizePresignature`: pool or discard a pending presignature.
    ///
    /// # Errors
    /// See [`Node::finalize_presignature`].
    pub async fn finalize_presignature(
        self,
        r: FinalizePresignatureRequest,
    ) -> Result<FinalizePresignatureResponse, Status> {
        self.node
            .finalize_presignature(self.caller, &r.session_id, r.commit)
            .await
            .map(|()| FinalizePresignatureResponse {})
            .map_err(|e| session_status(&e))
    }
}

/// The `sigil.peer.v1.Peer` service of a node.
pub struct PeerService {
    node: Arc<Node>,
}

impl PeerService {
    /// Serves `node`.
    pub fn new(node: Arc<Node>) -> Self {
        PeerService { node }
    }

    /// The handler for the calling node, identified by its verified client
    /// certificate.
    fn handler<T>(&self, req: &Request<T>) -> Result<Handler, Status> {
        let certs = req
            .peer_certs()
            .ok_or_else(|| Status::unauthenticated("a client certificate is required"))?;
        let id = certs
            .first()
            .and_then(|c| node_id_of_cert(c.as_ref()))
            .ok_or_else(|| Status::unauthenticated("the client certificate names no node"))?;
        Handler::new(self.node.clone(), id)
    }
}

#[tonic::async_trait]
impl Peer for PeerService {
    async fn run_session(&self, req: Request<SessionProposal>) -> Result<Response<SessionOutcome>, Status> {
        let h = self.handler(&req)?;
        h.run_session(req.into_inner()).await.map(Response::new)
    }

    async fn deliver(&self, req: Request<Envelope>) -> Result<Response<DeliverAck>, Status> {
        let h = self.handler(&req)?;
        h.deliver(req.into_inner()).await.map(Response::new)
    }

    async fn finalize_key(&self, req: Request<FinalizeKeyRequest>) -> Result<Response<FinalizeKeyResponse>, Status> {
        let h = self.handler(&req)?;
        h.finalize_key(req.into_inner()).await.map(Response::new)
    }

    async fn list_key_ids(&self, req: Request<ListKeyIdsRequest>) -> Result<Response<ListKeyIdsResponse>, Status> {
        let h = self.handler(&req)?;
        h.list_key_ids(req.into_inner()).await.map(Response::new)
    }

    async fn get_key_meta(&self, req: Request<GetKeyMetaRequest>) -> Result<Response<KeyMeta>, Status> {
        let h = self.handler(&req)?;
        h.get_key_meta(req.into_inner()).await.map(Response::new)
    }

    async fn finalize_aux(&self, req: Request<FinalizeAuxRequest>) -> Result<Response<FinalizeAuxResponse>, Status> {
        let h = self.handler(&req)?;
        h.finalize_aux(req.into_inner()).await.map(Response::new)
    }

    async fn finalize_presignature(
        &self,
        req: Request<FinalizePresignatureRequest>,
    ) -> Result<Response<FinalizePresignatureResponse>, Status> {
        let h = self.handler(&req)?;
        h.finalize_presignature(req.into_inner()).await.map(Response::new)
    }
}
