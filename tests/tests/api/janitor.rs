//! Reconciliation: a checkout whose webhook never arrives is settled by the
//! janitor once the (controllable) clock passes its age, with a backoff
//! that grows per order; the operator reconciles one order now; two
//! instances never double-call or double-book; the tenant cancels a
//! pending checkout, which frees its `Idempotency-Key`.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use payhost_tests::{
    JANITOR_BACKOFF_BASE, JANITOR_MIN_AGE, TestApp, backend_test,
    checkout::{cart, checkout, keyed_checkout},
    eventually, stripe_emulator,
};

/// A checkout left `requires_action` (3-D Secure): its order id and the
/// gateway's `pi_…`.
async fn awaiting_3ds(app: &TestApp, key: &str) -> (String, String, String) {
    let (status, order) = checkout(app, key, cart("USD", "pm_card_threeDSecure2Required")).await;
    assert_eq!(status, 201, "{order}");
    assert_eq!(order["status"], "requires_action", "{order}");
    let id = order["id"].as_str().expect("order id").to_owned();
    let pi = order["gateway_reference"]
        .as_str()
        .expect("gateway reference")
        .to_owned();
    let url = order["next_action"]["url"]
        .as_str()
        .expect("3-D Secure url")
        .to_owned();
    (id, pi, url)
}

/// The customer passes 3-D Secure at the gateway. No webhook endpoint is
/// subscribed for this account, so payhost never hears of it.
async fn pass_3ds(url: &str) {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let response = client.get(url).send().await.expect("3-D Secure page");
    assert!(
        response.status().is_success() || response.status().is_redirection(),
        "{}",
        response.status()
    );
}

/// How many times the gateway was asked for `pi` (`GET /v1/payment_intents/{pi}`).
fn reads_of(pi: &str) -> usize {
    let path = format!("/v1/payment_intents/{pi}");
    stripe_emulator()
        .calls()
        .iter()
        .filter(|c| c.method == "GET" && c.path == path)
        .count()
}

async fn order(app: &TestApp, key: &str, id: &str) -> Value {
    let (status, body) = app
        .tenant(key, Method::GET, &format!("/v1/orders/{id}"), None)
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

/// The janitor's schedule row of an order: (attempts, next_check_at − checked_at in ms).
async fn schedule_of(app: &TestApp, id: &str) -> Option<(i64, i64)> {
    sqlx::query_as::<_, (i64, i64)>(
        "SELECT attempts, next_check_at - COALESCE(checked_at, next_check_at) \
           FROM reconcile_checks WHERE order_id = $1 AND lease_owner IS NULL",
    )
    .bind(id)
    .fetch_optional(app.store.pool())
    .await
    .expect("read schedule")
}

backend_test! {
    async fn a_payment_whose_webhook_never_arrives_is_settled_by_the_janitor(app) {
        let (_, key) = app.new_tenant("Janitor shop").await;
        app.save_stripe(&key, 1, &["USD"]).await;
        let (id, pi, url) = awaiting_3ds(&app, &key).await;
        pass_3ds(&url).await;
        // Younger than the janitor's age: left alone.
        assert_eq!(app.janitor_pass().await.checked, 0);
        assert_eq!(order(&app, &key, &id).await["status"], "requires_action");
        assert_eq!(reads_of(&pi), 0);

        app.janitor_clock.advance(JANITOR_MIN_AGE + Duration::from_secs(1));
        let paid = eventually("the janitor books the payment", || async {
            let body = order(&app, &key, &id).await;
            if body["status"] == "paid" { Ok(body) } else { Err(body) }
        })
        .await;
        let rows = paid["ledger"].as_array().expect("rows");
        assert_eq!(rows.len(), 1, "{paid}");
        assert_eq!(rows[0]["source"], "janitor");
        assert_eq!(rows[0]["amount"], 1000);
        assert_eq!(rows[0]["gateway_reference"], pi.as_str());
        assert_eq!(paid["granted_user_plans"], json!(["pro"]));
        let (_, balance) = app.tenant(&key, Method::GET, "/v1/balance", None).await;
        assert_eq!(
            balance["items"],
            json!([{"currency": "USD", "paid": 1000, "refunded": 0, "net": 1000, "held": 0}])
        );
        app.assert_ledger_verified().await;
        // Settled: the janitor asks once and not again.
        assert_eq!(reads_of(&pi), 1);
        app.janitor_clock.advance(Duration::from_secs(24 * 3600));
        app.janitor_pass().await;
        assert_eq!(reads_of(&pi), 1);
        app.finish().await;
    }
}

backend_test! {
    async fn the_janitor_backs_off_per_order(app) {
        let (_, key) = app.new_tenant("Backoff shop").await;
        app.save_stripe(&key, 1, &["USD"]).await;
        // The customer never authenticates: the order keeps waiting.
        let (id, pi, _) = awaiting_3ds(&app, &key).await;
        app.janitor_clock.advance(JANITOR_MIN_AGE + Duration::from_secs(1));
        let base = JANITOR_BACKOFF_BASE.as_millis() as i64;
        let first = eventually("a first check", || async {
            match schedule_of(&app, &id).await {
                Some(s) if s.0 >= 1 => Ok(s),
                other => Err(json!(format!("{other:?}"))),
            }
        })
        .await;
        assert_eq!(first, (1, base), "the first delay is the base");
        assert_eq!(reads_of(&pi), 1);
        // Not due before the delay has passed.
        app.janitor_clock.advance(JANITOR_BACKOFF_BASE / 2);
        app.janitor_pass().await;
        assert_eq!(reads_of(&pi), 1, "asked again before its next check");

        app.janitor_clock.advance(JANITOR_BACKOFF_BASE / 2 + Duration::from_secs(1));
        let second = eventually("a second check", || async {
            match schedule_of(&app, &id).await {
                Some(s) if s.0 >= 2 => Ok(s),
                other => Err(json!(format!("{other:?}"))),
            }
        })
        .await;
        assert_eq!(second, (2, 2 * base), "the delay doubled");
        assert_eq!(reads_of(&pi), 2);
        app.janitor_clock.advance(2 * JANITOR_BACKOFF_BASE + Duration::from_secs(1));
        let third = eventually("a third check", || async {
            match schedule_of(&app, &id).await {
                Some(s) if s.0 >= 3 => Ok(s),
                other => Err(json!(format!("{other:?}"))),
            }
        })
        .await;
        assert_eq!(third, (3, 4 * base), "and doubled again");
        assert_eq!(order(&app, &key, &id).await["status"], "requires_action");
        app.finish().await;
    }
}

backend_test! {
    async fn the_operator_reconciles_one_order_now(app) {
        let (tenant, key) = app.new_tenant("Reconcile shop").await;
        app.save_stripe(&key, 1, &["USD"]).await;
        let (id, pi, url) = awaiting_3ds(&app, &key).await;
        pass_3ds(&url).await;
        // No clock advance: the operator does not wait for the schedule.
        let (status, body) = app
            .admin(Method::POST, &format!("/admin/orders/{id}/reconcile"), None)
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["status"], "paid");
        assert_eq!(body["ledger"][0]["source"], "janitor");
        assert_eq!(reads_of(&pi), 1);
        // Again: already settled, answered without a gateway call.
        let (status, again) = app
            .admin(Method::POST, &format!("/admin/orders/{id}/reconcile"), None)
            .await;
        assert_eq!(status, 200, "{again}");
        assert_eq!(again["ledger"].as_array().map(Vec::len), Some(1));
        assert_eq!(reads_of(&pi), 1);
        let audited: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM audit_events WHERE action = 'order.reconciled' AND tenant_id = $1",
        )
        .bind(&tenant)
        .fetch_one(app.store.pool())
        .await
        .expect("count audit events");
        assert_eq!(audited, 2);

        let (status, missing) = app
            .admin(Method::POST, "/admin/orders/ord_nope/reconcile", None)
            .await;
        assert_eq!(status, 404, "{missing}");
        assert_eq!(missing["error"]["code"], "order_not_found");
        app.finish().await;
    }
}

/// Two instances on one PostgreSQL database, both running the janitor:
/// each order is asked about once and booked once.
#[tokio::test]
async fn two_instances_neither_double_call_nor_double_book() {
    let Some(app) = TestApp::postgres().await else {
        eprintln!("skipped: {} is not set", payhost_tests::POSTGRES_URL_ENV);
        return;
    };
    let url = app.database_url().expect("database url");
    let sibling = app.sibling(&url).await;
    let (_, key) = app.new_tenant("Two janitors").await;
    app.save_stripe(&key, 1, &["USD"]).await;
    let mut orders = Vec::new();
    for _ in 0..8 {
        let (id, pi, url) = awaiting_3ds(&app, &key).await;
        pass_3ds(&url).await;
        orders.push((id, pi));
    }
    // The clock is shared: both instances see the orders due at once.
    app.janitor_clock
        .advance(JANITOR_MIN_AGE + Duration::from_secs(1));
    for (id, _) in &orders {
        eventually("both janitors settle every order", || async {
            let body = order(&app, &key, id).await;
            if body["status"] == "paid" {
                Ok(())
            } else {
                Err(body)
            }
        })
        .await;
    }
    for (id, pi) in &orders {
        let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM payments WHERE order_id = $1")
            .bind(id)
            .fetch_one(app.store.pool())
            .await
            .expect("count rows");
        assert_eq!(rows, 1, "{id} booked once");
        assert_eq!(reads_of(pi), 1, "{pi} asked once");
    }
    sibling.finish().await;
    app.finish().await;
}

backend_test! {
    async fn a_canceled_checkout_frees_its_key(app) {
        let (_, key) = app.new_tenant("Cancel shop").await;
        let stripe_key = app.save_stripe(&key, 1, &["USD"]).await;
        let (status, first) =
            keyed_checkout(&app, &key, "cart-42", "pm_card_threeDSecure2Required").await;
        assert_eq!(status, 201, "{first}");
        assert_eq!(first["status"], "requires_action");
        let id = first["id"].as_str().expect("order id");
        let pi = first["gateway_reference"].as_str().expect("pi");

        let path = format!("/v1/checkouts/{id}/cancel");
        let (status, canceled) = app.tenant(&key, Method::POST, &path, None).await;
        assert_eq!(status, 200, "{canceled}");
        assert_eq!(canceled["status"], "canceled");
        let cancels = stripe_emulator()
            .calls()
            .iter()
            .filter(|c| c.path == format!("/v1/payment_intents/{pi}/cancel"))
            .count();
        assert_eq!(cancels, 1, "canceled at the gateway");
        assert!(
            stripe_emulator().money_moved(&stripe_key).payments.is_empty(),
            "nothing charged"
        );
        // Cancel is idempotent.
        let (status, again) = app.tenant(&key, Method::POST, &path, None).await;
        assert_eq!(status, 200, "{again}");
        assert_eq!(again["status"], "canceled");

        // The same key and body start afresh: a new order, a new payment.
        let (status, second) =
            keyed_checkout(&app, &key, "cart-42", "pm_card_threeDSecure2Required").await;
        assert_eq!(status, 201, "{second}");
        assert_eq!(second["status"], "requires_action", "{second}");
        assert_ne!(second["id"], first["id"]);
        assert_ne!(second["gateway_reference"], first["gateway_reference"]);
        // And the new order is a live one: a retry resumes it.
        let (status, replay) =
            keyed_checkout(&app, &key, "cart-42", "pm_card_threeDSecure2Required").await;
        assert_eq!(status, 201, "{replay}");
        assert_eq!(replay["id"], second["id"]);
        app.finish().await;
    }
}

backend_test! {
    async fn cancelling_a_paid_checkout_is_a_conflict(app) {
        let (_, key) = app.new_tenant("Paid shop").await;
        app.save_stripe(&key, 1, &["USD"]).await;
        let (status, paid) = checkout(&app, &key, cart("USD", "pm_card_visa")).await;
        assert_eq!(status, 201, "{paid}");
        let id = paid["id"].as_str().expect("order id");
        let (status, body) = app
            .tenant(&key, Method::POST, &format!("/v1/checkouts/{id}/cancel"), None)
            .await;
        assert_eq!(status, 409, "{body}");
        assert_eq!(body["error"]["code"], "order_not_cancelable");
        assert_eq!(order(&app, &key, id).await["status"], "paid");

        let (status, body) = app
            .tenant(&key, Method::POST, "/v1/checkouts/ord_nope/cancel", None)
            .await;
        assert_eq!(status, 404, "{body}");
        assert_eq!(body["error"]["code"], "order_not_found");
        app.finish().await;
    }
}

backend_test! {
    async fn offline_mode_registers_the_hosts_webhook_url(app) {
        let (tenant, key) = app.new_tenant("Offline shop").await;
        let stripe_key = payhost_tests::stripe_test_key();
        let save = || async {
            app.tenant(
                &key,
                Method::PUT,
                "/v1/gateways/stripe",
                Some(json!({
                    "credentials": {"secret-key": stripe_key},
                    "priority": 1,
                    "currencies": ["USD"],
                })),
            )
            .await
        };
        let (status, saved) = save().await;
        assert_eq!(status, 200, "{saved}");
        // The emulator's signing secret is stored as the webhook secret.
        assert!(saved["webhook_secret"].is_string(), "{saved}");
        let (status, again) = save().await;
        assert_eq!(status, 200, "{again}");
        let listed: Value = reqwest::Client::new()
            .get(format!("{}/v1/webhook_endpoints", stripe_emulator().base_url()))
            .bearer_auth(&stripe_key)
            .send()
            .await
            .expect("emulator answers")
            .json()
            .await
            .expect("JSON");
        let expected = format!("{}/webhooks/{tenant}/stripe", app.base);
        let urls: Vec<&str> = listed["data"]
            .as_array()
            .expect("list")
            .iter()
            .filter_map(|e| e["url"].as_str())
            .collect();
        assert_eq!(urls, [expected.as_str()], "registered once, for this host: {listed}");
        assert_eq!(listed["data"][0]["enabled_events"], json!(["*"]));
        app.finish().await;
    }
}

/// `POST {path}` at the Stripe emulator as the account `stripe_key` (what
/// its dashboard, or the customer, does behind payhost's back).
async fn at_gateway(stripe_key: &str, path: &str, form: &[(&str, &str)]) -> Value {
    let response = reqwest::Client::new()
        .post(format!("{}{path}", stripe_emulator().base_url()))
        .bearer_auth(stripe_key)
        .form(form)
        .send()
        .await
        .expect("emulator call");
    assert!(
        response.status().is_success(),
        "{path}: {}",
        response.status()
    );
    response.json().await.expect("emulator json")
}

backend_test! {
    async fn a_partial_capture_at_the_gateway_is_not_booked_in_full(app) {
        let (_, key) = app.new_tenant("Partial capture shop").await;
        let stripe_key = app.save_stripe(&key, 1, &["USD"]).await;
        let mut body = cart("USD", "pm_card_visa");
        body["capture"] = json!("manual");
        let (status, authorized) = checkout(&app, &key, body).await;
        assert_eq!(status, 202, "{authorized}");
        assert_ne!(authorized["status"], "paid", "{authorized}");
        let id = authorized["id"].as_str().expect("order id");
        let pi = authorized["gateway_reference"].as_str().expect("pi");
        let captured = at_gateway(
            &stripe_key,
            &format!("/v1/payment_intents/{pi}/capture"),
            &[("amount_to_capture", "400")],
        )
        .await;
        assert_eq!(captured["status"], "succeeded", "{captured}");

        let (status, body) = app
            .admin(Method::POST, &format!("/admin/orders/{id}/reconcile"), None)
            .await;
        assert_ne!(status, 200, "{body}");
        assert_eq!(body["error"]["code"], "provider_amount_mismatch", "{body}");
        let now = order(&app, &key, id).await;
        assert_ne!(now["status"], "paid", "booked 1000 for a capture of 400: {now}");
        app.finish().await;
    }
}

backend_test! {
    async fn reconcile_and_cancel_use_only_the_orders_account(app) {
        let (_, key) = app.new_tenant("Rotated shop").await;
        app.save_stripe(&key, 1, &["USD"]).await;
        let (id, pi, _) = awaiting_3ds(&app, &key).await;
        // Other credentials (another account) saved since.
        app.save_stripe(&key, 1, &["USD"]).await;
        let asked = || {
            stripe_emulator()
                .calls()
                .iter()
                .filter(|c| c.path.starts_with(&format!("/v1/payment_intents/{pi}")))
                .count()
        };
        let before = asked();
        let (status, body) = app
            .admin(Method::POST, &format!("/admin/orders/{id}/reconcile"), None)
            .await;
        assert_eq!(status, 503, "{body}");
        let (status, body) = app
            .tenant(&key, Method::POST, &format!("/v1/checkouts/{id}/cancel"), None)
            .await;
        assert_eq!(status, 503, "{body}");
        assert_eq!(asked(), before, "the other account was asked about {pi}");
        assert_eq!(order(&app, &key, &id).await["status"], "requires_action");
        app.finish().await;
    }
}

backend_test! {
    async fn cancelling_an_order_canceled_at_the_gateway_answers_it_canceled(app) {
        let (_, key) = app.new_tenant("Gateway-canceled shop").await;
        let stripe_key = app.save_stripe(&key, 1, &["USD"]).await;
        let (status, first) =
            keyed_checkout(&app, &key, "cart-7", "pm_card_threeDSecure2Required").await;
        assert_eq!(status, 201, "{first}");
        let id = first["id"].as_str().expect("order id");
        let pi = first["gateway_reference"].as_str().expect("pi");
        at_gateway(&stripe_key, &format!("/v1/payment_intents/{pi}/cancel"), &[]).await;

        let (status, body) = app
            .tenant(&key, Method::POST, &format!("/v1/checkouts/{id}/cancel"), None)
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["status"], "canceled", "{body}");
        // The key is free: the same key and body make a new order.
        let (status, second) =
            keyed_checkout(&app, &key, "cart-7", "pm_card_threeDSecure2Required").await;
        assert_eq!(status, 201, "{second}");
        assert_ne!(second["id"], first["id"]);
        app.finish().await;
    }
}

backend_test! {
    async fn repeating_a_cancel_keeps_a_newer_orders_answer(app) {
        let (tenant, key) = app.new_tenant("Repeat cancel shop").await;
        app.save_stripe(&key, 1, &["USD"]).await;
        let (status, first) =
            keyed_checkout(&app, &key, "cart-6", "pm_card_threeDSecure2Required").await;
        assert_eq!(status, 201, "{first}");
        let path = format!("/v1/checkouts/{}/cancel", first["id"].as_str().expect("id"));
        let (status, body) = app.tenant(&key, Method::POST, &path, None).await;
        assert_eq!(status, 200, "{body}");
        let (status, second) =
            keyed_checkout(&app, &key, "cart-6", "pm_card_threeDSecure2Required").await;
        assert_eq!(status, 201, "{second}");
        assert_ne!(second["id"], first["id"]);

        let (status, body) = app.tenant(&key, Method::POST, &path, None).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["status"], "canceled");
        let kept: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM idempotency_keys \
              WHERE tenant_id = $1 AND idempotency_key = 'cart-6' AND state = 'done'",
        )
        .bind(&tenant)
        .fetch_one(app.store.pool())
        .await
        .expect("count stored answers");
        assert_eq!(kept, 1, "the newer order's stored answer was forgotten");
        app.finish().await;
    }
}

backend_test! {
    async fn a_late_decline_is_canceled_at_the_gateway_before_the_order_ends(app) {
        let (_, key) = app.new_tenant("Late decline shop").await;
        app.save_stripe(&key, 1, &["USD"]).await;
        let (id, pi, url) = awaiting_3ds(&app, &key).await;
        // The customer fails 3-D Secure: the PaymentIntent is open again
        // (`requires_payment_method`), and could still be confirmed.
        let sep = if url.contains('?') { '&' } else { '?' };
        pass_3ds(&format!("{url}{sep}action=fail")).await;
        let (status, body) = app
            .admin(Method::POST, &format!("/admin/orders/{id}/reconcile"), None)
            .await;
        assert_eq!(status, 200, "{body}");
        let cancels = stripe_emulator()
            .calls()
            .iter()
            .filter(|c| c.path == format!("/v1/payment_intents/{pi}/cancel"))
            .count();
        assert_eq!(cancels, 1, "closed at the gateway: {body}");
        assert_eq!(body["status"], "canceled", "{body}");
        app.finish().await;
    }
}
