//! How each domain error becomes an [`ApiError`] (status + stable code).
//! Internal failures are logged and answered with a generic 500.

use axum::http::StatusCode;
use serde_json::json;

use super::{ApiError, ErrorCode};
use crate::audit::AuditError;
use crate::checkout::CheckoutError;
use crate::features::FeaturesError;
use crate::gateways::GatewayError;
use crate::ledger::LedgerError;
use crate::store::{ParseError, StoreError};
use crate::tenancy::TenancyError;

impl From<ParseError> for ApiError {
    fn from(e: ParseError) -> Self {
        ApiError::validation(e.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::internal("store", e)
    }
}

impl From<AuditError> for ApiError {
    fn from(e: AuditError) -> Self {
        ApiError::internal("audit", e)
    }
}

impl From<TenancyError> for ApiError {
    fn from(e: TenancyError) -> Self {
        match e {
            TenancyError::TenantNotFound(_) => {
                ApiError::not_found(ErrorCode::TenantNotFound, "no such tenant")
            }
            TenancyError::DomainTaken { .. } => ApiError::conflict(
                ErrorCode::DomainTaken,
                "this domain belongs to another tenant",
            ),
            TenancyError::Invalid(p) => ApiError::validation(p.to_string()),
            TenancyError::InvalidCursor => ApiError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::InvalidCursor,
                "invalid cursor",
            ),
            other => ApiError::internal("tenancy", other),
        }
    }
}

impl From<crate::tenancy::WriteError> for ApiError {
    fn from(e: crate::tenancy::WriteError) -> Self {
        match e {
            crate::tenancy::WriteError::Tenancy(e) => e.into(),
            crate::tenancy::WriteError::Audit(e) => e.into(),
        }
    }
}

impl From<LedgerError> for ApiError {
    fn from(e: LedgerError) -> Self {
        match e {
            LedgerError::OrderNotFound => {
                ApiError::not_found(ErrorCode::OrderNotFound, "no such order")
            }
            LedgerError::PaymentNotFound => {
                ApiError::not_found(ErrorCode::PaymentNotFound, "no such payment")
            }
            LedgerError::RefundExceedsPaid { remaining } => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorCode::RefundExceedsPaid,
                format!(
                    "refund exceeds what remains refundable ({} {})",
                    remaining.minor,
                    remaining.currency.as_str()
                ),
            )
            .with_details(json!({"remaining": remaining.minor})),
            LedgerError::NotRefundable { reason } => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorCode::NotRefundable,
                reason,
            ),
            LedgerError::Duplicate { .. } => {
                ApiError::conflict(ErrorCode::AlreadyBooked, "this event was already booked")
            }
            LedgerError::CheckoutKeyTaken => ApiError::conflict(
                ErrorCode::IdempotencyKeyInUse,
                "an order is already stored under this Idempotency-Key",
            ),
            LedgerError::StatusConflict { current } => {
                ApiError::conflict(ErrorCode::OrderStateConflict, format!("order is {current}"))
            }
            LedgerError::CurrencyMismatch { expected, got } => ApiError::validation(format!(
                "currency {} does not match {}",
                got.as_str(),
                expected.as_str()
            )),
            LedgerError::Invalid(m) => ApiError::validation(m),
            LedgerError::InvalidCursor => ApiError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::InvalidCursor,
                "invalid cursor",
            ),
            other => ApiError::internal("ledger", other),
        }
    }
}

impl From<GatewayError> for ApiError {
    fn from(e: GatewayError) -> Self {
        match e {
            GatewayError::UnknownProvider(p) => ApiError::not_found(
                ErrorCode::ProviderNotFound,
                format!("provider `{p}` is not loaded on this host"),
            ),
            GatewayError::Invalid(m) => ApiError::validation(m),
            GatewayError::Rejected(reason) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorCode::GatewayCredentialsRejected,
                format!("the gateway rejected the credentials: {reason}"),
            ),
            GatewayError::Unreachable(reason) => ApiError::new(
                StatusCode::BAD_GATEWAY,
                ErrorCode::GatewayUnreachable,
                format!("the gateway could not validate the credentials: {reason}"),
            ),
            GatewayError::LimitReached(max) => crate::api::features::gateway_limit_reached(max),
            GatewayError::NotConfigured(p) => ApiError::not_found(
                ErrorCode::GatewayNotConfigured,
                format!("no settings for provider `{p}`"),
            ),
            other => ApiError::internal("gateways", other),
        }
    }
}

impl From<CheckoutError> for ApiError {
    fn from(e: CheckoutError) -> Self {
        match e {
            CheckoutError::Invalid(m) => ApiError::validation(m),
            CheckoutError::OverBudget => ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                ErrorCode::CheckoutTimedOut,
                "the checkout took too long and was stopped; its order is kept, and a retry \
                 with the same Idempotency-Key resumes it",
            ),
            CheckoutError::KeyReused => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorCode::IdempotencyKeyReused,
                "this Idempotency-Key holds an order with another cart or other payment details",
            ),
            CheckoutError::NoRoute(currency) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorCode::NoGatewayForCurrency,
                format!("no enabled gateway accepts {currency}"),
            )
            .with_details(json!({"currency": currency})),
            e @ CheckoutError::NoPermittedRoute { .. } => {
                let message = e.to_string();
                let CheckoutError::NoPermittedRoute { currency, disabled } = e else {
                    unreachable!("matched above")
                };
                let disabled: Vec<_> = disabled
                    .iter()
                    .map(|(p, source)| json!({"provider": p, "source": source}))
                    .collect();
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    ErrorCode::NoGatewayForCurrency,
                    message,
                )
                .with_details(json!({"currency": currency, "disabled": disabled}))
            }
            CheckoutError::Declined {
                order,
                code,
                message,
            } => ApiError::new(
                StatusCode::PAYMENT_REQUIRED,
                ErrorCode::PaymentDeclined,
                format!("the payment was declined: {message}"),
            )
            .with_details(json!({"decline_code": code, "order_id": order.id})),
            CheckoutError::Unavailable(m) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::GatewayUnavailable,
                format!("the gateway is unavailable: {m}"),
            )
            .with_retry_after(5),
            CheckoutError::RateLimited(after) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::GatewayRateLimited,
                "the gateway is rate limiting this account",
            )
            .with_retry_after(after.map_or(5, u64::from)),
            CheckoutError::Gateway { provider, message } => {
                // The message is the component's, capped and cleaned by the
                // runtime (`runtime::sanitize`) before it got here.
                tracing::warn!(%provider, "gateway error: {message}");
                ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    ErrorCode::GatewayError,
                    format!("{provider}: {message}"),
                )
            }
            CheckoutError::GatewayInvalidRequest { provider, message } => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorCode::GatewayInvalidRequest,
                format!("{provider} refused the request: {message}"),
            )
            .with_details(json!({"provider": provider})),
            CheckoutError::CapabilityNotSupported {
                provider,
                capability,
            } => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorCode::CapabilityNotSupported,
                format!("provider `{provider}` does not support {capability}"),
            )
            .with_details(json!({"provider": provider, "capability": capability})),
            CheckoutError::RefundAmountMismatch {
                provider,
                hold,
                reference,
                requested,
                reported_minor,
                reported_currency,
            } => {
                tracing::error!(
                    code = ErrorCode::ProviderRefundAmountMismatch.as_str(),
                    %provider,
                    %hold,
                    %reference,
                    requested = requested.minor,
                    requested_currency = requested.currency.as_str(),
                    reported = reported_minor,
                    %reported_currency,
                    "the gateway refunded another amount than requested; the hold is kept"
                );
                ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    ErrorCode::ProviderRefundAmountMismatch,
                    "the gateway reported another refund amount than requested; the amount \
                     stays held for reconciliation",
                )
                .with_details(json!({"hold_id": hold}))
            }
            CheckoutError::Provider { code, message } => {
                tracing::error!(code, "provider failure: {message}");
                ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    provider_code(code),
                    "the payment provider failed; see the server log",
                )
            }
            CheckoutError::NotCancelable { order, reason } => {
                ApiError::conflict(ErrorCode::OrderNotCancelable, reason)
                    .with_details(json!({"order_id": order.id, "status": order.status}))
            }
            CheckoutError::Ledger(e) => e.into(),
            CheckoutError::Settings(e) => e.into(),
            CheckoutError::Quota(e) => e.into(),
        }
    }
}

impl From<crate::quota::QuotaError> for ApiError {
    fn from(e: crate::quota::QuotaError) -> Self {
        use crate::quota::QuotaError;
        match e {
            QuotaError::Exceeded {
                key,
                limit,
                period,
                retry_after_secs,
            } => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                ErrorCode::QuotaExceeded,
                format!(
                    "the {key} quota of {limit} is used up for this period; nothing was stored"
                ),
            )
            .with_retry_after(retry_after_secs)
            .with_details(json!({
                "key": key,
                "limit": limit,
                "period_start": period.start.as_i64(),
                "period_end": period.end.as_i64(),
            })),
            QuotaError::UnknownKey(key) => ApiError::not_found(
                ErrorCode::QuotaKeyNotFound,
                format!("`{key}` is not a metered key"),
            ),
            QuotaError::TenantNotFound => {
                ApiError::not_found(ErrorCode::TenantNotFound, "no such tenant")
            }
            QuotaError::Invalid(m) => ApiError::validation(m),
            QuotaError::Audit(e) => e.into(),
            QuotaError::Store(e) => e.into(),
        }
    }
}

/// The [`ErrorCode`] of a provider failure's code (`CallError::code`, or
/// the checkout's own `provider_bad_reference` / `provider_amount_mismatch`).
/// A code outside [`ErrorCode`] (none today) is answered as `gateway_error`
/// and logged, so the answer stays one the document lists.
fn provider_code(code: &str) -> ErrorCode {
    match ErrorCode::parse(code) {
        Some(c) if c.as_str().starts_with("provider_") || c == ErrorCode::GatewayError => c,
        _ => {
            tracing::error!(code, "provider failure code outside ErrorCode");
            ErrorCode::GatewayError
        }
    }
}

impl From<FeaturesError> for ApiError {
    fn from(e: FeaturesError) -> Self {
        match e {
            FeaturesError::Invalid(p) => ApiError::validation(p.to_string()),
            e @ FeaturesError::KindMismatch { .. } => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorCode::FeatureValueMismatch,
                e.to_string(),
            ),
            e @ FeaturesError::KindChange { .. } => {
                ApiError::conflict(ErrorCode::FeatureKindConflict, e.to_string())
            }
            FeaturesError::FeatureNotFound(key) => {
                ApiError::not_found(ErrorCode::FeatureNotFound, format!("no feature `{key}`"))
            }
            FeaturesError::PlanNotFound(plan) => {
                ApiError::not_found(ErrorCode::PlanNotFound, format!("no plan `{plan}`"))
            }
            FeaturesError::TenantNotFound(_) => {
                ApiError::not_found(ErrorCode::TenantNotFound, "no such tenant")
            }
            FeaturesError::Audit(e) => e.into(),
            other => ApiError::internal("features", other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{ErrorCode, provider_code};

    #[test]
    fn every_provider_failure_code_is_an_error_code() {
        for code in [
            "gateway_error",
            "provider_deadline_exceeded",
            "provider_memory_exceeded",
            "provider_outbound_denied",
            "provider_response_too_large",
            "provider_request_budget_exceeded",
            "provider_invalid_output",
            "provider_trapped",
            "provider_unavailable",
            "provider_bad_reference",
            "provider_amount_mismatch",
        ] {
            assert_eq!(provider_code(code).as_str(), code);
        }
        assert_eq!(provider_code("something_else"), ErrorCode::GatewayError);
    }
}
