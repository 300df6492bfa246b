//! Pure translation between the contract and Stripe's REST API v1: request
//! forms out, `(status, headers, body)` in. No I/O here, so every mapping is
//! covered by native unit tests.

use payhost_provider_sdk::form::{Form, encode_component};
use payhost_provider_sdk::http::header_value;
use payhost_provider_sdk::{
    CaptureMode, Decline, Money, NextAction, Payment, PaymentRequest, PaymentState, ProviderError,
    Refund, RefundReason, RefundRequest, RefundStatus,
};
use serde::Deserialize;
use serde_json::Value;

/// Stripe keeps idempotency keys up to this many characters.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

/// Metadata key carrying the host's order id on PaymentIntents.
pub const ORDER_ID_KEY: &str = "order_id";

/// Metadata key carrying the host's refund id on Refunds.
pub const REFUND_ID_KEY: &str = "payhost_refund_id";

/// `/v1/payment_intents/{id}{suffix}` with the id escaped, so a reference can
/// never change the path (`pi_1/../balance`, `pi_1?x=`).
pub fn payment_intent_path(id: &str, suffix: &str) -> String {
    format!("/v1/payment_intents/{}{suffix}", encode_component(id))
}

/// The `POST /v1/payment_intents` form for a contract payment request.
///
/// With a payment method the intent is created *and confirmed* in one call
/// (`confirm=true`). Without one it is only created, and the client confirms
/// it with Stripe.js (see [`payment_from_intent`] for what is returned).
/// When confirming without a `return_url`, redirect-based payment methods are
/// excluded (`automatic_payment_methods[allow_redirects]=never`): on current
/// API versions Stripe otherwise refuses a server-side confirmation that has
/// no `return_url`. Request metadata is forwarded, except a caller-supplied
/// `order_id`, which would clash with the host's own.
pub fn create_payment_form(request: &PaymentRequest) -> Form {
    let mut form = Form::new()
        .field("amount", request.amount.minor.to_string())
        .field("currency", request.amount.currency.to_ascii_lowercase())
        .field(
            "capture_method",
            match request.capture {
                CaptureMode::Automatic => "automatic",
                CaptureMode::Manual => "manual",
            },
        );
    if let Some(payment_method) = &request.payment_method {
        form = form
            .field("payment_method", payment_method)
            .field("confirm", "true");
        match &request.return_url {
            Some(url) => form = form.field("return_url", url),
            None => {
                form = form
                    .nested(&["automatic_payment_methods", "enabled"], "true")
                    .nested(&["automatic_payment_methods", "allow_redirects"], "never");
            }
        }
    }
    form = form.opt_field("description", request.description.as_deref());
    let email = request.customer.as_ref().and_then(|c| c.email.as_deref());
    form = form.opt_field("receipt_email", email);
    form = form.nested(&["metadata", ORDER_ID_KEY], &request.order_id);
    for (key, value) in &request.metadata {
        if key != ORDER_ID_KEY {
            form.push_nested(&["metadata", key], value);
        }
    }
    form
}

/// The `POST /v1/payment_intents/{id}/capture` form: `amount_to_capture` for a
/// partial capture, nothing for a full one.
pub fn capture_form(amount: Option<&Money>) -> Form {
    Form::new().opt_field("amount_to_capture", amount.map(|m| m.minor.to_string()))
}

/// The `POST /v1/refunds` form. The host's refund id travels as
/// `metadata[payhost_refund_id]` so the webhook echo can be matched.
pub fn refund_form(request: &RefundRequest) -> Form {
    Form::new()
        .field("payment_intent", &request.payment_reference)
        .opt_field(
            "amount",
            request.amount.as_ref().map(|m| m.minor.to_string()),
        )
        .opt_field(
            "reason",
            request.reason.map(|r| match r {
                RefundReason::Duplicate => "duplicate",
                RefundReason::Fraudulent => "fraudulent",
                RefundReason::RequestedByCustomer => "requested_by_customer",
            }),
        )
        .nested(&["metadata", REFUND_ID_KEY], &request.refund_id)
}

/// The PaymentIntent fields the mapping reads.
#[derive(Debug, Deserialize)]
struct PaymentIntent {
    id: String,
    status: String,
    amount: u64,
    currency: String,
    #[serde(default)]
    amount_received: Option<u64>,
    #[serde(default)]
    next_action: Option<Value>,
    #[serde(default)]
    last_payment_error: Option<StripeError>,
    #[serde(default)]
    client_secret: Option<String>,
}

/// Stripe's error object (`{"error": {…}}`), also used for
/// `last_payment_error`.
#[derive(Debug, Default, Deserialize)]
struct StripeError {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    decline_code: Option<String>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    param: Option<String>,
    /// The PaymentIntent the error concerns (kept raw: only create reads it).
    #[serde(default)]
    payment_intent: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct ErrorEnvelope {
    error: StripeError,
}

/// The Refund fields the mapping reads.
#[derive(Debug, Deserialize)]
struct StripeRefund {
    id: String,
    #[serde(default)]
    status: Option<String>,
    amount: u64,
    currency: String,
}

impl StripeError {
    /// The decline as the contract reports it: Stripe's `decline_code` when
    /// the issuer gave one, else the error `code`.
    fn decline(&self) -> Decline {
        Decline {
            code: self
                .decline_code
                .clone()
                .or_else(|| self.code.clone())
                .unwrap_or_else(|| "card_declined".into()),
            message: self
                .message
                .clone()
                .unwrap_or_else(|| "The card was declined.".into()),
        }
    }

    /// `"{code}: {message} (param: {param})"`, leaving out what is absent.
    fn describe(&self, status: u16) -> String {
        let message = self
            .message
            .clone()
            .unwrap_or_else(|| format!("Stripe returned HTTP {status}"));
        let mut out = match &self.code {
            Some(code) => format!("{code}: {message}"),
            None => message,
        };
        if let Some(param) = &self.param {
            out.push_str(&format!(" (param: {param})"));
        }
        out
    }
}

/// Maps a PaymentIntent object onto the contract's payment.
///
/// | Stripe `status` | contract state |
/// |---|---|
/// | `succeeded` | `approved` |
/// | `requires_capture` | `authorized` |
/// | `processing` | `pending` |
/// | `requires_action` | `requires-action(redirect(next_action.redirect_to_url.url))`, or `sdk-data(<next_action JSON>)` when there is no redirect URL |
/// | `canceled` | `canceled` |
/// | `requires_payment_method` with `last_payment_error` (a failed confirmation) | `declined(decline_code or code, message)` |
/// | `requires_payment_method` / `requires_confirmation` otherwise (not confirmed yet) | `requires-action(sdk-data({"type": <status>, "client_secret": …}))` for Stripe.js |
pub fn payment_from_intent(intent: &Value) -> Result<Payment, ProviderError> {
    let intent = PaymentIntent::deserialize(intent)
        .map_err(|e| ProviderError::Internal(format!("unreadable Stripe PaymentIntent: {e}")))?;
    payment_from(&intent)
}

fn payment_from(intent: &PaymentIntent) -> Result<Payment, ProviderError> {
    let state = match intent.status.as_str() {
        "succeeded" => PaymentState::Approved,
        "requires_capture" => PaymentState::Authorized,
        "processing" => PaymentState::Pending,
        "canceled" => PaymentState::Canceled,
        "requires_action" => PaymentState::RequiresAction(next_action(intent.next_action.as_ref())),
        "requires_payment_method" if intent.last_payment_error.is_some() => {
            let error = intent.last_payment_error.as_ref();
            PaymentState::Declined(error.map(StripeError::decline).unwrap_or_else(|| Decline {
                code: "payment_failed".into(),
                message: "The payment failed.".into(),
            }))
        }
        status @ ("requires_payment_method" | "requires_confirmation") => {
            let data = serde_json::json!({
                "type": status,
                "client_secret": intent.client_secret,
            });
            PaymentState::RequiresAction(NextAction::SdkData(data.to_string()))
        }
        other => {
            return Err(ProviderError::Internal(format!(
                "unknown Stripe PaymentIntent status `{other}`"
            )));
        }
    };
    Ok(Payment {
        reference: intent.id.clone(),
        state,
        amount: Money::new(intent.amount, &intent.currency),
        captured: intent.amount_received,
    })
}

fn next_action(action: Option<&Value>) -> NextAction {
    let url = action
        .and_then(|a| a.get("redirect_to_url"))
        .and_then(|r| r.get("url"))
        .and_then(Value::as_str)
        .filter(|u| !u.is_empty());
    match url {
        Some(url) => NextAction::Redirect(url.to_owned()),
        None => NextAction::SdkData(action.cloned().unwrap_or(Value::Null).to_string()),
    }
}

/// Maps a Refund object onto the contract's refund. Stripe's
/// `requires_action` (the customer must supply bank details) is `pending`.
pub fn refund_from_object(refund: &Value) -> Result<Refund, ProviderError> {
    let refund = StripeRefund::deserialize(refund)
        .map_err(|e| ProviderError::Internal(format!("unreadable Stripe Refund: {e}")))?;
    let status = match refund.status.as_deref() {
        Some("succeeded") => RefundStatus::Succeeded,
        Some("pending" | "requires_action") => RefundStatus::Pending,
        Some("failed") => RefundStatus::Failed,
        Some("canceled") => RefundStatus::Canceled,
        other => {
            return Err(ProviderError::Internal(format!(
                "unknown Stripe Refund status {other:?}"
            )));
        }
    };
    Ok(Refund {
        reference: refund.id,
        status,
        amount: Money::new(refund.amount, &refund.currency),
    })
}

fn json_body(status: u16, body: &[u8]) -> Result<Value, ProviderError> {
    serde_json::from_slice(body).map_err(|_| {
        ProviderError::Internal(format!(
            "Stripe returned HTTP {status} with a non-JSON body"
        ))
    })
}

/// Maps the response to `GET /v1/payment_intents/{id}`, `…/capture` and
/// `…/cancel`: a PaymentIntent on 2xx, else [`error_from_response`].
pub fn payment_from_response(
    status: u16,
    headers: &[(String, String)],
    body: &[u8],
) -> Result<Payment, ProviderError> {
    if !(200..300).contains(&status) {
        return Err(error_from_response(status, headers, body));
    }
    payment_from_intent(&json_body(status, body)?)
}

/// Maps the response to `POST /v1/payment_intents` (create + confirm).
///
/// Unlike the other calls, a card decline here is an *outcome*, not an error:
/// Stripe answers 402 `card_error` and attaches the PaymentIntent it created,
/// so this returns `Ok` with a `declined` payment whose reference is that
/// intent (amount from the intent, else `requested`). Without an attached
/// intent the decline is `Err(declined)`.
pub fn created_payment_from_response(
    status: u16,
    headers: &[(String, String)],
    body: &[u8],
    requested: &Money,
) -> Result<Payment, ProviderError> {
    if status == 402
        && let Ok(ErrorEnvelope { error }) = serde_json::from_slice::<ErrorEnvelope>(body)
        && error.kind.as_deref() == Some("card_error")
        && let Some(raw) = &error.payment_intent
        && let Some(reference) = raw.get("id").and_then(Value::as_str)
    {
        let intent = PaymentIntent::deserialize(raw).ok();
        return Ok(Payment {
            reference: reference.to_owned(),
            state: PaymentState::Declined(error.decline()),
            amount: intent
                .as_ref()
                .map(|i| Money::new(i.amount, &i.currency))
                .unwrap_or_else(|| requested.clone()),
            captured: intent.and_then(|i| i.amount_received),
        });
    }
    payment_from_response(status, headers, body)
}

/// Maps the response to `POST /v1/refunds`.
pub fn refund_from_response(
    status: u16,
    headers: &[(String, String)],
    body: &[u8],
) -> Result<Refund, ProviderError> {
    if !(200..300).contains(&status) {
        return Err(error_from_response(status, headers, body));
    }
    refund_from_object(&json_body(status, body)?)
}

/// Maps the response to `GET /v1/balance` (the credential check): any 2xx
/// means the key works.
pub fn validation_from_response(
    status: u16,
    headers: &[(String, String)],
    body: &[u8],
) -> Result<(), ProviderError> {
    if (200..300).contains(&status) {
        Ok(())
    } else {
        Err(error_from_response(status, headers, body))
    }
}

/// Maps a non-2xx Stripe response onto the contract's error.
///
/// | response | error |
/// |---|---|
/// | 401, 403 (bad or restricted key) | `invalid-credentials` |
/// | 409 (a concurrent request holds the idempotency key) | `unavailable` (retry) |
/// | 429 | `rate-limited(Retry-After seconds, if sent)` |
/// | 5xx | `unavailable` |
/// | 402 or `card_error` | `declined(decline_code or code, message)` |
/// | `invalid_request_error`, `idempotency_error` (400/404) | `invalid-request("code: message (param: p)")` |
/// | `api_error` | `unavailable` |
/// | other 4xx with a Stripe error body | `invalid-request` |
/// | a body that is not a Stripe error | `internal` |
pub fn error_from_response(
    status: u16,
    headers: &[(String, String)],
    body: &[u8],
) -> ProviderError {
    let parsed = serde_json::from_slice::<ErrorEnvelope>(body)
        .ok()
        .map(|e| e.error);
    let describe = |fallback: &str| {
        parsed
            .as_ref()
            .map(|e| e.describe(status))
            .unwrap_or_else(|| format!("{fallback} (HTTP {status})"))
    };
    match status {
        401 | 403 => {
            return ProviderError::InvalidCredentials(describe("Stripe rejected the API key"));
        }
        409 => {
            return ProviderError::Unavailable(describe(
                "a concurrent request with the same idempotency key is in progress",
            ));
        }
        429 => {
            let retry_after =
                header_value(headers, "retry-after").and_then(|v| v.trim().parse::<u32>().ok());
            return ProviderError::RateLimited(retry_after);
        }
        500..=599 => return ProviderError::Unavailable(describe("Stripe is unavailable")),
        _ => {}
    }
    let Some(error) = parsed else {
        return ProviderError::Internal(format!(
            "unexpected Stripe response: HTTP {status} without a Stripe error body"
        ));
    };
    match error.kind.as_deref() {
        _ if status == 402 => ProviderError::Declined(error.decline()),
        Some("card_error") => ProviderError::Declined(error.decline()),
        Some("api_error") => ProviderError::Unavailable(error.describe(status)),
        Some("rate_limit_error") => ProviderError::RateLimited(None),
        Some("authentication_error") => ProviderError::InvalidCredentials(error.describe(status)),
        _ if (400..500).contains(&status) => ProviderError::InvalidRequest(error.describe(status)),
        _ => ProviderError::Internal(format!(
            "unexpected Stripe response: HTTP {status}: {}",
            error.describe(status)
        )),
    }
}

/// Replaces every occurrence of `secret` in the error's message, so a gateway
/// (or proxy) that echoes the API key can never leak it through the host.
pub fn scrub(error: ProviderError, secret: &str) -> ProviderError {
    if secret.is_empty() {
        return error;
    }
    let clean = |m: String| m.replace(secret, "[redacted]");
    match error {
        ProviderError::InvalidCredentials(m) => ProviderError::InvalidCredentials(clean(m)),
        ProviderError::Declined(d) => ProviderError::Declined(Decline {
            code: clean(d.code),
            message: clean(d.message),
        }),
        ProviderError::InvalidRequest(m) => ProviderError::InvalidRequest(clean(m)),
        ProviderError::Unavailable(m) => ProviderError::Unavailable(clean(m)),
        ProviderError::Unsupported(m) => ProviderError::Unsupported(clean(m)),
        ProviderError::Internal(m) => ProviderError::Internal(clean(m)),
        other @ ProviderError::RateLimited(_) => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use payhost_provider_sdk::Customer;
    use serde_json::json;

    fn no_headers() -> Vec<(String, String)> {
        Vec::new()
    }

    fn intent(status: &str) -> Value {
        json!({
            "id": "pi_123",
            "object": "payment_intent",
            "amount": 2000,
            "amount_received": 0,
            "currency": "usd",
            "status": status,
            "client_secret": "pi_123_secret_abc",
            "next_action": null,
            "last_payment_error": null,
        })
    }

    fn state_of(value: Value) -> PaymentState {
        match payment_from_intent(&value) {
            Ok(payment) => payment.state,
            Err(e) => panic!("unexpected error {e:?}"),
        }
    }

    fn request() -> PaymentRequest {
        PaymentRequest {
            amount: Money::new(2000, "USD"),
            order_id: "ord_42".into(),
            description: Some("Order 42".into()),
            payment_method: Some("pm_card_visa".into()),
            capture: CaptureMode::Automatic,
            return_url: None,
            customer: Some(Customer {
                id: None,
                email: Some("a@b.co".into()),
                name: None,
            }),
            metadata: vec![
                ("plan".into(), "pro".into()),
                ("order_id".into(), "spoofed".into()),
            ],
        }
    }

    fn stripe_error(status: u16, error: Value) -> ProviderError {
        error_from_response(
            status,
            &no_headers(),
            json!({ "error": error }).to_string().as_bytes(),
        )
    }

    // ---- request forms ----

    #[test]
    fn create_form_confirms_with_a_payment_method() {
        assert_eq!(
            create_payment_form(&request()).encode(),
            "amount=2000&currency=usd&capture_method=automatic&payment_method=pm_card_visa\
             &confirm=true&automatic_payment_methods[enabled]=true\
             &automatic_payment_methods[allow_redirects]=never&description=Order%2042\
             &receipt_email=a%40b.co&metadata[order_id]=ord_42&metadata[plan]=pro"
        );
    }

    #[test]
    fn create_form_manual_capture_with_return_url() {
        let mut req = request();
        req.capture = CaptureMode::Manual;
        req.return_url = Some("https://shop.example/back".into());
        req.customer = None;
        req.description = None;
        req.metadata.clear();
        assert_eq!(
            create_payment_form(&req).encode(),
            "amount=2000&currency=usd&capture_method=manual&payment_method=pm_card_visa\
             &confirm=true&return_url=https%3A%2F%2Fshop.example%2Fback&metadata[order_id]=ord_42"
        );
    }

    #[test]
    fn create_form_without_payment_method_does_not_confirm() {
        let mut req = request();
        req.payment_method = None;
        req.return_url = Some("https://shop.example/back".into());
        let encoded = create_payment_form(&req).encode();
        assert!(!encoded.contains("confirm"), "{encoded}");
        assert!(!encoded.contains("return_url"), "{encoded}");
    }

    #[test]
    fn capture_and_refund_forms() {
        assert_eq!(capture_form(None).encode(), "");
        assert_eq!(
            capture_form(Some(&Money::new(500, "USD"))).encode(),
            "amount_to_capture=500"
        );
        let refund = RefundRequest {
            payment_reference: "pi_123".into(),
            amount: Some(Money::new(700, "USD")),
            reason: Some(RefundReason::RequestedByCustomer),
            refund_id: "rf_9".into(),
        };
        assert_eq!(
            refund_form(&refund).encode(),
            "payment_intent=pi_123&amount=700&reason=requested_by_customer&metadata[payhost_refund_id]=rf_9"
        );
        let full = RefundRequest {
            amount: None,
            reason: None,
            ..refund
        };
        assert_eq!(
            refund_form(&full).encode(),
            "payment_intent=pi_123&metadata[payhost_refund_id]=rf_9"
        );
    }

    #[test]
    fn payment_intent_path_escapes_the_reference() {
        assert_eq!(
            payment_intent_path("pi_1", "/capture"),
            "/v1/payment_intents/pi_1/capture"
        );
        assert_eq!(
            payment_intent_path("pi_1/../../v1/balance?x", ""),
            "/v1/payment_intents/pi_1%2F..%2F..%2Fv1%2Fbalance%3Fx"
        );
    }

    // ---- PaymentIntent status mapping ----

    #[test]
    fn succeeded_is_approved_with_amounts() {
        let mut pi = intent("succeeded");
        pi["amount_received"] = json!(2000);
        assert_eq!(
            payment_from_intent(&pi),
            Ok(Payment {
                reference: "pi_123".into(),
                state: PaymentState::Approved,
                amount: Money::new(2000, "USD"),
                captured: Some(2000),
            })
        );
    }

    #[test]
    fn simple_statuses() {
        assert_eq!(
            state_of(intent("requires_capture")),
            PaymentState::Authorized
        );
        assert_eq!(state_of(intent("processing")), PaymentState::Pending);
        assert_eq!(state_of(intent("canceled")), PaymentState::Canceled);
    }

    #[test]
    fn requires_action_with_redirect() {
        let mut pi = intent("requires_action");
        pi["next_action"] = json!({
            "type": "redirect_to_url",
            "redirect_to_url": { "url": "https://hooks.stripe.com/3ds", "return_url": "https://shop/back" }
        });
        assert_eq!(
            state_of(pi),
            PaymentState::RequiresAction(NextAction::Redirect(
                "https://hooks.stripe.com/3ds".into()
            ))
        );
    }

    #[test]
    fn requires_action_without_redirect_passes_next_action_json() {
        let mut pi = intent("requires_action");
        pi["next_action"] = json!({ "type": "use_stripe_sdk", "use_stripe_sdk": { "k": 1 } });
        let PaymentState::RequiresAction(NextAction::SdkData(data)) = state_of(pi) else {
            panic!("expected sdk-data");
        };
        let parsed: Value = serde_json::from_str(&data).expect("sdk-data is JSON");
        assert_eq!(
            parsed,
            json!({ "type": "use_stripe_sdk", "use_stripe_sdk": { "k": 1 } })
        );
    }

    #[test]
    fn failed_confirmation_is_declined_with_decline_code() {
        let mut pi = intent("requires_payment_method");
        pi["last_payment_error"] = json!({
            "type": "card_error",
            "code": "card_declined",
            "decline_code": "insufficient_funds",
            "message": "Your card has insufficient funds."
        });
        assert_eq!(
            state_of(pi.clone()),
            PaymentState::Declined(Decline {
                code: "insufficient_funds".into(),
                message: "Your card has insufficient funds.".into(),
            })
        );
        pi["last_payment_error"] =
            json!({ "type": "card_error", "code": "expired_card", "message": "Expired." });
        assert_eq!(
            state_of(pi),
            PaymentState::Declined(Decline {
                code: "expired_card".into(),
                message: "Expired.".into(),
            })
        );
    }

    #[test]
    fn unconfirmed_intent_hands_the_client_secret_to_the_sdk() {
        let PaymentState::RequiresAction(NextAction::SdkData(data)) =
            state_of(intent("requires_payment_method"))
        else {
            panic!("expected sdk-data");
        };
        let parsed: Value = serde_json::from_str(&data).expect("sdk-data is JSON");
        assert_eq!(
            parsed,
            json!({ "type": "requires_payment_method", "client_secret": "pi_123_secret_abc" })
        );
        assert!(matches!(
            state_of(intent("requires_confirmation")),
            PaymentState::RequiresAction(NextAction::SdkData(_))
        ));
    }

    #[test]
    fn unknown_status_or_shape_is_internal() {
        assert!(matches!(
            payment_from_intent(&intent("teleported")),
            Err(ProviderError::Internal(m)) if m.contains("teleported")
        ));
        assert!(matches!(
            payment_from_intent(&json!({ "id": "pi_1" })),
            Err(ProviderError::Internal(_))
        ));
    }

    #[test]
    fn payment_response_2xx_and_non_json() {
        let body = intent("succeeded").to_string();
        assert_eq!(
            payment_from_response(200, &no_headers(), body.as_bytes()).map(|p| p.state),
            Ok(PaymentState::Approved)
        );
        assert!(matches!(
            payment_from_response(200, &no_headers(), b"<html>"),
            Err(ProviderError::Internal(_))
        ));
    }

    // ---- create: declines are outcomes ----

    #[test]
    fn card_error_on_create_is_a_declined_payment() {
        let mut pi = intent("requires_payment_method");
        pi["amount"] = json!(1500);
        let body = json!({ "error": {
            "type": "card_error",
            "code": "card_declined",
            "decline_code": "generic_decline",
            "message": "Your card was declined.",
            "payment_intent": pi,
        }});
        assert_eq!(
            created_payment_from_response(
                402,
                &no_headers(),
                body.to_string().as_bytes(),
                &Money::new(1500, "USD")
            ),
            Ok(Payment {
                reference: "pi_123".into(),
                state: PaymentState::Declined(Decline {
                    code: "generic_decline".into(),
                    message: "Your card was declined.".into(),
                }),
                amount: Money::new(1500, "USD"),
                captured: Some(0),
            })
        );
    }

    #[test]
    fn card_error_without_intent_is_a_declined_error() {
        let body = json!({ "error": {
            "type": "card_error", "code": "card_declined", "message": "Declined."
        }});
        assert_eq!(
            created_payment_from_response(
                402,
                &no_headers(),
                body.to_string().as_bytes(),
                &Money::new(1, "USD")
            ),
            Err(ProviderError::Declined(Decline {
                code: "card_declined".into(),
                message: "Declined.".into(),
            }))
        );
    }

    #[test]
    fn card_error_with_partial_intent_uses_the_requested_amount() {
        let body = json!({ "error": {
            "type": "card_error", "code": "card_declined", "message": "Declined.",
            "payment_intent": { "id": "pi_9" }
        }});
        assert_eq!(
            created_payment_from_response(
                402,
                &no_headers(),
                body.to_string().as_bytes(),
                &Money::new(990, "EUR")
            ),
            Ok(Payment {
                reference: "pi_9".into(),
                state: PaymentState::Declined(Decline {
                    code: "card_declined".into(),
                    message: "Declined.".into(),
                }),
                amount: Money::new(990, "EUR"),
                captured: None,
            })
        );
    }

    #[test]
    fn create_success_maps_the_intent() {
        let body = intent("requires_capture").to_string();
        assert_eq!(
            created_payment_from_response(
                200,
                &no_headers(),
                body.as_bytes(),
                &Money::new(2000, "USD")
            )
            .map(|p| p.state),
            Ok(PaymentState::Authorized)
        );
    }

    // ---- refunds ----

    #[test]
    fn refund_statuses() {
        for (stripe, contract) in [
            ("succeeded", RefundStatus::Succeeded),
            ("pending", RefundStatus::Pending),
            ("requires_action", RefundStatus::Pending),
            ("failed", RefundStatus::Failed),
            ("canceled", RefundStatus::Canceled),
        ] {
            let body = json!({ "id": "re_1", "object": "refund", "amount": 700, "currency": "eur", "status": stripe });
            assert_eq!(
                refund_from_response(200, &no_headers(), body.to_string().as_bytes()),
                Ok(Refund {
                    reference: "re_1".into(),
                    status: contract,
                    amount: Money::new(700, "EUR"),
                }),
                "{stripe}"
            );
        }
        let odd = json!({ "id": "re_1", "amount": 1, "currency": "eur", "status": "weird" });
        assert!(matches!(
            refund_from_object(&odd),
            Err(ProviderError::Internal(_))
        ));
    }

    // ---- errors ----

    #[test]
    fn unauthorized_is_invalid_credentials() {
        let err = stripe_error(
            401,
            json!({
                "type": "invalid_request_error",
                "message": "Invalid API Key provided: sk_test_****1234"
            }),
        );
        assert_eq!(
            err,
            ProviderError::InvalidCredentials("Invalid API Key provided: sk_test_****1234".into())
        );
        assert!(matches!(
            error_from_response(403, &no_headers(), b""),
            ProviderError::InvalidCredentials(_)
        ));
        assert_eq!(validation_from_response(200, &no_headers(), b"{}"), Ok(()));
        assert!(matches!(
            validation_from_response(401, &no_headers(), b"{}"),
            Err(ProviderError::InvalidCredentials(_))
        ));
    }

    #[test]
    fn card_error_is_declined_with_decline_code_or_code() {
        assert_eq!(
            stripe_error(
                402,
                json!({
                    "type": "card_error", "code": "card_declined",
                    "decline_code": "insufficient_funds", "message": "Insufficient funds."
                })
            ),
            ProviderError::Declined(Decline {
                code: "insufficient_funds".into(),
                message: "Insufficient funds.".into(),
            })
        );
        assert_eq!(
            stripe_error(
                402,
                json!({ "type": "card_error", "code": "incorrect_cvc", "message": "Bad CVC." })
            ),
            ProviderError::Declined(Decline {
                code: "incorrect_cvc".into(),
                message: "Bad CVC.".into(),
            })
        );
    }

    #[test]
    fn invalid_request_and_idempotency_errors_carry_code_and_message() {
        assert_eq!(
            stripe_error(
                404,
                json!({
                    "type": "invalid_request_error", "code": "resource_missing",
                    "message": "No such payment_intent: 'pi_x'", "param": "intent"
                })
            ),
            ProviderError::InvalidRequest(
                "resource_missing: No such payment_intent: 'pi_x' (param: intent)".into()
            )
        );
        assert_eq!(
            stripe_error(
                400,
                json!({
                    "type": "invalid_request_error", "code": "payment_intent_unexpected_state",
                    "message": "This PaymentIntent could not be captured."
                })
            ),
            ProviderError::InvalidRequest(
                "payment_intent_unexpected_state: This PaymentIntent could not be captured.".into()
            )
        );
        assert_eq!(
            stripe_error(
                400,
                json!({
                    "type": "idempotency_error",
                    "message": "Keys for idempotent requests can only be used with the same parameters."
                })
            ),
            ProviderError::InvalidRequest(
                "Keys for idempotent requests can only be used with the same parameters.".into()
            )
        );
    }

    #[test]
    fn concurrent_idempotent_request_is_retriable() {
        assert!(matches!(
            stripe_error(409, json!({ "type": "idempotency_error", "code": "idempotency_key_in_use", "message": "busy" })),
            ProviderError::Unavailable(m) if m == "idempotency_key_in_use: busy"
        ));
    }

    #[test]
    fn rate_limit_reads_retry_after() {
        let headers = vec![("Retry-After".to_owned(), "7".to_owned())];
        assert_eq!(
            error_from_response(429, &headers, b""),
            ProviderError::RateLimited(Some(7))
        );
        assert_eq!(
            error_from_response(429, &no_headers(), b"{}"),
            ProviderError::RateLimited(None)
        );
        let bad = vec![(
            "retry-after".to_owned(),
            "Wed, 21 Oct 2015 07:28:00 GMT".to_owned(),
        )];
        assert_eq!(
            error_from_response(429, &bad, b""),
            ProviderError::RateLimited(None)
        );
    }

    #[test]
    fn server_errors_are_unavailable() {
        assert!(matches!(
            stripe_error(500, json!({ "type": "api_error", "message": "Something went wrong." })),
            ProviderError::Unavailable(m) if m == "Something went wrong."
        ));
        assert!(matches!(
            error_from_response(502, &no_headers(), b"<html>bad gateway</html>"),
            ProviderError::Unavailable(_)
        ));
    }

    #[test]
    fn unparseable_error_body_is_internal() {
        assert!(matches!(
            error_from_response(400, &no_headers(), b"not json"),
            ProviderError::Internal(m) if m.contains("HTTP 400")
        ));
        assert!(matches!(
            error_from_response(418, &no_headers(), b"{\"unexpected\":true}"),
            ProviderError::Internal(_)
        ));
    }

    #[test]
    fn scrub_removes_the_secret_everywhere() {
        let key = "sk_test_supersecret";
        assert_eq!(
            scrub(
                ProviderError::InvalidCredentials(format!("bad key {key}!")),
                key
            ),
            ProviderError::InvalidCredentials("bad key [redacted]!".into())
        );
        assert_eq!(
            scrub(
                ProviderError::Declined(Decline {
                    code: "x".into(),
                    message: key.into()
                }),
                key
            ),
            ProviderError::Declined(Decline {
                code: "x".into(),
                message: "[redacted]".into()
            })
        );
        assert_eq!(
            scrub(ProviderError::RateLimited(Some(1)), key),
            ProviderError::RateLimited(Some(1))
        );
    }
}
