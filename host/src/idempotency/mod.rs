//! `Idempotency-Key`: a tenant mutation sent again with the same key gets
//! the first answer instead of running twice.
//!
//! Owns the key and request-fingerprint types (`key.rs`) and the
//! `idempotency_keys` records (`store.rs`: claim, finish, abandon, the
//! in-flight lease). The HTTP layer that applies them to requests is
//! `api/idempotency.rs`.
//!
//! Must never: know about HTTP, keep an answer the layer did not ask to keep
//! (5xx and not-replayable answers are abandoned, so a retry runs again), or
//! let a key claimed by one tenant answer another (every record is scoped by
//! tenant).

mod key;
mod store;

pub use key::{IdempotencyKey, RequestHash};
pub use store::{
    Begin, IN_FLIGHT_LEASE, abandon, begin, begin_at, finish, purge_created_before, release,
};
