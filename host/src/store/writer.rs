//! SQLite's dedicated writer: one thread owns one write connection and runs
//! the checkout path's write transactions as jobs, committing the jobs that
//! queue up behind an fsync together (group commit).
//!
//! Why it exists: through sqlx every SQLite statement is a round trip to the
//! connection's worker thread (about 150 µs on a loaded 2-core machine), and
//! a checkout's writes took five of them while holding SQLite's single write
//! lock. Here a whole transaction is one hop, and under load one `COMMIT`
//! (one fsync) covers many checkouts.
//!
//! Guarantees:
//! - A job's reply is sent only after the `COMMIT` that contains it returned,
//!   so an `Ok` is as durable as a plain sqlx commit (`synchronous = FULL`).
//! - Jobs are isolated by savepoints: a job that fails (or panics) rolls back
//!   its own writes only; the rest of its batch commits.
//! - If `BEGIN` or `COMMIT` fails, every job of the batch gets that error and
//!   none of their writes stay. If SQLite itself rolls the transaction back
//!   part-way (disk full, I/O error), the jobs that ran get an error and the
//!   ones that had not run yet go into the next batch; no job ever runs, and
//!   commits, outside the batch's transaction.
//!
//! Everything else (reads, and the writes off the checkout path) keeps using
//! the sqlx pool; both sides wait for the write lock through `busy_timeout`.
//! An in-memory database has no writer: a second connection would open a
//! different database.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rusqlite::Connection;
use tokio::sync::oneshot;

use super::StoreError;

/// At most this many jobs share one commit, so one batch cannot hold the
/// write lock for long.
const MAX_BATCH: usize = 64;

/// How long the idle thread keeps polling for the next job before it
/// blocks. A thread that blocked is slow to wake on a virtual machine
/// (about 100 µs here: the idle vCPU halts), and a checkout paid that twice
/// per write: its pending order comes about 0.2 ms after the previous
/// checkout's booking, and its booking about 0.35 ms after its pending
/// order. The thread yields between polls, so any runnable thread gets the
/// CPU first; what it costs is up to this much CPU after the last write of
/// a burst.
const POLL_BEFORE_BLOCKING: Duration = Duration::from_micros(600);

/// Handle to the writer thread. Cheap to clone; the thread ends when the
/// last handle is dropped.
#[derive(Clone)]
pub(crate) struct SqliteWriter {
    jobs: mpsc::Sender<Box<dyn Job>>,
    counters: Arc<Counters>,
}

#[derive(Debug, Default)]
struct Counters {
    /// Jobs sent and not yet picked up by the thread.
    queued: AtomicUsize,
    /// Transactions committed (batches, not jobs).
    commits: AtomicU64,
}

impl std::fmt::Debug for SqliteWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteWriter")
            .field("counters", &self.counters)
            .finish()
    }
}

/// A job as the writer thread sees it.
trait Job: Send {
    /// Runs inside the batch's transaction; returns what to do once the
    /// batch's `COMMIT` has (or has not) succeeded.
    fn run(self: Box<Self>, conn: &Connection) -> Box<dyn Completion>;
    /// The batch could not even start.
    fn abandon(self: Box<Self>, error: Arc<rusqlite::Error>);
}

trait Completion: Send {
    fn complete(self: Box<Self>, commit: Result<(), &Arc<rusqlite::Error>>);
}

struct Pending<T, E, F> {
    work: F,
    reply: oneshot::Sender<Result<T, E>>,
}

struct Ran<T, E> {
    result: Result<T, E>,
    reply: oneshot::Sender<Result<T, E>>,
}

impl<T, E, F> Job for Pending<T, E, F>
where
    T: Send + 'static,
    E: From<StoreError> + Send + 'static,
    F: FnOnce(&Connection) -> Result<T, E> + Send + 'static,
{
    fn run(self: Box<Self>, conn: &Connection) -> Box<dyn Completion> {
        let Pending { work, reply } = *self;
        let result = match conn.execute_batch("SAVEPOINT job") {
            Err(e) => Err(E::from(StoreError::from(e))),
            Ok(()) => {
                let outcome = catch_unwind(AssertUnwindSafe(|| work(conn))).unwrap_or_else(|_| {
                    Err(E::from(StoreError::WriterStopped(
                        "a write job panicked; its writes were rolled back",
                    )))
                });
                let released = match &outcome {
                    Ok(_) => conn.execute_batch("RELEASE job"),
                    Err(_) => Err(rusqlite::Error::InvalidQuery),
                };
                match released {
                    Ok(()) => outcome,
                    Err(release) => {
                        // Undo the job's writes. If even this fails, SQLite
                        // has ended the whole transaction, which `serve` sees.
                        let _ = conn.execute_batch("ROLLBACK TO job; RELEASE job");
                        match outcome {
                            Ok(_) => Err(E::from(StoreError::from(release))),
                            Err(e) => Err(e),
                        }
                    }
                }
            }
        };
        Box::new(Ran { result, reply })
    }

    fn abandon(self: Box<Self>, error: Arc<rusqlite::Error>) {
        let _ = self.reply.send(Err(E::from(StoreError::Sqlite(error))));
    }
}

impl<T: Send, E: From<StoreError> + Send> Completion for Ran<T, E> {
    fn complete(self: Box<Self>, commit: Result<(), &Arc<rusqlite::Error>>) {
        let result = match commit {
            Ok(()) => self.result,
            // The job's writes are gone with the batch, whatever it returned.
            Err(e) => Err(E::from(StoreError::Sqlite(e.clone()))),
        };
        let _ = self.reply.send(result);
    }
}

impl SqliteWriter {
    /// Opens the write connection to the SQLite file at `path` (which must
    /// exist and be in WAL mode) and starts the writer thread.
    pub(crate) fn open(path: &Path, busy_timeout: Duration) -> Result<SqliteWriter, StoreError> {
        let conn = Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        // What every pooled connection runs, and the durability the rest of
        // the store has.
        conn.execute_batch(&format!(
            "{} PRAGMA synchronous = FULL;",
            super::SQLITE_PRAGMAS
        ))?;
        conn.busy_timeout(busy_timeout)?;
        let (jobs, queue) = mpsc::channel::<Box<dyn Job>>();
        let counters = Arc::new(Counters::default());
        let shared = counters.clone();
        std::thread::Builder::new()
            .name("payhost-sqlite-writer".into())
            .spawn(move || serve(conn, queue, &shared))
            .map_err(|_| StoreError::WriterStopped("could not start the SQLite writer thread"))?;
        Ok(SqliteWriter { jobs, counters })
    }

    /// Runs `work` in a write transaction on the writer thread and returns
    /// its result once that transaction is durable. An `Err` from `work`
    /// rolls back everything `work` wrote.
    pub(crate) async fn run<T, E, F>(&self, work: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnOnce(&Connection) -> Result<T, E> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        self.counters.queued.fetch_add(1, Ordering::Relaxed);
        if self.jobs.send(Box::new(Pending { work, reply })).is_err() {
            self.counters.queued.fetch_sub(1, Ordering::Relaxed);
            return Err(E::from(StoreError::WriterStopped(
                "the SQLite writer has stopped",
            )));
        }
        answer
            .await
            .map_err(|_| E::from(StoreError::WriterStopped("the SQLite writer has stopped")))?
    }

    /// How many transactions the writer has committed (batches, not jobs).
    #[cfg(test)]
    pub(crate) fn commits(&self) -> u64 {
        self.counters.commits.load(Ordering::Relaxed)
    }

    /// How many jobs wait for the thread.
    #[cfg(test)]
    fn jobs_queued(&self) -> usize {
        self.counters.queued.load(Ordering::Relaxed)
    }
}

/// The next job: polled for [`POLL_BEFORE_BLOCKING`], then waited for.
/// `None` once every handle is gone.
fn next_job(queue: &mpsc::Receiver<Box<dyn Job>>) -> Option<Box<dyn Job>> {
    let until = Instant::now() + POLL_BEFORE_BLOCKING;
    while Instant::now() < until {
        match queue.try_recv() {
            Ok(job) => return Some(job),
            Err(mpsc::TryRecvError::Empty) => std::thread::yield_now(),
            Err(mpsc::TryRecvError::Disconnected) => return None,
        }
    }
    queue.recv().ok()
}

fn serve(conn: Connection, queue: mpsc::Receiver<Box<dyn Job>>, counters: &Counters) {
    // Jobs not yet run; a batch cut short leaves its unrun jobs here for the next.
    let mut batch: VecDeque<Box<dyn Job>> = VecDeque::with_capacity(MAX_BATCH);
    loop {
        if batch.is_empty() {
            let Some(first) = next_job(&queue) else {
                return; // every handle is gone
            };
            batch.push_back(first);
            counters.queued.fetch_sub(1, Ordering::Relaxed);
        }
        while batch.len() < MAX_BATCH {
            let Ok(job) = queue.try_recv() else { break };
            batch.push_back(job);
            counters.queued.fetch_sub(1, Ordering::Relaxed);
        }
        if !conn.is_autocommit() {
            // Left open by a failure that even ROLLBACK could not end.
            let _ = conn.execute_batch("ROLLBACK");
        }
        if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
            let error = Arc::new(e);
            for job in batch.drain(..) {
                job.abandon(error.clone());
            }
            continue;
        }
        let mut done: Vec<Box<dyn Completion>> = Vec::with_capacity(batch.len());
        let mut ended_early = false;
        while let Some(job) = batch.pop_front() {
            done.push(job.run(&conn));
            // SQLite rolls the whole transaction back on some errors (disk
            // full, I/O error, out of memory). Jobs run after that would each
            // commit on their own: stop, fail the jobs that ran, and run the
            // rest in a fresh batch.
            if conn.is_autocommit() {
                ended_early = true;
                break;
            }
        }
        let commit = if ended_early {
            Err(Arc::new(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ABORT),
                Some("SQLite rolled back the write batch; no job in it was stored".into()),
            )))
        } else {
            conn.execute_batch("COMMIT").map_err(Arc::new)
        };
        match &commit {
            Ok(()) => {
                counters.commits.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) if !conn.is_autocommit() => {
                // A failed COMMIT can leave the transaction open.
                let _ = conn.execute_batch("ROLLBACK");
            }
            Err(_) => {}
        }
        for completion in done {
            completion.complete(commit.as_ref().map(|_| ()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::TestDb;

    async fn writer_db() -> (TestDb, SqliteWriter) {
        let db = TestDb::sqlite().await.expect("sqlite");
        let writer = db
            .store()
            .sqlite_writer()
            .expect("file db has a writer")
            .clone();
        crate::store::run_script(
            &mut db.store().pool().acquire().await.expect("conn"),
            "CREATE TABLE scratch (n INTEGER PRIMARY KEY)",
        )
        .await
        .expect("table");
        (db, writer)
    }

    fn insert(n: i64) -> impl FnOnce(&Connection) -> Result<(), StoreError> + Send + 'static {
        move |c| {
            c.execute("INSERT INTO scratch (n) VALUES (?1)", [n])?;
            Ok(())
        }
    }

    async fn stored(db: &TestDb) -> Vec<i64> {
        sqlx::query_scalar::<_, i64>("SELECT n FROM scratch ORDER BY n")
            .fetch_all(db.store().pool())
            .await
            .expect("read")
    }

    type Handle = tokio::task::JoinHandle<Result<(), StoreError>>;

    fn spawn_job<F>(writer: &SqliteWriter, job: F) -> Handle
    where
        F: FnOnce(&Connection) -> Result<(), StoreError> + Send + 'static,
    {
        let writer = writer.clone();
        tokio::spawn(async move { writer.run(job).await })
    }

    /// A job that inserts `n` but holds the writer thread until released;
    /// returns once it is running, so later jobs queue behind it.
    async fn held_job(writer: &SqliteWriter, n: i64) -> (Handle, mpsc::Sender<()>) {
        let (release, wait) = mpsc::channel::<()>();
        let (running, started) = oneshot::channel::<()>();
        let job = spawn_job(writer, move |c| {
            let _ = running.send(());
            wait.recv().expect("released");
            insert(n)(c)
        });
        started.await.expect("held job running");
        (job, release)
    }

    /// Waits until `n` jobs sit in the channel (`run` sends before it awaits).
    async fn queued(writer: &SqliteWriter, n: usize) {
        while writer.jobs_queued() < n {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn jobs_queued_behind_a_commit_share_the_next_one() {
        let (db, writer) = writer_db().await;
        let (first, release) = held_job(&writer, 0).await;
        let before = writer.commits();
        let jobs: Vec<_> = (1..=10).map(|n| spawn_job(&writer, insert(n))).collect();
        queued(&writer, 10).await;
        release.send(()).expect("release");
        first.await.expect("task").expect("first job");
        for job in jobs {
            job.await.expect("task").expect("queued job");
        }
        assert_eq!(stored(&db).await, (0..=10).collect::<Vec<_>>());
        assert_eq!(
            writer.commits() - before,
            2,
            "one commit for the held job, one for the ten queued behind it"
        );
        db.cleanup().await;
    }

    #[tokio::test]
    async fn a_failing_or_panicking_job_rolls_back_only_its_own_writes() {
        let (db, writer) = writer_db().await;
        let (gate, release) = held_job(&writer, 1).await;
        // Three jobs for one batch: one fails after writing, one panics after
        // writing, one succeeds.
        let failing = spawn_job(&writer, |c| {
            insert(2)(c)?;
            c.execute("INSERT INTO scratch (n) VALUES (1)", [])?;
            Ok(())
        });
        let panicking = spawn_job(&writer, |c| {
            insert(3)(c)?;
            panic!("hostile job");
        });
        let fine = spawn_job(&writer, insert(4));
        queued(&writer, 3).await;
        release.send(()).expect("release");
        gate.await.expect("task").expect("gate");
        let failed = failing.await.expect("task").expect_err("duplicate key");
        assert!(
            matches!(
                failed.violation(),
                Some(crate::store::Violation::Unique { .. })
            ),
            "{failed:?}"
        );
        assert!(matches!(
            panicking.await.expect("task"),
            Err(StoreError::WriterStopped(_))
        ));
        fine.await.expect("task").expect("fine job");
        assert_eq!(stored(&db).await, vec![1, 4]);
        // The writer is still serving.
        writer.run(insert(5)).await.expect("after a panic");
        assert_eq!(stored(&db).await, vec![1, 4, 5]);
        db.cleanup().await;
    }

    #[tokio::test]
    async fn a_transaction_sqlite_ended_part_way_fails_what_ran_and_reruns_the_rest() {
        let (db, writer) = writer_db().await;
        let (gate, release) = held_job(&writer, 1).await;
        let before = spawn_job(&writer, insert(2));
        // Stands in for an error after which SQLite rolls back the whole
        // transaction (SQLITE_FULL, SQLITE_IOERR): the batch's writes are gone.
        let breaking = spawn_job(&writer, |c| {
            insert(3)(c)?;
            c.execute_batch("ROLLBACK")?;
            Ok(())
        });
        let after = spawn_job(&writer, insert(4));
        queued(&writer, 3).await;
        release.send(()).expect("release");
        gate.await.expect("task").expect("gate");
        before
            .await
            .expect("task")
            .expect_err("its write was rolled back with the batch");
        breaking.await.expect("task").expect_err("broke the batch");
        after
            .await
            .expect("task")
            .expect("ran in a fresh batch, inside a transaction");
        assert_eq!(stored(&db).await, vec![1, 4]);
        db.cleanup().await;
    }
}
