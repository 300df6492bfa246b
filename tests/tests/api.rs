//! The service over real HTTP: a real host on a loopback port with a fresh
//! database per test (SQLite always, PostgreSQL when configured), the real
//! Stripe component against the Stripe emulator.

use std::sync::Arc;

use reqwest::Method;
use serde_json::{Value, json};

use payhost_tests::{
    TestApp, backend_test, captured_logs, eventually, rand_u64, stripe_calls_keyed, stripe_emulator,
};

const WEBHOOK_SECRET: &str = "whsec_test_webhook_secret_value";

fn cart(currency: &str, method: &str) -> Value {
    json!({
        "currency": currency,
        "items": [{"product": "Pro plan", "user_plan": "pro", "amount": 1000, "quantity": 1}],
        "payment_method": method,
        "return_url": "https://shop.example/return",
    })
}

async fn checkout(app: &TestApp, key: &str, body: Value) -> (u16, Value) {
    app.tenant(key, Method::POST, "/v1/checkouts", Some(body))
        .await
}

fn first_product_payment(order: &Value) -> String {
    order["ledger"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["kind"] == "product"))
        .and_then(|r| r["id"].as_str())
        .expect("a product row")
        .to_string()
}

backend_test! {
    async fn tour_checkout_with_shipping_refund_and_balance(app) {
        captured_logs();
        let (_, key) = app.new_tenant("Tour shop").await;
        app.save_stripe(&key, 1, &["USD"]).await;
        let mut body = cart("USD", "pm_card_visa");
        body["shipping"] = json!({"carrier": "ups", "amount": 500});
        let (status, order) = checkout(&app, &key, body).await;
        assert_eq!(status, 201, "[{}] {order}", app.backend);
        assert_eq!(order["status"], "paid");
        assert_eq!(order["provider"], "stripe");
        assert_eq!(order["amount"], 1500);
        assert_eq!(order["granted_user_plans"], json!(["pro"]));
        let rows = order["ledger"].as_array().expect("rows");
        assert_eq!(rows.len(), 2, "product and carrier rows: {order}");
        let product = rows
            .iter()
            .find(|r| r["kind"] == "product")
            .expect("product");
        let shipping = rows
            .iter()
            .find(|r| r["kind"] == "shipping")
            .expect("shipping");
        assert_eq!(product["amount"], 1000);
        assert_eq!(product["user_plan"], "pro");
        assert_eq!(shipping["amount"], 500);
        assert_eq!(
            shipping["user_plan"],
            Value::Null,
            "carrier row grants nothing"
        );

        let payment = first_product_payment(&order);
        let (status, refund) = app
            .tenant(
                &key,
                Method::POST,
                &format!("/v1/payments/{payment}/refunds"),
                Some(json!({"amount": 300})),
            )
            .await;
        assert_eq!(status, 201, "{refund}");
        assert_eq!(refund["status"], "refunded");
        assert_eq!(refund["refund_of"], payment);
        assert_eq!(refund["amount"], 300);
        let order_id = order["id"].as_str().expect("order id");
        let (_, after) = app
            .tenant(&key, Method::GET, &format!("/v1/orders/{order_id}"), None)
            .await;
        assert_eq!(after["status"], "partially_refunded");

        let (status, balance) = app.tenant(&key, Method::GET, "/v1/balance", None).await;
        assert_eq!(status, 200);
        assert_eq!(
            balance["items"],
            json!([{"currency": "USD", "paid": 1500, "refunded": 300, "net": 1200}])
        );
        // The original row is untouched.
        let (_, original) = app
            .tenant(&key, Method::GET, &format!("/v1/payments/{payment}"), None)
            .await;
        assert_eq!(original["status"], "approved");
        assert_eq!(original["amount"], 1000);
        app.finish().await;
    }
}

backend_test! {
    async fn routing_follows_priority_and_currency(app) {
        let (_, key) = app.new_tenant("Routing shop").await;
        let save_hostile = |enabled: bool| {
            let app = &app;
            let key = key.clone();
            async move {
                let (status, body) = app
                    .tenant(
                        &key,
                        Method::PUT,
                        "/v1/gateways/hostile",
                        Some(json!({"credentials": {}, "priority": 1, "currencies": ["USD"], "enabled": enabled})),
                    )
                    .await;
                assert_eq!(status, 200, "{body}");
            }
        };
        save_hostile(true).await;
        app.save_stripe(&key, 2, &["USD", "EUR"]).await;

        let route = |currency: &'static str| {
            let app = &app;
            let key = key.clone();
            async move {
                let (status, body) = checkout(app, &key, cart(currency, "pm_card_visa")).await;
                (status, body)
            }
        };
        let (status, usd) = route("USD").await;
        assert_eq!(
            (status, usd["provider"].as_str()),
            (201, Some("hostile")),
            "{usd}"
        );
        let (status, eur) = route("EUR").await;
        assert_eq!(
            (status, eur["provider"].as_str()),
            (201, Some("stripe")),
            "{eur}"
        );
        let (status, jpy) = route("JPY").await;
        assert_eq!(status, 422, "{jpy}");
        assert_eq!(jpy["error"]["code"], "no_gateway_for_currency");
        assert!(
            jpy["error"]["message"]
                .as_str()
                .unwrap_or("")
                .contains("JPY")
        );

        save_hostile(false).await;
        let (status, usd) = route("USD").await;
        assert_eq!(
            (status, usd["provider"].as_str()),
            (201, Some("stripe")),
            "disabled gateway skipped: {usd}"
        );

        let (status, _) = app
            .tenant(&key, Method::DELETE, "/v1/gateways/stripe", None)
            .await;
        assert_eq!(status, 204);
        let (status, body) = route("USD").await;
        assert_eq!(status, 422, "only a disabled gateway remains: {body}");
        app.finish().await;
    }
}

backend_test! {
    async fn live_validation_rejects_a_bad_key_and_keeps_the_old_settings(app) {
        let (_, key) = app.new_tenant("Validation shop").await;
        app.save_stripe(&key, 1, &["USD"]).await;
        let (_, before) = app.tenant(&key, Method::GET, "/v1/gateways", None).await;
        let balance_calls = || {
            stripe_emulator()
                .calls()
                .iter()
                .filter(|c| c.path == "/v1/balance" && !c.authorized)
                .count()
        };
        let rejected_before = balance_calls();
        let (status, body) = app
            .tenant(
                &key,
                Method::PUT,
                "/v1/gateways/stripe",
                Some(json!({"credentials": {"secret-key": "sk_live_wrong_key_123456"}, "currencies": ["USD"]})),
            )
            .await;
        assert_eq!(status, 422, "{body}");
        assert_eq!(body["error"]["code"], "gateway_credentials_rejected");
        assert!(!body.to_string().contains("sk_live_wrong_key_123456"));
        assert!(
            balance_calls() > rejected_before,
            "the emulator saw the live validation call"
        );
        let (_, after) = app.tenant(&key, Method::GET, "/v1/gateways", None).await;
        assert_eq!(before, after, "old settings untouched");
        let (status, order) = checkout(&app, &key, cart("USD", "pm_card_visa")).await;
        assert_eq!(status, 201, "old settings still work: {order}");
        app.finish().await;
    }
}

backend_test! {
    async fn declines_and_required_actions_book_nothing(app) {
        let (_, key) = app.new_tenant("Decline shop").await;
        app.save_stripe(&key, 1, &["USD"]).await;
        let (status, body) = checkout(
            &app,
            &key,
            cart("USD", "pm_card_visa_chargeDeclinedInsufficientFunds"),
        )
        .await;
        assert_eq!(status, 402, "{body}");
        assert_eq!(body["error"]["code"], "payment_declined");
        assert_eq!(
            body["error"]["details"]["decline_code"],
            "insufficient_funds"
        );

        let (status, body) =
            checkout(&app, &key, cart("USD", "pm_card_threeDSecure2Required")).await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["status"], "requires_action");
        assert_eq!(body["next_action"]["type"], "redirect");
        assert!(
            body["next_action"]["url"]
                .as_str()
                .unwrap_or("")
                .contains("/emulator/3ds/")
        );

        let (_, payments) = app.tenant(&key, Method::GET, "/v1/payments", None).await;
        assert_eq!(payments["items"], json!([]), "no ledger row for either");
        app.finish().await;
    }
}

backend_test! {
    async fn tenants_cannot_see_each_other_and_bad_keys_get_401(app) {
        let (a_id, a) = app.new_tenant("Tenant A").await;
        let (_, b) = app.new_tenant("Tenant B").await;
        app.save_stripe(&a, 1, &["USD"]).await;
        let (_, order) = checkout(&app, &a, cart("USD", "pm_card_visa")).await;
        let order_id = order["id"].as_str().expect("order id").to_string();
        let payment = first_product_payment(&order);

        // B's key on A's resources: 404 and nothing of A's.
        for (method, path, body) in [
            (Method::GET, format!("/v1/orders/{order_id}"), None),
            (Method::GET, format!("/v1/checkouts/{order_id}"), None),
            (Method::GET, format!("/v1/payments/{payment}"), None),
            (
                Method::POST,
                format!("/v1/payments/{payment}/refunds"),
                Some(json!({"amount": 1})),
            ),
            (Method::DELETE, "/v1/gateways/stripe".to_string(), None),
        ] {
            let (status, body) = app.tenant(&b, method.clone(), &path, body).await;
            assert_eq!(status, 404, "[{}] {method} {path}: {body}", app.backend);
            assert!(!body.to_string().contains(&order_id));
        }
        for path in ["/v1/gateways", "/v1/payments", "/v1/balance"] {
            let (status, body) = app.tenant(&b, Method::GET, path, None).await;
            assert_eq!(status, 200);
            assert_eq!(
                body["items"],
                json!([]),
                "{path} shows B nothing of A: {body}"
            );
        }
        // A's data is intact after B's attempts.
        let (_, gateways) = app.tenant(&a, Method::GET, "/v1/gateways", None).await;
        assert_eq!(gateways["items"].as_array().map(Vec::len), Some(1));
        let (_, p) = app
            .tenant(&a, Method::GET, &format!("/v1/payments/{payment}"), None)
            .await;
        assert_eq!(p["amount"], 1000);

        // No key, a garbage key, and a revoked key: 401 everywhere.
        let (status, issued) = app
            .admin(
                Method::POST,
                &format!("/admin/tenants/{a_id}/api-keys"),
                Some(json!({"label": "temp"})),
            )
            .await;
        assert_eq!(status, 201);
        let revoked = issued["key"].as_str().expect("key").to_string();
        let (status, _) = app
            .admin(
                Method::DELETE,
                &format!(
                    "/admin/tenants/{a_id}/api-keys/{}",
                    issued["id"].as_str().expect("id")
                ),
                None,
            )
            .await;
        assert_eq!(status, 204);
        let endpoints = [
            (Method::GET, "/v1/gateways".to_string()),
            (Method::PUT, "/v1/gateways/stripe".to_string()),
            (Method::DELETE, "/v1/gateways/stripe".to_string()),
            (Method::POST, "/v1/checkouts".to_string()),
            (Method::GET, format!("/v1/checkouts/{order_id}")),
            (Method::POST, "/v1/orders".to_string()),
            (Method::POST, "/v1/orders/bulk".to_string()),
            (Method::GET, format!("/v1/orders/{order_id}")),
            (Method::GET, "/v1/payments".to_string()),
            (Method::GET, format!("/v1/payments/{payment}")),
            (Method::POST, format!("/v1/payments/{payment}/refunds")),
            (Method::GET, "/v1/balance".to_string()),
        ];
        for (method, path) in &endpoints {
            for token in [None, Some("ph_not_a_real_key"), Some(revoked.as_str())] {
                let (status, body) = app
                    .send(app.request(method.clone(), path, token).json(&json!({})))
                    .await;
                assert_eq!(status, 401, "{method} {path} with {token:?}: {body}");
                assert_eq!(body["error"]["code"], "unauthorized");
            }
        }
        // The operator API wants the admin token, not a tenant key.
        let (status, _) = app
            .send(
                app.request(Method::POST, "/admin/tenants", Some(&a))
                    .json(&json!({"name": "x"})),
            )
            .await;
        assert_eq!(status, 401);
        app.finish().await;
    }
}

backend_test! {
    async fn raw_sql_cannot_change_or_delete_ledger_rows(app) {
        let (_, key) = app.new_tenant("Ledger shop").await;
        let (status, order) = app
            .tenant(
                &key,
                Method::POST,
                "/v1/orders",
                Some(json!({"kind": "manual", "currency": "USD", "items": [{"amount": 700, "user_plan": "basic"}]})),
            )
            .await;
        assert_eq!(status, 201, "{order}");
        let payment = first_product_payment(&order);
        let update = sqlx::query("UPDATE payments SET amount_minor = 1 WHERE id = $1")
            .bind(&payment)
            .execute(app.store.pool())
            .await;
        assert!(update.is_err(), "[{}] UPDATE must fail", app.backend);
        let delete = sqlx::query("DELETE FROM payments WHERE id = $1")
            .bind(&payment)
            .execute(app.store.pool())
            .await;
        assert!(delete.is_err(), "[{}] DELETE must fail", app.backend);
        let (_, row) = app
            .tenant(&key, Method::GET, &format!("/v1/payments/{payment}"), None)
            .await;
        assert_eq!(row["amount"], 700);
        app.finish().await;
    }
}

backend_test! {
    async fn a_pending_gateway_refund_is_held_not_booked(app) {
        let (_, key) = app.new_tenant("Pending refund shop").await;
        app.save_stripe(&key, 1, &["USD"]).await;
        let (status, order) = checkout(&app, &key, cart("USD", "pm_card_pendingRefund")).await;
        assert_eq!(status, 201, "{order}");
        let payment = first_product_payment(&order);
        let path = format!("/v1/payments/{payment}/refunds");

        let (status, held) = app
            .tenant(&key, Method::POST, &path, Some(json!({"amount": 400})))
            .await;
        assert_eq!(status, 202, "[{}] {held}", app.backend);
        assert_eq!(held["object"], "refund_hold");
        assert_eq!(held["status"], "pending");
        assert_eq!(held["payment_id"], payment);
        assert_eq!(held["amount"], 400);
        assert!(
            held["gateway_refund_reference"]
                .as_str()
                .is_some_and(|r| r.starts_with("re_")),
            "{held}"
        );

        // Nothing is booked: no refunded row, the balance and the order are
        // unchanged.
        let (_, balance) = app.tenant(&key, Method::GET, "/v1/balance", None).await;
        assert_eq!(
            balance["items"],
            json!([{"currency": "USD", "paid": 1000, "refunded": 0, "net": 1000}])
        );
        let order_id = order["id"].as_str().expect("order id");
        let (_, after) = app
            .tenant(&key, Method::GET, &format!("/v1/orders/{order_id}"), None)
            .await;
        assert_eq!(after["status"], "paid");
        assert_eq!(after["ledger"].as_array().map(Vec::len), Some(1), "{after}");

        // The held amount still counts against what remains.
        let (status, rest) = app.tenant(&key, Method::POST, &path, None).await;
        assert_eq!(status, 202, "{rest}");
        assert_eq!(
            rest["amount"], 600,
            "everything that remains beside the hold"
        );
        let (status, over) = app
            .tenant(&key, Method::POST, &path, Some(json!({"amount": 1})))
            .await;
        assert_eq!(status, 422, "{over}");
        assert_eq!(over["error"]["code"], "refund_exceeds_paid");
        app.finish().await;
    }
}

backend_test! {
    async fn fifty_concurrent_partial_refunds_never_exceed_the_payment(app) {
        let (_, key) = app.new_tenant("Refund shop").await;
        app.save_stripe(&key, 1, &["USD"]).await;
        let (status, order) = checkout(&app, &key, cart("USD", "pm_card_visa")).await;
        assert_eq!(status, 201, "{order}");
        let payment = first_product_payment(&order);
        let app = Arc::new(app);
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let app = app.clone();
            let key = key.clone();
            let path = format!("/v1/payments/{payment}/refunds");
            tasks.push(tokio::spawn(async move {
                app.tenant(&key, Method::POST, &path, Some(json!({"amount": 30})))
                    .await
            }));
        }
        let mut ok = 0;
        for t in tasks {
            let (status, body) = t.await.expect("task");
            match status {
                201 => ok += 1,
                422 => assert_eq!(body["error"]["code"], "refund_exceeds_paid", "{body}"),
                other => panic!("unexpected {other}: {body}"),
            }
        }
        assert_eq!(
            ok, 33,
            "[{}] exactly the refunds that fit in 1000",
            app.backend
        );
        let (_, balance) = app.tenant(&key, Method::GET, "/v1/balance", None).await;
        assert_eq!(balance["items"][0]["refunded"], 990);
        let app = Arc::try_unwrap(app).ok().expect("sole owner");
        app.finish().await;
    }
}

backend_test! {
    async fn idempotency_key_replays_once_rejects_reuse_and_in_flight_duplicates(app) {
        let (_, key) = app.new_tenant("Idempotent shop").await;
        app.save_stripe(&key, 2, &["USD"]).await;
        let idem = format!("order-{:x}", rand_u64());
        let send = |body: Value, idem: String| {
            let app = &app;
            let key = key.clone();
            async move {
                let response = app
                    .request(Method::POST, "/v1/checkouts", Some(&key))
                    .header("Idempotency-Key", idem)
                    .json(&body)
                    .send()
                    .await
                    .expect("send");
                let replayed = response.headers().get("idempotent-replayed").is_some();
                (
                    response.status().as_u16(),
                    replayed,
                    response.text().await.expect("body"),
                )
            }
        };
        let (s1, r1, b1) = send(cart("USD", "pm_card_visa"), idem.clone()).await;
        let (s2, r2, b2) = send(cart("USD", "pm_card_visa"), idem.clone()).await;
        assert_eq!((s1, r1), (201, false), "{b1}");
        assert_eq!((s2, r2), (201, true));
        assert_eq!(b1, b2, "identical response");
        let (_, payments) = app.tenant(&key, Method::GET, "/v1/payments", None).await;
        assert_eq!(
            payments["items"].as_array().map(Vec::len),
            Some(1),
            "booked once"
        );

        let (s3, _, b3) = send(cart("USD", "pm_card_mastercard"), idem.clone()).await;
        assert_eq!(s3, 422, "{b3}");
        assert!(b3.contains("idempotency_key_reused"));

        // In flight: the hostile gateway spins until its deadline, so the
        // first request is certainly still running when the second arrives.
        let (status, _) = app
            .tenant(
                &key,
                Method::PUT,
                "/v1/gateways/hostile",
                Some(json!({"credentials": {}, "priority": 1, "currencies": ["USD"]})),
            )
            .await;
        assert_eq!(status, 200);
        let slow_key = format!("slow-{:x}", rand_u64());
        let (a, b) = tokio::join!(
            send(cart("USD", "loop"), slow_key.clone()),
            send(cart("USD", "loop"), slow_key.clone()),
        );
        let mut statuses = [a.0, b.0];
        statuses.sort();
        // The first spins into the hostile gateway's deadline before any
        // request left, falls through to Stripe, which refuses `loop` as a
        // payment method (422 `gateway_invalid_request`).
        assert_eq!(
            statuses,
            [409, 422],
            "one runs into the gateway deadline, the duplicate gets 409: {} / {}",
            a.2,
            b.2
        );
        let conflict = if a.0 == 409 { &a.2 } else { &b.2 };
        assert!(
            conflict.contains("idempotency_request_in_flight"),
            "{conflict}"
        );
        app.finish().await;
    }
}

backend_test! {
    async fn manual_bulk_and_external_orders_grant_access_without_a_gateway(app) {
        let (_, key) = app.new_tenant("Offline shop").await;
        let (status, manual) = app
            .tenant(
                &key,
                Method::POST,
                "/v1/orders",
                Some(json!({"kind": "manual", "currency": "EUR", "items": [{"amount": 900, "user_plan": "pro"}], "customer": {"id": "u1"}})),
            )
            .await;
        assert_eq!(status, 201, "{manual}");
        let (status, external) = app
            .tenant(
                &key,
                Method::POST,
                "/v1/orders",
                Some(json!({"kind": "external", "currency": "EUR", "items": [{"amount": 400, "user_plan": "team"}], "external_reference": "inv-77"})),
            )
            .await;
        assert_eq!(status, 201, "{external}");
        let (status, bulk) = app
            .tenant(
                &key,
                Method::POST,
                "/v1/orders/bulk",
                Some(json!({"currency": "EUR", "users": [
                    {"user": "u2", "user_plan": "pro", "amount": 100},
                    {"user": "u3", "user_plan": "pro", "amount": 100},
                    {"user": "u4", "user_plan": "basic", "amount": 50}
                ]})),
            )
            .await;
        assert_eq!(status, 201, "{bulk}");
        let mut orders = vec![manual, external];
        orders.extend(bulk["orders"].as_array().cloned().unwrap_or_default());
        assert_eq!(orders.len(), 5);
        for o in &orders {
            assert_eq!(o["status"], "paid", "{o}");
            assert_eq!(o["provider"], Value::Null);
            assert_eq!(o["granted_user_plans"].as_array().map(Vec::len), Some(1));
            for row in o["ledger"].as_array().expect("rows") {
                assert_eq!(row["provider"], Value::Null);
                assert_eq!(row["source"], "manual");
            }
            let id = o["id"].as_str().expect("id");
            assert!(
                !stripe_emulator().calls().iter().any(|c| {
                    c.path.contains(id)
                        || c.idempotency_key.as_deref().is_some_and(|k| k.contains(id))
                }),
                "the emulator saw no call for {id}"
            );
        }
        // A manual refund of a gateway-less payment: recorded, no gateway.
        let payment = first_product_payment(&orders[0]);
        let (status, refund) = app
            .tenant(
                &key,
                Method::POST,
                &format!("/v1/payments/{payment}/refunds"),
                None,
            )
            .await;
        assert_eq!(status, 201, "{refund}");
        assert_eq!(refund["amount"], 900);
        assert_eq!(refund["source"], "manual");
        let (_, balance) = app.tenant(&key, Method::GET, "/v1/balance", None).await;
        assert_eq!(
            balance["items"],
            json!([{"currency": "EUR", "paid": 1550, "refunded": 900, "net": 650}])
        );
        app.finish().await;
    }
}

backend_test! {
    async fn secrets_never_appear_in_responses_logs_or_the_database(app) {
        let logs = captured_logs();
        let (tenant, key) = app.new_tenant("Secret shop").await;
        let stripe_key = app.save_stripe(&key, 1, &["USD"]).await;
        let mut responses = Vec::new();
        responses.push(app.tenant(&key, Method::GET, "/v1/gateways", None).await.1);
        responses.push(checkout(&app, &key, cart("USD", "pm_card_visa")).await.1);
        responses.push(
            app.tenant(
                &key,
                Method::PUT,
                "/v1/gateways/stripe",
                Some(json!({"credentials": {"secret-key": stripe_key}, "webhook_secret": WEBHOOK_SECRET, "currencies": ["USD"], "priority": 3})),
            )
            .await
            .1,
        );
        responses.push(
            app.admin(
                Method::GET,
                &format!("/admin/audit?tenant_id={tenant}"),
                None,
            )
            .await
            .1,
        );
        let masked = responses[0]["items"][0]["credentials"]["secret-key"]
            .as_str()
            .expect("masked key shown")
            .to_string();
        assert!(
            masked.contains('…') && masked.len() < stripe_key.len(),
            "{masked}"
        );
        for r in &responses {
            let text = r.to_string();
            assert!(
                !text.contains(&stripe_key),
                "response leaks the key: {text}"
            );
            assert!(
                !text.contains(WEBHOOK_SECRET),
                "response leaks the webhook secret: {text}"
            );
        }
        let rows = sqlx::query("SELECT credentials_ciphertext, webhook_secret_ciphertext, masked FROM gateway_settings")
            .fetch_all(app.store.pool())
            .await
            .expect("read settings");
        assert_eq!(rows.len(), 1);
        for row in &rows {
            use sqlx::Row;
            let creds: Vec<u8> = row.try_get("credentials_ciphertext").expect("bytes");
            let hook: Vec<u8> = row.try_get("webhook_secret_ciphertext").expect("bytes");
            let masked: String = row.try_get("masked").expect("text");
            for blob in [&creds, &hook, &masked.as_bytes().to_vec()] {
                for secret in [stripe_key.as_bytes(), WEBHOOK_SECRET.as_bytes()] {
                    assert!(
                        !blob.windows(secret.len()).any(|w| w == secret),
                        "[{}] plaintext secret in the database",
                        app.backend
                    );
                }
            }
        }
        let audit = sqlx::query("SELECT details FROM audit_events")
            .fetch_all(app.store.pool())
            .await
            .expect("audit");
        for row in &audit {
            use sqlx::Row;
            let details: String = row.try_get("details").expect("text");
            assert!(!details.contains(&stripe_key) && !details.contains(WEBHOOK_SECRET));
        }
        let log = String::from_utf8_lossy(&logs.lock().expect("logs")).to_string();
        assert!(!log.is_empty(), "logs were captured");
        assert!(!log.contains(&stripe_key), "a log line leaks the key");
        assert!(
            !log.contains(WEBHOOK_SECRET),
            "a log line leaks the webhook secret"
        );
        app.finish().await;
    }
}

backend_test! {
    async fn bad_input_gets_clear_errors_never_500(app) {
        let (_, key) = app.new_tenant("Input shop").await;
        let raw = |body: &'static str| {
            app.request(Method::POST, "/v1/checkouts", Some(&key))
                .header("content-type", "application/json")
                .body(body)
        };
        let (status, body) = app.send(raw("{not json")).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some("malformed_json"))
        );
        let (status, body) = app.send(raw(r#"{"currency": 5, "items": []}"#)).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (422, Some("validation_failed"))
        );
        let (status, body) = app
            .send(raw(r#"{"currency": "usd", "items": [{"amount": 1}]}"#))
            .await;
        assert_eq!(status, 422, "lower-case currency is rejected: {body}");
        let (status, body) = app
            .send(raw(r#"{"currency": "USD", "items": [{"amount": -5}]}"#))
            .await;
        assert_eq!(status, 422, "{body}");
        let huge = format!(
            r#"{{"currency":"USD","items":[],"pad":"{}"}}"#,
            "x".repeat(200_000)
        );
        let (status, body) = app
            .send(
                app.request(Method::POST, "/v1/checkouts", Some(&key))
                    .header("content-type", "application/json")
                    .body(huge),
            )
            .await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (413, Some("body_too_large"))
        );
        let (status, body) = app
            .tenant(
                &key,
                Method::PUT,
                "/v1/gateways/nope",
                Some(json!({"credentials": {}, "currencies": ["USD"]})),
            )
            .await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (404, Some("provider_not_found"))
        );
        let (status, body) = app
            .tenant(
                &key,
                Method::PUT,
                "/v1/gateways/stripe",
                Some(json!({"credentials": {"secret-key": "sk_test_x"}, "currencies": ["XYZ"]})),
            )
            .await;
        assert_eq!(status, 422, "{body}");
        let (status, body) = app
            .tenant(&key, Method::GET, "/v1/orders/ord_doesnotexist", None)
            .await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (404, Some("order_not_found"))
        );
        let (status, body) = app.tenant(&key, Method::GET, "/v1/nope", None).await;
        assert_eq!(status, 404, "{body}");
        let (status, body) = app
            .admin(Method::GET, "/admin/tenants/ten_missing", None)
            .await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (404, Some("tenant_not_found"))
        );
        let (status, _) = app
            .send(
                app.request(Method::POST, "/admin/tenants", None)
                    .json(&json!({"name": "x"})),
            )
            .await;
        assert_eq!(status, 401);
        app.finish().await;
    }
}

async fn whoami(app: &TestApp, domain: &str) -> (u16, Value) {
    let req = app
        .request(Method::GET, "/public/tenant", None)
        .header("host", domain);
    app.send(req).await
}

backend_test! {
    async fn a_moved_domain_stops_resolving_on_a_second_instance(app) {
        let url = app.database_url().expect("owned database");
        let second = app.sibling(&url).await;
        let (a, _) = app.new_tenant("Domain A").await;
        let (b, _) = app.new_tenant("Domain B").await;
        let domain = format!("shop-{:x}.example.com", rand_u64());
        let (status, body) = app
            .admin(
                Method::POST,
                &format!("/admin/tenants/{a}/domains"),
                Some(json!({"domain": domain})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        // Both instances resolve (and cache) the domain to A.
        assert_eq!(whoami(&app, &domain).await.1["tenant_id"], a.as_str());
        assert_eq!(whoami(&second, &domain).await.1["tenant_id"], a.as_str());

        // Move it: A detaches, B attaches — through the first instance only.
        let (status, _) = app
            .admin(
                Method::DELETE,
                &format!("/admin/tenants/{a}/domains/{domain}"),
                None,
            )
            .await;
        assert_eq!(status, 204);
        let (status, _) = app
            .admin(
                Method::POST,
                &format!("/admin/tenants/{b}/domains"),
                Some(json!({"domain": domain})),
            )
            .await;
        assert_eq!(status, 201);
        assert_eq!(whoami(&app, &domain).await.1["tenant_id"], b.as_str());

        if app.backend == "postgres" {
            // The second instance hears the invalidation (NOTIFY) and stops
            // serving the old owner: poll for it, bounded.
            eventually("second instance still resolves the old owner", || async {
                let (_, body) = whoami(&second, &domain).await;
                (body["tenant_id"] == b.as_str()).then_some(()).ok_or(body)
            })
            .await;
        }
        second.finish().await;
        app.finish().await;
    }
}

backend_test! {
    async fn a_gateway_change_reaches_routing_on_both_instances(app) {
        let cart = json!({
            "currency": "USD",
            "items": [{"user_plan": "pro", "amount": 1000}],
            "payment_method": "pm_card_visa",
        });
        let url = app.database_url().expect("owned database");
        let second = app.sibling(&url).await;
        let (_, key) = app.new_tenant("Cached routes").await;
        app.save_stripe(&key, 1, &["USD"]).await;
        // Both instances route (and cache the tenant's gateway settings).
        for instance in [&app, &second] {
            let (status, body) = instance
                .tenant(&key, Method::POST, "/v1/checkouts", Some(cart.clone()))
                .await;
            assert_eq!(status, 201, "[{}] {body}", app.backend);
        }

        let (status, _) = app
            .tenant(&key, Method::DELETE, "/v1/gateways/stripe", None)
            .await;
        assert_eq!(status, 204);
        // The instance that made the change stops routing at once.
        let (status, body) = app
            .tenant(&key, Method::POST, "/v1/checkouts", Some(cart.clone()))
            .await;
        assert_eq!(status, 422, "[{}] {body}", app.backend);
        assert_eq!(body["error"]["code"], "no_gateway_for_currency");

        if app.backend == "postgres" {
            // The other hears the broadcast (NOTIFY): poll for it, bounded.
            let body = eventually(
                "second instance still routes to the deleted gateway",
                || async {
                    let (status, body) = second
                        .tenant(&key, Method::POST, "/v1/checkouts", Some(cart.clone()))
                        .await;
                    if status == 422 { Ok(body) } else { Err(body) }
                },
            )
            .await;
            assert_eq!(body["error"]["code"], "no_gateway_for_currency");
        }
        second.finish().await;
        app.finish().await;
    }
}

/// Runs raw SQL on the app's database (test triggers), in order.
async fn execute_all(app: &TestApp, statements: &[String]) {
    for sql in statements {
        sqlx::query(sql)
            .execute(app.store.pool())
            .await
            .unwrap_or_else(|e| panic!("[{}] {sql}: {e}", app.backend));
    }
}

/// A USD checkout paid with `method`, under the client's `Idempotency-Key`.
async fn keyed_checkout(app: &TestApp, key: &str, client_key: &str, method: &str) -> (u16, Value) {
    app.send(
        app.request(Method::POST, "/v1/checkouts", Some(key))
            .header("Idempotency-Key", client_key)
            .json(&cart("USD", method)),
    )
    .await
}

async fn orders_of(app: &TestApp, tenant: &str) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM orders WHERE tenant_id = $1")
        .bind(tenant)
        .fetch_one(app.store.pool())
        .await
        .expect("count orders")
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

/// The tenant's orders as (status, provider), oldest first.
async fn order_states(app: &TestApp, tenant: &str) -> Vec<(String, Option<String>)> {
    sqlx::query_as(
        "SELECT status, provider FROM orders WHERE tenant_id = $1 ORDER BY created_at, id",
    )
    .bind(tenant)
    .fetch_all(app.store.pool())
    .await
    .expect("read orders")
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
        json!([{"currency": "USD", "paid": 1000, "refunded": 0, "net": 1000}]),
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

backend_test! {
    /// A key whose order was canceled (every gateway rate limited: nothing
    /// charged) is free again for the retry. A key whose outcome is unknown
    /// keeps its one order across retries.
    async fn a_checkout_key_holds_one_live_order(app) {
        let (tenant, key) = app.new_tenant("Keyed retries shop").await;
        app.save_stripe(&key, 1, &["USD"]).await;
        let client_key = format!("limited-{}", rand_u64());
        let (status, body) =
            keyed_checkout(&app, &key, &client_key, "pm_emulator_rate_limited").await;
        assert_eq!(status, 503, "[{}] {body}", app.backend);
        assert_eq!(body["error"]["code"], "gateway_rate_limited");
        let (status, body) = keyed_checkout(&app, &key, &client_key, "pm_card_visa").await;
        assert_eq!(status, 201, "[{}] {body}", app.backend);
        assert_eq!(body["status"], "paid");
        let states: Vec<String> = order_states(&app, &tenant)
            .await
            .into_iter()
            .map(|(status, _)| status)
            .collect();
        assert_eq!(states, ["canceled", "paid"], "[{}]", app.backend);

        // Stripe answers 500: the outcome is unknown, the order stays
        // pending, and each retry goes back to it instead of adding one.
        let client_key = format!("unknown-{}", rand_u64());
        for _ in 0..2 {
            let (status, body) =
                keyed_checkout(&app, &key, &client_key, "pm_emulator_unavailable").await;
            assert_eq!(status, 503, "[{}] {body}", app.backend);
        }
        assert_eq!(orders_of(&app, &tenant).await, 3, "[{}]", app.backend);
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
    /// Two manual orders of `i64::MAX` once made `GET /v1/balance` answer 500
    /// for good (the ledger is append-only, so the tenant could never undo it).
    /// Amounts over the documented bounds are refused with 422, by the host and
    /// by the database, and the balance sums without overflow.
    async fn amounts_over_the_money_bounds_are_refused_and_the_balance_never_fails(app) {
        use payhost::store::{MAX_LINE_MINOR, MAX_ORDER_MINOR};
        use sqlx::Row;
        let b = app.backend;
        let (tenant, key) = app.new_tenant("Bounds").await;
        app.save_stripe(&key, 1, &["USD"]).await;
        let manual = |items: Value| json!({"kind": "manual", "currency": "USD", "items": items});
        let over_line = json!([{"product": "Max", "amount": i64::MAX}]);
        let over_order: Vec<Value> = (0..11)
            .map(|_| json!({"product": "Big", "amount": MAX_LINE_MINOR}))
            .collect();
        let quantity_overflow = json!([{"product": "Q", "amount": MAX_LINE_MINOR, "quantity": 2}]);
        for (what, path, body) in [
            (
                "a manual line of i64::MAX",
                "/v1/orders",
                manual(over_line.clone()),
            ),
            (
                "a manual order over the order bound",
                "/v1/orders",
                manual(json!(over_order)),
            ),
            (
                "amount × quantity over the line bound",
                "/v1/orders",
                manual(quantity_overflow.clone()),
            ),
            (
                "a checkout line of i64::MAX",
                "/v1/checkouts",
                json!({"currency": "USD", "items": over_line, "payment_method": "pm_card_visa"}),
            ),
            (
                "a checkout quantity overflow",
                "/v1/checkouts",
                json!({"currency": "USD", "items": quantity_overflow, "payment_method": "pm_card_visa"}),
            ),
            (
                "shipping over the line bound",
                "/v1/checkouts",
                json!({"currency": "USD", "items": [{"amount": 100}],
                       "shipping": {"carrier": "ups", "amount": i64::MAX}, "payment_method": "pm_card_visa"}),
            ),
            (
                "a bulk user over the line bound",
                "/v1/orders/bulk",
                json!({"currency": "USD", "users": [{"user": "u1", "user_plan": "pro", "amount": i64::MAX}]}),
            ),
        ] {
            let (status, body) = app.tenant(&key, Method::POST, path, Some(body)).await;
            assert_eq!(status, 422, "{b}: {what}: {body}");
            assert_eq!(
                body["error"]["code"], "validation_failed",
                "{b}: {what}: {body}"
            );
        }

        // Exactly at the bounds: ten lines at the line maximum make one order
        // at the order maximum, twice; the balance sums them exactly.
        let at_bounds: Vec<Value> = (0..10)
            .map(|_| json!({"product": "Big", "amount": MAX_LINE_MINOR}))
            .collect();
        for _ in 0..2 {
            let (status, body) = app
                .tenant(
                    &key,
                    Method::POST,
                    "/v1/orders",
                    Some(manual(json!(at_bounds))),
                )
                .await;
            assert_eq!(status, 201, "{b}: an order at the bounds: {body}");
        }
        let (status, balance) = app.tenant(&key, Method::GET, "/v1/balance", None).await;
        assert_eq!(status, 200, "{b}: {balance}");
        assert_eq!(
            balance["items"][0]["paid"],
            json!(2 * MAX_ORDER_MINOR),
            "{b}: {balance}"
        );

        // The database refuses an out-of-bounds row whatever path writes it.
        let order: String = sqlx::query("SELECT id FROM orders WHERE tenant_id = $1")
            .bind(&tenant)
            .fetch_one(app.store.pool())
            .await
            .expect("an order")
            .get(0);
        let raw = sqlx::query(
            "INSERT INTO payments (id, tenant_id, order_id, kind, status, amount_minor, currency, source, created_at) \
             VALUES ('pay_raw_bound', $1, $2, 'product', 'approved', $3, 'USD', 'manual', 0)",
        )
        .bind(&tenant)
        .bind(&order)
        .bind(MAX_LINE_MINOR + 1)
        .execute(app.store.pool())
        .await;
        assert!(
            raw.is_err(),
            "{b}: the database booked a row over the bound"
        );
        app.finish().await;
    }
}
