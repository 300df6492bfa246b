//! Stripe emulator: an in-process fake of Stripe's API v1 on loopback.
//!
//! It follows Stripe's documented behaviour closely enough that a real Stripe
//! client (our Stripe provider component) works against it unchanged by
//! switching the base URL:
//!
//! - **Auth**: `Authorization: Bearer sk_test_…`, or HTTP Basic with the key as
//!   username (the password is ignored, as Stripe does). Only `sk_test_` keys
//!   are accepted; anything else is 401 with the key masked in the message.
//!   Each key is its own account: objects and idempotency keys of one key are
//!   invisible to another (404).
//! - **Requests** are form-encoded with bracketed keys (`metadata[order_id]`);
//!   unknown parameters are rejected (`parameter_unknown`) like Stripe does,
//!   except a few that change nothing here (`expand[…]`,
//!   `payment_method_types[…]`, `automatic_payment_methods[…]`,
//!   `payment_method_options[…]`, `shipping[…]`, `customer`,
//!   `statement_descriptor*`), which are accepted and ignored.
//! - **Endpoints**: `GET /v1/balance`; `POST /v1/payment_intents`,
//!   `GET /v1/payment_intents/{id}`, `POST /v1/payment_intents/{id}/confirm`,
//!   `/capture`, `/cancel`; `POST /v1/refunds`, `GET /v1/refunds/{id}`;
//!   `GET /v1/charges/{id}`; `GET /v1/events/{id}` (the event as first
//!   rendered, `resource_missing` for another account's or an unknown id);
//!   `POST`/`GET /v1/webhook_endpoints` (list paginated with `limit`,
//!   `starting_after`, `ending_before`), `GET`/`DELETE
//!   /v1/webhook_endpoints/{id}` (per account; the `whsec_…` secret only in
//!   the creation response).
//!   Anything else is 404 `invalid_request_error`.
//! - **Outcomes** are decided by Stripe's test PaymentMethods: `pm_card_visa`,
//!   `pm_card_visa_debit`, `pm_card_mastercard`, `pm_card_amex` approve;
//!   `pm_card_pendingRefund` approves, and its refunds stay `pending`;
//!   `pm_card_visa_chargeDeclined` / `pm_card_chargeDeclined` decline
//!   (`generic_decline`); `pm_card_visa_chargeDeclinedInsufficientFunds` /
//!   `pm_card_chargeDeclinedInsufficientFunds` decline (`insufficient_funds`);
//!   `pm_card_chargeDeclinedProcessingError` fails with `processing_error`;
//!   `pm_card_threeDSecure2Required` / `pm_card_authenticationRequired` need
//!   3-D Secure (`requires_action` with a `redirect_to_url` next action).
//!   Declines answer 402 `card_error` carrying the PaymentIntent (now
//!   `requires_payment_method` with `last_payment_error`) and the failed
//!   charge id. Any other `pm_…` is 400 `resource_missing`.
//! - **Idempotency-Key** on POST: the first response for a key is replayed
//!   byte for byte (with `Idempotent-Replayed: true` and `Original-Request`)
//!   to requests with the same endpoint and parameters, for 24 hours; other
//!   parameters or endpoint → 400 `idempotency_error`; a request while the key
//!   is in flight → 409 `idempotency_error` / `idempotency_key_in_use`.
//!   Nothing is saved for requests that fail before the endpoint runs
//!   (authentication, parameter validation, 429) nor for 5xx.
//! - **Webhooks**: every state change becomes an event (see
//!   [`StripeEmulator::events`]); subscribed endpoints receive it signed with
//!   [`sign_payload`], asynchronously, with bounded retries.
//!
//! **Emulator extensions** (not Stripe; for failure testing and offline
//! checkout): the gateway-side controls under `/_emulator/` (dashboard
//! refund, refund succeed/fail, delivery chaos; see `control.rs`);
//! payment method `pm_emulator_unavailable` → 500 `api_error`;
//! `pm_emulator_rate_limited` → 429 with `Retry-After: 2` (both fail before
//! anything is created); `GET /emulator/3ds/{id}` is the fake 3-D Secure page
//! (`?action=fail` fails authentication).
//!
//! The server binds 127.0.0.1 only and stops when the [`StripeEmulator`]
//! handle is dropped or [`StripeEmulator::shutdown`] is awaited.

mod control;
mod endpoints;
mod error;
mod form;
mod handlers;
mod idempotency;
mod list;
mod model;
mod webhook;

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::RecordedCall;
use error::ApiError;
use form::Params;
use idempotency::{Claim, MAX_KEY_LEN, Saved};
use model::{Account, AccountId, Emitted, random_id};
use webhook::{Cause, Delivery, Subscription};

pub use webhook::sign_payload;

/// Largest request body the emulator reads (Stripe requests are small forms).
const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Timeout of one webhook delivery attempt.
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);

/// A running Stripe emulator bound to `127.0.0.1`.
///
/// Dropping the handle signals the server (and any pending webhook
/// deliveries) to stop; it finishes in-flight requests in the background.
/// Await [`StripeEmulator::shutdown`] instead to wait until it has stopped.
pub struct StripeEmulator {
    shared: Arc<Shared>,
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    server: Option<JoinHandle<()>>,
}

impl StripeEmulator {
    /// Binds `127.0.0.1:<port>` (`0` picks an ephemeral port) and serves the
    /// fake API on the current Tokio runtime until the handle is dropped or
    /// shut down. Fails only if the port cannot be bound.
    pub async fn start(port: u16) -> io::Result<StripeEmulator> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port)).await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = watch::channel(false);
        let http = reqwest::Client::builder()
            .timeout(WEBHOOK_TIMEOUT)
            .build()
            .map_err(io::Error::other)?;
        let shared = Arc::new(Shared {
            base_url: format!("http://{addr}"),
            http: Arc::new(http),
            stopped: stopped.clone(),
            state: Mutex::default(),
        });
        let app = router(shared.clone());
        let mut stop_signal = stopped;
        let server = tokio::spawn(async move {
            let shutdown = async move {
                // An error means the sender is gone, which also means stop.
                let _ = stop_signal.wait_for(|stop| *stop).await;
            };
            if let Err(error) = axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
            {
                tracing::warn!(%error, "stripe emulator: server stopped with an error");
            }
        });
        tracing::info!(%addr, "stripe emulator listening");
        Ok(StripeEmulator {
            shared,
            addr,
            stop,
            server: Some(server),
        })
    }

    /// The base URL to give a Stripe client instead of
    /// `https://api.stripe.com`: `http://127.0.0.1:<port>` (no trailing slash).
    pub fn base_url(&self) -> String {
        self.shared.base_url.clone()
    }

    /// The bound address (always on 127.0.0.1).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every request received so far, in arrival order, including rejected
    /// ones and requests to unknown URLs.
    pub fn calls(&self) -> Vec<RecordedCall> {
        self.shared.lock().calls.clone()
    }

    /// Every event emitted so far (Stripe event JSON, `evt_…`), in emission
    /// order, whether or not any endpoint is subscribed.
    pub fn events(&self) -> Vec<Value> {
        self.shared.lock().events.clone()
    }

    /// What the account of `api_key` has moved: each payment intent that
    /// received money and each refund, sorted by id. Tests hold the ledger
    /// against it (every charge and refund here must be booked, or recorded
    /// with its reference).
    pub fn money_moved(&self, api_key: &str) -> MoneyMoved {
        self.shared
            .lock()
            .account(&AccountId::for_api_key(api_key))
            .money_moved()
    }

    /// Delivers every later event, for every API key, to `url` as a POST with
    /// `Content-Type: application/json` and a `Stripe-Signature` made with
    /// `secret` (see [`sign_payload`]). Several endpoints may be subscribed;
    /// each gets every event. Delivery is asynchronous, at-least-once,
    /// unordered, and retried (3 attempts, exponential backoff) on a non-2xx
    /// answer or a connection error.
    pub fn subscribe_webhooks(&self, url: String, secret: String) {
        self.shared
            .lock()
            .subscriptions
            .push(Subscription { url, secret });
    }

    /// Stops accepting connections, lets in-flight requests finish, abandons
    /// pending webhook deliveries and returns once the server has stopped.
    pub async fn shutdown(mut self) {
        self.stop.send_replace(true);
        if let Some(server) = self.server.take()
            && let Err(error) = server.await
        {
            tracing::warn!(%error, "stripe emulator: server task failed");
        }
    }
}

impl Drop for StripeEmulator {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}

impl std::fmt::Debug for StripeEmulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StripeEmulator")
            .field("base_url", &self.shared.base_url)
            .finish_non_exhaustive()
    }
}

/// See [`StripeEmulator::money_moved`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MoneyMoved {
    /// Payment intents with `amount_received > 0`.
    pub payments: Vec<MovedPayment>,
    /// Refunds, whatever their status.
    pub refunds: Vec<MovedRefund>,
}

/// A payment intent that received money.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MovedPayment {
    /// `pi_…`.
    pub id: String,
    /// Minor units received.
    pub amount_received: i64,
    /// Lower-case ISO code, as Stripe writes it.
    pub currency: String,
}

/// A refund the emulator made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MovedRefund {
    /// `re_…`.
    pub id: String,
    /// The payment intent it refunds.
    pub payment_intent: String,
    /// Minor units.
    pub amount: i64,
    /// `succeeded` or `pending`.
    pub status: &'static str,
}

/// What the server task and the handle share.
pub(crate) struct Shared {
    base_url: String,
    http: Arc<reqwest::Client>,
    stopped: watch::Receiver<bool>,
    state: Mutex<EmulatorState>,
}

/// All in-memory state. Only ever locked in synchronous sections.
#[derive(Default)]
pub(crate) struct EmulatorState {
    calls: Vec<RecordedCall>,
    accounts: HashMap<AccountId, Account>,
    subscriptions: Vec<Subscription>,
    events: Vec<Value>,
}

impl EmulatorState {
    /// The account of an API key, created empty on first use.
    pub(crate) fn account(&mut self, id: &AccountId) -> &mut Account {
        self.accounts.entry(id.clone()).or_default()
    }
}

impl Shared {
    /// Locks the state. A panic while locked cannot leave it half-updated in
    /// a way that matters for a fake, so poisoning is ignored.
    pub(crate) fn lock(&self) -> MutexGuard<'_, EmulatorState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Turns what an operation on `account` emitted into events: records
    /// them (globally and on the account, for `GET /v1/events/{id}`), then
    /// spawns one delivery per subscribed endpoint. Never waits for delivery.
    pub(crate) fn publish(&self, account: &AccountId, emitted: Vec<Emitted>, cause: &Cause) {
        if emitted.is_empty() {
            return;
        }
        let deliveries = {
            let mut state = self.lock();
            let subscriptions = state.subscriptions.clone();
            let mut deliveries = Vec::new();
            for Emitted { kind, object } in emitted {
                // Every global subscription, and the account's own
                // endpoints that enabled this type.
                let mut targets = subscriptions.clone();
                targets.extend(
                    state
                        .account(account)
                        .webhook_endpoints
                        .iter()
                        .filter(|e| e.wants(kind))
                        .map(endpoints::WebhookEndpoint::subscription),
                );
                let event = webhook::event(kind, object, cause, targets.len());
                let body = Bytes::from(event.to_string());
                let chaos = state.account(account).chaos;
                for subscription in &targets {
                    for _ in 0..=chaos.duplicate {
                        let delay = if chaos.shuffle {
                            Duration::from_millis(rand::random_range(0..50))
                        } else {
                            Duration::ZERO
                        };
                        deliveries.push(Delivery {
                            subscription: subscription.clone(),
                            body: body.clone(),
                            delay,
                        });
                    }
                }
                state.account(account).record_event(&event);
                state.events.push(event);
            }
            deliveries
        };
        for delivery in deliveries {
            webhook::spawn_delivery(self.http.clone(), delivery, self.stopped.clone());
        }
    }
}

/// Per-request facts the gate established for an authenticated `/v1` call.
#[derive(Debug, Clone)]
pub(crate) struct RequestContext {
    account: AccountId,
    request_id: String,
    idempotency_key: Option<String>,
}

impl RequestContext {
    pub(crate) fn cause(&self) -> Cause {
        Cause {
            request_id: Some(self.request_id.clone()),
            idempotency_key: self.idempotency_key.clone(),
        }
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/balance", get(handlers::balance))
        .route("/v1/payment_intents", post(handlers::create_payment_intent))
        .route(
            "/v1/payment_intents/{id}",
            get(handlers::retrieve_payment_intent),
        )
        .route(
            "/v1/payment_intents/{id}/confirm",
            post(handlers::confirm_payment_intent),
        )
        .route(
            "/v1/payment_intents/{id}/capture",
            post(handlers::capture_payment_intent),
        )
        .route(
            "/v1/payment_intents/{id}/cancel",
            post(handlers::cancel_payment_intent),
        )
        .route("/v1/refunds", post(handlers::create_refund))
        .route("/v1/refunds/{id}", get(handlers::retrieve_refund))
        .route("/v1/charges/{id}", get(handlers::retrieve_charge))
        .route("/v1/events/{id}", get(handlers::retrieve_event))
        .route(
            "/v1/webhook_endpoints",
            post(endpoints::create).get(endpoints::list),
        )
        .route(
            "/v1/webhook_endpoints/{id}",
            get(endpoints::retrieve).delete(endpoints::delete),
        )
        .route("/emulator/3ds/{id}", get(handlers::three_d_secure))
        .route(
            "/_emulator/payment_intents/{id}/refund",
            post(control::dashboard_refund),
        )
        .route(
            "/_emulator/refunds/{id}/{action}",
            post(control::settle_refund),
        )
        .route("/_emulator/webhooks/chaos", post(control::chaos))
        .fallback(handlers::unrecognized)
        .method_not_allowed_fallback(handlers::unrecognized)
        .layer(middleware::from_fn_with_state(shared.clone(), gate))
        .with_state(shared)
}

/// Runs before every handler: records the call, authenticates `/v1`
/// requests, and applies idempotency to POSTs that carry a key.
async fn gate(State(shared): State<Arc<Shared>>, mut request: Request, next: Next) -> Response {
    let request_id = random_id("req");
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let is_api = path == "/v1" || path.starts_with("/v1/");
    let key_header = request.headers().get("idempotency-key").cloned();
    let idempotency_key = key_header
        .as_ref()
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let account = authenticate(request.headers());
    let idempotent_key = match (&account, &idempotency_key) {
        (Ok(_), Some(key)) if is_api && method == Method::POST && key.len() <= MAX_KEY_LEN => {
            Some(key.clone())
        }
        _ => None,
    };

    // Recording and claiming happen under one lock: once a call shows up in
    // `calls()`, its idempotency key is already claimed.
    let claim = {
        let mut state = shared.lock();
        state.calls.push(RecordedCall {
            method: method.to_string(),
            path: path.clone(),
            idempotency_key: idempotency_key.clone(),
            authorized: account.is_ok(),
        });
        match (&account, &idempotent_key) {
            (Ok(account), Some(key)) => Some(
                state
                    .account(account)
                    .idempotency
                    .claim(key, Instant::now()),
            ),
            _ => None,
        }
    };
    tracing::debug!(%method, %path, "stripe emulator request");

    let mut response = if !is_api {
        next.run(request).await
    } else {
        match account {
            Err(error) => error.into_response(),
            Ok(_)
                if method == Method::POST
                    && idempotency_key
                        .as_ref()
                        .is_some_and(|k| k.len() > MAX_KEY_LEN) =>
            {
                ApiError::invalid_param(
                    "idempotency_key_invalid",
                    "Idempotency-Key",
                    format!("Idempotency-Key must be at most {MAX_KEY_LEN} characters long."),
                )
                .into_response()
            }
            Ok(account) => {
                let ctx = RequestContext {
                    account,
                    request_id: request_id.clone(),
                    idempotency_key: idempotent_key.clone(),
                };
                request.extensions_mut().insert(ctx.clone());
                match (claim, idempotent_key) {
                    (Some(claim), Some(key)) => {
                        idempotent(&shared, ctx, key, claim, request, next).await
                    }
                    _ => next.run(request).await,
                }
            }
        }
    };

    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        headers.insert("request-id", value);
    }
    if is_api
        && method == Method::POST
        && let Some(value) = key_header
    {
        headers.insert("idempotency-key", value);
    }
    response
}

/// Applies a claimed idempotency key: replays, rejects, or runs the endpoint
/// and saves its response.
async fn idempotent(
    shared: &Arc<Shared>,
    ctx: RequestContext,
    key: String,
    claim: Claim,
    request: Request,
    next: Next,
) -> Response {
    if let Claim::InUse = claim {
        return ApiError::idempotency_in_use().into_response();
    }
    // Releases the key if this future is dropped or fails before saving.
    let guard = matches!(claim, Claim::Fresh).then(|| ClaimGuard {
        shared: shared.clone(),
        account: ctx.account.clone(),
        key: key.clone(),
        armed: true,
    });
    let (parts, body) = request.into_parts();
    let Ok(body) = to_bytes(body, MAX_BODY_BYTES).await else {
        return ApiError::invalid_param(
            "parameter_invalid_string",
            "body",
            "The request body could not be read.",
        )
        .into_response();
    };
    let endpoint = format!("{} {}", parts.method, parts.uri.path());
    let fingerprint = Params::parse(&body).fingerprint();

    if let Claim::Saved(saved) = claim {
        if !saved.matches(&endpoint, &fingerprint) {
            return ApiError::idempotency_mismatch(&key).into_response();
        }
        return replay(saved);
    }

    let response = next.run(Request::from_parts(parts, Body::from(body))).await;
    let (parts, body) = response.into_parts();
    let Ok(body) = to_bytes(body, MAX_BODY_BYTES).await else {
        return ApiError::api("The emulator could not buffer its own response.").into_response();
    };
    let saveable = !parts.status.is_server_error()
        && parts.status != axum::http::StatusCode::TOO_MANY_REQUESTS
        && parts.extensions.get::<error::NotSaved>().is_none();
    if saveable {
        shared.lock().account(&ctx.account).idempotency.save(
            &key,
            Saved {
                endpoint,
                fingerprint,
                status: parts.status,
                body: body.clone(),
                request_id: ctx.request_id.clone(),
                saved_at: Instant::now(),
            },
        );
        if let Some(guard) = guard {
            guard.disarm();
        }
    }
    Response::from_parts(parts, Body::from(body))
}

/// The saved response, byte for byte, marked as a replay.
fn replay(saved: Saved) -> Response {
    let mut response = (saved.status, saved.body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
    if let Ok(value) = HeaderValue::from_str(&saved.request_id) {
        headers.insert("original-request", value);
    }
    response
}

/// Releases an in-flight idempotency claim on drop unless disarmed (the
/// response was saved), so a dropped or failed request never leaves its key
/// stuck "in use".
struct ClaimGuard {
    shared: Arc<Shared>,
    account: AccountId,
    key: String,
    armed: bool,
}

impl ClaimGuard {
    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for ClaimGuard {
    fn drop(&mut self) {
        if self.armed {
            self.shared
                .lock()
                .account(&self.account)
                .idempotency
                .release(&self.key);
        }
    }
}

/// The API key a request presents, if any.
#[derive(Debug, PartialEq, Eq)]
enum Presented {
    Missing,
    Key(String),
}

fn presented_key(headers: &HeaderMap) -> Presented {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Presented::Missing;
    };
    let Ok(value) = value.to_str() else {
        return Presented::Key(String::new());
    };
    let (scheme, credentials) = value.trim().split_once(' ').unwrap_or((value, ""));
    let credentials = credentials.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        Presented::Key(credentials.to_owned())
    } else if scheme.eq_ignore_ascii_case("basic") {
        let decoded = BASE64
            .decode(credentials)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .unwrap_or_default();
        // `key:` — the password is ignored, as Stripe does.
        let user = decoded
            .split_once(':')
            .map_or(decoded.as_str(), |(user, _)| user);
        Presented::Key(user.to_owned())
    } else {
        Presented::Key(String::new())
    }
}

/// Accepts test secret keys (`sk_test_…`) only; anything else is a 401 whose
/// message masks the key (never echoes it whole).
fn authenticate(headers: &HeaderMap) -> Result<AccountId, ApiError> {
    match presented_key(headers) {
        Presented::Missing => Err(ApiError::unauthorized(
            "You did not provide an API key. You need to provide your API key in the \
             Authorization header, using Bearer auth (e.g. 'Authorization: Bearer \
             YOUR_SECRET_KEY'). See https://stripe.com/docs/api#authentication for details.",
        )),
        Presented::Key(key)
            if key.len() > "sk_test_".len()
                && key.starts_with("sk_test_")
                && key.chars().all(|c| c.is_ascii_graphic()) =>
        {
            Ok(AccountId::for_api_key(&key))
        }
        Presented::Key(key) => Err(ApiError::unauthorized(format!(
            "Invalid API Key provided: {}",
            mask_key(&key)
        ))),
    }
}

/// Masks a key the way Stripe's messages do: long keys keep their 8-character
/// prefix and last 4 characters, shorter ones only their last 4, very short
/// ones nothing.
fn mask_key(key: &str) -> String {
    let chars: Vec<char> = key.chars().collect();
    let n = chars.len();
    let stars = |count: usize| "*".repeat(count);
    if n >= 16 {
        let head: String = chars[..8].iter().collect();
        let tail: String = chars[n - 4..].iter().collect();
        format!("{head}{}{tail}", stars(n - 12))
    } else if n >= 8 {
        let tail: String = chars[n - 4..].iter().collect();
        format!("{}{tail}", stars(n - 4))
    } else {
        stars(n)
    }
}

#[cfg(test)]
mod tests {
    //! Drive the emulator over real loopback HTTP, the way a Stripe client does.

    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::http::StatusCode;
    use hmac::{Hmac, Mac};
    use reqwest::header::HeaderMap as ReqwestHeaders;
    use serde_json::json;
    use sha2::Sha256;
    use subtle::ConstantTimeEq;
    use tokio::sync::mpsc;

    use super::*;

    const KEY: &str = "sk_test_emulator_tenant_one";
    const OTHER_KEY: &str = "sk_test_emulator_tenant_two";

    /// A response as the test sees it.
    struct Answer {
        status: StatusCode,
        headers: ReqwestHeaders,
        text: String,
        json: Value,
    }

    impl Answer {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers.get(name).and_then(|v| v.to_str().ok())
        }
    }

    async fn answer(response: reqwest::Response) -> Answer {
        let status = StatusCode::from_u16(response.status().as_u16()).expect("valid status");
        let headers = response.headers().clone();
        let text = response.text().await.expect("readable body");
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Answer {
            status,
            headers,
            text,
            json,
        }
    }

    struct Client {
        base: String,
        http: reqwest::Client,
    }

    impl Client {
        fn new(emulator: &StripeEmulator) -> Self {
            Client {
                base: emulator.base_url(),
                http: reqwest::Client::builder()
                    .redirect(reqwest::redirect::Policy::none())
                    .build()
                    .expect("client"),
            }
        }

        async fn get(&self, key: &str, path: &str) -> Answer {
            let response = self
                .http
                .get(format!("{}{path}", self.base))
                .bearer_auth(key)
                .send()
                .await
                .expect("request sent");
            answer(response).await
        }

        async fn post(
            &self,
            key: &str,
            path: &str,
            idempotency_key: Option<&str>,
            form: &[(&str, &str)],
        ) -> Answer {
            let mut request = self
                .http
                .post(format!("{}{path}", self.base))
                .bearer_auth(key)
                .form(form);
            if let Some(idempotency_key) = idempotency_key {
                request = request.header("Idempotency-Key", idempotency_key);
            }
            answer(request.send().await.expect("request sent")).await
        }

        async fn create(&self, form: &[(&str, &str)]) -> Answer {
            self.post(KEY, "/v1/payment_intents", None, form).await
        }
    }

    async fn emulator() -> (StripeEmulator, Client) {
        let emulator = StripeEmulator::start(0).await.expect("emulator starts");
        let client = Client::new(&emulator);
        (emulator, client)
    }

    fn event_types(emulator: &StripeEmulator) -> Vec<String> {
        emulator
            .events()
            .iter()
            .filter_map(|event| event["type"].as_str().map(str::to_owned))
            .collect()
    }

    /// A form body as `(name, value)` pairs.
    type Form<'a> = &'a [(&'a str, &'a str)];

    const VISA_1000: Form = &[
        ("amount", "1000"),
        ("currency", "usd"),
        ("payment_method", "pm_card_visa"),
        ("confirm", "true"),
    ];

    #[tokio::test]
    async fn binds_loopback_and_reports_its_base_url() {
        let (emulator, _) = emulator().await;
        assert!(emulator.local_addr().ip().is_loopback());
        assert_eq!(
            emulator.base_url(),
            format!("http://127.0.0.1:{}", emulator.local_addr().port())
        );
    }

    #[tokio::test]
    async fn bearer_and_basic_test_keys_are_accepted() {
        let (emulator, client) = emulator().await;
        let bearer = client.get(KEY, "/v1/balance").await;
        assert_eq!(bearer.status, StatusCode::OK);
        assert_eq!(bearer.json["object"], "balance");
        assert_eq!(bearer.json["available"][0]["currency"], "usd");
        assert!(
            bearer
                .header("request-id")
                .is_some_and(|id| id.starts_with("req_"))
        );

        let basic = client
            .http
            .get(format!("{}/v1/balance", client.base))
            .basic_auth(KEY, Some(""))
            .send()
            .await
            .expect("sent");
        assert_eq!(basic.status().as_u16(), 200);

        let calls = emulator.calls();
        assert_eq!(calls.len(), 2);
        assert!(calls.iter().all(|call| call.authorized));
        assert_eq!(calls[0].method, "GET");
        assert_eq!(calls[0].path, "/v1/balance");
    }

    #[tokio::test]
    async fn missing_live_and_malformed_keys_get_401_without_echoing_the_key() {
        let (emulator, client) = emulator().await;
        let missing = answer(
            client
                .http
                .get(format!("{}/v1/balance", client.base))
                .send()
                .await
                .expect("sent"),
        )
        .await;
        assert_eq!(missing.status, StatusCode::UNAUTHORIZED);
        assert_eq!(missing.json["error"]["type"], "invalid_request_error");
        assert!(
            missing.json["error"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("You did not provide an API key."))
        );
        assert_eq!(
            missing.header("www-authenticate"),
            Some("Basic realm=\"Stripe\"")
        );

        let live_key = "sk_live_51AbCdEfGhIjKlMnOpQrStUv";
        let live = client.get(live_key, "/v1/balance").await;
        assert_eq!(live.status, StatusCode::UNAUTHORIZED);
        assert_eq!(
            live.json["error"]["message"],
            format!("Invalid API Key provided: {}", mask_key(live_key))
        );
        assert!(!live.text.contains(live_key));
        assert!(live.text.contains("sk_live_"));

        let basic_live = client
            .http
            .post(format!("{}/v1/payment_intents", client.base))
            .basic_auth("pk_test_publishable_key_000", Some(""))
            .form(VISA_1000)
            .send()
            .await
            .expect("sent");
        assert_eq!(basic_live.status().as_u16(), 401);
        assert_eq!(
            client.get("Token nope", "/v1/balance").await.status,
            StatusCode::UNAUTHORIZED
        );

        assert!(emulator.calls().iter().all(|call| !call.authorized));
        assert!(emulator.events().is_empty());
    }

    #[test]
    fn keys_are_masked_like_stripe_does() {
        assert_eq!(
            mask_key("sk_live_abcdefghijklmnop"),
            "sk_live_************mnop"
        );
        assert_eq!(mask_key("undefined"), "*****ined");
        assert_eq!(mask_key("short"), "*****");
    }

    #[tokio::test]
    async fn visa_payment_succeeds_and_can_be_retrieved() {
        let (emulator, client) = emulator().await;
        let created = client
            .create(&[
                ("amount", "2000"),
                ("currency", "EUR"),
                ("payment_method", "pm_card_visa"),
                ("confirm", "true"),
                ("capture_method", "automatic"),
                ("description", "Order 42"),
                ("receipt_email", "buyer@example.com"),
                ("metadata[order_id]", "ord_42"),
                ("metadata[tenant]", "acme"),
            ])
            .await;
        assert_eq!(created.status, StatusCode::OK, "{}", created.text);
        let pi = &created.json;
        let id = pi["id"].as_str().expect("id").to_owned();
        assert!(id.starts_with("pi_"));
        assert_eq!(pi["object"], "payment_intent");
        assert_eq!(pi["amount"], 2000);
        assert_eq!(pi["amount_received"], 2000);
        assert_eq!(pi["amount_capturable"], 0);
        assert_eq!(pi["currency"], "eur");
        assert_eq!(pi["status"], "succeeded");
        assert_eq!(pi["capture_method"], "automatic");
        assert_eq!(pi["description"], "Order 42");
        assert_eq!(
            pi["metadata"],
            json!({"order_id": "ord_42", "tenant": "acme"})
        );
        assert_eq!(pi["next_action"], Value::Null);
        assert_eq!(pi["last_payment_error"], Value::Null);
        assert!(
            pi["client_secret"]
                .as_str()
                .is_some_and(|s| s.starts_with(&format!("{id}_secret_")))
        );
        let charge_id = pi["latest_charge"].as_str().expect("charge").to_owned();
        assert!(charge_id.starts_with("ch_"));

        let fetched = client.get(KEY, &format!("/v1/payment_intents/{id}")).await;
        assert_eq!(fetched.json, created.json);
        let expanded = client
            .get(
                KEY,
                &format!("/v1/payment_intents/{id}?expand[]=latest_charge"),
            )
            .await;
        assert_eq!(expanded.json["latest_charge"]["id"], charge_id.as_str());
        assert_eq!(expanded.json["latest_charge"]["captured"], true);
        assert_eq!(expanded.json["latest_charge"]["amount_captured"], 2000);

        let balance = client.get(KEY, "/v1/balance").await;
        assert_eq!(
            balance.json["available"],
            json!([{"amount": 2000, "currency": "eur", "source_types": {"card": 2000}}])
        );
        assert_eq!(event_types(&emulator), ["payment_intent.succeeded"]);
    }

    #[tokio::test]
    async fn two_step_create_then_confirm() {
        let (emulator, client) = emulator().await;
        let created = client
            .create(&[("amount", "500"), ("currency", "usd")])
            .await;
        assert_eq!(created.json["status"], "requires_payment_method");
        assert_eq!(created.json["capture_method"], "automatic_async");
        let id = created.json["id"].as_str().expect("id");
        let path = format!("/v1/payment_intents/{id}/confirm");
        let without_method = client.post(KEY, &path, None, &[]).await;
        assert_eq!(without_method.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            without_method.json["error"]["code"],
            "payment_intent_unexpected_state"
        );
        let confirmed = client
            .post(
                KEY,
                &path,
                None,
                &[("payment_method", "pm_card_mastercard")],
            )
            .await;
        assert_eq!(confirmed.json["status"], "succeeded");
        assert_eq!(confirmed.json["payment_method"], "pm_card_mastercard");
        let again = client.post(KEY, &path, None, &[]).await;
        assert_eq!(again.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            again.json["error"]["code"],
            "payment_intent_unexpected_state"
        );
        assert_eq!(event_types(&emulator), ["payment_intent.succeeded"]);
    }

    #[tokio::test]
    async fn manual_capture_partial_capture_and_over_capture() {
        let (emulator, client) = emulator().await;
        let created = client
            .create(&[
                ("amount", "1000"),
                ("currency", "usd"),
                ("payment_method", "pm_card_visa"),
                ("confirm", "true"),
                ("capture_method", "manual"),
            ])
            .await;
        assert_eq!(created.json["status"], "requires_capture");
        assert_eq!(created.json["amount_capturable"], 1000);
        assert_eq!(created.json["amount_received"], 0);
        let id = created.json["id"].as_str().expect("id");
        let capture = format!("/v1/payment_intents/{id}/capture");

        let too_much = client
            .post(KEY, &capture, None, &[("amount_to_capture", "1500")])
            .await;
        assert_eq!(too_much.status, StatusCode::BAD_REQUEST);
        assert_eq!(too_much.json["error"]["type"], "invalid_request_error");
        assert_eq!(too_much.json["error"]["code"], "amount_too_large");
        assert_eq!(too_much.json["error"]["param"], "amount_to_capture");

        let captured = client
            .post(KEY, &capture, None, &[("amount_to_capture", "600")])
            .await;
        assert_eq!(captured.status, StatusCode::OK, "{}", captured.text);
        assert_eq!(captured.json["status"], "succeeded");
        assert_eq!(captured.json["amount_received"], 600);
        assert_eq!(captured.json["amount_capturable"], 0);

        let twice = client.post(KEY, &capture, None, &[]).await;
        assert_eq!(twice.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            twice.json["error"]["code"],
            "payment_intent_unexpected_state"
        );
        assert_eq!(
            event_types(&emulator),
            [
                "payment_intent.amount_capturable_updated",
                "payment_intent.succeeded"
            ]
        );
    }

    #[tokio::test]
    async fn each_test_card_declines_with_its_code() {
        let (emulator, client) = emulator().await;
        let cases = [
            (
                "pm_card_visa_chargeDeclined",
                "card_declined",
                Some("generic_decline"),
            ),
            (
                "pm_card_visa_chargeDeclinedInsufficientFunds",
                "card_declined",
                Some("insufficient_funds"),
            ),
            (
                "pm_card_chargeDeclinedProcessingError",
                "processing_error",
                None,
            ),
        ];
        for (payment_method, code, decline_code) in cases {
            let declined = client
                .create(&[
                    ("amount", "1000"),
                    ("currency", "usd"),
                    ("payment_method", payment_method),
                    ("confirm", "true"),
                ])
                .await;
            assert_eq!(
                declined.status,
                StatusCode::PAYMENT_REQUIRED,
                "{payment_method}"
            );
            let error = &declined.json["error"];
            assert_eq!(error["type"], "card_error");
            assert_eq!(error["code"], code);
            match decline_code {
                Some(decline_code) => assert_eq!(error["decline_code"], decline_code),
                None => assert!(error.get("decline_code").is_none()),
            }
            assert!(error.get("param").is_none());
            assert!(
                error["charge"]
                    .as_str()
                    .is_some_and(|c| c.starts_with("ch_"))
            );
            let pi = &error["payment_intent"];
            assert_eq!(pi["status"], "requires_payment_method");
            assert_eq!(pi["last_payment_error"]["code"], code);
            assert_eq!(pi["amount_received"], 0);
            let id = pi["id"].as_str().expect("id");
            let stored = client.get(KEY, &format!("/v1/payment_intents/{id}")).await;
            assert_eq!(stored.json["status"], "requires_payment_method");
        }
        assert_eq!(event_types(&emulator), ["payment_intent.payment_failed"; 3]);
    }

    #[tokio::test]
    async fn invalid_parameters_are_rejected_with_the_param_named() {
        let (emulator, client) = emulator().await;
        let cases: [(Form, &str, &str); 8] = [
            (&[("currency", "usd")], "parameter_missing", "amount"),
            // Stripe's maximum is eight digits of minor units.
            (
                &[("amount", "100000000"), ("currency", "usd")],
                "amount_too_large",
                "amount",
            ),
            (
                &[
                    ("amount", "100"),
                    ("currency", "usd"),
                    ("payment_method", "pm_card_visa"),
                    ("confirm", "true"),
                    ("return_url", "not a url"),
                ],
                "url_invalid",
                "return_url",
            ),
            (
                &[("amount", "0"), ("currency", "usd")],
                "parameter_invalid_integer",
                "amount",
            ),
            (
                &[("amount", "ten"), ("currency", "usd")],
                "parameter_invalid_integer",
                "amount",
            ),
            (
                &[("amount", "100"), ("currency", "dollars")],
                "parameter_invalid_string",
                "currency",
            ),
            (
                &[
                    ("amount", "100"),
                    ("currency", "usd"),
                    ("payment_method", "pm_card_bogus"),
                ],
                "resource_missing",
                "payment_method",
            ),
            (
                &[("amount", "100"), ("currency", "usd"), ("amonut", "1")],
                "parameter_unknown",
                "amonut",
            ),
        ];
        for (form, code, param) in cases {
            let rejected = client.create(form).await;
            assert_eq!(rejected.status, StatusCode::BAD_REQUEST, "{form:?}");
            assert_eq!(rejected.json["error"]["type"], "invalid_request_error");
            assert_eq!(rejected.json["error"]["code"], code, "{form:?}");
            assert_eq!(rejected.json["error"]["param"], param, "{form:?}");
        }
        let unknown = client.get(KEY, "/v1/payment_intents/pi_doesnotexist").await;
        assert_eq!(unknown.status, StatusCode::NOT_FOUND);
        assert_eq!(unknown.json["error"]["code"], "resource_missing");
        assert!(emulator.events().is_empty());
    }

    #[tokio::test]
    async fn emulator_failure_triggers_fail_before_anything_is_created() {
        let (emulator, client) = emulator().await;
        let unavailable: &[(&str, &str)] = &[
            ("amount", "1000"),
            ("currency", "usd"),
            ("payment_method", "pm_emulator_unavailable"),
            ("confirm", "true"),
        ];
        let first = client
            .post(KEY, "/v1/payment_intents", Some("outage-1"), unavailable)
            .await;
        assert_eq!(first.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(first.json["error"]["type"], "api_error");
        // 5xx is not saved: the retry runs again instead of being replayed.
        let retry = client
            .post(KEY, "/v1/payment_intents", Some("outage-1"), unavailable)
            .await;
        assert_eq!(retry.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(retry.header("idempotent-replayed"), None);
        // …and the key is free for a request that can succeed.
        let recovered = client
            .post(KEY, "/v1/payment_intents", Some("outage-1"), VISA_1000)
            .await;
        assert_eq!(recovered.status, StatusCode::OK);

        let limited = client
            .create(&[
                ("amount", "1000"),
                ("currency", "usd"),
                ("payment_method", "pm_emulator_rate_limited"),
            ])
            .await;
        assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(limited.header("retry-after"), Some("2"));
        assert_eq!(limited.json["error"]["code"], "rate_limit");
        assert_eq!(event_types(&emulator), ["payment_intent.succeeded"]);
    }

    #[tokio::test]
    async fn three_d_secure_requires_action_until_the_page_completes_it() {
        let (emulator, client) = emulator().await;
        let return_url = "https://shop.example/checkout/done?order=42";
        let created = client
            .create(&[
                ("amount", "1000"),
                ("currency", "usd"),
                ("payment_method", "pm_card_threeDSecure2Required"),
                ("confirm", "true"),
                ("return_url", return_url),
            ])
            .await;
        assert_eq!(created.status, StatusCode::OK);
        assert_eq!(created.json["status"], "requires_action");
        let id = created.json["id"].as_str().expect("id").to_owned();
        let action = &created.json["next_action"];
        assert_eq!(action["type"], "redirect_to_url");
        assert_eq!(action["redirect_to_url"]["return_url"], return_url);
        let page = action["redirect_to_url"]["url"].as_str().expect("url");
        assert!(page.starts_with(&format!(
            "{}/emulator/3ds/{id}?return_url=",
            emulator.base_url()
        )));

        let visited = client.http.get(page).send().await.expect("page");
        assert_eq!(visited.status().as_u16(), 302);
        let location = visited.headers()["location"]
            .to_str()
            .expect("ascii")
            .to_owned();
        let location = url::Url::parse(&location).expect("url");
        assert_eq!(location.host_str(), Some("shop.example"));
        assert_eq!(location.path(), "/checkout/done");
        let query: HashMap<String, String> = location.query_pairs().into_owned().collect();
        assert_eq!(query.get("order").map(String::as_str), Some("42"));
        assert_eq!(query.get("payment_intent"), Some(&id));
        assert_eq!(
            query.get("redirect_status").map(String::as_str),
            Some("succeeded")
        );
        assert_eq!(
            query
                .get("payment_intent_client_secret")
                .map(String::as_str),
            created.json["client_secret"].as_str()
        );

        let done = client.get(KEY, &format!("/v1/payment_intents/{id}")).await;
        assert_eq!(done.json["status"], "succeeded");
        assert_eq!(done.json["next_action"], Value::Null);
        // A second visit changes nothing.
        let revisit = client.http.get(page).send().await.expect("page");
        assert_eq!(revisit.status().as_u16(), 409);

        // Manual capture and no return_url: the page answers 200 and the
        // intent waits for capture.
        let manual = client
            .create(&[
                ("amount", "700"),
                ("currency", "usd"),
                ("payment_method", "pm_card_authenticationRequired"),
                ("confirm", "true"),
                ("capture_method", "manual"),
            ])
            .await;
        let manual_id = manual.json["id"].as_str().expect("id");
        let page = manual.json["next_action"]["redirect_to_url"]["url"]
            .as_str()
            .expect("url");
        let visited = client.http.get(page).send().await.expect("page");
        assert_eq!(visited.status().as_u16(), 200);
        let waiting = client
            .get(KEY, &format!("/v1/payment_intents/{manual_id}"))
            .await;
        assert_eq!(waiting.json["status"], "requires_capture");
        assert_eq!(waiting.json["amount_capturable"], 700);

        assert_eq!(
            event_types(&emulator),
            [
                "payment_intent.requires_action",
                "payment_intent.succeeded",
                "payment_intent.requires_action",
                "payment_intent.amount_capturable_updated",
            ]
        );
    }

    #[tokio::test]
    async fn failed_three_d_secure_returns_to_requires_payment_method() {
        let (emulator, client) = emulator().await;
        let created = client
            .create(&[
                ("amount", "1000"),
                ("currency", "usd"),
                ("payment_method", "pm_card_threeDSecure2Required"),
                ("confirm", "true"),
            ])
            .await;
        let id = created.json["id"].as_str().expect("id");
        let page = format!("{}/emulator/3ds/{id}?action=fail", emulator.base_url());
        let visited = client.http.get(page).send().await.expect("page");
        assert_eq!(visited.status().as_u16(), 200);
        let failed = client.get(KEY, &format!("/v1/payment_intents/{id}")).await;
        assert_eq!(failed.json["status"], "requires_payment_method");
        assert_eq!(
            failed.json["last_payment_error"]["code"],
            "payment_intent_authentication_failure"
        );
        assert_eq!(
            event_types(&emulator),
            [
                "payment_intent.requires_action",
                "payment_intent.payment_failed"
            ]
        );
    }

    #[tokio::test]
    async fn cancel_from_requires_capture_but_not_twice() {
        let (emulator, client) = emulator().await;
        let created = client
            .create(&[
                ("amount", "1000"),
                ("currency", "usd"),
                ("payment_method", "pm_card_visa"),
                ("confirm", "true"),
                ("capture_method", "manual"),
            ])
            .await;
        let id = created.json["id"].as_str().expect("id");
        let cancel = format!("/v1/payment_intents/{id}/cancel");
        let canceled = client
            .post(
                KEY,
                &cancel,
                None,
                &[("cancellation_reason", "requested_by_customer")],
            )
            .await;
        assert_eq!(canceled.status, StatusCode::OK);
        assert_eq!(canceled.json["status"], "canceled");
        assert_eq!(
            canceled.json["cancellation_reason"],
            "requested_by_customer"
        );
        assert_eq!(canceled.json["amount_capturable"], 0);
        assert!(canceled.json["canceled_at"].as_i64().is_some());

        let again = client.post(KEY, &cancel, None, &[]).await;
        assert_eq!(again.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            again.json["error"]["code"],
            "payment_intent_unexpected_state"
        );
        let capture = client
            .post(KEY, &format!("/v1/payment_intents/{id}/capture"), None, &[])
            .await;
        assert_eq!(
            capture.json["error"]["code"],
            "payment_intent_unexpected_state"
        );

        let succeeded = client.create(VISA_1000).await;
        let succeeded_id = succeeded.json["id"].as_str().expect("id");
        let late = client
            .post(
                KEY,
                &format!("/v1/payment_intents/{succeeded_id}/cancel"),
                None,
                &[],
            )
            .await;
        assert_eq!(
            late.json["error"]["code"],
            "payment_intent_unexpected_state"
        );
        assert_eq!(
            event_types(&emulator),
            [
                "payment_intent.amount_capturable_updated",
                "payment_intent.canceled",
                "payment_intent.succeeded",
            ]
        );
    }

    #[tokio::test]
    async fn partial_and_full_refunds_never_exceed_the_payment() {
        let (emulator, client) = emulator().await;
        let paid = client.create(VISA_1000).await;
        let id = paid.json["id"].as_str().expect("id");
        let charge = paid.json["latest_charge"].as_str().expect("charge");

        let partial = client
            .post(
                KEY,
                "/v1/refunds",
                None,
                &[
                    ("payment_intent", id),
                    ("amount", "300"),
                    ("reason", "requested_by_customer"),
                    ("metadata[ticket]", "T-1"),
                ],
            )
            .await;
        assert_eq!(partial.status, StatusCode::OK, "{}", partial.text);
        assert!(
            partial.json["id"]
                .as_str()
                .is_some_and(|r| r.starts_with("re_"))
        );
        assert_eq!(partial.json["object"], "refund");
        assert_eq!(partial.json["status"], "succeeded");
        assert_eq!(partial.json["amount"], 300);
        assert_eq!(partial.json["payment_intent"], id);
        assert_eq!(partial.json["charge"], charge);
        assert_eq!(partial.json["metadata"]["ticket"], "T-1");

        let over = client
            .post(
                KEY,
                "/v1/refunds",
                None,
                &[("payment_intent", id), ("amount", "800")],
            )
            .await;
        assert_eq!(over.status, StatusCode::BAD_REQUEST);
        assert_eq!(over.json["error"]["code"], "amount_too_large");
        assert_eq!(over.json["error"]["param"], "amount");

        let rest = client
            .post(KEY, "/v1/refunds", None, &[("charge", charge)])
            .await;
        assert_eq!(rest.status, StatusCode::OK);
        assert_eq!(rest.json["amount"], 700);

        let nothing_left = client
            .post(KEY, "/v1/refunds", None, &[("payment_intent", id)])
            .await;
        assert_eq!(nothing_left.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            nothing_left.json["error"]["code"],
            "charge_already_refunded"
        );

        let charge_now = client.get(KEY, &format!("/v1/charges/{charge}")).await;
        assert_eq!(charge_now.json["amount_refunded"], 1000);
        assert_eq!(charge_now.json["refunded"], true);
        let refund_id = rest.json["id"].as_str().expect("id");
        let fetched = client.get(KEY, &format!("/v1/refunds/{refund_id}")).await;
        assert_eq!(fetched.json, rest.json);
        assert_eq!(
            client.get(KEY, "/v1/balance").await.json["available"][0]["amount"],
            0
        );

        let uncaptured = client
            .create(&[
                ("amount", "1000"),
                ("currency", "usd"),
                ("payment_method", "pm_card_visa"),
                ("confirm", "true"),
                ("capture_method", "manual"),
            ])
            .await;
        let uncaptured_id = uncaptured.json["id"].as_str().expect("id");
        let not_yet = client
            .post(
                KEY,
                "/v1/refunds",
                None,
                &[("payment_intent", uncaptured_id)],
            )
            .await;
        assert_eq!(not_yet.status, StatusCode::BAD_REQUEST);
        let missing = client.post(KEY, "/v1/refunds", None, &[]).await;
        assert_eq!(missing.json["error"]["code"], "parameter_missing");

        assert_eq!(
            event_types(&emulator),
            [
                "payment_intent.succeeded",
                "charge.refunded",
                "refund.created",
                "charge.refunded",
                "refund.created",
                "payment_intent.amount_capturable_updated",
            ]
        );
    }

    #[tokio::test]
    async fn idempotency_key_replays_the_first_response_byte_for_byte() {
        let (emulator, client) = emulator().await;
        let first = client
            .post(KEY, "/v1/payment_intents", Some("order-42"), VISA_1000)
            .await;
        assert_eq!(first.status, StatusCode::OK);
        assert_eq!(first.header("idempotent-replayed"), None);
        // Same parameters in another order are the same request.
        let reordered: Vec<(&str, &str)> = VISA_1000.iter().rev().copied().collect();
        let replay = client
            .post(KEY, "/v1/payment_intents", Some("order-42"), &reordered)
            .await;
        assert_eq!(replay.status, StatusCode::OK);
        assert_eq!(replay.text, first.text);
        assert_eq!(replay.header("idempotent-replayed"), Some("true"));
        assert_eq!(
            replay.header("original-request"),
            first.header("request-id")
        );
        assert_eq!(event_types(&emulator), ["payment_intent.succeeded"]);

        let different = client
            .post(
                KEY,
                "/v1/payment_intents",
                Some("order-42"),
                &[
                    ("amount", "1001"),
                    ("currency", "usd"),
                    ("payment_method", "pm_card_visa"),
                    ("confirm", "true"),
                ],
            )
            .await;
        assert_eq!(different.status, StatusCode::BAD_REQUEST);
        assert_eq!(different.json["error"]["type"], "idempotency_error");
        let id = first.json["id"].as_str().expect("id");
        let other_endpoint = client
            .post(
                KEY,
                &format!("/v1/payment_intents/{id}/cancel"),
                Some("order-42"),
                &[],
            )
            .await;
        assert_eq!(other_endpoint.json["error"]["type"], "idempotency_error");

        // Keys are scoped per API key: another tenant's same key is new.
        let other = client
            .post(
                OTHER_KEY,
                "/v1/payment_intents",
                Some("order-42"),
                VISA_1000,
            )
            .await;
        assert_eq!(other.status, StatusCode::OK);
        assert_eq!(other.header("idempotent-replayed"), None);
        assert_ne!(other.json["id"], first.json["id"]);

        // A decline is saved too: the retry gets the same 402, no new attempt.
        let declined: &[(&str, &str)] = &[
            ("amount", "1000"),
            ("currency", "usd"),
            ("payment_method", "pm_card_visa_chargeDeclined"),
            ("confirm", "true"),
        ];
        let first_decline = client
            .post(KEY, "/v1/payment_intents", Some("declined-1"), declined)
            .await;
        let second_decline = client
            .post(KEY, "/v1/payment_intents", Some("declined-1"), declined)
            .await;
        assert_eq!(second_decline.status, StatusCode::PAYMENT_REQUIRED);
        assert_eq!(second_decline.text, first_decline.text);
        assert_eq!(second_decline.header("idempotent-replayed"), Some("true"));

        // A validation failure is not saved: the key stays usable.
        let invalid = client
            .post(
                KEY,
                "/v1/payment_intents",
                Some("fix-me"),
                &[("currency", "usd")],
            )
            .await;
        assert_eq!(invalid.status, StatusCode::BAD_REQUEST);
        let fixed = client
            .post(KEY, "/v1/payment_intents", Some("fix-me"), VISA_1000)
            .await;
        assert_eq!(fixed.status, StatusCode::OK);

        let recorded: Vec<Option<String>> = emulator
            .calls()
            .into_iter()
            .map(|call| call.idempotency_key)
            .collect();
        assert_eq!(recorded[0].as_deref(), Some("order-42"));
        assert_eq!(
            event_types(&emulator),
            [
                "payment_intent.succeeded",
                "payment_intent.succeeded",
                "payment_intent.payment_failed",
                "payment_intent.succeeded",
            ]
        );
    }

    #[tokio::test]
    async fn a_key_in_flight_is_409_for_a_concurrent_request() {
        let (emulator, client) = emulator().await;
        let body = "amount=1000&currency=usd&payment_method=pm_card_visa&confirm=true";
        let (head, tail) = body.split_at(10);
        // Send the headers and part of the body, then hold the request open.
        let mut slow = std::net::TcpStream::connect(emulator.local_addr()).expect("connect");
        write!(
            slow,
            "POST /v1/payment_intents HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {KEY}\r\n\
             Idempotency-Key: slow-1\r\nContent-Type: application/x-www-form-urlencoded\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{head}",
            body.len()
        )
        .expect("write head");
        slow.flush().expect("flush");
        // The key is claimed in the same critical section that records the
        // call, so once the call is visible the key is in flight.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !emulator
            .calls()
            .iter()
            .any(|c| c.idempotency_key.as_deref() == Some("slow-1"))
        {
            assert!(Instant::now() < deadline, "slow request never arrived");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }

        let concurrent = client
            .post(KEY, "/v1/payment_intents", Some("slow-1"), VISA_1000)
            .await;
        assert_eq!(concurrent.status, StatusCode::CONFLICT);
        assert_eq!(concurrent.json["error"]["type"], "idempotency_error");
        assert_eq!(concurrent.json["error"]["code"], "idempotency_key_in_use");

        let tail = tail.to_owned();
        let raw = tokio::task::spawn_blocking(move || {
            slow.write_all(tail.as_bytes()).expect("write tail");
            let mut raw = String::new();
            slow.read_to_string(&mut raw).expect("read response");
            raw
        })
        .await
        .expect("joined");
        assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");

        let after = client
            .post(KEY, "/v1/payment_intents", Some("slow-1"), VISA_1000)
            .await;
        assert_eq!(after.header("idempotent-replayed"), Some("true"));
        assert!(raw.ends_with(&after.text));
        assert_eq!(event_types(&emulator), ["payment_intent.succeeded"]);
    }

    #[tokio::test]
    async fn an_abandoned_request_releases_its_key() {
        let (emulator, client) = emulator().await;
        let mut abandoned = std::net::TcpStream::connect(emulator.local_addr()).expect("connect");
        write!(
            abandoned,
            "POST /v1/payment_intents HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {KEY}\r\n\
             Idempotency-Key: abandoned-1\r\nContent-Length: 100\r\n\r\namount=1"
        )
        .expect("write head");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !emulator
            .calls()
            .iter()
            .any(|c| c.idempotency_key.as_deref() == Some("abandoned-1"))
        {
            assert!(Instant::now() < deadline, "request never arrived");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        drop(abandoned);
        // The server notices the disconnect and releases the claim; until it
        // does, the key answers 409.
        loop {
            let retry = client
                .post(KEY, "/v1/payment_intents", Some("abandoned-1"), VISA_1000)
                .await;
            if retry.status == StatusCode::OK {
                assert_eq!(retry.header("idempotent-replayed"), None);
                break;
            }
            assert_eq!(retry.status, StatusCode::CONFLICT);
            assert!(Instant::now() < deadline, "key stayed in use");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn objects_are_invisible_to_other_api_keys() {
        let (_emulator, client) = emulator().await;
        let created = client.create(VISA_1000).await;
        let id = created.json["id"].as_str().expect("id");
        let charge = created.json["latest_charge"].as_str().expect("charge");
        let path = format!("/v1/payment_intents/{id}");
        let hidden = client.get(OTHER_KEY, &path).await;
        assert_eq!(hidden.status, StatusCode::NOT_FOUND);
        assert_eq!(hidden.json["error"]["code"], "resource_missing");
        let refund = client
            .post(OTHER_KEY, "/v1/refunds", None, &[("payment_intent", id)])
            .await;
        assert_eq!(refund.json["error"]["code"], "resource_missing");
        let by_charge = client
            .get(OTHER_KEY, &format!("/v1/charges/{charge}"))
            .await;
        assert_eq!(by_charge.status, StatusCode::NOT_FOUND);
        assert_eq!(client.get(KEY, &path).await.status, StatusCode::OK);
    }

    #[tokio::test]
    async fn refunds_of_the_pending_refund_card_stay_pending() {
        let (_emulator, client) = emulator().await;
        for (card, status) in [
            ("pm_card_pendingRefund", "pending"),
            ("pm_card_visa", "succeeded"),
        ] {
            let paid = client
                .create(&[
                    ("amount", "900"),
                    ("currency", "usd"),
                    ("payment_method", card),
                    ("confirm", "true"),
                ])
                .await;
            assert_eq!(paid.json["status"], "succeeded", "{card}");
            let id = paid.json["id"].as_str().expect("id");
            let refund = client
                .post(
                    KEY,
                    "/v1/refunds",
                    None,
                    &[("payment_intent", id), ("amount", "400")],
                )
                .await;
            assert_eq!(refund.status, StatusCode::OK, "{card}");
            assert_eq!(refund.json["status"], status, "{card}");
            let read = client
                .get(
                    KEY,
                    &format!("/v1/refunds/{}", refund.json["id"].as_str().unwrap()),
                )
                .await;
            assert_eq!(read.json["status"], status, "{card}");
        }
    }

    #[tokio::test]
    async fn events_can_be_retrieved_by_their_own_account_only() {
        let (emulator, client) = emulator().await;
        let created = client
            .create(&[
                ("amount", "1500"),
                ("currency", "usd"),
                ("payment_method", "pm_card_visa"),
                ("confirm", "true"),
            ])
            .await;
        assert_eq!(created.status, StatusCode::OK);
        let emitted = emulator.events();
        let event = emitted.last().expect("the payment emitted events");
        let path = format!("/v1/events/{}", event["id"].as_str().unwrap());

        let own = client.get(KEY, &path).await;
        assert_eq!(own.status, StatusCode::OK);
        assert_eq!(&own.json, event, "the event as it was delivered");

        for (key, path) in [(OTHER_KEY, path.as_str()), (KEY, "/v1/events/evt_unknown")] {
            let missing = client.get(key, path).await;
            assert_eq!(missing.status, StatusCode::NOT_FOUND);
            assert_eq!(missing.json["error"]["code"], "resource_missing");
            assert_eq!(missing.json["error"]["type"], "invalid_request_error");
        }
    }

    #[tokio::test]
    async fn unknown_urls_and_methods_are_stripe_404s() {
        let (emulator, client) = emulator().await;
        let unknown = client.get(KEY, "/v1/customers_typo").await;
        assert_eq!(unknown.status, StatusCode::NOT_FOUND);
        assert_eq!(unknown.json["error"]["type"], "invalid_request_error");
        assert!(
            unknown.json["error"]["message"].as_str().is_some_and(
                |m| m.starts_with("Unrecognized request URL (GET: /v1/customers_typo)")
            )
        );
        let wrong_method = client.get(KEY, "/v1/refunds").await;
        assert_eq!(wrong_method.status, StatusCode::NOT_FOUND);
        assert_eq!(wrong_method.json["error"]["type"], "invalid_request_error");
        assert_eq!(emulator.calls().len(), 2);
    }

    /// Creates a webhook endpoint for `url` the way Stripe's official SDKs
    /// encode it (indexed arrays, bracketed metadata); its JSON.
    async fn create_endpoint(client: &Client, url: &str, metadata: Form<'_>) -> Value {
        let mut form = vec![("url", url), ("enabled_events[0]", "*")];
        let keys: Vec<String> = metadata
            .iter()
            .map(|(k, _)| format!("metadata[{k}]"))
            .collect();
        form.extend(
            keys.iter()
                .map(String::as_str)
                .zip(metadata.iter().map(|(_, v)| *v)),
        );
        let created = client.post(KEY, "/v1/webhook_endpoints", None, &form).await;
        assert_eq!(created.status, StatusCode::OK, "{}", created.text);
        created.json
    }

    #[tokio::test]
    async fn webhook_endpoints_keep_their_metadata() {
        let (_emulator, client) = emulator().await;
        let created = create_endpoint(
            &client,
            "https://shop.example/hooks",
            &[("suite", "sdk"), ("n", "1")],
        )
        .await;
        let expected = json!({"suite": "sdk", "n": "1"});
        assert_eq!(created["metadata"], expected);
        let id = created["id"].as_str().expect("id");
        let read = client
            .get(KEY, &format!("/v1/webhook_endpoints/{id}"))
            .await;
        assert_eq!(read.json["metadata"], expected);
        let listed = client.get(KEY, "/v1/webhook_endpoints").await;
        assert_eq!(listed.json["data"][0]["metadata"], expected);
    }

    #[tokio::test]
    async fn webhook_endpoints_list_in_pages() {
        // List parameters in the query string, as the official SDKs'
        // auto-pagination sends them.
        let (_emulator, client) = emulator().await;
        let mut ids = Vec::new();
        for n in 0..3 {
            let url = format!("https://shop.example/hooks/{n}");
            let created = create_endpoint(&client, &url, &[]).await;
            ids.push(created["id"].as_str().expect("id").to_owned());
        }
        let listed_ids = |answer: &Answer| -> Vec<String> {
            answer.json["data"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|e| e["id"].as_str().map(str::to_owned))
                .collect()
        };
        // Newest first, `limit` per page, `has_more` until the last one.
        let first = client.get(KEY, "/v1/webhook_endpoints?limit=2").await;
        assert_eq!(first.status, StatusCode::OK, "{}", first.text);
        assert_eq!(first.json["object"], "list");
        assert_eq!(first.json["url"], "/v1/webhook_endpoints");
        assert_eq!(listed_ids(&first), [ids[2].clone(), ids[1].clone()]);
        assert_eq!(first.json["has_more"], true);
        assert!(first.json["data"][0].get("secret").is_none());
        let next = client
            .get(
                KEY,
                &format!("/v1/webhook_endpoints?limit=2&starting_after={}", ids[1]),
            )
            .await;
        assert_eq!(listed_ids(&next), [ids[0].clone()]);
        assert_eq!(next.json["has_more"], false);
        let back = client
            .get(
                KEY,
                &format!("/v1/webhook_endpoints?limit=1&ending_before={}", ids[0]),
            )
            .await;
        assert_eq!(listed_ids(&back), [ids[1].clone()]);
        assert_eq!(back.json["has_more"], true);

        for (query, param) in [
            ("limit=101", "limit"),
            ("limit=0", "limit"),
            ("starting_after=we_unknown", "starting_after"),
            ("created=1", "created"),
        ] {
            let refused = client
                .get(KEY, &format!("/v1/webhook_endpoints?{query}"))
                .await;
            assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{query}");
            assert_eq!(refused.json["error"]["param"], param, "{query}");
        }
    }

    /// A webhook endpoint for tests: records every delivery and refuses the
    /// first `refuse_first` of them with 500.
    async fn webhook_endpoint(
        refuse_first: usize,
    ) -> (String, mpsc::UnboundedReceiver<(ReqwestHeaders, Bytes)>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let seen = Arc::new(AtomicUsize::new(0));
        let app = Router::new().route(
            "/hooks/stripe",
            post(move |headers: HeaderMap, body: Bytes| {
                let tx = tx.clone();
                let seen = seen.clone();
                async move {
                    let mut copied = ReqwestHeaders::new();
                    for (name, value) in &headers {
                        copied.insert(name.clone(), value.clone());
                    }
                    let _ = tx.send((copied, body));
                    if seen.fetch_add(1, Ordering::SeqCst) < refuse_first {
                        StatusCode::INTERNAL_SERVER_ERROR
                    } else {
                        StatusCode::OK
                    }
                }
            }),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!(
            "http://{}/hooks/stripe",
            listener.local_addr().expect("addr")
        );
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (url, rx)
    }

    async fn next_delivery(
        rx: &mut mpsc::UnboundedReceiver<(ReqwestHeaders, Bytes)>,
    ) -> (ReqwestHeaders, Bytes) {
        tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("a delivery within 10 s")
            .expect("endpoint alive")
    }

    /// Verifies a `Stripe-Signature` the way a receiver must: recompute the
    /// HMAC over `"{t}.{body}"` and compare in constant time.
    fn verify(secret: &str, header: &str, body: &[u8]) -> bool {
        let mut timestamp = None;
        let mut signatures = Vec::new();
        for part in header.split(',') {
            match part.split_once('=') {
                Some(("t", t)) => timestamp = Some(t.to_owned()),
                Some(("v1", v1)) => signatures.push(v1.to_owned()),
                _ => {}
            }
        }
        let Some(timestamp) = timestamp else {
            return false;
        };
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
        mac.update(format!("{timestamp}.").as_bytes());
        mac.update(body);
        let expected = hex::encode(mac.finalize().into_bytes());
        signatures
            .iter()
            .any(|v1| bool::from(v1.as_bytes().ct_eq(expected.as_bytes())))
    }

    #[tokio::test]
    async fn webhooks_are_signed_and_retried_until_accepted() {
        let (emulator, client) = emulator().await;
        let secret = "whsec_emulator_test_secret";
        let (url, mut deliveries) = webhook_endpoint(1).await;
        emulator.subscribe_webhooks(url, secret.to_owned());

        let created = client
            .post(KEY, "/v1/payment_intents", Some("hook-1"), VISA_1000)
            .await;
        let id = created.json["id"].as_str().expect("id");

        let (first_headers, first_body) = next_delivery(&mut deliveries).await;
        let (retry_headers, retry_body) = next_delivery(&mut deliveries).await;
        assert_eq!(first_body, retry_body, "the retry carries the same event");
        for (headers, body) in [(&first_headers, &first_body), (&retry_headers, &retry_body)] {
            assert_eq!(
                headers.get("content-type").and_then(|v| v.to_str().ok()),
                Some("application/json")
            );
            let signature = headers
                .get("stripe-signature")
                .and_then(|v| v.to_str().ok())
                .expect("signed");
            assert!(verify(secret, signature, body), "signature verifies");
            assert!(!verify("whsec_wrong", signature, body));
        }
        let event: Value = serde_json::from_slice(&first_body).expect("json");
        assert!(event["id"].as_str().is_some_and(|e| e.starts_with("evt_")));
        assert_eq!(event["object"], "event");
        assert_eq!(event["type"], "payment_intent.succeeded");
        assert_eq!(event["livemode"], false);
        assert_eq!(event["api_version"], "2024-06-20");
        assert_eq!(event["data"]["object"]["id"], id);
        assert_eq!(event["data"]["object"]["status"], "succeeded");
        assert_eq!(event["request"]["idempotency_key"], "hook-1");
        assert_eq!(emulator.events(), vec![event]);

        // A refund emits charge.refunded and refund.created (in any order).
        let refunded = client
            .post(KEY, "/v1/refunds", None, &[("payment_intent", id)])
            .await;
        assert_eq!(refunded.status, StatusCode::OK);
        let mut types = Vec::new();
        for _ in 0..2 {
            let (headers, body) = next_delivery(&mut deliveries).await;
            let signature = headers
                .get("stripe-signature")
                .and_then(|v| v.to_str().ok())
                .expect("signed");
            assert!(verify(secret, signature, &body));
            let event: Value = serde_json::from_slice(&body).expect("json");
            types.push(event["type"].as_str().unwrap_or_default().to_owned());
        }
        types.sort();
        assert_eq!(types, ["charge.refunded", "refund.created"]);
    }

    #[tokio::test]
    async fn an_unreachable_webhook_endpoint_never_delays_the_api() {
        let (emulator, client) = emulator().await;
        // Nothing listens on this port once the listener is dropped.
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            listener.local_addr().expect("addr").port()
        };
        emulator.subscribe_webhooks(format!("http://127.0.0.1:{port}/gone"), "whsec_x".into());
        let started = Instant::now();
        let created = client.create(VISA_1000).await;
        assert_eq!(created.status, StatusCode::OK);
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(emulator.events().len(), 1);
    }

    #[tokio::test]
    async fn shutdown_stops_the_server() {
        let (emulator, client) = emulator().await;
        assert_eq!(client.get(KEY, "/v1/balance").await.status, StatusCode::OK);
        let addr = emulator.local_addr();
        emulator.shutdown().await;
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    }
}
