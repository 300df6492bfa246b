//! Webhook ingestion throughput and the delay from 2xx to ledger effect, on
//! SQLite: Stripe-signed deliveries over HTTP → host → Stripe component
//! (signature check) → inbox (group commit) → worker → ledger.
//!
//! Run: `cargo bench -p payhost-tests --bench webhooks`
//!
//! Throughput: 32 concurrent senders on this machine, each delivery a
//! distinct `payment_intent.amount_capturable_updated` event (verified and
//! stored; the worker ignores it, so the figure is ingestion alone).
//! Delay: sequential `refund.updated` deliveries of gateway-side refunds;
//! after each 2xx the bench polls the ledger every 0.5 ms until the refund
//! row is there (so the figure includes up to 0.5 ms of polling).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use payhost::emulators::stripe::sign_payload;
use payhost_tests::checkout::{cart, checkout};
use payhost_tests::{TestApp, WEBHOOK_SECRET};
use reqwest::Method;
use serde_json::json;

const THROUGHPUT_TOTAL: usize = 6_000;
const CONCURRENCY: usize = 32;
const DELAY_SAMPLES: usize = 300;

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

async fn deliver(app: &TestApp, tenant: &str, body: Vec<u8>) {
    let signature = sign_payload(WEBHOOK_SECRET, now_secs(), &body);
    let (status, answer) = app
        .send(
            app.request(Method::POST, &format!("/webhooks/{tenant}/stripe"), None)
                .header("Stripe-Signature", signature)
                .body(body),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let app = Arc::new(TestApp::sqlite().await);
        let (tenant, key) = app.new_tenant("Webhook bench").await;
        app.save_stripe(&key, 1, &["USD"]).await;

        // Throughput.
        let next = Arc::new(AtomicUsize::new(0));
        let started = Instant::now();
        let mut senders = Vec::new();
        for _ in 0..CONCURRENCY {
            let (app, tenant, next) = (app.clone(), tenant.clone(), next.clone());
            senders.push(tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= THROUGHPUT_TOTAL {
                        return;
                    }
                    let body = serde_json::to_vec(&json!({
                        "id": format!("evt_bench_{n}"), "object": "event",
                        "type": "payment_intent.amount_capturable_updated", "created": now_secs(),
                        "data": {"object": {"id": format!("pi_bench_{n}"), "object": "payment_intent",
                            "amount": 1000, "amount_capturable": 1000, "currency": "usd"}},
                    }))
                    .expect("json");
                    deliver(&app, &tenant, body).await;
                }
            }));
        }
        for s in senders {
            s.await.expect("sender");
        }
        let elapsed = started.elapsed();
        println!(
            "webhook ingestion, sqlite, {CONCURRENCY} senders: {THROUGHPUT_TOTAL} verified events in {:.2?} = {:.0}/s",
            elapsed,
            THROUGHPUT_TOTAL as f64 / elapsed.as_secs_f64()
        );

        // Let the workers finish the backlog, so the delay below is not
        // spent queued behind it.
        let drain = Instant::now();
        loop {
            let (_, stats) = app.admin(Method::GET, "/admin/webhooks/stats", None).await;
            if stats["pending"] == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        println!(
            "worker drained the {THROUGHPUT_TOTAL} events {:.2?} after the last 2xx",
            drain.elapsed()
        );

        // 2xx → ledger effect.
        let (status, order) = checkout(&app, &key, cart("USD", "pm_card_visa")).await;
        assert_eq!(status, 201, "{order}");
        let pi = order["ledger"][0]["gateway_reference"].as_str().expect("pi").to_string();
        let order_id = order["id"].as_str().expect("order").to_string();
        let mut delays = Vec::with_capacity(DELAY_SAMPLES);
        for n in 0..DELAY_SAMPLES {
            let re = format!("re_bench_{n}_{:x}", payhost_tests::rand_u64());
            let body = serde_json::to_vec(&json!({
                "id": format!("evt_refund_{n}_{re}"), "object": "event", "type": "refund.updated",
                "created": now_secs(),
                "data": {"object": {"id": re, "object": "refund", "amount": 1, "currency": "usd",
                    "status": "succeeded", "payment_intent": pi, "metadata": {"order_id": order_id}}},
            }))
            .expect("json");
            deliver(&app, &tenant, body).await;
            let acked = Instant::now();
            loop {
                let booked: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM payments WHERE external_ref = $1",
                )
                .bind(&re)
                .fetch_one(app.store.pool())
                .await
                .expect("poll");
                if booked == 1 {
                    break;
                }
                assert!(acked.elapsed() < Duration::from_secs(10), "effect never arrived");
                tokio::time::sleep(Duration::from_micros(500)).await;
            }
            delays.push(acked.elapsed());
        }
        delays.sort();
        println!(
            "webhook 2xx → ledger effect, sqlite (sequential, {DELAY_SAMPLES}): p50 {:.2?}, p99 {:.2?}",
            pct(&delays, 0.5),
            pct(&delays, 0.99)
        );
        Arc::try_unwrap(app).ok().expect("sole owner").finish().await;
    });
}
