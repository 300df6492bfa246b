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
use crate::tenancy::{self, Domain, OperatorWrite, PlanName, Tenant, TenantName, Written};

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
    let Written::Tenant(tenant) = write(&state, OperatorWrite::CreateTenant { name, plan }).await?
    else {
        return Err(unexpected());
    };
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

/// `POST /admin/tenants/{id}/domains`: attach a custom domain or subdomain.
pub async fn attach_domain(
    State(state): State<AppState>,
    PathParam(id): PathParam<String>,
    JsonBody(body): JsonBody<NewDomain>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
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
    let detach = OperatorWrite::DetachDomain {
        tenant: tenant.id.clone(),
        domain,
    };
    match write(&state, detach).await? {
        Written::Domain(Some(_)) => Ok(StatusCode::NO_CONTENT),
        Written::Domain(None) => Err(ApiError::not_found("domain_not_found", "no such domain")),
        _ => Err(unexpected()),
    }
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
    let issue = OperatorWrite::IssueKey {
        tenant: tenant.id.clone(),
        label,
    };
    let Written::IssuedKey(issued) = write(&state, issue).await? else {
        return Err(unexpected());
    };
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
    let revoke = OperatorWrite::RevokeKey {
        tenant: tenant.id.clone(),
        key,
    };
    match write(&state, revoke).await? {
        Written::RevokedKey(Some(_)) => Ok(StatusCode::NO_CONTENT),
        Written::RevokedKey(None) => {
            Err(ApiError::not_found("api_key_not_found", "no such API key"))
        }
        _ => Err(unexpected()),
    }
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
