//! Balance and report reads against the size of the ledger, bulk booking
//! rate, and bytes per booking.
//!
//! Run: `cargo bench -p payhost-tests --bench balances`
//! (set `PAYHOST_TEST_POSTGRES_URL` to include PostgreSQL;
//! `PAYHOST_BENCH_SIZES=1000,100000` to choose the ledger sizes).
//!
//! For each size the ledger is seeded with direct batched `INSERT`s (one
//! order and one approved row per booking, spread over the last 365 days, in
//! transactions of 20,000) — the projection triggers fire for every row, as
//! for any booking (PostgreSQL is then `VACUUM ANALYZE`d, as autovacuum
//! would). Then, over HTTP: `GET /v1/balance` and a 365-day
//! `GET /v1/reports/daily` (p50/p99 of 200 sequential calls, request sent to
//! last body byte), the report's database read alone, and the rate of
//! `POST /v1/orders/bulk` (10 requests of 100 users).

use std::time::{Duration, Instant};

use payhost_tests::{AppOptions, TestApp};
use reqwest::Method;
use serde_json::json;

const SAMPLES: usize = 200;
const BATCH: usize = 500;
const TX_ROWS: usize = 20_000;
const DAY_MS: i64 = 86_400_000;

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Adds `n` bookings (order + approved row) for `tenant`, numbered from `start`.
async fn seed(app: &TestApp, tenant: &str, start: usize, n: usize) {
    let now = payhost::store::UnixMillis::now().as_i64();
    let mut done = 0;
    while done < n {
        let mut tx = app.store.pool().begin().await.expect("tx");
        let tx_end = (done + TX_ROWS).min(n);
        while done < tx_end {
            let end = (done + BATCH).min(tx_end);
            let mut orders = String::from(
                "INSERT INTO orders (id, tenant_id, kind, status, currency, amount_minor, lines, \
                 created_at, updated_at) VALUES ",
            );
            let mut payments = String::from(
                "INSERT INTO payments (id, tenant_id, order_id, kind, status, amount_minor, \
                 currency, provider, source, created_at) VALUES ",
            );
            for i in done..end {
                let k = start + i;
                // Spread over the last 365 days.
                let at = now - (k as i64 % 365) * DAY_MS - (k as i64 % 1000);
                let amount = 100 + (k % 9_900) as i64;
                let sep = if i == done { "" } else { ", " };
                orders.push_str(&format!(
                    "{sep}('ord_seed{k:020}', '{tenant}', 'bulk', 'paid', 'USD', {amount}, \
                     '[{{\"kind\":\"product\",\"amount_minor\":{amount},\"quantity\":1}}]', {at}, {at})"
                ));
                let provider = if k.is_multiple_of(2) {
                    "'stripe'"
                } else {
                    "NULL"
                };
                payments.push_str(&format!(
                    "{sep}('pay_seed{k:020}', '{tenant}', 'ord_seed{k:020}', 'product', 'approved', \
                     {amount}, 'USD', {provider}, 'manual', {at})"
                ));
            }
            sqlx::query(&orders)
                .execute(&mut *tx)
                .await
                .expect("orders");
            sqlx::query(&payments)
                .execute(&mut *tx)
                .await
                .expect("payments");
            done = end;
        }
        tx.commit().await.expect("commit");
    }
}

/// p50 and p99 of [`SAMPLES`] sequential `GET path` calls, each timed from
/// sending the request to the last byte of the body (the client's JSON
/// parsing is not the server's latency; each body is checked afterwards).
async fn timed(app: &TestApp, key: &str, path: &str) -> (Duration, Duration) {
    let get = || async {
        let t = Instant::now();
        let response = app
            .request(Method::GET, path, Some(key))
            .send()
            .await
            .expect("request");
        let status = response.status().as_u16();
        let body = response.bytes().await.expect("body");
        let elapsed = t.elapsed();
        let json: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(status, 200, "{json}");
        assert!(json["items"].is_array(), "{json}");
        elapsed
    };
    for _ in 0..20 {
        get().await;
    }
    let mut samples = Vec::with_capacity(SAMPLES);
    for _ in 0..SAMPLES {
        samples.push(get().await);
    }
    samples.sort();
    (pct(&samples, 0.5), pct(&samples, 0.99))
}

/// The 365-day report's database read alone (`ledger::daily_report`, no
/// HTTP or JSON), p50 and p99 of [`SAMPLES`] calls.
async fn report_query(app: &TestApp, tenant: &str) -> (Duration, Duration) {
    let tenant = payhost::store::TenantId::parse(tenant).expect("tenant id");
    let today = payhost::ledger::Day::of_millis(payhost::store::UnixMillis::now().as_i64());
    let filter = payhost::ledger::DailyFilter {
        from: payhost::ledger::Day::of_millis(
            payhost::store::UnixMillis::now().as_i64() - 364 * DAY_MS,
        ),
        to: today,
        currency: None,
        provider: None,
    };
    let mut samples = Vec::with_capacity(SAMPLES);
    for _ in 0..SAMPLES {
        let t = Instant::now();
        let entries = payhost::ledger::daily_report(&app.store, Some(&tenant), &filter)
            .await
            .expect("report");
        samples.push(t.elapsed());
        assert!(!entries.is_empty());
    }
    samples.sort();
    (pct(&samples, 0.5), pct(&samples, 0.99))
}

/// Ledger rows booked per second by bulk orders of 100 users.
async fn bulk_rate(app: &TestApp, key: &str) -> f64 {
    let users: Vec<_> = (0..100)
        .map(|u| json!({"user": format!("u{u}"), "user_plan": "pro", "amount": 500}))
        .collect();
    let body = json!({"currency": "USD", "users": users});
    let t = Instant::now();
    for _ in 0..10 {
        let (status, answer) = app
            .tenant(key, Method::POST, "/v1/orders/bulk", Some(body.clone()))
            .await;
        assert_eq!(status, 201, "{answer}");
    }
    1_000.0 / t.elapsed().as_secs_f64()
}

async fn bytes(app: &TestApp) -> (String, i64) {
    match app.store.backend() {
        payhost::store::Backend::Sqlite => {
            let mut conn = app.store.pool().acquire().await.expect("conn");
            sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(&mut *conn)
                .await
                .expect("checkpoint");
            let pages: i64 = sqlx::query_scalar("PRAGMA page_count")
                .fetch_one(&mut *conn)
                .await
                .expect("pages");
            let size: i64 = sqlx::query_scalar("PRAGMA page_size")
                .fetch_one(&mut *conn)
                .await
                .expect("page size");
            ("file".into(), pages * size)
        }
        payhost::store::Backend::Postgres => {
            let total: i64 = sqlx::query_scalar(
                "SELECT CAST(pg_total_relation_size('payments') + pg_total_relation_size('orders') \
                 + pg_total_relation_size('refund_totals') AS BIGINT)",
            )
            .fetch_one(app.store.pool())
            .await
            .expect("sizes");
            ("payments+orders+refund_totals".into(), total)
        }
    }
}

async fn bench(app: TestApp, sizes: &[usize]) {
    let (tenant, key) = app.new_tenant("Bench shop").await;
    let (mut seeded, mut by_bulk) = (0, 0);
    for &size in sizes {
        let missing = size.saturating_sub(seeded + by_bulk);
        let t = Instant::now();
        seed(&app, &tenant, seeded, missing).await;
        let seed_rate = missing as f64 / t.elapsed().as_secs_f64();
        if app.backend == "postgres" {
            // Seeding updated each aggregate row thousands of times in a few
            // transactions; autovacuum would clear those dead versions on a
            // live server, so measure after it has.
            sqlx::query("VACUUM ANALYZE")
                .execute(app.store.pool())
                .await
                .expect("vacuum");
        }
        seeded += missing;
        let rows = seeded + by_bulk;
        let (b50, b99) = timed(&app, &key, "/v1/balance").await;
        let (r50, r99) = timed(
            &app,
            &key,
            &format!(
                "/v1/reports/daily?from={}&to={}",
                payhost::ledger::Day::of_millis(
                    payhost::store::UnixMillis::now().as_i64() - 364 * DAY_MS
                ),
                payhost::ledger::Day::of_millis(payhost::store::UnixMillis::now().as_i64()),
            ),
        )
        .await;
        let (q50, q99) = report_query(&app, &tenant).await;
        let rate = bulk_rate(&app, &key).await;
        by_bulk += 1_000;
        let (what, total) = bytes(&app).await;
        println!(
            "{:<8} rows {:>9} | seeded {:>8.0} rows/s | balance p50 {:?} p99 {:?} | 365-day report p50 {:?} p99 {:?} (its query alone p50 {:?} p99 {:?}) | bulk {:>6.0} rows/s | {what} {:.0} bytes/booking",
            app.backend,
            rows,
            seed_rate,
            b50,
            b99,
            r50,
            r99,
            q50,
            q99,
            rate,
            total as f64 / (seeded + by_bulk) as f64,
        );
    }
    let report = payhost::ledger::verify_projections(&app.store, None)
        .await
        .expect("verify");
    assert!(report.is_clean(), "{:?}", report.differences);
    app.finish().await;
}

fn main() {
    let sizes: Vec<usize> = std::env::var("PAYHOST_BENCH_SIZES")
        .unwrap_or_else(|_| "1000,100000,1000000".into())
        .split(',')
        .map(|s| s.trim().parse().expect("PAYHOST_BENCH_SIZES: numbers"))
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio");
    rt.block_on(async {
        for db in payhost::store::testing::fresh_databases().await {
            let app = TestApp::spawn_opts(db, AppOptions::unthrottled()).await;
            bench(app, &sizes).await;
        }
    });
}
