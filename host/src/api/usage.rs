//! Quota usage: the tenant's `GET /v1/usage`, and the operator's
//! `GET /admin/tenants/{id}/usage` and manual corrections
//! (`POST /admin/tenants/{id}/usage/{key}/adjustments`, audited).

use axum::Json;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::ToSchema;

use super::types::{ErrorBody, UsageEntry, UsageList};
use super::{ApiError, AppState, ErrorCode, JsonBody, PathParam, TenantCtx};
use crate::audit::Actor;
use crate::store::TenantId;
use crate::store::domain::ClientText;
use crate::tenancy;

/// Longest adjustment reason (characters).
const REASON_MAX: usize = 500;

async fn usage_of(state: &AppState, tenant: &TenantId) -> Result<UsageList, ApiError> {
    let usage = state.quotas.usage(tenant).await?;
    Ok(UsageList {
        tenant_id: tenant.to_string(),
        usage: usage.iter().map(UsageEntry::of).collect(),
    })
}

/// An existing tenant named by a path segment; 404 otherwise.
async fn existing_tenant(state: &AppState, raw: &str) -> Result<TenantId, ApiError> {
    let not_found = || ApiError::not_found(ErrorCode::TenantNotFound, "no such tenant");
    let id = TenantId::parse(raw).map_err(|_| not_found())?;
    tenancy::get_tenant(&state.store, &id)
        .await?
        .ok_or_else(not_found)?;
    Ok(id)
}

/// `GET /v1/usage`: the calling tenant's use of every metered key in the
/// current period (calendar month, UTC).
#[utoipa::path(get, path = "/v1/usage", tag = "tenant", security(("api_key" = [])),
    responses((status = 200, description = "usage per metered key", body = UsageList),
        (status = "default", description = "an error", body = ErrorBody)))]
pub async fn tenant_usage(
    State(state): State<AppState>,
    Extension(t): Extension<TenantCtx>,
) -> Result<Json<UsageList>, ApiError> {
    Ok(Json(usage_of(&state, &t.tenant).await?))
}

/// `GET /admin/tenants/{id}/usage`: a tenant's use of every metered key.
#[utoipa::path(get, path = "/admin/tenants/{id}/usage", tag = "operator",
    params(("id" = String, Path, description = "tenant id")), security(("admin_token" = [])),
    responses((status = 200, description = "usage per metered key", body = UsageList),
        (status = 404, description = "`tenant_not_found`", body = ErrorBody),
        (status = "default", description = "an error", body = ErrorBody)))]
pub async fn admin_usage(
    State(state): State<AppState>,
    PathParam(id): PathParam<String>,
) -> Result<Json<UsageList>, ApiError> {
    let tenant = existing_tenant(&state, &id).await?;
    Ok(Json(usage_of(&state, &tenant).await?))
}

/// `POST /admin/tenants/{id}/usage/{key}/adjustments`'s body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdjustmentBody {
    /// Uses to add (positive) or give back (negative), non-zero, at most
    /// 1,000,000,000 either way; the counter never goes below zero.
    #[schema(minimum = -1_000_000_000_i64, maximum = 1_000_000_000_i64)]
    delta: i64,
    /// Why (1–500 characters), kept in the audit event.
    reason: String,
}

/// `POST /admin/tenants/{id}/usage/{key}/adjustments`: a manual correction
/// of the current period's counter, committed with its audit event
/// (`quota.adjusted`). Answers the key's usage after it.
#[utoipa::path(post, path = "/admin/tenants/{id}/usage/{key}/adjustments", tag = "operator",
    params(("id" = String, Path, description = "tenant id"),
        ("key" = String, Path, description = "metered key, e.g. `checkouts.monthly`")),
    request_body = AdjustmentBody, security(("admin_token" = [])),
    responses((status = 201, description = "the key's usage after the correction", body = UsageEntry),
        (status = 404, description = "`tenant_not_found`, `quota_key_not_found`", body = ErrorBody),
        (status = 422, description = "`validation_failed`: a zero or oversized delta, a bad reason", body = ErrorBody),
        (status = "default", description = "an error", body = ErrorBody)))]
pub async fn adjust_usage(
    State(state): State<AppState>,
    PathParam((id, key)): PathParam<(String, String)>,
    JsonBody(body): JsonBody<AdjustmentBody>,
) -> Result<(StatusCode, Json<UsageEntry>), ApiError> {
    let tenant = existing_tenant(&state, &id).await?;
    let reason = ClientText::parse("reason", &body.reason, REASON_MAX)
        .map(String::from)
        .map_err(|e| ApiError::validation(format!("reason: {}", e.reason)))?;
    let actor = Actor::operator("admin").map_err(|e| ApiError::internal("actor", e))?;
    let usage = state
        .quotas
        .adjust(&actor, &tenant, &key, body.delta, &reason)
        .await?;
    Ok((StatusCode::CREATED, Json(UsageEntry::of(&usage))))
}
