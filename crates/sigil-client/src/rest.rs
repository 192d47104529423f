//! The REST client: every request signed by the client's key (a write
//! token bound to the exact body bytes for `POST`, a read token for
//! `GET`; `sigil_api::token`), errors as `anyhow` with the node's code
//! and message. [`SessionRelay`] drives an external party over
//! `/v1/sessions`.
// `serde_json::Value` indexing: reads of a missing field give `Null`, never
// a panic; writes go only to objects built here.
#![allow(clippy::indexing_slicing)]

use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use serde_json::{json, Value};
use sigil_api::token::ClientSigner;
use sigil_crypto::relay::RelayMessage;

use crate::party::{PartyError, Relay};

/// A client key and the cluster its tokens are for.
pub struct Tokens {
    signer: ClientSigner,
    aud: String,
}

impl Tokens {
    /// Tokens of client `id` with the PKCS#8 PEM key at `key_path`
    /// (Ed25519 or P-256) for cluster `aud`.
    ///
    /// # Errors
    /// Unreadable or malformed key file.
    pub fn load(id: &str, key_path: &std::path::Path, aud: &str) -> anyhow::Result<Arc<Self>> {
        let signer = ClientSigner::load(id, key_path)?;
        Ok(Arc::new(Tokens {
            signer,
            aud: aud.to_string(),
        }))
    }

    /// The client id.
    pub fn client_id(&self) -> &str {
        &self.signer.id
    }

    /// A token for `method path`: a write token over `body` if given (5
    /// minutes), else a read token (1 minute).
    ///
    /// # Errors
    /// Signing failure.
    pub fn token(&self, method: &str, path: &str, body: Option<&[u8]>) -> anyhow::Result<String> {
        self.token_ttl(method, path, body, if body.is_some() { 300 } else { 60 })
    }

    /// A token as [`Tokens::token`] with a lifetime of `ttl_s` seconds.
    ///
    /// # Errors
    /// Signing failure.
    pub fn token_ttl(&self, method: &str, path: &str, body: Option<&[u8]>, ttl_s: i64) -> anyhow::Result<String> {
        self.signer.token(&self.aud, method, path, body, ttl_s)
    }
}

/// Key generation options beyond scheme and threshold.
#[derive(Clone, Debug, Default)]
pub struct KeyOptions {
    /// Node ids that get a share (default: every node).
    pub parties: Option<Vec<u16>>,
    /// Label.
    pub label: Option<String>,
    /// `paillier`: bits of `N`.
    pub bits: Option<u32>,
    /// `paillier`: trial-division bound for `N`.
    pub prime_threshold: Option<u32>,
    /// Refresh the key automatically (`"rotate": true`).
    pub rotate: bool,
}

impl KeyOptions {
    /// The `POST /v1/keys` body.
    pub fn body(&self, scheme: &str, threshold: u16) -> Value {
        let mut body = json!({"scheme": scheme, "threshold": threshold});
        if let Some(b) = self.bits {
            body["bits"] = json!(b);
        }
        if let Some(b) = self.prime_threshold {
            body["prime_threshold"] = json!(b);
        }
        if let Some(p) = &self.parties {
            body["parties"] = json!(p);
        }
        if let Some(l) = &self.label {
            body["label"] = json!(l);
        }
        if self.rotate {
            body["rotate"] = json!(true);
        }
        body
    }
}

/// REST client bound to one node.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    url: String,
    tokens: Arc<Tokens>,
}

impl Client {
    /// A client for `url` (`http://host:port`) signing with `tokens`.
    pub fn with_url(url: &str, tokens: Arc<Tokens>) -> Self {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(256)
            .tcp_nodelay(true)
            .build()
            .unwrap_or_default();
        Client {
            http,
            url: url.trim_end_matches('/').to_string(),
            tokens,
        }
    }

    /// The client id its tokens carry.
    pub fn client_id(&self) -> &str {
        self.tokens.client_id()
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        let resp = req.send().await.with_context(|| format!("cannot reach {}", self.url))?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            let msg = body["error"]["message"].as_str().unwrap_or("(no message)");
            let code = body["error"]["code"].as_str().unwrap_or("");
            bail!("{status} {code}: {msg}");
        }
        Ok(body)
    }

    /// GET a path, with a read token.
    ///
    /// # Errors
    /// No answer, or an error status (its code and message).
    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let token = self.tokens.token("GET", path, None)?;
        self.send(self.http.get(format!("{}{path}", self.url)).bearer_auth(token))
            .await
    }

    /// POST JSON to a path, with a write token over the exact body bytes.
    ///
    /// # Errors
    /// As [`Client::get`].
    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.post_bytes(path, serde_json::to_vec(body)?).await
    }

    /// POST these exact body bytes (JSON) to a path, with a write token
    /// over them.
    ///
    /// # Errors
    /// As [`Client::get`].
    pub async fn post_bytes(&self, path: &str, bytes: Vec<u8>) -> anyhow::Result<Value> {
        let token = self.tokens.token("POST", path, Some(&bytes))?;
        let req = self
            .http
            .post(format!("{}{path}", self.url))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(bytes);
        self.send(req).await
    }

    /// POST as [`Client::post`] within `timeout`, returning the status and
    /// the JSON body whatever the status; `Err` names why no answer came
    /// (`connect`, `timeout`, `other`).
    ///
    /// # Errors
    /// No answer.
    pub async fn post_raw(&self, path: &str, body: &Value, timeout: Duration) -> Result<(u16, Value), String> {
        let bytes = serde_json::to_vec(body).map_err(|e| e.to_string())?;
        let token = self
            .tokens
            .token("POST", path, Some(&bytes))
            .map_err(|e| e.to_string())?;
        let req = self
            .http
            .post(format!("{}{path}", self.url))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .timeout(timeout)
            .body(bytes);
        Self::send_raw(req).await
    }

    /// GET as [`Client::get`]; answers as [`Client::post_raw`].
    ///
    /// # Errors
    /// No answer.
    pub async fn get_raw(&self, path: &str, timeout: Duration) -> Result<(u16, Value), String> {
        let token = self.tokens.token("GET", path, None).map_err(|e| e.to_string())?;
        let req = self
            .http
            .get(format!("{}{path}", self.url))
            .bearer_auth(token)
            .timeout(timeout);
        Self::send_raw(req).await
    }

    async fn send_raw(req: reqwest::RequestBuilder) -> Result<(u16, Value), String> {
        let kind = |e: &reqwest::Error| {
            if e.is_timeout() {
                "timeout"
            } else if e.is_connect() {
                "connect"
            } else {
                "other"
            }
            .to_string()
        };
        let resp = req.send().await.map_err(|e| kind(&e))?;
        let status = resp.status().as_u16();
        // An answer that is not JSON (a proxy's error page) still has its status.
        let bytes = resp.bytes().await.map_err(|e| kind(&e))?;
        Ok((status, serde_json::from_slice(&bytes).unwrap_or(Value::Null)))
    }

    /// Creates a key and waits for it.
    ///
    /// # Errors
    /// As [`Client::get`].
    pub async fn create_key(
        &self,
        scheme: &str,
        threshold: u16,
        parties: Option<Vec<u16>>,
        label: Option<String>,
    ) -> anyhow::Result<Value> {
        let o = KeyOptions {
            parties,
            label,
            ..KeyOptions::default()
        };
        self.create_key_with(scheme, threshold, &o).await
    }

    /// Creates a key with options and waits for it (one request).
    ///
    /// # Errors
    /// As [`Client::get`].
    pub async fn create_key_with(&self, scheme: &str, threshold: u16, o: &KeyOptions) -> anyhow::Result<Value> {
        self.post("/v1/keys", &o.body(scheme, threshold)).await
    }

    /// Creates a key as a long operation (`?wait=false`): polls
    /// `GET /v1/operations/{id}` every `every`, hands each view to
    /// `progress`, and returns the key once the operation succeeded.
    ///
    /// # Errors
    /// As [`Client::get`], or the operation's failure.
    pub async fn create_key_following(
        &self,
        scheme: &str,
        threshold: u16,
        o: &KeyOptions,
        every: Duration,
        mut progress: impl FnMut(&Value),
    ) -> anyhow::Result<Value> {
        let mut op = self.post("/v1/keys?wait=false", &o.body(scheme, threshold)).await?;
        let id = op["operation_id"]
            .as_str()
            .ok_or_else(|| anyhow!("no operation_id in {op}"))?
            .to_string();
        loop {
            progress(&op);
            match op["state"].as_str() {
                Some("succeeded") => return Ok(op["key"].clone()),
                Some("failed") => {
                    let e = &op["error"];
                    bail!(
                        "{} {}: {}",
                        op["status"],
                        e["code"].as_str().unwrap_or(""),
                        e["message"].as_str().unwrap_or("(no message)")
                    );
                }
                _ => {}
            }
            tokio::time::sleep(every).await;
            op = self.get(&format!("/v1/operations/{id}")).await?;
        }
    }

    /// Signs a message.
    ///
    /// # Errors
    /// As [`Client::get`].
    pub async fn sign(&self, key: &str, message: &[u8]) -> anyhow::Result<Value> {
        self.sign_with_path(key, message, None).await
    }

    /// Signs a message (ECDSA: a 32-byte digest) with an optional BIP-32 path.
    ///
    /// # Errors
    /// As [`Client::get`].
    pub async fn sign_with_path(&self, key: &str, message: &[u8], path: Option<&str>) -> anyhow::Result<Value> {
        let mut body = json!({"message": hex::encode(message)});
        if let Some(p) = path {
            body["derivation_path"] = json!(p);
        }
        self.post(&format!("/v1/keys/{key}/sign"), &body).await
    }
}

/// The relay of one session over `/v1/sessions/{session_id}/messages`
/// (long poll of up to 20 s a request).
pub struct SessionRelay<'a> {
    client: &'a Client,
    session_id: String,
    ended: crate::external::Ended,
}

impl<'a> SessionRelay<'a> {
    /// The relay of session `session_id` (hex) at `client`'s node.
    pub fn new(client: &'a Client, session_id: &str) -> Self {
        SessionRelay {
            client,
            session_id: session_id.to_string(),
            ended: crate::external::Ended::default(),
        }
    }
}

impl Relay for SessionRelay<'_> {
    async fn fetch(&self, after: u64) -> Result<Vec<(u64, RelayMessage)>, PartyError> {
        let path = format!("/v1/sessions/{}/messages?after={after}&wait_ms=20000", self.session_id);
        let page = self
            .client
            .get(&path)
            .await
            .map_err(|e| PartyError::Relay(format!("{e:#}")))?;
        let messages: Vec<(u64, RelayMessage)> = page["messages"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|m| {
                let seq = m["seq"].as_u64().unwrap_or_default();
                serde_json::from_value(m["message"].clone()).map(|m| (seq, m))
            })
            .collect::<Result<_, _>>()
            .map_err(|e| PartyError::Relay(format!("malformed message page: {e}")))?;
        match page["state"].as_str() {
            Some("failed") if messages.is_empty() => {
                let view = self.client.get(&format!("/v1/sessions/{}", self.session_id)).await;
                let why = view.map(|v| v["error"].to_string()).unwrap_or_default();
                Err(PartyError::Relay(format!("the session failed: {why}")))
            }
            Some("succeeded") if messages.is_empty() => self.ended.read_again().await,
            _ => Ok(messages),
        }
    }

    async fn submit(&self, m: &RelayMessage) -> Result<(), PartyError> {
        let body = serde_json::to_vec(m).map_err(|e| PartyError::Invalid(e.to_string()))?;
        self.client
            .post_bytes(&format!("/v1/sessions/{}/messages", self.session_id), body)
            .await
            .map(|_| ())
            .map_err(|e| PartyError::Relay(format!("{e:#}")))
    }
}
