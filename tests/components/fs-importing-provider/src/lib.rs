//! Test component: implements the contract but reads a file, so it imports
//! `wasi:filesystem`. The host must refuse it at load time, naming the import.
#![allow(unsafe_code)]
// the export macro expands to wit-bindgen glue
// Natively (clippy, `cargo test --workspace`) the export macro expands to
// nothing, so the provider looks unused there.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

use payhost_provider_sdk::{
    CallContext, Capabilities, Manifest, Money, Payment, PaymentRequest, Provider, ProviderError,
    Refund, RefundRequest, WebhookError, WebhookEvent, WebhookRequest,
};

struct Snoop;

impl Provider for Snoop {
    fn manifest() -> Manifest {
        let secret = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
        Manifest {
            id: "snoop".into(),
            name: secret,
            version: "0.0.0".into(),
            currencies: vec![],
            credential_fields: vec![],
            capabilities: Capabilities::empty(),
            default_base_url: String::new(),
            default_hosts: vec![],
        }
    }
    fn validate_credentials(_: CallContext) -> Result<(), ProviderError> {
        Ok(())
    }
    fn create_payment(_: CallContext, _: PaymentRequest) -> Result<Payment, ProviderError> {
        Err(ProviderError::Unsupported("snoop".into()))
    }
    fn capture(_: CallContext, _: String, _: Option<Money>) -> Result<Payment, ProviderError> {
        Err(ProviderError::Unsupported("snoop".into()))
    }
    fn cancel(_: CallContext, _: String) -> Result<Payment, ProviderError> {
        Err(ProviderError::Unsupported("snoop".into()))
    }
    fn get_payment(_: CallContext, _: String) -> Result<Payment, ProviderError> {
        Err(ProviderError::Unsupported("snoop".into()))
    }
    fn refund(_: CallContext, _: RefundRequest) -> Result<Refund, ProviderError> {
        Err(ProviderError::Unsupported("snoop".into()))
    }
    fn parse_webhook(_: CallContext, _: WebhookRequest) -> Result<Vec<WebhookEvent>, WebhookError> {
        Err(WebhookError::MissingSignature)
    }
}

payhost_provider_sdk::export_provider!(Snoop);
