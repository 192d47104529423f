//! End-to-end: real `sigil node` processes on loopback, driven through the
//! REST API and, for the peer checks, a gRPC client holding a node
//! certificate.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    missing_docs
)]

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{assert_error, Cluster, SESSION_TIMEOUT_MS};
use serde_json::{json, Value};
use sha2::Digest;
use sigil_crypto::Scheme;
use sigil_node::config::NodeConfig;
use sigil_store::KeyStatus;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_keys_sign_faults_and_restart() {
    let mut c = Cluster::new(3);
    for i in 0..3 {
        c.wait_healthy(i).await;
    }

    // Every scheme: DKG, sign through two different coordinators, verify
    // with the independent verifiers; ed25519 also with dalek directly.
    let mut keys = Vec::new();
    for scheme in Scheme::ALL {
        let key = c.create(0, scheme.as_str(), 2).await;
        assert_eq!(key["parties"], json!([0, 1, 2]));
        assert!(key["public_key_pem"].as_str().unwrap().contains("BEGIN PUBLIC KEY"));
        c.sign_ok(0, &key, b"hello from node 0").await;
        c.sign_ok(2, &key, b"hello from node 2").await;
        // The key is known on every node.
        for i in 0..3 {
            let (s, v) = c
                .api(
                    i,
                    "GET",
                    &format!("/v1/keys/{}", key["key_id"].as_str().unwrap()),
                    json!(null),
                )
                .await;
            assert_eq!(s, 200);
            assert_eq!(v["public_key"], key["public_key"]);
        }
        keys.push(key);
    }
    for i in 0..3 {
        let (_, h) = c.api(i, "GET", "/health", json!(null)).await;
        assert_eq!(h["aux_info"], "ready", "{h}");
    }
    let ecdsa_key = keys.iter().find(|k| k["scheme"] == "ecdsa-secp256k1").unwrap().clone();
    // A threshold Paillier key (T = 2 of 3, 512-bit to keep the debug build
    // quick) and a ciphertext of 31337 under it.
    let pai = c.create_paillier(0, 2, 512).await;
    let pai_id = pai["key_id"].as_str().unwrap().to_string();
    let pai_n: sigil_paillier::rug::Integer = pai["n"].as_str().unwrap().parse().unwrap();
    let pai_pk = sigil_paillier::decrypt::PublicKey::new(pai_n, sigil_paillier::rug::Integer::from(1), 3, 1);
    let pai_c = pai_pk
        .encrypt(&sigil_paillier::rug::Integer::from(31337), &mut rand::rngs::OsRng)
        .unwrap()
        .to_string();
    let ecdsa_id = ecdsa_key["key_id"].as_str().unwrap().to_string();
    // HD: sign for child m/0/1; the signature verifies under the derived key.
    let digest = sha2::Sha256::digest(b"child").to_vec();
    let (s, child) = c
        .api(
            2,
            "GET",
            &format!("/v1/keys/{ecdsa_id}?derivation_path=m/0/1"),
            json!(null),
        )
        .await;
    assert_eq!(s, 200, "{child}");
    assert_ne!(child["public_key"], ecdsa_key["public_key"]);
    // The xpub carries the key; the child's xpub carries the child key.
    for (view, what) in [(&ecdsa_key, "master"), (&child, "child")] {
        let raw = bs58::decode(view["xpub"].as_str().unwrap())
            .with_check(None)
            .into_vec()
            .unwrap();
        assert_eq!(
            hex::encode(&raw[45..78]),
            view["public_key"].as_str().unwrap(),
            "{what} xpub key"
        );
    }
    assert!(ecdsa_key["ethereum_address"].as_str().unwrap().starts_with("0x"));
    // A real EIP-1559 transaction: `sigil eth sign-tx` recovers the sender.
    let out = Command::new(env!("CARGO_BIN_EXE_sigil"))
        .args([
            "eth",
            "sign-tx",
            "--key",
            &ecdsa_id,
            "--chain-id",
            "11155111",
            "--nonce",
            "3",
        ])
        .args([
            "--to",
            "0x000000000000000000000000000000000000dEaD",
            "--value-wei",
            "1000",
        ])
        .args(["--url", &c.url(0), "--derivation-path", "m/0/7"])
        .envs(c.cli_env("admin"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let tx: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(tx["sender_is_key"], true, "{tx}");
    assert!(tx["raw_transaction"].as_str().unwrap().starts_with("0x02"));
    let body = json!({"message": hex::encode(&digest), "derivation_path": "m/0/1"});
    let (s, v) = c.api(1, "POST", &format!("/v1/keys/{ecdsa_id}/sign"), body).await;
    assert_eq!(s, 200, "{v}");
    let child_pk = hex::decode(child["public_key"].as_str().unwrap()).unwrap();
    let child_sig = hex::decode(v["signature"].as_str().unwrap()).unwrap();
    Scheme::EcdsaSecp256k1.verify(&child_pk, &digest, &child_sig).unwrap();
    // The presignature pool fills in the background; a pooled signature is
    // one local step per signer. Every signature is valid and distinct.
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut sigs = std::collections::HashSet::new();
    loop {
        let v = c
            .sign_ok(0, &ecdsa_key, format!("pooled {}", sigs.len()).as_bytes())
            .await;
        assert!(
            sigs.insert(v["signature"].as_str().unwrap().to_string()),
            "a signature repeated"
        );
        let (_, m) = c.call(0, "GET", "/metrics", None, None).await;
        if m.as_str()
            .unwrap_or_default()
            .contains("sigil_presignatures_used_total")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no signature came from the presignature pool"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for k in 0..6 {
        let v = c
            .sign_ok(k % 3, &ecdsa_key, format!("after the pool filled {k}").as_bytes())
            .await;
        assert!(
            sigs.insert(v["signature"].as_str().unwrap().to_string()),
            "a signature repeated"
        );
    }
    // ECDSA bad input: not a 32-byte digest, a hardened path.
    let (s, v) = c
        .api(
            0,
            "POST",
            &format!("/v1/keys/{ecdsa_id}/sign"),
            json!({"message": "00ff"}),
        )
        .await;
    assert_error(s, &v, 400, "ECDSA message is not 32 bytes");
    let body = json!({"message": hex::encode(&digest), "derivation_path": "m/0'/1"});
    let (s, v) = c.api(0, "POST", &format!("/v1/keys/{ecdsa_id}/sign"), body).await;
    assert_error(s, &v, 400, "hardened step");
    let ed = keys[0].clone();
    let sig = c.sign_ok(1, &ed, b"dalek").await;
    let pk: [u8; 32] = hex::decode(ed["public_key"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let s: [u8; 64] = hex::decode(sig["signature"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    ed25519_dalek::VerifyingKey::from_bytes(&pk)
        .unwrap()
        .verify_strict(b"dalek", &ed25519_dalek::Signature::from_bytes(&s))
        .unwrap();
    // A 3-of-3 key and a key on a subset of the nodes.
    let k33 = c.create(1, "frost-p256", 3).await;
    c.sign_ok(2, &k33, b"all three").await;
    let (s, sub) = c
        .api(
            0,
            "POST",
            "/v1/keys",
            json!({"scheme": "frost-ed25519", "threshold": 2, "parties": [1, 2], "label": "subset"}),
        )
        .await;
    assert_eq!(s, 201, "{sub}");
    c.sign_ok(0, &sub, b"coordinator holds no share").await;

    // Bad input: clear 4xx with a JSON body; the node stays healthy.
    let (s, v) = c.call(0, "GET", "/v1/keys", None, None).await;
    assert_error(s, &v, 401, "missing token");
    assert_eq!(v["error"]["code"], "missing_token");
    let (s, v) = c.call(0, "GET", "/v1/keys", None, Some("wrong")).await;
    assert_error(s, &v, 401, "malformed token");
    let t = c.token("admin", "POST", "/v1/keys", Some("{not json"));
    let (s, v) = c.call(0, "POST", "/v1/keys", Some("{not json".into()), Some(&t)).await;
    assert_error(s, &v, 400, "malformed json");
    for (body, what) in [
        (json!({"scheme": "rsa", "threshold": 2}), "unknown scheme"),
        (json!({"scheme": "frost-ed25519", "threshold": 0}), "threshold 0"),
        (json!({"scheme": "frost-ed25519", "threshold": 1}), "threshold 1"),
        (json!({"scheme": "frost-ed25519", "threshold": 4}), "threshold > n"),
        (
            json!({"scheme": "frost-ed25519", "threshold": 2, "parties": [0, 9]}),
            "unknown party",
        ),
        (
            json!({"scheme": "frost-ed25519", "threshold": 2, "parties": [0, 0]}),
            "duplicate party",
        ),
        (
            json!({"scheme": "frost-ed25519", "threshold": -1}),
            "negative threshold",
        ),
        (json!({"scheme": "frost-ed25519"}), "missing threshold"),
    ] {
        let (s, v) = c.api(0, "POST", "/v1/keys", body).await;
        assert!(s == 400 || s == 422, "{what}: {s} {v}");
        assert!(v["error"]["message"].is_string(), "{what}: {v}");
    }
    let ed_id = ed["key_id"].as_str().unwrap();
    let (s, v) = c
        .api(
            0,
            "POST",
            &format!("/v1/keys/{ed_id}/sign"),
            json!({"message": "not hex!"}),
        )
        .await;
    assert_error(s, &v, 400, "non-hex message");
    let (s, v) = c
        .api(0, "POST", "/v1/keys/no-such-key/sign", json!({"message": "00"}))
        .await;
    assert_error(s, &v, 404, "unknown key (sign)");
    let (s, v) = c.api(0, "GET", "/v1/keys/no-such-key", json!(null)).await;
    assert_error(s, &v, 404, "unknown key (get)");
    let huge = json!({"message": "00".repeat(200_000)}).to_string();
    let t = c.token("admin", "POST", &format!("/v1/keys/{ed_id}/sign"), Some(&huge));
    let (s, v) = c
        .call(0, "POST", &format!("/v1/keys/{ed_id}/sign"), Some(huge), Some(&t))
        .await;
    assert_error(s, &v, 413, "oversized body");
    let (s, v) = c
        .api(
            0,
            "POST",
            &format!("/v1/keys/{ed_id}/sign"),
            json!({"message": "00".repeat(20_000)}),
        )
        .await;
    assert_error(s, &v, 400, "message over 16 KiB");
    let (s, _) = c.call(0, "GET", "/openapi.json", None, None).await;
    assert_eq!(s, 200);
    c.sign_ok(0, &ed, b"still healthy").await;

    // Peer transport: no client certificate, a foreign CA, and envelopes
    // for unknown sessions are refused; the refusals are counted.
    peer_checks(&c).await;

    // kill -9 one node: the others still sign with every key.
    c.kill9(1);
    for key in &keys {
        c.sign_ok(0, key, b"node 1 is down").await;
        c.sign_ok(2, key, b"node 1 is down").await;
    }
    // A key that needs node 1: a clear error naming it, within the deadline.
    let t = Instant::now();
    let (s, v) = c
        .api(
            0,
            "POST",
            &format!("/v1/keys/{}/sign", k33["key_id"].as_str().unwrap()),
            json!({"message": "01"}),
        )
        .await;
    assert_error(s, &v, 503, "3-of-3 with a node down");
    assert_eq!(v["error"]["nodes"], json!([1]), "{v}");
    assert!(t.elapsed() < Duration::from_millis(SESSION_TIMEOUT_MS + 2000));
    let (s, v) = c
        .api(
            2,
            "POST",
            "/v1/keys",
            json!({"scheme": "frost-ed25519", "threshold": 2}),
        )
        .await;
    assert_error(s, &v, 503, "dkg with a node down");
    assert_eq!(v["error"]["nodes"], json!([1]), "{v}");
    // A key among nodes 0 and 2 made while node 1 is down: node 1 misses
    // its FinalizeKey, and catches up from its peers after the restart.
    let (s, missed) = c
        .api(
            0,
            "POST",
            "/v1/keys",
            json!({"scheme": "frost-ed25519", "threshold": 2, "parties": [0, 2]}),
        )
        .await;
    assert_eq!(s, 201, "{missed}");
    // Paillier, T = 2: with node 1 down, nodes 0 and 2 decrypt; with node 2
    // down too, fewer than T parties are reachable: a 503.
    let decrypt_path = format!("/v1/keys/{pai_id}/decrypt");
    let (s, v) = c.api(0, "POST", &decrypt_path, json!({"ciphertext": pai_c})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["plaintext"], "31337");
    c.kill9(2);
    let (s, v) = c.api(0, "POST", &decrypt_path, json!({"ciphertext": pai_c})).await;
    assert_error(s, &v, 503, "decrypt with two of three nodes down");
    c.restart(2).await;

    // While node 1 is down, make its store show the two other things a
    // node can miss: the commit of a key it is a party of (its share of
    // keys[0] is back to pending), and the abort of a failed keygen (two
    // pending keys no node has: one older than the pending TTL, one fresh).
    let node1_dir = c.dir.path().join("node-1");
    let uncommitted = keys[0]["key_id"].as_str().unwrap().to_string();
    let now_s = i64::try_from(common::now_ms() / 1000).unwrap();
    let ttl_s = i64::try_from(sigil_node::catch_up::PENDING_TTL.as_secs()).unwrap();
    {
        let store = common::open_store(&node1_dir).await;
        store
            .backend
            .set_status_for_tests(&uncommitted, KeyStatus::Pending)
            .await
            .unwrap();
        let mut stale = sigil_store::conformance::sample_key("aborted-long-ago");
        stale.created_at = now_s - ttl_s - 60;
        store.put_key(&stale, 1, Some(b"share")).await.unwrap();
        let mut fresh = sigil_store::conformance::sample_key("aborted-just-now");
        fresh.created_at = now_s;
        store.put_key(&fresh, 1, Some(b"share")).await.unwrap();
    }

    // Restart it: the old keys sign again, coordinated by the restarted node.
    c.restart(1).await;
    let missed_path = format!("/v1/keys/{}", missed["key_id"].as_str().unwrap());
    let uncommitted_path = format!("/v1/keys/{uncommitted}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while c.api(1, "GET", &missed_path, json!(null)).await.0 != 200
        || c.api(1, "GET", &uncommitted_path, json!(null)).await.0 != 200
    {
        assert!(
            Instant::now() < deadline,
            "node 1 did not catch up with the keys whose FinalizeKey it missed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    c.sign_ok(1, &missed, b"caught up").await;
    c.sign_ok(1, &keys[0], b"commit caught up").await;
    // The stale pending key is gone with its share; the fresh one stays
    // (its keygen could still be running).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let store = common::open_store(&node1_dir).await;
        if store.get_key("aborted-long-ago").await.unwrap().is_none() {
            assert!(store
                .backend
                .raw_share_for_tests("aborted-long-ago")
                .await
                .unwrap()
                .is_none());
            let fresh = store.get_key("aborted-just-now").await.unwrap();
            assert_eq!(fresh.map(|k| k.status), Some(KeyStatus::Pending));
            break;
        }
        assert!(Instant::now() < deadline, "node 1 kept a stale pending key");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for key in &keys {
        c.sign_ok(1, key, b"node 1 is back").await;
    }
    c.sign_ok(1, &k33, b"all three again").await;
    let (_, list) = c.api(1, "GET", "/v1/keys", json!(null)).await;
    assert!(list["keys"].as_array().unwrap().len() >= 5, "{list}");

    // A silent node (SIGSTOP): the session fails at its deadline naming it.
    c.signal(2, "-STOP");
    let t = Instant::now();
    let (s, v) = c
        .api(
            1,
            "POST",
            &format!("/v1/keys/{}/sign", k33["key_id"].as_str().unwrap()),
            json!({"message": "02"}),
        )
        .await;
    let took = t.elapsed();
    c.signal(2, "-CONT");
    assert_error(s, &v, 504, &format!("silent node (took {took:?})"));
    assert_eq!(v["error"]["nodes"], json!([2]), "{v}");
    assert!(took < Duration::from_millis(SESSION_TIMEOUT_MS + 2000), "took {took:?}");
    c.sign_ok(2, &k33, b"resumed").await;

    // A wrong master key is a clear start-up error.
    c.kill9(0);
    let mut p = c.spawn(0, Some(&"11".repeat(32)));
    let status = p.wait().unwrap();
    assert!(!status.success());
    let logs: String = std::fs::read_dir(c.dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("node-0."))
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect();
    assert!(logs.contains("master key does not match"), "{logs}");
    c.restart(0).await;
    c.sign_ok(0, &ed, b"right key again").await;

    // kill -9 while the presignature pools refill (they refill whenever
    // they run low, and signing above emptied them), restart, then sign 100
    // times, three at a time through the three nodes (pooled where the pool
    // has one, the full protocol otherwise): every signature valid, every
    // nonce (r) distinct, and the pools served some of them.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    c.kill9(0);
    c.restart(0).await;
    let used_before = presignatures_used(&c).await;
    let mut rs = std::collections::HashSet::new();
    for k in 0..34u8 {
        let nodes: &[u16] = if k < 33 { &[0, 1, 2] } else { &[0] };
        let msgs: Vec<[u8; 2]> = nodes.iter().map(|&i| [k, i as u8]).collect();
        let sigs = futures::future::join_all(nodes.iter().zip(&msgs).map(|(&i, m)| c.sign_ok(i, &ecdsa_key, m))).await;
        for v in sigs {
            let r = v["signature"].as_str().unwrap()[..64].to_string();
            assert!(rs.insert(r), "a nonce was reused");
        }
    }
    assert_eq!(rs.len(), 100);
    let used = presignatures_used(&c).await - used_before;
    assert!(used > 0, "no signature came from a presignature pool");
    eprintln!("100 signatures after kill -9 during refill: {used} from the pools");
}

/// Presignatures served from the pools, summed over the nodes' /metrics.
async fn presignatures_used(c: &Cluster) -> u64 {
    let mut total = 0;
    for i in 0..3 {
        let text = reqwest::get(format!("{}/metrics", c.url(i)))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        total += text
            .lines()
            .find_map(|l| l.strip_prefix("sigil_presignatures_used_total "))
            .map_or(0, |v| v.trim().parse::<u64>().unwrap());
    }
    total
}

async fn peer_checks(c: &Cluster) {
    use sigil_proto::peer::peer_client::PeerClient;
    use sigil_proto::peer::Envelope;
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

    let cfg: NodeConfig = toml::from_str(&std::fs::read_to_string(&c.configs[2]).unwrap()).unwrap();
    let peer0 = format!("https://{}", cfg.nodes[0].peer_addr);
    let ca = Certificate::from_pem(std::fs::read(&cfg.tls.ca_cert).unwrap());
    let env = Envelope {
        session_id: vec![7; 32],
        round: 0,
        from: 0,
        to: None,
        payload: b"garbage".to_vec(),
        ..Envelope::default()
    };

    // Delivers `env` to node 0 presenting the certificate and key files
    // given (none: no client certificate).
    let deliver_as = |identity: Option<(std::path::PathBuf, std::path::PathBuf)>| {
        let (peer0, ca, env) = (peer0.clone(), ca.clone(), env.clone());
        async move {
            let mut tls = ClientTlsConfig::new().ca_certificate(ca).domain_name("node-0");
            if let Some((cert, key)) = identity {
                tls = tls.identity(Identity::from_pem(std::fs::read(cert)?, std::fs::read(key)?));
            }
            let ch = Endpoint::from_shared(peer0)?.tls_config(tls)?.connect().await?;
            PeerClient::new(ch)
                .deliver(env)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))
        }
    };
    // Without a client certificate the handshake fails.
    assert!(
        deliver_as(None).await.is_err(),
        "a peer without a client certificate must be refused"
    );
    // A certificate from another CA is refused too.
    let other = tempfile::tempdir().unwrap();
    sigil_node::certs::init(&other.path().join("certs"), &other.path().join("ca"), &[2], 30).unwrap();
    let oc = sigil_node::certs::node_cert_paths(&other.path().join("certs"), 2);
    assert!(
        deliver_as(Some((oc.cert, oc.key))).await.is_err(),
        "a foreign certificate must be refused"
    );
    // The prime service's certificate, from the same CA, names no node.
    let certs_dir = cfg.tls.ca_cert.parent().unwrap().to_path_buf();
    let ps = sigil_node::certs::prime_service_cert_paths(&certs_dir);
    assert!(
        deliver_as(Some((ps.cert, ps.key))).await.is_err(),
        "the prime service's certificate is not a node's"
    );

    // Node 2's real certificate: garbage for an unknown session is NotFound.
    let tls = ClientTlsConfig::new()
        .ca_certificate(ca)
        .identity(Identity::from_pem(
            std::fs::read(&cfg.tls.cert).unwrap(),
            std::fs::read(&cfg.tls.key).unwrap(),
        ))
        .domain_name("node-0");
    let ch = Endpoint::from_shared(peer0)
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = PeerClient::new(ch);
    let e = client.deliver(env.clone()).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    let e = client
        .deliver(Envelope {
            session_id: vec![1, 2, 3],
            ..env
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    let (_, metrics) = c.call(0, "GET", "/metrics", None, None).await;
    let text = metrics.as_str().unwrap_or_default().to_string();
    assert!(
        text.contains("sigil_peer_messages_rejected_total{reason=\"unknown_session\"}"),
        "{text}"
    );
}
