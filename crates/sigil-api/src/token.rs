//! Client request tokens: the claims every Sigil request carries and the
//! signer that makes them (the CLI, `sigil-client`, tests and benches).
//! The nodes verify them (`sigil_node::auth`).
//!
//! A token is a JWT (JWS compact serialization, RFC 7515 section 7.1)
//! signed by the client's key: `EdDSA` (Ed25519, RFC 8037) or `ES256`
//! (P-256). A token with `body_sha256` is a *write* token (`exp - iat` at
//! most [`MAX_WRITE_TTL_S`], single use), one without a *read* token
//! (`GET` only, at most [`MAX_READ_TTL_S`]).

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};
use sha2::Digest;

/// Longest life of a write token (`exp - iat`), in seconds.
pub const MAX_WRITE_TTL_S: i64 = 300;
/// Longest life of a read token, in seconds.
pub const MAX_READ_TTL_S: i64 = 3600;

/// Hex SHA-256 of `body`.
pub fn body_hash(body: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(body))
}

/// Seconds since the Unix epoch.
fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The claims of a Sigil request token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// Client id.
    pub sub: String,
    /// Cluster id (the node's `cluster_id`).
    pub aud: String,
    /// Issued at, seconds since the Unix epoch.
    pub iat: i64,
    /// Expires at, seconds since the Unix epoch.
    pub exp: i64,
    /// Random single-use id (at most 128 characters).
    pub jti: String,
    /// HTTP method, upper case.
    pub htm: String,
    /// Request path, without query (e.g. `/v1/keys/{id}/sign`).
    pub htu: String,
    /// Hex SHA-256 of the exact body bytes; present on write tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_sha256: Option<String>,
}

/// A client's private key, for making tokens (the CLI, tests, benches).
pub struct ClientSigner {
    /// Client id (`sub`).
    pub id: String,
    key: SigningKey,
}

/// The parsed private key: Ed25519 tokens are signed with the key parsed
/// once (`jsonwebtoken` parses its PKCS#8 DER again for every token); the
/// tokens are the same JWS compact serialization (RFC 7515 section 7.1,
/// RFC 8037 section 3.1), byte for byte what `jsonwebtoken` makes (a test
/// checks it).
enum SigningKey {
    Ed25519(ed25519_dalek::SigningKey),
    Es256(EncodingKey),
}

impl ClientSigner {
    /// Loads a PKCS#8 PEM private key (Ed25519 or P-256) for client `id`.
    ///
    /// # Errors
    /// Not a PKCS#8 Ed25519 or P-256 key.
    pub fn from_pem(id: &str, pem: &str) -> anyhow::Result<Self> {
        use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey};
        if let Ok(k) = ed25519_dalek::SigningKey::from_pkcs8_pem(pem.trim()) {
            return Ok(ClientSigner {
                id: id.into(),
                key: SigningKey::Ed25519(k),
            });
        }
        let k = p256::SecretKey::from_pkcs8_pem(pem.trim())
            .map_err(|_| anyhow::anyhow!("not a PKCS#8 Ed25519 or P-256 private key"))?;
        let der = k.to_pkcs8_der().map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(ClientSigner {
            id: id.into(),
            key: SigningKey::Es256(EncodingKey::from_ec_der(der.as_bytes())),
        })
    }

    /// Reads the key from `path`.
    ///
    /// # Errors
    /// Unreadable file or bad key.
    pub fn load(id: &str, path: &std::path::Path) -> anyhow::Result<Self> {
        let pem = zeroize::Zeroizing::new(
            std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("client key {}: {e}", path.display()))?,
        );
        Self::from_pem(id, &pem)
    }

    /// Signs `claims` as they are (tests use this to make bad tokens).
    ///
    /// # Errors
    /// Signing failure.
    pub fn sign_claims(&self, claims: &Claims) -> anyhow::Result<String> {
        match &self.key {
            SigningKey::Es256(k) => Ok(jsonwebtoken::encode(&Header::new(Algorithm::ES256), claims, k)?),
            SigningKey::Ed25519(k) => {
                use base64::Engine as _;
                use ed25519_dalek::Signer as _;
                let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
                let mut token = b64.encode(br#"{"typ":"JWT","alg":"EdDSA"}"#);
                token.push('.');
                b64.encode_string(serde_json::to_vec(claims)?, &mut token);
                let signature = k.sign(token.as_bytes());
                token.push('.');
                b64.encode_string(signature.to_bytes(), &mut token);
                Ok(token)
            }
        }
    }

    /// The claims of a token for `method path`: a write token binding
    /// `body` when given (`ttl_s` at most [`MAX_WRITE_TTL_S`]), else a read
    /// token.
    pub fn claims(&self, aud: &str, method: &str, path: &str, body: Option<&[u8]>, ttl_s: i64) -> Claims {
        use rand::RngCore;
        let mut jti = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut jti);
        let iat = now_unix();
        Claims {
            sub: self.id.clone(),
            aud: aud.into(),
            iat,
            exp: iat + ttl_s,
            jti: hex::encode(jti),
            htm: method.to_ascii_uppercase(),
            htu: path.split('?').next().unwrap_or_default().to_string(),
            body_sha256: body.map(body_hash),
        }
    }

    /// A token for `method path` (see [`ClientSigner::claims`]).
    ///
    /// # Errors
    /// Signing failure.
    pub fn token(
        &self,
        aud: &str,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        ttl_s: i64,
    ) -> anyhow::Result<String> {
        self.sign_claims(&self.claims(aud, method, path, body, ttl_s))
    }
}

/// A new client key pair: (PKCS#8 PEM private key, SPKI PEM public key).
/// `p256 = false` gives Ed25519.
///
/// # Errors
/// Encoding failure.
pub fn generate_client_key(p256: bool) -> anyhow::Result<(zeroize::Zeroizing<String>, String)> {
    use p256::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
    if p256 {
        let k = p256::SecretKey::random(&mut rand::rngs::OsRng);
        let private = k.to_pkcs8_pem(LineEnding::LF).map_err(|e| anyhow::anyhow!("{e}"))?;
        let public = k
            .public_key()
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        return Ok((zeroize::Zeroizing::new(private.to_string()), public));
    }
    let k = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
    let private = k.to_pkcs8_pem(LineEnding::LF).map_err(|e| anyhow::anyhow!("{e}"))?;
    let public = k
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok((zeroize::Zeroizing::new(private.to_string()), public))
}
