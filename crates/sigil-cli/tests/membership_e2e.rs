//! End to end, the operator's procedure of the README with real
//! processes: a key made on a 3-node `sigil dev` cluster; a fourth node
//! added by `sigil dev add-node` (certificate, identity key, configs, then
//! `SIGHUP`: the running nodes reload `[[nodes]]` while signatures go on);
//! the key reshared to 3-of-4 and signed by sets that include the new
//! node; node 0 retired (reshared away, its share deleted) and then taken
//! out of the other nodes' `[[nodes]]` by another `SIGHUP`, after which
//! the others refuse its calls and the key signs on without it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    missing_docs
)]

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::DevCluster;
use serde_json::{json, Value};
use sigil_crypto::Scheme;

/// Signs `msg` through node `door`; the signature verifies; returns the
/// signers.
async fn sign(dev: &DevCluster, door: u16, key: &Value, msg: &[u8]) -> Vec<u64> {
    let id = key["key_id"].as_str().unwrap();
    let (s, v) = dev
        .post(
            door,
            &format!("/v1/keys/{id}/sign"),
            &json!({"message": hex::encode(msg)}),
        )
        .await;
    assert_eq!(s, 200, "sign via node {door}: {v}\n{}", dev.logs());
    let pk = hex::decode(key["public_key"].as_str().unwrap()).unwrap();
    let sig = hex::decode(v["signature"].as_str().unwrap()).unwrap();
    Scheme::FrostEd25519.verify(&pk, msg, &sig).unwrap();
    let mut signers: Vec<u64> = v["signers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect();
    signers.sort_unstable();
    signers
}

/// Node `i`'s `/health` `nodes` count.
async fn members_seen(dev: &DevCluster, i: u16) -> u64 {
    let v: Value = reqwest::get(format!("{}/health", dev.url(i)))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["nodes"].as_u64().unwrap()
}

/// Waits until every node in `nodes` reports `count` members.
async fn until_members(dev: &DevCluster, nodes: &[u16], count: u64) {
    let start = Instant::now();
    for &i in nodes {
        while members_seen(dev, i).await != count {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "node {i} never saw {count} members"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dev_cluster_grows_by_a_node_and_retires_another() {
    let tmp = tempfile::tempdir().unwrap();
    let mut dev = DevCluster::start(3, tmp.path(), &[]).await;
    let (s, key) = dev
        .post(0, "/v1/keys", &json!({"scheme": "frost-ed25519", "threshold": 2}))
        .await;
    assert_eq!(s, 201, "{key}");
    let id = key["key_id"].as_str().unwrap().to_string();
    let reshare = format!("/v1/keys/{id}/reshare");

    // Node 3 is not a member yet: a committee with it is a 400.
    let (s, v) = dev
        .post(0, &reshare, &json!({"parties": [0, 1, 2, 3], "threshold": 3}))
        .await;
    assert_eq!(s, 400, "{v}");

    // Add node 3 while a client signs through node 1: no signature fails.
    let stop = Arc::new(AtomicBool::new(false));
    let signed = Arc::new(AtomicUsize::new(0));
    let load = {
        let (stop, signed, url, key) = (stop.clone(), signed.clone(), dev.url(1), key.clone());
        let token_dir = tmp.path().to_path_buf();
        tokio::spawn(async move {
            let path = format!("/v1/keys/{}/sign", key["key_id"].as_str().unwrap());
            while !stop.load(Ordering::Relaxed) {
                let body = json!({"message": hex::encode(signed.load(Ordering::Relaxed).to_be_bytes())});
                let (s, v) = common::dev_post(&token_dir, &url, &path, &body).await;
                assert_eq!(s, 200, "{v}");
                signed.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let out = dev.add_node();
    assert!(out.contains("node 3: running"), "{out}");
    until_members(&dev, &[0, 1, 2, 3], 4).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    assert!(signed.load(Ordering::Relaxed) > 0);

    // The identities file lists node 3 (what `sigil keys verify` checks).
    let ids: Value =
        serde_json::from_str(&std::fs::read_to_string(tmp.path().join("certs/identities.json")).unwrap()).unwrap();
    assert!(ids["3"].is_string(), "{ids}");

    // Node 3 learns the cluster's keys (attested records) from its first
    // catch-up pass, two seconds after it starts.
    let start = Instant::now();
    while dev.get(3, &format!("/v1/keys/{id}")).await.0 != 200 {
        assert!(start.elapsed() < Duration::from_secs(20), "node 3 never learnt the key");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // 3-of-4 with node 3, coordinated by node 3 itself (every other node
    // accepts its proposals now), signed by sets that include it.
    let (s, v) = dev
        .post(3, &reshare, &json!({"parties": [0, 1, 2, 3], "threshold": 3}))
        .await;
    assert_eq!(s, 200, "{v}\n{}", dev.logs());
    assert_eq!(
        (v["epoch"].as_u64(), v["public_key"].clone()),
        (Some(1), key["public_key"].clone())
    );
    let with3 = sign(&dev, 3, &key, b"node 3 signs").await;
    assert!(with3.contains(&3) && with3.len() == 3, "{with3:?}");

    // Retire node 0: reshare to 1, 2, 3; node 0 keeps no share.
    let (s, v) = dev
        .post(1, &reshare, &json!({"parties": [1, 2, 3], "threshold": 2}))
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["parties"], json!([1, 2, 3]));
    let store0 = common::open_store(&tmp.path().join("node-0")).await;
    assert!(store0.store.get_share(&id, 0, 2).await.unwrap().is_none());
    drop(store0);
    assert!(sign(&dev, 2, &key, b"without node 0").await.iter().all(|&n| n != 0));

    // Take node 0 out of the others' [[nodes]]. Merely deleting its entry
    // is refused (a node leaves only as a tombstone); moving it to
    // [[retired_nodes]] is accepted: after SIGHUP they refuse its calls,
    // and the key signs on through them.
    let rewrite = |change: &dyn Fn(&mut sigil_node::NodeConfig)| {
        for i in 1..4 {
            let path = dev.config_path(i);
            let mut cfg: sigil_node::NodeConfig = toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            change(&mut cfg);
            std::fs::write(&path, toml::to_string_pretty(&cfg).unwrap()).unwrap();
        }
    };
    rewrite(&|cfg| cfg.nodes.retain(|n| n.id != 0));
    dev.hangup();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(members_seen(&dev, 1).await, 4, "a bare removal is refused");
    let zero = ids["0"].as_str().unwrap().to_string();
    rewrite(&|cfg| {
        cfg.retired_nodes.push(sigil_node::config::RetiredNode {
            id: 0,
            identity_key: zero.clone(),
        })
    });
    dev.hangup();
    until_members(&dev, &[1, 2, 3], 3).await;
    let (s, v) = dev
        .post(0, &format!("/v1/keys/{id}/sign"), &json!({"message": "00"}))
        .await;
    assert_ne!(s, 200, "a removed node cannot make the others sign: {v}");
    let signers = sign(&dev, 3, &key, b"after removal").await;
    assert_eq!(signers.len(), 2);
    let mut after = 0;
    let mut reloads = Vec::new();
    loop {
        let (s, v) = dev.get(1, &format!("/v1/audit?after={after}&limit=1000")).await;
        assert_eq!(s, 200, "{v}");
        let records = v["records"].as_array().unwrap().clone();
        let Some(last) = records.last() else { break };
        after = last["seq"].as_u64().unwrap();
        reloads.extend(records.into_iter().filter(|r| r["operation"] == "reload_members"));
    }
    let outcomes: Vec<&str> = reloads.iter().map(|r| r["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes.len(), 3, "every reload is audited: {outcomes:?}");
    assert_eq!(outcomes[0], "ok:added=[3],removed=[]");
    assert!(
        outcomes[1].starts_with("refused:") && outcomes[1].contains("retired_nodes"),
        "{outcomes:?}"
    );
    assert_eq!(outcomes[2], "ok:added=[],removed=[0]");
}
