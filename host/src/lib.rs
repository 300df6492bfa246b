//! payhost: a payments host whose gateway integrations are sandboxed
//! WebAssembly components behind one WIT contract (`wit/`).
//!
//! The host owns what must be trusted (ledger, tenants, secrets, routing,
//! webhooks); a provider component owns only the translation between the
//! contract and one gateway's HTTP API. Data flows one way:
//! `api → (tenancy, features) → checkout → gateways/runtime → ledger/store`.

pub mod api;
pub mod audit;
pub mod broadcast;
pub mod checkout;
pub mod cli;
pub mod clock;
pub mod config;
pub mod emulators;
pub mod features;
pub mod gateways;
pub mod http_server;
pub mod idempotency;
pub mod janitor;
pub mod ledger;
pub mod quota;
pub mod ratelimit;
pub mod runtime;
pub mod server;
pub mod store;
pub mod tenancy;
pub mod webhooks;
