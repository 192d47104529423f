//! A 3-node cluster of real node processes on PostgreSQL (one database per
//! node in a throwaway server, see `sigil_store::testing`): every scheme
//! makes a key and signs (Paillier decrypts), a node killed with `kill -9`
//! comes back with its keys, and with the database stopped under the
//! running nodes, what needs no storage write still works, reads answer
//! 503 JSON, and everything recovers when the database is back.
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

use common::Cluster;
use serde_json::json;
use sigil_store::testing::TempPostgres;
use sigil_store::StoreConfig;

/// `sigil encrypt` 42 under the Paillier key, `sigil decrypt` through node `via`.
fn decrypt_42(c: &Cluster, pai: &serde_json::Value, via: u16) {
    let id = pai["key_id"].as_str().unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_sigil"))
            .args(args)
            .args(["--url", &c.url(via)])
            .envs(c.cli_env("admin"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let ct = run(&["encrypt", "--key", id, "42"]);
    let v: serde_json::Value = serde_json::from_str(&run(&["decrypt", "--key", id, &ct])).unwrap();
    assert_eq!(v["plaintext"], "42");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_on_postgres_every_scheme_restart_and_database_outage() {
    let pg = TempPostgres::start().expect("a throwaway PostgreSQL (apt-get install postgresql)");
    let stores: Vec<StoreConfig> = (0..3)
        .map(|i| StoreConfig::postgres(&pg.fresh_database(&format!("node{i}")).unwrap()))
        .collect();
    let mut c = Cluster::with_stores(3, 0, stores);
    for i in 0..3 {
        c.wait_healthy(i).await;
    }
    let mut keys = Vec::new();
    for scheme in [
        "frost-ed25519",
        "frost-secp256k1-tr",
        "frost-p256",
        "ecdsa-secp256k1",
        "ecdsa-p256",
    ] {
        let k = c.create(0, scheme, 2).await;
        c.sign_ok(1, &k, b"on postgres").await;
        keys.push(k);
    }
    let pai = c.create_paillier(2, 2, 512).await;
    decrypt_42(&c, &pai, 0);

    // kill -9 and restart: node 1 serves its keys from PostgreSQL again.
    c.kill9(1);
    c.restart(1).await;
    for k in &keys {
        c.sign_ok(1, k, b"after kill -9").await;
    }
    decrypt_42(&c, &pai, 1);

    // Node 0 loads keys[0] (signing through a node always uses its share).
    c.sign_ok(0, &keys[0], b"warm").await;
    // The database goes away under the running nodes.
    pg.stop_server().unwrap();
    let (s, v) = c.api(0, "GET", "/v1/keys", json!(null)).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (503, Some("store_unavailable")),
        "{v}"
    );
    // A FROST signature with a key already in memory needs no storage write.
    // Node 2 has not loaded this key and now cannot: it answers "store
    // unavailable" (not a refusal) and the coordinator signs with node 1.
    for _ in 0..4 {
        c.sign_ok(0, &keys[0], b"database down").await;
    }
    pg.start_server().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (s, v) = c.api(0, "GET", "/v1/keys", json!(null)).await;
        if s == 200 {
            assert!(v["keys"].as_array().unwrap().len() >= keys.len(), "{v}");
            break;
        }
        assert!(Instant::now() < deadline, "the node did not recover: {s} {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let k = c.create(2, "frost-ed25519", 2).await;
    c.sign_ok(0, &k, b"database back").await;
}
