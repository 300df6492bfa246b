//! Webhook endpoints as Stripe registers them: `POST /v1/webhook_endpoints`
//! (`url`, `enabled_events[]`, optional `description`, `metadata[…]`),
//! `GET /v1/webhook_endpoints` (a paginated list, see `list.rs`), `GET` and
//! `DELETE /v1/webhook_endpoints/{id}`. Each belongs to the API key's
//! account and receives that account's events whose type it enabled (`*`
//! for all), signed with its own `whsec_…` secret, which only the creation
//! response shows (as on Stripe).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use bytes::Bytes;
use serde_json::{Value, json};

use super::error::ApiError;
use super::form::{Params, apply_metadata};
use super::list::{LIST_PARAMS, PageRequest, list_json};
use super::model::{random_id, unix_now};
use super::webhook::Subscription;
use super::{RequestContext, Shared};

/// Stripe's limit on a webhook endpoint's URL.
const MAX_URL_CHARS: usize = 5000;

/// One registered endpoint.
#[derive(Clone)]
pub(crate) struct WebhookEndpoint {
    pub id: String,
    pub url: String,
    pub enabled_events: Vec<String>,
    pub description: Option<String>,
    pub metadata: BTreeMap<String, String>,
    pub secret: String,
    pub created: i64,
}

// The secret must never reach a log line.
impl std::fmt::Debug for WebhookEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookEndpoint")
            .field("id", &self.id)
            .field("url", &self.url)
            .field("enabled_events", &self.enabled_events)
            .finish_non_exhaustive()
    }
}

impl WebhookEndpoint {
    /// Whether this endpoint receives events of type `kind`.
    pub(crate) fn wants(&self, kind: &str) -> bool {
        self.enabled_events.iter().any(|e| e == "*" || e == kind)
    }

    /// The delivery target.
    pub(crate) fn subscription(&self) -> Subscription {
        Subscription {
            url: self.url.clone(),
            secret: self.secret.clone(),
        }
    }

    /// The object as Stripe renders it; `secret` only at creation.
    fn json(&self, with_secret: bool) -> Value {
        let mut object = json!({
            "id": self.id,
            "object": "webhook_endpoint",
            "api_version": null,
            "application": null,
            "created": self.created,
            "description": self.description,
            "enabled_events": self.enabled_events,
            "livemode": false,
            "metadata": self.metadata,
            "status": "enabled",
            "url": self.url,
        });
        if with_secret {
            object["secret"] = json!(self.secret);
        }
        object
    }
}

type ApiResult = Result<Json<Value>, ApiError>;

/// `POST /v1/webhook_endpoints`.
pub(crate) async fn create(
    State(shared): State<Arc<Shared>>,
    axum::Extension(ctx): axum::Extension<RequestContext>,
    body: Bytes,
) -> ApiResult {
    let params = Params::parse(&body);
    params.reject_unknown(
        &["url", "description", "api_version", "connect"],
        &["enabled_events[", "metadata[", "expand["],
    )?;
    let url = params
        .url("url")?
        .ok_or_else(|| ApiError::missing_param("url"))?;
    if url.chars().count() > MAX_URL_CHARS || !url.starts_with("http") {
        return Err(ApiError::invalid_param(
            "url_invalid",
            "url",
            "Invalid URL: the webhook endpoint URL must be an http(s) URL.",
        ));
    }
    let events: Vec<String> = params
        .list("enabled_events")
        .into_iter()
        .map(str::to_owned)
        .collect();
    if events.is_empty() {
        return Err(ApiError::missing_param("enabled_events"));
    }
    let mut metadata = BTreeMap::new();
    apply_metadata(&mut metadata, params.metadata()?)?;
    let endpoint = WebhookEndpoint {
        id: random_id("we"),
        url,
        enabled_events: events,
        description: params.text("description").map(str::to_owned),
        metadata,
        secret: random_id("whsec"),
        created: unix_now(),
    };
    let rendered = endpoint.json(true);
    shared
        .lock()
        .account(&ctx.account)
        .webhook_endpoints
        .push(endpoint);
    Ok(Json(rendered))
}

/// `GET /v1/webhook_endpoints`: one page (`limit`, `starting_after`,
/// `ending_before`), newest first, without secrets.
pub(crate) async fn list(
    State(shared): State<Arc<Shared>>,
    axum::Extension(ctx): axum::Extension<RequestContext>,
    RawQuery(query): RawQuery,
) -> ApiResult {
    let params = Params::parse(query.unwrap_or_default().as_bytes());
    params.reject_unknown(LIST_PARAMS, &["expand["])?;
    let request = PageRequest::parse(&params)?;
    let mut state = shared.lock();
    let newest_first: Vec<&WebhookEndpoint> = state
        .account(&ctx.account)
        .webhook_endpoints
        .iter()
        .rev()
        .collect();
    let (page, has_more) = request.page(&newest_first, |e| &e.id, "webhook_endpoint")?;
    let data = page.iter().map(|e| e.json(false)).collect();
    Ok(Json(list_json("/v1/webhook_endpoints", data, has_more)))
}

/// `GET /v1/webhook_endpoints/{id}`: without its secret.
pub(crate) async fn retrieve(
    State(shared): State<Arc<Shared>>,
    axum::Extension(ctx): axum::Extension<RequestContext>,
    Path(id): Path<String>,
) -> ApiResult {
    let mut state = shared.lock();
    state
        .account(&ctx.account)
        .webhook_endpoints
        .iter()
        .find(|e| e.id == id)
        .map(|e| Json(e.json(false)))
        .ok_or_else(|| ApiError::not_found("webhook_endpoint", &id, "id"))
}

/// `DELETE /v1/webhook_endpoints/{id}`.
pub(crate) async fn delete(
    State(shared): State<Arc<Shared>>,
    axum::Extension(ctx): axum::Extension<RequestContext>,
    Path(id): Path<String>,
) -> ApiResult {
    let mut state = shared.lock();
    let endpoints = &mut state.account(&ctx.account).webhook_endpoints;
    let before = endpoints.len();
    endpoints.retain(|e| e.id != id);
    if endpoints.len() == before {
        return Err(ApiError::not_found("webhook_endpoint", &id, "id"));
    }
    Ok(Json(
        json!({"id": id, "object": "webhook_endpoint", "deleted": true}),
    ))
}
