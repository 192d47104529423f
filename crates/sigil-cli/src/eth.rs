//! `sigil eth sign-tx`: sign a real Ethereum transaction (EIP-1559, type 2)
//! with an `ecdsa-secp256k1` key and check the sender that `ecrecover`
//! gives back is the key's address.
//!
//! Encoding (EIP-1559): the signing hash is
//! `keccak256(0x02 || rlp([chain_id, nonce, max_priority_fee_per_gas,
//! max_fee_per_gas, gas_limit, to, value, data, access_list]))`; the signed
//! transaction appends `[y_parity, r, s]` to that list.

use anyhow::{anyhow, bail, Context};
use clap::Args;
use serde_json::json;
use sha3::{Digest, Keccak256};

use crate::ApiArgs;

/// Options of `sigil eth sign-tx`.
#[derive(Args, Debug)]
pub struct SignTxArgs {
    /// Key id (scheme `ecdsa-secp256k1`).
    #[arg(long)]
    pub key: String,
    /// BIP-32 non-hardened path of the sending child key (m/0/1).
    #[arg(long)]
    pub derivation_path: Option<String>,
    /// Chain id (1 = mainnet, 11155111 = Sepolia).
    #[arg(long, default_value_t = 1)]
    pub chain_id: u64,
    /// Sender's nonce.
    #[arg(long, default_value_t = 0)]
    pub nonce: u64,
    /// Recipient, 0x + 40 hex.
    #[arg(long)]
    pub to: String,
    /// Value in wei.
    #[arg(long, default_value_t = 0)]
    pub value_wei: u128,
    /// Gas limit.
    #[arg(long, default_value_t = 21_000)]
    pub gas: u64,
    /// Max fee per gas, in wei.
    #[arg(long, default_value_t = 30_000_000_000)]
    pub max_fee_wei: u128,
    /// Max priority fee per gas, in wei.
    #[arg(long, default_value_t = 1_000_000_000)]
    pub max_priority_fee_wei: u128,
    /// Call data, hex.
    #[arg(long, default_value = "")]
    pub data: String,
    #[command(flatten)]
    pub api: ApiArgs,
}

/// RLP of a byte string (Ethereum Yellow Paper, appendix B).
pub fn rlp_bytes(b: &[u8]) -> Vec<u8> {
    match b {
        [x] if *x < 0x80 => vec![*x],
        _ => {
            let mut out = rlp_len(b.len(), 0x80);
            out.extend_from_slice(b);
            out
        }
    }
}

/// RLP of an unsigned integer (big-endian, no leading zeros; 0 is empty).
pub fn rlp_uint(v: u128) -> Vec<u8> {
    let be = v.to_be_bytes();
    let first = be.iter().position(|&x| x != 0).unwrap_or(be.len());
    rlp_bytes(be.get(first..).unwrap_or_default())
}

/// RLP of a list of already-encoded items.
pub fn rlp_list(items: &[Vec<u8>]) -> Vec<u8> {
    let payload: Vec<u8> = items.concat();
    let mut out = rlp_len(payload.len(), 0xc0);
    out.extend(payload);
    out
}

fn rlp_len(len: usize, offset: u8) -> Vec<u8> {
    if len < 56 {
        vec![offset + len as u8]
    } else {
        let be = (len as u64).to_be_bytes();
        let first = be.iter().position(|&x| x != 0).unwrap_or(be.len());
        let len_bytes = be.get(first..).unwrap_or_default();
        let mut out = vec![offset + 55 + len_bytes.len() as u8];
        out.extend_from_slice(len_bytes);
        out
    }
}

fn hex_arg(s: &str, what: &str) -> anyhow::Result<Vec<u8>> {
    hex::decode(s.trim().trim_start_matches("0x")).with_context(|| format!("--{what} must be hex"))
}

/// The address of a SEC1 secp256k1 public key (no checksum, lower case).
fn address_of(vk: &k256::ecdsa::VerifyingKey) -> String {
    let point = vk.to_encoded_point(false);
    let hash = Keccak256::digest(point.as_bytes().get(1..).unwrap_or_default());
    format!("0x{}", hex::encode(hash.get(12..).unwrap_or_default()))
}

/// Runs `sigil eth sign-tx`.
pub async fn sign_tx(a: SignTxArgs) -> anyhow::Result<()> {
    let client = crate::client::connect(&a.api)?;
    let path_q = a
        .derivation_path
        .as_deref()
        .map(|p| format!("?derivation_path={p}"))
        .unwrap_or_default();
    let key = client.get(&format!("/v1/keys/{}{path_q}", a.key)).await?;
    if !crate::schemes::of_view(&key).is_some_and(crate::schemes::has_ethereum_address) {
        bail!("key {} is {}, not ecdsa-secp256k1", a.key, key["scheme"]);
    }
    let key_address = key["ethereum_address"]
        .as_str()
        .ok_or_else(|| anyhow!("key has no ethereum_address"))?
        .to_string();
    let to = hex_arg(&a.to, "to")?;
    if to.len() != 20 {
        bail!("--to must be 20 bytes");
    }
    let data = hex_arg(&a.data, "data")?;
    let fields = vec![
        rlp_uint(u128::from(a.chain_id)),
        rlp_uint(u128::from(a.nonce)),
        rlp_uint(a.max_priority_fee_wei),
        rlp_uint(a.max_fee_wei),
        rlp_uint(u128::from(a.gas)),
        rlp_bytes(&to),
        rlp_uint(a.value_wei),
        rlp_bytes(&data),
        rlp_list(&[]),
    ];
    let mut unsigned = vec![0x02];
    unsigned.extend(rlp_list(&fields));
    let hash: [u8; 32] = Keccak256::digest(&unsigned).into();

    let sig = client
        .sign_with_path(&a.key, &hash, a.derivation_path.as_deref())
        .await?;
    let rs = hex::decode(sig["signature"].as_str().unwrap_or_default())?;
    let y_parity = u8::try_from(sig["recovery_id"].as_u64().ok_or_else(|| anyhow!("no recovery_id"))?)?;
    let (r, s) = rs.split_at(32);
    let mut signed_fields = fields;
    let trim = |x: &[u8]| {
        x.iter()
            .position(|&b| b != 0)
            .map(|i| x.get(i..).unwrap_or_default().to_vec())
            .unwrap_or_default()
    };
    signed_fields.push(rlp_uint(u128::from(y_parity)));
    signed_fields.push(rlp_bytes(&trim(r)));
    signed_fields.push(rlp_bytes(&trim(s)));
    let mut raw = vec![0x02];
    raw.extend(rlp_list(&signed_fields));

    // ecrecover: the sender from (hash, r, s, y_parity), with k256.
    let signature = k256::ecdsa::Signature::from_slice(&rs)?;
    let rid = k256::ecdsa::RecoveryId::from_byte(y_parity).ok_or_else(|| anyhow!("bad recovery id"))?;
    let sender = address_of(&k256::ecdsa::VerifyingKey::recover_from_prehash(
        &hash, &signature, rid,
    )?);
    let matches = sender.eq_ignore_ascii_case(&key_address);
    println!(
        "{}",
        serde_json::to_string_pretty(&json!({
            "signing_hash": format!("0x{}", hex::encode(hash)),
            "raw_transaction": format!("0x{}", hex::encode(&raw)),
            "tx_hash": format!("0x{}", hex::encode(Keccak256::digest(&raw))),
            "sender_recovered": sender,
            "key_address": key_address,
            "sender_is_key": matches,
        }))?
    );
    if !matches {
        bail!("the recovered sender is not the key's address");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rlp_examples_from_the_yellow_paper() {
        assert_eq!(rlp_bytes(b"dog"), vec![0x83, b'd', b'o', b'g']);
        assert_eq!(
            rlp_list(&[rlp_bytes(b"cat"), rlp_bytes(b"dog")]),
            [&[0xc8, 0x83][..], b"cat", &[0x83], b"dog"].concat()
        );
        assert_eq!(rlp_bytes(b""), vec![0x80]);
        assert_eq!(rlp_list(&[]), vec![0xc0]);
        assert_eq!(rlp_uint(0), vec![0x80]);
        assert_eq!(rlp_uint(15), vec![0x0f]);
        assert_eq!(rlp_uint(1024), vec![0x82, 0x04, 0x00]);
        let long = b"Lorem ipsum dolor sit amet, consectetur adipisicing elit";
        assert_eq!(rlp_bytes(long).get(..2), Some(&[0xb8, 0x38][..]));
    }
}
