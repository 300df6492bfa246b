//! Resuming an order: no gateway request leaves before the pending order is
//! stored, and a retry under the same `Idempotency-Key` books a charge the
//! ledger could not book, once, only at the gateway and account that may
//! hold it.

use reqwest::Method;
use serde_json::{Value, json};

use payhost_tests::{
    TestApp, backend_test,
    checkout::{keyed_checkout, order_states, orders_of},
    rand_u64, stripe_calls_keyed,
};

/// Runs raw SQL on the app's database (test triggers), in order.
async fn execute_all(app: &TestApp, statements: &[String]) {
    for sql in statements {
        sqlx::query(sql)
            .execute(app.store.pool())
            .await
            .unwrap_or_else(|e| panic!("[{}] {sql}: {e}", app.backend));
    }
}

backend_test! {
    /// The first gateway call starts while the pending order commits; its
    /// request must wait for that commit. An order the database refuses (here a
    /// test trigger) means no request reaches the gateway at all.
    async fn no_gateway_request_leaves_before_the_pending_order_is_stored(app) {
        let (tenant, key) = app.new_tenant("Unstorable orders shop").await;
        app.save_stripe(&key, 1, &["USD"]).await;
        let refuse = match app.backend {
            "sqlite" => vec![format!(
                "CREATE TRIGGER test_refuse_orders BEFORE INSERT ON orders \
                 WHEN NEW.tenant_id = '{tenant}' \
                 BEGIN SELECT RAISE(ABORT, 'test: orders refused'); END"
            )],
            _ => vec![
                "CREATE FUNCTION test_refuse_orders() RETURNS trigger LANGUAGE plpgsql AS \
                 $$ BEGIN RAISE EXCEPTION 'test: orders refused'; END $$"
                    .to_string(),
                format!(
                    "CREATE TRIGGER test_refuse_orders BEFORE INSERT ON orders FOR EACH ROW \
                     WHEN (NEW.tenant_id = '{tenant}') EXECUTE FUNCTION test_refuse_orders()"
                ),
            ],
        };
        execute_all(&app, &refuse).await;
        let client_key = format!("unstorable-{}", rand_u64());
        let sent = || stripe_checkout_calls(&tenant, &client_key);

        let (status, body) = keyed_checkout(&app, &key, &client_key, "pm_card_visa").await;
        assert_eq!(status, 500, "[{}] {body}", app.backend);
        assert_eq!(body["error"]["code"], "internal_error");
        assert_eq!(sent(), 0, "[{}] the gateway saw the charge", app.backend);
        let orders = orders_of(&app, &tenant).await;
        assert_eq!(orders, 0, "[{}] no order was stored", app.backend);

        // The same retry once orders can be stored: charged exactly once,
        // under the key the first attempt would have used.
        let allow = match app.backend {
            "sqlite" => "DROP TRIGGER test_refuse_orders",
            _ => "DROP TRIGGER test_refuse_orders ON orders",
        };
        execute_all(&app, &[allow.to_string()]).await;
        let (status, body) = keyed_checkout(&app, &key, &client_key, "pm_card_visa").await;
        assert_eq!(status, 201, "[{}] {body}", app.backend);
        assert_eq!(body["status"], "paid");
        assert_eq!(sent(), 1, "[{}] one charge after the retry", app.backend);
        app.finish().await;
    }
}

/// Makes the ledger refuse the tenant's payment rows with an error it cannot
/// explain (no constraint, like a failing disk): SQLite cannot find a table
/// the trigger writes to, PostgreSQL reports an I/O error.
async fn refuse_rows(app: &TestApp, tenant: &str) {
    let refuse = match app.backend {
        "sqlite" => vec![
            "CREATE TABLE test_gone (n INTEGER)".to_string(),
            format!(
                "CREATE TRIGGER test_refuse_rows BEFORE INSERT ON payments \
                 WHEN NEW.tenant_id = '{tenant}' BEGIN INSERT INTO test_gone VALUES (1); END"
            ),
            "DROP TABLE test_gone".to_string(),
        ],
        _ => vec![
            "CREATE FUNCTION test_refuse_rows() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN RAISE EXCEPTION 'test: rows refused' USING ERRCODE = '58030'; END $$"
                .to_string(),
            format!(
                "CREATE TRIGGER test_refuse_rows BEFORE INSERT ON payments FOR EACH ROW \
                 WHEN (NEW.tenant_id = '{tenant}') EXECUTE FUNCTION test_refuse_rows()"
            ),
        ],
    };
    execute_all(app, &refuse).await;
}

/// Undoes [`refuse_rows`].
async fn allow_rows(app: &TestApp) {
    let allow = match app.backend {
        "sqlite" => "DROP TRIGGER test_refuse_rows",
        _ => "DROP TRIGGER test_refuse_rows ON payments",
    };
    execute_all(app, &[allow.to_string()]).await;
}

/// Saves the hostile test provider (it approves any other payment method,
/// with `ok-<order id>` as the reference) for USD.
async fn save_hostile(app: &TestApp, key: &str, priority: i64, enabled: bool) {
    put_gateway(
        app,
        key,
        "hostile",
        json!({"credentials": {}, "priority": priority, "currencies": ["USD"], "enabled": enabled}),
    )
    .await;
}

/// `PUT /v1/gateways/{provider}`, which must succeed.
async fn put_gateway(app: &TestApp, key: &str, provider: &str, settings: Value) {
    let path = format!("/v1/gateways/{provider}");
    let (status, body) = app.tenant(key, Method::PUT, &path, Some(settings)).await;
    assert_eq!(status, 200, "{body}");
}

/// Requests the Stripe emulator saw for the tenant's checkout under
/// `client_key` (the gateway key is derived from it).
fn stripe_checkout_calls(tenant: &str, client_key: &str) -> usize {
    let gateway_key = payhost::checkout::gateway_key(
        &payhost::store::TenantId::parse(tenant).expect("tenant id"),
        Some(client_key),
        "",
        "checkout:stripe",
    );
    stripe_calls_keyed(&format!("{gateway_key}:"))
}

/// The tenant's balance shows one USD payment of 1000.
async fn assert_paid_once(app: &TestApp, key: &str) {
    let (_, balance) = app.tenant(key, Method::GET, "/v1/balance", None).await;
    assert_eq!(
        balance["items"],
        json!([{"currency": "USD", "paid": 1000, "refunded": 0, "net": 1000, "held": 0}]),
        "[{}]",
        app.backend
    );
}

backend_test! {
    /// The gateway approved, then the ledger could not book the rows. The
    /// client retries with the same Idempotency-Key once the ledger works again:
    /// the retry resumes the first order and the money is booked once.
    async fn a_retry_books_a_charge_the_ledger_could_not_book_once(app) {
        let (tenant, key) = app.new_tenant("Unbookable rows shop").await;
        app.save_stripe(&key, 1, &["USD"]).await;
        refuse_rows(&app, &tenant).await;
        let client_key = format!("unbookable-{}", rand_u64());
        let (status, body) = keyed_checkout(&app, &key, &client_key, "pm_card_visa").await;
        assert_eq!(status, 500, "[{}] {body}", app.backend);
        // The 500 was not kept for replay, but the key still holds that
        // order: another card under it is refused, and not kept either.
        let (status, body) = keyed_checkout(&app, &key, &client_key, "pm_card_mastercard").await;
        assert_eq!(status, 422, "[{}] {body}", app.backend);
        assert_eq!(body["error"]["code"], "idempotency_key_reused");

        allow_rows(&app).await;
        let (status, body) = keyed_checkout(&app, &key, &client_key, "pm_card_visa").await;
        assert_eq!(status, 201, "[{}] {body}", app.backend);
        assert_eq!(body["status"], "paid");
        assert_paid_once(&app, &key).await;
        assert_eq!(
            order_states(&app, &tenant).await,
            vec![("paid".to_string(), Some("stripe".to_string()))],
            "[{}] the retry resumed the first order",
            app.backend
        );
        app.finish().await;
    }
}

backend_test! {
    /// The first attempt fell through from Stripe (429: nothing charged) to the
    /// second gateway, which approved; the booking failed. A retry goes back to
    /// that second gateway only: never to Stripe, which would charge a second
    /// time, not even while the second gateway is disabled; and an error on the
    /// retry leaves the order pending instead of canceling it.
    async fn a_retry_resumes_only_at_the_gateway_that_may_hold_the_charge(app) {
        let (tenant, key) = app.new_tenant("Fallthrough retry shop").await;
        app.save_stripe(&key, 1, &["USD"]).await;
        save_hostile(&app, &key, 2, true).await;
        refuse_rows(&app, &tenant).await;
        let client_key = format!("fallthrough-{}", rand_u64());
        let at_stripe = || stripe_checkout_calls(&tenant, &client_key);
        let method = "pm_emulator_rate_limited";

        let (status, body) = keyed_checkout(&app, &key, &client_key, method).await;
        assert_eq!(status, 500, "[{}] {body}", app.backend);
        assert_eq!(at_stripe(), 1, "[{}] Stripe answered 429", app.backend);
        let pending = vec![("pending".to_string(), Some("hostile".to_string()))];
        assert_eq!(
            order_states(&app, &tenant).await,
            pending,
            "[{}]",
            app.backend
        );
        allow_rows(&app).await;

        // The gateway that may hold the charge is off: the retry waits for
        // it rather than charging elsewhere, and the order stays pending.
        save_hostile(&app, &key, 2, false).await;
        let (status, body) = keyed_checkout(&app, &key, &client_key, method).await;
        assert_eq!(status, 503, "[{}] {body}", app.backend);
        assert_eq!(at_stripe(), 1, "[{}] no second call to Stripe", app.backend);
        assert_eq!(
            order_states(&app, &tenant).await,
            pending,
            "[{}]",
            app.backend
        );

        save_hostile(&app, &key, 2, true).await;
        let (status, body) = keyed_checkout(&app, &key, &client_key, method).await;
        assert_eq!(status, 201, "[{}] {body}", app.backend);
        assert_eq!(body["status"], "paid");
        assert_eq!(
            body["ledger"][0]["provider"], "hostile",
            "[{}] {body}",
            app.backend
        );
        assert_eq!(at_stripe(), 1, "[{}] no second call to Stripe", app.backend);
        assert_eq!(
            order_states(&app, &tenant).await,
            vec![("paid".to_string(), Some("hostile".to_string()))],
            "[{}]",
            app.backend
        );
        app.finish().await;
    }
}

/// Saves Stripe for USD with the given secret key.
async fn save_stripe_key(app: &TestApp, key: &str, secret_key: &str) {
    let settings =
        json!({"credentials": {"secret-key": secret_key}, "priority": 1, "currencies": ["USD"]});
    put_gateway(app, key, "stripe", settings).await;
}

backend_test! {
    /// Stripe approved and the booking failed; then the tenant saved the keys of
    /// another Stripe account. That account never saw the first call's
    /// idempotency key, so resuming there would charge a second time: the retry
    /// answers 503 and the order waits. With the first keys back, the retry
    /// books the first charge, once.
    async fn a_retry_does_not_resume_an_order_under_another_gateway_account(app) {
        let (tenant, key) = app.new_tenant("Switched account shop").await;
        let first_account = app.save_stripe(&key, 1, &["USD"]).await;
        refuse_rows(&app, &tenant).await;
        let client_key = format!("switched-{}", rand_u64());
        let at_stripe = || stripe_checkout_calls(&tenant, &client_key);

        let (status, body) = keyed_checkout(&app, &key, &client_key, "pm_card_visa").await;
        assert_eq!(status, 500, "[{}] {body}", app.backend);
        assert_eq!(at_stripe(), 1, "[{}]", app.backend);
        allow_rows(&app).await;

        app.save_stripe(&key, 1, &["USD"]).await;
        let (status, body) = keyed_checkout(&app, &key, &client_key, "pm_card_visa").await;
        assert_eq!(status, 503, "[{}] {body}", app.backend);
        assert_eq!(body["error"]["code"], "gateway_unavailable");
        assert_eq!(
            at_stripe(),
            1,
            "[{}] the other account was not called",
            app.backend
        );

        save_stripe_key(&app, &key, &first_account).await;
        let (status, body) = keyed_checkout(&app, &key, &client_key, "pm_card_visa").await;
        assert_eq!(status, 201, "[{}] {body}", app.backend);
        assert_eq!(body["status"], "paid");
        assert_eq!(
            at_stripe(),
            2,
            "[{}] the first account was asked again (and replayed its charge)",
            app.backend
        );
        assert_paid_once(&app, &key).await;
        app.finish().await;
    }
}

backend_test! {
    /// An order staged under a key with generation 0, left pending with a
    /// charge; then a canceled order shows up under the same key (canceled
    /// by an earlier build, or its cancel committed after the retry counted
    /// the generation). The resume must send the key the first call used,
    /// from the order, or the gateway takes a second payment.
    async fn a_resume_uses_the_key_generation_its_order_was_staged_with(app) {
        let (tenant, key) = app.new_tenant("Generation shop").await;
        let stripe_key = app.save_stripe(&key, 1, &["USD"]).await;
        let client_key = format!("generation-{}", rand_u64());
        refuse_rows(&app, &tenant).await;
        let (status, body) = keyed_checkout(&app, &key, &client_key, "pm_card_visa").await;
        assert!(status >= 500, "[{}] {status} {body}", app.backend);
        allow_rows(&app).await;

        let other_key = format!("other-{}", rand_u64());
        let (status, other) =
            keyed_checkout(&app, &key, &other_key, "pm_card_threeDSecure2Required").await;
        assert_eq!(status, 201, "[{}] {other}", app.backend);
        let other_id = other["id"].as_str().expect("order id");
        let path = format!("/v1/checkouts/{other_id}/cancel");
        let (status, canceled) = app.tenant(&key, Method::POST, &path, None).await;
        assert_eq!(status, 200, "[{}] {canceled}", app.backend);
        sqlx::query("UPDATE orders SET checkout_key = $1 WHERE id = $2")
            .bind(&client_key)
            .bind(other_id)
            .execute(app.store.pool())
            .await
            .expect("move the canceled order under the key");

        let (status, body) = keyed_checkout(&app, &key, &client_key, "pm_card_visa").await;
        assert_eq!(status, 201, "[{}] {body}", app.backend);
        assert_eq!(body["status"], "paid", "[{}] {body}", app.backend);
        let payments = payhost_tests::stripe_emulator()
            .money_moved(&stripe_key)
            .payments
            .len();
        assert_eq!(payments, 1, "[{}] charged once", app.backend);
        app.finish().await;
    }
}
