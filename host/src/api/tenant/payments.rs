//! `/v1/payments` and `/v1/balance`: ledger rows, refunds, the balance.

use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::{Json, response::IntoResponse, response::Response};
use serde::Deserialize;
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

use crate::api::types::{BalanceItem, BalanceList, ErrorBody, Page, Payment, RefundHold, Sum};
use crate::api::{ApiError, AppState, ErrorCode, PathParam, QueryParams, RawBody, TenantCtx};
use crate::checkout::RefundOutcome;
use crate::ledger::{self, PaymentFilter};
use crate::store::{Currency, OrderId, PaymentId, ProviderId};

use super::{IdempotencyKey, idempotency_key};

/// `POST /v1/payments/{id}/refunds`'s body; optional (empty = what remains).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefundBody {
    /// Minor units; omitted = what remains.
    amount: Option<i64>,
}

/// `POST /v1/payments/{id}/refunds`: through the provider for gateway
/// payments, recorded manually for gateway-less ones. 201 with the
/// `refunded` row; 202 with the hold when the gateway's refund is pending.
#[utoipa::path(post, path = "/v1/payments/{id}/refunds", tag = "tenant",
    params(("id" = String, Path, description = "payment id"), IdempotencyKey),
    request_body(content = Option<RefundBody>, description = "optional; empty refunds what remains"),
    security(("api_key" = [])),
    responses((status = 201, description = "the `refunded` row", body = Payment),
        (status = 202, description = "the gateway's refund is pending", body = RefundHold),
        (status = "default", description = "an error", body = ErrorBody)))]
pub async fn refund(
    State(state): State<AppState>,
    Extension(t): Extension<TenantCtx>,
    PathParam(id): PathParam<String>,
    headers: axum::http::HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    crate::api::features::require(&state, &t.tenant, crate::features::keys::REFUNDS)?;
    let id = PaymentId::parse(&id)
        .map_err(|_| ApiError::not_found(ErrorCode::PaymentNotFound, "no such payment"))?;
    // The body is optional: empty means "refund what remains".
    let amount = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        crate::api::json_bytes::<RefundBody>(&body)?.amount
    };
    let outcome = state
        .refunds
        .refund(&t.tenant, &id, amount, idempotency_key(&headers).as_deref())
        .await?;
    let (action, refund_id, refund_amount, response) = match &outcome {
        RefundOutcome::Booked(row) => (
            "payment.refunded",
            row.id.as_str().to_owned(),
            row.amount.minor,
            (StatusCode::CREATED, Json(Payment::from(row))).into_response(),
        ),
        RefundOutcome::Pending { hold } => (
            "payment.refund_pending",
            hold.id.as_str().to_owned(),
            hold.amount.minor,
            (
                StatusCode::ACCEPTED,
                Json(RefundHold {
                    id: hold.id.as_str().to_owned(),
                    object: "refund_hold",
                    status: "pending",
                    payment_id: hold.payment_id.as_str().to_owned(),
                    order_id: hold.order_id.as_str().to_owned(),
                    amount: hold.amount.minor,
                    currency: hold.amount.currency.as_str().to_owned(),
                    provider: hold.provider.as_ref().map(|p| p.as_str().to_owned()),
                    gateway_refund_reference: hold
                        .gateway_refund_reference
                        .as_ref()
                        .map(|r| r.as_str().to_owned()),
                    created_at: hold.created_at.as_i64(),
                }),
            )
                .into_response(),
        ),
    };
    // The refund is booked or held: an audit failure must not turn it into
    // an error the client would retry.
    if let Err(e) = crate::audit::record(
        &state.store,
        &t.actor(),
        action,
        Some(&t.tenant),
        json!({"payment_id": id, "refund_id": refund_id, "amount": refund_amount}),
    )
    .await
    {
        tracing::error!(refund = %refund_id, "refund recorded but not audited: {e}");
    }
    Ok(response)
}

/// `GET /v1/payments/{id}`
#[utoipa::path(get, path = "/v1/payments/{id}", tag = "tenant",
    params(("id" = String, Path, description = "payment id")), security(("api_key" = [])),
    responses((status = 200, description = "the ledger row", body = Payment),
        (status = "default", description = "an error", body = ErrorBody)))]
pub async fn get_payment(
    State(state): State<AppState>,
    Extension(t): Extension<TenantCtx>,
    PathParam(id): PathParam<String>,
) -> Result<Json<Payment>, ApiError> {
    let not_found = || ApiError::not_found(ErrorCode::PaymentNotFound, "no such payment");
    let id = PaymentId::parse(&id).map_err(|_| not_found())?;
    let row = ledger::payment(&state.store, &t.tenant, &id)
        .await?
        .ok_or_else(not_found)?;
    Ok(Json(Payment::from(&row)))
}

/// `GET /v1/payments`'s query.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PaymentQuery {
    /// Only rows of this order.
    order_id: Option<String>,
    /// Only rows with this status.
    status: Option<String>,
    /// Only rows of this kind (`product`, `shipping`, `refund`).
    kind: Option<String>,
    /// Only rows in this currency (ISO-4217).
    currency: Option<String>,
    /// Only rows booked through this gateway.
    provider: Option<String>,
    /// Only rows created at or after this time (Unix ms).
    created_from: Option<i64>,
    /// Only rows created strictly before this time (Unix ms).
    created_before: Option<i64>,
    /// The previous page's `next_cursor`.
    cursor: Option<String>,
    /// Page size, 1–500 (default 50).
    limit: Option<u32>,
}

/// `GET /v1/payments?…`: ledger rows, newest first, keyset-paginated.
#[utoipa::path(get, path = "/v1/payments", tag = "tenant", params(PaymentQuery),
    security(("api_key" = [])),
    responses((status = 200, description = "a page of ledger rows", body = Page<Payment>),
        (status = "default", description = "an error", body = ErrorBody)))]
pub async fn list_payments(
    State(state): State<AppState>,
    Extension(t): Extension<TenantCtx>,
    QueryParams(q): QueryParams<PaymentQuery>,
) -> Result<Json<Page<Payment>>, ApiError> {
    let filter = PaymentFilter {
        order_id: q.order_id.as_deref().map(OrderId::parse).transpose()?,
        kind: q
            .kind
            .as_deref()
            .map(ledger::EntryKind::parse)
            .transpose()?,
        status: q
            .status
            .as_deref()
            .map(ledger::EntryStatus::parse)
            .transpose()?,
        currency: q.currency.as_deref().map(Currency::parse).transpose()?,
        provider: q.provider.as_deref().map(ProviderId::parse).transpose()?,
        created_from: q.created_from.map(crate::store::UnixMillis),
        created_before: q.created_before.map(crate::store::UnixMillis),
    };
    let page = ledger::list_payments(
        &state.store,
        &t.tenant,
        &filter,
        q.cursor.as_deref(),
        q.limit.unwrap_or(50),
    )
    .await?;
    Ok(Json(Page::<Payment>::of(&page)))
}

/// `GET /v1/balance`: per currency, read from the balance projection (a few
/// rows, whatever the size of the ledger).
#[utoipa::path(get, path = "/v1/balance", tag = "tenant", security(("api_key" = [])),
    responses((status = 200, description = "per currency", body = BalanceList),
        (status = "default", description = "an error", body = ErrorBody)))]
pub async fn balance(
    State(state): State<AppState>,
    Extension(t): Extension<TenantCtx>,
) -> Result<Json<BalanceList>, ApiError> {
    let balances = ledger::balances(&state.store, &t.tenant).await?;
    let items = balances
        .iter()
        .map(|b| BalanceItem {
            currency: b.currency.as_str().to_owned(),
            paid: Sum::from(b.paid),
            refunded: Sum::from(b.refunded),
            net: Sum::from(b.net),
            held: Sum::from(b.held),
        })
        .collect();
    Ok(Json(BalanceList { items }))
}
