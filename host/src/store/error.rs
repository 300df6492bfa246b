//! Storage errors, and constraint violations classified the same way on
//! both backends so the API layer can answer them as client errors.

use std::sync::Arc;

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
