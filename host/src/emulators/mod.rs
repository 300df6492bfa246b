//! Gateway emulators: in-process fakes of the payment gateways' HTTP APIs.
//!
//! Each emulator follows its gateway's *documented* behaviour (authentication,
//! request encoding, error shapes, idempotency, webhook signatures) closely
//! enough that the real provider component for that gateway works against it
//! unchanged once its base URL points at the emulator. They exist so that tests
//! (on port 0) and `payhost serve` / `payhost emulators` run a whole checkout
//! offline.
//!
//! Invariants every emulator keeps:
//! - it binds **127.0.0.1 only**, never a routable interface;
//! - it keeps its state in memory, behind a `std::sync::Mutex` that is never
//!   held across an `.await`;
//! - it records every request it receives as a [`RecordedCall`] (no bodies, no
//!   credentials) so tests can assert what a component actually sent;
//! - it never logs or echoes a secret (keys are masked, webhook secrets unused
//!   except to sign);
//! - anything an emulator does that the real gateway does not (failure triggers,
//!   the fake 3-D Secure page) is named `emulator` and documented as an
//!   extension.

mod registration;
pub mod stripe;

pub use registration::{RegistrationError, WebhookRegistrar};
pub use stripe::StripeEmulator;

/// One HTTP request as an emulator received it, recorded in arrival order.
///
/// Holds no body and no credential: only what tests need to assert how a
/// client talked to the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedCall {
    /// HTTP method, upper case (`"GET"`, `"POST"`).
    pub method: String,
    /// Request path without the query string (`"/v1/payment_intents"`).
    pub path: String,
    /// The `Idempotency-Key` header (or the gateway's equivalent), if sent.
    pub idempotency_key: Option<String>,
    /// Whether the request presented a credential the emulator accepts.
    pub authorized: bool,
}
