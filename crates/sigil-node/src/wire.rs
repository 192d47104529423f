//! Errors on the peer wire: a [`SessionError`] travels as a gRPC status
//! whose details carry it as JSON, and comes back as the same error, except
//! that a remote error names at most the node that sent it.

use tonic::Status;

use crate::error::SessionError;

/// Encodes a [`SessionError`] into a gRPC status (JSON in the details).
pub fn session_status(e: &SessionError) -> Status {
    let code = match e {
        SessionError::Invalid(_) => tonic::Code::InvalidArgument,
        SessionError::Refused { refusal, .. } if refusal.is_authentication() => tonic::Code::Unauthenticated,
        SessionError::Refused { .. } => tonic::Code::PermissionDenied,
        SessionError::Unavailable { .. } => tonic::Code::FailedPrecondition,
        SessionError::StoreUnavailable(_) => tonic::Code::Unavailable,
        SessionError::Busy { .. } => tonic::Code::ResourceExhausted,
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
        if w.kind == "unavailable" || w.kind == "refused" || w.kind == "busy" {
            w.nodes = vec![node];
        }
        return w.into();
    }
    // Transport detail (addresses, OS errors) is logged, not relayed.
    tracing::debug!(node, code = ?s.code(), message = s.message(), "peer call failed");
    SessionError::Unavailable {
        nodes: vec![node],
        reason: format!("no answer from node {node} ({})", code_name(s.code())),
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
            // The peer's store is down: to its coordinator it is an
            // unavailable party (named by the receiving side).
            SessionError::StoreUnavailable(m) => ("unavailable", format!("store unavailable: {m}"), 0),
            SessionError::Busy { reason, .. } => ("busy", reason.clone(), 0),
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
            "busy" => SessionError::Busy {
                node: w.nodes.first().copied().unwrap_or_default(),
                reason: w.message,
            },
            "refused" => SessionError::Refused {
                node: w.nodes.first().copied().unwrap_or_default(),
                refusal: crate::auth::Refusal::from_reason(&w.message),
            },
            _ => SessionError::Internal(w.message),
        }
    }
}

/// A short, stable name of a gRPC code for client-facing messages.
fn code_name(code: tonic::Code) -> &'static str {
    match code {
        tonic::Code::DeadlineExceeded => "deadline exceeded",
        tonic::Code::Unavailable => "unreachable",
        tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => "refused the connection",
        tonic::Code::NotFound => "not found",
        _ => "failed",
    }
}

/// The (key id, epoch) pairs of a `ListKeyIds` page; epoch 0 where a peer
/// that predates epochs sent none.
pub fn key_page(r: sigil_proto::peer::ListKeyIdsResponse) -> Vec<(String, u32)> {
    let epochs = r.epochs.into_iter().chain(std::iter::repeat(0));
    r.key_ids.into_iter().zip(epochs).collect()
}
