//! `POST /admin/orders/{id}/reconcile` (admin token): the janitor's check of
//! one order, now, whatever its schedule says; audited.

use axum::Json;
use axum::extract::State;
use serde_json::json;

use super::types::{ErrorBody, Order as OrderBody};
use super::{ApiError, AppState, ErrorCode, PathParam};
use crate::audit::{self, Actor};
use crate::janitor::JanitorError;
use crate::ledger;
use crate::store::OrderId;

/// `POST /admin/orders/{id}/reconcile`: asks the order's gateway for the
/// payment (`get-payment`) and books what it says exactly as the checkout
/// or a webhook would (rows with source `janitor`); answers the order as it
/// is after. An order that no longer waits is answered without a gateway
/// call. 409 `reconcile_in_progress` while another instance checks it.
#[utoipa::path(post, path = "/admin/orders/{id}/reconcile", tag = "operator",
    params(("id" = String, Path, description = "order id")),
    security(("admin_token" = [])),
    responses((status = 200, description = "the order after reconciliation", body = OrderBody),
        (status = "default", description = "an error", body = ErrorBody)))]
pub async fn reconcile_order(
    State(state): State<AppState>,
    PathParam(id): PathParam<String>,
) -> Result<Json<OrderBody>, ApiError> {
    let not_found = || ApiError::not_found(ErrorCode::OrderNotFound, "no such order");
    let id = OrderId::parse(&id).map_err(|_| not_found())?;
    let order = ledger::find_order_any_tenant(&state.store, &id)
        .await?
        .ok_or_else(not_found)?;
    let before = order.status;
    let done = state
        .janitor
        .reconcile_now(&order)
        .await
        .map_err(|e| match e {
            JanitorError::Busy(_) => ApiError::conflict(
                ErrorCode::ReconcileInProgress,
                "another instance is reconciling this order right now",
            ),
            JanitorError::Checkout(e) => e.into(),
            JanitorError::Ledger(e) => e.into(),
        })?;
    let tenant = &done.order.tenant_id;
    let actor = Actor::operator("admin").expect("`admin` is a valid operator name");
    // Whatever was booked stays booked: an audit failure is logged only.
    if let Err(e) = audit::record(
        &state.store,
        &actor,
        "order.reconciled",
        Some(tenant),
        json!({
            "order_id": id,
            "before": before.as_str(),
            "after": done.order.status.as_str(),
            "asked_gateway": done.asked_gateway,
        }),
    )
    .await
    {
        tracing::error!(order = %id, "order reconciled but not audited: {e}");
    }
    let rows = ledger::rows_for_order(&state.store, tenant, &id).await?;
    Ok(Json(OrderBody::of(&done.order, &rows)))
}
