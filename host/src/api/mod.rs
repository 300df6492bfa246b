//! The HTTP API: axum routers, extractors and the one error type.
//!
//! - `/health`: liveness, loaded providers.
//! - `/admin/…`: the operator API (admin token).
//! - `/v1/…`: the tenant API (tenant API key; `Idempotency-Key` honoured on
//!   every mutation).
//!
//! Must never: leak a secret in a response, answer a malformed request with a
//! 500, or let one tenant see another's data (every read is tenant-scoped, so
//! another tenant's id is simply "not found").

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, FromRequest, Request, State};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router, middleware};
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::checkout::{Checkouts, GatewayLessOrders, Refunds};
use crate::config::Secret;
use crate::gateways::Gateways;
use crate::runtime::ProviderRegistry;
use crate::store::Store;
use crate::tenancy::{ApiKeyHash, ResolvedApiKey, Tenancy, TenantResolver};

mod auth;
mod detach;
mod edge;
mod error;
mod errors_from;
mod idempotency;
mod operator;
mod strict_json;
mod tenant;

pub use auth::TenantCtx;
pub use detach::{DEFAULT_MAX_MUTATIONS, Mutations};
pub use error::{ApiError, from_json_rejection};

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    /// The database.
    pub store: Store,
    /// Loaded provider components.
    pub providers: Arc<ProviderRegistry>,
    /// Gateway settings (vault + live validation).
    pub gateways: Gateways,
    /// Checkout orchestration.
    pub checkouts: Checkouts,
    /// Orders without a gateway (manual, external, bulk).
    pub orders: GatewayLessOrders,
    /// Refunds of payments.
    pub refunds: Refunds,
    /// The operator's admin token.
    pub admin_token: Secret,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// Cache-first tenant resolution (API key, Host header).
    pub resolver: TenantResolver,
    /// The operator's tenancy writes (audited, evicted).
    pub tenancy: Tenancy,
    /// The bound on mutations in progress; each runs in its own task
    /// (see [`detach`]).
    pub mutations: Mutations,
}

impl AppState {
    /// Resolve an API key, through the cache when there is one.
    pub async fn resolve_api_key(
        &self,
        hash: &ApiKeyHash,
    ) -> Result<Option<ResolvedApiKey>, ApiError> {
        self.resolver
            .resolve_api_key(hash)
            .await
            .map_err(|e| ApiError::internal("resolve api key", e))
    }
}

/// A JSON body whose rejections (syntax, types, size, content type) become
/// [`ApiError`]s with stable codes. A struct anywhere in `T` accepts only a
/// JSON object (never serde's array-of-fields form): 422
/// `validation_failed` naming the path otherwise.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match Json::<strict_json::UniqueKeys>::from_request(req, state).await {
            Ok(Json(strict_json::UniqueKeys(value))) => json_value(value).map(JsonBody),
            Err(rejection) => Err(from_json_rejection(rejection)),
        }
    }
}

/// `value` as a `T`, objects staying objects (see [`JsonBody`]).
fn json_value<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, ApiError> {
    strict_json::from_value(value).map_err(ApiError::validation)
}

/// JSON text as a `T` under [`JsonBody`]'s rules, for a body read by
/// hand: 400 `malformed_json` for bad syntax, 422 otherwise.
pub(crate) fn json_bytes<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let strict_json::UniqueKeys(value) = serde_json::from_slice(bytes).map_err(|e| {
        if e.is_data() {
            ApiError::validation(e.to_string())
        } else {
            ApiError::new(
                axum::http::StatusCode::BAD_REQUEST,
                "malformed_json",
                e.to_string(),
            )
        }
    })?;
    json_value(value)
}

/// A raw request body, for endpoints whose body is optional; read errors
/// become [`ApiError`]s (413 `body_too_large`, 408 `body_timeout`).
pub struct RawBody(pub bytes::Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match bytes::Bytes::from_request(req, state).await {
            Ok(b) => Ok(RawBody(b)),
            Err(rejection) => Err(error::from_bytes_rejection(&rejection)),
        }
    }
}

/// Path parameters whose rejections (a segment that is not UTF-8 once
/// percent-decoded, a wrong count) become 400 `bad_path`.
pub struct PathParam<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> axum::extract::FromRequestParts<S>
    for PathParam<T>
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(PathParam(value)),
            Err(rejection) => Err(ApiError::new(
                axum::http::StatusCode::BAD_REQUEST,
                "bad_path",
                rejection.body_text(),
            )),
        }
    }
}

/// Query parameters whose rejections become [`ApiError`]s (400 `bad_query`).
pub struct QueryParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> axum::extract::FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(QueryParams(value)),
            Err(rejection) => Err(ApiError::new(
                axum::http::StatusCode::BAD_REQUEST,
                "bad_query",
                rejection.body_text(),
            )),
        }
    }
}

/// The service's router.
pub fn router(state: AppState) -> Router {
    let operator = Router::new()
        .route("/admin/tenants", post(operator::create_tenant))
        .route("/admin/tenants/{id}", get(operator::get_tenant))
        .route("/admin/tenants/{id}/domains", post(operator::attach_domain))
        .route(
            "/admin/tenants/{id}/domains/{domain}",
            delete(operator::detach_domain),
        )
        .route("/admin/tenants/{id}/api-keys", post(operator::issue_key))
        .route(
            "/admin/tenants/{id}/api-keys/{key_id}",
            delete(operator::revoke_key),
        )
        .route("/admin/audit", get(operator::audit_log))
        .route("/admin/providers", get(operator::providers))
        // Inside authentication: a mutation runs in its own task.
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            detach::detach_operator_mutation,
        ))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::operator_auth,
        ));
    let tenant = Router::new()
        .route("/v1/gateways", get(tenant::list_gateways))
        .route(
            "/v1/gateways/{provider}",
            put(tenant::save_gateway).delete(tenant::delete_gateway),
        )
        .route("/v1/checkouts", post(tenant::create_checkout))
        .route("/v1/checkouts/{id}", get(tenant::get_order))
        .route("/v1/orders", post(tenant::create_order))
        .route("/v1/orders/bulk", post(tenant::create_bulk_orders))
        .route("/v1/orders/{id}", get(tenant::get_order))
        .route("/v1/payments", get(tenant::list_payments))
        .route("/v1/payments/{id}", get(tenant::get_payment))
        .route("/v1/payments/{id}/refunds", post(tenant::refund))
        .route("/v1/balance", get(tenant::balance))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            idempotency::idempotency,
        ))
        // Inside authentication, outside idempotency: a mutation, its
        // idempotent response included, runs in its own task.
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            detach::detach_tenant_mutation,
        ))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::tenant_auth,
        ));
    Router::new()
        .route("/health", get(health))
        .route("/public/tenant", get(public_tenant))
        .merge(operator)
        .merge(tenant)
        .fallback(|| async { ApiError::not_found("route_not_found", "no such endpoint") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this endpoint does not take that method",
            )
        })
        .layer(DefaultBodyLimit::max(state.max_body_bytes))
        .layer(middleware::from_fn_with_state(state.clone(), edge::edge))
        .with_state(state)
}

/// `GET /public/tenant`: which tenant this Host (custom domain or
/// subdomain) belongs to. Public; answers only the tenant id.
async fn public_tenant(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .ok_or_else(|| ApiError::bad_request("missing Host header"))?;
    let tenant = state
        .resolver
        .resolve_host(host)
        .await
        .map_err(|e| ApiError::internal("resolve host", e))?
        .ok_or_else(|| ApiError::not_found("tenant_not_found", "no tenant for this host"))?;
    Ok(Json(json!({ "tenant_id": tenant })))
}

async fn health(State(state): State<AppState>) -> Json<serde_json::Value> {
    let providers: Vec<_> = state
        .providers
        .iter()
        .map(|p| json!({"id": p.id(), "version": p.manifest().version}))
        .collect();
    Json(json!({"status": "ok", "providers": providers}))
}
