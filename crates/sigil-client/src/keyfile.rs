//! The external party's share file: the key's public record in the clear
//! and the share sealed with AES-256-GCM under a key derived from a
//! passphrase with Argon2id (RFC 9106; 19 MiB, 2 passes, 1 lane: OWASP's
//! minimum) or given as 32 raw bytes. The associated data is the whole
//! public header, so no field of it can be swapped or edited without the
//! share failing to open. The share is never sent anywhere.
//!
//! File (JSON, mode 0600, written once: an existing file is never
//! overwritten):
//!
//! ```json
//! {"header": {"version": 1, "key_id": "…", "scheme": "frost-ed25519", "threshold": 2,
//!             "parties": [0, 65535], "index": 1, "public_key": "hex", "public_package": "hex",
//!             "kdf": {"argon2id": {"salt": "hex", "m_cost_kib": 19456, "t_cost": 2, "p_cost": 1}}},
//!  "nonce": "hex (12 bytes)", "ciphertext": "hex"}
//! ```

use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// The version of the file format.
const VERSION: u32 = 1;

/// How the sealing key is made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum Kdf {
    /// Argon2id over a passphrase.
    Argon2id {
        /// 16 random bytes, hex.
        salt: String,
        /// Memory, in KiB.
        m_cost_kib: u32,
        /// Passes.
        t_cost: u32,
        /// Lanes.
        p_cost: u32,
    },
    /// 32 raw key bytes given by the caller (an HSM, a platform keystore).
    Raw,
}

/// The public part of a share file (also the AEAD's associated data).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    /// Format version (1).
    pub version: u32,
    /// The key.
    pub key_id: String,
    /// Its scheme.
    pub scheme: String,
    /// Its threshold `t`.
    pub threshold: u16,
    /// Its parties in key order (65535: this external party).
    pub parties: Vec<u16>,
    /// This party's index among them.
    pub index: u16,
    /// The key's public key, hex.
    pub public_key: String,
    /// The key's public key package (FROST `PublicKeyPackage`), hex.
    pub public_package: String,
    /// How the sealing key is made.
    pub kdf: Kdf,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    header: Header,
    nonce: String,
    ciphertext: String,
}

/// What unlocks a share file.
pub enum Unlock {
    /// A passphrase (Argon2id).
    Passphrase(Zeroizing<String>),
    /// 32 raw key bytes.
    Raw(Zeroizing<[u8; 32]>),
}

/// Why a share file could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// Reading or writing the file.
    #[error("{0}")]
    Io(String),
    /// Not a share file of this version.
    #[error("not a share file: {0}")]
    Malformed(String),
    /// Wrong passphrase or key, or an edited file.
    #[error("the share does not open: wrong passphrase or key, or the file was altered")]
    WrongKey,
}

fn sealing_key(kdf: &Kdf, unlock: &Unlock) -> Result<Zeroizing<[u8; 32]>, KeyFileError> {
    match (kdf, unlock) {
        (Kdf::Raw, Unlock::Raw(k)) => Ok(k.clone()),
        (
            Kdf::Argon2id {
                salt,
                m_cost_kib,
                t_cost,
                p_cost,
            },
            Unlock::Passphrase(p),
        ) => {
            let salt = hex::decode(salt).map_err(|_| KeyFileError::Malformed("salt".into()))?;
            // An edited file must not make the client allocate gigabytes.
            if *m_cost_kib > 1 << 20 || *t_cost > 16 || *p_cost > 16 {
                return Err(KeyFileError::Malformed("argon2 parameters out of range".into()));
            }
            let params = argon2::Params::new(*m_cost_kib, *t_cost, *p_cost, Some(32))
                .map_err(|e| KeyFileError::Malformed(format!("argon2 parameters: {e}")))?;
            let mut key = Zeroizing::new([0u8; 32]);
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
                .hash_password_into(p.as_bytes(), &salt, key.as_mut())
                .map_err(|e| KeyFileError::Malformed(format!("argon2: {e}")))?;
            Ok(key)
        }
        (Kdf::Raw, _) => Err(KeyFileError::Malformed("the file is sealed with a raw key".into())),
        (_, _) => Err(KeyFileError::Malformed("the file is sealed with a passphrase".into())),
    }
}

impl Header {
    /// A header for a new file unlocked by `unlock` (fresh salt).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        key_id: &str,
        scheme: &str,
        threshold: u16,
        parties: Vec<u16>,
        index: u16,
        public_key: &[u8],
        public_package: &[u8],
        unlock: &Unlock,
    ) -> Self {
        let kdf = match unlock {
            Unlock::Raw(_) => Kdf::Raw,
            Unlock::Passphrase(_) => {
                let mut salt = [0u8; 16];
                rand::rngs::OsRng.fill_bytes(&mut salt);
                Kdf::Argon2id {
                    salt: hex::encode(salt),
                    m_cost_kib: 19 * 1024,
                    t_cost: 2,
                    p_cost: 1,
                }
            }
        };
        Header {
            version: VERSION,
            key_id: key_id.into(),
            scheme: scheme.into(),
            threshold,
            parties,
            index,
            public_key: hex::encode(public_key),
            public_package: hex::encode(public_package),
            kdf,
        }
    }
}

/// Seals `share` under `header` and writes the file at `path` (mode 0600;
/// refuses an existing file).
///
/// # Errors
/// [`KeyFileError::Io`] (the file exists, or cannot be written).
pub fn write(path: &Path, header: &Header, share: &[u8], unlock: &Unlock) -> Result<(), KeyFileError> {
    let key = sealing_key(&header.kdf, unlock)?;
    let aad = serde_json::to_vec(header).map_err(|e| KeyFileError::Malformed(e.to_string()))?;
    let mut nonce = [0u8; 12];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let cipher = Aes256Gcm::new_from_slice(key.as_ref()).map_err(|e| KeyFileError::Malformed(e.to_string()))?;
    let ciphertext = cipher
        .encrypt(&Nonce::from(nonce), Payload { msg: share, aad: &aad })
        .map_err(|_| KeyFileError::Malformed("sealing failed".into()))?;
    let file = File {
        header: header.clone(),
        nonce: hex::encode(nonce),
        ciphertext: hex::encode(ciphertext),
    };
    let text = serde_json::to_string_pretty(&file).map_err(|e| KeyFileError::Malformed(e.to_string()))?;
    let io = |e: std::io::Error| KeyFileError::Io(format!("{}: {e}", path.display()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options.open(path).map_err(io)?;
    std::io::Write::write_all(&mut f, text.as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)
}

/// Reads the file at `path` and opens its share.
///
/// # Errors
/// [`KeyFileError`].
pub fn read(path: &Path, unlock: &Unlock) -> Result<(Header, Zeroizing<Vec<u8>>), KeyFileError> {
    let text = std::fs::read_to_string(path).map_err(|e| KeyFileError::Io(format!("{}: {e}", path.display())))?;
    let file: File = serde_json::from_str(&text).map_err(|e| KeyFileError::Malformed(e.to_string()))?;
    if file.header.version != VERSION {
        return Err(KeyFileError::Malformed(format!("version {}", file.header.version)));
    }
    let key = sealing_key(&file.header.kdf, unlock)?;
    let aad = serde_json::to_vec(&file.header).map_err(|e| KeyFileError::Malformed(e.to_string()))?;
    let nonce: [u8; 12] = hex::decode(&file.nonce)
        .ok()
        .and_then(|n| n.try_into().ok())
        .ok_or_else(|| KeyFileError::Malformed("nonce".into()))?;
    let ciphertext = hex::decode(&file.ciphertext).map_err(|_| KeyFileError::Malformed("ciphertext".into()))?;
    let cipher = Aes256Gcm::new_from_slice(key.as_ref()).map_err(|e| KeyFileError::Malformed(e.to_string()))?;
    let share = cipher
        .decrypt(
            &Nonce::from(nonce),
            Payload {
                msg: &ciphertext,
                aad: &aad,
            },
        )
        .map_err(|_| KeyFileError::WrongKey)?;
    Ok((file.header, Zeroizing::new(share)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn header(unlock: &Unlock) -> Header {
        Header::new("k1", "frost-ed25519", 2, vec![0, 65535], 1, &[1; 32], &[2; 8], unlock)
    }

    #[test]
    fn sealed_with_a_passphrase_opens_only_with_it_and_unaltered() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("share.json");
        let unlock = Unlock::Passphrase(Zeroizing::new("correct horse".into()));
        let h = header(&unlock);
        write(&path, &h, b"secret share", &unlock).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains(&hex::encode(b"secret share")), "sealed");
        let (back, share) = read(&path, &unlock).unwrap();
        assert_eq!((back, share.as_slice()), (h.clone(), &b"secret share"[..]));
        let wrong = Unlock::Passphrase(Zeroizing::new("wrong".into()));
        assert!(matches!(read(&path, &wrong), Err(KeyFileError::WrongKey)));
        // Editing the public header (another key id) breaks the seal.
        std::fs::write(&path, text.replace("\"k1\"", "\"k2\"")).unwrap();
        assert!(matches!(read(&path, &unlock), Err(KeyFileError::WrongKey)));
        assert!(
            matches!(write(&path, &h, b"x", &unlock), Err(KeyFileError::Io(_))),
            "never overwrites"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
    }

    #[test]
    fn sealed_with_raw_key_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("share.json");
        let unlock = Unlock::Raw(Zeroizing::new([7; 32]));
        write(&path, &header(&unlock), b"s", &unlock).unwrap();
        assert_eq!(read(&path, &unlock).unwrap().1.as_slice(), b"s");
        assert!(matches!(
            read(&path, &Unlock::Raw(Zeroizing::new([8; 32]))),
            Err(KeyFileError::WrongKey)
        ));
        assert!(matches!(
            read(&path, &Unlock::Passphrase(Zeroizing::new("p".into()))),
            Err(KeyFileError::Malformed(_))
        ));
    }
}
