//! Gateway-less orders (manual, bulk, external) grant access without a
//! gateway.

use reqwest::Method;
use serde_json::{Value, json};

use payhost_tests::{backend_test, checkout::first_product_payment, stripe_emulator};

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
            json!([{"currency": "EUR", "paid": 1550, "refunded": 900, "net": 650, "held": 0}])
        );
        app.assert_ledger_verified().await;
        app.finish().await;
    }
}
