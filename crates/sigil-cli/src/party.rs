//! `sigil party`: this process as the external party of a key (2-of-2
//! with one node, 2-of-3 with two nodes, ...): `keygen` makes the key and
//! writes this party's share sealed to `--key-file`, `sign` signs with
//! it. Both run through the node `--url` names, which relays the
//! session; see `sigil_client::external`.
//!
//! The share file is sealed with a passphrase (`SIGIL_PARTY_PASSPHRASE`,
//! or `--passphrase-file`; Argon2id) or 32 raw key bytes
//! (`--raw-key-file`, 64 hex characters). Lose it and a 2-of-2 key can
//! never sign again.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use sigil_client::keyfile::Unlock;
use zeroize::Zeroizing;

use crate::client::{print_json, MessageArgs};
use crate::ApiArgs;

/// `sigil party ...`.
#[derive(Subcommand)]
pub enum PartyCmd {
    /// Make a key with this process as its external party.
    Keygen {
        /// frost-ed25519, frost-secp256k1-tr, frost-p256, ecdsa-secp256k1
        /// or ecdsa-p256.
        #[arg(long, default_value = "frost-ed25519")]
        scheme: String,
        /// ECDSA: a file of decimal 1536-bit safe primes, one per line;
        /// this party uses the pair at --primes-pair for the key's aux
        /// info (default: make two here, seconds of CPU). Never give the
        /// same pair twice, or one a node has.
        #[arg(long)]
        primes: Option<PathBuf>,
        /// The pair of --primes to use (0: the first two lines).
        #[arg(long, default_value_t = 0, requires = "primes")]
        primes_pair: usize,
        /// Signers needed, t, counting this party.
        #[arg(long, default_value_t = 2)]
        threshold: u16,
        /// Node parties, comma-separated (default: every node).
        #[arg(long, value_delimiter = ',')]
        parties: Option<Vec<u16>>,
        /// Free-text label.
        #[arg(long)]
        label: Option<String>,
        /// Every signature needs this party (even when t nodes could sign).
        #[arg(long)]
        require_external: bool,
        #[command(flatten)]
        party: PartyArgs,
    },
    /// Make an X25519 recipient key for a user share (`"user_share":
    /// {"recipient_public_key"}` in `POST /v1/keys`): writes the secret
    /// key (64 hex, mode 0600) to --out and prints the public key.
    RecipientKey {
        /// Where the secret key goes (must not exist).
        #[arg(long)]
        out: PathBuf,
    },
    /// Import a user share: the answer of `POST /v1/keys` with
    /// `user_share` (--key-json), opened with the recipient key, checked
    /// against the key and sealed to --key-file.
    Import {
        /// The key JSON the node answered (with `user_share`).
        #[arg(long)]
        key_json: PathBuf,
        /// The recipient's secret key (from `sigil party recipient-key`).
        #[arg(long)]
        recipient_key_file: PathBuf,
        #[command(flatten)]
        party: PartyArgs,
    },
    /// Sign with the key whose share is in --key-file.
    Sign {
        #[command(flatten)]
        msg: MessageArgs,
        /// ECDSA: BIP-32 non-hardened derivation path (m/0/1).
        #[arg(long)]
        derivation_path: Option<String>,
        #[command(flatten)]
        party: PartyArgs,
    },
}

/// Where this party's share and the cluster's identities are.
#[derive(Args)]
pub struct PartyArgs {
    /// The sealed share file (keygen: must not exist).
    #[arg(long)]
    key_file: PathBuf,
    /// A file holding the passphrase (else `SIGIL_PARTY_PASSPHRASE`).
    #[arg(long, conflicts_with = "raw_key_file")]
    passphrase_file: Option<PathBuf>,
    /// A file holding a 32-byte sealing key as 64 hex characters.
    #[arg(long)]
    raw_key_file: Option<PathBuf>,
    /// `identities.json` of the cluster: every message is checked against
    /// it, never against what the relay says.
    #[arg(long, default_value = ".sigil-dev/certs/identities.json")]
    identities: PathBuf,
    /// Go through the node's gRPC `sigil.v1.Signer` (`http://host:port`,
    /// or `https://` with --grpc-ca) instead of its REST API.
    #[arg(long)]
    grpc: Option<String>,
    /// CA certificate (PEM) of the node's gRPC TLS.
    #[arg(long)]
    grpc_ca: Option<PathBuf>,
    #[command(flatten)]
    api: ApiArgs,
}

/// The door a party goes through.
enum Door {
    Rest(sigil_client::Client),
    Grpc(sigil_client::GrpcClient),
}

impl PartyArgs {
    fn unlock(&self) -> anyhow::Result<Unlock> {
        if let Some(f) = &self.raw_key_file {
            let text = Zeroizing::new(std::fs::read_to_string(f).with_context(|| f.display().to_string())?);
            let bytes = Zeroizing::new(hex::decode(text.trim()).context("--raw-key-file: not hex")?);
            let key: [u8; 32] = bytes
                .as_slice()
                .try_into()
                .context("--raw-key-file: 32 bytes (64 hex characters)")?;
            return Ok(Unlock::Raw(Zeroizing::new(key)));
        }
        let passphrase = match &self.passphrase_file {
            Some(f) => Zeroizing::new(std::fs::read_to_string(f).with_context(|| f.display().to_string())?),
            None => Zeroizing::new(std::env::var("SIGIL_PARTY_PASSPHRASE").unwrap_or_default()),
        };
        let passphrase = Zeroizing::new(passphrase.trim_end_matches(['\n', '\r']).to_string());
        if passphrase.chars().count() < 8 {
            bail!("give a passphrase of at least 8 characters (SIGIL_PARTY_PASSPHRASE or --passphrase-file), or --raw-key-file");
        }
        Ok(Unlock::Passphrase(passphrase))
    }

    fn context(&self) -> anyhow::Result<(Door, std::collections::HashMap<u16, ed25519_dalek::VerifyingKey>)> {
        let text = std::fs::read_to_string(&self.identities)
            .with_context(|| format!("--identities {}", self.identities.display()))?;
        let door = match &self.grpc {
            None => Door::Rest(crate::client::connect(&self.api)?),
            Some(url) => {
                let ca = self
                    .grpc_ca
                    .as_ref()
                    .map(std::fs::read)
                    .transpose()
                    .context("--grpc-ca")?;
                let tokens = crate::client::tokens(&self.api.auth)?;
                Door::Grpc(sigil_client::GrpcClient::connect(url, ca.as_deref(), tokens)?)
            }
        };
        Ok((door, sigil_client::party::parse_identities(&text)?))
    }
}

/// Runs `sigil party ...`.
///
/// # Errors
/// Bad arguments, the share file, or the session's failure.
pub async fn command(cmd: PartyCmd) -> anyhow::Result<()> {
    match cmd {
        PartyCmd::Keygen {
            scheme,
            threshold,
            parties,
            label,
            require_external,
            primes,
            primes_pair,
            party,
        } => {
            let unlock = party.unlock()?;
            let (client, identities) = party.context()?;
            let primes = primes
                .map(|f| sigil_client::external::primes_from_file(&f, primes_pair))
                .transpose()?;
            let args = sigil_client::external::KeygenArgs {
                scheme: scheme.parse()?,
                threshold,
                parties,
                label,
                require_external,
                key_file: &party.key_file,
                unlock: &unlock,
                primes,
            };
            let key = match &client {
                Door::Rest(c) => sigil_client::external::keygen(c, &identities, args).await?,
                Door::Grpc(c) => sigil_client::external::keygen(c, &identities, args).await?,
            };
            eprintln!("share sealed in {}", party.key_file.display());
            print_json(&key);
        }
        PartyCmd::RecipientKey { out } => {
            anyhow::ensure!(!out.exists(), "{} exists", out.display());
            let secret = sigil_crypto::relay::SessionSecret::generate(&mut rand::rngs::OsRng);
            sigil_node::certs::write_secret(&out, hex::encode(secret.secret_bytes().as_ref()).as_bytes())?;
            println!("{}", hex::encode(secret.public_key()));
        }
        PartyCmd::Import {
            key_json,
            recipient_key_file,
            party,
        } => {
            let unlock = party.unlock()?;
            let key: serde_json::Value = serde_json::from_str(
                &std::fs::read_to_string(&key_json).with_context(|| key_json.display().to_string())?,
            )?;
            let text = Zeroizing::new(
                std::fs::read_to_string(&recipient_key_file)
                    .with_context(|| recipient_key_file.display().to_string())?,
            );
            let bytes = Zeroizing::new(hex::decode(text.trim()).context("recipient key: not hex")?);
            let secret: [u8; 32] = bytes.as_slice().try_into().context("recipient key: 32 bytes")?;
            let recipient = sigil_crypto::relay::SessionSecret::from_bytes(&secret)?;
            sigil_client::external::import_user_share(&key, &recipient, &party.key_file, &unlock)?;
            eprintln!(
                "user share of key {} sealed in {}",
                key["key_id"],
                party.key_file.display()
            );
        }
        PartyCmd::Sign {
            msg,
            derivation_path,
            party,
        } => {
            let unlock = party.unlock()?;
            let (client, identities) = party.context()?;
            let message = msg.bytes()?;
            let path = derivation_path
                .as_deref()
                .map(sigil_crypto::ecdsa::parse_derivation_path)
                .transpose()?
                .unwrap_or_default();
            let (file, ids) = (&party.key_file, &identities);
            let sig = match &client {
                Door::Rest(c) => sigil_client::external::sign(c, ids, file, &unlock, &message, &path).await?,
                Door::Grpc(c) => sigil_client::external::sign(c, ids, file, &unlock, &message, &path).await?,
            };
            print_json(&sig);
        }
    }
    Ok(())
}
