//! Peer transport: gRPC `sigil.peer.v1.Peer` over mutual TLS.
//!
//! The service impl is thin: it learns the caller's node id from its client
//! certificate and hands the request to [`crate::Node`].

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
use crate::error::SessionError;
use crate::Node;

/// How long an envelope for a not-yet-registered session is held.
const EARLY_MESSAGE_WAIT: Duration = Duration::from_millis(250);

pub use crate::transport::PeerClients;

/// Encodes a [`SessionError`] into a gRPC status (JSON in the details).
pub fn session_status(e: &SessionError) -> Status {
    let code = match e {
        SessionError::Invalid(_) => tonic::Code::InvalidArgument,
        SessionError::Refused { refusal, .. } if refusal.is_authentication() => tonic::Code::Unauthenticated,
        SessionError::Refused { .. } => tonic::Code::PermissionDenied,
        SessionError::Unavailable { .. } => tonic::Code::FailedPrecondition,
        SessionError::Timeout { .. } => tonic::Code::DeadlineExceeded,
        SessionError::Protocol { .. } => tonic::Code::Aborted,
        SessionError::Internal(_) => tonic::Code::Internal,
    };
    let details = serde_json::to_vec(&WireError::from(e)).unwrap_or_default();
    Status::with_details(code, e.to_string(), details.into())
}

/// Decodes what [`session_status`] encoded by node `node`; other statuses
/// become `Unavailable` naming `node`. A remote error names at most
/// `node` itself: a peer's word never marks another node down or blames
/// it (its claim stays in the message).
pub fn status_session_error(node: u16, s: &Status) -> SessionError {
    if let Ok(mut w) = serde_json::from_slice::<WireError>(s.details()) {
        if w.nodes.iter().any(|&n| n != node) {
            w.message = format!("node {node} reports nodes {:?}: {}", w.nodes, w.message);
        }
        w.nodes.retain(|&n| n == node);
        if w.kind == "unavailable" || w.kind == "refused" {
            w.nodes = vec![node];
        }
        return w.into();
    }
    SessionError::Unavailable {
        nodes: vec![node],
        reason: format!("{:?}: {}", s.code(), s.message()),
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct WireError {
    kind: String,
    nodes: Vec<u16>,
    round: u16,
    message: String,
}

impl From<&SessionError> for WireError {
    fn from(e: &SessionError) -> Self {
        let (kind, message, round) = match e {
            SessionError::Protocol { reason, .. } => ("protocol", reason.clone(), 0),
            SessionError::Timeout { round, .. } => ("timeout", String::new(), *round),
            SessionError::Unavailable { reason, .. } => ("unavailable", reason.clone(), 0),
            SessionError::Invalid(m) => ("invalid", m.clone(), 0),
            SessionError::Refused { refusal, .. } => ("refused", refusal.reason().to_string(), 0),
            SessionError::Internal(_) => ("internal", "internal error".to_string(), 0),
        };
        WireError {
            kind: kind.into(),
            nodes: e.nodes(),
            round,
            message,
        }
    }
}

impl From<WireError> for SessionError {
    fn from(w: WireError) -> Self {
        match w.kind.as_str() {
            "protocol" => SessionError::Protocol {
                culprits: w.nodes,
                reason: w.message,
            },
            "timeout" => SessionError::Timeout {
                round: w.round,
                missing: w.nodes,
            },
            "unavailable" => SessionError::Unavailable {
                nodes: w.nodes,
                reason: w.message,
            },
            "invalid" => SessionError::Invalid(w.message),
            "refused" => SessionError::Refused {
                node: w.nodes.first().copied().unwrap_or_default(),
                refusal: crate::auth::Refusal::from_reason(&w.message),
            },
            _ => SessionError::Internal(w.message),
        }
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

    /// The calling node's id, from its verified client certificate.
    fn caller<T>(&self, req: &Request<T>) -> Result<u16, Status> {
        let certs = req
            .peer_certs()
            .ok_or_else(|| Status::unauthenticated("a client certificate is required"))?;
        let id = certs
            .first()
            .and_then(|c| node_id_of_cert(c.as_ref()))
            .ok_or_else(|| Status::unauthenticated("the client certificate names no node"))?;
        if !self.node.cfg.nodes.iter().any(|n| n.id == id) || id == self.node.cfg.node_id {
            return Err(Status::permission_denied(format!(
                "node {id} is not a peer of this cluster"
            )));
        }
        Ok(id)
    }
}

#[tonic::async_trait]
impl Peer for PeerService {
    async fn run_session(&self, req: Request<SessionProposal>) -> Result<Response<SessionOutcome>, Status> {
        let caller = self.caller(&req)?;
        self.node
            .participate(caller, req.into_inner())
            .await
            .map(Response::new)
            .map_err(|e| session_status(&e))
    }

    async fn deliver(&self, req: Request<Envelope>) -> Result<Response<DeliverAck>, Status> {
        let caller = self.caller(&req)?;
        let env = req.into_inner();
        match self.node.sessions.route_wait(caller, &env, EARLY_MESSAGE_WAIT).await {
            Ok(()) => {
                metrics::counter!("sigil_peer_messages_accepted_total").increment(1);
                Ok(Response::new(DeliverAck {}))
            }
            Err(r) => {
                metrics::counter!("sigil_peer_messages_rejected_total", "reason" => r.reason()).increment(1);
                let sid = hex::encode(env.session_id.get(..8).unwrap_or_default());
                match &r {
                    crate::session::Reject::UnknownSession => {
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
                    crate::session::Reject::UnknownSession => Status::not_found("unknown session"),
                    crate::session::Reject::WrongSender => {
                        Status::permission_denied("sender index does not match the certificate")
                    }
                    crate::session::Reject::UnexpectedRound => Status::failed_precondition("message not expected"),
                    crate::session::Reject::Duplicate => Status::already_exists("duplicate message"),
                    crate::session::Reject::Garbage(_) => Status::invalid_argument("payload does not decode"),
                })
            }
        }
    }

    async fn finalize_key(&self, req: Request<FinalizeKeyRequest>) -> Result<Response<FinalizeKeyResponse>, Status> {
        let caller = self.caller(&req)?;
        self.node
            .finalize_key(Some(caller), req.into_inner())
            .await
            .map(|()| Response::new(FinalizeKeyResponse {}))
            .map_err(|e| session_status(&e))
    }

    async fn list_key_ids(&self, req: Request<ListKeyIdsRequest>) -> Result<Response<ListKeyIdsResponse>, Status> {
        let _caller = self.caller(&req)?;
        let r = req.into_inner();
        self.node
            .active_key_ids(&r.after, r.limit)
            .await
            .map(|key_ids| Response::new(ListKeyIdsResponse { key_ids }))
            .map_err(|e| session_status(&e))
    }

    async fn get_key_meta(&self, req: Request<GetKeyMetaRequest>) -> Result<Response<KeyMeta>, Status> {
        let _caller = self.caller(&req)?;
        let id = req.into_inner().key_id;
        match self.node.active_key_meta(&id).await {
            Ok(Some(meta)) => Ok(Response::new(meta)),
            Ok(None) => Err(Status::not_found(format!("no active key {id:?}"))),
            Err(e) => Err(session_status(&e)),
        }
    }

    async fn finalize_aux(&self, req: Request<FinalizeAuxRequest>) -> Result<Response<FinalizeAuxResponse>, Status> {
        let caller = self.caller(&req)?;
        self.node
            .finalize_aux(caller, req.into_inner())
            .await
            .map(|()| Response::new(FinalizeAuxResponse {}))
            .map_err(|e| session_status(&e))
    }

    async fn finalize_presignature(
        &self,
        req: Request<FinalizePresignatureRequest>,
    ) -> Result<Response<FinalizePresignatureResponse>, Status> {
        let caller = self.caller(&req)?;
        let r = req.into_inner();
        self.node
            .finalize_presignature(caller, &r.session_id, r.commit)
            .await
            .map(|()| Response::new(FinalizePresignatureResponse {}))
            .map_err(|e| session_status(&e))
    }
}
