//! Storage: the connection pool, the embedded migrations and the helpers every
//! repository shares.
//!
//! Owns: connecting to SQLite (the embedded default: one file, WAL) or
//! PostgreSQL (several host instances), applying `host/migrations/{sqlite,postgres}`,
//! write transactions that serialise correctly on both backends, classifying
//! constraint violations for the API layer, the persisted vocabulary in
//! [`domain`], and one small repository with no richer home: [`gateways`]
//! (tenant gateway settings, stored as ciphertext). Idempotency-Key records
//! live in `crate::idempotency`.
//!
//! Must never: know about HTTP, encrypt or decrypt anything, decide business
//! rules that belong to `ledger`/`tenancy`, or swallow a database error — every
//! failure is returned as a [`StoreError`].
//!
//! SQL portability: one [`sqlx::AnyPool`] serves both backends. Queries use
//! `$N` placeholders, which PostgreSQL and SQLite both bind by number (SQLite
//! treats `$N` as the named parameter `N`, so order and reuse are safe).
//! Integers are BIGINT/INTEGER, JSON is TEXT, timestamps are unix milliseconds,
//! booleans are read through a helper because SQLite returns them as integers.
//!
//! Parts: this file (the pool and its options), [`tx`] (cancel-safe write
//! transactions), `error` (errors and constraint classification), `sql`
//! (statements, keyset pages, row decoding), `writer` (SQLite's dedicated
//! writer thread), `migrate`, `files` (the private SQLite file).

pub mod domain;
mod error;
mod files;
pub mod gateways;
mod migrate;
mod sql;
/// Test databases: compiled for this crate's tests and, through the
/// `test-support` feature, for the end-to-end test crate; never in a release
/// build of the service.
#[cfg(any(test, feature = "test-support"))]
pub mod testing;
pub mod tx;
mod writer;

use std::fmt;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyConnection, AnyPool, Connection};

pub use domain::{
    ApiKeyId, AuditEventId, Currency, DeadLetterId, InboxEventId, MAX_LINE_MINOR, MAX_ORDER_MINOR,
    Money, OrderId, ParseError, PaymentId, ProviderId, RefundReservationId, TenantId, UnixMillis,
};
pub use error::{StoreError, Violation, classify};
pub use migrate::{MIGRATIONS_TABLE, MigrationReport};
pub(crate) use sql::{
    Arg, SqlBuf, corrupt, get_bool, get_bytes, get_i64, get_json, get_opt_bytes, get_opt_i64,
    get_opt_parsed, get_opt_text, get_parsed, get_text, get_time, page_of, per_backend, run_script,
};
pub use sql::{MAX_PAGE_SIZE, Page};
pub(crate) use tx::CoWrite;
pub use tx::WriteTx;
pub(crate) use writer::SqliteWriter;

/// Which database a [`Store`] talks to. Repositories use it only where the SQL
/// must differ; almost every statement is shared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// Embedded SQLite file (or in-memory database), single writer.
    Sqlite,
    /// PostgreSQL, shared by several host instances.
    Postgres,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        })
    }
}

impl Backend {
    /// Picks the backend from a database URL's scheme.
    pub fn from_url(url: &str) -> Result<Backend, StoreError> {
        if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Backend::Postgres)
        } else {
            // Never echo the URL: it may carry a password.
            let scheme = url.split(':').next().unwrap_or_default();
            Err(StoreError::UnsupportedUrl {
                scheme: scheme.chars().take(32).collect(),
            })
        }
    }
}

/// Tuning for [`Store::connect_with`].
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Pool size; `None` picks 8 for SQLite and 10 for PostgreSQL
    /// (an in-memory SQLite database always uses exactly one connection).
    pub max_connections: Option<u32>,
    /// How long a query waits for a free connection before failing.
    pub acquire_timeout: Duration,
    /// SQLite only: how long a writer waits for the write lock.
    pub sqlite_busy_timeout: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            max_connections: None,
            acquire_timeout: Duration::from_secs(10),
            sqlite_busy_timeout: Duration::from_secs(5),
        }
    }
}

/// The storage handle: a pool plus its backend. Cheap to clone (shares the pool).
///
/// Invariant: on SQLite every connection has `foreign_keys`, `recursive_triggers`
/// (so `INSERT OR REPLACE` cannot bypass the append-only DELETE triggers) and a
/// busy timeout set, and the file is in WAL mode.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// SQLite file databases only: the connection the checkout path writes
    /// through (see [`writer`]).
    writer: Option<SqliteWriter>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend)
            .field("size", &self.pool.size())
            .field("writer", &self.writer.is_some())
            .finish()
    }
}

/// What every SQLite connection runs first, the pool's and the writer's:
/// - `foreign_keys` and `recursive_triggers` are invariants the schema
///   relies on (the ledger's guards are foreign keys and triggers);
/// - `temp_store = MEMORY` keeps statement journals in memory. A statement
///   that can fire triggers, run inside a transaction, journals every page it
///   changes; past 64 KiB SQLite moves that journal to a temporary file,
///   created, written and deleted for that one statement. A paid booking's
///   `INSERT INTO payments`, with the refund guard's and the projection's
///   triggers, crosses it (about 16 pages) and paid ~60 µs for the file
///   (issue 15, `docs/benchmarks.md`). It also keeps sorts and temporary
///   tables in memory: request-path queries read through indexes and sort a
///   page at most; the one large sort is `payhost ledger verify` grouping
///   every row it checks.
pub(crate) const SQLITE_PRAGMAS: &str =
    "PRAGMA foreign_keys = ON; PRAGMA recursive_triggers = ON; PRAGMA temp_store = MEMORY;";

impl Store {
    /// Connects with default [`StoreOptions`]. Does not migrate.
    ///
    /// Accepted URLs: `sqlite://path/to/file.db` (created if missing),
    /// `sqlite:relative.db`, `sqlite::memory:`, `postgres://user@host/db`.
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        Store::connect_with(url, &StoreOptions::default()).await
    }

    /// Connects and applies pending migrations — what `payhost serve` does on start.
    pub async fn connect_and_migrate(url: &str) -> Result<Store, StoreError> {
        let store = Store::connect(url).await?;
        store.migrate().await?;
        Ok(store)
    }

    /// Connects with explicit options. Does not migrate.
    pub async fn connect_with(url: &str, options: &StoreOptions) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = Backend::from_url(url)?;
        let (url, memory) = match backend {
            Backend::Sqlite => normalize_sqlite_url(url),
            Backend::Postgres => (url.to_owned(), false),
        };
        let connect_options: AnyConnectOptions = url.parse().map_err(StoreError::Connect)?;

        if backend == Backend::Sqlite && !memory {
            files::create_private_sqlite_file(&url)?;
            // journal_mode is persistent in the file and needs an exclusive lock
            // (which busy_timeout cannot wait for), so set it once, alone.
            let mut conn = AnyConnection::connect_with(&connect_options)
                .await
                .map_err(StoreError::Connect)?;
            run_script(&mut conn, "PRAGMA journal_mode = WAL")
                .await
                .map_err(StoreError::Connect)?;
            conn.close().await.map_err(StoreError::Connect)?;
        }

        let default_size = match backend {
            Backend::Sqlite => 8,
            Backend::Postgres => 10,
        };
        let mut pool = AnyPoolOptions::new()
            .max_connections(options.max_connections.unwrap_or(default_size).max(1))
            .acquire_timeout(options.acquire_timeout);
        if backend == Backend::Sqlite {
            // A SQLite connection is a file handle in this process; it cannot
            // go stale like a socket, so pinging it on every acquire (one
            // more hop to its worker thread) buys nothing.
            pool = pool.test_before_acquire(false);
            let pragmas = format!(
                "{SQLITE_PRAGMAS} PRAGMA busy_timeout = {};",
                options.sqlite_busy_timeout.as_millis()
            );
            pool = pool.after_connect(move |conn, _meta| {
                let pragmas = pragmas.clone();
                Box::pin(async move {
                    sqlx::Executor::execute(&mut *conn, pragmas.as_str())
                        .await
                        .map(|_| ())
                })
            });
        }
        if memory {
            // Every SQLite connection to `:memory:` is its own database: keep one forever.
            pool = pool
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None);
        }
        let pool = pool
            .connect_with(connect_options)
            .await
            .map_err(StoreError::Connect)?;
        let writer = if backend == Backend::Sqlite && !memory {
            let file: sqlx::sqlite::SqliteConnectOptions =
                url.parse().map_err(StoreError::Connect)?;
            Some(SqliteWriter::open(
                file.get_filename(),
                options.sqlite_busy_timeout,
            )?)
        } else {
            None
        };
        Ok(Store {
            pool,
            backend,
            writer,
        })
    }

    /// Applies every embedded migration not yet recorded in
    /// [`MIGRATIONS_TABLE`], each in its own transaction. Idempotent and safe
    /// to run from several processes at once (SQLite write lock / PostgreSQL
    /// advisory lock). Fails if an applied migration was edited or the database
    /// knows a newer one.
    pub async fn migrate(&self) -> Result<MigrationReport, StoreError> {
        migrate::run(self).await
    }

    /// Which backend this store talks to.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// SQLite's dedicated writer, when this is an SQLite file database.
    pub(crate) fn sqlite_writer(&self) -> Option<&SqliteWriter> {
        self.writer.as_ref()
    }

    /// The underlying pool, for reads that need no transaction.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Starts a write transaction that serialises against other writers the
    /// same way on both backends: SQLite takes the write lock up front
    /// (`BEGIN IMMEDIATE`, so a read-then-write transaction can never fail
    /// with SQLITE_BUSY half-way); PostgreSQL relies on row locks taken by the
    /// statements inside.
    ///
    /// Cancel-safe: the future may be dropped at any `.await` (here, inside
    /// the transaction, or in [`WriteTx::commit`]) and the connection still
    /// never goes back to the pool inside a transaction. See [`WriteTx`].
    pub async fn begin_write(&self) -> Result<WriteTx, StoreError> {
        WriteTx::begin(&self.pool, self.backend).await
    }

    /// Checks the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Closes the pool, waiting for connections in use to be returned.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// The database URL for an SQLite file at `path` (as the config names it),
/// escaping the characters a URL would otherwise misread (`%`, `?`, `#`).
pub fn sqlite_file_url(path: &std::path::Path) -> String {
    let raw = path.to_string_lossy();
    let mut escaped = String::with_capacity(raw.len());
    for c in raw.chars() {
        match c {
            '%' => escaped.push_str("%25"),
            '?' => escaped.push_str("%3F"),
            '#' => escaped.push_str("%23"),
            c => escaped.push(c),
        }
    }
    format!("sqlite://{escaped}")
}

/// Adds `mode=rwc` (create the file if missing) unless a mode is given, and
/// reports whether the URL names an in-memory database.
fn normalize_sqlite_url(url: &str) -> (String, bool) {
    let memory = url.contains(":memory:") || url.contains("mode=memory");
    if memory || url.contains("mode=") {
        return (url.to_owned(), memory);
    }
    let sep = if url.contains('?') { '&' } else { '?' };
    (format!("{url}{sep}mode=rwc"), false)
}

#[cfg(test)]
mod tests;
