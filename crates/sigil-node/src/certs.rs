//! The cluster's certificates (rcgen): one CA, one certificate per node
//! naming it as DNS SAN `node-<id>`, usable for both TLS server and client
//! authentication. ECDSA P-256 keys, PKCS#8 PEM.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose};

/// The DNS name a node's certificate carries, and that peers dial.
pub fn node_dns_name(id: u16) -> String {
    format!("node-{id}")
}

/// The node id a certificate's DNS name `node-<id>` encodes, read
/// strictly: decimal digits only, no sign, no leading zero (`node-7`, not
/// `node-07` or `node-+7`), so one id has one name.
pub fn node_id_from_dns_name(name: &str) -> Option<u16> {
    let digits = name.strip_prefix("node-")?;
    let canonical =
        !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) && (digits == "0" || !digits.starts_with('0'));
    if !canonical {
        return None;
    }
    digits.parse().ok()
}

/// Paths of one node's files inside a certificate directory.
pub struct NodeCertPaths {
    /// `node-<id>.pem`
    pub cert: PathBuf,
    /// `node-<id>.key` (secret, mode 0600)
    pub key: PathBuf,
}

/// Path of the CA certificate inside `dir`.
pub fn ca_cert_path(dir: &Path) -> PathBuf {
    dir.join("ca.pem")
}

/// Paths of node `id`'s certificate and key inside `dir`.
pub fn node_cert_paths(dir: &Path, id: u16) -> NodeCertPaths {
    NodeCertPaths {
        cert: dir.join(format!("node-{id}.pem")),
        key: dir.join(format!("node-{id}.key")),
    }
}

/// Path of node `id`'s Ed25519 identity key (PKCS#8 PEM) inside `dir`.
pub fn identity_key_path(dir: &Path, id: u16) -> PathBuf {
    dir.join(format!("node-{id}.identity.key"))
}

/// Path of `identities.json` inside `dir`: `{"<id>": "<hex public key>"}`
/// for every node, what a client needs to check key attestations.
pub fn identities_path(dir: &Path) -> PathBuf {
    dir.join("identities.json")
}

/// Loads an identity key file.
///
/// # Errors
/// Unreadable file or not a PKCS#8 Ed25519 key.
pub fn load_identity(path: &Path) -> anyhow::Result<ed25519_dalek::SigningKey> {
    use ed25519_dalek::pkcs8::DecodePrivateKey;
    let pem = zeroize::Zeroizing::new(
        std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("identity key {}: {e}", path.display()))?,
    );
    ed25519_dalek::SigningKey::from_pkcs8_pem(pem.trim())
        .map_err(|e| anyhow::anyhow!("identity key {}: {e}", path.display()))
}

/// The hex public key of node `id`'s identity key in `dir`.
///
/// # Errors
/// See [`load_identity`].
pub fn identity_public(dir: &Path, id: u16) -> anyhow::Result<String> {
    Ok(hex::encode(
        load_identity(&identity_key_path(dir, id))?.verifying_key().as_bytes(),
    ))
}

/// Creates `ca.pem`, `ca.key` and `node-<id>.pem/.key` for `ids` in `dir`,
/// unless `ca.pem` exists there already (then the certificates are left
/// unchanged and `false` is returned); and, either way, an Ed25519
/// identity key `node-<id>.identity.key` for each id that has none, and
/// `identities.json`.
///
/// # Errors
/// File-system or certificate-generation failures.
pub fn init(dir: &Path, ids: &[u16]) -> anyhow::Result<bool> {
    std::fs::create_dir_all(dir)?;
    let created = init_ca(dir, ids)?;
    let mut identities = std::collections::BTreeMap::new();
    for &id in ids {
        let path = identity_key_path(dir, id);
        if !path.exists() {
            use ed25519_dalek::pkcs8::{spki::der::pem::LineEnding, EncodePrivateKey};
            let k = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
            let pem = k.to_pkcs8_pem(LineEnding::LF).map_err(|e| anyhow::anyhow!("{e}"))?;
            write_secret(&path, pem.as_bytes())?;
        }
        identities.insert(id.to_string(), identity_public(dir, id)?);
    }
    std::fs::write(identities_path(dir), serde_json::to_string_pretty(&identities)?)?;
    Ok(created)
}

fn init_ca(dir: &Path, ids: &[u16]) -> anyhow::Result<bool> {
    if ca_cert_path(dir).exists() {
        return Ok(false);
    }
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.distinguished_name.push(DnType::CommonName, "Sigil cluster CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key)?;
    for &id in ids {
        let key = KeyPair::generate()?;
        let mut p = CertificateParams::new(vec![node_dns_name(id)])?;
        p.distinguished_name
            .push(DnType::CommonName, format!("sigil node {id}"));
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let cert = p.signed_by(&key, &ca_cert, &ca_key)?;
        let paths = node_cert_paths(dir, id);
        std::fs::write(&paths.cert, cert.pem())?;
        write_secret(&paths.key, key.serialize_pem().as_bytes())?;
    }
    write_secret(&dir.join("ca.key"), ca_key.serialize_pem().as_bytes())?;
    std::fs::write(ca_cert_path(dir), ca_cert.pem())?;
    Ok(true)
}

/// Writes a secret file readable by its owner only.
///
/// # Errors
/// File-system failures.
pub fn write_secret(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// The node id named by a DER certificate (first DNS SAN of the form
/// `node-<id>`), if any.
pub fn node_id_of_cert(der: &[u8]) -> Option<u16> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|n| match n {
        x509_parser::extensions::GeneralName::DNSName(d) => node_id_from_dns_name(d),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_are_parsed_strictly() {
        assert_eq!(node_id_from_dns_name("node-7"), Some(7));
        assert_eq!(node_id_from_dns_name("node-0"), Some(0));
        assert_eq!(node_id_from_dns_name("node-65535"), Some(65535));
        for bad in [
            "node-07",
            "node-+7",
            "node--7",
            "node-",
            "node-7 ",
            "node-65536",
            "node-x",
            "Node-7",
            "node-0x7",
        ] {
            assert_eq!(node_id_from_dns_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn init_creates_certs_naming_nodes_and_is_idempotent() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        assert!(init(dir.path(), &[0, 1, 2])?);
        let id1 = identity_public(dir.path(), 1)?;
        assert!(!init(dir.path(), &[0, 1, 2])?, "second init keeps the existing CA");
        assert_eq!(identity_public(dir.path(), 1)?, id1, "and the identity keys");
        let ids: std::collections::BTreeMap<String, String> =
            serde_json::from_str(&std::fs::read_to_string(identities_path(dir.path()))?)?;
        assert_eq!(ids.get("1"), Some(&id1));
        let pem = std::fs::read_to_string(node_cert_paths(dir.path(), 2).cert)?;
        let der = rustls_pemfile_der(&pem);
        assert_eq!(node_id_of_cert(&der), Some(2));
        assert_eq!(node_id_of_cert(b"garbage"), None);
        Ok(())
    }

    fn rustls_pemfile_der(pem: &str) -> Vec<u8> {
        let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap_or_else(|_| unreachable!());
        p.contents
    }
}
