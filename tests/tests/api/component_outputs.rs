//! Component outputs are untrusted input, and the manifest and the
//! gateway's own verdicts are honoured (issue 11, items 5, 10 and 11):
//! capped messages, refused oversized references, the per-call request
//! budget, refund amount mismatches, capabilities, refund references, and
//! tenant mistakes answered 4xx.

use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use payhost::runtime::contract::{CallContext, CaptureMode, Money, PaymentRequest};
use payhost::runtime::{
    CallError, MAX_MESSAGE_BYTES, Origin, ProviderSettings, Runtime, SandboxLimits,
};
use reqwest::Method;
use serde_json::{Value, json};

use payhost_tests::{
    HOSTILE_DEADLINE, TestApp, backend_test, captured_logs, load_component, stripe_emulator,
};

// ----- helpers ---------------------------------------------------------------

fn log_text() -> String {
    let logs = captured_logs().lock().expect("log buffer");
    String::from_utf8_lossy(&logs).into_owned()
}

/// Saves the hostile provider for USD (it has no credentials).
async fn save_hostile(app: &TestApp, key: &str) {
    let (status, body) = app
        .tenant(
            key,
            Method::PUT,
            "/v1/gateways/hostile",
            Some(json!({"credentials": {}, "currencies": ["USD"]})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

/// `POST /v1/checkouts` of one USD item.
async fn checkout(app: &TestApp, key: &str, amount: i64, extra: Value) -> (u16, Value) {
    let mut body = json!({"currency": "USD", "items": [{"amount": amount}]});
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
    app.tenant(key, Method::POST, "/v1/checkouts", Some(body))
        .await
}

/// A paid checkout's payment row id.
async fn paid(app: &TestApp, key: &str, amount: i64, payment_method: &str) -> (String, Value) {
    let (status, order) =
        checkout(app, key, amount, json!({"payment_method": payment_method})).await;
    assert_eq!(status, 201, "{order}");
    assert_eq!(order["status"], "paid", "{order}");
    let payment = order["ledger"][0]["id"]
        .as_str()
        .expect("payment row id")
        .to_string();
    (payment, order)
}

async fn refund(app: &TestApp, key: &str, payment: &str, body: Option<Value>) -> (u16, Value) {
    app.tenant(
        key,
        Method::POST,
        &format!("/v1/payments/{payment}/refunds"),
        body,
    )
    .await
}

async fn get(app: &TestApp, key: &str, path: String) -> Value {
    let (status, body) = app.tenant(key, Method::GET, &path, None).await;
    assert_eq!(status, 200, "{path}: {body}");
    body
}

/// The one audit event of `tenant` with `action`.
async fn the_audit_event(app: &TestApp, tenant: &str, action: &str) -> Value {
    let path = format!("/admin/audit?tenant_id={tenant}&action={action}");
    let (status, audit) = app.admin(Method::GET, &path, None).await;
    assert_eq!(status, 200, "{audit}");
    let items = audit["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "{audit}");
    items[0].clone()
}

async fn count(app: &TestApp, sql: &str, bind: &str) -> i64 {
    sqlx::query_scalar(sql)
        .bind(bind)
        .fetch_one(app.store.pool())
        .await
        .expect("count")
}

// ----- 10: messages and references are capped --------------------------------

backend_test! {
    async fn a_huge_error_message_is_capped_in_the_answer_and_the_log(app) {
        captured_logs();
        let (_, key) = app.new_tenant("Huge message shop").await;
        save_hostile(&app, &key).await;
        let (status, body) =
            checkout(&app, &key, 1000, json!({"payment_method": "huge-error"})).await;
        let shown: String = body.to_string().chars().take(300).collect();
        assert_eq!(status, 502, "[{}] {shown}", app.backend);
        assert_eq!(body["error"]["code"], "gateway_error");
        let message = body["error"]["message"].as_str().expect("message");
        assert!(
            message.len() <= MAX_MESSAGE_BYTES + 64,
            "[{}] the message is capped: {} bytes",
            app.backend,
            message.len()
        );
        assert!(
            message.contains("hostile") && message.contains("xxxx"),
            "{message}"
        );
        assert!(
            !message.contains('\u{1b}') && !message.contains('\n'),
            "control characters are stripped: {message:?}"
        );
        app.finish().await;
        let logs = log_text();
        assert!(
            logs.contains(&"x".repeat(200)),
            "the gateway error is logged (capped)"
        );
        assert!(
            !logs.contains(&"x".repeat(MAX_MESSAGE_BYTES + 1)),
            "no log line holds more of the message than the cap"
        );
    }
}

backend_test! {
    async fn an_oversized_reference_is_refused_and_the_order_kept_for_reconciliation(app) {
        let (tenant, key) = app.new_tenant("Huge reference shop").await;
        save_hostile(&app, &key).await;
        let (status, body) = checkout(
            &app,
            &key,
            1000,
            json!({"payment_method": "huge-reference"}),
        )
        .await;
        assert_eq!(status, 502, "[{}] {body}", app.backend);
        assert_eq!(body["error"]["code"], "provider_invalid_output");
        assert!(
            body.to_string().len() < 1024,
            "nothing of the reference is echoed"
        );
        // The component approved, so the gateway may hold money: the order
        // is not canceled, and no truncated reference was recorded.
        let pending = count(
            &app,
            "SELECT COUNT(*) FROM orders WHERE tenant_id = $1 AND status = 'pending' \
             AND gateway_reference IS NULL",
            &tenant,
        )
        .await;
        assert_eq!(pending, 1, "[{}]", app.backend);
        let rows = count(
            &app,
            "SELECT COUNT(*) FROM payments WHERE tenant_id = $1",
            &tenant,
        )
        .await;
        assert_eq!(rows, 0, "nothing booked");
        app.finish().await;
    }
}

// ----- 10: the per-call request budget ---------------------------------------

/// A loopback HTTP/1.1 server that keeps connections alive and counts
/// requests (not connections: the runtime's pool reuses connections).
struct RequestCounter {
    origin: String,
    requests: Arc<AtomicUsize>,
}

fn request_counter() -> RequestCounter {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let port = listener.local_addr().expect("addr").port();
    let requests = Arc::new(AtomicUsize::new(0));
    let counted = requests.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let counted = counted.clone();
            std::thread::spawn(move || {
                let mut pending = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    // These requests are GETs without a body: a head ends
                    // each one.
                    while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                        pending.drain(..end + 4);
                        counted.fetch_add(1, Ordering::SeqCst);
                        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                        if stream.write_all(ok).is_err() {
                            return;
                        }
                    }
                    match stream.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => pending.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    RequestCounter {
        origin: format!("http://127.0.0.1:{port}"),
        requests,
    }
}

#[tokio::test]
async fn a_looping_component_is_stopped_by_the_request_budget() {
    const BUDGET: u32 = 3;
    let runtime = Runtime::new(SandboxLimits {
        call_deadline: HOSTILE_DEADLINE * 4,
        max_requests_per_call: BUDGET,
        ..SandboxLimits::default()
    })
    .expect("engine");
    let target = request_counter();
    let provider = load_component(
        &runtime,
        "HOSTILE",
        ProviderSettings {
            allowed_origins: Some(vec![Origin::parse(&target.origin).expect("origin")]),
            ..ProviderSettings::default()
        },
    )
    .await
    .expect("hostile loads");
    let ctx = CallContext {
        credentials: vec![],
        base_url: None,
        idempotency_key: None,
    };
    let request = PaymentRequest {
        amount: Money {
            minor: 1000,
            currency: "USD".into(),
        },
        order_id: "ord_flood".into(),
        description: None,
        payment_method: Some(format!("flood:{}/v1/balance", target.origin)),
        capture: CaptureMode::Automatic,
        return_url: None,
        customer: None,
        metadata: vec![],
    };
    let err = provider
        .create_payment(ctx.clone(), request.clone())
        .await
        .expect_err("a flood cannot succeed");
    assert_eq!(err, CallError::RequestBudgetExceeded { limit: BUDGET });
    assert_eq!(err.code(), "provider_request_budget_exceeded");
    assert_eq!(
        target.requests.load(Ordering::SeqCst),
        BUDGET as usize,
        "the target received exactly the budget"
    );

    // The budget is per call: the next call gets its own.
    let err = provider
        .create_payment(ctx, request)
        .await
        .expect_err("a flood cannot succeed");
    assert_eq!(err, CallError::RequestBudgetExceeded { limit: BUDGET });
    assert_eq!(target.requests.load(Ordering::SeqCst), 2 * BUDGET as usize);
}

// ----- 10: a refund of another amount ----------------------------------------

backend_test! {
    async fn a_refund_of_another_amount_keeps_the_hold_with_its_reference_and_is_audited(app) {
        let (tenant, key) = app.new_tenant("Short refund shop").await;
        save_hostile(&app, &key).await;
        let (payment, order) = paid(&app, &key, 1000, "short-refund").await;

        let (status, body) = refund(&app, &key, &payment, None).await;
        assert_eq!(status, 502, "[{}] {body}", app.backend);
        assert_eq!(body["error"]["code"], "provider_refund_amount_mismatch");
        let hold = body["error"]["details"]["hold_id"]
            .as_str()
            .expect("the answer names the hold")
            .to_string();

        // Nothing booked at the requested amount; the hold stays, with the
        // gateway's refund reference for reconciliation.
        let read = get(
            &app,
            &key,
            format!("/v1/orders/{}", order["id"].as_str().expect("id")),
        )
        .await;
        assert_eq!(read["ledger"].as_array().map(Vec::len), Some(1), "{read}");
        let reference: Option<String> = sqlx::query_scalar(
            "SELECT gateway_refund_reference FROM refund_reservations WHERE id = $1",
        )
        .bind(&hold)
        .fetch_one(app.store.pool())
        .await
        .expect("the hold is kept");
        assert_eq!(reference, Some(format!("re_hostile_{hold}")));
        let (status, again) = refund(&app, &key, &payment, None).await;
        assert_eq!(status, 422, "the held amount still counts: {again}");
        assert_eq!(again["error"]["code"], "refund_exceeds_paid");

        // The operator sees it.
        let details = &the_audit_event(&app, &tenant, "refund.amount_mismatch").await["details"];
        assert_eq!(details["hold_id"], hold.as_str());
        assert_eq!(details["requested"]["amount"], 1000);
        assert_eq!(details["reported"]["amount"], 999);
        assert_eq!(
            details["gateway_refund_reference"],
            format!("re_hostile_{hold}")
        );
        app.finish().await;
    }
}

backend_test! {
    async fn a_payment_of_another_amount_is_not_booked_and_is_audited(app) {
        let (tenant, key) = app.new_tenant("Short payment shop").await;
        save_hostile(&app, &key).await;
        let (status, body) =
            checkout(&app, &key, 1000, json!({"payment_method": "short-payment"})).await;
        assert_eq!(status, 502, "[{}] {body}", app.backend);
        assert_eq!(body["error"]["code"], "provider_amount_mismatch");
        // Kept pending with the gateway's reference, for reconciliation.
        let pending = count(
            &app,
            "SELECT COUNT(*) FROM orders WHERE tenant_id = $1 AND status = 'pending' \
             AND gateway_reference LIKE 'short-pay-%'",
            &tenant,
        )
        .await;
        assert_eq!(pending, 1, "[{}]", app.backend);
        let details = &the_audit_event(&app, &tenant, "payment.amount_mismatch").await["details"];
        assert_eq!(details["requested"]["amount"], 1000, "{details}");
        assert_eq!(details["reported"]["amount"], 999);

        // A read of that payment that answers for another one is not booked.
        let id: String = sqlx::query_scalar(
            "SELECT id FROM orders WHERE tenant_id = $1 AND gateway_reference LIKE 'short-pay-%'",
        )
        .bind(&tenant)
        .fetch_one(app.store.pool())
        .await
        .expect("the pending order");
        let (status, body) = app
            .admin(reqwest::Method::POST, &format!("/admin/orders/{id}/reconcile"), None)
            .await;
        assert_eq!(status, 502, "[{}] {body}", app.backend);
        assert_eq!(body["error"]["code"], "provider_bad_reference", "{body}");
        let read = get(&app, &key, format!("/v1/orders/{id}")).await;
        assert_eq!(read["status"], "pending", "[{}] {read}", app.backend);
        assert_eq!(read["ledger"].as_array().map(Vec::len), Some(0), "{read}");
        app.finish().await;
    }
}

// ----- 11: capabilities -------------------------------------------------------

backend_test! {
    async fn operations_the_manifest_does_not_claim_are_refused_before_the_call(app) {
        let (tenant, key) = app.new_tenant("No capabilities shop").await;
        save_hostile(&app, &key).await;
        let (payment, _) = paid(&app, &key, 1000, "ok").await;

        // The hostile component would refund any amount; the host does not ask.
        let (status, body) = refund(&app, &key, &payment, Some(json!({"amount": 400}))).await;
        assert_eq!(status, 422, "[{}] {body}", app.backend);
        assert_eq!(body["error"]["code"], "capability_not_supported");
        assert_eq!(body["error"]["details"]["capability"], "partial-refund");
        let held = count(
            &app,
            "SELECT COUNT(*) FROM refund_reservations WHERE tenant_id = $1",
            &tenant,
        )
        .await;
        assert_eq!(held, 0, "no hold left behind");

        // A full refund needs no capability.
        let (status, row) = refund(&app, &key, &payment, None).await;
        assert_eq!(status, 201, "{row}");
        assert_eq!(row["amount"], 1000);

        // A manual capture needs `capture`.
        let (status, body) = checkout(
            &app,
            &key,
            500,
            json!({"payment_method": "ok", "capture": "manual"}),
        )
        .await;
        assert_eq!(status, 422, "{body}");
        assert_eq!(body["error"]["code"], "capability_not_supported");
        assert_eq!(body["error"]["details"]["capability"], "capture");
        app.finish().await;
    }
}

// ----- 11: a refund row carries the refund's reference -----------------------

backend_test! {
    async fn a_stripe_refund_row_records_the_refund_reference(app) {
        let (_, key) = app.new_tenant("Refund reference shop").await;
        let stripe_key = app.save_stripe(&key, 1, &["USD"]).await;
        let (payment, order) = paid(&app, &key, 1000, "pm_card_visa").await;
        let payment_intent = order["gateway_reference"].as_str().expect("pi").to_string();

        let (status, row) = refund(&app, &key, &payment, Some(json!({"amount": 300}))).await;
        assert_eq!(status, 201, "[{}] {row}", app.backend);
        let reference = row["gateway_reference"]
            .as_str()
            .expect("reference")
            .to_string();
        assert!(reference.starts_with("re_"), "{row}");
        assert_eq!(row["refund_of"], payment.as_str());

        // The emulator knows this refund, of this payment and amount.
        let recorded: Value = reqwest::Client::new()
            .get(format!(
                "{}/v1/refunds/{reference}",
                stripe_emulator().base_url()
            ))
            .bearer_auth(&stripe_key)
            .send()
            .await
            .expect("emulator answers")
            .json()
            .await
            .expect("refund JSON");
        assert_eq!(recorded["id"], reference.as_str(), "{recorded}");
        assert_eq!(recorded["payment_intent"], payment_intent.as_str());
        assert_eq!(recorded["amount"], 300);

        let read = get(
            &app,
            &key,
            format!("/v1/payments/{}", row["id"].as_str().expect("id")),
        )
        .await;
        assert_eq!(
            read["gateway_reference"],
            reference.as_str(),
            "stored as answered"
        );
        app.finish().await;
    }
}

// ----- 5: the tenant's mistakes are 4xx --------------------------------------

backend_test! {
    async fn a_request_the_gateway_refuses_as_invalid_is_a_422(app) {
        let (tenant, key) = app.new_tenant("Invalid request shop").await;
        app.save_stripe(&key, 1, &["USD"]).await;
        for (amount, extra, stripe_code) in [
            (
                1000,
                json!({"payment_method": "pm_no_such_method"}),
                "resource_missing",
            ),
            (
                100_000_000,
                json!({"payment_method": "pm_card_visa"}),
                "amount_too_large",
            ),
            (
                1000,
                json!({"payment_method": "pm_card_visa", "return_url": "not a url"}),
                "url_invalid",
            ),
        ] {
            let (status, body) = checkout(&app, &key, amount, extra).await;
            assert_eq!(status, 422, "[{}] {stripe_code}: {body}", app.backend);
            assert_eq!(body["error"]["code"], "gateway_invalid_request", "{body}");
            let message = body["error"]["message"].as_str().expect("message");
            assert!(message.contains(stripe_code), "{message}");
            assert!(message.len() <= MAX_MESSAGE_BYTES + 64);
        }
        // Nothing was charged: every order is canceled.
        let live = count(
            &app,
            "SELECT COUNT(*) FROM orders WHERE tenant_id = $1 AND status <> 'canceled'",
            &tenant,
        )
        .await;
        assert_eq!(live, 0, "[{}]", app.backend);
        app.finish().await;
    }
}

backend_test! {
    async fn a_credential_with_control_characters_is_refused_at_save(app) {
        let (_, key) = app.new_tenant("Broken key shop").await;
        for bad in [
            "sk_test_abc\ndef",
            "sk_test_abc\r\nX-Injected: 1",
            "sk_test\0",
        ] {
            let (status, body) = app
                .tenant(
                    &key,
                    Method::PUT,
                    "/v1/gateways/stripe",
                    Some(json!({"credentials": {"secret-key": bad}, "currencies": ["USD"]})),
                )
                .await;
            assert_eq!(status, 422, "[{}] {body}", app.backend);
            assert_eq!(body["error"]["code"], "validation_failed");
            assert!(
                body["error"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("secret-key") && !m.contains("sk_test")),
                "names the field, never the value: {body}"
            );
        }
        let listed = get(&app, &key, "/v1/gateways".into()).await;
        assert_eq!(listed["items"], json!([]), "nothing was stored");
        app.finish().await;
    }
}
