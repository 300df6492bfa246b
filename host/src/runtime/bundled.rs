//! First-party provider components, built from `providers/*` by
//! `host/build.rs` (for `wasm32-wasip2`) and embedded in the binary, so
//! `payhost serve` works with no manual build step.

include!(concat!(env!("OUT_DIR"), "/bundled.rs"));
