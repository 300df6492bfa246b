//! The request rate limit per (tenant, API key): past the rate a key gets
//! 429 `rate_limited` with `Retry-After` and the IETF `RateLimit` headers,
//! other keys and tenants keep their budgets, the budget refills with the
//! (controllable) clock, and with Redis two instances share one budget.

use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use payhost::ratelimit::RateLimitOptions;
use payhost_tests::{AppOptions, TestApp, backend_test, rand_u64};

/// The env var naming the Redis the shared-budget test uses.
const REDIS_URL_ENV: &str = "PAYHOST_TEST_REDIS_URL";

/// One `GET /v1/gateways` with `key`: status, body and the three headers.
struct Answer {
    status: u16,
    body: Value,
    policy: Option<String>,
    limit: Option<String>,
    retry_after: Option<String>,
}

async fn get(app: &TestApp, key: &str) -> Answer {
    let response = app
        .request(Method::GET, "/v1/gateways", Some(key))
        .send()
        .await
        .expect("request reaches the app");
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let (policy, limit, retry_after) = (
        header("ratelimit-policy"),
        header("ratelimit"),
        header("retry-after"),
    );
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    Answer {
        status,
        body,
        policy,
        limit,
        retry_after,
    }
}

/// Every tenant gets `per_minute` requests per key, all of them at once.
fn limit_every_tenant(app: &TestApp, per_minute: u64) {
    app.rate_limiter
        .set_rate_for(Arc::new(move |_| Some(per_minute)));
}

backend_test! {
    async fn past_the_rate_a_key_gets_429_with_retry_after_and_the_headers(app) {
        limit_every_tenant(&app, 3);
        let (_, key) = app.new_tenant("Rated").await;
        for remaining in [2, 1, 0] {
            let a = get(&app, &key).await;
            assert_eq!(a.status, 200, "[{}] {}", app.backend, a.body);
            assert_eq!(a.policy.as_deref(), Some("\"api\";q=3;w=60"));
            // The budget is full again one interval (20 s) per spent request later.
            let t = 20 * (3 - remaining);
            assert_eq!(a.limit, Some(format!("\"api\";r={remaining};t={t}")));
            assert_eq!(a.retry_after, None);
        }
        let a = get(&app, &key).await;
        assert_eq!(a.status, 429, "[{}] {}", app.backend, a.body);
        assert_eq!(a.body["error"]["code"], "rate_limited");
        assert_eq!(a.retry_after.as_deref(), Some("20"));
        assert_eq!(a.policy.as_deref(), Some("\"api\";q=3;w=60"));
        assert_eq!(a.limit.as_deref(), Some("\"api\";r=0;t=60"));
        // A mutation over the rate is refused before it runs: nothing stored.
        let (status, body) = app
            .tenant(
                &key,
                Method::POST,
                "/v1/orders",
                Some(json!({"kind": "manual", "amount": 100, "currency": "USD"})),
            )
            .await;
        assert_eq!(status, 429, "{body}");
        let orders: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM orders")
            .fetch_one(app.store.pool())
            .await
            .expect("count orders");
        assert_eq!(orders, 0, "[{}] a refused request stored an order", app.backend);
        app.finish().await;
    }
}

backend_test! {
    async fn another_key_and_another_tenant_keep_their_budgets(app) {
        limit_every_tenant(&app, 2);
        let (tenant, first) = app.new_tenant("Busy").await;
        let (_, other_tenant) = app.new_tenant("Quiet").await;
        let (status, issued) = app
            .admin(
                Method::POST,
                &format!("/admin/tenants/{tenant}/api-keys"),
                Some(json!({"label": "second"})),
            )
            .await;
        assert_eq!(status, 201, "{issued}");
        let second = issued["key"].as_str().expect("key").to_string();
        for _ in 0..2 {
            assert_eq!(get(&app, &first).await.status, 200);
        }
        assert_eq!(get(&app, &first).await.status, 429);
        for key in [&second, &other_tenant] {
            let a = get(&app, key).await;
            assert_eq!(a.status, 200, "[{}] {}", app.backend, a.body);
            assert_eq!(a.limit.as_deref(), Some("\"api\";r=1;t=30"));
        }
        // Unauthenticated requests spend nobody's budget and say nothing of it.
        let a = get(&app, "not-a-key").await;
        assert_eq!(a.status, 401);
        assert_eq!((a.policy, a.limit), (None, None));
        app.finish().await;
    }
}

backend_test! {
    async fn the_budget_refills_with_the_clock(app) {
        limit_every_tenant(&app, 2);
        let (_, key) = app.new_tenant("Refill").await;
        assert_eq!(get(&app, &key).await.status, 200);
        assert_eq!(get(&app, &key).await.status, 200);
        assert_eq!(get(&app, &key).await.retry_after.as_deref(), Some("30"));
        app.rate_clock.advance(Duration::from_secs(29));
        let a = get(&app, &key).await;
        assert_eq!(a.status, 429);
        assert_eq!(a.retry_after.as_deref(), Some("1"));
        app.rate_clock.advance(Duration::from_secs(1));
        assert_eq!(get(&app, &key).await.status, 200, "one interval refills one request");
        assert_eq!(get(&app, &key).await.status, 429);
        app.rate_clock.advance(Duration::from_secs(60));
        let a = get(&app, &key).await;
        assert_eq!(a.status, 200);
        assert_eq!(a.limit.as_deref(), Some("\"api\";r=1;t=30"), "a full budget again");
        app.finish().await;
    }
}

backend_test! {
    async fn an_unlimited_tenant_is_never_limited(app) {
        let (free_id, free) = app.new_tenant("Unlimited").await;
        let (_, rated) = app.new_tenant("Limited").await;
        app.rate_limiter.set_rate_for(Arc::new(move |t| {
            (t.as_str() != free_id).then_some(1)
        }));
        for _ in 0..5 {
            let a = get(&app, &free).await;
            assert_eq!(a.status, 200);
            assert_eq!((a.policy, a.limit), (None, None));
        }
        assert_eq!(get(&app, &rated).await.status, 200);
        assert_eq!(get(&app, &rated).await.status, 429);
        app.finish().await;
    }
}

backend_test! {
    /// Two instances configured with the same Redis (and a key prefix of this
    /// test's own, so parallel tests never share budgets) spend one budget.
    async fn with_redis_two_instances_share_one_budget(app) {
        let Some(redis_url) = std::env::var(REDIS_URL_ENV).ok().filter(|u| !u.is_empty()) else {
            eprintln!("skipped: {REDIS_URL_ENV} is not set");
            app.finish().await;
            return;
        };
        let url = app.database_url().expect("owned database");
        let shared = RateLimitOptions {
            requests_per_minute: 4,
            redis_url: Some(redis_url),
            redis_prefix: format!("payhost:test:{:016x}:", rand_u64()),
            ..RateLimitOptions::default()
        };
        let with_redis = || AppOptions {
            rate_limit: Some(shared.clone()),
            ..AppOptions::default()
        };
        let one = app.sibling_opts(&url, with_redis()).await;
        let two = app.sibling_opts(&url, with_redis()).await;
        let (_, key) = app.new_tenant("Shared").await;
        let mut remaining = Vec::new();
        for instance in [&one, &two, &one, &two] {
            let a = get(instance, &key).await;
            assert_eq!(a.status, 200, "[{}] {}", app.backend, a.body);
            remaining.push(a.limit.unwrap_or_default());
        }
        assert_eq!(
            remaining.iter().map(|l| l.split(';').nth(1).unwrap_or("").to_owned()).collect::<Vec<_>>(),
            ["r=3", "r=2", "r=1", "r=0"],
            "one budget across both instances: {remaining:?}"
        );
        for instance in [&one, &two] {
            let a = get(instance, &key).await;
            assert_eq!(a.status, 429, "[{}] {}", app.backend, a.body);
            assert_eq!(a.body["error"]["code"], "rate_limited");
            assert_eq!(a.retry_after.as_deref(), Some("15"));
        }
        // The first instance (no Redis) keeps a budget of its own.
        assert_eq!(get(&app, &key).await.status, 200);
        two.finish().await;
        one.finish().await;
        app.finish().await;
    }
}

backend_test! {
    /// `api.requests_per_minute` answers with the rate a key gets: the
    /// configured `rate_limit.requests_per_minute` while the feature is at
    /// its default (the stored default is unlimited), an override's value
    /// once one is set.
    async fn the_features_answer_shows_the_rate_a_key_gets(app) {
        let url = app.database_url().expect("owned database");
        let configured = app
            .sibling_opts(&url, AppOptions {
                rate_limit: Some(RateLimitOptions {
                    requests_per_minute: 7,
                    ..RateLimitOptions::default()
                }),
                ..AppOptions::default()
            })
            .await;
        let (tenant, key) = configured.new_tenant("Configured").await;
        let evaluated = |body: &Value| (body["value"].clone(), body["source"].clone());
        let one = "/v1/features/api.requests_per_minute";
        let (status, body) = configured.tenant(&key, Method::GET, one, None).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(evaluated(&body), (json!(7), json!("default")), "[{}] {body}", app.backend);
        let (status, all) = configured.tenant(&key, Method::GET, "/v1/features", None).await;
        assert_eq!(status, 200, "{all}");
        let listed = all["items"].as_array().expect("items").iter()
            .find(|i| i["key"] == "api.requests_per_minute").cloned().expect("listed");
        assert_eq!(evaluated(&listed), (json!(7), json!("default")));
        assert_eq!(get(&configured, &key).await.policy.as_deref(), Some("\"api\";q=7;w=60"));

        let (status, body) = configured
            .admin(
                Method::PUT,
                &format!("/admin/tenants/{tenant}/overrides/api.requests_per_minute"),
                Some(json!({"value": 3, "reason": "noisy client"})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let (_, body) = configured.tenant(&key, Method::GET, one, None).await;
        assert_eq!(evaluated(&body), (json!(3), json!("override")), "{body}");
        assert_eq!(get(&configured, &key).await.policy.as_deref(), Some("\"api\";q=3;w=60"));
        configured.finish().await;
        app.finish().await;
    }
}

#[tokio::test]
async fn every_tenant_operation_documents_the_429_and_the_headers() {
    let app = TestApp::sqlite().await;
    let (status, doc) = app
        .send(app.request(Method::GET, "/openapi.json", None))
        .await;
    assert_eq!(status, 200);
    let codes = &doc["components"]["schemas"]["ErrorCode"]["enum"];
    assert!(
        codes
            .as_array()
            .is_some_and(|c| c.contains(&json!("rate_limited"))),
        "{codes}"
    );
    let mut operations = 0;
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            let Some(responses) = op.get("responses").and_then(Value::as_object) else {
                continue;
            };
            let limited = responses.get("429");
            if path.starts_with("/v1/") {
                operations += 1;
                let limited = limited.unwrap_or_else(|| panic!("{method} {path} has no 429"));
                for h in ["Retry-After", "RateLimit", "RateLimit-Policy"] {
                    assert!(limited["headers"].get(h).is_some(), "{method} {path}: {h}");
                }
                assert!(
                    limited
                        .to_string()
                        .contains("#/components/schemas/ErrorBody"),
                    "{method} {path}: {limited}"
                );
                for (status, r) in responses {
                    assert!(
                        r["headers"].get("RateLimit").is_some(),
                        "{method} {path} {status}"
                    );
                }
            } else {
                assert!(limited.is_none(), "{method} {path} is not rate limited");
            }
        }
    }
    assert!(operations >= 10, "{operations} tenant operations");
    app.finish().await;
}
