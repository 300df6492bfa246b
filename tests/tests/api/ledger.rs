//! The ledger is append-only in the database, and amounts stay within the
//! money bounds so the balance never fails.

use reqwest::Method;
use serde_json::{Value, json};

use payhost_tests::{backend_test, checkout::first_product_payment};

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

async fn refund(app: &payhost_tests::TestApp, key: &str, payment: &str, amount: u64) {
    let path = format!("/v1/payments/{payment}/refunds");
    let (status, body) = app
        .tenant(key, Method::POST, &path, Some(json!({"amount": amount})))
        .await;
    assert_eq!(status, 201, "[{}] {body}", app.backend);
}

backend_test! {
    /// A master-key rotation moves no money. An instance with a new active
    /// key (the old one retired) refunds a payment whose gateway credentials
    /// are still sealed under the old key, re-seals them when the tenant
    /// saves the gateway again, and takes and refunds a new payment; the
    /// balance is the fold of every row and the projections verify clean.
    async fn a_master_key_rotation_moves_no_money(app) {
        use payhost_tests::checkout::{cart, checkout};
        let (_, key) = app.new_tenant("Rotation shop").await;
        app.save_stripe(&key, 1, &["USD"]).await;
        let (status, first) = checkout(&app, &key, cart("USD", "pm_card_visa")).await;
        assert_eq!(status, 201, "{first}");
        let first = first_product_payment(&first);
        refund(&app, &key, &first, 200).await;

        let rotated = app
            .sibling_opts(
                &app.database_url().expect("owned db"),
                payhost_tests::AppOptions {
                    configure: Some(Box::new(|config| {
                        let old = config.master_key.take().expect("the suite's master key");
                        let old_id = std::mem::replace(&mut config.master_key_id, "k2-rotated".into());
                        config.retired_master_keys.insert(old_id, old);
                        config.master_key = Some(payhost::config::Secret::new(
                            payhost::gateways::Vault::generate_key(),
                        ));
                    })),
                    ..payhost_tests::AppOptions::default()
                },
            )
            .await;
        // Opened with the retired key.
        refund(&rotated, &key, &first, 300).await;
        rotated.save_stripe(&key, 1, &["USD"]).await;
        let sealed_under: String =
            sqlx::query_scalar("SELECT key_id FROM gateway_settings WHERE provider = 'stripe'")
                .fetch_one(rotated.store.pool())
                .await
                .expect("key id");
        assert_eq!(sealed_under, "k2-rotated", "re-saved under the new key");
        let (status, second) = checkout(&rotated, &key, cart("USD", "pm_card_visa")).await;
        assert_eq!(status, 201, "{second}");
        refund(&rotated, &key, &first_product_payment(&second), 100).await;

        let (_, balance) = rotated.tenant(&key, Method::GET, "/v1/balance", None).await;
        assert_eq!(
            balance["items"],
            json!([{"currency": "USD", "paid": 2000, "refunded": 600, "net": 1400, "held": 0}]),
            "[{}] {balance}",
            app.backend
        );
        rotated.assert_ledger_verified().await;
        rotated.finish().await;
        app.finish().await;
    }
}
