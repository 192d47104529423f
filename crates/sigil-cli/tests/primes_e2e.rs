//! End to end: a real `sigil primes serve` process on loopback, reached
//! over mutual TLS: bad requests, authentication, served sets that are
//! valid and never repeated, and kill -9 during refill followed by a
//! restart.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::{free_port, DevCluster};
use sha2::Digest;
use sigil_crypto::primes::{is_safe_prime, rug::Integer};
use sigil_proto::prime::prime_service_client::PrimeServiceClient;
use sigil_proto::prime::{pre_params, GetPoolStatusRequest, GetPreParamsRequest, HealthCheckRequest};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

const TOKEN: &str = "prime-token";

fn spawn(config: &Path, dir: &Path) -> Child {
    let log = std::fs::File::create(dir.join("primes.log")).unwrap();
    Command::new(env!("CARGO_BIN_EXE_sigil"))
        .args(["primes", "serve", "--config"])
        .arg(config)
        .env("SIGIL_MASTER_KEY", "ab".repeat(32))
        .env("SIGIL_LOG", "info")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap()
}

async fn connect(
    dir: &Path,
    port: u16,
    with_cert: bool,
) -> Result<PrimeServiceClient<Channel>, tonic::transport::Error> {
    let ca = Certificate::from_pem(std::fs::read(dir.join("dev/certs/ca.pem")).unwrap());
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(ca)
        .domain_name(sigil_node::certs::PRIME_SERVICE_DNS_NAME);
    if with_cert {
        let id = Identity::from_pem(
            std::fs::read(dir.join("dev/certs/node-1.pem")).unwrap(),
            std::fs::read(dir.join("dev/certs/node-1.key")).unwrap(),
        );
        tls = tls.identity(id);
    }
    let ch = Channel::from_shared(format!("https://127.0.0.1:{port}"))
        .unwrap()
        .tls_config(tls)?
        .connect()
        .await?;
    Ok(PrimeServiceClient::new(ch))
}

fn req<T>(msg: T, token: Option<&str>, timeout: Duration) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    if let Some(t) = token {
        r.metadata_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    r.set_timeout(timeout);
    r
}

async fn wait_up(dir: &Path, port: u16) -> PrimeServiceClient<Channel> {
    let start = Instant::now();
    loop {
        if let Ok(mut c) = connect(dir, port, true).await {
            if c.health_check(req(HealthCheckRequest {}, Some(TOKEN), Duration::from_secs(2)))
                .await
                .is_ok()
            {
                return c;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "prime service did not start: {}",
            std::fs::read_to_string(dir.join("primes.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every prime of a served set, checked: cggmp21 sets are two 1536-bit safe
/// primes; tss-lib sets are consistent LocalPreParams.
fn check_set(set: &sigil_proto::prime::PreParams) -> Vec<Integer> {
    match set.params.as_ref().unwrap() {
        pre_params::Params::Cggmp21(c) => {
            let (p, q): (Integer, Integer) = (c.p.parse().unwrap(), c.q.parse().unwrap());
            for x in [&p, &q] {
                assert_eq!(x.significant_bits(), 1536);
                assert!(is_safe_prime(x));
            }
            assert_ne!(p, q);
            vec![p, q]
        }
        pre_params::Params::TssLib(t) => {
            let n = |s: &str| s.parse::<Integer>().unwrap();
            let (pp, pq) = (n(&t.paillier_p), n(&t.paillier_q));
            assert!(is_safe_prime(&pp) && is_safe_prime(&pq));
            assert_eq!(Integer::from(&pp * &pq), n(&t.paillier_n));
            let (p, q) = (n(&t.p), n(&t.q));
            let tp = Integer::from(&p << 1u32) + 1u32;
            let tq = Integer::from(&q << 1u32) + 1u32;
            assert!(is_safe_prime(&tp) && is_safe_prime(&tq));
            assert_eq!(Integer::from(&tp * &tq), n(&t.n_tilde));
            assert_eq!(n(&t.h1).pow_mod(&n(&t.alpha), &n(&t.n_tilde)).unwrap(), n(&t.h2));
            assert!(t.tss_lib_json.starts_with("{\"PaillierSK\":{\"N\":"));
            vec![pp, pq, tp, tq]
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prime_service_serves_each_set_once_and_survives_kill9() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    // One CA for the service (its own certificate, `sigil-prime-service`) and a 2-node dev cluster
    // (nodes 0 and 1) that takes its aux-info primes from the service.
    sigil_node::certs::init(&dir.join("dev/certs"), &dir.join("dev/ca"), &[0, 1], 30).unwrap();
    let port = free_port();
    let token_hash = hex::encode(sha2::Sha256::digest(TOKEN.as_bytes()));
    let config: PathBuf = dir.join("primes.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{port}\"\ndata_dir = \"{d}/data\"\napi_token_sha256 = \"{token_hash}\"\n\
             kinds = [\"cggmp21\", \"tss-lib\"]\nmin_pool_size = 1\nmax_pool_size = 2\nrefill_threshold = 1\n\
             max_concurrent = 2\n[tls]\nca_cert = \"{d}/dev/certs/ca.pem\"\ncert = \"{d}/dev/certs/prime-service.pem\"\nkey = \"{d}/dev/certs/prime-service.key\"\n",
            d = dir.display()
        ),
    )
    .unwrap();
    let mut proc = spawn(&config, &dir);
    let mut c = wait_up(&dir, port).await;
    let long = Duration::from_secs(90);

    // Authentication: no client certificate, no token, a wrong token.
    if let Ok(mut anon) = connect(&dir, port, false).await {
        assert!(anon
            .health_check(req(HealthCheckRequest {}, Some(TOKEN), long))
            .await
            .is_err());
    }
    let e = c
        .get_pool_status(req(GetPoolStatusRequest {}, None, long))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
    let e = c
        .get_pool_status(req(GetPoolStatusRequest {}, Some("wrong"), long))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated);

    // The standard gRPC health service and server reflection (what grpcurl
    // uses) answer over the same mTLS channel.
    let ch = Channel::from_shared(format!("https://127.0.0.1:{port}"))
        .unwrap()
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(
                    std::fs::read(dir.join("dev/certs/ca.pem")).unwrap(),
                ))
                .identity(Identity::from_pem(
                    std::fs::read(dir.join("dev/certs/node-1.pem")).unwrap(),
                    std::fs::read(dir.join("dev/certs/node-1.key")).unwrap(),
                ))
                .domain_name(sigil_node::certs::PRIME_SERVICE_DNS_NAME),
        )
        .unwrap()
        .connect()
        .await
        .unwrap();
    common::assert_served_with_health_and_reflection(ch, "prime.v1.PrimeService").await;

    // Bad requests: clear InvalidArgument.
    for (count, kind) in [(0, "cggmp21"), (17, "cggmp21"), (3, "cggmp21"), (1, "rsa")] {
        let e = c
            .get_pre_params(req(
                GetPreParamsRequest {
                    count,
                    kind: kind.into(),
                },
                Some(TOKEN),
                long,
            ))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{count} {kind}: {e:?}");
        assert!(!e.message().is_empty());
    }

    // Served sets are valid; the call waits for the generator if needed.
    let mut seen = HashSet::new();
    for kind in ["cggmp21", "tss-lib"] {
        let r = c
            .get_pre_params(req(
                GetPreParamsRequest {
                    count: 1,
                    kind: kind.into(),
                },
                Some(TOKEN),
                long,
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.sets.len(), 1);
        for p in check_set(&r.sets[0]) {
            assert!(seen.insert(p.to_string()), "a prime was served twice");
        }
    }

    // kill -9 while the pool refills, restart: what is pooled is whole and
    // valid, and nothing served before comes back.
    tokio::time::sleep(Duration::from_millis(700)).await;
    proc.kill().unwrap();
    proc.wait().unwrap();
    let mut proc = spawn(&config, &dir);
    let mut c = wait_up(&dir, port).await;
    let status = c
        .get_pool_status(req(GetPoolStatusRequest {}, Some(TOKEN), long))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.kinds.len(), 2);
    for _ in 0..2 {
        let r = c
            .get_pre_params(req(
                GetPreParamsRequest {
                    count: 2,
                    kind: "cggmp21".into(),
                },
                Some(TOKEN),
                long,
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.sets.len(), 2);
        for set in &r.sets {
            for p in check_set(set) {
                assert!(seen.insert(p.to_string()), "a prime was served twice");
            }
        }
    }
    let status = c
        .get_pool_status(req(GetPoolStatusRequest {}, Some(TOKEN), long))
        .await
        .unwrap()
        .into_inner();
    let cg = status.kinds.iter().find(|k| k.kind == "cggmp21").unwrap();
    assert_eq!(cg.total_served, 4);
    assert!(cg.total_generated > 0 && cg.generation_p50_ms > 0.0, "{cg:?}");

    // Nodes with prime_source = remote: the first ECDSA key of the set
    // makes aux info from primes the service serves (one set per node),
    // and the key signs.
    std::fs::write(dir.join("token"), TOKEN).unwrap();
    let dev = DevCluster::start(
        2,
        &dir.join("dev"),
        &[
            ("SIGIL_PRIME_SOURCE__KIND", "remote".to_string()),
            ("SIGIL_PRIME_SOURCE__URL", format!("https://127.0.0.1:{port}")),
            (
                "SIGIL_PRIME_SOURCE__SERVER_NAME",
                sigil_node::certs::PRIME_SERVICE_DNS_NAME.to_string(),
            ),
            (
                "SIGIL_PRIME_SOURCE__API_TOKEN_FILE",
                dir.join("token").display().to_string(),
            ),
        ],
    )
    .await;
    let node_logs = || dev.logs();
    let (_, key) = dev
        .post(
            0,
            "/v1/keys",
            &serde_json::json!({"scheme": "ecdsa-secp256k1", "threshold": 2}),
        )
        .await;
    let id = key["key_id"]
        .as_str()
        .unwrap_or_else(|| panic!("{key}\n{}", node_logs()));
    let digest = [7u8; 32];
    let (_, sig) = dev
        .post(
            0,
            &format!("/v1/keys/{id}/sign"),
            &serde_json::json!({"message": hex::encode(digest)}),
        )
        .await;
    let scheme: sigil_crypto::Scheme = "ecdsa-secp256k1".parse().unwrap();
    scheme
        .verify(
            &hex::decode(key["public_key"].as_str().unwrap()).unwrap(),
            &digest,
            &hex::decode(sig["signature"].as_str().unwrap()).unwrap(),
        )
        .unwrap();
    let status = c
        .get_pool_status(req(GetPoolStatusRequest {}, Some(TOKEN), long))
        .await
        .unwrap()
        .into_inner();
    let cg = status.kinds.iter().find(|k| k.kind == "cggmp21").unwrap();
    assert_eq!(cg.total_served, 6, "one set per node for aux info");
    drop(dev);
    proc.kill().unwrap();
    proc.wait().unwrap();
}
