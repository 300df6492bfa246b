//! The sandbox holds against hostile components: infinite loops, memory
//! hogs, forbidden network access, panics and leaked global state each end
//! that call only, with a typed error, and the next call works.

use std::time::Instant;

use payhost::runtime::contract::{
    CallContext, CaptureMode, Credential, Money, PaymentRequest, PaymentState, ProviderError,
    WebhookError, WebhookRequest,
};
use payhost::runtime::{CallError, LoadError, ProviderSettings};
use payhost_tests::{
    HOSTILE_DEADLINE, HOSTILE_MEMORY_CAP, allowed_server, hostile, load_component, tight_runtime,
};

fn ctx() -> CallContext {
    CallContext {
        credentials: vec![],
        base_url: None,
        idempotency_key: None,
    }
}

fn request(method: &str) -> PaymentRequest {
    PaymentRequest {
        amount: Money {
            minor: 1000,
            currency: "USD".into(),
        },
        order_id: "ord_test".into(),
        description: None,
        payment_method: Some(method.into()),
        capture: CaptureMode::Automatic,
        return_url: None,
        customer: None,
        metadata: vec![],
    }
}

/// A well-behaved call on the same provider succeeds afterwards.
async fn assert_still_serving() {
    let provider = hostile().await;
    let payment = provider
        .create_payment(ctx(), request("ok"))
        .await
        .expect("a well-behaved call succeeds after a hostile one");
    assert_eq!(payment.reference, "ok-ord_test");
    assert_eq!(payment.state, PaymentState::Approved);
}

/// A spinning guest yields to the executor at every epoch tick: on a
/// single-threaded runtime, other work still runs while it spins (with a
/// trapping deadline it would wait for the whole deadline).
#[tokio::test(flavor = "current_thread")]
async fn a_spinning_component_does_not_stall_its_runtime() {
    let provider = hostile().await;
    // Due while the guest spins; it can only run if the guest yields.
    let other = tokio::spawn(async {
        tokio::time::sleep(HOSTILE_DEADLINE / 10).await;
        Instant::now()
    });
    let err = provider
        .create_payment(ctx(), request("loop"))
        .await
        .expect_err("an infinite loop cannot succeed");
    let spin_ended = Instant::now();
    assert!(matches!(err, CallError::Deadline { .. }), "{err:?}");
    let other_ran = other.await.expect("task");
    assert!(
        other_ran + HOSTILE_DEADLINE / 2 < spin_ended,
        "the other task ran only {:?} before the spinning call ended",
        spin_ended.saturating_duration_since(other_ran)
    );
}

#[tokio::test]
async fn infinite_loop_is_stopped_near_the_deadline() {
    let provider = hostile().await;
    let started = Instant::now();
    let err = provider
        .create_payment(ctx(), request("loop"))
        .await
        .expect_err("an infinite loop cannot succeed");
    let elapsed = started.elapsed();
    assert_eq!(
        err,
        CallError::Deadline {
            limit: HOSTILE_DEADLINE
        }
    );
    assert!(
        elapsed >= HOSTILE_DEADLINE,
        "stopped before the deadline: {elapsed:?}"
    );
    assert!(
        elapsed < HOSTILE_DEADLINE * 3,
        "stopped too long after the {HOSTILE_DEADLINE:?} deadline: {elapsed:?}"
    );
    assert_still_serving().await;
}

#[tokio::test]
async fn growing_memory_past_the_cap_traps() {
    let provider = hostile().await;
    let err = provider
        .create_payment(ctx(), request("grow-memory"))
        .await
        .expect_err("a memory hog cannot succeed");
    assert_eq!(
        err,
        CallError::MemoryCap {
            limit: HOSTILE_MEMORY_CAP
        }
    );
    assert_still_serving().await;
}

#[tokio::test]
async fn request_to_a_host_off_the_allow_list_is_denied_without_connecting() {
    let provider = hostile().await;
    let target = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    target.set_nonblocking(true).expect("nonblocking");
    let port = target.local_addr().expect("local addr").port();
    let url = format!("http://127.0.0.1:{port}/steal");

    let err = provider
        .create_payment(ctx(), request(&format!("fetch:{url}")))
        .await
        .expect_err("a forbidden request cannot succeed");
    match &err {
        CallError::OutboundDenied { origin, reason } => {
            assert_eq!(origin, &format!("http://127.0.0.1:{port}"));
            assert!(reason.contains("allow-list"), "{reason}");
        }
        other => panic!("expected OutboundDenied, got {other:?}"),
    }
    // The call has returned, so any connection attempt would already sit in
    // the accept queue: a non-blocking accept proves none was made.
    match target.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        Ok((_, peer)) => panic!("the forbidden target received a connection from {peer}"),
        Err(e) => panic!("unexpected accept error: {e}"),
    }
    assert_still_serving().await;
}

#[tokio::test]
async fn request_to_an_allowed_host_goes_through() {
    let provider = hostile().await;
    let server = allowed_server();
    let before = server.connections();
    let payment = provider
        .create_payment(ctx(), request(&format!("fetch:{}/ping", server.origin)))
        .await
        .expect("allowed origin is reachable");
    assert_eq!(payment.reference, "status=200");
    assert!(server.connections() > before);
}

#[tokio::test]
async fn panic_becomes_a_typed_trap_error() {
    let provider = hostile().await;
    let err = provider
        .create_payment(ctx(), request("panic"))
        .await
        .expect_err("a panic cannot succeed");
    match &err {
        CallError::Trap(message) => assert!(
            message.contains("hostile component panicked on purpose"),
            "the trap should carry the panic message: {message}"
        ),
        other => panic!("expected Trap, got {other:?}"),
    }
    assert_eq!(err.code(), "provider_trapped");
    assert_still_serving().await;
}

#[tokio::test]
async fn guest_global_state_never_survives_between_calls() {
    let provider = hostile().await;
    for _ in 0..3 {
        let payment = provider
            .create_payment(ctx(), request("count"))
            .await
            .expect("count call succeeds");
        assert_eq!(payment.reference, "calls=1", "a fresh instance every call");
    }
}

#[tokio::test]
async fn guest_errors_pass_through_typed() {
    let provider = hostile().await;
    let err = provider
        .capture(ctx(), "pi_x".into(), None)
        .await
        .expect_err("hostile capture is unsupported");
    assert_eq!(
        err,
        CallError::Gateway(ProviderError::Unsupported("hostile test component".into()))
    );
}

fn delivery(body: &[u8]) -> WebhookRequest {
    WebhookRequest {
        headers: vec![("x-signature".into(), "forged".into())],
        body: body.to_vec(),
        secret: "whsec_test".into(),
        received_at: 1_700_000_000,
    }
}

/// A context carrying a tenant credential, as the diagnosis call gets.
fn with_key() -> CallContext {
    CallContext {
        credentials: vec![Credential {
            name: "secret-key".into(),
            value: "sk_test_hostile".into(),
        }],
        ..ctx()
    }
}

#[tokio::test]
async fn a_rejected_webhook_signature_cannot_be_turned_into_events() {
    let provider = hostile().await;
    let with_key = with_key();
    // Verification runs without the tenant's credentials…
    let first = provider
        .parse_webhook(with_key.clone(), delivery(b"report"))
        .await
        .expect_err("the hostile component reports instead of verifying");
    assert_eq!(
        first,
        CallError::Gateway(WebhookError::MalformedSignature("credentials=0".into()))
    );
    // …and the diagnosis call that does get them can only sharpen the
    // rejection: the event the component returns there is dropped.
    let second = provider
        .parse_webhook(with_key, delivery(b"{}"))
        .await
        .expect_err("events after a rejected signature are ignored");
    assert_eq!(second, CallError::Gateway(WebhookError::SignatureMismatch));
    assert_still_serving().await;
}

#[tokio::test]
async fn the_webhook_diagnosis_call_can_only_read() {
    let provider = hostile().await;
    let with_key = with_key();
    let server = &allowed_server().origin;
    // A GET to the allowed origin goes out (the component says so)…
    let get = provider
        .parse_webhook(
            with_key.clone(),
            delivery(format!("send:GET:{server}/v1/events/evt_1").as_bytes()),
        )
        .await
        .expect_err("still a rejection");
    assert_eq!(get, CallError::Gateway(WebhookError::WrongSecret));
    // …a POST with the tenant's credentials does not: the policy denies it,
    // and the delivery is left at the first call's plain mismatch.
    let post = provider
        .parse_webhook(
            with_key,
            delivery(format!("send:POST:{server}/v1/refunds").as_bytes()),
        )
        .await
        .expect_err("still a rejection");
    assert_eq!(post, CallError::Gateway(WebhookError::SignatureMismatch));
    assert_still_serving().await;
}

#[tokio::test]
async fn wrong_contract_version_is_refused_at_load_naming_the_version() {
    let err = load_component(
        tight_runtime(),
        "WRONG_VERSION",
        ProviderSettings::default(),
    )
    .await
    .expect_err("a 0.9.0 component must be refused");
    assert!(
        matches!(&err, LoadError::UnsupportedVersion { found, .. } if found == "0.9.0"),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(message.contains("wrong_version_provider.wasm"), "{message}");
    assert!(
        message.contains("0.9.0") && message.contains("0.1.0"),
        "{message}"
    );
}

#[tokio::test]
async fn component_without_the_gateway_export_is_refused_at_load() {
    let err = load_component(tight_runtime(), "NO_GATEWAY", ProviderSettings::default())
        .await
        .expect_err("a component without the contract must be refused");
    assert!(matches!(&err, LoadError::MissingExport { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("payhost:provider/gateway"), "{message}");
    assert!(message.contains("test:unrelated/greeter"), "{message}");
}

#[tokio::test]
async fn component_importing_the_filesystem_is_refused_at_load() {
    let err = load_component(tight_runtime(), "FS_IMPORTING", ProviderSettings::default())
        .await
        .expect_err("a filesystem-importing component must be refused");
    match &err {
        LoadError::ForbiddenImport { import, .. } => {
            assert!(import.starts_with("wasi:filesystem/"), "{import}")
        }
        other => panic!("expected ForbiddenImport, got {other:?}"),
    }
}

#[tokio::test]
async fn garbage_bytes_are_refused_at_load() {
    let err = tight_runtime()
        .load("junk.wasm", b"not wasm at all", ProviderSettings::default())
        .await
        .expect_err("garbage must be refused");
    assert!(matches!(&err, LoadError::Invalid { .. }), "{err:?}");
    assert!(err.to_string().starts_with("junk.wasm:"), "{err}");
}
