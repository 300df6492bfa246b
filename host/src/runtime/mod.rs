//! The provider runtime: where gateway components run, and the walls around them.
//!
//! Owns the wasmtime engine (pooling allocator, epoch interruption), the
//! linker holding exactly the imports the contract allows, the loader that
//! refuses components not matching `payhost:provider@0.1.0`, and the call
//! path: **a fresh store and instance per call**, a wall-clock deadline, a
//! memory cap, an outbound HTTP allow-list and request budget, and caps on
//! every string the guest returns (`sanitize`). A trap, timeout or denied
//! request becomes a [`CallError`] for that call only; the host keeps serving.
//!
//! Must never: let guest state outlive a call, let a component reach a host
//! its policy does not name, or trust the guest's account of a sandbox
//! violation (the host records policy events itself).

mod bindings;
mod bundled;
mod call;
mod engine;
mod gate;
mod hooks;
mod load;
mod outbound;
mod policy;
mod provider;
mod registry;
mod sanitize;
mod state;

pub use bindings::contract;
pub use bindings::{CONTRACT_VERSION, GATEWAY_EXPORT};
pub use bundled::BUNDLED;
pub use call::CallError;
pub use engine::{DEFAULT_MAX_REQUESTS_PER_CALL, EngineError, Runtime, SandboxLimits};
pub use gate::{GateOpener, SendGate, send_gate};
pub use load::LoadError;
pub use policy::{Origin, OriginError, OutboundPolicy, PolicyEvent, is_public};
pub use provider::{LoadedProvider, ProviderSettings};
pub use registry::{ProviderRegistry, RegistryError};
pub use sanitize::{
    InvalidOutput, MAX_CODE_BYTES, MAX_CURRENCY_BYTES, MAX_MESSAGE_BYTES, MAX_REFERENCE_BYTES,
    MAX_RETRY_AFTER_SECS, MAX_SDK_DATA_BYTES, MAX_URL_BYTES, MAX_WEBHOOK_EVENTS,
};
