//! `sigil.v1.Signer`: the client-facing gRPC API, a thin door over the
//! same functions the REST API calls ([`crate::api::start_keygen`],
//! [`crate::api::start_sign`], the relay of [`crate::relay`]), served
//! with `grpc.health.v1` and server reflection (so `grpcurl` lists and
//! calls it) on `listen_grpc`, over TLS (`grpc_tls`; with `client_ca`,
//! mutual TLS) or plaintext on loopback.
//!
//! Who may call what: every call carries the client's signed token in
//! the `authorization` metadata, bound to the REST request it mirrors
//! (see `signer.proto`); [`Node::admit_request`] checks it as the REST
//! door does (signature with this node's copy of the client key,
//! audience, lifetime, method, path, body hash, single use, role), after
//! the caller's address is checked against `allowed_ips`. Session calls
//! answer only the session's own client. Errors: `Unauthenticated` and
//! `PermissionDenied` for refusals, `InvalidArgument` for bad input,
//! `NotFound`, `FailedPrecondition` (out of schedule, ended),
//! `AlreadyExists` (another message in that slot), and the session
//! failures as the REST statuses map them (`Unavailable`,
//! `DeadlineExceeded`, `Aborted`).

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use sigil_crypto::relay::RelayMessage;
use sigil_crypto::SessionId;
use sigil_proto::signer::signer_server::Signer;
use sigil_proto::signer::{
    PingRequest, PingResponse, RelayedMessage, SessionStatus, StartRequest, StartSignRequest, StatusRequest,
    StreamRequest, SubmitRequest, SubmitResponse,
};
use tonic::{Request, Response, Status};

use crate::api::{self, KeygenStarted, SignStarted};
use crate::error::ApiError;
use crate::relay::{Mailbox, SessionKindView, SubmitRefusal};
use crate::{Node, RequestAuth, SessionView};

/// The `sigil.v1.Signer` service of a node.
pub struct SignerService {
    node: Arc<Node>,
}

impl SignerService {
    /// The service of `node`.
    pub fn new(node: Arc<Node>) -> Self {
        SignerService { node }
    }

    /// The door: the caller's address, then its token for `method path`
    /// over `body`.
    async fn admit<T>(
        &self,
        req: &Request<T>,
        method: &str,
        path: String,
        body: Vec<u8>,
    ) -> Result<RequestAuth, Status> {
        let ip = req.remote_addr().map(|a| a.ip());
        if !ip.is_some_and(|ip| self.node.cfg.allowed_ips.iter().any(|net| net.contains(&ip))) {
            metrics::counter!("sigil_auth_refusals_total", "reason" => "ip_not_allowed").increment(1);
            return Err(Status::permission_denied(
                "ip_not_allowed: the caller's address is not allowed",
            ));
        }
        let token = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .unwrap_or_default()
            .to_string();
        let limit = self.node.body_limit(method, &path);
        if body.len() > limit {
            return Err(Status::invalid_argument(format!(
                "payload_too_large: a body of {} bytes is over the limit of {limit} bytes",
                body.len()
            )));
        }
        let role = api::required_role(method, &path);
        let operation = api::operation_of(method, &path);
        self.node
            .admit_request(token, method, path, body, role, operation)
            .await
            .map_err(|r| api_status(&ApiError::refused(&r)))
    }
}

/// An API error as a gRPC status (by its HTTP status), with its code and
/// message (and the nodes it names).
fn api_status(e: &ApiError) -> Status {
    let (status, d) = e.detail();
    let message = if d.nodes.is_empty() {
        format!("{}: {}", d.code, d.message)
    } else {
        format!("{}: {} (nodes {:?})", d.code, d.message, d.nodes)
    };
    match status {
        400 | 413 => Status::invalid_argument(message),
        401 => Status::unauthenticated(message),
        403 => Status::permission_denied(message),
        404 => Status::not_found(message),
        409 => Status::already_exists(message),
        410 => Status::failed_precondition(message),
        502 => Status::aborted(message),
        503 => Status::unavailable(message),
        504 => Status::deadline_exceeded(message),
        _ => Status::internal(message),
    }
}

/// A relay refusal as a gRPC status.
fn refusal_status(e: &SubmitRefusal) -> Status {
    let message = format!("{}: {e}", e.reason());
    match e {
        SubmitRefusal::UnknownSession(_) => Status::not_found(message),
        SubmitRefusal::Ended | SubmitRefusal::OutOfSchedule(_) => Status::failed_precondition(message),
        SubmitRefusal::NotAMember(_) => Status::permission_denied(message),
        SubmitRefusal::Conflict(_) => Status::already_exists(message),
        SubmitRefusal::Unauthentic(_) => Status::invalid_argument(message),
    }
}

fn session_id(text: &str) -> Result<SessionId, Status> {
    hex::decode(text)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| Status::invalid_argument("session_id must be 64 hex characters"))
}

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

fn status_of(view: &SessionView) -> SessionStatus {
    SessionStatus {
        session_id: view.session_id.clone(),
        state: view.state.to_string(),
        round: view.round.map(u32::from).unwrap_or_default(),
        awaiting: view.awaiting.iter().map(|&n| u32::from(n)).collect(),
        json: json(view),
    }
}

/// A finished nodes-only operation as a status.
fn done(json: String) -> SessionStatus {
    SessionStatus {
        state: "succeeded".into(),
        json,
        ..SessionStatus::default()
    }
}

fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Status> {
    serde_json::from_slice(body).map_err(|e| Status::invalid_argument(format!("body: {e}")))
}

/// A key id as it may appear in a path.
fn key_id(text: &str) -> Result<&str, Status> {
    let ok = !text.is_empty()
        && text.len() <= 64
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    ok.then_some(text)
        .ok_or_else(|| Status::invalid_argument("key_id: 1 to 64 letters, digits, '-' or '_'"))
}

type MessageStream = Pin<Box<dyn Stream<Item = Result<RelayedMessage, Status>> + Send>>;

/// The messages of `mailbox` after `after`, as they arrive, until the
/// session has ended and every message was sent.
fn message_stream(mailbox: Arc<Mailbox>, after: u64) -> MessageStream {
    let state = (mailbox, after, VecDeque::<(u64, RelayMessage)>::new());
    Box::pin(futures::stream::unfold(
        state,
        |(mailbox, mut after, mut queue)| async move {
            loop {
                if let Some((seq, m)) = queue.pop_front() {
                    after = seq;
                    let item = RelayedMessage { seq, json: json(&m) };
                    return Some((Ok(item), (mailbox, after, queue)));
                }
                let ended = mailbox.outcome().is_some();
                queue.extend(mailbox.messages_after(after, Duration::from_secs(20)).await);
                if queue.is_empty() && ended {
                    return None;
                }
            }
        },
    ))
}

#[tonic::async_trait]
impl Signer for SignerService {
    async fn start_dkg(&self, req: Request<StartRequest>) -> Result<Response<SessionStatus>, Status> {
        let body = req.get_ref().body.clone();
        let auth = self.admit(&req, "POST", "/v1/keys".into(), body.clone()).await?;
        let create = parse_body(&body)?;
        let status = match api::start_keygen(self.node.clone(), auth, create, true).await {
            Ok(KeygenStarted::Relayed(view)) => status_of(&view),
            Ok(KeygenStarted::Created(key)) => done(json(&key)),
            Ok(KeygenStarted::Operation(op)) => SessionStatus {
                state: "running".into(),
                json: json(&op.view()),
                ..SessionStatus::default()
            },
            Err(e) => return Err(api_status(&e)),
        };
        Ok(Response::new(status))
    }

    async fn get_dkg_status(&self, req: Request<StatusRequest>) -> Result<Response<SessionStatus>, Status> {
        self.status(req, SessionKindView::Dkg).await
    }

    async fn start_sign(&self, req: Request<StartSignRequest>) -> Result<Response<SessionStatus>, Status> {
        let key = key_id(&req.get_ref().key_id)?.to_string();
        let body = req.get_ref().body.clone();
        let auth = self
            .admit(&req, "POST", format!("/v1/keys/{key}/sign"), body.clone())
            .await?;
        let sign = parse_body(&body)?;
        let status = match api::start_sign(self.node.clone(), &key, auth, sign).await {
            Ok(SignStarted::Relayed(view)) => status_of(&view),
            Ok(SignStarted::Signed(s)) => done(json(&s)),
            Err(e) => return Err(api_status(&e)),
        };
        Ok(Response::new(status))
    }

    async fn get_sign_status(&self, req: Request<StatusRequest>) -> Result<Response<SessionStatus>, Status> {
        self.status(req, SessionKindView::Sign).await
    }

    async fn submit_protocol_message(&self, req: Request<SubmitRequest>) -> Result<Response<SubmitResponse>, Status> {
        let (id, body) = (req.get_ref().session_id.clone(), req.get_ref().body.clone());
        let sid = session_id(&id)?;
        let auth = self
            .admit(&req, "POST", format!("/v1/sessions/{id}/messages"), body.clone())
            .await?;
        let m: RelayMessage = parse_body(&body)?;
        if m.session_id != sid {
            return Err(Status::invalid_argument("the message is for another session"));
        }
        match self.node.submit_from_party(&auth, m).await {
            Ok(duplicate) => Ok(Response::new(SubmitResponse { duplicate })),
            Err(e) => Err(refusal_status(&e)),
        }
    }

    type StreamMessagesStream = MessageStream;

    async fn stream_messages(&self, req: Request<StreamRequest>) -> Result<Response<MessageStream>, Status> {
        let id = req.get_ref().session_id.clone();
        let sid = session_id(&id)?;
        let auth = self
            .admit(&req, "GET", format!("/v1/sessions/{id}/messages"), Vec::new())
            .await?;
        let mailbox = self
            .node
            .relay()
            .of_client(&sid, &auth.client)
            .map_err(|e| refusal_status(&e))?;
        Ok(Response::new(message_stream(mailbox, req.get_ref().after)))
    }

    async fn ping(&self, req: Request<PingRequest>) -> Result<Response<PingResponse>, Status> {
        self.admit(&req, "GET", "/health".into(), Vec::new()).await?;
        Ok(Response::new(PingResponse {
            node_id: u32::from(self.node.cfg.node_id),
            version: env!("CARGO_PKG_VERSION").into(),
        }))
    }
}

impl SignerService {
    /// `GetDKGStatus` / `GetSignStatus`: the caller's session of `kind`.
    async fn status(
        &self,
        req: Request<StatusRequest>,
        kind: SessionKindView,
    ) -> Result<Response<SessionStatus>, Status> {
        let id = req.get_ref().session_id.clone();
        let sid = session_id(&id)?;
        let wait = Duration::from_millis(u64::from(req.get_ref().wait_ms.min(30_000)));
        let auth = self
            .admit(&req, "GET", format!("/v1/sessions/{id}"), Vec::new())
            .await?;
        let view = self
            .node
            .session_view(&sid, &auth.client, wait)
            .await
            .map_err(|e| refusal_status(&e))?;
        if view.kind != kind {
            return Err(Status::not_found(format!("session {id} is not a {kind:?} session")));
        }
        Ok(Response::new(status_of(&view)))
    }
}
