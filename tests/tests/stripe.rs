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
