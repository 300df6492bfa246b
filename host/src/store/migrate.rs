//! The embedded migration runner.
//!
//! Migrations are plain SQL files under `host/migrations/<backend>/NNNN_name.sql`,
//! compiled into the binary. Both backends have the same versions and names;
//! each file is applied once, in its own transaction, and recorded with its
//! checksum in [`MIGRATIONS_TABLE`]. Applied files are never edited: a change
//! is a new file.

use sha2::{Digest, Sha256};

use super::{Backend, Store, StoreError, UnixMillis, get_i64, get_text, run_script};

/// Table recording applied migrations (version, name, checksum, applied_at).
pub const MIGRATIONS_TABLE: &str = "payhost_migrations";

/// One embedded migration.
struct Migration {
    version: i64,
    name: &'static str,
    sql: &'static str,
}

/// `migrations/<backend>/<NNNN>_<name>.sql` as migration `version`.
macro_rules! migration {
    ($backend:literal, $version:literal, $number:literal, $name:literal) => {
        Migration {
            version: $version,
            name: $name,
            sql: include_str!(concat!(
                "../../migrations/",
                $backend,
                "/",
                $number,
                "_",
                $name,
                ".sql"
            )),
        }
    };
}

const SQLITE: &[Migration] = &[
    migration!("sqlite", 1, "0001", "init"),
    migration!("sqlite", 2, "0002", "refund_hold_reference"),
    migration!("sqlite", 3, "0003", "checkout_key"),
    migration!("sqlite", 4, "0004", "order_gateway_account"),
    migration!("sqlite", 5, "0005", "money_bounds"),
    migration!("sqlite", 6, "0006", "features"),
    migration!("sqlite", 7, "0007", "quota_usage"),
    migration!("sqlite", 8, "0008", "balance_projection"),
    migration!("sqlite", 9, "0009", "webhooks"),
    migration!("sqlite", 10, "0010", "reconcile_checks"),
];

const POSTGRES: &[Migration] = &[
    migration!("postgres", 1, "0001", "init"),
    migration!("postgres", 2, "0002", "refund_hold_reference"),
    migration!("postgres", 3, "0003", "checkout_key"),
    migration!("postgres", 4, "0004", "order_gateway_account"),
    migration!("postgres", 5, "0005", "money_bounds"),
    migration!("postgres", 6, "0006", "features"),
    migration!("postgres", 7, "0007", "quota_usage"),
    migration!("postgres", 8, "0008", "balance_projection"),
    migration!("postgres", 9, "0009", "webhooks"),
    migration!("postgres", 10, "0010", "reconcile_checks"),
];

/// Serialises migrators across PostgreSQL sessions ("payhost" in ASCII).
const PG_MIGRATION_LOCK: i64 = 0x0070_6179_686f_7374;

const CREATE_TABLE_SQLITE: &str = "CREATE TABLE IF NOT EXISTS payhost_migrations (
    version INTEGER NOT NULL PRIMARY KEY,
    name TEXT NOT NULL,
    checksum TEXT NOT NULL,
    applied_at INTEGER NOT NULL)";
const CREATE_TABLE_POSTGRES: &str = "CREATE TABLE IF NOT EXISTS payhost_migrations (
    version BIGINT NOT NULL PRIMARY KEY,
    name TEXT NOT NULL,
    checksum TEXT NOT NULL,
    applied_at BIGINT NOT NULL)";

/// What [`Store::migrate`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    /// Versions applied by this call, in order.
    pub applied: Vec<i64>,
    /// Versions that were already applied before this call.
    pub already_applied: Vec<i64>,
}

fn migrations(backend: Backend) -> &'static [Migration] {
    match backend {
        Backend::Sqlite => SQLITE,
        Backend::Postgres => POSTGRES,
    }
}

fn checksum(sql: &str) -> String {
    hex::encode(Sha256::digest(sql.as_bytes()))
}

/// Opens a locked migration transaction with the bookkeeping table present.
async fn locked_tx(store: &Store) -> Result<super::WriteTx, StoreError> {
    let mut tx = store.begin_write().await?;
    let create = match store.backend() {
        Backend::Sqlite => CREATE_TABLE_SQLITE,
        Backend::Postgres => {
            // SQLite's BEGIN IMMEDIATE already excludes other writers.
            sqlx::query("SELECT 1 AS locked FROM pg_advisory_xact_lock($1)")
                .bind(PG_MIGRATION_LOCK)
                .execute(tx.conn())
                .await?;
            CREATE_TABLE_POSTGRES
        }
    };
    run_script(tx.conn(), create).await?;
    Ok(tx)
}

async fn applied(tx: &mut super::WriteTx) -> Result<Vec<(i64, String)>, StoreError> {
    let rows = sqlx::query("SELECT version, checksum FROM payhost_migrations ORDER BY version")
        .fetch_all(tx.conn())
        .await?;
    rows.iter()
        .map(|row| Ok((get_i64(row, "version")?, get_text(row, "checksum")?)))
        .collect()
}

pub(super) async fn run(store: &Store) -> Result<MigrationReport, StoreError> {
    let known = migrations(store.backend());

    // Check what is there before changing anything.
    let mut tx = locked_tx(store).await?;
    let before = applied(&mut tx).await?;
    tx.commit().await?;
    for (version, sum) in &before {
        let Some(m) = known.iter().find(|m| m.version == *version) else {
            return Err(StoreError::UnknownMigration { version: *version });
        };
        if *sum != checksum(m.sql) {
            return Err(StoreError::MigrationChanged {
                version: m.version,
                name: m.name,
            });
        }
    }

    let mut report = MigrationReport {
        applied: Vec::new(),
        already_applied: before.iter().map(|(v, _)| *v).collect(),
    };
    for m in known {
        if report.already_applied.contains(&m.version) {
            continue;
        }
        let mut tx = locked_tx(store).await?;
        // Another process may have applied it while we waited for the lock.
        if applied(&mut tx).await?.iter().any(|(v, _)| *v == m.version) {
            tx.rollback().await?;
            report.already_applied.push(m.version);
            continue;
        }
        let wrap = |source| StoreError::Migration {
            version: m.version,
            name: m.name,
            source,
        };
        run_script(tx.conn(), m.sql).await.map_err(wrap)?;
        sqlx::query(
            "INSERT INTO payhost_migrations (version, name, checksum, applied_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(m.version)
        .bind(m.name)
        .bind(checksum(m.sql))
        .bind(UnixMillis::now().as_i64())
        .execute(tx.conn())
        .await
        .map_err(wrap)?;
        tx.commit().await?;
        tracing::info!(version = m.version, name = m.name, "applied migration");
        report.applied.push(m.version);
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_backends_have_the_same_migrations_in_order() {
        let names = |ms: &[Migration]| ms.iter().map(|m| (m.version, m.name)).collect::<Vec<_>>();
        assert_eq!(names(SQLITE), names(POSTGRES));
        assert!(SQLITE.windows(2).all(|w| w[0].version < w[1].version));
        assert_eq!(SQLITE.first().map(|m| m.version), Some(1));
    }
}
