//! Host-side bindings for the `payhost:provider` contract (`wit/provider.wit`).
//!
//! WASI interfaces are not generated here: they map onto wasmtime-wasi and
//! wasmtime-wasi-http, which the runtime links (locked down) beside the
//! payhost imports.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "payhost:provider/provider",
    exports: { default: async },
    additional_derives: [PartialEq, Eq],
    with: {
        "wasi:io": wasmtime_wasi::p2::bindings::io,
        "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
        "wasi:random": wasmtime_wasi::p2::bindings::random,
        "wasi:http": wasmtime_wasi_http::p2::bindings::http,
    },
});

/// The contract's shared types (`payhost:provider/types`).
pub use self::payhost::provider::types as contract;

/// The version of `payhost:provider` this host serves.
pub const CONTRACT_VERSION: &str = "0.1.0";

/// Fully qualified name of the interface every provider must export.
pub const GATEWAY_EXPORT: &str = "payhost:provider/gateway@0.1.0";
