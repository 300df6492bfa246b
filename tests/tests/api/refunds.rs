//! Refunds: a pending gateway refund is held, not booked; concurrent
//! partial refunds never exceed the payment.

use std::sync::Arc;

use reqwest::Method;
use serde_json::json;

use payhost_tests::{
    backend_test,
    checkout::{cart, checkout, first_product_payment},
};

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
            json!([{"currency": "USD", "paid": 1000, "refunded": 0, "net": 1000, "held": 400}])
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
        app.assert_ledger_verified().await;
        let app = Arc::try_unwrap(app).ok().expect("sole owner");
        app.finish().await;
    }
}
