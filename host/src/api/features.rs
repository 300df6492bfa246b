//! Operator endpoints of features (`/admin/features`, `/admin/plans`,
//! `/admin/kill-switches`, a tenant's plan, overrides and effective
//! features). Every write goes through [`crate::features::Features::write`]:
//! audited in its transaction, then every instance's snapshot is reloaded.
//! Listings read this instance's snapshot, ordered by key, keyset-paginated.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::operator::{operator, tenant_id};
use super::types::{
    ErrorBody, FeatureDef, FeatureEvaluation, FeatureOverride, FeatureValueSchema, KillSwitchDef,
    Page, PlanDef, TenantFeatures, TenantPlan,
};
use super::{ApiError, AppState, ErrorCode, JsonBody, PathParam, QueryParams};
use crate::features::{FeatureKey, FeatureKind, FeatureWrite, FeatureWritten};
use crate::store::UnixMillis;
use crate::tenancy::{self, PlanName};

async fn write(state: &AppState, write: FeatureWrite) -> Result<FeatureWritten, ApiError> {
    Ok(state.features.write(&operator(), write).await?)
}

fn unexpected() -> ApiError {
    ApiError::internal("features", "the write returned another kind of result")
}

fn feature_key(raw: &str) -> Result<FeatureKey, ApiError> {
    Ok(FeatureKey::parse(raw)?)
}

/// A listing's query: keyset pagination by key.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct KeyPageQuery {
    /// The previous page's `next_cursor` (the last key it listed).
    cursor: Option<String>,
    /// Page size, 1–500 (default 100).
    limit: Option<u32>,
}

/// `items` (sorted by `key`) after the cursor, `limit` of them.
fn page_by_key<T: ToSchema>(mut items: Vec<(String, T)>, q: &KeyPageQuery) -> Page<T> {
    items.sort_by(|a, b| a.0.cmp(&b.0));
    let limit = q.limit.unwrap_or(100).clamp(1, 500) as usize;
    let mut rest: Vec<(String, T)> = items
        .into_iter()
        .filter(|(key, _)| q.cursor.as_ref().is_none_or(|c| key.as_str() > c.as_str()))
        .collect();
    let more = rest.len() > limit;
    rest.truncate(limit);
    let next_cursor = more.then(|| rest.last().map(|(k, _)| k.clone())).flatten();
    Page {
        items: rest.into_iter().map(|(_, t)| t).collect(),
        next_cursor,
    }
}

/// `PUT /admin/features/{key}`'s body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FeatureBody {
    /// `flag` or `limit`; an existing feature keeps its kind.
    #[schema(pattern = "^(flag|limit)$")]
    kind: String,
    /// The default: `true`/`false` for a flag, a non-negative integer or
    /// `null` (unlimited) for a limit.
    #[schema(value_type = FeatureValueSchema)]
    default: serde_json::Value,
    /// What it controls, at most 500 characters.
    #[serde(default)]
    description: String,
}

/// `PUT /admin/features/{key}`: define a feature, or change its default
/// and description (built-in ones included; the kind never changes).
#[utoipa::path(put, path = "/admin/features/{key}", tag = "operator",
    params(("key" = String, Path, description = "feature key")), request_body = FeatureBody,
    security(("admin_token" = [])),
    responses((status = 200, description = "the feature", body = FeatureDef),
        (status = "default", description = "an error", body = ErrorBody)))]
pub async fn put_feature(
    State(state): State<AppState>,
    PathParam(key): PathParam<String>,
    JsonBody(body): JsonBody<FeatureBody>,
) -> Result<Json<FeatureDef>, ApiError> {
    let put = FeatureWrite::PutFeature {
        key: feature_key(&key)?,
        kind: FeatureKind::parse(&body.kind)?,
        default: body.default,
        description: body.description,
    };
    let FeatureWritten::Feature(feature) = write(&state, put).await? else {
        return Err(unexpected());
    };
    Ok(Json(FeatureDef::from(&feature)))
}

/// `GET /admin/features`: every definition, by key.
#[utoipa::path(get, path = "/admin/features", tag = "operator", params(KeyPageQuery),
    security(("admin_token" = [])),
    responses((status = 200, description = "a page of features", body = Page<FeatureDef>),
        (status = "default", description = "an error", body = ErrorBody)))]
pub async fn list_features(
    State(state): State<AppState>,
    QueryParams(q): QueryParams<KeyPageQuery>,
) -> Json<Page<FeatureDef>> {
    let snapshot = state.features.snapshot();
    let items = snapshot
        .features
        .iter()
        .map(|(k, f)| (k.clone(), FeatureDef::from(f)))
        .collect();
    Json(page_by_key(items, &q))
}

/// `PUT /admin/plans/{plan}`'s body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanBody {
    /// Feature key → value (at most 200); replaces the plan's grants.
    #[schema(value_type = BTreeMap<String, FeatureValueSchema>)]
    grants: BTreeMap<String, serde_json::Value>,
}

fn plan_def(plan: &str, grants: &crate::features::PlanGrants) -> PlanDef {
    let mut sorted: Vec<_> = grants.grants.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    PlanDef {
        plan: plan.to_owned(),
        grants: sorted
            .into_iter()
            .map(|(k, v)| (k.clone(), v.to_json()))
            .collect(),
    }
}

/// `PUT /admin/plans/{plan}`: create a plan or replace its grants.
#[utoipa::path(put, path = "/admin/plans/{plan}", tag = "operator",
    params(("plan" = String, Path, description = "plan name")), request_body = PlanBody,
    security(("admin_token" = [])),
    responses((status = 200, description = "the plan", body = PlanDef),
        (status = "default", description = "an error", body = ErrorBody)))]
pub async fn put_plan(
    State(state): State<AppState>,
    PathParam(plan): PathParam<String>,
    JsonBody(body): JsonBody<PlanBody>,
) -> Result<Json<PlanDef>, ApiError> {
    let put = FeatureWrite::PutPlan {
        plan: PlanName::parse(&plan)?,
        grants: body.grants,
    };
    let FeatureWritten::Plan { plan, grants } = write(&state, put).await? else {
        return Err(unexpected());
    };
    Ok(Json(PlanDef {
        plan: plan.as_str().to_owned(),
        grants: grants
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), v.to_json()))
            .collect(),
    }))
}

/// `GET /admin/plans`: every plan with its grants, by name.
#[utoipa::path(get, path = "/admin/plans", tag = "operator", params(KeyPageQuery),
    security(("admin_token" = [])),
    responses((status = 200, description = "a page of plans", body = Page<PlanDef>),
        (status = "default", description = "an error", body = ErrorBody)))]
pub async fn list_plans(
    State(state): State<AppState>,
    QueryParams(q): QueryParams<KeyPageQuery>,
) -> Json<Page<PlanDef>> {
    let snapshot = state.features.snapshot();
    let items = snapshot
        .plans
        .iter()
        .map(|(name, grants)| (name.clone(), plan_def(name, grants)))
        .collect();
    Json(page_by_key(items, &q))
}

/// `GET /admin/plans/{plan}`
#[utoipa::path(get, path = "/admin/plans/{plan}", tag = "operator",
    params(("plan" = String, Path, description = "plan name")),
    security(("admin_token" = [])),
    responses((status = 200, description = "the plan", body = PlanDef),
        (status = "default", description = "an error", body = ErrorBody)))]
pub async fn get_plan(
    State(state): State<AppState>,
    PathParam(plan): PathParam<String>,
) -> Result<Json<PlanDef>, ApiError> {
    let snapshot = state.features.snapshot();
    let grants = snapshot
        .plans
        .get(&plan)
        .ok_or_else(|| ApiError::not_found(ErrorCode::PlanNotFound, format!("no plan `{plan}`")))?;
    Ok(Json(plan_def(&plan, grants)))
}

/// `PUT /admin/tenants/{id}/plan`'s body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantPlanBody {
    /// A plan defined with `PUT /admin/plans/{plan}`.
    plan: String,
}

/// `PUT /admin/tenants/{id}/plan`: move the tenant to a defined plan.
#[utoipa::path(put, path = "/admin/tenants/{id}/plan", tag = "operator",
    params(("id" = String, Path, description = "tenant id")), request_body = TenantPlanBody,
    security(("admin_token" = [])),
    responses((status = 200, description = "the tenant's plan", body = TenantPlan),
        (status = "default", description = "an error", body = ErrorBody)))]
pub async fn set_tenant_plan(
    State(state): State<AppState>,
    PathParam(id): PathParam<String>,
    JsonBody(body): JsonBody<TenantPlanBody>,
) -> Result<Json<TenantPlan>, ApiError> {
    let set = FeatureWrite::SetTenantPlan {
        tenant: tenant_id(&id)?,
        plan: PlanName::parse(&body.plan)?,
    };
    let FeatureWritten::TenantPlan { tenant, plan } = write(&state, set).await? else {
        return Err(unexpected());
    };
    Ok(Json(TenantPlan {
        tenant_id: tenant.as_str().to_owned(),
        plan: plan.as_str().to_owned(),
    }))
}

/// `PUT /admin/tenants/{id}/overrides/{key}`'s body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OverrideBody {
    /// The value, of the feature's kind.
    #[schema(value_type = FeatureValueSchema)]
    value: serde_json::Value,
    /// Why, 1–500 characters.
    reason: String,
    /// When it stops applying (Unix ms, in the future); absent: never.
    expires_at: Option<i64>,
}

/// `PUT /admin/tenants/{id}/overrides/{key}`: set the tenant's override.
#[utoipa::path(put, path = "/admin/tenants/{id}/overrides/{key}", tag = "operator",
    params(("id" = String, Path, description = "tenant id"),
        ("key" = String, Path, description = "feature key")),
    request_body = OverrideBody,
    security(("admin_token" = [])),
    responses((status = 200, description = "the override", body = FeatureOverride),
        (status = "default", description = "an error", body = ErrorBody)))]
pub async fn put_override(
    State(state): State<AppState>,
    PathParam((id, key)): PathParam<(String, String)>,
    JsonBody(body): JsonBody<OverrideBody>,
) -> Result<Json<FeatureOverride>, ApiError> {
    let tenant = tenant_id(&id)?;
    let key = feature_key(&key)?;
    let put = FeatureWrite::PutOverride {
        tenant: tenant.clone(),
        key: key.clone(),
        value: body.value,
        reason: body.reason,
        expires_at: body.expires_at.map(UnixMillis),
    };
    let FeatureWritten::Override(o) = write(&state, put).await? else {
        return Err(unexpected());
    };
    Ok(Json(FeatureOverride {
        tenant_id: tenant.as_str().to_owned(),
        key: key.as_str().to_owned(),
        value: o.value.to_json(),
        reason: o.reason,
        actor: o.actor,
        expires_at: o.expires_at.map(UnixMillis::as_i64),
        created_at: o.created_at.as_i64(),
    }))
}

/// `DELETE /admin/tenants/{id}/overrides/{key}`
#[utoipa::path(delete, path = "/admin/tenants/{id}/overrides/{key}", tag = "operator",
    params(("id" = String, Path, description = "tenant id"),
        ("key" = String, Path, description = "feature key")),
    security(("admin_token" = [])),
    responses((status = 204, description = "removed"),
        (status = "default", description = "an error", body = ErrorBody)))]
pub async fn delete_override(
    State(state): State<AppState>,
    PathParam((id, key)): PathParam<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let delete = FeatureWrite::DeleteOverride {
        tenant: tenant_id(&id)?,
        key: feature_key(&key)?,
    };
    match write(&state, delete).await? {
        FeatureWritten::Deleted(true) => Ok(StatusCode::NO_CONTENT),
        FeatureWritten::Deleted(false) => Err(ApiError::not_found(
            ErrorCode::OverrideNotFound,
            format!("the tenant has no override of `{key}`"),
        )),
        _ => Err(unexpected()),
    }
}

/// `PUT /admin/kill-switches/{key}`'s body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KillSwitchBody {
    /// Why, 1–500 characters.
    reason: String,
}

/// `PUT /admin/kill-switches/{key}`: disable a feature for every tenant (a
/// flag reads `false`, a limit `0`), on every instance.
#[utoipa::path(put, path = "/admin/kill-switches/{key}", tag = "operator",
    params(("key" = String, Path, description = "feature key")), request_body = KillSwitchBody,
    security(("admin_token" = [])),
    responses((status = 200, description = "the kill switch", body = KillSwitchDef),
        (status = "default", description = "an error", body = ErrorBody)))]
pub async fn put_kill_switch(
    State(state): State<AppState>,
    PathParam(key): PathParam<String>,
    JsonBody(body): JsonBody<KillSwitchBody>,
) -> Result<Json<KillSwitchDef>, ApiError> {
    let put = FeatureWrite::PutKillSwitch {
        key: feature_key(&key)?,
        reason: body.reason,
    };
    let FeatureWritten::KillSwitch(kill) = write(&state, put).await? else {
        return Err(unexpected());
    };
    Ok(Json(KillSwitchDef::from(&kill)))
}

/// `DELETE /admin/kill-switches/{key}`
#[utoipa::path(delete, path = "/admin/kill-switches/{key}", tag = "operator",
    params(("key" = String, Path, description = "feature key")),
    security(("admin_token" = [])),
    responses((status = 204, description = "released"),
        (status = "default", description = "an error", body = ErrorBody)))]
pub async fn delete_kill_switch(
    State(state): State<AppState>,
    PathParam(key): PathParam<String>,
) -> Result<StatusCode, ApiError> {
    let delete = FeatureWrite::DeleteKillSwitch {
        key: feature_key(&key)?,
    };
    match write(&state, delete).await? {
        FeatureWritten::Deleted(true) => Ok(StatusCode::NO_CONTENT),
        FeatureWritten::Deleted(false) => Err(ApiError::not_found(
            ErrorCode::KillSwitchNotFound,
            format!("no kill switch is pulled for `{key}`"),
        )),
        _ => Err(unexpected()),
    }
}

/// `GET /admin/kill-switches`: the pulled kill switches, by key.
#[utoipa::path(get, path = "/admin/kill-switches", tag = "operator", params(KeyPageQuery),
    security(("admin_token" = [])),
    responses((status = 200, description = "a page of kill switches", body = Page<KillSwitchDef>),
        (status = "default", description = "an error", body = ErrorBody)))]
pub async fn list_kill_switches(
    State(state): State<AppState>,
    QueryParams(q): QueryParams<KeyPageQuery>,
) -> Json<Page<KillSwitchDef>> {
    let snapshot = state.features.snapshot();
    let items = snapshot
        .kill_switches
        .iter()
        .map(|(k, kill)| (k.clone(), KillSwitchDef::from(kill)))
        .collect();
    Json(page_by_key(items, &q))
}

/// Every feature of `tenant`, evaluated.
pub(super) fn tenant_features(state: &AppState, tenant: &tenancy::Tenant) -> TenantFeatures {
    TenantFeatures {
        tenant_id: tenant.id.as_str().to_owned(),
        plan: tenant.plan.as_str().to_owned(),
        items: state
            .features
            .evaluate_all(&tenant.id)
            .iter()
            .map(|e| answer(state, &tenant.id, e))
            .collect(),
    }
}

/// `e` as an answer, with the value the host applies. The one feature
/// whose default is not its stored one is `api.requests_per_minute`: left at
/// its default, a tenant gets the configured `rate_limit.requests_per_minute`
/// (`server::api_rate`), so the answer shows the rate the limiter uses.
pub(super) fn answer(
    state: &AppState,
    tenant: &crate::store::TenantId,
    e: &crate::features::Evaluation,
) -> FeatureEvaluation {
    let mut answer = FeatureEvaluation::from(e);
    if e.key == crate::features::keys::API_REQUESTS_PER_MINUTE {
        answer.value =
            crate::features::FeatureValue::Limit(state.rate_limiter.api_rate(tenant)).to_json();
    }
    answer
}

/// `GET /admin/tenants/{id}/features`: the tenant's effective values, each
/// with its source.
#[utoipa::path(get, path = "/admin/tenants/{id}/features", tag = "operator",
    params(("id" = String, Path, description = "tenant id")),
    security(("admin_token" = [])),
    responses((status = 200, description = "effective features", body = TenantFeatures),
        (status = "default", description = "an error", body = ErrorBody)))]
pub async fn get_tenant_features(
    State(state): State<AppState>,
    PathParam(id): PathParam<String>,
) -> Result<Json<TenantFeatures>, ApiError> {
    let id = tenant_id(&id)?;
    let tenant = tenancy::get_tenant(&state.store, &id)
        .await?
        .ok_or_else(|| ApiError::not_found(ErrorCode::TenantNotFound, "no such tenant"))?;
    Ok(Json(tenant_features(&state, &tenant)))
}

/// Refuses with 403 `feature_not_enabled` unless `key` is on for the tenant.
/// Runs before anything is stored or any gateway is called.
pub(super) fn require(
    state: &AppState,
    tenant: &crate::store::TenantId,
    key: &str,
) -> Result<(), ApiError> {
    let e = state.features.evaluate(tenant, key);
    if e.value.is_on() {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        ErrorCode::FeatureNotEnabled,
        format!(
            "`{key}` is not enabled for this tenant ({})",
            e.source.as_str()
        ),
    )
    .with_details(serde_json::json!({"feature": key, "source": e.source.as_str()})))
}

/// Whether the tenant's features permit `provider` (`provider.<id>`).
pub(super) fn require_provider(
    state: &AppState,
    tenant: &crate::store::TenantId,
    provider: &str,
) -> Result<(), ApiError> {
    let key = FeatureKey::provider(provider);
    let e = state.features.evaluate(tenant, &key);
    if e.value.is_on() {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        ErrorCode::ProviderNotEnabled,
        format!(
            "provider `{provider}` is not enabled for this tenant ({})",
            e.source.as_str()
        ),
    )
    .with_details(serde_json::json!({"feature": key, "source": e.source.as_str()})))
}

/// Refuses a new gateway beyond `gateways.max` (403 `gateway_limit_reached`)
/// before the live validation call. Only a first check: the save counts
/// again in its transaction (`GatewayInput::max_gateways`), so concurrent
/// saves cannot pass the limit together.
pub(super) fn require_gateway_room(
    state: &AppState,
    tenant: &crate::store::TenantId,
    configured: usize,
) -> Result<(), ApiError> {
    let max = state
        .features
        .limit(tenant, crate::features::keys::GATEWAYS_MAX);
    match max {
        Some(max) if configured as u64 >= max => Err(gateway_limit_reached(max)),
        _ => Ok(()),
    }
}

/// 403 `gateway_limit_reached`: the tenant has `max` gateways already.
pub(super) fn gateway_limit_reached(max: u64) -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        ErrorCode::GatewayLimitReached,
        format!("the tenant may configure at most {max} gateways"),
    )
    .with_details(serde_json::json!({"feature": crate::features::keys::GATEWAYS_MAX, "limit": max}))
}
