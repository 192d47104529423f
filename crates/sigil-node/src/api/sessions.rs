//! `/v1/sessions`: the REST door of an external party's sessions, for
//! clients that cannot speak gRPC (`sigil-client` uses it). The session
//! itself starts with `POST /v1/keys` (`external_parties`) or
//! `POST /v1/keys/{key_id}/sign` (`party_keys`), answered `202` with a
//! [`SessionView`]; then the client reads the messages for its party
//! (long poll), submits its own, and reads the result from the view.
//! Every call carries the client's signed token (a read token for `GET`,
//! a write token bound to the body for `POST`); only the session's own
//! client sees or feeds it ([`crate::relay`] lists what the relay
//! checks). Refusals are 4xx with a JSON body, counted
//! (`sigil_relay_refusals_total{reason}`) and audited.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use sigil_crypto::relay::RelayMessage;
use sigil_crypto::SessionId;
use utoipa::{IntoParams, ToSchema};

use super::ApiJson;
use crate::error::{ApiError, ErrorBody};
use crate::relay::SubmitRefusal;
use crate::{Node, RequestAuth, SessionView};

/// Longest long poll, in milliseconds.
const MAX_WAIT_MS: u64 = 30_000;

/// Query of `GET /v1/sessions/{session_id}/messages`.
#[derive(Debug, Deserialize, IntoParams)]
pub struct MessagesQuery {
    /// Messages with a greater sequence number (default 0: from the first).
    pub after: Option<u64>,
    /// Wait up to this many milliseconds for one when there is none yet
    /// (default 25 000, at most 30 000; 0: answer at once).
    pub wait_ms: Option<u64>,
}

/// Query of `GET /v1/sessions/{session_id}`.
#[derive(Debug, Deserialize, IntoParams)]
pub struct SessionQuery {
    /// Wait up to this many milliseconds for the session to end (default
    /// 0: answer at once; at most 30 000).
    pub wait_ms: Option<u64>,
}

/// One message for the external party, with its sequence number.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct NumberedMessage {
    /// Sequence number, from 1, without gaps.
    pub seq: u64,
    /// The message (`sigil_crypto::relay::RelayMessage`: `session_id`,
    /// `round`, `from`, `to`, `payload`, `signature`; bytes in hex).
    #[schema(value_type = Object)]
    pub message: RelayMessage,
}

/// `GET /v1/sessions/{session_id}/messages` answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MessagePage {
    /// The messages after `after`, in order.
    pub messages: Vec<NumberedMessage>,
    /// `running`, `succeeded` or `failed`.
    pub state: String,
}

/// `POST /v1/sessions/{session_id}/messages` answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Submitted {
    /// The same message was accepted before (nothing was relayed again).
    pub duplicate: bool,
}

fn session_id(text: &str) -> Result<SessionId, ApiError> {
    hex::decode(text)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| ApiError::bad_request("session_id must be 64 hex characters"))
}

/// A relay refusal as HTTP.
fn refusal(e: &SubmitRefusal) -> ApiError {
    let status = match e {
        SubmitRefusal::UnknownSession(_) => StatusCode::NOT_FOUND,
        SubmitRefusal::Ended => StatusCode::GONE,
        SubmitRefusal::NotAMember(_) => StatusCode::FORBIDDEN,
        SubmitRefusal::OutOfSchedule(_) | SubmitRefusal::Conflict(_) => StatusCode::CONFLICT,
        SubmitRefusal::Unauthentic(_) => StatusCode::BAD_REQUEST,
    };
    ApiError::new(status, e.reason(), e.to_string())
}

/// A relayed session: its parties, state, the round and parties it waits
/// for, and its result (the key or the signature) once it succeeded
/// (long poll: `wait_ms` waits for the end).
#[utoipa::path(get, path = "/v1/sessions/{session_id}", params(("session_id" = String, Path), SessionQuery),
    responses((status = 200, body = SessionView), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody)),
    security(("client_token" = [])))]
pub(super) async fn get_session(
    State(node): State<Arc<Node>>,
    Path(id): Path<String>,
    Query(q): Query<SessionQuery>,
    axum::Extension(auth): axum::Extension<RequestAuth>,
) -> Result<Json<SessionView>, ApiError> {
    let id = session_id(&id)?;
    let wait = Duration::from_millis(q.wait_ms.unwrap_or(0).min(MAX_WAIT_MS));
    node.session_view(&id, &auth.client, wait)
        .await
        .map(Json)
        .map_err(|e| refusal(&e))
}

/// The messages for the session's external party after `after` (long
/// poll: waits up to `wait_ms` for the next one).
#[utoipa::path(get, path = "/v1/sessions/{session_id}/messages", params(("session_id" = String, Path), MessagesQuery),
    responses((status = 200, body = MessagePage), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody)),
    security(("client_token" = [])))]
pub(super) async fn get_messages(
    State(node): State<Arc<Node>>,
    Path(id): Path<String>,
    Query(q): Query<MessagesQuery>,
    axum::Extension(auth): axum::Extension<RequestAuth>,
) -> Result<Json<MessagePage>, ApiError> {
    let id = session_id(&id)?;
    let mailbox = node.relay().of_client(&id, &auth.client).map_err(|e| refusal(&e))?;
    let wait = Duration::from_millis(q.wait_ms.unwrap_or(25_000).min(MAX_WAIT_MS));
    let messages = mailbox
        .messages_after(q.after.unwrap_or(0), wait)
        .await
        .into_iter()
        .map(|(seq, message)| NumberedMessage { seq, message })
        .collect();
    Ok(Json(MessagePage {
        messages,
        state: node.view_of_mailbox(&mailbox).state.to_string(),
    }))
}

/// Submits one message of the session's external party; the relay checks
/// it (member, schedule, signature, once) and hands it to its recipients.
/// The same message again is accepted without effect (`duplicate`).
#[utoipa::path(post, path = "/v1/sessions/{session_id}/messages", params(("session_id" = String, Path)),
    request_body(content = Object, description = "a `RelayMessage`: `session_id`, `round`, `from`, `to`?, `payload`, `signature` (bytes in hex)"),
    responses(
        (status = 202, body = Submitted),
        (status = 400, body = ErrorBody, description = "malformed, or the signature does not verify (`unauthentic`)"),
        (status = 403, body = ErrorBody, description = "`not_a_member`: not the party's index, or no such recipient"),
        (status = 404, body = ErrorBody, description = "no such session of this client here"),
        (status = 409, body = ErrorBody, description = "`unexpected_round` (out of schedule) or `conflict` (another message in that slot)"),
        (status = 410, body = ErrorBody, description = "`ended`: the session is over")),
    security(("client_token" = [])))]
pub(super) async fn post_message(
    State(node): State<Arc<Node>>,
    Path(id): Path<String>,
    axum::Extension(auth): axum::Extension<RequestAuth>,
    ApiJson(m): ApiJson<RelayMessage>,
) -> Result<(StatusCode, Json<Submitted>), ApiError> {
    if session_id(&id)? != m.session_id {
        return Err(ApiError::bad_request(
            "the message is for another session than the path names",
        ));
    }
    match node.submit_from_party(&auth, m).await {
        Ok(duplicate) => Ok((StatusCode::ACCEPTED, Json(Submitted { duplicate }))),
        Err(e) => Err(refusal(&e)),
    }
}
