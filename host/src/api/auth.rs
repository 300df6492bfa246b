//! Who is calling: the operator (admin token) or a tenant (API key). The
//! `Idempotency-Key` replay layer that runs after it is `idempotency.rs`.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use subtle::ConstantTimeEq;

use super::{ApiError, AppState, ErrorCode};
use crate::audit::Actor;
use crate::store::{ApiKeyId, TenantId};
use crate::tenancy::{ApiKeyHash, TenantStatus};

/// The authenticated tenant of a request (inserted by [`tenant_auth`]).
#[derive(Debug, Clone)]
pub struct TenantCtx {
    /// The tenant the API key belongs to.
    pub tenant: TenantId,
    /// The key used (for the audit actor).
    pub key_id: ApiKeyId,
}

impl TenantCtx {
    /// The audit actor for this request.
    pub fn actor(&self) -> Actor {
        Actor::api_key(&self.key_id)
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// Require the operator's admin token.
pub async fn operator_auth(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let presented = bearer(request.headers()).unwrap_or_default();
    let expected = state.admin_token.expose().as_bytes();
    if presented.is_empty() || !bool::from(presented.as_bytes().ct_eq(expected)) {
        return Err(ApiError::unauthorized("a valid admin token is required"));
    }
    Ok(next.run(request).await)
}

/// Resolve the tenant from `Authorization: Bearer <api key>`; 401 when the
/// key is missing, unknown or revoked, 403 when the tenant is suspended.
pub async fn tenant_auth(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let Some(key) = bearer(request.headers()).filter(|k| !k.is_empty()) else {
        return Err(ApiError::unauthorized(
            "missing API key: send Authorization: Bearer <key>",
        ));
    };
    let hash = ApiKeyHash::of(key);
    let resolved = state
        .resolve_api_key(&hash)
        .await?
        .ok_or_else(|| ApiError::unauthorized("invalid or revoked API key"))?;
    if resolved.tenant_status != TenantStatus::Active {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::TenantSuspended,
            "this tenant is suspended",
        ));
    }
    request.extensions_mut().insert(TenantCtx {
        tenant: resolved.tenant_id,
        key_id: resolved.key_id,
    });
    Ok(next.run(request).await)
}
