//! Tenant endpoints (`/v1/…`, tenant API key), one file per resource:
//! [`gateways`], [`orders`] (checkouts and orders without a gateway),
//! [`payments`] (ledger reads, refunds, the balance), [`cancel`] (a pending
//! checkout canceled). Every lookup is scoped
//! to the calling tenant, so another tenant's id answers 404.

mod cancel;
mod features;
mod gateways;
mod orders;
mod payments;

pub use cancel::*;
pub use features::*;
pub use gateways::*;
pub use orders::*;
pub use payments::*;

use utoipa::IntoParams;

/// The client's `Idempotency-Key`, for deriving gateway keys.
fn idempotency_key(headers: &axum::http::HeaderMap) -> Option<String> {
    headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// The optional `Idempotency-Key` header of a mutation (the document's
/// parameter only; `auth::idempotency` reads the header).
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
pub struct IdempotencyKey {
    /// 1–255 printable characters. The same key and body replay the stored
    /// answer (`Idempotent-Replayed: true`); another body is 422
    /// `idempotency_key_reused`.
    #[param(rename = "Idempotency-Key")]
    idempotency_key: Option<String>,
}
