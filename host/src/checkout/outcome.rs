//! A gateway's error as the client's: which ones say nothing moved and
//! which leave the outcome unknown; and the operator's audit event for a
//! gateway that reported another amount than asked.

use super::CheckoutError;
use crate::runtime::CallError;
use crate::runtime::contract::ProviderError;
use crate::store::{Store, TenantId};

/// A provider error as text for a client: the variant and the gateway's
/// message (the bundled components scrub secrets from it).
pub(super) fn describe(e: &ProviderError) -> String {
    match e {
        ProviderError::InvalidCredentials(m) => format!("invalid credentials: {m}"),
        ProviderError::Declined(d) => format!("declined: {}: {}", d.code, d.message),
        ProviderError::InvalidRequest(m) => format!("invalid request: {m}"),
        ProviderError::Unavailable(m) => format!("unavailable: {m}"),
        ProviderError::RateLimited(_) => "rate limited".into(),
        ProviderError::Unsupported(m) => format!("unsupported: {m}"),
        ProviderError::Internal(m) => format!("internal: {m}"),
    }
}

/// The error of a gateway call whose outcome is unknown: the gateway may
/// have charged, so the order stays as it is. Never a 4xx: a client error
/// would be kept for `Idempotency-Key` replay and lock the retry that can
/// still resume the order (an `invalid-request` here, e.g. Stripe's
/// `idempotency_error` on a resumed call, says nothing about the charge).
pub(super) fn outcome_unknown(provider: &str, e: CallError<ProviderError>) -> CheckoutError {
    match e {
        CallError::Gateway(ProviderError::Unavailable(m)) => CheckoutError::Unavailable(m),
        CallError::Gateway(ProviderError::RateLimited(after)) => CheckoutError::RateLimited(after),
        CallError::Gateway(other) => CheckoutError::Gateway {
            provider: provider.to_owned(),
            message: describe(&other),
        },
        other => provider_failure(&other),
    }
}

pub(super) fn provider_failure<E: std::fmt::Debug>(e: &CallError<E>) -> CheckoutError {
    CheckoutError::Provider {
        code: e.code(),
        message: e.to_string(),
    }
}

/// Records a gateway amount mismatch (`action`) for the operator. A
/// failed audit write is logged, not returned: the caller's record of
/// the mismatch (order or hold with its reference) is already stored.
pub(super) async fn audit_mismatch(
    store: &Store,
    tenant: &TenantId,
    action: &str,
    details: serde_json::Value,
) {
    crate::audit::record_by_system(store, "checkout", action, Some(tenant), details).await;
}
