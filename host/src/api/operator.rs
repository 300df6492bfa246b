//! Operator endpoints (`/admin/…`, admin token): tenants, domains, API keys,
//! audit log, loaded providers.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, AppState, JsonBody, PathParam, QueryParams};
use crate::audit::{self, Actor, AuditFilter};
use crate::store::{ApiKeyId, TenantId};
use crate::tenancy::{self, Domain, DomainChange, PlanName, Tenant, TenantName};

fn operator() -> Actor {
    Actor::operator("admin").expect("`admin` is a valid operator name")
}

fn tenant_id(raw: &str) -> Result<TenantId, ApiError> {
    TenantId::parse(raw).map_err(|_| ApiError::not_found("tenant_not_found", "no such tenant"))
}

fn tenant_json(t: &Tenant) -> Value {
    json!({
        "id": t.id,
        "name": t.name.as_str(),
        "plan": t.plan.as_str(),
        "status": t.status.as_str(),
        "created_at": t.created_at.as_i64(),
    })
}

async fn existing(state: &AppState, raw: &str) -> Result<Tenant, ApiError> {
    let id = tenant_id(raw)?;
    tenancy::get_tenant(&state.store, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("tenant_not_found", "no such tenant"))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewTenant {
    name: String,
    plan: Option<String>,
}

/// `POST /admin/tenants`
pub async fn create_tenant(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<NewTenant>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
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
    Ok((StatusCode::CREATED, Json(tenant_json(&tenant))))
}

/// `GET /admin/tenants/{id}`
pub async fn get_tenant(
    State(state): State<AppState>,
    PathParam(id): PathParam<String>,
) -> Result<Json<Value>, ApiError> {
    let tenant = existing(&state, &id).await?;
    let domains = tenancy::list_domains(&state.store, &tenant.id).await?;
    let mut body = tenant_json(&tenant);
    body["domains"] = json!(domains.iter().map(|d| d.as_str()).collect::<Vec<_>>());
    Ok(Json(body))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewDomain {
    domain: String,
}

async fn invalidate(state: &AppState, change: &DomainChange) {
    if let Err(e) = state.resolver.invalidate_domain_change(change).await {
        tracing::warn!("tenant cache invalidation incomplete (other instances expire by TTL): {e}");
    }
}

/// `POST /admin/tenants/{id}/domains`: attach a custom domain or subdomain.
pub async fn attach_domain(
    State(state): State<AppState>,
    PathParam(id): PathParam<String>,
    JsonBody(body): JsonBody<NewDomain>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
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
        Json(json!({"tenant_id": tenant.id, "domain": domain.as_str()})),
    ))
}

/// `DELETE /admin/tenants/{id}/domains/{domain}`
pub async fn detach_domain(
    State(state): State<AppState>,
    PathParam((id, domain)): PathParam<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let tenant = existing(&state, &id).await?;
    let domain = Domain::parse(&domain)?;
    let change = tenancy::detach_domain(&state.store, &tenant.id, &domain)
        .await?
        .ok_or_else(|| ApiError::not_found("domain_not_found", "no such domain"))?;
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

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    #[serde(default)]
    label: Option<String>,
}

/// `POST /admin/tenants/{id}/api-keys`: the key is in this response only.
pub async fn issue_key(
    State(state): State<AppState>,
    PathParam(id): PathParam<String>,
    JsonBody(body): JsonBody<NewKey>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
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
        Json(json!({
            "id": issued.info.id,
            "tenant_id": tenant.id,
            "prefix": issued.info.prefix,
            "label": issued.info.label,
            "key": issued.secret.expose(),
        })),
    ))
}

/// `DELETE /admin/tenants/{id}/api-keys/{key_id}`
pub async fn revoke_key(
    State(state): State<AppState>,
    PathParam((id, key_id)): PathParam<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let tenant = existing(&state, &id).await?;
    let key = ApiKeyId::parse(&key_id)
        .map_err(|_| ApiError::not_found("api_key_not_found", "no such API key"))?;
    let revoked = tenancy::revoke_api_key(&state.store, &tenant.id, &key)
        .await?
        .ok_or_else(|| ApiError::not_found("api_key_not_found", "no such API key"))?;
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    tenant_id: Option<String>,
    action: Option<String>,
    cursor: Option<String>,
    limit: Option<u32>,
}

/// `GET /admin/audit?tenant_id=&action=&cursor=&limit=`
pub async fn audit_log(
    State(state): State<AppState>,
    QueryParams(q): QueryParams<AuditQuery>,
) -> Result<Json<Value>, ApiError> {
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
        audit::AuditError::InvalidCursor => {
            ApiError::new(StatusCode::BAD_REQUEST, "invalid_cursor", "invalid cursor")
        }
        other => other.into(),
    })?;
    let items: Vec<Value> = page
        .items
        .iter()
        .map(|e| {
            json!({
                "id": e.id,
                "actor": e.actor.as_str(),
                "action": e.action,
                "tenant_id": e.tenant_id,
                "details": e.details,
                "created_at": e.created_at.as_i64(),
            })
        })
        .collect();
    Ok(Json(
        json!({"items": items, "next_cursor": page.next_cursor}),
    ))
}

/// `GET /admin/providers`: loaded components and their manifests.
pub async fn providers(State(state): State<AppState>) -> Json<Value> {
    let items: Vec<Value> = state
        .providers
        .iter()
        .map(|p| {
            let m = p.manifest();
            json!({
                "id": m.id,
                "name": m.name,
                "version": m.version,
                "source": p.source(),
                "currencies": m.currencies,
                "credential_fields": m.credential_fields.iter().map(|f| json!({
                    "name": f.name, "label": f.label, "secret": f.secret, "required": f.required
                })).collect::<Vec<_>>(),
                "allowed_hosts": p.policy().allowed.iter().map(|o| o.to_string()).collect::<Vec<_>>(),
            })
        })
        .collect();
    Json(json!({ "items": items }))
}
