//! The HTTP API: axum routers, extractors and the one error type.
//!
//! - `/health`: liveness, loaded providers.
//! - `/admin/…`: the operator API (admin token).
//! - `/v1/…`: the tenant API (tenant API key; `Idempotency-Key` honoured on
//!   every mutation).
//! - `/openapi.json`: the OpenAPI 3.1 document, generated from the handlers'
//!   `#[utoipa::path]` annotations and the types in [`types`]; `/docs`: a
//!   browsable page of it whose assets are compiled into the binary.
//!
//! Every route is registered through `routes!` on one
//! [`OpenApiRouter`](utoipa_axum::router::OpenApiRouter), so the router and
//! the document are built from the same list and cannot disagree.
//!
//! Must never: leak a secret in a response, answer a malformed request with a
//! 500, or let one tenant see another's data (every read is tenant-scoped, so
//! another tenant's id is simply "not found").

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, FromRequest, Request, State};
use axum::{Json, Router, middleware};
use serde::de::DeserializeOwned;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::checkout::{Checkouts, GatewayLessOrders, Refunds};
use crate::config::Secret;
use crate::features::Features;
use crate::gateways::Gateways;
use crate::runtime::ProviderRegistry;
use crate::store::Store;
use crate::tenancy::{ApiKeyHash, ResolvedApiKey, Tenancy, TenantResolver};

mod auth;
mod detach;
mod edge;
mod error;
mod error_code;
mod errors_from;
mod features;
mod idempotency;
mod operator;
mod rate_limit;
mod reconcile;
mod reports;
mod strict_json;
mod tenant;
pub mod types;
mod usage;
mod webhooks;

pub use auth::TenantCtx;
pub use detach::{DEFAULT_MAX_MUTATIONS, Mutations};
pub use error::{ApiError, from_json_rejection};
pub use error_code::ErrorCode;

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
    /// Request budgets per (tenant, API key) and lane; checked right after
    /// tenant authentication (see [`rate_limit`]).
    pub rate_limiter: crate::ratelimit::RateLimiter,
    /// Feature evaluation (in memory) and the operator's feature writes.
    pub features: Features,
    /// Quota counters (usage, corrections).
    pub quotas: crate::quota::Quotas,
    /// The webhook pipeline (ingestion, inbox, dead letters).
    pub webhooks: crate::webhooks::Webhooks,
    /// The reconciliation janitor (its passes run in their own task; the
    /// operator's reconcile endpoint uses it for one order).
    pub janitor: crate::janitor::Janitor,
    /// Offline mode (emulators on): registers a tenant's webhook URL with
    /// the Stripe emulator when it saves Stripe without a webhook secret.
    pub webhook_registrar: Option<crate::emulators::WebhookRegistrar>,
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
                ErrorCode::MalformedJson,
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
                ErrorCode::BadPath,
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
                ErrorCode::BadQuery,
                rejection.body_text(),
            )),
        }
    }
}

/// The document's fixed parts: title, version, security schemes.
#[derive(OpenApi)]
#[openapi(
    info(title = "payhost", description = "Multi-tenant payments host: the operator API \
        (`/admin`, admin token) and the tenant API (`/v1`, tenant API key)."),
    modifiers(&SecuritySchemes),
    tags((name = "operator", description = "Tenants, domains, API keys, audit (admin token)"),
        (name = "tenant", description = "Gateways, checkouts, orders, payments (tenant API key)"),
        (name = "public", description = "No credentials"))
)]
struct ApiDoc;

struct SecuritySchemes;

impl utoipa::Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let bearer = |what: &str| {
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(what))
                    .build(),
            )
        };
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("admin_token", bearer("The operator's admin token."));
        components.add_security_scheme("api_key", bearer("A tenant API key."));
    }
}

/// The path of the served document.
pub const OPENAPI_PATH: &str = "/openapi.json";
/// The path of the browsable docs page.
pub const DOCS_PATH: &str = "/docs";

/// The routes and the document, built from one list. Each group keeps its
/// layers (given a state; the document alone needs none): operator routes
/// behind the admin token, tenant routes behind the API key and the
/// `Idempotency-Key` layer; in both, a mutation runs in its own task inside
/// authentication. Tenant routes check the request rate right after
/// authentication.
fn routes(state: Option<&AppState>) -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let mut operator = OpenApiRouter::new()
        .routes(routes!(operator::create_tenant, operator::list_tenants))
        .routes(routes!(operator::get_tenant))
        .routes(routes!(operator::attach_domain))
        .routes(routes!(operator::detach_domain))
        .routes(routes!(operator::issue_key))
        .routes(routes!(operator::revoke_key))
        .routes(routes!(operator::audit_log))
        .routes(routes!(operator::providers))
        .routes(routes!(features::put_feature))
        .routes(routes!(features::list_features))
        .routes(routes!(features::put_plan, features::get_plan))
        .routes(routes!(features::list_plans))
        .routes(routes!(features::set_tenant_plan))
        .routes(routes!(features::put_override, features::delete_override))
        .routes(routes!(
            features::put_kill_switch,
            features::delete_kill_switch
        ))
        .routes(routes!(features::list_kill_switches))
        .routes(routes!(features::get_tenant_features))
        .routes(routes!(usage::admin_usage))
        .routes(routes!(usage::adjust_usage))
        .routes(routes!(reports::platform_daily_report))
        .routes(routes!(webhooks::list_webhooks))
        .routes(routes!(webhooks::webhook_stats))
        .routes(routes!(webhooks::list_dead_letters))
        .routes(routes!(webhooks::get_dead_letter))
        .routes(routes!(webhooks::replay_dead_letter))
        .routes(routes!(webhooks::replay_dead_letters))
        .routes(routes!(reconcile::reconcile_order));
    // Gateways' deliveries: no tenant credentials (the provider verifies
    // the signature), no detach or Idempotency-Key layer (the inbox's
    // unique key dedupes, and a delivery commits whole or not at all), and
    // a body limit of their own.
    let mut inbound = OpenApiRouter::new()
        .routes(routes!(webhooks::ingest_for_tenant))
        .routes(routes!(webhooks::ingest_by_host));
    let mut tenant = OpenApiRouter::new()
        .routes(routes!(tenant::list_gateways))
        .routes(routes!(tenant::save_gateway, tenant::delete_gateway))
        .routes(routes!(tenant::create_checkout))
        .routes(routes!(tenant::get_checkout))
        .routes(routes!(tenant::create_order, tenant::list_orders))
        .routes(routes!(tenant::create_bulk_orders))
        .routes(routes!(tenant::get_order))
        .routes(routes!(tenant::list_payments))
        .routes(routes!(tenant::get_payment))
        .routes(routes!(tenant::refund))
        .routes(routes!(tenant::balance))
        .routes(routes!(tenant::features))
        .routes(routes!(tenant::feature))
        .routes(routes!(usage::tenant_usage))
        .routes(routes!(reports::daily_report))
        .routes(routes!(tenant::cancel_checkout));
    if let Some(state) = state {
        operator = operator
            // Inside authentication: a mutation runs in its own task.
            .route_layer(middleware::from_fn_with_state(
                state.clone(),
                detach::detach_operator_mutation,
            ))
            .route_layer(middleware::from_fn_with_state(
                state.clone(),
                auth::operator_auth,
            ));
        tenant = tenant
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
            // Right after authentication, before a mutation takes a slot:
            // a caller over its rate costs no slot and no database.
            .route_layer(middleware::from_fn_with_state(
                state.clone(),
                rate_limit::rate_limit,
            ))
            .route_layer(middleware::from_fn_with_state(
                state.clone(),
                auth::tenant_auth,
            ));
        inbound = inbound.layer(DefaultBodyLimit::max(state.webhooks.max_body_bytes()));
    }
    let (router, mut doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(health))
        .routes(routes!(public_tenant))
        .routes(routes!(openapi_json))
        .merge(operator)
        .merge(tenant)
        .merge(inbound)
        .split_for_parts();
    rate_limit::document(&mut doc);
    (router, doc)
}

/// The OpenAPI document served at [`OPENAPI_PATH`]: every route of
/// [`router`] but the docs page ([`DOCS_PATH`]), which is no API.
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes(None).1
}

/// The document as JSON text, built once.
fn openapi_text() -> &'static str {
    static TEXT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TEXT.get_or_init(|| {
        openapi().to_json().unwrap_or_else(|e| {
            tracing::error!("the OpenAPI document does not serialise: {e}");
            String::from("{}")
        })
    })
}

/// `GET /openapi.json`: this document.
#[utoipa::path(get, path = "/openapi.json", tag = "public",
    responses((status = 200, description = "the OpenAPI 3.1 document", content_type = "application/json",
        body = Object)))]
async fn openapi_json() -> impl axum::response::IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        openapi_text(),
    )
}

/// The service's router: the routes of [`openapi`], the docs page at
/// [`DOCS_PATH`], and the JSON fallbacks for an unknown route or method.
pub fn router(state: AppState) -> Router {
    let (api, _) = routes(Some(&state));
    let docs: Router<AppState> = utoipa_swagger_ui::SwaggerUi::new(DOCS_PATH)
        .config(utoipa_swagger_ui::Config::from(OPENAPI_PATH))
        .into();
    api.merge(docs)
        .fallback(|| async { ApiError::not_found(ErrorCode::RouteNotFound, "no such endpoint") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                ErrorCode::MethodNotAllowed,
                "this endpoint does not take that method",
            )
        })
        .layer(DefaultBodyLimit::max(state.max_body_bytes))
        .layer(middleware::from_fn_with_state(state.clone(), edge::edge))
        .with_state(state)
}

/// `GET /public/tenant`: which tenant this Host (custom domain or
/// subdomain) belongs to. Public; answers only the tenant id.
#[utoipa::path(get, path = "/public/tenant", tag = "public",
    responses((status = 200, description = "the tenant of this Host", body = types::PublicTenant),
        (status = "default", description = "an error", body = types::ErrorBody)))]
async fn public_tenant(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
) -> Result<Json<types::PublicTenant>, ApiError> {
    let tenant = host_tenant(&state, &headers).await?;
    Ok(Json(types::PublicTenant {
        tenant_id: tenant.as_str().to_owned(),
    }))
}

/// The tenant whose custom domain or subdomain the `Host` header names
/// (404 `tenant_not_found` if none).
pub(crate) async fn host_tenant(
    state: &AppState,
    headers: &axum::http::HeaderMap,
) -> Result<crate::store::TenantId, ApiError> {
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .ok_or_else(|| ApiError::bad_request("missing Host header"))?;
    state
        .resolver
        .resolve_host(host)
        .await
        .map_err(|e| ApiError::internal("resolve host", e))?
        .ok_or_else(|| ApiError::not_found(ErrorCode::TenantNotFound, "no tenant for this host"))
}

/// `GET /health`: liveness and the loaded providers.
#[utoipa::path(get, path = "/health", tag = "public",
    responses((status = 200, description = "alive", body = types::Health),
        (status = "default", description = "an error", body = types::ErrorBody)))]
async fn health(State(state): State<AppState>) -> Json<types::Health> {
    let providers = state
        .providers
        .iter()
        .map(|p| types::HealthProvider {
            id: p.id().to_owned(),
            version: p.manifest().version.clone(),
        })
        .collect();
    Json(types::Health {
        status: "ok",
        providers,
    })
}
