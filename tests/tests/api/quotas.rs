//! Monthly checkout quotas: counted with the pending order, exactly, also
//! across two instances on PostgreSQL; 429 `quota_exceeded` with
//! `Retry-After` once used up; usage readable by the tenant and the
//! operator; manual corrections; threshold audit events.
//!
//! Limits are set as a user sets them: an operator's tenant override of
//! `checkouts.monthly` (see [`set_limit`]).

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use payhost_tests::checkout::{cart, orders_of};
use payhost_tests::{TestApp, addr, backend_test};

const KEY: &str = "checkouts.monthly";

/// Sets `tenant`'s limit of `key` (`None`: unlimited) by an operator's
/// override, as a platform does. Instances started afterwards load it;
/// running siblings hear it through the broadcast.
async fn set_limit(app: &TestApp, tenant: &str, key: &str, limit: Option<u64>) {
    let (status, body) = app
        .admin(
            Method::PUT,
            &format!("/admin/tenants/{tenant}/overrides/{key}"),
            Some(json!({"value": limit, "reason": "quota test"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

/// Moves the wall clock of `app` (and its siblings) to `at`.
fn set_clock(app: &TestApp, at: i64) {
    app.clock.set(payhost::store::UnixMillis(at));
}

/// A checkout's status, `Retry-After` and body.
async fn checkout(app: &TestApp, key: &str, client_key: Option<&str>) -> (u16, Option<u64>, Value) {
    let mut request = app
        .request(Method::POST, "/v1/checkouts", Some(key))
        .json(&cart("USD", "pm_card_visa"));
    if let Some(k) = client_key {
        request = request.header("Idempotency-Key", k);
    }
    answer(request).await
}

/// Status, `Retry-After` and body of `request`.
async fn answer(request: reqwest::RequestBuilder) -> (u16, Option<u64>, Value) {
    let response = request.send().await.expect("request reaches the app");
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let body = response.json().await.unwrap_or(Value::Null);
    (status, retry_after, body)
}

/// Runs every future at once, each in a task of its own; their outputs.
async fn all_at_once<F>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut outputs = Vec::with_capacity(handles.len());
    for handle in handles {
        outputs.push(handle.await.expect("task"));
    }
    outputs
}

/// The tenant's `checkouts.monthly` entry of `GET /v1/usage`.
async fn usage(app: &TestApp, key: &str) -> Value {
    let (status, body) = app.tenant(key, Method::GET, "/v1/usage", None).await;
    assert_eq!(status, 200, "{body}");
    body["usage"]
        .as_array()
        .and_then(|all| all.iter().find(|u| u["key"] == KEY))
        .cloned()
        .unwrap_or_else(|| panic!("no {KEY} in {body}"))
}

/// A shop with Stripe for USD: (tenant id, API key).
async fn shop(app: &TestApp, name: &str) -> (String, String) {
    let (tenant, key) = app.new_tenant(name).await;
    app.save_stripe(&key, 1, &["USD"]).await;
    (tenant, key)
}

/// Seconds from the quota clock to the end of its month.
fn secs_to_period_end(app: &TestApp, period_end: i64) -> u64 {
    let now = payhost::clock::Clock::now(app.clock.as_ref()).as_i64();
    u64::try_from((period_end - now + 999) / 1000).expect("the period ends later")
}

/// The tenant's audit events with `action`, oldest first.
async fn audit_events(app: &TestApp, tenant: &str, action: &str) -> Vec<Value> {
    let (status, page) = app
        .admin(
            Method::GET,
            &format!("/admin/audit?tenant_id={tenant}&action={action}&limit=500"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{page}");
    let mut items = page["items"].as_array().cloned().unwrap_or_default();
    items.reverse();
    items
}

backend_test! {
    /// 200 checkouts at once against a limit of 50: exactly 50 are
    /// admitted and stored, the other 150 are 429 `quota_exceeded` with `Retry-After`
    /// until the month ends and leave no order. On PostgreSQL the requests
    /// are split over two instances sharing the database.
    async fn two_hundred_concurrent_checkouts_against_fifty_admit_exactly_fifty(app) {
        let (tenant, key) = shop(&app, "Busy shop").await;
        set_limit(&app, &tenant, KEY, Some(50)).await;
        let sibling = match app.backend {
            "postgres" => Some(app.sibling(&app.database_url().expect("url")).await),
            _ => None,
        };
        let instances: Vec<&TestApp> = std::iter::once(&app).chain(sibling.as_ref()).collect();
        let requests: Vec<_> = (0..200)
            .map(|i| {
                instances[i % instances.len()]
                    .request(Method::POST, "/v1/checkouts", Some(&key))
                    .json(&cart("USD", "pm_card_visa"))
            })
            .collect();
        let answers = all_at_once(requests.into_iter().map(answer)).await;

        let refused: Vec<_> = answers.iter().filter(|(s, _, _)| *s == 429).collect();
        let codes: std::collections::BTreeMap<String, usize> =
            answers.iter().fold(Default::default(), |mut m, (s, _, b)| {
                *m.entry(format!("{s} {}", b["error"]["code"])).or_default() += 1;
                m
            });
        assert_eq!(refused.len(), 150, "[{}] {codes:?}", app.backend);
        // The 50 admitted are paid. Refused checkouts start their component
        // call too (it waits at the send gate, then is denied), so 200 calls
        // meet one in-process pool of 128 instance slots: a call waits for a
        // free slot rather than failing.
        assert_eq!(codes.get("201 null"), Some(&50), "[{}] {codes:?}", app.backend);
        let period_end = refused[0].2["error"]["details"]["period_end"].as_i64().expect("period end");
        let retry_after = secs_to_period_end(&app, period_end);
        for (_, after, body) in &refused {
            assert_eq!(body["error"]["code"], "quota_exceeded", "{body}");
            assert_eq!(body["error"]["details"]["limit"], 50, "{body}");
            assert_eq!(*after, Some(retry_after), "Retry-After: seconds until the month ends");
        }
        assert_eq!(orders_of(&app, &tenant).await, 50, "[{}] refused checkouts stored no order", app.backend);
        let (status, orders) = app.tenant(&key, Method::GET, "/v1/orders?limit=500", None).await;
        assert_eq!(status, 200);
        assert_eq!(orders["items"].as_array().map(Vec::len), Some(50));
        let u = usage(&app, &key).await;
        assert_eq!((u["used"].as_u64(), u["limit"].as_u64(), u["remaining"].as_u64()), (Some(50), Some(50), Some(0)), "{u}");
        if let Some(sibling) = sibling {
            sibling.finish().await;
        }
        app.finish().await;
    }
}

backend_test! {
    /// A limit raised mid-period admits more at once; lowered to unlimited,
    /// usage still counts.
    async fn a_raised_limit_admits_more_at_once(app) {
        let (tenant, key) = shop(&app, "Growing shop").await;
        set_limit(&app, &tenant, KEY, Some(2)).await;
        for _ in 0..2 {
            assert_eq!(checkout(&app, &key, None).await.0, 201);
        }
        let (status, _, body) = checkout(&app, &key, None).await;
        assert_eq!(status, 429, "{body}");
        set_limit(&app, &tenant, KEY, Some(3)).await;
        assert_eq!(checkout(&app, &key, None).await.0, 201, "the raised limit admits one more");
        assert_eq!(checkout(&app, &key, None).await.0, 429);
        set_limit(&app, &tenant, KEY, None).await;
        assert_eq!(checkout(&app, &key, None).await.0, 201);
        let u = usage(&app, &key).await;
        assert_eq!(u["used"], 4, "{u}");
        assert!(u["limit"].is_null() && u["remaining"].is_null(), "{u}");
        assert_eq!(orders_of(&app, &tenant).await, 4);
        app.finish().await;
    }
}

backend_test! {
    /// A new calendar month starts at zero (the quota clock is moved across
    /// the boundary; no waiting).
    async fn a_new_period_starts_at_zero(app) {
        let (tenant, key) = shop(&app, "Monthly shop").await;
        set_limit(&app, &tenant, KEY, Some(1)).await;
        assert_eq!(checkout(&app, &key, None).await.0, 201);
        let before = usage(&app, &key).await;
        let end = before["period_end"].as_i64().expect("period end");
        set_clock(&app, end - 1_500);
        let (status, after, body) = checkout(&app, &key, None).await;
        assert_eq!((status, after), (429, Some(2)), "{body}");

        set_clock(&app, end);
        let fresh = usage(&app, &key).await;
        assert_eq!(fresh["period_start"], end, "{fresh}");
        assert_eq!((fresh["used"].as_u64(), fresh["remaining"].as_u64()), (Some(0), Some(1)), "{fresh}");
        assert_eq!(checkout(&app, &key, None).await.0, 201, "the new month admits again");
        assert_eq!(usage(&app, &key).await["used"], 1);
        app.finish().await;
    }
}

backend_test! {
    /// The operator's correction shows in the tenant's usage, is audited,
    /// never takes a counter below zero, and bad input is a stable 4xx.
    async fn a_manual_adjustment_shows_in_usage(app) {
        let (tenant, key) = shop(&app, "Corrected shop").await;
        set_limit(&app, &tenant, KEY, Some(10)).await;
        assert_eq!(checkout(&app, &key, None).await.0, 201);
        let path = format!("/admin/tenants/{tenant}/usage/{KEY}/adjustments");
        let (status, body) = app
            .admin(Method::POST, &path, Some(json!({"delta": 5, "reason": "migrated from the old system"})))
            .await;
        assert_eq!(status, 201, "{body}");
        assert_eq!((body["used"].as_u64(), body["remaining"].as_u64()), (Some(6), Some(4)), "{body}");
        let u = usage(&app, &key).await;
        assert_eq!(u["used"], 6, "{u}");
        let (status, admin) = app.admin(Method::GET, &format!("/admin/tenants/{tenant}/usage"), None).await;
        assert_eq!(status, 200, "{admin}");
        assert_eq!(admin["usage"][0], u);

        let (status, body) = app
            .admin(Method::POST, &path, Some(json!({"delta": -100, "reason": "refund of a test run"})))
            .await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["used"], 0, "never below zero: {body}");
        let events = audit_events(&app, &tenant, "quota.adjusted").await;
        assert_eq!(events.len(), 2, "{events:?}");
        assert_eq!(events[0]["details"]["delta"], 5);
        assert_eq!(events[0]["details"]["reason"], "migrated from the old system");
        assert_eq!(events[0]["actor"], "operator:admin");

        for (body, code) in [
            (json!({"delta": 0, "reason": "nothing"}), "validation_failed"),
            (json!({"delta": 2_000_000_000_i64, "reason": "too much"}), "validation_failed"),
            (json!({"delta": 1, "reason": " "}), "validation_failed"),
            (json!({"delta": 1}), "validation_failed"),
        ] {
            let (status, answer) = app.admin(Method::POST, &path, Some(body.clone())).await;
            assert_eq!((status, answer["error"]["code"].as_str()), (422, Some(code)), "{body}: {answer}");
        }
        let unknown_key = format!("/admin/tenants/{tenant}/usage/gateways.maxx/adjustments");
        let (status, answer) = app.admin(Method::POST, &unknown_key, Some(json!({"delta": 1, "reason": "x"}))).await;
        assert_eq!((status, answer["error"]["code"].as_str()), (404, Some("quota_key_not_found")), "{answer}");
        let other = payhost::store::TenantId::generate();
        for path in [format!("/admin/tenants/{other}/usage/{KEY}/adjustments"), format!("/admin/tenants/nope/usage/{KEY}/adjustments")] {
            let (status, answer) = app.admin(Method::POST, &path, Some(json!({"delta": 1, "reason": "x"}))).await;
            assert_eq!((status, answer["error"]["code"].as_str()), (404, Some("tenant_not_found")), "{answer}");
        }
        let (status, answer) = app.admin(Method::GET, &format!("/admin/tenants/{other}/usage"), None).await;
        assert_eq!((status, answer["error"]["code"].as_str()), (404, Some("tenant_not_found")), "{answer}");
        assert_eq!(usage(&app, &key).await["used"], 0, "refused corrections changed nothing");
        app.finish().await;
    }
}

backend_test! {
    /// An idempotent replay consumes nothing; a retry that resumes its
    /// pending order counts it once; a refused checkout is not kept for
    /// its key, so the same retry runs once the limit allows it.
    async fn replays_and_resumed_orders_count_once(app) {
        let (tenant, key) = shop(&app, "Retrying shop").await;
        set_limit(&app, &tenant, KEY, Some(3)).await;
        let (status, _, first) = checkout(&app, &key, Some("order-1")).await;
        assert_eq!(status, 201, "{first}");
        let replayed = app
            .request(Method::POST, "/v1/checkouts", Some(&key))
            .header("Idempotency-Key", "order-1")
            .json(&cart("USD", "pm_card_visa"))
            .send()
            .await
            .expect("replay");
        assert_eq!(replayed.status().as_u16(), 201);
        assert_eq!(replayed.headers().get("idempotent-replayed").map(|v| v.as_bytes()), Some(&b"true"[..]));
        assert_eq!(usage(&app, &key).await["used"], 1, "a replay consumes nothing");

        // Unknown outcome at the gateway: the order stays pending and the
        // 5xx is not kept, so the retry resumes the same order.
        let unavailable = || {
            app.request(Method::POST, "/v1/checkouts", Some(&key))
                .header("Idempotency-Key", "order-2")
                .json(&cart("USD", "pm_emulator_unavailable"))
        };
        let (status, body) = app.send(unavailable()).await;
        assert!(status >= 500, "{status} {body}");
        let (status, body) = app.send(unavailable()).await;
        assert!(status >= 500, "{status} {body}");
        assert_eq!(orders_of(&app, &tenant).await, 2, "the retry resumed the order");
        assert_eq!(usage(&app, &key).await["used"], 2, "a resumed order counts once");

        assert_eq!(checkout(&app, &key, None).await.0, 201);
        let (status, _, body) = checkout(&app, &key, Some("order-4")).await;
        assert_eq!((status, body["error"]["code"].as_str()), (429, Some("quota_exceeded")), "{body}");
        set_limit(&app, &tenant, KEY, Some(4)).await;
        let (status, _, body) = checkout(&app, &key, Some("order-4")).await;
        assert_eq!(status, 201, "the refusal was not kept for the key: {body}");
        assert_eq!(usage(&app, &key).await["used"], 4);
        assert_eq!(orders_of(&app, &tenant).await, 4);
        app.finish().await;
    }
}

backend_test! {
    /// Crossing 80 % and 100 % of the limit writes one audit event each,
    /// with the key, the percent and the period.
    async fn thresholds_are_audited_once_each(app) {
        let (tenant, key) = shop(&app, "Watched shop").await;
        set_limit(&app, &tenant, KEY, Some(5)).await;
        for n in 1..=3 {
            assert_eq!(checkout(&app, &key, None).await.0, 201);
            assert!(audit_events(&app, &tenant, "quota.threshold").await.is_empty(), "{n} of 5 is under 80 %");
        }
        assert_eq!(checkout(&app, &key, None).await.0, 201);
        let events = audit_events(&app, &tenant, "quota.threshold").await;
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0]["details"]["percent"], 80);
        assert_eq!(events[0]["details"]["key"], KEY);
        assert_eq!(events[0]["actor"], "system:quota");
        assert_eq!(checkout(&app, &key, None).await.0, 201);
        for _ in 0..3 {
            assert_eq!(checkout(&app, &key, None).await.0, 429);
        }
        let events = audit_events(&app, &tenant, "quota.threshold").await;
        let percents: Vec<_> = events.iter().map(|e| e["details"]["percent"].clone()).collect();
        assert_eq!(percents, [json!(80), json!(100)], "{events:?}");
        let period_start = usage(&app, &key).await["period_start"].clone();
        assert_eq!(events[1]["details"]["period_start"], period_start);
        app.finish().await;
    }
}

/// Delays after which a client hangs up, from "barely written" to "answered".
const HANG_UP_AFTER_US: &[u64] = &[
    0, 100, 300, 700, 1_500, 3_000, 6_000, 12_000, 30_000, 100_000,
];

backend_test! {
    /// Checkouts whose clients hang up at swept delays: the counter never
    /// exceeds the orders stored in the period, nor the limit.
    async fn hung_up_checkouts_never_count_more_than_the_orders_stored(app) {
        let (tenant, key) = shop(&app, "Impatient shop").await;
        set_limit(&app, &tenant, KEY, Some(12)).await;
        let body = cart("USD", "pm_card_visa").to_string();
        let request = format!(
            "POST /v1/checkouts HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {key}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            addr(&app),
            body.len()
        );
        let hang_ups = HANG_UP_AFTER_US.iter().cycle().take(30).map(|&us| {
            let (addr, request) = (addr(&app), request.clone());
            async move {
                let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
                stream.write_all(request.as_bytes()).await.expect("write");
                // The hang-up point itself, not a wait for a condition.
                tokio::time::sleep(Duration::from_micros(us)).await;
                drop(stream);
            }
        });
        all_at_once(hang_ups).await;
        app.quiesce().await;
        let used = usage(&app, &key).await["used"].as_i64().expect("used");
        let orders = orders_of(&app, &tenant).await;
        assert_eq!(used, orders, "[{}] the counter matches the orders stored", app.backend);
        assert!(used <= 12, "[{}] {used} over the limit", app.backend);
        app.finish().await;
    }
}
