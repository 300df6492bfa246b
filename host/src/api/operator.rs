//! Operator endpoints (`/admin/…`, admin token): tenants, domains, API keys,
//! audit log, loaded providers.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

use super::types::{
    AuditEvent, CredentialField, DomainAttached, ErrorBody, IssuedKey, Page, Provider,
    ProviderList, Tenant as TenantBody, TenantDetail,
};
use super::{ApiError, AppState, ErrorCode, JsonBody, PathParam, QueryParams};
use crate::audit::{self, Actor, AuditFilter};
use crate::store::{ApiKeyId, TenantId};
use crate::tenancy::{self, Domain, DomainChange, PlanName, Tenant, TenantName, TenantStatus};

fn operator() -> Actor {
    Actor::operator("admin").expect("`admin` is a valid operator name")
}

fn tenant_id(raw: &str) -> Result<TenantId, ApiError> {
    TenantId::parse(raw)
        .map_err(|_| ApiError::not_found(ErrorCode::TenantNotFound, "no such tenant"))
}

async fn existing(state: &AppState, raw: &str) -> Result<Tenant, ApiError> {
    let id = tenant_id(raw)?;
    tenancy::get_tenant(&state.store, &id)
        .await?
        .ok_or_else(|| ApiError::not_found(ErrorCode::TenantNotFound, "no such tenant"))
}

/// `POST /admin/tenants`'s body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTenant {
    /// Display name, 1–200 characters.
    name: String,
    /// Plan name; `free` when omitted.
    plan: Option<String>,
}

/// `POST /admin/tenants`
#[utoipa::path(post, path = "/admin/tenants", tag = "operator", request_body = NewTenant,
    security(("admin_token" = [])),
    responses((status = 201, description = "created", body = TenantBody),
        (status = "default", description = "an error", body = ErrorBody)))]
pub async fn create_tenant(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<NewTenant>,
) -> Result<(StatusCode, Json<TenantBody>), ApiError> {
    let name = TenantName::parse(&body.name)?;
    let plan = match &body.plan {
        Some(p) => PlanName::parse(p)?,
        None => PlanName::free(),
    };
    let tenant = tenancy::create_tenant(&state.store, &name, &plan).await?;
    audit::record(
        &state.store,
        &operator(),
        "tenant.created",
        Some(&tenant.id),
        json!({"name": tenant.name.as_str(), "plan": tenant.plan.as_str()}),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(TenantBody::from(&tenant))))
}

/// `GET /admin/tenants`'s query.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TenantQuery {
    /// Only tenants with this status.
    #[param(pattern = "^(active|suspended)$")]
    status: Option<String>,
    /// The previous page's `next_cursor`.
    cursor: Option<String>,
    /// Page size, 1–500 (default 50).
    limit: Option<u32>,
}

/// `GET /admin/tenants?status=&cursor=&limit=`: newest first, keyset-paginated.
#[utoipa::path(get, path = "/admin/tenants", tag = "operator", params(TenantQuery),
    security(("admin_token" = [])),
    responses((status = 200, description = "a page of tenants", body = Page<TenantBody>),
        (status = "default", description = "an error", body = ErrorBody)))]
pub async fn list_tenants(
    State(state): State<AppState>,
    QueryParams(q): QueryParams<TenantQuery>,
) -> Result<Json<Page<TenantBody>>, ApiError> {
    let status = q.status.as_deref().map(TenantStatus::parse).transpose()?;
    let page = tenancy::list_tenants_page(
        &state.store,
        status,
        q.cursor.as_deref(),
        q.limit.unwrap_or(50),
    )
    .await?;
    Ok(Json(Page::<TenantBody>::of(&page)))
}

/// `GET /admin/tenants/{id}`
#[utoipa::path(get, path = "/admin/tenants/{id}", tag = "operator",
    params(("id" = String, Path, description = "tenant id")),
    security(("admin_token" = [])),
    responses((status = 200, description = "the tenant", body = TenantDetail),
        (status = "default", description = "an error", body = ErrorBody)))]
pub async fn get_tenant(
    State(state): State<AppState>,
    PathParam(id): PathParam<String>,
) -> Result<Json<TenantDetail>, ApiError> {
    let tenant = existing(&state, &id).await?;
    let domains = tenancy::list_domains(&state.store, &tenant.id).await?;
    Ok(Json(TenantDetail {
        tenant: TenantBody::from(&tenant),
        domains: domains.iter().map(|d| d.as_str().to_owned()).collect(),
    }))
}

/// `POST /admin/tenants/{id}/domains`'s body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewDomain {
    /// A custom domain or subdomain: two or more labels, no IP address.
    domain: String,
}

async fn invalidate(state: &AppState, change: &DomainChange) {
    if let Err(e) = state.resolver.invalidate_domain_change(change).await {
        tracing::warn!("tenant cache invalidation incomplete (other instances expire by TTL): {e}");
    }
}

/// `POST /admin/tenants/{id}/domains`: attach a custom domain or subdomain.
#[utoipa::path(post, path = "/admin/tenants/{id}/domains", tag = "operator",
    params(("id" = String, Path, description = "tenant id")), request_body = NewDomain,
    security(("admin_token" = [])),
    responses((status = 201, description = "attached", body = DomainAttached),
        (status = "default", description = "an error", body = ErrorBody)))]
pub async fn attach_domain(
    State(state): State<AppState>,
    PathParam(id): PathParam<String>,
    JsonBody(body): JsonBody<NewDomain>,
) -> Result<(StatusCode, Json<DomainAttached>), ApiError> {
    let tenant = existing(&state, &id).await?;
    let domain = Domain::parse(&body.domain)?;
    let change = tenancy::attach_domain(&state.store, &tenant.id, &domain).await?;
    invalidate(&state, &change).await;
    audit::record(
        &state.store,
        &operator(),
        "domain.attached",
        Some(&tenant.id),
        json!({"domain": domain.as_str()}),
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(DomainAttached {
            tenant_id: tenant.id.as_str().to_owned(),
            domain: domain.as_str().to_owned(),
        }),
    ))
}

/// `DELETE /admin/tenants/{id}/domains/{domain}`
#[utoipa::path(delete, path = "/admin/tenants/{id}/domains/{domain}", tag = "operator",
    params(("id" = String, Path, description = "tenant id"),
        ("domain" = String, Path, description = "the domain")),
    security(("admin_token" = [])),
    responses((status = 204, description = "detached"),
        (status = "default", description = "an error", body = ErrorBody)))]
pub async fn detach_domain(
    State(state): State<AppState>,
    PathParam((id, domain)): PathParam<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let tenant = existing(&state, &id).await?;
    let domain = Domain::parse(&domain)?;
    let change = tenancy::detach_domain(&state.store, &tenant.id, &domain)
        .await?
        .ok_or_else(|| ApiError::not_found(ErrorCode::DomainNotFound, "no such domain"))?;
    invalidate(&state, &change).await;
    audit::record(
        &state.store,
        &operator(),
        "domain.detached",
        Some(&tenant.id),
        json!({"domain": domain.as_str()}),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /admin/tenants/{id}/api-keys`'s body.
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    /// A label; `default` when omitted.
    #[serde(default)]
    label: Option<String>,
}

/// `POST /admin/tenants/{id}/api-keys`: the key is in this response only.
#[utoipa::path(post, path = "/admin/tenants/{id}/api-keys", tag = "operator",
    params(("id" = String, Path, description = "tenant id")), request_body = NewKey,
    security(("admin_token" = [])),
    responses((status = 201, description = "issued", body = IssuedKey),
        (status = "default", description = "an error", body = ErrorBody)))]
pub async fn issue_key(
    State(state): State<AppState>,
    PathParam(id): PathParam<String>,
    JsonBody(body): JsonBody<NewKey>,
) -> Result<(StatusCode, Json<IssuedKey>), ApiError> {
    let tenant = existing(&state, &id).await?;
    let label = body.label.unwrap_or_else(|| "default".into());
    let issued = tenancy::issue_api_key(&state.store, &tenant.id, &label).await?;
    audit::record(
        &state.store,
        &operator(),
        "api_key.issued",
        Some(&tenant.id),
        json!({"key_id": issued.info.id, "prefix": issued.info.prefix, "label": label}),
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(IssuedKey {
            id: issued.info.id.as_str().to_owned(),
            tenant_id: tenant.id.as_str().to_owned(),
            prefix: issued.info.prefix.clone(),
            label: issued.info.label.clone(),
            key: issued.secret.expose().to_owned(),
        }),
    ))
}

/// `DELETE /admin/tenants/{id}/api-keys/{key_id}`
#[utoipa::path(delete, path = "/admin/tenants/{id}/api-keys/{key_id}", tag = "operator",
    params(("id" = String, Path, description = "tenant id"),
        ("key_id" = String, Path, description = "API key id")),
    security(("admin_token" = [])),
    responses((status = 204, description = "revoked"),
        (status = "default", description = "an error", body = ErrorBody)))]
pub async fn revoke_key(
    State(state): State<AppState>,
    PathParam((id, key_id)): PathParam<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let tenant = existing(&state, &id).await?;
    let key = ApiKeyId::parse(&key_id)
        .map_err(|_| ApiError::not_found(ErrorCode::ApiKeyNotFound, "no such API key"))?;
    let revoked = tenancy::revoke_api_key(&state.store, &tenant.id, &key)
        .await?
        .ok_or_else(|| ApiError::not_found(ErrorCode::ApiKeyNotFound, "no such API key"))?;
    if let Err(e) = state.resolver.invalidate_api_key(&revoked.hash).await {
        tracing::warn!("tenant cache invalidation incomplete (other instances expire by TTL): {e}");
    }
    audit::record(
        &state.store,
        &operator(),
        "api_key.revoked",
        Some(&tenant.id),
        json!({"key_id": key}),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /admin/audit`'s query.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Only events of this tenant.
    tenant_id: Option<String>,
    /// Only events with this action, e.g. `tenant.created`.
    action: Option<String>,
    /// The previous page's `next_cursor`.
    cursor: Option<String>,
    /// Page size, 1–500 (default 50).
    limit: Option<u32>,
}

/// `GET /admin/audit?tenant_id=&action=&cursor=&limit=`
#[utoipa::path(get, path = "/admin/audit", tag = "operator", params(AuditQuery),
    security(("admin_token" = [])),
    responses((status = 200, description = "a page of events", body = Page<AuditEvent>),
        (status = "default", description = "an error", body = ErrorBody)))]
pub async fn audit_log(
    State(state): State<AppState>,
    QueryParams(q): QueryParams<AuditQuery>,
) -> Result<Json<Page<AuditEvent>>, ApiError> {
    let filter = AuditFilter {
        tenant_id: q.tenant_id.as_deref().map(tenant_id).transpose()?,
        action: q.action,
    };
    let page = audit::list(
        &state.store,
        &filter,
        q.cursor.as_deref(),
        q.limit.unwrap_or(50),
    )
    .await
    .map_err(|e| match e {
        audit::AuditError::InvalidCursor => ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidCursor,
            "invalid cursor",
        ),
        other => other.into(),
    })?;
    Ok(Json(Page::<AuditEvent>::of(&page)))
}

/// `GET /admin/providers`: loaded components and their manifests.
#[utoipa::path(get, path = "/admin/providers", tag = "operator",
    security(("admin_token" = [])),
    responses((status = 200, description = "loaded providers", body = ProviderList),
        (status = "default", description = "an error", body = ErrorBody)))]
pub async fn providers(State(state): State<AppState>) -> Json<ProviderList> {
    let items = state
        .providers
        .iter()
        .map(|p| {
            let m = p.manifest();
            Provider {
                id: m.id.clone(),
                name: m.name.clone(),
                version: m.version.clone(),
                source: p.source().to_owned(),
                currencies: m.currencies.clone(),
                credential_fields: m
                    .credential_fields
                    .iter()
                    .map(|f| CredentialField {
                        name: f.name.clone(),
                        label: f.label.clone(),
                        secret: f.secret,
                        required: f.required,
                    })
                    .collect(),
                allowed_hosts: p.policy().allowed.iter().map(|o| o.to_string()).collect(),
            }
        })
        .collect();
    Json(ProviderList { items })
}
