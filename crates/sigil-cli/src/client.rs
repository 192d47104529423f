//! A small REST client for the commands `keys`, `sign`, `verify`, `bench`.
//! It signs every request itself: a write token bound to the exact body
//! bytes for `POST`, a read token for `GET` (see `sigil_node::auth`).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context};
use clap::Args;
use serde_json::Value;
use sigil_crypto::Scheme;

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

pub use sigil_client::{Client, KeyOptions, Tokens as TokenMaker};

/// The tokens of the client `a` names.
///
/// # Errors
/// Unreadable or malformed key file.
pub fn tokens(a: &AuthArgs) -> anyhow::Result<Arc<TokenMaker>> {
    TokenMaker::load(&a.client_id, &a.client_key, &a.cluster_id)
        .with_context(|| "set --client-key / SIGIL_CLIENT_KEY (sigil clients keygen makes one)")
}

/// A client of the node `api` names, signing as its client.
///
/// # Errors
/// The client key does not load.
pub fn connect(api: &ApiArgs) -> anyhow::Result<Client> {
    Ok(Client::with_url(&api.url, tokens(&api.auth)?))
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
            let v = connect(api)?.get(&format!("/v1/keys/{k}")).await?;
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
    let v = connect(api)?.get(&format!("/v1/keys/{key}")).await?;
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
