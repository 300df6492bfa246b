//! `/webhooks/…`: gateway deliveries (no tenant credentials: the provider
//! verifies the signature), and the operator's `/admin/webhooks` and
//! `/admin/dead-letters`.
//!
//! Ingestion deliberately bypasses the tenant API's detach and
//! `Idempotency-Key` layers: the inbox's unique key is its idempotency,
//! and it is cancel-safe on its own (a delivery is committed fully or not
//! at all before the 2xx).

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::types::{ErrorBody, Page};
use super::{ApiError, AppState, ErrorCode, JsonBody, PathParam, QueryParams, RawBody};
use crate::audit::Actor;
use crate::store::{DeadLetterId, TenantId};
use crate::webhooks::{
    DeadLetter, DeadLetterFilter, InboxFilter, InboxRow, IngestError, Replay, WebhookError,
    dead_letters,
};

/// What a stored delivery held.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookReceipt {
    /// Events stored by this delivery.
    pub received: usize,
    /// Events already in the inbox (unchanged).
    pub duplicates: usize,
}

fn ingest_error(e: IngestError) -> ApiError {
    match e {
        IngestError::UnknownProvider(p) => ApiError::not_found(
            ErrorCode::ProviderNotFound,
            format!("provider `{p}` is not loaded on this host"),
        ),
        IngestError::NotConfigured(p) => ApiError::not_found(
            ErrorCode::GatewayNotConfigured,
            format!("this tenant has no webhook settings for provider `{p}`"),
        ),
        IngestError::Signature => ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::WebhookSignatureInvalid,
            "the webhook signature did not verify",
        ),
        IngestError::InvalidPayload(why) => ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::WebhookPayloadInvalid,
            format!("the webhook payload is not a readable event: {why}"),
        ),
        IngestError::Component(why) => ApiError::new(
            StatusCode::BAD_GATEWAY,
            ErrorCode::ProviderUnavailable,
            format!("the provider could not verify the webhook: {why}"),
        ),
        IngestError::Gateway(e) => e.into(),
        IngestError::Store(e) => e.into(),
    }
}

/// Header names (lower-case) and values as the component receives them;
/// values that are not visible ASCII are left out.
fn header_list(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .filter_map(|(name, value)| {
            value
                .to_str()
                .ok()
                .map(|v| (name.as_str().to_owned(), v.to_owned()))
        })
        .collect()
}

async fn ingest(
    state: &AppState,
    tenant: &TenantId,
    provider: &str,
    headers: &HeaderMap,
    body: bytes::Bytes,
) -> Result<Json<WebhookReceipt>, ApiError> {
    let received = state
        .webhooks
        .ingest(tenant, provider, header_list(headers), body.to_vec())
        .await
        .map_err(ingest_error)?;
    Ok(Json(WebhookReceipt {
        received: received.new,
        duplicates: received.duplicates,
    }))
}

/// `POST /webhooks/{tenant}/{provider}`: a gateway's delivery for a tenant.
#[utoipa::path(post, path = "/webhooks/{tenant}/{provider}", tag = "public",
    params(("tenant" = String, Path, description = "tenant id"),
        ("provider" = String, Path, description = "provider id")),
    request_body(content = Vec<u8>, content_type = "application/json",
        description = "the gateway's raw, signed body"),
    responses((status = 200, description = "stored (or already stored)", body = WebhookReceipt),
        (status = "default", description = "an error", body = ErrorBody)))]
pub async fn ingest_for_tenant(
    State(state): State<AppState>,
    PathParam((tenant, provider)): PathParam<(String, String)>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Json<WebhookReceipt>, ApiError> {
    let no_tenant = || ApiError::not_found(ErrorCode::TenantNotFound, "no such tenant");
    let tenant = TenantId::parse(&tenant).map_err(|_| no_tenant())?;
    state
        .resolver
        .resolve_tenant(&tenant)
        .await
        .map_err(|e| ApiError::internal("resolve tenant", e))?
        .ok_or_else(no_tenant)?;
    ingest(&state, &tenant, &provider, &headers, body).await
}

/// `POST /webhooks/{provider}` on a tenant's own domain (resolved by Host).
#[utoipa::path(post, path = "/webhooks/{provider}", tag = "public",
    params(("provider" = String, Path, description = "provider id")),
    request_body(content = Vec<u8>, content_type = "application/json",
        description = "the gateway's raw, signed body"),
    responses((status = 200, description = "stored (or already stored)", body = WebhookReceipt),
        (status = "default", description = "an error", body = ErrorBody)))]
pub async fn ingest_by_host(
    State(state): State<AppState>,
    PathParam(provider): PathParam<String>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Json<WebhookReceipt>, ApiError> {
    let tenant = super::host_tenant(&state, &headers).await?;
    ingest(&state, &tenant, &provider, &headers, body).await
}

fn list_error(e: WebhookError) -> ApiError {
    match e {
        WebhookError::InvalidCursor => ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidCursor,
            "invalid cursor",
        ),
        WebhookError::DeadLetterNotFound => {
            ApiError::not_found(ErrorCode::DeadLetterNotFound, "no such dead letter")
        }
        WebhookError::Store(e) => e.into(),
        WebhookError::Audit(e) => e.into(),
    }
}

fn tenant_filter(raw: Option<&str>) -> Result<Option<TenantId>, ApiError> {
    raw.map(|t| {
        TenantId::parse(t).map_err(|e| ApiError::validation(format!("tenant_id: {}", e.reason)))
    })
    .transpose()
}

/// One stored delivery event.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookDelivery {
    /// Inbox id (`whe_…`).
    pub id: String,
    /// Tenant.
    pub tenant_id: String,
    /// Provider.
    pub provider: String,
    /// The gateway's event id.
    pub event_id: String,
    /// The contract's event kind.
    pub kind: String,
    /// The gateway's event type.
    pub gateway_type: String,
    /// `pending`, `applied`, `ignored` or `dead`.
    pub status: String,
    /// Attempts so far.
    pub attempts: i64,
    /// Next attempt (pending only), unix ms.
    pub next_attempt_at: i64,
    /// What the last attempt did or why it failed.
    pub last_error: Option<String>,
    /// Received, unix ms.
    pub created_at: i64,
    /// Finished, unix ms.
    pub done_at: Option<i64>,
}

impl From<&InboxRow> for WebhookDelivery {
    fn from(r: &InboxRow) -> Self {
        WebhookDelivery {
            id: r.id.as_str().to_owned(),
            tenant_id: r.tenant_id.as_str().to_owned(),
            provider: r.provider.as_str().to_owned(),
            event_id: r.event.id.clone(),
            kind: r.event.kind.clone(),
            gateway_type: r.event.gateway_type.clone(),
            status: r.status.clone(),
            attempts: r.attempts,
            next_attempt_at: r.next_attempt_at,
            last_error: r.last_error.clone(),
            created_at: r.created_at,
            done_at: r.done_at,
        }
    }
}

/// `GET /admin/webhooks`'s query.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct WebhooksQuery {
    /// Only this tenant's deliveries.
    tenant_id: Option<String>,
    /// Only this provider's.
    provider: Option<String>,
    /// Only this status (`pending`, `applied`, `ignored`, `dead`).
    status: Option<String>,
    /// The previous page's `next_cursor`.
    cursor: Option<String>,
    /// Page size, 1–500 (default 50).
    limit: Option<u32>,
}

/// `GET /admin/webhooks`: recent deliveries, newest first.
#[utoipa::path(get, path = "/admin/webhooks", tag = "operator", params(WebhooksQuery),
    security(("admin_token" = [])),
    responses((status = 200, description = "a page of deliveries", body = Page<WebhookDelivery>),
        (status = "default", description = "an error", body = ErrorBody)))]
pub async fn list_webhooks(
    State(state): State<AppState>,
    QueryParams(q): QueryParams<WebhooksQuery>,
) -> Result<Json<Page<WebhookDelivery>>, ApiError> {
    if let Some(s) = q.status.as_deref()
        && !matches!(s, "pending" | "applied" | "ignored" | "dead")
    {
        return Err(ApiError::validation(
            "status: one of pending|applied|ignored|dead",
        ));
    }
    let filter = InboxFilter {
        tenant: tenant_filter(q.tenant_id.as_deref())?,
        provider: q.provider,
        status: q.status,
    };
    let page = state
        .webhooks
        .list(&filter, q.cursor.as_deref(), q.limit.unwrap_or(50))
        .await
        .map_err(list_error)?;
    Ok(Json(Page::<WebhookDelivery>::of(&page)))
}

/// The inbox's depth and age.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookStats {
    /// Events waiting to be applied.
    pub pending: i64,
    /// Of those, how many failed at least once.
    pub retrying: i64,
    /// Events that became dead letters.
    pub dead: i64,
    /// Age of the oldest pending event, ms; `null` when none is pending.
    pub oldest_pending_age_ms: Option<i64>,
}

/// `GET /admin/webhooks/stats`: inbox depth and oldest-pending age.
#[utoipa::path(get, path = "/admin/webhooks/stats", tag = "operator",
    security(("admin_token" = [])),
    responses((status = 200, description = "inbox depth", body = WebhookStats),
        (status = "default", description = "an error", body = ErrorBody)))]
pub async fn webhook_stats(State(state): State<AppState>) -> Result<Json<WebhookStats>, ApiError> {
    let s = state.webhooks.stats().await.map_err(list_error)?;
    Ok(Json(WebhookStats {
        pending: s.pending,
        retrying: s.retrying,
        dead: s.dead,
        oldest_pending_age_ms: s.oldest_pending_age_ms,
    }))
}

/// A dead letter: the standard envelope plus its replay state.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetterView {
    /// Its id (`dlq_…`).
    pub id: String,
    /// The failed job (`whe_…` for `webhook`).
    pub job_id: String,
    /// The job type.
    pub job_type: String,
    /// The tenant.
    pub tenant: Option<String>,
    /// The provider.
    pub provider: Option<String>,
    /// Attempts made.
    pub attempt: i64,
    /// The policy's limit.
    pub max_attempts: i64,
    /// Why the last attempt failed.
    pub reason: String,
    /// The job's input.
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
    /// When the last attempt failed, unix ms.
    pub failed_at: i64,
    /// Next retry (`null`: retries exhausted).
    pub next_retry_at: Option<i64>,
    /// `exponential` or `fixed`.
    pub backoff_strategy: String,
    /// When it was replayed, if it was.
    pub replayed_at: Option<i64>,
    /// Created, unix ms.
    pub created_at: i64,
}

impl From<&DeadLetter> for DeadLetterView {
    fn from(d: &DeadLetter) -> Self {
        DeadLetterView {
            id: d.id.as_str().to_owned(),
            job_id: d.job_id.clone(),
            job_type: d.job_type.clone(),
            tenant: d.tenant.clone(),
            provider: d.provider.clone(),
            attempt: d.attempt,
            max_attempts: d.max_attempts,
            reason: d.reason.clone(),
            payload: d.payload.clone(),
            failed_at: d.failed_at,
            next_retry_at: d.next_retry_at,
            backoff_strategy: d.backoff_strategy.clone(),
            replayed_at: d.replayed_at,
            created_at: d.created_at,
        }
    }
}

/// `GET /admin/dead-letters`'s query (also the filter of a bulk replay).
#[derive(Deserialize, IntoParams, ToSchema, Default)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeadLettersQuery {
    /// Only this job type (`webhook`).
    job_type: Option<String>,
    /// Only this tenant's.
    tenant_id: Option<String>,
    /// Only this provider's.
    provider: Option<String>,
    /// Failed at or after, unix ms.
    failed_from: Option<i64>,
    /// Failed before, unix ms.
    failed_before: Option<i64>,
    /// The previous page's `next_cursor` (listing only).
    cursor: Option<String>,
    /// Page size, 1–500 (default 50); for a bulk replay at most 100.
    limit: Option<u32>,
}

impl DeadLettersQuery {
    fn filter(&self) -> Result<DeadLetterFilter, ApiError> {
        Ok(DeadLetterFilter {
            job_type: self.job_type.clone(),
            tenant: tenant_filter(self.tenant_id.as_deref())?,
            provider: self.provider.clone(),
            failed_from: self.failed_from,
            failed_before: self.failed_before,
            unreplayed: false,
        })
    }
}

/// `GET /admin/dead-letters`: newest first.
#[utoipa::path(get, path = "/admin/dead-letters", tag = "operator", params(DeadLettersQuery),
    security(("admin_token" = [])),
    responses((status = 200, description = "a page of dead letters", body = Page<DeadLetterView>),
        (status = "default", description = "an error", body = ErrorBody)))]
pub async fn list_dead_letters(
    State(state): State<AppState>,
    QueryParams(q): QueryParams<DeadLettersQuery>,
) -> Result<Json<Page<DeadLetterView>>, ApiError> {
    let page = dead_letters::list(
        &state.store,
        &q.filter()?,
        q.cursor.as_deref(),
        q.limit.unwrap_or(50),
    )
    .await
    .map_err(list_error)?;
    Ok(Json(Page::<DeadLetterView>::of(&page)))
}

fn dead_letter_id(raw: &str) -> Result<DeadLetterId, ApiError> {
    DeadLetterId::parse(raw)
        .map_err(|_| ApiError::not_found(ErrorCode::DeadLetterNotFound, "no such dead letter"))
}

/// `GET /admin/dead-letters/{id}`
#[utoipa::path(get, path = "/admin/dead-letters/{id}", tag = "operator",
    params(("id" = String, Path, description = "dead letter id")),
    security(("admin_token" = [])),
    responses((status = 200, description = "the dead letter", body = DeadLetterView),
        (status = "default", description = "an error", body = ErrorBody)))]
pub async fn get_dead_letter(
    State(state): State<AppState>,
    PathParam(id): PathParam<String>,
) -> Result<Json<DeadLetterView>, ApiError> {
    let id = dead_letter_id(&id)?;
    let letter = dead_letters::get(&state.store, &id)
        .await?
        .ok_or_else(|| ApiError::not_found(ErrorCode::DeadLetterNotFound, "no such dead letter"))?;
    Ok(Json(DeadLetterView::from(&letter)))
}

/// What a replay did to one dead letter.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReplayResult {
    /// `requeued`, or `already_replayed` (nothing changed).
    pub outcome: String,
    /// The letter as it now is.
    pub dead_letter: DeadLetterView,
}

fn operator() -> Actor {
    Actor::operator("admin").expect("`admin` is a valid operator name")
}

fn outcome_name(r: Replay) -> String {
    match r {
        Replay::Requeued => "requeued".into(),
        Replay::AlreadyReplayed => "already_replayed".into(),
    }
}

/// `POST /admin/dead-letters/{id}/replay`: re-queues the job once; a second
/// replay changes nothing. Audited.
#[utoipa::path(post, path = "/admin/dead-letters/{id}/replay", tag = "operator",
    params(("id" = String, Path, description = "dead letter id")),
    security(("admin_token" = [])),
    responses((status = 200, description = "replayed (or already)", body = ReplayResult),
        (status = "default", description = "an error", body = ErrorBody)))]
pub async fn replay_dead_letter(
    State(state): State<AppState>,
    PathParam(id): PathParam<String>,
) -> Result<Json<ReplayResult>, ApiError> {
    let id = dead_letter_id(&id)?;
    Ok(Json(replay_one(&state, &id).await?))
}

async fn replay_one(state: &AppState, id: &DeadLetterId) -> Result<ReplayResult, ApiError> {
    let (letter, outcome) = state
        .webhooks
        .replay(&operator(), id)
        .await
        .map_err(list_error)?;
    Ok(ReplayResult {
        outcome: outcome_name(outcome),
        dead_letter: DeadLetterView::from(&letter),
    })
}

/// `POST /admin/dead-letters/replay`'s body: ids, or a filter.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayManyBody {
    /// These letters (at most 100).
    ids: Option<Vec<String>>,
    /// Or the letters not yet replayed that match (oldest first, at most
    /// `limit`, ≤ 100).
    filter: Option<DeadLettersQuery>,
}

/// What a bulk replay did.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReplayManyResult {
    /// One entry per letter touched.
    pub items: Vec<ReplayResult>,
}

/// `POST /admin/dead-letters/replay`: many by ids or by filter, bounded.
#[utoipa::path(post, path = "/admin/dead-letters/replay", tag = "operator",
    request_body = ReplayManyBody, security(("admin_token" = [])),
    responses((status = 200, description = "what each replay did", body = ReplayManyResult),
        (status = "default", description = "an error", body = ErrorBody)))]
pub async fn replay_dead_letters(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<ReplayManyBody>,
) -> Result<Json<ReplayManyResult>, ApiError> {
    let max = dead_letters::MAX_REPLAY_BATCH as usize;
    let ids: Vec<DeadLetterId> = match (body.ids, body.filter) {
        (Some(ids), None) => {
            if ids.is_empty() || ids.len() > max {
                return Err(ApiError::validation(format!("ids: 1 to {max} ids")));
            }
            ids.iter()
                .map(|raw| dead_letter_id(raw))
                .collect::<Result<_, _>>()?
        }
        (None, Some(filter)) => {
            if filter.cursor.is_some() {
                return Err(ApiError::validation("filter.cursor: not used by a replay"));
            }
            dead_letters::pick_for_replay(
                &state.store,
                &filter.filter()?,
                filter.limit.unwrap_or(dead_letters::MAX_REPLAY_BATCH),
            )
            .await?
        }
        _ => {
            return Err(ApiError::validation(
                "give exactly one of `ids` or `filter`",
            ));
        }
    };
    let mut items = Vec::with_capacity(ids.len());
    for id in &ids {
        items.push(replay_one(&state, id).await?);
    }
    Ok(Json(ReplayManyResult { items }))
}
