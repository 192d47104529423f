//! The REST front door: the source-address allowlist (`allowed_ips`) and
//! optional TLS on the listener (`http_tls`, rustls).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::Node;

/// The client's address, for plaintext and TLS listeners alike.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub SocketAddr);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, tokio::net::TcpListener>> for ClientAddr {
    fn connect_info(stream: axum::serve::IncomingStream<'_, tokio::net::TcpListener>) -> Self {
        ClientAddr(*stream.remote_addr())
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TlsListener>> for ClientAddr {
    fn connect_info(stream: axum::serve::IncomingStream<'_, TlsListener>) -> Self {
        ClientAddr(*stream.remote_addr())
    }
}

/// Answers 403 `ip_not_allowed` unless the peer address is in
/// `allowed_ips`.
pub async fn allow_ips(State(node): State<Arc<Node>>, req: Request, next: Next) -> Response {
    let ip = req.extensions().get::<ConnectInfo<ClientAddr>>().map(|c| c.0 .0.ip());
    let allowed = ip.is_some_and(|ip| node.cfg.allowed_ips.iter().any(|net| net.contains(&ip)));
    if !allowed {
        metrics::counter!("sigil_auth_refusals_total", "reason" => "ip_not_allowed").increment(1);
        tracing::warn!(ip = ?ip, "request from an address outside allowed_ips");
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "ip_not_allowed",
            "this address may not use the API (allowed_ips)",
        )
        .into_response();
    }
    next.run(req).await
}

/// TLS handshakes waiting to finish, at most (each has [`HANDSHAKE_TIMEOUT`]).
const PENDING_HANDSHAKES: usize = 256;

/// Time a client has to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A TCP listener whose connections are TLS (rustls): handshakes run in
/// their own tasks, so a slow client does not hold up the others.
pub struct TlsListener {
    rx: tokio::sync::mpsc::Receiver<(tokio_rustls::server::TlsStream<tokio::net::TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Serves TLS on `l` with the certificate chain and key in `tls`.
    ///
    /// # Errors
    /// Unreadable or malformed PEM files.
    pub fn new(l: tokio::net::TcpListener, tls: &crate::config::HttpTls) -> anyhow::Result<Self> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let certs = CertificateDer::pem_file_iter(&tls.cert)
            .map_err(|e| anyhow::anyhow!("http_tls.cert {}: {e}", tls.cert.display()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow::anyhow!("http_tls.cert {}: {e}", tls.cert.display()))?;
        let key = PrivateKeyDer::from_pem_file(&tls.key)
            .map_err(|e| anyhow::anyhow!("http_tls.key {}: {e}", tls.key.display()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(certs, key)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let local = l.local_addr()?;
        let (tx, rx) = tokio::sync::mpsc::channel(PENDING_HANDSHAKES);
        tokio::spawn(async move {
            loop {
                let Ok((tcp, addr)) = l.accept().await else {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                };
                let _ = tcp.set_nodelay(true);
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(s)) => {
                            let _ = tx.send((s, addr)).await;
                        }
                        _ => tracing::debug!(%addr, "TLS handshake failed or timed out"),
                    }
                });
            }
        });
        Ok(TlsListener { rx, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(c) => c,
            // The accept task never ends; wait forever rather than spin.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// The largest relay message body a door takes (`POST
/// /v1/sessions/{id}/messages`, gRPC `SubmitProtocolMessage`), whatever
/// `max_body_bytes` says: a relay payload of up to
/// [`sigil_crypto::relay::MAX_PAYLOAD_BYTES`] (an ECDSA key generation's
/// aux-info messages are about 200 KB), hex in JSON, with room for the
/// rest of the message. The schedule bounds how many a session takes.
pub const RELAY_BODY_BYTES: usize = 2 * sigil_crypto::relay::MAX_PAYLOAD_BYTES + 64 * 1024;

impl Node {
    /// The largest body a client may send to `method path`:
    /// [`RELAY_BODY_BYTES`] for a relay message, `max_body_bytes` for
    /// everything else.
    pub fn body_limit(&self, method: &str, path: &str) -> usize {
        let relay = method == "POST" && path.starts_with("/v1/sessions/") && path.ends_with("/messages");
        if relay {
            self.cfg.max_body_bytes.max(RELAY_BODY_BYTES)
        } else {
            self.cfg.max_body_bytes
        }
    }

    /// The door's check of a client request, whichever API it came
    /// through (REST or gRPC): the token (signature with this node's copy
    /// of the client key, audience, lifetime, method, path, the body's
    /// hash for writes, single use) and `role` when the route needs one.
    /// A refusal is counted (`sigil_auth_refusals_total{reason}`), logged
    /// without the token and audited as `operation`.
    ///
    /// # Errors
    /// The [`crate::auth::Refusal`].
    pub async fn admit_request(
        &self,
        token: String,
        method: &str,
        path: String,
        body: Vec<u8>,
        role: Option<crate::auth::Role>,
        operation: &'static str,
    ) -> Result<crate::RequestAuth, crate::auth::Refusal> {
        let checked = if token.is_empty() {
            Err(crate::auth::Refusal::MissingToken)
        } else {
            let with_body = (method != "GET").then_some(body.as_slice());
            self.verifier()
                .check(&token, method, &path, with_body)
                .and_then(|(who, claims)| {
                    self.verifier()
                        .claim_at_door(&claims, who.write, self.cfg.node_id, crate::now_unix())?;
                    if let Some(role) = role {
                        who.require(role)?;
                    }
                    Ok(who)
                })
        };
        match checked {
            Ok(who) => Ok(crate::RequestAuth {
                client: who.client,
                jti: who.jti,
                proto: sigil_proto::peer::ClientAuthorization {
                    token,
                    method: method.to_string(),
                    path,
                    body,
                },
            }),
            Err(refusal) => Err(self.refused_at_door(refusal, method, &path, operation).await),
        }
    }

    /// Before a body larger than `max_body_bytes` is read (a relay
    /// message, [`Node::body_limit`]): the token checks out but for its
    /// body hash (signature, audience, client, method, path, lifetime), so
    /// only a client with a valid token for this very request makes the
    /// door hold that much. [`Node::admit_request`] checks all of it once
    /// the body is in.
    ///
    /// # Errors
    /// The [`crate::auth::Refusal`], counted, logged and audited.
    pub async fn precheck_token(
        &self,
        token: &str,
        method: &str,
        path: &str,
        operation: &'static str,
    ) -> Result<(), crate::auth::Refusal> {
        let checked = if token.is_empty() {
            Err(crate::auth::Refusal::MissingToken)
        } else {
            self.verifier().check(token, method, path, None).map(|_| ())
        };
        match checked {
            Ok(()) => Ok(()),
            Err(refusal) => Err(self.refused_at_door(refusal, method, path, operation).await),
        }
    }

    /// Counts (`sigil_auth_refusals_total{reason}`), logs and audits a
    /// refusal at the door, and hands it back.
    async fn refused_at_door(
        &self,
        refusal: crate::auth::Refusal,
        method: &str,
        path: &str,
        operation: &'static str,
    ) -> crate::auth::Refusal {
        metrics::counter!("sigil_auth_refusals_total", "reason" => refusal.reason()).increment(1);
        tracing::warn!(method, path, reason = refusal.reason(), "request refused");
        self.audit()
            .record(crate::audit::Entry {
                role: "door",
                operation,
                outcome: format!("refused:{}", refusal.reason()),
                ..Default::default()
            })
            .await;
        refusal
    }
}
