//! The gRPC client of `sigil.v1.Signer`: every call carries the client's
//! signed token in its `authorization` metadata, bound to the REST
//! request the call mirrors (see `signer.proto`), so a node checks the
//! same evidence through either door. [`GrpcRelay`] drives an external
//! party over `StreamMessages` and `SubmitProtocolMessage`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context};
use serde_json::Value;
use sigil_crypto::relay::RelayMessage;
use sigil_proto::signer::signer_client::SignerClient;
use sigil_proto::signer::{
    PingRequest, RelayedMessage, SessionStatus, StartRequest, StartSignRequest, StatusRequest, StreamRequest,
    SubmitRequest,
};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use crate::party::{PartyError, Relay};
use crate::rest::Tokens;

/// A client of one node's `sigil.v1.Signer`.
#[derive(Clone)]
pub struct GrpcClient {
    inner: SignerClient<Channel>,
    tokens: Arc<Tokens>,
}

impl GrpcClient {
    /// Connects (lazily) to `url` (`http://host:port`, or `https://` with
    /// the server's CA certificate PEM in `ca`) signing with `tokens`.
    ///
    /// # Errors
    /// A malformed URL or TLS configuration.
    pub fn connect(url: &str, ca: Option<&[u8]>, tokens: Arc<Tokens>) -> anyhow::Result<Self> {
        let mut ep = Endpoint::from_shared(url.to_string())?
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(5));
        if let Some(ca) = ca {
            ep = ep.tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)))?;
        }
        Ok(GrpcClient {
            inner: SignerClient::new(ep.connect_lazy()),
            tokens,
        })
    }

    /// The client id its tokens carry.
    pub fn client_id(&self) -> &str {
        self.tokens.client_id()
    }

    /// `msg` with a token for `method path` (over `body` for writes).
    fn request<T>(&self, msg: T, method: &str, path: &str, body: Option<&[u8]>) -> anyhow::Result<tonic::Request<T>> {
        let mut r = tonic::Request::new(msg);
        let token = self.tokens.token(method, path, body)?;
        r.metadata_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().context("token metadata")?,
        );
        Ok(r)
    }

    /// `Ping`: the node's id and version.
    ///
    /// # Errors
    /// The call's status.
    pub async fn ping(&self) -> anyhow::Result<(u32, String)> {
        let r = self.request(PingRequest {}, "GET", "/health", None)?;
        let p = self.inner.clone().ping(r).await?.into_inner();
        Ok((p.node_id, p.version))
    }

    /// `StartDKG` with the exact JSON `body` of `POST /v1/keys`.
    ///
    /// # Errors
    /// The call's status.
    pub async fn start_dkg(&self, body: Vec<u8>) -> anyhow::Result<SessionStatus> {
        let r = self.request(StartRequest { body: body.clone() }, "POST", "/v1/keys", Some(&body))?;
        Ok(self.inner.clone().start_dkg(r).await?.into_inner())
    }

    /// `StartSign` with the exact JSON `body` of `POST /v1/keys/{key_id}/sign`.
    ///
    /// # Errors
    /// The call's status.
    pub async fn start_sign(&self, key_id: &str, body: Vec<u8>) -> anyhow::Result<SessionStatus> {
        let path = format!("/v1/keys/{key_id}/sign");
        let msg = StartSignRequest {
            key_id: key_id.to_string(),
            body: body.clone(),
        };
        let r = self.request(msg, "POST", &path, Some(&body))?;
        Ok(self.inner.clone().start_sign(r).await?.into_inner())
    }

    /// `GetDKGStatus` (`dkg`) or `GetSignStatus` of session `id`, once it
    /// ended or `wait_ms` passed.
    ///
    /// # Errors
    /// The call's status.
    pub async fn status(&self, id: &str, dkg: bool, wait_ms: u32) -> anyhow::Result<SessionStatus> {
        let r = self.request(
            StatusRequest {
                session_id: id.to_string(),
                wait_ms,
            },
            "GET",
            &format!("/v1/sessions/{id}"),
            None,
        )?;
        let mut c = self.inner.clone();
        let s = if dkg {
            c.get_dkg_status(r).await?
        } else {
            c.get_sign_status(r).await?
        };
        Ok(s.into_inner())
    }

    /// `SubmitProtocolMessage`: `Ok(duplicate)`.
    ///
    /// # Errors
    /// The call's status.
    pub async fn submit(&self, m: &RelayMessage) -> anyhow::Result<bool> {
        let id = hex::encode(m.session_id);
        let body = serde_json::to_vec(m)?;
        let msg = SubmitRequest {
            session_id: id.clone(),
            body: body.clone(),
        };
        let r = self.request(msg, "POST", &format!("/v1/sessions/{id}/messages"), Some(&body))?;
        Ok(self
            .inner
            .clone()
            .submit_protocol_message(r)
            .await?
            .into_inner()
            .duplicate)
    }

    /// `StreamMessages` of session `id` after `after`.
    ///
    /// # Errors
    /// The call's status.
    pub async fn stream(&self, id: &str, after: u64) -> anyhow::Result<tonic::Streaming<RelayedMessage>> {
        let msg = StreamRequest {
            session_id: id.to_string(),
            after,
        };
        let r = self.request(msg, "GET", &format!("/v1/sessions/{id}/messages"), None)?;
        Ok(self.inner.clone().stream_messages(r).await?.into_inner())
    }
}

/// The JSON of a status (the session view, or a nodes-only answer).
///
/// # Errors
/// Not JSON.
pub fn status_json(s: &SessionStatus) -> anyhow::Result<Value> {
    serde_json::from_str(&s.json).map_err(|e| anyhow!("status json: {e}"))
}

/// The relay of one session over `StreamMessages` (one stream, reopened
/// from the last sequence number when it ends or breaks) and
/// `SubmitProtocolMessage`.
pub struct GrpcRelay<'a> {
    client: &'a GrpcClient,
    session_id: String,
    dkg: bool,
    stream: tokio::sync::Mutex<Option<tonic::Streaming<RelayedMessage>>>,
    ended: crate::external::Ended,
}

impl<'a> GrpcRelay<'a> {
    /// The relay of session `session_id` (a key generation when `dkg`).
    pub fn new(client: &'a GrpcClient, session_id: &str, dkg: bool) -> Self {
        GrpcRelay {
            client,
            session_id: session_id.to_string(),
            dkg,
            stream: tokio::sync::Mutex::new(None),
            ended: crate::external::Ended::default(),
        }
    }
}

impl Relay for GrpcRelay<'_> {
    async fn fetch(&self, after: u64) -> Result<Vec<(u64, RelayMessage)>, PartyError> {
        let relay_err = |e: &dyn std::fmt::Display| PartyError::Relay(e.to_string());
        let mut stream = self.stream.lock().await;
        if stream.is_none() {
            *stream = Some(
                self.client
                    .stream(&self.session_id, after)
                    .await
                    .map_err(|e| relay_err(&format!("{e:#}")))?,
            );
        }
        let next = match stream.as_mut() {
            Some(s) => s.message().await,
            None => Ok(None),
        };
        match next {
            Ok(Some(m)) => {
                let msg: RelayMessage =
                    serde_json::from_str(&m.json).map_err(|e| relay_err(&format!("malformed message: {e}")))?;
                Ok(vec![(m.seq, msg)])
            }
            // The session ended (every message was sent) or the stream
            // broke: reopen next time.
            other => {
                *stream = None;
                drop(stream);
                let status = self
                    .client
                    .status(&self.session_id, self.dkg, 0)
                    .await
                    .map_err(|e| relay_err(&format!("{e:#}")))?;
                match (status.state.as_str(), other) {
                    ("failed", _) => Err(PartyError::Relay(format!("the session failed: {}", status.json))),
                    ("succeeded", _) => self.ended.read_again().await,
                    (_, Err(e)) => Err(relay_err(&e)),
                    _ => Ok(Vec::new()),
                }
            }
        }
    }

    async fn submit(&self, m: &RelayMessage) -> Result<(), PartyError> {
        self.client
            .submit(m)
            .await
            .map(|_| ())
            .map_err(|e| PartyError::Relay(format!("{e:#}")))
    }
}
