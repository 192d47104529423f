//! Both backends under the conformance suite (one fresh store per check),
//! and what only whole stores show: the master-key canary across a reopen,
//! single-use takes under concurrency, tamper detection. PostgreSQL runs in
//! a throwaway cluster ([`sigil_store::testing::TempPostgres`]) unless
//! `SIGIL_TEST_POSTGRES_URL` names a server.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::sync::Arc;

use sigil_store::conformance::{sample_key, test_all};
use sigil_store::testing::TempPostgres;
use sigil_store::{open_sqlite, MasterKey, PgBackend, SqliteBackend, Store, StoreError};

/// A throwaway PostgreSQL for one test (a static would never be dropped,
/// leaving the server running after the tests).
fn postgres() -> TempPostgres {
    TempPostgres::start().expect("a throwaway PostgreSQL (apt-get install postgresql)")
}

async fn pg_store(pg: &TempPostgres, prefix: &str, master: &MasterKey) -> Result<Store, StoreError> {
    let url = pg
        .fresh_database(prefix)
        .map_err(|e| StoreError::Unavailable(e.to_string()))?;
    pg_store_at(&url, master).await
}

async fn pg_store_at(url: &str, master: &MasterKey) -> Result<Store, StoreError> {
    let backend = PgBackend::connect(url, 4, std::time::Duration::from_secs(10)).await?;
    Store::new(Arc::new(backend), master).await
}

#[tokio::test]
async fn sqlite_passes_conformance() {
    let dir = tempfile::tempdir().unwrap();
    let r = test_all(|name| {
        let path = dir.path().join(format!("{name}.db"));
        async move { open_sqlite(&path, &MasterKey::generate()).await }
    })
    .await;
    if let Err(failed) = r {
        panic!("sqlite conformance:\n{failed}");
    }
}

#[tokio::test]
async fn postgres_passes_conformance() {
    let pg = postgres();
    let pg = &pg;
    let r = test_all(|name| async move { pg_store(pg, name.get(..30).unwrap_or(name), &MasterKey::generate()).await })
        .await;
    if let Err(failed) = r {
        panic!("postgres conformance:\n{failed}");
    }
}

#[tokio::test]
async fn wrong_master_key_is_refused_and_keys_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.db");
    let master = MasterKey::generate();
    let pg = postgres();
    let url = pg.fresh_database("reopen").unwrap();
    for backend in ["sqlite", "postgres"] {
        let open = |m: MasterKey| {
            let (path, url) = (path.clone(), url.clone());
            async move {
                match backend {
                    "sqlite" => open_sqlite(&path, &m).await,
                    _ => pg_store_at(&url, &m).await,
                }
            }
        };
        let store = open(master.clone()).await.unwrap();
        store.put_key(&sample_key("k1"), 3, Some(b"share")).await.unwrap();
        drop(store);
        match open(MasterKey::generate()).await {
            Err(StoreError::WrongMasterKey(_)) => {}
            Err(e) => panic!("{backend}: expected WrongMasterKey, got {e}"),
            Ok(_) => panic!("{backend}: a wrong master key must be refused"),
        }
        let store = open(master.clone()).await.unwrap();
        let share = store.get_share("k1", 3, 0).await.unwrap();
        assert_eq!(share.as_deref().map(|s| s.as_slice()), Some(&b"share"[..]), "{backend}");
    }
}

/// Concurrent takers and a concurrent writer: every presignature and every
/// prime is handed out exactly once, on both backends.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn single_use_takes_under_concurrency() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = open_sqlite(&dir.path().join("p.db"), &MasterKey::generate())
        .await
        .unwrap();
    let server = postgres();
    let pg = pg_store(&server, "concurrency", &MasterKey::generate()).await.unwrap();
    for (name, store) in [("sqlite", sqlite), ("postgres", pg)] {
        let store = Arc::new(store);
        for k in 0..40 {
            store
                .put_presignature("k", "0,1", 0, &format!("p{k}"), b"x")
                .await
                .unwrap();
            store.put_prime(1536, format!("prime{k}").as_bytes()).await.unwrap();
        }
        let writer = {
            let store = store.clone();
            tokio::spawn(async move {
                for k in 40..80 {
                    store
                        .put_presignature("k", "0,1", 0, &format!("p{k}"), b"x")
                        .await
                        .unwrap();
                }
            })
        };
        let mut takers = Vec::new();
        for _ in 0..6 {
            let store = store.clone();
            takers.push(tokio::spawn(async move {
                let (mut presigs, mut primes) = (Vec::new(), Vec::new());
                for _ in 0..200 {
                    match store.take_presignature("k", "0,1", 0, None).await.unwrap() {
                        Some((id, _)) => presigs.push(id),
                        None => tokio::task::yield_now().await,
                    }
                    if let Some(two) = store.take_primes(1536, 2).await.unwrap() {
                        primes.extend(two.iter().map(|p| String::from_utf8_lossy(p).to_string()));
                    }
                }
                (presigs, primes)
            }));
        }
        writer.await.unwrap();
        let (mut presigs, mut primes) = (Vec::new(), Vec::new());
        for t in takers {
            let (a, b) = t.await.unwrap();
            presigs.extend(a);
            primes.extend(b);
        }
        while let Some((id, _)) = store.take_presignature("k", "0,1", 0, None).await.unwrap() {
            presigs.push(id);
        }
        while let Some(two) = store.take_primes(1536, 2).await.unwrap() {
            primes.extend(two.iter().map(|p| String::from_utf8_lossy(p).to_string()));
        }
        let unique: std::collections::HashSet<_> = presigs.iter().collect();
        assert_eq!(
            unique.len(),
            presigs.len(),
            "{name}: a presignature was handed out twice"
        );
        assert_eq!(presigs.len(), 80, "{name}: every presignature handed out");
        let unique: std::collections::HashSet<_> = primes.iter().collect();
        assert_eq!((unique.len(), primes.len()), (40, 40), "{name}: every prime once");
    }
}

#[tokio::test]
async fn tampered_share_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Arc::new(SqliteBackend::open(&dir.path().join("c.db")).await.unwrap());
    let store = Store::new(backend.clone(), &MasterKey::generate()).await.unwrap();
    store.put_key(&sample_key("k1"), 1, Some(b"share")).await.unwrap();
    let mut raw = backend.raw_share_for_tests("k1").await.unwrap().unwrap_or_default();
    if let Some(b) = raw.last_mut() {
        *b ^= 0x80;
    }
    backend.corrupt_share_for_tests("k1", &raw).await.unwrap();
    assert!(matches!(store.get_share("k1", 1, 0).await, Err(StoreError::Unseal(_))));
}

/// PostgreSQL not there at start-up: retried, then a clear error naming
/// the URL without its password.
#[tokio::test]
async fn unreachable_postgres_is_a_clear_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://sigil:hunter2@127.0.0.1:{port}/x");
    let started = std::time::Instant::now();
    let e = PgBackend::connect(&url, 1, std::time::Duration::from_millis(700))
        .await
        .err()
        .expect("nothing listens there");
    let text = e.to_string();
    assert!(matches!(e, StoreError::Unavailable(_)), "{text}");
    assert!(
        !text.contains("hunter2") && text.contains(&format!("127.0.0.1:{port}")),
        "{text}"
    );
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(300),
        "retried before giving up"
    );
}
