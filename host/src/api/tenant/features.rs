//! `GET /v1/features` and `GET /v1/features/{key}`: the calling tenant's
//! effective features.

use axum::extract::State;
use axum::{Extension, Json};

use crate::api::types::{ErrorBody, FeatureEvaluation, TenantFeatures};
use crate::api::{ApiError, AppState, ErrorCode, PathParam, TenantCtx};
use crate::features::FeatureKey;
use crate::tenancy;

/// `GET /v1/features`: every feature's effective value for this tenant,
/// with its source (`kill_switch`, `override`, `plan`, `default`).
#[utoipa::path(get, path = "/v1/features", tag = "tenant",
    security(("api_key" = [])),
    responses((status = 200, description = "effective features", body = TenantFeatures),
        (status = "default", description = "an error", body = ErrorBody)))]
pub async fn features(
    State(state): State<AppState>,
    Extension(t): Extension<TenantCtx>,
) -> Result<Json<TenantFeatures>, ApiError> {
    let tenant = tenancy::get_tenant(&state.store, &t.tenant)
        .await?
        .ok_or_else(|| ApiError::not_found(ErrorCode::TenantNotFound, "no such tenant"))?;
    Ok(Json(crate::api::features::tenant_features(&state, &tenant)))
}

/// `GET /v1/features/{key}`: one feature's effective value for this
/// tenant. Never an error for a well-formed key: an unknown one is off
/// (`false`, source `default`, `error_code: FLAG_NOT_FOUND`).
#[utoipa::path(get, path = "/v1/features/{key}", tag = "tenant",
    params(("key" = String, Path, description = "feature key")),
    security(("api_key" = [])),
    responses((status = 200, description = "the evaluation", body = FeatureEvaluation),
        (status = "default", description = "an error", body = ErrorBody)))]
pub async fn feature(
    State(state): State<AppState>,
    Extension(t): Extension<TenantCtx>,
    PathParam(key): PathParam<String>,
) -> Result<Json<FeatureEvaluation>, ApiError> {
    let key = FeatureKey::parse(&key)?;
    let evaluation = state.features.evaluate(&t.tenant, key.as_str());
    Ok(Json(crate::api::features::answer(
        &state,
        &t.tenant,
        &evaluation,
    )))
}
