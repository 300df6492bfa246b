//! Clients that hang up: a raw TCP client sends a request and closes the
//! connection at swept delays (before, during and after the gateway call).
//! Afterwards every write works at once, the ledger matches the gateway
//! emulator, every 2xx that reached a client is durable, and every
//! `Idempotency-Key` is replayable or free, never stuck for its lease.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use sqlx::Row;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use payhost_tests::{TestApp, addr, backend_test, eventually, stripe_emulator};

/// Delays after which the client hangs up, from "the request is barely
/// written" to "the answer has usually arrived".
const DELAYS_US: &[u64] = &[
    0, 50, 100, 200, 300, 500, 750, 1_000, 1_500, 2_000, 3_000, 4_000, 6_000, 9_000, 15_000,
    30_000,
    // Long enough that answers arrive even on a loaded machine, so the
    // durability of answered requests is always checked.
    300_000, 1_000_000,
];

/// A request as bytes on the wire (`Connection: close`, JSON body).
fn raw_request(
    app: &TestApp,
    method: &str,
    path: &str,
    token: &str,
    idempotency_key: Option<&str>,
    body: Option<&Value>,
) -> Vec<u8> {
    let host = addr(app);
    let body = body.map(Value::to_string).unwrap_or_default();
    let key = idempotency_key
        .map(|k| format!("Idempotency-Key: {k}\r\n"))
        .unwrap_or_default();
    format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n{key}Connection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Status and JSON body of a complete HTTP/1.1 response in `buf`, if it is one.
fn complete_response(buf: &[u8]) -> Option<(u16, Value)> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&buf[..end]).ok()?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    let body = buf.get(end + 4..end + 4 + length)?;
    Some((status, serde_json::from_slice(body).unwrap_or(Value::Null)))
}

/// Sends `request` on a connection of its own and hangs up `after` it was
/// written. Returns the answer if all of it arrived before the hang-up.
async fn send_and_hang_up(addr: String, request: Vec<u8>, after: Duration) -> Option<(u16, Value)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(&request).await.expect("write request");
    let mut buf = Vec::new();
    let read = async {
        let mut chunk = [0u8; 8192];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            if complete_response(&buf).is_some() {
                return;
            }
        }
    };
    // The delay is the test's input (when the client hangs up), not a wait
    // for a condition.
    let _ = tokio::time::timeout(after, read).await;
    drop(stream);
    complete_response(&buf)
}

async fn count(app: &TestApp, sql: &str, binds: &[&str]) -> i64 {
    let mut q = sqlx::query(sql);
    for b in binds {
        q = q.bind(b.to_string());
    }
    q.fetch_one(app.store.pool())
        .await
        .unwrap_or_else(|e| panic!("{}: {sql}: {e}", app.backend))
        .get::<i64, _>(0)
}

fn cart(amount: i64) -> Value {
    json!({
        "currency": "USD",
        "items": [{"product": "Pro", "user_plan": "pro", "amount": amount}],
        "payment_method": "pm_card_visa",
    })
}

/// A request the storm sends, and how to send it again normally.
struct Sent {
    method: Method,
    path: String,
    token: String,
    key: Option<String>,
    body: Value,
    answer: Option<(u16, Value)>,
}

backend_test! {
    async fn requests_dropped_at_swept_delays_leave_the_ledger_matching_the_gateway(app) {
        let b = app.backend;
        let (tenant, key) = app.new_tenant("Storm").await;
        let stripe_key = app.save_stripe(&key, 1, &["USD"]).await;
        // A large payment that the storm's refunds of 10 draw on.
        let (status, paid) = app
            .tenant(&key, Method::POST, "/v1/checkouts", Some(cart(100_000)))
            .await;
        assert_eq!(status, 201, "{b}: {paid}");
        let payment = paid["ledger"][0]["id"]
            .as_str()
            .expect("row id")
            .to_string();
        let (status, manual) = app
            .tenant(
                &key,
                Method::POST,
                "/v1/orders",
                Some(json!({"kind": "manual", "currency": "USD",
                            "items": [{"product": "Seat", "user_plan": "pro", "amount": 100_000}]})),
            )
            .await;
        assert_eq!(status, 201, "{b}: {manual}");
        let manual_payment = manual["ledger"][0]["id"].as_str().expect("row").to_string();

        let mut sent: Vec<Sent> = Vec::new();
        for (i, delay) in DELAYS_US.iter().enumerate() {
            let after = Duration::from_micros(*delay);
            let refund_path = format!("/v1/payments/{payment}/refunds");
            let manual_refund_path = format!("/v1/payments/{manual_payment}/refunds");
            let batch = vec![
                (Method::POST, "/v1/checkouts".to_string(), None, cart(1000)),
                (
                    Method::POST,
                    "/v1/checkouts".to_string(),
                    Some(format!("c-{i}")),
                    cart(1000),
                ),
                (
                    Method::POST,
                    refund_path.clone(),
                    None,
                    json!({"amount": 10}),
                ),
                (
                    Method::POST,
                    refund_path,
                    Some(format!("r-{i}")),
                    json!({"amount": 10}),
                ),
                (
                    Method::POST,
                    manual_refund_path,
                    Some(format!("mr-{i}")),
                    json!({"amount": 10}),
                ),
                (
                    Method::POST,
                    "/v1/orders".to_string(),
                    Some(format!("m-{i}")),
                    json!({"kind": "manual", "currency": "USD",
                           "items": [{"product": "Seat", "user_plan": "pro", "amount": 500}]}),
                ),
            ];
            let mut requests = Vec::new();
            for (method, path, idem, body) in batch {
                let raw = raw_request(
                    &app,
                    method.as_str(),
                    &path,
                    &key,
                    idem.as_deref(),
                    Some(&body),
                );
                requests.push((
                    Sent {
                        method,
                        path,
                        token: key.clone(),
                        key: idem,
                        body,
                        answer: None,
                    },
                    raw,
                ));
            }
            let tenant_body = json!({"name": format!("Dropped {i}")});
            requests.push((
                Sent {
                    method: Method::POST,
                    path: "/admin/tenants".into(),
                    token: payhost_tests::ADMIN_TOKEN.into(),
                    key: None,
                    body: tenant_body.clone(),
                    answer: None,
                },
                raw_request(
                    &app,
                    "POST",
                    "/admin/tenants",
                    payhost_tests::ADMIN_TOKEN,
                    None,
                    Some(&tenant_body),
                ),
            ));
            // All at once, so dropped requests overlap each other.
            let clients: Vec<_> = requests
                .iter()
                .map(|(_, raw)| tokio::spawn(send_and_hang_up(addr(&app), raw.clone(), after)))
                .collect();
            for ((mut s, _), client) in requests.into_iter().zip(clients) {
                s.answer = client.await.expect("client task");
                sent.push(s);
            }

            // Every write works at once, while the dropped ones may still run.
            let (status, body) = app
                .tenant(
                    &key,
                    Method::POST,
                    "/v1/orders",
                    Some(json!({"kind": "manual", "currency": "USD",
                                "items": [{"product": "Seat", "amount": 100}]})),
                )
                .await;
            assert_eq!(
                status, 201,
                "{b}: a write right after hang-ups at {delay} µs: {body}"
            );
            let (status, body) = app
                .admin(
                    Method::POST,
                    "/admin/tenants",
                    Some(json!({"name": format!("Next {i}")})),
                )
                .await;
            assert_eq!(
                status, 201,
                "{b}: an operator write after hang-ups at {delay} µs: {body}"
            );
        }
        app.quiesce().await;

        // Every charge at the gateway is booked on the order that records it.
        let moved = stripe_emulator().money_moved(&stripe_key);
        assert!(
            !moved.payments.is_empty(),
            "{b}: the storm charged nothing, so it proves nothing"
        );
        for pi in &moved.payments {
            let booked = count(
                &app,
                "SELECT CAST(COALESCE(SUM(p.amount_minor), 0) AS BIGINT) FROM payments p \
                   JOIN orders o ON o.tenant_id = p.tenant_id AND o.id = p.order_id \
                  WHERE o.tenant_id = $1 AND o.gateway_reference = $2 AND p.status = 'approved'",
                &[&tenant, &pi.id],
            )
            .await;
            assert_eq!(
                booked, pi.amount_received,
                "{b}: charge {} is not booked",
                pi.id
            );
        }
        // Every refund at the gateway is booked under its reference, or held with it.
        for re in &moved.refunds {
            let booked = count(
                &app,
                "SELECT COUNT(*) FROM payments WHERE tenant_id = $1 AND status = 'refunded' AND external_ref = $2",
                &[&tenant, &re.id],
            )
            .await;
            let held = count(
                &app,
                "SELECT COUNT(*) FROM refund_reservations WHERE tenant_id = $1 AND gateway_refund_reference = $2",
                &[&tenant, &re.id],
            )
            .await;
            assert_eq!(
                booked + held,
                1,
                "{b}: gateway refund {} ({} {}) is neither booked nor held",
                re.id,
                re.amount,
                re.status
            );
        }
        let refunded_at_gateway: i64 = moved.refunds.iter().map(|r| r.amount).sum();
        let refunded_in_ledger = count(
            &app,
            "SELECT CAST(COALESCE(SUM(amount_minor), 0) AS BIGINT) FROM payments \
              WHERE tenant_id = $1 AND status = 'refunded' AND provider IS NOT NULL",
            &[&tenant],
        )
        .await;
        assert_eq!(refunded_in_ledger, refunded_at_gateway, "{b}: refunds");
        assert_eq!(
            count(&app, "SELECT COUNT(*) FROM refund_reservations WHERE tenant_id = $1 AND gateway_refund_reference IS NULL", &[&tenant]).await,
            0,
            "{b}: a hold without a gateway reference"
        );
        assert_eq!(
            count(&app, "SELECT COUNT(*) FROM orders WHERE tenant_id = $1 AND status IN ('pending', 'requires_action')", &[&tenant]).await,
            0,
            "{b}: an order left pending"
        );

        // Every 2xx a client saw is durable, and every key is replayable or free.
        let mut answered = 0;
        for s in &sent {
            if let Some((status, body)) = &s.answer
                && (200..300).contains(status)
            {
                answered += 1;
                let id = body["id"].as_str().unwrap_or_else(|| panic!("{b}: {body}"));
                let (table, scope) = if s.path == "/admin/tenants" {
                    ("tenants", "id")
                } else if s.path.contains("/refunds") {
                    ("payments", "tenant_id = $1 AND id")
                } else {
                    ("orders", "tenant_id = $1 AND id")
                };
                let sql = format!(
                    "SELECT COUNT(*) FROM {table} WHERE {scope} = ${}",
                    if scope == "id" { 1 } else { 2 }
                );
                let binds: Vec<&str> = if scope == "id" {
                    vec![id]
                } else {
                    vec![&tenant, id]
                };
                assert_eq!(
                    count(&app, &sql, &binds).await,
                    1,
                    "{b}: {} answered {status} with {id}, which is gone",
                    s.path
                );
            }
            let Some(k) = &s.key else { continue };
            let request = app
                .request(s.method.clone(), &s.path, Some(&s.token))
                .header("idempotency-key", k)
                .json(&s.body);
            let response = request.send().await.expect("retry");
            let status = response.status().as_u16();
            let replayed = response.headers().contains_key("idempotent-replayed");
            let body: Value = response.json().await.unwrap_or(Value::Null);
            assert!(
                (200..300).contains(&status) && replayed,
                "{b}: key {k} on {} is not replayable after the storm: {status} {body}",
                s.path
            );
            if let Some((first, first_body)) = &s.answer {
                assert_eq!(
                    (*first, first_body),
                    (status, &body),
                    "{b}: key {k} replays another answer"
                );
            }
        }
        assert!(
            answered > 0,
            "{b}: no request was answered before its hang-up; the sweep is too short"
        );
        app.assert_ledger_verified().await;
        app.finish().await;
    }
}

backend_test! {
    /// A key revocation whose request is dropped right after its commit: the
    /// key is refused at once on that instance, and on a second instance
    /// (PostgreSQL) as soon as the broadcast arrives, never after a cache TTL.
    async fn a_revocation_dropped_after_its_commit_still_evicts_the_key(app) {
        let b = app.backend;
        let second = match app.backend {
            "postgres" => Some(app.sibling(&app.database_url().expect("owned db")).await),
            _ => None,
        };
        let (tenant, _) = app.new_tenant("Revoked").await;
        let mut revocations = 0;
        for delay in DELAYS_US {
            let (status, issued) = app
                .admin(
                    Method::POST,
                    &format!("/admin/tenants/{tenant}/api-keys"),
                    Some(json!({})),
                )
                .await;
            assert_eq!(status, 201, "{b}: {issued}");
            let key = issued["key"].as_str().expect("key").to_string();
            let key_id = issued["id"].as_str().expect("key id").to_string();
            // Warm every instance's cache with the key.
            for instance in std::iter::once(&app).chain(second.as_ref()) {
                let (status, body) = instance
                    .tenant(&key, Method::GET, "/v1/balance", None)
                    .await;
                assert_eq!(status, 200, "{b}: {body}");
            }
            let raw = raw_request(
                &app,
                "DELETE",
                &format!("/admin/tenants/{tenant}/api-keys/{key_id}"),
                payhost_tests::ADMIN_TOKEN,
                None,
                None,
            );
            send_and_hang_up(addr(&app), raw, Duration::from_micros(*delay)).await;
            app.quiesce().await;
            // A request the client hung up on before the server read it may
            // never run; one that committed must have evicted the key.
            let revoked = count(
                &app,
                "SELECT COUNT(*) FROM api_keys WHERE id = $1 AND revoked_at IS NOT NULL",
                &[&key_id],
            )
            .await;
            if revoked == 0 {
                continue;
            }
            revocations += 1;
            let (status, body) = app.tenant(&key, Method::GET, "/v1/balance", None).await;
            assert_eq!(
                status, 401,
                "{b}: revoked key still accepted after a hang-up at {delay} µs: {body}"
            );
            if let Some(second) = &second {
                eventually("the second instance refuses the revoked key", || async {
                    let (status, body) =
                        second.tenant(&key, Method::GET, "/v1/balance", None).await;
                    if status == 401 {
                        Ok(())
                    } else {
                        Err(json!({"status": status, "body": body}))
                    }
                })
                .await;
            }
        }
        // A bodiless request whose hang-up hyper sees before routing it never
        // runs, so how many of the early ones run depends on timing.
        assert!(
            revocations > 0,
            "{b}: none of the dropped revocations ran at all"
        );
        if let Some(second) = second {
            second.finish().await;
        }
        app.finish().await;
    }
}
