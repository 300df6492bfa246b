//! Issue 11, items 6–9, over the real HTTP server loop: connection limits
//! seen from a raw TCP client, the JSON error object for the framework's
//! own rejections, bodies that must be objects, and input validation.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use payhost::http_server::HttpOptions;
use payhost_tests::{ADMIN_TOKEN, TestApp, addr, backend_test};

/// A bound on every wait for a condition; generous, since a passing test
/// never waits for it in full.
const BOUND: Duration = Duration::from_secs(10);

async fn sqlite_app(http: HttpOptions) -> TestApp {
    let db = payhost::store::testing::TestDb::sqlite()
        .await
        .expect("sqlite test db");
    TestApp::spawn_with(db, http).await
}

async fn connect(app: &TestApp) -> TcpStream {
    TcpStream::connect(addr(app)).await.expect("connect")
}

/// Read until the server closes the connection (EOF or reset); the bytes
/// received. Panics when it is still open after `bound`.
async fn read_until_closed(stream: &mut TcpStream, bound: Duration) -> Vec<u8> {
    let mut received = Vec::new();
    let result = tokio::time::timeout(bound, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(result.is_ok(), "connection still open after {bound:?}");
    received
}

/// A parsed response: status, lower-cased headers, body.
struct Raw {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Raw {
    fn parse(bytes: &[u8]) -> Raw {
        let text = String::from_utf8_lossy(bytes);
        let (head, body) = text.split_once("\r\n\r\n").expect("a response head");
        let mut lines = head.lines();
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .expect("status line");
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        Raw {
            status,
            headers,
            body: body.as_bytes().to_vec(),
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// Read one response with a `content-length` from a kept-alive connection.
async fn read_response(stream: &mut TcpStream) -> Raw {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(BOUND, async {
        loop {
            let n = stream.read(&mut buf).await.expect("read");
            assert!(n > 0, "closed before a full response");
            received.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&received).to_string();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse::<usize>().ok())?
                    })
                    .unwrap_or(0);
                if body.len() >= length {
                    return;
                }
            }
        }
    })
    .await
    .expect("a response in time");
    Raw::parse(&received)
}

/// Send `request` whole on a fresh connection and read the answer to EOF.
async fn raw_exchange(app: &TestApp, request: &[u8]) -> Raw {
    let mut stream = connect(app).await;
    stream.write_all(request).await.expect("write");
    Raw::parse(&read_until_closed(&mut stream, BOUND).await)
}

fn assert_json_error(raw: &Raw, status: u16, code: &str) {
    assert_eq!(raw.status, status, "{}", String::from_utf8_lossy(&raw.body));
    assert_eq!(raw.header("content-type"), Some("application/json"));
    assert_eq!(raw.json()["error"]["code"], code, "{}", raw.json());
}

async fn assert_reqwest_error(response: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(response.status().as_u16(), status);
    assert_eq!(
        response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/json")
    );
    let body: Value = response.json().await.expect("JSON body");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
    body
}

fn short(header: u64, body: u64, idle: u64, max_connections: usize) -> HttpOptions {
    HttpOptions {
        header_read_timeout: Duration::from_secs(header),
        body_read_timeout: Duration::from_secs(body),
        idle_timeout: Duration::from_secs(idle),
        max_connections,
    }
}

// ----- 6. connection hardening ---------------------------------------------

#[tokio::test]
async fn a_slow_header_connection_is_closed_after_the_header_timeout() {
    // Idle timeout far away: only the header timeout may close these.
    let app = sqlite_app(short(1, 30, 60, 64)).await;

    let mut partial = connect(&app).await;
    let started = Instant::now();
    partial
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    let answered = read_until_closed(&mut partial, BOUND).await;
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert!(answered.is_empty() || answered.starts_with(b"HTTP/1.1 408"));

    // Trickling bytes does not extend the deadline.
    let mut trickle = connect(&app).await;
    let started = Instant::now();
    trickle
        .write_all(b"GET /health HTTP/1.1\r\n")
        .await
        .expect("write");
    let closed = tokio::time::timeout(BOUND, async {
        for i in 0.. {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if trickle
                .write_all(format!("X-{i}: y\r\n").as_bytes())
                .await
                .is_err()
            {
                return;
            }
            let mut buf = [0u8; 64];
            if let Ok(Ok(0)) =
                tokio::time::timeout(Duration::from_millis(1), trickle.read(&mut buf)).await
            {
                return;
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "a trickling head was never cut off");
    assert!(started.elapsed() < Duration::from_secs(5));
    app.finish().await;
}

#[tokio::test]
async fn a_partial_body_is_answered_408_and_closed() {
    let app = sqlite_app(short(10, 1, 60, 64)).await;
    let (_, key) = app.new_tenant("Slow bodies").await;
    // An operator write, and a tenant write whose body the Idempotency-Key
    // layer reads first.
    for (auth, extra) in [
        (ADMIN_TOKEN.to_string(), ""),
        (key.clone(), "Idempotency-Key: slow-1\r\n"),
    ] {
        let path = if extra.is_empty() {
            "/admin/tenants"
        } else {
            "/v1/orders"
        };
        let mut stream = connect(&app).await;
        let started = Instant::now();
        stream
            .write_all(
                format!(
                    "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {auth}\r\n{extra}\
                     Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"name\":"
                )
                .as_bytes(),
            )
            .await
            .expect("write");
        let raw = Raw::parse(&read_until_closed(&mut stream, BOUND).await);
        assert!(started.elapsed() >= Duration::from_millis(900));
        assert_json_error(&raw, 408, "body_timeout");
    }
    // The key was never taken: the same key with a whole body works.
    let (status, order) = app
        .send(
            app.request(reqwest::Method::POST, "/v1/orders", Some(&key))
                .header("idempotency-key", "slow-1")
                .json(&serde_json::json!({"kind": "manual", "currency": "USD", "items": [{"amount": 5}]})),
        )
        .await;
    assert_eq!(status, 201, "{order}");
    app.finish().await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed() {
    // Header timeout far away: only the idle timeout may close it.
    let app = sqlite_app(short(60, 30, 1, 64)).await;
    let mut stream = connect(&app).await;
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let first = read_response(&mut stream).await;
    assert_eq!(first.status, 200);
    let started = Instant::now();
    let rest = read_until_closed(&mut stream, BOUND).await;
    assert!(rest.is_empty());
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "{waited:?}"
    );

    // A connection that never sends anything is idle too.
    let mut silent = connect(&app).await;
    assert!(read_until_closed(&mut silent, BOUND).await.is_empty());
    app.finish().await;
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_until_one_closes() {
    let app = sqlite_app(short(60, 30, 60, 2)).await;
    let request = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
    // Two kept-alive connections, each answered once, so both are being
    // served (they hold the two slots).
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = connect(&app).await;
        s.write_all(request).await.expect("write");
        assert_eq!(read_response(&mut s).await.status, 200);
        held.push(s);
    }
    // A third connects (the kernel's backlog takes it) but is not served.
    let mut third = connect(&app).await;
    third.write_all(request).await.expect("write");
    let mut buf = [0u8; 16];
    let early = tokio::time::timeout(Duration::from_millis(500), third.read(&mut buf)).await;
    assert!(early.is_err(), "served beyond the cap: {early:?}");
    // When one of the two closes, the third is served.
    drop(held.pop());
    assert_eq!(read_response(&mut third).await.status, 200);
    app.finish().await;
}

#[tokio::test]
async fn a_content_length_over_the_cap_is_answered_413_before_any_body() {
    let app = sqlite_app(HttpOptions::default()).await;
    let mut stream = connect(&app).await;
    stream
        .write_all(
            b"POST /v1/orders HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
              Content-Length: 10000000000\r\n\r\n",
        )
        .await
        .expect("write");
    // No byte of the body is sent; the answer must come anyway.
    let raw = read_response(&mut stream).await;
    assert_json_error(&raw, 413, "body_too_large");
    assert_eq!(raw.header("connection"), Some("close"));
    assert!(read_until_closed(&mut stream, BOUND).await.is_empty());
    app.finish().await;
}

// ----- 7. every error is the JSON error object ------------------------------

#[tokio::test]
async fn framework_rejections_are_json_errors() {
    let app = sqlite_app(HttpOptions::default()).await;
    let (_, key) = app.new_tenant("Framework errors").await;

    // 413 with no Content-Length (chunked) and no Idempotency-Key, on a
    // JSON endpoint and on the refund endpoint whose body is optional.
    for path in ["/v1/orders", "/v1/payments/pay_abc/refunds"] {
        let chunk = "x".repeat(70 * 1024);
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\
             Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n\
             {:x}\r\n{chunk}\r\n0\r\n\r\n",
            chunk.len()
        );
        let raw = raw_exchange(&app, request.as_bytes()).await;
        assert_json_error(&raw, 413, "body_too_large");
    }

    // 405 keeps its Allow header.
    let response = app
        .request(Method::DELETE, "/v1/balance", Some(&key))
        .send()
        .await
        .expect("send");
    let allow = response
        .headers()
        .get("allow")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    assert_reqwest_error(response, 405, "method_not_allowed").await;
    assert!(allow.is_some_and(|a| a.contains("GET")));

    // A path segment that is not UTF-8 once decoded, on tenant and
    // operator routes.
    for (method, path, token) in [
        (Method::GET, "/v1/orders/%FF", key.as_str()),
        (Method::GET, "/admin/tenants/%FF", ADMIN_TOKEN),
        (Method::DELETE, "/v1/gateways/%C3%28", key.as_str()),
    ] {
        let response = app
            .request(method, path, Some(token))
            .send()
            .await
            .expect("send");
        assert_reqwest_error(response, 400, "bad_path").await;
    }

    // Unknown route.
    let response = app
        .request(Method::GET, "/no/such/route", None)
        .send()
        .await
        .expect("send");
    assert_reqwest_error(response, 404, "route_not_found").await;

    // 414 for a long target.
    let long = format!("/health?q={}", "a".repeat(9 * 1024));
    let response = app
        .request(Method::GET, &long, None)
        .send()
        .await
        .expect("send");
    assert_reqwest_error(response, 414, "uri_too_long").await;

    // 431 for large headers, and for too many.
    let response = app
        .request(Method::GET, "/health", None)
        .header("x-big", "b".repeat(20 * 1024))
        .send()
        .await
        .expect("send");
    assert_reqwest_error(response, 431, "headers_too_large").await;
    let mut many = app.request(Method::GET, "/health", None);
    for i in 0..150 {
        many = many.header(format!("x-h{i}"), "v");
    }
    assert_reqwest_error(many.send().await.expect("send"), 431, "headers_too_large").await;

    // 415 for a body that is not JSON.
    let response = app
        .request(Method::POST, "/v1/orders", Some(&key))
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .expect("send");
    assert_reqwest_error(response, 415, "unsupported_media_type").await;
    app.finish().await;
}

// ----- 8. JSON shapes -------------------------------------------------------

backend_test! {
    async fn bodies_that_must_be_objects_refuse_arrays_top_level_and_nested(app) {
        let (tenant, key) = app.new_tenant("Shapes").await;
        app.save_stripe(&key, 1, &["USD"]).await;
        let post = |path: &str, token: &str, body: &'static str| {
            app.request(Method::POST, path, Some(token))
                .header("content-type", "application/json")
                .body(body)
                .send()
        };

        // The issue's charge-by-array.
        let top = post(
            "/v1/checkouts",
            &key,
            r#"["USD",[[null,"pro",1000,1]],null,null,"pm_card_visa",null,null]"#,
        )
        .await
        .expect("send");
        assert_reqwest_error(top, 422, "validation_failed").await;
        // An object whose item is an array.
        let nested = post(
            "/v1/checkouts",
            &key,
            r#"{"currency":"USD","items":[[null,"pro",1000,1]],"payment_method":"pm_card_visa"}"#,
        )
        .await
        .expect("send");
        let body = assert_reqwest_error(nested, 422, "validation_failed").await;
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("items[0]")),
            "{body}"
        );
        // An optional nested struct given as an array.
        let shipping = post(
            "/v1/checkouts",
            &key,
            r#"{"currency":"USD","items":[{"amount":1000}],"shipping":[null,500],"payment_method":"pm_card_visa"}"#,
        )
        .await
        .expect("send");
        assert_reqwest_error(shipping, 422, "validation_failed").await;

        // Operator endpoints use the same extractor.
        let keys = post(
            &format!("/admin/tenants/{tenant}/api-keys"),
            ADMIN_TOKEN,
            "[]",
        )
        .await
        .expect("send");
        assert_reqwest_error(keys, 422, "validation_failed").await;
        let tenants = post("/admin/tenants", ADMIN_TOKEN, r#"["Array Inc", null]"#)
            .await
            .expect("send");
        assert_reqwest_error(tenants, 422, "validation_failed").await;
        // The refund body, read by hand because it is optional.
        let refund = post("/v1/payments/pay_abc/refunds", &key, "[5]")
            .await
            .expect("send");
        assert_reqwest_error(refund, 422, "validation_failed").await;
        // Bulk users given as arrays.
        let bulk = post(
            "/v1/orders/bulk",
            &key,
            r#"{"currency":"USD","users":[["u1","pro",100]]}"#,
        )
        .await
        .expect("send");
        assert_reqwest_error(bulk, 422, "validation_failed").await;

        // A key given twice is refused, not last-one-wins.
        for (path, token, body) in [
            ("/admin/tenants", ADMIN_TOKEN, r#"{"name":"A","name":"B"}"#),
            (
                "/v1/payments/pay_abc/refunds",
                key.as_str(),
                r#"{"amount":1,"amount":2}"#,
            ),
            (
                "/v1/checkouts",
                key.as_str(),
                r#"{"currency":"USD","items":[{"amount":1,"amount":1000}],"payment_method":"pm_card_visa"}"#,
            ),
        ] {
            let response = post(path, token, body).await.expect("send");
            let answer = assert_reqwest_error(response, 422, "validation_failed").await;
            assert!(
                answer["error"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("duplicate")),
                "{answer}"
            );
        }

        // Nothing was charged or booked, and no extra key was issued.
        let (_, balance) = app.tenant(&key, Method::GET, "/v1/balance", None).await;
        assert_eq!(balance["items"], json!([]), "[{}] {balance}", app.backend);
        let (_, audit) = app
            .admin(
                Method::GET,
                &format!("/admin/audit?tenant_id={tenant}&action=api_key.issued"),
                None,
            )
            .await;
        assert_eq!(audit["items"].as_array().map(Vec::len), Some(1), "{audit}");
        // And objects still work.
        let (status, order) = app
            .tenant(
                &key,
                Method::POST,
                "/v1/checkouts",
                Some(json!({"currency": "USD", "items": [{"amount": 1000}], "payment_method": "pm_card_visa"})),
            )
            .await;
        assert_eq!(status, 201, "{order}");
        app.finish().await;
    }
}

// ----- 9. validation --------------------------------------------------------

const CONTROLS: [&str; 5] = ["a\u{0}b", "a\u{1b}[2Jb", "a\nb", "a\rb", "a\u{85}b"];

backend_test! {
    async fn client_text_refuses_control_characters_and_overlong_values(app) {
        let (_, key) = app.new_tenant("Text rules").await;
        app.save_stripe(&key, 1, &["USD"]).await;
        // (path, body with the value at `$`, field named in the 422, cap)
        let cases: Vec<(&str, Value, &str, usize)> = vec![
            (
                "/v1/checkouts",
                checkout_with(json!({"customer": {"id": "$"}})),
                "customer.id",
                255,
            ),
            (
                "/v1/checkouts",
                checkout_with(json!({"customer": {"email": "$"}})),
                "customer.email",
                254,
            ),
            (
                "/v1/checkouts",
                checkout_with(json!({"customer": {"name": "$"}})),
                "customer.name",
                200,
            ),
            (
                "/v1/orders",
                external_with(json!({"customer": {"id": "$"}})),
                "customer.id",
                255,
            ),
            (
                "/v1/orders",
                external_with(json!({"customer": {"name": "$"}})),
                "customer.name",
                200,
            ),
            (
                "/v1/orders",
                external_with(json!({"external_reference": "$"})),
                "external_reference",
                255,
            ),
            (
                "/v1/orders/bulk",
                json!({"currency": "USD", "users": [
                    {"user": "ok", "user_plan": "pro", "amount": 1},
                    {"user": "$", "user_plan": "pro", "amount": 1}]}),
                "users[1].user",
                255,
            ),
            (
                "/v1/checkouts",
                checkout_with(json!({"items": [{"amount": 100, "product": "$"}]})),
                "items[0].product",
                200,
            ),
            (
                "/v1/checkouts",
                checkout_with(json!({"shipping": {"carrier": "$", "amount": 5}})),
                "shipping.carrier",
                100,
            ),
        ];
        for (path, template, field, cap) in &cases {
            let overlong = "x".repeat(cap + 1);
            for bad in CONTROLS.iter().copied().chain([overlong.as_str()]) {
                let body = substitute(template, bad);
                let (status, answer) = app.tenant(&key, Method::POST, path, Some(body)).await;
                assert_eq!(status, 422, "[{}] {path} {bad:?}: {answer}", app.backend);
                assert_eq!(answer["error"]["code"], "validation_failed");
                assert!(
                    answer["error"]["message"]
                        .as_str()
                        .is_some_and(|m| m.contains(field)),
                    "{field}: {answer}"
                );
            }
            // At the cap, the same field is accepted.
            let body = substitute(template, &"y".repeat(*cap));
            let (status, answer) = app.tenant(&key, Method::POST, path, Some(body)).await;
            assert!(
                status == 201,
                "[{}] {path} at the cap: {answer}",
                app.backend
            );
        }
        let long_name = "n".repeat(201);
        for bad in CONTROLS.iter().copied().chain([long_name.as_str()]) {
            let (status, answer) = app
                .admin(Method::POST, "/admin/tenants", Some(json!({"name": bad})))
                .await;
            assert_eq!(status, 422, "tenant name {bad:?}: {answer}");
        }
        app.finish().await;
    }
}

/// A paid checkout body with `extra`'s fields on top.
fn checkout_with(extra: Value) -> Value {
    merged(
        json!({"currency": "USD", "items": [{"amount": 100}], "payment_method": "pm_card_visa"}),
        extra,
    )
}

/// An external order body with `extra`'s fields on top.
fn external_with(extra: Value) -> Value {
    merged(
        json!({"kind": "external", "currency": "USD", "items": [{"amount": 100}]}),
        extra,
    )
}

fn merged(mut base: Value, extra: Value) -> Value {
    if let (Some(b), Value::Object(e)) = (base.as_object_mut(), extra) {
        b.extend(e);
    }
    base
}

/// `template` with every string `"$"` replaced by `value`.
fn substitute(template: &Value, value: &str) -> Value {
    match template {
        Value::String(s) if s == "$" => Value::String(value.to_string()),
        Value::Array(a) => Value::Array(a.iter().map(|v| substitute(v, value)).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| (k.clone(), substitute(v, value)))
                .collect(),
        ),
        other => other.clone(),
    }
}

backend_test! {
    async fn products_and_carrier_are_kept_in_the_order(app) {
        let (_, key) = app.new_tenant("Descriptive").await;
        app.save_stripe(&key, 1, &["USD"]).await;
        let (status, order) = app
            .tenant(
                &key,
                Method::POST,
                "/v1/checkouts",
                Some(json!({"currency": "USD",
                    "items": [{"product": "Pro", "user_plan": "pro", "amount": 1000}, {"amount": 50}],
                    "shipping": {"carrier": "ups", "amount": 500},
                    "payment_method": "pm_card_visa"})),
            )
            .await;
        assert_eq!(status, 201, "[{}] {order}", app.backend);
        let id = order["id"].as_str().expect("order id");
        let (_, stored) = app
            .tenant(&key, Method::GET, &format!("/v1/orders/{id}"), None)
            .await;
        assert_eq!(
            stored["metadata"]["items"],
            json!([{"product": "Pro"}, {}]),
            "{stored}"
        );
        assert_eq!(stored["metadata"]["shipping"]["carrier"], "ups", "{stored}");

        let (status, manual) = app
            .tenant(
                &key,
                Method::POST,
                "/v1/orders",
                Some(json!({"kind": "external", "currency": "USD",
                    "items": [{"product": "Seat", "amount": 300}],
                    "external_reference": "inv-9", "customer": {"id": "u1"}})),
            )
            .await;
        assert_eq!(status, 201, "{manual}");
        let id = manual["id"].as_str().expect("order id");
        let (_, stored) = app
            .tenant(&key, Method::GET, &format!("/v1/orders/{id}"), None)
            .await;
        assert_eq!(
            stored["metadata"]["items"],
            json!([{"product": "Seat"}]),
            "{stored}"
        );
        assert_eq!(stored["metadata"]["external_reference"], "inv-9");
        assert_eq!(stored["customer"]["id"], "u1");
        app.finish().await;
    }
}

backend_test! {
    async fn domains_must_be_host_names(app) {
        let (tenant, _) = app.new_tenant("Domains").await;
        let path = format!("/admin/tenants/{tenant}/domains");
        for bad in [
            "com",
            "localhost",
            "127.0.0.1",
            "10.0.0.1",
            "[::1]",
            "a_b.example.com",
        ] {
            let (status, body) = app
                .admin(Method::POST, &path, Some(json!({"domain": bad})))
                .await;
            assert_eq!(status, 422, "[{}] {bad}: {body}", app.backend);
            assert_eq!(body["error"]["code"], "validation_failed");
        }
        let (status, body) = app
            .admin(
                Method::POST,
                &path,
                Some(json!({"domain": "Shop.Example.com"})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["domain"], "shop.example.com");
        app.finish().await;
    }
}

backend_test! {
    async fn gateway_currencies_are_deduplicated_and_bounded(app) {
        let (_, key) = app.new_tenant("Currencies").await;
        app.save_stripe(&key, 1, &["USD", "EUR", "USD", "EUR", "GBP"])
            .await;
        let (_, list) = app.tenant(&key, Method::GET, "/v1/gateways", None).await;
        assert_eq!(
            list["items"][0]["currencies"],
            json!(["USD", "EUR", "GBP"]),
            "{list}"
        );

        const ISO: &str = "AED AFN ALL AMD AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND \
            BOB BRL BSD BTN BWP BYN BZD CAD CDF CHF CLP CNY COP CRC CUP CVE CZK DJF DKK DOP DZD \
            EGP ERN ETB EUR FJD FKP GBP GEL GHS GIP GMD GNF GTQ";
        let many: Vec<&str> = ISO.split_whitespace().collect();
        assert!(many.len() > 50);
        let (status, body) = app
            .tenant(
                &key,
                Method::PUT,
                "/v1/gateways/stripe",
                Some(json!({"credentials": {"secret-key": "sk_test_x"}, "currencies": many})),
            )
            .await;
        assert_eq!(status, 422, "{body}");
        assert_eq!(body["error"]["code"], "validation_failed");
        app.finish().await;
    }
}

#[tokio::test]
async fn ambiguous_host_and_authorization_are_refused() {
    let app = sqlite_app(HttpOptions::default()).await;
    let host = addr(&app);

    let raw = raw_exchange(
        &app,
        format!("GET /health HTTP/1.1\r\nHost: {host}\r\nHost: evil.example\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await;
    assert_json_error(&raw, 400, "duplicate_header");

    let response = app
        .request(Method::GET, "/v1/balance", None)
        .header("authorization", "Bearer a")
        .header("authorization", "Bearer b")
        .send()
        .await
        .expect("send");
    assert_reqwest_error(response, 400, "duplicate_header").await;

    let raw = raw_exchange(
        &app,
        format!(
            "GET http://evil.example/public/tenant HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await;
    assert_json_error(&raw, 400, "host_mismatch");
    // The same absolute form naming this host is fine.
    let raw = raw_exchange(
        &app,
        format!("GET http://{host}/health HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await;
    assert_eq!(raw.status, 200);
    app.finish().await;
}

#[cfg(unix)]
#[tokio::test]
async fn the_sqlite_database_and_its_wal_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let app = sqlite_app(HttpOptions::default()).await;
    app.new_tenant("Private file").await;
    let url = app.database_url().expect("url");
    let path = url
        .trim_start_matches("sqlite://")
        .split('?')
        .next()
        .expect("path")
        .to_string();
    for suffix in ["", "-wal", "-shm"] {
        let file = format!("{path}{suffix}");
        let mode = std::fs::metadata(&file).expect(&file).permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{file}");
    }
    app.finish().await;
}
