//! Bad input gets a clear error, never a 500.

use reqwest::Method;
use serde_json::json;

use payhost_tests::backend_test;

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
