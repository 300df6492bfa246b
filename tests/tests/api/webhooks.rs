//! Webhooks over real HTTP: Stripe-signed deliveries verified by the real
//! Stripe component, stored in the inbox before the 2xx, applied by the
//! worker once each; retries on the test's clock, dead letters, alerts to a
//! loopback receiver, replay.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use payhost::emulators::stripe::sign_payload;
use payhost_tests::checkout::{cart, checkout, first_product_payment};
use payhost_tests::{TestApp, WEBHOOK_SECRET, backend_test, eventually, stripe_emulator};
use reqwest::Method;
use serde_json::{Value, json};

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

fn unique(prefix: &str) -> String {
    format!("{prefix}_{:016x}", payhost_tests::rand_u64())
}

/// A Stripe event of `kind` about `object`, as JSON bytes.
fn event(id: &str, kind: &str, object: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "id": id, "object": "event", "api_version": "2024-06-20", "created": now_secs(),
        "livemode": false, "type": kind, "data": {"object": object},
    }))
    .expect("json")
}

fn intent(pi: &str, order: &str, amount: u64) -> Value {
    json!({"id": pi, "object": "payment_intent", "amount": amount, "amount_received": amount,
        "currency": "usd", "status": "succeeded", "metadata": {"order_id": order}})
}

fn refund_object(re: &str, pi: &str, amount: u64, status: &str, hold: Option<&str>) -> Value {
    let mut metadata = json!({});
    if let Some(hold) = hold {
        metadata["payhost_refund_id"] = json!(hold);
    }
    json!({"id": re, "object": "refund", "amount": amount, "currency": "usd",
        "payment_intent": pi, "status": status, "metadata": metadata})
}

/// POSTs `body` to the tenant's Stripe webhook URL, signed with `secret`.
async fn deliver(app: &TestApp, tenant: &str, body: &[u8], secret: &str) -> (u16, Value) {
    app.send(
        app.request(Method::POST, &format!("/webhooks/{tenant}/stripe"), None)
            .header("Stripe-Signature", sign_payload(secret, now_secs(), body))
            .header("content-type", "application/json")
            .body(body.to_vec()),
    )
    .await
}

async fn inbox_rows(app: &TestApp, tenant: &str) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM webhook_inbox WHERE tenant_id = $1")
        .bind(tenant)
        .fetch_one(app.store.pool())
        .await
        .expect("count inbox")
}

/// Waits until no inbox event is pending (none is expected to fail).
async fn drained(app: &TestApp) {
    eventually("the inbox drains", || async {
        let (_, stats) = app.admin(Method::GET, "/admin/webhooks/stats", None).await;
        if stats["pending"] == 0 {
            Ok(())
        } else {
            Err(stats)
        }
    })
    .await;
}

async fn balance(app: &TestApp, key: &str) -> Value {
    let (_, b) = app.tenant(key, Method::GET, "/v1/balance", None).await;
    b["items"].clone()
}

/// A checkout left `requires_action` at the emulator: (order id, pi id).
async fn pending_order(app: &TestApp, key: &str) -> (String, String) {
    let (status, order) = checkout(app, key, cart("USD", "pm_card_threeDSecure2Required")).await;
    assert_eq!(status, 201, "{order}");
    let id = order["id"].as_str().expect("order id").to_string();
    let pi: String = sqlx::query_scalar("SELECT gateway_reference FROM orders WHERE id = $1")
        .bind(&id)
        .fetch_one(app.store.pool())
        .await
        .expect("order's payment reference");
    (id, pi)
}

async fn tenant_with_stripe(app: &TestApp) -> (String, String) {
    let (tenant, key) = app.new_tenant("Webhook shop").await;
    app.save_stripe(&key, 1, &["USD"]).await;
    (tenant, key)
}

backend_test! {
    /// A verified `payment_intent.succeeded` settles an order waiting for
    /// the customer; redeliveries change nothing.
    async fn a_verified_delivery_settles_a_pending_order_once(app) {
        let (tenant, key) = tenant_with_stripe(&app).await;
        let (order, pi) = pending_order(&app, &key).await;
        let body = event(&unique("evt"), "payment_intent.succeeded", intent(&pi, &order, 1000));
        let (status, first) = deliver(&app, &tenant, &body, WEBHOOK_SECRET).await;
        assert_eq!(status, 200, "{first}");
        assert_eq!(first, json!({"received": 1, "duplicates": 0}));
        for _ in 0..3 {
            let (status, again) = deliver(&app, &tenant, &body, WEBHOOK_SECRET).await;
            assert_eq!(status, 200, "{again}");
            assert_eq!(again, json!({"received": 0, "duplicates": 1}));
        }
        drained(&app).await;
        let (_, after) = app.tenant(&key, Method::GET, &format!("/v1/orders/{order}"), None).await;
        assert_eq!(after["status"], "paid", "{after}");
        let ledger = after["ledger"].as_array().expect("rows");
        assert_eq!(ledger.len(), 1, "{after}");
        assert_eq!(ledger[0]["source"], "webhook");
        assert_eq!(inbox_rows(&app, &tenant).await, 1);
        let (_, list) = app.admin(Method::GET, &format!("/admin/webhooks?tenant_id={tenant}"), None).await;
        assert_eq!(list["items"][0]["status"], "applied", "{list}");
        // A late `payment_failed` does not undo the payment.
        let failed = event(&unique("evt"), "payment_intent.payment_failed", intent(&pi, &order, 1000));
        assert_eq!(deliver(&app, &tenant, &failed, WEBHOOK_SECRET).await.0, 200);
        drained(&app).await;
        let (_, after) = app.tenant(&key, Method::GET, &format!("/v1/orders/{order}"), None).await;
        assert_eq!(after["status"], "paid", "{after}");
        app.finish().await;
    }
}

backend_test! {
    /// 1,000 deliveries carrying 200 distinct gateway-side refunds, sent
    /// concurrently and shuffled: exactly 200 refund rows, and the balance
    /// is the fold of the distinct events.
    async fn a_thousand_shuffled_deliveries_of_200_events_book_200_effects(app) {
        let (tenant, key) = tenant_with_stripe(&app).await;
        let (status, order) = checkout(&app, &key, cart("USD", "pm_card_visa")).await;
        assert_eq!(status, 201, "{order}");
        let order_id = order["id"].as_str().expect("id").to_string();
        let pi = order["ledger"][0]["gateway_reference"].as_str().expect("pi").to_string();
        let events: Vec<Vec<u8>> = (0..200)
            .map(|_| {
                let re = unique("re");
                let mut object = refund_object(&re, &pi, 3, "succeeded", None);
                object["metadata"]["order_id"] = json!(order_id);
                event(&unique("evt"), "refund.updated", object)
            })
            .collect();
        let mut deliveries: Vec<usize> = (0..1000).map(|i| i % 200).collect();
        // A deterministic shuffle (no extra dependency).
        let mut seed = payhost_tests::rand_u64() | 1;
        for i in (1..deliveries.len()).rev() {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            deliveries.swap(i, (seed % (i as u64 + 1)) as usize);
        }
        let app = Arc::new(app);
        let events = Arc::new(events);
        let queue = Arc::new(Mutex::new(deliveries));
        let mut senders = Vec::new();
        for _ in 0..16 {
            let (app, events, queue, tenant) = (app.clone(), events.clone(), queue.clone(), tenant.clone());
            senders.push(tokio::spawn(async move {
                let mut new = 0;
                loop {
                    let Some(i) = queue.lock().expect("queue").pop() else { return new };
                    let (status, body) = deliver(&app, &tenant, &events[i], WEBHOOK_SECRET).await;
                    assert_eq!(status, 200, "{body}");
                    new += body["received"].as_i64().expect("received");
                }
            }));
        }
        let mut stored = 0;
        for s in senders {
            stored += s.await.expect("sender");
        }
        assert_eq!(stored, 200, "each distinct event is stored by exactly one delivery");
        drained(&app).await;
        let refunds: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM payments WHERE tenant_id = $1 AND status = 'refunded' AND source = 'webhook'",
        )
        .bind(&tenant)
        .fetch_one(app.store.pool())
        .await
        .expect("count");
        assert_eq!(refunds, 200);
        assert_eq!(
            balance(&app, &key).await,
            json!([{"currency": "USD", "paid": 1000, "refunded": 600, "net": 400, "held": 0}])
        );
        app.assert_ledger_verified().await;
        Arc::try_unwrap(app).ok().expect("sole owner").finish().await;
    }
}

/// The emulator's own record of an event about `object_id` of `kind`.
fn emulator_event(object_id: &str, kind: &str) -> Value {
    stripe_emulator()
        .events()
        .into_iter()
        .find(|e| e["type"] == kind && e["data"]["object"]["id"] == object_id)
        .unwrap_or_else(|| panic!("the emulator emitted {kind} for {object_id}"))
}

/// How often the gateway was asked about event `id` (the diagnosis call);
/// per event, so tests running at once do not count each other's.
fn event_lookups(id: &str) -> usize {
    let path = format!("/v1/events/{id}");
    stripe_emulator()
        .calls()
        .iter()
        .filter(|c| c.path == path)
        .count()
}

backend_test! {
    /// Wrong secret, tampered body, plain mismatch: one identical answer,
    /// nothing stored; the diagnosis reaches the tenant's gateway status;
    /// past the diagnosis budget the gateway is not asked.
    async fn invalid_signatures_get_one_answer_and_store_nothing(app) {
        let (tenant, key) = tenant_with_stripe(&app).await;
        let (status, order) = checkout(&app, &key, cart("USD", "pm_card_visa")).await;
        assert_eq!(status, 201, "{order}");
        let pi = order["ledger"][0]["gateway_reference"].as_str().expect("pi").to_string();
        let genuine_event = emulator_event(&pi, "payment_intent.succeeded");
        let event_id = genuine_event["id"].as_str().expect("id").to_string();
        let genuine = serde_json::to_vec(&genuine_event).expect("json");
        let event_lookups = || event_lookups(&event_id);

        let lookups = event_lookups();
        let (s1, wrong_secret) = deliver(&app, &tenant, &genuine, "whsec_not_the_tenants_secret").await;
        let mut tampered: Value = serde_json::from_slice(&genuine).expect("json");
        tampered["data"]["object"]["amount_received"] = json!(1);
        let tampered = serde_json::to_vec(&tampered).expect("json");
        let (s2, tampered_answer) = deliver(&app, &tenant, &tampered, "whsec_forger").await;
        assert_eq!(event_lookups(), lookups + 2, "each mismatch was diagnosed at the gateway");
        assert_eq!((s1, s2), (400, 400));
        assert_eq!(wrong_secret["error"]["code"], "webhook_signature_invalid");
        assert_eq!(wrong_secret, tampered_answer, "the sender cannot tell the reasons apart");

        let (_, gateways) = app.tenant(&key, Method::GET, "/v1/gateways", None).await;
        assert_eq!(gateways["items"][0]["last_webhook_error"], "tampered_body", "{gateways}");
        assert_eq!(gateways["items"][0]["webhook_status"], "failing");
        let (_, audit) = app.admin(Method::GET, &format!("/admin/audit?tenant_id={tenant}&action=webhook.rejected"), None).await;
        let reasons: Vec<&str> = audit["items"].as_array().expect("items").iter()
            .filter_map(|e| e["details"]["reason"].as_str()).collect();
        assert!(reasons.contains(&"wrong_secret") && reasons.contains(&"tampered_body"), "{audit}");

        // The rest of the diagnosis lane's budget (the default, per minute,
        // on the limiter's clock, which stands still); then no gateway call.
        let budget = payhost::ratelimit::RateLimitOptions::default().webhook_diagnosis_per_minute;
        for _ in 2..budget {
            assert_eq!(deliver(&app, &tenant, &genuine, "whsec_forger").await.0, 400);
        }
        let spent = event_lookups();
        assert_eq!(spent, lookups + budget as usize);
        for _ in 0..5 {
            let (status, plain) = deliver(&app, &tenant, &genuine, "whsec_forger").await;
            assert_eq!(status, 400);
            assert_eq!(plain, wrong_secret, "the plain mismatch answers the same");
        }
        assert_eq!(event_lookups(), spent, "past the budget the gateway is not called");
        assert_eq!(inbox_rows(&app, &tenant).await, 0, "nothing stored");
        app.finish().await;
    }
}

backend_test! {
    /// Unknown tenant, unknown provider, a provider the tenant has not
    /// configured, a malformed body, an oversized body: a 4xx with a stable
    /// code, and nothing stored.
    async fn bad_deliveries_are_clear_4xx_and_store_nothing(app) {
        let (tenant, _key) = tenant_with_stripe(&app).await;
        let (bare, _) = app.new_tenant("No gateways").await;
        let body = event(&unique("evt"), "payment_intent.succeeded", intent("pi_x", "ord_x", 10));
        let post = |path: String, body: Vec<u8>| {
            let signature = sign_payload(WEBHOOK_SECRET, now_secs(), &body);
            app.send(app.request(Method::POST, &path, None)
                .header("Stripe-Signature", signature)
                .body(body))
        };
        let unknown_tenant = TenantIdLike::fresh();
        let (s, b) = post(format!("/webhooks/{unknown_tenant}/stripe"), body.clone()).await;
        assert_eq!((s, b["error"]["code"].as_str()), (404, Some("tenant_not_found")), "{b}");
        let (s, b) = post("/webhooks/not-a-tenant/stripe".into(), body.clone()).await;
        assert_eq!((s, b["error"]["code"].as_str()), (404, Some("tenant_not_found")), "{b}");
        let (s, b) = post(format!("/webhooks/{tenant}/paypal"), body.clone()).await;
        assert_eq!((s, b["error"]["code"].as_str()), (404, Some("provider_not_found")), "{b}");
        let (s, b) = post(format!("/webhooks/{bare}/stripe"), body.clone()).await;
        assert_eq!((s, b["error"]["code"].as_str()), (404, Some("gateway_not_configured")), "{b}");
        let (s, b) = post(format!("/webhooks/{tenant}/stripe"), b"{not json".to_vec()).await;
        assert_eq!((s, b["error"]["code"].as_str()), (400, Some("webhook_payload_invalid")), "{b}");
        let (s, b) = post(format!("/webhooks/{tenant}/stripe"), vec![b' '; 300 * 1024]).await;
        assert_eq!((s, b["error"]["code"].as_str()), (413, Some("body_too_large")), "{b}");
        // Bigger than the API's 64 KiB but within the webhook limit is read.
        let mut big = intent("pi_big", "ord_big", 10);
        big["description"] = json!("x".repeat(100 * 1024));
        let (s, b) = post(format!("/webhooks/{tenant}/stripe"), event(&unique("evt"), "payment_intent.succeeded", big)).await;
        assert_eq!(s, 200, "{b}");
        let stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM webhook_inbox")
            .fetch_one(app.store.pool()).await.expect("count");
        assert_eq!(stored, 1, "only the good delivery");
        app.finish().await;
    }
}

/// A syntactically valid tenant id no tenant has.
struct TenantIdLike;

impl TenantIdLike {
    fn fresh() -> String {
        format!("ten_{:024x}", u128::from(payhost_tests::rand_u64()))
    }
}

/// A loopback receiver that records the JSON bodies POSTed to it.
async fn alert_receiver() -> (String, Arc<Mutex<Vec<Value>>>) {
    let seen: Arc<Mutex<Vec<Value>>> = Arc::default();
    let record = seen.clone();
    let app = axum::Router::new().route(
        "/alerts",
        axum::routing::post(move |body: axum::Json<Value>| {
            let record = record.clone();
            async move {
                record.lock().expect("alerts").push(body.0);
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/alerts", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, seen)
}

async fn configured_app(
    backend: &str,
    configure: impl FnOnce(&mut payhost::config::Config) + 'static,
) -> Option<TestApp> {
    let db = match backend {
        "sqlite" => payhost::store::testing::TestDb::sqlite()
            .await
            .expect("sqlite"),
        _ => {
            let url = std::env::var(payhost_tests::POSTGRES_URL_ENV)
                .ok()
                .filter(|u| !u.is_empty())?;
            payhost::store::testing::TestDb::postgres(&url)
                .await
                .expect("postgres")
        }
    };
    Some(
        TestApp::spawn_configured(db, payhost::http_server::HttpOptions::default(), configure)
            .await,
    )
}

/// The inbox row's (status, attempts), once no worker holds it (so moving
/// the clock cannot expire a lease in use).
async fn inbox_attempts(app: &TestApp, tenant: &str) -> (String, i64) {
    sqlx::query_as::<_, (String, i64)>(
        "SELECT status, attempts FROM webhook_inbox WHERE tenant_id = $1 AND lease_owner IS NULL",
    )
    .bind(tenant)
    .fetch_optional(app.store.pool())
    .await
    .expect("inbox row")
    .unwrap_or_else(|| ("leased".into(), -1))
}

/// A refund reported before its payment is booked fails, is retried on the
/// policy's backoff (on the test's clock), becomes a dead letter with the
/// full envelope and an alert; once the payment is booked, a replay
/// applies it once and a second replay changes nothing.
async fn dead_letter_flow(backend: &str) {
    let (alerts_url, alerts) = alert_receiver().await;
    let Some(app) = configured_app(backend, move |c| {
        c.webhooks.alert_url = Some(alerts_url.clone());
        c.webhooks.alert_link_base = "https://ops.example".into();
        c.jobs.webhook.max_attempts = 3;
        c.jobs.webhook.base_secs = 60;
        c.jobs.webhook.factor = 5;
    })
    .await
    else {
        eprintln!("skipped: {} is not set", payhost_tests::POSTGRES_URL_ENV);
        return;
    };
    let (tenant, key) = tenant_with_stripe(&app).await;
    let (order, pi) = pending_order(&app, &key).await;
    let mut object = refund_object(&unique("re"), &pi, 250, "succeeded", None);
    object["metadata"]["order_id"] = json!(order);
    let refund = event(&unique("evt"), "refund.updated", object);
    assert_eq!(deliver(&app, &tenant, &refund, WEBHOOK_SECRET).await.0, 200);

    let attempts = |n: i64| {
        let app = &app;
        let tenant = tenant.clone();
        async move {
            eventually(&format!("attempt {n}"), || async {
                let got = inbox_attempts(app, &tenant).await;
                if got.1 >= n {
                    Ok(got)
                } else {
                    Err(json!(format!("{got:?}")))
                }
            })
            .await
        }
    };
    assert_eq!(attempts(1).await.1, 1);
    // Not due before the first backoff (60 s) has passed on the clock.
    app.advance_clock(Duration::from_secs(59));
    app.webhooks.run_once("test-probe").await;
    assert_eq!(
        inbox_attempts(&app, &tenant).await.1,
        1,
        "not retried early"
    );
    app.advance_clock(Duration::from_secs(1));
    assert_eq!(attempts(2).await.1, 2);
    app.advance_clock(Duration::from_secs(299));
    app.webhooks.run_once("test-probe").await;
    assert_eq!(
        inbox_attempts(&app, &tenant).await.1,
        2,
        "the second wait is 5 min"
    );
    app.advance_clock(Duration::from_secs(1));
    let dead = eventually("dead letter", || async {
        let (_, page) = app
            .admin(
                Method::GET,
                &format!("/admin/dead-letters?tenant_id={tenant}"),
                None,
            )
            .await;
        match page["items"].as_array() {
            Some(items) if items.len() == 1 => Ok(items[0].clone()),
            _ => Err(page),
        }
    })
    .await;
    assert_eq!(inbox_attempts(&app, &tenant).await, ("dead".into(), 3));
    for field in [
        "job_id",
        "job_type",
        "tenant",
        "attempt",
        "max_attempts",
        "reason",
        "payload",
        "failed_at",
        "next_retry_at",
        "backoff_strategy",
    ] {
        assert!(dead.get(field).is_some(), "envelope has {field}: {dead}");
    }
    assert_eq!(dead["job_type"], "webhook");
    assert_eq!(dead["attempt"], 3);
    assert_eq!(dead["max_attempts"], 3);
    assert_eq!(dead["backoff_strategy"], "exponential");
    assert!(
        dead["reason"]
            .as_str()
            .unwrap_or("")
            .contains("no booked payment"),
        "{dead}"
    );
    let id = dead["id"].as_str().expect("id").to_string();
    let (s, one) = app
        .admin(Method::GET, &format!("/admin/dead-letters/{id}"), None)
        .await;
    assert_eq!(s, 200, "{one}");
    assert_eq!(one["payload"]["event"]["gateway_type"], "refund.updated");
    let alert = eventually("the alert arrives", || async {
        match alerts.lock().expect("alerts").first() {
            Some(a) => Ok(a.clone()),
            None => Err(json!("no alert yet")),
        }
    })
    .await;
    let text = alert["text"].as_str().expect("text");
    assert!(
        text.contains(&id)
            && text.contains(&format!("https://ops.example/admin/dead-letters/{id}")),
        "{alert}"
    );

    // Fix the cause: the payment is booked (its own webhook).
    let paid = event(
        &unique("evt"),
        "payment_intent.succeeded",
        intent(&pi, &order, 1000),
    );
    assert_eq!(deliver(&app, &tenant, &paid, WEBHOOK_SECRET).await.0, 200);
    eventually("order paid", || async {
        let (_, o) = app
            .tenant(&key, Method::GET, &format!("/v1/orders/{order}"), None)
            .await;
        if o["status"] == "paid" {
            Ok(())
        } else {
            Err(o)
        }
    })
    .await;
    let (s, replayed) = app
        .admin(
            Method::POST,
            &format!("/admin/dead-letters/{id}/replay"),
            None,
        )
        .await;
    assert_eq!(s, 200, "{replayed}");
    assert_eq!(replayed["outcome"], "requeued");
    drained(&app).await;
    let net = json!([{"currency": "USD", "paid": 1000, "refunded": 250, "net": 750, "held": 0}]);
    assert_eq!(balance(&app, &key).await, net);
    let (s, again) = app
        .admin(
            Method::POST,
            "/admin/dead-letters/replay",
            Some(json!({"ids": [id]})),
        )
        .await;
    assert_eq!(s, 200, "{again}");
    assert_eq!(again["items"][0]["outcome"], "already_replayed");
    drained(&app).await;
    assert_eq!(
        balance(&app, &key).await,
        net,
        "a second replay changes nothing"
    );
    let (_, audit) = app
        .admin(
            Method::GET,
            "/admin/audit?action=dead_letter.replayed",
            None,
        )
        .await;
    assert_eq!(audit["items"].as_array().map(Vec::len), Some(1), "{audit}");
    assert_eq!(
        alerts.lock().expect("alerts").len(),
        1,
        "one alert per dead letter"
    );
    app.finish().await;
}

mod a_failing_event_retries_dead_letters_alerts_and_replays_once {
    #[tokio::test]
    async fn sqlite() {
        super::dead_letter_flow("sqlite").await;
    }

    #[tokio::test]
    async fn postgres() {
        super::dead_letter_flow("postgres").await;
    }
}

backend_test! {
    /// An API refund and its webhook echo book one row; a pending refund
    /// hold completes (books its row) on its `succeeded` event.
    async fn refund_echoes_book_once_and_pending_holds_complete(app) {
        let (tenant, key) = tenant_with_stripe(&app).await;
        let (_, order) = checkout(&app, &key, cart("USD", "pm_card_visa")).await;
        let payment = first_product_payment(&order);
        let (status, refunded) = app
            .tenant(&key, Method::POST, &format!("/v1/payments/{payment}/refunds"), Some(json!({"amount": 300})))
            .await;
        assert_eq!(status, 201, "{refunded}");
        let re = refunded["gateway_reference"].as_str().expect("re").to_string();
        let echo = serde_json::to_vec(&emulator_event(&re, "refund.created")).expect("json");
        assert_eq!(deliver(&app, &tenant, &echo, WEBHOOK_SECRET).await.0, 200);
        drained(&app).await;
        assert_eq!(
            balance(&app, &key).await,
            json!([{"currency": "USD", "paid": 1000, "refunded": 300, "net": 700, "held": 0}]),
            "the echo books nothing"
        );

        let (_, order) = checkout(&app, &key, cart("USD", "pm_card_pendingRefund")).await;
        let payment = first_product_payment(&order);
        let pi = order["ledger"][0]["gateway_reference"].as_str().expect("pi").to_string();
        let (status, held) = app
            .tenant(&key, Method::POST, &format!("/v1/payments/{payment}/refunds"), Some(json!({"amount": 400})))
            .await;
        assert_eq!(status, 202, "{held}");
        let hold = held["id"].as_str().expect("hold").to_string();
        let re = held["gateway_refund_reference"].as_str().expect("re").to_string();
        // A succeeded event for another amount does not complete the hold.
        let wrong = event(&unique("evt"), "refund.updated", refund_object(&re, &pi, 399, "succeeded", Some(&hold)));
        assert_eq!(deliver(&app, &tenant, &wrong, WEBHOOK_SECRET).await.0, 200);
        let done = event(&unique("evt"), "refund.updated", refund_object(&re, &pi, 400, "succeeded", Some(&hold)));
        assert_eq!(deliver(&app, &tenant, &done, WEBHOOK_SECRET).await.0, 200);
        eventually("the hold completes", || async {
            let b = balance(&app, &key).await;
            if b == json!([{"currency": "USD", "paid": 2000, "refunded": 700, "net": 1300, "held": 0}]) { Ok(()) } else { Err(b) }
        })
        .await;
        let holds: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM refund_reservations WHERE id = $1")
            .bind(&hold).fetch_one(app.store.pool()).await.expect("count");
        assert_eq!(holds, 0, "the hold became its row");
        let mismatch: (String, i64) = sqlx::query_as(
            "SELECT status, attempts FROM webhook_inbox WHERE event_id = $1")
            .bind(serde_json::from_slice::<Value>(&wrong).expect("json")["id"].as_str().expect("id"))
            .fetch_one(app.store.pool()).await.expect("row");
        assert_ne!(mismatch.0, "applied", "the mismatched amount was never applied");
        app.finish().await;
    }
}

/// Two host instances on PostgreSQL drain one inbox: every event applied
/// once, whichever instance received or applied it.
#[tokio::test]
async fn two_instances_on_postgres_drain_one_inbox_without_double_effects() {
    let Some(app) = TestApp::postgres().await else {
        eprintln!("skipped: {} is not set", payhost_tests::POSTGRES_URL_ENV);
        return;
    };
    let other = app.sibling(&app.database_url().expect("url")).await;
    let (tenant, key) = tenant_with_stripe(&app).await;
    let mut orders = Vec::new();
    for _ in 0..20 {
        orders.push(pending_order(&app, &key).await);
    }
    for (i, (order, pi)) in orders.iter().enumerate() {
        let body = event(
            &unique("evt"),
            "payment_intent.succeeded",
            intent(pi, order, 1000),
        );
        for copy in 0..3 {
            let target = if (i + copy) % 2 == 0 { &app } else { &other };
            let (status, answer) = deliver(target, &tenant, &body, WEBHOOK_SECRET).await;
            assert_eq!(status, 200, "{answer}");
        }
    }
    drained(&app).await;
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM payments WHERE tenant_id = $1")
        .bind(&tenant)
        .fetch_one(app.store.pool())
        .await
        .expect("count");
    assert_eq!(rows, 20);
    assert_eq!(
        balance(&app, &key).await,
        json!([{"currency": "USD", "paid": 20000, "refunded": 0, "net": 20000, "held": 0}])
    );
    app.assert_ledger_verified().await;
    other.finish().await;
    app.finish().await;
}
