//! `/v1/gateways`: a tenant's gateway settings, validated live before they are stored.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::ToSchema;

use crate::api::types::{ErrorBody, Gateway, GatewayList};
use crate::api::{ApiError, AppState, ErrorCode, JsonBody, PathParam, TenantCtx};
use crate::gateways::GatewayInput;
use crate::store::Currency;

use super::IdempotencyKey;

/// `PUT /v1/gateways/{provider}`'s body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GatewayBody {
    /// The provider's credential fields (see `GET /admin/providers`).
    credentials: BTreeMap<String, String>,
    /// The gateway's webhook signing secret.
    webhook_secret: Option<String>,
    /// Routing priority, higher first (default 0).
    #[serde(default)]
    priority: i64,
    /// ISO-4217 codes routed to this gateway; at most 50 distinct.
    currencies: Vec<String>,
    /// Whether it takes checkouts (default true).
    #[serde(default = "yes")]
    enabled: bool,
}

fn yes() -> bool {
    true
}

/// Most currencies one gateway setting may list.
const MAX_GATEWAY_CURRENCIES: usize = 50;

/// A gateway's currencies: each ISO-4217, duplicates dropped (first
/// occurrence kept, so the order stays the client's), at most
/// [`MAX_GATEWAY_CURRENCIES`].
fn currency_list(raw: &[String]) -> Result<Vec<Currency>, ApiError> {
    let mut out: Vec<Currency> = Vec::new();
    for (i, c) in raw.iter().enumerate() {
        let c = Currency::parse(c)
            .map_err(|e| ApiError::validation(format!("currencies[{i}]: {}", e.reason)))?;
        if !out.contains(&c) {
            out.push(c);
        }
        if out.len() > MAX_GATEWAY_CURRENCIES {
            return Err(ApiError::validation(format!(
                "currencies: at most {MAX_GATEWAY_CURRENCIES} distinct currencies"
            )));
        }
    }
    Ok(out)
}

/// `PUT /v1/gateways/{provider}`: validated live before it is stored.
#[utoipa::path(put, path = "/v1/gateways/{provider}", tag = "tenant",
    params(("provider" = String, Path, description = "provider id"), IdempotencyKey),
    request_body = GatewayBody, security(("api_key" = [])),
    responses((status = 200, description = "saved", body = Gateway),
        (status = "default", description = "an error", body = ErrorBody)))]
pub async fn save_gateway(
    State(state): State<AppState>,
    Extension(t): Extension<TenantCtx>,
    PathParam(provider): PathParam<String>,
    JsonBody(body): JsonBody<GatewayBody>,
) -> Result<Json<Gateway>, ApiError> {
    let currencies = currency_list(&body.currencies)?;
    // Features gate before the live validation call and the store.
    if state.providers.get(&provider).is_some() {
        crate::api::features::require_provider(&state, &t.tenant, &provider)?;
        let configured = state.gateways.list(&t.tenant).await?;
        if !configured.iter().any(|g| g.provider.as_str() == provider) {
            crate::api::features::require_gateway_room(&state, &t.tenant, configured.len())?;
        }
    }
    let mut webhook_secret = body.webhook_secret;
    // Offline mode: the emulator signs for the host's own webhook URL.
    if webhook_secret.is_none()
        && provider == "stripe"
        && let Some(registrar) = &state.webhook_registrar
        && let Some(api_key) = body.credentials.get("secret-key")
    {
        match registrar.register(&t.tenant, api_key).await {
            Ok(secret) => webhook_secret = Some(secret),
            Err(e) => tracing::warn!(tenant = %t.tenant, "{e}"),
        }
    }
    let view = state
        .gateways
        .save(
            &t.actor(),
            &t.tenant,
            &provider,
            GatewayInput {
                credentials: body.credentials,
                webhook_secret,
                priority: body.priority,
                currencies,
                enabled: body.enabled,
                max_gateways: state
                    .features
                    .limit(&t.tenant, crate::features::keys::GATEWAYS_MAX),
            },
        )
        .await?;
    Ok(Json(Gateway::from(view)))
}

/// `GET /v1/gateways`: masked, in routing order.
#[utoipa::path(get, path = "/v1/gateways", tag = "tenant", security(("api_key" = [])),
    responses((status = 200, description = "the settings", body = GatewayList),
        (status = "default", description = "an error", body = ErrorBody)))]
pub async fn list_gateways(
    State(state): State<AppState>,
    Extension(t): Extension<TenantCtx>,
) -> Result<Json<GatewayList>, ApiError> {
    let items = state.gateways.list(&t.tenant).await?;
    let statuses = crate::webhooks::inbox::statuses(&state.store, &t.tenant).await?;
    let items = items
        .into_iter()
        .map(|view| {
            let mut gateway = Gateway::from(view);
            if let Some(s) = statuses.iter().find(|s| s.provider == gateway.provider) {
                let failing = match (s.last_error_at, s.last_ok_at) {
                    (Some(err), Some(ok)) => err > ok,
                    (Some(_), None) => true,
                    _ => false,
                };
                gateway.webhook_status = Some(if failing { "failing" } else { "ok" }.into());
                gateway.last_webhook_error = s.last_error.clone();
                gateway.last_webhook_error_at = s.last_error_at;
            }
            gateway
        })
        .collect();
    Ok(Json(GatewayList { items }))
}

/// `DELETE /v1/gateways/{provider}`
#[utoipa::path(delete, path = "/v1/gateways/{provider}", tag = "tenant",
    params(("provider" = String, Path, description = "provider id"), IdempotencyKey),
    security(("api_key" = [])),
    responses((status = 204, description = "deleted"),
        (status = "default", description = "an error", body = ErrorBody)))]
pub async fn delete_gateway(
    State(state): State<AppState>,
    Extension(t): Extension<TenantCtx>,
    PathParam(provider): PathParam<String>,
) -> Result<StatusCode, ApiError> {
    if state
        .gateways
        .delete(&t.actor(), &t.tenant, &provider)
        .await?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(
            ErrorCode::GatewayNotConfigured,
            format!("no settings for provider `{provider}`"),
        ))
    }
}
