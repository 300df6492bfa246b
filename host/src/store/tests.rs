//! Store tests: run on SQLite always and on PostgreSQL when
//! `PAYHOST_TEST_POSTGRES_URL` is set (see [`super::testing`]).

use std::sync::Arc;

use sqlx::Row;

use super::gateways::{self, Ciphertext, GatewaySettingsWrite};
use super::sql::Keyset;
use super::testing::{TestDb, each_backend, each_backend_with_url, tenant};
use super::*;
use crate::idempotency::{self, Begin, IN_FLIGHT_LEASE, IdempotencyKey, RequestHash};

/// Every migration in `host/migrations/` (one number per file pair): a new
/// migration adds its number here.
fn every_version() -> Vec<i64> {
    (1..=10).collect()
}

#[tokio::test]
async fn migrations_apply_once_and_rerun_as_a_no_op() {
    // A brand-new SQLite file: the first run applies everything, the second nothing.
    let path = std::env::temp_dir().join(format!("payhost-migrate-{}.db", TenantId::generate()));
    let url = format!("sqlite://{}", path.display());
    let store = Store::connect(&url)
        .await
        .expect("connect creates the file");
    let first = store.migrate().await.expect("first migrate");
    assert_eq!(first.applied, every_version());
    assert!(first.already_applied.is_empty());
    let second = store.migrate().await.expect("second migrate");
    assert!(second.applied.is_empty());
    assert_eq!(second.already_applied, every_version());
    store.close().await;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }

    // Every backend: the helper already migrated; running again changes nothing.
    each_backend(|store| async move {
        let again = store.migrate().await.expect("re-migrate");
        assert!(again.applied.is_empty(), "{again:?}");
        let count: i64 = sqlx::query("SELECT COUNT(*) AS n FROM payhost_migrations")
            .fetch_one(store.pool())
            .await
            .expect("count")
            .try_get("n")
            .expect("n");
        assert_eq!(count, every_version().len() as i64);
    })
    .await;
}

#[tokio::test]
async fn concurrent_migrators_apply_each_migration_once() {
    let mut urls = vec![];
    // A fresh SQLite file that nobody migrated yet.
    let path = std::env::temp_dir().join(format!("payhost-race-{}.db", TenantId::generate()));
    urls.push(format!("sqlite://{}", path.display()));
    if let Ok(pg) = std::env::var(testing::POSTGRES_URL_ENV)
        && !pg.is_empty()
    {
        // A fresh, unmigrated schema.
        let schema = format!("payhost_race_{}", &TenantId::generate().as_str()[4..]);
        // Nothing may have connected a Store yet in this test process.
        sqlx::any::install_default_drivers();
        let mut admin = <sqlx::AnyConnection as sqlx::Connection>::connect(&pg)
            .await
            .expect("admin");
        super::run_script(&mut admin, &format!("CREATE SCHEMA {schema}"))
            .await
            .expect("schema");
        let sep = if pg.contains('?') { '&' } else { '?' };
        urls.push(format!("{pg}{sep}options=-c%20search_path%3D{schema}"));
    }
    for url in urls {
        let a = Store::connect(&url).await.expect("a");
        let b = Store::connect(&url).await.expect("b");
        let (ra, rb) = tokio::join!(a.migrate(), b.migrate());
        let (ra, rb) = (ra.expect("a migrates"), rb.expect("b migrates"));
        let mut applied = [ra.applied, rb.applied].concat();
        applied.sort();
        assert_eq!(
            applied,
            every_version(),
            "exactly one migrator applies each version"
        );
        let backend = a.backend();
        a.close().await;
        b.close().await;
        if backend == Backend::Postgres
            && let Some(schema) = url.split("search_path%3D").nth(1)
            && let Ok(pg) = std::env::var(testing::POSTGRES_URL_ENV)
        {
            let mut admin = <sqlx::AnyConnection as sqlx::Connection>::connect(&pg)
                .await
                .expect("admin");
            super::run_script(&mut admin, &format!("DROP SCHEMA {schema} CASCADE"))
                .await
                .expect("drop");
        }
    }
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}

/// `PRAGMA temp_store` reads 2 for MEMORY.
const TEMP_STORE_MEMORY: i64 = 2;

#[tokio::test]
async fn sqlite_connections_use_wal_foreign_keys_and_recursive_triggers() {
    let db = TestDb::sqlite().await.expect("sqlite");
    let mut conn = db.store().pool().acquire().await.expect("conn");
    let text = |sql: &'static str| sqlx::query(sql);
    let mode: String = text("PRAGMA journal_mode")
        .fetch_one(&mut *conn)
        .await
        .expect("journal_mode")
        .try_get(0)
        .expect("mode");
    assert_eq!(mode.to_lowercase(), "wal");
    for pragma in ["PRAGMA foreign_keys", "PRAGMA recursive_triggers"] {
        let on: i64 = text(pragma)
            .fetch_one(&mut *conn)
            .await
            .expect(pragma)
            .try_get(0)
            .expect("value");
        assert_eq!(on, 1, "{pragma}");
    }
    let temp_store: i64 = text("PRAGMA temp_store")
        .fetch_one(&mut *conn)
        .await
        .expect("temp_store")
        .try_get(0)
        .expect("value");
    assert_eq!(
        temp_store, TEMP_STORE_MEMORY,
        "statement journals stay in memory"
    );
    drop(conn);
    db.cleanup().await;
}

/// The writer runs the same pragmas as the pool (see `SQLITE_PRAGMAS`):
/// without `temp_store = MEMORY` a paid booking's statement journal goes to
/// a temporary file.
#[tokio::test]
async fn the_sqlite_writer_runs_the_pools_pragmas_and_full_sync() {
    let db = TestDb::sqlite().await.expect("sqlite");
    let writer = db
        .store()
        .sqlite_writer()
        .expect("a file has a writer")
        .clone();
    let read = writer
        .run(|conn| {
            let get = |pragma: &str| -> Result<i64, StoreError> {
                Ok(conn.query_row(pragma, [], |row| row.get(0))?)
            };
            Ok::<_, StoreError>([
                get("PRAGMA foreign_keys")?,
                get("PRAGMA recursive_triggers")?,
                get("PRAGMA temp_store")?,
                get("PRAGMA synchronous")?,
            ])
        })
        .await
        .expect("pragmas");
    // synchronous: 2 = FULL.
    assert_eq!(read, [1, 1, TEMP_STORE_MEMORY, 2]);
    drop(writer);
    db.cleanup().await;
}

#[tokio::test]
async fn sqlite_file_url_handles_awkward_paths() {
    let dir = std::env::temp_dir().join(format!("payhost dir?#%{}", TenantId::generate()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("data.db");
    let store = Store::connect_and_migrate(&sqlite_file_url(&path))
        .await
        .expect("connect");
    tenant(&store, "A").await;
    store.close().await;
    assert!(
        path.exists(),
        "the file is created at exactly the configured path"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn in_memory_sqlite_keeps_its_data_across_queries() {
    let store = Store::connect_and_migrate("sqlite::memory:")
        .await
        .expect("memory store");
    let id = tenant(&store, "Mem").await;
    let found = crate::tenancy::get_tenant(&store, &id).await.expect("get");
    assert_eq!(found.map(|t| t.id), Some(id));
}

#[tokio::test]
async fn unsupported_url_does_not_echo_credentials() {
    let err = Store::connect("mysql://root:hunter2@db/x")
        .await
        .expect_err("mysql is not supported");
    let shown = err.to_string();
    assert!(shown.contains("mysql"), "{shown}");
    assert!(!shown.contains("hunter2"), "{shown}");
}

#[tokio::test]
async fn dollar_placeholders_bind_by_number_on_both_backends() {
    each_backend(|store| async move {
        let row = sqlx::query("SELECT $2 AS b, $1 AS a, $2 AS b_again")
            .bind("first")
            .bind("second")
            .fetch_one(store.pool())
            .await
            .expect("query");
        assert_eq!(row.try_get::<String, _>("a").expect("a"), "first");
        assert_eq!(row.try_get::<String, _>("b").expect("b"), "second");
        assert_eq!(row.try_get::<String, _>("b_again").expect("b2"), "second");
    })
    .await;
}

#[tokio::test]
async fn constraint_violations_are_classified() {
    each_backend(|store| async move {
        let id = tenant(&store, "Acme").await;
        let dup = sqlx::query(
            "INSERT INTO tenants (id, name, status, plan, created_at, updated_at) \
             VALUES ($1, 'x', 'active', 'free', 0, 0)",
        )
        .bind(id.as_str())
        .execute(store.pool())
        .await
        .expect_err("duplicate primary key");
        assert!(
            matches!(classify(&dup), Some(Violation::Unique { .. })),
            "{dup}"
        );

        let check = sqlx::query(
            "INSERT INTO tenants (id, name, status, plan, created_at, updated_at) \
             VALUES ('ten_x', 'x', 'bogus', 'free', 0, 0)",
        )
        .execute(store.pool())
        .await
        .expect_err("bad status");
        assert!(
            matches!(classify(&check), Some(Violation::Check { .. })),
            "{check}"
        );

        let fk = sqlx::query(
            "INSERT INTO api_keys (id, tenant_id, prefix, key_hash, created_at) \
             VALUES ('key_x', 'ten_missing', 'ph_', 'h', 0)",
        )
        .execute(store.pool())
        .await
        .expect_err("unknown tenant");
        assert!(
            matches!(classify(&fk), Some(Violation::ForeignKey { .. })),
            "{fk}"
        );

        let syntax = sqlx::query("SELEC nonsense")
            .execute(store.pool())
            .await
            .expect_err("syntax error");
        assert_eq!(
            classify(&syntax),
            None,
            "a syntax error is not a client error"
        );
    })
    .await;
}

#[tokio::test]
async fn idempotency_fresh_replay_mismatch_inflight_and_abandon() {
    each_backend(|store| async move {
        let a = tenant(&store, "A").await;
        let b = tenant(&store, "B").await;
        let key = IdempotencyKey::parse("order-42").expect("key");
        let body = RequestHash::of("POST", "/v1/orders", br#"{"amount":100}"#);
        let other_body = RequestHash::of("POST", "/v1/orders", br#"{"amount":999}"#);

        assert_eq!(
            idempotency::begin(&store, &a, &key, &body)
                .await
                .expect("begin"),
            Begin::Fresh
        );
        assert_eq!(
            idempotency::begin(&store, &a, &key, &body)
                .await
                .expect("again"),
            Begin::InFlight
        );
        assert_eq!(
            idempotency::begin(&store, &a, &key, &other_body)
                .await
                .expect("other"),
            Begin::Mismatch
        );
        // Keys are per tenant.
        assert_eq!(
            idempotency::begin(&store, &b, &key, &other_body)
                .await
                .expect("b"),
            Begin::Fresh
        );

        assert!(
            idempotency::finish(&store, &a, &key, 201, b"{\"id\":\"ord_1\"}")
                .await
                .expect("finish")
        );
        assert_eq!(
            idempotency::begin(&store, &a, &key, &body)
                .await
                .expect("replay"),
            Begin::Replay {
                status: 201,
                body: b"{\"id\":\"ord_1\"}".to_vec()
            }
        );
        assert_eq!(
            idempotency::begin(&store, &a, &key, &other_body)
                .await
                .expect("mismatch after done"),
            Begin::Mismatch
        );
        assert!(
            !idempotency::abandon(&store, &a, &key)
                .await
                .expect("abandon done"),
            "a finished key stays"
        );
        assert!(
            !idempotency::finish(&store, &a, &key, 500, b"")
                .await
                .expect("finish twice")
        );

        // A failed (5xx) attempt is abandoned and the retry runs again.
        let retry = IdempotencyKey::parse("refund-7").expect("key");
        assert_eq!(
            idempotency::begin(&store, &a, &retry, &body)
                .await
                .expect("begin"),
            Begin::Fresh
        );
        assert!(
            idempotency::abandon(&store, &a, &retry)
                .await
                .expect("abandon")
        );
        assert_eq!(
            idempotency::begin(&store, &a, &retry, &body)
                .await
                .expect("retry"),
            Begin::Fresh
        );
    })
    .await;
}

#[tokio::test]
async fn idempotency_stale_in_flight_claim_is_taken_over_after_the_lease() {
    each_backend(|store| async move {
        let a = tenant(&store, "A").await;
        let key = IdempotencyKey::parse("k").expect("key");
        let req = RequestHash::of("POST", "/v1/refunds", b"{}");
        let t0 = UnixMillis(1_000_000);
        let lease = i64::try_from(IN_FLIGHT_LEASE.as_millis()).expect("lease");
        assert_eq!(
            idempotency::begin_at(&store, &a, &key, &req, t0)
                .await
                .expect("t0"),
            Begin::Fresh
        );
        let just_before = UnixMillis(t0.0 + lease - 1);
        assert_eq!(
            idempotency::begin_at(&store, &a, &key, &req, just_before)
                .await
                .expect("inside lease"),
            Begin::InFlight
        );
        let after = UnixMillis(t0.0 + lease);
        assert_eq!(
            idempotency::begin_at(&store, &a, &key, &req, after)
                .await
                .expect("take over"),
            Begin::Fresh
        );
        assert_eq!(
            idempotency::begin_at(&store, &a, &key, &req, after)
                .await
                .expect("second taker"),
            Begin::InFlight,
            "only one request takes a stale claim over"
        );
    })
    .await;
}

#[tokio::test]
async fn idempotency_concurrent_duplicates_get_exactly_one_fresh() {
    each_backend(|store| async move {
        let a = tenant(&store, "A").await;
        let key = Arc::new(IdempotencyKey::parse("same").expect("key"));
        let req = Arc::new(RequestHash::of("POST", "/v1/orders", b"{}"));
        let mut tasks = vec![];
        for _ in 0..20 {
            let (store, a, key, req) = (store.clone(), a.clone(), key.clone(), req.clone());
            tasks.push(tokio::spawn(async move {
                idempotency::begin(&store, &a, &key, &req).await
            }));
        }
        let mut fresh = 0;
        for t in tasks {
            match t.await.expect("join").expect("begin") {
                Begin::Fresh => fresh += 1,
                Begin::InFlight => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(fresh, 1);
    })
    .await;
}

fn settings(provider: &str, priority: i64) -> GatewaySettingsWrite {
    GatewaySettingsWrite {
        provider: ProviderId::parse(provider).expect("provider"),
        priority,
        currencies: vec![
            Currency::parse("EUR").expect("EUR"),
            Currency::parse("USD").expect("USD"),
        ],
        enabled: true,
        credentials: Ciphertext(vec![1, 2, 3, 0, 255]),
        webhook_secret: Some(Ciphertext(vec![9; 40])),
        key_id: "k1".into(),
        masked: serde_json::json!({"secret_key": "sk_…4242"}),
    }
}

/// `upsert_within` counts the tenant's other gateways in its transaction:
/// eight concurrent saves of eight new providers under a limit of two store
/// exactly two, and a replacement at the limit still passes.
#[tokio::test]
async fn concurrent_saves_of_new_gateways_never_pass_the_limit() {
    each_backend(|store| async move {
        let a = tenant(&store, "A").await;
        let other = tenant(&store, "Other").await;
        let saves: Vec<_> = (0..8)
            .map(|n| {
                let (store, a) = (store.clone(), a.clone());
                tokio::spawn(async move {
                    gateways::upsert_within(&store, &a, &settings(&format!("gw{n}"), n), 2).await
                })
            })
            .collect();
        let mut stored = 0;
        for save in saves {
            if save.await.expect("task").expect("no store error").is_some() {
                stored += 1;
            }
        }
        assert_eq!(stored, 2, "[{:?}] saves past gateways.max", store.backend());
        let listed = gateways::list(&store, &a).await.expect("list");
        assert_eq!(listed.len(), 2);
        let kept = listed[0].settings.provider.as_str().to_owned();
        let replaced = gateways::upsert_within(&store, &a, &settings(&kept, 9), 2)
            .await
            .expect("replace");
        assert_eq!(
            replaced.map(|r| r.settings.priority),
            Some(9),
            "a replacement passes"
        );
        assert!(
            gateways::upsert_within(&store, &a, &settings("gw-late", 0), 2)
                .await
                .expect("refusal")
                .is_none()
        );
        assert!(
            gateways::upsert_within(&store, &other, &settings("gw-late", 0), 2)
                .await
                .expect("other tenant")
                .is_some(),
            "counted per tenant"
        );
    })
    .await;
}

#[tokio::test]
async fn gateway_settings_upsert_get_list_delete() {
    each_backend(|store| async move {
        let a = tenant(&store, "A").await;
        let b = tenant(&store, "B").await;
        let stripe = gateways::upsert(&store, &a, &settings("stripe", 2))
            .await
            .expect("stripe");
        assert_eq!(stripe.settings, settings("stripe", 2));
        gateways::upsert(&store, &a, &settings("paddle", 1))
            .await
            .expect("paddle");

        let listed = gateways::list(&store, &a).await.expect("list");
        let order: Vec<&str> = listed
            .iter()
            .map(|r| r.settings.provider.as_str())
            .collect();
        assert_eq!(order, ["paddle", "stripe"], "routing order is by priority");
        assert!(
            gateways::list(&store, &b).await.expect("b").is_empty(),
            "tenant scoped"
        );

        let mut changed = settings("stripe", 0);
        changed.enabled = false;
        changed.webhook_secret = None;
        changed.currencies = vec![Currency::parse("GBP").expect("GBP")];
        let replaced = gateways::upsert(&store, &a, &changed)
            .await
            .expect("replace");
        assert_eq!(replaced.settings, changed);
        assert_eq!(
            replaced.created_at, stripe.created_at,
            "created_at survives an update"
        );
        let got = gateways::get(&store, &a, &changed.provider)
            .await
            .expect("get");
        assert_eq!(got.map(|r| r.settings), Some(changed.clone()));
        assert_eq!(
            gateways::get(&store, &b, &changed.provider)
                .await
                .expect("b get"),
            None
        );

        assert!(
            !gateways::delete(&store, &b, &changed.provider)
                .await
                .expect("b delete")
        );
        assert!(
            gateways::delete(&store, &a, &changed.provider)
                .await
                .expect("delete")
        );
        assert_eq!(
            gateways::get(&store, &a, &changed.provider)
                .await
                .expect("gone"),
            None
        );
    })
    .await;
}

#[test]
fn keyset_cursor_round_trips_and_rejects_garbage() {
    let key = Keyset {
        created_at: 1_700_000_000_123,
        id: "pay_abc123".into(),
    };
    assert_eq!(Keyset::decode(&key.encode()), Some(key));
    assert_eq!(Keyset::decode("not a cursor"), None);
    assert_eq!(Keyset::decode(""), None);
}

#[test]
fn ciphertext_debug_hides_bytes() {
    let shown = format!("{:?}", Ciphertext(b"super secret".to_vec()));
    assert_eq!(shown, "Ciphertext(12 bytes)");
}

/// Polls `future` until it finishes or has answered `Pending` `polls` times,
/// then drops it when it is next woken, without polling it again: a client
/// hanging up just as the answer to its `polls`-th `.await` arrived (the
/// moment the answer sits unread in its channel).
async fn drop_after_polls<F: Future>(future: F, polls: usize) -> Option<F::Output> {
    let mut future = std::pin::pin!(future);
    let mut pending = 0;
    std::future::poll_fn(|cx| {
        if pending == polls {
            return std::task::Poll::Ready(None);
        }
        match future.as_mut().poll(cx) {
            std::task::Poll::Ready(out) => std::task::Poll::Ready(Some(out)),
            std::task::Poll::Pending => {
                pending += 1;
                std::task::Poll::Pending
            }
        }
    })
    .await
}

/// Rows of `cancel_probe` as seen by a connection of its own (not the pool's).
async fn probe_rows(url: &str) -> Vec<i64> {
    let mut conn = <AnyConnection as Connection>::connect(url)
        .await
        .expect("own connection");
    let rows = sqlx::query("SELECT n FROM cancel_probe ORDER BY n")
        .fetch_all(&mut conn)
        .await
        .expect("probe rows");
    conn.close().await.expect("close");
    rows.iter().map(|r| r.get::<i64, _>("n")).collect()
}

/// The bug behind "an aborted request breaks every SQLite write until restart"
/// and "PostgreSQL lost a write it had confirmed": a transaction future
/// dropped at any `.await` (in `BEGIN`, between statements, in `COMMIT`)
/// left the connection in a transaction, or its transaction depth confused,
/// and the pool handed it out again. A one-connection pool makes the next
/// request get exactly that connection. After every drop: the next write
/// commits at once, an autocommit statement is visible to another
/// connection (it did not run inside a leftover transaction), and the
/// dropped transaction's two rows are both there or both absent.
#[tokio::test]
async fn a_transaction_dropped_at_any_await_never_poisons_the_pool() {
    each_backend_with_url(|_, url| async move {
        let options = StoreOptions {
            max_connections: Some(1),
            ..StoreOptions::default()
        };
        let store = Store::connect_with(&url, &options).await.expect("store");
        sqlx::query("CREATE TABLE cancel_probe (n BIGINT PRIMARY KEY)")
            .execute(store.pool())
            .await
            .expect("probe table");
        let insert = |n: i64| format!("INSERT INTO cancel_probe (n) VALUES ({n})");
        let mut next = 1i64;
        let mut completed_at = None;
        let mut rounds = 0;
        // Whether a drop lands before or after the server answered varies
        // from run to run, so sweep several times.
        for _round in 0..8 {
        for polls in 1..64 {
            let n = next;
            next += 10;
            let write = async {
                let mut tx = store.begin_write().await?;
                run_script(tx.conn(), &insert(n)).await?;
                run_script(tx.conn(), &insert(n + 1)).await?;
                tx.commit().await
            };
            let finished = match drop_after_polls(write, polls).await {
                Some(result) => {
                    result.expect("an undisturbed transaction commits");
                    completed_at = Some(polls);
                    true
                }
                None => false,
            };

            // An autocommit statement on the (only) connection is durable on
            // its own: it did not run inside a transaction left open.
            let alone = next;
            next += 10;
            sqlx::query(&insert(alone))
                .execute(store.pool())
                .await
                .unwrap_or_else(|e| panic!("after a drop at poll {polls}: {e}"));
            assert!(
                probe_rows(&url).await.contains(&alone),
                "after a drop at poll {polls}: an autocommit write ran inside a leftover transaction"
            );
            // The next transaction starts and commits at once.
            let after = next;
            next += 10;
            let mut tx = tokio::time::timeout(Duration::from_secs(10), store.begin_write())
                .await
                .expect("the next transaction starts")
                .unwrap_or_else(|e| panic!("after a drop at poll {polls}: {e}"));
            run_script(tx.conn(), &insert(after))
                .await
                .expect("insert");
            tx.commit().await.expect("commit");

            let rows = probe_rows(&url).await;
            assert!(rows.contains(&after) && rows.contains(&alone), "poll {polls}: {rows:?}");
            assert_eq!(
                rows.contains(&n),
                rows.contains(&(n + 1)),
                "poll {polls}: the dropped transaction was half applied: {rows:?}"
            );
            if finished {
                assert!(rows.contains(&n), "poll {polls}: a committed write is lost");
                rounds += 1;
                break;
            }
        }
        }
        assert_eq!(rounds, 8, "a sweep ended before its write could finish");
        assert!(
            completed_at.is_some_and(|p| p > 1),
            "the write finished within one poll, so nothing was dropped mid-way"
        );
        store.close().await;
    })
    .await;
}

/// An in-memory SQLite database lives in its only connection: a dropped
/// transaction whose `ROLLBACK` finds nothing open (its `COMMIT` already ran)
/// must give the connection back, not close it, or the whole database is gone.
#[tokio::test]
async fn a_dropped_transaction_never_loses_an_in_memory_database() {
    let store = Store::connect("sqlite::memory:")
        .await
        .expect("memory store");
    sqlx::query("CREATE TABLE cancel_probe (n BIGINT PRIMARY KEY)")
        .execute(store.pool())
        .await
        .expect("probe table");
    let mut finished_rounds = 0;
    for round in 0..4i64 {
        for polls in 1..64usize {
            let n = round * 1000 + polls as i64;
            let write = async {
                let mut tx = store.begin_write().await?;
                run_script(
                    tx.conn(),
                    &format!("INSERT INTO cancel_probe (n) VALUES ({n})"),
                )
                .await?;
                tx.commit().await
            };
            let finished = drop_after_polls(write, polls).await.is_some();
            let rows = tokio::time::timeout(
                Duration::from_secs(10),
                sqlx::query("SELECT COUNT(*) AS n FROM cancel_probe").fetch_one(store.pool()),
            )
            .await
            .expect("the pool answers")
            .unwrap_or_else(|e| panic!("after a drop at poll {polls}, the database is gone: {e}"));
            assert!(rows.get::<i64, _>("n") >= 0);
            if finished {
                finished_rounds += 1;
                break;
            }
        }
    }
    assert_eq!(finished_rounds, 4);
}
