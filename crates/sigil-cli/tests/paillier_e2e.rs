//! End to end: a 3-node `sigil dev` cluster makes a 1024-bit threshold
//! Paillier key (T = 2) without a dealer; Python's `phe` (an independent,
//! standard Paillier implementation) encrypts to it and adds ciphertexts;
//! the cluster decrypts, also after the key is reshared to T = 3 and
//! refreshed; bad input gets 400s. (Decryption with nodes down
//! is in `e2e.rs`.) A party that goes silent during the candidate search:
//! the key generation fails at the session deadline naming it, and no node
//! keeps anything of the key.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{Cluster, DevCluster, SESSION_TIMEOUT_MS};
use serde_json::{json, Value};

/// `phe`: encrypt `a` and `b` to `n`, return (E(a), E(a) + E(b)) as decimal strings.
fn phe_encrypt_and_add(n: &str, a: u64, b: u64) -> (String, String) {
    let script = format!(
        "from phe import paillier\n\
         pk = paillier.PaillierPublicKey({n})\n\
         ea = pk.encrypt({a}); eb = pk.encrypt({b})\n\
         print(ea.ciphertext()); print((ea + eb).ciphertext())\n"
    );
    let out = Command::new("python3")
        .args(["-c", &script])
        .output()
        .expect("python3 with phe (pip install phe; .ci/run installs it)");
    assert!(out.status.success(), "phe: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    (lines.next().unwrap().to_string(), lines.next().unwrap().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paillier_keygen_encrypt_with_phe_decrypt_and_faults() {
    let tmp = tempfile::tempdir().unwrap();
    let dev = DevCluster::start(3, tmp.path(), &[]).await;
    let base = dev.url(0);
    let logs = || dev.logs();

    // Settings the protocol cannot honour are 400s.
    for (body, what) in [
        (
            json!({"scheme": "paillier", "threshold": 3, "bits": 1024}),
            "n < 2(T-1)+1",
        ),
        (
            json!({"scheme": "paillier", "threshold": 2, "bits": 100}),
            "bits too small",
        ),
        (
            json!({"scheme": "frost-ed25519", "threshold": 2, "bits": 1024}),
            "bits for a signing scheme",
        ),
    ] {
        let (s, v) = dev.post(0, "/v1/keys", &body).await;
        assert_eq!(s, 400, "{what}: {v}");
        assert!(v["error"]["message"].is_string(), "{what}: {v}");
    }

    // Dealerless key generation.
    let (s, key) = dev
        .post(
            0,
            "/v1/keys",
            &json!({"scheme": "paillier", "threshold": 2, "bits": 1024}),
        )
        .await;
    assert_eq!(s, 201, "{key}\n{}", logs());
    let id = key["key_id"].as_str().unwrap().to_string();
    let n = key["n"].as_str().unwrap().to_string();
    assert_eq!(key["public_key"], key["n"]);
    let n_int: sigil_paillier::rug::Integer = n.parse().unwrap();
    assert_eq!(n_int.significant_bits(), 1024);

    // phe encrypts and adds; the cluster decrypts, through any node.
    let (ea, sum) = phe_encrypt_and_add(&n, 123_456_789, 987_654_321);
    let (s, v) = dev
        .post(0, &format!("/v1/keys/{id}/decrypt"), &json!({"ciphertext": ea}))
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["plaintext"], "123456789");
    let (s, v) = dev
        .post(2, &format!("/v1/keys/{id}/decrypt"), &json!({"ciphertext": sum}))
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["plaintext"], (123_456_789u64 + 987_654_321).to_string());

    // Reshared over the integers to T = 3 (and refreshed): N unchanged,
    // phe's ciphertexts made before still decrypt.
    let (s, v) = dev
        .post(
            1,
            &format!("/v1/keys/{id}/reshare"),
            &json!({"parties": [0, 1, 2], "threshold": 3}),
        )
        .await;
    assert_eq!(s, 200, "{v}\n{}", logs());
    assert_eq!(
        (v["epoch"].as_u64(), v["threshold"].as_u64()),
        (Some(1), Some(3)),
        "{v}"
    );
    assert_eq!(v["n"].as_str(), Some(n.as_str()), "N is unchanged");
    let (s, v) = dev.post(2, &format!("/v1/keys/{id}/refresh"), &json!({})).await;
    assert_eq!((s, v["epoch"].as_u64()), (200, Some(2)), "{v}");
    let (s, v) = dev
        .post(1, &format!("/v1/keys/{id}/decrypt"), &json!({"ciphertext": sum}))
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["plaintext"], (123_456_789u64 + 987_654_321).to_string());
    assert_eq!(v["parties"].as_array().map(Vec::len), Some(3), "{v}");

    // Our own client encrypts too (sigil encrypt), and sigil decrypt answers.
    let out = Command::new(env!("CARGO_BIN_EXE_sigil"))
        .args(["encrypt", "--key", &id, "42", "--url", &base])
        .envs(dev.cli_env())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let c = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_sigil"))
        .args(["decrypt", "--key", &id, &c, "--url", &base])
        .envs(dev.cli_env())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["plaintext"], "42");

    // Bad ciphertexts and signing with a paillier key: 400s.
    let n2 = (n_int.clone() * &n_int).to_string();
    for (c, what) in [
        ("0", "zero"),
        (n2.as_str(), "N^2"),
        (n.as_str(), "not invertible"),
        ("12x", "not decimal"),
    ] {
        let (s, v) = dev
            .post(0, &format!("/v1/keys/{id}/decrypt"), &json!({"ciphertext": c}))
            .await;
        assert_eq!(s, 400, "{what}: {v}");
    }
    let (s, v) = dev
        .post(0, &format!("/v1/keys/{id}/sign"), &json!({"message": "00"}))
        .await;
    assert_eq!(s, 400, "{v}");

    drop(dev);
}

/// One GET of an operation on node 0.
async fn operation(c: &Cluster, id: &str) -> Value {
    let (s, v) = c.api(0, "GET", &format!("/v1/operations/{id}"), json!(null)).await;
    assert_eq!(s, 200, "{v}");
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paillier_keygen_with_a_silent_party_fails_naming_it_and_keeps_nothing() {
    let c = Cluster::with_presign_pool(3, 0);
    for i in 0..3 {
        c.wait_healthy(i).await;
    }
    let (s, v) = c.api(0, "GET", "/v1/operations/no-such-operation", json!(null)).await;
    assert_eq!(s, 404, "{v}");
    // A 2048-bit search takes several attempts (sessions). Follow it as a
    // long operation; once an attempt has finished, stop node 2 (SIGSTOP:
    // silent, its sockets stay open). If the key was found first, try again.
    for _ in 0..5 {
        let (s, op) = c
            .api(
                0,
                "POST",
                "/v1/keys?wait=false",
                json!({"scheme": "paillier", "threshold": 2, "bits": 2048}),
            )
            .await;
        assert_eq!(s, 202, "{op}");
        assert_eq!(op["state"], "running", "{op}");
        let id = op["operation_id"].as_str().unwrap().to_string();
        let key_id = op["key_id"].as_str().unwrap().to_string();
        let start = Instant::now();
        let mut v = operation(&c, &id).await;
        while v["state"] == "running" && v["attempts"].as_u64().unwrap() == 0 {
            assert!(start.elapsed() < Duration::from_secs(120), "no attempt finished: {v}");
            tokio::time::sleep(Duration::from_millis(20)).await;
            v = operation(&c, &id).await;
        }
        if v["state"] == "succeeded" {
            continue;
        }
        assert_eq!(v["state"], "running", "{v}");
        assert!(v["candidates"].as_u64().unwrap() > 0, "progress counts candidates: {v}");
        c.signal(2, "-STOP");
        let stopped = Instant::now();
        while v["state"] == "running" {
            assert!(
                stopped.elapsed() < Duration::from_millis(2 * SESSION_TIMEOUT_MS + 5000),
                "still running with node 2 silent: {v}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
            v = operation(&c, &id).await;
        }
        let took = stopped.elapsed();
        c.signal(2, "-CONT");
        if v["state"] == "succeeded" {
            // Node 2 had already answered the attempt that found the key.
            continue;
        }
        // It fails at the deadline of the session in flight, naming node 2.
        assert_eq!(v["state"], "failed", "{v}");
        assert_eq!(v["status"], 504, "{v}");
        assert_eq!(v["error"]["code"], "party_timeout", "{v}");
        assert_eq!(v["error"]["nodes"], json!([2]), "{v}");
        assert!(
            took < Duration::from_millis(SESSION_TIMEOUT_MS + 3000),
            "failed {took:?} after node 2 went silent"
        );
        assert!(v.get("key").is_none(), "{v}");
        // Nothing half-made: no node has the key, active or pending, nor a share.
        c.wait_healthy(2).await;
        for i in 0..3u16 {
            let (s, k) = c.api(i, "GET", &format!("/v1/keys/{key_id}"), json!(null)).await;
            assert_eq!(s, 404, "node {i}: {k}");
            let store = common::open_store(&c.dir.path().join(format!("node-{i}"))).await;
            assert!(
                store.get_key(&key_id).await.unwrap().is_none(),
                "node {i} keeps a record"
            );
            assert!(
                store.backend.raw_share_for_tests(&key_id).await.unwrap().is_none(),
                "node {i} keeps a share"
            );
        }
        // The cluster still makes keys.
        c.create_paillier(1, 2, 512).await;
        return;
    }
    panic!("the key was found five times before node 2 could be stopped");
}
