//! The process key that pooled presignatures are sealed under, inside the
//! store's own sealing: AES-256-GCM with a key generated when the node
//! starts and held only in its memory. A presignature row restored from a
//! backup or a VM snapshot (made by an earlier process) cannot be opened,
//! so it is never served a second time: two signatures from one
//! presignature reveal the key. A node also deletes every pooled
//! presignature when it starts; the pool refills in the background.
//!
//! Sealed form: 12-byte random nonce, then ciphertext and tag; the
//! associated data binds the key id, signer set, party and presignature
//! id, length-prefixed under the domain `sigil/presignature/process/v1`.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use rand::RngCore;
use zeroize::Zeroizing;

/// The key of this process.
pub struct ProcessSeal {
    cipher: Aes256Gcm,
}

impl ProcessSeal {
    /// A fresh random key (from the OS).
    pub fn generate() -> Self {
        let mut key = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(&mut key[..]);
        ProcessSeal {
            cipher: Aes256Gcm::new((&*key).into()),
        }
    }

    /// Seals `plain` (a presignature) for its record (see [`record`]).
    pub fn seal(&self, record: &[u8], plain: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; 12];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let ct = self
            .cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: plain,
                    aad: record,
                },
            )
            .unwrap_or_default();
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        out
    }

    /// Opens what [`ProcessSeal::seal`] sealed for `record` in this
    /// process; `None` for anything else (another process's key, another
    /// record, tampering).
    pub fn open(&self, record: &[u8], sealed: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        let nonce: [u8; 12] = sealed.get(..12)?.try_into().ok()?;
        let ct = sealed.get(12..)?;
        self.cipher
            .decrypt(&Nonce::from(nonce), Payload { msg: ct, aad: record })
            .ok()
            .map(Zeroizing::new)
    }
}

/// The associated data of a pooled presignature.
pub fn record(key_id: &str, signer_set: &str, party: u16, presig_id: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for part in [
        &b"sigil/presignature/process/v1"[..],
        key_id.as_bytes(),
        signer_set.as_bytes(),
        &party.to_be_bytes(),
        presig_id.as_bytes(),
    ] {
        out.extend_from_slice(&u32::try_from(part.len()).unwrap_or(u32::MAX).to_be_bytes());
        out.extend_from_slice(part);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_this_process_opens_its_presignatures() {
        let now = ProcessSeal::generate();
        let r = record("k", "0,1", 1, "p");
        let sealed = now.seal(&r, b"presignature");
        assert_eq!(
            now.open(&r, &sealed).as_deref().map(Vec::as_slice),
            Some(&b"presignature"[..])
        );
        let restarted = ProcessSeal::generate();
        assert!(restarted.open(&r, &sealed).is_none(), "a copy older than the process");
        assert!(
            now.open(&record("k", "0,1", 2, "p"), &sealed).is_none(),
            "another party"
        );
        assert!(now.open(&record("k", "0,2", 1, "p"), &sealed).is_none(), "another set");
        let mut tampered = sealed.clone();
        if let Some(b) = tampered.last_mut() {
            *b ^= 1;
        }
        assert!(now.open(&r, &tampered).is_none());
        assert!(now.open(&r, sealed.get(..5).unwrap_or_default()).is_none(), "short");
    }
}
