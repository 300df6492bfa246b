//! payhost provider component for Stripe (REST API v1).
//!
//! This crate is also the template for new providers: copy it, keep the
//! three-file layout, and replace the mapping.
//!
//! - [`api`]: pure request forms and response mapping
//!   (`status + headers + body → Result<Payment, ProviderError>`).
//! - [`webhook`]: pure signature verification and event normalization.
//! - this file: the manifest and the thin [`Provider`] impl that wires the two
//!   to HTTP. Nothing here decides anything worth testing on its own.
//!
//! # How Stripe is spoken
//!
//! - **Auth**: `Authorization: Bearer <secret-key>` (credential `secret-key`).
//!   The key is never logged and is scrubbed from every error message
//!   ([`api::scrub`]).
//! - **Base URL**: the host's `base-url` override (emulator, proxy) or
//!   `https://api.stripe.com`.
//! - **Bodies** are `application/x-www-form-urlencoded` with bracketed keys
//!   (`metadata[order_id]=…`); currencies go out lower-case and come back
//!   upper-case; amounts are minor units on both sides.
//! - **Idempotency**: every POST carries `Idempotency-Key:
//!   <host key>:<operation>` (hashed if longer than 255 characters), so a
//!   retried call replays Stripe's first answer instead of charging again.
//!
//! | contract | Stripe |
//! |---|---|
//! | `validate-credentials` | `GET /v1/balance` (401 → `invalid-credentials`) |
//! | `create-payment` | `POST /v1/payment_intents` (`confirm=true` when a payment method is given) |
//! | `capture` | `POST /v1/payment_intents/{id}/capture` (`amount_to_capture` for partial) |
//! | `cancel` | `POST /v1/payment_intents/{id}/cancel` |
//! | `get-payment` | `GET /v1/payment_intents/{id}` |
//! | `refund` | `POST /v1/refunds` (`payment_intent`, `amount`, `reason`, `metadata[payhost_refund_id]`) |
//! | `parse-webhook` | `Stripe-Signature` check + event mapping; on a mismatch only, `GET /v1/events/{id}` to tell `tampered-body` from `wrong-secret` |
//!
//! Status and error mappings are tabulated on [`api::payment_from_intent`],
//! [`api::error_from_response`] and in [`webhook`].

pub mod api;
pub mod webhook;

use payhost_provider_sdk::form::Form;
use payhost_provider_sdk::http::{Request, Response};
use payhost_provider_sdk::{
    CallContext, Capabilities, CredentialField, Manifest, Money, Payment, PaymentRequest, Provider,
    ProviderError, Refund, RefundRequest, WebhookError, WebhookEvent, WebhookRequest, log,
};

/// Provider id, used in host URLs and config.
pub const PROVIDER_ID: &str = "stripe";

/// Stripe's live API.
pub const DEFAULT_BASE_URL: &str = "https://api.stripe.com";

/// Credential holding the secret API key (`sk_test_…`, `sk_live_…`, `rk_…`).
pub const SECRET_KEY: &str = "secret-key";

/// Currencies offered for routing (upper-case ISO-4217). Stripe supports more;
/// this list leaves out currencies whose Stripe minor unit differs from
/// ISO-4217 or needs special amount rules (three-decimal currencies, HUF, TWD,
/// ISK, UGX), which the contract's "ISO minor units" cannot express safely.
pub const CURRENCIES: &[&str] = &[
    "USD", "EUR", "GBP", "JPY", "CAD", "AUD", "NZD", "CHF", "SEK", "NOK", "DKK", "PLN", "CZK",
    "RON", "BGN", "BRL", "MXN", "SGD", "HKD", "INR", "ZAR", "THB", "MYR", "KRW", "ILS", "AED",
];

/// The Stripe provider.
pub struct Stripe;

payhost_provider_sdk::export_provider!(Stripe);

impl Provider for Stripe {
    fn manifest() -> Manifest {
        Manifest {
            id: PROVIDER_ID.into(),
            name: "Stripe".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            currencies: CURRENCIES.iter().map(|c| (*c).to_owned()).collect(),
            credential_fields: vec![CredentialField {
                name: SECRET_KEY.into(),
                label: "Secret key".into(),
                secret: true,
                required: true,
            }],
            capabilities: Capabilities::CAPTURE
                | Capabilities::CANCEL
                | Capabilities::PARTIAL_REFUND
                | Capabilities::WEBHOOKS
                | Capabilities::NEXT_ACTION,
            default_base_url: DEFAULT_BASE_URL.into(),
            default_hosts: vec!["https://api.stripe.com:443".into()],
        }
    }

    fn validate_credentials(ctx: CallContext) -> Result<(), ProviderError> {
        let client = Client::new(&ctx)?;
        let response = client.get("/v1/balance")?;
        client.finish(api::validation_from_response(
            response.status,
            &response.headers,
            &response.body,
        ))
    }

    fn create_payment(ctx: CallContext, request: PaymentRequest) -> Result<Payment, ProviderError> {
        let client = Client::new(&ctx)?;
        let form = api::create_payment_form(&request);
        let response = client.post("/v1/payment_intents", &form, "create-payment")?;
        client.finish(api::created_payment_from_response(
            response.status,
            &response.headers,
            &response.body,
            &request.amount,
        ))
    }

    fn capture(
        ctx: CallContext,
        payment_reference: String,
        amount: Option<Money>,
    ) -> Result<Payment, ProviderError> {
        let client = Client::new(&ctx)?;
        let path = api::payment_intent_path(&payment_reference, "/capture");
        let form = api::capture_form(amount.as_ref());
        let response = client.post(&path, &form, "capture")?;
        client.finish(api::payment_from_response(
            response.status,
            &response.headers,
            &response.body,
        ))
    }

    fn cancel(ctx: CallContext, payment_reference: String) -> Result<Payment, ProviderError> {
        let client = Client::new(&ctx)?;
        let path = api::payment_intent_path(&payment_reference, "/cancel");
        let response = client.post(&path, &Form::new(), "cancel")?;
        client.finish(api::payment_from_response(
            response.status,
            &response.headers,
            &response.body,
        ))
    }

    fn get_payment(ctx: CallContext, payment_reference: String) -> Result<Payment, ProviderError> {
        let client = Client::new(&ctx)?;
        let response = client.get(&api::payment_intent_path(&payment_reference, ""))?;
        client.finish(api::payment_from_response(
            response.status,
            &response.headers,
            &response.body,
        ))
    }

    fn refund(ctx: CallContext, request: RefundRequest) -> Result<Refund, ProviderError> {
        let client = Client::new(&ctx)?;
        let form = api::refund_form(&request);
        let response = client.post("/v1/refunds", &form, "refund")?;
        client.finish(api::refund_from_response(
            response.status,
            &response.headers,
            &response.body,
        ))
    }

    fn parse_webhook(
        ctx: CallContext,
        request: WebhookRequest,
    ) -> Result<Vec<WebhookEvent>, WebhookError> {
        match webhook::parse_webhook(&request) {
            Err(WebhookError::SignatureMismatch) => Err(diagnose_mismatch(&ctx, &request.body)),
            other => other,
        }
    }
}

/// Asks Stripe for its copy of the event an unverified body claims to be
/// (`GET /v1/events/{id}`, with `Stripe-Account` for Connect events) and
/// lets [`webhook::diagnose_mismatch`] decide between `tampered-body`,
/// `wrong-secret` and an undetermined `signature-mismatch`. The id was
/// checked to be `evt_` + alphanumerics before it reaches the path.
fn diagnose_mismatch(ctx: &CallContext, body: &[u8]) -> WebhookError {
    let Some(claim) = webhook::claimed_event(body) else {
        // Stripe never sends a body without an `evt_` id.
        return WebhookError::TamperedBody;
    };
    let Ok(client) = Client::new(ctx) else {
        return WebhookError::SignatureMismatch;
    };
    if !claim.visible_to(client.secret_key) {
        return WebhookError::SignatureMismatch;
    }
    let path = format!("/v1/events/{}", claim.id);
    let mut request = client.request(Request::get(format!("{}{path}", client.base)));
    if let Some(account) = &claim.account {
        request = request.header("stripe-account", account.as_str());
    }
    match client.send("GET", &path, request) {
        Ok(response) => webhook::diagnose_mismatch(
            body,
            Some(webhook::GatewayCopy {
                status: response.status,
                body: &response.body,
            }),
        ),
        Err(_) => webhook::diagnose_mismatch(body, None),
    }
}

/// The per-call HTTP plumbing: base URL, auth, idempotency keys, logging and
/// secret scrubbing. Holds borrowed pieces of the call's context only.
struct Client<'a> {
    ctx: &'a CallContext,
    base: &'a str,
    secret_key: &'a str,
}

impl<'a> Client<'a> {
    fn new(ctx: &'a CallContext) -> Result<Self, ProviderError> {
        Ok(Client {
            ctx,
            base: ctx.base_url(DEFAULT_BASE_URL),
            secret_key: ctx.require_credential(SECRET_KEY)?,
        })
    }

    fn request(&self, request: Request) -> Request {
        request
            .bearer_auth(self.secret_key)
            .header("accept", "application/json")
            .header(
                "user-agent",
                concat!("payhost-stripe/", env!("CARGO_PKG_VERSION")),
            )
    }

    fn get(&self, path: &str) -> Result<Response, ProviderError> {
        let request = self.request(Request::get(format!("{}{path}", self.base)));
        self.send("GET", path, request)
    }

    /// POSTs `form` with an idempotency key derived for `operation`; each
    /// POST in one call must use a distinct `operation`.
    fn post(&self, path: &str, form: &Form, operation: &str) -> Result<Response, ProviderError> {
        let key = self
            .ctx
            .idempotency_key_for(operation, api::MAX_IDEMPOTENCY_KEY_LEN);
        let request = self
            .request(Request::post(format!("{}{path}", self.base)))
            .header("idempotency-key", key)
            .form(form);
        self.send("POST", path, request)
    }

    fn send(&self, method: &str, path: &str, request: Request) -> Result<Response, ProviderError> {
        match request.send() {
            Ok(response) => {
                let request_id = response.header("request-id").unwrap_or("-");
                log::debug(format!(
                    "stripe {method} {path} -> {} (request-id {request_id})",
                    response.status
                ));
                Ok(response)
            }
            Err(err) => {
                log::warn(format!("stripe {method} {path} failed: {err}"));
                Err(api::scrub(err.into(), self.secret_key))
            }
        }
    }

    /// Scrubs the secret key from an error before it leaves the component.
    fn finish<T>(&self, result: Result<T, ProviderError>) -> Result<T, ProviderError> {
        result.map_err(|e| api::scrub(e, self.secret_key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_describes_stripe() {
        let m = Stripe::manifest();
        assert_eq!(m.id, "stripe");
        assert_eq!(m.name, "Stripe");
        assert_eq!(m.version, env!("CARGO_PKG_VERSION"));
        assert_eq!(m.default_base_url, "https://api.stripe.com");
        assert_eq!(
            m.default_hosts,
            vec!["https://api.stripe.com:443".to_owned()]
        );
        for c in [
            "USD", "EUR", "GBP", "JPY", "CAD", "AUD", "BRL", "MXN", "CHF", "SEK",
        ] {
            assert!(m.currencies.iter().any(|x| x == c), "{c} missing");
        }
        assert!(
            m.currencies
                .iter()
                .all(|c| c.len() == 3 && c.chars().all(|ch| ch.is_ascii_uppercase()))
        );
        assert_eq!(
            m.credential_fields,
            vec![CredentialField {
                name: "secret-key".into(),
                label: "Secret key".into(),
                secret: true,
                required: true,
            }]
        );
        assert_eq!(
            m.capabilities,
            Capabilities::CAPTURE
                | Capabilities::CANCEL
                | Capabilities::PARTIAL_REFUND
                | Capabilities::WEBHOOKS
                | Capabilities::NEXT_ACTION
        );
        assert!(!m.capabilities.contains(Capabilities::SESSIONS));
    }

    #[test]
    fn calls_without_a_secret_key_are_invalid_credentials() {
        let ctx = CallContext {
            credentials: vec![],
            base_url: None,
            idempotency_key: Some("k".into()),
        };
        assert_eq!(
            Stripe::validate_credentials(ctx),
            Err(ProviderError::InvalidCredentials(
                "missing credential `secret-key`".into()
            ))
        );
    }

    #[test]
    fn a_mismatch_is_diagnosed_only_as_far_as_the_gateway_can_answer() {
        let unsigned = |body: &str| WebhookRequest {
            headers: vec![("stripe-signature".into(), "t=1,v1=00".into())],
            body: body.as_bytes().to_vec(),
            secret: "whsec_1".into(),
            received_at: 1,
        };
        let no_key = CallContext {
            credentials: vec![],
            base_url: None,
            idempotency_key: None,
        };
        // Not a Stripe event at all: no need to ask anyone.
        assert_eq!(
            Stripe::parse_webhook(no_key.clone(), unsigned("{\"id\":\"../balance\"}")),
            Err(WebhookError::TamperedBody)
        );
        // A plausible event but nobody to ask (no key; natively no network).
        let event = "{\"id\":\"evt_1\",\"type\":\"x\",\"data\":{\"object\":{}}}";
        assert_eq!(
            Stripe::parse_webhook(no_key, unsigned(event)),
            Err(WebhookError::SignatureMismatch)
        );
        let unreachable = CallContext {
            credentials: vec![payhost_provider_sdk::Credential {
                name: SECRET_KEY.into(),
                value: "sk_test_123".into(),
            }],
            base_url: Some("http://127.0.0.1:1".into()),
            idempotency_key: None,
        };
        assert_eq!(
            Stripe::parse_webhook(unreachable, unsigned(event)),
            Err(WebhookError::SignatureMismatch)
        );
    }

    #[test]
    fn network_failures_are_unavailable_and_never_leak_the_key() {
        // Natively there is no wasi:http host, so the request fails in transport.
        let ctx = CallContext {
            credentials: vec![payhost_provider_sdk::Credential {
                name: SECRET_KEY.into(),
                value: "sk_test_123".into(),
            }],
            base_url: Some("http://127.0.0.1:1".into()),
            idempotency_key: Some("k".into()),
        };
        match Stripe::get_payment(ctx, "pi_1".into()) {
            Err(ProviderError::Unavailable(m)) => assert!(!m.contains("sk_test_123"), "{m}"),
            other => panic!("expected unavailable, got {other:?}"),
        }
    }
}
