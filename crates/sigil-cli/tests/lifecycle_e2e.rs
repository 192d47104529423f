//! End-to-end key lifecycle with real `sigil node` processes: keys made
//! on nodes 0, 1, 2 of a four-node cluster grow to a 3-of-4 committee with
//! node 3, sign with sets that include it, retire node 0 (reshare to 1, 2,
//! 3; node 0 deletes its share), survive a kill -9 of a party, and keep
//! their public key (ECDSA: xpub and Ethereum address) throughout; an
//! ECDSA key's new committee gets its own aux info. The CLI's `keys
//! refresh` runs too.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    missing_docs
)]

mod common;

use common::{assert_error, fixture_primes, Cluster};
use serde_json::{json, Value};

async fn reshare(c: &Cluster, door: u16, key: &Value, body: Value) -> Value {
    let id = key["key_id"].as_str().unwrap();
    let (s, v) = c.api(door, "POST", &format!("/v1/keys/{id}/reshare"), body).await;
    assert_eq!(s, 200, "reshare via node {door}: {v}");
    v
}

/// Node `i`'s view of `key`.
async fn view(c: &Cluster, i: u16, key: &Value) -> Value {
    let id = key["key_id"].as_str().unwrap();
    let (s, v) = c.api(i, "GET", &format!("/v1/keys/{id}"), Value::Null).await;
    assert_eq!(s, 200, "{v}");
    v
}

fn sorted(v: &Value) -> Vec<u64> {
    let mut s: Vec<u64> = v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect();
    s.sort_unstable();
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_grow_to_a_new_node_and_retire_an_old_one() {
    // Aux info twice for ECDSA: sets 0,1,2 and 1,2,3 (two primes per node
    // and set, never shared).
    let a = fixture_primes("primes-1536.txt");
    let b = fixture_primes("primes-1536-b.txt");
    let seeds = vec![
        a[0..2].to_vec(),
        [&a[2..4], &b[0..2]].concat(),
        [&a[4..6], &b[2..4]].concat(),
        b[4..6].to_vec(),
    ];
    let mut c = Cluster::with_seeds(4, seeds);
    for i in 0..4 {
        c.wait_healthy(i).await;
    }

    // FROST: 2-of-3 on 0, 1, 2 -> 3-of-4 with node 3 -> 2-of-3 without node 0.
    // (The first session may find a peer connection still starting.)
    let body = json!({"scheme": "frost-secp256k1-tr", "threshold": 2, "parties": [0, 1, 2]});
    let mut created = c.api(0, "POST", "/v1/keys", body.clone()).await;
    for _ in 0..20 {
        if created.0 == 201 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        created = c.api(0, "POST", "/v1/keys", body.clone()).await;
    }
    let (s, key) = created;
    assert_eq!(s, 201, "{key}");
    let grown = reshare(&c, 1, &key, json!({"parties": [0, 1, 2, 3], "threshold": 3})).await;
    assert_eq!(
        (grown["epoch"].as_u64(), grown["threshold"].as_u64()),
        (Some(1), Some(3))
    );
    assert_eq!(grown["public_key"], key["public_key"], "the x-only key is unchanged");
    assert_eq!(grown["history"][0]["parties"], json!([0, 1, 2]));
    for door in [3, 0] {
        let v = c.sign_ok(door, &grown, b"signed with node 3").await;
        assert_eq!(v["signers"].as_array().unwrap().len(), 3);
    }
    let retired = reshare(&c, 3, &grown, json!({"parties": [1, 2, 3], "threshold": 2})).await;
    assert_eq!(retired["epoch"].as_u64(), Some(2));
    // Node 0 keeps the record (it can still take requests for the key) but
    // no share: every signature is made by the new committee.
    let at0 = view(&c, 0, &key).await;
    assert_eq!(
        (at0["epoch"].as_u64(), at0["parties"].clone()),
        (Some(2), json!([1, 2, 3]))
    );
    let id = key["key_id"].as_str().unwrap();
    let store0 = common::open_store(&c.dir.path().join("node-0")).await;
    for epoch in 0..3 {
        assert!(
            store0.get_share(id, 0, epoch).await.unwrap().is_none(),
            "node 0 share at {epoch}"
        );
    }
    for _ in 0..3 {
        let v = c.sign_ok(0, &retired, b"node 0 retired").await;
        assert!(sorted(&v["signers"]).iter().all(|&n| n != 0), "{v}");
    }

    // A party killed and restarted: exactly one epoch, and it signs.
    c.kill9(2);
    c.sign_ok(1, &retired, b"node 2 down").await;
    c.restart(2).await;
    assert_eq!(view(&c, 2, &key).await["epoch"].as_u64(), Some(2));
    c.sign_ok(2, &retired, b"node 2 back").await;

    // Refused before any session: a committee with an unknown node, and a
    // client that is not an admin of the key.
    let (s, v) = c
        .api(
            1,
            "POST",
            &format!("/v1/keys/{id}/reshare"),
            json!({"parties": [1, 2, 9], "threshold": 2}),
        )
        .await;
    assert_error(s, &v, 400, "unknown node");
    let (s, v) = c
        .api_as("alice", 1, "POST", &format!("/v1/keys/{id}/refresh"), json!({}))
        .await;
    assert!(s == 403, "{s} {v}");

    // ECDSA: 2-of-3 on 0, 1, 2 reshared to 1, 2, 3 (new aux info for that
    // set) by a read-only client the key names an admin, then refreshed
    // with the CLI; public key, xpub and address kept.
    let (s, ecdsa) = c
        .api(
            0,
            "POST",
            "/v1/keys",
            json!({"scheme": "ecdsa-secp256k1", "threshold": 2, "parties": [0, 1, 2],
                   "policy": {"sign": ["admin"], "decrypt": [], "admin": ["admin", "bob"]}}),
        )
        .await;
    assert_eq!(s, 201, "{ecdsa}");
    let eid = ecdsa["key_id"].as_str().unwrap();
    let (s, v) = c
        .api(
            0,
            "POST",
            &format!("/v1/keys/{eid}/reshare"),
            json!({"parties": [1, 2, 3], "threshold": 2}),
        )
        .await;
    assert_error(s, &v, 400, "an ECDSA reshare through a node outside the new committee");
    // Bob may only read, but is an admin of this key: his reshare makes the
    // new set's aux info too (no `create` role needed for it).
    let (s, moved) = c
        .api_as(
            "bob",
            3,
            "POST",
            &format!("/v1/keys/{eid}/reshare"),
            json!({"parties": [1, 2, 3], "threshold": 2}),
        )
        .await;
    assert_eq!(s, 200, "bob's reshare: {moved}");
    for field in ["public_key", "xpub", "ethereum_address"] {
        assert_eq!(moved[field], ecdsa[field], "{field}");
    }
    let v = c.sign_ok(3, &moved, b"ecdsa after the move").await;
    assert!(sorted(&v["signers"]).iter().all(|&n| n != 0), "{v}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sigil"))
        .args(["keys", "refresh", eid, "--url", &c.url(2)])
        .envs(c.cli_env("admin"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let refreshed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(refreshed["epoch"].as_u64(), Some(2));
    assert_eq!(refreshed["xpub"], ecdsa["xpub"]);
    c.sign_ok(1, &refreshed, b"ecdsa after the refresh").await;

    // A refresh as a long operation: 202 with the operation to poll, and
    // the key at its next epoch in it.
    let (s, op) = c
        .api(2, "POST", &format!("/v1/keys/{eid}/refresh?wait=false"), json!({}))
        .await;
    assert_eq!(s, 202, "{op}");
    assert_eq!(op["kind"], "refresh", "{op}");
    let path = format!("/v1/operations/{}", op["operation_id"].as_str().unwrap());
    let started = std::time::Instant::now();
    let done = loop {
        let (s, v) = c.api(2, "GET", &path, Value::Null).await;
        assert_eq!(s, 200, "{v}");
        if v["state"] != "running" {
            break v;
        }
        assert!(started.elapsed().as_secs() < 60, "refresh still running: {v}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["key"]["epoch"].as_u64(), Some(3), "{done}");

    // Automatic rotation: a key with a 2 s interval is refreshed by its
    // lowest party while signatures through another node go on.
    let body = json!({"scheme": "frost-ed25519", "threshold": 2, "parties": [1, 2, 3],
        "policy": {"sign": ["admin"], "admin": ["admin"], "rotation_interval_s": 2}});
    let (s, rotating) = c.api(1, "POST", "/v1/keys", body).await;
    assert_eq!(s, 201, "{rotating}");
    let (mut signed, started) = (0, std::time::Instant::now());
    while view(&c, 3, &rotating).await["epoch"].as_u64() < Some(2) {
        assert!(started.elapsed().as_secs() < 30, "no rotation within 30 s");
        c.sign_ok(3, &rotating, format!("while rotating {signed}").as_bytes())
            .await;
        signed += 1;
    }
    assert!(signed > 0);
    c.sign_ok(2, &rotating, b"after two rotations").await;
}
