//! The REST API (axum). JSON in and out; errors as
//! `{"error": {"code", "message", "nodes"?}}` with a 4xx/5xx status.
//! Every `/v1` route needs `X-API-Key`; `/health`, `/metrics` and
//! `/openapi.json` do not. The OpenAPI document is at `/openapi.json`.

use std::sync::{Arc, OnceLock};

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, Path, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use sigil_crypto::Scheme;
use sigil_store::KeyRecord;
use utoipa::{OpenApi, ToSchema};

use crate::error::{ApiError, ErrorBody};
use crate::operations::OperationView;
use crate::Node;

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

/// A key as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct KeyView {
    /// Key id (UUID).
    pub key_id: String,
    /// Scheme name.
    pub scheme: String,
    /// Group public key, hex, in the scheme's standard encoding: Ed25519
    /// 32 bytes; BIP-340 x-only 32 bytes; P-256 SEC1 compressed 33 bytes.
    /// `paillier`: the modulus `N`, decimal.
    pub public_key: String,
    /// `paillier`: the modulus `N`, decimal (`g = N + 1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<String>,
    /// The public key as PEM SubjectPublicKeyInfo (for secp256k1 the even-y
    /// point of the x-only key).
    pub public_key_pem: Option<String>,
    /// Signers needed.
    pub threshold: u16,
    /// Node ids holding shares.
    pub parties: Vec<u16>,
    /// Share generation (0 after DKG).
    pub epoch: u32,
    /// Label, if any.
    pub label: Option<String>,
    /// Creation time, seconds since the Unix epoch.
    pub created_at: i64,
    /// `ecdsa-secp256k1`: the EIP-55 Ethereum address of `public_key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ethereum_address: Option<String>,
    /// `ecdsa-secp256k1`: the BIP-32 extended public key (Base58Check
    /// `xpub`), so a watch-only wallet derives the same children.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xpub: Option<String>,
    /// Set when the view is of a derived child key (`?derivation_path=`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub derivation_path: Option<String>,
}

/// Query of `GET /v1/keys/{key_id}`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct KeyQuery {
    /// ECDSA: show the child key at this BIP-32 non-hardened path (`m/0/1`).
    pub derivation_path: Option<String>,
}

impl KeyView {
    fn from_record(k: &KeyRecord) -> Self {
        let pem = k
            .scheme
            .parse::<Scheme>()
            .ok()
            .and_then(|s| s.public_key_pem(&k.public_key).ok());
        let paillier = k.scheme == Scheme::Paillier.as_str();
        let n = paillier.then(|| String::from_utf8_lossy(&k.public_key).into_owned());
        KeyView {
            key_id: k.key_id.clone(),
            scheme: k.scheme.clone(),
            public_key: n.clone().unwrap_or_else(|| hex::encode(&k.public_key)),
            n,
            public_key_pem: pem,
            threshold: k.threshold,
            parties: k.parties.clone(),
            epoch: k.epoch,
            label: k.label.clone(),
            created_at: k.created_at,
            ethereum_address: (k.scheme == Scheme::EcdsaSecp256k1.as_str())
                .then(|| sigil_crypto::scheme::ethereum_address(&k.public_key).ok())
                .flatten(),
            xpub: (k.scheme == Scheme::EcdsaSecp256k1.as_str())
                .then(|| sigil_crypto::scheme::xpub(&k.public_package, &[]).ok())
                .flatten(),
            derivation_path: None,
        }
    }
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
        description = "Threshold key management and signing. Authenticate with the X-API-Key header."
    ),
    paths(health, create_key, get_operation, list_keys, get_key, sign, decrypt),
    components(schemas(
        CreateKeyRequest,
        OperationView,
        crate::operations::OperationState,
        KeyView,
        KeyList,
        SignRequest,
        SignResponse,
        DecryptRequest,
        DecryptResponse,
        Health,
        ErrorBody
    )),
    modifiers(&ApiKeyScheme)
)]
struct ApiDoc;

/// Declares the `api_key` security scheme: header `X-API-Key`.
struct ApiKeyScheme;

impl utoipa::Modify for ApiKeyScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))),
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
        .route_layer(axum::middleware::from_fn_with_state(node.clone(), require_api_key));
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics_text))
        .route("/openapi.json", get(|| async { Json(openapi()) }))
        .merge(v1)
        .fallback(|| async { ApiError::not_found("no such route") })
        .layer(DefaultBodyLimit::max(node.cfg.max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(node.clone(), reject_oversized))
        .with_state(node)
}

/// Bodies up to this size are read and discarded before a 413 is sent, so
/// the client sees the answer instead of a reset connection (what nginx
/// calls lingering close). Larger ones are answered at once.
const DRAIN_CAP_BYTES: usize = 1024 * 1024;

/// Answers 413 for a declared `Content-Length` above the limit.
async fn reject_oversized(State(node): State<Arc<Node>>, req: Request, next: Next) -> Response {
    let limit = node.cfg.max_body_bytes;
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

async fn require_api_key(State(node): State<Arc<Node>>, req: Request, next: Next) -> Response {
    let ok = req
        .headers()
        .get("x-api-key")
        .is_some_and(|v| node.api_key_ok(v.as_bytes()));
    if !ok {
        return ApiError::unauthorized().into_response();
    }
    next.run(req).await
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
        nodes: node.cfg.nodes.len(),
        active_sessions: node.sessions.active_count(),
        version: env!("CARGO_PKG_VERSION").into(),
        prime_pool: node.store().count_primes(crate::ecdsa::PRIME_BITS).await.unwrap_or(0),
        aux_info: match node
            .store()
            .get_aux_info(&crate::ecdsa::party_set(&node.cfg.node_ids()), node.cfg.node_id)
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
    security(("api_key" = [])))]
async fn create_key(
    State(node): State<Arc<Node>>,
    axum::extract::Query(q): axum::extract::Query<CreateKeyQuery>,
    ApiJson(req): ApiJson<CreateKeyRequest>,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    let scheme: Scheme = req
        .scheme
        .parse()
        .map_err(|e: sigil_crypto::Error| ApiError::bad_request(e.to_string()))?;
    let plan = node.plan_keygen(crate::KeygenRequest {
        scheme,
        threshold: req.threshold,
        parties: req.parties,
        label: req.label,
        bits: req.bits,
        prime_threshold: req.prime_threshold,
    })?;
    if q.wait.unwrap_or(true) {
        // In its own task: a client that hangs up does not cut a key
        // generation between its sessions and their commit or abort.
        let task_node = node.clone();
        let key = tokio::spawn(async move {
            task_node
                .run_keygen(plan, &crate::operations::KeygenProgress::default())
                .await
        })
        .await
        .map_err(ApiError::internal)??;
        return Ok((StatusCode::CREATED, Json(KeyView::from_record(&key))).into_response());
    }
    let op = node.operations().start(&plan.key_id, plan.scheme.as_str())?;
    let (task_node, task_op) = (node.clone(), op.clone());
    tokio::spawn(async move {
        let r = task_node.run_keygen(plan, &task_op.progress).await;
        task_op.finish(r.map(|k| KeyView::from_record(&k)));
    });
    let location = format!("/v1/operations/{}", op.id());
    Ok((
        StatusCode::ACCEPTED,
        [(axum::http::header::LOCATION, location)],
        Json(op.view()),
    )
        .into_response())
}

/// A key generation started with `wait=false`: its progress (Paillier:
/// attempts, candidates, elapsed), then its key or error. Held by the node
/// that answered the `POST`, for an hour after it ends.
#[utoipa::path(get, path = "/v1/operations/{operation_id}", params(("operation_id" = String, Path)),
    responses((status = 200, body = OperationView), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody)),
    security(("api_key" = [])))]
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
#[utoipa::path(get, path = "/v1/keys", responses((status = 200, body = KeyList), (status = 401, body = ErrorBody)), security(("api_key" = [])))]
async fn list_keys(State(node): State<Arc<Node>>) -> Result<Json<KeyList>, ApiError> {
    let keys = node.store().list_keys().await?;
    Ok(Json(KeyList {
        keys: keys.iter().map(KeyView::from_record).collect(),
    }))
}

/// One key, with its public key as PEM.
#[utoipa::path(get, path = "/v1/keys/{key_id}", params(("key_id" = String, Path), KeyQuery),
    responses((status = 200, body = KeyView), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody)),
    security(("api_key" = [])))]
async fn get_key(
    State(node): State<Arc<Node>>,
    Path(key_id): Path<String>,
    axum::extract::Query(q): axum::extract::Query<KeyQuery>,
) -> Result<Json<KeyView>, ApiError> {
    let key = node.active_key(&key_id).await?;
    let Some(path_text) = q.derivation_path else {
        return Ok(Json(KeyView::from_record(&key)));
    };
    let path =
        sigil_crypto::ecdsa::parse_derivation_path(&path_text).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let mut child = key.clone();
    child.public_key = node.derived_public_key(&key, &path)?;
    let mut view = KeyView::from_record(&child);
    if view.xpub.is_some() {
        view.xpub = sigil_crypto::scheme::xpub(&key.public_package, &path).ok();
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
    security(("api_key" = [])))]
async fn sign(
    State(node): State<Arc<Node>>,
    Path(key_id): Path<String>,
    ApiJson(req): ApiJson<SignRequest>,
) -> Result<Json<SignResponse>, ApiError> {
    let message =
        hex::decode(req.message.trim()).map_err(|e| ApiError::bad_request(format!("message must be hex: {e}")))?;
    let key = node.active_key(&key_id).await?;
    let path = match &req.derivation_path {
        Some(p) => sigil_crypto::ecdsa::parse_derivation_path(p).map_err(|e| ApiError::bad_request(e.to_string()))?,
        None => Vec::new(),
    };
    let signed = node.sign(&key_id, message.clone(), &path).await?;
    metrics::counter!("sigil_signatures_total", "scheme" => key.scheme.clone()).increment(1);
    let scheme: Scheme = key.scheme.parse().map_err(ApiError::internal)?;
    let (mut recovery_id, mut der, mut v) = (None, None, None);
    if scheme.is_ecdsa() {
        let digest = sigil_crypto::scheme::ecdsa_digest(&message).map_err(|e| ApiError::bad_request(e.to_string()))?;
        let public_key = if path.is_empty() {
            key.public_key.clone()
        } else {
            node.derived_public_key(&key, &path)?
        };
        let (rid, d) = sigil_crypto::scheme::ecdsa_recovery_and_der(scheme, &public_key, &digest, &signed.signature)
            .map_err(ApiError::internal)?;
        recovery_id = Some(rid);
        der = Some(hex::encode(d));
        v = (scheme == Scheme::EcdsaSecp256k1).then_some(27 + rid);
    }
    Ok(Json(SignResponse {
        key_id,
        scheme: key.scheme,
        signature: hex::encode(signed.signature),
        signers: signed.signers,
        recovery_id,
        der,
        v,
    }))
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
    security(("api_key" = []))
)]
async fn decrypt(
    State(node): State<Arc<Node>>,
    Path(key_id): Path<String>,
    ApiJson(req): ApiJson<DecryptRequest>,
) -> Result<Json<DecryptResponse>, ApiError> {
    let (plaintext, parties) = node.decrypt(&key_id, req.ciphertext.trim()).await?;
    metrics::counter!("sigil_decryptions_total").increment(1);
    Ok(Json(DecryptResponse { plaintext, parties }))
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
        ] {
            assert!(doc["paths"][path].is_object(), "{path} missing");
        }
        assert_eq!(doc["components"]["securitySchemes"]["api_key"]["name"], "X-API-Key");
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
