//! Fresh, migrated databases for tests — one per test, on every available backend.
//!
//! SQLite is always available (a temporary file, so WAL and several pool
//! connections behave as in production). PostgreSQL is used when
//! [`POSTGRES_URL_ENV`] is set: each test gets its own schema, selected on every
//! pool connection through the URL's `options=-c search_path=…`, so tests run
//! in parallel without seeing each other. Databases are removed afterwards,
//! also when the test panics.
//!
//! For tests only; nothing in the host's request path uses this module.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use rand::RngCore;
use sqlx::{AnyConnection, Connection};

use super::{Backend, Store, StoreError, TenantId};

/// Environment variable naming a PostgreSQL server for tests,
/// e.g. `postgres://postgres@127.0.0.1:5432/test`.
pub const POSTGRES_URL_ENV: &str = "PAYHOST_TEST_POSTGRES_URL";

/// A fresh, migrated database and what it takes to remove it.
#[derive(Debug)]
pub struct TestDb {
    store: Store,
    url: String,
    cleanup: Cleanup,
}

#[derive(Debug)]
enum Cleanup {
    SqliteFile(PathBuf),
    PostgresSchema { admin_url: String, schema: String },
}

fn random_suffix() -> String {
    let mut bytes = [0u8; 8];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

impl TestDb {
    /// A migrated SQLite database in a new temporary file.
    pub async fn sqlite() -> Result<TestDb, StoreError> {
        let path = std::env::temp_dir().join(format!("payhost-test-{}.db", random_suffix()));
        let url = format!("sqlite://{}?mode=rwc", path.display());
        let store = Store::connect_and_migrate(&url).await?;
        Ok(TestDb {
            store,
            url,
            cleanup: Cleanup::SqliteFile(path),
        })
    }

    /// A migrated PostgreSQL schema of its own on the server at `admin_url`.
    pub async fn postgres(admin_url: &str) -> Result<TestDb, StoreError> {
        let schema = format!("payhost_test_{}", random_suffix());
        // The admin connection may be this process's first use of `Any`.
        sqlx::any::install_default_drivers();
        let mut admin = AnyConnection::connect(admin_url)
            .await
            .map_err(StoreError::Connect)?;
        super::run_script(&mut admin, &format!("CREATE SCHEMA {schema}")).await?;
        admin.close().await?;
        let sep = if admin_url.contains('?') { '&' } else { '?' };
        let url = format!("{admin_url}{sep}options=-c%20search_path%3D{schema}");
        let store = Store::connect_and_migrate(&url).await?;
        Ok(TestDb {
            store,
            url,
            cleanup: Cleanup::PostgresSchema {
                admin_url: admin_url.to_owned(),
                schema,
            },
        })
    }

    /// The store on this database.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The URL that reaches this database (for tests that start a host process).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Closes the pool and deletes the database. Best effort: failures are
    /// printed, never raised, so they cannot mask the test's own result.
    pub async fn cleanup(self) {
        if tokio::time::timeout(Duration::from_secs(5), self.store.close())
            .await
            .is_err()
        {
            eprintln!("payhost test db: pool did not close within 5s");
        }
        match self.cleanup {
            Cleanup::SqliteFile(path) => {
                for suffix in ["", "-wal", "-shm"] {
                    let mut p = path.clone().into_os_string();
                    p.push(suffix);
                    let _ = std::fs::remove_file(p);
                }
            }
            Cleanup::PostgresSchema { admin_url, schema } => {
                let drop = async {
                    let mut admin = AnyConnection::connect(&admin_url).await?;
                    super::run_script(
                        &mut admin,
                        &format!("DROP SCHEMA IF EXISTS {schema} CASCADE"),
                    )
                    .await?;
                    admin.close().await
                };
                match tokio::time::timeout(Duration::from_secs(10), drop).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => eprintln!("payhost test db: dropping {schema} failed: {e}"),
                    Err(_) => eprintln!("payhost test db: dropping {schema} timed out"),
                }
            }
        }
    }
}

/// One fresh database per available backend: SQLite always, PostgreSQL when
/// [`POSTGRES_URL_ENV`] is set. Panics if a configured backend is unreachable,
/// so a CI misconfiguration cannot silently skip the PostgreSQL suite.
pub async fn fresh_databases() -> Vec<TestDb> {
    let mut dbs = Vec::new();
    match TestDb::sqlite().await {
        Ok(db) => dbs.push(db),
        Err(e) => panic!("cannot create a SQLite test database: {e}"),
    }
    if let Ok(url) = std::env::var(POSTGRES_URL_ENV)
        && !url.is_empty()
    {
        match TestDb::postgres(&url).await {
            Ok(db) => dbs.push(db),
            Err(e) => {
                for db in dbs {
                    db.cleanup().await;
                }
                panic!("{POSTGRES_URL_ENV} is set but PostgreSQL is unusable: {e}");
            }
        }
    }
    dbs
}

/// Runs `test` once per available backend, each time on a fresh migrated
/// store, and removes the database afterwards. A panic inside `test` is
/// re-raised after clean-up, naming the backend it failed on.
pub async fn each_backend<F, Fut>(test: F)
where
    F: Fn(Store) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    each_backend_with_url(|store, _url| test(store)).await
}

/// [`each_backend`] that also hands `test` the database's URL, for tests
/// that open a second store or instance on the same database.
pub async fn each_backend_with_url<F, Fut>(test: F)
where
    F: Fn(Store, String) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut dbs = fresh_databases().await.into_iter();
    while let Some(db) = dbs.next() {
        let backend: Backend = db.store().backend();
        let outcome = tokio::spawn(test(db.store().clone(), db.url().to_string())).await;
        db.cleanup().await;
        if let Err(e) = outcome {
            // Remove the databases the remaining backends would have used.
            for rest in dbs {
                rest.cleanup().await;
            }
            eprintln!("test failed on the {backend} backend");
            if e.is_panic() {
                std::panic::resume_unwind(e.into_panic());
            }
            panic!("test on the {backend} backend was cancelled: {e}");
        }
    }
}

/// A new tenant called `name` on the free plan.
pub async fn tenant(store: &Store, name: &str) -> TenantId {
    crate::tenancy::create_tenant(
        store,
        &crate::tenancy::TenantName::parse(name).expect("name"),
        &crate::tenancy::PlanName::free(),
    )
    .await
    .expect("create tenant")
    .id
}
