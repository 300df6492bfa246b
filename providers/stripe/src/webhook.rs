//! Stripe webhook verification, event normalization and the diagnosis of a
//! signature mismatch. Pure: no network, no clock (the host passes its
//! receive time; `lib.rs` makes the one `GET /v1/events/{id}` a diagnosis
//! needs).
//!
//! # Verification
//!
//! Stripe signs each delivery with the endpoint's secret (`whsec_…`):
//! `Stripe-Signature: t=<unix seconds>,v1=<hex>[,v1=<hex>…]`, where each `v1`
//! is `hex(HMAC-SHA256(secret, "{t}.{raw body}"))` (several while a secret is
//! being rolled). Checks run in this order, each failing with its own
//! [`WebhookError`] variant:
//!
//! 1. header absent → `missing-signature`;
//! 2. header unparsable, no `t`, or no `v1` → `malformed-signature`
//!    (other schemes such as `v0` are ignored, never verified);
//! 3. no `v1` equals the expected digest (constant-time, every `v1` tried) →
//!    `signature-mismatch`; an empty secret never verifies. The component
//!    then asks Stripe about the claimed event ([`diagnose_mismatch`]) to
//!    answer `tampered-body` or `wrong-secret` where it can;
//! 4. `|received_at − t| > 300` → `timestamp-out-of-tolerance(received_at − t)`;
//! 5. the verified body is not a readable event → `invalid-payload`.
//!
//! The signature is checked *before* the timestamp, as Stripe's own libraries
//! do: the timestamp is only trusted once it is known to be signed, and an
//! unsigned request learns nothing about the tolerance window.
//!
//! # Events
//!
//! | Stripe `type` | contract kind | amount |
//! |---|---|---|
//! | `payment_intent.succeeded` | `payment-succeeded` | `amount_received` (else `amount`) |
//! | `payment_intent.amount_capturable_updated` | `payment-authorized` | `amount_capturable` (else `amount`) |
//! | `payment_intent.payment_failed` | `payment-failed` | `amount` |
//! | `payment_intent.canceled` | `payment-canceled` | `amount` |
//! | `payment_intent.requires_action` | `payment-requires-action` | `amount` |
//! | `charge.refunded` | `refund-succeeded` when it lists its refunds, else `other` | the newest refund's `amount` (never the cumulative `amount_refunded`) |
//! | `refund.created`, `refund.updated` | by refund status: `succeeded` → `refund-succeeded`, `pending`/`requires_action` → `refund-pending`, `failed`/`canceled` → `refund-failed` | `amount` |
//! | `refund.failed` | `refund-failed` | `amount` |
//! | anything else | `other` | — |
//!
//! `payment-reference` is the PaymentIntent id (`object.id` for intents,
//! `object.payment_intent` for charges and refunds); `refund-reference` is the
//! Refund id (for `charge.refunded`, the newest entry of `object.refunds.data`
//! when Stripe included it); `order-id` comes from `metadata.order_id` and
//! `refund-id` from `metadata.payhost_refund_id`.

use payhost_provider_sdk::http::header_value;
use payhost_provider_sdk::signature::{constant_time_eq, from_hex, hmac_sha256, to_hex};
use payhost_provider_sdk::{EventKind, Money, WebhookError, WebhookEvent, WebhookRequest};
use serde_json::Value;

use crate::api::{ORDER_ID_KEY, REFUND_ID_KEY};

/// The signature header (header names reach the component lower-case).
pub const SIGNATURE_HEADER: &str = "stripe-signature";

/// Largest accepted distance, in seconds, between the signed timestamp and
/// the host's receive time (Stripe's default tolerance).
pub const TOLERANCE_SECS: i64 = 300;

/// Verifies and normalizes one delivery. Stripe sends one event per delivery,
/// so the list has exactly one element.
pub fn parse_webhook(request: &WebhookRequest) -> Result<Vec<WebhookEvent>, WebhookError> {
    verify_signature(
        &request.headers,
        &request.body,
        &request.secret,
        request.received_at,
    )?;
    Ok(vec![parse_event(&request.body)?])
}

/// Checks the `Stripe-Signature` header of a delivery received at `now`
/// (unix seconds) against `body` under `secret`; see the module docs for the
/// order of checks.
pub fn verify_signature(
    headers: &[(String, String)],
    body: &[u8],
    secret: &str,
    now: i64,
) -> Result<(), WebhookError> {
    let header = header_value(headers, SIGNATURE_HEADER).ok_or(WebhookError::MissingSignature)?;
    let (timestamp, signatures) = parse_signature_header(header)?;

    let expected = hmac_sha256(secret.as_bytes(), &signed_payload(timestamp, body));
    // Every candidate is compared (no early exit), so timing does not reveal
    // which one matched.
    let matched = signatures
        .iter()
        .filter_map(|sig| from_hex(sig))
        .fold(false, |found, sig| {
            found | constant_time_eq(&expected, &sig)
        });
    if secret.is_empty() || !matched {
        return Err(WebhookError::SignatureMismatch);
    }

    let age = now.saturating_sub(timestamp);
    if age.unsigned_abs() > TOLERANCE_SECS.unsigned_abs() {
        return Err(WebhookError::TimestampOutOfTolerance(age));
    }
    Ok(())
}

/// What a delivery whose signature did not verify claims to be: the event id
/// and, for Connect events, the connected account (`Stripe-Account`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedEvent {
    pub id: String,
    pub account: Option<String>,
    /// The body's `livemode`, to compare with the mode of the key.
    pub livemode: Option<bool>,
}

impl ClaimedEvent {
    /// Whether the tenant's key can see this event at all: a test key finds
    /// no live event and a live key no test event, so asking would prove
    /// nothing. `true` when either mode is unknown.
    pub fn visible_to(&self, secret_key: &str) -> bool {
        let key_live = ["sk_live_", "rk_live_"]
            .iter()
            .any(|p| secret_key.starts_with(p));
        let key_test = ["sk_test_", "rk_test_"]
            .iter()
            .any(|p| secret_key.starts_with(p));
        match self.livemode {
            Some(live) => !(live && key_test || !live && key_live),
            None => true,
        }
    }
}

/// Reads the claim of an *unverified* body. `None` when the body cannot be a
/// Stripe event at all (not JSON, no `id`, or an id that is not Stripe's
/// `evt_` + alphanumerics), which is then itself the proof of tampering.
/// The id goes into a URL path, so anything else is refused, never escaped.
pub fn claimed_event(body: &[u8]) -> Option<ClaimedEvent> {
    let event: Value = serde_json::from_slice(body).ok()?;
    let id = str_field(&event, "id").filter(|id| is_stripe_id(id, "evt_"))?;
    let account = str_field(&event, "account")
        .filter(|a| is_stripe_id(a, "acct_"))
        .map(str::to_owned);
    Some(ClaimedEvent {
        id: id.to_owned(),
        account,
        livemode: event.get("livemode").and_then(Value::as_bool),
    })
}

fn is_stripe_id(id: &str, prefix: &str) -> bool {
    id.len() <= 255
        && id
            .strip_prefix(prefix)
            .is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// Stripe's answer to `GET /v1/events/{id}`, after a signature mismatch.
pub struct GatewayCopy<'a> {
    pub status: u16,
    pub body: &'a [u8],
}

/// Turns a signature mismatch into the most precise rejection the gateway's
/// answer supports:
///
/// | Stripe says | rejection |
/// |---|---|
/// | the body is no Stripe event ([`claimed_event`] is `None`) | `tampered-body` |
/// | 200 with the same event ([`same_event`]) | `wrong-secret` |
/// | 200 with a different event | `tampered-body` |
/// | 200 rendered in another API version, or not an event | `signature-mismatch` |
/// | 404 `resource_missing` (the tenant's account has no such event) | `tampered-body` |
/// | anything else (401, 429, 5xx, unreachable: `None`) | `signature-mismatch` |
///
/// The caller does not ask at all when the key cannot see the event
/// ([`ClaimedEvent::visible_to`]: a test key and a live event, or the
/// reverse); that stays `signature-mismatch` too. An event of *another*
/// Stripe account (a webhook endpoint of account B pointed at tenant A) is
/// reported as `tampered-body`: Stripe does not vouch for it to this tenant.
///
/// Every outcome is a rejection: a body the gateway vouches for still came
/// without a valid signature, and is never turned into events.
pub fn diagnose_mismatch(body: &[u8], copy: Option<GatewayCopy<'_>>) -> WebhookError {
    match copy {
        Some(GatewayCopy {
            status: 200,
            body: theirs,
        }) => match same_event(body, theirs) {
            Some(true) => WebhookError::WrongSecret,
            Some(false) => WebhookError::TamperedBody,
            // A 200 that is no event (a proxy's page) vouches for nothing.
            None => WebhookError::SignatureMismatch,
        },
        Some(GatewayCopy {
            status: 404,
            body: theirs,
        }) if is_resource_missing(theirs) => WebhookError::TamperedBody,
        _ => WebhookError::SignatureMismatch,
    }
}

/// Whether a delivered body and Stripe's copy of the event describe the same
/// event: equal `id`, `type`, `created`, `livemode`, `account` and `data`
/// (the object and `previous_attributes`). `pending_webhooks` is left out
/// because it counts down as deliveries succeed; `request` and `api_version`
/// because they describe the rendering, not the event. `None` (cannot
/// tell) when Stripe's copy is not an event object, or when the two name
/// different `api_version`s: a webhook endpoint pinned to another version
/// receives `data.object` rendered differently from the API's copy.
pub fn same_event(ours: &[u8], theirs: &[u8]) -> Option<bool> {
    const FIELDS: [&str; 6] = ["id", "type", "created", "livemode", "account", "data"];
    let theirs = serde_json::from_slice::<Value>(theirs)
        .ok()
        .filter(|copy| str_field(copy, "id").is_some() && copy.get("data").is_some())?;
    let Ok(ours) = serde_json::from_slice::<Value>(ours) else {
        return Some(false);
    };
    if let (Some(a), Some(b)) = (
        str_field(&ours, "api_version"),
        str_field(&theirs, "api_version"),
    ) && a != b
    {
        return None;
    }
    Some(FIELDS.iter().all(|f| ours.get(f) == theirs.get(f)))
}

fn is_resource_missing(body: &[u8]) -> bool {
    serde_json::from_slice::<Value>(body)
        .is_ok_and(|v| v.pointer("/error/code") == Some(&Value::from("resource_missing")))
}

/// Splits `t=…,v1=…,v1=…` into the timestamp and the `v1` signatures.
fn parse_signature_header(header: &str) -> Result<(i64, Vec<&str>), WebhookError> {
    let malformed = |why: &str| WebhookError::MalformedSignature(why.to_owned());
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for element in header.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (key, value) = element
            .split_once('=')
            .ok_or_else(|| malformed("element without `=`"))?;
        match key.trim() {
            "t" => {
                if timestamp.is_some() {
                    return Err(malformed("more than one timestamp"));
                }
                let t = value
                    .trim()
                    .parse::<i64>()
                    .map_err(|_| malformed("timestamp is not an integer"))?;
                timestamp = Some(t);
            }
            "v1" => signatures.push(value.trim()),
            // v0 (test-mode legacy) and unknown schemes are never verified.
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or_else(|| malformed("no timestamp (`t=`)"))?;
    if signatures.is_empty() {
        return Err(malformed("no `v1` signature"));
    }
    Ok((timestamp, signatures))
}

fn signed_payload(timestamp: i64, body: &[u8]) -> Vec<u8> {
    let mut payload = format!("{timestamp}.").into_bytes();
    payload.extend_from_slice(body);
    payload
}

/// A `Stripe-Signature` header value for `body` signed at `timestamp`, as
/// Stripe would send it. For tests and gateway emulators.
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let digest = hmac_sha256(secret.as_bytes(), &signed_payload(timestamp, body));
    format!("t={timestamp},v1={}", to_hex(&digest))
}

/// Normalizes a (verified) event body; see the module docs for the mapping.
pub fn parse_event(body: &[u8]) -> Result<WebhookEvent, WebhookError> {
    let invalid = |why: &str| WebhookError::InvalidPayload(why.to_owned());
    let event: Value =
        serde_json::from_slice(body).map_err(|_| invalid("the body is not a JSON event"))?;
    let id = str_field(&event, "id").ok_or_else(|| invalid("the event has no `id`"))?;
    let gateway_type =
        str_field(&event, "type").ok_or_else(|| invalid("the event has no `type`"))?;
    let object = event
        .get("data")
        .and_then(|d| d.get("object"))
        .filter(|o| o.is_object())
        .ok_or_else(|| invalid("the event has no `data.object`"))?;

    let mut out = WebhookEvent {
        id: id.to_owned(),
        kind: EventKind::Other,
        gateway_type: gateway_type.to_owned(),
        payment_reference: None,
        refund_reference: None,
        amount: None,
        order_id: None,
        refund_id: None,
    };

    let intent_kind = match gateway_type {
        "payment_intent.succeeded" => Some((EventKind::PaymentSucceeded, "amount_received")),
        "payment_intent.amount_capturable_updated" => {
            Some((EventKind::PaymentAuthorized, "amount_capturable"))
        }
        "payment_intent.payment_failed" => Some((EventKind::PaymentFailed, "amount")),
        "payment_intent.canceled" => Some((EventKind::PaymentCanceled, "amount")),
        "payment_intent.requires_action" => Some((EventKind::PaymentRequiresAction, "amount")),
        _ => None,
    };
    if let Some((kind, amount_field)) = intent_kind {
        out.kind = kind;
        out.payment_reference = Some(
            str_field(object, "id")
                .ok_or_else(|| invalid("the PaymentIntent has no `id`"))?
                .to_owned(),
        );
        out.amount = money(object, amount_field).or_else(|| money(object, "amount"));
        out.order_id = metadata(object, ORDER_ID_KEY);
        return Ok(out);
    }

    match gateway_type {
        "charge.refunded" => {
            // `amount_refunded` is cumulative for the charge: booking it as
            // one refund would count earlier refunds again. The event names
            // one refund only through the newest entry of `refunds.data`
            // (absent from the charge object since API version 2022-11-15);
            // without it the event is `other`, and the `refund.*` event of
            // the same refund carries it.
            let newest = object
                .get("refunds")
                .and_then(|r| r.get("data"))
                .and_then(Value::as_array)
                .and_then(|list| list.first());
            let Some(refund) = newest else {
                return Ok(out);
            };
            out.kind = EventKind::RefundSucceeded;
            out.payment_reference = id_or_object(object.get("payment_intent"));
            out.order_id = metadata(object, ORDER_ID_KEY);
            out.refund_reference = str_field(refund, "id").map(str::to_owned);
            out.refund_id = metadata(refund, REFUND_ID_KEY);
            out.amount = money(refund, "amount");
            Ok(out)
        }
        "refund.created" | "refund.updated" | "refund.failed" => {
            out.kind = if gateway_type == "refund.failed" {
                EventKind::RefundFailed
            } else {
                match str_field(object, "status") {
                    Some("succeeded") => EventKind::RefundSucceeded,
                    Some("pending" | "requires_action") => EventKind::RefundPending,
                    Some("failed" | "canceled") => EventKind::RefundFailed,
                    _ => EventKind::Other,
                }
            };
            out.refund_reference = Some(
                str_field(object, "id")
                    .ok_or_else(|| invalid("the Refund has no `id`"))?
                    .to_owned(),
            );
            out.payment_reference = id_or_object(object.get("payment_intent"));
            out.amount = money(object, "amount");
            out.order_id = metadata(object, ORDER_ID_KEY);
            out.refund_id = metadata(object, REFUND_ID_KEY);
            Ok(out)
        }
        _ => Ok(out),
    }
}

fn str_field<'a>(value: &'a Value, key: &str) -> Option<&'a str> {
    value
        .get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// `object[amount_field]` with `object.currency`, upper-cased; `None` when
/// either is missing (a zero amount counts as missing, so callers can fall
/// back to another field).
fn money(object: &Value, amount_field: &str) -> Option<Money> {
    let minor = object
        .get(amount_field)
        .and_then(Value::as_u64)
        .filter(|m| *m > 0)?;
    let currency = str_field(object, "currency")?;
    Some(Money::new(minor, currency))
}

fn metadata(object: &Value, key: &str) -> Option<String> {
    object
        .get("metadata")
        .and_then(|m| str_field(m, key))
        .map(str::to_owned)
}

/// An id field that may also arrive expanded into an object.
fn id_or_object(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(id) if !id.is_empty() => Some(id.clone()),
        object @ Value::Object(_) => str_field(object, "id").map(str::to_owned),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SECRET: &str = "whsec_test_secret";
    const NOW: i64 = 1_700_000_000;

    fn body() -> Vec<u8> {
        json!({
            "id": "evt_1",
            "object": "event",
            "type": "payment_intent.succeeded",
            "created": NOW,
            "data": { "object": {
                "id": "pi_123", "object": "payment_intent", "amount": 2000,
                "amount_received": 2000, "currency": "usd", "status": "succeeded",
                "metadata": { "order_id": "ord_42" }
            }}
        })
        .to_string()
        .into_bytes()
    }

    fn headers(value: &str) -> Vec<(String, String)> {
        vec![
            ("content-type".into(), "application/json".into()),
            (SIGNATURE_HEADER.into(), value.into()),
        ]
    }

    fn request(signature: &str, received_at: i64) -> WebhookRequest {
        WebhookRequest {
            headers: headers(signature),
            body: body(),
            secret: SECRET.into(),
            received_at,
        }
    }

    fn event(kind: &str, object: Value) -> WebhookEvent {
        let body = json!({ "id": "evt_9", "type": kind, "data": { "object": object } });
        match parse_event(body.to_string().as_bytes()) {
            Ok(event) => event,
            Err(e) => panic!("{kind}: {e:?}"),
        }
    }

    // ---- signatures ----

    #[test]
    fn valid_signature_yields_the_event() {
        let events = parse_webhook(&request(&sign(SECRET, NOW, &body()), NOW + 10));
        assert_eq!(
            events,
            Ok(vec![WebhookEvent {
                id: "evt_1".into(),
                kind: EventKind::PaymentSucceeded,
                gateway_type: "payment_intent.succeeded".into(),
                payment_reference: Some("pi_123".into()),
                refund_reference: None,
                amount: Some(Money::new(2000, "USD")),
                order_id: Some("ord_42".into()),
                refund_id: None,
            }])
        );
    }

    #[test]
    fn known_stripe_signature_vector() {
        // Computed independently: hex(HMAC-SHA256("whsec_test_secret", "1700000000.{}")).
        let digest = to_hex(&hmac_sha256(SECRET.as_bytes(), b"1700000000.{}"));
        assert_eq!(
            sign(SECRET, NOW, b"{}"),
            format!("t=1700000000,v1={digest}")
        );
        assert_eq!(
            verify_signature(&headers(&sign(SECRET, NOW, b"{}")), b"{}", SECRET, NOW),
            Ok(())
        );
    }

    #[test]
    fn tampered_body_is_a_mismatch() {
        let signature = sign(SECRET, NOW, &body());
        let mut tampered = body();
        tampered.extend_from_slice(b" ");
        assert_eq!(
            verify_signature(&headers(&signature), &tampered, SECRET, NOW),
            Err(WebhookError::SignatureMismatch)
        );
    }

    #[test]
    fn wrong_secret_is_a_mismatch() {
        let signature = sign("whsec_other", NOW, &body());
        assert_eq!(
            verify_signature(&headers(&signature), &body(), SECRET, NOW),
            Err(WebhookError::SignatureMismatch)
        );
    }

    #[test]
    fn empty_secret_never_verifies() {
        let signature = sign("", NOW, &body());
        assert_eq!(
            verify_signature(&headers(&signature), &body(), "", NOW),
            Err(WebhookError::SignatureMismatch)
        );
    }

    #[test]
    fn stale_and_future_timestamps_are_out_of_tolerance() {
        let signature = sign(SECRET, NOW, &body());
        assert_eq!(
            verify_signature(&headers(&signature), &body(), SECRET, NOW + 301),
            Err(WebhookError::TimestampOutOfTolerance(301))
        );
        assert_eq!(
            verify_signature(&headers(&signature), &body(), SECRET, NOW - 400),
            Err(WebhookError::TimestampOutOfTolerance(-400))
        );
        assert_eq!(
            verify_signature(&headers(&signature), &body(), SECRET, NOW + 300),
            Ok(()),
            "the boundary is inclusive"
        );
    }

    #[test]
    fn signature_is_checked_before_the_timestamp() {
        let forged = format!("t={},v1={}", NOW - 10_000, "00".repeat(32));
        assert_eq!(
            verify_signature(&headers(&forged), &body(), SECRET, NOW),
            Err(WebhookError::SignatureMismatch)
        );
    }

    #[test]
    fn missing_header() {
        let no_sig = vec![("content-type".to_owned(), "application/json".to_owned())];
        assert_eq!(
            verify_signature(&no_sig, &body(), SECRET, NOW),
            Err(WebhookError::MissingSignature)
        );
    }

    #[test]
    fn header_name_is_matched_case_insensitively() {
        let h = vec![("Stripe-Signature".to_owned(), sign(SECRET, NOW, &body()))];
        assert_eq!(verify_signature(&h, &body(), SECRET, NOW), Ok(()));
    }

    #[test]
    fn malformed_headers() {
        let good = sign(SECRET, NOW, &body());
        let v1 = good
            .split_once(",v1=")
            .map(|(_, v)| v.to_owned())
            .unwrap_or_default();
        for header in [
            String::new(),
            format!("v1={v1}"),                 // no timestamp
            format!("t={NOW}"),                 // no v1
            format!("t={NOW},v0={v1}"),         // only an ignored scheme
            format!("t=yesterday,v1={v1}"),     // timestamp not an integer
            format!("t={NOW},t={NOW},v1={v1}"), // two timestamps
            format!("t={NOW},garbage,v1={v1}"), // element without '='
        ] {
            assert!(
                matches!(
                    verify_signature(&headers(&header), &body(), SECRET, NOW),
                    Err(WebhookError::MalformedSignature(_))
                ),
                "{header:?} should be malformed"
            );
        }
    }

    #[test]
    fn any_matching_v1_verifies_and_v0_is_ignored() {
        let good = sign(SECRET, NOW, &body());
        let v1 = good
            .split_once(",v1=")
            .map(|(_, v)| v.to_owned())
            .unwrap_or_default();
        let rolled = format!(
            "t={NOW},v1={},v1={v1},v0={}",
            "ab".repeat(32),
            "cd".repeat(32)
        );
        assert_eq!(
            verify_signature(&headers(&rolled), &body(), SECRET, NOW),
            Ok(())
        );
        let not_hex = format!("t={NOW}, v1=zz, v1={v1}");
        assert_eq!(
            verify_signature(&headers(&not_hex), &body(), SECRET, NOW),
            Ok(())
        );
        // A valid digest offered only under v0 must not verify.
        let v0_only = format!("t={NOW},v1={},v0={v1}", "ab".repeat(32));
        assert_eq!(
            verify_signature(&headers(&v0_only), &body(), SECRET, NOW),
            Err(WebhookError::SignatureMismatch)
        );
    }

    #[test]
    fn unreadable_payload_after_valid_signature() {
        for payload in [
            &b"not json"[..],
            br#"{"type":"x","data":{"object":{}}}"#,
            br#"{"id":"evt_1","type":"x"}"#,
        ] {
            let req = WebhookRequest {
                headers: headers(&sign(SECRET, NOW, payload)),
                body: payload.to_vec(),
                secret: SECRET.into(),
                received_at: NOW,
            };
            assert!(
                matches!(parse_webhook(&req), Err(WebhookError::InvalidPayload(_))),
                "{}",
                String::from_utf8_lossy(payload)
            );
        }
    }

    // ---- event mapping ----

    #[test]
    fn payment_intent_events() {
        let pi = json!({
            "id": "pi_1", "amount": 5000, "amount_capturable": 5000, "amount_received": 0,
            "currency": "eur", "metadata": { "order_id": "ord_7" }
        });
        for (kind, expected) in [
            ("payment_intent.payment_failed", EventKind::PaymentFailed),
            ("payment_intent.canceled", EventKind::PaymentCanceled),
            (
                "payment_intent.requires_action",
                EventKind::PaymentRequiresAction,
            ),
            (
                "payment_intent.amount_capturable_updated",
                EventKind::PaymentAuthorized,
            ),
            ("payment_intent.succeeded", EventKind::PaymentSucceeded),
        ] {
            let e = event(kind, pi.clone());
            assert_eq!(e.kind, expected, "{kind}");
            assert_eq!(e.gateway_type, kind);
            assert_eq!(e.id, "evt_9");
            assert_eq!(e.payment_reference.as_deref(), Some("pi_1"), "{kind}");
            assert_eq!(e.amount, Some(Money::new(5000, "EUR")), "{kind}");
            assert_eq!(e.order_id.as_deref(), Some("ord_7"), "{kind}");
            assert_eq!(e.refund_reference, None);
        }
    }

    #[test]
    fn partial_capture_reports_the_received_amount() {
        let e = event(
            "payment_intent.succeeded",
            json!({ "id": "pi_1", "amount": 5000, "amount_received": 3000, "currency": "usd" }),
        );
        assert_eq!(e.amount, Some(Money::new(3000, "USD")));
        assert_eq!(e.order_id, None);
    }

    #[test]
    fn charge_refunded() {
        let e = event(
            "charge.refunded",
            json!({
                "id": "ch_1", "object": "charge", "payment_intent": "pi_1",
                "amount": 5000, "amount_refunded": 1500, "currency": "gbp",
                "metadata": { "order_id": "ord_7" },
                "refunds": { "object": "list", "data": [
                    { "id": "re_2", "amount": 1000, "currency": "gbp", "metadata": { "payhost_refund_id": "rf_2" } },
                    { "id": "re_1", "amount": 500, "currency": "gbp", "metadata": { "payhost_refund_id": "rf_1" } }
                ]}
            }),
        );
        assert_eq!(
            e,
            WebhookEvent {
                id: "evt_9".into(),
                kind: EventKind::RefundSucceeded,
                gateway_type: "charge.refunded".into(),
                payment_reference: Some("pi_1".into()),
                refund_reference: Some("re_2".into()),
                amount: Some(Money::new(1000, "GBP")),
                order_id: Some("ord_7".into()),
                refund_id: Some("rf_2".into()),
            }
        );
        let bare = event(
            "charge.refunded",
            json!({ "id": "ch_1", "payment_intent": "pi_1", "amount_refunded": 100, "currency": "usd" }),
        );
        assert_eq!(
            bare.kind,
            EventKind::Other,
            "no refund named: the refund.* event books it"
        );
        assert_eq!(bare.refund_reference, None);
        assert_eq!(bare.amount, None);
    }

    #[test]
    fn refund_events_by_status() {
        for (kind, status, expected) in [
            ("refund.created", "succeeded", EventKind::RefundSucceeded),
            ("refund.updated", "succeeded", EventKind::RefundSucceeded),
            ("refund.created", "pending", EventKind::RefundPending),
            (
                "refund.updated",
                "requires_action",
                EventKind::RefundPending,
            ),
            ("refund.updated", "failed", EventKind::RefundFailed),
            ("refund.updated", "canceled", EventKind::RefundFailed),
            ("refund.failed", "failed", EventKind::RefundFailed),
            ("refund.failed", "succeeded", EventKind::RefundFailed),
        ] {
            let e = event(
                kind,
                json!({
                    "id": "re_1", "object": "refund", "status": status, "amount": 700,
                    "currency": "usd", "payment_intent": "pi_1",
                    "metadata": { "payhost_refund_id": "rf_1" }
                }),
            );
            assert_eq!(e.kind, expected, "{kind} {status}");
            assert_eq!(e.refund_reference.as_deref(), Some("re_1"));
            assert_eq!(e.payment_reference.as_deref(), Some("pi_1"));
            assert_eq!(e.amount, Some(Money::new(700, "USD")));
            assert_eq!(e.refund_id.as_deref(), Some("rf_1"));
        }
    }

    #[test]
    fn expanded_payment_intent_on_a_refund() {
        let e = event(
            "refund.updated",
            json!({ "id": "re_1", "status": "succeeded", "payment_intent": { "id": "pi_5" } }),
        );
        assert_eq!(e.payment_reference.as_deref(), Some("pi_5"));
    }

    #[test]
    fn other_events_are_passed_through_as_other() {
        let e = event("customer.created", json!({ "id": "cus_1" }));
        assert_eq!(
            e,
            WebhookEvent {
                id: "evt_9".into(),
                kind: EventKind::Other,
                gateway_type: "customer.created".into(),
                payment_reference: None,
                refund_reference: None,
                amount: None,
                order_id: None,
                refund_id: None,
            }
        );
    }

    // ---- diagnosing a mismatch ----

    /// Stripe's copy of `body()`'s event as `GET /v1/events/evt_1` renders
    /// it: same event, different key order, a different `pending_webhooks`.
    fn stripes_copy() -> Vec<u8> {
        let mut copy: Value = serde_json::from_slice(&body()).unwrap();
        copy["pending_webhooks"] = json!(0);
        copy["request"] = json!({ "id": "req_1", "idempotency_key": null });
        copy.to_string().into_bytes()
    }

    fn ok(body: &[u8]) -> Option<GatewayCopy<'_>> {
        Some(GatewayCopy { status: 200, body })
    }

    const NO_SUCH_EVENT: &[u8] = br#"{"error":{"code":"resource_missing","message":"No such event: 'evt_1'","param":"id","type":"invalid_request_error"}}"#;

    #[test]
    fn the_claimed_event_id_must_look_like_stripes() {
        assert_eq!(
            claimed_event(&body()),
            Some(ClaimedEvent {
                id: "evt_1".into(),
                account: None,
                livemode: None,
            })
        );
        let connect = json!({ "id": "evt_2", "account": "acct_9", "livemode": true }).to_string();
        assert_eq!(
            claimed_event(connect.as_bytes()),
            Some(ClaimedEvent {
                id: "evt_2".into(),
                account: Some("acct_9".into()),
                livemode: Some(true),
            })
        );
        for hostile in [
            json!({ "id": "evt_1/../../v1/balance" }),
            json!({ "id": "evt_1?expand=x" }),
            json!({ "id": "pi_1" }),
            json!({ "id": "evt_" }),
            json!({ "id": 7 }),
            json!({ "type": "payment_intent.succeeded" }),
        ] {
            assert_eq!(
                claimed_event(hostile.to_string().as_bytes()),
                None,
                "{hostile}"
            );
        }
        assert_eq!(claimed_event(b"not json"), None);
        let smuggled = json!({ "id": "evt_1", "account": "acct_1\r\nx: y" }).to_string();
        assert_eq!(claimed_event(smuggled.as_bytes()).unwrap().account, None);
    }

    #[test]
    fn stripes_identical_copy_means_the_secret_is_wrong() {
        assert_eq!(
            diagnose_mismatch(&body(), ok(&stripes_copy())),
            WebhookError::WrongSecret
        );
    }

    #[test]
    fn any_difference_in_the_event_means_the_body_was_tampered_with() {
        let copy = stripes_copy();
        for (pointer, value) in [
            ("/data/object/amount_received", json!(1)),
            ("/data/object/metadata/order_id", json!("ord_other")),
            ("/type", json!("payment_intent.canceled")),
            ("/created", json!(NOW + 1)),
        ] {
            let mut ours: Value = serde_json::from_slice(&body()).unwrap();
            *ours.pointer_mut(pointer).unwrap() = value;
            assert_eq!(
                diagnose_mismatch(ours.to_string().as_bytes(), ok(&copy)),
                WebhookError::TamperedBody,
                "{pointer}"
            );
        }
        let mut added: Value = serde_json::from_slice(&body()).unwrap();
        added["data"]["previous_attributes"] = json!({ "status": "processing" });
        assert_eq!(
            diagnose_mismatch(added.to_string().as_bytes(), ok(&copy)),
            WebhookError::TamperedBody
        );
    }

    #[test]
    fn another_api_version_decides_nothing() {
        let mut ours: Value = serde_json::from_slice(&body()).unwrap();
        ours["api_version"] = json!("2024-06-20");
        let mut copy: Value = serde_json::from_slice(&stripes_copy()).unwrap();
        copy["api_version"] = json!("2020-08-27");
        copy["data"]["object"]["charges"] = json!({ "object": "list", "data": [] });
        assert_eq!(
            diagnose_mismatch(ours.to_string().as_bytes(), ok(copy.to_string().as_bytes())),
            WebhookError::SignatureMismatch
        );
    }

    #[test]
    fn a_key_only_sees_events_of_its_own_mode() {
        let claim = |livemode| ClaimedEvent {
            id: "evt_1".into(),
            account: None,
            livemode,
        };
        assert!(!claim(Some(true)).visible_to("sk_test_1"));
        assert!(!claim(Some(false)).visible_to("rk_live_1"));
        assert!(claim(Some(true)).visible_to("sk_live_1"));
        assert!(claim(Some(false)).visible_to("sk_test_1"));
        assert!(claim(None).visible_to("sk_test_1"));
        assert!(claim(Some(true)).visible_to("unknown_prefix"));
    }

    #[test]
    fn an_event_stripe_does_not_know_is_tampered() {
        let missing = Some(GatewayCopy {
            status: 404,
            body: NO_SUCH_EVENT,
        });
        assert_eq!(
            diagnose_mismatch(&body(), missing),
            WebhookError::TamperedBody
        );
    }

    #[test]
    fn without_a_clear_answer_the_mismatch_stays_undetermined() {
        let unrecognized_url =
            br#"{"error":{"message":"Unrecognized request URL","type":"invalid_request_error"}}"#;
        for copy in [
            None,
            Some(GatewayCopy {
                status: 404,
                body: unrecognized_url,
            }),
            Some(GatewayCopy {
                status: 401,
                body: b"{}",
            }),
            Some(GatewayCopy {
                status: 429,
                body: b"{}",
            }),
            Some(GatewayCopy {
                status: 500,
                body: b"{}",
            }),
        ] {
            assert_eq!(
                diagnose_mismatch(&body(), copy),
                WebhookError::SignatureMismatch
            );
        }
        // A 200 that is not an event (a proxy's page) decides nothing.
        for page in [&b"<html>"[..], b"{}", br#"{"id":"evt_1"}"#] {
            assert_eq!(
                diagnose_mismatch(&body(), ok(page)),
                WebhookError::SignatureMismatch
            );
        }
    }
}
