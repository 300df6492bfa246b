//! How each domain error becomes an [`ApiError`] (status + stable code).
//! Internal failures are logged and answered with a generic 500.

use axum::http::StatusCode;
use serde_json::json;

use super::ApiError;
use crate::audit::AuditError;
use crate::checkout::CheckoutError;
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
                ApiError::not_found("tenant_not_found", "no such tenant")
            }
            TenancyError::DomainTaken { .. } => {
                ApiError::conflict("domain_taken", "this domain belongs to another tenant")
            }
            TenancyError::Invalid(p) => ApiError::validation(p.to_string()),
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
            LedgerError::OrderNotFound => ApiError::not_found("order_not_found", "no such order"),
            LedgerError::PaymentNotFound => {
                ApiError::not_found("payment_not_found", "no such payment")
            }
            LedgerError::RefundExceedsPaid { remaining } => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "refund_exceeds_paid",
                format!(
                    "refund exceeds what remains refundable ({} {})",
                    remaining.minor,
                    remaining.currency.as_str()
                ),
            )
            .with_details(json!({"remaining": remaining.minor})),
            LedgerError::NotRefundable { reason } => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "not_refundable", reason)
            }
            LedgerError::Duplicate { .. } => {
                ApiError::conflict("already_booked", "this event was already booked")
            }
            LedgerError::CheckoutKeyTaken => ApiError::conflict(
                "idempotency_key_in_use",
                "an order is already stored under this Idempotency-Key",
            ),
            LedgerError::StatusConflict { current } => {
                ApiError::conflict("order_state_conflict", format!("order is {current}"))
            }
            LedgerError::CurrencyMismatch { expected, got } => ApiError::validation(format!(
                "currency {} does not match {}",
                got.as_str(),
                expected.as_str()
            )),
            LedgerError::Invalid(m) => ApiError::validation(m),
            LedgerError::InvalidCursor => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_cursor", "invalid cursor")
            }
            other => ApiError::internal("ledger", other),
        }
    }
}

impl From<GatewayError> for ApiError {
    fn from(e: GatewayError) -> Self {
        match e {
            GatewayError::UnknownProvider(p) => ApiError::not_found(
                "provider_not_found",
                format!("provider `{p}` is not loaded on this host"),
            ),
            GatewayError::Invalid(m) => ApiError::validation(m),
            GatewayError::Rejected(reason) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "gateway_credentials_rejected",
                format!("the gateway rejected the credentials: {reason}"),
            ),
            GatewayError::Unreachable(reason) => ApiError::new(
                StatusCode::BAD_GATEWAY,
                "gateway_unreachable",
                format!("the gateway could not validate the credentials: {reason}"),
            ),
            GatewayError::NotConfigured(p) => ApiError::not_found(
                "gateway_not_configured",
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
                "checkout_timed_out",
                "the checkout took too long and was stopped; its order is kept, and a retry \
                 with the same Idempotency-Key resumes it",
            ),
            CheckoutError::KeyReused => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "this Idempotency-Key holds an order with another cart or other payment details",
            ),
            CheckoutError::NoRoute(currency) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "no_gateway_for_currency",
                format!("no enabled gateway accepts {currency}"),
            )
            .with_details(json!({"currency": currency})),
            CheckoutError::Declined {
                order,
                code,
                message,
            } => ApiError::new(
                StatusCode::PAYMENT_REQUIRED,
                "payment_declined",
                format!("the payment was declined: {message}"),
            )
            .with_details(json!({"decline_code": code, "order_id": order.id})),
            CheckoutError::Unavailable(m) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "gateway_unavailable",
                format!("the gateway is unavailable: {m}"),
            )
            .with_retry_after(5),
            CheckoutError::RateLimited(after) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "gateway_rate_limited",
                "the gateway is rate limiting this account",
            )
            .with_retry_after(after.map_or(5, u64::from)),
            CheckoutError::Gateway { provider, message } => {
                // The message is the component's, capped and cleaned by the
                // runtime (`runtime::sanitize`) before it got here.
                tracing::warn!(%provider, "gateway error: {message}");
                ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "gateway_error",
                    format!("{provider}: {message}"),
                )
            }
            CheckoutError::GatewayInvalidRequest { provider, message } => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "gateway_invalid_request",
                format!("{provider} refused the request: {message}"),
            )
            .with_details(json!({"provider": provider})),
            CheckoutError::CapabilityNotSupported {
                provider,
                capability,
            } => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "capability_not_supported",
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
                    code = "provider_refund_amount_mismatch",
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
                    "provider_refund_amount_mismatch",
                    "the gateway reported another refund amount than requested; the amount \
                     stays held for reconciliation",
                )
                .with_details(json!({"hold_id": hold}))
            }
            CheckoutError::Provider { code, message } => {
                tracing::error!(code, "provider failure: {message}");
                ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    code,
                    "the payment provider failed; see the server log",
                )
            }
            CheckoutError::Ledger(e) => e.into(),
            CheckoutError::Settings(e) => e.into(),
        }
    }
}
