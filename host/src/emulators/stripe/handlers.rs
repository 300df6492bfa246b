//! The HTTP endpoints: parse and validate parameters the way Stripe does,
//! run the operation on the caller's account under the state lock (never held
//! across an `.await`), publish the resulting events, render JSON.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::{Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::Value;

use super::error::ApiError;
use super::form::Params;
use super::model::{
    Confirmation, Emitted, NewPaymentIntent, NewRefund, RefundTarget, emulator_trigger, test_card,
};
use super::webhook::Cause;
use super::{RequestContext, Shared};

/// Stripe's maximum amount (eight digits of minor units).
const MAX_AMOUNT: i64 = 99_999_999;

const CAPTURE_METHODS: &[&str] = &["automatic", "automatic_async", "manual"];
const CANCELLATION_REASONS: &[&str] = &[
    "duplicate",
    "fraudulent",
    "requested_by_customer",
    "abandoned",
];
const REFUND_REASONS: &[&str] = &["duplicate", "fraudulent", "requested_by_customer"];

/// Parameters a real client may send that do not change anything the emulator
/// models; they are accepted and ignored rather than rejected as unknown.
const IGNORED_PREFIXES: &[&str] = &[
    "expand[",
    "payment_method_types[",
    "automatic_payment_methods[",
    "payment_method_options[",
    "shipping[",
];

type ApiResult = Result<Json<Value>, ApiError>;

/// `GET /v1/balance`: the account's balance object.
pub(crate) async fn balance(
    State(shared): State<Arc<Shared>>,
    axum::Extension(ctx): axum::Extension<RequestContext>,
) -> Json<Value> {
    let mut state = shared.lock();
    Json(state.account(&ctx.account).balance_json())
}

/// `POST /v1/payment_intents`.
pub(crate) async fn create_payment_intent(
    State(shared): State<Arc<Shared>>,
    axum::Extension(ctx): axum::Extension<RequestContext>,
    body: Bytes,
) -> ApiResult {
    let params = Params::parse(&body);
    let new = parse_new_payment_intent(&params)?;
    let expand = params.expands("latest_charge");
    let mut events = Vec::new();
    let result = {
        let mut state = shared.lock();
        let account = state.account(&ctx.account);
        account
            .create_payment_intent(new, &shared.base_url, &mut events)
            .and_then(|id| account.payment_intent_json(&id, expand))
    };
    shared.publish(&ctx.account, events, &ctx.cause());
    result.map(Json)
}

fn parse_new_payment_intent(params: &Params) -> Result<NewPaymentIntent, ApiError> {
    let payment_method = payment_method_param(params)?;
    params.reject_unknown(
        &[
            "amount",
            "currency",
            "payment_method",
            "confirm",
            "capture_method",
            "return_url",
            "description",
            "receipt_email",
            "metadata",
            "customer",
            "statement_descriptor",
            "statement_descriptor_suffix",
        ],
        &[&["metadata["], IGNORED_PREFIXES].concat(),
    )?;
    let amount = params
        .positive_amount("amount")?
        .ok_or_else(|| ApiError::missing_param("amount"))?;
    if amount > MAX_AMOUNT {
        return Err(ApiError::invalid_param(
            "amount_too_large",
            "amount",
            format!("Amount must be no more than {MAX_AMOUNT}."),
        ));
    }
    let currency = params
        .text("currency")
        .ok_or_else(|| ApiError::missing_param("currency"))?;
    if currency.len() != 3 || !currency.chars().all(|c| c.is_ascii_alphabetic()) {
        return Err(ApiError::invalid_param(
            "parameter_invalid_string",
            "currency",
            format!("Invalid currency: {currency}. Use a three-letter ISO currency code."),
        ));
    }
    Ok(NewPaymentIntent {
        amount,
        currency: currency.to_ascii_lowercase(),
        payment_method,
        confirm: params.boolean("confirm")?.unwrap_or(false),
        // Stripe's default since API version 2024-04-10.
        capture_method: params
            .one_of("capture_method", CAPTURE_METHODS)?
            .unwrap_or("automatic_async"),
        return_url: params.url("return_url")?,
        description: params.text("description").map(str::to_owned),
        receipt_email: params.text("receipt_email").map(str::to_owned),
        metadata: params.metadata()?,
    })
}

/// Reads `payment_method`: an emulator trigger fails the request right here
/// (before anything is created); an id that is not one of Stripe's test
/// PaymentMethods is `resource_missing`.
fn payment_method_param(params: &Params) -> Result<Option<String>, ApiError> {
    let Some(payment_method) = params.text("payment_method") else {
        return Ok(None);
    };
    if let Some(trigger) = emulator_trigger(payment_method) {
        return Err(trigger.error());
    }
    if test_card(payment_method).is_none() {
        return Err(ApiError::no_such_param_object(
            "PaymentMethod",
            payment_method,
            "payment_method",
        ));
    }
    Ok(Some(payment_method.to_owned()))
}

/// `GET /v1/payment_intents/{id}` (`expand[]=latest_charge` honoured).
pub(crate) async fn retrieve_payment_intent(
    State(shared): State<Arc<Shared>>,
    axum::Extension(ctx): axum::Extension<RequestContext>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> ApiResult {
    let params = Params::parse(query.unwrap_or_default().as_bytes());
    let mut state = shared.lock();
    state
        .account(&ctx.account)
        .payment_intent_json(&id, params.expands("latest_charge"))
        .map(Json)
}

/// `POST /v1/payment_intents/{id}/confirm`.
pub(crate) async fn confirm_payment_intent(
    State(shared): State<Arc<Shared>>,
    axum::Extension(ctx): axum::Extension<RequestContext>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult {
    let params = Params::parse(&body);
    let payment_method = payment_method_param(&params)?;
    params.reject_unknown(
        &[
            "payment_method",
            "return_url",
            "receipt_email",
            "capture_method",
        ],
        IGNORED_PREFIXES,
    )?;
    let confirmation = Confirmation {
        payment_method,
        return_url: params.url("return_url")?,
        receipt_email: params.text("receipt_email").map(str::to_owned),
        capture_method: params.one_of("capture_method", CAPTURE_METHODS)?,
    };
    let expand = params.expands("latest_charge");
    run(&shared, &ctx, |account, events| {
        account.confirm(&id, confirmation, &shared.base_url, events)?;
        account.payment_intent_json(&id, expand)
    })
}

/// `POST /v1/payment_intents/{id}/capture`.
pub(crate) async fn capture_payment_intent(
    State(shared): State<Arc<Shared>>,
    axum::Extension(ctx): axum::Extension<RequestContext>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult {
    let params = Params::parse(&body);
    params.reject_unknown(
        &[
            "amount_to_capture",
            "metadata",
            "statement_descriptor",
            "statement_descriptor_suffix",
        ],
        &["metadata[", "expand["],
    )?;
    let amount_to_capture = params.positive_amount("amount_to_capture")?;
    let metadata = params.metadata()?;
    let expand = params.expands("latest_charge");
    run(&shared, &ctx, |account, events| {
        account.capture(&id, amount_to_capture, metadata, events)?;
        account.payment_intent_json(&id, expand)
    })
}

/// `POST /v1/payment_intents/{id}/cancel`.
pub(crate) async fn cancel_payment_intent(
    State(shared): State<Arc<Shared>>,
    axum::Extension(ctx): axum::Extension<RequestContext>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult {
    let params = Params::parse(&body);
    params.reject_unknown(&["cancellation_reason"], &["expand["])?;
    let reason = params.one_of("cancellation_reason", CANCELLATION_REASONS)?;
    let expand = params.expands("latest_charge");
    run(&shared, &ctx, |account, events| {
        account.cancel(&id, reason, events)?;
        account.payment_intent_json(&id, expand)
    })
}

/// `POST /v1/refunds`.
pub(crate) async fn create_refund(
    State(shared): State<Arc<Shared>>,
    axum::Extension(ctx): axum::Extension<RequestContext>,
    body: Bytes,
) -> ApiResult {
    let params = Params::parse(&body);
    params.reject_unknown(
        &["payment_intent", "charge", "amount", "reason", "metadata"],
        &["metadata[", "expand["],
    )?;
    let new = NewRefund {
        target: RefundTarget {
            payment_intent: params.text("payment_intent").map(str::to_owned),
            charge: params.text("charge").map(str::to_owned),
        },
        amount: params.positive_amount("amount")?,
        reason: params.one_of("reason", REFUND_REASONS)?,
        metadata: params.metadata()?,
    };
    run(&shared, &ctx, |account, events| {
        let id = account.refund(new, events)?;
        account.refund_json(&id)
    })
}

/// `GET /v1/refunds/{id}`.
pub(crate) async fn retrieve_refund(
    State(shared): State<Arc<Shared>>,
    axum::Extension(ctx): axum::Extension<RequestContext>,
    Path(id): Path<String>,
) -> ApiResult {
    let mut state = shared.lock();
    state.account(&ctx.account).refund_json(&id).map(Json)
}

/// `GET /v1/charges/{id}`.
pub(crate) async fn retrieve_charge(
    State(shared): State<Arc<Shared>>,
    axum::Extension(ctx): axum::Extension<RequestContext>,
    Path(id): Path<String>,
) -> ApiResult {
    let mut state = shared.lock();
    state.account(&ctx.account).charge_json(&id).map(Json)
}

/// `GET /v1/events/{id}`.
pub(crate) async fn retrieve_event(
    State(shared): State<Arc<Shared>>,
    axum::Extension(ctx): axum::Extension<RequestContext>,
    Path(id): Path<String>,
) -> ApiResult {
    let mut state = shared.lock();
    state.account(&ctx.account).event_json(&id).map(Json)
}

/// Runs `operation` on the caller's account under the lock, then publishes
/// whatever events it produced, whether it succeeded or not.
fn run(
    shared: &Shared,
    ctx: &RequestContext,
    operation: impl FnOnce(&mut super::model::Account, &mut Vec<Emitted>) -> Result<Value, ApiError>,
) -> ApiResult {
    let mut events = Vec::new();
    let result = {
        let mut state = shared.lock();
        operation(state.account(&ctx.account), &mut events)
    };
    shared.publish(&ctx.account, events, &ctx.cause());
    result.map(Json)
}

/// **Emulator extension**: `GET /emulator/3ds/{id}` stands in for the bank's
/// 3-D Secure page. Visiting it completes authentication (the PaymentIntent
/// becomes `succeeded`, or `requires_capture` for manual capture);
/// `?action=fail` fails it instead (back to `requires_payment_method`). Then
/// it redirects (302) to the PaymentIntent's `return_url` with
/// `payment_intent`, `payment_intent_client_secret` and `redirect_status`
/// appended, as Stripe does, or answers 200 text when there is none. The
/// `return_url` in the page's own query string is informational: the
/// redirect always goes to the URL the API client set.
pub(crate) async fn three_d_secure(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let params = Params::parse(query.unwrap_or_default().as_bytes());
    let succeed = params.text("action") != Some("fail");
    let mut events = Vec::new();
    let outcome = {
        let mut state = shared.lock();
        match state
            .accounts
            .iter_mut()
            .find(|(_, account)| account.has_payment_intent(&id))
        {
            None => Err((
                StatusCode::NOT_FOUND,
                format!("No such payment_intent: '{id}'"),
            )),
            Some((owner, account)) => {
                match account.complete_authentication(&id, succeed, &mut events) {
                    Err(message) => Err((StatusCode::CONFLICT, message)),
                    Ok(()) => Ok((
                        owner.clone(),
                        account
                            .payment_intent(&id)
                            .map(|pi| (pi.return_url.clone(), pi.client_secret().to_owned())),
                    )),
                }
            }
        }
    };
    let outcome = outcome.map(|(owner, redirect)| {
        shared.publish(&owner, events, &Cause::default());
        redirect
    });
    let redirect_status = if succeed { "succeeded" } else { "failed" };
    match outcome {
        Err((status, message)) => (status, message).into_response(),
        Ok(Some((Some(return_url), client_secret))) => match url::Url::parse(&return_url) {
            Ok(mut target) => {
                target
                    .query_pairs_mut()
                    .append_pair("payment_intent", &id)
                    .append_pair("payment_intent_client_secret", &client_secret)
                    .append_pair("redirect_status", redirect_status);
                (StatusCode::FOUND, [(header::LOCATION, target.to_string())]).into_response()
            }
            Err(_) => (StatusCode::OK, authenticated_text(&id, redirect_status)).into_response(),
        },
        Ok(_) => (StatusCode::OK, authenticated_text(&id, redirect_status)).into_response(),
    }
}

fn authenticated_text(id: &str, redirect_status: &str) -> String {
    format!("Emulator 3-D Secure for {id}: {redirect_status}. You can close this window.")
}

/// Any other URL or method: Stripe's 404 `invalid_request_error`.
pub(crate) async fn unrecognized(method: Method, uri: Uri) -> ApiError {
    ApiError::unrecognized_url(method.as_str(), uri.path())
}
