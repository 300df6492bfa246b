//! Tenant gateway configuration: the secret vault, routing, and settings
//! that are validated live through the provider component before they are
//! stored.
//!
//! Must never: store or log a credential in clear text, return one unmasked,
//! or replace working settings with ones the gateway rejected.

mod cache;
pub mod routing;
pub mod settings;
pub mod vault;

pub use cache::Records;
pub use routing::{RouteEntry, eligible};
pub use settings::{
    GatewayError, GatewayInput, GatewayView, Gateways, MAX_CREDENTIAL_BYTES, OpenGateway,
};
pub use vault::{Sealed, Vault, VaultError, mask};
