//! Three nodes in one process over the in-process transport: key
//! generation and signing, the coordinator choosing another signer set
//! when a signer is cut off, a clear 503 when fewer than `t` remain, and a
//! peer's unauthorized proposal refused.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use sigil_crypto::Scheme;
use sigil_node::auth::{ClientEntry, ClientSigner, Role};
use sigil_node::config::{NodeConfig, NodeEntry};
use sigil_node::error::{ApiError, NodeError, SessionError};
use sigil_node::in_process::InProcessHub;
use sigil_node::operations::KeygenProgress;
use sigil_node::{KeygenRequest, Node, RequestAuth};
use sigil_proto::peer::session_proposal::Kind;
use sigil_proto::peer::{ClientAuthorization, SessionProposal, SignProposal};

const CLUSTER: &str = "in-process-test";

struct Cluster {
    hub: Arc<InProcessHub>,
    nodes: Vec<Arc<Node>>,
    /// Each node's identity key (to play a malicious node in tests).
    identities: Vec<ed25519_dalek::SigningKey>,
    client: ClientSigner,
    _dir: tempfile::TempDir,
}

/// Node `i`'s config: the fields a config file must have (the TLS and
/// identity files are never read in process), the rest defaults.
fn config(i: u16, n: u16, dir: &std::path::Path, ids: &[String], client_pk: &str) -> NodeConfig {
    let unused = dir.join("unused");
    let text = format!(
        r#"node_id = {i}
data_dir = "{data}"
listen_peer = "127.0.0.1:1"
cluster_id = "{CLUSTER}"
identity_key_file = "{unused}"
session_timeout_ms = 5000
nodes = []
[rotation]
min_interval_s = 1
[tls]
ca_cert = "{unused}"
cert = "{unused}"
key = "{unused}"
"#,
        data = dir.join(format!("node-{i}")).display(),
        unused = unused.display(),
    );
    let mut cfg: NodeConfig = toml::from_str(&text).unwrap();
    cfg.nodes = (0..n)
        .map(|j| NodeEntry {
            id: j,
            peer_addr: format!("in-process:{j}"),
            identity_key: ids[usize::from(j)].clone(),
        })
        .collect();
    cfg.clients = vec![ClientEntry {
        id: "alice".into(),
        public_key: client_pk.into(),
        roles: vec![Role::Create, Role::Read],
    }];
    cfg
}

async fn cluster(n: u16) -> Cluster {
    cluster_with(n, |_| {}).await
}

/// `n` nodes, each config changed by `tune` first.
async fn cluster_with(n: u16, tune: impl Fn(&mut NodeConfig)) -> Cluster {
    let dir = tempfile::tempdir().unwrap();
    let keys: Vec<ed25519_dalek::SigningKey> = (0..n)
        .map(|_| ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng))
        .collect();
    let ids: Vec<String> = keys.iter().map(|k| hex::encode(k.verifying_key().to_bytes())).collect();
    let (client_sk, client_pk) = sigil_node::auth::generate_client_key(false).unwrap();
    let hub = InProcessHub::new();
    let mut nodes = Vec::new();
    let identities = keys.clone();
    for (i, key) in (0..n).zip(keys) {
        let mut cfg = config(i, n, dir.path(), &ids, &client_pk);
        tune(&mut cfg);
        std::fs::create_dir_all(&cfg.data_dir).unwrap();
        let master = sigil_store::MasterKey::generate();
        let store = sigil_store::open_sqlite(&cfg.data_dir.join("node.db"), &master)
            .await
            .unwrap();
        let node = Node::new(cfg, store, hub.transport(i), key).await.unwrap();
        hub.attach(&node);
        nodes.push(node);
    }
    Cluster {
        hub,
        nodes,
        identities,
        client: ClientSigner::from_pem("alice", &client_sk).unwrap(),
        _dir: dir,
    }
}

impl Cluster {
    /// A checked request as the REST API would hand it to the node.
    fn auth(&self, method: &str, path: &str, body: &str) -> RequestAuth {
        let claims = self.client.claims(CLUSTER, method, path, Some(body.as_bytes()), 60);
        RequestAuth {
            client: claims.sub.clone(),
            jti: claims.jti.clone(),
            proto: ClientAuthorization {
                token: self.client.sign_claims(&claims).unwrap(),
                method: method.into(),
                path: path.into(),
                body: body.as_bytes().to_vec(),
            },
        }
    }

    async fn create_key(&self, door: usize, scheme: Scheme, t: u16) -> sigil_store::KeyRecord {
        self.create_key_bits(door, scheme, t, None).await
    }

    async fn create_key_bits(&self, door: usize, scheme: Scheme, t: u16, bits: Option<u32>) -> sigil_store::KeyRecord {
        let body = match bits {
            Some(b) => format!(r#"{{"scheme":"{}","threshold":{t},"bits":{b}}}"#, scheme.as_str()),
            None => format!(r#"{{"scheme":"{}","threshold":{t}}}"#, scheme.as_str()),
        };
        let auth = self.auth("POST", "/v1/keys", &body);
        let req = KeygenRequest {
            scheme,
            threshold: t,
            parties: None,
            label: None,
            bits,
            prime_threshold: None,
            policy: None,
            rotate: false,
            external_parties: Vec::new(),
            party_keys: None,
            user_share: None,
        };
        let node = &self.nodes[door];
        let plan = node.plan_keygen(req, auth).unwrap();
        node.run_keygen(plan, &KeygenProgress::default()).await.unwrap()
    }

    async fn sign(&self, door: usize, key_id: &str, message: &[u8]) -> Result<sigil_node::Signed, NodeError> {
        let path = format!("/v1/keys/{key_id}/sign");
        let body = format!(r#"{{"message":"{}"}}"#, hex::encode(message));
        let auth = self.auth("POST", &path, &body);
        self.nodes[door].sign(key_id, message.to_vec(), &[], &auth).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_in_one_process_create_and_sign() {
    let c = cluster(3).await;
    let key = c.create_key(0, Scheme::FrostEd25519, 2).await;
    assert_eq!(key.parties, vec![0, 1, 2]);
    for door in 0..3 {
        let key_here = c.nodes[door].active_key(&key.key_id).await.unwrap();
        assert_eq!(key_here.public_key, key.public_key, "node {door} has the key");
        let signed = c.sign(door, &key.key_id, b"hello").await.unwrap();
        assert_eq!(signed.signers.len(), 2);
        Scheme::FrostEd25519
            .verify(&key.public_key, b"hello", &signed.signature)
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_chooses_another_set_when_a_signer_is_cut_off() {
    let c = cluster(3).await;
    let key = c.create_key(0, Scheme::FrostSecp256k1Tr, 2).await;
    let first = c.sign(0, &key.key_id, b"before").await.unwrap();
    assert_eq!(first.signers[0], 0, "this node first");

    c.hub.cut_off(1, true);
    let signed = c.sign(0, &key.key_id, b"during").await.unwrap();
    assert_eq!(signed.signers, vec![0, 2], "node 1 is down: the other set signs");
    Scheme::FrostSecp256k1Tr
        .verify(&key.public_key, b"during", &signed.signature)
        .unwrap();
    // Node 1 is now drawn only when no other will do: the next
    // signatures go straight to 2.
    for k in 0..5u8 {
        let next = c.sign(0, &key.key_id, &[k]).await.unwrap();
        assert_eq!(next.signers, vec![0, 2]);
    }

    c.hub.cut_off(1, false);
    let from_1 = c.sign(1, &key.key_id, b"after").await.unwrap();
    assert_eq!(from_1.signers[0], 1, "node 1 is back and coordinates");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fewer_than_t_reachable_is_a_503_naming_them() {
    let c = cluster(3).await;
    let key = c.create_key(2, Scheme::FrostP256, 2).await;
    c.hub.cut_off(1, true);
    c.hub.cut_off(2, true);
    let e = c.sign(0, &key.key_id, b"nobody").await.unwrap_err();
    assert!(
        matches!(e, NodeError::Session(SessionError::Unavailable { .. })),
        "{e:?}"
    );
    let (status, body) = ApiError::from(e).detail();
    assert_eq!(status, 503, "{body:?}");
    let mut nodes = body.nodes.clone();
    nodes.sort_unstable();
    assert_eq!(nodes, vec![1, 2], "{body:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_proposal_without_a_client_request_is_refused() {
    let c = cluster(3).await;
    let key = c.create_key(0, Scheme::FrostEd25519, 2).await;
    // Node 1 asks node 0 to sign, on its own word.
    let p = SessionProposal {
        session_id: vec![7; 32],
        coordinator: 1,
        parties: vec![1, 0],
        deadline_ms: 2000,
        authorization: None,
        kind: Some(Kind::Sign(SignProposal {
            key_id: key.key_id.clone(),
            message: b"steal".to_vec(),
            epoch: 0,
            scheme: key.scheme.clone(),
            derivation_path: vec![],
            presignature_id: String::new(),
        })),
    };
    let e = c
        .hub
        .transport(1)
        .run_session(0, p.clone(), Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(matches!(e, SessionError::Refused { node: 0, .. }), "{e:?}");
    // Claiming to be another coordinator is refused too.
    let mut forged = p;
    forged.coordinator = 2;
    let e = c
        .hub
        .transport(1)
        .run_session(0, forged, Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(matches!(e, SessionError::Invalid(_)), "{e:?}");
}

/// The same seed file on every node: every party would hold the same
/// Paillier modulus (any one could recover the ECDSA key), so the aux info
/// is refused and no key is made. A seed file read twice adds nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_seed_primes_on_every_node_are_refused() {
    let c = cluster(3).await;
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../sigil-cli/tests/fixtures/primes-1536.txt");
    let two: Vec<String> = std::fs::read_to_string(fixture)
        .unwrap()
        .lines()
        .take(2)
        .map(str::to_string)
        .collect();
    let seed = c._dir.path().join("shared-primes.txt");
    // The second prime listed twice: imported once.
    std::fs::write(&seed, format!("{}\n{}\n{}\n", two[0], two[1], two[1])).unwrap();
    for node in &c.nodes {
        assert_eq!(sigil_node::ecdsa::seed_primes(node, &seed).await.unwrap(), 2);
        assert_eq!(
            sigil_node::ecdsa::seed_primes(node, &seed).await.unwrap(),
            0,
            "never twice"
        );
    }
    let body = r#"{"scheme":"ecdsa-secp256k1","threshold":2}"#;
    let auth = c.auth("POST", "/v1/keys", body);
    let req = KeygenRequest {
        scheme: Scheme::EcdsaSecp256k1,
        threshold: 2,
        parties: None,
        label: None,
        bits: None,
        prime_threshold: None,
        policy: None,
        rotate: false,
        external_parties: Vec::new(),
        party_keys: None,
        user_share: None,
    };
    let plan = c.nodes[0].plan_keygen(req, auth).unwrap();
    let e = c.nodes[0]
        .run_keygen(plan, &KeygenProgress::default())
        .await
        .unwrap_err();
    match e {
        NodeError::Session(SessionError::Protocol { culprits, reason }) => {
            assert!(reason.contains("share a prime factor"), "{reason}");
            assert_eq!(culprits.len(), 2, "{culprits:?}");
        }
        other => panic!("{other:?}"),
    }
}

/// A peer that proposes sessions and never takes part holds at most
/// `sessions_per_peer` of them open on a node: the next is refused at
/// once (busy, gRPC `ResourceExhausted`), and clients still sign through
/// that node with the other peers meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_flooding_proposals_is_busy_while_clients_still_sign() {
    let c = cluster_with(3, |cfg| cfg.limits.sessions_per_peer = 2).await;
    let key = c.create_key(0, Scheme::FrostEd25519, 2).await;
    let path = format!("/v1/keys/{}/sign", key.key_id);
    let proposal = |k: u8| {
        let message = format!("flood {k}").into_bytes();
        let body = format!(r#"{{"message":"{}"}}"#, hex::encode(&message));
        SessionProposal {
            session_id: vec![k; 32],
            coordinator: 1,
            parties: vec![1, 0],
            deadline_ms: 3000,
            authorization: Some(c.auth("POST", &path, &body).proto),
            kind: Some(Kind::Sign(SignProposal {
                key_id: key.key_id.clone(),
                message,
                epoch: 0,
                scheme: key.scheme.clone(),
                derivation_path: vec![],
                presignature_id: String::new(),
            })),
        }
    };
    let flooder = c.hub.transport(1);
    let (p1, p2, p3) = (proposal(1), proposal(2), proposal(3));
    let (f1, f2) = (flooder.clone(), flooder.clone());
    let held = tokio::spawn(async move {
        tokio::join!(
            f1.run_session(0, p1, Duration::from_secs(10)),
            f2.run_session(0, p2, Duration::from_secs(10))
        )
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    let e = flooder.run_session(0, p3, Duration::from_secs(10)).await.unwrap_err();
    assert!(matches!(e, SessionError::Busy { node: 0, .. }), "{e:?}");
    assert!(started.elapsed() < Duration::from_secs(1), "refused at once");
    // Meanwhile clients sign through node 2, node 0 among the co-signers.
    let mut with_0 = 0;
    for k in 0..20u8 {
        let signed = c.sign(2, &key.key_id, &[k]).await.unwrap();
        Scheme::FrostEd25519
            .verify(&key.public_key, &[k], &signed.signature)
            .unwrap();
        with_0 += usize::from(signed.signers.contains(&0));
    }
    assert!(with_0 > 0, "node 0 co-signed while flooded");
    let (r1, r2) = held.await.unwrap();
    assert!(
        r1.is_err() && r2.is_err(),
        "the flooder's sessions time out: {r1:?} {r2:?}"
    );
}

/// Presignatures never outlive the process that made them: rows in the
/// store when a node starts (a restart, a restored backup) are deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pooled_presignatures_of_an_earlier_process_are_dropped_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let key = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
    let ids = vec![hex::encode(key.verifying_key().to_bytes())];
    let (_, client_pk) = sigil_node::auth::generate_client_key(false).unwrap();
    let cfg = config(0, 1, dir.path(), &ids, &client_pk);
    std::fs::create_dir_all(&cfg.data_dir).unwrap();
    let master = sigil_store::MasterKey::from_bytes([7; 32]);
    let path = cfg.data_dir.join("node.db");
    let store = sigil_store::open_sqlite(&path, &master).await.unwrap();
    store.put_presignature("k", "0,1", 0, "p1", b"restored").await.unwrap();
    store.put_presignature("k", "0,1", 0, "p2", b"restored").await.unwrap();
    assert_eq!(store.count_presignatures("k", "0,1").await.unwrap(), 2);
    let node = Node::new(cfg, store, InProcessHub::new().transport(0), key)
        .await
        .unwrap();
    assert_eq!(node.store().count_presignatures("k", "0,1").await.unwrap(), 0);
}

/// Signers other than the door node are drawn at random: over many
/// signatures through one node, every other party signs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signers_spread_over_the_parties() {
    let c = cluster(4).await;
    let key = c.create_key(0, Scheme::FrostEd25519, 2).await;
    let mut seen = std::collections::BTreeSet::new();
    for k in 0..60u8 {
        let signed = c.sign(0, &key.key_id, &[k]).await.unwrap();
        assert_eq!(signed.signers[0], 0);
        seen.insert(signed.signers[1]);
    }
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), vec![1, 2, 3]);
}

/// Verified threshold Paillier decryption: a party whose partial
/// decryption shifts the plaintext, or that answers with another party's
/// number, is named (a 502 naming the node), never a wrong plaintext.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lying_paillier_party_is_named() {
    use sigil_paillier::rug::Integer;
    let c = cluster(3).await;
    let key = c.create_key_bits(0, Scheme::Paillier, 2, Some(512)).await;
    let pk = sigil_node::paillier::public_key(&key.public_package).unwrap();
    assert!(pk.verification.is_some(), "the key has verification keys");
    let ct = pk
        .encrypt(&Integer::from(42), &mut rand::rngs::OsRng)
        .unwrap()
        .to_string();
    let decrypt = |door: usize| {
        let path = format!("/v1/keys/{}/decrypt", key.key_id);
        let body = format!(r#"{{"ciphertext":"{ct}"}}"#);
        let auth = c.auth("POST", &path, &body);
        let (node, id, ct) = (c.nodes[door].clone(), key.key_id.clone(), ct.clone());
        async move { node.decrypt(&id, &ct, &auth).await }
    };
    let (m, _) = decrypt(0).await.unwrap();
    assert_eq!(m, "42");
    let n = pk.n.clone();
    let lies: [(&str, sigil_node::in_process::Tamper); 2] = [
        (
            "a shifted plaintext",
            Arc::new(move |o: &mut sigil_proto::peer::SessionOutcome| {
                let mut w: serde_json::Value = serde_json::from_slice(&o.partial_signature).unwrap();
                let v: Integer = w["value"].as_str().unwrap().parse().unwrap();
                let n2 = Integer::from(n.square_ref());
                w["value"] = (v * Integer::from(&n + 1u32) % n2).to_string().into();
                o.partial_signature = serde_json::to_vec(&w).unwrap();
            }),
        ),
        (
            "another party's number",
            Arc::new(|o: &mut sigil_proto::peer::SessionOutcome| {
                let mut w: serde_json::Value = serde_json::from_slice(&o.partial_signature).unwrap();
                w["party"] = 1.into();
                o.partial_signature = serde_json::to_vec(&w).unwrap();
            }),
        ),
    ];
    for (what, lie) in lies {
        // One liar: named and marked down, a second set avoids it.
        c.hub.tamper_outcomes(2, None);
        c.hub.tamper_outcomes(1, Some(lie.clone()));
        for _ in 0..3 {
            assert_eq!(
                decrypt(0).await.unwrap().0,
                "42",
                "{what}: one liar does not block decryption"
            );
        }
        c.hub.tamper_outcomes(2, Some(lie));
        let e = decrypt(0).await.unwrap_err();
        let (status, body) = ApiError::from(e).detail();
        assert_eq!(status, 502, "{what}: {body:?}");
        assert_eq!(body.nodes.len(), 1, "{what}: names the liar: {body:?}");
        assert_ne!(body.nodes[0], 0, "{what}");
    }
    c.hub.tamper_outcomes(1, None);
    c.hub.tamper_outcomes(2, None);
    assert_eq!(decrypt(0).await.unwrap().0, "42");
}

impl Cluster {
    /// A key of `scheme` with threshold `t` on `parties`.
    async fn create_key_on(&self, door: usize, scheme: Scheme, t: u16, parties: &[u16]) -> sigil_store::KeyRecord {
        let body = format!(
            r#"{{"scheme":"{}","threshold":{t},"parties":{parties:?}}}"#,
            scheme.as_str()
        );
        let auth = self.auth("POST", "/v1/keys", &body);
        let req = KeygenRequest {
            scheme,
            threshold: t,
            parties: Some(parties.to_vec()),
            label: None,
            bits: None,
            prime_threshold: None,
            policy: None,
            rotate: false,
            external_parties: Vec::new(),
            party_keys: None,
            user_share: None,
        };
        let node = &self.nodes[door];
        let plan = node.plan_keygen(req, auth).unwrap();
        node.run_keygen(plan, &KeygenProgress::default()).await.unwrap()
    }

    /// `POST /v1/keys/{key_id}/reshare` (or `/refresh` with `body` `{}`).
    async fn reshare(
        &self,
        door: usize,
        key_id: &str,
        op: &str,
        body: &str,
    ) -> Result<sigil_store::KeyRecord, NodeError> {
        let path = format!("/v1/keys/{key_id}/{op}");
        let auth = self.auth("POST", &path, body);
        let req: sigil_node::reshare::ReshareRequest = serde_json::from_str(body).unwrap();
        self.nodes[door].reshare(key_id, req, op == "refresh", &auth).await
    }
}

/// A FROST key on nodes 0, 1, 2 (2-of-3) reshared to 1, 2, 3 (3-of-3):
/// the public key (BIP-340 x-only key for secp256k1-tr) is unchanged, the
/// new committee signs (node 3 included), node 0 holds no share any more,
/// the history lists epoch 0; then a refresh makes epoch 2, which signs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frost_keys_reshare_to_a_new_committee_and_refresh() {
    let c = cluster(4).await;
    for scheme in [Scheme::FrostEd25519, Scheme::FrostSecp256k1Tr] {
        let key = c.create_key_on(0, scheme, 2, &[0, 1, 2]).await;
        let new = c
            .reshare(0, &key.key_id, "reshare", r#"{"parties":[1,2,3],"threshold":3}"#)
            .await
            .unwrap();
        assert_eq!((new.epoch, new.threshold), (1, 3));
        assert_eq!(new.parties, vec![1, 2, 3]);
        assert_eq!(new.public_key, key.public_key, "{scheme}: the public key is unchanged");
        for door in 0..4 {
            let here = c.nodes[door].active_key(&key.key_id).await.unwrap();
            assert_eq!((here.epoch, here.parties.clone()), (1, vec![1, 2, 3]), "node {door}");
        }
        let store0 = c.nodes[0].store();
        assert!(
            store0.get_share(&key.key_id, 0, 0).await.unwrap().is_none(),
            "node 0's share deleted"
        );
        assert!(store0.get_share(&key.key_id, 0, 1).await.unwrap().is_none());
        let history = c.nodes[1].store().key_history(&key.key_id).await.unwrap();
        assert_eq!(history.len(), 1);
        assert_eq!((history[0].epoch, history[0].parties.clone()), (0, vec![0, 1, 2]));
        for door in [0, 3] {
            let signed = c.sign(door, &key.key_id, b"after reshare").await.unwrap();
            let mut signers = signed.signers.clone();
            signers.sort_unstable();
            assert_eq!(signers, vec![1, 2, 3]);
            scheme
                .verify(&key.public_key, b"after reshare", &signed.signature)
                .unwrap();
        }
        let refreshed = c.reshare(3, &key.key_id, "refresh", "{}").await.unwrap();
        assert_eq!((refreshed.epoch, refreshed.parties.clone()), (2, vec![1, 2, 3]));
        assert_ne!(refreshed.public_package, new.public_package, "fresh verifying shares");
        let signed = c.sign(1, &key.key_id, b"after refresh").await.unwrap();
        scheme
            .verify(&key.public_key, b"after refresh", &signed.signature)
            .unwrap();
    }
}

/// Bad committees and thresholds are 400 and a client that is not an
/// admin of the key is 403, before any session: the key stays at epoch 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_reshares_are_refused_before_any_session() {
    let c = cluster(3).await;
    let key = c.create_key(0, Scheme::FrostP256, 2).await;
    for body in [
        r#"{"parties":[0,1],"threshold":1}"#,
        r#"{"parties":[0,1],"threshold":3}"#,
        r#"{"parties":[0,1,1],"threshold":2}"#,
        r#"{"parties":[0,1,9],"threshold":2}"#,
    ] {
        let e = c.reshare(0, &key.key_id, "reshare", body).await.unwrap_err();
        assert!(matches!(e, NodeError::BadRequest(_)), "{body}: {e:?}");
    }
    let e = c
        .reshare(0, &key.key_id, "refresh", r#"{"threshold":3}"#)
        .await
        .unwrap_err();
    assert!(matches!(e, NodeError::BadRequest(_)), "{e:?}");

    // A key whose admin is someone else.
    let body = r#"{"scheme":"frost-p256","threshold":2,"policy":{"sign":["alice"],"admin":["carol"]}}"#;
    let req = KeygenRequest {
        scheme: Scheme::FrostP256,
        threshold: 2,
        parties: None,
        label: None,
        bits: None,
        prime_threshold: None,
        policy: serde_json::from_str(r#"{"sign":["alice"],"admin":["carol"]}"#).unwrap(),
        rotate: false,
        external_parties: Vec::new(),
        party_keys: None,
        user_share: None,
    };
    let plan = c.nodes[0].plan_keygen(req, c.auth("POST", "/v1/keys", body)).unwrap();
    let other = c.nodes[0].run_keygen(plan, &KeygenProgress::default()).await.unwrap();
    let e = c.reshare(1, &other.key_id, "refresh", "{}").await.unwrap_err();
    assert!(matches!(e, NodeError::Refused(_)), "{e:?}");
    for k in [&key, &other] {
        assert_eq!(c.nodes[2].active_key(&k.key_id).await.unwrap().epoch, 0);
    }
}

/// A reshare whose new party is cut off fails; epoch 0 stays active and
/// signs, and no party keeps anything of epoch 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_reshare_leaves_the_old_epoch_and_nothing_else() {
    let c = cluster_with(4, |cfg| cfg.session_timeout_ms = 1500).await;
    let key = c.create_key_on(0, Scheme::FrostEd25519, 2, &[0, 1, 2]).await;
    c.hub.cut_off(3, true);
    let e = c
        .reshare(0, &key.key_id, "reshare", r#"{"parties":[1,2,3],"threshold":2}"#)
        .await
        .unwrap_err();
    assert!(e.nodes().contains(&3), "{e:?}");
    c.hub.cut_off(3, false);
    for node in &c.nodes[..3] {
        assert!(node.store().pending_epoch(&key.key_id).await.unwrap().is_none());
        assert_eq!(node.active_key(&key.key_id).await.unwrap().epoch, 0);
    }
    let signed = c.sign(1, &key.key_id, b"still epoch 0").await.unwrap();
    Scheme::FrostEd25519
        .verify(&key.public_key, b"still epoch 0", &signed.signature)
        .unwrap();
}

/// An ECDSA key (aux info from seeded primes) refreshed, then reshared
/// 2-of-3 -> 3-of-3 on the same set (its aux info is reused): the public
/// key and the xpub are unchanged and the new shares sign.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ecdsa_keys_refresh_and_change_threshold() {
    // Debug-build CGGMP21 on two busy cores: a generous session deadline.
    let c = cluster_with(3, |cfg| cfg.session_timeout_ms = 30_000).await;
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../sigil-cli/tests/fixtures/primes-1536.txt");
    let primes: Vec<String> = std::fs::read_to_string(fixture)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    for (i, node) in c.nodes.iter().enumerate() {
        let seed = c._dir.path().join(format!("primes-{i}.txt"));
        std::fs::write(&seed, format!("{}\n{}\n", primes[2 * i], primes[2 * i + 1])).unwrap();
        assert_eq!(sigil_node::ecdsa::seed_primes(node, &seed).await.unwrap(), 2);
    }
    let key = c.create_key(0, Scheme::EcdsaSecp256k1, 2).await;
    let xpub = sigil_crypto::scheme::xpub(&key.public_package, &[]).unwrap();
    let refreshed = c.reshare(1, &key.key_id, "refresh", "{}").await.unwrap();
    let changed = c
        .reshare(2, &key.key_id, "reshare", r#"{"parties":[0,1,2],"threshold":3}"#)
        .await
        .unwrap();
    assert_eq!((refreshed.epoch, changed.epoch, changed.threshold), (1, 2, 3));
    assert_eq!(changed.public_key, key.public_key);
    assert_eq!(sigil_crypto::scheme::xpub(&changed.public_package, &[]).unwrap(), xpub);
    let digest = [7u8; 32];
    let signed = c.sign(0, &key.key_id, &digest).await.unwrap();
    assert_eq!(signed.signers.len(), 3);
    sigil_crypto::scheme::ecdsa_recovery_and_der(Scheme::EcdsaSecp256k1, &key.public_key, &digest, &signed.signature)
        .unwrap();
}

/// An old party that is down during a reshare is left out of the quorum,
/// misses the commit, and on its next catch-up pass switches to the new
/// epoch from a peer's attested record, deleting its old share.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_party_that_missed_the_commit_catches_up_and_deletes_its_share() {
    let c = cluster_with(4, |cfg| cfg.session_timeout_ms = 1500).await;
    let key = c.create_key_on(0, Scheme::FrostEd25519, 2, &[0, 1, 2]).await;
    c.hub.cut_off(0, true);
    let new = c
        .reshare(1, &key.key_id, "reshare", r#"{"parties":[1,2,3],"threshold":2}"#)
        .await
        .unwrap();
    assert_eq!(new.epoch, 1);
    c.hub.cut_off(0, false);
    let store0 = c.nodes[0].store();
    assert_eq!(
        store0.get_key(&key.key_id).await.unwrap().unwrap().epoch,
        0,
        "missed it"
    );
    assert!(store0.get_share(&key.key_id, 0, 0).await.unwrap().is_some());
    c.nodes[0].catch_up_keys().await;
    assert_eq!(store0.get_key(&key.key_id).await.unwrap().unwrap().epoch, 1);
    assert!(
        store0.get_share(&key.key_id, 0, 0).await.unwrap().is_none(),
        "old share deleted"
    );
    let signed = c.sign(0, &key.key_id, b"caught up").await.unwrap();
    Scheme::FrostEd25519
        .verify(&key.public_key, b"caught up", &signed.signature)
        .unwrap();

    // Two epochs missed: node 0 is away for two reshares of another key;
    // it follows both recorded epochs from the peers' history, each
    // transition checked from its own record.
    let other = c.create_key_on(1, Scheme::FrostEd25519, 2, &[0, 1, 2]).await;
    c.hub.cut_off(0, true);
    for (i, body) in [
        r#"{"parties":[1,2,3],"threshold":2}"#,
        r#"{"parties":[1,2,3],"threshold":3}"#,
    ]
    .iter()
    .enumerate()
    {
        let r = c.reshare(1, &other.key_id, "reshare", body).await.unwrap();
        assert_eq!(r.epoch as usize, i + 1);
    }
    c.hub.cut_off(0, false);
    let history = c.nodes[1].store().epoch_record(&other.key_id, 1).await.unwrap();
    assert_eq!(
        history.map(|r| r.threshold),
        Some(2),
        "the retired record is kept whole"
    );
    assert_eq!(store0.get_key(&other.key_id).await.unwrap().unwrap().epoch, 0);
    c.nodes[0].catch_up_keys().await;
    let at0 = store0.get_key(&other.key_id).await.unwrap().unwrap();
    assert_eq!((at0.epoch, at0.threshold), (2, 3), "followed both epochs");
    assert!(store0.get_share(&other.key_id, 0, 0).await.unwrap().is_none());
    let signed = c.sign(0, &other.key_id, b"two behind").await.unwrap();
    Scheme::FrostEd25519
        .verify(&other.public_key, b"two behind", &signed.signature)
        .unwrap();
}

/// A reshare's abort deletes only the pending epoch its own session made:
/// a late abort of a failed attempt keeps the epoch of the attempt after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_abort_keeps_a_later_attempts_epoch() {
    let c = cluster(3).await;
    let key = c.create_key(0, Scheme::FrostEd25519, 2).await;
    let mut next = key.clone();
    next.epoch = 1;
    next.status = sigil_store::KeyStatus::Pending;
    next.attestations.clear();
    let store = c.nodes[1].store();
    store
        .put_pending_epoch(&next, &hex::encode([0xaa; 32]), 1, Some(b"share of attempt 2"), 0)
        .await
        .unwrap();
    let abort = |session: [u8; 32]| sigil_proto::peer::FinalizeKeyRequest {
        key: Some(sigil_node::records::meta_of(&next)),
        commit: false,
        session_id: session.to_vec(),
    };
    c.nodes[1].finalize_key(None, abort([0xbb; 32])).await.unwrap();
    assert!(
        store.pending_epoch(&key.key_id).await.unwrap().is_some(),
        "another attempt's abort"
    );
    c.nodes[1].finalize_key(None, abort([0xaa; 32])).await.unwrap();
    assert!(
        store.pending_epoch(&key.key_id).await.unwrap().is_none(),
        "its own abort"
    );
    assert_eq!(c.nodes[1].active_key(&key.key_id).await.unwrap().epoch, 0);
}

/// One node cannot move a key: a record of a next epoch whose committee is
/// that node alone, attested by it and endorsed by it (fewer than `t`
/// endorsements), is refused by the honest old parties, which keep their
/// shares and sign.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_cannot_move_a_key_away_from_the_others() {
    let c = cluster(3).await;
    let key = c.create_key(0, Scheme::FrostEd25519, 2).await;
    let mut forged = key.clone();
    forged.epoch = 1;
    forged.parties = vec![2];
    forged.threshold = 1;
    forged.attestations = vec![sigil_node::attest::attestation(
        2,
        sigil_node::attest::sign(&c.identities[2], &forged),
    )];
    forged.endorsements = vec![sigil_node::attest::attestation(
        2,
        sigil_node::attest::sign_transition(&c.identities[2], &key, &forged),
    )];
    let req = sigil_proto::peer::FinalizeKeyRequest {
        key: Some(sigil_node::records::meta_of(&forged)),
        commit: true,
        session_id: Vec::new(),
    };
    for i in [0, 1] {
        let e = c.nodes[i].finalize_key(Some(2), req.clone()).await.unwrap_err();
        assert!(matches!(e, SessionError::Refused { .. }), "{e:?}");
        assert!(c.nodes[i]
            .store()
            .get_share(&key.key_id, i as u16, 0)
            .await
            .unwrap()
            .is_some());
        assert_eq!(c.nodes[i].active_key(&key.key_id).await.unwrap().epoch, 0);
    }
    // Endorsed by t old parties but not activated by its committee: the
    // old parties outside it still do not switch (nor delete).
    forged.endorsements = [1u16, 2]
        .iter()
        .map(|&i| {
            sigil_node::attest::attestation(
                i,
                sigil_node::attest::sign_transition(&c.identities[usize::from(i)], &key, &forged),
            )
        })
        .collect();
    let req = sigil_proto::peer::FinalizeKeyRequest {
        key: Some(sigil_node::records::meta_of(&forged)),
        commit: true,
        session_id: Vec::new(),
    };
    let e = c.nodes[0].finalize_key(Some(2), req).await.unwrap_err();
    assert!(format!("{e}").contains("not confirmed"), "{e}");
    assert!(c.nodes[0].store().get_share(&key.key_id, 0, 0).await.unwrap().is_some());
    let signed = c.sign(0, &key.key_id, b"still ours").await.unwrap();
    Scheme::FrostEd25519
        .verify(&key.public_key, b"still ours", &signed.signature)
        .unwrap();
}

/// A coordinator cannot split a committee across epochs (3-of-4, where
/// neither half could sign alone): when the commit reaches only some new
/// parties, they acknowledge the next epoch but nobody switches, so every
/// epoch-0 share is kept and the key signs; an abort of the acknowledged
/// epoch is refused; and once the lost party is back, the catch-up pass of
/// any acknowledging node completes the commit without the coordinator.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_that_reaches_some_parties_switches_nobody_and_completes_later() {
    let c = cluster_with(4, |cfg| cfg.session_timeout_ms = 1500).await;
    let key = c.create_key_on(0, Scheme::FrostEd25519, 3, &[0, 1, 2, 3]).await;
    c.hub.lose_finalize(3, true);
    let e = c.reshare(0, &key.key_id, "refresh", "{}").await.unwrap_err();
    assert!(
        e.nodes().contains(&3),
        "names the party that did not acknowledge: {e:?}"
    );
    for (i, node) in c.nodes.iter().enumerate() {
        let i = u16::try_from(i).unwrap();
        assert_eq!(
            node.active_key(&key.key_id).await.unwrap().epoch,
            0,
            "node {i} did not switch"
        );
        assert!(
            node.store().get_share(&key.key_id, i, 0).await.unwrap().is_some(),
            "node {i} keeps its share"
        );
        let (pending, _) = node.store().pending_epoch_of(&key.key_id).await.unwrap().unwrap();
        assert_eq!(
            pending.attestations.is_empty(),
            i == 3,
            "node {i} acknowledged (or not, 3)"
        );
    }
    let signed = c.sign(1, &key.key_id, b"epoch 0 signs").await.unwrap();
    Scheme::FrostEd25519
        .verify(&key.public_key, b"epoch 0 signs", &signed.signature)
        .unwrap();

    // The coordinator's abort of the acknowledged epoch is refused.
    let (pending, session) = c.nodes[1].store().pending_epoch_of(&key.key_id).await.unwrap().unwrap();
    let abort = sigil_proto::peer::FinalizeKeyRequest {
        key: Some(sigil_node::records::meta_of(&pending)),
        commit: false,
        session_id: hex::decode(session).unwrap(),
    };
    assert!(c.nodes[1].finalize_key(None, abort).await.is_err());
    assert!(c.nodes[1].store().pending_epoch(&key.key_id).await.unwrap().is_some());

    // Node 3 is reachable again: node 2's catch-up pass completes it.
    c.hub.lose_finalize(3, false);
    tokio::time::sleep(Duration::from_millis(4100)).await;
    c.nodes[2].catch_up_keys().await;
    for (i, node) in c.nodes.iter().enumerate() {
        let i = u16::try_from(i).unwrap();
        assert_eq!(
            node.active_key(&key.key_id).await.unwrap().epoch,
            1,
            "node {i} switched"
        );
        assert!(
            node.store().get_share(&key.key_id, i, 0).await.unwrap().is_none(),
            "node {i} old share gone"
        );
        assert!(node.store().pending_epoch(&key.key_id).await.unwrap().is_none());
    }
    let signed = c.sign(3, &key.key_id, b"epoch 1 signs").await.unwrap();
    Scheme::FrostEd25519
        .verify(&key.public_key, b"epoch 1 signs", &signed.signature)
        .unwrap();
}

/// A reshare proposal without a client token: a rotation of `key` by node
/// 0 (quorum 0 and 1, the same committee and threshold).
fn rotation_proposal(key: &sigil_store::KeyRecord) -> sigil_proto::peer::SessionProposal {
    sigil_proto::peer::SessionProposal {
        session_id: vec![9; 32],
        coordinator: 0,
        parties: key.parties.iter().map(|&p| u32::from(p)).collect(),
        deadline_ms: 2000,
        authorization: None,
        kind: Some(Kind::Reshare(sigil_proto::peer::ReshareProposal {
            current: Some(sigil_node::records::meta_of(key)),
            quorum: vec![0, 1],
            new_parties: key.parties.iter().map(|&p| u32::from(p)).collect(),
            threshold: u32::from(key.threshold),
        })),
    }
}

/// A key created with a rotation interval is refreshed by its lowest party
/// once its epoch is that old, and signs on; a rotation proposal (no client
/// token) for a key that is not due, or that does not rotate, is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_keys_are_refreshed_when_due_and_only_then() {
    let c = cluster(3).await;
    let policy = r#"{"sign":["alice"],"admin":["alice"],"rotation_interval_s":4}"#;
    let body = format!(r#"{{"scheme":"frost-ed25519","threshold":2,"policy":{policy}}}"#);
    let req = KeygenRequest {
        scheme: Scheme::FrostEd25519,
        threshold: 2,
        parties: None,
        label: None,
        bits: None,
        prime_threshold: None,
        policy: Some(serde_json::from_str(policy).unwrap()),
        rotate: false,
        external_parties: Vec::new(),
        party_keys: None,
        user_share: None,
    };
    let plan = c.nodes[0].plan_keygen(req, c.auth("POST", "/v1/keys", &body)).unwrap();
    let key = c.nodes[0].run_keygen(plan, &KeygenProgress::default()).await.unwrap();
    assert_eq!(key.policy.rotation_interval_s, Some(4));
    let plain = c.create_key(0, Scheme::FrostEd25519, 2).await;

    // Not due: refused by the others, and the lowest party does not start.
    let refused = c.nodes[1].participate(0, rotation_proposal(&key)).await.unwrap_err();
    assert!(matches!(refused, SessionError::Refused { .. }), "{refused:?}");
    let mut backdated = key.clone();
    backdated.created_at = 0;
    let refused = c.nodes[1]
        .participate(0, rotation_proposal(&backdated))
        .await
        .unwrap_err();
    assert!(
        matches!(refused, SessionError::Refused { .. }),
        "the age is the node's own: {refused:?}"
    );
    assert_eq!(c.nodes[0].rotate_due_keys().await, 0);

    tokio::time::sleep(Duration::from_millis(5100)).await;
    assert_eq!(c.nodes[1].rotate_due_keys().await, 0, "node 1 is not the lowest party");
    assert_eq!(c.nodes[0].rotate_due_keys().await, 1);
    for node in &c.nodes {
        assert_eq!(node.active_key(&key.key_id).await.unwrap().epoch, 1);
        assert_eq!(
            node.active_key(&plain.key_id).await.unwrap().epoch,
            0,
            "a key without rotation stays"
        );
    }
    let signed = c.sign(2, &key.key_id, b"rotated").await.unwrap();
    Scheme::FrostEd25519
        .verify(&key.public_key, b"rotated", &signed.signature)
        .unwrap();
    let refused = c.nodes[1].participate(0, rotation_proposal(&plain)).await.unwrap_err();
    assert!(matches!(refused, SessionError::Refused { .. }), "{refused:?}");
    assert!(c.nodes[1].store().pending_epoch(&plain.key_id).await.unwrap().is_none());
}

/// A node that holds no record of a key (it missed the key's creation)
/// joins its committee in a reshare: it checks the endorsements against the
/// record the session reshared, registers that record only then, and
/// signs at the new epoch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_new_to_a_key_joins_it_by_a_reshare() {
    let c = cluster(4).await;
    c.hub.cut_off(3, true);
    let key = c.create_key_on(0, Scheme::FrostEd25519, 2, &[0, 1, 2]).await;
    c.hub.cut_off(3, false);
    assert!(c.nodes[3].store().get_key(&key.key_id).await.unwrap().is_none());
    let new = c
        .reshare(1, &key.key_id, "reshare", r#"{"parties":[1,2,3],"threshold":2}"#)
        .await
        .unwrap();
    assert_eq!(new.epoch, 1);
    let at3 = c.nodes[3].active_key(&key.key_id).await.unwrap();
    assert_eq!((at3.epoch, at3.parties.clone()), (1, vec![1, 2, 3]));
    assert!(c.nodes[3].store().get_share(&key.key_id, 3, 1).await.unwrap().is_some());
    let signed = c.sign(3, &key.key_id, b"new here").await.unwrap();
    Scheme::FrostEd25519
        .verify(&key.public_key, b"new here", &signed.signature)
        .unwrap();
}

/// A threshold Paillier key on nodes 0, 1, 2 (T = 2) reshared over the
/// integers to 1, 2, 3 (T = 3), then refreshed: `N` is unchanged, the new
/// committee decrypts what was encrypted before, through any node, with
/// verified partials; node 0 keeps no share; the key cannot rotate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paillier_keys_reshare_over_the_integers_and_still_decrypt() {
    use sigil_paillier::rug::Integer;
    let c = cluster(4).await;
    let body = r#"{"scheme":"paillier","threshold":2,"parties":[0,1,2],"bits":512}"#;
    let req = KeygenRequest {
        scheme: Scheme::Paillier,
        threshold: 2,
        parties: Some(vec![0, 1, 2]),
        label: None,
        bits: Some(512),
        prime_threshold: None,
        policy: None,
        rotate: false,
        external_parties: Vec::new(),
        party_keys: None,
        user_share: None,
    };
    let plan = c.nodes[0].plan_keygen(req, c.auth("POST", "/v1/keys", body)).unwrap();
    let key = c.nodes[0].run_keygen(plan, &KeygenProgress::default()).await.unwrap();
    let pk = sigil_node::paillier::public_key(&key.public_package).unwrap();
    let cts: Vec<String> = [42u32, 7]
        .iter()
        .map(|&m| {
            pk.encrypt(&Integer::from(m), &mut rand::rngs::OsRng)
                .unwrap()
                .to_string()
        })
        .collect();
    let decrypt = |door: usize, ct: &str| {
        let path = format!("/v1/keys/{}/decrypt", key.key_id);
        let auth = c.auth("POST", &path, &format!(r#"{{"ciphertext":"{ct}"}}"#));
        let (node, id, ct) = (c.nodes[door].clone(), key.key_id.clone(), ct.to_string());
        async move { node.decrypt(&id, &ct, &auth).await }
    };
    assert_eq!(decrypt(1, &cts[0]).await.unwrap().0, "42");

    let new = c
        .reshare(0, &key.key_id, "reshare", r#"{"parties":[1,2,3],"threshold":3}"#)
        .await
        .unwrap();
    assert_eq!((new.epoch, new.threshold, new.parties.clone()), (1, 3, vec![1, 2, 3]));
    assert_eq!(new.public_key, key.public_key, "N is unchanged");
    let pk1 = sigil_node::paillier::public_key(&new.public_package).unwrap();
    assert_eq!((pk1.n.clone(), pk1.parties, pk1.threshold), (pk.n.clone(), 3, 2));
    assert!(c.nodes[0].store().get_share(&key.key_id, 0, 0).await.unwrap().is_none());
    for door in [0, 3] {
        let (m, mut used) = decrypt(door, &cts[0]).await.unwrap();
        used.sort_unstable();
        assert_eq!((m.as_str(), used), ("42", vec![1, 2, 3]), "door {door}");
    }

    let refreshed = c.reshare(3, &key.key_id, "refresh", "{}").await.unwrap();
    assert_eq!((refreshed.epoch, refreshed.parties.clone()), (2, vec![1, 2, 3]));
    assert_ne!(refreshed.public_package, new.public_package, "fresh verification keys");
    assert_eq!(decrypt(2, &cts[1]).await.unwrap().0, "7");

    // Not on a schedule: the integer shares grow with every reshare.
    let body = r#"{"scheme":"paillier","threshold":2,"bits":512,"rotate":true}"#;
    let req = KeygenRequest {
        scheme: Scheme::Paillier,
        threshold: 2,
        parties: None,
        label: None,
        bits: Some(512),
        prime_threshold: None,
        policy: None,
        rotate: true,
        external_parties: Vec::new(),
        party_keys: None,
        user_share: None,
    };
    let e = c.nodes[0]
        .plan_keygen(req, c.auth("POST", "/v1/keys", body))
        .unwrap_err();
    assert!(e.to_string().contains("cannot rotate"), "{e}");
}
