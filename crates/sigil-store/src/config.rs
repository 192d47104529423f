//! Which backend a store runs on: the `[store]` section of a node's (or the
//! prime service's) config, and [`open`], the one way both open a store.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::{Backend, MasterKey, PgBackend, SqliteBackend, Store, StoreError};

/// The database kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// Embedded SQLite in the data directory (the default).
    #[default]
    Sqlite,
    /// A PostgreSQL server (`url` or `url_file`).
    Postgres,
}

/// `[store]`: `kind = "sqlite"` (default; file in the data directory) or
/// `kind = "postgres"` with `url` (`postgres://user:pass@host:port/db`) or
/// `url_file` (a file holding the URL, so the password stays out of the
/// config), `pool_size` connections (default 8) and `startup_timeout_s`
/// (default 30: how long a database that is still starting is retried).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// The backend.
    #[serde(default)]
    pub kind: StoreKind,
    /// PostgreSQL URL (secret if it holds a password; prefer `url_file`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// File holding the PostgreSQL URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_file: Option<PathBuf>,
    /// PostgreSQL connections in the pool.
    #[serde(default = "default_pool_size")]
    pub pool_size: u32,
    /// Seconds to keep retrying an unreachable PostgreSQL at start-up.
    #[serde(default = "default_startup_timeout_s")]
    pub startup_timeout_s: u64,
}

fn default_pool_size() -> u32 {
    8
}

fn default_startup_timeout_s() -> u64 {
    30
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            kind: StoreKind::Sqlite,
            url: None,
            url_file: None,
            pool_size: default_pool_size(),
            startup_timeout_s: default_startup_timeout_s(),
        }
    }
}

impl StoreConfig {
    /// A PostgreSQL store at `url`.
    pub fn postgres(url: &str) -> Self {
        StoreConfig {
            kind: StoreKind::Postgres,
            url: Some(url.to_string()),
            ..Self::default()
        }
    }

    fn postgres_url(&self) -> Result<String, StoreError> {
        match (&self.url, &self.url_file) {
            (Some(u), None) => Ok(u.clone()),
            (None, Some(f)) => std::fs::read_to_string(f)
                .map(|s| s.trim().to_string())
                .map_err(|e| StoreError::Config(format!("store.url_file {}: {e}", f.display()))),
            _ => Err(StoreError::Config(
                "kind = \"postgres\" needs exactly one of store.url and store.url_file".into(),
            )),
        }
    }
}

/// Opens the store `cfg` describes: SQLite at `data_dir/sqlite_file`, or
/// PostgreSQL (retried while it starts), migrated, sealing under `master`.
///
/// # Errors
/// [`StoreError::Config`], [`StoreError::Unavailable`] (PostgreSQL not
/// reachable in time, URL shown without its password),
/// [`StoreError::WrongMasterKey`], database errors.
pub async fn open(
    cfg: &StoreConfig,
    data_dir: &Path,
    sqlite_file: &str,
    master: &MasterKey,
) -> Result<Store, StoreError> {
    let backend: Arc<dyn Backend> = match cfg.kind {
        StoreKind::Sqlite => Arc::new(SqliteBackend::open(&data_dir.join(sqlite_file)).await?),
        StoreKind::Postgres => Arc::new(
            PgBackend::connect(
                &cfg.postgres_url()?,
                cfg.pool_size,
                Duration::from_secs(cfg.startup_timeout_s),
            )
            .await?,
        ),
    };
    Store::new(backend, master).await
}

/// A SQLite store at `path` (tests and tools).
///
/// # Errors
/// As [`open`].
pub async fn open_sqlite(path: &Path, master: &MasterKey) -> Result<Store, StoreError> {
    Store::new(Arc::new(SqliteBackend::open(path).await?), master).await
}
