//! Checkouts through the Stripe component: the tour (shipping, refund,
//! balance), and declines and required actions that book nothing.

use reqwest::Method;
use serde_json::{Value, json};

use payhost_tests::{
    backend_test, captured_logs,
    checkout::{cart, checkout, first_product_payment},
};

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
            json!([{"currency": "USD", "paid": 1500, "refunded": 300, "net": 1200, "held": 0}])
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
