//! The `Idempotency-Key` layer for tenant mutations (after `tenant_auth`,
//! before the handler): claim the key, then run the request, answer from the
//! stored response, or refuse; keep the answer only when a retry may replay it.
//! Keys and records are `crate::idempotency`.

use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::auth::TenantCtx;
use super::error::NotReplayable;
use super::{ApiError, AppState, ErrorCode};
use crate::idempotency::{self, Begin, IdempotencyKey, RequestHash};
use crate::store::TenantId;

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
    let Some(key) = key_of(&request)? else {
        return Ok(next.run(request).await);
    };
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
        Ok(other) => return not_run(other),
        Err(e) => return Err(ApiError::internal("idempotency begin", e)),
    }
    // If the handler panics (or this future is dropped, e.g. at shutdown),
    // the key is released rather than left in flight for its whole lease.
    let mut claim = Claim {
        state: Some((state.clone(), tenant.tenant.clone(), key.clone())),
    };
    let response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    let kept = keep_or_release(&state, &tenant.tenant, &key, response).await;
    claim.state = None;
    kept
}

/// A claimed key that no answer has been kept or released for yet.
struct Claim {
    state: Option<(AppState, TenantId, IdempotencyKey)>,
}

impl Drop for Claim {
    fn drop(&mut self) {
        let (Some((state, tenant, key)), Ok(runtime)) =
            (self.state.take(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        runtime.spawn(async move {
            if let Err(e) = idempotency::abandon(&state.store, &tenant, &key).await {
                tracing::error!("cannot release the idempotency key of an unfinished request: {e}");
            }
        });
    }
}

/// The request's `Idempotency-Key`, if it sent one; 400 when it is not a
/// valid key.
fn key_of(request: &Request) -> Result<Option<IdempotencyKey>, ApiError> {
    let Some(raw_key) = request.headers().get("idempotency-key") else {
        return Ok(None);
    };
    raw_key
        .to_str()
        .ok()
        .and_then(|k| IdempotencyKey::parse(k).ok())
        .map(Some)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::InvalidIdempotencyKey,
                "Idempotency-Key must be 1-255 printable characters",
            )
        })
}

/// The answer to a request whose key is not claimed for it: the stored
/// response, or a refusal. ([`Begin::Fresh`] runs the request instead.)
fn not_run(next: Begin) -> Result<Response, ApiError> {
    match next {
        Begin::Replay { status, body } => {
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
            Ok(response)
        }
        Begin::Mismatch => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::IdempotencyKeyReused,
            "this Idempotency-Key was used with a different request",
        )),
        Begin::InFlight => Err(ApiError::conflict(
            ErrorCode::IdempotencyRequestInFlight,
            "a request with this Idempotency-Key is still being processed",
        )),
        Begin::Fresh => Err(ApiError::internal(
            "idempotency",
            "a claimed key reached the not-run path",
        )),
    }
}

/// Stores the handler's response for the key, or releases the key when a
/// retry must run again (a 5xx, a [`NotReplayable`] answer, an unreadable
/// body).
async fn keep_or_release(
    state: &AppState,
    tenant: &TenantId,
    key: &IdempotencyKey,
    response: Response,
) -> Result<Response, ApiError> {
    let (parts, body) = response.into_parts();
    let body = match to_bytes(body, 16 * 1024 * 1024).await {
        Ok(b) => b,
        Err(e) => {
            let _ = idempotency::abandon(&state.store, tenant, key).await;
            return Err(ApiError::internal("idempotency response", e));
        }
    };
    if parts.status.is_server_error() || parts.extensions.get::<NotReplayable>().is_some() {
        if let Err(e) = idempotency::abandon(&state.store, tenant, key).await {
            tracing::error!("cannot release idempotency key: {e}");
        }
    } else if let Err(e) =
        idempotency::finish(&state.store, tenant, key, parts.status.as_u16(), &body).await
    {
        tracing::error!("cannot store idempotent response: {e}");
    }
    Ok(Response::from_parts(parts, Body::from(body)))
}
