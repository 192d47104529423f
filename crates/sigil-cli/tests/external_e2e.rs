//! External parties end to end: real `sigil node` processes on loopback,
//! the `sigil-client` party in this test process, talking through the
//! REST relay and gRPC. Keys 2-of-2 (one node and the client) and 2-of-3
//! (two nodes and the client) for `frost-ed25519`, `frost-secp256k1-tr`
//! and `ecdsa-secp256k1` (with a BIP-32 child), signatures checked with
//! `ed25519-dalek`, `k256`'s BIP-340 verifier and `k256` ECDSA; then
//! every relay refusal, a silent party and what the nodes keep.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use common::Cluster;
use ed25519_dalek::VerifyingKey;
use serde_json::{json, Value};
use sigil_client::external::{self, KeygenArgs};
use sigil_client::keyfile::Unlock;
use sigil_crypto::relay::{RelayMessage, SessionSecret};
use zeroize::Zeroizing;

/// The external party's client: `alice` (P-256 key, roles create and read).
const PARTY: &str = "alice";

fn client(c: &Cluster, node: u16) -> sigil_client::Client {
    let key = c.dir.path().join(format!("clients/{PARTY}.key"));
    let tokens = sigil_client::Tokens::load(PARTY, &key, common::CLUSTER_ID).unwrap();
    sigil_client::Client::with_url(&c.url(node), tokens)
}

fn identities(c: &Cluster) -> HashMap<u16, VerifyingKey> {
    let text = std::fs::read_to_string(c.dir.path().join("certs/identities.json")).unwrap();
    sigil_client::party::parse_identities(&text).unwrap()
}

fn unlock() -> Unlock {
    Unlock::Passphrase(Zeroizing::new("correct horse battery staple".into()))
}

/// Checks `sig` over `msg` with the scheme's ordinary single-key verifier
/// (not Sigil's code).
fn verify_independently(scheme: &str, public_key: &str, msg: &[u8], sig: &str) {
    let pk = hex::decode(public_key).unwrap();
    let sig = hex::decode(sig).unwrap();
    match scheme {
        "frost-ed25519" => {
            let vk = VerifyingKey::from_bytes(&pk.try_into().unwrap()).unwrap();
            let sig = ed25519_dalek::Signature::from_slice(&sig).unwrap();
            vk.verify_strict(msg, &sig).expect("Ed25519 (RFC 8032, strict)");
        }
        "frost-secp256k1-tr" => {
            let vk = k256::schnorr::VerifyingKey::from_bytes(&pk).unwrap();
            let sig = k256::schnorr::Signature::try_from(sig.as_slice()).unwrap();
            vk.verify_raw(msg, &sig).expect("BIP-340");
        }
        other => panic!("no verifier for {other}"),
    }
}

async fn keygen(c: &Cluster, via: u16, scheme: &str, nodes: &[u16], t: u16, file: &Path, require: bool) -> Value {
    external::keygen(
        &client(c, via),
        &identities(c),
        KeygenArgs {
            scheme: scheme.parse().unwrap(),
            threshold: t,
            parties: Some(nodes.to_vec()),
            label: Some("external".into()),
            require_external: require,
            key_file: file,
            unlock: &unlock(),
            primes: None,
        },
    )
    .await
    .unwrap()
}

async fn party_sign(c: &Cluster, via: u16, file: &Path, msg: &[u8]) -> Value {
    external::sign(&client(c, via), &identities(c), file, &unlock(), msg, &[])
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn external_party_keygen_and_sign_2of2_and_2of3() {
    let c = Cluster::with_config(3, &|_| {});
    for i in 0..3 {
        c.wait_healthy(i).await;
    }
    let files = tempfile::tempdir().unwrap();
    for scheme in ["frost-ed25519", "frost-secp256k1-tr"] {
        // 2-of-2: node 0 and the client.
        let f = files.path().join(format!("{scheme}-2of2.json"));
        let key = keygen(&c, 0, scheme, &[0], 2, &f, false).await;
        assert_eq!(key["parties"], json!([0, 65535]));
        assert_eq!(key["policy"]["external"], json!([PARTY]));
        let id = key["key_id"].as_str().unwrap();
        let sig = party_sign(&c, 0, &f, b"two of two").await;
        assert_eq!(sig["signers"], json!([0, 65535]));
        verify_independently(
            scheme,
            key["public_key"].as_str().unwrap(),
            b"two of two",
            sig["signature"].as_str().unwrap(),
        );
        // The server nodes alone cannot sign it.
        let (s, v) = c
            .api_as(
                PARTY,
                0,
                "POST",
                &format!("/v1/keys/{id}/sign"),
                json!({"message": "00"}),
            )
            .await;
        assert_eq!(s, 403, "nodes alone: {v}");
        // Nor does a node that holds no share relay it.
        let e = external::sign(&client(&c, 1), &identities(&c), &f, &unlock(), b"x", &[]).await;
        assert!(
            e.is_err_and(|e| e.to_string().contains("404")),
            "node 1 keeps no such key"
        );

        // 2-of-3: nodes 0 and 1 and the client; the client signs through
        // either node, and the two nodes may sign alone (no requirement).
        let f = files.path().join(format!("{scheme}-2of3.json"));
        let key = keygen(&c, 1, scheme, &[0, 1], 2, &f, false).await;
        assert_eq!(key["parties"], json!([0, 1, 65535]));
        let pk = key["public_key"].as_str().unwrap().to_string();
        for via in [0, 1] {
            let sig = party_sign(&c, via, &f, b"two of three").await;
            assert_eq!(sig["signers"], json!([via, 65535]));
            verify_independently(scheme, &pk, b"two of three", sig["signature"].as_str().unwrap());
        }
        let id = key["key_id"].as_str().unwrap();
        let (s, v) = c
            .api_as(
                PARTY,
                1,
                "POST",
                &format!("/v1/keys/{id}/sign"),
                json!({"message": "6e6f646573"}),
            )
            .await;
        assert_eq!(s, 200, "nodes only: {v}");
        // Only the node parties keep a key with an external party (its
        // record carries no word of the client's), so one node cannot
        // plant such a record on the others.
        let (s, _) = c.api_as(PARTY, 2, "GET", &format!("/v1/keys/{id}"), json!(null)).await;
        assert_eq!(s, 404, "node 2 is no party");
        verify_independently(scheme, &pk, b"nodes", v["signature"].as_str().unwrap());
        reshare_away_from_the_party(&c, id, &pk, scheme, &f).await;
    }

    // A key whose policy requires the party on every signature.
    let f = files.path().join("required.json");
    let key = keygen(&c, 0, "frost-ed25519", &[0, 1], 2, &f, true).await;
    let id = key["key_id"].as_str().unwrap();
    let (s, v) = c
        .api_as(
            PARTY,
            0,
            "POST",
            &format!("/v1/keys/{id}/sign"),
            json!({"message": "00"}),
        )
        .await;
    assert_eq!(s, 403, "the policy requires the external party: {v}");
    let sig = party_sign(&c, 1, &f, b"with me").await;
    verify_independently(
        "frost-ed25519",
        key["public_key"].as_str().unwrap(),
        b"with me",
        sig["signature"].as_str().unwrap(),
    );

    // A user share: node 0 runs the party for the DKG only and answers
    // with its share sealed to the caller's recipient key.
    let recipient = SessionSecret::generate(&mut rand::rngs::OsRng);
    let body = json!({"scheme": "frost-ed25519", "threshold": 2, "parties": [0],
        "user_share": {"recipient_public_key": hex::encode(recipient.public_key())}});
    let (s, key) = c.api_as(PARTY, 0, "POST", "/v1/keys", body).await;
    assert_eq!(s, 201, "{key}");
    assert_eq!(
        (&key["parties"], &key["policy"]["external"]),
        (&json!([0, 65535]), &json!([PARTY]))
    );
    let shared = files.path().join("user.json");
    let other = SessionSecret::generate(&mut rand::rngs::OsRng);
    assert!(
        external::import_user_share(&key, &other, &shared, &unlock()).is_err(),
        "another recipient"
    );
    external::import_user_share(&key, &recipient, &shared, &unlock()).unwrap();
    let sig = party_sign(&c, 0, &shared, b"user share").await;
    verify_independently(
        "frost-ed25519",
        key["public_key"].as_str().unwrap(),
        b"user share",
        sig["signature"].as_str().unwrap(),
    );
    let (s, v) = c
        .api_as(
            PARTY,
            0,
            "POST",
            &format!("/v1/keys/{}/sign", key["key_id"].as_str().unwrap()),
            json!({"message": "00"}),
        )
        .await;
    assert_eq!(s, 403, "the node alone, although it saw the share once: {v}");
    let both = json!({"scheme": "frost-ed25519", "threshold": 2, "parties": [0],
        "external_parties": [{"client": PARTY}], "party_keys": raw_party().keys,
        "user_share": {"recipient_public_key": hex::encode(recipient.public_key())}});
    let (s, v) = c.api_as(PARTY, 0, "POST", "/v1/keys", both).await;
    assert_eq!(s, 400, "user_share with external_parties: {v}");

    // The share file opens only with its passphrase.
    let wrong = Unlock::Passphrase(Zeroizing::new("wrong passphrase".into()));
    assert!(external::sign(&client(&c, 0), &identities(&c), &f, &wrong, b"x", &[])
        .await
        .is_err());
    // Keys with an external party are not reshared (yet).
    let (s, v) = c
        .api_as(PARTY, 0, "POST", &format!("/v1/keys/{id}/refresh"), json!({}))
        .await;
    assert!(s == 400 || s == 403, "refresh: {s} {v}");
}

/// A client that lost its share file of 2-of-3 key `id` has the two nodes
/// reshare the key away from it (it deals nothing): the same public key,
/// a committee of nodes, a policy without the party; its old share no
/// longer signs. Refresh, or a committee with the party, is refused.
async fn reshare_away_from_the_party(c: &Cluster, id: &str, pk: &str, scheme: &str, share: &Path) {
    let path = format!("/v1/keys/{id}/refresh");
    let (s, v) = c.api_as(PARTY, 0, "POST", &path, json!({})).await;
    assert_eq!(s, 400, "refresh with the party: {v}");
    let path = format!("/v1/keys/{id}/reshare");
    let (s, v) = c
        .api_as(PARTY, 1, "POST", &path, json!({"parties": [0, 1, 2], "threshold": 2}))
        .await;
    assert_eq!(s, 200, "reshare away: {v}");
    assert_eq!((&v["epoch"], &v["parties"]), (&json!(1), &json!([0, 1, 2])), "{v}");
    assert_eq!(v["public_key"].as_str(), Some(pk));
    assert!(v["policy"].get("external").is_none(), "{v}");
    let body = json!({"message": "6e6f646573"});
    let sign = format!("/v1/keys/{id}/sign");
    let (s, v) = c.api_as(PARTY, 2, "POST", &sign, body).await;
    assert_eq!(s, 200, "the new committee signs: {v}");
    verify_independently(scheme, pk, b"nodes", v["signature"].as_str().unwrap());
    let old = external::sign(&client(c, 0), &identities(c), share, &unlock(), b"x", &[]).await;
    assert!(old.is_err(), "the old share is of no use");
}

/// A party key pair and the `party_keys` of a request.
struct RawParty {
    signing: ed25519_dalek::SigningKey,
    _secret: SessionSecret,
    keys: Value,
}

fn raw_party() -> RawParty {
    let signing = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
    let secret = SessionSecret::generate(&mut rand::rngs::OsRng);
    let keys = json!({
        "verifying_key": hex::encode(signing.verifying_key().to_bytes()),
        "hpke_public_key": hex::encode(secret.public_key()),
    });
    RawParty {
        signing,
        _secret: secret,
        keys,
    }
}

async fn submit(c: &Cluster, id: &str, node: u16, sid: &str, m: &RelayMessage) -> (u16, Value) {
    c.api_as(
        id,
        node,
        "POST",
        &format!("/v1/sessions/{sid}/messages"),
        serde_json::to_value(m).unwrap(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn relay_refuses_what_it_must_and_a_silent_party_fails_the_session() {
    let c = Cluster::with_config(3, &|cfg| cfg.external_session_timeout_ms = 3_000);
    for i in 0..3 {
        c.wait_healthy(i).await;
    }
    // Requests that never start a session.
    let p = raw_party();
    let bad = [
        (
            json!({"scheme": "frost-ed25519", "threshold": 2, "parties": [0], "external_parties": [{"client": "bob"}], "party_keys": p.keys}),
            "another client's party",
        ),
        (
            json!({"scheme": "frost-ed25519", "threshold": 2, "parties": [0], "external_parties": [{"client": PARTY}]}),
            "no party keys",
        ),
        (
            json!({"scheme": "frost-ed25519", "threshold": 2, "parties": [1], "external_parties": [{"client": PARTY}], "party_keys": p.keys}),
            "the relay is no party",
        ),
        (
            json!({"scheme": "paillier", "threshold": 2, "bits": 2048, "parties": [0], "external_parties": [{"client": PARTY}], "party_keys": p.keys}),
            "not for Paillier",
        ),
        (
            json!({"scheme": "frost-ed25519", "threshold": 2, "parties": [0], "external_parties": [{"client": PARTY}, {"client": PARTY}], "party_keys": p.keys}),
            "two external parties",
        ),
        (
            json!({"scheme": "frost-ed25519", "threshold": 2, "parties": [0], "external_parties": [{"client": PARTY}], "party_keys": {"verifying_key": "00", "hpke_public_key": "00"}}),
            "malformed keys",
        ),
        (
            json!({"scheme": "frost-ed25519", "threshold": 2, "parties": [0], "external_parties": [{"client": PARTY}], "party_keys": p.keys, "rotate": true}),
            "rotation",
        ),
    ];
    for (body, what) in bad {
        let (s, v) = c.api_as(PARTY, 0, "POST", "/v1/keys", body).await;
        assert_eq!(s, 400, "{what}: {v}");
    }

    // A session whose party misbehaves, then goes silent.
    let body = json!({"scheme": "frost-ed25519", "threshold": 2, "parties": [0, 1], "external_parties": [{"client": PARTY}], "party_keys": p.keys});
    let (s, view) = c.api_as(PARTY, 0, "POST", "/v1/keys", body).await;
    assert_eq!(s, 202, "{view}");
    let sid = view["session_id"].as_str().unwrap().to_string();
    let key_id = view["key_id"].as_str().unwrap().to_string();
    assert_eq!(view["parties"], json!([0, 1, 65535]));
    assert_eq!(view["external_index"], 2);
    let session_id: [u8; 32] = hex::decode(&sid).unwrap().try_into().unwrap();
    let msg = |round: u16, from: u16, to: Option<u16>, payload: &[u8], key: &ed25519_dalek::SigningKey| {
        RelayMessage::new(key, session_id, round, from, to, payload, None, &mut rand::rngs::OsRng).unwrap()
    };

    // Only the session's client sees it.
    let (s, _) = c
        .api_as("bob", 0, "GET", &format!("/v1/sessions/{sid}"), json!(null))
        .await;
    assert_eq!(s, 404, "another client");
    let (s, _) = c
        .api_as(PARTY, 1, "GET", &format!("/v1/sessions/{sid}"), json!(null))
        .await;
    assert_eq!(s, 404, "another node relays no such session");
    // A relay message may be large (an aux-info message is about 200 KB),
    // other bodies stay within max_body_bytes (64 KiB here), and a large
    // body is read only with a token that checks out for it. (A client
    // per upload: a refused one may leave its connection unusable.)
    let post = |path: String, body: Vec<u8>| {
        reqwest::Client::new()
            .post(format!("{}{path}", c.url(0)))
            .header("authorization", "Bearer not.a.token")
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let big = vec![b' '; 200 * 1024];
    let r = post(format!("/v1/sessions/{sid}/messages"), big.clone()).await.unwrap();
    assert_eq!(r.status(), 401, "a large relay body without a valid token");
    let r = post("/v1/keys".into(), big).await.unwrap();
    assert_eq!(r.status(), 413, "a large body elsewhere");
    let huge = vec![b' '; sigil_node::front::RELAY_BODY_BYTES + 1];
    let r = post(format!("/v1/sessions/{sid}/messages"), huge).await.unwrap();
    assert_eq!(r.status(), 413, "over the relay limit");

    // The nodes' hellos are queued for the party.
    let (s, page) = c
        .api_as(
            PARTY,
            0,
            "GET",
            &format!("/v1/sessions/{sid}/messages?after=0&wait_ms=2000"),
            json!(null),
        )
        .await;
    assert_eq!(s, 200, "{page}");
    assert!(!page["messages"].as_array().unwrap().is_empty());

    let refusals = [
        (msg(0, 0, None, b"x", &p.signing), 403, "not_a_member", "a node's index"),
        (msg(0, 2, Some(2), b"x", &p.signing), 403, "not_a_member", "to itself"),
        (
            msg(1, 2, None, b"x", &p.signing),
            409,
            "unexpected_round",
            "round 1 is point to point",
        ),
        (
            msg(7, 2, Some(0), b"x", &p.signing),
            409,
            "unexpected_round",
            "no round 7",
        ),
        (
            msg(
                0,
                2,
                None,
                b"x",
                &ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng),
            ),
            400,
            "unauthentic",
            "another key's signature",
        ),
    ];
    for (m, status, code, what) in refusals {
        let (s, v) = submit(&c, PARTY, 0, &sid, &m).await;
        assert_eq!((s, v["error"]["code"].as_str()), (status, Some(code)), "{what}: {v}");
    }
    let (s, v) = submit(&c, "bob", 0, &sid, &msg(0, 2, None, b"x", &p.signing)).await;
    assert_eq!(s, 404, "another client's submission: {v}");
    let mut other = msg(0, 2, None, b"x", &p.signing);
    other.session_id = [9; 32];
    let (s, _) = submit(&c, PARTY, 0, &sid, &other).await;
    assert_eq!(s, 400, "a message for another session");
    // A well-signed message the nodes cannot decode: relayed once, the
    // same again is idempotent, another in its slot a conflict.
    let garbage = msg(0, 2, None, b"not a protocol message", &p.signing);
    let (s, v) = submit(&c, PARTY, 0, &sid, &garbage).await;
    assert_eq!((s, &v["duplicate"]), (202, &json!(false)), "{v}");
    let (s, v) = submit(&c, PARTY, 0, &sid, &garbage).await;
    assert_eq!((s, &v["duplicate"]), (202, &json!(true)), "{v}");
    let (s, v) = submit(&c, PARTY, 0, &sid, &msg(0, 2, None, b"another", &p.signing)).await;
    assert_eq!((s, v["error"]["code"].as_str()), (409, Some("conflict")), "{v}");

    // The party never sends a valid round-0 message: the session fails at
    // its deadline naming it, and no node keeps anything of the key.
    let view = loop {
        let (_, v) = c
            .api_as(PARTY, 0, "GET", &format!("/v1/sessions/{sid}"), json!(null))
            .await;
        if v["state"] != "running" {
            break v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    failed_naming_the_party_with_nothing_kept(&c, &view, &key_id).await;
    // Replayed after the end.
    let (s, v) = submit(&c, PARTY, 0, &sid, &msg(1, 2, Some(0), b"late", &p.signing)).await;
    assert_eq!((s, v["error"]["code"].as_str()), (410, Some("ended")), "{v}");
    // Every refusal is audited at the relay.
    let (_, audit) = c.api(0, "GET", "/v1/audit?limit=1000", json!(null)).await;
    let refused = audit["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["operation"] == "relay_message" && r["outcome"].as_str().unwrap_or("").starts_with("refused:"))
        .count();
    assert!(refused >= 7, "relay refusals audited: {refused}");

    a_key_its_party_does_not_confirm_is_not_committed(&c).await;
}

/// The party runs its whole DKG but does not confirm the record: a
/// confirmation under another record or to a node is refused, and at the
/// deadline the session fails naming the party, with nothing kept.
async fn a_key_its_party_does_not_confirm_is_not_committed(c: &Cluster) {
    use sigil_client::external::Door;
    use sigil_client::party::{protocols, PartySession, SessionKeys};
    let keys = SessionKeys::generate();
    let body = serde_json::to_vec(&json!({"scheme": "frost-ed25519", "threshold": 2, "parties": [0],
        "external_parties": [{"client": PARTY}], "party_keys": keys.public_json()}))
    .unwrap();
    let door = client(c, 0);
    let view = door.start_dkg(body.clone()).await.unwrap();
    let sid = view["session_id"].as_str().unwrap().to_string();
    let key_id = view["key_id"].as_str().unwrap().to_string();
    let session_id: [u8; 32] = hex::decode(&sid).unwrap().try_into().unwrap();
    let parties = vec![0, sigil_crypto::relay::EXTERNAL_PARTY];
    let eid = sigil_crypto::execution_id(b"dkg", &key_id, &parties, 0, &session_id, &body);
    let session = PartySession::new(session_id, parties, &identities(c), keys).unwrap();
    let relay = door.relay(&sid, true);
    let scheme = sigil_crypto::Scheme::FrostEd25519;
    let key = protocols::keygen(&session, &relay, scheme, &eid, 2, None)
        .await
        .unwrap();
    let view = door.session(&sid, true).await.unwrap();
    assert_eq!(view["state"], "confirming", "{view}");
    assert_eq!(
        view["record"]["key"]["public_key_package"],
        json!(hex::encode(&key.package))
    );
    let (s, v) = submit(c, PARTY, 0, &sid, &session.confirmation(b"another record").unwrap()).await;
    assert_eq!((s, v["error"]["code"].as_str()), (400, Some("unauthentic")), "{v}");
    let mut to_node = session.confirmation(b"x").unwrap();
    to_node.to = Some(0);
    let (s, v) = submit(c, PARTY, 0, &sid, &to_node).await;
    assert!(s == 400 || s == 409, "a confirmation to a node: {v}");
    let view = loop {
        let v = door.session(&sid, true).await.unwrap();
        if v["state"] == "failed" || v["state"] == "succeeded" {
            break v;
        }
    };
    failed_naming_the_party_with_nothing_kept(c, &view, &key_id).await;
}

/// `view` (of a relayed key generation) failed naming the external party
/// (65535), and none of the three nodes keeps anything of key `key_id`.
async fn failed_naming_the_party_with_nothing_kept(c: &Cluster, view: &Value, key_id: &str) {
    assert_eq!(view["state"], "failed", "{view}");
    assert!(
        view["error"]["nodes"].as_array().unwrap().contains(&json!(65535)),
        "names the external party: {view}"
    );
    for i in 0..3 {
        let (s, v) = c
            .api_as(PARTY, i, "GET", &format!("/v1/keys/{key_id}"), json!(null))
            .await;
        assert_eq!(s, 404, "node {i} keeps nothing of a failed key generation: {v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn grpc_signer_serves_the_external_party_health_and_reflection() {
    let ports: Vec<u16> = (0..2).map(|_| common::free_port()).collect();
    let c = Cluster::with_config(2, &|cfg| {
        cfg.listen_grpc = Some(
            format!("127.0.0.1:{}", ports[usize::from(cfg.node_id)])
                .parse()
                .unwrap(),
        );
    });
    for i in 0..2 {
        c.wait_healthy(i).await;
    }
    let url = |i: usize| format!("http://127.0.0.1:{}", ports[i]);
    let key = c.dir.path().join(format!("clients/{PARTY}.key"));
    let tokens = sigil_client::Tokens::load(PARTY, &key, common::CLUSTER_ID).unwrap();
    let g = sigil_client::GrpcClient::connect(&url(0), None, tokens).unwrap();
    assert_eq!(g.ping().await.unwrap().0, 0);

    // Health and reflection, as grpcurl uses them.
    let ch = tonic::transport::Endpoint::from_shared(url(1))
        .unwrap()
        .connect()
        .await
        .unwrap();
    common::assert_served_with_health_and_reflection(ch.clone(), "sigil.v1.Signer").await;

    // 2-of-2 with node 0, over gRPC end to end.
    let files = tempfile::tempdir().unwrap();
    let f = files.path().join("grpc.json");
    let key = external::keygen(
        &g,
        &identities(&c),
        KeygenArgs {
            scheme: "frost-ed25519".parse().unwrap(),
            threshold: 2,
            parties: Some(vec![0]),
            label: None,
            require_external: false,
            key_file: &f,
            unlock: &unlock(),
            primes: None,
        },
    )
    .await
    .unwrap();
    let sig = external::sign(&g, &identities(&c), &f, &unlock(), b"over grpc", &[])
        .await
        .unwrap();
    verify_independently(
        "frost-ed25519",
        key["public_key"].as_str().unwrap(),
        b"over grpc",
        sig["signature"].as_str().unwrap(),
    );
    // The REST and gRPC doors take the same share: sign through REST too.
    party_sign(&c, 0, &f, b"over rest").await;

    // Refusals, with clear statuses.
    let mut raw = sigil_proto::signer::signer_client::SignerClient::new(ch);
    let e = raw.ping(sigil_proto::signer::PingRequest {}).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "no token: {e:?}");
    let e = g.start_sign("../keys", b"{}".to_vec()).await.unwrap_err();
    let status = e.downcast_ref::<tonic::Status>().unwrap();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    let forged = RelayMessage::new(
        &ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng),
        [5; 32],
        0,
        1,
        None,
        b"x",
        None,
        &mut rand::rngs::OsRng,
    )
    .unwrap();
    let e = g.submit(&forged).await.unwrap_err();
    let status = e.downcast_ref::<tonic::Status>().unwrap();
    assert_eq!(status.code(), tonic::Code::NotFound, "an unknown session: {status:?}");
    let e = g.status(&hex::encode([5u8; 32]), true, 0).await.unwrap_err();
    assert_eq!(e.downcast_ref::<tonic::Status>().unwrap().code(), tonic::Code::NotFound);
    // Nodes-only signing of a 2-of-2 key is refused through gRPC too.
    let id = key["key_id"].as_str().unwrap();
    let e = g.start_sign(id, br#"{"message":"00"}"#.to_vec()).await.unwrap_err();
    assert_eq!(
        e.downcast_ref::<tonic::Status>().unwrap().code(),
        tonic::Code::PermissionDenied
    );
}

/// `sig` (64 bytes hex) over `digest` verifies under the SEC1 key `pk`
/// with `k256` ECDSA (prehash, low `s`), and `recovery_id` recovers `pk`.
fn verify_secp256k1(pk: &str, digest: &[u8], sig: &Value) {
    use k256::ecdsa::signature::hazmat::PrehashVerifier;
    let vk = k256::ecdsa::VerifyingKey::from_sec1_bytes(&hex::decode(pk).unwrap()).unwrap();
    let s = k256::ecdsa::Signature::from_slice(&hex::decode(sig["signature"].as_str().unwrap()).unwrap()).unwrap();
    assert!(s.normalize_s().is_none(), "low s");
    vk.verify_prehash(digest, &s).expect("ECDSA over the digest");
    let rid = k256::ecdsa::RecoveryId::from_byte(u8::try_from(sig["recovery_id"].as_u64().unwrap()).unwrap()).unwrap();
    assert_eq!(
        k256::ecdsa::VerifyingKey::recover_from_prehash(digest, &s, rid).unwrap(),
        vk
    );
}

/// CGGMP21 ECDSA with an external party: 2-of-2 (node 0 and the client)
/// over gRPC and 2-of-3 (nodes 0, 1 and the client) over REST on
/// secp256k1, and a P-256 user share. Each key makes its own aux info in its key generation (the
/// party's primes from a fixture, the nodes' from their seeds), so its
/// record pins the aux fingerprint. Signatures at the key and at a BIP-32
/// child verify with `k256`; the nodes alone cannot sign the 2-of-2 key.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ecdsa_external_party_2of2_over_grpc_and_2of3_with_a_bip32_child() {
    use sha2::Digest;
    let a = common::fixture_primes("primes-1536.txt");
    let b = common::fixture_primes("primes-1536-b.txt");
    let party_primes =
        |k: usize| sigil_crypto::ecdsa::primes_from(b[2 * k].parse().unwrap(), b[2 * k + 1].parse().unwrap()).unwrap();
    let ports: Vec<u16> = (0..2).map(|_| common::free_port()).collect();
    let c = Cluster::with_seeds_and_config(2, vec![a[0..4].to_vec(), a[4..6].to_vec()], &|cfg| {
        cfg.listen_grpc = Some(
            format!("127.0.0.1:{}", ports[usize::from(cfg.node_id)])
                .parse()
                .unwrap(),
        );
    });
    for i in 0..2 {
        c.wait_healthy(i).await;
    }
    let key = c.dir.path().join(format!("clients/{PARTY}.key"));
    let tokens = sigil_client::Tokens::load(PARTY, &key, common::CLUSTER_ID).unwrap();
    let g = sigil_client::GrpcClient::connect(&format!("http://127.0.0.1:{}", ports[0]), None, tokens).unwrap();
    let files = tempfile::tempdir().unwrap();
    fn args(nodes: Vec<u16>, file: &Path, primes: sigil_crypto::ecdsa::PregeneratedPrimes) -> KeygenArgs<'_> {
        KeygenArgs {
            scheme: "ecdsa-secp256k1".parse().unwrap(),
            threshold: 2,
            parties: Some(nodes),
            label: None,
            require_external: false,
            key_file: file,
            unlock: &UNLOCK,
            primes: Some(primes),
        }
    }
    static UNLOCK: std::sync::LazyLock<Unlock> = std::sync::LazyLock::new(unlock);

    // 2-of-2 over gRPC.
    let f2 = files.path().join("ecdsa-2of2.json");
    let key = external::keygen(&g, &identities(&c), args(vec![0], &f2, party_primes(0)))
        .await
        .unwrap();
    assert_eq!(key["parties"], json!([0, 65535]));
    let package: Value =
        serde_json::from_slice(&hex::decode(key["public_key_package"].as_str().unwrap()).unwrap()).unwrap();
    assert_eq!(package["aux_fingerprint"].as_str().map(str::len), Some(64), "{package}");
    let pk = key["public_key"].as_str().unwrap();
    let digest = sha2::Sha256::digest(b"two of two ecdsa").to_vec();
    let sig = external::sign(&g, &identities(&c), &f2, &UNLOCK, &digest, &[])
        .await
        .unwrap();
    assert_eq!(sig["signers"], json!([0, 65535]));
    verify_secp256k1(pk, &digest, &sig);
    let key2_id = key["key_id"].as_str().unwrap().to_string();
    let (s, v) = c
        .api_as(
            PARTY,
            0,
            "POST",
            &format!("/v1/keys/{key2_id}/sign"),
            json!({"message": hex::encode(&digest)}),
        )
        .await;
    assert_eq!(s, 403, "nodes alone: {v}");

    // 2-of-3 over REST, at the key and at the child m/0/7 (the node's view
    // of the child key, derived from the attested chain code).
    let f3 = files.path().join("ecdsa-2of3.json");
    let key = external::keygen(&client(&c, 1), &identities(&c), args(vec![0, 1], &f3, party_primes(1)))
        .await
        .unwrap();
    assert_eq!(key["parties"], json!([0, 1, 65535]));
    let id = key["key_id"].as_str().unwrap();
    let (s, child) = c
        .api_as(
            PARTY,
            0,
            "GET",
            &format!("/v1/keys/{id}?derivation_path=m/0/7"),
            json!(null),
        )
        .await;
    assert_eq!(s, 200, "{child}");
    let digest = sha2::Sha256::digest(b"two of three ecdsa").to_vec();
    let sig = external::sign(&client(&c, 0), &identities(&c), &f3, &UNLOCK, &digest, &[0, 7])
        .await
        .unwrap();
    verify_secp256k1(child["public_key"].as_str().unwrap(), &digest, &sig);
    let sig = external::sign(&client(&c, 1), &identities(&c), &f3, &UNLOCK, &digest, &[])
        .await
        .unwrap();
    assert_eq!(sig["signers"], json!([1, 65535]));
    verify_secp256k1(key["public_key"].as_str().unwrap(), &digest, &sig);
    // Both nodes may sign without the party (no requirement), in full:
    // there are no presignatures with an external party.
    let (s, v) = c
        .api_as(
            PARTY,
            1,
            "POST",
            &format!("/v1/keys/{id}/sign"),
            json!({"message": hex::encode(&digest), "derivation_path": "m/0/7"}),
        )
        .await;
    assert_eq!(s, 200, "nodes only: {v}");
    verify_secp256k1(child["public_key"].as_str().unwrap(), &digest, &v);
    // Reshared away from the party to nodes 0 and 1 (their set's aux info
    // is made first): the same key and the same child.
    let path = format!("/v1/keys/{id}/reshare");
    let (s, v) = c
        .api_as(PARTY, 0, "POST", &path, json!({"parties": [0, 1], "threshold": 2}))
        .await;
    assert_eq!(s, 200, "reshare away: {v}");
    assert_eq!((&v["parties"], &v["public_key"]), (&json!([0, 1]), &key["public_key"]));
    let body = json!({"message": hex::encode(&digest), "derivation_path": "m/0/7"});
    let (s, v) = c.api_as(PARTY, 1, "POST", &format!("/v1/keys/{id}/sign"), body).await;
    assert_eq!(s, 200, "the new committee signs: {v}");
    verify_secp256k1(child["public_key"].as_str().unwrap(), &digest, &v);
    let (s, v) = c
        .api_as(
            PARTY,
            0,
            "POST",
            &format!("/v1/keys/{}/reshare", key2_id),
            json!({"parties": [0, 1]}),
        )
        .await;
    assert_eq!(s, 400, "a 2-of-2 key cannot lose its party: {v}");
    // A user share on the other curve: node 0 runs the party (with primes
    // of its own) and seals the party's complete share to the recipient;
    // it signs through sigil-client, and its aux info is the key's own.
    let recipient = SessionSecret::generate(&mut rand::rngs::OsRng);
    let body = json!({"scheme": "ecdsa-p256", "threshold": 2, "parties": [0],
        "user_share": {"recipient_public_key": hex::encode(recipient.public_key())}});
    let (s, key) = c.api_as(PARTY, 0, "POST", "/v1/keys", body).await;
    assert_eq!(s, 201, "{key}");
    let shared = files.path().join("ecdsa-user.json");
    external::import_user_share(&key, &recipient, &shared, &UNLOCK).unwrap();
    let digest = sha2::Sha256::digest(b"user share ecdsa").to_vec();
    let sig = external::sign(&client(&c, 0), &identities(&c), &shared, &UNLOCK, &digest, &[])
        .await
        .unwrap();
    assert_eq!(sig["signers"], json!([0, 65535]));
    use p256::ecdsa::signature::hazmat::PrehashVerifier;
    let vk =
        p256::ecdsa::VerifyingKey::from_sec1_bytes(&hex::decode(key["public_key"].as_str().unwrap()).unwrap()).unwrap();
    let s = p256::ecdsa::Signature::from_slice(&hex::decode(sig["signature"].as_str().unwrap()).unwrap()).unwrap();
    vk.verify_prehash(&digest, &s).expect("P-256 ECDSA over the digest");
}
