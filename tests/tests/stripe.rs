//! The Stripe component, through the host runtime, against the Stripe emulator
//! on loopback: credentials, payments, capture, cancel, refunds, errors,
//! idempotency and webhook verification.

use payhost::emulators::stripe::sign_payload;
use payhost::runtime::contract::{
    CallContext, CaptureMode, Credential, Decline, EventKind, Money, NextAction, PaymentRequest,
    PaymentState, ProviderError, RefundRequest, RefundStatus, WebhookError, WebhookRequest,
};
use payhost::runtime::{CallError, ProviderSettings, send_gate};
use payhost_tests::{
    rand_u64, stripe, stripe_bytes, stripe_calls_keyed, stripe_emulator, stripe_test_key,
    tight_runtime,
};

fn ctx(key: &str, idempotency: Option<&str>) -> CallContext {
    CallContext {
        credentials: vec![Credential {
            name: "secret-key".into(),
            value: key.into(),
        }],
        base_url: None,
        idempotency_key: idempotency.map(str::to_string),
    }
}

fn unique(prefix: &str) -> String {
    format!("{prefix}_{:016x}", rand_u64())
}

fn payment(amount: u64, method: &str, capture: CaptureMode) -> PaymentRequest {
    PaymentRequest {
        amount: Money {
            minor: amount,
            currency: "USD".into(),
        },
        order_id: unique("ord"),
        description: Some("test order".into()),
        payment_method: Some(method.into()),
        capture,
        return_url: Some("https://shop.example/return".into()),
        customer: None,
        metadata: vec![],
    }
}

#[tokio::test]
async fn valid_key_validates_and_invalid_key_is_rejected() {
    let stripe = stripe().await;
    let before = stripe_emulator()
        .calls()
        .iter()
        .filter(|c| c.path == "/v1/balance")
        .count();
    stripe
        .validate_credentials(ctx(&stripe_test_key(), None))
        .await
        .expect("a test key is valid");
    let err = stripe
        .validate_credentials(ctx("sk_live_not_an_emulator_key", None))
        .await
        .expect_err("a live key is rejected by the emulator");
    match err {
        CallError::Gateway(ProviderError::InvalidCredentials(message)) => {
            assert!(
                !message.contains("sk_live_not_an_emulator_key"),
                "the key must not be echoed: {message}"
            );
        }
        other => panic!("expected InvalidCredentials, got {other:?}"),
    }
    let after = stripe_emulator()
        .calls()
        .iter()
        .filter(|c| c.path == "/v1/balance")
        .count();
    assert!(after >= before + 2, "both validations reached the emulator");
}

#[tokio::test]
async fn approved_payment() {
    let stripe = stripe().await;
    let p = stripe
        .create_payment(
            ctx(&stripe_test_key(), Some(&unique("idem"))),
            payment(2500, "pm_card_visa", CaptureMode::Automatic),
        )
        .await
        .expect("approved");
    assert!(p.reference.starts_with("pi_"), "{}", p.reference);
    assert_eq!(p.state, PaymentState::Approved);
    assert_eq!(
        p.amount,
        Money {
            minor: 2500,
            currency: "USD".into()
        }
    );
}

#[tokio::test]
async fn declined_payment_surfaces_the_decline_code() {
    let stripe = stripe().await;
    let p = stripe
        .create_payment(
            ctx(&stripe_test_key(), Some(&unique("idem"))),
            payment(
                2500,
                "pm_card_visa_chargeDeclinedInsufficientFunds",
                CaptureMode::Automatic,
            ),
        )
        .await
        .expect("a decline is an outcome, not a call failure");
    match p.state {
        PaymentState::Declined(Decline { code, .. }) => assert_eq!(code, "insufficient_funds"),
        other => panic!("expected Declined, got {other:?}"),
    }
}

#[tokio::test]
async fn requires_action_surfaces_the_redirect() {
    let stripe = stripe().await;
    let p = stripe
        .create_payment(
            ctx(&stripe_test_key(), Some(&unique("idem"))),
            payment(
                2500,
                "pm_card_threeDSecure2Required",
                CaptureMode::Automatic,
            ),
        )
        .await
        .expect("requires action");
    match p.state {
        PaymentState::RequiresAction(NextAction::Redirect(url)) => {
            assert!(
                url.starts_with(&stripe_emulator().base_url()),
                "redirect to the emulator 3DS page: {url}"
            );
            assert!(url.contains(&p.reference), "{url}");
        }
        other => panic!("expected RequiresAction(Redirect), got {other:?}"),
    }
}

#[tokio::test]
async fn manual_capture_then_capture() {
    let stripe = stripe().await;
    let key = stripe_test_key();
    let p = stripe
        .create_payment(
            ctx(&key, Some(&unique("idem"))),
            payment(4000, "pm_card_visa", CaptureMode::Manual),
        )
        .await
        .expect("authorized");
    assert_eq!(p.state, PaymentState::Authorized);
    let captured = stripe
        .capture(ctx(&key, Some(&unique("idem"))), p.reference.clone(), None)
        .await
        .expect("captured");
    assert_eq!(captured.state, PaymentState::Approved);
    assert_eq!(captured.reference, p.reference);
}

#[tokio::test]
async fn cancel_an_authorization() {
    let stripe = stripe().await;
    let key = stripe_test_key();
    let p = stripe
        .create_payment(
            ctx(&key, Some(&unique("idem"))),
            payment(4000, "pm_card_visa", CaptureMode::Manual),
        )
        .await
        .expect("authorized");
    let canceled = stripe
        .cancel(ctx(&key, Some(&unique("idem"))), p.reference.clone())
        .await
        .expect("canceled");
    assert_eq!(canceled.state, PaymentState::Canceled);
    let read = stripe
        .get_payment(ctx(&key, None), p.reference.clone())
        .await
        .expect("readable");
    assert_eq!(read.state, PaymentState::Canceled);
}

#[tokio::test]
async fn partial_then_full_refund_and_no_more() {
    let stripe = stripe().await;
    let key = stripe_test_key();
    let p = stripe
        .create_payment(
            ctx(&key, Some(&unique("idem"))),
            payment(1000, "pm_card_visa", CaptureMode::Automatic),
        )
        .await
        .expect("approved");
    let refund = |amount: Option<u64>| RefundRequest {
        payment_reference: p.reference.clone(),
        amount: amount.map(|minor| Money {
            minor,
            currency: "USD".into(),
        }),
        reason: None,
        refund_id: unique("rfd"),
    };
    let partial = stripe
        .refund(ctx(&key, Some(&unique("idem"))), refund(Some(300)))
        .await
        .expect("partial refund");
    assert!(partial.reference.starts_with("re_"));
    assert_eq!(partial.status, RefundStatus::Succeeded);
    assert_eq!(partial.amount.minor, 300);
    let rest = stripe
        .refund(ctx(&key, Some(&unique("idem"))), refund(None))
        .await
        .expect("refund of the remainder");
    assert_eq!(rest.amount.minor, 700);
    let err = stripe
        .refund(ctx(&key, Some(&unique("idem"))), refund(Some(1)))
        .await
        .expect_err("nothing left to refund");
    assert!(
        matches!(err, CallError::Gateway(ProviderError::InvalidRequest(_))),
        "{err:?}"
    );
}

#[tokio::test]
async fn retry_with_the_same_idempotency_key_never_charges_twice() {
    let stripe = stripe().await;
    let key = stripe_test_key();
    let idem = unique("idem");
    let request = payment(1500, "pm_card_visa", CaptureMode::Automatic);
    let first = stripe
        .create_payment(ctx(&key, Some(&idem)), request.clone())
        .await
        .expect("first");
    let second = stripe
        .create_payment(ctx(&key, Some(&idem)), request)
        .await
        .expect("retry");
    assert_eq!(first.reference, second.reference);
    let posts: Vec<_> = stripe_emulator()
        .calls()
        .into_iter()
        .filter(|c| {
            c.method == "POST"
                && c.idempotency_key
                    .as_deref()
                    .is_some_and(|k| k.contains(&idem))
        })
        .collect();
    assert_eq!(
        posts.len(),
        2,
        "both attempts carried a key derived from ours"
    );
}

#[tokio::test]
async fn gateway_failures_map_to_retriable_errors() {
    let stripe = stripe().await;
    let key = stripe_test_key();
    let err = stripe
        .create_payment(
            ctx(&key, Some(&unique("idem"))),
            payment(1000, "pm_emulator_unavailable", CaptureMode::Automatic),
        )
        .await
        .expect_err("5xx");
    assert!(
        matches!(err, CallError::Gateway(ProviderError::Unavailable(_))),
        "{err:?}"
    );
    let err = stripe
        .create_payment(
            ctx(&key, Some(&unique("idem"))),
            payment(1000, "pm_emulator_rate_limited", CaptureMode::Automatic),
        )
        .await
        .expect_err("429");
    assert_eq!(err, CallError::Gateway(ProviderError::RateLimited(Some(2))));
}

const SECRET: &str = "whsec_test_secret";
const NOW: i64 = 1_750_000_000;

fn event_body() -> Vec<u8> {
    serde_json::json!({
        "id": "evt_123",
        "object": "event",
        "type": "payment_intent.succeeded",
        "created": NOW,
        "data": {"object": {
            "id": "pi_123", "object": "payment_intent", "amount": 1000,
            "amount_received": 1000, "currency": "usd", "status": "succeeded",
            "metadata": {"order_id": "ord_42"}
        }}
    })
    .to_string()
    .into_bytes()
}

fn webhook(
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    secret: &str,
    now: i64,
) -> WebhookRequest {
    WebhookRequest {
        headers,
        body,
        secret: secret.into(),
        received_at: now,
    }
}

fn signed(body: &[u8], secret: &str, t: i64) -> Vec<(String, String)> {
    vec![("stripe-signature".into(), sign_payload(secret, t, body))]
}

#[tokio::test]
async fn valid_webhook_is_normalized() {
    let stripe = stripe().await;
    let body = event_body();
    let events = stripe
        .parse_webhook(
            no_credentials(),
            webhook(signed(&body, SECRET, NOW), body, SECRET, NOW + 5),
        )
        .await
        .expect("valid webhook");
    assert_eq!(events.len(), 1);
    let e = &events[0];
    assert_eq!(e.id, "evt_123");
    assert_eq!(e.kind, EventKind::PaymentSucceeded);
    assert_eq!(e.payment_reference.as_deref(), Some("pi_123"));
    assert_eq!(e.order_id.as_deref(), Some("ord_42"));
    assert_eq!(
        e.amount,
        Some(Money {
            minor: 1000,
            currency: "USD".into()
        })
    );
}

/// A context with no credentials: the component cannot ask the gateway
/// anything, so a valid delivery must need no network at all.
fn no_credentials() -> CallContext {
    CallContext {
        credentials: vec![],
        base_url: None,
        idempotency_key: None,
    }
}

/// Pays through the component and returns the emulator's
/// `payment_intent.succeeded` event for it, exactly as it is delivered.
async fn delivered_event(key: &str) -> (Vec<u8>, i64) {
    let stripe = stripe().await;
    let paid = stripe
        .create_payment(
            ctx(key, Some(&unique("idem"))),
            payment(1800, "pm_card_visa", CaptureMode::Automatic),
        )
        .await
        .expect("approved");
    let event = stripe_emulator()
        .events()
        .into_iter()
        .find(|e| {
            e["type"] == "payment_intent.succeeded" && e["data"]["object"]["id"] == paid.reference
        })
        .expect("the emulator emitted the success event");
    let created = event["created"].as_i64().expect("created");
    (event.to_string().into_bytes(), created)
}

/// How often the emulator was asked for the event in `body`.
fn times_fetched(body: &[u8]) -> usize {
    let event: serde_json::Value = serde_json::from_slice(body).expect("event JSON");
    let path = format!("/v1/events/{}", event["id"].as_str().expect("event id"));
    stripe_emulator()
        .calls()
        .iter()
        .filter(|c| c.path == path)
        .count()
}

#[tokio::test]
async fn bad_webhooks_are_rejected_with_distinct_errors() {
    let stripe = stripe().await;
    let key = stripe_test_key();
    let (body, t) = delivered_event(&key).await;
    let parse = |headers, body, now| {
        stripe.parse_webhook(ctx(&key, None), webhook(headers, body, SECRET, now))
    };

    let genuine = parse(signed(&body, SECRET, t), body.clone(), t + 5).await;
    assert_eq!(genuine.expect("genuine and signed").len(), 1);

    // The amount was changed after Stripe signed the body.
    let tampered = String::from_utf8(body.clone())
        .unwrap()
        .replace("\"amount_received\":1800", "\"amount_received\":18");
    assert_ne!(tampered.as_bytes(), &body[..]);
    let tampered_err = parse(signed(&body, SECRET, t), tampered.into_bytes(), t)
        .await
        .expect_err("tampered body");

    // The genuine body, signed with a secret the host does not hold.
    let wrong_secret_err = parse(signed(&body, "whsec_someone_else", t), body.clone(), t)
        .await
        .expect_err("wrong secret");

    let stale_err = parse(signed(&body, SECRET, t - 301), body.clone(), t)
        .await
        .expect_err("stale timestamp");

    let missing_err = parse(vec![], body.clone(), t)
        .await
        .expect_err("missing header");

    assert_eq!(tampered_err, CallError::Gateway(WebhookError::TamperedBody));
    assert_eq!(
        wrong_secret_err,
        CallError::Gateway(WebhookError::WrongSecret)
    );
    assert!(
        times_fetched(&body) >= 2,
        "both mismatches asked the emulator for the event"
    );
    assert_eq!(
        stale_err,
        CallError::Gateway(WebhookError::TimestampOutOfTolerance(301))
    );
    assert_eq!(
        missing_err,
        CallError::Gateway(WebhookError::MissingSignature)
    );
}

#[tokio::test]
async fn a_forged_event_is_tampered_and_an_unanswerable_mismatch_stays_undetermined() {
    let stripe = stripe().await;
    let key = stripe_test_key();
    let (body, t) = delivered_event(&key).await;

    // An event id Stripe never issued, signed with a guessed secret.
    let forged = String::from_utf8(body.clone()).unwrap().replacen(
        "\"id\":\"evt_",
        "\"id\":\"evt_forged",
        1,
    );
    let forged_err = stripe
        .parse_webhook(
            ctx(&key, None),
            webhook(
                signed(forged.as_bytes(), "whsec_guess", t),
                forged.into_bytes(),
                SECRET,
                t,
            ),
        )
        .await
        .expect_err("forged event");
    assert_eq!(forged_err, CallError::Gateway(WebhookError::TamperedBody));

    // Without credentials nobody can be asked: the plain mismatch.
    let before = times_fetched(&body);
    let undetermined = stripe
        .parse_webhook(
            no_credentials(),
            webhook(
                signed(&body, "whsec_someone_else", t),
                body.clone(),
                SECRET,
                t,
            ),
        )
        .await
        .expect_err("wrong secret, no credentials");
    assert_eq!(
        undetermined,
        CallError::Gateway(WebhookError::SignatureMismatch)
    );
    assert_eq!(
        times_fetched(&body),
        before,
        "no credentials, no gateway call"
    );
}

/// A checkout's first call waits at its send gate for the order's commit.
/// Held there until its deadline, the call sends nothing, and sealing the
/// gate afterwards keeps it so, even once the gate is opened; with the gate
/// open, the same call charges.
#[tokio::test]
async fn a_call_held_at_its_gate_past_the_deadline_sends_nothing() {
    let settings = ProviderSettings {
        base_url: Some(stripe_emulator().base_url()),
        ..ProviderSettings::default()
    };
    let provider = tight_runtime()
        .load("bundled:stripe", stripe_bytes(), settings)
        .await
        .expect("stripe loads");
    let key = stripe_test_key();
    let idempotency = unique("held");
    let request = payment(1000, "pm_card_visa", CaptureMode::Automatic);
    let sent = || stripe_calls_keyed(&idempotency);

    let (opener, gate) = send_gate();
    let held = provider
        .create_payment_after(
            Some(gate.clone()),
            ctx(&key, Some(&idempotency)),
            request.clone(),
        )
        .await;
    assert!(matches!(held, Err(CallError::Deadline { .. })), "{held:?}");
    assert!(gate.seal_if_unused(), "no request passed the gate");
    opener.open();
    assert_eq!(sent(), 0);

    let (opener, gate) = send_gate();
    opener.open();
    let paid = provider
        .create_payment_after(Some(gate.clone()), ctx(&key, Some(&idempotency)), request)
        .await
        .expect("approved");
    assert!(matches!(paid.state, PaymentState::Approved), "{paid:?}");
    assert!(!gate.seal_if_unused(), "its request passed the gate");
    assert_eq!(sent(), 1);
}

/// An order remembers which credentials its gateway call used (a keyed
/// fingerprint). After the master key is rotated and the tenant re-saves the
/// same Stripe key (now sealed under the new master key), the stored
/// fingerprint still matches; another key never does.
#[tokio::test]
async fn credential_fingerprints_survive_a_master_key_rotation() {
    use payhost::gateways::{GatewayInput, Gateways, Vault};
    let db = payhost::store::testing::TestDb::sqlite().await.expect("db");
    let store = db.store().clone();
    let tenant = payhost::store::testing::tenant(&store, "Rotating shop").await;
    let (k1, k2) = (Vault::generate_key(), Vault::generate_key());
    let vault = |active: &str, keys: &[(&str, &String)]| {
        let keys = keys
            .iter()
            .map(|(id, k)| (id.to_string(), Vault::decode_key(id, k).expect("key")))
            .collect();
        std::sync::Arc::new(Vault::new(active, keys).expect("vault"))
    };
    let before = Gateways::new(
        store.clone(),
        vault("k1", &[("k1", &k1)]),
        payhost_tests::registry().await,
    );
    let after = Gateways::new(
        store.clone(),
        vault("k2", &[("k1", &k1), ("k2", &k2)]),
        payhost_tests::registry().await,
    );
    let actor = payhost::audit::Actor::operator("test").expect("actor");
    let save = |gateways: &Gateways, secret: String| {
        let gateways = gateways.clone();
        let (actor, tenant) = (actor.clone(), tenant.clone());
        async move {
            let input = GatewayInput {
                credentials: [("secret-key".to_string(), secret)].into(),
                webhook_secret: None,
                priority: 1,
                currencies: vec![payhost::store::Currency::parse("USD").expect("USD")],
                enabled: true,
                max_gateways: None,
            };
            gateways
                .save(&actor, &tenant, "stripe", input)
                .await
                .expect("saved");
        }
    };
    let secret = stripe_test_key();
    save(&before, secret.clone()).await;
    let first = before.open(&tenant, "stripe").await.expect("open");
    let stored = first.credentials_fingerprint.clone();
    assert!(stored.starts_with("k1:"), "{stored}");
    assert!(!stored.contains(&secret));

    book_manual(&store, &tenant, 500).await;
    // Rotated: the same key is sealed under k2 now.
    save(&after, secret.clone()).await;
    let resaved = after.open(&tenant, "stripe").await.expect("open");
    assert!(resaved.credentials_fingerprint.starts_with("k2:"));
    assert!(after.same_credentials(&tenant, "stripe", &resaved, &stored));

    // Another Stripe account's key is not the same credentials.
    save(&after, stripe_test_key()).await;
    let other = after.open(&tenant, "stripe").await.expect("open");
    assert!(!after.same_credentials(&tenant, "stripe", &other, &stored));
    // Nor is anything under a master key this host no longer holds.
    assert!(!before.same_credentials(
        &tenant,
        "stripe",
        &resaved,
        &resaved.credentials_fingerprint
    ));
    // The rotation touches no money: rows booked before and after it fold
    // into the projections exactly.
    for amount in [700, 300] {
        book_manual(&store, &tenant, amount).await;
    }
    let report = payhost::ledger::verify_projections(&store, None)
        .await
        .expect("verify");
    assert!(report.is_clean(), "{:#?}", report.differences);
    assert_eq!(report.balances_checked, 1);
    db.cleanup().await;
}

/// Books one approved manual USD row of `amount` for `tenant`.
async fn book_manual(
    store: &payhost::store::Store,
    tenant: &payhost::store::TenantId,
    amount: i64,
) {
    use payhost::ledger::{self, NewLedgerRow, NewOrder, OrderLine, Source};
    let usd = payhost::store::Currency::parse("USD").expect("USD");
    let order = ledger::create_order(
        store,
        tenant,
        &NewOrder::manual(usd, vec![OrderLine::product(amount, None)]),
    )
    .await
    .expect("order");
    ledger::book_order_rows(
        store,
        tenant,
        &order.id,
        &[NewLedgerRow::product(
            payhost::store::Money::new(amount, usd),
            None,
            Source::Manual,
        )],
    )
    .await
    .expect("book");
}

/// A loopback webhook receiver: records each delivery (its
/// `Stripe-Signature` and body) and answers 500 to the first `fail_first`.
struct Receiver {
    url: String,
    got: std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>,
}

async fn receiver(fail_first: usize) -> Receiver {
    use axum::http::{HeaderMap, StatusCode};
    let got: std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>> = Default::default();
    let seen = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let seen = seen.clone();
            async move {
                let signature = headers
                    .get("stripe-signature")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                let mut seen = seen.lock().expect("lock");
                seen.push((signature, body));
                if seen.len() <= fail_first {
                    StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    StatusCode::OK
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Receiver { url, got }
}

/// A form-encoded call to the emulator's Stripe API with `key`.
async fn emulator_call(
    method: reqwest::Method,
    path: &str,
    key: &str,
    form: &[(&str, &str)],
) -> (u16, serde_json::Value) {
    let mut request = reqwest::Client::new()
        .request(method, format!("{}{path}", stripe_emulator().base_url()))
        .bearer_auth(key);
    if !form.is_empty() {
        let body: String = form
            .iter()
            .map(|(k, v)| format!("{}={}", urlencode(k), urlencode(v)))
            .collect::<Vec<_>>()
            .join("&");
        request = request
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
    }
    let response = request.send().await.expect("emulator answers");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn webhook_endpoints_are_registered_like_stripes() {
    use reqwest::Method;
    let key = stripe_test_key();
    let url = "https://shop.example/hooks";
    let (status, created) = emulator_call(
        Method::POST,
        "/v1/webhook_endpoints",
        &key,
        &[
            ("url", url),
            ("enabled_events[]", "payment_intent.succeeded"),
            ("enabled_events[]", "charge.refunded"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{created}");
    assert_eq!(created["object"], "webhook_endpoint");
    assert_eq!(created["url"], url);
    assert_eq!(
        created["enabled_events"],
        serde_json::json!(["payment_intent.succeeded", "charge.refunded"])
    );
    let id = created["id"].as_str().expect("id").to_owned();
    assert!(id.starts_with("we_"), "{id}");
    assert!(
        created["secret"]
            .as_str()
            .is_some_and(|s| s.starts_with("whsec_")),
        "{created}"
    );

    // The secret is shown once: never in a list or a read.
    let (status, list) = emulator_call(Method::GET, "/v1/webhook_endpoints", &key, &[]).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["object"], "list");
    assert_eq!(list["data"].as_array().map(Vec::len), Some(1), "{list}");
    assert_eq!(list["data"][0]["id"], id.as_str());
    assert!(list["data"][0].get("secret").is_none(), "{list}");
    let path = format!("/v1/webhook_endpoints/{id}");
    let (status, read) = emulator_call(Method::GET, &path, &key, &[]).await;
    assert_eq!(status, 200, "{read}");
    assert!(read.get("secret").is_none(), "{read}");
    // Another account does not see it.
    let (_, other) = emulator_call(
        Method::GET,
        "/v1/webhook_endpoints",
        &stripe_test_key(),
        &[],
    )
    .await;
    assert_eq!(other["data"], serde_json::json!([]));

    let (status, deleted) = emulator_call(Method::DELETE, &path, &key, &[]).await;
    assert_eq!(status, 200, "{deleted}");
    assert_eq!(deleted["deleted"], true);
    let (_, list) = emulator_call(Method::GET, "/v1/webhook_endpoints", &key, &[]).await;
    assert_eq!(list["data"], serde_json::json!([]));
    let (status, gone) = emulator_call(Method::DELETE, &path, &key, &[]).await;
    assert_eq!(status, 404, "{gone}");
    assert_eq!(gone["error"]["code"], "resource_missing");

    let (status, missing) =
        emulator_call(Method::POST, "/v1/webhook_endpoints", &key, &[("url", url)]).await;
    assert_eq!(status, 400, "{missing}");
    assert_eq!(missing["error"]["code"], "parameter_missing");
    assert_eq!(missing["error"]["param"], "enabled_events");
}

#[tokio::test]
async fn deliveries_are_signed_and_retried_until_accepted() {
    use reqwest::Method;
    let key = stripe_test_key();
    let receiver = receiver(2).await;
    let (status, created) = emulator_call(
        Method::POST,
        "/v1/webhook_endpoints",
        &key,
        &[
            ("url", &receiver.url),
            ("enabled_events[]", "payment_intent.succeeded"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{created}");
    let secret = created["secret"].as_str().expect("secret").to_owned();
    let paid = stripe()
        .await
        .create_payment(
            ctx(&key, None),
            payment(1000, "pm_card_visa", CaptureMode::Automatic),
        )
        .await
        .expect("approved");

    let got = payhost_tests::eventually("three attempts, the last accepted", || async {
        let got = receiver.got.lock().expect("lock").clone();
        if got.len() >= 3 {
            Ok(got)
        } else {
            Err(serde_json::json!(got.len()))
        }
    })
    .await;
    let first: serde_json::Value = serde_json::from_str(&got[0].1).expect("event JSON");
    assert_eq!(first["type"], "payment_intent.succeeded");
    assert_eq!(first["data"]["object"]["id"], paid.reference.as_str());
    for (signature, body) in &got {
        let event: serde_json::Value = serde_json::from_str(body).expect("event JSON");
        // Only the enabled type, and the same event on every attempt.
        assert_eq!(event["id"], first["id"], "{body}");
        let t: i64 = signature
            .split(',')
            .find_map(|p| p.strip_prefix("t="))
            .and_then(|t| t.parse().ok())
            .expect("t=");
        assert_eq!(signature, &sign_payload(&secret, t, body.as_bytes()));
    }
    // Accepted on the third attempt: no fourth.
    let settled = receiver.got.lock().expect("lock").len();
    assert_eq!(settled, 3);
}

/// A receiver subscribed (for `events`) to the account of a fresh key; the
/// key, the endpoint's secret and the receiver.
async fn subscribed(events: &[&str], fail_first: usize) -> (String, String, Receiver) {
    let key = stripe_test_key();
    let receiver = receiver(fail_first).await;
    let mut form = vec![("url", receiver.url.as_str())];
    form.extend(events.iter().map(|e| ("enabled_events[]", *e)));
    let (status, created) =
        emulator_call(reqwest::Method::POST, "/v1/webhook_endpoints", &key, &form).await;
    assert_eq!(status, 200, "{created}");
    let secret = created["secret"].as_str().expect("secret").to_owned();
    (key, secret, receiver)
}

/// The deliveries `receiver` got of event type `kind`, each checked against
/// `secret`.
fn delivered(receiver: &Receiver, secret: &str, kind: &str) -> Vec<serde_json::Value> {
    receiver
        .got
        .lock()
        .expect("lock")
        .iter()
        .filter_map(|(signature, body)| {
            let event: serde_json::Value = serde_json::from_str(body).ok()?;
            let t: i64 = signature
                .split(',')
                .find_map(|p| p.strip_prefix("t="))?
                .parse()
                .ok()?;
            assert_eq!(signature, &sign_payload(secret, t, body.as_bytes()));
            (event["type"] == kind).then_some(event)
        })
        .collect()
}

async fn control(path: &str, form: &[(&str, &str)]) -> (u16, serde_json::Value) {
    emulator_call(reqwest::Method::POST, path, "", form).await
}

#[tokio::test]
async fn chaos_duplicates_every_delivery() {
    let (key, secret, receiver) = subscribed(&["*"], 0).await;
    let response = reqwest::Client::new()
        .post(format!(
            "{}/_emulator/webhooks/chaos",
            stripe_emulator().base_url()
        ))
        .bearer_auth(&key)
        .json(&serde_json::json!({"duplicate": 2, "shuffle": true}))
        .send()
        .await
        .expect("emulator answers");
    assert_eq!(response.status(), 200);
    let paid = stripe()
        .await
        .create_payment(
            ctx(&key, None),
            payment(700, "pm_card_visa", CaptureMode::Automatic),
        )
        .await
        .expect("approved");
    let emitted: Vec<String> = stripe_emulator()
        .events()
        .iter()
        .filter(|e| {
            let o = &e["data"]["object"];
            o["id"] == paid.reference.as_str() || o["payment_intent"] == paid.reference.as_str()
        })
        .filter_map(|e| e["id"].as_str().map(str::to_owned))
        .collect();
    assert!(!emitted.is_empty());
    payhost_tests::eventually("each event three times", || async {
        let got = receiver.got.lock().expect("lock").clone();
        let counts: Vec<usize> = emitted
            .iter()
            .map(|id| got.iter().filter(|(_, b)| b.contains(id.as_str())).count())
            .collect();
        if counts.iter().all(|&n| n == 3) && got.len() == 3 * emitted.len() {
            Ok(())
        } else {
            Err(serde_json::json!(counts))
        }
    })
    .await;
    assert!(
        delivered(&receiver, &secret, "payment_intent.succeeded").len() == 3,
        "signed with the endpoint's secret"
    );
}

#[tokio::test]
async fn a_dashboard_refund_emits_a_signed_charge_refunded() {
    let (key, secret, receiver) = subscribed(&["charge.refunded"], 0).await;
    let paid = stripe()
        .await
        .create_payment(
            ctx(&key, None),
            payment(1000, "pm_card_visa", CaptureMode::Automatic),
        )
        .await
        .expect("approved");
    let (status, refund) = control(
        &format!("/_emulator/payment_intents/{}/refund", paid.reference),
        &[("amount", "300")],
    )
    .await;
    assert_eq!(status, 200, "{refund}");
    assert_eq!(refund["status"], "succeeded");
    assert_eq!(refund["amount"], 300);
    let event = payhost_tests::eventually("charge.refunded delivered", || async {
        delivered(&receiver, &secret, "charge.refunded")
            .pop()
            .ok_or(serde_json::Value::Null)
    })
    .await;
    assert_eq!(event["data"]["object"]["amount_refunded"], 300);
    assert_eq!(
        event["data"]["object"]["payment_intent"],
        paid.reference.as_str()
    );
    assert!(
        event["request"]["id"].is_null(),
        "a dashboard action: {event}"
    );
    assert_eq!(
        stripe_emulator().money_moved(&key).refunds.len(),
        1,
        "the refund is the account's"
    );
    let (status, _) = control("/_emulator/payment_intents/pi_nope/refund", &[]).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn pending_refunds_succeed_or_fail_with_their_events() {
    let (key, secret, receiver) = subscribed(
        &["refund.updated", "charge.refund.updated", "refund.failed"],
        0,
    )
    .await;
    let paid = stripe()
        .await
        .create_payment(
            ctx(&key, None),
            payment(1000, "pm_card_pendingRefund", CaptureMode::Automatic),
        )
        .await
        .expect("approved");
    let refund_path = format!("/_emulator/payment_intents/{}/refund", paid.reference);
    let (_, first) = control(&refund_path, &[("amount", "400")]).await;
    assert_eq!(first["status"], "pending", "{first}");
    let (_, second) = control(&refund_path, &[("amount", "600")]).await;
    assert_eq!(second["status"], "pending", "{second}");
    let id = |r: &serde_json::Value| r["id"].as_str().expect("id").to_owned();

    let (status, done) = control(&format!("/_emulator/refunds/{}/succeed", id(&first)), &[]).await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["status"], "succeeded");
    let (status, failed) = control(&format!("/_emulator/refunds/{}/fail", id(&second)), &[]).await;
    assert_eq!(status, 200, "{failed}");
    assert_eq!(failed["status"], "failed");
    // Only a pending refund moves.
    let (status, again) = control(&format!("/_emulator/refunds/{}/fail", id(&first)), &[]).await;
    assert_eq!(status, 400, "{again}");

    payhost_tests::eventually("the refunds' events", || async {
        let updated = delivered(&receiver, &secret, "refund.updated");
        let charge_updated = delivered(&receiver, &secret, "charge.refund.updated");
        let failed = delivered(&receiver, &secret, "refund.failed");
        if updated.len() == 2 && charge_updated.len() == 2 && failed.len() == 1 {
            Ok(())
        } else {
            Err(serde_json::json!([
                updated.len(),
                charge_updated.len(),
                failed.len()
            ]))
        }
    })
    .await;
    let failed = delivered(&receiver, &secret, "refund.failed");
    assert_eq!(failed[0]["data"]["object"]["id"], id(&second).as_str());
    assert_eq!(failed[0]["data"]["object"]["status"], "failed");
}

#[tokio::test]
async fn a_refund_fail_card_refund_succeeds_then_fails() {
    let (key, secret, receiver) = subscribed(&["refund.failed"], 0).await;
    let paid = stripe()
        .await
        .create_payment(
            ctx(&key, None),
            payment(1000, "pm_card_refundFail", CaptureMode::Automatic),
        )
        .await
        .expect("approved");
    assert_eq!(paid.state, PaymentState::Approved);
    let refunded = stripe()
        .await
        .refund(
            ctx(&key, None),
            RefundRequest {
                payment_reference: paid.reference.clone(),
                amount: None,
                reason: None,
                refund_id: unique("rsv"),
            },
        )
        .await
        .expect("refund accepted");
    assert_eq!(
        refunded.status,
        RefundStatus::Succeeded,
        "it starts succeeded"
    );
    let (status, failed) = control(
        &format!("/_emulator/refunds/{}/fail", refunded.reference),
        &[],
    )
    .await;
    assert_eq!(status, 200, "{failed}");
    assert_eq!(failed["status"], "failed");
    let event = payhost_tests::eventually("refund.failed delivered", || async {
        delivered(&receiver, &secret, "refund.failed")
            .pop()
            .ok_or(serde_json::Value::Null)
    })
    .await;
    assert_eq!(event["data"]["object"]["id"], refunded.reference.as_str());
    // The money is back on the charge: it can be refunded again.
    let again = stripe()
        .await
        .refund(
            ctx(&key, None),
            RefundRequest {
                payment_reference: paid.reference.clone(),
                amount: None,
                reason: None,
                refund_id: unique("rsv"),
            },
        )
        .await
        .expect("refundable again");
    assert_eq!(again.amount.minor, 1000);
}
