//! Guest-side SDK for payhost provider components.
//!
//! A payhost *provider* is a WebAssembly component that translates between the
//! `payhost:provider` WIT contract (`wit/provider.wit`) and one payment
//! gateway's HTTP API. The host owns everything that must be trusted (ledger,
//! tenants, secrets, routing, webhooks); the component owns only that
//! translation. This crate is what every provider — first-party or third-party —
//! builds on:
//!
//! - [`bindings`]: the contract bindings, generated once here by `wit-bindgen`
//!   so that every provider uses the same types. The contract types are
//!   re-exported at the crate root ([`Money`], [`PaymentRequest`],
//!   [`ProviderError`], …) and the exported interface is the [`Provider`] trait.
//! - [`export_provider!`]: registers your type as the component's
//!   implementation of the contract.
//! - [`http`]: a small synchronous HTTP client over `wasi:http` (the only way a
//!   component can reach the network, and only to hosts the operator allowed).
//! - [`form`], [`signature`]: form encoding and HMAC helpers most gateway APIs
//!   and webhook schemes need.
//! - [`log`]: lines that land in the host's log, inside the call's span.
//! - [`ctx`]: helpers on [`CallContext`] (credentials, base URL, idempotency
//!   keys).
//!
//! # Writing a provider
//!
//! A provider is a library crate built as a `cdylib` for `wasm32-wasip2`:
//!
//! ```toml
//! [lib]
//! crate-type = ["cdylib", "rlib"]
//!
//! [dependencies]
//! payhost-provider-sdk = { path = "../sdk" }
//! ```
//!
//! ```ignore
//! use payhost_provider_sdk::{CallContext, Provider, ProviderError, Manifest /* … */};
//!
//! struct MyGateway;
//!
//! impl Provider for MyGateway {
//!     fn manifest() -> Manifest { /* static description, no network */ }
//!     fn validate_credentials(ctx: CallContext) -> Result<(), ProviderError> {
//!         let key = ctx.require_credential("api-key")?;
//!         let base = ctx.base_url("https://api.example.com");
//!         let response = payhost_provider_sdk::http::Request::get(format!("{base}/v1/me"))
//!             .bearer_auth(key)
//!             .send()?; // HttpError converts into ProviderError
//!         // map response.status / response.json() onto the contract …
//!     }
//!     // create_payment, capture, cancel, get_payment, refund, parse_webhook …
//! }
//!
//! payhost_provider_sdk::export_provider!(MyGateway);
//! ```
//!
//! Build it with `cargo build -p my-gateway --target wasm32-wasip2 --release`;
//! the `.wasm` in `target/wasm32-wasip2/release/` is the component.
//!
//! Rules that follow from the contract:
//!
//! - **Calls are stateless.** The host creates a fresh instance per call; do not
//!   rely on globals surviving between calls.
//! - **Money is integer minor units** plus an upper-case ISO-4217 code.
//! - **Never log or return credentials.** [`CallContext`]'s generated `Debug`
//!   prints credential values, so never format a context with `{:?}`; the
//!   [`http::Request`] `Debug` output redacts credential-bearing headers.
//! - **Keep the mapping pure.** Put "HTTP status + body → contract value" in
//!   plain functions so native unit tests (`cargo test`) cover them; only the
//!   thin `Provider` impl touches the network. The `payhost-stripe` crate is
//!   the reference layout.
//!
//! # Native builds
//!
//! The crate also compiles for the host target so that `cargo test` and
//! `cargo clippy` work on provider crates. Outside `wasm32` there is no host to
//! import from: [`http::send`] returns [`http::HttpError::Transport`], the
//! [`log`] helpers write to stderr, and any other generated import panics.

/// Bindings for the `provider` world of `payhost:provider`, generated once for
/// every provider.
///
/// Besides the contract (`payhost::provider::{types, host}` and
/// `exports::payhost::provider::gateway`) this holds the WASI interfaces the
/// world imports (`wasi::http`, `wasi::io`, `wasi::clocks`, `wasi::random`),
/// for providers that need lower-level access than [`crate::http`].
// The generated code is the canonical-ABI glue between Rust and the component
// model: raw pointers into linear memory, `extern "C"` imports and
// `#[unsafe(export_name)]` exports. It is unsafe by nature and machine-written,
// so the workspace's `unsafe_code = "deny"` is lifted for this module only.
#[allow(unsafe_code)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "provider",
        pub_export_macro: true,
        export_macro_name: "export_provider",
        default_bindings_module: "payhost_provider_sdk::bindings",
        generate_all,
        // Lets providers and their tests compare contract values with `==`.
        // `stream-error` holds a resource handle, which cannot be compared.
        additional_derives: [PartialEq, Eq],
        additional_derives_ignore: ["stream-error"],
    });
}

pub mod ctx;
pub mod form;
pub mod http;
pub mod log;
pub mod signature;

pub use bindings::exports::payhost::provider::gateway::Guest as Provider;
pub use bindings::payhost::provider::host::LogLevel;
pub use bindings::payhost::provider::types::{
    CallContext, Capabilities, CaptureMode, Credential, CredentialField, Customer, Decline,
    EventKind, Manifest, Money, NextAction, Payment, PaymentRequest, PaymentState, ProviderError,
    Refund, RefundReason, RefundRequest, RefundStatus, WebhookError, WebhookEvent, WebhookRequest,
};

/// Registers `$ty` (which implements [`Provider`]) as this component's
/// implementation of the `payhost:provider/gateway` export.
///
/// Invoke it exactly once, at the root of a provider crate:
///
/// ```ignore
/// struct Stripe;
/// impl payhost_provider_sdk::Provider for Stripe { /* … */ }
/// payhost_provider_sdk::export_provider!(Stripe);
/// ```
///
/// The type must be nameable by a plain identifier in the invoking module.
/// On native targets (unit tests) the macro expands to nothing: a native
/// build is never a component.
/// The expansion emits the component's `#[unsafe(export_name = …)]` ABI
/// functions plus the custom section describing the world; that generated glue
/// is the only unsafe code in a provider, so the macro allows `unsafe_code`
/// for its own expansion and provider crates keep `unsafe_code = "deny"`.
#[macro_export]
macro_rules! export_provider {
    ($ty:ident) => {
        // Generated canonical-ABI export glue (see the macro docs): unsafe by
        // nature, confined to this expansion. Only emitted for wasm32: the
        // export symbol names (`payhost:provider/gateway@0.1.0#…`) are not
        // valid in a native shared library's symbol table.
        #[cfg(target_arch = "wasm32")]
        #[allow(unsafe_code)]
        const _: () = {
    $crate::bindings::export_provider!($ty with_types_in $crate::bindings);
        };
    };
}

impl Money {
    /// Builds an amount from minor units and an ISO-4217 code, upper-casing
    /// the code as the contract requires.
    pub fn new(minor: u64, currency: impl AsRef<str>) -> Self {
        Money {
            minor,
            currency: currency.as_ref().to_ascii_uppercase(),
        }
    }
}
