//! End-to-end protection of the messages between an external party (a
//! client that holds one share of a key, `sigil-client`) and the nodes,
//! which travel through one node, the *relay*.
//!
//! The relay is one of up to `t - 1` malicious nodes, so it must learn
//! nothing it could not learn as a party and must not be able to alter
//! or forge a message:
//! - every message to or from the external party is signed by its sender
//!   (Ed25519, [`RelayMessage::signed_bytes`]): a node with its identity
//!   key, the external party with the session signing key its client
//!   named in the signed request that started the session;
//! - every point-to-point payload is encrypted to the recipient with HPKE
//!   (RFC 9180, base mode, DHKEM(X25519, HKDF-SHA256), HKDF-SHA256,
//!   ChaCha20-Poly1305; [`seal_payload`]), to the recipient's X25519 key
//!   for this session: the external party's from its client's signed
//!   request, a node's from its signed *hello* ([`HELLO_ROUND`]), both
//!   fresh per session (forward secrecy: nothing long-lived decrypts a
//!   recorded session). The HPKE `info` binds the session, round, sender
//!   and recipient, so a ciphertext cannot be replayed elsewhere.
//!
//! Broadcasts are signed but not encrypted (every party reads them). The
//! protocols' own echo checks (the FROST DKG's transcript hash) catch a
//! relay that shows parties different broadcasts.
//!
//! No I/O here: the node's session layer and the client's party runner
//! call these functions around their transports.

use ed25519_dalek::{Signer as _, SigningKey, Verifier as _, VerifyingKey};
use hpke::aead::ChaCha20Poly1305;
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, Kem as _, OpModeR, OpModeS, Serializable};
use rand_core::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{PartyIndex, SessionId};

/// The placeholder node id of the external party in a key's or a
/// session's party list (node ids are below it).
pub const EXTERNAL_PARTY: u16 = u16::MAX;

/// The node ids of a party list: every party but the external one.
pub fn node_parties(parties: &[u16]) -> impl Iterator<Item = u16> + '_ {
    parties.iter().copied().filter(|&p| p != EXTERNAL_PARTY)
}

/// Whether a party list has an external party.
pub fn has_external(parties: &[u16]) -> bool {
    parties.contains(&EXTERNAL_PARTY)
}

/// The pseudo-round of a node's *hello*: its payload is the node's
/// 32-byte X25519 public key for the session, signed with its identity
/// key, sent to the external party before any protocol message.
pub const HELLO_ROUND: u16 = u16::MAX;

/// The pseudo-round of an external party's *confirmation* of a new key's
/// record, broadcast to its relay after the key generation: its payload
/// is the party's 64-byte Ed25519 signature (session key) over the
/// record's canonical bytes (`sigil_api::record`), which becomes the
/// record's attestation of the external slot. The nodes commit the key
/// only with it, so a key whose external share does not exist (a relay
/// that withheld the party's messages) is never committed.
pub const CONFIRM_ROUND: u16 = u16::MAX - 1;

/// Domain of [`RelayMessage::signed_bytes`].
const SIGN_DOMAIN: &[u8] = b"sigil/relay/message/v1";
/// Domain of the HPKE `info`.
const HPKE_DOMAIN: &[u8] = b"sigil/relay/hpke/v1";

/// Largest payload a relayed message may carry, in bytes (the largest
/// FROST message is well under 1 KiB; CGGMP21's about 210 KB).
pub const MAX_PAYLOAD_BYTES: usize = 512 * 1024;

type Kem = X25519HkdfSha256;

/// Why a relayed message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RelayError {
    /// The signature does not verify under the sender's key.
    #[error("the message signature does not verify")]
    BadSignature,
    /// The payload does not decrypt with our session key (altered, or for
    /// another session, round or party).
    #[error("the payload does not decrypt")]
    Undecryptable,
    /// A key or field is malformed (length, encoding, size).
    #[error("malformed: {0}")]
    Malformed(String),
}

/// One message of a session with an external party, as it crosses the
/// relay. JSON: byte fields in hex.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayMessage {
    /// The session (32 bytes).
    #[serde(with = "hex_array")]
    pub session_id: SessionId,
    /// Protocol round (0-based), or [`HELLO_ROUND`].
    pub round: u16,
    /// Sender's session party index.
    pub from: PartyIndex,
    /// Recipient's session party index; `None`: broadcast.
    #[serde(default)]
    pub to: Option<PartyIndex>,
    /// The postcard-encoded protocol message; point to point: HPKE
    /// `enc (32 bytes) || ciphertext` of it.
    #[serde(with = "hex_vec")]
    pub payload: Vec<u8>,
    /// Ed25519 signature (64 bytes) over [`RelayMessage::signed_bytes`].
    #[serde(with = "hex_vec")]
    pub signature: Vec<u8>,
}

impl RelayMessage {
    /// The bytes the sender signs: domain, session id, round, sender,
    /// recipient (`0xff` for broadcast, else `0x00 || to`), and SHA-256 of
    /// the payload, fixed-width big-endian.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(SIGN_DOMAIN.len() + 32 + 8 + 32);
        out.extend_from_slice(SIGN_DOMAIN);
        out.extend_from_slice(&self.session_id);
        out.extend_from_slice(&self.round.to_be_bytes());
        out.extend_from_slice(&self.from.to_be_bytes());
        match self.to {
            None => out.push(0xff),
            Some(to) => {
                out.push(0);
                out.extend_from_slice(&to.to_be_bytes());
            }
        }
        out.extend_from_slice(&Sha256::digest(&self.payload));
        out
    }

    /// A message of `plaintext` from `from` to `to` (`None`: broadcast),
    /// encrypted to `recipient_hpke` when given (point to point), signed
    /// with `key`.
    ///
    /// # Errors
    /// [`RelayError::Malformed`] for a bad recipient key or an oversized
    /// payload.
    #[allow(clippy::too_many_arguments)]
    pub fn new<R: RngCore + CryptoRng>(
        key: &SigningKey,
        session_id: SessionId,
        round: u16,
        from: PartyIndex,
        to: Option<PartyIndex>,
        plaintext: &[u8],
        recipient_hpke: Option<&[u8; 32]>,
        rng: &mut R,
    ) -> Result<Self, RelayError> {
        let mut m = RelayMessage {
            session_id,
            round,
            from,
            to,
            payload: Vec::new(),
            signature: Vec::new(),
        };
        m.payload = match recipient_hpke {
            Some(pk) => seal_payload(pk, &m.hpke_info(), plaintext, rng)?,
            None => plaintext.to_vec(),
        };
        if m.payload.len() > MAX_PAYLOAD_BYTES {
            return Err(RelayError::Malformed(format!(
                "payload of {} bytes is over {MAX_PAYLOAD_BYTES}",
                m.payload.len()
            )));
        }
        m.signature = key.sign(&m.signed_bytes()).to_bytes().to_vec();
        Ok(m)
    }

    /// Checks the signature under `sender` and returns the plaintext:
    /// decrypted with `my_hpke` for a point-to-point message, as it is
    /// for a broadcast.
    ///
    /// # Errors
    /// [`RelayError::BadSignature`], [`RelayError::Undecryptable`], or
    /// [`RelayError::Malformed`] (no key to decrypt a p2p message with, an
    /// oversized payload).
    pub fn open(&self, sender: &VerifyingKey, my_hpke: Option<&SessionSecret>) -> Result<Vec<u8>, RelayError> {
        self.verify(sender)?;
        match self.to {
            None => Ok(self.payload.clone()),
            Some(_) => {
                let sk = my_hpke.ok_or_else(|| RelayError::Malformed("no key to decrypt with".into()))?;
                open_payload(sk, &self.hpke_info(), &self.payload)
            }
        }
    }

    /// Checks the signature under `sender` (and the payload size) only.
    ///
    /// # Errors
    /// [`RelayError::BadSignature`] or [`RelayError::Malformed`].
    pub fn verify(&self, sender: &VerifyingKey) -> Result<(), RelayError> {
        if self.payload.len() > MAX_PAYLOAD_BYTES {
            return Err(RelayError::Malformed("payload too large".into()));
        }
        let sig = ed25519_dalek::Signature::from_slice(&self.signature).map_err(|_| RelayError::BadSignature)?;
        sender
            .verify(&self.signed_bytes(), &sig)
            .map_err(|_| RelayError::BadSignature)
    }

    /// HPKE `info`: domain, session id, round, sender, recipient.
    fn hpke_info(&self) -> Vec<u8> {
        let mut info = Vec::with_capacity(HPKE_DOMAIN.len() + 32 + 6);
        info.extend_from_slice(HPKE_DOMAIN);
        info.extend_from_slice(&self.session_id);
        info.extend_from_slice(&self.round.to_be_bytes());
        info.extend_from_slice(&self.from.to_be_bytes());
        info.extend_from_slice(&self.to.unwrap_or(u16::MAX).to_be_bytes());
        info
    }
}

/// A party's X25519 secret key for one session (HPKE recipient key).
/// Secret: never stored, dropped (and zeroized by `x25519-dalek`) with
/// the session.
pub struct SessionSecret {
    sk: <Kem as hpke::Kem>::PrivateKey,
    pk: [u8; 32],
}

impl SessionSecret {
    /// A fresh key pair.
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        let (sk, pk) = Kem::gen_keypair(rng);
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(&pk.to_bytes());
        SessionSecret { sk, pk: bytes }
    }

    /// The public key (32 bytes, RFC 7748 encoding).
    pub fn public_key(&self) -> [u8; 32] {
        self.pk
    }

    /// The key pair of a stored 32-byte X25519 secret key (a user share's
    /// recipient key).
    ///
    /// # Errors
    /// [`RelayError::Malformed`] for bytes that are no X25519 secret key.
    pub fn from_bytes(secret: &[u8; 32]) -> Result<Self, RelayError> {
        let sk = <Kem as hpke::Kem>::PrivateKey::from_bytes(secret)
            .map_err(|_| RelayError::Malformed("not an X25519 secret key".into()))?;
        let pk = <Kem as hpke::Kem>::sk_to_pk(&sk);
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(&pk.to_bytes());
        Ok(SessionSecret { sk, pk: bytes })
    }

    /// The secret key's 32 bytes, to store (secret: zeroized on drop).
    pub fn secret_bytes(&self) -> zeroize::Zeroizing<[u8; 32]> {
        let mut out = zeroize::Zeroizing::new([0u8; 32]);
        out.copy_from_slice(&self.sk.to_bytes());
        out
    }
}

/// Domain of a user share's HPKE `info`.
const USER_SHARE_DOMAIN: &[u8] = b"sigil/user-share/v1";

/// Seals a user share (the serialized key package of key `key_id`) to
/// its recipient's X25519 key: HPKE base mode as [`seal_payload`], `info`
/// = domain `||` key id, so a sealed share opens only as that key's.
///
/// # Errors
/// As [`seal_payload`].
pub fn seal_user_share<R: RngCore + CryptoRng>(
    recipient: &[u8; 32],
    key_id: &str,
    share: &[u8],
    rng: &mut R,
) -> Result<Vec<u8>, RelayError> {
    seal_payload(recipient, &user_share_info(key_id), share, rng)
}

/// Opens what [`seal_user_share`] made.
///
/// # Errors
/// [`RelayError::Undecryptable`] for another recipient, key or an
/// altered share.
pub fn open_user_share(
    recipient: &SessionSecret,
    key_id: &str,
    sealed: &[u8],
) -> Result<zeroize::Zeroizing<Vec<u8>>, RelayError> {
    open_payload(recipient, &user_share_info(key_id), sealed).map(zeroize::Zeroizing::new)
}

fn user_share_info(key_id: &str) -> Vec<u8> {
    let mut info = USER_SHARE_DOMAIN.to_vec();
    info.extend_from_slice(key_id.as_bytes());
    info
}

impl std::fmt::Debug for SessionSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionSecret")
            .field("public_key", &hex::encode(self.pk))
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// HPKE single-shot seal (RFC 9180 section 6.1, base mode) of `plaintext`
/// to `recipient` under `info` (also the AAD): `enc || ciphertext`.
///
/// # Errors
/// [`RelayError::Malformed`] for a recipient key that is not a valid
/// X25519 public key.
pub fn seal_payload<R: RngCore + CryptoRng>(
    recipient: &[u8; 32],
    info: &[u8],
    plaintext: &[u8],
    rng: &mut R,
) -> Result<Vec<u8>, RelayError> {
    let pk = <Kem as hpke::Kem>::PublicKey::from_bytes(recipient)
        .map_err(|_| RelayError::Malformed("not an X25519 public key".into()))?;
    let (enc, ct) =
        hpke::single_shot_seal::<ChaCha20Poly1305, HkdfSha256, Kem, _>(&OpModeS::Base, &pk, info, plaintext, info, rng)
            .map_err(|e| RelayError::Malformed(format!("hpke seal: {e}")))?;
    let mut out = enc.to_bytes().to_vec();
    out.extend_from_slice(&ct);
    Ok(out)
}

/// Opens what [`seal_payload`] made for `sk` under `info`.
///
/// # Errors
/// [`RelayError::Undecryptable`] for anything that does not open.
pub fn open_payload(sk: &SessionSecret, info: &[u8], sealed: &[u8]) -> Result<Vec<u8>, RelayError> {
    let (enc, ct) = sealed.split_at_checked(32).ok_or(RelayError::Undecryptable)?;
    let enc = <Kem as hpke::Kem>::EncappedKey::from_bytes(enc).map_err(|_| RelayError::Undecryptable)?;
    hpke::single_shot_open::<ChaCha20Poly1305, HkdfSha256, Kem>(&OpModeR::Base, &sk.sk, &enc, info, ct, info)
        .map_err(|_| RelayError::Undecryptable)
}

/// A 32-byte key from hex (64 characters).
///
/// # Errors
/// [`RelayError::Malformed`] naming `what`.
pub fn key_from_hex(what: &str, text: &str) -> Result<[u8; 32], RelayError> {
    let bytes = hex::decode(text.trim()).map_err(|_| RelayError::Malformed(format!("{what} is not hex")))?;
    bytes
        .try_into()
        .map_err(|_| RelayError::Malformed(format!("{what} must be 32 bytes")))
}

/// An Ed25519 verifying key from hex (64 characters).
///
/// # Errors
/// [`RelayError::Malformed`] naming `what`.
pub fn verifying_key_from_hex(what: &str, text: &str) -> Result<VerifyingKey, RelayError> {
    VerifyingKey::from_bytes(&key_from_hex(what, text)?)
        .map_err(|_| RelayError::Malformed(format!("{what} is not an Ed25519 public key")))
}

mod hex_vec {
    pub fn serialize<S: serde::Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(b))
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text: String = serde::Deserialize::deserialize(d)?;
        hex::decode(text).map_err(serde::de::Error::custom)
    }
}

mod hex_array {
    pub fn serialize<S: serde::Serializer>(b: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(b))
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let v = super::hex_vec::deserialize(d)?;
        v.try_into()
            .map_err(|_| serde::de::Error::custom("session_id must be 32 bytes"))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use rand::rngs::OsRng;

    fn keys() -> (SigningKey, SessionSecret) {
        (SigningKey::generate(&mut OsRng), SessionSecret::generate(&mut OsRng))
    }

    #[test]
    fn p2p_round_trip_and_every_alteration_fails() {
        let (sender, _) = keys();
        let (_, recipient) = keys();
        let m = RelayMessage::new(
            &sender,
            [7; 32],
            1,
            2,
            Some(0),
            b"share",
            Some(&recipient.public_key()),
            &mut OsRng,
        )
        .unwrap();
        assert_ne!(m.payload, b"share", "p2p payloads are encrypted");
        let vk = sender.verifying_key();
        assert_eq!(m.open(&vk, Some(&recipient)).unwrap(), b"share");

        let (other_sender, other_recipient) = keys();
        assert_eq!(
            m.open(&other_sender.verifying_key(), Some(&recipient)),
            Err(RelayError::BadSignature)
        );
        assert_eq!(
            m.open(&vk, Some(&other_recipient)),
            Err(RelayError::Undecryptable),
            "only the recipient decrypts"
        );
        let mut altered = m.clone();
        altered.payload[40] ^= 1;
        assert_eq!(altered.open(&vk, Some(&recipient)), Err(RelayError::BadSignature));
        // A relay that re-signs cannot: it has no sender key. One that
        // moves the ciphertext to another round fails the signature, and
        // even with a valid signature the HPKE info would not match.
        let mut moved = m.clone();
        moved.round = 0;
        assert_eq!(moved.open(&vk, Some(&recipient)), Err(RelayError::BadSignature));
        let mut resigned = moved.clone();
        resigned.signature = sender.sign(&resigned.signed_bytes()).to_bytes().to_vec();
        assert_eq!(resigned.open(&vk, Some(&recipient)), Err(RelayError::Undecryptable));
    }

    #[test]
    fn broadcasts_are_signed_in_the_clear_and_json_round_trips() {
        let (sender, _) = keys();
        let m = RelayMessage::new(&sender, [1; 32], 0, 1, None, b"commitments", None, &mut OsRng).unwrap();
        assert_eq!(m.payload, b"commitments");
        let json = serde_json::to_string(&m).unwrap();
        let back: RelayMessage = serde_json::from_str(&json).unwrap();
        assert_eq!(back, m);
        assert_eq!(back.open(&sender.verifying_key(), None).unwrap(), b"commitments");
        assert!(serde_json::from_str::<RelayMessage>(&json.replace("\"round\"", "\"extra\":1,\"round\"")).is_err());
    }

    #[test]
    fn malformed_keys_and_sizes_are_refused() {
        assert!(key_from_hex("k", "abcd").is_err());
        assert!(verifying_key_from_hex("k", &"zz".repeat(32)).is_err());
        let (sender, secret) = keys();
        let big = vec![0u8; MAX_PAYLOAD_BYTES + 1];
        assert!(matches!(
            RelayMessage::new(&sender, [0; 32], 0, 0, None, &big, None, &mut OsRng),
            Err(RelayError::Malformed(_))
        ));
        assert_eq!(open_payload(&secret, b"i", b"short"), Err(RelayError::Undecryptable));
        assert!(format!("{secret:?}").contains("redacted"));
    }
}
