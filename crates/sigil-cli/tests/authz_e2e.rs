//! End-to-end authorization: real node processes; a harness holding only
//! node 0's certificate and key speaks the peer protocol directly and tries
//! what one compromised machine could; client tokens are tried bad in
//! every way; the audit chain is verified and broken.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    missing_docs
)]

mod common;

use std::process::Command;

use common::{assert_error, Cluster, CLUSTER_ID};
use serde_json::{json, Value};
use sigil_node::config::NodeConfig;
use sigil_proto::peer::peer_client::PeerClient;
use sigil_proto::peer::session_proposal::Kind;
use sigil_proto::peer::{
    Attestation, AuxProposal, ClientAuthorization, FinalizeAuxRequest, FinalizeKeyRequest, KeyMeta, PresignProposal,
    SessionProposal, SignProposal,
};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// A peer client to node `to` holding node `as_node`'s credentials.
async fn peer_as(c: &Cluster, as_node: u16, to: u16) -> PeerClient<Channel> {
    let cfg: NodeConfig = toml::from_str(&std::fs::read_to_string(&c.configs[usize::from(as_node)]).unwrap()).unwrap();
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(&cfg.tls.ca_cert).unwrap()))
        .identity(Identity::from_pem(
            std::fs::read(&cfg.tls.cert).unwrap(),
            std::fs::read(&cfg.tls.key).unwrap(),
        ))
        .domain_name(format!("node-{to}"));
    let ch = Endpoint::from_shared(format!("https://{}", cfg.nodes[usize::from(to)].peer_addr))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    PeerClient::new(ch)
}

fn proposal(parties: &[u32], kind: Kind, auth: Option<ClientAuthorization>) -> SessionProposal {
    let mut sid = vec![0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut sid);
    SessionProposal {
        session_id: sid,
        coordinator: 0,
        parties: parties.to_vec(),
        deadline_ms: 3000,
        authorization: auth,
        kind: Some(kind),
    }
}

fn sign_kind(key: &Value, message: &[u8], presignature_id: &str) -> Kind {
    Kind::Sign(SignProposal {
        key_id: key["key_id"].as_str().unwrap().into(),
        message: message.to_vec(),
        epoch: 0,
        scheme: key["scheme"].as_str().unwrap().into(),
        derivation_path: vec![],
        presignature_id: presignature_id.into(),
    })
}

/// The client authorization of an admin request, as a coordinator forwards it.
fn auth_of(c: &Cluster, path: &str, body: &Value) -> ClientAuthorization {
    let body = body.to_string();
    ClientAuthorization {
        token: c.token("admin", "POST", path, Some(&body)),
        method: "POST".into(),
        path: path.into(),
        body: body.into_bytes(),
    }
}

fn refused(r: Result<impl std::fmt::Debug, tonic::Status>, what: &str) -> String {
    let e = r.expect_err(what);
    assert!(
        matches!(
            e.code(),
            tonic::Code::Unauthenticated | tonic::Code::PermissionDenied | tonic::Code::InvalidArgument
        ),
        "{what}: {e:?}"
    );
    e.message().to_string()
}

async fn post0(c: &Cluster, path: &str, token: String, body: String) -> (u16, Value) {
    c.call(0, "POST", path, Some(body), Some(&token)).await
}

async fn audit_outcomes(c: &Cluster, i: u16) -> Vec<String> {
    let (s, v) = c.api(i, "GET", "/v1/audit?limit=1000", json!(null)).await;
    assert_eq!(s, 200, "{v}");
    v["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            format!(
                "{} {}",
                r["operation"].as_str().unwrap(),
                r["outcome"].as_str().unwrap()
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_alone_can_do_nothing_and_bad_tokens_are_refused() {
    let mut c = Cluster::with_presign_pool(3, 0);
    for i in 0..3 {
        c.wait_healthy(i).await;
    }
    let ed = c.create(0, "frost-ed25519", 2).await;
    let ecdsa = c.create(0, "ecdsa-secp256k1", 2).await;
    let pai = c.create_paillier(0, 2, 512).await;
    let ed_sign = format!("/v1/keys/{}/sign", ed["key_id"].as_str().unwrap());

    // --- Node 0 alone, over the peer protocol ---------------------------
    let mut p1 = peer_as(&c, 0, 1).await;
    let mut p2 = peer_as(&c, 0, 2).await;
    // A FROST signature no client asked for: refused, no token.
    let m = refused(
        p1.run_session(proposal(&[1, 2], sign_kind(&ed, b"steal", ""), None))
            .await,
        "sign without a client token",
    );
    assert!(m.contains("no bearer token"), "{m}");
    // With a real token for another message: the coordinator altered it.
    let body = json!({"message": hex::encode(b"pay 1")});
    let auth = auth_of(&c, &ed_sign, &body);
    let m = refused(
        p1.run_session(proposal(&[1, 2], sign_kind(&ed, b"pay 1000", ""), Some(auth.clone())))
            .await,
        "altered message",
    );
    assert!(m.contains("body mismatch"), "{m}");
    // The same token for another key (path names the ed key).
    let m = refused(
        p1.run_session(proposal(&[1, 2], sign_kind(&ecdsa, b"pay 1", ""), Some(auth)))
            .await,
        "other key",
    );
    assert!(m.contains("body mismatch"), "{m}");
    // ECDSA full and pooled, Paillier decryption: no token, refused.
    let digest = [9u8; 32];
    refused(
        p1.run_session(proposal(&[1, 2], sign_kind(&ecdsa, &digest, ""), None))
            .await,
        "ecdsa full",
    );
    refused(
        p1.run_session(proposal(&[1, 2], sign_kind(&ecdsa, &digest, &"ab".repeat(32)), None))
            .await,
        "ecdsa pooled partial",
    );
    refused(
        p1.run_session(proposal(&[1, 2], sign_kind(&pai, b"12345", ""), None))
            .await,
        "paillier partial decryption",
    );
    // Presigning for a set whose refiller is node 1; aux info without a request.
    let presign = Kind::Presign(PresignProposal {
        key_id: ecdsa["key_id"].as_str().unwrap().into(),
        scheme: "ecdsa-secp256k1".into(),
    });
    let m = refused(p1.run_session(proposal(&[1, 2], presign, None)).await, "presign");
    assert!(m.contains("refiller"), "{m}");
    refused(
        p1.run_session(proposal(&[0, 1, 2], Kind::Aux(AuxProposal {}), None))
            .await,
        "aux info",
    );
    // FinalizeAux with forged signatures, and for a set without aux info: the
    // committed aux info of {0,1,2} stays, and {1,2} gets none.
    let fin_aux = |parties: Vec<u32>, nodes: Vec<u32>| FinalizeAuxRequest {
        parties,
        fingerprint: vec![5; 32],
        attestations: nodes
            .into_iter()
            .map(|node| Attestation {
                node,
                signature: vec![1; 64],
            })
            .collect(),
    };
    let m = refused(
        p1.finalize_aux(fin_aux(vec![0, 1, 2], vec![0, 1, 2])).await,
        "aux commit, forged",
    );
    assert!(m.contains("not attested"), "{m}");
    let m = refused(
        p1.finalize_aux(fin_aux(vec![1, 2], vec![1, 2])).await,
        "aux commit, no aux",
    );
    assert!(m.contains("no aux info"), "{m}");
    // Node 0's and node 2's real signatures over the real fingerprint, node
    // 1's forged (what t - 1 colluding nodes could bring): refused; with all
    // three real ones, accepted (idempotent, nothing changes).
    let aux = common::open_store(&c.dir.path().join("node-1"))
        .await
        .get_aux_info("0,1,2", 1)
        .await
        .unwrap()
        .expect("committed aux info on node 1");
    let aux: sigil_crypto::ecdsa::AuxInfo = serde_json::from_slice(&aux).unwrap();
    let fp = sigil_crypto::ecdsa::aux_fingerprint(&aux);
    let sig_of = |node: u16| {
        let key =
            sigil_node::certs::load_identity(&sigil_node::certs::identity_key_path(&c.dir.path().join("certs"), node))
                .unwrap();
        sigil_node::attest::sign_aux(&key, "0,1,2", &fp)
    };
    let with = |one: Vec<u8>| FinalizeAuxRequest {
        parties: vec![0, 1, 2],
        fingerprint: fp.to_vec(),
        attestations: [(0, sig_of(0)), (1, one), (2, sig_of(2))]
            .into_iter()
            .map(|(node, signature)| Attestation { node, signature })
            .collect(),
    };
    let m = refused(p1.finalize_aux(with(vec![1; 64])).await, "aux commit, one forged");
    assert!(m.contains("not attested by every party"), "{m}");
    p1.finalize_aux(with(sig_of(1)))
        .await
        .expect("every party's real signature");
    // FinalizeKey: inject a key nobody made, overwrite one, delete one.
    let fake = KeyMeta {
        key_id: "injected".into(),
        scheme: "frost-ed25519".into(),
        threshold: 2,
        parties: vec![0, 1],
        public_key: vec![7; 32],
        public_key_package: vec![1, 2, 3],
        policy: r#"{"sign":["admin"]}"#.into(),
        ..Default::default()
    };
    let fin = |key: KeyMeta, commit: bool| FinalizeKeyRequest {
        key: Some(key),
        commit,
        session_id: Vec::new(),
    };
    refused(p2.finalize_key(fin(fake.clone(), true)).await, "inject");
    let (s, _) = c.api(2, "GET", "/v1/keys/injected", json!(null)).await;
    assert_eq!(s, 404, "the injected key is not listed");
    let mut over = fake.clone();
    over.key_id = ed["key_id"].as_str().unwrap().into();
    over.parties = vec![0, 1, 2];
    refused(p2.finalize_key(fin(over.clone(), true)).await, "overwrite");
    refused(p2.finalize_key(fin(over, false)).await, "delete");
    let (s, v) = c
        .api(
            2,
            "GET",
            &format!("/v1/keys/{}", ed["key_id"].as_str().unwrap()),
            json!(null),
        )
        .await;
    assert_eq!((s, &v["public_key"]), (200, &ed["public_key"]), "key unchanged");
    // Nothing changed: the key still signs, through node 1 and 2.
    c.sign_ok(1, &ed, b"still mine").await;
    c.sign_ok(2, &ecdsa, b"still mine").await;
    // Node 1 wrote its refusals down.
    let outcomes = audit_outcomes(&c, 1).await;
    for want in [
        "sign refused:missing_token",
        "sign refused:body_mismatch",
        "decrypt refused:missing_token",
        "presign refused:forbidden",
        "aux_info refused:missing_token",
        "aux_commit refused:forbidden",
    ] {
        assert!(
            outcomes.iter().any(|o| o == want),
            "node 1 audit lacks {want:?}: {outcomes:?}"
        );
    }

    // --- Attested records ----------------------------------------------
    let out = Command::new(env!("CARGO_BIN_EXE_sigil"))
        .args(["keys", "verify", ecdsa["key_id"].as_str().unwrap(), "--url", &c.url(2)])
        .arg("--identities")
        .arg(c.dir.path().join("certs/identities.json"))
        .envs(c.cli_env("admin"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(ed["attestations"].as_array().unwrap().len(), 3, "{ed}");

    // --- Tokens ---------------------------------------------------------
    let body = json!({"message": "00"}).to_string();
    let signer = common::signer(c.dir.path(), "admin");
    let mut claims = signer.claims(CLUSTER_ID, "POST", &ed_sign, Some(body.as_bytes()), 60);
    claims.iat -= 1000;
    claims.exp -= 1000;
    let (s, v) = post0(&c, &ed_sign, signer.sign_claims(&claims).unwrap(), body.clone()).await;
    assert_error(s, &v, 401, "expired");
    assert_eq!(v["error"]["code"], "expired");
    let claims = signer.claims("another-cluster", "POST", &ed_sign, Some(body.as_bytes()), 60);
    let (_, v) = post0(&c, &ed_sign, signer.sign_claims(&claims).unwrap(), body.clone()).await;
    assert_eq!(v["error"]["code"], "wrong_audience", "{v}");
    let claims = signer.claims(CLUSTER_ID, "POST", &ed_sign, Some(body.as_bytes()), 60);
    let hs = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(b"x"),
    )
    .unwrap();
    let (_, v) = post0(&c, &ed_sign, hs, body.clone()).await;
    assert_eq!(v["error"]["code"], "wrong_algorithm", "{v}");
    // Bob's key signing admin's claims.
    let bob_key = std::fs::read_to_string(c.dir.path().join("clients/bob.key")).unwrap();
    let forged = sigil_node::auth::ClientSigner::from_pem("admin", &bob_key).unwrap();
    let (_, v) = post0(&c, &ed_sign, forged.sign_claims(&claims).unwrap(), body.clone()).await;
    assert_eq!(v["error"]["code"], "bad_signature", "{v}");
    // Tampered body.
    let t = c.token("admin", "POST", &ed_sign, Some(&body));
    let (_, v) = post0(&c, &ed_sign, t.clone(), json!({"message": "01"}).to_string()).await;
    assert_eq!(v["error"]["code"], "body_mismatch", "{v}");
    // Replay: the same token twice, and to other coordinators.
    let t = c.token("admin", "POST", &ed_sign, Some(&body));
    let (s, v) = post0(&c, &ed_sign, t.clone(), body.clone()).await;
    assert_eq!(s, 200, "{v}");
    let (_, v) = post0(&c, &ed_sign, t.clone(), body.clone()).await;
    assert_eq!(v["error"]["code"], "replayed", "{v}");
    for i in [1, 2] {
        let (s, v) = c.call(i, "POST", &ed_sign, Some(body.clone()), Some(&t)).await;
        assert!(s == 401 || s == 403, "replay via node {i}: {s} {v}");
        assert_eq!(v["error"]["code"], "replayed", "replay via node {i}: {v}");
    }
    // A read token for a write; a client outside the key's policy.
    let read = c.token("admin", "POST", &ed_sign, None);
    let (_, v) = post0(&c, &ed_sign, read, body.clone()).await;
    assert_eq!(v["error"]["code"], "forbidden", "{v}");
    let (s, alices) = c
        .api_as(
            "alice",
            1,
            "POST",
            "/v1/keys",
            json!({"scheme": "frost-ed25519", "threshold": 2}),
        )
        .await;
    assert_eq!(s, 201, "alice (P-256, ES256) creates: {alices}");
    assert_eq!(alices["policy"]["sign"], json!(["alice"]));
    let alice_sign = format!("/v1/keys/{}/sign", alices["key_id"].as_str().unwrap());
    for i in 0..3 {
        let (s, v) = c.api(i, "POST", &alice_sign, json!({"message": "00"})).await;
        assert_error(s, &v, 403, &format!("admin outside alice's key policy via node {i}"));
        let (s, v) = c
            .api_as("alice", i, "POST", &alice_sign, json!({"message": "00"}))
            .await;
        assert_eq!(s, 200, "alice signs via node {i}: {v}");
    }
    let (s, v) = c
        .api_as(
            "bob",
            0,
            "POST",
            "/v1/keys",
            json!({"scheme": "frost-ed25519", "threshold": 2}),
        )
        .await;
    assert_error(s, &v, 403, "bob lacks role create");
    let (s, v) = c.api_as("bob", 0, "GET", "/v1/audit", json!(null)).await;
    assert_error(s, &v, 403, "bob lacks role audit");
    // A token issued before a restart is refused after it (never seen there).
    let early = c.token("admin", "POST", &ed_sign, Some(&body));
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    c.kill9(0);
    c.restart(0).await;
    let (_, v) = post0(&c, &ed_sign, early, body.clone()).await;
    assert_eq!(v["error"]["code"], "predates_start", "pre-restart token: {v}");

    // --- The audit chain ------------------------------------------------
    let out = Command::new(env!("CARGO_BIN_EXE_sigil"))
        .args(["audit", "export", "--url", &c.url(1)])
        .envs(c.cli_env("admin"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let export = String::from_utf8(out.stdout).unwrap();
    assert!(export.lines().count() > 10, "{export}");
    let file = c.dir.path().join("audit.jsonl");
    std::fs::write(&file, &export).unwrap();
    let verify = |args: &[&std::ffi::OsStr]| {
        Command::new(env!("CARGO_BIN_EXE_sigil"))
            .args(["audit", "verify"])
            .args(args)
            .output()
            .unwrap()
    };
    let out = verify(&["--file".as_ref(), file.as_os_str()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let db = c.dir.path().join("node-2/node.db");
    let out = verify(&["--db".as_ref(), db.as_os_str()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Edit the outcome of record 3: the chain breaks there.
    let edited: Vec<String> = export
        .lines()
        .map(|l| {
            let mut v: Value = serde_json::from_str(l).unwrap();
            if v["seq"] == 3 {
                v["outcome"] = json!("ok (edited)");
            }
            v.to_string()
        })
        .collect();
    std::fs::write(&file, edited.join("\n")).unwrap();
    let out = verify(&["--file".as_ref(), file.as_os_str()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("broken at seq 3"), "{err}");
}

/// The REST API over TLS (`http_tls`): https works with the server's
/// certificate, plaintext gets no answer; a non-loopback `listen_http`
/// without TLS does not start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_api_over_tls_and_no_plaintext_off_loopback() {
    let mut c = Cluster::new(1);
    c.wait_healthy(0).await;
    c.kill9(0);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let (cert_path, key_path) = (c.dir.path().join("https.crt"), c.dir.path().join("https.key"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    let text = std::fs::read_to_string(&c.configs[0]).unwrap();
    let mut cfg: NodeConfig = toml::from_str(&text).unwrap();

    // Off loopback without TLS: a start-up error that says what to do.
    cfg.listen_http = "0.0.0.0:0".parse().unwrap();
    std::fs::write(&c.configs[0], toml::to_string(&cfg).unwrap()).unwrap();
    // Spawned with a deadline: a regression (the node starting) must fail
    // the test, not hang it.
    let mut child = Command::new(env!("CARGO_BIN_EXE_sigil"))
        .args(["node", "--config"])
        .arg(&c.configs[0])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("a node with a plaintext non-loopback listen_http started");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let out = child.wait_with_output().unwrap();
    assert!(!status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not a loopback address") && err.contains("http_tls"),
        "{err}"
    );

    cfg.listen_http = format!("127.0.0.1:{}", c.http[0]).parse().unwrap();
    cfg.http_tls = Some(sigil_node::config::HttpTls {
        cert: cert_path,
        key: key_path,
    });
    std::fs::write(&c.configs[0], toml::to_string(&cfg).unwrap()).unwrap();
    c.procs[0] = Some(c.spawn(0, None));
    let https = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert.pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    let url = format!("https://localhost:{}/health", c.http[0]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let health = loop {
        match https.get(&url).send().await {
            Ok(r) => break r,
            Err(e) => {
                assert!(std::time::Instant::now() < deadline, "no https answer: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    };
    assert_eq!(health.status(), 200);
    let plain = c.http_client.get(format!("{}/health", c.url(0))).send().await;
    assert!(plain.is_err(), "plaintext answered: {plain:?}");
}
