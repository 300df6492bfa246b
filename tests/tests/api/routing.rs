//! Routing by priority and currency, and a gateway change reaching routing
//! on every instance.

use reqwest::Method;
use serde_json::json;

use payhost_tests::{
    backend_test,
    checkout::{cart, checkout},
    eventually,
};

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
