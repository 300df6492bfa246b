//! SQL building and row decoding shared by every repository: statements
//! with numbered `$N` placeholders valid on both backends, keyset pages, and
//! decoding helpers that turn a bad stored value into
//! [`StoreError::Corrupt`] instead of a panic.

use std::borrow::Cow;
use std::fmt;

use base64::Engine as _;
use sqlx::any::AnyRow;
use sqlx::{Any, AnyConnection, Row};

use super::{Backend, StoreError, UnixMillis};

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

/// A cursor this listing did not produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct InvalidCursor;

impl SqlBuf {
    /// Finishes a newest-first keyset listing over `(created_at, id)`: the
    /// condition "strictly older than `cursor`", then the order and a limit
    /// one above the page size (clamped to 1..=[`MAX_PAGE_SIZE`]), so
    /// [`page_of`] can tell whether another page follows. Returns the page
    /// size to hand to [`page_of`].
    pub(crate) fn newest_first_page(
        &mut self,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<u32, InvalidCursor> {
        let limit = limit.clamp(1, MAX_PAGE_SIZE);
        if let Some(cursor) = cursor {
            let key = Keyset::decode(cursor).ok_or(InvalidCursor)?;
            let ts = self.arg(Arg::Int(key.created_at));
            let id = self.arg(Arg::Text(key.id));
            self.push(&format!(
                " AND (created_at < {ts} OR (created_at = {ts} AND id < {id}))"
            ));
        }
        let lim = self.arg(Arg::Int(i64::from(limit) + 1));
        self.push(&format!(" ORDER BY created_at DESC, id DESC LIMIT {lim}"));
        Ok(limit)
    }
}

/// The page of a [`SqlBuf::newest_first_page`] query: at most `limit` of
/// `items`, and the cursor after the last when more followed. `key` gives an
/// item's `(created_at, id)`.
pub(crate) fn page_of<T>(
    mut items: Vec<T>,
    limit: u32,
    key: impl Fn(&T) -> (i64, String),
) -> Page<T> {
    let next_cursor = if items.len() > limit as usize {
        items.truncate(limit as usize);
        items.last().map(|last| {
            let (created_at, id) = key(last);
            Keyset { created_at, id }.encode()
        })
    } else {
        None
    };
    Page { items, next_cursor }
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

    /// This statement as a subquery: `{prefix}({self}){suffix}`, the same
    /// arguments.
    pub(crate) fn wrapped(self, prefix: &str, suffix: &str) -> SqlBuf {
        SqlBuf {
            sql: format!("{prefix}({}){suffix}", self.sql),
            args: self.args,
        }
    }

    /// The same statement behind `prefix` (e.g. `EXPLAIN `), for the
    /// query-plan tests.
    #[cfg(test)]
    pub(crate) fn prefixed(&self, prefix: &str) -> SqlBuf {
        SqlBuf {
            sql: format!("{prefix}{}", self.sql),
            args: self.args.clone(),
        }
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
        self.bind_sqlite(&mut statement)?;
        statement.raw_execute()
    }

    /// Runs the statement on SQLite's writer connection and decodes its
    /// first row (a `RETURNING` clause), if it returned one.
    pub(crate) fn query_row_sqlite<T>(
        &self,
        conn: &rusqlite::Connection,
        decode: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<Option<T>> {
        let mut statement = conn.prepare_cached(&self.sql)?;
        self.bind_sqlite(&mut statement)?;
        let mut rows = statement.raw_query();
        match rows.next()? {
            Some(row) => decode(row).map(Some),
            None => Ok(None),
        }
    }

    /// Runs the statement on SQLite's writer connection and decodes every
    /// row it returned (a `RETURNING` clause).
    pub(crate) fn query_rows_sqlite<T>(
        &self,
        conn: &rusqlite::Connection,
        mut decode: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<Vec<T>> {
        let mut statement = conn.prepare_cached(&self.sql)?;
        self.bind_sqlite(&mut statement)?;
        let mut rows = statement.raw_query();
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            out.push(decode(row)?);
        }
        Ok(out)
    }

    fn bind_sqlite(&self, statement: &mut rusqlite::CachedStatement<'_>) -> rusqlite::Result<()> {
        // SQLite numbers `$N` in order of first appearance, so look each up
        // by name rather than trusting the SQL text's order.
        for (i, arg) in self.args.iter().enumerate() {
            let name = format!("${}", i + 1);
            let index = statement
                .parameter_index(&name)?
                .ok_or(rusqlite::Error::InvalidParameterName(name))?;
            statement.raw_bind_parameter(index, arg)?;
        }
        Ok(())
    }
}

// Row decoding: every value read from the database goes through one of these,
// so a bad value becomes `StoreError::Corrupt` instead of a panic.

pub(crate) fn corrupt(column: &'static str, err: impl fmt::Display) -> StoreError {
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
