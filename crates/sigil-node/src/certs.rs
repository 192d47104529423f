//! The cluster's certificates (rcgen): one CA, one certificate per node
//! naming it as DNS SAN `node-<id>`, usable for both TLS server and client
//! authentication, and one for the prime service naming it
//! [`PRIME_SERVICE_DNS_NAME`] (server authentication only; the peer layer
//! refuses it as a node, since it names no node). ECDSA P-256 keys,
//! PKCS#8 PEM.
//!
//! The CA's private key is written to its own directory, never beside the
//! node keys: in production it belongs offline (it can mint a certificate
//! for any node id), and only `ca.pem` goes to the machines. Node and
//! service certificates are valid for [`CERT_DAYS`] days by default (from
//! one hour before they were made, for clock skew), the CA for
//! [`CA_DAYS`].

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose};

/// The DNS name the prime service's certificate carries (what nodes set
/// as `server_name` of a remote prime source).
pub const PRIME_SERVICE_DNS_NAME: &str = "sigil-prime-service";

/// Default validity of node and service certificates, in days.
pub const CERT_DAYS: u32 = 365;

/// Validity of the CA certificate, in days (ten years).
pub const CA_DAYS: u32 = 3650;

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

/// Paths of the prime service's certificate and key inside `dir`
/// (`prime-service.pem`, `prime-service.key`).
pub fn prime_service_cert_paths(dir: &Path) -> NodeCertPaths {
    NodeCertPaths {
        cert: dir.join("prime-service.pem"),
        key: dir.join("prime-service.key"),
    }
}

/// Path of the CA's private key inside its own directory.
pub fn ca_key_path(ca_dir: &Path) -> PathBuf {
    ca_dir.join("ca.key")
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

/// Creates, unless `dir/ca.pem` exists already (then the certificates
/// are left unchanged and `false` is returned): a CA (`ca.pem` in `dir`
/// and in `ca_dir`, its key `ca.key` in `ca_dir` only), `node-<id>.pem/.key`
/// for `ids` and `prime-service.pem/.key`, valid for `days` days; and,
/// either way, an Ed25519 identity key `node-<id>.identity.key` for each id
/// that has none, and `identities.json`.
///
/// # Errors
/// `ca_dir` equal to `dir` (the CA key must not sit beside the node
/// keys); file-system or certificate-generation failures.
pub fn init(dir: &Path, ca_dir: &Path, ids: &[u16], days: u32) -> anyhow::Result<bool> {
    std::fs::create_dir_all(dir)?;
    std::fs::create_dir_all(ca_dir)?;
    if std::fs::canonicalize(dir)? == std::fs::canonicalize(ca_dir)? {
        anyhow::bail!("the CA directory must not be the certificate directory (the CA key stays apart from node keys)");
    }
    let created = init_ca(dir, ca_dir, ids, days)?;
    for &id in ids {
        ensure_identity(dir, id)?;
    }
    write_identities(dir)?;
    Ok(created)
}

/// Makes node `id`'s identity key in `dir` unless it exists.
fn ensure_identity(dir: &Path, id: u16) -> anyhow::Result<()> {
    let path = identity_key_path(dir, id);
    if !path.exists() {
        use ed25519_dalek::pkcs8::{spki::der::pem::LineEnding, EncodePrivateKey};
        let k = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
        let pem = k.to_pkcs8_pem(LineEnding::LF).map_err(|e| anyhow::anyhow!("{e}"))?;
        write_secret(&path, pem.as_bytes())?;
    }
    Ok(())
}

/// Rewrites `identities.json` from every identity key in `dir`.
fn write_identities(dir: &Path) -> anyhow::Result<()> {
    let mut identities = std::collections::BTreeMap::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let id = name
            .to_str()
            .and_then(|n| n.strip_suffix(".identity.key"))
            .and_then(node_id_from_dns_name);
        if let Some(id) = id {
            identities.insert(id, identity_public(dir, id)?);
        }
    }
    let by_name: std::collections::BTreeMap<String, String> =
        identities.into_iter().map(|(id, k)| (id.to_string(), k)).collect();
    std::fs::write(identities_path(dir), serde_json::to_string_pretty(&by_name)?)?;
    Ok(())
}

/// Issues what a new node `id` needs, into `dir` (the directory of
/// [`init`]): `node-<id>.pem/.key` signed by the CA whose certificate and
/// key are in `ca_dir`, valid for `days` days, and its identity key;
/// rewrites `identities.json`. Returns the node's identity public key
/// (hex), for its `[[nodes]]` entry on every node.
///
/// # Errors
/// A certificate for `id` exists already (a node id is never reused:
/// records name nodes by id), no CA in `ca_dir` (or its key is missing),
/// file-system or signing failures.
pub fn add_node(dir: &Path, ca_dir: &Path, id: u16, days: u32) -> anyhow::Result<String> {
    let paths = node_cert_paths(dir, id);
    anyhow::ensure!(
        !paths.cert.exists() && !identity_key_path(dir, id).exists(),
        "node {id} has a certificate or identity key in {} already: node ids are never reused",
        dir.display()
    );
    let read = |p: PathBuf| std::fs::read_to_string(&p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()));
    let ca_pem = read(ca_cert_path(ca_dir))?;
    let ca_key = KeyPair::from_pem(&read(ca_key_path(ca_dir))?)?;
    let ca_cert = CertificateParams::from_ca_cert_pem(&ca_pem)?.self_signed(&ca_key)?;
    write_node_cert(dir, id, days, (&ca_cert, &ca_key))?;
    ensure_identity(dir, id)?;
    write_identities(dir)?;
    identity_public(dir, id)
}

/// Writes node `id`'s certificate (DNS SAN `node-<id>`, server and client
/// use) and its key into `dir`.
fn write_node_cert(dir: &Path, id: u16, days: u32, ca: (&rcgen::Certificate, &KeyPair)) -> anyhow::Result<()> {
    let both = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    let (cert, key) = leaf(&node_dns_name(id), &format!("sigil node {id}"), both, days, ca)?;
    let paths = node_cert_paths(dir, id);
    std::fs::write(&paths.cert, cert.pem())?;
    write_secret(&paths.key, key.serialize_pem().as_bytes())?;
    Ok(())
}

/// Sets `p`'s validity: from an hour ago (clock skew) for `days` days.
fn validity(p: &mut CertificateParams, days: u32) {
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::hours(1);
    p.not_after = now + time::Duration::days(i64::from(days));
}

/// A leaf certificate for `name`, signed by the CA.
fn leaf(
    name: &str,
    common_name: &str,
    usages: Vec<ExtendedKeyUsagePurpose>,
    days: u32,
    ca: (&rcgen::Certificate, &KeyPair),
) -> anyhow::Result<(rcgen::Certificate, KeyPair)> {
    let key = KeyPair::generate()?;
    let mut p = CertificateParams::new(vec![name.to_string()])?;
    p.distinguished_name.push(DnType::CommonName, common_name);
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = usages;
    validity(&mut p, days);
    let cert = p.signed_by(&key, ca.0, ca.1)?;
    Ok((cert, key))
}

fn init_ca(dir: &Path, ca_dir: &Path, ids: &[u16], days: u32) -> anyhow::Result<bool> {
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
    validity(&mut ca, CA_DAYS.max(days));
    let ca_cert = ca.self_signed(&ca_key)?;
    for &id in ids {
        write_node_cert(dir, id, days, (&ca_cert, &ca_key))?;
    }
    let (cert, key) = leaf(
        PRIME_SERVICE_DNS_NAME,
        "sigil prime service",
        vec![ExtendedKeyUsagePurpose::ServerAuth],
        days,
        (&ca_cert, &ca_key),
    )?;
    let paths = prime_service_cert_paths(dir);
    std::fs::write(&paths.cert, cert.pem())?;
    write_secret(&paths.key, key.serialize_pem().as_bytes())?;
    write_secret(&ca_key_path(ca_dir), ca_key.serialize_pem().as_bytes())?;
    std::fs::write(ca_cert_path(ca_dir), ca_cert.pem())?;
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
        let root = tempfile::tempdir()?;
        let (dir, ca) = (root.path().join("certs"), root.path().join("ca"));
        assert!(
            init(&dir, &dir, &[0], CERT_DAYS).is_err(),
            "the CA key never beside the node keys"
        );
        assert!(init(&dir, &ca, &[0, 1, 2], CERT_DAYS)?);
        assert!(
            ca_key_path(&ca).exists() && !dir.join("ca.key").exists(),
            "the CA key only in its own folder"
        );
        let id1 = identity_public(&dir, 1)?;
        assert!(
            !init(&dir, &ca, &[0, 1, 2], CERT_DAYS)?,
            "second init keeps the existing CA"
        );
        assert_eq!(identity_public(&dir, 1)?, id1, "and the identity keys");
        let ids: std::collections::BTreeMap<String, String> =
            serde_json::from_str(&std::fs::read_to_string(identities_path(&dir))?)?;
        assert_eq!(ids.get("1"), Some(&id1));
        let der = rustls_pemfile_der(&std::fs::read_to_string(node_cert_paths(&dir, 2).cert)?);
        assert_eq!(node_id_of_cert(&der), Some(2));
        assert_eq!(node_id_of_cert(b"garbage"), None);
        // A validity period of CERT_DAYS days.
        let (_, cert) = x509_parser::parse_x509_certificate(&der).map_err(|e| anyhow::anyhow!("{e}"))?;
        let v = cert.validity();
        let days = (v.not_after.timestamp() - v.not_before.timestamp()) / 86_400;
        assert_eq!(days, i64::from(CERT_DAYS), "{v:?}");
        // The prime service's certificate names no node.
        let der = rustls_pemfile_der(&std::fs::read_to_string(prime_service_cert_paths(&dir).cert)?);
        assert_eq!(node_id_of_cert(&der), None);
        Ok(())
    }

    #[test]
    fn add_node_issues_a_certificate_the_ca_signed_and_never_reuses_an_id() -> anyhow::Result<()> {
        let root = tempfile::tempdir()?;
        let (dir, ca) = (root.path().join("certs"), root.path().join("ca"));
        init(&dir, &ca, &[0, 1, 2], CERT_DAYS)?;
        let id3 = add_node(&dir, &ca, 3, 30)?;
        assert_eq!(identity_public(&dir, 3)?, id3);
        let ids: std::collections::BTreeMap<String, String> =
            serde_json::from_str(&std::fs::read_to_string(identities_path(&dir))?)?;
        assert_eq!(ids.len(), 4);
        assert_eq!(ids.get("3"), Some(&id3));
        let der = rustls_pemfile_der(&std::fs::read_to_string(node_cert_paths(&dir, 3).cert)?);
        assert_eq!(node_id_of_cert(&der), Some(3));
        let ca_der = rustls_pemfile_der(&std::fs::read_to_string(ca_cert_path(&dir))?);
        let (_, cert) = x509_parser::parse_x509_certificate(&der).map_err(|e| anyhow::anyhow!("{e}"))?;
        let (_, ca_cert) = x509_parser::parse_x509_certificate(&ca_der).map_err(|e| anyhow::anyhow!("{e}"))?;
        assert_eq!(cert.issuer(), ca_cert.subject());
        cert.verify_signature(Some(ca_cert.public_key()))
            .map_err(|e| anyhow::anyhow!("not signed by the CA: {e}"))?;
        assert!(add_node(&dir, &ca, 3, 30).is_err(), "node 3 exists");
        assert!(add_node(&dir, &ca, 1, 30).is_err(), "node 1 exists");
        assert!(add_node(&dir, &root.path().join("nowhere"), 4, 30).is_err(), "no CA");
        Ok(())
    }

    fn rustls_pemfile_der(pem: &str) -> Vec<u8> {
        let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap_or_else(|_| unreachable!());
        p.contents
    }
}
