//! Operator endpoints (`/admin/…`, admin token): tenants, domains, API keys,
//! audit log, loaded providers.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::types::{
    AuditEvent, CredentialField, DomainAttached, ErrorBody, IssuedKey, Page, Provider,
    ProviderList, Tenant as TenantBody, TenantDetail,
};
use super::{ApiError, AppState, ErrorCode, JsonBody, PathParam, QueryParams};
use crate::audit::{self, Actor, AuditFilter};
use crate::store::{ApiKeyId, TenantId};
use crate::tenancy::{
    self, Domain, OperatorWrite, PlanName, Tenant, TenantName, TenantStatus, Written,
};

pub(super) fn operator() -> Actor {
    Actor::operator("admin").expect("`admin` is a valid operator name")
}

pub(super) fn tenant_id(raw: &str) -> Result<TenantId, ApiError> {
    TenantId::parse(raw)
        .map_err(|_| ApiError::not_found(ErrorCode::TenantNotFound, "no such tenant"))
}

/// An operator write through the tenancy service: the write and its audit
/// event commit together, then the cache is evicted.
async fn write(state: &AppState, write: OperatorWrite) -> Result<Written, ApiError> {
    Ok(state.tenancy.write(&operator(), write).await?)
}

/// A write answered with another kind of result than it produces.
fn unexpected() -> ApiError {
    ApiError::internal("tenancy", "the write returned another kind of result")
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
    let Written::Tenant(tenant) = write(&state, OperatorWrite::CreateTenant { name, plan }).await?
    else {
        return Err(unexpected());
    };
    if state
        .features
        .snapshot()
        .plans
        .contains_key(tenant.plan.as_str())
    {
        // The features snapshot maps tenants to defined plans: add this one.
        state.features.changed().await;
    }
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
    let attach = OperatorWrite::AttachDomain {
        tenant: tenant.id.clone(),
        domain: domain.clone(),
    };
    let Written::Domain(Some(_)) = write(&state, attach).await? else {
        return Err(unexpected());
    };
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
    let detach = OperatorWrite::DetachDomain {
        tenant: tenant.id.clone(),
        domain,
    };
    match write(&state, detach).await? {
        Written::Domain(Some(_)) => Ok(StatusCode::NO_CONTENT),
        Written::Domain(None) => Err(ApiError::not_found(
            ErrorCode::DomainNotFound,
            "no such domain",
        )),
        _ => Err(unexpected()),
    }
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
    let issue = OperatorWrite::IssueKey {
        tenant: tenant.id.clone(),
        label,
    };
    let Written::IssuedKey(issued) = write(&state, issue).await? else {
        return Err(unexpected());
    };
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
    let revoke = OperatorWrite::RevokeKey {
        tenant: tenant.id.clone(),
        key,
    };
    match write(&state, revoke).await? {
        Written::RevokedKey(Some(_)) => Ok(StatusCode::NO_CONTENT),
        Written::RevokedKey(None) => Err(ApiError::not_found(
            ErrorCode::ApiKeyNotFound,
            "no such API key",
        )),
        _ => Err(unexpected()),
    }
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
