//! The canonical bytes of a key record: what every party of a key signs
//! (nodes with their identity keys, an external party with its session
//! key) and what `record_hash` hashes. Here so that a client can compute
//! them for the record it confirms without the node's code.
//!
//! The encoding, with `lp(x)` = `x`'s length as a big-endian `u32` then
//! `x`: `lp("sigil/key-record/v1")`, `lp(key_id)`, `lp(scheme)`, `t`
//! (`u16` BE), `n` (`u16` BE), each party's node id (`u16` BE; 65535 for
//! an external party), `lp(public_key)`, `SHA-256(public_key_package)`,
//! `epoch` (`u32` BE), `lp(policy as JSON)`, `lp(created_by)`,
//! `lp(create_jti)`. The label and the creation time are not part of it
//! (they authorize nothing).

use sha2::Digest;

/// Domain separation tag of the canonical record.
pub const DOMAIN: &[u8] = b"sigil/key-record/v1";

/// The fields of a key record that its canonical bytes cover.
#[derive(Debug, Clone, Copy)]
pub struct RecordFields<'a> {
    /// The key id.
    pub key_id: &'a str,
    /// The scheme name (`frost-ed25519`, ...).
    pub scheme: &'a str,
    /// The threshold `t`.
    pub threshold: u16,
    /// Node ids in key order (65535: an external party).
    pub parties: &'a [u16],
    /// The public key, in the scheme's encoding.
    pub public_key: &'a [u8],
    /// The public package, as stored.
    pub public_package: &'a [u8],
    /// The epoch.
    pub epoch: u32,
    /// The policy as the node serializes it (`serde_json::to_string` of
    /// its `KeyPolicy`: fields in declaration order, empty optional ones
    /// left out). A client takes it verbatim from the node's view and
    /// checks what it says.
    pub policy_json: &'a str,
    /// The client that created the key.
    pub created_by: &'a str,
    /// The `jti` of the creating request's token.
    pub create_jti: &'a str,
}

fn lp(out: &mut Vec<u8>, x: &[u8]) {
    out.extend_from_slice(&u32::try_from(x.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(x);
}

/// The canonical bytes of a record (see the module docs).
pub fn record_bytes(k: &RecordFields<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    lp(&mut out, DOMAIN);
    lp(&mut out, k.key_id.as_bytes());
    lp(&mut out, k.scheme.as_bytes());
    out.extend_from_slice(&k.threshold.to_be_bytes());
    out.extend_from_slice(&u16::try_from(k.parties.len()).unwrap_or(u16::MAX).to_be_bytes());
    for p in k.parties {
        out.extend_from_slice(&p.to_be_bytes());
    }
    lp(&mut out, k.public_key);
    out.extend_from_slice(&sha2::Sha256::digest(k.public_package));
    out.extend_from_slice(&k.epoch.to_be_bytes());
    lp(&mut out, k.policy_json.as_bytes());
    lp(&mut out, k.created_by.as_bytes());
    lp(&mut out, k.create_jti.as_bytes());
    out
}

/// Hex SHA-256 of [`record_bytes`] (the API's `record_hash`).
pub fn record_hash(k: &RecordFields<'_>) -> String {
    hex::encode(sha2::Sha256::digest(record_bytes(k)))
}
