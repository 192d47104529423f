//! Errors of the node ([`NodeError`], [`SessionError`]) and of the REST
//! API ([`ApiError`]). A node's operations return [`NodeError`]; the API
//! module maps it to HTTP (`From<NodeError> for ApiError`), and the peer
//! wire carries [`SessionError`] as a gRPC status ([`crate::wire`]).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// Why a session failed, with node ids (not party indices).
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum SessionError {
    /// The protocol failed; `culprits` are the nodes it proves misbehaved.
    #[error("protocol failed: {reason}{}", culprit_suffix(culprits))]
    Protocol {
        /// Node ids of the provably faulty parties (may be empty).
        culprits: Vec<u16>,
        /// The protocol's error.
        reason: String,
    },
    /// The deadline passed while we waited for these nodes.
    #[error("session deadline passed waiting for node(s) {missing:?} in round {round}")]
    Timeout {
        /// Round we were stuck in (0-based).
        round: u16,
        /// Node ids that sent nothing for that round.
        missing: Vec<u16>,
    },
    /// These nodes could not be reached or refused the session.
    #[error("node(s) {nodes:?} unavailable: {reason}")]
    Unavailable {
        /// Node ids.
        nodes: Vec<u16>,
        /// What happened.
        reason: String,
    },
    /// The session request itself is invalid.
    #[error("invalid session: {0}")]
    Invalid(String),
    /// The client's authorization (or the caller's role) does not allow
    /// it; `node` is the node that refused.
    #[error("node {node} refused: {refusal}")]
    Refused {
        /// The refusing node.
        node: u16,
        /// Why.
        refusal: crate::auth::Refusal,
    },
    /// `node` has no room for the session now (its limit for the kind is
    /// reached and its queue is full); retry later or elsewhere.
    #[error("node {node} is busy: {reason}")]
    Busy {
        /// The busy node.
        node: u16,
        /// Which limit.
        reason: String,
    },
    /// This node's store is unreachable (the database is down); what
    /// needs no storage write still works.
    #[error("store unavailable: {0}")]
    StoreUnavailable(String),
    /// Storage or another local failure.
    #[error("internal: {0}")]
    Internal(String),
}

impl From<sigil_store::StoreError> for SessionError {
    /// An unreachable store is [`SessionError::StoreUnavailable`]; every
    /// other store failure is internal.
    fn from(e: sigil_store::StoreError) -> Self {
        if e.is_unavailable() {
            SessionError::StoreUnavailable(e.to_string())
        } else {
            SessionError::Internal(e.to_string())
        }
    }
}

fn culprit_suffix(culprits: &[u16]) -> String {
    if culprits.is_empty() {
        String::new()
    } else {
        format!(" (culprits: node(s) {culprits:?})")
    }
}

impl SessionError {
    /// The stable code of the error, as API bodies and audit records carry
    /// it (a refusal's reason for [`SessionError::Refused`]).
    pub fn code(&self) -> &'static str {
        match self {
            SessionError::Protocol { .. } => "protocol_failed",
            SessionError::Timeout { .. } => "party_timeout",
            SessionError::Unavailable { .. } => "party_unavailable",
            SessionError::Invalid(_) => "bad_request",
            SessionError::Refused { refusal, .. } => refusal.reason(),
            SessionError::StoreUnavailable(_) => "store_unavailable",
            SessionError::Busy { .. } => "busy",
            SessionError::Internal(_) => "internal",
        }
    }

    /// Every node this error names: culprits, silent or unreachable nodes.
    pub fn nodes(&self) -> Vec<u16> {
        match self {
            SessionError::Protocol { culprits, .. } => culprits.clone(),
            SessionError::Timeout { missing, .. } => missing.clone(),
            SessionError::Unavailable { nodes, .. } => nodes.clone(),
            SessionError::Refused { node, .. } | SessionError::Busy { node, .. } => vec![*node],
            SessionError::Invalid(_) | SessionError::StoreUnavailable(_) | SessionError::Internal(_) => Vec::new(),
        }
    }
}

/// Why an operation of the node (key creation, signing, decryption, key
/// lookup) failed.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The request is malformed or asks what the key cannot do (HTTP 400).
    #[error("{0}")]
    BadRequest(String),
    /// No such key here (HTTP 404).
    #[error("{0}")]
    NotFound(String),
    /// The client may not do this (HTTP 401/403).
    #[error("{0}")]
    Refused(crate::auth::Refusal),
    /// A session failed; names the nodes at fault or unreachable.
    #[error(transparent)]
    Session(#[from] SessionError),
    /// This node's store failed (HTTP 503 when it is unreachable).
    #[error(transparent)]
    Store(#[from] sigil_store::StoreError),
    /// A key generation ran past its time budget (HTTP 504).
    #[error("{0}")]
    Budget(String),
}

impl NodeError {
    /// A [`NodeError::BadRequest`].
    pub fn bad_request(message: impl Into<String>) -> Self {
        NodeError::BadRequest(message.into())
    }
    /// A [`NodeError::NotFound`].
    pub fn not_found(message: impl Into<String>) -> Self {
        NodeError::NotFound(message.into())
    }
    /// A [`NodeError::Refused`].
    pub fn refused(r: &crate::auth::Refusal) -> Self {
        NodeError::Refused(r.clone())
    }
    /// An internal failure (a [`SessionError::Internal`]); the detail is
    /// logged where it becomes a response, never returned.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        NodeError::Session(SessionError::Internal(detail.to_string()))
    }
    /// The nodes the error names.
    pub fn nodes(&self) -> Vec<u16> {
        match self {
            NodeError::Session(e) => e.nodes(),
            _ => Vec::new(),
        }
    }
}

/// JSON error body: `{"error": {"code", "message", "nodes"?}}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// The error inside [`ErrorBody`].
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code (`bad_request`, `not_found`,
    /// `payload_too_large`, `party_timeout`, the refusal reasons
    /// `missing_token`, `malformed_token`, `unknown_client`,
    /// `wrong_algorithm`, `bad_signature`, `wrong_audience`, `expired`,
    /// `replayed`, `body_mismatch`, `forbidden`, `ip_not_allowed`, `busy`;
    /// `party_unavailable`, `protocol_failed`, `internal`).
    pub code: &'static str,
    /// Human-readable explanation; never contains secrets.
    pub message: String,
    /// Node ids the error names (culprits, silent or unreachable nodes).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<u16>,
}

/// An API error: a status, a code and a message.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    nodes: Vec<u16>,
}

impl ApiError {
    /// 400 `bad_request`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code: "bad_request",
            message: message.into(),
            nodes: vec![],
        }
    }
    /// 404 `not_found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            code: "not_found",
            message: message.into(),
            nodes: vec![],
        }
    }
    /// 401 (who the client is) or 403 (what it may do, or `busy` 503),
    /// with the refusal's reason as the code.
    pub fn refused(r: &crate::auth::Refusal) -> Self {
        let status = match r {
            crate::auth::Refusal::Busy => StatusCode::SERVICE_UNAVAILABLE,
            r if r.is_authentication() => StatusCode::UNAUTHORIZED,
            _ => StatusCode::FORBIDDEN,
        };
        Self {
            status,
            code: r.reason(),
            message: r.to_string(),
            nodes: vec![],
        }
    }
    /// The same error naming `nodes`.
    #[must_use]
    pub fn with_nodes(mut self, nodes: Vec<u16>) -> Self {
        self.nodes = nodes;
        self
    }
    /// 500 `internal`; the detail is logged, not returned.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "internal error");
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "internal",
            message: "internal error".into(),
            nodes: vec![],
        }
    }
    /// 503 `party_unavailable`, naming `nodes` (or a full node).
    pub fn unavailable(nodes: Vec<u16>, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "party_unavailable",
            message: message.into(),
            nodes,
        }
    }
    /// The HTTP status and the body's detail.
    #[must_use]
    pub fn detail(&self) -> (u16, ErrorDetail) {
        (
            self.status.as_u16(),
            ErrorDetail {
                code: self.code,
                message: self.message.clone(),
                nodes: self.nodes.clone(),
            },
        )
    }
    /// Any status with a code.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            nodes: vec![],
        }
    }
}

impl From<SessionError> for ApiError {
    fn from(e: SessionError) -> Self {
        let nodes = e.nodes();
        let status = match &e {
            SessionError::Protocol { .. } => StatusCode::BAD_GATEWAY,
            SessionError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            SessionError::Unavailable { .. } | SessionError::StoreUnavailable(_) | SessionError::Busy { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            SessionError::Invalid(_) => StatusCode::BAD_REQUEST,
            SessionError::Refused { refusal, .. } => return ApiError::refused(refusal).with_nodes(nodes),
            SessionError::Internal(_) => return ApiError::internal(e),
        };
        ApiError {
            status,
            code: e.code(),
            message: e.to_string(),
            nodes,
        }
    }
}

impl From<sigil_store::StoreError> for ApiError {
    fn from(e: sigil_store::StoreError) -> Self {
        if e.is_unavailable() {
            tracing::warn!(error = %e, "store unavailable");
            return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", e.to_string());
        }
        ApiError::internal(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message,
                nodes: self.nodes,
            },
        };
        (self.status, axum::Json(body)).into_response()
    }
}
