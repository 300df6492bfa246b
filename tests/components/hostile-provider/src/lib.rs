//! Test component: a provider that misbehaves on request, to prove the
//! sandbox holds. `create-payment`'s `payment-method` picks the behaviour:
//!
//! | payment-method   | behaviour                                              |
//! |------------------|--------------------------------------------------------|
//! | `loop`           | spins forever                                          |
//! | `grow-memory`    | allocates until the memory cap stops it                |
//! | `fetch:<url>`    | GETs `<url>` and reports the status                    |
//! | `panic`          | panics                                                 |
//! | `count`          | bumps a global counter and reports it in the reference |
//! | `huge-error`     | fails with a 4 MiB `internal` message (with control characters) |
//! | `huge-reference` | approves with a 4 MiB payment reference                |
//! | `flood:<url>`    | GETs `<url>` again and again until a request fails     |
//! | `short-refund`   | approves (reference `short-<order id>`); its refunds report 1 less than asked |
//! | `short-payment`  | approves 1 less than asked (reference `short-pay-<order id>`) |
//! | anything else    | approves the payment (reference `ok-<order id>`)        |
//!
//! `refund` succeeds (reference `re_hostile_<refund id>`) for the amount
//! asked, except as above. The manifest claims no capabilities, so the host
//! must never ask it for a partial refund or a manual capture.
//!
//! `get-payment` of a `short-pay-…` reference answers for another payment:
//! approved, 1000 USD, reference `ok-swapped`. Any other is unsupported.
//!
//! `parse-webhook` tries to slip an event past a rejected signature (see
//! its doc).
#![allow(unsafe_code)]
// the export macro expands to wit-bindgen glue
// Natively (clippy, `cargo test --workspace`) the export macro expands to
// nothing, so the provider looks unused there.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

use std::sync::atomic::{AtomicU64, Ordering};

use payhost_provider_sdk::{
    CallContext, Capabilities, EventKind, Manifest, Money, Payment, PaymentRequest, PaymentState,
    Provider, ProviderError, Refund, RefundRequest, RefundStatus, WebhookError, WebhookEvent,
    WebhookRequest, http,
};

static CALLS: AtomicU64 = AtomicU64::new(0);

/// Bytes of the oversized outputs: far over every host cap.
const HUGE: usize = 4 * 1024 * 1024;

struct Hostile;

fn unsupported<T>() -> Result<T, ProviderError> {
    Err(ProviderError::Unsupported("hostile test component".into()))
}

impl Provider for Hostile {
    fn manifest() -> Manifest {
        Manifest {
            id: "hostile".into(),
            name: "Hostile test provider".into(),
            version: "0.0.0".into(),
            currencies: vec!["USD".into()],
            credential_fields: vec![],
            capabilities: Capabilities::empty(),
            default_base_url: "http://127.0.0.1:9".into(),
            default_hosts: vec![],
        }
    }

    fn validate_credentials(_ctx: CallContext) -> Result<(), ProviderError> {
        Ok(())
    }

    fn create_payment(
        _ctx: CallContext,
        request: PaymentRequest,
    ) -> Result<Payment, ProviderError> {
        let method = request.payment_method.clone().unwrap_or_default();
        let reference = match method.as_str() {
            "loop" => {
                let mut x: u64 = 0;
                loop {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            }
            "grow-memory" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1024 * 1024]);
                    std::hint::black_box(&hoard);
                }
            }
            "panic" => panic!("hostile component panicked on purpose"),
            "count" => format!("calls={}", CALLS.fetch_add(1, Ordering::SeqCst) + 1),
            "huge-error" => {
                return Err(ProviderError::Internal(format!(
                    "\u{1b}[31mhostile\n{}",
                    "x".repeat(HUGE)
                )));
            }
            "huge-reference" => "r".repeat(HUGE),
            "short-refund" => format!("short-{}", request.order_id),
            "short-payment" => {
                return Ok(Payment {
                    reference: format!("short-pay-{}", request.order_id),
                    state: PaymentState::Approved,
                    amount: Money::new(request.amount.minor.saturating_sub(1), "USD"),
                    captured: None,
                });
            }
            m if m.starts_with("flood:") => {
                let url = &m["flood:".len()..];
                // Until the host stops it (or the deadline does).
                loop {
                    if let Err(e) = http::send(http::Request::get(url)) {
                        return Err(e.into());
                    }
                }
            }
            m if m.starts_with("fetch:") => {
                let url = &m["fetch:".len()..];
                match http::send(http::Request::get(url)) {
                    Ok(resp) => format!("status={}", resp.status),
                    Err(e) => return Err(e.into()),
                }
            }
            _ => format!("ok-{}", request.order_id),
        };
        Ok(Payment {
            reference,
            state: PaymentState::Approved,
            amount: request.amount,
            captured: None,
        })
    }

    fn capture(_: CallContext, _: String, _: Option<Money>) -> Result<Payment, ProviderError> {
        unsupported()
    }

    fn cancel(_: CallContext, _: String) -> Result<Payment, ProviderError> {
        unsupported()
    }

    fn get_payment(_: CallContext, reference: String) -> Result<Payment, ProviderError> {
        if !reference.starts_with("short-pay-") {
            return unsupported();
        }
        Ok(Payment {
            reference: "ok-swapped".into(),
            state: PaymentState::Approved,
            amount: Money::new(1000, "USD"),
            captured: None,
        })
    }

    fn refund(_: CallContext, request: RefundRequest) -> Result<Refund, ProviderError> {
        let Some(mut amount) = request.amount else {
            return unsupported();
        };
        if request.payment_reference.starts_with("short-") {
            amount.minor = amount.minor.saturating_sub(1);
        }
        Ok(Refund {
            reference: format!("re_hostile_{}", request.refund_id),
            status: RefundStatus::Succeeded,
            amount,
        })
    }

    /// Never verifies anything. Without credentials it rejects the
    /// signature; handed credentials (the host's diagnosis call) it tries to
    /// turn the rejected delivery into an event anyway, and the host must
    /// ignore that. A body of `report` instead reports what it was given;
    /// `send:<METHOD>:<url>` tries a request (see below).
    fn parse_webhook(
        ctx: CallContext,
        request: WebhookRequest,
    ) -> Result<Vec<WebhookEvent>, WebhookError> {
        if request.body == b"report" {
            return Err(WebhookError::MalformedSignature(format!(
                "credentials={}",
                ctx.credentials.len()
            )));
        }
        if ctx.credentials.is_empty() {
            return Err(WebhookError::SignatureMismatch);
        }
        // `send:<METHOD>:<url>`: try a request with the tenant's credentials
        // at hand, and report through the only answers the host passes on:
        // `wrong-secret` if it went out, `tampered-body` if it was refused.
        if let Some(spec) = request.body.strip_prefix(b"send:") {
            let spec = String::from_utf8_lossy(spec);
            let (method, url) = spec.split_once(':').unwrap_or(("GET", &spec));
            let method = if method == "POST" {
                http::Method::Post
            } else {
                http::Method::Get
            };
            return Err(match http::send(http::Request::new(method, url)) {
                Ok(_) => WebhookError::WrongSecret,
                Err(_) => WebhookError::TamperedBody,
            });
        }
        Ok(vec![WebhookEvent {
            id: "evt_forged".into(),
            kind: EventKind::PaymentSucceeded,
            gateway_type: "payment_intent.succeeded".into(),
            payment_reference: Some("pi_forged".into()),
            refund_reference: None,
            amount: Some(Money::new(1_000_000, "USD")),
            order_id: None,
            refund_id: None,
        }])
    }
}

payhost_provider_sdk::export_provider!(Hostile);
