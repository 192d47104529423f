//! A small REST client for the commands `keys`, `sign`, `verify`, `bench`.
//! It signs every request itself: a write token bound to the exact body
//! bytes for `POST`, a read token for `GET` (see `sigil_node::auth`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use clap::Args;
use serde_json::{json, Value};
use sigil_crypto::Scheme;
use sigil_node::auth::ClientSigner;

use crate::ApiArgs;

/// Who the CLI is: the client id, its private key and the cluster id.
#[derive(Args, Clone, Debug)]
pub struct AuthArgs {
    /// Client id (the tokens' `sub`).
    #[arg(long, env = "SIGIL_CLIENT_ID", default_value = "admin", global = true)]
    pub client_id: String,
    /// The client's private key, PKCS#8 PEM (Ed25519 or P-256), as made by
    /// `sigil clients keygen` (`sigil dev` makes `.sigil-dev/clients/admin.key`).
    #[arg(
        long,
        env = "SIGIL_CLIENT_KEY",
        default_value = ".sigil-dev/clients/admin.key",
        global = true
    )]
    pub client_key: PathBuf,
    /// Cluster id (the tokens' `aud`).
    #[arg(long, env = "SIGIL_CLUSTER_ID", default_value = "sigil-dev", global = true)]
    pub cluster_id: String,
}

/// A client key and the cluster its tokens are for.
pub struct TokenMaker {
    signer: ClientSigner,
    aud: String,
}

impl TokenMaker {
    /// Loads the key `a` names.
    ///
    /// # Errors
    /// Unreadable or malformed key file.
    pub fn load(a: &AuthArgs) -> anyhow::Result<Arc<Self>> {
        let signer = ClientSigner::load(&a.client_id, &a.client_key)
            .with_context(|| "set --client-key / SIGIL_CLIENT_KEY (sigil clients keygen makes one)")?;
        Ok(Arc::new(TokenMaker {
            signer,
            aud: a.cluster_id.clone(),
        }))
    }

    /// A token for `method path`: a write token over `body` if given (5
    /// minutes), else a read token (1 minute).
    ///
    /// # Errors
    /// Signing failure.
    pub fn token(&self, method: &str, path: &str, body: Option<&[u8]>) -> anyhow::Result<String> {
        self.token_ttl(method, path, body, if body.is_some() { 300 } else { 60 })
    }

    /// A token as [`TokenMaker::token`] with a lifetime of `ttl_s` seconds.
    ///
    /// # Errors
    /// Signing failure.
    pub fn token_ttl(&self, method: &str, path: &str, body: Option<&[u8]>, ttl_s: i64) -> anyhow::Result<String> {
        self.signer.token(&self.aud, method, path, body, ttl_s)
    }
}

/// The message to sign or verify.
#[derive(Args, Clone, Debug)]
#[group(required = true, multiple = false)]
pub struct MessageArgs {
    /// Message as hex.
    #[arg(long)]
    pub message: Option<String>,
    /// Message as UTF-8 text.
    #[arg(long)]
    pub text: Option<String>,
}

impl MessageArgs {
    /// The message bytes.
    pub fn bytes(&self) -> anyhow::Result<Vec<u8>> {
        match (&self.message, &self.text) {
            (Some(h), _) => hex::decode(h.trim()).context("--message must be hex"),
            (None, Some(t)) => Ok(t.as_bytes().to_vec()),
            (None, None) => bail!("give --message HEX or --text TEXT"),
        }
    }
}

/// Prints a JSON value, pretty.
pub fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
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
    fn body(&self, scheme: &str, threshold: u16) -> Value {
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
    tokens: Arc<TokenMaker>,
}

impl Client {
    /// A client for `api`.
    ///
    /// # Errors
    /// The client key does not load.
    pub fn new(api: &ApiArgs) -> anyhow::Result<Self> {
        Ok(Self::with_url(&api.url, TokenMaker::load(&api.auth)?))
    }

    /// A client for `url` signing with `tokens`.
    pub fn with_url(url: &str, tokens: Arc<TokenMaker>) -> Self {
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
    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let token = self.tokens.token("GET", path, None)?;
        self.send(self.http.get(format!("{}{path}", self.url)).bearer_auth(token))
            .await
    }

    /// POST JSON to a path, with a write token over the exact body bytes.
    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let bytes = serde_json::to_vec(body)?;
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
    pub async fn create_key_with(&self, scheme: &str, threshold: u16, o: &KeyOptions) -> anyhow::Result<Value> {
        self.post("/v1/keys", &o.body(scheme, threshold)).await
    }

    /// Creates a key as a long operation (`?wait=false`): polls
    /// `GET /v1/operations/{id}` every `every`, hands each view to
    /// `progress`, and returns the key once the operation succeeded.
    pub async fn create_key_following(
        &self,
        scheme: &str,
        threshold: u16,
        o: &KeyOptions,
        every: std::time::Duration,
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
    pub async fn sign(&self, key: &str, message: &[u8]) -> anyhow::Result<Value> {
        self.sign_with_path(key, message, None).await
    }

    /// Signs a message (ECDSA: a 32-byte digest) with an optional BIP-32 path.
    pub async fn sign_with_path(&self, key: &str, message: &[u8], path: Option<&str>) -> anyhow::Result<Value> {
        let mut body = json!({"message": hex::encode(message)});
        if let Some(p) = path {
            body["derivation_path"] = json!(p);
        }
        self.post(&format!("/v1/keys/{key}/sign"), &body).await
    }
}

/// `sigil verify`.
pub async fn verify(
    api: &ApiArgs,
    key: Option<String>,
    scheme: Option<String>,
    public_key: Option<String>,
    signature: &str,
    msg: &MessageArgs,
) -> anyhow::Result<()> {
    let (scheme, public_key) = match (key, scheme, public_key) {
        (_, Some(s), Some(pk)) => (s, pk),
        (Some(k), _, _) => {
            let v = Client::new(api)?.get(&format!("/v1/keys/{k}")).await?;
            let s = v["scheme"]
                .as_str()
                .ok_or_else(|| anyhow!("key has no scheme"))?
                .to_string();
            let pk = v["public_key"]
                .as_str()
                .ok_or_else(|| anyhow!("key has no public_key"))?
                .to_string();
            (s, pk)
        }
        _ => bail!("give --key ID, or --scheme and --public-key"),
    };
    let scheme: Scheme = scheme.parse()?;
    let pk = hex::decode(public_key.trim()).context("public key must be hex")?;
    let sig = hex::decode(signature.trim()).context("--signature must be hex")?;
    scheme
        .verify(&pk, &msg.bytes()?, &sig)
        .map_err(|e| anyhow!("signature does NOT verify: {e}"))?;
    println!("signature OK ({scheme})");
    Ok(())
}

/// `sigil encrypt`: fetches the key's `N` and encrypts locally with
/// standard Paillier (`g = N + 1`); prints the decimal ciphertext.
pub async fn paillier_encrypt(api: &crate::ApiArgs, key: &str, value: &str) -> anyhow::Result<()> {
    use sigil_paillier::rug::Integer;
    let v = Client::new(api)?.get(&format!("/v1/keys/{key}")).await?;
    anyhow::ensure!(
        crate::schemes::of_view(&v).map(crate::schemes::operation) == Some(crate::schemes::Use::Decrypt),
        "key {key} is not a paillier key"
    );
    let n: Integer = v["n"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("the key has no n"))?
        .parse()
        .map_err(|_| anyhow::anyhow!("n does not parse"))?;
    let m: Integer = value
        .trim()
        .parse()
        .map_err(|_| anyhow::anyhow!("the value must be a decimal integer"))?;
    let pk = sigil_paillier::decrypt::PublicKey::new(n, Integer::from(1), 1, 0);
    let mut rng = rand::rngs::OsRng;
    let c = pk.encrypt(&m, &mut rng).map_err(|e| anyhow::anyhow!("{e}"))?;
    println!("{c}");
    Ok(())
}
