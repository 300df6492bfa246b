//! `POST /v1/checkouts/{id}/cancel`: the tenant cancels a pending checkout
//! at its gateway, which frees the checkout's `Idempotency-Key`.

use axum::Json;
use axum::extract::{Extension, State};
use serde_json::json;

use crate::api::types::{ErrorBody, Order as OrderBody};
use crate::api::{ApiError, AppState, ErrorCode, PathParam, TenantCtx};
use crate::ledger;
use crate::store::OrderId;

use super::IdempotencyKey;

/// `POST /v1/checkouts/{id}/cancel`: cancels the payment at the gateway
/// (component `cancel`) and marks the order `canceled`; a new checkout with
/// the same `Idempotency-Key` then makes a new order. Cancelling a canceled
/// order answers it again. A paid (refunded, declined) order, or one whose
/// gateway has not answered yet, is 409 `order_not_cancelable`.
#[utoipa::path(post, path = "/v1/checkouts/{id}/cancel", tag = "tenant",
    params(("id" = String, Path, description = "order id"), IdempotencyKey),
    security(("api_key" = [])),
    responses((status = 200, description = "the canceled order", body = OrderBody),
        (status = "default", description = "an error", body = ErrorBody)))]
pub async fn cancel_checkout(
    State(state): State<AppState>,
    Extension(t): Extension<TenantCtx>,
    PathParam(id): PathParam<String>,
) -> Result<Json<OrderBody>, ApiError> {
    let id = OrderId::parse(&id)
        .map_err(|_| ApiError::not_found(ErrorCode::OrderNotFound, "no such order"))?;
    let order = state.checkouts.cancel(&t.tenant, &id).await?;
    // The order is canceled: an audit failure must not turn that into an
    // error the client would retry.
    if let Err(e) = crate::audit::record(
        &state.store,
        &t.actor(),
        "checkout.canceled",
        Some(&t.tenant),
        json!({"order_id": id}),
    )
    .await
    {
        tracing::error!(order = %id, "checkout canceled but not audited: {e}");
    }
    let rows = ledger::rows_for_order(&state.store, &t.tenant, &id).await?;
    Ok(Json(OrderBody::of(&order, &rows)))
}
