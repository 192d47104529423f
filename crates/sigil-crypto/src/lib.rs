//! Sans-IO threshold protocols and scheme types for Sigil.
//!
//! Every protocol here is one `async fn` over a [`round_based::Mpc`] party:
//! a `Stream` of incoming and a `Sink` of outgoing messages. The crate never
//! touches a socket, a file or a clock, so the same code runs in the
//! in-process simulation of the tests and over mTLS gRPC in `sigil-node`.
//!
//! What the transport must guarantee (as `round-based` documents):
//! - messages are authenticated (the node checks the peer's certificate);
//! - point-to-point messages are private (mTLS);
//! - broadcast is *not* required to be reliable: the DKG adds an echo of the
//!   hash of all round-1 packages to its round-2 messages and aborts on a
//!   mismatch (see [`frost::dkg`]).
//!
//! Party indices `i` are 0-based `u16` positions in a session's ordered party
//! list. FROST's 1-based [`frost_core::Identifier`] is derived in exactly one
//! place, [`frost::identifier`].
//!
//! Schemes:
//!
//! | scheme | crate | public key | signature |
//! |---|---|---|---|
//! | `frost-ed25519` | `frost-ed25519` (RFC 9591 §6.1) | 32 bytes | 64 bytes, RFC 8032 |
//! | `frost-secp256k1-tr` | `frost-secp256k1-tr` (BIP-340 / Taproot) | 32 bytes x-only | 64 bytes, BIP-340 |
//! | `frost-p256` | `frost-p256` (RFC 9591 §6.4) | 33 bytes SEC1 compressed | 65 bytes, `R` compressed `\|\| z` |
#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod ecdsa;
pub mod error;
pub mod frost;
pub mod party;
pub mod preparams;
pub mod primes;
pub mod relay;
pub mod reshare;
pub mod schedule;
pub mod scheme;

pub use error::Error;
pub use scheme::Scheme;

/// 0-based index of a party within a session's ordered party list.
pub type PartyIndex = u16;

/// A session identifier: 32 random bytes chosen by the coordinator, bound
/// into the protocol transcript and never reused.
pub type SessionId = [u8; 32];

/// Domain of [`execution_id`].
const EID_DOMAIN: &[u8] = b"sigil/execution-id/v1";

/// The execution id a protocol run is bound to: SHA-256 over the domain,
/// the kind `tag` (`dkg`, `sign`, ...), the key id, the parties (node ids
/// in session order, [`relay::EXTERNAL_PARTY`] for an external party),
/// the coordinator, the session id and SHA-256 of the client's request
/// body, each variable-length part length-prefixed. Parties shown
/// different proposals cannot complete a run together. The nodes and
/// `sigil-client`'s external party compute it alike.
pub fn execution_id(
    tag: &[u8],
    key_id: &str,
    parties: &[u16],
    coordinator: u16,
    session_id: &SessionId,
    body: &[u8],
) -> [u8; 32] {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for part in [EID_DOMAIN, tag, key_id.as_bytes()] {
        h.update(u32::try_from(part.len()).unwrap_or(u32::MAX).to_be_bytes());
        h.update(part);
    }
    h.update(u32::try_from(parties.len()).unwrap_or(u32::MAX).to_be_bytes());
    for p in parties {
        h.update(p.to_be_bytes());
    }
    h.update(coordinator.to_be_bytes());
    h.update(session_id);
    h.update(sha2::Sha256::digest(body));
    h.finalize().into()
}
