//! Daily reports: the tenant's `/v1/reports/daily` and the operator's
//! platform-wide `/admin/reports/daily`, by UTC day, currency and provider;
//! bad ranges are a clear 400.

use reqwest::Method;
use serde_json::{Value, json};

use payhost_tests::{
    TestApp, backend_test,
    checkout::{cart, checkout, first_product_payment},
};

/// Today (UTC) as `YYYY-MM-DD`, the day every row of these tests is booked on.
fn today() -> String {
    let now = payhost::store::UnixMillis::now().as_i64();
    payhost::ledger::Day::of_millis(now).to_string()
}

async fn manual(app: &TestApp, key: &str, amount: i64) -> Value {
    let (status, order) = app
        .tenant(
            key,
            Method::POST,
            "/v1/orders",
            Some(json!({"kind": "manual", "currency": "USD",
                "items": [{"user_plan": "pro", "amount": amount}]})),
        )
        .await;
    assert_eq!(status, 201, "{order}");
    order
}

backend_test! {
    async fn reports_sum_each_day_by_currency_and_provider(app) {
        let (tenant, key) = app.new_tenant("Reporting shop").await;
        let (_, other) = app.new_tenant("Other shop").await;
        app.save_stripe(&key, 1, &["USD"]).await;
        let (status, order) = checkout(&app, &key, cart("USD", "pm_card_visa")).await;
        assert_eq!(status, 201, "{order}");
        let payment = first_product_payment(&order);
        let (status, refund) = app
            .tenant(&key, Method::POST, &format!("/v1/payments/{payment}/refunds"),
                Some(json!({"amount": 250})))
            .await;
        assert_eq!(status, 201, "{refund}");
        manual(&app, &key, 400).await;
        manual(&app, &other, 900).await;

        let day = today();
        let path = format!("/v1/reports/daily?from={day}&to={day}");
        let (status, report) = app.tenant(&key, Method::GET, &path, None).await;
        assert_eq!(status, 200, "{report}");
        assert_eq!(
            report,
            json!({"from": day, "to": day, "items": [
                {"day": day, "currency": "USD", "provider": null, "paid": 400, "refunded": 0,
                 "count": 1, "refund_count": 0, "net": 400},
                {"day": day, "currency": "USD", "provider": "stripe", "paid": 1000,
                 "refunded": 250, "count": 1, "refund_count": 1, "net": 750},
            ]}),
            "[{}]",
            app.backend
        );
        let (_, only_stripe) = app
            .tenant(&key, Method::GET, &format!("{path}&provider=stripe&currency=USD"), None)
            .await;
        assert_eq!(only_stripe["items"].as_array().map(Vec::len), Some(1), "{only_stripe}");
        let (_, eur) = app
            .tenant(&key, Method::GET, &format!("{path}&currency=EUR"), None)
            .await;
        assert_eq!(eur["items"], json!([]));
        let (_, yesterday) = app
            .tenant(&key, Method::GET, "/v1/reports/daily?from=2020-01-01&to=2020-12-31", None)
            .await;
        assert_eq!(yesterday["items"], json!([]));

        // The operator's report sums every tenant, or one.
        let admin_path = format!("/admin/reports/daily?from={day}&to={day}");
        let (status, platform) = app.admin(Method::GET, &admin_path, None).await;
        assert_eq!(status, 200, "{platform}");
        let manual_day = &platform["items"][0];
        assert_eq!((manual_day["provider"].clone(), manual_day["paid"].clone()), (Value::Null, json!(1300)));
        assert_eq!(manual_day["count"], 2);
        let (_, one) = app
            .admin(Method::GET, &format!("{admin_path}&tenant_id={tenant}"), None)
            .await;
        assert_eq!(one["items"], report["items"]);

        app.assert_ledger_verified().await;
        app.finish().await;
    }
}

backend_test! {
    async fn report_ranges_are_validated_with_stable_codes(app) {
        let (_, key) = app.new_tenant("Reporting shop").await;
        for (query, status, code) in [
            ("from=2026-01-01&to=2026-13-01", 400, "invalid_report_range"),
            ("from=2026-02-30&to=2026-03-01", 400, "invalid_report_range"),
            ("from=yesterday&to=2026-03-01", 400, "invalid_report_range"),
            ("from=2026-03-02&to=2026-03-01", 400, "invalid_report_range"),
            ("from=2025-01-01&to=2026-01-02", 400, "invalid_report_range"),
            ("to=2026-03-01", 400, "bad_query"),
            ("from=2026-01-01&to=2026-01-02&nope=1", 400, "bad_query"),
            ("from=2026-01-01&to=2026-01-02&currency=usd", 422, "validation_failed"),
        ] {
            let (got, body) = app
                .tenant(&key, Method::GET, &format!("/v1/reports/daily?{query}"), None)
                .await;
            assert_eq!((got, body["error"]["code"].as_str()), (status, Some(code)), "{query}: {body}");
            let (got, body) = app
                .admin(Method::GET, &format!("/admin/reports/daily?{query}"), None)
                .await;
            assert_eq!((got, body["error"]["code"].as_str()), (status, Some(code)), "admin {query}: {body}");
        }
        let (status, year) = app
            .tenant(&key, Method::GET, "/v1/reports/daily?from=2024-01-01&to=2024-12-31", None)
            .await;
        assert_eq!(status, 200, "366 days are one report: {year}");
        app.finish().await;
    }
}
