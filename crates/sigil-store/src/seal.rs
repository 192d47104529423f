//! Sealing of secret records: AES-256-GCM under a data key derived from the
//! node's master key.
//!
//! - data key = HKDF-SHA-256(ikm = master key, salt = `"sigil/store/v1"`,
//!   info = `"data-key"`), 32 bytes (RFC 5869);
//! - a fresh random 96-bit nonce per record (NIST SP 800-38D §8.2.2: random
//!   nonces are safe well below 2^32 records per key);
//! - associated data = the record's identity ([`RecordId`]), so a sealed
//!   blob moved to another row (another key, party, epoch or kind) fails to
//!   open;
//! - stored form (version 1): `0x01 || nonce (12 bytes) || ciphertext ||
//!   tag (16 bytes)`. Records written before the version byte existed
//!   (`nonce || ciphertext || tag`) still open: a blob is tried as version
//!   1 first and, if that fails authentication, as the unversioned form
//!   (AES-GCM's tag makes a wrong guess fail, never succeed).

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use hkdf::Hkdf;
use rand::RngCore;
use sha2::Sha256;
use zeroize::{Zeroize, Zeroizing};

use crate::StoreError;

/// The node's 32-byte master key. Secret: zeroized on drop, never printed.
#[derive(Clone, Zeroize, zeroize::ZeroizeOnDrop)]
pub struct MasterKey([u8; 32]);

/// The environment variable that may hold the master key (64 hex).
pub const MASTER_KEY_ENV: &str = "SIGIL_MASTER_KEY";

static MASTER_KEY_FROM_ENV: std::sync::OnceLock<Option<Zeroizing<String>>> = std::sync::OnceLock::new();

/// Reads [`MASTER_KEY_ENV`] once and removes it from the process
/// environment, so child processes and code that reads the environment
/// later never see the key. Call it first thing in `main`, before any
/// other thread exists (changing the environment is not thread-safe).
/// Later calls, and [`MasterKey::load`], use the value taken.
pub fn take_master_key_env() {
    MASTER_KEY_FROM_ENV.get_or_init(|| {
        let v = std::env::var(MASTER_KEY_ENV).ok().map(Zeroizing::new);
        if v.is_some() {
            std::env::remove_var(MASTER_KEY_ENV);
        }
        v
    });
}

impl MasterKey {
    /// The master key from [`MASTER_KEY_ENV`] (as [`take_master_key_env`]
    /// took it, or still in the environment when it was not called), else
    /// from the file `file`.
    ///
    /// # Errors
    /// Neither is set, the file cannot be read, or the key is malformed.
    pub fn load(file: Option<&std::path::Path>) -> Result<Self, StoreError> {
        let taken = MASTER_KEY_FROM_ENV
            .get()
            .and_then(|v| v.as_ref().map(|s| Zeroizing::new(s.to_string())));
        if let Some(hex) = taken.or_else(|| std::env::var(MASTER_KEY_ENV).ok().map(Zeroizing::new)) {
            return MasterKey::from_hex(&hex)
                .map_err(|e| StoreError::InvalidMasterKey(format!("{MASTER_KEY_ENV}: {e}")));
        }
        let path = file.ok_or_else(|| {
            StoreError::InvalidMasterKey(format!("no master key: set {MASTER_KEY_ENV} or master_key_file"))
        })?;
        let text = Zeroizing::new(
            std::fs::read_to_string(path)
                .map_err(|e| StoreError::InvalidMasterKey(format!("master key file {}: {e}", path.display())))?,
        );
        MasterKey::from_hex(&text)
            .map_err(|e| StoreError::InvalidMasterKey(format!("master key file {}: {e}", path.display())))
    }

    /// Wraps 32 raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        MasterKey(bytes)
    }

    /// Parses 64 hex characters (surrounding whitespace ignored), as in
    /// `SIGIL_MASTER_KEY` or a key file.
    ///
    /// # Errors
    /// [`StoreError::InvalidMasterKey`] if the text is not 64 hex characters.
    pub fn from_hex(text: &str) -> Result<Self, StoreError> {
        let mut raw = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(text.trim(), raw.as_mut())
            .map_err(|_| StoreError::InvalidMasterKey("expected 64 hex characters (32 bytes)".into()))?;
        Ok(MasterKey(*raw))
    }

    /// A fresh random master key.
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        MasterKey(bytes)
    }

    /// The key as 64 hex characters, for writing a new key file.
    pub fn to_hex(&self) -> Zeroizing<String> {
        Zeroizing::new(hex::encode(self.0))
    }
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

/// The identity of a sealed record, bound in as AES-GCM associated data, so
/// a sealed blob opens only as the record it was written as (not as another
/// key's share, another party's or another epoch's).
///
/// Every identity is built here, by one constructor per record kind; the
/// backends never see one. The associated data is `"sigil/v1"`, then
/// `kind` and `key_id` (each as `u32` BE length and bytes), `party` (`u16`
/// BE) and `epoch` (`u32` BE). The encodings are fixed: stores written by
/// earlier versions open with the same identities.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordId {
    kind: String,
    key_id: String,
    party: u16,
    epoch: u32,
}

impl RecordId {
    /// `party`'s share of `key_id` at `epoch`: `("key_share", key_id, party, epoch)`.
    pub fn key_share(key_id: &str, party: u16, epoch: u32) -> Self {
        Self::new("key_share", key_id, party, epoch)
    }

    /// `party`'s CGGMP21 aux info of the ordered `party_set` (node ids
    /// joined by `,`): `("aux_info", party_set, party, 0)`.
    pub fn aux_info(party_set: &str, party: u16) -> Self {
        Self::new("aux_info", party_set, party, 0)
    }

    /// A pooled safe prime of `bits` bits: `("prime", "", 0, bits)`.
    pub fn prime(bits: u32) -> Self {
        Self::new("prime", "", 0, bits)
    }

    /// `party`'s presignature of `key_id` for `signer_set`, made in
    /// presigning session `presig_id`:
    /// `("presignature/<signer_set>/<presig_id>", key_id, party, 0)`.
    pub fn presignature(key_id: &str, signer_set: &str, presig_id: &str, party: u16) -> Self {
        Self::new(&format!("presignature/{signer_set}/{presig_id}"), key_id, party, 0)
    }

    /// The store's canary (proves the master key at open): `("canary", "", 0, 0)`.
    pub fn canary() -> Self {
        Self::new("canary", "", 0, 0)
    }

    fn new(kind: &str, key_id: &str, party: u16, epoch: u32) -> Self {
        RecordId {
            kind: kind.to_string(),
            key_id: key_id.to_string(),
            party,
            epoch,
        }
    }

    fn associated_data(&self) -> Vec<u8> {
        let mut ad = Vec::with_capacity(32 + self.kind.len() + self.key_id.len());
        ad.extend_from_slice(b"sigil/v1");
        for part in [self.kind.as_bytes(), self.key_id.as_bytes()] {
            ad.extend_from_slice(&u32::try_from(part.len()).unwrap_or(u32::MAX).to_be_bytes());
            ad.extend_from_slice(part);
        }
        ad.extend_from_slice(&self.party.to_be_bytes());
        ad.extend_from_slice(&self.epoch.to_be_bytes());
        ad
    }
}

const NONCE_LEN: usize = 12;

/// The first byte of a sealed record in the current format.
pub const SEAL_VERSION: u8 = 1;

/// Seals and opens records under the data key of one master key.
pub struct Sealer {
    cipher: Aes256Gcm,
}

impl Sealer {
    /// Derives the data key from `master`.
    pub fn new(master: &MasterKey) -> Self {
        let hk = Hkdf::<Sha256>::new(Some(b"sigil/store/v1"), &master.0);
        let mut data_key = Zeroizing::new([0u8; 32]);
        // 32 bytes is far below HKDF-SHA-256's 255 * 32 byte limit.
        if hk.expand(b"data-key", data_key.as_mut()).is_err() {
            unreachable!("HKDF output length is valid");
        }
        let cipher = Aes256Gcm::new(data_key.as_ref().into());
        Sealer { cipher }
    }

    /// Seals `plaintext` as record `id`: `nonce || ciphertext || tag`.
    ///
    /// # Errors
    /// [`StoreError::Seal`] if encryption fails (it does not for inputs
    /// below 64 GiB).
    pub fn seal(&self, id: &RecordId, plaintext: &[u8]) -> Result<Vec<u8>, StoreError> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let aad = id.associated_data();
        let ct = self
            .cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .map_err(|_| StoreError::Seal("encryption failed".into()))?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + ct.len());
        out.push(SEAL_VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    /// Opens a record sealed by [`Sealer::seal`] under the same identity.
    ///
    /// # Errors
    /// [`StoreError::Unseal`] if the blob is truncated, was tampered with,
    /// belongs to another record, or was sealed under another master key.
    pub fn open(&self, id: &RecordId, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, StoreError> {
        if let Some(v1) = sealed.strip_prefix(&[SEAL_VERSION]) {
            if let Some(plain) = self.open_unversioned(id, v1) {
                return Ok(plain);
            }
        }
        self.open_unversioned(id, sealed).ok_or_else(|| {
            StoreError::Unseal(format!(
                "{} record of key {:?} (party {}, epoch {}) failed authentication: tampered, truncated, moved, or sealed under another master key",
                id.kind, id.key_id, id.party, id.epoch
            ))
        })
    }

    /// Opens `nonce || ciphertext || tag`; `None` if it does not authenticate.
    fn open_unversioned(&self, id: &RecordId, sealed: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        if sealed.len() < NONCE_LEN + 16 {
            return None;
        }
        let (nonce, ct) = sealed.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().ok()?;
        let aad = id.associated_data();
        self.cipher
            .decrypt(&Nonce::from(nonce), Payload { msg: ct, aad: &aad })
            .map(Zeroizing::new)
            .ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(key_id: &str) -> RecordId {
        RecordId::key_share(key_id, 1, 0)
    }

    #[test]
    fn seal_round_trip_and_fresh_nonce() -> Result<(), StoreError> {
        let sealer = Sealer::new(&MasterKey::generate());
        let a = sealer.seal(&id("k1"), b"secret share")?;
        let b = sealer.seal(&id("k1"), b"secret share")?;
        assert_ne!(a, b, "each seal uses a fresh nonce");
        assert_eq!(sealer.open(&id("k1"), &a)?.as_slice(), b"secret share");
        assert!(!a.windows(6).any(|w| w == b"secret"), "plaintext must not appear");
        Ok(())
    }

    #[test]
    fn wrong_key_tamper_and_moved_record_fail() -> Result<(), StoreError> {
        let sealer = Sealer::new(&MasterKey::generate());
        let sealed = sealer.seal(&id("k1"), b"secret share")?;
        assert!(Sealer::new(&MasterKey::generate()).open(&id("k1"), &sealed).is_err());
        assert!(sealer.open(&id("k2"), &sealed).is_err(), "bound to its key id");
        let other_epoch = RecordId::key_share("k1", 1, 1);
        assert!(sealer.open(&other_epoch, &sealed).is_err(), "bound to its epoch");
        for i in 0..sealed.len() {
            let mut t = sealed.clone();
            if let Some(b) = t.get_mut(i) {
                *b ^= 0x01;
            }
            assert!(sealer.open(&id("k1"), &t).is_err(), "flip at byte {i} detected");
        }
        assert!(sealer.open(&id("k1"), sealed.get(..10).unwrap_or_default()).is_err());
        Ok(())
    }

    /// A record sealed by this version under a fixed master key, pinned: a
    /// change of the format, the key derivation or the associated data makes
    /// this fail (and would make every existing store unreadable). The same
    /// record without its version byte, as stores before the version byte
    /// hold it, opens too.
    #[test]
    fn sealed_format_is_pinned_and_unversioned_records_open() {
        let sealer = Sealer::new(&MasterKey::from_hex(&"11".repeat(32)).unwrap_or_else(|_| MasterKey::generate()));
        let id = RecordId::key_share("k", 2, 0);
        let v1 = hex::decode("01bf5f66c01c7051a19f49f42d8d4b94b725d423c17f9abdfda388301b4608ce2a4a23c83c90626e48")
            .unwrap_or_default();
        assert_eq!(v1.first(), Some(&SEAL_VERSION));
        assert_eq!(
            sealer.open(&id, &v1).ok().as_deref().map(|p| p.as_slice()),
            Some(&b"pinned share"[..])
        );
        let unversioned = v1.get(1..).unwrap_or_default();
        assert_eq!(
            sealer.open(&id, unversioned).ok().as_deref().map(|p| p.as_slice()),
            Some(&b"pinned share"[..])
        );
        assert!(sealer.open(&RecordId::key_share("k", 2, 1), &v1).is_err());
        assert_eq!(
            sealer.seal(&id, b"x").ok().and_then(|s| s.first().copied()),
            Some(SEAL_VERSION)
        );
    }

    /// The associated data of each kind is pinned: a change would make every
    /// existing store unreadable.
    #[test]
    fn record_identities_are_stable() {
        let hex = |id: RecordId| hex::encode(id.associated_data());
        assert_eq!(
            hex(RecordId::key_share("k", 2, 3)),
            "736967696c2f7631000000096b65795f7368617265000000016b000200000003"
        );
        assert_eq!(
            hex(RecordId::prime(1536)),
            "736967696c2f7631000000057072696d6500000000000000000600"
        );
        assert_eq!(
            hex(RecordId::presignature("k", "0,1", "ab", 1)),
            hex(RecordId::new("presignature/0,1/ab", "k", 1, 0))
        );
    }

    #[test]
    fn master_key_parsing() {
        assert!(MasterKey::from_hex(&"ab".repeat(32)).is_ok());
        assert!(MasterKey::from_hex("abcd").is_err());
        assert!(MasterKey::from_hex(&"zz".repeat(32)).is_err());
        assert_eq!(format!("{:?}", MasterKey::generate()), "MasterKey(<redacted>)");
    }
}
