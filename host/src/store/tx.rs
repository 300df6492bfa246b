//! Cancel-safe write transactions (see [`WriteTx`]).

use std::fmt;

use sqlx::{Any, AnyConnection, AnyPool};

use super::{Backend, StoreError, run_script};

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
    /// See [`super::Store::begin_write`].
    pub(super) async fn begin(pool: &AnyPool, backend: Backend) -> Result<WriteTx, StoreError> {
        let conn = pool.acquire().await?;
        // From here on the transaction owns the connection: if this future
        // is dropped while `BEGIN` runs, `WriteTx`'s drop ends whatever
        // `BEGIN` started before the connection can be reused.
        let mut tx = WriteTx {
            conn: Some(conn),
            backend,
        };
        let begin = match backend {
            Backend::Sqlite => "BEGIN IMMEDIATE",
            Backend::Postgres => "BEGIN",
        };
        if let Err(e) = run_script(tx.conn(), begin).await {
            // On SQLite a `BEGIN` that failed opened nothing (SQLITE_BUSY).
            // On PostgreSQL the server may have run it before the error
            // reached us, so `Drop` rolls back (outside a transaction that
            // is only a warning).
            if backend == Backend::Sqlite {
                tx.release();
            }
            return Err(e.into());
        }
        Ok(tx)
    }

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

/// Writes that must commit in the same transaction as another module's
/// statement (e.g. a quota count beside the pending order it admits), on
/// either path that statement takes: SQLite's writer job, or a [`WriteTx`].
/// An `Err` from either method rolls back the whole transaction.
pub(crate) trait CoWrite: Send + 'static {
    /// Why the write refused or failed.
    type Error: From<StoreError> + Send + 'static;
    /// Inside a job of SQLite's writer thread.
    fn run_sqlite(self, conn: &rusqlite::Connection) -> Result<(), Self::Error>;
    /// Inside `tx`.
    fn run(
        self,
        tx: &mut WriteTx,
    ) -> impl std::future::Future<Output = Result<(), Self::Error>> + Send;
}
