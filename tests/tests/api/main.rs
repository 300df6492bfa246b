//! The service over real HTTP, one module per feature, in one test binary:
//! a real host on a loopback port with a fresh database per test, the real
//! Stripe component against the Stripe emulator. Tests written with
//! `backend_test!` run once per backend (`…::sqlite`, `…::postgres`; the
//! PostgreSQL one when `PAYHOST_TEST_POSTGRES_URL` is set). Helpers more
//! than one module uses live in `tests/src`.

mod cancellation;
mod checkout;
mod component_outputs;
mod features;
mod gateways;
mod http_hardening;
mod idempotency;
mod janitor;
mod ledger;
mod listing;
mod openapi;
mod operator;
mod orders;
mod quotas;
mod rate_limits;
mod refunds;
mod reports;
mod resume;
mod routing;
mod secrets;
mod tenancy;
mod validation;
mod webhooks;
