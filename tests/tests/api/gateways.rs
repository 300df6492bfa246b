//! Gateway settings: credentials are checked live against the gateway
//! before they are saved.

use reqwest::Method;
use serde_json::json;

use payhost_tests::{
    backend_test,
    checkout::{cart, checkout},
    stripe_emulator,
};

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
