//! `Idempotency-Key`: a replay answers once, reuse and in-flight duplicates
//! are refused, and a checkout key holds one live order.

use reqwest::Method;
use serde_json::{Value, json};

use payhost_tests::{
    backend_test,
    checkout::{cart, keyed_checkout, order_states, orders_of},
    rand_u64,
};

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
