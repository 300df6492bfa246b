//! Secrets (API keys, gateway credentials, webhook secrets) never appear in
//! responses, logs or the database.

use reqwest::Method;
use serde_json::json;

use payhost_tests::{
    WEBHOOK_SECRET, backend_test, captured_logs,
    checkout::{cart, checkout},
};

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
