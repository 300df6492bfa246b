//! Who is calling: the operator (admin token) or a tenant (API key), and the
//! `Idempotency-Key` replay layer for tenant mutations.

use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use super::error::NotReplayable;
use super::{ApiError, AppState, ErrorCode};
use crate::audit::Actor;
use crate::store::idempotency::{self, Begin, IdempotencyKey, RequestHash};
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

/// `Idempotency-Key` for tenant mutations: same key + same request → the
/// stored response; same key + different request → 422
/// `idempotency_key_reused`; while the first is in flight → 409. Not
/// stored, so a retry can succeed: responses of 5xx, and the handler's own
/// [`NotReplayable`] answers (a checkout whose key holds an order with
/// another cart: keeping that would lock out the retry of the first).
pub async fn idempotency(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if !matches!(
        *request.method(),
        Method::POST | Method::PUT | Method::DELETE | Method::PATCH
    ) {
        return Ok(next.run(request).await);
    }
    let Some(raw_key) = request.headers().get("idempotency-key") else {
        return Ok(next.run(request).await);
    };
    let key = raw_key
        .to_str()
        .ok()
        .and_then(|k| IdempotencyKey::parse(k).ok())
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::InvalidIdempotencyKey,
                "Idempotency-Key must be 1-255 printable characters",
            )
        })?;
    let tenant = request
        .extensions()
        .get::<TenantCtx>()
        .cloned()
        .ok_or_else(|| ApiError::internal("idempotency", "layer ordered before tenant auth"))?;
    let (parts, body) = request.into_parts();
    let bytes = to_bytes(body, state.max_body_bytes)
        .await
        .map_err(|e| super::error::body_read_error(&e))?;
    let hash = RequestHash::of(parts.method.as_str(), parts.uri.path(), &bytes);
    match idempotency::begin(&state.store, &tenant.tenant, &key, &hash).await {
        Ok(Begin::Fresh) => {}
        Ok(Begin::Replay { status, body }) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
            let mut response = (status, body).into_response();
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/json"),
            );
            headers.insert(
                "idempotent-replayed",
                header::HeaderValue::from_static("true"),
            );
            return Ok(response);
        }
        Ok(Begin::Mismatch) => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorCode::IdempotencyKeyReused,
                "this Idempotency-Key was used with a different request",
            ));
        }
        Ok(Begin::InFlight) => {
            return Err(ApiError::conflict(
                ErrorCode::IdempotencyRequestInFlight,
                "a request with this Idempotency-Key is still being processed",
            ));
        }
        Err(e) => return Err(ApiError::internal("idempotency begin", e)),
    }
    let response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    let (parts, body) = response.into_parts();
    let body = match to_bytes(body, 16 * 1024 * 1024).await {
        Ok(b) => b,
        Err(e) => {
            let _ = idempotency::abandon(&state.store, &tenant.tenant, &key).await;
            return Err(ApiError::internal("idempotency response", e));
        }
    };
    if parts.status.is_server_error() || parts.extensions.get::<NotReplayable>().is_some() {
        if let Err(e) = idempotency::abandon(&state.store, &tenant.tenant, &key).await {
            tracing::error!("cannot release idempotency key: {e}");
        }
    } else if let Err(e) = idempotency::finish(
        &state.store,
        &tenant.tenant,
        &key,
        parts.status.as_u16(),
        &body,
    )
    .await
    {
        tracing::error!("cannot store idempotent response: {e}");
    }
    Ok(Response::from_parts(parts, Body::from(body)))
}
