//! The REST API (axum). JSON in and out; errors as
//! `{"error": {"code", "message", "nodes"?}}` with a 4xx/5xx status.
//! Every `/v1` route needs `Authorization: Bearer <JWT>` signed by a
//! client this node trusts ([`crate::auth`]): a write token (bound to the
//! body) for `POST`, a read token or a write token for `GET`. Refusals are
//! 401 (who: `unknown_client`, `bad_signature`, `expired`, `replayed`,
//! `body_mismatch`, ...) or 403 (`forbidden`: role or key policy), each
//! audited and counted in `sigil_auth_refusals_total{reason}`. `/health`,
//! `/metrics` and `/openapi.json` need no token; every route is subject to
//! the `allowed_ips` list. The OpenAPI document is at `/openapi.json`.

use std::sync::{Arc, OnceLock};

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use sigil_crypto::Scheme;
use sigil_store::KeyRecord;
use utoipa::{OpenApi, ToSchema};

mod sessions;
pub use sessions::{MessagePage, MessagesQuery, NumberedMessage, SessionQuery, Submitted};

use crate::auth::Role;
use crate::error::{ApiError, ErrorBody, NodeError};
use crate::operations::OperationView;
use crate::{audit, Node, RequestAuth};

/// The node's errors as HTTP: 400 `bad_request`, 404 `not_found`, the
/// refusal's 401/403, 504 `keygen_budget`, sessions and the store as
/// [`ApiError`]'s own conversions say (502/503/504 naming nodes, 503
/// `store_unavailable`, 500 `internal`).
impl From<NodeError> for ApiError {
    fn from(e: NodeError) -> Self {
        match e {
            NodeError::BadRequest(m) => ApiError::bad_request(m),
            NodeError::NotFound(m) => ApiError::not_found(m),
            NodeError::Refused(r) => ApiError::refused(&r),
            NodeError::Session(e) => e.into(),
            NodeError::Store(e) => e.into(),
            NodeError::Budget(m) => ApiError::new(StatusCode::GATEWAY_TIMEOUT, "keygen_budget", m),
        }
    }
}

/// `POST /v1/keys` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyRequest {
    /// `frost-ed25519`, `frost-secp256k1-tr` or `frost-p256`.
    #[schema(example = "frost-ed25519")]
    pub scheme: String,
    /// Signers needed, `t`: 2 <= t <= number of parties.
    #[schema(example = 2)]
    pub threshold: u16,
    /// Node ids that get a share (default: every node).
    #[serde(default)]
    pub parties: Option<Vec<u16>>,
    /// Free text, at most 128 characters.
    #[serde(default)]
    pub label: Option<String>,
    /// `paillier` only: bits of the modulus `N` (default 2048; 512 to
    /// 4096). For `paillier`, `threshold` is the number of parties needed
    /// to decrypt, `T`; the key tolerates `T - 1` colluding parties and
    /// needs `n >= 2(T - 1) + 1` parties (else a 400). Key generation takes
    /// seconds: the request waits, or with `?wait=false` gets a 202 and an
    /// operation to follow (`GET /v1/operations/{operation_id}`).
    #[serde(default)]
    pub bits: Option<u32>,
    /// `paillier` only: `N` must have no prime factor up to this bound
    /// (trial division before the biprimality test; TNO's
    /// `prime_threshold`). Default 2000, TNO's default; 3 to 100000.
    #[serde(default)]
    pub prime_threshold: Option<u32>,
    /// Which clients may use the key: `{"sign": [ids], "decrypt": [ids],
    /// "admin": [ids]}` (at most 64 ids a list). Default: the creating
    /// client in every list. Every party stores and attests it, and
    /// refuses requests outside it.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub policy: Option<sigil_store::KeyPolicy>,
    /// Refresh the key automatically every `[rotation] interval_s` of the
    /// cluster (default 24 h), or `policy.rotation_interval_s` seconds
    /// (default false).
    #[serde(default)]
    pub rotate: bool,
    /// Parties outside the cluster, `[{"client": id}]` (at most one; FROST
    /// schemes): the requesting client runs the party itself with
    /// `sigil-client` and holds its share, which no node ever sees. The
    /// key's parties are `parties` then the external party (its index),
    /// e.g. 2-of-2: one node and the client. With it the answer is always
    /// `202` and the relayed session ([`crate::relay`],
    /// `GET /v1/sessions/{session_id}`), whose result is the key.
    #[serde(default)]
    pub external_parties: Option<Vec<crate::relay::ExternalParty>>,
    /// With `external_parties`: the external party's session keys.
    #[serde(default)]
    pub party_keys: Option<crate::relay::PartyKeys>,
    /// Instead of `external_parties`: the node that takes the request runs
    /// the external party (the requesting client's) for the DKG only, in
    /// memory, and answers with its share HPKE-sealed to
    /// `recipient_public_key` (`user_share` in the key). Trust trade-off:
    /// during that DKG this one node saw the user share.
    #[serde(default)]
    pub user_share: Option<crate::relay::UserShareRequest>,
}

/// Query of `POST /v1/keys`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct CreateKeyQuery {
    /// `true` (default): answer when the key exists (201). `false`: answer
    /// at once with `202 Accepted`, an [`OperationView`] and a `Location`
    /// header to poll (every 400 is still answered at once).
    pub wait: Option<bool>,
}

/// `POST /v1/keys/{key_id}/decrypt` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecryptRequest {
    /// Paillier ciphertext, decimal, in `[1, N^2)` and invertible mod `N`
    /// (else a 400); standard `g = N + 1` encryption.
    pub ciphertext: String,
}

/// `POST /v1/keys/{key_id}/decrypt` answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DecryptResponse {
    /// The plaintext, decimal, in `[0, N)`.
    pub plaintext: String,
    /// Node ids whose partial decryptions were combined.
    pub parties: Vec<u16>,
}

pub use crate::views::KeyView;

/// Query of `GET /v1/keys/{key_id}`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct KeyQuery {
    /// ECDSA: show the child key at this BIP-32 non-hardened path (`m/0/1`).
    pub derivation_path: Option<String>,
}

/// Query of `GET /v1/audit`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct AuditQuery {
    /// Records with a greater `seq` (default 0: from the first).
    pub after: Option<u64>,
    /// At most this many (default 100, at most 1000).
    pub limit: Option<u32>,
}

/// `GET /v1/audit` answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AuditPage {
    /// Records in `seq` order.
    pub records: Vec<audit::AuditRecord>,
}

/// `GET /v1/keys` answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct KeyList {
    /// Active keys, oldest first.
    pub keys: Vec<KeyView>,
}

/// `POST /v1/keys/{key_id}/sign` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignRequest {
    /// The message, hex (at most 16 KiB once decoded). FROST schemes sign
    /// the message itself (no pre-hash). ECDSA schemes sign a 32-byte
    /// digest: exactly 64 hex characters, any other length is a 400.
    #[schema(example = "68656c6c6f")]
    pub message: String,
    /// ECDSA only: BIP-32 non-hardened derivation path, e.g. `m/0/1`;
    /// hardened steps are a 400.
    #[serde(default)]
    pub derivation_path: Option<String>,
    /// A key with an external party: its client takes part with these
    /// session keys (the answer is then `202` and the relayed session,
    /// whose result is the signature). Without them the nodes sign alone,
    /// when the key has `t` node parties and its policy allows it.
    #[serde(default)]
    pub party_keys: Option<crate::relay::PartyKeys>,
}

/// `POST /v1/keys/{key_id}/sign` answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SignResponse {
    /// Key id.
    pub key_id: String,
    /// Scheme name.
    pub scheme: String,
    /// Signature, hex: Ed25519 64 bytes (RFC 8032); BIP-340 64 bytes;
    /// FROST(P-256) 65 bytes (`R` compressed `||` `z`).
    pub signature: String,
    /// Node ids that signed, aggregator first.
    pub signers: Vec<u16>,
    /// ECDSA: recovery id (0 or 1) of `r || s`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovery_id: Option<u8>,
    /// ECDSA: the signature DER-encoded, hex.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub der: Option<String>,
    /// `ecdsa-secp256k1`: Ethereum `v` = 27 + recovery id (pre-EIP-155).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub v: Option<u8>,
}

/// `GET /health` answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// Always `ok` while the node serves.
    pub status: String,
    /// This node's id.
    pub node_id: u16,
    /// Nodes in the cluster.
    pub nodes: usize,
    /// Sessions running now.
    pub active_sessions: usize,
    /// Software version.
    pub version: String,
    /// 1536-bit safe primes pooled for CGGMP21 aux info.
    pub prime_pool: usize,
    /// CGGMP21 aux info for the whole cluster's party set: `ready` or
    /// `missing` (made on the first ECDSA key).
    pub aux_info: String,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Sigil",
        description = "Threshold key management and signing. Every /v1 request carries Authorization: Bearer <JWT> signed by a client (EdDSA or ES256) with claims sub, aud, iat, exp, jti, htm, htu and, for writes, body_sha256."
    ),
    paths(
        health,
        create_key,
        get_operation,
        list_keys,
        get_key,
        sign,
        decrypt,
        reshare,
        refresh,
        get_audit,
        sessions::get_session,
        sessions::get_messages,
        sessions::post_message
    ),
    components(schemas(
        CreateKeyRequest,
        crate::reshare::ReshareRequest,
        OperationView,
        crate::operations::OperationState,
        KeyView,
        KeyList,
        SignRequest,
        SignResponse,
        DecryptRequest,
        DecryptResponse,
        Health,
        AuditPage,
        crate::SessionView,
        crate::relay::SessionKindView,
        crate::relay::PartyKeys,
        crate::relay::ExternalParty,
        MessagePage,
        NumberedMessage,
        Submitted,
        audit::AuditRecord,
        ErrorBody
    )),
    modifiers(&TokenScheme)
)]
struct ApiDoc;

/// Declares the `client_token` security scheme: a bearer JWT.
struct TokenScheme;

impl utoipa::Modify for TokenScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "client_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// The OpenAPI document of the API.
pub fn openapi() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// JSON extractor whose rejections are API errors (400, 413, 415).
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    Json<T>: FromRequest<S, Rejection = JsonRejection>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(ApiJson(v)),
            Err(rej) => {
                let status = rej.status();
                let code = match status {
                    StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
                    StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
                    _ => "bad_request",
                };
                let status = if status.is_client_error() {
                    status
                } else {
                    StatusCode::BAD_REQUEST
                };
                Err(ApiError::new(status, code, rej.body_text()))
            }
        }
    }
}

/// The router of a node.
pub fn router(node: Arc<Node>) -> Router {
    let v1 = Router::new()
        .route("/v1/keys", post(create_key).get(list_keys))
        .route("/v1/keys/{key_id}", get(get_key))
        .route("/v1/operations/{operation_id}", get(get_operation))
        .route("/v1/keys/{key_id}/sign", post(sign))
        .route("/v1/keys/{key_id}/decrypt", post(decrypt))
        .route("/v1/keys/{key_id}/reshare", post(reshare))
        .route("/v1/keys/{key_id}/refresh", post(refresh))
        .route("/v1/audit", get(get_audit))
        .route("/v1/sessions/{session_id}", get(sessions::get_session))
        .route(
            "/v1/sessions/{session_id}/messages",
            get(sessions::get_messages).post(sessions::post_message),
        )
        .route_layer(axum::middleware::from_fn_with_state(node.clone(), authenticate));
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics_text))
        .route("/openapi.json", get(|| async { Json(openapi()) }))
        .merge(v1)
        .fallback(|| async { ApiError::not_found("no such route") })
        // Per route (`Node::body_limit`) in `reject_oversized` and
        // `authenticate`; this bounds the extractors.
        .layer(DefaultBodyLimit::max(
            node.cfg.max_body_bytes.max(crate::front::RELAY_BODY_BYTES),
        ))
        .layer(axum::middleware::from_fn_with_state(node.clone(), reject_oversized))
        .layer(axum::middleware::from_fn_with_state(
            node.clone(),
            crate::front::allow_ips,
        ))
        .with_state(node)
}

/// Bodies up to this size are read and discarded before a 413 is sent, so
/// the client sees the answer instead of a reset connection (what nginx
/// calls lingering close). Larger ones are answered at once.
const DRAIN_CAP_BYTES: usize = 1024 * 1024;

/// Answers 413 for a declared `Content-Length` above the limit.
async fn reject_oversized(State(node): State<Arc<Node>>, req: Request, next: Next) -> Response {
    let limit = node.body_limit(req.method().as_str(), req.uri().path());
    let declared = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    match declared {
        Some(len) if len > limit => {
            if len <= DRAIN_CAP_BYTES {
                let _ = axum::body::to_bytes(req.into_body(), DRAIN_CAP_BYTES).await;
            }
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("request body of {len} bytes is over the limit of {limit} bytes"),
            )
            .into_response()
        }
        _ => next.run(req).await,
    }
}

/// What a route needs beyond a valid token (sign and decrypt: the key's
/// policy, checked by the node).
pub(crate) fn required_role(method: &str, path: &str) -> Option<Role> {
    match (method, path) {
        ("POST", "/v1/keys") => Some(Role::Create),
        ("GET", "/v1/audit") => Some(Role::Audit),
        // A relayed session is its own client's only (checked by the relay).
        (_, p) if p.starts_with("/v1/sessions/") => None,
        ("GET", _) => Some(Role::Read),
        _ => None,
    }
}

/// The operation a route performs, for the audit log.
pub(crate) fn operation_of(method: &str, path: &str) -> &'static str {
    match (method, path.rsplit('/').next()) {
        ("POST", Some("keys")) => "create_key",
        ("POST", Some("sign")) => "sign",
        ("POST", Some("decrypt")) => "decrypt",
        ("POST", Some("reshare")) => "reshare",
        ("POST", Some("refresh")) => "refresh",
        ("POST", Some("messages")) => "relay_message",
        ("GET", Some("audit")) => "read_audit",
        _ => "read",
    }
}

/// Checks the client's token (signature, audience, lifetime, method, path,
/// body hash, single use, role) and hands the request on with a
/// [`RequestAuth`] extension; refusals are audited, counted and answered
/// 401/403.
async fn authenticate(State(node): State<Arc<Node>>, req: Request, next: Next) -> Response {
    let (mut parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    let method = parts.method.clone();
    let token = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .unwrap_or_default()
        .to_string();
    let role = required_role(method.as_str(), &path);
    let operation = operation_of(method.as_str(), &path);
    let limit = node.body_limit(method.as_str(), &path);
    if limit > node.cfg.max_body_bytes {
        if let Err(refusal) = node.precheck_token(&token, method.as_str(), &path, operation).await {
            return ApiError::refused(&refusal).into_response();
        }
    }
    let body = match axum::body::to_bytes(body, limit).await {
        Ok(b) => b,
        Err(_) => {
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "request body over the limit",
            )
            .into_response()
        }
    };
    let auth = match node
        .admit_request(token, method.as_str(), path.clone(), body.to_vec(), role, operation)
        .await
    {
        Ok(auth) => auth,
        Err(refusal) => return ApiError::refused(&refusal).into_response(),
    };
    parts.extensions.insert(auth);
    next.run(Request::from_parts(parts, axum::body::Body::from(body))).await
}

/// Records a coordinated operation's outcome in the audit log and passes
/// the result on.
async fn audited<T>(
    node: &Node,
    auth: &RequestAuth,
    operation: &'static str,
    key_id: &str,
    message: &[u8],
    r: Result<T, ApiError>,
) -> Result<T, ApiError> {
    let outcome = match &r {
        Ok(_) => "ok".to_string(),
        Err(e) => {
            let (status, d) = e.detail();
            if status == 401 || status == 403 {
                format!("refused:{}", d.code)
            } else {
                format!("failed:{}", d.code)
            }
        }
    };
    node.audit()
        .record(audit::Entry {
            role: "coordinator",
            client: auth.client.clone(),
            jti: auth.jti.clone(),
            operation,
            key_id: key_id.to_string(),
            message_sha256: if message.is_empty() {
                String::new()
            } else {
                audit::message_hash(message)
            },
            session_id: String::new(),
            outcome,
        })
        .await;
    r
}

static PROMETHEUS: OnceLock<Option<metrics_exporter_prometheus::PrometheusHandle>> = OnceLock::new();

fn prometheus() -> Option<&'static metrics_exporter_prometheus::PrometheusHandle> {
    PROMETHEUS
        .get_or_init(|| {
            metrics_exporter_prometheus::PrometheusBuilder::new()
                .install_recorder()
                .ok()
        })
        .as_ref()
}

/// Installs the Prometheus recorder (call once at start-up).
pub fn init_metrics() {
    let _ = prometheus();
}

async fn metrics_text() -> Response {
    match prometheus() {
        Some(h) => h.render().into_response(),
        None => ApiError::internal("metrics recorder not installed").into_response(),
    }
}

/// Liveness and basic state. No authentication.
#[utoipa::path(get, path = "/health", responses((status = 200, body = Health)))]
async fn health(State(node): State<Arc<Node>>) -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        node_id: node.cfg.node_id,
        nodes: node.members().len(),
        active_sessions: node.sessions.active_count(),
        version: env!("CARGO_PKG_VERSION").into(),
        prime_pool: node.store().count_primes(crate::ecdsa::PRIME_BITS).await.unwrap_or(0),
        aux_info: match node
            .store()
            .get_aux_info(&crate::family::party_set(&node.members().ids()), node.cfg.node_id)
            .await
        {
            Ok(Some(_)) => "ready".into(),
            _ => "missing".into(),
        },
    })
}

/// Creates a key by distributed key generation; no dealer, the private key
/// never exists whole. Waits for the key (201), or with `?wait=false`
/// answers 202 with an operation to poll.
#[utoipa::path(post, path = "/v1/keys", request_body = CreateKeyRequest, params(CreateKeyQuery),
    responses(
        (status = 201, body = KeyView),
        (status = 202, body = OperationView, description = "`wait=false`: started; poll the `Location` header's URL"),
        (status = 400, body = ErrorBody, description = "unknown scheme, threshold out of range, bad parties"),
        (status = 401, body = ErrorBody),
        (status = 502, body = ErrorBody, description = "a party misbehaved; `nodes` names it"),
        (status = 503, body = ErrorBody, description = "a party is unreachable; `nodes` names it"),
        (status = 504, body = ErrorBody, description = "a party went silent; `nodes` names it")),
    security(("client_token" = [])))]
async fn create_key(
    State(node): State<Arc<Node>>,
    Query(q): Query<CreateKeyQuery>,
    axum::Extension(auth): axum::Extension<RequestAuth>,
    ApiJson(req): ApiJson<CreateKeyRequest>,
) -> Result<axum::response::Response, ApiError> {
    Ok(match start_keygen(node, auth, req, q.wait.unwrap_or(true)).await? {
        KeygenStarted::Relayed(view) => (StatusCode::ACCEPTED, Json(view)).into_response(),
        KeygenStarted::Created(key) => (StatusCode::CREATED, Json(key)).into_response(),
        KeygenStarted::Operation(op) => accepted(&op),
    })
}

/// How a key generation started ([`start_keygen`]).
pub enum KeygenStarted {
    /// With an external party: the relayed session, running.
    Relayed(Box<crate::SessionView>),
    /// Done (`wait`): the key.
    Created(Box<KeyView>),
    /// Running (no `wait`): the operation to follow.
    Operation(Arc<crate::operations::Operation>),
}

/// `POST /v1/keys` behind either door (REST, gRPC `StartDKG`): plans the
/// key generation (every 400 at once), then relays it (an external
/// party), runs it to its end (`wait`) or starts it as an operation.
///
/// # Errors
/// The plan's refusal, or (with `wait`) the key generation's failure.
pub async fn start_keygen(
    node: Arc<Node>,
    auth: RequestAuth,
    req: CreateKeyRequest,
    wait: bool,
) -> Result<KeygenStarted, ApiError> {
    let scheme: Scheme = req
        .scheme
        .parse()
        .map_err(|e: sigil_crypto::Error| ApiError::bad_request(e.to_string()))?;
    let plan = node.plan_keygen(
        crate::KeygenRequest {
            scheme,
            threshold: req.threshold,
            parties: req.parties,
            label: req.label,
            bits: req.bits,
            prime_threshold: req.prime_threshold,
            policy: req.policy,
            rotate: req.rotate,
            external_parties: req.external_parties.unwrap_or_default(),
            party_keys: req.party_keys,
            user_share: req.user_share,
        },
        auth.clone(),
    )?;
    // Held until the key generation ends, in whichever task runs it.
    let slot = node.keygen_slot(&auth.client)?;
    if plan.user_share.is_some() {
        let key = tokio::spawn(async move {
            let _slot = slot;
            let key_id = plan.key_id.clone();
            let r = node.run_user_share_keygen(plan, &auth).await;
            audited(&node, &auth, "create_key", &key_id, &[], r.map_err(ApiError::from)).await
        })
        .await
        .map_err(ApiError::internal)??;
        return Ok(KeygenStarted::Created(Box::new(key)));
    }
    if plan.party_keys.is_some() {
        // The external party runs it too: answer at once with the session.
        let (mailbox, run) = node.open_relayed_keygen(&plan)?;
        let guard = node.relay_guard(mailbox.clone())?;
        let view = node.view_of_mailbox(&mailbox);
        tokio::spawn(async move {
            let _slot = slot;
            let progress = crate::operations::KeygenProgress::default();
            let key_id = plan.key_id.clone();
            let r = node
                .run_keygen_in(plan, &progress, Some(run))
                .await
                .map_err(ApiError::from);
            let r = audited(&node, &auth, "create_key", &key_id, &[], r).await;
            guard.finish(r.and_then(|k| json_value(crate::family::view_of(&k))));
        });
        return Ok(KeygenStarted::Relayed(Box::new(view)));
    }
    if wait {
        // In its own task: a client that hangs up does not cut a key
        // generation between its sessions and their commit or abort.
        let task_node = node.clone();
        let key = tokio::spawn(async move {
            let _slot = slot;
            let progress = crate::operations::KeygenProgress::default();
            keygen_audited(&task_node, &auth, plan, &progress).await
        })
        .await
        .map_err(ApiError::internal)??;
        return Ok(KeygenStarted::Created(Box::new(crate::family::view_of(&key))));
    }
    let op = node
        .operations()
        .start("create_key", &plan.key_id, plan.scheme.as_str())?;
    let (task_node, task_op) = (node.clone(), op.clone());
    tokio::spawn(async move {
        let _slot = slot;
        let r = keygen_audited(&task_node, &auth, plan, &task_op.progress).await;
        task_op.finish(r.map(|k| crate::family::view_of(&k)));
    });
    Ok(KeygenStarted::Operation(op))
}

async fn keygen_audited(
    node: &Node,
    auth: &RequestAuth,
    plan: crate::KeygenPlan,
    progress: &crate::operations::KeygenProgress,
) -> Result<KeyRecord, ApiError> {
    let key_id = plan.key_id.clone();
    let r = node.run_keygen(plan, progress).await;
    audited(node, auth, "create_key", &key_id, &[], r.map_err(ApiError::from)).await
}

/// A key generation started with `wait=false`: its progress (Paillier:
/// attempts, candidates, elapsed), then its key or error. Held by the node
/// that answered the `POST`, for an hour after it ends.
#[utoipa::path(get, path = "/v1/operations/{operation_id}", params(("operation_id" = String, Path)),
    responses((status = 200, body = OperationView), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody)),
    security(("client_token" = [])))]
async fn get_operation(
    State(node): State<Arc<Node>>,
    Path(operation_id): Path<String>,
) -> Result<Json<OperationView>, ApiError> {
    node.operations()
        .get(&operation_id)
        .map(|op| Json(op.view()))
        .ok_or_else(|| ApiError::not_found(format!("no operation {operation_id} on this node")))
}

/// Lists the active keys.
#[utoipa::path(get, path = "/v1/keys", responses((status = 200, body = KeyList), (status = 401, body = ErrorBody)), security(("client_token" = [])))]
async fn list_keys(State(node): State<Arc<Node>>) -> Result<Json<KeyList>, ApiError> {
    let keys = node.store().list_keys().await?;
    Ok(Json(KeyList {
        keys: keys.iter().map(crate::family::view_of).collect(),
    }))
}

/// One key, with its public key as PEM.
#[utoipa::path(get, path = "/v1/keys/{key_id}", params(("key_id" = String, Path), KeyQuery),
    responses((status = 200, body = KeyView), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody)),
    security(("client_token" = [])))]
async fn get_key(
    State(node): State<Arc<Node>>,
    Path(key_id): Path<String>,
    axum::extract::Query(q): axum::extract::Query<KeyQuery>,
) -> Result<Json<KeyView>, ApiError> {
    let key = node.loaded_key(&key_id).await?;
    let Some(path_text) = q.derivation_path else {
        let mut view = crate::family::view_of(&key.record);
        view.history = node.store().key_history(&key_id).await.map_err(NodeError::from)?;
        return Ok(Json(view));
    };
    let path =
        sigil_crypto::ecdsa::parse_derivation_path(&path_text).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let mut child = key.record.clone();
    child.public_key = node.derived_public_key(&key, &path)?;
    let mut view = crate::family::view_of(&child);
    if view.xpub.is_some() {
        view.xpub = sigil_crypto::scheme::xpub(&key.record.public_package, &path).ok();
    }
    view.derivation_path = Some(path_text);
    Ok(Json(view))
}

/// Signs a message with `t` of the key's parties. The signature verifies
/// with the scheme's ordinary single-key verifier.
#[utoipa::path(post, path = "/v1/keys/{key_id}/sign", params(("key_id" = String, Path)), request_body = SignRequest,
    responses(
        (status = 200, body = SignResponse),
        (status = 400, body = ErrorBody, description = "message not hex or too long"),
        (status = 404, body = ErrorBody),
        (status = 502, body = ErrorBody), (status = 503, body = ErrorBody), (status = 504, body = ErrorBody)),
    security(("client_token" = [])))]
async fn sign(
    State(node): State<Arc<Node>>,
    Path(key_id): Path<String>,
    axum::Extension(auth): axum::Extension<RequestAuth>,
    ApiJson(req): ApiJson<SignRequest>,
) -> Result<Response, ApiError> {
    Ok(match start_sign(node, &key_id, auth, req).await? {
        SignStarted::Relayed(view) => (StatusCode::ACCEPTED, Json(view)).into_response(),
        SignStarted::Signed(signed) => Json(signed).into_response(),
    })
}

/// How a signature started ([`start_sign`]).
pub enum SignStarted {
    /// With the key's external party: the relayed session, running.
    Relayed(crate::SessionView),
    /// By the nodes: the signature.
    Signed(SignResponse),
}

/// `POST /v1/keys/{key_id}/sign` behind either door (REST, gRPC
/// `StartSign`): relayed when the body names `party_keys`, else signed by
/// the nodes; audited either way.
///
/// # Errors
/// The refusal, or the nodes' signing failure.
pub async fn start_sign(
    node: Arc<Node>,
    key_id: &str,
    auth: RequestAuth,
    req: SignRequest,
) -> Result<SignStarted, ApiError> {
    let message = hex::decode(req.message.trim()).unwrap_or_default();
    if let Some(keys) = req.party_keys.clone() {
        let r = match (hex::decode(req.message.trim()), derivation_path(&req)) {
            (Ok(message), Ok(path)) => sign_relayed(node.clone(), key_id, &auth, message, path, &keys).await,
            (Err(e), _) => Err(ApiError::bad_request(format!("message must be hex: {e}"))),
            (_, Err(e)) => Err(e),
        };
        return audited_failure(&node, &auth, "sign", key_id, r).await;
    }
    let r = sign_inner(&node, key_id, &auth, req).await;
    audited(&node, &auth, "sign", key_id, &message, r)
        .await
        .map(|Json(s)| SignStarted::Signed(s))
}

/// A signature with the key's external party: the relayed session at
/// once; the signature lands in the session's result.
async fn sign_relayed(
    node: Arc<Node>,
    key_id: &str,
    auth: &RequestAuth,
    message: Vec<u8>,
    path: Vec<u32>,
    keys: &crate::relay::PartyKeys,
) -> Result<SignStarted, ApiError> {
    let plan = node
        .plan_relayed_sign(key_id, message.clone(), path, auth, keys)
        .await?;
    let mailbox = plan.mailbox.clone();
    let guard = node.relay_guard(mailbox.clone())?;
    let view = node.view_of_mailbox(&mailbox);
    let (auth, key_id) = (auth.clone(), key_id.to_string());
    tokio::spawn(async move {
        let scheme = mailbox.scheme.clone();
        let r = node.run_relayed_sign(plan, &auth).await.map_err(ApiError::from);
        let r = audited(&node, &auth, "sign", &key_id, &message, r).await;
        guard.finish(r.and_then(|signed| {
            metrics::counter!("sigil_signatures_total", "scheme" => scheme.clone()).increment(1);
            json_value(sign_response(key_id, scheme, signed))
        }));
    });
    Ok(SignStarted::Relayed(view))
}

/// The JSON value of an answer.
fn json_value<T: Serialize>(v: T) -> Result<serde_json::Value, ApiError> {
    serde_json::to_value(v).map_err(ApiError::internal)
}

/// The answer of a signature.
fn sign_response(key_id: String, scheme: String, signed: crate::Signed) -> SignResponse {
    SignResponse {
        key_id,
        scheme,
        signature: hex::encode(signed.signature),
        signers: signed.signers,
        recovery_id: signed.extras.recovery_id,
        der: signed.extras.der,
        v: signed.extras.v,
    }
}

/// The request's BIP-32 path (`m/0/1`), empty without one.
fn derivation_path(req: &SignRequest) -> Result<Vec<u32>, ApiError> {
    match &req.derivation_path {
        Some(p) => sigil_crypto::ecdsa::parse_derivation_path(p).map_err(|e| ApiError::bad_request(e.to_string())),
        None => Ok(Vec::new()),
    }
}

async fn sign_inner(
    node: &Node,
    key_id: &str,
    auth: &RequestAuth,
    req: SignRequest,
) -> Result<Json<SignResponse>, ApiError> {
    let key_id = key_id.to_string();
    let message =
        hex::decode(req.message.trim()).map_err(|e| ApiError::bad_request(format!("message must be hex: {e}")))?;
    let path = derivation_path(&req)?;
    let key = node.loaded_key(&key_id).await?;
    let signed = node.sign(&key_id, message, &path, auth).await?;
    metrics::counter!("sigil_signatures_total", "scheme" => key.scheme.as_str()).increment(1);
    Ok(Json(sign_response(key_id, key.record.scheme.clone(), signed)))
}

/// Reshares a key to a new committee and threshold (a new epoch; the
/// public key, and for ECDSA the xpub and every derived address, stay the
/// same). Admin clients of the key only. Answers the key at its new epoch,
/// or with `?wait=false` a 202 and the operation to poll.
#[utoipa::path(post, path = "/v1/keys/{key_id}/reshare", params(("key_id" = String, Path), CreateKeyQuery),
    request_body = crate::reshare::ReshareRequest,
    responses(
        (status = 200, body = KeyView),
        (status = 202, body = OperationView, description = "`wait=false`: started; poll the `Location` header's URL"),
        (status = 400, body = ErrorBody, description = "bad committee or threshold, or a scheme without resharing"),
        (status = 403, body = ErrorBody, description = "the client is not an admin of the key"),
        (status = 404, body = ErrorBody),
        (status = 502, body = ErrorBody, description = "a party misbehaved (named); the old epoch stays active"),
        (status = 503, body = ErrorBody), (status = 504, body = ErrorBody)),
    security(("client_token" = [])))]
async fn reshare(
    State(node): State<Arc<Node>>,
    Path(key_id): Path<String>,
    Query(q): Query<CreateKeyQuery>,
    axum::Extension(auth): axum::Extension<RequestAuth>,
    ApiJson(req): ApiJson<crate::reshare::ReshareRequest>,
) -> Result<Response, ApiError> {
    reshare_or_refresh(node, key_id, q, auth, req, "reshare").await
}

/// Refreshes a key's shares (a new epoch with the same committee and
/// threshold; shares of different epochs never combine). Admin clients of
/// the key only; the body is `{}`; `?wait=false` as for a reshare.
#[utoipa::path(post, path = "/v1/keys/{key_id}/refresh", params(("key_id" = String, Path), CreateKeyQuery),
    responses(
        (status = 200, body = KeyView),
        (status = 202, body = OperationView, description = "`wait=false`: started; poll the `Location` header's URL"),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 502, body = ErrorBody), (status = 503, body = ErrorBody), (status = 504, body = ErrorBody)),
    security(("client_token" = [])))]
async fn refresh(
    State(node): State<Arc<Node>>,
    Path(key_id): Path<String>,
    Query(q): Query<CreateKeyQuery>,
    axum::Extension(auth): axum::Extension<RequestAuth>,
    ApiJson(req): ApiJson<crate::reshare::ReshareRequest>,
) -> Result<Response, ApiError> {
    reshare_or_refresh(node, key_id, q, auth, req, "refresh").await
}

/// A reshare or refresh (`kind`): checked at once, then run in a task of
/// its own (a client that hangs up does not cut it between its sessions
/// and their commit), answered when done or at once with its operation.
async fn reshare_or_refresh(
    node: Arc<Node>,
    key_id: String,
    q: CreateKeyQuery,
    auth: RequestAuth,
    req: crate::reshare::ReshareRequest,
    kind: &'static str,
) -> Result<Response, ApiError> {
    let planned = node.plan_reshare(&key_id, req, kind == "refresh", &auth).await;
    let target = audited_failure(&node, &auth, kind, &key_id, planned.map_err(ApiError::from)).await?;
    // Held until the reshare ends (counted with the client's key
    // generations): a client that hangs up, or asks wait=false, cannot
    // start reshares without bound.
    let slot = audited_failure(
        &node,
        &auth,
        kind,
        &key_id,
        node.keygen_slot(&auth.client).map_err(ApiError::from),
    )
    .await?;
    let op = if q.wait.unwrap_or(true) {
        None
    } else {
        let started = node.operations().start(kind, &key_id, &target.current.scheme);
        Some(audited_failure(&node, &auth, kind, &key_id, started).await?)
    };
    let task_node = node.clone();
    let run = async move {
        let _slot = slot;
        let r = match task_node.run_planned_reshare(&target, &auth).await {
            Ok(record) => epoch_view(&task_node, &record).await,
            Err(e) => Err(ApiError::from(e)),
        };
        audited(&task_node, &auth, kind, &target.current.key_id, &[], r).await
    };
    match op {
        None => {
            let view = tokio::spawn(run).await.map_err(ApiError::internal)??;
            Ok(Json(view).into_response())
        }
        Some(op) => {
            let task_op = op.clone();
            tokio::spawn(async move { task_op.finish(run.await) });
            Ok(accepted(&op))
        }
    }
}

/// `202 Accepted` for a long operation: its view, and its URL in
/// `Location`.
fn accepted(op: &crate::operations::Operation) -> Response {
    let location = format!("/v1/operations/{}", op.id());
    (
        StatusCode::ACCEPTED,
        [(axum::http::header::LOCATION, location)],
        Json(op.view()),
    )
        .into_response()
}

/// The view of a key at its new epoch, with its history.
async fn epoch_view(node: &Node, record: &KeyRecord) -> Result<KeyView, ApiError> {
    let mut view = crate::family::view_of(record);
    view.history = node
        .store()
        .key_history(&record.key_id)
        .await
        .map_err(NodeError::from)?;
    Ok(view)
}

/// Audits `r` when it failed (a request refused before any session), and
/// hands it on.
async fn audited_failure<T>(
    node: &Node,
    auth: &RequestAuth,
    operation: &'static str,
    key_id: &str,
    r: Result<T, ApiError>,
) -> Result<T, ApiError> {
    match r {
        Ok(t) => Ok(t),
        Err(e) => audited(node, auth, operation, key_id, &[], Err(e)).await,
    }
}

/// Decrypts a Paillier ciphertext with `T` of the key's parties.
#[utoipa::path(
    post,
    path = "/v1/keys/{key_id}/decrypt",
    params(("key_id" = String, Path, description = "Key id")),
    request_body = DecryptRequest,
    responses(
        (status = 200, body = DecryptResponse),
        (status = 400, description = "Not a paillier key, or a bad ciphertext", body = ErrorBody),
        (status = 404, description = "No such key", body = ErrorBody),
        (status = 503, description = "Fewer than T parties reachable", body = ErrorBody),
    ),
    security(("client_token" = []))
)]
async fn decrypt(
    State(node): State<Arc<Node>>,
    Path(key_id): Path<String>,
    axum::Extension(auth): axum::Extension<RequestAuth>,
    ApiJson(req): ApiJson<DecryptRequest>,
) -> Result<Json<DecryptResponse>, ApiError> {
    let ciphertext = req.ciphertext.trim();
    let r = node.decrypt(&key_id, ciphertext, &auth).await;
    let (plaintext, parties) = audited(
        &node,
        &auth,
        "decrypt",
        &key_id,
        ciphertext.as_bytes(),
        r.map_err(ApiError::from),
    )
    .await?;
    metrics::counter!("sigil_decryptions_total").increment(1);
    Ok(Json(DecryptResponse { plaintext, parties }))
}

/// The audit log of this node, in `seq` order (role `audit` or `admin`).
/// Check a chain with `sigil audit verify`.
#[utoipa::path(get, path = "/v1/audit", params(AuditQuery),
    responses((status = 200, body = AuditPage), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("client_token" = [])))]
async fn get_audit(
    State(node): State<Arc<Node>>,
    axum::extract::Query(q): axum::extract::Query<AuditQuery>,
) -> Result<Json<AuditPage>, ApiError> {
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let rows = node.store().audit_after(q.after.unwrap_or(0), limit).await?;
    let records = rows
        .iter()
        .map(|r| serde_json::from_str(&r.record).map_err(ApiError::internal))
        .collect::<Result<Vec<audit::AuditRecord>, _>>()?;
    Ok(Json(AuditPage { records }))
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    #[test]
    fn openapi_declares_every_route_and_the_api_key_scheme() {
        let doc = serde_json::to_value(super::openapi()).unwrap_or_default();
        for path in [
            "/health",
            "/v1/keys",
            "/v1/keys/{key_id}",
            "/v1/keys/{key_id}/sign",
            "/v1/keys/{key_id}/decrypt",
            "/v1/operations/{operation_id}",
            "/v1/sessions/{session_id}",
            "/v1/sessions/{session_id}/messages",
        ] {
            assert!(doc["paths"][path].is_object(), "{path} missing");
        }
        assert_eq!(doc["components"]["securitySchemes"]["client_token"]["scheme"], "bearer");
        assert!(doc["paths"]["/v1/audit"].is_object(), "/v1/audit missing");
        let post = &doc["paths"]["/v1/keys"]["post"];
        assert!(post["responses"]["202"].is_object(), "202 for wait=false");
        assert!(
            post["parameters"]
                .as_array()
                .is_some_and(|p| p.iter().any(|x| x["name"] == "wait")),
            "wait query parameter"
        );
    }
}
