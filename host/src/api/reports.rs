//! Daily reports: the tenant's `GET /v1/reports/daily` and the operator's
//! platform-wide `GET /admin/reports/daily`, both read from the daily
//! aggregates (see `ledger::daily_report`).

use axum::Json;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::api::types::{DailyReport, DailyReportItem, ErrorBody, Sum};
use crate::api::{ApiError, AppState, ErrorCode, QueryParams, TenantCtx};
use crate::ledger::{self, DailyFilter, Day, MAX_REPORT_DAYS};
use crate::store::{Currency, ProviderId, TenantId};

/// `GET /v1/reports/daily`'s query.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DailyReportQuery {
    /// First UTC day, `YYYY-MM-DD` (included).
    from: String,
    /// Last UTC day, `YYYY-MM-DD` (included); at most 366 days after `from`.
    to: String,
    /// Only this currency (ISO-4217).
    currency: Option<String>,
    /// Only rows booked through this gateway.
    provider: Option<String>,
}

/// `GET /admin/reports/daily`'s query.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PlatformReportQuery {
    /// First UTC day, `YYYY-MM-DD` (included).
    from: String,
    /// Last UTC day, `YYYY-MM-DD` (included); at most 366 days after `from`.
    to: String,
    /// Only this currency (ISO-4217).
    currency: Option<String>,
    /// Only rows booked through this gateway.
    provider: Option<String>,
    /// Only this tenant (default: every tenant, summed).
    tenant_id: Option<String>,
}

fn range_error(message: String) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        ErrorCode::InvalidReportRange,
        message,
    )
}

/// The filter of a report query; a bad date or range is 400
/// `invalid_report_range`, a bad currency or provider 422.
fn filter_of(
    from: &str,
    to: &str,
    currency: Option<&str>,
    provider: Option<&str>,
) -> Result<DailyFilter, ApiError> {
    let day = |raw: &str| Day::parse(raw).map_err(|e| range_error(e.to_string()));
    let filter = DailyFilter {
        from: day(from)?,
        to: day(to)?,
        currency: currency.map(Currency::parse).transpose()?,
        provider: provider.map(ProviderId::parse).transpose()?,
    };
    filter.validate().map_err(|e| match e {
        ledger::LedgerError::Invalid(m) => range_error(m),
        other => other.into(),
    })?;
    Ok(filter)
}

async fn report(
    state: &AppState,
    tenant: Option<&TenantId>,
    filter: &DailyFilter,
) -> Result<Json<DailyReport>, ApiError> {
    let entries = ledger::daily_report(&state.store, tenant, filter).await?;
    let items = entries
        .into_iter()
        .map(|e| DailyReportItem {
            day: e.day,
            currency: e.currency.as_str().to_owned(),
            provider: e.provider.map(|p| p.as_str().to_owned()),
            paid: Sum::from(e.paid),
            refunded: Sum::from(e.refunded),
            count: e.count,
            refund_count: e.refund_count,
            net: Sum::from(e.net),
        })
        .collect();
    Ok(Json(DailyReport {
        from: filter.from.to_string(),
        to: filter.to.to_string(),
        items,
    }))
}

/// `GET /v1/reports/daily?from=&to=&currency=&provider=`: the tenant's
/// money per UTC day, currency and provider, from the daily aggregates.
#[utoipa::path(get, path = "/v1/reports/daily", tag = "tenant", params(DailyReportQuery),
    security(("api_key" = [])),
    responses((status = 200, description = "per day, currency and provider", body = DailyReport),
        (status = "default", description = "an error", body = ErrorBody)))]
pub async fn daily_report(
    State(state): State<AppState>,
    Extension(t): Extension<TenantCtx>,
    QueryParams(q): QueryParams<DailyReportQuery>,
) -> Result<Json<DailyReport>, ApiError> {
    let filter = filter_of(&q.from, &q.to, q.currency.as_deref(), q.provider.as_deref())?;
    report(&state, Some(&t.tenant), &filter).await
}

/// `GET /admin/reports/daily?from=&to=&currency=&provider=&tenant_id=`: the
/// platform's money per UTC day, currency and provider, summed over every
/// tenant (or one).
#[utoipa::path(get, path = "/admin/reports/daily", tag = "operator", params(PlatformReportQuery),
    security(("admin_token" = [])),
    responses((status = 200, description = "per day, currency and provider", body = DailyReport),
        (status = "default", description = "an error", body = ErrorBody)))]
pub async fn platform_daily_report(
    State(state): State<AppState>,
    QueryParams(q): QueryParams<PlatformReportQuery>,
) -> Result<Json<DailyReport>, ApiError> {
    let filter = filter_of(&q.from, &q.to, q.currency.as_deref(), q.provider.as_deref())?;
    let tenant = q
        .tenant_id
        .as_deref()
        .map(|raw| {
            TenantId::parse(raw)
                .map_err(|_| ApiError::not_found(ErrorCode::TenantNotFound, "no such tenant"))
        })
        .transpose()?;
    report(&state, tenant.as_ref(), &filter).await
}

const _: () = assert!(MAX_REPORT_DAYS == 366, "the docs above say 366");
