//! Storage: the connection pool, the embedded migrations and the helpers every
//! repository shares.
//!
//! Owns: connecting to SQLite (the embedded default: one file, WAL) or
//! PostgreSQL (several host instances), applying `host/migrations/{sqlite,postgres}`,
//! write transactions that serialise correctly on both backends, classifying
//! constraint violations for the API layer, the persisted vocabulary in
//! [`domain`], and two small repositories with no richer home:
//! [`idempotency`] (Idempotency-Key records) and [`gateways`] (tenant gateway
//! settings, stored as ciphertext).
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

pub mod domain;
mod files;
pub mod gateways;
pub mod idempotency;
mod migrate;
pub mod testing;
mod writer;

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions, AnyRow};
use sqlx::{Any, AnyConnection, AnyPool, Connection, Row};

pub use domain::{
    ApiKeyId, AuditEventId, Currency, MAX_LINE_MINOR, MAX_ORDER_MINOR, Money, OrderId, ParseError,
    PaymentId, ProviderId, RefundReservationId, TenantId, UnixMillis,
};
pub use migrate::{MIGRATIONS_TABLE, MigrationReport};
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

/// Everything that can go wrong in the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database URL's scheme is neither `sqlite:` nor `postgres://`.
    #[error("unsupported database url scheme `{scheme}`: expected `sqlite:` or `postgres://`")]
    UnsupportedUrl {
        /// The scheme that was given (the rest of the URL is withheld: it may hold a password).
        scheme: String,
    },
    /// Opening the pool failed.
    #[error("could not connect to the database: {0}")]
    Connect(#[source] sqlx::Error),
    /// A migration's SQL failed; its transaction was rolled back.
    #[error("migration {version} ({name}) failed: {source}")]
    Migration {
        /// Version number of the failing migration.
        version: i64,
        /// Its file name stem.
        name: &'static str,
        /// The database error.
        #[source]
        source: sqlx::Error,
    },
    /// An applied migration's text differs from the one embedded in this binary.
    #[error(
        "migration {version} ({name}) was edited after it was applied; add a new migration instead"
    )]
    MigrationChanged {
        /// Version number of the edited migration.
        version: i64,
        /// Its file name stem.
        name: &'static str,
    },
    /// The database has a migration this binary does not know (it is newer).
    #[error(
        "database has migration {version}, which this payhost binary does not know; upgrade payhost"
    )]
    UnknownMigration {
        /// The unknown version.
        version: i64,
    },
    /// A query failed. Use [`StoreError::violation`] to tell client errors
    /// (constraint violations) from server errors.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// A statement on SQLite's dedicated writer connection failed
    /// ([`StoreError::violation`] classifies it like [`StoreError::Database`]).
    /// Shared because one failed `COMMIT` fails every job of its batch.
    #[error("database error: {0}")]
    Sqlite(#[source] Arc<rusqlite::Error>),
    /// SQLite's writer thread is gone, or a job on it panicked (its writes
    /// were rolled back).
    #[error("{0}")]
    WriterStopped(&'static str),
    /// A stored value does not have the shape its column requires.
    #[error("corrupt stored value in `{column}`: {reason}")]
    Corrupt {
        /// Column that held the bad value.
        column: &'static str,
        /// What was wrong with it.
        reason: String,
    },
}

impl StoreError {
    /// The constraint violation behind this error, if it is one.
    pub fn violation(&self) -> Option<Violation> {
        match self {
            StoreError::Database(e) => classify(e),
            StoreError::Sqlite(e) => classify_sqlite(e),
            _ => None,
        }
    }
}

/// A database-enforced rule that a statement broke. The API layer maps these
/// to client errors (409/422) instead of 500s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// A unique or primary key constraint. `constraint` is the constraint/index
    /// name on PostgreSQL and the message detail on SQLite (columns or index name).
    Unique {
        /// Which constraint, when the backend says.
        constraint: Option<String>,
    },
    /// A CHECK constraint. `constraint` as for [`Violation::Unique`].
    Check {
        /// Which constraint, when the backend says.
        constraint: Option<String>,
    },
    /// A foreign key (e.g. an unknown tenant id).
    ForeignKey {
        /// Which constraint, when the backend says.
        constraint: Option<String>,
    },
    /// A NOT NULL column received NULL.
    NotNull,
    /// A payhost trigger refused the statement (append-only tables, refund
    /// targets). `message` starts with `payhost:`.
    Trigger {
        /// The trigger's message.
        message: String,
    },
}

impl Violation {
    /// Whether the violated constraint's name or detail mentions `name`.
    pub fn mentions(&self, name: &str) -> bool {
        match self {
            Violation::Unique { constraint }
            | Violation::Check { constraint }
            | Violation::ForeignKey { constraint } => {
                constraint.as_deref().is_some_and(|c| c.contains(name))
            }
            Violation::NotNull => false,
            Violation::Trigger { message } => message.contains(name),
        }
    }
}

/// SQLite's extended code for `RAISE(ABORT, …)` in a trigger (SQLITE_CONSTRAINT_TRIGGER).
const SQLITE_CONSTRAINT_TRIGGER: &str = "1811";
/// PostgreSQL's SQLSTATE for `RAISE EXCEPTION` without an explicit code.
const PG_RAISE_EXCEPTION: &str = "P0001";

/// Classifies a database error as a constraint violation, on either backend.
/// Returns `None` for anything else (connection loss, syntax, …), which callers
/// should treat as a server error.
pub fn classify(err: &sqlx::Error) -> Option<Violation> {
    let sqlx::Error::Database(db) = err else {
        return None;
    };
    let message = db.message();
    // PostgreSQL names the constraint; SQLite puts it in the message after "failed: ".
    let constraint = db.constraint().map(str::to_owned).or_else(|| {
        message
            .split_once("failed: ")
            .map(|(_, detail)| detail.to_owned())
    });
    match db.kind() {
        sqlx::error::ErrorKind::UniqueViolation => Some(Violation::Unique { constraint }),
        sqlx::error::ErrorKind::CheckViolation => Some(Violation::Check { constraint }),
        sqlx::error::ErrorKind::ForeignKeyViolation => Some(Violation::ForeignKey { constraint }),
        sqlx::error::ErrorKind::NotNullViolation => Some(Violation::NotNull),
        _ => match db.code().as_deref() {
            Some(SQLITE_CONSTRAINT_TRIGGER) | Some(PG_RAISE_EXCEPTION) => {
                Some(Violation::Trigger {
                    message: message.to_owned(),
                })
            }
            _ => None,
        },
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Sqlite(Arc::new(e))
    }
}

/// [`classify`] for an error of the SQLite writer connection (same
/// messages; the kind comes from SQLite's extended result code).
fn classify_sqlite(err: &rusqlite::Error) -> Option<Violation> {
    use rusqlite::ffi;
    let rusqlite::Error::SqliteFailure(code, message) = err else {
        return None;
    };
    let message = message.clone().unwrap_or_default();
    let constraint = message
        .split_once("failed: ")
        .map(|(_, detail)| detail.to_owned());
    match code.extended_code {
        ffi::SQLITE_CONSTRAINT_UNIQUE | ffi::SQLITE_CONSTRAINT_PRIMARYKEY => {
            Some(Violation::Unique { constraint })
        }
        ffi::SQLITE_CONSTRAINT_CHECK => Some(Violation::Check { constraint }),
        ffi::SQLITE_CONSTRAINT_FOREIGNKEY => Some(Violation::ForeignKey { constraint }),
        ffi::SQLITE_CONSTRAINT_NOTNULL => Some(Violation::NotNull),
        ffi::SQLITE_CONSTRAINT_TRIGGER => Some(Violation::Trigger { message }),
        _ => None,
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
                "PRAGMA foreign_keys = ON; PRAGMA recursive_triggers = ON; PRAGMA busy_timeout = {};",
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
        let conn = self.pool.acquire().await?;
        // From here on the transaction owns the connection: if this future
        // is dropped while `BEGIN` runs, `WriteTx`'s drop ends whatever
        // `BEGIN` started before the connection can be reused.
        let mut tx = WriteTx {
            conn: Some(conn),
            backend: self.backend,
        };
        let begin = match self.backend {
            Backend::Sqlite => "BEGIN IMMEDIATE",
            Backend::Postgres => "BEGIN",
        };
        if let Err(e) = run_script(tx.conn(), begin).await {
            // On SQLite a `BEGIN` that failed opened nothing (SQLITE_BUSY).
            // On PostgreSQL the server may have run it before the error
            // reached us, so `Drop` rolls back (outside a transaction that
            // is only a warning).
            if self.backend == Backend::Sqlite {
                tx.release();
            }
            return Err(e.into());
        }
        Ok(tx)
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

/// A write transaction from [`Store::begin_write`]. Dropped without
/// [`WriteTx::commit`], it rolls back.
///
/// Why this does not use `sqlx::Transaction`: sqlx 0.8 counts a connection's
/// transaction depth in the client, and a future dropped while `BEGIN` or
/// `COMMIT` is on the wire leaves that count disagreeing with the server.
/// On SQLite the worker thread still runs the `BEGIN` and the connection
/// went back to the pool holding the write lock (every later write then
/// failed with "non-zero transaction depth" and "database is locked"); on
/// PostgreSQL a connection went back inside a transaction that nobody would
/// commit, so another request's confirmed write was silently rolled back.
///
/// So this type issues `BEGIN`/`COMMIT`/`ROLLBACK` itself and keeps one
/// invariant: **the connection returns to the pool only after a `COMMIT` or
/// `ROLLBACK` it sent has answered successfully.** Any other way out (an
/// error, or a drop at any `.await`) hands the connection to a task that
/// sends `ROLLBACK` after whatever is still running on it, and closes the
/// connection instead of returning it if that fails (or if there is no
/// runtime left to run the task). Until then the pool counts the connection
/// as in use, so no other request's statements can run inside the
/// transaction.
pub struct WriteTx {
    /// `Some` until the transaction ended (committed, rolled back, or handed
    /// to the rollback task by `Drop`).
    conn: Option<sqlx::pool::PoolConnection<Any>>,
    backend: Backend,
}

impl fmt::Debug for WriteTx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriteTx")
            .field("backend", &self.backend)
            .finish()
    }
}

impl WriteTx {
    /// Makes every statement of the transaction durable, atomically.
    ///
    /// If this future is dropped before `COMMIT` answers, the outcome is
    /// unknown to the caller (the commit may or may not have happened); the
    /// connection is rolled back or closed either way.
    pub async fn commit(mut self) -> Result<(), StoreError> {
        // An error leaves `self` to `Drop`, which rolls back or closes.
        run_script(self.conn(), "COMMIT").await?;
        self.release();
        Ok(())
    }

    /// Discards every statement of the transaction.
    pub async fn rollback(mut self) -> Result<(), StoreError> {
        run_script(self.conn(), "ROLLBACK").await?;
        self.release();
        Ok(())
    }

    /// The backend this transaction runs on.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The connection, for repositories in this crate.
    pub(crate) fn conn(&mut self) -> &mut AnyConnection {
        // `conn` is only taken by `release` and `Drop`, which end the
        // transaction, so a live `WriteTx` always has it.
        self.conn
            .as_deref_mut()
            .expect("a live WriteTx holds its connection")
    }

    /// Returns the connection to the pool: only after a statement that ended
    /// any transaction on it answered.
    fn release(&mut self) {
        drop(self.conn.take());
    }
}

impl Drop for WriteTx {
    fn drop(&mut self) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        let backend = self.backend;
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                // Statements of a dropped future still queued on the
                // connection run first (the SQLite worker and the PostgreSQL
                // protocol both keep order); the ROLLBACK comes after them.
                runtime.spawn(async move {
                    match run_script(&mut conn, "ROLLBACK").await {
                        Ok(()) => {}
                        // The transaction had already ended (its COMMIT ran,
                        // or its BEGIN never did): the connection is in
                        // autocommit and may go back. Closing it instead
                        // would lose an in-memory database entirely.
                        Err(error) if backend == Backend::Sqlite && no_transaction(&error) => {}
                        Err(error) => {
                            tracing::warn!(%error, "rollback of a dropped transaction failed; closing its connection");
                            conn.close_on_drop();
                        }
                    }
                });
            }
            // No runtime to roll back on: take the connection out of the
            // pool's books and drop it, which closes it (and the server
            // rolls back). `close_on_drop` would need a runtime to close.
            Err(_) => drop(conn.detach()),
        }
    }
}

/// Whether SQLite refused a `ROLLBACK` because no transaction was open.
fn no_transaction(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .is_some_and(|e| e.message().contains("no transaction is active"))
}

/// One page of a keyset-paginated listing, newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    /// The items of this page.
    pub items: Vec<T>,
    /// Opaque cursor for the next (older) page; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// Largest page any listing returns.
pub const MAX_PAGE_SIZE: u32 = 500;

/// The position after which a newest-first listing continues:
/// rows strictly older than `(created_at, id)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Keyset {
    pub(crate) created_at: i64,
    pub(crate) id: String,
}

impl Keyset {
    /// Opaque, URL-safe encoding handed to clients.
    pub(crate) fn encode(&self) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(format!("{}.{}", self.created_at, self.id))
    }

    /// Parses a cursor from [`Keyset::encode`]; `None` if it is not one.
    pub(crate) fn decode(cursor: &str) -> Option<Keyset> {
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(cursor)
            .ok()?;
        let raw = String::from_utf8(raw).ok()?;
        let (ts, id) = raw.split_once('.')?;
        let created_at = ts.parse().ok()?;
        if id.is_empty() || id.len() > 100 {
            return None;
        }
        Some(Keyset {
            created_at,
            id: id.to_owned(),
        })
    }
}

impl Keyset {
    /// Appends to `q` the clause that keeps rows strictly older than this
    /// position in the (created_at, id) order.
    pub(crate) fn push_older(self, q: &mut SqlBuf) {
        let ts = q.arg(Arg::Int(self.created_at));
        let id = q.arg(Arg::Text(self.id));
        q.push(&format!(
            " AND (created_at < {ts} OR (created_at = {ts} AND id < {id}))"
        ));
    }

    /// Appends the newest-first order and a limit of `limit + 1` rows, the
    /// extra row telling [`Keyset::page`] whether another page follows.
    pub(crate) fn push_order_limit(q: &mut SqlBuf, limit: u32) {
        let lim = q.arg(Arg::Int(i64::from(limit) + 1));
        q.push(&format!(" ORDER BY created_at DESC, id DESC LIMIT {lim}"));
    }

    /// The page of `items` (fetched with [`Keyset::push_order_limit`]):
    /// at most `limit` of them, and a cursor at the last one's `key` when
    /// more rows followed.
    pub(crate) fn page<T>(mut items: Vec<T>, limit: u32, key: impl Fn(&T) -> Keyset) -> Page<T> {
        let next_cursor = if items.len() > limit as usize {
            items.truncate(limit as usize);
            items.last().map(|last| key(last).encode())
        } else {
            None
        };
        Page { items, next_cursor }
    }
}

/// A bound argument of a dynamically built statement.
#[derive(Debug, Clone)]
pub(crate) enum Arg {
    Text(String),
    Int(i64),
    Null,
}

impl Arg {
    /// `Text`, or `Null` for `None`.
    pub(crate) fn opt_text(value: Option<&str>) -> Arg {
        value.map_or(Arg::Null, |v| Arg::Text(v.to_owned()))
    }
}

impl rusqlite::ToSql for Arg {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(match self {
            Arg::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            Arg::Int(i) => ToSqlOutput::Borrowed(ValueRef::Integer(*i)),
            Arg::Null => ToSqlOutput::Borrowed(ValueRef::Null),
        })
    }
}

/// Builds SQL with numbered `$N` placeholders, valid on both backends.
#[derive(Debug, Default)]
pub(crate) struct SqlBuf {
    sql: String,
    args: Vec<Arg>,
}

impl SqlBuf {
    pub(crate) fn new(sql: &str) -> Self {
        Self {
            sql: sql.to_owned(),
            args: Vec::new(),
        }
    }

    /// A complete statement whose `$N` placeholders are `args[N - 1]`.
    pub(crate) fn bound(sql: String, args: Vec<Arg>) -> Self {
        Self { sql, args }
    }

    /// Appends raw SQL (never user input).
    pub(crate) fn push(&mut self, sql: &str) -> &mut Self {
        self.sql.push_str(sql);
        self
    }

    /// Adds an argument and returns its placeholder.
    pub(crate) fn arg(&mut self, arg: Arg) -> String {
        self.args.push(arg);
        format!("${}", self.args.len())
    }

    pub(crate) fn query(&self) -> sqlx::query::Query<'_, Any, sqlx::any::AnyArguments<'_>> {
        let mut q = sqlx::query(self.sql.as_str());
        for arg in &self.args {
            q = match arg {
                Arg::Text(s) => q.bind(s.clone()),
                Arg::Int(i) => q.bind(*i),
                Arg::Null => q.bind(None::<String>),
            };
        }
        q
    }

    /// Runs the statement on SQLite's writer connection (the statement is
    /// prepared once per connection and cached); returns the rows changed.
    pub(crate) fn execute_sqlite(&self, conn: &rusqlite::Connection) -> rusqlite::Result<usize> {
        let mut statement = conn.prepare_cached(&self.sql)?;
        // SQLite numbers `$N` in order of first appearance, so look each up
        // by name rather than trusting the SQL text's order.
        for (i, arg) in self.args.iter().enumerate() {
            let name = format!("${}", i + 1);
            let index = statement
                .parameter_index(&name)?
                .ok_or(rusqlite::Error::InvalidParameterName(name))?;
            statement.raw_bind_parameter(index, arg)?;
        }
        statement.raw_execute()
    }
}

// Row decoding: every value read from the database goes through one of these,
// so a bad value becomes `StoreError::Corrupt` instead of a panic.

fn corrupt(column: &'static str, err: impl fmt::Display) -> StoreError {
    StoreError::Corrupt {
        column,
        reason: err.to_string(),
    }
}

pub(crate) fn get_text(row: &AnyRow, column: &'static str) -> Result<String, StoreError> {
    row.try_get::<String, _>(column)
        .map_err(|e| corrupt(column, e))
}

pub(crate) fn get_opt_text(
    row: &AnyRow,
    column: &'static str,
) -> Result<Option<String>, StoreError> {
    row.try_get::<Option<String>, _>(column)
        .map_err(|e| corrupt(column, e))
}

pub(crate) fn get_i64(row: &AnyRow, column: &'static str) -> Result<i64, StoreError> {
    row.try_get::<i64, _>(column)
        .map_err(|e| corrupt(column, e))
}

pub(crate) fn get_opt_i64(row: &AnyRow, column: &'static str) -> Result<Option<i64>, StoreError> {
    row.try_get::<Option<i64>, _>(column)
        .map_err(|e| corrupt(column, e))
}

/// Booleans: PostgreSQL returns BOOLEAN, SQLite returns INTEGER 0/1.
pub(crate) fn get_bool(row: &AnyRow, column: &'static str) -> Result<bool, StoreError> {
    if let Ok(b) = row.try_get::<bool, _>(column) {
        return Ok(b);
    }
    match get_i64(row, column)? {
        0 => Ok(false),
        1 => Ok(true),
        other => Err(corrupt(column, format!("{other} is not a boolean"))),
    }
}

pub(crate) fn get_bytes(row: &AnyRow, column: &'static str) -> Result<Vec<u8>, StoreError> {
    row.try_get::<Vec<u8>, _>(column)
        .map_err(|e| corrupt(column, e))
}

pub(crate) fn get_opt_bytes(
    row: &AnyRow,
    column: &'static str,
) -> Result<Option<Vec<u8>>, StoreError> {
    row.try_get::<Option<Vec<u8>>, _>(column)
        .map_err(|e| corrupt(column, e))
}

pub(crate) fn get_parsed<T, E: fmt::Display>(
    row: &AnyRow,
    column: &'static str,
    parse: impl FnOnce(&str) -> Result<T, E>,
) -> Result<T, StoreError> {
    let raw = get_text(row, column)?;
    parse(&raw).map_err(|e| corrupt(column, e))
}

pub(crate) fn get_opt_parsed<T, E: fmt::Display>(
    row: &AnyRow,
    column: &'static str,
    parse: impl FnOnce(&str) -> Result<T, E>,
) -> Result<Option<T>, StoreError> {
    match get_opt_text(row, column)? {
        Some(raw) => parse(&raw).map(Some).map_err(|e| corrupt(column, e)),
        None => Ok(None),
    }
}

pub(crate) fn get_json(
    row: &AnyRow,
    column: &'static str,
) -> Result<serde_json::Value, StoreError> {
    get_parsed(row, column, |raw| {
        serde_json::from_str::<serde_json::Value>(raw)
    })
}

pub(crate) fn get_time(row: &AnyRow, column: &'static str) -> Result<UnixMillis, StoreError> {
    get_i64(row, column).map(UnixMillis)
}

/// Runs one or more `;`-separated statements without parameters (PostgreSQL's
/// simple-query protocol; every statement on SQLite). Used for migrations and
/// pragmas. Written over `Executor` directly because `raw_sql(..).execute(..)`
/// futures are not provably `Send` for every borrow lifetime.
pub(crate) async fn run_script(conn: &mut AnyConnection, sql: &str) -> Result<(), sqlx::Error> {
    sqlx::Executor::execute(conn, sql).await.map(|_| ())
}

/// A `Cow` for static SQL that differs per backend.
pub(crate) fn per_backend(
    backend: Backend,
    sqlite: &'static str,
    postgres: &'static str,
) -> Cow<'static, str> {
    Cow::Borrowed(match backend {
        Backend::Sqlite => sqlite,
        Backend::Postgres => postgres,
    })
}

#[cfg(test)]
mod tests;
