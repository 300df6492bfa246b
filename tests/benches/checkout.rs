//! End-to-end checkout throughput and host-added latency:
//! HTTP → host → Stripe component → loopback Stripe emulator → ledger.
//!
//! Run: `cargo bench -p payhost-tests --bench checkout`
//! (set `PAYHOST_TEST_POSTGRES_URL` to include PostgreSQL).
//! `PAYHOST_BENCH_QUOTAS`: `on` gives the tenant a finite
//! `checkouts.monthly` limit it never reaches, `off` counts no quota at all;
//! unset, checkouts are counted against an unlimited quota (the default).
//! `PAYHOST_BENCH_PROJECTION=off` drops the balance projection's triggers
//! from the bench database after the migrations (the ledger as it was
//! before the projection: rows inserted, nothing summed); unset or `on`,
//! every booking updates the projection and the daily aggregates.
//!
//! Host-added latency = end-to-end latency − the latency of the same
//! PaymentIntent call made directly to the emulator (the "gateway time"),
//! compared at the same percentile.

use std::sync::Arc;
use std::time::{Duration, Instant};

use payhost_tests::{AppOptions, TestApp, stripe_emulator, stripe_test_key};
use reqwest::Method;
use serde_json::json;

const WARMUP: usize = 200;
const LATENCY_SAMPLES: usize = 2_000;
const THROUGHPUT_TOTAL: usize = 6_000;
const CONCURRENCY: usize = 32;

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn cart() -> serde_json::Value {
    json!({
        "currency": "USD",
        "items": [{"user_plan": "pro", "amount": 1000}],
        "payment_method": "pm_card_visa",
    })
}

async fn checkout_once(app: &TestApp, key: &str) -> Duration {
    let t = Instant::now();
    let (status, body) = app
        .tenant(key, Method::POST, "/v1/checkouts", Some(cart()))
        .await;
    assert_eq!(status, 201, "{body}");
    t.elapsed()
}

async fn gateway_once(client: &reqwest::Client, base: &str, key: &str, n: usize) -> Duration {
    let t = Instant::now();
    let response = client
        .post(format!("{base}/v1/payment_intents"))
        .bearer_auth(key)
        .header("Idempotency-Key", format!("bench-direct-{n}-{key}"))
        .form(&[
            ("amount", "1000"),
            ("currency", "usd"),
            ("payment_method", "pm_card_visa"),
            ("confirm", "true"),
            ("metadata[order_id]", "ord_bench"),
        ])
        .send()
        .await
        .expect("emulator reachable");
    assert!(response.status().is_success());
    let _ = response.bytes().await;
    t.elapsed()
}

/// The projection's triggers (migration 0008), by backend.
const PROJECTION_TRIGGERS: [(&str, &str); 3] = [
    ("payments_sum_projections", "payments"),
    ("refund_reservations_sum_held", "refund_reservations"),
    ("refund_reservations_unsum_held", "refund_reservations"),
];

async fn drop_projection(app: &TestApp) {
    for (trigger, table) in PROJECTION_TRIGGERS {
        let sql = match app.backend {
            "postgres" => format!("DROP TRIGGER IF EXISTS {trigger} ON {table}"),
            _ => format!("DROP TRIGGER IF EXISTS {trigger}"),
        };
        sqlx::query(&sql)
            .execute(app.store.pool())
            .await
            .expect("drop a projection trigger");
    }
}

async fn bench(app: TestApp, quotas: &str, projection: &str) {
    if projection == "off" {
        drop_projection(&app).await;
    }
    let (tenant, key) = app.new_tenant("Bench shop").await;
    if quotas == "on" {
        let (status, body) = app
            .admin(
                reqwest::Method::PUT,
                &format!("/admin/tenants/{tenant}/overrides/checkouts.monthly"),
                Some(serde_json::json!({"value": 1_000_000_000u64, "reason": "bench"})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    app.save_stripe(&key, 1, &["USD"]).await;
    for _ in 0..WARMUP {
        checkout_once(&app, &key).await;
    }
    let mut e2e = Vec::with_capacity(LATENCY_SAMPLES);
    for _ in 0..LATENCY_SAMPLES {
        e2e.push(checkout_once(&app, &key).await);
    }
    let client = reqwest::Client::new();
    let base = stripe_emulator().base_url();
    let direct_key = stripe_test_key();
    let mut gateway = Vec::with_capacity(LATENCY_SAMPLES);
    for n in 0..LATENCY_SAMPLES {
        gateway.push(gateway_once(&client, &base, &direct_key, n).await);
    }
    e2e.sort();
    gateway.sort();
    let added = |p| pct(&e2e, p).saturating_sub(pct(&gateway, p));

    let app = Arc::new(app);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CONCURRENCY {
        let app = app.clone();
        let key = key.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..THROUGHPUT_TOTAL / CONCURRENCY {
                checkout_once(&app, &key).await;
            }
        }));
    }
    for t in tasks {
        t.await.expect("worker");
    }
    let elapsed = started.elapsed();
    let done = (THROUGHPUT_TOTAL / CONCURRENCY) * CONCURRENCY;
    println!(
        "{:<8} quotas {quotas:<9} projection {projection:<3} checkouts/s {:>7.0} ({done} checkouts, {CONCURRENCY} clients) | e2e p50 {:?} p99 {:?} | gateway p50 {:?} p99 {:?} | host-added p50 {:?} p99 {:?}",
        app.backend,
        done as f64 / elapsed.as_secs_f64(),
        pct(&e2e, 0.50),
        pct(&e2e, 0.99),
        pct(&gateway, 0.50),
        pct(&gateway, 0.99),
        added(0.50),
        added(0.99),
    );
    if let Ok(app) = Arc::try_unwrap(app) {
        app.finish().await;
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio");
    let quotas = std::env::var("PAYHOST_BENCH_QUOTAS").unwrap_or_else(|_| "unlimited".into());
    let projection = std::env::var("PAYHOST_BENCH_PROJECTION").unwrap_or_else(|_| "on".into());
    rt.block_on(async {
        for db in payhost::store::testing::fresh_databases().await {
            // The bench's one key sends ~8,000 requests.
            let opts = AppOptions {
                uncounted: quotas == "off",
                ..AppOptions::unthrottled()
            };
            let app = TestApp::spawn_opts(db, opts).await;
            bench(app, &quotas, &projection).await;
        }
    });
}
