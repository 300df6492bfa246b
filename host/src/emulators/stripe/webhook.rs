//! Stripe events and their delivery to subscribed endpoints.
//!
//! Every state change builds one event (`evt_…`, API version
//! [`API_VERSION`]). Delivery is a spawned task per (event, endpoint): it POSTs
//! the JSON with a fresh `Stripe-Signature` on every attempt and retries a
//! non-2xx answer or a connection error with exponential backoff, at most
//! [`MAX_ATTEMPTS`] times. Nothing waits for delivery, so an API response is
//! never delayed by a slow or dead endpoint. Like Stripe's, delivery is
//! at-least-once and unordered.

use std::sync::Arc;
use std::time::Duration;

use axum::http::header;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::sync::watch;

use super::model::{random_id, unix_now};

/// The API version events are rendered in.
pub(crate) const API_VERSION: &str = "2024-06-20";

/// Attempts per (event, endpoint) before delivery is abandoned.
pub(crate) const MAX_ATTEMPTS: u32 = 3;

/// Wait before the second attempt; doubled before each further one.
const FIRST_BACKOFF: Duration = Duration::from_millis(200);

/// The full `Stripe-Signature` header value for `body` sent at `timestamp`
/// (unix seconds): `t=<timestamp>,v1=<hex HMAC-SHA256 of "{timestamp}.{body}"
/// keyed with secret>`, exactly as Stripe signs webhook payloads.
pub fn sign_payload(secret: &str, timestamp: i64, body: &[u8]) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!(
        "t={timestamp},v1={}",
        hex::encode(mac.finalize().into_bytes())
    )
}

/// An endpoint registered with `StripeEmulator::subscribe_webhooks`.
#[derive(Clone)]
pub(crate) struct Subscription {
    pub url: String,
    pub secret: String,
}

// The secret must never reach a log line.
impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("url", &self.url)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// Which request caused an event (Stripe's `event.request`).
#[derive(Debug, Clone, Default)]
pub(crate) struct Cause {
    pub request_id: Option<String>,
    pub idempotency_key: Option<String>,
}

/// Builds the event JSON Stripe would send for `kind` about `object`.
pub(crate) fn event(kind: &str, object: Value, cause: &Cause, pending_webhooks: usize) -> Value {
    json!({
        "id": random_id("evt"),
        "object": "event",
        "api_version": API_VERSION,
        "created": unix_now(),
        "data": { "object": object },
        "livemode": false,
        "pending_webhooks": pending_webhooks,
        "request": {
            "id": cause.request_id,
            "idempotency_key": cause.idempotency_key,
        },
        "type": kind,
    })
}

/// One event waiting to be delivered to one endpoint.
#[derive(Debug)]
pub(crate) struct Delivery {
    pub subscription: Subscription,
    pub body: Bytes,
    /// Wait before the first attempt (the chaos control's reordering).
    pub delay: Duration,
}

/// Spawns the delivery of `delivery`; returns at once. The task stops early
/// when `shutdown` turns true (the emulator was dropped).
pub(crate) fn spawn_delivery(
    client: Arc<reqwest::Client>,
    delivery: Delivery,
    mut shutdown: watch::Receiver<bool>,
) {
    tokio::spawn(async move {
        let Delivery {
            subscription,
            body,
            delay,
        } = delivery;
        if !delay.is_zero() {
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                _ = shutdown.wait_for(|stopped| *stopped) => return,
            }
        }
        let mut backoff = FIRST_BACKOFF;
        for attempt in 1..=MAX_ATTEMPTS {
            let signature = sign_payload(&subscription.secret, unix_now(), &body);
            let send = client
                .post(&subscription.url)
                .header(header::CONTENT_TYPE, "application/json")
                .header("Stripe-Signature", signature)
                .body(body.clone())
                .send();
            let outcome = tokio::select! {
                outcome = send => outcome,
                _ = shutdown.wait_for(|stopped| *stopped) => return,
            };
            match outcome {
                Ok(response) if response.status().is_success() => return,
                Ok(response) => tracing::debug!(
                    url = %subscription.url,
                    attempt,
                    status = %response.status(),
                    "stripe emulator: webhook endpoint refused the event"
                ),
                Err(error) => tracing::debug!(
                    url = %subscription.url,
                    attempt,
                    %error,
                    "stripe emulator: webhook delivery failed"
                ),
            }
            if attempt < MAX_ATTEMPTS {
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    _ = shutdown.wait_for(|stopped| *stopped) => return,
                }
                backoff *= 2;
            }
        }
        tracing::warn!(
            url = %subscription.url,
            attempts = MAX_ATTEMPTS,
            "stripe emulator: webhook delivery abandoned"
        );
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_an_independently_computed_vector() {
        // Computed with `printf '%s' '1700000000.{"id":"evt_test"}' |
        // openssl dgst -sha256 -hmac whsec_test_secret`.
        assert_eq!(
            sign_payload("whsec_test_secret", 1_700_000_000, br#"{"id":"evt_test"}"#),
            "t=1700000000,v1=13941114bb88ac44a76abcfddea5b92aa6182a4b63d8be3aae908a616083bd7e"
        );
    }

    #[test]
    fn signature_depends_on_timestamp_and_secret() {
        let body = br#"{"id":"evt_test"}"#;
        let base = sign_payload("whsec_a", 1, body);
        assert_ne!(base, sign_payload("whsec_b", 1, body));
        assert_ne!(
            base["t=1,".len()..],
            sign_payload("whsec_a", 2, body)["t=2,".len()..]
        );
    }

    #[test]
    fn subscription_debug_redacts_the_secret() {
        let subscription = Subscription {
            url: "http://127.0.0.1:1/hook".into(),
            secret: "whsec_very_secret".into(),
        };
        assert!(!format!("{subscription:?}").contains("whsec_very_secret"));
    }

    #[test]
    fn event_has_stripe_shape() {
        let cause = Cause {
            request_id: Some("req_1".into()),
            idempotency_key: Some("key-1".into()),
        };
        let event = event("payment_intent.succeeded", json!({"id": "pi_1"}), &cause, 1);
        assert!(
            event["id"]
                .as_str()
                .is_some_and(|id| id.starts_with("evt_"))
        );
        assert_eq!(event["object"], "event");
        assert_eq!(event["type"], "payment_intent.succeeded");
        assert_eq!(event["api_version"], API_VERSION);
        assert_eq!(event["livemode"], false);
        assert_eq!(event["data"]["object"]["id"], "pi_1");
        assert_eq!(event["request"]["idempotency_key"], "key-1");
        assert!(event["created"].as_i64().is_some_and(|t| t > 1_600_000_000));
    }
}
