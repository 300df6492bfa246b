//! Routing: which of the tenant's gateways may take a cart, in order.

use std::sync::Arc;

use super::{CheckoutError, Checkouts};
use crate::gateways::{Records, RouteEntry, eligible};
use crate::runtime::LoadedProvider;
use crate::runtime::contract::{Capabilities, CaptureMode};
use crate::store::Currency;
use crate::store::gateways::GatewaySettingsRecord;

impl Checkouts {
    /// The tenant's gateways that take `currency`, enabled and loaded, in
    /// priority order, each with its provider; none → [`CheckoutError::NoRoute`].
    /// A manual capture goes only to providers whose manifest claims
    /// `capture`; if none of the eligible ones does →
    /// [`CheckoutError::CapabilityNotSupported`].
    pub(super) fn route<'r>(
        &self,
        records: &'r Records,
        currency: Currency,
        capture: CaptureMode,
    ) -> Result<Vec<(&'r GatewaySettingsRecord, Arc<LoadedProvider>)>, CheckoutError> {
        let entries: Vec<RouteEntry> = records
            .iter()
            .map(|r| RouteEntry {
                provider: r.settings.provider.as_str().to_string(),
                priority: r.settings.priority,
                currencies: r
                    .settings
                    .currencies
                    .iter()
                    .map(|c| c.as_str().to_string())
                    .collect(),
                enabled: r.settings.enabled,
            })
            .collect();
        let providers = self.gateways.providers();
        let route: Vec<_> = eligible(&entries, currency.as_str(), |p| providers.get(p).is_some())
            .into_iter()
            .filter_map(|entry| {
                let record = records
                    .iter()
                    .find(|r| r.settings.provider.as_str() == entry.provider)?;
                Some((record, providers.get(&entry.provider)?))
            })
            .collect();
        if route.is_empty() {
            return Err(CheckoutError::NoRoute(currency.as_str().to_string()));
        }
        if capture == CaptureMode::Manual {
            let first = route[0].1.id().to_owned();
            let capable: Vec<_> = route
                .into_iter()
                .filter(|(_, p)| p.manifest().capabilities.contains(Capabilities::CAPTURE))
                .collect();
            if capable.is_empty() {
                return Err(CheckoutError::CapabilityNotSupported {
                    provider: first,
                    capability: "capture",
                });
            }
            return Ok(capable);
        }
        Ok(route)
    }
}
